/* fuzz_cli_parse.c — libFuzzer target for the text parsers of the opstate
   tool (tools/opstate/): times (parse_time: RFC 3339 and "<n>ns"), log
   URIs (find_backend, parse_nats_uri and the default state directory of
   each backend) and the lines of publish --batch (batch_read, which checks
   every line with batch_line).

   It is linked with every file of the tool but main.c and reaches the
   parsers through the tool's private header. While a parser runs, the
   tool's error lines go to /dev/null: glibc's stderr is a variable the
   program may set, and sanitizer reports are written to file descriptor 2
   directly, so they still show.

   Input: one selector byte, then the text (a time or URI is cut at the
   first NUL; batch input is bytes, as stdin may hold any).
     sel % 3 == 0  a time; one that parses must survive format_time and
                   parse back to the same nanosecond
     sel % 3 == 1  a log URI; sel bit 0x10: with --server given as the text
                   after the first newline
     sel % 3 == 2  publish --batch input on stdin (prefix "ops")
   Any status is fine; a crash, undefined behaviour, a leak or a hang is
   not.

   Build: make build/fuzz-cli_parse (libFuzzer) or
   build/fuzz-replay-cli_parse (seeds). */
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../tools/opstate/tool.h"
#include "lmdb_plant.h" /* the scratch directory */

static FILE *fuzz_cli_stderr;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_time(const char *text)
{
    int64_t ns = 0, again = 0;
    char formatted[TIME_CAP];
    if (parse_time("--time", text, &ns) != STATUS_OK) return;
    format_time(ns, formatted);
    if (parse_time("--time", formatted, &again) != STATUS_OK || again != ns) abort(); /* every printed time reads back */
}

static void fuzz_uri(char *text, bool with_server)
{
    const char *rest = NULL, *server = NULL;
    const log_backend *b;
    char *newline = strchr(text, '\n');
    char dir[PATH_CAP];
    if (with_server && newline) {
        *newline = '\0';
        server = newline + 1;
    }
    if (!(b = find_backend(text, &rest))) return;
    if (rest < text || rest > text + strlen(text)) abort();
    if (b->default_state_dir(text, rest, server, dir) == STATUS_OK && !memchr(dir, '\0', sizeof dir)) abort();
    if (strcmp(b->scheme, "nats://") == 0) {
        nats_uri u;
        if (parse_nats_uri(text, rest, server, &u) == STATUS_OK && (u.servers < 1 || !is_name(u.name))) abort();
    }
}

/* The input as stdin, through a file in the scratch directory. */
static void fuzz_batch(const uint8_t *bytes, size_t len)
{
    static char path[FUZZ_PATH_CAP];
    batch_input in;
    FILE *f;
    if (!path[0]) fuzz_scratch_path(path, sizeof path, "stdin");
    if (!(f = fopen(path, "wb")) || fwrite(bytes, 1, len, f) != len || fclose(f) != 0) abort();
    if (!freopen(path, "rb", stdin)) abort();
    memset(&in, 0, sizeof in);
    if (batch_read("ops", true, &in) == STATUS_OK && in.n > 0 && !in.events) abort();
    free(in.events);
    free(in.bytes);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text;
    unsigned sel = size ? data[0] : 0;
    size_t len = size ? size - 1 : 0;
    FILE *saved = stderr;
    if (!fuzz_cli_stderr && !(fuzz_cli_stderr = fopen("/dev/null", "w"))) abort();
    stderr = fuzz_cli_stderr;
    if (sel % 3 == 2) {
        fuzz_batch(data + 1, len);
    } else if ((text = (char *)malloc(len + 1)) != NULL) {
        if (len) memcpy(text, data + 1, len);
        text[len] = '\0';
        if (sel % 3 == 0) fuzz_time(text);
        else fuzz_uri(text, (sel & 0x10) != 0);
        free(text);
    }
    stderr = saved;
    return 0;
}
