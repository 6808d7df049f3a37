/* fuzz_event.c — libFuzzer target for the event codec and the JSON writer.

   Any input: opstate_json_valid must not crash. An input that decodes must
   re-encode to the very same bytes (one encoding per event), and its JSON
   rendering must be valid JSON of exactly the announced size. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../opstate.h"
#include "crc_fix.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
static int check_one(const uint8_t *data, size_t size);

static int check_one(const uint8_t *data, size_t size)
{
    opstate_event ev, untouched;
    opstate_error err;
    opstate_result r;
    size_t n = 0, m = 0;
    uint8_t *enc;
    char *json;

    (void)opstate_json_valid(data, size);

    memset(&ev, 0xA5, sizeof ev);
    memcpy(&untouched, &ev, sizeof ev);
    r = opstate_event_decode(data, size, &ev, &err);
    if (r != OPSTATE_OK) {
        if (memcmp(&ev, &untouched, sizeof ev) != 0) abort(); /* *out untouched */
        if (err.result != r || err.offset > size) abort();
        return 0;
    }
    /* zero-copy: every field lies inside the input */
    if (ev.scope.ptr < data || ev.scope.ptr + ev.scope.len > data + size) abort();
    if (ev.kind.ptr < data || ev.kind.ptr + ev.kind.len > data + size) abort();
    if (ev.key.len && (ev.key.ptr < data || ev.key.ptr + ev.key.len > data + size)) abort();
    if (ev.data.len && (ev.data.ptr < data || ev.data.ptr + ev.data.len > data + size)) abort();
    if (ev.position.seq != 0 || ev.position.time != 0 || ev.position.epoch != 0) abort();

    if (opstate_event_encode(&ev, NULL, 0, &n, NULL) != OPSTATE_OK || n != size) abort();
    enc = (uint8_t *)malloc(size);
    if (!enc) return 0;
    if (opstate_event_encode(&ev, enc, size, &m, NULL) != OPSTATE_OK || m != size) abort();
    if (memcmp(enc, data, size) != 0) abort();
    free(enc);

    if (opstate_event_to_json(&ev, NULL, 0, &n) != OPSTATE_OK) abort();
    json = (char *)malloc(n ? n : 1);
    if (!json) return 0;
    if (opstate_event_to_json(&ev, json, n, &m) != OPSTATE_OK || m != n) abort();
    if (!opstate_json_valid((const uint8_t *)json, m)) abort();
    free(json);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_as_is_and_with_crc(data, size, check_one);
    return 0;
}
