/* storage.c — storage chaos: damaged LMDB files against the opstate API.

     cc -std=c99 -O2 -D_POSIX_C_SOURCE=200809L -I. tests/chaos/storage.c -llmdb -o build/storage_chaos
     ./build/storage_chaos [--quick] [--seed S] [--timeout-ms MS] [--workers N] [--verbose] [--map]

   A builder process makes a small LMDB event log (100 events over 21 keys
   and subjects, appended in one transaction as publish --batch does: puts,
   overwrites, deletes, four values large enough for LMDB overflow pages)
   and a consumer state store from it: a load-all consumer up to sequence
   50 (compacted into the table at close), then a read-through one up to
   sequence 80 that leaves its flushes as delta records. The log goes on to
   100, so a consume onto the store has work. The files are 21 and 18 pages
   of 4 KiB (--map prints what each page is).

   The reference is what the intact files give. For the LOG, opened
   read-only: info; a replay (opstate_replay); a consumer over a fresh
   memory store. For the STORE: opened read-only, a load-all load and a
   read-through load (state, meta, dedup window); opened read-write
   (EXISTING), a read-through consumer from the intact log onto it (state at
   100); opened read-only again, a reload of what that consumer flushed. The
   builder checks the references against each other (every fold that ends
   at 100 is the same; the loads equal a replay up to 80), and each kind of
   trial first runs on an undamaged copy and must give "no effect". Every
   trial writes a fresh copy of data.mdb (no lock file) with ONE damage,
   forks a child that runs those operations, and classifies what came out:

     no effect     every operation OK and every output equal to the reference
     clean error   an operation returned an error result (CORRUPT, NOT_FOUND,
                   UNKNOWN_VERSION, ...; a replay that reports poison events,
                   and a consumer stopped at POISON, count here: the damage
                   was reported, not hidden); no crash, no wrong output
     crash         the child died of a signal (which one, and where it was)
     hang          the child ran past --timeout-ms (default 2000: a normal
                   trial takes 3-20 ms, the slowest seen under load 0.2 s)
                   and was SIGKILLed
     silent wrong  an operation returned OK with output that differs from the
                   reference (whatever the reason: a flip that LMDB and
                   opstate never read cannot cause one, a flip that changes
                   data consistently is still wrong data)

   Damage: every byte XORed with 0xFF in turn (the log, then the store), and
   the file cut at every page boundary (0 .. pages-1 whole pages). --quick
   (or QUICK=1) flips every 37th byte, starting at seed % 37, and keeps
   every truncation. Two worker processes (--workers) share the trials;
   full: ~160,000 trials, ~10 min on 2 cores; quick: ~4,400, under 30 s
   (plus --timeout-ms per hang, shared by the workers). A child runs
   with 1 GiB of address space and may write files up to 256 MiB (a write
   past that, say at a page number read from a damaged freelist, is
   SIGXFSZ: a crash), and no core files.

   Where: each damaged offset is placed in the LMDB structure of the intact
   file, found by walking the B-trees from the newest meta page: meta page
   field, page header, node pointers, free space in a page, node header,
   key, data, a named database's record, the freelist, overflow data, a
   free or unreferenced page.

   RULE (the exit status): 1 when any trial is a hang or silent wrong; when
   a crash comes from a flipped byte of an opstate record (a key or value
   byte of a leaf or overflow page of an opstate database, s:* or l:*:
   opstate writes those bytes and must check them); when a truncated file
   crashes (DESIGN: such a file is refused before it is mapped); or when the
   harness itself fails. A crash from a flip in LMDB's own structures (meta
   pages, page headers, node pointers and headers, branch pages, the main
   database's records, the freelist) is listed and counted but does not
   fail: LMDB trusts its page structure, and DESIGN asks for that damage to
   be counted and reported. The last line sums it up. */
#define OPSTATE_IMPLEMENTATION
#define OPSTATE_LMDB_IMPLEMENTATION
#include "opstate_lmdb.h"
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define EVENTS 100
#define STORE_SEQ_TABLE 50  /* load-all consumer stops here, compacts at close */
#define STORE_SEQ 80        /* read-through consumer stops here, leaves deltas */
#define KEYS 20             /* and k20 for the large values */
#define BATCH 100           /* events per append transaction */
#define QUICK_STRIDE 37
#define EXIT_HARNESS 70     /* a child's setup failed: not the damage's doing */

enum kind { LOG_FLIP, STORE_FLIP, LOG_TRUNC, STORE_TRUNC, KINDS };
enum outcome { NO_EFFECT, CLEAN_ERROR, CRASH, HANG, SILENT_WRONG, HARNESS, OUTCOMES };
enum step { S_OPEN, S_INFO, S_REPLAY, S_CONSUME_MEM, S_LOAD_ALL, S_READ_THROUGH, S_CONSUME, S_RELOAD, STEPS };

static const char *const kind_names[KINDS] = {"log flips", "store flips", "log truncations", "store truncations"};
static const char *const outcome_names[OUTCOMES] = {"no effect", "clean error", "crash", "hang", "silent wrong",
                                                    "harness"};
static const char *const step_names[STEPS] = {"open", "info", "replay", "consume(mem)", "load-all",
                                              "read-through", "consume", "reload"};

/* One trial: in shared memory, written by the child as it goes. */
typedef struct trial {
    uint32_t offset;   /* the flipped byte, or the length the file was cut to */
    uint32_t micros;   /* how long the child ran */
    uint8_t outcome;   /* enum outcome */
    uint8_t signal;    /* crash: the signal */
    uint8_t result;    /* clean error: the opstate_result */
    uint8_t step;      /* the step that decided the outcome */
    uint8_t at;        /* the step running (a crash or hang happened there) */
    char note[59];     /* crash or hang: first line the child wrote to stderr */
} trial;

typedef struct dump {
    uint8_t *p;
    size_t len, cap;
    size_t kv_end; /* where the fold's part ends (cross-checks) */
} dump;

/* Reference run (keeps the dumps) or a trial (compares, judges). */
typedef struct checker {
    trial *t; /* NULL: reference */
} checker;

static char dir[64];
static uint8_t *intact[2]; /* data.mdb of the log, of the store */
static size_t intact_len[2];
static dump refs[STEPS];
static bool quick, verbose, map_only;
static uint64_t seed;
static long timeout_ms = 2000;
static int workers = 2;

static pid_t main_pid;

#if defined(__GNUC__) || defined(__clang__)
#define NORETURN __attribute__((noreturn))
#else
#define NORETURN
#endif

/* Stops the run; the main process removes its temporary directory. */
static NORETURN void die(const char *what, const char *why)
{
    char cmd[96];
    fprintf(stderr, "storage_chaos: %s: %s\n", what, why);
    if (getpid() == main_pid && dir[0]) {
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0) fprintf(stderr, "storage_chaos: could not remove %s\n", dir);
    }
    exit(2);
}

/* >>dump: a canonical byte image of an outcome ------------------------- */

static void put(dump *d, const void *b, size_t n)
{
    if (d->len + n > d->cap) {
        size_t cap = (d->cap ? d->cap * 2 : 4096) + n;
        uint8_t *p = (uint8_t *)realloc(d->p, cap);
        if (!p) _exit(EXIT_HARNESS);
        d->p = p;
        d->cap = cap;
    }
    if (n) memcpy(d->p + d->len, b, n);
    d->len += n;
}

static void put_u64(dump *d, uint64_t v)
{
    uint8_t b[8];
    opstate_put_le64(b, v);
    put(d, b, 8);
}

static void put_position(dump *d, opstate_position p)
{
    put_u64(d, p.seq);
    put_u64(d, (uint64_t)p.time);
    put_u64(d, p.epoch);
}

static bool put_item_plain(void *user, const opstate_kv_item *item)
{
    dump *d = (dump *)user;
    put_u64(d, item->key.len);
    put(d, item->key.ptr, item->key.len);
    put_u64(d, item->value.len);
    put(d, item->value.ptr, item->value.len);
    return true;
}

/* The key and value, then the position they were written at. */
static bool put_item(void *user, const opstate_kv_item *item)
{
    dump *d = (dump *)user;
    put_item_plain(user, item);
    put_u64(d, item->position.seq);
    put_u64(d, (uint64_t)item->position.time);
    return true;
}

/* Every live key in order (the base too, in read-through mode). */
static opstate_result put_kv(dump *d, const opstate_kv *kv, bool positions)
{
    opstate_result r;
    put_u64(d, opstate_kv_count(kv));
    r = opstate_kv_iterate(kv, positions ? put_item : put_item_plain, d);
    d->kv_end = d->len;
    return r;
}

/* >>open: one small function per open call (read-only flags go here) ---- */

static int64_t log_clock_now = 1700000000000000000;

static int64_t log_clock(void *user)
{
    (void)user;
    return log_clock_now += 1000000;
}

/* CREATE builds the files; a trial opens READ_ONLY to look and EXISTING
   to consume onto a store, as the opstate tool does. */
static opstate_result open_env(const char *path, opstate_lmdb_access access, opstate_lmdb **env)
{
    opstate_lmdb_config c;
    memset(&c, 0, sizeof c);
    c.path = path;
    c.access = access;
    c.durability = OPSTATE_LMDB_SYNC_NONE; /* no fsync: trials are thrown away */
    return opstate_lmdb_open(&c, env, NULL);
}

static opstate_result open_log(opstate_lmdb *env, opstate_lmdb_log **lg)
{
    opstate_lmdb_log_config c;
    memset(&c, 0, sizeof c);
    c.clock = log_clock; /* deterministic files: a fixed publish clock */
    return opstate_lmdb_log_open(env, &c, lg, NULL);
}

/* Read-only use (loads) passes no_compact: closing must not write. */
static opstate_result open_store(opstate_lmdb *env, bool read_through, bool no_compact, opstate_lmdb_store **st)
{
    opstate_lmdb_store_config c;
    memset(&c, 0, sizeof c);
    c.name = "chaos";
    c.read_through = read_through;
    c.no_compact_on_close = no_compact;
    return opstate_lmdb_store_open(env, &c, st, NULL);
}

/* >>setup: the small log and the store ---------------------------------- */

static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15u;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9u;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebu;
    return x ^ (x >> 31);
}

/* Event i: key k of 20, subject ops.<eu|us>.<order|cart>.k<k>; a delete in
   five; values of 10..70 bytes. Events 7, 32, 57, 82 put 2,500 bytes under
   a key of their own, k20 (LMDB overflow pages in the log, in the store's
   table and in a delta record). */
static void make_event(int i, opstate_event *ev, char *key, char *value, size_t cap)
{
    static const char *const scopes[2] = {"eu", "us"}, *const kinds[2] = {"order", "cart"};
    uint64_t x = mix((uint64_t)i);
    bool big = i % 25 == 7;
    int k = big ? KEYS : (int)(x % KEYS), pad = big ? 2500 : 10 + (int)((x >> 8) % 60);
    uint8_t entropy[8];
    memset(ev, 0, sizeof *ev);
    snprintf(key, 8, "k%02d", k);
    snprintf(value, cap, "{\"n\":%d,\"pad\":\"%0*d\"}", i, pad, 0);
    ev->scope.ptr = (const uint8_t *)scopes[k % 2];
    ev->scope.len = 2;
    ev->kind.ptr = (const uint8_t *)kinds[(k / 2) % 2];
    ev->kind.len = strlen(kinds[(k / 2) % 2]);
    ev->key.ptr = (const uint8_t *)key;
    ev->key.len = strlen(key);
    ev->op = !big && (x >> 40) % 5 == 0 ? OPSTATE_OP_DELETE : OPSTATE_OP_PUT;
    ev->data.ptr = (const uint8_t *)value;
    ev->data.len = ev->op == OPSTATE_OP_PUT ? strlen(value) : 0;
    ev->has_time = true;
    ev->time = 1700000000000000000 + (int64_t)i * 1000;
    memcpy(entropy, &x, sizeof entropy);
    opstate_id_time_ordered(ev->time, entropy, &ev->id);
}

/* Appends events first..last in one transaction (what publish --batch
   does): fewer transactions, fewer free pages, a smaller file. */
static void append_events(opstate_lmdb_log *lg, int first, int last)
{
    static uint8_t data[BATCH][3100];
    static char subject[BATCH][64], value[3000];
    opstate_lmdb_append_item items[BATCH];
    opstate_append_result out[BATCH];
    opstate_event ev[BATCH];
    char key[8];
    size_t len;
    opstate_result r;
    int i;
    for (i = 0; i <= last - first; i++) {
        make_event(first + i, &ev[i], key, value, sizeof value);
        memset(&items[i], 0, sizeof items[i]);
        if (opstate_subject_build("ops", 3, ev[i].scope, ev[i].kind, ev[i].key, subject[i], sizeof subject[i], &len,
                                  NULL) != OPSTATE_OK)
            die("subject", "cannot build");
        items[i].subject.ptr = (const uint8_t *)subject[i];
        items[i].subject.len = len;
        if ((r = opstate_event_encode(&ev[i], data[i], sizeof data[i], &len, NULL)) != OPSTATE_OK)
            die("encode", opstate_result_str(r));
        items[i].data.ptr = data[i];
        items[i].data.len = len;
        items[i].opts.msg_id = &ev[i].id;
    }
    if ((r = opstate_lmdb_log_append_batch(lg, items, (size_t)(last - first + 1), out, NULL)) != OPSTATE_OK)
        die("append", opstate_result_str(r));
}

static void build_log(const char *path)
{
    opstate_lmdb *env;
    opstate_lmdb_log *lg;
    int i;
    if (open_env(path, OPSTATE_LMDB_CREATE, &env) != OPSTATE_OK || open_log(env, &lg) != OPSTATE_OK)
        die(path, "cannot create the log");
    for (i = 1; i <= EVENTS; i += BATCH) append_events(lg, i, i + BATCH - 1 <= EVENTS ? i + BATCH - 1 : EVENTS);
    opstate_lmdb_log_close(lg);
    opstate_lmdb_close(env);
}

/* Consumes from the log at log_path into the store until position `upto`. */
static void build_store_part(const char *log_path, const char *path, bool read_through, uint64_t upto)
{
    opstate_lmdb *log_env, *env;
    opstate_lmdb_log *lg;
    opstate_lmdb_store *st;
    opstate_consumer_config cfg;
    opstate_consumer *c;
    opstate_poll_result pr;
    opstate_result r;
    if (open_env(log_path, OPSTATE_LMDB_READ_ONLY, &log_env) != OPSTATE_OK || open_log(log_env, &lg) != OPSTATE_OK ||
        open_env(path, OPSTATE_LMDB_CREATE, &env) != OPSTATE_OK ||
        open_store(env, read_through, read_through, &st) != OPSTATE_OK)
        die(path, "cannot open the log or the store");
    memset(&cfg, 0, sizeof cfg);
    cfg.log = opstate_lmdb_log_iface(lg);
    cfg.store = opstate_lmdb_store_iface(st);
    cfg.flush_every = read_through ? 7 : 10;
    cfg.batch = 16;
    if ((r = opstate_consumer_open(&cfg, &c, NULL)) != OPSTATE_OK) die("consumer open", opstate_result_str(r));
    while (opstate_consumer_position(c).seq < upto)
        if ((r = opstate_consumer_poll(c, (uint32_t)(upto - opstate_consumer_position(c).seq), 0, &pr, NULL)) !=
            OPSTATE_OK)
            die("poll", opstate_result_str(r));
    if ((r = opstate_consumer_close(c, NULL)) != OPSTATE_OK) die("consumer close", opstate_result_str(r));
    opstate_lmdb_store_close(st);
    opstate_lmdb_close(env);
    opstate_lmdb_log_close(lg);
    opstate_lmdb_close(log_env);
}

static uint8_t *read_file(const char *path, size_t *len)
{
    struct stat sb;
    uint8_t *p;
    int fd = open(path, O_RDONLY);
    if (fd < 0 || fstat(fd, &sb) != 0 || !(p = (uint8_t *)malloc((size_t)sb.st_size + 1)) ||
        read(fd, p, (size_t)sb.st_size) != (ssize_t)sb.st_size)
        die(path, strerror(errno));
    close(fd);
    *len = (size_t)sb.st_size;
    return p;
}

/* Writes data.mdb into env_dir: the intact file with one damage (flip at
   offset, or cut to offset bytes; UINT32_MAX: undamaged), no lock file. */
static bool write_copy(const char *env_dir, int which, bool cut, uint32_t offset)
{
    char path[128];
    size_t len = intact_len[which];
    int fd;
    bool ok;
    snprintf(path, sizeof path, "%s/lock.mdb", env_dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/data.mdb", env_dir);
    if ((fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600)) < 0) return false;
    if (cut && offset != UINT32_MAX) len = offset;
    if (!cut && offset != UINT32_MAX) intact[which][offset] ^= 0xFF;
    ok = write(fd, intact[which], len) == (ssize_t)len;
    if (!cut && offset != UINT32_MAX) intact[which][offset] ^= 0xFF;
    return close(fd) == 0 && ok;
}

/* >>steps: the operations a trial runs; each fills a dump ---------------- */

static opstate_result log_info(opstate_lmdb_log *lg, dump *d)
{
    opstate_log log = opstate_lmdb_log_iface(lg);
    opstate_stream_info si;
    opstate_result r = log.info(log.user, &si, NULL);
    if (r != OPSTATE_OK) return r;
    put_u64(d, si.first_seq);
    put_u64(d, si.last_seq);
    put_u64(d, (uint64_t)si.first_time);
    put_u64(d, (uint64_t)si.last_time);
    put_u64(d, si.epoch);
    put_u64(d, si.messages);
    return OPSTATE_OK;
}

/* A replay that reports poison events reported the damage: POISON. */
static opstate_result log_replay(opstate_lmdb_log *lg, dump *d)
{
    opstate_replay_config rc;
    opstate_replay_result rr;
    opstate_kv *kv;
    opstate_result r;
    memset(&rc, 0, sizeof rc);
    rc.log = opstate_lmdb_log_iface(lg);
    if (opstate_kv_create(NULL, &kv) != OPSTATE_OK) _exit(EXIT_HARNESS);
    if ((r = opstate_replay(&rc, kv, &rr, NULL)) == OPSTATE_OK && (r = put_kv(d, kv, true)) == OPSTATE_OK) {
        put_position(d, rr.position);
        put_u64(d, rr.end_seq);
        put_u64(d, rr.applied);
        put_u64(d, rr.filtered);
        put_u64(d, rr.duplicates);
        if (rr.poison) r = OPSTATE_POISON;
    }
    opstate_kv_destroy(kv);
    return r;
}

/* Polls until caught up; dumps the state and the position. */
static opstate_result consume_all(const opstate_consumer_config *cfg, dump *d)
{
    opstate_consumer *c;
    opstate_poll_result pr;
    opstate_result r, closed;
    if ((r = opstate_consumer_open(cfg, &c, NULL)) != OPSTATE_OK) return r;
    do r = opstate_consumer_poll(c, 0, 0, &pr, NULL);
    while (r == OPSTATE_OK && !pr.caught_up);
    if (r == OPSTATE_OK && (r = put_kv(d, opstate_consumer_kv(c), true)) == OPSTATE_OK)
        put_position(d, opstate_consumer_position(c));
    closed = opstate_consumer_close(c, NULL);
    return r != OPSTATE_OK ? r : closed;
}

static opstate_result log_consume_mem(opstate_lmdb_log *lg, dump *d)
{
    opstate_memstore *m;
    opstate_consumer_config cfg;
    opstate_result r;
    if (opstate_memstore_create(NULL, &m) != OPSTATE_OK) _exit(EXIT_HARNESS);
    memset(&cfg, 0, sizeof cfg);
    cfg.log = opstate_lmdb_log_iface(lg);
    cfg.store = opstate_memstore_iface(m);
    cfg.flush_every = 10;
    cfg.batch = 16;
    r = consume_all(&cfg, d);
    opstate_memstore_destroy(m);
    return r;
}

/* Loads the store into a fresh fold: state, meta, dedup window. */
static opstate_result store_load(opstate_lmdb *env, bool read_through, dump *d)
{
    static uint32_t dedup_mem[64 * 1024];
    opstate_lmdb_store *st;
    opstate_store s;
    opstate_kv_config kc;
    opstate_kv *kv;
    opstate_snapshot_meta meta;
    opstate_dedup dedup;
    uint8_t window[16 * 1024 + 64];
    size_t window_len = 0;
    opstate_result r;
    if ((r = open_store(env, read_through, true, &st)) != OPSTATE_OK) return r;
    s = opstate_lmdb_store_iface(st);
    memset(&kc, 0, sizeof kc);
    kc.base = s.base(s.user);
    kc.max_key_len = s.max_key_len;
    if (opstate_kv_create(&kc, &kv) != OPSTATE_OK ||
        opstate_dedup_init(&dedup, dedup_mem, sizeof dedup_mem, 1024) != OPSTATE_OK)
        _exit(EXIT_HARNESS);
    memset(&meta, 0, sizeof meta);
    if ((r = s.load(s.user, kv, &meta, &dedup, NULL)) == OPSTATE_OK && (r = put_kv(d, kv, true)) == OPSTATE_OK) {
        put_position(d, meta.position);
        put_u64(d, meta.schema_version);
        if (opstate_dedup_encode(&dedup, window, sizeof window, &window_len) != OPSTATE_OK) _exit(EXIT_HARNESS);
        put(d, window, window_len);
    }
    opstate_kv_destroy(kv);
    opstate_lmdb_store_close(st);
    return r;
}

/* The store's environment opened read-only, loaded load-all. */
static opstate_result store_reload(const char *path, dump *d)
{
    opstate_lmdb *env = NULL;
    opstate_result r = open_env(path, OPSTATE_LMDB_READ_ONLY, &env);
    if (r == OPSTATE_OK) r = store_load(env, false, d);
    opstate_lmdb_close(env);
    return r;
}

/* A read-through consumer from the intact log onto the store; closing it
   flushes, closing the store compacts. */
static opstate_result store_consume(const char *path, const char *log_path, dump *d)
{
    opstate_lmdb *log_env, *env = NULL;
    opstate_lmdb_log *lg;
    opstate_lmdb_store *st;
    opstate_consumer_config cfg;
    opstate_result r;
    if (open_env(log_path, OPSTATE_LMDB_READ_ONLY, &log_env) != OPSTATE_OK || open_log(log_env, &lg) != OPSTATE_OK)
        _exit(EXIT_HARNESS);
    if ((r = open_env(path, OPSTATE_LMDB_EXISTING, &env)) == OPSTATE_OK && (r = open_store(env, true, false, &st)) == OPSTATE_OK) {
        memset(&cfg, 0, sizeof cfg);
        cfg.log = opstate_lmdb_log_iface(lg);
        cfg.store = opstate_lmdb_store_iface(st);
        cfg.flush_every = 10;
        cfg.batch = 16;
        r = consume_all(&cfg, d);
        opstate_lmdb_store_close(st);
    }
    opstate_lmdb_close(env);
    opstate_lmdb_log_close(lg);
    opstate_lmdb_close(log_env);
    return r;
}

/* >>judge ---------------------------------------------------------------- */

static void step_begin(checker *ck, int step)
{
    if (ck->t) ck->t->at = (uint8_t)step;
}

/* Reference: keeps the dump (every step must be OK). Trial: a different
   dump with OK is silent wrong (it wins), an error a clean error. */
static void step_done(checker *ck, int step, opstate_result r, dump *d)
{
    trial *t = ck->t;
    bool same;
    if (!t) {
        if (r != OPSTATE_OK) die(step_names[step], opstate_result_str(r));
        if (d) refs[step] = *d;
        return;
    }
    same = !d || (d->len == refs[step].len && memcmp(d->p, refs[step].p, d->len) == 0);
    if (d) free(d->p);
    if (r == OPSTATE_OK && same) return;
    if (r == OPSTATE_OK && t->outcome != SILENT_WRONG) {
        t->outcome = SILENT_WRONG;
        t->step = (uint8_t)step;
        t->result = 0;
    } else if (r != OPSTATE_OK && t->outcome == NO_EFFECT) {
        t->outcome = CLEAN_ERROR;
        t->step = (uint8_t)step;
        t->result = (uint8_t)r;
    }
}

static void log_checks(checker *ck, const char *path)
{
    opstate_lmdb *env = NULL;
    opstate_lmdb_log *lg = NULL;
    dump d;
    opstate_result r;
    step_begin(ck, S_OPEN);
    if ((r = open_env(path, OPSTATE_LMDB_READ_ONLY, &env)) == OPSTATE_OK) r = open_log(env, &lg);
    step_done(ck, S_OPEN, r, NULL);
    if (r == OPSTATE_OK) {
        step_begin(ck, S_INFO);
        memset(&d, 0, sizeof d);
        step_done(ck, S_INFO, log_info(lg, &d), &d);
        step_begin(ck, S_REPLAY);
        memset(&d, 0, sizeof d);
        step_done(ck, S_REPLAY, log_replay(lg, &d), &d);
        step_begin(ck, S_CONSUME_MEM);
        memset(&d, 0, sizeof d);
        step_done(ck, S_CONSUME_MEM, log_consume_mem(lg, &d), &d);
    }
    opstate_lmdb_log_close(lg);
    opstate_lmdb_close(env);
}

/* The loads (read-only) and the consume (read-write) are independent; the
   reload checks what the consume wrote, so it runs only after a consume
   that went well. */
static void store_checks(checker *ck, const char *path, const char *log_path)
{
    opstate_lmdb *env = NULL;
    dump d;
    opstate_result r;
    step_begin(ck, S_OPEN);
    step_done(ck, S_OPEN, r = open_env(path, OPSTATE_LMDB_READ_ONLY, &env), NULL);
    if (r == OPSTATE_OK) {
        step_begin(ck, S_LOAD_ALL);
        memset(&d, 0, sizeof d);
        step_done(ck, S_LOAD_ALL, store_load(env, false, &d), &d);
        step_begin(ck, S_READ_THROUGH);
        memset(&d, 0, sizeof d);
        step_done(ck, S_READ_THROUGH, store_load(env, true, &d), &d);
    }
    opstate_lmdb_close(env);
    step_begin(ck, S_CONSUME);
    memset(&d, 0, sizeof d);
    step_done(ck, S_CONSUME, r = store_consume(path, log_path, &d), &d);
    if (r == OPSTATE_OK) {
        step_begin(ck, S_RELOAD);
        memset(&d, 0, sizeof d);
        step_done(ck, S_RELOAD, store_reload(path, &d), &d);
    }
}

/* >>trial: fork, watch, classify ----------------------------------------- */

typedef struct worker {
    char env_dir[96], log_dir[96], err_path[96];
} worker;

static void child_limits(int err_fd)
{
    struct rlimit no_core = {0, 0}, mem = {(rlim_t)1 << 30, (rlim_t)1 << 30}, fsize = {(rlim_t)256 << 20, (rlim_t)256 << 20};
    sigset_t none;
    int null_fd = open("/dev/null", O_WRONLY);
    setrlimit(RLIMIT_CORE, &no_core);
    setrlimit(RLIMIT_AS, &mem);
    setrlimit(RLIMIT_FSIZE, &fsize);
    if (null_fd >= 0) dup2(null_fd, 1);
    dup2(err_fd, 2);
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
}

/* Waits for the child up to timeout_ms (SIGCHLD is blocked in workers);
   true when it had to be killed. */
static bool wait_child(pid_t pid, int *status)
{
    struct timespec start, now, left;
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        long ms;
        if (waitpid(pid, status, WNOHANG) == pid) return false;
        clock_gettime(CLOCK_MONOTONIC, &now);
        ms = (long)(now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
        if (ms >= timeout_ms) break;
        left.tv_sec = (timeout_ms - ms) / 1000;
        left.tv_nsec = (timeout_ms - ms) % 1000 * 1000000;
        sigtimedwait(&chld, NULL, &left);
    }
    kill(pid, SIGKILL);
    waitpid(pid, status, 0);
    return true;
}

/* First line the child wrote to stderr (an LMDB assertion, say). */
static void read_note(const char *path, char *note, size_t cap)
{
    FILE *f = fopen(path, "r");
    note[0] = '\0';
    if (!f) return;
    if (fgets(note, (int)cap, f)) note[strcspn(note, "\n")] = '\0';
    fclose(f);
}

static void run_trial(const worker *w, int kind, trial *t)
{
    bool is_log = kind == LOG_FLIP || kind == LOG_TRUNC, hung;
    struct timespec start, end;
    int status = 0, err_fd;
    pid_t pid;
    t->outcome = NO_EFFECT;
    if (!write_copy(w->env_dir, is_log ? 0 : 1, kind >= LOG_TRUNC, t->offset) ||
        (err_fd = open(w->err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600)) < 0) {
        t->outcome = HARNESS;
        return;
    }
    if ((pid = fork()) == 0) {
        checker ck;
        ck.t = t;
        child_limits(err_fd);
        if (is_log) log_checks(&ck, w->env_dir);
        else store_checks(&ck, w->env_dir, w->log_dir);
        _exit(0);
    }
    close(err_fd);
    if (pid < 0) {
        t->outcome = HARNESS;
        return;
    }
    clock_gettime(CLOCK_MONOTONIC, &start);
    hung = wait_child(pid, &status);
    clock_gettime(CLOCK_MONOTONIC, &end);
    t->micros = (uint32_t)((end.tv_sec - start.tv_sec) * 1000000 + (end.tv_nsec - start.tv_nsec) / 1000);
    if (hung || WIFSIGNALED(status)) {
        t->outcome = hung ? HANG : CRASH;
        t->signal = hung ? 0 : (uint8_t)WTERMSIG(status);
        t->step = t->at;
        read_note(w->err_path, t->note, sizeof t->note);
    } else if (WEXITSTATUS(status) != 0) {
        t->outcome = HARNESS;
        t->step = t->at;
    }
}

static bool make_dir(const char *path)
{
    return mkdir(path, 0700) == 0 || errno == EEXIST;
}

static void worker_main(pid_t parent, int index, int kind, trial *t, size_t n)
{
    worker w;
    sigset_t chld;
    size_t i;
    char base[80];
    snprintf(base, sizeof base, "%s/w%d", dir, index);
    snprintf(w.env_dir, sizeof w.env_dir, "%s/env", base);
    snprintf(w.log_dir, sizeof w.log_dir, "%s/log", base);
    snprintf(w.err_path, sizeof w.err_path, "%s/stderr", base);
    if (!make_dir(base) || !make_dir(w.env_dir) || !make_dir(w.log_dir) || !write_copy(w.log_dir, 0, false, UINT32_MAX))
        _exit(EXIT_HARNESS);
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, NULL);
    for (i = (size_t)index; i < n && getppid() == parent; i += (size_t)workers) run_trial(&w, kind, &t[i]);
    _exit(0);
}

/* Runs every trial of one kind over the workers. */
static void run_kind(int kind, trial *t, size_t n)
{
    pid_t pids[16], parent = getpid();
    int i, status, bad = 0;
    for (i = 0; i < workers; i++) {
        if ((pids[i] = fork()) < 0) die("fork", strerror(errno));
        if (pids[i] == 0) worker_main(parent, i, kind, t, n);
    }
    for (i = 0; i < workers; i++)
        if (waitpid(pids[i], &status, 0) != pids[i] || !WIFEXITED(status) || WEXITSTATUS(status) != 0) bad++;
    if (bad) die(kind_names[kind], "a worker failed");
}

/* >>where: the LMDB structure under an offset of the intact file -------- */

#define P_BRANCH 0x01u
#define P_LEAF 0x02u
#define P_OVERFLOW 0x04u
#define P_META 0x08u
#define F_BIGDATA 0x01u
#define F_SUBDATA 0x02u
#define PAGE_HEADER 16u
#define MAX_DBS 16

enum role { R_UNUSED, R_HEADER, R_PTRS, R_GAP, R_NODE_HEADER, R_KEY, R_DATA, R_DB_RECORD, R_OVERFLOW_PGNO,
            R_OVERFLOW_DATA, ROLES };
static const char *const role_names[ROLES] = {
    "unused bytes", "page header", "node pointers", "free space in the page", "node header", "key", "data",
    "database record (MDB_db)", "overflow page number", "overflow data"};

enum page_state { PG_UNREFERENCED, PG_META, PG_LIVE, PG_OVERFLOW_MORE, PG_FREE };

typedef struct page_info {
    uint8_t state, db;
    uint16_t flags; /* mp_flags of the page header */
} page_info;

typedef struct pmap {
    const uint8_t *file;
    size_t len, psize, pages;
    page_info *page;
    uint8_t *role; /* per byte */
    char names[MAX_DBS][48];
    int dbs;
} pmap;

static pmap maps[2];

static uint64_t le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    while (n--) v = (v << 8) | p[n];
    return v;
}

static void mark(pmap *m, size_t from, size_t n, int role)
{
    if (from > m->len) return;
    if (n > m->len - from) n = m->len - from;
    memset(m->role + from, role, n);
}

static void walk(pmap *m, uint64_t pgno, int db, int depth);

/* An overflow run: header, then dsize bytes of the value. */
static void walk_overflow(pmap *m, uint64_t pgno, int db, size_t dsize)
{
    size_t n, i;
    if (pgno >= m->pages || m->page[pgno].state != PG_UNREFERENCED) return;
    m->page[pgno].state = PG_LIVE;
    m->page[pgno].db = (uint8_t)db;
    m->page[pgno].flags = (uint16_t)le(m->file + pgno * m->psize + 10, 2);
    n = (size_t)le(m->file + pgno * m->psize + 12, 4);
    for (i = 1; i < n && pgno + i < m->pages; i++) {
        m->page[pgno + i].state = PG_OVERFLOW_MORE;
        m->page[pgno + i].db = (uint8_t)db;
    }
    mark(m, pgno * m->psize, PAGE_HEADER, R_HEADER);
    mark(m, pgno * m->psize + PAGE_HEADER, dsize, R_OVERFLOW_DATA);
}

/* The freelist's values: u64 count, then that many free page numbers. */
static void mark_free(pmap *m, const uint8_t *idl, size_t len)
{
    size_t i, n = len >= 8 ? (size_t)le(idl, 8) : 0;
    for (i = 1; i <= n && (i + 1) * 8 <= len; i++) {
        uint64_t pg = le(idl + i * 8, 8);
        if (pg < m->pages && m->page[pg].state == PG_UNREFERENCED) m->page[pg].state = PG_FREE;
    }
}

static void walk_leaf_data(pmap *m, size_t at, size_t dsize, unsigned nflags, size_t ksize, int db, int depth)
{
    const uint8_t *p = m->file + at;
    if (nflags & F_BIGDATA) {
        uint64_t ov = le(p, 8);
        mark(m, at, 8, R_OVERFLOW_PGNO);
        walk_overflow(m, ov, db, dsize);
        if (db == 0 && ov < m->pages && ov * m->psize + PAGE_HEADER + dsize <= m->len)
            mark_free(m, m->file + ov * m->psize + PAGE_HEADER, dsize);
    } else if ((nflags & F_SUBDATA) && dsize == 48 && m->dbs < MAX_DBS) {
        int sub = m->dbs++;
        size_t n = ksize < sizeof m->names[0] ? ksize : sizeof m->names[0] - 1;
        memcpy(m->names[sub], p - ksize, n);
        m->names[sub][n] = '\0';
        mark(m, at, dsize, R_DB_RECORD);
        walk(m, le(p + 40, 8), sub, depth + 1);
    } else {
        mark(m, at, dsize, R_DATA);
        if (db == 0) mark_free(m, p, dsize);
    }
}

static void walk_node(pmap *m, uint64_t pgno, size_t off, unsigned pflags, int db, int depth)
{
    size_t base = pgno * m->psize, ksize, dsize;
    const uint8_t *n = m->file + base + off;
    unsigned nflags;
    if (off + 8 > m->psize) return;
    nflags = (unsigned)le(n + 4, 2);
    ksize = (size_t)le(n + 6, 2);
    mark(m, base + off, 8, R_NODE_HEADER);
    if (off + 8 + ksize > m->psize) return;
    mark(m, base + off + 8, ksize, R_KEY);
    if (pflags & P_BRANCH) {
        walk(m, le(n, 2) | le(n + 2, 2) << 16 | (uint64_t)nflags << 32, db, depth + 1);
        return;
    }
    dsize = (size_t)(le(n, 2) | le(n + 2, 2) << 16);
    if (off + 8 + ksize + ((nflags & F_BIGDATA) ? 8 : dsize) > m->psize) return;
    walk_leaf_data(m, base + off + 8 + ksize, dsize, nflags, ksize, db, depth);
}

/* A branch or leaf page and everything below it. */
static void walk(pmap *m, uint64_t pgno, int db, int depth)
{
    const uint8_t *p;
    size_t lower, upper, i;
    unsigned flags;
    if (pgno >= m->pages || depth > 32 || m->page[pgno].state != PG_UNREFERENCED) return;
    p = m->file + pgno * m->psize;
    flags = (unsigned)le(p + 10, 2);
    m->page[pgno].state = PG_LIVE;
    m->page[pgno].db = (uint8_t)db;
    m->page[pgno].flags = (uint16_t)flags;
    mark(m, pgno * m->psize, PAGE_HEADER, R_HEADER);
    lower = (size_t)le(p + 12, 2);
    upper = (size_t)le(p + 14, 2);
    if (!(flags & (P_BRANCH | P_LEAF)) || lower < PAGE_HEADER || lower > upper || upper > m->psize) return;
    mark(m, pgno * m->psize + PAGE_HEADER, lower - PAGE_HEADER, R_PTRS);
    mark(m, pgno * m->psize + lower, upper - lower, R_GAP);
    for (i = 0; i < (lower - PAGE_HEADER) / 2; i++)
        walk_node(m, pgno, (size_t)le(p + PAGE_HEADER + 2 * i, 2), flags, db, depth);
}

/* Walks the trees of the newest meta page (the higher txnid). */
static void map_build(pmap *m, const uint8_t *file, size_t len)
{
    const uint8_t *meta;
    size_t i;
    memset(m, 0, sizeof *m);
    m->file = file;
    m->len = len;
    if (len < 2 * 4096 || le(file + 16, 4) != 0xBEEFC0DEu) die("page map", "not an LMDB file");
    m->psize = (size_t)le(file + 40, 4);
    if (m->psize < 512 || m->psize > 65536) m->psize = 4096;
    m->pages = len / m->psize;
    if (!(m->page = (page_info *)calloc(m->pages + 1, sizeof *m->page)) || !(m->role = (uint8_t *)calloc(len, 1)))
        die("page map", "out of memory");
    meta = le(file + m->psize + 144, 8) > le(file + 144, 8) ? file + m->psize : file;
    for (i = 0; i < 2 && i < m->pages; i++) {
        m->page[i].state = PG_META;
        m->page[i].flags = (uint16_t)le(file + i * m->psize + 10, 2);
    }
    strcpy(m->names[0], "freelist");
    strcpy(m->names[1], "main");
    m->dbs = 2;
    walk(m, le(meta + 88 + 40, 8), 1, 0);
    walk(m, le(meta + 40 + 40, 8), 0, 0);
    for (i = 2; i < m->pages; i++)
        if (m->page[i].state == PG_UNREFERENCED || m->page[i].state == PG_FREE)
            m->page[i].flags = (uint16_t)le(file + i * m->psize + 10, 2);
}

static const char *page_type(unsigned flags)
{
    static char other[24];
    if (flags & P_META) return "meta";
    if (flags & P_OVERFLOW) return "overflow";
    if (flags & P_LEAF) return "leaf";
    if (flags & P_BRANCH) return "branch";
    snprintf(other, sizeof other, "flags 0x%x", flags);
    return other;
}

/* An MDB_meta field: 16-byte page header, then magic, version, address,
   mapsize, the freelist's and the main database's MDB_db, last page, txnid. */
static void meta_field(size_t in, char *out, size_t cap)
{
    static const char *const db_fields[7] = {"md_pad (page size)", "md_flags/md_depth", "md_branch_pages",
                                             "md_leaf_pages", "md_overflow_pages", "md_entries", "md_root"};
    if (in < 16) snprintf(out, cap, "page header");
    else if (in < 20) snprintf(out, cap, "mm_magic");
    else if (in < 24) snprintf(out, cap, "mm_version");
    else if (in < 32) snprintf(out, cap, "mm_address");
    else if (in < 40) snprintf(out, cap, "mm_mapsize");
    else if (in < 136) {
        size_t d = in - (in < 88 ? 40 : 88);
        snprintf(out, cap, "mm_dbs[%s].%s", in < 88 ? "FREE" : "MAIN", db_fields[d < 4 ? 0 : d < 8 ? 1 : (d - 8) / 8 + 2]);
    }
    else if (in < 144) snprintf(out, cap, "mm_last_pg");
    else if (in < 152) snprintf(out, cap, "mm_txnid");
    else snprintf(out, cap, "unused bytes");
}

/* Where a flipped byte lies; true when it is an opstate record byte (key or
   value of a leaf or overflow page of an opstate database). */
static bool describe(const pmap *m, size_t off, char *out, size_t cap)
{
    size_t pg = off / m->psize, in = off % m->psize;
    const page_info *pi;
    char field[48];
    int role;
    if (pg >= m->pages) {
        snprintf(out, cap, "past the last whole page");
        return false;
    }
    pi = &m->page[pg];
    role = m->role[off];
    if (pi->state == PG_META) {
        meta_field(in, field, sizeof field);
        snprintf(out, cap, "page %zu (meta): %s", pg, field);
        return false;
    }
    if (pi->state == PG_FREE || pi->state == PG_UNREFERENCED) {
        snprintf(out, cap, "page %zu (%s; header says %s)", pg, pi->state == PG_FREE ? "on the freelist" : "unreferenced",
                 page_type(pi->flags));
        return false;
    }
    snprintf(out, cap, "page %zu (%s of %s): %s", pg, pi->state == PG_OVERFLOW_MORE ? "overflow, continued" : page_type(pi->flags),
             m->names[pi->db], role_names[role]);
    return pi->db >= 2 && (role == R_OVERFLOW_DATA || ((pi->flags & P_LEAF) && (role == R_KEY || role == R_DATA)));
}

/* --map: one line per page. */
static void print_map(const pmap *m, const char *what)
{
    static const char *const states[] = {"unreferenced", "meta", "live", "overflow, continued", "on the freelist"};
    size_t i;
    printf("%s: %zu pages of %zu bytes\n", what, m->pages, m->psize);
    for (i = 0; i < m->pages; i++)
        printf("  page %3zu  %-19s %-9s %s\n", i, states[m->page[i].state], page_type(m->page[i].flags),
               m->page[i].state == PG_LIVE || m->page[i].state == PG_OVERFLOW_MORE ? m->names[m->page[i].db] : "");
}

/* Where a cut lands: the first page lost. */
static void describe_cut(const pmap *m, size_t len, char *out, size_t cap)
{
    size_t pg = len / m->psize;
    char first[120];
    if (len == 0) {
        snprintf(out, cap, "empty file (0 of %zu pages)", m->pages);
        return;
    }
    describe(m, len, first, sizeof first);
    snprintf(out, cap, "cut to %zu of %zu pages; lost from %s", pg, m->pages, first);
}

/* >>report --------------------------------------------------------------- */

/* Trials of one kind with the same outcome, place, signal and step. */
typedef struct group {
    int kind, outcome, signal, step;
    bool fails; /* counts against the rule */
    char where[200], note[59];
    size_t count;
    uint32_t from, to; /* the open range of offsets */
    char ranges[160];
    bool more; /* ranges did not fit */
} group;

static group *groups;
static size_t ngroups;

static void range_close(group *g)
{
    char one[40];
    size_t used = strlen(g->ranges);
    if (g->from == g->to) snprintf(one, sizeof one, "%s%u", used ? "," : "", (unsigned)g->from);
    else snprintf(one, sizeof one, "%s%u-%u", used ? "," : "", (unsigned)g->from, (unsigned)g->to);
    if (used + strlen(one) < sizeof g->ranges) memcpy(g->ranges + used, one, strlen(one) + 1);
    else g->more = true;
}

static void group_add(int kind, const trial *t, const char *where, bool fails)
{
    size_t i;
    group *g;
    for (i = 0; i < ngroups; i++) {
        g = &groups[i];
        if (g->kind == kind && g->outcome == t->outcome && g->signal == t->signal && g->step == t->step &&
            strcmp(g->where, where) == 0 && strcmp(g->note, t->note) == 0)
            break;
    }
    if (i == ngroups) {
        if (!(i & (i + 1)) && !(groups = (group *)realloc(groups, (2 * i + 2) * sizeof *groups)))
            die("report", "out of memory");
        g = &groups[ngroups++];
        memset(g, 0, sizeof *g);
        g->kind = kind;
        g->outcome = t->outcome;
        g->signal = t->signal;
        g->step = t->step;
        g->fails = fails;
        snprintf(g->where, sizeof g->where, "%s", where);
        memcpy(g->note, t->note, sizeof g->note);
        g->from = g->to = t->offset;
    } else if (t->offset == g->to + 1) {
        g->to = t->offset;
    } else {
        range_close(g);
        g->from = g->to = t->offset;
    }
    g->count++;
}

/* Whether an outcome counts against the rule (see the top of the file). */
static bool judge_rule(int kind, const trial *t, char *where, size_t cap)
{
    bool record = false;
    const pmap *m = &maps[kind == LOG_FLIP || kind == LOG_TRUNC ? 0 : 1];
    if (kind >= LOG_TRUNC) describe_cut(m, t->offset, where, cap);
    else record = describe(m, t->offset, where, cap);
    if (t->outcome == CRASH) return kind >= LOG_TRUNC || record;
    return t->outcome == HANG || t->outcome == SILENT_WRONG || t->outcome == HARNESS;
}

static void print_groups(int outcome, const char *title)
{
    size_t i, n = 0;
    for (i = 0; i < ngroups; i++) n += groups[i].outcome == outcome ? groups[i].count : 0;
    if (!n) return;
    printf("\n%s (%zu):\n", title, n);
    for (i = 0; i < ngroups; i++) {
        group *g = &groups[i];
        if (g->outcome != outcome) continue;
        range_close(g);
        printf("  %-17s %-7s x%-4zu %s | during %s | %s%s%s%s\n  %19s at %s%s\n", kind_names[g->kind],
               outcome == CRASH ? strsignal(g->signal) : "", g->count, g->where, step_names[g->step],
               g->fails ? "FAILS THE RULE" : "LMDB structure: reported",
               g->note[0] ? " | \"" : "", g->note, g->note[0] ? "\"" : "", "", g->ranges, g->more ? ",..." : "");
    }
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* How long the children ran (a slow kind of damage shows here). */
static void print_times(trial *const *t, const size_t *n)
{
    int k;
    printf("\ntrial times (ms):\n");
    for (k = 0; k < KINDS; k++) {
        uint32_t *us = (uint32_t *)malloc((n[k] + 1) * sizeof *us);
        size_t i, slow = 0;
        if (!us || !n[k]) {
            free(us);
            continue;
        }
        for (i = 0; i < n[k]; i++) slow += (us[i] = t[k][i].micros) > 1000000;
        qsort(us, n[k], sizeof *us, cmp_u32);
        printf("  %-17s median %.1f, p99 %.1f, max %.1f; %zu over 1 s\n", kind_names[k], us[n[k] / 2] / 1e3,
               us[n[k] * 99 / 100] / 1e3, us[n[k] - 1] / 1e3, slow);
        free(us);
    }
}

/* The table, the lists, the summary line; returns the exit status. */
static int report(trial *const *t, const size_t *n, double seconds)
{
    size_t count[KINDS][OUTCOMES], codes[KINDS][256], i, total = 0, sum[OUTCOMES], failing = 0;
    int k, c;
    char where[200];
    memset(count, 0, sizeof count);
    memset(codes, 0, sizeof codes);
    memset(sum, 0, sizeof sum);
    for (k = 0; k < KINDS; k++)
        for (i = 0; i < n[k]; i++) {
            const trial *tr = &t[k][i];
            bool fails = judge_rule(k, tr, where, sizeof where);
            count[k][tr->outcome]++;
            sum[tr->outcome]++;
            total++;
            failing += fails;
            if (tr->outcome == CLEAN_ERROR) codes[k][tr->result]++;
            else if (tr->outcome != NO_EFFECT) group_add(k, tr, where, fails);
            if (verbose && tr->outcome != NO_EFFECT)
                printf("%s %u: %s during %s (%s) at %s%s\n", kind_names[k], (unsigned)tr->offset,
                       outcome_names[tr->outcome], step_names[tr->step],
                       tr->outcome == CRASH ? strsignal(tr->signal) : opstate_result_str((opstate_result)tr->result),
                       where, fails ? ": FAILS THE RULE" : "");
        }
    printf("\n| test kind         |  tried | no effect | clean errors | crashes | hangs | silent wrong |\n");
    printf("|-------------------|-------:|----------:|-------------:|--------:|------:|-------------:|\n");
    for (k = 0; k < KINDS; k++)
        printf("| %-17s | %6zu | %9zu | %12zu | %7zu | %5zu | %12zu |\n", kind_names[k], n[k], count[k][NO_EFFECT],
               count[k][CLEAN_ERROR], count[k][CRASH], count[k][HANG], count[k][SILENT_WRONG]);
    printf("\nclean errors by result:\n");
    for (k = 0; k < KINDS; k++) {
        printf("  %-17s", kind_names[k]);
        for (c = 0; c < 256; c++)
            if (codes[k][c]) printf(" %s %zu;", opstate_result_str((opstate_result)c), codes[k][c]);
        printf("\n");
    }
    print_times(t, n);
    print_groups(CRASH, "crashes");
    print_groups(HANG, "hangs");
    print_groups(SILENT_WRONG, "silent wrong");
    print_groups(HARNESS, "harness failures (not the damage's doing)");
    printf("\nstorage chaos: %zu trials in %.0f s (seed %llu, %s): %zu no effect, %zu clean errors, %zu crashes, "
           "%zu hangs, %zu silent wrong, %zu harness; %zu fail the rule: %s\n",
           total, seconds, (unsigned long long)seed, quick ? "quick" : "full", sum[NO_EFFECT], sum[CLEAN_ERROR],
           sum[CRASH], sum[HANG], sum[SILENT_WRONG], sum[HARNESS], failing, failing ? "FAIL" : "ok");
    return failing ? 1 : 0;
}

/* >>main ----------------------------------------------------------------- */

static void parse_args(int argc, char **argv)
{
    int i;
    const char *q = getenv("QUICK");
    quick = q && strcmp(q, "1") == 0;
    seed = (uint64_t)time(NULL);
    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) quick = true;
        else if (strcmp(argv[i], "--verbose") == 0) verbose = true;
        else if (strcmp(argv[i], "--map") == 0) map_only = true;
        else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc) seed = strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--timeout-ms") == 0 && i + 1 < argc) timeout_ms = strtol(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--workers") == 0 && i + 1 < argc) workers = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: storage_chaos [--quick] [--seed S] [--timeout-ms MS] [--workers N] [--verbose] [--map]\n");
            exit(2);
        }
    }
    if (workers < 1 || workers > 16 || timeout_ms < 100) die("arguments", "workers 1..16, timeout at least 100 ms");
}

static void path_in(char *out, size_t cap, const char *sub)
{
    snprintf(out, cap, "%s/%s", dir, sub);
    if (!make_dir(out)) die(out, strerror(errno));
}

/* Keeps the bytes of the two files; with `map`, maps their pages. */
static void load_files(bool map)
{
    char file[160];
    snprintf(file, sizeof file, "%s/src/log/data.mdb", dir);
    intact[0] = read_file(file, &intact_len[0]);
    snprintf(file, sizeof file, "%s/src/state/data.mdb", dir);
    intact[1] = read_file(file, &intact_len[1]);
    if (map) {
        map_build(&maps[0], intact[0], intact_len[0]);
        map_build(&maps[1], intact[1], intact_len[1]);
    }
}

/* Builds the log and the store. */
static void build_files(void)
{
    char src[96], log_path[128], state_path[128];
    path_in(src, sizeof src, "src");
    snprintf(log_path, sizeof log_path, "%s/log", src);
    snprintf(state_path, sizeof state_path, "%s/state", src);
    build_log(log_path);
    build_store_part(log_path, state_path, false, STORE_SEQ_TABLE);
    build_store_part(log_path, state_path, true, STORE_SEQ);
}

static void same_fold(int a, int b)
{
    if (refs[a].kv_end != refs[b].kv_end || memcmp(refs[a].p, refs[b].p, refs[a].kv_end) != 0)
        die("cross-check", "two reference outputs disagree on the fold");
}

/* The intact outcome, from fresh copies, checked against itself: every
   output that ends at the log's last sequence has the same fold; both loads
   have the fold of a replay up to the store's position. */
static void references(void)
{
    char log_path[96], state_path[96];
    checker ck;
    opstate_lmdb *env;
    opstate_lmdb_log *lg;
    opstate_replay_config rc;
    opstate_replay_result rr;
    opstate_kv *kv;
    dump d;
    ck.t = NULL;
    path_in(log_path, sizeof log_path, "ref-log");
    path_in(state_path, sizeof state_path, "ref-state");
    if (!write_copy(log_path, 0, false, UINT32_MAX) || !write_copy(state_path, 1, false, UINT32_MAX))
        die("references", strerror(errno));
    log_checks(&ck, log_path);
    store_checks(&ck, state_path, log_path);
    same_fold(S_REPLAY, S_CONSUME_MEM);
    same_fold(S_REPLAY, S_CONSUME);
    same_fold(S_REPLAY, S_RELOAD);
    same_fold(S_LOAD_ALL, S_READ_THROUGH);
    memset(&rc, 0, sizeof rc);
    memset(&d, 0, sizeof d);
    if (open_env(log_path, OPSTATE_LMDB_READ_ONLY, &env) != OPSTATE_OK || open_log(env, &lg) != OPSTATE_OK ||
        opstate_kv_create(NULL, &kv) != OPSTATE_OK)
        die("references", "cannot reopen the log");
    rc.log = opstate_lmdb_log_iface(lg);
    rc.until_seq = STORE_SEQ;
    if (opstate_replay(&rc, kv, &rr, NULL) != OPSTATE_OK || put_kv(&d, kv, true) != OPSTATE_OK ||
        d.kv_end != refs[S_LOAD_ALL].kv_end || memcmp(d.p, refs[S_LOAD_ALL].p, d.kv_end) != 0)
        die("cross-check", "the stored state is not the fold of the log up to its position");
    free(d.p);
    opstate_kv_destroy(kv);
    opstate_lmdb_log_close(lg);
    opstate_lmdb_close(env);
}

/* The reference dumps travel from the builder to the parent in a file. */
static void save_refs(void)
{
    char path[96];
    FILE *f;
    int i;
    snprintf(path, sizeof path, "%s/refs", dir);
    if (!(f = fopen(path, "wb"))) die(path, strerror(errno));
    for (i = 0; i < STEPS; i++)
        if (fwrite(&refs[i].len, sizeof refs[i].len, 1, f) != 1 ||
            fwrite(&refs[i].kv_end, sizeof refs[i].kv_end, 1, f) != 1 ||
            (refs[i].len && fwrite(refs[i].p, refs[i].len, 1, f) != 1))
            die(path, "cannot write");
    if (fclose(f) != 0) die(path, strerror(errno));
}

static void load_refs(void)
{
    char path[96];
    FILE *f;
    int i;
    snprintf(path, sizeof path, "%s/refs", dir);
    if (!(f = fopen(path, "rb"))) die(path, strerror(errno));
    for (i = 0; i < STEPS; i++) {
        memset(&refs[i], 0, sizeof refs[i]);
        if (fread(&refs[i].len, sizeof refs[i].len, 1, f) != 1 ||
            fread(&refs[i].kv_end, sizeof refs[i].kv_end, 1, f) != 1)
            die(path, "short");
        refs[i].cap = refs[i].len;
        if (refs[i].len && (!(refs[i].p = (uint8_t *)malloc(refs[i].len)) || fread(refs[i].p, refs[i].len, 1, f) != 1))
            die(path, "short");
    }
    fclose(f);
}

/* LMDB runs in a builder process, never in the parent: an environment's
   open and close leave 3 MiB of freed buffers in the heap (glibc raises
   its mmap threshold), and every forked child would then calloc from the
   inherited heap and copy it page by page (10x slower trials). */
static void build_in_child(void)
{
    int status;
    pid_t pid = fork();
    if (pid < 0) die("fork", strerror(errno));
    if (pid == 0) {
        build_files();
        load_files(false);
        references();
        save_refs();
        _exit(0);
    }
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        die("setup", "the builder failed");
    load_files(true);
    load_refs();
}

/* Offsets to try: every byte (quick: every 37th from seed % 37), or every
   whole-page length below the file's. */
static size_t plan(int kind, trial *t)
{
    const pmap *m = &maps[kind == LOG_FLIP || kind == LOG_TRUNC ? 0 : 1];
    size_t i, n = 0, step = kind >= LOG_TRUNC ? m->psize : quick ? QUICK_STRIDE : 1;
    size_t start = kind >= LOG_TRUNC || !quick ? 0 : (size_t)(seed % QUICK_STRIDE);
    for (i = start; i < m->len; i += step, n++)
        if (t) {
            memset(&t[n], 0, sizeof t[n]);
            t[n].offset = (uint32_t)i;
        }
    return n;
}

/* Trials live in a shared file mapping the children write into. */
static trial *shared_trials(size_t n)
{
    char path[96];
    void *p;
    int fd;
    snprintf(path, sizeof path, "%s/trials", dir);
    if ((fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600)) < 0 || ftruncate(fd, (off_t)(n * sizeof(trial))) != 0)
        die(path, strerror(errno));
    p = mmap(NULL, n * sizeof(trial), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) die("mmap", strerror(errno));
    return (trial *)p;
}

/* The harness on undamaged copies: every kind must say "no effect". */
static void self_test(trial *t)
{
    int k;
    for (k = 0; k < KINDS; k++) {
        memset(t, 0, sizeof *t);
        t->offset = UINT32_MAX;
        run_kind(k, t, 1);
        if (t->outcome != NO_EFFECT) die(kind_names[k], "an undamaged copy does not give the reference (harness bug)");
    }
}

static double since(const struct timespec *t0)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t0->tv_sec) + (double)(now.tv_nsec - t0->tv_nsec) / 1e9;
}

int main(int argc, char **argv)
{
    struct timespec t0;
    trial *all, *t[KINDS];
    size_t n[KINDS], total = 0;
    char cmd[96];
    int k, status;
    main_pid = getpid();
    parse_args(argc, argv);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    snprintf(dir, sizeof dir, "/tmp/opstate-storage-XXXXXX");
    if (!mkdtemp(dir)) die("mkdtemp", strerror(errno));
    build_in_child();
    for (k = 0; k < KINDS; k++) total += n[k] = plan(k, NULL);
    all = shared_trials(total + 1);
    printf("storage chaos: seed %llu (%s), log %zu bytes (%zu pages), store %zu bytes (%zu pages), %d workers, "
           "timeout %ld ms\n", (unsigned long long)seed, quick ? "quick: every 37th byte" : "full: every byte",
           intact_len[0], maps[0].pages, intact_len[1], maps[1].pages, workers, timeout_ms);
    fflush(stdout);
    if (map_only) {
        print_map(&maps[0], "log");
        print_map(&maps[1], "store");
        total = 0; /* no trials */
    } else
        self_test(all + total);
    for (k = 0, total = 0; k < KINDS && !map_only; total += n[k++]) {
        t[k] = all + total;
        plan(k, t[k]);
        run_kind(k, t[k], n[k]);
        printf("  %-17s %6zu trials done at %.1f s\n", kind_names[k], n[k], since(&t0));
        fflush(stdout);
    }
    status = map_only ? 0 : report(t, n, since(&t0));
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "storage_chaos: could not remove %s\n", dir);
    return status;
}
