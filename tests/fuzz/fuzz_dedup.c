/* fuzz_dedup.c — libFuzzer target for the serialised dedup window.

   Decodes into a window of capacity 64 that already holds a few ids. On
   failure the window and its storage must be untouched; on success the
   window must re-encode to the input's ids in order (a repeated id kept once,
   as documented; without repeats that is the input itself), and every
   decoded id must be found. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../opstate.h"
#include "crc_fix.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
static int check_one(const uint8_t *data, size_t size);

#define FUZZ_DEDUP_CAP 64u

static uint32_t storage[8192], storage_copy[8192];
static uint8_t expect[10 + 16 * FUZZ_DEDUP_CAP];

static int check_one(const uint8_t *data, size_t size)
{
    opstate_dedup d, before;
    opstate_error err;
    opstate_result r;
    size_t sz = opstate_dedup_storage_size(FUZZ_DEDUP_CAP), n = 0, m = 0, i, j, in_count,
           distinct = 0;
    uint32_t crc;
    uint8_t *enc;
    opstate_id id;

    if (sz == 0 || sz > sizeof storage) abort();
    if (opstate_dedup_init(&d, storage, sz, FUZZ_DEDUP_CAP) != OPSTATE_OK) abort();
    for (i = 0; i < 3; i++) {
        memset(id.bytes, (int)(0xE0 + i), sizeof id.bytes);
        opstate_dedup_insert(&d, &id);
    }
    memcpy(&before, &d, sizeof d);
    memcpy(storage_copy, storage, sz);

    r = opstate_dedup_decode(&d, data, size, &err);
    if (r != OPSTATE_OK) {
        if (memcmp(&d, &before, sizeof d) != 0) abort();
        if (memcmp(storage, storage_copy, sz) != 0) abort();
        if (err.result != r) abort();
        return 0;
    }
    if (d.count > FUZZ_DEDUP_CAP) abort();
    /* the expected window: the input's ids in order, a repeat kept once at
       its first place (documented); re-encoding must give exactly that */
    in_count = (size - 10) / 16;
    if (in_count > FUZZ_DEDUP_CAP) abort();
    memcpy(expect, data, 6);
    for (i = 0; i < in_count; i++) {
        const uint8_t *idp = data + 6 + 16 * i;
        for (j = 0; j < distinct; j++)
            if (memcmp(expect + 6 + 16 * j, idp, 16) == 0) break;
        if (j == distinct) memcpy(expect + 6 + 16 * distinct++, idp, 16);
    }
    if (d.count != distinct) abort();
    expect[2] = (uint8_t)distinct;
    expect[3] = expect[4] = expect[5] = 0;
    crc = opstate_crc32c(0, expect, 6 + 16 * distinct);
    for (i = 0; i < 4; i++) expect[6 + 16 * distinct + i] = (uint8_t)(crc >> (8 * i));
    n = 10 + 16 * distinct;
    if (opstate_dedup_encode(&d, NULL, 0, &m) != OPSTATE_OK || m != n) abort();
    enc = (uint8_t *)malloc(n);
    if (!enc) return 0;
    if (opstate_dedup_encode(&d, enc, n, &m) != OPSTATE_OK || m != n) abort();
    if (memcmp(enc, expect, n) != 0) abort();
    free(enc);
    /* every decoded id is found */
    for (i = 0; i < distinct; i++) {
        memcpy(id.bytes, expect + 6 + 16 * i, 16);
        if (!opstate_dedup_contains(&d, &id)) abort();
    }
    /* and the window keeps working: a fresh id goes in */
    memset(id.bytes, 0x5A, sizeof id.bytes);
    id.bytes[0] = (uint8_t)size;
    if (!opstate_dedup_contains(&d, &id)) {
        if (!opstate_dedup_insert(&d, &id)) abort();
        if (!opstate_dedup_contains(&d, &id)) abort();
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_as_is_and_with_crc(data, size, check_one);
    return 0;
}
