/* log_nats.c — the nats:// log backend: a JetStream stream or a KV bucket
   on one server or a cluster. Part of the opstate tool (see main.c). */
#include "tool.h"

/* >>nats ---------------------------------------------------------------- */

#define NATS_DEFAULT_PORT 4222u
#define NATS_URI_FORMS                                                                                           \
    "use nats://HOST[:PORT][,HOST[:PORT]...]/STREAM, nats:///STREAM with --server or NATS_URL, or .../kv/BUCKET"
#define NATS_SERVER_FORMS "use [nats://|tls://]HOST[:PORT], comma-separated"
#define NATS_BATCH_WINDOW 20000u /* publish --batch: events sent before collecting their acks */
#define NATS_ACK_WAIT_MS 30000
#define JS_STREAM_NOT_FOUND 10059L /* JSStreamNotFoundErr */
#define JS_SUBJECTS_OVERLAP 10065L /* JSStreamSubjectOverlapErr */

/* An environment variable, NULL when unset or empty. */
static const char *env_value(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

/* Where a list of servers comes from, for its error lines. */
typedef struct server_source {
    const char *label; /* "--log", "--server" or "NATS_URL" */
    const char *whole; /* all it says */
    const char *forms; /* how it is written */
} server_source;

/* One server, HOST[:PORT] (n bytes at text), appended to u->urls. */
static int add_server(const server_source *src, const char *text, size_t n, nats_uri *u)
{
    const char *colon = (const char *)memchr(text, ':', n);
    size_t host_len = colon ? (size_t)(colon - text) : n, port_len = colon ? n - host_len - 1 : 0, used = strlen(u->urls);
    char digits[8] = "";
    uint64_t port = NATS_DEFAULT_PORT;
    if (host_len == 0 || host_len > 255 ||
        strspn(text, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-") < host_len)
        return fail(STATUS_USAGE, "%s %s: expected a host name or IPv4 address%s (%s)", src->label, quoted(src->whole),
                    strcmp(src->label, "--log") == 0 ? " after nats://" : "", src->forms);
    if (colon && port_len < sizeof digits) memcpy(digits, colon + 1, port_len);
    if (colon && (port_len >= sizeof digits || !digits_to_u64(digits, &port) || port < 1 || port > 65535))
        return fail(STATUS_USAGE, "%s %s: the port is not a number 1..65535 (%s)", src->label, quoted(src->whole), src->forms);
    if (++u->servers > NATS_MAX_SERVERS)
        return fail(STATUS_USAGE, "%s %s: more than %d servers", src->label, quoted(src->whole), NATS_MAX_SERVERS);
    snprintf(u->urls + used, sizeof u->urls - used, "%snats://%.*s:%u", used ? "," : "", (int)host_len, text, (unsigned)port);
    if (u->servers == 1) snprintf(u->first, sizeof u->first, "%.*s-%u", (int)host_len, text, (unsigned)port);
    return STATUS_OK;
}

/* A comma-separated list of servers (n bytes at text); `schemes`: each may
   start with nats:// (--server, NATS_URL; not inside a nats:// URI). */
static int add_servers(const server_source *src, const char *text, size_t n, bool schemes, nats_uri *u)
{
    const char *end = text + n;
    int status = STATUS_OK;
    if (memchr(text, '@', n))
        return fail(STATUS_USAGE, "%s: credentials in a server URL are not supported (nor echoed): use NATS_USER and "
                    "NATS_PASSWORD, or NATS_CREDS", src->label);
    while (status == STATUS_OK) {
        const char *comma = (const char *)memchr(text, ',', (size_t)(end - text)), *stop = comma ? comma : end;
        const char *colon = (const char *)memchr(text, ':', (size_t)(stop - text));
        if (schemes && stop - text > 7 && strncmp(text, "nats://", 7) == 0) text += 7;
        else if (schemes && stop - text > 6 && strncmp(text, "tls://", 6) == 0) text += 6, u->tls = true;
        else if (colon && stop - colon > 2 && colon[1] == '/' && colon[2] == '/')
            return fail(STATUS_USAGE, "%s %s: only nats:// or tls:// servers (TLS files come from NATS_CA, NATS_CERT and "
                        "NATS_KEY)", src->label, quoted(src->whole));
        status = add_server(src, text, (size_t)(stop - text), u);
        if (!comma) break;
        text = comma + 1;
    }
    return status;
}

/* The servers of a nats:///STREAM log: --server, else NATS_URL (a
   comma-separated list, as the nats CLI reads it), else 127.0.0.1:4222. */
static int default_servers(const char *server, nats_uri *u)
{
    server_source src;
    const char *env = env_value("NATS_URL");
    src.label = server ? "--server" : "NATS_URL";
    src.whole = server ? server : env ? env : "127.0.0.1";
    src.forms = NATS_SERVER_FORMS;
    return add_servers(&src, src.whole, strlen(src.whole), true, u);
}

/* rest: "[SERVERS]/STREAM" or "[SERVERS]/kv/BUCKET", SERVERS being
   HOST[:PORT],...; with none, default_servers. `server`: --server (only
   with none). */
int parse_nats_uri(const char *uri, const char *rest, const char *server, nats_uri *u)
{
    const char *slash = strchr(rest, '/'), *name;
    server_source src;
    int status;
    memset(u, 0, sizeof *u);
    if (!slash) return fail(STATUS_USAGE, "--log %s: no stream named (%s)", quoted(uri), NATS_URI_FORMS);
    if (slash > rest && server)
        return fail(STATUS_USAGE, "--server: --log %s names its servers already (use nats:///%s with --server)", quoted(uri),
                    slash + 1);
    src.label = "--log";
    src.whole = uri;
    src.forms = NATS_URI_FORMS;
    status = slash > rest ? add_servers(&src, rest, (size_t)(slash - rest), false, u) : default_servers(server, u);
    if (status != STATUS_OK) return status;
    name = slash + 1;
    u->bucket = strncmp(name, "kv/", 3) == 0;
    if (u->bucket) name += 3;
    if (!is_name(name))
        return fail(STATUS_USAGE, "--log %s: %s %s: a name is " NAME_RULE " (%s)", quoted(uri),
                    u->bucket ? "bucket" : "stream", quoted(name), NATS_URI_FORMS);
    snprintf(u->name, sizeof u->name, "%s", name);
    return STATUS_OK;
}

/* The NATS backend: a connection and the companion's log over a stream or
   a KV bucket. Its interface is wrapped so that every failure is noted
   (note_nats_failure) on its way through the core. */
typedef struct nats_backend {
    opstate_nats *conn;
    opstate_nats_log *log;
    opstate_log inner;
    int64_t ack_wait_ms; /* publish --batch: the wait for the acknowledgments of a window */
} nats_backend;

static opstate_result nats_append(void *user, opstate_bytes subject, opstate_bytes data,
                                  const opstate_append_options *opts, opstate_append_result *out, opstate_error *err)
{
    const opstate_log *in = &((nats_backend *)user)->inner;
    return note_nats_failure(in->append(in->user, subject, data, opts, out, err), err);
}

static opstate_result nats_read(void *user, opstate_bytes filter, uint64_t from_seq, int64_t wait_ns,
                                opstate_log_message *msgs, size_t max, size_t *count, opstate_error *err)
{
    const opstate_log *in = &((nats_backend *)user)->inner;
    return note_nats_failure(in->read(in->user, filter, from_seq, wait_ns, msgs, max, count, err), err);
}

static opstate_result nats_info(void *user, opstate_stream_info *out, opstate_error *err)
{
    const opstate_log *in = &((nats_backend *)user)->inner;
    return note_nats_failure(in->info(in->user, out, err), err);
}

static opstate_result nats_last_per_subject(void *user, opstate_bytes filter, opstate_log_visit_fn fn, void *fn_user,
                                            opstate_error *err)
{
    const opstate_log *in = &((nats_backend *)user)->inner;
    return note_nats_failure(in->last_per_subject(in->user, filter, fn, fn_user, err), err);
}

static opstate_result nats_ack(void *user, uint64_t upto_seq, opstate_error *err)
{
    const opstate_log *in = &((nats_backend *)user)->inner;
    return note_nats_failure(in->ack(in->user, upto_seq, err), err);
}

static void nats_wrap(nats_backend *b, opstate_log *out)
{
    b->inner = opstate_nats_log_iface(b->log);
    out->user = b;
    out->append = nats_append;
    out->read = nats_read;
    out->info = nats_info;
    out->last_per_subject = nats_last_per_subject;
    out->ack = nats_ack;
}

/* An event of publish --batch by its id (outcomes name events by id). */
typedef struct id_index {
    opstate_id id;
    size_t at; /* in batch_input.events */
} id_index;

static int id_index_compare(const void *a, const void *b)
{
    const id_index *x = (const id_index *)a, *y = (const id_index *)b;
    int c = memcmp(x->id.bytes, y->id.bytes, sizeof x->id.bytes);
    return c ? c : (x->at > y->at) - (x->at < y->at);
}

/* publish --batch on NATS: the input, its events sorted by id, the totals. */
typedef struct nats_batch {
    batch_input *in;
    id_index *by_id;
    batch_totals *t;
} nats_batch;

/* The first event sent with this id that has no outcome yet (an id may be
   on several lines), or NULL. */
static batch_event *nats_batch_find(const nats_batch *b, const opstate_id *id)
{
    size_t lo = 0, hi = b->in->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (memcmp(b->by_id[mid].id.bytes, id->bytes, sizeof id->bytes) < 0) lo = mid + 1;
        else hi = mid;
    }
    for (; lo < b->in->n && opstate_id_equal(&b->by_id[lo].id, id); lo++)
        if (b->in->events[b->by_id[lo].at].state == BATCH_SENT) return &b->in->events[b->by_id[lo].at];
    return NULL;
}

/* One outcome of opstate_nats_publish_wait: the event's new state (a
   TIMEOUT leaves it SENT: not acknowledged). */
static void nats_batch_outcome(void *user, const opstate_nats_outcome *o)
{
    nats_batch *b = (nats_batch *)user;
    batch_event *e = nats_batch_find(b, &o->id);
    if (!e || o->result == OPSTATE_TIMEOUT) return;
    if (o->result != OPSTATE_OK) {
        e->state = BATCH_REFUSED;
        if (!b->t->first_refused) {
            b->t->first_refused = e;
            b->t->refusal = o->result;
            b->t->js_error = o->js_error;
        }
        return;
    }
    e->state = o->duplicate ? BATCH_DUPLICATE : BATCH_PUBLISHED;
    if (o->seq > b->t->last_seq) b->t->last_seq = o->seq;
}

/* Sends events [from, to) without waiting; returns where sending stopped
   (to: all were sent). */
static size_t nats_batch_send(nats_backend *nb, const char *prefix, batch_input *in, size_t from, size_t to,
                              batch_totals *t)
{
    opstate_error err;
    opstate_result r;
    for (; from < to; from++) {
        memset(&err, 0, sizeof err);
        r = note_nats_failure(opstate_nats_publish_async(nb->log, text_bytes(prefix), &in->events[from].ev, NULL, &err), &err);
        if (r != OPSTATE_OK) {
            t->stopped_at = in->events[from].line;
            t->stop_reason = r;
            return from;
        }
        in->events[from].state = BATCH_SENT;
    }
    return to;
}

/* publish --batch on NATS: windows of NATS_BATCH_WINDOW events sent
   asynchronously, each followed by the wait for their acknowledgments
   (bounded: --ack-wait-ms). Sending stops after a window that could not
   all be sent or not all acknowledged: the connection is in doubt. */
static int nats_batch_publish(log_handle *h, const char *prefix, batch_input *in, batch_totals *t)
{
    nats_backend *nb = (nats_backend *)h->backend;
    nats_batch b;
    opstate_error err;
    opstate_result r = OPSTATE_OK;
    size_t i, at = 0, end;
    b.in = in;
    b.t = t;
    if (!(b.by_id = (id_index *)calloc(in->n ? in->n : 1, sizeof *b.by_id)))
        return fail(STATUS_FAILED, "publish --batch: out of memory");
    for (i = 0; i < in->n; i++) {
        b.by_id[i].id = in->events[i].ev.id;
        b.by_id[i].at = i;
    }
    qsort(b.by_id, in->n, sizeof *b.by_id, id_index_compare);
    while (r == OPSTATE_OK && at < in->n) {
        end = in->n - at > NATS_BATCH_WINDOW ? at + NATS_BATCH_WINDOW : in->n;
        at = nats_batch_send(nb, prefix, in, at, end, t);
        memset(&err, 0, sizeof err);
        r = note_nats_failure(opstate_nats_publish_wait(nb->log, nb->ack_wait_ms, nats_batch_outcome, &b, &err), &err);
        if (at < end) break;
    }
    free(b.by_id);
    if (r == OPSTATE_OK || r == OPSTATE_TIMEOUT) return STATUS_OK;
    return fail_result(r, &err, "publish --batch to %s: waiting for acknowledgments", quoted(h->uri));
}

static void nats_log_close(log_handle *h)
{
    nats_backend *b = (nats_backend *)h->backend;
    if (!b) return;
    opstate_nats_log_close(b->log);
    opstate_nats_close(b->conn);
    free(b);
    h->backend = NULL;
    nats_Close(); /* nats.c's threads and memory: the tool opens one log per run */
}

/* Connects, and opens the companion's log over the stream or bucket. */
static int nats_connect(const char *uri, const nats_uri *u, const log_open_options *o, nats_backend *b)
{
    opstate_nats_config nc;
    opstate_nats_log_config lc;
    opstate_error err;
    opstate_result r;
    memset(&nc, 0, sizeof nc);
    memset(&lc, 0, sizeof lc);
    memset(&err, 0, sizeof err);
    nc.urls = u->urls;
    nc.tls = u->tls;
    nc.name = "opstate";
    nc.diag = tool_logger();
    nc.creds_file = env_value("NATS_CREDS");
    nc.user = env_value("NATS_USER");
    nc.password = env_value("NATS_PASSWORD");
    nc.tls_ca = env_value("NATS_CA");
    nc.tls_cert = env_value("NATS_CERT");
    nc.tls_key = env_value("NATS_KEY");
    r = note_nats_failure(opstate_nats_connect(&nc, &b->conn, &err), &err);
    if (r != OPSTATE_OK) return fail_result(r, &err, "--log %s: cannot connect to %s", quoted(uri), u->urls);
    lc.stream = u->bucket ? NULL : u->name;
    lc.kv_bucket = u->bucket ? u->name : NULL;
    lc.durable = o->durable;
    lc.subject_template = o->subject_template;
    r = note_nats_failure(opstate_nats_log_open(b->conn, &lc, &b->log, &err), &err);
    return r == OPSTATE_OK ? STATUS_OK : fail_result(r, &err, "--log %s", quoted(uri));
}

/* The stream or bucket exists (reading). */
static int nats_check_exists(const char *uri, const nats_uri *u, nats_backend *b)
{
    opstate_stream_info info;
    opstate_error err;
    opstate_result r;
    memset(&err, 0, sizeof err);
    r = nats_info(b, &info, &err);
    if (r == OPSTATE_NOT_FOUND || (r != OPSTATE_OK && err.dep_detail == JS_STREAM_NOT_FOUND))
        return fail(STATUS_NOT_FOUND, "--log %s: no %s %s on %s", quoted(uri), u->bucket ? "KV bucket" : "stream",
                    quoted(u->name), u->urls);
    return r == OPSTATE_OK ? STATUS_OK : fail_result(r, &err, "--log %s", quoted(uri));
}

/* publish: the stream exists with subjects "<prefix>.>" and the asked
   limits, made if need be. An existing stream is never changed. */
static int nats_ensure_stream(const char *uri, const nats_uri *u, const log_open_options *o, nats_backend *b)
{
    opstate_nats_stream_config sc;
    opstate_error err;
    opstate_result r;
    memset(&sc, 0, sizeof sc);
    memset(&err, 0, sizeof err);
    sc.stream = u->name;
    sc.prefix = o->prefix;
    sc.max_messages = o->max_messages;
    sc.max_per_subject = o->max_per_subject;
    sc.replicas = (int)o->replicas;
    r = note_nats_failure(opstate_nats_stream_ensure(b->conn, &sc, &err), &err);
    if (r == OPSTATE_CONFLICT)
        return fail(STATUS_FAILED, "--log %s: stream %s differs from what publish asks (subjects '%s.>', --max-messages %llu, "
                    "--max-per-subject %llu; 0: not asked): %s; publish never changes a stream", quoted(uri), quoted(u->name),
                    o->prefix, (unsigned long long)o->max_messages, (unsigned long long)o->max_per_subject,
                    err.field ? err.field : "another configuration");
    if (r != OPSTATE_OK && err.dep_detail == JS_SUBJECTS_OVERLAP)
        return fail(STATUS_FAILED, "--log %s: cannot create stream %s: subjects '%s.>' overlap another stream's (use another "
                    "--prefix, or that stream)", quoted(uri), quoted(u->name), o->prefix);
    return r == OPSTATE_OK ? STATUS_OK : fail_result(r, &err, "--log %s: ensuring stream %s", quoted(uri), quoted(u->name));
}

int nats_log_open(const char *uri, const char *rest, const log_open_options *o, log_handle *h)
{
    nats_backend *b;
    nats_uri u;
    int status = parse_nats_uri(uri, rest, o->server, &u);
    if (status != STATUS_OK) return status;
    if (u.bucket && o->create)
        return fail(STATUS_USAGE, "--log %s: a KV bucket is read-only here (write it with a KV client, e.g. nats kv put)",
                    quoted(uri));
    if (!(b = (nats_backend *)calloc(1, sizeof *b))) return fail(STATUS_FAILED, "--log %s: out of memory", quoted(uri));
    h->backend = b;
    b->ack_wait_ms = o->ack_wait_ms ? (int64_t)o->ack_wait_ms : NATS_ACK_WAIT_MS;
    if ((status = nats_connect(uri, &u, o, b)) == STATUS_OK) {
        nats_wrap(b, &h->log);
        status = o->create ? nats_ensure_stream(uri, &u, o, b) : nats_check_exists(uri, &u, b);
    }
    if (status != STATUS_OK) {
        nats_log_close(h);
        return status;
    }
    h->bucket = u.bucket;
    h->remote = true;
    h->batch_publish = nats_batch_publish;
    h->close = nats_log_close;
    return STATUS_OK;
}

/* nats://HOST:PORT[,...]/NAME -> ./opstate-data/nats-HOST-PORT-NAME.state,
   after the first server (kv-NAME for a bucket). */
int nats_default_state_dir(const char *uri, const char *rest, const char *server, char *buf)
{
    nats_uri u;
    int status = parse_nats_uri(uri, rest, server, &u);
    if (status == STATUS_OK)
        snprintf(buf, PATH_CAP, "%s/nats-%s-%s%s.state", DEFAULT_DATA_DIR, u.first, u.bucket ? "kv-" : "", u.name);
    return status;
}
