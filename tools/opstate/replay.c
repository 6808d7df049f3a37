/* replay.c — opstate replay: the state as of a point in time, rebuilt from
   the log, as text or JSON. Part of the opstate tool (see main.c). */
#include "tool.h"

/* >>replay -------------------------------------------------------------- */

static int replay_parse(const args *a, opstate_replay_config *cfg, char filter[FILTER_CAP])
{
    const char *until_seq = opt(a, "--until-seq"), *until_time = opt(a, "--until-time"), *max = opt(a, "--max-events");
    static const char *const one_of[] = {"--json", "--keys", NULL};
    int status = exclusive(a, one_of);
    if (status == STATUS_OK) status = subject_filter(a, filter, &cfg->filter);
    if (status == STATUS_OK && until_seq) status = parse_u64("--until-seq", until_seq, 1, UINT64_MAX, &cfg->until_seq);
    if (status == STATUS_OK && until_time) status = parse_time("--until-time", until_time, &cfg->until_time);
    if (status == STATUS_OK && max) status = parse_u64("--max-events", max, 1, UINT64_MAX, &cfg->max_events);
    cfg->has_until_time = until_time != NULL;
    return status;
}

static void print_replay_text(const opstate_replay_result *res, const opstate_kv *kv)
{
    char where[120];
    printf("replayed %llu events up to sequence %llu (filtered %llu, poison %llu): %llu keys; position %s\n",
           (unsigned long long)res->applied, (unsigned long long)res->end_seq, (unsigned long long)res->filtered,
           (unsigned long long)res->poison, (unsigned long long)opstate_kv_count(kv),
           position_text(res->position, where, sizeof where));
}

static int print_replay_json(const opstate_replay_result *res, const opstate_kv *kv)
{
    printf("{\"applied\":%llu,\"filtered\":%llu,\"poison\":%llu,\"end_seq\":%llu,", (unsigned long long)res->applied,
           (unsigned long long)res->filtered, (unsigned long long)res->poison, (unsigned long long)res->end_seq);
    json_position(stdout, "position", res->position);
    fputc(',', stdout);
    return json_state_tail(stdout, kv);
}

static int run_replay(const args *a)
{
    opstate_replay_config cfg;
    opstate_replay_result res;
    opstate_error err;
    opstate_kv *kv = NULL;
    log_open_options lo = read_options(NULL);
    log_handle lh;
    progress pg;
    char filter[FILTER_CAP];
    opstate_result r;
    int status;
    memset(&cfg, 0, sizeof cfg);
    memset(&err, 0, sizeof err);
    if ((status = replay_parse(a, &cfg, filter)) != STATUS_OK || (status = log_open(a, &lo, &lh)) != STATUS_OK)
        return status;
    if ((status = check_bucket_filter(&lh, cfg.filter)) != STATUS_OK) {
        log_close(&lh);
        return status;
    }
    progress_init(&pg, "replay");
    cfg.log = lh.log;
    cfg.progress = progress_update;
    cfg.progress_user = &pg;
    r = opstate_kv_create(NULL, &kv);
    if (r == OPSTATE_OK) r = opstate_replay(&cfg, kv, &res, &err);
    progress_finish(&pg);
    if (r != OPSTATE_OK) status = fail_result(r, &err, "replay of %s", quoted(lh.uri));
    else if (res.poison) warning("%llu poison events skipped (they do not decode or were rejected)", (unsigned long long)res.poison);
    if (r == OPSTATE_OK && flag(a, "--json")) status = print_replay_json(&res, kv);
    else if (r == OPSTATE_OK) print_replay_text(&res, kv);
    if (r == OPSTATE_OK && flag(a, "--keys") && (r = opstate_kv_iterate(kv, print_key_value, NULL)) != OPSTATE_OK)
        status = fail_result(r, NULL, "listing the keys");
    opstate_kv_destroy(kv);
    log_close(&lh);
    return status;
}

static const option_spec replay_options[] = {
    OPT_LOG,
    OPT_PREFIX,
    OPT_FILTERS,
    {"--until-seq", "N", "stop after sequence N"},
    {"--until-time", "T", "only events published at or before T"},
    {"--max-events", "N", "stop after N applied events"},
    {"--json", NULL, "print the state as JSON: position, count, items"},
    {"--keys", NULL, "also list every key and value, one per line"},
    OPT_END};

const command_spec replay_command = {
    "replay", "replay [options]", "Rebuild the state as of a point in time, from the start of the log",
    "The end is fixed when the replay starts (the last sequence then); it never waits.\n", replay_options, 0, 0,
    run_replay};
