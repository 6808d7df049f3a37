/* test_lmdb_log_suite.c — the log-contract suite (log_suite.h) over the
   LMDB log, opstate_lmdb_log, in a fresh mkdtemp directory under /tmp per
   test (removed at the end). Tests "log_lmdb.*".

   The log's publish clock is the suite's fake clock (log_fake_clock), so
   ages and duplicate windows pass without sleeping; the options map one to
   one onto opstate_lmdb_log_config. Waiting reads really wait (the log
   polls LMDB). */
#include "log_suite.h"
#include "../opstate_lmdb.h"
#include "lmdb_helpers.h"

typedef struct llog_env {
    char dir[64];
    opstate_lmdb *env;
    opstate_lmdb_log *log;
    log_fake_clock clock;
} llog_env;

static void llog_destroy(void *env)
{
    llog_env *e = (llog_env *)env;
    if (!e) return;
    opstate_lmdb_log_close(e->log);
    opstate_lmdb_close(e->env);
    if (e->dir[0]) rm_rf(e->dir);
    free(e);
}

static void *llog_create(const log_options *o)
{
    llog_env *e = (llog_env *)calloc(1, sizeof *e);
    opstate_lmdb_log_config lc;
    if (!e) return NULL;
    e->clock.now = LOG_FAKE_CLOCK_START;
    memset(&lc, 0, sizeof lc);
    lc.max_messages = o->max_messages;
    lc.max_age_ns = o->max_age_ns;
    lc.max_per_subject = o->max_per_subject;
    lc.duplicate_window_ns = o->duplicate_window_ns;
    lc.clock = log_fake_clock_read;
    lc.clock_user = &e->clock;
    tmp_dir(e->dir);
    if (!e->dir[0] || env_open(e->dir, 0, 0, &e->env, NULL) != OPSTATE_OK ||
        opstate_lmdb_log_open(e->env, &lc, &e->log, NULL) != OPSTATE_OK) {
        llog_destroy(e);
        return NULL;
    }
    return e;
}

static opstate_log llog_log(void *env) { return opstate_lmdb_log_iface(((llog_env *)env)->log); }

static opstate_result llog_purge(void *env, uint64_t below_seq)
{
    return opstate_lmdb_log_purge(((llog_env *)env)->log, below_seq, NULL);
}

static opstate_result llog_recreate(void *env) { return opstate_lmdb_log_recreate(((llog_env *)env)->log, NULL); }

static void llog_advance(void *env, int64_t ns) { ((llog_env *)env)->clock.now += ns; }

static const log_backend *llog_backend(void)
{
    static log_backend b;
    if (!b.create) {
        b.name = "lmdb";
        b.waits = true;
        b.create = llog_create;
        b.log = llog_log;
        b.purge = llog_purge;
        b.recreate = llog_recreate;
        b.advance = llog_advance;
        b.destroy = llog_destroy;
    }
    return &b;
}

LOG_SUITE(lmdb, llog_backend)
