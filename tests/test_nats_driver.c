/* test_nats_driver.c — the consumer-driver suite (driver_suite.h) over
   NATS JetStream: a real nats-server (started once for this program on a
   free 127.0.0.1 port with a temp store dir, stopped by PID at exit), one
   stream "DRV" on "ops.>" per test, deleted afterwards; the snapshot store
   is a memory store (JetStream holds the log, not the state). The server's
   clock stamps messages, so set_clock is not offered; JetStream's duplicate
   window is a time, so the suite's count-based window option is ignored.
   Two instantiations: ephemeral ordered reads ("driver_nats") and a durable
   pull consumer with acks ("driver_nats_durable"). */
#include "driver_suite.h"
#include "../opstate_nats.h"
#include "nats_server.h"

static nats_server drv_server;
static opstate_nats *drv_conn;

static void drv_server_down(void)
{
    opstate_nats_close(drv_conn);
    nats_server_stop(&drv_server);
}

/* The connection shared by every test of this program. */
static opstate_nats *drv_nats(void)
{
    opstate_nats_config nc;
    if (drv_conn) return drv_conn;
    if (nats_server_start(&drv_server) != 0) return NULL;
    memset(&nc, 0, sizeof nc);
    nc.urls = drv_server.url;
    if (opstate_nats_connect(&nc, &drv_conn, NULL) != OPSTATE_OK) return NULL;
    atexit(drv_server_down);
    return drv_conn;
}

typedef struct nats_env {
    opstate_nats_log *log;
    opstate_memstore *store;
} nats_env;

static opstate_result nats_stream_up(void)
{
    opstate_nats_stream_config sc;
    memset(&sc, 0, sizeof sc);
    sc.stream = "DRV";
    sc.prefix = DRV_PREFIX;
    return opstate_nats_stream_ensure(drv_conn, &sc, NULL);
}

static void nats_destroy(void *env)
{
    nats_env *e = (nats_env *)env;
    if (!e) return;
    opstate_nats_log_close(e->log);
    opstate_memstore_destroy(e->store);
    opstate_nats_stream_delete(drv_conn, "DRV", NULL);
    free(e);
}

static void *nats_create_mode(const char *durable)
{
    nats_env *e = (nats_env *)calloc(1, sizeof *e);
    opstate_nats_log_config lc;
    if (!e || !drv_nats()) {
        free(e);
        return NULL;
    }
    opstate_nats_stream_delete(drv_conn, "DRV", NULL); /* a leftover of a failed test */
    memset(&lc, 0, sizeof lc);
    lc.stream = "DRV";
    lc.durable = durable;
    if (nats_stream_up() != OPSTATE_OK || opstate_nats_log_open(drv_conn, &lc, &e->log, NULL) != OPSTATE_OK ||
        opstate_memstore_create(NULL, &e->store) != OPSTATE_OK) {
        nats_destroy(e);
        return NULL;
    }
    return e;
}

static void *nats_create(void *user, const driver_env_options *opts)
{
    (void)user;
    (void)opts;
    return nats_create_mode(NULL);
}

static void *nats_create_durable(void *user, const driver_env_options *opts)
{
    (void)user;
    (void)opts;
    return nats_create_mode("projector");
}

static opstate_log nats_log(void *env) { return opstate_nats_log_iface(((nats_env *)env)->log); }

static opstate_store nats_store(void *env) { return opstate_memstore_iface(((nats_env *)env)->store); }

static void nats_purge(void *env, uint64_t below_seq)
{
    (void)env;
    opstate_nats_stream_purge(drv_conn, "DRV", below_seq, NULL);
}

static void nats_recreate(void *env)
{
    (void)env;
    opstate_nats_stream_delete(drv_conn, "DRV", NULL);
    nats_stream_up();
}

static void nats_fill(driver_backend *b, const char *name, void *(*create)(void *, const driver_env_options *))
{
    b->name = name;
    b->create = create;
    b->log = nats_log;
    b->store = nats_store;
    b->purge = nats_purge;
    b->recreate = nats_recreate;
    b->set_clock = NULL;
    b->destroy = nats_destroy;
    b->fault_seeds = 40; /* each re-read of a hole starts a consumer on the server */
}

static const driver_backend *nats_backend(void)
{
    static driver_backend b;
    if (!b.create) nats_fill(&b, "nats", nats_create);
    return &b;
}

static const driver_backend *nats_durable_backend(void)
{
    static driver_backend b;
    if (!b.create) nats_fill(&b, "nats_durable", nats_create_durable);
    return &b;
}

DRIVER_SUITE(nats, nats_backend)
DRIVER_SUITE(nats_durable, nats_durable_backend)
