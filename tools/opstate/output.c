/* output.c — the progress line, JSON pieces and positions as text. Part of
   the opstate tool (see main.c). */
#include "tool.h"

/* >>progress ------------------------------------------------------------ */

void progress_init(progress *p, const char *what)
{
    memset(p, 0, sizeof *p);
    p->enabled = isatty(STDERR_FILENO) != 0;
    p->what = what;
    p->started = p->last_shown = monotonic_ns(); /* first line after 200 ms: quick runs show none */
}

void progress_update(void *user, uint64_t start, uint64_t end, uint64_t count, uint64_t current)
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

void progress_finish(progress *p)
{
    if (p->shown) fputc('\n', stderr);
    p->shown = false;
}

/* >>json ---------------------------------------------------------------- */

void json_string(FILE *out, const char *s)
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

void json_position(FILE *out, const char *name, opstate_position p)
{
    char t[TIME_CAP];
    fprintf(out, "\"%s\":{\"seq\":%llu,\"time\":%lld,\"time_text\":\"%s\",\"epoch\":%llu}", name,
            (unsigned long long)p.seq, (long long)p.time, format_time(p.time, t), (unsigned long long)p.epoch);
}

/* Writes the fold as the tail of a JSON object, "count":N,"items":[...]}
   (opstate_kv_to_json without its opening brace): the caller has written
   "{" and its own fields, each followed by a comma. */
int json_state_tail(FILE *out, const opstate_kv *kv)
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

/* >>keys ---------------------------------------------------------------- */

/* bytes with control bytes as \xNN. */
static void print_escaped(FILE *out, const uint8_t *p, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        if (p[i] < 0x20 || p[i] == 0x7f) fprintf(out, "\\x%02x", p[i]);
        else fputc(p[i], out);
    }
}

/* "<scope> <kind> <key>\t<value>" on stdout (an opstate_kv_iterate
   callback): the default apply's key is scope 0x00 kind 0x00 key. */
bool print_key_value(void *user, const opstate_kv_item *item)
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

/* >>position ------------------------------------------------------------ */

/* "seq N at <time>", or "none" when there is no position. */
const char *position_text(opstate_position p, char *buf, size_t cap)
{
    char t[TIME_CAP];
    if (p.seq == 0) snprintf(buf, cap, "none");
    else snprintf(buf, cap, "seq %llu at %s", (unsigned long long)p.seq, format_time(p.time, t));
    return buf;
}
