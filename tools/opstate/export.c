/* export.c — opstate export and opstate import: a state directory to a
   verified artifact directory and back. Part of the opstate tool (see
   main.c). */
#include "tool.h"

/* >>export -------------------------------------------------------------- */

static int run_export(const args *a)
{
    const char *dir = a->positional[0];
    opstate_error err;
    opstate_result r;
    state_handle s;
    int status;
    memset(&s, 0, sizeof s);
    if ((status = state_env_open(a, false, &s)) != STATUS_OK) return status;
    memset(&err, 0, sizeof err);
    r = opstate_lmdb_export(s.env, dir, &err);
    opstate_lmdb_close(s.env);
    if (r != OPSTATE_OK) return fail_result(r, &err, "export of %s to %s", quoted(s.dir), quoted(dir));
    printf("exported %s to %s (data.mdb + MANIFEST with its size, CRC32C and store positions)\n", s.dir, dir);
    return STATUS_OK;
}

static int run_import(const args *a)
{
    const char *dir = a->positional[0], *dest = a->positional[1];
    opstate_error err;
    opstate_result r;
    memset(&err, 0, sizeof err);
    r = opstate_lmdb_import(dir, dest, &err);
    if (r == OPSTATE_CONFLICT) return fail(STATUS_CORRUPT, "import of %s: %s (%s)", quoted(dir), opstate_result_str(r),
                                           err.field ? err.field : "manifest");
    if (r != OPSTATE_OK) return fail_result(r, &err, "import of %s into %s", quoted(dir), quoted(dest));
    printf("imported %s into %s (size, checksum and store positions verified)\n", dir, dest);
    return STATUS_OK;
}

static const option_spec export_options[] = {OPT_LOG, OPT_STATE, OPT_END};
static const option_spec import_options[] = {OPT_END};

const command_spec export_command = {
    "export", "export DIR [--state DIR | --log URI]", "Write a compacted, checksummed copy of a state directory to DIR",
    NULL, export_options, 1, 1, run_export};

const command_spec import_command = {
    "import", "import DIR DEST", "Verify an export and install it as a new state directory DEST", NULL,
    import_options, 2, 2, run_import};
