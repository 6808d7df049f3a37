/* opstate_nats.h — NATS JetStream companion to opstate.h: stream setup,
   publishing with dedup and optimistic concurrency, the log interface over
   a stream (or a native KV bucket) with expiry detection left to the core's
   checks, and point-in-time replay through the core. v0.1.0

   DO THIS in exactly one C or C++ file:

       #define OPSTATE_NATS_IMPLEMENTATION
       #include "opstate_nats.h"       (it includes opstate.h itself)

   and link with -lnats (Debian: libnats-dev, nats.c 3.4.1). The core's
   implementation (OPSTATE_IMPLEMENTATION) may live in the same file or
   another one.

   CONTENTS (grep the tag)
       >>conn     connection from options, or the caller's natsConnection
       >>stream   ensure a stream for "<prefix>.>" (an existing one is used
                  as it is), refuse one that would break replay
       >>publish  sync and async publish (Nats-Msg-Id = event id, expected
                  last subject sequence), per-message outcomes (every
                  event reported once, acknowledged or not)
       >>log      the core log interface over JetStream: ordered push reads
                  from a sequence, stream info (epoch = stream Created),
                  last value per subject, native KV buckets as a source
       >>wire     the NATS wire format: the payload as it is, the id in
                  Nats-Msg-Id, op and time in Opstate-Op / Opstate-Time;
                  any client's messages read as events through a subject
                  template; streams of opstate 0.1 read as they were

   USAGE
       opstate_nats *n;
       opstate_nats_config nc = {0};
       nc.urls = "nats://127.0.0.1:4222";
       opstate_nats_connect(&nc, &n, &err);
       opstate_nats_stream_config sc = {0};
       sc.stream = "OPSTATE"; sc.prefix = "ops"; sc.max_per_subject = 10;
       opstate_nats_stream_ensure(n, &sc, &err);
       opstate_nats_log *lg;
       opstate_nats_log_config lc = {0};
       lc.stream = "OPSTATE";
       opstate_nats_log_open(n, &lc, &lg, &err);
       cfg.log = opstate_nats_log_iface(lg);      for opstate_consumer_open

   WHAT JETSTREAM DOES NOT DO FOR YOU (and where opstate does it)
     - A start sequence below first_seq or above last_seq is clamped by the
       server without a word: the consumer driver compares the first
       delivered sequence with the requested one and classifies every gap
       (opstate_gap_classify) against fresh stream info.
     - A pull response lost while a consumer leader moves leaves a hole
       that looks like skipped subjects: each message carries whether the
       consumer's delivery sequence is contiguous, and the driver re-reads
       (a fresh consumer at the hole) whatever is not. Leader elections,
       404/408/409/503 pulls, timeouts and reconnects are ridden through
       with bounded back-off (transient_wait_ms).
     - A deleted and recreated stream restarts its sequences: the stream's
       Created time is the epoch, so stored positions of the old incarnation
       are recognised.
     - A server's consumer ack floor can lag or be lost in a crash: the
       position stored with the snapshot is the truth; reads use ephemeral
       ordered consumers started from it.
     - nats.c 3.4.1's natsSubscription_Fetch can overflow the heap when
       messages of a timed-out pull are still buffered (fixed in 3.9.0),
       and it waits for each pull in turn: this companion never calls
       Fetch. Reads use ordered push consumers; durable reads publish their
       own pull requests to a subscription of their own and count what is
       in flight (a pull ends in full, or with a status saying what it
       still owed); a pull lost with a server or a leader is given up at
       its end, and the consumer is made again where the reader is.

   ERRORS: opstate results; the natsStatus is kept in opstate_error.dep_status
   and a JetStream jsErrCode in dep_detail. A conflict on the expected last
   subject sequence is OPSTATE_CONFLICT, distinct from transient failures
   (TIMEOUT, IO). Credentials are never logged.

   BUILD: no flags needed (-std=c99, c11, gnu99, C++), whatever the file
   includes before it; link with -lnats.

   See the end of the file for the license. */

#ifndef OPSTATE_NATS_H_INCLUDED
#define OPSTATE_NATS_H_INCLUDED

#include "opstate.h"
#include <nats/nats.h>

#define OPSTATE_NATS_VERSION_MAJOR 0
#define OPSTATE_NATS_VERSION_MINOR 1
#define OPSTATE_NATS_VERSION_PATCH 0
#define OPSTATE_NATS_VERSION_STRING "0.1.0"

#if OPSTATE_VERSION_MAJOR != 0 || OPSTATE_VERSION_MINOR < 1
#error "opstate_nats.h needs opstate.h 0.1 or newer (same major)"
#endif
#ifdef OPSTATE_NO_MALLOC
#error "opstate_nats.h allocates: do not define OPSTATE_NO_MALLOC"
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* >>conn ----------------------------------------------------------------- */

typedef struct opstate_nats_config {
    natsConnection *connection; /* the caller's (not owned); NULL: connect */
    const char *urls;           /* comma-separated (0: nats://127.0.0.1:4222) */
    const char *name;           /* connection name shown by the server */
    const char *creds_file;     /* NATS credentials (JWT + seed) */
    const char *user, *password;
    const char *token;
    const char *tls_ca;         /* PEM CA the server's certificate must chain to (set: TLS on) */
    const char *tls_cert, *tls_key; /* PEM client certificate and its key, both or neither (set: TLS on) */
    bool tls;                   /* require TLS even with none of the files (tls:// servers) */
    int max_reconnect;          /* 0: 60; -1: for ever */
    int64_t reconnect_wait_ms;  /* 0: 2000 */
    int64_t request_timeout_ms; /* JetStream API calls (0: 5000) */
    opstate_allocator allocator;
    opstate_diag diag;
} opstate_nats_config;

typedef struct opstate_nats opstate_nats;

/* Connects (or wraps cfg->connection) and makes a JetStream context.
   INVALID_ARGUMENT (nothing tried) for tls_cert without tls_key or the
   reverse, or more than 32 urls; a failed connect (refused, TLS handshake
   or certificate, authentication) is IO with the natsStatus in dep_status. */
OPSTATE_API opstate_result opstate_nats_connect(const opstate_nats_config *cfg, opstate_nats **out,
                                                opstate_error *err);
/* Closes what opstate_nats_connect opened (not a caller's connection). */
OPSTATE_API void opstate_nats_close(opstate_nats *n);
OPSTATE_API natsConnection *opstate_nats_connection(opstate_nats *n);
OPSTATE_API jsCtx *opstate_nats_jetstream(opstate_nats *n);

/* >>stream --------------------------------------------------------------- */

typedef struct opstate_nats_stream_config {
    const char *stream;          /* stream name */
    const char *prefix;          /* subjects "<prefix>.>" */
    uint64_t max_messages;       /* 0: unlimited */
    int64_t max_age_ns;          /* 0: unlimited */
    uint64_t max_per_subject;    /* 0: unlimited */
    int64_t duplicate_window_ns; /* 0: the server's default (2 min) */
    bool memory_storage;         /* default: file */
    int replicas;                /* 0: 1 */
} opstate_nats_stream_config;

/* Creates the stream (subjects "<prefix>.>", limits retention, discard
   old, the limits and replica count asked), or uses an existing one as it
   is: it is never changed. An existing stream is refused only for a
   difference that changes what opstate relies on, with CONFLICT and
   err->field naming it: subjects that do not cover "<prefix>.>" (one of
   them must be it or wider, e.g. ">"), a retention policy other than
   limits (work-queue and interest streams delete messages: replay and
   resume need them), or a limit the caller set (non-zero: max_messages,
   max_age_ns, max_per_subject, duplicate_window_ns; memory_storage when
   true) that differs. What the caller left at 0 is taken as the stream has
   it, and so is the replica count (when another was asked, an info line is
   logged: replicas change availability, not what a reader sees). */
OPSTATE_API opstate_result opstate_nats_stream_ensure(opstate_nats *n, const opstate_nats_stream_config *cfg,
                                                      opstate_error *err);
/* Deletes a stream (NOT_FOUND when there is none). */
OPSTATE_API opstate_result opstate_nats_stream_delete(opstate_nats *n, const char *stream, opstate_error *err);
/* Purges messages below `below_seq` (0: all) of a stream. */
OPSTATE_API opstate_result opstate_nats_stream_purge(opstate_nats *n, const char *stream, uint64_t below_seq,
                                                     opstate_error *err);

/* >>log ------------------------------------------------------------------ */

typedef struct opstate_nats_log_config {
    const char *stream;     /* the stream to read and append to */
    /* Native KV bucket mode: read bucket `kv_bucket` (stream KV_<bucket>,
       subjects $KV.<bucket>.<key>) as put/delete events with scope
       `kv_scope` (0: the bucket name) and kind `kv_kind` (0: "kv"); the
       value is the raw payload, deletes and purges come from the
       KV-Operation header. Appends are refused in this mode. */
    const char *kv_bucket;
    const char *kv_scope, *kv_kind;
    /* How another client's subject maps to an event's scope, kind and key
       (a stream; opstate's own messages, marked by Opstate-Op, are read
       from the end of their subject whatever the prefix): dot-separated tokens,
       "{scope}" and "{kind}" one token each (without them: the stream's
       name and "nats"), "{key}" last and the rest of the subject (one or
       more tokens joined by dots, or none), "*" any token, other tokens
       literal. NULL: "*.{scope}.{kind}.{key}", the tokens after a
       one-token prefix. A message that does not fit is a poison event. */
    const char *subject_template;
    int64_t first_message_wait_ms; /* a new read waits this long for messages
                                      the server still has pending (0: 5000) */
    /* Durable mode (projectors): reads go through the durable pull consumer
       `durable` (AckAll), re-created at the requested start whenever the
       reader moves (the stored position is the truth, not the server's ack
       floor); the consumer driver acks after each applied batch (one
       message published, not waited for). While messages are pending, up
       to 1,024 of them (4 MiB per pull) are pulled ahead of the reader, so
       the next batch travels while one is applied. NULL: ephemeral ordered
       push consumers, no acks (the fastest; replay). */
    const char *durable;
    /* How long read, info and last_per_subject ride through transients
       (a leader election, a pull answered 404/408/409/503, a timeout, a
       reconnect, a consumer that must be re-created) with bounded
       back-off, re-creating the consumer at the same position, before they
       return the error. 0: 30000; -1: never retry. A missing stream, a
       closed connection and bad arguments are returned at once. */
    int64_t transient_wait_ms;
} opstate_nats_log_config;

typedef struct opstate_nats_log opstate_nats_log;

OPSTATE_API opstate_result opstate_nats_log_open(opstate_nats *n, const opstate_nats_log_config *cfg,
                                                 opstate_nats_log **out, opstate_error *err);
OPSTATE_API void opstate_nats_log_close(opstate_nats_log *lg);
/* The core log interface. Messages returned by read stay valid until the
   next call on the log. A read with wait_ns 0 returns 0 messages only when
   the server has nothing pending for the filter. */
OPSTATE_API opstate_log opstate_nats_log_iface(opstate_nats_log *lg);

/* >>publish -------------------------------------------------------------- */

/* Outcome of one asynchronous publish. */
typedef struct opstate_nats_outcome {
    opstate_id id;          /* the event's id */
    opstate_result result;  /* OK, CONFLICT, TIMEOUT, IO */
    uint64_t seq;
    bool duplicate;
    long js_error;          /* jsErrCode when the server refused it */
} opstate_nats_outcome;

/* Publishes an event without waiting for the acknowledgment (batched by
   nats.c). Collect outcomes with opstate_nats_publish_wait. */
OPSTATE_API opstate_result opstate_nats_publish_async(opstate_nats_log *lg, opstate_bytes prefix,
                                                      const opstate_event *ev, const opstate_append_options *opts,
                                                      opstate_error *err);
/* Waits up to timeout_ms (0: for ever) until every asynchronous publish
   is acknowledged, then calls fn exactly once for each message sent since
   the last wait: with its outcome when the server answered (OK, perhaps a
   duplicate; or its refusal: CONFLICT, IO, ...), or with result TIMEOUT
   when it did not answer in time. Those are taken back from nats.c (a
   late acknowledgment is dropped): each may or may not be in the stream,
   and publishing it again with the same id is safe within the stream's
   duplicate window. Returns TIMEOUT when some were not acknowledged,
   NO_MEMORY when an outcome could not be kept; a lost connection ends in
   TIMEOUT, never a hang. */
OPSTATE_API opstate_result opstate_nats_publish_wait(opstate_nats_log *lg, int64_t timeout_ms,
                                                     void (*fn)(void *user, const opstate_nats_outcome *o),
                                                     void *user, opstate_error *err);

#ifdef __cplusplus
}
#endif

#endif /* OPSTATE_NATS_H_INCLUDED */

/* ======================================================================
   API ends here; implementation below.
   ====================================================================== */

#if defined(OPSTATE_NATS_IMPLEMENTATION) && !defined(OPSTATE_NATS_IMPLEMENTATION_INCLUDED)
#define OPSTATE_NATS_IMPLEMENTATION_INCLUDED

#include <string.h>
#include <stdio.h>
#include <pthread.h>

#if defined(__GNUC__) || defined(__clang__)
#define OPSTATE_NATS__PRIVATE static __attribute__((unused))
#else
#define OPSTATE_NATS__PRIVATE static
#endif

#define OPSTATE_NATS__WRONG_LAST_SEQ 10071 /* JSStreamWrongLastSequenceErr */
#define OPSTATE_NATS__WRONG_LAST_ID 10070  /* JSStreamWrongLastMsgIDErr */
#define OPSTATE_NATS__STREAM_EXISTS 10058  /* name in use with another config */
#define OPSTATE_NATS__STREAM_NOT_FOUND 10059 /* JSStreamNotFoundErr */

/* >>conn ----------------------------------------------------------------- */

struct opstate_nats {
    natsConnection *nc;
    jsCtx *js;
    bool owns_connection;
    opstate_allocator a;
    opstate_diag diag;
    int64_t wait_ms;
    pthread_mutex_t lock; /* guards the async outcomes (filled on nats.c's thread) */
    opstate_nats_outcome *outcomes;
    size_t n_outcomes, cap_outcomes;
    bool outcomes_lost;   /* an outcome could not be stored (no memory) */
};

/* Maps a nats.c status (and JetStream error) to a result, keeping both. */
OPSTATE_NATS__PRIVATE opstate_result opstate_nats__fail(opstate_error *err, natsStatus s, long jerr,
                                                        const char *field)
{
    opstate_result r;
    if (jerr == OPSTATE_NATS__WRONG_LAST_SEQ || jerr == OPSTATE_NATS__WRONG_LAST_ID) r = OPSTATE_CONFLICT;
    else if (s == NATS_TIMEOUT) r = OPSTATE_TIMEOUT;
    else if (s == NATS_NOT_FOUND) r = OPSTATE_NOT_FOUND;
    else if (s == NATS_NO_MEMORY) r = OPSTATE_NO_MEMORY;
    else if (s == NATS_INVALID_ARG) r = OPSTATE_INVALID_ARGUMENT;
    else r = OPSTATE_IO;
    opstate_error_set(err, r, field, (long)s);
    if (err) err->dep_detail = jerr;
    return r;
}

OPSTATE_NATS__PRIVATE char *opstate_nats__strndup(const opstate_allocator *a, const void *s, size_t n)
{
    char *copy = (char *)opstate_alloc(a, n + 1);
    if (copy) {
        if (n) OPSTATE_MEMCPY(copy, s, n);
        copy[n] = '\0';
    }
    return copy;
}

#define OPSTATE_NATS__MAX_URLS 32

/* What connect refuses before trying: a client certificate without its key
   (or a key alone), more URLs than it takes. */
OPSTATE_NATS__PRIVATE opstate_result opstate_nats__config_check(const opstate_nats_config *cfg, opstate_error *err)
{
    const char *p = cfg->urls;
    int n = 1;
    if (!cfg->tls_cert != !cfg->tls_key)
        return opstate_error_set(err, OPSTATE_INVALID_ARGUMENT, "tls_cert and tls_key go together", 0);
    for (; p && *p; p++) n += *p == ',';
    if (n > OPSTATE_NATS__MAX_URLS) return opstate_error_set(err, OPSTATE_INVALID_ARGUMENT, "more than 32 urls", 0);
    return OPSTATE_OK;
}

/* Splits "a,b,c" into natsOptions_SetServers. */
OPSTATE_NATS__PRIVATE natsStatus opstate_nats__servers(natsOptions *o, const opstate_allocator *a, const char *urls)
{
    const char *list[OPSTATE_NATS__MAX_URLS];
    char *copy = opstate_nats__strndup(a, urls, strlen(urls)), *p;
    int n = 0;
    natsStatus s;
    if (!copy) return NATS_NO_MEMORY;
    for (p = copy; *p && n < OPSTATE_NATS__MAX_URLS;) { /* empty items skipped, as strtok would */
        size_t len = strcspn(p, ",");
        if (len) list[n++] = p;
        p += len;
        if (*p) *p++ = '\0';
    }
    s = natsOptions_SetServers(o, list, n);
    opstate_free(a, copy);
    return s;
}

/* Applies the connection options of cfg (credentials are never logged). */
OPSTATE_NATS__PRIVATE natsStatus opstate_nats__options(natsOptions *o, const opstate_nats_config *cfg)
{
    natsStatus s = opstate_nats__servers(o, &cfg->allocator, cfg->urls);
    if (s == NATS_OK && cfg->name) s = natsOptions_SetName(o, cfg->name);
    if (s == NATS_OK && cfg->creds_file) s = natsOptions_SetUserCredentialsFromFiles(o, cfg->creds_file, NULL);
    if (s == NATS_OK && cfg->user) s = natsOptions_SetUserInfo(o, cfg->user, cfg->password);
    if (s == NATS_OK && cfg->token) s = natsOptions_SetToken(o, cfg->token);
    if (s == NATS_OK && (cfg->tls || cfg->tls_ca || cfg->tls_cert)) s = natsOptions_SetSecure(o, true); /* the key came with the cert */
    if (s == NATS_OK && cfg->tls_ca) s = natsOptions_LoadCATrustedCertificates(o, cfg->tls_ca);
    if (s == NATS_OK && cfg->tls_cert) s = natsOptions_LoadCertificatesChain(o, cfg->tls_cert, cfg->tls_key);
    if (s == NATS_OK) s = natsOptions_SetMaxReconnect(o, cfg->max_reconnect);
    if (s == NATS_OK) s = natsOptions_SetReconnectWait(o, cfg->reconnect_wait_ms);
    return s;
}

OPSTATE_NATS__PRIVATE void opstate_nats__ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure);

OPSTATE_NATS__PRIVATE opstate_result opstate_nats__jetstream(opstate_nats *n, opstate_error *err)
{
    jsOptions jo;
    natsStatus s = jsOptions_Init(&jo);
    jo.Wait = n->wait_ms;
    jo.PublishAsync.AckHandler = opstate_nats__ack;
    jo.PublishAsync.AckHandlerClosure = n;
    if (s == NATS_OK) s = natsConnection_JetStream(&n->js, n->nc, &jo);
    return s == NATS_OK ? OPSTATE_OK : opstate_nats__fail(err, s, 0, "jetstream context");
}

/* Every default of a connection config, in one place. */
OPSTATE_NATS__PRIVATE void opstate_nats__config_defaults(opstate_nats_config *cfg)
{
    if (!cfg->urls) cfg->urls = "nats://127.0.0.1:4222";
    if (!cfg->max_reconnect) cfg->max_reconnect = 60;
    if (!cfg->reconnect_wait_ms) cfg->reconnect_wait_ms = 2000;
    if (!cfg->request_timeout_ms) cfg->request_timeout_ms = 5000;
}

OPSTATE_API opstate_result opstate_nats_connect(const opstate_nats_config *given, opstate_nats **out, opstate_error *err)
{
    opstate_nats_config c = *given, *cfg = &c;
    opstate_nats *n;
    natsOptions *o = NULL;
    natsStatus s = NATS_OK;
    opstate_result r;
    opstate_nats__config_defaults(cfg);
    if (!cfg->connection && (r = opstate_nats__config_check(cfg, err)) != OPSTATE_OK) return r;
    if (!(n = (opstate_nats *)opstate_alloc(&cfg->allocator, sizeof *n))) return opstate_error_set(err, OPSTATE_NO_MEMORY, "nats", 0);
    OPSTATE_MEMSET(n, 0, sizeof *n);
    n->a = cfg->allocator;
    n->diag = cfg->diag;
    n->wait_ms = cfg->request_timeout_ms;
    pthread_mutex_init(&n->lock, NULL);
    n->nc = cfg->connection;
    if (!n->nc) {
        s = natsOptions_Create(&o);
        if (s == NATS_OK) s = opstate_nats__options(o, cfg);
        if (s == NATS_OK) s = natsConnection_Connect(&n->nc, o);
        natsOptions_Destroy(o);
        n->owns_connection = s == NATS_OK;
    }
    r = s == NATS_OK ? opstate_nats__jetstream(n, err) : opstate_nats__fail(err, s, 0, "connect");
    if (r != OPSTATE_OK) {
        opstate_nats_close(n);
        return r;
    }
    *out = n;
    return OPSTATE_OK;
}

OPSTATE_API void opstate_nats_close(opstate_nats *n)
{
    if (!n) return;
    /* nats.c 3.4.1's read loop may still be handling a message (a late
       publish ack) for a subscription the jsCtx is about to free (nats.c
       #637): closing first joins the read loop; on the caller's connection
       a flush lets it finish what it has. */
    if (n->owns_connection) natsConnection_Close(n->nc);
    else if (natsConnection_Status(n->nc) == NATS_CONN_STATUS_CONNECTED)
        natsConnection_FlushTimeout(n->nc, n->wait_ms > 0 ? n->wait_ms : 5000);
    jsCtx_Destroy(n->js);
    if (n->owns_connection) natsConnection_Destroy(n->nc);
    pthread_mutex_destroy(&n->lock);
    opstate_free(&n->a, n->outcomes);
    opstate_free(&n->a, n);
}

OPSTATE_API natsConnection *opstate_nats_connection(opstate_nats *n) { return n->nc; }
OPSTATE_API jsCtx *opstate_nats_jetstream(opstate_nats *n) { return n->js; }

/* >>stream --------------------------------------------------------------- */

/* true when the stream subject `have` takes every subject under
   "<prefix>.>": it is "<prefix>.>" or wider (">", or "a.>" and "*.b.>" for
   the prefix "a.b"). */
OPSTATE_NATS__PRIVATE bool opstate_nats__covers(const char *have, const char *prefix)
{
    for (;;) {
        size_t h = strcspn(have, "."), p = strcspn(prefix, ".");
        if (h == 1 && have[0] == '>') return true;
        if (p == 0 || !have[h]) return false; /* "<prefix>.>" goes on where `have` stops */
        if (!(h == 1 && have[0] == '*') && (h != p || OPSTATE_MEMCMP(have, prefix, p) != 0)) return false;
        have += h + 1;
        prefix += prefix[p] ? p + 1 : p;
    }
}

/* What makes an existing stream unusable as asked (NULL: nothing): see
   opstate_nats_stream_ensure. */
OPSTATE_NATS__PRIVATE const char *opstate_nats__stream_diff(const jsStreamConfig *have,
                                                            const opstate_nats_stream_config *cfg)
{
    bool covered = false;
    int i;
    for (i = 0; i < have->SubjectsLen && !covered; i++) covered = opstate_nats__covers(have->Subjects[i], cfg->prefix);
    if (!covered) return "existing stream's subjects do not cover <prefix>.>";
    if (have->Retention != js_LimitsPolicy)
        return "existing stream has another retention policy (opstate needs limits: the others delete messages replay needs)";
    if (cfg->max_messages && have->MaxMsgs != (int64_t)cfg->max_messages) return "existing stream has another max_messages";
    if (cfg->max_age_ns && have->MaxAge != cfg->max_age_ns) return "existing stream has another max_age";
    if (cfg->max_per_subject && have->MaxMsgsPerSubject != (int64_t)cfg->max_per_subject)
        return "existing stream has another max_per_subject";
    if (cfg->duplicate_window_ns && have->Duplicates != cfg->duplicate_window_ns)
        return "existing stream has another duplicate window";
    if (cfg->memory_storage && have->Storage != js_MemoryStorage) return "existing stream has another storage kind";
    return NULL;
}

/* The stream as it exists: OK (usable as it is), CONFLICT naming why
   not, or NOT_FOUND (err untouched) when there is no such stream. */
OPSTATE_NATS__PRIVATE opstate_result opstate_nats__stream_existing(opstate_nats *n, const opstate_nats_stream_config *cfg,
                                                                   opstate_error *err)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = (jsErrCode)0;
    const char *diff;
    natsStatus s = js_GetStreamInfo(&si, n->js, cfg->stream, NULL, &jerr);
    if (s == NATS_NOT_FOUND) return OPSTATE_NOT_FOUND;
    if (s != NATS_OK) return opstate_nats__fail(err, s, jerr, "stream");
    diff = opstate_nats__stream_diff(si->Config, cfg);
    if (!diff && cfg->replicas && si->Config->Replicas != cfg->replicas)
        opstate_diag_line(&n->diag, OPSTATE_DIAG_INFO, "nats: existing stream used as it is, with ",
                          (uint64_t)si->Config->Replicas, " replicas (another count was asked)");
    jsStreamInfo_Destroy(si);
    return diff ? opstate_error_set(err, OPSTATE_CONFLICT, diff, 0) : OPSTATE_OK;
}

OPSTATE_API opstate_result opstate_nats_stream_ensure(opstate_nats *n, const opstate_nats_stream_config *cfg,
                                                      opstate_error *err)
{
    jsStreamConfig c;
    jsStreamInfo *si = NULL;
    jsErrCode jerr = (jsErrCode)0;
    char subject[300];
    const char *subjects[1];
    natsStatus s;
    opstate_result r;
    if (!cfg->stream || !cfg->prefix || opstate_prefix_validate(cfg->prefix, strlen(cfg->prefix), NULL) != OPSTATE_OK ||
        strlen(cfg->prefix) > sizeof subject - 3)
        return opstate_error_set(err, OPSTATE_INVALID_ARGUMENT, "stream name or prefix", 0);
    snprintf(subject, sizeof subject, "%s.>", cfg->prefix);
    subjects[0] = subject;
    jsStreamConfig_Init(&c);
    c.Name = cfg->stream;
    c.Subjects = subjects;
    c.SubjectsLen = 1;
    c.MaxMsgs = cfg->max_messages ? (int64_t)cfg->max_messages : -1;
    c.MaxAge = cfg->max_age_ns;
    c.MaxMsgsPerSubject = cfg->max_per_subject ? (int64_t)cfg->max_per_subject : -1;
    c.Duplicates = cfg->duplicate_window_ns;
    c.Storage = cfg->memory_storage ? js_MemoryStorage : js_FileStorage;
    c.Retention = js_LimitsPolicy; /* any reader replays from any point: messages go only by the limits */
    c.Discard = js_DiscardOld;
    c.MaxBytes = -1;
    c.Replicas = cfg->replicas ? cfg->replicas : 1;
    if ((r = opstate_nats__stream_existing(n, cfg, err)) != OPSTATE_NOT_FOUND) return r;
    s = js_AddStream(&si, n->js, &c, NULL, &jerr);
    jsStreamInfo_Destroy(si);
    if (s != NATS_OK && jerr == OPSTATE_NATS__STREAM_EXISTS) /* made meanwhile by another publisher */
        return opstate_nats__stream_existing(n, cfg, err);
    return s == NATS_OK ? OPSTATE_OK : opstate_nats__fail(err, s, jerr, "stream");
}

OPSTATE_API opstate_result opstate_nats_stream_delete(opstate_nats *n, const char *stream, opstate_error *err)
{
    jsErrCode jerr = (jsErrCode)0;
    natsStatus s = js_DeleteStream(n->js, stream, NULL, &jerr);
    return s == NATS_OK ? OPSTATE_OK : opstate_nats__fail(err, s, jerr, "stream");
}

OPSTATE_API opstate_result opstate_nats_stream_purge(opstate_nats *n, const char *stream, uint64_t below_seq,
                                                     opstate_error *err)
{
    jsOptions o;
    jsErrCode jerr = (jsErrCode)0;
    natsStatus s = jsOptions_Init(&o);
    o.Stream.Purge.Sequence = below_seq;
    if (s == NATS_OK) s = js_PurgeStream(n->js, stream, &o, &jerr);
    return s == NATS_OK ? OPSTATE_OK : opstate_nats__fail(err, s, jerr, "purge");
}

/* >>log ------------------------------------------------------------------ */

/* A message held for the caller until the next call on the log. */
typedef struct opstate_nats__held {
    natsMsg *msg;
    uint8_t *event;   /* the event encoding made from the message (>>wire) */
    size_t event_cap; /* kept for the slot's next message (no allocation each) */
    uint64_t seq;
} opstate_nats__held;

/* Durable mode's pull requests in flight (opstate_nats__fetch): published
   to the consumer's next-message subject with replies "<inbox>.<batch>" on
   the log's own subscription, so the status that ends a request names
   its size. */
typedef struct opstate_nats__pulls {
    natsInbox *inbox;
    uint64_t asked;   /* messages asked for, neither taken nor ended by a status */
    int64_t deadline; /* ms (nats_Now): every request sent has ended by then */
    bool long_poll;   /* one of them waits for new messages (a read that waits) */
} opstate_nats__pulls;

struct opstate_nats_log {
    opstate_nats *n;
    char *stream, *bucket, *kv_prefix, *scope, *kind, *durable;
    char *tmpl; /* how a subject maps to scope, kind and key (>>wire) */
    int64_t first_wait_ms, transient_wait_ms;
    natsSubscription *sub;   /* the consumer of the current read */
    uint64_t last_delivery;  /* its delivery sequence of the last message (0: none yet) */
    char *sub_filter;
    uint64_t sub_next, sub_epoch, pending;
    bool pending_known;
    opstate_nats__pulls pull; /* durable mode */
    opstate_nats__held *held;
    size_t n_held, cap_held;
    char *scratch; /* publish_async: the subject of the event being sent */
    size_t scratch_cap;
};

OPSTATE_NATS__PRIVATE void opstate_nats__drop_event(opstate_nats_log *lg, opstate_nats__held *h)
{
    opstate_free(&lg->n->a, h->event);
    h->event = NULL;
    h->event_cap = 0;
}

OPSTATE_NATS__PRIVATE void opstate_nats__release(opstate_nats_log *lg)
{
    size_t i;
    for (i = 0; i < lg->n_held; i++) {
        natsMsg_Destroy(lg->held[i].msg);
        if (lg->held[i].event_cap > 65536) opstate_nats__drop_event(lg, &lg->held[i]); /* keep small buffers only */
    }
    lg->n_held = 0;
}

/* Ends the current read's subscription. nats.c 3.4.1's read loop can
   still hold a subscription it looked up just before the unsubscribe and
   lock it after it is freed (nats.c #637, fixed in 3.5.0): a flush makes
   the read loop finish every message before its PONG, so the last
   reference is dropped only after that. */
OPSTATE_NATS__PRIVATE void opstate_nats__unsubscribe(opstate_nats_log *lg)
{
    if (lg->sub) {
        /* An ephemeral consumer goes with it. The durable one stays: its
           reads are a plain subscription on an inbox (opstate_nats__pull_bind),
           and whatever is still in flight to that inbox is never taken. */
        natsSubscription_Unsubscribe(lg->sub);
        if (natsConnection_Status(lg->n->nc) == NATS_CONN_STATUS_CONNECTED)
            natsConnection_FlushTimeout(lg->n->nc, lg->first_wait_ms);
        natsSubscription_Destroy(lg->sub);
    }
    lg->sub = NULL;
    natsInbox_Destroy(lg->pull.inbox);
    OPSTATE_MEMSET(&lg->pull, 0, sizeof lg->pull);
    opstate_free(&lg->n->a, lg->sub_filter);
    lg->sub_filter = NULL;
}

OPSTATE_API void opstate_nats_log_close(opstate_nats_log *lg)
{
    opstate_allocator a;
    size_t i;
    if (!lg) return;
    a = lg->n->a;
    opstate_nats__release(lg);
    opstate_nats__unsubscribe(lg);
    for (i = 0; i < lg->cap_held; i++) opstate_nats__drop_event(lg, &lg->held[i]);
    opstate_free(&a, lg->held);
    opstate_free(&a, lg->scratch);
    opstate_free(&a, lg->stream);
    opstate_free(&a, lg->bucket);
    opstate_free(&a, lg->kv_prefix);
    opstate_free(&a, lg->tmpl);
    opstate_free(&a, lg->scope);
    opstate_free(&a, lg->kind);
    opstate_free(&a, lg->durable);
    opstate_free(&a, lg);
}

OPSTATE_NATS__PRIVATE char *opstate_nats__dup(const opstate_allocator *a, const char *s)
{
    return opstate_nats__strndup(a, s, strlen(s));
}

/* A subject template: dot-separated non-empty tokens, "{scope}", "{kind}"
   and "{key}" at most once each, "{key}" last. */
OPSTATE_NATS__PRIVATE bool opstate_nats__template_ok(const char *t)
{
    int scope = 0, kind = 0, key = 0;
    for (;;) {
        size_t n = strcspn(t, ".");
        if (n == 0 || key) return false;
        scope += n == 7 && strncmp(t, "{scope}", 7) == 0;
        kind += n == 6 && strncmp(t, "{kind}", 6) == 0;
        key += n == 5 && strncmp(t, "{key}", 5) == 0;
        if (!t[n]) return scope <= 1 && kind <= 1;
        t += n + 1;
    }
}

OPSTATE_API opstate_result opstate_nats_log_open(opstate_nats *n, const opstate_nats_log_config *cfg,
                                                 opstate_nats_log **out, opstate_error *err)
{
    opstate_nats_log *lg;
    char buf[300];
    bool ok;
    if (out) *out = NULL;
    if (!cfg || !out || (!cfg->stream && !cfg->kv_bucket))
        return opstate_error_set(err, OPSTATE_INVALID_ARGUMENT, "stream or kv_bucket", 0);
    if (!(lg = (opstate_nats_log *)opstate_alloc(&n->a, sizeof *lg))) return opstate_error_set(err, OPSTATE_NO_MEMORY, "log", 0);
    OPSTATE_MEMSET(lg, 0, sizeof *lg);
    lg->n = n;
    lg->first_wait_ms = cfg->first_message_wait_ms ? cfg->first_message_wait_ms : 5000; /* the log config's defaults */
    lg->transient_wait_ms = cfg->transient_wait_ms ? cfg->transient_wait_ms : 30000;
    if (!cfg->kv_bucket && cfg->subject_template && !opstate_nats__template_ok(cfg->subject_template)) {
        opstate_free(&n->a, lg);
        return opstate_error_set(err, OPSTATE_INVALID_ARGUMENT, "subject_template", 0);
    }
    if (cfg->kv_bucket) {
        snprintf(buf, sizeof buf, "$KV.%s.{key}", cfg->kv_bucket);
        ok = (lg->tmpl = opstate_nats__dup(&n->a, buf)) != NULL;
        snprintf(buf, sizeof buf, "KV_%s", cfg->kv_bucket);
        ok = ok && (lg->stream = opstate_nats__dup(&n->a, buf)) && (lg->bucket = opstate_nats__dup(&n->a, cfg->kv_bucket));
        snprintf(buf, sizeof buf, "$KV.%s.", cfg->kv_bucket);
        ok = ok && (lg->kv_prefix = opstate_nats__dup(&n->a, buf)) &&
             (lg->scope = opstate_nats__dup(&n->a, cfg->kv_scope ? cfg->kv_scope : cfg->kv_bucket)) &&
             (lg->kind = opstate_nats__dup(&n->a, cfg->kv_kind ? cfg->kv_kind : "kv"));
    } else {
        ok = (lg->stream = opstate_nats__dup(&n->a, cfg->stream)) && (lg->scope = opstate_nats__dup(&n->a, cfg->stream)) &&
             (lg->kind = opstate_nats__dup(&n->a, "nats")) &&
             (lg->tmpl = opstate_nats__dup(&n->a, cfg->subject_template ? cfg->subject_template : "*.{scope}.{kind}.{key}"));
    }
    ok = ok && (!cfg->durable || (lg->durable = opstate_nats__dup(&n->a, cfg->durable)) != NULL);
    if (!ok) {
        opstate_nats_log_close(lg);
        return opstate_error_set(err, OPSTATE_NO_MEMORY, "log", 0);
    }
    *out = lg;
    return OPSTATE_OK;
}

/* The stream's state now (one API call, no retry). */
OPSTATE_NATS__PRIVATE opstate_result opstate_nats__stream_state(opstate_nats_log *lg, opstate_stream_info *out,
                                                                opstate_error *err)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = (jsErrCode)0;
    natsStatus s = js_GetStreamInfo(&si, lg->n->js, lg->stream, NULL, &jerr);
    if (s != NATS_OK) return opstate_nats__fail(err, s, jerr, "stream info");
    OPSTATE_MEMSET(out, 0, sizeof *out);
    out->first_seq = si->State.FirstSeq;
    out->last_seq = si->State.LastSeq;
    out->first_time = si->State.FirstTime;
    out->last_time = si->State.LastTime;
    out->messages = si->State.Msgs;
    out->epoch = (uint64_t)si->Created;
    jsStreamInfo_Destroy(si);
    if (lg->sub && lg->sub_epoch != out->epoch) opstate_nats__unsubscribe(lg); /* its consumer died with the old stream */
    return OPSTATE_OK;
}

/* Room for one more held message. */
OPSTATE_NATS__PRIVATE bool opstate_nats__hold_room(opstate_nats_log *lg)
{
    opstate_nats__held *grown;
    size_t cap = lg->cap_held ? lg->cap_held * 2 : 64;
    if (lg->n_held < lg->cap_held) return true;
    if (!(grown = (opstate_nats__held *)opstate_alloc(&lg->n->a, cap * sizeof *grown))) return false;
    OPSTATE_MEMSET(grown, 0, cap * sizeof *grown);
    if (lg->cap_held) OPSTATE_MEMCPY(grown, lg->held, lg->cap_held * sizeof *grown); /* the kept buffers too */
    opstate_free(&lg->n->a, lg->held);
    lg->held = grown;
    lg->cap_held = cap;
    return true;
}

/* >>wire: the NATS wire format (DESIGN.md): the id in Nats-Msg-Id, scope,
   kind and key in the subject, op and event time in Opstate-Op and
   Opstate-Time, the payload as it is. Bytes that are not an event,
   appended through the log interface, travel as they are under
   Opstate-Raw. A message with none of these headers is opstate 0.1's
   encoding when its payload decodes as one, else another client's event. */
#define OPSTATE_NATS__OP_HEADER "Opstate-Op"
#define OPSTATE_NATS__TIME_HEADER "Opstate-Time"
#define OPSTATE_NATS__RAW_HEADER "Opstate-Raw"
#define OPSTATE_NATS__ID_HEADER "Opstate-Id" /* the id of an event appended without server-side dedup */
#define OPSTATE_NATS__KEYLESS_HEADER "Opstate-Keyless" /* an event without a key: its subject ends at the kind */

OPSTATE_NATS__PRIVATE bool opstate_nats__has_header(natsMsg *m, const char *name, const char **value)
{
    const char *v = NULL;
    bool has = natsMsgHeader_Get(m, name, &v) == NATS_OK;
    if (value) *value = v;
    return has;
}

/* Sets the headers that carry an event's op and time. */
OPSTATE_NATS__PRIVATE natsStatus opstate_nats__event_headers(natsMsg *m, const opstate_event *ev)
{
    char text[24];
    natsStatus s;
    if (ev->op == OPSTATE_OP_PUT) snprintf(text, sizeof text, "put");
    else if (ev->op == OPSTATE_OP_DELETE) snprintf(text, sizeof text, "delete");
    else snprintf(text, sizeof text, "%lu", (unsigned long)ev->op);
    s = natsMsgHeader_Set(m, OPSTATE_NATS__OP_HEADER, text);
    snprintf(text, sizeof text, "%lld", (long long)ev->time);
    if (s == NATS_OK && ev->has_time) s = natsMsgHeader_Set(m, OPSTATE_NATS__TIME_HEADER, text);
    if (s == NATS_OK && !ev->key.len) s = natsMsgHeader_Set(m, OPSTATE_NATS__KEYLESS_HEADER, "1");
    return s;
}

/* Whether a delivered message's data must be made into an event encoding
   (not: opstate's raw bytes, or a 0.1 encoding as it is). */
OPSTATE_NATS__PRIVATE bool opstate_nats__needs_event(const opstate_nats_log *lg, natsMsg *m)
{
    opstate_event ev;
    if (lg->bucket || opstate_nats__has_header(m, OPSTATE_NATS__OP_HEADER, NULL)) return true;
    if (opstate_nats__has_header(m, OPSTATE_NATS__RAW_HEADER, NULL)) return false;
    return opstate_event_decode((const uint8_t *)natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), &ev, NULL) !=
           OPSTATE_OK;
}

OPSTATE_NATS__PRIVATE opstate_bytes opstate_nats__bytes(const char *p, size_t n)
{
    opstate_bytes b;
    b.ptr = (const uint8_t *)p;
    b.len = p ? n : 0;
    return b;
}

/* Maps a subject through the log's template: "{scope}" and "{kind}" one
   token each, "{key}" (last) the rest of the subject, one or more tokens
   or none, "*" any token, other tokens literal. Fields point into the
   subject; scope and kind default to the log's (KV mode). */
OPSTATE_NATS__PRIVATE bool opstate_nats__match(const opstate_nats_log *lg, const char *s, opstate_event *ev)
{
    const char *t = lg->tmpl;
    ev->scope = opstate_nats__bytes(lg->scope, lg->scope ? strlen(lg->scope) : 0);
    ev->kind = opstate_nats__bytes(lg->kind, lg->kind ? strlen(lg->kind) : 0);
    for (;;) {
        size_t tn = strcspn(t, "."), sn = strcspn(s, ".");
        if (tn == 5 && strncmp(t, "{key}", 5) == 0) {
            ev->key = opstate_nats__bytes(s, strlen(s));
            return true;
        }
        if (sn == 0) return false;
        if (tn == 7 && strncmp(t, "{scope}", 7) == 0) ev->scope = opstate_nats__bytes(s, sn);
        else if (tn == 6 && strncmp(t, "{kind}", 6) == 0) ev->kind = opstate_nats__bytes(s, sn);
        else if (!(tn == 1 && *t == '*') && (tn != sn || strncmp(t, s, sn) != 0)) return false;
        t += tn;
        s += sn;
        if (!*t || !*s) return !*t ? !*s : strcmp(t, ".{key}") == 0; /* a subject without the key's tokens: no key */
        t++;
        s++;
    }
}

/* Scope, kind and key of one of ours: the last tokens of its subject
   "<prefix>.<scope>.<kind>[.<key>]" (the prefix may have several tokens,
   so they are counted from the end), the key unescaped into key[]. */
OPSTATE_NATS__PRIVATE bool opstate_nats__own_subject(const char *s, bool keyless, uint8_t *key, opstate_event *ev)
{
    const char *from[3], *to[3], *stop = s + strlen(s);
    size_t n = keyless ? 2 : 3, i, klen = 0;
    for (i = n; i-- > 0;) {
        const char *p = stop;
        while (p > s && p[-1] != '.') p--;
        if (p == s || p == stop) return false; /* an empty token, or no prefix before the scope */
        from[i] = p;
        to[i] = stop;
        stop = p - 1;
    }
    ev->scope = opstate_nats__bytes(from[0], (size_t)(to[0] - from[0]));
    ev->kind = opstate_nats__bytes(from[1], (size_t)(to[1] - from[1]));
    if (keyless) return true;
    if (opstate_key_unescape(from[2], (size_t)(to[2] - from[2]), key, OPSTATE_MAX_KEY_LEN, &klen, NULL) != OPSTATE_OK)
        return false;
    ev->key = opstate_nats__bytes((const char *)key, klen);
    return true;
}

/* The event's id: Nats-Msg-Id when it is one of ours (a UUID), else one
   derived from that header's text, or from stream and sequence when there
   is none (stable: a replay gives the same id again). */
OPSTATE_NATS__PRIVATE opstate_id opstate_nats__wire_id(const opstate_nats_log *lg, natsMsg *m, uint64_t seq)
{
    opstate_event src;
    opstate_id id;
    const char *text = NULL;
    char num[24];
    if (opstate_nats__has_header(m, OPSTATE_NATS__ID_HEADER, &text) && text &&
        opstate_id_from_text(text, strlen(text), &id, NULL) == OPSTATE_OK)
        return id;
    text = NULL;
    if (opstate_nats__has_header(m, "Nats-Msg-Id", &text) && text &&
        opstate_id_from_text(text, strlen(text), &id, NULL) == OPSTATE_OK)
        return id;
    OPSTATE_MEMSET(&src, 0, sizeof src);
    snprintf(num, sizeof num, "%llu", (unsigned long long)seq);
    src.scope = opstate_nats__bytes(lg->stream, strlen(lg->stream));
    src.kind = opstate_nats__bytes(text ? "msg-id" : "seq", text ? 6 : 3);
    src.key = text ? opstate_nats__bytes(text, strlen(text)) : opstate_nats__bytes(num, strlen(num));
    return opstate_id_from_content(&src);
}

/* The op and time headers of one of ours; false when they do not parse. */
OPSTATE_NATS__PRIVATE bool opstate_nats__wire_op_time(natsMsg *m, const char *op, opstate_event *ev)
{
    const char *t = NULL;
    char *end = NULL;
    unsigned long long v;
    if (strcmp(op, "put") == 0) ev->op = OPSTATE_OP_PUT;
    else if (strcmp(op, "delete") == 0) ev->op = OPSTATE_OP_DELETE;
    else if (*op >= '0' && *op <= '9' && (v = strtoull(op, &end, 10)) >= OPSTATE_OP_APP && v <= 0xffffffffu && !*end)
        ev->op = (uint32_t)v;
    else return false;
    if (!opstate_nats__has_header(m, OPSTATE_NATS__TIME_HEADER, &t)) return true;
    ev->has_time = true;
    ev->time = (int64_t)strtoll(t, &end, 10);
    return *t && !*end;
}

/* A delivered message as an encoded event (opstate's own, another
   client's, or a KV bucket's), into *out. MALFORMED when its subject does
   not fit the template or its opstate headers do not parse. */
OPSTATE_NATS__PRIVATE opstate_result opstate_nats__synthesize(opstate_nats_log *lg, natsMsg *m, int64_t time,
                                                              uint64_t seq, uint8_t **out, size_t *cap, size_t *len)
{
    opstate_event ev;
    uint8_t key[OPSTATE_MAX_KEY_LEN];
    const char *op = NULL;
    const char *subject = natsMsg_GetSubject(m);
    bool ours = opstate_nats__has_header(m, OPSTATE_NATS__OP_HEADER, &op) && op;
    bool keyless = ours && opstate_nats__has_header(m, OPSTATE_NATS__KEYLESS_HEADER, NULL);
    OPSTATE_MEMSET(&ev, 0, sizeof ev);
    if (!(ours ? opstate_nats__own_subject(subject, keyless, key, &ev) : opstate_nats__match(lg, subject, &ev)) ||
        !ev.scope.len || !ev.kind.len)
        return OPSTATE_MALFORMED;
    ev.has_time = !ours;
    ev.time = time;
    if (ours && !opstate_nats__wire_op_time(m, op, &ev)) return OPSTATE_MALFORMED;
    if (!ours) ev.op = opstate_nats__has_header(m, "KV-Operation", &op) && op &&
                               (strcmp(op, "DEL") == 0 || strcmp(op, "PURGE") == 0) ? OPSTATE_OP_DELETE : OPSTATE_OP_PUT;
    if (ours || ev.op == OPSTATE_OP_PUT) /* a KV delete marker's payload is no value */
        ev.data = opstate_nats__bytes(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m));
    ev.id = opstate_nats__wire_id(lg, m, seq);
    if (opstate_event_encode(&ev, NULL, 0, len, NULL) != OPSTATE_OK) return OPSTATE_MALFORMED;
    if (*len > *cap) {
        opstate_free(&lg->n->a, *out);
        *cap = 0;
        if (!(*out = (uint8_t *)opstate_alloc(&lg->n->a, *len))) return OPSTATE_NO_MEMORY;
        *cap = *len;
    }
    return opstate_event_encode(&ev, *out, *len, len, NULL);
}

/* The JetStream metadata a delivered message carries in its reply
   subject, "$JS.ACK.[<domain>.<account hash>.]<stream>.<consumer>.
   <delivered>.<stream seq>.<consumer seq>.<time>.<pending>[.<token>]":
   read in place (nats.c's natsMsg_GetMetaData allocates three times per
   message). */
typedef struct opstate_nats__meta {
    uint64_t stream_seq, consumer_seq, pending;
    int64_t time;
} opstate_nats__meta;

/* One decimal token of at most 19 digits into *v; false when it is not. */
OPSTATE_NATS__PRIVATE bool opstate_nats__number(const char *p, size_t n, uint64_t *v)
{
    size_t i;
    *v = 0;
    if (n == 0 || n > 19) return false;
    for (i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') return false;
        *v = *v * 10 + (uint64_t)(p[i] - '0');
    }
    return true;
}

OPSTATE_NATS__PRIVATE bool opstate_nats__ack_meta(const char *reply, opstate_nats__meta *out)
{
    const char *tok[12];
    size_t len[12], n = 0, first;
    uint64_t v[5];
    int i;
    if (!reply || strncmp(reply, "$JS.ACK.", 8) != 0) return false;
    for (reply += 8; n < 12; n++) { /* the tokens after "$JS.ACK." */
        tok[n] = reply;
        len[n] = strcspn(reply, ".");
        if (!reply[len[n]]) break;
        reply += len[n] + 1;
    }
    if (n < 12) n++;
    if (n != 7 && n < 9) return false;
    first = n == 7 ? 2 : 4; /* v1: 7 tokens; v2: domain and account hash first */
    for (i = 0; i < 5; i++)
        if (!opstate_nats__number(tok[first + (size_t)i], len[first + (size_t)i], &v[i])) return false;
    out->stream_seq = v[1];
    out->consumer_seq = v[2];
    out->time = (int64_t)v[3];
    out->pending = v[4];
    return true;
}

/* Turns a delivered message into a log message the caller can use; the
   natsMsg is held until the next call. */
OPSTATE_NATS__PRIVATE opstate_result opstate_nats__take(opstate_nats_log *lg, natsMsg *m, opstate_log_message *out,
                                                        uint64_t *pending)
{
    opstate_nats__meta md;
    opstate_nats__held *h;
    bool ok = opstate_nats__ack_meta(natsMsg_GetReply(m), &md);
    opstate_result r = OPSTATE_OK;
    if (!ok || !opstate_nats__hold_room(lg)) {
        natsMsg_Destroy(m);
        return !ok ? opstate_error_set(NULL, OPSTATE_MALFORMED, "metadata", 0) : OPSTATE_NO_MEMORY;
    }
    h = &lg->held[lg->n_held++];
    h->msg = m;
    h->seq = md.stream_seq;
    out->position.seq = md.stream_seq;
    out->position.time = md.time;
    out->position.epoch = lg->sub_epoch;
    out->subject.ptr = (const uint8_t *)natsMsg_GetSubject(m);
    out->subject.len = strlen(natsMsg_GetSubject(m));
    out->data.ptr = (const uint8_t *)natsMsg_GetData(m);
    out->data.len = (size_t)natsMsg_GetDataLength(m);
    /* the consumer numbers what it delivers: no number skipped, nothing lost
       (a consumer starts at 1 on the first in-filter message at its start) */
    out->contiguous = md.consumer_seq == lg->last_delivery + 1;
    lg->last_delivery = md.consumer_seq;
    *pending = md.pending;
    if (opstate_nats__needs_event(lg, m)) { /* a message that does not map becomes empty data: poison */
        r = opstate_nats__synthesize(lg, m, md.time, md.stream_seq, &h->event, &h->event_cap, &out->data.len);
        out->data.ptr = h->event;
        if (r != OPSTATE_OK) out->data.len = 0;
        if (r != OPSTATE_NO_MEMORY) r = OPSTATE_OK;
    }
    return r;
}

/* The subject filter a read uses: the caller's, ">" for everything, or the
   bucket's subjects in KV mode. */
OPSTATE_NATS__PRIVATE const char *opstate_nats__filter(const opstate_nats_log *lg, opstate_bytes filter, char *buf,
                                                       size_t cap)
{
    if (lg->bucket) snprintf(buf, cap, "%s>", lg->kv_prefix);
    else if (filter.len == 0) snprintf(buf, cap, ">");
    else snprintf(buf, cap, "%.*s", (int)filter.len, (const char *)filter.ptr);
    return buf;
}

/* Finishes a (re)subscription: remembers where it reads, or undoes it. */
OPSTATE_NATS__PRIVATE opstate_result opstate_nats__bound(opstate_nats_log *lg, natsStatus s, jsErrCode jerr,
                                                         const char *filter, uint64_t epoch, uint64_t from,
                                                         opstate_error *err)
{
    if (s != NATS_OK || !(lg->sub_filter = opstate_nats__dup(&lg->n->a, filter))) {
        opstate_nats__unsubscribe(lg);
        return s != NATS_OK ? opstate_nats__fail(err, s, (long)jerr, "subscribe")
                            : opstate_error_set(err, OPSTATE_NO_MEMORY, "subscribe", 0);
    }
    lg->sub_epoch = epoch;
    lg->sub_next = from;
    lg->last_delivery = 0;
    return OPSTATE_OK;
}

/* Starts an ordered push consumer at `from` on `filter` (DeliverLastPerSubject
   when last_per_subject). Learns the epoch and how much is pending. */
OPSTATE_NATS__PRIVATE opstate_result opstate_nats__subscribe(opstate_nats_log *lg, const char *filter, uint64_t from,
                                                             bool last_per_subject, opstate_error *err)
{
    jsSubOptions so;
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = (jsErrCode)0;
    opstate_stream_info info;
    natsStatus s;
    opstate_result r = opstate_nats__stream_state(lg, &info, err);
    opstate_nats__unsubscribe(lg);
    if (r != OPSTATE_OK) return r;
    jsSubOptions_Init(&so);
    so.Stream = lg->stream;
    so.Ordered = true;
    so.Config.DeliverPolicy = last_per_subject ? js_DeliverLastPerSubject : from > 1 ? js_DeliverByStartSequence : js_DeliverAll;
    if (!last_per_subject && from > 1) so.Config.OptStartSeq = from;
    s = js_SubscribeSync(&lg->sub, lg->n->js, filter, NULL, &so, &jerr);
    if (s == NATS_OK) s = natsSubscription_SetPendingLimits(lg->sub, -1, -1);
    if (s == NATS_OK && natsSubscription_GetConsumerInfo(&ci, lg->sub, NULL, &jerr) == NATS_OK) {
        /* what is still to come: not yet delivered, plus delivered and in flight to us */
        lg->pending = ci->NumPending + ci->Delivered.Consumer;
        lg->pending_known = true;
        jsConsumerInfo_Destroy(ci);
    } else {
        lg->pending_known = false;
    }
    return opstate_nats__bound(lg, s, jerr, filter, info.epoch, from, err);
}

/* Takes up to max messages from the subscription, the first waiting up to
   wait_ms. */
OPSTATE_NATS__PRIVATE opstate_result opstate_nats__drain(opstate_nats_log *lg, int64_t wait_ms, opstate_log_message *msgs,
                                                         size_t max, size_t *count, opstate_error *err)
{
    size_t n = 0;
    opstate_result r = OPSTATE_OK;
    while (n < max && r == OPSTATE_OK) {
        natsMsg *m = NULL;
        natsStatus s = natsSubscription_NextMsg(&m, lg->sub, n == 0 ? wait_ms : 0);
        if (s == NATS_TIMEOUT) break;
        if (s != NATS_OK) {
            opstate_nats__unsubscribe(lg); /* the next read starts a new consumer */
            r = n ? OPSTATE_OK : opstate_nats__fail(err, s, 0, "next message");
            break;
        }
        r = opstate_nats__take(lg, m, &msgs[n], &lg->pending);
        if (r != OPSTATE_OK) break;
        lg->pending_known = true;
        lg->sub_next = msgs[n++].position.seq + 1;
    }
    *count = n;
    return r;
}

/* Durable mode's pulls: how many messages may be asked for ahead of the
   reader, how many bytes one request may bring (or twice the server's
   largest message, so any message fits an empty request), and how late
   the status that ends a request may arrive before it is taken for lost. */
#define OPSTATE_NATS__PULL_WINDOW 1024u
#define OPSTATE_NATS__PULL_BYTES 4194304
#define OPSTATE_NATS__PULL_GRACE_MS 1000

/* Durable mode: the log's own subscription on a fresh inbox, replies of
   its pull requests "<inbox>.<batch>". Nothing sent to an earlier one
   (an earlier consumer's deliveries) can reach it. */
OPSTATE_NATS__PRIVATE natsStatus opstate_nats__pull_subscribe(opstate_nats_log *lg)
{
    char subject[160];
    natsStatus s = natsInbox_Create(&lg->pull.inbox);
    if (s == NATS_OK) snprintf(subject, sizeof subject, "%s.*", lg->pull.inbox);
    if (s == NATS_OK) s = natsConnection_SubscribeSync(&lg->sub, lg->n->nc, subject);
    if (s == NATS_OK) s = natsSubscription_SetPendingLimits(lg->sub, -1, -1); /* bounded by the window */
    return s;
}

/* Durable mode: (re)creates the durable pull consumer at `from` and
   subscribes to its deliveries. The server clamps a start outside the
   stream silently; the consumer driver sees it in the first delivered
   sequence. */
OPSTATE_NATS__PRIVATE opstate_result opstate_nats__pull_bind(opstate_nats_log *lg, const char *filter, uint64_t from,
                                                             opstate_error *err)
{
    jsConsumerConfig cc;
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = (jsErrCode)0;
    opstate_stream_info info;
    natsStatus s;
    opstate_result r = opstate_nats__stream_state(lg, &info, err);
    opstate_nats__unsubscribe(lg); /* what is in flight to the old inbox goes with it */
    if (r != OPSTATE_OK) return r;
    js_DeleteConsumer(lg->n->js, lg->stream, lg->durable, NULL, NULL); /* absent is fine */
    jsConsumerConfig_Init(&cc);
    cc.Durable = lg->durable;
    cc.AckPolicy = js_AckAll;
    cc.AckWait = (int64_t)30 * 1000000000;
    cc.MaxAckPending = 8 * OPSTATE_NATS__PULL_WINDOW; /* a window in flight and batches applied before their ack */
    cc.DeliverPolicy = from > 1 ? js_DeliverByStartSequence : js_DeliverAll;
    cc.OptStartSeq = from > 1 ? from : 0;
    cc.FilterSubject = strcmp(filter, ">") != 0 ? filter : NULL;
    s = js_AddConsumer(&ci, lg->n->js, lg->stream, &cc, NULL, &jerr);
    if (s == NATS_OK && from > 1 && ci->Delivered.Stream + 1 != from)
        opstate_diag_line(&lg->n->diag, OPSTATE_DIAG_INFO, "nats: the server moved the start of ", from,
                          " (outside the stream); the consumer checks what arrives");
    lg->pending = s == NATS_OK ? ci->NumPending : 0;
    lg->pending_known = s == NATS_OK;
    jsConsumerInfo_Destroy(ci);
    if (s == NATS_OK) s = opstate_nats__pull_subscribe(lg);
    return opstate_nats__bound(lg, s, jerr, filter, info.epoch, from, err);
}

/* Asks the durable consumer for `batch` more messages. no_wait: answered
   at once (what is there, ended by a 408 at the end of the stream, or a
   404 when nothing is; with expires_ns 0 it never waits); otherwise a long
   poll that delivers new messages as they come until expires_ns. */
OPSTATE_NATS__PRIVATE natsStatus opstate_nats__pull_ask(opstate_nats_log *lg, uint64_t batch, int64_t expires_ns,
                                                        bool no_wait)
{
    char api[600], reply[160], body[200];
    int64_t bytes = natsConnection_GetMaxPayload(lg->n->nc) * 2, deadline;
    int len = snprintf(api, sizeof api, "$JS.API.CONSUMER.MSG.NEXT.%s.%s", lg->stream, lg->durable);
    natsStatus s;
    if (len < 0 || (size_t)len >= sizeof api) return NATS_INVALID_ARG;
    if (bytes < OPSTATE_NATS__PULL_BYTES) bytes = OPSTATE_NATS__PULL_BYTES;
    snprintf(reply, sizeof reply, "%s.%llu", lg->pull.inbox, (unsigned long long)batch);
    snprintf(body, sizeof body, "{\"batch\":%llu,\"max_bytes\":%lld,\"expires\":%lld%s}", (unsigned long long)batch,
             (long long)bytes, (long long)expires_ns, no_wait ? ",\"no_wait\":true" : "");
    if ((s = natsConnection_PublishRequestString(lg->n->nc, api, reply, body)) != NATS_OK) return s;
    /* the server ends it by expires_ns; one that never waits is answered at once */
    deadline = nats_Now() + (expires_ns ? expires_ns / 1000000 : lg->first_wait_ms);
    if (deadline > lg->pull.deadline) lg->pull.deadline = deadline;
    lg->pull.asked += batch;
    lg->pull.long_poll = lg->pull.long_poll || !no_wait;
    return NATS_OK;
}

/* Keeps pulls in flight ahead of the reader. While the consumer has
   messages pending, up to a window of them is asked for (again once half
   of it is taken), so the next batch travels while this one is applied.
   With nothing known pending and nothing in flight (not after a batch):
   a probe answered at once, or a long poll for a read that waits. */
OPSTATE_NATS__PRIVATE natsStatus opstate_nats__pull_more(opstate_nats_log *lg, int64_t wait_ns, size_t max,
                                                         bool after_batch)
{
    uint64_t want = max < OPSTATE_NATS__PULL_WINDOW ? max : OPSTATE_NATS__PULL_WINDOW;
    if (lg->pending_known && lg->pending > 0 && !lg->pull.long_poll) {
        want = lg->pending < OPSTATE_NATS__PULL_WINDOW ? lg->pending : OPSTATE_NATS__PULL_WINDOW;
        if (lg->pull.asked * 2 > want) return NATS_OK; /* more than half of it still coming */
        return opstate_nats__pull_ask(lg, want - lg->pull.asked, lg->first_wait_ms * 1000000, true);
    }
    if (after_batch || lg->pull.asked > 0) return NATS_OK;
    return wait_ns > 0 ? opstate_nats__pull_ask(lg, want, wait_ns, false) : opstate_nats__pull_ask(lg, want, 0, true);
}

/* A status on the pull inbox ends the request its subject names. With
   Nats-Pending-Messages (408 at expiry or at the end of the stream, 409
   past max bytes) it tells what the request still owed; a 404 (nothing
   pending: *none set) or a 408 without it (refused: other requests cover
   what is pending) ended it owing its whole batch; a 1xx ends nothing.
   false: what is in flight is unknown (a leadership change, a deleted
   consumer, a refused request, a count that does not add up). */
OPSTATE_NATS__PRIVATE bool opstate_nats__pull_status(opstate_nats_log *lg, natsMsg *m, bool *none)
{
    const char *code = NULL, *owed = NULL, *batch = natsMsg_GetSubject(m) + strlen(lg->pull.inbox) + 1;
    uint64_t ended;
    if (natsMsgHeader_Get(m, "Status", &code) != NATS_OK || !code[0]) return false;
    if (code[0] == '1') return true;
    if (natsMsgHeader_Get(m, "Nats-Pending-Messages", &owed) == NATS_OK) {
        if (!opstate_nats__number(owed, strlen(owed), &ended)) return false;
        if (code[2] == '8') lg->pending_known = false; /* expired or at the end: ask the server again */
    } else if (strcmp(code, "404") == 0 || strcmp(code, "408") == 0) {
        if (!opstate_nats__number(batch, strlen(batch), &ended)) return false;
        if (code[2] == '4') { /* nothing pending now: the one proof of it */
            lg->pending = 0;
            lg->pending_known = *none = true;
        }
    } else {
        return false;
    }
    if (ended > lg->pull.asked) return false;
    lg->pull.asked -= ended;
    if (!lg->pull.asked) lg->pull.long_poll = false;
    return true;
}

/* How long a read waits for its messages: the caller's wait, or while
   requests answered at once are in flight, first_message_wait_ms (a long
   poll in flight is not waited for beyond the caller's wait). */
OPSTATE_NATS__PRIVATE int64_t opstate_nats__pull_until(const opstate_nats_log *lg, int64_t wait_ns)
{
    int64_t now = nats_Now(), until = now + (wait_ns > 0 ? (wait_ns + 999999) / 1000000 : 0);
    if (lg->pull.asked && !lg->pull.long_poll && now + lg->first_wait_ms > until) until = now + lg->first_wait_ms;
    return until;
}

/* The next delivered message on the pull inbox (NULL: none now), the
   statuses before it handled. A read's first message is waited for until
   *until, asking for more whenever nothing is in flight, until a 404 shows
   that nothing is pending; later ones are waited for while the last one
   said more are pending and they are asked for (a read returns a full
   batch when there is one). */
OPSTATE_NATS__PRIVATE natsStatus opstate_nats__pull_next(opstate_nats_log *lg, int64_t wait_ns, size_t max,
                                                         size_t taken, int64_t *until, natsMsg **out)
{
    bool none = false, asked = false;
    *out = NULL;
    for (;;) {
        natsMsg *m = NULL;
        natsStatus s = taken ? opstate_nats__pull_more(lg, 0, max, true) : NATS_OK; /* the next batch on its way */
        int64_t left;
        if (s == NATS_OK && !lg->pull.asked) { /* nothing in flight: ask (once more while the wait lasts) */
            if (taken || none || (asked && nats_Now() >= *until)) return NATS_OK;
            s = opstate_nats__pull_more(lg, wait_ns, max, false);
            if (!asked && (left = opstate_nats__pull_until(lg, wait_ns)) > *until) *until = left;
            asked = true;
        }
        if (s != NATS_OK) return s;
        left = !taken || (lg->pending_known && lg->pending > 0 && !lg->pull.long_poll) ? *until - nats_Now() : 0;
        s = natsSubscription_NextMsg(&m, lg->sub, left > 0 ? left : 0);
        if (s == NATS_TIMEOUT) return NATS_OK;
        if (s != NATS_OK) return s;
        if (natsMsg_GetReply(m) && natsMsg_GetReply(m)[0]) { /* a delivery: "$JS.ACK..." */
            lg->pull.asked -= lg->pull.asked > 0;
            if (!lg->pull.asked) lg->pull.long_poll = false;
            *out = m;
            return NATS_OK;
        }
        s = opstate_nats__pull_status(lg, m, &none) ? NATS_OK : NATS_ERR;
        natsMsg_Destroy(m);
        if (s != NATS_OK) return s;
    }
}

/* Durable mode: one read. Takes what the pulls in flight bring (waiting as
   opstate_nats__pull_next says), and keeps the next batch in flight while
   this one is applied. Pulls that should have ended by now, a status that
   leaves what is in flight unknown, a delivery from before the reader (a
   consumer that lost its state) or after a hole in the consumer's delivery
   numbers (deliveries lost in transit) end the subscription: the read
   fails as a transient, or returns what it took before, and the next one
   re-creates the consumer where the reader is. */
OPSTATE_NATS__PRIVATE opstate_result opstate_nats__fetch(opstate_nats_log *lg, int64_t wait_ns, opstate_log_message *msgs,
                                                         size_t max, size_t *count, opstate_error *err)
{
    size_t n = 0;
    int64_t until = opstate_nats__pull_until(lg, wait_ns);
    opstate_result r = OPSTATE_OK;
    natsStatus s = NATS_OK;
    if (lg->pull.asked && nats_Now() > lg->pull.deadline + OPSTATE_NATS__PULL_GRACE_MS) s = NATS_TIMEOUT; /* lost */
    while (s == NATS_OK && n < max && r == OPSTATE_OK) {
        natsMsg *m = NULL;
        bool later = lg->last_delivery != 0; /* the first delivery may be a clamped start: the driver checks it */
        s = opstate_nats__pull_next(lg, wait_ns, max, n, &until, &m);
        if (s != NATS_OK || !m) break;
        r = opstate_nats__take(lg, m, &msgs[n], &lg->pending); /* holds m (or destroys it on failure) */
        lg->pending_known = r == OPSTATE_OK;
        if (r == OPSTATE_OK && later && (msgs[n].position.seq < lg->sub_next || !msgs[n].contiguous))
            s = NATS_ERR; /* the consumer went back (its state lost in a server restart), or deliveries were
                             lost on the way (with a server or a leader): never taken twice, never skipped */
        else if (r == OPSTATE_OK)
            lg->sub_next = msgs[n++].position.seq + 1;
    }
    *count = n;
    if (s == NATS_OK && r == OPSTATE_OK) s = opstate_nats__pull_more(lg, 0, max, true);
    if (s != NATS_OK) {
        opstate_nats__unsubscribe(lg);
        if (n == 0) return opstate_nats__fail(err, s, 0, "fetch");
    }
    return r;
}

/* Durable mode: acknowledges (AckAll) every held message up to upto_seq:
   one "+ACK" published to the highest one's reply, no round trip (what
   natsMsg_Ack does, which needs nats.c's own JetStream subscription). */
OPSTATE_NATS__PRIVATE opstate_result opstate_nats__ack_upto(void *user, uint64_t upto_seq, opstate_error *err)
{
    opstate_nats_log *lg = (opstate_nats_log *)user;
    size_t i, best = lg->n_held;
    natsStatus s;
    if (!lg->durable) return OPSTATE_OK;
    for (i = 0; i < lg->n_held; i++)
        if (lg->held[i].seq <= upto_seq && (best == lg->n_held || lg->held[i].seq > lg->held[best].seq)) best = i;
    if (best == lg->n_held) return OPSTATE_OK;
    s = natsConnection_PublishString(lg->n->nc, natsMsg_GetReply(lg->held[best].msg), "+ACK");
    return s == NATS_OK ? OPSTATE_OK : opstate_nats__fail(err, s, 0, "ack");
}

/* The arguments of one log call, for opstate_nats__ride. */
typedef struct opstate_nats__call {
    opstate_bytes filter;
    uint64_t from_seq;
    int64_t wait_ns;
    opstate_log_message *msgs;
    size_t max, *count;
    opstate_stream_info *info;
    opstate_log_visit_fn fn;
    void *fn_user;
} opstate_nats__call;

typedef opstate_result (*opstate_nats__op)(opstate_nats_log *lg, const opstate_nats__call *c, opstate_error *err);

/* A failure worth retrying: not a missing stream (JSStreamNotFoundErr), a
   closed connection, a bad argument or a lack of memory. */
OPSTATE_NATS__PRIVATE bool opstate_nats__transient(opstate_result r, const opstate_error *e)
{
    if (r != OPSTATE_TIMEOUT && r != OPSTATE_IO && r != OPSTATE_NOT_FOUND) return false;
    return e->dep_detail != OPSTATE_NATS__STREAM_NOT_FOUND && e->dep_status != (long)NATS_CONNECTION_CLOSED;
}

/* Runs op, riding through transients: each retry starts a fresh consumer
   at the same position after a back-off (50 ms doubling to 1 s) until
   transient_wait_ms has passed; then the last error is returned. */
OPSTATE_NATS__PRIVATE opstate_result opstate_nats__ride(opstate_nats_log *lg, opstate_nats__op op,
                                                        const opstate_nats__call *c, opstate_error *err)
{
    int64_t deadline = nats_Now() + lg->transient_wait_ms, pause = 50;
    for (;;) {
        opstate_error e;
        opstate_result r;
        OPSTATE_MEMSET(&e, 0, sizeof e);
        r = op(lg, c, &e);
        if (r == OPSTATE_OK || !opstate_nats__transient(r, &e) || lg->transient_wait_ms < 0 ||
            nats_Now() + pause > deadline) {
            if (r != OPSTATE_OK && err) *err = e;
            return r;
        }
        opstate_nats__unsubscribe(lg);
        opstate_diag_line(&lg->n->diag, OPSTATE_DIAG_INFO, "nats: transient failure (", (uint64_t)e.dep_status,
                          "), riding through");
        nats_Sleep(pause);
        pause = pause * 2 > 1000 ? 1000 : pause * 2;
    }
}

OPSTATE_NATS__PRIVATE opstate_result opstate_nats__read_once(opstate_nats_log *lg, const opstate_nats__call *c,
                                                             opstate_error *err)
{
    char buf[1024];
    const char *f = opstate_nats__filter(lg, c->filter, buf, sizeof buf);
    int64_t wait_ms;
    opstate_nats__release(lg);
    *c->count = 0;
    if (!lg->sub || strcmp(f, lg->sub_filter) != 0 || c->from_seq != lg->sub_next) {
        opstate_result r = lg->durable ? opstate_nats__pull_bind(lg, f, c->from_seq, err)
                                       : opstate_nats__subscribe(lg, f, c->from_seq, false, err);
        if (r != OPSTATE_OK) return r;
    }
    if (lg->durable) return opstate_nats__fetch(lg, c->wait_ns, c->msgs, c->max, c->count, err);
    if (c->wait_ns > 0) wait_ms = c->wait_ns / 1000000 > 0 ? c->wait_ns / 1000000 : 1;
    else wait_ms = lg->pending_known && lg->pending == 0 ? 0 : lg->first_wait_ms;
    return opstate_nats__drain(lg, wait_ms, c->msgs, c->max, c->count, err);
}

OPSTATE_NATS__PRIVATE opstate_result opstate_nats__read(void *user, opstate_bytes filter, uint64_t from_seq, int64_t wait_ns,
                                                        opstate_log_message *msgs, size_t max, size_t *count,
                                                        opstate_error *err)
{
    opstate_nats__call c;
    OPSTATE_MEMSET(&c, 0, sizeof c);
    c.filter = filter;
    c.from_seq = from_seq;
    c.wait_ns = wait_ns;
    c.msgs = msgs;
    c.max = max;
    c.count = count;
    return opstate_nats__ride((opstate_nats_log *)user, opstate_nats__read_once, &c, err);
}

/* The message of one append in the wire format: an event encoding
   travels as its payload with its op and time in headers, and its id in
   Nats-Msg-Id (the caller's msg_id, for the server's dedup) or, with no
   msg_id, in Opstate-Id; other bytes as they are, marked Opstate-Raw. */
OPSTATE_NATS__PRIVATE natsStatus opstate_nats__wire_msg(natsMsg **m, const char *subject, opstate_bytes data,
                                                       bool dedup)
{
    opstate_event ev;
    char id[OPSTATE_ID_TEXT_LEN + 1];
    natsStatus s;
    if (opstate_event_decode(data.ptr, data.len, &ev, NULL) != OPSTATE_OK) {
        s = natsMsg_Create(m, subject, NULL, (const char *)data.ptr, (int)data.len);
        return s == NATS_OK ? natsMsgHeader_Set(*m, OPSTATE_NATS__RAW_HEADER, "1") : s;
    }
    s = natsMsg_Create(m, subject, NULL, (const char *)ev.data.ptr, (int)ev.data.len);
    if (s == NATS_OK) s = opstate_nats__event_headers(*m, &ev);
    opstate_id_to_text(&ev.id, id);
    id[OPSTATE_ID_TEXT_LEN] = '\0';
    if (s == NATS_OK && !dedup) s = natsMsgHeader_Set(*m, OPSTATE_NATS__ID_HEADER, id);
    return s;
}

/* Appends one message: Nats-Msg-Id for dedup, the expected last subject
   sequence for optimistic concurrency (0: the subject must be new). */
OPSTATE_NATS__PRIVATE opstate_result opstate_nats__append(void *user, opstate_bytes subject, opstate_bytes data,
                                                          const opstate_append_options *opts,
                                                          opstate_append_result *out, opstate_error *err)
{
    opstate_nats_log *lg = (opstate_nats_log *)user;
    char subj[1024], id[OPSTATE_ID_TEXT_LEN + 1];
    jsPubOptions po;
    jsPubAck *pa = NULL;
    jsErrCode jerr = (jsErrCode)0;
    natsMsg *m = NULL;
    const opstate_id *msg_id = opts ? opts->msg_id : NULL;
    natsStatus s;
    if (lg->bucket) return opstate_error_set(err, OPSTATE_INVALID_ARGUMENT, "a KV bucket log is read-only", 0);
    if (subject.len == 0 || subject.len >= sizeof subj || data.len > INT32_MAX)
        return opstate_error_set(err, OPSTATE_INVALID_ARGUMENT, "subject", 0);
    snprintf(subj, sizeof subj, "%.*s", (int)subject.len, (const char *)subject.ptr);
    jsPubOptions_Init(&po);
    s = opstate_nats__wire_msg(&m, subj, data, msg_id != NULL);
    if (msg_id) {
        opstate_id_to_text(msg_id, id);
        id[OPSTATE_ID_TEXT_LEN] = '\0';
        po.MsgId = id;
    }
    if (opts && opts->expect_last_subject_seq) {
        po.ExpectLastSubjectSeq = opts->last_subject_seq;
        po.ExpectNoMessage = opts->last_subject_seq == 0; /* 0 alone means "no check" in nats.c */
    }
    if (s == NATS_OK) s = js_PublishMsg(&pa, lg->n->js, m, &po, &jerr);
    natsMsg_Destroy(m);
    if (s != NATS_OK) return opstate_nats__fail(err, s, jerr, "publish");
    out->seq = pa->Sequence;
    out->duplicate = pa->Duplicate;
    jsPubAck_Destroy(pa);
    return OPSTATE_OK;
}

/* One pass over the last message of every subject (after a retry, fn
   sees a subject again: the resync's use of it is idempotent). */
OPSTATE_NATS__PRIVATE opstate_result opstate_nats__last_once(opstate_nats_log *lg, const opstate_nats__call *c,
                                                             opstate_error *err)
{
    char buf[1024];
    opstate_log_message batch[64];
    size_t n, i;
    opstate_result r;
    opstate_nats__release(lg);
    r = opstate_nats__subscribe(lg, opstate_nats__filter(lg, c->filter, buf, sizeof buf), 0, true, err);
    if (r == OPSTATE_OK && !lg->pending_known) /* an unknown view must not look empty: resync would wipe the state */
        r = opstate_error_set(err, OPSTATE_IO, "consumer info for last value per subject", 0);
    while (r == OPSTATE_OK && lg->pending > 0) {
        r = opstate_nats__drain(lg, lg->first_wait_ms, batch, 64, &n, err);
        if (r == OPSTATE_OK && n == 0) r = opstate_error_set(err, OPSTATE_TIMEOUT, "last value per subject", 0);
        for (i = 0; r == OPSTATE_OK && i < n; i++) c->fn(c->fn_user, &batch[i]);
        opstate_nats__release(lg);
    }
    opstate_nats__unsubscribe(lg); /* a read after this starts its own consumer */
    return r;
}

OPSTATE_NATS__PRIVATE opstate_result opstate_nats__last_per_subject(void *user, opstate_bytes filter,
                                                                    opstate_log_visit_fn fn, void *fn_user,
                                                                    opstate_error *err)
{
    opstate_nats__call c;
    OPSTATE_MEMSET(&c, 0, sizeof c);
    c.filter = filter;
    c.fn = fn;
    c.fn_user = fn_user;
    return opstate_nats__ride((opstate_nats_log *)user, opstate_nats__last_once, &c, err);
}

OPSTATE_NATS__PRIVATE opstate_result opstate_nats__info_once(opstate_nats_log *lg, const opstate_nats__call *c,
                                                             opstate_error *err)
{
    return opstate_nats__stream_state(lg, c->info, err);
}

OPSTATE_NATS__PRIVATE opstate_result opstate_nats__info(void *user, opstate_stream_info *out, opstate_error *err)
{
    opstate_nats__call c;
    OPSTATE_MEMSET(&c, 0, sizeof c);
    c.info = out;
    return opstate_nats__ride((opstate_nats_log *)user, opstate_nats__info_once, &c, err);
}

OPSTATE_API opstate_log opstate_nats_log_iface(opstate_nats_log *lg)
{
    opstate_log log;
    log.user = lg;
    log.append = opstate_nats__append;
    log.read = opstate_nats__read;
    log.info = opstate_nats__info;
    log.last_per_subject = opstate_nats__last_per_subject;
    log.ack = opstate_nats__ack_upto;
    return log;
}

/* >>publish -------------------------------------------------------------- */

/* The id of a message this companion published: the encoded event holds
   it at bytes 6..21; other bytes carry it in their Nats-Msg-Id. */
OPSTATE_NATS__PRIVATE void opstate_nats__msg_id(natsMsg *msg, opstate_id *out)
{
    const char *id = NULL;
    if (natsMsg_GetDataLength(msg) >= 22 && natsMsg_GetData(msg)[0] == OPSTATE_CODEC_VERSION)
        OPSTATE_MEMCPY(out->bytes, natsMsg_GetData(msg) + 6, 16);
    else if (natsMsgHeader_Get(msg, "Nats-Msg-Id", &id) == NATS_OK && id)
        opstate_id_from_text(id, strlen(id), out, NULL);
}

/* Keeps one outcome for the next opstate_nats_publish_wait (any thread). */
OPSTATE_NATS__PRIVATE void opstate_nats__keep(opstate_nats *n, const opstate_nats_outcome *o)
{
    pthread_mutex_lock(&n->lock);
    if (n->n_outcomes == n->cap_outcomes) {
        size_t cap = n->cap_outcomes ? n->cap_outcomes * 2 : 1024;
        opstate_nats_outcome *grown = (opstate_nats_outcome *)opstate_alloc(&n->a, cap * sizeof *grown);
        if (grown) {
            if (n->n_outcomes) OPSTATE_MEMCPY(grown, n->outcomes, n->n_outcomes * sizeof *grown);
            opstate_free(&n->a, n->outcomes);
            n->outcomes = grown;
            n->cap_outcomes = cap;
        }
    }
    if (n->n_outcomes < n->cap_outcomes) n->outcomes[n->n_outcomes++] = *o;
    else n->outcomes_lost = true;
    pthread_mutex_unlock(&n->lock);
}

/* nats.c's thread: records the outcome of one asynchronous publish. */
OPSTATE_NATS__PRIVATE void opstate_nats__ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
    opstate_nats_outcome o;
    (void)js;
    OPSTATE_MEMSET(&o, 0, sizeof o);
    opstate_nats__msg_id(msg, &o.id);
    if (pa) {
        o.seq = pa->Sequence;
        o.duplicate = pa->Duplicate;
    } else if (pae) {
        o.js_error = (long)pae->ErrCode;
        o.result = opstate_nats__fail(NULL, pae->Err, (long)pae->ErrCode, "publish");
    }
    opstate_nats__keep((opstate_nats *)closure, &o);
    natsMsg_Destroy(msg);
}

/* After a wait that ran out: takes the unacknowledged messages back from
   nats.c (it drops an acknowledgment that comes for them later) and
   records each as TIMEOUT, then waits for the acknowledgments nats.c was
   handing over meanwhile, so that none is reported late or twice. */
OPSTATE_NATS__PRIVATE natsStatus opstate_nats__take_unacknowledged(opstate_nats *n)
{
    natsMsgList pending;
    jsPubOptions po;
    int i;
    natsStatus s;
    OPSTATE_MEMSET(&pending, 0, sizeof pending);
    s = js_PublishAsyncGetPendingList(&pending, n->js);
    if (s == NATS_NOT_FOUND) return NATS_OK; /* the last ones came in the meantime */
    if (s != NATS_OK) return s;
    for (i = 0; i < pending.Count; i++) {
        opstate_nats_outcome o;
        OPSTATE_MEMSET(&o, 0, sizeof o);
        opstate_nats__msg_id(pending.Msgs[i], &o.id);
        o.result = OPSTATE_TIMEOUT;
        opstate_nats__keep(n, &o);
    }
    natsMsgList_Destroy(&pending);
    jsPubOptions_Init(&po);
    po.MaxWait = 5000; /* only handlers already running are left: they take microseconds */
    return js_PublishAsyncComplete(n->js, &po);
}

/* The event's subject into lg->scratch (grown when short), NUL-terminated. */
OPSTATE_NATS__PRIVATE opstate_result opstate_nats__subject_of(opstate_nats_log *lg, opstate_bytes prefix,
                                                             const opstate_event *ev, opstate_error *err)
{
    size_t n = 0;
    opstate_result r = opstate_subject_build((const char *)prefix.ptr, prefix.len, ev->scope, ev->kind, ev->key, NULL, 0,
                                             &n, err);
    if (r != OPSTATE_OK) return r;
    if (n + 1 > lg->scratch_cap) {
        char *grown = (char *)opstate_alloc(&lg->n->a, (n + 1) * 2);
        if (!grown) return opstate_error_set(err, OPSTATE_NO_MEMORY, "subject", 0);
        opstate_free(&lg->n->a, lg->scratch);
        lg->scratch = grown;
        lg->scratch_cap = (n + 1) * 2;
    }
    opstate_subject_build((const char *)prefix.ptr, prefix.len, ev->scope, ev->kind, ev->key, lg->scratch, n, &n, NULL);
    lg->scratch[n] = '\0';
    return OPSTATE_OK;
}

OPSTATE_API opstate_result opstate_nats_publish_async(opstate_nats_log *lg, opstate_bytes prefix,
                                                      const opstate_event *ev, const opstate_append_options *opts,
                                                      opstate_error *err)
{
    char id[OPSTATE_ID_TEXT_LEN + 1];
    jsPubOptions po;
    natsMsg *m = NULL;
    natsStatus s;
    opstate_result r = opstate_nats__subject_of(lg, prefix, ev, err);
    if (r != OPSTATE_OK) return r;
    if (ev->data.len > INT32_MAX) return opstate_error_set(err, OPSTATE_OVERSIZED, "data", 0);
    opstate_id_to_text(&ev->id, id);
    id[OPSTATE_ID_TEXT_LEN] = '\0';
    jsPubOptions_Init(&po);
    if (opts && opts->expect_last_subject_seq) {
        po.ExpectLastSubjectSeq = opts->last_subject_seq;
        po.ExpectNoMessage = opts->last_subject_seq == 0;
    }
    s = natsMsg_Create(&m, lg->scratch, NULL, (const char *)ev->data.ptr, (int)ev->data.len); /* copies both */
    if (s == NATS_OK) s = natsMsgHeader_Set(m, "Nats-Msg-Id", id);
    if (s == NATS_OK) s = opstate_nats__event_headers(m, ev);
    if (s == NATS_OK) s = js_PublishMsgAsync(lg->n->js, &m, &po);
    natsMsg_Destroy(m); /* NULL once nats.c took it */
    return s == NATS_OK ? OPSTATE_OK : opstate_nats__fail(err, s, 0, "publish async");
}

OPSTATE_API opstate_result opstate_nats_publish_wait(opstate_nats_log *lg, int64_t timeout_ms,
                                                     void (*fn)(void *user, const opstate_nats_outcome *o),
                                                     void *user, opstate_error *err)
{
    opstate_nats *n = lg->n;
    opstate_nats_outcome *taken;
    size_t count, i;
    bool lost, ran_out;
    jsPubOptions po;
    natsStatus s;
    jsPubOptions_Init(&po);
    po.MaxWait = timeout_ms;
    s = js_PublishAsyncComplete(n->js, &po);
    ran_out = s == NATS_TIMEOUT;
    if (ran_out) s = opstate_nats__take_unacknowledged(n);
    pthread_mutex_lock(&n->lock);
    taken = n->outcomes;
    count = n->n_outcomes;
    lost = n->outcomes_lost;
    n->outcomes = NULL;
    n->n_outcomes = n->cap_outcomes = 0;
    n->outcomes_lost = false;
    pthread_mutex_unlock(&n->lock);
    for (i = 0; fn && i < count; i++) fn(user, &taken[i]);
    opstate_free(&n->a, taken);
    if (s != NATS_OK) return opstate_nats__fail(err, s, 0, "publish wait");
    if (lost) return opstate_error_set(err, OPSTATE_NO_MEMORY, "some outcomes could not be kept", 0);
    return ran_out ? opstate_error_set(err, OPSTATE_TIMEOUT, "publish wait: some were not acknowledged", NATS_TIMEOUT)
                   : OPSTATE_OK;
}

#endif /* OPSTATE_NATS_IMPLEMENTATION */

/*
------------------------------------------------------------------------------
MIT License. Copyright (c) 2026 the opstate authors. The full text is at the
end of opstate.h and in LICENSE.
------------------------------------------------------------------------------
*/
