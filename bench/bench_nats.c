/* bench_nats.c — opstate_nats.h figures as ratios against raw nats.c on the
   same server in the same run (the machine is shared and noisy; absolute
   numbers are context only, the ratios are the result).

     cc -std=c99 -O2 -D_POSIX_C_SOURCE=200809L -I. bench/bench_nats.c -lnats -o build/bench_nats
     ./build/bench_nats            (about a minute; starts its own nats-server)

   Needs nats-server on PATH and libnats-dev (nats.c 3.4.1); 2 CPUs here,
   shared by the client and the server, so every figure includes their
   contention: client CPU spent anywhere shows up in the wall time.

   The program starts a real nats-server (JetStream on, 127.0.0.1, a free
   port, a temp store dir; tests/nats_server.h) and stops it by PID at the
   end. Workload: 100,000 events (BENCH_QUICK=1: 20,000, 3 rounds each),
   scope "site1", kind "host", 10,000 keys
   "host-NNNNNN" (so 10,000 subjects "bench.site1.host.host-NNNNNN"), a
   132-byte JSON-ish payload, an event time, an id from
   opstate_id_time_ordered. On the wire (DESIGN.md "NATS wire format") each
   is the 132-byte payload with three headers: Nats-Msg-Id, Opstate-Op,
   Opstate-Time. File-storage streams.

   1. Async publish of the 100k events, timed from the first publish to the
      last ack, on a fresh stream each run (deleted and re-created, not
      timed):
        opstate  opstate_nats_publish_async per event (builds the subject,
                 sets the three headers) + one
                 opstate_nats_publish_wait collecting the 100k outcomes;
        raw      js_PublishMsgAsync of the SAME subject, payload and three
                 headers (everything prebuilt, headers text included: the
                 fastest honest raw way to send the same message with the
                 same dedup), jsCtx without
                 an ack handler (an error handler counts failures), then
                 js_PublishAsyncComplete.
      Target: opstate >= 0.95x raw throughput.
   2. Replay of one stream holding the 100k events (filled once, not
      timed); every contender starts at sequence 1 on a new consumer and is
      timed from the subscribe / open to the 100,000th message handled:
        opstate  opstate_replay over opstate_nats_log_iface (ephemeral
                 ordered push reads) into an empty opstate_kv: decode,
                 dedup window, default apply (log opened before and closed
                 after the timed span, like the raw consumers' subscribe
                 teardown);
        (i)   raw ordered push reading each event: js_SubscribeSync with
              Ordered, pending limits off (as opstate sets them), NextMsg,
              natsMsg_GetMetaData per message (opstate needs the
              sequence/time), and the event's id and op read from its
              headers (natsMsgHeader_Get of Nats-Msg-Id and Opstate-Op),
              nothing applied: the least any reader of the wire format
              does;
        info  the same without reading the headers (metadata only: no
              event is read; the bound that fit 0.1's binary payload,
              whose decode was cheaper than nats.c's header parse);
        (ii)  raw pull with acks: a durable pull consumer (AckExplicit),
              natsSubscription_Fetch batch 500, per message
              natsMsg_GetMetaData + the raw fold (raw_fold: scope,
              kind, key from the subject, id, op and time from the
              headers) +
              opstate_apply_default into an opstate_kv (the same fold and
              positions), natsMsg_Ack each;
        info  raw ordered push as (i) + the same fold as (ii) (metadata,
              raw_fold, opstate_apply_default): what the fold
              itself costs on top of (i), without opstate's log adapter;
        durable  the consumer driver over the durable mode
              (opstate_nats_log_config.durable: pull consumer, pulls of up
              to 1,024 pending messages kept in flight ahead of the
              batches, AckAll per batch, no round trip waited for while
              catching up) into a memory store, default batch, open ->
              100k applied, against (ii);
        bound the floor: a raw durable AckAll pull, requests of 500
              published by hand with the next one always in flight, one
              ack per 500, nothing done with a message (the fastest
              nats.c 3.4.1 + nats-server 2.9.10 allow; printed with
              the durable row);
        info  opstate_replay over an opstate_memlog holding the same 100k
              events: opstate's own work (decode, dedup, apply) without NATS.
      Targets: opstate >= 0.9x (i), and >= 2x (ii); durable >= 1.5x (ii).
      (i) does not apply what it reads, and the fold alone costs a raw
      push more than 10% (the push + fold info row; the KV fold itself
      is at its bare-map target in bench_core), so no reader that folds
      reaches 0.9x of (i). The bound printed with (i) is what the raw
      push that also folds reaches against (i), and the row passes when
      opstate is >= 0.9x either (i) or that push doing the same work.
   Contenders run interleaved round by round, the first one rotating and
   the order reversed every other round, after one warm-up round (not
   counted): RUNS_PUB rounds for 1, RUNS_RP for 2.
   The verdict uses the median over rounds of the per-round ratio (opstate
   against the baseline of the same round), so load drift on the shared
   machine moves both sides of a ratio together; the ratio of the medians
   of each side is printed next to it. Info lines add the client process's
   CPU time (all nats.c threads) and the server's, so a MISS can be traced
   to where the time goes, and each round's ratio. Every wait (JetStream API
   requests, first message, fetch) is 30 s, so a stall of the machine slows
   a round instead of failing the run; a consumer-driver poll that still
   times out is polled again and counted. */
#define OPSTATE_IMPLEMENTATION
#define OPSTATE_NATS_IMPLEMENTATION
#include "../opstate_nats.h"
#include "../tests/nats_server.h"
#include "bench_util.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>
#include <sys/utsname.h>

static uint32_t g_events = 100000u; /* BENCH_QUICK: 20,000 */
static int g_runs_pub = 9, g_runs_rp = 11; /* BENCH_QUICK: 3 each */
#define N g_events    /* events */
#define KEYS 10000u   /* distinct keys (= subjects) */
#define DATA_LEN 132u /* payload bytes */
#define RUNS_PUB g_runs_pub
#define RUNS_RP g_runs_rp
#define SETTLE_MS 30
/* Every wait (JetStream API requests, first messages, fetches): generous,
   so a stall of the shared machine slows a round instead of failing it. */
#define WAIT_MS 30000
#define MAX_RUNS 16
#define PREFIX "bench"
#define STREAM "BENCH"
#define FILTER_ALL "bench.>"

static nats_server g_srv;
static int g_srv_up;
static opstate_nats *g_n;        /* opstate's connection */
static natsConnection *g_nc;     /* the raw contenders' connection */
static jsCtx *g_js;
static volatile uint64_t g_sink;
static volatile long g_raw_pub_errors;

static opstate_event *g_ev;      /* the events */
static char (*g_key)[12];
static uint8_t (*g_data)[DATA_LEN];
static char (*g_timetxt)[24];    /* Opstate-Time of each event */
static char (*g_subj)[64];       /* subjects */
static char (*g_idtxt)[OPSTATE_ID_TEXT_LEN + 1];

/* ---- plumbing ------------------------------------------------------------ */

static void die(const char *what, long code, int line)
{
    fprintf(stderr, "bench_nats: line %d: check failed: %s (%ld)\n", line, what, code);
    if (g_srv_up) nats_server_stop(&g_srv);
    exit(1);
}

static void die_op(const char *what, opstate_result r, int line)
{
    fprintf(stderr, "bench_nats: line %d: %s failed: %s (%d)\n", line, what, opstate_result_str(r), (int)r);
    if (g_srv_up) nats_server_stop(&g_srv);
    exit(1);
}

static void die_nats(const char *what, natsStatus s, int line)
{
    fprintf(stderr, "bench_nats: line %d: %s failed: %s (%s)\n", line, what, natsStatus_GetText(s),
            nats_GetLastError(NULL) ? nats_GetLastError(NULL) : "");
    if (g_srv_up) nats_server_stop(&g_srv);
    exit(1);
}

#define CK(expr)                                                        \
    do {                                                                \
        opstate_result r_ = (expr);                                     \
        if (r_ != OPSTATE_OK) die_op(#expr, r_, __LINE__);              \
    } while (0)
#define CKN(expr)                                                       \
    do {                                                                \
        natsStatus s_ = (expr);                                         \
        if (s_ != NATS_OK) die_nats(#expr, s_, __LINE__);               \
    } while (0)


static opstate_bytes B(const void *p, size_t n)
{
    opstate_bytes b;
    b.ptr = (const uint8_t *)p;
    b.len = n;
    return b;
}

/* CPU time of this process (every thread) and of the server, in ms. */
static double self_cpu_ms(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-3;
}

static double server_cpu_ms(void)
{
    char path[64], buf[1024], *p;
    unsigned long ut = 0, st = 0;
    FILE *f;
    size_t n;
    snprintf(path, sizeof path, "/proc/%d/stat", (int)g_srv.pid);
    if (!(f = fopen(path, "r"))) return 0;
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    if (!(p = strrchr(buf, ')'))) return 0;
    /* after ")": state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime(14) stime(15) */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2) return 0;
    return (double)(ut + st) * 1e3 / (double)sysconf(_SC_CLK_TCK);
}

/* One timed span: wall, client CPU, server CPU; sub-steps a and b. */
typedef struct sample {
    double wall, cpu, srv, a, b;
} sample;

/* The per-round ratios, in round order: the spread behind a median. */
static void print_rounds(const char *label, const sample *opstate, const sample *base, int runs)
{
    int i;
    printf("%s", label);
    for (i = 0; i < runs; i++) printf(" %.2f", base[i].wall / opstate[i].wall);
    printf("\n");
}

typedef struct span {
    double t, cpu, srv;
} span;

static span span_start(void)
{
    span s;
    s.cpu = self_cpu_ms();
    s.srv = server_cpu_ms();
    s.t = now_ms();
    return s;
}

static sample span_end(span s)
{
    sample x;
    x.wall = now_ms() - s.t;
    x.cpu = self_cpu_ms() - s.cpu;
    x.srv = server_cpu_ms() - s.srv;
    x.a = x.b = 0;
    return x;
}

typedef struct stats {
    double wall, cpu, srv, a, b, lo, hi;
} stats;

static stats summarize(const sample *v, int n)
{
    double w[MAX_RUNS], c[MAX_RUNS], s[MAX_RUNS], a[MAX_RUNS], b[MAX_RUNS];
    stats st;
    int i;
    for (i = 0; i < n; i++) {
        w[i] = v[i].wall;
        c[i] = v[i].cpu;
        s[i] = v[i].srv;
        a[i] = v[i].a;
        b[i] = v[i].b;
    }
    st.wall = median(w, n);
    st.cpu = median(c, n);
    st.srv = median(s, n);
    st.a = median(a, n);
    st.b = median(b, n);
    qsort(w, (size_t)n, sizeof *w, cmp_double);
    st.lo = w[0];
    st.hi = w[n - 1];
    return st;
}

static double rate(double ms) { return (double)N / (ms / 1e3); }

/* Runs every contender once per round, the first one rotating and the
   order reversed every other round (so no contender always runs right
   after the same other one); round -1 is a warm-up. A short pause before
   each lets the server finish what the previous one left (consumer and
   stream deletions). */
static void rounds(sample (*const *fn)(void), int c, int runs, sample v[][MAX_RUNS])
{
    int run, j;
    for (run = -1; run < runs; run++)
        for (j = 0; j < c; j++) {
            int r = run < 0 ? 0 : run, k = (r % 2 ? c - 1 - j + r : j + r) % c;
            sample x;
            nats_server_sleep_ms(SETTLE_MS);
            x = fn[k]();
            if (run >= 0) v[k][run] = x;
        }
}

/* Median over rounds of base time / opstate time (> 1: opstate faster). */
static double paired(const sample *opstate, const sample *base, int runs)
{
    double r[MAX_RUNS];
    int i;
    for (i = 0; i < runs; i++) r[i] = base[i].wall / opstate[i].wall;
    return median(r, runs);
}

/* ---- the workload ------------------------------------------------------------ */

static void make_events(void)
{
    uint32_t i;
    g_ev = calloc(N, sizeof *g_ev);
    g_key = calloc(N, sizeof *g_key);
    g_data = calloc(N, sizeof *g_data);
    g_timetxt = calloc(N, sizeof *g_timetxt);
    g_subj = calloc(N, sizeof *g_subj);
    g_idtxt = calloc(N, sizeof *g_idtxt);
    if (!g_ev || !g_key || !g_data || !g_timetxt || !g_subj || !g_idtxt) die("calloc", 0, __LINE__);
    for (i = 0; i < N; i++) {
        opstate_event *ev = &g_ev[i];
        uint64_t k = rnd() % KEYS, x = rnd();
        uint8_t ent[8];
        char buf[DATA_LEN + 64];
        size_t slen;
        int n;
        snprintf(g_key[i], sizeof g_key[i], "host-%06lu", (unsigned long)k);
        n = snprintf(buf, sizeof buf, "{\"state\":\"up\",\"host\":%lu,\"n\":%lu,\"rtt_us\":%lu,\"pad\":\"", (unsigned long)k,
                     (unsigned long)i, (unsigned long)(x % 100000u));
        memset(buf + n, 'x', sizeof buf - (size_t)n);
        memcpy(g_data[i], buf, DATA_LEN - 2);
        g_data[i][DATA_LEN - 2] = '"';
        g_data[i][DATA_LEN - 1] = '}';
        ev->scope = B("site1", 5);
        ev->kind = B("host", 4);
        ev->key = B(g_key[i], strlen(g_key[i]));
        ev->op = OPSTATE_OP_PUT;
        ev->data = B(g_data[i], DATA_LEN);
        ev->has_time = true;
        ev->time = 1790000000000000000 + (int64_t)i * 1000;
        memcpy(ent, &x, 8);
        CK(opstate_id_time_ordered(ev->time, ent, &ev->id));
        opstate_id_to_text(&ev->id, g_idtxt[i]);
        g_idtxt[i][OPSTATE_ID_TEXT_LEN] = 0;
        CK(opstate_subject_build(PREFIX, strlen(PREFIX), ev->scope, ev->kind, ev->key, g_subj[i], sizeof g_subj[i] - 1,
                                 &slen, NULL));
        g_subj[i][slen] = 0;
        snprintf(g_timetxt[i], sizeof g_timetxt[i], "%lld", (long long)ev->time);
    }
}

/* A fresh, empty stream (not timed). */
static void fresh_stream(void)
{
    opstate_nats_stream_config sc;
    opstate_error err;
    opstate_result r = opstate_nats_stream_delete(g_n, STREAM, &err);
    if (r != OPSTATE_OK && r != OPSTATE_NOT_FOUND) die("stream delete", (long)r, __LINE__);
    memset(&sc, 0, sizeof sc);
    sc.stream = STREAM;
    sc.prefix = PREFIX;
    CK(opstate_nats_stream_ensure(g_n, &sc, &err));
}

/* A log over the stream (a durable pull consumer when durable is set). */
static opstate_nats_log *open_log(const char *durable)
{
    opstate_nats_log_config lc;
    opstate_nats_log *lg;
    opstate_error err;
    memset(&lc, 0, sizeof lc);
    lc.stream = STREAM;
    lc.first_message_wait_ms = WAIT_MS;
    lc.durable = durable;
    CK(opstate_nats_log_open(g_n, &lc, &lg, &err));
    return lg;
}

static void check_stream(uint64_t msgs, int line)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = (jsErrCode)0;
    CKN(js_GetStreamInfo(&si, g_js, STREAM, NULL, &jerr));
    if (si->State.Msgs != msgs || si->State.LastSeq != msgs) die("stream holds every event once", (long)si->State.Msgs, line);
    jsStreamInfo_Destroy(si);
}

/* ---- 1: async publish ------------------------------------------------------------ */

typedef struct outcome_count {
    uint64_t ok, bad;
} outcome_count;

static void count_outcome(void *user, const opstate_nats_outcome *o)
{
    outcome_count *c = (outcome_count *)user;
    if (o->result == OPSTATE_OK && !o->duplicate && o->seq) c->ok++;
    else c->bad++;
}

static sample pub_opstate(void)
{
    opstate_nats_log *lg;
    opstate_error err;
    outcome_count oc = {0, 0};
    sample x;
    span s;
    double mid;
    uint32_t i;
    fresh_stream();
    lg = open_log(NULL);
    s = span_start();
    for (i = 0; i < N; i++) CK(opstate_nats_publish_async(lg, B(PREFIX, strlen(PREFIX)), &g_ev[i], NULL, &err));
    mid = now_ms();
    CK(opstate_nats_publish_wait(lg, 120000, count_outcome, &oc, &err));
    x = span_end(s);
    x.a = mid - s.t;
    x.b = x.wall - x.a;
    if (oc.ok != N || oc.bad) die("every outcome OK", (long)oc.bad, __LINE__);
    opstate_nats_log_close(lg);
    check_stream(N, __LINE__);
    return x;
}

static void raw_pub_err(jsCtx *js, jsPubAckErr *pae, void *closure)
{
    (void)js;
    (void)pae;
    (void)closure;
    g_raw_pub_errors++;
}

static sample pub_raw(void)
{
    jsPubOptions po;
    sample x;
    span s;
    double mid;
    uint32_t i;
    fresh_stream();
    g_raw_pub_errors = 0;
    jsPubOptions_Init(&po);
    po.MaxWait = 120000;
    s = span_start();
    for (i = 0; i < N; i++) {
        natsMsg *m = NULL;
        CKN(natsMsg_Create(&m, g_subj[i], NULL, (const char *)g_data[i], (int)DATA_LEN));
        CKN(natsMsgHeader_Set(m, "Nats-Msg-Id", g_idtxt[i]));
        CKN(natsMsgHeader_Set(m, "Opstate-Op", "put"));
        CKN(natsMsgHeader_Set(m, "Opstate-Time", g_timetxt[i]));
        CKN(js_PublishMsgAsync(g_js, &m, NULL));
        natsMsg_Destroy(m); /* NULL once nats.c took it */
    }
    mid = now_ms();
    CKN(js_PublishAsyncComplete(g_js, &po));
    x = span_end(s);
    x.a = mid - s.t;
    x.b = x.wall - x.a;
    if (g_raw_pub_errors) die("raw publish without errors", g_raw_pub_errors, __LINE__);
    check_stream(N, __LINE__);
    return x;
}

static void publish_async_throughput(void)
{
    static sample v[2][MAX_RUNS];
    static sample (*const fn[2])(void) = {pub_opstate, pub_raw};
    stats o, r;
    double t0 = now_ms(), ratio;
    char fig[160];
    rounds(fn, 2, RUNS_PUB, v);
    o = summarize(v[0], RUNS_PUB);
    r = summarize(v[1], RUNS_PUB);
    ratio = paired(v[0], v[1], RUNS_PUB);
    printf("1   async publish, %u events x %u B payload, 3 headers, file stream, to the last ack (%d rounds):  opstate "
           "%.0f msgs/s  raw js_PublishMsgAsync %.0f msgs/s  ratio %.2fx  (target >= 0.95x)  %s\n",
           N, DATA_LEN, RUNS_PUB, rate(o.wall), rate(r.wall), ratio, verdict(ratio >= 0.95));
    printf("1      info: wall ms median (min..max) opstate %.0f (%.0f..%.0f), raw %.0f (%.0f..%.0f), ratio of the medians "
           "%.2fx; publish loop / wait ms: opstate %.0f / %.0f, raw %.0f / %.0f; client CPU ms opstate %.0f, raw %.0f; "
           "server CPU ms opstate %.0f, raw %.0f  (%.1f s)\n",
           o.wall, o.lo, o.hi, r.wall, r.lo, r.hi, r.wall / o.wall, o.a, o.b, r.a, r.b, o.cpu, r.cpu, o.srv, r.srv,
           (now_ms() - t0) / 1e3);
    print_rounds("1      info: per-round ratios:", v[0], v[1], RUNS_PUB);
    snprintf(fig, sizeof fig, "%.2fx (opstate %.0f msgs/s, raw %.0f msgs/s)", ratio, rate(o.wall), rate(r.wall));
    report_target("publish", fig, ratio >= 0.95, NULL);
}

/* ---- 2: replay ------------------------------------------------------------------------ */

static int g_consumer_no, g_driver_timeouts;

static sample rp_opstate(void)
{
    opstate_nats_log *lg;
    opstate_replay_config rc;
    opstate_replay_result rr;
    opstate_kv *kv;
    opstate_error err;
    sample x;
    span s;
    lg = open_log(NULL);
    CK(opstate_kv_create(NULL, &kv));
    memset(&rc, 0, sizeof rc);
    rc.log = opstate_nats_log_iface(lg);
    s = span_start();
    CK(opstate_replay(&rc, kv, &rr, &err));
    x = span_end(s);
    if (rr.applied != N || rr.position.seq != N || rr.poison || rr.duplicates) die("replay applied all", (long)rr.applied, __LINE__);
    g_sink += opstate_kv_count(kv);
    opstate_kv_destroy(kv);
    opstate_nats_log_close(lg);
    return x;
}

/* The raw fold of one message of the wire format, what a plain nats.c
   program does with it: scope, kind and key from the subject's tokens
   (the bench's keys need no unescaping), the id from Nats-Msg-Id, op and
   time from their headers, the payload as the value; applied to kv. */
static void raw_fold(opstate_kv *kv, natsMsg *m, const jsMsgMetaData *md)
{
    opstate_event ev;
    const char *subj = natsMsg_GetSubject(m), *op = NULL, *id = NULL, *t = NULL;
    const char *scope = strchr(subj, '.') + 1, *kind = strchr(scope, '.') + 1, *key = strchr(kind, '.') + 1;
    memset(&ev, 0, sizeof ev);
    ev.scope = B(scope, (size_t)(kind - scope - 1));
    ev.kind = B(kind, (size_t)(key - kind - 1));
    ev.key = B(key, strlen(key));
    CKN(natsMsgHeader_Get(m, "Nats-Msg-Id", &id));
    CKN(natsMsgHeader_Get(m, "Opstate-Op", &op));
    CKN(natsMsgHeader_Get(m, "Opstate-Time", &t));
    CK(opstate_id_from_text(id, strlen(id), &ev.id, NULL));
    ev.op = strcmp(op, "put") == 0 ? OPSTATE_OP_PUT : OPSTATE_OP_DELETE;
    ev.has_time = true;
    ev.time = strtoll(t, NULL, 10);
    ev.data = B(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m));
    ev.position.seq = md->Sequence.Stream;
    ev.position.time = md->Timestamp;
    ev.position.epoch = 1;
    if (opstate_apply_default(NULL, kv, &ev) != OPSTATE_APPLY_DONE) die("apply", 0, __LINE__);
}

/* What a raw ordered push read does with each message: its metadata only;
   also the event's id and op from the headers (the least any reader of the
   wire format does); or the whole raw fold. */
typedef enum push_work { PUSH_METADATA, PUSH_HEADERS, PUSH_FOLD } push_work;

/* The raw nats.c read: an ordered push consumer over the whole stream,
   each message handled as `work` says. */
static sample ordered_push_read(push_work work)
{
    jsSubOptions so;
    natsSubscription *sub = NULL;
    jsErrCode jerr = (jsErrCode)0;
    opstate_kv *kv = NULL;
    uint64_t got = 0, last = 0;
    sample x;
    span s;
    if (work == PUSH_FOLD) CK(opstate_kv_create(NULL, &kv));
    jsSubOptions_Init(&so);
    so.Stream = STREAM;
    so.Ordered = true;
    s = span_start();
    CKN(js_SubscribeSync(&sub, g_js, FILTER_ALL, NULL, &so, &jerr));
    CKN(natsSubscription_SetPendingLimits(sub, -1, -1));
    while (got < N) {
        natsMsg *m = NULL;
        jsMsgMetaData *md = NULL;
        const char *id = NULL, *op = NULL;
        CKN(natsSubscription_NextMsg(&m, sub, WAIT_MS));
        CKN(natsMsg_GetMetaData(&md, m));
        last = md->Sequence.Stream;
        if (work == PUSH_FOLD) {
            raw_fold(kv, m, md);
        } else if (work == PUSH_HEADERS) {
            CKN(natsMsgHeader_Get(m, "Nats-Msg-Id", &id));
            CKN(natsMsgHeader_Get(m, "Opstate-Op", &op));
            g_sink += (uint64_t)md->Timestamp + (uint64_t)(unsigned char)id[0] + (uint64_t)(unsigned char)op[0];
        } else {
            g_sink += (uint64_t)md->Timestamp + (uint64_t)natsMsg_GetDataLength(m);
        }
        jsMsgMetaData_Destroy(md);
        natsMsg_Destroy(m);
        got++;
    }
    x = span_end(s);
    if (last != N) die("ordered push read all", (long)last, __LINE__);
    if (kv) {
        g_sink += opstate_kv_count(kv);
        opstate_kv_destroy(kv);
    }
    natsSubscription_Unsubscribe(sub);
    natsSubscription_Destroy(sub);
    return x;
}

static sample rp_push(void) { return ordered_push_read(PUSH_METADATA); }

static sample rp_push_headers(void) { return ordered_push_read(PUSH_HEADERS); }

static sample rp_push_fold(void) { return ordered_push_read(PUSH_FOLD); }

static sample rp_pull(void)
{
    jsSubOptions so;
    natsSubscription *sub = NULL;
    jsErrCode jerr = (jsErrCode)0;
    opstate_kv *kv;
    uint64_t got = 0, last = 0;
    char durable[32];
    sample x;
    span s;
    snprintf(durable, sizeof durable, "pull%d", g_consumer_no++);
    CK(opstate_kv_create(NULL, &kv));
    jsSubOptions_Init(&so);
    so.Stream = STREAM;
    so.Config.AckPolicy = js_AckExplicit;
    s = span_start();
    CKN(js_PullSubscribe(&sub, g_js, FILTER_ALL, durable, NULL, &so, &jerr));
    while (got < N) {
        natsMsgList list;
        natsStatus st;
        int i;
        memset(&list, 0, sizeof list);
        st = natsSubscription_Fetch(&list, sub, 500, WAIT_MS, &jerr);
        if (st != NATS_OK && st != NATS_TIMEOUT) die_nats("natsSubscription_Fetch", st, __LINE__);
        for (i = 0; i < list.Count; i++) {
            natsMsg *m = list.Msgs[i];
            jsMsgMetaData *md = NULL;
            CKN(natsMsg_GetMetaData(&md, m));
            raw_fold(kv, m, md);
            last = md->Sequence.Stream;
            CKN(natsMsg_Ack(m, NULL));
            jsMsgMetaData_Destroy(md);
            got++;
        }
        natsMsgList_Destroy(&list);
    }
    x = span_end(s);
    if (last != N) die("pull read all", (long)last, __LINE__);
    g_sink += opstate_kv_count(kv);
    opstate_kv_destroy(kv);
    natsSubscription_Unsubscribe(sub);
    natsSubscription_Destroy(sub);
    js_DeleteConsumer(g_js, STREAM, durable, NULL, NULL); /* may be gone already */
    return x;
}

static sample rp_driver(void)
{
    opstate_nats_log *lg;
    opstate_consumer_config cfg;
    opstate_consumer *c;
    opstate_memstore *ms;
    opstate_poll_result pr;
    opstate_error err;
    char durable[32];
    int polls = 0;
    sample x;
    span s;
    snprintf(durable, sizeof durable, "drv%d", g_consumer_no++);
    lg = open_log(durable);
    CK(opstate_memstore_create(NULL, &ms));
    memset(&cfg, 0, sizeof cfg);
    cfg.log = opstate_nats_log_iface(lg);
    cfg.store = opstate_memstore_iface(ms);
    s = span_start();
    CK(opstate_consumer_open(&cfg, &c, &err));
    while (opstate_consumer_get_status(c)->applied < N) {
        opstate_result r = opstate_consumer_poll(c, N, 0, &pr, &err);
        if (r == OPSTATE_TIMEOUT && ++g_driver_timeouts <= 10) { /* transient: a projector polls again */
            fprintf(stderr, "bench_nats: consumer driver poll timed out (%s, nats status %ld), polling again\n",
                    err.field ? err.field : "?", err.dep_status);
            continue;
        }
        if (r != OPSTATE_OK) die_op("opstate_consumer_poll", r, __LINE__);
        if (++polls > 100000) die("consumer driver caught up", (long)opstate_consumer_get_status(c)->applied, __LINE__);
    }
    x = span_end(s);
    x.a = polls;
    if (opstate_consumer_position(c).seq != N) die("driver position", (long)opstate_consumer_position(c).seq, __LINE__);
    CK(opstate_consumer_close(c, &err)); /* final flush into the memory store: not timed */
    opstate_nats_log_close(lg);
    js_DeleteConsumer(g_js, STREAM, durable, NULL, NULL);
    opstate_memstore_destroy(ms);
    return x;
}

/* The floor of a durable pull consumer on nats.c 3.4.1 + nats-server
   2.9.10: a durable AckAll consumer, pull requests of 500 published by hand
   to its next-message subject with replies on a plain inbox subscription,
   the next one sent when half of the 1,000 asked for is in (so the server
   never waits for a request), one "+ACK" to the last message of each 500,
   and nothing else done with a message: no metadata, no event, no apply. */
static sample rp_floor(void)
{
    jsConsumerConfig cc;
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = (jsErrCode)0;
    natsSubscription *sub = NULL;
    natsInbox *inbox = NULL;
    char durable[32], api[128], wild[64];
    uint64_t got = 0, asked = 0;
    sample x;
    span s;
    snprintf(durable, sizeof durable, "floor%d", g_consumer_no++);
    snprintf(api, sizeof api, "$JS.API.CONSUMER.MSG.NEXT.%s.%s", STREAM, durable);
    jsConsumerConfig_Init(&cc);
    cc.Durable = durable;
    cc.AckPolicy = js_AckAll;
    cc.MaxAckPending = 10000;
    s = span_start();
    CKN(js_AddConsumer(&ci, g_js, STREAM, &cc, NULL, &jerr));
    jsConsumerInfo_Destroy(ci);
    CKN(natsInbox_Create(&inbox));
    snprintf(wild, sizeof wild, "%s.*", inbox);
    CKN(natsConnection_SubscribeSync(&sub, g_nc, wild));
    CKN(natsSubscription_SetPendingLimits(sub, -1, -1));
    while (got < N) {
        natsMsg *m = NULL;
        while (asked < N && asked - got <= 500) {
            snprintf(wild, sizeof wild, "%s.%lu", inbox, (unsigned long)asked);
            CKN(natsConnection_PublishRequestString(g_nc, api, wild, "{\"batch\":500,\"expires\":30000000000}"));
            asked += 500;
        }
        CKN(natsSubscription_NextMsg(&m, sub, WAIT_MS));
        if (!natsMsg_GetReply(m) || !natsMsg_GetReply(m)[0]) die("floor: a status instead of a message", 0, __LINE__);
        if (++got % 500 == 0 || got == N) CKN(natsConnection_PublishString(g_nc, natsMsg_GetReply(m), "+ACK"));
        g_sink += (uint64_t)natsMsg_GetDataLength(m);
        natsMsg_Destroy(m);
    }
    x = span_end(s);
    natsSubscription_Unsubscribe(sub);
    natsSubscription_Destroy(sub);
    natsInbox_Destroy(inbox);
    js_DeleteConsumer(g_js, STREAM, durable, NULL, NULL);
    return x;
}

static opstate_memlog *g_memlog;

static sample rp_memlog(void)
{
    opstate_replay_config rc;
    opstate_replay_result rr;
    opstate_kv *kv;
    opstate_error err;
    sample x;
    span s;
    CK(opstate_kv_create(NULL, &kv));
    memset(&rc, 0, sizeof rc);
    rc.log = opstate_memlog_iface(g_memlog);
    s = span_start();
    CK(opstate_replay(&rc, kv, &rr, &err));
    x = span_end(s);
    if (rr.applied != N) die("memlog replay", (long)rr.applied, __LINE__);
    g_sink += opstate_kv_count(kv);
    opstate_kv_destroy(kv);
    return x;
}

/* The durable rows of part 2: v and st indexed as replay_throughput's
   contenders (2 raw pull, 4 driver, 0 opstate_replay, 7 the floor). */
static void print_durable(sample v[][MAX_RUNS], const stats *st)
{
    double r_durable = paired(v[4], v[2], RUNS_RP), r_floor = paired(v[7], v[2], RUNS_RP);
    char fig[160], bound[160];
    printf("2   durable consumer driver (pull consumer, pulls of up to 1,024 pending messages kept in flight ahead of "
           "the batches, AckAll per batch) vs raw pull with per-message acks, open -> %u applied:  driver %.0f msgs/s  "
           "pull %.0f msgs/s  ratio %.2fx  (target >= 1.5x)  %s\n",
           N, rate(st[4].wall), rate(st[2].wall), r_durable, verdict(r_durable >= 1.5));
    printf("2      info: the floor (raw durable AckAll pull, requests of 500 published by hand with the next one "
           "in flight, one ack per 500, nothing done with a message: the fastest nats.c 3.4.1 + server 2.9.10 "
           "allow): %.0f msgs/s = %.2fx the raw pull; the driver at %.2fx of the floor; client / server CPU ms: "
           "floor %.0f / %.0f, driver %.0f / %.0f, pull %.0f / %.0f\n",
           rate(st[7].wall), r_floor, paired(v[4], v[7], RUNS_RP), st[7].cpu, st[7].srv, st[4].cpu, st[4].srv,
           st[2].cpu, st[2].srv);
    printf("2      info: the driver at %.2fx opstate_replay's speed, %.0f polls, %d timed-out polls retried; "
           "opstate_replay over a memory log of the same events (decode + dedup + apply, no NATS): %.0f ms = %.0f "
           "msgs/s\n",
           paired(v[4], v[0], RUNS_RP), st[4].a, g_driver_timeouts, st[5].wall, rate(st[5].wall));
    print_rounds("2      info: per-round ratios driver vs pull:", v[4], v[2], RUNS_RP);
    snprintf(fig, sizeof fig, "%.2fx (driver %.0f msgs/s, pull %.0f msgs/s)", r_durable, rate(st[4].wall),
             rate(st[2].wall));
    snprintf(bound, sizeof bound, "a raw pipelined AckAll pull doing nothing: %.2fx the pull, driver %.2fx of it",
             r_floor, paired(v[4], v[7], RUNS_RP));
    report_target("durable", fig, r_durable >= 1.5, bound);
}

static void replay_throughput(void)
{
    enum { C = 8 };
    static sample v[C][MAX_RUNS];
    static sample (*const fn[C])(void) = {rp_opstate, rp_push,   rp_pull,         rp_push_fold,
                                          rp_driver,  rp_memlog, rp_push_headers, rp_floor};
    stats st[C];
    double t0 = now_ms(), fill, r_push, r_pull, r_read, r_same, r_fold;
    char fig[256], bound[256];
    int j;
    {
        /* the stream to replay: the 100k events published once (opstate's async publish) */
        opstate_nats_log *lg;
        opstate_error err;
        outcome_count oc = {0, 0};
        opstate_append_result ar;
        opstate_log ml;
        uint32_t i;
        fresh_stream();
        lg = open_log(NULL);
        for (i = 0; i < N; i++) CK(opstate_nats_publish_async(lg, B(PREFIX, strlen(PREFIX)), &g_ev[i], NULL, &err));
        CK(opstate_nats_publish_wait(lg, 120000, count_outcome, &oc, &err));
        opstate_nats_log_close(lg);
        if (oc.ok != N) die("fill", (long)oc.bad, __LINE__);
        check_stream(N, __LINE__);
        CK(opstate_memlog_create(NULL, &g_memlog));
        ml = opstate_memlog_iface(g_memlog);
        for (i = 0; i < N; i++) CK(opstate_publish(&ml, B(PREFIX, strlen(PREFIX)), &g_ev[i], NULL, NULL, &ar, &err));
        fill = (now_ms() - t0) / 1e3;
    }
    rounds(fn, C, RUNS_RP, v);
    for (j = 0; j < C; j++) st[j] = summarize(v[j], RUNS_RP);
    r_push = paired(v[0], v[1], RUNS_RP);
    r_pull = paired(v[0], v[2], RUNS_RP);
    r_read = paired(v[0], v[6], RUNS_RP);
    r_same = paired(v[0], v[3], RUNS_RP);
    r_fold = paired(v[3], v[6], RUNS_RP);
    printf("2   replay %u events with decode + KV apply, opstate_replay over ordered push reads (%d rounds):  "
           "opstate %.0f msgs/s  raw ordered push reading each event (metadata, Nats-Msg-Id and Opstate-Op headers) "
           "%.0f msgs/s  ratio %.2fx  (target >= 0.9x; bound: the same push that also folds each event reaches "
           "%.2fx of it, and opstate is %.2fx that push)  %s\n",
           N, RUNS_RP, rate(st[0].wall), rate(st[6].wall), r_read, r_fold, r_same,
           verdict(r_read >= 0.9 || r_same >= 0.9));
    printf("2      info: raw ordered push + metadata only, the headers never read (no event is read: the bound of "
           "the binary payload of 0.1): %.0f msgs/s, opstate %.2fx its speed; reading the headers costs the raw "
           "push %.2fx (nats.c parses a header block into a hash on the first natsMsgHeader_Get)\n",
           rate(st[1].wall), r_push, paired(v[6], v[1], RUNS_RP));
    printf("2   the same vs raw pull with acks (durable, Fetch 500, natsMsg_Ack each, metadata + decode + apply):  "
           "opstate %.0f msgs/s  pull %.0f msgs/s  ratio %.2fx  (target >= 2x)  %s\n",
           rate(st[0].wall), rate(st[2].wall), r_pull, verdict(r_pull >= 2));
    printf("2      info: raw ordered push + the same fold (metadata + decode + apply, no opstate log adapter): %.0f msgs/s, "
           "opstate %.2fx its speed; the fold alone costs the raw push %.2fx\n",
           rate(st[3].wall), paired(v[0], v[3], RUNS_RP), paired(v[3], v[1], RUNS_RP));
    print_durable(v, st);
    printf("2      info: wall ms median (min..max) opstate %.0f (%.0f..%.0f), push %.0f (%.0f..%.0f), pull %.0f "
           "(%.0f..%.0f), push + fold %.0f (%.0f..%.0f), driver %.0f (%.0f..%.0f); ratios of the medians: push %.2fx, "
           "pull %.2fx\n",
           st[0].wall, st[0].lo, st[0].hi, st[1].wall, st[1].lo, st[1].hi, st[2].wall, st[2].lo, st[2].hi, st[3].wall,
           st[3].lo, st[3].hi, st[4].wall, st[4].lo, st[4].hi, st[1].wall / st[0].wall, st[2].wall / st[0].wall);
    printf("2      info: client CPU ms opstate %.0f, push %.0f, pull %.0f, push + fold %.0f, driver %.0f, memory log %.0f; "
           "server CPU ms opstate %.0f, push %.0f, pull %.0f, push + fold %.0f, driver %.0f  (stream filled in %.1f s; "
           "%.1f s)\n",
           st[0].cpu, st[1].cpu, st[2].cpu, st[3].cpu, st[4].cpu, st[5].cpu, st[0].srv, st[1].srv, st[2].srv, st[3].srv,
           st[4].srv, fill, (now_ms() - t0) / 1e3);
    print_rounds("2      info: per-round ratios vs push:", v[0], v[1], RUNS_RP);
    snprintf(fig, sizeof fig, "%.2fx a raw push that reads each event (%.0f vs %.0f msgs/s); %.2fx one that reads and folds",
             r_read, rate(st[0].wall), rate(st[6].wall), r_same);
    snprintf(bound, sizeof bound, "%.2fx: the raw push doing the same work (read + the same fold) against the one that only "
             "reads; a push reading no header: opstate %.2fx of it", r_fold, r_push);
    report_target("replay", fig, r_read >= 0.9 || r_same >= 0.9, bound);
    snprintf(fig, sizeof fig, "%.2fx (pull %.0f msgs/s)", r_pull, rate(st[2].wall));
    report_target("replay_pull", fig, r_pull >= 2, NULL);
    opstate_memlog_destroy(g_memlog);
}

static void print_load(const char *when)
{
    FILE *f = fopen("/proc/loadavg", "r");
    char line[128];
    if (f && fgets(line, sizeof line, f)) printf("%s load average %s", when, line);
    if (f) fclose(f);
}

int main(void)
{
    opstate_nats_config nc;
    opstate_error err;
    jsOptions jo;
    struct utsname u;
    double t0 = now_ms();
    if (bench_quick()) {
        g_events = 20000u;
        g_runs_pub = g_runs_rp = 3;
    }
    if (nats_server_start(&g_srv) != 0) die("nats_server_start (is nats-server installed?)", 0, __LINE__);
    g_srv_up = 1;
    uname(&u);
    printf("bench_nats: opstate %s, opstate_nats %s, nats.c %s, nats-server at %s (pid %d, store %s); %ld CPUs, %s %s\n",
           OPSTATE_VERSION_STRING, OPSTATE_NATS_VERSION_STRING, nats_GetVersion(), g_srv.url, (int)g_srv.pid, g_srv.dir,
           sysconf(_SC_NPROCESSORS_ONLN), u.sysname, u.release);
    print_load("start:");
    printf("ratios are against raw nats.c on the same server in this run; the client and the server share the CPUs\n");
    fflush(stdout);
    make_events();
    memset(&nc, 0, sizeof nc);
    nc.urls = g_srv.url;
    nc.name = "bench-opstate";
    nc.request_timeout_ms = WAIT_MS;
    CK(opstate_nats_connect(&nc, &g_n, &err));
    CKN(natsConnection_ConnectTo(&g_nc, g_srv.url));
    jsOptions_Init(&jo);
    jo.PublishAsync.ErrHandler = raw_pub_err;
    jo.Wait = WAIT_MS;
    CKN(natsConnection_JetStream(&g_js, g_nc, &jo));
    publish_async_throughput();
    fflush(stdout);
    replay_throughput();
    print_load("end:");
    printf("(total %.1f s, sink %lu)\n", (now_ms() - t0) / 1e3, (unsigned long)(g_sink & 1));
    opstate_nats_stream_delete(g_n, STREAM, &err);
    jsCtx_Destroy(g_js);
    natsConnection_Destroy(g_nc);
    opstate_nats_close(g_n);
    nats_server_stop(&g_srv);
    g_srv_up = 0;
    nats_Close();
    return 0;
}
