/* test_flash.c — opstate.h's flash store (>>flash) over the simulated NOR
   flash of sim_flash.h. Tests "flash.*". Only the caller-buffer layer: the
   same file runs against the freestanding, malloc-free library on the
   emulated Cortex-M3 (scripts/portability.sh).

   The workload: a log of events (event i is a pure function of i: a put
   of a value or a delete, on one of TF_KEYS keys) folded into a small
   table, flushed every few events at the position of the last one, as
   firmware would (opstate_flash_plan picks a delta or a new base). A
   reboot opens the store anew over the same memory and loads it; the check
   is that the loaded state equals the fold of the log up to the stored
   position, the dedup bytes and meta are the ones committed there, and the
   stored position is at least that of the last flush that returned OK.

     power_cut_every_step  the run cut at EVERY program and erase step
                           (the cut call left half done), reboot, check,
                           write one more flush on the recovered store,
                           reboot, check; over several sector rotations;
                           prints the summary line
     geometries            the same for program units 1 to 32 bytes and
                           flash that erases to 0x00
     random_cuts           a long run cut at random steps, each time
                           rebooted and continued from the stored state
     corrupt_mid_chain     a bad record followed by valid ones: CORRUPT with
                           its address, never loaded; a new base heals; the
                           last record torn: the previous state
     no_space              a state too large for the device: NO_SPACE,
                           nothing written, the stored state intact
     device_errors         a failed program / erase / read: IO, the old
                           state stays, the next flush succeeds
     bad_geometry          a device the store cannot use: INVALID_ARGUMENT
     contract              arguments, limits, an empty device, drop */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "runner.h"
#include "sim_flash.h"

/* The workload: flushes of the every-step run (half of it per geometry),
   random cuts and the CPU seconds they may take. The same on the host and
   on the emulated Cortex-M3 (about 1 s and 6 s); -D to change them. */
#ifndef TF_FLUSHES
#define TF_FLUSHES 160
#endif
#ifndef TF_RANDOM_CUTS
#define TF_RANDOM_CUTS 2000
#endif
#ifndef TF_RANDOM_SECONDS
#define TF_RANDOM_SECONDS 4
#endif

#define TF_KEYS 12
#define TF_MAXV 24
#define TF_MAX_SECTORS 16
#define TF_MAX_BYTES 4096
#define TF_DEDUP_MAX 128
#define TF_SCHEMA 7u
#define TF_EPOCH 3u

typedef struct tf_state {
    bool present[TF_KEYS], dirty[TF_KEYS];
    uint8_t len[TF_KEYS];
    uint8_t val[TF_KEYS][TF_MAXV];
} tf_state;

/* A device shape and the work buffer given to the store. */
typedef struct tf_geometry {
    const char *name;
    uint32_t sector_size, sector_count, prog_size;
    uint8_t erased;
    uint32_t work_size;
} tf_geometry;

/* What a run of cuts found. */
typedef struct tf_report {
    uint64_t cuts, steps, torn, lost, misuse, failed;
    uint32_t erase_min, erase_max, rotations;
} tf_report;

static uint8_t tf_mem[TF_MAX_BYTES], tf_copy_mem[TF_MAX_BYTES];
static uint32_t tf_erases[TF_MAX_SECTORS], tf_copy_erases[TF_MAX_SECTORS];
static uint8_t tf_work[512], tf_copy_work[512];

static uint32_t tf_hash(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdu;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53u;
    x ^= x >> 33;
    return (uint32_t)x;
}

static void tf_key(uint32_t k, uint8_t out[3])
{
    out[0] = 'k';
    out[1] = (uint8_t)('0' + k / 10);
    out[2] = (uint8_t)('0' + k % 10);
}

/* Applies event i of the log (1-based). */
static void tf_apply(tf_state *st, uint64_t i)
{
    uint32_t h = tf_hash(i), k = h % TF_KEYS, j;
    st->dirty[k] = true;
    st->present[k] = (h >> 8) % 5 != 0;
    st->len[k] = st->present[k] ? (uint8_t)((h >> 12) % (TF_MAXV + 1)) : 0;
    for (j = 0; j < st->len[k]; j++) st->val[k][j] = (uint8_t)((h >> (j % 24)) ^ j);
}

/* The fold of events 1..upto. */
static void tf_fold(tf_state *st, uint64_t upto)
{
    uint64_t i;
    memset(st, 0, sizeof *st);
    for (i = 1; i <= upto; i++) tf_apply(st, i);
}

static bool tf_equal(const tf_state *a, const tf_state *b)
{
    uint32_t k;
    for (k = 0; k < TF_KEYS; k++)
        if (a->present[k] != b->present[k] ||
            (a->present[k] && (a->len[k] != b->len[k] || memcmp(a->val[k], b->val[k], a->len[k]) != 0)))
            return false;
    return true;
}

/* The dedup bytes committed at position pos (0 to 128: sometimes more
   than a small work buffer). */
static size_t tf_dedup(uint64_t pos, uint8_t *out)
{
    size_t n = (size_t)(pos % 9) * 16, i;
    for (i = 0; i < n; i++) out[i] = (uint8_t)(pos * 31 + i * 7);
    return n;
}

/* The firmware's flush: the changed keys as a delta, or every key as a new
   base when opstate_flash_plan says so (or `force` says which); the commit
   at position pos. */
static opstate_result tf_flush_as(opstate_flash *fs, tf_state *st, uint64_t pos, int force, opstate_error *err)
{
    uint8_t dedup[TF_DEDUP_MAX], key[3];
    uint64_t delta = 0, base = 0, commit;
    size_t dn = tf_dedup(pos, dedup);
    opstate_flash_kind kind;
    opstate_flash_meta meta;
    opstate_flash_entry e;
    opstate_bytes db;
    opstate_result r;
    uint32_t k;
    for (k = 0; k < TF_KEYS; k++) {
        uint64_t size = opstate_flash_entry_size(fs, 3, st->present[k] ? st->len[k] : 0);
        if (st->dirty[k]) delta += size;
        if (st->present[k]) base += size;
    }
    commit = opstate_flash_commit_size(fs, dn);
    if ((r = opstate_flash_plan(fs, delta + commit, base + commit, &kind)) != OPSTATE_OK) return r;
    if (force) kind = (opstate_flash_kind)force;
    if ((r = opstate_flash_begin(fs, kind, err)) != OPSTATE_OK) return r;
    for (k = 0; k < TF_KEYS; k++) {
        if (kind == OPSTATE_FLASH_DELTA ? !st->dirty[k] : !st->present[k]) continue;
        tf_key(k, key);
        e.key.ptr = key;
        e.key.len = 3;
        e.value.ptr = st->val[k];
        e.value.len = st->len[k];
        e.deleted = !st->present[k];
        e.position.seq = k; /* (the table keeps no positions: any number round-trips) */
        e.position.time = -(int64_t)k;
        e.position.epoch = 0;
        if ((r = opstate_flash_put(fs, &e, err)) != OPSTATE_OK) return r;
    }
    meta.schema_version = TF_SCHEMA;
    meta.position.seq = pos;
    meta.position.time = (int64_t)pos * 1000;
    meta.position.epoch = TF_EPOCH;
    db.ptr = dedup;
    db.len = dn;
    if ((r = opstate_flash_commit(fs, &meta, db, err)) != OPSTATE_OK) return r;
    memset(st->dirty, 0, sizeof st->dirty);
    return OPSTATE_OK;
}

static opstate_result tf_flush(opstate_flash *fs, tf_state *st, uint64_t pos, opstate_error *err)
{
    return tf_flush_as(fs, st, pos, 0, err);
}

static opstate_result tf_load_entry(void *user, const opstate_flash_entry *e)
{
    tf_state *st = (tf_state *)user;
    uint32_t k;
    if (e->key.len != 3 || e->key.ptr[0] != 'k' || e->value.len > TF_MAXV) return OPSTATE_MALFORMED;
    k = (uint32_t)(e->key.ptr[1] - '0') * 10 + (uint32_t)(e->key.ptr[2] - '0');
    if (k >= TF_KEYS || e->position.seq != k || e->position.time != -(int64_t)k) return OPSTATE_MALFORMED;
    st->present[k] = !e->deleted;
    st->len[k] = (uint8_t)e->value.len;
    if (e->value.len) memcpy(st->val[k], e->value.ptr, e->value.len);
    return OPSTATE_OK;
}

/* Opens the store over dev (a reboot) and loads it into *st: *pos is the
   stored position (0: nothing stored). OK only when the state, meta and
   dedup bytes are exactly the ones committed at *pos; CORRUPT (the test's
   word for "torn") when they are not. */
static opstate_result tf_reboot(const opstate_flash_device *dev, opstate_flash *fs, uint8_t *work, size_t work_size,
                                tf_state *st, uint64_t *pos)
{
    uint8_t dedup[TF_DEDUP_MAX], want_dedup[TF_DEDUP_MAX];
    opstate_flash_meta meta;
    tf_state want;
    size_t dn = 0;
    opstate_result r = opstate_flash_open(fs, dev, work, work_size, NULL);
    if (r != OPSTATE_OK) return r;
    memset(st, 0, sizeof *st);
    *pos = 0;
    r = opstate_flash_load(fs, tf_load_entry, st, &meta, dedup, sizeof dedup, &dn, NULL);
    if (r == OPSTATE_NOT_FOUND) return OPSTATE_OK;
    if (r != OPSTATE_OK) return r;
    *pos = meta.position.seq;
    tf_fold(&want, *pos);
    if (!tf_equal(st, &want) || dn != tf_dedup(*pos, want_dedup) || memcmp(dedup, want_dedup, dn) != 0 ||
        meta.schema_version != TF_SCHEMA || meta.position.time != (int64_t)*pos * 1000 ||
        meta.position.epoch != TF_EPOCH)
        return OPSTATE_CORRUPT;
    return OPSTATE_OK;
}

/* Judges one reboot: torn (wrong state or an error), lost (older than the
   last flush that returned OK), or a position nobody committed. */
static bool tf_judge(tf_report *rep, opstate_result r, uint64_t pos, uint64_t last_ok, uint64_t pending)
{
    if (r != OPSTATE_OK || (pos != last_ok && pos != pending && pos >= last_ok)) {
        rep->torn++;
        return false;
    }
    if (pos < last_ok) {
        rep->lost++;
        return false;
    }
    return true;
}

/* After a reboot at pos: three more events, one more flush, another
   reboot: the recovered store takes writes (in a fresh sector after a torn
   tail) and keeps them. */
static void tf_continue(tf_report *rep, const opstate_flash_device *dev, opstate_flash *fs, uint8_t *work,
                        size_t work_size, tf_state *st, uint64_t pos)
{
    uint64_t i, again;
    opstate_result r;
    for (i = pos + 1; i <= pos + 3; i++) tf_apply(st, i);
    if ((r = tf_flush(fs, st, pos + 3, NULL)) != OPSTATE_OK) {
        rep->failed++;
        return;
    }
    r = tf_reboot(dev, fs, work, work_size, st, &again);
    tf_judge(rep, r, again, pos + 3, pos + 3);
}

/* A run whose every step is cut on a copy of the memory. */
typedef struct tf_run {
    tf_geometry g;
    uint64_t last_ok, pending;
    tf_report rep;
} tf_run;

/* sim_flash's before_step: the memory as it is, the step half done, then
   the reboot checks, on a copy; the run itself goes on untouched. */
static void tf_cut_copy(void *user, const sim_flash *f, uint64_t step, uint32_t addr, const uint8_t *data,
                        uint32_t len)
{
    tf_run *run = (tf_run *)user;
    sim_flash copy = *f;
    opstate_flash_device dev;
    opstate_flash fs;
    tf_state st;
    uint64_t pos = 0;
    opstate_result r;
    memcpy(tf_copy_mem, f->mem, (size_t)f->sector_size * f->sector_count);
    memcpy(tf_copy_erases, f->erase_counts, sizeof *tf_copy_erases * f->sector_count);
    copy.mem = tf_copy_mem;
    copy.erase_counts = tf_copy_erases;
    copy.before_step = NULL;
    copy.rng = f->rng ^ (uint32_t)(step * 2654435761u);
    copy.misuse = 0;
    sim_flash_cut(&copy, addr, data, len);
    dev = sim_flash_device(&copy);
    run->rep.cuts++;
    r = tf_reboot(&dev, &fs, tf_copy_work, run->g.work_size, &st, &pos);
    if (tf_judge(&run->rep, r, pos, run->last_ok, run->pending))
        tf_continue(&run->rep, &dev, &fs, tf_copy_work, run->g.work_size, &st, pos);
    run->rep.misuse += copy.misuse;
}

/* Runs `flushes` flushes over a fresh device of geometry g, every step cut
   on a copy. */
static tf_report tf_cut_every_step(const tf_geometry *g, uint32_t flushes)
{
    tf_run run;
    sim_flash sim;
    opstate_flash_device dev;
    opstate_flash fs;
    tf_state st;
    uint64_t pos = 0;
    uint32_t n;
    memset(&run, 0, sizeof run);
    run.g = *g;
    sim_flash_init(&sim, tf_mem, tf_erases, g->sector_size, g->sector_count, g->prog_size, g->erased, 12345);
    sim.before_step = tf_cut_copy;
    sim.step_user = &run;
    dev = sim_flash_device(&sim);
    memset(&st, 0, sizeof st);
    if (opstate_flash_open(&fs, &dev, tf_work, g->work_size, NULL) != OPSTATE_OK) run.rep.failed++;
    for (n = 0; n < flushes && run.rep.failed == 0; n++) {
        uint64_t i, events = 1 + tf_hash(n + 1000) % 6;
        for (i = 0; i < events; i++) tf_apply(&st, ++pos);
        run.pending = pos;
        if (tf_flush(&fs, &st, pos, NULL) != OPSTATE_OK) run.rep.failed++;
        run.last_ok = pos;
    }
    run.rep.steps = sim.steps;
    run.rep.misuse += sim.misuse;
    sim_flash_erase_spread(&sim, &run.rep.erase_min, &run.rep.erase_max);
    run.rep.rotations = run.rep.erase_min;
    return run.rep;
}

static void tf_print(const char *what, const tf_geometry *g, const tf_report *rep)
{
    printf("flash %s (%s): %lu cuts over %lu steps, torn %lu, lost %lu, misuse %lu, erases per sector min %lu max %lu\n",
           what, g->name, (unsigned long)rep->cuts, (unsigned long)rep->steps, (unsigned long)rep->torn,
           (unsigned long)rep->lost, (unsigned long)rep->misuse, (unsigned long)rep->erase_min,
           (unsigned long)rep->erase_max);
}

static void tf_check_report(const tf_report *rep)
{
    CHECK(rep->cuts > 0);
    CHECK(rep->cuts == rep->steps);
    CHECK_EQ_U64(rep->torn, 0);
    CHECK_EQ_U64(rep->lost, 0);
    CHECK_EQ_U64(rep->misuse, 0);
    CHECK_EQ_U64(rep->failed, 0);
    CHECK(rep->erase_max - rep->erase_min <= 1); /* a ring: wear evenly spread */
}

static const tf_geometry tf_main = {"12 x 256 B, unit 4, erased 0xFF, work 96", 256, 12, 4, 0xFF, 96};

TEST(flash, power_cut_every_step)
{
    tf_report rep = tf_cut_every_step(&tf_main, TF_FLUSHES);
    tf_print("power cut at every step", &tf_main, &rep);
    tf_check_report(&rep);
    CHECK(rep.rotations >= 3); /* every sector erased at least three times */
}

TEST(flash, geometries)
{
    static const tf_geometry rows[] = {
        {"unit 1, erased 0xFF", 256, 12, 1, 0xFF, 96},
        {"unit 2, erased 0x00", 256, 12, 2, 0x00, 64},
        {"unit 8, erased 0x00", 256, 12, 8, 0x00, 96},
        {"unit 16, erased 0xFF", 512, 8, 16, 0xFF, 128},
        {"unit 32, erased 0x00", 512, 8, 32, 0x00, 128},
        {"unit 32, erased 0xFF, work 512", 256, 16, 32, 0xFF, 512},
    };
    size_t i;
    for (i = 0; i < COUNT_OF(rows); i++) {
        tf_report rep;
        CASE(rows[i].name);
        rep = tf_cut_every_step(&rows[i], TF_FLUSHES / 2);
        tf_print("power cut at every step", &rows[i], &rep);
        tf_check_report(&rep);
    }
}

/* One powered session of the random-cut run: reboot, check, write until
   the power fails at sim->cut_at. */
static void tf_session(sim_flash *sim, tf_report *rep, tf_state *st, uint64_t *last_ok)
{
    opstate_flash_device dev = sim_flash_device(sim);
    opstate_flash fs;
    uint64_t pos, pending = 0;
    opstate_result r = tf_reboot(&dev, &fs, tf_work, tf_main.work_size, st, &pos);
    if (!tf_judge(rep, r, pos, *last_ok, *last_ok)) return;
    for (;;) {
        uint64_t events = 1 + tf_hash(pos * 7 + 1) % 6;
        while (events--) tf_apply(st, ++pos);
        pending = pos;
        r = tf_flush(&fs, st, pending, NULL);
        if (r != OPSTATE_OK) break;
        *last_ok = pending;
    }
    if (!sim->off) rep->failed++; /* it stopped for another reason than the cut */
}

TEST(flash, random_cuts)
{
    sim_flash sim;
    tf_report rep;
    tf_state st;
    uint64_t last_ok = 0;
    uint32_t seed = 20260601u;
    clock_t start = clock();
    memset(&rep, 0, sizeof rep);
    sim_flash_init(&sim, tf_mem, tf_erases, tf_main.sector_size, tf_main.sector_count, tf_main.prog_size,
                   tf_main.erased, seed);
    printf("flash random cuts: seed %lu\n", (unsigned long)seed);
    while (rep.cuts < TF_RANDOM_CUTS && (clock() - start) / CLOCKS_PER_SEC < TF_RANDOM_SECONDS) {
        sim.cut_at = sim.steps + 1 + sim_flash_rand(&seed) % 120;
        tf_session(&sim, &rep, &st, &last_ok);
        sim_flash_power_on(&sim);
        rep.cuts++;
    }
    rep.steps = sim.steps;
    rep.misuse = sim.misuse;
    sim_flash_erase_spread(&sim, &rep.erase_min, &rep.erase_max);
    tf_print("random cuts", &tf_main, &rep);
    CHECK(rep.cuts >= 20);
    CHECK_EQ_U64(rep.torn, 0);
    CHECK_EQ_U64(rep.lost, 0);
    CHECK_EQ_U64(rep.misuse, 0);
    CHECK_EQ_U64(rep.failed, 0);
    CHECK(rep.erase_max - rep.erase_min <= rep.erase_max / 4 + 2); /* reclaims after cuts cost a little */
}

/* Writes flushes 1..n of the workload (positions 4, 8, ...) to a fresh
   device of geometry tf_roomy; the address where each flush's first
   record went to starts[]. */
static const tf_geometry tf_roomy = {"16 x 256 B, unit 4, erased 0xFF, work 96", 256, 16, 4, 0xFF, 96};

static void tf_write(sim_flash *sim, opstate_flash *fs, tf_state *st, uint32_t n, uint32_t *starts)
{
    opstate_flash_device dev;
    uint32_t k;
    uint64_t i;
    sim_flash_init(sim, tf_mem, tf_erases, tf_roomy.sector_size, tf_roomy.sector_count, tf_roomy.prog_size,
                   tf_roomy.erased, 7);
    dev = sim_flash_device(sim);
    memset(st, 0, sizeof *st);
    CHECK(opstate_flash_open(fs, &dev, tf_work, tf_roomy.work_size, NULL) == OPSTATE_OK);
    for (k = 1; k <= n; k++) {
        for (i = 4 * (k - 1) + 1; i <= 4 * k; i++) tf_apply(st, i);
        CHECK(tf_flush(fs, st, 4 * k, NULL) == OPSTATE_OK);
        starts[k - 1] = fs->txn_start_sector * tf_roomy.sector_size + fs->txn_start_offset;
    }
}

/* The first record of a delta in the live chain, not the last flush's. */
static uint32_t tf_mid_chain(const opstate_flash *fs, const uint32_t *starts, uint32_t n)
{
    uint32_t base = fs->base_sector * tf_roomy.sector_size + fs->base_offset, k;
    for (k = 0; k + 1 < n; k++)
        if (starts[k] > base) return starts[k];
    return 0;
}

TEST(flash, corrupt_mid_chain)
{
    static const struct {
        const char *name;
        uint32_t byte; /* flipped, from the start of the record */
    } rows[] = {{"key byte (record CRC)", 17}, {"value length (header CRC)", 5}, {"entry position", 22}};
    sim_flash sim;
    opstate_flash fs;
    opstate_flash_device dev;
    opstate_error err;
    tf_state st;
    opstate_flash_meta meta;
    uint32_t starts[6], at;
    uint64_t pos;
    size_t i;
    for (i = 0; i < COUNT_OF(rows); i++) {
        CASE(rows[i].name);
        tf_write(&sim, &fs, &st, 6, starts);
        at = tf_mid_chain(&fs, starts, 6);
        CHECK(at > 0); /* a delta record lies in the live chain, before the last commit */
        sim.mem[at + rows[i].byte] ^= 0x10;
        dev = sim_flash_device(&sim);
        memset(&err, 0, sizeof err);
        CHECK(opstate_flash_open(&fs, &dev, tf_work, tf_roomy.work_size, &err) == OPSTATE_OK);
        CHECK(opstate_flash_read_meta(&fs, &meta, NULL, &err) == OPSTATE_CORRUPT);
        CHECK_EQ_U64(err.offset, at);
        CHECK(opstate_flash_load(&fs, tf_load_entry, &st, &meta, NULL, 0, NULL, &err) == OPSTATE_CORRUPT);
        CHECK(opstate_flash_begin(&fs, OPSTATE_FLASH_DELTA, NULL) == OPSTATE_CORRUPT);
        CASE("a new base heals");
        tf_fold(&st, 30);
        CHECK(tf_flush(&fs, &st, 30, NULL) == OPSTATE_OK);
        CHECK(tf_reboot(&dev, &fs, tf_work, tf_roomy.work_size, &st, &pos) == OPSTATE_OK);
        CHECK_EQ_U64(pos, 30);
        CHECK_EQ_U64(sim.misuse, 0);
    }
    CASE("a sector header mid-chain damaged: the chain is broken, CORRUPT");
    tf_write(&sim, &fs, &st, 6, starts);
    at = tf_mid_chain(&fs, starts, 6);
    at -= at % tf_roomy.sector_size;
    sim.mem[at + 12] ^= 0x40; /* its sequence number, far ahead */
    dev = sim_flash_device(&sim);
    CHECK(opstate_flash_open(&fs, &dev, tf_work, tf_roomy.work_size, NULL) == OPSTATE_OK);
    CHECK(opstate_flash_read_meta(&fs, &meta, NULL, NULL) == OPSTATE_CORRUPT);
    CASE("the last commit damaged: a torn tail, the state before it");
    tf_write(&sim, &fs, &st, 6, starts);
    sim.mem[fs.commit_sector * tf_roomy.sector_size + fs.commit_offset + 17] ^= 0x01;
    dev = sim_flash_device(&sim);
    CHECK(tf_reboot(&dev, &fs, tf_work, tf_roomy.work_size, &st, &pos) == OPSTATE_OK);
    CHECK_EQ_U64(pos, 20);
    CHECK_EQ_U64(opstate_flash_get_stats(&fs).torn_tails, 1);
    CASE("damage before the live base: history, ignored");
    tf_write(&sim, &fs, &st, 4, starts);
    tf_apply(&st, 17);
    CHECK(tf_flush_as(&fs, &st, 17, OPSTATE_FLASH_BASE, NULL) == OPSTATE_OK);
    CHECK(starts[0] < fs.base_sector * tf_roomy.sector_size + fs.base_offset); /* the first base was replaced */
    sim.mem[starts[0] + 17] ^= 0x01;
    CHECK(tf_reboot(&dev, &fs, tf_work, tf_roomy.work_size, &st, &pos) == OPSTATE_OK);
    CHECK_EQ_U64(pos, 17);
}

/* Begins a delta and writes 40-byte entries until the space runs out:
   the result of the last put. */
static opstate_result tf_fill_delta(opstate_flash *fs)
{
    static const uint8_t key[3] = {'z', 'z', 'z'};
    uint8_t value[40];
    opstate_flash_entry e;
    opstate_result r = opstate_flash_begin(fs, OPSTATE_FLASH_DELTA, NULL);
    uint32_t n;
    memset(&e, 0, sizeof e);
    memset(value, 0x5a, sizeof value);
    e.key.ptr = key;
    e.key.len = sizeof key;
    e.value.ptr = value;
    e.value.len = sizeof value;
    for (n = 0; n < 100 && r == OPSTATE_OK; n++) r = opstate_flash_put(fs, &e, NULL);
    if (r == OPSTATE_NO_SPACE && opstate_flash_put(fs, &e, NULL) != OPSTATE_INVALID_ARGUMENT)
        return OPSTATE_CONFLICT; /* the transaction must be over */
    return r;
}

/* Flushes the fold of events 1..pos, every key dirty. */
static opstate_result tf_flush_fold(opstate_flash *fs, uint64_t pos)
{
    tf_state st;
    tf_fold(&st, pos);
    memset(st.dirty, 1, sizeof st.dirty);
    return tf_flush(fs, &st, pos, NULL);
}

/* Reboots (work buffer of 96 bytes) and returns the stored position, or
   UINT64_MAX when the reboot check fails. */
static uint64_t tf_stored(const opstate_flash_device *dev, opstate_flash *fs)
{
    tf_state st;
    uint64_t pos;
    return tf_reboot(dev, fs, tf_work, 96, &st, &pos) == OPSTATE_OK ? pos : UINT64_MAX;
}

TEST(flash, no_space)
{
    sim_flash sim;
    opstate_flash fs;
    opstate_flash_device dev;
    opstate_flash_kind kind;
    uint64_t base;
    sim_flash_init(&sim, tf_mem, tf_erases, 256, 3, 4, 0xFF, 1); /* 3 x 212 B of records */
    dev = sim_flash_device(&sim);
    CHECK(opstate_flash_open(&fs, &dev, tf_work, 96, NULL) == OPSTATE_OK);
    CASE("a base larger than the device: nothing written");
    base = 3u * 256u;
    CHECK(opstate_flash_plan(&fs, 0, base, &kind) == OPSTATE_NO_SPACE);
    CHECK_EQ_U64(sim.steps, 0);
    CASE("a state that fits (380 B), then one that does not (444 B, about one sector free): the first stays");
    CHECK(tf_flush_fold(&fs, 6) == OPSTATE_OK);
    CHECK(tf_flush_fold(&fs, 200) == OPSTATE_NO_SPACE);
    CHECK_EQ_U64(tf_stored(&dev, &fs), 6);
    CASE("a transaction that runs into the live base: NO_SPACE, abandoned");
    sim_flash_init(&sim, tf_mem, tf_erases, 256, 6, 4, 0xFF, 1);
    dev = sim_flash_device(&sim);
    CHECK(opstate_flash_open(&fs, &dev, tf_work, 96, NULL) == OPSTATE_OK);
    CHECK(tf_flush_fold(&fs, 6) == OPSTATE_OK);
    CHECK(tf_fill_delta(&fs) == OPSTATE_NO_SPACE);
    CASE("the next flush reclaims what the abandoned transaction took");
    CHECK(tf_flush_fold(&fs, 7) == OPSTATE_OK);
    CHECK_EQ_U64(tf_stored(&dev, &fs), 7);
    CASE("abandoned, then a reboot: the stored state");
    CHECK(tf_fill_delta(&fs) == OPSTATE_NO_SPACE);
    CHECK_EQ_U64(tf_stored(&dev, &fs), 7);
    CHECK(opstate_flash_get_stats(&fs).abandoned >= 1);
    CHECK_EQ_U64(sim.misuse, 0);
}

TEST(flash, device_errors)
{
    sim_flash sim;
    opstate_flash fs;
    opstate_flash_device dev;
    opstate_error err;
    tf_state st, loaded;
    uint64_t pos, step;
    uint32_t starts[4];
    tf_write(&sim, &fs, &st, 4, starts);
    dev = sim_flash_device(&sim);
    for (step = 1; step <= 12; step++) { /* every step of the next flushes fails once */
        uint64_t now = 16 + step;
        CASE("a program or erase fails");
        sim.fail_step = sim.steps + step;
        tf_apply(&st, now);
        memset(&err, 0, sizeof err);
        if (tf_flush(&fs, &st, now, &err) == OPSTATE_OK) continue; /* the flush took fewer steps */
        CHECK(err.result == OPSTATE_IO && err.dep_status == SIM_FLASH_FAULT);
        CHECK(tf_reboot(&dev, &fs, tf_work, tf_roomy.work_size, &loaded, &pos) ==
              OPSTATE_OK);
        CHECK_EQ_U64(pos, now - 1);
        CHECK(tf_flush(&fs, &st, now, NULL) == OPSTATE_OK); /* the next flush succeeds */
        CHECK(tf_reboot(&dev, &fs, tf_work, tf_roomy.work_size, &loaded, &pos) == OPSTATE_OK);
        CHECK_EQ_U64(pos, now);
    }
    CASE("a read fails at open");
    sim.fail_reads = 3;
    memset(&err, 0, sizeof err);
    CHECK(opstate_flash_open(&fs, &dev, tf_work, tf_roomy.work_size, &err) == OPSTATE_IO);
    CHECK(err.dep_status == SIM_FLASH_FAULT);
    CHECK_EQ_U64(sim.misuse, 0);
}

TEST(flash, bad_geometry)
{
    static const struct {
        const char *name;
        uint32_t sector_size, sector_count, prog_size;
        uint8_t erased;
        size_t work;
    } bad[] = {{"unit 3", 256, 4, 3, 0xFF, 96},     {"unit 64", 256, 4, 64, 0xFF, 256},
               {"unit 0", 256, 4, 0, 0xFF, 96},     {"erased 0x7F", 256, 4, 4, 0x7F, 96},
               {"one sector", 256, 1, 4, 0xFF, 96}, {"sector 32 B", 32, 8, 4, 0xFF, 96},
               {"work 32 B", 256, 4, 4, 0xFF, 32},  {"sector not whole units", 100, 4, 8, 0xFF, 96}};
    sim_flash sim;
    opstate_flash fs;
    opstate_flash_device dev;
    size_t i;
    for (i = 0; i < COUNT_OF(bad); i++) {
        CASE(bad[i].name);
        sim_flash_init(&sim, tf_mem, tf_erases, 256, 4, 4, 0xFF, 1);
        dev = sim_flash_device(&sim);
        dev.sector_size = bad[i].sector_size;
        dev.sector_count = bad[i].sector_count;
        dev.prog_size = bad[i].prog_size;
        dev.erased = bad[i].erased;
        CHECK(opstate_flash_open(&fs, &dev, tf_work, bad[i].work, NULL) == OPSTATE_INVALID_ARGUMENT);
    }
}

TEST(flash, contract)
{
    sim_flash sim;
    opstate_flash fs;
    opstate_flash_device dev;
    opstate_flash_meta meta;
    uint8_t big[200], dedup[4];
    opstate_flash_entry e;
    tf_state st;
    uint64_t pos;
    size_t dn;
    CASE("an empty device");
    sim_flash_init(&sim, tf_mem, tf_erases, 256, 4, 4, 0xFF, 1);
    dev = sim_flash_device(&sim);
    CHECK(opstate_flash_open(&fs, &dev, tf_work, 96, NULL) == OPSTATE_OK);
    CHECK(opstate_flash_read_meta(&fs, &meta, NULL, NULL) == OPSTATE_NOT_FOUND);
    CHECK(opstate_flash_load(&fs, tf_load_entry, &st, &meta, NULL, 0, NULL, NULL) == OPSTATE_NOT_FOUND);
    CHECK(opstate_flash_begin(&fs, OPSTATE_FLASH_DELTA, NULL) == OPSTATE_INVALID_ARGUMENT); /* no base */
    memset(big, 'k', sizeof big);
    memset(&e, 0, sizeof e);
    e.key.ptr = big;
    e.value.ptr = big;
    e.key.len = 3;
    CHECK(opstate_flash_put(&fs, &e, NULL) == OPSTATE_INVALID_ARGUMENT); /* no transaction */
    CHECK(opstate_flash_begin(&fs, OPSTATE_FLASH_BASE, NULL) == OPSTATE_OK);
    e.key.len = 0;
    CHECK(opstate_flash_put(&fs, &e, NULL) == OPSTATE_INVALID_ARGUMENT); /* empty key */
    e.key.len = 96 - 36 + 1;
    CHECK(opstate_flash_put(&fs, &e, NULL) == OPSTATE_OVERSIZED); /* more than the work buffer */
    e.key.len = 96 - 36;
    CHECK(opstate_flash_put(&fs, &e, NULL) == OPSTATE_OK); /* exactly the work buffer */
    e.key.len = 0x10000;
    CHECK(opstate_flash_put(&fs, &e, NULL) == OPSTATE_OVERSIZED); /* (before it reads the key) */
    CASE("a dedup buffer too small");
    tf_fold(&st, 5);
    CHECK(tf_flush(&fs, &st, 5, NULL) == OPSTATE_OK);
    CHECK(opstate_flash_load(&fs, tf_load_entry, &st, &meta, dedup, sizeof dedup, &dn, NULL) ==
          OPSTATE_BUFFER_TOO_SMALL);
    CASE("drop: nothing stored, across a reboot");
    CHECK(opstate_flash_drop(&fs, NULL) == OPSTATE_OK);
    CHECK(opstate_flash_read_meta(&fs, &meta, NULL, NULL) == OPSTATE_NOT_FOUND);
    CHECK(tf_reboot(&dev, &fs, tf_work, 96, &st, &pos) == OPSTATE_OK);
    CHECK_EQ_U64(pos, 0);
    CHECK(opstate_flash_read_meta(&fs, &meta, NULL, NULL) == OPSTATE_NOT_FOUND);
    CHECK_EQ_U64(sim.misuse, 0);
}
