/* Measures what the semihosting test program really used on the Cortex-M
   board; scripts/portability.sh prints it with the target's summary.

   - peak stack: a constructor fills the STACK_PAINT bytes below the top of
     the stack with a pattern before main runs; at exit the lowest word that
     no longer holds the pattern marks the deepest point the stack reached.
   - peak heap: the highest program break newlib's malloc asked for, above
     `end`. Link with -Wl,--wrap=_sbrk so that malloc's _sbrk calls come
     here first (newlib gives memory back on free, so the break at exit
     says nothing).

   Printed after the runner's "N passed, N failed" line (atexit), with %lu
   only, as runner.h requires. */
#include <stdio.h>
#include <stdlib.h>
#include <stddef.h>
#include <stdint.h>

#define STACK_PAINT (256u * 1024u)
#define PATTERN 0xC5C5C5C5u

extern char __stack_top[]; /* mps2-an385.ld: top of the stack */
extern char end[];         /* mps2-an385.ld: start of the heap */

void *__real__sbrk(ptrdiff_t incr);
void *__wrap__sbrk(ptrdiff_t incr);

static uintptr_t heap_peak;

void *__wrap__sbrk(ptrdiff_t incr)
{
    void *p = __real__sbrk(incr);
    if (p != (void *)-1 && (uintptr_t)p + (uintptr_t)incr > heap_peak)
        heap_peak = (uintptr_t)p + (uintptr_t)incr;
    return p;
}

/* integer arithmetic: the linker symbols are addresses, not C objects */
static uintptr_t stack_top(void) { return (uintptr_t)__stack_top; }
static uint32_t *paint_lo(void) { return (uint32_t *)(stack_top() - STACK_PAINT); }

static void mem_report(void)
{
    const uint32_t *p = paint_lo(), *top = (const uint32_t *)stack_top();
    unsigned long heap = heap_peak ? (unsigned long)(heap_peak - (uintptr_t)end) : 0;
    while (p < top && *p == PATTERN) p++;
    if (p == paint_lo())
        printf("mem: peak stack >= %lu bytes, peak heap %lu bytes\n", (unsigned long)STACK_PAINT, heap);
    else
        printf("mem: peak stack %lu bytes, peak heap %lu bytes\n",
               (unsigned long)((uintptr_t)top - (uintptr_t)p), heap);
}

__attribute__((constructor)) static void mem_paint(void)
{
    volatile uint32_t *p = paint_lo();
    /* stop well below this function's own frame */
    volatile uint32_t *stop = (volatile uint32_t *)((uintptr_t)__builtin_frame_address(0) - 256u);
    while (p < stop) *p++ = PATTERN;
    atexit(mem_report);
}
