/* test_hosted.c — what opstate.h does with a C library (not under
   OPSTATE_NO_STDLIB; the Cortex-M freestanding run leaves this file out):
   a zero-initialised consumer config's default clock (the C library's wall
   clock) and flush interval (1 s) make it flush periodically, so a program
   copied from the README loses at most about a second on a crash (a
   negative interval turns periodic flushes off; real time passes here,
   about 1-2 s); opstate_id_new makes fresh ids from the system's clock and
   entropy. Tests "consumer_defaults.*" and "ids.fresh_*". */
#include "runner.h"
#include "../opstate.h"
#include "test_bytes.h"
#include <string.h>
#include <time.h>

typedef struct zero_consumer {
    opstate_memstore *store;
    opstate_consumer *c;
} zero_consumer;

/* A consumer over log with nothing set but the log, the store and the
   flush interval. */
static bool zero_open(zero_consumer *z, opstate_log log, int64_t flush_interval_ns)
{
    opstate_consumer_config cfg;
    memset(&cfg, 0, sizeof cfg);
    z->c = NULL;
    if (opstate_memstore_create(NULL, &z->store) != OPSTATE_OK) return false;
    cfg.log = log;
    cfg.store = opstate_memstore_iface(z->store);
    cfg.flush_interval_ns = flush_interval_ns;
    return opstate_consumer_open(&cfg, &z->c, NULL) == OPSTATE_OK;
}

static uint64_t zero_flushes(const zero_consumer *z) { return opstate_consumer_get_status(z->c)->flushes; }

static void zero_close(zero_consumer *z)
{
    if (z->c) CHECK(opstate_consumer_close(z->c, NULL) == OPSTATE_OK);
    opstate_memstore_destroy(z->store);
}

TEST(consumer_defaults, zero_config_flushes_periodically)
{
    opstate_memlog *m = NULL;
    opstate_log log;
    opstate_event ev;
    opstate_poll_result res;
    zero_consumer dflt, never;
    uint8_t entropy[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    time_t start;
    REQUIRE(opstate_memlog_create(NULL, &m) == OPSTATE_OK);
    log = opstate_memlog_iface(m);
    memset(&ev, 0, sizeof ev);
    ev.scope = str("s1");
    ev.kind = str("host");
    ev.key = str("k1");
    ev.op = OPSTATE_OP_PUT;
    ev.data = str("v1");
    REQUIRE(opstate_id_time_ordered(INT64_C(1700000000000000000), entropy, &ev.id) == OPSTATE_OK);
    REQUIRE(opstate_publish(&log, str("ops"), &ev, NULL, NULL, NULL, NULL) == OPSTATE_OK);
    REQUIRE(zero_open(&dflt, log, 0) && zero_open(&never, log, -1));
    CHECK(opstate_consumer_poll(dflt.c, 0, 0, &res, NULL) == OPSTATE_OK && res.applied == 1);
    CHECK(opstate_consumer_poll(never.c, 0, 0, &res, NULL) == OPSTATE_OK && res.applied == 1);
    CHECK_EQ_U64(zero_flushes(&dflt), 0); /* not yet: the interval has not passed */
    start = time(NULL);
    while (zero_flushes(&dflt) == 0 && time(NULL) - start < 4) { /* 1 s, seen through whole seconds */
        CHECK(opstate_consumer_poll(dflt.c, 0, 0, &res, NULL) == OPSTATE_OK);
        CHECK(opstate_consumer_poll(never.c, 0, 0, &res, NULL) == OPSTATE_OK);
    }
    CHECK_EQ_U64(zero_flushes(&dflt), 1);
    CHECK(time(NULL) - start >= 1);
    CHECK_EQ_U64(zero_flushes(&never), 0);
    CHECK_EQ_U64(opstate_memstore_bytes(never.store).len, 0); /* nothing stored before close */
    CHECK(opstate_memstore_bytes(dflt.store).len > 0);
    zero_close(&dflt);
    zero_close(&never);
    opstate_memlog_destroy(m);
}

/* The id's Unix milliseconds, from its first 6 bytes. */
static uint64_t id_ms(const opstate_id *id)
{
    uint64_t ms = 0;
    int i;
    for (i = 0; i < 6; i++) ms = ms << 8 | id->bytes[i];
    return ms;
}

/* Fresh ids: every one unique, each sorting after the one before (also
   within one tick of a whole-second clock), UUIDv7 version and variant,
   their time within the calls' wall time, their random part changing. */
TEST(ids, fresh_ids_unique_and_ordered)
{
    enum { N = 20000 };
    static opstate_id ids[N];
    time_t before = time(NULL), after;
    uint64_t ms;
    int i, same_random = 0;
    for (i = 0; i < N; i++) REQUIRE(opstate_id_new(&ids[i]) == OPSTATE_OK);
    after = time(NULL);
    for (i = 1; i < N; i++) {
        CHECK(memcmp(ids[i - 1].bytes, ids[i].bytes, 16) < 0);
        same_random += memcmp(ids[i - 1].bytes + 9, ids[i].bytes + 9, 7) == 0;
    }
    CHECK_EQ_U64(same_random, 0);
    CHECK_EQ_U64(ids[0].bytes[6] >> 4, 7);
    CHECK_EQ_U64(ids[0].bytes[8] >> 6, 2);
    ms = id_ms(&ids[0]);
    CHECK(ms / 1000 >= (uint64_t)before && ms / 1000 <= (uint64_t)after + 1);
}
