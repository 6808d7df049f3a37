/* fuzz_id.c — libFuzzer target for event ids (opstate.h >>ids).

   Invariants, each checked with abort():
   - id text parse: OK exactly when the input is 36 characters of lowercase
     hex with dashes at 8, 13, 18, 23 (an independent oracle); then to_text
     gives back the same 36 bytes. On failure: INVALID_ID, err->offset at the
     first bad character, *out untouched.
   - any 16 bytes -> text -> the same 16 bytes.
   - time-ordered id: negative time is INVALID_ARGUMENT with *out untouched;
     otherwise version 7, variant 10, the millisecond field, and bytes 0..7
     independent of the entropy.
   - content id: version 8, variant 10, the same for the same content in
     another buffer, the time ignored without has_time.

   Build: make build/fuzz-id (libFuzzer) or build/fuzz-replay-id (seeds). */
#include <stdint.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "../../opstate.h"

#define FUZZ_ASSERT(c) do { if (!(c)) abort(); } while (0)

static int fuzz_is_lower_hex(uint8_t c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

static int fuzz_is_dash_pos(size_t i) { return i == 8 || i == 13 || i == 18 || i == 23; }

/* Index of the first character that is wrong for its position, or 36. */
static size_t fuzz_first_bad(const uint8_t *t, size_t n)
{
    size_t i, lim = n < OPSTATE_ID_TEXT_LEN ? n : OPSTATE_ID_TEXT_LEN;
    for (i = 0; i < lim; i++) {
        if (fuzz_is_dash_pos(i) ? t[i] != '-' : !fuzz_is_lower_hex(t[i])) return i;
    }
    return lim;
}

static void fuzz_text(const uint8_t *data, size_t size)
{
    opstate_id id, pre;
    opstate_error err;
    opstate_result r;
    char txt[OPSTATE_ID_TEXT_LEN];
    size_t bad = fuzz_first_bad(data, size);
    int want_ok = size == OPSTATE_ID_TEXT_LEN && bad == OPSTATE_ID_TEXT_LEN;

    memset(&pre, 0xA5, sizeof pre);
    id = pre;
    memset(&err, 0, sizeof err);
    r = opstate_id_from_text((const char *)data, size, &id, &err);
    FUZZ_ASSERT((r == OPSTATE_OK) == want_ok);
    if (r == OPSTATE_OK) {
        opstate_id_to_text(&id, txt);
        FUZZ_ASSERT(memcmp(txt, data, OPSTATE_ID_TEXT_LEN) == 0);
    } else {
        FUZZ_ASSERT(r == OPSTATE_INVALID_ID);
        FUZZ_ASSERT(err.result == OPSTATE_INVALID_ID);
        FUZZ_ASSERT(memcmp(&id, &pre, sizeof id) == 0);
        FUZZ_ASSERT(err.offset <= size);
        /* With exactly 36 characters the first bad one is unambiguous. For
           another length the implementation reports where the length goes
           wrong (min(len, 36)), even when an earlier character is bad too. */
        if (size == OPSTATE_ID_TEXT_LEN) FUZZ_ASSERT(err.offset == bad);
        /* A valid prefix that is too short goes wrong at its end. */
        if (size < OPSTATE_ID_TEXT_LEN && bad == size) FUZZ_ASSERT(err.offset == size);
    }
    /* err is optional */
    FUZZ_ASSERT(opstate_id_from_text((const char *)data, size, &id, NULL) == r);
}

static void fuzz_bytes_to_text(const uint8_t *data, size_t size)
{
    opstate_id id, back;
    char txt[OPSTATE_ID_TEXT_LEN];
    size_t i;
    if (size < 16) return;
    memcpy(id.bytes, data, 16);
    opstate_id_to_text(&id, txt);
    for (i = 0; i < OPSTATE_ID_TEXT_LEN; i++) {
        if (fuzz_is_dash_pos(i)) FUZZ_ASSERT(txt[i] == '-');
        else FUZZ_ASSERT(fuzz_is_lower_hex((uint8_t)txt[i]));
    }
    FUZZ_ASSERT(opstate_id_from_text(txt, sizeof txt, &back, NULL) == OPSTATE_OK);
    FUZZ_ASSERT(opstate_id_equal(&id, &back));
    FUZZ_ASSERT(memcmp(id.bytes, back.bytes, 16) == 0);
}

static void fuzz_time_ordered(const uint8_t *data, size_t size)
{
    static const uint8_t zero[8] = {0};
    opstate_id id, pre, z;
    int64_t t;
    uint64_t ms = 0;
    opstate_result r;
    int i;
    if (size < 18) return;
    memcpy(&t, data, sizeof t);
    memset(&pre, 0x5A, sizeof pre);
    id = pre;
    r = opstate_id_time_ordered(t, data + 8, &id);
    if (t < 0) {
        FUZZ_ASSERT(r == OPSTATE_INVALID_ARGUMENT);
        FUZZ_ASSERT(memcmp(&id, &pre, sizeof id) == 0);
        return;
    }
    FUZZ_ASSERT(r == OPSTATE_OK);
    FUZZ_ASSERT((id.bytes[6] >> 4) == 7);
    FUZZ_ASSERT((id.bytes[8] & 0xC0) == 0x80);
    for (i = 0; i < 6; i++) ms = (ms << 8) | id.bytes[i];
    FUZZ_ASSERT(ms == (uint64_t)(t / 1000000));
    FUZZ_ASSERT(opstate_id_time_ordered(t, zero, &z) == OPSTATE_OK);
    FUZZ_ASSERT(memcmp(z.bytes, id.bytes, 8) == 0);
    /* A time 1/4096 ms later or more (245 ns) sorts strictly later, any
       entropy. */
    if (t <= INT64_MAX - 1000000) {
        opstate_id later;
        int64_t dt = 245 + (int64_t)(data[17] * 3907);
        FUZZ_ASSERT(opstate_id_time_ordered(t + dt, zero, &later) == OPSTATE_OK);
        FUZZ_ASSERT(memcmp(id.bytes, later.bytes, 16) < 0);
    }
}

static void fuzz_content(const uint8_t *data, size_t size)
{
    opstate_event ev;
    opstate_id a, b, c;
    uint8_t *copy;
    size_t p = 4, ls, lk, ly;
    if (size < 4) return;
    memset(&ev, 0, sizeof ev);
    ls = data[0] % 8u;
    lk = data[1] % 8u;
    ly = data[2] % 16u;
    ev.op = 1u + data[3];
    ev.has_time = (data[3] & 1u) != 0;
    ev.time = (int64_t)data[3] * 1000;
    if (ls > size - p) ls = size - p;
    ev.scope.ptr = data + p;
    ev.scope.len = ls;
    p += ls;
    if (lk > size - p) lk = size - p;
    ev.kind.ptr = data + p;
    ev.kind.len = lk;
    p += lk;
    if (ly > size - p) ly = size - p;
    ev.key.ptr = data + p;
    ev.key.len = ly;
    p += ly;
    ev.data.ptr = data + p;
    ev.data.len = size - p;

    a = opstate_id_from_content(&ev);
    FUZZ_ASSERT((a.bytes[6] >> 4) == 8);
    FUZZ_ASSERT((a.bytes[8] & 0xC0) == 0x80);

    /* Same content, other buffer, other id/position fields. */
    copy = (uint8_t *)malloc(size);
    FUZZ_ASSERT(copy != NULL);
    memcpy(copy, data, size);
    ev.scope.ptr = copy + (ev.scope.ptr - data);
    ev.kind.ptr = copy + (ev.kind.ptr - data);
    ev.key.ptr = copy + (ev.key.ptr - data);
    ev.data.ptr = copy + (ev.data.ptr - data);
    memset(ev.id.bytes, 0xEE, 16);
    ev.position.seq = size;
    b = opstate_id_from_content(&ev);
    FUZZ_ASSERT(opstate_id_equal(&a, &b));

    /* Without has_time the time does not count; with it, it does. */
    ev.time += 1;
    c = opstate_id_from_content(&ev);
    FUZZ_ASSERT(opstate_id_equal(&a, &c) == !ev.has_time);

    /* The op always counts. */
    ev.time -= 1;
    ev.op += 1000;
    c = opstate_id_from_content(&ev);
    FUZZ_ASSERT(!opstate_id_equal(&a, &c));
    free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_text(data, size);
    fuzz_bytes_to_text(data, size);
    fuzz_time_ordered(data, size);
    fuzz_content(data, size);
    return 0;
}
