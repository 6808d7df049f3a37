/* logs.c — logs by URI: the backends, opening and closing. Part of the
   opstate tool (see main.c). */
#include "tool.h"

/* >>logs ---------------------------------------------------------------- */

/* Every kind of log the tool knows. */
static const log_backend log_backends[] = {
    {"lmdb:", lmdb_log_open, lmdb_default_state_dir},
    {"nats://", nats_log_open, nats_default_state_dir},
};

const log_backend *find_backend(const char *uri, const char **rest)
{
    size_t i;
    for (i = 0; i < sizeof log_backends / sizeof log_backends[0]; i++) {
        size_t n = strlen(log_backends[i].scheme);
        if (strncmp(uri, log_backends[i].scheme, n) == 0) {
            *rest = uri + n;
            return &log_backends[i];
        }
    }
    fail(STATUS_USAGE, "--log %s: unknown log URI (use lmdb:PATH, nats://HOST[:PORT][,...]/STREAM, nats:///STREAM or "
         "nats://.../kv/BUCKET)",
         quoted(uri));
    return NULL;
}

/* --log, or with --stream NAME: nats:///NAME (no --log) or NAME after a
   --log nats://SERVERS that names no stream (a URI that names one, or is
   not nats://, is left as it is: log_open refuses the pair). */
const char *log_uri_arg(const args *a)
{
    static char composed[PATH_CAP];
    const char *uri = opt(a, "--log"), *stream = opt(a, "--stream");
    if (!stream) return uri ? uri : DEFAULT_LOG_URI;
    if (!uri) uri = "nats://";
    if (strncmp(uri, "nats://", 7) != 0 || strchr(uri + 7, '/')) return uri;
    snprintf(composed, sizeof composed, "%s/%s", uri, stream);
    return composed;
}

int log_open(const args *a, const log_open_options *o, log_handle *h)
{
    const char *rest;
    const log_backend *b;
    log_open_options with_server = *o;
    memset(h, 0, sizeof *h);
    h->uri = log_uri_arg(a);
    if (opt(a, "--stream") && (strncmp(h->uri, "nats://", 7) != 0 || strcmp(strrchr(h->uri, '/') + 1, opt(a, "--stream"))))
        return fail(STATUS_USAGE, "--stream %s: only with a nats://SERVERS log that names no stream, or no --log (not --log %s)",
                    quoted(opt(a, "--stream")), quoted(opt(a, "--log")));
    with_server.server = opt(a, "--server");
    with_server.subject_template = opt(a, "--subject-template");
    if (!(b = find_backend(h->uri, &rest))) return STATUS_USAGE;
    return b->open(h->uri, rest, &with_server, h);
}

void log_close(log_handle *h)
{
    if (h->close) h->close(h);
    h->close = NULL;
}

/* The options of a command that reads the log (durable: consume --durable). */
log_open_options read_options(const char *durable)
{
    log_open_options o;
    memset(&o, 0, sizeof o);
    o.durable = durable;
    return o;
}

/* A KV bucket's events all have scope BUCKET and kind kv: it takes no
   subject filter (a read of it ignores one). */
int check_bucket_filter(const log_handle *h, opstate_bytes filter)
{
    if (h->bucket && filter.len)
        return fail(STATUS_USAGE, "--log %s: a KV bucket takes no --scope or --filter (its keys are events of scope "
                    "BUCKET, kind kv)", quoted(h->uri));
    return STATUS_OK;
}
