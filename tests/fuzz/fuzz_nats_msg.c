/* fuzz_nats_msg.c — libFuzzer target for what opstate_nats.h makes of a
   message it receives (>>log, >>publish): the JetStream metadata of the
   reply subject, the message id (the event's bytes or the Nats-Msg-Id
   header), and the event the wire format makes of a message (stream or KV
   bucket mode) from its subject, its headers (KV-Operation, Opstate-Op,
   Opstate-Time, Opstate-Id, Nats-Msg-Id) and its payload. No server: the message
   is built with natsMsg_Create and natsMsgHeader_Set from the input and
   handed to the companion's private functions (this file compiles the
   implementations to reach them):

       opstate_nats__synthesize a message (another client's, a KV
                                bucket's, or opstate's own headers) -> an
                                event (the wire format)
       opstate_nats__take       a delivered message -> opstate_log_message
                                (stops at the metadata: nats.c has none
                                for a message outside a subscription)
       opstate_nats__ack        a publish acknowledgment -> an outcome
                                (opstate_nats__msg_id)
       opstate_nats__wire_msg   appended bytes -> the message published

   A synthesized event must decode. Any other result is fine;
   a crash, undefined behaviour, a leak or a hang is not.

   Input: options byte, then fields each led by a length byte: subject,
   reply, KV-Operation value, Nats-Msg-Id value, a header name, its value;
   the rest is the payload. A NUL cuts a field. Options: 0x01 KV mode,
   0x02/0x04/0x08 set the KV-Operation / Nats-Msg-Id / named header,
   0x10 the acknowledgment is an error, 0x20 a duplicate, 0x40 the payload
   is appended with a duplicate check (opstate_nats__wire_msg).

   Build: make build/fuzz-nats_msg (libFuzzer) or
   build/fuzz-replay-nats_msg (seeds). */
#define OPSTATE_IMPLEMENTATION
#define OPSTATE_NATS_IMPLEMENTATION
#include "../../opstate_nats.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_FIELDS 6

static unsigned sink; /* keeps the reads of the returned bytes */

/* The next length-led field as a C string (cut at a NUL). */
static void take_field(const uint8_t **p, size_t *n, char *out)
{
    size_t len = 0, i;
    if (*n) {
        len = **p;
        (*p)++;
        (*n)--;
        if (len > *n) len = *n;
    }
    for (i = 0; i < len && (*p)[i]; i++) out[i] = (char)(*p)[i];
    out[i] = '\0';
    *p += len;
    *n -= len;
}

static natsMsg *make_msg(unsigned opts, char field[FUZZ_FIELDS][256], const uint8_t *payload, size_t len)
{
    natsMsg *m = NULL;
    if (natsMsg_Create(&m, field[0], field[1][0] ? field[1] : NULL, (const char *)payload, (int)len) != NATS_OK)
        return NULL;
    if (opts & 0x02) (void)natsMsgHeader_Set(m, "KV-Operation", field[2]);
    if (opts & 0x04) (void)natsMsgHeader_Set(m, "Nats-Msg-Id", field[3]);
    if ((opts & 0x08) && field[4][0]) (void)natsMsgHeader_Set(m, field[4], field[5]);
    return m;
}

/* A delivered message through the log (stream or KV bucket mode). Taking
   it needs its JetStream metadata, which nats.c gives only for a message
   of a subscription, so a built message stops there; the KV decoding
   behind it is called directly with a time from the payload. */
static void deliver(opstate_nats *conn, unsigned opts, natsMsg *m, const uint8_t *payload, size_t len)
{
    opstate_nats_log_config lc;
    opstate_nats_log *lg;
    opstate_log_message out;
    uint64_t pending = 0;
    memset(&lc, 0, sizeof lc);
    if (opts & 0x01) lc.kv_bucket = "bucket";
    else lc.stream = "EVENTS";
    if (opstate_nats_log_open(conn, &lc, &lg, NULL) != OPSTATE_OK) {
        natsMsg_Destroy(m);
        return;
    }
    if (opstate_nats__needs_event(lg, m)) {
        int64_t time = len >= 8 ? (int64_t)opstate_get_le64(payload) : (int64_t)len;
        uint64_t seq = len >= 16 ? opstate_get_le64(payload + 8) : len;
        uint8_t *enc = NULL;
        size_t n = 0, cap = 0;
        if (opstate_nats__synthesize(lg, m, time, seq, &enc, &cap, &n) == OPSTATE_OK) {
            opstate_event ev;
            const char *op = NULL;
            if (opstate_event_decode(enc, n, &ev, NULL) != OPSTATE_OK) abort(); /* what it makes must decode */
            if (!opstate_nats__has_header(m, OPSTATE_NATS__OP_HEADER, &op) && ev.op != OPSTATE_OP_PUT && ev.data.len)
                abort(); /* a foreign delete carries no value */
        }
        opstate_free(&conn->a, enc);
    }
    memset(&out, 0, sizeof out);
    if (opstate_nats__take(lg, m, &out, &pending) == OPSTATE_OK) { /* the log holds m now */
        size_t i;
        for (i = 0; i < out.subject.len; i++) sink += out.subject.ptr[i];
        for (i = 0; i < out.data.len; i++) sink += out.data.ptr[i];
    }
    opstate_nats_log_close(lg);
}

/* The message an append makes of the input's bytes (an event: payload
   and headers; other bytes: as they are, marked raw). */
static void encode_for_wire(unsigned opts, const uint8_t *payload, size_t len)
{
    natsMsg *m = NULL;
    opstate_bytes b;
    b.ptr = payload;
    b.len = len;
    if (opstate_nats__wire_msg(&m, "EVENTS.s.k.x", b, (opts & 0x40) != 0) == NATS_OK)
        sink += (unsigned)natsMsg_GetDataLength(m);
    natsMsg_Destroy(m);
}

/* A publish acknowledgment (or its error) for message m. */
static void acknowledge(opstate_nats *conn, unsigned opts, const uint8_t *data, size_t size, natsMsg *m)
{
    jsPubAck pa;
    jsPubAckErr pae;
    memset(&pa, 0, sizeof pa);
    memset(&pae, 0, sizeof pae);
    pa.Stream = (char *)"EVENTS";
    pa.Sequence = size >= 8 ? opstate_get_le64(data) : size;
    pa.Duplicate = (opts & 0x20) != 0;
    pae.Msg = m;
    pae.Err = (natsStatus)(size ? data[0] % 40 : 0);
    pae.ErrCode = (jsErrCode)(size >= 4 ? opstate_get_le32(data) : 0);
    pae.ErrText = "fuzz";
    opstate_nats__ack(NULL, m, (opts & 0x10) ? NULL : &pa, (opts & 0x10) ? &pae : NULL, conn);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char field[FUZZ_FIELDS][256];
    opstate_nats conn;
    const uint8_t *p = size ? data + 1 : data;
    size_t n = size ? size - 1 : 0, i;
    unsigned opts = size ? data[0] : 0;
    natsMsg *m;

    static bool opened;
    if (!opened && nats_Open(-1) != NATS_OK) abort(); /* natsMsg_Destroy needs the library open */
    opened = true;
    for (i = 0; i < FUZZ_FIELDS; i++) take_field(&p, &n, field[i]);
    memset(&conn, 0, sizeof conn);
    if (pthread_mutex_init(&conn.lock, NULL) != 0) abort();
    if ((m = make_msg(opts, field, p, n)) != NULL) deliver(&conn, opts, m, p, n);
    if ((m = make_msg(opts, field, p, n)) != NULL) acknowledge(&conn, opts, p, n, m);
    encode_for_wire(opts, p, n);
    if (conn.n_outcomes > 1) abort(); /* one acknowledgment, one outcome */
    opstate_free(&conn.a, conn.outcomes);
    pthread_mutex_destroy(&conn.lock);
    return 0;
}
