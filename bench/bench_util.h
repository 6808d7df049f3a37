/* bench_util.h — the timing and statistics helpers every benchmark uses:
   a monotonic clock, a fixed-seed xorshift, the median of a few runs and
   the PASS / MISS word for a figure against its target, the lines the
   report is made from, and the quick switch. Static inline, so
   a benchmark that uses only some of them compiles without warnings. */
#ifndef BENCH_UTIL_H
#define BENCH_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BENCH_MAX_RUNS 64

/* Milliseconds on the monotonic clock. */
static inline double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

/* xorshift64 with a fixed seed: the same workload in every run. */
static uint64_t g_rng = 0x9e3779b97f4a7c15u;
static inline uint64_t rnd(void)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return g_rng;
}

static inline int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Median of n (1..BENCH_MAX_RUNS) samples; sorts a copy. */
static inline double median(const double *v, int n)
{
    double c[BENCH_MAX_RUNS];
    memcpy(c, v, (size_t)n * sizeof *c);
    qsort(c, (size_t)n, sizeof *c, cmp_double);
    return n % 2 ? c[n / 2] : (c[n / 2 - 1] + c[n / 2]) / 2;
}

static inline const char *verdict(int ok) { return ok ? "PASS" : "MISS"; }

/* Machine-readable lines for bench/REPORT.md (scripts/bench_report.py):
   "@target ROW|FIGURE|PASS or MISS|BOUND" for a row of DESIGN.md's
   "Performance targets" (ROW: its key in the report script), and
   "@data SERIES|X|Y" for a point of a plot. */
static inline void report_target(const char *row, const char *figure, int ok, const char *bound)
{
    printf("@target %s|%s|%s|%s\n", row, figure, verdict(ok), bound ? bound : "");
}

static inline void report_data(const char *series, double x, double y) { printf("@data %s|%g|%g\n", series, x, y); }

/* BENCH_QUICK=1 in the environment: every part runs a short version
   (`make bench QUICK=1`, under a minute in all). */
static inline int bench_quick(void)
{
    const char *q = getenv("BENCH_QUICK");
    return q && *q && strcmp(q, "0") != 0;
}

#endif
