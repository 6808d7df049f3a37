/* tail.c — opstate tail: the log's events as JSON lines, from a sequence
   or the end, and with --follow as they come. Part of the opstate tool
   (see main.c). */
#include "tool.h"

/* >>tail ---------------------------------------------------------------- */

#define TAIL_BATCH 256

static volatile sig_atomic_t tail_stop; /* SIGINT or SIGTERM while following */

static void on_tail_signal(int sig) { tail_stop = sig; }

/* One message as a JSON line: the event (opstate_event_to_json), or
   {"position":…,"error":"…"} for one that does not decode. */
static void tail_print(const opstate_log_message *m, char **buf, size_t *cap)
{
    opstate_event ev;
    size_t n = 0;
    opstate_result r = opstate_event_decode(m->data.ptr, m->data.len, &ev, NULL);
    if (r == OPSTATE_OK) {
        ev.position = m->position;
        opstate_event_to_json(&ev, NULL, 0, &n);
        if (n > *cap) {
            char *grown = (char *)realloc(*buf, n);
            if (!grown) r = OPSTATE_NO_MEMORY;
            else *buf = grown, *cap = n;
        }
    }
    if (r == OPSTATE_OK && opstate_event_to_json(&ev, *buf, *cap, &n) == OPSTATE_OK) {
        fwrite(*buf, 1, n, stdout);
    } else {
        fputc('{', stdout);
        json_position(stdout, "position", m->position);
        printf(",\"error\":");
        json_string(stdout, opstate_result_str(r));
        fputc('}', stdout);
    }
    fputc('\n', stdout);
}

/* Where tail starts: --from-seq N, else --last N before the end, else the
   first retained event. */
static int tail_start(const args *a, const log_handle *lh, uint64_t *from)
{
    const char *seq = opt(a, "--from-seq"), *last = opt(a, "--last");
    opstate_stream_info info;
    opstate_error err;
    uint64_t n = 0;
    opstate_result r;
    int status = STATUS_OK;
    *from = 1;
    if (seq && last) return fail(STATUS_USAGE, "tail: --from-seq and --last exclude each other");
    if (seq) return parse_u64("--from-seq", seq, 1, UINT64_MAX, from);
    if (!last || (status = parse_u64("--last", last, 0, UINT64_MAX, &n)) != STATUS_OK) return status;
    memset(&err, 0, sizeof err);
    if ((r = lh->log.info(lh->log.user, &info, &err)) != OPSTATE_OK) return fail_result(r, &err, "--log %s", quoted(lh->uri));
    *from = info.last_seq >= n ? info.last_seq - n + 1 : 1;
    return STATUS_OK;
}

/* Prints from `from` until a read finds nothing (or, following, until a
   signal). */
static int tail_run(const args *a, const log_handle *lh, opstate_bytes filter, uint64_t from)
{
    static opstate_log_message msgs[TAIL_BATCH];
    bool follow = flag(a, "--follow");
    char *buf = NULL;
    size_t cap = 0, n, i;
    opstate_error err;
    opstate_result r = OPSTATE_OK;
    while (!tail_stop) {
        memset(&err, 0, sizeof err);
        r = lh->log.read(lh->log.user, filter, from, follow ? 500 * NS_PER_MS : 0, msgs, TAIL_BATCH, &n, &err);
        if (r != OPSTATE_OK || (n == 0 && !follow)) break;
        for (i = 0; i < n; i++) tail_print(&msgs[i], &buf, &cap);
        if (n) from = msgs[n - 1].position.seq + 1;
        fflush(stdout);
    }
    free(buf);
    return r == OPSTATE_OK ? STATUS_OK : fail_result(r, &err, "reading %s", quoted(lh->uri));
}

static int run_tail(const args *a)
{
    log_open_options lo = read_options(NULL);
    log_handle lh;
    char filter[FILTER_CAP];
    opstate_bytes f;
    uint64_t from = 1;
    struct sigaction sa;
    int status = subject_filter(a, filter, &f);
    if (status != STATUS_OK || (status = log_open(a, &lo, &lh)) != STATUS_OK) return status;
    if ((status = check_bucket_filter(&lh, f)) == STATUS_OK && (status = tail_start(a, &lh, &from)) == STATUS_OK) {
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_tail_signal;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        status = tail_run(a, &lh, f, from);
    }
    log_close(&lh);
    return status;
}

static const option_spec tail_options[] = {
    OPT_LOG,
    OPT_PREFIX,
    OPT_FILTERS,
    {"--from-seq", "N", "start at sequence N (default: the first retained event)"},
    {"--last", "N", "start N events before the end"},
    {"--follow", NULL, "keep printing new events until SIGINT or SIGTERM"},
    OPT_END};

const command_spec tail_command = {
    "tail", "tail [--from-seq N | --last N] [--follow] [--scope S | --filter F] [options]",
    "Print the log's events as JSON lines (the shape of opstate_event_to_json)",
    "An event that does not decode is a line {\"position\":...,\"error\":\"...\"}. Without --follow it stops at the end.\n",
    tail_options, 0, 0, run_tail};
