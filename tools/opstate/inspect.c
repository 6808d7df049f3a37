/* inspect.c — opstate inspect: a state store's position, schema, keys and
   pending deltas. Part of the opstate tool (see main.c). */
#include "tool.h"

/* >>inspect ------------------------------------------------------------- */

static void print_inspect_text(const state_handle *s, const opstate_snapshot_meta *m, const opstate_kv *kv)
{
    char where[120];
    uint32_t deltas;
    uint64_t bytes;
    opstate_lmdb_store_deltas(s->store, &deltas, &bytes);
    printf("state:     %s (store %s)\nposition:  %s\nepoch:     %llu\nschema:    %u\nkeys:      %llu\n"
           "deltas:    %u pending (%llu bytes)\n",
           s->dir, s->name, position_text(m->position, where, sizeof where), (unsigned long long)m->position.epoch,
           m->schema_version, (unsigned long long)opstate_kv_count(kv), deltas, (unsigned long long)bytes);
}

static int print_inspect_json(const state_handle *s, const opstate_snapshot_meta *m, const opstate_kv *kv)
{
    uint32_t deltas;
    uint64_t bytes;
    opstate_lmdb_store_deltas(s->store, &deltas, &bytes);
    printf("{\"state\":");
    json_string(stdout, s->dir);
    printf(",\"store\":");
    json_string(stdout, s->name);
    printf(",\"schema_version\":%u,\"deltas_pending\":%u,\"delta_bytes\":%llu,", m->schema_version, deltas,
           (unsigned long long)bytes);
    json_position(stdout, "position", m->position);
    fputc(',', stdout);
    return json_state_tail(stdout, kv);
}

static int run_inspect(const args *a)
{
    static const char *const one_of[] = {"--json", "--keys", NULL};
    opstate_snapshot_meta meta;
    opstate_kv *kv = NULL;
    state_handle s;
    int status = exclusive(a, one_of);
    if (status != STATUS_OK || (status = state_open(a, false, true, &s)) != STATUS_OK) return status;
    if ((status = state_load(&s, &kv, &meta)) == STATUS_OK) {
        if (flag(a, "--json")) {
            status = print_inspect_json(&s, &meta, kv);
        } else {
            print_inspect_text(&s, &meta, kv);
            opstate_result r = flag(a, "--keys") ? opstate_kv_iterate(kv, print_key_value, NULL) : OPSTATE_OK;
            if (r != OPSTATE_OK) status = fail_result(r, NULL, "listing the keys of %s", quoted(s.dir));
        }
    }
    opstate_kv_destroy(kv);
    state_close(&s);
    return status;
}

static const option_spec inspect_options[] = {
    OPT_LOG,
    OPT_STATE,
    OPT_NAME,
    {"--json", NULL, "print position, schema, counts and every key and value as JSON"},
    {"--keys", NULL, "also list every key and value, one per line"},
    OPT_END};

const command_spec inspect_command = {
    "inspect", "inspect [--state DIR | --log URI] [--name NAME] [--json | --keys]",
    "Show a state store: position, schema, key count, pending deltas; keys with --json or --keys", NULL,
    inspect_options, 0, 0, run_inspect};
