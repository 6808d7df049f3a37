/* test_log_mem.c — the log-contract suite (log_suite.h) over the memory
   log, opstate_memlog. Tests "log_mem.*".

   The log's publish clock is the suite's fake clock (log_fake_clock), so
   ages and duplicate windows pass without sleeping; the options map one to
   one onto opstate_memlog_config. A recreate hands the log the next epoch. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* log_suite.h times waiting reads (clock_gettime) */
#endif
#include "log_suite.h"

typedef struct lmem_env {
    opstate_memlog *log;
    log_fake_clock clock;
    uint64_t epoch;
} lmem_env;

static void lmem_destroy(void *env)
{
    lmem_env *e = (lmem_env *)env;
    if (!e) return;
    opstate_memlog_destroy(e->log);
    free(e);
}

static void *lmem_create(const log_options *o)
{
    lmem_env *e = (lmem_env *)calloc(1, sizeof *e);
    opstate_memlog_config cfg;
    if (!e) return NULL;
    e->clock.now = LOG_FAKE_CLOCK_START;
    e->epoch = 1;
    memset(&cfg, 0, sizeof cfg);
    cfg.max_messages = o->max_messages;
    cfg.max_age_ns = o->max_age_ns;
    cfg.max_per_subject = o->max_per_subject;
    cfg.duplicate_window_ns = o->duplicate_window_ns;
    cfg.epoch = e->epoch;
    cfg.clock = log_fake_clock_read;
    cfg.clock_user = &e->clock;
    if (opstate_memlog_create(&cfg, &e->log) != OPSTATE_OK) {
        free(e);
        return NULL;
    }
    return e;
}

static opstate_log lmem_log(void *env) { return opstate_memlog_iface(((lmem_env *)env)->log); }

static opstate_result lmem_purge(void *env, uint64_t below_seq)
{
    opstate_memlog_purge(((lmem_env *)env)->log, below_seq);
    return OPSTATE_OK;
}

static opstate_result lmem_recreate(void *env)
{
    lmem_env *e = (lmem_env *)env;
    opstate_memlog_recreate(e->log, ++e->epoch);
    return OPSTATE_OK;
}

static void lmem_advance(void *env, int64_t ns) { ((lmem_env *)env)->clock.now += ns; }

static const log_backend *lmem_backend(void)
{
    static log_backend b;
    if (!b.create) {
        b.name = "mem";
        b.create = lmem_create;
        b.log = lmem_log;
        b.purge = lmem_purge;
        b.recreate = lmem_recreate;
        b.advance = lmem_advance;
        b.destroy = lmem_destroy;
    }
    return &b;
}

LOG_SUITE(mem, lmem_backend)
