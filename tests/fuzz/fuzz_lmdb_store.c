/* fuzz_lmdb_store.c — libFuzzer target for the records of an LMDB state
   store (opstate_lmdb.h >>store): meta, table entries, delta records, the
   layout-0 snapshot record a store is migrated from, and blobs.

   The input's records are planted raw into the store's databases (see
   lmdb_plant.h for the input layout) and then read only through the public
   API: store open (which migrates a layout-0 store), read_meta, load into a
   fold (load-all, or read-through with get and iterate over the table),
   blob load, then optionally a flush and compactions over what was
   planted. Any result is fine; a crash, undefined behaviour, a leak or a
   hang is not.

   Options byte: 0x01 read-through, 0x02 no compaction at close, 0x04 put
   and flush after the load, 0x08 compact before closing.

   Build: make build/fuzz-lmdb_store (libFuzzer) or
   build/fuzz-replay-lmdb_store (seeds). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lmdb_plant.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_DEDUP_CAP 64u

static uint32_t dedup_storage[4096];
static unsigned sink; /* keeps the reads of fuzz_touch */

static bool touch_item(void *user, const opstate_kv_item *item)
{
    (void)user;
    sink += fuzz_touch(item->key) + fuzz_touch(item->value);
    return true;
}

static void touch_blob(void *user, opstate_bytes blob, const opstate_snapshot_meta *meta)
{
    (void)user;
    sink += fuzz_touch(blob) + (unsigned)meta->position.seq;
}

/* Looks up every planted key through the fold (read-through: the table). */
static void get_planted_keys(const opstate_kv *kv, const uint8_t *data, size_t size)
{
    fuzz_plant_record r;
    size_t at = 0;
    while (fuzz_plant_next(data, size, &at, &r)) {
        opstate_kv_item item;
        if (r.key.len && opstate_kv_get(kv, r.key, &item) == OPSTATE_OK) touch_item(NULL, &item);
    }
}

/* load, read, and (options) write over what was loaded. */
static void use_store(opstate_lmdb_store *st, unsigned opts, const uint8_t *recs, size_t size)
{
    opstate_store s = opstate_lmdb_store_iface(st);
    opstate_snapshot_meta meta;
    opstate_kv_config kc;
    opstate_kv *kv = NULL;
    opstate_dedup dedup;
    opstate_error err;
    size_t dsz = opstate_dedup_storage_size(FUZZ_DEDUP_CAP);

    if (dsz == 0 || dsz > sizeof dedup_storage) abort();
    (void)s.read_meta(s.user, &meta, &err);
    memset(&kc, 0, sizeof kc);
    kc.base = s.base ? s.base(s.user) : NULL;
    kc.max_key_len = s.max_key_len;
    if ((opts & 0x01) && !kc.base) abort(); /* read-through was asked for */
    if (opstate_kv_create(&kc, &kv) != OPSTATE_OK) return;
    if (opstate_dedup_init(&dedup, dedup_storage, dsz, FUZZ_DEDUP_CAP) != OPSTATE_OK) abort();
    if (s.load(s.user, kv, &meta, &dedup, &err) == OPSTATE_OK) {
        (void)opstate_kv_count(kv);
        (void)opstate_kv_iterate(kv, touch_item, NULL);
        get_planted_keys(kv, recs, size);
        if (opts & 0x04) {
            static const uint8_t k[] = "fuzz-key", v[] = "fuzz-value";
            opstate_bytes key, value;
            opstate_position pos;
            key.ptr = k;
            key.len = sizeof k - 1;
            value.ptr = v;
            value.len = sizeof v - 1;
            pos = meta.position;
            pos.seq++;
            meta.position = pos;
            if (opstate_kv_put(kv, key, value, pos) == OPSTATE_OK &&
                s.flush(s.user, kv, &meta, &dedup, &err) == OPSTATE_OK)
                opstate_kv_mark_clean(kv);
            if (opstate_lmdb_store_compact(st, &err) == OPSTATE_OK && opstate_kv_has_base(kv))
                opstate_kv_forget_clean(kv); /* what the consumer does after a compaction */
            (void)opstate_kv_iterate(kv, touch_item, NULL);
        }
    }
    opstate_kv_destroy(kv);
    (void)opstate_lmdb_blob_load(st, touch_blob, NULL, &err);
    if (opts & 0x08) (void)opstate_lmdb_store_compact(st, &err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char dir[FUZZ_PATH_CAP];
    opstate_lmdb *env;
    opstate_lmdb_store *st = NULL;
    opstate_lmdb_store_config sc;
    unsigned opts = size ? data[0] : 0;
    const uint8_t *recs = size ? data + 1 : data;
    size_t n = size ? size - 1 : 0;

    fuzz_scratch_path(dir, sizeof dir, "store");
    if (!fuzz_lmdb_plant(dir, fuzz_store_dbs, FUZZ_COUNT(fuzz_store_dbs), recs, n)) return 0;
    if (!(env = fuzz_lmdb_open(dir))) return 0;
    memset(&sc, 0, sizeof sc);
    sc.name = "s";
    sc.read_through = (opts & 0x01) != 0;
    sc.no_compact_on_close = (opts & 0x02) != 0;
    if (opstate_lmdb_store_open(env, &sc, &st, NULL) == OPSTATE_OK) {
        use_store(st, opts, recs, n);
        opstate_lmdb_store_close(st);
    }
    opstate_lmdb_close(env);
    return 0;
}
