/* lmdb_seeds.c — makes starting seeds for fuzz_lmdb_store and fuzz_lmdb_log
   from real stores and logs: each scenario is built through the public
   API, then its raw records are dumped in the targets' input layout
   (lmdb_plant.h). `make test` replays a fresh set next to the committed
   corpora, so the current record formats are always exercised; when a
   format changes, start the fuzzers from a fresh set and merge (-merge=1)
   into tests/fuzz/seeds/.

       make build/lmdb_seeds
       build/lmdb_seeds OUTDIR        writes OUTDIR/store-* and OUTDIR/log-* */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lmdb_plant.h"

static const char *out_dir;
static uint32_t dedup_storage[4096];

static void check(opstate_result r, const char *what)
{
    if (r != OPSTATE_OK) {
        fprintf(stderr, "lmdb_seeds: %s: %s\n", what, opstate_result_str(r));
        exit(1);
    }
}

static opstate_bytes text(const char *s)
{
    opstate_bytes b;
    b.ptr = (const uint8_t *)s;
    b.len = strlen(s);
    return b;
}

/* A fresh environment directory for one scenario. */
static opstate_lmdb *fresh(char *dir, size_t cap, const char *name)
{
    opstate_lmdb *env;
    fuzz_scratch_path(dir, cap, name);
    fuzz_remove_tree(dir);
    if (!(env = fuzz_lmdb_open(dir))) check(OPSTATE_IO, name);
    return env;
}

static void dump(const char *dir, const char *const *dbs, size_t n, unsigned opts, const char *name)
{
    char path[FUZZ_PATH_CAP + 64];
    snprintf(path, sizeof path, "%s/%s", out_dir, name);
    if (!fuzz_lmdb_dump(dir, dbs, n, opts, path)) check(OPSTATE_IO, path);
}

/* flushes: how many flushes of three puts and a delete; compact: fold
   them into the table after `compact` flushes (0: never). */
static void store_scenario(const char *name, bool read_through, int flushes, int compact, unsigned opts)
{
    char dir[FUZZ_PATH_CAP], key[32], value[32];
    opstate_lmdb *env = fresh(dir, sizeof dir, name);
    opstate_lmdb_store_config sc;
    opstate_lmdb_store *st;
    opstate_store s;
    opstate_kv_config kc;
    opstate_kv *kv;
    opstate_dedup dedup;
    opstate_snapshot_meta meta;
    opstate_id id;
    int f, i;
    memset(&sc, 0, sizeof sc);
    sc.name = "s";
    sc.read_through = read_through;
    sc.no_compact_on_close = true;
    sc.compact_flushes = 1000;
    check(opstate_lmdb_store_open(env, &sc, &st, NULL), "store open");
    s = opstate_lmdb_store_iface(st);
    memset(&kc, 0, sizeof kc);
    kc.base = s.base(s.user);
    check(opstate_kv_create(&kc, &kv), "kv");
    check(opstate_dedup_init(&dedup, dedup_storage, opstate_dedup_storage_size(8), 8), "dedup");
    memset(&meta, 0, sizeof meta);
    meta.schema_version = 2;
    meta.position.epoch = 77;
    for (f = 1; f <= flushes; f++) {
        for (i = 0; i < 3; i++) {
            opstate_position pos;
            pos.seq = (uint64_t)(f * 10 + i);
            pos.time = 1700000000000000000LL + f;
            pos.epoch = 77;
            snprintf(key, sizeof key, "k%d", (f + i) % 5);
            snprintf(value, sizeof value, "{\"v\":%d}", f * i);
            check(opstate_kv_put(kv, text(key), text(value), pos), "put");
            meta.position = pos;
        }
        snprintf(key, sizeof key, "k%d", (f + 3) % 5);
        check(opstate_kv_delete(kv, text(key), meta.position), "delete");
        memset(id.bytes, f, sizeof id.bytes);
        opstate_dedup_insert(&dedup, &id);
        check(s.flush(s.user, kv, &meta, &dedup, NULL), "flush");
        opstate_kv_mark_clean(kv);
        if (f == compact) {
            check(opstate_lmdb_store_compact(st, NULL), "compact");
            if (opstate_kv_has_base(kv)) opstate_kv_forget_clean(kv);
        }
    }
    opstate_kv_destroy(kv);
    opstate_lmdb_store_close(st);
    opstate_lmdb_close(env);
    dump(dir, fuzz_store_dbs, FUZZ_COUNT(fuzz_store_dbs), opts, name);
}

static void blob_scenario(void)
{
    char dir[FUZZ_PATH_CAP];
    opstate_lmdb *env = fresh(dir, sizeof dir, "store-blob");
    opstate_lmdb_store_config sc;
    opstate_lmdb_store *st;
    opstate_snapshot_meta meta;
    memset(&sc, 0, sizeof sc);
    sc.name = "s";
    memset(&meta, 0, sizeof meta);
    meta.position.seq = 5;
    check(opstate_lmdb_store_open(env, &sc, &st, NULL), "store open");
    check(opstate_lmdb_blob_save(st, text("opaque state bytes"), &meta, NULL), "blob save");
    opstate_lmdb_store_close(st);
    opstate_lmdb_close(env);
    dump(dir, fuzz_store_dbs, FUZZ_COUNT(fuzz_store_dbs), 0, "store-blob");
}

/* Layout 0: one "snapshot" record in the meta database, which a store
   open migrates. */
static void layout0_scenario(void)
{
    opstate_kv *kv;
    opstate_dedup dedup;
    opstate_snapshot_meta meta;
    opstate_position pos;
    opstate_id id;
    char path[FUZZ_PATH_CAP + 64];
    uint8_t *snap;
    size_t n = 0;
    FILE *f;
    int i;
    check(opstate_kv_create(NULL, &kv), "kv");
    check(opstate_dedup_init(&dedup, dedup_storage, opstate_dedup_storage_size(4), 4), "dedup");
    memset(&pos, 0, sizeof pos);
    for (i = 0; i < 3; i++) {
        char key[16];
        pos.seq = (uint64_t)i + 1;
        snprintf(key, sizeof key, "old%d", i);
        check(opstate_kv_put(kv, text(key), text("{}"), pos), "put");
        memset(id.bytes, 0x30 + i, sizeof id.bytes);
        opstate_dedup_insert(&dedup, &id);
    }
    memset(&meta, 0, sizeof meta);
    meta.position = pos;
    check(opstate_snapshot_encode(kv, &meta, &dedup, NULL, 0, &n, NULL), "snapshot size");
    if (!(snap = (uint8_t *)malloc(n))) check(OPSTATE_NO_MEMORY, "snapshot");
    check(opstate_snapshot_encode(kv, &meta, &dedup, snap, n, &n, NULL), "snapshot");
    opstate_kv_destroy(kv);
    /* one record: the meta database (sel 0), key "snapshot" */
    snprintf(path, sizeof path, "%s/store-layout0", out_dir);
    if (!(f = fopen(path, "wb")) || fputc(0, f) == EOF || !fuzz_plant_write(f, 0, "snapshot", 8, snap, n) || fclose(f) != 0)
        check(OPSTATE_IO, path);
    free(snap);
}

static int64_t seed_clock(void *user)
{
    static int64_t t = 1700000000000000000LL;
    (void)user;
    return t += 1000;
}

static void log_scenario(const char *name, int messages, uint64_t purge_below, unsigned opts)
{
    char dir[FUZZ_PATH_CAP];
    opstate_lmdb *env = fresh(dir, sizeof dir, name);
    opstate_lmdb_log_config lc;
    opstate_lmdb_log *lg;
    opstate_log log;
    int i;
    memset(&lc, 0, sizeof lc);
    lc.clock = seed_clock;
    lc.duplicate_window_ns = 3000;
    check(opstate_lmdb_log_open(env, &lc, &lg, NULL), "log open");
    log = opstate_lmdb_log_iface(lg);
    for (i = 0; i < messages; i++) {
        static const char *const subjects[] = {"a.b", "a.c", "x.y.z"};
        opstate_append_options ao;
        opstate_append_result res;
        opstate_id id;
        memset(&ao, 0, sizeof ao);
        memset(id.bytes, 0x40 + i, sizeof id.bytes);
        if (i % 2 == 0) ao.msg_id = &id;
        check(log.append(log.user, text(subjects[i % 3]), text(i % 2 ? "payload" : ""), &ao, &res, NULL), "append");
    }
    if (purge_below) check(opstate_lmdb_log_purge(lg, purge_below, NULL), "purge");
    opstate_lmdb_log_close(lg);
    opstate_lmdb_close(env);
    dump(dir, fuzz_log_dbs, FUZZ_COUNT(fuzz_log_dbs), opts, name);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: lmdb_seeds OUTDIR\n");
        return 2;
    }
    out_dir = argv[1];
    store_scenario("store-empty", false, 0, 0, 0x00);
    store_scenario("store-deltas", false, 3, 0, 0x02);
    store_scenario("store-deltas-rt", true, 3, 0, 0x03);
    store_scenario("store-table", false, 2, 2, 0x04);
    store_scenario("store-mixed-rt", true, 4, 2, 0x0D);
    blob_scenario();
    layout0_scenario();
    log_scenario("log-empty", 0, 0, 0x00);
    log_scenario("log-five", 5, 0, 0x40);
    log_scenario("log-purged", 7, 3, 0x8A);
    log_scenario("log-retention", 6, 0, 0xDE);
    return 0;
}
