/* driver_suite.h — the consumer-driver suite (opstate.h sections >>consumer
   and >>replay, over >>log and >>store), written once against a small
   backend abstraction so the same tests run unchanged over every log/store
   pair: memory (test_driver_mem.c), LMDB and NATS JetStream.

   A backend's test file:

       #include "driver_suite.h"
       static const driver_backend *my_backend(void) { ... }
       DRIVER_SUITE(mine, my_backend)     -> tests "driver_mine.<name>"

   Everything here is static (and marked unused), so several test files of
   one program may each include the header and instantiate the suite for
   their own backend.

   HOW A CRASH IS SIMULATED (the same for every backend). Each test puts a
   wrapper between the consumer and the backend's store, and an observer
   on it:

       consumer -> fault_store -> backend store
                        `-> drv_shadow (sees each committed flush and drop)

   The fault_store (fault_store.h) passes everything through (ops = 0) until
   a crash point. drv_crash() arms it so that EVERY flush fails, then calls
   opstate_consumer_close(): the consumer is freed, but its final flush
   never reaches the backend, exactly as if the process had died right after
   its last committed flush. The wrapper is then disarmed and a new consumer
   opens the very same backend store. A crash "inside" a flush (the commit
   did not happen) is the same thing armed one poll earlier.
   The same wrapper injects the store failures of the failure-policy tests.

   drv_shadow records what a DELTA store (the LMDB layout: each flush
   commits only the dirty keys) would hold: the sum of the dirty sets of the
   committed flushes. The memory store re-encodes the whole fold on every
   flush and so would hide a change that was never marked dirty, or whose
   dirty mark a failed flush dropped; drv_check_store() compares both the
   backend's stored state and the shadow with the expected state.

   Expected states come from opstate_replay over the same log (with an apply
   that keeps only chosen sequences), and in the crash test also from an
   independent model folded straight from the workload table.

   THE TESTS (suite "driver_<backend>")
     crash_every_step            crash after every event and inside every flush
                                 (poll step 1, 2, 5; flush every 3): state ==
                                 replay == model, nothing at or below the
                                 restored mark applied again
     publisher_duplicate         a retry outside the log's duplicate window is
                                 skipped by the consumer's window, across a crash
     restore_decisions           every restore-decision row end to end (decision,
                                 reason, gap, resync, state, counts, durability
                                 of the start across a crash right after open)
     keep_applies_nothing_twice  mode keep + an earlier start, more events than
                                 the dedup window
     expired_twins               a key deleted in the evicted gap: removed with
                                 resync, survives with no_resync, removed by the
                                 rebuild a custom apply gets
     flush_failures_heal, load_drop_errors, explicit_flush_errors
                                 the failure policy
     out_of_order_acks, ack_shuffle_crash, redelivery, deferred_window_full
                                 DEFER / ack / high-water mark / redelivery
     filtered_consumer           gaps that are other subjects are not evictions
     from_time_is_a_start        a from-time start is a start, not a filter
     replay_cutoffs, replay_deterministic_end
                                 point-in-time replay
     poison_stop, poison_skip    poison policy and its record
     live_gap, live_gap_all_evicted, live_stream_recreated
                                 eviction and recreation under a live consumer
     schema_versions             newer refused, older upgraded or replayed
     fault_log                   a transport that drops, duplicates, reorders
                                 and delays deliveries and fails reads
                                 (tests/fault_log.h), many seeds, filtered or
                                 not, with and without a crash: every event
                                 applied exactly once, state == the fold
     unproven_hole_stops         a hole never vouched for: bounded re-reads,
                                 then GAP; the mark does not pass it
     compaction_off_flush_path   the store's flush never compacts; the consumer
                                 compacts a due store in an idle poll, an
                                 overdue one at once, retries a failed one,
                                 and a read-through fold forgets what the
                                 store absorbed
     evicted_between_info_and_read
                                 retention evicts inside the read a poll
                                 makes: the hole is an eviction (resync),
                                 never taken as other subjects
     rereads_counted_per_hole    many holes, each vouched for only when re-read:
                                 the re-read bound is per hole, no GAP */
#ifndef DRIVER_SUITE_H
#define DRIVER_SUITE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <stdbool.h>

#include "../opstate.h"
#include "fault_log.h"
#include "fault_store.h"
#include "test_bytes.h"
#include "runner.h"

#if defined(__GNUC__) || defined(__clang__)
#define DRV_STATIC static __attribute__((unused))
#else
#define DRV_STATIC static
#endif

/* ---- the backend abstraction ------------------------------------------ */

typedef struct driver_env_options {
    /* The log's duplicate window (publish time); 0: the backend's default.
       A backend whose clock cannot be moved past it keeps its default (the
       tests then append the duplicate without an id, which no log can
       dedup). */
    int64_t duplicate_window_ns;
} driver_env_options;

typedef struct driver_backend {
    const char *name;
    void *user; /* backend-wide, e.g. a server URL */
    /* A fresh, empty environment: one log (stream) and one store. NULL on
       failure. */
    void *(*create)(void *user, const driver_env_options *opts);
    /* The log of env; valid until destroy. */
    opstate_log (*log)(void *env);
    /* The store of env; the SAME persistent store every call (it survives
       a consumer that is dropped without a final flush). */
    opstate_store (*store)(void *env);
    /* Evicts every message below below_seq, as retention does. */
    void (*purge)(void *env, uint64_t below_seq);
    /* Deletes and recreates the stream: empty, sequences restart at 1,
       another epoch. */
    void (*recreate)(void *env);
    /* Optional: the publish time of the next appends (ns). NULL, or false
       returned: the log's clock cannot be set (tests then use the times
       the log reports). */
    bool (*set_clock)(void *env, int64_t publish_ns);
    void (*destroy)(void *env);
    uint32_t fault_seeds; /* seeds the fault_log test runs (0: 1000) */
    /* The store's compaction bound in flushes: due at this many delta
       records, overdue at 4 times it (0: the store never compacts). */
    uint32_t compact_flushes;
} driver_backend;

/* ---- small helpers ----------------------------------------------------- */

#define DRV_MAX_EVENTS 700
#define DRV_PREFIX "ops"
#define DRV_KIND "host"
#define DRV_EVENT_NS INT64_C(1600000000000000000) /* event times (not publish times) */
#define DRV_SESSIONS 3
#define DRV_DUP_WINDOW_NS INT64_C(1000000) /* the log's duplicate window in publisher_duplicate */

/* A set of sequences 0..255. */
typedef struct drv_set {
    uint64_t w[4];
} drv_set;

DRV_STATIC void drv_set_add(drv_set *s, uint64_t seq)
{
    if (seq < 256) s->w[seq / 64] |= (uint64_t)1 << (seq % 64);
}

DRV_STATIC void drv_set_range(drv_set *s, uint64_t lo, uint64_t hi)
{
    for (; lo && lo <= hi; lo++) drv_set_add(s, lo);
}

DRV_STATIC bool drv_set_has(const drv_set *s, uint64_t seq)
{
    return seq < 256 && ((s->w[seq / 64] >> (seq % 64)) & 1u) != 0;
}

/* Copies of kv items, for comparisons. */
typedef struct drv_item {
    uint8_t *key, *val;
    size_t klen, vlen;
    uint64_t seq;
    int64_t time;
    bool deleted;
} drv_item;

typedef struct drv_list {
    drv_item *v;
    size_t n, cap;
    bool oom;
} drv_list;

DRV_STATIC bool drv_list_add(void *user, const opstate_kv_item *it)
{
    drv_list *l = (drv_list *)user;
    drv_item *d;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        drv_item *v = (drv_item *)realloc(l->v, cap * sizeof *v);
        if (!v) {
            l->oom = true;
            return false;
        }
        l->v = v;
        l->cap = cap;
    }
    d = &l->v[l->n];
    d->key = (uint8_t *)malloc(it->key.len + 1);
    d->val = (uint8_t *)malloc(it->value.len + 1);
    if (!d->key || !d->val) {
        free(d->key);
        free(d->val);
        l->oom = true;
        return false;
    }
    if (it->key.len) memcpy(d->key, it->key.ptr, it->key.len);
    if (it->value.len) memcpy(d->val, it->value.ptr, it->value.len);
    d->klen = it->key.len;
    d->vlen = it->value.len;
    d->seq = it->position.seq;
    d->time = it->position.time;
    d->deleted = it->deleted;
    l->n++;
    return true;
}

DRV_STATIC void drv_list_free(drv_list *l)
{
    size_t i;
    for (i = 0; i < l->n; i++) {
        free(l->v[i].key);
        free(l->v[i].val);
    }
    free(l->v);
    memset(l, 0, sizeof *l);
}

/* Printable form of a key or value (0x00 separators become '/'). */
DRV_STATIC const char *drv_show(const uint8_t *p, size_t n, char *out, size_t cap)
{
    size_t i, o = 0;
    for (i = 0; i < n && o + 1 < cap; i++) out[o++] = p[i] == 0 ? '/' : (p[i] < 0x20 || p[i] > 0x7e) ? '?' : (char)p[i];
    out[o] = '\0';
    return out;
}

/* true when both folds hold the same keys and values (and, with
   positions, the same seq and time per key). Prints the first difference. */
DRV_STATIC bool drv_kv_equal(const opstate_kv *got, const opstate_kv *want, bool positions, const char *what)
{
    drv_list a, b;
    size_t i;
    bool same = true;
    char k[96], v1[64], v2[64];
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    if (!got || !want) return false;
    if (opstate_kv_iterate(got, drv_list_add, &a) != OPSTATE_OK || opstate_kv_iterate(want, drv_list_add, &b) != OPSTATE_OK ||
        a.oom || b.oom) {
        printf("    %s: iteration failed\n", what);
        same = false;
    }
    for (i = 0; same && i < a.n && i < b.n; i++) {
        const drv_item *x = &a.v[i], *y = &b.v[i];
        if (x->klen != y->klen || memcmp(x->key, y->key, x->klen) != 0) {
            printf("    %s: key #%lu is \"%s\"", what, (unsigned long)i, drv_show(x->key, x->klen, k, sizeof k));
            printf(", expected \"%s\"\n", drv_show(y->key, y->klen, k, sizeof k));
            same = false;
        } else if (x->vlen != y->vlen || memcmp(x->val, y->val, x->vlen) != 0) {
            printf("    %s: key \"%s\" = \"%s\", expected \"%s\"\n", what, drv_show(x->key, x->klen, k, sizeof k),
                   drv_show(x->val, x->vlen, v1, sizeof v1), drv_show(y->val, y->vlen, v2, sizeof v2));
            same = false;
        } else if (positions && (x->seq != y->seq || x->time != y->time)) {
            printf("    %s: key \"%s\" at seq %lu, expected seq %lu (or time differs)\n", what,
                   drv_show(x->key, x->klen, k, sizeof k), (unsigned long)x->seq, (unsigned long)y->seq);
            same = false;
        }
    }
    if (same && a.n != b.n) {
        const drv_list *more = a.n > b.n ? &a : &b;
        printf("    %s: %lu keys, expected %lu; first extra %s key \"%s\"\n", what, (unsigned long)a.n, (unsigned long)b.n,
               a.n > b.n ? "unexpected" : "missing", drv_show(more->v[i].key, more->v[i].klen, k, sizeof k));
        same = false;
    }
    drv_list_free(&a);
    drv_list_free(&b);
    return same;
}

DRV_STATIC opstate_kv *drv_new_kv(void)
{
    opstate_kv *kv = NULL;
    if (opstate_kv_create(NULL, &kv) != OPSTATE_OK) return NULL;
    return kv;
}

/* ---- the shadow store (what a delta store would hold) ------------------ */

typedef struct drv_shadow {
    opstate_store inner; /* the backend's store */
    opstate_kv *kv;      /* sum of the dirty sets of committed flushes */
} drv_shadow;

/* The fault store's observer: a flush of the backend committed the dirty
   keys of kv. */
DRV_STATIC void drv_shadow_flushed(void *observer, const opstate_kv *kv)
{
    drv_shadow *s = (drv_shadow *)observer;
    drv_list dirty;
    size_t i;
    memset(&dirty, 0, sizeof dirty);
    opstate_kv_dirty_iterate(kv, drv_list_add, &dirty);
    CHECK(!dirty.oom);
    for (i = 0; i < dirty.n; i++) {
        opstate_bytes key, val;
        opstate_position pos;
        key.ptr = dirty.v[i].key;
        key.len = dirty.v[i].klen;
        val.ptr = dirty.v[i].val;
        val.len = dirty.v[i].vlen;
        pos.seq = dirty.v[i].seq;
        pos.time = dirty.v[i].time;
        pos.epoch = 0;
        CHECK((dirty.v[i].deleted ? opstate_kv_delete(s->kv, key, pos) : opstate_kv_put(s->kv, key, val, pos)) ==
              OPSTATE_OK);
    }
    opstate_kv_mark_clean(s->kv);
    drv_list_free(&dirty);
}

DRV_STATIC void drv_shadow_dropped(void *observer) { opstate_kv_clear(((drv_shadow *)observer)->kv); }

/* ---- the test context -------------------------------------------------- */

typedef struct drv_ctx {
    const driver_backend *b;
    void *env;
    opstate_log log;
    drv_shadow shadow;
    fault_store faulty; /* around the backend's store, the shadow its observer; ops 0 = pass through */
    opstate_store store;   /* what consumers use */
    bool clocked;          /* set_clock works */
    /* what was published, in publish order */
    uint32_t n, ident;
    opstate_id ids[DRV_MAX_EVENTS];
    uint64_t seqs[DRV_MAX_EVENTS];
    /* apply accounting (drv_apply) */
    unsigned session;
    uint32_t applies[DRV_SESSIONS][DRV_MAX_EVENTS];
    uint32_t foreign; /* applied events whose id was never published */
    uint64_t delivered[DRV_MAX_EVENTS];
    uint32_t ndelivered;
    drv_set defer; /* sequences drv_apply answers DEFER for */
    /* diagnostics */
    uint32_t log_lines, log_warn, log_flush_failed;
    /* schema upgrade callback */
    uint32_t upgrades, upgraded_from;
    opstate_result upgrade_result;
    /* replay progress callback */
    uint32_t progress_calls, progress_appends;
    uint64_t progress_start, progress_end, progress_count, progress_current;
    bool progress_sane;
} drv_ctx;

DRV_STATIC void drv_log(void *user, opstate_diag_level level, const char *message)
{
    drv_ctx *x = (drv_ctx *)user;
    x->log_lines++;
    if (level <= OPSTATE_DIAG_WARN) x->log_warn++;
    if (strncmp(message, "flush failed", 12) == 0) x->log_flush_failed++;
    if (getenv("DRV_VERBOSE")) printf("    log[%d] %s\n", (int)level, message);
}

DRV_STATIC drv_ctx *drv_setup(const driver_backend *b, int64_t duplicate_window_ns)
{
    drv_ctx *x;
    driver_env_options o;
    if (!b) {
        runner_fail(__FILE__, __LINE__, "backend unavailable");
        return NULL;
    }
    x = (drv_ctx *)calloc(1, sizeof *x);
    if (!x) return NULL;
    x->b = b;
    memset(&o, 0, sizeof o);
    o.duplicate_window_ns = duplicate_window_ns;
    x->env = b->create(b->user, &o);
    if (!x->env || !(x->shadow.kv = drv_new_kv())) {
        runner_fail(__FILE__, __LINE__, "backend create");
        if (x->env) b->destroy(x->env);
        free(x);
        return NULL;
    }
    x->log = b->log(x->env);
    x->shadow.inner = b->store(x->env);
    x->faulty.inner = x->shadow.inner;
    x->faulty.flushed = drv_shadow_flushed;
    x->faulty.dropped = drv_shadow_dropped;
    x->faulty.observer = &x->shadow;
    x->store = fault_store_iface(&x->faulty);
    x->clocked = b->set_clock && b->set_clock(x->env, INT64_C(1700000000000000000));
    x->progress_sane = true;
    return x;
}

DRV_STATIC void drv_teardown(drv_ctx *x)
{
    if (!x) return;
    x->b->destroy(x->env);
    opstate_kv_destroy(x->shadow.kv);
    free(x);
}

/* Names the current row for failure messages (static: it must outlive
   the context the row ran in). */
static char drv_label_buf[160];

DRV_STATIC void drv_label(drv_ctx *x, const char *a, const char *b, unsigned long n1, unsigned long n2)
{
    (void)x;
    snprintf(drv_label_buf, sizeof drv_label_buf, "%s %s %lu %lu", a, b ? b : "", n1, n2);
    CASE(drv_label_buf);
}

/* An event with a unique time-ordered id (distinct time and entropy per
   ident). val NULL: no data. */
DRV_STATIC opstate_event drv_event(const char *scope, const char *key, uint32_t op, const char *val, uint32_t ident)
{
    opstate_event ev;
    uint8_t entropy[8];
    memset(&ev, 0, sizeof ev);
    ev.scope = str(scope);
    ev.kind = str(DRV_KIND);
    ev.key = str(key);
    ev.op = op;
    ev.data = str(val);
    ev.has_time = true;
    ev.time = DRV_EVENT_NS + (int64_t)ident * 1000;
    entropy[0] = 0x15;
    entropy[1] = 0x9a;
    entropy[2] = (uint8_t)(ident >> 24);
    entropy[3] = (uint8_t)(ident >> 16);
    entropy[4] = (uint8_t)(ident >> 8);
    entropy[5] = (uint8_t)ident;
    entropy[6] = 0xc3;
    entropy[7] = (uint8_t)(ident * 37u);
    CHECK(opstate_id_time_ordered(ev.time, entropy, &ev.id) == OPSTATE_OK);
    return ev;
}

/* Publishes ev with opstate_publish; records its id and sequence.
   Returns the sequence, 0 on failure. */
DRV_STATIC uint64_t drv_publish_ev(drv_ctx *x, const opstate_event *ev)
{
    opstate_append_result ar;
    opstate_result r;
    memset(&ar, 0, sizeof ar);
    r = opstate_publish(&x->log, str(DRV_PREFIX), ev, NULL, NULL, &ar, NULL);
    CHECK(r == OPSTATE_OK);
    CHECK(!ar.duplicate);
    if (r != OPSTATE_OK || x->n == DRV_MAX_EVENTS) return 0;
    x->ids[x->n] = ev->id;
    x->seqs[x->n] = ar.seq;
    x->n++;
    return ar.seq;
}

DRV_STATIC uint64_t drv_publish(drv_ctx *x, const char *scope, const char *key, uint32_t op, const char *val)
{
    opstate_event ev = drv_event(scope, key, op, val, ++x->ident);
    return drv_publish_ev(x, &ev);
}

/* Appends raw bytes under a subject WITHOUT a message id (no log can
   dedup it). Returns the sequence, 0 on failure. */
DRV_STATIC uint64_t drv_append_raw(drv_ctx *x, const char *subject, const uint8_t *data, size_t len)
{
    opstate_append_options o;
    opstate_append_result ar;
    opstate_bytes s, d;
    memset(&o, 0, sizeof o);
    memset(&ar, 0, sizeof ar);
    s = str(subject);
    d.ptr = data;
    d.len = len;
    if (x->log.append(x->log.user, s, d, &o, &ar, NULL) != OPSTATE_OK) {
        runner_fail(__FILE__, __LINE__, "raw append");
        return 0;
    }
    return ar.seq;
}

/* Encodes ev under its subject and appends it without an id. flip > 0:
   the byte `flip` bytes before the end of the encoding is flipped first
   (5: the last payload byte, just before the CRC: a checksum mismatch). */
DRV_STATIC uint64_t drv_append_event_raw(drv_ctx *x, const opstate_event *ev, size_t flip)
{
    char subject[256];
    uint8_t data[512];
    size_t slen = 0, dlen = 0;
    if (opstate_subject_build(DRV_PREFIX, strlen(DRV_PREFIX), ev->scope, ev->kind, ev->key, subject, sizeof subject - 1,
                              &slen, NULL) != OPSTATE_OK ||
        opstate_event_encode(ev, data, sizeof data, &dlen, NULL) != OPSTATE_OK) {
        runner_fail(__FILE__, __LINE__, "encode");
        return 0;
    }
    subject[slen] = '\0';
    if (flip > 0 && flip <= dlen) data[dlen - flip] ^= 0x20;
    return drv_append_raw(x, subject, data, dlen);
}

DRV_STATIC int drv_index(const drv_ctx *x, const opstate_id *id)
{
    uint32_t i;
    for (i = 0; i < x->n; i++)
        if (opstate_id_equal(&x->ids[i], id)) return (int)i;
    return -1;
}

DRV_STATIC void drv_reset_counts(drv_ctx *x)
{
    memset(x->applies, 0, sizeof x->applies);
    x->foreign = 0;
    x->ndelivered = 0;
    x->session = 0;
    memset(&x->defer, 0, sizeof x->defer);
}

/* The counting apply: the default apply, plus a count per event id and
   session, plus DEFER for the sequences in x->defer. */
DRV_STATIC opstate_apply_outcome drv_apply(void *user, opstate_kv *kv, const opstate_event *ev)
{
    drv_ctx *x = (drv_ctx *)user;
    int i = drv_index(x, &ev->id);
    opstate_apply_outcome o;
    if (i < 0) x->foreign++;
    else x->applies[x->session % DRV_SESSIONS][i]++;
    if (x->ndelivered < DRV_MAX_EVENTS) x->delivered[x->ndelivered++] = ev->position.seq;
    o = opstate_apply_default(NULL, kv, ev);
    if (o == OPSTATE_APPLY_DONE && drv_set_has(&x->defer, ev->position.seq)) o = OPSTATE_APPLY_DEFER;
    return o;
}

/* Apply for expected folds: the default apply for the chosen sequences,
   nothing for the others. */
DRV_STATIC opstate_apply_outcome drv_fold_apply(void *user, opstate_kv *kv, const opstate_event *ev)
{
    const drv_set *only = (const drv_set *)user;
    if (only && !drv_set_has(only, ev->position.seq)) return OPSTATE_APPLY_DONE;
    return opstate_apply_default(NULL, kv, ev);
}

/* Folds the retained log into `into` (only = NULL: every event, with the
   plain default apply). */
DRV_STATIC bool drv_fold_into(drv_ctx *x, const drv_set *only, opstate_kv *into)
{
    opstate_replay_config rc;
    opstate_replay_result rr;
    drv_set copy;
    memset(&rc, 0, sizeof rc);
    rc.log = x->log;
    if (only) {
        copy = *only;
        rc.apply = drv_fold_apply;
        rc.apply_user = &copy;
    }
    if (!into || opstate_replay(&rc, into, &rr, NULL) != OPSTATE_OK) {
        runner_fail(__FILE__, __LINE__, "expected fold (opstate_replay)");
        return false;
    }
    return true;
}

DRV_STATIC opstate_kv *drv_fold(drv_ctx *x, const drv_set *only)
{
    opstate_kv *kv = drv_new_kv();
    if (kv && !drv_fold_into(x, only, kv)) {
        opstate_kv_destroy(kv);
        kv = NULL;
    }
    return kv;
}

DRV_STATIC opstate_kv *drv_fold_ranges(drv_ctx *x, uint64_t lo1, uint64_t hi1, uint64_t lo2, uint64_t hi2)
{
    drv_set s;
    memset(&s, 0, sizeof s);
    drv_set_range(&s, lo1, hi1);
    drv_set_range(&s, lo2, hi2);
    return drv_fold(x, &s);
}

DRV_STATIC opstate_stream_info drv_info(drv_ctx *x)
{
    opstate_stream_info si;
    memset(&si, 0, sizeof si);
    CHECK(x->log.info(x->log.user, &si, NULL) == OPSTATE_OK);
    return si;
}

/* The publish time the log reports for seq. */
DRV_STATIC int64_t drv_time_of(drv_ctx *x, uint64_t seq)
{
    opstate_log_message m;
    size_t n = 0;
    opstate_bytes all = {NULL, 0};
    memset(&m, 0, sizeof m);
    CHECK(x->log.read(x->log.user, all, seq, 0, &m, 1, &n, NULL) == OPSTATE_OK);
    CHECK(n == 1 && m.position.seq == seq);
    return m.position.time;
}

/* The kv key the default apply uses for (scope, key). */
DRV_STATIC opstate_bytes drv_key(const char *scope, const char *key, uint8_t *buf, size_t cap)
{
    opstate_event ev;
    opstate_bytes k = {NULL, 0};
    memset(&ev, 0, sizeof ev);
    ev.scope = str(scope);
    ev.kind = str(DRV_KIND);
    ev.key = str(key);
    if (opstate_kv_event_key(&ev, buf, cap, &k.len) == OPSTATE_OK) k.ptr = buf;
    return k;
}

/* true when the fold holds (scope, key); *val gets the value. */
DRV_STATIC bool drv_has(const opstate_kv *kv, const char *scope, const char *key, const char *val)
{
    uint8_t buf[128];
    opstate_kv_item it;
    if (opstate_kv_get(kv, drv_key(scope, key, buf, sizeof buf), &it) != OPSTATE_OK) return false;
    return !val || (it.value.len == strlen(val) && memcmp(it.value.ptr, val, it.value.len) == 0);
}

DRV_STATIC opstate_consumer_config drv_cfg(drv_ctx *x)
{
    opstate_consumer_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.log = x->log;
    cfg.store = x->store;
    cfg.schema.version = 1;
    cfg.flush_interval_ns = -1; /* flushes where a test asks for them, never by time */
    cfg.diag.fn = drv_log;
    cfg.diag.user = x;
    return cfg;
}

/* Polls until the log has nothing more; sums the poll results. */
DRV_STATIC opstate_result drv_drain(opstate_consumer *c, uint32_t max, opstate_poll_result *sum)
{
    opstate_poll_result res, total;
    unsigned guard;
    opstate_result r = OPSTATE_TIMEOUT;
    memset(&total, 0, sizeof total);
    for (guard = 0; guard < 100000; guard++) {
        memset(&res, 0, sizeof res);
        r = opstate_consumer_poll(c, max, 0, &res, NULL);
        total.applied += res.applied;
        total.skipped += res.skipped;
        total.poison += res.poison;
        if (r != OPSTATE_OK) break;
        if (res.caught_up) {
            total.caught_up = true;
            break;
        }
    }
    if (guard == 100000) r = OPSTATE_TIMEOUT;
    if (sum) *sum = total;
    return r;
}

/* Every later flush fails with `error` (0: IO) until disarmed. */
DRV_STATIC void drv_fail_flushes(drv_ctx *x, opstate_result error)
{
    x->faulty.ops = FAULT_STORE_FLUSH;
    x->faulty.after = x->faulty.calls;
    x->faulty.count = 0;
    x->faulty.error = error;
}

/* The next `count` operations in `ops` fail once `after` more succeeded. */
DRV_STATIC void drv_fail(drv_ctx *x, unsigned ops, uint64_t after, uint64_t count, opstate_result error)
{
    x->faulty.ops = ops;
    x->faulty.calls = 0;
    x->faulty.failures = 0;
    x->faulty.after = after;
    x->faulty.count = count;
    x->faulty.error = error;
}

DRV_STATIC void drv_disarm(drv_ctx *x) { x->faulty.ops = 0; }

/* Drops the consumer as a crash would: nothing after its last committed
   flush reaches the store (see the top of this file). */
DRV_STATIC void drv_crash(drv_ctx *x, opstate_consumer *c)
{
    fault_store saved = x->faulty;
    drv_fail_flushes(x, OPSTATE_IO);
    (void)opstate_consumer_close(c, NULL);
    x->faulty = saved;
}

/* The meta committed in the backend store; seq 0 when nothing is stored. */
DRV_STATIC opstate_snapshot_meta drv_committed(drv_ctx *x)
{
    opstate_snapshot_meta m;
    opstate_result r;
    memset(&m, 0, sizeof m);
    r = x->shadow.inner.read_meta(x->shadow.inner.user, &m, NULL);
    if (r != OPSTATE_OK) {
        CHECK(r == OPSTATE_NOT_FOUND);
        memset(&m, 0, sizeof m);
    }
    return m;
}

/* Empties the backend store (and the shadow) between runs on one log. */
DRV_STATIC void drv_reset_store(drv_ctx *x)
{
    drv_disarm(x);
    CHECK(x->shadow.inner.drop(x->shadow.inner.user, NULL) == OPSTATE_OK);
    opstate_kv_clear(x->shadow.kv);
}

/* The stored state (loaded from the backend store) and the delta model
   both equal `want`. */
DRV_STATIC bool drv_check_store(drv_ctx *x, const opstate_kv *want, bool positions)
{
    opstate_kv_config kc;
    opstate_kv *loaded = NULL;
    opstate_snapshot_meta meta;
    opstate_result r;
    bool ok = true;
    memset(&kc, 0, sizeof kc);
    kc.base = x->shadow.inner.base ? x->shadow.inner.base(x->shadow.inner.user) : NULL;
    if (opstate_kv_create(&kc, &loaded) != OPSTATE_OK) return false;
    r = x->shadow.inner.load(x->shadow.inner.user, loaded, &meta, NULL, NULL);
    if (r != OPSTATE_OK && !(r == OPSTATE_NOT_FOUND && opstate_kv_count(want) == 0)) {
        printf("    stored state: load returned %s\n", opstate_result_str(r));
        ok = false;
    }
    if (ok && !drv_kv_equal(loaded, want, positions, "stored state")) ok = false;
    if (!drv_kv_equal(x->shadow.kv, want, positions, "delta-store model (dirty keys of committed flushes)")) ok = false;
    opstate_kv_destroy(loaded);
    return ok;
}

/* ---- 1. crash at every step of a poll/flush cycle ---------------------- */

typedef struct drv_op {
    const char *scope, *key;
    uint32_t op;
    const char *val;
} drv_op;

/* Puts, overwrites and deletes over five keys in two scopes. */
static const drv_op drv_workload[] = {
    {"s1", "a", OPSTATE_OP_PUT, "a1"},    {"s1", "b", OPSTATE_OP_PUT, "b1"},    {"s1", "c", OPSTATE_OP_PUT, "c1"},
    {"s1", "a", OPSTATE_OP_PUT, "a2"},    {"s1", "b", OPSTATE_OP_DELETE, NULL}, {"s2", "d", OPSTATE_OP_PUT, "d1"},
    {"s1", "b", OPSTATE_OP_PUT, "b2"},    {"s1", "a", OPSTATE_OP_DELETE, NULL}, {"s2", "e", OPSTATE_OP_PUT, "e1"},
    {"s1", "c", OPSTATE_OP_PUT, "c2"},    {"s2", "d", OPSTATE_OP_DELETE, NULL}, {"s1", "a", OPSTATE_OP_PUT, "a3"},
    {"s2", "d", OPSTATE_OP_PUT, "d2"},    {"s1", "c", OPSTATE_OP_DELETE, NULL}, {"s1", "b", OPSTATE_OP_PUT, "b3"},
    {"s2", "e", OPSTATE_OP_PUT, "e2"},    {"s2", "e", OPSTATE_OP_DELETE, NULL}, {"s1", "c", OPSTATE_OP_PUT, "c3"},
};
#define DRV_WORKLOAD_N (sizeof drv_workload / sizeof drv_workload[0])

DRV_STATIC bool drv_publish_ops(drv_ctx *x, const drv_op *ops, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        if (!drv_publish(x, ops[i].scope, ops[i].key, ops[i].op, ops[i].val)) return false;
    return true;
}

/* Independent model: the ops folded in order with plain kv calls (no log,
   no codec, no consumer, no replay). Compare without positions. */
DRV_STATIC opstate_kv *drv_model(const drv_op *ops, size_t n)
{
    opstate_kv *kv = drv_new_kv();
    opstate_position pos = {0, 0, 0};
    uint8_t buf[128];
    size_t i;
    for (i = 0; kv && i < n; i++) {
        opstate_bytes key = drv_key(ops[i].scope, ops[i].key, buf, sizeof buf);
        if (ops[i].op == OPSTATE_OP_PUT) CHECK(opstate_kv_put(kv, key, str(ops[i].val), pos) == OPSTATE_OK);
        else CHECK(opstate_kv_delete(kv, key, pos) == OPSTATE_OK);
    }
    return kv;
}

/* One run: apply k events polling `step` at a time (flush every 3),
   crash (mid_flush: the periodic flush of the last poll fails first, i.e.
   the crash hits inside that flush), reopen, poll to the end. */
DRV_STATIC void drv_crash_run(drv_ctx *x, uint32_t step, uint32_t k, bool mid_flush, const opstate_kv *model,
                              const opstate_kv *replayed)
{
    const uint32_t n = (uint32_t)DRV_WORKLOAD_N;
    opstate_consumer_config cfg = drv_cfg(x);
    opstate_consumer *c = NULL;
    opstate_poll_result res;
    const opstate_consumer_status *st;
    uint32_t applied = 0, since = 0, flushed = 0, i;
    uint64_t mark;
    opstate_result r;
    drv_reset_store(x);
    drv_reset_counts(x);
    cfg.apply = drv_apply;
    cfg.apply_user = x;
    cfg.flush_every = 3;
    REQUIRE(opstate_consumer_open(&cfg, &c, NULL) == OPSTATE_OK);
    st = opstate_consumer_get_status(c);
    CHECK(st->decision.restore && st->decision.reason == OPSTATE_REASON_NOTHING_STORED);
    while (applied < k) {
        uint32_t want = k - applied < step ? k - applied : step;
        bool failing = mid_flush && applied + want >= k;
        if (failing) drv_fail_flushes(x, OPSTATE_IO);
        memset(&res, 0, sizeof res);
        r = opstate_consumer_poll(c, want, 0, &res, NULL);
        CHECK(r == OPSTATE_OK); /* a failing periodic flush never surfaces */
        CHECK_EQ_U64(res.applied, want);
        if (r != OPSTATE_OK || res.applied != want) break;
        applied += want;
        since += want;
        if (since >= 3) { /* flush due after this poll; a failure restarts the count too */
            if (!failing) flushed = applied;
            since = 0;
        }
    }
    mark = flushed ? x->seqs[flushed - 1] : 0;
    CHECK_EQ_U64(drv_committed(x).position.seq, mark);
    drv_crash(x, c);
    drv_disarm(x);

    x->session = 1;
    c = NULL;
    REQUIRE(opstate_consumer_open(&cfg, &c, NULL) == OPSTATE_OK);
    st = opstate_consumer_get_status(c);
    CHECK(st->decision.restore);
    CHECK(st->decision.reason == (mark ? OPSTATE_REASON_RESUME : OPSTATE_REASON_NOTHING_STORED));
    CHECK_EQ_U64(opstate_consumer_position(c).seq, mark);
    CHECK(drv_drain(c, step + 1, NULL) == OPSTATE_OK);
    for (i = 0; i < n; i++) {
        CHECK_EQ_U64(x->applies[0][i], i < k ? 1u : 0u);
        /* at or below the restored mark: in the state already, never again */
        CHECK_EQ_U64(x->applies[1][i], x->seqs[i] <= mark ? 0u : 1u);
    }
    CHECK_EQ_U64(x->foreign, 0);
    CHECK_EQ_U64(opstate_consumer_position(c).seq, x->seqs[n - 1]);
    CHECK(drv_kv_equal(opstate_consumer_kv(c), replayed, true, "state vs opstate_replay"));
    CHECK(drv_kv_equal(opstate_consumer_kv(c), model, false, "state vs model"));
    CHECK(opstate_consumer_close(c, NULL) == OPSTATE_OK);
    CHECK(drv_check_store(x, replayed, true));
}

DRV_STATIC void driver_test_crash_every_step(const driver_backend *b)
{
    static const uint32_t steps[] = {1, 2, 5};
    drv_ctx *x = drv_setup(b, 0);
    opstate_kv *model = NULL, *replayed = NULL;
    uint32_t si, k;
    int mid;
    REQUIRE(x);
    if (drv_publish_ops(x, drv_workload, DRV_WORKLOAD_N)) {
        model = drv_model(drv_workload, DRV_WORKLOAD_N);
        replayed = drv_fold(x, NULL); /* from scratch: opstate_replay with the default apply */
        CHECK(drv_kv_equal(replayed, model, false, "opstate_replay vs model"));
    }
    for (si = 0; model && replayed && si < COUNT_OF(steps); si++)
        for (k = 0; k <= DRV_WORKLOAD_N; k++)
            for (mid = 0; mid < 2; mid++) {
                if (mid && k == 0) continue;
                drv_label(x, mid ? "crash inside the flush after event" : "crash after event", "step", k, steps[si]);
                drv_crash_run(x, steps[si], k, mid != 0, model, replayed);
                if (runner_failed_now()) goto out; /* one broken row is enough */
            }
out:
    opstate_kv_destroy(model);
    opstate_kv_destroy(replayed);
    drv_teardown(x);
}

/* A publisher retry outside the log's duplicate window: the same event id
   lands twice in the log; the consumer's dedup window (persisted with the
   snapshot) skips the second, across a crash too. */
DRV_STATIC void driver_test_publisher_duplicate(const driver_backend *b)
{
    static const drv_op ops[] = {
        {"s1", "a", OPSTATE_OP_PUT, "a1"}, {"s1", "b", OPSTATE_OP_PUT, "b1"}, {"s1", "c", OPSTATE_OP_PUT, "c1"},
        {"s1", "a", OPSTATE_OP_PUT, "a2"}, {"s1", "d", OPSTATE_OP_PUT, "d1"}, {"s1", "e", OPSTATE_OP_PUT, "e1"},
        {"s1", "f", OPSTATE_OP_PUT, "f1"}, {"s1", "b", OPSTATE_OP_PUT, "b2"},
    };
    drv_ctx *x = drv_setup(b, DRV_DUP_WINDOW_NS);
    opstate_event ev[8];
    opstate_append_result ar;
    opstate_consumer_config cfg;
    opstate_consumer *c = NULL;
    const opstate_consumer_status *st;
    opstate_kv *model = NULL;
    uint64_t dup1, dup2;
    uint32_t i;
    REQUIRE(x);
    for (i = 0; i < 8; i++) ev[i] = drv_event(ops[i].scope, ops[i].key, ops[i].op, ops[i].val, ++x->ident);
    for (i = 0; i < 6; i++) REQUIRE(drv_publish_ev(x, &ev[i]) == i + 1);
    /* inside the log's window the log itself drops the retry */
    memset(&ar, 0, sizeof ar);
    CHECK(opstate_publish(&x->log, str(DRV_PREFIX), &ev[5], NULL, NULL, &ar, NULL) == OPSTATE_OK);
    CHECK(ar.duplicate);
    CHECK_EQ_U64(ar.seq, 6);
    CHECK(opstate_publish(&x->log, str(DRV_PREFIX), &ev[5], NULL, NULL, NULL, NULL) == OPSTATE_OK); /* no out */
    /* once the window (1 ms of publish time) has passed, the log has
       forgotten ev[0]: the retry is appended again (a backend whose clock
       cannot be moved gets the same bytes without an id) */
    if (x->clocked) CHECK(b->set_clock(x->env, drv_info(x).last_time + 2 * DRV_DUP_WINDOW_NS));
    memset(&ar, 0, sizeof ar);
    CHECK(opstate_publish(&x->log, str(DRV_PREFIX), &ev[0], NULL, NULL, &ar, NULL) == OPSTATE_OK);
    dup1 = ar.duplicate ? drv_append_event_raw(x, &ev[0], 0) : ar.seq;
    CHECK_EQ_U64(dup1, 7);
    REQUIRE(drv_publish_ev(x, &ev[6]) == 8);
    dup2 = drv_append_event_raw(x, &ev[0], 0); /* a retry with no id at all */
    CHECK_EQ_U64(dup2, 9);
    REQUIRE(drv_publish_ev(x, &ev[7]) == 10);
    model = drv_model(ops, 8); /* a = a2: the retries of "a = a1" must not win */
    REQUIRE(model);

    /* session 0: events 1..6, flushed at 3 and 6, then a crash */
    cfg = drv_cfg(x);
    cfg.apply = drv_apply;
    cfg.apply_user = x;
    cfg.flush_every = 3;
    drv_reset_counts(x);
    REQUIRE(opstate_consumer_open(&cfg, &c, NULL) == OPSTATE_OK);
    for (i = 0; i < 6; i++) {
        opstate_poll_result res;
        CHECK(opstate_consumer_poll(c, 1, 0, &res, NULL) == OPSTATE_OK);
    }
    CHECK_EQ_U64(drv_committed(x).position.seq, 6);
    drv_crash(x, c);

    /* session 1: the retries at 7 and 9 are skipped by the restored window */
    x->session = 1;
    c = NULL;
    REQUIRE(opstate_consumer_open(&cfg, &c, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(opstate_consumer_position(c).seq, 6);
    CHECK(drv_drain(c, 0, NULL) == OPSTATE_OK);
    st = opstate_consumer_get_status(c);
    CHECK_EQ_U64(st->applied, 2);
    CHECK_EQ_U64(st->skipped, 2);
    CHECK_EQ_U64(x->applies[0][0] + x->applies[1][0], 1);
    for (i = 0; i < 8; i++) CHECK_EQ_U64(x->applies[0][i] + x->applies[1][i], 1);
    CHECK_EQ_U64(opstate_consumer_position(c).seq, 10);
    CHECK(drv_kv_equal(opstate_consumer_kv(c), model, false, "state after crash vs model"));
    CHECK(drv_has(opstate_consumer_kv(c), "s1", "a", "a2"));
    CHECK(opstate_consumer_close(c, NULL) == OPSTATE_OK);
    CHECK(drv_check_store(x, model, false));

    /* one session from scratch: the in-memory window skips them too */
    drv_reset_store(x);
    drv_reset_counts(x);
    c = NULL;
    REQUIRE(opstate_consumer_open(&cfg, &c, NULL) == OPSTATE_OK);
    CHECK(drv_drain(c, 0, NULL) == OPSTATE_OK);
    st = opstate_consumer_get_status(c);
    CHECK_EQ_U64(st->applied, 8);
    CHECK_EQ_U64(st->skipped, 2);
    CHECK(drv_kv_equal(opstate_consumer_kv(c), model, false, "state vs model"));
    CHECK(opstate_consumer_close(c, NULL) == OPSTATE_OK);
    opstate_kv_destroy(model);
    drv_teardown(x);
}

/* ---- 2. every restore-decision row end to end --------------------------- */

enum { DRV_ACT_NONE, DRV_ACT_RECREATE, DRV_ACT_EXPIRE, DRV_ACT_MORE };

typedef struct drv_row {
    const char *name;
    bool stored;             /* a consumer applied 1..6 and closed first */
    opstate_restore_mode mode;
    opstate_start_kind start;
    uint64_t start_seq;      /* FROM_SEQUENCE */
    uint64_t time_of;        /* FROM_TIME: publish time of this seq ... */
    int64_t time_delta;      /* ... plus this */
    int action;              /* before the open (MORE: after it) */
    bool restore;
    opstate_reason reason;
    uint64_t gap;
    bool resync;
    uint64_t lo1, hi1, lo2, hi2; /* expected: fold of these ranges of the log */
    bool keep_old;           /* expected also holds the state of 1..6 from before a recreate */
    uint64_t applied, skipped;
    bool crash_after_open;   /* crash before the first poll, reopen with resume: the
                                start must have been made durable at open */
} drv_row;

/* Log: k01..k10 put at seq 1..10 (EXPIRE adds k11..k14 and evicts 1..8;
   RECREATE makes a new stream with n01..n03; MORE adds k11, k12 after the
   open). The stored consumer holds 1..6. */
static const drv_row drv_rows[] = {
    {"resume", true, OPSTATE_MODE_AUTO, OPSTATE_START_RESUME, 0, 0, 0, DRV_ACT_NONE, true, OPSTATE_REASON_RESUME, 0,
     false, 1, 10, 0, 0, false, 4, 0, false},
    {"resume, nothing stored", false, OPSTATE_MODE_AUTO, OPSTATE_START_RESUME, 0, 0, 0, DRV_ACT_NONE, true,
     OPSTATE_REASON_NOTHING_STORED, 0, false, 1, 10, 0, 0, false, 10, 0, false},
    {"from sequence 7 > stored 6", true, OPSTATE_MODE_AUTO, OPSTATE_START_FROM_SEQUENCE, 7, 0, 0, DRV_ACT_NONE, true,
     OPSTATE_REASON_FORWARD_SEQUENCE, 0, false, 1, 10, 0, 0, false, 4, 0, false},
    {"from sequence 9: gap of 2", true, OPSTATE_MODE_AUTO, OPSTATE_START_FROM_SEQUENCE, 9, 0, 0, DRV_ACT_NONE, true,
     OPSTATE_REASON_FORWARD_SEQUENCE_GAP, 2, false, 1, 6, 9, 10, false, 2, 0, false},
    {"from sequence 4 < stored", true, OPSTATE_MODE_AUTO, OPSTATE_START_FROM_SEQUENCE, 4, 0, 0, DRV_ACT_NONE, false,
     OPSTATE_REASON_BACKWARD_SEQUENCE, 0, false, 4, 10, 0, 0, false, 7, 0, false},
    {"from sequence 6 == stored", true, OPSTATE_MODE_AUTO, OPSTATE_START_FROM_SEQUENCE, 6, 0, 0, DRV_ACT_NONE, false,
     OPSTATE_REASON_BACKWARD_SEQUENCE, 0, false, 6, 10, 0, 0, false, 5, 0, false},
    {"from sequence, nothing stored", false, OPSTATE_MODE_AUTO, OPSTATE_START_FROM_SEQUENCE, 4, 0, 0, DRV_ACT_NONE,
     false, OPSTATE_REASON_NO_POSITION, 0, false, 4, 10, 0, 0, false, 7, 0, false},
    {"from time of 8 > stored", true, OPSTATE_MODE_AUTO, OPSTATE_START_FROM_TIME, 0, 8, 0, DRV_ACT_NONE, true,
     OPSTATE_REASON_FORWARD_TIME, 0, false, 1, 6, 8, 10, false, 3, 1, false},
    {"from time stored + 1 ns", true, OPSTATE_MODE_AUTO, OPSTATE_START_FROM_TIME, 0, 6, 1, DRV_ACT_NONE, true,
     OPSTATE_REASON_FORWARD_TIME, 0, false, 1, 10, 0, 0, false, 4, 0, false},
    {"from time after the last event", true, OPSTATE_MODE_AUTO, OPSTATE_START_FROM_TIME, 0, 10, 1, DRV_ACT_NONE,
     true, OPSTATE_REASON_FORWARD_TIME, 0, false, 1, 6, 0, 0, false, 0, 4, false},
    {"from time == stored", true, OPSTATE_MODE_AUTO, OPSTATE_START_FROM_TIME, 0, 6, 0, DRV_ACT_NONE, false,
     OPSTATE_REASON_BACKWARD_TIME, 0, false, 6, 10, 0, 0, false, 5, 5, false},
    {"from time of 4 < stored", true, OPSTATE_MODE_AUTO, OPSTATE_START_FROM_TIME, 0, 4, 0, DRV_ACT_NONE, false,
     OPSTATE_REASON_BACKWARD_TIME, 0, false, 4, 10, 0, 0, false, 7, 3, false},
    {"from time, nothing stored", false, OPSTATE_MODE_AUTO, OPSTATE_START_FROM_TIME, 0, 5, 0, DRV_ACT_NONE, false,
     OPSTATE_REASON_NO_POSITION, 0, false, 5, 10, 0, 0, false, 6, 4, false},
    {"latest", true, OPSTATE_MODE_AUTO, OPSTATE_START_LATEST, 0, 0, 0, DRV_ACT_MORE, false, OPSTATE_REASON_LATEST, 0,
     false, 11, 12, 0, 0, false, 2, 0, false},
    {"latest, nothing stored", false, OPSTATE_MODE_AUTO, OPSTATE_START_LATEST, 0, 0, 0, DRV_ACT_MORE, false,
     OPSTATE_REASON_LATEST, 0, false, 11, 12, 0, 0, false, 2, 0, false},
    {"latest, crash after open", true, OPSTATE_MODE_AUTO, OPSTATE_START_LATEST, 0, 0, 0, DRV_ACT_MORE, false,
     OPSTATE_REASON_LATEST, 0, false, 11, 12, 0, 0, false, 2, 0, true},
    {"latest, nothing stored, crash after open", false, OPSTATE_MODE_AUTO, OPSTATE_START_LATEST, 0, 0, 0,
     DRV_ACT_MORE, false, OPSTATE_REASON_LATEST, 0, false, 11, 12, 0, 0, false, 2, 0, true},
    {"from sequence 4 < stored, crash after open", true, OPSTATE_MODE_AUTO, OPSTATE_START_FROM_SEQUENCE, 4, 0, 0,
     DRV_ACT_NONE, false, OPSTATE_REASON_BACKWARD_SEQUENCE, 0, false, 4, 10, 0, 0, false, 7, 0, true},
    {"from sequence, nothing stored, crash after open", false, OPSTATE_MODE_AUTO, OPSTATE_START_FROM_SEQUENCE, 4, 0,
     0, DRV_ACT_NONE, false, OPSTATE_REASON_NO_POSITION, 0, false, 4, 10, 0, 0, false, 7, 0, true},
    {"first", true, OPSTATE_MODE_AUTO, OPSTATE_START_FIRST, 0, 0, 0, DRV_ACT_NONE, false, OPSTATE_REASON_FULL_REBUILD, 0,
     false, 1, 10, 0, 0, false, 10, 0, false},
    {"first, nothing stored", false, OPSTATE_MODE_AUTO, OPSTATE_START_FIRST, 0, 0, 0, DRV_ACT_NONE, false,
     OPSTATE_REASON_FULL_REBUILD, 0, false, 1, 10, 0, 0, false, 10, 0, false},
    {"keep, resume", true, OPSTATE_MODE_KEEP, OPSTATE_START_RESUME, 0, 0, 0, DRV_ACT_NONE, true,
     OPSTATE_REASON_FORCED_KEEP, 0, false, 1, 10, 0, 0, false, 4, 0, false},
    /* keep with a start at or before the stored position resumes after it:
       nothing at or below it is re-read (so nothing is skipped either) */
    {"keep, from sequence 2 < stored", true, OPSTATE_MODE_KEEP, OPSTATE_START_FROM_SEQUENCE, 2, 0, 0, DRV_ACT_NONE,
     true, OPSTATE_REASON_FORCED_KEEP, 0, false, 1, 10, 0, 0, false, 4, 0, false},
    {"keep, nothing stored", false, OPSTATE_MODE_KEEP, OPSTATE_START_RESUME, 0, 0, 0, DRV_ACT_NONE, true,
     OPSTATE_REASON_FORCED_KEEP, 0, false, 1, 10, 0, 0, false, 10, 0, false},
    {"clear", true, OPSTATE_MODE_CLEAR, OPSTATE_START_RESUME, 0, 0, 0, DRV_ACT_NONE, false, OPSTATE_REASON_FORCED_CLEAR,
     0, false, 1, 10, 0, 0, false, 10, 0, false},
    {"epoch changed (recreated)", true, OPSTATE_MODE_AUTO, OPSTATE_START_RESUME, 0, 0, 0, DRV_ACT_RECREATE, false,
     OPSTATE_REASON_STREAM_RECREATED, 0, false, 1, 3, 0, 0, false, 3, 0, false},
    {"keep, epoch changed", true, OPSTATE_MODE_KEEP, OPSTATE_START_RESUME, 0, 0, 0, DRV_ACT_RECREATE, true,
     OPSTATE_REASON_FORCED_KEEP, 0, false, 1, 3, 0, 0, true, 3, 0, false},
    /* resync: keys with no message left in the retained stream are removed
       (k01..k06), so the state equals the fold of what is retained */
    {"cursor expired: resync", true, OPSTATE_MODE_AUTO, OPSTATE_START_RESUME, 0, 0, 0, DRV_ACT_EXPIRE, true,
     OPSTATE_REASON_CURSOR_EXPIRED, 2, true, 9, 14, 0, 0, false, 6, 0, false},
    {"keep, cursor expired: resync", true, OPSTATE_MODE_KEEP, OPSTATE_START_RESUME, 0, 0, 0, DRV_ACT_EXPIRE, true,
     OPSTATE_REASON_FORCED_KEEP, 2, true, 9, 14, 0, 0, false, 6, 0, false},
};

DRV_STATIC void drv_publish_keys(drv_ctx *x, const char *stem, unsigned from, unsigned to)
{
    char key[16], val[16];
    for (; from <= to; from++) {
        snprintf(key, sizeof key, "%s%02u", stem, from);
        snprintf(val, sizeof val, "v%s%02u", stem, from);
        CHECK(drv_publish(x, "s1", key, OPSTATE_OP_PUT, val) != 0);
    }
}

DRV_STATIC void drv_run_row(const driver_backend *b, const drv_row *row)
{
    drv_ctx *x = drv_setup(b, 0);
    opstate_consumer_config cfg;
    opstate_consumer *c = NULL;
    const opstate_consumer_status *st;
    opstate_kv *want = NULL;
    opstate_stream_info si;
    opstate_poll_result res;
    opstate_result r;
    REQUIRE(x);
    drv_label(x, row->name, NULL, 0, 0);
    drv_publish_keys(x, "k", 1, 10);
    if (row->stored) {
        cfg = drv_cfg(x);
        REQUIRE(opstate_consumer_open(&cfg, &c, NULL) == OPSTATE_OK);
        CHECK(opstate_consumer_poll(c, 6, 0, &res, NULL) == OPSTATE_OK);
        CHECK_EQ_U64(res.applied, 6);
        CHECK(opstate_consumer_close(c, NULL) == OPSTATE_OK);
        CHECK_EQ_U64(drv_committed(x).position.seq, 6);
        c = NULL;
    }
    if (row->keep_old) want = drv_fold_ranges(x, 1, 6, 0, 0);
    cfg = drv_cfg(x);
    cfg.mode = row->mode;
    cfg.start.kind = row->start;
    cfg.start.seq = row->start_seq;
    if (row->start == OPSTATE_START_FROM_TIME) cfg.start.time = drv_time_of(x, row->time_of) + row->time_delta;
    if (row->action == DRV_ACT_RECREATE) {
        x->b->recreate(x->env);
        x->n = 0;
        drv_publish_keys(x, "n", 1, 3);
    } else if (row->action == DRV_ACT_EXPIRE) {
        drv_publish_keys(x, "k", 11, 14);
        x->b->purge(x->env, 9);
        CHECK_EQ_U64(drv_info(x).first_seq, 9);
    }
    r = opstate_consumer_open(&cfg, &c, NULL);
    CHECK(r == OPSTATE_OK);
    if (r != OPSTATE_OK) {
        opstate_kv_destroy(want);
        drv_teardown(x);
        return;
    }
    st = opstate_consumer_get_status(c);
    CHECK(st->decision.restore == row->restore);
    CHECK_EQ_U64(st->decision.reason, row->reason);
    if (st->decision.reason != row->reason)
        printf("    reason %s, expected %s\n", opstate_reason_name(st->decision.reason), opstate_reason_name(row->reason));
    CHECK_EQ_U64(st->decision.gap, row->gap);
    CHECK(st->decision.resync == row->resync);
    if (row->resync) CHECK(st->resume.state == OPSTATE_RESUME_EXPIRED);
    if (row->crash_after_open) {
        drv_crash(x, c);
        cfg.mode = OPSTATE_MODE_AUTO;
        cfg.start.kind = OPSTATE_START_RESUME;
        c = NULL;
        REQUIRE(opstate_consumer_open(&cfg, &c, NULL) == OPSTATE_OK);
        st = opstate_consumer_get_status(c);
        CHECK(st->decision.restore);
    }
    if (row->action == DRV_ACT_MORE) {
        CHECK_EQ_U64(opstate_consumer_position(c).seq, 10);
        CHECK_EQ_U64(opstate_kv_count(opstate_consumer_kv(c)), 0);
        drv_publish_keys(x, "k", 11, 12);
    }
    CHECK(drv_drain(c, 3, NULL) == OPSTATE_OK);
    st = opstate_consumer_get_status(c);
    if (!want) want = drv_new_kv();
    if (want) {
        drv_set s;
        memset(&s, 0, sizeof s);
        drv_set_range(&s, row->lo1, row->hi1);
        drv_set_range(&s, row->lo2, row->hi2);
        CHECK(drv_fold_into(x, &s, want));
    }
    CHECK(drv_kv_equal(opstate_consumer_kv(c), want, true, "state"));
    CHECK_EQ_U64(st->applied, row->applied);
    CHECK_EQ_U64(st->skipped, row->skipped);
    CHECK(st->resynced == row->resync);
    if (row->resync) CHECK_EQ_U64(st->resync_removed, 6);
    si = drv_info(x);
    CHECK_EQ_U64(opstate_consumer_position(c).seq, si.last_seq);
    CHECK_EQ_U64(opstate_consumer_position(c).epoch, si.epoch);
    CHECK(opstate_consumer_close(c, NULL) == OPSTATE_OK);
    CHECK(drv_check_store(x, want, true));
    CHECK_EQ_U64(drv_committed(x).position.seq, si.last_seq);
    opstate_kv_destroy(want);
    drv_teardown(x);
}

DRV_STATIC void driver_test_restore_decisions(const driver_backend *b)
{
    size_t i;
    for (i = 0; i < COUNT_OF(drv_rows); i++) drv_run_row(b, &drv_rows[i]);
}

/* Mode keep never applies an event twice: events at or below the restored
   position are skipped even when their ids have left the dedup window
   (more events than the window holds). */
DRV_STATIC void driver_test_keep_applies_nothing_twice(const driver_backend *b)
{
    static const opstate_start_kind kinds[] = {OPSTATE_START_FROM_SEQUENCE, OPSTATE_START_FIRST};
    const uint32_t total = 530;
    drv_ctx *x = drv_setup(b, 0);
    opstate_consumer_config cfg;
    opstate_consumer *c = NULL;
    uint32_t i, k, twice;
    char key[16];
    REQUIRE(x);
    for (i = 0; i < total; i++) {
        snprintf(key, sizeof key, "k%03u", (unsigned)i);
        REQUIRE(drv_publish(x, "s1", key, OPSTATE_OP_PUT, "v") != 0);
    }
    for (k = 0; k < COUNT_OF(kinds); k++) {
        drv_label(x, "keep with start", k ? "first" : "from sequence 2", 0, 0);
        drv_reset_store(x);
        drv_reset_counts(x);
        cfg = drv_cfg(x);
        cfg.apply = drv_apply;
        cfg.apply_user = x;
        cfg.dedup_capacity = 512;
        REQUIRE(opstate_consumer_open(&cfg, &c, NULL) == OPSTATE_OK);
        CHECK(drv_drain(c, 0, NULL) == OPSTATE_OK);
        CHECK(opstate_consumer_close(c, NULL) == OPSTATE_OK);
        CHECK_EQ_U64(drv_committed(x).position.seq, total);
        x->session = 1;
        cfg.mode = OPSTATE_MODE_KEEP;
        cfg.start.kind = kinds[k];
        cfg.start.seq = kinds[k] == OPSTATE_START_FROM_SEQUENCE ? 2 : 0;
        c = NULL;
        REQUIRE(opstate_consumer_open(&cfg, &c, NULL) == OPSTATE_OK);
        CHECK(opstate_consumer_get_status(c)->decision.restore);
        CHECK(drv_drain(c, 0, NULL) == OPSTATE_OK);
        for (i = 0, twice = 0; i < total; i++) twice += x->applies[1][i] != 0;
        CHECK_EQ_U64(twice, 0);
        if (twice) printf("    %lu events at or below the restored position %lu were applied again\n",
                          (unsigned long)twice, (unsigned long)total);
        CHECK_EQ_U64(opstate_consumer_get_status(c)->applied, 0);
        CHECK_EQ_U64(opstate_consumer_position(c).seq, total);
        CHECK(opstate_consumer_close(c, NULL) == OPSTATE_OK);
    }
    drv_teardown(x);
}

/* ---- 3. expired cursor: the twins --------------------------------------- */

/* Log: 1 A=a1, 2 B=b1, 3 C=c1 (stored), 4 del B, 5 A=a2, 6 C=c2, 7 A=a3;
   then 1..4 are evicted: B's delete marker is gone too. The truth (the
   fold of the whole history) is A=a3, C=c2. */
DRV_STATIC bool drv_twin_setup(drv_ctx *x, int64_t *b_time)
{
    opstate_consumer_config cfg = drv_cfg(x);
    opstate_consumer *c = NULL;
    if (!drv_publish(x, "s1", "A", OPSTATE_OP_PUT, "a1") || !drv_publish(x, "s1", "B", OPSTATE_OP_PUT, "b1") ||
        !drv_publish(x, "s1", "C", OPSTATE_OP_PUT, "c1"))
        return false;
    *b_time = drv_time_of(x, 2);
    if (opstate_consumer_open(&cfg, &c, NULL) != OPSTATE_OK) return false;
    CHECK(drv_drain(c, 0, NULL) == OPSTATE_OK);
    CHECK(opstate_consumer_close(c, NULL) == OPSTATE_OK);
    CHECK(drv_publish(x, "s1", "B", OPSTATE_OP_DELETE, NULL) == 4);
    CHECK(drv_publish(x, "s1", "A", OPSTATE_OP_PUT, "a2") == 5);
    CHECK(drv_publish(x, "s1", "C", OPSTATE_OP_PUT, "c2") == 6);
    CHECK(drv_publish(x, "s1", "A", OPSTATE_OP_PUT, "a3") == 7);
    x->b->purge(x->env, 5);
    CHECK_EQ_U64(drv_info(x).first_seq, 5);
    return !runner_failed_now();
}

DRV_STATIC void driver_test_expired_twins(const driver_backend *b)
{
    static const char *const names[] = {"resync", "no_resync", "custom apply: rebuild"};
    int variant;
    for (variant = 0; variant < 3; variant++) {
        drv_ctx *x = drv_setup(b, 0);
        opstate_consumer_config cfg;
        opstate_consumer *c = NULL;
        const opstate_consumer_status *st;
        opstate_kv *truth = NULL, *want = NULL;
        int64_t b_time = 0;
        uint8_t kb[64];
        REQUIRE(x);
        drv_label(x, "expired cursor", names[variant], 0, 0);
        if (!drv_twin_setup(x, &b_time)) {
            drv_teardown(x);
            return;
        }
        truth = drv_fold(x, NULL); /* the retained stream: A=a3, C=c2 */
        REQUIRE(truth);
        CHECK(drv_has(truth, "s1", "A", "a3") && drv_has(truth, "s1", "C", "c2") && !drv_has(truth, "s1", "B", NULL));
        cfg = drv_cfg(x);
        cfg.no_resync = variant == 1;
        if (variant == 2) {
            cfg.apply = drv_apply;
            cfg.apply_user = x;
        }
        REQUIRE(opstate_consumer_open(&cfg, &c, NULL) == OPSTATE_OK);
        st = opstate_consumer_get_status(c);
        CHECK(st->decision.restore);
        CHECK(st->decision.reason == OPSTATE_REASON_CURSOR_EXPIRED);
        CHECK(st->decision.resync);
        CHECK_EQ_U64(st->decision.gap, 1);
        CHECK(st->resume.state == OPSTATE_RESUME_EXPIRED);
        CHECK_EQ_U64(st->resume.missed, 1);
        if (variant == 0) { /* reconciled at open, before reading anything */
            CHECK(st->resynced);
            CHECK_EQ_U64(st->resync_removed, 1);
            CHECK(!drv_has(opstate_consumer_kv(c), "s1", "B", NULL));
        } else {
            CHECK(!st->resynced);
            CHECK_EQ_U64(st->resync_removed, 0);
        }
        CHECK(drv_drain(c, 0, NULL) == OPSTATE_OK);
        CHECK_EQ_U64(opstate_consumer_position(c).seq, 7);
        if (variant == 1) {
            /* pinned divergence: without resync the deleted key survives */
            CHECK(drv_has(opstate_consumer_kv(c), "s1", "B", "b1"));
            CHECK_EQ_U64(opstate_kv_count(opstate_consumer_kv(c)), opstate_kv_count(truth) + 1);
            want = drv_fold(x, NULL);
            if (want) {
                opstate_position p;
                p.seq = 2;
                p.time = b_time;
                p.epoch = 0;
                CHECK(opstate_kv_put(want, drv_key("s1", "B", kb, sizeof kb), str("b1"), p) == OPSTATE_OK);
            }
        } else {
            CHECK(!drv_has(opstate_consumer_kv(c), "s1", "B", NULL));
            want = drv_fold(x, NULL);
        }
        CHECK(drv_kv_equal(opstate_consumer_kv(c), want, true, "state"));
        CHECK(opstate_consumer_close(c, NULL) == OPSTATE_OK);
        CHECK(drv_check_store(x, want, true));
        opstate_kv_destroy(truth);
        opstate_kv_destroy(want);
        drv_teardown(x);
    }
}

/* ---- 4. store failure injection ----------------------------------------- */

/* Periodic flushes that fail are logged, counted, not returned; the keys
   stay dirty, and the next good flush commits everything. */
DRV_STATIC void driver_test_flush_failures_heal(const driver_backend *b)
{
    drv_ctx *x = drv_setup(b, 0);
    opstate_consumer_config cfg;
    opstate_consumer *c = NULL;
    const opstate_consumer_status *st;
    opstate_poll_result res;
    opstate_kv *want = NULL;
    uint32_t p;
    REQUIRE(x);
    REQUIRE(drv_publish_ops(x, drv_workload, 12));
    cfg = drv_cfg(x);
    cfg.flush_every = 2;
    drv_fail(x, FAULT_STORE_FLUSH, 1, 2, OPSTATE_IO); /* flush 1 ok, 2 and 3 fail, then ok */
    REQUIRE(opstate_consumer_open(&cfg, &c, NULL) == OPSTATE_OK);
    st = opstate_consumer_get_status(c);
    for (p = 1; p <= 4; p++) {
        drv_label(x, "poll", NULL, p, 0);
        CHECK(opstate_consumer_poll(c, 2, 0, &res, NULL) == OPSTATE_OK);
        CHECK_EQ_U64(res.applied, 2);
        if (p == 2 || p == 3) {
            CHECK_EQ_U64(st->flush_failures, p - 1);
            CHECK(opstate_kv_dirty_count(opstate_consumer_kv(c)) > 0); /* kept dirty for the retry */
            CHECK_EQ_U64(drv_committed(x).position.seq, 2);
        }
    }
    CASE("healed");
    CHECK_EQ_U64(st->poison_count, 0);
    CHECK_EQ_U64(st->flush_failures, 2);
    CHECK_EQ_U64(st->flushes, 2);
    CHECK_EQ_U64(x->faulty.failures, 2);
    CHECK_EQ_U64(x->log_flush_failed, 2);
    CHECK_EQ_U64(drv_committed(x).position.seq, 8);
    CHECK_EQ_U64(opstate_kv_dirty_count(opstate_consumer_kv(c)), 0);
    drv_crash(x, c);
    drv_disarm(x);
    /* nothing lost: what is stored is the fold of 1..8, delta store too */
    want = drv_fold_ranges(x, 1, 8, 0, 0);
    CHECK(drv_check_store(x, want, true));
    c = NULL;
    REQUIRE(opstate_consumer_open(&cfg, &c, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(opstate_consumer_position(c).seq, 8);
    CHECK(drv_kv_equal(opstate_consumer_kv(c), want, true, "restored state"));
    CHECK(drv_drain(c, 0, NULL) == OPSTATE_OK);
    opstate_kv_destroy(want);
    want = drv_fold(x, NULL);
    CHECK(drv_kv_equal(opstate_consumer_kv(c), want, true, "state"));
    CHECK(opstate_consumer_close(c, NULL) == OPSTATE_OK);
    CHECK(drv_check_store(x, want, true));
    opstate_kv_destroy(want);
    drv_teardown(x);

    /* cadence: after a failure the retry waits a full flush_every (the
       failure restarts the count), one event per poll */
    CASE("retry cadence");
    x = drv_setup(b, 0);
    REQUIRE(x);
    REQUIRE(drv_publish_ops(x, drv_workload, 8));
    cfg = drv_cfg(x);
    cfg.flush_every = 2;
    c = NULL;
    REQUIRE(opstate_consumer_open(&cfg, &c, NULL) == OPSTATE_OK);
    drv_fail(x, FAULT_STORE_FLUSH, 0, 1, OPSTATE_IO); /* the first flush fails */
    for (p = 1; p <= 8; p++) {
        CHECK(opstate_consumer_poll(c, 1, 0, &res, NULL) == OPSTATE_OK);
        CHECK_EQ_U64(x->faulty.calls, p / 2); /* flush attempts at 2, 4, 6, 8 only */
    }
    CHECK_EQ_U64(x->faulty.failures, 1);
    CHECK_EQ_U64(drv_committed(x).position.seq, 8);
    drv_disarm(x);
    CHECK(opstate_consumer_close(c, NULL) == OPSTATE_OK);
    drv_teardown(x);
}

/* Durability operations return the store's error: load and drop at open. */
DRV_STATIC void driver_test_load_drop_errors(const driver_backend *b)
{
    drv_ctx *x = drv_setup(b, 0);
    opstate_consumer_config cfg;
    opstate_consumer *c = NULL, *sentinel = (opstate_consumer *)&cfg;
    opstate_error err;
    opstate_kv *want = NULL;
    opstate_poll_result res;
    REQUIRE(x);
    REQUIRE(drv_publish_ops(x, drv_workload, 6));
    cfg = drv_cfg(x);
    /* an empty store whose meta cannot be read */
    CASE("read_meta fails on an empty store");
    drv_fail(x, FAULT_STORE_LOAD, 0, 0, OPSTATE_IO);
    c = sentinel;
    CHECK(opstate_consumer_open(&cfg, &c, &err) == OPSTATE_IO);
    CHECK(c == sentinel);
    drv_disarm(x);
    REQUIRE(opstate_consumer_open(&cfg, &c, NULL) == OPSTATE_OK);
    CHECK(drv_drain(c, 0, NULL) == OPSTATE_OK);
    CHECK(opstate_consumer_close(c, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(drv_committed(x).position.seq, 6);

    CASE("read_meta fails");
    drv_fail(x, FAULT_STORE_LOAD, 0, 0, OPSTATE_IO);
    memset(&err, 0, sizeof err);
    c = sentinel;
    CHECK(opstate_consumer_open(&cfg, &c, &err) == OPSTATE_IO);
    CHECK(err.result == OPSTATE_IO);
    CHECK(c == sentinel);
    CASE("load fails after read_meta");
    drv_fail(x, FAULT_STORE_LOAD, 1, 0, OPSTATE_TIMEOUT);
    c = sentinel;
    CHECK(opstate_consumer_open(&cfg, &c, &err) == OPSTATE_TIMEOUT);
    CHECK_EQ_U64(x->faulty.failures, 1);
    CHECK(c == sentinel);

    CASE("drop fails: mode clear");
    drv_fail(x, FAULT_STORE_DROP, 0, 0, OPSTATE_IO);
    cfg.mode = OPSTATE_MODE_CLEAR;
    CHECK(opstate_consumer_open(&cfg, &c, &err) == OPSTATE_IO);
    CHECK(c == sentinel);
    CASE("drop fails: backward sequence");
    cfg.mode = OPSTATE_MODE_AUTO;
    cfg.start.kind = OPSTATE_START_FROM_SEQUENCE;
    cfg.start.seq = 2;
    CHECK(opstate_consumer_open(&cfg, &c, &err) == OPSTATE_IO);
    CASE("drop fails: first");
    cfg.start.kind = OPSTATE_START_FIRST;
    CHECK(opstate_consumer_open(&cfg, &c, &err) == OPSTATE_IO);
    CHECK(c == sentinel);
    CHECK_EQ_U64(drv_committed(x).position.seq, 6); /* the stored state is intact */

    CASE("a resume needs no drop");
    cfg.start.kind = OPSTATE_START_RESUME;
    c = NULL;
    REQUIRE(opstate_consumer_open(&cfg, &c, NULL) == OPSTATE_OK);
    CHECK(opstate_consumer_get_status(c)->decision.restore);
    CHECK_EQ_U64(opstate_consumer_position(c).seq, 6);
    want = drv_fold(x, NULL);
    CHECK(drv_kv_equal(opstate_consumer_kv(c), want, true, "restored state"));
    opstate_kv_destroy(want);

    /* a live reset drops the store: its failure is returned by poll, and
       the next poll retries the reset */
    CASE("drop fails at a live reset");
    x->b->recreate(x->env);
    x->n = 0;
    REQUIRE(drv_publish(x, "s1", "x", OPSTATE_OP_PUT, "x1") == 1);
    REQUIRE(drv_publish(x, "s1", "y", OPSTATE_OP_PUT, "y1") == 2);
    CHECK(opstate_consumer_poll(c, 0, 0, &res, &err) == OPSTATE_IO);
    drv_disarm(x);
    CHECK(drv_drain(c, 0, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(opstate_consumer_get_status(c)->resets, 1);
    want = drv_fold(x, NULL);
    CHECK(drv_kv_equal(opstate_consumer_kv(c), want, true, "state after the reset"));
    CHECK(opstate_consumer_close(c, NULL) == OPSTATE_OK);
    CHECK(drv_check_store(x, want, true));
    opstate_kv_destroy(want);
    drv_teardown(x);
}

/* opstate_consumer_flush and close return the flush error. */
DRV_STATIC void driver_test_explicit_flush_errors(const driver_backend *b)
{
    drv_ctx *x = drv_setup(b, 0);
    opstate_consumer_config cfg;
    opstate_consumer *c = NULL;
    opstate_poll_result res;
    opstate_error err;
    opstate_kv *want = NULL;
    REQUIRE(x);
    REQUIRE(drv_publish_ops(x, drv_workload, 9));
    cfg = drv_cfg(x);
    REQUIRE(opstate_consumer_open(&cfg, &c, NULL) == OPSTATE_OK);
    CHECK(opstate_consumer_poll(c, 3, 0, &res, NULL) == OPSTATE_OK);
    drv_fail_flushes(x, OPSTATE_TIMEOUT);
    memset(&err, 0, sizeof err);
    CHECK(opstate_consumer_flush(c, &err) == OPSTATE_TIMEOUT);
    CHECK(err.result == OPSTATE_TIMEOUT);
    CHECK_EQ_U64(opstate_consumer_get_status(c)->flush_failures, 1);
    CHECK_EQ_U64(drv_committed(x).position.seq, 0);
    drv_disarm(x);
    CHECK(opstate_consumer_flush(c, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(drv_committed(x).position.seq, 3);
    CHECK(opstate_consumer_poll(c, 3, 0, &res, NULL) == OPSTATE_OK);
    drv_fail_flushes(x, OPSTATE_IO);
    CHECK(opstate_consumer_close(c, &err) == OPSTATE_IO); /* and the consumer is freed */
    CHECK(err.result == OPSTATE_IO);
    drv_disarm(x);
    CHECK_EQ_U64(drv_committed(x).position.seq, 3);
    c = NULL;
    REQUIRE(opstate_consumer_open(&cfg, &c, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(opstate_consumer_position(c).seq, 3);
    CHECK(drv_drain(c, 0, NULL) == OPSTATE_OK);
    want = drv_fold(x, NULL);
    CHECK(drv_kv_equal(opstate_consumer_kv(c), want, true, "state"));
    CHECK(opstate_consumer_close(c, NULL) == OPSTATE_OK);
    CHECK(drv_check_store(x, want, true));
    opstate_kv_destroy(want);
    drv_teardown(x);
}

/* ---- 5. out-of-order acks ------------------------------------------------ */

/* The longest fully-acked prefix of 1..n. */
DRV_STATIC uint64_t drv_prefix(const bool *acked, uint32_t n)
{
    uint32_t i;
    for (i = 1; i <= n && acked[i]; i++) continue;
    return i - 1;
}

DRV_STATIC void driver_test_out_of_order_acks(const driver_backend *b)
{
    static const uint64_t order[] = {3, 1, 5, 2, 8, 7};
    static const uint64_t marks[] = {0, 1, 1, 3, 3, 3};
    static const uint64_t redelivered[] = {4, 6, 9, 10};
    drv_ctx *x = drv_setup(b, 0);
    opstate_consumer_config cfg;
    opstate_consumer *c = NULL;
    opstate_poll_result res;
    opstate_kv *want = NULL;
    uint32_t i;
    REQUIRE(x);
    drv_publish_keys(x, "k", 1, 10);
    cfg = drv_cfg(x);
    cfg.apply = drv_apply;
    cfg.apply_user = x;
    drv_reset_counts(x);
    drv_set_range(&x->defer, 1, 10);
    REQUIRE(opstate_consumer_open(&cfg, &c, NULL) == OPSTATE_OK);
    CHECK(opstate_consumer_poll(c, 0, 0, &res, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(res.applied, 10);
    CHECK_EQ_U64(opstate_consumer_position(c).seq, 0);
    for (i = 0; i < COUNT_OF(order); i++) {
        drv_label(x, "ack", NULL, (unsigned long)order[i], 0);
        CHECK(opstate_consumer_ack(c, order[i]) == OPSTATE_OK);
        CHECK_EQ_U64(opstate_consumer_position(c).seq, marks[i]);
    }
    CASE("stray ack");
    CHECK(opstate_consumer_ack(c, 42) == OPSTATE_NOT_FOUND);
    CHECK_EQ_U64(opstate_consumer_position(c).seq, 3);
    CHECK(opstate_consumer_flush(c, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(drv_committed(x).position.seq, 3);
    drv_crash(x, c);

    CASE("after the crash");
    x->session = 1;
    x->ndelivered = 0;
    memset(&x->defer, 0, sizeof x->defer);
    c = NULL;
    REQUIRE(opstate_consumer_open(&cfg, &c, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(opstate_consumer_position(c).seq, 3);
    CHECK(drv_drain(c, 0, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(x->ndelivered, COUNT_OF(redelivered)); /* exactly the un-acked ones */
    for (i = 0; i < COUNT_OF(redelivered) && i < x->ndelivered; i++) CHECK_EQ_U64(x->delivered[i], redelivered[i]);
    CHECK_EQ_U64(opstate_consumer_get_status(c)->skipped, 3); /* 5, 7, 8: in the restored window */
    CHECK_EQ_U64(opstate_consumer_position(c).seq, 10);
    want = drv_fold(x, NULL);
    CHECK(drv_kv_equal(opstate_consumer_kv(c), want, true, "state"));
    CHECK(opstate_consumer_close(c, NULL) == OPSTATE_OK);

    /* DONE and DEFER mixed: the mark stops before the first deferred one */
    CASE("mixed done and defer");
    drv_reset_store(x);
    drv_reset_counts(x);
    drv_set_add(&x->defer, 3);
    drv_set_add(&x->defer, 6);
    c = NULL;
    REQUIRE(opstate_consumer_open(&cfg, &c, NULL) == OPSTATE_OK);
    CHECK(opstate_consumer_poll(c, 0, 0, &res, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(opstate_consumer_position(c).seq, 2);
    CHECK(opstate_consumer_ack(c, 6) == OPSTATE_OK);
    CHECK_EQ_U64(opstate_consumer_position(c).seq, 2);
    CHECK(opstate_consumer_ack(c, 3) == OPSTATE_OK);
    CHECK_EQ_U64(opstate_consumer_position(c).seq, 10);
    CHECK(opstate_consumer_close(c, NULL) == OPSTATE_OK);
    CHECK(drv_check_store(x, want, true));
    opstate_kv_destroy(want);
    drv_teardown(x);
}

/* Shuffled acks over 24 deferred events, a crash part-way: the position is
   always the acked prefix, and the reopened consumer redelivers exactly the
   un-acked events. */
DRV_STATIC void driver_test_ack_shuffle_crash(const driver_backend *b)
{
    const uint32_t n = 24;
    drv_ctx *x = drv_setup(b, 0);
    opstate_consumer_config cfg;
    opstate_consumer *c = NULL;
    opstate_poll_result res;
    opstate_kv *want = NULL;
    uint32_t seed, i, j, perm[25], cut, skipped;
    bool acked[25];
    uint64_t mark, state;
    REQUIRE(x);
    drv_publish_keys(x, "k", 1, n);
    want = drv_fold(x, NULL);
    cfg = drv_cfg(x);
    cfg.apply = drv_apply;
    cfg.apply_user = x;
    for (seed = 1; seed <= 8; seed++) {
        drv_label(x, "shuffle", "seed", seed, 0);
        drv_reset_store(x);
        drv_reset_counts(x);
        drv_set_range(&x->defer, 1, n);
        state = seed * UINT64_C(0x9e3779b97f4a7c15);
        for (i = 0; i < n; i++) perm[i] = i + 1;
        for (i = n - 1; i > 0; i--) { /* Fisher-Yates with an LCG */
            uint32_t t;
            state = state * UINT64_C(6364136223846793005) + UINT64_C(1442695040888963407);
            j = (uint32_t)((state >> 33) % (i + 1));
            t = perm[i];
            perm[i] = perm[j];
            perm[j] = t;
        }
        cut = 4 + seed * 2;
        memset(acked, 0, sizeof acked);
        c = NULL;
        REQUIRE(opstate_consumer_open(&cfg, &c, NULL) == OPSTATE_OK);
        CHECK(opstate_consumer_poll(c, 0, 0, &res, NULL) == OPSTATE_OK);
        CHECK_EQ_U64(res.applied, n);
        for (i = 0; i < cut; i++) {
            CHECK(opstate_consumer_ack(c, perm[i]) == OPSTATE_OK);
            acked[perm[i]] = true;
            CHECK_EQ_U64(opstate_consumer_position(c).seq, drv_prefix(acked, n));
        }
        mark = drv_prefix(acked, n);
        CHECK(opstate_consumer_flush(c, NULL) == OPSTATE_OK);
        CHECK_EQ_U64(drv_committed(x).position.seq, mark);
        drv_crash(x, c);
        x->session = 1;
        x->ndelivered = 0;
        memset(&x->defer, 0, sizeof x->defer);
        c = NULL;
        REQUIRE(opstate_consumer_open(&cfg, &c, NULL) == OPSTATE_OK);
        CHECK_EQ_U64(opstate_consumer_position(c).seq, mark);
        CHECK(drv_drain(c, 0, NULL) == OPSTATE_OK);
        for (i = 1, skipped = 0; i <= n; i++) {
            CHECK_EQ_U64(x->applies[1][i - 1], acked[i] ? 0u : 1u);
            skipped += acked[i] && i > mark;
        }
        CHECK_EQ_U64(opstate_consumer_get_status(c)->skipped, skipped);
        CHECK_EQ_U64(opstate_consumer_position(c).seq, n);
        CHECK(drv_kv_equal(opstate_consumer_kv(c), want, true, "state"));
        CHECK(opstate_consumer_close(c, NULL) == OPSTATE_OK);
        if (runner_failed_now()) break;
    }
    opstate_kv_destroy(want);
    drv_teardown(x);
}

/* ---- 6. point-in-time replay --------------------------------------------- */

typedef struct drv_timed_op {
    drv_op op;
    int64_t t; /* publish time offset, not monotonic with sequence */
} drv_timed_op;

static const drv_timed_op drv_replay_log[] = {
    {{"s1", "a", OPSTATE_OP_PUT, "a1"}, 100}, {{"s2", "x", OPSTATE_OP_PUT, "x1"}, 300},
    {{"s1", "b", OPSTATE_OP_PUT, "b1"}, 200}, {{"s1", "a", OPSTATE_OP_PUT, "a2"}, 500},
    {{"s2", "y", OPSTATE_OP_PUT, "y1"}, 150}, {{"s1", "b", OPSTATE_OP_DELETE, NULL}, 400},
    {{"s2", "x", OPSTATE_OP_PUT, "x2"}, 250}, {{"s1", "c", OPSTATE_OP_PUT, "c1"}, 600},
    {{"s2", "y", OPSTATE_OP_DELETE, NULL}, 120}, {{"s1", "a", OPSTATE_OP_PUT, "a3"}, 700},
    {{"s2", "z", OPSTATE_OP_PUT, "z1"}, 180}, {{"s1", "b", OPSTATE_OP_PUT, "b2"}, 800},
};
#define DRV_REPLAY_N 12u
#define DRV_CLOCK_BASE INT64_C(1750000000000000000)

DRV_STATIC void drv_replay_progress(void *user, uint64_t start, uint64_t end, uint64_t count, uint64_t current)
{
    drv_ctx *x = (drv_ctx *)user;
    if (x->progress_calls &&
        (start != x->progress_start || end != x->progress_end || count < x->progress_count || current < x->progress_current))
        x->progress_sane = false;
    x->progress_calls++;
    x->progress_start = start;
    x->progress_end = end;
    x->progress_count = count;
    x->progress_current = current;
    if (x->progress_appends < 10) { /* the log grows while the replay runs */
        x->progress_appends++;
        CHECK(drv_publish(x, "s1", "late", OPSTATE_OP_PUT, "late") != 0);
    }
}

DRV_STATIC opstate_result drv_replay(drv_ctx *x, opstate_replay_config *rc, opstate_kv **into, opstate_replay_result *rr)
{
    rc->log = x->log;
    if (!*into) *into = drv_new_kv();
    memset(rr, 0, sizeof *rr);
    return opstate_replay(rc, *into, rr, NULL);
}

DRV_STATIC void driver_test_replay_cutoffs(const driver_backend *b)
{
    drv_ctx *x = drv_setup(b, 0);
    opstate_replay_config rc;
    opstate_replay_result rr;
    opstate_kv *got = NULL, *want = NULL;
    drv_set s;
    char filter[64];
    size_t flen = 0, i;
    int64_t cut;
    uint64_t expect_applied = 0;
    REQUIRE(x);
    for (i = 0; i < DRV_REPLAY_N; i++) {
        if (x->clocked) CHECK(x->b->set_clock(x->env, DRV_CLOCK_BASE + drv_replay_log[i].t));
        REQUIRE(drv_publish(x, drv_replay_log[i].op.scope, drv_replay_log[i].op.key, drv_replay_log[i].op.op,
                            drv_replay_log[i].op.val) == i + 1);
    }

    CASE("until sequence 7");
    memset(&rc, 0, sizeof rc);
    rc.until_seq = 7;
    CHECK(drv_replay(x, &rc, &got, &rr) == OPSTATE_OK);
    want = drv_fold_ranges(x, 1, 7, 0, 0);
    CHECK(drv_kv_equal(got, want, true, "until_seq 7"));
    CHECK_EQ_U64(rr.end_seq, 7);
    CHECK_EQ_U64(rr.applied, 7);
    CHECK_EQ_U64(rr.position.seq, 7);
    opstate_kv_destroy(got);
    opstate_kv_destroy(want);
    got = want = NULL;

    CASE("until sequence past the end");
    memset(&rc, 0, sizeof rc);
    rc.until_seq = 1000;
    CHECK(drv_replay(x, &rc, &got, &rr) == OPSTATE_OK);
    CHECK_EQ_U64(rr.end_seq, DRV_REPLAY_N);
    CHECK_EQ_U64(rr.applied, DRV_REPLAY_N);
    opstate_kv_destroy(got);
    got = NULL;

    /* time: a filter on the publish time, not a stop at the first later
       event (times are not monotonic with sequence when the clock can be
       set) */
    CASE("until time");
    memset(&s, 0, sizeof s);
    if (x->clocked) {
        cut = DRV_CLOCK_BASE + 250;
        for (i = 0; i < DRV_REPLAY_N; i++)
            if (drv_replay_log[i].t <= 250) {
                drv_set_add(&s, i + 1);
                expect_applied++;
            }
        CHECK_EQ_U64(expect_applied, 6); /* 1, 3, 5, 7, 9, 11 */
        CHECK_EQ_U64(drv_time_of(x, 7), cut);
    } else {
        cut = drv_time_of(x, 7);
        drv_set_range(&s, 1, 7);
        expect_applied = 7;
    }
    memset(&rc, 0, sizeof rc);
    rc.has_until_time = true;
    rc.until_time = cut;
    CHECK(drv_replay(x, &rc, &got, &rr) == OPSTATE_OK);
    want = drv_fold(x, &s);
    CHECK(drv_kv_equal(got, want, true, "until_time"));
    CHECK_EQ_U64(rr.applied, expect_applied);
    CHECK_EQ_U64(rr.filtered, DRV_REPLAY_N - expect_applied);
    CHECK_EQ_U64(rr.end_seq, DRV_REPLAY_N);
    if (x->clocked) {
        CHECK_EQ_U64(rr.position.seq, 11); /* later sequences with earlier times are in */
        CHECK(drv_has(got, "s2", "x", "x2") && drv_has(got, "s2", "z", "z1") && !drv_has(got, "s2", "y", NULL));
        CHECK(drv_has(got, "s1", "a", "a1") && drv_has(got, "s1", "b", "b1") && !drv_has(got, "s1", "c", NULL));
    }
    opstate_kv_destroy(got);
    opstate_kv_destroy(want);
    got = want = NULL;

    CASE("count");
    memset(&rc, 0, sizeof rc);
    rc.max_events = 4;
    CHECK(drv_replay(x, &rc, &got, &rr) == OPSTATE_OK);
    want = drv_fold_ranges(x, 1, 4, 0, 0);
    CHECK(drv_kv_equal(got, want, true, "max_events 4"));
    CHECK_EQ_U64(rr.applied, 4);
    CHECK_EQ_U64(rr.position.seq, 4);
    opstate_kv_destroy(got);
    opstate_kv_destroy(want);
    got = want = NULL;

    CASE("one scope");
    REQUIRE(opstate_subject_filter(DRV_PREFIX, strlen(DRV_PREFIX), str("s2"), filter, sizeof filter, &flen, NULL) ==
            OPSTATE_OK);
    memset(&rc, 0, sizeof rc);
    rc.filter.ptr = (const uint8_t *)filter;
    rc.filter.len = flen;
    CHECK(drv_replay(x, &rc, &got, &rr) == OPSTATE_OK);
    memset(&s, 0, sizeof s);
    for (i = 0; i < DRV_REPLAY_N; i++)
        if (strcmp(drv_replay_log[i].op.scope, "s2") == 0) drv_set_add(&s, i + 1);
    want = drv_fold(x, &s);
    CHECK(drv_kv_equal(got, want, true, "scope s2"));
    CHECK_EQ_U64(rr.applied, 5);
    CHECK_EQ_U64(rr.position.seq, 11);
    CHECK(drv_has(got, "s2", "x", "x2") && !drv_has(got, "s1", "a", NULL));
    opstate_kv_destroy(got);
    opstate_kv_destroy(want);
    got = want = NULL;

    CASE("one scope, until sequence 7, count 2");
    rc.until_seq = 7;
    CHECK(drv_replay(x, &rc, &got, &rr) == OPSTATE_OK);
    CHECK_EQ_U64(rr.applied, 3); /* 2, 5, 7 */
    CHECK_EQ_U64(rr.end_seq, 7);
    CHECK(drv_has(got, "s2", "x", "x2") && drv_has(got, "s2", "y", "y1"));
    opstate_kv_destroy(got);
    got = NULL;
    rc.max_events = 2;
    CHECK(drv_replay(x, &rc, &got, &rr) == OPSTATE_OK);
    CHECK_EQ_U64(rr.applied, 2);
    CHECK_EQ_U64(rr.position.seq, 5);
    CHECK(drv_has(got, "s2", "x", "x1"));
    opstate_kv_destroy(got);
    got = NULL;

    CASE("from a snapshot (from_seq)");
    got = drv_fold_ranges(x, 1, 4, 0, 0);
    memset(&rc, 0, sizeof rc);
    rc.from_seq = 5;
    CHECK(drv_replay(x, &rc, &got, &rr) == OPSTATE_OK);
    CHECK_EQ_U64(rr.applied, DRV_REPLAY_N - 4);
    want = drv_fold(x, NULL);
    CHECK(drv_kv_equal(got, want, true, "snapshot of 1..4 + replay from 5"));
    opstate_kv_destroy(got);
    opstate_kv_destroy(want);
    drv_teardown(x);
}

/* The end is fixed when the replay starts: events appended meanwhile (here
   from the progress callback) are not included, and it returns. */
DRV_STATIC void driver_test_replay_deterministic_end(const driver_backend *b)
{
    drv_ctx *x = drv_setup(b, 0);
    opstate_replay_config rc;
    opstate_replay_result rr;
    opstate_kv *got = NULL, *want = NULL;
    REQUIRE(x);
    REQUIRE(drv_publish_ops(x, drv_workload, 12));
    want = drv_fold(x, NULL);
    memset(&rc, 0, sizeof rc);
    rc.batch = 2;
    rc.progress = drv_replay_progress;
    rc.progress_user = x;
    CHECK(drv_replay(x, &rc, &got, &rr) == OPSTATE_OK);
    CHECK_EQ_U64(rr.end_seq, 12);
    CHECK_EQ_U64(rr.applied, 12);
    CHECK_EQ_U64(rr.position.seq, 12);
    CHECK(drv_kv_equal(got, want, true, "replay"));
    CHECK(!drv_has(got, "s1", "late", NULL));
    CHECK(x->progress_calls >= 6);
    CHECK(x->progress_sane);
    CHECK_EQ_U64(x->progress_start, 1);
    CHECK_EQ_U64(x->progress_end, 12);
    CHECK_EQ_U64(x->progress_count, 12);
    CHECK_EQ_U64(x->progress_current, 12);
    CHECK(drv_info(x).last_seq > 12); /* the log did grow meanwhile */
    opstate_kv_destroy(got);
    opstate_kv_destroy(want);
    drv_teardown(x);
}

/* ---- 7. poison events ----------------------------------------------------- */

static const uint8_t drv_garbage[] = {'n', 'o', 't', ' ', 'a', 'n', ' ', 'e', 'v', 'e', 'n', 't', 0, 1, 2, 3};

/* Log: 1 a, 2 b, 3 garbage bytes, 4 c, 5 op the default apply rejects, 6 e. */
DRV_STATIC bool drv_poison_log(drv_ctx *x, opstate_id *rejected_id)
{
    opstate_event ev;
    if (drv_publish(x, "s1", "a", OPSTATE_OP_PUT, "a1") != 1 || drv_publish(x, "s1", "b", OPSTATE_OP_PUT, "b1") != 2)
        return false;
    if (drv_append_raw(x, DRV_PREFIX ".s1." DRV_KIND ".g", drv_garbage, sizeof drv_garbage) != 3) return false;
    if (drv_publish(x, "s1", "c", OPSTATE_OP_PUT, "c1") != 4) return false;
    ev = drv_event("s1", "d", OPSTATE_OP_APP + 1, "d1", ++x->ident);
    *rejected_id = ev.id;
    if (drv_publish_ev(x, &ev) != 5) return false;
    return drv_publish(x, "s1", "e", OPSTATE_OP_PUT, "e1") == 6;
}

DRV_STATIC void driver_test_poison_stop(const driver_backend *b)
{
    drv_ctx *x = drv_setup(b, 0);
    opstate_consumer_config cfg;
    opstate_consumer *c = NULL;
    const opstate_consumer_status *st;
    opstate_poll_result res;
    opstate_event scratch;
    opstate_result decode_error;
    opstate_id rejected, zero;
    opstate_kv *want = NULL;
    int round;
    REQUIRE(x);
    REQUIRE(drv_poison_log(x, &rejected));
    memset(&zero, 0, sizeof zero);
    decode_error = opstate_event_decode(drv_garbage, sizeof drv_garbage, &scratch, NULL);
    CHECK(decode_error != OPSTATE_OK);
    cfg = drv_cfg(x);
    cfg.poison = OPSTATE_POISON_STOP;
    REQUIRE(opstate_consumer_open(&cfg, &c, NULL) == OPSTATE_OK);
    st = opstate_consumer_get_status(c);
    for (round = 0; round < 3; round++) {
        drv_label(x, "stop at the undecodable message, poll", NULL, (unsigned long)round, 0);
        memset(&res, 0, sizeof res);
        CHECK(opstate_consumer_poll(c, 0, 0, &res, NULL) == OPSTATE_POISON);
        CHECK_EQ_U64(res.applied, round == 0 ? 2u : 0u);
        CHECK_EQ_U64(res.poison, round == 0 ? 1u : 0u); /* recorded once */
        CHECK_EQ_U64(st->poison_count, 1);
        CHECK_EQ_U64(opstate_consumer_position(c).seq, 2); /* does not pass it */
        CHECK_EQ_U64(st->last_poison.position.seq, 3);
        CHECK_EQ_U64(st->last_poison.position.epoch, drv_info(x).epoch);
        CHECK(opstate_id_equal(&st->last_poison.id, &zero));
        CHECK(st->last_poison.reason == decode_error);
    }
    CHECK(!drv_has(opstate_consumer_kv(c), "s1", "c", NULL));
    CHECK(opstate_consumer_close(c, NULL) == OPSTATE_OK);
    CASE("still stopped after a restart");
    c = NULL;
    REQUIRE(opstate_consumer_open(&cfg, &c, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(opstate_consumer_position(c).seq, 2);
    CHECK(opstate_consumer_poll(c, 0, 0, &res, NULL) == OPSTATE_POISON);
    CHECK_EQ_U64(opstate_consumer_get_status(c)->last_poison.position.seq, 3);
    CHECK(opstate_consumer_close(c, NULL) == OPSTATE_OK);
    drv_teardown(x);

    /* an apply REJECT under the stop policy */
    x = drv_setup(b, 0);
    REQUIRE(x);
    CASE("stop at an apply reject");
    REQUIRE(drv_publish(x, "s1", "a", OPSTATE_OP_PUT, "a1") == 1);
    scratch = drv_event("s1", "d", OPSTATE_OP_APP + 1, "d1", ++x->ident);
    REQUIRE(drv_publish_ev(x, &scratch) == 2);
    REQUIRE(drv_publish(x, "s1", "b", OPSTATE_OP_PUT, "b1") == 3);
    cfg = drv_cfg(x);
    c = NULL;
    REQUIRE(opstate_consumer_open(&cfg, &c, NULL) == OPSTATE_OK);
    st = opstate_consumer_get_status(c);
    CHECK(opstate_consumer_poll(c, 0, 0, &res, NULL) == OPSTATE_POISON);
    CHECK(opstate_consumer_poll(c, 0, 0, &res, NULL) == OPSTATE_POISON);
    CHECK_EQ_U64(st->poison_count, 1);
    CHECK_EQ_U64(st->last_poison.position.seq, 2);
    CHECK(opstate_id_equal(&st->last_poison.id, &scratch.id));
    CHECK(st->last_poison.reason == OPSTATE_POISON);
    CHECK_EQ_U64(opstate_consumer_position(c).seq, 1);
    want = drv_fold_ranges(x, 1, 1, 0, 0);
    CHECK(drv_kv_equal(opstate_consumer_kv(c), want, true, "state"));
    CHECK(opstate_consumer_close(c, NULL) == OPSTATE_OK);
    opstate_kv_destroy(want);
    drv_teardown(x);
}

DRV_STATIC void driver_test_poison_skip(const driver_backend *b)
{
    drv_ctx *x = drv_setup(b, 0);
    opstate_consumer_config cfg;
    opstate_consumer *c = NULL;
    const opstate_consumer_status *st;
    opstate_poll_result sum;
    opstate_replay_config rc;
    opstate_replay_result rr;
    opstate_id rejected;
    opstate_event good;
    opstate_kv *want = NULL, *got = NULL;
    drv_set s;
    REQUIRE(x);
    REQUIRE(drv_poison_log(x, &rejected));
    /* 7: a checksum mismatch (a flipped byte inside the encoding) */
    good = drv_event("s1", "f", OPSTATE_OP_PUT, "f1", ++x->ident);
    REQUIRE(drv_append_event_raw(x, &good, 5) == 7);
    REQUIRE(drv_publish(x, "s1", "g", OPSTATE_OP_PUT, "g1") == 8);
    cfg = drv_cfg(x);
    cfg.poison = OPSTATE_POISON_SKIP;
    REQUIRE(opstate_consumer_open(&cfg, &c, NULL) == OPSTATE_OK);
    st = opstate_consumer_get_status(c);
    CHECK(drv_drain(c, 0, &sum) == OPSTATE_OK);
    CHECK_EQ_U64(sum.poison, 3);
    CHECK_EQ_U64(st->poison_count, 3);
    CHECK_EQ_U64(st->last_poison.position.seq, 7);
    CHECK(st->last_poison.reason == OPSTATE_CORRUPT);
    CHECK_EQ_U64(opstate_consumer_position(c).seq, 8); /* moved on */
    memset(&s, 0, sizeof s);
    drv_set_range(&s, 1, 2);
    drv_set_add(&s, 4);
    drv_set_add(&s, 6);
    drv_set_add(&s, 8);
    want = drv_fold(x, &s);
    CHECK(drv_kv_equal(opstate_consumer_kv(c), want, true, "state"));
    CHECK(opstate_consumer_close(c, NULL) == OPSTATE_OK);
    CHECK(drv_check_store(x, want, true));

    /* the reject is recorded with its id (a stop consumer on 5 only) */
    CASE("reject recorded with its id");
    drv_reset_store(x);
    cfg.start.kind = OPSTATE_START_FROM_SEQUENCE;
    cfg.start.seq = 4;
    c = NULL;
    REQUIRE(opstate_consumer_open(&cfg, &c, NULL) == OPSTATE_OK);
    st = opstate_consumer_get_status(c);
    CHECK(opstate_consumer_poll(c, 2, 0, &sum, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(st->poison_count, 1);
    CHECK_EQ_U64(st->last_poison.position.seq, 5);
    CHECK(opstate_id_equal(&st->last_poison.id, &rejected));
    CHECK(st->last_poison.reason == OPSTATE_POISON);
    CHECK_EQ_U64(opstate_consumer_position(c).seq, 5);
    CHECK(opstate_consumer_close(c, NULL) == OPSTATE_OK);

    /* replay skips and counts them the same way */
    CASE("replay counts poison");
    memset(&rc, 0, sizeof rc);
    CHECK(drv_replay(x, &rc, &got, &rr) == OPSTATE_OK);
    CHECK_EQ_U64(rr.poison, 3);
    CHECK_EQ_U64(rr.applied, 5);
    CHECK(drv_kv_equal(got, want, true, "replay"));
    opstate_kv_destroy(got);
    opstate_kv_destroy(want);
    drv_teardown(x);
}

/* ---- 8. live gap detection ------------------------------------------------ */

/* 1 A=a1, 2 B=b1, 3 C=c1 read live; then 4 del B, 5 A=a2, 6 C=c2, 7 A=a3
   and everything below `purge_below` is evicted before the consumer reads
   it. */
DRV_STATIC void drv_live_gap(const driver_backend *b, int variant)
{
    static const char *const names[] = {"resync", "no_resync", "custom apply: rebuild"};
    drv_ctx *x = drv_setup(b, 0);
    opstate_consumer_config cfg;
    opstate_consumer *c = NULL;
    const opstate_consumer_status *st;
    opstate_poll_result sum;
    opstate_kv *want = NULL;
    uint32_t warn_before;
    REQUIRE(x);
    drv_label(x, "live gap", names[variant], 0, 0);
    REQUIRE(drv_publish(x, "s1", "A", OPSTATE_OP_PUT, "a1") == 1);
    REQUIRE(drv_publish(x, "s1", "B", OPSTATE_OP_PUT, "b1") == 2);
    REQUIRE(drv_publish(x, "s1", "C", OPSTATE_OP_PUT, "c1") == 3);
    cfg = drv_cfg(x);
    cfg.no_resync = variant == 1;
    if (variant == 2) {
        cfg.apply = drv_apply;
        cfg.apply_user = x;
    }
    REQUIRE(opstate_consumer_open(&cfg, &c, NULL) == OPSTATE_OK);
    st = opstate_consumer_get_status(c);
    CHECK(drv_drain(c, 0, &sum) == OPSTATE_OK && sum.caught_up);
    CHECK_EQ_U64(opstate_consumer_position(c).seq, 3);
    REQUIRE(drv_publish(x, "s1", "B", OPSTATE_OP_DELETE, NULL) == 4);
    REQUIRE(drv_publish(x, "s1", "A", OPSTATE_OP_PUT, "a2") == 5);
    REQUIRE(drv_publish(x, "s1", "C", OPSTATE_OP_PUT, "c2") == 6);
    REQUIRE(drv_publish(x, "s1", "A", OPSTATE_OP_PUT, "a3") == 7);
    x->b->purge(x->env, 6);
    warn_before = x->log_warn;
    CHECK(drv_drain(c, 0, &sum) == OPSTATE_OK);
    CHECK(x->log_warn > warn_before); /* noticed, not skipped silently */
    CHECK_EQ_U64(opstate_consumer_position(c).seq, 7);
    want = drv_fold(x, NULL); /* retained: C=c2, A=a3 */
    if (variant == 1) {
        CHECK(!st->resynced);
        CHECK(drv_has(opstate_consumer_kv(c), "s1", "B", "b1")); /* the stale twin */
    } else {
        CHECK(!drv_has(opstate_consumer_kv(c), "s1", "B", NULL));
        CHECK(drv_kv_equal(opstate_consumer_kv(c), want, true, "state after the gap"));
        if (variant == 0) {
            CHECK(st->resynced);
            CHECK_EQ_U64(st->resync_removed, 1);
        }
    }
    CHECK(drv_has(opstate_consumer_kv(c), "s1", "A", "a3") && drv_has(opstate_consumer_kv(c), "s1", "C", "c2"));
    CHECK(opstate_consumer_close(c, NULL) == OPSTATE_OK);
    if (variant != 1) CHECK(drv_check_store(x, want, true));
    opstate_kv_destroy(want);
    drv_teardown(x);
}

DRV_STATIC void driver_test_live_gap(const driver_backend *b)
{
    int v;
    for (v = 0; v < 3; v++) drv_live_gap(b, v);
}

/* Everything after the cursor is evicted (the stream is empty): the next
   poll must notice rather than report caught up on a stale state. */
DRV_STATIC void driver_test_live_gap_all_evicted(const driver_backend *b)
{
    drv_ctx *x = drv_setup(b, 0);
    opstate_consumer_config cfg;
    opstate_consumer *c = NULL;
    const opstate_consumer_status *st;
    opstate_poll_result sum;
    REQUIRE(x);
    REQUIRE(drv_publish(x, "s1", "A", OPSTATE_OP_PUT, "a1") == 1);
    REQUIRE(drv_publish(x, "s1", "B", OPSTATE_OP_PUT, "b1") == 2);
    cfg = drv_cfg(x);
    REQUIRE(opstate_consumer_open(&cfg, &c, NULL) == OPSTATE_OK);
    st = opstate_consumer_get_status(c);
    CHECK(drv_drain(c, 0, &sum) == OPSTATE_OK);
    REQUIRE(drv_publish(x, "s1", "B", OPSTATE_OP_DELETE, NULL) == 3);
    x->b->purge(x->env, 4);
    CHECK_EQ_U64(drv_info(x).messages, 0);
    CHECK(drv_drain(c, 0, &sum) == OPSTATE_OK);
    CHECK(st->resynced); /* the evicted delete of B was noticed */
    CHECK(!drv_has(opstate_consumer_kv(c), "s1", "B", NULL));
    CHECK(opstate_consumer_close(c, NULL) == OPSTATE_OK);
    /* a restart sees it at once (resume check at open) */
    CASE("at the next open");
    c = NULL;
    REQUIRE(opstate_consumer_open(&cfg, &c, NULL) == OPSTATE_OK);
    CHECK(opstate_consumer_get_status(c)->resume.state == OPSTATE_RESUME_EXPIRED);
    CHECK(!drv_has(opstate_consumer_kv(c), "s1", "B", NULL));
    CHECK(opstate_consumer_close(c, NULL) == OPSTATE_OK);
    drv_teardown(x);
}

/* The stream is recreated under a live consumer: reset, rebuilt from the
   new stream (also when the new one is already longer than the cursor). */
DRV_STATIC void driver_test_live_stream_recreated(const driver_backend *b)
{
    int variant;
    for (variant = 0; variant < 2; variant++) {
        drv_ctx *x = drv_setup(b, 0);
        opstate_consumer_config cfg;
        opstate_consumer *c = NULL;
        const opstate_consumer_status *st;
        opstate_kv *want = NULL;
        opstate_stream_info si;
        REQUIRE(x);
        drv_label(x, "recreated while live, new events", NULL, variant ? 6ul : 2ul, 0);
        drv_publish_keys(x, "k", 1, 3);
        cfg = drv_cfg(x);
        cfg.flush_every = 2;
        REQUIRE(opstate_consumer_open(&cfg, &c, NULL) == OPSTATE_OK);
        st = opstate_consumer_get_status(c);
        CHECK(drv_drain(c, 0, NULL) == OPSTATE_OK);
        CHECK_EQ_U64(opstate_consumer_position(c).seq, 3);
        x->b->recreate(x->env);
        x->n = 0;
        drv_publish_keys(x, "n", 1, variant ? 6u : 2u);
        CHECK(drv_drain(c, 0, NULL) == OPSTATE_OK);
        CHECK_EQ_U64(st->resets, 1);
        si = drv_info(x);
        want = drv_fold(x, NULL);
        CHECK(drv_kv_equal(opstate_consumer_kv(c), want, true, "state"));
        CHECK(!drv_has(opstate_consumer_kv(c), "s1", "k01", NULL));
        CHECK_EQ_U64(opstate_consumer_position(c).seq, si.last_seq);
        CHECK_EQ_U64(opstate_consumer_position(c).epoch, si.epoch);
        CHECK(opstate_consumer_close(c, NULL) == OPSTATE_OK);
        CHECK(drv_check_store(x, want, true));
        CHECK_EQ_U64(drv_committed(x).position.epoch, si.epoch);
        opstate_kv_destroy(want);
        drv_teardown(x);
    }
}

/* ---- at-least-once delivery ------------------------------------------------ */

/* A log wrapper that redelivers: every other read starts `back` sequences
   before the requested one (as a transport redelivers after a lost ack),
   always with at least one new message when there is one. */
typedef struct drv_redeliver {
    opstate_log inner;
    uint64_t back, reads, redelivered;
} drv_redeliver;

DRV_STATIC opstate_result drv_redeliver_read(void *user, opstate_bytes filter, uint64_t from_seq, int64_t wait_ns,
                                             opstate_log_message *msgs, size_t max, size_t *count, opstate_error *err)
{
    drv_redeliver *d = (drv_redeliver *)user;
    uint64_t from = (d->reads++ % 2 == 1 && from_seq > d->back) ? from_seq - d->back : from_seq;
    size_t i;
    opstate_result r = d->inner.read(d->inner.user, filter, from, wait_ns, msgs, max, count, err);
    if (r == OPSTATE_OK && from != from_seq && (*count == 0 || msgs[*count - 1].position.seq < from_seq))
        r = d->inner.read(d->inner.user, filter, from_seq, wait_ns, msgs, max, count, err);
    for (i = 0; r == OPSTATE_OK && i < *count; i++) d->redelivered += msgs[i].position.seq < from_seq;
    return r;
}

DRV_STATIC opstate_result drv_redeliver_append(void *user, opstate_bytes subject, opstate_bytes data,
                                               const opstate_append_options *opts, opstate_append_result *out,
                                               opstate_error *err)
{
    drv_redeliver *d = (drv_redeliver *)user;
    return d->inner.append(d->inner.user, subject, data, opts, out, err);
}

DRV_STATIC opstate_result drv_redeliver_info(void *user, opstate_stream_info *out, opstate_error *err)
{
    drv_redeliver *d = (drv_redeliver *)user;
    return d->inner.info(d->inner.user, out, err);
}

DRV_STATIC opstate_result drv_redeliver_last(void *user, opstate_bytes filter, opstate_log_visit_fn fn, void *fn_user,
                                             opstate_error *err)
{
    drv_redeliver *d = (drv_redeliver *)user;
    return d->inner.last_per_subject(d->inner.user, filter, fn, fn_user, err);
}

DRV_STATIC opstate_result drv_redeliver_ack(void *user, uint64_t upto_seq, opstate_error *err)
{
    drv_redeliver *d = (drv_redeliver *)user;
    return d->inner.ack ? d->inner.ack(d->inner.user, upto_seq, err) : OPSTATE_OK;
}

/* Redelivered events are skipped, never applied twice: the ones already
   acked (in the dedup window) and the DEFERred ones not acked yet (only
   the position guards those). */
DRV_STATIC void driver_test_redelivery(const driver_backend *b)
{
    drv_ctx *x = drv_setup(b, 0);
    drv_redeliver d;
    opstate_consumer_config cfg;
    opstate_consumer *c = NULL;
    const opstate_consumer_status *st;
    opstate_kv *want = NULL;
    uint32_t i;
    REQUIRE(x);
    REQUIRE(drv_publish_ops(x, drv_workload, DRV_WORKLOAD_N));
    memset(&d, 0, sizeof d);
    d.inner = x->log;
    d.back = 2;
    cfg = drv_cfg(x);
    cfg.log.user = &d;
    cfg.log.read = drv_redeliver_read;
    cfg.log.append = drv_redeliver_append;
    cfg.log.info = drv_redeliver_info;
    cfg.log.last_per_subject = drv_redeliver_last;
    cfg.log.ack = drv_redeliver_ack;
    cfg.apply = drv_apply;
    cfg.apply_user = x;
    cfg.flush_every = 4;
    drv_reset_counts(x);
    drv_set_add(&x->defer, 4);
    drv_set_add(&x->defer, 9);
    drv_set_add(&x->defer, 10);
    REQUIRE(opstate_consumer_open(&cfg, &c, NULL) == OPSTATE_OK);
    st = opstate_consumer_get_status(c);
    CHECK(drv_drain(c, 4, NULL) == OPSTATE_OK);
    CHECK(d.redelivered >= 6); /* the wrapper did redeliver */
    CHECK_EQ_U64(st->skipped, d.redelivered);
    CHECK_EQ_U64(st->applied, DRV_WORKLOAD_N);
    CHECK_EQ_U64(opstate_consumer_position(c).seq, 3);
    CHECK(opstate_consumer_ack(c, 9) == OPSTATE_OK);
    CHECK(opstate_consumer_ack(c, 4) == OPSTATE_OK);
    CHECK_EQ_U64(opstate_consumer_position(c).seq, 9); /* 10 is still out */
    CHECK(opstate_consumer_ack(c, 10) == OPSTATE_OK);
    CHECK_EQ_U64(opstate_consumer_position(c).seq, DRV_WORKLOAD_N);
    for (i = 0; i < DRV_WORKLOAD_N; i++) CHECK_EQ_U64(x->applies[0][i], 1);
    want = drv_fold(x, NULL);
    CHECK(drv_kv_equal(opstate_consumer_kv(c), want, true, "state"));
    CHECK(opstate_consumer_close(c, NULL) == OPSTATE_OK);
    CHECK(drv_check_store(x, want, true));
    opstate_kv_destroy(want);
    drv_teardown(x);
}

/* A consumer that owns one scope: the other scope's sequences are gaps it
   must recognise as "other subjects" (no resync), across a restart too. */
DRV_STATIC void driver_test_filtered_consumer(const driver_backend *b)
{
    drv_ctx *x = drv_setup(b, 0);
    opstate_consumer_config cfg;
    opstate_consumer *c = NULL;
    opstate_poll_result res;
    opstate_kv *want = NULL;
    drv_set s1;
    char filter[64];
    size_t flen = 0, i;
    uint64_t last_s1 = 0;
    REQUIRE(x);
    REQUIRE(drv_publish_ops(x, drv_workload, DRV_WORKLOAD_N));
    memset(&s1, 0, sizeof s1);
    for (i = 0; i < DRV_WORKLOAD_N; i++)
        if (strcmp(drv_workload[i].scope, "s1") == 0) {
            drv_set_add(&s1, x->seqs[i]);
            last_s1 = x->seqs[i];
        }
    REQUIRE(opstate_subject_filter(DRV_PREFIX, strlen(DRV_PREFIX), str("s1"), filter, sizeof filter, &flen, NULL) ==
            OPSTATE_OK);
    cfg = drv_cfg(x);
    cfg.filter.ptr = (const uint8_t *)filter;
    cfg.filter.len = flen;
    cfg.flush_every = 2;
    REQUIRE(opstate_consumer_open(&cfg, &c, NULL) == OPSTATE_OK);
    CHECK(opstate_consumer_poll(c, 5, 0, &res, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(res.applied, 5);
    drv_crash(x, c);
    c = NULL;
    REQUIRE(opstate_consumer_open(&cfg, &c, NULL) == OPSTATE_OK);
    CHECK(drv_drain(c, 2, NULL) == OPSTATE_OK);
    CHECK(!opstate_consumer_get_status(c)->resynced);
    CHECK_EQ_U64(opstate_consumer_get_status(c)->resets, 0);
    CHECK_EQ_U64(opstate_consumer_position(c).seq, last_s1);
    want = drv_fold(x, &s1);
    CHECK(drv_kv_equal(opstate_consumer_kv(c), want, true, "scope s1"));
    CHECK(opstate_consumer_close(c, NULL) == OPSTATE_OK);
    CHECK(drv_check_store(x, want, true));
    opstate_kv_destroy(want);
    drv_teardown(x);
}

/* A from-time start is a START (the first event published at or after T),
   not a filter: later events with earlier publish times are applied.
   Needs a log whose clock the test sets. */
DRV_STATIC void driver_test_from_time_is_a_start(const driver_backend *b)
{
    static const int64_t times[] = {100, 200, 300, 150, 400, 120};
    drv_ctx *x = drv_setup(b, 0);
    opstate_consumer_config cfg;
    opstate_consumer *c = NULL;
    opstate_kv *want = NULL;
    char key[8];
    size_t i;
    REQUIRE(x);
    if (!x->clocked) { /* nothing to test: publish times are monotonic */
        drv_teardown(x);
        return;
    }
    for (i = 0; i < COUNT_OF(times); i++) {
        snprintf(key, sizeof key, "k%u", (unsigned)i + 1);
        CHECK(x->b->set_clock(x->env, DRV_CLOCK_BASE + times[i]));
        REQUIRE(drv_publish(x, "s1", key, OPSTATE_OP_PUT, "v") == i + 1);
    }
    cfg = drv_cfg(x);
    cfg.start.kind = OPSTATE_START_FROM_TIME;
    cfg.start.time = DRV_CLOCK_BASE + 200;
    REQUIRE(opstate_consumer_open(&cfg, &c, NULL) == OPSTATE_OK);
    CHECK(drv_drain(c, 2, NULL) == OPSTATE_OK);
    want = drv_fold_ranges(x, 2, 6, 0, 0); /* 4 (t 150) and 6 (t 120) included */
    CHECK(drv_kv_equal(opstate_consumer_kv(c), want, true, "state"));
    CHECK_EQ_U64(opstate_consumer_get_status(c)->skipped, 1);
    CHECK(opstate_consumer_close(c, NULL) == OPSTATE_OK);
    opstate_kv_destroy(want);
    drv_teardown(x);
}

/* More deferred events than the ack tracker holds: poll stops quietly at
   the window, nothing is lost or applied twice, and acks make room. */
DRV_STATIC void driver_test_deferred_window_full(const driver_backend *b)
{
    const uint32_t total = OPSTATE_HWM_CAPACITY + 40;
    drv_ctx *x = drv_setup(b, 0);
    opstate_consumer_config cfg;
    opstate_consumer *c = NULL;
    opstate_poll_result res;
    uint32_t i, round;
    char key[16];
    REQUIRE(x);
    REQUIRE(total < DRV_MAX_EVENTS);
    for (i = 1; i <= total; i++) {
        snprintf(key, sizeof key, "k%03u", (unsigned)i);
        REQUIRE(drv_publish(x, "s1", key, OPSTATE_OP_PUT, "v") == i);
    }
    cfg = drv_cfg(x);
    cfg.apply = drv_apply;
    cfg.apply_user = x;
    drv_reset_counts(x);
    memset(&x->defer, 0xff, sizeof x->defer); /* seqs 0..255 deferred */
    REQUIRE(opstate_consumer_open(&cfg, &c, NULL) == OPSTATE_OK);
    CHECK(opstate_consumer_poll(c, 0, 0, &res, NULL) == OPSTATE_OK); /* one batch: 256 */
    CHECK(opstate_consumer_poll(c, 0, 0, &res, NULL) == OPSTATE_OK);
    CHECK(!res.caught_up); /* stopped at the window, not at the end */
    CHECK_EQ_U64(opstate_consumer_get_status(c)->applied, OPSTATE_HWM_CAPACITY);
    CHECK_EQ_U64(opstate_consumer_position(c).seq, 0);
    for (round = 0; round < 2; round++) { /* still full: nothing more is taken */
        CHECK(opstate_consumer_poll(c, 0, 0, &res, NULL) == OPSTATE_OK);
        CHECK_EQ_U64(res.applied, 0);
    }
    for (i = 1; i <= 255; i++) CHECK(opstate_consumer_ack(c, i) == OPSTATE_OK);
    CHECK_EQ_U64(opstate_consumer_position(c).seq, 256); /* 256 was not deferred */
    CHECK(drv_drain(c, 0, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(opstate_consumer_position(c).seq, total);
    for (i = 0; i < total; i++) CHECK_EQ_U64(x->applies[0][i], 1);
    CHECK(opstate_consumer_close(c, NULL) == OPSTATE_OK);
    drv_teardown(x);
}

/* ---- 9. schema versions --------------------------------------------------- */

DRV_STATIC opstate_result drv_upgrade(void *user, uint32_t from_version, opstate_kv *kv)
{
    drv_ctx *x = (drv_ctx *)user;
    opstate_position p = {0, 0, 0};
    x->upgrades++;
    x->upgraded_from = from_version;
    if (x->upgrade_result != OPSTATE_OK) return x->upgrade_result;
    return opstate_kv_put(kv, str("upgraded"), str("yes"), p);
}

/* Log of 6 events; a consumer with schema 2 stored 1..4. */
DRV_STATIC drv_ctx *drv_schema_setup(const driver_backend *b)
{
    drv_ctx *x = drv_setup(b, 0);
    opstate_consumer_config cfg;
    opstate_consumer *c = NULL;
    opstate_poll_result res;
    if (!x) return NULL;
    CHECK(drv_publish_ops(x, drv_workload, 6));
    cfg = drv_cfg(x);
    cfg.schema.version = 2;
    CHECK(opstate_consumer_open(&cfg, &c, NULL) == OPSTATE_OK);
    if (c) {
        CHECK(opstate_consumer_poll(c, 4, 0, &res, NULL) == OPSTATE_OK);
        CHECK(opstate_consumer_close(c, NULL) == OPSTATE_OK);
    }
    CHECK_EQ_U64(drv_committed(x).schema_version, 2);
    CHECK_EQ_U64(drv_committed(x).position.seq, 4);
    return x;
}

DRV_STATIC void driver_test_schema_versions(const driver_backend *b)
{
    drv_ctx *x = drv_schema_setup(b);
    opstate_consumer_config cfg;
    opstate_consumer *c = NULL;
    opstate_error err;
    opstate_poll_result sum;
    opstate_kv *want = NULL;
    opstate_position p = {0, 0, 0};
    REQUIRE(x);

    CASE("stored schema newer");
    cfg = drv_cfg(x);
    cfg.schema.version = 1;
    memset(&err, 0, sizeof err);
    CHECK(opstate_consumer_open(&cfg, &c, &err) == OPSTATE_SCHEMA_TOO_NEW);
    CHECK(c == NULL);
    CHECK_EQ_U64(drv_committed(x).schema_version, 2); /* refused, not dropped */
    CHECK_EQ_U64(drv_committed(x).position.seq, 4);

    CASE("older, with upgrade");
    cfg.schema.version = 3;
    cfg.schema.upgrade = drv_upgrade;
    cfg.schema.user = x;
    c = NULL;
    REQUIRE(opstate_consumer_open(&cfg, &c, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(x->upgrades, 1);
    CHECK_EQ_U64(x->upgraded_from, 2);
    CHECK(opstate_consumer_get_status(c)->decision.restore);
    CHECK_EQ_U64(opstate_consumer_position(c).seq, 4);
    CHECK(drv_drain(c, 0, &sum) == OPSTATE_OK);
    CHECK_EQ_U64(sum.applied, 2);
    want = drv_fold(x, NULL);
    if (want) CHECK(opstate_kv_put(want, str("upgraded"), str("yes"), p) == OPSTATE_OK);
    CHECK(drv_kv_equal(opstate_consumer_kv(c), want, true, "upgraded state"));
    CHECK(opstate_consumer_close(c, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(drv_committed(x).schema_version, 3);
    CHECK(drv_check_store(x, want, true));
    c = NULL;
    REQUIRE(opstate_consumer_open(&cfg, &c, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(x->upgrades, 1); /* current now: no second upgrade */
    CHECK(drv_kv_equal(opstate_consumer_kv(c), want, true, "reopened"));
    CHECK(opstate_consumer_close(c, NULL) == OPSTATE_OK);
    opstate_kv_destroy(want);
    drv_teardown(x);

    CASE("older, no upgrade: cleared and replayed");
    x = drv_schema_setup(b);
    REQUIRE(x);
    cfg = drv_cfg(x);
    cfg.schema.version = 3;
    c = NULL;
    REQUIRE(opstate_consumer_open(&cfg, &c, NULL) == OPSTATE_OK);
    CHECK(!opstate_consumer_get_status(c)->decision.restore);
    CHECK_EQ_U64(opstate_consumer_position(c).seq, 0);
    CHECK_EQ_U64(opstate_kv_count(opstate_consumer_kv(c)), 0);
    CHECK(drv_drain(c, 0, &sum) == OPSTATE_OK);
    CHECK_EQ_U64(sum.applied, 6);
    want = drv_fold(x, NULL);
    CHECK(drv_kv_equal(opstate_consumer_kv(c), want, true, "replayed state"));
    CHECK(opstate_consumer_close(c, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(drv_committed(x).schema_version, 3);
    CHECK(drv_check_store(x, want, true));
    opstate_kv_destroy(want);
    drv_teardown(x);

    CASE("older, upgrade fails");
    x = drv_schema_setup(b);
    REQUIRE(x);
    x->upgrade_result = OPSTATE_MALFORMED;
    cfg = drv_cfg(x);
    cfg.schema.version = 3;
    cfg.schema.upgrade = drv_upgrade;
    cfg.schema.user = x;
    c = NULL;
    CHECK(opstate_consumer_open(&cfg, &c, NULL) == OPSTATE_MALFORMED);
    CHECK(c == NULL);
    CHECK_EQ_U64(drv_committed(x).schema_version, 2);
    drv_teardown(x);
}

/* ---- a transport that loses, doubles, reorders and delays --------------- */

/* What the fault_log runs of one test did, for the closing line. */
typedef struct drv_fault_totals {
    uint64_t seeds, dropped, duplicated, reordered, delayed, failed, rereads, gaps, crashes, lost, doubled;
} drv_fault_totals;

/* An event applied `got` times where `want` was due: lost or doubled. */
DRV_STATIC void drv_fault_count(drv_fault_totals *t, uint32_t want, uint32_t got)
{
    t->lost += got < want;
    t->doubled += got > want;
}

/* The consumer of one seed: polls (a random count each) until its mark is
   at `last`, riding over the log's injected failures; with crash_after,
   crashes once after that many polls and reopens. Returns the position
   committed before the crash (0: none or no crash). */
DRV_STATIC uint64_t drv_fault_consume(drv_ctx *x, fault_log *f, const char *filter, uint64_t last, uint32_t crash_after,
                                      drv_fault_totals *t)
{
    opstate_consumer_config cfg = drv_cfg(x);
    opstate_consumer *c = NULL;
    opstate_poll_result res;
    uint64_t mark = 0;
    uint32_t polls;
    cfg.log = fault_log_iface(f);
    cfg.filter = str(filter);
    cfg.apply = drv_apply;
    cfg.apply_user = x;
    cfg.flush_every = 1 + fault_log_below(f, 4);
    cfg.batch = 1 + fault_log_below(f, 8);
    for (polls = 0; polls < 20000; polls++) {
        opstate_result r;
        if (!c && opstate_consumer_open(&cfg, &c, NULL) != OPSTATE_OK) continue; /* an injected failure */
        if (opstate_consumer_position(c).seq >= last) break;
        if (polls == crash_after) {
            mark = drv_committed(x).position.seq;
            drv_crash(x, c);
            c = NULL;
            x->session = 1;
            t->crashes++;
            continue;
        }
        r = opstate_consumer_poll(c, 1 + fault_log_below(f, 6), 0, &res, NULL);
        t->gaps += r == OPSTATE_GAP;
        CHECK(r == OPSTATE_OK || r == OPSTATE_TIMEOUT || r == OPSTATE_GAP);
    }
    if (!c) {
        runner_fail(__FILE__, __LINE__, "the consumer never reopened");
        return mark;
    }
    CHECK_EQ_U64(opstate_consumer_position(c).seq, last);
    t->rereads += opstate_consumer_get_status(c)->rereads;
    CHECK(opstate_consumer_close(c, NULL) == OPSTATE_OK);
    return mark;
}

/* One seed: every event of the filter applied exactly once (across a
   crash: at or below the committed mark in the first session only, above
   it in the second), nothing else applied, state == the expected fold. */
DRV_STATIC void drv_fault_run(drv_ctx *x, uint64_t seed, const drv_set *s1, const opstate_kv *want_all,
                              const opstate_kv *want_s1, drv_fault_totals *t)
{
    fault_log f;
    bool filtered = seed % 2 == 0;
    uint32_t crash_after, i;
    uint64_t last = 0, mark;
    for (i = 0; i < x->n; i++)
        if (!filtered || drv_set_has(s1, x->seqs[i])) last = x->seqs[i];
    drv_label(x, "seed", filtered ? "filter ops.s1.>" : "all", (unsigned long)seed, 0);
    drv_reset_store(x);
    drv_reset_counts(x);
    fault_log_init(&f, x->log, seed);
    crash_after = seed % 3 == 0 ? 1 + fault_log_below(&f, 12) : UINT32_MAX;
    mark = drv_fault_consume(x, &f, filtered ? DRV_PREFIX ".s1.>" : NULL, last, crash_after, t);
    for (i = 0; i < x->n; i++) {
        uint32_t mine = !filtered || drv_set_has(s1, x->seqs[i]);
        if (x->session == 0) { /* no crash */
            drv_fault_count(t, mine, x->applies[0][i]);
        } else if (x->seqs[i] <= mark) { /* committed before the crash: never again */
            drv_fault_count(t, mine, x->applies[0][i]);
            drv_fault_count(t, 0, x->applies[1][i]);
        } else { /* lost in the crash: applied again, once */
            drv_fault_count(t, mine, x->applies[1][i]);
            CHECK(x->applies[0][i] <= mine);
        }
    }
    CHECK_EQ_U64(t->lost, 0);
    CHECK_EQ_U64(t->doubled, 0);
    CHECK_EQ_U64(x->foreign, 0);
    CHECK(drv_check_store(x, filtered ? want_s1 : want_all, true));
    t->seeds++;
    t->dropped += f.dropped;
    t->duplicated += f.duplicated;
    t->reordered += f.reordered;
    t->delayed += f.delayed;
    t->failed += f.failed;
}

/* The gap rule under faults: the mark never passes an event it did not
   apply, whatever the transport does (DESIGN.md "Gaps while live"). */
DRV_STATIC void driver_test_fault_log(const driver_backend *b)
{
    drv_ctx *x = drv_setup(b, 0);
    drv_fault_totals t;
    opstate_kv *want_all, *want_s1;
    drv_set s1;
    uint64_t seed, seeds = b && b->fault_seeds ? b->fault_seeds : 1000;
    size_t i;
    REQUIRE(x);
    REQUIRE(drv_publish_ops(x, drv_workload, DRV_WORKLOAD_N));
    memset(&s1, 0, sizeof s1);
    memset(&t, 0, sizeof t);
    for (i = 0; i < DRV_WORKLOAD_N; i++)
        if (strcmp(drv_workload[i].scope, "s1") == 0) drv_set_add(&s1, x->seqs[i]);
    want_all = drv_fold(x, NULL);
    want_s1 = drv_fold(x, &s1);
    for (seed = 1; seed <= seeds && want_all && want_s1 && !runner_failed_now(); seed++)
        drv_fault_run(x, seed, &s1, want_all, want_s1, &t);
    printf("    fault log (%s): %llu seeds, %llu dropped, %llu duplicated, %llu reordered, %llu delayed, %llu failed; "
           "%llu holes re-read, %llu GAP stops, %llu crashes; events lost %llu, applied twice %llu\n",
           b->name, (unsigned long long)t.seeds, (unsigned long long)t.dropped, (unsigned long long)t.duplicated,
           (unsigned long long)t.reordered, (unsigned long long)t.delayed, (unsigned long long)t.failed,
           (unsigned long long)t.rereads, (unsigned long long)t.gaps, (unsigned long long)t.crashes,
           (unsigned long long)t.lost, (unsigned long long)t.doubled);
    CHECK(t.dropped > 0 && t.rereads > 0); /* the faults happened and the rule was exercised */
    opstate_kv_destroy(want_all);
    opstate_kv_destroy(want_s1);
    drv_teardown(x);
}

/* A hole the log never vouches for (other subjects under a filter, read
   through a log that cannot tell) is re-read a bounded number of times,
   then poll stops with GAP; the mark never passes it, nothing after it is
   applied, and once the log vouches again the consumer goes on. */
DRV_STATIC void driver_test_unproven_hole_stops(const driver_backend *b)
{
    drv_ctx *x = drv_setup(b, 0);
    fault_log f;
    opstate_consumer_config cfg;
    opstate_consumer *c = NULL;
    opstate_poll_result res;
    opstate_result r = OPSTATE_OK;
    uint64_t before_hole;
    unsigned polls;
    REQUIRE(x);
    REQUIRE(drv_publish(x, "s1", "a", OPSTATE_OP_PUT, "a1") == 1);
    REQUIRE(drv_publish(x, "s2", "d", OPSTATE_OP_PUT, "d1") == 2);
    REQUIRE(drv_publish(x, "s1", "b", OPSTATE_OP_PUT, "b1") == 3);
    fault_log_init(&f, x->log, 1);
    f.drop = f.duplicate = f.reorder = f.delay = f.fail = 0;
    f.no_vouching = true;
    cfg = drv_cfg(x);
    cfg.log = fault_log_iface(&f);
    cfg.filter = str(DRV_PREFIX ".s1.>");
    cfg.apply = drv_apply;
    cfg.apply_user = x;
    drv_reset_counts(x);
    REQUIRE(opstate_consumer_open(&cfg, &c, NULL) == OPSTATE_OK);
    for (polls = 0; polls < 20 && (r = opstate_consumer_poll(c, 0, 0, &res, NULL)) == OPSTATE_OK; polls++) continue;
    CHECK(r == OPSTATE_GAP);
    before_hole = opstate_consumer_position(c).seq;
    CHECK_EQ_U64(before_hole, 1);
    CHECK_EQ_U64(x->applies[0][0], 1);
    CHECK_EQ_U64(x->applies[0][2], 0); /* nothing past the hole */
    CHECK(opstate_consumer_get_status(c)->rereads > 0);
    CHECK(opstate_consumer_poll(c, 0, 0, &res, NULL) == OPSTATE_GAP); /* it stays stopped */
    f.no_vouching = false;
    CHECK(drv_drain(c, 0, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(opstate_consumer_position(c).seq, 3);
    CHECK_EQ_U64(x->applies[0][2], 1);
    CHECK(opstate_consumer_close(c, NULL) == OPSTATE_OK);
    drv_teardown(x);
}

/* A log that runs retention inside a read, between the poll's stream info
   and what the read returns (on JetStream: the limit hits while a pull is
   in flight), or vouches for a hole only when it is read a second time
   from the same place. Everything else passes through. */
typedef struct drv_tricky_log {
    opstate_log inner;
    drv_ctx *x;
    uint64_t purge_below;  /* > 0: the next read first purges below it */
    bool vouch_second_look; /* only the first message of a read that starts
                               where the previous one did is vouched for */
    uint64_t last_from;
} drv_tricky_log;

DRV_STATIC opstate_result drv_tricky_read(void *user, opstate_bytes filter, uint64_t from_seq, int64_t wait_ns,
                                          opstate_log_message *msgs, size_t max, size_t *count, opstate_error *err)
{
    drv_tricky_log *t = (drv_tricky_log *)user;
    opstate_result r;
    size_t i;
    bool second = from_seq == t->last_from;
    if (t->purge_below) {
        t->x->b->purge(t->x->env, t->purge_below);
        t->purge_below = 0;
    }
    r = t->inner.read(t->inner.user, filter, from_seq, wait_ns, msgs, max, count, err);
    t->last_from = from_seq;
    for (i = 0; r == OPSTATE_OK && t->vouch_second_look && i < *count; i++)
        msgs[i].contiguous = msgs[i].contiguous && i == 0 && second;
    return r;
}

DRV_STATIC opstate_result drv_tricky_info(void *user, opstate_stream_info *out, opstate_error *err)
{
    drv_tricky_log *t = (drv_tricky_log *)user;
    return t->inner.info(t->inner.user, out, err);
}

DRV_STATIC opstate_result drv_tricky_append(void *user, opstate_bytes subject, opstate_bytes data,
                                            const opstate_append_options *opts, opstate_append_result *out,
                                            opstate_error *err)
{
    drv_tricky_log *t = (drv_tricky_log *)user;
    return t->inner.append(t->inner.user, subject, data, opts, out, err);
}

DRV_STATIC opstate_result drv_tricky_last(void *user, opstate_bytes filter, opstate_log_visit_fn fn, void *fn_user,
                                          opstate_error *err)
{
    drv_tricky_log *t = (drv_tricky_log *)user;
    return t->inner.last_per_subject(t->inner.user, filter, fn, fn_user, err);
}

DRV_STATIC opstate_result drv_tricky_ack(void *user, uint64_t upto_seq, opstate_error *err)
{
    drv_tricky_log *t = (drv_tricky_log *)user;
    return t->inner.ack ? t->inner.ack(t->inner.user, upto_seq, err) : OPSTATE_OK;
}

DRV_STATIC opstate_log drv_tricky_iface(drv_tricky_log *t, drv_ctx *x)
{
    opstate_log l;
    memset(t, 0, sizeof *t);
    t->inner = x->log;
    t->x = x;
    t->last_from = UINT64_MAX;
    l = x->log;
    l.user = t;
    l.read = drv_tricky_read;
    l.info = drv_tricky_info;
    l.append = drv_tricky_append;
    l.last_per_subject = drv_tricky_last;
    l.ack = drv_tricky_ack;
    return l;
}

/* 1 A=a1, 2 B=b1, 3 C=c1 read live; then 4 del B, 5 A=a2, 6 C=c2, 7 A=a3,
   and 4 and 5 are evicted inside the next read: the poll's stream info
   still showed them, the read starts at 6. The hole [4, 5] is below the
   stream's first sequence by then: an eviction (resync removes B, the
   delete of which was evicted), never messages of other subjects (B=b1
   would survive as a stale twin). */
DRV_STATIC void driver_test_evicted_between_info_and_read(const driver_backend *b)
{
    drv_ctx *x = drv_setup(b, 0);
    drv_tricky_log t;
    opstate_consumer_config cfg;
    opstate_consumer *c = NULL;
    const opstate_consumer_status *st;
    opstate_poll_result sum;
    opstate_kv *want;
    opstate_result r = OPSTATE_OK;
    unsigned i;
    REQUIRE(x);
    REQUIRE(b->purge);
    REQUIRE(drv_publish(x, "s1", "A", OPSTATE_OP_PUT, "a1") == 1);
    REQUIRE(drv_publish(x, "s1", "B", OPSTATE_OP_PUT, "b1") == 2);
    REQUIRE(drv_publish(x, "s1", "C", OPSTATE_OP_PUT, "c1") == 3);
    cfg = drv_cfg(x);
    cfg.log = drv_tricky_iface(&t, x);
    REQUIRE(opstate_consumer_open(&cfg, &c, NULL) == OPSTATE_OK);
    st = opstate_consumer_get_status(c);
    CHECK(drv_drain(c, 0, &sum) == OPSTATE_OK && sum.caught_up);
    CHECK_EQ_U64(opstate_consumer_position(c).seq, 3);
    REQUIRE(drv_publish(x, "s1", "B", OPSTATE_OP_DELETE, NULL) == 4);
    REQUIRE(drv_publish(x, "s1", "A", OPSTATE_OP_PUT, "a2") == 5);
    REQUIRE(drv_publish(x, "s1", "C", OPSTATE_OP_PUT, "c2") == 6);
    REQUIRE(drv_publish(x, "s1", "A", OPSTATE_OP_PUT, "a3") == 7);
    t.purge_below = 6;
    /* a pull that comes back empty while the server settles the purge is a
       transient: poll on until the consumer is at the end */
    for (i = 0; i < 200 && r == OPSTATE_OK && opstate_consumer_position(c).seq < 7; i++) r = drv_drain(c, 0, &sum);
    CHECK(r == OPSTATE_OK);
    CHECK_EQ_U64(t.purge_below, 0); /* the purge did run inside a read */
    CHECK_EQ_U64(opstate_consumer_position(c).seq, 7);
    /* resync removed B (a transport that had 4 and 5 in flight delivers
       them instead: the delete of B is applied); either way no stale twin */
    CHECK(st->resynced || drv_has(opstate_consumer_kv(c), "s1", "A", "a3"));
    CHECK(!drv_has(opstate_consumer_kv(c), "s1", "B", NULL));
    want = drv_fold(x, NULL); /* retained: C=c2, A=a3 */
    CHECK(want && drv_kv_equal(opstate_consumer_kv(c), want, true, "state after the gap"));
    CHECK(opstate_consumer_close(c, NULL) == OPSTATE_OK);
    CHECK(want && drv_check_store(x, want, true));
    opstate_kv_destroy(want);
    drv_teardown(x);
}

/* Twelve holes under a filter (events of s2 between those of s1), read
   through a log that vouches for a hole only on the second read from it:
   every hole is re-read, none more than twice, so the bound on re-reads
   (per hole) is never reached; every s1 event is applied once. */
DRV_STATIC void driver_test_rereads_counted_per_hole(const driver_backend *b)
{
    drv_ctx *x = drv_setup(b, 0);
    drv_tricky_log t;
    opstate_consumer_config cfg;
    opstate_consumer *c = NULL;
    opstate_poll_result sum;
    uint64_t last = 0;
    uint32_t i;
    char key[16];
    REQUIRE(x);
    for (i = 0; i < 12; i++) {
        snprintf(key, sizeof key, "k%u", (unsigned)i);
        REQUIRE((last = drv_publish(x, "s1", key, OPSTATE_OP_PUT, "v")) != 0);
        REQUIRE(drv_publish(x, "s2", key, OPSTATE_OP_PUT, "w") != 0);
    }
    REQUIRE(drv_publish(x, "s1", "end", OPSTATE_OP_PUT, "v") == last + 2);
    last += 2;
    cfg = drv_cfg(x);
    cfg.log = drv_tricky_iface(&t, x);
    t.vouch_second_look = true;
    cfg.filter = str(DRV_PREFIX ".s1.>");
    cfg.apply = drv_apply;
    cfg.apply_user = x;
    drv_reset_counts(x);
    REQUIRE(opstate_consumer_open(&cfg, &c, NULL) == OPSTATE_OK);
    CHECK(drv_drain(c, 0, &sum) == OPSTATE_OK);
    CHECK_EQ_U64(opstate_consumer_position(c).seq, last);
    CHECK(opstate_consumer_get_status(c)->rereads >= 12);
    for (i = 0; i < x->n; i++) CHECK_EQ_U64(x->applies[0][i], i % 2 == 0 ? 1 : 0);
    CHECK(opstate_consumer_close(c, NULL) == OPSTATE_OK);
    drv_teardown(x);
}

/* The expected compaction level after `deltas` delta records. */
DRV_STATIC opstate_compaction drv_due(const driver_backend *b, uint32_t deltas)
{
    if (!b->compact_flushes || deltas < b->compact_flushes) return OPSTATE_COMPACTION_NOT_DUE;
    return deltas >= 4 * b->compact_flushes ? OPSTATE_COMPACTION_OVERDUE : OPSTATE_COMPACTION_DUE;
}

/* Two more events, polled until both are applied (a JetStream pull may
   see them a poll late): no poll that applied events ran a compaction,
   though one is due. */
DRV_STATIC void drv_compaction_waits_for_idle(drv_ctx *x, opstate_consumer *c)
{
    const opstate_consumer_status *st = opstate_consumer_get_status(c);
    opstate_poll_result res;
    uint32_t applied = 0, guard;
    drv_publish_keys(x, "k", 41, 42);
    for (guard = 0; applied < 2 && guard < 1000; guard++) {
        uint64_t before = st->compactions;
        CHECK(opstate_consumer_poll(c, 0, 0, &res, NULL) == OPSTATE_OK);
        applied += res.applied;
        if (res.applied) CHECK_EQ_U64(st->compactions, before);
    }
    CHECK_EQ_U64(applied, 2);
}

/* One event per poll and a flush after each (never caught up): the store
   reports what its flushes left (a flush never compacts); the consumer
   compacts only an overdue store, and the first of those compactions fails
   and is retried at the next poll. A merely due store is compacted by an
   idle poll (caught up, nothing applied), not by the poll that applied the
   last events. The state survives all of it. */
DRV_STATIC void driver_test_compaction_off_flush_path(const driver_backend *b)
{
    drv_ctx *x = drv_setup(b, 0);
    opstate_consumer_config cfg;
    opstate_consumer *c = NULL;
    const opstate_consumer_status *st;
    opstate_poll_result res;
    opstate_kv *want = NULL;
    uint32_t p, deltas = 0, compactions = 0, failures = 0;
    uint64_t before;
    REQUIRE(x);
    drv_publish_keys(x, "k", 1, 40);
    CHECK(!x->store.compact_due == !b->compact_flushes);
    cfg = drv_cfg(x);
    cfg.flush_every = 1;
    REQUIRE(opstate_consumer_open(&cfg, &c, NULL) == OPSTATE_OK);
    st = opstate_consumer_get_status(c);
    drv_fail(x, FAULT_STORE_COMPACT, 0, 1, OPSTATE_IO); /* the first compaction fails */
    for (p = 1; p <= 40; p++) {
        size_t before = opstate_kv_memory(opstate_consumer_kv(c));
        drv_label(x, "poll", NULL, p, deltas);
        CHECK(opstate_consumer_poll(c, 1, 0, &res, NULL) == OPSTATE_OK);
        CHECK(res.applied == 1 && !res.caught_up);
        deltas++;
        if (drv_due(b, deltas) == OPSTATE_COMPACTION_OVERDUE) {
            if (failures++ == 0) continue; /* the injected failure: the deltas stay */
            deltas = 0;
            compactions++;
            if (opstate_kv_has_base(opstate_consumer_kv(c))) /* forgot what it flushed */
                CHECK(opstate_kv_memory(opstate_consumer_kv(c)) < before);
        }
        if (x->store.compact_due) CHECK(x->store.compact_due(x->store.user) == drv_due(b, deltas));
        CHECK_EQ_U64(st->compactions, compactions);
        CHECK_EQ_U64(st->compaction_failures, failures ? 1 : 0);
    }
    CASE("caught up");
    drv_compaction_waits_for_idle(x, c);
    CASE("idle");
    before = st->compactions;
    CHECK(opstate_consumer_poll(c, 0, 0, &res, NULL) == OPSTATE_OK && res.caught_up && res.applied == 0);
    if (x->store.compact_due) CHECK(x->store.compact_due(x->store.user) == OPSTATE_COMPACTION_NOT_DUE);
    CHECK_EQ_U64(st->compactions, before + (b->compact_flushes ? 1 : 0)); /* due (7 deltas), run now */
    CHECK(!b->compact_flushes || st->compactions >= 2); /* the run did compact */
    want = drv_fold(x, NULL);
    CHECK(drv_kv_equal(opstate_consumer_kv(c), want, true, "state"));
    CHECK(opstate_consumer_close(c, NULL) == OPSTATE_OK);
    CHECK(drv_check_store(x, want, true));
    opstate_kv_destroy(want);
    drv_teardown(x);
}

/* ---- the suite ------------------------------------------------------------ */

#define DRIVER_SUITE(name, factory)                                                                            \
    TEST(driver_##name, crash_every_step) { driver_test_crash_every_step(factory()); }                        \
    TEST(driver_##name, publisher_duplicate) { driver_test_publisher_duplicate(factory()); }                  \
    TEST(driver_##name, restore_decisions) { driver_test_restore_decisions(factory()); }                      \
    TEST(driver_##name, keep_applies_nothing_twice) { driver_test_keep_applies_nothing_twice(factory()); }    \
    TEST(driver_##name, expired_twins) { driver_test_expired_twins(factory()); }                              \
    TEST(driver_##name, flush_failures_heal) { driver_test_flush_failures_heal(factory()); }                  \
    TEST(driver_##name, load_drop_errors) { driver_test_load_drop_errors(factory()); }                        \
    TEST(driver_##name, explicit_flush_errors) { driver_test_explicit_flush_errors(factory()); }              \
    TEST(driver_##name, out_of_order_acks) { driver_test_out_of_order_acks(factory()); }                      \
    TEST(driver_##name, ack_shuffle_crash) { driver_test_ack_shuffle_crash(factory()); }                      \
    TEST(driver_##name, replay_cutoffs) { driver_test_replay_cutoffs(factory()); }                            \
    TEST(driver_##name, replay_deterministic_end) { driver_test_replay_deterministic_end(factory()); }        \
    TEST(driver_##name, poison_stop) { driver_test_poison_stop(factory()); }                                  \
    TEST(driver_##name, poison_skip) { driver_test_poison_skip(factory()); }                                  \
    TEST(driver_##name, redelivery) { driver_test_redelivery(factory()); }                                    \
    TEST(driver_##name, filtered_consumer) { driver_test_filtered_consumer(factory()); }                      \
    TEST(driver_##name, from_time_is_a_start) { driver_test_from_time_is_a_start(factory()); }                \
    TEST(driver_##name, deferred_window_full) { driver_test_deferred_window_full(factory()); }                \
    TEST(driver_##name, live_gap) { driver_test_live_gap(factory()); }                                        \
    TEST(driver_##name, live_gap_all_evicted) { driver_test_live_gap_all_evicted(factory()); }                \
    TEST(driver_##name, live_stream_recreated) { driver_test_live_stream_recreated(factory()); }              \
    TEST(driver_##name, schema_versions) { driver_test_schema_versions(factory()); }                          \
    TEST(driver_##name, fault_log) { driver_test_fault_log(factory()); }                                      \
    TEST(driver_##name, unproven_hole_stops) { driver_test_unproven_hole_stops(factory()); }                  \
    TEST(driver_##name, evicted_between_info_and_read) {                                                       \
        driver_test_evicted_between_info_and_read(factory());                                                  \
    }                                                                                                          \
    TEST(driver_##name, rereads_counted_per_hole) { driver_test_rereads_counted_per_hole(factory()); }          \
    TEST(driver_##name, compaction_off_flush_path) { driver_test_compaction_off_flush_path(factory()); }

#endif /* DRIVER_SUITE_H */
