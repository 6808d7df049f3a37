/* test_driver_mem.c — the consumer-driver suite (driver_suite.h) over the
   memory backend: opstate_memlog + opstate_memstore. Tests "driver_mem.*".

   The log (memlog_env.h) gets a publish clock the tests control.

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
#include "memlog_env.h"

typedef struct mem_env {
    memlog_env base; /* first: the log calls take the environment */
    opstate_memstore *store;
} mem_env;

static void mem_destroy(void *env)
{
    mem_env *e = (mem_env *)env;
    if (!e) return;
    opstate_memlog_destroy(e->base.log);
    opstate_memstore_destroy(e->store);
    free(e);
}

static void *mem_create(void *user, const driver_env_options *opts)
{
    mem_env *e = (mem_env *)calloc(1, sizeof *e);
    (void)user;
    if (!e) return NULL;
    if (!memlog_env_init(&e->base, opts) || opstate_memstore_create(NULL, &e->store) != OPSTATE_OK) {
        mem_destroy(e);
        return NULL;
    }
    return e;
}

static opstate_store mem_store(void *env) { return opstate_memstore_iface(((mem_env *)env)->store); }

static const driver_backend *mem_backend(void)
{
    static driver_backend b;
    if (!b.create) memlog_env_backend(&b, "mem", mem_create, mem_store, mem_destroy);
    return &b;
}

DRIVER_SUITE(mem, mem_backend)
