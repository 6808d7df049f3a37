/* lmdb_plant.h — shared by the LMDB fuzz targets (fuzz_lmdb_store.c,
   fuzz_lmdb_log.c, fuzz_lmdb_import.c) and lmdb_seeds.c: one scratch
   directory per process (fuzz_cli_parse.c uses it too), and raw records
   planted into an environment's named databases with plain LMDB while no
   opstate handle has it open (LMDB allows one handle per environment per
   process). The targets then read the records back through opstate's
   public API only, so they stay valid whatever the record formats become.

   Input of a planting target: one options byte (the target's own), then
   records, each

       sel | key length (1 byte) | value length (2 bytes, LE) | key | value

   sel % n picks the database from the target's list. sel bit 0x80 replaces
   the value's last 4 bytes with the CRC32C of the value before them, and
   bit 0x40 does the same over key + value (the table's records): records
   ending in a checksum stop almost every mutation at CORRUPT, and this lets
   the fuzzer reach the checks behind it (as crc_fix.h does). A cut-off
   last record is ignored. */
#ifndef FUZZ_LMDB_PLANT_H
#define FUZZ_LMDB_PLANT_H

#include <dirent.h>
#include <lmdb.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../opstate_lmdb.h"

#define FUZZ_PLANT_SEL_CRC 0x80u
#define FUZZ_PLANT_SEL_CRC_KEY 0x40u
#define FUZZ_PATH_CAP 512

/* The databases of the store "s" and of the log "events" (the LAYOUT in
   opstate_lmdb.h's guide), in the order an input's sel picks them. */
static const char *const fuzz_store_dbs[] = {"s:s:meta", "s:s:table", "s:s:deltas"};
static const char *const fuzz_log_dbs[] = {"l:events:msgs", "l:events:subj",  "l:events:bysubj",
                                           "l:events:ids",  "l:events:idseq", "l:events:meta"};
#define FUZZ_COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* Functions are static inline: a target that uses some is not warned about
   the others. */
static char fuzz_scratch[FUZZ_PATH_CAP];

/* rm -r of what the targets make (files and directories, no links out). */
static inline void fuzz_remove_tree(const char *path)
{
    DIR *d = opendir(path);
    struct dirent *ent;
    char sub[FUZZ_PATH_CAP];
    if (!d) {
        unlink(path);
        return;
    }
    while ((ent = readdir(d)) != NULL) {
        if (strcmp(ent->d_name, ".") == 0 || strcmp(ent->d_name, "..") == 0) continue;
        if ((size_t)snprintf(sub, sizeof sub, "%s/%s", path, ent->d_name) < sizeof sub) fuzz_remove_tree(sub);
    }
    closedir(d);
    rmdir(path);
}

static inline void fuzz_scratch_remove(void) { fuzz_remove_tree(fuzz_scratch); }

/* "<scratch>/<name>" into out; the scratch directory is made on first use
   (mkdtemp under $TMPDIR or /tmp) and removed at exit. */
static inline const char *fuzz_scratch_path(char *out, size_t cap, const char *name)
{
    if (!fuzz_scratch[0]) {
        const char *tmp = getenv("TMPDIR");
        snprintf(fuzz_scratch, sizeof fuzz_scratch, "%s/opstate-fuzz-XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(fuzz_scratch)) {
            perror("fuzz: mkdtemp");
            abort();
        }
        atexit(fuzz_scratch_remove);
    }
    if ((size_t)snprintf(out, cap, "%s/%s", fuzz_scratch, name) >= cap) abort();
    return out;
}

/* Opens the environment at dir through opstate: a small map that may grow
   a little (so a full map is reached too), no fsync. */
static inline opstate_lmdb *fuzz_lmdb_open(const char *dir)
{
    opstate_lmdb_config c;
    opstate_lmdb *env = NULL;
    memset(&c, 0, sizeof c);
    c.path = dir;
    c.map_size = (size_t)256 << 10;
    c.max_map_size = (size_t)2 << 20;
    c.durability = OPSTATE_LMDB_SYNC_NONE;
    return opstate_lmdb_open(&c, &env, NULL) == OPSTATE_OK ? env : NULL;
}

/* One record of the input. */
typedef struct fuzz_plant_record {
    unsigned sel;
    opstate_bytes key, value;
} fuzz_plant_record;

/* The record at *at of data (moving *at past it); false at the end or at a
   cut-off record. */
static inline bool fuzz_plant_next(const uint8_t *data, size_t size, size_t *at, fuzz_plant_record *r)
{
    size_t p = *at, klen, vlen;
    if (size - p < 4) return false;
    klen = data[p + 1];
    vlen = (size_t)data[p + 2] | (size_t)data[p + 3] << 8;
    if (klen + vlen > size - p - 4) return false;
    r->sel = data[p];
    r->key.ptr = data + p + 4;
    r->key.len = klen;
    r->value.ptr = data + p + 4 + klen;
    r->value.len = vlen;
    *at = p + 4 + klen + vlen;
    return true;
}

/* A copy of the record's value, its checksum fixed as sel asks (NULL: no
   memory). The caller frees it. */
static inline uint8_t *fuzz_plant_value(const fuzz_plant_record *r)
{
    uint8_t *v = (uint8_t *)malloc(r->value.len ? r->value.len : 1);
    uint32_t crc = 0;
    if (!v) return NULL;
    if (r->value.len) memcpy(v, r->value.ptr, r->value.len);
    if (r->value.len < 4 || !(r->sel & (FUZZ_PLANT_SEL_CRC | FUZZ_PLANT_SEL_CRC_KEY))) return v;
    if (r->sel & FUZZ_PLANT_SEL_CRC_KEY) crc = opstate_crc32c(0, r->key.ptr, r->key.len);
    opstate_put_le32(v + r->value.len - 4, opstate_crc32c(crc, v, r->value.len - 4));
    return v;
}

/* Empties the databases dbs[0..n) of the environment at dir (creating it
   and them) and puts the records of data into them, with plain LMDB, no
   opstate handle open. Records LMDB refuses (an empty key, a full map) are
   left out. Returns false when the environment cannot be opened. */
static inline bool fuzz_lmdb_plant(const char *dir, const char *const *dbs, size_t n, const uint8_t *data, size_t size)
{
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    MDB_dbi dbi[16];
    fuzz_plant_record r;
    size_t i, at = 0;
    int rc;
    if (n == 0 || n > sizeof dbi / sizeof dbi[0]) abort();
    if (mkdir(dir, 0700) != 0 && access(dir, F_OK) != 0) return false;
    rc = mdb_env_create(&env);
    if (rc == 0) rc = mdb_env_set_maxdbs(env, 64);
    if (rc == 0) rc = mdb_env_open(env, dir, MDB_NOSYNC | MDB_NOTLS, 0600);
    if (rc == 0) rc = mdb_txn_begin(env, NULL, 0, &txn);
    for (i = 0; rc == 0 && i < n; i++)
        if ((rc = mdb_dbi_open(txn, dbs[i], MDB_CREATE, &dbi[i])) == 0) rc = mdb_drop(txn, dbi[i], 0);
    while (rc == 0 && fuzz_plant_next(data, size, &at, &r)) {
        uint8_t *val = fuzz_plant_value(&r);
        MDB_val k, v;
        if (!val) break;
        k.mv_data = (void *)(uintptr_t)r.key.ptr;
        k.mv_size = r.key.len;
        v.mv_data = val;
        v.mv_size = r.value.len;
        mdb_put(txn, dbi[r.sel % n], &k, &v, 0); /* a refused record is simply not there */
        free(val);
    }
    if (txn && (rc != 0 || mdb_txn_commit(txn) != 0)) {
        if (rc != 0) mdb_txn_abort(txn);
        rc = -1;
    }
    if (env) mdb_env_close(env);
    return rc == 0;
}

/* Writes one record in the input layout (false: too long for it). */
static inline bool fuzz_plant_write(FILE *f, unsigned sel, const void *key, size_t klen, const void *value, size_t vlen)
{
    uint8_t head[4];
    if (klen > 255 || vlen > 65535) return false;
    head[0] = (uint8_t)sel;
    head[1] = (uint8_t)klen;
    head[2] = (uint8_t)vlen;
    head[3] = (uint8_t)(vlen >> 8);
    return fwrite(head, 1, 4, f) == 4 && fwrite(key, 1, klen, f) == klen && fwrite(value, 1, vlen, f) == vlen;
}

/* Writes the records of the databases dbs[0..n) of the environment at dir
   to the file `path` in the input layout, after the options byte `opts`:
   the inverse of fuzz_lmdb_plant, for making seeds from real stores and
   logs (lmdb_seeds.c). Records too long for the layout are left out. */
static inline bool fuzz_lmdb_dump(const char *dir, const char *const *dbs, size_t n, unsigned opts, const char *path)
{
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    FILE *f = fopen(path, "wb");
    size_t i;
    int rc = f ? mdb_env_create(&env) : -1;
    if (rc == 0) rc = mdb_env_set_maxdbs(env, 64);
    if (rc == 0) rc = mdb_env_open(env, dir, MDB_RDONLY | MDB_NOTLS, 0600);
    if (rc == 0) rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn);
    if (rc == 0) fputc((int)opts, f);
    for (i = 0; rc == 0 && i < n; i++) {
        MDB_dbi dbi;
        MDB_cursor *cur;
        MDB_val k, v;
        int got;
        if (mdb_dbi_open(txn, dbs[i], 0, &dbi) != 0 || mdb_cursor_open(txn, dbi, &cur) != 0) continue;
        for (got = mdb_cursor_get(cur, &k, &v, MDB_FIRST); got == 0; got = mdb_cursor_get(cur, &k, &v, MDB_NEXT))
            fuzz_plant_write(f, (unsigned)i, k.mv_data, k.mv_size, v.mv_data, v.mv_size);
        mdb_cursor_close(cur);
    }
    if (txn) mdb_txn_abort(txn);
    if (env) mdb_env_close(env);
    if (f && fclose(f) != 0) rc = -1;
    return rc == 0;
}

/* Reads every byte of b (a wild pointer or length shows up here). */
static inline unsigned fuzz_touch(opstate_bytes b)
{
    unsigned sum = 0;
    size_t i;
    for (i = 0; i < b.len; i++) sum += b.ptr[i];
    return sum;
}

#endif
