/* fuzz_lmdb_log.c — libFuzzer target for the records of the embedded LMDB
   event log (opstate_lmdb.h >>log): messages, the subject index, the
   duplicate-window ids and the info record.

   The input's records are planted raw into the log's databases (see
   lmdb_plant.h for the input layout), then the log is read only through
   the public API: open, info, read (from the start and from the middle,
   with a filter), last_per_subject, and optionally an append (retention
   and the duplicate window walk the planted records), a purge and a
   recreate. Every byte a read returns is touched. Any result is fine; a
   crash, undefined behaviour, a leak or a hang is not.

   Options byte: 0x01 max age 1 s (reads expire), 0x02 max 2 messages,
   0x04 max 1 per subject, 0x08 append one message, 0x10 purge below 3,
   0x20 recreate at the end, 0xC0 the read filter ("", ">", "a.*", "a.b").

   Build: make build/fuzz-lmdb_log (libFuzzer) or
   build/fuzz-replay-lmdb_log (seeds). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lmdb_plant.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_NOW 1700000000000000000LL
#define FUZZ_READ_MAX 32u

static unsigned sink; /* keeps the reads of fuzz_touch */
static opstate_log_message msgs[FUZZ_READ_MAX];

static int64_t fixed_clock(void *user)
{
    (void)user;
    return FUZZ_NOW;
}

static void touch_message(void *user, const opstate_log_message *m)
{
    (void)user;
    sink += fuzz_touch(m->subject) + fuzz_touch(m->data) + (unsigned)m->position.seq;
}

static void read_from(const opstate_log *log, opstate_bytes filter, uint64_t from)
{
    size_t count = 0, i;
    opstate_error err;
    if (log->read(log->user, filter, from, 0, msgs, FUZZ_READ_MAX, &count, &err) != OPSTATE_OK) return;
    if (count > FUZZ_READ_MAX) abort();
    for (i = 0; i < count; i++) touch_message(NULL, &msgs[i]);
}

static void use_log(opstate_lmdb_log *lg, unsigned opts)
{
    static const char *const filters[] = {"", ">", "a.*", "a.b"};
    opstate_log log = opstate_lmdb_log_iface(lg);
    opstate_stream_info info;
    opstate_error err;
    opstate_bytes filter;
    filter.ptr = (const uint8_t *)filters[opts >> 6];
    filter.len = strlen(filters[opts >> 6]);
    memset(&info, 0, sizeof info);
    (void)log.info(log.user, &info, &err);
    read_from(&log, filter, 0);
    read_from(&log, filter, info.first_seq + (info.last_seq - info.first_seq) / 2);
    (void)log.last_per_subject(log.user, filter, touch_message, NULL, &err);
    if (opts & 0x08) {
        static const char subject[] = "a.b", body[] = "fuzz";
        opstate_append_options ao;
        opstate_append_result res;
        opstate_id id;
        opstate_bytes s, d;
        memset(&ao, 0, sizeof ao);
        memset(id.bytes, 0x5A, sizeof id.bytes);
        ao.msg_id = &id;
        s.ptr = (const uint8_t *)subject;
        s.len = sizeof subject - 1;
        d.ptr = (const uint8_t *)body;
        d.len = sizeof body - 1;
        (void)log.append(log.user, s, d, &ao, &res, &err);
        read_from(&log, filter, 0);
    }
    if (opts & 0x10) (void)opstate_lmdb_log_purge(lg, 3, &err);
    (void)log.info(log.user, &info, &err);
    if (opts & 0x20) (void)opstate_lmdb_log_recreate(lg, &err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char dir[FUZZ_PATH_CAP];
    opstate_lmdb *env;
    opstate_lmdb_log *lg = NULL;
    opstate_lmdb_log_config lc;
    unsigned opts = size ? data[0] : 0;

    fuzz_scratch_path(dir, sizeof dir, "log");
    if (!fuzz_lmdb_plant(dir, fuzz_log_dbs, FUZZ_COUNT(fuzz_log_dbs), size ? data + 1 : data, size ? size - 1 : 0))
        return 0;
    if (!(env = fuzz_lmdb_open(dir))) return 0;
    memset(&lc, 0, sizeof lc);
    lc.clock = fixed_clock;
    lc.duplicate_window_ns = 2000; /* the clock stands still: no id leaves the window */
    if (opts & 0x01) lc.max_age_ns = 1000000000LL;
    if (opts & 0x02) lc.max_messages = 2;
    if (opts & 0x04) lc.max_per_subject = 1;
    if (opstate_lmdb_log_open(env, &lc, &lg, NULL) == OPSTATE_OK) {
        use_log(lg, opts);
        opstate_lmdb_log_close(lg);
    }
    opstate_lmdb_close(env);
    return 0;
}
