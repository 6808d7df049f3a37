/* test_hash.c — the keyed hash of every table fed by bytes a producer
   chooses (suite hash): SipHash-2-4 against the reference vectors, a key of
   its own for every fold and every dedup window, and keys and ids solved to
   share one hash under the old unkeyed functions (old_hash.h) spreading
   over the table instead of piling up in one probe run.

   It looks inside the tables (slots, keys), so it compiles a private copy
   of the implementation (OPSTATE_STATIC: every function static to this
   file); the rest of the program links tests/impl.c as usual. */
#define OPSTATE_STATIC
#define OPSTATE_IMPLEMENTATION
#include "../opstate.h"

#include <stdlib.h>

#include "runner.h"
#include "test_bytes.h"
#include "old_hash.h"

/* SipHash-2-4, 64-bit output, key 00 01 .. 0f, message 00 01 .. (i-1) for
   i = 0..63: vectors_sip64 of the reference implementation
   (github.com/veorq/SipHash, vectors.h), read as little-endian words. The
   first and the sixteenth are also in the paper's appendix. */
static const uint64_t sip_vectors[64] = {
    UINT64_C(0x726fdb47dd0e0e31), UINT64_C(0x74f839c593dc67fd), UINT64_C(0x0d6c8009d9a94f5a),
    UINT64_C(0x85676696d7fb7e2d), UINT64_C(0xcf2794e0277187b7), UINT64_C(0x18765564cd99a68d),
    UINT64_C(0xcbc9466e58fee3ce), UINT64_C(0xab0200f58b01d137), UINT64_C(0x93f5f5799a932462),
    UINT64_C(0x9e0082df0ba9e4b0), UINT64_C(0x7a5dbbc594ddb9f3), UINT64_C(0xf4b32f46226bada7),
    UINT64_C(0x751e8fbc860ee5fb), UINT64_C(0x14ea5627c0843d90), UINT64_C(0xf723ca908e7af2ee),
    UINT64_C(0xa129ca6149be45e5), UINT64_C(0x3f2acc7f57c29bdb), UINT64_C(0x699ae9f52cbe4794),
    UINT64_C(0x4bc1b3f0968dd39c), UINT64_C(0xbb6dc91da77961bd), UINT64_C(0xbed65cf21aa2ee98),
    UINT64_C(0xd0f2cbb02e3b67c7), UINT64_C(0x93536795e3a33e88), UINT64_C(0xa80c038ccd5ccec8),
    UINT64_C(0xb8ad50c6f649af94), UINT64_C(0xbce192de8a85b8ea), UINT64_C(0x17d835b85bbb15f3),
    UINT64_C(0x2f2e6163076bcfad), UINT64_C(0xde4daaaca71dc9a5), UINT64_C(0xa6a2506687956571),
    UINT64_C(0xad87a3535c49ef28), UINT64_C(0x32d892fad841c342), UINT64_C(0x7127512f72f27cce),
    UINT64_C(0xa7f32346f95978e3), UINT64_C(0x12e0b01abb051238), UINT64_C(0x15e034d40fa197ae),
    UINT64_C(0x314dffbe0815a3b4), UINT64_C(0x027990f029623981), UINT64_C(0xcadcd4e59ef40c4d),
    UINT64_C(0x9abfd8766a33735c), UINT64_C(0x0e3ea96b5304a7d0), UINT64_C(0xad0c42d6fc585992),
    UINT64_C(0x187306c89bc215a9), UINT64_C(0xd4a60abcf3792b95), UINT64_C(0xf935451de4f21df2),
    UINT64_C(0xa9538f0419755787), UINT64_C(0xdb9acddff56ca510), UINT64_C(0xd06c98cd5c0975eb),
    UINT64_C(0xe612a3cb9ecba951), UINT64_C(0xc766e62cfcadaf96), UINT64_C(0xee64435a9752fe72),
    UINT64_C(0xa192d576b245165a), UINT64_C(0x0a8787bf8ecb74b2), UINT64_C(0x81b3e73d20b49b6f),
    UINT64_C(0x7fa8220ba3b2ecea), UINT64_C(0x245731c13ca42499), UINT64_C(0xb78dbfaf3a8d83bd),
    UINT64_C(0xea1ad565322a1a0b), UINT64_C(0x60e61c23a3795013), UINT64_C(0x6606d7e446282b93),
    UINT64_C(0x6ca4ecb15c5f91e1), UINT64_C(0x9f626da15c9625f3), UINT64_C(0xe51b38608ef25f57),
    UINT64_C(0x958a324ceb064572)
};

TEST(hash, siphash_reference_vectors)
{
    uint8_t key[16], msg[64];
    uint64_t k[2];
    size_t i;
    for (i = 0; i < sizeof key; i++) key[i] = (uint8_t)i;
    for (i = 0; i < sizeof msg; i++) msg[i] = (uint8_t)i;
    k[0] = opstate_get_le64(key);
    k[1] = opstate_get_le64(key + 8);
    for (i = 0; i < 64; i++) CHECK_EQ_U64(opstate__siphash(k, msg, i), sip_vectors[i]);
}

#define FOLDS 8

TEST(hash, every_fold_has_its_own_key)
{
    opstate_kv *kv[FOLDS];
    const uint8_t *k = (const uint8_t *)"site1\0host\0host-000001";
    size_t i, j;
    for (i = 0; i < FOLDS; i++) REQUIRE(opstate_kv_create(NULL, &kv[i]) == OPSTATE_OK);
    for (i = 0; i < FOLDS; i++)
        for (j = i + 1; j < FOLDS; j++) {
            CHECK(kv[i]->key[0] != kv[j]->key[0] || kv[i]->key[1] != kv[j]->key[1]);
            /* and the fold hashes with it */
            CHECK(opstate__kv_hash(kv[i], k, 22) != opstate__kv_hash(kv[j], k, 22));
        }
    for (i = 0; i < FOLDS; i++) opstate_kv_destroy(kv[i]);
}

#define WINDOW 64

/* Storage for a window of WINDOW ids: a table of 2 x WINDOW slots, the ids. */
typedef struct window_store {
    uint32_t table[2 * WINDOW];
    opstate_id ids[WINDOW];
} window_store;

TEST(hash, every_dedup_window_has_its_own_key)
{
    static window_store st1, st2;
    opstate_dedup a, b;
    uint64_t before[2];
    uint32_t i, differ = 0;
    REQUIRE(opstate_dedup_storage_size(WINDOW) <= sizeof st1);
    REQUIRE(opstate_dedup_init(&a, &st1, sizeof st1, WINDOW) == OPSTATE_OK);
    REQUIRE(opstate_dedup_init(&b, &st2, sizeof st2, WINDOW) == OPSTATE_OK);
    CHECK(a.key[0] != b.key[0] || a.key[1] != b.key[1]);
    for (i = 0; i < 16; i++) { /* and the window hashes with it */
        opstate_id id;
        memset(id.bytes, (int)i, sizeof id.bytes);
        differ += opstate__dedup_home(&a, &id) != opstate__dedup_home(&b, &id);
    }
    CHECK(differ > 0);
    /* the same storage again at once: address and clock (whole seconds in
       a C99 build) repeat, the fresh entropy does not */
    before[0] = a.key[0];
    before[1] = a.key[1];
    REQUIRE(opstate_dedup_init(&a, &st1, sizeof st1, WINDOW) == OPSTATE_OK);
    CHECK(a.key[0] != before[0] || a.key[1] != before[1]);
}

#define CRAFTED 4096

/* Sum and maximum over a fold's entries of how far each sits from its home slot. */
static void fold_displacement(const opstate_kv *kv, uint64_t *sum, uint64_t *worst)
{
    uint32_t s;
    *sum = *worst = 0;
    for (s = 0; s <= kv->mask; s++) {
        uint32_t d;
        if (!kv->slots[s]) continue;
        d = (s - ((uint32_t)kv->slots[s]->hash & kv->mask)) & kv->mask;
        *sum += d;
        if (d > *worst) *worst = d;
    }
}

TEST(hash, crafted_keys_spread_over_the_fold)
{
    static uint8_t keys[CRAFTED][32];
    opstate_kv *kv;
    uint64_t old_first = 0, sum, worst;
    uint32_t i, same_old_hash = 0;
    REQUIRE(opstate_kv_create(NULL, &kv) == OPSTATE_OK);
    for (i = 0; i < CRAFTED; i++) {
        snprintf((char *)keys[i], 25, "crafted-key-%012lu", (unsigned long)i);
        old_hash_solve(keys[i], 32); /* bytes 24-31 (and the terminator) */
        if (i == 0) old_first = old_hash_bytes(keys[i], 32);
        same_old_hash += old_hash_bytes(keys[i], 32) == old_first;
        REQUIRE(opstate_kv_put(kv, by(keys[i], 32), by("v", 1), pos(i + 1, 0)) == OPSTATE_OK);
    }
    /* under the old hash every key had one home and one tag: displacement
       2047.5 on average, 4095 at worst, and 8 million key compares */
    CHECK_EQ_U64(same_old_hash, CRAFTED);
    CHECK_EQ_U64(opstate_kv_count(kv), CRAFTED);
    fold_displacement(kv, &sum, &worst);
    CHECK(sum < 4u * CRAFTED); /* linear probing at load <= 3/4: about 1 */
    CHECK(worst < 128);
    for (i = 0; i < CRAFTED; i++) {
        opstate_kv_item item;
        CHECK(opstate_kv_get(kv, by(keys[i], 32), &item) == OPSTATE_OK);
    }
    opstate_kv_destroy(kv);
}

/* Longest run of occupied slots in a window's table. */
static uint32_t window_longest_run(const opstate_dedup *d)
{
    uint32_t i, run = 0, best = 0, size = d->table_mask + 1;
    for (i = 0; i < 2 * size && run < size; i++) {
        run = d->table[i & d->table_mask] ? run + 1 : 0;
        if (run > best) best = run;
    }
    return best;
}

TEST(hash, crafted_ids_spread_over_the_dedup_window)
{
    size_t bytes = opstate_dedup_storage_size(CRAFTED);
    void *st = malloc(bytes);
    opstate_dedup d;
    uint64_t old_first = 0;
    uint32_t i, same_old_hash = 0;
    REQUIRE(st && opstate_dedup_init(&d, st, bytes, CRAFTED) == OPSTATE_OK);
    for (i = 0; i < CRAFTED; i++) {
        opstate_id id;
        opstate_put_le64(id.bytes, (uint64_t)i * 0x0101010101u);
        old_hash_solve_id(id.bytes);
        if (i == 0) old_first = old_hash_id(id.bytes);
        same_old_hash += old_hash_id(id.bytes) == old_first;
        CHECK(opstate_dedup_insert(&d, &id));
    }
    /* under the old hash: one run of 4096 slots, 8 million id compares */
    CHECK_EQ_U64(same_old_hash, CRAFTED);
    CHECK_EQ_U64(d.count, CRAFTED);
    CHECK(window_longest_run(&d) < 256);
    free(st);
}
