/* Smoke tests of the pure layer written with the implementation: one happy
   path per part, so a broken build shows at once. The thorough suites live
   in test_ids.c, test_codec.c and test_decide.c. */
#include "runner.h"
#include "../opstate.h"

TEST(smoke, event_round_trip)
{
    static const uint8_t entropy[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    opstate_event ev, back;
    uint8_t buf[256];
    size_t n = 0, need = 0;
    memset(&ev, 0, sizeof ev);
    ev.scope.ptr = (const uint8_t *)"op1";
    ev.scope.len = 3;
    ev.kind.ptr = (const uint8_t *)"host";
    ev.kind.len = 4;
    ev.key.ptr = (const uint8_t *)"10.0.0.1";
    ev.key.len = 8;
    ev.op = OPSTATE_OP_PUT;
    ev.data.ptr = (const uint8_t *)"{\"up\": true}";
    ev.data.len = 12;
    REQUIRE(opstate_id_time_ordered(1700000000123456789, entropy, &ev.id) == OPSTATE_OK);
    CHECK(opstate_event_encode(&ev, NULL, 0, &need, NULL) == OPSTATE_OK);
    CHECK(opstate_event_encode(&ev, buf, sizeof buf, &n, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(n, need);
    REQUIRE(opstate_event_decode(buf, n, &back, NULL) == OPSTATE_OK);
    CHECK(opstate_id_equal(&back.id, &ev.id));
    CHECK(back.key.len == 8 && memcmp(back.key.ptr, "10.0.0.1", 8) == 0);
    CHECK(back.key.ptr == buf + 44 + 3 + 4);
}

TEST(smoke, subject_and_json)
{
    char subject[128], json[512];
    size_t n = 0;
    opstate_bytes scope = {(const uint8_t *)"op1", 3}, kind = {(const uint8_t *)"host", 4};
    opstate_bytes key = {(const uint8_t *)"10.0.0.1", 8};
    opstate_event ev;
    CHECK(opstate_subject_build("ops", 3, scope, kind, key, subject, sizeof subject, &n, NULL) == OPSTATE_OK);
    CHECK(n == strlen("ops.op1.host.10%2E0%2E0%2E1"));
    CHECK(memcmp(subject, "ops.op1.host.10%2E0%2E0%2E1", n) == 0);
    memset(&ev, 0, sizeof ev);
    ev.scope = scope;
    ev.kind = kind;
    ev.key = key;
    ev.op = OPSTATE_OP_DELETE;
    CHECK(opstate_event_to_json(&ev, json, sizeof json - 1, &n) == OPSTATE_OK);
    json[n] = '\0';
    CHECK(strstr(json, "\"op\":\"delete\"") != NULL);
    CHECK(opstate_json_valid((const uint8_t *)json, n));
}

TEST(smoke, decide_resume_hwm_dedup)
{
    opstate_position stored = {100, 5, 7};
    opstate_stream_info si;
    opstate_start start;
    opstate_restore_decision d;
    opstate_hwm h;
    opstate_dedup dd;
    uint32_t storage[64];
    opstate_id id;
    memset(&si, 0, sizeof si);
    si.first_seq = 1;
    si.last_seq = 200;
    si.epoch = 7;
    memset(&start, 0, sizeof start);
    start.kind = OPSTATE_START_FROM_SEQUENCE;
    start.seq = 101;
    CHECK(opstate_decide_restore(OPSTATE_MODE_AUTO, start, &stored, &si, &d) == OPSTATE_OK);
    CHECK(d.restore && d.reason == OPSTATE_REASON_FORWARD_SEQUENCE);
    opstate_hwm_init(&h, stored);
    CHECK(opstate_hwm_deliver(&h, 101, 1) == OPSTATE_OK);
    CHECK(opstate_hwm_deliver(&h, 103, 2) == OPSTATE_OK);
    CHECK(opstate_hwm_ack(&h, 103) == OPSTATE_OK);
    CHECK_EQ_U64(h.mark.seq, 100);
    CHECK(opstate_hwm_ack(&h, 101) == OPSTATE_OK);
    CHECK_EQ_U64(h.mark.seq, 103);
    CHECK(opstate_dedup_init(&dd, storage, sizeof storage, 4) == OPSTATE_OK);
    memset(&id, 0xab, sizeof id);
    CHECK(opstate_dedup_insert(&dd, &id));
    CHECK(!opstate_dedup_insert(&dd, &id));
}
