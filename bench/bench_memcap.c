/* bench_memcap.c — state larger than RAM under a real memory cap: the
   program that scripts/bench_memcap.sh runs inside a cgroup v1 memory
   controller (DESIGN.md "Performance targets": a read-through consumer
   keeps working and restarts in O(tail) with a state 4x its memory limit).

     make bench-memcap              (root + cgroup v1 memory controller, else SKIP)
     CAP_MIB=32 make bench-memcap   (the cap; the other knobs are in the script)

   The script does the cgroup and the kills; this program has one command per
   step, each its own process, so the script can put it inside or outside
   the cap:

     bench_memcap fill LOGDIR EVENTS VALUE_LEN SEED
         appends EVENTS put events to an embedded LMDB log (opstate_lmdb_log)
         in transactions of 4,096: keys "item-%019u" (24 bytes) drawn at
         random from 10^19, so nearly every event adds a key; values
         VALUE_LEN bytes. SYNC_NONE, one sync at the end.
     bench_memcap consume LOGDIR STATEDIR TARGET_BYTES VALUE_LEN COMPACT_BYTES FLUSH_EVERY
         a read-through consumer (opstate_consumer over the log, an LMDB
         store with read_through = true and compact_bytes = COMPACT_BYTES,
         0: the default; durable flushes, SYNC_FULL, every FLUSH_EVERY
         events or second; one batch per poll) applies until its state
         holds TARGET_BYTES of keys + values (live keys x (35 + VALUE_LEN):
         the fold key is "bench" 0 "item" 0 key), printing a progress line
         every 1/8 of the way (events/s, anonymous RSS, fold memory, flushes,
         compactions, the pending tail) and the throughput of the first and
         last quarter; then, as soon as its tail of deltas holds half the
         overdue bound (2 x compact_bytes: the same tail for every state
         size), "READY", and keeps applying until it is killed.
         Exits 3 when the log runs out first. It first drops both files
         from the page cache (posix_fadvise), so every page it reads is
         read from disk and charged to its own cgroup.
     bench_memcap restart LOGDIR STATEDIR COMPACT_BYTES FLUSH_EVERY
         drops both files from the page cache (cold), then times, in
         process, opening the environments, the log, the store and the
         consumer (which loads the tail of deltas) and polling until one
         event is applied; the apply prints the figures and ends the process
         with _exit right there, as a crash would (no flush, no compaction),
         so the next restart finds the same tail.
     bench_memcap stat STATEDIR LOGDIR
         the store's table as raw LMDB sees it: entries, pages, bytes on
         disk, and keys + values summed by a cursor walk; both file sizes. */
#define OPSTATE_IMPLEMENTATION
#define OPSTATE_LMDB_IMPLEMENTATION
#include "../opstate_lmdb.h"
#include "bench_util.h"
#include <lmdb.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define KEY_LEN 24
#define FOLD_KEY_LEN (5 + 1 + 4 + 1 + KEY_LEN) /* the default apply's key: "bench" 0 "item" 0 key */
#define MAX_VALUE 4000
#define BATCH 4096
#define MILESTONES 64 /* throughput checkpoints over the way to the target */
#define STORE_NAME "memcap"
#define TABLE_DB "s:" STORE_NAME ":table"
#define TABLE_VALUE_EXTRA 20 /* u64 seq | i64 time | value | u32 CRC */

static void die(const char *what, const char *why)
{
    fprintf(stderr, "bench_memcap: %s: %s\n", what, why);
    exit(2);
}

#define CK(expr)                                                        \
    do {                                                                \
        opstate_result r_ = (expr);                                     \
        if (r_ != OPSTATE_OK) die(#expr, opstate_result_str(r_));       \
    } while (0)
#define CKM(expr)                                                       \
    do {                                                                \
        int rc_ = (expr);                                               \
        if (rc_ != 0) die(#expr, mdb_strerror(rc_));                    \
    } while (0)

static uint64_t arg_u64(const char *s)
{
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (*s == '\0' || *end != '\0') die("argument not a number", s);
    return (uint64_t)v;
}

static void diag_to_stderr(void *user, opstate_diag_level level, const char *message)
{
    (void)user;
    fprintf(stderr, "bench_memcap: diag %d: %s\n", (int)level, message);
}

/* An environment; random_reads: a read-through state that outgrows the
   cap (no readahead, opstate_lmdb_config.no_readahead). */
static opstate_lmdb *open_env(const char *path, opstate_lmdb_access access, opstate_lmdb_durability d, bool random_reads)
{
    opstate_lmdb_config c;
    opstate_lmdb *env;
    memset(&c, 0, sizeof c);
    c.path = path;
    c.access = access;
    c.durability = d;
    c.no_readahead = random_reads;
    c.diag.fn = diag_to_stderr;
    CK(opstate_lmdb_open(&c, &env, NULL));
    return env;
}

static opstate_lmdb_store *open_store(opstate_lmdb *env, uint64_t compact_bytes)
{
    opstate_lmdb_store_config c;
    opstate_lmdb_store *st;
    memset(&c, 0, sizeof c);
    c.name = STORE_NAME;
    c.read_through = true;
    c.compact_bytes = compact_bytes;
    CK(opstate_lmdb_store_open(env, &c, &st, NULL));
    return st;
}

static long long file_size(const char *dir)
{
    char path[1024];
    struct stat s;
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    return stat(path, &s) == 0 ? (long long)s.st_size : -1;
}

/* Drops dir/data.mdb's clean pages from the page cache: what the next
   process reads is read from disk and charged to its own cgroup. */
static void drop_cache(const char *dir)
{
    char path[1024];
    int fd;
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    if ((fd = open(path, O_RDONLY)) < 0) return;
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    close(fd);
}

/* Resident anonymous memory of this process, KiB (the heap, LMDB's dirty
   pages; not the mapped files). */
static long rss_anon_kib(void)
{
    char line[256];
    long v = -1;
    FILE *f = fopen("/proc/self/status", "r");
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "RssAnon: %ld", &v) == 1) break;
    if (f) fclose(f);
    return v;
}

static double mib(double bytes) { return bytes / 1048576.0; }

/* ---- fill ----------------------------------------------------------------- */

typedef struct fill_batch {
    opstate_lmdb_append_item items[BATCH];
    opstate_append_result out[BATCH];
    opstate_id ids[BATCH];
    char subjects[BATCH][64];
    uint8_t *data; /* BATCH slots of data_cap bytes */
    size_t data_cap;
    uint8_t value[MAX_VALUE];
    size_t value_len;
} fill_batch;

/* Event `serial`: a put of a random key, encoded into slot i of the batch. */
static void fill_one(fill_batch *b, size_t i, uint64_t serial)
{
    opstate_event ev;
    char key[KEY_LEN + 1];
    uint8_t entropy[8];
    size_t len;
    memset(&ev, 0, sizeof ev);
    snprintf(key, sizeof key, "item-%019llu", (unsigned long long)(rnd() % UINT64_C(10000000000000000000)));
    snprintf((char *)b->value, 21, "%020llu", (unsigned long long)serial); /* the value's first 20 bytes */
    b->value[20] = '.';
    ev.scope.ptr = (const uint8_t *)"bench";
    ev.scope.len = 5;
    ev.kind.ptr = (const uint8_t *)"item";
    ev.kind.len = 4;
    ev.key.ptr = (const uint8_t *)key;
    ev.key.len = KEY_LEN;
    ev.op = OPSTATE_OP_PUT;
    ev.data.ptr = b->value;
    ev.data.len = b->value_len;
    ev.has_time = true;
    ev.time = INT64_C(1700000000000000000) + (int64_t)serial * 1000;
    memcpy(entropy, &serial, sizeof entropy);
    CK(opstate_id_time_ordered(ev.time, entropy, &b->ids[i]));
    ev.id = b->ids[i];
    CK(opstate_subject_build("mc", 2, ev.scope, ev.kind, ev.key, b->subjects[i], sizeof b->subjects[i], &len, NULL));
    memset(&b->items[i], 0, sizeof b->items[i]);
    b->items[i].subject.ptr = (const uint8_t *)b->subjects[i];
    b->items[i].subject.len = len;
    CK(opstate_event_encode(&ev, b->data + i * b->data_cap, b->data_cap, &len, NULL));
    b->items[i].data.ptr = b->data + i * b->data_cap;
    b->items[i].data.len = len;
    b->items[i].opts.msg_id = &b->ids[i];
}

static int cmd_fill(const char *log_dir, uint64_t events, uint64_t value_len, uint64_t seed)
{
    opstate_lmdb *env = open_env(log_dir, OPSTATE_LMDB_CREATE, OPSTATE_LMDB_SYNC_NONE, false);
    opstate_lmdb_log *lg;
    fill_batch *b = calloc(1, sizeof *b);
    uint64_t done = 0;
    double t0 = now_ms();
    if (!b || value_len < 24 || value_len > MAX_VALUE) die("fill", "no memory or VALUE_LEN not in 24..4000");
    b->value_len = (size_t)value_len;
    memset(b->value, 'x', sizeof b->value);
    b->data_cap = 128 + b->value_len;
    if (!(b->data = malloc(BATCH * b->data_cap))) die("fill", "no memory");
    g_rng ^= seed * UINT64_C(0xd1b54a32d192ed03); /* another seed, another key set */
    if (!g_rng) g_rng = 1;
    CK(opstate_lmdb_log_open(env, NULL, &lg, NULL));
    while (done < events) {
        size_t n = events - done < BATCH ? (size_t)(events - done) : BATCH, i;
        for (i = 0; i < n; i++) fill_one(b, i, done + i + 1);
        CK(opstate_lmdb_log_append_batch(lg, b->items, n, b->out, NULL));
        done += n;
    }
    CK(opstate_lmdb_sync(env, NULL));
    opstate_lmdb_log_close(lg);
    opstate_lmdb_close(env);
    printf("fill     %llu events of %llu-byte values in %.1f s (%.0f events/s); log data.mdb %.0f MiB\n",
           (unsigned long long)events, (unsigned long long)value_len, (now_ms() - t0) / 1e3,
           (double)events / ((now_ms() - t0) / 1e3), mib((double)file_size(log_dir)));
    free(b->data);
    free(b);
    return 0;
}

/* ---- a read-through consumer -------------------------------------------- */

typedef struct app {
    opstate_lmdb *log_env, *state_env;
    opstate_lmdb_log *log;
    opstate_lmdb_store *store;
    opstate_consumer *c;
} app;

/* Environments, log and store; the consumer is opened by the caller. */
static void app_open(app *a, const char *log_dir, const char *state_dir, uint64_t compact_bytes)
{
    a->log_env = open_env(log_dir, OPSTATE_LMDB_READ_ONLY, OPSTATE_LMDB_SYNC_FULL, false);
    a->state_env = open_env(state_dir, OPSTATE_LMDB_CREATE, OPSTATE_LMDB_SYNC_FULL, true);
    CK(opstate_lmdb_log_open(a->log_env, NULL, &a->log, NULL));
    a->store = open_store(a->state_env, compact_bytes);
}

static void app_consumer_open(app *a, uint64_t flush_every, opstate_apply_fn apply, void *apply_user)
{
    opstate_consumer_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.apply = apply; /* NULL: opstate_apply_default */
    cfg.apply_user = apply_user;
    cfg.log = opstate_lmdb_log_iface(a->log);
    cfg.store = opstate_lmdb_store_iface(a->store);
    cfg.flush_every = flush_every;
    cfg.diag.fn = diag_to_stderr;
    CK(opstate_consumer_open(&cfg, &a->c, NULL));
}

/* The way to the target: when each 1/MILESTONES of it was reached. */
#define LINE_EVERY_MS 15000.0 /* a progress line at least this often */

typedef struct progress {
    uint64_t target, entry_bytes;
    double start, t[MILESTONES + 1];
    uint64_t applied[MILESTONES + 1];
    int reached;
    double line_t; /* the last progress line: when, and events applied then */
    uint64_t line_applied;
} progress;

static double rate(const progress *p, int from, int to)
{
    return (double)(p->applied[to] - p->applied[from]) / ((p->t[to] - p->t[from]) / 1e3);
}

static void progress_line(progress *p, const app *a, uint64_t bytes, double now)
{
    const opstate_consumer_status *s = opstate_consumer_get_status(a->c);
    uint32_t deltas;
    uint64_t delta_bytes;
    opstate_lmdb_store_deltas(a->store, &deltas, &delta_bytes);
    printf("progress %3d%%  %5.1f s  %9llu events  %8.1f MiB state  %7.0f events/s (since the last line)  "
           "rss_anon %5.1f MiB  fold %5.1f MiB  flushes %llu  compactions %llu (%llu failed)  deltas %u / %.1f MiB\n",
           (int)(bytes * 100 / p->target), (now - p->start) / 1e3, (unsigned long long)s->applied, mib((double)bytes),
           (double)(s->applied - p->line_applied) / ((now - p->line_t) / 1e3), (double)rss_anon_kib() / 1024.0,
           mib((double)opstate_kv_memory(opstate_consumer_kv(a->c))), (unsigned long long)s->flushes,
           (unsigned long long)s->compactions, (unsigned long long)s->compaction_failures, deltas,
           mib((double)delta_bytes));
    fflush(stdout);
    p->line_t = now;
    p->line_applied = s->applied;
}

/* Records the milestones the state passed, prints a line every 1/8 of the
   way (and every LINE_EVERY_MS); true when the target is reached. */
static bool progress_track(progress *p, const app *a)
{
    uint64_t bytes = opstate_kv_count(opstate_consumer_kv(a->c)) * p->entry_bytes;
    double now = now_ms();
    bool line = now - p->line_t >= LINE_EVERY_MS;
    while (p->reached < MILESTONES && bytes >= p->target / MILESTONES * (uint64_t)(p->reached + 1)) {
        p->reached++;
        p->t[p->reached] = now;
        p->applied[p->reached] = opstate_consumer_get_status(a->c)->applied;
        line = line || p->reached % (MILESTONES / 8) == 0;
    }
    if (line) progress_line(p, a, bytes, now);
    return p->reached == MILESTONES;
}

/* The throughput of the first and last quarter of the way. */
static void print_quarters(const progress *p)
{
    double first = rate(p, 0, MILESTONES / 4), last = rate(p, MILESTONES * 3 / 4, MILESTONES);
    printf("quarters first %.0f events/s, last %.0f events/s (last/first %.2f)\n", first, last, last / first);
}

/* Once at the target: READY when the tail of deltas first holds half the
   overdue bound (2 x compact_bytes), so that the small and the large state
   are killed with about the same tail (the script kills at once). */
static bool tail_ready(const app *a, uint64_t compact_bytes)
{
    uint32_t deltas;
    uint64_t bytes;
    opstate_lmdb_store_deltas(a->store, &deltas, &bytes);
    if (bytes < 2 * (compact_bytes ? compact_bytes : (uint64_t)8 << 20)) return false;
    printf("READY (tail %u deltas / %.2f MiB)\n", deltas, mib((double)bytes));
    fflush(stdout);
    return true;
}

static int cmd_consume(const char *log_dir, const char *state_dir, uint64_t target, uint64_t value_len,
                       uint64_t compact_bytes, uint64_t flush_every)
{
    app a;
    progress p;
    opstate_poll_result pr;
    int stage = 0; /* 1: at the target, 2: READY printed */
    memset(&p, 0, sizeof p);
    p.target = target;
    p.entry_bytes = FOLD_KEY_LEN + value_len;
    drop_cache(log_dir);
    drop_cache(state_dir);
    app_open(&a, log_dir, state_dir, compact_bytes);
    app_consumer_open(&a, flush_every, NULL, NULL);
    p.start = p.t[0] = p.line_t = now_ms();
    for (;;) {
        /* one batch (256) per poll: an overdue compaction waits one batch at most */
        CK(opstate_consumer_poll(a.c, 0, 0, &pr, NULL));
        if (stage == 0 && progress_track(&p, &a)) {
            print_quarters(&p);
            stage = 1;
        }
        if (stage == 1 && tail_ready(&a, compact_bytes)) stage = 2; /* the script kills -9 from here on */
        if (pr.caught_up && stage < 2) {
            printf("log exhausted at %llu events before the target and tail\n",
                   (unsigned long long)opstate_consumer_get_status(a.c)->applied);
            return 3;
        }
        if (pr.caught_up) sleep(1);
    }
}

/* A restart: open, load the tail, apply one event. The apply below reports
   and ends the process with _exit at once, as a crash would: before the
   poll's flush or compaction (an overdue tail is compacted in the poll that
   follows a restart), so the next restart finds the same tail. */
typedef struct restart_probe {
    app a;
    double t0, t_open;
    uint32_t deltas;
    uint64_t delta_bytes;
} restart_probe;

static opstate_apply_outcome apply_and_report(void *user, opstate_kv *kv, const opstate_event *ev)
{
    restart_probe *p = (restart_probe *)user;
    opstate_apply_outcome o = opstate_apply_default(NULL, kv, ev);
    double t1 = now_ms();
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("restart %.2f ms (open %.2f ms)  restored seq %llu  first applied seq %llu  keys %llu  tail %u deltas / "
           "%.2f MiB  major faults %ld  rss_anon %.1f MiB\n",
           t1 - p->t0, p->t_open - p->t0, (unsigned long long)opstate_consumer_get_status(p->a.c)->restored.seq,
           (unsigned long long)ev->position.seq, (unsigned long long)opstate_kv_count(kv), p->deltas,
           mib((double)p->delta_bytes), ru.ru_majflt, (double)rss_anon_kib() / 1024.0);
    fflush(stdout);
    _exit(o == OPSTATE_APPLY_DONE ? 0 : 4);
}

static int cmd_restart(const char *log_dir, const char *state_dir, uint64_t compact_bytes, uint64_t flush_every)
{
    static restart_probe p;
    opstate_poll_result pr;
    drop_cache(log_dir);
    drop_cache(state_dir);
    p.t0 = now_ms();
    app_open(&p.a, log_dir, state_dir, compact_bytes);
    opstate_lmdb_store_deltas(p.a.store, &p.deltas, &p.delta_bytes);
    app_consumer_open(&p.a, flush_every, apply_and_report, &p);
    p.t_open = now_ms();
    do {
        CK(opstate_consumer_poll(p.a.c, 1, 0, &pr, NULL));
    } while (!pr.caught_up);
    die("restart", "no event left to apply");
    return 2;
}

/* ---- stat: the table as raw LMDB sees it ----------------------------------- */

static int cmd_stat(const char *state_dir, const char *log_dir)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_stat st;
    MDB_cursor *cur;
    MDB_val k, v;
    uint64_t bytes = 0;
    int rc;
    CKM(mdb_env_create(&env));
    CKM(mdb_env_set_maxdbs(env, 64));
    CKM(mdb_env_open(env, state_dir, MDB_RDONLY | MDB_NOTLS, 0600));
    CKM(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn));
    CKM(mdb_dbi_open(txn, TABLE_DB, 0, &dbi));
    CKM(mdb_stat(txn, dbi, &st));
    CKM(mdb_cursor_open(txn, dbi, &cur));
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT))
        bytes += k.mv_size + v.mv_size - TABLE_VALUE_EXTRA;
    mdb_cursor_close(cur);
    printf("table    %llu entries, depth %u, %llu pages of %u B = %.1f MiB on disk; keys + values %.1f MiB; "
           "store data.mdb %.1f MiB, log data.mdb %.1f MiB\n",
           (unsigned long long)st.ms_entries, st.ms_depth,
           (unsigned long long)(st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages), st.ms_psize,
           mib((double)(st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages) * st.ms_psize),
           mib((double)bytes), mib((double)file_size(state_dir)), mib((double)file_size(log_dir)));
    mdb_txn_abort(txn);
    mdb_env_close(env);
    return 0;
}

int main(int argc, char **argv)
{
    const char *cmd = argc > 1 ? argv[1] : "";
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (!strcmp(cmd, "fill") && argc == 6) return cmd_fill(argv[2], arg_u64(argv[3]), arg_u64(argv[4]), arg_u64(argv[5]));
    if (!strcmp(cmd, "consume") && argc == 8)
        return cmd_consume(argv[2], argv[3], arg_u64(argv[4]), arg_u64(argv[5]), arg_u64(argv[6]), arg_u64(argv[7]));
    if (!strcmp(cmd, "restart") && argc == 6) return cmd_restart(argv[2], argv[3], arg_u64(argv[4]), arg_u64(argv[5]));
    if (!strcmp(cmd, "stat") && argc == 4) return cmd_stat(argv[2], argv[3]);
    fprintf(stderr, "usage: bench_memcap fill LOGDIR EVENTS VALUE_LEN SEED\n"
                    "       bench_memcap consume LOGDIR STATEDIR TARGET_BYTES VALUE_LEN COMPACT_BYTES FLUSH_EVERY\n"
                    "       bench_memcap restart LOGDIR STATEDIR COMPACT_BYTES FLUSH_EVERY\n"
                    "       bench_memcap stat STATEDIR LOGDIR\n"
                    "(scripts/bench_memcap.sh runs them inside a memory cgroup)\n");
    return 2;
}
