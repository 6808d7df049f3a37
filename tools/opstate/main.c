/* opstate — the command-line tool for opstate logs and state stores. v0.1.0

   Build (from the repository root; Debian: liblmdb-dev, libnats-dev):

       cc -std=c99 -O2 -D_POSIX_C_SOURCE=200809L -I. tools/opstate/[a-z]*.c -llmdb -lnats -o build/opstate

   FILES (one program; tool.h is what they share)
       main.c      this guide, the list of commands, --help, dispatch
       impl.c      the implementations of opstate.h, opstate_lmdb.h and
                   opstate_nats.h, compiled once for the tool
       errors.c    exit statuses, error lines, the library's diagnostics
       system.c    clock, sleep, files
       parse.c     numbers, times, command lines, tokens, filters, names
       output.c    progress line, JSON, positions as text
       logs.c      logs by URI; log_lmdb.c and log_nats.c: the backends
       state.c     the LMDB environment and store of a consumer's state
       publish.c consume.c replay.c get.c tail.c info.c inspect.c decide.c export.c
       verify.c    one command each (export.c: export and import), with
                   its options and its --help text

   COMMANDS (`opstate <command> --help` for each one's options)
       publish   append one event, or many with --batch (lines on stdin)
       consume   the long-running consumer: fold the log into a state store
       replay    point-in-time state from the log, as text or --json
       get       one key's value, from a state store or a replay
       tail      events as JSON lines, --follow to keep going
       info      first/last sequence and time, epoch, message count of a log
       inspect   a state store: position, schema, keys, pending deltas
       decide    explain the restore decision for given inputs
       export    copy a state environment into a verified artifact directory
       import    verify an export and install it as a new state environment
       verify    check every record of an LMDB log or state directory

   LOGS are named by URI; a backend is one entry in `log_backends` (logs.c).
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
                 the same with the servers from --server URLS (or -s),
                 else NATS_URL (comma-separated, as the nats CLI reads it;
                 a tls:// server requires TLS), else 127.0.0.1:4222.
                 Servers in the URI and --server exclude each other;
                 NATS_URL is only a default. --stream NAME names the stream
                 instead (no --log, or --log nats://SERVERS).
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

   EXIT CODES: see `exit_codes_help` below (also printed by `opstate --help`).

   Errors are ONE line on stderr that names the input that was wrong. */
#include "tool.h"

/* What each exit status means (the enum is in tool.h). */
static const char exit_codes_help[] =
    "Exit codes:\n"
    "  0  ok\n"
    "  1  runtime failure (I/O, write conflict, out of memory, ...)\n"
    "  2  usage error or bad input (unknown flag, bad URI, bad time, bad token)\n"
    "  3  not found (no log, no state directory, nothing stored under that name)\n"
    "  4  corrupt or incompatible data (checksum, format version, schema)\n"
    "  5  consume stopped at a poison event (--poison stop)\n";

/* >>commands ------------------------------------------------------------ */

/* Every command, in the order opstate --help lists them. */
static const command_spec *const commands[] = {&publish_command, &consume_command, &replay_command, &get_command,
                                               &tail_command,    &info_command,    &inspect_command, &decide_command,
                                               &export_command,  &import_command,  &verify_command};

#define COMMAND_COUNT (sizeof commands / sizeof commands[0])

static void print_main_help(FILE *out)
{
    size_t i;
    fprintf(out, "opstate %s: durable, replayable operational state over an event log.\n\n"
                 "Usage: opstate <command> [options]   (opstate <command> --help for its options)\n\nCommands:\n",
            OPSTATE_VERSION_STRING);
    for (i = 0; i < COMMAND_COUNT; i++) fprintf(out, "  %-9s %s\n", commands[i]->name, commands[i]->summary);
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
    for (i = 0; i < COMMAND_COUNT && strcmp(argv[1], commands[i]->name) != 0; i++) continue;
    if (i == COMMAND_COUNT) return fail(STATUS_USAGE, "unknown command %s (see opstate --help)", quoted(argv[1]));
    status = parse_args(commands[i], argc - 2, argv + 2, &a);
    if (status == STATUS_HELP) return finish_stdout(STATUS_OK);
    if (status == STATUS_OK) status = commands[i]->run(&a);
    return finish_stdout(status);
}
