/* cc -std=c99 -O2 -Wall -Wextra -Wpedantic -Werror examples/core_memory.c -o core_memory

   core_memory.c — opstate.h alone: the memory log and the memory store.

   Account balances folded from "deposit" events. The program publishes
   events, runs a consumer that flushes a snapshot, applies a few more
   events, then "crashes": the consumer is dropped before its final flush
   reaches the store, as when a process dies (the memory store stands in for
   a disk that outlives the process; opstate_lmdb.h gives the real thing —
   see projector.c). A new consumer then restores the snapshot, resumes
   after its position, and the balances come out exactly right: the events
   in the snapshot are not applied again, the ones after it are applied
   once. A deliberate replay from an earlier sequence is cleared and rebuilt
   instead of double-counted. */
#define OPSTATE_IMPLEMENTATION
#include "../opstate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OP_DEPOSIT (OPSTATE_OP_APP + 0u) /* data: decimal amount */

static const char *const accounts[] = {"alice", "bob", "carol"};

/* What the apply function saw, to show which sequences each consumer ran. */
typedef struct tally {
    uint64_t applied, first_seq, last_seq;
} tally;

static opstate_bytes text(const char *s)
{
    opstate_bytes b;
    b.ptr = (const uint8_t *)s;
    b.len = strlen(s);
    return b;
}

static long parse_amount(opstate_bytes b)
{
    long v = 0;
    size_t i;
    for (i = 0; i < b.len && i < 18; i++) {
        if (b.ptr[i] < '0' || b.ptr[i] > '9') return -1;
        v = v * 10 + (b.ptr[i] - '0');
    }
    return b.len && b.len <= 18 ? v : -1;
}

/* balance[key] += amount. Deterministic and idempotent per event: the
   consumer never hands it an event at or below the restored position, nor
   one whose id it has already seen. */
static opstate_apply_outcome apply_deposit(void *user, opstate_kv *kv, const opstate_event *ev)
{
    tally *t = (tally *)user;
    opstate_kv_item item;
    long amount = parse_amount(ev->data), balance = 0;
    char buf[32];
    if (ev->op != OP_DEPOSIT || amount < 0 || ev->key.len == 0) return OPSTATE_APPLY_REJECT;
    if (opstate_kv_get(kv, ev->key, &item) == OPSTATE_OK) balance = parse_amount(item.value);
    snprintf(buf, sizeof buf, "%ld", balance + amount);
    if (opstate_kv_put(kv, ev->key, text(buf), ev->position) != OPSTATE_OK) return OPSTATE_APPLY_RETRY;
    if (!t->applied) t->first_seq = ev->position.seq;
    t->last_seq = ev->position.seq;
    t->applied++;
    return OPSTATE_APPLY_DONE;
}

/* Publishes deposit number i (1-based) of `amount` to `account`. */
static int publish(const opstate_log *log, uint32_t i, const char *account, long amount,
                   opstate_append_result *res)
{
    static const char prefix[] = "bank";
    opstate_event ev;
    uint8_t entropy[8];
    char data[24];
    opstate_error err;
    opstate_result r;
    memset(&ev, 0, sizeof ev);
    memset(&err, 0, sizeof err);
    ev.scope = text("branch1");
    ev.kind = text("deposit");
    ev.key = text(account);
    ev.op = OP_DEPOSIT;
    snprintf(data, sizeof data, "%ld", amount);
    ev.data = text(data);
    ev.has_time = true;
    ev.time = 1700000000000000000 + (int64_t)i * 1000000; /* a real program: the wall clock */
    memset(entropy, 0, sizeof entropy);
    entropy[7] = (uint8_t)i; /* a real program: 8 bytes from a real random source */
    if (opstate_id_time_ordered(ev.time, entropy, &ev.id) != OPSTATE_OK) return 1;
    r = opstate_publish(log, text(prefix), &ev, NULL, NULL, res, &err);
    if (r != OPSTATE_OK) {
        fprintf(stderr, "publish: %s\n", opstate_result_str(r));
        return 1;
    }
    return 0;
}

/* The "disk" is the memory store with a plug this program pulls to crash:
   while it is out, no flush reaches the store. Only flush is replaced, so
   the store's own read_meta, load and drop keep its `user`. */
static bool plug_pulled;

static opstate_result disk_flush(void *user, const opstate_kv *kv, const opstate_snapshot_meta *meta,
                                 const opstate_dedup *dedup, opstate_error *err)
{
    opstate_store memory = opstate_memstore_iface((opstate_memstore *)user);
    if (plug_pulled) return opstate_error_set(err, OPSTATE_IO, "the plug is pulled", 0);
    return memory.flush(user, kv, meta, dedup, err);
}

static bool print_item(void *user, const opstate_kv_item *item)
{
    long *sum = (long *)user;
    *sum += parse_amount(item->value);
    printf(" %.*s=%.*s", (int)item->key.len, (const char *)item->key.ptr, (int)item->value.len,
           (const char *)item->value.ptr);
    return true;
}

static long show_state(const char *label, opstate_consumer *c)
{
    long sum = 0;
    printf("  %s (position %lu):", label, (unsigned long)opstate_consumer_position(c).seq);
    opstate_kv_iterate(opstate_consumer_kv(c), print_item, &sum);
    printf("  total=%ld\n", sum);
    return sum;
}

static int open_consumer(opstate_consumer_config *cfg, opstate_consumer **c, const char *label)
{
    opstate_error err;
    const opstate_consumer_status *st;
    opstate_result r;
    memset(&err, 0, sizeof err);
    r = opstate_consumer_open(cfg, c, &err);
    if (r != OPSTATE_OK) {
        fprintf(stderr, "%s: open failed: %s\n", label, opstate_result_str(r));
        return 1;
    }
    st = opstate_consumer_get_status(*c);
    printf("  %s: decision %s (%s)", label, st->decision.restore ? "RESTORE" : "CLEAR",
           opstate_reason_str(st->decision.reason));
    if (cfg->start.kind == OPSTATE_START_RESUME)
        printf(", resume check %s: next seq %lu", opstate_resume_state_str(st->resume.state),
               (unsigned long)st->resume.next_seq);
    printf("\n");
    return 0;
}

static int poll_all(opstate_consumer *c)
{
    opstate_poll_result pr;
    opstate_error err;
    do {
        memset(&err, 0, sizeof err);
        if (opstate_consumer_poll(c, 0, 0, &pr, &err) != OPSTATE_OK) return 1;
    } while (!pr.caught_up);
    return 0;
}

int main(void)
{
    static const long amounts[] = {100, 250, 40, 75, 10, 300, 5, 60, 20, 90};
    opstate_memlog *mlog = NULL;
    opstate_memstore *mstore = NULL;
    opstate_log log;
    opstate_consumer_config cfg;
    opstate_consumer *c = NULL;
    opstate_append_result res;
    opstate_error err;
    tally t;
    long expected = 0, got;
    uint32_t i;
    int rc = 1;

    if (opstate_memlog_create(NULL, &mlog) != OPSTATE_OK || opstate_memstore_create(NULL, &mstore) != OPSTATE_OK)
        goto out;
    log = opstate_memlog_iface(mlog);

    memset(&cfg, 0, sizeof cfg);
    cfg.log = log;
    cfg.store = opstate_memstore_iface(mstore);
    cfg.store.flush = disk_flush; /* the memory store's flush, behind the plug */
    cfg.apply = apply_deposit;
    cfg.apply_user = &t;
    cfg.schema.version = 1;

    printf("1. publish 6 deposits to the memory log\n");
    for (i = 0; i < 6; i++) {
        if (publish(&log, i + 1, accounts[i % 3], amounts[i], &res)) goto out;
        expected += amounts[i];
    }
    if (publish(&log, 1, accounts[0], amounts[0], &res)) goto out; /* a publisher retry */
    printf("  a retried publish of deposit 1 (same id): %s, seq %lu\n",
           res.duplicate ? "dropped as a duplicate" : "APPENDED TWICE", (unsigned long)res.seq);

    printf("2. consumer A: fold, flush a snapshot, apply 4 more, then crash before the final flush\n");
    memset(&t, 0, sizeof t);
    if (open_consumer(&cfg, &c, "A") || poll_all(c)) goto out;
    memset(&err, 0, sizeof err);
    if (opstate_consumer_flush(c, &err) != OPSTATE_OK) goto out;
    show_state("A after flush", c);
    for (; i < 10; i++) {
        if (publish(&log, i + 1, accounts[i % 3], amounts[i], &res)) goto out;
        expected += amounts[i];
    }
    if (poll_all(c)) goto out;
    show_state("A in memory  ", c);
    printf("  A applied seqs %lu..%lu (%lu events)\n", (unsigned long)t.first_seq, (unsigned long)t.last_seq,
           (unsigned long)t.applied);
    plug_pulled = true; /* crash: no flush reaches the store from now on */
    memset(&err, 0, sizeof err);
    printf("  crash: A's final flush fails (%s); its last 4 events are lost with it\n",
           opstate_result_str(opstate_consumer_close(c, &err)));
    c = NULL;
    plug_pulled = false;

    printf("3. consumer B: restart on the same log and store\n");
    memset(&t, 0, sizeof t);
    if (open_consumer(&cfg, &c, "B")) goto out;
    show_state("B restored   ", c);
    if (poll_all(c)) goto out;
    got = show_state("B caught up  ", c);
    printf("  B applied seqs %lu..%lu (%lu events): the snapshot's 6 were not applied again\n",
           (unsigned long)t.first_seq, (unsigned long)t.last_seq, (unsigned long)t.applied);
    if (got != expected || t.applied != 4 || t.first_seq != 7) {
        printf("  WRONG: total %ld, expected %ld\n", got, expected);
        goto out;
    }
    memset(&err, 0, sizeof err);
    if (opstate_consumer_close(c, &err) != OPSTATE_OK) goto out;
    c = NULL;

    printf("4. consumer C: an operator asks to replay from sequence 3 (at or below the stored 10)\n");
    memset(&t, 0, sizeof t);
    cfg.start.kind = OPSTATE_START_FROM_SEQUENCE;
    cfg.start.seq = 3;
    if (open_consumer(&cfg, &c, "C") || poll_all(c)) goto out;
    got = show_state("C rebuilt    ", c);
    if (got != amounts[2] + amounts[3] + amounts[4] + amounts[5] + amounts[6] + amounts[7] + amounts[8] + amounts[9]) {
        printf("  WRONG: total %ld\n", got);
        goto out;
    }
    printf("  C cleared and applied seqs %lu..%lu: nothing was counted twice\n", (unsigned long)t.first_seq,
           (unsigned long)t.last_seq);
    printf("balances correct: total %ld after a crash and two restarts\n", expected);
    rc = 0;
out:
    if (c) opstate_consumer_close(c, NULL);
    opstate_memstore_destroy(mstore);
    opstate_memlog_destroy(mlog);
    if (rc) fprintf(stderr, "core_memory: failed\n");
    return rc;
}
