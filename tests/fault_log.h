/* fault_log.h — a fault-injecting log for tests: wraps any opstate_log
   and, driven by a seed, drops, duplicates, reorders and delays the
   messages its reads deliver and fails reads and stream-info calls — what
   a transport does to a consumer through a leader change, a lost pull
   response or a reconnect. It is honest about what it did: a message
   after one it withheld or moved is delivered with contiguous = false (as
   a JetStream consumer's delivery sequence would show), so a consumer
   that trusts only vouched holes can always tell. Appends, acks and
   last_per_subject pass through untouched.

       fault_log fl;
       fault_log_init(&fl, inner, seed);      rates in per mille, see below
       cfg.log = fault_log_iface(&fl);

   Test-only; not part of the library. */
#ifndef FAULT_LOG_H
#define FAULT_LOG_H

#include <string.h>
#include "../opstate.h"

#if defined(__GNUC__) || defined(__clang__)
#define FAULT_LOG_FN static __attribute__((unused))
#else
#define FAULT_LOG_FN static
#endif

#define FAULT_LOG_CAP 512 /* messages one inner read may return */

typedef struct fault_log {
    opstate_log inner;
    uint64_t rng; /* xorshift64 state, from the seed */
    /* Rates, per mille: per delivered message (drop, duplicate, reorder
       with the next), per call (delay: a read returns nothing yet; fail: a
       read or info returns TIMEOUT). */
    unsigned drop, duplicate, reorder, delay, fail;
    bool no_vouching; /* a log that cannot tell: every delivery has contiguous = false */
    /* What it did. */
    uint64_t dropped, duplicated, reordered, delayed, failed;
    opstate_log_message got[FAULT_LOG_CAP]; /* the inner read, before faults */
} fault_log;

FAULT_LOG_FN uint64_t fault_log_next(fault_log *f)
{
    f->rng ^= f->rng << 13;
    f->rng ^= f->rng >> 7;
    f->rng ^= f->rng << 17;
    return f->rng;
}

/* true with probability per_mille / 1000. */
FAULT_LOG_FN bool fault_log_roll(fault_log *f, unsigned per_mille)
{
    return fault_log_next(f) % 1000u < per_mille;
}

/* A value in [0, n). */
FAULT_LOG_FN uint32_t fault_log_below(fault_log *f, uint32_t n)
{
    return n ? (uint32_t)(fault_log_next(f) % n) : 0;
}

/* Wraps inner with the default rates: 10% dropped, 8% duplicated, 8%
   reordered, 10% of reads delayed, 5% of calls failed. */
FAULT_LOG_FN void fault_log_init(fault_log *f, opstate_log inner, uint64_t seed)
{
    memset(f, 0, sizeof *f);
    f->inner = inner;
    f->rng = seed * UINT64_C(0x9E3779B97F4A7C15) + 1;
    f->drop = 100;
    f->duplicate = 80;
    f->reorder = 80;
    f->delay = 100;
    f->fail = 50;
}

/* Appends m to out (room permitting); vouched says whether nothing was
   withheld or moved since the previous message delivered. */
FAULT_LOG_FN void fault_log_emit(const opstate_log_message *m, bool vouched, opstate_log_message *out, size_t max,
                                 size_t *n)
{
    if (*n == max) return;
    out[*n] = *m;
    out[*n].contiguous = m->contiguous && vouched;
    (*n)++;
}

/* Applies the faults to the inner read f->got[0..got) into out. */
FAULT_LOG_FN size_t fault_log_deliver(fault_log *f, size_t got, opstate_log_message *out, size_t max)
{
    size_t i, n = 0;
    bool vouched = true;
    for (i = 0; i < got && n < max; i++) {
        if (fault_log_roll(f, f->drop)) { /* lost in transit */
            f->dropped++;
            vouched = false;
        } else if (i + 1 < got && n + 2 <= max && fault_log_roll(f, f->reorder)) { /* the next one overtakes it */
            f->reordered++;
            fault_log_emit(&f->got[i + 1], false, out, max, &n);
            fault_log_emit(&f->got[i], false, out, max, &n);
            vouched = true; /* both delivered: nothing between them is missing */
            i++;
        } else {
            fault_log_emit(&f->got[i], vouched, out, max, &n);
            vouched = true;
            if (fault_log_roll(f, f->duplicate) && n < max) { /* delivered twice */
                f->duplicated++;
                fault_log_emit(&f->got[i], false, out, max, &n);
            }
        }
    }
    return n;
}

FAULT_LOG_FN opstate_result fault_log_read(void *user, opstate_bytes filter, uint64_t from_seq, int64_t wait_ns,
                                           opstate_log_message *msgs, size_t max, size_t *count, opstate_error *err)
{
    fault_log *f = (fault_log *)user;
    size_t got = 0, want = max > FAULT_LOG_CAP ? FAULT_LOG_CAP : max;
    opstate_result r;
    *count = 0;
    if (fault_log_roll(f, f->fail)) {
        f->failed++;
        return opstate_error_set(err, OPSTATE_TIMEOUT, "fault log: read", 0);
    }
    if (fault_log_roll(f, f->delay)) {
        f->delayed++;
        return OPSTATE_OK;
    }
    r = f->inner.read(f->inner.user, filter, from_seq, wait_ns, f->got, want, &got, err);
    if (r == OPSTATE_OK) *count = fault_log_deliver(f, got, msgs, max);
    for (got = 0; f->no_vouching && got < *count; got++) msgs[got].contiguous = false;
    return r;
}

FAULT_LOG_FN opstate_result fault_log_info(void *user, opstate_stream_info *out, opstate_error *err)
{
    fault_log *f = (fault_log *)user;
    if (fault_log_roll(f, f->fail)) {
        f->failed++;
        return opstate_error_set(err, OPSTATE_TIMEOUT, "fault log: info", 0);
    }
    return f->inner.info(f->inner.user, out, err);
}

FAULT_LOG_FN opstate_result fault_log_append(void *user, opstate_bytes subject, opstate_bytes data,
                                             const opstate_append_options *opts, opstate_append_result *out,
                                             opstate_error *err)
{
    fault_log *f = (fault_log *)user;
    return f->inner.append(f->inner.user, subject, data, opts, out, err);
}

FAULT_LOG_FN opstate_result fault_log_last(void *user, opstate_bytes filter, opstate_log_visit_fn fn, void *fn_user,
                                           opstate_error *err)
{
    fault_log *f = (fault_log *)user;
    return f->inner.last_per_subject(f->inner.user, filter, fn, fn_user, err);
}

FAULT_LOG_FN opstate_result fault_log_ack(void *user, uint64_t upto_seq, opstate_error *err)
{
    fault_log *f = (fault_log *)user;
    return f->inner.ack ? f->inner.ack(f->inner.user, upto_seq, err) : OPSTATE_OK;
}

/* The log interface of f (valid while f is). */
FAULT_LOG_FN opstate_log fault_log_iface(fault_log *f)
{
    opstate_log log;
    memset(&log, 0, sizeof log);
    log.user = f;
    log.read = fault_log_read;
    log.info = fault_log_info;
    log.append = fault_log_append;
    log.last_per_subject = fault_log_last;
    log.ack = fault_log_ack;
    return log;
}

#endif /* FAULT_LOG_H */
