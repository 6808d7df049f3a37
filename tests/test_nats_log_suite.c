/* test_nats_log_suite.c — the log-contract suite (log_suite.h) over NATS
   JetStream: a real nats-server (started once for this program by
   nats_server.h on a free 127.0.0.1 port with a temp store dir, stopped by
   PID at exit), one stream "LOGSUITE" on "lg.>" per test, created with the
   test's limits (file storage) and deleted afterwards. Tests "log_nats.*".

   The server's clock stamps messages and runs retention and the duplicate
   window, so moving time forward is a real sleep (the suite keeps ages and
   windows near one second). Reads use the log's ephemeral ordered
   consumers. */
#include "log_suite.h"
#include "../opstate_nats.h"
#include "nats_server.h"

#define NLOG_STREAM "LOGSUITE"

static nats_server nlog_server;
static opstate_nats *nlog_conn;
static int nlog_state; /* 0: not started, 1: up, -1: failed */

static void nlog_down(void)
{
    opstate_nats_close(nlog_conn);
    nlog_conn = NULL;
    nats_server_stop(&nlog_server);
}

/* The connection every test of this file shares (NULL: no server). */
static opstate_nats *nlog_nats(void)
{
    opstate_nats_config nc;
    if (nlog_state == 0) {
        nlog_state = -1;
        if (nats_server_start(&nlog_server) != 0) return NULL;
        atexit(nlog_down);
        memset(&nc, 0, sizeof nc);
        nc.urls = nlog_server.url;
        if (opstate_nats_connect(&nc, &nlog_conn, NULL) != OPSTATE_OK) return NULL;
        nlog_state = 1;
    }
    return nlog_state == 1 ? nlog_conn : NULL;
}

typedef struct nlog_env {
    opstate_nats_stream_config sc;
    opstate_nats_log *log;
} nlog_env;

static void nlog_destroy(void *env)
{
    nlog_env *e = (nlog_env *)env;
    if (!e) return;
    opstate_nats_log_close(e->log);
    opstate_nats_stream_delete(nlog_conn, NLOG_STREAM, NULL);
    free(e);
}

static void *nlog_create(const log_options *o)
{
    nlog_env *e = (nlog_env *)calloc(1, sizeof *e);
    opstate_nats_log_config lc;
    if (!e || !nlog_nats()) {
        free(e);
        return NULL;
    }
    opstate_nats_stream_delete(nlog_conn, NLOG_STREAM, NULL); /* a leftover of a failed test */
    e->sc.stream = NLOG_STREAM;
    e->sc.prefix = "lg";
    e->sc.max_messages = o->max_messages;
    e->sc.max_age_ns = o->max_age_ns;
    e->sc.max_per_subject = o->max_per_subject;
    e->sc.duplicate_window_ns = o->duplicate_window_ns;
    memset(&lc, 0, sizeof lc);
    lc.stream = NLOG_STREAM;
    lc.transient_wait_ms = 3000; /* a failure shows within the test's time */
    if (opstate_nats_stream_ensure(nlog_conn, &e->sc, NULL) != OPSTATE_OK ||
        opstate_nats_log_open(nlog_conn, &lc, &e->log, NULL) != OPSTATE_OK) {
        nlog_destroy(e);
        return NULL;
    }
    return e;
}

static opstate_log nlog_log(void *env) { return opstate_nats_log_iface(((nlog_env *)env)->log); }

static opstate_result nlog_purge(void *env, uint64_t below_seq)
{
    (void)env;
    return opstate_nats_stream_purge(nlog_conn, NLOG_STREAM, below_seq, NULL);
}

static opstate_result nlog_recreate(void *env)
{
    nlog_env *e = (nlog_env *)env;
    opstate_result r = opstate_nats_stream_delete(nlog_conn, NLOG_STREAM, NULL);
    return r == OPSTATE_OK ? opstate_nats_stream_ensure(nlog_conn, &e->sc, NULL) : r;
}

static void nlog_advance(void *env, int64_t ns)
{
    (void)env;
    log_sleep_ns(ns);
}

static const log_backend *nlog_backend(void)
{
    static log_backend b;
    if (!b.create) {
        b.name = "nats";
        b.waits = true;
        b.create = nlog_create;
        b.log = nlog_log;
        b.purge = nlog_purge;
        b.recreate = nlog_recreate;
        b.advance = nlog_advance;
        b.destroy = nlog_destroy;
    }
    return &b;
}

LOG_SUITE(nats, nlog_backend)
