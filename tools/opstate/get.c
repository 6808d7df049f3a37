/* get.c — opstate get: one key's value, from a consumer's state store or
   from a replay of the log. Part of the opstate tool (see main.c). */
#include "tool.h"

/* >>get ----------------------------------------------------------------- */

/* The fold key of --scope S --kind K --key KEY (scope 0x00 kind 0x00 key)
   into buf; its length. */
static int get_key(const args *a, uint8_t *buf, size_t cap, size_t *n)
{
    opstate_event ev;
    const char *scope = opt(a, "--scope"), *kind = opt(a, "--kind"), *key = opt(a, "--key");
    if (!scope || !kind || !key) return fail(STATUS_USAGE, "get: --scope, --kind and --key are required");
    memset(&ev, 0, sizeof ev);
    ev.scope = text_bytes(scope);
    ev.kind = text_bytes(kind);
    ev.key = text_bytes(key);
    if (opstate_kv_event_key(&ev, buf, cap, n) != OPSTATE_OK)
        return fail(STATUS_USAGE, "get: --key %s: longer than %d bytes", quoted(key), OPSTATE_MAX_KEY_LEN);
    return STATUS_OK;
}

/* The state of that one key from the log (--replay): a replay filtered to
   its subject (with --subject-template, of the whole stream: the key's
   subject is another client's shape). */
static int get_replayed(const args *a, opstate_kv **kv)
{
    opstate_replay_config cfg;
    opstate_replay_result res;
    opstate_error err;
    log_open_options lo = read_options(NULL);
    log_handle lh;
    char filter[FILTER_CAP];
    opstate_result r;
    int status;
    memset(&cfg, 0, sizeof cfg);
    memset(&err, 0, sizeof err);
    if ((status = check_prefix(prefix_arg(a))) != STATUS_OK ||
        (!opt(a, "--subject-template") &&
         (status = key_subject(prefix_arg(a), opt(a, "--scope"), opt(a, "--kind"), opt(a, "--key"), filter,
                               &cfg.filter.len)) != STATUS_OK) ||
        (status = log_open(a, &lo, &lh)) != STATUS_OK)
        return status;
    cfg.filter.ptr = (const uint8_t *)filter;
    if ((status = check_bucket_filter(&lh, cfg.filter)) == STATUS_OK) {
        cfg.log = lh.log;
        r = opstate_kv_create(NULL, kv);
        if (r == OPSTATE_OK) r = opstate_replay(&cfg, *kv, &res, &err);
        if (r != OPSTATE_OK) status = fail_result(r, &err, "replay of %s", quoted(lh.uri));
    }
    log_close(&lh);
    return status;
}

/* The value on stdout as it is (--json: the one item as replay --json
   writes items). */
static int print_value(const args *a, const uint8_t *key, size_t key_len, const opstate_kv *kv)
{
    opstate_kv_item it;
    opstate_kv *one = NULL;
    int status = STATUS_OK;
    opstate_bytes k;
    k.ptr = key;
    k.len = key_len;
    if (opstate_kv_get(kv, k, &it) != OPSTATE_OK)
        return fail(STATUS_NOT_FOUND, "get: no key %s %s %s", quoted(opt(a, "--scope")), quoted(opt(a, "--kind")),
                    quoted(opt(a, "--key")));
    if (!flag(a, "--json")) {
        fwrite(it.value.ptr, 1, it.value.len, stdout);
        fputc('\n', stdout);
        return STATUS_OK;
    }
    if (opstate_kv_create(NULL, &one) != OPSTATE_OK || opstate_kv_put(one, k, it.value, it.position) != OPSTATE_OK)
        status = fail(STATUS_FAILED, "get: out of memory");
    if (status == STATUS_OK) {
        fputc('{', stdout);
        status = json_state_tail(stdout, one);
    }
    opstate_kv_destroy(one);
    return status;
}

static int run_get(const args *a)
{
    uint8_t key[3 * OPSTATE_MAX_KEY_LEN];
    size_t key_len = 0;
    opstate_snapshot_meta meta;
    opstate_kv *kv = NULL;
    state_handle s;
    bool opened = false;
    int status = get_key(a, key, sizeof key, &key_len);
    if (status == STATUS_OK && flag(a, "--replay")) {
        status = get_replayed(a, &kv);
    } else if (status == STATUS_OK && (status = state_open(a, false, true, &s)) == STATUS_OK) {
        opened = true;
        status = state_load(&s, &kv, &meta);
    }
    if (status == STATUS_OK) status = print_value(a, key, key_len, kv);
    opstate_kv_destroy(kv);
    if (opened) state_close(&s);
    return status;
}

static const option_spec get_options[] = {
    OPT_LOG,
    OPT_STATE,
    OPT_NAME,
    OPT_PREFIX,
    {"--scope", "SCOPE", "the key's scope (required)"},
    {"--kind", "KIND", "the key's kind (required)"},
    {"--key", "KEY", "the key, as written (required)"},
    {"--replay", NULL, "the value as the log has it now (a replay of that key), not the state's"},
    {"--json", NULL, "print the key, its value and position as JSON (the shape of replay --json)"},
    OPT_END};

const command_spec get_command = {
    "get", "get --scope S --kind K --key KEY [--state DIR | --log URI [--replay]] [--json]",
    "Print one key's value, from a state store or (--replay) from the log",
    "Exit 3 when the key is not there. The value is printed as it is, then a newline.\n", get_options, 0, 0,
    run_get};
