/* opstate.h — durable, replayable operational state over an event log. v0.1.0

   A process keeps state derived from an append-only event log. opstate makes
   that state survive restarts, crashes and log retention without losing or
   double-applying an event, and rebuilds it as of any point in time.

   DO THIS in exactly one C or C++ file, before the include:

       #define OPSTATE_IMPLEMENTATION
       #include "opstate.h"

   Everywhere else just `#include "opstate.h"` for the declarations.

   CONTENTS (grep the tag to jump to a part of the implementation)
       >>results   result codes, error detail, version
       >>mem       mem* hooks and fallbacks (also the companions')
       >>bytes     little-endian helpers
       >>crc       CRC32C (hardware on SSE4.2 / ARMv8-CRC, else slice-by-8 or,
                   with OPSTATE_CRC_SMALL, a 64-byte table)
       >>ids       event ids: time-ordered and deterministic, text form
       >>subjects  subject tokens, key escape, builders and parser
       >>codec     binary event encoding, decode, JSON rendering
       >>hwm       high-water mark over out-of-order acks
       >>resume    resume-window check and live gap classifier
       >>decide    restore-or-clear decision, timestamp fallback
       >>hash      keyed hash (SipHash-2-4) and per-table keys for every
                   hash table fed by producer bytes
       >>dedup     bounded window of recent event ids, its serialisation
       >>flash     a power-loss-safe store over raw flash (no malloc; its
                   opstate_store adapter is in >>store)
       >>alloc     allocator, diagnostics (everything below allocates; compiled
                   out by OPSTATE_NO_MALLOC)
       >>kv        the KV fold: map, dirty set, ordered iteration, base
       >>snapshot  snapshot codec, schema versions and upgrade
       >>log       the log interface, publish, the memory log
       >>store     the store interface, the memory store
       >>consumer  the consumer driver: open, poll, ack, flush, close
       >>replay    point-in-time replay with cutoffs

   USAGE, step by step (the pure layer; nothing here allocates, and in
   hosted builds only opstate_id_new and the hash key a dedup window draws
   at init read a clock or draw randomness — the caller passes time and
   entropy in; the consumer driver below does all of this for you)
       1. Build an event: opstate_event ev = {0}; set scope, kind, key, op,
          data; give it an id with opstate_id_new() (fresh, from the
          system's clock and entropy; hosted builds), opstate_id_time_ordered()
          (your time and entropy: firmware) or opstate_id_from_content()
          (re-emitting the same mutation dedups).
       2. Name it: opstate_subject_build() -> "<prefix>.<scope>.<kind>.<key>".
       3. Encode it: opstate_event_encode(&ev, NULL, 0, &n) gives the size,
          a second call with a buffer writes it. Decode with
          opstate_event_decode(); fields point into the buffer (zero-copy).
       4. Consume: before reading, opstate_decide_restore() says whether the
          stored snapshot may be restored; opstate_resume_check() says where
          to read from and whether the cursor expired or the stream was
          recreated; opstate_gap_classify() checks every delivered sequence.
          A hole that is neither evicted nor a reset is taken as empty only
          when the log vouches for it (opstate_log_message.contiguous);
          the driver otherwise re-reads from the hole, and after a bounded
          number of re-reads stops with OPSTATE_GAP: the mark never passes
          an event it did not apply.
       5. Track progress with opstate_hwm_*: the mark is the position up to
          which EVERY delivered event was applied, whatever the ack order.
       6. Skip redeliveries with opstate_dedup_*; persist its bytes with the
          snapshot.
       7. Or let the consumer driver do 4-6: give opstate_consumer_open a
          log (memory, LMDB, JetStream) and a store, call
          opstate_consumer_poll from your loop, opstate_consumer_close at
          the end. The state is an opstate_kv fold; opstate_replay rebuilds
          it as of any sequence, time or count.
       8. Firmware with no file system: keep the state, position and dedup
          window on raw flash with opstate_flash_* (>>flash: a ring of
          CRC-checked records that a power cut at any byte cannot tear; no
          malloc), or give the consumer opstate_flash_store_iface().

   MEMORY: the pure layer takes caller buffers only. Encoders accept a NULL
   buffer and return the size needed. The dedup window runs over storage the
   caller owns (see opstate_dedup_storage_size).

   ERRORS: every fallible call returns an opstate_result (OPSTATE_OK == 0) and,
   where detail helps, fills an optional opstate_error (byte offset, field).
   A failing call leaves its outputs and the caller's state untouched.
   There is no global "last error".

   HASH TABLES: the KV fold and the dedup window hash bytes a producer
   chooses (keys, event ids) with SipHash-2-4 under a key of their own,
   drawn when the table is made (fresh entropy in hosted builds), so
   crafted keys cannot make apply quadratic. Firmware (OPSTATE_NO_STDLIB,
   OPSTATE_NO_MALLOC) draws no entropy: pass 16 random bytes to
   opstate_hash_seed() at boot (see >>hash).

   COMPILE-TIME OPTIONS (define before the include that has the implementation)
       OPSTATE_API               linkage of public functions (default: extern)
       OPSTATE_STATIC            make every function static (one-TU builds)
       OPSTATE_ASSERT(c)         contract checks (default: assert.h, or none
                                 under OPSTATE_NO_STDLIB)
       OPSTATE_NO_STDLIB         no libc: built-in memcpy/memset/memcmp (the
                                 compiler may still emit memcpy/memset calls
                                 for struct copies, as gcc requires of every
                                 freestanding environment: provide them)
       OPSTATE_MEMCPY/MEMSET/MEMCMP   your own mem* functions
       OPSTATE_NO_ERROR_STRINGS  opstate_result_str() returns "" (saves flash)
       OPSTATE_NO_HW_CRC         never use CRC32C instructions
       OPSTATE_CRC_SMALL         portable CRC32C from a 64-byte table instead
                                 of slice-by-8's 8 KiB: same checksums,
                                 ~10x slower (bench_core prints both), for
                                 flash-tight firmware
       OPSTATE_HWM_CAPACITY      events in flight in the ack tracker (256)
       OPSTATE_MAX_TOKEN_LEN     longest scope / kind token (255)
       OPSTATE_MAX_KEY_LEN       longest key (1024)
       OPSTATE_MAX_DATA_LEN      largest event payload (16 MiB)

   See the end of the file for the license. */

#ifndef OPSTATE_H_INCLUDED
#define OPSTATE_H_INCLUDED

/* POSIX for opstate_lmdb.h's implementation, set here because every
   companion includes this file before any system header. Under strict
   -std=c99 / -std=c11, glibc and musl hide POSIX (clock_gettime, pread,
   O_CLOEXEC, ...) unless a feature-test macro precedes the FIRST system
   header of the file. _DEFAULT_SOURCE gives what -std=gnu99 gives; other
   systems show POSIX anyway and ignore it. Only in a file that holds the
   LMDB implementation, in strict mode, when no such macro is set. */
#if defined(OPSTATE_LMDB_IMPLEMENTATION) && !defined(OPSTATE_LMDB_IMPLEMENTATION_INCLUDED) &&          \
    defined(__STRICT_ANSI__) && !defined(_DEFAULT_SOURCE) && !defined(_POSIX_C_SOURCE) &&              \
    !defined(_POSIX_SOURCE) && !defined(_XOPEN_SOURCE) && !defined(_GNU_SOURCE) && !defined(_BSD_SOURCE)
#define _DEFAULT_SOURCE 1
#endif

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <limits.h>

/* >>results ------------------------------------------------------------- */

#define OPSTATE_VERSION_MAJOR 0
#define OPSTATE_VERSION_MINOR 1
#define OPSTATE_VERSION_PATCH 0
#define OPSTATE_VERSION_STRING "0.1.0"
#define OPSTATE_VERSION_NUMBER \
    (OPSTATE_VERSION_MAJOR * 10000 + OPSTATE_VERSION_MINOR * 100 + OPSTATE_VERSION_PATCH)
/* Wire format of one encoded event (opstate_event_encode). */
#define OPSTATE_CODEC_VERSION 1
/* Wire format of a serialised dedup window (opstate_dedup_encode). */
#define OPSTATE_DEDUP_FORMAT_VERSION 1

#ifndef OPSTATE_API
#if defined(OPSTATE_STATIC) && (defined(__GNUC__) || defined(__clang__))
#define OPSTATE_API static __attribute__((unused))
#elif defined(OPSTATE_STATIC)
#define OPSTATE_API static
#else
#define OPSTATE_API extern
#endif
#endif

#ifndef OPSTATE_HWM_CAPACITY
#define OPSTATE_HWM_CAPACITY 256
#endif
#ifndef OPSTATE_MAX_TOKEN_LEN
#define OPSTATE_MAX_TOKEN_LEN 255
#endif
#ifndef OPSTATE_MAX_KEY_LEN
#define OPSTATE_MAX_KEY_LEN 1024
#endif
#ifndef OPSTATE_MAX_DATA_LEN
#define OPSTATE_MAX_DATA_LEN (16u * 1024u * 1024u)
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Result codes, written once: X(NAME, value, message). Codes are only ever
   appended, never renumbered, and stay dense from 0 (opstate_result_str
   finds a message by its position). */
#define OPSTATE_RESULT_LIST(X)                                                   \
    X(OK, 0, "ok")                                                               \
    X(INVALID_ARGUMENT, 1, "invalid argument")                                   \
    X(BUFFER_TOO_SMALL, 2, "output buffer too small")                            \
    X(TRUNCATED, 3, "input truncated: a length runs past the end")               \
    X(CORRUPT, 4, "checksum mismatch: data is corrupt")                          \
    X(UNKNOWN_VERSION, 5, "unknown format version")                              \
    X(OVERSIZED, 6, "a field is larger than its limit")                          \
    X(MALFORMED, 7, "malformed input: bad structure or reserved bits set")      \
    X(INVALID_TOKEN, 8, "invalid subject token")                                 \
    X(INVALID_ID, 9, "invalid event id text")                                    \
    X(SEQ_OVERFLOW, 10, "sequence would wrap past UINT64_MAX")                   \
    X(WINDOW_FULL, 11, "ack tracker window is full")                             \
    X(NOT_FOUND, 12, "not found")                                                \
    X(OUT_OF_ORDER, 13, "sequence is not above the last one")                    \
    X(NO_MEMORY, 14, "out of memory")                                            \
    X(CONFLICT, 15, "conflict: expected last sequence or existing configuration differs") \
    X(EXPIRED, 16, "cursor expired: events were evicted by retention")           \
    X(IO, 17, "I/O error")                                                       \
    X(TIMEOUT, 18, "timed out")                                                  \
    X(SCHEMA_TOO_NEW, 19, "stored state has a newer schema version than this program") \
    X(SCHEMA_OLD, 20, "stored state has an older schema version and no upgrade") \
    X(POISON, 21, "stopped at a poison event")                                   \
    X(ALREADY_OPEN, 22, "already open in this process")                          \
    X(FULL, 23, "storage full: the map size limit is reached")                  \
    X(APPLY_FAILED, 24, "apply could not complete (memory or storage); retried at the next poll") \
    X(GAP, 25, "a hole in the log could not be proven empty: events may be lost in transit") \
    X(LOCKED, 26, "held by another writer process")                              \
    X(NO_SPACE, 27, "no space left on the device")

typedef enum opstate_result {
#define OPSTATE__RESULT_ENUM(name, value, msg) OPSTATE_##name = value,
    OPSTATE_RESULT_LIST(OPSTATE__RESULT_ENUM)
#undef OPSTATE__RESULT_ENUM
    OPSTATE_RESULT_COUNT
} opstate_result;

/* Optional detail for a failure. Pass NULL when you do not need it. */
typedef struct opstate_error {
    opstate_result result; /* same code the call returned */
    size_t offset;         /* byte offset in the input where it went wrong */
    const char *field;     /* name of the field, a static string, or NULL */
    long dep_status;       /* a dependency's raw status (MDB_*, natsStatus) */
    long dep_detail;       /* a secondary code, e.g. a JetStream jsErrCode */
} opstate_error;

/* One-line English text for a result code; "" under OPSTATE_NO_ERROR_STRINGS,
   "unknown result" for a value outside the list. */
OPSTATE_API const char *opstate_result_str(opstate_result r);
/* OPSTATE_VERSION_NUMBER of the compiled implementation (MAJOR*10000 + ...). */
OPSTATE_API int opstate_version_number(void);

/* >>bytes ---------------------------------------------------------------- */

/* Little-endian byte helpers (byte shifts, any alignment, any host), used
   by the codecs here and in the companions. */
#if defined(__cplusplus) || (defined(__STDC_VERSION__) && __STDC_VERSION__ >= 199901L)
#define OPSTATE_INLINE static inline
#else
#define OPSTATE_INLINE static
#endif
OPSTATE_INLINE void opstate_put_le16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
OPSTATE_INLINE void opstate_put_le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}
OPSTATE_INLINE void opstate_put_le64(uint8_t *p, uint64_t v)
{
    opstate_put_le32(p, (uint32_t)v);
    opstate_put_le32(p + 4, (uint32_t)(v >> 32));
}
OPSTATE_INLINE uint16_t opstate_get_le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}
OPSTATE_INLINE uint32_t opstate_get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
OPSTATE_INLINE uint64_t opstate_get_le64(const uint8_t *p)
{
    return (uint64_t)opstate_get_le32(p) | ((uint64_t)opstate_get_le32(p + 4) << 32);
}

/* >>crc ------------------------------------------------------------------ */

/* CRC32C (Castagnoli) of n bytes, continuing from `crc` (start with 0). */
OPSTATE_API uint32_t opstate_crc32c(uint32_t crc, const void *data, size_t n);

/* >>ids ------------------------------------------------------------------ */

/* A byte string that is not owned: ptr may be NULL only when len == 0. */
typedef struct opstate_bytes {
    const uint8_t *ptr;
    size_t len;
} opstate_bytes;

/* 16-byte event id, laid out as an RFC 9562 UUID (version 7 or 8). */
typedef struct opstate_id {
    uint8_t bytes[16];
} opstate_id;

/* Length of an id's text form: canonical lowercase UUID, 8-4-4-4-12. */
#define OPSTATE_ID_TEXT_LEN 36

/* Position of an event in a log. seq == 0 means "no position". */
typedef struct opstate_position {
    uint64_t seq;   /* stream sequence, 1-based */
    int64_t time;   /* publish time, ns since the Unix epoch */
    uint64_t epoch; /* incarnation of the stream; changes on recreate */
} opstate_position;

/* Event ops; values from OPSTATE_OP_APP upward are the application's own. */
#define OPSTATE_OP_PUT 1u
#define OPSTATE_OP_DELETE 2u
#define OPSTATE_OP_APP 16u

/* One immutable mutation. scope and kind are subject tokens; key is any bytes
   (len 0 = no key); data is the payload. `time` is the event time in ns since
   the Unix epoch, meaningful only when has_time is true. `position` is filled
   by the log that delivered the event. */
typedef struct opstate_event {
    opstate_id id;
    opstate_bytes scope;
    opstate_bytes kind;
    opstate_bytes key;
    uint32_t op;
    opstate_bytes data;
    bool has_time;
    int64_t time;
    opstate_position position;
} opstate_event;

/* Time-ordered id (UUIDv7): 48 bits of Unix milliseconds, 12 bits of
   sub-millisecond fraction, 62 random bits from `entropy` (8 bytes from a
   real random source; the top 2 bits of entropy[0] are not used). Ids made
   at later times (1/4096 ms apart or more) sort later as bytes and as text.
   INVALID_ARGUMENT for a time before 1970; *out is then untouched. */
OPSTATE_API opstate_result opstate_id_time_ordered(int64_t unix_ns, const uint8_t entropy[8],
                                                   opstate_id *out);
/* A fresh time-ordered id from the wall clock and the platform's entropy
   (/dev/urandom where it opens, else the clock and addresses mixed: unique
   within the process, not secret). Later calls of one process sort later,
   even within one clock tick. Hosted builds only: under OPSTATE_NO_STDLIB
   (firmware) call opstate_id_time_ordered with your time and entropy.
   Not thread-safe: one caller at a time, or one id source per thread. */
#ifndef OPSTATE_NO_STDLIB
OPSTATE_API opstate_result opstate_id_new(opstate_id *out);
#endif
/* Deterministic id (UUIDv8 over SHA-256) of the event's content: scope, kind,
   key, op, data, and the event time when has_time is set. Emitting the same
   mutation twice yields the same id, so the log and the consumer drop the
   repeat. Caution: a legitimate repeat (x=1, x=2, x=1 again) is also a
   repeat unless the events carry times; use time-ordered ids then. */
OPSTATE_API opstate_id opstate_id_from_content(const opstate_event *ev);
/* Writes exactly OPSTATE_ID_TEXT_LEN characters (no terminator) to out. */
OPSTATE_API void opstate_id_to_text(const opstate_id *id, char out[OPSTATE_ID_TEXT_LEN]);
/* Strict parse: exactly 36 characters, lowercase hex, dashes at 8,13,18,23.
   Only the form opstate_id_to_text writes is accepted, so an id has exactly
   one text (a second spelling would slip past Nats-Msg-Id dedup).
   INVALID_ID otherwise, with err->offset at the first bad character. */
OPSTATE_API opstate_result opstate_id_from_text(const char *text, size_t len, opstate_id *out,
                                                opstate_error *err);
/* true when both ids are the same 16 bytes. */
OPSTATE_API bool opstate_id_equal(const opstate_id *a, const opstate_id *b);

/* >>subjects ------------------------------------------------------------- */

/* Checks one subject token: 1..OPSTATE_MAX_TOKEN_LEN bytes, none of them
   '.', '*', '>', whitespace, control bytes (< 0x20, 0x7f) or bytes >= 0x80
   (non-ASCII is refused so that no byte can be read two ways).
   Returns OK, INVALID_TOKEN (err->offset at the bad byte) or OVERSIZED. */
OPSTATE_API opstate_result opstate_token_validate(const char *tok, size_t len, opstate_error *err);
/* Checks a prefix: one or more valid tokens joined by single dots. */
OPSTATE_API opstate_result opstate_prefix_validate(const char *prefix, size_t len, opstate_error *err);
/* Escapes any key (1..OPSTATE_MAX_KEY_LEN bytes, dots and binary included)
   into ONE safe token: bytes in [A-Za-z0-9_-] pass unchanged, every other
   byte becomes "%XX" (uppercase hex). The result never contains '.', '*' or
   '>', so a key cannot widen into a wildcard or another scope.
   out == NULL: *out_len = size needed, returns OK. An empty key is
   INVALID_ARGUMENT (an event without a key has no key token), a longer one
   OVERSIZED; BUFFER_TOO_SMALL when cap is short (out untouched). */
OPSTATE_API opstate_result opstate_key_escape(const uint8_t *key, size_t key_len, char *out,
                                              size_t cap, size_t *out_len);
/* Reverses opstate_key_escape. Strict: only the canonical escape is
   accepted (uppercase hex, no escaped safe byte), so each key has one token.
   INVALID_TOKEN with err->offset otherwise; OVERSIZED when the key would
   exceed OPSTATE_MAX_KEY_LEN; BUFFER_TOO_SMALL when cap is short (out
   untouched). out == NULL: size needed. */
OPSTATE_API opstate_result opstate_key_unescape(const char *tok, size_t len, uint8_t *out,
                                                size_t cap, size_t *out_len, opstate_error *err);
/* Writes "<prefix>.<scope>.<kind>" or, when key_len > 0,
   "<prefix>.<scope>.<kind>.<escaped key>". No terminator is written.
   out == NULL: *out_len = size needed. Validates every part first
   (INVALID_TOKEN / OVERSIZED / INVALID_ARGUMENT as for the parts);
   BUFFER_TOO_SMALL when cap is short (out untouched). */
OPSTATE_API opstate_result opstate_subject_build(const char *prefix, size_t prefix_len,
                                                 opstate_bytes scope, opstate_bytes kind,
                                                 opstate_bytes key, char *out, size_t cap,
                                                 size_t *out_len, opstate_error *err);
/* Writes the filter for one scope: "<prefix>.<scope>.>". out == NULL: size;
   errors as for opstate_subject_build. */
OPSTATE_API opstate_result opstate_subject_filter(const char *prefix, size_t prefix_len,
                                                  opstate_bytes scope, char *out, size_t cap,
                                                  size_t *out_len, opstate_error *err);
/* The parts of a subject under a known prefix; pointers into the subject. */
typedef struct opstate_subject_parts {
    opstate_bytes scope, kind;
    opstate_bytes key_token; /* escaped; len 0 when the subject has no key */
} opstate_subject_parts;
/* Splits "<prefix>.<scope>.<kind>[.<key token>]". Each token is validated
   and the key token must unescape; the prefix is validated like a
   builder's. NOT_FOUND when the subject is not under `prefix`;
   INVALID_TOKEN / OVERSIZED when a part (or the prefix) is bad. */
OPSTATE_API opstate_result opstate_subject_parse(const char *subject, size_t len,
                                                 const char *prefix, size_t prefix_len,
                                                 opstate_subject_parts *out, opstate_error *err);

/* >>codec ---------------------------------------------------------------- */

/* Encodes an event (position excluded). Layout, all little-endian:
     u8 version | u8 flags (bit 0: has_time) | u32 total length | id[16] |
     u32 op | i64 time | u16 scope len | u16 kind len | u16 key len |
     u32 data len | scope | kind | key | data | u32 CRC32C of all before.
   scope and kind must be valid tokens, op non-zero, lengths within the
   OPSTATE_MAX_* limits. out == NULL: *out_len = size needed. */
OPSTATE_API opstate_result opstate_event_encode(const opstate_event *ev, uint8_t *out, size_t cap,
                                                size_t *out_len, opstate_error *err);
/* Decodes exactly one encoded event from buf[0..len). Fields point into buf
   (zero-copy); the position is set to zero for the log to fill. Structure
   is checked before the checksum, the checksum before the content:
     TRUNCATED        buf is empty, shorter than the 48-byte minimum, or
                      shorter than its declared total length
     UNKNOWN_VERSION  byte 0 is not OPSTATE_CODEC_VERSION (checked first
                      after emptiness: a later version may differ in shape)
     MALFORMED        trailing bytes after the declared length, reserved
                      flag bits
     OVERSIZED        a field length above its OPSTATE_MAX_* limit (each
                      length is checked against its limit before they are
                      summed)
     MALFORMED        field lengths that do not add up to the total
     CORRUPT          CRC32C mismatch
     MALFORMED        op 0, or a non-zero time without the has_time flag
     INVALID_TOKEN    scope or kind is not a valid subject token
   err->offset / err->field say where. *out untouched on failure. */
OPSTATE_API opstate_result opstate_event_decode(const uint8_t *buf, size_t len, opstate_event *out,
                                                opstate_error *err);
/* Renders an event as one JSON object on one line (RFC 8259; no
   terminator written), the same shape whatever the bytes hold:
     {"id":"…","key":["scope","kind","key"],"key_encoding":"utf8",
      "op":"put"|"delete"|"<N>","time":N|null,
      "position":{"seq":N,"time":N,"epoch":N},
      "data":"…","data_encoding":"utf8"}
   "key" lists the parts (two when the event has no key). Bytes that are
   valid UTF-8 are JSON strings (escaped: \" \\ \b \f \n \r \t, \u00XX for
   other controls) and their *_encoding is "utf8"; otherwise every part is
   base64 and the encoding is "base64". A JSON payload is a string holding
   its text (jq: .data | fromjson). Times are integer ns.
   out == NULL: *out_len = size needed. */
OPSTATE_API opstate_result opstate_event_to_json(const opstate_event *ev, char *out, size_t cap,
                                                 size_t *out_len);
/* true when bytes[0..n) is one complete JSON value (RFC 8259, UTF-8,
   nesting at most 64 deep), optionally surrounded by whitespace. */
OPSTATE_API bool opstate_json_valid(const uint8_t *bytes, size_t n);

/* >>hwm ------------------------------------------------------------------ */

/* High-water mark. Events are registered in delivery order with
   opstate_hwm_deliver (sequences increase; gaps are fine, e.g. subjects
   outside a filter) and acked in any order with opstate_hwm_ack. The mark
   is the position of the last event of the longest fully-acked prefix of
   the deliveries: every event at or below it was applied. Up to
   OPSTATE_HWM_CAPACITY events may be delivered and not yet passed by the
   mark. Plain data: copy it, zero-init it, or use opstate_hwm_init. */
typedef struct opstate_hwm {
    opstate_position mark;
    uint64_t last_delivered;           /* seq of the newest delivery (>= mark) */
    uint32_t head, count;              /* ring of in-flight deliveries */
    uint64_t seq[OPSTATE_HWM_CAPACITY];
    int64_t time[OPSTATE_HWM_CAPACITY];
    uint64_t acked[(OPSTATE_HWM_CAPACITY + 63) / 64];
} opstate_hwm;

/* Starts from a mark (e.g. the position restored from a snapshot). */
OPSTATE_API void opstate_hwm_init(opstate_hwm *h, opstate_position mark);
/* Registers a delivered event. OUT_OF_ORDER when seq is not above the last
   delivered sequence (a redelivery: skip it, do not apply it twice),
   WINDOW_FULL when OPSTATE_HWM_CAPACITY events are in flight. */
OPSTATE_API opstate_result opstate_hwm_deliver(opstate_hwm *h, uint64_t seq, int64_t time);
/* Marks a delivered event applied and advances the mark over the acked
   prefix. Acking a sequence at or below the mark, or twice, is OK and
   changes nothing. NOT_FOUND when seq is above the mark but was never
   delivered. */
OPSTATE_API opstate_result opstate_hwm_ack(opstate_hwm *h, uint64_t seq);
/* Number of delivered events not yet passed by the mark. */
OPSTATE_API uint32_t opstate_hwm_in_flight(const opstate_hwm *h);

/* >>resume --------------------------------------------------------------- */

/* What a log reports about itself. An empty stream has last_seq <
   first_seq (purged), or last_seq == 0 (never written; first_seq 0). A
   first_seq of 0 with messages is read as 1. */
typedef struct opstate_stream_info {
    uint64_t first_seq, last_seq;
    int64_t first_time, last_time; /* ns since the Unix epoch */
    uint64_t epoch;                /* incarnation; differs after recreate */
    uint64_t messages;
} opstate_stream_info;

typedef enum opstate_resume_state {
    OPSTATE_RESUME_OK = 0,    /* read from next_seq, nothing missed */
    OPSTATE_RESUME_CAUGHT_UP, /* cursor is at the end; wait at next_seq */
    OPSTATE_RESUME_EXPIRED,   /* events after the cursor were evicted */
    OPSTATE_RESUME_RESET      /* the stream was recreated (epoch or seq) */
} opstate_resume_state;

typedef struct opstate_resume {
    opstate_resume_state state;
    uint64_t next_seq; /* where to read from; first_seq when EXPIRED */
    uint64_t missed;   /* EXPIRED: events evicted between cursor and first */
} opstate_resume;

/* Where to resume after `cursor` (the LAST APPLIED position; reading starts
   at cursor.seq + 1 — note nats.c's ResumeFromRevision is inclusive).
   cursor.seq == 0 (no position) reads from the first retained event, and
   its epoch is not compared. RESET when the epochs differ or cursor.seq >
   last_seq; next_seq is then the new stream's first sequence (1 on a
   never-written stream). Epoch 0 is an epoch like any other. SEQ_OVERFLOW
   when cursor.seq == UINT64_MAX; *out untouched then. */
OPSTATE_API opstate_result opstate_resume_check(opstate_position cursor,
                                                const opstate_stream_info *stream,
                                                opstate_resume *out);
OPSTATE_API const char *opstate_resume_state_str(opstate_resume_state s);

typedef enum opstate_gap_kind {
    OPSTATE_GAP_NONE = 0,    /* delivered == expected */
    OPSTATE_GAP_REDELIVERY,  /* delivered < expected: already applied, skip */
    OPSTATE_GAP_SKIPPED,     /* delivered > expected, not evicted, same
                                incarnation: empty (other subjects, deleted)
                                ONLY if the log vouches for it (see
                                opstate_log_message.contiguous); otherwise
                                events may be lost in transit: re-read */
    OPSTATE_GAP_EVICTED,     /* delivered > expected and expected < first_seq:
                                events were lost to retention -> resync */
    OPSTATE_GAP_RESET        /* the stream is another incarnation */
} opstate_gap_kind;

typedef struct opstate_gap {
    opstate_gap_kind kind;
    uint64_t missing; /* sequences between expected and delivered */
    uint64_t evicted; /* of those, below first_seq (EVICTED only) */
} opstate_gap;

/* Classifies a delivery while live (or the first delivery after attaching,
   against the requested start). `expected` is the sequence that should come
   next, `delivered` what came, `epoch` the epoch of the cursor, and `fresh`
   the stream info re-read when delivered > expected (may be NULL when
   delivered <= expected). A gap is RESET when fresh->epoch != epoch or
   delivered > fresh->last_seq, EVICTED when expected < fresh->first_seq,
   SKIPPED otherwise; `missing` is delivered - expected for every gap kind,
   `evicted` is min(first_seq, delivered) - expected. fresh is not read when
   delivered <= expected. INVALID_ARGUMENT when a gap is seen and fresh is
   NULL, or expected is 0; *out untouched then. */
OPSTATE_API opstate_result opstate_gap_classify(uint64_t expected, uint64_t delivered,
                                                uint64_t epoch, const opstate_stream_info *fresh,
                                                opstate_gap *out);
OPSTATE_API const char *opstate_gap_kind_str(opstate_gap_kind k);

/* >>decide --------------------------------------------------------------- */

typedef enum opstate_restore_mode {
    OPSTATE_MODE_AUTO = 0, /* the matrix decides */
    OPSTATE_MODE_CLEAR,    /* always start from an empty state */
    OPSTATE_MODE_KEEP      /* always restore what is stored */
} opstate_restore_mode;

typedef enum opstate_start_kind {
    OPSTATE_START_RESUME = 0,    /* continue after the stored position */
    OPSTATE_START_FROM_SEQUENCE, /* replay from start.seq */
    OPSTATE_START_FROM_TIME,     /* replay from start.time (ns) */
    OPSTATE_START_LATEST,        /* only new events */
    OPSTATE_START_FIRST          /* the whole retained stream */
} opstate_start_kind;

typedef struct opstate_start {
    opstate_start_kind kind;
    uint64_t seq; /* FROM_SEQUENCE: first sequence to read, >= 1 */
    int64_t time; /* FROM_TIME: ns since the Unix epoch */
} opstate_start;

#define OPSTATE_REASON_LIST(X)                                                              \
    X(FORCED_CLEAR, "mode is clear: state cleared")                                         \
    X(FORCED_KEEP, "mode is keep: stored state restored")                                   \
    X(STREAM_RECREATED, "stream recreated (epoch differs): state cleared")                  \
    X(CURSOR_AHEAD, "stored position is past the end of the stream: state cleared")        \
    X(FULL_REBUILD, "replay from first: state cleared for a full rebuild")                  \
    X(LATEST, "start from latest: state cleared")                                           \
    X(NOTHING_STORED, "resume with no stored position: nothing to restore")                 \
    X(NO_POSITION, "replay requested and no stored position to compare: state cleared")    \
    X(RESUME, "resume after the stored position")                                           \
    X(CURSOR_EXPIRED, "resume: stored cursor expired, restore then resync evicted keys")    \
    X(FORWARD_SEQUENCE, "replay starts after the stored sequence: forward catch-up")        \
    X(FORWARD_SEQUENCE_GAP, "replay starts past the stored sequence: events in between skipped") \
    X(BACKWARD_SEQUENCE, "replay starts at or before the stored sequence: would double-count, cleared") \
    X(FORWARD_TIME, "replay starts after the stored time: forward catch-up")                \
    X(BACKWARD_TIME, "replay starts at or before the stored time: would double-count, cleared")

typedef enum opstate_reason {
#define OPSTATE__REASON_ENUM(name, msg) OPSTATE_REASON_##name,
    OPSTATE_REASON_LIST(OPSTATE__REASON_ENUM)
#undef OPSTATE__REASON_ENUM
    OPSTATE_REASON_COUNT
} opstate_reason;

typedef struct opstate_restore_decision {
    bool restore;          /* true: load the snapshot; false: start empty */
    bool resync;           /* restore, then reconcile keys evicted in the gap */
    opstate_reason reason; /* why; opstate_reason_str() explains in one line */
    uint64_t gap;          /* events skipped (FORWARD_SEQUENCE_GAP) or
                              evicted (CURSOR_EXPIRED, or FORCED_KEEP with
                              resync) */
} opstate_restore_decision;

/* Restore-or-clear, per the matrix in DESIGN.md, checked in this order:
   mode clear; mode keep (restore; with a resume start and an expired
   cursor of the same epoch also RESYNC with the gap, since keeping stale
   deleted keys is never what "keep" means); stored epoch != stream epoch;
   stored seq > stream
   last_seq; start first; start latest; no stored position; resume (RESYNC
   when the cursor expired); from sequence (N > stored restores, the gap is
   N - stored - 1); from time (T > stored.time restores, compared in ns).
   stored == NULL or stored->seq == 0: no stored position. stream == NULL:
   stream unknown (no epoch / expiry checks). With no stored position the
   epoch and past-the-end checks do not apply. Arguments are checked before
   anything else: INVALID_ARGUMENT for an unknown mode or start kind, or
   FROM_SEQUENCE with seq 0 (whatever the mode); *out untouched then. */
OPSTATE_API opstate_result opstate_decide_restore(opstate_restore_mode mode, opstate_start start,
                                                  const opstate_position *stored,
                                                  const opstate_stream_info *stream,
                                                  opstate_restore_decision *out);
OPSTATE_API const char *opstate_reason_str(opstate_reason r);
/* Short name of a reason code, e.g. "BACKWARD_SEQUENCE". */
OPSTATE_API const char *opstate_reason_name(opstate_reason r);

typedef enum opstate_time_fallback {
    OPSTATE_TIME_FALLBACK_WALLCLOCK = 0, /* no event time: use the wall clock */
    OPSTATE_TIME_FALLBACK_SKIP           /* no event time: contribute no time */
} opstate_time_fallback;

/* The time an event contributes to time-windowed state. Returns true and
   sets *out to the event time, or (without one) to wallclock_ns under
   WALLCLOCK. Returns false under SKIP (and leaves *out untouched): apply
   the event, but let it add nothing time-windowed. */
OPSTATE_API bool opstate_event_time(const opstate_event *ev, opstate_time_fallback fallback,
                                    int64_t wallclock_ns, int64_t *out);

/* >>hash ----------------------------------------------------------------- */

/* Every hash table fed by bytes a producer chooses (the KV fold's keys, the
   dedup window's and the memory log's ids) hashes them with SipHash-2-4
   under a 128-bit key of its own, so keys cannot be crafted to collide and
   make apply quadratic. A table derives its key when it is made, from the
   process seed below, its own address (two tables never share a key) and,
   in hosted builds, the clock and, unless OPSTATE_NO_MALLOC, 16 fresh bytes
   of /dev/urandom (the source opstate_id_new reads; it is left out there
   because stdio's fopen allocates). No output shows a key: the fold iterates,
   encodes and renders in key order, and neither its dirty list nor the
   dedup window's bytes follow the table.

   Sets the process seed (16 bytes, copied) for the tables made after the
   call. Hosted builds need not call it (a seed given is mixed in too).
   Under OPSTATE_NO_STDLIB or OPSTATE_NO_MALLOC there is no entropy source:
   call it once at boot, before any table exists and before other threads
   use the library, with 16 bytes from a hardware RNG or a per-device
   secret. Until then the seed is a public default, the 16 ASCII bytes
   "opstate.hash.v1.": tables still differ by address (and clock, hosted),
   but whoever knows the program can craft collisions. */
OPSTATE_API void opstate_hash_seed(const uint8_t seed[16]);

/* >>dedup ---------------------------------------------------------------- */

/* A bounded set of the most recent event ids, oldest evicted first, over
   storage the caller owns (opstate_dedup_storage_size bytes). */
typedef struct opstate_dedup {
    opstate_id *ids;    /* ring, insertion order */
    uint32_t *table;    /* open addressing: ring index + 1, 0 = empty */
    uint32_t capacity;  /* ids kept */
    uint32_t table_mask;
    uint32_t head;      /* index of the oldest id */
    uint32_t count;
    uint64_t key[2];    /* this window's SipHash key (see opstate_hash_seed) */
} opstate_dedup;

/* Bytes of storage for a window of `capacity` ids (0 when capacity is 0 or
   above 1<<24). */
OPSTATE_API size_t opstate_dedup_storage_size(uint32_t capacity);
/* Sets up an empty window over `storage` (aligned for uint32_t, at least
   opstate_dedup_storage_size(capacity) bytes), with a hash key of its own
   (>>hash: hosted builds without OPSTATE_NO_MALLOC read /dev/urandom for
   it). INVALID_ARGUMENT otherwise. */
OPSTATE_API opstate_result opstate_dedup_init(opstate_dedup *d, void *storage, size_t storage_size,
                                              uint32_t capacity);
/* true when id is in the window. */
OPSTATE_API bool opstate_dedup_contains(const opstate_dedup *d, const opstate_id *id);
/* Adds id unless present; returns true when it was new. When full, the
   oldest id is evicted first. */
OPSTATE_API bool opstate_dedup_insert(opstate_dedup *d, const opstate_id *id);
/* Empties the window. */
OPSTATE_API void opstate_dedup_clear(opstate_dedup *d);
/* Serialises the window, oldest first:
     u8 version | u8 0 | u32 count | count x id[16] | u32 CRC32C.
   out == NULL: *out_len = size needed. */
OPSTATE_API opstate_result opstate_dedup_encode(const opstate_dedup *d, uint8_t *out, size_t cap,
                                                size_t *out_len);
/* Replaces the window's content with decoded ids (an id repeated in the
   bytes is kept once). Errors, in the order checked: TRUNCATED (empty),
   UNKNOWN_VERSION, TRUNCATED (shorter than header or declared count),
   MALFORMED (trailing bytes, reserved byte set), OVERSIZED (more ids than
   d's capacity: never a silent drop), CORRUPT (CRC mismatch).
   *d and its storage untouched on failure. */
OPSTATE_API opstate_result opstate_dedup_decode(opstate_dedup *d, const uint8_t *buf, size_t len,
                                                opstate_error *err);

/* >>flash ---------------------------------------------------------------- */

/* A power-loss-safe store over raw NOR-like flash for firmware (no file
   system, no malloc, bounded stack, a caller-owned work buffer). The caller
   describes the device; the store uses its sectors as a ring-shaped log of
   CRC32C-checked records: a base (every live key) and deltas (the keys a
   flush changed, puts and deletes), each ended by a commit record with the
   position, schema version and dedup window. At open the newest complete
   commit wins; a record torn by a power cut is never loaded. When the free
   space cannot take the next delta and still leave room for a base, the
   caller writes a fresh base instead (opstate_flash_plan says which); the
   old chain's sectors are reused only after that base committed.

   Layout (every number little-endian; every write a whole number of program
   units, every field padded with the erased value to a unit boundary):
     sector  = header | records (a record may run on into the next sector)
     header  = "OPFL" | u8 layout version | u8 log2(prog size) | u8 flags
               (1: restart: the previous sector's tail is torn, skip it) |
               u8 0 | u32 sector size | u32 sector sequence | u32 erase
               count | u32 offset of the first record that starts in this
               sector (0: none) | u32 CRC32C of the 24 bytes before
     record  = u8 type (1 put, 2 delete, 3 commit) | u8 0 | u16 key len |
               u32 value len | u32 transaction | u32 CRC32C of these 12 bytes |
               key | (put, delete: u64 seq | i64 time of the key's last
               change) | value | u32 CRC32C of everything before it
     commit  = a record whose key is u8 kind (1 base, 2 delta) | u8 flags
               (1: empty: nothing is stored, after opstate_flash_drop) |
               u16 0 | u32 schema | u64 seq | i64 time | u64 epoch |
               u32 entries in the transaction, and whose value is the dedup
               window's bytes (opstate_dedup_encode).
   A transaction counts only when its commit record and every record before
   it back to its first check. A damaged record that valid later records of
   the live chain follow is real damage: OPSTATE_CORRUPT with its address
   (opstate_error.offset), never loaded; a torn tail (the last thing
   written) is the normal trace of a power cut: ignored and counted.

   Threads: one thread at a time per opstate_flash. */

/* The flash device. Callbacks return 0 on success, anything else is an
   I/O error (OPSTATE_IO, the value in opstate_error.dep_status). Addresses
   are byte offsets from the start of the store's region; read and prog
   always get an address and a length that are multiples of prog_size;
   erase gets a sector's first address. */
typedef struct opstate_flash_device {
    void *user;
    int (*read)(void *user, uint32_t addr, void *buf, uint32_t len);
    int (*prog)(void *user, uint32_t addr, const void *buf, uint32_t len);
    int (*erase)(void *user, uint32_t addr);
    uint32_t sector_size;  /* bytes, a multiple of prog_size, at least 64 */
    uint32_t sector_count; /* at least 2 */
    uint32_t prog_size;    /* program granularity: 1, 2, 4, 8, 16 or 32 */
    uint8_t erased;        /* value of an erased byte: 0xFF or 0x00 */
} opstate_flash_device;

/* What a commit records besides the entries. */
typedef struct opstate_flash_meta {
    uint32_t schema_version;
    opstate_position position;
} opstate_flash_meta;

/* What the last open found and what writing has done since. */
typedef struct opstate_flash_stats {
    uint32_t torn_tails;       /* torn records ignored (power cuts) */
    uint32_t abandoned;        /* transactions without a commit, skipped */
    uint32_t erases;           /* sectors erased by this handle */
    uint32_t erase_count_min;  /* lowest / highest erase count in a valid */
    uint32_t erase_count_max;  /* sector header */
    uint32_t live_sectors;     /* sectors the live chain holds */
    uint64_t live_bytes;       /* bytes from the live base to the end */
} opstate_flash_stats;

/* The store. Treat the fields as private; the struct is public so that
   firmware can place it statically. */
typedef struct opstate_flash {
    opstate_flash_device dev;
    uint8_t *work;
    uint32_t work_size, header_size, unit_shift;
    uint32_t run_first, run_len;          /* the newest run of sectors */
    uint32_t wsector, woffset, wseq;      /* where the next byte goes, that sector's sequence */
    uint32_t erase_estimate;              /* for a sector without a valid header */
    bool have_sector, need_fresh;         /* need_fresh: a torn tail, go on in a new sector */
    bool has_base, has_state, corrupt;
    uint32_t corrupt_addr;
    uint32_t base_sector, base_offset;    /* first record of the live base */
    uint32_t commit_sector, commit_offset; /* the last commit record */
    uint32_t commit_end_sector, commit_end_offset; /* where it ends */
    uint32_t dedup_len;
    opstate_flash_meta meta;
    uint32_t next_txn, txn, txn_entries, txn_start_sector, txn_start_offset;
    int txn_kind;                          /* 0: none */
    bool txn_started, rec_started;         /* a first byte of it is on flash */
    uint32_t rec_sector, rec_offset, rec_left, staged, rec_crc;
    opstate_flash_stats stats;
} opstate_flash;

/* Kind of a write transaction. */
typedef enum opstate_flash_kind {
    OPSTATE_FLASH_DELTA = 1, /* the changes since the last commit */
    OPSTATE_FLASH_BASE = 2   /* the whole state; the older chain becomes free */
} opstate_flash_kind;

/* One entry of a transaction: a key's value, or its delete, and the
   position of its last change (the epoch is not stored: 0 on load). */
typedef struct opstate_flash_entry {
    opstate_bytes key;
    opstate_bytes value; /* ignored for a delete; NULL / 0 when loaded */
    bool deleted;
    opstate_position position;
} opstate_flash_entry;

/* Called by opstate_flash_load for each stored entry, base first, then the
   deltas in commit order (a later entry of a key wins). The pointers are
   valid during the call. A result other than OK stops the load and is
   returned. */
typedef opstate_result (*opstate_flash_entry_fn)(void *user, const opstate_flash_entry *entry);

/* Opens the store over dev with the caller's work buffer (at least 64 bytes
   and 2 x prog_size; the largest entry, 36 bytes + key + value, must fit
   in it). Reads every sector header and the newest run of sectors, and
   finds the newest complete commit; writes nothing. INVALID_ARGUMENT for a
   bad geometry, IO for a device error. Damage in the live chain does not
   fail the open: read_meta and load then return CORRUPT, and a new base
   (or opstate_flash_drop) starts a clean chain. */
OPSTATE_API opstate_result opstate_flash_open(opstate_flash *fs, const opstate_flash_device *dev, void *work,
                                              size_t work_size, opstate_error *err);
/* The last commit's meta and dedup length: OK, NOT_FOUND (nothing stored,
   or dropped), or CORRUPT (err->offset: the damaged record's address). */
OPSTATE_API opstate_result opstate_flash_read_meta(const opstate_flash *fs, opstate_flash_meta *meta,
                                                   size_t *dedup_len, opstate_error *err);
/* Delivers the stored state: fn for each entry (base, then deltas), then
   *meta and the dedup bytes into dedup (cap bytes; *dedup_len gets their
   length; dedup may be NULL when the caller does not want them).
   NOT_FOUND, CORRUPT, IO, BUFFER_TOO_SMALL (dedup), or fn's error. */
OPSTATE_API opstate_result opstate_flash_load(opstate_flash *fs, opstate_flash_entry_fn fn, void *user,
                                              opstate_flash_meta *meta, uint8_t *dedup, size_t cap,
                                              size_t *dedup_len, opstate_error *err);
/* Bytes an entry takes on flash (with its padding). */
OPSTATE_API uint64_t opstate_flash_entry_size(const opstate_flash *fs, size_t key_len, size_t value_len);
/* Bytes a commit record with dedup_len bytes of dedup window takes. */
OPSTATE_API uint64_t opstate_flash_commit_size(const opstate_flash *fs, size_t dedup_len);
/* Which transaction the next flush should write: a delta of delta_bytes
   (entries + commit, as the two functions above count them) when it fits
   and still leaves room for a base of base_bytes (the whole state after
   the flush, commit included) plus two sectors (one a power cut may cost:
   after a torn tail writing goes on in a fresh sector; one for the state
   to grow by until the next flush); else a base when base_bytes fit in the
   free space; else NO_SPACE (nothing written, the stored state intact).
   An empty or damaged store always takes a base. Sizing: give the store at
   least 2 x (sectors of the largest base) + 3 sectors. */
OPSTATE_API opstate_result opstate_flash_plan(const opstate_flash *fs, uint64_t delta_bytes, uint64_t base_bytes,
                                              opstate_flash_kind *kind);
/* Starts a transaction (an unfinished one is abandoned: nothing of it
   counts). DELTA needs a stored base (INVALID_ARGUMENT) and an undamaged
   chain (CORRUPT). */
OPSTATE_API opstate_result opstate_flash_begin(opstate_flash *fs, opstate_flash_kind kind, opstate_error *err);
/* Writes one entry of the transaction: a put, or a delete.
   INVALID_ARGUMENT (no transaction, empty key), OVERSIZED (key above 65535
   bytes or the entry, 36 bytes + key + value, larger than the work
   buffer), NO_SPACE (the next sector is the live base's: the transaction
   is abandoned, the stored state intact), IO. */
OPSTATE_API opstate_result opstate_flash_put(opstate_flash *fs, const opstate_flash_entry *entry,
                                             opstate_error *err);
/* Ends the transaction with its commit record (meta and dedup bytes, which
   may be longer than the work buffer). Once it returns OK the transaction
   survives any power cut; before that, a cut leaves the previous state. */
OPSTATE_API opstate_result opstate_flash_commit(opstate_flash *fs, const opstate_flash_meta *meta,
                                                opstate_bytes dedup, opstate_error *err);
/* Forgets the stored state (an empty base: read_meta says NOT_FOUND). The
   same all-or-nothing as a commit. */
OPSTATE_API opstate_result opstate_flash_drop(opstate_flash *fs, opstate_error *err);
/* What open found and what writing did since. */
OPSTATE_API opstate_flash_stats opstate_flash_get_stats(const opstate_flash *fs);


/* >>alloc ---------------------------------------------------------------- */

/* Everything below this line allocates through an opstate_allocator and is
   compiled out by OPSTATE_NO_MALLOC. */
#ifndef OPSTATE_NO_MALLOC

/* Memory for the parts that allocate. All zero = malloc/free (not
   available under OPSTATE_NO_STDLIB: give your own, e.g. a static arena). */
typedef struct opstate_allocator {
    void *(*alloc)(void *user, size_t size); /* NULL on failure */
    void (*free)(void *user, void *ptr);     /* ptr may be NULL */
    void *user;
} opstate_allocator;

typedef enum opstate_diag_level {
    OPSTATE_DIAG_ERROR = 0,
    OPSTATE_DIAG_WARN,
    OPSTATE_DIAG_INFO,
    OPSTATE_DIAG_DEBUG
} opstate_diag_level;

/* Where the library reports what it did and what went wrong (one line per
   call, no trailing newline). All zero: silent. */
typedef struct opstate_diag {
    void (*fn)(void *user, opstate_diag_level level, const char *message);
    void *user;
} opstate_diag;

/* Allocates through `a` (all zero: malloc). NULL on failure. For custom
   logs and stores as much as for the library. */
OPSTATE_API void *opstate_alloc(const opstate_allocator *a, size_t n);
/* Frees what opstate_alloc returned; NULL is fine. */
OPSTATE_API void opstate_free(const opstate_allocator *a, void *p);
/* Sets the optional error detail (err may be NULL) and returns r, so a
   custom log or store can `return opstate_error_set(err, OPSTATE_IO,
   "field", rc);`. */
OPSTATE_API opstate_result opstate_error_set(opstate_error *err, opstate_result r, const char *field,
                                             long dep_status);
/* Reports one diagnostic line "<a><n><b>" at `level` when diag has a function. */
OPSTATE_API void opstate_diag_line(const opstate_diag *d, opstate_diag_level level, const char *a, uint64_t n,
                                   const char *b);

/* >>kv ------------------------------------------------------------------- */

typedef struct opstate_kv opstate_kv;

/* One entry as seen by iteration: value and position of its last change. */
typedef struct opstate_kv_item {
    opstate_bytes key;
    opstate_bytes value;       /* for a dirty delete: ptr NULL, len 0 */
    bool deleted;              /* only in opstate_kv_dirty_iterate */
    bool in_base;              /* the base holds the key (a store records it with
                                  a delta so a load needs no base lookup) */
    opstate_position position; /* epoch is 0: the consumer knows it */
} opstate_kv_item;

/* Iteration callback; return false to stop. */
typedef bool (*opstate_kv_iter_fn)(void *user, const opstate_kv_item *item);

/* A read-only lower layer under the memory part of a KV fold (state larger
   than memory: the LMDB companion supplies one over its table). The fold
   consults it for keys it does not hold; deletes stay in memory as
   tombstones until compaction folds them into the base. */
typedef struct opstate_kv_base {
    void *user;
    /* OK with *value valid until the next call on the base, NOT_FOUND, or
       an error. */
    opstate_result (*get)(void *user, opstate_bytes key, opstate_bytes *value,
                          opstate_position *position);
    /* Every key in ascending byte order (shorter first on a common prefix). */
    opstate_result (*iterate)(void *user, opstate_kv_iter_fn fn, void *fn_user);
    /* Number of keys. */
    uint64_t (*count)(void *user);
} opstate_kv_base;

typedef struct opstate_kv_config {
    opstate_allocator allocator;
    const opstate_kv_base *base; /* NULL: memory only */
    size_t max_key_len;          /* longest key accepted (0: OPSTATE_MAX_KEY_LEN) */
} opstate_kv_config;

/* Creates an empty fold. cfg may be NULL (defaults). */
OPSTATE_API opstate_result opstate_kv_create(const opstate_kv_config *cfg, opstate_kv **out);
/* Grows the slot table now for `keys` more keys (a store about to load that
   many avoids rehashing as it goes). NO_MEMORY leaves the fold as it was. */
OPSTATE_API opstate_result opstate_kv_reserve(opstate_kv *kv, uint64_t keys);
/* Frees the fold and everything it holds. NULL is fine. */
OPSTATE_API void opstate_kv_destroy(opstate_kv *kv);
/* Sets key to value (copied) and marks it dirty. NO_MEMORY or OVERSIZED
   (key above the fold's max_key_len, value above OPSTATE_MAX_DATA_LEN) leave
   the fold unchanged; INVALID_ARGUMENT for an empty key. */
OPSTATE_API opstate_result opstate_kv_put(opstate_kv *kv, opstate_bytes key, opstate_bytes value,
                                          opstate_position position);
/* Removes key and marks the delete dirty; deleting an absent key is OK and
   changes nothing. */
OPSTATE_API opstate_result opstate_kv_delete(opstate_kv *kv, opstate_bytes key,
                                             opstate_position position);
/* For stores replaying their own records at load: sets a key (or, with
   item->deleted, its tombstone) as clean, trusting item->in_base instead of
   asking the base. Errors as for opstate_kv_put; INVALID_ARGUMENT when the
   key is dirty (restoring is loading, not changing). */
OPSTATE_API opstate_result opstate_kv_restore(opstate_kv *kv, const opstate_kv_item *item);
/* A hint for bulk loads: starts fetching the slot where key lives or would
   go, so that restoring (or putting, getting) it a few keys later does not
   wait on memory; a loader calls it for each key about 8 keys ahead.
   Changes nothing; does nothing where the compiler offers no prefetch. */
OPSTATE_API void opstate_kv_prefetch(const opstate_kv *kv, opstate_bytes key);
/* Looks key up: OK and *item (pointers valid until the next change or
   base call), NOT_FOUND, or a base error. */
OPSTATE_API opstate_result opstate_kv_get(const opstate_kv *kv, opstate_bytes key,
                                          opstate_kv_item *item);
/* Number of live keys (memory and base). */
OPSTATE_API uint64_t opstate_kv_count(const opstate_kv *kv);
/* true when the fold reads through a base. */
OPSTATE_API bool opstate_kv_has_base(const opstate_kv *kv);
/* Bytes held in memory for entries (keys, values, bookkeeping). */
OPSTATE_API size_t opstate_kv_memory(const opstate_kv *kv);
/* Calls fn for every live key in ascending key order. NO_MEMORY (it sorts
   the memory part in a temporary array of 32 bytes per entry) or a base
   error. */
OPSTATE_API opstate_result opstate_kv_iterate(const opstate_kv *kv, opstate_kv_iter_fn fn, void *user);
/* Calls fn for every dirty key (puts and deletes since the last
   opstate_kv_mark_clean), in no particular order, with current values. */
OPSTATE_API void opstate_kv_dirty_iterate(const opstate_kv *kv, opstate_kv_iter_fn fn, void *user);
/* Number of dirty keys. */
OPSTATE_API uint32_t opstate_kv_dirty_count(const opstate_kv *kv);
/* Key plus value bytes of the dirty entries (a delete's value counts 0),
   kept as they change: with the count, what a flush writes, sized without
   walking the entries. */
OPSTATE_API uint64_t opstate_kv_dirty_bytes(const opstate_kv *kv);
/* After a successful flush: nothing is dirty; tombstones of a memory-only
   fold are freed. */
OPSTATE_API void opstate_kv_mark_clean(opstate_kv *kv);
/* After the base absorbed every clean entry (a compaction): frees the clean
   memory entries. Dirty ones stay. */
OPSTATE_API void opstate_kv_forget_clean(opstate_kv *kv);
/* Removes every key from memory (the base is the store's to drop). */
OPSTATE_API void opstate_kv_clear(opstate_kv *kv);
/* Key the default apply uses for an event: scope 0x00 kind 0x00 key (tokens
   cannot hold 0x00, so the split is unambiguous). out == NULL: size. */
OPSTATE_API opstate_result opstate_kv_event_key(const opstate_event *ev, uint8_t *out, size_t cap,
                                                size_t *out_len);
/* Writes the fold as JSON in key order, the same shape whatever the bytes
   hold: {"count":N,"items":[{"key":[parts],"key_encoding":"utf8",
   "value":"…","value_encoding":"utf8","seq":N,"time":N},…]}. A key's parts
   are its bytes split at 0x00 (the default apply's scope, kind, key);
   text and encodings follow opstate_event_to_json. out == NULL: size.
   NO_MEMORY as for iteration. */
OPSTATE_API opstate_result opstate_kv_to_json(const opstate_kv *kv, char *out, size_t cap,
                                              size_t *out_len);

/* >>snapshot ------------------------------------------------------------- */

#define OPSTATE_SNAPSHOT_FORMAT_VERSION 1

/* What a snapshot says besides the state. */
typedef struct opstate_snapshot_meta {
    uint32_t schema_version;   /* the application's state schema */
    opstate_position position; /* high-water mark the state includes */
} opstate_snapshot_meta;

/* Converts a fold loaded with an older user schema in place (use put /
   delete so the changes are flushed). */
typedef opstate_result (*opstate_upgrade_fn)(void *user, uint32_t from_version, opstate_kv *kv);

typedef struct opstate_schema {
    uint32_t version;           /* what the application writes now */
    opstate_upgrade_fn upgrade; /* NULL: older state is cleared and replayed */
    void *user;
} opstate_schema;

/* Compares a loaded state's schema version with `schema`: OK when equal or
   after a successful upgrade; SCHEMA_TOO_NEW for a newer one; SCHEMA_OLD
   for an older one without an upgrade callback; or the callback's error. */
OPSTATE_API opstate_result opstate_schema_check(const opstate_schema *schema, uint32_t stored_version,
                                                opstate_kv *kv);
/* Encodes meta, the dedup window (may be NULL) and every live key:
     "OPSN" | u16 format | u16 0 | u32 schema | u64 seq | i64 time |
     u64 epoch | u32 dedup len | dedup bytes | u64 body len | body | u32 CRC
   body = u64 count, then per key in order: u32 key len | key | u32 value
   len | value | u64 seq | i64 time. out == NULL: *out_len = size. */
OPSTATE_API opstate_result opstate_snapshot_encode(const opstate_kv *kv, const opstate_snapshot_meta *meta,
                                                   const opstate_dedup *dedup, uint8_t *out, size_t cap,
                                                   size_t *out_len, opstate_error *err);
/* Decodes a snapshot into `into` (which must be empty), *meta and `dedup`
   (may be NULL: the window is skipped). Checks magic, format version
   (UNKNOWN_VERSION), lengths (TRUNCATED / MALFORMED / OVERSIZED) and the
   CRC (CORRUPT) before touching anything; on any failure `into`, *meta and
   dedup are left as they were. Decoded keys are clean (not dirty). */
OPSTATE_API opstate_result opstate_snapshot_decode(const uint8_t *buf, size_t len, opstate_kv *into,
                                                   opstate_snapshot_meta *meta, opstate_dedup *dedup,
                                                   opstate_error *err);

/* >>log ------------------------------------------------------------------ */

/* true when `subject` matches the NATS-style `filter`: tokens split on '.',
   '*' matches one token, '>' (last token only) matches one or more. */
OPSTATE_API bool opstate_subject_matches(opstate_bytes filter, opstate_bytes subject);

/* One message as a log delivers it; pointers valid until the next call on
   the log. */
typedef struct opstate_log_message {
    opstate_position position;
    opstate_bytes subject;
    opstate_bytes data; /* an encoded event (opstate_event_encode) */
    /* Set by read: the log vouches that no retained message matching the
       read's filter lies between the previous message of this read stream
       (or from_seq, for the first one after a new from_seq) and this one.
       The memory and LMDB logs look and always vouch; JetStream vouches
       when the consumer's delivery sequence is contiguous. false: the
       consumer does not take a hole before this message as empty. */
    bool contiguous;
} opstate_log_message;

typedef struct opstate_append_options {
    const opstate_id *msg_id;    /* NULL: no duplicate check */
    bool expect_last_subject_seq; /* optimistic concurrency on the subject */
    uint64_t last_subject_seq;    /* 0: the subject must have no message */
} opstate_append_options;

typedef struct opstate_append_result {
    uint64_t seq;   /* the message's sequence (the original's for a duplicate) */
    bool duplicate; /* msg_id seen within the log's duplicate window */
} opstate_append_result;

typedef void (*opstate_log_visit_fn)(void *user, const opstate_log_message *msg);

/* An append-only log (memory, LMDB, JetStream). Reads never clamp silently
   on their own behalf: they return what is retained from `from_seq` on,
   and the consumer checks what it got against what it asked for. */
typedef struct opstate_log {
    void *user;
    /* Appends one message. CONFLICT when expect_last_subject_seq does not
       hold; a duplicate id is OK with out->duplicate set. */
    opstate_result (*append)(void *user, opstate_bytes subject, opstate_bytes data,
                             const opstate_append_options *opts, opstate_append_result *out,
                             opstate_error *err);
    /* Up to `max` retained messages with seq >= from_seq whose subject
       matches `filter`, in sequence order; with none there yet, waits up
       to wait_ns for another writer to append one (a log no other writer
       can reach during the call, the memory log, returns at once). *count
       0 means none (yet). */
    opstate_result (*read)(void *user, opstate_bytes filter, uint64_t from_seq, int64_t wait_ns,
                           opstate_log_message *msgs, size_t max, size_t *count, opstate_error *err);
    /* First / last sequence and time, epoch, message count. */
    opstate_result (*info)(void *user, opstate_stream_info *out, opstate_error *err);
    /* Calls fn with the last retained message of every subject matching
       `filter` (the view resync reconciles against). */
    opstate_result (*last_per_subject)(void *user, opstate_bytes filter, opstate_log_visit_fn fn,
                                       void *fn_user, opstate_error *err);
    /* Optional (may be NULL): tells the log that every delivered message up
       to upto_seq is applied (a durable JetStream consumer acks them). The
       consumer calls it after each batch, before the next read. */
    opstate_result (*ack)(void *user, uint64_t upto_seq, opstate_error *err);
} opstate_log;

/* Encodes an event and appends it under "<prefix>.<scope>.<kind>[.<key>]"
   with its id as the duplicate-check id. `a` may be NULL (default
   allocator), `out` too (the sequence is not wanted). opts->msg_id is
   ignored (the event's id is used). */
OPSTATE_API opstate_result opstate_publish(const opstate_log *log, opstate_bytes prefix,
                                           const opstate_event *ev, const opstate_append_options *opts,
                                           const opstate_allocator *a, opstate_append_result *out,
                                           opstate_error *err);

/* The rules of the log contract, written once for every log that keeps
   its own messages (the memory and LMDB logs; JetStream applies the same
   ones in the server). The duplicate window is a time, as on JetStream:
   0 in a config means this default. */
#define OPSTATE_DUPLICATE_WINDOW_NS INT64_C(120000000000) /* 2 minutes */
/* True when an id first appended at id_time no longer makes an append of
   the same id at `now` a duplicate (window_ns > 0). */
OPSTATE_API bool opstate_log_id_expired(int64_t window_ns, int64_t id_time, int64_t now);
/* True when a message published at msg_time is past max_age_ns at `now`
   (max_age_ns 0: no age limit). */
OPSTATE_API bool opstate_log_aged_out(int64_t max_age_ns, int64_t msg_time, int64_t now);
/* OK, or CONFLICT when opts expects the subject's last sequence to be
   other than subject_last_seq (0: the subject has no message). */
OPSTATE_API opstate_result opstate_log_expect_check(const opstate_append_options *opts, uint64_t subject_last_seq);

typedef struct opstate_memlog opstate_memlog;

typedef struct opstate_memlog_config {
    opstate_allocator allocator;
    uint64_t max_messages;    /* retention: 0 = unlimited */
    int64_t max_age_ns;       /* retention by publish time: 0 = unlimited */
    uint64_t max_per_subject; /* retention per subject: 0 = unlimited */
    int64_t duplicate_window_ns; /* an id appended again within this much
                                    publish time is a duplicate (0:
                                    OPSTATE_DUPLICATE_WINDOW_NS) */
    uint32_t duplicate_ids_max;  /* the memory bound: at most this many ids
                                    remembered, the oldest forgotten first
                                    (0: 100,000) */
    uint64_t epoch;           /* incarnation (0: 1) */
    /* Publish time in ns. NULL: a logical clock (1, 2, 3, ...). */
    int64_t (*clock)(void *user);
    void *clock_user;
} opstate_memlog_config;

/* An in-memory log with JetStream's semantics: sequences from 1, retention
   that really advances first_seq, a duplicate window, expected last subject
   sequence, an epoch. cfg may be NULL. It is also how a test captures what
   a program publishes: hand the program this log (opstate_publish on it
   keeps every event, encoded, in order, duplicates dropped as the real log
   drops them) and read it back. */
OPSTATE_API opstate_result opstate_memlog_create(const opstate_memlog_config *cfg, opstate_memlog **out);
OPSTATE_API void opstate_memlog_destroy(opstate_memlog *m);
/* The log interface over m (valid while m lives). */
OPSTATE_API opstate_log opstate_memlog_iface(opstate_memlog *m);
/* Deletes and recreates the stream: empty, sequences restart at 1, new
   epoch. */
OPSTATE_API void opstate_memlog_recreate(opstate_memlog *m, uint64_t new_epoch);
/* Removes every message below `below_seq` (a purge), like retention does. */
OPSTATE_API void opstate_memlog_purge(opstate_memlog *m, uint64_t below_seq);
/* Applies max age now (it also runs on every append, read and info). */
OPSTATE_API void opstate_memlog_enforce_retention(opstate_memlog *m);

/* >>store ---------------------------------------------------------------- */

/* Where a consumer's snapshot lives. flush commits the fold's dirty keys,
   the meta and the dedup window in ONE atomic step: after a crash the store
   holds the old triple or the new one, never a mix. */
/* How urgent a store's compaction is. The consumer runs a due one when it
   has caught up with the log (off the flush path), an overdue one at once. */
typedef enum opstate_compaction {
    OPSTATE_COMPACTION_NOT_DUE = 0,
    OPSTATE_COMPACTION_DUE,
    OPSTATE_COMPACTION_OVERDUE
} opstate_compaction;

typedef struct opstate_store {
    void *user;
    /* The stored meta without loading the state; NOT_FOUND when empty. */
    opstate_result (*read_meta)(void *user, opstate_snapshot_meta *meta, opstate_error *err);
    /* Loads state (into an empty fold), meta and dedup window (dedup may
       be NULL). NOT_FOUND when nothing is stored. */
    opstate_result (*load)(void *user, opstate_kv *kv, opstate_snapshot_meta *meta, opstate_dedup *dedup,
                           opstate_error *err);
    /* Commits kv's dirty entries + meta + dedup atomically. Reads kv, never
       changes it: on OK the caller marks the fold clean. */
    opstate_result (*flush)(void *user, const opstate_kv *kv, const opstate_snapshot_meta *meta,
                            const opstate_dedup *dedup, opstate_error *err);
    /* Removes everything stored. */
    opstate_result (*drop)(void *user, opstate_error *err);
    /* Optional: a read-through base for the fold (state larger than
       memory). NULL or returning NULL: load-all mode. */
    const opstate_kv_base *(*base)(void *user);
    /* Optional (NULL: the store never compacts): whether folding what the
       flushes stored into a compact form is due. */
    opstate_compaction (*compact_due)(void *user);
    /* Optional: compacts now (one transaction; nothing stored changes
       meaning). A read-through base then holds every flushed entry, so the
       caller may forget the clean ones (opstate_kv_forget_clean). */
    opstate_result (*compact)(void *user, opstate_error *err);
    /* Longest key the store can keep (0: no limit of its own). The
       consumer's fold refuses longer keys, so such an event is poison at
       apply time instead of a flush that can never succeed. */
    size_t max_key_len;
} opstate_store;

/* Compacts the store now (nothing to do when it has no compact), then
   lets kv, when it reads through the store's base, forget the clean
   entries the table absorbed: the consumer's step when a compaction is
   due, for code that drives a store itself. */
OPSTATE_API opstate_result opstate_store_compact(const opstate_store *store, opstate_kv *kv, opstate_error *err);

typedef struct opstate_memstore opstate_memstore;

/* A store that keeps the last committed snapshot as bytes in memory
   (flush re-encodes the whole fold: O(state), for tests and small state). */
OPSTATE_API opstate_result opstate_memstore_create(const opstate_allocator *a, opstate_memstore **out);
OPSTATE_API void opstate_memstore_destroy(opstate_memstore *m);
OPSTATE_API opstate_store opstate_memstore_iface(opstate_memstore *m);
/* The committed snapshot bytes (NULL/0 when empty), e.g. to corrupt them
   in a test or export them. */
OPSTATE_API opstate_bytes opstate_memstore_bytes(const opstate_memstore *m);

/* The store interface over an open opstate_flash (>>flash), for the
   consumer driver: valid while fs and its work buffer live. flush writes
   the fold's dirty keys as a delta, or, when opstate_flash_plan says the
   delta would not leave room for a base, the whole fold as a new base (the
   compaction: it needs the live state, which only a flush holds, so
   compact_due and compact stay NULL); NO_SPACE when not even a base fits.
   load restores into a memory-only fold. max_key_len follows the work
   buffer (an entry is 36 bytes + key + value). */
OPSTATE_API opstate_store opstate_flash_store_iface(opstate_flash *fs);

/* >>consumer ------------------------------------------------------------- */

typedef enum opstate_apply_outcome {
    OPSTATE_APPLY_DONE = 0, /* applied: acked now */
    OPSTATE_APPLY_DEFER,    /* finished later: call opstate_consumer_ack. A crash
                               before the ack redelivers the event after
                               later ones that completed: keep a deferred
                               event's fold changes idempotent and
                               independent of later events (or make them at
                               ack time). */
    OPSTATE_APPLY_REJECT,   /* poison: recorded, then stop or skip */
    OPSTATE_APPLY_RETRY     /* memory or storage failed: poll stops, returns
                               APPLY_FAILED, and offers the event again */
} opstate_apply_outcome;

/* Folds one event into the state. Must be deterministic (replay and
   restart re-run it). */
typedef opstate_apply_outcome (*opstate_apply_fn)(void *user, opstate_kv *kv, const opstate_event *ev);

/* The default apply: PUT sets opstate_kv_event_key(ev) to the data, DELETE
   removes it. Another op, or a key or value over its limit, is rejected
   (poison); a memory or storage failure asks for a retry. */
OPSTATE_API opstate_apply_outcome opstate_apply_default(void *user, opstate_kv *kv, const opstate_event *ev);

/* Progress of a long restore or replay: from `start` to `end` sequence,
   `count` events so far, now at `current`. */
typedef void (*opstate_progress_fn)(void *user, uint64_t start, uint64_t end, uint64_t count,
                                    uint64_t current);

typedef enum opstate_poison_policy {
    OPSTATE_POISON_STOP = 0, /* poll returns POISON and stays at the event */
    OPSTATE_POISON_SKIP      /* record, count, move on */
} opstate_poison_policy;

typedef struct opstate_poison {
    opstate_position position;
    opstate_id id;         /* zero when the event did not decode */
    opstate_result reason; /* decode error, or POISON for an apply reject */
} opstate_poison;

typedef struct opstate_consumer_config {
    opstate_allocator allocator;
    opstate_diag diag;
    opstate_log log;
    opstate_store store;
    opstate_bytes filter;      /* subjects this consumer owns; empty: ">" */
    opstate_restore_mode mode;
    opstate_start start;
    opstate_schema schema;
    opstate_apply_fn apply;    /* NULL: opstate_apply_default */
    void *apply_user;
    opstate_time_fallback time_fallback; /* events without a time */
    uint32_t dedup_capacity;   /* recent ids kept (0: 1024; at least 2 x OPSTATE_HWM_CAPACITY) */
    uint32_t batch;            /* messages per read (0: 256) */
    uint64_t flush_every;      /* flush after this many events (0: never by count) */
    int64_t flush_interval_ns; /* and/or this often (0: 1 s; negative: never by time) */
    int64_t (*clock)(void *user); /* ns since the Unix epoch; NULL: the C library's
                                     wall clock (under OPSTATE_NO_STDLIB none:
                                     then no interval, time budget or wall-clock
                                     time fallback) */
    void *clock_user;
    bool no_resync;            /* EXPIRED: keep stale keys instead of reconciling */
    opstate_poison_policy poison;
    opstate_progress_fn progress;
    void *progress_user;
} opstate_consumer_config;

typedef struct opstate_consumer opstate_consumer;

/* What opening did and what polling has done so far. */
typedef struct opstate_consumer_status {
    opstate_restore_decision decision;
    opstate_resume resume;     /* the resume check at open */
    opstate_position restored; /* position of the restored state (seq 0: none) */
    uint64_t first_read_seq;   /* where reading started at open */
    bool resynced;             /* keys reconciled after an expired cursor */
    uint64_t resync_removed;   /* keys removed by resyncs */
    uint64_t resets;           /* stream recreations seen while live */
    uint64_t applied, skipped; /* events applied; redeliveries and duplicates skipped */
    uint64_t rereads;          /* holes the log did not vouch for, read again */
    uint64_t flushes, flush_failures;
    uint64_t compactions, compaction_failures;
    uint64_t poison_count;
    opstate_poison last_poison;
} opstate_consumer_status;

typedef struct opstate_poll_result {
    uint32_t applied, skipped, poison;
    bool caught_up; /* the log had nothing more */
} opstate_poll_result;

/* Opens a consumer: restore decision -> load or clear -> resume check ->
   resync when the cursor expired -> ready to poll. A restored state never
   re-reads at or below its stored position: under mode keep a start at or
   before it resumes after it. Errors from the store's
   load or drop, SCHEMA_TOO_NEW, and log errors are returned; nothing is
   left allocated then. */
OPSTATE_API opstate_result opstate_consumer_open(const opstate_consumer_config *cfg, opstate_consumer **out,
                                                 opstate_error *err);
/* Reads and applies up to max_events (0: one batch) within budget_ns (0:
   no limit; needs a clock), flushing when due; when the store's compaction
   is due, runs it in a poll that finds nothing to apply (at once when
   overdue). A failed
   periodic flush or compaction is logged and retried later (the keys stay
   dirty); it is not returned.
   Returns POISON under the stop policy, APPLY_FAILED when apply asked for a
   retry (the event is offered again next time), or a log error. */
OPSTATE_API opstate_result opstate_consumer_poll(opstate_consumer *c, uint32_t max_events, int64_t budget_ns,
                                                 opstate_poll_result *out, opstate_error *err);
/* Acknowledges a DEFERred event: the high-water mark can pass it. */
OPSTATE_API opstate_result opstate_consumer_ack(opstate_consumer *c, uint64_t seq);
/* Flushes now and returns the store's error, if any. */
OPSTATE_API opstate_result opstate_consumer_flush(opstate_consumer *c, opstate_error *err);
/* Final flush, then frees the consumer (always). Returns the flush error. */
OPSTATE_API opstate_result opstate_consumer_close(opstate_consumer *c, opstate_error *err);
/* The state being folded (owned by the consumer). */
OPSTATE_API opstate_kv *opstate_consumer_kv(opstate_consumer *c);
/* The high-water mark: every event at or below it was applied. */
OPSTATE_API opstate_position opstate_consumer_position(const opstate_consumer *c);
OPSTATE_API const opstate_consumer_status *opstate_consumer_get_status(const opstate_consumer *c);

/* >>replay --------------------------------------------------------------- */

typedef struct opstate_replay_config {
    opstate_allocator allocator;
    opstate_log log;
    opstate_bytes filter;  /* empty: every subject; opstate_subject_filter for one scope */
    uint64_t from_seq;     /* first sequence (0: the first retained), e.g. after a snapshot */
    uint64_t until_seq;    /* cutoff: last sequence to apply (0: none) */
    bool has_until_time;
    int64_t until_time;    /* cutoff: skip events published after it (a filter,
                              not a stop: later sequences may be earlier) */
    uint64_t max_events;   /* cutoff: stop after this many applied (0: none) */
    opstate_apply_fn apply; /* NULL: opstate_apply_default */
    void *apply_user;
    opstate_time_fallback time_fallback;
    uint32_t batch;        /* messages per read (0: 256) */
    uint32_t dedup_capacity; /* recent ids remembered to skip publisher
                                duplicates, as a consumer does (0: 1024) */
    opstate_progress_fn progress;
    void *progress_user;
} opstate_replay_config;

typedef struct opstate_replay_result {
    opstate_position position; /* last applied event */
    uint64_t end_seq;          /* where the replay stopped reading: the last
                                  sequence read from info at the start, or the
                                  until_seq cutoff when lower */
    uint64_t applied, filtered, poison;
    uint64_t duplicates; /* skipped: id seen within the dedup window */
} opstate_replay_result;

/* Folds the log into `into` up to the cutoffs. The end is fixed when the
   replay starts (last_seq then), so events appended meanwhile are not
   included and it never waits. Poison events are skipped and counted. */
OPSTATE_API opstate_result opstate_replay(const opstate_replay_config *cfg, opstate_kv *into,
                                          opstate_replay_result *out, opstate_error *err);

#endif /* OPSTATE_NO_MALLOC */

#ifdef __cplusplus
}
#endif

#endif /* OPSTATE_H_INCLUDED */

/* ======================================================================
   API ends here; implementation below.
   ====================================================================== */

/* >>mem ------------------------------------------------------------------
   The mem* hooks of every implementation part, the core's and the
   companions' (each companion includes this file first), whichever file
   holds which: yours (OPSTATE_MEMCPY/MEMSET/MEMCMP), else libc's, else
   under OPSTATE_NO_STDLIB built-in ones. Outside the include guard, so a
   later include with a switch on still gets them. */
#if (defined(OPSTATE_IMPLEMENTATION) || defined(OPSTATE_LMDB_IMPLEMENTATION) ||                        \
     defined(OPSTATE_NATS_IMPLEMENTATION)) && !defined(OPSTATE__MEM_INCLUDED)
#define OPSTATE__MEM_INCLUDED
#if !defined(OPSTATE_MEMCPY) || !defined(OPSTATE_MEMSET) || !defined(OPSTATE_MEMCMP)
#ifdef OPSTATE_NO_STDLIB
#if defined(__GNUC__) || defined(__clang__)
#define OPSTATE__MEM_PRIVATE static __attribute__((unused))
#else
#define OPSTATE__MEM_PRIVATE static
#endif
OPSTATE__MEM_PRIVATE void *opstate__memcpy(void *dst, const void *src, size_t n)
{
    uint8_t *d = (uint8_t *)dst;
    const uint8_t *s = (const uint8_t *)src;
    while (n--) *d++ = *s++;
    return dst;
}
OPSTATE__MEM_PRIVATE void *opstate__memset(void *dst, int c, size_t n)
{
    uint8_t *d = (uint8_t *)dst;
    while (n--) *d++ = (uint8_t)c;
    return dst;
}
OPSTATE__MEM_PRIVATE int opstate__memcmp(const void *a, const void *b, size_t n)
{
    const uint8_t *x = (const uint8_t *)a, *y = (const uint8_t *)b;
    for (; n; n--, x++, y++)
        if (*x != *y) return *x < *y ? -1 : 1;
    return 0;
}
#ifndef OPSTATE_MEMCPY
#define OPSTATE_MEMCPY opstate__memcpy
#endif
#ifndef OPSTATE_MEMSET
#define OPSTATE_MEMSET opstate__memset
#endif
#ifndef OPSTATE_MEMCMP
#define OPSTATE_MEMCMP opstate__memcmp
#endif
#else
#include <string.h>
#ifndef OPSTATE_MEMCPY
#define OPSTATE_MEMCPY memcpy
#endif
#ifndef OPSTATE_MEMSET
#define OPSTATE_MEMSET memset
#endif
#ifndef OPSTATE_MEMCMP
#define OPSTATE_MEMCMP memcmp
#endif
#endif
#endif
#endif /* >>mem */

#if defined(OPSTATE_IMPLEMENTATION) && !defined(OPSTATE_IMPLEMENTATION_INCLUDED)
#define OPSTATE_IMPLEMENTATION_INCLUDED

#if defined(__GNUC__) || defined(__clang__)
#define OPSTATE__UNUSED __attribute__((unused))
#else
#define OPSTATE__UNUSED
#endif
#define OPSTATE__PRIVATE static OPSTATE__UNUSED

/* The defaults of the configs (the consumer's and the replay's batch and
   dedup window, the consumer's flush interval). */
#define OPSTATE__DEFAULT_BATCH 256u
#define OPSTATE__DEFAULT_DEDUP_CAPACITY 1024u
#define OPSTATE__DEFAULT_FLUSH_INTERVAL_NS INT64_C(1000000000)

/* Spreads the bits of x (fresh ids' entropy). */
OPSTATE__PRIVATE uint64_t opstate__mix64(uint64_t x)
{
    x ^= x >> 32;
    x *= 0xd6e8feb86659fd93u;
    x ^= x >> 32;
    return x;
}

#ifndef OPSTATE_NO_STDLIB
#include <time.h>

/* The default clock: ns since the Unix epoch (C11's timespec_get where
   there is one, else time(): whole seconds). */
OPSTATE__PRIVATE int64_t opstate__wall_clock(void *user)
{
#if defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L && defined(TIME_UTC)
    struct timespec ts;
    (void)user;
    if (timespec_get(&ts, TIME_UTC) == TIME_UTC) return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
#else
    (void)user;
#endif
    return (int64_t)time(NULL) * 1000000000;
}
#else
#define opstate__wall_clock NULL /* no C library: no clock unless one is given */
#endif

#ifndef OPSTATE_ASSERT
#ifdef OPSTATE_NO_STDLIB
#define OPSTATE_ASSERT(c) ((void)0)
#else
#include <assert.h>
#define OPSTATE_ASSERT(c) assert(c)
#endif
#endif

/* >>bytes ---------------------------------------------------------------- */

/* Records a failure in the optional error detail and returns its code. */
OPSTATE__PRIVATE opstate_result opstate__fail(opstate_error *err, opstate_result r, size_t offset,
                                              const char *field)
{
    if (err) {
        err->result = r;
        err->offset = offset;
        err->field = field;
        err->dep_status = 0;
        err->dep_detail = 0;
    }
    return r;
}

/* >>results -------------------------------------------------------------- */

/* The n-th (from 0) of the strings packed one after another, each with its
   NUL, in list[0..size) (a string literal: size counts its own final NUL),
   or `unknown` past the last. Every function that names an enum keeps its
   names in one such array of its own, indexed by the enum's value, not in
   a table of pointers to literals: compilers put the literals of every
   such table in one shared string section, which a firmware link with
   --gc-sections keeps whole as soon as one name is used (scripts/sizes.sh
   measures it). */
OPSTATE__PRIVATE const char *opstate__nth_str(const char *list, size_t size, unsigned n, const char *unknown)
{
    size_t i = 0;
    for (; n > 0 && i + 1 < size; i++)
        if (list[i] == '\0') n--;
    return n == 0 && i + 1 < size ? list + i : unknown;
}

OPSTATE_API const char *opstate_result_str(opstate_result r)
{
#ifdef OPSTATE_NO_ERROR_STRINGS
    (void)r;
    return "";
#else
#define OPSTATE__RESULT_TEXT(name, value, msg) msg "\0"
    static const char text[] = OPSTATE_RESULT_LIST(OPSTATE__RESULT_TEXT);
#undef OPSTATE__RESULT_TEXT
    return opstate__nth_str(text, sizeof text, (unsigned)r, "unknown result");
#endif
}

OPSTATE_API int opstate_version_number(void) { return OPSTATE_VERSION_NUMBER; }

/* >>crc ------------------------------------------------------------------ */

/* The portable CRC32C (reflected Castagnoli polynomial 0x82F63B78) is one
   loop, opstate__crc32c_sw, over one of two tables:
     default            slice-by-8, 8 x 256 entries (8 KiB): eight bytes per
                        step; row 0 is the byte table, for the tail
     OPSTATE_CRC_SMALL  16 entries (64 bytes), one per 4-bit value: a byte
                        takes two steps (for flash-tight firmware)
   Both give the same checksums. `crc` is always the raw (inverted) state. */
#ifndef OPSTATE_CRC_SMALL
static const uint32_t opstate__crc_table[8][256] = {
    {
        0x00000000u, 0xf26b8303u, 0xe13b70f7u, 0x1350f3f4u, 0xc79a971fu, 0x35f1141cu,
        0x26a1e7e8u, 0xd4ca64ebu, 0x8ad958cfu, 0x78b2dbccu, 0x6be22838u, 0x9989ab3bu,
        0x4d43cfd0u, 0xbf284cd3u, 0xac78bf27u, 0x5e133c24u, 0x105ec76fu, 0xe235446cu,
        0xf165b798u, 0x030e349bu, 0xd7c45070u, 0x25afd373u, 0x36ff2087u, 0xc494a384u,
        0x9a879fa0u, 0x68ec1ca3u, 0x7bbcef57u, 0x89d76c54u, 0x5d1d08bfu, 0xaf768bbcu,
        0xbc267848u, 0x4e4dfb4bu, 0x20bd8edeu, 0xd2d60dddu, 0xc186fe29u, 0x33ed7d2au,
        0xe72719c1u, 0x154c9ac2u, 0x061c6936u, 0xf477ea35u, 0xaa64d611u, 0x580f5512u,
        0x4b5fa6e6u, 0xb93425e5u, 0x6dfe410eu, 0x9f95c20du, 0x8cc531f9u, 0x7eaeb2fau,
        0x30e349b1u, 0xc288cab2u, 0xd1d83946u, 0x23b3ba45u, 0xf779deaeu, 0x05125dadu,
        0x1642ae59u, 0xe4292d5au, 0xba3a117eu, 0x4851927du, 0x5b016189u, 0xa96ae28au,
        0x7da08661u, 0x8fcb0562u, 0x9c9bf696u, 0x6ef07595u, 0x417b1dbcu, 0xb3109ebfu,
        0xa0406d4bu, 0x522bee48u, 0x86e18aa3u, 0x748a09a0u, 0x67dafa54u, 0x95b17957u,
        0xcba24573u, 0x39c9c670u, 0x2a993584u, 0xd8f2b687u, 0x0c38d26cu, 0xfe53516fu,
        0xed03a29bu, 0x1f682198u, 0x5125dad3u, 0xa34e59d0u, 0xb01eaa24u, 0x42752927u,
        0x96bf4dccu, 0x64d4cecfu, 0x77843d3bu, 0x85efbe38u, 0xdbfc821cu, 0x2997011fu,
        0x3ac7f2ebu, 0xc8ac71e8u, 0x1c661503u, 0xee0d9600u, 0xfd5d65f4u, 0x0f36e6f7u,
        0x61c69362u, 0x93ad1061u, 0x80fde395u, 0x72966096u, 0xa65c047du, 0x5437877eu,
        0x4767748au, 0xb50cf789u, 0xeb1fcbadu, 0x197448aeu, 0x0a24bb5au, 0xf84f3859u,
        0x2c855cb2u, 0xdeeedfb1u, 0xcdbe2c45u, 0x3fd5af46u, 0x7198540du, 0x83f3d70eu,
        0x90a324fau, 0x62c8a7f9u, 0xb602c312u, 0x44694011u, 0x5739b3e5u, 0xa55230e6u,
        0xfb410cc2u, 0x092a8fc1u, 0x1a7a7c35u, 0xe811ff36u, 0x3cdb9bddu, 0xceb018deu,
        0xdde0eb2au, 0x2f8b6829u, 0x82f63b78u, 0x709db87bu, 0x63cd4b8fu, 0x91a6c88cu,
        0x456cac67u, 0xb7072f64u, 0xa457dc90u, 0x563c5f93u, 0x082f63b7u, 0xfa44e0b4u,
        0xe9141340u, 0x1b7f9043u, 0xcfb5f4a8u, 0x3dde77abu, 0x2e8e845fu, 0xdce5075cu,
        0x92a8fc17u, 0x60c37f14u, 0x73938ce0u, 0x81f80fe3u, 0x55326b08u, 0xa759e80bu,
        0xb4091bffu, 0x466298fcu, 0x1871a4d8u, 0xea1a27dbu, 0xf94ad42fu, 0x0b21572cu,
        0xdfeb33c7u, 0x2d80b0c4u, 0x3ed04330u, 0xccbbc033u, 0xa24bb5a6u, 0x502036a5u,
        0x4370c551u, 0xb11b4652u, 0x65d122b9u, 0x97baa1bau, 0x84ea524eu, 0x7681d14du,
        0x2892ed69u, 0xdaf96e6au, 0xc9a99d9eu, 0x3bc21e9du, 0xef087a76u, 0x1d63f975u,
        0x0e330a81u, 0xfc588982u, 0xb21572c9u, 0x407ef1cau, 0x532e023eu, 0xa145813du,
        0x758fe5d6u, 0x87e466d5u, 0x94b49521u, 0x66df1622u, 0x38cc2a06u, 0xcaa7a905u,
        0xd9f75af1u, 0x2b9cd9f2u, 0xff56bd19u, 0x0d3d3e1au, 0x1e6dcdeeu, 0xec064eedu,
        0xc38d26c4u, 0x31e6a5c7u, 0x22b65633u, 0xd0ddd530u, 0x0417b1dbu, 0xf67c32d8u,
        0xe52cc12cu, 0x1747422fu, 0x49547e0bu, 0xbb3ffd08u, 0xa86f0efcu, 0x5a048dffu,
        0x8ecee914u, 0x7ca56a17u, 0x6ff599e3u, 0x9d9e1ae0u, 0xd3d3e1abu, 0x21b862a8u,
        0x32e8915cu, 0xc083125fu, 0x144976b4u, 0xe622f5b7u, 0xf5720643u, 0x07198540u,
        0x590ab964u, 0xab613a67u, 0xb831c993u, 0x4a5a4a90u, 0x9e902e7bu, 0x6cfbad78u,
        0x7fab5e8cu, 0x8dc0dd8fu, 0xe330a81au, 0x115b2b19u, 0x020bd8edu, 0xf0605beeu,
        0x24aa3f05u, 0xd6c1bc06u, 0xc5914ff2u, 0x37faccf1u, 0x69e9f0d5u, 0x9b8273d6u,
        0x88d28022u, 0x7ab90321u, 0xae7367cau, 0x5c18e4c9u, 0x4f48173du, 0xbd23943eu,
        0xf36e6f75u, 0x0105ec76u, 0x12551f82u, 0xe03e9c81u, 0x34f4f86au, 0xc69f7b69u,
        0xd5cf889du, 0x27a40b9eu, 0x79b737bau, 0x8bdcb4b9u, 0x988c474du, 0x6ae7c44eu,
        0xbe2da0a5u, 0x4c4623a6u, 0x5f16d052u, 0xad7d5351u,
    },
    {
        0x00000000u, 0x13a29877u, 0x274530eeu, 0x34e7a899u, 0x4e8a61dcu, 0x5d28f9abu,
        0x69cf5132u, 0x7a6dc945u, 0x9d14c3b8u, 0x8eb65bcfu, 0xba51f356u, 0xa9f36b21u,
        0xd39ea264u, 0xc03c3a13u, 0xf4db928au, 0xe7790afdu, 0x3fc5f181u, 0x2c6769f6u,
        0x1880c16fu, 0x0b225918u, 0x714f905du, 0x62ed082au, 0x560aa0b3u, 0x45a838c4u,
        0xa2d13239u, 0xb173aa4eu, 0x859402d7u, 0x96369aa0u, 0xec5b53e5u, 0xfff9cb92u,
        0xcb1e630bu, 0xd8bcfb7cu, 0x7f8be302u, 0x6c297b75u, 0x58ced3ecu, 0x4b6c4b9bu,
        0x310182deu, 0x22a31aa9u, 0x1644b230u, 0x05e62a47u, 0xe29f20bau, 0xf13db8cdu,
        0xc5da1054u, 0xd6788823u, 0xac154166u, 0xbfb7d911u, 0x8b507188u, 0x98f2e9ffu,
        0x404e1283u, 0x53ec8af4u, 0x670b226du, 0x74a9ba1au, 0x0ec4735fu, 0x1d66eb28u,
        0x298143b1u, 0x3a23dbc6u, 0xdd5ad13bu, 0xcef8494cu, 0xfa1fe1d5u, 0xe9bd79a2u,
        0x93d0b0e7u, 0x80722890u, 0xb4958009u, 0xa737187eu, 0xff17c604u, 0xecb55e73u,
        0xd852f6eau, 0xcbf06e9du, 0xb19da7d8u, 0xa23f3fafu, 0x96d89736u, 0x857a0f41u,
        0x620305bcu, 0x71a19dcbu, 0x45463552u, 0x56e4ad25u, 0x2c896460u, 0x3f2bfc17u,
        0x0bcc548eu, 0x186eccf9u, 0xc0d23785u, 0xd370aff2u, 0xe797076bu, 0xf4359f1cu,
        0x8e585659u, 0x9dface2eu, 0xa91d66b7u, 0xbabffec0u, 0x5dc6f43du, 0x4e646c4au,
        0x7a83c4d3u, 0x69215ca4u, 0x134c95e1u, 0x00ee0d96u, 0x3409a50fu, 0x27ab3d78u,
        0x809c2506u, 0x933ebd71u, 0xa7d915e8u, 0xb47b8d9fu, 0xce1644dau, 0xddb4dcadu,
        0xe9537434u, 0xfaf1ec43u, 0x1d88e6beu, 0x0e2a7ec9u, 0x3acdd650u, 0x296f4e27u,
        0x53028762u, 0x40a01f15u, 0x7447b78cu, 0x67e52ffbu, 0xbf59d487u, 0xacfb4cf0u,
        0x981ce469u, 0x8bbe7c1eu, 0xf1d3b55bu, 0xe2712d2cu, 0xd69685b5u, 0xc5341dc2u,
        0x224d173fu, 0x31ef8f48u, 0x050827d1u, 0x16aabfa6u, 0x6cc776e3u, 0x7f65ee94u,
        0x4b82460du, 0x5820de7au, 0xfbc3faf9u, 0xe861628eu, 0xdc86ca17u, 0xcf245260u,
        0xb5499b25u, 0xa6eb0352u, 0x920cabcbu, 0x81ae33bcu, 0x66d73941u, 0x7575a136u,
        0x419209afu, 0x523091d8u, 0x285d589du, 0x3bffc0eau, 0x0f186873u, 0x1cbaf004u,
        0xc4060b78u, 0xd7a4930fu, 0xe3433b96u, 0xf0e1a3e1u, 0x8a8c6aa4u, 0x992ef2d3u,
        0xadc95a4au, 0xbe6bc23du, 0x5912c8c0u, 0x4ab050b7u, 0x7e57f82eu, 0x6df56059u,
        0x1798a91cu, 0x043a316bu, 0x30dd99f2u, 0x237f0185u, 0x844819fbu, 0x97ea818cu,
        0xa30d2915u, 0xb0afb162u, 0xcac27827u, 0xd960e050u, 0xed8748c9u, 0xfe25d0beu,
        0x195cda43u, 0x0afe4234u, 0x3e19eaadu, 0x2dbb72dau, 0x57d6bb9fu, 0x447423e8u,
        0x70938b71u, 0x63311306u, 0xbb8de87au, 0xa82f700du, 0x9cc8d894u, 0x8f6a40e3u,
        0xf50789a6u, 0xe6a511d1u, 0xd242b948u, 0xc1e0213fu, 0x26992bc2u, 0x353bb3b5u,
        0x01dc1b2cu, 0x127e835bu, 0x68134a1eu, 0x7bb1d269u, 0x4f567af0u, 0x5cf4e287u,
        0x04d43cfdu, 0x1776a48au, 0x23910c13u, 0x30339464u, 0x4a5e5d21u, 0x59fcc556u,
        0x6d1b6dcfu, 0x7eb9f5b8u, 0x99c0ff45u, 0x8a626732u, 0xbe85cfabu, 0xad2757dcu,
        0xd74a9e99u, 0xc4e806eeu, 0xf00fae77u, 0xe3ad3600u, 0x3b11cd7cu, 0x28b3550bu,
        0x1c54fd92u, 0x0ff665e5u, 0x759baca0u, 0x663934d7u, 0x52de9c4eu, 0x417c0439u,
        0xa6050ec4u, 0xb5a796b3u, 0x81403e2au, 0x92e2a65du, 0xe88f6f18u, 0xfb2df76fu,
        0xcfca5ff6u, 0xdc68c781u, 0x7b5fdfffu, 0x68fd4788u, 0x5c1aef11u, 0x4fb87766u,
        0x35d5be23u, 0x26772654u, 0x12908ecdu, 0x013216bau, 0xe64b1c47u, 0xf5e98430u,
        0xc10e2ca9u, 0xd2acb4deu, 0xa8c17d9bu, 0xbb63e5ecu, 0x8f844d75u, 0x9c26d502u,
        0x449a2e7eu, 0x5738b609u, 0x63df1e90u, 0x707d86e7u, 0x0a104fa2u, 0x19b2d7d5u,
        0x2d557f4cu, 0x3ef7e73bu, 0xd98eedc6u, 0xca2c75b1u, 0xfecbdd28u, 0xed69455fu,
        0x97048c1au, 0x84a6146du, 0xb041bcf4u, 0xa3e32483u,
    },
    {
        0x00000000u, 0xa541927eu, 0x4f6f520du, 0xea2ec073u, 0x9edea41au, 0x3b9f3664u,
        0xd1b1f617u, 0x74f06469u, 0x38513ec5u, 0x9d10acbbu, 0x773e6cc8u, 0xd27ffeb6u,
        0xa68f9adfu, 0x03ce08a1u, 0xe9e0c8d2u, 0x4ca15aacu, 0x70a27d8au, 0xd5e3eff4u,
        0x3fcd2f87u, 0x9a8cbdf9u, 0xee7cd990u, 0x4b3d4beeu, 0xa1138b9du, 0x045219e3u,
        0x48f3434fu, 0xedb2d131u, 0x079c1142u, 0xa2dd833cu, 0xd62de755u, 0x736c752bu,
        0x9942b558u, 0x3c032726u, 0xe144fb14u, 0x4405696au, 0xae2ba919u, 0x0b6a3b67u,
        0x7f9a5f0eu, 0xdadbcd70u, 0x30f50d03u, 0x95b49f7du, 0xd915c5d1u, 0x7c5457afu,
        0x967a97dcu, 0x333b05a2u, 0x47cb61cbu, 0xe28af3b5u, 0x08a433c6u, 0xade5a1b8u,
        0x91e6869eu, 0x34a714e0u, 0xde89d493u, 0x7bc846edu, 0x0f382284u, 0xaa79b0fau,
        0x40577089u, 0xe516e2f7u, 0xa9b7b85bu, 0x0cf62a25u, 0xe6d8ea56u, 0x43997828u,
        0x37691c41u, 0x92288e3fu, 0x78064e4cu, 0xdd47dc32u, 0xc76580d9u, 0x622412a7u,
        0x880ad2d4u, 0x2d4b40aau, 0x59bb24c3u, 0xfcfab6bdu, 0x16d476ceu, 0xb395e4b0u,
        0xff34be1cu, 0x5a752c62u, 0xb05bec11u, 0x151a7e6fu, 0x61ea1a06u, 0xc4ab8878u,
        0x2e85480bu, 0x8bc4da75u, 0xb7c7fd53u, 0x12866f2du, 0xf8a8af5eu, 0x5de93d20u,
        0x29195949u, 0x8c58cb37u, 0x66760b44u, 0xc337993au, 0x8f96c396u, 0x2ad751e8u,
        0xc0f9919bu, 0x65b803e5u, 0x1148678cu, 0xb409f5f2u, 0x5e273581u, 0xfb66a7ffu,
        0x26217bcdu, 0x8360e9b3u, 0x694e29c0u, 0xcc0fbbbeu, 0xb8ffdfd7u, 0x1dbe4da9u,
        0xf7908ddau, 0x52d11fa4u, 0x1e704508u, 0xbb31d776u, 0x511f1705u, 0xf45e857bu,
        0x80aee112u, 0x25ef736cu, 0xcfc1b31fu, 0x6a802161u, 0x56830647u, 0xf3c29439u,
        0x19ec544au, 0xbcadc634u, 0xc85da25du, 0x6d1c3023u, 0x8732f050u, 0x2273622eu,
        0x6ed23882u, 0xcb93aafcu, 0x21bd6a8fu, 0x84fcf8f1u, 0xf00c9c98u, 0x554d0ee6u,
        0xbf63ce95u, 0x1a225cebu, 0x8b277743u, 0x2e66e53du, 0xc448254eu, 0x6109b730u,
        0x15f9d359u, 0xb0b84127u, 0x5a968154u, 0xffd7132au, 0xb3764986u, 0x1637dbf8u,
        0xfc191b8bu, 0x595889f5u, 0x2da8ed9cu, 0x88e97fe2u, 0x62c7bf91u, 0xc7862defu,
        0xfb850ac9u, 0x5ec498b7u, 0xb4ea58c4u, 0x11abcabau, 0x655baed3u, 0xc01a3cadu,
        0x2a34fcdeu, 0x8f756ea0u, 0xc3d4340cu, 0x6695a672u, 0x8cbb6601u, 0x29faf47fu,
        0x5d0a9016u, 0xf84b0268u, 0x1265c21bu, 0xb7245065u, 0x6a638c57u, 0xcf221e29u,
        0x250cde5au, 0x804d4c24u, 0xf4bd284du, 0x51fcba33u, 0xbbd27a40u, 0x1e93e83eu,
        0x5232b292u, 0xf77320ecu, 0x1d5de09fu, 0xb81c72e1u, 0xccec1688u, 0x69ad84f6u,
        0x83834485u, 0x26c2d6fbu, 0x1ac1f1ddu, 0xbf8063a3u, 0x55aea3d0u, 0xf0ef31aeu,
        0x841f55c7u, 0x215ec7b9u, 0xcb7007cau, 0x6e3195b4u, 0x2290cf18u, 0x87d15d66u,
        0x6dff9d15u, 0xc8be0f6bu, 0xbc4e6b02u, 0x190ff97cu, 0xf321390fu, 0x5660ab71u,
        0x4c42f79au, 0xe90365e4u, 0x032da597u, 0xa66c37e9u, 0xd29c5380u, 0x77ddc1feu,
        0x9df3018du, 0x38b293f3u, 0x7413c95fu, 0xd1525b21u, 0x3b7c9b52u, 0x9e3d092cu,
        0xeacd6d45u, 0x4f8cff3bu, 0xa5a23f48u, 0x00e3ad36u, 0x3ce08a10u, 0x99a1186eu,
        0x738fd81du, 0xd6ce4a63u, 0xa23e2e0au, 0x077fbc74u, 0xed517c07u, 0x4810ee79u,
        0x04b1b4d5u, 0xa1f026abu, 0x4bdee6d8u, 0xee9f74a6u, 0x9a6f10cfu, 0x3f2e82b1u,
        0xd50042c2u, 0x7041d0bcu, 0xad060c8eu, 0x08479ef0u, 0xe2695e83u, 0x4728ccfdu,
        0x33d8a894u, 0x96993aeau, 0x7cb7fa99u, 0xd9f668e7u, 0x9557324bu, 0x3016a035u,
        0xda386046u, 0x7f79f238u, 0x0b899651u, 0xaec8042fu, 0x44e6c45cu, 0xe1a75622u,
        0xdda47104u, 0x78e5e37au, 0x92cb2309u, 0x378ab177u, 0x437ad51eu, 0xe63b4760u,
        0x0c158713u, 0xa954156du, 0xe5f54fc1u, 0x40b4ddbfu, 0xaa9a1dccu, 0x0fdb8fb2u,
        0x7b2bebdbu, 0xde6a79a5u, 0x3444b9d6u, 0x91052ba8u,
    },
    {
        0x00000000u, 0xdd45aab8u, 0xbf672381u, 0x62228939u, 0x7b2231f3u, 0xa6679b4bu,
        0xc4451272u, 0x1900b8cau, 0xf64463e6u, 0x2b01c95eu, 0x49234067u, 0x9466eadfu,
        0x8d665215u, 0x5023f8adu, 0x32017194u, 0xef44db2cu, 0xe964b13du, 0x34211b85u,
        0x560392bcu, 0x8b463804u, 0x924680ceu, 0x4f032a76u, 0x2d21a34fu, 0xf06409f7u,
        0x1f20d2dbu, 0xc2657863u, 0xa047f15au, 0x7d025be2u, 0x6402e328u, 0xb9474990u,
        0xdb65c0a9u, 0x06206a11u, 0xd725148bu, 0x0a60be33u, 0x6842370au, 0xb5079db2u,
        0xac072578u, 0x71428fc0u, 0x136006f9u, 0xce25ac41u, 0x2161776du, 0xfc24ddd5u,
        0x9e0654ecu, 0x4343fe54u, 0x5a43469eu, 0x8706ec26u, 0xe524651fu, 0x3861cfa7u,
        0x3e41a5b6u, 0xe3040f0eu, 0x81268637u, 0x5c632c8fu, 0x45639445u, 0x98263efdu,
        0xfa04b7c4u, 0x27411d7cu, 0xc805c650u, 0x15406ce8u, 0x7762e5d1u, 0xaa274f69u,
        0xb327f7a3u, 0x6e625d1bu, 0x0c40d422u, 0xd1057e9au, 0xaba65fe7u, 0x76e3f55fu,
        0x14c17c66u, 0xc984d6deu, 0xd0846e14u, 0x0dc1c4acu, 0x6fe34d95u, 0xb2a6e72du,
        0x5de23c01u, 0x80a796b9u, 0xe2851f80u, 0x3fc0b538u, 0x26c00df2u, 0xfb85a74au,
        0x99a72e73u, 0x44e284cbu, 0x42c2eedau, 0x9f874462u, 0xfda5cd5bu, 0x20e067e3u,
        0x39e0df29u, 0xe4a57591u, 0x8687fca8u, 0x5bc25610u, 0xb4868d3cu, 0x69c32784u,
        0x0be1aebdu, 0xd6a40405u, 0xcfa4bccfu, 0x12e11677u, 0x70c39f4eu, 0xad8635f6u,
        0x7c834b6cu, 0xa1c6e1d4u, 0xc3e468edu, 0x1ea1c255u, 0x07a17a9fu, 0xdae4d027u,
        0xb8c6591eu, 0x6583f3a6u, 0x8ac7288au, 0x57828232u, 0x35a00b0bu, 0xe8e5a1b3u,
        0xf1e51979u, 0x2ca0b3c1u, 0x4e823af8u, 0x93c79040u, 0x95e7fa51u, 0x48a250e9u,
        0x2a80d9d0u, 0xf7c57368u, 0xeec5cba2u, 0x3380611au, 0x51a2e823u, 0x8ce7429bu,
        0x63a399b7u, 0xbee6330fu, 0xdcc4ba36u, 0x0181108eu, 0x1881a844u, 0xc5c402fcu,
        0xa7e68bc5u, 0x7aa3217du, 0x52a0c93fu, 0x8fe56387u, 0xedc7eabeu, 0x30824006u,
        0x2982f8ccu, 0xf4c75274u, 0x96e5db4du, 0x4ba071f5u, 0xa4e4aad9u, 0x79a10061u,
        0x1b838958u, 0xc6c623e0u, 0xdfc69b2au, 0x02833192u, 0x60a1b8abu, 0xbde41213u,
        0xbbc47802u, 0x6681d2bau, 0x04a35b83u, 0xd9e6f13bu, 0xc0e649f1u, 0x1da3e349u,
        0x7f816a70u, 0xa2c4c0c8u, 0x4d801be4u, 0x90c5b15cu, 0xf2e73865u, 0x2fa292ddu,
        0x36a22a17u, 0xebe780afu, 0x89c50996u, 0x5480a32eu, 0x8585ddb4u, 0x58c0770cu,
        0x3ae2fe35u, 0xe7a7548du, 0xfea7ec47u, 0x23e246ffu, 0x41c0cfc6u, 0x9c85657eu,
        0x73c1be52u, 0xae8414eau, 0xcca69dd3u, 0x11e3376bu, 0x08e38fa1u, 0xd5a62519u,
        0xb784ac20u, 0x6ac10698u, 0x6ce16c89u, 0xb1a4c631u, 0xd3864f08u, 0x0ec3e5b0u,
        0x17c35d7au, 0xca86f7c2u, 0xa8a47efbu, 0x75e1d443u, 0x9aa50f6fu, 0x47e0a5d7u,
        0x25c22ceeu, 0xf8878656u, 0xe1873e9cu, 0x3cc29424u, 0x5ee01d1du, 0x83a5b7a5u,
        0xf90696d8u, 0x24433c60u, 0x4661b559u, 0x9b241fe1u, 0x8224a72bu, 0x5f610d93u,
        0x3d4384aau, 0xe0062e12u, 0x0f42f53eu, 0xd2075f86u, 0xb025d6bfu, 0x6d607c07u,
        0x7460c4cdu, 0xa9256e75u, 0xcb07e74cu, 0x16424df4u, 0x106227e5u, 0xcd278d5du,
        0xaf050464u, 0x7240aedcu, 0x6b401616u, 0xb605bcaeu, 0xd4273597u, 0x09629f2fu,
        0xe6264403u, 0x3b63eebbu, 0x59416782u, 0x8404cd3au, 0x9d0475f0u, 0x4041df48u,
        0x22635671u, 0xff26fcc9u, 0x2e238253u, 0xf36628ebu, 0x9144a1d2u, 0x4c010b6au,
        0x5501b3a0u, 0x88441918u, 0xea669021u, 0x37233a99u, 0xd867e1b5u, 0x05224b0du,
        0x6700c234u, 0xba45688cu, 0xa345d046u, 0x7e007afeu, 0x1c22f3c7u, 0xc167597fu,
        0xc747336eu, 0x1a0299d6u, 0x782010efu, 0xa565ba57u, 0xbc65029du, 0x6120a825u,
        0x0302211cu, 0xde478ba4u, 0x31035088u, 0xec46fa30u, 0x8e647309u, 0x5321d9b1u,
        0x4a21617bu, 0x9764cbc3u, 0xf54642fau, 0x2803e842u,
    },
    {
        0x00000000u, 0x38116facu, 0x7022df58u, 0x4833b0f4u, 0xe045beb0u, 0xd854d11cu,
        0x906761e8u, 0xa8760e44u, 0xc5670b91u, 0xfd76643du, 0xb545d4c9u, 0x8d54bb65u,
        0x2522b521u, 0x1d33da8du, 0x55006a79u, 0x6d1105d5u, 0x8f2261d3u, 0xb7330e7fu,
        0xff00be8bu, 0xc711d127u, 0x6f67df63u, 0x5776b0cfu, 0x1f45003bu, 0x27546f97u,
        0x4a456a42u, 0x725405eeu, 0x3a67b51au, 0x0276dab6u, 0xaa00d4f2u, 0x9211bb5eu,
        0xda220baau, 0xe2336406u, 0x1ba8b557u, 0x23b9dafbu, 0x6b8a6a0fu, 0x539b05a3u,
        0xfbed0be7u, 0xc3fc644bu, 0x8bcfd4bfu, 0xb3debb13u, 0xdecfbec6u, 0xe6ded16au,
        0xaeed619eu, 0x96fc0e32u, 0x3e8a0076u, 0x069b6fdau, 0x4ea8df2eu, 0x76b9b082u,
        0x948ad484u, 0xac9bbb28u, 0xe4a80bdcu, 0xdcb96470u, 0x74cf6a34u, 0x4cde0598u,
        0x04edb56cu, 0x3cfcdac0u, 0x51eddf15u, 0x69fcb0b9u, 0x21cf004du, 0x19de6fe1u,
        0xb1a861a5u, 0x89b90e09u, 0xc18abefdu, 0xf99bd151u, 0x37516aaeu, 0x0f400502u,
        0x4773b5f6u, 0x7f62da5au, 0xd714d41eu, 0xef05bbb2u, 0xa7360b46u, 0x9f2764eau,
        0xf236613fu, 0xca270e93u, 0x8214be67u, 0xba05d1cbu, 0x1273df8fu, 0x2a62b023u,
        0x625100d7u, 0x5a406f7bu, 0xb8730b7du, 0x806264d1u, 0xc851d425u, 0xf040bb89u,
        0x5836b5cdu, 0x6027da61u, 0x28146a95u, 0x10050539u, 0x7d1400ecu, 0x45056f40u,
        0x0d36dfb4u, 0x3527b018u, 0x9d51be5cu, 0xa540d1f0u, 0xed736104u, 0xd5620ea8u,
        0x2cf9dff9u, 0x14e8b055u, 0x5cdb00a1u, 0x64ca6f0du, 0xccbc6149u, 0xf4ad0ee5u,
        0xbc9ebe11u, 0x848fd1bdu, 0xe99ed468u, 0xd18fbbc4u, 0x99bc0b30u, 0xa1ad649cu,
        0x09db6ad8u, 0x31ca0574u, 0x79f9b580u, 0x41e8da2cu, 0xa3dbbe2au, 0x9bcad186u,
        0xd3f96172u, 0xebe80edeu, 0x439e009au, 0x7b8f6f36u, 0x33bcdfc2u, 0x0badb06eu,
        0x66bcb5bbu, 0x5eadda17u, 0x169e6ae3u, 0x2e8f054fu, 0x86f90b0bu, 0xbee864a7u,
        0xf6dbd453u, 0xcecabbffu, 0x6ea2d55cu, 0x56b3baf0u, 0x1e800a04u, 0x269165a8u,
        0x8ee76becu, 0xb6f60440u, 0xfec5b4b4u, 0xc6d4db18u, 0xabc5decdu, 0x93d4b161u,
        0xdbe70195u, 0xe3f66e39u, 0x4b80607du, 0x73910fd1u, 0x3ba2bf25u, 0x03b3d089u,
        0xe180b48fu, 0xd991db23u, 0x91a26bd7u, 0xa9b3047bu, 0x01c50a3fu, 0x39d46593u,
        0x71e7d567u, 0x49f6bacbu, 0x24e7bf1eu, 0x1cf6d0b2u, 0x54c56046u, 0x6cd40feau,
        0xc4a201aeu, 0xfcb36e02u, 0xb480def6u, 0x8c91b15au, 0x750a600bu, 0x4d1b0fa7u,
        0x0528bf53u, 0x3d39d0ffu, 0x954fdebbu, 0xad5eb117u, 0xe56d01e3u, 0xdd7c6e4fu,
        0xb06d6b9au, 0x887c0436u, 0xc04fb4c2u, 0xf85edb6eu, 0x5028d52au, 0x6839ba86u,
        0x200a0a72u, 0x181b65deu, 0xfa2801d8u, 0xc2396e74u, 0x8a0ade80u, 0xb21bb12cu,
        0x1a6dbf68u, 0x227cd0c4u, 0x6a4f6030u, 0x525e0f9cu, 0x3f4f0a49u, 0x075e65e5u,
        0x4f6dd511u, 0x777cbabdu, 0xdf0ab4f9u, 0xe71bdb55u, 0xaf286ba1u, 0x9739040du,
        0x59f3bff2u, 0x61e2d05eu, 0x29d160aau, 0x11c00f06u, 0xb9b60142u, 0x81a76eeeu,
        0xc994de1au, 0xf185b1b6u, 0x9c94b463u, 0xa485dbcfu, 0xecb66b3bu, 0xd4a70497u,
        0x7cd10ad3u, 0x44c0657fu, 0x0cf3d58bu, 0x34e2ba27u, 0xd6d1de21u, 0xeec0b18du,
        0xa6f30179u, 0x9ee26ed5u, 0x36946091u, 0x0e850f3du, 0x46b6bfc9u, 0x7ea7d065u,
        0x13b6d5b0u, 0x2ba7ba1cu, 0x63940ae8u, 0x5b856544u, 0xf3f36b00u, 0xcbe204acu,
        0x83d1b458u, 0xbbc0dbf4u, 0x425b0aa5u, 0x7a4a6509u, 0x3279d5fdu, 0x0a68ba51u,
        0xa21eb415u, 0x9a0fdbb9u, 0xd23c6b4du, 0xea2d04e1u, 0x873c0134u, 0xbf2d6e98u,
        0xf71ede6cu, 0xcf0fb1c0u, 0x6779bf84u, 0x5f68d028u, 0x175b60dcu, 0x2f4a0f70u,
        0xcd796b76u, 0xf56804dau, 0xbd5bb42eu, 0x854adb82u, 0x2d3cd5c6u, 0x152dba6au,
        0x5d1e0a9eu, 0x650f6532u, 0x081e60e7u, 0x300f0f4bu, 0x783cbfbfu, 0x402dd013u,
        0xe85bde57u, 0xd04ab1fbu, 0x9879010fu, 0xa0686ea3u,
    },
    {
        0x00000000u, 0xef306b19u, 0xdb8ca0c3u, 0x34bccbdau, 0xb2f53777u, 0x5dc55c6eu,
        0x697997b4u, 0x8649fcadu, 0x6006181fu, 0x8f367306u, 0xbb8ab8dcu, 0x54bad3c5u,
        0xd2f32f68u, 0x3dc34471u, 0x097f8fabu, 0xe64fe4b2u, 0xc00c303eu, 0x2f3c5b27u,
        0x1b8090fdu, 0xf4b0fbe4u, 0x72f90749u, 0x9dc96c50u, 0xa975a78au, 0x4645cc93u,
        0xa00a2821u, 0x4f3a4338u, 0x7b8688e2u, 0x94b6e3fbu, 0x12ff1f56u, 0xfdcf744fu,
        0xc973bf95u, 0x2643d48cu, 0x85f4168du, 0x6ac47d94u, 0x5e78b64eu, 0xb148dd57u,
        0x370121fau, 0xd8314ae3u, 0xec8d8139u, 0x03bdea20u, 0xe5f20e92u, 0x0ac2658bu,
        0x3e7eae51u, 0xd14ec548u, 0x570739e5u, 0xb83752fcu, 0x8c8b9926u, 0x63bbf23fu,
        0x45f826b3u, 0xaac84daau, 0x9e748670u, 0x7144ed69u, 0xf70d11c4u, 0x183d7addu,
        0x2c81b107u, 0xc3b1da1eu, 0x25fe3eacu, 0xcace55b5u, 0xfe729e6fu, 0x1142f576u,
        0x970b09dbu, 0x783b62c2u, 0x4c87a918u, 0xa3b7c201u, 0x0e045bebu, 0xe13430f2u,
        0xd588fb28u, 0x3ab89031u, 0xbcf16c9cu, 0x53c10785u, 0x677dcc5fu, 0x884da746u,
        0x6e0243f4u, 0x813228edu, 0xb58ee337u, 0x5abe882eu, 0xdcf77483u, 0x33c71f9au,
        0x077bd440u, 0xe84bbf59u, 0xce086bd5u, 0x213800ccu, 0x1584cb16u, 0xfab4a00fu,
        0x7cfd5ca2u, 0x93cd37bbu, 0xa771fc61u, 0x48419778u, 0xae0e73cau, 0x413e18d3u,
        0x7582d309u, 0x9ab2b810u, 0x1cfb44bdu, 0xf3cb2fa4u, 0xc777e47eu, 0x28478f67u,
        0x8bf04d66u, 0x64c0267fu, 0x507ceda5u, 0xbf4c86bcu, 0x39057a11u, 0xd6351108u,
        0xe289dad2u, 0x0db9b1cbu, 0xebf65579u, 0x04c63e60u, 0x307af5bau, 0xdf4a9ea3u,
        0x5903620eu, 0xb6330917u, 0x828fc2cdu, 0x6dbfa9d4u, 0x4bfc7d58u, 0xa4cc1641u,
        0x9070dd9bu, 0x7f40b682u, 0xf9094a2fu, 0x16392136u, 0x2285eaecu, 0xcdb581f5u,
        0x2bfa6547u, 0xc4ca0e5eu, 0xf076c584u, 0x1f46ae9du, 0x990f5230u, 0x763f3929u,
        0x4283f2f3u, 0xadb399eau, 0x1c08b7d6u, 0xf338dccfu, 0xc7841715u, 0x28b47c0cu,
        0xaefd80a1u, 0x41cdebb8u, 0x75712062u, 0x9a414b7bu, 0x7c0eafc9u, 0x933ec4d0u,
        0xa7820f0au, 0x48b26413u, 0xcefb98beu, 0x21cbf3a7u, 0x1577387du, 0xfa475364u,
        0xdc0487e8u, 0x3334ecf1u, 0x0788272bu, 0xe8b84c32u, 0x6ef1b09fu, 0x81c1db86u,
        0xb57d105cu, 0x5a4d7b45u, 0xbc029ff7u, 0x5332f4eeu, 0x678e3f34u, 0x88be542du,
        0x0ef7a880u, 0xe1c7c399u, 0xd57b0843u, 0x3a4b635au, 0x99fca15bu, 0x76ccca42u,
        0x42700198u, 0xad406a81u, 0x2b09962cu, 0xc439fd35u, 0xf08536efu, 0x1fb55df6u,
        0xf9fab944u, 0x16cad25du, 0x22761987u, 0xcd46729eu, 0x4b0f8e33u, 0xa43fe52au,
        0x90832ef0u, 0x7fb345e9u, 0x59f09165u, 0xb6c0fa7cu, 0x827c31a6u, 0x6d4c5abfu,
        0xeb05a612u, 0x0435cd0bu, 0x308906d1u, 0xdfb96dc8u, 0x39f6897au, 0xd6c6e263u,
        0xe27a29b9u, 0x0d4a42a0u, 0x8b03be0du, 0x6433d514u, 0x508f1eceu, 0xbfbf75d7u,
        0x120cec3du, 0xfd3c8724u, 0xc9804cfeu, 0x26b027e7u, 0xa0f9db4au, 0x4fc9b053u,
        0x7b757b89u, 0x94451090u, 0x720af422u, 0x9d3a9f3bu, 0xa98654e1u, 0x46b63ff8u,
        0xc0ffc355u, 0x2fcfa84cu, 0x1b736396u, 0xf443088fu, 0xd200dc03u, 0x3d30b71au,
        0x098c7cc0u, 0xe6bc17d9u, 0x60f5eb74u, 0x8fc5806du, 0xbb794bb7u, 0x544920aeu,
        0xb206c41cu, 0x5d36af05u, 0x698a64dfu, 0x86ba0fc6u, 0x00f3f36bu, 0xefc39872u,
        0xdb7f53a8u, 0x344f38b1u, 0x97f8fab0u, 0x78c891a9u, 0x4c745a73u, 0xa344316au,
        0x250dcdc7u, 0xca3da6deu, 0xfe816d04u, 0x11b1061du, 0xf7fee2afu, 0x18ce89b6u,
        0x2c72426cu, 0xc3422975u, 0x450bd5d8u, 0xaa3bbec1u, 0x9e87751bu, 0x71b71e02u,
        0x57f4ca8eu, 0xb8c4a197u, 0x8c786a4du, 0x63480154u, 0xe501fdf9u, 0x0a3196e0u,
        0x3e8d5d3au, 0xd1bd3623u, 0x37f2d291u, 0xd8c2b988u, 0xec7e7252u, 0x034e194bu,
        0x8507e5e6u, 0x6a378effu, 0x5e8b4525u, 0xb1bb2e3cu,
    },
    {
        0x00000000u, 0x68032cc8u, 0xd0065990u, 0xb8057558u, 0xa5e0c5d1u, 0xcde3e919u,
        0x75e69c41u, 0x1de5b089u, 0x4e2dfd53u, 0x262ed19bu, 0x9e2ba4c3u, 0xf628880bu,
        0xebcd3882u, 0x83ce144au, 0x3bcb6112u, 0x53c84ddau, 0x9c5bfaa6u, 0xf458d66eu,
        0x4c5da336u, 0x245e8ffeu, 0x39bb3f77u, 0x51b813bfu, 0xe9bd66e7u, 0x81be4a2fu,
        0xd27607f5u, 0xba752b3du, 0x02705e65u, 0x6a7372adu, 0x7796c224u, 0x1f95eeecu,
        0xa7909bb4u, 0xcf93b77cu, 0x3d5b83bdu, 0x5558af75u, 0xed5dda2du, 0x855ef6e5u,
        0x98bb466cu, 0xf0b86aa4u, 0x48bd1ffcu, 0x20be3334u, 0x73767eeeu, 0x1b755226u,
        0xa370277eu, 0xcb730bb6u, 0xd696bb3fu, 0xbe9597f7u, 0x0690e2afu, 0x6e93ce67u,
        0xa100791bu, 0xc90355d3u, 0x7106208bu, 0x19050c43u, 0x04e0bccau, 0x6ce39002u,
        0xd4e6e55au, 0xbce5c992u, 0xef2d8448u, 0x872ea880u, 0x3f2bddd8u, 0x5728f110u,
        0x4acd4199u, 0x22ce6d51u, 0x9acb1809u, 0xf2c834c1u, 0x7ab7077au, 0x12b42bb2u,
        0xaab15eeau, 0xc2b27222u, 0xdf57c2abu, 0xb754ee63u, 0x0f519b3bu, 0x6752b7f3u,
        0x349afa29u, 0x5c99d6e1u, 0xe49ca3b9u, 0x8c9f8f71u, 0x917a3ff8u, 0xf9791330u,
        0x417c6668u, 0x297f4aa0u, 0xe6ecfddcu, 0x8eefd114u, 0x36eaa44cu, 0x5ee98884u,
        0x430c380du, 0x2b0f14c5u, 0x930a619du, 0xfb094d55u, 0xa8c1008fu, 0xc0c22c47u,
        0x78c7591fu, 0x10c475d7u, 0x0d21c55eu, 0x6522e996u, 0xdd279cceu, 0xb524b006u,
        0x47ec84c7u, 0x2fefa80fu, 0x97eadd57u, 0xffe9f19fu, 0xe20c4116u, 0x8a0f6ddeu,
        0x320a1886u, 0x5a09344eu, 0x09c17994u, 0x61c2555cu, 0xd9c72004u, 0xb1c40cccu,
        0xac21bc45u, 0xc422908du, 0x7c27e5d5u, 0x1424c91du, 0xdbb77e61u, 0xb3b452a9u,
        0x0bb127f1u, 0x63b20b39u, 0x7e57bbb0u, 0x16549778u, 0xae51e220u, 0xc652cee8u,
        0x959a8332u, 0xfd99affau, 0x459cdaa2u, 0x2d9ff66au, 0x307a46e3u, 0x58796a2bu,
        0xe07c1f73u, 0x887f33bbu, 0xf56e0ef4u, 0x9d6d223cu, 0x25685764u, 0x4d6b7bacu,
        0x508ecb25u, 0x388de7edu, 0x808892b5u, 0xe88bbe7du, 0xbb43f3a7u, 0xd340df6fu,
        0x6b45aa37u, 0x034686ffu, 0x1ea33676u, 0x76a01abeu, 0xcea56fe6u, 0xa6a6432eu,
        0x6935f452u, 0x0136d89au, 0xb933adc2u, 0xd130810au, 0xccd53183u, 0xa4d61d4bu,
        0x1cd36813u, 0x74d044dbu, 0x27180901u, 0x4f1b25c9u, 0xf71e5091u, 0x9f1d7c59u,
        0x82f8ccd0u, 0xeafbe018u, 0x52fe9540u, 0x3afdb988u, 0xc8358d49u, 0xa036a181u,
        0x1833d4d9u, 0x7030f811u, 0x6dd54898u, 0x05d66450u, 0xbdd31108u, 0xd5d03dc0u,
        0x8618701au, 0xee1b5cd2u, 0x561e298au, 0x3e1d0542u, 0x23f8b5cbu, 0x4bfb9903u,
        0xf3feec5bu, 0x9bfdc093u, 0x546e77efu, 0x3c6d5b27u, 0x84682e7fu, 0xec6b02b7u,
        0xf18eb23eu, 0x998d9ef6u, 0x2188ebaeu, 0x498bc766u, 0x1a438abcu, 0x7240a674u,
        0xca45d32cu, 0xa246ffe4u, 0xbfa34f6du, 0xd7a063a5u, 0x6fa516fdu, 0x07a63a35u,
        0x8fd9098eu, 0xe7da2546u, 0x5fdf501eu, 0x37dc7cd6u, 0x2a39cc5fu, 0x423ae097u,
        0xfa3f95cfu, 0x923cb907u, 0xc1f4f4ddu, 0xa9f7d815u, 0x11f2ad4du, 0x79f18185u,
        0x6414310cu, 0x0c171dc4u, 0xb412689cu, 0xdc114454u, 0x1382f328u, 0x7b81dfe0u,
        0xc384aab8u, 0xab878670u, 0xb66236f9u, 0xde611a31u, 0x66646f69u, 0x0e6743a1u,
        0x5daf0e7bu, 0x35ac22b3u, 0x8da957ebu, 0xe5aa7b23u, 0xf84fcbaau, 0x904ce762u,
        0x2849923au, 0x404abef2u, 0xb2828a33u, 0xda81a6fbu, 0x6284d3a3u, 0x0a87ff6bu,
        0x17624fe2u, 0x7f61632au, 0xc7641672u, 0xaf673abau, 0xfcaf7760u, 0x94ac5ba8u,
        0x2ca92ef0u, 0x44aa0238u, 0x594fb2b1u, 0x314c9e79u, 0x8949eb21u, 0xe14ac7e9u,
        0x2ed97095u, 0x46da5c5du, 0xfedf2905u, 0x96dc05cdu, 0x8b39b544u, 0xe33a998cu,
        0x5b3fecd4u, 0x333cc01cu, 0x60f48dc6u, 0x08f7a10eu, 0xb0f2d456u, 0xd8f1f89eu,
        0xc5144817u, 0xad1764dfu, 0x15121187u, 0x7d113d4fu,
    },
    {
        0x00000000u, 0x493c7d27u, 0x9278fa4eu, 0xdb448769u, 0x211d826du, 0x6821ff4au,
        0xb3657823u, 0xfa590504u, 0x423b04dau, 0x0b0779fdu, 0xd043fe94u, 0x997f83b3u,
        0x632686b7u, 0x2a1afb90u, 0xf15e7cf9u, 0xb86201deu, 0x847609b4u, 0xcd4a7493u,
        0x160ef3fau, 0x5f328eddu, 0xa56b8bd9u, 0xec57f6feu, 0x37137197u, 0x7e2f0cb0u,
        0xc64d0d6eu, 0x8f717049u, 0x5435f720u, 0x1d098a07u, 0xe7508f03u, 0xae6cf224u,
        0x7528754du, 0x3c14086au, 0x0d006599u, 0x443c18beu, 0x9f789fd7u, 0xd644e2f0u,
        0x2c1de7f4u, 0x65219ad3u, 0xbe651dbau, 0xf759609du, 0x4f3b6143u, 0x06071c64u,
        0xdd439b0du, 0x947fe62au, 0x6e26e32eu, 0x271a9e09u, 0xfc5e1960u, 0xb5626447u,
        0x89766c2du, 0xc04a110au, 0x1b0e9663u, 0x5232eb44u, 0xa86bee40u, 0xe1579367u,
        0x3a13140eu, 0x732f6929u, 0xcb4d68f7u, 0x827115d0u, 0x593592b9u, 0x1009ef9eu,
        0xea50ea9au, 0xa36c97bdu, 0x782810d4u, 0x31146df3u, 0x1a00cb32u, 0x533cb615u,
        0x8878317cu, 0xc1444c5bu, 0x3b1d495fu, 0x72213478u, 0xa965b311u, 0xe059ce36u,
        0x583bcfe8u, 0x1107b2cfu, 0xca4335a6u, 0x837f4881u, 0x79264d85u, 0x301a30a2u,
        0xeb5eb7cbu, 0xa262caecu, 0x9e76c286u, 0xd74abfa1u, 0x0c0e38c8u, 0x453245efu,
        0xbf6b40ebu, 0xf6573dccu, 0x2d13baa5u, 0x642fc782u, 0xdc4dc65cu, 0x9571bb7bu,
        0x4e353c12u, 0x07094135u, 0xfd504431u, 0xb46c3916u, 0x6f28be7fu, 0x2614c358u,
        0x1700aeabu, 0x5e3cd38cu, 0x857854e5u, 0xcc4429c2u, 0x361d2cc6u, 0x7f2151e1u,
        0xa465d688u, 0xed59abafu, 0x553baa71u, 0x1c07d756u, 0xc743503fu, 0x8e7f2d18u,
        0x7426281cu, 0x3d1a553bu, 0xe65ed252u, 0xaf62af75u, 0x9376a71fu, 0xda4ada38u,
        0x010e5d51u, 0x48322076u, 0xb26b2572u, 0xfb575855u, 0x2013df3cu, 0x692fa21bu,
        0xd14da3c5u, 0x9871dee2u, 0x4335598bu, 0x0a0924acu, 0xf05021a8u, 0xb96c5c8fu,
        0x6228dbe6u, 0x2b14a6c1u, 0x34019664u, 0x7d3deb43u, 0xa6796c2au, 0xef45110du,
        0x151c1409u, 0x5c20692eu, 0x8764ee47u, 0xce589360u, 0x763a92beu, 0x3f06ef99u,
        0xe44268f0u, 0xad7e15d7u, 0x572710d3u, 0x1e1b6df4u, 0xc55fea9du, 0x8c6397bau,
        0xb0779fd0u, 0xf94be2f7u, 0x220f659eu, 0x6b3318b9u, 0x916a1dbdu, 0xd856609au,
        0x0312e7f3u, 0x4a2e9ad4u, 0xf24c9b0au, 0xbb70e62du, 0x60346144u, 0x29081c63u,
        0xd3511967u, 0x9a6d6440u, 0x4129e329u, 0x08159e0eu, 0x3901f3fdu, 0x703d8edau,
        0xab7909b3u, 0xe2457494u, 0x181c7190u, 0x51200cb7u, 0x8a648bdeu, 0xc358f6f9u,
        0x7b3af727u, 0x32068a00u, 0xe9420d69u, 0xa07e704eu, 0x5a27754au, 0x131b086du,
        0xc85f8f04u, 0x8163f223u, 0xbd77fa49u, 0xf44b876eu, 0x2f0f0007u, 0x66337d20u,
        0x9c6a7824u, 0xd5560503u, 0x0e12826au, 0x472eff4du, 0xff4cfe93u, 0xb67083b4u,
        0x6d3404ddu, 0x240879fau, 0xde517cfeu, 0x976d01d9u, 0x4c2986b0u, 0x0515fb97u,
        0x2e015d56u, 0x673d2071u, 0xbc79a718u, 0xf545da3fu, 0x0f1cdf3bu, 0x4620a21cu,
        0x9d642575u, 0xd4585852u, 0x6c3a598cu, 0x250624abu, 0xfe42a3c2u, 0xb77edee5u,
        0x4d27dbe1u, 0x041ba6c6u, 0xdf5f21afu, 0x96635c88u, 0xaa7754e2u, 0xe34b29c5u,
        0x380faeacu, 0x7133d38bu, 0x8b6ad68fu, 0xc256aba8u, 0x19122cc1u, 0x502e51e6u,
        0xe84c5038u, 0xa1702d1fu, 0x7a34aa76u, 0x3308d751u, 0xc951d255u, 0x806daf72u,
        0x5b29281bu, 0x1215553cu, 0x230138cfu, 0x6a3d45e8u, 0xb179c281u, 0xf845bfa6u,
        0x021cbaa2u, 0x4b20c785u, 0x906440ecu, 0xd9583dcbu, 0x613a3c15u, 0x28064132u,
        0xf342c65bu, 0xba7ebb7cu, 0x4027be78u, 0x091bc35fu, 0xd25f4436u, 0x9b633911u,
        0xa777317bu, 0xee4b4c5cu, 0x350fcb35u, 0x7c33b612u, 0x866ab316u, 0xcf56ce31u,
        0x14124958u, 0x5d2e347fu, 0xe54c35a1u, 0xac704886u, 0x7734cfefu, 0x3e08b2c8u,
        0xc451b7ccu, 0x8d6dcaebu, 0x56294d82u, 0x1f1530a5u,
    },
};

/* One byte through the byte table (row 0). */
OPSTATE__PRIVATE uint32_t opstate__crc32c_byte(uint32_t crc, uint8_t b)
{
    return opstate__crc_table[0][(crc ^ b) & 0xffu] ^ (crc >> 8);
}

/* Eight bytes at once: the state and the first four bytes through rows
   7..4, the next four through rows 3..0. */
OPSTATE__PRIVATE uint32_t opstate__crc32c_slice8(uint32_t crc, const uint8_t *p)
{
    const uint32_t(*t)[256] = opstate__crc_table;
    uint32_t lo = crc ^ opstate_get_le32(p), hi = opstate_get_le32(p + 4);
    return t[7][lo & 0xff] ^ t[6][(lo >> 8) & 0xff] ^ t[5][(lo >> 16) & 0xff] ^ t[4][lo >> 24] ^
           t[3][hi & 0xff] ^ t[2][(hi >> 8) & 0xff] ^ t[1][(hi >> 16) & 0xff] ^ t[0][hi >> 24];
}
#else
/* Entry i is the CRC of the 4-bit value i: the byte table's entry i << 4. */
static const uint32_t opstate__crc_nibble[16] = {
    0x00000000u, 0x105ec76fu, 0x20bd8edeu, 0x30e349b1u, 0x417b1dbcu, 0x5125dad3u, 0x61c69362u, 0x7198540du,
    0x82f63b78u, 0x92a8fc17u, 0xa24bb5a6u, 0xb21572c9u, 0xc38d26c4u, 0xd3d3e1abu, 0xe330a81au, 0xf36e6f75u,
};

/* One byte as two 4-bit steps, low half first (the CRC is reflected). */
OPSTATE__PRIVATE uint32_t opstate__crc32c_byte(uint32_t crc, uint8_t b)
{
    crc ^= b;
    crc = opstate__crc_nibble[crc & 15u] ^ (crc >> 4);
    return opstate__crc_nibble[crc & 15u] ^ (crc >> 4);
}
#endif

/* The portable CRC32C: bytes read one by one, so it is endian- and
   alignment-neutral; eight at a step through the slice-by-8 tables, else
   (the tail, or OPSTATE_CRC_SMALL) one. With `copy_to`, the bytes are also
   copied there. */
OPSTATE__PRIVATE uint32_t opstate__crc32c_sw(uint32_t crc, const uint8_t *p, size_t n, uint8_t *copy_to)
{
    if (copy_to && n) OPSTATE_MEMCPY(copy_to, p, n);
#ifndef OPSTATE_CRC_SMALL
    for (; n >= 8; p += 8, n -= 8) crc = opstate__crc32c_slice8(crc, p);
#endif
    for (; n; n--, p++) crc = opstate__crc32c_byte(crc, *p);
    return crc;
}

#if !defined(OPSTATE_NO_HW_CRC) && defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define OPSTATE__CRC_X86 1
/* SSE4.2 crc32 instruction; x86 is little-endian so a u64 load feeds the
   bytes in stream order. A copy rides along for free: the store fits in
   the crc32 latency. */
__attribute__((target("sse4.2"))) OPSTATE__PRIVATE uint32_t
opstate__crc32c_hw(uint32_t crc, const uint8_t *p, size_t n, uint8_t *copy_to)
{
    unsigned long long c = crc;
    for (; n >= 8; p += 8, n -= 8) {
        unsigned long long v;
        OPSTATE_MEMCPY(&v, p, 8);
        if (copy_to) {
            OPSTATE_MEMCPY(copy_to, &v, 8);
            copy_to += 8;
        }
        c = __builtin_ia32_crc32di(c, v);
    }
    crc = (uint32_t)c;
    for (; n; n--, p++) {
        if (copy_to) *copy_to++ = *p;
        crc = __builtin_ia32_crc32qi(crc, *p);
    }
    return crc;
}
#elif !defined(OPSTATE_NO_HW_CRC) && defined(__ARM_FEATURE_CRC32)
#define OPSTATE__CRC_ARM 1
#include <arm_acle.h>
OPSTATE__PRIVATE uint32_t opstate__crc32c_hw(uint32_t crc, const uint8_t *p, size_t n, uint8_t *copy_to)
{
    if (copy_to && n) OPSTATE_MEMCPY(copy_to, p, n);
    while (n >= 8) {
        crc = __crc32cd(crc, opstate_get_le64(p));
        p += 8;
        n -= 8;
    }
    while (n--) crc = __crc32cb(crc, *p++);
    return crc;
}
#endif

/* CRC32C continuing from crc, copying the bytes to copy_to when set. */
OPSTATE__PRIVATE uint32_t opstate__crc32c_copy(uint32_t crc, const uint8_t *p, size_t n, uint8_t *copy_to)
{
    crc = ~crc;
#if defined(OPSTATE__CRC_X86) && defined(__SSE4_2__)
    crc = opstate__crc32c_hw(crc, p, n, copy_to);
#elif defined(OPSTATE__CRC_X86) && !defined(OPSTATE_NO_STDLIB)
    if (__builtin_cpu_supports("sse4.2"))
        crc = opstate__crc32c_hw(crc, p, n, copy_to);
    else
        crc = opstate__crc32c_sw(crc, p, n, copy_to);
#elif defined(OPSTATE__CRC_ARM)
    crc = opstate__crc32c_hw(crc, p, n, copy_to);
#else
    crc = opstate__crc32c_sw(crc, p, n, copy_to);
#endif
    return ~crc;
}

OPSTATE_API uint32_t opstate_crc32c(uint32_t crc, const void *data, size_t n)
{
    return opstate__crc32c_copy(crc, (const uint8_t *)data, n, NULL);
}

/* >>ids ------------------------------------------------------------------ */

/* SHA-256 (FIPS 180-4), just enough for content ids. */
typedef struct opstate__sha256 {
    uint32_t h[8];
    uint8_t block[64];
    uint64_t total;
    size_t fill;
} opstate__sha256;

static const uint32_t opstate__sha256_k[64] = {
    0x428a2f98u, 0x71374491u, 0xb5c0fbcfu, 0xe9b5dba5u, 0x3956c25bu, 0x59f111f1u, 0x923f82a4u,
    0xab1c5ed5u, 0xd807aa98u, 0x12835b01u, 0x243185beu, 0x550c7dc3u, 0x72be5d74u, 0x80deb1feu,
    0x9bdc06a7u, 0xc19bf174u, 0xe49b69c1u, 0xefbe4786u, 0x0fc19dc6u, 0x240ca1ccu, 0x2de92c6fu,
    0x4a7484aau, 0x5cb0a9dcu, 0x76f988dau, 0x983e5152u, 0xa831c66du, 0xb00327c8u, 0xbf597fc7u,
    0xc6e00bf3u, 0xd5a79147u, 0x06ca6351u, 0x14292967u, 0x27b70a85u, 0x2e1b2138u, 0x4d2c6dfcu,
    0x53380d13u, 0x650a7354u, 0x766a0abbu, 0x81c2c92eu, 0x92722c85u, 0xa2bfe8a1u, 0xa81a664bu,
    0xc24b8b70u, 0xc76c51a3u, 0xd192e819u, 0xd6990624u, 0xf40e3585u, 0x106aa070u, 0x19a4c116u,
    0x1e376c08u, 0x2748774cu, 0x34b0bcb5u, 0x391c0cb3u, 0x4ed8aa4au, 0x5b9cca4fu, 0x682e6ff3u,
    0x748f82eeu, 0x78a5636fu, 0x84c87814u, 0x8cc70208u, 0x90befffau, 0xa4506cebu, 0xbef9a3f7u,
    0xc67178f2u};

OPSTATE__PRIVATE uint32_t opstate__rotr(uint32_t x, unsigned n) { return (x >> n) | (x << (32 - n)); }

OPSTATE__PRIVATE void opstate__sha256_block(opstate__sha256 *s, const uint8_t *b)
{
    uint32_t w[64], v[8], t1, t2;
    int i;
    for (i = 0; i < 16; i++)
        w[i] = ((uint32_t)b[4 * i] << 24) | ((uint32_t)b[4 * i + 1] << 16) |
               ((uint32_t)b[4 * i + 2] << 8) | (uint32_t)b[4 * i + 3];
    for (i = 16; i < 64; i++) {
        uint32_t s0 = opstate__rotr(w[i - 15], 7) ^ opstate__rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = opstate__rotr(w[i - 2], 17) ^ opstate__rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    for (i = 0; i < 8; i++) v[i] = s->h[i];
    for (i = 0; i < 64; i++) {
        t1 = v[7] + (opstate__rotr(v[4], 6) ^ opstate__rotr(v[4], 11) ^ opstate__rotr(v[4], 25)) +
             ((v[4] & v[5]) ^ (~v[4] & v[6])) + opstate__sha256_k[i] + w[i];
        t2 = (opstate__rotr(v[0], 2) ^ opstate__rotr(v[0], 13) ^ opstate__rotr(v[0], 22)) +
             ((v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]));
        v[7] = v[6]; v[6] = v[5]; v[5] = v[4]; v[4] = v[3] + t1;
        v[3] = v[2]; v[2] = v[1]; v[1] = v[0]; v[0] = t1 + t2;
    }
    for (i = 0; i < 8; i++) s->h[i] += v[i];
}

OPSTATE__PRIVATE void opstate__sha256_init(opstate__sha256 *s)
{
    static const uint32_t iv[8] = {0x6a09e667u, 0xbb67ae85u, 0x3c6ef372u, 0xa54ff53au,
                                   0x510e527fu, 0x9b05688cu, 0x1f83d9abu, 0x5be0cd19u};
    OPSTATE_MEMCPY(s->h, iv, sizeof iv);
    s->total = 0;
    s->fill = 0;
}

OPSTATE__PRIVATE void opstate__sha256_update(opstate__sha256 *s, const void *data, size_t n)
{
    const uint8_t *p = (const uint8_t *)data;
    s->total += n;
    while (n) {
        size_t take = 64 - s->fill < n ? 64 - s->fill : n;
        OPSTATE_MEMCPY(s->block + s->fill, p, take);
        s->fill += take;
        p += take;
        n -= take;
        if (s->fill == 64) {
            opstate__sha256_block(s, s->block);
            s->fill = 0;
        }
    }
}

OPSTATE__PRIVATE void opstate__sha256_final(opstate__sha256 *s, uint8_t out[32])
{
    uint8_t pad[72];
    uint64_t bits = s->total * 8;
    size_t padlen = (s->fill < 56 ? 56 : 120) - s->fill, i;
    pad[0] = 0x80;
    OPSTATE_MEMSET(pad + 1, 0, padlen - 1);
    for (i = 0; i < 8; i++) pad[padlen + i] = (uint8_t)(bits >> (56 - 8 * i));
    opstate__sha256_update(s, pad, padlen + 8);
    for (i = 0; i < 32; i++) out[i] = (uint8_t)(s->h[i / 4] >> (24 - 8 * (i % 4)));
}

OPSTATE_API opstate_result opstate_id_time_ordered(int64_t unix_ns, const uint8_t entropy[8],
                                                   opstate_id *out)
{
    uint64_t ms, frac;
    int i;
    if (unix_ns < 0) return OPSTATE_INVALID_ARGUMENT;
    ms = (uint64_t)unix_ns / 1000000u; /* INT64_MAX ns is ~2^43 ms: fits 48 bits */
    frac = ((uint64_t)unix_ns % 1000000u) * 4096u / 1000000u;
    for (i = 0; i < 6; i++) out->bytes[i] = (uint8_t)(ms >> (40 - 8 * i));
    out->bytes[6] = (uint8_t)(0x70u | (frac >> 8));
    out->bytes[7] = (uint8_t)frac;
    out->bytes[8] = (uint8_t)(0x80u | (entropy[0] & 0x3fu));
    for (i = 1; i < 8; i++) out->bytes[8 + i] = entropy[i];
    return OPSTATE_OK;
}

#ifndef OPSTATE_NO_STDLIB
#include <stdio.h>

/* n bytes of the platform's entropy (/dev/urandom, read unbuffered: n
   bytes, not a stdio buffer's worth) into out; false when it cannot. The
   one entropy source of fresh ids and of hash table keys (>>hash). */
OPSTATE__PRIVATE bool opstate__entropy(uint8_t *out, size_t n)
{
    bool ok;
    FILE *f = fopen("/dev/urandom", "rb");
    if (!f) return false;
    ok = setvbuf(f, NULL, _IONBF, 0) == 0 && fread(out, 1, n, f) == n;
    fclose(f);
    return ok;
}

/* The process's entropy seed: /dev/urandom, else clock and addresses. */
OPSTATE__PRIVATE uint64_t opstate__entropy_seed(void)
{
    uint8_t bytes[8];
    if (opstate__entropy(bytes, sizeof bytes)) return opstate_get_le64(bytes);
    return (uint64_t)opstate__wall_clock(NULL) ^ (uint64_t)(uintptr_t)bytes ^
           ((uint64_t)(uintptr_t)&opstate__entropy_seed << 17);
}

OPSTATE_API opstate_result opstate_id_new(opstate_id *out)
{
    static uint64_t state;
    static int64_t last_ns;
    uint8_t entropy[8];
    int64_t now = opstate__wall_clock(NULL);
    uint64_t e;
    int i;
    if (!state) state = opstate__entropy_seed() | 1u;
    if (now <= last_ns) now = last_ns + 245; /* the next 1/4096 ms: sorts after the last */
    last_ns = now;
    e = opstate__mix64(state += UINT64_C(0x9e3779b97f4a7c15));
    for (i = 0; i < 8; i++) entropy[i] = (uint8_t)(e >> (8 * i));
    return opstate_id_time_ordered(now, entropy, out);
}
#endif

/* Feeds a length-prefixed field, so ("ab","c") and ("a","bc") differ. */
OPSTATE__PRIVATE void opstate__sha256_field(opstate__sha256 *s, opstate_bytes b)
{
    uint8_t len[8];
    opstate_put_le64(len, (uint64_t)b.len);
    opstate__sha256_update(s, len, 8);
    if (b.len) opstate__sha256_update(s, b.ptr, b.len);
}

OPSTATE_API opstate_id opstate_id_from_content(const opstate_event *ev)
{
    static const char tag[] = "opstate.id.v1";
    opstate__sha256 s;
    uint8_t digest[32], tail[13];
    opstate_id id;
    opstate__sha256_init(&s);
    opstate__sha256_update(&s, tag, sizeof tag - 1);
    opstate__sha256_field(&s, ev->scope);
    opstate__sha256_field(&s, ev->kind);
    opstate__sha256_field(&s, ev->key);
    opstate__sha256_field(&s, ev->data);
    opstate_put_le32(tail, ev->op);
    tail[4] = ev->has_time ? 1 : 0;
    opstate_put_le64(tail + 5, ev->has_time ? (uint64_t)ev->time : 0u);
    opstate__sha256_update(&s, tail, sizeof tail);
    opstate__sha256_final(&s, digest);
    OPSTATE_MEMCPY(id.bytes, digest, 16);
    id.bytes[6] = (uint8_t)(0x80u | (id.bytes[6] & 0x0fu));
    id.bytes[8] = (uint8_t)(0x80u | (id.bytes[8] & 0x3fu));
    return id;
}

static const char opstate__hex_lower[] = "0123456789abcdef";

/* True at the text offsets of an id where a dash goes. */
OPSTATE__PRIVATE bool opstate__id_dash_at(size_t i) { return i == 8 || i == 13 || i == 18 || i == 23; }

OPSTATE_API void opstate_id_to_text(const opstate_id *id, char out[OPSTATE_ID_TEXT_LEN])
{
    size_t i, b = 0;
    for (i = 0; i < OPSTATE_ID_TEXT_LEN; i++) {
        if (opstate__id_dash_at(i)) {
            out[i] = '-';
            continue;
        }
        out[i] = opstate__hex_lower[(id->bytes[b / 2] >> ((b % 2) ? 0 : 4)) & 0xf];
        b++;
    }
}

/* Value of a hex digit in the given alphabet ("0-9a-f" or "0-9A-F"), -1 if none. */
OPSTATE__PRIVATE int opstate__hex_value(char c, char ten)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= ten && c <= ten + 5) return c - ten + 10;
    return -1;
}

OPSTATE_API opstate_result opstate_id_from_text(const char *text, size_t len, opstate_id *out,
                                                opstate_error *err)
{
    opstate_id id;
    size_t i, b = 0, n = len < OPSTATE_ID_TEXT_LEN ? len : OPSTATE_ID_TEXT_LEN;
    for (i = 0; i < n; i++) {
        int v;
        if (opstate__id_dash_at(i)) {
            if (text[i] != '-') return opstate__fail(err, OPSTATE_INVALID_ID, i, "id");
            continue;
        }
        v = opstate__hex_value(text[i], 'a');
        if (v < 0) return opstate__fail(err, OPSTATE_INVALID_ID, i, "id");
        if (b % 2 == 0) id.bytes[b / 2] = (uint8_t)(v << 4);
        else id.bytes[b / 2] = (uint8_t)(id.bytes[b / 2] | v);
        b++;
    }
    if (len != OPSTATE_ID_TEXT_LEN) return opstate__fail(err, OPSTATE_INVALID_ID, n, "id");
    *out = id;
    return OPSTATE_OK;
}

OPSTATE_API bool opstate_id_equal(const opstate_id *a, const opstate_id *b)
{
    return OPSTATE_MEMCMP(a->bytes, b->bytes, 16) == 0;
}

/* >>subjects ------------------------------------------------------------- */

/* A byte that may appear in a subject token. */
OPSTATE__PRIVATE bool opstate__token_byte(uint8_t c)
{
    return c > 0x20 && c < 0x7f && c != '.' && c != '*' && c != '>';
}

/* A byte that a key escape passes through unchanged. */
OPSTATE__PRIVATE bool opstate__key_safe_byte(uint8_t c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
}

OPSTATE__PRIVATE opstate_result opstate__token_check(const uint8_t *tok, size_t len, size_t base,
                                                     const char *field, opstate_error *err)
{
    size_t i;
    if (len == 0) return opstate__fail(err, OPSTATE_INVALID_TOKEN, base, field);
    if (len > OPSTATE_MAX_TOKEN_LEN) return opstate__fail(err, OPSTATE_OVERSIZED, base, field);
    for (i = 0; i < len; i++)
        if (!opstate__token_byte(tok[i])) return opstate__fail(err, OPSTATE_INVALID_TOKEN, base + i, field);
    return OPSTATE_OK;
}

OPSTATE_API opstate_result opstate_token_validate(const char *tok, size_t len, opstate_error *err)
{
    return opstate__token_check((const uint8_t *)tok, len, 0, "token", err);
}

OPSTATE_API opstate_result opstate_prefix_validate(const char *prefix, size_t len, opstate_error *err)
{
    const uint8_t *p = (const uint8_t *)prefix;
    size_t start = 0, i;
    for (i = 0; i <= len; i++) {
        if (i < len && p[i] != '.') continue;
        {
            opstate_result r = opstate__token_check(p + start, i - start, start, "prefix", err);
            if (r != OPSTATE_OK) return r;
        }
        start = i + 1;
    }
    return OPSTATE_OK;
}

/* Escaped size of a key; 0 when the key is empty or too long. */
OPSTATE__PRIVATE size_t opstate__key_escaped_len(const uint8_t *key, size_t len)
{
    size_t i, n = 0;
    for (i = 0; i < len; i++) n += opstate__key_safe_byte(key[i]) ? 1u : 3u;
    return n;
}

OPSTATE__PRIVATE void opstate__key_escape_write(const uint8_t *key, size_t len, char *out)
{
    static const char hex_upper[] = "0123456789ABCDEF";
    size_t i;
    for (i = 0; i < len; i++) {
        if (opstate__key_safe_byte(key[i])) {
            *out++ = (char)key[i];
            continue;
        }
        *out++ = '%';
        *out++ = hex_upper[key[i] >> 4];
        *out++ = hex_upper[key[i] & 0xf];
    }
}

OPSTATE__PRIVATE opstate_result opstate__key_check(size_t key_len, opstate_error *err)
{
    if (key_len == 0) return opstate__fail(err, OPSTATE_INVALID_ARGUMENT, 0, "key");
    if (key_len > OPSTATE_MAX_KEY_LEN) return opstate__fail(err, OPSTATE_OVERSIZED, 0, "key");
    return OPSTATE_OK;
}

OPSTATE_API opstate_result opstate_key_escape(const uint8_t *key, size_t key_len, char *out,
                                              size_t cap, size_t *out_len)
{
    size_t need;
    opstate_result r = opstate__key_check(key_len, NULL);
    if (r != OPSTATE_OK) return r;
    need = opstate__key_escaped_len(key, key_len);
    if (out && cap < need) return OPSTATE_BUFFER_TOO_SMALL;
    if (out) opstate__key_escape_write(key, key_len, out);
    *out_len = need;
    return OPSTATE_OK;
}

/* Walks an escaped key token; writes the bytes when out != NULL. */
OPSTATE__PRIVATE opstate_result opstate__key_unescape_walk(const uint8_t *t, size_t len, uint8_t *out,
                                                           size_t *n, opstate_error *err)
{
    size_t i = 0, k = 0;
    if (len == 0) return opstate__fail(err, OPSTATE_INVALID_TOKEN, 0, "key");
    while (i < len) {
        uint8_t c = t[i];
        if (c == '%') {
            int hi = i + 2 < len ? opstate__hex_value((char)t[i + 1], 'A') : -1;
            int lo = i + 2 < len ? opstate__hex_value((char)t[i + 2], 'A') : -1;
            if (hi < 0 || lo < 0 || opstate__key_safe_byte((uint8_t)(hi << 4 | lo)))
                return opstate__fail(err, OPSTATE_INVALID_TOKEN, i, "key");
            c = (uint8_t)(hi << 4 | lo);
            i += 3;
        } else if (opstate__key_safe_byte(c)) {
            i++;
        } else {
            return opstate__fail(err, OPSTATE_INVALID_TOKEN, i, "key");
        }
        if (k == OPSTATE_MAX_KEY_LEN) return opstate__fail(err, OPSTATE_OVERSIZED, i, "key");
        if (out) out[k] = c;
        k++;
    }
    *n = k;
    return OPSTATE_OK;
}

OPSTATE_API opstate_result opstate_key_unescape(const char *tok, size_t len, uint8_t *out,
                                                size_t cap, size_t *out_len, opstate_error *err)
{
    size_t need;
    opstate_result r = opstate__key_unescape_walk((const uint8_t *)tok, len, NULL, &need, err);
    if (r != OPSTATE_OK) return r;
    if (out && cap < need) return opstate__fail(err, OPSTATE_BUFFER_TOO_SMALL, 0, "key");
    if (out) opstate__key_unescape_walk((const uint8_t *)tok, len, out, &need, NULL);
    *out_len = need;
    return OPSTATE_OK;
}

/* Validates prefix, scope, kind; *key_esc = escaped key size (0: no key). */
OPSTATE__PRIVATE opstate_result opstate__subject_parts_check(const char *prefix, size_t prefix_len,
                                                             opstate_bytes scope, opstate_bytes kind,
                                                             opstate_bytes key, size_t *key_esc,
                                                             opstate_error *err)
{
    opstate_result r = opstate_prefix_validate(prefix, prefix_len, err);
    if (r == OPSTATE_OK) r = opstate__token_check(scope.ptr, scope.len, 0, "scope", err);
    if (r == OPSTATE_OK && kind.ptr) r = opstate__token_check(kind.ptr, kind.len, 0, "kind", err);
    if (r == OPSTATE_OK && key.len) r = opstate__key_check(key.len, err);
    if (r != OPSTATE_OK) return r;
    *key_esc = key.len ? opstate__key_escaped_len(key.ptr, key.len) : 0;
    return OPSTATE_OK;
}

OPSTATE__PRIVATE char *opstate__put_token(char *out, const void *tok, size_t len, bool dot)
{
    OPSTATE_MEMCPY(out, tok, len);
    out += len;
    if (dot) *out++ = '.';
    return out;
}

OPSTATE_API opstate_result opstate_subject_build(const char *prefix, size_t prefix_len,
                                                 opstate_bytes scope, opstate_bytes kind,
                                                 opstate_bytes key, char *out, size_t cap,
                                                 size_t *out_len, opstate_error *err)
{
    size_t esc = 0, need;
    opstate_result r;
    if (!kind.ptr) return opstate__fail(err, OPSTATE_INVALID_TOKEN, 0, "kind");
    r = opstate__subject_parts_check(prefix, prefix_len, scope, kind, key, &esc, err);
    if (r != OPSTATE_OK) return r;
    need = prefix_len + 1 + scope.len + 1 + kind.len + (esc ? 1 + esc : 0);
    if (out && cap < need) return opstate__fail(err, OPSTATE_BUFFER_TOO_SMALL, cap, "subject");
    if (out) {
        char *p = opstate__put_token(out, prefix, prefix_len, true);
        p = opstate__put_token(p, scope.ptr, scope.len, true);
        p = opstate__put_token(p, kind.ptr, kind.len, esc != 0);
        if (esc) opstate__key_escape_write(key.ptr, key.len, p);
    }
    *out_len = need;
    return OPSTATE_OK;
}

OPSTATE_API opstate_result opstate_subject_filter(const char *prefix, size_t prefix_len,
                                                  opstate_bytes scope, char *out, size_t cap,
                                                  size_t *out_len, opstate_error *err)
{
    size_t esc = 0, need;
    opstate_bytes none = {NULL, 0};
    opstate_result r = opstate__subject_parts_check(prefix, prefix_len, scope, none, none, &esc, err);
    if (r != OPSTATE_OK) return r;
    need = prefix_len + 1 + scope.len + 2;
    if (out && cap < need) return opstate__fail(err, OPSTATE_BUFFER_TOO_SMALL, cap, "subject");
    if (out) {
        char *p = opstate__put_token(out, prefix, prefix_len, true);
        p = opstate__put_token(p, scope.ptr, scope.len, true);
        *p = '>';
    }
    *out_len = need;
    return OPSTATE_OK;
}

/* Next token of s[*at..len) up to a dot; moves *at past the dot. */
OPSTATE__PRIVATE opstate_bytes opstate__next_token(const uint8_t *s, size_t len, size_t *at)
{
    opstate_bytes t;
    size_t start = *at < len ? *at : len, i = start; /* never point past the end */
    while (i < len && s[i] != '.') i++;
    t.ptr = s + start;
    t.len = i - start;
    *at = i < len ? i + 1 : len + 1;
    return t;
}

OPSTATE_API opstate_result opstate_subject_parse(const char *subject, size_t len,
                                                 const char *prefix, size_t prefix_len,
                                                 opstate_subject_parts *out, opstate_error *err)
{
    const uint8_t *s = (const uint8_t *)subject;
    opstate_subject_parts parts;
    size_t at = prefix_len + 1, n;
    opstate_result r;
    if ((r = opstate_prefix_validate(prefix, prefix_len, err)) != OPSTATE_OK) return r;
    if (len <= prefix_len || OPSTATE_MEMCMP(subject, prefix, prefix_len) != 0 || s[prefix_len] != '.')
        return opstate__fail(err, OPSTATE_NOT_FOUND, 0, "prefix");
    parts.scope = opstate__next_token(s, len, &at);
    r = opstate__token_check(parts.scope.ptr, parts.scope.len, prefix_len + 1, "scope", err);
    if (r != OPSTATE_OK) return r;
    n = at;
    parts.kind = opstate__next_token(s, len, &at);
    r = opstate__token_check(parts.kind.ptr, parts.kind.len, n > len ? len : n, "kind", err);
    if (r != OPSTATE_OK) return r;
    parts.key_token.ptr = NULL;
    parts.key_token.len = 0;
    if (at <= len) {
        size_t key_at = at;
        parts.key_token = opstate__next_token(s, len, &at);
        if (at <= len) return opstate__fail(err, OPSTATE_INVALID_TOKEN, at - 1, "subject");
        r = opstate__key_unescape_walk(parts.key_token.ptr, parts.key_token.len, NULL, &n, err);
        if (r != OPSTATE_OK) {
            if (err) err->offset += key_at;
            return r;
        }
    }
    *out = parts;
    return OPSTATE_OK;
}

/* >>codec ---------------------------------------------------------------- */

#define OPSTATE__EV_HEADER 44u /* bytes before the variable fields */
#define OPSTATE__EV_MIN (OPSTATE__EV_HEADER + 4u)

/* Checks what encode needs; *size = encoded size. */
OPSTATE__PRIVATE opstate_result opstate__event_check(const opstate_event *ev, size_t *size,
                                                     opstate_error *err)
{
    opstate_result r = opstate__token_check(ev->scope.ptr, ev->scope.len, 0, "scope", err);
    if (r == OPSTATE_OK) r = opstate__token_check(ev->kind.ptr, ev->kind.len, 0, "kind", err);
    if (r != OPSTATE_OK) return r;
    if (ev->op == 0) return opstate__fail(err, OPSTATE_INVALID_ARGUMENT, 0, "op");
    if (ev->key.len > OPSTATE_MAX_KEY_LEN) return opstate__fail(err, OPSTATE_OVERSIZED, 0, "key");
    if (ev->data.len > OPSTATE_MAX_DATA_LEN) return opstate__fail(err, OPSTATE_OVERSIZED, 0, "data");
    *size = OPSTATE__EV_MIN + ev->scope.len + ev->kind.len + ev->key.len + ev->data.len;
    return OPSTATE_OK;
}

OPSTATE__PRIVATE uint8_t *opstate__put_bytes(uint8_t *p, opstate_bytes b)
{
    if (b.len) OPSTATE_MEMCPY(p, b.ptr, b.len);
    return p + b.len;
}

OPSTATE_API opstate_result opstate_event_encode(const opstate_event *ev, uint8_t *out, size_t cap,
                                                size_t *out_len, opstate_error *err)
{
    size_t size;
    uint8_t *p;
    opstate_result r = opstate__event_check(ev, &size, err);
    if (r != OPSTATE_OK) return r;
    if (out && cap < size) return opstate__fail(err, OPSTATE_BUFFER_TOO_SMALL, cap, "event");
    if (out) {
        out[0] = OPSTATE_CODEC_VERSION;
        out[1] = ev->has_time ? 1u : 0u;
        opstate_put_le32(out + 2, (uint32_t)size);
        OPSTATE_MEMCPY(out + 6, ev->id.bytes, 16);
        opstate_put_le32(out + 22, ev->op);
        opstate_put_le64(out + 26, ev->has_time ? (uint64_t)ev->time : 0u);
        opstate_put_le16(out + 34, (uint16_t)ev->scope.len);
        opstate_put_le16(out + 36, (uint16_t)ev->kind.len);
        opstate_put_le16(out + 38, (uint16_t)ev->key.len);
        opstate_put_le32(out + 40, (uint32_t)ev->data.len);
        uint32_t crc;
        p = opstate__put_bytes(out + OPSTATE__EV_HEADER, ev->scope);
        p = opstate__put_bytes(p, ev->kind);
        p = opstate__put_bytes(p, ev->key);
        crc = opstate_crc32c(0, out, (size_t)(p - out));
        crc = opstate__crc32c_copy(crc, ev->data.ptr, ev->data.len, p); /* the payload: copy and sum in one pass */
        opstate_put_le32(p + ev->data.len, crc);
    }
    *out_len = size;
    return OPSTATE_OK;
}

/* Framing checks of an encoded event: everything before the checksum. */
OPSTATE__PRIVATE opstate_result opstate__event_frame(const uint8_t *b, size_t len, opstate_error *err)
{
    static const char *const names[4] = {"scope", "kind", "key", "data"};
    const uint64_t limit[4] = {OPSTATE_MAX_TOKEN_LEN, OPSTATE_MAX_TOKEN_LEN, OPSTATE_MAX_KEY_LEN,
                               OPSTATE_MAX_DATA_LEN};
    uint64_t field[4], total, sum = OPSTATE__EV_MIN;
    int i;
    if (len == 0) return opstate__fail(err, OPSTATE_TRUNCATED, 0, "version");
    if (b[0] != OPSTATE_CODEC_VERSION) return opstate__fail(err, OPSTATE_UNKNOWN_VERSION, 0, "version");
    if (len < OPSTATE__EV_MIN) return opstate__fail(err, OPSTATE_TRUNCATED, len, "header");
    total = opstate_get_le32(b + 2);
    if (total > len) return opstate__fail(err, OPSTATE_TRUNCATED, len, "length");
    if (total < len) return opstate__fail(err, OPSTATE_MALFORMED, (size_t)total, "length");
    if (b[1] & ~1u) return opstate__fail(err, OPSTATE_MALFORMED, 1, "flags");
    field[0] = opstate_get_le16(b + 34);
    field[1] = opstate_get_le16(b + 36);
    field[2] = opstate_get_le16(b + 38);
    field[3] = opstate_get_le32(b + 40);
    for (i = 0; i < 4; i++) {
        if (field[i] > limit[i]) return opstate__fail(err, OPSTATE_OVERSIZED, 34u + 2u * (unsigned)i, names[i]);
        sum += field[i];
    }
    if (sum != total) return opstate__fail(err, OPSTATE_MALFORMED, 2, "length");
    return OPSTATE_OK;
}

OPSTATE_API opstate_result opstate_event_decode(const uint8_t *buf, size_t len, opstate_event *out,
                                                opstate_error *err)
{
    const uint8_t *p = buf + OPSTATE__EV_HEADER;
    size_t scope_len, kind_len;
    uint32_t op;
    bool has_time;
    int64_t time;
    opstate_result r = opstate__event_frame(buf, len, err);
    if (r != OPSTATE_OK) return r;
    if (opstate_crc32c(0, buf, len - 4) != opstate_get_le32(buf + len - 4))
        return opstate__fail(err, OPSTATE_CORRUPT, len - 4, "crc");
    scope_len = opstate_get_le16(buf + 34);
    kind_len = opstate_get_le16(buf + 36);
    op = opstate_get_le32(buf + 22);
    has_time = (buf[1] & 1u) != 0;
    time = (int64_t)opstate_get_le64(buf + 26);
    if (op == 0) return opstate__fail(err, OPSTATE_MALFORMED, 22, "op");
    if (!has_time && time != 0) return opstate__fail(err, OPSTATE_MALFORMED, 26, "time");
    r = opstate__token_check(p, scope_len, OPSTATE__EV_HEADER, "scope", err);
    if (r == OPSTATE_OK) r = opstate__token_check(p + scope_len, kind_len, OPSTATE__EV_HEADER + scope_len, "kind", err);
    if (r != OPSTATE_OK) return r;
    /* Every check passed: every field of *out is set in place (no event
       built on the stack, zeroed and copied over). */
    OPSTATE_MEMCPY(out->id.bytes, buf + 6, 16);
    out->op = op;
    out->has_time = has_time;
    out->time = time;
    out->scope.ptr = p;
    out->scope.len = scope_len;
    out->kind.ptr = p += scope_len;
    out->kind.len = kind_len;
    out->key.ptr = p += kind_len;
    out->key.len = opstate_get_le16(buf + 38);
    out->data.ptr = p + out->key.len;
    out->data.len = opstate_get_le32(buf + 40);
    out->position.seq = 0;
    out->position.time = 0;
    out->position.epoch = 0;
    return OPSTATE_OK;
}

#define OPSTATE__JSON_MAX_DEPTH 64

/* JSON writer: counts when out is NULL, otherwise writes (the caller sized
   the buffer with a counting pass first). */
typedef struct opstate__jw {
    char *out;
    size_t len;
} opstate__jw;

OPSTATE__PRIVATE void opstate__jw_raw(opstate__jw *w, const void *s, size_t n)
{
    if (w->out && n) OPSTATE_MEMCPY(w->out + w->len, s, n);
    w->len += n;
}

OPSTATE__PRIVATE void opstate__jw_cstr(opstate__jw *w, const char *s)
{
    size_t n = 0;
    while (s[n]) n++;
    opstate__jw_raw(w, s, n);
}

OPSTATE__PRIVATE void opstate__jw_u64(opstate__jw *w, uint64_t v)
{
    char buf[20];
    size_t n = 0;
    do {
        buf[sizeof buf - 1 - n++] = (char)('0' + (int)(v % 10u));
        v /= 10u;
    } while (v);
    opstate__jw_raw(w, buf + sizeof buf - n, n);
}

OPSTATE__PRIVATE void opstate__jw_i64(opstate__jw *w, int64_t v)
{
    if (v < 0) {
        opstate__jw_raw(w, "-", 1);
        opstate__jw_u64(w, (uint64_t)0 - (uint64_t)v);
    } else {
        opstate__jw_u64(w, (uint64_t)v);
    }
}

OPSTATE__PRIVATE void opstate__jw_base64(opstate__jw *w, opstate_bytes b)
{
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t i;
    opstate__jw_raw(w, "\"", 1);
    for (i = 0; i < b.len; i += 3) {
        uint32_t v = (uint32_t)b.ptr[i] << 16;
        char q[4];
        if (i + 1 < b.len) v |= (uint32_t)b.ptr[i + 1] << 8;
        if (i + 2 < b.len) v |= b.ptr[i + 2];
        q[0] = alphabet[v >> 18];
        q[1] = alphabet[(v >> 12) & 63];
        q[2] = i + 1 < b.len ? alphabet[(v >> 6) & 63] : '=';
        q[3] = i + 2 < b.len ? alphabet[v & 63] : '=';
        opstate__jw_raw(w, q, 4);
    }
    opstate__jw_raw(w, "\"", 1);
}

/* Writes bytes (valid UTF-8) as a JSON string with RFC 8259 escapes. */
OPSTATE__PRIVATE void opstate__jw_string(opstate__jw *w, opstate_bytes b)
{
    static const char short_esc[] = "\"\\\b\f\n\r\t", short_chr[] = "\"\\bfnrt";
    size_t i, k;
    opstate__jw_raw(w, "\"", 1);
    for (i = 0; i < b.len; i++) {
        uint8_t c = b.ptr[i];
        for (k = 0; k < 7 && (uint8_t)short_esc[k] != c; k++) continue;
        if (k < 7) {
            char e[2];
            e[0] = '\\';
            e[1] = short_chr[k];
            opstate__jw_raw(w, e, 2);
        } else if (c < 0x20) {
            char e[6] = {'\\', 'u', '0', '0', 0, 0};
            e[4] = opstate__hex_lower[c >> 4];
            e[5] = opstate__hex_lower[c & 0xf];
            opstate__jw_raw(w, e, 6);
        } else {
            opstate__jw_raw(w, &c, 1);
        }
    }
    opstate__jw_raw(w, "\"", 1);
}

/* Length of the valid UTF-8 sequence at p[0..n), 0 when invalid. */
OPSTATE__PRIVATE size_t opstate__utf8_seq(const uint8_t *p, size_t n)
{
    uint8_t c = p[0], lo = 0x80, hi = 0xbf;
    size_t len, i;
    if (c < 0x80) return 1;
    if (c >= 0xc2 && c <= 0xdf) len = 2;
    else if (c >= 0xe0 && c <= 0xef) len = 3;
    else if (c >= 0xf0 && c <= 0xf4) len = 4;
    else return 0;
    if (c == 0xe0) lo = 0xa0;
    if (c == 0xed) hi = 0x9f;
    if (c == 0xf0) lo = 0x90;
    if (c == 0xf4) hi = 0x8f;
    if (n < len || p[1] < lo || p[1] > hi) return 0;
    for (i = 2; i < len; i++)
        if (p[i] < 0x80 || p[i] > 0xbf) return 0;
    return len;
}

OPSTATE__PRIVATE bool opstate__utf8_valid(opstate_bytes b)
{
    size_t i = 0;
    while (i < b.len) {
        size_t n = opstate__utf8_seq(b.ptr + i, b.len - i);
        if (!n) return false;
        i += n;
    }
    return true;
}

/* A JSON string of b: its text when utf8, else its base64. */
OPSTATE__PRIVATE void opstate__jw_bytes(opstate__jw *w, opstate_bytes b, bool utf8)
{
    if (utf8) opstate__jw_string(w, b);
    else opstate__jw_base64(w, b);
}

/* ,"name_encoding":"utf8"|"base64" */
OPSTATE__PRIVATE void opstate__jw_encoding(opstate__jw *w, const char *name, bool utf8)
{
    opstate__jw_cstr(w, ",\"");
    opstate__jw_cstr(w, name);
    opstate__jw_cstr(w, utf8 ? "_encoding\":\"utf8\"" : "_encoding\":\"base64\"");
}

/* ,"name":"…","name_encoding":"…" (no comma when !comma). */
OPSTATE__PRIVATE void opstate__jw_text(opstate__jw *w, bool comma, const char *name, opstate_bytes b)
{
    bool utf8 = opstate__utf8_valid(b);
    opstate__jw_cstr(w, comma ? ",\"" : "\"");
    opstate__jw_cstr(w, name);
    opstate__jw_cstr(w, "\":");
    opstate__jw_bytes(w, b, utf8);
    opstate__jw_encoding(w, name, utf8);
}

/* "key":[parts],"key_encoding":"…" for a key whose parts are separated
   by 0x00 (no leading comma). */
OPSTATE__PRIVATE void opstate__jw_key(opstate__jw *w, opstate_bytes key)
{
    bool utf8 = opstate__utf8_valid(key);
    size_t start = 0, i;
    opstate__jw_cstr(w, "\"key\":[");
    for (i = 0; i <= key.len; i++) {
        opstate_bytes part;
        if (i < key.len && key.ptr[i] != 0) continue;
        part.ptr = key.ptr + start;
        part.len = i - start;
        if (start) opstate__jw_raw(w, ",", 1);
        opstate__jw_bytes(w, part, utf8);
        start = i + 1;
    }
    opstate__jw_raw(w, "]", 1);
    opstate__jw_encoding(w, "key", utf8);
}

OPSTATE__PRIVATE void opstate__jw_event(opstate__jw *w, const opstate_event *ev)
{
    char id[OPSTATE_ID_TEXT_LEN];
    opstate_id_to_text(&ev->id, id);
    bool utf8 = opstate__utf8_valid(ev->scope) && opstate__utf8_valid(ev->kind) && opstate__utf8_valid(ev->key);
    opstate__jw_cstr(w, "{\"id\":\"");
    opstate__jw_raw(w, id, sizeof id);
    opstate__jw_cstr(w, "\",\"key\":[");
    opstate__jw_bytes(w, ev->scope, utf8);
    opstate__jw_raw(w, ",", 1);
    opstate__jw_bytes(w, ev->kind, utf8);
    if (ev->key.len) opstate__jw_raw(w, ",", 1);
    if (ev->key.len) opstate__jw_bytes(w, ev->key, utf8);
    opstate__jw_raw(w, "]", 1);
    opstate__jw_encoding(w, "key", utf8);
    opstate__jw_cstr(w, ",\"op\":\"");
    if (ev->op == OPSTATE_OP_PUT) opstate__jw_cstr(w, "put");
    else if (ev->op == OPSTATE_OP_DELETE) opstate__jw_cstr(w, "delete");
    else opstate__jw_u64(w, ev->op);
    opstate__jw_raw(w, "\"", 1);
    opstate__jw_cstr(w, ",\"time\":");
    if (ev->has_time) opstate__jw_i64(w, ev->time);
    else opstate__jw_cstr(w, "null");
    opstate__jw_cstr(w, ",\"position\":{\"seq\":");
    opstate__jw_u64(w, ev->position.seq);
    opstate__jw_cstr(w, ",\"time\":");
    opstate__jw_i64(w, ev->position.time);
    opstate__jw_cstr(w, ",\"epoch\":");
    opstate__jw_u64(w, ev->position.epoch);
    opstate__jw_raw(w, "}", 1);
    opstate__jw_text(w, true, "data", ev->data);
    opstate__jw_raw(w, "}", 1);
}

OPSTATE_API opstate_result opstate_event_to_json(const opstate_event *ev, char *out, size_t cap,
                                                 size_t *out_len)
{
    opstate__jw w = {NULL, 0};
    opstate__jw_event(&w, ev);
    if (out && cap < w.len) return OPSTATE_BUFFER_TOO_SMALL;
    if (out) {
        opstate__jw fill;
        fill.out = out;
        fill.len = 0;
        opstate__jw_event(&fill, ev);
    }
    *out_len = w.len;
    return OPSTATE_OK;
}

/* JSON validation (RFC 8259). Each scanner takes the index of its first
   byte and returns the index after it, or 0 on failure (a value never ends
   at index 0). */
OPSTATE__PRIVATE size_t opstate__json_ws(const uint8_t *p, size_t n, size_t i)
{
    while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\n' || p[i] == '\r')) i++;
    return i;
}

OPSTATE__PRIVATE size_t opstate__json_digits(const uint8_t *p, size_t n, size_t i)
{
    size_t start = i;
    while (i < n && p[i] >= '0' && p[i] <= '9') i++;
    return i > start ? i : 0;
}

OPSTATE__PRIVATE size_t opstate__json_number(const uint8_t *p, size_t n, size_t i)
{
    if (i < n && p[i] == '-') i++;
    if (i < n && p[i] == '0') i++;
    else if (!(i = opstate__json_digits(p, n, i))) return 0;
    if (i < n && p[i] == '.' && !(i = opstate__json_digits(p, n, i + 1))) return 0;
    if (i < n && (p[i] == 'e' || p[i] == 'E')) {
        i++;
        if (i < n && (p[i] == '+' || p[i] == '-')) i++;
        if (!(i = opstate__json_digits(p, n, i))) return 0;
    }
    return i;
}

/* Value of \uXXXX at p[i..], or -1. */
OPSTATE__PRIVATE long opstate__json_u4(const uint8_t *p, size_t n, size_t i)
{
    long v = 0;
    size_t k;
    if (i + 4 > n) return -1;
    for (k = 0; k < 4; k++) {
        int d = opstate__hex_value((char)p[i + k], 'a');
        if (d < 0) d = opstate__hex_value((char)p[i + k], 'A');
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

/* After a backslash at p[i]: index after the escape, 0 when invalid. */
OPSTATE__PRIVATE size_t opstate__json_escape(const uint8_t *p, size_t n, size_t i)
{
    long u, low;
    if (i + 1 >= n) return 0;
    if (p[i + 1] != 'u') {
        uint8_t c = p[i + 1];
        return (c == '"' || c == '\\' || c == '/' || c == 'b' || c == 'f' || c == 'n' || c == 'r' ||
                c == 't') ? i + 2 : 0;
    }
    u = opstate__json_u4(p, n, i + 2);
    if (u < 0 || (u >= 0xdc00 && u <= 0xdfff)) return 0;
    if (u < 0xd800 || u > 0xdbff) return i + 6;
    if (i + 7 >= n || p[i + 6] != '\\' || p[i + 7] != 'u') return 0;
    low = opstate__json_u4(p, n, i + 8);
    return (low >= 0xdc00 && low <= 0xdfff) ? i + 12 : 0;
}

OPSTATE__PRIVATE size_t opstate__json_string(const uint8_t *p, size_t n, size_t i)
{
    i++; /* opening quote */
    while (i < n) {
        uint8_t c = p[i];
        size_t step;
        if (c == '"') return i + 1;
        if (c < 0x20) return 0;
        if (c == '\\') {
            if (!(i = opstate__json_escape(p, n, i))) return 0;
            continue;
        }
        if (!(step = opstate__utf8_seq(p + i, n - i))) return 0;
        i += step;
    }
    return 0;
}

/* A scalar (string, number, literal) at p[i]; 0 when none. */
OPSTATE__PRIVATE size_t opstate__json_scalar(const uint8_t *p, size_t n, size_t i)
{
    static const char *const literals[3] = {"true", "false", "null"};
    size_t k, len;
    if (p[i] == '"') return opstate__json_string(p, n, i);
    if (p[i] == '-' || (p[i] >= '0' && p[i] <= '9')) return opstate__json_number(p, n, i);
    for (k = 0; k < 3; k++) {
        for (len = 0; literals[k][len]; len++) continue;
        if (n - i >= len && OPSTATE_MEMCMP(p + i, literals[k], len) == 0) return i + len;
    }
    return 0;
}

OPSTATE__PRIVATE bool opstate__json_valid_depth(const uint8_t *p, size_t n, int max_depth)
{
    uint64_t is_object = 0; /* bit d: container at depth d+1 is an object */
    int depth = 0;
    bool want_key = false;
    size_t i = opstate__json_ws(p, n, 0);
    for (;;) { /* expecting a value (or a key, inside an object) */
        if (i >= n) return false;
        if (want_key && p[i] != '"') return false;
        if (!want_key && (p[i] == '{' || p[i] == '[')) {
            uint8_t close = p[i] == '{' ? '}' : ']';
            if (depth >= max_depth) return false;
            is_object = (is_object & ~((uint64_t)1 << depth)) | ((uint64_t)(close == '}') << depth);
            depth++;
            i = opstate__json_ws(p, n, i + 1);
            if (i < n && p[i] == close) {
                depth--;
                i++;
            } else {
                want_key = ((is_object >> (depth - 1)) & 1) != 0;
                continue;
            }
        } else if (!(i = opstate__json_scalar(p, n, i))) {
            return false;
        } else if (want_key) {
            i = opstate__json_ws(p, n, i);
            if (i >= n || p[i] != ':') return false;
            i = opstate__json_ws(p, n, i + 1);
            want_key = false;
            continue;
        }
        for (;;) { /* after a value: close containers or move to the next item */
            bool obj;
            i = opstate__json_ws(p, n, i);
            if (depth == 0) return i == n;
            if (i >= n) return false;
            obj = ((is_object >> (depth - 1)) & 1) != 0;
            if (p[i] == ',') break;
            if (p[i] != (obj ? '}' : ']')) return false;
            depth--;
            i++;
        }
        want_key = ((is_object >> (depth - 1)) & 1) != 0;
        i = opstate__json_ws(p, n, i + 1);
    }
}

OPSTATE_API bool opstate_json_valid(const uint8_t *p, size_t n)
{
    return opstate__json_valid_depth(p, n, OPSTATE__JSON_MAX_DEPTH);
}

/* >>hwm ------------------------------------------------------------------ */

OPSTATE_API void opstate_hwm_init(opstate_hwm *h, opstate_position mark)
{
    OPSTATE_MEMSET(h, 0, sizeof *h);
    h->mark = mark;
    h->last_delivered = mark.seq;
}

OPSTATE__PRIVATE uint32_t opstate__hwm_slot(const opstate_hwm *h, uint32_t i)
{
    return (h->head + i) % OPSTATE_HWM_CAPACITY;
}

OPSTATE__PRIVATE bool opstate__hwm_acked(const opstate_hwm *h, uint32_t slot)
{
    return ((h->acked[slot / 64] >> (slot % 64)) & 1u) != 0;
}

OPSTATE__PRIVATE void opstate__hwm_set_acked(opstate_hwm *h, uint32_t slot, bool on)
{
    uint64_t bit = (uint64_t)1 << (slot % 64);
    if (on) h->acked[slot / 64] |= bit;
    else h->acked[slot / 64] &= ~bit;
}

OPSTATE_API opstate_result opstate_hwm_deliver(opstate_hwm *h, uint64_t seq, int64_t time)
{
    uint32_t slot;
    if (seq <= h->last_delivered) return OPSTATE_OUT_OF_ORDER;
    if (h->count == OPSTATE_HWM_CAPACITY) return OPSTATE_WINDOW_FULL;
    slot = opstate__hwm_slot(h, h->count);
    h->seq[slot] = seq;
    h->time[slot] = time;
    opstate__hwm_set_acked(h, slot, false);
    h->count++;
    h->last_delivered = seq;
    return OPSTATE_OK;
}

OPSTATE_API opstate_result opstate_hwm_ack(opstate_hwm *h, uint64_t seq)
{
    uint32_t lo = 0, hi = h->count;
    if (seq <= h->mark.seq) return OPSTATE_OK;
    while (lo < hi) { /* in-flight sequences increase along the ring */
        uint32_t mid = lo + (hi - lo) / 2;
        if (h->seq[opstate__hwm_slot(h, mid)] < seq) lo = mid + 1;
        else hi = mid;
    }
    if (lo == h->count || h->seq[opstate__hwm_slot(h, lo)] != seq) return OPSTATE_NOT_FOUND;
    opstate__hwm_set_acked(h, opstate__hwm_slot(h, lo), true);
    while (h->count && opstate__hwm_acked(h, h->head)) {
        h->mark.seq = h->seq[h->head];
        h->mark.time = h->time[h->head];
        opstate__hwm_set_acked(h, h->head, false);
        h->head = (h->head + 1) % OPSTATE_HWM_CAPACITY;
        h->count--;
    }
    return OPSTATE_OK;
}

OPSTATE_API uint32_t opstate_hwm_in_flight(const opstate_hwm *h) { return h->count; }

/* >>resume --------------------------------------------------------------- */

/* Where a reader starts that has no position: the first retained event, or
   1 on a never-written stream. */
OPSTATE__PRIVATE uint64_t opstate__stream_start(const opstate_stream_info *s)
{
    return s->first_seq ? s->first_seq : 1u;
}

OPSTATE__PRIVATE bool opstate__stream_empty(const opstate_stream_info *s)
{
    return s->last_seq == 0 || s->last_seq < s->first_seq;
}

OPSTATE_API opstate_result opstate_resume_check(opstate_position cursor,
                                                const opstate_stream_info *stream,
                                                opstate_resume *out)
{
    opstate_resume r;
    if (cursor.seq == UINT64_MAX) return OPSTATE_SEQ_OVERFLOW;
    r.missed = 0;
    r.next_seq = opstate__stream_start(stream);
    if (cursor.seq == 0) {
        r.state = opstate__stream_empty(stream) ? OPSTATE_RESUME_CAUGHT_UP : OPSTATE_RESUME_OK;
    } else if (cursor.epoch != stream->epoch || cursor.seq > stream->last_seq) {
        r.state = OPSTATE_RESUME_RESET;
    } else if (stream->first_seq && cursor.seq + 1 < stream->first_seq) {
        r.state = OPSTATE_RESUME_EXPIRED;
        r.missed = stream->first_seq - (cursor.seq + 1);
    } else {
        r.state = cursor.seq == stream->last_seq ? OPSTATE_RESUME_CAUGHT_UP : OPSTATE_RESUME_OK;
        r.next_seq = cursor.seq + 1;
    }
    *out = r;
    return OPSTATE_OK;
}

OPSTATE_API const char *opstate_resume_state_str(opstate_resume_state s)
{
    static const char text[] = "ok\0"                                            /* OK */
                               "caught up\0"                                     /* CAUGHT_UP */
                               "expired: events after the cursor were evicted\0" /* EXPIRED */
                               "reset: the stream was recreated\0";              /* RESET */
    return opstate__nth_str(text, sizeof text, (unsigned)s, "unknown resume state");
}

OPSTATE_API opstate_result opstate_gap_classify(uint64_t expected, uint64_t delivered,
                                                uint64_t epoch, const opstate_stream_info *fresh,
                                                opstate_gap *out)
{
    opstate_gap g;
    if (expected == 0) return OPSTATE_INVALID_ARGUMENT;
    g.missing = g.evicted = 0;
    if (delivered == expected) {
        g.kind = OPSTATE_GAP_NONE;
    } else if (delivered < expected) {
        g.kind = OPSTATE_GAP_REDELIVERY;
    } else if (!fresh) {
        return OPSTATE_INVALID_ARGUMENT;
    } else {
        g.missing = delivered - expected;
        if (fresh->epoch != epoch || delivered > fresh->last_seq) {
            g.kind = OPSTATE_GAP_RESET;
        } else if (expected < fresh->first_seq) {
            g.kind = OPSTATE_GAP_EVICTED;
            g.evicted = (fresh->first_seq < delivered ? fresh->first_seq : delivered) - expected;
        } else {
            g.kind = OPSTATE_GAP_SKIPPED;
        }
    }
    *out = g;
    return OPSTATE_OK;
}

OPSTATE_API const char *opstate_gap_kind_str(opstate_gap_kind k)
{
    static const char text[] = "none\0"                                              /* NONE */
                               "redelivery of an applied event\0"                    /* REDELIVERY */
                               "skipped sequences are retained (other subjects)\0" /* SKIPPED */
                               "events evicted by retention\0"                       /* EVICTED */
                               "stream recreated\0";                                 /* RESET */
    return opstate__nth_str(text, sizeof text, (unsigned)k, "unknown gap kind");
}

/* >>decide --------------------------------------------------------------- */

OPSTATE__PRIVATE bool opstate__cursor_expired(const opstate_position *stored,
                                              const opstate_stream_info *stream)
{
    return stream && stream->first_seq && stored->seq < UINT64_MAX &&
           stored->seq + 1 < stream->first_seq;
}

OPSTATE__PRIVATE opstate_restore_decision opstate__decision(bool restore, opstate_reason reason)
{
    opstate_restore_decision d;
    d.restore = restore;
    d.resync = false;
    d.reason = reason;
    d.gap = 0;
    return d;
}

/* The matrix once the mode is AUTO and a position is stored. */
OPSTATE__PRIVATE opstate_restore_decision opstate__decide_auto(opstate_start start,
                                                               const opstate_position *stored,
                                                               const opstate_stream_info *stream)
{
    opstate_restore_decision d;
    if (stream && stored->epoch != stream->epoch) return opstate__decision(false, OPSTATE_REASON_STREAM_RECREATED);
    if (stream && stored->seq > stream->last_seq) return opstate__decision(false, OPSTATE_REASON_CURSOR_AHEAD);
    switch (start.kind) {
    case OPSTATE_START_FIRST: return opstate__decision(false, OPSTATE_REASON_FULL_REBUILD);
    case OPSTATE_START_LATEST: return opstate__decision(false, OPSTATE_REASON_LATEST);
    case OPSTATE_START_RESUME:
        d = opstate__decision(true, OPSTATE_REASON_RESUME);
        if (opstate__cursor_expired(stored, stream)) {
            d.reason = OPSTATE_REASON_CURSOR_EXPIRED;
            d.resync = true;
            d.gap = stream->first_seq - (stored->seq + 1);
        }
        return d;
    case OPSTATE_START_FROM_SEQUENCE:
        if (start.seq <= stored->seq) return opstate__decision(false, OPSTATE_REASON_BACKWARD_SEQUENCE);
        d = opstate__decision(true, OPSTATE_REASON_FORWARD_SEQUENCE);
        d.gap = start.seq - stored->seq - 1;
        if (d.gap) d.reason = OPSTATE_REASON_FORWARD_SEQUENCE_GAP;
        return d;
    case OPSTATE_START_FROM_TIME:
    default:
        return opstate__decision(start.time > stored->time, start.time > stored->time
                                                                ? OPSTATE_REASON_FORWARD_TIME
                                                                : OPSTATE_REASON_BACKWARD_TIME);
    }
}

OPSTATE_API opstate_result opstate_decide_restore(opstate_restore_mode mode, opstate_start start,
                                                  const opstate_position *stored,
                                                  const opstate_stream_info *stream,
                                                  opstate_restore_decision *out)
{
    bool has_stored = stored && stored->seq != 0;
    opstate_restore_decision d;
    if ((unsigned)mode > OPSTATE_MODE_KEEP || (unsigned)start.kind > OPSTATE_START_FIRST ||
        (start.kind == OPSTATE_START_FROM_SEQUENCE && start.seq == 0))
        return OPSTATE_INVALID_ARGUMENT;
    if (mode == OPSTATE_MODE_CLEAR) {
        d = opstate__decision(false, OPSTATE_REASON_FORCED_CLEAR);
    } else if (mode == OPSTATE_MODE_KEEP) {
        d = opstate__decision(true, OPSTATE_REASON_FORCED_KEEP);
        if (has_stored && start.kind == OPSTATE_START_RESUME && stream && stored->epoch == stream->epoch &&
            opstate__cursor_expired(stored, stream)) {
            d.resync = true;
            d.gap = stream->first_seq - (stored->seq + 1);
        }
    } else if (has_stored) {
        d = opstate__decide_auto(start, stored, stream);
    } else if (start.kind == OPSTATE_START_RESUME) {
        d = opstate__decision(true, OPSTATE_REASON_NOTHING_STORED);
    } else {
        d = opstate__decision(false, start.kind == OPSTATE_START_FIRST    ? OPSTATE_REASON_FULL_REBUILD
                                     : start.kind == OPSTATE_START_LATEST ? OPSTATE_REASON_LATEST
                                                                          : OPSTATE_REASON_NO_POSITION);
    }
    *out = d;
    return OPSTATE_OK;
}

OPSTATE_API const char *opstate_reason_str(opstate_reason r)
{
#define OPSTATE__REASON_TEXT(name, msg) msg "\0"
    static const char text[] = OPSTATE_REASON_LIST(OPSTATE__REASON_TEXT);
#undef OPSTATE__REASON_TEXT
    return opstate__nth_str(text, sizeof text, (unsigned)r, "unknown reason");
}

OPSTATE_API const char *opstate_reason_name(opstate_reason r)
{
#define OPSTATE__REASON_NAME(name, msg) #name "\0"
    static const char text[] = OPSTATE_REASON_LIST(OPSTATE__REASON_NAME);
#undef OPSTATE__REASON_NAME
    return opstate__nth_str(text, sizeof text, (unsigned)r, "UNKNOWN");
}

OPSTATE_API bool opstate_event_time(const opstate_event *ev, opstate_time_fallback fallback,
                                    int64_t wallclock_ns, int64_t *out)
{
    if (ev->has_time) {
        *out = ev->time;
        return true;
    }
    if (fallback == OPSTATE_TIME_FALLBACK_SKIP) return false;
    *out = wallclock_ns;
    return true;
}

/* >>hash ----------------------------------------------------------------- */

OPSTATE__PRIVATE uint64_t opstate__rotl64(uint64_t x, unsigned n) { return (x << n) | (x >> (64u - n)); }

/* One SipRound over the state words a, b, c, d (v0..v3 in the paper); a
   macro, so the state stays in registers. */
#define OPSTATE__SIPROUND(a, b, c, d)                                                                   \
    do {                                                                                                 \
        a += b;                                                                                          \
        b = opstate__rotl64(b, 13) ^ a;                                                                  \
        a = opstate__rotl64(a, 32);                                                                      \
        c += d;                                                                                          \
        d = opstate__rotl64(d, 16) ^ c;                                                                  \
        a += d;                                                                                          \
        d = opstate__rotl64(d, 21) ^ a;                                                                  \
        c += b;                                                                                          \
        b = opstate__rotl64(b, 17) ^ c;                                                                  \
        c = opstate__rotl64(c, 32);                                                                      \
    } while (0)

/* SipHash-2-4 (Aumasson and Bernstein, "SipHash: a fast short-input PRF",
   2012) of n bytes under the 128-bit key whose bytes 0-7 and 8-15, read
   little-endian, are key[0] and key[1]. Each 8-byte word, then a last one
   of the 0-7 bytes left and n mod 256 in its top byte, goes through two
   rounds; four more finish. */
OPSTATE__PRIVATE uint64_t opstate__siphash(const uint64_t key[2], const uint8_t *p, size_t n)
{
    uint64_t v0 = key[0] ^ UINT64_C(0x736f6d6570736575), v1 = key[1] ^ UINT64_C(0x646f72616e646f6d);
    uint64_t v2 = key[0] ^ UINT64_C(0x6c7967656e657261), v3 = key[1] ^ UINT64_C(0x7465646279746573), m;
    size_t left = n, i;
    int r;
    for (;; p += 8, left -= 8) {
        if (left >= 8) m = opstate_get_le64(p);
        else
            for (m = (uint64_t)(n & 0xffu) << 56, i = 0; i < left; i++) m |= (uint64_t)p[i] << (8 * i);
        v3 ^= m;
        for (r = 0; r < 2; r++) OPSTATE__SIPROUND(v0, v1, v2, v3);
        v0 ^= m;
        if (left < 8) break;
    }
    v2 ^= 0xffu;
    for (r = 0; r < 4; r++) OPSTATE__SIPROUND(v0, v1, v2, v3);
    return v0 ^ v1 ^ v2 ^ v3;
}

/* The process seed every table key derives from, as two little-endian
   words: opstate_hash_seed()'s, else the public "opstate.hash.v1.". */
static uint64_t opstate__hash_seed_words[2] = {UINT64_C(0x2e6574617473706f), UINT64_C(0x2e31762e68736168)};

OPSTATE_API void opstate_hash_seed(const uint8_t seed[16])
{
    opstate__hash_seed_words[0] = opstate_get_le64(seed);
    opstate__hash_seed_words[1] = opstate_get_le64(seed + 8);
}

/* A new table's key: SipHash under the process seed of the table's address
   (`where`, its storage: distinct among live tables; an integer, as the
   storage is not read) and, hosted, the clock and (unless OPSTATE_NO_MALLOC)
   16 bytes of fresh entropy; the second word hashes one byte more. */
OPSTATE__PRIVATE void opstate__hash_key_new(uint64_t key[2], uintptr_t where)
{
    uint8_t in[8 + 8 + 16 + 1];
    size_t n = 8;
    opstate_put_le64(in, (uint64_t)where);
#ifndef OPSTATE_NO_STDLIB
    opstate_put_le64(in + n, (uint64_t)opstate__wall_clock(NULL));
    n += 8;
#ifndef OPSTATE_NO_MALLOC /* fopen allocates its FILE: such builds take opstate_hash_seed's secret */
    if (opstate__entropy(in + n, 16)) n += 16;
#endif
#endif
    key[0] = opstate__siphash(opstate__hash_seed_words, in, n);
    in[n++] = 0xffu;
    key[1] = opstate__siphash(opstate__hash_seed_words, in, n);
}

/* >>dedup ---------------------------------------------------------------- */

#define OPSTATE__DEDUP_MAX (1u << 24)
#define OPSTATE__DEDUP_HEADER 6u

OPSTATE__PRIVATE uint32_t opstate__dedup_table_size(uint32_t capacity)
{
    uint32_t t = 1;
    while (t < 2 * capacity) t <<= 1;
    return t;
}

OPSTATE_API size_t opstate_dedup_storage_size(uint32_t capacity)
{
    if (capacity == 0 || capacity > OPSTATE__DEDUP_MAX) return 0;
    return (size_t)opstate__dedup_table_size(capacity) * sizeof(uint32_t) +
           (size_t)capacity * sizeof(opstate_id);
}

OPSTATE_API opstate_result opstate_dedup_init(opstate_dedup *d, void *storage, size_t storage_size,
                                              uint32_t capacity)
{
    size_t need = opstate_dedup_storage_size(capacity);
    uint32_t tsize;
    if (need == 0 || !storage || storage_size < need || ((uintptr_t)storage % sizeof(uint32_t)) != 0)
        return OPSTATE_INVALID_ARGUMENT;
    tsize = opstate__dedup_table_size(capacity);
    d->table = (uint32_t *)storage;
    d->ids = (opstate_id *)(void *)(d->table + tsize);
    d->capacity = capacity;
    d->table_mask = tsize - 1;
    opstate__hash_key_new(d->key, (uintptr_t)storage);
    opstate_dedup_clear(d);
    return OPSTATE_OK;
}

/* Home slot of an id: a producer picks ids, so the window's key hashes all
   16 bytes (ids often share their first bytes, UUIDv7 time, too). */
OPSTATE__PRIVATE uint32_t opstate__dedup_home(const opstate_dedup *d, const opstate_id *id)
{
    return (uint32_t)opstate__siphash(d->key, id->bytes, sizeof id->bytes) & d->table_mask;
}

/* Table slot holding id, or the empty slot where it would go. */
OPSTATE__PRIVATE uint32_t opstate__dedup_find(const opstate_dedup *d, const opstate_id *id)
{
    uint32_t i = opstate__dedup_home(d, id);
    while (d->table[i] && !opstate_id_equal(&d->ids[d->table[i] - 1], id)) i = (i + 1) & d->table_mask;
    return i;
}

OPSTATE_API bool opstate_dedup_contains(const opstate_dedup *d, const opstate_id *id)
{
    return d->table[opstate__dedup_find(d, id)] != 0;
}

/* Removes the table entry at slot i by shifting later entries of its probe
   run back (linear probing needs no tombstones then). */
OPSTATE__PRIVATE void opstate__dedup_unlink(opstate_dedup *d, uint32_t i)
{
    uint32_t j = i;
    d->table[i] = 0;
    for (;;) {
        uint32_t home;
        j = (j + 1) & d->table_mask;
        if (!d->table[j]) return;
        home = opstate__dedup_home(d, &d->ids[d->table[j] - 1]);
        /* move j back to i unless its home lies cyclically in (i, j] */
        if ((i <= j) ? (home <= i || home > j) : (home <= i && home > j)) {
            d->table[i] = d->table[j];
            d->table[j] = 0;
            i = j;
        }
    }
}

OPSTATE_API bool opstate_dedup_insert(opstate_dedup *d, const opstate_id *id)
{
    uint32_t slot = opstate__dedup_find(d, id), idx;
    if (d->table[slot]) return false;
    if (d->count == d->capacity) {
        opstate__dedup_unlink(d, opstate__dedup_find(d, &d->ids[d->head]));
        d->head = (d->head + 1) % d->capacity;
        d->count--;
        slot = opstate__dedup_find(d, id); /* the unlink may have moved slots */
    }
    idx = (d->head + d->count) % d->capacity;
    d->ids[idx] = *id;
    d->table[slot] = idx + 1;
    d->count++;
    return true;
}

OPSTATE_API void opstate_dedup_clear(opstate_dedup *d)
{
    OPSTATE_MEMSET(d->table, 0, ((size_t)d->table_mask + 1) * sizeof(uint32_t));
    d->head = 0;
    d->count = 0;
}

OPSTATE_API opstate_result opstate_dedup_encode(const opstate_dedup *d, uint8_t *out, size_t cap,
                                                size_t *out_len)
{
    size_t need = OPSTATE__DEDUP_HEADER + (size_t)d->count * 16u + 4u, i;
    if (out && cap < need) return OPSTATE_BUFFER_TOO_SMALL;
    if (out) {
        out[0] = OPSTATE_DEDUP_FORMAT_VERSION;
        out[1] = 0;
        opstate_put_le32(out + 2, d->count);
        for (i = 0; i < d->count; i++)
            OPSTATE_MEMCPY(out + OPSTATE__DEDUP_HEADER + 16 * i, d->ids[(d->head + i) % d->capacity].bytes, 16);
        opstate_put_le32(out + need - 4, opstate_crc32c(0, out, need - 4));
    }
    *out_len = need;
    return OPSTATE_OK;
}

/* Every check of opstate_dedup_decode, without touching d. */
OPSTATE__PRIVATE opstate_result opstate__dedup_check(const opstate_dedup *d, const uint8_t *buf, size_t len,
                                                     opstate_error *err)
{
    uint64_t count, need;
    if (len == 0) return opstate__fail(err, OPSTATE_TRUNCATED, 0, "version");
    if (buf[0] != OPSTATE_DEDUP_FORMAT_VERSION) return opstate__fail(err, OPSTATE_UNKNOWN_VERSION, 0, "version");
    if (len < OPSTATE__DEDUP_HEADER + 4) return opstate__fail(err, OPSTATE_TRUNCATED, len, "header");
    count = opstate_get_le32(buf + 2);
    need = OPSTATE__DEDUP_HEADER + count * 16u + 4u;
    if (need > len) return opstate__fail(err, OPSTATE_TRUNCATED, len, "count");
    if (need < len) return opstate__fail(err, OPSTATE_MALFORMED, (size_t)need, "length");
    if (buf[1] != 0) return opstate__fail(err, OPSTATE_MALFORMED, 1, "reserved");
    if (count > d->capacity) return opstate__fail(err, OPSTATE_OVERSIZED, 2, "count");
    if (opstate_crc32c(0, buf, len - 4) != opstate_get_le32(buf + len - 4))
        return opstate__fail(err, OPSTATE_CORRUPT, len - 4, "crc");
    return OPSTATE_OK;
}

OPSTATE_API opstate_result opstate_dedup_decode(opstate_dedup *d, const uint8_t *buf, size_t len,
                                                opstate_error *err)
{
    size_t i, count;
    opstate_result r = opstate__dedup_check(d, buf, len, err);
    if (r != OPSTATE_OK) return r;
    count = opstate_get_le32(buf + 2);
    opstate_dedup_clear(d);
    for (i = 0; i < count; i++) {
        opstate_id id;
        OPSTATE_MEMCPY(id.bytes, buf + OPSTATE__DEDUP_HEADER + 16 * i, 16);
        opstate_dedup_insert(d, &id);
    }
    return OPSTATE_OK;
}


/* >>flash ---------------------------------------------------------------- */

#define OPSTATE__FLASH_VERSION 1u
#define OPSTATE__FLASH_SECTOR_HEADER 28u /* bytes before padding */
#define OPSTATE__FLASH_RECORD_HEADER 16u
#define OPSTATE__FLASH_COMMIT_META 36u
#define OPSTATE__FLASH_ENTRY_POSITION 16u /* seq and time after an entry's key */
#define OPSTATE__FLASH_RESTART 1u /* sector flag */
#define OPSTATE__FLASH_EMPTY 1u   /* commit flag */
#define OPSTATE__FLASH_PUT 1u
#define OPSTATE__FLASH_DELETE 2u
#define OPSTATE__FLASH_COMMIT 3u

/* A place in the store: a sector of the ring and a byte offset in it. */
typedef struct opstate__flash_pos {
    uint32_t sector, offset;
} opstate__flash_pos;

/* A sector header as read. */
typedef struct opstate__flash_header {
    bool valid;
    uint8_t flags;
    uint32_t seq, erase_count, first;
} opstate__flash_header;

/* A record whose checksums held. */
typedef struct opstate__flash_record {
    uint8_t type;
    uint32_t key_len, value_len, txn, padded;
    opstate__flash_pos at, next;
    bool after_damage;  /* damage lies between the previous record and this one */
    bool after_restart; /* the log restarted (a torn tail was skipped) before it */
} opstate__flash_record;

/* Walks the records of the run in order, past damage. */
typedef struct opstate__flash_iter {
    opstate__flash_pos pos;
    opstate__flash_pos damage_at; /* the first damage not yet reported */
    bool damaged;                 /* damage seen since the last record */
    bool resync;                  /* entering the next sector: go to its first record */
    bool restarted;               /* crossed a restart since the last record */
} opstate__flash_iter;

/* n rounded up to whole program units. */
OPSTATE__PRIVATE uint64_t opstate__flash_round64(const opstate_flash *fs, uint64_t n)
{
    uint64_t unit = fs->dev.prog_size;
    return (n + unit - 1) & ~(unit - 1);
}

/* The same for sizes known to fit a 32-bit address space. */
OPSTATE__PRIVATE uint32_t opstate__flash_round(const opstate_flash *fs, uint64_t n)
{
    return (uint32_t)opstate__flash_round64(fs, n);
}

OPSTATE__PRIVATE uint32_t opstate__flash_addr(const opstate_flash *fs, opstate__flash_pos p)
{
    return p.sector * fs->dev.sector_size + p.offset;
}

/* The sector after s in the ring. */
OPSTATE__PRIVATE uint32_t opstate__flash_next_sector(const opstate_flash *fs, uint32_t s)
{
    return s + 1 == fs->dev.sector_count ? 0 : s + 1;
}

/* How many sectors after `from` the sector s lies in the ring. */
OPSTATE__PRIVATE uint32_t opstate__flash_distance(const opstate_flash *fs, uint32_t from, uint32_t s)
{
    return (s + fs->dev.sector_count - from) % fs->dev.sector_count;
}

/* A device call's status as a result: 0 is OK, anything else IO at addr. */
OPSTATE__PRIVATE opstate_result opstate__flash_io(int rc, uint32_t addr, const char *what, opstate_error *err)
{
    if (rc == 0) return OPSTATE_OK;
    opstate__fail(err, OPSTATE_IO, addr, what);
    if (err) err->dep_status = rc;
    return OPSTATE_IO;
}

OPSTATE__PRIVATE opstate_result opstate__flash_read(const opstate_flash *fs, uint32_t addr, void *buf, uint32_t len,
                                                    opstate_error *err)
{
    return opstate__flash_io(fs->dev.read(fs->dev.user, addr, buf, len), addr, "read", err);
}

OPSTATE__PRIVATE bool opstate__flash_all_erased(const opstate_flash *fs, const uint8_t *p, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        if (p[i] != fs->dev.erased) return false;
    return true;
}

/* Whether bytes [offset, sector end) of sector s read as erased; through
   the work buffer, or a small stack buffer when `small` (the work buffer
   holds staged bytes while a transaction writes). */
OPSTATE__PRIVATE opstate_result opstate__flash_check_erased(const opstate_flash *fs, uint32_t s, uint32_t offset,
                                                            bool small, bool *erased, opstate_error *err)
{
    uint8_t local[32];
    uint8_t *buf = small ? local : fs->work;
    uint32_t cap = small ? fs->dev.prog_size : fs->work_size, n;
    opstate_result r;
    if (small) cap = (uint32_t)sizeof local / cap * cap;
    *erased = true;
    for (; offset < fs->dev.sector_size && *erased; offset += n) {
        n = fs->dev.sector_size - offset < cap ? fs->dev.sector_size - offset : cap;
        if ((r = opstate__flash_read(fs, s * fs->dev.sector_size + offset, buf, n, err)) != OPSTATE_OK) return r;
        *erased = opstate__flash_all_erased(fs, buf, n);
    }
    return OPSTATE_OK;
}

/* Reads and checks the header of sector s. */
OPSTATE__PRIVATE opstate_result opstate__flash_header_read(const opstate_flash *fs, uint32_t s,
                                                           opstate__flash_header *h, opstate_error *err)
{
    uint8_t b[32];
    opstate_result r = opstate__flash_read(fs, s * fs->dev.sector_size, b, fs->header_size, err);
    if (r != OPSTATE_OK) return r;
    h->valid = OPSTATE_MEMCMP(b, "OPFL", 4) == 0 && b[4] == OPSTATE__FLASH_VERSION && b[5] == fs->unit_shift &&
               b[7] == 0 && opstate_get_le32(b + 8) == fs->dev.sector_size &&
               opstate_get_le32(b + 24) == opstate_crc32c(0, b, 24);
    h->flags = b[6];
    h->seq = opstate_get_le32(b + 12);
    h->erase_count = opstate_get_le32(b + 16);
    h->first = opstate_get_le32(b + 20);
    if (h->valid && ((h->flags & ~OPSTATE__FLASH_RESTART) != 0 || h->first >= fs->dev.sector_size ||
                     (h->first != 0 && (h->first < fs->header_size || h->first % fs->dev.prog_size != 0))))
        h->valid = false;
    return OPSTATE_OK;
}

/* Whether sector s belongs to the run (the newest chain of sectors). */
OPSTATE__PRIVATE bool opstate__flash_in_run(const opstate_flash *fs, uint32_t s)
{
    return fs->run_len > 0 && opstate__flash_distance(fs, fs->run_first, s) < fs->run_len;
}

/* Moves p to the sector after its own in the run and reads that sector's
   header: NOT_FOUND past the run's end. */
OPSTATE__PRIVATE opstate_result opstate__flash_step(const opstate_flash *fs, opstate__flash_pos *p,
                                                    opstate__flash_header *h, opstate_error *err)
{
    uint32_t s = opstate__flash_next_sector(fs, p->sector);
    opstate__flash_header cur;
    opstate_result r;
    if (s == fs->run_first || !opstate__flash_in_run(fs, s)) return OPSTATE_NOT_FOUND;
    if ((r = opstate__flash_header_read(fs, p->sector, &cur, err)) != OPSTATE_OK ||
        (r = opstate__flash_header_read(fs, s, h, err)) != OPSTATE_OK)
        return r;
    /* a continuation follows its sector by one; only a restart may jump */
    if (!h->valid || !cur.valid || h->seq <= cur.seq ||
        (!(h->flags & OPSTATE__FLASH_RESTART) && h->seq != cur.seq + 1))
        return OPSTATE_NOT_FOUND;
    p->sector = s;
    p->offset = fs->header_size;
    return OPSTATE_OK;
}

/* Reads n bytes (a multiple of the unit) of one record from *p on,
   following it into the next sectors of the run; *p moves past them.
   NOT_FOUND when the record would run past the run or into a restart. */
OPSTATE__PRIVATE opstate_result opstate__flash_read_on(const opstate_flash *fs, opstate__flash_pos *p, uint8_t *buf,
                                                       uint32_t n, opstate_error *err)
{
    opstate__flash_header h;
    opstate_result r;
    while (n > 0) {
        uint32_t chunk = fs->dev.sector_size - p->offset;
        if (chunk == 0) {
            if ((r = opstate__flash_step(fs, p, &h, err)) != OPSTATE_OK) return r;
            if (h.flags & OPSTATE__FLASH_RESTART) return OPSTATE_NOT_FOUND;
            continue;
        }
        if (chunk > n) chunk = n;
        if ((r = opstate__flash_read(fs, opstate__flash_addr(fs, *p), buf, chunk, err)) != OPSTATE_OK) return r;
        p->offset += chunk;
        buf += chunk;
        n -= chunk;
    }
    return OPSTATE_OK;
}

/* Bytes the work buffer can take in one program or read (whole units). */
OPSTATE__PRIVATE uint32_t opstate__flash_chunk(const opstate_flash *fs)
{
    return fs->work_size & ~(fs->dev.prog_size - 1);
}

/* Checks the CRC of the record at p (len bytes before padding, padded to
   `padded`): reads it through the work buffer, which then holds the whole
   record when it fits. *ok false on a mismatch or a record that runs off
   the run; *p moves past the record. */
OPSTATE__PRIVATE opstate_result opstate__flash_body_check(const opstate_flash *fs, opstate__flash_pos *p, uint32_t len,
                                                          uint32_t padded, bool *ok, opstate_error *err)
{
    uint32_t done = 0, crc = 0, cap = opstate__flash_chunk(fs);
    uint8_t tail[4];
    *ok = false;
    while (done < padded) {
        uint32_t n = padded - done < cap ? padded - done : cap, i;
        opstate_result r = opstate__flash_read_on(fs, p, fs->work, n, err);
        if (r == OPSTATE_NOT_FOUND) return OPSTATE_OK;
        if (r != OPSTATE_OK) return r;
        for (i = 0; i < n; i++) /* the stored CRC: bytes len-4 .. len-1 */
            if (done + i >= len - 4 && done + i < len) tail[done + i - (len - 4)] = fs->work[i];
        if (done < len - 4) crc = opstate_crc32c(crc, fs->work, (len - 4 - done) < n ? len - 4 - done : n);
        done += n;
    }
    *ok = crc == opstate_get_le32(tail);
    return OPSTATE_OK;
}

/* What sits at a record position. */
typedef enum opstate__flash_verdict {
    OPSTATE__FLASH_VALID = 0,
    OPSTATE__FLASH_ERASED, /* nothing written here */
    OPSTATE__FLASH_DAMAGED /* a torn or corrupt record */
} opstate__flash_verdict;

/* Bytes of a record header read from flash (whole units). */
OPSTATE__PRIVATE uint32_t opstate__flash_header_read_size(const opstate_flash *fs)
{
    return opstate__flash_round(fs, OPSTATE__FLASH_RECORD_HEADER);
}

/* Checks the record at p (its header lies in p's sector): both CRCs, the
   fields' bounds; fills *rec when it is valid. */
OPSTATE__PRIVATE opstate_result opstate__flash_record_try(const opstate_flash *fs, opstate__flash_pos p,
                                                          opstate__flash_record *rec, opstate__flash_verdict *v,
                                                          opstate_error *err)
{
    uint8_t b[32];
    uint64_t len;
    bool ok;
    opstate_result r = opstate__flash_read(fs, opstate__flash_addr(fs, p), b, opstate__flash_header_read_size(fs), err);
    if (r != OPSTATE_OK) return r;
    *v = OPSTATE__FLASH_DAMAGED;
    if (opstate__flash_all_erased(fs, b, opstate__flash_header_read_size(fs))) *v = OPSTATE__FLASH_ERASED;
    if (*v == OPSTATE__FLASH_ERASED || opstate_crc32c(0, b, 12) != opstate_get_le32(b + 12)) return OPSTATE_OK;
    rec->type = b[0];
    rec->key_len = opstate_get_le16(b + 2);
    rec->value_len = opstate_get_le32(b + 4);
    rec->txn = opstate_get_le32(b + 8);
    len = (uint64_t)OPSTATE__FLASH_RECORD_HEADER + rec->key_len + rec->value_len + 4u +
          (b[0] == OPSTATE__FLASH_COMMIT ? 0u : OPSTATE__FLASH_ENTRY_POSITION);
    if (b[1] != 0 || rec->type < OPSTATE__FLASH_PUT || rec->type > OPSTATE__FLASH_COMMIT) return OPSTATE_OK;
    if (rec->type == OPSTATE__FLASH_COMMIT ? rec->key_len != OPSTATE__FLASH_COMMIT_META : rec->key_len == 0)
        return OPSTATE_OK;
    if (rec->type == OPSTATE__FLASH_DELETE && rec->value_len != 0) return OPSTATE_OK;
    if (len > (uint64_t)fs->dev.sector_size * fs->dev.sector_count ||
        (rec->type != OPSTATE__FLASH_COMMIT && opstate__flash_round(fs, len) > opstate__flash_chunk(fs)))
        return OPSTATE_OK;
    rec->padded = opstate__flash_round(fs, len);
    rec->at = rec->next = p;
    if ((r = opstate__flash_body_check(fs, &rec->next, (uint32_t)len, rec->padded, &ok, err)) != OPSTATE_OK) return r;
    if (ok) *v = OPSTATE__FLASH_VALID;
    return OPSTATE_OK;
}

/* After damage at it->pos: looks for the next valid record in the same
   sector (a header whose CRC holds at a unit boundary, then the whole
   record); none: the iterator goes on at the next sector's first record. */
OPSTATE__PRIVATE opstate_result opstate__flash_resync(const opstate_flash *fs, opstate__flash_iter *it,
                                                      opstate_error *err)
{
    uint32_t unit = fs->dev.prog_size, hn = opstate__flash_header_read_size(fs), cap = opstate__flash_chunk(fs);
    uint32_t off = it->pos.offset + unit, ss = fs->dev.sector_size;
    while (off + hn <= ss) {
        uint32_t n = ss - off < cap ? ss - off : cap, i;
        opstate__flash_record rec;
        opstate__flash_verdict v;
        opstate_result r = opstate__flash_read(fs, it->pos.sector * ss + off, fs->work, n, err);
        if (r != OPSTATE_OK) return r;
        for (i = 0; i + hn <= n; i += unit)
            if (opstate_crc32c(0, fs->work + i, 12) == opstate_get_le32(fs->work + i + 12)) break;
        if (i + hn > n) {
            if (off + n >= ss) break;
            off += i;
            continue;
        }
        it->pos.offset = off + i;
        if ((r = opstate__flash_record_try(fs, it->pos, &rec, &v, err)) != OPSTATE_OK) return r;
        if (v == OPSTATE__FLASH_VALID) return OPSTATE_OK;
        off += i + unit;
    }
    it->pos.offset = ss;
    it->resync = true;
    return OPSTATE_OK;
}

/* Records damage at p (the first since the last record is reported) and
   resynchronises after it. */
OPSTATE__PRIVATE opstate_result opstate__flash_damage(const opstate_flash *fs, opstate__flash_iter *it,
                                                      opstate__flash_pos p, opstate_error *err)
{
    if (!it->damaged) it->damage_at = p;
    it->damaged = true;
    it->pos = p;
    return opstate__flash_resync(fs, it, err);
}

/* Moves the iterator into the next sector of the run: NOT_FOUND at the end.
   A restart sector starts afresh; a continuation is entered at its first
   record after damage, and must start with one at a record boundary. */
OPSTATE__PRIVATE opstate_result opstate__flash_enter_next(const opstate_flash *fs, opstate__flash_iter *it,
                                                          opstate_error *err)
{
    opstate__flash_header h;
    opstate_result r = opstate__flash_step(fs, &it->pos, &h, err);
    if (r != OPSTATE_OK) return r;
    if (h.flags & OPSTATE__FLASH_RESTART) {
        it->restarted = true;
        it->resync = false;
        return OPSTATE_OK;
    }
    if (it->resync || h.first != fs->header_size) {
        if (!it->resync) { /* the previous sector ended at a record boundary */
            if (!it->damaged) it->damage_at = it->pos;
            it->damaged = true;
        }
        it->resync = h.first == 0;
        it->pos.offset = h.first == 0 ? fs->dev.sector_size : h.first;
    }
    return OPSTATE_OK;
}

/* The next valid record of the run (OK), or NOT_FOUND at the end; damage
   on the way is noted in the iterator and on the record. */
OPSTATE__PRIVATE opstate_result opstate__flash_next(const opstate_flash *fs, opstate__flash_iter *it,
                                                    opstate__flash_record *rec, opstate_error *err)
{
    for (;;) {
        opstate__flash_verdict v;
        opstate_result r;
        if (fs->dev.sector_size - it->pos.offset < opstate__flash_header_read_size(fs)) {
            if ((r = opstate__flash_enter_next(fs, it, err)) != OPSTATE_OK) return r;
            continue;
        }
        if ((r = opstate__flash_record_try(fs, it->pos, rec, &v, err)) != OPSTATE_OK) return r;
        if (v == OPSTATE__FLASH_VALID) {
            rec->after_damage = it->damaged;
            rec->after_restart = it->restarted;
            it->damaged = it->restarted = false;
            it->pos = rec->next;
            return OPSTATE_OK;
        }
        if (v == OPSTATE__FLASH_ERASED) { /* the log goes on in a restart sector, or ends */
            opstate__flash_pos hole = it->pos;
            it->pos.offset = fs->dev.sector_size;
            it->resync = true;
            if ((r = opstate__flash_enter_next(fs, it, err)) != OPSTATE_OK) {
                it->pos = hole;
                return r;
            }
            if (!it->restarted && !it->damaged) it->damage_at = hole; /* a hole mid-chain */
            if (!it->restarted) it->damaged = true;
            continue;
        }
        if ((r = opstate__flash_damage(fs, it, it->pos, err)) != OPSTATE_OK) return r;
    }
}

/* Starts an iterator at the first record that starts in sector s. */
OPSTATE__PRIVATE opstate_result opstate__flash_iter_start(const opstate_flash *fs, opstate__flash_iter *it, uint32_t s,
                                                          opstate_error *err)
{
    opstate__flash_header h;
    opstate_result r = opstate__flash_header_read(fs, s, &h, err);
    OPSTATE_MEMSET(it, 0, sizeof *it);
    if (r != OPSTATE_OK) return r;
    it->pos.sector = s;
    it->pos.offset = (h.flags & OPSTATE__FLASH_RESTART) ? fs->header_size : h.first;
    if (it->pos.offset == 0) {
        it->pos.offset = fs->dev.sector_size;
        it->resync = true;
    }
    return OPSTATE_OK;
}

/* A transaction as the open's scan follows it. */
typedef struct opstate__flash_txn_scan {
    bool open, committed, broken;
    uint32_t txn, entries;
    opstate__flash_pos start;
} opstate__flash_txn_scan;

/* Notes damage in the live chain (a later base makes it history). */
OPSTATE__PRIVATE void opstate__flash_mark_corrupt(opstate_flash *fs, opstate__flash_pos p)
{
    if (fs->corrupt) return;
    fs->corrupt = true;
    fs->corrupt_addr = opstate__flash_addr(fs, p);
}

/* Reads a commit record's fixed part (kind, flags, entries, meta). */
OPSTATE__PRIVATE opstate_result opstate__flash_commit_read(const opstate_flash *fs, opstate__flash_pos at,
                                                           uint8_t head[64], opstate_flash_meta *meta,
                                                           opstate_error *err)
{
    const uint8_t *m = head + OPSTATE__FLASH_RECORD_HEADER;
    opstate_result r = opstate__flash_read_on(fs, &at, head,
                                              opstate__flash_round(fs, OPSTATE__FLASH_RECORD_HEADER +
                                                                           OPSTATE__FLASH_COMMIT_META),
                                              err);
    if (r != OPSTATE_OK) return r;
    meta->schema_version = opstate_get_le32(m + 4);
    meta->position.seq = opstate_get_le64(m + 8);
    meta->position.time = (int64_t)opstate_get_le64(m + 16);
    meta->position.epoch = opstate_get_le64(m + 24);
    return OPSTATE_OK;
}

/* A commit record met by the scan: the transaction counts when every
   record of it checked and the count matches. */
OPSTATE__PRIVATE opstate_result opstate__flash_scan_commit(opstate_flash *fs, opstate__flash_txn_scan *sc,
                                                           const opstate__flash_record *rec, opstate_error *err)
{
    uint8_t head[64];
    const uint8_t *m = head + OPSTATE__FLASH_RECORD_HEADER;
    opstate_flash_meta meta;
    opstate_result r = opstate__flash_commit_read(fs, rec->at, head, &meta, err);
    if (r != OPSTATE_OK) return r;
    /* (a delta with no base before it in the run: its base is lost) */
    if (sc->broken || (m[0] != OPSTATE_FLASH_BASE && m[0] != OPSTATE_FLASH_DELTA) ||
        (m[1] & ~OPSTATE__FLASH_EMPTY) != 0 || opstate_get_le32(m + 32) != sc->entries ||
        (m[0] == OPSTATE_FLASH_DELTA && !fs->has_base)) {
        opstate__flash_mark_corrupt(fs, rec->at);
        return OPSTATE_OK;
    }
    sc->committed = true;
    if (m[0] == OPSTATE_FLASH_BASE) {
        fs->has_base = true;
        fs->corrupt = false; /* damage before a newer base is history */
        fs->base_sector = sc->start.sector;
        fs->base_offset = sc->start.offset;
        fs->has_state = (m[1] & OPSTATE__FLASH_EMPTY) == 0;
    } else {
        fs->has_state = true;
    }
    fs->meta = meta;
    fs->commit_sector = rec->at.sector;
    fs->commit_offset = rec->at.offset;
    fs->commit_end_sector = rec->next.sector;
    fs->commit_end_offset = rec->next.offset;
    fs->dedup_len = rec->value_len;
    return OPSTATE_OK;
}

/* One valid record met by the scan. */
OPSTATE__PRIVATE opstate_result opstate__flash_scan_record(opstate_flash *fs, opstate__flash_txn_scan *sc,
                                                           const opstate__flash_record *rec,
                                                           opstate__flash_pos damage_at, opstate_error *err)
{
    if (rec->after_damage && !rec->after_restart) opstate__flash_mark_corrupt(fs, damage_at);
    if (rec->after_damage && rec->after_restart) fs->stats.torn_tails++;
    if (!sc->open || rec->txn != sc->txn) {
        if (sc->open && !sc->committed) fs->stats.abandoned++;
        if (sc->open && rec->txn < sc->txn) opstate__flash_mark_corrupt(fs, rec->at); /* going back */
        OPSTATE_MEMSET(sc, 0, sizeof *sc);
        sc->open = true;
        sc->txn = rec->txn;
        sc->start = rec->at;
    } else if (rec->after_damage || rec->after_restart || sc->committed) {
        sc->broken = true;
        if (sc->committed) opstate__flash_mark_corrupt(fs, rec->at); /* a record after its commit */
    }
    if (rec->txn >= fs->next_txn) fs->next_txn = rec->txn + 1;
    if (rec->type == OPSTATE__FLASH_COMMIT) return opstate__flash_scan_commit(fs, sc, rec, err);
    sc->entries++;
    return OPSTATE_OK;
}

/* Where writing goes on after the scan: after the last record when the
   rest of the last sector reads erased, else in a fresh sector. (After a
   torn tail the position is the end of its sector, past the last commit:
   the next transaction reclaims it, see opstate__flash_dirty_tail.) */
OPSTATE__PRIVATE opstate_result opstate__flash_scan_end(opstate_flash *fs, const opstate__flash_iter *it,
                                                        opstate_error *err)
{
    uint32_t last = (fs->run_first + fs->run_len - 1) % fs->dev.sector_count;
    bool erased = false;
    opstate_result r;
    fs->have_sector = true;
    fs->wsector = last;
    fs->woffset = fs->dev.sector_size;
    if (it->damaged) fs->stats.torn_tails++;
    if (it->pos.sector != last) {
        fs->need_fresh = true;
        return OPSTATE_OK;
    }
    fs->woffset = it->pos.offset;
    if ((r = opstate__flash_check_erased(fs, last, fs->woffset, false, &erased, err)) != OPSTATE_OK) return r;
    if (!erased) {
        fs->stats.torn_tails++;
        fs->need_fresh = true;
    }
    return OPSTATE_OK;
}

/* Finds the run: the sector with the highest sequence and the sectors
   before it in the ring whose sequences go down (by one, except before a
   restart sector, which may follow a gap). */
OPSTATE__PRIVATE opstate_result opstate__flash_find_run(opstate_flash *fs, opstate_error *err)
{
    uint32_t s, newest = 0, seq = 0;
    opstate__flash_header h;
    opstate_result r;
    fs->stats.erase_count_min = UINT32_MAX;
    for (s = 0; s < fs->dev.sector_count; s++) {
        if ((r = opstate__flash_header_read(fs, s, &h, err)) != OPSTATE_OK) return r;
        if (!h.valid) continue;
        if (h.erase_count < fs->stats.erase_count_min) fs->stats.erase_count_min = h.erase_count;
        if (h.erase_count > fs->stats.erase_count_max) fs->stats.erase_count_max = h.erase_count;
        if (fs->run_len == 0 || h.seq > fs->wseq) {
            fs->run_len = 1;
            fs->wseq = h.seq;
            newest = s;
        }
    }
    if (fs->stats.erase_count_min == UINT32_MAX) fs->stats.erase_count_min = 0;
    fs->erase_estimate = fs->stats.erase_count_max;
    fs->run_first = newest;
    seq = fs->wseq;
    while (fs->run_len > 0 && fs->run_len < fs->dev.sector_count) {
        s = (fs->run_first + fs->dev.sector_count - 1) % fs->dev.sector_count;
        if ((r = opstate__flash_header_read(fs, s, &h, err)) != OPSTATE_OK) return r;
        if (!h.valid || h.seq >= seq) break;
        seq = h.seq;
        fs->run_first = s;
        fs->run_len++;
    }
    return OPSTATE_OK;
}

/* Reads the run's records in order and keeps the newest complete state. */
OPSTATE__PRIVATE opstate_result opstate__flash_scan(opstate_flash *fs, opstate_error *err)
{
    opstate__flash_iter it;
    opstate__flash_txn_scan sc;
    opstate__flash_record rec;
    opstate_result r = opstate__flash_iter_start(fs, &it, fs->run_first, err);
    OPSTATE_MEMSET(&sc, 0, sizeof sc);
    while (r == OPSTATE_OK) {
        opstate__flash_pos damage_at = it.damage_at;
        if ((r = opstate__flash_next(fs, &it, &rec, err)) != OPSTATE_OK) break;
        if (rec.after_damage) damage_at = it.damage_at;
        r = opstate__flash_scan_record(fs, &sc, &rec, damage_at, err);
    }
    if (r != OPSTATE_NOT_FOUND) return r;
    if (sc.open && !sc.committed) fs->stats.abandoned++;
    return opstate__flash_scan_end(fs, &it, err);
}

OPSTATE_API opstate_result opstate_flash_open(opstate_flash *fs, const opstate_flash_device *dev, void *work,
                                              size_t work_size, opstate_error *err)
{
    uint32_t unit = dev ? dev->prog_size : 0, shift = 0;
    opstate_result r;
    if (!fs || !dev || !work || !dev->read || !dev->prog || !dev->erase || unit == 0 || unit > 32 ||
        (unit & (unit - 1)) != 0 || dev->sector_count < 2 || dev->sector_size < 64 ||
        dev->sector_size % unit != 0 || (dev->erased != 0xFF && dev->erased != 0x00) || work_size < 64 ||
        work_size < 2u * unit || (uint64_t)dev->sector_size * dev->sector_count > UINT32_MAX)
        return opstate__fail(err, OPSTATE_INVALID_ARGUMENT, 0, "device");
    while ((1u << shift) < unit) shift++;
    OPSTATE_MEMSET(fs, 0, sizeof *fs);
    fs->dev = *dev;
    fs->work = (uint8_t *)work;
    fs->work_size = work_size > UINT32_MAX ? UINT32_MAX : (uint32_t)work_size;
    fs->unit_shift = shift;
    fs->header_size = opstate__flash_round(fs, OPSTATE__FLASH_SECTOR_HEADER);
    fs->next_txn = 1;
    if ((r = opstate__flash_find_run(fs, err)) != OPSTATE_OK) return r;
    if (fs->run_len == 0) return OPSTATE_OK;
    return opstate__flash_scan(fs, err);
}

OPSTATE_API opstate_result opstate_flash_read_meta(const opstate_flash *fs, opstate_flash_meta *meta,
                                                   size_t *dedup_len, opstate_error *err)
{
    if (fs->corrupt) return opstate__fail(err, OPSTATE_CORRUPT, fs->corrupt_addr, "record");
    if (!fs->has_state) return OPSTATE_NOT_FOUND;
    if (meta) *meta = fs->meta;
    if (dedup_len) *dedup_len = fs->dedup_len;
    return OPSTATE_OK;
}

/* Whether something follows the last commit (a torn tail, an abandoned
   transaction): the next write then reclaims it, going on in a fresh
   sector after the commit's. */
OPSTATE__PRIVATE bool opstate__flash_dirty_tail(const opstate_flash *fs)
{
    uint32_t end = fs->commit_end_offset, limit = fs->dev.sector_size - opstate__flash_header_read_size(fs);
    if (!fs->has_base) return fs->need_fresh;
    if (fs->need_fresh || fs->commit_end_sector != fs->wsector) return true;
    return end > limit ? fs->woffset <= limit : fs->woffset != end;
}

/* Sectors the live chain holds: from the live base's to the current one,
   or to the one where the last commit ends when what follows it is to be
   reclaimed. */
OPSTATE__PRIVATE uint32_t opstate__flash_live_sectors(const opstate_flash *fs)
{
    if (!fs->have_sector) return 0;
    if (!fs->has_base) return 1;
    return opstate__flash_distance(fs, fs->base_sector,
                                   opstate__flash_dirty_tail(fs) ? fs->commit_end_sector : fs->wsector) + 1;
}

/* Erases sector s and checks that it reads erased. */
OPSTATE__PRIVATE opstate_result opstate__flash_erase(opstate_flash *fs, uint32_t s, opstate_error *err)
{
    uint32_t addr = s * fs->dev.sector_size;
    bool erased;
    opstate_result r = opstate__flash_io(fs->dev.erase(fs->dev.user, addr), addr, "erase", err);
    if (r != OPSTATE_OK) return r;
    fs->stats.erases++;
    if ((r = opstate__flash_check_erased(fs, s, 0, true, &erased, err)) != OPSTATE_OK) return r;
    return erased ? OPSTATE_OK : opstate__fail(err, OPSTATE_IO, addr, "erase");
}

/* Erases the sectors after the one where the last commit ends, newest
   first (a cut leaves the newest remaining sector the end of the run), so
   that the next sector goes right after it. */
OPSTATE__PRIVATE opstate_result opstate__flash_reclaim(opstate_flash *fs, opstate_error *err)
{
    while (fs->has_base && fs->wsector != fs->commit_end_sector) {
        /* (the sector right after is erased when it is taken anew) */
        if (opstate__flash_distance(fs, fs->commit_end_sector, fs->wsector) > 1) {
            opstate_result r = opstate__flash_erase(fs, fs->wsector, err);
            if (r != OPSTATE_OK) return r;
        }
        fs->wsector = (fs->wsector + fs->dev.sector_count - 1) % fs->dev.sector_count;
        fs->run_len--;
    }
    return OPSTATE_OK;
}

/* Takes the next sector of the ring: erase, then its header (`first`: the
   offset of the first record that starts in it, 0 for none). NO_SPACE when
   that sector holds the live base (or the start of the transaction being
   written, when there is no base yet). */
OPSTATE__PRIVATE opstate_result opstate__flash_open_sector(opstate_flash *fs, uint32_t first, opstate_error *err)
{
    uint32_t s, count;
    uint8_t b[32];
    opstate__flash_header old;
    opstate_result r;
    if (fs->need_fresh && (r = opstate__flash_reclaim(fs, err)) != OPSTATE_OK) return r;
    s = fs->have_sector ? opstate__flash_next_sector(fs, fs->wsector) : 0;
    if (fs->have_sector && ((fs->has_base && s == fs->base_sector) ||
                            (!fs->has_base && fs->txn_started && s == fs->txn_start_sector)))
        return opstate__fail(err, OPSTATE_NO_SPACE, s * fs->dev.sector_size, "sector");
    if ((r = opstate__flash_header_read(fs, s, &old, err)) != OPSTATE_OK) return r;
    count = (old.valid ? old.erase_count : fs->erase_estimate) + 1;
    if ((r = opstate__flash_erase(fs, s, err)) != OPSTATE_OK) return r;
    if (count > fs->erase_estimate) fs->erase_estimate = count;
    if (count > fs->stats.erase_count_max) fs->stats.erase_count_max = count;
    OPSTATE_MEMSET(b, fs->dev.erased, sizeof b);
    OPSTATE_MEMCPY(b, "OPFL", 4);
    b[4] = OPSTATE__FLASH_VERSION;
    b[5] = (uint8_t)fs->unit_shift;
    b[6] = fs->need_fresh && fs->have_sector ? OPSTATE__FLASH_RESTART : 0;
    b[7] = 0;
    opstate_put_le32(b + 8, fs->dev.sector_size);
    opstate_put_le32(b + 12, fs->have_sector ? fs->wseq + 1 : 1);
    opstate_put_le32(b + 16, count);
    opstate_put_le32(b + 20, first);
    opstate_put_le32(b + 24, opstate_crc32c(0, b, 24));
    r = opstate__flash_io(fs->dev.prog(fs->dev.user, s * fs->dev.sector_size, b, fs->header_size),
                          s * fs->dev.sector_size, "program", err);
    if (r != OPSTATE_OK) return r;
    if (!fs->have_sector || fs->run_len == 0) {
        fs->run_first = s;
        fs->run_len = 0;
    } else if (fs->run_len == fs->dev.sector_count) { /* s was the run's oldest */
        fs->run_first = opstate__flash_next_sector(fs, fs->run_first);
        fs->run_len--;
    }
    fs->run_len++;
    fs->wseq = opstate_get_le32(b + 12);
    fs->wsector = s;
    fs->woffset = fs->header_size;
    fs->have_sector = true;
    fs->need_fresh = false;
    return OPSTATE_OK;
}

/* Programs n bytes (whole units) of the current record at the write
   position, taking new sectors as it goes. A failed program leaves the
   position unknown: writing goes on in a fresh sector. */
OPSTATE__PRIVATE opstate_result opstate__flash_program(opstate_flash *fs, const uint8_t *data, uint32_t n,
                                                       opstate_error *err)
{
    uint32_t payload = fs->dev.sector_size - fs->header_size;
    while (n > 0) {
        uint32_t chunk, addr;
        opstate_result r;
        if (!fs->have_sector || fs->need_fresh || fs->woffset == fs->dev.sector_size) {
            uint32_t first = !fs->rec_started ? fs->header_size
                                              : fs->rec_left < payload ? fs->header_size + fs->rec_left : 0;
            if ((r = opstate__flash_open_sector(fs, first, err)) != OPSTATE_OK) return r;
        }
        if (!fs->rec_started) {
            fs->rec_started = true;
            fs->rec_sector = fs->wsector;
            fs->rec_offset = fs->woffset;
            if (!fs->txn_started) {
                fs->txn_started = true;
                fs->txn_start_sector = fs->wsector;
                fs->txn_start_offset = fs->woffset;
            }
        }
        chunk = fs->dev.sector_size - fs->woffset < n ? fs->dev.sector_size - fs->woffset : n;
        addr = fs->wsector * fs->dev.sector_size + fs->woffset;
        if ((r = opstate__flash_io(fs->dev.prog(fs->dev.user, addr, data, chunk), addr, "program", err)) != OPSTATE_OK) {
            fs->need_fresh = true;
            return r;
        }
        fs->woffset += chunk;
        fs->rec_left -= chunk;
        data += chunk;
        n -= chunk;
    }
    return OPSTATE_OK;
}

/* Appends n bytes to the record being written (through the work buffer;
   a full buffer is programmed), into its CRC when `sum`. */
OPSTATE__PRIVATE opstate_result opstate__flash_stage(opstate_flash *fs, const uint8_t *p, size_t n, bool sum,
                                                     opstate_error *err)
{
    uint32_t cap = opstate__flash_chunk(fs);
    while (n > 0) {
        uint32_t take = cap - fs->staged;
        opstate_result r;
        if (take > n) take = (uint32_t)n;
        OPSTATE_MEMCPY(fs->work + fs->staged, p, take);
        if (sum) fs->rec_crc = opstate_crc32c(fs->rec_crc, p, take);
        fs->staged += take;
        p += take;
        n -= take;
        if (fs->staged == cap) {
            if ((r = opstate__flash_program(fs, fs->work, cap, err)) != OPSTATE_OK) return r;
            fs->staged = 0;
        }
    }
    return OPSTATE_OK;
}

/* Writes one whole record: header, key, middle (an entry's position),
   value, CRC, padding. */
OPSTATE__PRIVATE opstate_result opstate__flash_record_write(opstate_flash *fs, uint8_t type, opstate_bytes key,
                                                            opstate_bytes middle, opstate_bytes value,
                                                            opstate_error *err)
{
    uint8_t h[OPSTATE__FLASH_RECORD_HEADER], crc[4];
    uint32_t len = (uint32_t)(OPSTATE__FLASH_RECORD_HEADER + key.len + middle.len + value.len + 4u), pad;
    opstate_result r;
    h[0] = type;
    h[1] = 0;
    opstate_put_le16(h + 2, (uint16_t)key.len);
    opstate_put_le32(h + 4, (uint32_t)value.len);
    opstate_put_le32(h + 8, fs->txn);
    opstate_put_le32(h + 12, opstate_crc32c(0, h, 12));
    if (fs->have_sector && !fs->need_fresh && fs->dev.sector_size - fs->woffset < opstate__flash_header_read_size(fs))
        fs->woffset = fs->dev.sector_size; /* a record header never spans two sectors */
    fs->rec_left = opstate__flash_round(fs, len);
    fs->rec_started = false;
    fs->staged = 0;
    fs->rec_crc = 0;
    if ((r = opstate__flash_stage(fs, h, sizeof h, true, err)) != OPSTATE_OK ||
        (r = opstate__flash_stage(fs, key.ptr, key.len, true, err)) != OPSTATE_OK ||
        (r = opstate__flash_stage(fs, middle.ptr, middle.len, true, err)) != OPSTATE_OK ||
        (r = opstate__flash_stage(fs, value.ptr, value.len, true, err)) != OPSTATE_OK)
        return r;
    opstate_put_le32(crc, fs->rec_crc);
    if ((r = opstate__flash_stage(fs, crc, sizeof crc, false, err)) != OPSTATE_OK) return r;
    pad = opstate__flash_round(fs, fs->staged) - fs->staged;
    OPSTATE_MEMSET(fs->work + fs->staged, fs->dev.erased, pad);
    return fs->staged + pad == 0 ? OPSTATE_OK : opstate__flash_program(fs, fs->work, fs->staged + pad, err);
}

OPSTATE_API uint64_t opstate_flash_entry_size(const opstate_flash *fs, size_t key_len, size_t value_len)
{
    return opstate__flash_round64(fs, (uint64_t)OPSTATE__FLASH_RECORD_HEADER + key_len +
                                          OPSTATE__FLASH_ENTRY_POSITION + value_len + 4u);
}

OPSTATE_API uint64_t opstate_flash_commit_size(const opstate_flash *fs, size_t dedup_len)
{
    return opstate__flash_round64(fs, (uint64_t)OPSTATE__FLASH_RECORD_HEADER + OPSTATE__FLASH_COMMIT_META + dedup_len +
                                          4u);
}

/* Bytes that can still be written without touching the live chain; a
   sector's tail too short for a record header counts as lost. */
OPSTATE__PRIVATE uint64_t opstate__flash_free_bytes(const opstate_flash *fs)
{
    uint64_t per_sector = fs->dev.sector_size - fs->header_size - opstate__flash_header_read_size(fs);
    uint64_t bytes = (uint64_t)(fs->dev.sector_count - opstate__flash_live_sectors(fs)) * per_sector;
    uint32_t rest = fs->dev.sector_size - fs->woffset;
    if (fs->have_sector && !opstate__flash_dirty_tail(fs) && rest >= opstate__flash_header_read_size(fs))
        bytes += rest - opstate__flash_header_read_size(fs);
    return bytes;
}

OPSTATE_API opstate_result opstate_flash_plan(const opstate_flash *fs, uint64_t delta_bytes, uint64_t base_bytes,
                                              opstate_flash_kind *kind)
{
    uint64_t free_bytes = opstate__flash_free_bytes(fs);
    uint64_t sector = fs->dev.sector_size - fs->header_size;
    if (fs->has_base && !fs->corrupt && delta_bytes + base_bytes + 2 * sector <= free_bytes)
        *kind = OPSTATE_FLASH_DELTA;
    else if (base_bytes <= free_bytes)
        *kind = OPSTATE_FLASH_BASE;
    else
        return OPSTATE_NO_SPACE;
    return OPSTATE_OK;
}

OPSTATE_API opstate_result opstate_flash_begin(opstate_flash *fs, opstate_flash_kind kind, opstate_error *err)
{
    if (kind != OPSTATE_FLASH_BASE && kind != OPSTATE_FLASH_DELTA)
        return opstate__fail(err, OPSTATE_INVALID_ARGUMENT, 0, "kind");
    if (kind == OPSTATE_FLASH_DELTA && fs->corrupt)
        return opstate__fail(err, OPSTATE_CORRUPT, fs->corrupt_addr, "record");
    if (kind == OPSTATE_FLASH_DELTA && !fs->has_base) return opstate__fail(err, OPSTATE_INVALID_ARGUMENT, 0, "kind");
    if (opstate__flash_dirty_tail(fs)) fs->need_fresh = true;
    fs->txn_kind = (int)kind;
    fs->txn = fs->next_txn++;
    fs->txn_entries = 0;
    fs->txn_started = false;
    return OPSTATE_OK;
}

OPSTATE_API opstate_result opstate_flash_put(opstate_flash *fs, const opstate_flash_entry *entry, opstate_error *err)
{
    uint8_t where[OPSTATE__FLASH_ENTRY_POSITION];
    opstate_bytes middle, value = entry->value;
    opstate_result r;
    if (!fs->txn_kind || entry->key.len == 0 || !entry->key.ptr)
        return opstate__fail(err, OPSTATE_INVALID_ARGUMENT, 0, "key");
    if (entry->deleted) value.len = 0;
    if (entry->key.len > 0xFFFFu || opstate_flash_entry_size(fs, entry->key.len, value.len) > opstate__flash_chunk(fs))
        return opstate__fail(err, OPSTATE_OVERSIZED, 0, "entry");
    opstate_put_le64(where, entry->position.seq);
    opstate_put_le64(where + 8, (uint64_t)entry->position.time);
    middle.ptr = where;
    middle.len = sizeof where;
    r = opstate__flash_record_write(fs, entry->deleted ? OPSTATE__FLASH_DELETE : OPSTATE__FLASH_PUT, entry->key, middle,
                                    value, err);
    if (r != OPSTATE_OK) {
        fs->txn_kind = 0; /* abandoned: nothing of it counts */
        return r;
    }
    fs->txn_entries++;
    return OPSTATE_OK;
}

/* Writes the commit record; on OK the transaction is the stored state. */
OPSTATE__PRIVATE opstate_result opstate__flash_commit(opstate_flash *fs, const opstate_flash_meta *meta,
                                                      opstate_bytes dedup, uint8_t flags, opstate_error *err)
{
    uint8_t m[OPSTATE__FLASH_COMMIT_META];
    opstate_bytes key, none;
    opstate_result r;
    if (!fs->txn_kind) return opstate__fail(err, OPSTATE_INVALID_ARGUMENT, 0, "transaction");
    if (dedup.len > UINT32_MAX / 2) return opstate__fail(err, OPSTATE_OVERSIZED, 0, "dedup");
    m[0] = (uint8_t)fs->txn_kind;
    m[1] = flags;
    opstate_put_le16(m + 2, 0);
    opstate_put_le32(m + 4, meta->schema_version);
    opstate_put_le64(m + 8, meta->position.seq);
    opstate_put_le64(m + 16, (uint64_t)meta->position.time);
    opstate_put_le64(m + 24, meta->position.epoch);
    opstate_put_le32(m + 32, fs->txn_entries);
    key.ptr = m;
    key.len = sizeof m;
    none.ptr = NULL;
    none.len = 0;
    r = opstate__flash_record_write(fs, OPSTATE__FLASH_COMMIT, key, none, dedup, err);
    if (r != OPSTATE_OK) {
        fs->txn_kind = 0;
        return r;
    }
    if (fs->txn_kind == OPSTATE_FLASH_BASE) {
        fs->has_base = true;
        fs->corrupt = false;
        fs->base_sector = fs->txn_start_sector;
        fs->base_offset = fs->txn_start_offset;
    }
    fs->has_state = (flags & OPSTATE__FLASH_EMPTY) == 0;
    fs->meta = *meta;
    fs->commit_sector = fs->rec_sector;
    fs->commit_offset = fs->rec_offset;
    fs->commit_end_sector = fs->wsector;
    fs->commit_end_offset = fs->woffset;
    fs->dedup_len = (uint32_t)dedup.len;
    fs->txn_kind = 0;
    return OPSTATE_OK;
}

OPSTATE_API opstate_result opstate_flash_commit(opstate_flash *fs, const opstate_flash_meta *meta, opstate_bytes dedup,
                                                opstate_error *err)
{
    return opstate__flash_commit(fs, meta, dedup, 0, err);
}

OPSTATE_API opstate_result opstate_flash_drop(opstate_flash *fs, opstate_error *err)
{
    opstate_flash_meta none;
    opstate_bytes empty;
    opstate_result r = opstate_flash_begin(fs, OPSTATE_FLASH_BASE, err);
    if (r != OPSTATE_OK) return r;
    OPSTATE_MEMSET(&none, 0, sizeof none);
    empty.ptr = NULL;
    empty.len = 0;
    return opstate__flash_commit(fs, &none, empty, OPSTATE__FLASH_EMPTY, err);
}

OPSTATE_API opstate_flash_stats opstate_flash_get_stats(const opstate_flash *fs)
{
    opstate_flash_stats st = fs->stats;
    uint32_t payload = fs->dev.sector_size - fs->header_size;
    st.live_sectors = opstate__flash_live_sectors(fs);
    st.live_bytes = 0;
    if (fs->has_base && st.live_sectors == 1)
        st.live_bytes = fs->woffset - fs->base_offset;
    else if (fs->has_base)
        st.live_bytes = (uint64_t)(st.live_sectors - 2) * payload + (fs->dev.sector_size - fs->base_offset) +
                        (fs->woffset - fs->header_size);
    return st;
}

/* Whether the transaction whose first record is `rec` (the iterator just
   past it) has its commit: looks ahead without moving the iterator. */
OPSTATE__PRIVATE opstate_result opstate__flash_committed(const opstate_flash *fs, opstate__flash_iter ahead,
                                                         const opstate__flash_record *rec, bool *committed,
                                                         opstate_error *err)
{
    opstate__flash_record next;
    opstate_result r = OPSTATE_OK;
    *committed = rec->type == OPSTATE__FLASH_COMMIT;
    while (!*committed) {
        if ((r = opstate__flash_next(fs, &ahead, &next, err)) != OPSTATE_OK) break;
        if (next.txn != rec->txn || next.after_damage || next.after_restart) break;
        *committed = next.type == OPSTATE__FLASH_COMMIT;
    }
    return r == OPSTATE_NOT_FOUND ? OPSTATE_OK : r;
}

/* Copies n bytes of the record at `at`, from byte `skip` of it on, to dst. */
OPSTATE__PRIVATE opstate_result opstate__flash_copy_out(const opstate_flash *fs, opstate__flash_pos at, uint32_t skip,
                                                        uint8_t *dst, uint32_t n, opstate_error *err)
{
    uint32_t total = opstate__flash_round(fs, (uint64_t)skip + n), done = 0, cap = opstate__flash_chunk(fs);
    while (done < total) {
        uint32_t len = total - done < cap ? total - done : cap, from = done > skip ? done : skip;
        uint32_t to = done + len < skip + n ? done + len : skip + n;
        opstate_result r = opstate__flash_read_on(fs, &at, fs->work, len, err);
        if (r != OPSTATE_OK) return r == OPSTATE_NOT_FOUND ? OPSTATE_CORRUPT : r;
        if (to > from) OPSTATE_MEMCPY(dst + (from - skip), fs->work + (from - done), to - from);
        done += len;
    }
    return OPSTATE_OK;
}

/* Hands the entry record the work buffer holds to fn. */
OPSTATE__PRIVATE opstate_result opstate__flash_deliver(const opstate_flash *fs, const opstate__flash_record *rec,
                                                       opstate_flash_entry_fn fn, void *user)
{
    opstate_flash_entry e;
    const uint8_t *where = fs->work + OPSTATE__FLASH_RECORD_HEADER + rec->key_len;
    e.key.ptr = fs->work + OPSTATE__FLASH_RECORD_HEADER;
    e.key.len = rec->key_len;
    e.deleted = rec->type == OPSTATE__FLASH_DELETE;
    e.value.ptr = e.deleted ? NULL : where + OPSTATE__FLASH_ENTRY_POSITION;
    e.value.len = rec->value_len;
    e.position.seq = opstate_get_le64(where);
    e.position.time = (int64_t)opstate_get_le64(where + 8);
    e.position.epoch = 0;
    return fn(user, &e);
}

/* Walks the live chain from the base to the last commit, handing the
   entries of every committed transaction to fn. */
OPSTATE__PRIVATE opstate_result opstate__flash_replay(opstate_flash *fs, opstate_flash_entry_fn fn, void *user,
                                                      opstate_error *err)
{
    opstate__flash_iter it, saved;
    opstate__flash_record rec;
    bool started = false, committed = false;
    uint32_t txn = 0;
    opstate_result r;
    OPSTATE_MEMSET(&it, 0, sizeof it);
    it.pos.sector = fs->base_sector;
    it.pos.offset = fs->base_offset;
    for (;;) {
        saved = it;
        if ((r = opstate__flash_next(fs, &it, &rec, err)) != OPSTATE_OK) break;
        if (!started || rec.txn != txn) {
            started = true;
            txn = rec.txn;
            if ((r = opstate__flash_committed(fs, it, &rec, &committed, err)) != OPSTATE_OK) break;
            it = saved; /* read it again: the look-ahead used the work buffer */
            if ((r = opstate__flash_next(fs, &it, &rec, err)) != OPSTATE_OK) break;
        }
        if (committed && rec.type != OPSTATE__FLASH_COMMIT && (r = opstate__flash_deliver(fs, &rec, fn, user)) != OPSTATE_OK)
            return r;
        if (rec.at.sector == fs->commit_sector && rec.at.offset == fs->commit_offset) return OPSTATE_OK;
    }
    /* the scan saw the last commit: not finding it now is damage */
    return r == OPSTATE_NOT_FOUND ? opstate__fail(err, OPSTATE_CORRUPT, opstate__flash_addr(fs, it.pos), "record") : r;
}

OPSTATE_API opstate_result opstate_flash_load(opstate_flash *fs, opstate_flash_entry_fn fn, void *user,
                                              opstate_flash_meta *meta, uint8_t *dedup, size_t cap,
                                              size_t *dedup_len, opstate_error *err)
{
    opstate__flash_pos at;
    opstate_result r = opstate_flash_read_meta(fs, NULL, NULL, err);
    if (r != OPSTATE_OK) return r;
    if (fs->txn_kind) return opstate__fail(err, OPSTATE_INVALID_ARGUMENT, 0, "transaction");
    if (dedup && cap < fs->dedup_len) return opstate__fail(err, OPSTATE_BUFFER_TOO_SMALL, 0, "dedup");
    if ((r = opstate__flash_replay(fs, fn, user, err)) != OPSTATE_OK) return r;
    at.sector = fs->commit_sector;
    at.offset = fs->commit_offset;
    if (dedup && fs->dedup_len > 0 &&
        (r = opstate__flash_copy_out(fs, at, OPSTATE__FLASH_RECORD_HEADER + OPSTATE__FLASH_COMMIT_META, dedup,
                                     fs->dedup_len, err)) != OPSTATE_OK)
        return r;
    if (meta) *meta = fs->meta;
    if (dedup_len) *dedup_len = fs->dedup_len;
    return OPSTATE_OK;
}


/* >>alloc ---------------------------------------------------------------- */

#ifndef OPSTATE_NO_MALLOC
#ifndef OPSTATE_NO_STDLIB
#include <stdlib.h>
#endif

OPSTATE_API void *opstate_alloc(const opstate_allocator *a, size_t n)
{
    if (a->alloc) return a->alloc(a->user, n);
#ifndef OPSTATE_NO_STDLIB
    return malloc(n);
#else
    return NULL;
#endif
}

/* n * size in *out; false when it overflows size_t. */
OPSTATE__PRIVATE bool opstate__array_bytes(size_t n, size_t size, size_t *out)
{
    if (size && n > SIZE_MAX / size) return false;
    *out = n * size;
    return true;
}

OPSTATE_API void opstate_free(const opstate_allocator *a, void *p)
{
    if (!p) return;
    if (a->free) {
        a->free(a->user, p);
        return;
    }
#ifndef OPSTATE_NO_STDLIB
    free(p);
#endif
}

/* A log line built without printf: text and numbers appended to a fixed
   buffer, cut (with "...") when it would overflow. */
typedef struct opstate__msg {
    char text[256];
    size_t len;
} opstate__msg;

OPSTATE__PRIVATE opstate__msg *opstate__msg_str(opstate__msg *m, const char *s)
{
    while (*s && m->len < sizeof m->text - 4) m->text[m->len++] = *s++;
    if (*s) {
        OPSTATE_MEMCPY(m->text + m->len, "...", 3);
        m->len += 3;
    }
    m->text[m->len] = '\0';
    return m;
}

OPSTATE__PRIVATE opstate__msg *opstate__msg_u64(opstate__msg *m, uint64_t v)
{
    char digits[21];
    size_t n = 20;
    digits[20] = '\0';
    do {
        digits[--n] = (char)('0' + (int)(v % 10u));
        v /= 10u;
    } while (v);
    return opstate__msg_str(m, digits + n);
}

OPSTATE_API void opstate_diag_line(const opstate_diag *d, opstate_diag_level level, const char *a, uint64_t n,
                                   const char *b)
{
    opstate__msg m;
    if (!d->fn) return;
    m.len = 0;
    opstate__msg_str(opstate__msg_u64(opstate__msg_str(&m, a), n), b);
    d->fn(d->user, level, m.text);
}

OPSTATE_API opstate_result opstate_error_set(opstate_error *err, opstate_result r, const char *field,
                                             long dep_status)
{
    opstate__fail(err, r, 0, field);
    if (err) err->dep_status = dep_status;
    return r;
}

/* >>kv ------------------------------------------------------------------- */

#define OPSTATE__KV_TOMB 2u    /* deleted; kept while dirty or hiding a base key */
#define OPSTATE__KV_IN_BASE 4u /* the base held the key when the entry was made */
#define OPSTATE__KV_SEEN 8u    /* resync mark */
#define OPSTATE__KV_FLAGS 15u  /* the bits above hold the generation the entry was last marked dirty in */
#define OPSTATE__KV_GEN_SHIFT 4u
#ifndef OPSTATE__KV_GENERATIONS /* a test shrinks it to reach the wrap */
#define OPSTATE__KV_GENERATIONS (1u << 28)
#endif
#define OPSTATE__KV_MIN_SLOTS 16u

typedef struct opstate__kv_entry {
    struct opstate__kv_entry *dirty_next;
    uint8_t *value; /* NULL, the room after the key, or an allocation of its own */
    uint64_t hash;
    uint64_t seq;
    int64_t time;
    uint32_t key_len, value_len;
    uint32_t room; /* bytes after the key for a value: the one it was created with fits */
    uint32_t flags;
} opstate__kv_entry; /* the key bytes follow the struct, then `room` bytes */

struct opstate_kv {
    opstate_allocator a;
    const opstate_kv_base *base;
    size_t max_key_len;
    opstate__kv_entry **slots;
    uint32_t *tags; /* high half of each slot's hash: probes compare it without touching the entry */
    uint64_t key[2]; /* the fold's SipHash key (>>hash) */
    uint32_t mask, used;
    opstate__kv_entry *dirty; /* the dirty entries: marked in generation `gen` */
    uint32_t dirty_count, gen;
    uint64_t dirty_bytes; /* key + value bytes of the dirty entries */
    bool dirty_tombs;     /* a delete since the last mark_clean */
    int64_t live_delta; /* sum over entries of live - in_base */
    size_t memory;
};

OPSTATE__PRIVATE uint8_t *opstate__kv_key(const opstate__kv_entry *e)
{
    return (uint8_t *)(uintptr_t)(e + 1);
}

OPSTATE__PRIVATE uint8_t *opstate__kv_room(const opstate__kv_entry *e) { return opstate__kv_key(e) + e->key_len; }

/* Dirty: marked in the fold's current generation (opstate_kv_mark_clean
   starts a new one, so it need not visit the entries). */
OPSTATE__PRIVATE bool opstate__kv_dirty(const opstate_kv *kv, const opstate__kv_entry *e)
{
    return (e->flags >> OPSTATE__KV_GEN_SHIFT) == kv->gen;
}

/* Frees the value when it has an allocation of its own; e holds none after. */
OPSTATE__PRIVATE void opstate__kv_drop_value(opstate_kv *kv, opstate__kv_entry *e)
{
    if (e->value && e->value != opstate__kv_room(e)) {
        opstate_free(&kv->a, e->value);
        kv->memory -= e->value_len;
    }
    if (opstate__kv_dirty(kv, e)) kv->dirty_bytes -= e->value_len;
    e->value = NULL;
    e->value_len = 0;
}

/* Gives e a copy of value: in its room when it fits (and does not overlap
   it), else in an allocation of its own. On failure nothing changed. */
OPSTATE__PRIVATE opstate_result opstate__kv_set_value(opstate_kv *kv, opstate__kv_entry *e, opstate_bytes value)
{
    uint8_t *room = opstate__kv_room(e), *dst = room;
    uintptr_t at = (uintptr_t)value.ptr, lo = (uintptr_t)room;
    if (value.len > e->room || (value.len && at < lo + e->room && at + value.len > lo)) {
        if (!(dst = (uint8_t *)opstate_alloc(&kv->a, value.len))) return OPSTATE_NO_MEMORY;
        kv->memory += value.len;
    }
    if (value.len) OPSTATE_MEMCPY(dst, value.ptr, value.len);
    opstate__kv_drop_value(kv, e);
    e->value = value.len ? dst : NULL;
    e->value_len = (uint32_t)value.len;
    if (opstate__kv_dirty(kv, e)) kv->dirty_bytes += value.len;
    return OPSTATE_OK;
}

/* The fold's hash of a key: SipHash under the fold's own key (a producer
   chooses the keys). */
OPSTATE__PRIVATE uint64_t opstate__kv_hash(const opstate_kv *kv, const uint8_t *p, size_t n)
{
    return opstate__siphash(kv->key, p, n);
}

OPSTATE__PRIVATE int opstate__key_compare(const uint8_t *a, size_t an, const uint8_t *b, size_t bn)
{
    int c = (an && bn) ? OPSTATE_MEMCMP(a, b, an < bn ? an : bn) : 0;
    if (c) return c;
    return an < bn ? -1 : an > bn ? 1 : 0;
}

OPSTATE__PRIVATE uint32_t opstate__kv_tag(uint64_t h) { return (uint32_t)(h >> 32); }

/* Slot holding key, or the empty slot where it would go. */
OPSTATE__PRIVATE uint32_t opstate__kv_find(const opstate_kv *kv, const uint8_t *key, size_t len, uint64_t h)
{
    uint32_t i = (uint32_t)h & kv->mask, tag = opstate__kv_tag(h);
    for (;; i = (i + 1) & kv->mask) {
        const opstate__kv_entry *e = kv->slots[i];
        if (!e || (kv->tags[i] == tag && e->key_len == len && OPSTATE_MEMCMP(opstate__kv_key(e), key, len) == 0))
            return i;
    }
}

/* Puts an entry (or NULL) in slot i, with its tag. */
OPSTATE__PRIVATE void opstate__kv_place(opstate_kv *kv, uint32_t i, opstate__kv_entry *e)
{
    kv->slots[i] = e;
    kv->tags[i] = e ? opstate__kv_tag(e->hash) : 0;
}

/* Slots and tags live in one allocation. */
OPSTATE__PRIVATE opstate_result opstate__kv_resize(opstate_kv *kv, uint32_t nslots)
{
    opstate__kv_entry **old = kv->slots, **fresh;
    uint32_t old_n = kv->slots ? kv->mask + 1 : 0, i;
    size_t per = sizeof *fresh + sizeof(uint32_t), bytes;
    if (nslots > (UINT32_MAX / 2u) || !opstate__array_bytes(nslots, per, &bytes)) return OPSTATE_NO_MEMORY;
    fresh = (opstate__kv_entry **)opstate_alloc(&kv->a, bytes);
    if (!fresh) return OPSTATE_NO_MEMORY;
    OPSTATE_MEMSET(fresh, 0, bytes);
    kv->slots = fresh;
    kv->tags = (uint32_t *)(void *)(fresh + nslots);
    kv->mask = nslots - 1;
    for (i = 0; i < old_n; i++)
        if (old[i]) opstate__kv_place(kv, opstate__kv_find(kv, opstate__kv_key(old[i]), old[i]->key_len, old[i]->hash), old[i]);
    opstate_free(&kv->a, old);
    kv->memory = kv->memory - (size_t)old_n * per + bytes;
    return OPSTATE_OK;
}

OPSTATE_API opstate_result opstate_kv_reserve(opstate_kv *kv, uint64_t keys)
{
    uint64_t want = (uint64_t)kv->used + keys, n = (uint64_t)kv->mask + 1;
    while (want * 4u > n * 3u && n <= (UINT32_MAX / 4u)) n *= 2;
    if (want * 4u > n * 3u) return OPSTATE_NO_MEMORY;
    return n > (uint64_t)kv->mask + 1 ? opstate__kv_resize(kv, (uint32_t)n) : OPSTATE_OK;
}

OPSTATE_API opstate_result opstate_kv_create(const opstate_kv_config *cfg, opstate_kv **out)
{
    opstate_kv_config defaults;
    opstate_kv *kv;
    if (!cfg) {
        OPSTATE_MEMSET(&defaults, 0, sizeof defaults);
        cfg = &defaults;
    }
    kv = (opstate_kv *)opstate_alloc(&cfg->allocator, sizeof *kv);
    if (!kv) return OPSTATE_NO_MEMORY;
    OPSTATE_MEMSET(kv, 0, sizeof *kv);
    kv->a = cfg->allocator;
    kv->base = cfg->base;
    kv->max_key_len = cfg->max_key_len && cfg->max_key_len < OPSTATE_MAX_KEY_LEN ? cfg->max_key_len : OPSTATE_MAX_KEY_LEN;
    kv->memory = sizeof *kv;
    kv->gen = 1; /* new entries carry generation 0: clean */
    opstate__hash_key_new(kv->key, (uintptr_t)kv);
    if (opstate__kv_resize(kv, OPSTATE__KV_MIN_SLOTS) != OPSTATE_OK) {
        opstate_free(&cfg->allocator, kv);
        return OPSTATE_NO_MEMORY;
    }
    *out = kv;
    return OPSTATE_OK;
}

OPSTATE__PRIVATE void opstate__kv_free_entry(opstate_kv *kv, opstate__kv_entry *e)
{
    opstate__kv_drop_value(kv, e);
    kv->memory -= sizeof *e + e->key_len + e->room;
    opstate_free(&kv->a, e);
}

/* Starts a new generation: every entry marked in the last one is clean.
   At the wrap no entry may keep a mark a later generation would reuse. */
OPSTATE__PRIVATE void opstate__kv_next_generation(opstate_kv *kv)
{
    uint32_t i;
    kv->dirty = NULL;
    kv->dirty_count = 0;
    kv->dirty_bytes = 0;
    kv->dirty_tombs = false;
    if (++kv->gen < OPSTATE__KV_GENERATIONS) return;
    for (i = 0; i <= kv->mask; i++)
        if (kv->slots[i]) kv->slots[i]->flags &= OPSTATE__KV_FLAGS;
    kv->gen = 1;
}

OPSTATE_API void opstate_kv_clear(opstate_kv *kv)
{
    uint32_t i;
    for (i = 0; i <= kv->mask; i++) {
        if (kv->slots[i]) opstate__kv_free_entry(kv, kv->slots[i]);
        opstate__kv_place(kv, i, NULL);
    }
    kv->used = 0;
    kv->live_delta = 0;
    opstate__kv_next_generation(kv);
}

OPSTATE_API void opstate_kv_destroy(opstate_kv *kv)
{
    opstate_allocator a;
    if (!kv) return;
    a = kv->a;
    opstate_kv_clear(kv);
    opstate_free(&a, kv->slots);
    opstate_free(&a, kv);
}

/* live - in_base: what an entry adds to the base's key count. */
OPSTATE__PRIVATE int opstate__kv_contribution(const opstate__kv_entry *e)
{
    return ((e->flags & OPSTATE__KV_TOMB) ? 0 : 1) - ((e->flags & OPSTATE__KV_IN_BASE) ? 1 : 0);
}

OPSTATE__PRIVATE void opstate__kv_touch(opstate_kv *kv, opstate__kv_entry *e, opstate_position pos)
{
    e->seq = pos.seq;
    e->time = pos.time;
    if (opstate__kv_dirty(kv, e)) return;
    e->flags = (e->flags & OPSTATE__KV_FLAGS) | (kv->gen << OPSTATE__KV_GEN_SHIFT);
    e->dirty_next = kv->dirty;
    kv->dirty = e;
    kv->dirty_count++;
    kv->dirty_bytes += (uint64_t)e->key_len + e->value_len;
}

/* Makes a new entry for key at slot *slot (growing the table first when
   needed), holding a copy of value in its room (one allocation). Its flags
   say whether the base holds the key (in_base: 1 yes, 0 no, -1 ask the
   base; value is copied first, as it may point into the base): IN_BASE, or
   TOMB when not; the caller settles them. */
OPSTATE__PRIVATE opstate_result opstate__kv_insert(opstate_kv *kv, opstate_bytes key, opstate_bytes value, uint64_t h,
                                                   uint32_t *slot, int in_base, opstate__kv_entry **out)
{
    opstate__kv_entry *e;
    opstate_result r = in_base > 0 ? OPSTATE_OK : OPSTATE_NOT_FOUND;
    if ((kv->used + 1u) * 4u > (kv->mask + 1u) * 3u) {
        opstate_result g = opstate__kv_resize(kv, (kv->mask + 1u) * 2u);
        if (g != OPSTATE_OK) return g;
        *slot = opstate__kv_find(kv, key.ptr, key.len, h);
    }
    e = (opstate__kv_entry *)opstate_alloc(&kv->a, sizeof *e + key.len + value.len);
    if (!e) return OPSTATE_NO_MEMORY;
    OPSTATE_MEMSET(e, 0, sizeof *e);
    OPSTATE_MEMCPY(opstate__kv_key(e), key.ptr, key.len);
    e->key_len = (uint32_t)key.len;
    e->room = (uint32_t)value.len;
    if (value.len) OPSTATE_MEMCPY(opstate__kv_room(e), value.ptr, value.len);
    e->value = value.len ? opstate__kv_room(e) : NULL;
    e->value_len = (uint32_t)value.len;
    if (kv->base && in_base < 0) { /* -1: ask the base */
        opstate_bytes v;
        opstate_position p;
        r = kv->base->get(kv->base->user, key, &v, &p);
        if (r != OPSTATE_OK && r != OPSTATE_NOT_FOUND) {
            opstate_free(&kv->a, e);
            return r;
        }
    }
    e->hash = h;
    e->flags = r == OPSTATE_OK ? OPSTATE__KV_IN_BASE : OPSTATE__KV_TOMB;
    opstate__kv_place(kv, *slot, e);
    kv->used++;
    kv->memory += sizeof *e + key.len + value.len;
    *out = e;
    return OPSTATE_OK;
}

OPSTATE__PRIVATE void opstate__kv_remove(opstate_kv *kv, opstate__kv_entry *e);

OPSTATE__PRIVATE opstate_result opstate__kv_key_check(const opstate_kv *kv, opstate_bytes key)
{
    if (key.len == 0) return OPSTATE_INVALID_ARGUMENT;
    return key.len > kv->max_key_len ? OPSTATE_OVERSIZED : OPSTATE_OK;
}

OPSTATE_API opstate_result opstate_kv_put(opstate_kv *kv, opstate_bytes key, opstate_bytes value,
                                          opstate_position position)
{
    uint64_t h;
    uint32_t slot;
    opstate__kv_entry *e;
    int before;
    opstate_result r = opstate__kv_key_check(kv, key);
    if (r != OPSTATE_OK) return r;
    if (value.len > OPSTATE_MAX_DATA_LEN) return OPSTATE_OVERSIZED;
    h = opstate__kv_hash(kv, key.ptr, key.len);
    slot = opstate__kv_find(kv, key.ptr, key.len, h);
    e = kv->slots[slot];
    if (e && value.len && e->value_len == value.len) { /* live, same size: overwrite in place */
        if (e->value != value.ptr) OPSTATE_MEMCPY(e->value, value.ptr, value.len);
        opstate__kv_touch(kv, e, position);
        return OPSTATE_OK;
    }
    r = e ? opstate__kv_set_value(kv, e, value) : opstate__kv_insert(kv, key, value, h, &slot, -1, &e);
    if (r != OPSTATE_OK) return r;
    before = opstate__kv_contribution(e); /* set_value and insert leave the flags as they were (or would be) */
    e->flags &= ~OPSTATE__KV_TOMB;
    kv->live_delta += opstate__kv_contribution(e) - before;
    opstate__kv_touch(kv, e, position);
    return OPSTATE_OK;
}

OPSTATE_API opstate_result opstate_kv_delete(opstate_kv *kv, opstate_bytes key, opstate_position position)
{
    uint64_t h;
    uint32_t slot;
    opstate__kv_entry *e;
    int before;
    opstate_result r = opstate__kv_key_check(kv, key);
    if (r != OPSTATE_OK) return r;
    h = opstate__kv_hash(kv, key.ptr, key.len);
    slot = opstate__kv_find(kv, key.ptr, key.len, h);
    e = kv->slots[slot];
    if (!e) {
        if (!kv->base) return OPSTATE_OK;
        opstate_bytes none;
        none.ptr = NULL;
        none.len = 0;
        if ((r = opstate__kv_insert(kv, key, none, h, &slot, -1, &e)) != OPSTATE_OK) return r;
        if (e->flags & OPSTATE__KV_TOMB) { /* not in the base either */
            opstate__kv_remove(kv, e);
            return OPSTATE_OK;
        }
    }
    if (e->flags & OPSTATE__KV_TOMB) return OPSTATE_OK;
    before = opstate__kv_contribution(e);
    opstate__kv_drop_value(kv, e);
    e->flags |= OPSTATE__KV_TOMB;
    kv->live_delta += opstate__kv_contribution(e) - before;
    kv->dirty_tombs = true;
    opstate__kv_touch(kv, e, position);
    return OPSTATE_OK;
}

OPSTATE_API opstate_result opstate_kv_restore(opstate_kv *kv, const opstate_kv_item *item)
{
    uint64_t h;
    uint32_t slot;
    opstate__kv_entry *e;
    opstate_bytes value = item->value;
    int before;
    opstate_result r = opstate__kv_key_check(kv, item->key);
    if (r != OPSTATE_OK) return r;
    h = opstate__kv_hash(kv, item->key.ptr, item->key.len);
    slot = opstate__kv_find(kv, item->key.ptr, item->key.len, h);
    e = kv->slots[slot];
    if (e && opstate__kv_dirty(kv, e)) return OPSTATE_INVALID_ARGUMENT; /* a load, not a change */
    if (!kv->base && item->deleted) { /* memory only: a restored delete is absence */
        if (e) opstate__kv_remove(kv, e);
        return OPSTATE_OK;
    }
    if (item->value.len > OPSTATE_MAX_DATA_LEN) return OPSTATE_OVERSIZED;
    if (item->deleted) value.len = 0;
    r = e ? opstate__kv_set_value(kv, e, value) : opstate__kv_insert(kv, item->key, value, h, &slot, kv->base && item->in_base, &e);
    if (r != OPSTATE_OK) return r;
    before = opstate__kv_contribution(e);
    e->flags = (kv->base && item->in_base ? OPSTATE__KV_IN_BASE : 0u) | (item->deleted ? OPSTATE__KV_TOMB : 0u);
    e->seq = item->position.seq;
    e->time = item->position.time;
    kv->live_delta += opstate__kv_contribution(e) - before;
    return OPSTATE_OK;
}

OPSTATE_API void opstate_kv_prefetch(const opstate_kv *kv, opstate_bytes key)
{
#if defined(__GNUC__) || defined(__clang__)
    uint32_t i = (uint32_t)opstate__kv_hash(kv, key.ptr, key.len) & kv->mask;
    __builtin_prefetch(&kv->slots[i], 1);
    __builtin_prefetch(&kv->tags[i], 1);
    __asm__ __volatile__(""); /* GCC finds a function of prefetches pure and drops the calls */
#else
    (void)kv;
    (void)key;
#endif
}

OPSTATE__PRIVATE void opstate__kv_item(const opstate__kv_entry *e, opstate_kv_item *item)
{
    item->key.ptr = opstate__kv_key(e);
    item->key.len = e->key_len;
    item->value.ptr = e->value;
    item->value.len = e->value_len;
    item->deleted = (e->flags & OPSTATE__KV_TOMB) != 0;
    item->in_base = (e->flags & OPSTATE__KV_IN_BASE) != 0;
    item->position.seq = e->seq;
    item->position.time = e->time;
    item->position.epoch = 0;
}

OPSTATE_API opstate_result opstate_kv_get(const opstate_kv *kv, opstate_bytes key, opstate_kv_item *item)
{
    const opstate__kv_entry *e;
    if (opstate__kv_key_check(kv, key) != OPSTATE_OK) return OPSTATE_NOT_FOUND;
    e = kv->slots[opstate__kv_find(kv, key.ptr, key.len, opstate__kv_hash(kv, key.ptr, key.len))];
    if (e) {
        if (e->flags & OPSTATE__KV_TOMB) return OPSTATE_NOT_FOUND;
        opstate__kv_item(e, item);
        return OPSTATE_OK;
    }
    if (kv->base) {
        opstate_kv_item found;
        opstate_result r = kv->base->get(kv->base->user, key, &found.value, &found.position);
        if (r != OPSTATE_OK) return r;
        found.key = key;
        found.deleted = false;
        found.in_base = true;
        *item = found;
        return OPSTATE_OK;
    }
    return OPSTATE_NOT_FOUND;
}

OPSTATE_API uint64_t opstate_kv_count(const opstate_kv *kv)
{
    int64_t base = kv->base ? (int64_t)kv->base->count(kv->base->user) : 0;
    return (uint64_t)(base + kv->live_delta);
}

OPSTATE_API size_t opstate_kv_memory(const opstate_kv *kv) { return kv->memory; }

OPSTATE_API bool opstate_kv_has_base(const opstate_kv *kv) { return kv->base != NULL; }

OPSTATE_API void opstate_kv_dirty_iterate(const opstate_kv *kv, opstate_kv_iter_fn fn, void *user)
{
    const opstate__kv_entry *e;
    for (e = kv->dirty; e; e = e->dirty_next) {
        opstate_kv_item item;
        opstate__kv_item(e, &item);
        if (!fn(user, &item)) return;
    }
}

OPSTATE_API uint32_t opstate_kv_dirty_count(const opstate_kv *kv) { return kv->dirty_count; }

OPSTATE_API uint64_t opstate_kv_dirty_bytes(const opstate_kv *kv) { return kv->dirty_bytes; }

/* Takes the entry at slot i out of the table (backward-shift deletion). */
OPSTATE__PRIVATE void opstate__kv_unlink(opstate_kv *kv, uint32_t i)
{
    uint32_t j = i;
    opstate__kv_place(kv, i, NULL);
    kv->used--;
    for (;;) {
        uint32_t home;
        j = (j + 1) & kv->mask;
        if (!kv->slots[j]) return;
        home = (uint32_t)kv->slots[j]->hash & kv->mask;
        if ((i <= j) ? (home <= i || home > j) : (home <= i && home > j)) {
            opstate__kv_place(kv, i, kv->slots[j]);
            opstate__kv_place(kv, j, NULL);
            i = j;
        }
    }
}

OPSTATE__PRIVATE void opstate__kv_remove(opstate_kv *kv, opstate__kv_entry *e)
{
    opstate__kv_unlink(kv, opstate__kv_find(kv, opstate__kv_key(e), e->key_len, e->hash));
    kv->live_delta -= opstate__kv_contribution(e);
    opstate__kv_free_entry(kv, e);
}

OPSTATE_API void opstate_kv_mark_clean(opstate_kv *kv)
{
    opstate__kv_entry *e, *next;
    if (!kv->base && kv->dirty_tombs) /* memory only: a flushed delete is absence */
        for (e = kv->dirty; e; e = next) {
            next = e->dirty_next;
            if (e->flags & OPSTATE__KV_TOMB) opstate__kv_remove(kv, e);
        }
    opstate__kv_next_generation(kv);
}

/* The base changed under a dirty entry (a compaction): ask it again
   whether it holds the key, so the count stays right. */
OPSTATE__PRIVATE void opstate__kv_rebase(opstate_kv *kv, opstate__kv_entry *e)
{
    opstate_bytes key, value;
    opstate_position pos;
    int before = opstate__kv_contribution(e);
    key.ptr = opstate__kv_key(e);
    key.len = e->key_len;
    if (kv->base->get(kv->base->user, key, &value, &pos) == OPSTATE_OK) e->flags |= OPSTATE__KV_IN_BASE;
    else e->flags &= ~OPSTATE__KV_IN_BASE;
    kv->live_delta += opstate__kv_contribution(e) - before;
}

OPSTATE_API void opstate_kv_forget_clean(opstate_kv *kv)
{
    uint32_t i = 0;
    while (i <= kv->mask) { /* a removal may shift a later entry into slot i: look again */
        opstate__kv_entry *e = kv->slots[i];
        if (e && !opstate__kv_dirty(kv, e)) {
            kv->live_delta -= opstate__kv_contribution(e);
            opstate__kv_unlink(kv, i);
            opstate__kv_free_entry(kv, e);
            continue;
        }
        if (e && kv->base) opstate__kv_rebase(kv, e);
        i++;
    }
}

OPSTATE__PRIVATE bool opstate__kv_less(const opstate__kv_entry *a, const opstate__kv_entry *b)
{
    return opstate__key_compare(opstate__kv_key(a), a->key_len, opstate__kv_key(b), b->key_len) < 0;
}

/* Heap sort by key: no recursion, no extra memory, no libc. */
OPSTATE__PRIVATE void opstate__kv_sift(opstate__kv_entry **v, size_t root, size_t n)
{
    for (;;) {
        size_t child = 2 * root + 1;
        opstate__kv_entry *t;
        if (child >= n) return;
        if (child + 1 < n && opstate__kv_less(v[child], v[child + 1])) child++;
        if (!opstate__kv_less(v[root], v[child])) return;
        t = v[root];
        v[root] = v[child];
        v[child] = t;
        root = child;
    }
}

OPSTATE__PRIVATE void opstate__kv_sort(opstate__kv_entry **v, size_t n)
{
    size_t i;
    for (i = n / 2; i-- > 0;) opstate__kv_sift(v, i, n);
    for (i = n; i-- > 1;) {
        opstate__kv_entry *t = v[0];
        v[0] = v[i];
        v[i] = t;
        opstate__kv_sift(v, 0, i);
    }
}

/* An entry with the 8 key bytes that follow the prefix every key shares
   (big-endian, zero-padded): ordering these first is key order, and they
   sit next to the pointer, so most of the sort touches no entry. */
typedef struct opstate__kv_ref {
    uint64_t next8;
    opstate__kv_entry *e;
} opstate__kv_ref;

/* Length of the prefix every entry's key shares. */
OPSTATE__PRIVATE size_t opstate__kv_shared_prefix(const opstate__kv_ref *r, size_t n)
{
    const uint8_t *k0 = opstate__kv_key(r[0].e);
    size_t shared = r[0].e->key_len, i, j;
    for (i = 1; i < n && shared; i++) {
        const uint8_t *k = opstate__kv_key(r[i].e);
        size_t len = r[i].e->key_len < shared ? r[i].e->key_len : shared;
        for (j = 0; j < len && k[j] == k0[j]; j++) {}
        shared = j;
    }
    return shared;
}

/* Stable LSD radix sort of r by next8, one byte a pass (a pass where every
   ref has the same byte is skipped); tmp holds n refs. */
OPSTATE__PRIVATE void opstate__kv_radix(opstate__kv_ref *r, opstate__kv_ref *tmp, size_t n)
{
    size_t count[256], shift, i, sum;
    opstate__kv_ref *from = r, *to = tmp, *t;
    for (shift = 0; shift < 64; shift += 8) {
        OPSTATE_MEMSET(count, 0, sizeof count);
        for (i = 0; i < n; i++) count[(from[i].next8 >> shift) & 255u]++;
        if (count[(from[0].next8 >> shift) & 255u] == n) continue;
        for (i = 0, sum = 0; i < 256; i++) {
            size_t c = count[i];
            count[i] = sum;
            sum += c;
        }
        for (i = 0; i < n; i++) to[count[(from[i].next8 >> shift) & 255u]++] = from[i];
        t = from;
        from = to;
        to = t;
    }
    if (from != r) OPSTATE_MEMCPY(r, from, n * sizeof *r);
}

/* The memory entries in key order (tombstones included: they hide base
   keys): radix by the 8 bytes after the shared prefix, then the entries
   those bytes do not tell apart by whole key. *out (an array of n entry
   pointers) is freed with opstate_free by the caller. */
OPSTATE__PRIVATE opstate_result opstate__kv_sorted(const opstate_kv *kv, opstate__kv_entry ***out, size_t *n)
{
    opstate__kv_ref *r;
    opstate__kv_entry **v;
    size_t k = 0, shared, i, j, run;
    if (!kv->used) {
        *out = NULL;
        *n = 0;
        return OPSTATE_OK;
    }
    if (!(r = (opstate__kv_ref *)opstate_alloc(&kv->a, (size_t)kv->used * 2u * sizeof *r))) return OPSTATE_NO_MEMORY;
    for (i = 0; i <= kv->mask; i++)
        if (kv->slots[i]) r[k++].e = kv->slots[i];
    shared = opstate__kv_shared_prefix(r, k);
    for (i = 0; i < k; i++) {
        const uint8_t *key = opstate__kv_key(r[i].e);
        r[i].next8 = 0;
        for (j = shared; j < shared + 8; j++) r[i].next8 = r[i].next8 << 8 | (j < r[i].e->key_len ? key[j] : 0u);
    }
    opstate__kv_radix(r, r + k, k);
    /* the pointers, compacted forward over the refs already read; a run of
       equal next8 is sorted by whole key once its last pointer is in */
    v = (opstate__kv_entry **)(void *)r;
    for (i = 0, run = 0; i < k; i++) {
        bool run_ends = i + 1 == k || r[i + 1].next8 != r[i].next8;
        v[i] = r[i].e;
        if (run_ends) {
            if (i > run) opstate__kv_sort(v + run, i + 1 - run);
            run = i + 1;
        }
    }
    *out = v;
    *n = k;
    return OPSTATE_OK;
}

/* Merge of the sorted memory entries with the base's ordered iteration. */
typedef struct opstate__kv_merge {
    opstate__kv_entry **v;
    size_t n, at;
    opstate_kv_iter_fn fn;
    void *user;
    bool stopped;
} opstate__kv_merge;

/* Emits one memory entry (tombstones emit nothing); false once stopped. */
OPSTATE__PRIVATE bool opstate__kv_merge_emit(opstate__kv_merge *m, const opstate__kv_entry *e)
{
    opstate_kv_item item;
    m->at++;
    if (e->flags & OPSTATE__KV_TOMB) return true;
    opstate__kv_item(e, &item);
    m->stopped = !m->fn(m->user, &item);
    return !m->stopped;
}

/* Emits memory entries whose key is below `key` (all when key is NULL). */
OPSTATE__PRIVATE bool opstate__kv_merge_until(opstate__kv_merge *m, const opstate_bytes *key)
{
    while (m->at < m->n) {
        const opstate__kv_entry *e = m->v[m->at];
        if (key && opstate__key_compare(opstate__kv_key(e), e->key_len, key->ptr, key->len) >= 0) break;
        if (!opstate__kv_merge_emit(m, e)) return false;
    }
    return true;
}

/* Base callback: memory entries before the base key, then the memory
   version of the key if there is one (it overrides the base), else the
   base's. */
OPSTATE__PRIVATE bool opstate__kv_merge_base(void *user, const opstate_kv_item *base_item)
{
    opstate__kv_merge *m = (opstate__kv_merge *)user;
    const opstate__kv_entry *e;
    if (!opstate__kv_merge_until(m, &base_item->key)) return false;
    e = m->at < m->n ? m->v[m->at] : NULL;
    if (e && opstate__key_compare(opstate__kv_key(e), e->key_len, base_item->key.ptr, base_item->key.len) == 0)
        return opstate__kv_merge_emit(m, e);
    m->stopped = !m->fn(m->user, base_item);
    return !m->stopped;
}

/* Ordered walk over a sorted memory array and the base. */
OPSTATE__PRIVATE opstate_result opstate__kv_walk(const opstate_kv *kv, opstate__kv_entry **v, size_t n,
                                                 opstate_kv_iter_fn fn, void *user)
{
    opstate__kv_merge m;
    m.v = v;
    m.n = n;
    m.at = 0;
    m.fn = fn;
    m.user = user;
    m.stopped = false;
    if (kv->base) {
        opstate_result r = kv->base->iterate(kv->base->user, opstate__kv_merge_base, &m);
        if (r != OPSTATE_OK) return r;
        if (m.stopped) return OPSTATE_OK;
    }
    opstate__kv_merge_until(&m, NULL);
    return OPSTATE_OK;
}

OPSTATE_API opstate_result opstate_kv_iterate(const opstate_kv *kv, opstate_kv_iter_fn fn, void *user)
{
    opstate__kv_entry **v;
    size_t n;
    opstate_result r = opstate__kv_sorted(kv, &v, &n);
    if (r != OPSTATE_OK) return r;
    r = opstate__kv_walk(kv, v, n, fn, user);
    opstate_free(&kv->a, v);
    return r;
}

OPSTATE_API opstate_result opstate_kv_event_key(const opstate_event *ev, uint8_t *out, size_t cap,
                                                size_t *out_len)
{
    size_t need = ev->scope.len + 1 + ev->kind.len + 1 + ev->key.len;
    uint8_t *p = out;
    if (out && cap < need) return OPSTATE_BUFFER_TOO_SMALL;
    if (out) {
        p = opstate__put_bytes(p, ev->scope);
        *p++ = 0;
        p = opstate__put_bytes(p, ev->kind);
        *p++ = 0;
        opstate__put_bytes(p, ev->key);
    }
    *out_len = need;
    return OPSTATE_OK;
}

/* Two passes over one sorted array: count, then write. */
typedef struct opstate__kv_json {
    opstate__jw w;
    bool first;
} opstate__kv_json;

OPSTATE__PRIVATE bool opstate__kv_json_item(void *user, const opstate_kv_item *item)
{
    opstate__kv_json *j = (opstate__kv_json *)user;
    opstate__jw_cstr(&j->w, j->first ? "{" : ",{");
    j->first = false;
    opstate__jw_key(&j->w, item->key);
    opstate__jw_text(&j->w, true, "value", item->value);
    opstate__jw_cstr(&j->w, ",\"seq\":");
    opstate__jw_u64(&j->w, item->position.seq);
    opstate__jw_cstr(&j->w, ",\"time\":");
    opstate__jw_i64(&j->w, item->position.time);
    opstate__jw_raw(&j->w, "}", 1);
    return true;
}

OPSTATE_API opstate_result opstate_kv_to_json(const opstate_kv *kv, char *out, size_t cap, size_t *out_len)
{
    opstate__kv_entry **v;
    size_t n;
    opstate__kv_json j;
    opstate_result r = opstate__kv_sorted(kv, &v, &n);
    if (r != OPSTATE_OK) return r;
    j.w.out = NULL;
    for (;;) { /* pass 1 counts (out NULL), pass 2 writes */
        j.w.len = 0;
        j.first = true;
        opstate__jw_cstr(&j.w, "{\"count\":");
        opstate__jw_u64(&j.w, opstate_kv_count(kv));
        opstate__jw_cstr(&j.w, ",\"items\":[");
        r = opstate__kv_walk(kv, v, n, opstate__kv_json_item, &j);
        opstate__jw_cstr(&j.w, "]}");
        if (r != OPSTATE_OK || j.w.out || !out) break;
        if (cap < j.w.len) {
            r = OPSTATE_BUFFER_TOO_SMALL;
            break;
        }
        j.w.out = out;
    }
    opstate_free(&kv->a, v);
    if (r == OPSTATE_OK) *out_len = j.w.len;
    return r;
}

/* >>snapshot ------------------------------------------------------------- */

OPSTATE_API opstate_result opstate_schema_check(const opstate_schema *schema, uint32_t stored_version,
                                                opstate_kv *kv)
{
    if (stored_version == schema->version) return OPSTATE_OK;
    if (stored_version > schema->version) return OPSTATE_SCHEMA_TOO_NEW;
    if (!schema->upgrade) return OPSTATE_SCHEMA_OLD;
    return schema->upgrade(schema->user, stored_version, kv);
}

#define OPSTATE__SNAP_FIXED 40u /* magic .. dedup length */
#define OPSTATE__SNAP_ITEM 24u  /* per key besides key and value bytes */
static const uint8_t opstate__snap_magic[4] = {'O', 'P', 'S', 'N'};

/* Writer state shared by the size pass and the write pass. */
typedef struct opstate__snap_writer {
    uint8_t *out; /* NULL: count only */
    uint64_t len;
    uint64_t count;
} opstate__snap_writer;

OPSTATE__PRIVATE bool opstate__snap_item(void *user, const opstate_kv_item *item)
{
    opstate__snap_writer *w = (opstate__snap_writer *)user;
    if (w->out) {
        uint8_t *p = w->out + w->len;
        opstate_put_le32(p, (uint32_t)item->key.len);
        p = opstate__put_bytes(p + 4, item->key);
        opstate_put_le32(p, (uint32_t)item->value.len);
        p = opstate__put_bytes(p + 4, item->value);
        opstate_put_le64(p, item->position.seq);
        opstate_put_le64(p + 8, (uint64_t)item->position.time);
    }
    w->len += OPSTATE__SNAP_ITEM + item->key.len + item->value.len;
    w->count++;
    return true;
}

OPSTATE__PRIVATE void opstate__snap_header(uint8_t *out, const opstate_snapshot_meta *meta, size_t dedup_len)
{
    OPSTATE_MEMCPY(out, opstate__snap_magic, 4);
    opstate_put_le16(out + 4, OPSTATE_SNAPSHOT_FORMAT_VERSION);
    opstate_put_le16(out + 6, 0);
    opstate_put_le32(out + 8, meta->schema_version);
    opstate_put_le64(out + 12, meta->position.seq);
    opstate_put_le64(out + 20, (uint64_t)meta->position.time);
    opstate_put_le64(out + 28, meta->position.epoch);
    opstate_put_le32(out + 36, (uint32_t)dedup_len);
}

/* Reads the meta back from a checked snapshot header (opstate__snap_header's twin). */
OPSTATE__PRIVATE void opstate__snap_meta(const uint8_t *b, opstate_snapshot_meta *meta)
{
    meta->schema_version = opstate_get_le32(b + 8);
    meta->position.seq = opstate_get_le64(b + 12);
    meta->position.time = (int64_t)opstate_get_le64(b + 20);
    meta->position.epoch = opstate_get_le64(b + 28);
}

OPSTATE_API opstate_result opstate_snapshot_encode(const opstate_kv *kv, const opstate_snapshot_meta *meta,
                                                   const opstate_dedup *dedup, uint8_t *out, size_t cap,
                                                   size_t *out_len, opstate_error *err)
{
    opstate__kv_entry **v;
    opstate__snap_writer w;
    size_t n, dedup_len = 0;
    uint64_t body_at, total;
    opstate_result r = opstate__kv_sorted(kv, &v, &n);
    if (r != OPSTATE_OK) return opstate__fail(err, r, 0, "state");
    if (dedup) opstate_dedup_encode(dedup, NULL, 0, &dedup_len);
    body_at = OPSTATE__SNAP_FIXED + (uint64_t)dedup_len + 8u;
    w.out = NULL;
    w.len = 8; /* body starts with the key count */
    w.count = 0;
    r = opstate__kv_walk(kv, v, n, opstate__snap_item, &w);
    total = body_at + w.len + 4u;
    if (r == OPSTATE_OK && total > SIZE_MAX) r = opstate__fail(err, OPSTATE_OVERSIZED, 0, "state");
    else if (r == OPSTATE_OK && out && cap < total) r = opstate__fail(err, OPSTATE_BUFFER_TOO_SMALL, cap, "snapshot");
    else if (r == OPSTATE_OK && out) {
        opstate__snap_header(out, meta, dedup_len);
        if (dedup) opstate_dedup_encode(dedup, out + OPSTATE__SNAP_FIXED, dedup_len, &dedup_len);
        opstate_put_le64(out + body_at - 8, w.len);
        opstate_put_le64(out + body_at, w.count);
        w.out = out + body_at;
        w.len = 8;
        w.count = 0;
        r = opstate__kv_walk(kv, v, n, opstate__snap_item, &w);
        opstate_put_le32(out + total - 4, opstate_crc32c(0, out, (size_t)total - 4));
    }
    opstate_free(&kv->a, v);
    if (r == OPSTATE_OK) *out_len = (size_t)total;
    return r;
}

/* Checks a snapshot's frame and checksum; sets where the dedup window and
   the body are. */
OPSTATE__PRIVATE opstate_result opstate__snap_frame(const uint8_t *b, size_t len, opstate_bytes *dedup,
                                                    opstate_bytes *body, opstate_error *err)
{
    uint64_t dlen, blen;
    if (len < 4) return opstate__fail(err, OPSTATE_TRUNCATED, len, "magic");
    if (OPSTATE_MEMCMP(b, opstate__snap_magic, 4) != 0) return opstate__fail(err, OPSTATE_MALFORMED, 0, "magic");
    if (len < 6) return opstate__fail(err, OPSTATE_TRUNCATED, len, "format");
    if (opstate_get_le16(b + 4) != OPSTATE_SNAPSHOT_FORMAT_VERSION)
        return opstate__fail(err, OPSTATE_UNKNOWN_VERSION, 4, "format");
    if (len < OPSTATE__SNAP_FIXED + 8u + 4u) return opstate__fail(err, OPSTATE_TRUNCATED, len, "header");
    if (opstate_get_le16(b + 6) != 0) return opstate__fail(err, OPSTATE_MALFORMED, 6, "reserved");
    dlen = opstate_get_le32(b + 36);
    if (dlen > len - OPSTATE__SNAP_FIXED - 12u) return opstate__fail(err, OPSTATE_TRUNCATED, 36, "dedup");
    blen = opstate_get_le64(b + OPSTATE__SNAP_FIXED + dlen);
    if (blen > len - OPSTATE__SNAP_FIXED - 12u - dlen) return opstate__fail(err, OPSTATE_TRUNCATED, len, "body");
    if (blen != len - OPSTATE__SNAP_FIXED - 12u - dlen)
        return opstate__fail(err, OPSTATE_MALFORMED, OPSTATE__SNAP_FIXED + (size_t)dlen, "body");
    if (opstate_crc32c(0, b, len - 4) != opstate_get_le32(b + len - 4))
        return opstate__fail(err, OPSTATE_CORRUPT, len - 4, "crc");
    dedup->ptr = b + OPSTATE__SNAP_FIXED;
    dedup->len = (size_t)dlen;
    body->ptr = dedup->ptr + dlen + 8;
    body->len = (size_t)blen;
    return OPSTATE_OK;
}

/* Walks the body: checks it (strictly ascending keys, lengths in bounds)
   when into is NULL, inserts the keys otherwise. */
OPSTATE__PRIVATE opstate_result opstate__snap_body(opstate_bytes body, size_t base_offset, opstate_kv *into,
                                                   opstate_error *err)
{
    uint64_t count, i;
    size_t at = 8;
    opstate_bytes prev = {NULL, 0};
    if (body.len < 8) return opstate__fail(err, OPSTATE_TRUNCATED, base_offset, "count");
    count = opstate_get_le64(body.ptr);
    for (i = 0; i < count; i++) {
        opstate_bytes key, value;
        opstate_position pos;
        opstate_result r;
        if (body.len - at < OPSTATE__SNAP_ITEM) return opstate__fail(err, OPSTATE_TRUNCATED, base_offset + at, "item");
        key.len = opstate_get_le32(body.ptr + at);
        if (key.len == 0 || key.len > OPSTATE_MAX_KEY_LEN) return opstate__fail(err, OPSTATE_OVERSIZED, base_offset + at, "key");
        if (body.len - at - OPSTATE__SNAP_ITEM < key.len) return opstate__fail(err, OPSTATE_TRUNCATED, base_offset + at, "key");
        key.ptr = body.ptr + at + 4;
        value.len = opstate_get_le32(key.ptr + key.len);
        if (value.len > OPSTATE_MAX_DATA_LEN) return opstate__fail(err, OPSTATE_OVERSIZED, base_offset + at, "value");
        if (body.len - at - OPSTATE__SNAP_ITEM - key.len < value.len) return opstate__fail(err, OPSTATE_TRUNCATED, base_offset + at, "value");
        value.ptr = key.ptr + key.len + 4;
        if (i && opstate__key_compare(prev.ptr, prev.len, key.ptr, key.len) >= 0)
            return opstate__fail(err, OPSTATE_MALFORMED, base_offset + at, "key order");
        pos.seq = opstate_get_le64(value.ptr + value.len);
        pos.time = (int64_t)opstate_get_le64(value.ptr + value.len + 8);
        pos.epoch = 0;
        if (into && (r = opstate_kv_put(into, key, value, pos)) != OPSTATE_OK) return opstate__fail(err, r, base_offset + at, "key");
        prev = key;
        at += OPSTATE__SNAP_ITEM + key.len + value.len;
    }
    if (at != body.len) return opstate__fail(err, OPSTATE_MALFORMED, base_offset + at, "body");
    return OPSTATE_OK;
}

OPSTATE_API opstate_result opstate_snapshot_decode(const uint8_t *buf, size_t len, opstate_kv *into,
                                                   opstate_snapshot_meta *meta, opstate_dedup *dedup,
                                                   opstate_error *err)
{
    opstate_bytes dbytes, body;
    size_t body_offset;
    opstate_result r;
    if (opstate_kv_count(into) != 0 || into->used != 0) return opstate__fail(err, OPSTATE_INVALID_ARGUMENT, 0, "into");
    r = opstate__snap_frame(buf, len, &dbytes, &body, err);
    if (r != OPSTATE_OK) return r;
    body_offset = (size_t)(body.ptr - buf);
    if (dedup && dbytes.len && (r = opstate__dedup_check(dedup, dbytes.ptr, dbytes.len, err)) != OPSTATE_OK) {
        if (err) err->offset += OPSTATE__SNAP_FIXED;
        return r;
    }
    if ((r = opstate__snap_body(body, body_offset, NULL, err)) != OPSTATE_OK) return r;
    if ((r = opstate__snap_body(body, body_offset, into, err)) != OPSTATE_OK) {
        opstate_kv_clear(into);
        return r;
    }
    opstate_kv_mark_clean(into);
    if (dedup) {
        if (dbytes.len) opstate_dedup_decode(dedup, dbytes.ptr, dbytes.len, NULL);
        else opstate_dedup_clear(dedup);
    }
    opstate__snap_meta(buf, meta);
    return OPSTATE_OK;
}

/* >>log ------------------------------------------------------------------ */

/* Next token of b[*at..) up to a dot (see opstate__next_token). */
OPSTATE_API bool opstate_subject_matches(opstate_bytes filter, opstate_bytes subject)
{
    size_t fa = 0, sa = 0;
    while (fa <= filter.len) {
        opstate_bytes f = opstate__next_token(filter.ptr, filter.len, &fa), t;
        if (f.len == 1 && f.ptr[0] == '>') return fa > filter.len && sa <= subject.len;
        if (sa > subject.len) return false;
        t = opstate__next_token(subject.ptr, subject.len, &sa);
        if (!(f.len == 1 && f.ptr[0] == '*') &&
            (f.len != t.len || (f.len && OPSTATE_MEMCMP(f.ptr, t.ptr, f.len) != 0)))
            return false;
    }
    return sa > subject.len;
}

OPSTATE_API opstate_result opstate_publish(const opstate_log *log, opstate_bytes prefix,
                                           const opstate_event *ev, const opstate_append_options *opts,
                                           const opstate_allocator *a, opstate_append_result *out,
                                           opstate_error *err)
{
    opstate_allocator none;
    opstate_append_options o;
    opstate_append_result unused;
    opstate_bytes subject, data;
    size_t slen = 0, dlen = 0;
    uint8_t *buf;
    opstate_result r = opstate_subject_build((const char *)prefix.ptr, prefix.len, ev->scope, ev->kind, ev->key,
                                             NULL, 0, &slen, err);
    if (r == OPSTATE_OK) r = opstate_event_encode(ev, NULL, 0, &dlen, err);
    if (r != OPSTATE_OK) return r;
    if (!a) {
        OPSTATE_MEMSET(&none, 0, sizeof none);
        a = &none;
    }
    if (!(buf = (uint8_t *)opstate_alloc(a, slen + dlen))) return opstate__fail(err, OPSTATE_NO_MEMORY, 0, "event");
    opstate_subject_build((const char *)prefix.ptr, prefix.len, ev->scope, ev->kind, ev->key, (char *)buf, slen,
                          &slen, NULL);
    opstate_event_encode(ev, buf + slen, dlen, &dlen, NULL);
    subject.ptr = buf;
    subject.len = slen;
    data.ptr = buf + slen;
    data.len = dlen;
    if (opts) o = *opts;
    else OPSTATE_MEMSET(&o, 0, sizeof o);
    o.msg_id = &ev->id;
    r = log->append(log->user, subject, data, &o, out ? out : &unused, err);
    opstate_free(a, buf);
    return r;
}

/* The memory log. Messages live in an array indexed by seq - base_seq;
   deleted ones stay as holes until the prefix is trimmed. */
typedef struct opstate__memlog_msg {
    uint64_t seq;
    int64_t time;
    uint64_t next_same; /* next message on the same subject, 0: none */
    uint8_t *bytes;     /* subject then data */
    uint32_t subject_len, data_len;
    bool deleted;
} opstate__memlog_msg;

/* Per-subject index entry, stored as the value of the subjects fold. */
typedef struct opstate__memlog_subject {
    uint64_t first, last, count;
} opstate__memlog_subject;

OPSTATE_API bool opstate_log_id_expired(int64_t window_ns, int64_t id_time, int64_t now)
{
    return id_time < now - window_ns;
}

OPSTATE_API bool opstate_log_aged_out(int64_t max_age_ns, int64_t msg_time, int64_t now)
{
    return max_age_ns && msg_time < now - max_age_ns;
}

OPSTATE_API opstate_result opstate_log_expect_check(const opstate_append_options *opts, uint64_t subject_last_seq)
{
    return opts->expect_last_subject_seq && opts->last_subject_seq != subject_last_seq ? OPSTATE_CONFLICT : OPSTATE_OK;
}

typedef struct opstate__memlog_id {
    opstate_id id;
    int64_t time; /* publish time of the append that brought it */
} opstate__memlog_id;

struct opstate_memlog {
    opstate_memlog_config cfg;
    opstate__memlog_msg *msgs;
    size_t start, len, cap; /* live window msgs[start..len) */
    uint64_t base_seq, last_seq, live;
    int64_t last_time;
    uint64_t epoch;
    opstate_kv *subjects; /* subject -> opstate__memlog_subject */
    opstate_kv *ids;      /* msg id -> seq */
    opstate__memlog_id *id_ring; /* the ids in append order, oldest at head */
    uint32_t id_head, id_count, id_cap;
};

/* Every default of a memory log config, in one place. */
OPSTATE__PRIVATE void opstate__memlog_defaults(opstate_memlog_config *cfg)
{
    if (!cfg->duplicate_window_ns) cfg->duplicate_window_ns = OPSTATE_DUPLICATE_WINDOW_NS;
    if (!cfg->duplicate_ids_max) cfg->duplicate_ids_max = 100000u;
    if (!cfg->epoch) cfg->epoch = 1;
}

OPSTATE_API opstate_result opstate_memlog_create(const opstate_memlog_config *cfg, opstate_memlog **out)
{
    opstate_memlog *m;
    opstate_kv_config kc;
    opstate_memlog_config c;
    if (cfg) c = *cfg;
    else OPSTATE_MEMSET(&c, 0, sizeof c);
    opstate__memlog_defaults(&c);
    if (!(m = (opstate_memlog *)opstate_alloc(&c.allocator, sizeof *m))) return OPSTATE_NO_MEMORY;
    OPSTATE_MEMSET(m, 0, sizeof *m);
    m->cfg = c;
    m->epoch = c.epoch;
    m->base_seq = 1;
    OPSTATE_MEMSET(&kc, 0, sizeof kc);
    kc.allocator = c.allocator;
    if (opstate_kv_create(&kc, &m->subjects) != OPSTATE_OK || opstate_kv_create(&kc, &m->ids) != OPSTATE_OK) {
        opstate_memlog_destroy(m);
        return OPSTATE_NO_MEMORY;
    }
    *out = m;
    return OPSTATE_OK;
}

OPSTATE__PRIVATE void opstate__memlog_free_messages(opstate_memlog *m)
{
    size_t i;
    for (i = m->start; i < m->len; i++) opstate_free(&m->cfg.allocator, m->msgs[i].bytes);
    m->start = m->len = 0;
    m->live = 0;
}

OPSTATE_API void opstate_memlog_destroy(opstate_memlog *m)
{
    if (!m) return;
    opstate__memlog_free_messages(m);
    opstate_free(&m->cfg.allocator, m->msgs);
    opstate_kv_destroy(m->subjects);
    opstate_kv_destroy(m->ids);
    opstate_free(&m->cfg.allocator, m->id_ring);
    opstate_free(&m->cfg.allocator, m);
}

OPSTATE_API void opstate_memlog_recreate(opstate_memlog *m, uint64_t new_epoch)
{
    opstate__memlog_free_messages(m);
    opstate_kv_clear(m->subjects);
    opstate_kv_clear(m->ids);
    m->id_head = m->id_count = 0;
    m->base_seq = 1;
    m->last_seq = 0;
    m->epoch = new_epoch;
}

OPSTATE__PRIVATE opstate__memlog_msg *opstate__memlog_at(const opstate_memlog *m, uint64_t seq)
{
    if (seq < m->base_seq + m->start || seq > m->last_seq) return NULL;
    return &m->msgs[seq - m->base_seq];
}

OPSTATE__PRIVATE opstate_bytes opstate__memlog_subject_of(const opstate__memlog_msg *msg)
{
    opstate_bytes b;
    b.ptr = msg->bytes;
    b.len = msg->subject_len;
    return b;
}

OPSTATE__PRIVATE bool opstate__memlog_subject_get(const opstate_memlog *m, opstate_bytes subject,
                                                  opstate__memlog_subject *out)
{
    opstate_kv_item item;
    if (opstate_kv_get(m->subjects, subject, &item) != OPSTATE_OK) return false;
    OPSTATE_MEMCPY(out, item.value.ptr, sizeof *out);
    return true;
}

OPSTATE__PRIVATE opstate_result opstate__memlog_subject_set(opstate_memlog *m, opstate_bytes subject,
                                                            const opstate__memlog_subject *s)
{
    opstate_bytes v;
    opstate_position none = {0, 0, 0};
    opstate_result r;
    v.ptr = (const uint8_t *)s;
    v.len = sizeof *s;
    r = s->count ? opstate_kv_put(m->subjects, subject, v, none) : opstate_kv_delete(m->subjects, subject, none);
    opstate_kv_mark_clean(m->subjects);
    return r;
}

/* Deletes one message (always the oldest of its subject, which is how
   retention and purges remove messages), then trims the deleted prefix. */
OPSTATE__PRIVATE void opstate__memlog_delete(opstate_memlog *m, opstate__memlog_msg *msg)
{
    opstate__memlog_subject s;
    if (opstate__memlog_subject_get(m, opstate__memlog_subject_of(msg), &s)) {
        s.first = msg->next_same;
        s.count--;
        opstate__memlog_subject_set(m, opstate__memlog_subject_of(msg), &s);
    }
    opstate_free(&m->cfg.allocator, msg->bytes);
    msg->bytes = NULL;
    msg->deleted = true;
    m->live--;
    while (m->start < m->len && m->msgs[m->start].deleted) m->start++;
}

OPSTATE_API void opstate_memlog_purge(opstate_memlog *m, uint64_t below_seq)
{
    while (m->start < m->len && m->msgs[m->start].seq < below_seq) opstate__memlog_delete(m, &m->msgs[m->start]);
}

OPSTATE_API void opstate_memlog_enforce_retention(opstate_memlog *m)
{
    if (m->cfg.max_age_ns && m->cfg.clock) {
        int64_t now = m->cfg.clock(m->cfg.clock_user);
        while (m->start < m->len && opstate_log_aged_out(m->cfg.max_age_ns, m->msgs[m->start].time, now))
            opstate__memlog_delete(m, &m->msgs[m->start]);
    }
    while (m->cfg.max_messages && m->live > m->cfg.max_messages) opstate__memlog_delete(m, &m->msgs[m->start]);
}

/* Room for one more message: drops the trimmed prefix or grows. */
OPSTATE__PRIVATE opstate_result opstate__memlog_reserve(opstate_memlog *m)
{
    opstate__memlog_msg *grown;
    size_t cap, bytes;
    if (m->start && m->start >= m->len / 2) {
        size_t keep = m->len - m->start, i;
        for (i = 0; i < keep; i++) m->msgs[i] = m->msgs[m->start + i]; /* overlapping: forward, downwards */
        m->base_seq += m->start;
        m->len = keep;
        m->start = 0;
    }
    if (m->len < m->cap) return OPSTATE_OK;
    cap = m->cap ? m->cap * 2 : 64;
    if (!opstate__array_bytes(cap, sizeof *grown, &bytes) ||
        !(grown = (opstate__memlog_msg *)opstate_alloc(&m->cfg.allocator, bytes)))
        return OPSTATE_NO_MEMORY;
    if (m->len) OPSTATE_MEMCPY(grown, m->msgs, m->len * sizeof *grown);
    opstate_free(&m->cfg.allocator, m->msgs);
    m->msgs = grown;
    m->cap = cap;
    return OPSTATE_OK;
}

/* Forgets the ids that left the duplicate window by `now`, and the oldest
   one when the memory bound is reached. */
OPSTATE__PRIVATE void opstate__memlog_forget_ids(opstate_memlog *m, int64_t now, uint32_t room)
{
    opstate_position none = {0, 0, 0};
    while (m->id_count && (m->id_count + room > m->cfg.duplicate_ids_max ||
                           opstate_log_id_expired(m->cfg.duplicate_window_ns, m->id_ring[m->id_head].time, now))) {
        opstate_bytes key;
        key.ptr = m->id_ring[m->id_head].id.bytes;
        key.len = 16;
        opstate_kv_delete(m->ids, key, none);
        opstate_kv_mark_clean(m->ids);
        m->id_head = (m->id_head + 1) % m->id_cap;
        m->id_count--;
    }
}

/* Duplicate check at `now`: the sequence an id was first appended at
   within the window, or 0. */
OPSTATE__PRIVATE uint64_t opstate__memlog_seen(opstate_memlog *m, const opstate_id *id, int64_t now)
{
    opstate_kv_item item;
    opstate_bytes key;
    opstate__memlog_forget_ids(m, now, 0);
    key.ptr = id->bytes;
    key.len = 16;
    return opstate_kv_get(m->ids, key, &item) == OPSTATE_OK ? opstate_get_le64(item.value.ptr) : 0;
}

/* Room for one more id in the ring: grows it (up to the bound) in order. */
OPSTATE__PRIVATE opstate_result opstate__memlog_id_room(opstate_memlog *m)
{
    opstate__memlog_id *grown;
    uint32_t cap, i;
    size_t bytes;
    if (m->id_count < m->id_cap) return OPSTATE_OK;
    cap = m->id_cap ? m->id_cap * 2 : 64;
    if (cap > m->cfg.duplicate_ids_max) cap = m->cfg.duplicate_ids_max;
    if (!opstate__array_bytes(cap, sizeof *grown, &bytes) ||
        !(grown = (opstate__memlog_id *)opstate_alloc(&m->cfg.allocator, bytes)))
        return OPSTATE_NO_MEMORY;
    for (i = 0; i < m->id_count; i++) grown[i] = m->id_ring[(m->id_head + i) % m->id_cap];
    opstate_free(&m->cfg.allocator, m->id_ring);
    m->id_ring = grown;
    m->id_cap = cap;
    m->id_head = 0;
    return OPSTATE_OK;
}

OPSTATE__PRIVATE opstate_result opstate__memlog_remember(opstate_memlog *m, const opstate_id *id, uint64_t seq,
                                                         int64_t now)
{
    uint8_t v[8];
    opstate_bytes key, value;
    opstate_position none = {0, 0, 0};
    opstate_result r;
    opstate__memlog_forget_ids(m, now, 1);
    if ((r = opstate__memlog_id_room(m)) != OPSTATE_OK) return r;
    key.ptr = id->bytes;
    key.len = 16;
    opstate_put_le64(v, seq);
    value.ptr = v;
    value.len = 8;
    r = opstate_kv_put(m->ids, key, value, none);
    opstate_kv_mark_clean(m->ids);
    if (r != OPSTATE_OK) return r;
    m->id_ring[(m->id_head + m->id_count) % m->id_cap].id = *id;
    m->id_ring[(m->id_head + m->id_count) % m->id_cap].time = now;
    m->id_count++;
    return OPSTATE_OK;
}

/* Checks the append preconditions; *dup_seq set for a duplicate id. */
OPSTATE__PRIVATE opstate_result opstate__memlog_admit(opstate_memlog *m, opstate_bytes subject,
                                                      const opstate_append_options *opts, int64_t now, uint64_t *dup_seq,
                                                      opstate_error *err)
{
    opstate__memlog_subject s;
    *dup_seq = opts && opts->msg_id ? opstate__memlog_seen(m, opts->msg_id, now) : 0;
    if (*dup_seq) return OPSTATE_OK;
    if (subject.len == 0 || subject.len > UINT32_MAX) return opstate__fail(err, OPSTATE_INVALID_ARGUMENT, 0, "subject");
    if (opts && opstate_log_expect_check(opts, opstate__memlog_subject_get(m, subject, &s) ? s.last : 0) != OPSTATE_OK)
        return opstate__fail(err, OPSTATE_CONFLICT, 0, "subject");
    return OPSTATE_OK;
}

/* Links a stored message into its subject's chain and applies the
   per-subject limit. */
OPSTATE__PRIVATE opstate_result opstate__memlog_index(opstate_memlog *m, opstate__memlog_msg *msg)
{
    opstate__memlog_subject s;
    opstate_bytes subject = opstate__memlog_subject_of(msg);
    opstate_result r;
    if (opstate__memlog_subject_get(m, subject, &s)) {
        opstate__memlog_at(m, s.last)->next_same = msg->seq;
        s.last = msg->seq;
        s.count++;
    } else {
        s.first = s.last = msg->seq;
        s.count = 1;
    }
    if ((r = opstate__memlog_subject_set(m, subject, &s)) != OPSTATE_OK) return r;
    while (m->cfg.max_per_subject && s.count > m->cfg.max_per_subject) {
        opstate__memlog_delete(m, opstate__memlog_at(m, s.first));
        opstate__memlog_subject_get(m, subject, &s);
    }
    return OPSTATE_OK;
}

OPSTATE__PRIVATE opstate_result opstate__memlog_append(void *user, opstate_bytes subject, opstate_bytes data,
                                                       const opstate_append_options *opts,
                                                       opstate_append_result *out, opstate_error *err)
{
    opstate_memlog *m = (opstate_memlog *)user;
    opstate__memlog_msg *msg;
    uint64_t dup;
    uint8_t *bytes;
    int64_t now = m->cfg.clock ? m->cfg.clock(m->cfg.clock_user) : m->last_time + 1;
    opstate_result r = opstate__memlog_admit(m, subject, opts, now, &dup, err);
    if (r != OPSTATE_OK) return r;
    if (dup) {
        out->seq = dup;
        out->duplicate = true;
        return OPSTATE_OK;
    }
    if (data.len > UINT32_MAX - subject.len) return opstate__fail(err, OPSTATE_OVERSIZED, 0, "data");
    if (opstate__memlog_reserve(m) != OPSTATE_OK ||
        !(bytes = (uint8_t *)opstate_alloc(&m->cfg.allocator, subject.len + data.len + 1)))
        return opstate__fail(err, OPSTATE_NO_MEMORY, 0, "message");
    msg = &m->msgs[m->len];
    OPSTATE_MEMSET(msg, 0, sizeof *msg);
    msg->seq = m->base_seq + m->len;
    msg->time = now;
    msg->bytes = bytes;
    msg->subject_len = (uint32_t)subject.len;
    msg->data_len = (uint32_t)data.len;
    opstate__put_bytes(opstate__put_bytes(bytes, subject), data);
    if ((opts && opts->msg_id && (r = opstate__memlog_remember(m, opts->msg_id, msg->seq, now)) != OPSTATE_OK)) {
        opstate_free(&m->cfg.allocator, bytes);
        return opstate__fail(err, r, 0, "message");
    }
    m->len++;
    m->live++;
    m->last_seq = msg->seq;
    m->last_time = msg->time;
    out->seq = msg->seq;
    out->duplicate = false;
    r = opstate__memlog_index(m, msg);
    opstate_memlog_enforce_retention(m);
    return r == OPSTATE_OK ? OPSTATE_OK : opstate__fail(err, r, 0, "subject index");
}

OPSTATE__PRIVATE void opstate__memlog_message(const opstate__memlog_msg *msg, uint64_t epoch,
                                              opstate_log_message *out)
{
    out->position.seq = msg->seq;
    out->position.time = msg->time;
    out->position.epoch = epoch;
    out->subject = opstate__memlog_subject_of(msg);
    out->data.ptr = msg->bytes + msg->subject_len;
    out->data.len = msg->data_len;
    out->contiguous = true; /* the memory log reads every retained message: it vouches */
}

OPSTATE__PRIVATE bool opstate__filter_matches(opstate_bytes filter, opstate_bytes subject)
{
    return filter.len == 0 || opstate_subject_matches(filter, subject);
}

OPSTATE__PRIVATE opstate_result opstate__memlog_read(void *user, opstate_bytes filter, uint64_t from_seq,
                                                     int64_t wait_ns, opstate_log_message *msgs, size_t max,
                                                     size_t *count, opstate_error *err)
{
    opstate_memlog *m = (opstate_memlog *)user;
    size_t i, n = 0;
    uint64_t first;
    (void)wait_ns; /* no other writer can append during the call */
    (void)err;
    opstate_memlog_enforce_retention(m); /* messages age out without an append, as on JetStream */
    first = m->base_seq + m->start;
    for (i = (size_t)((from_seq > first ? from_seq : first) - m->base_seq); i < m->len && n < max; i++) {
        const opstate__memlog_msg *msg = &m->msgs[i];
        if (msg->deleted || !opstate__filter_matches(filter, opstate__memlog_subject_of(msg))) continue;
        opstate__memlog_message(msg, m->epoch, &msgs[n++]);
    }
    *count = n;
    return OPSTATE_OK;
}

OPSTATE__PRIVATE opstate_result opstate__memlog_info(void *user, opstate_stream_info *out, opstate_error *err)
{
    opstate_memlog *m = (opstate_memlog *)user;
    (void)err;
    opstate_memlog_enforce_retention(m);
    OPSTATE_MEMSET(out, 0, sizeof *out);
    out->last_seq = m->last_seq;
    out->epoch = m->epoch;
    out->messages = m->live;
    if (m->last_seq == 0) return OPSTATE_OK; /* never written: first_seq 0 */
    out->first_seq = m->live ? m->msgs[m->start].seq : m->last_seq + 1;
    if (m->live) {
        out->first_time = m->msgs[m->start].time;
        out->last_time = m->msgs[m->len - 1].time;
    }
    return OPSTATE_OK;
}

typedef struct opstate__memlog_visit {
    const opstate_memlog *m;
    opstate_bytes filter;
    opstate_log_visit_fn fn;
    void *user;
} opstate__memlog_visit;

OPSTATE__PRIVATE bool opstate__memlog_visit_subject(void *user, const opstate_kv_item *item)
{
    const opstate__memlog_visit *v = (const opstate__memlog_visit *)user;
    opstate__memlog_subject s;
    opstate_log_message msg;
    if (!opstate__filter_matches(v->filter, item->key)) return true;
    OPSTATE_MEMCPY(&s, item->value.ptr, sizeof s);
    opstate__memlog_message(opstate__memlog_at(v->m, s.last), v->m->epoch, &msg);
    v->fn(v->user, &msg);
    return true;
}

OPSTATE__PRIVATE opstate_result opstate__memlog_last_per_subject(void *user, opstate_bytes filter,
                                                                 opstate_log_visit_fn fn, void *fn_user,
                                                                 opstate_error *err)
{
    opstate__memlog_visit v;
    opstate_result r;
    v.m = (const opstate_memlog *)user;
    v.filter = filter;
    v.fn = fn;
    v.user = fn_user;
    r = opstate_kv_iterate(v.m->subjects, opstate__memlog_visit_subject, &v);
    return r == OPSTATE_OK ? OPSTATE_OK : opstate__fail(err, r, 0, "subjects");
}

OPSTATE_API opstate_log opstate_memlog_iface(opstate_memlog *m)
{
    opstate_log log;
    log.user = m;
    log.append = opstate__memlog_append;
    log.read = opstate__memlog_read;
    log.info = opstate__memlog_info;
    log.last_per_subject = opstate__memlog_last_per_subject;
    log.ack = NULL;
    return log;
}

/* >>store ---------------------------------------------------------------- */

struct opstate_memstore {
    opstate_allocator a;
    uint8_t *bytes;
    size_t len;
};

OPSTATE_API opstate_result opstate_memstore_create(const opstate_allocator *a, opstate_memstore **out)
{
    opstate_allocator none;
    opstate_memstore *m;
    if (!a) {
        OPSTATE_MEMSET(&none, 0, sizeof none);
        a = &none;
    }
    if (!(m = (opstate_memstore *)opstate_alloc(a, sizeof *m))) return OPSTATE_NO_MEMORY;
    OPSTATE_MEMSET(m, 0, sizeof *m);
    m->a = *a;
    *out = m;
    return OPSTATE_OK;
}

OPSTATE_API void opstate_memstore_destroy(opstate_memstore *m)
{
    if (!m) return;
    opstate_free(&m->a, m->bytes);
    opstate_free(&m->a, m);
}

OPSTATE_API opstate_bytes opstate_memstore_bytes(const opstate_memstore *m)
{
    opstate_bytes b;
    b.ptr = m->bytes;
    b.len = m->len;
    return b;
}

OPSTATE__PRIVATE opstate_result opstate__memstore_read_meta(void *user, opstate_snapshot_meta *meta,
                                                            opstate_error *err)
{
    const opstate_memstore *m = (const opstate_memstore *)user;
    opstate_bytes dedup, body;
    opstate_result r;
    if (!m->bytes) return OPSTATE_NOT_FOUND;
    if ((r = opstate__snap_frame(m->bytes, m->len, &dedup, &body, err)) != OPSTATE_OK) return r;
    opstate__snap_meta(m->bytes, meta);
    return OPSTATE_OK;
}

OPSTATE__PRIVATE opstate_result opstate__memstore_load(void *user, opstate_kv *kv, opstate_snapshot_meta *meta,
                                                       opstate_dedup *dedup, opstate_error *err)
{
    const opstate_memstore *m = (const opstate_memstore *)user;
    if (!m->bytes) return OPSTATE_NOT_FOUND;
    return opstate_snapshot_decode(m->bytes, m->len, kv, meta, dedup, err);
}

OPSTATE__PRIVATE opstate_result opstate__memstore_flush(void *user, const opstate_kv *kv, const opstate_snapshot_meta *meta,
                                                        const opstate_dedup *dedup, opstate_error *err)
{
    opstate_memstore *m = (opstate_memstore *)user;
    size_t n;
    uint8_t *fresh;
    opstate_result r = opstate_snapshot_encode(kv, meta, dedup, NULL, 0, &n, err);
    if (r != OPSTATE_OK) return r;
    if (!(fresh = (uint8_t *)opstate_alloc(&m->a, n))) return opstate__fail(err, OPSTATE_NO_MEMORY, 0, "snapshot");
    if ((r = opstate_snapshot_encode(kv, meta, dedup, fresh, n, &n, err)) != OPSTATE_OK) {
        opstate_free(&m->a, fresh);
        return r;
    }
    opstate_free(&m->a, m->bytes); /* the swap is the commit */
    m->bytes = fresh;
    m->len = n;
    return OPSTATE_OK;
}

OPSTATE__PRIVATE opstate_result opstate__memstore_drop(void *user, opstate_error *err)
{
    opstate_memstore *m = (opstate_memstore *)user;
    (void)err;
    opstate_free(&m->a, m->bytes);
    m->bytes = NULL;
    m->len = 0;
    return OPSTATE_OK;
}

OPSTATE_API opstate_result opstate_store_compact(const opstate_store *store, opstate_kv *kv, opstate_error *err)
{
    opstate_result r = store->compact ? store->compact(store->user, err) : OPSTATE_OK;
    if (r == OPSTATE_OK && kv && opstate_kv_has_base(kv)) opstate_kv_forget_clean(kv);
    return r;
}

/* A store interface with the four calls every store has (the optional
   ones NULL). */
OPSTATE__PRIVATE opstate_store opstate__store_iface(void *user, opstate_store *calls)
{
    calls->user = user;
    calls->base = NULL;
    calls->compact_due = NULL;
    calls->compact = NULL;
    calls->max_key_len = 0;
    return *calls;
}

OPSTATE_API opstate_store opstate_memstore_iface(opstate_memstore *m)
{
    opstate_store s;
    s.read_meta = opstate__memstore_read_meta;
    s.load = opstate__memstore_load;
    s.flush = opstate__memstore_flush;
    s.drop = opstate__memstore_drop;
    return opstate__store_iface(m, &s);
}

/* >>store: the flash store's adapter ------------------------------------- */

/* A flush over a flash store: what the entries take, and how writing went. */
typedef struct opstate__flash_flush {
    opstate_flash *fs;
    uint64_t bytes;
    opstate_result r;
    opstate_error *err;
} opstate__flash_flush;

OPSTATE__PRIVATE bool opstate__flash_count_entry(void *user, const opstate_kv_item *item)
{
    opstate__flash_flush *f = (opstate__flash_flush *)user;
    f->bytes += opstate_flash_entry_size(f->fs, item->key.len, item->deleted ? 0 : item->value.len);
    return true;
}

OPSTATE__PRIVATE bool opstate__flash_put_entry(void *user, const opstate_kv_item *item)
{
    opstate__flash_flush *f = (opstate__flash_flush *)user;
    opstate_flash_entry e;
    e.key = item->key;
    e.value = item->value;
    e.deleted = item->deleted;
    e.position = item->position;
    f->r = opstate_flash_put(f->fs, &e, f->err);
    return f->r == OPSTATE_OK;
}

/* Sizes the delta and the base, picks one, writes it. */
OPSTATE__PRIVATE opstate_result opstate__flash_write_fold(opstate_flash *fs, const opstate_kv *kv,
                                                          const opstate_flash_meta *meta, opstate_bytes dedup,
                                                          opstate_error *err)
{
    opstate__flash_flush f;
    opstate_flash_kind kind;
    uint64_t delta, commit = opstate_flash_commit_size(fs, dedup.len);
    opstate_result r;
    f.fs = fs;
    f.bytes = 0;
    f.r = OPSTATE_OK;
    f.err = err;
    opstate_kv_dirty_iterate(kv, opstate__flash_count_entry, &f);
    delta = f.bytes + commit;
    f.bytes = 0;
    if ((r = opstate_kv_iterate(kv, opstate__flash_count_entry, &f)) != OPSTATE_OK) return opstate__fail(err, r, 0, "fold");
    if ((r = opstate_flash_plan(fs, delta, f.bytes + commit, &kind)) != OPSTATE_OK)
        return opstate__fail(err, r, 0, "flash");
    if ((r = opstate_flash_begin(fs, kind, err)) != OPSTATE_OK) return r;
    if (kind == OPSTATE_FLASH_DELTA)
        opstate_kv_dirty_iterate(kv, opstate__flash_put_entry, &f);
    else if ((r = opstate_kv_iterate(kv, opstate__flash_put_entry, &f)) != OPSTATE_OK)
        return opstate__fail(err, r, 0, "fold");
    if (f.r != OPSTATE_OK) return f.r;
    return opstate_flash_commit(fs, meta, dedup, err);
}

OPSTATE__PRIVATE opstate_result opstate__flash_store_flush(void *user, const opstate_kv *kv,
                                                           const opstate_snapshot_meta *meta,
                                                           const opstate_dedup *dedup, opstate_error *err)
{
    opstate_flash *fs = (opstate_flash *)user;
    opstate_allocator malloc_free;
    opstate_flash_meta fm;
    opstate_bytes bytes;
    uint8_t *buf = NULL;
    opstate_result r;
    OPSTATE_MEMSET(&malloc_free, 0, sizeof malloc_free);
    bytes.ptr = NULL;
    bytes.len = 0;
    if (dedup) {
        opstate_dedup_encode(dedup, NULL, 0, &bytes.len);
        if (!(buf = (uint8_t *)opstate_alloc(&malloc_free, bytes.len)))
            return opstate__fail(err, OPSTATE_NO_MEMORY, 0, "dedup");
        opstate_dedup_encode(dedup, buf, bytes.len, &bytes.len);
        bytes.ptr = buf;
    }
    fm.schema_version = meta->schema_version;
    fm.position = meta->position;
    r = opstate__flash_write_fold(fs, kv, &fm, bytes, err);
    opstate_free(&malloc_free, buf);
    return r;
}

OPSTATE__PRIVATE opstate_result opstate__flash_restore_entry(void *user, const opstate_flash_entry *entry)
{
    opstate_kv_item item;
    OPSTATE_MEMSET(&item, 0, sizeof item);
    item.key = entry->key;
    item.value = entry->value;
    item.deleted = entry->deleted;
    item.position = entry->position;
    return opstate_kv_restore((opstate_kv *)user, &item);
}

OPSTATE__PRIVATE opstate_result opstate__flash_store_load(void *user, opstate_kv *kv, opstate_snapshot_meta *meta,
                                                          opstate_dedup *dedup, opstate_error *err)
{
    opstate_flash *fs = (opstate_flash *)user;
    opstate_allocator malloc_free;
    opstate_flash_meta fm;
    size_t len = 0;
    uint8_t *buf = NULL;
    opstate_result r = opstate_flash_read_meta(fs, NULL, &len, err);
    if (r != OPSTATE_OK) return r;
    OPSTATE_MEMSET(&malloc_free, 0, sizeof malloc_free);
    if (dedup && len > 0 && !(buf = (uint8_t *)opstate_alloc(&malloc_free, len)))
        return opstate__fail(err, OPSTATE_NO_MEMORY, 0, "dedup");
    r = opstate_flash_load(fs, opstate__flash_restore_entry, kv, &fm, buf, len, &len, err);
    if (r == OPSTATE_OK && dedup && len > 0) r = opstate_dedup_decode(dedup, buf, len, err);
    if (r == OPSTATE_OK && dedup && len == 0) opstate_dedup_clear(dedup);
    opstate_free(&malloc_free, buf);
    if (r != OPSTATE_OK) return r;
    meta->schema_version = fm.schema_version;
    meta->position = fm.position;
    return OPSTATE_OK;
}

OPSTATE__PRIVATE opstate_result opstate__flash_store_read_meta(void *user, opstate_snapshot_meta *meta,
                                                               opstate_error *err)
{
    opstate_flash_meta fm;
    opstate_result r = opstate_flash_read_meta((const opstate_flash *)user, &fm, NULL, err);
    if (r != OPSTATE_OK) return r;
    meta->schema_version = fm.schema_version;
    meta->position = fm.position;
    return OPSTATE_OK;
}

OPSTATE__PRIVATE opstate_result opstate__flash_store_drop(void *user, opstate_error *err)
{
    return opstate_flash_drop((opstate_flash *)user, err);
}

OPSTATE_API opstate_store opstate_flash_store_iface(opstate_flash *fs)
{
    opstate_store s;
    uint32_t longest = opstate__flash_chunk(fs) - OPSTATE__FLASH_RECORD_HEADER - OPSTATE__FLASH_ENTRY_POSITION - 4u;
    s.read_meta = opstate__flash_store_read_meta;
    s.load = opstate__flash_store_load;
    s.flush = opstate__flash_store_flush;
    s.drop = opstate__flash_store_drop;
    /* compact_due / compact stay NULL: a base needs the live state, which
       only a flush has; flush writes one when the space asks for it. */
    s = opstate__store_iface(fs, &s);
    s.max_key_len = longest > 0xFFFFu ? 0xFFFFu : longest;
    return s;
}

/* >>consumer ------------------------------------------------------------- */

#define OPSTATE__EVENT_KEY_MAX (2u * OPSTATE_MAX_TOKEN_LEN + 2u + OPSTATE_MAX_KEY_LEN)

OPSTATE_API opstate_apply_outcome opstate_apply_default(void *user, opstate_kv *kv, const opstate_event *ev)
{
    uint8_t buf[OPSTATE__EVENT_KEY_MAX];
    opstate_bytes key;
    opstate_result r;
    (void)user;
    if (ev->op != OPSTATE_OP_PUT && ev->op != OPSTATE_OP_DELETE) return OPSTATE_APPLY_REJECT;
    if (opstate_kv_event_key(ev, buf, sizeof buf, &key.len) != OPSTATE_OK) return OPSTATE_APPLY_REJECT;
    key.ptr = buf;
    r = ev->op == OPSTATE_OP_PUT ? opstate_kv_put(kv, key, ev->data, ev->position)
                                 : opstate_kv_delete(kv, key, ev->position);
    if (r == OPSTATE_OK) return OPSTATE_APPLY_DONE;
    return (r == OPSTATE_OVERSIZED || r == OPSTATE_INVALID_ARGUMENT) ? OPSTATE_APPLY_REJECT : OPSTATE_APPLY_RETRY;
}

/* Decodes a log message into ev (position set, timestamp fallback done). */
OPSTATE__PRIVATE opstate_result opstate__decode_message(const opstate_log_message *msg, opstate_time_fallback fallback,
                                                        int64_t now, opstate_event *ev)
{
    opstate_result r = opstate_event_decode(msg->data.ptr, msg->data.len, ev, NULL);
    if (r != OPSTATE_OK) return r;
    ev->position = msg->position;
    if (!ev->has_time && fallback == OPSTATE_TIME_FALLBACK_WALLCLOCK) {
        ev->has_time = true;
        ev->time = now ? now : msg->position.time;
    }
    return OPSTATE_OK;
}

OPSTATE__PRIVATE opstate_apply_outcome opstate__run_apply(opstate_apply_fn apply, void *user, opstate_kv *kv,
                                                          const opstate_event *ev)
{
    return apply ? apply(user, kv, ev) : opstate_apply_default(user, kv, ev);
}

/* A deferred event waiting for opstate_consumer_ack. */
typedef struct opstate__deferred {
    uint64_t seq;
    opstate_id id;
} opstate__deferred;

struct opstate_consumer {
    opstate_consumer_config cfg;
    opstate_kv *kv;
    opstate_dedup dedup;
    void *dedup_mem;
    opstate_hwm hwm;
    uint64_t epoch, next_seq, flushed_seq, end_seq, start_seq;
    bool time_gate; /* FROM_TIME: skip events published before start_time */
    int64_t start_time, last_flush_at;
    uint64_t since_flush;
    opstate_log_message *batch;
    opstate__deferred deferred[OPSTATE_HWM_CAPACITY];
    uint32_t deferred_count;
    uint64_t reread_seq;  /* where the last unproven hole started, */
    uint32_t rereads;     /* and how often it was re-read in a row */
    opstate_consumer_status status;
};

OPSTATE__PRIVATE int64_t opstate__now(const opstate_consumer *c)
{
    return c->cfg.clock ? c->cfg.clock(c->cfg.clock_user) : 0;
}

/* Every default of a consumer config, in one place. */
OPSTATE__PRIVATE void opstate__consumer_defaults(opstate_consumer_config *cfg)
{
    if (!cfg->dedup_capacity) cfg->dedup_capacity = OPSTATE__DEFAULT_DEDUP_CAPACITY;
    if (cfg->dedup_capacity < 2u * OPSTATE_HWM_CAPACITY) cfg->dedup_capacity = 2u * OPSTATE_HWM_CAPACITY;
    if (!cfg->batch) cfg->batch = OPSTATE__DEFAULT_BATCH;
    if (!cfg->flush_interval_ns) cfg->flush_interval_ns = OPSTATE__DEFAULT_FLUSH_INTERVAL_NS;
    if (!cfg->clock) cfg->clock = opstate__wall_clock;
}

OPSTATE__PRIVATE void opstate__consumer_free(opstate_consumer *c)
{
    opstate_allocator a = c->cfg.allocator;
    opstate_kv_destroy(c->kv);
    opstate_free(&a, c->dedup_mem);
    opstate_free(&a, c->batch);
    opstate_free(&a, c);
}

/* Allocates the consumer and its fold, dedup window and read batch. */
OPSTATE__PRIVATE opstate_result opstate__consumer_alloc(const opstate_consumer_config *cfg, opstate_consumer **out)
{
    opstate_consumer *c;
    opstate_kv_config kc;
    size_t dedup_bytes, batch_bytes;
    if (!(c = (opstate_consumer *)opstate_alloc(&cfg->allocator, sizeof *c))) return OPSTATE_NO_MEMORY;
    OPSTATE_MEMSET(c, 0, sizeof *c);
    c->cfg = *cfg;
    opstate__consumer_defaults(&c->cfg);
    OPSTATE_MEMSET(&kc, 0, sizeof kc);
    kc.allocator = cfg->allocator;
    kc.base = cfg->store.base ? cfg->store.base(cfg->store.user) : NULL;
    kc.max_key_len = cfg->store.max_key_len;
    dedup_bytes = opstate_dedup_storage_size(c->cfg.dedup_capacity);
    if (!dedup_bytes || !opstate__array_bytes(c->cfg.batch, sizeof *c->batch, &batch_bytes) ||
        opstate_kv_create(&kc, &c->kv) != OPSTATE_OK ||
        !(c->dedup_mem = opstate_alloc(&cfg->allocator, dedup_bytes)) ||
        !(c->batch = (opstate_log_message *)opstate_alloc(&cfg->allocator, batch_bytes))) {
        opstate__consumer_free(c);
        return OPSTATE_NO_MEMORY;
    }
    opstate_dedup_init(&c->dedup, c->dedup_mem, dedup_bytes, c->cfg.dedup_capacity);
    *out = c;
    return OPSTATE_OK;
}

/* Sets the mark (all at or below it is done) and where reading goes on. */
OPSTATE__PRIVATE void opstate__consumer_seek(opstate_consumer *c, uint64_t mark_seq, int64_t mark_time,
                                             uint64_t next_seq)
{
    opstate_position mark;
    mark.seq = mark_seq;
    mark.time = mark_time;
    mark.epoch = c->epoch;
    opstate_hwm_init(&c->hwm, mark);
    c->next_seq = next_seq;
    c->deferred_count = 0;
}

/* Empties the state here and in the store. */
OPSTATE__PRIVATE opstate_result opstate__consumer_clear(opstate_consumer *c, opstate_error *err)
{
    opstate_result r = c->cfg.store.drop(c->cfg.store.user, err);
    if (r != OPSTATE_OK) return r;
    opstate_kv_clear(c->kv);
    opstate_dedup_clear(&c->dedup);
    c->flushed_seq = 0;
    return OPSTATE_OK;
}

OPSTATE__PRIVATE opstate_result opstate__consumer_flush(opstate_consumer *c, opstate_error *err)
{
    opstate_snapshot_meta meta;
    opstate_result r;
    if (opstate_kv_dirty_count(c->kv) == 0 && c->hwm.mark.seq == c->flushed_seq) return OPSTATE_OK;
    meta.schema_version = c->cfg.schema.version;
    meta.position = c->hwm.mark;
    r = c->cfg.store.flush(c->cfg.store.user, c->kv, &meta, &c->dedup, err);
    if (r != OPSTATE_OK) {
        c->status.flush_failures++;
        return r;
    }
    opstate_kv_mark_clean(c->kv);
    c->flushed_seq = meta.position.seq;
    c->since_flush = 0;
    c->last_flush_at = opstate__now(c);
    c->status.flushes++;
    return OPSTATE_OK;
}

/* Foreground flush when one is due: a failure is logged, not returned;
   the keys stay dirty and the next flush retries them. */
OPSTATE__PRIVATE void opstate__consumer_flush_if_due(opstate_consumer *c)
{
    bool due = c->cfg.flush_every && c->since_flush >= c->cfg.flush_every;
    opstate_result r;
    if (!due && c->cfg.flush_interval_ns > 0 && c->cfg.clock)
        due = opstate__now(c) - c->last_flush_at >= c->cfg.flush_interval_ns;
    if (!due) return;
    r = opstate__consumer_flush(c, NULL);
    if (r == OPSTATE_OK) return;
    c->since_flush = 0; /* wait a full interval before the retry */
    c->last_flush_at = opstate__now(c);
    opstate_diag_line(&c->cfg.diag, OPSTATE_DIAG_WARN, "flush failed; ", opstate_kv_dirty_count(c->kv),
                          " dirty keys kept in memory, retrying at the next flush");
}

/* Compacts the store when it says so: a due compaction in an idle poll
   (caught up, nothing delivered: never in a backlog, never in a poll that
   applied events, never inside a flush), an overdue one at once. A
   read-through fold then forgets what the store absorbed. A failure is
   logged, not returned. */
OPSTATE__PRIVATE void opstate__consumer_compact_if_due(opstate_consumer *c, bool idle)
{
    opstate_compaction due = c->cfg.store.compact_due ? c->cfg.store.compact_due(c->cfg.store.user)
                                                      : OPSTATE_COMPACTION_NOT_DUE;
    opstate_result r;
    if (due == OPSTATE_COMPACTION_NOT_DUE || (due == OPSTATE_COMPACTION_DUE && !idle) || !c->cfg.store.compact) return;
    r = opstate_store_compact(&c->cfg.store, c->kv, NULL);
    if (r != OPSTATE_OK) {
        c->status.compaction_failures++;
        opstate_diag_line(&c->cfg.diag, OPSTATE_DIAG_WARN, "compaction failed (result ", (uint64_t)r,
                          "); the flushed records stay and it is retried later");
        return;
    }
    c->status.compactions++;
}

/* Resync: keys of the fold whose subject has no message left in the log
   are removed (their delete markers may have been evicted too). */
typedef struct opstate__resync {
    opstate_kv *seen, *doomed, *state;
    opstate_result r;
    uint64_t removed;
} opstate__resync;

OPSTATE__PRIVATE void opstate__resync_visit(void *user, const opstate_log_message *msg)
{
    opstate__resync *rs = (opstate__resync *)user;
    uint8_t buf[OPSTATE__EVENT_KEY_MAX];
    opstate_bytes key, none = {NULL, 0};
    opstate_position pos = {0, 0, 0};
    opstate_event ev;
    if (rs->r != OPSTATE_OK || opstate_event_decode(msg->data.ptr, msg->data.len, &ev, NULL) != OPSTATE_OK ||
        opstate_kv_event_key(&ev, buf, sizeof buf, &key.len) != OPSTATE_OK)
        return;
    key.ptr = buf;
    rs->r = opstate_kv_put(rs->seen, key, none, pos);
}

OPSTATE__PRIVATE bool opstate__resync_mark(void *user, const opstate_kv_item *item)
{
    opstate__resync *rs = (opstate__resync *)user;
    opstate_kv_item found;
    opstate_bytes none = {NULL, 0};
    if (opstate_kv_get(rs->seen, item->key, &found) == OPSTATE_NOT_FOUND)
        rs->r = opstate_kv_put(rs->doomed, item->key, none, item->position);
    return rs->r == OPSTATE_OK;
}

OPSTATE__PRIVATE bool opstate__resync_remove(void *user, const opstate_kv_item *item)
{
    opstate__resync *rs = (opstate__resync *)user;
    rs->r = opstate_kv_delete(rs->state, item->key, item->position);
    rs->removed++;
    return rs->r == OPSTATE_OK;
}

OPSTATE__PRIVATE opstate_result opstate__consumer_resync(opstate_consumer *c, opstate_error *err)
{
    opstate__resync rs;
    opstate_kv_config kc;
    opstate_result r;
    OPSTATE_MEMSET(&rs, 0, sizeof rs);
    OPSTATE_MEMSET(&kc, 0, sizeof kc);
    kc.allocator = c->cfg.allocator;
    rs.state = c->kv;
    r = opstate_kv_create(&kc, &rs.seen);
    if (r == OPSTATE_OK) r = opstate_kv_create(&kc, &rs.doomed);
    if (r == OPSTATE_OK) r = c->cfg.log.last_per_subject(c->cfg.log.user, c->cfg.filter, opstate__resync_visit, &rs, err);
    if (r == OPSTATE_OK && (r = rs.r) == OPSTATE_OK) r = opstate_kv_iterate(c->kv, opstate__resync_mark, &rs);
    if (r == OPSTATE_OK && (r = rs.r) == OPSTATE_OK) r = opstate_kv_iterate(rs.doomed, opstate__resync_remove, &rs);
    if (r == OPSTATE_OK) r = rs.r;
    opstate_kv_destroy(rs.seen);
    opstate_kv_destroy(rs.doomed);
    if (r != OPSTATE_OK) return opstate__fail(err, r, 0, "resync");
    c->status.resynced = true;
    c->status.resync_removed += rs.removed;
    opstate_diag_line(&c->cfg.diag, OPSTATE_DIAG_WARN, "cursor expired: resync removed ", rs.removed,
                          " keys that have no message left in the log");
    return OPSTATE_OK;
}

/* The cursor expired (events after it were evicted): reconcile, rebuild,
   or (resync disabled) go on from the first retained event. */
OPSTATE__PRIVATE opstate_result opstate__consumer_expired(opstate_consumer *c, const opstate_stream_info *info,
                                                          opstate_error *err)
{
    opstate_position mark = c->hwm.mark;
    opstate_result r = OPSTATE_OK;
    uint64_t first = opstate__stream_start(info);
    if (c->cfg.no_resync) {
        opstate_diag_line(&c->cfg.diag, OPSTATE_DIAG_WARN, "cursor expired, resync disabled: ", first - mark.seq - 1,
                              " events evicted; keys deleted meanwhile may survive");
    } else if (c->cfg.apply) {
        opstate_diag_line(&c->cfg.diag, OPSTATE_DIAG_WARN, "cursor expired with a custom apply: ", first - mark.seq - 1,
                              " events evicted; rebuilding from the retained log");
        r = opstate__consumer_clear(c, err);
        mark.seq = 0;
        mark.time = 0;
    } else {
        r = opstate__consumer_resync(c, err);
    }
    if (r == OPSTATE_OK) opstate__consumer_seek(c, mark.seq, mark.time, first);
    return r;
}

/* The stream was recreated: start over on the new incarnation. */
OPSTATE__PRIVATE opstate_result opstate__consumer_reset(opstate_consumer *c, const opstate_stream_info *info,
                                                        opstate_error *err)
{
    opstate_result r = opstate__consumer_clear(c, err);
    if (r != OPSTATE_OK) return r;
    c->epoch = info->epoch;
    c->status.resets++;
    opstate__consumer_seek(c, 0, 0, opstate__stream_start(info));
    opstate_diag_line(&c->cfg.diag, OPSTATE_DIAG_WARN, "stream recreated: state cleared, rebuilding from sequence ",
                          c->next_seq, "");
    return OPSTATE_OK;
}

/* Decision, then load or clear. *stored gets the loaded position (seq 0
   when the state starts empty). */
OPSTATE__PRIVATE opstate_result opstate__consumer_restore(opstate_consumer *c, const opstate_stream_info *info,
                                                          opstate_position *stored, opstate_error *err)
{
    opstate_snapshot_meta meta;
    opstate_result r = c->cfg.store.read_meta(c->cfg.store.user, &meta, err);
    bool has = r == OPSTATE_OK;
    OPSTATE_MEMSET(stored, 0, sizeof *stored);
    if (r != OPSTATE_OK && r != OPSTATE_NOT_FOUND) return r;
    r = opstate_decide_restore(c->cfg.mode, c->cfg.start, has ? &meta.position : NULL, info, &c->status.decision);
    if (r != OPSTATE_OK) return opstate__fail(err, r, 0, "start");
    c->epoch = info->epoch;
    if (!has) return OPSTATE_OK;
    if (!c->status.decision.restore) return opstate__consumer_clear(c, err);
    if ((r = c->cfg.store.load(c->cfg.store.user, c->kv, &meta, &c->dedup, err)) != OPSTATE_OK) return r;
    r = opstate_schema_check(&c->cfg.schema, meta.schema_version, c->kv);
    if (r == OPSTATE_SCHEMA_OLD) {
        opstate_diag_line(&c->cfg.diag, OPSTATE_DIAG_WARN, "stored state has schema version ", meta.schema_version,
                              " and no upgrade: cleared, replaying from the first retained event");
        c->status.decision.restore = false;
        return opstate__consumer_clear(c, err);
    }
    if (r != OPSTATE_OK) return opstate__fail(err, r, 0, "schema");
    *stored = meta.position;
    c->flushed_seq = meta.position.seq; /* what is stored needs no flush */
    return OPSTATE_OK;
}

/* Where reading starts, given what was restored. */
OPSTATE__PRIVATE opstate_result opstate__consumer_start(opstate_consumer *c, const opstate_stream_info *info,
                                                        opstate_position stored, opstate_error *err)
{
    opstate_start start = c->cfg.start;
    uint64_t first = opstate__stream_start(info);
    opstate_result r = opstate_resume_check(stored, info, &c->status.resume);
    if (r != OPSTATE_OK) return opstate__fail(err, r, 0, "stored position");
    c->time_gate = start.kind == OPSTATE_START_FROM_TIME;
    c->start_time = start.time;
    if (start.kind == OPSTATE_START_LATEST) {
        opstate__consumer_seek(c, info->last_seq, info->last_time, info->last_seq + 1);
    } else if (stored.seq == 0) { /* empty state: read from the start asked for */
        if (start.kind == OPSTATE_START_FROM_SEQUENCE) opstate__consumer_seek(c, start.seq - 1, 0, start.seq);
        else opstate__consumer_seek(c, 0, 0, first);
    } else if (c->status.resume.state == OPSTATE_RESUME_RESET) { /* only under mode keep */
        opstate_diag_line(&c->cfg.diag, OPSTATE_DIAG_WARN, "keeping state from another stream incarnation; reading from ",
                              first, "");
        opstate__consumer_seek(c, 0, 0, first);
    } else if (start.kind == OPSTATE_START_FROM_SEQUENCE && start.seq > stored.seq + 1) { /* forward, with a gap */
        opstate__consumer_seek(c, stored.seq, stored.time, start.seq);
    } else { /* resume; under keep also a start at or before the stored position: never apply twice */
        opstate__consumer_seek(c, stored.seq, stored.time, c->status.resume.next_seq);
        if (c->status.resume.state == OPSTATE_RESUME_EXPIRED) r = opstate__consumer_expired(c, info, err);
    }
    c->start_seq = c->status.first_read_seq = c->next_seq;
    c->status.restored = stored;
    c->end_seq = info->last_seq;
    if (r == OPSTATE_OK && c->hwm.mark.seq != stored.seq) r = opstate__consumer_flush(c, err); /* persist a skip */
    return r;
}

OPSTATE_API opstate_result opstate_consumer_open(const opstate_consumer_config *cfg, opstate_consumer **out,
                                                 opstate_error *err)
{
    opstate_consumer *c;
    opstate_stream_info info;
    opstate_position stored;
    opstate_result r = opstate__consumer_alloc(cfg, &c);
    if (r != OPSTATE_OK) return opstate__fail(err, r, 0, "consumer");
    r = cfg->log.info(cfg->log.user, &info, err);
    if (r == OPSTATE_OK) r = opstate__consumer_restore(c, &info, &stored, err);
    if (r == OPSTATE_OK) r = opstate__consumer_start(c, &info, stored, err);
    if (r != OPSTATE_OK) {
        opstate__consumer_free(c);
        return r;
    }
    c->last_flush_at = opstate__now(c);
    *out = c;
    return OPSTATE_OK;
}

/* Moves past a message without applying it (time gate, duplicate, skipped
   poison): the mark may pass it. */
OPSTATE__PRIVATE void opstate__consumer_pass(opstate_consumer *c, const opstate_log_message *msg,
                                             opstate_poll_result *res)
{
    opstate_hwm_deliver(&c->hwm, msg->position.seq, msg->position.time);
    opstate_hwm_ack(&c->hwm, msg->position.seq);
    c->next_seq = msg->position.seq + 1;
    c->since_flush++;
    c->status.skipped++;
    res->skipped++;
}

OPSTATE__PRIVATE opstate_result opstate__consumer_poison(opstate_consumer *c, const opstate_log_message *msg,
                                                         const opstate_id *id, opstate_result reason,
                                                         opstate_poll_result *res)
{
    if (c->status.poison_count == 0 || c->status.last_poison.position.seq != msg->position.seq) {
        c->status.poison_count++;
        res->poison++;
        c->status.last_poison.position = msg->position;
        if (id) c->status.last_poison.id = *id;
        else OPSTATE_MEMSET(&c->status.last_poison.id, 0, sizeof(opstate_id));
        c->status.last_poison.reason = reason;
        opstate_diag_line(&c->cfg.diag, OPSTATE_DIAG_ERROR, "poison event at sequence ", msg->position.seq,
                              c->cfg.poison == OPSTATE_POISON_SKIP ? ": skipped" : ": stopped");
    }
    if (c->cfg.poison != OPSTATE_POISON_SKIP) return OPSTATE_POISON;
    opstate__consumer_pass(c, msg, res);
    return OPSTATE_OK;
}

/* Handles one delivered message. OK: go on. POISON / APPLY_FAILED: stop at
   it. WINDOW_FULL: too many deferred events in flight; stop quietly. */
OPSTATE__PRIVATE opstate_result opstate__consumer_take(opstate_consumer *c, const opstate_log_message *msg,
                                                       opstate_poll_result *res)
{
    opstate_event ev;
    opstate_apply_outcome outcome;
    opstate_result r;
    uint64_t seq = msg->position.seq;
    if (seq < c->next_seq || seq <= c->hwm.last_delivered) { /* redelivery of something handled */
        c->status.skipped++;
        res->skipped++;
        return OPSTATE_OK;
    }
    if (opstate_hwm_in_flight(&c->hwm) == OPSTATE_HWM_CAPACITY) return OPSTATE_WINDOW_FULL;
    if (c->time_gate && msg->position.time < c->start_time) {
        opstate__consumer_pass(c, msg, res);
        return OPSTATE_OK;
    }
    c->time_gate = false;
    r = opstate__decode_message(msg, c->cfg.time_fallback, opstate__now(c), &ev);
    if (r != OPSTATE_OK) return opstate__consumer_poison(c, msg, NULL, r, res);
    ev.position.epoch = c->epoch;
    if (opstate_dedup_contains(&c->dedup, &ev.id)) {
        opstate__consumer_pass(c, msg, res);
        return OPSTATE_OK;
    }
    outcome = opstate__run_apply(c->cfg.apply, c->cfg.apply_user, c->kv, &ev);
    if (outcome == OPSTATE_APPLY_RETRY) return OPSTATE_APPLY_FAILED;
    if (outcome == OPSTATE_APPLY_REJECT) return opstate__consumer_poison(c, msg, &ev.id, OPSTATE_POISON, res);
    opstate_hwm_deliver(&c->hwm, seq, msg->position.time);
    if (outcome == OPSTATE_APPLY_DEFER) {
        c->deferred[c->deferred_count].seq = seq;
        c->deferred[c->deferred_count++].id = ev.id;
    } else {
        opstate_hwm_ack(&c->hwm, seq);
        opstate_dedup_insert(&c->dedup, &ev.id);
    }
    c->next_seq = seq + 1;
    c->since_flush++;
    c->status.applied++;
    res->applied++;
    return OPSTATE_OK;
}

/* Re-reads allowed at one place before an unproven hole is an error. */
#define OPSTATE__GAP_REREADS 8u

/* A hole before batch[i] that the log did not vouch for: keep only what
   comes before it and read again from the hole (the log starts a fresh
   read there). GAP when the same hole stays unproven. */
OPSTATE__PRIVATE opstate_result opstate__consumer_unproven(opstate_consumer *c, size_t i, uint64_t expected,
                                                           size_t *n, opstate_error *err)
{
    if (c->reread_seq != expected) c->rereads = 0;
    c->reread_seq = expected;
    if (++c->rereads > OPSTATE__GAP_REREADS) {
        opstate_diag_line(&c->cfg.diag, OPSTATE_DIAG_ERROR, "sequence ", expected,
                          " and after: a hole the log cannot prove empty, still there after re-reading");
        return opstate__fail(err, OPSTATE_GAP, 0, "sequence");
    }
    c->status.rereads++;
    opstate_diag_line(&c->cfg.diag, OPSTATE_DIAG_INFO, "hole before a delivery not vouched for: re-reading from ",
                      expected, "");
    *n = i;
    return OPSTATE_OK;
}

/* A hole [expected, delivered - 1] before batch[i], classified against
   *info (read once per batch, on the first hole). OK: empty and vouched
   for. Otherwise the batch is cut (unproven) or made stale (*restarted:
   a resync or reset). */
OPSTATE__PRIVATE opstate_result opstate__consumer_hole(opstate_consumer *c, size_t i, uint64_t expected,
                                                       opstate_stream_info *info, bool *have_info, size_t *n,
                                                       bool *restarted, opstate_error *err)
{
    opstate_gap gap;
    opstate_result r;
    if (!*have_info && (r = c->cfg.log.info(c->cfg.log.user, info, err)) != OPSTATE_OK) return r;
    *have_info = true;
    if ((r = opstate_gap_classify(expected, c->batch[i].position.seq, c->epoch, info, &gap)) != OPSTATE_OK)
        return opstate__fail(err, r, 0, "sequence");
    if (gap.kind == OPSTATE_GAP_SKIPPED)
        return c->batch[i].contiguous ? OPSTATE_OK : opstate__consumer_unproven(c, i, expected, n, err);
    *restarted = true;
    if (gap.kind == OPSTATE_GAP_RESET) return opstate__consumer_reset(c, info, err);
    opstate_diag_line(&c->cfg.diag, OPSTATE_DIAG_WARN, "gap while reading: ", gap.evicted,
                      " events were evicted before they were read");
    return opstate__consumer_expired(c, info, err);
}

/* Checks a batch's sequences against what was expected: the mark never
   passes an event it did not apply. Every hole is evicted (resync), a
   reset, or empty only when the log vouches for it; otherwise *n is cut
   before it and the next read starts over at the hole (a log whose read
   position is past it starts a fresh read there). *restarted is set when
   a resync or reset made the batch stale. */
OPSTATE__PRIVATE opstate_result opstate__consumer_check_gaps(opstate_consumer *c, size_t *n, bool *restarted,
                                                             opstate_error *err)
{
    opstate_stream_info info;
    uint64_t expected = c->next_seq;
    bool have_info = false;
    size_t i;
    *restarted = false;
    for (i = 0; i < *n; i++) {
        uint64_t seq = c->batch[i].position.seq;
        size_t before = *n;
        opstate_result r;
        if (seq < expected) continue; /* a redelivery: take() skips it */
        if (seq > expected) {
            r = opstate__consumer_hole(c, i, expected, &info, &have_info, n, restarted, err);
            if (r != OPSTATE_OK || *restarted || *n != before) return r;
        }
        expected = seq + 1;
    }
    return OPSTATE_OK;
}

/* Reads one batch and handles it; *left counts down, *stop is set when
   reading should end for this poll. */
OPSTATE__PRIVATE opstate_result opstate__consumer_batch(opstate_consumer *c, uint32_t *left, bool *stop,
                                                        opstate_poll_result *res, opstate_error *err)
{
    size_t n = 0, i;
    bool restarted;
    opstate_result r = c->cfg.log.read(c->cfg.log.user, c->cfg.filter, c->next_seq, 0, c->batch,
                                       *left < c->cfg.batch ? *left : c->cfg.batch, &n, err);
    if (r != OPSTATE_OK) return r;
    if (n == 0) {
        res->caught_up = true;
        *stop = true;
        return OPSTATE_OK;
    }
    if ((r = opstate__consumer_check_gaps(c, &n, &restarted, err)) != OPSTATE_OK || restarted) return r;
    for (i = 0; i < n && r == OPSTATE_OK; i++) r = opstate__consumer_take(c, &c->batch[i], res);
    *left -= (uint32_t)i;
    if (c->cfg.log.ack && c->hwm.mark.seq && c->cfg.log.ack(c->cfg.log.user, c->hwm.mark.seq, NULL) != OPSTATE_OK)
        opstate_diag_line(&c->cfg.diag, OPSTATE_DIAG_WARN, "log ack failed up to sequence ", c->hwm.mark.seq,
                          " (the stored position stays the truth)");
    if (r == OPSTATE_WINDOW_FULL) {
        *stop = true;
        return OPSTATE_OK;
    }
    if (c->cfg.progress)
        c->cfg.progress(c->cfg.progress_user, c->start_seq, c->end_seq, c->status.applied, c->next_seq - 1);
    return r;
}

OPSTATE_API opstate_result opstate_consumer_poll(opstate_consumer *c, uint32_t max_events, int64_t budget_ns,
                                                 opstate_poll_result *out, opstate_error *err)
{
    opstate_poll_result res;
    opstate_stream_info info;
    uint32_t left = max_events ? max_events : c->cfg.batch;
    int64_t deadline = budget_ns && c->cfg.clock ? opstate__now(c) + budget_ns : 0;
    bool stop = false;
    opstate_result r = c->cfg.log.info(c->cfg.log.user, &info, err);
    OPSTATE_MEMSET(&res, 0, sizeof res);
    if (r == OPSTATE_OK && info.epoch != c->epoch) r = opstate__consumer_reset(c, &info, err);
    else if (r == OPSTATE_OK && info.first_seq && c->next_seq < info.first_seq) /* evicted before we read them */
        r = opstate__consumer_expired(c, &info, err);
    if (r == OPSTATE_OK) c->end_seq = info.last_seq;
    while (r == OPSTATE_OK && left && !stop) {
        r = opstate__consumer_batch(c, &left, &stop, &res, err);
        if (r == OPSTATE_OK) opstate__consumer_flush_if_due(c);
        if (deadline && opstate__now(c) >= deadline) break;
    }
    if (r == OPSTATE_OK)
        opstate__consumer_compact_if_due(c, res.caught_up && !res.applied && !res.skipped && !res.poison);
    *out = res;
    return r;
}

OPSTATE_API opstate_result opstate_consumer_ack(opstate_consumer *c, uint64_t seq)
{
    uint32_t i;
    for (i = 0; i < c->deferred_count && c->deferred[i].seq != seq; i++) continue;
    if (i == c->deferred_count) return OPSTATE_NOT_FOUND;
    opstate_hwm_ack(&c->hwm, seq);
    opstate_dedup_insert(&c->dedup, &c->deferred[i].id);
    c->deferred[i] = c->deferred[--c->deferred_count];
    return OPSTATE_OK;
}

OPSTATE_API opstate_result opstate_consumer_flush(opstate_consumer *c, opstate_error *err)
{
    return opstate__consumer_flush(c, err);
}

OPSTATE_API opstate_result opstate_consumer_close(opstate_consumer *c, opstate_error *err)
{
    opstate_result r;
    if (!c) return OPSTATE_OK;
    r = opstate__consumer_flush(c, err);
    if (r != OPSTATE_OK)
        opstate_diag_line(&c->cfg.diag, OPSTATE_DIAG_ERROR, "final flush failed; state after sequence ", c->flushed_seq,
                              " will be re-read from the log at the next start");
    opstate__consumer_free(c);
    return r;
}

OPSTATE_API opstate_kv *opstate_consumer_kv(opstate_consumer *c) { return c->kv; }

OPSTATE_API opstate_position opstate_consumer_position(const opstate_consumer *c) { return c->hwm.mark; }

OPSTATE_API const opstate_consumer_status *opstate_consumer_get_status(const opstate_consumer *c)
{
    return &c->status;
}

/* >>replay --------------------------------------------------------------- */

/* Folds one message (at or below the end); *done once the count cutoff is reached. */
OPSTATE__PRIVATE opstate_result opstate__replay_one(const opstate_replay_config *cfg, opstate_kv *into,
                                                    opstate_dedup *dedup, const opstate_log_message *msg,
                                                    opstate_replay_result *res, bool *done)
{
    opstate_event ev;
    opstate_apply_outcome outcome;
    if (cfg->has_until_time && msg->position.time > cfg->until_time) {
        res->filtered++;
        return OPSTATE_OK;
    }
    if (opstate__decode_message(msg, cfg->time_fallback, 0, &ev) != OPSTATE_OK) {
        res->poison++;
        return OPSTATE_OK;
    }
    if (!opstate_dedup_insert(dedup, &ev.id)) {
        res->duplicates++;
        return OPSTATE_OK;
    }
    outcome = opstate__run_apply(cfg->apply, cfg->apply_user, into, &ev);
    if (outcome == OPSTATE_APPLY_RETRY) return OPSTATE_APPLY_FAILED;
    if (outcome == OPSTATE_APPLY_REJECT) {
        res->poison++;
        return OPSTATE_OK;
    }
    res->applied++;
    res->position = msg->position;
    *done = cfg->max_events && res->applied >= cfg->max_events;
    return OPSTATE_OK;
}

OPSTATE_API opstate_result opstate_replay(const opstate_replay_config *cfg, opstate_kv *into,
                                          opstate_replay_result *out, opstate_error *err)
{
    opstate_replay_result res;
    opstate_stream_info info;
    opstate_log_message *msgs;
    opstate_dedup dedup;
    void *dedup_mem;
    uint32_t capacity = cfg->dedup_capacity ? cfg->dedup_capacity : OPSTATE__DEFAULT_DEDUP_CAPACITY;
    size_t batch = cfg->batch ? cfg->batch : OPSTATE__DEFAULT_BATCH, bytes, n, i,
           dedup_bytes = opstate_dedup_storage_size(capacity);
    uint64_t from = cfg->from_seq ? cfg->from_seq : 1, start = from;
    bool done = false;
    opstate_result r = cfg->log.info(cfg->log.user, &info, err);
    if (r != OPSTATE_OK) return r;
    if (!dedup_bytes || !opstate__array_bytes(batch, sizeof *msgs, &bytes) ||
        !(msgs = (opstate_log_message *)opstate_alloc(&cfg->allocator, bytes + dedup_bytes)))
        return opstate__fail(err, OPSTATE_NO_MEMORY, 0, "batch");
    dedup_mem = (uint8_t *)msgs + bytes; /* bytes is a multiple of the message size, itself 8-aligned */
    opstate_dedup_init(&dedup, dedup_mem, dedup_bytes, capacity);
    OPSTATE_MEMSET(&res, 0, sizeof res);
    res.end_seq = cfg->until_seq && cfg->until_seq < info.last_seq ? cfg->until_seq : info.last_seq;
    while (r == OPSTATE_OK && !done && from <= res.end_seq) {
        r = cfg->log.read(cfg->log.user, cfg->filter, from, 0, msgs, batch, &n, err);
        if (r != OPSTATE_OK || n == 0) break;
        for (i = 0; i < n && r == OPSTATE_OK && !done; i++) {
            if ((done = msgs[i].position.seq > res.end_seq)) break; /* appended after the start: not ours */
            r = opstate__replay_one(cfg, into, &dedup, &msgs[i], &res, &done);
            from = msgs[i].position.seq + 1;
        }
        if (cfg->progress) cfg->progress(cfg->progress_user, start, res.end_seq, res.applied, from - 1);
    }
    opstate_free(&cfg->allocator, msgs);
    if (r == OPSTATE_OK) *out = res;
    return r;
}

#endif /* OPSTATE_NO_MALLOC */

#endif /* OPSTATE_IMPLEMENTATION */

/*
------------------------------------------------------------------------------
This software is available under the MIT License.
------------------------------------------------------------------------------
Copyright (c) 2026 the opstate authors

Permission is hereby granted, free of charge, to any person obtaining a copy of
this software and associated documentation files (the "Software"), to deal in
the Software without restriction, including without limitation the rights to
use, copy, modify, merge, publish, distribute, sublicense, and/or sell copies
of the Software, and to permit persons to whom the Software is furnished to do
so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
------------------------------------------------------------------------------
*/
