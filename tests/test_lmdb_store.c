/* test_lmdb_store.c — the LMDB companion: the environment (suite lmdb_env),
   the snapshot store (lmdb_store), the embedded log (lmdb_log) and
   export / import (lmdb_export).

   Every test works in its own mkdtemp directory under /tmp and removes it
   at the end. Stored records are tampered with through raw mdb_* calls,
   only while no opstate environment of this process is open on the path
   (or from a forked child, which is a process of its own). Expected states
   come from a memory-only fold fed the same operations (the oracle), never
   from the store itself. */
#include <stdlib.h>
#include <errno.h>
#include <time.h>
#include <fcntl.h>
#include <unistd.h>
#include <dirent.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <signal.h>
#include <lmdb.h>

#include "runner.h"
#include "../opstate_lmdb.h"
#include "test_bytes.h"

/* ---------------------------------------------------------------- helpers */

static opstate_snapshot_meta smeta(uint32_t schema, uint64_t seq, int64_t time, uint64_t epoch)
{
    opstate_snapshot_meta m;
    m.schema_version = schema;
    m.position.seq = seq;
    m.position.time = time;
    m.position.epoch = epoch;
    return m;
}

static opstate_id mkid(uint8_t n)
{
    opstate_id id;
    memset(&id, 0, sizeof id);
    id.bytes[0] = n;
    id.bytes[6] = 0x70; /* version 7 */
    id.bytes[8] = 0x80;
    id.bytes[15] = (uint8_t)(n * 7u + 1u);
    return id;
}

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void sleep_ms(long ms)
{
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000L;
    nanosleep(&ts, NULL);
}

/* A fresh directory /tmp/opstate-lmdb-XXXXXX; "" on failure. */
static void tmp_dir(char out[64])
{
    strcpy(out, "/tmp/opstate-lmdb-XXXXXX");
    if (!mkdtemp(out)) out[0] = '\0';
}

/* Removes a file or a directory tree (no symlinks followed). */
static void rm_rf(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0) return;
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        struct dirent *ent;
        char child[4096];
        while (d && (ent = readdir(d)) != NULL) {
            if (!strcmp(ent->d_name, ".") || !strcmp(ent->d_name, "..")) continue;
            snprintf(child, sizeof child, "%s/%s", path, ent->d_name);
            rm_rf(child);
        }
        if (d) closedir(d);
        rmdir(path);
    } else {
        unlink(path);
    }
}

static void join(char *out, size_t cap, const char *dir, const char *file)
{
    snprintf(out, cap, "%s/%s", dir, file);
}

static opstate_result env_open(const char *path, size_t map, size_t max, opstate_lmdb **out, opstate_error *err)
{
    opstate_lmdb_config c;
    memset(&c, 0, sizeof c);
    c.path = path;
    c.map_size = map;
    c.max_map_size = max;
    c.durability = OPSTATE_LMDB_SYNC_NONE; /* tests never cut the power */
    return opstate_lmdb_open(&c, out, err);
}

static opstate_result store_open(opstate_lmdb *env, const char *name, bool rt, uint32_t flushes,
                                 opstate_lmdb_store **out, opstate_error *err)
{
    opstate_lmdb_store_config c;
    memset(&c, 0, sizeof c);
    c.name = name;
    c.read_through = rt;
    c.compact_flushes = flushes;
    c.compact_bytes = (uint64_t)1 << 40;
    c.no_compact_on_close = true; /* these tests look at the deltas a close leaves */
    return opstate_lmdb_store_open(env, &c, out, err);
}

static opstate_kv *kv_new(const opstate_kv_base *base)
{
    opstate_kv_config c;
    opstate_kv *kv = NULL;
    memset(&c, 0, sizeof c);
    c.base = base;
    if (opstate_kv_create(&c, &kv) != OPSTATE_OK) return NULL;
    return kv;
}

/* A dump of a fold: every live item (key, value, seq, time) in key order,
   as bytes, so two folds compare with one memcmp. */
typedef struct dump {
    uint8_t *p;
    size_t len, cap;
    bool oom;
} dump;

static void dump_add(dump *d, const void *p, size_t n)
{
    if (d->oom) return;
    if (d->len + n > d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 4096;
        uint8_t *q;
        while (cap < d->len + n) cap *= 2;
        if (!(q = (uint8_t *)realloc(d->p, cap))) {
            d->oom = true;
            return;
        }
        d->p = q;
        d->cap = cap;
    }
    if (n) memcpy(d->p + d->len, p, n);
    d->len += n;
}

static bool dump_item(void *user, const opstate_kv_item *it)
{
    dump *d = (dump *)user;
    uint8_t h[24];
    opstate_put_le32(h, (uint32_t)it->key.len);
    opstate_put_le32(h + 4, (uint32_t)it->value.len);
    opstate_put_le64(h + 8, it->position.seq);
    opstate_put_le64(h + 16, (uint64_t)it->position.time);
    dump_add(d, h, sizeof h);
    dump_add(d, it->key.ptr, it->key.len);
    dump_add(d, it->value.ptr, it->value.len);
    return true;
}

/* true when both folds hold exactly the same items (and iterate cleanly). */
static bool same_state(const opstate_kv *a, const opstate_kv *b)
{
    dump da, db;
    bool same;
    memset(&da, 0, sizeof da);
    memset(&db, 0, sizeof db);
    same = opstate_kv_iterate(a, dump_item, &da) == OPSTATE_OK && opstate_kv_iterate(b, dump_item, &db) == OPSTATE_OK &&
           !da.oom && !db.oom && da.len == db.len && (da.len == 0 || memcmp(da.p, db.p, da.len) == 0) &&
           opstate_kv_count(a) == opstate_kv_count(b);
    free(da.p);
    free(db.p);
    return same;
}

/* Puts the same change into the fold under test and the oracle. */
static void put2(opstate_kv *kv, opstate_kv *oracle, const char *key, const char *value, uint64_t seq)
{
    opstate_kv_put(kv, str(key), str(value), pos(seq, (int64_t)seq * 1000));
    opstate_kv_put(oracle, str(key), str(value), pos(seq, (int64_t)seq * 1000));
}

static void del2(opstate_kv *kv, opstate_kv *oracle, const char *key, uint64_t seq)
{
    opstate_kv_delete(kv, str(key), pos(seq, (int64_t)seq * 1000));
    opstate_kv_delete(oracle, str(key), pos(seq, (int64_t)seq * 1000));
}

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

/* ------------------------------------------------------------------ env */

TEST(lmdb_env, open_creates_dir_and_files_0600)
{
    char base[64], path[128], f[192];
    opstate_lmdb *env = NULL;
    opstate_error err;
    struct stat st;
    tmp_dir(base);
    REQUIRE(base[0]);
    join(path, sizeof path, base, "env");
    REQUIRE(env_open(path, 0, 0, &env, &err) == OPSTATE_OK);
    CHECK(stat(path, &st) == 0 && S_ISDIR(st.st_mode));
    join(f, sizeof f, path, "data.mdb");
    CHECK(stat(f, &st) == 0 && (st.st_mode & 0777) == 0600);
    join(f, sizeof f, path, "lock.mdb");
    CHECK(stat(f, &st) == 0 && (st.st_mode & 0777) == 0600);
    opstate_lmdb_close(env);
    rm_rf(base);
}

TEST(lmdb_env, second_open_same_path_refused)
{
    char base[64], path[128], other[192], link[192];
    opstate_lmdb *env = NULL, *env2 = NULL;
    opstate_error err;
    tmp_dir(base);
    REQUIRE(base[0]);
    join(path, sizeof path, base, "env");
    join(link, sizeof link, base, "alias");
    REQUIRE(env_open(path, 0, 0, &env, &err) == OPSTATE_OK);
    REQUIRE(symlink(path, link) == 0);

    memset(&err, 0, sizeof err);
    CHECK(env_open(path, 0, 0, &env2, &err) == OPSTATE_ALREADY_OPEN);
    CHECK(err.result == OPSTATE_ALREADY_OPEN);
    snprintf(other, sizeof other, "%s/.", path);
    CHECK(env_open(other, 0, 0, &env2, NULL) == OPSTATE_ALREADY_OPEN);
    snprintf(other, sizeof other, "%s/../env/", path);
    CHECK(env_open(other, 0, 0, &env2, NULL) == OPSTATE_ALREADY_OPEN);
    CHECK(env_open(link, 0, 0, &env2, NULL) == OPSTATE_ALREADY_OPEN);

    opstate_lmdb_close(env);
    env = NULL;
    CHECK(env_open(link, 0, 0, &env, &err) == OPSTATE_OK); /* reopens after close */
    CHECK(env_open(path, 0, 0, &env2, NULL) == OPSTATE_ALREADY_OPEN);
    opstate_lmdb_close(env);
    CHECK(env_open(path, 0, 0, &env, &err) == OPSTATE_OK);
    opstate_lmdb_close(env);
    rm_rf(base);
}

/* Flushes `n` new keys of `vlen` bytes each (key "big-<i>") through the
   store interface; the oracle gets them only when the flush commits. */
static opstate_result flush_big(opstate_store *s, opstate_kv *kv, opstate_kv *oracle, unsigned first, unsigned n,
                                size_t vlen, uint8_t *val, opstate_error *err)
{
    opstate_snapshot_meta m;
    opstate_result r;
    unsigned i;
    char key[32];
    for (i = first; i < first + n; i++) {
        snprintf(key, sizeof key, "big-%04u", i);
        memset(val, (int)('a' + i % 26), vlen);
        opstate_put_le32(val, i);
        if (opstate_kv_put(kv, str(key), by(val, vlen), pos(i + 1, (int64_t)i)) != OPSTATE_OK) return OPSTATE_NO_MEMORY;
    }
    m = smeta(1, first + n, (int64_t)(first + n), 42);
    memset(err, 0, sizeof *err);
    r = s->flush(s->user, kv, &m, NULL, err);
    if (r == OPSTATE_OK)
        for (i = first; i < first + n; i++) {
            snprintf(key, sizeof key, "big-%04u", i);
            memset(val, (int)('a' + i % 26), vlen);
            opstate_put_le32(val, i);
            opstate_kv_put(oracle, str(key), by(val, vlen), pos(i + 1, (int64_t)i));
        }
    return r;
}

TEST(lmdb_env, map_grows_then_full_loses_nothing)
{
    const size_t mib = (size_t)1 << 20, vlen = 96 * 1024;
    char base[64];
    opstate_lmdb *env = NULL;
    opstate_lmdb_store *st = NULL;
    opstate_store s;
    opstate_kv *kv = kv_new(NULL), *oracle = kv_new(NULL), *loaded = NULL;
    opstate_snapshot_meta m, last_ok = smeta(0, 0, 0, 0);
    opstate_error err;
    opstate_result r = OPSTATE_OK;
    uint8_t *val = (uint8_t *)malloc(vlen);
    unsigned next = 0, flushes = 0;
    bool grew = false;
    tmp_dir(base);
    REQUIRE(base[0] && kv && oracle && val);
    REQUIRE(env_open(base, mib, 8 * mib, &env, &err) == OPSTATE_OK);
    CHECK_EQ_U64(opstate_lmdb_map_size(env), mib);
    REQUIRE(store_open(env, "big", false, 100000, &st, &err) == OPSTATE_OK);
    s = opstate_lmdb_store_iface(st);
    /* 4 keys of 96 KiB per flush: the map must grow 1 -> 2 -> 4 -> 8 MiB,
       then the next flush that does not fit fails with FULL. */
    while (flushes < 200) {
        r = flush_big(&s, kv, oracle, next, 4, vlen, val, &err);
        if (r != OPSTATE_OK) break;
        next += 4;
        flushes++;
        last_ok = smeta(1, next, (int64_t)next, 42);
        if (opstate_lmdb_map_size(env) > mib && !grew) {
            grew = true;
            /* everything flushed so far is still there after the growth */
            loaded = kv_new(NULL);
            REQUIRE(loaded);
            CHECK(s.load(s.user, loaded, &m, NULL, &err) == OPSTATE_OK);
            CHECK(same_state(loaded, oracle));
            CHECK_EQ_U64(m.position.seq, next);
            opstate_kv_destroy(loaded);
            loaded = NULL;
        }
    }
    CHECK(grew);
    CHECK(flushes >= 8); /* more than 1 MiB went in */
    CHECK(r == OPSTATE_FULL);
    CHECK(err.result == OPSTATE_FULL);
    CHECK(err.dep_status == MDB_MAP_FULL);
    CHECK_EQ_U64(opstate_lmdb_map_size(env), 8 * mib);
    CHECK(opstate_kv_dirty_count(kv) > 0); /* the failed flush left the fold dirty */
    /* the committed state is intact, now and after reopening */
    loaded = kv_new(NULL);
    REQUIRE(loaded);
    CHECK(s.load(s.user, loaded, &m, NULL, &err) == OPSTATE_OK);
    CHECK(same_state(loaded, oracle));
    opstate_kv_destroy(loaded);
    opstate_lmdb_store_close(st);
    opstate_lmdb_close(env);
    env = NULL;
    st = NULL;
    REQUIRE(env_open(base, mib, 8 * mib, &env, &err) == OPSTATE_OK);
    REQUIRE(store_open(env, "big", false, 100000, &st, &err) == OPSTATE_OK);
    s = opstate_lmdb_store_iface(st);
    loaded = kv_new(NULL);
    REQUIRE(loaded);
    CHECK(s.load(s.user, loaded, &m, NULL, &err) == OPSTATE_OK);
    CHECK(same_state(loaded, oracle));
    CHECK_EQ_U64(opstate_kv_count(loaded), next);
    CHECK_EQ_U64(m.position.seq, last_ok.position.seq);
    CHECK_EQ_U64(m.position.epoch, 42);
    opstate_kv_destroy(loaded);
    opstate_lmdb_store_close(st);
    opstate_lmdb_close(env);
    opstate_kv_destroy(kv);
    opstate_kv_destroy(oracle);
    free(val);
    rm_rf(base);
}

/* ---------------------------------------------------------------- store */

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
    CHECK(s.flush(s.user, kv, &m1, &w.d, &err) == OPSTATE_OK);
    CHECK_EQ_U64(opstate_kv_dirty_count(kv), 0);
    del2(kv, oracle, "b", 6);
    put2(kv, oracle, "c", "three", 7);
    put2(kv, oracle, "e", "5", 8);
    del2(kv, oracle, "never-there", 9);
    for (n = 4; n <= 5; n++) {
        id = mkid(n);
        opstate_dedup_insert(&w.d, &id);
    }
    CHECK(s.flush(s.user, kv, &m2, &w.d, &err) == OPSTATE_OK);

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
    CHECK(s.flush(s.user, kv, &m2, &w.d, &err) == OPSTATE_OK);
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

/* Fills kv and oracle with `n` keys "k-<i>" of 100-byte values. */
static void fill(opstate_kv *kv, opstate_kv *oracle, unsigned n, uint64_t seq0)
{
    char key[32], val[101];
    unsigned i;
    for (i = 0; i < n; i++) {
        snprintf(key, sizeof key, "k-%05u", i);
        memset(val, (int)('A' + i % 26), 100);
        val[100] = '\0';
        put2(kv, oracle, key, val, seq0 + i);
    }
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
    CHECK(s.flush(s.user, kv, &m, NULL, &err) == OPSTATE_OK);
    CHECK(opstate_lmdb_store_compact(st, NULL, &err) == OPSTATE_OK); /* the 300 keys go to the table */
    opstate_lmdb_store_deltas(st, &dcount, &dbytes);
    CHECK_EQ_U64(dcount, 0);
    CHECK_EQ_U64(dbytes, 0);
    /* deltas over the table: an overwrite, a delete, a new key */
    put2(kv, oracle, "k-00007", "seven", 301);
    del2(kv, oracle, "k-00100", 302);
    put2(kv, oracle, "zz-new", "new", 303);
    m.position.seq = 303;
    CHECK(s.flush(s.user, kv, &m, NULL, &err) == OPSTATE_OK);
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

/* Compaction every 4 flushes, in both modes: the state never changes. */
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
        CHECK(s.flush(s.user, kv, &m, NULL, &err) == OPSTATE_OK);
    }
    CHECK(opstate_lmdb_store_compact(st, kv, &err) == OPSTATE_OK);
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
            CHECK(s.flush(s.user, kv, &m, NULL, &err) == OPSTATE_OK);
            opstate_lmdb_store_deltas(st, &dcount, &dbytes);
            CHECK_EQ_U64(dcount, round % 4); /* compacted at the 4th and 8th flush */
            if (dcount == 0) CHECK_EQ_U64(dbytes, 0);
            CHECK(same_state(kv, oracle)); /* the live fold still sees everything */
            loaded = kv_new(s.base(s.user));
            REQUIRE(loaded);
            CHECK(s.load(s.user, loaded, &got, NULL, &err) == OPSTATE_OK);
            CHECK(same_state(loaded, oracle));
            CHECK_EQ_U64(got.position.seq, m.position.seq);
            opstate_kv_destroy(loaded);
        }
        /* compaction refuses a dirty fold, then works once it is flushed */
        put2(kv, oracle, "dirty", "x", 200);
        memset(&err, 0, sizeof err);
        CHECK(opstate_lmdb_store_compact(st, kv, &err) == OPSTATE_INVALID_ARGUMENT);
        CHECK(err.result == OPSTATE_INVALID_ARGUMENT);
        opstate_lmdb_store_deltas(st, &dcount, &dbytes);
        CHECK_EQ_U64(dcount, 1);
        m.position.seq = 200;
        CHECK(s.flush(s.user, kv, &m, NULL, &err) == OPSTATE_OK);
        CHECK(opstate_lmdb_store_compact(st, kv, &err) == OPSTATE_OK);
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
    CHECK(s.flush(s.user, kv, &m, NULL, &err) == OPSTATE_OK);
    put2(kv, oracle, "x", "y", 5);
    CHECK(s.flush(s.user, kv, &m, NULL, &err) == OPSTATE_OK); /* compacted: table + no deltas */
    put2(kv, oracle, "z", "y", 6);
    CHECK(s.flush(s.user, kv, &m, NULL, &err) == OPSTATE_OK); /* one delta pending */
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
    CHECK(s.flush(s.user, kv, &m, NULL, &err) == OPSTATE_OK);
    CHECK(s.load(s.user, loaded, &got, NULL, &err) == OPSTATE_OK);
    CHECK_EQ_U64(opstate_kv_count(loaded), 1);
    CHECK(same_state(loaded, kv));
    opstate_lmdb_store_close(st);
    fx_close(&fx);
    opstate_kv_destroy(kv);
    opstate_kv_destroy(oracle);
    opstate_kv_destroy(loaded);
}

/* Writes a layout-0 store: "s:<name>:meta" / "snapshot" = snapshot bytes. */
static int write_layout0(const char *path, const char *name, const opstate_kv *kv, const opstate_snapshot_meta *m)
{
    MDB_env *env = NULL;
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_val k, v;
    char db[96];
    size_t len = 0;
    uint8_t *buf;
    int rc;
    if (opstate_snapshot_encode(kv, m, NULL, NULL, 0, &len, NULL) != OPSTATE_OK) return -1;
    if (!(buf = (uint8_t *)malloc(len))) return ENOMEM;
    if (opstate_snapshot_encode(kv, m, NULL, buf, len, &len, NULL) != OPSTATE_OK) {
        free(buf);
        return -1;
    }
    snprintf(db, sizeof db, "s:%s:meta", name);
    if ((rc = raw_open(path, &env)) == 0) {
        if ((rc = mdb_txn_begin(env, NULL, 0, &txn)) == 0) {
            if ((rc = mdb_dbi_open(txn, db, MDB_CREATE, &dbi)) == 0) {
                k.mv_data = (void *)(uintptr_t)"snapshot";
                k.mv_size = 8;
                v.mv_data = buf;
                v.mv_size = len;
                rc = mdb_put(txn, dbi, &k, &v, 0);
            }
            if (rc == 0) rc = mdb_txn_commit(txn);
            else mdb_txn_abort(txn);
        }
        mdb_env_close(env);
    }
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
    REQUIRE(write_layout0(dir, "legacy", oracle, &m) == 0);
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
        ok = s.flush(s.user, kv, &m, NULL, NULL) == OPSTATE_OK && opstate_lmdb_store_compact(st, NULL, NULL) == OPSTATE_OK;
        put2(kv, oracle, "k-00003", "changed", 21);
        del2(kv, oracle, "k-00004", 22);
        m.position.seq = 22;
        ok = ok && s.flush(s.user, kv, &m, NULL, NULL) == OPSTATE_OK;
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

/* Forked children report one byte through a pipe, then wait to be killed
   by the parent: no atexit handler of the test program runs in them, and
   valgrind makes no leak report for the parent's heap they inherited. */
static void child_finish(int fd, int code)
{
    unsigned char c = (unsigned char)code;
    if (write(fd, &c, 1) == 1) close(fd);
    for (;;) pause();
}

/* Waits for a child started with a pipe and ends it; its code, or -1. */
static int child_wait(pid_t pid, int fd)
{
    unsigned char c = 0;
    ssize_t n;
    int status;
    do n = read(fd, &c, 1);
    while (n < 0 && errno == EINTR);
    close(fd);
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return n == 1 ? (int)c : -1;
}

/* Runs a raw edit in a forked child (its own process, its own raw
   environment) while this process keeps its environment open. */
static int raw_edit_in_child(const char *path, const char *db, const void *key, size_t klen, raw_edit_fn fn,
                             void *user)
{
    int fds[2];
    pid_t pid;
    if (pipe(fds) != 0) return -1;
    fflush(stdout);
    pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        close(fds[0]);
        child_finish(fds[1], raw_edit(path, db, key, klen, fn, user) == 0 ? 0 : 1);
    }
    close(fds[1]);
    return child_wait(pid, fds[0]);
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
    CHECK(s.flush(s.user, kv, &m, NULL, &err) == OPSTATE_OK);
    /* 512 is not: the whole flush fails and nothing changes */
    REQUIRE(opstate_kv_put(kv, str("small"), str("s"), pos(2, 2)) == OPSTATE_OK);
    REQUIRE(opstate_kv_put(kv, by(key, 512), str("too long"), pos(3, 3)) == OPSTATE_OK);
    m.position.seq = 3;
    memset(&err, 0, sizeof err);
    CHECK(s.flush(s.user, kv, &m, NULL, &err) == OPSTATE_OVERSIZED);
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

/* ------------------------------------------------------------------ log */

typedef struct logfx {
    char dir[64];
    opstate_lmdb *env;
    opstate_lmdb_log *lg;
    opstate_log log;
    int64_t now; /* the controlled clock */
} logfx;

static int64_t fake_clock(void *user) { return ((logfx *)user)->now; }

static bool lfx_open(logfx *fx, const opstate_lmdb_log_config *cfg_in)
{
    opstate_lmdb_log_config cfg;
    if (cfg_in) cfg = *cfg_in;
    else memset(&cfg, 0, sizeof cfg);
    if (!cfg.clock) {
        cfg.clock = fake_clock;
        cfg.clock_user = fx;
    }
    fx->env = NULL;
    fx->lg = NULL;
    if (!fx->now) fx->now = 1000;
    tmp_dir(fx->dir);
    if (!fx->dir[0] || env_open(fx->dir, 0, 0, &fx->env, NULL) != OPSTATE_OK) return false;
    if (opstate_lmdb_log_open(fx->env, &cfg, &fx->lg, NULL) != OPSTATE_OK) return false;
    fx->log = opstate_lmdb_log_iface(fx->lg);
    return true;
}

/* Reopens the fixture's log read-only: another process may then write it
   (one writer process per environment). */
static bool lfx_reopen_read_only(logfx *fx, size_t map)
{
    opstate_lmdb_config c;
    opstate_lmdb_log_close(fx->lg);
    opstate_lmdb_close(fx->env);
    memset(&c, 0, sizeof c);
    c.path = fx->dir;
    c.map_size = map;
    c.access = OPSTATE_LMDB_READ_ONLY;
    fx->lg = NULL;
    if (opstate_lmdb_open(&c, &fx->env, NULL) != OPSTATE_OK) return false;
    if (opstate_lmdb_log_open(fx->env, NULL, &fx->lg, NULL) != OPSTATE_OK) return false;
    fx->log = opstate_lmdb_log_iface(fx->lg);
    return true;
}

static void lfx_close(logfx *fx)
{
    opstate_lmdb_log_close(fx->lg);
    opstate_lmdb_close(fx->env);
    if (fx->dir[0]) rm_rf(fx->dir);
}

static opstate_result app(logfx *fx, const char *subject, const char *data, const opstate_append_options *o,
                          opstate_append_result *out)
{
    opstate_append_result tmp;
    return fx->log.append(fx->log.user, str(subject), str(data), o, out ? out : &tmp, NULL);
}

/* Seqs of a read, as a string "1,2,3" (so a mismatch prints usefully in
   a CHECK_STR-style comparison). */
static void read_seqs(logfx *fx, const char *filter, uint64_t from, char *out, size_t cap)
{
    opstate_log_message msgs[64];
    size_t n = 0, i, at = 0;
    out[0] = '\0';
    if (fx->log.read(fx->log.user, str(filter), from, 0, msgs, 64, &n, NULL) != OPSTATE_OK) {
        snprintf(out, cap, "error");
        return;
    }
    for (i = 0; i < n && at < cap; i++)
        at += (size_t)snprintf(out + at, cap - at, i ? ",%lu" : "%lu", (unsigned long)msgs[i].position.seq);
}

TEST(lmdb_log, append_assigns_sequences)
{
    logfx fx;
    opstate_append_result res;
    opstate_stream_info info;
    opstate_log_message msgs[8];
    size_t n = 0;
    int i;
    memset(&fx, 0, sizeof fx);
    REQUIRE(lfx_open(&fx, NULL));
    CHECK(fx.log.info(fx.log.user, &info, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(info.last_seq, 0);
    CHECK_EQ_U64(info.messages, 0);
    CHECK(info.epoch != 0);
    for (i = 1; i <= 5; i++) {
        fx.now = 1000 + i;
        CHECK(app(&fx, "a.b", "payload", NULL, &res) == OPSTATE_OK);
        CHECK_EQ_U64(res.seq, (uint64_t)i);
        CHECK(!res.duplicate);
    }
    CHECK(fx.log.info(fx.log.user, &info, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(info.first_seq, 1);
    CHECK_EQ_U64(info.last_seq, 5);
    CHECK_EQ_U64(info.messages, 5);
    CHECK_EQ_U64(info.first_time, 1001);
    CHECK_EQ_U64(info.last_time, 1005);
    CHECK(fx.log.read(fx.log.user, str(""), 2, 0, msgs, 2, &n, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(n, 2);
    if (n == 2) {
        CHECK_EQ_U64(msgs[0].position.seq, 2);
        CHECK_EQ_U64(msgs[0].position.time, 1002);
        CHECK_EQ_U64(msgs[0].position.epoch, info.epoch);
        CHECK(msgs[0].subject.len == 3 && memcmp(msgs[0].subject.ptr, "a.b", 3) == 0);
        CHECK(msgs[0].data.len == 7 && memcmp(msgs[0].data.ptr, "payload", 7) == 0);
        CHECK_EQ_U64(msgs[1].position.seq, 3);
    }
    CHECK(fx.log.read(fx.log.user, str(""), 6, 0, msgs, 8, &n, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(n, 0);
    /* bad subjects */
    CHECK(fx.log.append(fx.log.user, str(""), str("x"), NULL, &res, NULL) == OPSTATE_INVALID_ARGUMENT);
    CHECK(fx.log.append(fx.log.user, by("a\0b", 3), str("x"), NULL, &res, NULL) == OPSTATE_INVALID_ARGUMENT);
    /* survives a restart: the next append is 6 */
    opstate_lmdb_log_close(fx.lg);
    opstate_lmdb_close(fx.env);
    fx.lg = NULL;
    REQUIRE(env_open(fx.dir, 0, 0, &fx.env, NULL) == OPSTATE_OK);
    REQUIRE(opstate_lmdb_log_open(fx.env, NULL, &fx.lg, NULL) == OPSTATE_OK);
    fx.log = opstate_lmdb_log_iface(fx.lg);
    CHECK(app(&fx, "a.b", "after restart", NULL, &res) == OPSTATE_OK);
    CHECK_EQ_U64(res.seq, 6);
    lfx_close(&fx);
}

TEST(lmdb_log, duplicate_id_returns_original)
{
    logfx fx;
    opstate_append_result res;
    opstate_append_options o;
    opstate_stream_info info;
    opstate_id a = mkid(1), b = mkid(2);
    memset(&fx, 0, sizeof fx);
    REQUIRE(lfx_open(&fx, NULL));
    memset(&o, 0, sizeof o);
    o.msg_id = &a;
    CHECK(app(&fx, "s.1", "first", &o, &res) == OPSTATE_OK);
    CHECK(res.seq == 1 && !res.duplicate);
    CHECK(app(&fx, "s.2", "other", NULL, &res) == OPSTATE_OK);
    CHECK_EQ_U64(res.seq, 2);
    res.seq = 99;
    CHECK(app(&fx, "s.1", "first again", &o, &res) == OPSTATE_OK);
    CHECK(res.duplicate);
    CHECK_EQ_U64(res.seq, 1);
    o.msg_id = &b;
    CHECK(app(&fx, "s.1", "new id", &o, &res) == OPSTATE_OK);
    CHECK(res.seq == 3 && !res.duplicate);
    CHECK(fx.log.info(fx.log.user, &info, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(info.last_seq, 3);
    CHECK_EQ_U64(info.messages, 3);
    lfx_close(&fx);
}

TEST(lmdb_log, duplicate_window_bounded)
{
    logfx fx;
    opstate_lmdb_log_config cfg;
    opstate_append_result res;
    opstate_append_options o;
    opstate_id ids[6];
    uint8_t i;
    memset(&fx, 0, sizeof fx);
    memset(&cfg, 0, sizeof cfg);
    cfg.duplicate_window = 3;
    REQUIRE(lfx_open(&fx, &cfg));
    memset(&o, 0, sizeof o);
    for (i = 0; i < 6; i++) {
        ids[i] = mkid((uint8_t)(i + 10));
        o.msg_id = &ids[i];
        CHECK(app(&fx, "w", "x", &o, &res) == OPSTATE_OK);
        CHECK_EQ_U64(res.seq, i + 1u);
    }
    o.msg_id = &ids[5];
    CHECK(app(&fx, "w", "x", &o, &res) == OPSTATE_OK && res.duplicate && res.seq == 6);
    o.msg_id = &ids[3];
    CHECK(app(&fx, "w", "x", &o, &res) == OPSTATE_OK && res.duplicate && res.seq == 4);
    o.msg_id = &ids[0]; /* fell out of the window of 3 */
    CHECK(app(&fx, "w", "x", &o, &res) == OPSTATE_OK && !res.duplicate && res.seq == 7);
    lfx_close(&fx);
}

TEST(lmdb_log, expected_last_subject_seq)
{
    logfx fx;
    opstate_append_result res;
    opstate_append_options o;
    opstate_error err;
    opstate_stream_info info;
    memset(&fx, 0, sizeof fx);
    REQUIRE(lfx_open(&fx, NULL));
    memset(&o, 0, sizeof o);
    o.expect_last_subject_seq = true;
    o.last_subject_seq = 0; /* must be new */
    CHECK(app(&fx, "acct.1", "open", &o, &res) == OPSTATE_OK);
    CHECK_EQ_U64(res.seq, 1);
    CHECK(app(&fx, "acct.2", "open", &o, &res) == OPSTATE_OK);
    CHECK_EQ_U64(res.seq, 2);
    memset(&err, 0, sizeof err);
    CHECK(fx.log.append(fx.log.user, str("acct.1"), str("again"), &o, &res, &err) == OPSTATE_CONFLICT);
    CHECK(err.result == OPSTATE_CONFLICT);
    o.last_subject_seq = 2; /* the stream's last, not the subject's */
    CHECK(app(&fx, "acct.1", "x", &o, &res) == OPSTATE_CONFLICT);
    o.last_subject_seq = 1;
    CHECK(app(&fx, "acct.1", "deposit", &o, &res) == OPSTATE_OK);
    CHECK_EQ_U64(res.seq, 3);
    CHECK(app(&fx, "acct.1", "stale", &o, &res) == OPSTATE_CONFLICT); /* 1 is no longer the last */
    o.last_subject_seq = 3;
    CHECK(app(&fx, "acct.1", "ok", &o, &res) == OPSTATE_OK);
    CHECK_EQ_U64(res.seq, 4);
    /* without the flag anything goes */
    CHECK(app(&fx, "acct.1", "free", NULL, &res) == OPSTATE_OK);
    CHECK_EQ_U64(res.seq, 5);
    CHECK(fx.log.info(fx.log.user, &info, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(info.messages, 5); /* conflicts wrote nothing */
    CHECK_EQ_U64(info.last_seq, 5);
    lfx_close(&fx);
}

TEST(lmdb_log, read_filters)
{
    static const struct {
        const char *filter, *want;
        uint64_t from;
    } rows[] = {
        {"", "1,2,3,4,5,6,7", 1},
        {">", "1,2,3,4,5,6,7", 1},
        {"orders.>", "1,2,4,6", 1},
        {"orders.*", "", 1},
        {"orders.*.1", "1,4", 1},
        {"orders.eu.*", "1,2", 1},
        {"orders.eu.>", "1,2,6", 1},
        {"*.eu.*", "1,2,5", 1},
        {"users.x", "3", 1},
        {"users.*", "3", 1},
        {"*", "7", 1},
        {"orders.>", "4,6", 3},
        {"nomatch.>", "", 1},
        {"", "7", 7},
        {"", "", 8},
    };
    static const char *subjects[] = {"orders.eu.1", "orders.eu.2", "users.x", "orders.us.1",
                                     "stock.eu.9", "orders.eu.3.x", "single"};
    logfx fx;
    size_t i;
    char got[128];
    memset(&fx, 0, sizeof fx);
    REQUIRE(lfx_open(&fx, NULL));
    for (i = 0; i < COUNT_OF(subjects); i++) CHECK(app(&fx, subjects[i], "d", NULL, NULL) == OPSTATE_OK);
    for (i = 0; i < COUNT_OF(rows); i++) {
        CASE(rows[i].filter);
        read_seqs(&fx, rows[i].filter, rows[i].from, got, sizeof got);
        CHECK_STR(got, rows[i].want);
    }
    CASE(NULL);
    {
        /* max bounds the batch; the rest comes from the next from_seq */
        opstate_log_message msgs[2];
        size_t n = 0;
        CHECK(fx.log.read(fx.log.user, str("orders.>"), 1, 0, msgs, 2, &n, NULL) == OPSTATE_OK);
        CHECK(n == 2 && msgs[0].position.seq == 1 && msgs[1].position.seq == 2);
        CHECK(fx.log.read(fx.log.user, str("orders.>"), 3, 0, msgs, 2, &n, NULL) == OPSTATE_OK);
        CHECK(n == 2 && msgs[0].position.seq == 4 && msgs[1].position.seq == 6);
    }
    lfx_close(&fx);
}

/* last_per_subject as "subject=seq;..." in the order it calls back. */
typedef struct lps_ctx {
    char out[256];
    size_t at;
} lps_ctx;

static void lps_visit(void *user, const opstate_log_message *msg)
{
    lps_ctx *c = (lps_ctx *)user;
    if (c->at < sizeof c->out)
        c->at += (size_t)snprintf(c->out + c->at, sizeof c->out - c->at, "%.*s=%lu;", (int)msg->subject.len,
                                  (const char *)msg->subject.ptr, (unsigned long)msg->position.seq);
}

static void lps(logfx *fx, const char *filter, char *out, size_t cap)
{
    lps_ctx c;
    memset(&c, 0, sizeof c);
    if (fx->log.last_per_subject(fx->log.user, str(filter), lps_visit, &c, NULL) != OPSTATE_OK)
        snprintf(c.out, sizeof c.out, "error");
    c.out[cap - 1] = '\0'; /* cap <= sizeof c.out */
    memcpy(out, c.out, cap);
}

TEST(lmdb_log, retention_max_messages)
{
    logfx fx;
    opstate_lmdb_log_config cfg;
    opstate_stream_info info;
    char got[128];
    int i;
    memset(&fx, 0, sizeof fx);
    memset(&cfg, 0, sizeof cfg);
    cfg.max_messages = 3;
    REQUIRE(lfx_open(&fx, &cfg));
    for (i = 0; i < 5; i++) CHECK(app(&fx, i % 2 ? "odd" : "even", "d", NULL, NULL) == OPSTATE_OK);
    CHECK(fx.log.info(fx.log.user, &info, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(info.first_seq, 3);
    CHECK_EQ_U64(info.last_seq, 5);
    CHECK_EQ_U64(info.messages, 3);
    read_seqs(&fx, "", 1, got, sizeof got);
    CHECK_STR(got, "3,4,5");
    lps(&fx, "", got, sizeof got);
    CHECK_STR(got, "even=5;odd=4;");
    CHECK(app(&fx, "odd", "d", NULL, NULL) == OPSTATE_OK);
    CHECK(fx.log.info(fx.log.user, &info, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(info.first_seq, 4);
    CHECK_EQ_U64(info.messages, 3);
    lfx_close(&fx);
}

TEST(lmdb_log, retention_max_per_subject)
{
    static const char *subjects[] = {"a", "a", "b", "a", "b", "b", "c"};
    logfx fx;
    opstate_lmdb_log_config cfg;
    opstate_stream_info info;
    opstate_append_options o;
    char got[128];
    size_t i;
    memset(&fx, 0, sizeof fx);
    memset(&cfg, 0, sizeof cfg);
    cfg.max_per_subject = 2;
    REQUIRE(lfx_open(&fx, &cfg));
    for (i = 0; i < COUNT_OF(subjects); i++) CHECK(app(&fx, subjects[i], "d", NULL, NULL) == OPSTATE_OK);
    /* a: 1,2,4 -> 2,4; b: 3,5,6 -> 5,6; c: 7 */
    CHECK(fx.log.info(fx.log.user, &info, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(info.first_seq, 2);
    CHECK_EQ_U64(info.last_seq, 7);
    CHECK_EQ_U64(info.messages, 5);
    read_seqs(&fx, "", 1, got, sizeof got);
    CHECK_STR(got, "2,4,5,6,7");
    lps(&fx, "", got, sizeof got);
    CHECK_STR(got, "a=4;b=6;c=7;");
    lps(&fx, "b", got, sizeof got);
    CHECK_STR(got, "b=6;");
    /* the subject index follows retention: expected last for a is 4 */
    memset(&o, 0, sizeof o);
    o.expect_last_subject_seq = true;
    o.last_subject_seq = 4;
    CHECK(app(&fx, "a", "d", &o, NULL) == OPSTATE_OK); /* seq 8, drops 2 */
    CHECK(fx.log.info(fx.log.user, &info, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(info.first_seq, 4);
    read_seqs(&fx, "a", 1, got, sizeof got);
    CHECK_STR(got, "4,8");
    lfx_close(&fx);
}

TEST(lmdb_log, retention_max_age)
{
    logfx fx;
    opstate_lmdb_log_config cfg;
    opstate_stream_info info;
    char got[128];
    memset(&fx, 0, sizeof fx);
    memset(&cfg, 0, sizeof cfg);
    cfg.max_age_ns = 100;
    fx.now = 1000;
    REQUIRE(lfx_open(&fx, &cfg));
    fx.now = 1000;
    CHECK(app(&fx, "x", "d", NULL, NULL) == OPSTATE_OK); /* 1 @1000 */
    fx.now = 1050;
    CHECK(app(&fx, "y", "d", NULL, NULL) == OPSTATE_OK); /* 2 @1050 */
    fx.now = 1090;
    CHECK(app(&fx, "x", "d", NULL, NULL) == OPSTATE_OK); /* 3 @1090 */
    CHECK(fx.log.info(fx.log.user, &info, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(info.first_seq, 1);
    fx.now = 1120; /* 1 is now 120 old */
    CHECK(app(&fx, "z", "d", NULL, NULL) == OPSTATE_OK); /* 4 @1120 */
    CHECK(fx.log.info(fx.log.user, &info, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(info.first_seq, 2);
    CHECK_EQ_U64(info.first_time, 1050);
    CHECK_EQ_U64(info.messages, 3);
    read_seqs(&fx, "", 1, got, sizeof got);
    CHECK_STR(got, "2,3,4");
    lps(&fx, "", got, sizeof got);
    CHECK_STR(got, "x=3;y=2;z=4;");
    fx.now = 1195; /* 2 and 3 are older than 100 */
    CHECK(app(&fx, "z", "d", NULL, NULL) == OPSTATE_OK); /* 5 @1195 */
    CHECK(fx.log.info(fx.log.user, &info, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(info.first_seq, 4);
    CHECK_EQ_U64(info.messages, 2);
    lps(&fx, "", got, sizeof got);
    CHECK_STR(got, "z=5;");
    lfx_close(&fx);
}

/* Age retention without new appends: JetStream expires messages on its
   own; a log whose first_seq only moves on append reports expired
   messages as retained. */
TEST(lmdb_log, retention_max_age_without_append)
{
    logfx fx;
    opstate_lmdb_log_config cfg;
    opstate_stream_info info;
    char got[128];
    memset(&fx, 0, sizeof fx);
    memset(&cfg, 0, sizeof cfg);
    cfg.max_age_ns = 100;
    fx.now = 1000;
    REQUIRE(lfx_open(&fx, &cfg));
    CHECK(app(&fx, "x", "d", NULL, NULL) == OPSTATE_OK);
    CHECK(app(&fx, "x", "d", NULL, NULL) == OPSTATE_OK);
    fx.now = 5000;
    CHECK(fx.log.info(fx.log.user, &info, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(info.messages, 0);
    CHECK_EQ_U64(info.first_seq, 3);
    read_seqs(&fx, "", 1, got, sizeof got);
    CHECK_STR(got, "");
    lfx_close(&fx);
}

TEST(lmdb_log, purge)
{
    logfx fx;
    opstate_stream_info info;
    opstate_append_options o;
    opstate_append_result res;
    char got[128];
    int i;
    memset(&fx, 0, sizeof fx);
    REQUIRE(lfx_open(&fx, NULL));
    for (i = 0; i < 6; i++) CHECK(app(&fx, i < 3 ? "p.a" : "p.b", "d", NULL, NULL) == OPSTATE_OK);
    CHECK(opstate_lmdb_log_purge(fx.lg, 4, NULL) == OPSTATE_OK);
    CHECK(fx.log.info(fx.log.user, &info, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(info.first_seq, 4);
    CHECK_EQ_U64(info.last_seq, 6);
    CHECK_EQ_U64(info.messages, 3);
    read_seqs(&fx, "", 1, got, sizeof got);
    CHECK_STR(got, "4,5,6");
    lps(&fx, "", got, sizeof got);
    CHECK_STR(got, "p.b=6;");
    /* p.a has no message left: it counts as new again */
    memset(&o, 0, sizeof o);
    o.expect_last_subject_seq = true;
    CHECK(app(&fx, "p.a", "d", &o, &res) == OPSTATE_OK);
    CHECK_EQ_U64(res.seq, 7);
    /* purge everything: sequences go on */
    CHECK(opstate_lmdb_log_purge(fx.lg, 100, NULL) == OPSTATE_OK);
    CHECK(fx.log.info(fx.log.user, &info, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(info.messages, 0);
    CHECK_EQ_U64(info.last_seq, 7);
    CHECK_EQ_U64(info.first_seq, 8);
    CHECK(app(&fx, "p.c", "d", NULL, &res) == OPSTATE_OK);
    CHECK_EQ_U64(res.seq, 8);
    lfx_close(&fx);
}

TEST(lmdb_log, recreate_restarts_sequences)
{
    logfx fx;
    opstate_stream_info before, after;
    opstate_append_result res;
    opstate_append_options o;
    opstate_id id = mkid(3);
    char got[64];
    memset(&fx, 0, sizeof fx);
    REQUIRE(lfx_open(&fx, NULL));
    memset(&o, 0, sizeof o);
    o.msg_id = &id;
    CHECK(app(&fx, "r", "1", &o, NULL) == OPSTATE_OK);
    CHECK(app(&fx, "r", "2", NULL, NULL) == OPSTATE_OK);
    CHECK(app(&fx, "q", "3", NULL, NULL) == OPSTATE_OK);
    CHECK(fx.log.info(fx.log.user, &before, NULL) == OPSTATE_OK);
    /* the clock did not move: the epoch must change anyway */
    CHECK(opstate_lmdb_log_recreate(fx.lg, NULL) == OPSTATE_OK);
    CHECK(fx.log.info(fx.log.user, &after, NULL) == OPSTATE_OK);
    CHECK(after.epoch > before.epoch);
    CHECK_EQ_U64(after.messages, 0);
    CHECK_EQ_U64(after.last_seq, 0);
    read_seqs(&fx, "", 1, got, sizeof got);
    CHECK_STR(got, "");
    lps(&fx, "", got, sizeof got);
    CHECK_STR(got, "");
    CHECK(app(&fx, "r", "new 1", &o, &res) == OPSTATE_OK); /* the old id is forgotten */
    CHECK(res.seq == 1 && !res.duplicate);
    CHECK(app(&fx, "r", "new 2", NULL, &res) == OPSTATE_OK);
    CHECK_EQ_U64(res.seq, 2);
    CHECK(fx.log.info(fx.log.user, &after, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(after.first_seq, 1);
    CHECK_EQ_U64(after.last_seq, 2);
    /* and with a clock far ahead: the epoch grows again */
    before = after;
    fx.now += 1000000;
    CHECK(opstate_lmdb_log_recreate(fx.lg, NULL) == OPSTATE_OK);
    CHECK(fx.log.info(fx.log.user, &after, NULL) == OPSTATE_OK);
    CHECK(after.epoch > before.epoch);
    {
        opstate_log_message m[2];
        size_t n = 0;
        CHECK(app(&fx, "r", "x", NULL, &res) == OPSTATE_OK && res.seq == 1);
        CHECK(fx.log.read(fx.log.user, str(""), 1, 0, m, 2, &n, NULL) == OPSTATE_OK && n == 1);
        if (n == 1) CHECK_EQ_U64(m[0].position.epoch, after.epoch);
    }
    lfx_close(&fx);
}

/* The child of the waiting-read tests: after `delay_ms` it opens its own
   environment on `dir` (never the parent's), appends one message to the
   log "events" and exits 0; 2 when its open fails with ALREADY_OPEN. */
static void append_child(int fd, const char *dir, long delay_ms)
{
    opstate_lmdb *env = NULL;
    opstate_lmdb_log *lg = NULL;
    opstate_log log;
    opstate_append_result res;
    opstate_result r;
    int code = 1;
    sleep_ms(delay_ms);
    r = env_open(dir, 0, 0, &env, NULL);
    if (r == OPSTATE_ALREADY_OPEN) child_finish(fd, 2);
    if (r == OPSTATE_OK && opstate_lmdb_log_open(env, NULL, &lg, NULL) == OPSTATE_OK) {
        log = opstate_lmdb_log_iface(lg);
        if (log.append(log.user, str("from.child"), str("hello"), NULL, &res, NULL) == OPSTATE_OK && res.seq == 2)
            code = 0;
        opstate_lmdb_log_close(lg);
    }
    opstate_lmdb_close(env);
    child_finish(fd, code);
}

/* Reads from seq 2 with a 1.5 s wait; the child appends seq 2 ~50 ms in. */
static void wait_for_child(logfx *fx, pid_t pid, int fd)
{
    opstate_log_message msgs[4];
    size_t n = 0;
    int64_t t0 = mono_ns(), took;
    opstate_result r = fx->log.read(fx->log.user, str(""), 2, (int64_t)1500000000, msgs, 4, &n, NULL);
    took = mono_ns() - t0;
    CHECK(r == OPSTATE_OK);
    CHECK_EQ_U64(n, 1);
    if (n == 1) {
        CHECK_EQ_U64(msgs[0].position.seq, 2);
        CHECK(msgs[0].subject.len == 10 && memcmp(msgs[0].subject.ptr, "from.child", 10) == 0);
        CHECK(msgs[0].data.len == 5 && memcmp(msgs[0].data.ptr, "hello", 5) == 0);
    }
    CHECK(took < (int64_t)1000000000);
    CHECK_EQ_U64(child_wait(pid, fd), 0);
}

/* The child forks while this process holds its environment open: the
   child's own environment on the same path is a different process's and
   must open (the "one per process" registry must not leak across fork). */
TEST(lmdb_log, waiting_read_sees_other_process)
{
    logfx fx;
    opstate_lmdb_log_config cfg;
    pid_t pid;
    int fds[2];
    memset(&fx, 0, sizeof fx);
    memset(&cfg, 0, sizeof cfg);
    cfg.clock = NULL;
    REQUIRE(lfx_open(&fx, &cfg));
    CHECK(app(&fx, "first", "1", NULL, NULL) == OPSTATE_OK);
    REQUIRE(lfx_reopen_read_only(&fx, 0)); /* the child is the writer */
    REQUIRE(pipe(fds) == 0);
    fflush(stdout);
    pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        append_child(fds[1], fx.dir, 50);
    }
    close(fds[1]);
    wait_for_child(&fx, pid, fds[0]);
    lfx_close(&fx);
}

/* The same with the child forked before this process opens its
   environment (no registry entry to inherit): the wait semantics alone. */
TEST(lmdb_log, waiting_read_child_forked_first)
{
    logfx fx;
    pid_t pid;
    int fds[2];
    memset(&fx, 0, sizeof fx);
    REQUIRE(lfx_open(&fx, NULL));
    CHECK(app(&fx, "first", "1", NULL, NULL) == OPSTATE_OK);
    opstate_lmdb_log_close(fx.lg);
    opstate_lmdb_close(fx.env);
    fx.lg = NULL;
    fx.env = NULL;
    REQUIRE(pipe(fds) == 0);
    fflush(stdout);
    pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        append_child(fds[1], fx.dir, 50);
    }
    close(fds[1]);
    REQUIRE(lfx_reopen_read_only(&fx, 0));
    wait_for_child(&fx, pid, fds[0]);
    lfx_close(&fx);
}

/* A read with a wait and nothing coming returns empty after about wait_ns. */
TEST(lmdb_log, waiting_read_times_out)
{
    logfx fx;
    opstate_log_message msgs[2];
    size_t n = 7;
    int64_t t0, took;
    memset(&fx, 0, sizeof fx);
    REQUIRE(lfx_open(&fx, NULL));
    t0 = mono_ns();
    CHECK(fx.log.read(fx.log.user, str(""), 1, 30000000, msgs, 2, &n, NULL) == OPSTATE_OK);
    took = mono_ns() - t0;
    CHECK_EQ_U64(n, 0);
    CHECK(took >= 30000000 && took < 1000000000);
    lfx_close(&fx);
}

/* --------------------------------------------------------------- export */

/* Reads a whole file (NUL-terminated); NULL when it cannot. */
static char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long n;
    if (!f) return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
        (buf = (char *)malloc((size_t)n + 1)) != NULL) {
        if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
            free(buf);
            buf = NULL;
        } else {
            buf[n] = '\0';
            if (len) *len = (size_t)n;
        }
    }
    fclose(f);
    return buf;
}

static bool write_all(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    bool ok;
    if (!f) return false;
    ok = fwrite(p, 1, n, f) == n;
    return fclose(f) == 0 && ok;
}

/* Replaces the first `from` in a text file by `to`. */
static bool edit_text(const char *path, const char *from, const char *to)
{
    size_t len = 0;
    char *text = read_all(path, &len), *hit, *out;
    bool ok = false;
    if (!text) return false;
    if ((hit = strstr(text, from)) != NULL && (out = (char *)malloc(len + strlen(to) + 1)) != NULL) {
        size_t head = (size_t)(hit - text);
        memcpy(out, text, head);
        strcpy(out + head, to);
        strcat(out + head, hit + strlen(from));
        ok = write_all(path, out, strlen(out));
        free(out);
    }
    free(text);
    return ok;
}

static bool exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* An environment with two stores and a log, and the oracle of "alpha". */
typedef struct expfx {
    char base[64], src[128];
    opstate_lmdb *env;
    opstate_kv *alpha, *beta;
} expfx;

static bool exp_setup(expfx *x)
{
    opstate_lmdb_store *a = NULL, *b = NULL;
    opstate_lmdb_log *lg = NULL;
    opstate_store sa, sb;
    opstate_log log;
    opstate_append_result res;
    opstate_kv *ka = kv_new(NULL), *kb = kv_new(NULL);
    opstate_snapshot_meta ma = smeta(2, 7, 7000, 5), mb = smeta(1, 3, 3000, 5);
    bool ok;
    x->env = NULL;
    x->alpha = kv_new(NULL);
    x->beta = kv_new(NULL);
    tmp_dir(x->base);
    join(x->src, sizeof x->src, x->base, "src");
    ok = ka && kb && x->alpha && x->beta && x->base[0] && env_open(x->src, 0, 0, &x->env, NULL) == OPSTATE_OK &&
         store_open(x->env, "alpha", false, 2, &a, NULL) == OPSTATE_OK &&
         store_open(x->env, "beta", false, 1000, &b, NULL) == OPSTATE_OK &&
         opstate_lmdb_log_open(x->env, NULL, &lg, NULL) == OPSTATE_OK;
    if (ok) {
        sa = opstate_lmdb_store_iface(a);
        sb = opstate_lmdb_store_iface(b);
        log = opstate_lmdb_log_iface(lg);
        fill(ka, x->alpha, 40, 1);
        ok = sa.flush(sa.user, ka, &ma, NULL, NULL) == OPSTATE_OK;
        put2(ka, x->alpha, "k-00001", "updated", 6);
        del2(ka, x->alpha, "k-00002", 7);
        ok = ok && sa.flush(sa.user, ka, &ma, NULL, NULL) == OPSTATE_OK; /* compacted */
        put2(ka, x->alpha, "pending", "delta", 7);
        ok = ok && sa.flush(sa.user, ka, &ma, NULL, NULL) == OPSTATE_OK; /* one delta left */
        put2(kb, x->beta, "b", "bee", 3);
        ok = ok && sb.flush(sb.user, kb, &mb, NULL, NULL) == OPSTATE_OK;
        ok = ok && log.append(log.user, str("ev.1"), str("one"), NULL, &res, NULL) == OPSTATE_OK;
        ok = ok && log.append(log.user, str("ev.2"), str("two"), NULL, &res, NULL) == OPSTATE_OK;
    }
    opstate_lmdb_store_close(a);
    opstate_lmdb_store_close(b);
    opstate_lmdb_log_close(lg);
    opstate_kv_destroy(ka);
    opstate_kv_destroy(kb);
    return ok;
}

static void exp_teardown(expfx *x)
{
    opstate_lmdb_close(x->env);
    opstate_kv_destroy(x->alpha);
    opstate_kv_destroy(x->beta);
    if (x->base[0]) rm_rf(x->base);
}

/* Loads store `name` of the environment at `path` and compares it. */
static bool env_has_store(const char *path, const char *name, const opstate_kv *want, uint64_t seq, int64_t time,
                          uint64_t epoch)
{
    opstate_lmdb *env = NULL;
    opstate_lmdb_store *st = NULL;
    opstate_store s;
    opstate_kv *kv = kv_new(NULL);
    opstate_snapshot_meta m;
    bool ok = kv && env_open(path, 0, 0, &env, NULL) == OPSTATE_OK &&
              store_open(env, name, false, 1000, &st, NULL) == OPSTATE_OK;
    if (ok) {
        s = opstate_lmdb_store_iface(st);
        ok = s.load(s.user, kv, &m, NULL, NULL) == OPSTATE_OK && same_state(kv, want) && m.position.seq == seq &&
             m.position.time == time && m.position.epoch == epoch;
    }
    opstate_lmdb_store_close(st);
    opstate_lmdb_close(env);
    opstate_kv_destroy(kv);
    return ok;
}

TEST(lmdb_export, export_manifest_and_import)
{
    expfx x;
    char exp[160], imp[160], f[192], want[512];
    char *manifest, *data;
    size_t dlen = 0;
    struct stat st;
    opstate_error err;
    REQUIRE(exp_setup(&x));
    join(exp, sizeof exp, x.base, "exp");
    join(imp, sizeof imp, x.base, "imp");
    CHECK(opstate_lmdb_export(x.env, exp, &err) == OPSTATE_OK);
    join(f, sizeof f, exp, "data.mdb");
    data = read_all(f, &dlen);
    CHECK(data != NULL);
    join(f, sizeof f, exp, "MANIFEST");
    manifest = read_all(f, NULL);
    CHECK(manifest != NULL);
    if (data && manifest) {
        snprintf(want, sizeof want,
                 "opstate-lmdb-export 1\nfile data.mdb %lu %08lx\nstore alpha 7 7000 5\nstore beta 3 3000 5\nend\n",
                 (unsigned long)dlen, (unsigned long)opstate_crc32c(0, data, dlen));
        CHECK_STR(manifest, want);
    }
    free(data);
    free(manifest);
    /* only MANIFEST and data.mdb */
    join(f, sizeof f, exp, "MANIFEST.tmp");
    CHECK(!exists(f));
    join(f, sizeof f, exp, "lock.mdb");
    CHECK(!exists(f));

    CHECK(opstate_lmdb_import(exp, imp, &err) == OPSTATE_OK);
    join(f, sizeof f, imp, "data.mdb");
    CHECK(stat(f, &st) == 0 && (st.st_mode & 0777) == 0600);
    CHECK(env_has_store(imp, "alpha", x.alpha, 7, 7000, 5));
    CHECK(env_has_store(imp, "beta", x.beta, 3, 3000, 5));
    {
        /* the log came along */
        opstate_lmdb *env = NULL;
        opstate_lmdb_log *lg = NULL;
        opstate_stream_info info;
        opstate_log log;
        CHECK(env_open(imp, 0, 0, &env, NULL) == OPSTATE_OK);
        if (env && opstate_lmdb_log_open(env, NULL, &lg, NULL) == OPSTATE_OK) {
            log = opstate_lmdb_log_iface(lg);
            CHECK(log.info(log.user, &info, NULL) == OPSTATE_OK);
            CHECK_EQ_U64(info.last_seq, 2);
            CHECK_EQ_U64(info.messages, 2);
            opstate_lmdb_log_close(lg);
        }
        opstate_lmdb_close(env);
    }
    /* the source is untouched and still in use */
    CHECK(opstate_lmdb_map_size(x.env) > 0);
    exp_teardown(&x);
}

TEST(lmdb_export, import_refuses_tampering)
{
    enum { FLIP_DATA, DROP_DATA, EXTRA_FILE, EDIT_POSITION, EDIT_EPOCH, DROP_STORE_LINE, EDIT_CRC, TRUNCATE_DATA,
           NEW_VERSION, NO_END, NO_MANIFEST, NO_FILE_LINE };
    static const struct {
        const char *name;
        int how;
        opstate_result want;
    } rows[] = {
        {"flipped byte in data.mdb", FLIP_DATA, OPSTATE_CORRUPT},
        {"data.mdb removed", DROP_DATA, OPSTATE_NOT_FOUND},
        {"extra file", EXTRA_FILE, OPSTATE_MALFORMED},
        {"store position edited", EDIT_POSITION, OPSTATE_CONFLICT},
        {"store epoch edited", EDIT_EPOCH, OPSTATE_CONFLICT},
        {"store line removed", DROP_STORE_LINE, OPSTATE_CONFLICT},
        {"data CRC edited", EDIT_CRC, OPSTATE_CORRUPT},
        {"data.mdb truncated", TRUNCATE_DATA, OPSTATE_CORRUPT},
        {"manifest version 2", NEW_VERSION, OPSTATE_UNKNOWN_VERSION},
        {"manifest without end", NO_END, OPSTATE_MALFORMED},
        {"manifest removed", NO_MANIFEST, OPSTATE_NOT_FOUND},
        {"manifest without its file line", NO_FILE_LINE, OPSTATE_MALFORMED},
    };
    expfx x;
    size_t i;
    REQUIRE(exp_setup(&x));
    for (i = 0; i < COUNT_OF(rows); i++) {
        char exp[160], dest[160], f[192], g[192], name[32];
        size_t len = 0;
        char *data;
        opstate_error err;
        bool done = false;
        CASE(rows[i].name);
        snprintf(name, sizeof name, "exp%u", (unsigned)i);
        join(exp, sizeof exp, x.base, name);
        snprintf(name, sizeof name, "dest%u", (unsigned)i);
        join(dest, sizeof dest, x.base, name);
        REQUIRE(opstate_lmdb_export(x.env, exp, &err) == OPSTATE_OK);
        join(f, sizeof f, exp, "data.mdb");
        join(g, sizeof g, exp, "MANIFEST");
        switch (rows[i].how) {
        case FLIP_DATA:
            if ((data = read_all(f, &len)) != NULL) {
                data[len / 2] ^= 0x01;
                done = write_all(f, data, len);
                free(data);
            }
            break;
        case TRUNCATE_DATA:
            if ((data = read_all(f, &len)) != NULL) {
                done = write_all(f, data, len - 4096);
                free(data);
            }
            break;
        case DROP_DATA: done = unlink(f) == 0; break;
        case NO_MANIFEST: done = unlink(g) == 0; break;
        case EXTRA_FILE:
            join(f, sizeof f, exp, "notes.txt");
            done = write_all(f, "hi", 2);
            break;
        case EDIT_POSITION: done = edit_text(g, "store alpha 7 ", "store alpha 8 "); break;
        case EDIT_EPOCH: done = edit_text(g, "store beta 3 3000 5", "store beta 3 3000 6"); break;
        case DROP_STORE_LINE: done = edit_text(g, "store beta 3 3000 5\n", ""); break;
        case EDIT_CRC: {
            char *m = read_all(g, NULL), *p = m ? strstr(m, "file data.mdb ") : NULL;
            if (p && (p = strchr(p + 14, ' ')) != NULL) {
                p[1] = p[1] == '0' ? '1' : '0';
                done = write_all(g, m, strlen(m));
            }
            free(m);
            break;
        }
        case NEW_VERSION: done = edit_text(g, "opstate-lmdb-export 1", "opstate-lmdb-export 2"); break;
        case NO_END: done = edit_text(g, "end\n", ""); break;
        case NO_FILE_LINE: {
            char *m = read_all(g, NULL), *p = m ? strstr(m, "file data.mdb ") : NULL, *e = p ? strchr(p, '\n') : NULL;
            if (e) {
                memmove(p, e + 1, strlen(e + 1) + 1);
                done = write_all(g, m, strlen(m));
            }
            free(m);
            break;
        }
        }
        CHECK(done);
        memset(&err, 0, sizeof err);
        CHECK_EQ_U64(opstate_lmdb_import(exp, dest, &err), rows[i].want);
        CHECK_EQ_U64(err.result, rows[i].want);
        join(f, sizeof f, dest, "data.mdb");
        CHECK(!exists(f)); /* nothing installed */
    }
    CASE(NULL);
    exp_teardown(&x);
}

TEST(lmdb_export, refuses_non_empty_dirs)
{
    expfx x;
    char exp[160], dest[160], f[192];
    opstate_error err;
    REQUIRE(exp_setup(&x));
    join(exp, sizeof exp, x.base, "full");
    CHECK(mkdir(exp, 0700) == 0);
    join(f, sizeof f, exp, "something");
    CHECK(write_all(f, "x", 1));
    memset(&err, 0, sizeof err);
    CHECK(opstate_lmdb_export(x.env, exp, &err) == OPSTATE_INVALID_ARGUMENT);
    CHECK(err.result == OPSTATE_INVALID_ARGUMENT);
    join(f, sizeof f, exp, "data.mdb");
    CHECK(!exists(f));
    /* an existing empty directory is fine */
    join(exp, sizeof exp, x.base, "empty");
    CHECK(mkdir(exp, 0700) == 0);
    CHECK(opstate_lmdb_export(x.env, exp, &err) == OPSTATE_OK);
    /* import into a non-empty destination is refused too */
    join(dest, sizeof dest, x.base, "busy");
    CHECK(mkdir(dest, 0700) == 0);
    join(f, sizeof f, dest, "keep");
    CHECK(write_all(f, "x", 1));
    CHECK(opstate_lmdb_import(exp, dest, &err) == OPSTATE_INVALID_ARGUMENT);
    join(f, sizeof f, dest, "data.mdb");
    CHECK(!exists(f));
    /* importing onto a live environment's directory is refused */
    CHECK(opstate_lmdb_import(exp, x.src, &err) == OPSTATE_INVALID_ARGUMENT);
    exp_teardown(&x);
}

/* The header promises files of mode 0600; an export holds the whole state,
   so its files should not be readable by others either (here into an
   existing 0755 directory, where the directory does not hide them). */
TEST(lmdb_export, export_files_mode_0600)
{
    expfx x;
    char exp[160], f[192];
    struct stat st;
    REQUIRE(exp_setup(&x));
    join(exp, sizeof exp, x.base, "open");
    CHECK(mkdir(exp, 0755) == 0);
    CHECK(opstate_lmdb_export(x.env, exp, NULL) == OPSTATE_OK);
    join(f, sizeof f, exp, "data.mdb");
    CHECK(stat(f, &st) == 0);
    CHECK_EQ_U64(st.st_mode & 0777, 0600);
    join(f, sizeof f, exp, "MANIFEST");
    CHECK(stat(f, &st) == 0);
    CHECK_EQ_U64(st.st_mode & 0777, 0600);
    exp_teardown(&x);
}

/* ------------------------------------------------- more store behaviour */

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
    MDB_env *raw = NULL;
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_val k, v;
    uint8_t *buf = NULL;
    size_t len = 0;
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
    REQUIRE(opstate_snapshot_encode(kv, &m, &w.d, NULL, 0, &len, NULL) == OPSTATE_OK);
    REQUIRE((buf = (uint8_t *)malloc(len)) != NULL);
    REQUIRE(opstate_snapshot_encode(kv, &m, &w.d, buf, len, &len, NULL) == OPSTATE_OK);
    REQUIRE(raw_open(dir, &raw) == 0);
    REQUIRE(mdb_txn_begin(raw, NULL, 0, &txn) == 0);
    REQUIRE(mdb_dbi_open(txn, "s:dd:meta", MDB_CREATE, &dbi) == 0);
    k.mv_data = (void *)(uintptr_t)"snapshot";
    k.mv_size = 8;
    v.mv_data = buf;
    v.mv_size = len;
    REQUIRE(mdb_put(txn, dbi, &k, &v, 0) == 0);
    REQUIRE(mdb_txn_commit(txn) == 0);
    mdb_env_close(raw);
    free(buf);

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
            CHECK(flush_big(&s, kv, oracle, round * 3, 3, vlen, val, &err) == OPSTATE_OK);
            if (round) CHECK(flush_big(&s, kv, oracle, 0, 3, vlen, val, &err) == OPSTATE_OK);
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
    CHECK(s.flush(s.user, kv, &m, NULL, NULL) == OPSTATE_OK);
    put2(kv, oracle, "b", "2", 2);
    CHECK(s.flush(s.user, kv, &m, NULL, NULL) == OPSTATE_OK);
    opstate_lmdb_store_deltas(st, &dcount, &dbytes);
    CHECK_EQ_U64(dcount, 2);
    CHECK(opstate_lmdb_blob_save(st, str("blob"), &m, NULL) == OPSTATE_OK);
    opstate_lmdb_store_deltas(st, &dcount, &dbytes);
    CHECK_EQ_U64(dcount, 0);
    CHECK_EQ_U64(dbytes, 0);
    /* back to KV: only what is flushed now */
    opstate_kv_put(fresh, str("c"), str("3"), pos(4, 4));
    m.position.seq = 4;
    CHECK(s.flush(s.user, fresh, &m, NULL, NULL) == OPSTATE_OK);
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

/* Appends grow the map; past the limit FULL, and the log stays whole. */
TEST(lmdb_log, map_growth_and_full)
{
    const size_t mib = (size_t)1 << 20, dlen = 60 * 1024;
    char dir[64];
    opstate_lmdb *env = NULL;
    opstate_lmdb_log *lg = NULL;
    opstate_log log;
    opstate_append_result res;
    opstate_stream_info info;
    opstate_log_message msgs[64];
    opstate_error err;
    opstate_result r = OPSTATE_OK;
    uint8_t *data = (uint8_t *)malloc(dlen);
    uint64_t ok = 0, i;
    size_t n = 0, bad = 0, j;
    tmp_dir(dir);
    REQUIRE(dir[0] && data);
    REQUIRE(env_open(dir, mib, 4 * mib, &env, NULL) == OPSTATE_OK);
    REQUIRE(opstate_lmdb_log_open(env, NULL, &lg, NULL) == OPSTATE_OK);
    log = opstate_lmdb_log_iface(lg);
    for (i = 1; i < 200; i++) {
        memset(data, (int)i, dlen);
        memset(&err, 0, sizeof err);
        r = log.append(log.user, str("big"), by(data, dlen), NULL, &res, &err);
        if (r != OPSTATE_OK) break;
        CHECK_EQ_U64(res.seq, i);
        ok = i;
    }
    CHECK(r == OPSTATE_FULL);
    CHECK(err.dep_status == MDB_MAP_FULL);
    CHECK(ok > 20); /* well past the first 1 MiB */
    CHECK_EQ_U64(opstate_lmdb_map_size(env), 4 * mib);
    CHECK(log.info(log.user, &info, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(info.last_seq, ok);
    CHECK_EQ_U64(info.messages, ok);
    CHECK(log.read(log.user, str(""), 1, 0, msgs, 64, &n, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(n, ok < 64 ? ok : 64);
    for (j = 0; j < n; j++) {
        size_t b;
        if (msgs[j].position.seq != j + 1 || msgs[j].data.len != dlen) bad++;
        else
            for (b = 0; b < dlen; b += 4096)
                if (msgs[j].data.ptr[b] != (uint8_t)(j + 1)) bad++;
    }
    CHECK_EQ_U64(bad, 0);
    /* a purge frees room: appends work again, the sequence goes on (LMDB
       reuses the pages a commit frees only after a later commit: a retry of
       the same failed transaction never gets there) */
    CHECK(opstate_lmdb_log_purge(lg, ok, NULL) == OPSTATE_OK);
    r = log.append(log.user, str("big"), by(data, dlen), NULL, &res, NULL);
    if (r != OPSTATE_OK) /* once more: LMDB reuses freed pages one commit late */
        r = log.append(log.user, str("big"), by(data, dlen), NULL, &res, NULL);
    CHECK(r == OPSTATE_OK);
    CHECK_EQ_U64(res.seq, ok + 1);
    opstate_lmdb_log_close(lg);
    opstate_lmdb_close(env);
    free(data);
    rm_rf(dir);
}

/* Another process grows the map: this one adopts the new size on its next
   read and write (MDB_MAP_RESIZED) and sees everything. */
TEST(lmdb_log, other_process_grows_map)
{
    const size_t mib = (size_t)1 << 20;
    logfx fx;
    opstate_log_message msgs[64];
    opstate_append_result res;
    size_t n = 0;
    int fds[2];
    pid_t pid;
    memset(&fx, 0, sizeof fx);
    tmp_dir(fx.dir);
    REQUIRE(fx.dir[0]);
    REQUIRE(env_open(fx.dir, mib, 64 * mib, &fx.env, NULL) == OPSTATE_OK);
    REQUIRE(opstate_lmdb_log_open(fx.env, NULL, &fx.lg, NULL) == OPSTATE_OK);
    fx.log = opstate_lmdb_log_iface(fx.lg);
    CHECK(app(&fx, "first", "1", NULL, NULL) == OPSTATE_OK);
    CHECK(fx.log.read(fx.log.user, str(""), 1, 0, msgs, 64, &n, NULL) == OPSTATE_OK && n == 1);
    REQUIRE(lfx_reopen_read_only(&fx, mib)); /* the child is the writer */
    REQUIRE(pipe(fds) == 0);
    fflush(stdout);
    pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        opstate_lmdb *env = NULL;
        opstate_lmdb_log *lg = NULL;
        opstate_log log;
        static uint8_t data[100 * 1024];
        int i, code = 0;
        close(fds[0]);
        if (env_open(fx.dir, mib, 64 * mib, &env, NULL) != OPSTATE_OK ||
            opstate_lmdb_log_open(env, NULL, &lg, NULL) != OPSTATE_OK)
            child_finish(fds[1], 1);
        log = opstate_lmdb_log_iface(lg);
        for (i = 0; i < 40 && code == 0; i++) {
            memset(data, i + 2, sizeof data);
            if (log.append(log.user, str("child"), by(data, sizeof data), NULL, &res, NULL) != OPSTATE_OK) code = 3;
        }
        if (code == 0 && opstate_lmdb_map_size(env) <= 2 * mib) code = 4;
        opstate_lmdb_log_close(lg);
        opstate_lmdb_close(env);
        child_finish(fds[1], code);
    }
    close(fds[1]);
    CHECK_EQ_U64(child_wait(pid, fds[0]), 0);
    CHECK(fx.log.read(fx.log.user, str(""), 1, 0, msgs, 64, &n, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(n, 41);
    if (n == 41) CHECK(msgs[40].data.len == 100 * 1024 && msgs[40].data.ptr[100 * 1024 - 1] == 41);
    CHECK(opstate_lmdb_map_size(fx.env) > 2 * mib);
    opstate_lmdb_log_close(fx.lg); /* the writer's turn */
    opstate_lmdb_close(fx.env);
    REQUIRE(env_open(fx.dir, mib, 64 * mib, &fx.env, NULL) == OPSTATE_OK);
    REQUIRE(opstate_lmdb_log_open(fx.env, NULL, &fx.lg, NULL) == OPSTATE_OK);
    fx.log = opstate_lmdb_log_iface(fx.lg);
    CHECK(app(&fx, "parent", "again", NULL, &res) == OPSTATE_OK);
    CHECK_EQ_U64(res.seq, 42);
    lfx_close(&fx);
}

/* A store that hit the map limit, then dropped its state, takes flushes
   again (drop frees almost the whole map). */
TEST(lmdb_env, full_then_drop_then_flush)
{
    const size_t mib = (size_t)1 << 20, vlen = 96 * 1024;
    char dir[64];
    opstate_lmdb *env = NULL;
    opstate_lmdb_store *st = NULL;
    opstate_store s;
    opstate_kv *kv = kv_new(NULL), *oracle = kv_new(NULL), *small = kv_new(NULL), *loaded = kv_new(NULL);
    opstate_snapshot_meta m = smeta(1, 1, 1, 1), got;
    opstate_error err;
    opstate_result r = OPSTATE_OK;
    uint8_t *val = (uint8_t *)malloc(vlen);
    unsigned next = 0;
    tmp_dir(dir);
    REQUIRE(dir[0] && kv && oracle && small && loaded && val);
    REQUIRE(env_open(dir, mib, 2 * mib, &env, NULL) == OPSTATE_OK);
    REQUIRE(store_open(env, "fd", false, 100000, &st, NULL) == OPSTATE_OK);
    s = opstate_lmdb_store_iface(st);
    while (next < 400 && (r = flush_big(&s, kv, oracle, next, 2, vlen, val, &err)) == OPSTATE_OK) next += 2;
    CHECK(r == OPSTATE_FULL);
    CHECK(s.drop(s.user, &err) == OPSTATE_OK);
    /* as much as the flush that did not fit */
    memset(val, 'z', vlen);
    opstate_kv_put(small, str("after-1"), by(val, vlen), pos(1, 1));
    opstate_kv_put(small, str("after-2"), by(val, vlen), pos(1, 1));
    r = s.flush(s.user, small, &m, NULL, &err);
    if (r != OPSTATE_OK) r = s.flush(s.user, small, &m, NULL, &err); /* a caller's retry */
    CHECK(r == OPSTATE_OK);
    CHECK(s.load(s.user, loaded, &got, NULL, &err) == (r == OPSTATE_OK ? OPSTATE_OK : OPSTATE_NOT_FOUND));
    if (r == OPSTATE_OK) CHECK(same_state(loaded, small));
    opstate_lmdb_store_close(st);
    opstate_lmdb_close(env);
    opstate_kv_destroy(kv);
    opstate_kv_destroy(oracle);
    opstate_kv_destroy(small);
    opstate_kv_destroy(loaded);
    free(val);
    rm_rf(dir);
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
    CHECK(s.flush(s.user, kv, &m, NULL, &err) == OPSTATE_OK);
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

/* A batch append is one transaction: sequences in order, an id repeated
   inside the batch is a duplicate of its first copy, and a conflict refuses
   the whole batch (nothing appended, err.offset at the failing item). */
TEST(lmdb_log, append_batch)
{
    logfx fx;
    opstate_lmdb_append_item items[4];
    opstate_append_result out[4];
    opstate_stream_info info;
    opstate_id a, b;
    opstate_error err;
    memset(&fx, 0, sizeof fx);
    REQUIRE(lfx_open(&fx, NULL));
    memset(items, 0, sizeof items);
    memset(&a, 1, sizeof a);
    memset(&b, 2, sizeof b);
    items[0].subject = str("ops.s.k.x");
    items[0].data = str("1");
    items[0].opts.msg_id = &a;
    items[1].subject = str("ops.s.k.y");
    items[1].data = str("2");
    items[1].opts.msg_id = &b;
    items[2].subject = str("ops.s.k.z");
    items[2].data = str("3");
    items[2].opts.msg_id = &a; /* repeats item 0 */
    CHECK(opstate_lmdb_log_append_batch(fx.lg, items, 3, out, &err) == OPSTATE_OK);
    CHECK_EQ_U64(out[0].seq, 1);
    CHECK_EQ_U64(out[1].seq, 2);
    CHECK(out[2].duplicate && out[2].seq == 1);
    /* a conflict at item 1 refuses items 0 and 1 alike */
    memset(items, 0, sizeof items);
    items[0].subject = str("ops.s.k.w");
    items[0].data = str("4");
    items[1].subject = str("ops.s.k.x");
    items[1].data = str("5");
    items[1].opts.expect_last_subject_seq = true;
    items[1].opts.last_subject_seq = 7; /* it is 1 */
    CHECK(opstate_lmdb_log_append_batch(fx.lg, items, 2, out, &err) == OPSTATE_CONFLICT);
    CHECK_EQ_U64(err.offset, 1);
    CHECK(fx.log.info(fx.log.user, &info, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(info.last_seq, 2);
    CHECK_EQ_U64(info.messages, 2);
    /* an invalid subject is refused before anything is written */
    items[1].subject = str("");
    CHECK(opstate_lmdb_log_append_batch(fx.lg, items, 2, out, &err) == OPSTATE_INVALID_ARGUMENT);
    CHECK_EQ_U64(err.offset, 1);
    lfx_close(&fx);
}

/* ---------------------------------------- crafted records (make mutate) */

/* The records below carry a VALID checksum over bytes that are wrong in
   structure: what a bug, a tool or an attacker writes, not what a bit flip
   does. The store checks behind the checksum must still refuse them with
   CORRUPT, and a compaction must never fold them (or a record that fails
   its checksum) into the table under a fresh checksum. Each test here
   kills a mutant of tests/mutants.txt. */

/* Writes one record of a named database (no opstate environment of this
   process may be open on path). */
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
        if ((rc = mdb_dbi_open(txn, db, 0, &dbi)) == 0) rc = mdb_put(txn, dbi, &k, &v, 0);
        if (rc == 0) rc = mdb_txn_commit(txn);
        else mdb_txn_abort(txn);
    }
    mdb_env_close(env);
    return rc;
}

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
            if (r == OPSTATE_OK) r = opstate_lmdb_store_compact(st, NULL, NULL);
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
        CHECK(opstate_lmdb_store_compact(st, NULL, &err) == OPSTATE_CORRUPT);
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
