/* tests/build_layouts/probe.h — the main() of every layout program: calls
   into each part whose declarations were included before it (the core
   always; LMDB and NATS when their headers were), so that the link needs
   every implementation the program's files hold. Nothing touches a disk
   or the network. Exit status 0 when every call answers as expected. */
#ifndef BUILD_LAYOUTS_PROBE_H
#define BUILD_LAYOUTS_PROBE_H

#include <stdio.h>
#include <string.h>

int main(void)
{
    int bad = 0;
    opstate_error err;
    memset(&err, 0, sizeof err);
    bad |= opstate_version_number() != OPSTATE_VERSION_NUMBER;
    bad |= opstate_crc32c(0, "123456789", 9) != 0xe3069283u;
#ifdef OPSTATE_LMDB_H_INCLUDED
    {
        /* an environment that does not exist, opened without creating */
        opstate_lmdb_config ec;
        opstate_lmdb *env = NULL;
        memset(&ec, 0, sizeof ec);
        ec.path = "/nonexistent/opstate-build-layouts";
        ec.access = OPSTATE_LMDB_EXISTING;
        bad |= opstate_lmdb_open(&ec, &env, &err) != OPSTATE_NOT_FOUND || env != NULL;
    }
#endif
#ifdef OPSTATE_NATS_H_INCLUDED
    {
        /* refused before any connection is tried */
        opstate_nats_config nc;
        opstate_nats *n = NULL;
        memset(&nc, 0, sizeof nc);
        nc.tls_cert = "client.pem";
        bad |= opstate_nats_connect(&nc, &n, &err) != OPSTATE_INVALID_ARGUMENT || n != NULL;
    }
#endif
    printf("%s\n", bad ? "probe: FAILED" : "probe: ok");
    return bad;
}

#endif
