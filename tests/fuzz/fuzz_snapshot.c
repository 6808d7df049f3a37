/* fuzz_snapshot.c — libFuzzer target for the snapshot codec.

   Decodes the input into an empty fold, a meta and a dedup window of
   capacity 64 that already holds two ids. On failure the fold must still be
   empty and the meta and the window (struct and storage) untouched, and the
   error detail must carry the returned code. On success nothing may be
   dirty, and the state must re-encode to the same bytes: with the window
   when the input had one, without it when its window length was 0. The one
   documented exception is a window that repeats an id (the dedup decoder
   keeps it once): the expected bytes are then the input with the repeats
   dropped from the window and both CRCs recomputed.

   The CRC trailer stops almost every mutation at CORRUPT, so each input is
   also checked with its window CRC and outer CRC recomputed, which lets the
   fuzzer reach the body checks. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../opstate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_DEDUP_CAP 64u
#define SNAP_FIXED 40u  /* magic .. window length */
#define DEDUP_HEADER 6u /* u8 version | u8 0 | u32 count */

static uint32_t storage[1024], storage_copy[1024];

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static void wr32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static bool count_item(void *user, const opstate_kv_item *it)
{
    (void)it;
    (*(size_t *)user)++;
    return true;
}

/* The bytes a decoded input must re-encode to (caller frees), *n its size.
   Only the window may change: repeated ids are kept once. */
static uint8_t *expected_bytes(const uint8_t *data, size_t size, size_t *n)
{
    uint32_t dlen = rd32(data + 36), count, kept = 0, i, j;
    const uint8_t *ids = data + SNAP_FIXED + DEDUP_HEADER;
    uint8_t *out;
    size_t at, rest;
    *n = size;
    out = (uint8_t *)malloc(size);
    if (!out) abort();
    if (dlen == 0) {
        memcpy(out, data, size);
        return out;
    }
    count = rd32(data + SNAP_FIXED + 2);
    memcpy(out, data, SNAP_FIXED + DEDUP_HEADER);
    at = SNAP_FIXED + DEDUP_HEADER;
    for (i = 0; i < count; i++) {
        for (j = 0; j < i && memcmp(ids + 16 * j, ids + 16 * i, 16) != 0; j++) continue;
        if (j < i) continue; /* a repeat */
        memcpy(out + at, ids + 16 * i, 16);
        at += 16;
        kept++;
    }
    if (kept == count) {
        memcpy(out, data, size);
        return out;
    }
    wr32(out + SNAP_FIXED + 2, kept);
    wr32(out + at, opstate_crc32c(0, out + SNAP_FIXED, at - SNAP_FIXED));
    at += 4;
    wr32(out + 36, (uint32_t)(at - SNAP_FIXED));
    rest = size - (SNAP_FIXED + dlen) - 4; /* body length, body */
    memcpy(out + at, data + SNAP_FIXED + dlen, rest);
    at += rest;
    wr32(out + at, opstate_crc32c(0, out, at));
    *n = at + 4;
    return out;
}

static void check_one(const uint8_t *data, size_t size)
{
    opstate_kv *kv = NULL;
    opstate_dedup d, d_before;
    opstate_snapshot_meta meta, meta_before;
    opstate_error err;
    opstate_result r;
    opstate_id id;
    size_t sz = opstate_dedup_storage_size(FUZZ_DEDUP_CAP), items = 0, n = 0, m = 0, want_n = 0;
    uint8_t *enc, *want;
    int i;

    if (sz == 0 || sz > sizeof storage) abort();
    if (opstate_kv_create(NULL, &kv) != OPSTATE_OK) return;
    if (opstate_dedup_init(&d, storage, sz, FUZZ_DEDUP_CAP) != OPSTATE_OK) abort();
    for (i = 0; i < 2; i++) {
        memset(id.bytes, 0xC0 + i, sizeof id.bytes);
        opstate_dedup_insert(&d, &id);
    }
    memset(&meta, 0x5A, sizeof meta);
    memcpy(&meta_before, &meta, sizeof meta);
    memcpy(&d_before, &d, sizeof d);
    memcpy(storage_copy, storage, sz);
    memset(&err, 0, sizeof err);

    r = opstate_snapshot_decode(data, size, kv, &meta, &d, &err);
    if (r != OPSTATE_OK) {
        if (err.result != r) abort();
        if (opstate_kv_count(kv) != 0 || opstate_kv_dirty_count(kv) != 0) abort();
        if (opstate_kv_iterate(kv, count_item, &items) != OPSTATE_OK || items != 0) abort();
        if (memcmp(&meta, &meta_before, sizeof meta) != 0) abort();
        if (memcmp(&d, &d_before, sizeof d) != 0 || memcmp(storage, storage_copy, sz) != 0) abort();
        opstate_kv_destroy(kv);
        return;
    }
    if (size < 52) abort(); /* the smallest snapshot: header, body length, count, CRC */
    if (opstate_kv_dirty_count(kv) != 0) abort();
    if (d.count > FUZZ_DEDUP_CAP) abort();
    if (opstate_kv_iterate(kv, count_item, &items) != OPSTATE_OK || items != opstate_kv_count(kv)) abort();

    want = expected_bytes(data, size, &want_n);
    {
        const opstate_dedup *dp = rd32(data + 36) ? &d : NULL;
        if (opstate_snapshot_encode(kv, &meta, dp, NULL, 0, &n, NULL) != OPSTATE_OK) abort();
        if (n != want_n) abort();
        enc = (uint8_t *)malloc(n);
        if (!enc) abort();
        if (opstate_snapshot_encode(kv, &meta, dp, enc, n, &m, NULL) != OPSTATE_OK || m != n) abort();
    }
    if (memcmp(enc, want, n) != 0) abort();
    free(enc);
    free(want);
    opstate_kv_destroy(kv);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *fixed;
    check_one(data, size);
    if (size < 52) return 0;
    fixed = (uint8_t *)malloc(size);
    if (!fixed) return 0;
    memcpy(fixed, data, size);
    {
        uint32_t dlen = rd32(fixed + 36);
        if (dlen >= DEDUP_HEADER + 4 && dlen <= size - 52)
            wr32(fixed + SNAP_FIXED + dlen - 4, opstate_crc32c(0, fixed + SNAP_FIXED, dlen - 4));
    }
    wr32(fixed + size - 4, opstate_crc32c(0, fixed, size - 4));
    check_one(fixed, size);
    free(fixed);
    return 0;
}
