/* publish.c — opstate publish: one event from flags, or many with --batch
   (every line of stdin checked before anything is appended). Part of the
   opstate tool (see main.c). */
#include "tool.h"

/* >>publish ------------------------------------------------------------- */

/* 8 bytes of entropy for an id, from a pool refilled by getrandom(). */
static int next_entropy(uint8_t out[8])
{
    static uint8_t pool[4096];
    static size_t used = sizeof pool;
    if (used == sizeof pool) {
        size_t got = 0;
        while (got < sizeof pool) {
            ssize_t n = getrandom(pool + got, sizeof pool - got, 0);
            if (n < 0 && errno != EINTR) return fail(STATUS_FAILED, "getrandom: %s", strerror(errno));
            if (n > 0) got += (size_t)n;
        }
        used = 0;
    }
    memcpy(out, pool + used, 8);
    used += 8;
    return STATUS_OK;
}

static int time_ordered_id(opstate_id *id)
{
    uint8_t entropy[8];
    int status = next_entropy(entropy);
    if (status == STATUS_OK && opstate_id_time_ordered(wallclock_ns(NULL), entropy, id) != OPSTATE_OK)
        status = fail(STATUS_FAILED, "the clock is before 1970: cannot make a time-ordered id");
    return status;
}

/* One event's fields, checked; `label` prefixes what names each input
   ("--" for flags, "stdin line N: " for --batch). */
static int event_from_fields(const char *label, const char *scope, const char *kind, const char *key,
                             const char *op, bool allow_app, opstate_event *ev)
{
    char name[64];
    int status;
    snprintf(name, sizeof name, "%sscope", label);
    if ((status = check_token(name, scope, "scope")) != STATUS_OK) return status;
    snprintf(name, sizeof name, "%skind", label);
    if ((status = check_token(name, kind, "kind")) != STATUS_OK) return status;
    snprintf(name, sizeof name, "%skey", label);
    if (key && (status = check_key(name, key)) != STATUS_OK) return status;
    snprintf(name, sizeof name, "%sop", label);
    if ((status = parse_op(name, op, allow_app, &ev->op)) != STATUS_OK) return status;
    ev->scope = text_bytes(scope);
    ev->kind = text_bytes(kind);
    ev->key = text_bytes(key);
    return STATUS_OK;
}

static void subject_text(const char *prefix, const opstate_event *ev, char *buf, size_t cap)
{
    size_t n = 0;
    if (opstate_subject_build(prefix, strlen(prefix), ev->scope, ev->kind, ev->key, buf, cap - 1, &n, NULL) != OPSTATE_OK)
        n = 0;
    buf[n] = '\0';
}

/* Appends ev under the prefix; *out says where (or that it was a repeat). */
static int append_event(const log_handle *h, const char *prefix, const opstate_event *ev,
                        const opstate_append_options *opts, opstate_append_result *out)
{
    opstate_error err;
    char subject[FILTER_CAP];
    opstate_result r;
    memset(&err, 0, sizeof err);
    r = opstate_publish(&h->log, text_bytes(prefix), ev, opts, NULL, out, &err);
    if (r == OPSTATE_OK) return STATUS_OK;
    subject_text(prefix, ev, subject, sizeof subject);
    if (r == OPSTATE_CONFLICT)
        return fail(STATUS_FAILED,
                    "--expect-seq %llu: conflict on %s: its last message is not at sequence %llu "
                    "(another writer got there first; re-read and retry)",
                    (unsigned long long)opts->last_subject_seq, quoted(subject), (unsigned long long)opts->last_subject_seq);
    return fail_result(r, &err, "publishing to %s (subject %s)", quoted(h->uri), quoted(subject));
}

/* Data from --data STR, --data - (stdin) or --data-file F. */
static int event_data(const args *a, uint8_t **owned, opstate_bytes *data)
{
    static const char *const one_of[] = {"--data", "--data-file", NULL};
    const char *text = opt(a, "--data"), *file = opt(a, "--data-file");
    FILE *f;
    int status = exclusive(a, one_of);
    *owned = NULL;
    data->ptr = NULL;
    data->len = 0;
    if (status != STATUS_OK) return status;
    if (text && strcmp(text, "-") != 0) {
        *data = text_bytes(text);
        if (data->len > OPSTATE_MAX_DATA_LEN) return fail(STATUS_USAGE, "--data: larger than %u bytes", (unsigned)OPSTATE_MAX_DATA_LEN);
        return STATUS_OK;
    }
    if (!text && !file) return STATUS_OK;
    if (!(f = text ? stdin : fopen(file, "rb")))
        return fail(errno == ENOENT ? STATUS_NOT_FOUND : STATUS_FAILED, "--data-file %s: %s", quoted(file), strerror(errno));
    status = read_all(text ? "--data -" : "--data-file", f, OPSTATE_MAX_DATA_LEN, owned, &data->len);
    if (f != stdin) fclose(f);
    data->ptr = *owned;
    return status;
}

/* An event id given as text; `label` names the input. */
static int parse_id(const char *label, const char *text, opstate_id *out)
{
    if (opstate_id_from_text(text, strlen(text), out, NULL) != OPSTATE_OK)
        return fail(STATUS_USAGE, "%s %s: expected a lowercase UUID like 0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", label,
                    quoted(text));
    return STATUS_OK;
}

/* --id TEXT or a fresh time-ordered id; --time T / --no-time. */
static int event_identity(const args *a, opstate_event *ev)
{
    static const char *const one_of[] = {"--time", "--no-time", NULL};
    const char *id = opt(a, "--id"), *when = opt(a, "--time");
    int status = exclusive(a, one_of);
    if (status != STATUS_OK) return status;
    if (id && (status = parse_id("--id", id, &ev->id)) != STATUS_OK) return status;
    if (!id && (status = time_ordered_id(&ev->id)) != STATUS_OK) return status;
    ev->has_time = !flag(a, "--no-time");
    ev->time = wallclock_ns(NULL);
    if (when) status = parse_time("--time", when, &ev->time);
    return status;
}

/* The log options of publish: its prefix, and the limits of a NATS
   stream it creates (an existing one must have them). */
static int publish_log_options(const args *a, bool bulk, log_open_options *lo)
{
    const char *max = opt(a, "--max-messages"), *per = opt(a, "--max-per-subject"), *replicas = opt(a, "--replicas");
    int status = check_prefix(prefix_arg(a));
    memset(lo, 0, sizeof *lo);
    lo->create = true;
    lo->bulk = bulk;
    lo->prefix = prefix_arg(a);
    if (status == STATUS_OK && max) status = parse_u64("--max-messages", max, 1, INT64_MAX, &lo->max_messages);
    if (status == STATUS_OK && per) status = parse_u64("--max-per-subject", per, 1, INT64_MAX, &lo->max_per_subject);
    if (status == STATUS_OK && replicas) status = parse_u64("--replicas", replicas, 1, 5, &lo->replicas);
    return status;
}

static int publish_one(const args *a)
{
    const char *scope = opt(a, "--scope"), *kind = opt(a, "--kind"), *expect = opt(a, "--expect-seq");
    opstate_event ev;
    opstate_append_options ao;
    opstate_append_result res;
    log_open_options lo;
    log_handle h;
    uint8_t *owned = NULL;
    char idtext[OPSTATE_ID_TEXT_LEN + 1] = {0}, subject[FILTER_CAP];
    int status = STATUS_OK;
    memset(&ev, 0, sizeof ev);
    memset(&ao, 0, sizeof ao);
    if (!scope || !kind || !opt(a, "--op"))
        return fail(STATUS_USAGE, "publish: --scope, --kind and --op are required (or --batch; see opstate publish --help)");
    if ((status = event_from_fields("--", scope, kind, opt(a, "--key"), opt(a, "--op"), flag(a, "--allow-app-op"), &ev)) !=
            STATUS_OK ||
        (status = publish_log_options(a, false, &lo)) != STATUS_OK || (status = event_identity(a, &ev)) != STATUS_OK ||
        (expect && (status = parse_u64("--expect-seq", expect, 0, UINT64_MAX, &ao.last_subject_seq)) != STATUS_OK) ||
        (status = event_data(a, &owned, &ev.data)) != STATUS_OK || (status = log_open(a, &lo, &h)) != STATUS_OK) {
        free(owned);
        return status;
    }
    ao.expect_last_subject_seq = expect != NULL;
    status = append_event(&h, lo.prefix, &ev, &ao, &res);
    log_close(&h);
    free(owned);
    if (status != STATUS_OK) return status;
    opstate_id_to_text(&ev.id, idtext);
    subject_text(lo.prefix, &ev, subject, sizeof subject);
    if (res.duplicate) printf("duplicate: id %s is already at sequence %llu; not appended again\n", idtext, (unsigned long long)res.seq);
    else printf("published %s at sequence %llu (id %s)\n", subject, (unsigned long long)res.seq, idtext);
    return STATUS_OK;
}

/* publish --batch. The whole input is read and every line checked before
   anything is appended. A line without id= gets an id derived from the
   input's digest and the line number: the same input, byte for byte, is
   the same events, so publishing it again is deduplicated by the log. */

#define BATCH_INPUT_MAX ((size_t)1 << 31) /* bytes of stdin publish --batch reads */
#define BATCH_LINE_FORM "[id=UUID] [time=T] <scope> <kind> <key> <op> [data]"

/* What every line of one input shares. */
typedef struct batch_context {
    const char *prefix;
    opstate_id digest; /* of the whole input */
    int64_t now;       /* the time of events without time= */
    bool allow_app;    /* --allow-app-op: application ops are let through */
} batch_context;

/* A digest of the whole input: the content id of an event holding it. */
static opstate_id batch_digest(const uint8_t *bytes, size_t len)
{
    opstate_event ev;
    memset(&ev, 0, sizeof ev);
    ev.scope = text_bytes("opstate-batch-input");
    ev.data.ptr = bytes;
    ev.data.len = len;
    return opstate_id_from_content(&ev);
}

/* The id of line `number` of an input without id=: the content id of an
   event naming the input's digest and the line number (so equal lines
   stay distinct events, and other inputs get other ids). */
static opstate_id derived_id(const opstate_id *digest, uint64_t number)
{
    char key[OPSTATE_ID_TEXT_LEN + 24];
    opstate_event ev;
    memset(&ev, 0, sizeof ev);
    opstate_id_to_text(digest, key);
    snprintf(key + OPSTATE_ID_TEXT_LEN, sizeof key - OPSTATE_ID_TEXT_LEN, "/%llu", (unsigned long long)number);
    ev.scope = text_bytes("opstate-batch-line");
    ev.key = text_bytes(key);
    return opstate_id_from_content(&ev);
}

/* The next blank-separated field of *p, cut in place (NULL: none left);
   *p moves past the one blank after it. */
static char *next_field(char **p)
{
    char *start = *p + strspn(*p, " \t"), *end = start + strcspn(start, " \t");
    if (end == start) return NULL;
    *p = *end ? end + 1 : end;
    *end = '\0';
    return start;
}

/* The event can go under the prefix: its subject and encoding are within
   their limits (checked before anything is sent). */
static int check_publishable(const char *label, const char *prefix, const opstate_event *ev)
{
    opstate_error err;
    size_t n = 0;
    opstate_result r;
    memset(&err, 0, sizeof err);
    r = opstate_subject_build(prefix, strlen(prefix), ev->scope, ev->kind, ev->key, NULL, 0, &n, &err);
    if (r == OPSTATE_OK) r = opstate_event_encode(ev, NULL, 0, &n, &err);
    return r == OPSTATE_OK ? STATUS_OK : fail_result(r, &err, "%sthe event cannot be published", label);
}

/* id= or the derived id; time= or the batch's time. */
static int batch_identity(const char *label, const char *id, const char *when, uint64_t number,
                          const batch_context *c, opstate_event *ev)
{
    char name[64];
    int status = STATUS_OK;
    ev->has_time = true;
    ev->time = c->now;
    snprintf(name, sizeof name, "%sid", label);
    if (id) status = parse_id(name, id, &ev->id);
    else ev->id = derived_id(&c->digest, number);
    snprintf(name, sizeof name, "%stime", label);
    if (status == STATUS_OK && when) status = parse_time(name, when, &ev->time);
    return status;
}

/* One line, BATCH_LINE_FORM (key - for none, data the rest of the line),
   into *out; *is_event is false for a blank line or a # comment. */
static int batch_line(char *line, uint64_t number, const batch_context *c, batch_event *out, bool *is_event)
{
    char label[48], *p = line, *field[4];
    const char *id = NULL, *when = NULL;
    size_t n = strlen(line);
    int i, status;
    while (n && line[n - 1] == '\r') line[--n] = '\0';
    *is_event = false;
    if (line[strspn(line, " \t")] == '\0' || line[0] == '#') return STATUS_OK;
    snprintf(label, sizeof label, "stdin line %llu: ", (unsigned long long)number);
    while ((field[0] = next_field(&p)) && (strncmp(field[0], "id=", 3) == 0 || strncmp(field[0], "time=", 5) == 0)) {
        const char **slot = field[0][0] == 'i' ? &id : &when;
        if (*slot) return fail(STATUS_USAGE, "%s%s given twice", label, field[0][0] == 'i' ? "id=" : "time=");
        *slot = strchr(field[0], '=') + 1;
    }
    for (i = 1; i < 4; i++) field[i] = field[i - 1] ? next_field(&p) : NULL;
    if (!field[3]) return fail(STATUS_USAGE, "%sexpected \"" BATCH_LINE_FORM "\" (key - for none)", label);
    if (strcmp(field[2], "-") == 0) field[2] = NULL;
    memset(out, 0, sizeof *out);
    out->line = number;
    if ((status = event_from_fields(label, field[0], field[1], field[2], field[3], c->allow_app, &out->ev)) != STATUS_OK ||
        (status = batch_identity(label, id, when, number, c, &out->ev)) != STATUS_OK)
        return status;
    out->ev.data = text_bytes(p);
    *is_event = true;
    return check_publishable(label, c->prefix, &out->ev);
}

/* Reads all of stdin and parses every line: the first bad one ends it
   (exit 2) before anything is appended. */
int batch_read(const char *prefix, bool allow_app_ops, batch_input *in)
{
    batch_context c;
    char *p, *end, *stop;
    uint64_t number = 0;
    bool is_event;
    int status = read_all("publish --batch: stdin", stdin, BATCH_INPUT_MAX, &in->bytes, &in->len);
    if (status != STATUS_OK) return status;
    c.prefix = prefix;
    c.allow_app = allow_app_ops;
    c.digest = batch_digest(in->bytes, in->len);
    c.now = wallclock_ns(NULL);
    stop = (char *)in->bytes + in->len;
    for (p = (char *)in->bytes; p < stop; p++) number += *p == '\n';
    if (!(in->events = (batch_event *)calloc(number + 1, sizeof *in->events)))
        return fail(STATUS_FAILED, "publish --batch: out of memory for %llu lines", (unsigned long long)number + 1);
    for (p = (char *)in->bytes, number = 1; status == STATUS_OK && p < stop; p = end + 1, number++) {
        if (!(end = (char *)memchr(p, '\n', (size_t)(stop - p)))) end = stop;
        *end = '\0'; /* read_all leaves a spare byte after the input */
        status = batch_line(p, number, &c, &in->events[in->n], &is_event);
        if (is_event && status == STATUS_OK) in->n++;
    }
    return status;
}

/* Counts the events by state. */
static void batch_count(const batch_input *in, batch_totals *t)
{
    size_t i;
    for (i = 0; i < in->n; i++) {
        int state = in->events[i].state;
        if (state == BATCH_PUBLISHED) t->published++;
        else if (state == BATCH_DUPLICATE) t->duplicates++;
        else if (state == BATCH_REFUSED) t->refused++;
        else t->unacked++;
    }
}

static void print_batch_summary(const batch_totals *t, int64_t started)
{
    double seconds = (double)(monotonic_ns() - started) / 1e9;
    printf("published %llu events (%llu duplicates, %llu not acknowledged, %llu refused) in %.2f s (%.0f events/s); "
           "last sequence %llu\n",
           (unsigned long long)t->published, (unsigned long long)t->duplicates, (unsigned long long)t->unacked,
           (unsigned long long)t->refused, seconds, seconds > 0 ? (double)t->published / seconds : 0.0,
           (unsigned long long)t->last_seq);
}

/* The one error line of a batch with events not acknowledged or refused. */
static int batch_failure(const char *uri, const batch_totals *t)
{
    char unacked[300] = "", stopped[100] = "", refused[200] = "", id[OPSTATE_ID_TEXT_LEN + 1] = {0}, code[40] = "";
    if (!t->unacked && !t->refused) return STATUS_OK;
    if (t->stopped_at)
        snprintf(stopped, sizeof stopped, "; sending stopped at line %llu: %s", (unsigned long long)t->stopped_at,
                 opstate_result_str(t->stop_reason));
    if (t->unacked)
        snprintf(unacked, sizeof unacked, "%llu events not acknowledged (they may or may not be in the log: publish the "
                 "same input, or the --unacked file, again; their ids make repeats duplicates)%s",
                 (unsigned long long)t->unacked, stopped);
    if (t->first_refused) {
        opstate_id_to_text(&t->first_refused->ev.id, id);
        if (t->js_error) snprintf(code, sizeof code, ", JetStream error %ld", t->js_error);
        snprintf(refused, sizeof refused, "%s%llu events refused; the first, line %llu (id %s): %s%s", t->unacked ? "; " : "",
                 (unsigned long long)t->refused, (unsigned long long)t->first_refused->line, id,
                 opstate_result_str(t->refusal), code);
    }
    return fail(STATUS_FAILED, "publish --batch to %s: %s%s", quoted(uri), unacked, refused);
}

/* One event as a batch line with its id and time given, so that
   publishing the line again sends the same event. */
static void write_batch_line(FILE *f, const batch_event *e)
{
    char id[OPSTATE_ID_TEXT_LEN + 1] = {0};
    const opstate_event *ev = &e->ev;
    opstate_id_to_text(&ev->id, id);
    fprintf(f, "id=%s time=%lldns %.*s %.*s ", id, (long long)ev->time, (int)ev->scope.len, (const char *)ev->scope.ptr,
            (int)ev->kind.len, (const char *)ev->kind.ptr);
    if (ev->key.len) fwrite(ev->key.ptr, 1, ev->key.len, f);
    else fputc('-', f);
    if (ev->op == OPSTATE_OP_PUT) fputs(" put", f);
    else if (ev->op == OPSTATE_OP_DELETE) fputs(" delete", f);
    else fprintf(f, " %lu", (unsigned long)ev->op);
    if (ev->data.len) {
        fputc(' ', f);
        fwrite(ev->data.ptr, 1, ev->data.len, f);
    }
    fputc('\n', f);
}

/* --unacked FILE: every line not known to be in the log (not
   acknowledged, not sent, refused), with its id and time. */
static int write_unacked(const char *path, FILE *f, const batch_input *in)
{
    size_t i;
    bool bad;
    for (i = 0; i < in->n; i++)
        if (in->events[i].state != BATCH_PUBLISHED && in->events[i].state != BATCH_DUPLICATE)
            write_batch_line(f, &in->events[i]);
    bad = ferror(f) != 0;
    if (fclose(f) != 0) bad = true;
    return bad ? fail(STATUS_FAILED, "--unacked %s: cannot write it: %s", quoted(path), strerror(errno)) : STATUS_OK;
}

/* The options of publish --batch (none of the single event's). */
static int batch_options(const args *a, log_open_options *lo)
{
    static const char *const single[] = {"--scope", "--kind", "--key", "--op", "--data", "--data-file",
                                         "--id", "--expect-seq", "--time", "--no-time", NULL};
    const char *wait = opt(a, "--ack-wait-ms");
    int i, status = publish_log_options(a, true, lo);
    for (i = 0; single[i] && status == STATUS_OK; i++)
        if (flag(a, single[i])) status = fail(STATUS_USAGE, "publish: --batch and %s exclude each other (a line gives each event)", single[i]);
    if (status == STATUS_OK && wait) status = parse_u64("--ack-wait-ms", wait, 1, INT32_MAX, &lo->ack_wait_ms);
    return status;
}

/* Publishes the parsed input; the summary on stdout, one error line for
   events not acknowledged or refused. */
static int batch_run(const args *a, const log_open_options *lo, batch_input *in, int64_t started)
{
    batch_totals t;
    log_handle h;
    int status = log_open(a, lo, &h);
    memset(&t, 0, sizeof t);
    if (status != STATUS_OK) return status;
    status = h.batch_publish(&h, lo->prefix, in, &t);
    log_close(&h);
    if (status != STATUS_OK) return status;
    batch_count(in, &t);
    print_batch_summary(&t, started);
    return batch_failure(h.uri, &t);
}

/* publish --batch: stdin is read and checked first, then --unacked FILE
   opened (so FILE may be the input), then the log. */
static int publish_batch(const args *a)
{
    const char *unacked_path = opt(a, "--unacked");
    log_open_options lo;
    batch_input in;
    FILE *unacked = NULL;
    int64_t started = monotonic_ns();
    int status = batch_options(a, &lo);
    memset(&in, 0, sizeof in);
    if (status == STATUS_OK) status = batch_read(lo.prefix, flag(a, "--allow-app-op"), &in);
    if (status == STATUS_OK && unacked_path && !(unacked = fopen(unacked_path, "w")))
        status = fail(errno == ENOENT ? STATUS_NOT_FOUND : STATUS_FAILED, "--unacked %s: %s", quoted(unacked_path),
                      strerror(errno));
    if (status == STATUS_OK) status = batch_run(a, &lo, &in, started);
    if (unacked) {
        int written = write_unacked(unacked_path, unacked, &in);
        if (status == STATUS_OK) status = written;
    }
    free(in.events);
    free(in.bytes);
    return status;
}

static int run_publish(const args *a)
{
    static const char *const batch_only[] = {"--unacked", "--ack-wait-ms", NULL};
    int i;
    if (flag(a, "--batch")) return publish_batch(a);
    for (i = 0; batch_only[i]; i++)
        if (flag(a, batch_only[i])) return fail(STATUS_USAGE, "publish: %s goes with --batch", batch_only[i]);
    return publish_one(a);
}

static const option_spec publish_options[] = {
    OPT_LOG,
    OPT_PREFIX,
    {"--scope", "SCOPE", "the event's scope: one subject token (required)"},
    {"--kind", "KIND", "the entity kind: one subject token (required)"},
    {"--key", "KEY", "the key, any text up to 1024 bytes (optional)"},
    {"--op", "OP", "put or delete (required); an application op 16..4294967295 with --allow-app-op"},
    {"--allow-app-op", NULL, "let application ops through (consume's KV apply stops at them; a custom apply reads them)"},
    {"--data", "TEXT", "the payload; - reads it from stdin"},
    {"--data-file", "FILE", "the payload from a file"},
    {"--id", "UUID", "event id (default: a fresh time-ordered id); a repeat is dropped as duplicate"},
    {"--expect-seq", "N", "append only if the subject's last message is at sequence N (0: none yet)"},
    {"--time", "T", "event time (default: now)"},
    {"--no-time", NULL, "publish without an event time"},
    {"--batch", NULL, "read events from stdin, one per line: " BATCH_LINE_FORM},
    {"--unacked", "FILE", "--batch: write the lines not known to be appended to FILE, ids given (for the retry)"},
    {"--max-messages", "N", "nats: the stream keeps at most N messages (made so; an existing one must match)"},
    {"--max-per-subject", "N", "nats: the stream keeps at most N messages per subject (likewise)"},
    {"--replicas", "N", "nats: a stream publish makes has N replicas, 1..5 (default 1; an existing one is kept)"},
    {"--ack-wait-ms", "MS", "nats, --batch: wait this long for each 20,000 events' acknowledgments (default 30000)"},
    OPT_END};

const command_spec publish_command = {
    "publish",
    "publish --scope S --kind K --op OP [--key K] [--data TEXT|-|--data-file F] [options]\n"
    "       opstate publish --batch [--log URI] [--prefix P] < lines",
    "Append one event to the log, or many with --batch",
    "--batch reads all of stdin, one event a line:\n"
    "    " BATCH_LINE_FORM "\n"
    "(key - for none, data the rest of the line; a first token id=... or time=... is never a scope;\n"
    "blank lines and # comments are skipped) and checks every line before it appends anything: a bad\n"
    "line exits 2 naming it, nothing appended. A line without id= gets an id derived from a SHA-256\n"
    "digest of the whole input and its line number: the same input, byte for byte, is the same events,\n"
    "so publishing it again appends nothing twice. The log drops a repeated id within its duplicate\n"
    "window (JetStream: the stream's Duplicates, 2 min by default; lmdb: the ids of its last 100,000\n"
    "messages); beyond it only a consumer's recent-id window drops it. Another input (a byte changed,\n"
    "a line added) gets other ids: give id= to control them. Lines without time= get the time the\n"
    "input was read (the derived id does not depend on it).\n"
    "On an lmdb: log the whole input is one transaction: all or nothing. On a nats:// log it goes out\n"
    "asynchronously, 20,000 events at a time, each window's acknowledgments awaited (--ack-wait-ms);\n"
    "every event ends published, duplicate, refused or not acknowledged (it may or may not be in the\n"
    "stream; sending stops after that window), and the counts are printed. Refused or unacknowledged\n"
    "events exit 1; --unacked FILE gets their lines with id= and time=, so publishing FILE (it may be\n"
    "the input itself) sends the same events again.\n"
    "An --expect-seq conflict exits 1. On a nats:// log, publish first ensures the stream: subjects\n"
    "\"<prefix>.>\" and the limits and replicas given. An existing stream is used as it is, never\n"
    "changed; it is refused (exit 1) only when its subjects do not cover \"<prefix>.>\", its retention\n"
    "is not limits, or a limit given here differs.\n",
    publish_options, 0, 0, run_publish};
