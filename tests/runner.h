/* runner.h — opstate's in-house test runner, one header, no allocation.

   Needs only printf with %s / %d / %lu (no %zu, no %llu: Debian's newlib lacks
   them), so the same tests run on a host, under qemu-user and on a Cortex-M
   with semihosting.

       #define RUNNER_MAIN         (in exactly one file of a test program)
       #include "runner.h"

       TEST(codec, round_trip) {
           CHECK(x == 1);
           CHECK_EQ_U64(a, b);
       }

   Table-driven cases: loop over a table and name each row with CASE("...")
   so a failure prints which row broke:

       for (i = 0; i < COUNT_OF(rows); i++) { CASE(rows[i].name); CHECK(...); }

   Run: `./unit [FILTER]`; FILTER is a substring of "suite.name" and runs
   only the tests it matches. The last line of a run is always
   `N passed, N failed`. Exit status: 0 when tests ran and none failed;
   1 when one failed; 2 when nothing ran, because FILTER matched no test
   (the line before the last says `no test matches "FILTER" (--list shows
   them)`, so a mistyped or stale filter in a script never passes as
   "0 failed") or the arguments were wrong (a usage line instead).

   `./unit --list [FILTER]` runs nothing and prints the tests, one
   `suite.name` a line, only those FILTER matches; exit 0, or 2 with the
   no-match line when FILTER matches none. */
#ifndef RUNNER_H
#define RUNNER_H

#include <stdio.h>
#include <string.h>
#include <stdint.h>

#define RUNNER_MAX_TESTS 1024
#define COUNT_OF(a) (sizeof(a) / sizeof((a)[0]))

typedef void (*runner_fn)(void);
typedef struct runner_test { const char *suite, *name; runner_fn fn; } runner_test;

#ifdef __cplusplus
extern "C" {
#endif
void runner_add(const char *suite, const char *name, runner_fn fn);
void runner_fail(const char *file, int line, const char *what);
void runner_fail_u64(const char *file, int line, const char *what, uint64_t a, uint64_t b);
void runner_case(const char *label);
int runner_failed_now(void);
#ifdef __cplusplus
}
#endif

/* Registration runs before main: a static constructor in C++, GCC's
   constructor attribute in C (gcc, clang and arm-none-eabi-gcc all have it). */
#ifdef __cplusplus
#define RUNNER_REGISTER(suite, name)                                            \
    static struct runner_reg_##suite##_##name {                                 \
        runner_reg_##suite##_##name() { runner_add(#suite, #name, test_##suite##_##name); } \
    } runner_reg_inst_##suite##_##name;
#elif defined(__GNUC__)
#define RUNNER_REGISTER(suite, name)                                            \
    __attribute__((constructor)) static void runner_reg_##suite##_##name(void) \
    { runner_add(#suite, #name, test_##suite##_##name); }
#else
#error "runner.h needs C++ or a compiler with __attribute__((constructor))"
#endif

#define TEST(suite, name)                        \
    static void test_##suite##_##name(void);     \
    RUNNER_REGISTER(suite, name)                 \
    static void test_##suite##_##name(void)

#define CASE(label) runner_case(label)
#define CHECK(cond) \
    do { if (!(cond)) runner_fail(__FILE__, __LINE__, #cond); } while (0)
#define CHECK_EQ_U64(a, b)                                                        \
    do { uint64_t runner_a_ = (uint64_t)(a), runner_b_ = (uint64_t)(b);          \
         if (runner_a_ != runner_b_)                                              \
             runner_fail_u64(__FILE__, __LINE__, #a " == " #b, runner_a_, runner_b_); \
    } while (0)
#define CHECK_MEM(a, b, n) CHECK(memcmp((a), (b), (n)) == 0)
#define CHECK_STR(a, b) CHECK(strcmp((a), (b)) == 0)
/* Check and stop the current test when it fails (e.g. before using a
   pointer that a failed call did not set). Evaluates cond once. */
#define REQUIRE(cond) \
    do { if (!(cond)) { runner_fail(__FILE__, __LINE__, #cond); return; } } while (0)

#endif /* RUNNER_H */

#ifdef RUNNER_MAIN
static runner_test runner_tests[RUNNER_MAX_TESTS];
static unsigned long runner_count, runner_current_failures;
static const char *runner_current_suite = "", *runner_current_name = "", *runner_label;

void runner_add(const char *suite, const char *name, runner_fn fn)
{
    if (runner_count == RUNNER_MAX_TESTS) {
        printf("runner: more than %d tests; raise RUNNER_MAX_TESTS\n", RUNNER_MAX_TESTS);
        return;
    }
    runner_tests[runner_count].suite = suite;
    runner_tests[runner_count].name = name;
    runner_tests[runner_count].fn = fn;
    runner_count++;
}

void runner_case(const char *label) { runner_label = label; }
int runner_failed_now(void) { return runner_current_failures != 0; }

static void runner_where(const char *file, int line)
{
    runner_current_failures++;
    printf("FAIL %s.%s", runner_current_suite, runner_current_name);
    if (runner_label) printf(" [%s]", runner_label);
    printf(" %s:%d: ", file, line);
}

void runner_fail(const char *file, int line, const char *what)
{
    runner_where(file, line);
    printf("%s\n", what);
}

/* newlib-nano prints %llu as "lu": format 64-bit numbers by hand. */
static const char *runner_u64(uint64_t v, char out[21])
{
    char *p = out + 20;
    *p = '\0';
    do { *--p = (char)('0' + (int)(v % 10u)); v /= 10u; } while (v);
    return p;
}

void runner_fail_u64(const char *file, int line, const char *what, uint64_t a, uint64_t b)
{
    char sa[21], sb[21];
    runner_where(file, line);
    printf("%s (%s vs %s)\n", what, runner_u64(a, sa), runner_u64(b, sb));
}

static int runner_matches(const runner_test *t, const char *filter)
{
    char full[256];
    size_t ls = strlen(t->suite), ln = strlen(t->name);
    if (!filter) return 1;
    if (ls + ln + 2 > sizeof full) return 0;
    memcpy(full, t->suite, ls);
    full[ls] = '.';
    memcpy(full + ls + 1, t->name, ln + 1);
    return strstr(full, filter) != NULL;
}

/* Arguments: [--list] [FILTER], in any order (see the top of the file). */
int main(int argc, char **argv)
{
    unsigned long i, passed = 0, failed = 0, matched = 0;
    const char *filter = NULL;
    int a, list = 0, usage = 0;
    for (a = 1; a < argc; a++) {
        if (strcmp(argv[a], "--list") == 0) list = 1;
        else if (strncmp(argv[a], "--", 2) == 0 || filter) usage = 1;
        else filter = argv[a];
    }
    if (usage) {
        printf("usage: %s [--list] [FILTER]\n", argv[0]);
        printf("0 passed, 0 failed\n");
        return 2;
    }
    for (i = 0; i < runner_count; i++) {
        const runner_test *t = &runner_tests[i];
        if (!runner_matches(t, filter)) continue;
        matched++;
        if (list) {
            printf("%s.%s\n", t->suite, t->name);
            continue;
        }
        runner_current_suite = t->suite;
        runner_current_name = t->name;
        runner_current_failures = 0;
        runner_label = NULL;
        t->fn();
        if (runner_current_failures) failed++; else passed++;
    }
    if (!matched) {
        if (filter) printf("no test matches \"%s\" (--list shows them)\n", filter);
        else printf("no test in this program\n");
    }
    if (!list) printf("%lu passed, %lu failed\n", passed, failed);
    if (!matched) return 2;
    return failed ? 1 : 0;
}
#endif /* RUNNER_MAIN */
