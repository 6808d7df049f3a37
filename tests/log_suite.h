/* log_suite.h — the log-contract suite: the rules of the opstate_log
   interface (opstate.h >>log), written once against a small backend
   abstraction so the same tests run over every log: the memory log
   (test_log_mem.c), the LMDB log (test_lmdb_log_suite.c) and a JetStream
   stream on a real nats-server (test_nats_log_suite.c).

   The contract is JetStream's (the memory and LMDB logs claim its
   semantics); where a log differs, the test fails and says where.

   A backend's test file:

       #include "log_suite.h"
       static const log_backend *my_backend(void) { ... }
       LOG_SUITE(mine, my_backend)          -> tests "log_mine.<name>"

   Everything here is static (and marked unused), so several test files of
   one program may each include the header and instantiate the suite.
   Needs POSIX clock_gettime and nanosleep (a waiting read is timed on the
   wall clock): a file built without -D_POSIX_C_SOURCE defines it first.

   TIME. Each backend moves the log's time forward on request: the memory
   and LMDB logs get a fake publish clock (log_fake_clock below) that the
   test advances; JetStream really sleeps. Windows and ages are about a
   second so a JetStream test sleeps at most ~1.5 s.

   Every read a test makes goes through log_read_all, which checks each
   message: sequences go up and start at or after from_seq, the subject
   matches the filter, subject and data are what was appended at that
   sequence, the epoch is the stream's, publish times do not go back, no
   read returns more than `max`, and `contiguous` is set (no retained
   in-filter message was skipped: every log vouches for an ordinary read).

   THE TESTS (suite "log_<backend>")
     sequences_and_info        an empty log reports 0/0 and no messages;
                               sequences start at 1 and go up by one; info's
                               first/last sequence and time, message count
                               and epoch agree with what reads return
     retention_max_messages    the oldest go; first_seq advances; a read
                               from an evicted sequence starts at the first
                               retained one
     retention_max_age         messages older than max_age go without an
                               append (as JetStream expires them on its own
                               clock); first_seq and first_time advance
     retention_max_per_subject a subject's oldest go (holes inside the
                               stream); first_seq advances
     duplicate_window          an id seen within the window (a TIME) is a
                               duplicate, on any subject: the original's
                               sequence, nothing appended; once the window
                               has passed it is appended again
     duplicate_outlives_eviction
                               an id whose message retention evicted is
                               still a duplicate within the window
     expected_last_subject_seq a mismatch is CONFLICT and appends nothing;
                               0 means "the subject has no message" (other
                               subjects may have some); without the flag
                               nothing is checked
     recreate                  empty, sequences restart at 1, another
                               epoch, ids of the old stream forgotten
     purge                     below a sequence, then everything: first_seq
                               past last_seq, reads empty, last value per
                               subject empty, a purged subject has no
                               message, the next sequence goes on
     last_per_subject_filters  the last message of every matching subject,
                               filters with '*' and '>'
     read_filters_and_batches  reads from a sequence with a filter, batch
                               limits (max), a start past the end
     waiting_reads             wait_ns on an empty tail: OK, 0 messages,
                               after about wait_ns (at once on a log no
                               other writer can reach: the memory log); a
                               message already there returns at once */
#ifndef LOG_SUITE_H
#define LOG_SUITE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <stdbool.h>
#include <time.h>

#include "../opstate.h"
#include "test_bytes.h"
#include "runner.h"

#if defined(__GNUC__) || defined(__clang__)
#define LOG_STATIC static __attribute__((unused))
#else
#define LOG_STATIC static
#endif

/* ---- the backend abstraction ------------------------------------------ */

/* How a test wants its log; 0 everywhere: no limits, the default window. */
typedef struct log_options {
    uint64_t max_messages;
    int64_t max_age_ns;
    uint64_t max_per_subject;
    int64_t duplicate_window_ns; /* a time, as on JetStream (0: the default) */
} log_options;

typedef struct log_backend {
    const char *name;
    /* A fresh, empty log (stream) with subjects under "lg."; NULL on
       failure. */
    void *(*create)(const log_options *opts);
    /* The log of env; valid until destroy. */
    opstate_log (*log)(void *env);
    /* Removes every message below below_seq, as retention does. */
    opstate_result (*purge)(void *env, uint64_t below_seq);
    /* Deletes and recreates the stream with the same options: empty,
       sequences restart at 1, another epoch. */
    opstate_result (*recreate)(void *env);
    /* Moves the log's time forward by ns (a fake clock, or a real sleep). */
    void (*advance)(void *env, int64_t ns);
    /* A read with wait_ns waits for another writer (false: no other writer
       can reach the log during a read, so it returns at once: the memory
       log). */
    bool waits;
    void (*destroy)(void *env);
} log_backend;

/* ---- time ------------------------------------------------------------- */

#define LOG_TICK_NS INT64_C(50000000)     /* 50 ms: time between two appends */
#define LOG_AGE_NS INT64_C(1000000000)    /* max_age_ns of the age test */
#define LOG_WINDOW_NS INT64_C(1000000000) /* the duplicate window of the window test */
#define LOG_WAIT_NS INT64_C(300000000)    /* wait_ns of a waiting read on an empty tail */

/* A publish clock the test moves: each reading steps it 1 us (time goes
   on, as a real clock does); advance adds to `now`. */
typedef struct log_fake_clock {
    int64_t now;
} log_fake_clock;

LOG_STATIC int64_t log_fake_clock_read(void *user)
{
    log_fake_clock *c = (log_fake_clock *)user;
    int64_t t = c->now;
    c->now += 1000;
    return t;
}

#define LOG_FAKE_CLOCK_START INT64_C(1700000000000000000)

LOG_STATIC int64_t log_wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

LOG_STATIC void log_sleep_ns(int64_t ns)
{
    struct timespec ts;
    ts.tv_sec = (time_t)(ns / 1000000000);
    ts.tv_nsec = (long)(ns % 1000000000);
    while (nanosleep(&ts, &ts) != 0) {
    }
}

/* ---- the test context ------------------------------------------------- */

#define LOG_MAX_SEQ 64 /* no test appends more */
#define LOG_BATCH 64   /* largest read batch */
#define LOG_TEXT 32    /* longest subject or data a test uses, plus one */

typedef struct log_ctx {
    const log_backend *b;
    void *env;
    opstate_log log;
    /* what each sequence was appended with (index = sequence) */
    char subjects[LOG_MAX_SEQ + 1][LOG_TEXT];
    char data[LOG_MAX_SEQ + 1][LOG_TEXT];
} log_ctx;

/* One message as a read or last_per_subject delivered it (copied: the
   log's pointers die at its next call). */
typedef struct log_got_msg {
    uint64_t seq, epoch;
    int64_t time;
    char subject[LOG_TEXT], data[LOG_TEXT];
} log_got_msg;

typedef struct log_got {
    log_got_msg m[LOG_MAX_SEQ];
    size_t n;
    unsigned reads; /* reads that returned messages */
    bool overflow;
} log_got;

LOG_STATIC log_options log_opts(uint64_t max_messages, int64_t max_age_ns, uint64_t max_per_subject,
                                int64_t duplicate_window_ns)
{
    log_options o;
    o.max_messages = max_messages;
    o.max_age_ns = max_age_ns;
    o.max_per_subject = max_per_subject;
    o.duplicate_window_ns = duplicate_window_ns;
    return o;
}

LOG_STATIC log_ctx *log_setup(const log_backend *b, log_options o)
{
    log_ctx *x;
    if (!b) {
        runner_fail(__FILE__, __LINE__, "backend unavailable");
        return NULL;
    }
    if (!(x = (log_ctx *)calloc(1, sizeof *x))) return NULL;
    x->b = b;
    if (!(x->env = b->create(&o))) {
        runner_fail(__FILE__, __LINE__, "backend create");
        free(x);
        return NULL;
    }
    x->log = b->log(x->env);
    return x;
}

LOG_STATIC void log_teardown(log_ctx *x)
{
    if (!x) return;
    x->b->destroy(x->env);
    free(x);
}

/* b as a C string in out (cut to LOG_TEXT - 1 bytes). */
LOG_STATIC void log_text(opstate_bytes b, char out[LOG_TEXT])
{
    size_t n = b.len < LOG_TEXT - 1 ? b.len : LOG_TEXT - 1;
    if (n) memcpy(out, b.ptr, n);
    out[n] = '\0';
}

LOG_STATIC opstate_id log_id(uint8_t n)
{
    opstate_id id;
    memset(&id, 0, sizeof id);
    id.bytes[0] = 0x4c;
    id.bytes[1] = n;
    id.bytes[6] = 0x70; /* version 7 */
    id.bytes[8] = 0x80;
    id.bytes[15] = (uint8_t)(n * 7u + 1u);
    return id;
}

LOG_STATIC opstate_stream_info log_info(log_ctx *x)
{
    opstate_stream_info si;
    memset(&si, 0, sizeof si);
    CHECK(x->log.info(x->log.user, &si, NULL) == OPSTATE_OK);
    return si;
}

/* ---- appends ------------------------------------------------------------ */

/* One append; remembers what a new sequence holds. *ar is zeroed first. */
LOG_STATIC opstate_result log_append(log_ctx *x, const char *subject, const char *data, const opstate_append_options *o,
                                     opstate_append_result *ar)
{
    opstate_result r;
    memset(ar, 0, sizeof *ar);
    r = x->log.append(x->log.user, str(subject), str(data), o, ar, NULL);
    if (r == OPSTATE_OK && !ar->duplicate && ar->seq >= 1 && ar->seq <= LOG_MAX_SEQ) {
        snprintf(x->subjects[ar->seq], LOG_TEXT, "%s", subject);
        snprintf(x->data[ar->seq], LOG_TEXT, "%s", data);
    }
    return r;
}

/* A plain append (data "m<want_seq>") that must land at want_seq. */
LOG_STATIC void log_put(log_ctx *x, const char *subject, uint64_t want_seq)
{
    opstate_append_options o;
    opstate_append_result ar;
    char data[LOG_TEXT];
    memset(&o, 0, sizeof o);
    snprintf(data, sizeof data, "m%lu", (unsigned long)want_seq);
    CHECK(log_append(x, subject, data, &o, &ar) == OPSTATE_OK);
    CHECK(!ar.duplicate);
    CHECK_EQ_U64(ar.seq, want_seq);
}

/* An append with message id log_id(id); the result must be OK. */
LOG_STATIC opstate_append_result log_put_id(log_ctx *x, const char *subject, const char *data, uint8_t id)
{
    opstate_append_options o;
    opstate_append_result ar;
    opstate_id mid = log_id(id);
    memset(&o, 0, sizeof o);
    o.msg_id = &mid;
    CHECK(log_append(x, subject, data, &o, &ar) == OPSTATE_OK);
    return ar;
}

/* An append expecting the subject's last sequence to be `last`; returns
   the result, *seq the sequence (0 when refused). */
LOG_STATIC opstate_result log_put_expect(log_ctx *x, const char *subject, uint64_t last, uint64_t *seq)
{
    opstate_append_options o;
    opstate_append_result ar;
    opstate_result r;
    memset(&o, 0, sizeof o);
    o.expect_last_subject_seq = true;
    o.last_subject_seq = last;
    r = log_append(x, subject, "expect", &o, &ar);
    CHECK(!ar.duplicate);
    *seq = r == OPSTATE_OK ? ar.seq : 0;
    return r;
}

/* The eight messages the filter tests read:
   1 lg.a.x  2 lg.b.x  3 lg.a.y  4 lg.a.x  5 lg.b.y  6 lg.a.y.z  7 lg.a.x  8 lg.b.x */
LOG_STATIC void log_put_eight(log_ctx *x)
{
    static const char *const subjects[8] = {"lg.a.x", "lg.b.x", "lg.a.y", "lg.a.x",
                                            "lg.b.y", "lg.a.y.z", "lg.a.x", "lg.b.x"};
    uint64_t i;
    for (i = 0; i < 8; i++) log_put(x, subjects[i], i + 1);
}

/* ---- reads -------------------------------------------------------------- */

LOG_STATIC void log_copy(const opstate_log_message *m, log_got_msg *g)
{
    g->seq = m->position.seq;
    g->epoch = m->position.epoch;
    g->time = m->position.time;
    log_text(m->subject, g->subject);
    log_text(m->data, g->data);
}

/* Checks one message of a read (see the top of the file) and keeps it. */
LOG_STATIC void log_take(log_ctx *x, const opstate_stream_info *si, const char *filter, uint64_t from,
                         const opstate_log_message *m, log_got *got)
{
    const log_got_msg *prev = got->n ? &got->m[got->n - 1] : NULL;
    log_got_msg *g;
    if (got->n == LOG_MAX_SEQ) {
        got->overflow = true;
        runner_fail(__FILE__, __LINE__, "more messages than any test appends");
        return;
    }
    g = &got->m[got->n++];
    log_copy(m, g);
    CHECK(g->seq >= from);
    CHECK(!prev || g->seq > prev->seq);
    CHECK(!prev || g->time >= prev->time);
    CHECK(m->contiguous);
    CHECK_EQ_U64(g->epoch, si->epoch);
    CHECK(!*filter || opstate_subject_matches(str(filter), m->subject));
    if (g->seq >= 1 && g->seq <= LOG_MAX_SEQ) {
        CHECK_STR(g->subject, x->subjects[g->seq]);
        CHECK_STR(g->data, x->data[g->seq]);
    }
}

/* Reads everything from `from` on that matches filter ("" : all), at most
   `max` per read, until a read (wait 0) returns nothing. Returns the count. */
LOG_STATIC size_t log_read_all(log_ctx *x, const char *filter, uint64_t from, size_t max, log_got *got)
{
    opstate_log_message msgs[LOG_BATCH];
    opstate_stream_info si = log_info(x);
    uint64_t next = from;
    unsigned guard;
    memset(got, 0, sizeof *got);
    if (max > LOG_BATCH) max = LOG_BATCH;
    for (guard = 0; guard < 2 * LOG_MAX_SEQ && !got->overflow; guard++) {
        size_t n = (size_t)-1, i;
        opstate_result r = x->log.read(x->log.user, str(filter), next, 0, msgs, max, &n, NULL);
        CHECK(r == OPSTATE_OK);
        CHECK(n <= max);
        if (r != OPSTATE_OK || n == 0 || n > max) break;
        got->reads++;
        for (i = 0; i < n; i++) log_take(x, &si, filter, next, &msgs[i], got);
        next = msgs[n - 1].position.seq + 1;
    }
    return got->n;
}

/* The first sequence a read from `from` returns (0: none). */
LOG_STATIC uint64_t log_first_from(log_ctx *x, uint64_t from)
{
    log_got got;
    return log_read_all(x, "", from, LOG_BATCH, &got) ? got.m[0].seq : 0;
}

/* got's sequences (sorted first) are exactly want[0..n). */
LOG_STATIC void log_check_seqs(log_got *got, const uint64_t *want, size_t n)
{
    size_t i, j;
    for (i = 1; i < got->n; i++) /* insertion sort: last_per_subject has no order */
        for (j = i; j > 0 && got->m[j - 1].seq > got->m[j].seq; j--) {
            log_got_msg t = got->m[j];
            got->m[j] = got->m[j - 1];
            got->m[j - 1] = t;
        }
    CHECK_EQ_U64(got->n, n);
    for (i = 0; i < got->n && i < n; i++) CHECK_EQ_U64(got->m[i].seq, want[i]);
}

/* info says first..last with `messages` messages, and a read of everything
   agrees (first and last sequence and time, count). Returns the info. */
LOG_STATIC opstate_stream_info log_check_agree(log_ctx *x, uint64_t first, uint64_t last, uint64_t messages)
{
    opstate_stream_info si = log_info(x);
    log_got got;
    CHECK_EQ_U64(si.first_seq, first);
    CHECK_EQ_U64(si.last_seq, last);
    CHECK_EQ_U64(si.messages, messages);
    CHECK_EQ_U64(log_read_all(x, "", 1, LOG_BATCH, &got), messages);
    if (got.n && si.messages) {
        CHECK_EQ_U64(got.m[0].seq, si.first_seq);
        CHECK_EQ_U64(got.m[got.n - 1].seq, si.last_seq);
        CHECK(si.first_time == got.m[0].time);
        CHECK(si.last_time == got.m[got.n - 1].time);
    }
    return si;
}

LOG_STATIC void log_visit(void *user, const opstate_log_message *m)
{
    log_got *got = (log_got *)user;
    if (got->n == LOG_MAX_SEQ) {
        got->overflow = true;
        return;
    }
    log_copy(m, &got->m[got->n++]);
}

/* The last message of every subject matching filter, each checked against
   what was appended at its sequence. Returns the count. */
LOG_STATIC size_t log_last_per_subject(log_ctx *x, const char *filter, log_got *got)
{
    size_t i;
    memset(got, 0, sizeof *got);
    CHECK(x->log.last_per_subject(x->log.user, str(filter), log_visit, got, NULL) == OPSTATE_OK);
    CHECK(!got->overflow);
    for (i = 0; i < got->n; i++) {
        const log_got_msg *g = &got->m[i];
        CHECK(!*filter || opstate_subject_matches(str(filter), str(g->subject)));
        if (g->seq >= 1 && g->seq <= LOG_MAX_SEQ) {
            CHECK_STR(g->subject, x->subjects[g->seq]);
            CHECK_STR(g->data, x->data[g->seq]);
        }
    }
    return got->n;
}

/* ---- the tests ---------------------------------------------------------- */

LOG_STATIC void log_test_sequences_and_info(const log_backend *b)
{
    log_ctx *x = log_setup(b, log_opts(0, 0, 0, 0));
    opstate_stream_info empty, three, four;
    log_got got;
    REQUIRE(x);
    CASE("never written");
    empty = log_info(x);
    CHECK_EQ_U64(empty.first_seq, 0);
    CHECK_EQ_U64(empty.last_seq, 0);
    CHECK_EQ_U64(empty.messages, 0);
    CHECK(empty.epoch != 0);
    CHECK_EQ_U64(log_read_all(x, "", 1, LOG_BATCH, &got), 0);
    CASE("three appends");
    log_put(x, "lg.a.x", 1);
    log_put(x, "lg.b.x", 2);
    log_put(x, "lg.a.y", 3);
    three = log_check_agree(x, 1, 3, 3);
    CHECK_EQ_U64(three.epoch, empty.epoch);
    CHECK(three.first_time <= three.last_time);
    CASE("a later append");
    x->b->advance(x->env, LOG_TICK_NS);
    log_put(x, "lg.a.x", 4);
    four = log_check_agree(x, 1, 4, 4);
    CHECK_EQ_U64(four.epoch, empty.epoch);
    CHECK(four.first_time == three.first_time);
    CHECK(four.last_time >= three.last_time + LOG_TICK_NS);
    log_teardown(x);
}

LOG_STATIC void log_test_retention_max_messages(const log_backend *b)
{
    log_ctx *x = log_setup(b, log_opts(3, 0, 0, 0));
    uint64_t s;
    REQUIRE(x);
    for (s = 1; s <= 5; s++) log_put(x, s % 2 ? "lg.a.x" : "lg.a.y", s);
    CASE("five appends, three kept");
    log_check_agree(x, 3, 5, 3);
    CHECK_EQ_U64(log_first_from(x, 1), 3);
    CHECK_EQ_U64(log_first_from(x, 2), 3);
    CHECK_EQ_U64(log_first_from(x, 4), 4);
    CASE("one more");
    log_put(x, "lg.b.x", 6);
    log_check_agree(x, 4, 6, 3);
    CHECK_EQ_U64(log_first_from(x, 3), 4);
    log_teardown(x);
}

/* Two messages, then two more half an age later; another 3/4 age later
   (no append in between) the first two are past max_age, the last two not. */
LOG_STATIC void log_test_retention_max_age(const log_backend *b)
{
    log_ctx *x = log_setup(b, log_opts(0, LOG_AGE_NS, 0, 0));
    REQUIRE(x);
    log_put(x, "lg.a.x", 1);
    log_put(x, "lg.a.y", 2);
    x->b->advance(x->env, LOG_AGE_NS / 2);
    log_put(x, "lg.a.x", 3);
    log_put(x, "lg.b.x", 4);
    CASE("none old yet");
    log_check_agree(x, 1, 4, 4);
    x->b->advance(x->env, LOG_AGE_NS * 3 / 4);
    CASE("two aged out, no append since: a read before any info");
    {
        opstate_log_message m;
        size_t n = 0;
        CHECK(x->log.read(x->log.user, str(""), 1, 0, &m, 1, &n, NULL) == OPSTATE_OK);
        CHECK(n == 1 && m.position.seq == 3);
    }
    CASE("two aged out, no append since");
    log_check_agree(x, 3, 4, 2);
    CHECK_EQ_U64(log_first_from(x, 1), 3);
    CHECK_EQ_U64(log_first_from(x, 2), 3);
    CASE("one more");
    log_put(x, "lg.b.y", 5);
    log_check_agree(x, 3, 5, 3);
    x->b->advance(x->env, LOG_AGE_NS * 3 / 4);
    CASE("two more aged out: info before any read");
    {
        opstate_stream_info si = log_info(x);
        CHECK_EQ_U64(si.first_seq, 5);
        CHECK_EQ_U64(si.messages, 1);
    }
    log_teardown(x);
}

LOG_STATIC void log_test_retention_max_per_subject(const log_backend *b)
{
    static const uint64_t kept[3] = {2, 4, 5};
    log_ctx *x = log_setup(b, log_opts(0, 0, 2, 0));
    log_got got;
    REQUIRE(x);
    log_put(x, "lg.a.x", 1);
    log_put(x, "lg.b.x", 2);
    log_put(x, "lg.a.x", 3);
    log_put(x, "lg.a.x", 4);
    CASE("a third on lg.a.x");
    log_check_agree(x, 2, 4, 3);
    CHECK_EQ_U64(log_first_from(x, 1), 2);
    CASE("a hole inside");
    log_put(x, "lg.a.x", 5);
    log_check_agree(x, 2, 5, 3);
    log_read_all(x, "", 1, LOG_BATCH, &got);
    log_check_seqs(&got, kept, 3);
    CASE("lg.b.x overflows too");
    log_put(x, "lg.b.x", 6);
    log_put(x, "lg.b.x", 7);
    log_check_agree(x, 4, 7, 4);
    CHECK_EQ_U64(log_first_from(x, 1), 4);
    CHECK_EQ_U64(log_first_from(x, 3), 4);
    log_teardown(x);
}

/* The id is appended at time 0, repeated at half the window (another
   subject: a duplicate all the same) and at one and a half windows (past
   it: appended again). */
LOG_STATIC void log_test_duplicate_window(const log_backend *b)
{
    log_ctx *x = log_setup(b, log_opts(0, 0, 0, LOG_WINDOW_NS));
    opstate_append_result ar;
    log_got got;
    REQUIRE(x);
    CASE("first");
    ar = log_put_id(x, "lg.a.x", "one", 1);
    CHECK(!ar.duplicate && ar.seq == 1);
    ar = log_put_id(x, "lg.a.y", "two", 2);
    CHECK(!ar.duplicate && ar.seq == 2);
    CASE("within the window");
    x->b->advance(x->env, LOG_WINDOW_NS / 2);
    ar = log_put_id(x, "lg.b.x", "again", 1);
    CHECK(ar.duplicate);
    CHECK_EQ_U64(ar.seq, 1);
    log_check_agree(x, 1, 2, 2);
    CASE("after the window");
    x->b->advance(x->env, LOG_WINDOW_NS);
    ar = log_put_id(x, "lg.a.x", "three", 1);
    CHECK(!ar.duplicate);
    CHECK_EQ_U64(ar.seq, 3);
    CASE("the new copy is the original now");
    ar = log_put_id(x, "lg.a.x", "four", 1);
    CHECK(ar.duplicate);
    CHECK_EQ_U64(ar.seq, 3);
    log_check_agree(x, 1, 3, 3);
    log_read_all(x, "", 3, LOG_BATCH, &got);
    CHECK(got.n == 1 && strcmp(got.m[0].data, "three") == 0);
    log_teardown(x);
}

LOG_STATIC void log_test_duplicate_outlives_eviction(const log_backend *b)
{
    log_ctx *x = log_setup(b, log_opts(1, 0, 0, 0));
    opstate_append_result ar;
    REQUIRE(x);
    ar = log_put_id(x, "lg.a.x", "one", 1);
    CHECK(!ar.duplicate && ar.seq == 1);
    ar = log_put_id(x, "lg.a.x", "two", 2);
    CHECK(!ar.duplicate && ar.seq == 2);
    log_check_agree(x, 2, 2, 1);
    CASE("the evicted message's id");
    ar = log_put_id(x, "lg.a.x", "again", 1);
    CHECK(ar.duplicate);
    CHECK_EQ_U64(ar.seq, 1);
    log_check_agree(x, 2, 2, 1);
    log_teardown(x);
}

/* One expected-last-subject-sequence append: `want` its result, and on OK
   the sequence it must get (refused: the log is unchanged). */
LOG_STATIC void log_expect_row(log_ctx *x, const char *subject, uint64_t last, opstate_result want, uint64_t want_seq)
{
    opstate_stream_info before = log_info(x), after;
    uint64_t seq = 0;
    opstate_result r = log_put_expect(x, subject, last, &seq);
    CHECK_EQ_U64(r, want);
    after = log_info(x);
    if (want == OPSTATE_OK) CHECK_EQ_U64(seq, want_seq);
    else CHECK(after.last_seq == before.last_seq && after.messages == before.messages);
}

LOG_STATIC void log_test_expected_last_subject_seq(const log_backend *b)
{
    log_ctx *x = log_setup(b, log_opts(0, 0, 0, 0));
    opstate_append_options none;
    opstate_append_result ar;
    REQUIRE(x);
    CASE("0 on a new subject");
    log_expect_row(x, "lg.a.x", 0, OPSTATE_OK, 1);
    CASE("0 on a subject with a message");
    log_expect_row(x, "lg.a.x", 0, OPSTATE_CONFLICT, 0);
    CASE("0 on another new subject of a non-empty stream");
    log_expect_row(x, "lg.b.x", 0, OPSTATE_OK, 2);
    CASE("the right last sequence");
    log_expect_row(x, "lg.a.x", 1, OPSTATE_OK, 3);
    CASE("a stale one");
    log_expect_row(x, "lg.a.x", 1, OPSTATE_CONFLICT, 0);
    CASE("another subject's last sequence");
    log_expect_row(x, "lg.a.x", 2, OPSTATE_CONFLICT, 0);
    CASE("a future one");
    log_expect_row(x, "lg.a.x", 9, OPSTATE_CONFLICT, 0);
    CASE("the other subject, right");
    log_expect_row(x, "lg.b.x", 2, OPSTATE_OK, 4);
    CASE("no flag: no check");
    memset(&none, 0, sizeof none);
    none.last_subject_seq = 99;
    CHECK(log_append(x, "lg.a.x", "free", &none, &ar) == OPSTATE_OK);
    CHECK(!ar.duplicate && ar.seq == 5);
    log_check_agree(x, 1, 5, 5);
    log_teardown(x);
}

LOG_STATIC void log_test_recreate(const log_backend *b)
{
    log_ctx *x = log_setup(b, log_opts(0, 0, 0, 0));
    opstate_stream_info old, fresh, after;
    opstate_append_result ar;
    log_got got;
    REQUIRE(x);
    ar = log_put_id(x, "lg.a.x", "old", 1);
    CHECK(!ar.duplicate && ar.seq == 1);
    log_put(x, "lg.a.y", 2);
    log_put(x, "lg.b.x", 3);
    old = log_check_agree(x, 1, 3, 3);
    CASE("recreated");
    CHECK(x->b->recreate(x->env) == OPSTATE_OK);
    fresh = log_info(x);
    CHECK_EQ_U64(fresh.first_seq, 0);
    CHECK_EQ_U64(fresh.last_seq, 0);
    CHECK_EQ_U64(fresh.messages, 0);
    CHECK(fresh.epoch != 0 && fresh.epoch != old.epoch);
    CHECK_EQ_U64(log_read_all(x, "", 1, LOG_BATCH, &got), 0);
    CHECK_EQ_U64(log_last_per_subject(x, "", &got), 0);
    CASE("the old stream's id is new here");
    ar = log_put_id(x, "lg.a.x", "new", 1);
    CHECK(!ar.duplicate);
    CHECK_EQ_U64(ar.seq, 1);
    log_put(x, "lg.a.x", 2);
    after = log_check_agree(x, 1, 2, 2);
    CHECK_EQ_U64(after.epoch, fresh.epoch);
    log_teardown(x);
}

LOG_STATIC void log_test_purge(const log_backend *b)
{
    static const uint64_t last_two[2] = {4, 5};
    log_ctx *x = log_setup(b, log_opts(0, 0, 0, 0));
    opstate_stream_info si;
    log_got got;
    uint64_t s;
    REQUIRE(x);
    for (s = 1; s <= 5; s++) log_put(x, s % 2 ? "lg.a.x" : "lg.b.x", s);
    CASE("below 3");
    CHECK(x->b->purge(x->env, 3) == OPSTATE_OK);
    log_check_agree(x, 3, 5, 3);
    CHECK_EQ_U64(log_first_from(x, 1), 3);
    log_last_per_subject(x, "", &got);
    log_check_seqs(&got, last_two, 2);
    CASE("everything");
    CHECK(x->b->purge(x->env, 6) == OPSTATE_OK);
    si = log_info(x);
    CHECK_EQ_U64(si.first_seq, 6);
    CHECK_EQ_U64(si.last_seq, 5);
    CHECK_EQ_U64(si.messages, 0);
    CHECK_EQ_U64(log_read_all(x, "", 1, LOG_BATCH, &got), 0);
    CHECK_EQ_U64(log_last_per_subject(x, "", &got), 0);
    CASE("a purged subject has no message; sequences go on");
    log_expect_row(x, "lg.a.x", 0, OPSTATE_OK, 6);
    log_check_agree(x, 6, 6, 1);
    log_teardown(x);
}

/* A filter and the sequences of log_put_eight it selects. */
typedef struct log_filter_row {
    const char *filter;
    uint64_t from;
    size_t max, n;
    uint64_t want[8];
} log_filter_row;

LOG_STATIC void log_test_last_per_subject_filters(const log_backend *b)
{
    static const log_filter_row rows[] = {
        {"", 0, 0, 5, {3, 5, 6, 7, 8}},   {"lg.>", 0, 0, 5, {3, 5, 6, 7, 8}}, {"lg.a.*", 0, 0, 2, {3, 7}},
        {"lg.a.>", 0, 0, 3, {3, 6, 7}},   {"lg.*.x", 0, 0, 2, {7, 8}},        {"lg.b.x", 0, 0, 1, {8}},
        {"lg.*.y.>", 0, 0, 1, {6}},       {"lg.c.>", 0, 0, 0, {0}},           {"lg.*", 0, 0, 0, {0}},
    };
    log_ctx *x = log_setup(b, log_opts(0, 0, 0, 0));
    log_got got;
    size_t i;
    REQUIRE(x);
    log_put_eight(x);
    for (i = 0; i < COUNT_OF(rows); i++) {
        CASE(rows[i].filter[0] ? rows[i].filter : "(all)");
        log_last_per_subject(x, rows[i].filter, &got);
        log_check_seqs(&got, rows[i].want, rows[i].n);
    }
    log_teardown(x);
}

LOG_STATIC void log_test_read_filters_and_batches(const log_backend *b)
{
    static const log_filter_row rows[] = {
        {"", 1, 64, 8, {1, 2, 3, 4, 5, 6, 7, 8}},  {"", 1, 2, 8, {1, 2, 3, 4, 5, 6, 7, 8}},
        {"", 1, 1, 8, {1, 2, 3, 4, 5, 6, 7, 8}},   {"", 5, 3, 4, {5, 6, 7, 8}},
        {"lg.a.>", 1, 64, 5, {1, 3, 4, 6, 7}},     {"lg.a.>", 2, 2, 4, {3, 4, 6, 7}},
        {"lg.a.*", 1, 64, 4, {1, 3, 4, 7}},        {"lg.*.x", 3, 64, 3, {4, 7, 8}},
        {"lg.b.y", 1, 64, 1, {5}},                 {"lg.a.x", 5, 1, 1, {7}},
        {"lg.>", 8, 64, 1, {8}},                   {"lg.c.>", 1, 64, 0, {0}},
        {"", 9, 64, 0, {0}},
    };
    static char label[64];
    log_ctx *x = log_setup(b, log_opts(0, 0, 0, 0));
    log_got got;
    size_t i;
    REQUIRE(x);
    log_put_eight(x);
    for (i = 0; i < COUNT_OF(rows); i++) {
        const log_filter_row *r = &rows[i];
        snprintf(label, sizeof label, "filter \"%s\" from %lu max %lu", r->filter, (unsigned long)r->from,
                 (unsigned long)r->max);
        CASE(label);
        log_read_all(x, r->filter, r->from, r->max, &got);
        log_check_seqs(&got, r->want, r->n);
    }
    log_teardown(x);
}

/* One read with wait_ns; *elapsed the wall time it took. */
LOG_STATIC size_t log_timed_read(log_ctx *x, const char *filter, uint64_t from, int64_t wait_ns, int64_t *elapsed)
{
    opstate_log_message msgs[8];
    size_t n = (size_t)-1;
    int64_t t0 = log_wall_ns();
    CHECK(x->log.read(x->log.user, str(filter), from, wait_ns, msgs, 8, &n, NULL) == OPSTATE_OK);
    *elapsed = log_wall_ns() - t0;
    CHECK(n <= 8);
    if (n >= 1 && n <= 8) CHECK_EQ_U64(msgs[0].position.seq, from);
    return n;
}

LOG_STATIC void log_test_waiting_reads(const log_backend *b)
{
    log_ctx *x = log_setup(b, log_opts(0, 0, 0, 0));
    int64_t took = 0;
    REQUIRE(x);
    log_put(x, "lg.a.x", 1);
    CASE("empty tail");
    CHECK_EQ_U64(log_timed_read(x, "", 2, LOG_WAIT_NS, &took), 0);
    CHECK(b->waits ? took >= LOG_WAIT_NS / 2 : took < LOG_WAIT_NS / 2); /* it waited, or had no one to wait for */
    CHECK(took <= LOG_WAIT_NS + INT64_C(1000000000)); /* and no longer than asked (loosely) */
    CASE("nothing in the filter");
    CHECK_EQ_U64(log_timed_read(x, "lg.b.>", 1, LOG_WAIT_NS, &took), 0);
    CHECK(b->waits ? took >= LOG_WAIT_NS / 2 : took < LOG_WAIT_NS / 2);
    CHECK(took <= LOG_WAIT_NS + INT64_C(1000000000));
    CASE("a message is there");
    CHECK_EQ_U64(log_timed_read(x, "", 1, 4 * LOG_WAIT_NS, &took), 1);
    CHECK(took < 2 * LOG_WAIT_NS); /* did not wait out 4 * LOG_WAIT_NS */
    log_teardown(x);
}

/* ---- the suite ------------------------------------------------------------ */

#define LOG_SUITE(name, factory)                                                                               \
    TEST(log_##name, sequences_and_info) { log_test_sequences_and_info(factory()); }                            \
    TEST(log_##name, retention_max_messages) { log_test_retention_max_messages(factory()); }                    \
    TEST(log_##name, retention_max_age) { log_test_retention_max_age(factory()); }                              \
    TEST(log_##name, retention_max_per_subject) { log_test_retention_max_per_subject(factory()); }              \
    TEST(log_##name, duplicate_window) { log_test_duplicate_window(factory()); }                                \
    TEST(log_##name, duplicate_outlives_eviction) { log_test_duplicate_outlives_eviction(factory()); }          \
    TEST(log_##name, expected_last_subject_seq) { log_test_expected_last_subject_seq(factory()); }              \
    TEST(log_##name, recreate) { log_test_recreate(factory()); }                                                \
    TEST(log_##name, purge) { log_test_purge(factory()); }                                                      \
    TEST(log_##name, last_per_subject_filters) { log_test_last_per_subject_filters(factory()); }                \
    TEST(log_##name, read_filters_and_batches) { log_test_read_filters_and_batches(factory()); }                \
    TEST(log_##name, waiting_reads) { log_test_waiting_reads(factory()); }

#endif /* LOG_SUITE_H */
