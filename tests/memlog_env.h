/* memlog_env.h — the memory log of a driver-suite backend (driver_suite.h)
   whose log is opstate_memlog: test_driver_mem.c (with the memory store)
   and test_driver_flash.c (with the flash store). A backend's environment
   struct starts with a memlog_env, so the log, purge, recreate and
   set_clock calls below take the environment itself.

   The log gets a publish clock the tests control (each append takes the
   current time, then the clock steps 1 us; set_clock moves it anywhere,
   backwards too), so replay can be tested with publish times that are not
   monotonic with sequence. */
#ifndef MEMLOG_ENV_H
#define MEMLOG_ENV_H

#include "driver_suite.h"

typedef struct memlog_env {
    opstate_memlog *log;
    int64_t now, step;
    uint64_t epoch;
} memlog_env;

static int64_t memlog_env_clock(void *user)
{
    memlog_env *e = (memlog_env *)user;
    int64_t t = e->now;
    e->now += e->step;
    return t;
}

/* Creates the log (epoch 1, the test clock); false on failure. */
static bool memlog_env_init(memlog_env *e, const driver_env_options *opts)
{
    opstate_memlog_config cfg;
    e->now = INT64_C(1700000000000000000);
    e->step = 1000;
    e->epoch = 1;
    memset(&cfg, 0, sizeof cfg);
    cfg.duplicate_window_ns = opts ? opts->duplicate_window_ns : 0;
    cfg.epoch = e->epoch;
    cfg.clock = memlog_env_clock;
    cfg.clock_user = e;
    return opstate_memlog_create(&cfg, &e->log) == OPSTATE_OK;
}

static opstate_log memlog_env_log(void *env) { return opstate_memlog_iface(((memlog_env *)env)->log); }

static void memlog_env_purge(void *env, uint64_t below_seq) { opstate_memlog_purge(((memlog_env *)env)->log, below_seq); }

static void memlog_env_recreate(void *env)
{
    memlog_env *e = (memlog_env *)env;
    opstate_memlog_recreate(e->log, ++e->epoch);
}

static bool memlog_env_set_clock(void *env, int64_t publish_ns)
{
    ((memlog_env *)env)->now = publish_ns;
    return true;
}

/* A backend named `name` over these log calls and the given store calls. */
static void memlog_env_backend(driver_backend *b, const char *name, void *(*create)(void *, const driver_env_options *),
                               opstate_store (*store)(void *), void (*destroy)(void *))
{
    b->name = name;
    b->create = create;
    b->log = memlog_env_log;
    b->store = store;
    b->purge = memlog_env_purge;
    b->recreate = memlog_env_recreate;
    b->set_clock = memlog_env_set_clock;
    b->destroy = destroy;
}

#endif /* MEMLOG_ENV_H */
