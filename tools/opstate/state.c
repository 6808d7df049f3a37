/* state.c — the LMDB environment and store that hold a consumer's state.
   Part of the opstate tool (see main.c). */
#include "tool.h"

/* >>state --------------------------------------------------------------- */

/* --state DIR, or the default next to --log. */
static int state_dir_arg(const args *a, char *buf, const char **label)
{
    const char *dir = opt(a, "--state"), *rest;
    const log_backend *b;
    *label = dir ? "--state" : "state";
    if (dir) {
        if (!dir[0] || (size_t)snprintf(buf, PATH_CAP, "%s", dir) >= PATH_CAP)
            return fail(STATUS_USAGE, "--state %s: expected a directory path", quoted(dir));
        return STATUS_OK;
    }
    if (!(b = find_backend(log_uri_arg(a), &rest))) return STATUS_USAGE;
    return b->default_state_dir(log_uri_arg(a), rest, opt(a, "--server"), buf);
}

/* Opens the environment at s->dir (s->label names it in messages). */
int state_env_open_at(state_handle *s, bool create)
{
    opstate_lmdb_config ec;
    opstate_error err;
    opstate_result r;
    int status;
    if (!create && !path_exists(s->dir, "data.mdb"))
        return fail(STATUS_NOT_FOUND, "%s %s: no state there (%s/data.mdb not found)", s->label, quoted(s->dir), s->dir);
    if (create && (status = make_dirs(s->label, s->dir)) != STATUS_OK) return status;
    memset(&ec, 0, sizeof ec);
    memset(&err, 0, sizeof err);
    ec.path = s->dir;
    ec.diag = tool_logger();
    ec.access = create ? OPSTATE_LMDB_CREATE : OPSTATE_LMDB_READ_ONLY; /* looking never writes */
    ec.no_readahead = s->no_readahead;
    r = opstate_lmdb_open(&ec, &s->env, &err);
    if (r == OPSTATE_ALREADY_OPEN)
        return fail(STATUS_USAGE, "%s %s: this directory is already open (the log's own?): give the state its own",
                    s->label, quoted(s->dir));
    if (r == OPSTATE_OK && create && (r = refuse_other_kind(s->env, 'l', &err)) != OPSTATE_OK) {
        opstate_lmdb_close(s->env);
        s->env = NULL;
    }
    if (r != OPSTATE_OK) return fail_result(r, &err, "%s %s", s->label, quoted(s->dir));
    return STATUS_OK;
}

int state_env_open(const args *a, bool create, state_handle *s)
{
    int status = state_dir_arg(a, s->dir, &s->label);
    return status != STATUS_OK ? status : state_env_open_at(s, create);
}

/* Opens the environment and the store named by --name. */
int state_open(const args *a, bool create, bool read_through, state_handle *s)
{
    opstate_lmdb_store_config sc;
    opstate_error err;
    opstate_result r;
    const char *name = opt(a, "--name");
    int status;
    memset(s, 0, sizeof *s);
    s->name = name ? name : DEFAULT_STORE_NAME;
    s->no_readahead = read_through; /* random reads of a state that may outgrow memory */
    if ((status = check_name("--name", s->name, "a store name")) != STATUS_OK ||
        (status = state_env_open(a, create, s)) != STATUS_OK)
        return status;
    memset(&sc, 0, sizeof sc);
    memset(&err, 0, sizeof err);
    sc.name = s->name;
    sc.read_through = read_through;
    if ((r = opstate_lmdb_store_open(s->env, &sc, &s->store, &err)) != OPSTATE_OK) {
        opstate_lmdb_close(s->env);
        s->env = NULL;
        if (r == OPSTATE_NOT_FOUND)
            return fail(STATUS_NOT_FOUND, "%s %s: nothing stored under --name %s", s->label, quoted(s->dir), quoted(s->name));
        return fail_result(r, &err, "%s %s, store %s", s->label, quoted(s->dir), quoted(s->name));
    }
    return STATUS_OK;
}

void state_close(state_handle *s)
{
    opstate_lmdb_store_close(s->store);
    opstate_lmdb_close(s->env);
    s->store = NULL;
    s->env = NULL;
}

/* Loads the store's state (read-through: the table stays on disk). */
int state_load(const state_handle *s, opstate_kv **kv, opstate_snapshot_meta *meta)
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
