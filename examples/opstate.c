/* opstate — the command-line tool for opstate logs and state stores. v0.1.0

   Build (from the repository root; Debian: liblmdb-dev, libnats-dev):

       cc -std=c99 -O2 -D_POSIX_C_SOURCE=200809L -I. examples/opstate.c -llmdb -lnats -o build/opstate

   This one file holds the whole tool; it compiles the implementations of
   opstate.h, opstate_lmdb.h and opstate_nats.h itself.

   COMMANDS (`opstate <command> --help` for each one's options)
       publish   append one event, or many with --batch (lines on stdin)
       consume   the long-running consumer: fold the log into a state store
       replay    point-in-time state from the log, as text or --json
       info      first/last sequence and time, epoch, message count of a log
       inspect   a state store: position, schema, keys, pending deltas
       decide    explain the restore decision for given inputs
       export    copy a state environment into a verified artifact directory
       import    verify an export and install it as a new state environment

   LOGS are named by URI; a backend is one entry in `log_backends` below.
     lmdb:PATH   an LMDB environment directory (the log inside it is named
                 "events"); the default is lmdb:./opstate-data/log.
     nats://HOST[:PORT][,HOST[:PORT]...]/STREAM
                 a JetStream stream (port 4222 by default) on one server or
                 a cluster (the client fails over between the servers).
                 publish ensures it with subjects "<prefix>.>" (--replicas
                 when it makes it) and never changes an existing one: it is
                 used as it is unless its subjects do not cover "<prefix>.>",
                 its retention is not limits, or a limit given differs.
     nats:///STREAM
                 the same with the servers from --server URLS, else NATS_URL
                 (comma-separated, as the nats CLI reads it), else
                 127.0.0.1:4222. Servers in the URI and --server exclude
                 each other; NATS_URL is only a default.
     nats://.../kv/BUCKET
                 a native KV bucket, read-only: every key is an event of
                 scope BUCKET, kind "kv"; deletes and purges are deletes.
   A nats:// log authenticates and encrypts from the environment (the
   names the `nats` CLI uses; secrets stay out of argv and out of every
   message): NATS_CREDS (credentials file), NATS_USER + NATS_PASSWORD,
   NATS_CA (TLS: the CA the server's certificate must chain to), NATS_CERT +
   NATS_KEY (TLS client certificate).
   The state store of consume is always LMDB: --state DIR, by default
   PATH.state next to an lmdb: log, or ./opstate-data/nats-HOST-PORT-NAME.state
   after the first server of a nats:// log.

   PUBLISH --BATCH reads all of stdin and checks every line before it
   appends anything; a line without id= gets an id derived from a digest
   of the whole input and its line number (the same input is the same
   events: a retry appends nothing twice). See `opstate publish --help`.

   TIMES are RFC 3339 (2026-11-23T10:00:00Z, fractional seconds, +hh:mm
   offsets) or an integer with the unit suffix ns (1763890000000000000ns).

   EXIT CODES: see `exit_codes_help` (also printed by `opstate --help`).

   Errors are ONE line on stderr that names the input that was wrong. */

#define OPSTATE_IMPLEMENTATION
#define OPSTATE_LMDB_IMPLEMENTATION
#define OPSTATE_NATS_IMPLEMENTATION
#include "opstate_lmdb.h"
#include "opstate_nats.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/random.h>
#include <sys/stat.h>

#if defined(__GNUC__) || defined(__clang__)
#define PRINTF_LIKE(f, a) __attribute__((format(printf, f, a)))
#else
#define PRINTF_LIKE(f, a)
#endif

#define DEFAULT_DATA_DIR "./opstate-data"
#define DEFAULT_LOG_URI "lmdb:" DEFAULT_DATA_DIR "/log"
#define DEFAULT_PREFIX "ops"
#define DEFAULT_STORE_NAME "default"
#define LMDB_LOG_NAME "events"
#define STATE_SCHEMA_VERSION 1u /* the schema of the tool's KV state */
#define PATH_CAP 4096
#define FILTER_CAP 600
#define TIME_CAP 64 /* format_time output, with room for any int64 */
#define NS_PER_SECOND 1000000000LL
#define NS_PER_MS 1000000LL

/* >>status -------------------------------------------------------------- */

enum {
    STATUS_OK = 0,        /* done */
    STATUS_FAILED = 1,    /* runtime failure (I/O, conflict, out of memory, ...) */
    STATUS_USAGE = 2,     /* bad usage or bad input */
    STATUS_NOT_FOUND = 3, /* the log, state or store does not exist */
    STATUS_CORRUPT = 4,   /* corrupt or incompatible data */
    STATUS_POISON = 5,    /* consume stopped at a poison event */
    STATUS_HELP = -1      /* internal: help was printed, exit 0 */
};

static const char exit_codes_help[] =
    "Exit codes:\n"
    "  0  ok\n"
    "  1  runtime failure (I/O, write conflict, out of memory, ...)\n"
    "  2  usage error or bad input (unknown flag, bad URI, bad time, bad token)\n"
    "  3  not found (no log, no state directory, nothing stored under that name)\n"
    "  4  corrupt or incompatible data (checksum, format version, schema)\n"
    "  5  consume stopped at a poison event (--poison stop)\n";

static int status_for_result(opstate_result r)
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
static char library_error[256];
static bool verbose;

/* 'text' with control bytes escaped and long text cut, for error lines
   (four rotating buffers, so one message can quote several inputs). */
static const char *quoted(const char *text)
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
static int fail(int status, const char *fmt, ...) PRINTF_LIKE(2, 3);
static int fail(int status, const char *fmt, ...)
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

static opstate_result note_nats_failure(opstate_result r, const opstate_error *err)
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
static int fail_result(opstate_result r, const opstate_error *err, const char *fmt, ...) PRINTF_LIKE(3, 4);
static int fail_result(opstate_result r, const opstate_error *err, const char *fmt, ...)
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

static void warn(const char *fmt, ...) PRINTF_LIKE(1, 2);
static void warn(const char *fmt, ...)
{
    va_list ap;
    fputs("opstate: warning: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* The library's logger: warnings print at once, errors are held for the
   failure line that follows them, info and debug print under --verbose. */
static void log_line(void *user, opstate_log_level level, const char *message)
{
    (void)user;
    if (level == OPSTATE_LOG_ERROR) snprintf(library_error, sizeof library_error, "%s", message);
    else if (level == OPSTATE_LOG_WARN) warn("%s", message);
    else if (verbose) fprintf(stderr, "opstate: %s\n", message);
}

static opstate_logger tool_logger(void)
{
    opstate_logger lg;
    lg.fn = log_line;
    lg.user = NULL;
    return lg;
}

/* >>clock --------------------------------------------------------------- */

static int64_t clock_ns(clockid_t which)
{
    struct timespec ts;
    clock_gettime(which, &ts);
    return (int64_t)ts.tv_sec * NS_PER_SECOND + ts.tv_nsec;
}

static int64_t wallclock_ns(void *user)
{
    (void)user;
    return clock_ns(CLOCK_REALTIME);
}

static int64_t monotonic_ns(void) { return clock_ns(CLOCK_MONOTONIC); }

/* Sleeps; a signal cuts it short (the caller looks at its stop flag). */
static void sleep_ns(int64_t ns)
{
    struct timespec ts;
    if (ns <= 0) return;
    ts.tv_sec = (time_t)(ns / NS_PER_SECOND);
    ts.tv_nsec = (long)(ns % NS_PER_SECOND);
    nanosleep(&ts, NULL);
}

/* >>numbers ------------------------------------------------------------- */

/* Decimal digits only, no sign, no overflow. */
static bool digits_to_u64(const char *text, uint64_t *out)
{
    uint64_t v = 0;
    size_t i;
    if (!text[0]) return false;
    for (i = 0; text[i]; i++) {
        unsigned d = (unsigned)(text[i] - '0');
        if (d > 9 || v > (UINT64_MAX - d) / 10) return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

static int parse_u64(const char *flag, const char *text, uint64_t min, uint64_t max, uint64_t *out)
{
    uint64_t v;
    if (!digits_to_u64(text, &v))
        return fail(STATUS_USAGE, "%s %s: not a whole number (digits only)", flag, quoted(text));
    if (v < min || v > max)
        return fail(STATUS_USAGE, "%s %s: out of range (%llu..%llu)", flag, quoted(text), (unsigned long long)min,
                    (unsigned long long)max);
    *out = v;
    return STATUS_OK;
}

/* One of `choices` (NULL-terminated); *out is its index. */
static int parse_choice(const char *flag, const char *text, const char *const *choices, int *out)
{
    char list[200] = "";
    int i;
    for (i = 0; choices[i]; i++) {
        if (strcmp(text, choices[i]) == 0) {
            *out = i;
            return STATUS_OK;
        }
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? "|" : "", choices[i]);
    }
    return fail(STATUS_USAGE, "%s %s: expected one of %s", flag, quoted(text), list);
}

/* >>time ---------------------------------------------------------------- */

/* Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar
   (H. Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    int64_t era;
    unsigned yoe, doy, doe;
    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = (unsigned)(y - era * 400);
    doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    int64_t era;
    unsigned doe, yoe, doy, mp;
    z += 719468;
    era = (z >= 0 ? z : z - 146096) / 146097;
    doe = (unsigned)(z - era * 146097);
    yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static unsigned days_in_month(int64_t y, unsigned m)
{
    static const unsigned days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : days[m - 1];
}

/* Exactly n decimal digits at *p; advances *p. */
static bool take_digits(const char **p, int n, unsigned *out)
{
    unsigned v = 0;
    int i;
    for (i = 0; i < n; i++) {
        unsigned d = (unsigned)((*p)[i] - '0');
        if (d > 9) return false;
        v = v * 10 + d;
    }
    *p += n;
    *out = v;
    return true;
}

static bool take_char(const char **p, const char *allowed)
{
    if (!**p || !strchr(allowed, **p)) return false;
    (*p)++;
    return true;
}

/* ".d{1,9}" -> nanoseconds; absent is 0. */
static bool take_fraction(const char **p, int64_t *ns)
{
    int64_t scale = NS_PER_SECOND / 10;
    *ns = 0;
    if (**p != '.') return true;
    (*p)++;
    if (**p < '0' || **p > '9') return false;
    for (; **p >= '0' && **p <= '9'; (*p)++, scale /= 10) {
        if (scale == 0) return false; /* more than 9 digits: finer than ns */
        *ns += (**p - '0') * scale;
    }
    return true;
}

/* "Z" or "+hh:mm" / "-hh:mm" -> offset east of UTC in seconds. */
static bool take_offset(const char **p, int64_t *seconds)
{
    unsigned hh, mm;
    int sign = **p == '-' ? -1 : 1;
    if (take_char(p, "Zz")) {
        *seconds = 0;
        return true;
    }
    if (!take_char(p, "+-") || !take_digits(p, 2, &hh) || !take_char(p, ":") || !take_digits(p, 2, &mm) ||
        hh > 23 || mm > 59)
        return false;
    *seconds = sign * (int64_t)(hh * 3600 + mm * 60);
    return true;
}

/* seconds + frac (0..999999999 ns) -> ns, false outside int64: exactly
   the range "<n>ns" takes, so every time the tool prints reads back. */
static bool ns_from_seconds(int64_t seconds, int64_t frac, int64_t *out)
{
    const int64_t max_s = INT64_MAX / NS_PER_SECOND, min_s = INT64_MIN / NS_PER_SECOND - 1;
    if (seconds > max_s || seconds < min_s) return false;
    if (seconds == max_s && frac > INT64_MAX % NS_PER_SECOND) return false;
    if (seconds == min_s && frac < NS_PER_SECOND + INT64_MIN % NS_PER_SECOND) return false;
    if (seconds >= 0) *out = seconds * NS_PER_SECOND + frac;
    else *out = (seconds + 1) * NS_PER_SECOND + (frac - NS_PER_SECOND); /* no overflow at min_s */
    return true;
}

/* RFC 3339 date-time -> ns since the Unix epoch. */
static bool parse_rfc3339(const char *text, int64_t *out)
{
    const char *p = text;
    unsigned year, month, day, hour, minute, second;
    int64_t frac, offset, seconds;
    if (!take_digits(&p, 4, &year) || !take_char(&p, "-") || !take_digits(&p, 2, &month) || !take_char(&p, "-") ||
        !take_digits(&p, 2, &day) || !take_char(&p, "Tt") || !take_digits(&p, 2, &hour) || !take_char(&p, ":") ||
        !take_digits(&p, 2, &minute) || !take_char(&p, ":") || !take_digits(&p, 2, &second) ||
        !take_fraction(&p, &frac) || !take_offset(&p, &offset) || *p)
        return false;
    if (month < 1 || month > 12 || day < 1 || day > days_in_month(year, month) || hour > 23 || minute > 59 ||
        second > 60)
        return false;
    seconds = days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second - offset;
    return ns_from_seconds(seconds, frac, out);
}

/* "<integer>ns", optionally negative. */
static bool parse_ns_integer(const char *text, int64_t *out)
{
    char digits[32];
    size_t n = strlen(text);
    bool negative = text[0] == '-';
    uint64_t v;
    if (n < 3 || strcmp(text + n - 2, "ns") != 0 || n - 2 - negative >= sizeof digits) return false;
    memcpy(digits, text + negative, n - 2 - negative);
    digits[n - 2 - negative] = '\0';
    if (!digits_to_u64(digits, &v) || v > (uint64_t)INT64_MAX + negative) return false;
    *out = negative && v ? -(int64_t)(v - 1) - 1 : (int64_t)v; /* INT64_MIN too */
    return true;
}

static int parse_time(const char *flag, const char *text, int64_t *out)
{
    if (parse_rfc3339(text, out) || parse_ns_integer(text, out)) return STATUS_OK;
    return fail(STATUS_USAGE,
                "%s %s: not a time (use RFC 3339, 2026-11-23T10:00:00Z with optional .fraction and +hh:mm "
                "offset, or nanoseconds, 1763890000000000000ns)",
                flag, quoted(text));
}

/* RFC 3339 UTC with nanoseconds: "2026-11-23T10:00:00.000000000Z". */
static const char *format_time(int64_t ns, char out[TIME_CAP])
{
    int64_t seconds = ns / NS_PER_SECOND, frac = ns % NS_PER_SECOND, days, rest, year;
    unsigned month, day;
    if (frac < 0) {
        frac += NS_PER_SECOND;
        seconds--;
    }
    days = seconds / 86400;
    rest = seconds % 86400;
    if (rest < 0) {
        rest += 86400;
        days--;
    }
    civil_from_days(days, &year, &month, &day);
    snprintf(out, TIME_CAP, "%04lld-%02u-%02uT%02d:%02d:%02d.%09lldZ", (long long)year, month, day, (int)(rest / 3600),
             (int)(rest / 60 % 60), (int)(rest % 60), (long long)frac);
    return out;
}

/* >>options ------------------------------------------------------------- */

typedef struct option_spec {
    const char *name;  /* "--scope" */
    const char *value; /* what the value is, e.g. "NAME"; NULL for a flag */
    const char *help;
} option_spec;

#define MAX_OPTIONS 32
#define MAX_POSITIONAL 4

typedef struct command_spec command_spec;

/* The command line of one subcommand, parsed against its option table. */
typedef struct args {
    const command_spec *cmd;
    const char *values[MAX_OPTIONS]; /* the value, "" for a set flag, NULL unset */
    const char *positional[MAX_POSITIONAL];
    int positional_count;
} args;

struct command_spec {
    const char *name;
    const char *usage;   /* after "opstate " */
    const char *summary; /* one line for opstate --help */
    const char *details; /* more text for the command's --help, or NULL */
    const option_spec *options;
    int min_positional, max_positional;
    int (*run)(const args *a);
};

static int option_index(const command_spec *cmd, const char *name, size_t len)
{
    int i;
    for (i = 0; cmd->options[i].name; i++)
        if (strlen(cmd->options[i].name) == len && strncmp(cmd->options[i].name, name, len) == 0) return i;
    return -1;
}

/* The value of an option the command declares (NULL when not given). */
static const char *opt(const args *a, const char *name)
{
    int i = option_index(a->cmd, name, strlen(name));
    if (i < 0) {
        fprintf(stderr, "opstate: internal error: %s has no option %s\n", a->cmd->name, name);
        abort();
    }
    return a->values[i];
}

static bool flag(const args *a, const char *name) { return opt(a, name) != NULL; }

/* At most one of `names` (NULL-terminated) may be given. */
static int exclusive(const args *a, const char *const *names)
{
    const char *first = NULL;
    int i;
    for (i = 0; names[i]; i++) {
        if (!flag(a, names[i])) continue;
        if (first) return fail(STATUS_USAGE, "%s: %s and %s exclude each other", a->cmd->name, first, names[i]);
        first = names[i];
    }
    return STATUS_OK;
}

static void print_command_help(const command_spec *cmd, FILE *out)
{
    int i;
    fprintf(out, "Usage: opstate %s\n\n%s.\n", cmd->usage, cmd->summary);
    if (cmd->details) fprintf(out, "\n%s", cmd->details);
    fprintf(out, "\nOptions:\n");
    for (i = 0; cmd->options[i].name; i++) {
        char left[64];
        snprintf(left, sizeof left, "%s%s%s", cmd->options[i].name, cmd->options[i].value ? " " : "",
                 cmd->options[i].value ? cmd->options[i].value : "");
        fprintf(out, "  %-26s %s\n", left, cmd->options[i].help);
    }
    fprintf(out, "  %-26s %s\n\nExit codes: 0 ok, 1 runtime failure, 2 usage or bad input, 3 not found,\n"
                 "4 corrupt or incompatible data, 5 poison event (details: opstate --help).\n",
            "--help", "show this help");
}

/* One "--name", "--name value" or "--name=value"; *used says whether
   `next` was taken as the value. */
static int parse_option(args *a, const char *arg, const char *next, bool *used)
{
    const char *eq = strchr(arg, '=');
    int i = option_index(a->cmd, arg, eq ? (size_t)(eq - arg) : strlen(arg));
    const option_spec *spec;
    *used = false;
    if (i < 0) return fail(STATUS_USAGE, "%s: unknown option %s (see opstate %s --help)", a->cmd->name, quoted(arg), a->cmd->name);
    spec = &a->cmd->options[i];
    if (a->values[i]) return fail(STATUS_USAGE, "%s: %s given twice", a->cmd->name, spec->name);
    if (!spec->value) {
        if (eq) return fail(STATUS_USAGE, "%s: %s takes no value", a->cmd->name, spec->name);
        a->values[i] = "";
        return STATUS_OK;
    }
    if (eq) {
        a->values[i] = eq + 1;
        return STATUS_OK;
    }
    if (!next || strncmp(next, "--", 2) == 0)
        return fail(STATUS_USAGE, "%s: %s needs a value (%s)", a->cmd->name, spec->name, spec->value);
    a->values[i] = next;
    *used = true;
    return STATUS_OK;
}

static int parse_args(const command_spec *cmd, int argc, char **argv, args *a)
{
    bool options_done = false, used;
    int i, status;
    memset(a, 0, sizeof *a);
    a->cmd = cmd;
    for (i = 0; i < argc; i++) {
        const char *s = argv[i];
        if (!options_done && (strcmp(s, "--help") == 0 || strcmp(s, "-h") == 0)) {
            print_command_help(cmd, stdout);
            return STATUS_HELP;
        }
        if (!options_done && strcmp(s, "--") == 0) {
            options_done = true;
        } else if (!options_done && strncmp(s, "--", 2) == 0) {
            if ((status = parse_option(a, s, i + 1 < argc ? argv[i + 1] : NULL, &used)) != STATUS_OK) return status;
            i += used;
        } else if (a->positional_count == cmd->max_positional) {
            return fail(STATUS_USAGE, "%s: unexpected argument %s (see opstate %s --help)", cmd->name, quoted(s), cmd->name);
        } else {
            a->positional[a->positional_count++] = s;
        }
    }
    if (a->positional_count < cmd->min_positional)
        return fail(STATUS_USAGE, "%s: missing argument (usage: opstate %s)", cmd->name, cmd->usage);
    return STATUS_OK;
}

/* >>validate ------------------------------------------------------------ */

/* A scope or kind: one subject token. `label` names the input. */
static int check_token(const char *label, const char *value, const char *what)
{
    opstate_result r = opstate_token_validate(value, strlen(value), NULL);
    if (r == OPSTATE_OVERSIZED)
        return fail(STATUS_USAGE, "%s %s: a %s is at most %d bytes", label, quoted(value), what, OPSTATE_MAX_TOKEN_LEN);
    if (r != OPSTATE_OK)
        return fail(STATUS_USAGE, "%s %s: a %s is one subject token (no '.', '*', '>', spaces)", label, quoted(value), what);
    return STATUS_OK;
}

static int check_key(const char *label, const char *key)
{
    size_t n = strlen(key);
    if (n == 0 || n > OPSTATE_MAX_KEY_LEN)
        return fail(STATUS_USAGE, "%s %s: a key is 1..%d bytes", label, quoted(key), OPSTATE_MAX_KEY_LEN);
    return STATUS_OK;
}

/* "put", "delete", or an application op (16 and up). */
static int parse_op(const char *label, const char *text, uint32_t *op)
{
    uint64_t v;
    if (strcmp(text, "put") == 0) *op = OPSTATE_OP_PUT;
    else if (strcmp(text, "delete") == 0) *op = OPSTATE_OP_DELETE;
    else if (digits_to_u64(text, &v) && v >= OPSTATE_OP_APP && v <= UINT32_MAX) *op = (uint32_t)v;
    else return fail(STATUS_USAGE, "%s %s: expected put, delete or an application op 16..4294967295", label, quoted(text));
    return STATUS_OK;
}

static int check_prefix(const char *prefix)
{
    if (opstate_prefix_validate(prefix, strlen(prefix), NULL) != OPSTATE_OK)
        return fail(STATUS_USAGE, "--prefix %s: a prefix is subject tokens joined by single dots (no '*', '>', spaces)",
                    quoted(prefix));
    return STATUS_OK;
}

/* A NATS-style filter: tokens joined by dots, '*' for one token, '>' last. */
static int check_filter(const char *filter)
{
    const char *p = filter;
    for (;;) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        bool wildcard = n == 1 && (*p == '*' || (*p == '>' && !dot));
        if (!wildcard && opstate_token_validate(p, n, NULL) != OPSTATE_OK)
            return fail(STATUS_USAGE, "--filter %s: a filter is subject tokens joined by dots, '*' for one token, "
                        "'>' as the last", quoted(filter));
        if (!dot) return STATUS_OK;
        p = dot + 1;
    }
}

#define NAME_RULE "1..64 of A-Z a-z 0-9 _ -"

/* A store, stream, bucket or durable consumer name: NAME_RULE. */
static bool is_name(const char *name)
{
    size_t n = strlen(name);
    return n >= 1 && n <= 64 &&
           strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") == n;
}

/* `label` names the flag, `what` the thing ("a store name"). */
static int check_name(const char *label, const char *name, const char *what)
{
    if (!is_name(name)) return fail(STATUS_USAGE, "%s %s: %s is " NAME_RULE, label, quoted(name), what);
    return STATUS_OK;
}

static const char *prefix_arg(const args *a)
{
    const char *p = opt(a, "--prefix");
    return p ? p : DEFAULT_PREFIX;
}

/* --scope S (-> "<prefix>.S.>") or --filter F into buf; empty: everything. */
static int subject_filter(const args *a, char buf[FILTER_CAP], opstate_bytes *out)
{
    static const char *const one_of[] = {"--scope", "--filter", NULL};
    const char *scope = opt(a, "--scope"), *filter = opt(a, "--filter"), *prefix = prefix_arg(a);
    opstate_bytes s;
    size_t n = 0;
    int status = exclusive(a, one_of);
    if (status == STATUS_OK && scope) status = check_token("--scope", scope, "scope");
    if (status == STATUS_OK && filter) status = check_filter(filter);
    if (status == STATUS_OK) status = check_prefix(prefix);
    if (status != STATUS_OK) return status;
    if (scope) {
        s.ptr = (const uint8_t *)scope;
        s.len = strlen(scope);
        if (opstate_subject_filter(prefix, strlen(prefix), s, buf, FILTER_CAP - 1, &n, NULL) != OPSTATE_OK)
            return fail(STATUS_USAGE, "--scope %s: the filter for it is too long", quoted(scope));
    } else if (filter) {
        n = (size_t)snprintf(buf, FILTER_CAP, "%s", filter);
        if (n >= FILTER_CAP) return fail(STATUS_USAGE, "--filter %s: longer than %d bytes", quoted(filter), FILTER_CAP - 1);
    }
    buf[n] = '\0';
    out->ptr = (const uint8_t *)buf;
    out->len = n;
    return STATUS_OK;
}

/* NUL-terminated text as bytes (NULL: none). */
static opstate_bytes text_bytes(const char *s)
{
    opstate_bytes b;
    b.ptr = (const uint8_t *)s;
    b.len = s ? strlen(s) : 0;
    return b;
}

/* >>files --------------------------------------------------------------- */

static bool path_exists(const char *dir, const char *file)
{
    char path[PATH_CAP];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, file);
    return stat(path, &st) == 0;
}

/* mkdir -p, mode 0700. */
static int make_dirs(const char *label, const char *path)
{
    char buf[PATH_CAP];
    size_t i, n = strlen(path);
    if (n >= sizeof buf) return fail(STATUS_USAGE, "%s %s: path too long", label, quoted(path));
    memcpy(buf, path, n + 1);
    for (i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != '\0') continue;
        buf[i] = '\0';
        if (mkdir(buf, 0700) != 0 && errno != EEXIST)
            return fail(STATUS_FAILED, "%s %s: cannot create %s: %s", label, quoted(path), quoted(buf), strerror(errno));
        buf[i] = i < n ? '/' : '\0';
    }
    return STATUS_OK;
}

/* The whole stream into a malloc'd buffer of at most `max` bytes, with a
   spare byte after them (for a terminator). */
static int read_all(const char *label, FILE *f, size_t max, uint8_t **out, size_t *len)
{
    size_t cap = 4096, n = 0;
    uint8_t *buf = (uint8_t *)malloc(cap), *bigger;
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap) break;
        if (cap > max) break;
        bigger = (uint8_t *)realloc(buf, cap * 2);
        if (!bigger) free(buf);
        buf = bigger;
        cap *= 2;
    }
    if (!buf) return fail(STATUS_FAILED, "%s: out of memory", label);
    if (ferror(f) || n > max) {
        free(buf);
        return ferror(f) ? fail(STATUS_FAILED, "%s: read error: %s", label, strerror(errno))
                         : fail(STATUS_USAGE, "%s: larger than %llu bytes", label, (unsigned long long)max);
    }
    *out = buf;
    *len = n;
    return STATUS_OK;
}

/* >>logs ---------------------------------------------------------------- */

/* How a command means to use a log. A backend refuses what it cannot do. */
typedef struct log_open_options {
    bool create;                            /* publish: make the log (stream) if it is not there */
    bool bulk;                              /* publish --batch: batched appends, one sync or wait at the end */
    const char *prefix;                     /* publish: the subject prefix (a stream's subjects) */
    const char *durable;                    /* consume --durable: a NATS durable pull consumer */
    const char *server;                     /* --server: NATS servers for a nats:///STREAM log */
    uint64_t max_messages, max_per_subject; /* publish: limits of a NATS stream (0: not asked) */
    uint64_t replicas;                      /* publish: replicas of a NATS stream it makes (0: 1) */
    uint64_t ack_wait_ms;                   /* publish --batch on NATS: the wait for acknowledgments (0: default) */
} log_open_options;

/* Where one event of publish --batch stands. */
enum { BATCH_UNSENT = 0, BATCH_SENT, BATCH_PUBLISHED, BATCH_DUPLICATE, BATCH_REFUSED };

/* One event line of publish --batch, checked before anything is sent. */
typedef struct batch_event {
    opstate_event ev; /* scope, kind, key and data point into the input */
    uint64_t line;    /* its line number in the input (from 1) */
    int state;        /* BATCH_* */
} batch_event;

/* The whole input of publish --batch, read and parsed first. */
typedef struct batch_input {
    uint8_t *bytes; /* all of stdin; lines are cut in place */
    size_t len;
    batch_event *events;
    size_t n;
} batch_input;

/* What publish --batch did. */
typedef struct batch_totals {
    uint64_t published, duplicates, unacked, refused, last_seq;
    const batch_event *first_refused; /* the first event the server refused: which, */
    opstate_result refusal;           /* why, */
    long js_error;                    /* and its JetStream error code (0: none) */
    uint64_t stopped_at;              /* the line where sending stopped (0: it did not) */
    opstate_result stop_reason;
} batch_totals;

/* An open log of any backend. */
typedef struct log_handle {
    const char *uri;
    opstate_log log;
    bool bucket;   /* a native KV bucket: read-only, no subject filters */
    bool remote;   /* a server's: timeouts and I/O errors may pass */
    void *backend; /* the backend's own state */
    /* publish --batch: appends (or sends) every event of the input and
       sets each one's state; returns a status after printing a failure
       that ended the batch (events not acknowledged or refused are not
       one: their states tell). */
    int (*batch_publish)(struct log_handle *h, const char *prefix, batch_input *in, batch_totals *t);
    void (*close)(struct log_handle *h);
} log_handle;

/* One kind of log URI. `rest` is the URI after the scheme. */
typedef struct log_backend {
    const char *scheme;
    int (*open)(const char *uri, const char *rest, const log_open_options *o, log_handle *h);
    /* Where consume keeps its state by default (into buf, PATH_CAP);
       server: --server (NULL: not given). */
    int (*default_state_dir)(const char *uri, const char *rest, const char *server, char *buf);
} log_backend;

/* The LMDB backend: an environment directory holding the log "events". */
typedef struct lmdb_backend {
    opstate_lmdb *env;
    opstate_lmdb_log *log;
} lmdb_backend;

/* publish --batch on an LMDB log: what opstate_publish hands its log for
   each event (subject, encoding, id), kept for one transaction. */
typedef struct lmdb_batch {
    opstate_lmdb_append_item *items; /* subject and data in one allocation each */
    opstate_id *ids;
    opstate_append_result *results;
    size_t n;
} lmdb_batch;

/* The append of a capturing log: keeps the bytes for the transaction. */
static opstate_result lmdb_capture(void *user, opstate_bytes subject, opstate_bytes data,
                                   const opstate_append_options *opts, opstate_append_result *out, opstate_error *err)
{
    lmdb_batch *b = (lmdb_batch *)user;
    opstate_lmdb_append_item *it = &b->items[b->n];
    uint8_t *copy = (uint8_t *)malloc(subject.len + data.len + 1);
    if (!copy) return opstate_error_set(err, OPSTATE_NO_MEMORY, "batch", 0);
    memcpy(copy, subject.ptr, subject.len);
    memcpy(copy + subject.len, data.ptr, data.len);
    memset(it, 0, sizeof *it);
    it->subject.ptr = copy;
    it->subject.len = subject.len;
    it->data.ptr = copy + subject.len;
    it->data.len = data.len;
    if (opts && opts->msg_id) {
        b->ids[b->n] = *opts->msg_id;
        it->opts.msg_id = &b->ids[b->n];
    }
    b->n++;
    out->seq = 0;
    out->duplicate = false;
    return OPSTATE_OK;
}

static void lmdb_batch_free(lmdb_batch *b)
{
    size_t i;
    for (i = 0; i < b->n; i++) free((void *)(uintptr_t)b->items[i].subject.ptr);
    free(b->items);
    free(b->ids);
    free(b->results);
}

/* Encodes every event of the input and appends them all in ONE
   transaction: all or nothing (*line: the line that failed). */
static opstate_result lmdb_batch_append(lmdb_backend *lb, const char *prefix, batch_input *in, batch_totals *t,
                                        uint64_t *line, opstate_error *err)
{
    lmdb_batch b;
    opstate_log capture;
    opstate_append_result res;
    opstate_result r = OPSTATE_OK;
    size_t i, n = in->n ? in->n : 1;
    memset(&b, 0, sizeof b);
    memset(&capture, 0, sizeof capture);
    capture.user = &b;
    capture.append = lmdb_capture;
    b.items = (opstate_lmdb_append_item *)calloc(n, sizeof *b.items);
    b.ids = (opstate_id *)calloc(n, sizeof *b.ids);
    b.results = (opstate_append_result *)calloc(n, sizeof *b.results);
    if (!b.items || !b.ids || !b.results) r = opstate_error_set(err, OPSTATE_NO_MEMORY, "batch", 0);
    for (i = 0; r == OPSTATE_OK && i < in->n; i++)
        if ((r = opstate_publish(&capture, text_bytes(prefix), &in->events[i].ev, NULL, NULL, &res, err)) != OPSTATE_OK)
            *line = in->events[i].line;
    if (r == OPSTATE_OK && in->n && (r = opstate_lmdb_log_append_batch(lb->log, b.items, b.n, b.results, err)) != OPSTATE_OK)
        *line = err->offset < in->n ? in->events[err->offset].line : 0;
    for (i = 0; r == OPSTATE_OK && i < in->n; i++) {
        in->events[i].state = b.results[i].duplicate ? BATCH_DUPLICATE : BATCH_PUBLISHED;
        if (b.results[i].seq > t->last_seq) t->last_seq = b.results[i].seq;
    }
    lmdb_batch_free(&b);
    return r;
}

/* publish --batch on an LMDB log: one transaction for the whole input,
   then one sync. */
static int lmdb_batch_publish(log_handle *h, const char *prefix, batch_input *in, batch_totals *t)
{
    lmdb_backend *lb = (lmdb_backend *)h->backend;
    opstate_error err;
    opstate_result r;
    uint64_t line = 0;
    memset(&err, 0, sizeof err);
    if ((r = lmdb_batch_append(lb, prefix, in, t, &line, &err)) != OPSTATE_OK)
        return fail_result(r, &err, "publish --batch of %llu events to %s: nothing appended (failed at line %llu)",
                           (unsigned long long)in->n, quoted(h->uri), (unsigned long long)line);
    if ((r = opstate_lmdb_sync(lb->env, &err)) != OPSTATE_OK) return fail_result(r, &err, "syncing %s", quoted(h->uri));
    return STATUS_OK;
}

static void lmdb_log_close(log_handle *h)
{
    lmdb_backend *b = (lmdb_backend *)h->backend;
    opstate_lmdb_log_close(b->log);
    opstate_lmdb_close(b->env);
    free(b);
}

/* The options only a nats:// log has. */
static int refuse_nats_options(const char *uri, const log_open_options *o)
{
    const char *name = NULL;
    if (o->durable) name = "--durable";
    else if (o->server) name = "--server";
    else if (o->max_messages) name = "--max-messages";
    else if (o->max_per_subject) name = "--max-per-subject";
    else if (o->replicas) name = "--replicas";
    else if (o->ack_wait_ms) name = "--ack-wait-ms";
    if (name) return fail(STATUS_USAGE, "%s: only for nats:// logs, not --log %s", name, quoted(uri));
    return STATUS_OK;
}

/* A writer is about to create a log (kind 's' refused) or a state store
   (kind 'l' refused) in an environment: CONFLICT when it holds only the
   other kind, so a log never lands in a state directory or the reverse. */
static opstate_result refuse_other_kind(opstate_lmdb *env, char other, opstate_error *err)
{
    size_t logs = 0, stores = 0;
    opstate_result r = opstate_lmdb_contents(env, &logs, &stores, err);
    if (r != OPSTATE_OK) return r;
    if (other == 's' && stores && !logs)
        return opstate_error_set(err, OPSTATE_CONFLICT, "the directory holds a state store, not a log", 0);
    if (other == 'l' && logs && !stores)
        return opstate_error_set(err, OPSTATE_CONFLICT, "the directory holds a log, not a state store", 0);
    return OPSTATE_OK;
}

static int lmdb_log_open(const char *uri, const char *path, const log_open_options *o, log_handle *h)
{
    opstate_lmdb_config ec;
    opstate_lmdb_log_config lc;
    opstate_error err;
    opstate_result r;
    lmdb_backend *b;
    memset(&ec, 0, sizeof ec);
    if (!path[0]) return fail(STATUS_USAGE, "--log %s: the path is empty (use lmdb:PATH)", quoted(uri));
    if (refuse_nats_options(uri, o) != STATUS_OK) return STATUS_USAGE;
    if (!o->create && !path_exists(path, "data.mdb"))
        return fail(STATUS_NOT_FOUND, "--log %s: no log there (%s/data.mdb not found)", quoted(uri), path);
    if (o->create && make_dirs("--log", path) != STATUS_OK) return STATUS_FAILED;
    ec.access = o->create ? OPSTATE_LMDB_CREATE : OPSTATE_LMDB_READ_ONLY; /* only a publisher writes a log */
    if (!(b = (lmdb_backend *)calloc(1, sizeof *b))) return fail(STATUS_FAILED, "--log %s: out of memory", quoted(uri));
    memset(&lc, 0, sizeof lc);
    memset(&err, 0, sizeof err);
    ec.path = path;
    ec.logger = tool_logger();
    ec.durability = o->bulk ? OPSTATE_LMDB_SYNC_NONE : OPSTATE_LMDB_SYNC_FULL;
    if (o->bulk) ec.map_size = (size_t)256 << 20;
    lc.name = LMDB_LOG_NAME;
    r = opstate_lmdb_open(&ec, &b->env, &err);
    if (r == OPSTATE_OK) {
        if (o->create) r = refuse_other_kind(b->env, 's', &err);
        if (r == OPSTATE_OK) r = opstate_lmdb_log_open(b->env, &lc, &b->log, &err);
        if (r != OPSTATE_OK) opstate_lmdb_close(b->env);
    }
    if (r != OPSTATE_OK) {
        free(b);
        return fail_result(r, &err, "--log %s", quoted(uri));
    }
    h->backend = b;
    h->log = opstate_lmdb_log_iface(b->log);
    h->batch_publish = lmdb_batch_publish;
    h->close = lmdb_log_close;
    return STATUS_OK;
}

/* lmdb:PATH -> PATH.state */
static int lmdb_default_state_dir(const char *uri, const char *path, const char *server, char *buf)
{
    if (!path[0]) return fail(STATUS_USAGE, "--log %s: the path is empty (use lmdb:PATH)", quoted(uri));
    if (server) return fail(STATUS_USAGE, "--server: only for nats:// logs, not --log %s", quoted(uri));
    if ((size_t)snprintf(buf, PATH_CAP, "%s.state", path) >= PATH_CAP)
        return fail(STATUS_USAGE, "--log %s: path too long", quoted(uri));
    return STATUS_OK;
}

/* >>nats ---------------------------------------------------------------- */

#define NATS_DEFAULT_PORT 4222u
#define NATS_MAX_SERVERS 32 /* what opstate_nats_connect takes */
#define NATS_URI_FORMS                                                                                           \
    "use nats://HOST[:PORT][,HOST[:PORT]...]/STREAM, nats:///STREAM with --server or NATS_URL, or .../kv/BUCKET"
#define NATS_SERVER_FORMS "use [nats://]HOST[:PORT], comma-separated"
#define NATS_BATCH_WINDOW 20000u /* publish --batch: events sent before collecting their acks */
#define NATS_ACK_WAIT_MS 30000
#define JS_STREAM_NOT_FOUND 10059L /* JSStreamNotFoundErr */
#define JS_SUBJECTS_OVERLAP 10065L /* JSStreamSubjectOverlapErr */

/* An environment variable, NULL when unset or empty. */
static const char *env_value(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

/* Where a list of servers comes from, for its error lines. */
typedef struct server_source {
    const char *label; /* "--log", "--server" or "NATS_URL" */
    const char *whole; /* all it says */
    const char *forms; /* how it is written */
} server_source;

/* A nats:// URI, taken apart. */
typedef struct nats_uri {
    char urls[NATS_MAX_SERVERS * 272]; /* "nats://HOST:PORT,...": what the connection uses */
    char first[272];                   /* "HOST-PORT" of the first server (the default state directory) */
    int servers;
    char name[80]; /* the stream, or the bucket */
    bool bucket;
} nats_uri;

/* One server, HOST[:PORT] (n bytes at text), appended to u->urls. */
static int add_server(const server_source *src, const char *text, size_t n, nats_uri *u)
{
    const char *colon = (const char *)memchr(text, ':', n);
    size_t host_len = colon ? (size_t)(colon - text) : n, port_len = colon ? n - host_len - 1 : 0, used = strlen(u->urls);
    char digits[8] = "";
    uint64_t port = NATS_DEFAULT_PORT;
    if (host_len == 0 || host_len > 255 ||
        strspn(text, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-") < host_len)
        return fail(STATUS_USAGE, "%s %s: expected a host name or IPv4 address%s (%s)", src->label, quoted(src->whole),
                    strcmp(src->label, "--log") == 0 ? " after nats://" : "", src->forms);
    if (colon && port_len < sizeof digits) memcpy(digits, colon + 1, port_len);
    if (colon && (port_len >= sizeof digits || !digits_to_u64(digits, &port) || port < 1 || port > 65535))
        return fail(STATUS_USAGE, "%s %s: the port is not a number 1..65535 (%s)", src->label, quoted(src->whole), src->forms);
    if (++u->servers > NATS_MAX_SERVERS)
        return fail(STATUS_USAGE, "%s %s: more than %d servers", src->label, quoted(src->whole), NATS_MAX_SERVERS);
    snprintf(u->urls + used, sizeof u->urls - used, "%snats://%.*s:%u", used ? "," : "", (int)host_len, text, (unsigned)port);
    if (u->servers == 1) snprintf(u->first, sizeof u->first, "%.*s-%u", (int)host_len, text, (unsigned)port);
    return STATUS_OK;
}

/* A comma-separated list of servers (n bytes at text); `schemes`: each may
   start with nats:// (--server, NATS_URL; not inside a nats:// URI). */
static int add_servers(const server_source *src, const char *text, size_t n, bool schemes, nats_uri *u)
{
    const char *end = text + n;
    int status = STATUS_OK;
    if (memchr(text, '@', n))
        return fail(STATUS_USAGE, "%s: credentials in a server URL are not supported (nor echoed): use NATS_USER and "
                    "NATS_PASSWORD, or NATS_CREDS", src->label);
    while (status == STATUS_OK) {
        const char *comma = (const char *)memchr(text, ',', (size_t)(end - text)), *stop = comma ? comma : end;
        const char *colon = (const char *)memchr(text, ':', (size_t)(stop - text));
        if (schemes && stop - text > 7 && strncmp(text, "nats://", 7) == 0) text += 7;
        else if (colon && stop - colon > 2 && colon[1] == '/' && colon[2] == '/')
            return fail(STATUS_USAGE, "%s %s: only nats:// servers (TLS comes from NATS_CA, NATS_CERT and NATS_KEY)",
                        src->label, quoted(src->whole));
        status = add_server(src, text, (size_t)(stop - text), u);
        if (!comma) break;
        text = comma + 1;
    }
    return status;
}

/* The servers of a nats:///STREAM log: --server, else NATS_URL (a
   comma-separated list, as the nats CLI reads it), else 127.0.0.1:4222. */
static int default_servers(const char *server, nats_uri *u)
{
    server_source src;
    const char *env = env_value("NATS_URL");
    src.label = server ? "--server" : "NATS_URL";
    src.whole = server ? server : env ? env : "127.0.0.1";
    src.forms = NATS_SERVER_FORMS;
    return add_servers(&src, src.whole, strlen(src.whole), true, u);
}

/* rest: "[SERVERS]/STREAM" or "[SERVERS]/kv/BUCKET", SERVERS being
   HOST[:PORT],...; with none, default_servers. `server`: --server (only
   with none). */
static int parse_nats_uri(const char *uri, const char *rest, const char *server, nats_uri *u)
{
    const char *slash = strchr(rest, '/'), *name;
    server_source src;
    int status;
    memset(u, 0, sizeof *u);
    if (!slash) return fail(STATUS_USAGE, "--log %s: no stream named (%s)", quoted(uri), NATS_URI_FORMS);
    if (slash > rest && server)
        return fail(STATUS_USAGE, "--server: --log %s names its servers already (use nats:///%s with --server)", quoted(uri),
                    slash + 1);
    src.label = "--log";
    src.whole = uri;
    src.forms = NATS_URI_FORMS;
    status = slash > rest ? add_servers(&src, rest, (size_t)(slash - rest), false, u) : default_servers(server, u);
    if (status != STATUS_OK) return status;
    name = slash + 1;
    u->bucket = strncmp(name, "kv/", 3) == 0;
    if (u->bucket) name += 3;
    if (!is_name(name))
        return fail(STATUS_USAGE, "--log %s: %s %s: a name is " NAME_RULE " (%s)", quoted(uri),
                    u->bucket ? "bucket" : "stream", quoted(name), NATS_URI_FORMS);
    snprintf(u->name, sizeof u->name, "%s", name);
    return STATUS_OK;
}

/* The NATS backend: a connection and the companion's log over a stream or
   a KV bucket. Its interface is wrapped so that every failure is noted
   (note_nats_failure) on its way through the core. */
typedef struct nats_backend {
    opstate_nats *conn;
    opstate_nats_log *log;
    opstate_log inner;
    int64_t ack_wait_ms; /* publish --batch: the wait for the acknowledgments of a window */
} nats_backend;

static opstate_result nats_append(void *user, opstate_bytes subject, opstate_bytes data,
                                  const opstate_append_options *opts, opstate_append_result *out, opstate_error *err)
{
    const opstate_log *in = &((nats_backend *)user)->inner;
    return note_nats_failure(in->append(in->user, subject, data, opts, out, err), err);
}

static opstate_result nats_read(void *user, opstate_bytes filter, uint64_t from_seq, int64_t wait_ns,
                                opstate_log_message *msgs, size_t max, size_t *count, opstate_error *err)
{
    const opstate_log *in = &((nats_backend *)user)->inner;
    return note_nats_failure(in->read(in->user, filter, from_seq, wait_ns, msgs, max, count, err), err);
}

static opstate_result nats_info(void *user, opstate_stream_info *out, opstate_error *err)
{
    const opstate_log *in = &((nats_backend *)user)->inner;
    return note_nats_failure(in->info(in->user, out, err), err);
}

static opstate_result nats_last_per_subject(void *user, opstate_bytes filter, opstate_log_visit_fn fn, void *fn_user,
                                            opstate_error *err)
{
    const opstate_log *in = &((nats_backend *)user)->inner;
    return note_nats_failure(in->last_per_subject(in->user, filter, fn, fn_user, err), err);
}

static opstate_result nats_ack(void *user, uint64_t upto_seq, opstate_error *err)
{
    const opstate_log *in = &((nats_backend *)user)->inner;
    return note_nats_failure(in->ack(in->user, upto_seq, err), err);
}

static void nats_wrap(nats_backend *b, opstate_log *out)
{
    b->inner = opstate_nats_log_iface(b->log);
    out->user = b;
    out->append = nats_append;
    out->read = nats_read;
    out->info = nats_info;
    out->last_per_subject = nats_last_per_subject;
    out->ack = nats_ack;
}

/* An event of publish --batch by its id (outcomes name events by id). */
typedef struct id_index {
    opstate_id id;
    size_t at; /* in batch_input.events */
} id_index;

static int id_index_compare(const void *a, const void *b)
{
    const id_index *x = (const id_index *)a, *y = (const id_index *)b;
    int c = memcmp(x->id.bytes, y->id.bytes, sizeof x->id.bytes);
    return c ? c : (x->at > y->at) - (x->at < y->at);
}

/* publish --batch on NATS: the input, its events sorted by id, the totals. */
typedef struct nats_batch {
    batch_input *in;
    id_index *by_id;
    batch_totals *t;
} nats_batch;

/* The first event sent with this id that has no outcome yet (an id may be
   on several lines), or NULL. */
static batch_event *nats_batch_find(const nats_batch *b, const opstate_id *id)
{
    size_t lo = 0, hi = b->in->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (memcmp(b->by_id[mid].id.bytes, id->bytes, sizeof id->bytes) < 0) lo = mid + 1;
        else hi = mid;
    }
    for (; lo < b->in->n && opstate_id_equal(&b->by_id[lo].id, id); lo++)
        if (b->in->events[b->by_id[lo].at].state == BATCH_SENT) return &b->in->events[b->by_id[lo].at];
    return NULL;
}

/* One outcome of opstate_nats_publish_wait: the event's new state (a
   TIMEOUT leaves it SENT: not acknowledged). */
static void nats_batch_outcome(void *user, const opstate_nats_outcome *o)
{
    nats_batch *b = (nats_batch *)user;
    batch_event *e = nats_batch_find(b, &o->id);
    if (!e || o->result == OPSTATE_TIMEOUT) return;
    if (o->result != OPSTATE_OK) {
        e->state = BATCH_REFUSED;
        if (!b->t->first_refused) {
            b->t->first_refused = e;
            b->t->refusal = o->result;
            b->t->js_error = o->js_error;
        }
        return;
    }
    e->state = o->duplicate ? BATCH_DUPLICATE : BATCH_PUBLISHED;
    if (o->seq > b->t->last_seq) b->t->last_seq = o->seq;
}

/* Sends events [from, to) without waiting; returns where sending stopped
   (to: all were sent). */
static size_t nats_batch_send(nats_backend *nb, const char *prefix, batch_input *in, size_t from, size_t to,
                              batch_totals *t)
{
    opstate_error err;
    opstate_result r;
    for (; from < to; from++) {
        memset(&err, 0, sizeof err);
        r = note_nats_failure(opstate_nats_publish_async(nb->log, text_bytes(prefix), &in->events[from].ev, NULL, &err), &err);
        if (r != OPSTATE_OK) {
            t->stopped_at = in->events[from].line;
            t->stop_reason = r;
            return from;
        }
        in->events[from].state = BATCH_SENT;
    }
    return to;
}

/* publish --batch on NATS: windows of NATS_BATCH_WINDOW events sent
   asynchronously, each followed by the wait for their acknowledgments
   (bounded: --ack-wait-ms). Sending stops after a window that could not
   all be sent or not all acknowledged: the connection is in doubt. */
static int nats_batch_publish(log_handle *h, const char *prefix, batch_input *in, batch_totals *t)
{
    nats_backend *nb = (nats_backend *)h->backend;
    nats_batch b;
    opstate_error err;
    opstate_result r = OPSTATE_OK;
    size_t i, at = 0, end;
    b.in = in;
    b.t = t;
    if (!(b.by_id = (id_index *)calloc(in->n ? in->n : 1, sizeof *b.by_id)))
        return fail(STATUS_FAILED, "publish --batch: out of memory");
    for (i = 0; i < in->n; i++) {
        b.by_id[i].id = in->events[i].ev.id;
        b.by_id[i].at = i;
    }
    qsort(b.by_id, in->n, sizeof *b.by_id, id_index_compare);
    while (r == OPSTATE_OK && at < in->n) {
        end = in->n - at > NATS_BATCH_WINDOW ? at + NATS_BATCH_WINDOW : in->n;
        at = nats_batch_send(nb, prefix, in, at, end, t);
        memset(&err, 0, sizeof err);
        r = note_nats_failure(opstate_nats_publish_wait(nb->log, nb->ack_wait_ms, nats_batch_outcome, &b, &err), &err);
        if (at < end) break;
    }
    free(b.by_id);
    if (r == OPSTATE_OK || r == OPSTATE_TIMEOUT) return STATUS_OK;
    return fail_result(r, &err, "publish --batch to %s: waiting for acknowledgments", quoted(h->uri));
}

static void nats_log_close(log_handle *h)
{
    nats_backend *b = (nats_backend *)h->backend;
    if (!b) return;
    opstate_nats_log_close(b->log);
    opstate_nats_close(b->conn);
    free(b);
    h->backend = NULL;
    nats_Close(); /* nats.c's threads and memory: the tool opens one log per run */
}

/* Connects, and opens the companion's log over the stream or bucket. */
static int nats_connect(const char *uri, const nats_uri *u, const log_open_options *o, nats_backend *b)
{
    opstate_nats_config nc;
    opstate_nats_log_config lc;
    opstate_error err;
    opstate_result r;
    memset(&nc, 0, sizeof nc);
    memset(&lc, 0, sizeof lc);
    memset(&err, 0, sizeof err);
    nc.urls = u->urls;
    nc.name = "opstate";
    nc.logger = tool_logger();
    nc.creds_file = env_value("NATS_CREDS");
    nc.user = env_value("NATS_USER");
    nc.password = env_value("NATS_PASSWORD");
    nc.tls_ca = env_value("NATS_CA");
    nc.tls_cert = env_value("NATS_CERT");
    nc.tls_key = env_value("NATS_KEY");
    r = note_nats_failure(opstate_nats_connect(&nc, &b->conn, &err), &err);
    if (r != OPSTATE_OK) return fail_result(r, &err, "--log %s: cannot connect to %s", quoted(uri), u->urls);
    lc.stream = u->bucket ? NULL : u->name;
    lc.kv_bucket = u->bucket ? u->name : NULL;
    lc.durable = o->durable;
    r = note_nats_failure(opstate_nats_log_open(b->conn, &lc, &b->log, &err), &err);
    return r == OPSTATE_OK ? STATUS_OK : fail_result(r, &err, "--log %s", quoted(uri));
}

/* The stream or bucket exists (reading). */
static int nats_check_exists(const char *uri, const nats_uri *u, nats_backend *b)
{
    opstate_stream_info info;
    opstate_error err;
    opstate_result r;
    memset(&err, 0, sizeof err);
    r = nats_info(b, &info, &err);
    if (r == OPSTATE_NOT_FOUND || (r != OPSTATE_OK && err.dep_detail == JS_STREAM_NOT_FOUND))
        return fail(STATUS_NOT_FOUND, "--log %s: no %s %s on %s", quoted(uri), u->bucket ? "KV bucket" : "stream",
                    quoted(u->name), u->urls);
    return r == OPSTATE_OK ? STATUS_OK : fail_result(r, &err, "--log %s", quoted(uri));
}

/* publish: the stream exists with subjects "<prefix>.>" and the asked
   limits, made if need be. An existing stream is never changed. */
static int nats_ensure_stream(const char *uri, const nats_uri *u, const log_open_options *o, nats_backend *b)
{
    opstate_nats_stream_config sc;
    opstate_error err;
    opstate_result r;
    memset(&sc, 0, sizeof sc);
    memset(&err, 0, sizeof err);
    sc.stream = u->name;
    sc.prefix = o->prefix;
    sc.max_messages = o->max_messages;
    sc.max_per_subject = o->max_per_subject;
    sc.replicas = (int)o->replicas;
    r = note_nats_failure(opstate_nats_stream_ensure(b->conn, &sc, &err), &err);
    if (r == OPSTATE_CONFLICT)
        return fail(STATUS_FAILED, "--log %s: stream %s differs from what publish asks (subjects '%s.>', --max-messages %llu, "
                    "--max-per-subject %llu; 0: not asked): %s; publish never changes a stream", quoted(uri), quoted(u->name),
                    o->prefix, (unsigned long long)o->max_messages, (unsigned long long)o->max_per_subject,
                    err.field ? err.field : "another configuration");
    if (r != OPSTATE_OK && err.dep_detail == JS_SUBJECTS_OVERLAP)
        return fail(STATUS_FAILED, "--log %s: cannot create stream %s: subjects '%s.>' overlap another stream's (use another "
                    "--prefix, or that stream)", quoted(uri), quoted(u->name), o->prefix);
    return r == OPSTATE_OK ? STATUS_OK : fail_result(r, &err, "--log %s: ensuring stream %s", quoted(uri), quoted(u->name));
}

static int nats_log_open(const char *uri, const char *rest, const log_open_options *o, log_handle *h)
{
    nats_backend *b;
    nats_uri u;
    int status = parse_nats_uri(uri, rest, o->server, &u);
    if (status != STATUS_OK) return status;
    if (u.bucket && o->create)
        return fail(STATUS_USAGE, "--log %s: a KV bucket is read-only here (write it with a KV client, e.g. nats kv put)",
                    quoted(uri));
    if (!(b = (nats_backend *)calloc(1, sizeof *b))) return fail(STATUS_FAILED, "--log %s: out of memory", quoted(uri));
    h->backend = b;
    b->ack_wait_ms = o->ack_wait_ms ? (int64_t)o->ack_wait_ms : NATS_ACK_WAIT_MS;
    if ((status = nats_connect(uri, &u, o, b)) == STATUS_OK) {
        nats_wrap(b, &h->log);
        status = o->create ? nats_ensure_stream(uri, &u, o, b) : nats_check_exists(uri, &u, b);
    }
    if (status != STATUS_OK) {
        nats_log_close(h);
        return status;
    }
    h->bucket = u.bucket;
    h->remote = true;
    h->batch_publish = nats_batch_publish;
    h->close = nats_log_close;
    return STATUS_OK;
}

/* nats://HOST:PORT[,...]/NAME -> ./opstate-data/nats-HOST-PORT-NAME.state,
   after the first server (kv-NAME for a bucket). */
static int nats_default_state_dir(const char *uri, const char *rest, const char *server, char *buf)
{
    nats_uri u;
    int status = parse_nats_uri(uri, rest, server, &u);
    if (status == STATUS_OK)
        snprintf(buf, PATH_CAP, "%s/nats-%s-%s%s.state", DEFAULT_DATA_DIR, u.first, u.bucket ? "kv-" : "", u.name);
    return status;
}

/* Every kind of log the tool knows. */
static const log_backend log_backends[] = {
    {"lmdb:", lmdb_log_open, lmdb_default_state_dir},
    {"nats://", nats_log_open, nats_default_state_dir},
};

static const log_backend *find_backend(const char *uri, const char **rest)
{
    size_t i;
    for (i = 0; i < sizeof log_backends / sizeof log_backends[0]; i++) {
        size_t n = strlen(log_backends[i].scheme);
        if (strncmp(uri, log_backends[i].scheme, n) == 0) {
            *rest = uri + n;
            return &log_backends[i];
        }
    }
    fail(STATUS_USAGE, "--log %s: unknown log URI (use lmdb:PATH, nats://HOST[:PORT][,...]/STREAM, nats:///STREAM or "
         "nats://.../kv/BUCKET)",
         quoted(uri));
    return NULL;
}

static const char *log_uri_arg(const args *a)
{
    const char *uri = opt(a, "--log");
    return uri ? uri : DEFAULT_LOG_URI;
}

static int log_open(const args *a, const log_open_options *o, log_handle *h)
{
    const char *rest;
    const log_backend *b;
    log_open_options with_server = *o;
    memset(h, 0, sizeof *h);
    h->uri = log_uri_arg(a);
    with_server.server = opt(a, "--server");
    if (!(b = find_backend(h->uri, &rest))) return STATUS_USAGE;
    return b->open(h->uri, rest, &with_server, h);
}

static void log_close(log_handle *h)
{
    if (h->close) h->close(h);
    h->close = NULL;
}

/* The options of a command that reads the log (durable: consume --durable). */
static log_open_options read_options(const char *durable)
{
    log_open_options o;
    memset(&o, 0, sizeof o);
    o.durable = durable;
    return o;
}

/* A KV bucket's events all have scope BUCKET and kind kv: it takes no
   subject filter (a read of it ignores one). */
static int check_bucket_filter(const log_handle *h, opstate_bytes filter)
{
    if (h->bucket && filter.len)
        return fail(STATUS_USAGE, "--log %s: a KV bucket takes no --scope or --filter (its keys are events of scope "
                    "BUCKET, kind kv)", quoted(h->uri));
    return STATUS_OK;
}

/* >>state --------------------------------------------------------------- */

/* The LMDB environment holding a consumer's state store. */
typedef struct state_handle {
    char dir[PATH_CAP];
    const char *label; /* "--state", or "state" when it is the default */
    const char *name;
    opstate_lmdb *env;
    opstate_lmdb_store *store;
} state_handle;

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
static int state_env_open_at(state_handle *s, bool create)
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
    ec.logger = tool_logger();
    ec.access = create ? OPSTATE_LMDB_CREATE : OPSTATE_LMDB_READ_ONLY; /* looking never writes */
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

static int state_env_open(const args *a, bool create, state_handle *s)
{
    int status = state_dir_arg(a, s->dir, &s->label);
    return status != STATUS_OK ? status : state_env_open_at(s, create);
}

/* Opens the environment and the store named by --name. */
static int state_open(const args *a, bool create, bool read_through, state_handle *s)
{
    opstate_lmdb_store_config sc;
    opstate_error err;
    opstate_result r;
    const char *name = opt(a, "--name");
    int status;
    memset(s, 0, sizeof *s);
    s->name = name ? name : DEFAULT_STORE_NAME;
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

static void state_close(state_handle *s)
{
    opstate_lmdb_store_close(s->store);
    opstate_lmdb_close(s->env);
    s->store = NULL;
    s->env = NULL;
}

/* >>progress ------------------------------------------------------------ */

/* A progress line on stderr (rate, percent, ETA), only on a terminal. */
typedef struct progress {
    bool enabled, shown;
    const char *what;
    int64_t started, last_shown;
} progress;

static void progress_init(progress *p, const char *what)
{
    memset(p, 0, sizeof *p);
    p->enabled = isatty(STDERR_FILENO) != 0;
    p->what = what;
    p->started = p->last_shown = monotonic_ns(); /* first line after 200 ms: quick runs show none */
}

static void progress_update(void *user, uint64_t start, uint64_t end, uint64_t count, uint64_t current)
{
    progress *p = (progress *)user;
    int64_t now = monotonic_ns();
    double seconds = (double)(now - p->started) / 1e9, rate, total, done, eta;
    if (!p->enabled || now - p->last_shown < 200 * NS_PER_MS) return;
    p->last_shown = now;
    p->shown = true;
    rate = seconds > 0 ? (double)count / seconds : 0;
    total = end >= start ? (double)(end - start + 1) : 0;
    done = current >= start ? (double)(current - start + 1) : 0;
    if (done > total) done = total;
    eta = rate > 0 ? (total - done) / rate : 0;
    fprintf(stderr, "\r%s: %llu events, %.0f/s, %5.1f%% of seq %llu..%llu, ETA %.1f s   ", p->what,
            (unsigned long long)count, rate, total > 0 ? 100.0 * done / total : 100.0, (unsigned long long)start,
            (unsigned long long)end, eta);
    fflush(stderr);
}

static void progress_finish(progress *p)
{
    if (p->shown) fputc('\n', stderr);
    p->shown = false;
}

/* >>json ---------------------------------------------------------------- */

static void json_string(FILE *out, const char *s)
{
    fputc('"', out);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') fprintf(out, "\\%c", c);
        else if (c < 0x20) fprintf(out, "\\u%04x", c);
        else fputc(c, out);
    }
    fputc('"', out);
}

static void json_position(FILE *out, const char *name, opstate_position p)
{
    char t[TIME_CAP];
    fprintf(out, "\"%s\":{\"seq\":%llu,\"time\":%lld,\"time_text\":\"%s\",\"epoch\":%llu}", name,
            (unsigned long long)p.seq, (long long)p.time, format_time(p.time, t), (unsigned long long)p.epoch);
}

/* Writes the fold as the tail of a JSON object, "count":N,"items":[...]}
   (opstate_kv_to_json without its opening brace): the caller has written
   "{" and its own fields, each followed by a comma. */
static int json_state_tail(FILE *out, const opstate_kv *kv)
{
    size_t n = 0;
    char *buf;
    opstate_result r = opstate_kv_to_json(kv, NULL, 0, &n);
    if (r != OPSTATE_OK) return fail_result(r, NULL, "rendering the state as JSON");
    if (!(buf = (char *)malloc(n))) return fail(STATUS_FAILED, "rendering the state as JSON: out of memory");
    r = opstate_kv_to_json(kv, buf, n, &n);
    if (r == OPSTATE_OK) {
        fwrite(buf + 1, 1, n - 1, out);
        fputc('\n', out);
    }
    free(buf);
    return r == OPSTATE_OK ? STATUS_OK : fail_result(r, NULL, "rendering the state as JSON");
}

/* >>publish ------------------------------------------------------------- */

/* 8 bytes of entropy for an id, from a pool refilled by getrandom(). */
static int next_entropy(uint8_t out[8])
{
    static uint8_t pool[4096];
    static size_t used = sizeof pool;
    if (used == sizeof pool) {
        size_t got = 0;
        while (got < sizeof pool) {
            ssize_t n = getrandom(pool + got, sizeof pool - got, 0);
            if (n < 0 && errno != EINTR) return fail(STATUS_FAILED, "getrandom: %s", strerror(errno));
            if (n > 0) got += (size_t)n;
        }
        used = 0;
    }
    memcpy(out, pool + used, 8);
    used += 8;
    return STATUS_OK;
}

static int time_ordered_id(opstate_id *id)
{
    uint8_t entropy[8];
    int status = next_entropy(entropy);
    if (status == STATUS_OK && opstate_id_time_ordered(wallclock_ns(NULL), entropy, id) != OPSTATE_OK)
        status = fail(STATUS_FAILED, "the clock is before 1970: cannot make a time-ordered id");
    return status;
}

/* One event's fields, checked; `label` prefixes what names each input
   ("--" for flags, "stdin line N: " for --batch). */
static int event_from_fields(const char *label, const char *scope, const char *kind, const char *key,
                             const char *op, opstate_event *ev)
{
    char name[64];
    int status;
    snprintf(name, sizeof name, "%sscope", label);
    if ((status = check_token(name, scope, "scope")) != STATUS_OK) return status;
    snprintf(name, sizeof name, "%skind", label);
    if ((status = check_token(name, kind, "kind")) != STATUS_OK) return status;
    snprintf(name, sizeof name, "%skey", label);
    if (key && (status = check_key(name, key)) != STATUS_OK) return status;
    snprintf(name, sizeof name, "%sop", label);
    if ((status = parse_op(name, op, &ev->op)) != STATUS_OK) return status;
    ev->scope = text_bytes(scope);
    ev->kind = text_bytes(kind);
    ev->key = text_bytes(key);
    return STATUS_OK;
}

static void subject_text(const char *prefix, const opstate_event *ev, char *buf, size_t cap)
{
    size_t n = 0;
    if (opstate_subject_build(prefix, strlen(prefix), ev->scope, ev->kind, ev->key, buf, cap - 1, &n, NULL) != OPSTATE_OK)
        n = 0;
    buf[n] = '\0';
}

/* Appends ev under the prefix; *out says where (or that it was a repeat). */
static int append_event(const log_handle *h, const char *prefix, const opstate_event *ev,
                        const opstate_append_options *opts, opstate_append_result *out)
{
    opstate_error err;
    char subject[FILTER_CAP];
    opstate_result r;
    memset(&err, 0, sizeof err);
    r = opstate_publish(&h->log, text_bytes(prefix), ev, opts, NULL, out, &err);
    if (r == OPSTATE_OK) return STATUS_OK;
    subject_text(prefix, ev, subject, sizeof subject);
    if (r == OPSTATE_CONFLICT)
        return fail(STATUS_FAILED,
                    "--expect-seq %llu: conflict on %s: its last message is not at sequence %llu "
                    "(another writer got there first; re-read and retry)",
                    (unsigned long long)opts->last_subject_seq, quoted(subject), (unsigned long long)opts->last_subject_seq);
    return fail_result(r, &err, "publishing to %s (subject %s)", quoted(h->uri), quoted(subject));
}

/* Data from --data STR, --data - (stdin) or --data-file F. */
static int event_data(const args *a, uint8_t **owned, opstate_bytes *data)
{
    static const char *const one_of[] = {"--data", "--data-file", NULL};
    const char *text = opt(a, "--data"), *file = opt(a, "--data-file");
    FILE *f;
    int status = exclusive(a, one_of);
    *owned = NULL;
    data->ptr = NULL;
    data->len = 0;
    if (status != STATUS_OK) return status;
    if (text && strcmp(text, "-") != 0) {
        *data = text_bytes(text);
        if (data->len > OPSTATE_MAX_DATA_LEN) return fail(STATUS_USAGE, "--data: larger than %u bytes", (unsigned)OPSTATE_MAX_DATA_LEN);
        return STATUS_OK;
    }
    if (!text && !file) return STATUS_OK;
    if (!(f = text ? stdin : fopen(file, "rb")))
        return fail(errno == ENOENT ? STATUS_NOT_FOUND : STATUS_FAILED, "--data-file %s: %s", quoted(file), strerror(errno));
    status = read_all(text ? "--data -" : "--data-file", f, OPSTATE_MAX_DATA_LEN, owned, &data->len);
    if (f != stdin) fclose(f);
    data->ptr = *owned;
    return status;
}

/* An event id given as text; `label` names the input. */
static int parse_id(const char *label, const char *text, opstate_id *out)
{
    if (opstate_id_from_text(text, strlen(text), out, NULL) != OPSTATE_OK)
        return fail(STATUS_USAGE, "%s %s: expected a lowercase UUID like 0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", label,
                    quoted(text));
    return STATUS_OK;
}

/* --id TEXT or a fresh time-ordered id; --time T / --no-time. */
static int event_identity(const args *a, opstate_event *ev)
{
    static const char *const one_of[] = {"--time", "--no-time", NULL};
    const char *id = opt(a, "--id"), *when = opt(a, "--time");
    int status = exclusive(a, one_of);
    if (status != STATUS_OK) return status;
    if (id && (status = parse_id("--id", id, &ev->id)) != STATUS_OK) return status;
    if (!id && (status = time_ordered_id(&ev->id)) != STATUS_OK) return status;
    ev->has_time = !flag(a, "--no-time");
    ev->time = wallclock_ns(NULL);
    if (when) status = parse_time("--time", when, &ev->time);
    return status;
}

/* The log options of publish: its prefix, and the limits of a NATS
   stream it creates (an existing one must have them). */
static int publish_log_options(const args *a, bool bulk, log_open_options *lo)
{
    const char *max = opt(a, "--max-messages"), *per = opt(a, "--max-per-subject"), *replicas = opt(a, "--replicas");
    int status = check_prefix(prefix_arg(a));
    memset(lo, 0, sizeof *lo);
    lo->create = true;
    lo->bulk = bulk;
    lo->prefix = prefix_arg(a);
    if (status == STATUS_OK && max) status = parse_u64("--max-messages", max, 1, INT64_MAX, &lo->max_messages);
    if (status == STATUS_OK && per) status = parse_u64("--max-per-subject", per, 1, INT64_MAX, &lo->max_per_subject);
    if (status == STATUS_OK && replicas) status = parse_u64("--replicas", replicas, 1, 5, &lo->replicas);
    return status;
}

static int publish_one(const args *a)
{
    const char *scope = opt(a, "--scope"), *kind = opt(a, "--kind"), *expect = opt(a, "--expect-seq");
    opstate_event ev;
    opstate_append_options ao;
    opstate_append_result res;
    log_open_options lo;
    log_handle h;
    uint8_t *owned = NULL;
    char idtext[OPSTATE_ID_TEXT_LEN + 1] = {0}, subject[FILTER_CAP];
    int status = STATUS_OK;
    memset(&ev, 0, sizeof ev);
    memset(&ao, 0, sizeof ao);
    if (!scope || !kind || !opt(a, "--op"))
        return fail(STATUS_USAGE, "publish: --scope, --kind and --op are required (or --batch; see opstate publish --help)");
    if ((status = event_from_fields("--", scope, kind, opt(a, "--key"), opt(a, "--op"), &ev)) != STATUS_OK ||
        (status = publish_log_options(a, false, &lo)) != STATUS_OK || (status = event_identity(a, &ev)) != STATUS_OK ||
        (expect && (status = parse_u64("--expect-seq", expect, 0, UINT64_MAX, &ao.last_subject_seq)) != STATUS_OK) ||
        (status = event_data(a, &owned, &ev.data)) != STATUS_OK || (status = log_open(a, &lo, &h)) != STATUS_OK) {
        free(owned);
        return status;
    }
    ao.expect_last_subject_seq = expect != NULL;
    status = append_event(&h, lo.prefix, &ev, &ao, &res);
    log_close(&h);
    free(owned);
    if (status != STATUS_OK) return status;
    opstate_id_to_text(&ev.id, idtext);
    subject_text(lo.prefix, &ev, subject, sizeof subject);
    if (res.duplicate) printf("duplicate: id %s is already at sequence %llu; not appended again\n", idtext, (unsigned long long)res.seq);
    else printf("published %s at sequence %llu (id %s)\n", subject, (unsigned long long)res.seq, idtext);
    return STATUS_OK;
}

/* publish --batch. The whole input is read and every line checked before
   anything is appended. A line without id= gets an id derived from the
   input's digest and the line number: the same input, byte for byte, is
   the same events, so publishing it again is deduplicated by the log. */

#define BATCH_INPUT_MAX ((size_t)1 << 31) /* bytes of stdin publish --batch reads */
#define BATCH_LINE_FORM "[id=UUID] [time=T] <scope> <kind> <key> <op> [data]"

/* What every line of one input shares. */
typedef struct batch_context {
    const char *prefix;
    opstate_id digest; /* of the whole input */
    int64_t now;       /* the time of events without time= */
} batch_context;

/* A digest of the whole input: the content id of an event holding it. */
static opstate_id batch_digest(const uint8_t *bytes, size_t len)
{
    opstate_event ev;
    memset(&ev, 0, sizeof ev);
    ev.scope = text_bytes("opstate-batch-input");
    ev.data.ptr = bytes;
    ev.data.len = len;
    return opstate_id_from_content(&ev);
}

/* The id of line `number` of an input without id=: the content id of an
   event naming the input's digest and the line number (so equal lines
   stay distinct events, and other inputs get other ids). */
static opstate_id derived_id(const opstate_id *digest, uint64_t number)
{
    char key[OPSTATE_ID_TEXT_LEN + 24];
    opstate_event ev;
    memset(&ev, 0, sizeof ev);
    opstate_id_to_text(digest, key);
    snprintf(key + OPSTATE_ID_TEXT_LEN, sizeof key - OPSTATE_ID_TEXT_LEN, "/%llu", (unsigned long long)number);
    ev.scope = text_bytes("opstate-batch-line");
    ev.key = text_bytes(key);
    return opstate_id_from_content(&ev);
}

/* The next blank-separated field of *p, cut in place (NULL: none left);
   *p moves past the one blank after it. */
static char *next_field(char **p)
{
    char *start = *p + strspn(*p, " \t"), *end = start + strcspn(start, " \t");
    if (end == start) return NULL;
    *p = *end ? end + 1 : end;
    *end = '\0';
    return start;
}

/* The event can go under the prefix: its subject and encoding are within
   their limits (checked before anything is sent). */
static int check_publishable(const char *label, const char *prefix, const opstate_event *ev)
{
    opstate_error err;
    size_t n = 0;
    opstate_result r;
    memset(&err, 0, sizeof err);
    r = opstate_subject_build(prefix, strlen(prefix), ev->scope, ev->kind, ev->key, NULL, 0, &n, &err);
    if (r == OPSTATE_OK) r = opstate_event_encode(ev, NULL, 0, &n, &err);
    return r == OPSTATE_OK ? STATUS_OK : fail_result(r, &err, "%sthe event cannot be published", label);
}

/* id= or the derived id; time= or the batch's time. */
static int batch_identity(const char *label, const char *id, const char *when, uint64_t number,
                          const batch_context *c, opstate_event *ev)
{
    char name[64];
    int status = STATUS_OK;
    ev->has_time = true;
    ev->time = c->now;
    snprintf(name, sizeof name, "%sid", label);
    if (id) status = parse_id(name, id, &ev->id);
    else ev->id = derived_id(&c->digest, number);
    snprintf(name, sizeof name, "%stime", label);
    if (status == STATUS_OK && when) status = parse_time(name, when, &ev->time);
    return status;
}

/* One line, BATCH_LINE_FORM (key - for none, data the rest of the line),
   into *out; *is_event is false for a blank line or a # comment. */
static int batch_line(char *line, uint64_t number, const batch_context *c, batch_event *out, bool *is_event)
{
    char label[48], *p = line, *field[4];
    const char *id = NULL, *when = NULL;
    size_t n = strlen(line);
    int i, status;
    while (n && line[n - 1] == '\r') line[--n] = '\0';
    *is_event = false;
    if (line[strspn(line, " \t")] == '\0' || line[0] == '#') return STATUS_OK;
    snprintf(label, sizeof label, "stdin line %llu: ", (unsigned long long)number);
    while ((field[0] = next_field(&p)) && (strncmp(field[0], "id=", 3) == 0 || strncmp(field[0], "time=", 5) == 0)) {
        const char **slot = field[0][0] == 'i' ? &id : &when;
        if (*slot) return fail(STATUS_USAGE, "%s%s given twice", label, field[0][0] == 'i' ? "id=" : "time=");
        *slot = strchr(field[0], '=') + 1;
    }
    for (i = 1; i < 4; i++) field[i] = field[i - 1] ? next_field(&p) : NULL;
    if (!field[3]) return fail(STATUS_USAGE, "%sexpected \"" BATCH_LINE_FORM "\" (key - for none)", label);
    if (strcmp(field[2], "-") == 0) field[2] = NULL;
    memset(out, 0, sizeof *out);
    out->line = number;
    if ((status = event_from_fields(label, field[0], field[1], field[2], field[3], &out->ev)) != STATUS_OK ||
        (status = batch_identity(label, id, when, number, c, &out->ev)) != STATUS_OK)
        return status;
    out->ev.data = text_bytes(p);
    *is_event = true;
    return check_publishable(label, c->prefix, &out->ev);
}

/* Reads all of stdin and parses every line: the first bad one ends it
   (exit 2) before anything is appended. */
static int batch_read(const char *prefix, batch_input *in)
{
    batch_context c;
    char *p, *end, *stop;
    uint64_t number = 0;
    bool is_event;
    int status = read_all("publish --batch: stdin", stdin, BATCH_INPUT_MAX, &in->bytes, &in->len);
    if (status != STATUS_OK) return status;
    c.prefix = prefix;
    c.digest = batch_digest(in->bytes, in->len);
    c.now = wallclock_ns(NULL);
    stop = (char *)in->bytes + in->len;
    for (p = (char *)in->bytes; p < stop; p++) number += *p == '\n';
    if (!(in->events = (batch_event *)calloc(number + 1, sizeof *in->events)))
        return fail(STATUS_FAILED, "publish --batch: out of memory for %llu lines", (unsigned long long)number + 1);
    for (p = (char *)in->bytes, number = 1; status == STATUS_OK && p < stop; p = end + 1, number++) {
        if (!(end = (char *)memchr(p, '\n', (size_t)(stop - p)))) end = stop;
        *end = '\0'; /* read_all leaves a spare byte after the input */
        status = batch_line(p, number, &c, &in->events[in->n], &is_event);
        if (is_event && status == STATUS_OK) in->n++;
    }
    return status;
}

/* Counts the events by state. */
static void batch_count(const batch_input *in, batch_totals *t)
{
    size_t i;
    for (i = 0; i < in->n; i++) {
        int state = in->events[i].state;
        if (state == BATCH_PUBLISHED) t->published++;
        else if (state == BATCH_DUPLICATE) t->duplicates++;
        else if (state == BATCH_REFUSED) t->refused++;
        else t->unacked++;
    }
}

static void print_batch_summary(const batch_totals *t, int64_t started)
{
    double seconds = (double)(monotonic_ns() - started) / 1e9;
    printf("published %llu events (%llu duplicates, %llu not acknowledged, %llu refused) in %.2f s (%.0f events/s); "
           "last sequence %llu\n",
           (unsigned long long)t->published, (unsigned long long)t->duplicates, (unsigned long long)t->unacked,
           (unsigned long long)t->refused, seconds, seconds > 0 ? (double)t->published / seconds : 0.0,
           (unsigned long long)t->last_seq);
}

/* The one error line of a batch with events not acknowledged or refused. */
static int batch_failure(const char *uri, const batch_totals *t)
{
    char unacked[300] = "", stopped[100] = "", refused[200] = "", id[OPSTATE_ID_TEXT_LEN + 1] = {0}, code[40] = "";
    if (!t->unacked && !t->refused) return STATUS_OK;
    if (t->stopped_at)
        snprintf(stopped, sizeof stopped, "; sending stopped at line %llu: %s", (unsigned long long)t->stopped_at,
                 opstate_result_str(t->stop_reason));
    if (t->unacked)
        snprintf(unacked, sizeof unacked, "%llu events not acknowledged (they may or may not be in the log: publish the "
                 "same input, or the --unacked file, again; their ids make repeats duplicates)%s",
                 (unsigned long long)t->unacked, stopped);
    if (t->first_refused) {
        opstate_id_to_text(&t->first_refused->ev.id, id);
        if (t->js_error) snprintf(code, sizeof code, ", JetStream error %ld", t->js_error);
        snprintf(refused, sizeof refused, "%s%llu events refused; the first, line %llu (id %s): %s%s", t->unacked ? "; " : "",
                 (unsigned long long)t->refused, (unsigned long long)t->first_refused->line, id,
                 opstate_result_str(t->refusal), code);
    }
    return fail(STATUS_FAILED, "publish --batch to %s: %s%s", quoted(uri), unacked, refused);
}

/* One event as a batch line with its id and time given, so that
   publishing the line again sends the same event. */
static void write_batch_line(FILE *f, const batch_event *e)
{
    char id[OPSTATE_ID_TEXT_LEN + 1] = {0};
    const opstate_event *ev = &e->ev;
    opstate_id_to_text(&ev->id, id);
    fprintf(f, "id=%s time=%lldns %.*s %.*s ", id, (long long)ev->time, (int)ev->scope.len, (const char *)ev->scope.ptr,
            (int)ev->kind.len, (const char *)ev->kind.ptr);
    if (ev->key.len) fwrite(ev->key.ptr, 1, ev->key.len, f);
    else fputc('-', f);
    if (ev->op == OPSTATE_OP_PUT) fputs(" put", f);
    else if (ev->op == OPSTATE_OP_DELETE) fputs(" delete", f);
    else fprintf(f, " %lu", (unsigned long)ev->op);
    if (ev->data.len) {
        fputc(' ', f);
        fwrite(ev->data.ptr, 1, ev->data.len, f);
    }
    fputc('\n', f);
}

/* --unacked FILE: every line not known to be in the log (not
   acknowledged, not sent, refused), with its id and time. */
static int write_unacked(const char *path, FILE *f, const batch_input *in)
{
    size_t i;
    bool bad;
    for (i = 0; i < in->n; i++)
        if (in->events[i].state != BATCH_PUBLISHED && in->events[i].state != BATCH_DUPLICATE)
            write_batch_line(f, &in->events[i]);
    bad = ferror(f) != 0;
    if (fclose(f) != 0) bad = true;
    return bad ? fail(STATUS_FAILED, "--unacked %s: cannot write it: %s", quoted(path), strerror(errno)) : STATUS_OK;
}

/* The options of publish --batch (none of the single event's). */
static int batch_options(const args *a, log_open_options *lo)
{
    static const char *const single[] = {"--scope", "--kind", "--key", "--op", "--data", "--data-file",
                                         "--id", "--expect-seq", "--time", "--no-time", NULL};
    const char *wait = opt(a, "--ack-wait-ms");
    int i, status = publish_log_options(a, true, lo);
    for (i = 0; single[i] && status == STATUS_OK; i++)
        if (flag(a, single[i])) status = fail(STATUS_USAGE, "publish: --batch and %s exclude each other (a line gives each event)", single[i]);
    if (status == STATUS_OK && wait) status = parse_u64("--ack-wait-ms", wait, 1, INT32_MAX, &lo->ack_wait_ms);
    return status;
}

/* Publishes the parsed input; the summary on stdout, one error line for
   events not acknowledged or refused. */
static int batch_run(const args *a, const log_open_options *lo, batch_input *in, int64_t started)
{
    batch_totals t;
    log_handle h;
    int status = log_open(a, lo, &h);
    memset(&t, 0, sizeof t);
    if (status != STATUS_OK) return status;
    status = h.batch_publish(&h, lo->prefix, in, &t);
    log_close(&h);
    if (status != STATUS_OK) return status;
    batch_count(in, &t);
    print_batch_summary(&t, started);
    return batch_failure(h.uri, &t);
}

/* publish --batch: stdin is read and checked first, then --unacked FILE
   opened (so FILE may be the input), then the log. */
static int publish_batch(const args *a)
{
    const char *unacked_path = opt(a, "--unacked");
    log_open_options lo;
    batch_input in;
    FILE *unacked = NULL;
    int64_t started = monotonic_ns();
    int status = batch_options(a, &lo);
    memset(&in, 0, sizeof in);
    if (status == STATUS_OK) status = batch_read(lo.prefix, &in);
    if (status == STATUS_OK && unacked_path && !(unacked = fopen(unacked_path, "w")))
        status = fail(errno == ENOENT ? STATUS_NOT_FOUND : STATUS_FAILED, "--unacked %s: %s", quoted(unacked_path),
                      strerror(errno));
    if (status == STATUS_OK) status = batch_run(a, &lo, &in, started);
    if (unacked) {
        int written = write_unacked(unacked_path, unacked, &in);
        if (status == STATUS_OK) status = written;
    }
    free(in.events);
    free(in.bytes);
    return status;
}

static int run_publish(const args *a)
{
    static const char *const batch_only[] = {"--unacked", "--ack-wait-ms", NULL};
    int i;
    if (flag(a, "--batch")) return publish_batch(a);
    for (i = 0; batch_only[i]; i++)
        if (flag(a, batch_only[i])) return fail(STATUS_USAGE, "publish: %s goes with --batch", batch_only[i]);
    return publish_one(a);
}

/* >>start --------------------------------------------------------------- */

/* --replay-from-* (at most one) -> where the consumer starts. */
static int parse_start(const args *a, opstate_start *start)
{
    static const char *const one_of[] = {"--replay-from-sequence", "--replay-from-time", "--replay-from-latest",
                                         "--replay-from-first", NULL};
    const char *seq = opt(a, "--replay-from-sequence"), *when = opt(a, "--replay-from-time");
    int status = exclusive(a, one_of);
    memset(start, 0, sizeof *start);
    start->kind = OPSTATE_START_RESUME;
    if (status != STATUS_OK) return status;
    if (seq) {
        start->kind = OPSTATE_START_FROM_SEQUENCE;
        return parse_u64("--replay-from-sequence", seq, 1, UINT64_MAX - 1, &start->seq);
    }
    if (when) {
        start->kind = OPSTATE_START_FROM_TIME;
        return parse_time("--replay-from-time", when, &start->time);
    }
    if (flag(a, "--replay-from-latest")) start->kind = OPSTATE_START_LATEST;
    if (flag(a, "--replay-from-first")) start->kind = OPSTATE_START_FIRST;
    return STATUS_OK;
}

#define START_OPTIONS                                                                                             \
    {"--replay-from-sequence", "N", "start at sequence N (restores only when N > the stored sequence)"},        \
    {"--replay-from-time", "T", "start at time T (restores only when T > the stored time)"},                    \
    {"--replay-from-latest", NULL, "only events appended from now on (state cleared)"},                         \
    {"--replay-from-first", NULL, "the whole retained log (state cleared: full rebuild)"}

static const char *position_text(opstate_position p, char *buf, size_t cap)
{
    char t[TIME_CAP];
    if (p.seq == 0) snprintf(buf, cap, "none");
    else snprintf(buf, cap, "seq %llu at %s", (unsigned long long)p.seq, format_time(p.time, t));
    return buf;
}

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
    p->cfg.flush_interval_ns = (int64_t)ms * NS_PER_MS;
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
    p->cfg.logger = tool_logger();
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
    warn("skipped %llu poison event(s); the last at sequence %llu: %s", (unsigned long long)(st->poison_count - *seen),
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
        warn("consume: the log failed: %s (%s); retrying for up to %lld s", opstate_result_str(r),
             err->field ? err->field : "log", (long long)(REMOTE_RETRY_NS / NS_PER_SECOND));
    }
    if (now - rs->remote_failing_since > REMOTE_RETRY_NS) return false;
    sleep_ns(NS_PER_SECOND);
    return true;
}

/* A poll succeeded: the failures in a row are over. */
static void retry_reset(retry_state *rs)
{
    if (rs->remote_failing_since) warn("consume: the log answers again");
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

/* >>replay -------------------------------------------------------------- */

static int replay_parse(const args *a, opstate_replay_config *cfg, char filter[FILTER_CAP])
{
    const char *until_seq = opt(a, "--until-seq"), *until_time = opt(a, "--until-time"), *max = opt(a, "--max-events");
    int status = subject_filter(a, filter, &cfg->filter);
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
    else if (res.poison) warn("%llu poison events skipped (they do not decode or were rejected)", (unsigned long long)res.poison);
    if (r == OPSTATE_OK && flag(a, "--json")) status = print_replay_json(&res, kv);
    else if (r == OPSTATE_OK) print_replay_text(&res, kv);
    opstate_kv_destroy(kv);
    log_close(&lh);
    return status;
}

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

/* >>verify -------------------------------------------------------------- */

/* The directory verify walks: --state DIR, else an lmdb: log's PATH. */
static int verify_dir(const args *a, state_handle *s)
{
    const char *uri = log_uri_arg(a);
    if (opt(a, "--state")) return state_env_open(a, false, s);
    if (strncmp(uri, "lmdb:", 5) != 0)
        return fail(STATUS_USAGE, "verify: --log %s: verify reads LMDB files (lmdb:PATH or --state DIR)", quoted(uri));
    if (!uri[5] || (size_t)snprintf(s->dir, PATH_CAP, "%s", uri + 5) >= PATH_CAP)
        return fail(STATUS_USAGE, "--log %s: expected lmdb:PATH", quoted(uri));
    s->label = "--log";
    return state_env_open_at(s, false);
}

static int run_verify(const args *a)
{
    opstate_lmdb_verify_report rep;
    opstate_error err;
    opstate_result r;
    state_handle s;
    int status;
    memset(&s, 0, sizeof s);
    if ((status = verify_dir(a, &s)) != STATUS_OK) return status;
    memset(&err, 0, sizeof err);
    r = opstate_lmdb_verify(s.env, &rep, &err);
    opstate_lmdb_close(s.env);
    if (r != OPSTATE_OK)
        return fail(status_for_result(r), "verify of %s: %s at %s (%llu records good before it)", quoted(s.dir),
                    opstate_result_str(r), rep.where[0] ? rep.where : "?", (unsigned long long)rep.records);
    printf("verified %s: %llu logs, %llu stores, %llu records, every checksum and sequence good\n", s.dir,
           (unsigned long long)rep.logs, (unsigned long long)rep.stores, (unsigned long long)rep.records);
    return STATUS_OK;
}

/* >>commands ------------------------------------------------------------ */

#define OPT_LOG                                                                                           \
    {"--log", "URI", "the log: lmdb:PATH (default " DEFAULT_LOG_URI ") or nats://HOST[:PORT][,...]/STREAM|kv/BUCKET"}, \
    {"--server", "URLS", "nats: the servers of a nats:///STREAM log, comma-separated (default $NATS_URL, else "   \
                         "127.0.0.1:4222)"}
#define OPT_PREFIX {"--prefix", "PREFIX", "subject prefix, dot-separated tokens (default " DEFAULT_PREFIX ")"}
#define OPT_STATE {"--state", "DIR", "LMDB directory of the state (default: the log's PATH + .state)"}
#define OPT_NAME {"--name", "NAME", "store name in that directory (default \"" DEFAULT_STORE_NAME "\")"}
#define OPT_FILTERS                                                                                      \
    {"--scope", "SCOPE", "only this scope's events (subjects <prefix>.SCOPE.>)"},                      \
    {"--filter", "SUBJECT", "only subjects matching this filter ('*' one token, '>' the rest)"}
#define OPT_END {NULL, NULL, NULL}

static const option_spec publish_options[] = {
    OPT_LOG,
    OPT_PREFIX,
    {"--scope", "SCOPE", "the event's scope: one subject token (required)"},
    {"--kind", "KIND", "the entity kind: one subject token (required)"},
    {"--key", "KEY", "the key, any text up to 1024 bytes (optional)"},
    {"--op", "OP", "put, delete or an application op 16..4294967295 (required)"},
    {"--data", "TEXT", "the payload; - reads it from stdin"},
    {"--data-file", "FILE", "the payload from a file"},
    {"--id", "UUID", "event id (default: a fresh time-ordered id); a repeat is dropped as duplicate"},
    {"--expect-seq", "N", "append only if the subject's last message is at sequence N (0: none yet)"},
    {"--time", "T", "event time (default: now)"},
    {"--no-time", NULL, "publish without an event time"},
    {"--batch", NULL, "read events from stdin, one per line: " BATCH_LINE_FORM},
    {"--unacked", "FILE", "--batch: write the lines not known to be appended to FILE, ids given (for the retry)"},
    {"--max-messages", "N", "nats: the stream keeps at most N messages (made so; an existing one must match)"},
    {"--max-per-subject", "N", "nats: the stream keeps at most N messages per subject (likewise)"},
    {"--replicas", "N", "nats: a stream publish makes has N replicas, 1..5 (default 1; an existing one is kept)"},
    {"--ack-wait-ms", "MS", "nats, --batch: wait this long for each 20,000 events' acknowledgments (default 30000)"},
    OPT_END};

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

static const option_spec replay_options[] = {
    OPT_LOG,
    OPT_PREFIX,
    OPT_FILTERS,
    {"--until-seq", "N", "stop after sequence N"},
    {"--until-time", "T", "only events published at or before T"},
    {"--max-events", "N", "stop after N applied events"},
    {"--json", NULL, "print the state as JSON: position, count, items"},
    OPT_END};

static const option_spec info_options[] = {OPT_LOG, {"--json", NULL, "print JSON"}, OPT_END};

static const option_spec inspect_options[] = {
    OPT_LOG,
    OPT_STATE,
    OPT_NAME,
    {"--json", NULL, "print position, schema, counts and every key and value as JSON"},
    {"--keys", NULL, "also list every key and value, one per line"},
    OPT_END};

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

static const option_spec export_options[] = {OPT_LOG, OPT_STATE, OPT_END};
static const option_spec import_options[] = {OPT_END};
static const option_spec verify_options[] = {OPT_LOG, OPT_STATE, OPT_END};

static const command_spec commands[] = {
    {"publish", "publish --scope S --kind K --op OP [--key K] [--data TEXT|-|--data-file F] [options]\n"
                "       opstate publish --batch [--log URI] [--prefix P] < lines",
     "Append one event to the log, or many with --batch",
     "--batch reads all of stdin, one event a line:\n"
     "    " BATCH_LINE_FORM "\n"
     "(key - for none, data the rest of the line; a first token id=... or time=... is never a scope;\n"
     "blank lines and # comments are skipped) and checks every line before it appends anything: a bad\n"
     "line exits 2 naming it, nothing appended. A line without id= gets an id derived from a SHA-256\n"
     "digest of the whole input and its line number: the same input, byte for byte, is the same events,\n"
     "so publishing it again appends nothing twice. The log drops a repeated id within its duplicate\n"
     "window (JetStream: the stream's Duplicates, 2 min by default; lmdb: the ids of its last 100,000\n"
     "messages); beyond it only a consumer's recent-id window drops it. Another input (a byte changed,\n"
     "a line added) gets other ids: give id= to control them. Lines without time= get the time the\n"
     "input was read (the derived id does not depend on it).\n"
     "On an lmdb: log the whole input is one transaction: all or nothing. On a nats:// log it goes out\n"
     "asynchronously, 20,000 events at a time, each window's acknowledgments awaited (--ack-wait-ms);\n"
     "every event ends published, duplicate, refused or not acknowledged (it may or may not be in the\n"
     "stream; sending stops after that window), and the counts are printed. Refused or unacknowledged\n"
     "events exit 1; --unacked FILE gets their lines with id= and time=, so publishing FILE (it may be\n"
     "the input itself) sends the same events again.\n"
     "An --expect-seq conflict exits 1. On a nats:// log, publish first ensures the stream: subjects\n"
     "\"<prefix>.>\" and the limits and replicas given. An existing stream is used as it is, never\n"
     "changed; it is refused (exit 1) only when its subjects do not cover \"<prefix>.>\", its retention\n"
     "is not limits, or a limit given here differs.\n",
     publish_options, 0, 0, run_publish},
    {"consume", "consume [options]", "Fold the log into a state store: restore, read, apply, flush, until stopped",
     "At start it prints one line: the restore decision, its reason, the resume state and the\n"
     "position. SIGINT or SIGTERM stops it with a final flush. With a terminal on stderr it shows\n"
     "a progress line. The state is an LMDB store (--state) for every kind of log; on a nats://\n"
     "log, reads use ephemeral ordered consumers, or with --durable a durable pull consumer that is\n"
     "acked as events are applied (the stored position stays the truth on restart).\n",
     consume_options, 0, 0, run_consume},
    {"replay", "replay [options]", "Rebuild the state as of a point in time, from the start of the log",
     "The end is fixed when the replay starts (the last sequence then); it never waits.\n", replay_options, 0, 0,
     run_replay},
    {"info", "info [--log URI] [--json]", "Show a log's first and last sequence and time, epoch and message count",
     NULL, info_options, 0, 0, run_info},
    {"inspect", "inspect [--state DIR | --log URI] [--name NAME] [--json | --keys]",
     "Show a state store: position, schema, key count, pending deltas; keys with --json or --keys", NULL,
     inspect_options, 0, 0, run_inspect},
    {"decide", "decide [--mode M] [--replay-from-...] [--stored-seq N ...] [--last-seq N ...]",
     "Explain the restore decision for given inputs (no log or store is opened)",
     "Inputs as consume sees them: the mode, the start, the stored position and the log.\n", decide_options, 0, 0,
     run_decide},
    {"export", "export DIR [--state DIR | --log URI]", "Write a compacted, checksummed copy of a state directory to DIR",
     NULL, export_options, 1, 1, run_export},
    {"import", "import DIR DEST", "Verify an export and install it as a new state directory DEST", NULL,
     import_options, 2, 2, run_import},
    {"verify", "verify [--log lmdb:PATH | --state DIR]",
     "Check every record of an LMDB log or state directory (read-only); exit 4 at the first bad one",
     "Checks the seal of every log record, that sequences go forward, the info record and its counts; a store's\n"
     "meta, every table entry, every delta record and the delta chain. It never writes.\n",
     verify_options, 0, 0, run_verify},
};

#define COMMAND_COUNT (sizeof commands / sizeof commands[0])

static void print_main_help(FILE *out)
{
    size_t i;
    fprintf(out, "opstate %s: durable, replayable operational state over an event log.\n\n"
                 "Usage: opstate <command> [options]   (opstate <command> --help for its options)\n\nCommands:\n",
            OPSTATE_VERSION_STRING);
    for (i = 0; i < COMMAND_COUNT; i++) fprintf(out, "  %-9s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\nLogs:  lmdb:PATH                      an LMDB directory (default %s)\n"
                 "       nats://HOST[:PORT]/STREAM     a JetStream stream (port 4222 by default)\n"
                 "       nats://H1:P1,H2:P2/STREAM     the same on a cluster (several servers)\n"
                 "       nats:///STREAM                servers from --server URLS, else NATS_URL, else 127.0.0.1:4222\n"
                 "       nats://HOST[:PORT]/kv/BUCKET  a JetStream KV bucket, read-only\n"
                 "       (NATS auth and TLS from the environment: NATS_CREDS, NATS_USER + NATS_PASSWORD,\n"
                 "        NATS_CA, NATS_CERT + NATS_KEY)\n"
                 "Times: RFC 3339 (2026-11-23T10:00:00Z, 2026-11-23T10:00:00.5+01:00) or ns (1763890000000000000ns).\n\n%s",
            DEFAULT_LOG_URI, exit_codes_help);
}

static int finish_stdout(int status)
{
    if (fflush(stdout) != 0 || ferror(stdout)) {
        if (status == STATUS_OK) status = fail(STATUS_FAILED, "writing to stdout failed: %s", strerror(errno));
    }
    return status;
}

int main(int argc, char **argv)
{
    size_t i;
    args a;
    int status;
    if (argc < 2) {
        print_main_help(stderr);
        return STATUS_USAGE;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        print_main_help(stdout);
        return finish_stdout(STATUS_OK);
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("opstate %s (opstate_lmdb %s, opstate_nats %s, nats.c %s)\n", OPSTATE_VERSION_STRING,
               OPSTATE_LMDB_VERSION_STRING, OPSTATE_NATS_VERSION_STRING, nats_GetVersion());
        return finish_stdout(STATUS_OK);
    }
    for (i = 0; i < COMMAND_COUNT && strcmp(argv[1], commands[i].name) != 0; i++) continue;
    if (i == COMMAND_COUNT) return fail(STATUS_USAGE, "unknown command %s (see opstate --help)", quoted(argv[1]));
    status = parse_args(&commands[i], argc - 2, argv + 2, &a);
    if (status == STATUS_HELP) return finish_stdout(STATUS_OK);
    if (status == STATUS_OK) status = commands[i].run(&a);
    return finish_stdout(status);
}
