/* decide.c — opstate decide: the restore decision explained for given
   inputs (no log or store is opened). Part of the opstate tool (see
   main.c). */
#include "tool.h"

/* >>decide -------------------------------------------------------------- */

/* --stored-seq/-time/-epoch: *has false when no position is stored. */
static int decide_stored(const args *a, opstate_position *stored, bool *has)
{
    const char *seq = opt(a, "--stored-seq"), *when = opt(a, "--stored-time"), *epoch = opt(a, "--stored-epoch");
    int status = STATUS_OK;
    memset(stored, 0, sizeof *stored);
    stored->epoch = 1;
    *has = seq != NULL;
    if (!seq && (when || epoch)) return fail(STATUS_USAGE, "decide: %s needs --stored-seq", when ? "--stored-time" : "--stored-epoch");
    if (seq) status = parse_u64("--stored-seq", seq, 0, UINT64_MAX, &stored->seq);
    if (status == STATUS_OK && when) status = parse_time("--stored-time", when, &stored->time);
    if (status == STATUS_OK && epoch) status = parse_u64("--stored-epoch", epoch, 0, UINT64_MAX, &stored->epoch);
    return status;
}

/* --first-seq/--last-seq/--epoch: *has false when the stream is unknown. */
static int decide_stream(const args *a, opstate_stream_info *s, bool *has)
{
    const char *first = opt(a, "--first-seq"), *last = opt(a, "--last-seq"), *epoch = opt(a, "--epoch");
    int status = STATUS_OK;
    memset(s, 0, sizeof *s);
    s->epoch = 1;
    *has = last != NULL;
    if (!last && (first || epoch)) return fail(STATUS_USAGE, "decide: %s needs --last-seq", first ? "--first-seq" : "--epoch");
    if (last) status = parse_u64("--last-seq", last, 0, UINT64_MAX, &s->last_seq);
    s->first_seq = s->last_seq ? 1 : 0;
    if (status == STATUS_OK && first) status = parse_u64("--first-seq", first, 0, UINT64_MAX, &s->first_seq);
    if (status == STATUS_OK && epoch) status = parse_u64("--epoch", epoch, 0, UINT64_MAX, &s->epoch);
    s->messages = s->first_seq && s->last_seq >= s->first_seq ? s->last_seq - s->first_seq + 1 : 0;
    return status;
}

static void print_decide(bool json, const opstate_restore_decision *d, const char *resume)
{
    if (json) {
        printf("{\"decision\":\"%s\",\"reason\":\"%s\",\"explanation\":", d->restore ? "restore" : "clear",
               opstate_reason_name(d->reason));
        json_string(stdout, opstate_reason_str(d->reason));
        printf(",\"resync\":%s,\"gap\":%llu,\"resume\":", d->resync ? "true" : "false", (unsigned long long)d->gap);
        json_string(stdout, resume);
        printf("}\n");
        return;
    }
    printf("decision:  %s\nreason:    %s: %s\nresync:    %s\ngap:       %llu\nresume:    %s\n",
           d->restore ? "restore" : "clear", opstate_reason_name(d->reason), opstate_reason_str(d->reason),
           d->resync ? "yes" : "no", (unsigned long long)d->gap, resume);
}

static int run_decide(const args *a)
{
    static const char *const modes[] = {"auto", "clear", "keep", NULL};
    opstate_start start;
    opstate_position stored;
    opstate_stream_info stream;
    opstate_restore_decision d;
    opstate_resume rs;
    char resume[120] = "unknown (give --stored-seq and --last-seq)";
    bool has_stored, has_stream;
    int mode = 0, status = parse_start(a, &start);
    if (status == STATUS_OK && opt(a, "--mode")) status = parse_choice("--mode", opt(a, "--mode"), modes, &mode);
    if (status == STATUS_OK) status = decide_stored(a, &stored, &has_stored);
    if (status == STATUS_OK) status = decide_stream(a, &stream, &has_stream);
    if (status != STATUS_OK) return status;
    if (opstate_decide_restore((opstate_restore_mode)mode, start, has_stored ? &stored : NULL, has_stream ? &stream : NULL,
                               &d) != OPSTATE_OK)
        return fail(STATUS_USAGE, "decide: the inputs are not a valid start (see opstate decide --help)");
    if (has_stored && has_stream && opstate_resume_check(stored, &stream, &rs) == OPSTATE_OK)
        snprintf(resume, sizeof resume, "%s; next sequence %llu", opstate_resume_state_str(rs.state),
                 (unsigned long long)rs.next_seq);
    print_decide(flag(a, "--json"), &d, resume);
    return STATUS_OK;
}

static const option_spec decide_options[] = {
    {"--mode", "MODE", "auto (default: the decision matrix), clear or keep"},
    START_OPTIONS,
    {"--stored-seq", "N", "the stored position's sequence (omit: nothing stored)"},
    {"--stored-time", "T", "its time"},
    {"--stored-epoch", "N", "its epoch (default 1)"},
    {"--first-seq", "N", "the log's first retained sequence (default 1)"},
    {"--last-seq", "N", "the log's last sequence (omit: log unknown)"},
    {"--epoch", "N", "the log's epoch (default 1)"},
    {"--json", NULL, "print JSON"},
    OPT_END};

const command_spec decide_command = {
    "decide", "decide [--mode M] [--replay-from-...] [--stored-seq N ...] [--last-seq N ...]",
    "Explain the restore decision for given inputs (no log or store is opened)",
    "Inputs as consume sees them: the mode, the start, the stored position and the log.\n", decide_options, 0, 0,
    run_decide};
