/* test_lmdb_log.c — the LMDB companion's embedded event log
   (opstate_lmdb.h >>log, suite lmdb_log): sequences, duplicate ids and the
   duplicate window, expected last subject sequence, subject filters,
   retention by count, per subject and age, purge, recreate (a new epoch),
   batch appends, map growth and FULL, and reads that wait for another
   process's append. The log's clock is the test's unless a test says
   otherwise. Every test works in its own mkdtemp directory under /tmp and
   removes it at the end; children are forked processes with their own
   environments. */
#include <time.h>
#include <lmdb.h>

#include "runner.h"
#include "../opstate_lmdb.h"
#include "lmdb_helpers.h"

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void sleep_ms(long ms)
{
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000L;
    nanosleep(&ts, NULL);
}

typedef struct logfx {
    char dir[64];
    opstate_lmdb *env;
    opstate_lmdb_log *lg;
    opstate_log log;
    int64_t now; /* the controlled clock */
} logfx;

static int64_t fake_clock(void *user) { return ((logfx *)user)->now; }

static bool lfx_open(logfx *fx, const opstate_lmdb_log_config *cfg_in)
{
    opstate_lmdb_log_config cfg;
    if (cfg_in) cfg = *cfg_in;
    else memset(&cfg, 0, sizeof cfg);
    if (!cfg.clock) {
        cfg.clock = fake_clock;
        cfg.clock_user = fx;
    }
    fx->env = NULL;
    fx->lg = NULL;
    if (!fx->now) fx->now = 1000;
    tmp_dir(fx->dir);
    if (!fx->dir[0] || env_open(fx->dir, 0, 0, &fx->env, NULL) != OPSTATE_OK) return false;
    if (opstate_lmdb_log_open(fx->env, &cfg, &fx->lg, NULL) != OPSTATE_OK) return false;
    fx->log = opstate_lmdb_log_iface(fx->lg);
    return true;
}

/* Reopens the fixture's log read-only: another process may then write it
   (one writer process per environment). */
static bool lfx_reopen_read_only(logfx *fx, size_t map)
{
    opstate_lmdb_config c;
    opstate_lmdb_log_close(fx->lg);
    opstate_lmdb_close(fx->env);
    memset(&c, 0, sizeof c);
    c.path = fx->dir;
    c.map_size = map;
    c.access = OPSTATE_LMDB_READ_ONLY;
    fx->lg = NULL;
    if (opstate_lmdb_open(&c, &fx->env, NULL) != OPSTATE_OK) return false;
    if (opstate_lmdb_log_open(fx->env, NULL, &fx->lg, NULL) != OPSTATE_OK) return false;
    fx->log = opstate_lmdb_log_iface(fx->lg);
    return true;
}

static void lfx_close(logfx *fx)
{
    opstate_lmdb_log_close(fx->lg);
    opstate_lmdb_close(fx->env);
    if (fx->dir[0]) rm_rf(fx->dir);
}

static opstate_result app(logfx *fx, const char *subject, const char *data, const opstate_append_options *o,
                          opstate_append_result *out)
{
    opstate_append_result tmp;
    return fx->log.append(fx->log.user, str(subject), str(data), o, out ? out : &tmp, NULL);
}

/* Seqs of a read, as a string "1,2,3" (so a mismatch prints usefully in
   a CHECK_STR-style comparison). */
static void read_seqs(logfx *fx, const char *filter, uint64_t from, char *out, size_t cap)
{
    opstate_log_message msgs[64];
    size_t n = 0, i, at = 0;
    out[0] = '\0';
    if (fx->log.read(fx->log.user, str(filter), from, 0, msgs, 64, &n, NULL) != OPSTATE_OK) {
        snprintf(out, cap, "error");
        return;
    }
    for (i = 0; i < n && at < cap; i++)
        at += (size_t)snprintf(out + at, cap - at, i ? ",%lu" : "%lu", (unsigned long)msgs[i].position.seq);
}

TEST(lmdb_log, append_assigns_sequences)
{
    logfx fx;
    opstate_append_result res;
    opstate_stream_info info;
    opstate_log_message msgs[8];
    size_t n = 0;
    int i;
    memset(&fx, 0, sizeof fx);
    REQUIRE(lfx_open(&fx, NULL));
    CHECK(fx.log.info(fx.log.user, &info, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(info.last_seq, 0);
    CHECK_EQ_U64(info.messages, 0);
    CHECK(info.epoch != 0);
    for (i = 1; i <= 5; i++) {
        fx.now = 1000 + i;
        CHECK(app(&fx, "a.b", "payload", NULL, &res) == OPSTATE_OK);
        CHECK_EQ_U64(res.seq, (uint64_t)i);
        CHECK(!res.duplicate);
    }
    CHECK(fx.log.info(fx.log.user, &info, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(info.first_seq, 1);
    CHECK_EQ_U64(info.last_seq, 5);
    CHECK_EQ_U64(info.messages, 5);
    CHECK_EQ_U64(info.first_time, 1001);
    CHECK_EQ_U64(info.last_time, 1005);
    CHECK(fx.log.read(fx.log.user, str(""), 2, 0, msgs, 2, &n, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(n, 2);
    if (n == 2) {
        CHECK_EQ_U64(msgs[0].position.seq, 2);
        CHECK_EQ_U64(msgs[0].position.time, 1002);
        CHECK_EQ_U64(msgs[0].position.epoch, info.epoch);
        CHECK(msgs[0].subject.len == 3 && memcmp(msgs[0].subject.ptr, "a.b", 3) == 0);
        CHECK(msgs[0].data.len == 7 && memcmp(msgs[0].data.ptr, "payload", 7) == 0);
        CHECK_EQ_U64(msgs[1].position.seq, 3);
    }
    CHECK(fx.log.read(fx.log.user, str(""), 6, 0, msgs, 8, &n, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(n, 0);
    /* bad subjects */
    CHECK(fx.log.append(fx.log.user, str(""), str("x"), NULL, &res, NULL) == OPSTATE_INVALID_ARGUMENT);
    CHECK(fx.log.append(fx.log.user, by("a\0b", 3), str("x"), NULL, &res, NULL) == OPSTATE_INVALID_ARGUMENT);
    /* survives a restart: the next append is 6 */
    opstate_lmdb_log_close(fx.lg);
    opstate_lmdb_close(fx.env);
    fx.lg = NULL;
    REQUIRE(env_open(fx.dir, 0, 0, &fx.env, NULL) == OPSTATE_OK);
    REQUIRE(opstate_lmdb_log_open(fx.env, NULL, &fx.lg, NULL) == OPSTATE_OK);
    fx.log = opstate_lmdb_log_iface(fx.lg);
    CHECK(app(&fx, "a.b", "after restart", NULL, &res) == OPSTATE_OK);
    CHECK_EQ_U64(res.seq, 6);
    lfx_close(&fx);
}

TEST(lmdb_log, duplicate_id_returns_original)
{
    logfx fx;
    opstate_append_result res;
    opstate_append_options o;
    opstate_stream_info info;
    opstate_id a = mkid(1), b = mkid(2);
    memset(&fx, 0, sizeof fx);
    REQUIRE(lfx_open(&fx, NULL));
    memset(&o, 0, sizeof o);
    o.msg_id = &a;
    CHECK(app(&fx, "s.1", "first", &o, &res) == OPSTATE_OK);
    CHECK(res.seq == 1 && !res.duplicate);
    CHECK(app(&fx, "s.2", "other", NULL, &res) == OPSTATE_OK);
    CHECK_EQ_U64(res.seq, 2);
    res.seq = 99;
    CHECK(app(&fx, "s.1", "first again", &o, &res) == OPSTATE_OK);
    CHECK(res.duplicate);
    CHECK_EQ_U64(res.seq, 1);
    o.msg_id = &b;
    CHECK(app(&fx, "s.1", "new id", &o, &res) == OPSTATE_OK);
    CHECK(res.seq == 3 && !res.duplicate);
    CHECK(fx.log.info(fx.log.user, &info, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(info.last_seq, 3);
    CHECK_EQ_U64(info.messages, 3);
    lfx_close(&fx);
}

TEST(lmdb_log, duplicate_window_is_a_time)
{
    logfx fx;
    opstate_lmdb_log_config cfg;
    opstate_append_result res;
    opstate_append_options o;
    opstate_id ids[6];
    uint8_t i;
    memset(&fx, 0, sizeof fx);
    memset(&cfg, 0, sizeof cfg);
    cfg.duplicate_window_ns = 1000;
    REQUIRE(lfx_open(&fx, &cfg));
    memset(&o, 0, sizeof o);
    for (i = 0; i < 6; i++) { /* ids appended at 1000, 1200, ..., 2000 */
        fx.now = 1000 + 200 * (int64_t)i;
        ids[i] = mkid((uint8_t)(i + 10));
        o.msg_id = &ids[i];
        CHECK(app(&fx, "w", "x", &o, &res) == OPSTATE_OK);
        CHECK_EQ_U64(res.seq, i + 1u);
    }
    fx.now = 2100; /* the window reaches back to 1100 */
    o.msg_id = &ids[5];
    CHECK(app(&fx, "w", "x", &o, &res) == OPSTATE_OK && res.duplicate && res.seq == 6);
    o.msg_id = &ids[1];
    CHECK(app(&fx, "w", "x", &o, &res) == OPSTATE_OK && res.duplicate && res.seq == 2);
    o.msg_id = &ids[0]; /* appended at 1000: out of the window */
    CHECK(app(&fx, "w", "x", &o, &res) == OPSTATE_OK && !res.duplicate && res.seq == 7);
    o.msg_id = &ids[0]; /* its new append is in the window again */
    CHECK(app(&fx, "w", "x", &o, &res) == OPSTATE_OK && res.duplicate && res.seq == 7);
    fx.now = 5000; /* everything older than 4000 is forgotten, and only that */
    o.msg_id = &ids[5];
    CHECK(app(&fx, "w", "x", &o, &res) == OPSTATE_OK && !res.duplicate && res.seq == 8);
    o.msg_id = &ids[5];
    CHECK(app(&fx, "w", "x", &o, &res) == OPSTATE_OK && res.duplicate && res.seq == 8);
    lfx_close(&fx);
}

TEST(lmdb_log, expected_last_subject_seq)
{
    logfx fx;
    opstate_append_result res;
    opstate_append_options o;
    opstate_error err;
    opstate_stream_info info;
    memset(&fx, 0, sizeof fx);
    REQUIRE(lfx_open(&fx, NULL));
    memset(&o, 0, sizeof o);
    o.expect_last_subject_seq = true;
    o.last_subject_seq = 0; /* must be new */
    CHECK(app(&fx, "acct.1", "open", &o, &res) == OPSTATE_OK);
    CHECK_EQ_U64(res.seq, 1);
    CHECK(app(&fx, "acct.2", "open", &o, &res) == OPSTATE_OK);
    CHECK_EQ_U64(res.seq, 2);
    memset(&err, 0, sizeof err);
    CHECK(fx.log.append(fx.log.user, str("acct.1"), str("again"), &o, &res, &err) == OPSTATE_CONFLICT);
    CHECK(err.result == OPSTATE_CONFLICT);
    o.last_subject_seq = 2; /* the stream's last, not the subject's */
    CHECK(app(&fx, "acct.1", "x", &o, &res) == OPSTATE_CONFLICT);
    o.last_subject_seq = 1;
    CHECK(app(&fx, "acct.1", "deposit", &o, &res) == OPSTATE_OK);
    CHECK_EQ_U64(res.seq, 3);
    CHECK(app(&fx, "acct.1", "stale", &o, &res) == OPSTATE_CONFLICT); /* 1 is no longer the last */
    o.last_subject_seq = 3;
    CHECK(app(&fx, "acct.1", "ok", &o, &res) == OPSTATE_OK);
    CHECK_EQ_U64(res.seq, 4);
    /* without the flag anything goes */
    CHECK(app(&fx, "acct.1", "free", NULL, &res) == OPSTATE_OK);
    CHECK_EQ_U64(res.seq, 5);
    CHECK(fx.log.info(fx.log.user, &info, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(info.messages, 5); /* conflicts wrote nothing */
    CHECK_EQ_U64(info.last_seq, 5);
    lfx_close(&fx);
}

TEST(lmdb_log, read_filters)
{
    static const struct {
        const char *filter, *want;
        uint64_t from;
    } rows[] = {
        {"", "1,2,3,4,5,6,7", 1},
        {">", "1,2,3,4,5,6,7", 1},
        {"orders.>", "1,2,4,6", 1},
        {"orders.*", "", 1},
        {"orders.*.1", "1,4", 1},
        {"orders.eu.*", "1,2", 1},
        {"orders.eu.>", "1,2,6", 1},
        {"*.eu.*", "1,2,5", 1},
        {"users.x", "3", 1},
        {"users.*", "3", 1},
        {"*", "7", 1},
        {"orders.>", "4,6", 3},
        {"nomatch.>", "", 1},
        {"", "7", 7},
        {"", "", 8},
    };
    static const char *subjects[] = {"orders.eu.1", "orders.eu.2", "users.x", "orders.us.1",
                                     "stock.eu.9", "orders.eu.3.x", "single"};
    logfx fx;
    size_t i;
    char got[128];
    memset(&fx, 0, sizeof fx);
    REQUIRE(lfx_open(&fx, NULL));
    for (i = 0; i < COUNT_OF(subjects); i++) CHECK(app(&fx, subjects[i], "d", NULL, NULL) == OPSTATE_OK);
    for (i = 0; i < COUNT_OF(rows); i++) {
        CASE(rows[i].filter);
        read_seqs(&fx, rows[i].filter, rows[i].from, got, sizeof got);
        CHECK_STR(got, rows[i].want);
    }
    CASE(NULL);
    {
        /* max bounds the batch; the rest comes from the next from_seq */
        opstate_log_message msgs[2];
        size_t n = 0;
        CHECK(fx.log.read(fx.log.user, str("orders.>"), 1, 0, msgs, 2, &n, NULL) == OPSTATE_OK);
        CHECK(n == 2 && msgs[0].position.seq == 1 && msgs[1].position.seq == 2);
        CHECK(fx.log.read(fx.log.user, str("orders.>"), 3, 0, msgs, 2, &n, NULL) == OPSTATE_OK);
        CHECK(n == 2 && msgs[0].position.seq == 4 && msgs[1].position.seq == 6);
    }
    lfx_close(&fx);
}

/* last_per_subject as "subject=seq;..." in the order it calls back. */
typedef struct lps_ctx {
    char out[256];
    size_t at;
} lps_ctx;

static void lps_visit(void *user, const opstate_log_message *msg)
{
    lps_ctx *c = (lps_ctx *)user;
    if (c->at < sizeof c->out)
        c->at += (size_t)snprintf(c->out + c->at, sizeof c->out - c->at, "%.*s=%lu;", (int)msg->subject.len,
                                  (const char *)msg->subject.ptr, (unsigned long)msg->position.seq);
}

static void lps(logfx *fx, const char *filter, char *out, size_t cap)
{
    lps_ctx c;
    memset(&c, 0, sizeof c);
    if (fx->log.last_per_subject(fx->log.user, str(filter), lps_visit, &c, NULL) != OPSTATE_OK)
        snprintf(c.out, sizeof c.out, "error");
    c.out[cap - 1] = '\0'; /* cap <= sizeof c.out */
    memcpy(out, c.out, cap);
}

TEST(lmdb_log, retention_max_messages)
{
    logfx fx;
    opstate_lmdb_log_config cfg;
    opstate_stream_info info;
    char got[128];
    int i;
    memset(&fx, 0, sizeof fx);
    memset(&cfg, 0, sizeof cfg);
    cfg.max_messages = 3;
    REQUIRE(lfx_open(&fx, &cfg));
    for (i = 0; i < 5; i++) CHECK(app(&fx, i % 2 ? "odd" : "even", "d", NULL, NULL) == OPSTATE_OK);
    CHECK(fx.log.info(fx.log.user, &info, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(info.first_seq, 3);
    CHECK_EQ_U64(info.last_seq, 5);
    CHECK_EQ_U64(info.messages, 3);
    read_seqs(&fx, "", 1, got, sizeof got);
    CHECK_STR(got, "3,4,5");
    lps(&fx, "", got, sizeof got);
    CHECK_STR(got, "even=5;odd=4;");
    CHECK(app(&fx, "odd", "d", NULL, NULL) == OPSTATE_OK);
    CHECK(fx.log.info(fx.log.user, &info, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(info.first_seq, 4);
    CHECK_EQ_U64(info.messages, 3);
    lfx_close(&fx);
}

TEST(lmdb_log, retention_max_per_subject)
{
    static const char *subjects[] = {"a", "a", "b", "a", "b", "b", "c"};
    logfx fx;
    opstate_lmdb_log_config cfg;
    opstate_stream_info info;
    opstate_append_options o;
    char got[128];
    size_t i;
    memset(&fx, 0, sizeof fx);
    memset(&cfg, 0, sizeof cfg);
    cfg.max_per_subject = 2;
    REQUIRE(lfx_open(&fx, &cfg));
    for (i = 0; i < COUNT_OF(subjects); i++) CHECK(app(&fx, subjects[i], "d", NULL, NULL) == OPSTATE_OK);
    /* a: 1,2,4 -> 2,4; b: 3,5,6 -> 5,6; c: 7 */
    CHECK(fx.log.info(fx.log.user, &info, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(info.first_seq, 2);
    CHECK_EQ_U64(info.last_seq, 7);
    CHECK_EQ_U64(info.messages, 5);
    read_seqs(&fx, "", 1, got, sizeof got);
    CHECK_STR(got, "2,4,5,6,7");
    lps(&fx, "", got, sizeof got);
    CHECK_STR(got, "a=4;b=6;c=7;");
    lps(&fx, "b", got, sizeof got);
    CHECK_STR(got, "b=6;");
    /* the subject index follows retention: expected last for a is 4 */
    memset(&o, 0, sizeof o);
    o.expect_last_subject_seq = true;
    o.last_subject_seq = 4;
    CHECK(app(&fx, "a", "d", &o, NULL) == OPSTATE_OK); /* seq 8, drops 2 */
    CHECK(fx.log.info(fx.log.user, &info, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(info.first_seq, 4);
    read_seqs(&fx, "a", 1, got, sizeof got);
    CHECK_STR(got, "4,8");
    lfx_close(&fx);
}

TEST(lmdb_log, retention_max_age)
{
    logfx fx;
    opstate_lmdb_log_config cfg;
    opstate_stream_info info;
    char got[128];
    memset(&fx, 0, sizeof fx);
    memset(&cfg, 0, sizeof cfg);
    cfg.max_age_ns = 100;
    fx.now = 1000;
    REQUIRE(lfx_open(&fx, &cfg));
    fx.now = 1000;
    CHECK(app(&fx, "x", "d", NULL, NULL) == OPSTATE_OK); /* 1 @1000 */
    fx.now = 1050;
    CHECK(app(&fx, "y", "d", NULL, NULL) == OPSTATE_OK); /* 2 @1050 */
    fx.now = 1090;
    CHECK(app(&fx, "x", "d", NULL, NULL) == OPSTATE_OK); /* 3 @1090 */
    CHECK(fx.log.info(fx.log.user, &info, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(info.first_seq, 1);
    fx.now = 1120; /* 1 is now 120 old */
    CHECK(app(&fx, "z", "d", NULL, NULL) == OPSTATE_OK); /* 4 @1120 */
    CHECK(fx.log.info(fx.log.user, &info, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(info.first_seq, 2);
    CHECK_EQ_U64(info.first_time, 1050);
    CHECK_EQ_U64(info.messages, 3);
    read_seqs(&fx, "", 1, got, sizeof got);
    CHECK_STR(got, "2,3,4");
    lps(&fx, "", got, sizeof got);
    CHECK_STR(got, "x=3;y=2;z=4;");
    fx.now = 1195; /* 2 and 3 are older than 100 */
    CHECK(app(&fx, "z", "d", NULL, NULL) == OPSTATE_OK); /* 5 @1195 */
    CHECK(fx.log.info(fx.log.user, &info, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(info.first_seq, 4);
    CHECK_EQ_U64(info.messages, 2);
    lps(&fx, "", got, sizeof got);
    CHECK_STR(got, "z=5;");
    lfx_close(&fx);
}

/* Age retention without new appends: JetStream expires messages on its
   own; a log whose first_seq only moves on append reports expired
   messages as retained. */
TEST(lmdb_log, retention_max_age_without_append)
{
    logfx fx;
    opstate_lmdb_log_config cfg;
    opstate_stream_info info;
    char got[128];
    memset(&fx, 0, sizeof fx);
    memset(&cfg, 0, sizeof cfg);
    cfg.max_age_ns = 100;
    fx.now = 1000;
    REQUIRE(lfx_open(&fx, &cfg));
    CHECK(app(&fx, "x", "d", NULL, NULL) == OPSTATE_OK);
    CHECK(app(&fx, "x", "d", NULL, NULL) == OPSTATE_OK);
    fx.now = 5000;
    CHECK(fx.log.info(fx.log.user, &info, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(info.messages, 0);
    CHECK_EQ_U64(info.first_seq, 3);
    read_seqs(&fx, "", 1, got, sizeof got);
    CHECK_STR(got, "");
    lfx_close(&fx);
}

TEST(lmdb_log, purge)
{
    logfx fx;
    opstate_stream_info info;
    opstate_append_options o;
    opstate_append_result res;
    char got[128];
    int i;
    memset(&fx, 0, sizeof fx);
    REQUIRE(lfx_open(&fx, NULL));
    for (i = 0; i < 6; i++) CHECK(app(&fx, i < 3 ? "p.a" : "p.b", "d", NULL, NULL) == OPSTATE_OK);
    CHECK(opstate_lmdb_log_purge(fx.lg, 4, NULL) == OPSTATE_OK);
    CHECK(fx.log.info(fx.log.user, &info, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(info.first_seq, 4);
    CHECK_EQ_U64(info.last_seq, 6);
    CHECK_EQ_U64(info.messages, 3);
    read_seqs(&fx, "", 1, got, sizeof got);
    CHECK_STR(got, "4,5,6");
    lps(&fx, "", got, sizeof got);
    CHECK_STR(got, "p.b=6;");
    /* p.a has no message left: it counts as new again */
    memset(&o, 0, sizeof o);
    o.expect_last_subject_seq = true;
    CHECK(app(&fx, "p.a", "d", &o, &res) == OPSTATE_OK);
    CHECK_EQ_U64(res.seq, 7);
    /* purge everything: sequences go on */
    CHECK(opstate_lmdb_log_purge(fx.lg, 100, NULL) == OPSTATE_OK);
    CHECK(fx.log.info(fx.log.user, &info, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(info.messages, 0);
    CHECK_EQ_U64(info.last_seq, 7);
    CHECK_EQ_U64(info.first_seq, 8);
    CHECK(app(&fx, "p.c", "d", NULL, &res) == OPSTATE_OK);
    CHECK_EQ_U64(res.seq, 8);
    lfx_close(&fx);
}

TEST(lmdb_log, recreate_restarts_sequences)
{
    logfx fx;
    opstate_stream_info before, after;
    opstate_append_result res;
    opstate_append_options o;
    opstate_id id = mkid(3);
    char got[64];
    memset(&fx, 0, sizeof fx);
    REQUIRE(lfx_open(&fx, NULL));
    memset(&o, 0, sizeof o);
    o.msg_id = &id;
    CHECK(app(&fx, "r", "1", &o, NULL) == OPSTATE_OK);
    CHECK(app(&fx, "r", "2", NULL, NULL) == OPSTATE_OK);
    CHECK(app(&fx, "q", "3", NULL, NULL) == OPSTATE_OK);
    CHECK(fx.log.info(fx.log.user, &before, NULL) == OPSTATE_OK);
    /* the clock did not move: the epoch must change anyway */
    CHECK(opstate_lmdb_log_recreate(fx.lg, NULL) == OPSTATE_OK);
    CHECK(fx.log.info(fx.log.user, &after, NULL) == OPSTATE_OK);
    CHECK(after.epoch > before.epoch);
    CHECK_EQ_U64(after.messages, 0);
    CHECK_EQ_U64(after.last_seq, 0);
    read_seqs(&fx, "", 1, got, sizeof got);
    CHECK_STR(got, "");
    lps(&fx, "", got, sizeof got);
    CHECK_STR(got, "");
    CHECK(app(&fx, "r", "new 1", &o, &res) == OPSTATE_OK); /* the old id is forgotten */
    CHECK(res.seq == 1 && !res.duplicate);
    CHECK(app(&fx, "r", "new 2", NULL, &res) == OPSTATE_OK);
    CHECK_EQ_U64(res.seq, 2);
    CHECK(fx.log.info(fx.log.user, &after, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(after.first_seq, 1);
    CHECK_EQ_U64(after.last_seq, 2);
    /* and with a clock far ahead: the epoch grows again */
    before = after;
    fx.now += 1000000;
    CHECK(opstate_lmdb_log_recreate(fx.lg, NULL) == OPSTATE_OK);
    CHECK(fx.log.info(fx.log.user, &after, NULL) == OPSTATE_OK);
    CHECK(after.epoch > before.epoch);
    {
        opstate_log_message m[2];
        size_t n = 0;
        CHECK(app(&fx, "r", "x", NULL, &res) == OPSTATE_OK && res.seq == 1);
        CHECK(fx.log.read(fx.log.user, str(""), 1, 0, m, 2, &n, NULL) == OPSTATE_OK && n == 1);
        if (n == 1) CHECK_EQ_U64(m[0].position.epoch, after.epoch);
    }
    lfx_close(&fx);
}

/* The child of the waiting-read tests: after `delay_ms` it opens its own
   environment on `dir` (never the parent's), appends one message to the
   log "events" and exits 0; 2 when its open fails with ALREADY_OPEN. */
static void append_child(int fd, const char *dir, long delay_ms)
{
    opstate_lmdb *env = NULL;
    opstate_lmdb_log *lg = NULL;
    opstate_log log;
    opstate_append_result res;
    opstate_result r;
    int code = 1;
    sleep_ms(delay_ms);
    r = env_open(dir, 0, 0, &env, NULL);
    if (r == OPSTATE_ALREADY_OPEN) child_finish(fd, 2);
    if (r == OPSTATE_OK && opstate_lmdb_log_open(env, NULL, &lg, NULL) == OPSTATE_OK) {
        log = opstate_lmdb_log_iface(lg);
        if (log.append(log.user, str("from.child"), str("hello"), NULL, &res, NULL) == OPSTATE_OK && res.seq == 2)
            code = 0;
        opstate_lmdb_log_close(lg);
    }
    opstate_lmdb_close(env);
    child_finish(fd, code);
}

/* Reads from seq 2 with a 1.5 s wait; the child appends seq 2 ~50 ms in. */
static void wait_for_child(logfx *fx, pid_t pid, int fd)
{
    opstate_log_message msgs[4];
    size_t n = 0;
    int64_t t0 = mono_ns(), took;
    opstate_result r = fx->log.read(fx->log.user, str(""), 2, (int64_t)1500000000, msgs, 4, &n, NULL);
    took = mono_ns() - t0;
    CHECK(r == OPSTATE_OK);
    CHECK_EQ_U64(n, 1);
    if (n == 1) {
        CHECK_EQ_U64(msgs[0].position.seq, 2);
        CHECK(msgs[0].subject.len == 10 && memcmp(msgs[0].subject.ptr, "from.child", 10) == 0);
        CHECK(msgs[0].data.len == 5 && memcmp(msgs[0].data.ptr, "hello", 5) == 0);
    }
    CHECK(took < (int64_t)1000000000);
    CHECK_EQ_U64(child_wait(pid, fd), 0);
}

/* The child forks while this process holds its environment open: the
   child's own environment on the same path is a different process's and
   must open (the "one per process" registry must not leak across fork). */
TEST(lmdb_log, waiting_read_sees_other_process)
{
    logfx fx;
    opstate_lmdb_log_config cfg;
    pid_t pid;
    int fd;
    memset(&fx, 0, sizeof fx);
    memset(&cfg, 0, sizeof cfg);
    cfg.clock = NULL;
    REQUIRE(lfx_open(&fx, &cfg));
    CHECK(app(&fx, "first", "1", NULL, NULL) == OPSTATE_OK);
    REQUIRE(lfx_reopen_read_only(&fx, 0)); /* the child is the writer */
    pid = child_start(&fd);
    REQUIRE(pid >= 0);
    if (pid == 0) append_child(fd, fx.dir, 50);
    wait_for_child(&fx, pid, fd);
    lfx_close(&fx);
}

/* The same with the child forked before this process opens its
   environment (no registry entry to inherit): the wait semantics alone. */
TEST(lmdb_log, waiting_read_child_forked_first)
{
    logfx fx;
    pid_t pid;
    int fd;
    memset(&fx, 0, sizeof fx);
    REQUIRE(lfx_open(&fx, NULL));
    CHECK(app(&fx, "first", "1", NULL, NULL) == OPSTATE_OK);
    opstate_lmdb_log_close(fx.lg);
    opstate_lmdb_close(fx.env);
    fx.lg = NULL;
    fx.env = NULL;
    pid = child_start(&fd);
    REQUIRE(pid >= 0);
    if (pid == 0) append_child(fd, fx.dir, 50);
    REQUIRE(lfx_reopen_read_only(&fx, 0));
    wait_for_child(&fx, pid, fd);
    lfx_close(&fx);
}

/* A read with a wait and nothing coming returns empty after about wait_ns. */
TEST(lmdb_log, waiting_read_times_out)
{
    logfx fx;
    opstate_log_message msgs[2];
    size_t n = 7;
    int64_t t0, took;
    memset(&fx, 0, sizeof fx);
    REQUIRE(lfx_open(&fx, NULL));
    t0 = mono_ns();
    CHECK(fx.log.read(fx.log.user, str(""), 1, 30000000, msgs, 2, &n, NULL) == OPSTATE_OK);
    took = mono_ns() - t0;
    CHECK_EQ_U64(n, 0);
    CHECK(took >= 30000000 && took < 1000000000);
    lfx_close(&fx);
}

/* Appends grow the map; past the limit FULL, and the log stays whole. */
TEST(lmdb_log, map_growth_and_full)
{
    const size_t mib = (size_t)1 << 20, dlen = 60 * 1024;
    char dir[64];
    opstate_lmdb *env = NULL;
    opstate_lmdb_log *lg = NULL;
    opstate_log log;
    opstate_append_result res;
    opstate_stream_info info;
    opstate_log_message msgs[64];
    opstate_error err;
    opstate_result r = OPSTATE_OK;
    uint8_t *data = (uint8_t *)malloc(dlen);
    uint64_t ok = 0, i;
    size_t n = 0, bad = 0, j;
    tmp_dir(dir);
    REQUIRE(dir[0] && data);
    REQUIRE(env_open(dir, mib, 4 * mib, &env, NULL) == OPSTATE_OK);
    REQUIRE(opstate_lmdb_log_open(env, NULL, &lg, NULL) == OPSTATE_OK);
    log = opstate_lmdb_log_iface(lg);
    for (i = 1; i < 200; i++) {
        memset(data, (int)i, dlen);
        memset(&err, 0, sizeof err);
        r = log.append(log.user, str("big"), by(data, dlen), NULL, &res, &err);
        if (r != OPSTATE_OK) break;
        CHECK_EQ_U64(res.seq, i);
        ok = i;
    }
    CHECK(r == OPSTATE_FULL);
    CHECK(err.dep_status == MDB_MAP_FULL);
    CHECK(ok > 20); /* well past the first 1 MiB */
    CHECK_EQ_U64(opstate_lmdb_map_size(env), 4 * mib);
    CHECK(log.info(log.user, &info, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(info.last_seq, ok);
    CHECK_EQ_U64(info.messages, ok);
    CHECK(log.read(log.user, str(""), 1, 0, msgs, 64, &n, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(n, ok < 64 ? ok : 64);
    for (j = 0; j < n; j++) {
        size_t b;
        if (msgs[j].position.seq != j + 1 || msgs[j].data.len != dlen) bad++;
        else
            for (b = 0; b < dlen; b += 4096)
                if (msgs[j].data.ptr[b] != (uint8_t)(j + 1)) bad++;
    }
    CHECK_EQ_U64(bad, 0);
    /* a purge frees room: appends work again, the sequence goes on (LMDB
       reuses the pages a commit frees only after a later commit: a retry of
       the same failed transaction never gets there) */
    CHECK(opstate_lmdb_log_purge(lg, ok, NULL) == OPSTATE_OK);
    r = log.append(log.user, str("big"), by(data, dlen), NULL, &res, NULL);
    if (r != OPSTATE_OK) /* once more: LMDB reuses freed pages one commit late */
        r = log.append(log.user, str("big"), by(data, dlen), NULL, &res, NULL);
    CHECK(r == OPSTATE_OK);
    CHECK_EQ_U64(res.seq, ok + 1);
    opstate_lmdb_log_close(lg);
    opstate_lmdb_close(env);
    free(data);
    rm_rf(dir);
}

/* Another process grows the map: this one adopts the new size on its next
   read and write (MDB_MAP_RESIZED) and sees everything. */
TEST(lmdb_log, other_process_grows_map)
{
    const size_t mib = (size_t)1 << 20;
    logfx fx;
    opstate_log_message msgs[64];
    opstate_append_result res;
    size_t n = 0;
    int fd;
    pid_t pid;
    memset(&fx, 0, sizeof fx);
    tmp_dir(fx.dir);
    REQUIRE(fx.dir[0]);
    REQUIRE(env_open(fx.dir, mib, 64 * mib, &fx.env, NULL) == OPSTATE_OK);
    REQUIRE(opstate_lmdb_log_open(fx.env, NULL, &fx.lg, NULL) == OPSTATE_OK);
    fx.log = opstate_lmdb_log_iface(fx.lg);
    CHECK(app(&fx, "first", "1", NULL, NULL) == OPSTATE_OK);
    CHECK(fx.log.read(fx.log.user, str(""), 1, 0, msgs, 64, &n, NULL) == OPSTATE_OK && n == 1);
    REQUIRE(lfx_reopen_read_only(&fx, mib)); /* the child is the writer */
    pid = child_start(&fd);
    REQUIRE(pid >= 0);
    if (pid == 0) {
        opstate_lmdb *env = NULL;
        opstate_lmdb_log *lg = NULL;
        opstate_log log;
        static uint8_t data[100 * 1024];
        int i, code = 0;
        if (env_open(fx.dir, mib, 64 * mib, &env, NULL) != OPSTATE_OK ||
            opstate_lmdb_log_open(env, NULL, &lg, NULL) != OPSTATE_OK)
            child_finish(fd, 1);
        log = opstate_lmdb_log_iface(lg);
        for (i = 0; i < 40 && code == 0; i++) {
            memset(data, i + 2, sizeof data);
            if (log.append(log.user, str("child"), by(data, sizeof data), NULL, &res, NULL) != OPSTATE_OK) code = 3;
        }
        if (code == 0 && opstate_lmdb_map_size(env) <= 2 * mib) code = 4;
        opstate_lmdb_log_close(lg);
        opstate_lmdb_close(env);
        child_finish(fd, code);
    }
    CHECK_EQ_U64(child_wait(pid, fd), 0);
    CHECK(fx.log.read(fx.log.user, str(""), 1, 0, msgs, 64, &n, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(n, 41);
    if (n == 41) CHECK(msgs[40].data.len == 100 * 1024 && msgs[40].data.ptr[100 * 1024 - 1] == 41);
    CHECK(opstate_lmdb_map_size(fx.env) > 2 * mib);
    opstate_lmdb_log_close(fx.lg); /* the writer's turn */
    opstate_lmdb_close(fx.env);
    REQUIRE(env_open(fx.dir, mib, 64 * mib, &fx.env, NULL) == OPSTATE_OK);
    REQUIRE(opstate_lmdb_log_open(fx.env, NULL, &fx.lg, NULL) == OPSTATE_OK);
    fx.log = opstate_lmdb_log_iface(fx.lg);
    CHECK(app(&fx, "parent", "again", NULL, &res) == OPSTATE_OK);
    CHECK_EQ_U64(res.seq, 42);
    lfx_close(&fx);
}

/* A batch append is one transaction: sequences in order, an id repeated
   inside the batch is a duplicate of its first copy, and a conflict refuses
   the whole batch (nothing appended, err.offset at the failing item). */
TEST(lmdb_log, append_batch)
{
    logfx fx;
    opstate_lmdb_append_item items[4];
    opstate_append_result out[4];
    opstate_stream_info info;
    opstate_id a, b;
    opstate_error err;
    memset(&fx, 0, sizeof fx);
    REQUIRE(lfx_open(&fx, NULL));
    memset(items, 0, sizeof items);
    memset(&a, 1, sizeof a);
    memset(&b, 2, sizeof b);
    items[0].subject = str("ops.s.k.x");
    items[0].data = str("1");
    items[0].opts.msg_id = &a;
    items[1].subject = str("ops.s.k.y");
    items[1].data = str("2");
    items[1].opts.msg_id = &b;
    items[2].subject = str("ops.s.k.z");
    items[2].data = str("3");
    items[2].opts.msg_id = &a; /* repeats item 0 */
    CHECK(opstate_lmdb_log_append_batch(fx.lg, items, 3, out, &err) == OPSTATE_OK);
    CHECK_EQ_U64(out[0].seq, 1);
    CHECK_EQ_U64(out[1].seq, 2);
    CHECK(out[2].duplicate && out[2].seq == 1);
    /* a conflict at item 1 refuses items 0 and 1 alike */
    memset(items, 0, sizeof items);
    items[0].subject = str("ops.s.k.w");
    items[0].data = str("4");
    items[1].subject = str("ops.s.k.x");
    items[1].data = str("5");
    items[1].opts.expect_last_subject_seq = true;
    items[1].opts.last_subject_seq = 7; /* it is 1 */
    CHECK(opstate_lmdb_log_append_batch(fx.lg, items, 2, out, &err) == OPSTATE_CONFLICT);
    CHECK_EQ_U64(err.offset, 1);
    CHECK(fx.log.info(fx.log.user, &info, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(info.last_seq, 2);
    CHECK_EQ_U64(info.messages, 2);
    /* an invalid subject is refused before anything is written */
    items[1].subject = str("");
    CHECK(opstate_lmdb_log_append_batch(fx.lg, items, 2, out, &err) == OPSTATE_INVALID_ARGUMENT);
    CHECK_EQ_U64(err.offset, 1);
    lfx_close(&fx);
}
