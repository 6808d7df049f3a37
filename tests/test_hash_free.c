/* test_hash_free.c — table keys in a build without a C library (suite
   hash_free). There is no entropy there, so a table's key comes from the
   process seed (opstate_hash_seed, else the public default
   "opstate.hash.v1.") and the table's address alone.

   It compiles a private copy of the pure layer built as firmware builds it
   (OPSTATE_NO_STDLIB + OPSTATE_NO_MALLOC, every function static to this
   file), so the host's unit run and `make mutate` check that path too;
   scripts/portability.sh runs it on the Cortex-M board. */
#define OPSTATE_STATIC
#define OPSTATE_NO_STDLIB
#define OPSTATE_NO_MALLOC
#define OPSTATE_IMPLEMENTATION
#include "../opstate.h"

#include "runner.h"

#define WINDOW 16

typedef struct window_store {
    uint32_t table[2 * WINDOW];
    opstate_id ids[WINDOW];
} window_store;

static window_store store_a, store_b;

static const uint8_t default_seed[16] = {'o', 'p', 's', 't', 'a', 't', 'e', '.',
                                         'h', 'a', 's', 'h', '.', 'v', '1', '.'};

/* The key a table at `where` gets under `seed` when nothing else goes in:
   SipHash of its address (8 bytes, little-endian), and of that plus 0xff. */
static void key_for(const uint8_t seed[16], const void *where, uint64_t out[2])
{
    uint64_t s[2];
    uint8_t in[9];
    s[0] = opstate_get_le64(seed);
    s[1] = opstate_get_le64(seed + 8);
    opstate_put_le64(in, (uint64_t)(uintptr_t)where);
    in[8] = 0xff;
    out[0] = opstate__siphash(s, in, 8);
    out[1] = opstate__siphash(s, in, 9);
}

static void init_window(opstate_dedup *d, window_store *st)
{
    CHECK(opstate_dedup_init(d, st, sizeof *st, WINDOW) == OPSTATE_OK);
}

TEST(hash_free, default_seed_is_the_documented_text)
{
    opstate_dedup d;
    uint64_t want[2];
    init_window(&d, &store_a);
    key_for(default_seed, &store_a, want);
    CHECK_EQ_U64(d.key[0], want[0]);
    CHECK_EQ_U64(d.key[1], want[1]);
}

TEST(hash_free, key_from_seed_and_address)
{
    static const uint8_t seed[16] = {0x3c, 0x91, 0x07, 0xee, 0x52, 0x1a, 0xb8, 0x64,
                                     0xd0, 0x2f, 0x75, 0x49, 0xc6, 0x0b, 0x9e, 0xa3};
    opstate_dedup a, b;
    uint64_t want[2];
    opstate_id id;
    uint32_t i;
    init_window(&a, &store_a);
    init_window(&b, &store_a);
    CHECK(a.key[0] == b.key[0] && a.key[1] == b.key[1]); /* nothing else goes in */
    init_window(&b, &store_b);
    CHECK(a.key[0] != b.key[0] || a.key[1] != b.key[1]); /* two tables differ by address */
    opstate_hash_seed(seed);
    init_window(&b, &store_a);
    CHECK(a.key[0] != b.key[0] || a.key[1] != b.key[1]); /* the seed changes every key */
    key_for(seed, &store_a, want);
    CHECK_EQ_U64(b.key[0], want[0]);
    CHECK_EQ_U64(b.key[1], want[1]);
    for (i = 0; i < WINDOW; i++) { /* and the window works under it */
        memset(id.bytes, (int)i, sizeof id.bytes);
        CHECK(opstate_dedup_insert(&b, &id));
    }
    for (i = 0; i < WINDOW; i++) {
        memset(id.bytes, (int)i, sizeof id.bytes);
        CHECK(opstate_dedup_contains(&b, &id));
    }
    opstate_hash_seed(default_seed); /* as the other tests expect it */
    init_window(&b, &store_a);
    CHECK(a.key[0] == b.key[0] && a.key[1] == b.key[1]);
}
