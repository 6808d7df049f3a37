/* consume.c — opstate consume: the long-running consumer that folds the log
   into a state store, until caught up or stopped. Part of the opstate tool
   (see main.c). */
#include "tool.h"

/* >>consume ------------------------------------------------------------- */

static volatile sig_atomic_t stop_signal; /* the signal that asked to stop */

static void on_stop_signal(int sig) { stop_signal = sig; }

static void install_stop_handlers(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: a sleep ends at once */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

/* Everything consume was asked to do, from the flags. */
typedef struct consume_plan {
    opstate_consumer_config cfg;
    char filter[FILTER_CAP];
    bool exit_when_caught_up, read_through;
    uint64_t max_rate;   /* events per second, 0: unlimited */
    const char *durable; /* --durable NAME, or NULL */
    bool remote;         /* the log is a server's: ride out its timeouts */
} consume_plan;

static int consume_mode(const args *a, opstate_restore_mode *mode)
{
    static const char *const one_of[] = {"--keep-state", "--clear-state", NULL};
    int status = exclusive(a, one_of);
    *mode = flag(a, "--keep-state") ? OPSTATE_MODE_KEEP : flag(a, "--clear-state") ? OPSTATE_MODE_CLEAR : OPSTATE_MODE_AUTO;
    return status;
}

/* --flush-interval-ms, --flush-every, --max-rate. */
static int consume_pacing(const args *a, consume_plan *p)
{
    const char *interval = opt(a, "--flush-interval-ms"), *every = opt(a, "--flush-every"), *rate = opt(a, "--max-rate");
    uint64_t ms = 1000;
    int status = STATUS_OK;
    if (interval) status = parse_u64("--flush-interval-ms", interval, 0, 86400000, &ms);
    if (status == STATUS_OK && every) status = parse_u64("--flush-every", every, 0, UINT64_MAX, &p->cfg.flush_every);
    if (status == STATUS_OK && rate) status = parse_u64("--max-rate", rate, 1, 1000000000, &p->max_rate);
    p->cfg.flush_interval_ns = ms ? (int64_t)ms * NS_PER_MS : -1; /* 0: not by time */
    return status;
}

/* --timestamp-fallback, --poison, --no-resync. */
static int consume_policies(const args *a, consume_plan *p)
{
    static const char *const fallbacks[] = {"wallclock", "skip", NULL};
    static const char *const poisons[] = {"stop", "skip", NULL};
    const char *fallback = opt(a, "--timestamp-fallback"), *poison = opt(a, "--poison");
    int choice = 0, status = STATUS_OK;
    if (fallback && (status = parse_choice("--timestamp-fallback", fallback, fallbacks, &choice)) == STATUS_OK)
        p->cfg.time_fallback = choice ? OPSTATE_TIME_FALLBACK_SKIP : OPSTATE_TIME_FALLBACK_WALLCLOCK;
    if (status == STATUS_OK && poison && (status = parse_choice("--poison", poison, poisons, &choice)) == STATUS_OK)
        p->cfg.poison = choice ? OPSTATE_POISON_SKIP : OPSTATE_POISON_STOP;
    p->cfg.no_resync = flag(a, "--no-resync");
    return status;
}

static int consume_parse(const args *a, consume_plan *p)
{
    int status;
    memset(p, 0, sizeof *p);
    if ((status = parse_start(a, &p->cfg.start)) != STATUS_OK || (status = consume_mode(a, &p->cfg.mode)) != STATUS_OK ||
        (status = consume_pacing(a, p)) != STATUS_OK || (status = consume_policies(a, p)) != STATUS_OK ||
        (status = subject_filter(a, p->filter, &p->cfg.filter)) != STATUS_OK)
        return status;
    p->durable = opt(a, "--durable");
    if (p->durable && (status = check_name("--durable", p->durable, "a durable consumer name")) != STATUS_OK) return status;
    p->cfg.diag = tool_logger();
    p->cfg.schema.version = STATE_SCHEMA_VERSION;
    p->cfg.clock = wallclock_ns;
    p->exit_when_caught_up = flag(a, "--exit-when-caught-up");
    p->read_through = flag(a, "--read-through");
    verbose = flag(a, "--verbose");
    return STATUS_OK;
}

/* The one line that says what opening decided and why. */
static void print_decision(const opstate_consumer *c, const opstate_snapshot_meta *stored, const opstate_stream_info *info)
{
    const opstate_consumer_status *st = opstate_consumer_get_status(c);
    const opstate_restore_decision *d = &st->decision;
    char was[120], now[120], extra[120] = "";
    position_text(stored ? stored->position : opstate_consumer_position(c), was, sizeof was);
    position_text(opstate_consumer_position(c), now, sizeof now);
    if (d->resync) snprintf(extra, sizeof extra, "; resync: %llu evicted events, %llu keys removed", (unsigned long long)d->gap,
                            (unsigned long long)st->resync_removed);
    else if (d->gap) snprintf(extra, sizeof extra, "; gap: %llu events skipped", (unsigned long long)d->gap);
    printf("decision: %s [%s] %s; stored position %s%s; resume: %s; position %s; log seq %llu..%llu%s\n",
           d->restore ? "restore" : "clear", opstate_reason_name(d->reason), opstate_reason_str(d->reason),
           stored ? was : "none", stored ? (d->restore ? " restored" : " discarded") : "",
           opstate_resume_state_str(st->resume.state), now, (unsigned long long)info->first_seq,
           (unsigned long long)info->last_seq, extra);
    fflush(stdout);
}

/* Reads what is stored (for the decision line), then opens the consumer. */
static int consumer_open(consume_plan *p, const log_handle *lh, state_handle *sh, opstate_consumer **c)
{
    opstate_snapshot_meta stored;
    opstate_stream_info info;
    opstate_error err;
    opstate_result r, has;
    memset(&err, 0, sizeof err);
    p->cfg.log = lh->log;
    p->cfg.store = opstate_lmdb_store_iface(sh->store);
    has = p->cfg.store.read_meta(p->cfg.store.user, &stored, &err);
    if (has != OPSTATE_OK && has != OPSTATE_NOT_FOUND)
        return fail_result(has, &err, "%s %s, store %s", sh->label, quoted(sh->dir), quoted(sh->name));
    if ((r = lh->log.info(lh->log.user, &info, &err)) != OPSTATE_OK) return fail_result(r, &err, "--log %s", quoted(lh->uri));
    if ((r = opstate_consumer_open(&p->cfg, c, &err)) != OPSTATE_OK)
        return fail_result(r, &err, "opening the consumer (log %s, state %s)", quoted(lh->uri), quoted(sh->dir));
    print_decision(*c, has == OPSTATE_OK ? &stored : NULL, &info);
    return STATUS_OK;
}

/* Why an event is poison: it did not decode, or apply rejected it. */
static const char *poison_reason(opstate_result reason)
{
    if (reason == OPSTATE_POISON) return "the KV apply rejected it (it takes put and delete only, keys up to 1024 bytes)";
    return opstate_result_str(reason);
}

/* Under --poison skip: one warning per poll that skipped something. */
static void warn_skipped_poison(const opstate_consumer *c, uint64_t *seen)
{
    const opstate_consumer_status *st = opstate_consumer_get_status(c);
    if (st->poison_count == *seen) return;
    library_error[0] = '\0'; /* its "poison event ... skipped" line: said here */
    warning("skipped %llu poison event(s); the last at sequence %llu: %s", (unsigned long long)(st->poison_count - *seen),
            (unsigned long long)st->last_poison.position.seq, poison_reason(st->last_poison.reason));
    *seen = st->poison_count;
}

static int fail_poison(const opstate_consumer *c)
{
    const opstate_poison *pz = &opstate_consumer_get_status(c)->last_poison;
    char id[OPSTATE_ID_TEXT_LEN + 1] = "undecodable";
    static const opstate_id zero;
    library_error[0] = '\0'; /* the library's line says the same */
    if (memcmp(&pz->id, &zero, sizeof zero) != 0) opstate_id_to_text(&pz->id, id);
    id[OPSTATE_ID_TEXT_LEN] = '\0';
    return fail(STATUS_POISON, "stopped at a poison event: sequence %llu (id %s): %s; state kept up to sequence %llu "
                "(--poison skip records and skips it)",
                (unsigned long long)pz->position.seq, id, poison_reason(pz->reason),
                (unsigned long long)opstate_consumer_position(c).seq);
}

/* Sleeps as long as --max-rate needs for `applied` events since `started`. */
static void throttle(const consume_plan *p, uint64_t applied, int64_t started)
{
    int64_t due;
    if (!p->max_rate) return;
    due = started + (int64_t)((double)applied / (double)p->max_rate * 1e9);
    sleep_ns(due - monotonic_ns());
}

#define POLL_BUDGET_NS (100 * NS_PER_MS)
#define IDLE_WAIT_NS (20 * NS_PER_MS)
#define APPLY_RETRIES 50
#define REMOTE_RETRY_NS (120 * NS_PER_SECOND) /* a server restart, a network blip */

/* Failures consume rides out, in a row. */
typedef struct retry_state {
    uint32_t apply_failures;
    int64_t remote_failing_since; /* 0: the log answers */
} retry_state;

/* Whether to poll again after r: APPLY_FAILED a few times, and a remote
   log's TIMEOUT or IO for up to REMOTE_RETRY_NS (warned once) unless the
   server refused the request (a JetStream error code: no use retrying). */
static bool retry_after(const consume_plan *p, opstate_result r, const opstate_error *err, retry_state *rs)
{
    int64_t now = monotonic_ns();
    if (r == OPSTATE_APPLY_FAILED && ++rs->apply_failures <= APPLY_RETRIES) {
        sleep_ns(100 * NS_PER_MS);
        return true;
    }
    if (!p->remote || (r != OPSTATE_TIMEOUT && r != OPSTATE_IO) || err->dep_detail) return false;
    if (!rs->remote_failing_since) {
        rs->remote_failing_since = now;
        library_error[0] = '\0'; /* said here */
        warning("consume: the log failed: %s (%s); retrying for up to %lld s", opstate_result_str(r),
                err->field ? err->field : "log", (long long)(REMOTE_RETRY_NS / NS_PER_SECOND));
    }
    if (now - rs->remote_failing_since > REMOTE_RETRY_NS) return false;
    sleep_ns(NS_PER_SECOND);
    return true;
}

/* A poll succeeded: the failures in a row are over. */
static void retry_reset(retry_state *rs)
{
    if (rs->remote_failing_since) warning("consume: the log answers again");
    rs->apply_failures = 0;
    rs->remote_failing_since = 0;
}

/* Polls until caught up (with --exit-when-caught-up), a stop signal, or an
   error. *why says what ended it. */
static int consume_loop(const consume_plan *p, opstate_consumer *c, const char **why)
{
    uint64_t poisons = 0;
    uint32_t per_poll = p->max_rate ? (uint32_t)(p->max_rate / 20 + 1) : 4096;
    int64_t started = monotonic_ns();
    retry_state rs = {0, 0};
    for (;;) {
        opstate_poll_result res;
        opstate_error err;
        opstate_result r;
        memset(&err, 0, sizeof err);
        if (stop_signal) break;
        r = opstate_consumer_poll(c, per_poll > 4096 ? 4096 : per_poll, POLL_BUDGET_NS, &res, &err);
        if (r == OPSTATE_POISON) return fail_poison(c);
        if (r != OPSTATE_OK && retry_after(p, r, &err, &rs)) continue;
        if (r != OPSTATE_OK) return fail_result(r, &err, "consume");
        retry_reset(&rs);
        warn_skipped_poison(c, &poisons);
        if (res.caught_up && p->exit_when_caught_up) {
            *why = "caught up";
            return STATUS_OK;
        }
        if (res.caught_up) sleep_ns(IDLE_WAIT_NS);
        throttle(p, opstate_consumer_get_status(c)->applied, started);
    }
    *why = stop_signal == SIGINT ? "SIGINT" : "SIGTERM";
    return STATUS_OK;
}

/* Final flush, then the summary line (or the flush error). */
static int consumer_finish(opstate_consumer *c, int status, const char *why, int64_t started)
{
    opstate_consumer_status st = *opstate_consumer_get_status(c);
    opstate_position pos = opstate_consumer_position(c);
    opstate_error err;
    opstate_result r;
    char where[120];
    double seconds = (double)(monotonic_ns() - started) / 1e9;
    memset(&err, 0, sizeof err);
    r = opstate_consumer_close(c, &err);
    if (r != OPSTATE_OK) {
        int flush_status = fail_result(r, &err, "final flush of the state");
        return status != STATUS_OK ? status : flush_status;
    }
    if (status != STATUS_OK) return status;
    printf("stopped (%s): applied %llu, skipped %llu, poison %llu in %.2f s; %llu periodic flushes + a final one; position %s\n",
           why, (unsigned long long)st.applied, (unsigned long long)st.skipped, (unsigned long long)st.poison_count,
           seconds, (unsigned long long)st.flushes, position_text(pos, where, sizeof where));
    return STATUS_OK;
}

static int run_consume(const args *a)
{
    consume_plan p;
    log_handle lh;
    state_handle sh;
    opstate_consumer *c = NULL;
    log_open_options lo;
    progress pg;
    const char *why = "";
    int64_t started = monotonic_ns();
    int status = consume_parse(a, &p);
    lo = read_options(p.durable);
    if (status != STATUS_OK || (status = log_open(a, &lo, &lh)) != STATUS_OK) return status;
    if ((status = check_bucket_filter(&lh, p.cfg.filter)) != STATUS_OK ||
        (status = state_open(a, true, p.read_through, &sh)) != STATUS_OK) {
        log_close(&lh);
        return status;
    }
    p.remote = lh.remote;
    install_stop_handlers();
    progress_init(&pg, "consume");
    p.cfg.progress = progress_update;
    p.cfg.progress_user = &pg;
    if ((status = consumer_open(&p, &lh, &sh, &c)) == STATUS_OK) {
        status = consume_loop(&p, c, &why);
        progress_finish(&pg);
        status = consumer_finish(c, status, why, started);
    }
    state_close(&sh);
    log_close(&lh);
    return status;
}

static const option_spec consume_options[] = {
    OPT_LOG,
    OPT_PREFIX,
    OPT_STATE,
    OPT_NAME,
    OPT_FILTERS,
    START_OPTIONS,
    {"--keep-state", NULL, "always restore the stored state"},
    {"--clear-state", NULL, "always start from an empty state"},
    {"--flush-interval-ms", "MS", "flush the state this often (default 1000; 0: not by time)"},
    {"--flush-every", "N", "and/or after every N events (default 0: not by count)"},
    {"--exit-when-caught-up", NULL, "stop (with a final flush) once the log has nothing more"},
    {"--timestamp-fallback", "MODE", "events without a time: wallclock (default) or skip"},
    {"--no-resync", NULL, "after an expired cursor keep keys instead of reconciling them"},
    {"--poison", "POLICY", "an event that fails: stop (default, exit 5) or skip (record, count)"},
    {"--read-through", NULL, "keep the compacted state on disk (state larger than memory)"},
    {"--max-rate", "N", "apply at most N events per second (spare a shared disk during a rebuild)"},
    {"--durable", "NAME", "nats: read through the durable pull consumer NAME, acked as applied"},
    {"--verbose", NULL, "also print the library's info lines"},
    OPT_END};

const command_spec consume_command = {
    "consume", "consume [options]", "Fold the log into a state store: restore, read, apply, flush, until stopped",
    "At start it prints one line: the restore decision, its reason, the resume state and the\n"
    "position. SIGINT or SIGTERM stops it with a final flush. With a terminal on stderr it shows\n"
    "a progress line. The state is an LMDB store (--state) for every kind of log; on a nats://\n"
    "log, reads use ephemeral ordered consumers, or with --durable a durable pull consumer that is\n"
    "acked as events are applied (the stored position stays the truth on restart).\n",
    consume_options, 0, 0, run_consume};
