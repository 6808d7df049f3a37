/* tool.h — what the files of the opstate tool share: the libraries'
   declarations, limits and defaults, exit statuses, the types that cross
   files and what each file offers the others (grouped by file, in the
   order data flows: errors, system, parse, output, logs, state, then the
   commands). Private to tools/opstate/; main.c holds the guide. */
#ifndef OPSTATE_TOOL_H
#define OPSTATE_TOOL_H

#include "opstate_lmdb.h"
#include "opstate_nats.h"
#include <lmdb.h> /* mdb_strerror */

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

/* >>status (errors.c) --------------------------------------------------- */

/* What the tool exits with (exit_codes_help in main.c tells the user). */
enum {
    STATUS_OK = 0,        /* done */
    STATUS_FAILED = 1,    /* runtime failure (I/O, conflict, out of memory, ...) */
    STATUS_USAGE = 2,     /* bad usage or bad input */
    STATUS_NOT_FOUND = 3, /* the log, state or store does not exist */
    STATUS_CORRUPT = 4,   /* corrupt or incompatible data */
    STATUS_POISON = 5,    /* consume stopped at a poison event */
    STATUS_HELP = -1      /* internal: help was printed, exit 0 */
};

/* >>errors (errors.c) --------------------------------------------------- */

/* The last ERROR-level line the library logged (part of the next failure
   line), and --verbose (the library's info lines too). */
extern char library_error[256];
extern bool verbose;

int status_for_result(opstate_result r);
/* 'text' with control bytes escaped and long text cut, for error lines. */
const char *quoted(const char *text);
/* Prints "opstate: <message>" as one line on stderr and returns status. */
int fail(int status, const char *fmt, ...) PRINTF_LIKE(2, 3);
/* "opstate: <context>: <result text> (<field>: <dependency text>)";
   returns the status that goes with the result. */
int fail_result(opstate_result r, const opstate_error *err, const char *fmt, ...) PRINTF_LIKE(3, 4);
void warning(const char *fmt, ...) PRINTF_LIKE(1, 2);
/* Notes a NATS call's failure (its natsStatus), so that fail_result names
   it as such; returns r. */
opstate_result note_nats_failure(opstate_result r, const opstate_error *err);
/* The library's diagnostics (warnings at once, errors into the failure line). */
opstate_diag tool_logger(void);

/* >>system (system.c) --------------------------------------------------- */

int64_t wallclock_ns(void *user);
int64_t monotonic_ns(void);
void sleep_ns(int64_t ns);
bool path_exists(const char *dir, const char *file);
int make_dirs(const char *label, const char *path);
int read_all(const char *label, FILE *f, size_t max, uint8_t **out, size_t *len);

/* >>parse (parse.c) ----------------------------------------------------- */

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

#define NAME_RULE "1..64 of A-Z a-z 0-9 _ -"

bool digits_to_u64(const char *text, uint64_t *out);
int parse_u64(const char *flag, const char *text, uint64_t min, uint64_t max, uint64_t *out);
int parse_choice(const char *flag, const char *text, const char *const *choices, int *out);
/* RFC 3339 or "<n>ns" -> ns since the Unix epoch (`flag` names the input). */
int parse_time(const char *flag, const char *text, int64_t *out);
/* RFC 3339 UTC with nanoseconds; parse_time reads it back. */
const char *format_time(int64_t ns, char out[TIME_CAP]);
/* Parses argv against cmd's options; STATUS_HELP when --help was printed. */
int parse_args(const command_spec *cmd, int argc, char **argv, args *a);
/* The value of an option the command declares (NULL when not given). */
const char *opt(const args *a, const char *name);
bool flag(const args *a, const char *name);
/* At most one of `names` (NULL-terminated) may be given. */
int exclusive(const args *a, const char *const *names);
int check_token(const char *label, const char *value, const char *what);
int check_key(const char *label, const char *key);
int parse_op(const char *label, const char *text, bool allow_app, uint32_t *op);
int check_prefix(const char *prefix);
bool is_name(const char *name);
int check_name(const char *label, const char *name, const char *what);
const char *prefix_arg(const args *a);
/* --scope S or --filter F into buf; empty: everything. */
int subject_filter(const args *a, char buf[FILTER_CAP], opstate_bytes *out);
/* The subject of one key, "<prefix>.SCOPE.KIND.<escaped KEY>", into buf. */
int key_subject(const char *prefix, const char *scope, const char *kind, const char *key, char buf[FILTER_CAP],
                size_t *n);
opstate_bytes text_bytes(const char *s);
/* --replay-from-* (at most one) -> where the consumer starts. */
int parse_start(const args *a, opstate_start *start);

/* >>output (output.c) --------------------------------------------------- */

/* A progress line on stderr (rate, percent, ETA), only on a terminal. */
typedef struct progress {
    bool enabled, shown;
    const char *what;
    int64_t started, last_shown;
} progress;

void progress_init(progress *p, const char *what);
void progress_update(void *user, uint64_t start, uint64_t end, uint64_t count, uint64_t current);
void progress_finish(progress *p);
void json_string(FILE *out, const char *s);
void json_position(FILE *out, const char *name, opstate_position p);
/* The fold as the tail of a JSON object: "count":N,"items":[...]} */
int json_state_tail(FILE *out, const opstate_kv *kv);
/* Prints "<scope> <kind> <key>\t<value>" (opstate_kv_iterate callback). */
bool print_key_value(void *user, const opstate_kv_item *item);
const char *position_text(opstate_position p, char *buf, size_t cap);

/* >>logs (logs.c, log_lmdb.c, log_nats.c) ------------------------------- */

/* How a command means to use a log. A backend refuses what it cannot do. */
typedef struct log_open_options {
    bool create;                            /* publish: make the log (stream) if it is not there */
    bool bulk;                              /* publish --batch: batched appends, one sync or wait at the end */
    const char *prefix;                     /* publish: the subject prefix (a stream's subjects) */
    const char *durable;                    /* consume --durable: a NATS durable pull consumer */
    const char *server;                     /* --server: NATS servers for a nats:///STREAM log */
    const char *subject_template;           /* --subject-template: other clients' subjects (NATS) */
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

const log_backend *find_backend(const char *uri, const char **rest);
const char *log_uri_arg(const args *a);
int log_open(const args *a, const log_open_options *o, log_handle *h);
void log_close(log_handle *h);
/* The options of a command that reads the log (durable: consume --durable). */
log_open_options read_options(const char *durable);
int check_bucket_filter(const log_handle *h, opstate_bytes filter);

int lmdb_log_open(const char *uri, const char *path, const log_open_options *o, log_handle *h);
int lmdb_default_state_dir(const char *uri, const char *path, const char *server, char *buf);
/* CONFLICT when the environment holds only the other kind ('s' stores, 'l'
   logs) than a writer is about to create. */
opstate_result refuse_other_kind(opstate_lmdb *env, char other, opstate_error *err);

#define NATS_MAX_SERVERS 32 /* what opstate_nats_connect takes */

/* A nats:// URI, taken apart. */
typedef struct nats_uri {
    char urls[NATS_MAX_SERVERS * 272]; /* "nats://HOST:PORT,...": what the connection uses */
    char first[272];                   /* "HOST-PORT" of the first server (the default state directory) */
    int servers;
    bool tls;      /* a server was written tls://: TLS is required */
    char name[80]; /* the stream, or the bucket */
    bool bucket;
} nats_uri;

int parse_nats_uri(const char *uri, const char *rest, const char *server, nats_uri *u);
int nats_log_open(const char *uri, const char *rest, const log_open_options *o, log_handle *h);
int nats_default_state_dir(const char *uri, const char *rest, const char *server, char *buf);

/* >>state (state.c) ----------------------------------------------------- */

/* The LMDB environment holding a consumer's state store. */
typedef struct state_handle {
    char dir[PATH_CAP];
    const char *label; /* "--state", or "state" when it is the default */
    const char *name;
    opstate_lmdb *env;
    opstate_lmdb_store *store;
    bool no_readahead; /* set before the environment opens: a read-through state */
} state_handle;

/* Opens the environment at s->dir (s->label names it in messages). */
int state_env_open_at(state_handle *s, bool create);
/* The same at --state DIR, or the default next to --log. */
int state_env_open(const args *a, bool create, state_handle *s);
/* Opens the environment and the store named by --name. */
int state_open(const args *a, bool create, bool read_through, state_handle *s);
void state_close(state_handle *s);
/* Loads the store's state (read-through: the table stays on disk). */
int state_load(const state_handle *s, opstate_kv **kv, opstate_snapshot_meta *meta);

/* >>commands (one file each; main.c lists them) ------------------------- */

/* Options several commands take. */
#define OPT_LOG                                                                                           \
    {"--log", "URI", "the log: lmdb:PATH (default " DEFAULT_LOG_URI ") or nats://HOST[:PORT][,...]/STREAM|kv/BUCKET"}, \
    {"--server", "URLS", "nats (or -s): the servers of a nats:///STREAM log, comma-separated (default $NATS_URL, " \
                         "else 127.0.0.1:4222)"},                                                                \
    {"--stream", "NAME", "nats: the stream, for --log nats://SERVERS or no --log (servers from --server or $NATS_URL)"}, \
    {"--subject-template", "T", "nats: how other clients' subjects map to scope, kind and key "                     \
                                "(default *.{scope}.{kind}.{key}; {key} last, the rest of the subject; "     \
                                "then --filter is on the stream's subjects as they are)"}
#define OPT_PREFIX {"--prefix", "PREFIX", "subject prefix, dot-separated tokens (default " DEFAULT_PREFIX ")"}
#define OPT_STATE {"--state", "DIR", "LMDB directory of the state (default: the log's PATH + .state)"}
#define OPT_NAME {"--name", "NAME", "store name in that directory (default \"" DEFAULT_STORE_NAME "\")"}
#define OPT_FILTERS                                                                                      \
    {"--scope", "SCOPE", "only this scope's events (subjects <prefix>.SCOPE.>)"},                      \
    {"--kind", "KIND", "with --scope and --key: only that one key's events"},                           \
    {"--key", "KEY", "with --scope and --kind: the key as written (dots and all)"},                     \
    {"--filter", "SUBJECT", "only subjects matching PREFIX.SCOPE.KIND.KEY ('*' one token, '>' the "     \
                            "rest; what follows the kind is one key as written, e.g. 10.0.0.1)"}
#define OPT_END {NULL, NULL, NULL}

/* Where a consumer starts (consume, decide; parse_start reads them). */
#define START_OPTIONS                                                                                             \
    {"--replay-from-sequence", "N", "start at sequence N (restores only when N > the stored sequence)"},        \
    {"--replay-from-time", "T", "start at time T (restores only when T > the stored time)"},                    \
    {"--replay-from-latest", NULL, "only events appended from now on (state cleared)"},                         \
    {"--replay-from-first", NULL, "the whole retained log (state cleared: full rebuild)"}

/* Reads all of stdin and checks every line of publish --batch (publish.c;
   also reached by tests/fuzz/fuzz_cli_parse.c). */
int batch_read(const char *prefix, bool allow_app_ops, batch_input *in);

extern const command_spec publish_command, consume_command, replay_command, info_command, inspect_command,
    decide_command, export_command, import_command, verify_command, get_command, tail_command;

#endif /* OPSTATE_TOOL_H */
