/* test_codec.c — result codes, the binary event codec, JSON rendering and
   validation, and the dedup window.

   The wire format is checked against an independent reference encoder and a
   hand-computed golden byte array; CRC32C and base64 have their own small
   reference implementations here, so a bug shared by encoder and decoder
   cannot hide behind a round trip. */
#if defined(__unix__) || defined(__APPLE__)
#define _POSIX_C_SOURCE 200809L
#define TEST_CODEC_HAVE_SYSTEM 1
#endif

#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <time.h>
#if TEST_CODEC_HAVE_SYSTEM
#include <unistd.h>
#endif

#include "runner.h"
#include "../opstate.h"
#include "test_bytes.h"

/* ---------------------------------------------------------------- helpers */

static uint32_t ref_crc_table[256];
static int ref_crc_ready;

/* Bitwise-derived table CRC32C (Castagnoli, reflected 0x82F63B78). */
static uint32_t ref_crc32c(const uint8_t *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    size_t i;
    if (!ref_crc_ready) {
        for (i = 0; i < 256; i++) {
            uint32_t v = (uint32_t)i;
            int k;
            for (k = 0; k < 8; k++) v = (v & 1u) ? (v >> 1) ^ 0x82F63B78u : v >> 1;
            ref_crc_table[i] = v;
        }
        ref_crc_ready = 1;
    }
    for (i = 0; i < n; i++) c = ref_crc_table[(c ^ p[i]) & 0xFFu] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}
static void put64(uint8_t *p, uint64_t v) { put32(p, (uint32_t)v); put32(p + 4, (uint32_t)(v >> 32)); }
static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint64_t get64(const uint8_t *p) { return (uint64_t)get32(p) | ((uint64_t)get32(p + 4) << 32); }

/* Rewrites the CRC trailer of buf[0..len) so only the tested defect remains. */
static void fix_crc(uint8_t *buf, size_t len) { put32(buf + len - 4, ref_crc32c(buf, len - 4)); }

/* Offsets of the documented event layout. */
enum {
    OFF_VERSION = 0, OFF_FLAGS = 1, OFF_TOTAL = 2, OFF_ID = 6, OFF_OP = 22, OFF_TIME = 26,
    OFF_SCOPE_LEN = 34, OFF_KIND_LEN = 36, OFF_KEY_LEN = 38, OFF_DATA_LEN = 40, HDR = 44
};


static opstate_id make_id(uint8_t seed)
{
    opstate_id id;
    int i;
    for (i = 0; i < 16; i++) id.bytes[i] = (uint8_t)(seed * 16 + i);
    return id;
}

static opstate_event make_event(const char *scope, const char *kind, const char *key, uint32_t op,
                                opstate_bytes data, int has_time, int64_t t)
{
    opstate_event ev;
    memset(&ev, 0, sizeof ev);
    ev.id = make_id(0);
    ev.scope = str(scope);
    ev.kind = str(kind);
    ev.key = str(key);
    ev.op = op;
    ev.data = data;
    ev.has_time = has_time != 0;
    ev.time = t;
    return ev;
}

/* Independent reference encoder of the documented layout. Lengths are
   written as given (no validation), so tests can build any defect. Writes
   time 0 when has_time is false. Returns the total size. */
static size_t ref_encode(const opstate_event *ev, uint8_t *out)
{
    size_t total = HDR + ev->scope.len + ev->kind.len + ev->key.len + ev->data.len + 4, o = HDR;
    out[OFF_VERSION] = OPSTATE_CODEC_VERSION;
    out[OFF_FLAGS] = ev->has_time ? 1 : 0;
    put32(out + OFF_TOTAL, (uint32_t)total);
    memcpy(out + OFF_ID, ev->id.bytes, 16);
    put32(out + OFF_OP, ev->op);
    put64(out + OFF_TIME, ev->has_time ? (uint64_t)ev->time : 0u);
    put16(out + OFF_SCOPE_LEN, (uint16_t)ev->scope.len);
    put16(out + OFF_KIND_LEN, (uint16_t)ev->kind.len);
    put16(out + OFF_KEY_LEN, (uint16_t)ev->key.len);
    put32(out + OFF_DATA_LEN, (uint32_t)ev->data.len);
    if (ev->scope.len) memcpy(out + o, ev->scope.ptr, ev->scope.len);
    o += ev->scope.len;
    if (ev->kind.len) memcpy(out + o, ev->kind.ptr, ev->kind.len);
    o += ev->kind.len;
    if (ev->key.len) memcpy(out + o, ev->key.ptr, ev->key.len);
    o += ev->key.len;
    if (ev->data.len) memcpy(out + o, ev->data.ptr, ev->data.len);
    o += ev->data.len;
    put32(out + o, ref_crc32c(out, o));
    return total;
}

static int bytes_eq(opstate_bytes a, opstate_bytes b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

static int same_content(const opstate_event *a, const opstate_event *b)
{
    return memcmp(a->id.bytes, b->id.bytes, 16) == 0 && bytes_eq(a->scope, b->scope) &&
           bytes_eq(a->kind, b->kind) && bytes_eq(a->key, b->key) && a->op == b->op &&
           bytes_eq(a->data, b->data) && a->has_time == b->has_time &&
           (!a->has_time || a->time == b->time);
}

static uint64_t rng_state = 0x9E3779B97F4A7C15u;
static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static uint8_t big_a[8192], big_b[8192];

/* Decodes and checks the failure contract: the given code, *out untouched,
   err->result set and err->offset inside the input. */
static void expect_decode_fail(const uint8_t *buf, size_t len, opstate_result want)
{
    opstate_event out, before;
    opstate_error err;
    opstate_result r;
    memset(&out, 0xA5, sizeof out);
    memcpy(&before, &out, sizeof out);
    memset(&err, 0, sizeof err);
    r = opstate_event_decode(buf, len, &out, &err);
    CHECK_EQ_U64(r, want);
    CHECK(memcmp(&out, &before, sizeof out) == 0);
    CHECK_EQ_U64(err.result, r);
    CHECK(err.offset <= len);
    /* the same answer without an error struct */
    CHECK_EQ_U64(opstate_event_decode(buf, len, &out, NULL), want);
    CHECK(memcmp(&out, &before, sizeof out) == 0);
}

/* ---------------------------------------------------------------- results */

typedef struct result_row { int value; const char *name, *msg; } result_row;
#define ROW(name, value, msg) { value, #name, msg },
static const result_row result_rows[] = { OPSTATE_RESULT_LIST(ROW) };
#undef ROW

TEST(results, strings_distinct_and_non_empty)
{
    size_t i, j;
    for (i = 0; i < COUNT_OF(result_rows); i++) {
        const char *s = opstate_result_str((opstate_result)result_rows[i].value);
        CASE(result_rows[i].name);
        REQUIRE(s != NULL);
        CHECK(s[0] != '\0');
        CHECK_STR(s, result_rows[i].msg);
        CHECK(strcmp(s, "unknown result") != 0);
        for (j = 0; j < i; j++)
            CHECK(strcmp(s, opstate_result_str((opstate_result)result_rows[j].value)) != 0);
    }
}

TEST(results, codes_are_dense_and_ok_is_zero)
{
    size_t i;
    CHECK_EQ_U64(OPSTATE_OK, 0);
    CHECK_EQ_U64(OPSTATE_RESULT_COUNT, COUNT_OF(result_rows));
    for (i = 0; i < COUNT_OF(result_rows); i++) {
        CASE(result_rows[i].name);
        CHECK_EQ_U64(result_rows[i].value, i);
    }
    CHECK_STR(result_rows[0].name, "OK");
}

TEST(results, out_of_range_is_unknown)
{
    CHECK_STR(opstate_result_str(OPSTATE_RESULT_COUNT), "unknown result");
    CHECK_STR(opstate_result_str((opstate_result)(OPSTATE_RESULT_COUNT + 1)), "unknown result");
    CHECK_STR(opstate_result_str((opstate_result)1000), "unknown result");
    CHECK_STR(opstate_result_str((opstate_result)-1), "unknown result");
}

TEST(results, version_number)
{
    char want[32];
    CHECK_EQ_U64(opstate_version_number(), OPSTATE_VERSION_NUMBER);
    CHECK_EQ_U64(OPSTATE_VERSION_NUMBER, OPSTATE_VERSION_MAJOR * 10000 +
                                             OPSTATE_VERSION_MINOR * 100 + OPSTATE_VERSION_PATCH);
    sprintf(want, "%d.%d.%d", OPSTATE_VERSION_MAJOR, OPSTATE_VERSION_MINOR, OPSTATE_VERSION_PATCH);
    CHECK_STR(want, OPSTATE_VERSION_STRING);
}

/* ------------------------------------------------------------------ codec */

/* ab / k / "x.y" / op 0x1244 / time 0x1122334455667788 / data 00 ff,
   id 00 01 .. 0f. Computed by hand from the layout in opstate.h. */
static const uint8_t golden_event[] = {
    0x01,                                           /* version */
    0x01,                                           /* flags: has_time */
    0x38, 0x00, 0x00, 0x00,                         /* total length 56 */
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, /* id */
    0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
    0x44, 0x12, 0x00, 0x00,                         /* op 0x1244 */
    0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, /* time */
    0x02, 0x00,                                     /* scope len */
    0x01, 0x00,                                     /* kind len */
    0x03, 0x00,                                     /* key len */
    0x02, 0x00, 0x00, 0x00,                         /* data len */
    0x61, 0x62, 0x6b, 0x78, 0x2e, 0x79, 0x00, 0xff, /* "ab" "k" "x.y" 00 ff */
    0x90, 0xa3, 0xac, 0x90                          /* CRC32C */
};
static const uint8_t golden_data[] = { 0x00, 0xff };

static opstate_event golden_ev(void)
{
    opstate_event ev = make_event("ab", "k", "x.y", 0x1244u, by(golden_data, 2), 1,
                                  (int64_t)0x1122334455667788);
    return ev;
}

TEST(codec, reference_crc_agrees)
{
    CHECK_EQ_U64(ref_crc32c((const uint8_t *)"123456789", 9), 0xE3069283u);
    CHECK_EQ_U64(opstate_crc32c(0, "123456789", 9), 0xE3069283u);
    CHECK_EQ_U64(opstate_crc32c(0, golden_event, sizeof golden_event - 4),
                 get32(golden_event + sizeof golden_event - 4));
}

/* Whichever CRC32C this build has (the CRC instructions where the CPU has
   them; slice-by-8 in unit-nohw; the 64-byte table of OPSTATE_CRC_SMALL in
   unit-smallcrc) against the reference: every length up to 300 at every
   alignment mod 8, a long buffer, and a checksum continued across every
   split point. Counts the mismatches, so a broken path fails with one
   line, not thousands. */
TEST(codec, crc_lengths_alignments)
{
    static uint8_t buf[4096 + 8];
    size_t i, a, len, k, bad = 0, bad_split = 0;
    for (i = 0; i < sizeof buf; i++) buf[i] = (uint8_t)(i * 131u + (i >> 5));
    for (a = 0; a < 8; a++)
        for (len = 0; len <= 300; len++) bad += opstate_crc32c(0, buf + a, len) != ref_crc32c(buf + a, len);
    for (a = 0; a < 8; a++) bad += opstate_crc32c(0, buf + a, 4096) != ref_crc32c(buf + a, 4096);
    for (len = 0; len <= 80; len++)
        for (k = 0; k <= len; k++)
            bad_split += opstate_crc32c(opstate_crc32c(0, buf + 3, k), buf + 3 + k, len - k) !=
                         ref_crc32c(buf + 3, len);
    CHECK_EQ_U64(bad, 0);
    CHECK_EQ_U64(bad_split, 0);
}

/* The encoder copies the payload and checksums it in one pass
   (opstate__crc32c_copy): the bytes must equal the reference encoder's for
   payloads of 0 to 1031 bytes, at every alignment mod 8 of the payload and
   of the output, with keys of 0 to 7 bytes (so the payload starts at every
   offset mod 8 of the encoding too). */
TEST(codec, encode_copy_lengths_alignments)
{
    static const size_t lens[] = {0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 80, 255, 1000, 1024, 1031};
    static uint8_t data[1040 + 8], out[1200 + 8], want[1200];
    static const char *const keys[] = {"", "k", "k2", "k23", "k234", "k2345", "k23456", "k234567"};
    size_t i, a, o, k, n, m, bad = 0;
    for (i = 0; i < sizeof data; i++) data[i] = (uint8_t)(i * 37u + 11u);
    for (i = 0; i < sizeof lens / sizeof lens[0]; i++)
        for (a = 0; a < 8; a++)
            for (o = 0; o < 8; o++)
                for (k = 0; k < 8; k++) {
                    opstate_event ev = make_event("s", "k", keys[k], 1, by(data + a, lens[i]), 0, 0);
                    m = ref_encode(&ev, want);
                    n = 0;
                    bad += opstate_event_encode(&ev, out + o, sizeof out - o, &n, NULL) != OPSTATE_OK || n != m ||
                           memcmp(out + o, want, m) != 0;
                }
    CHECK_EQ_U64(bad, 0);
}

TEST(codec, golden_bytes)
{
    opstate_event ev = golden_ev();
    uint8_t buf[128];
    size_t n = 0;
    opstate_error err;
    CHECK_EQ_U64(opstate_event_encode(&ev, NULL, 0, &n, NULL), OPSTATE_OK);
    CHECK_EQ_U64(n, sizeof golden_event);
    memset(buf, 0xEE, sizeof buf);
    n = 0;
    REQUIRE(opstate_event_encode(&ev, buf, sizeof buf, &n, &err) == OPSTATE_OK);
    REQUIRE(n == sizeof golden_event);
    CHECK_MEM(buf, golden_event, sizeof golden_event);
    CHECK(buf[n] == 0xEE); /* nothing written past the end */
    /* the reference encoder agrees with the golden bytes */
    memset(big_a, 0, 128);
    CHECK_EQ_U64(ref_encode(&ev, big_a), sizeof golden_event);
    CHECK_MEM(big_a, golden_event, sizeof golden_event);
}

TEST(codec, golden_decodes)
{
    opstate_event ev = golden_ev(), out;
    memset(&out, 0x5A, sizeof out);
    REQUIRE(opstate_event_decode(golden_event, sizeof golden_event, &out, NULL) == OPSTATE_OK);
    CHECK(same_content(&ev, &out));
    CHECK_EQ_U64(out.time, 0x1122334455667788u);
    CHECK_EQ_U64(out.op, 0x1244u);
    CHECK_EQ_U64(get64(golden_event + OFF_TIME), 0x1122334455667788u);
}

static const uint8_t bin_data[] = { 0, 1, 2, 0xff, 0xfe, 0x80, 0x7f, '"', '\\', '\n', 0 };
static const char bin_key[] = { 'k', 0, '.', (char)0xff, '*', '>', ' ' };

typedef struct codec_case {
    const char *name, *scope, *kind, *key;
    size_t key_len; /* used when key is bin_key */
    uint32_t op;
    const void *data;
    size_t data_len;
    int has_time;
    int64_t time;
} codec_case;

static const codec_case codec_cases[] = {
    { "with time", "orders", "line", "id-1", 0, OPSTATE_OP_PUT, "{\"q\":1}", 7, 1, 1700000000123456789 },
    { "no time", "orders", "line", "id-1", 0, OPSTATE_OP_DELETE, "x", 1, 0, 0 },
    { "no key", "orders", "line", NULL, 0, OPSTATE_OP_PUT, "abc", 3, 1, 5 },
    { "empty data", "s", "k", "key", 0, OPSTATE_OP_DELETE, NULL, 0, 1, -1 },
    { "no key, empty data, no time", "s", "k", NULL, 0, 1, NULL, 0, 0, 0 },
    { "binary data and key", "s", "k", bin_key, sizeof bin_key, 77, bin_data, sizeof bin_data, 1, 0 },
    { "app op max", "a_b-C", "Z9", "k", 0, 0xFFFFFFFFu, "d", 1, 1, INT64_MAX },
    { "time min", "tok\"\\en", "k!#$", "k", 0, OPSTATE_OP_APP, "d", 1, 1, INT64_MIN },
    { "time zero with flag", "s", "k", "k", 0, 3, "d", 1, 1, 0 },
};

static opstate_event case_event(const codec_case *c)
{
    opstate_event ev = make_event(c->scope, c->kind, NULL, c->op, by(c->data, c->data_len),
                                  c->has_time, c->time);
    if (c->key == bin_key) ev.key = by(bin_key, c->key_len);
    else ev.key = str(c->key);
    ev.id = make_id((uint8_t)(c->op & 0x7f));
    return ev;
}

TEST(codec, round_trips_and_matches_reference)
{
    size_t i;
    for (i = 0; i < COUNT_OF(codec_cases); i++) {
        opstate_event ev = case_event(&codec_cases[i]), out;
        size_t n = 0, m = 0, rn;
        opstate_error err;
        CASE(codec_cases[i].name);
        REQUIRE(opstate_event_encode(&ev, NULL, 0, &n, NULL) == OPSTATE_OK);
        rn = ref_encode(&ev, big_b);
        CHECK_EQ_U64(n, rn);
        memset(big_a, 0xCC, sizeof big_a);
        REQUIRE(opstate_event_encode(&ev, big_a, n, &m, &err) == OPSTATE_OK);
        CHECK_EQ_U64(m, n);
        CHECK(memcmp(big_a, big_b, n) == 0);
        CHECK(big_a[n] == 0xCC);
        memset(&out, 0x5A, sizeof out);
        REQUIRE(opstate_event_decode(big_a, n, &out, &err) == OPSTATE_OK);
        CHECK(same_content(&ev, &out));
        CHECK_EQ_U64(out.position.seq, 0);
        CHECK_EQ_U64(out.position.time, 0);
        CHECK_EQ_U64(out.position.epoch, 0);
        if (!ev.has_time) CHECK(!out.has_time);
    }
}

TEST(codec, no_time_encodes_zero_time_field)
{
    /* the time field of an event without time does not leak the caller's
       ev.time; decode -> encode stays byte-identical either way */
    opstate_event ev = make_event("s", "k", "k", 1, str("d"), 0, 123456), out;
    uint8_t a[128], b[128];
    size_t n = 0, m = 0;
    REQUIRE(opstate_event_encode(&ev, a, sizeof a, &n, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(a[OFF_FLAGS], 0);
    REQUIRE(opstate_event_decode(a, n, &out, NULL) == OPSTATE_OK);
    CHECK(!out.has_time);
    REQUIRE(opstate_event_encode(&out, b, sizeof b, &m, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(m, n);
    CHECK(memcmp(a, b, n) == 0);
}

TEST(codec, round_trip_max_lengths)
{
    static char scope[OPSTATE_MAX_TOKEN_LEN], kind[OPSTATE_MAX_TOKEN_LEN];
    static uint8_t key[OPSTATE_MAX_KEY_LEN];
    size_t data_len = OPSTATE_MAX_DATA_LEN, n = 0, m = 0, i, want;
    uint8_t *data = (uint8_t *)malloc(data_len), *buf;
    opstate_event ev, out;
    REQUIRE(data != NULL);
    for (i = 0; i < sizeof scope; i++) { scope[i] = (char)('a' + i % 26); kind[i] = (char)('A' + i % 26); }
    for (i = 0; i < sizeof key; i++) key[i] = (uint8_t)(i * 7);
    for (i = 0; i < data_len; i++) data[i] = (uint8_t)(i ^ (i >> 8));
    ev = make_event("x", "y", NULL, 9, by(data, data_len), 1, -42);
    ev.scope = by(scope, sizeof scope);
    ev.kind = by(kind, sizeof kind);
    ev.key = by(key, sizeof key);
    want = HDR + sizeof scope + sizeof kind + sizeof key + data_len + 4;
    CHECK_EQ_U64(opstate_event_encode(&ev, NULL, 0, &n, NULL), OPSTATE_OK);
    CHECK_EQ_U64(n, want);
    buf = (uint8_t *)malloc(want);
    if (!buf) { free(data); REQUIRE(buf != NULL); }
    if (opstate_event_encode(&ev, buf, want, &m, NULL) == OPSTATE_OK) {
        CHECK_EQ_U64(m, want);
        CHECK_EQ_U64(get16(buf + OFF_SCOPE_LEN), OPSTATE_MAX_TOKEN_LEN);
        CHECK_EQ_U64(get16(buf + OFF_KEY_LEN), OPSTATE_MAX_KEY_LEN);
        CHECK_EQ_U64(get32(buf + OFF_DATA_LEN), OPSTATE_MAX_DATA_LEN);
        CHECK_EQ_U64(get32(buf + want - 4), ref_crc32c(buf, want - 4));
        CHECK_EQ_U64(opstate_event_decode(buf, want, &out, NULL), OPSTATE_OK);
        CHECK(same_content(&ev, &out));
    } else {
        CHECK(!"encode at the maximum lengths failed");
    }
    free(buf);
    free(data);
}

TEST(codec, decode_is_zero_copy)
{
    opstate_event out;
    size_t n = sizeof golden_event;
    memcpy(big_a, golden_event, n);
    REQUIRE(opstate_event_decode(big_a, n, &out, NULL) == OPSTATE_OK);
    CHECK(out.scope.ptr == big_a + HDR);
    CHECK(out.kind.ptr == big_a + HDR + 2);
    CHECK(out.key.ptr == big_a + HDR + 3);
    CHECK(out.data.ptr == big_a + HDR + 6);
    CHECK_EQ_U64(out.scope.len, 2);
    CHECK_EQ_U64(out.kind.len, 1);
    CHECK_EQ_U64(out.key.len, 3);
    CHECK_EQ_U64(out.data.len, 2);
}

TEST(codec, decode_sets_position_to_zero)
{
    opstate_event out;
    memset(&out, 0xFF, sizeof out);
    REQUIRE(opstate_event_decode(golden_event, sizeof golden_event, &out, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(out.position.seq, 0);
    CHECK_EQ_U64(out.position.time, 0);
    CHECK_EQ_U64(out.position.epoch, 0);
}

TEST(codec, encode_ignores_position)
{
    opstate_event ev = golden_ev();
    uint8_t buf[128];
    size_t n = 0;
    ev.position.seq = 99;
    ev.position.time = -7;
    ev.position.epoch = 3;
    REQUIRE(opstate_event_encode(&ev, buf, sizeof buf, &n, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(n, sizeof golden_event);
    CHECK_MEM(buf, golden_event, sizeof golden_event);
}

TEST(codec, encode_buffer_too_small_leaves_buffer)
{
    opstate_event ev = golden_ev();
    uint8_t buf[128], before[128];
    size_t cap, n;
    for (cap = 0; cap < sizeof golden_event; cap++) {
        opstate_error err;
        memset(buf, 0xA7, sizeof buf);
        memcpy(before, buf, sizeof buf);
        n = 12345;
        memset(&err, 0, sizeof err);
        CHECK_EQ_U64(opstate_event_encode(&ev, buf, cap, &n, &err), OPSTATE_BUFFER_TOO_SMALL);
        CHECK(memcmp(buf, before, sizeof buf) == 0);
        CHECK_EQ_U64(err.result, OPSTATE_BUFFER_TOO_SMALL);
    }
    n = 0;
    CHECK_EQ_U64(opstate_event_encode(&ev, buf, sizeof golden_event, &n, NULL), OPSTATE_OK);
    CHECK_EQ_U64(n, sizeof golden_event);
}

TEST(codec, encode_refuses_bad_events)
{
    static char long_tok[OPSTATE_MAX_TOKEN_LEN + 1];
    static uint8_t long_key[OPSTATE_MAX_KEY_LEN + 1];
    uint8_t *big_data = (uint8_t *)calloc(OPSTATE_MAX_DATA_LEN + 1u, 1);
    struct { const char *name; opstate_event ev; opstate_result want; } rows[16];
    size_t nrows = 0, i;
    REQUIRE(big_data != NULL);
    memset(long_tok, 'a', sizeof long_tok);
    memset(long_key, 'k', sizeof long_key);
#define ADD(nm, want_, mod)                                                         \
    do {                                                                            \
        rows[nrows].name = nm;                                                      \
        rows[nrows].ev = make_event("scope", "kind", "key", 1, str("d"), 1, 1);        \
        rows[nrows].want = want_;                                                   \
        { opstate_event *e = &rows[nrows].ev; mod; }                                \
        nrows++;                                                                    \
    } while (0)
    ADD("scope with dot", OPSTATE_INVALID_TOKEN, e->scope = str("a.b"));
    ADD("scope with star", OPSTATE_INVALID_TOKEN, e->scope = str("*"));
    ADD("scope with gt", OPSTATE_INVALID_TOKEN, e->scope = str("a>"));
    ADD("scope with space", OPSTATE_INVALID_TOKEN, e->scope = str("a b"));
    ADD("empty scope", OPSTATE_INVALID_TOKEN, e->scope = str(""));
    ADD("kind with tab", OPSTATE_INVALID_TOKEN, e->kind = str("a\tb"));
    ADD("kind non-ascii", OPSTATE_INVALID_TOKEN, e->kind = str("caf\xc3\xa9"));
    ADD("empty kind", OPSTATE_INVALID_TOKEN, e->kind = str(""));
    ADD("op zero", OPSTATE_INVALID_ARGUMENT, e->op = 0);
    ADD("scope too long", OPSTATE_OVERSIZED, (e->scope = by(long_tok, sizeof long_tok)));
    ADD("kind too long", OPSTATE_OVERSIZED, (e->kind = by(long_tok, sizeof long_tok)));
    ADD("key too long", OPSTATE_OVERSIZED, (e->key = by(long_key, sizeof long_key)));
    ADD("data too long", OPSTATE_OVERSIZED, (e->data = by(big_data, OPSTATE_MAX_DATA_LEN + 1u)));
#undef ADD
    for (i = 0; i < nrows; i++) {
        uint8_t buf[256], before[256];
        size_t n = 777;
        opstate_result r;
        CASE(rows[i].name);
        memset(buf, 0x3C, sizeof buf);
        memcpy(before, buf, sizeof buf);
        r = opstate_event_encode(&rows[i].ev, buf, sizeof buf, &n, NULL);
        CHECK(r != OPSTATE_OK);
        if (rows[i].want == OPSTATE_INVALID_ARGUMENT)
            CHECK(r == OPSTATE_INVALID_ARGUMENT || r == OPSTATE_MALFORMED);
        else
            CHECK_EQ_U64(r, rows[i].want);
        CHECK(memcmp(buf, before, sizeof buf) == 0);
        /* the size query refuses too: no size for an event that cannot be encoded */
        CHECK(opstate_event_encode(&rows[i].ev, NULL, 0, &n, NULL) != OPSTATE_OK);
    }
    free(big_data);
}

TEST(codec, decode_truncated_every_prefix)
{
    size_t i, k;
    const uint8_t *src[2];
    size_t lens[2];
    opstate_event nokey = make_event("s", "k", NULL, 1, str(""), 0, 0);
    size_t n2 = ref_encode(&nokey, big_b);
    src[0] = golden_event; lens[0] = sizeof golden_event;
    src[1] = big_b; lens[1] = n2;
    for (k = 0; k < 2; k++) {
        for (i = 0; i < lens[k]; i++) {
            /* copy to an exact-size heap block so ASan sees any overread */
            uint8_t *p = (uint8_t *)malloc(i ? i : 1);
            REQUIRE(p != NULL);
            memcpy(p, src[k], i);
            expect_decode_fail(p, i, OPSTATE_TRUNCATED);
            free(p);
        }
    }
}

TEST(codec, decode_unknown_version)
{
    static const uint8_t versions[] = { 0, 2, 3, 0x81, 0xff };
    size_t i, n = sizeof golden_event;
    for (i = 0; i < sizeof versions; i++) {
        memcpy(big_a, golden_event, n);
        big_a[OFF_VERSION] = versions[i];
        expect_decode_fail(big_a, n, OPSTATE_UNKNOWN_VERSION); /* before CORRUPT */
        fix_crc(big_a, n);
        expect_decode_fail(big_a, n, OPSTATE_UNKNOWN_VERSION);
    }
}

TEST(codec, decode_malformed)
{
    size_t n = sizeof golden_event;
    int bit;
    opstate_error err;
    opstate_event out;
    /* one trailing byte */
    memcpy(big_a, golden_event, n);
    big_a[n] = 0;
    expect_decode_fail(big_a, n + 1, OPSTATE_MALFORMED);
    /* many trailing bytes: a second copy of the event */
    memcpy(big_a + n, golden_event, n);
    expect_decode_fail(big_a, 2 * n, OPSTATE_MALFORMED);
    /* every reserved flag bit, with a valid CRC */
    for (bit = 1; bit < 8; bit++) {
        CASE("reserved flag bit");
        memcpy(big_a, golden_event, n);
        big_a[OFF_FLAGS] = (uint8_t)(big_a[OFF_FLAGS] | (1u << bit));
        fix_crc(big_a, n);
        expect_decode_fail(big_a, n, OPSTATE_MALFORMED);
    }
    CASE("lengths");
    /* scope length one more than the bytes: lengths do not add up */
    memcpy(big_a, golden_event, n);
    put16(big_a + OFF_SCOPE_LEN, 3);
    fix_crc(big_a, n);
    expect_decode_fail(big_a, n, OPSTATE_MALFORMED);
    /* data length one less */
    memcpy(big_a, golden_event, n);
    put32(big_a + OFF_DATA_LEN, 1);
    fix_crc(big_a, n);
    expect_decode_fail(big_a, n, OPSTATE_MALFORMED);
    /* key length at its limit, data length 0: within limits, sum wrong */
    memcpy(big_a, golden_event, n);
    put16(big_a + OFF_KEY_LEN, OPSTATE_MAX_KEY_LEN);
    put32(big_a + OFF_DATA_LEN, 0);
    fix_crc(big_a, n);
    expect_decode_fail(big_a, n, OPSTATE_MALFORMED);
    /* lengths above their limits are OVERSIZED, checked before the sum
       (documented), so a huge length never reaches an addition that could
       wrap a 32-bit size_t */
    memcpy(big_a, golden_event, n);
    put16(big_a + OFF_KEY_LEN, 0xFFFF);
    fix_crc(big_a, n);
    expect_decode_fail(big_a, n, OPSTATE_OVERSIZED);
    memcpy(big_a, golden_event, n);
    put32(big_a + OFF_DATA_LEN, 0xFFFFFFFFu - 5u);
    fix_crc(big_a, n);
    expect_decode_fail(big_a, n, OPSTATE_OVERSIZED);
    /* total length smaller than the buffer */
    memcpy(big_a, golden_event, n);
    put32(big_a + OFF_TOTAL, (uint32_t)n - 1);
    fix_crc(big_a, n);
    expect_decode_fail(big_a, n, OPSTATE_MALFORMED);
    memcpy(big_a, golden_event, n);
    put32(big_a + OFF_TOTAL, 0);
    fix_crc(big_a, n);
    expect_decode_fail(big_a, n, OPSTATE_MALFORMED);
    /* total length one more, one extra byte present, field lengths unchanged */
    memcpy(big_a, golden_event, n);
    put32(big_a + OFF_TOTAL, (uint32_t)n + 1);
    memmove(big_a + n - 3, big_a + n - 4, 4); /* keep a CRC at the very end */
    fix_crc(big_a, n + 1);
    expect_decode_fail(big_a, n + 1, OPSTATE_MALFORMED);
    /* op 0, valid CRC */
    CASE("op zero");
    memcpy(big_a, golden_event, n);
    put32(big_a + OFF_OP, 0);
    fix_crc(big_a, n);
    expect_decode_fail(big_a, n, OPSTATE_MALFORMED);
    memset(&err, 0, sizeof err);
    CHECK_EQ_U64(opstate_event_decode(big_a, n, &out, &err), OPSTATE_MALFORMED);
    CHECK(err.field != NULL);
    CHECK_EQ_U64(err.offset, OFF_OP);
}

/* Builds an event whose one field is `len` bytes (above or at its limit),
   with a consistent total length and a valid CRC. */
static size_t build_with_field(uint8_t *buf, int which, size_t len, uint8_t fill)
{
    opstate_event ev = make_event("s", "k", "key", 1, str("d"), 1, 1);
    uint8_t *blob = (uint8_t *)malloc(len ? len : 1);
    size_t n;
    if (!blob) return 0;
    memset(blob, fill, len);
    if (which == 0) ev.scope = by(blob, len);
    if (which == 1) ev.kind = by(blob, len);
    if (which == 2) ev.key = by(blob, len);
    if (which == 3) ev.data = by(blob, len);
    n = ref_encode(&ev, buf);
    free(blob);
    return n;
}

TEST(codec, decode_oversized)
{
    static const char *names[] = { "scope", "kind", "key", "data" };
    static const size_t limits[] = { OPSTATE_MAX_TOKEN_LEN, OPSTATE_MAX_TOKEN_LEN,
                                     OPSTATE_MAX_KEY_LEN, OPSTATE_MAX_DATA_LEN };
    size_t cap = HDR + 8 + OPSTATE_MAX_DATA_LEN + 64;
    uint8_t *buf = (uint8_t *)malloc(cap);
    int w;
    REQUIRE(buf != NULL);
    for (w = 0; w < 4; w++) {
        size_t n;
        opstate_error err;
        opstate_event out;
        CASE(names[w]);
        /* at the limit: fine */
        n = build_with_field(buf, w, limits[w], 'a');
        CHECK_EQ_U64(opstate_event_decode(buf, n, &out, NULL), OPSTATE_OK);
        /* one above: OVERSIZED even with a valid CRC */
        n = build_with_field(buf, w, limits[w] + 1, 'a');
        expect_decode_fail(buf, n, OPSTATE_OVERSIZED);
        memset(&err, 0, sizeof err);
        CHECK_EQ_U64(opstate_event_decode(buf, n, &out, &err), OPSTATE_OVERSIZED);
        CHECK(err.field != NULL);
        if (err.field) CHECK(strstr(err.field, names[w]) != NULL);
        /* OVERSIZED is checked before CORRUPT */
        buf[n - 1] ^= 0x40;
        expect_decode_fail(buf, n, OPSTATE_OVERSIZED);
        /* and before INVALID_TOKEN: a too-long token of dots */
        if (w < 2) {
            n = build_with_field(buf, w, limits[w] + 1, '.');
            expect_decode_fail(buf, n, OPSTATE_OVERSIZED);
        }
    }
    free(buf);
}

/* Expected result of flipping one bit of a valid encoding, from the layout
   and the documented order of checks: version, framing (TRUNCATED /
   MALFORMED / OVERSIZED), then the CRC, which catches every flip in the
   rest. */
static int flip_expect(const uint8_t *orig, size_t n, size_t byte, int bit)
{
    if (byte == OFF_VERSION) return OPSTATE_UNKNOWN_VERSION;
    if (byte == OFF_FLAGS) return bit == 0 ? OPSTATE_CORRUPT : OPSTATE_MALFORMED;
    if (byte >= OFF_TOTAL && byte < OFF_TOTAL + 4) {
        uint32_t t = get32(orig + OFF_TOTAL) ^ (1u << (8 * (byte - OFF_TOTAL) + (size_t)bit));
        return t > n ? OPSTATE_TRUNCATED : OPSTATE_MALFORMED;
    }
    if (byte >= OFF_SCOPE_LEN && byte < OFF_DATA_LEN) { /* u16 lengths */
        size_t f = (byte - OFF_SCOPE_LEN) / 2;
        uint32_t v = get16(orig + OFF_SCOPE_LEN + 2 * f) ^ (1u << (8 * ((byte - OFF_SCOPE_LEN) % 2) + (size_t)bit));
        uint32_t limit = f < 2 ? OPSTATE_MAX_TOKEN_LEN : OPSTATE_MAX_KEY_LEN;
        return v > limit ? OPSTATE_OVERSIZED : OPSTATE_MALFORMED; /* else: sum wrong */
    }
    if (byte >= OFF_DATA_LEN && byte < HDR) {
        uint32_t v = get32(orig + OFF_DATA_LEN) ^ (1u << (8 * (byte - OFF_DATA_LEN) + (size_t)bit));
        return v > OPSTATE_MAX_DATA_LEN ? OPSTATE_OVERSIZED : OPSTATE_MALFORMED;
    }
    return OPSTATE_CORRUPT; /* id, op, time, payload, CRC */
}

TEST(codec, decode_every_bit_flip)
{
    opstate_event evs[3];
    size_t k;
    int mismatches = 0;
    evs[0] = golden_ev();
    evs[1] = make_event("sc", "kd", "k", OPSTATE_OP_PUT, str("{}"), 0, 0); /* op 1: a flip can make 0 */
    evs[2] = make_event("sc", "kd", NULL, OPSTATE_OP_DELETE, str(""), 1, -1);
    for (k = 0; k < COUNT_OF(evs); k++) {
        size_t n = ref_encode(&evs[k], big_b), byte;
        int bit;
        for (byte = 0; byte < n; byte++) {
            for (bit = 0; bit < 8; bit++) {
                opstate_event out, before;
                opstate_result r;
                int want = flip_expect(big_b, n, byte, bit);
                memcpy(big_a, big_b, n);
                big_a[byte] ^= (uint8_t)(1u << bit);
                memset(&out, 0xA5, sizeof out);
                memcpy(&before, &out, sizeof out);
                r = opstate_event_decode(big_a, n, &out, NULL);
                CASE("bit flip");
                CHECK(r != OPSTATE_OK);
                if (r != (opstate_result)want) {
                    static char label[64]; /* CASE keeps the pointer */
                    sprintf(label, "event %d byte %d bit %d", (int)k, (int)byte, bit);
                    CASE(label);
                    CHECK_EQ_U64(r, want);
                    if (++mismatches == 8) return; /* enough to see the pattern */
                }
                if (memcmp(&out, &before, sizeof out) != 0) {
                    CHECK(!"decode wrote *out on failure");
                    return;
                }
            }
        }
    }
}

TEST(codec, decode_invalid_token)
{
    static const struct { const char *name, *scope, *kind; } rows[] = {
        { "dot in scope", "a.b", "k" },
        { "star scope", "*", "k" },
        { "gt in kind", "s", "a>" },
        { "space in kind", "s", "a b" },
        { "control in scope", "a\x01", "k" },
        { "del in kind", "s", "\x7f" },
        { "non-ascii scope", "\xc3\xa9", "k" },
        { "empty scope", "", "k" },
        { "empty kind", "s", "" },
    };
    size_t i;
    for (i = 0; i < COUNT_OF(rows); i++) {
        opstate_event ev = make_event(rows[i].scope, rows[i].kind, "key", 1, str("d"), 1, 1), out;
        size_t n = ref_encode(&ev, big_a);
        opstate_error err;
        opstate_result r;
        CASE(rows[i].name);
        memset(&err, 0, sizeof err);
        r = opstate_event_decode(big_a, n, &out, &err);
        if (ev.scope.len == 0 || ev.kind.len == 0) {
            /* an empty token: refused, as a bad token or as bad structure */
            CHECK(r == OPSTATE_INVALID_TOKEN || r == OPSTATE_MALFORMED);
            if (r == OPSTATE_INVALID_TOKEN || r == OPSTATE_MALFORMED) expect_decode_fail(big_a, n, r);
            continue;
        }
        expect_decode_fail(big_a, n, OPSTATE_INVALID_TOKEN);
        CHECK_EQ_U64(r, OPSTATE_INVALID_TOKEN);
        CHECK(err.field != NULL);
        if (err.field) CHECK(strstr(err.field, rows[i].scope[0] != 's' ? "scope" : "kind") != NULL);
        /* the offset points into the bad token */
        if (rows[i].scope[0] != 's') {
            CHECK(err.offset >= HDR && err.offset < HDR + ev.scope.len);
        } else {
            CHECK(err.offset >= HDR + ev.scope.len && err.offset < HDR + ev.scope.len + ev.kind.len);
        }
        /* CORRUPT is checked before INVALID_TOKEN */
        big_a[n - 2] ^= 1;
        expect_decode_fail(big_a, n, OPSTATE_CORRUPT);
    }
}

TEST(codec, decode_precedence)
{
    size_t n = sizeof golden_event, k;
    /* empty: TRUNCATED; then the version comes first, even when short */
    expect_decode_fail(golden_event, 0, OPSTATE_TRUNCATED);
    memcpy(big_a, golden_event, n);
    big_a[OFF_VERSION] = 9;
    expect_decode_fail(big_a, 1, OPSTATE_UNKNOWN_VERSION);
    expect_decode_fail(big_a, 10, OPSTATE_UNKNOWN_VERSION);
    expect_decode_fail(big_a, n - 1, OPSTATE_UNKNOWN_VERSION);
    /* shorter than the 48-byte minimum: TRUNCATED even when the declared
       total matches the bytes present */
    for (k = 1; k < HDR + 4; k++) {
        CASE("below the minimum");
        memcpy(big_a, golden_event, n);
        put32(big_a + OFF_TOTAL, (uint32_t)k);
        expect_decode_fail(big_a, k, OPSTATE_TRUNCATED);
    }
    CASE(NULL);
    /* UNKNOWN_VERSION before MALFORMED (reserved flag, trailing byte) */
    memcpy(big_a, golden_event, n);
    big_a[OFF_VERSION] = 2;
    big_a[OFF_FLAGS] |= 0x80;
    big_a[n] = 7;
    expect_decode_fail(big_a, n + 1, OPSTATE_UNKNOWN_VERSION);
    /* TRUNCATED (declared length) before MALFORMED (reserved flag) */
    memcpy(big_a, golden_event, n);
    big_a[OFF_FLAGS] |= 0x80;
    expect_decode_fail(big_a, n - 1, OPSTATE_TRUNCATED);
    /* OVERSIZED before MALFORMED (lengths): a scope length above its limit
       that also does not add up; the limit of every field comes before the
       sum, so a later field's excess wins over an earlier mismatch too */
    memcpy(big_a, golden_event, n);
    put16(big_a + OFF_SCOPE_LEN, 300);
    fix_crc(big_a, n);
    expect_decode_fail(big_a, n, OPSTATE_OVERSIZED);
    memcpy(big_a, golden_event, n);
    put16(big_a + OFF_SCOPE_LEN, 3);
    put32(big_a + OFF_DATA_LEN, OPSTATE_MAX_DATA_LEN + 1u);
    fix_crc(big_a, n);
    expect_decode_fail(big_a, n, OPSTATE_OVERSIZED);
    /* MALFORMED (reserved flag) before OVERSIZED (consistent lengths) */
    n = build_with_field(big_a, 0, OPSTATE_MAX_TOKEN_LEN + 1, 'a');
    big_a[OFF_FLAGS] |= 0x02;
    fix_crc(big_a, n);
    expect_decode_fail(big_a, n, OPSTATE_MALFORMED);
    /* CORRUPT before MALFORMED (op 0) */
    n = sizeof golden_event;
    memcpy(big_a, golden_event, n);
    put32(big_a + OFF_OP, 0);
    expect_decode_fail(big_a, n, OPSTATE_CORRUPT);
    fix_crc(big_a, n);
    expect_decode_fail(big_a, n, OPSTATE_MALFORMED);
    /* CORRUPT before INVALID_TOKEN */
    memcpy(big_a, golden_event, n);
    big_a[HDR] = '.';
    expect_decode_fail(big_a, n, OPSTATE_CORRUPT);
    fix_crc(big_a, n);
    expect_decode_fail(big_a, n, OPSTATE_INVALID_TOKEN);
    /* MALFORMED (op 0) before INVALID_TOKEN */
    put32(big_a + OFF_OP, 0);
    fix_crc(big_a, n);
    expect_decode_fail(big_a, n, OPSTATE_MALFORMED);
}

TEST(codec, decode_time_without_flag)
{
    /* an event without time is encoded with a zero time field; anything
       else would give one event two encodings */
    opstate_event ev = make_event("s", "k", "k", 1, str("d"), 0, 0);
    size_t n = ref_encode(&ev, big_a);
    opstate_error err;
    opstate_event out;
    put64(big_a + OFF_TIME, 1);
    expect_decode_fail(big_a, n, OPSTATE_CORRUPT);
    fix_crc(big_a, n);
    expect_decode_fail(big_a, n, OPSTATE_MALFORMED);
    memset(&err, 0, sizeof err);
    CHECK_EQ_U64(opstate_event_decode(big_a, n, &out, &err), OPSTATE_MALFORMED);
    CHECK_EQ_U64(err.offset, OFF_TIME);
    put64(big_a + OFF_TIME, (uint64_t)INT64_MIN);
    fix_crc(big_a, n);
    expect_decode_fail(big_a, n, OPSTATE_MALFORMED);
    /* with the flag, any time is fine, 0 included */
    ev.has_time = true;
    n = ref_encode(&ev, big_a);
    CHECK_EQ_U64(opstate_event_decode(big_a, n, &out, NULL), OPSTATE_OK);
    CHECK(out.has_time);
}

TEST(codec, decode_then_encode_is_identity)
{
    size_t i;
    for (i = 0; i < COUNT_OF(codec_cases); i++) {
        opstate_event ev = case_event(&codec_cases[i]), out;
        size_t n = ref_encode(&ev, big_b), m = 0;
        CASE(codec_cases[i].name);
        REQUIRE(opstate_event_decode(big_b, n, &out, NULL) == OPSTATE_OK);
        REQUIRE(opstate_event_encode(&out, big_a, sizeof big_a, &m, NULL) == OPSTATE_OK);
        CHECK_EQ_U64(m, n);
        CHECK(memcmp(big_a, big_b, n) == 0);
    }
}

/* ------------------------------------------------------------------- json */

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Reference base64 (RFC 4648, padded). Returns the length written. */
static size_t ref_b64(const uint8_t *p, size_t n, char *out)
{
    size_t i, o = 0;
    for (i = 0; i + 2 < n; i += 3) {
        uint32_t v = ((uint32_t)p[i] << 16) | ((uint32_t)p[i + 1] << 8) | p[i + 2];
        out[o++] = b64_alphabet[(v >> 18) & 63];
        out[o++] = b64_alphabet[(v >> 12) & 63];
        out[o++] = b64_alphabet[(v >> 6) & 63];
        out[o++] = b64_alphabet[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)p[i] << 16;
        out[o++] = b64_alphabet[(v >> 18) & 63];
        out[o++] = b64_alphabet[(v >> 12) & 63];
        out[o++] = '=';
        out[o++] = '=';
    } else if (n - i == 2) {
        uint32_t v = ((uint32_t)p[i] << 16) | ((uint32_t)p[i + 1] << 8);
        out[o++] = b64_alphabet[(v >> 18) & 63];
        out[o++] = b64_alphabet[(v >> 12) & 63];
        out[o++] = b64_alphabet[(v >> 6) & 63];
        out[o++] = '=';
    }
    out[o] = '\0';
    return o;
}

static char json_buf[65536];

/* Renders ev into json_buf (NUL-terminated for the checks) after checking
   the size query, the no-terminator rule and opstate_json_valid. Returns the
   length, or 0 on failure. */
static size_t render(const opstate_event *ev)
{
    size_t need = 0, n = 0;
    if (opstate_event_to_json(ev, NULL, 0, &need) != OPSTATE_OK) {
        CHECK(!"size query failed");
        return 0;
    }
    if (need + 1 > sizeof json_buf) { CHECK(!"json too long for the test buffer"); return 0; }
    memset(json_buf, 'Z', need + 1);
    if (opstate_event_to_json(ev, json_buf, need, &n) != OPSTATE_OK) {
        CHECK(!"render failed");
        return 0;
    }
    CHECK_EQ_U64(n, need);
    CHECK(json_buf[need] == 'Z'); /* no terminator written */
    json_buf[n] = '\0';
    CHECK(opstate_json_valid((const uint8_t *)json_buf, n));
    return n;
}

static opstate_event json_ev(void)
{
    opstate_event ev = make_event("ab", "k", "x.y", OPSTATE_OP_PUT, str("{\"a\":[1,2]}"), 1, -1500);
    ev.position.seq = 7;
    ev.position.time = -5;
    ev.position.epoch = 3;
    return ev;
}

TEST(json, exact_fixed_event)
{
    opstate_event ev = json_ev();
    size_t n = render(&ev);
    const char *want =
        "{\"id\":\"00010203-0405-0607-0809-0a0b0c0d0e0f\",\"key\":[\"ab\",\"k\",\"x.y\"],"
        "\"key_encoding\":\"utf8\",\"op\":\"put\",\"time\":-1500,"
        "\"position\":{\"seq\":7,\"time\":-5,\"epoch\":3},\"data\":\"{\\\"a\\\":[1,2]}\","
        "\"data_encoding\":\"utf8\"}";
    CHECK_EQ_U64(n, strlen(want));
    CHECK_STR(json_buf, want);
}

TEST(json, exact_delete_no_time_binary)
{
    static const uint8_t d[] = { 0xff, 0x00, 0x01 };
    opstate_event ev = make_event("s", "k", "key", OPSTATE_OP_DELETE, by(d, sizeof d), 0, 99);
    const char *want =
        "{\"id\":\"00010203-0405-0607-0809-0a0b0c0d0e0f\",\"key\":[\"s\",\"k\",\"key\"],"
        "\"key_encoding\":\"utf8\",\"op\":\"delete\",\"time\":null,"
        "\"position\":{\"seq\":0,\"time\":0,\"epoch\":0},\"data\":\"/wAB\",\"data_encoding\":\"base64\"}";
    render(&ev);
    CHECK_STR(json_buf, want);
}

TEST(json, size_query_and_small_buffer)
{
    opstate_event ev = json_ev();
    size_t need = 0, cap, n;
    char buf[512], before[512];
    REQUIRE(opstate_event_to_json(&ev, NULL, 0, &need) == OPSTATE_OK);
    REQUIRE(need < sizeof buf);
    for (cap = 0; cap < need; cap++) {
        memset(buf, 0x11, sizeof buf);
        memcpy(before, buf, sizeof buf);
        n = 0;
        CHECK_EQ_U64(opstate_event_to_json(&ev, buf, cap, &n), OPSTATE_BUFFER_TOO_SMALL);
        CHECK(memcmp(buf, before, sizeof buf) == 0);
    }
    CHECK_EQ_U64(opstate_event_to_json(&ev, buf, need, &n), OPSTATE_OK);
    CHECK_EQ_U64(n, need);
}

/* Value text of a string member, e.g. member(json_buf, "key") -> pointer
   just after "key":  or NULL. */
static const char *member(const char *json, const char *name)
{
    char pat[64];
    const char *p;
    sprintf(pat, "\"%s\":", name);
    p = strstr(json, pat);
    return p ? p + strlen(pat) : NULL;
}

TEST(json, escaping)
{
    static const char key[] = "q\"b\\s/\x01\n\t\b\f\r\x1f" "e";
    opstate_event ev = make_event("a\"b\\c", "k", key, 1, str("1"), 1, 0);
    const char *p;
    render(&ev);
    p = member(json_buf, "key");
    REQUIRE(p != NULL);
    CHECK(strncmp(p, "[\"a\\\"b\\\\c\",\"k\",", 15) == 0);
    p += 15;
    /* "/" may be written plain or escaped; \u001f in either hex case */
    CHECK(strncmp(p, "\"q\\\"b\\\\s", 8) == 0);
    p += 8;
    if (*p == '\\' && p[1] == '/') p += 2;
    else { CHECK(*p == '/'); p++; }
    CHECK(strncmp(p, "\\u0001\\n\\t\\b\\f\\r", 16) == 0);
    p += 16;
    CHECK(strncmp(p, "\\u001f", 6) == 0 || strncmp(p, "\\u001F", 6) == 0);
    CHECK(strncmp(p + 6, "e\"]", 3) == 0);
}

TEST(json, nul_in_key)
{
    static const char key[] = { 'a', 0, 'b' };
    opstate_event ev = make_event("s", "k", NULL, 1, str("1"), 1, 0);
    ev.key = by(key, 3);
    render(&ev);
    CHECK(strstr(json_buf, "\"key\":[\"s\",\"k\",\"a\\u0000b\"],\"key_encoding\":\"utf8\"") != NULL);
}

TEST(json, utf8_passthrough)
{
    static const char key[] = "\xc3\xa9-\xe2\x82\xac-\xf0\x9f\x98\x80-\xf4\x8f\xbf\xbf-\xed\x9f\xbf";
    opstate_event ev = make_event("s", "k", key, 1, str("\"\xc3\xa9\""), 1, 0);
    char want[128];
    render(&ev);
    snprintf(want, sizeof want, "\"key\":[\"s\",\"k\",\"%s\"],\"key_encoding\":\"utf8\"", key);
    CHECK(strstr(json_buf, want) != NULL);
    CHECK(strstr(json_buf, "\"data\":\"\\\"\xc3\xa9\\\"\",\"data_encoding\":\"utf8\"}") != NULL);
}

/* A key part that is not UTF-8 makes every part base64, under the same
   field names. */
TEST(json, non_utf8_key_is_base64)
{
    static const struct { const char *name; const char *key; size_t len; } rows[] = {
        { "ff", "a\xff", 2 },
        { "overlong C0 80", "\xc0\x80", 2 },
        { "surrogate ED A0 80", "\xed\xa0\x80", 3 },
        { "above U+10FFFF", "\xf4\x90\x80\x80", 4 },
        { "truncated sequence", "ab\xe2\x82", 4 },
        { "lone continuation", "\x80xyz", 4 },
        { "overlong E0 80 80", "\xe0\x80\x80", 3 },
        { "F5", "\xf5\x80\x80\x80", 4 },
    };
    size_t i;
    for (i = 0; i < COUNT_OF(rows); i++) {
        opstate_event ev = make_event("s", "k", NULL, 1, str("1"), 1, 0);
        char want[64], field[128];
        size_t w;
        CASE(rows[i].name);
        ev.key = by(rows[i].key, rows[i].len);
        render(&ev);
        w = ref_b64((const uint8_t *)rows[i].key, rows[i].len, want);
        want[w] = '\0';
        snprintf(field, sizeof field, "\"key\":[\"cw==\",\"aw==\",\"%s\"],\"key_encoding\":\"base64\"", want);
        CHECK(strstr(json_buf, field) != NULL);
    }
}

/* Data that is UTF-8 is one JSON string of its text, JSON or not (jq:
   .data | fromjson); the same field and encoding whatever it holds. */
TEST(json, text_data_is_a_string)
{
    static const char *rows[] = {
        "{\"a\":1}", "[1,2,{\"b\":[]}]", "0", "12.5e-3", "\"str\"", "true", " \n\t{\"a\" : [ 1 ] }\r\n ",
        "{", "01", "tru", "'a'", "  ", "plain text",
    };
    size_t i;
    for (i = 0; i < COUNT_OF(rows); i++) {
        opstate_event ev = make_event("s", "k", "k", 1, str(rows[i]), 1, 0);
        const char *p;
        size_t n;
        CASE(rows[i]);
        n = render(&ev);
        REQUIRE(n > 0);
        p = member(json_buf, "data");
        REQUIRE(p != NULL);
        CHECK(p[0] == '"');
        CHECK(strstr(json_buf, ",\"data_encoding\":\"utf8\"}") != NULL);
    }
}

TEST(json, binary_data_is_base64)
{
    static const struct { const char *name, *data; size_t len; } rows[] = {
        { "raw ff", "\xff", 1 },
        { "invalid utf-8 in string", "\"\xc0\x80\"", 4 },
        { "five bytes", "ab\x00\x01\xfe", 5 },
        { "six bytes", "abc\xfe\xfd\xfc", 6 },
    };
    size_t i;
    for (i = 0; i < COUNT_OF(rows); i++) {
        opstate_event ev = make_event("s", "k", "k", 1, by(rows[i].data, rows[i].len), 1, 0);
        char want[64];
        const char *p;
        size_t w;
        CASE(rows[i].name);
        render(&ev);
        p = member(json_buf, "data");
        REQUIRE(p != NULL);
        w = ref_b64((const uint8_t *)rows[i].data, rows[i].len, want);
        CHECK(p[0] == '"');
        CHECK(strncmp(p + 1, want, w) == 0);
        CHECK_STR(p + 1 + w, "\",\"data_encoding\":\"base64\"}");
    }
}

TEST(json, base64_all_lengths)
{
    uint8_t d[40];
    size_t len, i;
    for (i = 0; i < sizeof d; i++) d[i] = (uint8_t)(0xff - i * 13);
    for (len = 1; len <= sizeof d; len++) {
        opstate_event ev = make_event("s", "k", "k", 1, by(d, len), 1, 0);
        char want[80];
        const char *p;
        size_t w;
        CASE("length");
        render(&ev);
        p = member(json_buf, "data");
        REQUIRE(p != NULL);
        w = ref_b64(d, len, want);
        CHECK(strncmp(p + 1, want, w) == 0);
        CHECK_STR(p + 1 + w, "\",\"data_encoding\":\"base64\"}");
    }
}

TEST(json, empty_data_is_an_empty_string)
{
    opstate_event ev = make_event("s", "k", "k", 1, str(NULL), 1, 0);
    render(&ev);
    CHECK(strstr(json_buf, ",\"data\":\"\",\"data_encoding\":\"utf8\"}") != NULL);
}

TEST(json, numbers_and_ops)
{
    opstate_event ev = make_event("s", "k", "k", OPSTATE_OP_APP, str("1"), 1, -1);
    render(&ev);
    CHECK(strstr(json_buf, "\"op\":\"16\",\"time\":-1,") != NULL);
    ev.time = INT64_MIN;
    ev.op = 0xFFFFFFFFu;
    render(&ev);
    CHECK(strstr(json_buf, "\"op\":\"4294967295\",\"time\":-9223372036854775808,") != NULL);
    ev.time = INT64_MAX;
    ev.op = 3;
    ev.position.seq = UINT64_MAX;
    ev.position.time = INT64_MIN;
    ev.position.epoch = UINT64_MAX;
    render(&ev);
    CHECK(strstr(json_buf, "\"op\":\"3\",\"time\":9223372036854775807,") != NULL);
    CHECK(strstr(json_buf, "\"position\":{\"seq\":18446744073709551615,"
                           "\"time\":-9223372036854775808,\"epoch\":18446744073709551615}") != NULL);
    ev.has_time = false;
    ev.time = 12345;
    render(&ev);
    CHECK(strstr(json_buf, "\"time\":null,") != NULL);
    CHECK(strstr(json_buf, "12345") == NULL);
    ev.op = OPSTATE_OP_DELETE;
    ev.time = 0;
    ev.has_time = true;
    render(&ev);
    CHECK(strstr(json_buf, "\"op\":\"delete\",\"time\":0,") != NULL);
}

TEST(json, decoded_event_renders_like_original)
{
    opstate_event ev = json_ev(), out;
    char first[512];
    size_t n = ref_encode(&ev, big_a), len;
    len = render(&ev);
    REQUIRE(len < sizeof first);
    memcpy(first, json_buf, len + 1);
    REQUIRE(opstate_event_decode(big_a, n, &out, NULL) == OPSTATE_OK);
    out.position = ev.position;
    render(&out);
    CHECK_STR(json_buf, first);
}

TEST(json, outputs_parse_with_python)
{
#if TEST_CODEC_HAVE_SYSTEM
    static const char *datas[] = { "{\"a\":1}", " [1, 2] \n", "\xff\xfe", "", "\"\\u00e9\"", "01" };
    static const char *keys[] = { "plain", "q\"\\\x01\n\t", "\xc3\xa9\xf0\x9f\x98\x80", "\xff", NULL };
    char path[] = "/tmp/opstate-json-XXXXXX";
    char cmd[256];
    int fd, rc;
    size_t i, j;
    FILE *f;
    if (system("command -v python3 >/dev/null 2>&1") != 0) return; /* no python3: skip */
    fd = mkstemp(path);
    REQUIRE(fd >= 0);
    f = fdopen(fd, "wb");
    if (!f) { close(fd); unlink(path); REQUIRE(f != NULL); }
    for (i = 0; i < COUNT_OF(datas); i++) {
        for (j = 0; j < COUNT_OF(keys); j++) {
            opstate_event ev = make_event("s\"c", "k\\d", keys[j], (uint32_t)(1 + i + j),
                                          str(datas[i]), (int)(i & 1), -(int64_t)i);
            size_t n = render(&ev);
            fwrite(json_buf, 1, n, f);
            fputc(0, f); /* embedded data may hold raw newlines: NUL separates */
        }
    }
    fclose(f);
    sprintf(cmd,
            "python3 -c 'import json,sys; v=[json.loads(x) for x in open(sys.argv[1],\"rb\").read()"
            ".split(b\"\\0\") if x]; assert len(v)==%d' %s",
            (int)(COUNT_OF(datas) * COUNT_OF(keys)), path);
    rc = system(cmd);
    unlink(path);
    CHECK(rc == 0);
#endif
}

typedef struct json_row { const char *text; int ok; } json_row;

TEST(json, valid_table)
{
    static const json_row rows[] = {
        { "{}", 1 }, { "[]", 1 }, { " [ ] ", 1 }, { "{\"a\":1}", 1 }, { "{\"a\":{\"b\":[1,\"x\",null]}}", 1 },
        { "0", 1 }, { "-0", 1 }, { "1e5", 1 }, { "1.5E-3", 1 }, { "-1.0e+10", 1 }, { "123456789012345678901234567890", 1 },
        { "0.0", 1 }, { "1E0", 1 },
        { "true", 1 }, { "false", 1 }, { "null", 1 }, { "\"\"", 1 }, { "\"abc\"", 1 },
        { "\"\\u00e9\"", 1 }, { "\"\\ud83d\\ude00\"", 1 }, { "\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"", 1 },
        { "\"\\uABCD\"", 1 },
        { " \t\r\n{\"a\" : [ 1 , 2 ] } \t\r\n", 1 }, { "{\"\":0}", 1 }, { "[[],[[]],{}]", 1 },
        { "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf\xef\xbf\xbf\"", 1 },
        { "\"\xed\x9f\xbf\xee\x80\x80\"", 1 },
        /* invalid */
        { "", 0 }, { " ", 0 }, { "01", 0 }, { "-01", 0 }, { "1.", 0 }, { ".5", 0 }, { "-", 0 }, { "+1", 0 },
        { "1e", 0 }, { "1e+", 0 }, { "0x1", 0 }, { "--1", 0 }, { "1.e3", 0 }, { "NaN", 0 }, { "Infinity", 0 },
        { "{", 0 }, { "}", 0 }, { "[1,]", 0 }, { "[,1]", 0 }, { "{\"a\":1,}", 0 }, { "{\"a\"}", 0 },
        { "{1:2}", 0 }, { "{\"a\" 1}", 0 }, { "[1 2]", 0 }, { "{\"a\":1 \"b\":2}", 0 }, { "[", 0 }, { "]", 0 },
        { "nul", 0 }, { "tru", 0 }, { "truex", 0 }, { "True", 0 }, { "true false", 0 }, { "[1] x", 0 },
        { "[1]]", 0 }, { "{}{}", 0 }, { "'a'", 0 }, { "\"abc", 0 }, { "\"\\x\"", 0 }, { "\"\\u12\"", 0 },
        { "\"\\u12G4\"", 0 }, { "\"\\\"", 0 }, { "\"a\nb\"", 0 }, { "\"a\tb\"", 0 }, { "\"\x01\"", 0 },
        { "\f1", 0 }, { "\v1", 0 }, { "1\f", 0 }, { "[1,\xff]", 0 }, { "\xef\xbb\xbf{}", 0 },
        { "\"\xc0\x80\"", 0 }, { "\"\xc1\xbf\"", 0 }, { "\"\xed\xa0\x80\"", 0 }, { "\"\xed\xbf\xbf\"", 0 },
        { "\"\xf4\x90\x80\x80\"", 0 }, { "\"\xf5\x80\x80\x80\"", 0 }, { "\"\xe0\x80\x80\"", 0 },
        { "\"\xf0\x80\x80\x80\"", 0 }, { "\"\x80\"", 0 }, { "\"\xe2\x82\"", 0 }, { "\"\xe2\x82", 0 },
        { "\"\xff\"", 0 }, { "\"\xf0\x9f\x98\"", 0 }, { "\"\xc3\"", 0 },
        /* continuation bytes must be 80..BF, in every position */
        { "\"\xe2\x82\xc0\"", 0 }, { "\"\xe2\x82\x41\"", 0 }, { "\"\xf0\x9f\x98\xc0\"", 0 },
        { "\"\xf0\x9f\xc0\x80\"", 0 }, { "\"\xc3\xc3\"", 0 },
        /* every control byte is refused raw in a string, 0x1f included */
        { "\"\x1f\"", 0 }, { "\"\x00\"", 0 }, { "\"\x7f\"", 1 },
        /* \u escapes cut short at the very end of the input */
        { "\"\\u123", 0 }, { "\"\\u12", 0 }, { "\"\\u", 0 }, { "\"\\", 0 }, { "\"\\ud83d\\ude0", 0 },
        /* surrogates: a pair is fine; a lone one cannot be UTF-8 and is
           refused (RFC 8259 8.2 leaves it unpredictable) */
        { "\"\\ude00\"", 0 }, { "\"\\ud83d\"", 0 }, { "\"\\ud83d\\u0041\"", 0 },
        { "\"\\ud83dx\"", 0 }, { "\"\\ud83d\\ud83d\"", 0 }, { "\"\\uDBFF\\uDFFF\"", 1 },
        /* a key needs its colon; containers close with their own bracket */
        { "{\"a\"x1}", 0 }, { "{\"a\",1}", 0 }, { "{\"a\";1}", 0 }, { "{\"a\"}", 0 },
        { "[1}", 0 }, { "{\"a\":1]", 0 }, { "[{]}", 0 }, { "[[1]}", 0 }, { "{\"a\":[}]", 0 },
    };
    size_t i;
    for (i = 0; i < COUNT_OF(rows); i++) {
        size_t n = strlen(rows[i].text);
        /* exact-size heap copy so an overread is caught under ASan */
        uint8_t *p = (uint8_t *)malloc(n ? n : 1);
        REQUIRE(p != NULL);
        memcpy(p, rows[i].text, n);
        CASE(rows[i].text);
        CHECK_EQ_U64(opstate_json_valid(p, n), rows[i].ok);
        free(p);
    }
    /* embedded NUL: after a value, inside a string */
    CHECK(!opstate_json_valid((const uint8_t *)"1\0", 2));
    CHECK(!opstate_json_valid((const uint8_t *)"\"a\0\"", 4));
    CHECK(!opstate_json_valid((const uint8_t *)"{}\0", 3));
    /* lengths are honoured: a valid prefix only */
    CHECK(opstate_json_valid((const uint8_t *)"[1]xyz", 3));
    CHECK(!opstate_json_valid((const uint8_t *)"[1]", 2));
    CHECK(!opstate_json_valid((const uint8_t *)"123", 0));
}

static int nested_valid(int depth, int objects)
{
    static char buf[1024];
    size_t n = 0;
    int i;
    for (i = 0; i < depth; i++) {
        if (objects && (i & 1)) { memcpy(buf + n, "{\"k\":", 5); n += 5; }
        else buf[n++] = '[';
    }
    buf[n++] = '0';
    for (i = depth - 1; i >= 0; i--) buf[n++] = (objects && (i & 1)) ? '}' : ']';
    return opstate_json_valid((const uint8_t *)buf, n);
}

TEST(json, valid_depth_limit)
{
    CHECK(nested_valid(1, 0));
    CHECK(nested_valid(63, 0));
    CHECK(nested_valid(64, 0));
    CHECK(!nested_valid(65, 0));
    CHECK(!nested_valid(100, 0));
    CHECK(nested_valid(64, 1));
    CHECK(!nested_valid(65, 1));
}

TEST(json, valid_deep_input_does_not_crash)
{
    size_t n = 200000, i;
    uint8_t *p = (uint8_t *)malloc(n);
    REQUIRE(p != NULL);
    memset(p, '[', n);
    CHECK(!opstate_json_valid(p, n));
    for (i = 0; i < n; i++) p[i] = (uint8_t)((i & 1) ? '{' : '[');
    CHECK(!opstate_json_valid(p, n));
    free(p);
}

TEST(json, no_key_has_two_parts)
{
    opstate_event ev = make_event("s", "k", NULL, 1, str("1"), 1, 0);
    render(&ev);
    CHECK(strstr(json_buf, "\"key\":[\"s\",\"k\"],\"key_encoding\":\"utf8\",\"op\":") != NULL);
}

TEST(json, non_utf8_scope_and_kind_are_base64)
{
    /* encode never makes such an event, but to_json takes any event */
    opstate_event ev = make_event("s", "k", "k", 1, str("1"), 1, 0);
    ev.scope = by("a\xff", 2);
    ev.kind = by("\xc0\x80", 2);
    render(&ev);
    CHECK(strstr(json_buf, "\"key\":[\"Yf8=\",\"wIA=\",\"aw==\"],\"key_encoding\":\"base64\"") != NULL);
}

/* ------------------------------------------------------------------ dedup */

/* uint32-aligned storage for up to 16384 ids (generous upper bound). */
static uint32_t dd_store[(16384u * 16u + 16384u * 4u * 4u) / 4u + 64u];
static uint32_t dd_store2[sizeof dd_store / 4u];

static opstate_id idn(uint32_t n)
{
    opstate_id id;
    int i;
    uint64_t x = (uint64_t)n * 0x9E3779B97F4A7C15u + 0x1234567u;
    for (i = 0; i < 16; i++) {
        x ^= x >> 29;
        x *= 0xBF58476D1CE4E5B9u;
        id.bytes[i] = (uint8_t)(x >> 56);
    }
    id.bytes[0] = (uint8_t)n; /* distinct for every n below 2^32 via the last bytes */
    id.bytes[12] = (uint8_t)(n >> 24);
    id.bytes[13] = (uint8_t)(n >> 16);
    id.bytes[14] = (uint8_t)(n >> 8);
    id.bytes[15] = (uint8_t)n;
    return id;
}

static int dd_setup(opstate_dedup *d, uint32_t cap, void *storage)
{
    size_t sz = opstate_dedup_storage_size(cap);
    if (sz == 0 || sz > sizeof dd_store) return 0;
    return opstate_dedup_init(d, storage, sz, cap) == OPSTATE_OK;
}

TEST(dedup, storage_size)
{
    size_t s1 = opstate_dedup_storage_size(1), s64 = opstate_dedup_storage_size(64);
    CHECK_EQ_U64(opstate_dedup_storage_size(0), 0);
    CHECK(s1 >= 16);
    CHECK(s64 >= 64 * 16);
    CHECK(s64 >= s1);
    CHECK(opstate_dedup_storage_size(1u << 24) >= (size_t)16 << 24);
    CHECK_EQ_U64(opstate_dedup_storage_size((1u << 24) + 1), 0);
    CHECK_EQ_U64(opstate_dedup_storage_size(UINT32_MAX), 0);
}

TEST(dedup, init_errors_leave_struct)
{
    opstate_dedup d, before;
    size_t sz = opstate_dedup_storage_size(8);
    uint8_t *raw = (uint8_t *)dd_store;
    memset(&d, 0x77, sizeof d);
    memcpy(&before, &d, sizeof d);
    CHECK_EQ_U64(opstate_dedup_init(&d, dd_store, sz - 1, 8), OPSTATE_INVALID_ARGUMENT);
    CHECK(memcmp(&d, &before, sizeof d) == 0);
    CHECK_EQ_U64(opstate_dedup_init(&d, dd_store, 0, 8), OPSTATE_INVALID_ARGUMENT);
    CHECK(memcmp(&d, &before, sizeof d) == 0);
    CHECK_EQ_U64(opstate_dedup_init(&d, dd_store, sizeof dd_store, 0), OPSTATE_INVALID_ARGUMENT);
    CHECK(memcmp(&d, &before, sizeof d) == 0);
    CHECK_EQ_U64(opstate_dedup_init(&d, dd_store, sizeof dd_store, (1u << 24) + 1), OPSTATE_INVALID_ARGUMENT);
    CHECK(memcmp(&d, &before, sizeof d) == 0);
    CHECK_EQ_U64(opstate_dedup_init(&d, NULL, sz, 8), OPSTATE_INVALID_ARGUMENT);
    CHECK(memcmp(&d, &before, sizeof d) == 0);
    CHECK_EQ_U64(opstate_dedup_init(&d, raw + 1, sz, 8), OPSTATE_INVALID_ARGUMENT); /* misaligned */
    CHECK(memcmp(&d, &before, sizeof d) == 0);
    CHECK_EQ_U64(opstate_dedup_init(&d, dd_store, sz, 8), OPSTATE_OK);
    CHECK_EQ_U64(d.capacity, 8);
    CHECK_EQ_U64(d.count, 0);
}

TEST(dedup, insert_and_contains)
{
    opstate_dedup d;
    opstate_id a = idn(1), b = idn(2), z, f;
    memset(z.bytes, 0, 16);
    memset(f.bytes, 0xff, 16);
    REQUIRE(dd_setup(&d, 4, dd_store));
    CHECK(!opstate_dedup_contains(&d, &a));
    CHECK(opstate_dedup_insert(&d, &a));
    CHECK(opstate_dedup_contains(&d, &a));
    CHECK(!opstate_dedup_contains(&d, &b));
    CHECK(!opstate_dedup_insert(&d, &a)); /* a repeat */
    CHECK_EQ_U64(d.count, 1);
    CHECK(opstate_dedup_insert(&d, &b));
    CHECK(opstate_dedup_insert(&d, &z)); /* the all-zero id is an ordinary id */
    CHECK(opstate_dedup_contains(&d, &z));
    CHECK(!opstate_dedup_contains(&d, &f));
    CHECK(opstate_dedup_insert(&d, &f));
    CHECK(opstate_dedup_contains(&d, &f));
    CHECK_EQ_U64(d.count, 4);
}

/* Oracle: a plain array in insertion order; a repeat changes nothing.
   Small pools: after every insert, every id of the pool is looked up.
   Large pools: the oracle's ids and the id just evicted are looked up. */
static void eviction_run(uint32_t cap, uint32_t inserts, uint32_t pool)
{
    static opstate_id oracle[128];
    opstate_dedup d;
    opstate_id evicted;
    uint32_t count = 0, i, j, k;
    int have_evicted;
    REQUIRE(cap <= 128);
    REQUIRE(dd_setup(&d, cap, dd_store));
    for (i = 0; i < inserts; i++) {
        uint32_t pick = (uint32_t)(rnd() % pool);
        opstate_id id = idn(pick);
        int present = 0;
        bool fresh;
        have_evicted = 0;
        for (j = 0; j < count; j++)
            if (memcmp(oracle[j].bytes, id.bytes, 16) == 0) present = 1;
        if (!present) {
            if (count == cap) {
                evicted = oracle[0];
                have_evicted = 1;
                memmove(oracle, oracle + 1, (cap - 1) * sizeof oracle[0]);
                count--;
            }
            oracle[count++] = id;
        }
        fresh = opstate_dedup_insert(&d, &id);
        CHECK_EQ_U64(fresh, !present);
        CHECK_EQ_U64(d.count, count);
        if (pool <= 1000) {
            for (k = 0; k < pool; k++) {
                opstate_id q = idn(k);
                int want = 0;
                for (j = 0; j < count; j++)
                    if (memcmp(oracle[j].bytes, q.bytes, 16) == 0) want = 1;
                if (opstate_dedup_contains(&d, &q) != (want != 0)) {
                    CHECK(!"window differs from the oracle");
                    return;
                }
            }
        } else {
            for (j = 0; j < count; j++)
                if (!opstate_dedup_contains(&d, &oracle[j])) { CHECK(!"id lost"); return; }
            if (have_evicted && opstate_dedup_contains(&d, &evicted)) {
                CHECK(!"oldest id not evicted");
                return;
            }
        }
    }
    /* exactly the last `cap` distinct ids */
    for (k = 0; k < count; k++) CHECK(opstate_dedup_contains(&d, &oracle[k]));
}

TEST(dedup, eviction_matches_oracle)
{
    CASE("cap 1"); eviction_run(1, 500, 4);
    CASE("cap 2"); eviction_run(2, 1000, 6);
    CASE("cap 7"); eviction_run(7, 3000, 20);
    CASE("cap 64"); eviction_run(64, 2000, 150);
    CASE("cap 64 fresh ids"); eviction_run(64, 5000, 1000000);
    CASE("cap 100 fresh ids"); eviction_run(100, 5000, 1000000);
}

TEST(dedup, long_churn_never_fills)
{
    /* many evictions through a small table: deletions must not clog it */
    opstate_dedup d;
    uint32_t i;
    REQUIRE(dd_setup(&d, 7, dd_store));
    for (i = 0; i < 200000; i++) {
        opstate_id id = idn(i);
        CHECK(opstate_dedup_insert(&d, &id));
    }
    for (i = 200000 - 7; i < 200000; i++) {
        opstate_id id = idn(i);
        CHECK(opstate_dedup_contains(&d, &id));
    }
    for (i = 0; i < 200000 - 7; i += 997) {
        opstate_id id = idn(i);
        CHECK(!opstate_dedup_contains(&d, &id));
    }
    CHECK_EQ_U64(d.count, 7);
}

TEST(dedup, clear)
{
    opstate_dedup d;
    uint32_t i;
    REQUIRE(dd_setup(&d, 5, dd_store));
    for (i = 0; i < 12; i++) { opstate_id id = idn(i); opstate_dedup_insert(&d, &id); }
    opstate_dedup_clear(&d);
    CHECK_EQ_U64(d.count, 0);
    for (i = 0; i < 12; i++) { opstate_id id = idn(i); CHECK(!opstate_dedup_contains(&d, &id)); }
    for (i = 0; i < 5; i++) { opstate_id id = idn(i); CHECK(opstate_dedup_insert(&d, &id)); }
    { opstate_id id = idn(5); CHECK(opstate_dedup_insert(&d, &id)); }
    { opstate_id id = idn(0); CHECK(!opstate_dedup_contains(&d, &id)); } /* oldest evicted */
    { opstate_id id = idn(1); CHECK(opstate_dedup_contains(&d, &id)); }
}

static const uint8_t golden_dedup[] = {
    0x01, 0x00, 0x02, 0x00, 0x00, 0x00,
    0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x2b, 0x2c, 0x2d, 0x2e, 0x2f,
    0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x3b, 0x3c, 0x3d, 0x3e, 0x3f,
    0x5f, 0xaa, 0x1e, 0xe4,
};

TEST(dedup, encode_golden_and_sizes)
{
    opstate_dedup d;
    opstate_id a = make_id(1), b = make_id(2), c = make_id(3);
    uint8_t buf[64], before[64];
    size_t n = 0, cap;
    REQUIRE(dd_setup(&d, 2, dd_store));
    CHECK_EQ_U64(opstate_dedup_encode(&d, NULL, 0, &n), OPSTATE_OK);
    CHECK_EQ_U64(n, 10);
    REQUIRE(opstate_dedup_encode(&d, buf, sizeof buf, &n) == OPSTATE_OK);
    CHECK_EQ_U64(n, 10);
    CHECK(buf[0] == 1 && buf[1] == 0 && get32(buf + 2) == 0);
    CHECK_EQ_U64(get32(buf + 6), ref_crc32c(buf, 6));
    opstate_dedup_insert(&d, &a);
    opstate_dedup_insert(&d, &b);
    opstate_dedup_insert(&d, &c); /* evicts a */
    CHECK_EQ_U64(opstate_dedup_encode(&d, NULL, 0, &n), OPSTATE_OK);
    CHECK_EQ_U64(n, sizeof golden_dedup);
    memset(buf, 0x99, sizeof buf);
    REQUIRE(opstate_dedup_encode(&d, buf, sizeof golden_dedup, &n) == OPSTATE_OK);
    CHECK_EQ_U64(n, sizeof golden_dedup);
    CHECK_MEM(buf, golden_dedup, sizeof golden_dedup);
    CHECK(buf[sizeof golden_dedup] == 0x99);
    for (cap = 0; cap < sizeof golden_dedup; cap++) {
        memset(buf, 0x42, sizeof buf);
        memcpy(before, buf, sizeof buf);
        CHECK_EQ_U64(opstate_dedup_encode(&d, buf, cap, &n), OPSTATE_BUFFER_TOO_SMALL);
        CHECK(memcmp(buf, before, sizeof buf) == 0);
    }
}

TEST(dedup, round_trip_keeps_order)
{
    opstate_dedup d, e;
    uint32_t i;
    uint8_t buf[16 * 16 + 16], buf2[sizeof buf];
    size_t n = 0, m = 0;
    REQUIRE(dd_setup(&d, 8, dd_store));
    for (i = 0; i < 13; i++) { opstate_id id = idn(i); opstate_dedup_insert(&d, &id); } /* holds 5..12 */
    REQUIRE(opstate_dedup_encode(&d, buf, sizeof buf, &n) == OPSTATE_OK);
    CHECK_EQ_U64(n, 10 + 8 * 16);
    for (i = 0; i < 8; i++) {
        opstate_id id = idn(5 + i);
        CHECK_MEM(buf + 6 + 16 * i, id.bytes, 16); /* oldest first */
    }
    /* into an equal-capacity window that held other ids */
    REQUIRE(dd_setup(&e, 8, dd_store2));
    for (i = 100; i < 103; i++) { opstate_id id = idn(i); opstate_dedup_insert(&e, &id); }
    REQUIRE(opstate_dedup_decode(&e, buf, n, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(e.count, 8);
    for (i = 100; i < 103; i++) { opstate_id id = idn(i); CHECK(!opstate_dedup_contains(&e, &id)); }
    for (i = 5; i < 13; i++) { opstate_id id = idn(i); CHECK(opstate_dedup_contains(&e, &id)); }
    REQUIRE(opstate_dedup_encode(&e, buf2, sizeof buf2, &m) == OPSTATE_OK);
    CHECK_EQ_U64(m, n);
    CHECK(memcmp(buf, buf2, n) == 0);
    /* the next insert evicts the oldest decoded id (5), then 6 */
    { opstate_id id = idn(50); CHECK(opstate_dedup_insert(&e, &id)); }
    { opstate_id id = idn(5); CHECK(!opstate_dedup_contains(&e, &id)); }
    { opstate_id id = idn(6); CHECK(opstate_dedup_contains(&e, &id)); }
    { opstate_id id = idn(51); CHECK(opstate_dedup_insert(&e, &id)); }
    { opstate_id id = idn(6); CHECK(!opstate_dedup_contains(&e, &id)); }
    { opstate_id id = idn(7); CHECK(opstate_dedup_contains(&e, &id)); }
    /* into a larger window: room for 4 more before 5 goes */
    REQUIRE(dd_setup(&e, 12, dd_store2));
    REQUIRE(opstate_dedup_decode(&e, buf, n, NULL) == OPSTATE_OK);
    for (i = 0; i < 4; i++) { opstate_id id = idn(200 + i); CHECK(opstate_dedup_insert(&e, &id)); }
    { opstate_id id = idn(5); CHECK(opstate_dedup_contains(&e, &id)); }
    { opstate_id id = idn(204); CHECK(opstate_dedup_insert(&e, &id)); }
    { opstate_id id = idn(5); CHECK(!opstate_dedup_contains(&e, &id)); }
    { opstate_id id = idn(6); CHECK(opstate_dedup_contains(&e, &id)); }
    /* an empty window round-trips too, and empties the target */
    opstate_dedup_clear(&d);
    REQUIRE(opstate_dedup_encode(&d, buf, sizeof buf, &n) == OPSTATE_OK);
    REQUIRE(opstate_dedup_decode(&e, buf, n, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(e.count, 0);
    { opstate_id id = idn(6); CHECK(!opstate_dedup_contains(&e, &id)); }
}

/* Decodes into a window holding ids 1000..1002 and checks the failure
   contract: the code, the struct and its storage untouched. */
static void expect_dedup_fail(const uint8_t *buf, size_t len, uint32_t cap, opstate_result want)
{
    opstate_dedup d, before;
    size_t sz = opstate_dedup_storage_size(cap);
    uint32_t i;
    opstate_error err;
    opstate_result r;
    if (!dd_setup(&d, cap, dd_store2)) { CHECK(!"setup"); return; }
    for (i = 0; i < 3; i++) { opstate_id id = idn(1000 + i); opstate_dedup_insert(&d, &id); }
    memcpy(&before, &d, sizeof d);
    memcpy(dd_store, dd_store2, sz);
    memset(&err, 0, sizeof err);
    r = opstate_dedup_decode(&d, buf, len, &err);
    if (want == OPSTATE_OK) CHECK(r != OPSTATE_OK);
    else CHECK_EQ_U64(r, want);
    CHECK_EQ_U64(err.result, r);
    CHECK(memcmp(&d, &before, sizeof d) == 0);
    CHECK(memcmp(dd_store, dd_store2, sz) == 0);
    for (i = cap < 3 ? 3 - cap : 0; i < 3; i++) {
        opstate_id id = idn(1000 + i);
        CHECK(opstate_dedup_contains(&d, &id));
    }
    CHECK_EQ_U64(opstate_dedup_decode(&d, buf, len, NULL), r);
}

static size_t dedup_bytes(uint8_t *buf, uint32_t count, uint32_t first)
{
    uint32_t i;
    buf[0] = OPSTATE_DEDUP_FORMAT_VERSION;
    buf[1] = 0;
    put32(buf + 2, count);
    for (i = 0; i < count; i++) { opstate_id id = idn(first + i); memcpy(buf + 6 + 16 * i, id.bytes, 16); }
    put32(buf + 6 + 16 * count, ref_crc32c(buf, 6 + 16 * (size_t)count));
    return 10 + 16 * (size_t)count;
}

TEST(dedup, decode_errors_leave_window)
{
    uint8_t buf[1024];
    size_t n = dedup_bytes(buf, 3, 7), i;
    int bit;
    {
        opstate_dedup d;
        REQUIRE(dd_setup(&d, 8, dd_store));
        CHECK_EQ_U64(opstate_dedup_decode(&d, buf, n, NULL), OPSTATE_OK);
    }
    CASE("truncated");
    for (i = 0; i < n; i++) {
        uint8_t *p = (uint8_t *)malloc(i ? i : 1);
        REQUIRE(p != NULL);
        memcpy(p, buf, i);
        expect_dedup_fail(p, i, 8, OPSTATE_TRUNCATED);
        free(p);
    }
    CASE("count above the bytes");
    n = dedup_bytes(buf, 3, 7);
    put32(buf + 2, 4);
    fix_crc(buf, n);
    expect_dedup_fail(buf, n, 8, OPSTATE_TRUNCATED);
    CASE("unknown version");
    n = dedup_bytes(buf, 3, 7);
    buf[0] = 2;
    expect_dedup_fail(buf, n, 8, OPSTATE_UNKNOWN_VERSION);
    fix_crc(buf, n);
    expect_dedup_fail(buf, n, 8, OPSTATE_UNKNOWN_VERSION);
    buf[0] = 0;
    fix_crc(buf, n);
    expect_dedup_fail(buf, n, 8, OPSTATE_UNKNOWN_VERSION);
    CASE("reserved byte");
    n = dedup_bytes(buf, 3, 7);
    buf[1] = 1;
    fix_crc(buf, n);
    expect_dedup_fail(buf, n, 8, OPSTATE_MALFORMED);
    CASE("trailing byte");
    n = dedup_bytes(buf, 3, 7);
    buf[n] = 0;
    expect_dedup_fail(buf, n + 1, 8, OPSTATE_MALFORMED);
    CASE("count below the bytes");
    n = dedup_bytes(buf, 3, 7);
    put32(buf + 2, 2);
    fix_crc(buf, n);
    expect_dedup_fail(buf, n, 8, OPSTATE_MALFORMED);
    CASE("corrupt");
    n = dedup_bytes(buf, 3, 7);
    for (i = 6; i < n; i++) {
        for (bit = 0; bit < 8; bit++) {
            buf[i] ^= (uint8_t)(1u << bit);
            expect_dedup_fail(buf, n, 8, OPSTATE_CORRUPT);
            buf[i] ^= (uint8_t)(1u << bit);
            if (runner_failed_now()) return;
        }
    }
    CASE("every header bit flip fails");
    for (i = 0; i < 6; i++) {
        for (bit = 0; bit < 8; bit++) {
            buf[i] ^= (uint8_t)(1u << bit);
            expect_dedup_fail(buf, n, 8, OPSTATE_OK /* any error */);
            buf[i] ^= (uint8_t)(1u << bit);
            if (runner_failed_now()) return;
        }
    }
}

TEST(dedup, decode_oversized_never_drops)
{
    uint8_t buf[1024];
    size_t n = dedup_bytes(buf, 9, 0);
    opstate_dedup d;
    CASE("9 ids into 8");
    expect_dedup_fail(buf, n, 8, OPSTATE_OVERSIZED);
    CASE("2 ids into 1");
    n = dedup_bytes(buf, 2, 0);
    expect_dedup_fail(buf, n, 1, OPSTATE_OVERSIZED);
    CASE("exactly the capacity");
    n = dedup_bytes(buf, 8, 0);
    REQUIRE(dd_setup(&d, 8, dd_store));
    CHECK_EQ_U64(opstate_dedup_decode(&d, buf, n, NULL), OPSTATE_OK);
    CHECK_EQ_U64(d.count, 8);
}

TEST(dedup, decode_huge_count_is_refused)
{
    /* counts whose byte size wraps a 32-bit size_t, with a 10-byte buffer */
    static const uint32_t counts[] = { 0x10000000u, 0x0FFFFFFFu, 0xFFFFFFFFu, 0x80000000u, 1u << 24 };
    uint8_t buf[16];
    size_t i;
    for (i = 0; i < COUNT_OF(counts); i++) {
        CASE("huge count");
        buf[0] = 1;
        buf[1] = 0;
        put32(buf + 2, counts[i]);
        put32(buf + 6, ref_crc32c(buf, 6));
        {
            opstate_dedup d, before;
            opstate_result r;
            REQUIRE(dd_setup(&d, 8, dd_store));
            memcpy(&before, &d, sizeof d);
            r = opstate_dedup_decode(&d, buf, 10, NULL);
            CHECK_EQ_U64(r, OPSTATE_TRUNCATED);
            CHECK(memcmp(&d, &before, sizeof d) == 0);
        }
    }
}

TEST(dedup, decode_duplicate_ids_kept_once)
{
    /* encode never writes an id twice; decode keeps a repeated id once, at
       its first place, and the window behaves (documented) */
    uint8_t buf[256];
    size_t n = dedup_bytes(buf, 4, 7), m = 0;
    opstate_dedup d;
    opstate_id a = idn(7), b = idn(8), c = idn(10), x = idn(20), y = idn(21), z = idn(22);
    memcpy(buf + 6 + 32, buf + 6, 16); /* ids: 7, 8, 7, 10 */
    fix_crc(buf, n);
    REQUIRE(dd_setup(&d, 4, dd_store));
    REQUIRE(opstate_dedup_decode(&d, buf, n, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(d.count, 3);
    CHECK(opstate_dedup_contains(&d, &a));
    CHECK(opstate_dedup_contains(&d, &b));
    CHECK(opstate_dedup_contains(&d, &c));
    REQUIRE(opstate_dedup_encode(&d, buf, sizeof buf, &m) == OPSTATE_OK);
    CHECK_EQ_U64(m, 10 + 3 * 16);
    CHECK_MEM(buf + 6, a.bytes, 16);
    CHECK_MEM(buf + 22, b.bytes, 16);
    CHECK_MEM(buf + 38, c.bytes, 16);
    CHECK(opstate_dedup_insert(&d, &x)); /* fills the window */
    CHECK(opstate_dedup_contains(&d, &a));
    CHECK(opstate_dedup_insert(&d, &y)); /* evicts 7 */
    CHECK(!opstate_dedup_contains(&d, &a));
    CHECK(opstate_dedup_contains(&d, &b));
    CHECK(opstate_dedup_insert(&d, &z)); /* evicts 8 */
    CHECK(!opstate_dedup_contains(&d, &b));
    CHECK(opstate_dedup_contains(&d, &c));
}

TEST(dedup, decode_precedence)
{
    uint8_t buf[1024];
    size_t n;
    /* empty: TRUNCATED; the version first, even when short */
    memset(buf, 0, sizeof buf);
    expect_dedup_fail(buf, 0, 8, OPSTATE_TRUNCATED);
    n = dedup_bytes(buf, 3, 7);
    buf[0] = 3;
    expect_dedup_fail(buf, 1, 8, OPSTATE_UNKNOWN_VERSION);
    expect_dedup_fail(buf, 5, 8, OPSTATE_UNKNOWN_VERSION);
    expect_dedup_fail(buf, n - 1, 8, OPSTATE_UNKNOWN_VERSION);
    /* shorter than the 10-byte minimum */
    n = dedup_bytes(buf, 0, 0);
    expect_dedup_fail(buf, 9, 8, OPSTATE_TRUNCATED);
    /* TRUNCATED (declared count) before MALFORMED (reserved byte) */
    n = dedup_bytes(buf, 3, 7);
    buf[1] = 1;
    expect_dedup_fail(buf, n - 1, 8, OPSTATE_TRUNCATED);
    /* MALFORMED (reserved byte) before OVERSIZED */
    n = dedup_bytes(buf, 9, 0);
    buf[1] = 1;
    fix_crc(buf, n);
    expect_dedup_fail(buf, n, 8, OPSTATE_MALFORMED);
    /* MALFORMED (trailing) before OVERSIZED and CORRUPT */
    n = dedup_bytes(buf, 9, 0);
    buf[n] = 0;
    expect_dedup_fail(buf, n + 1, 8, OPSTATE_MALFORMED);
    /* OVERSIZED before CORRUPT */
    n = dedup_bytes(buf, 9, 0);
    buf[10] ^= 1;
    expect_dedup_fail(buf, n, 8, OPSTATE_OVERSIZED);
    buf[10] ^= 1;
    buf[n - 1] ^= 1;
    expect_dedup_fail(buf, n, 8, OPSTATE_OVERSIZED);
}

/* Longest run of occupied slots in the hash table. */
static uint32_t longest_run(const opstate_dedup *d)
{
    uint32_t i, run = 0, best = 0, size = d->table_mask + 1;
    for (i = 0; i < 2 * size; i++) {
        if (d->table[i & d->table_mask]) { run++; if (run > best) best = run; }
        else run = 0;
        if (run >= size) break;
    }
    return best;
}

static void same_prefix_run(int vary_front)
{
    opstate_dedup d;
    uint32_t i, n = 10000;
    clock_t t0;
    double spent;
    REQUIRE(dd_setup(&d, 16384, dd_store));
    t0 = clock();
    for (i = 0; i < n; i++) {
        opstate_id id;
        memset(id.bytes, 0x5A, 16);
        if (vary_front) { /* same last 10 bytes, counter in the first 2 */
            id.bytes[0] = (uint8_t)(i >> 8);
            id.bytes[1] = (uint8_t)i;
        } else { /* UUIDv7 same millisecond: first 10 bytes equal, counter at the end */
            id.bytes[14] = (uint8_t)(i >> 8);
            id.bytes[15] = (uint8_t)i;
        }
        CHECK(opstate_dedup_insert(&d, &id));
    }
    for (i = 0; i < n + 500; i++) {
        opstate_id id;
        memset(id.bytes, 0x5A, 16);
        if (vary_front) { id.bytes[0] = (uint8_t)(i >> 8); id.bytes[1] = (uint8_t)i; }
        else { id.bytes[14] = (uint8_t)(i >> 8); id.bytes[15] = (uint8_t)i; }
        if (opstate_dedup_contains(&d, &id) != (i < n)) { CHECK(!"lookup"); return; }
    }
    spent = (double)(clock() - t0) / CLOCKS_PER_SEC;
    CHECK_EQ_U64(d.count, n);
    /* a hash of only part of the id puts all 10k ids in one probe chain */
    CHECK(longest_run(&d) < 1000);
    CHECK(spent < 0.5);
}

TEST(dedup, same_prefix_ids_do_not_collide)
{
    CASE("same first 14 bytes");
    same_prefix_run(0);
    CASE("same last 14 bytes");
    same_prefix_run(1);
}
