/* fault_store.h — a fault-injecting store for tests: wraps any
   opstate_store and makes the operations chosen in a mask fail with a
   chosen result, after a number of them succeeded, a number of times — a
   disk that fills up, a flush cut short by a crash, a load that cannot
   read. Everything else passes through untouched (ops = 0: the wrapper is
   invisible). An observer may watch what the inner store committed
   (flushed, dropped), e.g. a model of what a delta store holds.

       fault_store fs;
       memset(&fs, 0, sizeof fs);
       fs.inner = inner;                       the store to wrap
       cfg.store = fault_store_iface(&fs);
       fs.ops = FAULT_STORE_FLUSH;             from now on every flush fails

   Test-only; not part of the library (see fault_log.h for the log). */
#ifndef FAULT_STORE_H
#define FAULT_STORE_H

#include <string.h>
#include "../opstate.h"

#if defined(__GNUC__) || defined(__clang__)
#define FAULT_STORE_FN static __attribute__((unused))
#else
#define FAULT_STORE_FN static
#endif

/* Operations, for fault_store.ops. */
#define FAULT_STORE_LOAD 1u /* read_meta and load */
#define FAULT_STORE_FLUSH 2u
#define FAULT_STORE_DROP 4u
#define FAULT_STORE_COMPACT 8u

/* Operations in `ops` fail with `error` (0: OPSTATE_IO) once `after` of
   them have succeeded, `count` times (0: for ever). */
typedef struct fault_store {
    opstate_store inner;
    unsigned ops;
    uint64_t after, count;
    opstate_result error;
    uint64_t calls, failures; /* counters, read them in tests */
    /* Optional observers, called after the inner store's flush (with the
       kv it was given, still dirty) or drop succeeded. */
    void (*flushed)(void *observer, const opstate_kv *kv);
    void (*dropped)(void *observer);
    void *observer;
} fault_store;

/* The injected failure for this call of an operation in `op`, or OK. */
FAULT_STORE_FN opstate_result fault_store_check(fault_store *f, unsigned op, opstate_error *err)
{
    if (!(f->ops & op)) return OPSTATE_OK;
    f->calls++;
    if (f->calls <= f->after || (f->count && f->failures >= f->count)) return OPSTATE_OK;
    f->failures++;
    return opstate_error_set(err, f->error ? f->error : OPSTATE_IO, "fault injection", 0);
}

FAULT_STORE_FN opstate_result fault_store_read_meta(void *user, opstate_snapshot_meta *meta, opstate_error *err)
{
    fault_store *f = (fault_store *)user;
    opstate_result r = fault_store_check(f, FAULT_STORE_LOAD, err);
    if (r != OPSTATE_OK) return r;
    return f->inner.read_meta(f->inner.user, meta, err);
}

FAULT_STORE_FN opstate_result fault_store_load(void *user, opstate_kv *kv, opstate_snapshot_meta *meta,
                                               opstate_dedup *dedup, opstate_error *err)
{
    fault_store *f = (fault_store *)user;
    opstate_result r = fault_store_check(f, FAULT_STORE_LOAD, err);
    if (r != OPSTATE_OK) return r;
    return f->inner.load(f->inner.user, kv, meta, dedup, err);
}

FAULT_STORE_FN opstate_result fault_store_flush(void *user, const opstate_kv *kv, const opstate_snapshot_meta *meta,
                                                const opstate_dedup *dedup, opstate_error *err)
{
    fault_store *f = (fault_store *)user;
    opstate_result r = fault_store_check(f, FAULT_STORE_FLUSH, err);
    if (r == OPSTATE_OK) r = f->inner.flush(f->inner.user, kv, meta, dedup, err);
    if (r == OPSTATE_OK && f->flushed) f->flushed(f->observer, kv);
    return r;
}

FAULT_STORE_FN opstate_result fault_store_drop(void *user, opstate_error *err)
{
    fault_store *f = (fault_store *)user;
    opstate_result r = fault_store_check(f, FAULT_STORE_DROP, err);
    if (r == OPSTATE_OK) r = f->inner.drop(f->inner.user, err);
    if (r == OPSTATE_OK && f->dropped) f->dropped(f->observer);
    return r;
}

FAULT_STORE_FN const opstate_kv_base *fault_store_base(void *user)
{
    fault_store *f = (fault_store *)user;
    return f->inner.base ? f->inner.base(f->inner.user) : NULL;
}

FAULT_STORE_FN opstate_compaction fault_store_compact_due(void *user)
{
    fault_store *f = (fault_store *)user;
    return f->inner.compact_due(f->inner.user);
}

FAULT_STORE_FN opstate_result fault_store_compact(void *user, opstate_error *err)
{
    fault_store *f = (fault_store *)user;
    opstate_result r = fault_store_check(f, FAULT_STORE_COMPACT, err);
    if (r != OPSTATE_OK) return r;
    return f->inner.compact(f->inner.user, err);
}

/* The store interface of f (valid while f is); the optional operations
   are there when the inner store has them. */
FAULT_STORE_FN opstate_store fault_store_iface(fault_store *f)
{
    opstate_store s;
    memset(&s, 0, sizeof s);
    s.user = f;
    s.read_meta = fault_store_read_meta;
    s.load = fault_store_load;
    s.flush = fault_store_flush;
    s.drop = fault_store_drop;
    s.base = fault_store_base;
    s.compact_due = f->inner.compact_due ? fault_store_compact_due : NULL;
    s.compact = f->inner.compact ? fault_store_compact : NULL;
    s.max_key_len = f->inner.max_key_len;
    return s;
}

#endif /* FAULT_STORE_H */
