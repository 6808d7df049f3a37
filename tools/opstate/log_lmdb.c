/* log_lmdb.c — the lmdb:PATH log backend: an LMDB environment directory
   holding the log "events". Part of the opstate tool (see main.c). */
#include "tool.h"

/* >>lmdb ---------------------------------------------------------------- */

/* The LMDB backend: an environment directory holding the log "events". */
typedef struct lmdb_backend {
    opstate_lmdb *env;
    opstate_lmdb_log *log;
} lmdb_backend;

/* publish --batch on an LMDB log: what opstate_publish hands its log for
   each event (subject, encoding, id), kept for one transaction. */
typedef struct lmdb_batch {
    opstate_lmdb_append_item *items; /* subject and data in one allocation each */
    opstate_id *ids;
    opstate_append_result *results;
    size_t n;
} lmdb_batch;

/* The append of a capturing log: keeps the bytes for the transaction. */
static opstate_result lmdb_capture(void *user, opstate_bytes subject, opstate_bytes data,
                                   const opstate_append_options *opts, opstate_append_result *out, opstate_error *err)
{
    lmdb_batch *b = (lmdb_batch *)user;
    opstate_lmdb_append_item *it = &b->items[b->n];
    uint8_t *copy = (uint8_t *)malloc(subject.len + data.len + 1);
    if (!copy) return opstate_error_set(err, OPSTATE_NO_MEMORY, "batch", 0);
    memcpy(copy, subject.ptr, subject.len);
    memcpy(copy + subject.len, data.ptr, data.len);
    memset(it, 0, sizeof *it);
    it->subject.ptr = copy;
    it->subject.len = subject.len;
    it->data.ptr = copy + subject.len;
    it->data.len = data.len;
    if (opts && opts->msg_id) {
        b->ids[b->n] = *opts->msg_id;
        it->opts.msg_id = &b->ids[b->n];
    }
    b->n++;
    out->seq = 0;
    out->duplicate = false;
    return OPSTATE_OK;
}

static void lmdb_batch_free(lmdb_batch *b)
{
    size_t i;
    for (i = 0; i < b->n; i++) free((void *)(uintptr_t)b->items[i].subject.ptr);
    free(b->items);
    free(b->ids);
    free(b->results);
}

/* Encodes every event of the input and appends them all in ONE
   transaction: all or nothing (*line: the line that failed). */
static opstate_result lmdb_batch_append(lmdb_backend *lb, const char *prefix, batch_input *in, batch_totals *t,
                                        uint64_t *line, opstate_error *err)
{
    lmdb_batch b;
    opstate_log capture;
    opstate_append_result res;
    opstate_result r = OPSTATE_OK;
    size_t i, n = in->n ? in->n : 1;
    memset(&b, 0, sizeof b);
    memset(&capture, 0, sizeof capture);
    capture.user = &b;
    capture.append = lmdb_capture;
    b.items = (opstate_lmdb_append_item *)calloc(n, sizeof *b.items);
    b.ids = (opstate_id *)calloc(n, sizeof *b.ids);
    b.results = (opstate_append_result *)calloc(n, sizeof *b.results);
    if (!b.items || !b.ids || !b.results) r = opstate_error_set(err, OPSTATE_NO_MEMORY, "batch", 0);
    for (i = 0; r == OPSTATE_OK && i < in->n; i++)
        if ((r = opstate_publish(&capture, text_bytes(prefix), &in->events[i].ev, NULL, NULL, &res, err)) != OPSTATE_OK)
            *line = in->events[i].line;
    if (r == OPSTATE_OK && in->n && (r = opstate_lmdb_log_append_batch(lb->log, b.items, b.n, b.results, err)) != OPSTATE_OK)
        *line = err->offset < in->n ? in->events[err->offset].line : 0;
    for (i = 0; r == OPSTATE_OK && i < in->n; i++) {
        in->events[i].state = b.results[i].duplicate ? BATCH_DUPLICATE : BATCH_PUBLISHED;
        if (b.results[i].seq > t->last_seq) t->last_seq = b.results[i].seq;
    }
    lmdb_batch_free(&b);
    return r;
}

/* publish --batch on an LMDB log: one transaction for the whole input,
   then one sync. */
static int lmdb_batch_publish(log_handle *h, const char *prefix, batch_input *in, batch_totals *t)
{
    lmdb_backend *lb = (lmdb_backend *)h->backend;
    opstate_error err;
    opstate_result r;
    uint64_t line = 0;
    memset(&err, 0, sizeof err);
    if ((r = lmdb_batch_append(lb, prefix, in, t, &line, &err)) != OPSTATE_OK)
        return fail_result(r, &err, "publish --batch of %llu events to %s: nothing appended (failed at line %llu)",
                           (unsigned long long)in->n, quoted(h->uri), (unsigned long long)line);
    if ((r = opstate_lmdb_sync(lb->env, &err)) != OPSTATE_OK) return fail_result(r, &err, "syncing %s", quoted(h->uri));
    return STATUS_OK;
}

static void lmdb_log_close(log_handle *h)
{
    lmdb_backend *b = (lmdb_backend *)h->backend;
    opstate_lmdb_log_close(b->log);
    opstate_lmdb_close(b->env);
    free(b);
}

/* The options only a nats:// log has. */
static int refuse_nats_options(const char *uri, const log_open_options *o)
{
    const char *name = NULL;
    if (o->durable) name = "--durable";
    else if (o->server) name = "--server";
    else if (o->subject_template) name = "--subject-template";
    else if (o->max_messages) name = "--max-messages";
    else if (o->max_per_subject) name = "--max-per-subject";
    else if (o->replicas) name = "--replicas";
    else if (o->ack_wait_ms) name = "--ack-wait-ms";
    if (name) return fail(STATUS_USAGE, "%s: only for nats:// logs, not --log %s", name, quoted(uri));
    return STATUS_OK;
}

/* A writer is about to create a log (kind 's' refused) or a state store
   (kind 'l' refused) in an environment: CONFLICT when it holds only the
   other kind, so a log never lands in a state directory or the reverse. */
opstate_result refuse_other_kind(opstate_lmdb *env, char other, opstate_error *err)
{
    size_t logs = 0, stores = 0;
    opstate_result r = opstate_lmdb_contents(env, &logs, &stores, err);
    if (r != OPSTATE_OK) return r;
    if (other == 's' && stores && !logs)
        return opstate_error_set(err, OPSTATE_CONFLICT, "the directory holds a state store, not a log", 0);
    if (other == 'l' && logs && !stores)
        return opstate_error_set(err, OPSTATE_CONFLICT, "the directory holds a log, not a state store", 0);
    return OPSTATE_OK;
}

int lmdb_log_open(const char *uri, const char *path, const log_open_options *o, log_handle *h)
{
    opstate_lmdb_config ec;
    opstate_lmdb_log_config lc;
    opstate_error err;
    opstate_result r;
    lmdb_backend *b;
    memset(&ec, 0, sizeof ec);
    if (!path[0]) return fail(STATUS_USAGE, "--log %s: the path is empty (use lmdb:PATH)", quoted(uri));
    if (refuse_nats_options(uri, o) != STATUS_OK) return STATUS_USAGE;
    if (!o->create && !path_exists(path, "data.mdb"))
        return fail(STATUS_NOT_FOUND, "--log %s: no log there (%s/data.mdb not found)", quoted(uri), path);
    if (o->create && make_dirs("--log", path) != STATUS_OK) return STATUS_FAILED;
    ec.access = o->create ? OPSTATE_LMDB_CREATE : OPSTATE_LMDB_READ_ONLY; /* only a publisher writes a log */
    if (!(b = (lmdb_backend *)calloc(1, sizeof *b))) return fail(STATUS_FAILED, "--log %s: out of memory", quoted(uri));
    memset(&lc, 0, sizeof lc);
    memset(&err, 0, sizeof err);
    ec.path = path;
    ec.diag = tool_logger();
    ec.durability = o->bulk ? OPSTATE_LMDB_SYNC_NONE : OPSTATE_LMDB_SYNC_FULL;
    if (o->bulk) ec.map_size = (size_t)256 << 20;
    lc.name = LMDB_LOG_NAME;
    r = opstate_lmdb_open(&ec, &b->env, &err);
    if (r == OPSTATE_OK) {
        if (o->create) r = refuse_other_kind(b->env, 's', &err);
        if (r == OPSTATE_OK) r = opstate_lmdb_log_open(b->env, &lc, &b->log, &err);
        if (r != OPSTATE_OK) opstate_lmdb_close(b->env);
    }
    if (r != OPSTATE_OK) {
        free(b);
        return fail_result(r, &err, "--log %s", quoted(uri));
    }
    h->backend = b;
    h->log = opstate_lmdb_log_iface(b->log);
    h->batch_publish = lmdb_batch_publish;
    h->close = lmdb_log_close;
    return STATUS_OK;
}

/* lmdb:PATH -> PATH.state */
int lmdb_default_state_dir(const char *uri, const char *path, const char *server, char *buf)
{
    if (!path[0]) return fail(STATUS_USAGE, "--log %s: the path is empty (use lmdb:PATH)", quoted(uri));
    if (server) return fail(STATUS_USAGE, "--server: only for nats:// logs, not --log %s", quoted(uri));
    if ((size_t)snprintf(buf, PATH_CAP, "%s.state", path) >= PATH_CAP)
        return fail(STATUS_USAGE, "--log %s: path too long", quoted(uri));
    return STATUS_OK;
}
