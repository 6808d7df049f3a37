/* inspect.c — opstate inspect: a state store's position, schema, keys and
   pending deltas. Part of the opstate tool (see main.c). */
#include "tool.h"

/* >>inspect ------------------------------------------------------------- */

/* bytes with control bytes as \xNN. */
static void print_escaped(FILE *out, const uint8_t *p, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        if (p[i] < 0x20 || p[i] == 0x7f) fprintf(out, "\\x%02x", p[i]);
        else fputc(p[i], out);
    }
}

/* "<scope> <kind> <key>\t<value>": the default apply's key is
   scope 0x00 kind 0x00 key. */
static bool print_key_value(void *user, const opstate_kv_item *item)
{
    const uint8_t *k = item->key.ptr, *z1 = (const uint8_t *)memchr(k, 0, item->key.len), *z2 = NULL;
    (void)user;
    if (z1) z2 = (const uint8_t *)memchr(z1 + 1, 0, item->key.len - (size_t)(z1 + 1 - k));
    if (z2) {
        print_escaped(stdout, k, (size_t)(z1 - k));
        fputc(' ', stdout);
        print_escaped(stdout, z1 + 1, (size_t)(z2 - z1 - 1));
        fputc(' ', stdout);
        print_escaped(stdout, z2 + 1, item->key.len - (size_t)(z2 + 1 - k));
    } else {
        print_escaped(stdout, k, item->key.len);
    }
    fputc('\t', stdout);
    print_escaped(stdout, item->value.ptr, item->value.len);
    fputc('\n', stdout);
    return true;
}

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

/* Loads the store's state (read-through: the table stays on disk). */
static int load_state(const state_handle *s, opstate_kv **kv, opstate_snapshot_meta *meta)
{
    opstate_store store = opstate_lmdb_store_iface(s->store);
    opstate_kv_config kc;
    opstate_error err;
    opstate_result r;
    memset(&kc, 0, sizeof kc);
    memset(&err, 0, sizeof err);
    kc.base = store.base(store.user);
    if ((r = opstate_kv_create(&kc, kv)) != OPSTATE_OK) return fail_result(r, NULL, "loading the state");
    r = store.load(store.user, *kv, meta, NULL, &err);
    if (r == OPSTATE_NOT_FOUND)
        return fail(STATUS_NOT_FOUND, "%s %s: nothing stored under --name %s", s->label, quoted(s->dir), quoted(s->name));
    if (r != OPSTATE_OK) return fail_result(r, &err, "%s %s, store %s", s->label, quoted(s->dir), quoted(s->name));
    return STATUS_OK;
}

static int run_inspect(const args *a)
{
    static const char *const one_of[] = {"--json", "--keys", NULL};
    opstate_snapshot_meta meta;
    opstate_kv *kv = NULL;
    state_handle s;
    int status = exclusive(a, one_of);
    if (status != STATUS_OK || (status = state_open(a, false, true, &s)) != STATUS_OK) return status;
    if ((status = load_state(&s, &kv, &meta)) == STATUS_OK) {
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
