/* test_driver_mem.c — the consumer-driver suite (driver_suite.h) over the
   memory backend: opstate_memlog + opstate_memstore. Tests "driver_mem.*".

   The log gets a publish clock the tests control (each append takes the
   current time, then the clock steps 1 us; set_clock moves it anywhere,
   backwards too), so replay can be tested with publish times that are not
   monotonic with sequence.

   Crash simulation: as for every backend, driver_suite.h keeps a
   fault_store wrapper (fault_store.h) around the store for the whole test
   and arms it (every flush fails) at the crash point, right before
   opstate_consumer_close(): the close frees the consumer (it always does)
   but its final flush never reaches the memstore, so the memstore keeps
   exactly what the last committed flush wrote — the state a process crash
   would leave. The memstore itself outlives the consumer (it belongs to the
   environment below), which is what "a store that survives a crash" means
   for a memory backend. */
#include "driver_suite.h"

typedef struct mem_env {
    opstate_memlog *log;
    opstate_memstore *store;
    int64_t now, step;
    uint64_t epoch;
} mem_env;

static int64_t mem_clock(void *user)
{
    mem_env *e = (mem_env *)user;
    int64_t t = e->now;
    e->now += e->step;
    return t;
}

static void mem_destroy(void *env)
{
    mem_env *e = (mem_env *)env;
    if (!e) return;
    opstate_memlog_destroy(e->log);
    opstate_memstore_destroy(e->store);
    free(e);
}

static void *mem_create(void *user, const driver_env_options *opts)
{
    mem_env *e = (mem_env *)calloc(1, sizeof *e);
    opstate_memlog_config cfg;
    (void)user;
    if (!e) return NULL;
    e->now = INT64_C(1700000000000000000);
    e->step = 1000;
    e->epoch = 1;
    memset(&cfg, 0, sizeof cfg);
    cfg.duplicate_window_ns = opts ? opts->duplicate_window_ns : 0;
    cfg.epoch = e->epoch;
    cfg.clock = mem_clock;
    cfg.clock_user = e;
    if (opstate_memlog_create(&cfg, &e->log) != OPSTATE_OK || opstate_memstore_create(NULL, &e->store) != OPSTATE_OK) {
        mem_destroy(e);
        return NULL;
    }
    return e;
}

static opstate_log mem_log(void *env) { return opstate_memlog_iface(((mem_env *)env)->log); }

static opstate_store mem_store(void *env) { return opstate_memstore_iface(((mem_env *)env)->store); }

static void mem_purge(void *env, uint64_t below_seq) { opstate_memlog_purge(((mem_env *)env)->log, below_seq); }

static void mem_recreate(void *env)
{
    mem_env *e = (mem_env *)env;
    opstate_memlog_recreate(e->log, ++e->epoch);
}

static bool mem_set_clock(void *env, int64_t publish_ns)
{
    ((mem_env *)env)->now = publish_ns;
    return true;
}

static const driver_backend *mem_backend(void)
{
    static driver_backend b;
    if (!b.create) {
        b.name = "mem";
        b.create = mem_create;
        b.log = mem_log;
        b.store = mem_store;
        b.purge = mem_purge;
        b.recreate = mem_recreate;
        b.set_clock = mem_set_clock;
        b.destroy = mem_destroy;
    }
    return &b;
}

DRIVER_SUITE(mem, mem_backend)
