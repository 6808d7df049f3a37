/* test_lmdb_env.c — the LMDB companion's environment (opstate_lmdb.h
   >>env, suite lmdb_env): the directory and files it creates (mode 0600),
   one environment per path per process (also through "." and symlinks),
   and map growth up to max_map_size, then FULL with nothing lost, and room
   again after a drop. Every test works in its own mkdtemp directory under
   /tmp and removes it at the end; expected states come from an oracle
   fold fed the same operations. */
#include <lmdb.h>

#include "runner.h"
#include "../opstate_lmdb.h"
#include "lmdb_helpers.h"
#include <ctype.h>

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
        r = flush_big_keys(&s, kv, oracle, next, 4, vlen, val, &err);
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
    while (next < 400 && (r = flush_big_keys(&s, kv, oracle, next, 2, vlen, val, &err)) == OPSTATE_OK) next += 2;
    CHECK(r == OPSTATE_FULL);
    CHECK(s.drop(s.user, &err) == OPSTATE_OK);
    /* as much as the flush that did not fit */
    memset(val, 'z', vlen);
    opstate_kv_put(small, str("after-1"), by(val, vlen), pos(1, 1));
    opstate_kv_put(small, str("after-2"), by(val, vlen), pos(1, 1));
    r = flush_cycle(&s, small, &m, NULL, &err);
    if (r != OPSTATE_OK) r = flush_cycle(&s, small, &m, NULL, &err); /* a caller's retry */
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

/* 1 when the mapping of `file` in this process is marked for random reads
   (MADV_RANDOM, "rr" in /proc/self/smaps' VmFlags: what LMDB asks for
   under MDB_NORDAHEAD), 0 when not, -1 when the mapping is not found. */
static int mapped_random(const char *file)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    char line[512];
    int in = 0, found = -1;
    if (!f) return -1;
    while (fgets(line, sizeof line, f)) {
        if (isxdigit((unsigned char)line[0]) && strchr(line, '-')) in = strstr(line, file) != NULL; /* a mapping's first line */
        if (in && strncmp(line, "VmFlags:", 8) == 0) {
            found = strstr(line, " rr") != NULL;
            in = 0;
        }
    }
    fclose(f);
    return found;
}

/* no_readahead: the data file is mapped for random reads (MDB_NORDAHEAD);
   by default the OS reads ahead. */
TEST(lmdb_env, no_readahead_maps_for_random_reads)
{
    char base[64], path[128], f[192];
    opstate_lmdb_config c;
    opstate_lmdb *env = NULL;
    int i;
    tmp_dir(base);
    REQUIRE(base[0]);
    join(path, sizeof path, base, "env");
    join(f, sizeof f, path, "data.mdb");
    for (i = 0; i < 2; i++) {
        memset(&c, 0, sizeof c);
        c.path = path;
        c.access = OPSTATE_LMDB_CREATE;
        c.no_readahead = i == 1;
        REQUIRE(opstate_lmdb_open(&c, &env, NULL) == OPSTATE_OK);
        CHECK(mapped_random(f) == i);
        opstate_lmdb_close(env);
    }
    rm_rf(base);
}
