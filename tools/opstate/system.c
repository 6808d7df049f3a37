/* system.c — clock, sleep and files. Part of the opstate tool (see main.c). */
#include "tool.h"

/* >>clock --------------------------------------------------------------- */

static int64_t clock_ns(clockid_t which)
{
    struct timespec ts;
    clock_gettime(which, &ts);
    return (int64_t)ts.tv_sec * NS_PER_SECOND + ts.tv_nsec;
}

int64_t wallclock_ns(void *user)
{
    (void)user;
    return clock_ns(CLOCK_REALTIME);
}

int64_t monotonic_ns(void) { return clock_ns(CLOCK_MONOTONIC); }

/* Sleeps; a signal cuts it short (the caller looks at its stop flag). */
void sleep_ns(int64_t ns)
{
    struct timespec ts;
    if (ns <= 0) return;
    ts.tv_sec = (time_t)(ns / NS_PER_SECOND);
    ts.tv_nsec = (long)(ns % NS_PER_SECOND);
    nanosleep(&ts, NULL);
}

/* >>files --------------------------------------------------------------- */

bool path_exists(const char *dir, const char *file)
{
    char path[PATH_CAP];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, file);
    return stat(path, &st) == 0;
}

/* mkdir -p, mode 0700. */
int make_dirs(const char *label, const char *path)
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
int read_all(const char *label, FILE *f, size_t max, uint8_t **out, size_t *len)
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
