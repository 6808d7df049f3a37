/* test_ids.c — suites crc, ids, subjects (opstate.h sections >>crc, >>ids,
   >>subjects). Pure functions only: no clock, no RNG from the system (a fixed
   xorshift stream makes every run the same), no allocation, no printf.
   opstate_id_new, which reads the system's clock and entropy, is tested
   in test_hosted.c. */
#include "runner.h"
#include "../opstate.h"
#include "test_bytes.h"

#include <string.h>

/* ---- helpers ------------------------------------------------------------ */

static uint64_t t_rng_state = 0x9E3779B97F4A7C15u;
static void t_seed(uint64_t s) { t_rng_state = s ? s : 0x9E3779B97F4A7C15u; }
static uint64_t t_rand(void)
{
    uint64_t x = t_rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    t_rng_state = x;
    return x;
}
static uint32_t t_below(uint32_t n) { return (uint32_t)(t_rand() % n); }
static void t_fill(uint8_t *p, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) p[i] = (uint8_t)t_rand();
}

static opstate_error t_err(void)
{
    opstate_error e;
    memset(&e, 0, sizeof e);
    e.offset = (size_t)-1;
    return e;
}
static int t_bytes_eq(opstate_bytes b, const void *p, size_t n)
{
    return b.len == n && (n == 0 || memcmp(b.ptr, p, n) == 0);
}

/* Bitwise CRC32C (reflected polynomial 0x82F63B78), same continuation
   convention as opstate_crc32c: pass the previous result, start with 0. */
static uint32_t ref_crc32c(uint32_t crc, const uint8_t *p, size_t n)
{
    int k;
    crc = ~crc;
    while (n--) {
        crc ^= *p++;
        for (k = 0; k < 8; k++) crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
    }
    return ~crc;
}

/* ---- crc ---------------------------------------------------------------- */

TEST(crc, known_vectors)
{
    uint8_t buf[32];
    size_t i;
    CHECK_EQ_U64(opstate_crc32c(0, "123456789", 9), 0xE3069283u);
    CHECK_EQ_U64(ref_crc32c(0, (const uint8_t *)"123456789", 9), 0xE3069283u);
    memset(buf, 0, sizeof buf);
    CHECK_EQ_U64(opstate_crc32c(0, buf, 32), 0x8A9136AAu);
    memset(buf, 0xFF, sizeof buf);
    CHECK_EQ_U64(opstate_crc32c(0, buf, 32), 0x62A8AB43u);
    for (i = 0; i < 32; i++) buf[i] = (uint8_t)i;
    CHECK_EQ_U64(opstate_crc32c(0, buf, 32), 0x46DD794Eu);
    for (i = 0; i < 32; i++) buf[i] = (uint8_t)(31 - i);
    CHECK_EQ_U64(opstate_crc32c(0, buf, 32), 0x113FDB5Cu); /* RFC 3720 B.4 */
    CHECK_EQ_U64(opstate_crc32c(0, "a", 1), 0xC1D04330u);
    CHECK_EQ_U64(opstate_crc32c(0, buf, 0), 0u);
    CHECK_EQ_U64(opstate_crc32c(0x12345678u, buf, 0), 0x12345678u);
}

TEST(crc, continuation_every_split)
{
    static uint8_t buf[1100];
    size_t n, cut;
    uint32_t whole, a;
    t_seed(11);
    t_fill(buf, sizeof buf);
    for (n = 0; n <= 100; n++) {
        whole = opstate_crc32c(0, buf, n);
        for (cut = 0; cut <= n; cut++) {
            a = opstate_crc32c(0, buf, cut);
            CHECK_EQ_U64(opstate_crc32c(a, buf + cut, n - cut), whole);
        }
    }
    /* Long input in three uneven parts. */
    whole = opstate_crc32c(0, buf, sizeof buf);
    a = opstate_crc32c(0, buf, 3);
    a = opstate_crc32c(a, buf + 3, 1000);
    CHECK_EQ_U64(opstate_crc32c(a, buf + 1003, sizeof buf - 1003), whole);
    CHECK_EQ_U64(whole, ref_crc32c(0, buf, sizeof buf));
}

TEST(crc, matches_bitwise_reference_all_alignments)
{
    static uint8_t buf[5000 + 16];
    static const size_t fixed[] = {0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 23, 24, 25,
                                   31, 32, 33, 63, 64, 65, 127, 128, 129, 255, 256, 300};
    size_t align, i, n;
    uint32_t init;
    t_seed(12);
    t_fill(buf, sizeof buf);
    for (align = 0; align < 16; align++) {
        for (i = 0; i < COUNT_OF(fixed); i++) {
            n = fixed[i];
            CHECK_EQ_U64(opstate_crc32c(0, buf + align, n), ref_crc32c(0, buf + align, n));
        }
        for (i = 0; i < 40; i++) {
            n = t_below(301);
            init = (uint32_t)t_rand();
            CHECK_EQ_U64(opstate_crc32c(init, buf + align, n), ref_crc32c(init, buf + align, n));
        }
        /* Long buffers, for any large-block (interleaved) hardware path. */
        n = 4096 + align * 57;
        CHECK_EQ_U64(opstate_crc32c(0, buf + align, n), ref_crc32c(0, buf + align, n));
    }
}

/* ---- ids ---------------------------------------------------------------- */

static uint64_t t_id_ms(const opstate_id *id)
{
    uint64_t ms = 0;
    int i;
    for (i = 0; i < 6; i++) ms = (ms << 8) | id->bytes[i];
    return ms;
}

static int t_is_v7(const opstate_id *id)
{
    return (id->bytes[6] >> 4) == 7 && (id->bytes[8] & 0xC0) == 0x80;
}

static int t_is_v8(const opstate_id *id)
{
    return (id->bytes[6] >> 4) == 8 && (id->bytes[8] & 0xC0) == 0x80;
}

TEST(ids, time_ordered_layout)
{
    static const int64_t times[] = {
        0, 1, 999999, 1000000, 1000001, INT64_C(1700000000123456789),
        INT64_C(281474976710655), INT64_C(281474976710655) * 1000, INT64_MAX - 1, INT64_MAX};
    uint8_t ent[8];
    opstate_id id;
    size_t i;
    t_seed(21);
    for (i = 0; i < COUNT_OF(times); i++) {
        CASE("time table");
        t_fill(ent, sizeof ent);
        memset(&id, 0xAA, sizeof id);
        REQUIRE(opstate_id_time_ordered(times[i], ent, &id) == OPSTATE_OK);
        CHECK(t_is_v7(&id));
        CHECK_EQ_U64(t_id_ms(&id), (uint64_t)(times[i] / 1000000));
    }
    /* Whole-millisecond times have a zero sub-millisecond fraction. */
    memset(ent, 0, sizeof ent);
    REQUIRE(opstate_id_time_ordered(INT64_C(1700000000000000000), ent, &id) == OPSTATE_OK);
    CHECK_EQ_U64(((unsigned)(id.bytes[6] & 0x0F) << 8) | id.bytes[7], 0);
}

TEST(ids, time_ordered_entropy_fills_random_bits)
{
    uint8_t ent[8];
    opstate_id a, b, zero, ones;
    uint8_t seen_or[8], seen_and[8];
    int i, k;
    const int64_t t = INT64_C(1700000000123456789);

    /* Bytes 0..7 (ms, version, fraction) do not depend on the entropy. */
    memset(ent, 0x00, sizeof ent);
    REQUIRE(opstate_id_time_ordered(t, ent, &zero) == OPSTATE_OK);
    memset(ent, 0xFF, sizeof ent);
    REQUIRE(opstate_id_time_ordered(t, ent, &ones) == OPSTATE_OK);
    CHECK_MEM(zero.bytes, ones.bytes, 8);
    /* 62 random bits, all from the entropy: zero entropy leaves only the
       variant bits, all-ones entropy sets every one of the 62. */
    CHECK_EQ_U64(zero.bytes[8], 0x80);
    CHECK_EQ_U64(ones.bytes[8], 0xBF);
    for (k = 9; k < 16; k++) {
        CHECK_EQ_U64(zero.bytes[k], 0x00);
        CHECK_EQ_U64(ones.bytes[k], 0xFF);
    }
    /* Same input, same output (no hidden state). */
    t_seed(22);
    t_fill(ent, sizeof ent);
    REQUIRE(opstate_id_time_ordered(t, ent, &a) == OPSTATE_OK);
    REQUIRE(opstate_id_time_ordered(t, ent, &b) == OPSTATE_OK);
    CHECK(opstate_id_equal(&a, &b));
    /* Every one of the 62 bits takes both values over random entropy. */
    memset(seen_or, 0, sizeof seen_or);
    memset(seen_and, 0xFF, sizeof seen_and);
    for (i = 0; i < 300; i++) {
        t_fill(ent, sizeof ent);
        REQUIRE(opstate_id_time_ordered(t, ent, &a) == OPSTATE_OK);
        CHECK(t_is_v7(&a));
        CHECK_MEM(a.bytes, zero.bytes, 8);
        for (k = 0; k < 8; k++) {
            seen_or[k] |= a.bytes[8 + k];
            seen_and[k] &= a.bytes[8 + k];
        }
    }
    CHECK_EQ_U64(seen_or[0], 0xBF);
    CHECK_EQ_U64(seen_and[0], 0x80);
    for (k = 1; k < 8; k++) {
        CHECK_EQ_U64(seen_or[k], 0xFF);
        CHECK_EQ_U64(seen_and[k], 0x00);
    }
}

TEST(ids, time_ordered_sorts_by_time)
{
    uint8_t ent[8];
    opstate_id prev, cur;
    char tprev[OPSTATE_ID_TEXT_LEN], tcur[OPSTATE_ID_TEXT_LEN];
    int64_t t;
    int i, j;
    t_seed(23);
    for (i = 0; i < 200; i++) {
        /* Random start anywhere in the int64 range of non-negative ns. */
        t = (int64_t)(t_rand() >> 2);
        t_fill(ent, sizeof ent);
        REQUIRE(opstate_id_time_ordered(t, ent, &prev) == OPSTATE_OK);
        opstate_id_to_text(&prev, tprev);
        for (j = 0; j < 20; j++) {
            /* Steps of 245 ns (just over 1/4096 ms) .. ~4 ms with fresh
               entropy: strictly increasing. */
            t += 245 + (int64_t)(j == 0 ? 0 : t_below(4000000));
            t_fill(ent, sizeof ent);
            REQUIRE(opstate_id_time_ordered(t, ent, &cur) == OPSTATE_OK);
            opstate_id_to_text(&cur, tcur);
            CHECK(memcmp(prev.bytes, cur.bytes, 16) < 0);
            CHECK(memcmp(tprev, tcur, OPSTATE_ID_TEXT_LEN) < 0);
            prev = cur;
            memcpy(tprev, tcur, sizeof tcur);
        }
    }
    /* Same entropy, 1 ns steps through a millisecond boundary: never decreasing,
       and the boundary itself is strictly increasing. */
    memset(ent, 0x5A, sizeof ent);
    REQUIRE(opstate_id_time_ordered(INT64_C(1699999999999990000), ent, &prev) == OPSTATE_OK);
    for (t = INT64_C(1699999999999990001); t <= INT64_C(1700000000000010000); t += 7) {
        REQUIRE(opstate_id_time_ordered(t, ent, &cur) == OPSTATE_OK);
        CHECK(memcmp(prev.bytes, cur.bytes, 16) <= 0);
        prev = cur;
    }
    REQUIRE(opstate_id_time_ordered(INT64_C(1699999999999999999), ent, &prev) == OPSTATE_OK);
    REQUIRE(opstate_id_time_ordered(INT64_C(1700000000000000000), ent, &cur) == OPSTATE_OK);
    CHECK(memcmp(prev.bytes, cur.bytes, 16) < 0);
    CHECK_EQ_U64(t_id_ms(&cur), t_id_ms(&prev) + 1);
    /* 1/4096 ms apart or more sorts later whatever the entropy: every
       245 ns step across a whole millisecond, worst-case entropy order. */
    {
        uint8_t hi_ent[8], lo_ent[8];
        memset(hi_ent, 0xFF, sizeof hi_ent);
        memset(lo_ent, 0x00, sizeof lo_ent);
        for (t = INT64_C(1700000000000000000); t < INT64_C(1700000000001000000); t += 245) {
            REQUIRE(opstate_id_time_ordered(t, hi_ent, &prev) == OPSTATE_OK);
            REQUIRE(opstate_id_time_ordered(t + 245, lo_ent, &cur) == OPSTATE_OK);
            CHECK(memcmp(prev.bytes, cur.bytes, 16) < 0);
        }
    }
    /* Within one millisecond the fraction orders ids with the same entropy. */
    REQUIRE(opstate_id_time_ordered(INT64_C(1700000000000000000), ent, &prev) == OPSTATE_OK);
    REQUIRE(opstate_id_time_ordered(INT64_C(1700000000000500000), ent, &cur) == OPSTATE_OK);
    CHECK(memcmp(prev.bytes, cur.bytes, 16) < 0);
    CHECK_EQ_U64(t_id_ms(&cur), t_id_ms(&prev));
}

TEST(ids, time_ordered_rejects_negative_time)
{
    static const int64_t bad[] = {-1, -999999, -1000000, -1000001, INT64_MIN};
    uint8_t ent[8];
    opstate_id id, before;
    size_t i;
    memset(ent, 0x11, sizeof ent);
    for (i = 0; i < COUNT_OF(bad); i++) {
        CASE("negative time");
        memset(&id, 0xAA, sizeof id);
        before = id;
        CHECK(opstate_id_time_ordered(bad[i], ent, &id) == OPSTATE_INVALID_ARGUMENT);
        CHECK_MEM(id.bytes, before.bytes, 16);
    }
    /* The top of the int64 ns range (year 2262) is far below 2^48 ms (year
       10889), so every non-negative time is accepted. */
    CHECK(opstate_id_time_ordered(INT64_MAX, ent, &id) == OPSTATE_OK);
    CHECK(opstate_id_time_ordered(0, ent, &id) == OPSTATE_OK);
    CHECK_EQ_U64(t_id_ms(&id), 0);
}

/* The base event for content-id tests. */
static opstate_event t_base_event(void)
{
    opstate_event ev;
    memset(&ev, 0, sizeof ev);
    ev.scope = str("ab");
    ev.kind = str("c");
    ev.key = str("k1");
    ev.op = OPSTATE_OP_PUT;
    ev.data = str("hello");
    ev.has_time = true;
    ev.time = 123;
    return ev;
}

TEST(ids, content_id_deterministic)
{
    opstate_event a = t_base_event(), b;
    opstate_id ia, ib;
    char scope[8], kind[8], key[8], data[8];
    ia = opstate_id_from_content(&a);
    CHECK(t_is_v8(&ia));
    /* Same content in other buffers. */
    memcpy(scope, "ab", 2);
    memcpy(kind, "c", 1);
    memcpy(key, "k1", 2);
    memcpy(data, "hello", 5);
    b = a;
    b.scope = by(scope, 2);
    b.kind = by(kind, 1);
    b.key = by(key, 2);
    b.data = by(data, 5);
    /* The id field and the position are not content. */
    memset(b.id.bytes, 0x77, 16);
    b.position.seq = 99;
    b.position.time = 5;
    b.position.epoch = 3;
    ib = opstate_id_from_content(&b);
    CHECK(opstate_id_equal(&ia, &ib));
    /* Without has_time the time field is ignored. */
    a.has_time = false;
    a.time = 1;
    b.has_time = false;
    b.time = 2;
    ia = opstate_id_from_content(&a);
    ib = opstate_id_from_content(&b);
    CHECK(opstate_id_equal(&ia, &ib));
    /* An empty byte string may have a NULL pointer. */
    a = t_base_event();
    b = a;
    a.key = by(NULL, 0);
    a.data = by(NULL, 0);
    b.key = by("zz", 0);
    b.data = by("zz", 0);
    ia = opstate_id_from_content(&a);
    ib = opstate_id_from_content(&b);
    CHECK(opstate_id_equal(&ia, &ib));
}

TEST(ids, content_id_every_field_matters)
{
    enum { N = 22 };
    opstate_event ev[N];
    opstate_id id[N];
    const char *name[N];
    char txt_i[OPSTATE_ID_TEXT_LEN], txt_j[OPSTATE_ID_TEXT_LEN];
    int n = 0, i, j;
#define T_VARIANT(label, stmt) \
    do { ev[n] = t_base_event(); { opstate_event *e = &ev[n]; stmt; } name[n++] = label; } while (0)
    T_VARIANT("base", (void)e);
    T_VARIANT("scope", e->scope = str("ab2"));
    T_VARIANT("scope case", e->scope = str("AB"));
    T_VARIANT("kind", e->kind = str("d"));
    T_VARIANT("key", e->key = str("k2"));
    T_VARIANT("no key", e->key = by(NULL, 0));
    T_VARIANT("op delete", e->op = OPSTATE_OP_DELETE);
    T_VARIANT("op app", e->op = OPSTATE_OP_APP);
    T_VARIANT("op 257", e->op = 257);
    T_VARIANT("data", e->data = str("hellp"));
    T_VARIANT("no data", e->data = by(NULL, 0));
    T_VARIANT("no time", e->has_time = false);
    T_VARIANT("time", e->time = 124);
    T_VARIANT("time high", e->time = 123 + (INT64_C(1) << 40));
    T_VARIANT("time negative", e->time = -123);
    T_VARIANT("time zero", e->time = 0);
    /* Field-boundary shifts: the same concatenated bytes, cut elsewhere. */
    T_VARIANT("scope|kind shift", (e->scope = str("a"), e->kind = str("bc")));
    T_VARIANT("kind|key shift", (e->kind = str("ck"), e->key = str("1")));
    T_VARIANT("key|data shift", (e->key = str("k1h"), e->data = str("ello")));
    T_VARIANT("key|data shift 2", (e->key = str("k"), e->data = str("1hello")));
    T_VARIANT("key into data", (e->key = by(NULL, 0), e->data = str("k1hello")));
    T_VARIANT("data into key", (e->key = str("k1hello"), e->data = by(NULL, 0)));
#undef T_VARIANT
    REQUIRE(n == N);
    for (i = 0; i < N; i++) {
        id[i] = opstate_id_from_content(&ev[i]);
        CASE(name[i]);
        CHECK(t_is_v8(&id[i]));
    }
    for (i = 0; i < N; i++) {
        for (j = i + 1; j < N; j++) {
            CASE(name[j]);
            opstate_id_to_text(&id[i], txt_i);
            opstate_id_to_text(&id[j], txt_j);
            CHECK(!opstate_id_equal(&id[i], &id[j]));
            CHECK(memcmp(txt_i, txt_j, OPSTATE_ID_TEXT_LEN) != 0);
        }
    }
    /* has_time false with time 0 vs has_time true with time 0. */
    ev[0] = t_base_event();
    ev[0].has_time = false;
    ev[0].time = 0;
    ev[1] = t_base_event();
    ev[1].time = 0;
    id[0] = opstate_id_from_content(&ev[0]);
    id[1] = opstate_id_from_content(&ev[1]);
    CASE("has_time with time 0");
    CHECK(!opstate_id_equal(&id[0], &id[1]));
}

TEST(ids, content_id_golden)
{
    /* Content ids must not change between versions, compilers or byte
       orders: producers and consumers of different builds dedup against each
       other. These values were computed independently (Python hashlib) from
       the layout the implementation uses: SHA-256 over "opstate.id.v1",
       then scope, kind, key, data each as u64 LE length + bytes, then u32 LE
       op, u8 has_time, i64 LE time (0 without has_time); the first 16 bytes
       with the version 8 and variant 10 bits set. A change here is a format
       break. */
    static uint8_t data[200];
    opstate_event ev;
    opstate_id id;
    char txt[OPSTATE_ID_TEXT_LEN];
    int i;
    ev = t_base_event();
    id = opstate_id_from_content(&ev);
    opstate_id_to_text(&id, txt);
    CHECK_MEM(txt, "970570a4-08e8-8464-afb8-0f214f6e757b", OPSTATE_ID_TEXT_LEN);
    memset(&ev, 0, sizeof ev);
    ev.scope = str("tenant1");
    ev.kind = str("device");
    ev.key = str("10.0.0.1");
    ev.op = OPSTATE_OP_DELETE;
    id = opstate_id_from_content(&ev);
    opstate_id_to_text(&id, txt);
    CHECK_MEM(txt, "3da5ea1f-1223-86fc-a46a-16633a5d1565", OPSTATE_ID_TEXT_LEN);
    for (i = 0; i < 200; i++) data[i] = (uint8_t)i;
    memset(&ev, 0, sizeof ev);
    ev.scope = str("s");
    ev.kind = str("k");
    ev.op = 0x12345678u;
    ev.data = by(data, sizeof data);
    ev.has_time = true;
    ev.time = -INT64_C(1700000000123456789);
    id = opstate_id_from_content(&ev);
    opstate_id_to_text(&id, txt);
    CHECK_MEM(txt, "f51f0661-0715-8568-af4c-1109b410c414", OPSTATE_ID_TEXT_LEN);
}

TEST(ids, content_id_random_single_byte_changes)
{
    static uint8_t data[300];
    uint8_t key[40];
    opstate_event ev;
    opstate_id base, other;
    int i;
    t_seed(24);
    t_fill(data, sizeof data);
    t_fill(key, sizeof key);
    ev = t_base_event();
    ev.key = by(key, sizeof key);
    ev.data = by(data, sizeof data);
    base = opstate_id_from_content(&ev);
    for (i = 0; i < 200; i++) {
        size_t at = t_below(sizeof data);
        uint8_t bit = (uint8_t)(1u << t_below(8));
        data[at] ^= bit;
        other = opstate_id_from_content(&ev);
        CHECK(!opstate_id_equal(&base, &other));
        data[at] ^= bit;
    }
    for (i = 0; i < 64; i++) {
        ev.time = (int64_t)(UINT64_C(123) ^ (UINT64_C(1) << i));
        other = opstate_id_from_content(&ev);
        CHECK(!opstate_id_equal(&base, &other));
    }
    ev.time = 123;
    other = opstate_id_from_content(&ev);
    CHECK(opstate_id_equal(&base, &other));
}

TEST(ids, id_equal)
{
    opstate_id a, b;
    int i;
    memset(&a, 0x3C, sizeof a);
    b = a;
    CHECK(opstate_id_equal(&a, &b));
    for (i = 0; i < 16; i++) {
        b = a;
        b.bytes[i] ^= 0x01;
        CHECK(!opstate_id_equal(&a, &b));
        b.bytes[i] ^= 0x81;
        CHECK(!opstate_id_equal(&a, &b));
    }
}

TEST(ids, to_text_exact)
{
    opstate_id id;
    char buf[OPSTATE_ID_TEXT_LEN + 4];
    int i;
    for (i = 0; i < 16; i++) id.bytes[i] = (uint8_t)i;
    memset(buf, '#', sizeof buf);
    opstate_id_to_text(&id, buf);
    CHECK_MEM(buf, "00010203-0405-0607-0809-0a0b0c0d0e0f####", sizeof buf);
    for (i = 0; i < 16; i++) id.bytes[i] = (uint8_t)(0xF0 + i);
    opstate_id_to_text(&id, buf);
    CHECK_MEM(buf, "f0f1f2f3-f4f5-f6f7-f8f9-fafbfcfdfeff####", sizeof buf);
    memset(&id, 0, sizeof id);
    opstate_id_to_text(&id, buf);
    CHECK_MEM(buf, "00000000-0000-0000-0000-000000000000####", sizeof buf);
    memset(&id, 0x9A, sizeof id);
    opstate_id_to_text(&id, buf);
    CHECK_MEM(buf, "9a9a9a9a-9a9a-9a9a-9a9a-9a9a9a9a9a9a####", sizeof buf);
}

TEST(ids, text_round_trip)
{
    opstate_id id, back;
    opstate_error err;
    char txt[OPSTATE_ID_TEXT_LEN], again[OPSTATE_ID_TEXT_LEN];
    int i;
    t_seed(25);
    for (i = 0; i < 1000; i++) {
        t_fill(id.bytes, 16);
        opstate_id_to_text(&id, txt);
        err = t_err();
        memset(&back, 0, sizeof back);
        REQUIRE(opstate_id_from_text(txt, sizeof txt, &back, &err) == OPSTATE_OK);
        CHECK(opstate_id_equal(&id, &back));
        opstate_id_to_text(&back, again);
        CHECK_MEM(txt, again, sizeof txt);
    }
    /* The nil and all-ones ids have text forms too (any 16 bytes do). */
    CHECK(opstate_id_from_text("00000000-0000-0000-0000-000000000000", 36, &back, NULL) ==
          OPSTATE_OK);
    memset(&id, 0, sizeof id);
    CHECK(opstate_id_equal(&id, &back));
    CHECK(opstate_id_from_text("ffffffff-ffff-ffff-ffff-ffffffffffff", 36, &back, NULL) ==
          OPSTATE_OK);
    memset(&id, 0xFF, sizeof id);
    CHECK(opstate_id_equal(&id, &back));
    /* The text need not be terminated: trailing bytes past len are ignored. */
    CHECK(opstate_id_from_text("01234567-89ab-cdef-0123-456789abcdefXYZ", 36, &back, NULL) ==
          OPSTATE_OK);
    CHECK_EQ_U64(back.bytes[0], 0x01);
    CHECK_EQ_U64(back.bytes[15], 0xEF);
}

TEST(ids, text_every_hex_digit_every_position)
{
    static const char hex[] = "0123456789abcdef";
    char txt[OPSTATE_ID_TEXT_LEN + 1];
    char again[OPSTATE_ID_TEXT_LEN];
    opstate_id id;
    int pos, d;
    for (pos = 0; pos < OPSTATE_ID_TEXT_LEN; pos++) {
        if (pos == 8 || pos == 13 || pos == 18 || pos == 23) continue;
        for (d = 0; d < 16; d++) {
            memcpy(txt, "00000000-0000-0000-0000-000000000000", sizeof txt);
            txt[pos] = hex[d];
            CASE("hex digit");
            REQUIRE(opstate_id_from_text(txt, OPSTATE_ID_TEXT_LEN, &id, NULL) == OPSTATE_OK);
            opstate_id_to_text(&id, again);
            CHECK_MEM(txt, again, OPSTATE_ID_TEXT_LEN);
        }
    }
}

TEST(ids, text_rejects_bad_char_at_every_position)
{
    static const char good[] = "0123abcd-ef01-7abc-89ab-cdef01234567";
    /* Neighbours of the accepted classes and other lookalikes. */
    static const char bad_for_hex[] = {'g', 'G', 'A', 'F', '/', ':', '`', '@', '-', ' ',
                                       '\0', 'x', '\x7f', '\x80', '\xff', '.', '_', '+'};
    static const char bad_for_dash[] = {'0', 'a', 'f', '_', ',', '.', '+', ' ', '\0',
                                        '\x2c', '\x2e', '\xad', '\xff', '='};
    char txt[OPSTATE_ID_TEXT_LEN];
    opstate_id id, before;
    opstate_error err;
    size_t pos, k;
    opstate_result r;
    memset(&before, 0xAA, sizeof before);
    for (pos = 0; pos < OPSTATE_ID_TEXT_LEN; pos++) {
        int dash = pos == 8 || pos == 13 || pos == 18 || pos == 23;
        const char *bad = dash ? bad_for_dash : bad_for_hex;
        size_t nbad = dash ? sizeof bad_for_dash : sizeof bad_for_hex;
        for (k = 0; k < nbad; k++) {
            memcpy(txt, good, OPSTATE_ID_TEXT_LEN);
            txt[pos] = bad[k];
            id = before;
            err = t_err();
            CASE(dash ? "bad char at a dash position" : "bad char at a hex position");
            r = opstate_id_from_text(txt, OPSTATE_ID_TEXT_LEN, &id, &err);
            CHECK(r == OPSTATE_INVALID_ID);
            CHECK(err.result == OPSTATE_INVALID_ID);
            CHECK_EQ_U64(err.offset, pos);
            CHECK_MEM(id.bytes, before.bytes, 16);
            /* err is optional */
            CHECK(opstate_id_from_text(txt, OPSTATE_ID_TEXT_LEN, &id, NULL) == OPSTATE_INVALID_ID);
            CHECK_MEM(id.bytes, before.bytes, 16);
        }
    }
    /* Two bad characters: the offset is the first. */
    memcpy(txt, good, OPSTATE_ID_TEXT_LEN);
    txt[30] = 'Z';
    txt[5] = 'Z';
    err = t_err();
    CHECK(opstate_id_from_text(txt, OPSTATE_ID_TEXT_LEN, &id, &err) == OPSTATE_INVALID_ID);
    CHECK_EQ_U64(err.offset, 5);
    /* Uppercase spelling of a valid id: a second spelling, refused. */
    err = t_err();
    CHECK(opstate_id_from_text("0123ABCD-EF01-7ABC-89AB-CDEF01234567", 36, &id, &err) ==
          OPSTATE_INVALID_ID);
    CHECK_EQ_U64(err.offset, 4);
    /* Braced / urn / no-dash spellings. */
    CHECK(opstate_id_from_text("0123abcdef017abc89abcdef01234567", 32, &id, NULL) ==
          OPSTATE_INVALID_ID);
    CHECK(opstate_id_from_text("{0123abcd-ef01-7abc-89ab-cdef01234567}", 38, &id, NULL) ==
          OPSTATE_INVALID_ID);
    /* Dashes shifted by one: 0123abc-def01-... */
    err = t_err();
    CHECK(opstate_id_from_text("0123abc-def01-7abc-89ab-cdef01234567", 36, &id, &err) ==
          OPSTATE_INVALID_ID);
    CHECK_EQ_U64(err.offset, 7);
    CHECK_MEM(id.bytes, before.bytes, 16);
}

TEST(ids, text_rejects_wrong_length)
{
    static const char good[] = "0123abcd-ef01-7abc-89ab-cdef01234567X";
    opstate_id id, before;
    opstate_error err;
    size_t len;
    memset(&before, 0xAA, sizeof before);
    for (len = 0; len <= 37; len++) {
        if (len == OPSTATE_ID_TEXT_LEN) continue;
        id = before;
        err = t_err();
        CASE("length");
        CHECK(opstate_id_from_text(good, len, &id, &err) == OPSTATE_INVALID_ID);
        CHECK(err.result == OPSTATE_INVALID_ID);
        CHECK_MEM(id.bytes, before.bytes, 16);
    }
    CHECK(opstate_id_from_text(NULL, 0, &id, NULL) == OPSTATE_INVALID_ID);
    CHECK_MEM(id.bytes, before.bytes, 16);
}

TEST(ids, text_wrong_length_offset)
{
    /* "err->offset at the first bad character": a valid 35-character prefix
       goes wrong where the 36th character is missing; a 37th character is
       the first bad one. */
    static const char good[] = "0123abcd-ef01-7abc-89ab-cdef01234567X";
    opstate_id id;
    opstate_error err;
    err = t_err();
    CHECK(opstate_id_from_text(good, 35, &id, &err) == OPSTATE_INVALID_ID);
    CHECK_EQ_U64(err.offset, 35);
    err = t_err();
    CHECK(opstate_id_from_text(good, 37, &id, &err) == OPSTATE_INVALID_ID);
    CHECK_EQ_U64(err.offset, 36);
    err = t_err();
    CHECK(opstate_id_from_text(good, 0, &id, &err) == OPSTATE_INVALID_ID);
    CHECK_EQ_U64(err.offset, 0);
}

/* ---- subjects ----------------------------------------------------------- */

/* Independent oracles for the character classes in the doc comments. */
static int t_token_byte_ok(unsigned c)
{
    return c > 0x20 && c < 0x7F && c != '.' && c != '*' && c != '>';
}
static int t_key_safe(unsigned c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '-';
}
static int t_upper_hex(unsigned c) { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F'); }

/* The escaped form of a key by the documented rule. Returns its length. */
static size_t t_escape(const uint8_t *key, size_t n, char *out)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t i, o = 0;
    for (i = 0; i < n; i++) {
        if (t_key_safe(key[i])) {
            out[o++] = (char)key[i];
        } else {
            out[o++] = '%';
            out[o++] = hex[key[i] >> 4];
            out[o++] = hex[key[i] & 15];
        }
    }
    return o;
}

/* Every character an escaped key may contain. */
static int t_escaped_charset_ok(const char *s, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        unsigned c = (unsigned char)s[i];
        if (c == '%') {
            if (i + 2 >= n) return 0;
            if (!t_upper_hex((unsigned char)s[i + 1]) || !t_upper_hex((unsigned char)s[i + 2]))
                return 0;
            i += 2;
            continue;
        }
        if (!t_key_safe(c)) return 0;
        if (c == '.' || c == '*' || c == '>' || c <= 0x20 || c >= 0x7F) return 0;
    }
    return 1;
}

TEST(subjects, token_every_single_byte)
{
    unsigned c;
    for (c = 0; c < 256; c++) {
        char one[1], five[5];
        opstate_error err = t_err();
        opstate_result want = t_token_byte_ok(c) ? OPSTATE_OK : OPSTATE_INVALID_TOKEN;
        one[0] = (char)c;
        CASE("1-byte token");
        CHECK(opstate_token_validate(one, 1, &err) == want);
        if (want != OPSTATE_OK) {
            CHECK(err.result == OPSTATE_INVALID_TOKEN);
            CHECK_EQ_U64(err.offset, 0);
        }
        memcpy(five, "ab?cd", 5);
        five[2] = (char)c;
        err = t_err();
        CASE("byte in the middle");
        CHECK(opstate_token_validate(five, 5, &err) == want);
        if (want != OPSTATE_OK) CHECK_EQ_U64(err.offset, 2);
        memcpy(five, "abcd?", 5);
        five[4] = (char)c;
        err = t_err();
        CASE("byte at the end");
        CHECK(opstate_token_validate(five, 5, &err) == want);
        if (want != OPSTATE_OK) CHECK_EQ_U64(err.offset, 4);
        CHECK(opstate_token_validate(five, 5, NULL) == want);
    }
}

TEST(subjects, token_table)
{
    static const struct {
        const char *name, *tok;
        size_t len;
        opstate_result want;
        size_t offset;
    } rows[] = {
        {"letter", "a", 1, OPSTATE_OK, 0},
        {"mixed", "Tenant_01-eu", 12, OPSTATE_OK, 0},
        {"punctuation", "a!\"#$%&'()+,/:;<=?@[\\]^`{|}~", 28, OPSTATE_OK, 0},
        {"escaped key", "10%2E0%2E0%2E1", 14, OPSTATE_OK, 0},
        {"dash", "-", 1, OPSTATE_OK, 0},
        {"tilde", "~", 1, OPSTATE_OK, 0},
        {"dot", "a.b", 3, OPSTATE_INVALID_TOKEN, 1},
        {"dot first", ".ab", 3, OPSTATE_INVALID_TOKEN, 0},
        {"star", "ab*", 3, OPSTATE_INVALID_TOKEN, 2},
        {"gt", ">", 1, OPSTATE_INVALID_TOKEN, 0},
        {"space", "ab c", 4, OPSTATE_INVALID_TOKEN, 2},
        {"tab", "a\tb", 3, OPSTATE_INVALID_TOKEN, 1},
        {"newline", "ab\n", 3, OPSTATE_INVALID_TOKEN, 2},
        {"cr", "\rab", 3, OPSTATE_INVALID_TOKEN, 0},
        {"vt", "a\vb", 3, OPSTATE_INVALID_TOKEN, 1},
        {"ff", "a\fb", 3, OPSTATE_INVALID_TOKEN, 1},
        {"nul inside", "ab\0cd", 5, OPSTATE_INVALID_TOKEN, 2},
        {"0x01", "\001", 1, OPSTATE_INVALID_TOKEN, 0},
        {"0x1f", "abc\037", 4, OPSTATE_INVALID_TOKEN, 3},
        {"del", "a\177", 2, OPSTATE_INVALID_TOKEN, 1},
        {"0x80", "a\200", 2, OPSTATE_INVALID_TOKEN, 1},
        {"utf-8 e-acute", "caf\303\251", 5, OPSTATE_INVALID_TOKEN, 3},
        {"0xff", "\377", 1, OPSTATE_INVALID_TOKEN, 0},
        {"two bad: first wins", "a b.c", 5, OPSTATE_INVALID_TOKEN, 1},
        {"empty", "", 0, OPSTATE_INVALID_TOKEN, 0},
    };
    size_t i;
    for (i = 0; i < COUNT_OF(rows); i++) {
        opstate_error err = t_err();
        CASE(rows[i].name);
        CHECK(opstate_token_validate(rows[i].tok, rows[i].len, &err) == rows[i].want);
        if (rows[i].want != OPSTATE_OK) {
            CHECK(err.result == rows[i].want);
            if (rows[i].len > 0) CHECK_EQ_U64(err.offset, rows[i].offset);
        }
    }
}

TEST(subjects, token_length_limit)
{
    static char buf[OPSTATE_MAX_TOKEN_LEN + 100];
    opstate_error err;
    memset(buf, 'a', sizeof buf);
    CHECK(opstate_token_validate(buf, 1, NULL) == OPSTATE_OK);
    CHECK(opstate_token_validate(buf, OPSTATE_MAX_TOKEN_LEN, NULL) == OPSTATE_OK);
    err = t_err();
    CHECK(opstate_token_validate(buf, OPSTATE_MAX_TOKEN_LEN + 1, &err) == OPSTATE_OVERSIZED);
    CHECK(err.result == OPSTATE_OVERSIZED);
    CHECK(opstate_token_validate(buf, sizeof buf, NULL) == OPSTATE_OVERSIZED);
    CHECK(opstate_token_validate(NULL, 0, NULL) == OPSTATE_INVALID_TOKEN);
    /* A bad byte at the very last allowed position is still found. */
    buf[OPSTATE_MAX_TOKEN_LEN - 1] = '.';
    err = t_err();
    CHECK(opstate_token_validate(buf, OPSTATE_MAX_TOKEN_LEN, &err) == OPSTATE_INVALID_TOKEN);
    CHECK_EQ_U64(err.offset, OPSTATE_MAX_TOKEN_LEN - 1);
}

TEST(subjects, prefix_validate)
{
    static const struct {
        const char *name, *prefix;
        opstate_result ok; /* OPSTATE_OK or any failure */
        size_t offset;     /* checked when != (size_t)-1 */
    } rows[] = {
        {"one token", "ops", OPSTATE_OK, (size_t)-1},
        {"three tokens", "a.b.c", OPSTATE_OK, (size_t)-1},
        {"dollar", "$KV.bucket", OPSTATE_OK, (size_t)-1},
        {"empty", "", OPSTATE_INVALID_TOKEN, (size_t)-1},
        {"leading dot", ".a", OPSTATE_INVALID_TOKEN, 0},
        {"trailing dot", "a.", OPSTATE_INVALID_TOKEN, (size_t)-1},
        {"double dot", "a..b", OPSTATE_INVALID_TOKEN, (size_t)-1},
        {"only a dot", ".", OPSTATE_INVALID_TOKEN, (size_t)-1},
        {"star token", "a.*", OPSTATE_INVALID_TOKEN, 2},
        {"gt token", "a.>", OPSTATE_INVALID_TOKEN, 2},
        {"star inside", "ab.c*d", OPSTATE_INVALID_TOKEN, 4},
        {"space", "ab.c d", OPSTATE_INVALID_TOKEN, 4},
        {"control", "ab.cd\001", OPSTATE_INVALID_TOKEN, 5},
        {"non-ascii", "\302\265s.x", OPSTATE_INVALID_TOKEN, 0},
    };
    size_t i;
    for (i = 0; i < COUNT_OF(rows); i++) {
        opstate_error err = t_err();
        opstate_result r = opstate_prefix_validate(rows[i].prefix, strlen(rows[i].prefix), &err);
        CASE(rows[i].name);
        if (rows[i].ok == OPSTATE_OK) {
            CHECK(r == OPSTATE_OK);
        } else {
            CHECK(r != OPSTATE_OK);
            CHECK(err.result == r);
            if (rows[i].offset != (size_t)-1) CHECK_EQ_U64(err.offset, rows[i].offset);
        }
    }
}

TEST(subjects, prefix_token_lengths)
{
    static char buf[2 * OPSTATE_MAX_TOKEN_LEN + 10];
    size_t n = OPSTATE_MAX_TOKEN_LEN;
    memset(buf, 'p', sizeof buf);
    buf[n] = '.';
    /* Two tokens of the maximum length. */
    CHECK(opstate_prefix_validate(buf, 2 * n + 1, NULL) == OPSTATE_OK);
    /* One token one byte too long, first or last. */
    CHECK(opstate_prefix_validate(buf, 2 * n + 2, NULL) != OPSTATE_OK);
    buf[n] = 'p';
    buf[n + 1] = '.';
    CHECK(opstate_prefix_validate(buf, n + 3, NULL) != OPSTATE_OK);
    CHECK(opstate_prefix_validate(buf, n + 1, NULL) != OPSTATE_OK);
}

TEST(subjects, key_escape_every_single_byte)
{
    unsigned c;
    for (c = 0; c < 256; c++) {
        uint8_t key[1], back[4];
        char want[4], got[8];
        size_t wn, n = 999, m = 999;
        opstate_error err = t_err();
        key[0] = (uint8_t)c;
        wn = t_escape(key, 1, want);
        CASE("1-byte key");
        CHECK(opstate_key_escape(key, 1, NULL, 0, &n) == OPSTATE_OK);
        CHECK_EQ_U64(n, wn);
        n = 999;
        memset(got, '#', sizeof got);
        REQUIRE(opstate_key_escape(key, 1, got, sizeof got, &n) == OPSTATE_OK);
        CHECK_EQ_U64(n, wn);
        CHECK_MEM(got, want, wn);
        CHECK(got[wn] == '#');
        CHECK(opstate_token_validate(got, n, NULL) == OPSTATE_OK);
        REQUIRE(opstate_key_unescape(got, n, back, sizeof back, &m, &err) == OPSTATE_OK);
        CHECK_EQ_U64(m, 1);
        CHECK_EQ_U64(back[0], c);
    }
}

TEST(subjects, key_escape_known)
{
    static const struct { const char *name, *key, *tok; } rows[] = {
        {"ipv4", "10.0.0.1", "10%2E0%2E0%2E1"},
        {"safe", "Az09_-", "Az09_-"},
        {"wildcards", "a.*>", "a%2E%2A%3E"},
        {"percent", "100%", "100%25"},
        {"space and tilde", " ~", "%20%7E"},
        {"utf-8", "\303\251", "%C3%A9"},
        {"ipv6", "::1", "%3A%3A1"},
        {"slash path", "a/b", "a%2Fb"},
    };
    size_t i;
    for (i = 0; i < COUNT_OF(rows); i++) {
        char out[64];
        uint8_t back[64];
        size_t n = 0, m = 0, kl = strlen(rows[i].key);
        CASE(rows[i].name);
        REQUIRE(opstate_key_escape((const uint8_t *)rows[i].key, kl, out, sizeof out, &n) ==
                OPSTATE_OK);
        CHECK_EQ_U64(n, strlen(rows[i].tok));
        CHECK_MEM(out, rows[i].tok, n);
        REQUIRE(opstate_key_unescape(rows[i].tok, strlen(rows[i].tok), back, sizeof back, &m,
                                     NULL) == OPSTATE_OK);
        CHECK_EQ_U64(m, kl);
        CHECK_MEM(back, rows[i].key, kl);
    }
}

TEST(subjects, key_escape_random_round_trip)
{
    static uint8_t key[OPSTATE_MAX_KEY_LEN], back[OPSTATE_MAX_KEY_LEN + 8];
    static char tok[3 * OPSTATE_MAX_KEY_LEN + 8], want[3 * OPSTATE_MAX_KEY_LEN];
    static const uint8_t nasty[] = {'.', '>', '*', '%', ' ', 0, 0x7F, 0xFF, 'A', '-'};
    int i;
    t_seed(31);
    for (i = 0; i < 400; i++) {
        size_t len = 1 + t_below(i < 350 ? 40 : OPSTATE_MAX_KEY_LEN), j, n = 0, m = 0, q = 0;
        int mode = (int)t_below(3);
        for (j = 0; j < len; j++)
            key[j] = mode == 0 ? (uint8_t)t_rand()
                   : mode == 1 ? nasty[t_below(sizeof nasty)]
                               : (uint8_t)('a' + t_below(26));
        CASE("random key");
        REQUIRE(opstate_key_escape(key, len, NULL, 0, &q) == OPSTATE_OK);
        REQUIRE(opstate_key_escape(key, len, tok, sizeof tok, &n) == OPSTATE_OK);
        CHECK_EQ_U64(n, q);
        CHECK_EQ_U64(n, t_escape(key, len, want));
        CHECK_MEM(tok, want, n);
        CHECK(t_escaped_charset_ok(tok, n));
        CHECK(memchr(tok, '.', n) == NULL);
        CHECK(memchr(tok, '*', n) == NULL);
        CHECK(memchr(tok, '>', n) == NULL);
        if (n <= OPSTATE_MAX_TOKEN_LEN) CHECK(opstate_token_validate(tok, n, NULL) == OPSTATE_OK);
        REQUIRE(opstate_key_unescape(tok, n, NULL, 0, &q, NULL) == OPSTATE_OK);
        CHECK_EQ_U64(q, len);
        REQUIRE(opstate_key_unescape(tok, n, back, sizeof back, &m, NULL) == OPSTATE_OK);
        CHECK_EQ_U64(m, len);
        CHECK_MEM(back, key, len);
    }
}

TEST(subjects, key_length_limits)
{
    static uint8_t key[OPSTATE_MAX_KEY_LEN + 2], back[OPSTATE_MAX_KEY_LEN + 2];
    static char tok[3 * (OPSTATE_MAX_KEY_LEN + 2)];
    size_t n = 0, m = 0;
    opstate_result r;
    memset(key, 0, sizeof key); /* every byte escaped: 3 characters each */
    REQUIRE(opstate_key_escape(key, OPSTATE_MAX_KEY_LEN, tok, sizeof tok, &n) == OPSTATE_OK);
    CHECK_EQ_U64(n, 3 * OPSTATE_MAX_KEY_LEN);
    CHECK(t_escaped_charset_ok(tok, n));
    REQUIRE(opstate_key_unescape(tok, n, back, sizeof back, &m, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(m, OPSTATE_MAX_KEY_LEN);
    CHECK_MEM(back, key, m);
    memset(tok, '#', sizeof tok);
    n = 7;
    r = opstate_key_escape(key, OPSTATE_MAX_KEY_LEN + 1, tok, sizeof tok, &n);
    CHECK(r != OPSTATE_OK);
    CHECK(tok[0] == '#');
    CHECK(opstate_key_escape(key, OPSTATE_MAX_KEY_LEN + 1, NULL, 0, &n) != OPSTATE_OK);
    /* Empty key: an event without a key has no key token. */
    n = 7;
    CHECK(opstate_key_escape(key, 0, tok, sizeof tok, &n) == OPSTATE_INVALID_ARGUMENT);
    CHECK(opstate_key_escape(NULL, 0, NULL, 0, &n) == OPSTATE_INVALID_ARGUMENT);
    CHECK(opstate_key_unescape("", 0, back, sizeof back, &m, NULL) != OPSTATE_OK);
}

TEST(subjects, key_escape_buffer_too_small_untouched)
{
    static const char key[] = "10.0.0.1";
    char out[32], pre[32];
    size_t need = 0, cap, n;
    REQUIRE(opstate_key_escape((const uint8_t *)key, 8, NULL, 0, &need) == OPSTATE_OK);
    REQUIRE(need == 14);
    for (cap = 0; cap < need; cap++) {
        memset(out, 0x5C, sizeof out);
        memcpy(pre, out, sizeof out);
        n = 12345;
        CASE("escape cap below need");
        CHECK(opstate_key_escape((const uint8_t *)key, 8, out, cap, &n) ==
              OPSTATE_BUFFER_TOO_SMALL);
        CHECK_MEM(out, pre, sizeof out);
    }
    memset(out, 0x5C, sizeof out);
    CHECK(opstate_key_escape((const uint8_t *)key, 8, out, need, &n) == OPSTATE_OK);
    CHECK_EQ_U64(n, need);
    CHECK_MEM(out, "10%2E0%2E0%2E1", need);
    CHECK(out[need] == 0x5C);
}

TEST(subjects, key_unescape_buffer_too_small_untouched)
{
    static const char tok[] = "10%2E0%2E0%2E1";
    uint8_t out[32], pre[32];
    size_t need = 0, cap, n;
    REQUIRE(opstate_key_unescape(tok, 14, NULL, 0, &need, NULL) == OPSTATE_OK);
    REQUIRE(need == 8);
    for (cap = 0; cap < need; cap++) {
        memset(out, 0x5C, sizeof out);
        memcpy(pre, out, sizeof out);
        n = 12345;
        CASE("unescape cap below need");
        CHECK(opstate_key_unescape(tok, 14, out, cap, &n, NULL) == OPSTATE_BUFFER_TOO_SMALL);
        CHECK_MEM(out, pre, sizeof out);
    }
    memset(out, 0x5C, sizeof out);
    CHECK(opstate_key_unescape(tok, 14, out, need, &n, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(n, 8);
    CHECK_MEM(out, "10.0.0.1", 8);
    CHECK(out[8] == 0x5C);
}

TEST(subjects, key_unescape_strict_table)
{
    static const struct {
        const char *name, *tok;
        size_t len, lo, hi; /* err->offset must be in [lo, hi] */
    } rows[] = {
        {"lowercase hex", "%2e", 3, 0, 2},
        {"lowercase hex later", "ab%2E%c3", 8, 5, 7},
        {"escaped A", "%41", 3, 0, 2},
        {"escaped a", "x%61", 4, 1, 3},
        {"escaped 0", "%30", 3, 0, 2},
        {"escaped 9", "%39", 3, 0, 2},
        {"escaped Z", "%5A", 3, 0, 2},
        {"escaped z", "%7A", 3, 0, 2},
        {"escaped underscore", "%5F", 3, 0, 2},
        {"escaped dash", "%2D", 3, 0, 2},
        {"truncated %4", "%4", 2, 0, 2},
        {"truncated %", "ab%", 3, 2, 3},
        {"non-hex %G0", "%G0", 3, 0, 1},
        {"non-hex %0G", "%0G", 3, 0, 2},
        {"non-hex %g0", "%g0", 3, 0, 1},
        {"bare dot", "10.0", 4, 2, 2},
        {"bare star", "*", 1, 0, 0},
        {"bare gt", "a>", 2, 1, 1},
        {"bare space", "a b", 3, 1, 1},
        {"bare tilde", "a~", 2, 1, 1},
        {"bare bang", "!", 1, 0, 0},
        {"bare nul", "ab\0", 3, 2, 2},
        {"bare 0x80", "\200", 1, 0, 0},
        {"bare 0xff", "a\377", 2, 1, 1},
        {"bare del", "\177", 1, 0, 0},
        {"bare slash", "a/b", 3, 1, 1},
        {"bare colon", ":", 1, 0, 0},
        {"bare at", "@", 1, 0, 0},
        {"bare bracket", "[", 1, 0, 0},
        {"bare backtick", "`", 1, 0, 0},
        {"bare brace", "{", 1, 0, 0},
    };
    size_t i;
    for (i = 0; i < COUNT_OF(rows); i++) {
        uint8_t out[16], pre[16];
        size_t n = 777;
        opstate_error err = t_err();
        opstate_result r;
        memset(out, 0x33, sizeof out);
        memcpy(pre, out, sizeof out);
        CASE(rows[i].name);
        r = opstate_key_unescape(rows[i].tok, rows[i].len, out, sizeof out, &n, &err);
        CHECK(r == OPSTATE_INVALID_TOKEN);
        CHECK(err.result == OPSTATE_INVALID_TOKEN);
        CHECK(err.offset >= rows[i].lo && err.offset <= rows[i].hi);
        CHECK_MEM(out, pre, sizeof out);
        CHECK(opstate_key_unescape(rows[i].tok, rows[i].len, NULL, 0, &n, NULL) ==
              OPSTATE_INVALID_TOKEN);
    }
}

TEST(subjects, key_unescape_stops_at_len)
{
    /* The bytes after len would complete the escape: they must not be read. */
    static uint8_t out[OPSTATE_MAX_KEY_LEN + 8];
    static char tok[OPSTATE_MAX_KEY_LEN + 8];
    opstate_error err = t_err();
    size_t n = 0;
    CHECK(opstate_key_unescape("%4A", 2, out, sizeof out, &n, &err) == OPSTATE_INVALID_TOKEN);
    CHECK(err.offset <= 2);
    CHECK(opstate_key_unescape("ab%2E", 4, out, sizeof out, &n, NULL) == OPSTATE_INVALID_TOKEN);
    CHECK(opstate_key_unescape("ab%", 2, out, sizeof out, &n, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(n, 2);
    CHECK(opstate_key_unescape("%2E", 3, out, sizeof out, &n, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(out[0], '.');
    /* Exact-size arrays: under ASan a read past len is a stack overflow. */
    {
        char trunc[4], trunc2[3], one[1];
        trunc[0] = 'a'; trunc[1] = 'b'; trunc[2] = '%'; trunc[3] = '2';
        trunc2[0] = 'a'; trunc2[1] = 'b'; trunc2[2] = '%';
        one[0] = '%';
        CHECK(opstate_key_unescape(trunc, sizeof trunc, out, sizeof out, &n, NULL) ==
              OPSTATE_INVALID_TOKEN);
        CHECK(opstate_key_unescape(trunc2, sizeof trunc2, out, sizeof out, &n, NULL) ==
              OPSTATE_INVALID_TOKEN);
        CHECK(opstate_key_unescape(one, sizeof one, NULL, 0, &n, NULL) == OPSTATE_INVALID_TOKEN);
    }
    /* A token that decodes to more than OPSTATE_MAX_KEY_LEN bytes is not the
       escape of any key. */
    memset(tok, 'a', sizeof tok);
    CHECK(opstate_key_unescape(tok, OPSTATE_MAX_KEY_LEN, out, sizeof out, &n, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(n, OPSTATE_MAX_KEY_LEN);
    err = t_err();
    CHECK(opstate_key_unescape(tok, OPSTATE_MAX_KEY_LEN + 1, out, sizeof out, &n, &err) !=
          OPSTATE_OK);
    CHECK(err.result != OPSTATE_OK);
    CHECK(opstate_key_unescape(tok, OPSTATE_MAX_KEY_LEN + 1, NULL, 0, &n, NULL) != OPSTATE_OK);
}

TEST(subjects, key_unescape_every_escape)
{
    /* "%XY" for all 65536 (X, Y): accepted exactly when X and Y are
       uppercase hex and the byte is not a safe one. */
    unsigned x, y;
    unsigned long accepted = 0;
    for (x = 0; x < 256; x++) {
        for (y = 0; y < 256; y++) {
            char tok[3];
            uint8_t out[2];
            size_t n = 0;
            int want;
            unsigned v;
            opstate_result r;
            tok[0] = '%';
            tok[1] = (char)x;
            tok[2] = (char)y;
            want = t_upper_hex(x) && t_upper_hex(y);
            v = want ? (unsigned)((x <= '9' ? x - '0' : x - 'A' + 10) * 16 +
                                  (y <= '9' ? y - '0' : y - 'A' + 10))
                     : 0;
            if (want && t_key_safe(v)) want = 0;
            r = opstate_key_unescape(tok, 3, out, sizeof out, &n, NULL);
            if (want) {
                accepted++;
                if (r != OPSTATE_OK || n != 1 || out[0] != v) {
                    CASE("valid escape refused");
                    CHECK(r == OPSTATE_OK);
                    CHECK_EQ_U64(n, 1);
                    CHECK_EQ_U64(out[0], v);
                }
            } else if (r != OPSTATE_INVALID_TOKEN) {
                CASE("bad escape accepted");
                CHECK_EQ_U64(x * 256 + y, 0xFFFFFFFFu);
            }
        }
    }
    CHECK_EQ_U64(accepted, 256 - 64);
}

TEST(subjects, key_unescape_every_bare_byte)
{
    unsigned c;
    for (c = 0; c < 256; c++) {
        char tok[3];
        uint8_t out[4];
        size_t n = 0;
        opstate_error err = t_err();
        tok[0] = 'k';
        tok[1] = (char)c;
        tok[2] = 'k';
        CASE("bare byte");
        if (c == '%') {
            CHECK(opstate_key_unescape(tok, 3, out, sizeof out, &n, &err) ==
                  OPSTATE_INVALID_TOKEN);
        } else if (t_key_safe(c)) {
            CHECK(opstate_key_unescape(tok, 3, out, sizeof out, &n, &err) == OPSTATE_OK);
            CHECK_EQ_U64(n, 3);
            CHECK_EQ_U64(out[1], c);
        } else {
            CHECK(opstate_key_unescape(tok, 3, out, sizeof out, &n, &err) ==
                  OPSTATE_INVALID_TOKEN);
            CHECK_EQ_U64(err.offset, 1);
        }
    }
}

/* ---- subject builders and parser ------------------------------------------ */

TEST(subjects, build_exact)
{
    static const struct {
        const char *name, *prefix, *scope, *kind, *key, *want;
    } rows[] = {
        {"no key", "ops", "tenant1", "device", "", "ops.tenant1.device"},
        {"ip key", "ops", "tenant1", "device", "10.0.0.1", "ops.tenant1.device.10%2E0%2E0%2E1"},
        {"multi-token prefix", "a.b.c", "s", "k", "key", "a.b.c.s.k.key"},
        {"wildcard key", "ops", "s", "k", "*", "ops.s.k.%2A"},
        {"gt key", "ops", "s", "k", ">", "ops.s.k.%3E"},
        {"punctuation scope", "$KV", "t~1", "a!b", "x", "$KV.t~1.a!b.x"},
    };
    size_t i;
    for (i = 0; i < COUNT_OF(rows); i++) {
        char out[128];
        size_t n = 0, q = 0, wl = strlen(rows[i].want);
        opstate_error err = t_err();
        CASE(rows[i].name);
        REQUIRE(opstate_subject_build(rows[i].prefix, strlen(rows[i].prefix), str(rows[i].scope),
                                      str(rows[i].kind), str(rows[i].key), NULL, 0, &q,
                                      &err) == OPSTATE_OK);
        CHECK_EQ_U64(q, wl);
        memset(out, '#', sizeof out);
        REQUIRE(opstate_subject_build(rows[i].prefix, strlen(rows[i].prefix), str(rows[i].scope),
                                      str(rows[i].kind), str(rows[i].key), out, sizeof out, &n,
                                      &err) == OPSTATE_OK);
        CHECK_EQ_U64(n, wl);
        CHECK_MEM(out, rows[i].want, wl);
        CHECK(out[wl] == '#');
        /* exact capacity */
        memset(out, '#', sizeof out);
        CHECK(opstate_subject_build(rows[i].prefix, strlen(rows[i].prefix), str(rows[i].scope),
                                    str(rows[i].kind), str(rows[i].key), out, wl, &n,
                                    NULL) == OPSTATE_OK);
        CHECK_MEM(out, rows[i].want, wl);
    }
}

TEST(subjects, build_buffer_too_small_untouched)
{
    char out[64], pre[64];
    size_t need = 0, cap, n;
    REQUIRE(opstate_subject_build("ops", 3, str("s"), str("k"), str("a.b"), NULL, 0, &need,
                                  NULL) == OPSTATE_OK);
    REQUIRE(need == strlen("ops.s.k.a%2Eb"));
    for (cap = 0; cap < need; cap++) {
        memset(out, 0x5C, sizeof out);
        memcpy(pre, out, sizeof out);
        n = 999;
        CASE("build cap below need");
        CHECK(opstate_subject_build("ops", 3, str("s"), str("k"), str("a.b"), out, cap, &n,
                                    NULL) == OPSTATE_BUFFER_TOO_SMALL);
        CHECK_MEM(out, pre, sizeof out);
    }
    REQUIRE(opstate_subject_filter("ops", 3, str("s"), NULL, 0, &need, NULL) == OPSTATE_OK);
    REQUIRE(need == 7);
    for (cap = 0; cap < need; cap++) {
        memset(out, 0x5C, sizeof out);
        memcpy(pre, out, sizeof out);
        CASE("filter cap below need");
        CHECK(opstate_subject_filter("ops", 3, str("s"), out, cap, &n, NULL) ==
              OPSTATE_BUFFER_TOO_SMALL);
        CHECK_MEM(out, pre, sizeof out);
    }
}

TEST(subjects, build_rejects_bad_parts)
{
    static uint8_t bigkey[OPSTATE_MAX_KEY_LEN + 1];
    static char longtok[OPSTATE_MAX_TOKEN_LEN + 1];
    static const struct {
        const char *name, *prefix, *scope, *kind;
    } rows[] = {
        {"scope with dot", "ops", "a.b", "k"},
        {"scope star", "ops", "*", "k"},
        {"scope gt", "ops", ">", "k"},
        {"scope empty", "ops", "", "k"},
        {"scope space", "ops", "a b", "k"},
        {"scope non-ascii", "ops", "\303\251", "k"},
        {"kind with dot", "ops", "s", "k.x"},
        {"kind empty", "ops", "s", ""},
        {"kind star", "ops", "s", "*"},
        {"kind tab", "ops", "s", "\t"},
        {"prefix empty", "", "s", "k"},
        {"prefix trailing dot", "ops.", "s", "k"},
        {"prefix double dot", "a..b", "s", "k"},
        {"prefix wildcard", "ops.*", "s", "k"},
        {"prefix gt", "ops.>", "s", "k"},
    };
    size_t i, n;
    char out[128];
    for (i = 0; i < COUNT_OF(rows); i++) {
        opstate_error err = t_err();
        opstate_result r;
        CASE(rows[i].name);
        memset(out, '#', sizeof out);
        n = 4242;
        r = opstate_subject_build(rows[i].prefix, strlen(rows[i].prefix), str(rows[i].scope),
                                  str(rows[i].kind), str("key"), out, sizeof out, &n, &err);
        CHECK(r == OPSTATE_INVALID_TOKEN);
        CHECK(err.result == r);
        CHECK(out[0] == '#');
        CHECK(opstate_subject_build(rows[i].prefix, strlen(rows[i].prefix), str(rows[i].scope),
                                    str(rows[i].kind), str(""), NULL, 0, &n, NULL) ==
              OPSTATE_INVALID_TOKEN);
        if (strlen(rows[i].kind) > 0 && strchr(rows[i].kind, '.') == NULL &&
            strchr(rows[i].kind, '*') == NULL && strchr(rows[i].kind, '\t') == NULL) {
            /* the filter takes only prefix and scope */
            CHECK(opstate_subject_filter(rows[i].prefix, strlen(rows[i].prefix),
                                         str(rows[i].scope), out, sizeof out, &n, NULL) ==
                  OPSTATE_INVALID_TOKEN);
        }
    }
    /* Over-long parts. */
    memset(longtok, 'x', sizeof longtok);
    CASE("long scope");
    CHECK(opstate_subject_build("ops", 3, by(longtok, sizeof longtok), str("k"), str(""),
                                NULL, 0, &n, NULL) == OPSTATE_OVERSIZED);
    CHECK(opstate_subject_build("ops", 3, by(longtok, sizeof longtok - 1), str("k"),
                                str(""), NULL, 0, &n, NULL) == OPSTATE_OK);
    CASE("long kind");
    CHECK(opstate_subject_build("ops", 3, str("s"), by(longtok, sizeof longtok), str(""),
                                NULL, 0, &n, NULL) == OPSTATE_OVERSIZED);
    CASE("long filter scope");
    CHECK(opstate_subject_filter("ops", 3, by(longtok, sizeof longtok), NULL, 0, &n, NULL) ==
          OPSTATE_OVERSIZED);
    CASE("long key");
    CHECK(opstate_subject_build("ops", 3, str("s"), str("k"),
                                by(bigkey, OPSTATE_MAX_KEY_LEN + 1), NULL, 0, &n, NULL) !=
          OPSTATE_OK);
    CHECK(opstate_subject_build("ops", 3, str("s"), str("k"),
                                by(bigkey, OPSTATE_MAX_KEY_LEN), NULL, 0, &n, NULL) ==
          OPSTATE_OK);
    CHECK_EQ_U64(n, 8 + 3 * OPSTATE_MAX_KEY_LEN);
}

TEST(subjects, filter_exact)
{
    char out[64];
    size_t n = 0, q = 0;
    REQUIRE(opstate_subject_filter("ops", 3, str("tenant1"), NULL, 0, &q, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(q, strlen("ops.tenant1.>"));
    memset(out, '#', sizeof out);
    REQUIRE(opstate_subject_filter("ops", 3, str("tenant1"), out, sizeof out, &n, NULL) ==
            OPSTATE_OK);
    CHECK_EQ_U64(n, q);
    CHECK_MEM(out, "ops.tenant1.>#", n + 1);
    REQUIRE(opstate_subject_filter("a.b.c", 5, str("s"), out, sizeof out, &n, NULL) ==
            OPSTATE_OK);
    CHECK_EQ_U64(n, 9);
    CHECK_MEM(out, "a.b.c.s.>", n);
}

TEST(subjects, parse_round_trip)
{
    static const struct {
        const char *name, *prefix, *scope, *kind, *key;
    } rows[] = {
        {"no key", "ops", "tenant1", "device", ""},
        {"ip key", "ops", "tenant1", "device", "10.0.0.1"},
        {"multi-token prefix", "a.b.c", "s", "k", "key"},
        {"dollar prefix", "$KV.x", "s", "k", "a>b*c"},
    };
    size_t i;
    for (i = 0; i < COUNT_OF(rows); i++) {
        char subj[128], tok[64];
        uint8_t key[64];
        size_t n = 0, tn = 0, kn = 0, pl = strlen(rows[i].prefix);
        opstate_subject_parts parts;
        opstate_error err = t_err();
        CASE(rows[i].name);
        REQUIRE(opstate_subject_build(rows[i].prefix, pl, str(rows[i].scope),
                                      str(rows[i].kind), str(rows[i].key), subj, sizeof subj,
                                      &n, NULL) == OPSTATE_OK);
        memset(&parts, 0, sizeof parts);
        REQUIRE(opstate_subject_parse(subj, n, rows[i].prefix, pl, &parts, &err) == OPSTATE_OK);
        CHECK(t_bytes_eq(parts.scope, rows[i].scope, strlen(rows[i].scope)));
        CHECK(t_bytes_eq(parts.kind, rows[i].kind, strlen(rows[i].kind)));
        /* pointers into the subject */
        CHECK(parts.scope.ptr == (const uint8_t *)subj + pl + 1);
        if (strlen(rows[i].key) == 0) {
            CHECK_EQ_U64(parts.key_token.len, 0);
        } else {
            REQUIRE(opstate_key_escape((const uint8_t *)rows[i].key, strlen(rows[i].key), tok,
                                       sizeof tok, &tn) == OPSTATE_OK);
            CHECK(t_bytes_eq(parts.key_token, tok, tn));
            CHECK(parts.key_token.ptr + parts.key_token.len == (const uint8_t *)subj + n);
            REQUIRE(opstate_key_unescape((const char *)parts.key_token.ptr, parts.key_token.len,
                                         key, sizeof key, &kn, NULL) == OPSTATE_OK);
            CHECK_EQ_U64(kn, strlen(rows[i].key));
            CHECK_MEM(key, rows[i].key, kn);
        }
    }
}

TEST(subjects, parse_not_found_and_invalid)
{
    static const struct {
        const char *name, *subject, *prefix;
        int want; /* 0 OK, 1 NOT_FOUND, 2 a failure other than NOT_FOUND, 3 any failure */
    } rows[] = {
        {"ok", "ops.s.k", "ops", 0},
        {"ok with key", "ops.s.k.x%2Ey", "ops", 0},
        {"ok multi prefix", "a.b.s.k", "a.b", 0},
        {"other prefix", "xyz.s.k", "ops", 1},
        {"string prefix only", "opsx.a.b", "ops", 1},
        {"string prefix only, multi", "a.bc.s.k", "a.b", 1},
        {"subject shorter than prefix", "op", "ops", 1},
        {"prefix longer", "ops.s.k", "ops.s.k.x", 1},
        {"only the prefix", "ops", "ops", 3},
        {"prefix and dot", "ops.", "ops", 2},
        {"too few tokens", "ops.s", "ops", 2},
        {"too few tokens, trailing dot", "ops.s.", "ops", 2},
        {"empty kind", "ops.s..x", "ops", 2},
        {"empty scope", "ops..k", "ops", 2},
        {"empty key token", "ops.s.k.", "ops", 2},
        {"too many tokens", "ops.s.k.x.y", "ops", 2},
        {"wildcard filter", "ops.s.>", "ops", 2},
        {"star scope", "ops.*.k", "ops", 2},
        {"star kind", "ops.s.*", "ops", 2},
        {"key not canonical", "ops.s.k.%41", "ops", 2},
        {"key lowercase hex", "ops.s.k.%2e", "ops", 2},
        {"key bare tilde", "ops.s.k.a~", "ops", 2},
        {"key truncated escape", "ops.s.k.%2", "ops", 2},
        {"space in scope", "ops.s s.k", "ops", 2},
        {"control in kind", "ops.s.k\001", "ops", 2},
    };
    size_t i;
    for (i = 0; i < COUNT_OF(rows); i++) {
        opstate_subject_parts parts, pre;
        opstate_error err = t_err();
        opstate_result r;
        memset(&parts, 0x6B, sizeof parts);
        pre = parts;
        CASE(rows[i].name);
        r = opstate_subject_parse(rows[i].subject, strlen(rows[i].subject), rows[i].prefix,
                                  strlen(rows[i].prefix), &parts, &err);
        if (rows[i].want == 0) {
            CHECK(r == OPSTATE_OK);
        } else {
            if (rows[i].want == 1) CHECK(r == OPSTATE_NOT_FOUND);
            else if (rows[i].want == 2) CHECK(r != OPSTATE_OK && r != OPSTATE_NOT_FOUND);
            else CHECK(r != OPSTATE_OK);
            CHECK(err.result == r);
            CHECK_MEM(&parts, &pre, sizeof parts);
        }
    }
}

TEST(subjects, parse_subject_equal_to_prefix)
{
    /* Only the prefix: nothing under it. The byte after len must not be read
       (exact-size arrays: ASan reports a read past them). */
    char only[3], only2[3];
    opstate_subject_parts parts;
    opstate_error err = t_err();
    only[0] = 'o'; only[1] = 'p'; only[2] = 's';
    only2[0] = 'a'; only2[1] = '.'; only2[2] = 'b';
    CHECK(opstate_subject_parse(only, sizeof only, "ops", 3, &parts, &err) == OPSTATE_NOT_FOUND);
    CHECK(err.result == OPSTATE_NOT_FOUND);
    CHECK(opstate_subject_parse(only2, sizeof only2, "a.b", 3, &parts, NULL) == OPSTATE_NOT_FOUND);
    /* A dot just past len is not part of the subject. */
    CHECK(opstate_subject_parse("ops.", 3, "ops", 3, &parts, NULL) == OPSTATE_NOT_FOUND);
    CHECK(opstate_subject_parse("ops.s.k", 3, "ops", 3, &parts, NULL) == OPSTATE_NOT_FOUND);
    CHECK(opstate_subject_parse("", 0, "ops", 3, &parts, NULL) == OPSTATE_NOT_FOUND);
    /* A key token cut by len. */
    CHECK(opstate_subject_parse("ops.s.k.ab", 9, "ops", 3, &parts, NULL) == OPSTATE_OK);
    CHECK(t_bytes_eq(parts.key_token, "a", 1));
    CHECK(opstate_subject_parse("ops.s.k.ab", 8, "ops", 3, &parts, NULL) != OPSTATE_OK);
    CHECK(opstate_subject_parse("ops.s.k.ab", 7, "ops", 3, &parts, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(parts.key_token.len, 0);
}

TEST(subjects, build_null_empty_parts)
{
    /* An empty scope or kind is invalid whatever its pointer. */
    opstate_bytes none;
    size_t n = 0;
    char out[32];
    none.ptr = NULL;
    none.len = 0;
    CHECK(opstate_subject_build("ops", 3, str("s"), none, str("x"), out, sizeof out, &n,
                                NULL) == OPSTATE_INVALID_TOKEN);
    CHECK(opstate_subject_build("ops", 3, none, str("k"), str("x"), out, sizeof out, &n,
                                NULL) == OPSTATE_INVALID_TOKEN);
    CHECK(opstate_subject_build("ops", 3, str("s"), none, none, NULL, 0, &n, NULL) ==
          OPSTATE_INVALID_TOKEN);
    CHECK(opstate_subject_filter("ops", 3, none, NULL, 0, &n, NULL) == OPSTATE_INVALID_TOKEN);
    /* An empty key with a NULL pointer is "no key". */
    REQUIRE(opstate_subject_build("ops", 3, str("s"), str("k"), none, out, sizeof out, &n,
                                  NULL) == OPSTATE_OK);
    CHECK_EQ_U64(n, 7);
    CHECK_MEM(out, "ops.s.k", 7);
}

TEST(subjects, parse_bad_part_is_invalid_token)
{
    opstate_subject_parts parts;
    opstate_error err = t_err();
    CHECK(opstate_subject_parse("ops.s.k.x.y", 11, "ops", 3, &parts, &err) ==
          OPSTATE_INVALID_TOKEN);
    err = t_err();
    CHECK(opstate_subject_parse("ops.s.k.%41", 11, "ops", 3, &parts, &err) ==
          OPSTATE_INVALID_TOKEN);
    CHECK(err.offset >= 8 && err.offset <= 10);
    err = t_err();
    CHECK(opstate_subject_parse("ops.s s.k", 9, "ops", 3, &parts, &err) == OPSTATE_INVALID_TOKEN);
    CHECK_EQ_U64(err.offset, 5);
    err = t_err();
    CHECK(opstate_subject_parse("ops.*.k", 7, "ops", 3, &parts, &err) == OPSTATE_INVALID_TOKEN);
    CHECK_EQ_U64(err.offset, 4);
}

/* NATS subject matching: '*' matches one token, '>' one or more to the end. */
static int t_nats_match(const char *filter, size_t fl, const char *subj, size_t sl)
{
    size_t fi = 0, si = 0;
    for (;;) {
        size_t fe = fi, se = si;
        while (fe < fl && filter[fe] != '.') fe++;
        while (se < sl && subj[se] != '.') se++;
        if (fe - fi == 1 && filter[fi] == '>') return si <= sl && se > si;
        if (!(fe - fi == 1 && filter[fi] == '*')) {
            if (fe - fi != se - si || memcmp(filter + fi, subj + si, fe - fi) != 0) return 0;
        } else if (se == si) {
            return 0;
        }
        if (fe >= fl || se >= sl) return fe >= fl && se >= sl;
        fi = fe + 1;
        si = se + 1;
    }
}

TEST(subjects, nats_matcher_self_check)
{
    CHECK(t_nats_match("ops.s.>", 7, "ops.s.k", 7));
    CHECK(t_nats_match("ops.s.>", 7, "ops.s.k.x", 9));
    CHECK(!t_nats_match("ops.s.>", 7, "ops.s", 5));
    CHECK(!t_nats_match("ops.s.>", 7, "ops.t.k", 7));
    CHECK(t_nats_match("ops.*.k", 7, "ops.s.k", 7));
    CHECK(!t_nats_match("ops.*.k", 7, "ops.s.x.k", 9));
    CHECK(!t_nats_match("ops.s.k", 7, "ops.s.k.x", 9));
    CHECK(t_nats_match("ops.s.k", 7, "ops.s.k", 7));
}

TEST(subjects, property_build_parse_and_isolation)
{
    static const char alpha[] = "abcXYZ019_-~!$%";
    static const uint8_t nasty[] = {'.', '>', '*', '.', '%', ' ', 0, 0xFF, 'a'};
    static const char *prefixes[] = {"ops", "a.b", "$KV.bucket"};
    char scope[24], kind[24], other[24];
    uint8_t key[80], back[80];
    static char subj[512], filt[64], filt2[64];
    int i;
    t_seed(41);
    for (i = 0; i < 2000; i++) {
        const char *prefix = prefixes[t_below(3)];
        size_t pl = strlen(prefix), sl = 1 + t_below(20), kl = 1 + t_below(20), yl, j;
        size_t keyl = t_below(5) == 0 ? 0 : 1 + t_below(sizeof key);
        size_t n = 0, fn = 0, f2 = 0, bn = 0;
        int mode = (int)t_below(3);
        opstate_subject_parts parts;
        for (j = 0; j < sl; j++) scope[j] = alpha[t_below(sizeof alpha - 1)];
        for (j = 0; j < kl; j++) kind[j] = alpha[t_below(sizeof alpha - 1)];
        for (j = 0; j < keyl; j++)
            key[j] = mode == 0 ? nasty[t_below(sizeof nasty)] : mode == 1 ? (uint8_t)t_rand() : '.';
        /* another scope: same length, one byte different, or a prefix of it */
        memcpy(other, scope, sl);
        yl = sl;
        if (t_below(2) && sl > 1) {
            yl = sl - 1;
        } else {
            j = t_below((uint32_t)sl);
            other[j] = other[j] == 'a' ? 'b' : 'a';
        }
        CASE("random subject");
        REQUIRE(opstate_subject_build(prefix, pl, by(scope, sl), by(kind, kl),
                                      by(key, keyl), subj, sizeof subj, &n, NULL) ==
                OPSTATE_OK);
        REQUIRE(opstate_subject_parse(subj, n, prefix, pl, &parts, NULL) == OPSTATE_OK);
        CHECK(t_bytes_eq(parts.scope, scope, sl));
        CHECK(t_bytes_eq(parts.kind, kind, kl));
        if (keyl == 0) {
            CHECK_EQ_U64(parts.key_token.len, 0);
        } else {
            REQUIRE(opstate_key_unescape((const char *)parts.key_token.ptr, parts.key_token.len,
                                         back, sizeof back, &bn, NULL) == OPSTATE_OK);
            CHECK_EQ_U64(bn, keyl);
            CHECK_MEM(back, key, keyl);
        }
        /* Exactly 2 (+1 with a key) tokens after the prefix: no key can add a
           token, so nothing can widen into a wildcard or another scope. */
        {
            size_t dots = 0;
            for (j = pl + 1; j < n; j++) dots += subj[j] == '.';
            CHECK_EQ_U64(dots, keyl ? 2 : 1);
            CHECK(memchr(subj + pl, '*', n - pl) == NULL);
            CHECK(memchr(subj + pl, '>', n - pl) == NULL);
        }
        REQUIRE(opstate_subject_filter(prefix, pl, by(scope, sl), filt, sizeof filt, &fn,
                                       NULL) == OPSTATE_OK);
        REQUIRE(opstate_subject_filter(prefix, pl, by(other, yl), filt2, sizeof filt2, &f2,
                                       NULL) == OPSTATE_OK);
        CHECK(t_nats_match(filt, fn, subj, n));
        CHECK(!t_nats_match(filt2, f2, subj, n));
    }
}
