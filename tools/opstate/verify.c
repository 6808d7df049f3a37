/* verify.c — opstate verify: every record of an LMDB log or state directory
   checked (read-only). Part of the opstate tool (see main.c). */
#include "tool.h"

/* >>verify -------------------------------------------------------------- */

/* The directory verify walks: --state DIR, else an lmdb: log's PATH. */
static int verify_dir(const args *a, state_handle *s)
{
    const char *uri = log_uri_arg(a);
    if (opt(a, "--state")) return state_env_open(a, false, s);
    if (strncmp(uri, "lmdb:", 5) != 0)
        return fail(STATUS_USAGE, "verify: --log %s: verify reads LMDB files (lmdb:PATH or --state DIR)", quoted(uri));
    if (!uri[5] || (size_t)snprintf(s->dir, PATH_CAP, "%s", uri + 5) >= PATH_CAP)
        return fail(STATUS_USAGE, "--log %s: expected lmdb:PATH", quoted(uri));
    s->label = "--log";
    return state_env_open_at(s, false);
}

static int run_verify(const args *a)
{
    opstate_lmdb_verify_report rep;
    opstate_error err;
    opstate_result r;
    state_handle s;
    int status;
    memset(&s, 0, sizeof s);
    if ((status = verify_dir(a, &s)) != STATUS_OK) return status;
    memset(&err, 0, sizeof err);
    r = opstate_lmdb_verify(s.env, &rep, &err);
    opstate_lmdb_close(s.env);
    if (r != OPSTATE_OK)
        return fail(status_for_result(r), "verify of %s: %s at %s (%llu records good before it)", quoted(s.dir),
                    opstate_result_str(r), rep.where[0] ? rep.where : "?", (unsigned long long)rep.records);
    printf("verified %s: %llu logs, %llu stores, %llu records, every checksum and sequence good\n", s.dir,
           (unsigned long long)rep.logs, (unsigned long long)rep.stores, (unsigned long long)rep.records);
    return STATUS_OK;
}

static const option_spec verify_options[] = {OPT_LOG, OPT_STATE, OPT_END};

const command_spec verify_command = {
    "verify", "verify [--log lmdb:PATH | --state DIR]",
    "Check every record of an LMDB log or state directory (read-only); exit 4 at the first bad one",
    "Checks the seal of every log record, that sequences go forward, the info record and its counts; a store's\n"
    "meta, every table entry, every delta record and the delta chain. It never writes.\n",
    verify_options, 0, 0, run_verify};
