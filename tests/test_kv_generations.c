/* test_kv_generations.c — the fold's dirty marks across the wrap of its
   generation counter (suite kv_generations).

   opstate_kv_mark_clean starts a new generation instead of visiting the
   entries; after 2^28 of them the counter wraps and every mark is cleared.
   A private copy of the implementation (every function static to this
   file) is built with 3 generations, so a few mark_cleans reach the wrap:
   an entry marked dirty before it must not look dirty after it. */
#define OPSTATE_STATIC
#define OPSTATE__KV_GENERATIONS 3u
#define OPSTATE_IMPLEMENTATION
#include "../opstate.h"

#include "runner.h"
#include "test_bytes.h"

static bool count_item(void *user, const opstate_kv_item *item)
{
    (void)item;
    ++*(int *)user;
    return true;
}

static int dirty_walked(const opstate_kv *kv)
{
    int n = 0;
    opstate_kv_dirty_iterate(kv, count_item, &n);
    return n;
}

/* Every generation, wrap included: what was marked before a mark_clean is
   clean after it (a restore accepts it, a put marks it again). */
TEST(kv_generations, marks_clear_across_the_wrap)
{
    opstate_kv *kv;
    opstate_kv_item item;
    int round;
    REQUIRE(opstate_kv_create(NULL, &kv) == OPSTATE_OK);
    for (round = 0; round < 7; round++) {
        REQUIRE(opstate_kv_put(kv, str("a"), str("one"), pos(1, 0)) == OPSTATE_OK);
        CHECK_EQ_U64(opstate_kv_dirty_count(kv), 1);
        CHECK_EQ_U64(opstate_kv_dirty_bytes(kv), 4);
        opstate_kv_mark_clean(kv);
        CHECK_EQ_U64(opstate_kv_dirty_count(kv), 0);
        CHECK_EQ_U64(dirty_walked(kv), 0);
        memset(&item, 0, sizeof item);
        item.key = str("a");
        item.value = str("two");
        item.position = pos(2, 0);
        CHECK(opstate_kv_restore(kv, &item) == OPSTATE_OK); /* refused if "a" still looked dirty */
        REQUIRE(opstate_kv_put(kv, str("b"), str("x"), pos(3, 0)) == OPSTATE_OK);
        CHECK_EQ_U64(dirty_walked(kv), 1);
        opstate_kv_mark_clean(kv);
    }
    CHECK_EQ_U64(opstate_kv_count(kv), 2);
    opstate_kv_forget_clean(kv); /* every entry clean: all go */
    CHECK_EQ_U64(opstate_kv_count(kv), 0);
    opstate_kv_destroy(kv);
}

/* A memory-only fold forgets a flushed delete at mark_clean (its memory
   goes back to the empty fold's), whatever the generation. */
TEST(kv_generations, flushed_delete_is_absence)
{
    opstate_kv *kv;
    opstate_kv_item item;
    size_t empty;
    int round;
    REQUIRE(opstate_kv_create(NULL, &kv) == OPSTATE_OK);
    empty = opstate_kv_memory(kv);
    for (round = 0; round < 5; round++) {
        REQUIRE(opstate_kv_put(kv, str("k"), str("v"), pos(1, 0)) == OPSTATE_OK);
        opstate_kv_mark_clean(kv);
        REQUIRE(opstate_kv_delete(kv, str("k"), pos(2, 0)) == OPSTATE_OK);
        CHECK_EQ_U64(opstate_kv_dirty_count(kv), 1);
        CHECK_EQ_U64(opstate_kv_dirty_bytes(kv), 1);
        opstate_kv_mark_clean(kv);
        CHECK(opstate_kv_get(kv, str("k"), &item) == OPSTATE_NOT_FOUND);
        CHECK_EQ_U64(opstate_kv_memory(kv), empty);
    }
    opstate_kv_destroy(kv);
}
