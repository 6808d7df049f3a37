/* parse.c — the tool's text parsers: numbers, times (RFC 3339 and "<n>ns"),
   command lines against a command's option table, subject tokens, filters
   and names, and where a consumer starts. Part of the opstate tool (see
   main.c). */
#include "tool.h"

/* >>numbers ------------------------------------------------------------- */

/* Decimal digits only, no sign, no overflow. */
bool digits_to_u64(const char *text, uint64_t *out)
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

int parse_u64(const char *flag, const char *text, uint64_t min, uint64_t max, uint64_t *out)
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
int parse_choice(const char *flag, const char *text, const char *const *choices, int *out)
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

int parse_time(const char *flag, const char *text, int64_t *out)
{
    if (parse_rfc3339(text, out) || parse_ns_integer(text, out)) return STATUS_OK;
    return fail(STATUS_USAGE,
                "%s %s: not a time (use RFC 3339, 2026-11-23T10:00:00Z with optional .fraction and +hh:mm "
                "offset, or nanoseconds, 1763890000000000000ns)",
                flag, quoted(text));
}

/* RFC 3339 UTC with nanoseconds: "2026-11-23T10:00:00.000000000Z". */
const char *format_time(int64_t ns, char out[TIME_CAP])
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

static int option_index(const command_spec *cmd, const char *name, size_t len)
{
    int i;
    for (i = 0; cmd->options[i].name; i++)
        if (strlen(cmd->options[i].name) == len && strncmp(cmd->options[i].name, name, len) == 0) return i;
    return -1;
}

/* The value of an option the command declares (NULL when not given). */
const char *opt(const args *a, const char *name)
{
    int i = option_index(a->cmd, name, strlen(name));
    if (i < 0) {
        fprintf(stderr, "opstate: internal error: %s has no option %s\n", a->cmd->name, name);
        abort();
    }
    return a->values[i];
}

bool flag(const args *a, const char *name) { return opt(a, name) != NULL; }

/* At most one of `names` (NULL-terminated) may be given. */
int exclusive(const args *a, const char *const *names)
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

int parse_args(const command_spec *cmd, int argc, char **argv, args *a)
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
        if (!options_done && strcmp(s, "-s") == 0) s = "--server"; /* as the nats CLI spells it */
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
int check_token(const char *label, const char *value, const char *what)
{
    opstate_result r = opstate_token_validate(value, strlen(value), NULL);
    if (r == OPSTATE_OVERSIZED)
        return fail(STATUS_USAGE, "%s %s: a %s is at most %d bytes", label, quoted(value), what, OPSTATE_MAX_TOKEN_LEN);
    if (r != OPSTATE_OK)
        return fail(STATUS_USAGE, "%s %s: a %s is one subject token (no '.', '*', '>', spaces)", label, quoted(value), what);
    return STATUS_OK;
}

int check_key(const char *label, const char *key)
{
    size_t n = strlen(key);
    if (n == 0 || n > OPSTATE_MAX_KEY_LEN)
        return fail(STATUS_USAGE, "%s %s: a key is 1..%d bytes", label, quoted(key), OPSTATE_MAX_KEY_LEN);
    return STATUS_OK;
}

/* "put", "delete", or (allow_app) an application op, 16 and up: the
   consumer's KV apply takes put and delete only, so an application op is
   refused unless the caller says a custom apply will read it. */
int parse_op(const char *label, const char *text, bool allow_app, uint32_t *op)
{
    uint64_t v;
    if (strcmp(text, "put") == 0) *op = OPSTATE_OP_PUT;
    else if (strcmp(text, "delete") == 0) *op = OPSTATE_OP_DELETE;
    else if (!digits_to_u64(text, &v) || v < OPSTATE_OP_APP || v > UINT32_MAX)
        return fail(STATUS_USAGE, "%s %s: expected put, delete or an application op 16..4294967295", label, quoted(text));
    else if (!allow_app)
        return fail(STATUS_USAGE, "%s %s: opstate consume applies put and delete only (it would stop at this event); "
                                  "--allow-app-op publishes it for an application's own apply", label, quoted(text));
    else *op = (uint32_t)v;
    return STATUS_OK;
}

int check_prefix(const char *prefix)
{
    if (opstate_prefix_validate(prefix, strlen(prefix), NULL) != OPSTATE_OK)
        return fail(STATUS_USAGE, "--prefix %s: a prefix is subject tokens joined by single dots (no '*', '>', spaces)",
                    quoted(prefix));
    return STATUS_OK;
}

/* A NATS-style filter: tokens joined by dots, '*' for one token, '>' last;
   only the first `tokens` are checked (the rest is a key, escaped later). */
static int check_filter(const char *filter, size_t tokens)
{
    const char *p = filter;
    for (; tokens; tokens--) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        bool wildcard = n == 1 && (*p == '*' || (*p == '>' && !dot));
        if (!wildcard && opstate_token_validate(p, n, NULL) != OPSTATE_OK)
            return fail(STATUS_USAGE, "--filter %s: a filter is subject tokens joined by dots, '*' for one token, "
                        "'>' as the last", quoted(filter));
        if (!dot) return STATUS_OK;
        p = dot + 1;
    }
    return *p ? STATUS_OK : fail(STATUS_USAGE, "--filter %s: the key after the kind is empty", quoted(filter));
}


/* A store, stream, bucket or durable consumer name: NAME_RULE. */
bool is_name(const char *name)
{
    size_t n = strlen(name);
    return n >= 1 && n <= 64 &&
           strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") == n;
}

/* `label` names the flag, `what` the thing ("a store name"). */
int check_name(const char *label, const char *name, const char *what)
{
    if (!is_name(name)) return fail(STATUS_USAGE, "%s %s: %s is " NAME_RULE, label, quoted(name), what);
    return STATUS_OK;
}

const char *prefix_arg(const args *a)
{
    const char *p = opt(a, "--prefix");
    return p ? p : DEFAULT_PREFIX;
}

/* The dots of a prefix, plus one: its token count. */
static size_t token_count(const char *s)
{
    size_t n = 1;
    for (; *s; s++) n += *s == '.';
    return n;
}

/* The subject of one key: "<prefix>.S.K.<escaped key>", into buf. */
int key_subject(const char *prefix, const char *scope, const char *kind, const char *key, char buf[FILTER_CAP],
                size_t *n)
{
    if (opstate_subject_build(prefix, strlen(prefix), text_bytes(scope), text_bytes(kind), text_bytes(key), buf,
                              FILTER_CAP - 1, n, NULL) != OPSTATE_OK)
        return fail(STATUS_USAGE, "--scope %s --kind %s --key %s: not one subject (tokens, a key of 1..%d bytes)",
                    quoted(scope), quoted(kind), quoted(key), OPSTATE_MAX_KEY_LEN);
    return STATUS_OK;
}

/* --filter F: prefix, scope and kind tokens as NATS reads them ('*', '>'),
   and what follows the kind is one key as the user writes it, escaped
   here (a lone '*' or '>' stays a wildcard). */
static int filter_with_key(const char *prefix, const char *filter, char buf[FILTER_CAP], size_t *n)
{
    size_t head = token_count(prefix) + 2, i;
    const char *key = filter;
    for (i = 0; i < head && key; i++) key = (key = strchr(key, '.')) ? key + 1 : NULL;
    *n = key ? (size_t)(key - filter) : strlen(filter);
    if (*n >= FILTER_CAP) return fail(STATUS_USAGE, "--filter %s: longer than %d bytes", quoted(filter), FILTER_CAP - 1);
    memcpy(buf, filter, *n);
    if (!key || strcmp(key, "*") == 0 || strcmp(key, ">") == 0) {
        *n = (size_t)snprintf(buf, FILTER_CAP, "%s", filter);
    } else {
        size_t k = 0;
        if (opstate_key_escape((const uint8_t *)key, strlen(key), buf + *n, FILTER_CAP - 1 - *n, &k) != OPSTATE_OK)
            return fail(STATUS_USAGE, "--filter %s: the key after the kind is 1..%d bytes", quoted(filter),
                        OPSTATE_MAX_KEY_LEN);
        *n += k;
    }
    return *n < FILTER_CAP ? STATUS_OK : fail(STATUS_USAGE, "--filter %s: longer than %d bytes", quoted(filter), FILTER_CAP - 1);
}

/* With --subject-template the stream's subjects are another client's
   shape: --filter is a NATS filter on them as they are; --scope, --kind
   and --key (subjects of opstate's shape) are refused. */
static int template_filter(const args *a, char buf[FILTER_CAP], opstate_bytes *out)
{
    const char *filter = opt(a, "--filter");
    size_t n = 0;
    int status = STATUS_OK;
    if (opt(a, "--scope") || opt(a, "--kind") || opt(a, "--key"))
        return fail(STATUS_USAGE, "--scope, --kind and --key take opstate's subjects, not --subject-template's: "
                    "filter with --filter on the stream's own subjects");
    if (filter && (status = check_filter(filter, SIZE_MAX)) == STATUS_OK) n = strlen(filter);
    if (n >= FILTER_CAP) return fail(STATUS_USAGE, "--filter %s: longer than %d bytes", quoted(filter), FILTER_CAP - 1);
    memcpy(buf, filter ? filter : "", n + 1);
    out->ptr = (const uint8_t *)buf;
    out->len = n;
    return status;
}

/* --scope S (-> "<prefix>.S.>"), --scope S --kind K --key KEY (that key's
   subject) or --filter F into buf; none: everything. */
int subject_filter(const args *a, char buf[FILTER_CAP], opstate_bytes *out)
{
    static const char *const one_of[] = {"--scope", "--filter", NULL};
    const char *scope = opt(a, "--scope"), *filter = opt(a, "--filter"), *prefix = prefix_arg(a);
    const char *kind = opt(a, "--kind"), *key = opt(a, "--key");
    size_t n = 0;
    int status = exclusive(a, one_of);
    if (status == STATUS_OK && opt(a, "--subject-template")) return template_filter(a, buf, out);
    if (status == STATUS_OK && !kind != !key)
        status = fail(STATUS_USAGE, "--kind and --key go together (with --scope): one key's events");
    if (status == STATUS_OK && key && !scope) status = fail(STATUS_USAGE, "--key needs --scope and --kind");
    if (status == STATUS_OK && scope) status = check_token("--scope", scope, "scope");
    if (status == STATUS_OK && filter) status = check_filter(filter, token_count(prefix) + 2);
    if (status == STATUS_OK) status = check_prefix(prefix);
    if (status != STATUS_OK) return status;
    if (key) {
        status = key_subject(prefix, scope, kind, key, buf, &n);
    } else if (scope) {
        if (opstate_subject_filter(prefix, strlen(prefix), text_bytes(scope), buf, FILTER_CAP - 1, &n, NULL) != OPSTATE_OK)
            return fail(STATUS_USAGE, "--scope %s: the filter for it is too long", quoted(scope));
    } else if (filter) {
        status = filter_with_key(prefix, filter, buf, &n);
    }
    if (status != STATUS_OK) return status;
    buf[n] = '\0';
    out->ptr = (const uint8_t *)buf;
    out->len = n;
    return STATUS_OK;
}

/* NUL-terminated text as bytes (NULL: none). */
opstate_bytes text_bytes(const char *s)
{
    opstate_bytes b;
    b.ptr = (const uint8_t *)s;
    b.len = s ? strlen(s) : 0;
    return b;
}

/* >>start --------------------------------------------------------------- */

/* --replay-from-* (at most one) -> where the consumer starts. */
int parse_start(const args *a, opstate_start *start)
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
