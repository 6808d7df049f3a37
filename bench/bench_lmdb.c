/* bench_lmdb.c — opstate_lmdb.h figures as ratios against baselines measured
   in the same run (these machines are noisy and their storage drifts;
   absolute numbers are context only, the ratios are the result).

     cc -std=c99 -O2 -D_POSIX_C_SOURCE=200809L -I. bench/bench_lmdb.c -llmdb -lsqlite3 -o build/bench_lmdb
     ./build/bench_lmdb            (2-3 minutes; about 4 GB of temp files under $TMPDIR or /tmp, removed at exit)
     ./build/bench_lmdb --no-1g    (skips the 1 GiB restart point: ~35 s less, ~2.5 GB less)
     BENCH_QUICK=1 ./build/bench_lmdb   (restart points up to 16 MiB, histories up to 200k events,
                                   80 bursts in part 4: the short run of `make bench QUICK=1`)
     ./build/bench_lmdb --only poll_latency_with_compaction    (one part: flush_latency, restart_latency,
                                   recovery_as_history_grows or poll_latency_with_compaction)

   Everything is durable (OPSTATE_LMDB_SYNC_FULL, i.e. LMDB's default
   fdatasync + synced meta page) unless a line says otherwise. Every
   baseline uses the same env flags (MDB_NOTLS + the same sync flags), the
   same durability, one transaction per flush, prepared statements reused.
   Keys are "site1\0host\0host-%08u" (24 bytes), values 100 bytes. The
   program first prints the durable floor of the disk right now (4 KiB
   pwrite + fdatasync): every durable ratio is squeezed towards 1 when that
   floor is high.

   1a. Durable flush of 1,000 random dirty keys out of a 100,000-key state,
       p50 / p99 over 100 flushes (5 warm-up flushes not counted), each a
       different random 1,000 keys, the contenders interleaved flush by flush:
         opstate  an opstate_kv holding the state + the store interface's
                  flush (fold, meta, a full 1,024-id dedup window; 1,000 new
                  ids per flush), compaction disabled;
         (i)   raw LMDB: ONE record holding the same 1,000 items, same bytes
               (MDB_RESERVE|MDB_APPEND on a sequence-keyed table) + a 64-byte
               meta put, one txn. Its env is seeded with the free space the
               store's first flush + compaction left (a 14.9 MB record
               appended then dropped), so neither side pays file growth
               where the other does not. Info: the same with a meta of the
               store's meta size (16 KiB: the dedup window);
         (ii)  raw LMDB: per-key puts of the 1,000 keys (sorted first) into a
               densely packed 100,000-key B-tree + the meta put, one txn;
         (iii) SQLite WAL, synchronous=FULL, 64 MiB cache, secure_delete
               off: the whole state serialized (reused buffer, timed) and
               UPSERTed as ONE blob row with the position columns in the same
               row. 4 KiB and 64 KiB pages are both measured; the faster is
               the baseline (the fastest honest way).
       A "bound" line gives how much faster than (iii) the raw append (i)
       itself is: no LMDB flush of these bytes can beat that ratio.
   1b. The same with compaction on (default config: 64 flushes or 8 MiB of
       deltas), mean per flush including the compactions, over three whole
       compaction cycles, vs (ii) interleaved.
   1c. opstate p50 under SYNC_FULL / SYNC_NO_META / SYNC_NONE, with (i),
       (ii) and (iii) in the matching mode (LMDB flags; SQLite synchronous
       FULL / NORMAL / OFF): shows what is left once the flush floor goes.
   2.  Restart to first applied event, warm (the data is in the page
       cache, as in the probe), each restart in a fresh process (this
       program run again with --restart WAY PATH) and timed inside it: open
       env + store, opstate_consumer_open over a memory
       log holding one new event, poll until it is applied. The store has a
       tail of 4 delta records of 256 keys pending (and the dedup window).
       vs the SQLite whole-row way: open the db, read the row, decode the
       blob into an opstate_kv, apply the same event (default pages, and
       64 KiB pages + mmap; the faster is the baseline). Read-through and
       load-all at 8 MiB, median of 15. As the state grows (the plot),
       median of 11, all sizes interleaved repetition by repetition:
       read-through 1 MiB -> 1 GiB with the tail pending and with it
       compacted; load-all and the baseline SQLite way 1 -> 128 MiB with
       the tail pending (at 1 GiB the SQLite row would pass SQLite's
       maximum blob length, SQLITE_LIMIT_LENGTH, 1e9 bytes by default, and
       load-all would copy the whole state into RAM for minutes of
       repetitions: a line gives this run's figures). Load-all is judged
       against its same-run bound, interleaved with it, median against
       median: ONE raw LMDB pass doing the work any load of this table must
       do and nothing more (the env opened as the store opens it,
       read-write with the same flags and limits; a read txn; the entry
       count to reserve the map; a cursor over the table checking each
       record's CRC32C, as the table format and DESIGN.md's storage
       integrity demand; the same key and value copies into an opstate_kv;
       the same event applied). Info lines give the same pass checking
       nothing, and the former bound (the fastest read-only walk plus the
       fastest map build from items in memory, measured apart: biased low,
       see load_all_report).
   3.  Recovery as history grows: a consumer folded 10k / 100k / 1M events
       of a memory log (10,000 keys, a flush every 1,000 events, default
       compaction); restart to the first new event, as the consumer left
       the store and with its deltas compacted, interleaved, median of 11.
   4.  Polls while compactions happen: two live consumers over one memory
       log, 320 bursts of 1,000 events over 100,000 keys, a durable flush
       per burst; each polls until a poll finds nothing (a live loop), every
       poll timed. One store compacts at the default bound (a due compaction
       runs in a poll that found nothing to apply), the other never. The
       p50 / p99 / max of every poll and of the polls that applied events,
       on against off, and where the compactions ran.
   Verdicts: PASS/MISS against the targets in DESIGN.md ("Performance
   targets"). Info lines add CPU time and minor page faults (restarts), so a
   MISS can be traced to where the time goes. */
#define OPSTATE_IMPLEMENTATION
#define OPSTATE_LMDB_IMPLEMENTATION
#include "../opstate_lmdb.h"
#include "bench_util.h"
#include <lmdb.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <malloc.h>
#include <string.h>
#include <time.h>
#include <errno.h>
#include <dirent.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/statvfs.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <fcntl.h>

#define KEY_LEN 24
#define VAL_LEN 100
#define ITEM_LEN (1 + 4 + KEY_LEN + 4 + VAL_LEN + 16) /* a delta item, as opstate_lmdb writes it */
#define SER_LEN (4 + KEY_LEN + 4 + VAL_LEN + 16)      /* a key in the SQLite blob */

#define K1 100000u   /* keys in the flush state */
#define D1 1000u     /* dirty keys per flush */
#define ROUNDS1 100  /* flushes measured in 1a */
#define WARM1 5
#define ROUNDS1C 64
#define REPS2 15     /* restarts measured at 8 MiB */
#define REPS3 11     /* restarts measured per size / history */
#define DEDUP_CAP 1024u

static char g_root[1024];
static int g_skip_1g;
static const char *g_only; /* --only PART: run that part alone */
static volatile uint64_t g_sink;

/* ---- plumbing ---------------------------------------------------------- */

static void rm_rf(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0) return;
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        struct dirent *de;
        char sub[4096];
        while (d && (de = readdir(d)) != NULL) {
            if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
            snprintf(sub, sizeof sub, "%s/%s", path, de->d_name);
            rm_rf(sub);
        }
        if (d) closedir(d);
        rmdir(path);
    } else {
        unlink(path);
    }
}

static void die(const char *what, long code, int line)
{
    fprintf(stderr, "bench_lmdb: line %d: %s failed (%ld)\n", line, what, code);
    if (g_root[0]) rm_rf(g_root);
    exit(1);
}

#define CK(expr)                                                        \
    do {                                                                \
        opstate_result r_ = (expr);                                     \
        if (r_ != OPSTATE_OK) die(#expr, (long)r_, __LINE__);           \
    } while (0)
#define CKM(expr)                                                       \
    do {                                                                \
        int rc_ = (expr);                                               \
        if (rc_ != 0) die(#expr, (long)rc_, __LINE__);                  \
    } while (0)
#define CKS(expr)                                                       \
    do {                                                                \
        int rc_ = (expr);                                               \
        if (rc_ != SQLITE_OK && rc_ != SQLITE_DONE && rc_ != SQLITE_ROW) \
            die(#expr, (long)rc_, __LINE__);                            \
    } while (0)

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of n samples (sorts a copy). */
static double pct(const double *v, size_t n, double p)
{
    double *c = malloc(n * sizeof *c), r;
    size_t k;
    memcpy(c, v, n * sizeof *c);
    qsort(c, n, sizeof *c, cmp_double);
    k = (size_t)(p / 100.0 * (double)n + 0.999999);
    if (k < 1) k = 1;
    if (k > n) k = n;
    r = c[k - 1];
    free(c);
    return r;
}

static double mean(const double *v, size_t n)
{
    double s = 0;
    size_t i;
    for (i = 0; i < n; i++) s += v[i];
    return s / (double)n;
}

/* The distribution of n samples as report points: percentile -> value. */
static void report_percentiles(const char *series, const double *v, size_t n)
{
    static const double at[] = {1, 10, 25, 50, 75, 90, 95, 99, 100};
    size_t i;
    for (i = 0; i < sizeof at / sizeof at[0]; i++) report_data(series, at[i], pct(v, n, at[i]));
}

/* One report row: figure text from a format. */
static void report_row(const char *row, int ok, const char *bound, const char *fmt, double a, double b, double c)
{
    char fig[200];
    snprintf(fig, sizeof fig, fmt, a, b, c);
    report_target(row, fig, ok, bound);
}


static void path_of(char *out, size_t cap, const char *name) { snprintf(out, cap, "%s/%s", g_root, name); }

static void make_key(uint8_t *out, uint64_t i)
{
    char tail[16];
    memcpy(out, "site1\0host\0", 11);
    snprintf(tail, sizeof tail, "host-%08lu", (unsigned long)(i % 100000000u));
    memcpy(out + 11, tail, 13);
}

static void make_value(uint8_t *out, uint64_t i, uint64_t ver)
{
    char buf[VAL_LEN + 32];
    int n = snprintf(buf, sizeof buf, "{\"state\":\"up\",\"host\":%lu,\"ver\":%lu,\"rtt_us\":%lu,\"pad\":\"",
                     (unsigned long)i, (unsigned long)ver, (unsigned long)((i * 7919u + ver) % 100000u));
    memset(buf + n, 'x', sizeof buf - (size_t)n);
    memcpy(out, buf, VAL_LEN - 2);
    out[VAL_LEN - 2] = '"';
    out[VAL_LEN - 1] = '}';
}

static opstate_bytes B(const void *p, size_t n)
{
    opstate_bytes b;
    b.ptr = (const uint8_t *)p;
    b.len = n;
    return b;
}

static opstate_position P(uint64_t seq, int64_t time, uint64_t epoch)
{
    opstate_position p;
    p.seq = seq;
    p.time = time;
    p.epoch = epoch;
    return p;
}

/* ---- an opstate LMDB store ------------------------------------------------ */

typedef struct ostore {
    opstate_lmdb *env;
    opstate_lmdb_store *st;
    opstate_store iface;
} ostore;

/* keep_tail: closing leaves the delta records pending (the store's default
   compacts them at close), for the stores part 2 builds with a tail and
   the restarts that must find it again. */
static void ostore_open_as(ostore *o, const char *path, opstate_lmdb_durability d, bool read_through,
                           uint32_t compact_flushes, uint64_t compact_bytes, bool keep_tail)
{
    opstate_lmdb_config ec;
    opstate_lmdb_store_config sc;
    opstate_error err;
    memset(&ec, 0, sizeof ec);
    memset(&sc, 0, sizeof sc);
    ec.path = path;
    ec.durability = d;
    sc.name = "bench";
    sc.read_through = read_through;
    sc.compact_flushes = compact_flushes;
    sc.compact_bytes = compact_bytes;
    sc.no_compact_on_close = keep_tail;
    CK(opstate_lmdb_open(&ec, &o->env, &err));
    CK(opstate_lmdb_store_open(o->env, &sc, &o->st, &err));
    o->iface = opstate_lmdb_store_iface(o->st);
}

static void ostore_open(ostore *o, const char *path, opstate_lmdb_durability d, bool read_through,
                        uint32_t compact_flushes, uint64_t compact_bytes)
{
    ostore_open_as(o, path, d, read_through, compact_flushes, compact_bytes, false);
}

static void ostore_close(ostore *o)
{
    opstate_lmdb_store_close(o->st);
    opstate_lmdb_close(o->env);
}

static double ostore_flush(ostore *o, opstate_kv *kv, uint64_t seq, const opstate_dedup *dd)
{
    opstate_snapshot_meta meta;
    opstate_error err;
    double t;
    meta.schema_version = 0;
    meta.position = P(seq, (int64_t)seq * 1000, 1);
    t = now_ms();
    CK(o->iface.flush(o->iface.user, kv, &meta, dd, &err));
    opstate_kv_mark_clean(kv); /* what the consumer does after a flush */
    return now_ms() - t;
}

/* The consumer's compaction step: when the store says one is due, compact
   and let a read-through fold forget what the table absorbed. */
static double ostore_compact_if_due(ostore *o, opstate_kv *kv)
{
    opstate_error err;
    double t = now_ms();
    if (o->iface.compact_due(o->iface.user) == OPSTATE_COMPACTION_NOT_DUE) return 0;
    CK(opstate_store_compact(&o->iface, kv, &err));
    return now_ms() - t;
}

/* ---- raw LMDB ---------------------------------------------------------------- */

typedef struct rawenv {
    MDB_env *env;
    MDB_dbi data, meta;
    uint64_t next;
} rawenv;

static unsigned sync_flags(opstate_lmdb_durability d)
{
    return d == OPSTATE_LMDB_SYNC_NO_META ? MDB_NOMETASYNC : d == OPSTATE_LMDB_SYNC_NONE ? MDB_NOSYNC : 0u;
}

static void raw_open(rawenv *r, const char *path, opstate_lmdb_durability d)
{
    MDB_txn *txn;
    mkdir(path, 0700);
    CKM(mdb_env_create(&r->env));
    CKM(mdb_env_set_mapsize(r->env, (size_t)1 << 30));
    CKM(mdb_env_set_maxdbs(r->env, 4));
    CKM(mdb_env_set_maxreaders(r->env, 126));
    CKM(mdb_env_open(r->env, path, MDB_NOTLS | sync_flags(d), 0600)); /* the flags opstate_lmdb uses */
    CKM(mdb_txn_begin(r->env, NULL, 0, &txn));
    CKM(mdb_dbi_open(txn, "data", MDB_CREATE, &r->data));
    CKM(mdb_dbi_open(txn, "meta", MDB_CREATE, &r->meta));
    CKM(mdb_txn_commit(txn));
    r->next = 1;
}

static void raw_close(rawenv *r) { mdb_env_close(r->env); }

static void be64(uint8_t *p, uint64_t v)
{
    int i;
    for (i = 7; i >= 0; i--, v >>= 8) p[i] = (uint8_t)v;
}

/* ---- workload 1: a 100,000-key state ---------------------------------------- */

static uint8_t (*keys1)[KEY_LEN];
static uint8_t (*vals1)[VAL_LEN];
static uint64_t *seq1, *ver1;
static uint32_t *perm1;
static uint64_t g_seq1;

static void w1_init(void)
{
    uint32_t i;
    keys1 = malloc((size_t)K1 * KEY_LEN);
    vals1 = malloc((size_t)K1 * VAL_LEN);
    seq1 = calloc(K1, sizeof *seq1);
    ver1 = calloc(K1, sizeof *ver1);
    perm1 = malloc(K1 * sizeof *perm1);
    for (i = 0; i < K1; i++) {
        make_key(keys1[i], i);
        make_value(vals1[i], i, 0);
        seq1[i] = 1;
        perm1[i] = i;
    }
    g_seq1 = 1;
}

/* A fresh random set of D1 distinct keys, given new values and positions. */
static void w1_pick(uint32_t *idx)
{
    uint32_t j;
    for (j = 0; j < D1; j++) {
        uint32_t k = j + (uint32_t)(rnd() % (K1 - j)), t = perm1[j], i;
        perm1[j] = perm1[k];
        perm1[k] = t;
        i = idx[j] = perm1[j];
        make_value(vals1[i], i, ++ver1[i]);
        seq1[i] = ++g_seq1;
    }
}

static void w1_kv_put(opstate_kv *kv, const uint32_t *idx, size_t n)
{
    size_t j;
    for (j = 0; j < n; j++) {
        uint32_t i = idx[j];
        CK(opstate_kv_put(kv, B(keys1[i], KEY_LEN), B(vals1[i], VAL_LEN), P(seq1[i], (int64_t)seq1[i] * 1000, 0)));
    }
}

/* The whole state into a fold, one flush, one compaction: the table holds it. */
static opstate_kv *w1_populate(ostore *o, const opstate_dedup *dd)
{
    opstate_kv *kv;
    opstate_error err;
    uint32_t i;
    CK(opstate_kv_create(NULL, &kv));
    for (i = 0; i < K1; i++) CK(opstate_kv_put(kv, B(keys1[i], KEY_LEN), B(vals1[i], VAL_LEN), P(seq1[i], 1000, 0)));
    ostore_flush(o, kv, g_seq1, dd);
    CK(opstate_lmdb_store_compact(o->st, &err));
    return kv;
}

/* (i) seeding: the free space the store's first flush + compaction left. */
static void raw_seed_free(rawenv *r)
{
    MDB_txn *txn;
    MDB_val k, v;
    uint8_t key[8];
    be64(key, 0);
    k.mv_data = key;
    k.mv_size = 8;
    v.mv_size = 8 + (size_t)K1 * ITEM_LEN;
    CKM(mdb_txn_begin(r->env, NULL, 0, &txn));
    CKM(mdb_put(txn, r->data, &k, &v, MDB_RESERVE | MDB_APPEND));
    memset(v.mv_data, 0, v.mv_size);
    CKM(mdb_txn_commit(txn));
    CKM(mdb_txn_begin(r->env, NULL, 0, &txn));
    CKM(mdb_drop(txn, r->data, 0));
    CKM(mdb_txn_commit(txn));
}

static void raw_meta_put(rawenv *r, MDB_txn *txn, const uint8_t *meta, size_t meta_len)
{
    MDB_val k, v;
    k.mv_data = (void *)"meta";
    k.mv_size = 4;
    v.mv_data = (void *)(uintptr_t)meta;
    v.mv_size = meta_len;
    CKM(mdb_put(txn, r->meta, &k, &v, 0));
}

/* (i): one record holding the n items (same layout and size as an
   opstate_lmdb delta record) + the meta, one transaction. */
static double raw_append(rawenv *r, const uint32_t *idx, size_t n, const uint8_t *meta, size_t meta_len)
{
    MDB_txn *txn;
    MDB_val k, v;
    uint8_t key[8], *p;
    size_t j;
    double t = now_ms();
    CKM(mdb_txn_begin(r->env, NULL, 0, &txn));
    be64(key, r->next++);
    k.mv_data = key;
    k.mv_size = 8;
    v.mv_size = 8 + n * ITEM_LEN;
    CKM(mdb_put(txn, r->data, &k, &v, MDB_RESERVE | MDB_APPEND));
    p = (uint8_t *)v.mv_data;
    opstate_put_le32(p, (uint32_t)n);
    p += 4;
    for (j = 0; j < n; j++) {
        uint32_t i = idx[j];
        p[0] = OPSTATE_OP_PUT;
        opstate_put_le32(p + 1, KEY_LEN);
        memcpy(p + 5, keys1[i], KEY_LEN);
        p += 5 + KEY_LEN;
        opstate_put_le32(p, VAL_LEN);
        memcpy(p + 4, vals1[i], VAL_LEN);
        p += 4 + VAL_LEN;
        opstate_put_le64(p, seq1[i]);
        opstate_put_le64(p + 8, seq1[i] * 1000);
        p += 16;
    }
    memset(p, 0, 4);
    raw_meta_put(r, txn, meta, meta_len);
    CKM(mdb_txn_commit(txn));
    return now_ms() - t;
}

/* (ii): per-key puts into the 100,000-key B-tree (values: seq | time |
   value) + the meta, one transaction; keys sorted first. */
static void raw_table_populate(rawenv *r)
{
    MDB_txn *txn;
    MDB_val k, v;
    uint8_t rec[16 + VAL_LEN];
    uint32_t i;
    CKM(mdb_txn_begin(r->env, NULL, 0, &txn));
    for (i = 0; i < K1; i++) {
        k.mv_data = keys1[i];
        k.mv_size = KEY_LEN;
        opstate_put_le64(rec, seq1[i]);
        opstate_put_le64(rec + 8, seq1[i] * 1000);
        memcpy(rec + 16, vals1[i], VAL_LEN);
        v.mv_data = rec;
        v.mv_size = sizeof rec;
        CKM(mdb_put(txn, r->data, &k, &v, MDB_APPEND));
    }
    CKM(mdb_txn_commit(txn));
}

static double raw_perkey(rawenv *r, const uint32_t *idx, size_t n, const uint8_t *meta, size_t meta_len)
{
    MDB_txn *txn;
    MDB_val k, v;
    uint32_t sorted[D1];
    size_t j;
    double t = now_ms();
    memcpy(sorted, idx, n * sizeof *idx);
    qsort(sorted, n, sizeof *sorted, cmp_u32); /* key order == index order */
    CKM(mdb_txn_begin(r->env, NULL, 0, &txn));
    for (j = 0; j < n; j++) {
        uint32_t i = sorted[j];
        uint8_t *p;
        k.mv_data = keys1[i];
        k.mv_size = KEY_LEN;
        v.mv_size = 16 + VAL_LEN;
        CKM(mdb_put(txn, r->data, &k, &v, MDB_RESERVE));
        p = (uint8_t *)v.mv_data;
        opstate_put_le64(p, seq1[i]);
        opstate_put_le64(p + 8, seq1[i] * 1000);
        memcpy(p + 16, vals1[i], VAL_LEN);
    }
    raw_meta_put(r, txn, meta, meta_len);
    CKM(mdb_txn_commit(txn));
    return now_ms() - t;
}

/* ---- SQLite ------------------------------------------------------------------ */

typedef struct sqlenv {
    sqlite3 *db;
    sqlite3_stmt *up;
    int page;
} sqlenv;

static void sql_exec(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        fprintf(stderr, "sqlite: %s: %s\n", sql, msg ? msg : "?");
        die("sqlite3_exec", 0, __LINE__);
    }
}

static void sql_open(sqlenv *s, const char *path, int page_size, const char *synchronous)
{
    char pragma[64];
    CKS(sqlite3_open(path, &s->db));
    s->page = page_size;
    snprintf(pragma, sizeof pragma, "PRAGMA page_size=%d", page_size);
    sql_exec(s->db, pragma); /* before the first table: fixes the page size */
    sql_exec(s->db, "PRAGMA journal_mode=WAL");
    snprintf(pragma, sizeof pragma, "PRAGMA synchronous=%s", synchronous);
    sql_exec(s->db, pragma);
    sql_exec(s->db, "PRAGMA cache_size=-65536");
    sql_exec(s->db, "PRAGMA secure_delete=OFF");
    sql_exec(s->db, "CREATE TABLE IF NOT EXISTS snap(id INTEGER PRIMARY KEY, seq INTEGER NOT NULL, "
                    "time INTEGER NOT NULL, epoch INTEGER NOT NULL, state BLOB NOT NULL)");
    CKS(sqlite3_prepare_v2(s->db,
                           "INSERT INTO snap(id,seq,time,epoch,state) VALUES(1,?1,?2,?3,?4) ON CONFLICT(id) DO UPDATE "
                           "SET seq=excluded.seq,time=excluded.time,epoch=excluded.epoch,state=excluded.state",
                           -1, &s->up, NULL));
}

static void sql_close(sqlenv *s)
{
    sqlite3_finalize(s->up);
    sqlite3_close(s->db);
}

static double sql_put_blob(sqlenv *s, const uint8_t *blob, size_t n, uint64_t seq)
{
    double t = now_ms();
    CKS(sqlite3_bind_int64(s->up, 1, (sqlite3_int64)seq));
    CKS(sqlite3_bind_int64(s->up, 2, (sqlite3_int64)seq * 1000));
    CKS(sqlite3_bind_int64(s->up, 3, 1));
    CKS(sqlite3_bind_blob64(s->up, 4, blob, n, SQLITE_STATIC));
    if (sqlite3_step(s->up) != SQLITE_DONE) die("sqlite upsert", sqlite3_errcode(s->db), __LINE__);
    CKS(sqlite3_reset(s->up));
    return now_ms() - t;
}

static uint8_t *ser_item(uint8_t *p, const uint8_t *key, size_t klen, const uint8_t *val, size_t vlen, uint64_t seq,
                         int64_t time)
{
    opstate_put_le32(p, (uint32_t)klen);
    memcpy(p + 4, key, klen);
    p += 4 + klen;
    opstate_put_le32(p, (uint32_t)vlen);
    memcpy(p + 4, val, vlen);
    p += 4 + vlen;
    opstate_put_le64(p, seq);
    opstate_put_le64(p + 8, (uint64_t)time);
    return p + 16;
}

/* (iii): serialize the whole state into a reused buffer, UPSERT it. */
static double sql_flush_state(sqlenv *s, uint8_t *buf, uint64_t seq)
{
    uint8_t *p = buf;
    uint32_t i;
    double t = now_ms(), t2;
    opstate_put_le64(p, K1);
    p += 8;
    for (i = 0; i < K1; i++) p = ser_item(p, keys1[i], KEY_LEN, vals1[i], VAL_LEN, seq1[i], (int64_t)seq1[i] * 1000);
    t2 = now_ms() - t;
    return t2 + sql_put_blob(s, buf, (size_t)(p - buf), seq);
}

static void rm_sqlite(const char *path)
{
    char w[4200];
    rm_rf(path);
    snprintf(w, sizeof w, "%s-wal", path);
    rm_rf(w);
    snprintf(w, sizeof w, "%s-shm", path);
    rm_rf(w);
}

/* ---- 1: flush latency (1a, 1b, 1c) ---------------------------------------- */

static void fill_dedup(opstate_dedup *d, void **mem, uint32_t n)
{
    size_t bytes = opstate_dedup_storage_size(DEDUP_CAP);
    uint32_t i;
    *mem = malloc(bytes);
    CK(opstate_dedup_init(d, *mem, bytes, DEDUP_CAP));
    for (i = 0; i < n; i++) {
        opstate_id id;
        uint64_t a = rnd(), b = rnd();
        memcpy(id.bytes, &a, 8);
        memcpy(id.bytes + 8, &b, 8);
        opstate_dedup_insert(d, &id);
    }
}

static void flush_latency(void)
{
    char pa[4096], pb[4096], pb2[4096], pc[4096], ps4[4096], ps64[4096], pd[4096];
    ostore A, D;
    rawenv Bi, Bi2, C;
    sqlenv S4, S64;
    opstate_kv *kvA, *kvD;
    opstate_dedup dd;
    void *ddmem;
    uint8_t small_meta[64], *big_meta, *blob;
    size_t big_len;
    uint32_t idx[D1];
    static double ta[ROUNDS1], tb[ROUNDS1], tb2[ROUNDS1], tc[ROUNDS1], ts4[ROUNDS1], ts64[ROUNDS1];
    double p50a, p50b, p50c, p50s, p50s4, p50s64, t0;
    int r;

    memset(small_meta, 0x5a, sizeof small_meta);
    fill_dedup(&dd, &ddmem, DEDUP_CAP);
    opstate_dedup_encode(&dd, NULL, 0, &big_len);
    big_len += OPSTATE_LMDB__META_FIXED + 4; /* the size of the store's meta record */
    big_meta = malloc(big_len);
    memset(big_meta, 0x5a, big_len);
    blob = malloc(8 + (size_t)K1 * SER_LEN);

    t0 = now_ms();
    path_of(pa, sizeof pa, "p1_opstate");
    path_of(pb, sizeof pb, "p1_append");
    path_of(pb2, sizeof pb2, "p1_append_bigmeta");
    path_of(pc, sizeof pc, "p1_perkey");
    path_of(ps4, sizeof ps4, "p1_sqlite4k.db");
    path_of(ps64, sizeof ps64, "p1_sqlite64k.db");
    path_of(pd, sizeof pd, "p1b_opstate");
    ostore_open(&A, pa, OPSTATE_LMDB_SYNC_FULL, false, UINT32_MAX, UINT64_MAX);
    kvA = w1_populate(&A, &dd);
    raw_open(&Bi, pb, OPSTATE_LMDB_SYNC_FULL);
    raw_seed_free(&Bi);
    raw_open(&Bi2, pb2, OPSTATE_LMDB_SYNC_FULL);
    raw_seed_free(&Bi2);
    raw_open(&C, pc, OPSTATE_LMDB_SYNC_FULL);
    raw_table_populate(&C);
    sql_open(&S4, ps4, 4096, "FULL");
    sql_open(&S64, ps64, 65536, "FULL");
    sql_flush_state(&S4, blob, g_seq1);
    sql_flush_state(&S64, blob, g_seq1);
    printf("  (setup %.1f s: 100,000 keys in the store table, the raw table, two SQLite dbs)\n", (now_ms() - t0) / 1e3);

    for (r = -WARM1; r < ROUNDS1; r++) {
        double a, b, b2;
        uint32_t j;
        w1_pick(idx);
        w1_kv_put(kvA, idx, D1);
        for (j = 0; j < D1; j++) { /* the ids of the 1,000 events behind this flush */
            opstate_id id;
            uint64_t x = rnd(), y = rnd();
            memcpy(id.bytes, &x, 8);
            memcpy(id.bytes + 8, &y, 8);
            opstate_dedup_insert(&dd, &id);
        }
        switch ((r + WARM1) % 3) { /* each goes first (right after the last round's SQLite I/O) equally often */
        case 0:
            a = ostore_flush(&A, kvA, g_seq1, &dd);
            b = raw_append(&Bi, idx, D1, small_meta, sizeof small_meta);
            b2 = raw_append(&Bi2, idx, D1, big_meta, big_len);
            break;
        case 1:
            b = raw_append(&Bi, idx, D1, small_meta, sizeof small_meta);
            b2 = raw_append(&Bi2, idx, D1, big_meta, big_len);
            a = ostore_flush(&A, kvA, g_seq1, &dd);
            break;
        default:
            b2 = raw_append(&Bi2, idx, D1, big_meta, big_len);
            a = ostore_flush(&A, kvA, g_seq1, &dd);
            b = raw_append(&Bi, idx, D1, small_meta, sizeof small_meta);
            break;
        }
        if (r < 0) {
            raw_perkey(&C, idx, D1, small_meta, sizeof small_meta);
            sql_flush_state(&S4, blob, g_seq1);
            sql_flush_state(&S64, blob, g_seq1);
            continue;
        }
        ta[r] = a;
        tb[r] = b;
        tb2[r] = b2;
        tc[r] = raw_perkey(&C, idx, D1, small_meta, sizeof small_meta);
        ts4[r] = sql_flush_state(&S4, blob, g_seq1);
        ts64[r] = sql_flush_state(&S64, blob, g_seq1);
    }
    p50a = pct(ta, ROUNDS1, 50);
    p50b = pct(tb, ROUNDS1, 50);
    p50c = pct(tc, ROUNDS1, 50);
    p50s4 = pct(ts4, ROUNDS1, 50);
    p50s64 = pct(ts64, ROUNDS1, 50);
    p50s = p50s4 < p50s64 ? p50s4 : p50s64;
    printf("1a  opstate flush, 1,000 of 100,000 keys, SYNC_FULL, no compaction:  p50 %7.3f ms  p99 %7.3f ms  "
           "(record %lu B + meta %lu B, %d flushes)\n",
           p50a, pct(ta, ROUNDS1, 99), (unsigned long)(8 + D1 * ITEM_LEN), (unsigned long)big_len, ROUNDS1);
    printf("1a  vs (i) raw LMDB append, same bytes + 64 B meta:  p50 %7.3f ms  p99 %7.3f ms  ratio %.2fx its time  "
           "(target <= 1.5x)  %s\n",
           p50b, pct(tb, ROUNDS1, 99), p50a / p50b, verdict(p50a / p50b <= 1.5));
    printf("1a     info: means (steadier than p50s when flush latencies fall into clusters): opstate "
           "%.3f ms, raw append %.3f ms, ratio %.2fx\n",
           mean(ta, ROUNDS1), mean(tb, ROUNDS1), mean(ta, ROUNDS1) / mean(tb, ROUNDS1));
    printf("1a     info: raw append with a %lu B meta (the store's meta size, dedup window included):  p50 %7.3f ms  "
           "p99 %7.3f ms  mean %7.3f ms  opstate %.2fx its time (p50)\n",
           (unsigned long)big_len, pct(tb2, ROUNDS1, 50), pct(tb2, ROUNDS1, 99), mean(tb2, ROUNDS1),
           p50a / pct(tb2, ROUNDS1, 50));
    printf("1a  vs (ii) raw LMDB per-key puts into the 100k B-tree:  p50 %7.3f ms  p99 %7.3f ms  opstate %.1fx faster  "
           "(target >= 10x)  %s\n",
           p50c, pct(tc, ROUNDS1, 99), p50c / p50a, verdict(p50c / p50a >= 10));
    printf("1a  vs (iii) SQLite WAL FULL, whole state (%.1f MB) as one row + position, %s pages:  p50 %7.3f ms  "
           "p99 %7.3f ms  opstate %.0fx faster  (target >= 100x)  %s\n",
           (double)(8 + (size_t)K1 * SER_LEN) / 1e6, p50s4 < p50s64 ? "4 KiB" : "64 KiB", p50s,
           pct(p50s4 < p50s64 ? ts4 : ts64, ROUNDS1, 99), p50s / p50a, verdict(p50s / p50a >= 100));
    printf("1a     info: SQLite with 4 KiB pages p50 %.2f ms (p99 %.2f), with 64 KiB pages p50 %.2f ms (p99 %.2f); "
           "64 MiB cache, secure_delete off, default autocheckpoint; serialization included\n",
           p50s4, pct(ts4, ROUNDS1, 99), p50s64, pct(ts64, ROUNDS1, 99));
    printf("1a     bound: the raw LMDB append of the same bytes, the floor of any LMDB flush, is itself only %.0fx faster "
           "than SQLite here; 100x would need it at %.3f ms (it takes %.3f: two durable flushes of %lu B)\n",
           p50s / p50b, p50s / 100, p50b, (unsigned long)(8 + D1 * ITEM_LEN + sizeof small_meta));
    report_row("flush", p50a / p50b <= 1.5, NULL, "%.2fx a raw append (p50 %.3f vs %.3f ms)", p50a / p50b, p50a, p50b);
    report_row("flush_per_key", p50c / p50a >= 10, NULL, "%.1fx faster (per-key p50 %.3f ms, opstate %.3f ms)",
               p50c / p50a, p50c, p50a);
    report_percentiles("flush_compaction_off", ta, ROUNDS1);
    sql_close(&S4);
    sql_close(&S64);
    rm_sqlite(ps4);
    rm_sqlite(ps64);
    raw_close(&Bi);
    raw_close(&Bi2);
    rm_rf(pb);
    rm_rf(pb2);
    ostore_close(&A);
    opstate_kv_destroy(kvA);
    rm_rf(pa);

    /* 1b: compaction on (default config), whole cycles */
    {
        static double td[400], tcb[400], tcomp[16];
        int n = 0, ncomp = 0, warm;
        double md, mc, sum_plain = 0;
        uint32_t cnt;
        uint64_t bytes;
        opstate_error err;
        ostore_open(&D, pd, OPSTATE_LMDB_SYNC_FULL, false, 0, 0);
        kvD = w1_populate(&D, &dd);
        for (warm = 0; warm < WARM1; warm++) {
            w1_pick(idx);
            w1_kv_put(kvD, idx, D1);
            ostore_flush(&D, kvD, g_seq1, &dd);
            raw_perkey(&C, idx, D1, small_meta, sizeof small_meta);
        }
        CK(opstate_lmdb_store_compact(D.st, &err)); /* start at a cycle boundary */
        while (ncomp < 3 && n < 400) {
            uint32_t before;
            w1_pick(idx);
            w1_kv_put(kvD, idx, D1);
            opstate_lmdb_store_deltas(D.st, &before, &bytes);
            td[n] = ostore_flush(&D, kvD, g_seq1, &dd);
            sum_plain += td[n];
            td[n] += ostore_compact_if_due(&D, kvD);
            opstate_lmdb_store_deltas(D.st, &cnt, &bytes);
            if (cnt == 0 && before > 0) tcomp[ncomp++] = td[n];
            tcb[n] = raw_perkey(&C, idx, D1, small_meta, sizeof small_meta);
            n++;
        }
        md = mean(td, (size_t)n);
        mc = mean(tcb, (size_t)n);
        printf("1b  opstate flush with compaction (defaults: 64 flushes or 8 MiB; here every %d flushes):  mean %7.3f ms "
               "per flush over %d flushes incl. %d compactions (flush alone %.3f ms mean, flush + compaction median %.1f ms)\n",
               n / (ncomp ? ncomp : 1), md, n, ncomp, sum_plain / (double)n, pct(tcomp, (size_t)ncomp, 50));
        printf("1b  vs (ii) raw per-key puts, same flushes:  mean %7.3f ms  opstate %.1fx faster  (target >= 5x)  %s\n",
               mc, mc / md, verdict(mc / md >= 5));
        report_row("flush_compaction", mc / md >= 5, NULL, "%.1fx faster (mean %.3f vs %.3f ms, compactions included)",
                   mc / md, md, mc);
        report_percentiles("flush_compaction_on", td, (size_t)n);
        ostore_close(&D);
        opstate_kv_destroy(kvD);
        rm_rf(pd);
    }
    raw_close(&C);
    rm_rf(pc);

    /* 1c: the durability trade-off, with every contender in the matching
       mode (LMDB flags; SQLite synchronous FULL / NORMAL / OFF) */
    {
        static const opstate_lmdb_durability modes[3] = {OPSTATE_LMDB_SYNC_FULL, OPSTATE_LMDB_SYNC_NO_META,
                                                         OPSTATE_LMDB_SYNC_NONE};
        static const char *names[3] = {"SYNC_FULL", "SYNC_NO_META", "SYNC_NONE"};
        static const char *sqlsync[3] = {"FULL", "NORMAL", "OFF"};
        static double to[3][ROUNDS1C], tr[3][ROUNDS1C], tk[3][ROUNDS1C], tq[3][ROUNDS1C];
        int page = p50s4 < p50s64 ? 4096 : 65536;
        ostore O[3];
        rawenv R[3], K[3];
        sqlenv Q[3];
        opstate_kv *kv[3];
        int m;
        char p[3][4][4096];
        for (m = 0; m < 3; m++) {
            char name[64];
            snprintf(name, sizeof name, "p1c_opstate_%d", m);
            path_of(p[m][0], sizeof p[m][0], name);
            snprintf(name, sizeof name, "p1c_append_%d", m);
            path_of(p[m][1], sizeof p[m][1], name);
            snprintf(name, sizeof name, "p1c_perkey_%d", m);
            path_of(p[m][2], sizeof p[m][2], name);
            snprintf(name, sizeof name, "p1c_sqlite_%d.db", m);
            path_of(p[m][3], sizeof p[m][3], name);
            ostore_open(&O[m], p[m][0], modes[m], false, UINT32_MAX, UINT64_MAX);
            kv[m] = w1_populate(&O[m], &dd);
            raw_open(&R[m], p[m][1], modes[m]);
            raw_seed_free(&R[m]);
            raw_open(&K[m], p[m][2], modes[m]);
            raw_table_populate(&K[m]);
            sql_open(&Q[m], p[m][3], page, sqlsync[m]);
            sql_flush_state(&Q[m], blob, g_seq1);
        }
        for (r = -WARM1; r < ROUNDS1C; r++) {
            w1_pick(idx);
            for (m = 0; m < 3; m++) {
                double a, b, k, q;
                w1_kv_put(kv[m], idx, D1);
                if (r & 1) {
                    a = ostore_flush(&O[m], kv[m], g_seq1, &dd);
                    b = raw_append(&R[m], idx, D1, small_meta, sizeof small_meta);
                } else {
                    b = raw_append(&R[m], idx, D1, small_meta, sizeof small_meta);
                    a = ostore_flush(&O[m], kv[m], g_seq1, &dd);
                }
                k = raw_perkey(&K[m], idx, D1, small_meta, sizeof small_meta);
                q = sql_flush_state(&Q[m], blob, g_seq1);
                if (r >= 0) {
                    to[m][r] = a;
                    tr[m][r] = b;
                    tk[m][r] = k;
                    tq[m][r] = q;
                }
            }
        }
        printf("1c  durability trade-off, p50 (p99) in ms over %d flushes each; every contender in the matching mode:\n",
               ROUNDS1C);
        for (m = 0; m < 3; m++) {
            double o50 = pct(to[m], ROUNDS1C, 50);
            printf("1c    %-12s opstate %7.3f (%6.2f) | (i) append %7.3f: %.2fx its time | (ii) per-key %7.3f: %5.1fx "
                   "faster | (iii) SQLite synchronous=%-6s %7.2f: %5.0fx faster\n",
                   names[m], o50, pct(to[m], ROUNDS1C, 99), pct(tr[m], ROUNDS1C, 50), o50 / pct(tr[m], ROUNDS1C, 50),
                   pct(tk[m], ROUNDS1C, 50), pct(tk[m], ROUNDS1C, 50) / o50, sqlsync[m], pct(tq[m], ROUNDS1C, 50),
                   pct(tq[m], ROUNDS1C, 50) / o50);
            ostore_close(&O[m]);
            opstate_kv_destroy(kv[m]);
            raw_close(&R[m]);
            raw_close(&K[m]);
            sql_close(&Q[m]);
            rm_rf(p[m][0]);
            rm_rf(p[m][1]);
            rm_rf(p[m][2]);
            rm_sqlite(p[m][3]);
        }
    }
    free(big_meta);
    free(blob);
    free(ddmem);
}

/* ---- 2: restart latency, to the first applied event ---------------------------------------- */

#define NEW_KEY 7u /* the key the new event updates */

static uint8_t g_new_value[VAL_LEN];

/* A memory log holding one old event (seq 1, already in the snapshot) and
   the new one (seq 2). */
static opstate_memlog *restart_log(void)
{
    opstate_memlog *m;
    opstate_log log;
    opstate_event ev;
    opstate_append_result res;
    opstate_error err;
    char key[16];
    uint8_t v[VAL_LEN], ent[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    int i;
    CK(opstate_memlog_create(NULL, &m));
    log = opstate_memlog_iface(m);
    for (i = 0; i < 2; i++) {
        memset(&ev, 0, sizeof ev);
        ent[7] = (uint8_t)i;
        CK(opstate_id_time_ordered(1700000000000000000 + i, ent, &ev.id));
        ev.scope = B("site1", 5);
        ev.kind = B("host", 4);
        snprintf(key, sizeof key, "host-%08u", i ? NEW_KEY : 3u);
        ev.key = B(key, 13);
        ev.op = OPSTATE_OP_PUT;
        make_value(v, i ? NEW_KEY : 3u, i ? 999 : 1);
        if (i) memcpy(g_new_value, v, VAL_LEN);
        ev.data = B(v, VAL_LEN);
        CK(opstate_publish(&log, B("ops", 3), &ev, NULL, NULL, &res, &err));
    }
    return m;
}

/* The store of a state of nkeys keys: built in chunks (one flush + one
   compaction each), then a tail of 4 flushes of 256 keys left as deltas. */
static void build_state(const char *path, uint64_t nkeys, const opstate_dedup *dd)
{
    ostore o;
    opstate_error err;
    uint8_t key[KEY_LEN], val[VAL_LEN];
    uint64_t start, i;
    int t;
    ostore_open_as(&o, path, OPSTATE_LMDB_SYNC_NONE, true, 0, 0, true); /* built fast; measured under SYNC_FULL */
    for (start = 0; start < nkeys; start += 65536) {
        opstate_kv *kv;
        uint64_t end = start + 65536 < nkeys ? start + 65536 : nkeys;
        CK(opstate_kv_create(NULL, &kv));
        for (i = start; i < end; i++) {
            make_key(key, i);
            make_value(val, i, 0);
            CK(opstate_kv_put(kv, B(key, KEY_LEN), B(val, VAL_LEN), P(1, 1, 0)));
        }
        ostore_flush(&o, kv, 1, dd);
        CK(opstate_lmdb_store_compact(o.st, &err));
        opstate_kv_destroy(kv);
    }
    for (t = 0; t < 4; t++) { /* the tail as a read-through consumer leaves it: its fold reads through the table */
        opstate_kv *kv;
        opstate_kv_config kc;
        opstate_store iface = opstate_lmdb_store_iface(o.st);
        memset(&kc, 0, sizeof kc);
        kc.base = iface.base(iface.user);
        CK(opstate_kv_create(&kc, &kv));
        for (i = 0; i < 256; i++) {
            uint64_t k = rnd() % nkeys;
            make_key(key, k);
            make_value(val, k, 1);
            CK(opstate_kv_put(kv, B(key, KEY_LEN), B(val, VAL_LEN), P(1, 1, 0)));
        }
        ostore_flush(&o, kv, 1, dd); /* meta position: seq 1, time 1000, epoch 1 */
        opstate_kv_destroy(kv);
    }
    ostore_close(&o);
}

/* One restart: wall and CPU time to the first applied event, of which the
   env + store open, and the minor page faults taken. */
typedef struct rs {
    double wall, cpu, open;
    double faults;
} rs;

static double cpu_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static long minflt(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_minflt;
}

/* Gives back to the kernel every free page the previous repetition left,
   so that a measurement that stays in-process (part 3's recoveries, the
   map build from items in memory) pays its own page faults: otherwise
   whether it reuses pages depends on glibc's trim threshold and the
   heap's layout at that moment (load-all swung between ~130 and ~2,800
   minor faults per restart, and its ratio with it). It cannot give a
   fresh process's heap back (see fresh_restart). Same for every side. */
static void heap_settle(void) { malloc_trim(0); }

/* A short sleep before each timed restart: on a shared, loaded machine a
   process that just burnt CPU (the previous repetition) is the first to be
   preempted; after a sleep the scheduler lets it run. Same for every side. */
static void cpu_settle(void)
{
    struct timespec ts;
    ts.tv_sec = 0;
    ts.tv_nsec = 5000000;
    nanosleep(&ts, NULL);
}

/* The flush of the restarts: refused, so that the final flush at close
   fails and (with no compaction either) the stored state stays the same
   for the next repetition. */
static opstate_result flush_refused(void *user, const opstate_kv *kv, const opstate_snapshot_meta *meta,
                                    const opstate_dedup *dedup, opstate_error *err)
{
    (void)user;
    (void)kv;
    (void)meta;
    (void)dedup;
    return opstate_error_set(err, OPSTATE_IO, "flush refused (bench restart)", 0);
}

/* Open env + store + consumer over the log, poll until the new event is
   applied. The store's flush is refused (flush_refused), and it never
   compacts (not even at close: the next restart finds the same tail). */
static rs restart_opstate(const char *path, bool read_through, opstate_memlog *m, uint64_t expect_applied)
{
    ostore o;
    opstate_consumer_config cfg;
    opstate_consumer *c;
    opstate_poll_result pr;
    opstate_error err;
    opstate_kv_item item;
    uint8_t key[KEY_LEN];
    int loops = 0;
    rs out;
    long f0;
    double t, c0, t1;
    heap_settle();
    cpu_settle();
    f0 = minflt();
    c0 = cpu_ms();
    t = now_ms();
    ostore_open_as(&o, path, OPSTATE_LMDB_SYNC_FULL, read_through, 0, 0, true);
    t1 = now_ms();
    memset(&cfg, 0, sizeof cfg);
    cfg.log = opstate_memlog_iface(m);
    cfg.store = o.iface;
    cfg.store.flush = flush_refused;
    cfg.store.compact_due = NULL;
    CK(opstate_consumer_open(&cfg, &c, &err));
    while (opstate_consumer_get_status(c)->applied < 1 && loops++ < 100) CK(opstate_consumer_poll(c, 0, 0, &pr, &err));
    out.wall = now_ms() - t;
    out.cpu = cpu_ms() - c0;
    out.faults = (double)(minflt() - f0);
    out.open = t1 - t;
    if (opstate_consumer_get_status(c)->decision.reason != OPSTATE_REASON_RESUME ||
        opstate_consumer_position(c).seq != expect_applied)
        die("restart resumed from the snapshot", (long)opstate_consumer_position(c).seq, __LINE__);
    make_key(key, NEW_KEY);
    if (expect_applied == 2 &&
        (opstate_kv_get(opstate_consumer_kv(c), B(key, KEY_LEN), &item) != OPSTATE_OK ||
         memcmp(item.value.ptr, g_new_value, VAL_LEN) != 0))
        die("restart applied the event", 0, __LINE__);
    opstate_consumer_close(c, NULL); /* the injected flush failure keeps the store as it was */
    ostore_close(&o);
    return out;
}

/* Medians of n restarts. */
static rs rs_median(const rs *v, size_t n)
{
    double w[64], c[64], o[64], f[64];
    size_t i;
    rs out;
    for (i = 0; i < n; i++) {
        w[i] = v[i].wall;
        c[i] = v[i].cpu;
        o[i] = v[i].open;
        f[i] = v[i].faults;
    }
    out.wall = pct(w, n, 50);
    out.cpu = pct(c, n, 50);
    out.open = pct(o, n, 50);
    out.faults = pct(f, n, 50);
    return out;
}

static void store_compact_now(const char *path)
{
    ostore o;
    opstate_error err;
    ostore_open(&o, path, OPSTATE_LMDB_SYNC_FULL, false, 0, 0);
    CK(opstate_lmdb_store_compact(o.st, &err));
    ostore_close(&o);
}

static bool ser_cb(void *user, const opstate_kv_item *item)
{
    uint8_t **p = (uint8_t **)user;
    *p = ser_item(*p, item->key.ptr, item->key.len, item->value.ptr, item->value.len, item->position.seq,
                  item->position.time);
    return true;
}

/* The SQLite whole-row way: a db with one row holding the state blob (the
   exact state the LMDB store holds, loaded through the store). */
static void sql_build_restart(const char *path, int page_size, const char *lmdb_path)
{
    sqlenv s;
    ostore o;
    opstate_kv *kv;
    opstate_snapshot_meta meta;
    opstate_error err;
    uint8_t *buf, *w;
    ostore_open_as(&o, lmdb_path, OPSTATE_LMDB_SYNC_FULL, false, 0, 0, true);
    CK(opstate_kv_create(NULL, &kv));
    CK(o.iface.load(o.iface.user, kv, &meta, NULL, &err));
    ostore_close(&o);
    buf = malloc(8 + (size_t)opstate_kv_count(kv) * (SER_LEN + 8));
    opstate_put_le64(buf, opstate_kv_count(kv));
    w = buf + 8;
    CK(opstate_kv_iterate(kv, ser_cb, &w));
    sql_open(&s, path, page_size, "FULL");
    sql_put_blob(&s, buf, (size_t)(w - buf), meta.position.seq);
    sql_close(&s); /* the last connection checkpoints the WAL */
    free(buf);
    opstate_kv_destroy(kv);
}

static rs restart_sqlite(const char *path, bool use_mmap, const opstate_log_message *msg)
{
    sqlite3 *db;
    sqlite3_stmt *q;
    opstate_kv *kv;
    opstate_event ev;
    opstate_kv_item item;
    const uint8_t *p, *end;
    uint64_t n, i;
    uint8_t key[KEY_LEN];
    rs out;
    long f0;
    double t, c0;
    heap_settle();
    cpu_settle();
    f0 = minflt();
    c0 = cpu_ms();
    t = now_ms();
    CKS(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL));
    if (use_mmap) sql_exec(db, "PRAGMA mmap_size=1073741824");
    CKS(sqlite3_prepare_v2(db, "SELECT seq,time,epoch,state FROM snap WHERE id=1", -1, &q, NULL));
    if (sqlite3_step(q) != SQLITE_ROW) die("sqlite select", sqlite3_errcode(db), __LINE__);
    g_sink += (uint64_t)sqlite3_column_int64(q, 0);
    out.open = now_ms() - t;
    p = (const uint8_t *)sqlite3_column_blob(q, 3);
    end = p + sqlite3_column_bytes(q, 3);
    CK(opstate_kv_create(NULL, &kv));
    n = opstate_get_le64(p);
    p += 8;
    for (i = 0; i < n; i++) {
        uint32_t kl, vl;
        opstate_bytes k, v;
        if (end - p < 8) die("sqlite blob", 0, __LINE__);
        kl = opstate_get_le32(p);
        k = B(p + 4, kl);
        p += 4 + kl;
        vl = opstate_get_le32(p);
        v = B(p + 4, vl);
        p += 4 + vl;
        CK(opstate_kv_put(kv, k, v, P(opstate_get_le64(p), (int64_t)opstate_get_le64(p + 8), 0)));
        p += 16;
    }
    CK(opstate_event_decode(msg->data.ptr, msg->data.len, &ev, NULL));
    ev.position = msg->position;
    if (opstate_apply_default(NULL, kv, &ev) != OPSTATE_APPLY_DONE) die("sqlite apply", 0, __LINE__);
    out.wall = now_ms() - t;
    out.cpu = cpu_ms() - c0;
    out.faults = (double)(minflt() - f0);
    make_key(key, NEW_KEY);
    if (opstate_kv_get(kv, B(key, KEY_LEN), &item) != OPSTATE_OK || memcmp(item.value.ptr, g_new_value, VAL_LEN) != 0)
        die("sqlite restart applied the event", 0, __LINE__);
    sqlite3_finalize(q);
    sqlite3_close(db);
    opstate_kv_destroy(kv);
    return out;
}

/* Raw LMDB loads of the store's table, the same-run bound of load-all.
   RAW_BOUND is the bound: the env opened as the store opens it
   (read-write, MDB_NOTLS, the same limits), a read txn, the entry count
   to reserve the map, ONE cursor pass that checks each record's CRC32C
   (the table format's: key + seq, time, value; a load must not take
   corrupt bytes) and restores it into an opstate_kv (the same key and
   value copies as the store's, with the same public prefetch hint 8
   records ahead: the fastest way the API offers), then the same event
   applied. Without RAW_CHECK_CRC the pass checks nothing; RAW_WALK_ONLY
   opens read-only and only walks (the former bound's first part). */
#define RAW_CHECK_CRC 1u
#define RAW_BUILD 2u
#define RAW_WALK_ONLY 4u
#define RAW_BOUND (RAW_CHECK_CRC | RAW_BUILD)
#define RAW_AHEAD 8u

typedef struct raw_ring {
    opstate_kv *kv;
    opstate_kv_item items[RAW_AHEAD]; /* read, restored RAW_AHEAD records later */
    size_t read;
} raw_ring;

static void raw_restore_record(raw_ring *g, const MDB_val *k, const MDB_val *v, unsigned how)
{
    const uint8_t *rec = (const uint8_t *)v->mv_data;
    size_t n = v->mv_size - 4; /* all before the CRC */
    opstate_kv_item *item = &g->items[g->read++ % RAW_AHEAD];
    if (v->mv_size < 20) die("raw table record", (long)v->mv_size, __LINE__);
    if ((how & RAW_CHECK_CRC) &&
        opstate_crc32c(opstate_crc32c(0, k->mv_data, k->mv_size), rec, n) != opstate_get_le32(rec + n))
        die("raw table record CRC", 0, __LINE__);
    if (g->read > RAW_AHEAD) CK(opstate_kv_restore(g->kv, item));
    item->key = B(k->mv_data, k->mv_size);
    item->value = B(rec + 16, n - 16);
    item->position = P(opstate_get_le64(rec), (int64_t)opstate_get_le64(rec + 8), 0);
    item->deleted = false;
    item->in_base = false;
    opstate_kv_prefetch(g->kv, item->key);
}

static void raw_apply(opstate_kv *kv, const opstate_log_message *msg)
{
    opstate_event ev;
    CK(opstate_event_decode(msg->data.ptr, msg->data.len, &ev, NULL));
    ev.position = msg->position;
    if (opstate_apply_default(NULL, kv, &ev) != OPSTATE_APPLY_DONE) die("apply", 0, __LINE__);
}

static rs raw_load(const char *path, unsigned how, const opstate_log_message *msg)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_cursor *cur;
    MDB_val k, v;
    MDB_stat st;
    opstate_kv *kv = NULL;
    raw_ring g;
    uint64_t sum = 0;
    rs out;
    long f0;
    double t, c0;
    int rc;
    size_t i;
    heap_settle();
    cpu_settle();
    f0 = minflt();
    c0 = cpu_ms();
    t = now_ms();
    CKM(mdb_env_create(&env));
    CKM(mdb_env_set_maxdbs(env, 64)); /* the store's env defaults: 64 databases, a 64 MiB map */
    CKM(mdb_env_set_mapsize(env, (size_t)64 << 20));
    CKM(mdb_env_open(env, path, MDB_NOTLS | ((how & RAW_WALK_ONLY) ? MDB_RDONLY : 0u), 0600));
    CKM(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn));
    CKM(mdb_dbi_open(txn, "s:bench:table", 0, &dbi));
    CKM(mdb_stat(txn, dbi, &st));
    if (how & RAW_BUILD) {
        CK(opstate_kv_create(NULL, &kv));
        CK(opstate_kv_reserve(kv, st.ms_entries));
    }
    g.kv = kv;
    g.read = 0;
    CKM(mdb_cursor_open(txn, dbi, &cur));
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT))
        if (how & RAW_BUILD) raw_restore_record(&g, &k, &v, how);
        else sum += v.mv_size + ((const uint8_t *)v.mv_data)[0];
    if (rc != MDB_NOTFOUND) die("raw cursor", rc, __LINE__);
    for (i = g.read > RAW_AHEAD ? g.read - RAW_AHEAD : 0; i < g.read; i++) /* the ring's last records */
        CK(opstate_kv_restore(kv, &g.items[i % RAW_AHEAD]));
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    if (how & RAW_BUILD) raw_apply(kv, msg);
    mdb_env_close(env);
    out.wall = now_ms() - t;
    out.cpu = cpu_ms() - c0;
    out.faults = (double)(minflt() - f0);
    out.open = 0;
    if (kv && opstate_kv_count(kv) != (uint64_t)st.ms_entries) die("raw load count", 0, __LINE__);
    opstate_kv_destroy(kv);
    g_sink += sum;
    return out;
}

static bool grab_item(void *user, const opstate_kv_item *item)
{
    opstate_kv_item **at = (opstate_kv_item **)user;
    *(*at)++ = *item;
    return true;
}

/* The former bound's second part: the map built from items already in
   memory (reserve, restore each, apply the event). */
static double map_build_only(const opstate_kv_item *items, size_t n, const opstate_log_message *msg)
{
    opstate_kv *kv;
    size_t i;
    double t;
    heap_settle();
    cpu_settle();
    t = now_ms();
    CK(opstate_kv_create(NULL, &kv));
    CK(opstate_kv_reserve(kv, n));
    for (i = 0; i < n; i++) CK(opstate_kv_restore(kv, &items[i]));
    raw_apply(kv, msg);
    t = now_ms() - t;
    opstate_kv_destroy(kv);
    return t;
}

/* Part 2's load-all lines: the verdict against the same-run bound (median
   against median), the same pass checking nothing, the former bound, and
   the SQLite way. `la` is opstate's median restart, `sqlite` the faster
   SQLite median; the arrays hold REPS2 repetitions each. */
static void load_all_report(rs la, double sqlite, const rs *vbound, const rs *vnocrc, double *vwalk, double *vmap)
{
    rs bound = rs_median(vbound, REPS2), nocrc = rs_median(vnocrc, REPS2);
    double walk, map;
    printf("2   load-all:     %7.3f ms  vs the same-run bound %7.3f ms  %.2fx  (target <= 1.25x)  %s\n", la.wall,
           bound.wall, la.wall / bound.wall, verdict(la.wall / bound.wall <= 1.25));
    printf("2      bound: one raw LMDB pass (env opened as the store opens it, read txn, cursor over the table) "
           "checking each record's CRC32C and restoring it into the same map (reserved from the entry count, the "
           "public prefetch hint 8 records ahead), then the same event applied; median of %d, interleaved; CPU time "
           "%.3f ms vs opstate %.3f ms (%.2fx)\n",
           REPS2, bound.cpu, la.cpu, la.cpu / bound.cpu);
    printf("2      info: the same pass checking nothing %.3f ms (opstate %.2fx of it); the CRC checks cost the bound "
           "%.3f ms\n",
           nocrc.wall, la.wall / nocrc.wall, bound.wall - nocrc.wall);
    /* The former bound is biased low: the minimum of each part against
       opstate's median, two parts that never share the cache and the TLB,
       a read-only env (the store's is read-write, as a consumer's must
       be; LMDB allocates a writer's structures at open) and no CRC check. */
    qsort(vwalk, REPS2, sizeof *vwalk, cmp_double);
    qsort(vmap, REPS2, sizeof *vmap, cmp_double);
    walk = vwalk[0];
    map = vmap[0];
    printf("2      info: the former bound, two parts measured apart: the fastest read-only walk checking nothing "
           "%.3f ms + the fastest build of the map from items in memory %.3f ms = %.3f ms (opstate %.2fx of it; "
           "medians %.3f + %.3f)\n",
           walk, map, walk + map, la.wall / (walk + map), median(vwalk, REPS2), median(vmap, REPS2));
    printf("2      info: load-all vs the SQLite whole-row way %.3f ms: opstate %.2fx faster (the bound %.2fx; the old "
           "target >= 2x is out of reach)\n",
           sqlite, sqlite / la.wall, sqlite / bound.wall);
    report_row("restart_load_all", la.wall / bound.wall <= 1.25,
               "one raw LMDB pass checking each record's CRC32C and building the same map",
               "%.2fx its bound at 8 MiB (%.3f vs %.3f ms)", la.wall / bound.wall, la.wall, bound.wall);
}

static uint64_t keys_for(double mib) { return (uint64_t)(mib * 1048576.0 / (KEY_LEN + VAL_LEN)); }

/* What every restart of part 2 shares: the memory log holding the new
   event, that event as read from the log (for the ways that apply it by
   hand), the dedup window the stores are built with, and the 8 MiB store
   (the comparison's, and the growth series' 8 MiB point). */
typedef struct restart_env {
    opstate_memlog *m;
    opstate_log_message msg;
    opstate_dedup dd;
    void *ddmem;
    char state8[4096];
} restart_env;

/* The SQLite whole-row ways: default pages, and 64 KiB pages + mmap. The
   faster at 8 MiB is the baseline, and the one the growth series measures. */
typedef struct sql_way {
    int page_size;
    bool use_mmap;
    const char *name;
} sql_way;

static const sql_way g_sql_ways[2] = {{4096, false, "default (4 KiB pages)"},
                                      {65536, true, "tuned (64 KiB pages + mmap)"}};

/* The log, the dedup window, the 8 MiB store, and its copies in the two
   SQLite ways (sql[i] in g_sql_ways[i]; the caller removes them). */
static void restart_setup(restart_env *e, char sql[2][4096])
{
    opstate_log log;
    opstate_error err;
    size_t got;
    double t0 = now_ms();
    int i;
    e->m = restart_log();
    log = opstate_memlog_iface(e->m);
    CK(log.read(log.user, B(NULL, 0), 2, 0, &e->msg, 1, &got, &err));
    if (got != 1) die("log read", 0, __LINE__);
    fill_dedup(&e->dd, &e->ddmem, DEDUP_CAP);
    path_of(e->state8, sizeof e->state8, "p2_state8");
    build_state(e->state8, keys_for(8), &e->dd);
    for (i = 0; i < 2; i++) {
        char name[32];
        snprintf(name, sizeof name, "p2_sqlite%dk.db", g_sql_ways[i].page_size / 1024);
        path_of(sql[i], sizeof sql[i], name);
        sql_build_restart(sql[i], g_sql_ways[i].page_size, e->state8);
    }
    printf("  (setup %.1f s: %lu keys = 8 MiB of keys + values, in LMDB (4 delta records of 256 keys pending) and in "
           "two SQLite dbs)\n",
           (now_ms() - t0) / 1e3, (unsigned long)keys_for(8));
}

static void restart_teardown(restart_env *e)
{
    rm_rf(e->state8);
    opstate_memlog_destroy(e->m);
    free(e->ddmem);
}

/* The stored state as items in memory (for the map-build floor); their
   bytes belong to the map returned in *loaded. */
static opstate_kv_item *state_items(const char *path, opstate_kv **loaded, size_t *n)
{
    ostore o;
    opstate_snapshot_meta meta;
    opstate_error err;
    opstate_kv_item *items, *at;
    ostore_open_as(&o, path, OPSTATE_LMDB_SYNC_FULL, false, 0, 0, true);
    CK(opstate_kv_create(NULL, loaded));
    CK(o.iface.load(o.iface.user, *loaded, &meta, NULL, &err));
    ostore_close(&o);
    *n = opstate_kv_count(*loaded);
    at = items = malloc(*n * sizeof *items);
    CK(opstate_kv_iterate(*loaded, grab_item, &at));
    return items;
}

/* The restarts part 2 runs, each in a fresh process (this program again,
   with --restart WAY PATH): a real restart is one. In-process, the heap
   the previous repetitions left decides what a restart pays: after a
   trim, calloc clears reused pages that a fresh process would get from
   mmap already zero (LMDB's env open callocs a 2 MiB dirty list: ~516
   minor faults, ~5 ms here, against ~40 faults in a fresh process). */
enum { WAY_READ_THROUGH, WAY_LOAD_ALL, WAY_SQLITE, WAY_SQLITE_MMAP, WAY_BOUND, WAY_NOCRC, WAY_WALK, WAYS };
static const char *const g_way_names[WAYS] = {"read-through", "load-all", "sqlite", "sqlite-mmap",
                                              "bound",        "nocrc",    "walk"};

static rs restart_way(int way, const char *path, opstate_memlog *m, const opstate_log_message *msg)
{
    switch (way) {
    case WAY_READ_THROUGH: return restart_opstate(path, true, m, 2);
    case WAY_LOAD_ALL: return restart_opstate(path, false, m, 2);
    case WAY_SQLITE: return restart_sqlite(path, false, msg);
    case WAY_SQLITE_MMAP: return restart_sqlite(path, true, msg);
    case WAY_BOUND: return raw_load(path, RAW_BOUND, msg);
    case WAY_NOCRC: return raw_load(path, RAW_BUILD, msg);
    default: return raw_load(path, RAW_WALK_ONLY, msg);
    }
}

/* The restart way of a SQLite way (the page size is the db file's). */
static int sql_way_of(sql_way way) { return way.use_mmap ? WAY_SQLITE_MMAP : WAY_SQLITE; }

/* The fresh process's side: the log, the one restart, its figures on
   stdout (the parent's pipe). */
static int restart_child(const char *name, const char *path)
{
    opstate_memlog *m = restart_log();
    opstate_log log = opstate_memlog_iface(m);
    opstate_log_message msg;
    opstate_error err;
    size_t got;
    int way;
    rs x;
    for (way = 0; way < WAYS && strcmp(g_way_names[way], name); way++) continue;
    if (way == WAYS) die("unknown restart way", 0, __LINE__);
    CK(log.read(log.user, B(NULL, 0), 2, 0, &msg, 1, &got, &err));
    if (got != 1) die("log read", 0, __LINE__);
    x = restart_way(way, path, m, &msg);
    printf("%.9g %.9g %.9g %.9g\n", x.wall, x.cpu, x.open, x.faults);
    opstate_memlog_destroy(m);
    return 0;
}

/* One restart of `way` over path in a fresh process (fork + exec). */
static rs fresh_restart(int way, const char *path)
{
    char *argv[5];
    int fd[2], status = 0, got;
    pid_t pid;
    FILE *f;
    rs x;
    argv[0] = (char *)"bench_lmdb";
    argv[1] = (char *)"--restart";
    argv[2] = (char *)g_way_names[way];
    argv[3] = (char *)path;
    argv[4] = NULL;
    fflush(stdout);
    if (pipe(fd) != 0) die("pipe", errno, __LINE__);
    pid = fork();
    if (pid < 0) die("fork", errno, __LINE__);
    if (pid == 0) {
        if (dup2(fd[1], 1) < 0) _exit(126);
        close(fd[0]);
        close(fd[1]);
        execv("/proc/self/exe", argv);
        _exit(127);
    }
    close(fd[1]);
    f = fdopen(fd[0], "r");
    if (!f) die("fdopen", errno, __LINE__);
    got = fscanf(f, "%lf %lf %lf %lf", &x.wall, &x.cpu, &x.open, &x.faults);
    fclose(f);
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0 || got != 4)
        die("restart in a fresh process", status, __LINE__);
    return x;
}

/* The 8 MiB comparison: REPS2 repetitions of each contender. */
typedef struct compare8 {
    rs read_through[REPS2], load_all[REPS2], sql[2][REPS2], bound[REPS2], nocrc[REPS2];
    double walk[REPS2], map[REPS2];
} compare8;

/* Every contender once per repetition, interleaved; r = -1 warms the page
   cache (its figures land in slot 0 and are overwritten). */
static void compare8_measure(const restart_env *e, char sql[2][4096], compare8 *v)
{
    opstate_kv *loaded;
    size_t n_items;
    opstate_kv_item *items = state_items(e->state8, &loaded, &n_items);
    int r;
    for (r = -1; r < REPS2; r++) {
        int k = r < 0 ? 0 : r;
        v->read_through[k] = fresh_restart(WAY_READ_THROUGH, e->state8);
        v->load_all[k] = fresh_restart(WAY_LOAD_ALL, e->state8);
        v->sql[0][k] = fresh_restart(sql_way_of(g_sql_ways[0]), sql[0]);
        v->sql[1][k] = fresh_restart(sql_way_of(g_sql_ways[1]), sql[1]);
        v->bound[k] = fresh_restart(WAY_BOUND, e->state8);
        v->nocrc[k] = fresh_restart(WAY_NOCRC, e->state8);
        v->walk[k] = fresh_restart(WAY_WALK, e->state8).wall;
        v->map[k] = map_build_only(items, n_items, &e->msg);
    }
    free(items);
    opstate_kv_destroy(loaded);
}

/* The 8 MiB verdicts (restart_sqlite, restart_load_all) and their info
   lines; returns the baseline SQLite way: the faster of the two. */
static int compare8_report(compare8 *v)
{
    rs rt = rs_median(v->read_through, REPS2), la = rs_median(v->load_all, REPS2);
    rs s4 = rs_median(v->sql[0], REPS2), s64 = rs_median(v->sql[1], REPS2);
    int way = s4.wall < s64.wall ? 0 : 1;
    rs sq = way ? s64 : s4;
    printf("2   restart to first applied event, 8 MiB state (%lu keys), warm page cache, each in a fresh process, median of %d:\n",
           (unsigned long)keys_for(8), REPS2);
    printf("2   read-through: %7.3f ms  vs SQLite whole-row way %7.3f ms  opstate %.1fx faster  (target >= 20x)  %s\n",
           rt.wall, sq.wall, sq.wall / rt.wall, verdict(sq.wall / rt.wall >= 20));
    report_row("restart_sqlite", sq.wall / rt.wall >= 20, NULL, "%.1fx faster at 8 MiB (%.3f vs %.3f ms)",
               sq.wall / rt.wall, rt.wall, sq.wall);
    load_all_report(la, sq.wall, v->bound, v->nocrc, v->walk, v->map);
    printf("2      info: SQLite %s %.2f ms, %s %.2f ms; the faster is the baseline (and the growth series' SQLite "
           "way)\n",
           g_sql_ways[0].name, s4.wall, g_sql_ways[1].name, s64.wall);
    printf("2      info: CPU-time ratios (immune to preemption on a loaded machine): read-through %.1fx, load-all "
           "%.1fx faster than the SQLite way\n",
           sq.cpu / rt.cpu, sq.cpu / la.cpu);
    printf("2      info: CPU time  read-through %.3f  load-all %.3f  SQLite %.3f / %.3f ms;  minor faults  %.0f  %.0f  "
           "%.0f / %.0f;  env+store open (SQLite: open+select) %.3f  %.3f  %.3f / %.3f ms\n",
           rt.cpu, la.cpu, s4.cpu, s64.cpu, rt.faults, la.faults, s4.faults, s64.faults, rt.open, la.open, s4.open,
           s64.open);
    return way;
}

/* Read-through, load-all and the SQLite ways at 8 MiB; returns the index
   of the baseline SQLite way in g_sql_ways. */
static int restart_compare_8mib(const restart_env *e, char sql[2][4096])
{
    static compare8 v;
    compare8_measure(e, sql, &v);
    return compare8_report(&v);
}

/* ---- 2, as the state grows ---- */

#define GROW_POINTS 5
#define ALL_WAYS_MIB 128 /* load-all and SQLite measured up to this size, read-through beyond (grow_why) */

/* One size of the growth series: its store and, up to ALL_WAYS_MIB, its
   SQLite copy; the medians come from the repetitions. */
typedef struct grow_point {
    double mib, build_s;
    char lmdb[4096], sql[4096]; /* sql[0] == 0: read-through only */
    rs tail[REPS3], compacted[REPS3], load_all[REPS3], sqlite[REPS3];
} grow_point;

/* Whether a size is left out (and says why): above 100 MiB under
   BENCH_QUICK; the 1 GiB point under --no-1g or with less than 6 GB free. */
static bool grow_skip(double mib)
{
    struct statvfs vfs;
    unsigned long long avail = 0;
    if (bench_quick() && mib > 100) {
        printf("2      points above 100 MiB skipped (quick)\n");
        return true;
    }
    if (mib <= 1000) return false;
    if (statvfs(g_root, &vfs) == 0) avail = (unsigned long long)vfs.f_bavail * vfs.f_frsize;
    if (!g_skip_1g && avail >= (6ull << 30)) return false;
    printf("2      1 GiB point skipped (%s)\n", g_skip_1g ? "--no-1g" : "less than 6 GB free");
    return true;
}

/* The stores of the growth series (the 8 MiB one is the setup's) and, up
   to ALL_WAYS_MIB, their copies in the baseline SQLite way; returns how
   many sizes are measured. */
static int grow_build(const restart_env *e, sql_way way, grow_point *p)
{
    static const double sizes[GROW_POINTS] = {1, 8, 16, 128, 1024};
    int s;
    for (s = 0; s < GROW_POINTS && !grow_skip(sizes[s]); s++) {
        double t0 = now_ms();
        char name[32];
        p[s].mib = sizes[s];
        snprintf(name, sizeof name, "p2_grow_%d", s);
        if (sizes[s] == 8) {
            snprintf(p[s].lmdb, sizeof p[s].lmdb, "%s", e->state8);
        } else {
            path_of(p[s].lmdb, sizeof p[s].lmdb, name);
            build_state(p[s].lmdb, keys_for(sizes[s]), &e->dd);
        }
        p[s].sql[0] = 0;
        if (sizes[s] <= ALL_WAYS_MIB) {
            snprintf(name, sizeof name, "p2_grow_%d.db", s);
            path_of(p[s].sql, sizeof p[s].sql, name);
            sql_build_restart(p[s].sql, way.page_size, p[s].lmdb);
        }
        p[s].build_s = (now_ms() - t0) / 1e3;
    }
    return s;
}

/* The restarts of the growth series, interleaved repetition by repetition
   (drift hits all alike); r = -1 warms the page cache (its figures land in
   slot 0 and are overwritten). Each repetition restarts every size
   read-through, back to back as the flatness verdict has always measured
   them; then, while the delta tail is pending (not `compacted`), every
   size load-all and the SQLite way, largest first, so that the next
   read-through pass follows the small 1 MiB ones and not a restart that
   just filled and freed hundreds of MiB (the cold caches it leaves would
   weigh on whichever size comes next). */
static void grow_restarts(sql_way way, grow_point *p, int used, bool compacted)
{
    int r, s;
    for (r = -1; r < REPS3; r++) {
        int k = r < 0 ? 0 : r;
        for (s = 0; s < used; s++) {
            rs x = fresh_restart(WAY_READ_THROUGH, p[s].lmdb);
            if (compacted) p[s].compacted[k] = x;
            else p[s].tail[k] = x;
        }
        for (s = used - 1; s >= 0 && !compacted; s--) {
            if (!p[s].sql[0]) continue;
            p[s].load_all[k] = fresh_restart(WAY_LOAD_ALL, p[s].lmdb);
            p[s].sqlite[k] = fresh_restart(sql_way_of(way), p[s].sql);
        }
    }
}

/* One line of the growth series: LABEL, then "  SIZE MiB MS ms" per size
   (the medians med) and max/min, with the flatness verdict when `flat`;
   then the points of the plot's series (none when series is NULL).
   Returns max/min. */
static double grow_line(const char *label, const char *series, const grow_point *p, int used, const rs *med, bool flat)
{
    double lo = 1e30, hi = 0;
    int s;
    printf("%s", label);
    for (s = 0; s < used; s++) {
        printf("  %g MiB %.3f ms", p[s].mib, med[s].wall);
        if (med[s].wall < lo) lo = med[s].wall;
        if (med[s].wall > hi) hi = med[s].wall;
    }
    if (flat) printf("  max/min %.2fx  (target: flat within 2x)  %s\n", hi / lo, verdict(hi / lo <= 2));
    else printf("  max/min %.0fx for %.0fx the state\n", hi / lo, p[used - 1].mib / p[0].mib);
    for (s = 0; s < used && series; s++) report_data(series, p[s].mib, med[s].wall);
    return hi / lo;
}

/* One figure of every size's median, for the info line. */
static void grow_info(const char *label, const rs *med, int used, bool cpu)
{
    int s;
    printf("%s", label);
    for (s = 0; s < used; s++)
        if (cpu) printf("  %.3f", med[s].cpu);
        else printf("  %.0f", med[s].faults);
}

/* Why the growth series stops load-all and SQLite at ALL_WAYS_MIB (big:
   the last point with all three ways, la and sq its medians), from this
   SQLite's real limit and this run's figures. */
static void grow_why(const grow_point *big, rs la, rs sq, double mib)
{
    sqlite3 *db;
    long long blob = 8 + (long long)keys_for(mib) * SER_LEN, limit;
    double scale = mib / big->mib;
    CKS(sqlite3_open(":memory:", &db));
    limit = sqlite3_limit(db, SQLITE_LIMIT_LENGTH, -1);
    sqlite3_close(db);
    printf("2      %g MiB: read-through only. Load-all and SQLite stop at %g MiB: the SQLite row would hold a "
           "%lld-byte blob, %s this SQLite's maximum length %lld (SQLITE_LIMIT_LENGTH; SQLITE_MAX_LENGTH defaults to "
           "1e9); load-all copies the whole state into RAM (%.0f MiB of fresh pages per restart at %g MiB, ~%.1f GiB "
           "at %g MiB); and at %g MiB one restart took %.0f ms load-all, %.0f ms SQLite: ~%.0fx that at %g MiB, "
           "~%.0f s more for %d repetitions + a warm-up\n",
           mib, big->mib, blob, blob > limit ? "over" : "under", limit, la.faults * 4096 / 1048576, big->mib,
           la.faults * 4096 * scale / 1073741824, mib, big->mib, la.wall, sq.wall, scale, mib,
           (la.wall + sq.wall) * scale * (REPS3 + 1) / 1e3, REPS3);
}

/* The growth series' lines: read-through with the tail pending (the
   flatness verdict) and compacted, load-all and SQLite, the plot's
   points, faults, CPU time and build times. */
static void grow_report(const grow_point *p, int used, sql_way way)
{
    rs tail[GROW_POINTS], comp[GROW_POINTS], la[GROW_POINTS], sq[GROW_POINTS];
    char label[160];
    double flat;
    int s, all = 0;
    memset(tail, 0, sizeof tail); /* used >= 1 (1 MiB is never skipped); for the compiler */
    memset(comp, 0, sizeof comp);
    memset(la, 0, sizeof la);
    memset(sq, 0, sizeof sq);
    for (s = 0; s < used; s++) {
        tail[s] = rs_median(p[s].tail, REPS3);
        comp[s] = rs_median(p[s].compacted, REPS3);
        if (!p[s].sql[0]) continue;
        la[all] = rs_median(p[s].load_all, REPS3);
        sq[all++] = rs_median(p[s].sqlite, REPS3);
    }
    snprintf(label, sizeof label,
             "2   read-through restart as the state grows, 1,024-key delta tail pending (median of %d, warm):", REPS3);
    flat = grow_line(label, "restart_read_through", p, used, tail, true);
    report_row("restart_flat", flat <= 2, NULL, "max/min %.2fx over %g..%g MiB", flat, p[0].mib, p[used - 1].mib);
    grow_line("2   read-through restart as the state grows, tail compacted (no delta pending):          ", NULL, p,
              used, comp, true);
    grow_line("2   load-all restart as the state grows, tail pending (the same repetitions, interleaved):",
              "restart_load_all", p, all, la, false);
    snprintf(label, sizeof label, "2   SQLite whole-row restart as the state grows, %s (the same repetitions):",
             way.name);
    grow_line(label, "restart_sqlite", p, all, sq, false);
    if (all > 0 && all < used) grow_why(&p[all - 1], la[all - 1], sq[all - 1], p[used - 1].mib);
    grow_info("2      info: minor page faults per restart, read-through with tail", tail, used, false);
    grow_info(", without", comp, used, false);
    grow_info(", load-all", la, all, false);
    grow_info(", SQLite", sq, all, false);
    grow_info("; CPU ms with tail", tail, used, true);
    grow_info(", without", comp, used, true);
    grow_info("; load-all", la, all, true);
    grow_info(", SQLite", sq, all, true);
    printf("; states (and SQLite copies) built in");
    for (s = 0; s < used; s++) printf("  %.1f", p[s].build_s);
    printf(" s (SYNC_NONE, not measured)\n");
}

/* Restart time as the state grows 1 MiB -> 1 GiB: every store built
   first, then the restarts interleaved size by size. */
static void restart_growth(const restart_env *e, sql_way way)
{
    static grow_point p[GROW_POINTS];
    int used = grow_build(e, way, p), s;
    grow_restarts(way, p, used, false);
    for (s = 0; s < used; s++) store_compact_now(p[s].lmdb); /* the same stores with their delta tails folded in */
    grow_restarts(way, p, used, true);
    grow_report(p, used, way);
    for (s = 0; s < used; s++) {
        if (p[s].sql[0]) rm_sqlite(p[s].sql);
        if (p[s].mib != 8) rm_rf(p[s].lmdb);
    }
}

/* Part 2: the 8 MiB comparison (the rows restart_sqlite and
   restart_load_all), then restart time as the state grows (restart_flat
   and the plot). */
static void restart_latency(void)
{
    restart_env e;
    char sql[2][4096];
    int way;
    restart_setup(&e, sql);
    way = restart_compare_8mib(&e, sql);
    rm_sqlite(sql[0]);
    rm_sqlite(sql[1]);
    restart_growth(&e, g_sql_ways[way]);
    restart_teardown(&e);
}

/* ---- 3: recovery as history grows ---------------------------------------------------------------- */

#define K3 10000u

static void publish_events(opstate_memlog *m, uint64_t from, uint64_t n, uint64_t keys)
{
    opstate_log log = opstate_memlog_iface(m);
    opstate_event ev;
    opstate_append_result res;
    opstate_error err;
    char key[16];
    uint8_t v[VAL_LEN], ent[8];
    uint64_t e;
    memset(&ev, 0, sizeof ev);
    ev.scope = B("site1", 5);
    ev.kind = B("host", 4);
    ev.op = OPSTATE_OP_PUT;
    for (e = from; e < from + n; e++) {
        uint64_t k = rnd() % keys, x = rnd();
        memcpy(ent, &x, 8);
        CK(opstate_id_time_ordered(1700000000000000000 + (int64_t)e * 1000, ent, &ev.id));
        snprintf(key, sizeof key, "host-%08lu", (unsigned long)k);
        ev.key = B(key, 13);
        make_value(v, k, e);
        ev.data = B(v, VAL_LEN);
        CK(opstate_publish(&log, B("ops", 3), &ev, NULL, NULL, &res, &err));
    }
}

/* The spread of restart times: the slowest over the fastest. */
static double spread(const rs *v, int n)
{
    double lo = 1e30, hi = 0;
    int h;
    for (h = 0; h < n; h++) {
        if (v[h].wall < lo) lo = v[h].wall;
        if (v[h].wall > hi) hi = v[h].wall;
    }
    return hi / lo;
}

static void flat_line(const char *label, const uint64_t *hist, const rs *v, int n)
{
    int h;
    printf("3   %s", label);
    for (h = 0; h < n; h++) printf("  %luk ev %.3f ms", (unsigned long)(hist[h] / 1000), v[h].wall);
    printf("  max/min %.2fx  (target: flat)  %s\n", spread(v, n), verdict(spread(v, n) <= 2));
}

static void recovery_as_history_grows(void)
{
    static const uint64_t full[3] = {10000, 100000, 1000000}, quick[3] = {10000, 50000, 200000};
    const uint64_t *hist = bench_quick() ? quick : full;
    static rs vrt[3][REPS3], vla[3][REPS3];
    rs rt[3], la[3], rtc[3], lac[3];
    double replay_ms[3], build_ms[3];
    uint32_t pending[3];
    opstate_memlog *m[3];
    char path[3][4096];
    int h, r, pass;
    for (h = 0; h < 3; h++) {
        char name[32];
        ostore o;
        opstate_consumer_config cfg;
        opstate_consumer *c;
        opstate_poll_result pr;
        opstate_error err;
        uint64_t bytes;
        double t0;
        CK(opstate_memlog_create(NULL, &m[h]));
        publish_events(m[h], 0, hist[h], K3);
        snprintf(name, sizeof name, "p3_consumer_%d", h);
        path_of(path[h], sizeof path[h], name);
        /* the consumer folds the history, flushing every 1,000 events */
        t0 = now_ms();
        ostore_open(&o, path[h], OPSTATE_LMDB_SYNC_NONE, true, 0, 0);
        memset(&cfg, 0, sizeof cfg);
        cfg.log = opstate_memlog_iface(m[h]);
        cfg.store = o.iface;
        cfg.flush_every = 1000;
        CK(opstate_consumer_open(&cfg, &c, &err));
        do CK(opstate_consumer_poll(c, 100000, 0, &pr, &err));
        while (!pr.caught_up);
        if (opstate_consumer_position(c).seq != hist[h]) die("history folded", 0, __LINE__);
        CK(opstate_consumer_close(c, &err));
        opstate_lmdb_store_deltas(o.st, &pending[h], &bytes);
        ostore_close(&o);
        build_ms[h] = now_ms() - t0;
        publish_events(m[h], hist[h], 1, K3); /* the one new event */
        {
            opstate_kv *kv;
            opstate_replay_config rc;
            opstate_replay_result rr;
            memset(&rc, 0, sizeof rc);
            rc.log = opstate_memlog_iface(m[h]);
            CK(opstate_kv_create(NULL, &kv));
            t0 = now_ms();
            CK(opstate_replay(&rc, kv, &rr, &err));
            replay_ms[h] = now_ms() - t0;
            opstate_kv_destroy(kv);
        }
    }
    for (pass = 0; pass < 2; pass++) { /* as left by the consumer, then with the deltas compacted */
        if (pass)
            for (h = 0; h < 3; h++) store_compact_now(path[h]);
        for (r = -1; r < REPS3; r++)
            for (h = 0; h < 3; h++) {
                rs a = restart_opstate(path[h], true, m[h], hist[h] + 1), b = restart_opstate(path[h], false, m[h], hist[h] + 1);
                if (r < 0) continue;
                vrt[h][r] = a;
                vla[h][r] = b;
            }
        for (h = 0; h < 3; h++) {
            (pass ? rtc : rt)[h] = rs_median(vrt[h], REPS3);
            (pass ? lac : la)[h] = rs_median(vla[h], REPS3);
        }
    }
    for (h = 0; h < 3; h++) {
        rm_rf(path[h]);
        opstate_memlog_destroy(m[h]);
    }
    printf("3   recovery as history grows (%u keys, flush every 1,000 events, default compaction; restart to the first "
           "new event, median of %d, warm):\n",
           K3, REPS3);
    flat_line("read-through, as the consumer left it:", hist, rt, 3);
    flat_line("load-all,     as the consumer left it:", hist, la, 3);
    flat_line("read-through, deltas compacted:       ", hist, rtc, 3);
    flat_line("load-all,     deltas compacted:       ", hist, lac, 3);
    for (h = 0; h < 3; h++) {
        report_data("recovery_snapshot_tail", (double)hist[h], rt[h].wall);
        report_data("recovery_snapshot_compacted", (double)hist[h], rtc[h].wall);
        report_data("recovery_full_replay", (double)hist[h], replay_ms[h]);
    }
    report_row("recovery", spread(rt, 3) <= 2, NULL,
               "read-through restart %.3f / %.3f / %.3f ms at 10k / 100k / 1M events", rt[0].wall, rt[1].wall,
               rt[2].wall);
    printf("3      info: delta records pending as left  %u  %u  %u (restart time tracks this bounded tail, not the "
           "history); a full replay of the history instead takes  %.1f  %.1f  %.1f ms; folding it with flushes took  "
           "%.2f  %.2f  %.2f s (SYNC_NONE)\n",
           pending[0], pending[1], pending[2], replay_ms[0], replay_ms[1], replay_ms[2], build_ms[0] / 1e3,
           build_ms[1] / 1e3, build_ms[2] / 1e3);
}

/* ---- 4. polls while compactions happen ----------------------------------- */

#define TICKS4 320   /* bursts of events */
#define BURST4 1000u /* events per burst, one flush each */
#define POLLS4 (TICKS4 * 6)

/* A live consumer over the shared memory log and its own durable store. */
typedef struct live4 {
    ostore o;
    opstate_consumer *c;
    double poll[POLLS4], work[POLLS4], comp[16];
    size_t npoll, nwork, ncomp, comp_in_work;
} live4;

static void live4_open(live4 *l, const char *path, opstate_memlog *m, bool compaction)
{
    opstate_consumer_config cfg;
    opstate_error err;
    ostore_open(&l->o, path, OPSTATE_LMDB_SYNC_FULL, false, compaction ? 0 : UINT32_MAX,
                compaction ? 0 : UINT64_MAX);
    memset(&cfg, 0, sizeof cfg);
    cfg.log = opstate_memlog_iface(m);
    cfg.store = l->o.iface;
    cfg.flush_every = BURST4;
    CK(opstate_consumer_open(&cfg, &l->c, &err));
}

/* Polls as a live loop does until a poll finds nothing new; times each. */
static void live4_burst(live4 *l)
{
    opstate_poll_result pr;
    opstate_error err;
    do {
        uint64_t before = opstate_consumer_get_status(l->c)->compactions;
        double t = now_ms();
        CK(opstate_consumer_poll(l->c, 0, 0, &pr, &err));
        t = now_ms() - t;
        if (l->npoll < POLLS4) l->poll[l->npoll++] = t;
        if (pr.applied && l->nwork < POLLS4) l->work[l->nwork++] = t;
        if (opstate_consumer_get_status(l->c)->compactions == before) continue;
        if (l->ncomp < 16) l->comp[l->ncomp++] = t;
        if (pr.applied) l->comp_in_work++;
    } while (pr.applied);
}

static void live4_close(live4 *l, const char *path)
{
    opstate_error err;
    CK(opstate_consumer_close(l->c, &err));
    ostore_close(&l->o);
    rm_rf(path);
}

static void poll_latency_with_compaction(void)
{
    static live4 on, off;
    opstate_memlog *m;
    char pon[4096], poff[4096];
    int t;
    double r99;
    CK(opstate_memlog_create(NULL, &m));
    path_of(pon, sizeof pon, "p4_compaction_on");
    path_of(poff, sizeof poff, "p4_compaction_off");
    live4_open(&on, pon, m, true);
    live4_open(&off, poff, m, false);
    for (t = 0; t < (bench_quick() ? TICKS4 / 4 : TICKS4); t++) { /* a burst arrives; both consumers take it, in turn */
        publish_events(m, (uint64_t)t * BURST4, BURST4, K1);
        if (t % 2) live4_burst(&off);
        live4_burst(&on);
        if (t % 2 == 0) live4_burst(&off);
    }
    r99 = pct(on.work, on.nwork, 99) / pct(off.work, off.nwork, 99);
    printf("4   polls while compactions happen (%u bursts of %u events over %u keys, a durable flush per burst, live "
           "loop: poll until a poll finds nothing), compaction on (default bound) vs off:\n",
           bench_quick() ? TICKS4 / 4 : TICKS4, BURST4, K1);
    printf("4      every poll:            on p50 %7.3f  p99 %7.3f  max %7.2f ms   off p50 %7.3f  p99 %7.3f  max %7.2f ms\n",
           pct(on.poll, on.npoll, 50), pct(on.poll, on.npoll, 99), pct(on.poll, on.npoll, 100),
           pct(off.poll, off.npoll, 50), pct(off.poll, off.npoll, 99), pct(off.poll, off.npoll, 100));
    printf("4      polls that applied:    on p50 %7.3f  p99 %7.3f  max %7.2f ms   off p50 %7.3f  p99 %7.3f  max %7.2f ms   "
           "p99 on/off %.2fx\n",
           pct(on.work, on.nwork, 50), pct(on.work, on.nwork, 99), pct(on.work, on.nwork, 100),
           pct(off.work, off.nwork, 50), pct(off.work, off.nwork, 99), pct(off.work, off.nwork, 100), r99);
    printf("4      %zu compactions (median %.1f ms), %zu of them in a poll that applied events  (target: none there, "
           "p99 on/off <= 1.25x)  %s\n",
           on.ncomp, pct(on.comp, on.ncomp, 50), on.comp_in_work, verdict(on.ncomp > 0 && on.comp_in_work == 0 && r99 <= 1.25));
    report_row("poll_compaction", on.ncomp > 0 && on.comp_in_work == 0 && r99 <= 1.25, NULL,
               "p99 of working polls on/off %.2fx; %.0f compactions, %.0f in a working poll", r99, (double)on.ncomp,
               (double)on.comp_in_work);
    live4_close(&on, pon);
    live4_close(&off, poff);
    opstate_memlog_destroy(m);
}

static void print_load(const char *when)
{
    FILE *f = fopen("/proc/loadavg", "r");
    char line[128];
    if (f && fgets(line, sizeof line, f)) printf("%s load average %s", when, line);
    if (f) fclose(f);
}

static const struct {
    const char *name;
    void (*run)(void);
} parts[4] = {{"flush_latency", flush_latency},
              {"restart_latency", restart_latency},
              {"recovery_as_history_grows", recovery_as_history_grows},
              {"poll_latency_with_compaction", poll_latency_with_compaction}};

int main(int argc, char **argv)
{
    const char *tmp = getenv("TMPDIR");
    struct utsname u;
    double t0 = now_ms();
    int i;
    if (argc == 4 && !strcmp(argv[1], "--restart")) return restart_child(argv[2], argv[3]);
    for (i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--no-1g")) g_skip_1g = 1;
        else if (!strcmp(argv[i], "--only") && i + 1 < argc) g_only = argv[++i];
    snprintf(g_root, sizeof g_root, "%s/bench_lmdb.XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    if (!mkdtemp(g_root)) {
        g_root[0] = 0;
        die("mkdtemp", errno, __LINE__);
    }
    uname(&u);
    printf("bench_lmdb: opstate %s, opstate_lmdb %s, %s, SQLite %s; %ld CPUs, %.1f GiB RAM, %s %s; temp dir %s\n",
           OPSTATE_VERSION_STRING, OPSTATE_LMDB_VERSION_STRING, mdb_version(NULL, NULL, NULL), sqlite3_libversion(),
           sysconf(_SC_NPROCESSORS_ONLN),
           (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGESIZE) / (1024.0 * 1024 * 1024), u.sysname,
           u.release, g_root);
    print_load("start:");
    {
        /* the durable floor right now: 4 KiB overwrite + fdatasync */
        char p[2048];
        double v[50];
        uint8_t page[4096];
        int fd, k;
        path_of(p, sizeof p, "fsync_probe");
        memset(page, 1, sizeof page);
        fd = open(p, O_RDWR | O_CREAT, 0600);
        if (fd >= 0 && pwrite(fd, page, sizeof page, 0) == (ssize_t)sizeof page && fsync(fd) == 0) {
            for (k = 0; k < 50; k++) {
                double t = now_ms();
                if (pwrite(fd, page, sizeof page, 0) != (ssize_t)sizeof page || fdatasync(fd) != 0) break;
                v[k] = now_ms() - t;
            }
            if (k == 50)
                printf("durable floor now: 4 KiB pwrite + fdatasync p50 %.3f ms, p90 %.3f ms (the probe measured "
                       "0.28 ms on this machine kind)\n",
                       pct(v, 50, 50), pct(v, 50, 90));
        }
        if (fd >= 0) close(fd);
        unlink(p);
    }
    printf("ratios are against baselines measured in this run; durable = fsync on commit (LMDB default, SQLite "
           "synchronous=FULL); restarts: data in the page cache (warm), each in a fresh process, timed inside it\n");
    fflush(stdout);
    w1_init();
    for (i = 0; i < 4; i++)
        if (!g_only || !strcmp(g_only, parts[i].name)) {
            parts[i].run();
            fflush(stdout);
        }
    print_load("end:");
    printf("(total %.1f s, sink %lu)\n", (now_ms() - t0) / 1e3, (unsigned long)(g_sink & 1));
    rm_rf(g_root);
    return 0;
}
