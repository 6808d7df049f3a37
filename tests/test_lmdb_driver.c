/* test_lmdb_driver.c — the consumer-driver suite (driver_suite.h) over the
   LMDB backend: the embedded log and the delta-record store in one
   environment, in a fresh temp directory per test. Two instantiations:
   "driver_lmdb" (load-all store) and "driver_lmdb_rt" (read-through store:
   the fold reads the table through a base). The log's publish clock is the
   test's, as for the memory backend. Crashes are simulated by driver_suite.h
   (a flush that never reaches the store); the store persists in LMDB. */
#include "driver_suite.h"
#include "../opstate_lmdb.h"
#include <unistd.h>

typedef struct lmdb_env {
    char dir[64];
    opstate_lmdb *env;
    opstate_lmdb_log *log;
    opstate_lmdb_store *store;
    int64_t now;
} lmdb_env;

static int64_t lmdb_test_clock(void *user)
{
    lmdb_env *e = (lmdb_env *)user;
    int64_t t = e->now;
    e->now += 1000;
    return t;
}

static void lmdb_destroy(void *env)
{
    lmdb_env *e = (lmdb_env *)env;
    char cmd[96];
    if (!e) return;
    opstate_lmdb_log_close(e->log);
    opstate_lmdb_store_close(e->store);
    opstate_lmdb_close(e->env);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", e->dir);
    if (system(cmd) != 0) fprintf(stderr, "lmdb driver: could not remove %s\n", e->dir);
    free(e);
}

static void *lmdb_create_mode(const driver_env_options *opts, bool read_through)
{
    lmdb_env *e = (lmdb_env *)calloc(1, sizeof *e);
    opstate_lmdb_config ec;
    opstate_lmdb_log_config lc;
    opstate_lmdb_store_config sc;
    if (!e) return NULL;
    e->now = INT64_C(1700000000000000000);
    snprintf(e->dir, sizeof e->dir, "/tmp/opstate-drv-XXXXXX");
    memset(&ec, 0, sizeof ec);
    memset(&lc, 0, sizeof lc);
    memset(&sc, 0, sizeof sc);
    ec.path = e->dir;
    ec.durability = OPSTATE_LMDB_SYNC_NONE; /* crash simulation is in-process; speed matters */
    lc.duplicate_window_ns = opts ? opts->duplicate_window_ns : 0;
    lc.clock = lmdb_test_clock;
    lc.clock_user = e;
    sc.name = "driver";
    sc.read_through = read_through;
    sc.compact_flushes = 4; /* compactions happen inside the tests too */
    if (!mkdtemp(e->dir) || opstate_lmdb_open(&ec, &e->env, NULL) != OPSTATE_OK ||
        opstate_lmdb_log_open(e->env, &lc, &e->log, NULL) != OPSTATE_OK ||
        opstate_lmdb_store_open(e->env, &sc, &e->store, NULL) != OPSTATE_OK) {
        lmdb_destroy(e);
        return NULL;
    }
    return e;
}

static void *lmdb_create(void *user, const driver_env_options *opts)
{
    (void)user;
    return lmdb_create_mode(opts, false);
}

static void *lmdb_create_rt(void *user, const driver_env_options *opts)
{
    (void)user;
    return lmdb_create_mode(opts, true);
}

static opstate_log lmdb_log(void *env) { return opstate_lmdb_log_iface(((lmdb_env *)env)->log); }

static opstate_store lmdb_store(void *env) { return opstate_lmdb_store_iface(((lmdb_env *)env)->store); }

static void lmdb_purge(void *env, uint64_t below_seq) { opstate_lmdb_log_purge(((lmdb_env *)env)->log, below_seq, NULL); }

static void lmdb_recreate(void *env) { opstate_lmdb_log_recreate(((lmdb_env *)env)->log, NULL); }

static bool lmdb_set_clock(void *env, int64_t publish_ns)
{
    ((lmdb_env *)env)->now = publish_ns;
    return true;
}

static void lmdb_fill(driver_backend *b, const char *name, void *(*create)(void *, const driver_env_options *))
{
    b->name = name;
    b->create = create;
    b->log = lmdb_log;
    b->store = lmdb_store;
    b->purge = lmdb_purge;
    b->recreate = lmdb_recreate;
    b->set_clock = lmdb_set_clock;
    b->destroy = lmdb_destroy;
    b->compact_flushes = 4; /* what lmdb_create_mode configures */
}

static const driver_backend *lmdb_backend(void)
{
    static driver_backend b;
    if (!b.create) lmdb_fill(&b, "lmdb", lmdb_create);
    return &b;
}

static const driver_backend *lmdb_rt_backend(void)
{
    static driver_backend b;
    if (!b.create) lmdb_fill(&b, "lmdb_rt", lmdb_create_rt);
    return &b;
}

DRIVER_SUITE(lmdb, lmdb_backend)
DRIVER_SUITE(lmdb_rt, lmdb_rt_backend)
