/* fuzz_lmdb_import.c — libFuzzer target for the export manifest
   (opstate_lmdb.h >>export): opstate_lmdb_import of an export directory
   whose MANIFEST is the input.

   Once per process a small environment (a blob store "a" and a KV store
   "b" with their positions, and an empty store "c") is exported with
   opstate_lmdb_export; its data.mdb stays, and each input replaces the
   MANIFEST. The first "@@" in the input becomes "<size> <crc32c hex>" of
   that data.mdb, so the fuzzer gets past the checksum whatever the copy's
   bytes are. An import that succeeds must have installed data.mdb, and the
   destination is emptied for the next input. Any result is fine; a
   crash, undefined behaviour, a leak or a hang is not.

   Build: make build/fuzz-lmdb_import (libFuzzer) or
   build/fuzz-replay-lmdb_import (seeds). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lmdb_plant.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char export_dir[FUZZ_PATH_CAP], dest_dir[FUZZ_PATH_CAP], size_crc[64];

static void put_position(opstate_lmdb *env, const char *name, bool blob)
{
    opstate_lmdb_store_config sc;
    opstate_lmdb_store *st;
    opstate_snapshot_meta meta;
    memset(&sc, 0, sizeof sc);
    sc.name = name;
    memset(&meta, 0, sizeof meta);
    meta.schema_version = 3;
    meta.position.seq = blob ? 42 : 7;
    meta.position.time = blob ? -5 : 1700000000000000000LL;
    meta.position.epoch = 9;
    if (opstate_lmdb_store_open(env, &sc, &st, NULL) != OPSTATE_OK) abort();
    if (blob) {
        opstate_bytes b;
        b.ptr = (const uint8_t *)"state";
        b.len = 5;
        if (opstate_lmdb_blob_save(st, b, &meta, NULL) != OPSTATE_OK) abort();
    } else if (name[0] == 'b') {
        opstate_store s = opstate_lmdb_store_iface(st);
        opstate_kv *kv;
        opstate_bytes k, v;
        k.ptr = v.ptr = (const uint8_t *)"kv";
        k.len = v.len = 2;
        if (opstate_kv_create(NULL, &kv) != OPSTATE_OK || opstate_kv_put(kv, k, v, meta.position) != OPSTATE_OK ||
            s.flush(s.user, kv, &meta, NULL, NULL) != OPSTATE_OK)
            abort();
        opstate_kv_destroy(kv);
    }
    opstate_lmdb_store_close(st);
}

/* The export every input's MANIFEST goes with. */
static void make_export(void)
{
    char src[FUZZ_PATH_CAP], data_path[FUZZ_PATH_CAP + 16];
    opstate_lmdb *env;
    uint8_t buf[4096];
    uint64_t total = 0;
    uint32_t crc = 0;
    size_t n;
    FILE *f;
    fuzz_scratch_path(src, sizeof src, "src");
    fuzz_scratch_path(export_dir, sizeof export_dir, "export");
    fuzz_scratch_path(dest_dir, sizeof dest_dir, "dest");
    if (!(env = fuzz_lmdb_open(src))) abort();
    put_position(env, "a", true);
    put_position(env, "b", false);
    put_position(env, "c", false);
    if (opstate_lmdb_export(env, export_dir, NULL) != OPSTATE_OK) abort();
    opstate_lmdb_close(env);
    snprintf(data_path, sizeof data_path, "%s/data.mdb", export_dir);
    if (!(f = fopen(data_path, "rb"))) abort();
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
        crc = opstate_crc32c(crc, buf, n);
        total += n;
    }
    fclose(f);
    snprintf(size_crc, sizeof size_crc, "%llu %08lx", (unsigned long long)total, (unsigned long)crc);
}

static void write_manifest(const uint8_t *data, size_t size)
{
    char path[FUZZ_PATH_CAP + 16];
    const uint8_t *at = NULL;
    size_t i;
    FILE *f;
    for (i = 0; i + 1 < size && !at; i++)
        if (data[i] == '@' && data[i + 1] == '@') at = data + i;
    snprintf(path, sizeof path, "%s/MANIFEST", export_dir);
    if (!(f = fopen(path, "wb"))) abort();
    if (at) {
        fwrite(data, 1, (size_t)(at - data), f);
        fputs(size_crc, f);
        fwrite(at + 2, 1, size - (size_t)(at - data) - 2, f);
    } else if (size) {
        fwrite(data, 1, size, f);
    }
    if (fclose(f) != 0) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char installed[FUZZ_PATH_CAP + 16];
    opstate_error err;
    opstate_result r;
    if (!export_dir[0]) make_export();
    write_manifest(data, size);
    r = opstate_lmdb_import(export_dir, dest_dir, &err);
    snprintf(installed, sizeof installed, "%s/data.mdb", dest_dir);
    if (r == OPSTATE_OK && access(installed, F_OK) != 0) abort();
    fuzz_remove_tree(dest_dir);
    return 0;
}
