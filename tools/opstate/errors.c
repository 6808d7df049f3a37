/* errors.c — exit statuses, the one error line of a failure, warnings, and
   the library's diagnostics. Part of the opstate tool (see main.c). */
#include "tool.h"

/* >>status -------------------------------------------------------------- */

/* The exit status for a library result (see exit_codes_help in main.c). */
int status_for_result(opstate_result r)
{
    switch (r) {
    case OPSTATE_OK: return STATUS_OK;
    case OPSTATE_INVALID_ARGUMENT:
    case OPSTATE_INVALID_TOKEN:
    case OPSTATE_INVALID_ID:
    case OPSTATE_OVERSIZED:
    case OPSTATE_ALREADY_OPEN: return STATUS_USAGE;
    case OPSTATE_NOT_FOUND: return STATUS_NOT_FOUND;
    case OPSTATE_TRUNCATED:
    case OPSTATE_CORRUPT:
    case OPSTATE_UNKNOWN_VERSION:
    case OPSTATE_MALFORMED:
    case OPSTATE_SCHEMA_TOO_NEW:
    case OPSTATE_SCHEMA_OLD: return STATUS_CORRUPT;
    case OPSTATE_POISON: return STATUS_POISON;
    default: return STATUS_FAILED;
    }
}

/* >>errors -------------------------------------------------------------- */

/* The last ERROR-level line the library logged: it is part of the failure
   the tool reports next, so it goes into that one line. */
char library_error[256];
bool verbose;

/* 'text' with control bytes escaped and long text cut, for error lines
   (four rotating buffers, so one message can quote several inputs). */
const char *quoted(const char *text)
{
    static char buffers[4][160];
    static unsigned next;
    char *out = buffers[next++ % 4];
    size_t n = 0, i;
    out[n++] = '\'';
    for (i = 0; text[i] && n < sizeof buffers[0] - 10; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c < 0x20 || c == 0x7f) n += (size_t)sprintf(out + n, "\\x%02x", c);
        else out[n++] = (char)c;
    }
    if (text[i]) {
        memcpy(out + n, "...", 3);
        n += 3;
    }
    out[n++] = '\'';
    out[n] = '\0';
    return out;
}

static void vreport(const char *fmt, va_list ap, const char *suffix)
{
    fputs("opstate: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs(suffix, stderr);
    if (library_error[0]) fprintf(stderr, " [%s]", library_error);
    fputc('\n', stderr);
    library_error[0] = '\0';
}

/* Prints "opstate: <message>" as one line on stderr and returns status. */
int fail(int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(fmt, ap, "");
    va_end(ap);
    return status;
}

/* The last failure a NATS call reported (its field and natsStatus): the
   NATS backend notes it, so an error passed on through the core is told
   apart from an LMDB one (both keep a raw status in dep_status). */
static struct {
    const char *field;
    long status;
} nats_failure;

opstate_result note_nats_failure(opstate_result r, const opstate_error *err)
{
    if (r != OPSTATE_OK && err && err->dep_status) {
        nats_failure.field = err->field;
        nats_failure.status = err->dep_status;
    }
    return r;
}

/* Text for a dependency's raw status in opstate_error.dep_status: a
   natsStatus (and JetStream error code) for a failure noted above, else
   mdb_strerror (MDB_* codes and errno). */
static const char *dependency_status_text(const opstate_error *err)
{
    static char text[160];
    if (!nats_failure.status || err->field != nats_failure.field || err->dep_status != nats_failure.status)
        return mdb_strerror((int)err->dep_status);
    if (!err->dep_detail) return natsStatus_GetText((natsStatus)err->dep_status);
    snprintf(text, sizeof text, "%s, JetStream error %ld", natsStatus_GetText((natsStatus)err->dep_status),
             err->dep_detail);
    return text;
}

/* "opstate: <context>: <result text> (<field>: <dependency text>)", the
   status that goes with the result. */
int fail_result(opstate_result r, const opstate_error *err, const char *fmt, ...)
{
    char suffix[400];
    va_list ap;
    int n = snprintf(suffix, sizeof suffix, ": %s", opstate_result_str(r));
    bool dep = err && err->dep_status && r != OPSTATE_NOT_FOUND; /* a missing file is said well enough */
    if (r == OPSTATE_LOCKED && err && err->dep_status) /* the holder's pid */
        n = snprintf(suffix, sizeof suffix, ": %s (pid %ld)", opstate_result_str(r), err->dep_status), dep = false;
    if (r == OPSTATE_LOCKED) err = NULL;
    if (err && err->field && n > 0 && (size_t)n < sizeof suffix)
        snprintf(suffix + n, sizeof suffix - (size_t)n, dep ? " (%s: %s)" : " (%s)", err->field,
                 dep ? dependency_status_text(err) : "");
    va_start(ap, fmt);
    vreport(fmt, ap, suffix);
    va_end(ap);
    return status_for_result(r);
}

void warning(const char *fmt, ...)
{
    va_list ap;
    fputs("opstate: warning: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* The library's diagnostics: warnings print at once, errors are held for the
   failure line that follows them, info and debug print under --verbose. */
static void log_line(void *user, opstate_diag_level level, const char *message)
{
    (void)user;
    if (level == OPSTATE_DIAG_ERROR) snprintf(library_error, sizeof library_error, "%s", message);
    else if (level == OPSTATE_DIAG_WARN) warning("%s", message);
    else if (verbose) fprintf(stderr, "opstate: %s\n", message);
}

opstate_diag tool_logger(void)
{
    opstate_diag lg;
    lg.fn = log_line;
    lg.user = NULL;
    return lg;
}
