/* test_decide.c — restore decision, resume-window check, live gap classifier
   and high-water mark (opstate.h sections >>decide, >>resume, >>hwm).

   1. decide.matrix: the DESIGN.md restore matrix and its fixed points as a
      data table, one row per matrix line.
   2. decide.exhaustive, resume.exhaustive, gap.exhaustive: every tuple of a
      small domain against an oracle written independently of the
      implementation (rules as separate predicates picked by a priority
      list; sequence counts computed by walking the sequences one by one).
   3. hwm.*: every ack order of up to 6 deliveries with gaps, duplicate and
      stray acks, window full, out of order, ring wrap-around, against a
      boolean-array oracle.
   4. strings and the timestamp fallback.

   A failing call must leave its output untouched: outputs are prefilled
   with a sentinel and compared byte for byte. */
#include <string.h>
#include <stdint.h>
#include <stdbool.h>

#include "../opstate.h"
#include "runner.h"

/* ---- labels for failures inside exhaustive loops ----------------------- */

static char lbl_buf[320];
static size_t lbl_len;

static void lbl_reset(void)
{
    lbl_len = 0;
    lbl_buf[0] = '\0';
}

static void lbl_str(const char *s)
{
    while (*s && lbl_len + 1 < sizeof lbl_buf) lbl_buf[lbl_len++] = *s++;
    lbl_buf[lbl_len] = '\0';
}

static void lbl_u64(uint64_t v)
{
    char t[21], *p = t + 20;
    *p = '\0';
    do { *--p = (char)('0' + (int)(v % 10u)); v /= 10u; } while (v);
    lbl_str(p);
}

static void lbl_i64(int64_t v)
{
    if (v < 0) {
        lbl_str("-");
        lbl_u64((uint64_t)0 - (uint64_t)v);
    } else {
        lbl_u64((uint64_t)v);
    }
}

static void lbl_kv(const char *k, uint64_t v)
{
    lbl_str(" ");
    lbl_str(k);
    lbl_str("=");
    lbl_u64(v);
}

static void lbl_kvi(const char *k, int64_t v)
{
    lbl_str(" ");
    lbl_str(k);
    lbl_str("=");
    lbl_i64(v);
}

/* Exhaustive loops report the first few mismatching tuples in full and
   then only count. */
static unsigned long mismatches;
#define REPORT_LIMIT 6ul

static const int64_t T0 = INT64_C(1700000000000000000); /* 2023-11-14, ns */
#define SEC INT64_C(1000000000)

/* ======================================================================
   >>decide : the matrix as a data table
   ====================================================================== */

typedef struct decide_row {
    const char *name;
    int mode;
    opstate_start start;
    int has_stored; /* 0: pass NULL */
    opstate_position stored;
    int has_stream; /* 0: pass NULL */
    opstate_stream_info stream;
    bool restore, resync;
    opstate_reason reason;
    uint64_t gap;
} decide_row;

#define M_AUTO OPSTATE_MODE_AUTO
#define M_CLEAR OPSTATE_MODE_CLEAR
#define M_KEEP OPSTATE_MODE_KEEP
#define S_RESUME { OPSTATE_START_RESUME, 0, 0 }
#define S_SEQ(n) { OPSTATE_START_FROM_SEQUENCE, (n), 0 }
#define S_TIME(t) { OPSTATE_START_FROM_TIME, 0, (t) }
#define S_LATEST { OPSTATE_START_LATEST, 0, 0 }
#define S_FIRST { OPSTATE_START_FIRST, 0, 0 }
#define STORED(s, t, e) 1, { (s), (t), (e) }
#define NO_STORED 0, { 0, 0, 0 }
#define STREAM(f, l, e) 1, { (f), (l), 0, 0, (e), 0 }
#define NO_STREAM 0, { 0, 0, 0, 0, 0, 0 }
#define R(x) OPSTATE_REASON_##x

static const decide_row decide_rows[] = {
    /* ---- the 13 matrix lines of DESIGN.md, in order ---- */
    { "matrix 1: resume, stored position exists -> restore",
      M_AUTO, S_RESUME, STORED(100, T0, 1), STREAM(1, 1000, 1), true, false, R(RESUME), 0 },
    { "matrix 2: from sequence N > stored.seq -> restore (forward catch-up)",
      M_AUTO, S_SEQ(101), STORED(100, T0, 1), STREAM(1, 1000, 1), true, false, R(FORWARD_SEQUENCE), 0 },
    { "matrix 3: from sequence N <= stored.seq -> clear (would double-count)",
      M_AUTO, S_SEQ(99), STORED(100, T0, 1), STREAM(1, 1000, 1), false, false, R(BACKWARD_SEQUENCE), 0 },
    { "matrix 4: from time T > stored.time -> restore",
      M_AUTO, S_TIME(T0 + SEC), STORED(100, T0, 1), STREAM(1, 1000, 1), true, false, R(FORWARD_TIME), 0 },
    { "matrix 5: from time T <= stored.time -> clear",
      M_AUTO, S_TIME(T0 - SEC), STORED(100, T0, 1), STREAM(1, 1000, 1), false, false, R(BACKWARD_TIME), 0 },
    { "matrix 6: latest, any -> clear",
      M_AUTO, S_LATEST, STORED(100, T0, 1), STREAM(1, 1000, 1), false, false, R(LATEST), 0 },
    { "matrix 7: any start, mode clear -> clear",
      M_CLEAR, S_SEQ(101), STORED(100, T0, 1), STREAM(1, 1000, 1), false, false, R(FORCED_CLEAR), 0 },
    { "matrix 8: any start, mode keep -> restore",
      M_KEEP, S_SEQ(50), STORED(100, T0, 1), STREAM(1, 1000, 1), true, false, R(FORCED_KEEP), 0 },
    { "matrix 9: any replay, no stored position -> clear (safe default)",
      M_AUTO, S_SEQ(5), NO_STORED, STREAM(1, 1000, 1), false, false, R(NO_POSITION), 0 },
    { "matrix 10: stored.epoch != stream.epoch -> clear, stream recreated",
      M_AUTO, S_RESUME, STORED(100, T0, 1), STREAM(1, 1000, 2), false, false, R(STREAM_RECREATED), 0 },
    { "matrix 11: resume, stored cursor expired -> restore + RESYNC",
      M_AUTO, S_RESUME, STORED(100, T0, 1), STREAM(150, 1000, 1), true, true, R(CURSOR_EXPIRED), 49 },
    { "matrix 12: from first, any -> clear (full rebuild)",
      M_AUTO, S_FIRST, STORED(100, T0, 1), STREAM(1, 1000, 1), false, false, R(FULL_REBUILD), 0 },
    { "matrix 13: from sequence N > stored.seq + 1 -> restore, report gap",
      M_AUTO, S_SEQ(150), STORED(100, T0, 1), STREAM(1, 1000, 1), true, false, R(FORWARD_SEQUENCE_GAP), 49 },

    /* ---- fixed points from the production daemon ---- */
    { "fixed: 101 vs 100 restores",
      M_AUTO, S_SEQ(101), STORED(100, T0, 1), NO_STREAM, true, false, R(FORWARD_SEQUENCE), 0 },
    { "fixed: 50 vs 100 clears",
      M_AUTO, S_SEQ(50), STORED(100, T0, 1), NO_STREAM, false, false, R(BACKWARD_SEQUENCE), 0 },
    { "fixed: equal sequence clears",
      M_AUTO, S_SEQ(100), STORED(100, T0, 1), STREAM(1, 1000, 1), false, false, R(BACKWARD_SEQUENCE), 0 },
    { "fixed: equal time clears",
      M_AUTO, S_TIME(T0), STORED(100, T0, 1), STREAM(1, 1000, 1), false, false, R(BACKWARD_TIME), 0 },
    { "fixed: no stored position (NULL) + resume restores",
      M_AUTO, S_RESUME, NO_STORED, STREAM(1, 1000, 1), true, false, R(NOTHING_STORED), 0 },
    { "fixed: no stored position (seq 0) + resume restores",
      M_AUTO, S_RESUME, STORED(0, T0, 1), STREAM(1, 1000, 1), true, false, R(NOTHING_STORED), 0 },
    { "fixed: keep with no stored position restores",
      M_KEEP, S_RESUME, NO_STORED, STREAM(1, 1000, 1), true, false, R(FORCED_KEEP), 0 },
    { "fixed: keep with stored seq 0 and a replay start restores",
      M_KEEP, S_SEQ(7), STORED(0, 0, 0), NO_STREAM, true, false, R(FORCED_KEEP), 0 },

    /* ---- times compare in nanoseconds, not seconds ---- */
    { "ns: T = stored.time + 1 ns restores",
      M_AUTO, S_TIME(T0 + 1), STORED(100, T0, 1), STREAM(1, 1000, 1), true, false, R(FORWARD_TIME), 0 },
    { "ns: T = stored.time - 1 ns clears",
      M_AUTO, S_TIME(T0 - 1), STORED(100, T0, 1), STREAM(1, 1000, 1), false, false, R(BACKWARD_TIME), 0 },
    { "ns: same second, T 1 ns later (mid-second) restores",
      M_AUTO, S_TIME(T0 + 500000001), STORED(100, T0 + 500000000, 1), NO_STREAM, true, false, R(FORWARD_TIME), 0 },
    { "ns: same second, T 1 ns earlier (mid-second) clears",
      M_AUTO, S_TIME(T0 + 499999999), STORED(100, T0 + 500000000, 1), NO_STREAM, false, false, R(BACKWARD_TIME), 0 },
    { "ns: T at the next second boundary vs stored x.999999999 restores",
      M_AUTO, S_TIME(T0 + SEC), STORED(100, T0 + SEC - 1, 1), NO_STREAM, true, false, R(FORWARD_TIME), 0 },
    { "ns: negative times (before 1970) compare as signed",
      M_AUTO, S_TIME(-4), STORED(100, -5, 1), NO_STREAM, true, false, R(FORWARD_TIME), 0 },
    { "ns: INT64_MIN start vs INT64_MAX stored clears",
      M_AUTO, S_TIME(INT64_MIN), STORED(100, INT64_MAX, 1), NO_STREAM, false, false, R(BACKWARD_TIME), 0 },
    { "ns: INT64_MAX start vs INT64_MIN stored restores",
      M_AUTO, S_TIME(INT64_MAX), STORED(100, INT64_MIN, 1), NO_STREAM, true, false, R(FORWARD_TIME), 0 },

    /* ---- precedence (order documented on opstate_decide_restore) ---- */
    { "order: mode clear wins over resume with nothing stored",
      M_CLEAR, S_RESUME, NO_STORED, NO_STREAM, false, false, R(FORCED_CLEAR), 0 },
    { "order: mode clear wins over an expired cursor",
      M_CLEAR, S_RESUME, STORED(100, T0, 1), STREAM(150, 1000, 1), false, false, R(FORCED_CLEAR), 0 },
    { "order: mode keep wins over a recreated stream",
      M_KEEP, S_LATEST, STORED(100, T0, 1), STREAM(1, 1000, 2), true, false, R(FORCED_KEEP), 0 },
    { "order: mode keep wins over a cursor past the end",
      M_KEEP, S_RESUME, STORED(100, T0, 1), STREAM(1, 50, 1), true, false, R(FORCED_KEEP), 0 },
    { "mode keep, resume, expired cursor: restore + RESYNC with the gap",
      M_KEEP, S_RESUME, STORED(100, T0, 1), STREAM(150, 1000, 1), true, true, R(FORCED_KEEP), 49 },
    { "mode keep, from sequence on an expired cursor: no resync",
      M_KEEP, S_SEQ(101), STORED(100, T0, 1), STREAM(150, 1000, 1), true, false, R(FORCED_KEEP), 0 },
    { "mode keep, resume, cursor not expired: no resync",
      M_KEEP, S_RESUME, STORED(100, T0, 1), STREAM(101, 1000, 1), true, false, R(FORCED_KEEP), 0 },
    { "mode keep, resume, no stored position, stream starts late: no resync",
      M_KEEP, S_RESUME, STORED(0, T0, 1), STREAM(150, 1000, 1), true, false, R(FORCED_KEEP), 0 },
    { "mode keep, resume, stream unknown: no resync",
      M_KEEP, S_RESUME, STORED(100, T0, 1), NO_STREAM, true, false, R(FORCED_KEEP), 0 },
    /* A recreated stream is RESET, not EXPIRED (opstate_resume_check): its
       first_seq says nothing about what was evicted after the old cursor. */
    { "mode keep, resume, recreated stream starting past the cursor: no resync",
      M_KEEP, S_RESUME, STORED(100, T0, 1), STREAM(150, 1000, 2), true, false, R(FORCED_KEEP), 0 },
    { "epoch 0 stored vs stream epoch 1 is a recreate",
      M_AUTO, S_RESUME, STORED(100, T0, 0), STREAM(1, 1000, 1), false, false, R(STREAM_RECREATED), 0 },
    { "epoch 1 stored vs stream epoch 0 is a recreate",
      M_AUTO, S_SEQ(101), STORED(100, T0, 1), STREAM(1, 1000, 0), false, false, R(STREAM_RECREATED), 0 },
    { "order: recreated stream wins over cursor past the end",
      M_AUTO, S_RESUME, STORED(100, T0, 1), STREAM(1, 50, 2), false, false, R(STREAM_RECREATED), 0 },
    { "order: recreated stream wins over from first",
      M_AUTO, S_FIRST, STORED(100, T0, 1), STREAM(1, 1000, 2), false, false, R(STREAM_RECREATED), 0 },
    { "order: recreated stream wins over forward sequence",
      M_AUTO, S_SEQ(101), STORED(100, T0, 1), STREAM(1, 1000, 7), false, false, R(STREAM_RECREATED), 0 },
    { "cursor ahead: stored seq past stream last_seq -> clear",
      M_AUTO, S_RESUME, STORED(100, T0, 1), STREAM(1, 99, 1), false, false, R(CURSOR_AHEAD), 0 },
    { "cursor ahead: never-written stream (first 0, last 0) -> clear",
      M_AUTO, S_RESUME, STORED(3, T0, 1), STREAM(0, 0, 1), false, false, R(CURSOR_AHEAD), 0 },
    { "cursor ahead wins over a forward replay",
      M_AUTO, S_SEQ(101), STORED(100, T0, 1), STREAM(1, 99, 1), false, false, R(CURSOR_AHEAD), 0 },
    { "cursor ahead wins over from first",
      M_AUTO, S_FIRST, STORED(100, T0, 1), STREAM(1, 99, 1), false, false, R(CURSOR_AHEAD), 0 },
    { "cursor at the stream end resumes (caught up)",
      M_AUTO, S_RESUME, STORED(100, T0, 1), STREAM(1, 100, 1), true, false, R(RESUME), 0 },
    { "order: from first wins over no stored position",
      M_AUTO, S_FIRST, NO_STORED, STREAM(1, 1000, 1), false, false, R(FULL_REBUILD), 0 },
    { "order: latest wins over no stored position",
      M_AUTO, S_LATEST, NO_STORED, NO_STREAM, false, false, R(LATEST), 0 },
    { "no stored position: recreated stream does not apply (nothing stored)",
      M_AUTO, S_RESUME, STORED(0, 0, 1), STREAM(1, 1000, 2), true, false, R(NOTHING_STORED), 0 },
    { "from time with no stored position -> clear",
      M_AUTO, S_TIME(T0), NO_STORED, STREAM(1, 1000, 1), false, false, R(NO_POSITION), 0 },
    { "from sequence with stored seq 0 -> clear",
      M_AUTO, S_SEQ(1), STORED(0, T0, 1), NO_STREAM, false, false, R(NO_POSITION), 0 },

    /* ---- resume and expiry ---- */
    { "resume, stream unknown (NULL) -> restore, no expiry check",
      M_AUTO, S_RESUME, STORED(100, T0, 1), NO_STREAM, true, false, R(RESUME), 0 },
    { "resume, cursor + 1 == first_seq -> not expired",
      M_AUTO, S_RESUME, STORED(100, T0, 1), STREAM(101, 1000, 1), true, false, R(RESUME), 0 },
    { "resume, cursor + 2 == first_seq -> expired, 1 evicted",
      M_AUTO, S_RESUME, STORED(100, T0, 1), STREAM(102, 1000, 1), true, true, R(CURSOR_EXPIRED), 1 },
    { "resume, stream purged empty past the cursor -> expired",
      M_AUTO, S_RESUME, STORED(100, T0, 1), STREAM(201, 200, 1), true, true, R(CURSOR_EXPIRED), 100 },
    { "resume, stream purged empty at the cursor -> resume",
      M_AUTO, S_RESUME, STORED(100, T0, 1), STREAM(101, 100, 1), true, false, R(RESUME), 0 },
    { "from sequence on an expired cursor: no resync",
      M_AUTO, S_SEQ(101), STORED(100, T0, 1), STREAM(150, 1000, 1), true, false, R(FORWARD_SEQUENCE), 0 },
    { "from sequence 102 vs 100: gap of 1",
      M_AUTO, S_SEQ(102), STORED(100, T0, 1), NO_STREAM, true, false, R(FORWARD_SEQUENCE_GAP), 1 },
    { "from sequence: start.time is ignored",
      M_AUTO, { OPSTATE_START_FROM_SEQUENCE, 101, INT64_MIN }, STORED(100, T0, 1), NO_STREAM,
      true, false, R(FORWARD_SEQUENCE), 0 },
    { "from time: start.seq is ignored",
      M_AUTO, { OPSTATE_START_FROM_TIME, 1, T0 + 1 }, STORED(100, T0, 1), NO_STREAM,
      true, false, R(FORWARD_TIME), 0 },
    { "large: from UINT64_MAX vs stored UINT64_MAX-1",
      M_AUTO, S_SEQ(UINT64_MAX), STORED(UINT64_MAX - 1, T0, 1), NO_STREAM,
      true, false, R(FORWARD_SEQUENCE), 0 },
    { "large: from UINT64_MAX vs stored 1: gap UINT64_MAX-2",
      M_AUTO, S_SEQ(UINT64_MAX), STORED(1, T0, 1), NO_STREAM,
      true, false, R(FORWARD_SEQUENCE_GAP), UINT64_MAX - 2 },
    { "large: from 1 vs stored UINT64_MAX clears",
      M_AUTO, S_SEQ(1), STORED(UINT64_MAX, T0, 1), NO_STREAM, false, false, R(BACKWARD_SEQUENCE), 0 },
    { "large: resume at UINT64_MAX with stream end UINT64_MAX",
      M_AUTO, S_RESUME, STORED(UINT64_MAX, T0, 1), STREAM(1, UINT64_MAX, 1),
      true, false, R(RESUME), 0 },
};

static void prefill_decision(opstate_restore_decision *d, const opstate_restore_decision *want)
{
    /* a valid decision that differs from `want` in every field */
    d->restore = !want->restore;
    d->resync = !want->resync;
    d->reason = (opstate_reason)(((int)want->reason + 1) % (int)OPSTATE_REASON_COUNT);
    d->gap = want->gap ^ UINT64_C(0xdead);
}

TEST(decide, matrix)
{
    size_t i;
    for (i = 0; i < COUNT_OF(decide_rows); i++) {
        const decide_row *r = &decide_rows[i];
        opstate_restore_decision want, got;
        opstate_result res;
        CASE(r->name);
        want.restore = r->restore;
        want.resync = r->resync;
        want.reason = r->reason;
        want.gap = r->gap;
        prefill_decision(&got, &want);
        res = opstate_decide_restore((opstate_restore_mode)r->mode, r->start,
                                     r->has_stored ? &r->stored : NULL,
                                     r->has_stream ? &r->stream : NULL, &got);
        CHECK_EQ_U64(res, OPSTATE_OK);
        CHECK(got.restore == want.restore);
        CHECK(got.resync == want.resync);
        CHECK_EQ_U64(got.reason, want.reason);
        CHECK_EQ_U64(got.gap, want.gap);
    }
}

TEST(decide, invalid_argument_leaves_output_untouched)
{
    static const struct {
        const char *name;
        int mode;
        opstate_start start;
    } rows[] = {
        { "from sequence 0", OPSTATE_MODE_AUTO, { OPSTATE_START_FROM_SEQUENCE, 0, T0 } },
        { "from sequence 0 under mode clear", OPSTATE_MODE_CLEAR, { OPSTATE_START_FROM_SEQUENCE, 0, 0 } },
        { "from sequence 0 under mode keep", OPSTATE_MODE_KEEP, { OPSTATE_START_FROM_SEQUENCE, 0, 0 } },
        { "unknown mode 3", 3, { OPSTATE_START_RESUME, 0, 0 } },
        { "unknown mode -1", -1, { OPSTATE_START_LATEST, 0, 0 } },
        { "unknown mode 1000", 1000, { OPSTATE_START_FIRST, 0, 0 } },
        { "unknown start kind 5", OPSTATE_MODE_AUTO, { (opstate_start_kind)5, 1, 0 } },
        { "unknown start kind 5 under mode clear", OPSTATE_MODE_CLEAR, { (opstate_start_kind)5, 1, 0 } },
        { "unknown start kind 5 under mode keep", OPSTATE_MODE_KEEP, { (opstate_start_kind)5, 1, 0 } },
        { "unknown start kind -1", OPSTATE_MODE_AUTO, { (opstate_start_kind)-1, 1, 0 } },
    };
    opstate_position stored = { 100, T0, 1 };
    opstate_stream_info stream = { 1, 1000, 0, 0, 1, 1000 };
    size_t i;
    int variant;
    for (i = 0; i < COUNT_OF(rows); i++) {
        CASE(rows[i].name);
        for (variant = 0; variant < 4; variant++) {
            opstate_restore_decision got, before;
            opstate_result res;
            memset(&got, 0x5a, sizeof got);
            memcpy(&before, &got, sizeof got);
            res = opstate_decide_restore((opstate_restore_mode)rows[i].mode, rows[i].start,
                                         (variant & 1) ? &stored : NULL,
                                         (variant & 2) ? &stream : NULL, &got);
            CHECK_EQ_U64(res, OPSTATE_INVALID_ARGUMENT);
            CHECK_MEM(&got, &before, sizeof got);
        }
    }
}

/* ---- decide: independent oracle ---------------------------------------
   Each reason is a self-contained predicate over the inputs (no predicate
   relies on another having been false); the answer is the applicable reason
   that comes first in the documented precedence list. restore / resync /
   gap are then properties of the chosen reason. */

typedef struct decide_in {
    int mode;
    opstate_start start;
    const opstate_position *stored;
    const opstate_stream_info *stream;
} decide_in;

static bool has_position(const decide_in *c) { return c->stored != NULL && c->stored->seq != 0; }

static bool is_kind(const decide_in *c, opstate_start_kind k) { return c->start.kind == k; }

static bool cursor_expired(const decide_in *c)
{
    /* same incarnation, and some sequence strictly between the cursor and
       first_seq is gone */
    return has_position(c) && c->stream != NULL && c->stream->epoch == c->stored->epoch &&
           c->stream->first_seq != 0 && c->stored->seq < c->stream->first_seq &&
           c->stream->first_seq - c->stored->seq >= 2;
}

/* mode keep: also RESYNC on a resume start with an expired cursor (the
   opstate_decide_restore doc comment) */
static bool keep_resyncs(const decide_in *c) { return is_kind(c, OPSTATE_START_RESUME) && cursor_expired(c); }

static bool rule_applies(opstate_reason r, const decide_in *c)
{
    switch (r) {
    case OPSTATE_REASON_FORCED_CLEAR: return c->mode == OPSTATE_MODE_CLEAR;
    case OPSTATE_REASON_FORCED_KEEP: return c->mode == OPSTATE_MODE_KEEP;
    case OPSTATE_REASON_STREAM_RECREATED:
        return has_position(c) && c->stream && c->stream->epoch != c->stored->epoch;
    case OPSTATE_REASON_CURSOR_AHEAD:
        return has_position(c) && c->stream && c->stream->last_seq < c->stored->seq;
    case OPSTATE_REASON_FULL_REBUILD: return is_kind(c, OPSTATE_START_FIRST);
    case OPSTATE_REASON_LATEST: return is_kind(c, OPSTATE_START_LATEST);
    case OPSTATE_REASON_NOTHING_STORED: return !has_position(c) && is_kind(c, OPSTATE_START_RESUME);
    case OPSTATE_REASON_NO_POSITION:
        return !has_position(c) &&
               (is_kind(c, OPSTATE_START_FROM_SEQUENCE) || is_kind(c, OPSTATE_START_FROM_TIME));
    case OPSTATE_REASON_CURSOR_EXPIRED: return is_kind(c, OPSTATE_START_RESUME) && cursor_expired(c);
    case OPSTATE_REASON_RESUME:
        return is_kind(c, OPSTATE_START_RESUME) && has_position(c) && !cursor_expired(c);
    case OPSTATE_REASON_FORWARD_SEQUENCE:
        return is_kind(c, OPSTATE_START_FROM_SEQUENCE) && has_position(c) &&
               c->start.seq > c->stored->seq && c->start.seq - c->stored->seq == 1;
    case OPSTATE_REASON_FORWARD_SEQUENCE_GAP:
        return is_kind(c, OPSTATE_START_FROM_SEQUENCE) && has_position(c) &&
               c->start.seq > c->stored->seq && c->start.seq - c->stored->seq > 1;
    case OPSTATE_REASON_BACKWARD_SEQUENCE:
        return is_kind(c, OPSTATE_START_FROM_SEQUENCE) && has_position(c) &&
               !(c->start.seq > c->stored->seq);
    case OPSTATE_REASON_FORWARD_TIME:
        return is_kind(c, OPSTATE_START_FROM_TIME) && has_position(c) &&
               c->start.time > c->stored->time;
    case OPSTATE_REASON_BACKWARD_TIME:
        return is_kind(c, OPSTATE_START_FROM_TIME) && has_position(c) &&
               !(c->start.time > c->stored->time);
    default: return false;
    }
}

static const opstate_reason decide_precedence[] = {
    OPSTATE_REASON_FORCED_CLEAR,   OPSTATE_REASON_FORCED_KEEP,
    OPSTATE_REASON_STREAM_RECREATED, OPSTATE_REASON_CURSOR_AHEAD,
    OPSTATE_REASON_FULL_REBUILD,   OPSTATE_REASON_LATEST,
    OPSTATE_REASON_NOTHING_STORED, OPSTATE_REASON_NO_POSITION,
    OPSTATE_REASON_CURSOR_EXPIRED, OPSTATE_REASON_RESUME,
    OPSTATE_REASON_FORWARD_SEQUENCE_GAP, OPSTATE_REASON_FORWARD_SEQUENCE,
    OPSTATE_REASON_BACKWARD_SEQUENCE, OPSTATE_REASON_FORWARD_TIME,
    OPSTATE_REASON_BACKWARD_TIME,
};

static const bool reason_restores[OPSTATE_REASON_COUNT] = {
    [OPSTATE_REASON_FORCED_KEEP] = true,
    [OPSTATE_REASON_NOTHING_STORED] = true,
    [OPSTATE_REASON_RESUME] = true,
    [OPSTATE_REASON_CURSOR_EXPIRED] = true,
    [OPSTATE_REASON_FORWARD_SEQUENCE] = true,
    [OPSTATE_REASON_FORWARD_SEQUENCE_GAP] = true,
    [OPSTATE_REASON_FORWARD_TIME] = true,
};

static bool decide_args_valid(const decide_in *c)
{
    bool mode_ok = c->mode == OPSTATE_MODE_AUTO || c->mode == OPSTATE_MODE_CLEAR ||
                   c->mode == OPSTATE_MODE_KEEP;
    bool kind_ok = (int)c->start.kind >= (int)OPSTATE_START_RESUME &&
                   (int)c->start.kind <= (int)OPSTATE_START_FIRST;
    if (!mode_ok || !kind_ok) return false;
    return !(is_kind(c, OPSTATE_START_FROM_SEQUENCE) && c->start.seq == 0);
}

/* returns -1 when the oracle itself finds no rule (a bug in the oracle) */
static int oracle_decide(const decide_in *c, opstate_result *res, opstate_restore_decision *d)
{
    size_t i;
    if (!decide_args_valid(c)) {
        *res = OPSTATE_INVALID_ARGUMENT;
        return 0;
    }
    *res = OPSTATE_OK;
    for (i = 0; i < COUNT_OF(decide_precedence); i++) {
        opstate_reason r = decide_precedence[i];
        if (!rule_applies(r, c)) continue;
        d->reason = r;
        d->restore = reason_restores[r];
        d->resync = r == OPSTATE_REASON_CURSOR_EXPIRED ||
                    (r == OPSTATE_REASON_FORCED_KEEP && keep_resyncs(c));
        if (r == OPSTATE_REASON_FORWARD_SEQUENCE_GAP) {
            uint64_t n = 0, s; /* count the skipped sequences one by one */
            for (s = c->stored->seq + 1; s < c->start.seq; s++) n++;
            d->gap = n;
        } else if (d->resync) {
            uint64_t n = 0, s;
            for (s = c->stored->seq + 1; s < c->stream->first_seq; s++) n++;
            d->gap = n;
        } else {
            d->gap = 0;
        }
        return 0;
    }
    return -1;
}

static void label_decide(const decide_in *c)
{
    lbl_reset();
    lbl_kv("mode", (uint64_t)c->mode);
    lbl_kv("kind", (uint64_t)c->start.kind);
    lbl_kv("N", c->start.seq);
    lbl_kvi("T", c->start.time);
    if (c->stored) {
        lbl_kv("stored.seq", c->stored->seq);
        lbl_kvi("stored.time", c->stored->time);
        lbl_kv("stored.epoch", c->stored->epoch);
    } else {
        lbl_str(" stored=NULL");
    }
    if (c->stream) {
        lbl_kv("first", c->stream->first_seq);
        lbl_kv("last", c->stream->last_seq);
        lbl_kv("epoch", c->stream->epoch);
    } else {
        lbl_str(" stream=NULL");
    }
}

static void check_decide_tuple(const decide_in *c)
{
    opstate_result want_res = OPSTATE_OK, got_res;
    opstate_restore_decision want, got, before;
    bool bad;
    memset(&want, 0, sizeof want);
    if (oracle_decide(c, &want_res, &want) != 0) {
        label_decide(c);
        CASE(lbl_buf);
        CHECK(!"oracle found no rule for this tuple");
        mismatches++;
        return;
    }
    if (want_res == OPSTATE_OK) {
        prefill_decision(&got, &want);
    } else {
        memset(&got, 0xa7, sizeof got);
    }
    memcpy(&before, &got, sizeof got);
    got_res = opstate_decide_restore((opstate_restore_mode)c->mode, c->start, c->stored, c->stream, &got);
    if (want_res == OPSTATE_OK) {
        bad = got_res != want_res || got.restore != want.restore || got.resync != want.resync ||
              got.reason != want.reason || got.gap != want.gap;
    } else {
        bad = got_res != want_res || memcmp(&got, &before, sizeof got) != 0;
    }
    if (!bad) return;
    if (++mismatches > REPORT_LIMIT) return;
    label_decide(c);
    CASE(lbl_buf);
    CHECK_EQ_U64(got_res, want_res);
    if (want_res == OPSTATE_OK && got_res == OPSTATE_OK) {
        CHECK_EQ_U64(got.restore, want.restore);
        CHECK_EQ_U64(got.resync, want.resync);
        CHECK_EQ_U64(got.reason, want.reason);
        CHECK_EQ_U64(got.gap, want.gap);
    } else if (want_res != OPSTATE_OK) {
        CHECK_MEM(&got, &before, sizeof got);
    }
}

TEST(decide, exhaustive)
{
    static const int modes[] = { OPSTATE_MODE_AUTO, OPSTATE_MODE_CLEAR, OPSTATE_MODE_KEEP, 3, -1 };
    static const int64_t times[] = { -1, 0, 1, 2 };
    opstate_position stored_dom[5 * 3 * 3];
    opstate_stream_info stream_dom[6 * 6 * 3];
    size_t nstored = 0, nstream = 0;
    size_t mi, ti, pi, qi;
    int kind;
    uint64_t n, f, l, e;
    int64_t t;
    unsigned long tuples = 0;

    for (n = 0; n <= 4; n++)
        for (t = 0; t <= 2; t++)
            for (e = 0; e <= 2; e++) { /* epoch 0 is an epoch like any other */
                opstate_position p = { n, t, e };
                stored_dom[nstored++] = p;
            }
    for (f = 0; f <= 5; f++)
        for (l = 0; l <= 5; l++)
            for (e = 0; e <= 2; e++) {
                opstate_stream_info s = { f, l, 0, 0, e, 0 };
                stream_dom[nstream++] = s;
            }

    mismatches = 0;
    for (mi = 0; mi < COUNT_OF(modes); mi++)
        for (kind = -1; kind <= 5; kind++)
            for (n = 0; n <= 5; n++)
                for (ti = 0; ti < COUNT_OF(times); ti++)
                    for (pi = 0; pi <= nstored; pi++)
                        for (qi = 0; qi <= nstream; qi++) {
                            decide_in c;
                            c.mode = modes[mi];
                            c.start.kind = (opstate_start_kind)kind;
                            c.start.seq = n;
                            c.start.time = times[ti];
                            c.stored = pi < nstored ? &stored_dom[pi] : NULL;
                            c.stream = qi < nstream ? &stream_dom[qi] : NULL;
                            check_decide_tuple(&c);
                            tuples++;
                        }
    CASE("summary");
    CHECK_EQ_U64(mismatches, 0);
    CHECK(tuples > 4000000ul);
}

/* The oracle must agree with the hand-written table too (checks the oracle). */
TEST(decide, oracle_agrees_with_matrix)
{
    size_t i;
    for (i = 0; i < COUNT_OF(decide_rows); i++) {
        const decide_row *r = &decide_rows[i];
        decide_in c;
        opstate_result res = OPSTATE_IO;
        opstate_restore_decision d;
        CASE(r->name);
        c.mode = r->mode;
        c.start = r->start;
        c.stored = r->has_stored ? &r->stored : NULL;
        c.stream = r->has_stream ? &r->stream : NULL;
        memset(&d, 0, sizeof d);
        if (r->gap > 1000) continue; /* the oracle counts one by one */
        REQUIRE(oracle_decide(&c, &res, &d) == 0);
        CHECK_EQ_U64(res, OPSTATE_OK);
        CHECK(d.restore == r->restore);
        CHECK(d.resync == r->resync);
        CHECK_EQ_U64(d.reason, r->reason);
        CHECK_EQ_U64(d.gap, r->gap);
    }
}

/* ---- strings and the timestamp fallback ------------------------------- */

TEST(decide, reason_strings)
{
    static const char *const names[] = {
#define NAME_OF(name, msg) #name,
        OPSTATE_REASON_LIST(NAME_OF)
#undef NAME_OF
    };
    int i, j;
    CHECK_EQ_U64(COUNT_OF(names), OPSTATE_REASON_COUNT);
    for (i = 0; i < (int)OPSTATE_REASON_COUNT; i++) {
        const char *s = opstate_reason_str((opstate_reason)i);
        const char *nm = opstate_reason_name((opstate_reason)i);
        CASE(names[i]);
        REQUIRE(s != NULL && nm != NULL);
        CHECK(s[0] != '\0');
        CHECK_STR(nm, names[i]);
        for (j = 0; j < i; j++) {
            CHECK(strcmp(s, opstate_reason_str((opstate_reason)j)) != 0);
            CHECK(strcmp(nm, opstate_reason_name((opstate_reason)j)) != 0);
        }
    }
    CASE(NULL);
    CHECK(strstr(opstate_reason_str(OPSTATE_REASON_STREAM_RECREATED), "stream recreated") != NULL);
    CHECK_STR(opstate_reason_str(OPSTATE_REASON_COUNT), "unknown reason");
    CHECK_STR(opstate_reason_name(OPSTATE_REASON_COUNT), "UNKNOWN");
    CHECK_STR(opstate_reason_str((opstate_reason)-1), "unknown reason");
    CHECK_STR(opstate_reason_name((opstate_reason)1000), "UNKNOWN");
}

/* Every resume state and gap kind has its own text (each string is kept
   whole: the texts are packed in one array per function); values past the
   last are unknown. */
TEST(decide, resume_and_gap_strings)
{
    CHECK_STR(opstate_resume_state_str(OPSTATE_RESUME_OK), "ok");
    CHECK_STR(opstate_resume_state_str(OPSTATE_RESUME_CAUGHT_UP), "caught up");
    CHECK_STR(opstate_resume_state_str(OPSTATE_RESUME_EXPIRED), "expired: events after the cursor were evicted");
    CHECK_STR(opstate_resume_state_str(OPSTATE_RESUME_RESET), "reset: the stream was recreated");
    CHECK_STR(opstate_resume_state_str((opstate_resume_state)(OPSTATE_RESUME_RESET + 1)), "unknown resume state");
    CHECK_STR(opstate_resume_state_str((opstate_resume_state)-1), "unknown resume state");
    CHECK_STR(opstate_gap_kind_str(OPSTATE_GAP_NONE), "none");
    CHECK_STR(opstate_gap_kind_str(OPSTATE_GAP_REDELIVERY), "redelivery of an applied event");
    CHECK_STR(opstate_gap_kind_str(OPSTATE_GAP_SKIPPED), "skipped sequences are retained (other subjects)");
    CHECK_STR(opstate_gap_kind_str(OPSTATE_GAP_EVICTED), "events evicted by retention");
    CHECK_STR(opstate_gap_kind_str(OPSTATE_GAP_RESET), "stream recreated");
    CHECK_STR(opstate_gap_kind_str((opstate_gap_kind)(OPSTATE_GAP_RESET + 1)), "unknown gap kind");
    CHECK_STR(opstate_gap_kind_str((opstate_gap_kind)1000), "unknown gap kind");
}

TEST(decide, event_time_fallback)
{
    opstate_event ev;
    int64_t out;
    memset(&ev, 0, sizeof ev);

    CASE("has_time: the event time, under either fallback");
    ev.has_time = true;
    ev.time = T0 + 123;
    out = -7;
    CHECK(opstate_event_time(&ev, OPSTATE_TIME_FALLBACK_WALLCLOCK, T0 + 999, &out));
    CHECK(out == T0 + 123);
    out = -7;
    CHECK(opstate_event_time(&ev, OPSTATE_TIME_FALLBACK_SKIP, T0 + 999, &out));
    CHECK(out == T0 + 123);

    CASE("has_time with time 0 is a real time (1970), not 'absent'");
    ev.time = 0;
    out = -7;
    CHECK(opstate_event_time(&ev, OPSTATE_TIME_FALLBACK_WALLCLOCK, T0, &out));
    CHECK(out == 0);
    out = -7;
    CHECK(opstate_event_time(&ev, OPSTATE_TIME_FALLBACK_SKIP, T0, &out));
    CHECK(out == 0);

    CASE("has_time with a negative time");
    ev.time = -5;
    out = 1;
    CHECK(opstate_event_time(&ev, OPSTATE_TIME_FALLBACK_SKIP, T0, &out));
    CHECK(out == -5);

    CASE("no time, WALLCLOCK: the wall clock; ev.time is ignored");
    ev.has_time = false;
    ev.time = T0 + 55;
    out = -7;
    CHECK(opstate_event_time(&ev, OPSTATE_TIME_FALLBACK_WALLCLOCK, T0 + 999, &out));
    CHECK(out == T0 + 999);

    CASE("no time, SKIP: false and *out untouched");
    out = -7;
    CHECK(!opstate_event_time(&ev, OPSTATE_TIME_FALLBACK_SKIP, T0 + 999, &out));
    CHECK(out == -7);
    ev.time = 0;
    CHECK(!opstate_event_time(&ev, OPSTATE_TIME_FALLBACK_SKIP, T0 + 999, &out));
    CHECK(out == -7);
}

/* ======================================================================
   >>resume : opstate_resume_check
   ====================================================================== */

/* Oracle: walks the sequences. The retained set is [first, last] (empty
   when first == 0 or last < first). Reading starts after the cursor. */
static bool retained(const opstate_stream_info *s, uint64_t seq)
{
    return s->first_seq != 0 && seq >= s->first_seq && seq <= s->last_seq;
}

static opstate_result oracle_resume(opstate_position cur, const opstate_stream_info *s, opstate_resume *o)
{
    uint64_t q, lost = 0, ahead = 0, start;
    if (cur.seq == UINT64_MAX) return OPSTATE_SEQ_OVERFLOW;
    o->missed = 0;
    /* seq 0 is "no position": its epoch means nothing, so no RESET. A RESET
       rebuilds from the first retained event (1 on a never-written stream). */
    if (cur.seq != 0 && (cur.epoch != s->epoch || cur.seq > s->last_seq)) {
        o->state = OPSTATE_RESUME_RESET;
        o->next_seq = s->first_seq ? s->first_seq : 1;
        return OPSTATE_OK;
    }
    if (cur.seq != 0)
        for (q = cur.seq + 1; q < s->first_seq; q++) lost++;
    if (lost) {
        o->state = OPSTATE_RESUME_EXPIRED;
        o->next_seq = s->first_seq;
        o->missed = lost;
        return OPSTATE_OK;
    }
    if (cur.seq == 0) start = s->first_seq ? s->first_seq : 1;
    else start = cur.seq + 1;
    for (q = start; q <= 8; q++)
        if (retained(s, q)) ahead++;
    o->next_seq = start;
    o->state = ahead ? OPSTATE_RESUME_OK : OPSTATE_RESUME_CAUGHT_UP;
    return OPSTATE_OK;
}

static void label_resume(opstate_position cur, const opstate_stream_info *s)
{
    lbl_reset();
    lbl_kv("cursor.seq", cur.seq);
    lbl_kv("cursor.epoch", cur.epoch);
    lbl_kv("first", s->first_seq);
    lbl_kv("last", s->last_seq);
    lbl_kv("epoch", s->epoch);
}

static void prefill_resume(opstate_resume *o, const opstate_resume *want)
{
    o->state = (opstate_resume_state)(((int)want->state + 1) % 4);
    o->next_seq = want->next_seq ^ UINT64_C(0xbeef);
    o->missed = want->missed ^ UINT64_C(0xbeef);
}

static bool resume_matches(const opstate_resume *got, const opstate_resume *want)
{
    return got->state == want->state && got->missed == want->missed &&
           got->next_seq == want->next_seq;
}

static void check_resume_tuple(opstate_position cur, const opstate_stream_info *s)
{
    opstate_resume want, got, before;
    opstate_result want_res, got_res;
    bool bad;
    memset(&want, 0, sizeof want);
    want_res = oracle_resume(cur, s, &want);
    if (want_res == OPSTATE_OK) prefill_resume(&got, &want);
    else memset(&got, 0x3c, sizeof got);
    memcpy(&before, &got, sizeof got);
    got_res = opstate_resume_check(cur, s, &got);
    if (want_res == OPSTATE_OK) bad = got_res != OPSTATE_OK || !resume_matches(&got, &want);
    else bad = got_res != want_res || memcmp(&got, &before, sizeof got) != 0;
    if (!bad) return;
    if (++mismatches > REPORT_LIMIT) return;
    label_resume(cur, s);
    CASE(lbl_buf);
    CHECK_EQ_U64(got_res, want_res);
    if (want_res == OPSTATE_OK && got_res == OPSTATE_OK) {
        CHECK_EQ_U64(got.state, want.state);
        CHECK_EQ_U64(got.next_seq, want.next_seq);
        CHECK_EQ_U64(got.missed, want.missed);
    } else if (want_res != OPSTATE_OK) {
        CHECK_MEM(&got, &before, sizeof got);
    }
}

TEST(resume, exhaustive)
{
    uint64_t c, ce, f, l, e;
    unsigned long tuples = 0;
    mismatches = 0;
    for (c = 0; c <= 6; c++)
        for (ce = 0; ce <= 2; ce++)
            for (f = 0; f <= 6; f++)
                for (l = 0; l <= 6; l++)
                    for (e = 0; e <= 2; e++) {
                        opstate_position cur = { c, T0 + (int64_t)c, ce };
                        /* first_seq 0 means never written: last_seq is then 0
                           too; first 0 with last > 0 is a contradiction that
                           the header does not define (see the report). */
                        if (f == 0 && l != 0) continue;
                        opstate_stream_info s = { f, l, T0, T0 + 9, e, 0 };
                        check_resume_tuple(cur, &s);
                        tuples++;
                    }
    CASE("summary");
    CHECK_EQ_U64(mismatches, 0);
    CHECK(tuples == 7ul * 3 * (7 * 7 - 6) * 3);
}

typedef struct resume_row {
    const char *name;
    opstate_position cursor;
    opstate_stream_info stream;
    opstate_result result;
    opstate_resume_state state;
    uint64_t next_seq, missed;
} resume_row;

#define RS(f, l, e) { (f), (l), 0, 0, (e), 0 }
#define U64MAX UINT64_MAX

static const resume_row resume_rows[] = {
    { "OK: cursor inside the stream", { 5, 0, 1 }, RS(1, 10, 1), OPSTATE_OK, OPSTATE_RESUME_OK, 6, 0 },
    { "CAUGHT_UP: cursor == last_seq", { 10, 0, 1 }, RS(1, 10, 1), OPSTATE_OK, OPSTATE_RESUME_CAUGHT_UP, 11, 0 },
    { "OK: cursor + 1 == first_seq is not expired", { 9, 0, 1 }, RS(10, 20, 1), OPSTATE_OK, OPSTATE_RESUME_OK, 10, 0 },
    { "EXPIRED: cursor + 1 < first_seq", { 9, 0, 1 }, RS(11, 20, 1), OPSTATE_OK, OPSTATE_RESUME_EXPIRED, 11, 1 },
    { "EXPIRED: many evicted", { 100, 0, 1 }, RS(1000, 2000, 1), OPSTATE_OK, OPSTATE_RESUME_EXPIRED, 1000, 899 },
    { "EXPIRED: stream purged empty past the cursor", { 100, 0, 1 }, RS(201, 200, 1), OPSTATE_OK, OPSTATE_RESUME_EXPIRED, 201, 100 },
    { "CAUGHT_UP: stream purged empty at the cursor", { 200, 0, 1 }, RS(201, 200, 1), OPSTATE_OK, OPSTATE_RESUME_CAUGHT_UP, 201, 0 },
    { "no position: read from the first retained event", { 0, 0, 1 }, RS(50, 60, 1), OPSTATE_OK, OPSTATE_RESUME_OK, 50, 0 },
    { "no position, never-written stream: caught up at 1", { 0, 0, 1 }, RS(0, 0, 1), OPSTATE_OK, OPSTATE_RESUME_CAUGHT_UP, 1, 0 },
    { "RESET: cursor past last_seq, rebuild from first", { 11, 0, 1 }, RS(3, 10, 1), OPSTATE_OK, OPSTATE_RESUME_RESET, 3, 0 },
    { "RESET: epoch differs, rebuild from first", { 5, 0, 1 }, RS(2, 10, 2), OPSTATE_OK, OPSTATE_RESUME_RESET, 2, 0 },
    { "RESET: epoch differs even with the cursor before first_seq", { 5, 0, 1 }, RS(9, 10, 2), OPSTATE_OK, OPSTATE_RESUME_RESET, 9, 0 },
    { "RESET: cursor epoch 0 vs stream epoch 1", { 5, 0, 0 }, RS(1, 10, 1), OPSTATE_OK, OPSTATE_RESUME_RESET, 1, 0 },
    { "RESET: cursor on a never-written stream, read from 1", { 3, 0, 1 }, RS(0, 0, 1), OPSTATE_OK, OPSTATE_RESUME_RESET, 1, 0 },
    { "no position (seq 0) ignores the epoch: not RESET", { 0, 0, 1 }, RS(4, 10, 2), OPSTATE_OK, OPSTATE_RESUME_OK, 4, 0 },
    { "no position on a purged empty stream: caught up at first", { 0, 0, 1 }, RS(11, 10, 1), OPSTATE_OK, OPSTATE_RESUME_CAUGHT_UP, 11, 0 },
    { "SEQ_OVERFLOW: cursor UINT64_MAX", { U64MAX, 0, 1 }, RS(1, U64MAX, 1), OPSTATE_SEQ_OVERFLOW, OPSTATE_RESUME_OK, 0, 0 },
    { "SEQ_OVERFLOW: cursor UINT64_MAX, stream ends earlier", { U64MAX, 0, 1 }, RS(1, 10, 1), OPSTATE_SEQ_OVERFLOW, OPSTATE_RESUME_OK, 0, 0 },
    { "UINT64_MAX-1: one event left", { U64MAX - 1, 0, 1 }, RS(1, U64MAX, 1), OPSTATE_OK, OPSTATE_RESUME_OK, U64MAX, 0 },
    { "UINT64_MAX-1: caught up", { U64MAX - 1, 0, 1 }, RS(1, U64MAX - 1, 1), OPSTATE_OK, OPSTATE_RESUME_CAUGHT_UP, U64MAX, 0 },
    { "UINT64_MAX-1: first_seq UINT64_MAX is not expired", { U64MAX - 1, 0, 1 }, RS(U64MAX, U64MAX, 1), OPSTATE_OK, OPSTATE_RESUME_OK, U64MAX, 0 },
    { "UINT64_MAX-2: first_seq UINT64_MAX expired by 1", { U64MAX - 2, 0, 1 }, RS(U64MAX, U64MAX, 1), OPSTATE_OK, OPSTATE_RESUME_EXPIRED, U64MAX, 1 },
    { "cursor 5, first_seq UINT64_MAX: huge eviction", { 5, 0, 1 }, RS(U64MAX, U64MAX, 1), OPSTATE_OK, OPSTATE_RESUME_EXPIRED, U64MAX, U64MAX - 6 },
    { "cursor 1, first 3: missed 1", { 1, 0, 7 }, RS(3, 3, 7), OPSTATE_OK, OPSTATE_RESUME_EXPIRED, 3, 1 },
};

TEST(resume, table)
{
    size_t i;
    for (i = 0; i < COUNT_OF(resume_rows); i++) {
        const resume_row *r = &resume_rows[i];
        opstate_resume got, before;
        opstate_result res;
        CASE(r->name);
        memset(&got, 0x6b, sizeof got);
        memcpy(&before, &got, sizeof got);
        res = opstate_resume_check(r->cursor, &r->stream, &got);
        CHECK_EQ_U64(res, r->result);
        if (r->result != OPSTATE_OK) {
            CHECK_MEM(&got, &before, sizeof got);
            continue;
        }
        if (res != OPSTATE_OK) continue;
        CHECK_EQ_U64(got.state, r->state);
        CHECK_EQ_U64(got.next_seq, r->next_seq);
        CHECK_EQ_U64(got.missed, r->missed);
    }
}

TEST(resume, state_strings)
{
    int i, j;
    for (i = 0; i <= (int)OPSTATE_RESUME_RESET; i++) {
        const char *s = opstate_resume_state_str((opstate_resume_state)i);
        REQUIRE(s != NULL);
        CHECK(s[0] != '\0');
        for (j = 0; j < i; j++) CHECK(strcmp(s, opstate_resume_state_str((opstate_resume_state)j)) != 0);
    }
}

/* ======================================================================
   >>resume : opstate_gap_classify
   ====================================================================== */

static opstate_result oracle_gap(uint64_t expected, uint64_t delivered, uint64_t epoch,
                                 const opstate_stream_info *fresh, opstate_gap *o)
{
    uint64_t q, missing = 0, below_first = 0;
    if (expected == 0) return OPSTATE_INVALID_ARGUMENT;
    o->missing = 0;
    o->evicted = 0;
    if (delivered == expected) {
        o->kind = OPSTATE_GAP_NONE;
        return OPSTATE_OK;
    }
    if (delivered < expected) {
        o->kind = OPSTATE_GAP_REDELIVERY;
        return OPSTATE_OK;
    }
    if (fresh == NULL) return OPSTATE_INVALID_ARGUMENT;
    for (q = expected; q != delivered; q++) {
        missing++;
        if (q < fresh->first_seq) below_first++;
    }
    o->missing = missing;
    if (fresh->epoch != epoch || delivered > fresh->last_seq) {
        o->kind = OPSTATE_GAP_RESET;
    } else if (below_first) {
        o->kind = OPSTATE_GAP_EVICTED;
        o->evicted = below_first;
    } else {
        o->kind = OPSTATE_GAP_SKIPPED;
    }
    return OPSTATE_OK;
}

static void prefill_gap(opstate_gap *o, const opstate_gap *want)
{
    o->kind = (opstate_gap_kind)(((int)want->kind + 1) % 5);
    o->missing = want->missing ^ UINT64_C(0xf00d);
    o->evicted = want->evicted ^ UINT64_C(0xf00d);
}

static void label_gap(uint64_t x, uint64_t d, uint64_t e, const opstate_stream_info *f)
{
    lbl_reset();
    lbl_kv("expected", x);
    lbl_kv("delivered", d);
    lbl_kv("epoch", e);
    if (f) {
        lbl_kv("first", f->first_seq);
        lbl_kv("last", f->last_seq);
        lbl_kv("fresh.epoch", f->epoch);
    } else {
        lbl_str(" fresh=NULL");
    }
}

static void check_gap_tuple(uint64_t x, uint64_t d, uint64_t e, const opstate_stream_info *f)
{
    opstate_gap want, got, before;
    opstate_result want_res, got_res;
    bool bad;
    memset(&want, 0, sizeof want);
    want_res = oracle_gap(x, d, e, f, &want);
    if (want_res == OPSTATE_OK) prefill_gap(&got, &want);
    else memset(&got, 0xc3, sizeof got);
    memcpy(&before, &got, sizeof got);
    got_res = opstate_gap_classify(x, d, e, f, &got);
    if (want_res == OPSTATE_OK)
        bad = got_res != OPSTATE_OK || got.kind != want.kind || got.missing != want.missing ||
              got.evicted != want.evicted;
    else
        bad = got_res != want_res || memcmp(&got, &before, sizeof got) != 0;
    if (!bad) return;
    if (++mismatches > REPORT_LIMIT) return;
    label_gap(x, d, e, f);
    CASE(lbl_buf);
    CHECK_EQ_U64(got_res, want_res);
    if (want_res == OPSTATE_OK && got_res == OPSTATE_OK) {
        CHECK_EQ_U64(got.kind, want.kind);
        CHECK_EQ_U64(got.missing, want.missing);
        CHECK_EQ_U64(got.evicted, want.evicted);
    } else if (want_res != OPSTATE_OK) {
        CHECK_MEM(&got, &before, sizeof got);
    }
}

TEST(gap, exhaustive)
{
    opstate_stream_info dom[8 * 8 * 3];
    size_t nd = 0, i;
    uint64_t x, d, e, f, l;
    mismatches = 0;
    for (f = 0; f <= 7; f++)
        for (l = 0; l <= 7; l++)
            for (e = 0; e <= 2; e++) {
                opstate_stream_info s = { f, l, T0, T0 + 1, e, 0 };
                dom[nd++] = s;
            }
    for (x = 0; x <= 6; x++)
        for (d = 0; d <= 7; d++)
            for (e = 0; e <= 2; e++)
                for (i = 0; i <= nd; i++)
                    check_gap_tuple(x, d, e, i < nd ? &dom[i] : NULL);
    CASE("summary");
    CHECK_EQ_U64(mismatches, 0);
}

typedef struct gap_row {
    const char *name;
    uint64_t expected, delivered, epoch;
    int has_fresh;
    opstate_stream_info fresh;
    opstate_result result;
    opstate_gap_kind kind;
    uint64_t missing, evicted;
} gap_row;

#define GF(f, l, e) 1, { (f), (l), 0, 0, (e), 0 }
#define NOF 0, { 0, 0, 0, 0, 0, 0 }

static const gap_row gap_rows[] = {
    { "NONE: delivered == expected", 5, 5, 1, NOF, OPSTATE_OK, OPSTATE_GAP_NONE, 0, 0 },
    { "REDELIVERY: delivered < expected", 5, 4, 1, NOF, OPSTATE_OK, OPSTATE_GAP_REDELIVERY, 0, 0 },
    { "REDELIVERY of seq 0", 5, 0, 1, NOF, OPSTATE_OK, OPSTATE_GAP_REDELIVERY, 0, 0 },
    { "SKIPPED: other subjects in between", 5, 8, 1, GF(1, 10, 1), OPSTATE_OK, OPSTATE_GAP_SKIPPED, 3, 0 },
    { "SKIPPED: expected == first_seq", 5, 8, 1, GF(5, 10, 1), OPSTATE_OK, OPSTATE_GAP_SKIPPED, 3, 0 },
    { "EVICTED: expected < first_seq", 5, 8, 1, GF(6, 10, 1), OPSTATE_OK, OPSTATE_GAP_EVICTED, 3, 1 },
    { "EVICTED: all missing were evicted", 5, 8, 1, GF(8, 10, 1), OPSTATE_OK, OPSTATE_GAP_EVICTED, 3, 3 },
    { "SKIPPED: delivered == last_seq", 5, 10, 1, GF(1, 10, 1), OPSTATE_OK, OPSTATE_GAP_SKIPPED, 5, 0 },
    { "RESET: delivered > last_seq", 5, 11, 1, GF(1, 10, 1), OPSTATE_OK, OPSTATE_GAP_RESET, 6, 0 },
    { "RESET: epoch differs", 5, 8, 1, GF(1, 10, 2), OPSTATE_OK, OPSTATE_GAP_RESET, 3, 0 },
    { "RESET: fresh epoch 0 vs cursor epoch 1", 5, 8, 1, GF(1, 10, 0), OPSTATE_OK, OPSTATE_GAP_RESET, 3, 0 },
    { "REDELIVERY ignores fresh (other epoch)", 5, 3, 1, GF(1, 10, 2), OPSTATE_OK, OPSTATE_GAP_REDELIVERY, 0, 0 },
    { "RESET wins over EVICTED (epoch)", 5, 8, 1, GF(7, 10, 2), OPSTATE_OK, OPSTATE_GAP_RESET, 3, 0 },
    { "huge gap", 1, UINT64_MAX, 1, GF(1, UINT64_MAX, 1), OPSTATE_OK, OPSTATE_GAP_SKIPPED, UINT64_MAX - 1, 0 },
    { "huge eviction", 1, UINT64_MAX, 1, GF(UINT64_MAX, UINT64_MAX, 1), OPSTATE_OK, OPSTATE_GAP_EVICTED, UINT64_MAX - 1, UINT64_MAX - 1 },
    { "INVALID: gap with fresh NULL", 5, 6, 1, NOF, OPSTATE_INVALID_ARGUMENT, OPSTATE_GAP_NONE, 0, 0 },
    { "INVALID: expected 0", 0, 0, 1, GF(1, 10, 1), OPSTATE_INVALID_ARGUMENT, OPSTATE_GAP_NONE, 0, 0 },
    { "INVALID: expected 0, delivered 3", 0, 3, 1, GF(1, 10, 1), OPSTATE_INVALID_ARGUMENT, OPSTATE_GAP_NONE, 0, 0 },
    { "first delivery checked against the requested start: server clamp", 1, 40, 1, GF(40, 90, 1), OPSTATE_OK, OPSTATE_GAP_EVICTED, 39, 39 },
};

TEST(gap, table)
{
    size_t i;
    for (i = 0; i < COUNT_OF(gap_rows); i++) {
        const gap_row *r = &gap_rows[i];
        opstate_gap got, before;
        opstate_result res;
        CASE(r->name);
        memset(&got, 0x69, sizeof got);
        memcpy(&before, &got, sizeof got);
        res = opstate_gap_classify(r->expected, r->delivered, r->epoch, r->has_fresh ? &r->fresh : NULL, &got);
        CHECK_EQ_U64(res, r->result);
        if (r->result != OPSTATE_OK) {
            CHECK_MEM(&got, &before, sizeof got);
            continue;
        }
        if (res != OPSTATE_OK) continue;
        CHECK_EQ_U64(got.kind, r->kind);
        CHECK_EQ_U64(got.missing, r->missing);
        CHECK_EQ_U64(got.evicted, r->evicted);
    }
}

TEST(gap, kind_strings)
{
    int i, j;
    for (i = 0; i <= (int)OPSTATE_GAP_RESET; i++) {
        const char *s = opstate_gap_kind_str((opstate_gap_kind)i);
        REQUIRE(s != NULL);
        CHECK(s[0] != '\0');
        for (j = 0; j < i; j++) CHECK(strcmp(s, opstate_gap_kind_str((opstate_gap_kind)j)) != 0);
    }
}

/* ======================================================================
   >>hwm : high-water mark
   ====================================================================== */

/* Oracle: every delivery in a plain array with a boolean "acked"; the mark
   is recomputed from scratch by scanning from the first delivery. */
#define HO_MAX 4096
typedef struct hwm_oracle {
    opstate_position init;
    uint64_t seq[HO_MAX];
    int64_t time[HO_MAX];
    bool acked[HO_MAX];
    size_t n;
    size_t scan_from; /* deliveries below this index are known acked */
    opstate_position mark;
} hwm_oracle;

static void ho_init(hwm_oracle *o, opstate_position mark)
{
    o->init = mark;
    o->n = 0;
    o->scan_from = 0;
    o->mark = mark;
}

static uint64_t ho_last_delivered(const hwm_oracle *o) { return o->n ? o->seq[o->n - 1] : o->init.seq; }

static void ho_recompute(hwm_oracle *o)
{
    size_t i = o->scan_from;
    while (i < o->n && o->acked[i]) {
        o->mark.seq = o->seq[i];
        o->mark.time = o->time[i];
        i++;
    }
    o->scan_from = i;
}

static uint32_t ho_in_flight(const hwm_oracle *o)
{
    uint32_t k = 0;
    size_t i;
    for (i = o->scan_from; i < o->n; i++)
        if (o->seq[i] > o->mark.seq) k++;
    return k;
}

/* Expected result of a deliver; both errors are acceptable when both apply. */
static void ho_deliver_expect(const hwm_oracle *o, uint64_t seq, bool *ooo, bool *full)
{
    *ooo = seq <= ho_last_delivered(o);
    *full = ho_in_flight(o) == OPSTATE_HWM_CAPACITY;
}

/* returns the expected result; *changes says whether the struct may change */
static opstate_result ho_ack(hwm_oracle *o, uint64_t seq, bool *changes)
{
    size_t i;
    *changes = false;
    if (seq <= o->mark.seq) return OPSTATE_OK;
    for (i = o->scan_from; i < o->n; i++)
        if (o->seq[i] == seq) break;
    if (i == o->n) return OPSTATE_NOT_FOUND;
    if (!o->acked[i]) {
        o->acked[i] = true;
        *changes = true;
        ho_recompute(o);
    }
    return OPSTATE_OK;
}

static unsigned long hwm_fail;

static void hwm_compare(const opstate_hwm *h, const hwm_oracle *o, const char *what, uint64_t seq)
{
    size_t i;
    bool unacked_below = false;
    for (i = o->scan_from; i < o->n; i++) /* below scan_from all are acked */
        if (o->seq[i] <= h->mark.seq && !o->acked[i]) unacked_below = true;
    if (h->mark.seq == o->mark.seq && h->mark.time == o->mark.time && h->mark.epoch == o->init.epoch &&
        opstate_hwm_in_flight(h) == ho_in_flight(o) && h->last_delivered == ho_last_delivered(o) &&
        !unacked_below)
        return;
    if (++hwm_fail > REPORT_LIMIT) return;
    lbl_reset();
    lbl_str(what);
    lbl_kv("seq", seq);
    lbl_kv("deliveries", o->n);
    CASE(lbl_buf);
    CHECK(!unacked_below); /* the mark never passes an unacked delivery */
    CHECK_EQ_U64(h->mark.seq, o->mark.seq);
    CHECK_EQ_U64(h->mark.time, o->mark.time);
    CHECK_EQ_U64(h->mark.epoch, o->init.epoch);
    CHECK_EQ_U64(opstate_hwm_in_flight(h), ho_in_flight(o));
    CHECK_EQ_U64(h->last_delivered, ho_last_delivered(o));
}

static void hwm_step_fail(const char *what, uint64_t seq, opstate_result got, opstate_result want)
{
    if (++hwm_fail > REPORT_LIMIT) return;
    lbl_reset();
    lbl_str(what);
    lbl_kv("seq", seq);
    CASE(lbl_buf);
    CHECK_EQ_U64(got, want);
}

static opstate_hwm hwm_before; /* big: keep off the stack */

static opstate_result do_deliver(opstate_hwm *h, hwm_oracle *o, uint64_t seq, int64_t time)
{
    bool ooo, full;
    opstate_result r;
    ho_deliver_expect(o, seq, &ooo, &full);
    memcpy(&hwm_before, h, sizeof *h);
    r = opstate_hwm_deliver(h, seq, time);
    if (ooo || full) {
        bool ok = (ooo && r == OPSTATE_OUT_OF_ORDER) || (full && r == OPSTATE_WINDOW_FULL);
        if (!ok) hwm_step_fail("deliver should fail", seq, r, ooo ? OPSTATE_OUT_OF_ORDER : OPSTATE_WINDOW_FULL);
        if (memcmp(&hwm_before, h, sizeof *h) != 0) hwm_step_fail("failed deliver changed the struct", seq, 1, 0);
        if (!ok && r == OPSTATE_OK) { /* keep the oracle in step */
            o->seq[o->n] = seq; o->time[o->n] = time; o->acked[o->n] = false; o->n++;
        }
    } else {
        if (r != OPSTATE_OK) hwm_step_fail("deliver", seq, r, OPSTATE_OK);
        else {
            o->seq[o->n] = seq;
            o->time[o->n] = time;
            o->acked[o->n] = false;
            o->n++;
        }
    }
    hwm_compare(h, o, "after deliver", seq);
    return r;
}

static opstate_result do_ack(opstate_hwm *h, hwm_oracle *o, uint64_t seq)
{
    bool changes;
    opstate_result want = ho_ack(o, seq, &changes), r;
    memcpy(&hwm_before, h, sizeof *h);
    r = opstate_hwm_ack(h, seq);
    if (r != want) hwm_step_fail("ack result", seq, r, want);
    if (!changes && memcmp(&hwm_before, h, sizeof *h) != 0)
        hwm_step_fail("ack that changes nothing changed the struct", seq, 1, 0);
    hwm_compare(h, o, "after ack", seq);
    return r;
}

static hwm_oracle g_oracle;
static opstate_hwm g_hwm;

static bool next_permutation(int *a, int n)
{
    int i = n - 2, j, t;
    while (i >= 0 && a[i] >= a[i + 1]) i--;
    if (i < 0) return false;
    j = n - 1;
    while (a[j] <= a[i]) j--;
    t = a[i]; a[i] = a[j]; a[j] = t;
    for (i = i + 1, j = n - 1; i < j; i++, j--) { t = a[i]; a[i] = a[j]; a[j] = t; }
    return true;
}

TEST(hwm, all_ack_orders)
{
    static const uint64_t seqs[6] = { 3, 4, 7, 8, 12, 13 };
    static const int64_t times[6] = { 50, 40, 90, 10, 70, -60 }; /* not monotonic */
    static const uint64_t strays[] = { 5, 6, 9, 10, 11, 14, 100, 1, 2, UINT64_MAX };
    static const opstate_position inits[2] = { { 0, 0, 0 }, { 2, 777, 9 } };
    opstate_hwm *h = &g_hwm;
    hwm_oracle *o = &g_oracle;
    unsigned long runs = 0, acks = 0;
    int n, mi, lazy;
    hwm_fail = 0;
    for (n = 1; n <= 6; n++)
        for (mi = 0; mi < 2; mi++)
            for (lazy = 0; lazy <= 1; lazy++) {
                int perm[6], k;
                for (k = 0; k < n; k++) perm[k] = k;
                do {
                    int delivered = 0;
                    opstate_hwm_init(h, inits[mi]);
                    ho_init(o, inits[mi]);
                    hwm_compare(h, o, "after init", 0);
                    if (!lazy)
                        for (; delivered < n; delivered++) {
                            do_deliver(h, o, seqs[delivered], times[delivered]);
                            do_deliver(h, o, seqs[delivered], 1); /* redelivery: OUT_OF_ORDER */
                        }
                    for (k = 0; k < n; k++) {
                        int idx = perm[k];
                        if (lazy) {
                            if (delivered <= idx) do_ack(h, o, seqs[idx]); /* not yet delivered */
                            for (; delivered <= idx; delivered++)
                                do_deliver(h, o, seqs[delivered], times[delivered]);
                        }
                        do_ack(h, o, seqs[idx]);
                        do_ack(h, o, seqs[idx]); /* duplicate */
                        do_ack(h, o, strays[(size_t)(k + n + idx) % COUNT_OF(strays)]);
                        do_ack(h, o, h->mark.seq); /* at the mark */
                        if (h->mark.seq > 0) do_ack(h, o, h->mark.seq - 1); /* below */
                        acks++;
                    }
                    /* everything delivered was acked: the mark is the last delivery */
                    if (delivered == n && (o->mark.seq != seqs[n - 1] || opstate_hwm_in_flight(h) != 0)) {
                        CASE("final");
                        CHECK_EQ_U64(h->mark.seq, seqs[n - 1]);
                        CHECK_EQ_U64(opstate_hwm_in_flight(h), 0);
                    }
                    runs++;
                } while (next_permutation(perm, n));
            }
    CASE("summary");
    CHECK_EQ_U64(hwm_fail, 0);
    CHECK_EQ_U64(runs, 4ul * (1 + 2 + 6 + 24 + 120 + 720));
}

TEST(hwm, mark_time_is_the_mark_events_time)
{
    opstate_hwm *h = &g_hwm;
    opstate_position start = { 10, 1000, 4 };
    opstate_hwm_init(h, start);
    CHECK_EQ_U64(h->mark.seq, 10);
    CHECK(h->mark.time == 1000);
    CHECK_EQ_U64(h->mark.epoch, 4);
    CHECK_EQ_U64(h->last_delivered, 10);
    CHECK_EQ_U64(opstate_hwm_in_flight(h), 0);
    REQUIRE(opstate_hwm_deliver(h, 12, 5000) == OPSTATE_OK);
    REQUIRE(opstate_hwm_deliver(h, 15, 3000) == OPSTATE_OK); /* earlier time, later seq */
    REQUIRE(opstate_hwm_deliver(h, 20, 4000) == OPSTATE_OK);
    CHECK_EQ_U64(opstate_hwm_in_flight(h), 3);
    CHECK_EQ_U64(opstate_hwm_ack(h, 15), OPSTATE_OK);
    CHECK_EQ_U64(h->mark.seq, 10); /* 12 not acked: the mark stays */
    CHECK(h->mark.time == 1000);
    CHECK_EQ_U64(opstate_hwm_ack(h, 12), OPSTATE_OK);
    CHECK_EQ_U64(h->mark.seq, 15);
    CHECK(h->mark.time == 3000); /* time of event 15, not the max time seen */
    CHECK_EQ_U64(h->mark.epoch, 4);
    CHECK_EQ_U64(opstate_hwm_in_flight(h), 1);
    CHECK_EQ_U64(opstate_hwm_ack(h, 13), OPSTATE_OK); /* below the mark, never delivered */
    CHECK_EQ_U64(opstate_hwm_ack(h, 19), OPSTATE_NOT_FOUND);
    CHECK_EQ_U64(opstate_hwm_ack(h, 21), OPSTATE_NOT_FOUND);
    CHECK_EQ_U64(opstate_hwm_ack(h, 20), OPSTATE_OK);
    CHECK_EQ_U64(h->mark.seq, 20);
    CHECK(h->mark.time == 4000);
    CHECK_EQ_U64(opstate_hwm_in_flight(h), 0);
}

TEST(hwm, zero_init_is_a_valid_start)
{
    opstate_hwm *h = &g_hwm;
    memset(h, 0, sizeof *h);
    CHECK_EQ_U64(opstate_hwm_in_flight(h), 0);
    CHECK_EQ_U64(opstate_hwm_deliver(h, 0, 1), OPSTATE_OUT_OF_ORDER);
    CHECK_EQ_U64(opstate_hwm_ack(h, 1), OPSTATE_NOT_FOUND);
    CHECK_EQ_U64(opstate_hwm_ack(h, 0), OPSTATE_OK);
    CHECK_EQ_U64(opstate_hwm_deliver(h, 1, 11), OPSTATE_OK);
    CHECK_EQ_U64(opstate_hwm_deliver(h, 2, 22), OPSTATE_OK);
    CHECK_EQ_U64(opstate_hwm_ack(h, 2), OPSTATE_OK);
    CHECK_EQ_U64(h->mark.seq, 0);
    CHECK_EQ_U64(opstate_hwm_ack(h, 1), OPSTATE_OK);
    CHECK_EQ_U64(h->mark.seq, 2);
    CHECK(h->mark.time == 22);
}

TEST(hwm, out_of_order_leaves_struct_untouched)
{
    opstate_hwm *h = &g_hwm;
    hwm_oracle *o = &g_oracle;
    opstate_position start = { 10, 100, 1 };
    hwm_fail = 0;
    opstate_hwm_init(h, start);
    ho_init(o, start);
    CASE("at and below the initial mark");
    CHECK_EQ_U64(do_deliver(h, o, 10, 1), OPSTATE_OUT_OF_ORDER);
    CHECK_EQ_U64(do_deliver(h, o, 9, 1), OPSTATE_OUT_OF_ORDER);
    CHECK_EQ_U64(do_deliver(h, o, 0, 1), OPSTATE_OUT_OF_ORDER);
    CASE("equal to and below the last delivery");
    CHECK_EQ_U64(do_deliver(h, o, 11, 1), OPSTATE_OK);
    CHECK_EQ_U64(do_deliver(h, o, 11, 2), OPSTATE_OUT_OF_ORDER);
    CHECK_EQ_U64(do_deliver(h, o, 15, 3), OPSTATE_OK);
    CHECK_EQ_U64(do_deliver(h, o, 14, 3), OPSTATE_OUT_OF_ORDER);
    CHECK_EQ_U64(do_deliver(h, o, 12, 3), OPSTATE_OUT_OF_ORDER);
    CASE("after the mark passed everything");
    CHECK_EQ_U64(do_ack(h, o, 15), OPSTATE_OK);
    CHECK_EQ_U64(do_ack(h, o, 11), OPSTATE_OK);
    CHECK_EQ_U64(h->mark.seq, 15);
    CHECK_EQ_U64(do_deliver(h, o, 15, 3), OPSTATE_OUT_OF_ORDER);
    CHECK_EQ_U64(do_deliver(h, o, 13, 3), OPSTATE_OUT_OF_ORDER);
    CHECK_EQ_U64(do_deliver(h, o, 16, 3), OPSTATE_OK);
    CHECK_EQ_U64(do_deliver(h, o, UINT64_MAX, 3), OPSTATE_OK);
    CHECK_EQ_U64(do_deliver(h, o, UINT64_MAX, 3), OPSTATE_OUT_OF_ORDER);
    CHECK_EQ_U64(do_ack(h, o, UINT64_MAX - 1), OPSTATE_NOT_FOUND);
    CHECK_EQ_U64(do_ack(h, o, UINT64_MAX), OPSTATE_OK);
    CHECK_EQ_U64(do_ack(h, o, 16), OPSTATE_OK);
    CHECK_EQ_U64(h->mark.seq, UINT64_MAX);
    CASE("summary");
    CHECK_EQ_U64(hwm_fail, 0);
}

TEST(hwm, window_full)
{
    opstate_hwm *h = &g_hwm;
    hwm_oracle *o = &g_oracle;
    opstate_position start = { 10, 5, 3 };
    uint64_t i, base = 11;
    const uint64_t cap = OPSTATE_HWM_CAPACITY;
    hwm_fail = 0;
    opstate_hwm_init(h, start);
    ho_init(o, start);
    CASE("fill to capacity");
    for (i = 0; i < cap; i++) CHECK_EQ_U64(do_deliver(h, o, base + 2 * i, (int64_t)(1000 + i)), OPSTATE_OK);
    CHECK_EQ_U64(opstate_hwm_in_flight(h), cap);
    CASE("one more: WINDOW_FULL, untouched");
    CHECK_EQ_U64(do_deliver(h, o, base + 2 * cap, 1), OPSTATE_WINDOW_FULL);
    CASE("ack all but the oldest: still full");
    for (i = cap; i-- > 1;) CHECK_EQ_U64(do_ack(h, o, base + 2 * i), OPSTATE_OK);
    CHECK_EQ_U64(h->mark.seq, 10);
    CHECK_EQ_U64(opstate_hwm_in_flight(h), cap);
    CHECK_EQ_U64(do_deliver(h, o, base + 2 * cap, 1), OPSTATE_WINDOW_FULL);
    CHECK_EQ_U64(do_ack(h, o, base + 2 * cap), OPSTATE_NOT_FOUND);
    CHECK_EQ_U64(do_ack(h, o, base + 1), OPSTATE_NOT_FOUND); /* in a gap */
    CASE("ack the oldest: the mark jumps over everything");
    CHECK_EQ_U64(do_ack(h, o, base), OPSTATE_OK);
    CHECK_EQ_U64(h->mark.seq, base + 2 * (cap - 1));
    CHECK(h->mark.time == (int64_t)(1000 + cap - 1));
    CHECK_EQ_U64(opstate_hwm_in_flight(h), 0);
    CASE("fill again past the ring end, one slot free");
    base = h->mark.seq + 5;
    for (i = 0; i < cap - 1; i++) CHECK_EQ_U64(do_deliver(h, o, base + i, (int64_t)i), OPSTATE_OK);
    CHECK_EQ_U64(do_ack(h, o, base), OPSTATE_OK);
    CHECK_EQ_U64(do_deliver(h, o, base + cap - 1, 7), OPSTATE_OK);
    CHECK_EQ_U64(do_deliver(h, o, base + cap, 7), OPSTATE_OK); /* the acked one was passed */
    CHECK_EQ_U64(do_deliver(h, o, base + cap + 1, 7), OPSTATE_WINDOW_FULL);
    CASE("summary");
    CHECK_EQ_U64(hwm_fail, 0);
}

TEST(hwm, ring_wraparound_random)
{
    opstate_hwm *h = &g_hwm;
    hwm_oracle *o = &g_oracle;
    opstate_position start = { 1, -3, 12 };
    uint32_t rng = 12345u;
    size_t next = 0, steps, fulls = 0;
    const size_t total = 3000;
    hwm_fail = 0;
    opstate_hwm_init(h, start);
    ho_init(o, start);
    for (steps = 0; steps < 40000 && (next < total || o->scan_from < o->n); steps++) {
        uint32_t r;
        rng = rng * 1103515245u + 12345u;
        r = rng >> 16;
        if (next < total && r % 3 != 0) {
            uint64_t seq = 3 * (uint64_t)next + 2 + (next % 2);
            int64_t t = (int64_t)((next * 7919u) % 1000u) - 500;
            opstate_result res = do_deliver(h, o, seq, t);
            if (res == OPSTATE_OK) next++;
            else if (res == OPSTATE_WINDOW_FULL) fulls++;
        } else if (o->scan_from < o->n) {
            size_t span = o->n - o->scan_from, idx;
            if (r % 8 == 1) idx = o->scan_from; /* the oldest unacked */
            else idx = o->scan_from + (size_t)(r / 8) % span;
            do_ack(h, o, o->seq[idx]);
            if (r % 16 == 5) do_ack(h, o, o->seq[idx] + 1); /* a gap or the next one */
            if (r % 32 == 7) do_ack(h, o, o->seq[idx] - 1);
        }
    }
    CASE("summary");
    CHECK_EQ_U64(hwm_fail, 0);
    CHECK_EQ_U64(next, total); /* ~12 trips around the ring */
    CHECK(fulls > 0);          /* WINDOW_FULL was hit along the way */
    CHECK_EQ_U64(opstate_hwm_in_flight(h), 0);
    CHECK_EQ_U64(h->mark.seq, o->seq[total - 1]);
}

/* Deliver and ack strictly in order many times the capacity: the ring wraps
   with one event in flight at a time and with a full window at a time. */
TEST(hwm, ring_wraparound_in_order)
{
    opstate_hwm *h = &g_hwm;
    hwm_oracle *o = &g_oracle;
    opstate_position start = { 0, 0, 0 };
    uint64_t s;
    const uint64_t cap = OPSTATE_HWM_CAPACITY;
    hwm_fail = 0;
    opstate_hwm_init(h, start);
    ho_init(o, start);
    for (s = 1; s <= 3 * cap + 7; s++) {
        do_deliver(h, o, s * 10, (int64_t)s);
        do_ack(h, o, s * 10);
    }
    CHECK_EQ_U64(h->mark.seq, (3 * cap + 7) * 10);
    /* now a full window, acked newest first, three times over */
    ho_init(o, h->mark); /* oracle restarts from the current mark */
    {
        int round;
        uint64_t base = h->mark.seq + 1, i;
        for (round = 0; round < 3; round++) {
            for (i = 0; i < cap; i++) do_deliver(h, o, base + i, (int64_t)(base + i));
            do_deliver(h, o, base + cap, 0); /* WINDOW_FULL */
            for (i = cap; i-- > 0;) do_ack(h, o, base + i);
            CHECK_EQ_U64(h->mark.seq, base + cap - 1);
            base += cap + 3;
            if (o->n + cap + 1 > HO_MAX) ho_init(o, h->mark);
        }
    }
    CASE("summary");
    CHECK_EQ_U64(hwm_fail, 0);
}
