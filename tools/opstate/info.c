/* info.c — opstate info: a log's first and last sequence and time, epoch
   and message count. Part of the opstate tool (see main.c). */
#include "tool.h"

/* >>info ---------------------------------------------------------------- */

static void print_info_json(const char *uri, const opstate_stream_info *s)
{
    char first[TIME_CAP], last[TIME_CAP];
    printf("{\"log\":");
    json_string(stdout, uri);
    printf(",\"messages\":%llu,\"first_seq\":%llu,\"last_seq\":%llu,\"first_time\":%lld,\"last_time\":%lld,"
           "\"first_time_text\":\"%s\",\"last_time_text\":\"%s\",\"epoch\":%llu}\n",
           (unsigned long long)s->messages, (unsigned long long)s->first_seq, (unsigned long long)s->last_seq,
           (long long)s->first_time, (long long)s->last_time, format_time(s->first_time, first),
           format_time(s->last_time, last), (unsigned long long)s->epoch);
}

static void print_info_text(const char *uri, const opstate_stream_info *s)
{
    char first[TIME_CAP], last[TIME_CAP];
    bool empty = s->messages == 0;
    printf("log:       %s\nmessages:  %llu\n", uri, (unsigned long long)s->messages);
    if (empty) printf("first:     none (empty; next sequence %llu)\nlast:      none\n", (unsigned long long)s->last_seq + 1);
    else printf("first:     seq %llu at %s\nlast:      seq %llu at %s\n", (unsigned long long)s->first_seq,
                format_time(s->first_time, first), (unsigned long long)s->last_seq, format_time(s->last_time, last));
    printf("epoch:     %llu\n", (unsigned long long)s->epoch);
}

static int run_info(const args *a)
{
    opstate_stream_info s;
    opstate_error err;
    log_open_options lo = read_options(NULL);
    log_handle lh;
    opstate_result r;
    int status = log_open(a, &lo, &lh);
    if (status != STATUS_OK) return status;
    memset(&err, 0, sizeof err);
    r = lh.log.info(lh.log.user, &s, &err);
    if (r != OPSTATE_OK) status = fail_result(r, &err, "--log %s", quoted(lh.uri));
    else if (flag(a, "--json")) print_info_json(lh.uri, &s);
    else print_info_text(lh.uri, &s);
    log_close(&lh);
    return status;
}

static const option_spec info_options[] = {OPT_LOG, {"--json", NULL, "print JSON"}, OPT_END};

const command_spec info_command = {
    "info", "info [--log URI] [--json]", "Show a log's first and last sequence and time, epoch and message count",
    NULL, info_options, 0, 0, run_info};
