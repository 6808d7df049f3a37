/* test_nats.c — opstate_nats.h against a real nats-server (JetStream on,
   127.0.0.1, free port, temp store dir). Suite "nats".

   One shared server serves most tests (started lazily, stopped at exit);
   the tests that stop, kill or configure a server start their own. Every
   test uses its own stream (name and subject prefix), so tests are
   independent and can run alone: ./build/unit-nats nats.<name>.

   Expected states come from an independent oracle (nt_oracle): every
   retained message fetched one by one with js_GetMsg, decoded and folded
   by hand — no consumer, no opstate read path. States are compared on keys
   and values; positions are checked separately where they matter.

   Known failures kept on purpose (bugs in opstate_nats.h, see the test
   comments): stream_recreated_while_empty, durable_projector. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <stdbool.h>
#include <time.h>
#include <pthread.h>

#include "../opstate_nats.h"
#include "test_bytes.h"
#include "nats_server.h"
#include "runner.h"

#if defined(__GNUC__) || defined(__clang__)
#define NT_UNUSED __attribute__((unused))
#else
#define NT_UNUSED
#endif

/* ---- the shared server ------------------------------------------------- */

static nats_server nt_srv;
static int nt_srv_state; /* 0: not started, 1: running, -1: failed */

static void nt_srv_stop(void)
{
    if (nt_srv_state == 1) nats_server_stop(&nt_srv);
    nt_srv_state = 0;
}

/* nats_server_start/restart fork: flush first, or the child's copy of an
   unflushed stdout buffer is written a second time (freopen flushes it). */
static int nt_start(nats_server *srv)
{
    fflush(stdout);
    fflush(stderr);
    return nats_server_start(srv);
}

static int nt_restart(nats_server *srv)
{
    fflush(stdout);
    fflush(stderr);
    return nats_server_restart(srv);
}

/* The shared server's URL, or NULL when it cannot start. */
static const char *nt_url(void)
{
    if (nt_srv_state == 0) {
        if (nt_start(&nt_srv) == 0) {
            nt_srv_state = 1;
            atexit(nt_srv_stop);
        } else {
            nt_srv_state = -1;
            printf("nats: could not start nats-server\n");
        }
    }
    return nt_srv_state == 1 ? nt_srv.url : NULL;
}

/* ---- small helpers ----------------------------------------------------- */

static int64_t nt_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t nt_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* An event with a fresh time-ordered id and an event time. */
static opstate_event nt_ev(const char *scope, const char *kind, const char *key, uint32_t op, const char *data)
{
    static uint64_t counter;
    opstate_event ev;
    uint8_t ent[8];
    int i;
    memset(&ev, 0, sizeof ev);
    counter++;
    for (i = 0; i < 8; i++) ent[7 - i] = (uint8_t)(counter >> (8 * i));
    ent[0] = (uint8_t)(ent[0] ^ 0x15); /* some entropy in the bits used */
    opstate_id_time_ordered(nt_now_ns(), ent, &ev.id);
    ev.scope = str(scope);
    ev.kind = str(kind);
    ev.key = str(key);
    ev.op = op;
    ev.data = str(data);
    ev.has_time = true;
    ev.time = nt_now_ns();
    return ev;
}

/* JetStream request timeout of the connections nt_setup makes (0: the
   library's default). */
static int64_t nt_request_timeout_ms;
static int64_t nt_transient_wait_ms; /* nt_log_open's transient_wait_ms (0: the default) */

typedef struct nt_ctx {
    opstate_nats *n;
    opstate_nats_log *lg;
    opstate_log log;
    const char *stream, *prefix;
} nt_ctx;

/* At exit: nats.c's own threads end (and free what they hold) before the
   leak checks of ASan and valgrind run. */
static void nt_close_library(void) { nats_CloseAndWait(5000); }

static opstate_result nt_connect(const char *url, int64_t request_timeout_ms, opstate_nats **out)
{
    static int closes_at_exit;
    opstate_nats_config cfg;
    opstate_error err;
    opstate_result r;
    memset(&cfg, 0, sizeof cfg);
    cfg.urls = url;
    cfg.name = "opstate-test";
    cfg.max_reconnect = -1;
    cfg.reconnect_wait_ms = 50;
    cfg.request_timeout_ms = request_timeout_ms;
    r = opstate_nats_connect(&cfg, out, &err);
    /* after nats.c opened (and registered its own exit cleanup): runs before it */
    if (!closes_at_exit++) atexit(nt_close_library);
    return r;
}

static opstate_result nt_log_open(opstate_nats *n, const char *stream, opstate_nats_log **out)
{
    opstate_nats_log_config lc;
    opstate_error err;
    memset(&lc, 0, sizeof lc);
    lc.stream = stream;
    lc.first_message_wait_ms = 2000;
    lc.transient_wait_ms = nt_transient_wait_ms;
    return opstate_nats_log_open(n, &lc, out, &err);
}

/* Connects to url, ensures the stream (limits as given) and opens a log on
   it. Returns 0 on success. */
static int nt_setup(nt_ctx *x, const char *url, const char *stream, const char *prefix, uint64_t max_per_subject,
                    uint64_t max_messages)
{
    opstate_nats_stream_config sc;
    opstate_error err;
    memset(x, 0, sizeof *x);
    x->stream = stream;
    x->prefix = prefix;
    if (!url || nt_connect(url, nt_request_timeout_ms, &x->n) != OPSTATE_OK) return -1;
    memset(&sc, 0, sizeof sc);
    sc.stream = stream;
    sc.prefix = prefix;
    sc.max_per_subject = max_per_subject;
    sc.max_messages = max_messages;
    /* a stale stream of an earlier run of this test on the same server */
    opstate_nats_stream_delete(x->n, stream, NULL);
    if (opstate_nats_stream_ensure(x->n, &sc, &err) != OPSTATE_OK) return -1;
    if (nt_log_open(x->n, stream, &x->lg) != OPSTATE_OK) return -1;
    x->log = opstate_nats_log_iface(x->lg);
    return 0;
}

static void nt_teardown(nt_ctx *x, bool delete_stream)
{
    opstate_nats_log_close(x->lg);
    if (delete_stream && x->n) opstate_nats_stream_delete(x->n, x->stream, NULL);
    opstate_nats_close(x->n);
    memset(x, 0, sizeof *x);
}

/* Publishes one event through the log interface; returns its seq (0 on
   failure). */
static uint64_t nt_pub(nt_ctx *x, const char *scope, const char *key, uint32_t op, const char *data)
{
    opstate_event ev = nt_ev(scope, "k", key, op, data);
    opstate_append_result ar;
    opstate_error err;
    memset(&ar, 0, sizeof ar);
    if (opstate_publish(&x->log, str(x->prefix), &ev, NULL, NULL, &ar, &err) != OPSTATE_OK) return 0;
    return ar.seq;
}

static opstate_stream_info nt_info(nt_ctx *x)
{
    opstate_stream_info si;
    opstate_error err;
    memset(&si, 0, sizeof si);
    if (x->log.info(x->log.user, &si, &err) != OPSTATE_OK) printf("nats: stream info failed\n");
    return si;
}

/* The fold key the default apply uses for (scope, "k", key). */
static size_t nt_key(const char *scope, const char *kind, const char *key, uint8_t *buf, size_t cap)
{
    opstate_event ev;
    size_t len = 0;
    memset(&ev, 0, sizeof ev);
    ev.scope = str(scope);
    ev.kind = str(kind);
    ev.key = str(key);
    ev.op = OPSTATE_OP_PUT;
    if (opstate_kv_event_key(&ev, buf, cap, &len) != OPSTATE_OK) return 0;
    return len;
}

/* 1 and the value when (scope, kind, key) is in kv with that value; 0 when
   absent; -1 when present with another value. want NULL: presence only. */
static int nt_has(const opstate_kv *kv, const char *scope, const char *kind, const char *key, const char *want)
{
    uint8_t buf[600];
    opstate_bytes k;
    opstate_kv_item it;
    k.ptr = buf;
    k.len = nt_key(scope, kind, key, buf, sizeof buf);
    if (opstate_kv_get(kv, k, &it) != OPSTATE_OK) return 0;
    if (!want) return 1;
    return it.value.len == strlen(want) && memcmp(it.value.ptr, want, it.value.len) == 0 ? 1 : -1;
}

/* Serialises keys and values (ascending key order) for comparison. */
typedef struct nt_buf {
    uint8_t *p;
    size_t len, cap;
} nt_buf;

static void nt_buf_add(nt_buf *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        uint8_t *q;
        while (cap < b->len + n) cap *= 2;
        q = (uint8_t *)realloc(b->p, cap);
        if (!q) return;
        b->p = q;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->len, p, n);
    b->len += n;
}

static bool nt_ser_item(void *user, const opstate_kv_item *it)
{
    nt_buf *b = (nt_buf *)user;
    uint32_t kl = (uint32_t)it->key.len, vl = (uint32_t)it->value.len;
    nt_buf_add(b, &kl, 4);
    nt_buf_add(b, it->key.ptr, it->key.len);
    nt_buf_add(b, &vl, 4);
    nt_buf_add(b, it->value.ptr, it->value.len);
    return true;
}

static bool nt_kv_equal(const opstate_kv *a, const opstate_kv *b)
{
    nt_buf x = {NULL, 0, 0}, y = {NULL, 0, 0};
    bool eq;
    opstate_kv_iterate(a, nt_ser_item, &x);
    opstate_kv_iterate(b, nt_ser_item, &y);
    eq = opstate_kv_count(a) == opstate_kv_count(b) && x.len == y.len && (x.len == 0 || memcmp(x.p, y.p, x.len) == 0);
    if (!eq)
        printf("    kv differ: %lu vs %lu keys\n", (unsigned long)opstate_kv_count(a), (unsigned long)opstate_kv_count(b));
    free(x.p);
    free(y.p);
    return eq;
}

/* A full fold of the log (opstate_replay from the first retained event). */
static opstate_kv *nt_fold(const opstate_log *log, opstate_bytes filter, opstate_replay_result *out)
{
    opstate_replay_config rc;
    opstate_replay_result rr;
    opstate_error err;
    opstate_kv *kv = NULL;
    memset(&rc, 0, sizeof rc);
    rc.log = *log;
    rc.filter = filter;
    if (opstate_kv_create(NULL, &kv) != OPSTATE_OK) return NULL;
    if (opstate_replay(&rc, kv, &rr, &err) != OPSTATE_OK) {
        printf("    replay failed: %s\n", opstate_result_str(err.result));
        opstate_kv_destroy(kv);
        return NULL;
    }
    if (out) *out = rr;
    return kv;
}

/* One stream message as the oracle reads it, by hand: the wire format
   (subject "<prefix>.<scope>.<kind>.<escaped key>", Opstate-Op, the
   payload as is) or a 0.1 encoding. false: not an event. */
static bool nt_oracle_event(natsMsg *m, uint8_t *key, size_t cap, opstate_bytes *k, opstate_bytes *v, bool *del)
{
    const char *subject = natsMsg_GetSubject(m), *op = NULL;
    opstate_event ev;
    opstate_subject_parts parts;
    uint8_t unesc[600];
    size_t ulen = 0;
    memset(&ev, 0, sizeof ev);
    if (natsMsgHeader_Get(m, "Opstate-Op", &op) == NATS_OK && op) {
        if (opstate_subject_parse(subject, strlen(subject), subject, strcspn(subject, "."), &parts, NULL) != OPSTATE_OK ||
            (parts.key_token.len && opstate_key_unescape((const char *)parts.key_token.ptr, parts.key_token.len, unesc,
                                                         sizeof unesc, &ulen, NULL) != OPSTATE_OK))
            return false;
        ev.scope = parts.scope;
        ev.kind = parts.kind;
        ev.key = by(unesc, ulen);
        ev.op = strcmp(op, "delete") == 0 ? OPSTATE_OP_DELETE : OPSTATE_OP_PUT;
        ev.data = by(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m));
    } else if (opstate_event_decode((const uint8_t *)natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), &ev, NULL) !=
               OPSTATE_OK) {
        return false;
    }
    if (opstate_kv_event_key(&ev, key, cap, &k->len) != OPSTATE_OK) return false;
    k->ptr = key;
    *del = ev.op == OPSTATE_OP_DELETE;
    *v = ev.data;
    return true;
}

/* The independent oracle: every retained message fetched one by one with
   js_GetMsg (no consumer, no opstate read path), decoded and folded by
   hand. filter: a NATS subject filter or NULL; bucket: read stream
   KV_<bucket> as a native KV bucket; upto: last sequence (0: all). */
static opstate_kv *nt_oracle(opstate_nats *n, const char *stream, const char *filter, const char *bucket,
                             uint64_t upto)
{
    jsCtx *js = opstate_nats_jetstream(n);
    jsStreamInfo *si = NULL;
    jsErrCode jerr = (jsErrCode)0;
    opstate_kv *kv = NULL;
    char kvstream[128], kvprefix[128];
    uint64_t seq, first, last;
    bool ok = true;
    if (bucket) {
        snprintf(kvstream, sizeof kvstream, "KV_%s", bucket);
        snprintf(kvprefix, sizeof kvprefix, "$KV.%s.", bucket);
        stream = kvstream;
    }
    if (js_GetStreamInfo(&si, js, stream, NULL, &jerr) != NATS_OK) return NULL;
    first = si->State.FirstSeq;
    last = si->State.LastSeq;
    jsStreamInfo_Destroy(si);
    if (upto && upto < last) last = upto;
    if (opstate_kv_create(NULL, &kv) != OPSTATE_OK) return NULL;
    for (seq = first ? first : 1; ok && seq <= last; seq++) {
        natsMsg *m = NULL;
        const char *subject;
        uint8_t key[700];
        opstate_bytes k, v;
        opstate_position none;
        bool del;
        natsStatus s = js_GetMsg(&m, js, stream, seq, NULL, &jerr);
        if (s == NATS_NOT_FOUND) continue; /* an interior hole */
        if (s != NATS_OK) {
            ok = false;
            break;
        }
        subject = natsMsg_GetSubject(m);
        memset(&none, 0, sizeof none);
        if (filter && !opstate_subject_matches(str(filter), str(subject))) {
            natsMsg_Destroy(m);
            continue;
        }
        if (bucket) {
            const char *op = NULL;
            natsMsgHeader_Get(m, "KV-Operation", &op);
            del = op != NULL && (strcmp(op, "DEL") == 0 || strcmp(op, "PURGE") == 0);
            k.ptr = key;
            k.len = nt_key(bucket, "kv", subject + strlen(kvprefix), key, sizeof key);
            v.ptr = (const uint8_t *)natsMsg_GetData(m);
            v.len = (size_t)natsMsg_GetDataLength(m);
        } else if (!nt_oracle_event(m, key, sizeof key, &k, &v, &del)) {
            natsMsg_Destroy(m);
            continue;
        }
        if (k.len == 0) ok = false;
        else if (del) opstate_kv_delete(kv, k, none);
        else if (opstate_kv_put(kv, k, v, none) != OPSTATE_OK) ok = false;
        natsMsg_Destroy(m);
    }
    if (!ok) {
        opstate_kv_destroy(kv);
        return NULL;
    }
    return kv;
}

/* An apply that counts what it is given, then applies the default way. */
typedef struct nt_counter {
    uint64_t n;
    uint64_t seqs[64];
} nt_counter;

static opstate_apply_outcome nt_count_apply(void *user, opstate_kv *kv, const opstate_event *ev)
{
    nt_counter *c = (nt_counter *)user;
    opstate_apply_outcome o = opstate_apply_default(NULL, kv, ev);
    if (o == OPSTATE_APPLY_DONE) {
        if (c->n < 64) c->seqs[c->n] = ev->position.seq;
        c->n++;
    }
    return o;
}

static opstate_result nt_open(opstate_log log, opstate_memstore *ms, bool no_resync, nt_counter *counter,
                              opstate_consumer **out, opstate_error *err)
{
    opstate_consumer_config cc;
    memset(&cc, 0, sizeof cc);
    cc.log = log;
    cc.store = opstate_memstore_iface(ms);
    cc.no_resync = no_resync;
    if (counter) {
        cc.apply = nt_count_apply;
        cc.apply_user = counter;
    }
    memset(err, 0, sizeof *err);
    return opstate_consumer_open(&cc, out, err);
}

/* Polls until the consumer's position reaches the stream's last sequence
   and a poll reports caught up, or the deadline passes. Errors are
   tolerated (and the last one returned) only when `tolerate` is set. */
static opstate_result nt_catch_up(opstate_consumer *c, const opstate_log *log, int64_t deadline_ms, bool tolerate)
{
    int64_t end = nt_mono_ms() + deadline_ms;
    opstate_result last = OPSTATE_OK;
    while (nt_mono_ms() < end) {
        opstate_poll_result pr;
        opstate_stream_info si;
        opstate_error err;
        opstate_result r = opstate_consumer_poll(c, 0, 0, &pr, &err);
        if (r != OPSTATE_OK) {
            last = r;
            if (!tolerate) return r;
            nats_server_sleep_ms(20);
            continue;
        }
        if (pr.caught_up && log->info(log->user, &si, &err) == OPSTATE_OK &&
            opstate_consumer_position(c).seq >= si.last_seq)
            return OPSTATE_OK;
        if (pr.caught_up) nats_server_sleep_ms(5);
    }
    return last != OPSTATE_OK ? last : OPSTATE_TIMEOUT;
}

/* Polls until `n` more events were applied (a poll may apply fewer than
   asked), within deadline_ms. */
static opstate_result nt_poll_n(opstate_consumer *c, uint64_t n, int64_t deadline_ms)
{
    int64_t end = nt_mono_ms() + deadline_ms;
    uint64_t target = opstate_consumer_get_status(c)->applied + n;
    while (opstate_consumer_get_status(c)->applied < target && nt_mono_ms() < end) {
        opstate_poll_result pr;
        opstate_error err;
        opstate_result r = opstate_consumer_poll(c, (uint32_t)(target - opstate_consumer_get_status(c)->applied), 0,
                                                 &pr, &err);
        if (r != OPSTATE_OK) return r;
    }
    return opstate_consumer_get_status(c)->applied == target ? OPSTATE_OK : OPSTATE_TIMEOUT;
}

/* ---- stream ensure ------------------------------------------------------ */

TEST(nats, stream_ensure)
{
    nt_ctx x;
    opstate_nats_stream_config sc;
    opstate_error err;
    jsStreamInfo *si = NULL;
    jsErrCode jerr = (jsErrCode)0;
    REQUIRE(nt_setup(&x, nt_url(), "T_ENSURE", "ens", 5, 0) == 0);
    memset(&sc, 0, sizeof sc);
    sc.stream = "T_ENSURE";
    sc.prefix = "ens";
    sc.max_per_subject = 5;
    CASE("same config again");
    CHECK(opstate_nats_stream_ensure(x.n, &sc, &err) == OPSTATE_OK);
    CHECK(nt_pub(&x, "s", "a", OPSTATE_OP_PUT, "1") == 1);

    CASE("other max_per_subject");
    sc.max_per_subject = 7;
    memset(&err, 0, sizeof err);
    CHECK(opstate_nats_stream_ensure(x.n, &sc, &err) == OPSTATE_CONFLICT);
    CHECK(err.result == OPSTATE_CONFLICT);
    CHECK(err.field != NULL && strstr(err.field, "max_per_subject") != NULL);
    REQUIRE(js_GetStreamInfo(&si, opstate_nats_jetstream(x.n), "T_ENSURE", NULL, &jerr) == NATS_OK);
    CHECK(si->Config->MaxMsgsPerSubject == 5);
    CHECK(si->Config->MaxMsgs == -1);
    CHECK(si->State.Msgs == 1); /* the stream was neither recreated nor purged */
    jsStreamInfo_Destroy(si);
    si = NULL;

    CASE("other max_messages");
    sc.max_per_subject = 5;
    sc.max_messages = 100;
    memset(&err, 0, sizeof err);
    CHECK(opstate_nats_stream_ensure(x.n, &sc, &err) == OPSTATE_CONFLICT);
    CHECK(err.field != NULL && strstr(err.field, "max_messages") != NULL);

    CASE("no limit asked: the stream's own max_per_subject (5) is used");
    sc.max_per_subject = 0;
    sc.max_messages = 0;
    CHECK(opstate_nats_stream_ensure(x.n, &sc, &err) == OPSTATE_OK);

    CASE("other storage kind");
    sc.memory_storage = true;
    memset(&err, 0, sizeof err);
    CHECK(opstate_nats_stream_ensure(x.n, &sc, &err) == OPSTATE_CONFLICT);
    CHECK(err.field != NULL && strstr(err.field, "storage") != NULL);

    CASE("other subjects");
    sc.memory_storage = false;
    sc.prefix = "ens2";
    memset(&err, 0, sizeof err);
    CHECK(opstate_nats_stream_ensure(x.n, &sc, &err) == OPSTATE_CONFLICT);
    CHECK(err.field != NULL && strstr(err.field, "subjects") != NULL);

    CASE("unchanged after the refusals");
    REQUIRE(js_GetStreamInfo(&si, opstate_nats_jetstream(x.n), "T_ENSURE", NULL, &jerr) == NATS_OK);
    CHECK(si->Config->MaxMsgsPerSubject == 5);
    CHECK(si->Config->MaxMsgs == -1);
    CHECK(si->Config->Storage == js_FileStorage);
    CHECK(si->Config->SubjectsLen == 1 && strcmp(si->Config->Subjects[0], "ens.>") == 0);
    CHECK(si->State.Msgs == 1);
    jsStreamInfo_Destroy(si);

    CASE("invalid prefix");
    sc.prefix = "a.*";
    CHECK(opstate_nats_stream_ensure(x.n, &sc, &err) == OPSTATE_INVALID_ARGUMENT);
    sc.prefix = "";
    CHECK(opstate_nats_stream_ensure(x.n, &sc, &err) == OPSTATE_INVALID_ARGUMENT);

    CASE("delete, delete again");
    CHECK(opstate_nats_stream_delete(x.n, "T_ENSURE", &err) == OPSTATE_OK);
    CHECK(opstate_nats_stream_delete(x.n, "T_ENSURE", &err) == OPSTATE_NOT_FOUND);
    nt_teardown(&x, false);
}

/* ---- publish: dedup ---------------------------------------------------- */

typedef struct nt_outcomes {
    opstate_nats_outcome o[64];
    size_t n;
} nt_outcomes;

static void nt_collect(void *user, const opstate_nats_outcome *o)
{
    nt_outcomes *all = (nt_outcomes *)user;
    if (all->n < 64) all->o[all->n] = *o;
    all->n++;
}

TEST(nats, publish_dedup)
{
    nt_ctx x;
    opstate_event ev, evs[10];
    opstate_append_result a1, a2;
    opstate_error err;
    nt_outcomes outs;
    size_t i, j;
    uint64_t dup_of = 0;
    REQUIRE(nt_setup(&x, nt_url(), "T_DEDUP", "dd", 0, 0) == 0);

    CASE("sync: same id twice");
    ev = nt_ev("s", "k", "a", OPSTATE_OP_PUT, "v1");
    REQUIRE(opstate_publish(&x.log, str("dd"), &ev, NULL, NULL, &a1, &err) == OPSTATE_OK);
    CHECK_EQ_U64(a1.seq, 1);
    CHECK(!a1.duplicate);
    ev.data = str("another payload, same id");
    REQUIRE(opstate_publish(&x.log, str("dd"), &ev, NULL, NULL, &a2, &err) == OPSTATE_OK);
    CHECK_EQ_U64(a2.seq, 1);
    CHECK(a2.duplicate);
    CHECK_EQ_U64(nt_info(&x).messages, 1);
    CHECK_EQ_U64(nt_info(&x).last_seq, 1);

    CASE("async: 10 events, one published twice");
    for (i = 0; i < 10; i++) {
        static const char *keys[] = {"k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8", "k9"};
        evs[i] = nt_ev("s", "k", keys[i], OPSTATE_OP_PUT, "x");
        REQUIRE(opstate_nats_publish_async(x.lg, str("dd"), &evs[i], NULL, &err) == OPSTATE_OK);
        if (i == 4) REQUIRE(opstate_nats_publish_async(x.lg, str("dd"), &evs[i], NULL, &err) == OPSTATE_OK);
    }
    memset(&outs, 0, sizeof outs);
    REQUIRE(opstate_nats_publish_wait(x.lg, 5000, nt_collect, &outs, &err) == OPSTATE_OK);
    CHECK_EQ_U64(outs.n, 11);
    for (i = 0; i < 10; i++) {
        size_t hits = 0, dups = 0;
        uint64_t seq = 0;
        for (j = 0; j < outs.n && j < 64; j++) {
            if (!opstate_id_equal(&outs.o[j].id, &evs[i].id)) continue;
            hits++;
            CHECK(outs.o[j].result == OPSTATE_OK);
            CHECK(outs.o[j].seq >= 2 && outs.o[j].seq <= 11);
            if (seq) CHECK_EQ_U64(outs.o[j].seq, seq); /* the duplicate has the original's seq */
            seq = outs.o[j].seq;
            if (outs.o[j].duplicate) dups++;
        }
        CHECK_EQ_U64(hits, i == 4 ? 2 : 1);
        CHECK_EQ_U64(dups, i == 4 ? 1 : 0);
        if (i == 4) dup_of = seq;
    }
    CHECK(dup_of != 0);
    /* every sequence once among the non-duplicates */
    for (i = 2; i <= 11; i++) {
        size_t hits = 0;
        for (j = 0; j < outs.n && j < 64; j++)
            if (outs.o[j].seq == i && !outs.o[j].duplicate) hits++;
        CHECK_EQ_U64(hits, 1);
    }
    CHECK_EQ_U64(nt_info(&x).messages, 11);

    CASE("async: no stream for the subject -> a failure outcome, not a conflict");
    ev = nt_ev("s", "k", "a", OPSTATE_OP_PUT, "v");
    memset(&outs, 0, sizeof outs);
    REQUIRE(opstate_nats_publish_async(x.lg, str("nostream"), &ev, NULL, &err) == OPSTATE_OK);
    CHECK(opstate_nats_publish_wait(x.lg, 3000, nt_collect, &outs, &err) == OPSTATE_OK);
    CHECK_EQ_U64(outs.n, 1);
    if (outs.n == 1) {
        CHECK(outs.o[0].result != OPSTATE_OK && outs.o[0].result != OPSTATE_CONFLICT);
        CHECK_EQ_U64(outs.o[0].seq, 0);
        CHECK(opstate_id_equal(&outs.o[0].id, &ev.id));
    }

    CASE("sync: no stream for the subject");
    memset(&err, 0, sizeof err);
    {
        opstate_result r = opstate_publish(&x.log, str("nostream"), &ev, NULL, NULL, &a1, &err);
        CHECK(r != OPSTATE_OK && r != OPSTATE_CONFLICT);
    }

    CASE("async: nothing pending");
    memset(&outs, 0, sizeof outs);
    CHECK(opstate_nats_publish_wait(x.lg, 1000, nt_collect, &outs, &err) == OPSTATE_OK);
    CHECK_EQ_U64(outs.n, 0);
    nt_teardown(&x, true);
}

/* ---- publish: every event reported once, acknowledged or not ------------ */

#define NT_UNACKED_N 500

/* Outcomes of a window of NT_UNACKED_N events: how often each was
   reported, and how many as TIMEOUT (not acknowledged). */
typedef struct nt_tally {
    const opstate_event *evs;
    unsigned reported[NT_UNACKED_N];
    size_t total, timeouts, unknown;
} nt_tally;

static void nt_tally_outcome(void *user, const opstate_nats_outcome *o)
{
    nt_tally *t = (nt_tally *)user;
    size_t i;
    t->total++;
    if (o->result == OPSTATE_TIMEOUT) t->timeouts++;
    for (i = 0; i < NT_UNACKED_N && !opstate_id_equal(&t->evs[i].id, &o->id); i++) continue;
    if (i < NT_UNACKED_N) t->reported[i]++;
    else t->unknown++;
}

/* Publishes evs asynchronously and waits up to wait_ms; *t gets the tally.
   An event whose publish call itself fails (the client already knows the
   server is gone) was never sent: the caller counts it as not
   acknowledged, as the tool does; the ones sent before it are waited for. */
static opstate_result nt_publish_window(nt_ctx *x, const opstate_event *evs, int64_t wait_ms, nt_tally *t)
{
    opstate_error err;
    opstate_result r;
    size_t i, sent;
    memset(t, 0, sizeof *t);
    t->evs = evs;
    for (sent = 0; sent < NT_UNACKED_N; sent++)
        if (opstate_nats_publish_async(x->lg, str(x->prefix), &evs[sent], NULL, &err) != OPSTATE_OK) break;
    r = opstate_nats_publish_wait(x->lg, wait_ms, nt_tally_outcome, t, &err);
    for (i = sent; i < NT_UNACKED_N; i++) {
        t->reported[i]++;
        t->total++;
        t->timeouts++;
    }
    return sent < NT_UNACKED_N && r == OPSTATE_OK ? OPSTATE_TIMEOUT : r;
}

/* Each event exactly once, none unknown. */
static bool nt_each_once(const nt_tally *t)
{
    size_t i;
    for (i = 0; i < NT_UNACKED_N; i++)
        if (t->reported[i] != 1) return false;
    return t->unknown == 0 && t->total == NT_UNACKED_N;
}

/* opstate_nats_publish_wait reports every event sent exactly once: the
   unacknowledged ones (a stopped server, then a killed one) as TIMEOUT,
   within the wait and never later; republished with the same ids they are
   stored once. */
TEST(nats, publish_wait_reports_unacknowledged)
{
    static opstate_event evs[NT_UNACKED_N];
    nats_server srv = {0};
    nt_ctx x;
    nt_tally t;
    int64_t started;
    size_t i;
    REQUIRE(nt_start(&srv) == 0);
    if (nt_setup(&x, srv.url, "T_UNACKED", "ua", 0, 0) != 0) {
        CHECK(!"setup");
        nats_server_stop(&srv);
        return;
    }
    for (i = 0; i < NT_UNACKED_N; i++) evs[i] = nt_ev("s", "k", i % 2 ? "a" : "b", OPSTATE_OP_PUT, "v");

    CASE("a stopped server: all TIMEOUT, each once, within the wait");
    kill(srv.pid, SIGSTOP);
    started = nt_mono_ms();
    CHECK(nt_publish_window(&x, evs, 700, &t) == OPSTATE_TIMEOUT);
    CHECK(nt_mono_ms() - started < 7000);
    CHECK(nt_each_once(&t));
    CHECK_EQ_U64(t.timeouts, NT_UNACKED_N);
    kill(srv.pid, SIGCONT);

    CASE("their late acknowledgments are not reported");
    nats_server_sleep_ms(300);
    memset(&t, 0, sizeof t);
    t.evs = evs;
    CHECK(opstate_nats_publish_wait(x.lg, 1000, nt_tally_outcome, &t, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(t.total, 0);

    CASE("the same events again: acknowledged, stored once");
    CHECK(nt_publish_window(&x, evs, 5000, &t) == OPSTATE_OK);
    CHECK(nt_each_once(&t));
    CHECK_EQ_U64(t.timeouts, 0);
    CHECK_EQ_U64(nt_info(&x).messages, NT_UNACKED_N);

    CASE("a killed server: the wait ends in TIMEOUT, each event reported once");
    for (i = 0; i < NT_UNACKED_N; i++) evs[i] = nt_ev("s", "k", "c", OPSTATE_OP_PUT, "w");
    nats_server_kill(&srv, SIGKILL);
    started = nt_mono_ms();
    CHECK(nt_publish_window(&x, evs, 700, &t) == OPSTATE_TIMEOUT);
    CHECK(nt_mono_ms() - started < 7000);
    CHECK(nt_each_once(&t));
    CHECK_EQ_U64(t.timeouts, NT_UNACKED_N);
    nt_teardown(&x, false);
    nats_server_stop(&srv);
}

/* ---- optimistic concurrency --------------------------------------------- */

TEST(nats, occ)
{
    nt_ctx x;
    opstate_event ev;
    opstate_append_result ar;
    opstate_append_options ao;
    opstate_error err;
    nt_outcomes outs;
    uint64_t s1, s2;
    REQUIRE(nt_setup(&x, nt_url(), "T_OCC", "occ", 0, 0) == 0);
    s1 = nt_pub(&x, "s", "a", OPSTATE_OP_PUT, "1");
    REQUIRE(s1 == 1);
    REQUIRE(nt_pub(&x, "s", "b", OPSTATE_OP_PUT, "1") == 2); /* another subject moves the stream, not "a" */
    memset(&ao, 0, sizeof ao);
    ao.expect_last_subject_seq = true;

    CASE("right expectation");
    ao.last_subject_seq = s1;
    ev = nt_ev("s", "k", "a", OPSTATE_OP_PUT, "2");
    memset(&err, 0, sizeof err);
    REQUIRE(opstate_publish(&x.log, str("occ"), &ev, &ao, NULL, &ar, &err) == OPSTATE_OK);
    s2 = ar.seq;
    CHECK_EQ_U64(s2, 3);

    CASE("stale expectation");
    ao.last_subject_seq = s1;
    ev = nt_ev("s", "k", "a", OPSTATE_OP_PUT, "3");
    memset(&err, 0, sizeof err);
    CHECK(opstate_publish(&x.log, str("occ"), &ev, &ao, NULL, &ar, &err) == OPSTATE_CONFLICT);
    CHECK(err.result == OPSTATE_CONFLICT);
    CHECK_EQ_U64(err.dep_detail, 10071);

    CASE("future expectation");
    ao.last_subject_seq = 99;
    ev = nt_ev("s", "k", "a", OPSTATE_OP_PUT, "3");
    memset(&err, 0, sizeof err);
    CHECK(opstate_publish(&x.log, str("occ"), &ev, &ao, NULL, &ar, &err) == OPSTATE_CONFLICT);
    CHECK_EQ_U64(err.dep_detail, 10071);

    CASE("expected 0 (no message) on an existing subject");
    ao.last_subject_seq = 0;
    ev = nt_ev("s", "k", "a", OPSTATE_OP_PUT, "4");
    memset(&err, 0, sizeof err);
    CHECK(opstate_publish(&x.log, str("occ"), &ev, &ao, NULL, &ar, &err) == OPSTATE_CONFLICT);
    CHECK_EQ_U64(err.dep_detail, 10071);

    CASE("expected 0 on a new subject");
    ev = nt_ev("s", "k", "new", OPSTATE_OP_PUT, "1");
    memset(&err, 0, sizeof err);
    CHECK(opstate_publish(&x.log, str("occ"), &ev, &ao, NULL, &ar, &err) == OPSTATE_OK);
    CHECK_EQ_U64(ar.seq, 4);
    CHECK_EQ_U64(nt_info(&x).messages, 4); /* nothing stored by the refused ones */

    CASE("async: one right, one stale");
    memset(&outs, 0, sizeof outs);
    ao.last_subject_seq = s2;
    ev = nt_ev("s", "k", "a", OPSTATE_OP_PUT, "5");
    REQUIRE(opstate_nats_publish_async(x.lg, str("occ"), &ev, &ao, &err) == OPSTATE_OK);
    REQUIRE(opstate_nats_publish_wait(x.lg, 5000, nt_collect, &outs, &err) == OPSTATE_OK);
    REQUIRE(outs.n == 1);
    CHECK(outs.o[0].result == OPSTATE_OK);
    CHECK_EQ_U64(outs.o[0].seq, 5);
    ao.last_subject_seq = s2; /* stale now */
    ev = nt_ev("s", "k", "a", OPSTATE_OP_PUT, "6");
    memset(&outs, 0, sizeof outs);
    REQUIRE(opstate_nats_publish_async(x.lg, str("occ"), &ev, &ao, &err) == OPSTATE_OK);
    REQUIRE(opstate_nats_publish_wait(x.lg, 5000, nt_collect, &outs, &err) == OPSTATE_OK);
    REQUIRE(outs.n == 1);
    CHECK(outs.o[0].result == OPSTATE_CONFLICT);
    CHECK_EQ_U64(outs.o[0].js_error, 10071);
    CHECK(opstate_id_equal(&outs.o[0].id, &ev.id));
    CHECK_EQ_U64(outs.o[0].seq, 0);
    CHECK_EQ_U64(nt_info(&x).messages, 5);

    CASE("async: expected 0 on an existing subject");
    ao.last_subject_seq = 0;
    ev = nt_ev("s", "k", "b", OPSTATE_OP_PUT, "7");
    memset(&outs, 0, sizeof outs);
    REQUIRE(opstate_nats_publish_async(x.lg, str("occ"), &ev, &ao, &err) == OPSTATE_OK);
    REQUIRE(opstate_nats_publish_wait(x.lg, 5000, nt_collect, &outs, &err) == OPSTATE_OK);
    REQUIRE(outs.n == 1);
    CHECK(outs.o[0].result == OPSTATE_CONFLICT);
    CHECK_EQ_U64(outs.o[0].js_error, 10071);
    nt_teardown(&x, true);
}

/* A failure that is not a conflict: the server is gone. */
TEST(nats, occ_transient_is_not_conflict)
{
    nats_server srv = {0};
    opstate_nats *n = NULL;
    opstate_nats_log *lg = NULL;
    opstate_nats_stream_config sc;
    opstate_log log;
    opstate_event ev;
    opstate_append_result ar;
    opstate_append_options ao;
    opstate_error err;
    opstate_result r;
    REQUIRE(nt_start(&srv) == 0);
    if (nt_connect(srv.url, 300, &n) != OPSTATE_OK) {
        CHECK(!"connect");
        nats_server_stop(&srv);
        return;
    }
    memset(&sc, 0, sizeof sc);
    sc.stream = "T_TRANS";
    sc.prefix = "tr";
    CHECK(opstate_nats_stream_ensure(n, &sc, &err) == OPSTATE_OK);
    CHECK(nt_log_open(n, "T_TRANS", &lg) == OPSTATE_OK);
    if (lg) {
        log = opstate_nats_log_iface(lg);
        ev = nt_ev("s", "k", "a", OPSTATE_OP_PUT, "1");
        CHECK(opstate_publish(&log, str("tr"), &ev, NULL, NULL, &ar, &err) == OPSTATE_OK);
        nats_server_kill(&srv, SIGTERM);
        memset(&ao, 0, sizeof ao);
        ao.expect_last_subject_seq = true;
        ao.last_subject_seq = 7; /* would be a conflict if the server could say so */
        ev = nt_ev("s", "k", "a", OPSTATE_OP_PUT, "2");
        memset(&err, 0, sizeof err);
        r = opstate_publish(&log, str("tr"), &ev, &ao, NULL, &ar, &err);
        CHECK(r == OPSTATE_TIMEOUT || r == OPSTATE_IO);
        CHECK(r != OPSTATE_CONFLICT);
        CHECK(err.dep_detail != 10071);
        opstate_nats_log_close(lg);
    }
    opstate_nats_close(n);
    nats_server_stop(&srv);
}

/* ---- the expiry axiom ---------------------------------------------------- */

/* Two twin consumers read seqs 1..3 (a=1 b=1 c=1) and stop. While they are
   away: delete b (4), a=2 (5), c=2 (6), d=1 (7), a=3 (8) with max_messages
   4: seqs 1..4 are evicted for real, the delete marker of b among them. */
TEST(nats, expired_cursor_resync_and_twin)
{
    nt_ctx x;
    opstate_memstore *ms_a = NULL, *ms_b = NULL;
    opstate_consumer *c = NULL;
    opstate_error err;
    opstate_stream_info si;
    opstate_kv *want = NULL;
    const opstate_consumer_status *st;
    REQUIRE(nt_setup(&x, nt_url(), "T_EXP", "exp", 0, 4) == 0);
    REQUIRE(opstate_memstore_create(NULL, &ms_a) == OPSTATE_OK);
    REQUIRE(opstate_memstore_create(NULL, &ms_b) == OPSTATE_OK);
    REQUIRE(nt_pub(&x, "s", "a", OPSTATE_OP_PUT, "a1") == 1);
    REQUIRE(nt_pub(&x, "s", "b", OPSTATE_OP_PUT, "b1") == 2);
    REQUIRE(nt_pub(&x, "s", "c", OPSTATE_OP_PUT, "c1") == 3);

    CASE("twins consume 1..3");
    REQUIRE(nt_open(x.log, ms_a, false, NULL, &c, &err) == OPSTATE_OK);
    CHECK(nt_catch_up(c, &x.log, 5000, false) == OPSTATE_OK);
    CHECK_EQ_U64(opstate_consumer_position(c).seq, 3);
    CHECK(opstate_consumer_close(c, &err) == OPSTATE_OK);
    REQUIRE(nt_open(x.log, ms_b, true, NULL, &c, &err) == OPSTATE_OK);
    CHECK(nt_catch_up(c, &x.log, 5000, false) == OPSTATE_OK);
    CHECK_EQ_U64(opstate_consumer_position(c).seq, 3);
    CHECK(opstate_consumer_close(c, &err) == OPSTATE_OK);

    CASE("eviction during the gap");
    REQUIRE(nt_pub(&x, "s", "b", OPSTATE_OP_DELETE, "") == 4);
    REQUIRE(nt_pub(&x, "s", "a", OPSTATE_OP_PUT, "a2") == 5);
    REQUIRE(nt_pub(&x, "s", "c", OPSTATE_OP_PUT, "c2") == 6);
    REQUIRE(nt_pub(&x, "s", "d", OPSTATE_OP_PUT, "d1") == 7);
    REQUIRE(nt_pub(&x, "s", "a", OPSTATE_OP_PUT, "a3") == 8);
    si = nt_info(&x);
    CHECK_EQ_U64(si.first_seq, 5); /* real eviction: the delete marker of b is gone */
    CHECK_EQ_U64(si.last_seq, 8);
    want = nt_oracle(x.n, x.stream, NULL, NULL, 0);
    REQUIRE(want != NULL);
    CHECK(nt_has(want, "s", "k", "a", "a3") == 1 && nt_has(want, "s", "k", "b", NULL) == 0);

    CASE("resync twin");
    REQUIRE(nt_open(x.log, ms_a, false, NULL, &c, &err) == OPSTATE_OK);
    st = opstate_consumer_get_status(c);
    CHECK(st->decision.reason == OPSTATE_REASON_CURSOR_EXPIRED);
    CHECK(st->decision.restore);
    CHECK(st->decision.resync);
    CHECK_EQ_U64(st->decision.gap, 1);
    CHECK(st->resume.state == OPSTATE_RESUME_EXPIRED);
    CHECK(st->resynced);
    CHECK_EQ_U64(st->resync_removed, 1); /* b only: a and c still have messages */
    CHECK(nt_has(opstate_consumer_kv(c), "s", "k", "b", NULL) == 0); /* gone before any poll */
    CHECK(nt_has(opstate_consumer_kv(c), "s", "k", "a", "a1") == 1);
    CHECK(nt_has(opstate_consumer_kv(c), "s", "k", "c", "c1") == 1);
    CHECK(nt_catch_up(c, &x.log, 5000, false) == OPSTATE_OK);
    CHECK(nt_kv_equal(opstate_consumer_kv(c), want));
    CHECK(nt_has(opstate_consumer_kv(c), "s", "k", "b", NULL) == 0);
    CHECK(nt_has(opstate_consumer_kv(c), "s", "k", "a", "a3") == 1);
    CHECK(nt_has(opstate_consumer_kv(c), "s", "k", "c", "c2") == 1);
    CHECK(nt_has(opstate_consumer_kv(c), "s", "k", "d", "d1") == 1);
    CHECK_EQ_U64(opstate_consumer_get_status(c)->applied, 4);
    CHECK(opstate_consumer_close(c, &err) == OPSTATE_OK);

    CASE("no_resync twin keeps the stale key");
    REQUIRE(nt_open(x.log, ms_b, true, NULL, &c, &err) == OPSTATE_OK);
    st = opstate_consumer_get_status(c);
    CHECK(st->decision.reason == OPSTATE_REASON_CURSOR_EXPIRED); /* detected, never a silent clamp */
    CHECK(st->resume.state == OPSTATE_RESUME_EXPIRED);
    CHECK(!st->resynced);
    CHECK(nt_catch_up(c, &x.log, 5000, false) == OPSTATE_OK);
    CHECK(nt_has(opstate_consumer_kv(c), "s", "k", "b", "b1") == 1); /* the stale key survives */
    CHECK(nt_has(opstate_consumer_kv(c), "s", "k", "a", "a3") == 1);
    CHECK_EQ_U64(opstate_kv_count(opstate_consumer_kv(c)), opstate_kv_count(want) + 1);
    CHECK(opstate_consumer_close(c, &err) == OPSTATE_OK);

    opstate_kv_destroy(want);
    opstate_memstore_destroy(ms_a);
    opstate_memstore_destroy(ms_b);
    nt_teardown(&x, true);
}

/* Per-subject retention (max_per_subject 1) moves first_seq past the
   cursor too. */
TEST(nats, expired_cursor_max_per_subject)
{
    nt_ctx x;
    opstate_memstore *ms = NULL;
    opstate_consumer *c = NULL;
    opstate_error err;
    opstate_kv *want = NULL;
    const opstate_consumer_status *st;
    REQUIRE(nt_setup(&x, nt_url(), "T_EXPS", "exps", 1, 0) == 0);
    REQUIRE(opstate_memstore_create(NULL, &ms) == OPSTATE_OK);
    REQUIRE(nt_pub(&x, "s", "a", OPSTATE_OP_PUT, "a1") == 1);
    REQUIRE(nt_pub(&x, "s", "b", OPSTATE_OP_PUT, "b1") == 2);
    REQUIRE(nt_open(x.log, ms, false, NULL, &c, &err) == OPSTATE_OK);
    CHECK(nt_catch_up(c, &x.log, 5000, false) == OPSTATE_OK);
    CHECK(opstate_consumer_close(c, &err) == OPSTATE_OK);
    REQUIRE(nt_pub(&x, "s", "a", OPSTATE_OP_PUT, "a2") == 3);
    REQUIRE(nt_pub(&x, "s", "a", OPSTATE_OP_PUT, "a3") == 4); /* 3 evicted */
    REQUIRE(nt_pub(&x, "s", "b", OPSTATE_OP_PUT, "b2") == 5); /* 2 evicted */
    CHECK_EQ_U64(nt_info(&x).first_seq, 4);
    want = nt_oracle(x.n, x.stream, NULL, NULL, 0);
    REQUIRE(want != NULL);
    REQUIRE(nt_open(x.log, ms, false, NULL, &c, &err) == OPSTATE_OK);
    st = opstate_consumer_get_status(c);
    CHECK(st->decision.reason == OPSTATE_REASON_CURSOR_EXPIRED);
    CHECK(st->decision.resync);
    CHECK_EQ_U64(st->resume.missed, 1);
    CHECK(nt_catch_up(c, &x.log, 5000, false) == OPSTATE_OK);
    CHECK(nt_kv_equal(opstate_consumer_kv(c), want));
    CHECK(opstate_consumer_close(c, &err) == OPSTATE_OK);
    opstate_kv_destroy(want);
    opstate_memstore_destroy(ms);
    nt_teardown(&x, true);
}

/* The eviction happens after the consumer opened (its open-time check
   passed) and before it read: the server clamps the start of the new read,
   and the first delivered sequence must be checked against the requested
   one (opstate_nats_stream_purge as the eviction). */
TEST(nats, expired_while_attached)
{
    nt_ctx x;
    opstate_memstore *ms = NULL;
    opstate_consumer *c = NULL;
    opstate_error err;
    opstate_kv *want = NULL;
    REQUIRE(nt_setup(&x, nt_url(), "T_EXPL", "expl", 0, 0) == 0);
    REQUIRE(opstate_memstore_create(NULL, &ms) == OPSTATE_OK);
    REQUIRE(nt_pub(&x, "s", "a", OPSTATE_OP_PUT, "a1") == 1);
    REQUIRE(nt_pub(&x, "s", "b", OPSTATE_OP_PUT, "b1") == 2);
    REQUIRE(nt_open(x.log, ms, false, NULL, &c, &err) == OPSTATE_OK);
    CHECK(nt_catch_up(c, &x.log, 5000, false) == OPSTATE_OK);
    CHECK(opstate_consumer_close(c, &err) == OPSTATE_OK);
    REQUIRE(nt_pub(&x, "s", "b", OPSTATE_OP_DELETE, "") == 3);
    REQUIRE(nt_pub(&x, "s", "c", OPSTATE_OP_PUT, "c1") == 4);
    REQUIRE(nt_pub(&x, "s", "a", OPSTATE_OP_PUT, "a2") == 5);

    REQUIRE(nt_open(x.log, ms, false, NULL, &c, &err) == OPSTATE_OK);
    CHECK(opstate_consumer_get_status(c)->decision.reason == OPSTATE_REASON_RESUME);
    CHECK(opstate_consumer_get_status(c)->resume.state == OPSTATE_RESUME_OK);
    CHECK(opstate_nats_stream_purge(x.n, "T_EXPL", 4, &err) == OPSTATE_OK); /* 1..3 gone: b's delete marker too */
    CHECK_EQ_U64(nt_info(&x).first_seq, 4);
    want = nt_oracle(x.n, x.stream, NULL, NULL, 0);
    REQUIRE(want != NULL);
    CHECK(nt_catch_up(c, &x.log, 5000, false) == OPSTATE_OK);
    CHECK(opstate_consumer_get_status(c)->resynced);
    CHECK(nt_has(opstate_consumer_kv(c), "s", "k", "b", NULL) == 0);
    CHECK(nt_kv_equal(opstate_consumer_kv(c), want));
    CHECK(opstate_consumer_close(c, &err) == OPSTATE_OK);
    opstate_kv_destroy(want);
    opstate_memstore_destroy(ms);
    nt_teardown(&x, true);
}

/* ---- stream deleted and recreated ---------------------------------------- */

static bool nt_recreate(nt_ctx *x)
{
    opstate_nats_stream_config sc;
    opstate_error err;
    memset(&sc, 0, sizeof sc);
    sc.stream = x->stream;
    sc.prefix = x->prefix;
    return opstate_nats_stream_delete(x->n, x->stream, &err) == OPSTATE_OK &&
           opstate_nats_stream_ensure(x->n, &sc, &err) == OPSTATE_OK;
}

TEST(nats, stream_recreated_reopen)
{
    nt_ctx x;
    opstate_memstore *ms = NULL;
    opstate_consumer *c = NULL;
    opstate_error err;
    opstate_kv *want = NULL;
    uint64_t epoch1;
    int i;
    REQUIRE(nt_setup(&x, nt_url(), "T_RECR", "recr", 0, 0) == 0);
    REQUIRE(opstate_memstore_create(NULL, &ms) == OPSTATE_OK);
    REQUIRE(nt_pub(&x, "s", "old1", OPSTATE_OP_PUT, "o") == 1);
    REQUIRE(nt_pub(&x, "s", "old2", OPSTATE_OP_PUT, "o") == 2);
    REQUIRE(nt_pub(&x, "s", "old3", OPSTATE_OP_PUT, "o") == 3);
    epoch1 = nt_info(&x).epoch;
    REQUIRE(nt_open(x.log, ms, false, NULL, &c, &err) == OPSTATE_OK);
    CHECK(nt_catch_up(c, &x.log, 5000, false) == OPSTATE_OK);
    CHECK_EQ_U64(opstate_consumer_position(c).epoch, epoch1);
    CHECK(opstate_consumer_close(c, &err) == OPSTATE_OK);

    /* the new incarnation holds MORE messages than the cursor: only the
       epoch can tell (a server-side resume at 4 would silently skip 1..3) */
    REQUIRE(nt_recreate(&x));
    for (i = 0; i < 6; i++) {
        char key[16];
        snprintf(key, sizeof key, "new%d", i);
        REQUIRE(nt_pub(&x, "s", key, OPSTATE_OP_PUT, "n") == (uint64_t)i + 1);
    }
    CHECK(nt_info(&x).epoch != epoch1);
    want = nt_oracle(x.n, x.stream, NULL, NULL, 0);
    REQUIRE(want != NULL);
    REQUIRE(nt_open(x.log, ms, false, NULL, &c, &err) == OPSTATE_OK);
    CHECK(opstate_consumer_get_status(c)->decision.reason == OPSTATE_REASON_STREAM_RECREATED);
    CHECK(!opstate_consumer_get_status(c)->decision.restore);
    CHECK_EQ_U64(opstate_kv_count(opstate_consumer_kv(c)), 0);
    CHECK(nt_catch_up(c, &x.log, 5000, false) == OPSTATE_OK);
    CHECK(nt_kv_equal(opstate_consumer_kv(c), want));
    CHECK(nt_has(opstate_consumer_kv(c), "s", "k", "old1", NULL) == 0);
    CHECK_EQ_U64(opstate_consumer_get_status(c)->applied, 6);
    CHECK_EQ_U64(opstate_consumer_position(c).epoch, nt_info(&x).epoch);
    CHECK(opstate_consumer_close(c, &err) == OPSTATE_OK);
    opstate_kv_destroy(want);
    opstate_memstore_destroy(ms);
    nt_teardown(&x, true);
}

TEST(nats, stream_recreated_live)
{
    nt_ctx x;
    opstate_memstore *ms = NULL;
    opstate_consumer *c = NULL;
    opstate_error err;
    opstate_kv *want = NULL;
    int i;
    REQUIRE(nt_setup(&x, nt_url(), "T_RECL", "recl", 0, 0) == 0);
    REQUIRE(opstate_memstore_create(NULL, &ms) == OPSTATE_OK);
    for (i = 0; i < 3; i++) {
        char key[16];
        snprintf(key, sizeof key, "old%d", i);
        REQUIRE(nt_pub(&x, "s", key, OPSTATE_OP_PUT, "o") != 0);
    }
    REQUIRE(nt_open(x.log, ms, false, NULL, &c, &err) == OPSTATE_OK);
    CHECK(nt_catch_up(c, &x.log, 5000, false) == OPSTATE_OK);
    CHECK_EQ_U64(opstate_consumer_position(c).seq, 3);

    REQUIRE(nt_recreate(&x));
    for (i = 0; i < 7; i++) {
        char key[16];
        snprintf(key, sizeof key, "new%d", i);
        REQUIRE(nt_pub(&x, "s", key, i == 6 ? OPSTATE_OP_DELETE : OPSTATE_OP_PUT, "n") != 0);
    }
    want = nt_oracle(x.n, x.stream, NULL, NULL, 0);
    REQUIRE(want != NULL);
    CHECK(nt_catch_up(c, &x.log, 5000, false) == OPSTATE_OK);
    CHECK_EQ_U64(opstate_consumer_get_status(c)->resets, 1);
    CHECK(nt_kv_equal(opstate_consumer_kv(c), want));
    CHECK(nt_has(opstate_consumer_kv(c), "s", "k", "old0", NULL) == 0);
    CHECK_EQ_U64(opstate_consumer_position(c).seq, 7);
    CHECK(opstate_consumer_close(c, &err) == OPSTATE_OK);

    CASE("reopen after the live reset: resume on the new incarnation");
    REQUIRE(nt_open(x.log, ms, false, NULL, &c, &err) == OPSTATE_OK);
    CHECK(opstate_consumer_get_status(c)->decision.reason == OPSTATE_REASON_RESUME);
    CHECK(nt_kv_equal(opstate_consumer_kv(c), want));
    CHECK(opstate_consumer_close(c, &err) == OPSTATE_OK);
    opstate_kv_destroy(want);
    opstate_memstore_destroy(ms);
    nt_teardown(&x, true);
}

/* A consumer attached to an EMPTY stream (nothing read yet) sees the stream
   recreated and filled: it must read the new incarnation promptly.
   KNOWN FAILURE (opstate_nats.h): after the reset the driver reads from 1,
   and the log reuses its subscription because from_seq == sub_next (1) —
   it keys reuse on (filter, next seq), not on the epoch. That ordered
   consumer died with the old stream, so nothing arrives until nats.c's
   missed-heartbeat timer re-creates it, ~10 s later (measured 9997 ms),
   and those messages carry the old sub_epoch in position.epoch. */
TEST(nats, stream_recreated_while_empty)
{
    nt_ctx x;
    opstate_memstore *ms = NULL;
    opstate_consumer *c = NULL;
    opstate_error err;
    opstate_poll_result pr;
    int64_t t0;
    REQUIRE(nt_setup(&x, nt_url(), "T_RECE", "rece", 0, 0) == 0);
    REQUIRE(opstate_memstore_create(NULL, &ms) == OPSTATE_OK);
    REQUIRE(nt_open(x.log, ms, false, NULL, &c, &err) == OPSTATE_OK);
    CHECK(opstate_consumer_poll(c, 0, 0, &pr, &err) == OPSTATE_OK);
    CHECK(pr.caught_up);
    REQUIRE(nt_recreate(&x));
    REQUIRE(nt_pub(&x, "s", "a", OPSTATE_OP_PUT, "1") == 1);
    REQUIRE(nt_pub(&x, "s", "b", OPSTATE_OP_PUT, "2") == 2);
    t0 = nt_mono_ms();
    CHECK(nt_catch_up(c, &x.log, 3000, false) == OPSTATE_OK);
    CHECK(nt_mono_ms() - t0 < 1000);
    CHECK_EQ_U64(opstate_consumer_get_status(c)->resets, 1);
    CHECK(nt_has(opstate_consumer_kv(c), "s", "k", "a", "1") == 1);
    CHECK(nt_has(opstate_consumer_kv(c), "s", "k", "b", "2") == 1);
    CHECK(opstate_consumer_close(c, &err) == OPSTATE_OK);
    opstate_memstore_destroy(ms);
    nt_teardown(&x, true);
}

/* ---- a stale cursor above the last sequence ------------------------------ */

/* Method: within one incarnation a stored position above last_seq cannot
   come from this consumer (a restored backup or a copied snapshot can
   carry one), and a delete + recreate changes the epoch (another case). So
   the stored snapshot is crafted: a fold with one key and position
   {last_seq + 10, the stream's own epoch}, committed through the
   memstore's own flush. The consumer must not resume there (the server
   would clamp the start to last_seq + 1 and silently skip 1..last_seq):
   CURSOR_AHEAD, state cleared, everything re-read. */
TEST(nats, stale_cursor_above_last)
{
    nt_ctx x;
    opstate_memstore *ms = NULL;
    opstate_consumer *c = NULL;
    opstate_store store;
    opstate_kv *crafted = NULL, *want = NULL;
    opstate_snapshot_meta meta;
    opstate_stream_info si;
    opstate_error err;
    opstate_position pos;
    uint8_t key[64];
    opstate_bytes k;
    int i;
    REQUIRE(nt_setup(&x, nt_url(), "T_AHEAD", "ahead", 0, 0) == 0);
    REQUIRE(opstate_memstore_create(NULL, &ms) == OPSTATE_OK);
    for (i = 0; i < 5; i++) {
        char kk[16];
        snprintf(kk, sizeof kk, "k%d", i);
        REQUIRE(nt_pub(&x, "s", kk, OPSTATE_OP_PUT, "v") != 0);
    }
    si = nt_info(&x);
    REQUIRE(opstate_kv_create(NULL, &crafted) == OPSTATE_OK);
    k.ptr = key;
    k.len = nt_key("s", "k", "ghost", key, sizeof key);
    memset(&pos, 0, sizeof pos);
    pos.seq = si.last_seq + 10;
    pos.epoch = si.epoch;
    REQUIRE(opstate_kv_put(crafted, k, str("boo"), pos) == OPSTATE_OK);
    memset(&meta, 0, sizeof meta);
    meta.position = pos;
    meta.position.time = si.last_time + 1000;
    store = opstate_memstore_iface(ms);
    REQUIRE(store.flush(store.user, crafted, &meta, NULL, &err) == OPSTATE_OK);
    want = nt_oracle(x.n, x.stream, NULL, NULL, 0);
    REQUIRE(want != NULL);

    REQUIRE(nt_open(x.log, ms, false, NULL, &c, &err) == OPSTATE_OK);
    CHECK(opstate_consumer_get_status(c)->decision.reason == OPSTATE_REASON_CURSOR_AHEAD);
    CHECK(!opstate_consumer_get_status(c)->decision.restore);
    CHECK_EQ_U64(opstate_kv_count(opstate_consumer_kv(c)), 0);
    CHECK(nt_catch_up(c, &x.log, 5000, false) == OPSTATE_OK);
    CHECK(nt_has(opstate_consumer_kv(c), "s", "k", "ghost", NULL) == 0);
    CHECK(nt_kv_equal(opstate_consumer_kv(c), want)); /* 1..5 applied, none skipped */
    CHECK_EQ_U64(opstate_consumer_get_status(c)->applied, 5);
    CHECK(opstate_consumer_close(c, &err) == OPSTATE_OK);
    opstate_kv_destroy(crafted);
    opstate_kv_destroy(want);
    opstate_memstore_destroy(ms);
    nt_teardown(&x, true);
}

/* ---- restart resume ------------------------------------------------------ */

TEST(nats, restart_resume_exact)
{
    nt_ctx x;
    opstate_memstore *ms = NULL;
    opstate_consumer *c = NULL;
    opstate_error err;
    opstate_kv *want = NULL;
    nt_counter cnt;
    int i;
    static const char *keys[] = {"a", "b", "c", "a", "d", "b", "e", "a", "c", "f"};
    REQUIRE(nt_setup(&x, nt_url(), "T_RESUME", "res", 0, 0) == 0);
    REQUIRE(opstate_memstore_create(NULL, &ms) == OPSTATE_OK);
    for (i = 0; i < 10; i++) {
        char v[16];
        snprintf(v, sizeof v, "v%d", i);
        REQUIRE(nt_pub(&x, "s", keys[i], i == 5 ? OPSTATE_OP_DELETE : OPSTATE_OP_PUT, v) == (uint64_t)i + 1);
    }
    memset(&cnt, 0, sizeof cnt);
    REQUIRE(nt_open(x.log, ms, false, &cnt, &c, &err) == OPSTATE_OK);
    REQUIRE(nt_poll_n(c, 4, 5000) == OPSTATE_OK);
    CHECK_EQ_U64(cnt.n, 4);
    CHECK_EQ_U64(opstate_consumer_position(c).seq, 4);
    CHECK(opstate_consumer_close(c, &err) == OPSTATE_OK);

    for (i = 0; i < 5; i++) {
        char k[16];
        snprintf(k, sizeof k, "late%d", i % 3);
        REQUIRE(nt_pub(&x, "s", k, OPSTATE_OP_PUT, "L") == (uint64_t)i + 11);
    }
    want = nt_oracle(x.n, x.stream, NULL, NULL, 0);
    REQUIRE(want != NULL);
    memset(&cnt, 0, sizeof cnt);
    REQUIRE(nt_open(x.log, ms, false, &cnt, &c, &err) == OPSTATE_OK);
    CHECK(opstate_consumer_get_status(c)->decision.reason == OPSTATE_REASON_RESUME);
    CHECK_EQ_U64(opstate_consumer_get_status(c)->resume.next_seq, 5);
    CHECK(nt_catch_up(c, &x.log, 5000, false) == OPSTATE_OK);
    CHECK_EQ_U64(cnt.n, 11); /* exactly 5..15 */
    for (i = 0; i < 11 && i < (int)cnt.n; i++) CHECK_EQ_U64(cnt.seqs[i], (uint64_t)i + 5);
    CHECK_EQ_U64(opstate_consumer_get_status(c)->skipped, 0);
    CHECK(nt_kv_equal(opstate_consumer_kv(c), want));
    CHECK_EQ_U64(opstate_consumer_position(c).seq, 15);
    CHECK(opstate_consumer_close(c, &err) == OPSTATE_OK);

    CASE("reopen when caught up: nothing applied");
    memset(&cnt, 0, sizeof cnt);
    REQUIRE(nt_open(x.log, ms, false, &cnt, &c, &err) == OPSTATE_OK);
    CHECK(opstate_consumer_get_status(c)->resume.state == OPSTATE_RESUME_CAUGHT_UP);
    CHECK(nt_catch_up(c, &x.log, 5000, false) == OPSTATE_OK);
    CHECK_EQ_U64(cnt.n, 0);
    CHECK(nt_kv_equal(opstate_consumer_kv(c), want));
    CHECK(opstate_consumer_close(c, &err) == OPSTATE_OK);
    opstate_kv_destroy(want);
    opstate_memstore_destroy(ms);
    nt_teardown(&x, true);
}

/* ---- nats-server killed and restarted mid-stream ------------------------ */

TEST(nats, server_kill_restart)
{
    nats_server srv = {0};
    nt_ctx x;
    opstate_memstore *ms = NULL;
    opstate_consumer *c = NULL;
    opstate_poll_result pr;
    opstate_error err;
    opstate_kv *want = NULL;
    nt_counter cnt;
    int i, published = 0;
    int64_t end;
    REQUIRE(nt_start(&srv) == 0);
    nt_request_timeout_ms = 500; /* polls while the server is down fail fast */
    nt_transient_wait_ms = 1000;  /* ... after riding through for a second */
    i = nt_setup(&x, srv.url, "T_KILL", "kill", 0, 0);
    nt_request_timeout_ms = 0;
    nt_transient_wait_ms = 0;
    if (i != 0 || opstate_memstore_create(NULL, &ms) != OPSTATE_OK) {
        CHECK(!"setup");
        nt_teardown(&x, false);
        nats_server_stop(&srv);
        return;
    }
    for (i = 0; i < 40; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%d", i % 13);
        if (nt_pub(&x, "s", k, i % 7 == 6 ? OPSTATE_OP_DELETE : OPSTATE_OP_PUT, "before") != 0) published++;
    }
    CHECK_EQ_U64(published, 40);
    memset(&cnt, 0, sizeof cnt);
    REQUIRE(nt_open(x.log, ms, false, &cnt, &c, &err) == OPSTATE_OK);
    CHECK(nt_poll_n(c, 15, 5000) == OPSTATE_OK);
    CHECK_EQ_U64(opstate_consumer_position(c).seq, 15);

    nats_server_kill(&srv, SIGKILL);
    for (i = 0; i < 2; i++) { /* the consumer polls on while the server is down */
        opstate_result r = opstate_consumer_poll(c, 0, 0, &pr, &err);
        CHECK(r == OPSTATE_OK || r == OPSTATE_TIMEOUT || r == OPSTATE_IO);
    }
    REQUIRE(nt_restart(&srv) == 0);
    /* publish more once the connection and JetStream are back */
    end = nt_mono_ms() + 8000;
    for (i = 0; i < 20 && nt_mono_ms() < end;) {
        char k[16];
        snprintf(k, sizeof k, "k%d", i % 5);
        if (nt_pub(&x, "s", k, OPSTATE_OP_PUT, "after") != 0) i++;
        else nats_server_sleep_ms(50);
    }
    CHECK_EQ_U64(i, 20);
    CHECK(nt_catch_up(c, &x.log, 8000, true) == OPSTATE_OK);
    CHECK_EQ_U64(opstate_consumer_position(c).seq, 60);
    CHECK_EQ_U64(cnt.n, 60); /* nothing lost, nothing twice */
    want = nt_oracle(x.n, x.stream, NULL, NULL, 0);
    CHECK(want != NULL);
    if (want) CHECK(nt_kv_equal(opstate_consumer_kv(c), want));
    CHECK(opstate_consumer_close(c, &err) == OPSTATE_OK);
    opstate_kv_destroy(want);
    opstate_memstore_destroy(ms);
    nt_teardown(&x, false);
    nats_server_stop(&srv);
}

/* ---- replay cutoffs ------------------------------------------------------ */

typedef struct nt_replay_pub {
    nt_ctx *x;
    int calls, published;
} nt_replay_pub;

/* Progress callback that publishes while the replay runs. */
static void nt_publish_during(void *user, uint64_t start, uint64_t end, uint64_t count, uint64_t current)
{
    nt_replay_pub *p = (nt_replay_pub *)user;
    (void)start;
    (void)end;
    (void)count;
    (void)current;
    if (p->calls++ == 0) {
        int i;
        for (i = 0; i < 5; i++)
            if (nt_pub(p->x, "s", "late", OPSTATE_OP_PUT, "late") != 0) p->published++;
    }
}

/* A fold of seqs [1, upto] of what was published (a, b, c, ... keys). */
static opstate_apply_outcome nt_apply_upto(void *user, opstate_kv *kv, const opstate_event *ev)
{
    uint64_t upto = *(const uint64_t *)user;
    if (ev->position.seq > upto) return OPSTATE_APPLY_DONE;
    return opstate_apply_default(NULL, kv, ev);
}

TEST(nats, replay_cutoffs)
{
    nt_ctx x, pubx;
    opstate_replay_config rc;
    opstate_replay_result rr;
    opstate_error err;
    opstate_kv *got = NULL, *want = NULL;
    opstate_log_message msgs[16];
    int64_t times[11];
    size_t n = 0, i, got_n;
    uint64_t upto;
    int64_t t0, took;
    nt_replay_pub rp;
    static const char *keys[] = {"a", "b", "c", "a", "d", "b", "e", "a", "c", "f"};
    REQUIRE(nt_setup(&x, nt_url(), "T_REPLAY", "rep", 0, 0) == 0);
    for (i = 0; i < 10; i++) {
        char v[16];
        snprintf(v, sizeof v, "v%d", (int)i);
        REQUIRE(nt_pub(&x, i < 8 ? "s" : "other", keys[i], OPSTATE_OP_PUT, v) == (uint64_t)i + 1);
        nats_server_sleep_ms(2); /* distinct publish times */
    }
    /* publish times from the log itself (a read may return fewer than
       asked: read on until all 10 came) */
    for (got_n = 0; got_n < 10;) {
        REQUIRE(x.log.read(x.log.user, str(NULL), got_n + 1, 0, msgs, 16, &n, &err) == OPSTATE_OK);
        REQUIRE(n > 0);
        for (i = 0; i < n && got_n < 10; i++) {
            CHECK_EQ_U64(msgs[i].position.seq, got_n + 1);
            times[++got_n] = msgs[i].position.time;
        }
    }
    for (i = 2; i <= 10; i++) CHECK(times[i] > times[i - 1]);

    CASE("until_seq 4");
    memset(&rc, 0, sizeof rc);
    rc.log = x.log;
    rc.until_seq = 4;
    REQUIRE(opstate_kv_create(NULL, &got) == OPSTATE_OK);
    REQUIRE(opstate_kv_create(NULL, &want) == OPSTATE_OK);
    t0 = nt_mono_ms();
    REQUIRE(opstate_replay(&rc, got, &rr, &err) == OPSTATE_OK);
    CHECK(nt_mono_ms() - t0 < 1000);
    CHECK_EQ_U64(rr.applied, 4);
    CHECK_EQ_U64(rr.end_seq, 4);
    CHECK_EQ_U64(rr.position.seq, 4);
    CHECK(nt_has(got, "s", "k", "a", "v3") == 1 && nt_has(got, "s", "k", "d", NULL) == 0);
    upto = 4;
    memset(&rc, 0, sizeof rc);
    rc.log = x.log;
    rc.apply = nt_apply_upto;
    rc.apply_user = &upto;
    REQUIRE(opstate_replay(&rc, want, &rr, &err) == OPSTATE_OK);
    CHECK(nt_kv_equal(got, want));
    opstate_kv_destroy(got);
    opstate_kv_destroy(want);

    CASE("until_time between 6 and 7");
    memset(&rc, 0, sizeof rc);
    rc.log = x.log;
    rc.has_until_time = true;
    rc.until_time = times[6] + (times[7] - times[6]) / 2;
    REQUIRE(opstate_kv_create(NULL, &got) == OPSTATE_OK);
    REQUIRE(opstate_kv_create(NULL, &want) == OPSTATE_OK);
    t0 = nt_mono_ms();
    REQUIRE(opstate_replay(&rc, got, &rr, &err) == OPSTATE_OK);
    CHECK(nt_mono_ms() - t0 < 1000);
    CHECK_EQ_U64(rr.applied, 6);
    CHECK_EQ_U64(rr.filtered, 4);
    CHECK_EQ_U64(rr.position.seq, 6);
    CHECK_EQ_U64(rr.end_seq, 10);
    upto = 6;
    memset(&rc, 0, sizeof rc);
    rc.log = x.log;
    rc.apply = nt_apply_upto;
    rc.apply_user = &upto;
    REQUIRE(opstate_replay(&rc, want, &rr, &err) == OPSTATE_OK);
    CHECK(nt_kv_equal(got, want));
    opstate_kv_destroy(got);
    opstate_kv_destroy(want);

    CASE("until_time exactly at 6 (inclusive)");
    memset(&rc, 0, sizeof rc);
    rc.log = x.log;
    rc.has_until_time = true;
    rc.until_time = times[6];
    REQUIRE(opstate_kv_create(NULL, &got) == OPSTATE_OK);
    REQUIRE(opstate_replay(&rc, got, &rr, &err) == OPSTATE_OK);
    CHECK_EQ_U64(rr.applied, 6);
    opstate_kv_destroy(got);

    CASE("max_events 3");
    memset(&rc, 0, sizeof rc);
    rc.log = x.log;
    rc.max_events = 3;
    REQUIRE(opstate_kv_create(NULL, &got) == OPSTATE_OK);
    t0 = nt_mono_ms();
    REQUIRE(opstate_replay(&rc, got, &rr, &err) == OPSTATE_OK);
    CHECK(nt_mono_ms() - t0 < 1000);
    CHECK_EQ_U64(rr.applied, 3);
    CHECK_EQ_U64(rr.position.seq, 3);
    CHECK_EQ_U64(opstate_kv_count(got), 3);
    opstate_kv_destroy(got);

    CASE("filter on one scope whose last event is not the stream's last");
    {
        char f[64];
        size_t fl = 0;
        REQUIRE(opstate_subject_filter("rep", 3, str("s"), f, sizeof f, &fl, NULL) == OPSTATE_OK);
        memset(&rc, 0, sizeof rc);
        rc.log = x.log;
        rc.filter.ptr = (const uint8_t *)f;
        rc.filter.len = fl;
        REQUIRE(opstate_kv_create(NULL, &got) == OPSTATE_OK);
        t0 = nt_mono_ms();
        REQUIRE(opstate_replay(&rc, got, &rr, &err) == OPSTATE_OK);
        took = nt_mono_ms() - t0;
        CHECK(took < 1000); /* no idle timeout at the end of the filtered range */
        CHECK_EQ_U64(rr.applied, 8);
        CHECK(nt_has(got, "other", "k", "c", NULL) == 0);
        opstate_kv_destroy(got);
    }

    CASE("deterministic end: events published during the replay are not included");
    /* a second log on its own connection publishes into the same stream */
    memset(&pubx, 0, sizeof pubx);
    pubx.stream = "T_REPLAY";
    pubx.prefix = "rep";
    REQUIRE(nt_connect(nt_url(), 0, &pubx.n) == OPSTATE_OK);
    REQUIRE(nt_log_open(pubx.n, "T_REPLAY", &pubx.lg) == OPSTATE_OK);
    pubx.log = opstate_nats_log_iface(pubx.lg);
    memset(&rp, 0, sizeof rp);
    rp.x = &pubx;
    memset(&rc, 0, sizeof rc);
    rc.log = x.log;
    rc.batch = 2;
    rc.progress = nt_publish_during;
    rc.progress_user = &rp;
    REQUIRE(opstate_kv_create(NULL, &got) == OPSTATE_OK);
    t0 = nt_mono_ms();
    REQUIRE(opstate_replay(&rc, got, &rr, &err) == OPSTATE_OK);
    took = nt_mono_ms() - t0;
    CHECK(took < 1000);
    CHECK_EQ_U64(rp.published, 5);
    CHECK_EQ_U64(nt_info(&x).last_seq, 15);
    CHECK_EQ_U64(rr.end_seq, 10);
    CHECK_EQ_U64(rr.applied, 10);
    CHECK_EQ_U64(rr.position.seq, 10);
    CHECK(nt_has(got, "s", "k", "late", NULL) == 0);
    opstate_kv_destroy(got);

    CASE("a replay of the whole stream now includes them");
    want = nt_fold(&x.log, str(NULL), &rr);
    REQUIRE(want != NULL);
    CHECK_EQ_U64(rr.applied, 15);
    CHECK(nt_has(want, "s", "k", "late", "late") == 1);
    opstate_kv_destroy(want);

    nt_teardown(&pubx, false);
    nt_teardown(&x, true);
}

/* ---- native KV bucket --------------------------------------------------- */

static opstate_result nt_kv_log_open(opstate_nats *n, const char *bucket, opstate_nats_log **out)
{
    opstate_nats_log_config lc;
    opstate_error err;
    memset(&lc, 0, sizeof lc);
    lc.kv_bucket = bucket;
    lc.first_message_wait_ms = 2000;
    return opstate_nats_log_open(n, &lc, out, &err);
}

TEST(nats, kv_bucket)
{
    opstate_nats *n = NULL;
    opstate_nats_log *lg = NULL;
    opstate_log log;
    kvStore *kv = NULL;
    kvConfig kc;
    opstate_memstore *ms = NULL, *ms_twin = NULL;
    opstate_consumer *c = NULL;
    opstate_error err;
    opstate_kv *want = NULL;
    opstate_stream_info si;
    nt_counter cnt;
    uint64_t rev = 0, cursor;
    const opstate_consumer_status *st;
    const char *url = nt_url();
    REQUIRE(url != NULL);
    REQUIRE(nt_connect(url, 0, &n) == OPSTATE_OK);
    js_DeleteKeyValue(opstate_nats_jetstream(n), "nt_bucket");
    kvConfig_Init(&kc);
    kc.Bucket = "nt_bucket";
    kc.History = 1;
    if (js_CreateKeyValue(&kv, opstate_nats_jetstream(n), &kc) != NATS_OK) {
        CHECK(!"js_CreateKeyValue");
        opstate_nats_close(n);
        return;
    }
    REQUIRE(nt_kv_log_open(n, "nt_bucket", &lg) == OPSTATE_OK);
    log = opstate_nats_log_iface(lg);
    REQUIRE(opstate_memstore_create(NULL, &ms) == OPSTATE_OK);
    REQUIRE(opstate_memstore_create(NULL, &ms_twin) == OPSTATE_OK);

    CASE("mirror puts, deletes and purges");
    CHECK(kvStore_PutString(&rev, kv, "k1", "v1") == NATS_OK);
    CHECK(kvStore_PutString(&rev, kv, "dotted.key", "v2") == NATS_OK);
    CHECK(kvStore_PutString(&rev, kv, "k3", "v3") == NATS_OK);
    CHECK(kvStore_PutString(&rev, kv, "k1", "v1b") == NATS_OK);
    CHECK(kvStore_Delete(kv, "k3") == NATS_OK);
    CHECK(kvStore_Purge(kv, "dotted.key", NULL) == NATS_OK);
    CHECK(kvStore_PutString(&rev, kv, "k4", "v4") == NATS_OK);
    CHECK(kvStore_PutString(&rev, kv, "k5", "v5") == NATS_OK);
    {
        opstate_append_result ar;
        opstate_event ev = nt_ev("s", "k", "x", OPSTATE_OP_PUT, "1");
        CHECK(opstate_publish(&log, str("p"), &ev, NULL, NULL, &ar, &err) == OPSTATE_INVALID_ARGUMENT);
    }
    REQUIRE(nt_open(log, ms, false, NULL, &c, &err) == OPSTATE_OK);
    CHECK(nt_catch_up(c, &log, 5000, false) == OPSTATE_OK);
    CHECK(nt_has(opstate_consumer_kv(c), "nt_bucket", "kv", "k1", "v1b") == 1);
    CHECK(nt_has(opstate_consumer_kv(c), "nt_bucket", "kv", "k4", "v4") == 1);
    CHECK(nt_has(opstate_consumer_kv(c), "nt_bucket", "kv", "k5", "v5") == 1);
    CHECK(nt_has(opstate_consumer_kv(c), "nt_bucket", "kv", "k3", NULL) == 0);
    CHECK(nt_has(opstate_consumer_kv(c), "nt_bucket", "kv", "dotted.key", NULL) == 0);
    CHECK_EQ_U64(opstate_kv_count(opstate_consumer_kv(c)), 3);
    CHECK_EQ_U64(opstate_consumer_position(c).seq, rev); /* revision = stream sequence */
    CHECK(opstate_consumer_close(c, &err) == OPSTATE_OK);
    REQUIRE(nt_open(log, ms_twin, true, NULL, &c, &err) == OPSTATE_OK);
    CHECK(nt_catch_up(c, &log, 5000, false) == OPSTATE_OK);
    CHECK(opstate_consumer_close(c, &err) == OPSTATE_OK);

    CASE("resume from the stored revision after a restart");
    CHECK(kvStore_PutString(&rev, kv, "k6", "v6") == NATS_OK);
    CHECK(kvStore_Delete(kv, "k1") == NATS_OK);
    CHECK(kvStore_PutString(&rev, kv, "k4", "v4b") == NATS_OK);
    memset(&cnt, 0, sizeof cnt);
    REQUIRE(nt_open(log, ms, false, &cnt, &c, &err) == OPSTATE_OK);
    CHECK(opstate_consumer_get_status(c)->decision.reason == OPSTATE_REASON_RESUME);
    CHECK(nt_catch_up(c, &log, 5000, false) == OPSTATE_OK);
    CHECK_EQ_U64(cnt.n, 3); /* only the three new revisions */
    CHECK(nt_has(opstate_consumer_kv(c), "nt_bucket", "kv", "k1", NULL) == 0);
    CHECK(nt_has(opstate_consumer_kv(c), "nt_bucket", "kv", "k4", "v4b") == 1);
    CHECK(nt_has(opstate_consumer_kv(c), "nt_bucket", "kv", "k6", "v6") == 1);
    want = nt_oracle(n, NULL, NULL, "nt_bucket", 0);
    CHECK(want != NULL);
    if (want) CHECK(nt_kv_equal(opstate_consumer_kv(c), want));
    opstate_kv_destroy(want);
    want = NULL;
    cursor = opstate_consumer_position(c).seq;
    CHECK_EQ_U64(cursor, rev);
    CHECK(opstate_consumer_close(c, &err) == OPSTATE_OK);

    CASE("expired cursor: resync removes a key whose delete marker was purged");
    /* state now: k4=v4b k5=v5 k6=v6. During the gap: delete k4, rewrite
       k5 and k6 (history 1 evicts their old revisions), add k7, then purge
       every delete marker: nothing at or below the cursor is left. */
    CHECK(kvStore_Delete(kv, "k4") == NATS_OK);
    CHECK(kvStore_PutString(&rev, kv, "k5", "v5b") == NATS_OK);
    CHECK(kvStore_PutString(&rev, kv, "k6", "v6b") == NATS_OK);
    CHECK(kvStore_PutString(&rev, kv, "k7", "v7") == NATS_OK);
    { /* every delete marker, purged subject by subject (nats.c 3.4.1's
         kvStore_PurgeDeletes leaks the put entries it reads past) */
        static const char *const marked[] = {"k1", "k3", "k4", "dotted.key"};
        size_t i;
        for (i = 0; i < COUNT_OF(marked); i++) {
            jsOptions o;
            char subject[64];
            snprintf(subject, sizeof subject, "$KV.nt_bucket.%s", marked[i]);
            jsOptions_Init(&o);
            o.Stream.Purge.Subject = subject;
            CHECK(js_PurgeStream(opstate_nats_jetstream(n), "KV_nt_bucket", &o, NULL) == NATS_OK);
        }
    }
    CHECK(log.info(log.user, &si, &err) == OPSTATE_OK);
    CHECK(si.first_seq > cursor + 1);
    want = nt_oracle(n, NULL, NULL, "nt_bucket", 0);
    REQUIRE(want != NULL);
    CHECK(nt_has(want, "nt_bucket", "kv", "k4", NULL) == 0);
    REQUIRE(nt_open(log, ms, false, NULL, &c, &err) == OPSTATE_OK);
    st = opstate_consumer_get_status(c);
    CHECK(st->decision.reason == OPSTATE_REASON_CURSOR_EXPIRED);
    CHECK(st->resynced);
    CHECK_EQ_U64(st->resync_removed, 1); /* k4 only: k5 and k6 still have revisions */
    CHECK(nt_has(opstate_consumer_kv(c), "nt_bucket", "kv", "k4", NULL) == 0);
    CHECK(nt_has(opstate_consumer_kv(c), "nt_bucket", "kv", "k5", "v5") == 1);
    CHECK(nt_catch_up(c, &log, 5000, false) == OPSTATE_OK);
    CHECK(nt_has(opstate_consumer_kv(c), "nt_bucket", "kv", "k4", NULL) == 0);
    CHECK(nt_has(opstate_consumer_kv(c), "nt_bucket", "kv", "k5", "v5b") == 1);
    CHECK(nt_has(opstate_consumer_kv(c), "nt_bucket", "kv", "k7", "v7") == 1);
    CHECK(nt_kv_equal(opstate_consumer_kv(c), want));
    CHECK(opstate_consumer_close(c, &err) == OPSTATE_OK);

    CASE("twin without resync keeps deleted keys");
    REQUIRE(nt_open(log, ms_twin, true, NULL, &c, &err) == OPSTATE_OK);
    CHECK(opstate_consumer_get_status(c)->decision.reason == OPSTATE_REASON_CURSOR_EXPIRED);
    CHECK(nt_catch_up(c, &log, 5000, false) == OPSTATE_OK);
    /* its cursor predates k6 and the delete of k1, all evicted: k1 and k4 survive */
    CHECK(nt_has(opstate_consumer_kv(c), "nt_bucket", "kv", "k4", "v4") == 1);
    CHECK(nt_has(opstate_consumer_kv(c), "nt_bucket", "kv", "k1", "v1b") == 1);
    CHECK(nt_has(opstate_consumer_kv(c), "nt_bucket", "kv", "k7", "v7") == 1);
    CHECK(opstate_consumer_close(c, &err) == OPSTATE_OK);

    opstate_kv_destroy(want);
    opstate_memstore_destroy(ms);
    opstate_memstore_destroy(ms_twin);
    opstate_nats_log_close(lg);
    kvStore_Destroy(kv);
    js_DeleteKeyValue(opstate_nats_jetstream(n), "nt_bucket");
    opstate_nats_close(n);
}

/* ---- log read semantics ------------------------------------------------- */

/* The read of the log interface: from a sequence, a filter, nothing
   invented, and an empty read returns at once when nothing is pending. */
TEST(nats, log_read)
{
    nt_ctx x;
    opstate_log_message msgs[8];
    opstate_error err;
    size_t n = 0;
    int64_t t0;
    opstate_event dec;
    char f[64];
    size_t fl = 0;
    REQUIRE(nt_setup(&x, nt_url(), "T_READ", "rd", 0, 0) == 0);
    CASE("empty stream");
    t0 = nt_mono_ms();
    CHECK(x.log.read(x.log.user, str(NULL), 1, 0, msgs, 8, &n, &err) == OPSTATE_OK);
    CHECK_EQ_U64(n, 0);
    CHECK(nt_mono_ms() - t0 < 1000);
    REQUIRE(nt_pub(&x, "s1", "a", OPSTATE_OP_PUT, "1") == 1);
    REQUIRE(nt_pub(&x, "s2", "a", OPSTATE_OP_PUT, "2") == 2);
    REQUIRE(nt_pub(&x, "s1", "b", OPSTATE_OP_PUT, "3") == 3);

    CASE("from 2");
    CHECK(x.log.read(x.log.user, str(NULL), 2, 0, msgs, 8, &n, &err) == OPSTATE_OK);
    REQUIRE(n == 2);
    CHECK_EQ_U64(msgs[0].position.seq, 2);
    CHECK_EQ_U64(msgs[1].position.seq, 3);
    CHECK_EQ_U64(msgs[0].position.epoch, nt_info(&x).epoch);
    CHECK(opstate_event_decode(msgs[0].data.ptr, msgs[0].data.len, &dec, &err) == OPSTATE_OK);
    CHECK(dec.data.len == 1 && dec.data.ptr[0] == '2');

    CASE("filtered");
    REQUIRE(opstate_subject_filter("rd", 2, str("s1"), f, sizeof f, &fl, NULL) == OPSTATE_OK);
    {
        opstate_bytes fb;
        fb.ptr = (const uint8_t *)f;
        fb.len = fl;
        CHECK(x.log.read(x.log.user, fb, 1, 0, msgs, 8, &n, &err) == OPSTATE_OK);
        REQUIRE(n == 2);
        CHECK_EQ_U64(msgs[0].position.seq, 1);
        CHECK_EQ_U64(msgs[1].position.seq, 3);
        t0 = nt_mono_ms();
        CHECK(x.log.read(x.log.user, fb, 4, 0, msgs, 8, &n, &err) == OPSTATE_OK);
        CHECK_EQ_U64(n, 0);
        CHECK(nt_mono_ms() - t0 < 1000);
    }

    CASE("caught up read returns at once");
    t0 = nt_mono_ms();
    CHECK(x.log.read(x.log.user, str(NULL), 4, 0, msgs, 8, &n, &err) == OPSTATE_OK);
    CHECK_EQ_U64(n, 0);
    CHECK(nt_mono_ms() - t0 < 1000);

    CASE("a wait sees a message published meanwhile");
    REQUIRE(nt_pub(&x, "s1", "c", OPSTATE_OP_PUT, "4") == 4);
    CHECK(x.log.read(x.log.user, str(NULL), 4, 500000000, msgs, 8, &n, &err) == OPSTATE_OK);
    CHECK_EQ_U64(n, 1);
    if (n == 1) CHECK_EQ_U64(msgs[0].position.seq, 4);
    nt_teardown(&x, true);
}

/* Last value per subject: every subject once, its newest message. */
typedef struct nt_lps {
    uint64_t seqs[32];
    size_t n;
} nt_lps;

static void nt_lps_visit(void *user, const opstate_log_message *m)
{
    nt_lps *l = (nt_lps *)user;
    if (l->n < 32) l->seqs[l->n] = m->position.seq;
    l->n++;
}

TEST(nats, last_per_subject)
{
    nt_ctx x;
    nt_lps l;
    opstate_error err;
    int64_t t0;
    size_t i;
    bool seen5 = false, seen6 = false, seen4 = false;
    REQUIRE(nt_setup(&x, nt_url(), "T_LPS", "lps", 0, 0) == 0);
    CASE("empty stream");
    memset(&l, 0, sizeof l);
    t0 = nt_mono_ms();
    CHECK(x.log.last_per_subject(x.log.user, str(NULL), nt_lps_visit, &l, &err) == OPSTATE_OK);
    CHECK_EQ_U64(l.n, 0);
    CHECK(nt_mono_ms() - t0 < 1000);
    REQUIRE(nt_pub(&x, "s", "a", OPSTATE_OP_PUT, "1") == 1);
    REQUIRE(nt_pub(&x, "s", "b", OPSTATE_OP_PUT, "1") == 2);
    REQUIRE(nt_pub(&x, "s", "a", OPSTATE_OP_PUT, "2") == 3);
    REQUIRE(nt_pub(&x, "s", "c", OPSTATE_OP_PUT, "1") == 4);
    REQUIRE(nt_pub(&x, "s", "b", OPSTATE_OP_DELETE, "") == 5);
    REQUIRE(nt_pub(&x, "s", "a", OPSTATE_OP_PUT, "3") == 6);
    CASE("three subjects");
    memset(&l, 0, sizeof l);
    t0 = nt_mono_ms();
    CHECK(x.log.last_per_subject(x.log.user, str(NULL), nt_lps_visit, &l, &err) == OPSTATE_OK);
    CHECK(nt_mono_ms() - t0 < 1000);
    CHECK_EQ_U64(l.n, 3);
    for (i = 0; i < l.n && i < 32; i++) {
        if (l.seqs[i] == 4) seen4 = true;
        if (l.seqs[i] == 5) seen5 = true;
        if (l.seqs[i] == 6) seen6 = true;
    }
    CHECK(seen4 && seen5 && seen6);
    nt_teardown(&x, true);
}

/* ---- consumer info unavailable -------------------------------------------- */

/* A server with two users in one JetStream account: "admin" may do
   everything, "noinfo" may not ask for consumer info (the request is
   denied, so it times out). Started from a config file, by PID, like
   nats_server.h does. */
static int nt_start_with_users(nats_server *srv)
{
    char conf[128], port[16];
    FILE *f;
    int i;
    memset(srv, 0, sizeof *srv);
    snprintf(srv->dir, sizeof srv->dir, "/tmp/opstate-nats-XXXXXX");
    if (!mkdtemp(srv->dir) || (srv->port = nats_server_free_port()) < 0) return -1;
    snprintf(srv->url, sizeof srv->url, "nats://127.0.0.1:%d", srv->port);
    snprintf(conf, sizeof conf, "%s/server.conf", srv->dir);
    snprintf(port, sizeof port, "%d", srv->port);
    if (!(f = fopen(conf, "w"))) return -1;
    fprintf(f,
            "listen: \"127.0.0.1:%d\"\n"
            "jetstream { store_dir: \"%s/js\" }\n"
            "accounts {\n"
            "  APP {\n"
            "    jetstream: enabled\n"
            "    users = [\n"
            "      { user: \"admin\", password: \"pw-admin-7731\" }\n"
            "      { user: \"noinfo\", password: \"pw-noinfo-7731\",\n"
            "        permissions: { publish: { deny: [\"$JS.API.CONSUMER.INFO.>\"] } } }\n"
            "    ]\n"
            "  }\n"
            "}\n",
            srv->port, srv->dir);
    fclose(f);
    fflush(stdout);
    fflush(stderr);
    srv->pid = fork();
    if (srv->pid < 0) return -1;
    if (srv->pid == 0) {
        if (!freopen("/dev/null", "w", stdout) || !freopen("/dev/null", "w", stderr)) _exit(126);
        execlp("nats-server", "nats-server", "-c", conf, (char *)NULL);
        _exit(127);
    }
    for (i = 0; i < 500; i++) {
        if (nats_server_accepts(srv->port)) return 0;
        nats_server_sleep_ms(10);
    }
    return -1;
}

typedef struct nt_logcap {
    char text[4096];
    size_t len;
} nt_logcap;

static void nt_logger(void *user, opstate_diag_level level, const char *message)
{
    nt_logcap *l = (nt_logcap *)user;
    size_t n = strlen(message);
    (void)level;
    if (l->len + n + 1 < sizeof l->text) {
        memcpy(l->text + l->len, message, n);
        l->len += n;
        l->text[l->len++] = '\n';
        l->text[l->len] = '\0';
    }
}

static opstate_result nt_connect_user(const char *url, const char *user, const char *pw, nt_logcap *cap,
                                      opstate_nats **out)
{
    opstate_nats_config cfg;
    opstate_error err;
    memset(&cfg, 0, sizeof cfg);
    cfg.urls = url;
    cfg.user = user;
    cfg.password = pw;
    cfg.request_timeout_ms = 300;
    cfg.diag.fn = nt_logger;
    cfg.diag.user = cap;
    return opstate_nats_connect(&cfg, out, &err);
}

/* Without consumer info the log cannot know whether the last-value view is
   complete: it must fail, never report an empty (or partial) view, which
   would make a resync remove every key. */
TEST(nats, last_per_subject_without_consumer_info)
{
    nats_server srv = {0};
    opstate_nats *admin = NULL, *noinfo = NULL;
    opstate_nats_log *lg_admin = NULL, *lg = NULL;
    opstate_nats_stream_config sc;
    opstate_log log_admin, log;
    opstate_event ev;
    opstate_append_result ar;
    opstate_error err;
    nt_logcap cap;
    nt_lps l;
    opstate_result r;
    int i;
    memset(&cap, 0, sizeof cap);
    REQUIRE(nt_start_with_users(&srv) == 0);
    if (nt_connect_user(srv.url, "admin", "pw-admin-7731", &cap, &admin) != OPSTATE_OK ||
        nt_connect_user(srv.url, "noinfo", "pw-noinfo-7731", &cap, &noinfo) != OPSTATE_OK) {
        CHECK(!"connect with user and password");
        opstate_nats_close(admin);
        nats_server_stop(&srv);
        return;
    }
    CASE("a wrong password is refused");
    {
        opstate_nats *bad = NULL;
        CHECK(nt_connect_user(srv.url, "admin", "wrong-pw-7731", &cap, &bad) != OPSTATE_OK);
    }
    memset(&sc, 0, sizeof sc);
    sc.stream = "T_NOINFO";
    sc.prefix = "ni";
    CHECK(opstate_nats_stream_ensure(admin, &sc, &err) == OPSTATE_OK);
    CHECK(nt_log_open(admin, "T_NOINFO", &lg_admin) == OPSTATE_OK);
    nt_transient_wait_ms = 1000; /* a denial looks like a transient: ridden through for a second only */
    CHECK(nt_log_open(noinfo, "T_NOINFO", &lg) == OPSTATE_OK);
    nt_transient_wait_ms = 0;
    if (lg_admin && lg) {
        log_admin = opstate_nats_log_iface(lg_admin);
        log = opstate_nats_log_iface(lg);
        for (i = 0; i < 6; i++) {
            static const char *keys[] = {"a", "b", "a", "c", "b", "a"};
            ev = nt_ev("s", "k", keys[i], OPSTATE_OP_PUT, "v");
            CHECK(opstate_publish(&log_admin, str("ni"), &ev, NULL, NULL, &ar, &err) == OPSTATE_OK);
        }
        CASE("admin sees three subjects");
        memset(&l, 0, sizeof l);
        CHECK(log_admin.last_per_subject(log_admin.user, str(NULL), nt_lps_visit, &l, &err) == OPSTATE_OK);
        CHECK_EQ_U64(l.n, 3);
        CASE("noinfo: an error, not an empty view");
        memset(&l, 0, sizeof l);
        r = log.last_per_subject(log.user, str(NULL), nt_lps_visit, &l, &err);
        CHECK(r != OPSTATE_OK || l.n == 3);
        CASE("noinfo can still read");
        {
            opstate_kv *kv = nt_fold(&log, str(NULL), NULL);
            CHECK(kv != NULL);
            if (kv) CHECK_EQ_U64(opstate_kv_count(kv), 3);
            opstate_kv_destroy(kv);
        }
    }
    CASE("no credentials in the log lines");
    CHECK(strstr(cap.text, "pw-admin-7731") == NULL);
    CHECK(strstr(cap.text, "pw-noinfo-7731") == NULL);
    opstate_nats_log_close(lg);
    opstate_nats_log_close(lg_admin);
    opstate_nats_close(noinfo);
    opstate_nats_close(admin);
    nats_server_stop(&srv);
}

TEST(nats, connect_failure)
{
    opstate_nats *n = NULL;
    opstate_nats_config cfg;
    opstate_error err;
    char url[64];
    int64_t t0 = nt_mono_ms();
    int port = nats_server_free_port();
    snprintf(url, sizeof url, "nats://127.0.0.1:%d", port);
    memset(&cfg, 0, sizeof cfg);
    cfg.urls = url;
    memset(&err, 0, sizeof err);
    CHECK(opstate_nats_connect(&cfg, &n, &err) == OPSTATE_IO);
    CHECK(err.dep_status != 0);
    CHECK(nt_mono_ms() - t0 < 3000);
    CASE("a list with one good server");
    if (nt_url()) {
        char list[160];
        snprintf(list, sizeof list, "%s,%s", url, nt_url());
        cfg.urls = list;
        CHECK(opstate_nats_connect(&cfg, &n, &err) == OPSTATE_OK);
        if (n) {
            CHECK(natsConnection_Status(opstate_nats_connection(n)) == NATS_CONN_STATUS_CONNECTED);
            opstate_nats_close(n);
        }
    }
    CASE("empty items in the list are skipped");
    if (nt_url()) {
        char list[160];
        snprintf(list, sizeof list, ",,%s,,", nt_url());
        cfg.urls = list;
        n = NULL;
        CHECK(opstate_nats_connect(&cfg, &n, &err) == OPSTATE_OK);
        if (n) {
            CHECK(natsConnection_Status(opstate_nats_connection(n)) == NATS_CONN_STATUS_CONNECTED);
            opstate_nats_close(n);
        }
    }
}

/* ---- a filtered consumer, and a larger stream ----------------------------- */

TEST(nats, filtered_consumer)
{
    nt_ctx x;
    opstate_memstore *ms = NULL;
    opstate_consumer *c = NULL;
    opstate_consumer_config cc;
    opstate_error err;
    opstate_kv *want = NULL;
    nt_counter cnt;
    char f[64];
    size_t fl = 0;
    opstate_bytes filter;
    int i;
    REQUIRE(nt_setup(&x, nt_url(), "T_FILT", "filt", 0, 0) == 0);
    REQUIRE(opstate_memstore_create(NULL, &ms) == OPSTATE_OK);
    REQUIRE(opstate_subject_filter("filt", 4, str("mine"), f, sizeof f, &fl, NULL) == OPSTATE_OK);
    f[fl] = '\0';
    filter.ptr = (const uint8_t *)f;
    filter.len = fl;
    for (i = 0; i < 12; i++) {
        char k[8];
        snprintf(k, sizeof k, "k%d", i % 4);
        REQUIRE(nt_pub(&x, i % 3 == 0 ? "mine" : "other", k, OPSTATE_OP_PUT, "v") != 0);
    }
    memset(&cc, 0, sizeof cc);
    memset(&cnt, 0, sizeof cnt);
    cc.log = x.log;
    cc.store = opstate_memstore_iface(ms);
    cc.filter = filter;
    cc.apply = nt_count_apply;
    cc.apply_user = &cnt;
    REQUIRE(opstate_consumer_open(&cc, &c, &err) == OPSTATE_OK);
    REQUIRE(nt_poll_n(c, 2, 5000) == OPSTATE_OK);
    CHECK_EQ_U64(cnt.n, 2);
    CHECK_EQ_U64(opstate_consumer_position(c).seq, 4); /* seqs 1 and 4 are "mine" */
    CHECK(opstate_consumer_close(c, &err) == OPSTATE_OK);
    for (i = 0; i < 6; i++) REQUIRE(nt_pub(&x, i % 2 ? "mine" : "other", "late", OPSTATE_OP_PUT, "L") != 0);
    want = nt_oracle(x.n, x.stream, f, NULL, 0);
    REQUIRE(want != NULL);
    memset(&cnt, 0, sizeof cnt);
    REQUIRE(opstate_consumer_open(&cc, &c, &err) == OPSTATE_OK);
    CHECK(nt_catch_up(c, &x.log, 5000, false) == OPSTATE_OK);
    CHECK_EQ_U64(cnt.n, 5); /* 7, 10 and the three late ones of "mine" */
    CHECK(nt_kv_equal(opstate_consumer_kv(c), want));
    CHECK(nt_has(opstate_consumer_kv(c), "other", "k", "k1", NULL) == 0);
    CHECK(opstate_consumer_close(c, &err) == OPSTATE_OK);
    opstate_kv_destroy(want);
    opstate_memstore_destroy(ms);
    nt_teardown(&x, true);
}

TEST(nats, many_events)
{
    nt_ctx x;
    opstate_memstore *ms = NULL;
    opstate_consumer *c = NULL;
    opstate_error err;
    opstate_kv *want = NULL;
    nt_outcomes outs;
    nt_counter cnt;
    int i, failed = 0;
    const int N = 3000;
    REQUIRE(nt_setup(&x, nt_url(), "T_MANY", "many", 0, 0) == 0);
    REQUIRE(opstate_memstore_create(NULL, &ms) == OPSTATE_OK);
    for (i = 0; i < N; i++) {
        char k[16], v[16];
        opstate_event ev;
        snprintf(k, sizeof k, "k%d", i % 257);
        snprintf(v, sizeof v, "v%d", i);
        ev = nt_ev("s", "k", k, i % 11 == 10 ? OPSTATE_OP_DELETE : OPSTATE_OP_PUT, v);
        if (opstate_nats_publish_async(x.lg, str("many"), &ev, NULL, &err) != OPSTATE_OK) failed++;
    }
    CHECK_EQ_U64(failed, 0);
    memset(&outs, 0, sizeof outs);
    CHECK(opstate_nats_publish_wait(x.lg, 10000, nt_collect, &outs, &err) == OPSTATE_OK);
    CHECK_EQ_U64(outs.n, (uint64_t)N);
    CHECK_EQ_U64(nt_info(&x).last_seq, (uint64_t)N);
    want = nt_oracle(x.n, x.stream, NULL, NULL, 0);
    REQUIRE(want != NULL);
    memset(&cnt, 0, sizeof cnt);
    REQUIRE(nt_open(x.log, ms, false, &cnt, &c, &err) == OPSTATE_OK);
    CHECK(nt_catch_up(c, &x.log, 10000, false) == OPSTATE_OK);
    CHECK_EQ_U64(cnt.n, (uint64_t)N);
    CHECK(nt_kv_equal(opstate_consumer_kv(c), want));
    CHECK(opstate_consumer_close(c, &err) == OPSTATE_OK);
    opstate_kv_destroy(want);
    opstate_memstore_destroy(ms);
    nt_teardown(&x, true);
}

/* The read contract ("a read with wait_ns 0 returns 0 messages only when
   the server has nothing pending") and a replay's completeness, right
   after a burst of publishes, when the server is still pushing the first
   messages of a new subscription as it answers its consumer-info request.
   Repeated: the race is timing dependent (against 7c11d2d/e7a3894, whose
   log took ConsumerInfo.NumPending == 0 for "nothing to come", some rounds
   read nothing and replay returned OK with 0 of N applied). */
TEST(nats, first_read_and_replay_complete)
{
    nt_ctx x;
    opstate_error err;
    nt_outcomes outs;
    opstate_kv *want = NULL;
    int i, round, empty_reads = 0, short_replays = 0, wrong_folds = 0, total = 0;
    const int PER_ROUND = 400, ROUNDS = 12;
    REQUIRE(nt_setup(&x, nt_url(), "T_COMPLETE", "cpl", 0, 0) == 0);
    for (round = 0; round < ROUNDS; round++) {
        opstate_nats_log *lg = NULL;
        opstate_log log;
        opstate_log_message msgs[64];
        opstate_replay_result rr;
        opstate_replay_config rc;
        opstate_kv *got = NULL;
        size_t n = 0;
        for (i = 0; i < PER_ROUND; i++) {
            char k[16];
            opstate_event ev;
            snprintf(k, sizeof k, "k%d", (total + i) % 101);
            ev = nt_ev("s", "k", k, OPSTATE_OP_PUT, k);
            REQUIRE(opstate_nats_publish_async(x.lg, str("cpl"), &ev, NULL, &err) == OPSTATE_OK);
        }
        memset(&outs, 0, sizeof outs);
        REQUIRE(opstate_nats_publish_wait(x.lg, 10000, nt_collect, &outs, &err) == OPSTATE_OK);
        total += PER_ROUND;
        /* a fresh log: its first read subscribes */
        REQUIRE(nt_log_open(x.n, x.stream, &lg) == OPSTATE_OK);
        log = opstate_nats_log_iface(lg);
        CHECK(log.read(log.user, str(NULL), 1, 0, msgs, 64, &n, &err) == OPSTATE_OK);
        if (n == 0) empty_reads++;
        opstate_nats_log_close(lg);
        REQUIRE(nt_log_open(x.n, x.stream, &lg) == OPSTATE_OK);
        memset(&rc, 0, sizeof rc);
        rc.log = opstate_nats_log_iface(lg);
        REQUIRE(opstate_kv_create(NULL, &got) == OPSTATE_OK);
        memset(&rr, 0, sizeof rr);
        CHECK(opstate_replay(&rc, got, &rr, &err) == OPSTATE_OK);
        if (rr.applied != (uint64_t)total) short_replays++;
        if (round == ROUNDS - 1) {
            want = nt_oracle(x.n, x.stream, NULL, NULL, 0);
            CHECK(want != NULL);
            if (want && !nt_kv_equal(got, want)) wrong_folds++;
        }
        opstate_kv_destroy(got);
        opstate_nats_log_close(lg);
    }
    CHECK_EQ_U64(empty_reads, 0);
    CHECK_EQ_U64(short_replays, 0); /* replay returned OK having applied fewer than last_seq events */
    CHECK_EQ_U64(wrong_folds, 0);
    opstate_kv_destroy(want);
    nt_teardown(&x, true);
}

/* ---- durable mode (projectors) -------------------------------------------- */

static opstate_result nt_durable_log_open(opstate_nats *n, const char *stream, const char *durable,
                                          opstate_nats_log **out)
{
    opstate_nats_log_config lc;
    opstate_error err;
    memset(&lc, 0, sizeof lc);
    lc.stream = stream;
    lc.durable = durable;
    lc.first_message_wait_ms = 2000;
    return opstate_nats_log_open(n, &lc, out, &err);
}

/* The server's ack floor of a durable consumer, waiting up to 2 s for it to
   reach `want` (acks are asynchronous). */
static uint64_t nt_ack_floor(opstate_nats *n, const char *stream, const char *durable, uint64_t want)
{
    int64_t end = nt_mono_ms() + 2000;
    uint64_t floor = 0;
    do {
        jsConsumerInfo *ci = NULL;
        jsErrCode jerr = (jsErrCode)0;
        if (js_GetConsumerInfo(&ci, opstate_nats_jetstream(n), stream, durable, NULL, &jerr) == NATS_OK) {
            floor = ci->AckFloor.Stream;
            jsConsumerInfo_Destroy(ci);
        }
        if (floor >= want) break;
        nats_server_sleep_ms(20);
    } while (nt_mono_ms() < end);
    return floor;
}

static int64_t nt_stream_consumers(opstate_nats *n, const char *stream)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = (jsErrCode)0;
    int64_t count = -1;
    if (js_GetStreamInfo(&si, opstate_nats_jetstream(n), stream, NULL, &jerr) == NATS_OK) {
        count = si->State.Consumers;
        jsStreamInfo_Destroy(si);
    }
    return count;
}

TEST(nats, durable_projector)
{
    nt_ctx x;
    opstate_nats_log *lg = NULL;
    opstate_memstore *ms = NULL;
    opstate_consumer *c = NULL;
    opstate_error err;
    opstate_kv *want = NULL;
    nt_counter cnt;
    int i;
    static const char *keys[] = {"a", "b", "c", "a", "d", "b", "e", "a", "c", "f"};
    REQUIRE(nt_setup(&x, nt_url(), "T_DUR", "dur", 0, 0) == 0);
    REQUIRE(opstate_memstore_create(NULL, &ms) == OPSTATE_OK);
    for (i = 0; i < 10; i++) REQUIRE(nt_pub(&x, "s", keys[i], i == 5 ? OPSTATE_OP_DELETE : OPSTATE_OP_PUT, "v") != 0);

    CASE("consume 4, acked on the server");
    REQUIRE(nt_durable_log_open(x.n, "T_DUR", "proj", &lg) == OPSTATE_OK);
    memset(&cnt, 0, sizeof cnt);
    REQUIRE(nt_open(opstate_nats_log_iface(lg), ms, false, &cnt, &c, &err) == OPSTATE_OK);
    CHECK(nt_poll_n(c, 4, 5000) == OPSTATE_OK);
    CHECK_EQ_U64(opstate_consumer_position(c).seq, 4);
    CHECK_EQ_U64(nt_ack_floor(x.n, "T_DUR", "proj", 4), 4);
    CHECK(opstate_consumer_close(c, &err) == OPSTATE_OK);
    opstate_nats_log_close(lg);
    lg = NULL;

    CASE("restart: exactly the remaining events");
    for (i = 0; i < 5; i++) REQUIRE(nt_pub(&x, "s", "late", OPSTATE_OP_PUT, i == 4 ? "last" : "L") != 0);
    want = nt_oracle(x.n, x.stream, NULL, NULL, 0);
    REQUIRE(want != NULL);
    REQUIRE(nt_durable_log_open(x.n, "T_DUR", "proj", &lg) == OPSTATE_OK);
    memset(&cnt, 0, sizeof cnt);
    REQUIRE(nt_open(opstate_nats_log_iface(lg), ms, false, &cnt, &c, &err) == OPSTATE_OK);
    CHECK(opstate_consumer_get_status(c)->decision.reason == OPSTATE_REASON_RESUME);
    CHECK(nt_catch_up(c, &x.log, 5000, false) == OPSTATE_OK);
    CHECK_EQ_U64(cnt.n, 11);
    for (i = 0; i < 11 && i < (int)cnt.n; i++) CHECK_EQ_U64(cnt.seqs[i], (uint64_t)i + 5);
    CHECK(nt_kv_equal(opstate_consumer_kv(c), want));
    CHECK_EQ_U64(nt_ack_floor(x.n, "T_DUR", "proj", 15), 15);
    CHECK(opstate_consumer_close(c, &err) == OPSTATE_OK);
    opstate_nats_log_close(lg);
    lg = NULL;
    opstate_kv_destroy(want);
    want = NULL;

    CASE("expired cursor in durable mode: resync, and no consumer left behind");
    REQUIRE(nt_pub(&x, "s", "a", OPSTATE_OP_DELETE, "") == 16);
    REQUIRE(nt_pub(&x, "s", "x", OPSTATE_OP_PUT, "x") == 17);
    REQUIRE(nt_pub(&x, "s", "late", OPSTATE_OP_PUT, "y") == 18);
    CHECK(opstate_nats_stream_purge(x.n, "T_DUR", 17, &err) == OPSTATE_OK);
    want = nt_oracle(x.n, x.stream, NULL, NULL, 0);
    REQUIRE(want != NULL);
    REQUIRE(nt_durable_log_open(x.n, "T_DUR", "proj", &lg) == OPSTATE_OK);
    REQUIRE(nt_open(opstate_nats_log_iface(lg), ms, false, NULL, &c, &err) == OPSTATE_OK);
    CHECK(opstate_consumer_get_status(c)->decision.reason == OPSTATE_REASON_CURSOR_EXPIRED);
    CHECK(opstate_consumer_get_status(c)->resynced);
    CHECK(nt_has(opstate_consumer_kv(c), "s", "k", "a", NULL) == 0);
    CHECK(nt_has(opstate_consumer_kv(c), "s", "k", "late", "last") == 1); /* still has a message (18) */
    /* the resync's last-value reader is an ephemeral consumer: it must be
       gone, only the durable "proj" stays. KNOWN FAILURE (opstate_nats.h):
       opstate_nats__unsubscribe skips natsSubscription_Unsubscribe whenever
       the log is durable, so last_per_subject's ordered consumer is left on
       the server (until its 5 s inactivity threshold). */
    CHECK_EQ_U64(nt_stream_consumers(x.n, "T_DUR"), 1);
    CHECK(nt_catch_up(c, &x.log, 5000, false) == OPSTATE_OK);
    CHECK(nt_kv_equal(opstate_consumer_kv(c), want));
    CHECK(opstate_consumer_close(c, &err) == OPSTATE_OK);
    opstate_nats_log_close(lg);
    opstate_kv_destroy(want);
    opstate_memstore_destroy(ms);
    nt_teardown(&x, true);
}

/* Publishes `count` puts on keys "f0".."f49" of scope "s" without waiting
   for each acknowledgment; 0 when every one was stored. */
static int nt_pub_fill(nt_ctx *x, int count)
{
    nt_outcomes outs;
    opstate_error err;
    char key[16];
    int i;
    for (i = 0; i < count; i++) {
        opstate_event ev;
        snprintf(key, sizeof key, "f%d", i % 50);
        ev = nt_ev("s", "k", key, OPSTATE_OP_PUT, "filler");
        if (opstate_nats_publish_async(x->lg, str(x->prefix), &ev, NULL, &err) != OPSTATE_OK) return -1;
    }
    memset(&outs, 0, sizeof outs);
    return opstate_nats_publish_wait(x->lg, 10000, nt_collect, &outs, &err) == OPSTATE_OK ? 0 : -1;
}

/* Durable mode pulls ahead of the batches (up to a window of 1024
   messages): an eviction between two pulls of one poll (here: a purge
   from the progress callback after the first batch, of messages beyond
   what the first pull asked for) makes the server skip to the first
   retained message. Only the check of the first delivered sequence
   against the expected one can see it (the check at the start of the poll
   has already passed). */
typedef struct nt_evict {
    opstate_nats *n;
    const char *stream;
    uint64_t below;
    int calls;
} nt_evict;

static void nt_evict_after_first_batch(void *user, uint64_t start, uint64_t end, uint64_t count, uint64_t current)
{
    nt_evict *e = (nt_evict *)user;
    (void)start;
    (void)end;
    (void)count;
    (void)current;
    if (e->calls++ == 0) {
        opstate_nats_stream_purge(e->n, e->stream, e->below, NULL);
        nats_server_sleep_ms(50); /* let the server move the consumer past the purge */
    }
}

TEST(nats, durable_eviction_between_batches)
{
    nt_ctx x;
    opstate_nats_log *lg = NULL;
    opstate_memstore *ms = NULL;
    opstate_consumer *c = NULL;
    opstate_consumer_config cc;
    opstate_poll_result pr;
    opstate_error err;
    opstate_kv *want = NULL;
    nt_evict ev;
    int64_t end;
    REQUIRE(nt_setup(&x, nt_url(), "T_DURGAP", "durgap", 0, 0) == 0);
    REQUIRE(opstate_memstore_create(NULL, &ms) == OPSTATE_OK);
    REQUIRE(nt_pub(&x, "s", "a", OPSTATE_OP_PUT, "a1") == 1);
    REQUIRE(nt_pub(&x, "s", "b", OPSTATE_OP_PUT, "b1") == 2);
    REQUIRE(nt_pub(&x, "s", "c", OPSTATE_OP_PUT, "c1") == 3);
    REQUIRE(nt_pub_fill(&x, 1400) == 0);                             /* 4..1403 */
    REQUIRE(nt_pub(&x, "s", "b", OPSTATE_OP_DELETE, "") == 1404);
    REQUIRE(nt_pub(&x, "s", "d", OPSTATE_OP_PUT, "d1") == 1405);
    REQUIRE(nt_pub(&x, "s", "e", OPSTATE_OP_PUT, "e1") == 1406);
    REQUIRE(nt_durable_log_open(x.n, "T_DURGAP", "projgap", &lg) == OPSTATE_OK);
    memset(&ev, 0, sizeof ev);
    ev.n = x.n;
    ev.stream = "T_DURGAP";
    ev.below = 1405; /* 1027.. (past the first pull's 1024) and b's delete marker go before they are read */
    memset(&cc, 0, sizeof cc);
    cc.log = opstate_nats_log_iface(lg);
    cc.store = opstate_memstore_iface(ms);
    cc.batch = 2;
    cc.progress = nt_evict_after_first_batch;
    cc.progress_user = &ev;
    REQUIRE(opstate_consumer_open(&cc, &c, &err) == OPSTATE_OK);
    end = nt_mono_ms() + 10000;
    do { /* up to 100 events per poll: many batches of 2 in one poll */
        CHECK(opstate_consumer_poll(c, 100, 0, &pr, &err) == OPSTATE_OK);
    } while (opstate_consumer_position(c).seq < 1406 && nt_mono_ms() < end);
    CHECK(ev.calls > 0);
    CHECK_EQ_U64(nt_info(&x).first_seq, 1405);
    want = nt_oracle(x.n, x.stream, NULL, NULL, 0);
    REQUIRE(want != NULL);
    CHECK(opstate_consumer_get_status(c)->resynced);
    CHECK(nt_has(opstate_consumer_kv(c), "s", "k", "a", NULL) == 0); /* reconciled away */
    CHECK(nt_has(opstate_consumer_kv(c), "s", "k", "b", NULL) == 0); /* its delete marker was never read */
    CHECK(nt_kv_equal(opstate_consumer_kv(c), want));
    CHECK(opstate_consumer_close(c, &err) == OPSTATE_OK);
    opstate_nats_log_close(lg);
    opstate_kv_destroy(want);
    opstate_memstore_destroy(ms);
    nt_teardown(&x, true);
}

/* Durable mode with very short waits: pulls expire while their messages are
   in flight, so later pulls find late messages already buffered (the
   situation in which nats.c 3.4.1's _fetch overflows its array unless the
   batch is exactly what is buffered). Every sequence must come once, in
   order; run under valgrind for the heap check. */
TEST(nats, durable_short_waits)
{
    nt_ctx x;
    opstate_nats_log *lg = NULL;
    opstate_log log;
    opstate_log_message msgs[300];
    opstate_error err;
    nt_outcomes outs;
    uint64_t next = 1;
    int i, reads = 0, bad = 0;
    int64_t end;
    const int N = 3000;
    REQUIRE(nt_setup(&x, nt_url(), "T_DURSHORT", "dshort", 0, 0) == 0);
    for (i = 0; i < N; i++) {
        opstate_event ev = nt_ev("s", "k", "k", OPSTATE_OP_PUT, "0123456789012345678901234567890123456789");
        REQUIRE(opstate_nats_publish_async(x.lg, str("dshort"), &ev, NULL, &err) == OPSTATE_OK);
    }
    memset(&outs, 0, sizeof outs);
    REQUIRE(opstate_nats_publish_wait(x.lg, 10000, nt_collect, &outs, &err) == OPSTATE_OK);
    REQUIRE(nt_durable_log_open(x.n, "T_DURSHORT", "short", &lg) == OPSTATE_OK);
    log = opstate_nats_log_iface(lg);
    end = nt_mono_ms() + 15000;
    while (next <= (uint64_t)N && nt_mono_ms() < end) {
        size_t n = 0, j;
        opstate_result r = log.read(log.user, str(NULL), next, 1000000 /* 1 ms */, msgs, reads % 2 ? 300 : 7, &n, &err);
        reads++;
        if (r != OPSTATE_OK) {
            bad++;
            break;
        }
        for (j = 0; j < n; j++) {
            if (msgs[j].position.seq != next) bad++;
            next = msgs[j].position.seq + 1;
        }
        if (n && log.ack(log.user, next - 1, &err) != OPSTATE_OK) bad++;
    }
    CHECK_EQ_U64(next, (uint64_t)N + 1);
    CHECK_EQ_U64(bad, 0);
    opstate_nats_log_close(lg);
    nt_teardown(&x, true);
}

/* One read of up to `max` from *next through a durable log: every message
   must be *next, *next + 1, ... with a contiguous delivery; the last one is
   acknowledged. Counts a failed read or a message out of place in *bad;
   returns how many came. */
static size_t nt_durable_read(opstate_log *log, uint64_t *next, size_t max, int64_t wait_ns, int *bad)
{
    opstate_log_message msgs[64];
    opstate_error err;
    size_t n = 0, j;
    if (max > 64) max = 64;
    if (log->read(log->user, str(NULL), *next, wait_ns, msgs, max, &n, &err) != OPSTATE_OK) {
        (*bad)++;
        return 0;
    }
    for (j = 0; j < n; j++) {
        if (msgs[j].position.seq != *next || !msgs[j].contiguous) (*bad)++;
        *next = msgs[j].position.seq + 1;
    }
    if (n && log->ack(log->user, *next - 1, &err) != OPSTATE_OK) (*bad)++;
    return n;
}

/* Reads from *next through `last` within `ms` milliseconds, riding over
   failed reads (the server coming back); returns how many messages were
   not the next sequence. */
static int nt_durable_read_to(opstate_log *log, uint64_t *next, uint64_t last, int64_t ms)
{
    int64_t end = nt_mono_ms() + ms;
    int bad = 0;
    while (*next <= last && nt_mono_ms() < end) {
        opstate_log_message msgs[64];
        opstate_error err;
        size_t n = 0, j;
        if (log->read(log->user, str(NULL), *next, 0, msgs, 64, &n, &err) != OPSTATE_OK) nats_server_sleep_ms(50);
        for (j = 0; j < n; j++) {
            if (msgs[j].position.seq != *next && !bad++)
                printf("  read seq %llu where %llu was next (%s)\n", (unsigned long long)msgs[j].position.seq,
                       (unsigned long long)*next, msgs[j].contiguous ? "contiguous" : "not contiguous");
            *next = msgs[j].position.seq + 1;
        }
    }
    return bad;
}

/* Durable mode keeps pulls in flight ahead of the reader (up to 1,024
   messages, mostly delivered into the log's inbox before they are read).
   A read from another place re-creates the consumer there and drops all of
   that: nothing of the old consumer is ever taken. Many small reads then
   take every sequence once, in order; a caught-up read answers at once. */
TEST(nats, durable_rebind_takes_nothing_stale)
{
    nt_ctx x;
    opstate_nats_log *lg = NULL;
    opstate_log log;
    uint64_t next = 1;
    int bad = 0, reads = 0;
    int64_t t0, end;
    REQUIRE(nt_setup(&x, nt_url(), "T_DURPIPE", "dpipe", 0, 0) == 0);
    REQUIRE(nt_pub_fill(&x, 3000) == 0);
    REQUIRE(nt_durable_log_open(x.n, "T_DURPIPE", "pipe", &lg) == OPSTATE_OK);
    log = opstate_nats_log_iface(lg);
    CASE("read 10, then back to 5 with the rest of the window in flight");
    CHECK_EQ_U64(nt_durable_read(&log, &next, 10, 0, &bad), 10);
    nats_server_sleep_ms(100); /* the window arrives in the inbox */
    next = 5;
    CHECK_EQ_U64(nt_durable_read(&log, &next, 10, 0, &bad), 10);
    CHECK_EQ_U64(next, 15);
    CHECK_EQ_U64(nt_durable_read(&log, &next, 10, 0, &bad), 10);
    CASE("forward past the window, then small reads to the end");
    next = 2500;
    CHECK_EQ_U64(nt_durable_read(&log, &next, 10, 0, &bad), 10);
    end = nt_mono_ms() + 15000;
    while (next <= 3000 && nt_mono_ms() < end) nt_durable_read(&log, &next, (size_t)(reads++ % 9) + 1, 0, &bad);
    CHECK_EQ_U64(next, 3001);
    CHECK_EQ_U64(bad, 0);
    CHECK_EQ_U64(nt_stream_consumers(x.n, "T_DURPIPE"), 1);
    CASE("caught up: at once, and a message published then is read");
    t0 = nt_mono_ms();
    CHECK_EQ_U64(nt_durable_read(&log, &next, 8, 0, &bad), 0);
    CHECK(nt_mono_ms() - t0 < 1000);
    REQUIRE(nt_pub(&x, "s", "late", OPSTATE_OP_PUT, "late") == 3001);
    CHECK_EQ_U64(nt_durable_read(&log, &next, 8, 0, &bad), 1);
    CHECK_EQ_U64(bad, 0);
    opstate_nats_log_close(lg);
    nt_teardown(&x, true);
}

/* A read that waits leaves a long poll on the server; once it expires (its
   408 waiting in the inbox) a read still gets what was published since,
   and a read that waits sees what is published while it waits. */
TEST(nats, durable_read_after_expired_pull)
{
    nt_ctx x;
    opstate_nats_log *lg = NULL;
    opstate_log log;
    uint64_t next = 1;
    int bad = 0, i;
    int64_t t0;
    REQUIRE(nt_setup(&x, nt_url(), "T_DUREXP", "dexp", 0, 0) == 0);
    REQUIRE(nt_durable_log_open(x.n, "T_DUREXP", "exp", &lg) == OPSTATE_OK);
    log = opstate_nats_log_iface(lg);
    t0 = nt_mono_ms();
    CHECK_EQ_U64(nt_durable_read(&log, &next, 8, 100000000 /* 100 ms */, &bad), 0);
    CHECK(nt_mono_ms() - t0 >= 90);
    nats_server_sleep_ms(300); /* the long poll expires on the server */
    for (i = 0; i < 5; i++) REQUIRE(nt_pub(&x, "s", "k", OPSTATE_OP_PUT, "v") == (uint64_t)i + 1);
    CHECK_EQ_U64(nt_durable_read(&log, &next, 8, 0, &bad), 5);
    CHECK_EQ_U64(nt_durable_read(&log, &next, 8, 0, &bad), 0);
    CASE("a long poll in flight delivers what comes while it waits");
    CHECK_EQ_U64(nt_durable_read(&log, &next, 8, 200000000, &bad), 0);
    for (i = 0; i < 3; i++) REQUIRE(nt_pub(&x, "s", "k", OPSTATE_OP_PUT, "w") == (uint64_t)i + 6);
    t0 = nt_mono_ms();
    while (next <= 8 && nt_mono_ms() - t0 < 5000) nt_durable_read(&log, &next, 8, 1000000000, &bad);
    CHECK_EQ_U64(next, 9);
    CHECK_EQ_U64(bad, 0);
    opstate_nats_log_close(lg);
    nt_teardown(&x, true);
}

/* Stream `stream` on the server at `url` holding `fill` events (1..fill)
   and a durable log named `prefix` on it: 0, or -1 with everything undone. */
static int nt_durable_setup(nt_ctx *x, const char *url, const char *stream, const char *prefix, int fill,
                            opstate_nats_log **lg)
{
    if (nt_setup(x, url, stream, prefix, 0, 0) == 0 && (!fill || nt_pub_fill(x, fill) == 0) &&
        nt_durable_log_open(x->n, stream, prefix, lg) == OPSTATE_OK)
        return 0;
    nt_teardown(x, true);
    return -1;
}

/* The same on a server of the test's own (to be killed). */
static int nt_durable_own_server(nats_server *srv, nt_ctx *x, const char *stream, const char *prefix, int fill,
                                 opstate_nats_log **lg)
{
    if (nt_start(srv) != 0) return -1;
    if (nt_durable_setup(x, srv->url, stream, prefix, fill, lg) == 0) return 0;
    nats_server_stop(srv);
    return -1;
}

/* The server dies with pulls in flight (their requests and what they
   still owed are gone with it, and the durable consumer comes back with
   the position it last persisted, from before the reads): after the
   restart, reads take every sequence once, in order. */
TEST(nats, durable_pulls_lost_with_the_server)
{
    nats_server srv = {0};
    nt_ctx x;
    opstate_nats_log *lg = NULL;
    opstate_log log;
    uint64_t next = 1;
    int bad = 0;
    REQUIRE(nt_durable_own_server(&srv, &x, "T_DURKILL", "dkill", 3000, &lg) == 0);
    log = opstate_nats_log_iface(lg);
    CHECK_EQ_U64(nt_durable_read(&log, &next, 10, 0, &bad), 10);
    nats_server_kill(&srv, SIGKILL);
    REQUIRE(nt_restart(&srv) == 0);
    bad = nt_durable_read_to(&log, &next, 3000, 30000); /* the consumer back with its acks lost: none again */
    CHECK_EQ_U64(next, 3001);
    CHECK_EQ_U64(bad, 0);
    opstate_nats_log_close(lg);
    nt_teardown(&x, false);
    nats_server_stop(&srv);
}

/* Publishes one event to x after `ms` milliseconds, on a thread of its own. */
typedef struct nt_later {
    nt_ctx *x;
    int ms;
    uint64_t seq;
} nt_later;

static void *nt_pub_later(void *user)
{
    nt_later *l = (nt_later *)user;
    nats_server_sleep_ms(l->ms);
    l->seq = nt_pub(l->x, "s", "k", OPSTATE_OP_PUT, "later");
    return NULL;
}

/* A long poll (a read that waits) takes one message and stays open on the
   server; the server dies with it, so no 408 will ever end it. Reads must
   not wait on it past its end: then the consumer is made again where the
   reader is, and what was published since is read. */
TEST(nats, durable_lost_long_poll_not_waited_on)
{
    nats_server srv = {0};
    nt_ctx x;
    opstate_nats_log *lg = NULL;
    opstate_log log;
    pthread_t t;
    nt_later later;
    uint64_t next = 1;
    int bad = 0, i;
    int64_t end;
    REQUIRE(nt_durable_own_server(&srv, &x, "T_DURLONG", "dlong", 0, &lg) == 0);
    log = opstate_nats_log_iface(lg);
    later.x = &x;
    later.ms = 300;
    later.seq = 0;
    REQUIRE(pthread_create(&t, NULL, nt_pub_later, &later) == 0);
    CHECK_EQ_U64(nt_durable_read(&log, &next, 8, 2000000000 /* 2 s */, &bad), 1); /* the long poll asked for 8 */
    pthread_join(t, NULL);
    CHECK_EQ_U64(later.seq, 1);
    nats_server_kill(&srv, SIGKILL);
    REQUIRE(nt_restart(&srv) == 0);
    end = nt_mono_ms() + 10000;
    for (i = 0; i < 3 && nt_mono_ms() < end;) i += nt_pub(&x, "s", "k", OPSTATE_OP_PUT, "after") != 0;
    bad = nt_durable_read_to(&log, &next, 4, end - nt_mono_ms());
    CHECK_EQ_U64(next, 5);
    CHECK_EQ_U64(bad, 0);
    opstate_nats_log_close(lg);
    nt_teardown(&x, false);
    nats_server_stop(&srv);
}

/* The durable consumer is made again behind the log's back, at the start
   of the stream, while the reader is caught up: its first delivery is from
   before the reader. It is never taken: the log makes the consumer again
   where the reader is. */
TEST(nats, durable_consumer_gone_back)
{
    nt_ctx x;
    opstate_nats_log *lg = NULL;
    opstate_log log;
    jsConsumerConfig cc;
    jsErrCode jerr = (jsErrCode)0;
    uint64_t next = 1;
    int bad = 0, i;
    REQUIRE(nt_durable_setup(&x, nt_url(), "T_DURBACK", "back", 20, &lg) == 0);
    log = opstate_nats_log_iface(lg);
    CHECK_EQ_U64(nt_durable_read(&log, &next, 20, 0, &bad), 20);
    CHECK(js_DeleteConsumer(opstate_nats_jetstream(x.n), "T_DURBACK", "back", NULL, &jerr) == NATS_OK);
    jsConsumerConfig_Init(&cc);
    cc.Durable = "back";
    cc.AckPolicy = js_AckAll;
    CHECK(js_AddConsumer(NULL, opstate_nats_jetstream(x.n), "T_DURBACK", &cc, NULL, &jerr) == NATS_OK);
    REQUIRE(nt_pub_fill(&x, 5) == 0); /* 21..25 */
    for (i = 0; i < 20 && next <= 25; i++) nt_durable_read(&log, &next, 8, 0, &bad);
    CHECK_EQ_U64(next, 26);
    CHECK_EQ_U64(bad, 0);
    opstate_nats_log_close(lg);
    nt_teardown(&x, true);
}

/* Another client pulls three messages from the log's durable consumer
   while the log waits on nothing (caught up): its next deliveries skip
   three delivery numbers, as when deliveries are lost on the way with a
   server. Nothing is skipped: the log makes the consumer again where the
   reader is and takes 21.. itself. */
TEST(nats, durable_delivery_hole_not_skipped)
{
    nt_ctx x;
    opstate_nats_log *lg = NULL;
    opstate_log log;
    natsMsg *reply = NULL;
    uint64_t next = 1;
    int bad = 0, i;
    REQUIRE(nt_durable_setup(&x, nt_url(), "T_DURHOLE", "hole", 20, &lg) == 0);
    log = opstate_nats_log_iface(lg);
    for (i = 0; i < 10 && next <= 20; i++) nt_durable_read(&log, &next, 20, 0, &bad);
    CHECK_EQ_U64(next, 21);
    CHECK_EQ_U64(nt_durable_read(&log, &next, 20, 0, &bad), 0); /* caught up: no pull left waiting */
    REQUIRE(nt_pub_fill(&x, 10) == 0); /* 21..30 */
    CHECK(natsConnection_RequestString(&reply, opstate_nats_connection(x.n), "$JS.API.CONSUMER.MSG.NEXT.T_DURHOLE.hole",
                                       "{\"batch\":3,\"no_wait\":true}", 2000) == NATS_OK);
    natsMsg_Destroy(reply);
    bad += nt_durable_read_to(&log, &next, 30, 10000);
    CHECK_EQ_U64(next, 31);
    CHECK_EQ_U64(bad, 0);
    opstate_nats_log_close(lg);
    nt_teardown(&x, true);
}

/* The server redelivers what was never acked (the test shortens the
   consumer's ack wait behind the log's back): the redeliveries number on
   without a hole but are from before the reader. None is taken twice:
   the log makes the consumer again where the reader is. */
TEST(nats, durable_redelivery_not_taken_twice)
{
    nt_ctx x;
    opstate_nats_log *lg = NULL;
    opstate_log log;
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = (jsErrCode)0;
    uint64_t next = 1;
    REQUIRE(nt_durable_setup(&x, nt_url(), "T_DURREDO", "redo", 20, &lg) == 0);
    log = opstate_nats_log_iface(lg);
    CHECK_EQ_U64(nt_durable_read_to(&log, &next, 10, 5000), 0); /* never acked */
    REQUIRE(js_GetConsumerInfo(&ci, opstate_nats_jetstream(x.n), "T_DURREDO", "redo", NULL, &jerr) == NATS_OK);
    ci->Config->AckWait = (int64_t)500 * 1000000;
    CHECK(js_UpdateConsumer(NULL, opstate_nats_jetstream(x.n), "T_DURREDO", ci->Config, NULL, &jerr) == NATS_OK);
    jsConsumerInfo_Destroy(ci);
    nats_server_sleep_ms(1500); /* 1..20 are due again */
    REQUIRE(nt_pub_fill(&x, 10) == 0); /* 21..30 */
    CHECK_EQ_U64(nt_durable_read_to(&log, &next, 30, 10000), 0);
    CHECK_EQ_U64(next, 31);
    opstate_nats_log_close(lg);
    nt_teardown(&x, true);
}

/* A durable read from past the end of the stream: the server starts the
   consumer at last + 1 without a word. Its first delivery, below the
   sequence asked for, is handed to the caller (the consumer driver checks
   the first delivered sequence against the one it asked for), not taken
   for a consumer that went back. */
TEST(nats, durable_clamped_start_reported)
{
    nt_ctx x;
    opstate_nats_log *lg = NULL;
    opstate_log log;
    opstate_log_message msgs[8];
    opstate_error err;
    size_t n = 9;
    int i;
    int64_t t0;
    REQUIRE(nt_setup(&x, nt_url(), "T_DURCLAMP", "dclamp", 0, 0) == 0);
    for (i = 0; i < 5; i++) REQUIRE(nt_pub(&x, "s", "k", OPSTATE_OP_PUT, "v") == (uint64_t)i + 1);
    REQUIRE(nt_durable_log_open(x.n, "T_DURCLAMP", "clamp", &lg) == OPSTATE_OK);
    log = opstate_nats_log_iface(lg);
    CHECK(log.read(log.user, str(NULL), 20, 0, msgs, 8, &n, &err) == OPSTATE_OK);
    CHECK_EQ_U64(n, 0);
    REQUIRE(nt_pub(&x, "s", "k", OPSTATE_OP_PUT, "w") == 6);
    t0 = nt_mono_ms();
    CHECK(log.read(log.user, str(NULL), 20, 0, msgs, 8, &n, &err) == OPSTATE_OK);
    CHECK(nt_mono_ms() - t0 < 2000);
    REQUIRE(n == 1);
    CHECK_EQ_U64(msgs[0].position.seq, 6);
    opstate_nats_log_close(lg);
    nt_teardown(&x, true);
}

/* Makes stream `name` with nats.c directly (not through opstate): subjects
   as given, the policies and limits of `c` (Name and Subjects are set
   here). */
static int nt_raw_stream(opstate_nats *n, const char *name, const char **subjects, int count, jsStreamConfig *c)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = (jsErrCode)0;
    natsStatus s;
    opstate_nats_stream_delete(n, name, NULL);
    c->Name = name;
    c->Subjects = subjects;
    c->SubjectsLen = count;
    s = js_AddStream(&si, opstate_nats_jetstream(n), c, NULL, &jerr);
    jsStreamInfo_Destroy(si);
    return s == NATS_OK ? 0 : -1;
}

/* opstate_nats_stream_ensure(stream, prefix) with nothing else asked. */
static opstate_result nt_ensure(opstate_nats *n, const char *stream, const char *prefix, int replicas, opstate_error *err)
{
    opstate_nats_stream_config sc;
    memset(&sc, 0, sizeof sc);
    sc.stream = stream;
    sc.prefix = prefix;
    sc.replicas = replicas;
    memset(err, 0, sizeof *err);
    return opstate_nats_stream_ensure(n, &sc, err);
}

/* A retention policy that deletes messages (work queue, interest) is
   refused, naming the retention: replay and resume need the messages. */
TEST(nats, stream_ensure_refuses_other_retention)
{
    static const char *const names[2] = {"T_WQ", "T_INTEREST"};
    const char *subjects[1];
    nt_ctx x;
    size_t i;
    REQUIRE(nt_setup(&x, nt_url(), "T_POLICY", "pol", 0, 0) == 0);
    for (i = 0; i < 2; i++) {
        jsStreamConfig c;
        opstate_error err;
        char subject[16];
        CASE(names[i]);
        snprintf(subject, sizeof subject, "p%d.>", (int)i);
        subjects[0] = subject;
        jsStreamConfig_Init(&c);
        c.Retention = i == 0 ? js_WorkQueuePolicy : js_InterestPolicy;
        REQUIRE(nt_raw_stream(x.n, names[i], subjects, 1, &c) == 0);
        subject[strlen(subject) - 2] = '\0'; /* the prefix: "pN" */
        CHECK(nt_ensure(x.n, names[i], subject, 0, &err) == OPSTATE_CONFLICT);
        CHECK(err.field != NULL && strstr(err.field, "retention") != NULL);
        opstate_nats_stream_delete(x.n, names[i], NULL);
    }
    nt_teardown(&x, true);
}

static void nt_count_replica_lines(void *user, opstate_diag_level level, const char *message)
{
    if (level == OPSTATE_DIAG_INFO && strstr(message, "replicas")) ++*(int *)user;
}

/* An existing stream is used as it is: limits and policies nobody asked
   for, another replica count than asked (an info line), subjects wider
   than "<prefix>.>" or several of them; it is never changed. Subjects
   that do not cover "<prefix>.>" are refused, naming the subjects. */
TEST(nats, stream_ensure_uses_existing_as_it_is)
{
    const char *wide[2] = {"zz.one", "cv.>"}, *narrow[1] = {"nw.a.>"};
    opstate_nats_config nc;
    opstate_nats *n = NULL;
    opstate_error err;
    jsStreamConfig c;
    jsStreamInfo *si = NULL;
    jsErrCode jerr = (jsErrCode)0;
    int replica_lines = 0;
    const char *url = nt_url();
    REQUIRE(url != NULL);
    memset(&nc, 0, sizeof nc);
    nc.urls = url;
    nc.diag.fn = nt_count_replica_lines;
    nc.diag.user = &replica_lines;
    REQUIRE(opstate_nats_connect(&nc, &n, &err) == OPSTATE_OK);

    CASE("R1, other limits, discard new, a byte limit: used as it is, replicas 3 asked");
    jsStreamConfig_Init(&c);
    c.MaxMsgs = 1000;
    c.MaxAge = 3600LL * 1000000000LL;
    c.MaxBytes = 1000000;
    c.Discard = js_DiscardNew;
    REQUIRE(nt_raw_stream(n, "T_ASIS", wide + 1, 1, &c) == 0);
    CHECK(nt_ensure(n, "T_ASIS", "cv", 3, &err) == OPSTATE_OK);
    CHECK_EQ_U64(replica_lines, 1);
    CHECK(nt_ensure(n, "T_ASIS", "cv", 0, &err) == OPSTATE_OK);
    CHECK_EQ_U64(replica_lines, 1); /* not asked: not mentioned */
    REQUIRE(js_GetStreamInfo(&si, opstate_nats_jetstream(n), "T_ASIS", NULL, &jerr) == NATS_OK);
    CHECK(si->Config->MaxMsgs == 1000 && si->Config->Replicas == 1 && si->Config->Discard == js_DiscardNew);
    jsStreamInfo_Destroy(si);

    CASE("subjects wider than <prefix>.>, and several");
    REQUIRE(nt_raw_stream(n, "T_ASIS", wide, 2, &c) == 0);
    CHECK(nt_ensure(n, "T_ASIS", "cv.sub.deeper", 0, &err) == OPSTATE_OK);
    CHECK(nt_ensure(n, "T_ASIS", "cv", 0, &err) == OPSTATE_OK);
    CHECK(nt_ensure(n, "T_ASIS", "zz", 0, &err) == OPSTATE_CONFLICT); /* zz.one is not zz.> */
    CHECK(err.field != NULL && strstr(err.field, "subjects") != NULL);

    CASE("subjects narrower than <prefix>.>");
    REQUIRE(nt_raw_stream(n, "T_NARROW", narrow, 1, &c) == 0);
    CHECK(nt_ensure(n, "T_NARROW", "nw", 0, &err) == OPSTATE_CONFLICT);
    CHECK(err.field != NULL && strstr(err.field, "subjects") != NULL);
    CHECK(nt_ensure(n, "T_NARROW", "nw.a", 0, &err) == OPSTATE_OK);
    CHECK(nt_ensure(n, "T_NARROW", "nw.a.b", 0, &err) == OPSTATE_OK);
    opstate_nats_stream_delete(n, "T_ASIS", NULL);
    opstate_nats_stream_delete(n, "T_NARROW", NULL);
    opstate_nats_close(n);
}

/* A server that requires a user and password: opstate_nats_connect with
   the right ones works, with a wrong password it fails cleanly (and the
   password appears in no log line). */
static void nt_capture_log(void *user, opstate_diag_level level, const char *message)
{
    (void)level;
    if (strstr(message, "s3cret-pass") || strstr(message, "wrong-pass")) *(int *)user = 1;
}

TEST(nats, user_password_auth)
{
    nats_server srv = {0};
    opstate_nats_config nc;
    opstate_nats *n = NULL;
    opstate_error err;
    int leaked = 0;
    srv.user = "opstate";
    srv.pass = "s3cret-pass";
    REQUIRE(nt_start(&srv) == 0);
    memset(&nc, 0, sizeof nc);
    nc.urls = srv.url;
    nc.user = "opstate";
    nc.password = "wrong-pass";
    nc.max_reconnect = 1;
    nc.diag.fn = nt_capture_log;
    nc.diag.user = &leaked;
    memset(&err, 0, sizeof err);
    CHECK(opstate_nats_connect(&nc, &n, &err) != OPSTATE_OK);
    CHECK(n == NULL || err.result != OPSTATE_OK);
    nc.password = "s3cret-pass";
    CHECK(opstate_nats_connect(&nc, &n, &err) == OPSTATE_OK);
    opstate_nats_close(n);
    CHECK(!leaked);
    nats_server_stop(&srv);
}

/* ---- TLS ---------------------------------------------------------------- */

/* Test PKI in a temp dir (scripts/test_pki.sh): a CA, a server certificate
   for 127.0.0.1 and a client certificate signed by it, and a second CA that
   signed neither. */
typedef struct nt_pki {
    char dir[64];
    char ca[96], other_ca[96], server_cert[96], server_key[96], client_cert[96], client_key[96];
} nt_pki;

static int nt_pki_make(nt_pki *p)
{
    char cmd[256];
    snprintf(p->dir, sizeof p->dir, "/tmp/opstate-pki-XXXXXX");
    if (!mkdtemp(p->dir)) return -1;
    snprintf(p->ca, sizeof p->ca, "%s/ca.pem", p->dir);
    snprintf(p->other_ca, sizeof p->other_ca, "%s/other.pem", p->dir);
    snprintf(p->server_cert, sizeof p->server_cert, "%s/server.pem", p->dir);
    snprintf(p->server_key, sizeof p->server_key, "%s/server.key", p->dir);
    snprintf(p->client_cert, sizeof p->client_cert, "%s/client.pem", p->dir);
    snprintf(p->client_key, sizeof p->client_key, "%s/client.key", p->dir);
    snprintf(cmd, sizeof cmd, "bash scripts/test_pki.sh '%s'", p->dir); /* tests run from the top directory */
    fflush(NULL);
    return system(cmd) == 0 ? 0 : -1;
}

static void nt_pki_remove(const nt_pki *p)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", p->dir);
    if (system(cmd) != 0) printf("nats: could not remove %s\n", p->dir);
}

/* A connection over TLS carries the JetStream work: a stream, a publish,
   a read back. */
static bool nt_tls_roundtrip(opstate_nats *n)
{
    opstate_nats_stream_config sc;
    opstate_nats_log *lg = NULL;
    opstate_log log;
    opstate_log_message msg;
    opstate_event ev = nt_ev("s", "k", "key", OPSTATE_OP_PUT, "over tls");
    opstate_error err;
    size_t got = 0;
    bool ok;
    memset(&sc, 0, sizeof sc);
    sc.stream = "T_TLS";
    sc.prefix = "tls";
    ok = opstate_nats_stream_ensure(n, &sc, &err) == OPSTATE_OK && nt_log_open(n, "T_TLS", &lg) == OPSTATE_OK;
    if (ok) {
        log = opstate_nats_log_iface(lg);
        ok = opstate_publish(&log, str("tls"), &ev, NULL, NULL, NULL, &err) == OPSTATE_OK &&
             log.read(log.user, str(""), 1, 2000000000, &msg, 1, &got, &err) == OPSTATE_OK && got == 1 &&
             opstate_event_decode(msg.data.ptr, msg.data.len, &ev, &err) == OPSTATE_OK && ev.data.len == 8 &&
             memcmp(ev.data.ptr, "over tls", 8) == 0;
    }
    opstate_nats_log_close(lg);
    return ok;
}

static opstate_result nt_tls_connect(const char *url, const char *ca, const char *cert, const char *key,
                                     opstate_nats **out, opstate_error *err)
{
    opstate_nats_config nc;
    memset(&nc, 0, sizeof nc);
    nc.urls = url;
    nc.tls_ca = ca;
    nc.tls_cert = cert;
    nc.tls_key = key;
    nc.max_reconnect = 1;
    nc.reconnect_wait_ms = 10;
    memset(err, 0, sizeof *err);
    *out = NULL;
    return opstate_nats_connect(&nc, out, err);
}

/* Makes the PKI and starts a server that requires TLS (and, with
   verify_clients, a client certificate from the CA). 0 when it runs. */
static int nt_tls_server(nt_pki *pki, nats_server *srv, bool verify_clients)
{
    memset(srv, 0, sizeof *srv);
    if (nt_pki_make(pki) != 0) return -1;
    srv->tls_cert = pki->server_cert;
    srv->tls_key = pki->server_key;
    srv->tls_ca = verify_clients ? pki->ca : NULL;
    if (nt_start(srv) == 0) return 0;
    nt_pki_remove(pki);
    return -1;
}

TEST(nats, tls_server_verified_by_ca)
{
    nt_pki pki;
    nats_server srv;
    opstate_nats *n = NULL;
    opstate_error err;
    REQUIRE(nt_tls_server(&pki, &srv, false) == 0);
    CASE("trusting the CA that signed the server: JetStream works over TLS");
    CHECK(nt_tls_connect(srv.url, pki.ca, NULL, NULL, &n, &err) == OPSTATE_OK);
    if (n) CHECK(nt_tls_roundtrip(n));
    opstate_nats_close(n);
    CASE("another CA: the server is not trusted, the connect fails");
    CHECK(nt_tls_connect(srv.url, pki.other_ca, NULL, NULL, &n, &err) == OPSTATE_IO);
    CHECK(n == NULL && err.result == OPSTATE_IO && err.dep_status != 0);
    CASE("no TLS asked: the server requires it, the connect fails");
    CHECK(nt_tls_connect(srv.url, NULL, NULL, NULL, &n, &err) == OPSTATE_IO);
    CHECK(n == NULL);
    CASE(NULL);
    nats_server_stop(&srv);
    nt_pki_remove(&pki);
}

TEST(nats, tls_client_certificate)
{
    nt_pki pki;
    nats_server srv;
    opstate_nats *n = NULL;
    opstate_error err;
    REQUIRE(nt_tls_server(&pki, &srv, true) == 0); /* --tlsverify: clients need a certificate from the CA */
    CASE("client certificate signed by the CA: admitted");
    CHECK(nt_tls_connect(srv.url, pki.ca, pki.client_cert, pki.client_key, &n, &err) == OPSTATE_OK);
    if (n) CHECK(nt_tls_roundtrip(n));
    opstate_nats_close(n);
    CASE("no client certificate: refused");
    CHECK(nt_tls_connect(srv.url, pki.ca, NULL, NULL, &n, &err) == OPSTATE_IO);
    CHECK(n == NULL);
    CASE("a certificate without its key (or a key alone): refused before connecting");
    CHECK(nt_tls_connect(srv.url, pki.ca, pki.client_cert, NULL, &n, &err) == OPSTATE_INVALID_ARGUMENT);
    CHECK(n == NULL && err.result == OPSTATE_INVALID_ARGUMENT);
    CHECK(nt_tls_connect(srv.url, pki.ca, NULL, pki.client_key, &n, &err) == OPSTATE_INVALID_ARGUMENT);
    CHECK(n == NULL);
    CASE(NULL);
    nats_server_stop(&srv);
    nt_pki_remove(&pki);
}

/* ---- the NATS wire format (DESIGN.md "NATS wire format") ------------------ */

/* Publishes with plain nats.c (no opstate code): subject, payload, and up
   to two headers (NULL: none). Returns the stream sequence, 0 on failure. */
static uint64_t nt_plain_publish(nt_ctx *x, const char *subject, const char *payload, const char *h1, const char *v1,
                                 const char *h2, const char *v2)
{
    natsMsg *m = NULL;
    jsPubAck *pa = NULL;
    jsErrCode jerr = (jsErrCode)0;
    uint64_t seq = 0;
    natsStatus s = natsMsg_Create(&m, subject, NULL, payload, (int)strlen(payload));
    if (s == NATS_OK && h1) s = natsMsgHeader_Set(m, h1, v1);
    if (s == NATS_OK && h2) s = natsMsgHeader_Set(m, h2, v2);
    if (s == NATS_OK) s = js_PublishMsg(&pa, opstate_nats_jetstream(x->n), m, NULL, &jerr);
    if (s == NATS_OK) seq = pa->Sequence;
    jsPubAck_Destroy(pa);
    natsMsg_Destroy(m);
    return seq;
}

/* A stream written by another client: JSON and text payloads, an id that
   is not a UUID, messages with no id, a KV-Operation: DEL, a key of
   several tokens, a subject the template does not fit (poison). */
TEST(nats_wire, plain_client_stream_is_consumed)
{
    nt_ctx x;
    opstate_replay_config rc;
    opstate_replay_result rr;
    opstate_kv *kv = NULL;
    REQUIRE(nt_setup(&x, nt_url(), "T_WIRE_IN", "wire", 0, 0) == 0);
    CHECK(nt_plain_publish(&x, "wire.site1.host.raw", "{\"rate\":5}", "Nats-Msg-Id", "order-1", NULL, NULL) == 1);
    CHECK(nt_plain_publish(&x, "wire.site1.host.t2", "hello", NULL, NULL, NULL, NULL) == 2);
    CHECK(nt_plain_publish(&x, "wire.site1.host.cfg", "{\"on\":true}", NULL, NULL, NULL, NULL) == 3);
    CHECK(nt_plain_publish(&x, "wire.site1.host.raw", "", "KV-Operation", "DEL", NULL, NULL) == 4);
    CHECK(nt_plain_publish(&x, "wire.site1.host.a.b.c", "dotted", NULL, NULL, NULL, NULL) == 5);
    CHECK(nt_plain_publish(&x, "wire.site1", "no kind", NULL, NULL, NULL, NULL) == 6);
    memset(&rc, 0, sizeof rc);
    rc.log = x.log;
    REQUIRE(opstate_kv_create(NULL, &kv) == OPSTATE_OK);
    CHECK(opstate_replay(&rc, kv, &rr, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(rr.applied, 5);
    CHECK_EQ_U64(rr.poison, 1);
    CHECK_EQ_U64(opstate_kv_count(kv), 3);
    CHECK(nt_has(kv, "site1", "host", "t2", "hello") == 1);
    CHECK(nt_has(kv, "site1", "host", "cfg", "{\"on\":true}") == 1);
    CHECK(nt_has(kv, "site1", "host", "a.b.c", "dotted") == 1);
    CHECK(nt_has(kv, "site1", "host", "raw", NULL) == 0); /* deleted */
    opstate_kv_destroy(kv);
    nt_teardown(&x, true);
}

/* What opstate publishes reads as its plain payload to any client: the id
   in Nats-Msg-Id, op and time in headers, the key in the subject; and it
   comes back to opstate as the same event. */
TEST(nats_wire, opstate_events_read_plain)
{
    nt_ctx x;
    opstate_event ev = nt_ev("s", "host", "10.0.0.1", OPSTATE_OP_PUT, "{\"rate\":5}"), back;
    opstate_append_result ar;
    opstate_log_message msg;
    natsMsg *m = NULL;
    jsErrCode jerr = (jsErrCode)0;
    const char *h = NULL;
    char id[OPSTATE_ID_TEXT_LEN + 1], t[24];
    size_t n = 0;
    REQUIRE(nt_setup(&x, nt_url(), "T_WIRE_OUT", "wout", 0, 0) == 0);
    REQUIRE(opstate_publish(&x.log, str("wout"), &ev, NULL, NULL, &ar, NULL) == OPSTATE_OK);
    REQUIRE(js_GetMsg(&m, opstate_nats_jetstream(x.n), "T_WIRE_OUT", ar.seq, NULL, &jerr) == NATS_OK);
    CHECK_STR(natsMsg_GetSubject(m), "wout.s.host.10%2E0%2E0%2E1");
    CHECK(natsMsg_GetDataLength(m) == 10 && memcmp(natsMsg_GetData(m), "{\"rate\":5}", 10) == 0);
    opstate_id_to_text(&ev.id, id);
    id[OPSTATE_ID_TEXT_LEN] = '\0';
    CHECK(natsMsgHeader_Get(m, "Nats-Msg-Id", &h) == NATS_OK && h && strcmp(h, id) == 0);
    CHECK(natsMsgHeader_Get(m, "Opstate-Op", &h) == NATS_OK && h && strcmp(h, "put") == 0);
    snprintf(t, sizeof t, "%lld", (long long)ev.time);
    CHECK(natsMsgHeader_Get(m, "Opstate-Time", &h) == NATS_OK && h && strcmp(h, t) == 0);
    natsMsg_Destroy(m);
    REQUIRE(x.log.read(x.log.user, str(NULL), ar.seq, 0, &msg, 1, &n, NULL) == OPSTATE_OK && n == 1);
    REQUIRE(opstate_event_decode(msg.data.ptr, msg.data.len, &back, NULL) == OPSTATE_OK);
    CHECK(opstate_id_equal(&back.id, &ev.id));
    CHECK(back.key.len == 8 && memcmp(back.key.ptr, "10.0.0.1", 8) == 0);
    CHECK(back.op == OPSTATE_OP_PUT && back.has_time && back.time == ev.time);
    CHECK(back.data.len == 10 && memcmp(back.data.ptr, "{\"rate\":5}", 10) == 0);
    nt_teardown(&x, true);
}

/* A stream opstate 0.1 wrote (the binary encoding as the payload, no
   opstate headers) is read as it was. */
TEST(nats_wire, stream_of_0_1_is_read)
{
    nt_ctx x;
    opstate_event ev = nt_ev("s", "k", "old", OPSTATE_OP_PUT, "v01");
    uint8_t enc[256];
    char payload[257];
    size_t n = 0;
    opstate_replay_config rc;
    opstate_replay_result rr;
    opstate_kv *kv = NULL;
    natsMsg *m = NULL;
    jsPubAck *pa = NULL;
    REQUIRE(nt_setup(&x, nt_url(), "T_WIRE_01", "w01", 0, 0) == 0);
    REQUIRE(opstate_event_encode(&ev, enc, sizeof enc, &n, NULL) == OPSTATE_OK);
    memcpy(payload, enc, n);
    REQUIRE(natsMsg_Create(&m, "w01.s.k.old", NULL, payload, (int)n) == NATS_OK);
    REQUIRE(js_PublishMsg(&pa, opstate_nats_jetstream(x.n), m, NULL, NULL) == NATS_OK);
    jsPubAck_Destroy(pa);
    natsMsg_Destroy(m);
    memset(&rc, 0, sizeof rc);
    rc.log = x.log;
    REQUIRE(opstate_kv_create(NULL, &kv) == OPSTATE_OK);
    CHECK(opstate_replay(&rc, kv, &rr, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(rr.applied, 1);
    CHECK(nt_has(kv, "s", "k", "old", "v01") == 1);
    opstate_kv_destroy(kv);
    nt_teardown(&x, true);
}

/* The message at seq, read alone through log; false when the read fails or
   gives another one. */
static bool nt_read_message(const opstate_log *log, uint64_t seq, opstate_log_message *msg)
{
    size_t n = 0;
    return log->read(log->user, str(NULL), seq, 0, msg, 1, &n, NULL) == OPSTATE_OK && n == 1 &&
           msg->position.seq == seq;
}

/* The event of the message at seq, read through the log interface; false
   when the read fails or its data is not an event (poison). */
static bool nt_read_event(nt_ctx *x, uint64_t seq, opstate_event *ev)
{
    opstate_log_message msg;
    return nt_read_message(&x->log, seq, &msg) &&
           opstate_event_decode(msg.data.ptr, msg.data.len, ev, NULL) == OPSTATE_OK;
}

/* The event at seq read through a log opened with subject template tmpl
   (its bytes outlive the log: copied into a static buffer). */
static bool nt_template_event(nt_ctx *x, const char *tmpl, uint64_t seq, opstate_event *ev)
{
    static uint8_t copy[512];
    opstate_nats_log_config lc;
    opstate_nats_log *lg = NULL;
    opstate_log log;
    opstate_log_message msg;
    bool ok;
    memset(&lc, 0, sizeof lc);
    lc.stream = x->stream;
    lc.subject_template = tmpl;
    if (opstate_nats_log_open(x->n, &lc, &lg, NULL) != OPSTATE_OK) return false;
    log = opstate_nats_log_iface(lg);
    ok = nt_read_message(&log, seq, &msg) && msg.data.len <= sizeof copy;
    if (ok && msg.data.len) memcpy(copy, msg.data.ptr, msg.data.len); /* poison: no bytes */
    ok = ok && opstate_event_decode(copy, msg.data.len, ev, NULL) == OPSTATE_OK;
    opstate_nats_log_close(lg);
    return ok;
}

/* Each rule of the wire format that a plain client can meet: ids derived
   when there is none (stable on every read, distinct per message), the
   publish time, an application op with its time, headers that do not
   parse (poison), PURGE. */
TEST(nats_wire, foreign_headers_and_derived_ids)
{
    nt_ctx x;
    opstate_event a, b, again;
    int64_t before = nt_now_ns(), after;
    REQUIRE(nt_setup(&x, nt_url(), "T_WIRE_RULES", "wr", 0, 0) == 0);
    REQUIRE(nt_plain_publish(&x, "wr.s.k.same", "v", NULL, NULL, NULL, NULL) == 1);
    REQUIRE(nt_plain_publish(&x, "wr.s.k.same", "v", NULL, NULL, NULL, NULL) == 2);
    after = nt_now_ns();
    CHECK(nt_plain_publish(&x, "wr.s.k.app", "x", "Opstate-Op", "16", "Opstate-Time", "123") == 3);
    CHECK(nt_plain_publish(&x, "wr.s.k.bad", "x", "Opstate-Op", "3", NULL, NULL) == 4);
    CHECK(nt_plain_publish(&x, "wr.s.k.bad", "x", "Opstate-Op", "put", "Opstate-Time", "12x") == 5);
    CHECK(nt_plain_publish(&x, "wr.s.k.gone", "", "KV-Operation", "PURGE", NULL, NULL) == 6);
    CHECK(nt_plain_publish(&x, "wr.s.k.%zz", "x", "Opstate-Op", "put", NULL, NULL) == 7);
    CASE("a plain message: a put at its publish time");
    REQUIRE(nt_read_event(&x, 1, &a)); /* its bytes are the log's until the next read */
    CHECK(a.op == OPSTATE_OP_PUT && a.has_time && a.time >= before - 1000000000 && a.time <= after + 1000000000);
    CHECK(a.data.len == 1 && a.data.ptr[0] == 'v');
    CASE("no id: one derived from stream and sequence, the same on every read, one per message");
    REQUIRE(nt_read_event(&x, 2, &b));
    CHECK(!opstate_id_equal(&a.id, &b.id));
    REQUIRE(nt_read_event(&x, 1, &again));
    CHECK(opstate_id_equal(&a.id, &again.id));
    CASE("Opstate-Op 16 and Opstate-Time: an application op at that time");
    REQUIRE(nt_read_event(&x, 3, &a));
    CHECK(a.op == 16 && a.has_time && a.time == 123);
    CASE("an op below the application range, a time that is not a number, a bad escape: poison");
    CHECK(!nt_read_event(&x, 4, &a));
    CHECK(!nt_read_event(&x, 5, &a));
    CHECK(!nt_read_event(&x, 7, &a));
    CASE("KV-Operation: PURGE is a delete");
    REQUIRE(nt_read_event(&x, 6, &a));
    CHECK(a.op == OPSTATE_OP_DELETE);
    CASE("a template without {scope}: the stream's name; a literal token that differs: poison");
    CHECK(nt_template_event(&x, "*.*.{kind}.{key}", 1, &a));
    CHECK(a.scope.len == 12 && memcmp(a.scope.ptr, "T_WIRE_RULES", 12) == 0);
    CHECK(a.kind.len == 1 && a.kind.ptr[0] == 'k' && a.key.len == 4 && memcmp(a.key.ptr, "same", 4) == 0);
    CHECK(!nt_template_event(&x, "wr.q.{kind}.{key}", 1, &a));
    CASE(NULL);
    nt_teardown(&x, true);
}

/* An event appended with no duplicate check keeps its id in Opstate-Id
   (no Nats-Msg-Id, so the server does not dedup it); a subject template
   that cannot map a subject is refused when the log opens. */
TEST(nats_wire, id_without_dedup_and_bad_templates)
{
    static const char *const bad[] = {"", "a..{key}", "{key}.x", "{scope}.{scope}.{key}", "{kind}.{kind}", ".{key}"};
    nt_ctx x;
    opstate_event ev = nt_ev("s", "k", "nodedup", OPSTATE_OP_PUT, "v"), back;
    uint8_t enc[256];
    size_t n = 0, i;
    opstate_append_result ar;
    opstate_nats_log_config lc;
    opstate_nats_log *lg = NULL;
    opstate_error err;
    natsMsg *m = NULL;
    const char *h = NULL;
    char id[OPSTATE_ID_TEXT_LEN + 1];
    REQUIRE(nt_setup(&x, nt_url(), "T_WIRE_NODEDUP", "wn", 0, 0) == 0);
    REQUIRE(opstate_event_encode(&ev, enc, sizeof enc, &n, NULL) == OPSTATE_OK);
    REQUIRE(x.log.append(x.log.user, str("wn.s.k.nodedup"), by(enc, n), NULL, &ar, NULL) == OPSTATE_OK);
    REQUIRE(js_GetMsg(&m, opstate_nats_jetstream(x.n), "T_WIRE_NODEDUP", ar.seq, NULL, NULL) == NATS_OK);
    opstate_id_to_text(&ev.id, id);
    id[OPSTATE_ID_TEXT_LEN] = '\0';
    CHECK(natsMsgHeader_Get(m, "Opstate-Id", &h) == NATS_OK && h && strcmp(h, id) == 0);
    CHECK(natsMsgHeader_Get(m, "Nats-Msg-Id", &h) != NATS_OK);
    natsMsg_Destroy(m);
    REQUIRE(nt_read_event(&x, ar.seq, &back));
    CHECK(opstate_id_equal(&back.id, &ev.id));
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&lc, 0, sizeof lc);
        lc.stream = "T_WIRE_NODEDUP";
        lc.subject_template = bad[i];
        CHECK(opstate_nats_log_open(x.n, &lc, &lg, &err) == OPSTATE_INVALID_ARGUMENT);
        CHECK(lg == NULL);
    }
    nt_teardown(&x, true);
}

/* opstate's own subjects are read from their end, whatever the prefix's
   length and the template: scope, kind and key (unescaped), or scope and
   kind alone for an event without a key (Opstate-Keyless). */
TEST(nats_wire, own_subjects_any_prefix)
{
    nt_ctx x;
    opstate_event keyed = nt_ev("site1", "host", "10.0.0.1", OPSTATE_OP_PUT, "up"), keyless, back;
    opstate_append_result a1, a2;
    const char *h = NULL;
    natsMsg *m = NULL;
    keyless = nt_ev("site1", "config", NULL, OPSTATE_OP_PUT, "global");
    REQUIRE(nt_setup(&x, nt_url(), "T_WIRE_OWN", "acme.ops", 0, 0) == 0);
    REQUIRE(opstate_publish(&x.log, str("acme.ops"), &keyed, NULL, NULL, &a1, NULL) == OPSTATE_OK);
    REQUIRE(opstate_publish(&x.log, str("acme.ops"), &keyless, NULL, NULL, &a2, NULL) == OPSTATE_OK);
    CASE("a two-token prefix: scope, kind and the dotted key come back");
    REQUIRE(nt_read_event(&x, a1.seq, &back));
    CHECK(back.scope.len == 5 && memcmp(back.scope.ptr, "site1", 5) == 0);
    CHECK(back.kind.len == 4 && memcmp(back.kind.ptr, "host", 4) == 0);
    CHECK(back.key.len == 8 && memcmp(back.key.ptr, "10.0.0.1", 8) == 0);
    CASE("no key: the subject ends at the kind, marked Opstate-Keyless");
    REQUIRE(js_GetMsg(&m, opstate_nats_jetstream(x.n), "T_WIRE_OWN", a2.seq, NULL, NULL) == NATS_OK);
    CHECK_STR(natsMsg_GetSubject(m), "acme.ops.site1.config");
    CHECK(natsMsgHeader_Get(m, "Opstate-Keyless", &h) == NATS_OK);
    natsMsg_Destroy(m);
    REQUIRE(nt_read_event(&x, a2.seq, &back));
    CHECK(back.scope.len == 5 && memcmp(back.scope.ptr, "site1", 5) == 0);
    CHECK(back.kind.len == 6 && memcmp(back.kind.ptr, "config", 6) == 0);
    CHECK(back.key.len == 0);
    CASE(NULL);
    nt_teardown(&x, true);
}
