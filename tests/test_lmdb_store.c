/* test_lmdb_store.c — the LMDB companion's snapshot store (opstate_lmdb.h
   >>store, suite lmdb_store): meta + table + delta records flushed and
   loaded, read-through and load-all, compaction, drop, whole-blob mode,
   layout migration, keys over 511 bytes, and damaged or crafted records
   refused with CORRUPT (at load, at a restart, in a compaction).

   Every test works in its own mkdtemp directory under /tmp and removes it
   at the end. Stored records are tampered with through raw mdb_* calls,
   only while no opstate environment of this process is open on the path
   (or from a forked child, which is a process of its own). Expected states
   come from a memory-only fold fed the same operations (the oracle), never
   from the store itself. */
#include <lmdb.h>

#include "runner.h"
#include "../opstate_lmdb.h"
#include "lmdb_helpers.h"

/* ---------------------------------------------------------------- helpers */

static bool same_meta(const opstate_snapshot_meta *a, const opstate_snapshot_meta *b)
{
    return a->schema_version == b->schema_version && a->position.seq == b->position.seq &&
           a->position.time == b->position.time && a->position.epoch == b->position.epoch;
}

/* A dedup window with its own storage. */
typedef struct window {
    opstate_dedup d;
    void *mem;
} window;

static bool window_init(window *w, uint32_t capacity)
{
    size_t n = opstate_dedup_storage_size(capacity);
    w->mem = malloc(n);
    return w->mem && opstate_dedup_init(&w->d, w->mem, n, capacity) == OPSTATE_OK;
}

static void window_free(window *w) { free(w->mem); }

/* ------------------------------------------------------- raw LMDB access */

/* Opens a raw environment on path (no opstate environment of this process
   may be open on it). */
static int raw_open(const char *path, MDB_env **env)
{
    int rc = mdb_env_create(env);
    if (rc == 0) rc = mdb_env_set_maxdbs(*env, 64);
    if (rc == 0) rc = mdb_env_open(*env, path, MDB_NOTLS, 0600);
    if (rc != 0 && *env) {
        mdb_env_close(*env);
        *env = NULL;
    }
    return rc;
}

/* Writes one record of a named database, created when missing (no opstate
   environment of this process may be open on path). */
static int raw_put(const char *path, const char *db, const void *key, size_t klen, const void *rec, size_t len)
{
    MDB_env *env = NULL;
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_val k, v;
    int rc = raw_open(path, &env);
    if (rc != 0) return rc;
    if ((rc = mdb_txn_begin(env, NULL, 0, &txn)) == 0) {
        k.mv_data = (void *)(uintptr_t)key;
        k.mv_size = klen;
        v.mv_data = (void *)(uintptr_t)rec;
        v.mv_size = len;
        if ((rc = mdb_dbi_open(txn, db, MDB_CREATE, &dbi)) == 0) rc = mdb_put(txn, dbi, &k, &v, 0);
        if (rc == 0) rc = mdb_txn_commit(txn);
        else mdb_txn_abort(txn);
    }
    mdb_env_close(env);
    return rc;
}

/* Edits one record of a named database in place: fn gets a private copy to
   change; the copy is written back. MDB_NOTFOUND when absent. key NULL:
   the first record of the database. */
typedef void (*raw_edit_fn)(uint8_t *rec, size_t len, void *user);

static int raw_edit(const char *path, const char *db, const void *key, size_t klen, raw_edit_fn fn, void *user)
{
    MDB_env *env = NULL;
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_cursor *cur;
    MDB_val k, v;
    uint8_t *copy = NULL;
    int rc = raw_open(path, &env);
    if (rc != 0) return rc;
    if ((rc = mdb_txn_begin(env, NULL, 0, &txn)) != 0) {
        mdb_env_close(env);
        return rc;
    }
    rc = mdb_dbi_open(txn, db, 0, &dbi);
    if (rc == 0 && key) {
        k.mv_data = (void *)(uintptr_t)key;
        k.mv_size = klen;
        rc = mdb_get(txn, dbi, &k, &v);
    } else if (rc == 0 && (rc = mdb_cursor_open(txn, dbi, &cur)) == 0) {
        rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
        mdb_cursor_close(cur);
    }
    if (rc == 0 && !(copy = (uint8_t *)malloc(v.mv_size + 1))) rc = ENOMEM;
    if (rc == 0) {
        memcpy(copy, v.mv_data, v.mv_size);
        fn(copy, v.mv_size, user);
        v.mv_data = copy;
        rc = mdb_put(txn, dbi, &k, &v, 0);
    }
    if (rc == 0) rc = mdb_txn_commit(txn);
    else mdb_txn_abort(txn);
    free(copy);
    mdb_env_close(env);
    return rc;
}

/* Flips one bit of the byte at *(size_t *)user (counted from the end when
   it is past the record). */
static void flip_at(uint8_t *rec, size_t len, void *user)
{
    size_t at = *(const size_t *)user;
    if (at >= len) at = len - 1;
    rec[at] ^= 0x10;
}

/* Is `key` present in the named database? 1 yes, 0 no, -1 error. */
static int raw_has(const char *path, const char *db, const char *key)
{
    MDB_env *env = NULL;
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_val k, v;
    int rc = raw_open(path, &env), res = -1;
    if (rc != 0) return -1;
    if (mdb_txn_begin(env, NULL, MDB_RDONLY, &txn) == 0) {
        if (mdb_dbi_open(txn, db, 0, &dbi) == 0) {
            k.mv_data = (void *)(uintptr_t)key;
            k.mv_size = strlen(key);
            rc = mdb_get(txn, dbi, &k, &v);
            res = rc == 0 ? 1 : rc == MDB_NOTFOUND ? 0 : -1;
        }
        mdb_txn_abort(txn);
    }
    mdb_env_close(env);
    return res;
}

/* One environment in a fresh directory, for the store tests. */
typedef struct fixture {
    char dir[64];
    opstate_lmdb *env;
} fixture;

static bool fx_open(fixture *fx)
{
    fx->env = NULL;
    tmp_dir(fx->dir);
    return fx->dir[0] && env_open(fx->dir, 0, 0, &fx->env, NULL) == OPSTATE_OK;
}

static bool fx_reopen(fixture *fx)
{
    opstate_lmdb_close(fx->env);
    fx->env = NULL;
    return env_open(fx->dir, 0, 0, &fx->env, NULL) == OPSTATE_OK;
}

static void fx_close(fixture *fx)
{
    opstate_lmdb_close(fx->env);
    fx->env = NULL;
    if (fx->dir[0]) rm_rf(fx->dir);
}

TEST(lmdb_store, flush_then_load_round_trip)
{
    fixture fx;
    opstate_lmdb_store *st = NULL;
    opstate_store s;
    opstate_kv *kv = kv_new(NULL), *oracle = kv_new(NULL), *loaded = kv_new(NULL);
    opstate_snapshot_meta m1 = smeta(3, 5, 5000, 77), m2 = smeta(3, 9, 9000, 77), got;
    window w, wl;
    opstate_error err;
    opstate_id id;
    uint8_t bin[3] = {0, 0xff, 0};
    uint8_t n;
    REQUIRE(kv && oracle && loaded && window_init(&w, 16) && window_init(&wl, 16));
    REQUIRE(fx_open(&fx));
    REQUIRE(store_open(fx.env, "proj", false, 1000, &st, &err) == OPSTATE_OK);
    s = opstate_lmdb_store_iface(st);
    CHECK(s.base(s.user) == NULL); /* load-all mode */
    CHECK(s.read_meta(s.user, &got, &err) == OPSTATE_NOT_FOUND);
    CHECK(s.load(s.user, loaded, &got, NULL, &err) == OPSTATE_NOT_FOUND);

    put2(kv, oracle, "a", "1", 1);
    put2(kv, oracle, "b", "2", 2);
    put2(kv, oracle, "c", "3", 3);
    put2(kv, oracle, "d", "", 4); /* an empty value */
    opstate_kv_put(kv, by(bin, 3), str("binary"), pos(5, 5000));
    opstate_kv_put(oracle, by(bin, 3), str("binary"), pos(5, 5000));
    for (n = 1; n <= 3; n++) {
        id = mkid(n);
        opstate_dedup_insert(&w.d, &id);
    }
    CHECK(flush_cycle(&s, kv, &m1, &w.d, &err) == OPSTATE_OK);
    CHECK_EQ_U64(opstate_kv_dirty_count(kv), 0);
    del2(kv, oracle, "b", 6);
    put2(kv, oracle, "c", "three", 7);
    put2(kv, oracle, "e", "5", 8);
    del2(kv, oracle, "never-there", 9);
    for (n = 4; n <= 5; n++) {
        id = mkid(n);
        opstate_dedup_insert(&w.d, &id);
    }
    CHECK(flush_cycle(&s, kv, &m2, &w.d, &err) == OPSTATE_OK);

    CHECK(s.read_meta(s.user, &got, &err) == OPSTATE_OK);
    CHECK_EQ_U64(got.schema_version, 3);
    CHECK_EQ_U64(got.position.seq, 9);
    CHECK_EQ_U64(got.position.time, 9000);
    CHECK_EQ_U64(got.position.epoch, 77);

    memset(&got, 0, sizeof got);
    CHECK(s.load(s.user, loaded, &got, &wl.d, &err) == OPSTATE_OK);
    CHECK(same_state(loaded, oracle));
    CHECK_EQ_U64(opstate_kv_count(loaded), 5);
    CHECK_EQ_U64(opstate_kv_dirty_count(loaded), 0);
    CHECK(same_meta(&got, &m2));
    CHECK_EQ_U64(wl.d.count, 5);
    for (n = 1; n <= 5; n++) {
        id = mkid(n);
        CHECK(opstate_dedup_contains(&wl.d, &id));
    }
    id = mkid(6);
    CHECK(!opstate_dedup_contains(&wl.d, &id));

    /* same after closing everything (a restart) */
    opstate_lmdb_store_close(st);
    st = NULL;
    REQUIRE(fx_reopen(&fx));
    REQUIRE(store_open(fx.env, "proj", false, 1000, &st, &err) == OPSTATE_OK);
    s = opstate_lmdb_store_iface(st);
    opstate_kv_clear(loaded);
    opstate_dedup_clear(&wl.d);
    CHECK(s.load(s.user, loaded, &got, &wl.d, &err) == OPSTATE_OK);
    CHECK(same_state(loaded, oracle));
    CHECK(same_meta(&got, &m2));
    CHECK_EQ_U64(wl.d.count, 5);

    /* a flush with no dirty key still commits meta and dedup */
    m2.position.seq = 10;
    id = mkid(9);
    opstate_dedup_insert(&w.d, &id);
    CHECK(flush_cycle(&s, kv, &m2, &w.d, &err) == OPSTATE_OK);
    opstate_kv_clear(loaded);
    CHECK(s.load(s.user, loaded, &got, &wl.d, &err) == OPSTATE_OK);
    CHECK_EQ_U64(got.position.seq, 10);
    CHECK(opstate_dedup_contains(&wl.d, &id));
    CHECK(same_state(loaded, oracle));

    /* another store in the same environment is independent */
    {
        opstate_lmdb_store *other = NULL;
        opstate_store os;
        opstate_kv *k2 = kv_new(NULL);
        REQUIRE(k2);
        CHECK(store_open(fx.env, "other", false, 1000, &other, &err) == OPSTATE_OK);
        if (other) {
            os = opstate_lmdb_store_iface(other);
            CHECK(os.read_meta(os.user, &got, &err) == OPSTATE_NOT_FOUND);
            opstate_lmdb_store_close(other);
        }
        opstate_kv_destroy(k2);
    }
    opstate_lmdb_store_close(st);
    fx_close(&fx);
    opstate_kv_destroy(kv);
    opstate_kv_destroy(oracle);
    opstate_kv_destroy(loaded);
    window_free(&w);
    window_free(&wl);
}

TEST(lmdb_store, bad_names_refused)
{
    fixture fx;
    opstate_lmdb_store *st = NULL;
    char long_name[80];
    REQUIRE(fx_open(&fx));
    memset(long_name, 'x', 65);
    long_name[65] = '\0';
    CHECK(store_open(fx.env, "", false, 0, &st, NULL) == OPSTATE_INVALID_ARGUMENT);
    CHECK(store_open(fx.env, "a:b", false, 0, &st, NULL) == OPSTATE_INVALID_ARGUMENT);
    CHECK(store_open(fx.env, "a b", false, 0, &st, NULL) == OPSTATE_INVALID_ARGUMENT);
    CHECK(store_open(fx.env, long_name, false, 0, &st, NULL) == OPSTATE_INVALID_ARGUMENT);
    long_name[64] = '\0';
    CHECK(store_open(fx.env, long_name, false, 0, &st, NULL) == OPSTATE_OK);
    opstate_lmdb_store_close(st);
    fx_close(&fx);
}

typedef struct lookup_ctx {
    const opstate_kv *other;
    unsigned checked, mismatched;
} lookup_ctx;

/* Every item of one fold must be found by get in the other, same bytes. */
static bool lookup_item(void *user, const opstate_kv_item *it)
{
    lookup_ctx *c = (lookup_ctx *)user;
    opstate_kv_item got;
    c->checked++;
    if (opstate_kv_get(c->other, it->key, &got) != OPSTATE_OK || got.value.len != it->value.len ||
        (it->value.len && memcmp(got.value.ptr, it->value.ptr, it->value.len) != 0) ||
        got.position.seq != it->position.seq || got.position.time != it->position.time)
        c->mismatched++;
    return true;
}

TEST(lmdb_store, read_through_loads_only_deltas)
{
    fixture fx;
    opstate_lmdb_store *st = NULL, *all = NULL;
    opstate_store s, sa;
    opstate_kv *kv = kv_new(NULL), *oracle = kv_new(NULL), *rt = NULL, *full = kv_new(NULL);
    opstate_snapshot_meta m = smeta(1, 300, 300, 1), got;
    opstate_error err;
    opstate_kv_item item;
    lookup_ctx lc;
    uint32_t dcount;
    uint64_t dbytes;
    REQUIRE(kv && oracle && full);
    REQUIRE(fx_open(&fx));
    REQUIRE(store_open(fx.env, "rt", true, 1000, &st, &err) == OPSTATE_OK);
    s = opstate_lmdb_store_iface(st);
    REQUIRE(s.base(s.user) != NULL);
    fill(kv, oracle, 300, 1);
    CHECK(flush_cycle(&s, kv, &m, NULL, &err) == OPSTATE_OK);
    CHECK(opstate_lmdb_store_compact(st, &err) == OPSTATE_OK); /* the 300 keys go to the table */
    opstate_lmdb_store_deltas(st, &dcount, &dbytes);
    CHECK_EQ_U64(dcount, 0);
    CHECK_EQ_U64(dbytes, 0);
    /* deltas over the table: an overwrite, a delete, a new key */
    put2(kv, oracle, "k-00007", "seven", 301);
    del2(kv, oracle, "k-00100", 302);
    put2(kv, oracle, "zz-new", "new", 303);
    m.position.seq = 303;
    CHECK(flush_cycle(&s, kv, &m, NULL, &err) == OPSTATE_OK);
    opstate_lmdb_store_deltas(st, &dcount, &dbytes);
    CHECK_EQ_U64(dcount, 1);
    CHECK(dbytes > 0);

    /* a restart in read-through mode */
    rt = kv_new(s.base(s.user));
    REQUIRE(rt);
    CHECK(s.load(s.user, rt, &got, NULL, &err) == OPSTATE_OK);
    CHECK_EQ_U64(got.position.seq, 303);
    /* a load-all handle on the same store */
    REQUIRE(store_open(fx.env, "rt", false, 1000, &all, &err) == OPSTATE_OK);
    sa = opstate_lmdb_store_iface(all);
    CHECK(sa.load(sa.user, full, &got, NULL, &err) == OPSTATE_OK);
    CHECK(same_state(full, oracle));
    /* memory holds the three deltas, not the 300 table keys */
    CHECK(opstate_kv_memory(rt) * 20 < opstate_kv_memory(full));
    CHECK_EQ_U64(opstate_kv_count(rt), 300);
    CHECK_EQ_U64(opstate_kv_count(rt), opstate_kv_count(full));
    CHECK(same_state(rt, full));
    CHECK(opstate_kv_get(rt, str("k-00100"), &item) == OPSTATE_NOT_FOUND);
    CHECK(opstate_kv_get(rt, str("k-00007"), &item) == OPSTATE_OK && item.value.len == 5 &&
          memcmp(item.value.ptr, "seven", 5) == 0 && item.position.seq == 301);
    CHECK(opstate_kv_get(rt, str("k-00008"), &item) == OPSTATE_OK && item.value.len == 100 && item.position.seq == 9);
    CHECK(opstate_kv_get(rt, str("zz-new"), &item) == OPSTATE_OK && item.position.seq == 303);
    CHECK(opstate_kv_get(rt, str("absent"), &item) == OPSTATE_NOT_FOUND);
    lc.other = rt;
    lc.checked = lc.mismatched = 0;
    CHECK(opstate_kv_iterate(full, lookup_item, &lc) == OPSTATE_OK);
    CHECK_EQ_U64(lc.checked, 300);
    CHECK_EQ_U64(lc.mismatched, 0);

    opstate_lmdb_store_close(all);
    opstate_lmdb_store_close(st);
    fx_close(&fx);
    opstate_kv_destroy(kv);
    opstate_kv_destroy(oracle);
    opstate_kv_destroy(rt);
    opstate_kv_destroy(full);
}

/* Load-all restores table records a few behind its walk (the fold's
   memory waits overlap it): tables shorter than, as long as and longer
   than that window come back whole, and a delta over the last table key
   (still in the window when the walk ends) wins over it. */
TEST(lmdb_store, load_all_restores_every_table_record)
{
    static const unsigned sizes[] = {1, 7, 8, 9, 16, 17, 100};
    size_t i;
    for (i = 0; i < COUNT_OF(sizes); i++) {
        fixture fx;
        opstate_lmdb_store *st = NULL;
        opstate_store s;
        opstate_kv *kv = kv_new(NULL), *oracle = kv_new(NULL), *loaded = kv_new(NULL);
        opstate_snapshot_meta m = smeta(1, 1000, 1000, 1), got;
        opstate_error err;
        char name[32], last[32];
        snprintf(name, sizeof name, "%u records", sizes[i]);
        CASE(name);
        REQUIRE(kv && oracle && loaded);
        REQUIRE(fx_open(&fx));
        REQUIRE(store_open(fx.env, "ring", false, 1000, &st, &err) == OPSTATE_OK);
        s = opstate_lmdb_store_iface(st);
        fill(kv, oracle, sizes[i], 1);
        CHECK(flush_cycle(&s, kv, &m, NULL, &err) == OPSTATE_OK);
        CHECK(opstate_lmdb_store_compact(st, &err) == OPSTATE_OK); /* every key in the table */
        CHECK(s.load(s.user, loaded, &got, NULL, &err) == OPSTATE_OK);
        CHECK_EQ_U64(opstate_kv_count(loaded), sizes[i]);
        CHECK(same_state(loaded, oracle));
        snprintf(last, sizeof last, "k-%05u", sizes[i] - 1);
        put2(kv, oracle, last, "newer", 2000);
        m.position.seq = 2000;
        CHECK(flush_cycle(&s, kv, &m, NULL, &err) == OPSTATE_OK); /* a delta record over the table */
        opstate_kv_clear(loaded);
        CHECK(s.load(s.user, loaded, &got, NULL, &err) == OPSTATE_OK);
        CHECK(same_state(loaded, oracle));
        opstate_lmdb_store_close(st);
        fx_close(&fx);
        opstate_kv_destroy(kv);
        opstate_kv_destroy(oracle);
        opstate_kv_destroy(loaded);
    }
}

/* Compaction sorts every delta item by key with the 8 bytes after the
   prefix all keys share as a first comparison: keys that are prefixes of
   each other, that differ only past those 8 bytes or in binary bytes, and
   many versions of one key across deltas still come out newest-wins. */
TEST(lmdb_store, compaction_sorts_tricky_keys)
{
    static const char *const tails[] = {"a", "a\0", "a\0\0", "a\xff", "b", "ab", "aaaaaaaa", "aaaaaaaab",
                                        "aaaaaaaaa", "aaaaaaaa\0", "\xff\xff\xff\xff\xff\xff\xff\xff\x01", "\x01"};
    static const size_t tail_len[] = {1, 2, 3, 2, 1, 2, 8, 9, 9, 9, 9, 1};
    fixture fx;
    opstate_lmdb_store *st = NULL;
    opstate_store s;
    opstate_kv *kv, *oracle = kv_new(NULL), *loaded = NULL;
    opstate_snapshot_meta m = smeta(1, 0, 0, 1), got;
    opstate_error err;
    uint64_t seq = 1, rng = 7;
    unsigned flush, i;
    REQUIRE(oracle);
    REQUIRE(fx_open(&fx));
    REQUIRE(store_open(fx.env, "sort", false, 1000, &st, &err) == OPSTATE_OK);
    s = opstate_lmdb_store_iface(st);
    kv = kv_new(NULL);
    REQUIRE(kv);
    for (flush = 0; flush < 6; flush++) {
        for (i = 0; i < 300; i++) {
            uint8_t key[32], val[8];
            size_t t, len = 12;
            opstate_position p = pos(seq, (int64_t)seq);
            memcpy(key, "scope\0kind\0k", 12);
            rng = rng * 6364136223846793005u + 1442695040888963407u;
            t = (size_t)(rng >> 33) % (COUNT_OF(tails) + 8);
            if (t < COUNT_OF(tails)) { /* a tricky tail */
                memcpy(key + 12, tails[t], tail_len[t]);
                len += tail_len[t];
            } else { /* a binary tail of 1..16 bytes from a small alphabet: repeats happen */
                size_t j, n = 1 + (size_t)(rng >> 40) % 16;
                for (j = 0; j < n; j++) key[12 + j] = (uint8_t)((rng >> (j * 3 % 60)) % 3 * 0x7f);
                len += n;
            }
            memcpy(val, &seq, sizeof val);
            if ((rng >> 20) % 5 == 0) {
                opstate_kv_delete(kv, by(key, len), p);
                opstate_kv_delete(oracle, by(key, len), p);
            } else {
                CHECK(opstate_kv_put(kv, by(key, len), by(val, sizeof val), p) == OPSTATE_OK);
                opstate_kv_put(oracle, by(key, len), by(val, sizeof val), p);
            }
            seq++;
        }
        m.position.seq = seq - 1;
        CHECK(flush_cycle(&s, kv, &m, NULL, &err) == OPSTATE_OK);
    }
    CHECK(compact_and_forget(st, kv, &err) == OPSTATE_OK);
    loaded = kv_new(NULL);
    REQUIRE(loaded);
    CHECK(s.load(s.user, loaded, &got, NULL, &err) == OPSTATE_OK);
    CHECK(opstate_kv_count(loaded) > 20);
    CHECK(same_state(loaded, oracle));
    opstate_kv_destroy(loaded);
    opstate_kv_destroy(kv);
    opstate_kv_destroy(oracle);
    opstate_lmdb_store_close(st);
    fx_close(&fx);
}

/* Compaction every 4 flushes, in both modes: the state never changes. */
TEST(lmdb_store, compaction_keeps_state)
{
    int mode;
    for (mode = 0; mode < 2; mode++) {
        bool rtm = mode == 1;
        fixture fx;
        opstate_lmdb_store *st = NULL;
        opstate_store s;
        opstate_kv *kv = NULL, *oracle = kv_new(NULL), *loaded = NULL;
        opstate_snapshot_meta m = smeta(1, 0, 0, 1), got;
        opstate_error err;
        uint32_t dcount;
        uint64_t dbytes;
        unsigned round;
        char key[32];
        CASE(rtm ? "read-through" : "load-all");
        REQUIRE(oracle);
        REQUIRE(fx_open(&fx));
        REQUIRE(store_open(fx.env, "cmp", rtm, 4, &st, &err) == OPSTATE_OK);
        s = opstate_lmdb_store_iface(st);
        kv = kv_new(s.base(s.user));
        REQUIRE(kv);
        for (round = 1; round <= 9; round++) {
            snprintf(key, sizeof key, "r%u", round);
            put2(kv, oracle, key, "v", round * 10);
            put2(kv, oracle, "shared", key, round * 10 + 1);
            if (round > 1) {
                snprintf(key, sizeof key, "r%u", round - 1);
                if (round % 3 == 0) del2(kv, oracle, key, round * 10 + 2);
            }
            m.position.seq = round * 10 + 2;
            CHECK(flush_cycle(&s, kv, &m, NULL, &err) == OPSTATE_OK);
            opstate_lmdb_store_deltas(st, &dcount, &dbytes);
            CHECK_EQ_U64(dcount, round % 4); /* due, and compacted, at the 4th and 8th flush */
            if (dcount == 0) CHECK_EQ_U64(dbytes, 0);
            CHECK(same_state(kv, oracle)); /* the live fold still sees everything */
            loaded = kv_new(s.base(s.user));
            REQUIRE(loaded);
            CHECK(s.load(s.user, loaded, &got, NULL, &err) == OPSTATE_OK);
            CHECK(same_state(loaded, oracle));
            CHECK_EQ_U64(got.position.seq, m.position.seq);
            opstate_kv_destroy(loaded);
        }
        /* a compaction with a key dirty: the store folds what was flushed,
           the fold forgets only clean entries and keeps the dirty one */
        put2(kv, oracle, "dirty", "x", 200);
        opstate_lmdb_store_deltas(st, &dcount, &dbytes);
        CHECK_EQ_U64(dcount, 1);
        CHECK(compact_and_forget(st, kv, &err) == OPSTATE_OK);
        CHECK_EQ_U64(opstate_kv_dirty_count(kv), 1);
        CHECK(same_state(kv, oracle));
        m.position.seq = 200;
        CHECK(flush_cycle(&s, kv, &m, NULL, &err) == OPSTATE_OK);
        CHECK(compact_and_forget(st, kv, &err) == OPSTATE_OK);
        opstate_lmdb_store_deltas(st, &dcount, &dbytes);
        CHECK_EQ_U64(dcount, 0);
        CHECK(same_state(kv, oracle));
        if (rtm) { /* forgot the clean entries: no more memory than an empty fold */
            opstate_kv *empty = kv_new(NULL);
            CHECK(empty && opstate_kv_memory(kv) <= opstate_kv_memory(empty));
            opstate_kv_destroy(empty);
        }
        /* after a restart */
        opstate_lmdb_store_close(st);
        st = NULL;
        REQUIRE(fx_reopen(&fx));
        REQUIRE(store_open(fx.env, "cmp", rtm, 4, &st, &err) == OPSTATE_OK);
        s = opstate_lmdb_store_iface(st);
        loaded = kv_new(s.base(s.user));
        REQUIRE(loaded);
        CHECK(s.load(s.user, loaded, &got, NULL, &err) == OPSTATE_OK);
        CHECK(same_state(loaded, oracle));
        CHECK_EQ_U64(got.position.seq, 200);
        opstate_kv_destroy(loaded);
        opstate_kv_destroy(kv);
        opstate_kv_destroy(oracle);
        opstate_lmdb_store_close(st);
        fx_close(&fx);
    }
}

TEST(lmdb_store, drop_removes_everything)
{
    fixture fx;
    opstate_lmdb_store *st = NULL;
    opstate_store s;
    opstate_kv *kv = kv_new(NULL), *oracle = kv_new(NULL), *loaded = kv_new(NULL);
    opstate_snapshot_meta m = smeta(1, 4, 4, 1), got;
    opstate_error err;
    REQUIRE(kv && oracle && loaded);
    REQUIRE(fx_open(&fx));
    REQUIRE(store_open(fx.env, "gone", false, 2, &st, &err) == OPSTATE_OK);
    s = opstate_lmdb_store_iface(st);
    fill(kv, oracle, 4, 1);
    CHECK(flush_cycle(&s, kv, &m, NULL, &err) == OPSTATE_OK);
    put2(kv, oracle, "x", "y", 5);
    CHECK(flush_cycle(&s, kv, &m, NULL, &err) == OPSTATE_OK); /* compacted: table + no deltas */
    put2(kv, oracle, "z", "y", 6);
    CHECK(flush_cycle(&s, kv, &m, NULL, &err) == OPSTATE_OK); /* one delta pending */
    CHECK(s.drop(s.user, &err) == OPSTATE_OK);
    memset(&err, 0, sizeof err);
    CHECK(s.read_meta(s.user, &got, &err) == OPSTATE_NOT_FOUND);
    CHECK(err.result == OPSTATE_NOT_FOUND);
    CHECK(s.load(s.user, loaded, &got, NULL, &err) == OPSTATE_NOT_FOUND);
    CHECK_EQ_U64(opstate_kv_count(loaded), 0);
    /* a fresh start after the drop holds only what is flushed next */
    opstate_kv_destroy(kv);
    kv = kv_new(NULL);
    REQUIRE(kv);
    opstate_kv_put(kv, str("only"), str("1"), pos(1, 1));
    m.position.seq = 1;
    CHECK(flush_cycle(&s, kv, &m, NULL, &err) == OPSTATE_OK);
    CHECK(s.load(s.user, loaded, &got, NULL, &err) == OPSTATE_OK);
    CHECK_EQ_U64(opstate_kv_count(loaded), 1);
    CHECK(same_state(loaded, kv));
    opstate_lmdb_store_close(st);
    fx_close(&fx);
    opstate_kv_destroy(kv);
    opstate_kv_destroy(oracle);
    opstate_kv_destroy(loaded);
}

/* Writes a layout-0 store: "s:<name>:meta" / "snapshot" = snapshot bytes
   (with the dedup window, when not NULL). */
static int write_layout0(const char *path, const char *name, const opstate_kv *kv, const opstate_snapshot_meta *m,
                         const opstate_dedup *dedup)
{
    char db[96];
    size_t len = 0;
    uint8_t *buf;
    int rc;
    if (opstate_snapshot_encode(kv, m, dedup, NULL, 0, &len, NULL) != OPSTATE_OK) return -1;
    if (!(buf = (uint8_t *)malloc(len))) return ENOMEM;
    if (opstate_snapshot_encode(kv, m, dedup, buf, len, &len, NULL) != OPSTATE_OK) {
        free(buf);
        return -1;
    }
    snprintf(db, sizeof db, "s:%s:meta", name);
    rc = raw_put(path, db, "snapshot", 8, buf, len);
    free(buf);
    return rc;
}

TEST(lmdb_store, migrates_layout0)
{
    char dir[64];
    opstate_lmdb *env = NULL;
    opstate_lmdb_store *st = NULL;
    opstate_store s;
    opstate_kv *oracle = kv_new(NULL), *scratch = kv_new(NULL), *loaded = kv_new(NULL);
    opstate_snapshot_meta m = smeta(4, 123, 456789, 9), got;
    opstate_error err;
    REQUIRE(oracle && scratch && loaded);
    tmp_dir(dir);
    REQUIRE(dir[0]);
    fill(scratch, oracle, 50, 1);
    put2(scratch, oracle, "last", "one", 99);
    opstate_kv_mark_clean(oracle);
    REQUIRE(write_layout0(dir, "legacy", oracle, &m, NULL) == 0);
    CHECK(raw_has(dir, "s:legacy:meta", "snapshot") == 1);

    REQUIRE(env_open(dir, 0, 0, &env, &err) == OPSTATE_OK);
    CHECK(store_open(env, "legacy", false, 0, &st, &err) == OPSTATE_OK);
    if (st) {
        s = opstate_lmdb_store_iface(st);
        CHECK(s.read_meta(s.user, &got, &err) == OPSTATE_OK);
        CHECK(same_meta(&got, &m));
        CHECK(s.load(s.user, loaded, &got, NULL, &err) == OPSTATE_OK);
        CHECK(same_state(loaded, oracle));
        CHECK(same_meta(&got, &m));
        opstate_lmdb_store_close(st);
        st = NULL;
    }
    opstate_lmdb_close(env);
    env = NULL;
    CHECK(raw_has(dir, "s:legacy:meta", "snapshot") == 0);
    CHECK(raw_has(dir, "s:legacy:meta", "meta") == 1);

    /* opening again does not migrate twice and keeps the state */
    REQUIRE(env_open(dir, 0, 0, &env, &err) == OPSTATE_OK);
    CHECK(store_open(env, "legacy", true, 0, &st, &err) == OPSTATE_OK);
    if (st) {
        opstate_kv *rt;
        s = opstate_lmdb_store_iface(st);
        rt = kv_new(s.base(s.user));
        REQUIRE(rt);
        CHECK(s.load(s.user, rt, &got, NULL, &err) == OPSTATE_OK);
        CHECK(same_state(rt, oracle)); /* the table itself holds the migrated state */
        opstate_kv_destroy(rt);
        opstate_lmdb_store_close(st);
    }
    opstate_lmdb_close(env);
    opstate_kv_destroy(oracle);
    opstate_kv_destroy(scratch);
    opstate_kv_destroy(loaded);
    rm_rf(dir);
}

/* Sets the layout version of a meta record to 2 and recomputes its CRC. */
static void set_layout2(uint8_t *rec, size_t len, void *user)
{
    (void)user;
    opstate_put_le16(rec + 4, 2);
    opstate_put_le32(rec + len - 4, opstate_crc32c(0, rec, len - 4));
}

/* A store with a table (compacted) and one delta record, flushed and closed. */
static bool make_store(fixture *fx, const char *name, opstate_kv *oracle)
{
    opstate_lmdb_store *st = NULL;
    opstate_store s;
    opstate_kv *kv = kv_new(NULL);
    opstate_snapshot_meta m = smeta(1, 20, 20, 3);
    bool ok = kv != NULL && store_open(fx->env, name, false, 1000, &st, NULL) == OPSTATE_OK;
    if (ok) {
        s = opstate_lmdb_store_iface(st);
        fill(kv, oracle, 10, 1);
        ok = flush_cycle(&s, kv, &m, NULL, NULL) == OPSTATE_OK && opstate_lmdb_store_compact(st, NULL) == OPSTATE_OK;
        put2(kv, oracle, "k-00003", "changed", 21);
        del2(kv, oracle, "k-00004", 22);
        m.position.seq = 22;
        ok = ok && flush_cycle(&s, kv, &m, NULL, NULL) == OPSTATE_OK;
    }
    opstate_lmdb_store_close(st);
    opstate_kv_destroy(kv);
    return ok;
}

TEST(lmdb_store, newer_layout_refused)
{
    fixture fx;
    opstate_lmdb_store *st = NULL;
    opstate_kv *oracle = kv_new(NULL);
    opstate_error err;
    REQUIRE(oracle);
    REQUIRE(fx_open(&fx));
    REQUIRE(make_store(&fx, "v2", oracle));
    opstate_lmdb_close(fx.env);
    fx.env = NULL;
    CHECK(raw_edit(fx.dir, "s:v2:meta", "meta", 4, set_layout2, NULL) == 0);
    REQUIRE(env_open(fx.dir, 0, 0, &fx.env, &err) == OPSTATE_OK);
    memset(&err, 0, sizeof err);
    st = NULL;
    CHECK(store_open(fx.env, "v2", false, 0, &st, &err) == OPSTATE_UNKNOWN_VERSION);
    CHECK(err.result == OPSTATE_UNKNOWN_VERSION);
    CHECK(st == NULL);
    opstate_lmdb_store_close(st);
    fx_close(&fx);
    opstate_kv_destroy(oracle);
}

/* Runs a raw edit in a forked child (its own process, its own raw
   environment) while this process keeps its environment open. */
static int raw_edit_in_child(const char *path, const char *db, const void *key, size_t klen, raw_edit_fn fn,
                             void *user)
{
    int fd;
    pid_t pid = child_start(&fd);
    if (pid < 0) return -1;
    if (pid == 0) child_finish(fd, raw_edit(path, db, key, klen, fn, user) == 0 ? 0 : 1);
    return child_wait(pid, fd);
}

TEST(lmdb_store, corruption_detected_on_load)
{
    static const struct {
        const char *name, *db_part, *key; /* key NULL: the first record */
        size_t at;
    } rows[] = {
        {"table value byte", "table", "k-00005", 17},
        {"table seq byte", "table", "k-00000", 0},
        {"table crc byte", "table", "k-00009", 1000},
        {"delta item byte", "deltas", NULL, 9},
        {"delta count byte", "deltas", NULL, 0},
        {"delta crc byte", "deltas", NULL, 100000},
        {"meta position byte", "meta", "meta", 13},
        {"meta dedup length byte", "meta", "meta", 56},
        {"meta crc byte", "meta", "meta", 100000},
    };
    size_t i;
    for (i = 0; i < COUNT_OF(rows); i++) {
        fixture fx;
        opstate_lmdb_store *st = NULL;
        opstate_store s;
        opstate_kv *oracle = kv_new(NULL), *loaded = kv_new(NULL), *empty = kv_new(NULL);
        opstate_snapshot_meta got = smeta(7, 7, 7, 7);
        opstate_error err;
        opstate_result r;
        char db[64];
        size_t at = rows[i].at;
        CASE(rows[i].name);
        REQUIRE(oracle && loaded && empty);
        REQUIRE(fx_open(&fx));
        REQUIRE(make_store(&fx, "c", oracle));
        snprintf(db, sizeof db, "s:c:%s", rows[i].db_part);
        REQUIRE(store_open(fx.env, "c", false, 1000, &st, &err) == OPSTATE_OK);
        s = opstate_lmdb_store_iface(st);
        /* the store loads before the damage */
        CHECK(s.load(s.user, loaded, &got, NULL, &err) == OPSTATE_OK);
        CHECK(same_state(loaded, oracle));
        opstate_kv_clear(loaded);
        CHECK(raw_edit_in_child(fx.dir, db, rows[i].key, rows[i].key ? strlen(rows[i].key) : 0, flip_at, &at) == 0);
        memset(&err, 0, sizeof err);
        got = smeta(7, 7, 7, 7);
        r = s.load(s.user, loaded, &got, NULL, &err);
        CHECK(r == OPSTATE_CORRUPT);
        CHECK(err.result == OPSTATE_CORRUPT);
        CHECK_EQ_U64(opstate_kv_count(loaded), 0);
        CHECK_EQ_U64(opstate_kv_dirty_count(loaded), 0);
        CHECK(same_state(loaded, empty)); /* nothing partial is left */
        CHECK_EQ_U64(got.position.seq, 7); /* meta untouched */
        opstate_lmdb_store_close(st);
        st = NULL;
        /* and after a restart: open fails with CORRUPT or load does */
        REQUIRE(fx_reopen(&fx));
        r = store_open(fx.env, "c", false, 1000, &st, &err);
        if (r == OPSTATE_OK) {
            s = opstate_lmdb_store_iface(st);
            r = s.load(s.user, loaded, &got, NULL, &err);
            CHECK_EQ_U64(opstate_kv_count(loaded), 0);
        }
        CHECK(r == OPSTATE_CORRUPT);
        opstate_lmdb_store_close(st);
        fx_close(&fx);
        opstate_kv_destroy(oracle);
        opstate_kv_destroy(loaded);
        opstate_kv_destroy(empty);
    }
}

TEST(lmdb_store, key_over_511_bytes_oversized)
{
    fixture fx;
    opstate_lmdb_store *st = NULL;
    opstate_store s;
    opstate_kv *kv = kv_new(NULL), *loaded = kv_new(NULL);
    opstate_snapshot_meta m = smeta(1, 1, 1, 1), got;
    opstate_error err;
    char key[600];
    REQUIRE(kv && loaded);
    REQUIRE(fx_open(&fx));
    REQUIRE(store_open(fx.env, "ov", false, 1, &st, &err) == OPSTATE_OK);
    s = opstate_lmdb_store_iface(st);
    memset(key, 'k', sizeof key);
    /* 511 bytes is fine, also through compaction (every flush compacts) */
    REQUIRE(opstate_kv_put(kv, by(key, 511), str("max"), pos(1, 1)) == OPSTATE_OK);
    CHECK(flush_cycle(&s, kv, &m, NULL, &err) == OPSTATE_OK);
    /* 512 is not: the whole flush fails and nothing changes */
    REQUIRE(opstate_kv_put(kv, str("small"), str("s"), pos(2, 2)) == OPSTATE_OK);
    REQUIRE(opstate_kv_put(kv, by(key, 512), str("too long"), pos(3, 3)) == OPSTATE_OK);
    m.position.seq = 3;
    memset(&err, 0, sizeof err);
    CHECK(flush_cycle(&s, kv, &m, NULL, &err) == OPSTATE_OVERSIZED);
    CHECK(err.result == OPSTATE_OVERSIZED);
    CHECK_EQ_U64(opstate_kv_dirty_count(kv), 2);
    CHECK(s.load(s.user, loaded, &got, NULL, &err) == OPSTATE_OK);
    CHECK_EQ_U64(got.position.seq, 1);
    CHECK_EQ_U64(opstate_kv_count(loaded), 1);
    opstate_lmdb_store_close(st);
    fx_close(&fx);
    opstate_kv_destroy(kv);
    opstate_kv_destroy(loaded);
}

typedef struct blob_got {
    uint8_t buf[256];
    size_t len;
    opstate_snapshot_meta meta;
    int calls;
} blob_got;

static void blob_cb(void *user, opstate_bytes blob, const opstate_snapshot_meta *meta)
{
    blob_got *g = (blob_got *)user;
    g->calls++;
    g->len = blob.len;
    if (blob.len <= sizeof g->buf) memcpy(g->buf, blob.ptr, blob.len);
    g->meta = *meta;
}

TEST(lmdb_store, blob_round_trip_and_corruption)
{
    fixture fx;
    opstate_lmdb_store *st = NULL;
    opstate_store s;
    opstate_snapshot_meta m = smeta(2, 50, 5000, 8), got;
    opstate_error err;
    blob_got g;
    static const char text[] = "opaque application state \x01\x02\x00 with a zero";
    size_t tlen = sizeof text - 1, at = 3;
    REQUIRE(fx_open(&fx));
    REQUIRE(store_open(fx.env, "blob", false, 0, &st, &err) == OPSTATE_OK);
    s = opstate_lmdb_store_iface(st);
    memset(&g, 0, sizeof g);
    CHECK(opstate_lmdb_blob_load(st, blob_cb, &g, &err) == OPSTATE_NOT_FOUND);
    CHECK_EQ_U64(g.calls, 0);
    CHECK(opstate_lmdb_blob_save(st, by(text, tlen), &m, &err) == OPSTATE_OK);
    CHECK(opstate_lmdb_blob_load(st, blob_cb, &g, &err) == OPSTATE_OK);
    CHECK_EQ_U64(g.calls, 1);
    CHECK_EQ_U64(g.len, tlen);
    CHECK(g.len == tlen && memcmp(g.buf, text, tlen) == 0);
    CHECK(same_meta(&g.meta, &m));
    /* an empty blob is a blob */
    m.position.seq = 51;
    CHECK(opstate_lmdb_blob_save(st, by(NULL, 0), &m, &err) == OPSTATE_OK);
    memset(&g, 0, sizeof g);
    CHECK(opstate_lmdb_blob_load(st, blob_cb, &g, &err) == OPSTATE_OK);
    CHECK(g.calls == 1 && g.len == 0 && g.meta.position.seq == 51);
    m.position.seq = 52;
    CHECK(opstate_lmdb_blob_save(st, by(text, tlen), &m, &err) == OPSTATE_OK);
    /* a KV load of a blob store is refused, not misread */
    {
        opstate_kv *kv = kv_new(NULL);
        REQUIRE(kv);
        CHECK(s.load(s.user, kv, &got, NULL, &err) != OPSTATE_OK);
        CHECK_EQ_U64(opstate_kv_count(kv), 0);
        opstate_kv_destroy(kv);
    }
    /* a flipped byte in the blob record */
    CHECK(raw_edit_in_child(fx.dir, "s:blob:meta", "blob", 4, flip_at, &at) == 0);
    memset(&g, 0, sizeof g);
    memset(&err, 0, sizeof err);
    CHECK(opstate_lmdb_blob_load(st, blob_cb, &g, &err) == OPSTATE_CORRUPT);
    CHECK(err.result == OPSTATE_CORRUPT);
    CHECK_EQ_U64(g.calls, 0);
    opstate_lmdb_store_close(st);
    fx_close(&fx);
}

/* A layout-0 snapshot carries the dedup window: migration must keep it, or
   an event redelivered after the upgrade would be applied twice. */
TEST(lmdb_store, migration_keeps_dedup_window)
{
    char dir[64];
    opstate_lmdb *env = NULL;
    opstate_lmdb_store *st = NULL;
    opstate_store s;
    opstate_kv *kv = kv_new(NULL), *loaded = kv_new(NULL);
    opstate_snapshot_meta m = smeta(1, 10, 10, 2), got;
    window w, wl;
    opstate_id id;
    uint8_t n;
    REQUIRE(kv && loaded && window_init(&w, 8) && window_init(&wl, 8));
    tmp_dir(dir);
    REQUIRE(dir[0]);
    opstate_kv_put(kv, str("a"), str("1"), pos(10, 10));
    for (n = 1; n <= 3; n++) {
        id = mkid(n);
        opstate_dedup_insert(&w.d, &id);
    }
    REQUIRE(write_layout0(dir, "dd", kv, &m, &w.d) == 0);

    REQUIRE(env_open(dir, 0, 0, &env, NULL) == OPSTATE_OK);
    CHECK(store_open(env, "dd", false, 0, &st, NULL) == OPSTATE_OK);
    if (st) {
        s = opstate_lmdb_store_iface(st);
        CHECK(s.load(s.user, loaded, &got, &wl.d, NULL) == OPSTATE_OK);
        CHECK(same_state(loaded, kv));
        CHECK_EQ_U64(wl.d.count, 3);
        for (n = 1; n <= 3 && wl.d.count == 3; n++) {
            id = mkid(n);
            CHECK(opstate_dedup_contains(&wl.d, &id));
        }
        opstate_lmdb_store_close(st);
    }
    opstate_lmdb_close(env);
    opstate_kv_destroy(kv);
    opstate_kv_destroy(loaded);
    window_free(&w);
    window_free(&wl);
    rm_rf(dir);
}

/* Read-through: a damaged table record surfaces as CORRUPT from get and
   iterate (the load itself only reads the deltas). */
TEST(lmdb_store, read_through_corrupt_table_record)
{
    fixture fx;
    opstate_lmdb_store *st = NULL;
    opstate_store s;
    opstate_kv *oracle = kv_new(NULL), *rt = NULL;
    opstate_snapshot_meta got;
    opstate_kv_item item;
    dump d;
    size_t at = 18;
    REQUIRE(oracle);
    REQUIRE(fx_open(&fx));
    REQUIRE(make_store(&fx, "rtc", oracle));
    REQUIRE(store_open(fx.env, "rtc", true, 1000, &st, NULL) == OPSTATE_OK);
    s = opstate_lmdb_store_iface(st);
    rt = kv_new(s.base(s.user));
    REQUIRE(rt);
    CHECK(s.load(s.user, rt, &got, NULL, NULL) == OPSTATE_OK);
    CHECK(same_state(rt, oracle));
    CHECK(raw_edit_in_child(fx.dir, "s:rtc:table", "k-00006", 7, flip_at, &at) == 0);
    CHECK(opstate_kv_get(rt, str("k-00006"), &item) == OPSTATE_CORRUPT);
    CHECK(opstate_kv_get(rt, str("k-00005"), &item) == OPSTATE_OK);
    memset(&d, 0, sizeof d);
    CHECK(opstate_kv_iterate(rt, dump_item, &d) == OPSTATE_CORRUPT);
    free(d.p);
    opstate_kv_destroy(rt);
    opstate_lmdb_store_close(st);
    fx_close(&fx);
    opstate_kv_destroy(oracle);
}

/* Compaction that needs a bigger map grows it and is redone whole. */
TEST(lmdb_store, compaction_across_map_growth)
{
    const size_t mib = (size_t)1 << 20, vlen = 80 * 1024;
    int mode;
    for (mode = 0; mode < 2; mode++) {
        char dir[64];
        opstate_lmdb *env = NULL;
        opstate_lmdb_store *st = NULL;
        opstate_store s;
        opstate_kv *kv = NULL, *oracle = kv_new(NULL), *loaded = NULL;
        opstate_snapshot_meta got;
        opstate_error err;
        uint8_t *val = (uint8_t *)malloc(vlen);
        uint32_t dcount;
        uint64_t dbytes;
        unsigned round;
        CASE(mode ? "read-through" : "load-all");
        tmp_dir(dir);
        REQUIRE(dir[0] && oracle && val);
        REQUIRE(env_open(dir, mib, 64 * mib, &env, NULL) == OPSTATE_OK);
        REQUIRE(store_open(env, "grow", mode == 1, 3, &st, NULL) == OPSTATE_OK);
        s = opstate_lmdb_store_iface(st);
        kv = kv_new(s.base(s.user));
        REQUIRE(kv);
        for (round = 0; round < 7; round++) {
            /* 3 new keys and a rewrite of the first three every round */
            CHECK(flush_big_keys(&s, kv, oracle, round * 3, 3, vlen, val, &err) == OPSTATE_OK);
            if (round) CHECK(flush_big_keys(&s, kv, oracle, 0, 3, vlen, val, &err) == OPSTATE_OK);
            CHECK(same_state(kv, oracle));
        }
        opstate_lmdb_store_deltas(st, &dcount, &dbytes);
        CHECK(dcount < 3);
        CHECK(opstate_lmdb_map_size(env) > mib);
        loaded = kv_new(s.base(s.user));
        REQUIRE(loaded);
        CHECK(s.load(s.user, loaded, &got, NULL, &err) == OPSTATE_OK);
        CHECK(same_state(loaded, oracle));
        CHECK_EQ_U64(opstate_kv_count(loaded), 21);
        opstate_kv_destroy(loaded);
        opstate_kv_destroy(kv);
        opstate_kv_destroy(oracle);
        opstate_lmdb_store_close(st);
        opstate_lmdb_close(env);
        free(val);
        rm_rf(dir);
    }
}

/* After a blob save the store holds no delta record: the counters say so,
   and KV flushes that follow start from a clean slate. */
TEST(lmdb_store, blob_save_resets_delta_counters)
{
    fixture fx;
    opstate_lmdb_store *st = NULL;
    opstate_store s;
    opstate_kv *kv = kv_new(NULL), *oracle = kv_new(NULL), *loaded = kv_new(NULL), *fresh = kv_new(NULL);
    opstate_snapshot_meta m = smeta(1, 3, 3, 1), got;
    uint32_t dcount;
    uint64_t dbytes;
    REQUIRE(kv && oracle && loaded && fresh);
    REQUIRE(fx_open(&fx));
    REQUIRE(store_open(fx.env, "mix", false, 1000, &st, NULL) == OPSTATE_OK);
    s = opstate_lmdb_store_iface(st);
    put2(kv, oracle, "a", "1", 1);
    CHECK(flush_cycle(&s, kv, &m, NULL, NULL) == OPSTATE_OK);
    put2(kv, oracle, "b", "2", 2);
    CHECK(flush_cycle(&s, kv, &m, NULL, NULL) == OPSTATE_OK);
    opstate_lmdb_store_deltas(st, &dcount, &dbytes);
    CHECK_EQ_U64(dcount, 2);
    CHECK(opstate_lmdb_blob_save(st, str("blob"), &m, NULL) == OPSTATE_OK);
    opstate_lmdb_store_deltas(st, &dcount, &dbytes);
    CHECK_EQ_U64(dcount, 0);
    CHECK_EQ_U64(dbytes, 0);
    /* back to KV: only what is flushed now */
    opstate_kv_put(fresh, str("c"), str("3"), pos(4, 4));
    m.position.seq = 4;
    CHECK(flush_cycle(&s, fresh, &m, NULL, NULL) == OPSTATE_OK);
    CHECK(s.load(s.user, loaded, &got, NULL, NULL) == OPSTATE_OK);
    CHECK(same_state(loaded, fresh));
    opstate_lmdb_store_deltas(st, &dcount, &dbytes);
    CHECK_EQ_U64(dcount, 1);
    opstate_lmdb_store_close(st);
    fx_close(&fx);
    opstate_kv_destroy(kv);
    opstate_kv_destroy(oracle);
    opstate_kv_destroy(loaded);
    opstate_kv_destroy(fresh);
}

/* By default a close folds the pending deltas in: the next start reads no
   tail, and the state is the same. */
TEST(lmdb_store, close_compacts_pending_deltas)
{
    fixture fx;
    opstate_lmdb_store_config c;
    opstate_lmdb_store *st = NULL;
    opstate_store s;
    opstate_kv *kv = kv_new(NULL), *oracle = kv_new(NULL), *back = kv_new(NULL);
    opstate_snapshot_meta m = smeta(1, 50, 50, 1), got;
    opstate_error err;
    uint32_t dcount;
    uint64_t dbytes;
    REQUIRE(kv && oracle && back);
    REQUIRE(fx_open(&fx));
    memset(&c, 0, sizeof c);
    c.name = "closer";
    REQUIRE(opstate_lmdb_store_open(fx.env, &c, &st, &err) == OPSTATE_OK);
    s = opstate_lmdb_store_iface(st);
    fill(kv, oracle, 50, 1);
    CHECK(flush_cycle(&s, kv, &m, NULL, &err) == OPSTATE_OK);
    opstate_lmdb_store_deltas(st, &dcount, &dbytes);
    CHECK_EQ_U64(dcount, 1);
    opstate_lmdb_store_close(st);
    REQUIRE(opstate_lmdb_store_open(fx.env, &c, &st, &err) == OPSTATE_OK);
    opstate_lmdb_store_deltas(st, &dcount, &dbytes);
    CHECK_EQ_U64(dcount, 0);
    CHECK_EQ_U64(dbytes, 0);
    s = opstate_lmdb_store_iface(st);
    CHECK(s.load(s.user, back, &got, NULL, &err) == OPSTATE_OK);
    CHECK(same_state(back, oracle));
    CHECK_EQ_U64(got.position.seq, 50);
    opstate_lmdb_store_close(st);
    opstate_kv_destroy(kv);
    opstate_kv_destroy(oracle);
    opstate_kv_destroy(back);
    fx_close(&fx);
}

/* ---------------------------------------- crafted records (make mutate) */

/* The records below carry a VALID checksum over bytes that are wrong in
   structure: what a bug, a tool or an attacker writes, not what a bit flip
   does. The store checks behind the checksum must still refuse them with
   CORRUPT, and a compaction must never fold them (or a record that fails
   its checksum) into the table under a fresh checksum. Each test here
   kills a mutant of tests/mutants.txt. */

/* A copy of the first record of a named database and its key (at most
   cap bytes each); 0 or an LMDB status. */
static int raw_first(const char *path, const char *db, uint8_t *key, size_t *klen, uint8_t *rec, size_t *len,
                     size_t cap)
{
    MDB_env *env = NULL;
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_cursor *cur;
    MDB_val k, v;
    int rc = raw_open(path, &env);
    if (rc != 0) return rc;
    if ((rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn)) == 0) {
        if ((rc = mdb_dbi_open(txn, db, 0, &dbi)) == 0 && (rc = mdb_cursor_open(txn, dbi, &cur)) == 0) {
            rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
            if (rc == 0 && (k.mv_size > cap || v.mv_size > cap)) rc = ENOMEM;
            if (rc == 0) {
                memcpy(key, k.mv_data, k.mv_size);
                memcpy(rec, v.mv_data, v.mv_size);
                *klen = k.mv_size;
                *len = v.mv_size;
            }
            mdb_cursor_close(cur);
        }
        mdb_txn_abort(txn);
    }
    mdb_env_close(env);
    return rc;
}

/* Rewrites the trailing CRC32C of a record over all bytes before it. */
static void reseal(uint8_t *rec, size_t len)
{
    opstate_put_le32(rec + len - 4, opstate_crc32c(0, rec, len - 4));
}

/* The store `name` of fx after a restart: CORRUPT when open or load says
   so (nothing loaded), else what they returned. */
static opstate_result reopen_and_load(fixture *fx, const char *name)
{
    opstate_lmdb_store *st = NULL;
    opstate_kv *kv = kv_new(NULL);
    opstate_snapshot_meta got;
    opstate_store s;
    opstate_result r;
    if (!kv || !fx_reopen(fx)) {
        opstate_kv_destroy(kv);
        return OPSTATE_IO;
    }
    r = store_open(fx->env, name, false, 1000, &st, NULL);
    if (r == OPSTATE_OK) {
        s = opstate_lmdb_store_iface(st);
        r = s.load(s.user, kv, &got, NULL, NULL);
        if (r != OPSTATE_OK) CHECK_EQ_U64(opstate_kv_count(kv), 0);
    }
    opstate_lmdb_store_close(st);
    opstate_kv_destroy(kv);
    return r;
}

/* Meta records with a valid CRC: a wrong magic, a dedup length that does
   not match the record. */
typedef struct meta_edit {
    size_t at;
    int32_t add; /* added to the le32 at `at`; 0: the byte at `at` becomes 'X' */
} meta_edit;

static void edit_meta(uint8_t *rec, size_t len, void *user)
{
    const meta_edit *e = (const meta_edit *)user;
    if (e->add) opstate_put_le32(rec + e->at, opstate_get_le32(rec + e->at) + (uint32_t)e->add);
    else rec[e->at] = 'X';
    reseal(rec, len);
}

TEST(lmdb_store, crafted_meta_records_refused)
{
    static const struct {
        const char *name;
        meta_edit edit;
    } rows[] = {
        {"magic", {0, 0}},
        {"magic last byte", {3, 0}},
        {"dedup length + 1", {56, 1}},
        {"dedup length - 1", {56, -1}},
        {"dedup length huge", {56, 0x40000000}},
    };
    size_t i;
    for (i = 0; i < COUNT_OF(rows); i++) {
        fixture fx;
        opstate_kv *oracle = kv_new(NULL);
        meta_edit e = rows[i].edit;
        CASE(rows[i].name);
        REQUIRE(oracle);
        REQUIRE(fx_open(&fx));
        REQUIRE(make_store(&fx, "m", oracle));
        opstate_lmdb_close(fx.env);
        fx.env = NULL;
        CHECK(raw_edit(fx.dir, "s:m:meta", "meta", 4, edit_meta, &e) == 0);
        CHECK(reopen_and_load(&fx, "m") == OPSTATE_CORRUPT);
        fx_close(&fx);
        opstate_kv_destroy(oracle);
    }
}

/* Table records shorter than seq + time + CRC, with a valid CRC (over the
   key and the bytes before it). */
TEST(lmdb_store, crafted_short_table_records_refused)
{
    static const size_t lens[] = {0, 2, 4, 8, 19};
    static const char key[] = "k-short";
    size_t i;
    for (i = 0; i < COUNT_OF(lens); i++) {
        fixture fx;
        opstate_kv *oracle = kv_new(NULL);
        uint8_t rec[20];
        char label[32];
        snprintf(label, sizeof label, "%lu bytes", (unsigned long)lens[i]);
        CASE(label);
        REQUIRE(oracle);
        memset(rec, 0, sizeof rec);
        if (lens[i] >= 4)
            opstate_put_le32(rec + lens[i] - 4, opstate_crc32c(opstate_crc32c(0, key, sizeof key - 1), rec, lens[i] - 4));
        REQUIRE(fx_open(&fx));
        REQUIRE(make_store(&fx, "t", oracle));
        opstate_lmdb_close(fx.env);
        fx.env = NULL;
        CHECK(raw_put(fx.dir, "s:t:table", key, sizeof key - 1, rec, lens[i]) == 0);
        CHECK(reopen_and_load(&fx, "t") == OPSTATE_CORRUPT);
        fx_close(&fx);
        opstate_kv_destroy(oracle);
    }
}

/* Appends one delta item (op, key, value, seq, time) at p; the bytes after it. */
static uint8_t *delta_item(uint8_t *p, uint32_t key_len, const char *key, uint32_t value_len, const char *value)
{
    size_t k = key ? strlen(key) : 0, v = value ? strlen(value) : 0;
    *p++ = (uint8_t)OPSTATE_OP_PUT;
    opstate_put_le32(p, key_len);
    memcpy(p + 4, key, k);
    p += 4 + k;
    opstate_put_le32(p, value_len);
    if (v) memcpy(p + 4, value, v);
    p += 4 + v;
    opstate_put_le64(p, 30);
    opstate_put_le64(p + 8, 30);
    return p + 16;
}

/* Delta records with a valid CRC (sealed the way the store's own record
   is: with or without its key) and a wrong structure. */
TEST(lmdb_store, crafted_delta_records_refused)
{
    enum { COUNT_BEYOND, TRAILING, KEY_LEN, VALUE_LEN, SHORT_ITEM, SHORT_RECORD, ROWS };
    static const char *const names[ROWS] = {"count beyond the items", "bytes after the items", "key length past the end",
                                            "value length past the end", "item shorter than its fixed part",
                                            "record shorter than count + CRC"};
    int row;
    for (row = 0; row < ROWS; row++) {
        fixture fx;
        opstate_kv *oracle = kv_new(NULL);
        uint8_t key[64], old[4096], rec[256], *p = rec + 4;
        size_t klen = 0, olen = 0, len;
        uint32_t flags, count = 1, seed;
        bool keyed;
        CASE(names[row]);
        REQUIRE(oracle);
        REQUIRE(fx_open(&fx));
        REQUIRE(make_store(&fx, "d", oracle));
        opstate_lmdb_close(fx.env);
        fx.env = NULL;
        REQUIRE(raw_first(fx.dir, "s:d:deltas", key, &klen, old, &olen, sizeof old) == 0);
        REQUIRE(olen >= 8);
        /* the store's own record says which flags and which CRC it uses */
        flags = opstate_get_le32(old) & 0xff000000u;
        keyed = opstate_crc32c(opstate_crc32c(0, key, klen), old, olen - 4) == opstate_get_le32(old + olen - 4);
        REQUIRE(keyed || opstate_crc32c(0, old, olen - 4) == opstate_get_le32(old + olen - 4));
        switch (row) {
        case COUNT_BEYOND: count = 2; p = delta_item(p, 7, "k-00003", 1, "v"); break;
        case TRAILING: p = delta_item(p, 7, "k-00003", 1, "v"); memset(p, 0, 3); p += 3; break;
        case KEY_LEN: p = delta_item(p, 0x7ffffff0u, "k", 1, "v"); break;
        case VALUE_LEN: p = delta_item(p, 7, "k-00003", 0x7ffffff0u, "v"); break;
        case SHORT_ITEM: /* 24 of the 25 fixed bytes; its key length reaches far */
            *p = (uint8_t)OPSTATE_OP_PUT;
            opstate_put_le32(p + 1, 0x7ffffff0u);
            memset(p + 5, 0, 19);
            p += 24;
            break;
        default: break;
        }
        len = (size_t)(p - rec) + 4;
        opstate_put_le32(rec, count | flags);
        seed = keyed ? opstate_crc32c(0, key, klen) : 0;
        opstate_put_le32(rec + len - 4, opstate_crc32c(seed, rec, len - 4));
        if (row == SHORT_RECORD) len = 2;
        CHECK(raw_put(fx.dir, "s:d:deltas", key, klen, rec, len) == 0);
        CHECK(reopen_and_load(&fx, "d") == OPSTATE_CORRUPT);
        /* and a compaction refuses it too */
        {
            opstate_lmdb_store *st = NULL;
            opstate_result r = store_open(fx.env, "d", false, 1000, &st, NULL);
            if (r == OPSTATE_OK) r = opstate_lmdb_store_compact(st, NULL);
            CHECK(r == OPSTATE_CORRUPT);
            opstate_lmdb_store_close(st);
        }
        CHECK(reopen_and_load(&fx, "d") == OPSTATE_CORRUPT);
        fx_close(&fx);
        opstate_kv_destroy(oracle);
    }
}

/* A compaction checks every record it folds: a delta that fails its CRC,
   or a meta record damaged since the store was opened, stops it with
   CORRUPT, and the damage is still there to see afterwards (never sealed
   again under a fresh checksum). */
TEST(lmdb_store, compaction_refuses_damaged_records)
{
    static const struct {
        const char *name, *db, *key;
        size_t at;
    } rows[] = {
        {"delta item byte", "s:k:deltas", NULL, 9},
        {"delta crc byte", "s:k:deltas", NULL, 100000},
        {"meta position byte", "s:k:meta", "meta", 13},
        {"meta crc byte", "s:k:meta", "meta", 100000},
    };
    size_t i;
    for (i = 0; i < COUNT_OF(rows); i++) {
        fixture fx;
        opstate_lmdb_store *st = NULL;
        opstate_kv *oracle = kv_new(NULL);
        opstate_error err;
        size_t at = rows[i].at;
        uint32_t count = 0;
        uint64_t bytes = 0;
        CASE(rows[i].name);
        REQUIRE(oracle);
        REQUIRE(fx_open(&fx));
        REQUIRE(make_store(&fx, "k", oracle));
        REQUIRE(store_open(fx.env, "k", false, 1000, &st, NULL) == OPSTATE_OK);
        opstate_lmdb_store_deltas(st, &count, &bytes);
        CHECK_EQ_U64(count, 1); /* there is something to compact */
        /* damaged by another process while this one has the store open */
        CHECK(raw_edit_in_child(fx.dir, rows[i].db, rows[i].key, rows[i].key ? strlen(rows[i].key) : 0, flip_at, &at) ==
              0);
        memset(&err, 0, sizeof err);
        CHECK(opstate_lmdb_store_compact(st, &err) == OPSTATE_CORRUPT);
        CHECK(err.result == OPSTATE_CORRUPT);
        opstate_lmdb_store_close(st);
        CHECK(reopen_and_load(&fx, "k") == OPSTATE_CORRUPT);
        fx_close(&fx);
        opstate_kv_destroy(oracle);
    }
}

/* A blob record shorter than its CRC. */
TEST(lmdb_store, crafted_short_blob_refused)
{
    static const size_t lens[] = {0, 1, 3};
    size_t i;
    for (i = 0; i < COUNT_OF(lens); i++) {
        fixture fx;
        opstate_lmdb_store *st = NULL;
        opstate_snapshot_meta m = smeta(1, 5, 5, 1);
        opstate_error err;
        blob_got g;
        uint8_t rec[4] = {0, 0, 0, 0};
        char label[32];
        snprintf(label, sizeof label, "%lu bytes", (unsigned long)lens[i]);
        CASE(label);
        REQUIRE(fx_open(&fx));
        REQUIRE(store_open(fx.env, "b", false, 0, &st, NULL) == OPSTATE_OK);
        CHECK(opstate_lmdb_blob_save(st, str("state"), &m, NULL) == OPSTATE_OK);
        opstate_lmdb_store_close(st);
        st = NULL;
        opstate_lmdb_close(fx.env);
        fx.env = NULL;
        CHECK(raw_put(fx.dir, "s:b:meta", "blob", 4, rec, lens[i]) == 0);
        REQUIRE(fx_reopen(&fx));
        REQUIRE(store_open(fx.env, "b", false, 0, &st, NULL) == OPSTATE_OK);
        memset(&g, 0, sizeof g);
        memset(&err, 0, sizeof err);
        CHECK(opstate_lmdb_blob_load(st, blob_cb, &g, &err) == OPSTATE_CORRUPT);
        CHECK_EQ_U64(g.calls, 0);
        opstate_lmdb_store_close(st);
        fx_close(&fx);
    }
}
