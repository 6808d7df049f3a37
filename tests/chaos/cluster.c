/* cluster.c — delivery integrity through leader failover on a real
   three-node JetStream cluster (nats-server, 127.0.0.1 only).

     cc -std=c99 -O2 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Wpedantic -Werror -I. \
        tests/chaos/cluster.c -lnats -llmdb -lpthread -o build/cluster_chaos
     ./build/cluster_chaos                 short: 2 rounds, 4 leader kills, < 2 min
     ./build/cluster_chaos --long          >= 50 leader kills, ~10 min
     options: --seed S  --rounds R  --events N  --kills K (per phase)  --min-kills K
              --time-limit SECONDS  --store mem|lmdb  --verbose

   Starts three nats-server processes (tests/nats_cluster.h). Every round
   creates a new R3 stream "CHAOS<round>" (opstate_nats_stream_ensure,
   prefix "ops"; the last round's is deleted) and opens
   two consumers through the core driver over opstate_nats_log: an ordered
   one (durable NULL) and a durable one ("D1"), each with its own
   connection and store (memory, or LMDB with --store lmdb). Then:

     publish  N KV-shaped events (puts and deletes over 300 keys) through
              opstate_publish; ids are fixed before the first attempt, so a
              publish that fails with TIMEOUT or IO is retried with the same
              id (bounded back-off). The consumers poll a little meanwhile.
              K times during the phase the stream leader (or, in other
              rounds, a consumer's leader) is killed by PID and restarted
              a moment later (0.5-3 s).
     consume  the consumers catch up to the stream's last sequence in small
              polls; K more leader kills land while they read.
     verify   the stream is read back by sequence (js_GetMsg): every
              acknowledged id is there exactly once; each consumer's state
              equals a reference fold of the stream up to its position and
              every sequence up to it was applied exactly once (an apply
              wrapper counts per sequence); the snapshot in each store
              equals the fold up to its stored position.

   The target rotates per round: stream leader, D1's leader, the ordered
   consumer's leader. A kill waits until all three nodes run and the
   stream's replicas are current (no quorum is ever lost on purpose).

   A consumer error is not taken as the end: poll is retried with back-off
   (100 ms doubling to 1 s) up to 40 times / 60 s, and every failure is
   tabled by consumer, call (poll -> which log operation, by a wrapper around
   the log), opstate_result, err.field, dep_status (natsStatus) and
   dep_detail (jsErrCode), and attributed to the last leader kill. So the
   report tells "exits on transients" (failures, retries needed, gave up)
   apart from "wrong state" (sequences missed or applied twice, state
   mismatches). Prints the seed first and one summary line last:

     cluster chaos seed S: R rounds, K leader kills, E events, lost 0, doubled 0, duplicates 0

   lost = acknowledged events missing from the stream + sequences a
   consumer passed without applying; doubled = sequences a consumer applied
   more than once; duplicates = extra copies of an id in the stream. Exits
   1 on any of them, a state mismatch, a consumer that gave up or did not
   catch up; 2 when the cluster or a setup step failed. Every loop is
   bounded in count and time (and an alarm ends a stuck run). */
#define OPSTATE_IMPLEMENTATION
#define OPSTATE_NATS_IMPLEMENTATION
#define OPSTATE_LMDB_IMPLEMENTATION
#include "opstate_lmdb.h"
#include "opstate_nats.h"
#include "../nats_cluster.h"
#include <pthread.h>

#define KEYS 300
#define DURABLE "D1"
#define MAX_KILLS 512
#define MAX_FAULTS 96
#define MAX_NOTES 64
#define POLL_RETRIES 40
#define POLL_RETRY_MS 60000

/* ------------------------------------------------------------------ setup */

typedef struct options {
    bool long_run, verbose, lmdb;
    uint64_t seed;
    int rounds, max_rounds, kills_per_phase, min_kills;
    int events;
    int64_t soft_limit_ms, hard_limit_ms;
} options;

static options opt;
/* A new stream every round ("CHAOS0", "CHAOS1", ...), subjects "ops.>":
   re-creating one name while nodes are killed can leave a restarted node
   with a stale assignment ("detected duplicate assignment"), a server
   matter this program does not mean to test. */
static char stream_name[32];
static int64_t started_ms, hard_deadline_ms;
static uint64_t rng_state;

static uint64_t next_random(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static int64_t random_between(int64_t lo, int64_t hi) { return lo + (int64_t)(next_random() % (uint64_t)(hi - lo + 1)); }

static int64_t now_ms(void) { return nats_cluster_now_ms(); }
static bool past_deadline(void) { return now_ms() >= hard_deadline_ms; }
static double elapsed_s(void) { return (double)(now_ms() - started_ms) / 1000.0; }

static nats_cluster cluster;

static void die(const char *what)
{
    fprintf(stderr, "cluster chaos: %s\n", what);
    nats_cluster_stop(&cluster);
    exit(2);
}

/* The last resort when a bounded loop is not bounded after all. */
static void on_alarm(int sig)
{
    static const char msg[] = "cluster chaos: hard time limit passed, killing the servers\n";
    int i;
    (void)sig;
    for (i = 0; i < NATS_CLUSTER_NODES; i++)
        if (cluster.node[i].pid > 0) kill(cluster.node[i].pid, SIGKILL);
    if (write(2, msg, sizeof msg - 1) < 0) _exit(3);
    _exit(3);
}

/* ----------------------------------------------------------------- faults */

/* One row per distinct (who, call, result, field, dep_status, dep_detail). */
typedef struct fault_row {
    char who[16], call[48], field[80];
    opstate_result result;
    long dep_status, dep_detail;
    uint64_t count;
} fault_row;

static fault_row faults[MAX_FAULTS];
static int n_faults;
static uint64_t faults_dropped;
static pthread_mutex_t fault_lock = PTHREAD_MUTEX_INITIALIZER;

static void add_fault(const char *who, const char *call, opstate_result r, const opstate_error *err)
{
    const char *field = err && err->field ? err->field : "";
    long ds = err ? err->dep_status : 0, dd = err ? err->dep_detail : 0;
    int i;
    pthread_mutex_lock(&fault_lock);
    for (i = 0; i < n_faults; i++)
        if (strcmp(faults[i].who, who) == 0 && strcmp(faults[i].call, call) == 0 && faults[i].result == r &&
            strncmp(faults[i].field, field, sizeof faults[i].field - 1) == 0 && faults[i].dep_status == ds &&
            faults[i].dep_detail == dd)
            break;
    if (i == n_faults && n_faults < MAX_FAULTS) {
        snprintf(faults[i].who, sizeof faults[i].who, "%s", who);
        snprintf(faults[i].call, sizeof faults[i].call, "%s", call);
        snprintf(faults[i].field, sizeof faults[i].field, "%s", field);
        faults[i].result = r;
        faults[i].dep_status = ds;
        faults[i].dep_detail = dd;
        faults[i].count = 0;
        n_faults++;
    }
    if (i < n_faults) faults[i].count++;
    else faults_dropped++;
    pthread_mutex_unlock(&fault_lock);
}

/* Library log lines, counted by their text with the numbers taken out. */
typedef struct note_row {
    char text[120];
    uint64_t count;
} note_row;

static note_row notes[MAX_NOTES];
static int n_notes;

static void on_log(void *user, opstate_diag_level level, const char *message)
{
    char text[120];
    size_t i, o = 0;
    int k;
    for (i = 0; message[i] && o + 2 < sizeof text; i++) {
        if (message[i] >= '0' && message[i] <= '9') {
            if (o == 0 || text[o - 1] != '#') text[o++] = '#';
        } else {
            text[o++] = message[i];
        }
    }
    text[o] = '\0';
    pthread_mutex_lock(&fault_lock);
    for (k = 0; k < n_notes && strcmp(notes[k].text, text) != 0; k++) continue;
    if (k == n_notes && n_notes < MAX_NOTES) {
        snprintf(notes[k].text, sizeof notes[k].text, "%s", text);
        n_notes++;
    }
    if (k < n_notes) notes[k].count++;
    pthread_mutex_unlock(&fault_lock);
    if (opt.verbose || level <= OPSTATE_DIAG_WARN)
        fprintf(stderr, "  [%7.1fs] %s %s: %s\n", elapsed_s(), level == OPSTATE_DIAG_ERROR ? "ERROR" : level == OPSTATE_DIAG_WARN ? "WARN" : "info",
                (const char *)user, message);
}

/* ------------------------------------------------------------------ kills */

typedef enum target_kind { TARGET_STREAM = 0, TARGET_DURABLE, TARGET_ORDERED } target_kind;
static const char *const target_names[] = {"stream leader", "D1 leader", "ordered consumer leader"};

typedef struct kill_record {
    int round;
    const char *phase;
    target_kind target;
    int node;                     /* killed (-1: none found) */
    int stream_leader, durable_leader, ordered_leader;
    bool fallback;                /* the target had no leader: the stream leader was killed */
    int64_t kill_after_ms, restart_after_ms; /* chosen by the main thread (one RNG, one thread) */
    bool restarted;
    uint64_t pos_ordered, pos_durable; /* consumer positions when it was asked for */
    uint64_t failed_polls[2], gave_up[2];
} kill_record;

static kill_record kills[MAX_KILLS];
static int n_kills, kills_skipped;

/* The thread that kills and restarts nodes, so that a kill lands in the
   middle of whatever the main thread is doing. It lives for the whole run:
   nodes it restarts carry PR_SET_PDEATHSIG tied to it. */
typedef struct chaos {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool busy, quit;
    kill_record *job;
    natsConnection *nc;
    jsCtx *js;
    int restart_failures;
} chaos;

static chaos ch;

/* The ordered consumer's node: the ephemeral consumer of the stream that is
   not D1 (the newest, when several). */
static int ordered_leader(jsCtx *js)
{
    jsConsumerInfoList *list = NULL;
    int i, node = -1;
    int64_t newest = 0;
    if (js_Consumers(&list, js, stream_name, NULL, NULL) != NATS_OK || !list) return -1;
    for (i = 0; i < list->Count; i++) {
        jsConsumerInfo *ci = list->List[i];
        if (!ci->Name || strcmp(ci->Name, DURABLE) == 0 || !ci->Cluster) continue;
        if (ci->Created >= newest) {
            newest = ci->Created;
            node = nats_cluster_node_of(ci->Cluster->Leader);
        }
    }
    jsConsumerInfoList_Destroy(list);
    return node;
}

static void chaos_one(kill_record *k)
{
    int64_t until = now_ms() + 5000;
    int want = -1, tries;
    do { /* the target's leader, retried while it is being (re)created */
        nats_cluster_leaders(&cluster, ch.js, stream_name, DURABLE, &k->stream_leader, &k->durable_leader);
        k->ordered_leader = ordered_leader(ch.js);
        want = k->target == TARGET_STREAM    ? k->stream_leader
               : k->target == TARGET_DURABLE ? k->durable_leader
                                             : k->ordered_leader;
        if (want < 0) nats_server_sleep_ms(100);
    } while (want < 0 && now_ms() < until);
    if (want < 0 && k->stream_leader >= 0) {
        want = k->stream_leader;
        k->fallback = true;
    }
    k->node = want;
    if (want < 0) return;
    nats_server_sleep_ms(k->kill_after_ms); /* land anywhere in a request */
    nats_cluster_kill(&cluster, want, SIGKILL);
    nats_server_sleep_ms(k->restart_after_ms);
    for (tries = 0; tries < 5 && nats_cluster_restart(&cluster, want) != 0; tries++) nats_server_sleep_ms(500);
    k->restarted = nats_cluster_running(&cluster, want);
    if (!k->restarted) ch.restart_failures++;
}

static void *chaos_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&ch.mu);
    for (;;) {
        while (!ch.job && !ch.quit) pthread_cond_wait(&ch.cv, &ch.mu);
        if (ch.quit) break;
        pthread_mutex_unlock(&ch.mu);
        chaos_one(ch.job);
        pthread_mutex_lock(&ch.mu);
        ch.job = NULL;
        ch.busy = false;
        pthread_cond_broadcast(&ch.cv);
    }
    pthread_mutex_unlock(&ch.mu);
    return NULL;
}

/* Waits (up to timeout_ms) until the chaos thread has restarted its node. */
static bool chaos_wait_idle(int64_t timeout_ms)
{
    int64_t until = now_ms() + timeout_ms;
    bool idle;
    for (;;) {
        pthread_mutex_lock(&ch.mu);
        idle = !ch.busy;
        pthread_mutex_unlock(&ch.mu);
        if (idle || now_ms() >= until) return idle;
        nats_server_sleep_ms(20);
    }
}

/* ------------------------------------------------------------- the events */

typedef struct chaos_event {
    opstate_id id;
    int key;
    uint32_t op;
    int64_t time;
    char data[64];
    bool acked, gave_up;
    uint64_t acked_seq;
} chaos_event;

typedef struct id_index {
    opstate_id id;
    int index;
} id_index;

static chaos_event *events;
static id_index *by_id;
static uint8_t kv_keys[KEYS][64];
static size_t kv_key_len[KEYS];
static char key_text[KEYS][16];

static int compare_id_index(const void *a, const void *b)
{
    return memcmp(((const id_index *)a)->id.bytes, ((const id_index *)b)->id.bytes, 16);
}

static int event_of_id(const opstate_id *id)
{
    id_index probe, *hit;
    probe.id = *id;
    hit = (id_index *)bsearch(&probe, by_id, (size_t)opt.events, sizeof *by_id, compare_id_index);
    return hit ? hit->index : -1;
}

static void fill_event(const chaos_event *e, opstate_event *ev)
{
    memset(ev, 0, sizeof *ev);
    ev->id = e->id;
    ev->scope.ptr = (const uint8_t *)"chaos";
    ev->scope.len = 5;
    ev->kind.ptr = (const uint8_t *)"item";
    ev->kind.len = 4;
    ev->key.ptr = (const uint8_t *)key_text[e->key];
    ev->key.len = strlen(key_text[e->key]);
    ev->op = e->op;
    ev->data.ptr = (const uint8_t *)e->data;
    ev->data.len = e->op == OPSTATE_OP_PUT ? strlen(e->data) : 0;
    ev->has_time = true;
    ev->time = e->time;
}

/* The round's events, ids and all, fixed before anything is published. */
static void make_events(int round)
{
    int i;
    for (i = 0; i < opt.events; i++) {
        chaos_event *e = &events[i];
        uint8_t entropy[8];
        uint64_t x = next_random(), y = next_random();
        memset(e, 0, sizeof *e);
        e->key = (int)(x % KEYS);
        e->op = (x >> 32) % 5 == 0 ? OPSTATE_OP_DELETE : OPSTATE_OP_PUT;
        e->time = (int64_t)1700000000000000000 + ((int64_t)round * opt.events + i) * 1000000;
        snprintf(e->data, sizeof e->data, "{\"r\":%d,\"i\":%d,\"v\":%u}", round, i, (unsigned)(y & 0xffffff));
        memcpy(entropy, &y, sizeof entropy);
        opstate_id_time_ordered(e->time, entropy, &e->id);
        by_id[i].id = e->id;
        by_id[i].index = i;
    }
    qsort(by_id, (size_t)opt.events, sizeof *by_id, compare_id_index);
}

static void make_keys(void)
{
    int k;
    for (k = 0; k < KEYS; k++) {
        chaos_event e;
        opstate_event ev;
        snprintf(key_text[k], sizeof key_text[k], "k%03d", k);
        memset(&e, 0, sizeof e);
        e.key = k;
        e.op = OPSTATE_OP_PUT;
        fill_event(&e, &ev);
        if (opstate_kv_event_key(&ev, kv_keys[k], sizeof kv_keys[k], &kv_key_len[k]) != OPSTATE_OK) die("event key");
    }
}

/* -------------------------------------------------------- the log wrapper */

/* Wraps a consumer's log to say which operation failed inside a poll (and
   with what), to see acks the core only logs, and to note every read that
   delivered a sequence above the one asked for (a hole in the delivery). */
typedef struct watched_log {
    opstate_log inner;
    const char *who;
    const char *failed_op; /* the last failing operation since the caller cleared it */
    uint64_t reads, read_msgs, jumps;
    char jump_text[4][160];
} watched_log;

static opstate_result watched_append(void *user, opstate_bytes subject, opstate_bytes data,
                                     const opstate_append_options *opts, opstate_append_result *out, opstate_error *err)
{
    watched_log *w = (watched_log *)user;
    opstate_result r = w->inner.append(w->inner.user, subject, data, opts, out, err);
    if (r != OPSTATE_OK) w->failed_op = "append";
    return r;
}

static opstate_result watched_read(void *user, opstate_bytes filter, uint64_t from_seq, int64_t wait_ns,
                                   opstate_log_message *msgs, size_t max, size_t *count, opstate_error *err)
{
    watched_log *w = (watched_log *)user;
    opstate_result r = w->inner.read(w->inner.user, filter, from_seq, wait_ns, msgs, max, count, err);
    size_t i;
    uint64_t expected = from_seq;
    w->reads++;
    if (r != OPSTATE_OK) {
        w->failed_op = "read";
        return r;
    }
    w->read_msgs += *count;
    for (i = 0; i < *count; i++) {
        uint64_t seq = msgs[i].position.seq;
        if (seq > expected) {
            if (w->jumps < 4)
                snprintf(w->jump_text[w->jumps], sizeof w->jump_text[w->jumps],
                         "read from %llu: expected %llu, delivered %llu (message %zu of %zu)",
                         (unsigned long long)from_seq, (unsigned long long)expected, (unsigned long long)seq, i + 1, *count);
            w->jumps++;
        }
        if (seq >= expected) expected = seq + 1;
    }
    return r;
}

static opstate_result watched_info(void *user, opstate_stream_info *out, opstate_error *err)
{
    watched_log *w = (watched_log *)user;
    opstate_result r = w->inner.info(w->inner.user, out, err);
    if (r != OPSTATE_OK) w->failed_op = "info";
    return r;
}

static opstate_result watched_last_per_subject(void *user, opstate_bytes filter, opstate_log_visit_fn fn, void *fn_user,
                                               opstate_error *err)
{
    watched_log *w = (watched_log *)user;
    opstate_result r = w->inner.last_per_subject(w->inner.user, filter, fn, fn_user, err);
    if (r != OPSTATE_OK) w->failed_op = "last_per_subject";
    return r;
}

static opstate_result watched_ack(void *user, uint64_t upto_seq, opstate_error *err)
{
    watched_log *w = (watched_log *)user;
    opstate_error mine;
    opstate_result r;
    memset(&mine, 0, sizeof mine);
    r = w->inner.ack(w->inner.user, upto_seq, &mine);
    if (r != OPSTATE_OK) add_fault(w->who, "poll -> ack (logged, not returned)", r, &mine);
    if (err) *err = mine;
    return r;
}

static opstate_log watch(watched_log *w, opstate_log inner, const char *who)
{
    opstate_log log;
    memset(w, 0, sizeof *w);
    w->inner = inner;
    w->who = who;
    log.user = w;
    log.append = watched_append;
    log.read = watched_read;
    log.info = watched_info;
    log.last_per_subject = watched_last_per_subject;
    log.ack = inner.ack ? watched_ack : NULL;
    return log;
}

/* -------------------------------------------------------------- consumers */

typedef struct chaos_consumer {
    const char *name; /* "ordered", "durable" */
    const char *durable;
    opstate_nats *n;
    opstate_nats_log *lg;
    watched_log wl;
    opstate_memstore *mem;
    opstate_lmdb_store *lst;
    opstate_store store;
    opstate_consumer *c;
    uint32_t *applies; /* per sequence, this round */
    size_t cap;
    uint64_t applies_beyond;
    bool open, dead, done;
    int streak, max_streak;
    int64_t streak_started, next_poll_at;
    uint64_t failed_polls, episodes, recovered, gave_up, retries_recovered;
    uint64_t streak_hist[5]; /* recovered after 1, 2, 3-5, 6-10, >10 failed polls */
    uint64_t open_failures;
} chaos_consumer;

static chaos_consumer consumers[2];
static opstate_lmdb *lmdb_env;
static char lmdb_dir[64];
static int cur_kill = -1; /* the last kill of this round, for attribution */

static opstate_apply_outcome counting_apply(void *user, opstate_kv *kv, const opstate_event *ev)
{
    chaos_consumer *cc = (chaos_consumer *)user;
    opstate_apply_outcome o = opstate_apply_default(NULL, kv, ev);
    if (o == OPSTATE_APPLY_DONE) {
        if (ev->position.seq < cc->cap) cc->applies[ev->position.seq]++;
        else cc->applies_beyond++;
    }
    return o;
}

static opstate_nats *connect_role(const char *name)
{
    opstate_nats_config nc;
    opstate_nats *n = NULL;
    opstate_error err;
    opstate_result r;
    int tries;
    memset(&nc, 0, sizeof nc);
    nc.urls = cluster.urls;
    nc.name = name;
    nc.max_reconnect = -1;
    nc.reconnect_wait_ms = 100;
    nc.request_timeout_ms = 2000;
    nc.diag.fn = on_log;
    nc.diag.user = (void *)name;
    for (tries = 0; tries < 20; tries++) {
        memset(&err, 0, sizeof err);
        if ((r = opstate_nats_connect(&nc, &n, &err)) == OPSTATE_OK) return n;
        add_fault(name, "opstate_nats_connect", r, &err);
        nats_server_sleep_ms(250);
    }
    die("cannot connect");
    return NULL;
}

static bool consumer_open(chaos_consumer *cc, int round)
{
    opstate_nats_log_config lc;
    opstate_consumer_config cfg;
    opstate_error err;
    opstate_result r;
    int64_t until = now_ms() + 30000;
    int tries;
    cc->open = false;
    memset(&lc, 0, sizeof lc);
    lc.stream = stream_name;
    lc.durable = cc->durable;
    memset(&err, 0, sizeof err);
    if ((r = opstate_nats_log_open(cc->n, &lc, &cc->lg, &err)) != OPSTATE_OK) {
        add_fault(cc->name, "opstate_nats_log_open", r, &err);
        return false;
    }
    if (opt.lmdb) {
        opstate_lmdb_store_config sc;
        memset(&sc, 0, sizeof sc);
        sc.name = cc->name;
        memset(&err, 0, sizeof err);
        if ((r = opstate_lmdb_store_open(lmdb_env, &sc, &cc->lst, &err)) != OPSTATE_OK) die("lmdb store");
        cc->store = opstate_lmdb_store_iface(cc->lst);
        cc->store.drop(cc->store.user, NULL); /* a fresh stream every round */
    } else {
        if (opstate_memstore_create(NULL, &cc->mem) != OPSTATE_OK) die("memstore");
        cc->store = opstate_memstore_iface(cc->mem);
    }
    memset(cc->applies, 0, cc->cap * sizeof *cc->applies);
    cc->applies_beyond = 0;
    memset(&cfg, 0, sizeof cfg);
    cfg.log = watch(&cc->wl, opstate_nats_log_iface(cc->lg), cc->name);
    cfg.store = cc->store;
    cfg.apply = counting_apply;
    cfg.apply_user = cc;
    cfg.flush_every = 500;
    cfg.diag.fn = on_log;
    cfg.diag.user = (void *)cc->name;
    for (tries = 0; tries < 60 && now_ms() < until && !past_deadline(); tries++) {
        memset(&err, 0, sizeof err);
        cc->wl.failed_op = NULL;
        r = opstate_consumer_open(&cfg, &cc->c, &err);
        if (r == OPSTATE_OK) break;
        cc->open_failures++;
        {
            char call[48];
            snprintf(call, sizeof call, "consumer_open -> %s", cc->wl.failed_op ? cc->wl.failed_op : "core");
            add_fault(cc->name, call, r, &err);
        }
        nats_server_sleep_ms(250);
    }
    cc->open = r == OPSTATE_OK;
    cc->dead = !cc->open;
    cc->done = false;
    cc->streak = 0;
    cc->next_poll_at = 0;
    if (!cc->open) fprintf(stderr, "round %d: %s consumer could not open\n", round, cc->name);
    return cc->open;
}

static uint64_t consumer_pos(const chaos_consumer *cc) { return cc->open ? opstate_consumer_position(cc->c).seq : 0; }

/* One poll when due. true when it ran, succeeded and applied or skipped
   something (false: nothing new, not due, or failed). A failure is tabled,
   attributed to the last kill, and retried later with back-off; after
   POLL_RETRIES failures in a row (or POLL_RETRY_MS) the consumer is given
   up for the round. */
static bool consumer_poll(chaos_consumer *cc, uint32_t max_events)
{
    opstate_poll_result pr;
    opstate_error err;
    opstate_result r;
    int64_t t = now_ms(), backoff;
    int who = cc == &consumers[0] ? 0 : 1;
    if (!cc->open || cc->dead || t < cc->next_poll_at) return false;
    memset(&err, 0, sizeof err);
    cc->wl.failed_op = NULL;
    r = opstate_consumer_poll(cc->c, max_events, 0, &pr, &err);
    if (r == OPSTATE_OK) {
        if (cc->streak) {
            int s = cc->streak;
            cc->recovered++;
            cc->retries_recovered += (uint64_t)s;
            cc->streak_hist[s == 1 ? 0 : s == 2 ? 1 : s <= 5 ? 2 : s <= 10 ? 3 : 4]++;
        }
        cc->streak = 0;
        return pr.applied + pr.skipped > 0;
    }
    {
        char call[48];
        snprintf(call, sizeof call, "poll -> %s", cc->wl.failed_op ? cc->wl.failed_op : "core");
        add_fault(cc->name, call, r, &err);
        if (opt.verbose)
            fprintf(stderr, "  [%7.1fs] %s: %s: %s (field \"%s\", natsStatus %ld %s, jsErrCode %ld) at position %llu\n",
                    elapsed_s(), cc->name, call, opstate_result_str(r), err.field ? err.field : "", err.dep_status,
                    natsStatus_GetText((natsStatus)err.dep_status), err.dep_detail, (unsigned long long)consumer_pos(cc));
    }
    cc->failed_polls++;
    if (cur_kill >= 0) kills[cur_kill].failed_polls[who]++;
    if (cc->streak++ == 0) {
        cc->episodes++;
        cc->streak_started = t;
    }
    if (cc->streak > cc->max_streak) cc->max_streak = cc->streak;
    backoff = cc->streak >= 5 ? 1000 : (int64_t)100 << (cc->streak - 1);
    cc->next_poll_at = t + backoff;
    if (cc->streak >= POLL_RETRIES || t - cc->streak_started >= POLL_RETRY_MS) {
        cc->dead = true;
        cc->gave_up++;
        if (cur_kill >= 0) kills[cur_kill].gave_up[who]++;
        fprintf(stderr, "  [%7.1fs] %s consumer gave up after %d failed polls in a row (last: %s, field \"%s\", natsStatus %ld, jsErrCode %ld)\n",
                elapsed_s(), cc->name, cc->streak, opstate_result_str(r), err.field ? err.field : "", err.dep_status,
                err.dep_detail);
    }
    return false;
}

static void consumer_close(chaos_consumer *cc)
{
    opstate_error err;
    opstate_result r;
    if (cc->open) {
        memset(&err, 0, sizeof err);
        if ((r = opstate_consumer_close(cc->c, &err)) != OPSTATE_OK) add_fault(cc->name, "consumer_close", r, &err);
    }
    cc->open = false;
    opstate_nats_log_close(cc->lg);
    cc->lg = NULL;
}

static void consumer_drop_store(chaos_consumer *cc)
{
    if (cc->lst) opstate_lmdb_store_close(cc->lst);
    if (cc->mem) opstate_memstore_destroy(cc->mem);
    cc->lst = NULL;
    cc->mem = NULL;
}

/* ------------------------------------------------------------- publishing */

static opstate_nats *pub_n;
static opstate_nats_log *pub_log;
static uint64_t publish_retries, publish_dup_acks, publish_gave_up, published_acked;

static void publish_one(int i)
{
    opstate_log log = opstate_nats_log_iface(pub_log);
    opstate_bytes prefix = {(const uint8_t *)"ops", 3};
    opstate_event ev;
    opstate_append_result ar;
    opstate_error err;
    opstate_result r;
    int64_t until = now_ms() + 60000, backoff = 50;
    int attempt;
    fill_event(&events[i], &ev);
    for (attempt = 0; attempt < 60; attempt++) {
        memset(&err, 0, sizeof err);
        r = opstate_publish(&log, prefix, &ev, NULL, NULL, &ar, &err);
        if (r == OPSTATE_OK) {
            events[i].acked = true;
            events[i].acked_seq = ar.seq;
            published_acked++;
            if (ar.duplicate) publish_dup_acks++;
            return;
        }
        add_fault("publisher", "opstate_publish -> append", r, &err);
        if (opt.verbose)
            fprintf(stderr, "  [%7.1fs] publisher: event %d attempt %d: %s (field \"%s\", natsStatus %ld %s, jsErrCode %ld)\n",
                    elapsed_s(), i, attempt + 1, opstate_result_str(r), err.field ? err.field : "", err.dep_status,
                    natsStatus_GetText((natsStatus)err.dep_status), err.dep_detail);
        if (r != OPSTATE_TIMEOUT && r != OPSTATE_IO) break; /* not a transient */
        if (now_ms() >= until || past_deadline()) break;
        publish_retries++;
        nats_server_sleep_ms(backoff);
        if (backoff < 1000) backoff *= 2;
    }
    events[i].gave_up = true;
    publish_gave_up++;
}

/* ---------------------------------------------------------------- admin */

static natsConnection *admin_nc;
static jsCtx *admin_js;

static bool stream_last_seq(uint64_t *last)
{
    int64_t until = now_ms() + 30000;
    while (now_ms() < until && !past_deadline()) {
        jsStreamInfo *si = NULL;
        if (js_GetStreamInfo(&si, admin_js, stream_name, NULL, NULL) == NATS_OK) {
            *last = si->State.LastSeq;
            jsStreamInfo_Destroy(si);
            return true;
        }
        nats_server_sleep_ms(200);
    }
    return false;
}

static bool ensure_stream(void)
{
    opstate_nats_stream_config sc;
    opstate_error err;
    opstate_result r;
    int64_t until = now_ms() + 30000;
    memset(&sc, 0, sizeof sc);
    sc.stream = stream_name;
    sc.prefix = "ops";
    sc.replicas = 3;
    while (now_ms() < until && !past_deadline()) {
        memset(&err, 0, sizeof err);
        if ((r = opstate_nats_stream_ensure(pub_n, &sc, &err)) == OPSTATE_OK) return true;
        add_fault("setup", "opstate_nats_stream_ensure", r, &err);
        nats_server_sleep_ms(250);
    }
    return false;
}

static void delete_stream(void)
{
    int64_t until = now_ms() + 30000;
    while (now_ms() < until) {
        jsErrCode jerr = (jsErrCode)0;
        natsStatus s = js_DeleteStream(admin_js, stream_name, NULL, &jerr);
        if (s == NATS_OK || s == NATS_NOT_FOUND) return;
        nats_server_sleep_ms(250);
    }
    die("could not delete the stream");
}

/* Waits for a healthy cluster, then has the chaos thread kill `target` now
   (it restarts it after a random moment). Returns false when the cluster
   did not get healthy in time: the kill is skipped. */
static bool trigger_kill(int round, const char *phase, target_kind target)
{
    kill_record *k;
    if (n_kills >= MAX_KILLS || !chaos_wait_idle(30000) ||
        nats_cluster_wait_healthy(&cluster, admin_js, stream_name, NULL, 30000) != 0) {
        kills_skipped++;
        fprintf(stderr, "  [%7.1fs] round %d: kill skipped (cluster not healthy)\n", elapsed_s(), round);
        return false;
    }
    k = &kills[n_kills];
    memset(k, 0, sizeof *k);
    k->round = round;
    k->phase = phase;
    k->target = target;
    k->node = -1;
    k->kill_after_ms = random_between(0, 150);
    k->restart_after_ms = random_between(500, 3000);
    k->pos_ordered = consumer_pos(&consumers[0]);
    k->pos_durable = consumer_pos(&consumers[1]);
    cur_kill = n_kills++;
    pthread_mutex_lock(&ch.mu);
    ch.busy = true;
    ch.job = k;
    pthread_cond_broadcast(&ch.cv);
    pthread_mutex_unlock(&ch.mu);
    return true;
}

/* "n2", or "-" for no node. */
static const char *node_name(int node)
{
    static const char *const names[] = {"-", "n1", "n2", "n3"};
    return node >= 0 && node < NATS_CLUSTER_NODES ? names[node + 1] : names[0];
}

static void print_kill(const kill_record *k, int index)
{
    printf("  kill %d: round %d, %s, %s -> %s%s (stream leader %s, D1 %s, ordered %s), restart after %lld ms%s; "
           "positions ordered %llu durable %llu; failed polls after it: ordered %llu, durable %llu%s%s\n",
           index + 1, k->round, k->phase, target_names[k->target], node_name(k->node), k->fallback ? " (fallback)" : "",
           node_name(k->stream_leader), node_name(k->durable_leader), node_name(k->ordered_leader), (long long)k->restart_after_ms,
           k->restarted ? "" : " (RESTART FAILED)", (unsigned long long)k->pos_ordered, (unsigned long long)k->pos_durable,
           (unsigned long long)k->failed_polls[0], (unsigned long long)k->failed_polls[1],
           k->gave_up[0] ? ", ordered GAVE UP" : "", k->gave_up[1] ? ", durable GAVE UP" : "");
}

/* ------------------------------------------------------------ verification */

static uint64_t total_lost_stream, total_duplicates, total_missed, total_doubled, total_state_mismatch,
    total_snapshot_mismatch, total_not_caught_up, total_unknown_msgs, total_stream_holes, total_seq_mismatch;

typedef struct stream_copy {
    uint64_t last;
    int *index;      /* per sequence: event index, -1 unknown / absent */
    bool *first;     /* per sequence: the first copy of its id */
} stream_copy;

static bool read_stream(stream_copy *sc)
{
    uint64_t seq;
    int *occ = (int *)calloc((size_t)opt.events, sizeof *occ);
    int i;
    if (!occ) die("memory");
    if (!stream_last_seq(&sc->last)) {
        free(occ);
        return false;
    }
    sc->index = (int *)malloc((size_t)(sc->last + 1) * sizeof *sc->index);
    sc->first = (bool *)calloc((size_t)(sc->last + 1), sizeof *sc->first);
    if (!sc->index || !sc->first) die("memory");
    for (seq = 1; seq <= sc->last; seq++) {
        natsMsg *m = NULL;
        jsErrCode jerr = (jsErrCode)0;
        natsStatus s = NATS_TIMEOUT;
        const char *id_text = NULL;
        opstate_id id;
        int tries;
        sc->index[seq] = -1;
        for (tries = 0; tries < 20 && !past_deadline(); tries++) {
            s = js_GetMsg(&m, admin_js, stream_name, seq, NULL, &jerr);
            if (s == NATS_OK || s == NATS_NOT_FOUND) break;
            nats_server_sleep_ms(100);
        }
        if (s != NATS_OK) {
            total_stream_holes++;
            if (total_stream_holes <= 5)
                printf("  stream: sequence %llu unreadable: natsStatus %d (%s), jsErrCode %d\n", (unsigned long long)seq,
                       (int)s, natsStatus_GetText(s), (int)jerr);
            continue;
        }
        if (natsMsgHeader_Get(m, "Nats-Msg-Id", &id_text) == NATS_OK && id_text && /* the wire format's id */
            opstate_id_from_text(id_text, strlen(id_text), &id, NULL) == OPSTATE_OK && (i = event_of_id(&id)) >= 0) {
            sc->index[seq] = i;
            sc->first[seq] = occ[i]++ == 0;
            if (events[i].acked && events[i].acked_seq != seq && sc->first[seq]) {
                total_seq_mismatch++;
                if (total_seq_mismatch <= 5)
                    printf("  stream: event %d acknowledged at sequence %llu but its first copy is at %llu\n", i,
                           (unsigned long long)events[i].acked_seq, (unsigned long long)seq);
            }
        } else {
            total_unknown_msgs++;
        }
        natsMsg_Destroy(m);
    }
    for (i = 0; i < opt.events; i++) {
        if (events[i].acked && occ[i] == 0) {
            total_lost_stream++;
            if (total_lost_stream <= 10)
                printf("  stream: acknowledged event %d (sequence %llu) is not in the stream\n", i,
                       (unsigned long long)events[i].acked_seq);
        }
        if (occ[i] > 1) {
            if (total_duplicates < 10) printf("  stream: event %d is in the stream %d times\n", i, occ[i]);
            total_duplicates += (uint64_t)(occ[i] - 1);
        }
    }
    free(occ);
    return true;
}

/* Compares a state with the reference fold of the stream up to `upto`;
   returns the number of keys that differ. */
static uint64_t compare_fold(const stream_copy *sc, uint64_t upto, const opstate_kv *kv)
{
    int value_of[KEYS], k;
    uint64_t seq, live = 0, bad = 0;
    for (k = 0; k < KEYS; k++) value_of[k] = -1;
    for (seq = 1; seq <= upto && seq <= sc->last; seq++) {
        int i = sc->index[seq];
        if (i < 0 || !sc->first[seq]) continue;
        value_of[events[i].key] = events[i].op == OPSTATE_OP_PUT ? i : -1;
    }
    for (k = 0; k < KEYS; k++) {
        opstate_kv_item item;
        opstate_bytes key;
        opstate_result r;
        key.ptr = kv_keys[k];
        key.len = kv_key_len[k];
        r = opstate_kv_get(kv, key, &item);
        if (value_of[k] < 0) {
            bad += r != OPSTATE_NOT_FOUND;
        } else {
            const char *want = events[value_of[k]].data;
            live++;
            bad += r != OPSTATE_OK || item.value.len != strlen(want) || memcmp(item.value.ptr, want, item.value.len) != 0;
        }
    }
    if (opstate_kv_count(kv) != live) bad++;
    return bad;
}

/* Prints up to 8 ranges of sequences from a flag list. */
static void print_ranges(const char *label, const char *who, const uint64_t *seqs, uint64_t n)
{
    uint64_t i = 0;
    int shown = 0;
    if (n == 0) return;
    printf("  %s: %llu sequences %s:", who, (unsigned long long)n, label);
    while (i < n && shown < 8) {
        uint64_t a = seqs[i], b = a;
        while (i + 1 < n && seqs[i + 1] == b + 1) b = seqs[++i];
        i++;
        if (a == b) printf(" %llu", (unsigned long long)a);
        else printf(" %llu-%llu", (unsigned long long)a, (unsigned long long)b);
        shown++;
    }
    printf("%s\n", i < n ? " ..." : "");
}

static void verify_consumer(chaos_consumer *cc, const stream_copy *sc, int round)
{
    const opstate_consumer_status *st;
    uint64_t pos, seq, applied = 0, n_missed = 0, n_doubled = 0, beyond = 0, bad;
    uint64_t *missed, *doubled;
    if (!cc->open) {
        total_not_caught_up++;
        printf("  round %d %s: never opened\n", round, cc->name);
        return;
    }
    pos = consumer_pos(cc);
    st = opstate_consumer_get_status(cc->c);
    missed = (uint64_t *)malloc((size_t)(sc->last + 1) * sizeof *missed);
    doubled = (uint64_t *)malloc((size_t)(sc->last + 1) * sizeof *doubled);
    if (!missed || !doubled) die("memory");
    for (seq = 1; seq < cc->cap && seq <= sc->last; seq++) {
        uint32_t got = cc->applies[seq];
        uint32_t want = seq <= pos && sc->index[seq] >= 0 && sc->first[seq] ? 1 : 0;
        applied += got;
        if (seq > pos) {
            beyond += got;
            continue;
        }
        if (got < want) missed[n_missed++] = seq;
        if (got > 1 || (got == 1 && want == 0)) doubled[n_doubled++] = seq;
    }
    bad = compare_fold(sc, pos, opstate_consumer_kv(cc->c));
    if (pos < sc->last) {
        total_not_caught_up++;
        printf("  round %d %s: NOT caught up: position %llu of %llu%s\n", round, cc->name, (unsigned long long)pos,
               (unsigned long long)sc->last, cc->dead ? " (gave up)" : "");
    }
    print_ranges("passed without being applied", cc->name, missed, n_missed);
    print_ranges("applied more than once", cc->name, doubled, n_doubled);
    if (bad) printf("  round %d %s: state differs from the reference fold at %llu keys\n", round, cc->name, (unsigned long long)bad);
    if (applied != st->applied || cc->applies_beyond)
        printf("  round %d %s: status.applied %llu, counted %llu, beyond the table %llu\n", round, cc->name,
               (unsigned long long)st->applied, (unsigned long long)applied, (unsigned long long)cc->applies_beyond);
    if (beyond) printf("  round %d %s: %llu applies above the position %llu\n", round, cc->name, (unsigned long long)beyond, (unsigned long long)pos);
    if (opt.verbose || n_missed || n_doubled || bad)
        printf("  round %d %s: position %llu, applied %llu, skipped %llu, reads %llu, delivery holes %llu\n", round, cc->name,
               (unsigned long long)pos, (unsigned long long)st->applied, (unsigned long long)st->skipped,
               (unsigned long long)cc->wl.reads, (unsigned long long)cc->wl.jumps);
    {
        uint64_t j;
        for (j = 0; j < cc->wl.jumps && j < 4 && (opt.verbose || n_missed); j++) printf("    %s\n", cc->wl.jump_text[j]);
    }
    total_missed += n_missed;
    total_doubled += n_doubled;
    total_state_mismatch += bad;
    free(missed);
    free(doubled);
}

/* The store's snapshot (after close: the final flush) against the fold up
   to the stored position. */
static void verify_snapshot(chaos_consumer *cc, const stream_copy *sc, int round)
{
    opstate_kv *kv;
    opstate_snapshot_meta meta;
    opstate_error err;
    opstate_result r;
    uint64_t bad;
    if (!cc->mem && !cc->lst) return; /* never set up */
    if (opstate_kv_create(NULL, &kv) != OPSTATE_OK) die("memory");
    memset(&meta, 0, sizeof meta);
    memset(&err, 0, sizeof err);
    r = cc->store.load(cc->store.user, kv, &meta, NULL, &err);
    if (r != OPSTATE_OK && r != OPSTATE_NOT_FOUND) {
        add_fault(cc->name, "store load (verification)", r, &err);
        total_snapshot_mismatch++;
    } else if ((bad = compare_fold(sc, r == OPSTATE_OK ? meta.position.seq : 0, kv)) != 0) {
        printf("  round %d %s: stored snapshot at %llu differs from the fold at %llu keys\n", round, cc->name,
               (unsigned long long)meta.position.seq, (unsigned long long)bad);
        total_snapshot_mismatch += bad;
    }
    opstate_kv_destroy(kv);
}

/* ---------------------------------------------------------------- a round */

static int rounds_done;
static uint64_t events_published;

static bool all_done(uint64_t last)
{
    int i;
    for (i = 0; i < 2; i++) {
        chaos_consumer *cc = &consumers[i];
        if (cc->open && !cc->dead && consumer_pos(cc) >= last) cc->done = true;
        if (!(cc->done || cc->dead || !cc->open)) return false;
    }
    return true;
}

static uint64_t min_pos(void)
{
    uint64_t a = consumer_pos(&consumers[0]), b = consumer_pos(&consumers[1]);
    if (consumers[0].dead || !consumers[0].open) return b;
    if (consumers[1].dead || !consumers[1].open) return a;
    return a < b ? a : b;
}

static void mark(int round, const char *what)
{
    if (opt.verbose)
        printf("  [%7.1fs] round %d: %s (ordered at %llu, durable at %llu)\n", elapsed_s(), round, what,
               (unsigned long long)consumer_pos(&consumers[0]), (unsigned long long)consumer_pos(&consumers[1]));
    fflush(stdout);
}

static int rounds_aborted;

/* Polls both consumers until each is at `last` (or gave up), up to
   timeout_ms; with kills at fractions of the backlog when n_at > 0. */
static void catch_up(int round, uint64_t last, int64_t timeout_ms, uint32_t per_poll, int n_at, target_kind target)
{
    uint64_t start_pos = min_pos(), backlog = last > start_pos ? last - start_pos : 0;
    int64_t until = now_ms() + timeout_ms;
    int i, j = 0;
    while (!all_done(last) && now_ms() < until && !past_deadline()) {
        bool polled = false;
        if (j < n_at && min_pos() >= start_pos + backlog * (uint64_t)(j + 1) / (uint64_t)(n_at + 1)) {
            trigger_kill(round, "mid-consume", target);
            j++;
        }
        for (i = 0; i < 2; i++)
            if (!consumers[i].done) polled |= consumer_poll(&consumers[i], per_poll);
        if (!polled) nats_server_sleep_ms(10); /* nothing new: do not spin against the servers */
    }
}

static void run_round(int round)
{
    target_kind target = (target_kind)(round % 3);
    int kill_at[16], n_at = opt.kills_per_phase < 16 ? opt.kills_per_phase : 16, j, i;
    uint64_t last = 0;
    stream_copy sc;
    int first_kill = n_kills;
    bool ok;
    cur_kill = -1;
    memset(&sc, 0, sizeof sc);
    snprintf(stream_name, sizeof stream_name, "CHAOS%d", round);
    if (!ensure_stream()) die("could not create the stream");
    if (nats_cluster_wait_healthy(&cluster, admin_js, stream_name, NULL, 30000) != 0)
        fprintf(stderr, "round %d: stream replicas not current after 30 s\n", round);
    make_events(round);
    if (!pub_log) {
        opstate_nats_log_config lc;
        memset(&lc, 0, sizeof lc);
        lc.stream = stream_name;
        if (opstate_nats_log_open(pub_n, &lc, &pub_log, NULL) != OPSTATE_OK) die("publisher log");
    }
    for (i = 0; i < 2; i++) consumer_open(&consumers[i], round);
    mark(round, "stream and consumers ready");

    /* publish, with kills spread over the phase */
    for (j = 0; j < n_at; j++) kill_at[j] = (int)((int64_t)opt.events * (j + 1) / (n_at + 1)) + (int)random_between(-100, 100);
    for (i = 0, j = 0; i < opt.events && !past_deadline(); i++) {
        if (j < n_at && i >= kill_at[j]) {
            trigger_kill(round, "mid-publish", target);
            j++;
        }
        publish_one(i);
        if (i % 100 == 99) { /* the consumers read along, slowly: a backlog builds for the next phase */
            consumer_poll(&consumers[0], 25);
            consumer_poll(&consumers[1], 25);
        }
    }
    events_published += (uint64_t)i;
    if (!chaos_wait_idle(30000)) die("chaos thread stuck");
    ok = stream_last_seq(&last);
    mark(round, "published");

    /* consume the backlog, with kills at fractions of it */
    if (ok) catch_up(round, last, 180000, 50, n_at, target);
    if (!chaos_wait_idle(30000)) die("chaos thread stuck");
    mark(round, "consumed");
    nats_cluster_wait_healthy(&cluster, admin_js, stream_name, NULL, 30000);
    ok = ok && stream_last_seq(&last);
    if (ok) catch_up(round, last, 60000, 256, 0, target); /* anything a retried publish added late */

    /* verify */
    ok = ok && read_stream(&sc);
    mark(round, ok ? "stream read back" : "ABORTED (time limit or no stream info)");
    for (i = 0; ok && i < 2; i++) verify_consumer(&consumers[i], &sc, round);
    printf("round %d done at %.1fs: %llu in the stream, %d kills so far; ordered at %llu, durable at %llu\n", round,
           elapsed_s(), (unsigned long long)sc.last, n_kills, (unsigned long long)consumer_pos(&consumers[0]),
           (unsigned long long)consumer_pos(&consumers[1]));
    for (i = 0; i < 2; i++) {
        consumer_close(&consumers[i]);
        if (ok) verify_snapshot(&consumers[i], &sc, round);
        consumer_drop_store(&consumers[i]);
    }
    for (i = first_kill; i < n_kills; i++) print_kill(&kills[i], i);
    fflush(stdout);
    free(sc.index);
    free(sc.first);
    opstate_nats_log_close(pub_log);
    pub_log = NULL;
    delete_stream();
    if (ok) rounds_done++;
    else rounds_aborted++;
}

/* ------------------------------------------------------------------- main */

static void usage(void)
{
    fprintf(stderr, "usage: cluster_chaos [--short|--long] [--seed S] [--rounds R] [--events N] [--kills K]\n"
                    "                     [--min-kills K] [--time-limit SECONDS] [--store mem|lmdb] [--verbose]\n");
    exit(2);
}

static void parse(int argc, char **argv)
{
    int i, rounds = 0, events = 0, kills_pp = 0, min_kills = -1;
    long limit = 0;
    bool seeded = false;
    memset(&opt, 0, sizeof opt);
    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--long") == 0) opt.long_run = true;
        else if (strcmp(a, "--short") == 0) opt.long_run = false;
        else if (strcmp(a, "--verbose") == 0) opt.verbose = true;
        else if (strcmp(a, "--seed") == 0 && v) {
            opt.seed = strtoull(argv[++i], NULL, 0);
            seeded = true;
        }
        else if (strcmp(a, "--rounds") == 0 && v) rounds = atoi(argv[++i]);
        else if (strcmp(a, "--events") == 0 && v) events = atoi(argv[++i]);
        else if (strcmp(a, "--kills") == 0 && v) kills_pp = atoi(argv[++i]);
        else if (strcmp(a, "--min-kills") == 0 && v) min_kills = atoi(argv[++i]);
        else if (strcmp(a, "--time-limit") == 0 && v) limit = atol(argv[++i]);
        else if (strcmp(a, "--store") == 0 && v) opt.lmdb = strcmp(argv[++i], "lmdb") == 0;
        else usage();
    }
    if (!seeded) opt.seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 20);
    if (opt.seed == 0) opt.seed = 1;
    opt.events = events > 0 ? events : 3000;
    if (opt.long_run) { /* ~10 s per kill (a JetStream election takes 4-9 s): 13 rounds of 4 */
        opt.kills_per_phase = kills_pp > 0 ? kills_pp : 2;
        opt.min_kills = min_kills >= 0 ? min_kills : 50;
        opt.rounds = rounds > 0 ? rounds : 0; /* 0: until min_kills */
        opt.max_rounds = rounds > 0 ? rounds : 40;
        opt.soft_limit_ms = (limit > 0 ? limit : 660) * 1000;
    } else {
        opt.kills_per_phase = kills_pp > 0 ? kills_pp : 1;
        opt.min_kills = min_kills >= 0 ? min_kills : 4;
        opt.rounds = rounds > 0 ? rounds : 2;
        opt.max_rounds = opt.rounds;
        opt.soft_limit_ms = (limit > 0 ? limit : 80) * 1000;
    }
    opt.hard_limit_ms = opt.soft_limit_ms + (opt.long_run ? 240000 : 30000);
}

static void print_report(void)
{
    int i, k;
    uint64_t dropped_kills = 0;
    printf("publisher: %llu acknowledged, %llu retries (same id), %llu acknowledged as duplicate on retry, %llu gave up\n",
           (unsigned long long)published_acked, (unsigned long long)publish_retries, (unsigned long long)publish_dup_acks,
           (unsigned long long)publish_gave_up);
    for (i = 0; i < 2; i++) {
        chaos_consumer *cc = &consumers[i];
        printf("%s consumer: %llu failed polls in %llu episodes, %llu rode through (retries needed: total %llu, max %d in a row; "
               "after 1: %llu, 2: %llu, 3-5: %llu, 6-10: %llu, >10: %llu), gave up %llu, open failures %llu\n",
               cc->name, (unsigned long long)cc->failed_polls, (unsigned long long)cc->episodes, (unsigned long long)cc->recovered,
               (unsigned long long)cc->retries_recovered, cc->max_streak, (unsigned long long)cc->streak_hist[0],
               (unsigned long long)cc->streak_hist[1], (unsigned long long)cc->streak_hist[2], (unsigned long long)cc->streak_hist[3],
               (unsigned long long)cc->streak_hist[4], (unsigned long long)cc->gave_up, (unsigned long long)cc->open_failures);
    }
    for (k = 0; k < 3; k++) {
        int n = 0, hit[2] = {0, 0}, fb = 0;
        for (i = 0; i < n_kills; i++) {
            if (kills[i].target != (target_kind)k) continue;
            n++;
            fb += kills[i].fallback;
            hit[0] += kills[i].failed_polls[0] > 0;
            hit[1] += kills[i].failed_polls[1] > 0;
        }
        if (n)
            printf("kills of the %s: %d (%d fell back to the stream leader); followed by failed polls: ordered %d of %d, durable %d of %d\n",
                   target_names[k], n, fb, hit[0], n, hit[1], n);
    }
    for (i = 0; i < n_kills; i++) dropped_kills += !kills[i].restarted || kills[i].node < 0;
    if (dropped_kills || kills_skipped || ch.restart_failures)
        printf("kills without a node or restart: %llu, skipped (cluster not healthy): %d, restart failures: %d\n",
               (unsigned long long)dropped_kills, kills_skipped, ch.restart_failures);
    if (n_faults) printf("failures seen (who | call | result | err.field | dep_status natsStatus | dep_detail jsErrCode | count):\n");
    for (i = 0; i < n_faults; i++)
        printf("  %-9s | %-34s | %-10s | %-28s | %3ld %-26s | %5ld | %llu\n", faults[i].who, faults[i].call,
               opstate_result_str(faults[i].result), faults[i].field, faults[i].dep_status,
               natsStatus_GetText((natsStatus)faults[i].dep_status), faults[i].dep_detail, (unsigned long long)faults[i].count);
    if (faults_dropped) printf("  (%llu more in rows that did not fit)\n", (unsigned long long)faults_dropped);
    if (n_notes) printf("library log lines (numbers as #):\n");
    for (i = 0; i < n_notes; i++) printf("  %5llu x %s\n", (unsigned long long)notes[i].count, notes[i].text);
    printf("checks: acknowledged missing from the stream %llu, stream copies beyond the first %llu, unknown messages %llu, "
           "unreadable sequences %llu, ack/sequence mismatches %llu; consumers: missed %llu, applied twice %llu, "
           "state keys differing %llu, snapshot keys differing %llu, not caught up %llu\n",
           (unsigned long long)total_lost_stream, (unsigned long long)total_duplicates, (unsigned long long)total_unknown_msgs,
           (unsigned long long)total_stream_holes, (unsigned long long)total_seq_mismatch, (unsigned long long)total_missed,
           (unsigned long long)total_doubled, (unsigned long long)total_state_mismatch,
           (unsigned long long)total_snapshot_mismatch, (unsigned long long)total_not_caught_up);
}

int main(int argc, char **argv)
{
    int round, i, rc, killed = 0;
    uint64_t lost, gave_up;
    parse(argc, argv);
    rng_state = opt.seed;
    printf("cluster chaos seed %llu (%s): %d events per round, %d kills per phase, store %s\n", (unsigned long long)opt.seed,
           opt.long_run ? "long" : "short", opt.events, opt.kills_per_phase, opt.lmdb ? "lmdb" : "memory");
    fflush(stdout);
    started_ms = now_ms();
    hard_deadline_ms = started_ms + opt.hard_limit_ms;
    signal(SIGALRM, on_alarm);
    alarm((unsigned)(opt.hard_limit_ms / 1000 + (opt.long_run ? 90 : 10)));

    events = (chaos_event *)calloc((size_t)opt.events, sizeof *events);
    by_id = (id_index *)calloc((size_t)opt.events, sizeof *by_id);
    if (!events || !by_id) die("memory");
    make_keys();
    if (nats_cluster_start(&cluster, 30000) != 0) die("could not start a three-node cluster");
    if (opt.verbose) printf("cluster up at %.1fs: %s (%s)\n", elapsed_s(), cluster.urls, cluster.root);
    if (nats_cluster_connect(&cluster, 2000, &admin_nc, &admin_js) != NATS_OK) die("admin connection");
    pthread_mutex_init(&ch.mu, NULL);
    pthread_cond_init(&ch.cv, NULL);
    if (nats_cluster_connect(&cluster, 1000, &ch.nc, &ch.js) != NATS_OK) die("chaos connection");
    if (pthread_create(&ch.thread, NULL, chaos_main, NULL) != 0) die("thread");
    if (opt.lmdb) {
        opstate_lmdb_config lc;
        snprintf(lmdb_dir, sizeof lmdb_dir, "/tmp/opstate-cluster-lmdb-XXXXXX");
        if (!mkdtemp(lmdb_dir)) die("mkdtemp");
        memset(&lc, 0, sizeof lc);
        lc.path = lmdb_dir;
        lc.durability = OPSTATE_LMDB_SYNC_NONE;
        if (opstate_lmdb_open(&lc, &lmdb_env, NULL) != OPSTATE_OK) die("lmdb");
    }
    pub_n = connect_role("publisher");
    consumers[0].name = "ordered";
    consumers[0].durable = NULL;
    consumers[1].name = "durable";
    consumers[1].durable = DURABLE;
    for (i = 0; i < 2; i++) {
        consumers[i].n = connect_role(consumers[i].name);
        consumers[i].cap = (size_t)opt.events * 2 + 1024;
        consumers[i].applies = (uint32_t *)calloc(consumers[i].cap, sizeof *consumers[i].applies);
        if (!consumers[i].applies) die("memory");
    }

    for (round = 0; round < opt.max_rounds && !past_deadline(); round++) {
        if (opt.rounds == 0 && n_kills >= opt.min_kills) break;
        if (round > 0 && now_ms() - started_ms >= opt.soft_limit_ms) break;
        run_round(round);
    }

    print_report();
    opstate_nats_close(pub_n);
    for (i = 0; i < 2; i++) {
        opstate_nats_close(consumers[i].n);
        free(consumers[i].applies);
    }
    if (lmdb_env) {
        char cmd[128];
        opstate_lmdb_close(lmdb_env);
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", lmdb_dir);
        if (system(cmd) != 0) fprintf(stderr, "cluster chaos: could not remove %s\n", lmdb_dir);
    }
    jsCtx_Destroy(admin_js);
    natsConnection_Destroy(admin_nc);
    nats_cluster_stop(&cluster); /* before the chaos thread ends: its children die with it */
    pthread_mutex_lock(&ch.mu);
    ch.quit = true;
    pthread_cond_broadcast(&ch.cv);
    pthread_mutex_unlock(&ch.mu);
    pthread_join(ch.thread, NULL);
    jsCtx_Destroy(ch.js);
    natsConnection_Destroy(ch.nc);
    free(events);
    free(by_id);

    lost = total_lost_stream + total_missed;
    gave_up = consumers[0].gave_up + consumers[1].gave_up;
    for (i = 0; i < n_kills; i++) killed += kills[i].node >= 0;
    if (rounds_aborted) printf("%d rounds aborted (time limit or no stream info)\n", rounds_aborted);
    if (killed < opt.min_kills) printf("only %d leader kills (wanted %d)\n", killed, opt.min_kills);
    rc = rounds_aborted || lost || total_doubled || total_duplicates || total_state_mismatch || total_snapshot_mismatch ||
         total_not_caught_up || gave_up || total_unknown_msgs || total_stream_holes || killed < opt.min_kills;
    printf("cluster chaos seed %llu: %d rounds, %d leader kills, %llu events, lost %llu, doubled %llu, duplicates %llu\n",
           (unsigned long long)opt.seed, rounds_done, killed, (unsigned long long)events_published, (unsigned long long)lost,
           (unsigned long long)total_doubled, (unsigned long long)total_duplicates);
    nats_Close();
    return rc;
}
