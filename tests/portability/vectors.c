/* Cortex-M vector table for the semihosting test program that
   scripts/portability.sh runs under qemu-system-arm (see mps2-an385.ld).

   Reset jumps to newlib's _start (rdimon-crt0.o), which sets up the stack
   and heap from SYS_HEAPINFO, clears .bss, runs the constructors (the
   runner's test registrations), calls main and exits with its status.
   Every fault prints "fault: pc 0x... lr 0x... cfsr 0x..." (semihosting
   SYS_WRITE0, no stdio) and ends the program with status 99, so a crash
   fails the run instead of hanging QEMU, and says where it happened
   (arm-none-eabi-addr2line -f -e <elf> <pc>). */
#include <stdint.h>
#include <stdlib.h>

extern void _start(void);
extern char __stack_top[];

void fault_report(const uint32_t *frame);

static void put_hex(char *out, uint32_t v)
{
    int i;
    for (i = 7; i >= 0; i--, v >>= 4) out[i] = "0123456789abcdef"[v & 15u];
}

/* frame: the registers the CPU stacked on entry (r0-r3, r12, lr, pc, xpsr) */
void fault_report(const uint32_t *frame)
{
    static char msg[] = "fault: pc 0x........ lr 0x........ cfsr 0x........\n";
    put_hex(msg + 12, frame[6]);
    put_hex(msg + 26, frame[5]);
    put_hex(msg + 42, *(volatile const uint32_t *)0xE000ED28u); /* CFSR */
    { /* no call between these and the asm: r0/r1 must still hold them */
        register uint32_t op __asm__("r0") = 0x04; /* SYS_WRITE0 */
        register const char *arg __asm__("r1") = msg;
        __asm volatile("bkpt 0xab" : "+r"(op) : "r"(arg) : "memory");
    }
    _Exit(99);
}

/* Only the main stack is in use, so the frame is on MSP. */
__attribute__((naked)) static void fault(void)
{
    __asm volatile("mrs r0, msp\n\tb fault_report");
}

static void reset(void)
{
#if defined(__ARM_FP)
    /* rdimon-crt0 does not enable the FPU: CPACR CP10 + CP11 full access,
       or a hard-float build faults at its first VFP instruction. */
    *(volatile uint32_t *)0xE000ED88u |= 0xFu << 20;
    __asm volatile("dsb\n\tisb" ::: "memory");
#endif
    _start();
}

/* 0 initial SP, 1 reset, 2 NMI, 3 HardFault, 4 MemManage, 5 BusFault,
   6 UsageFault, 7-10 reserved, 11 SVCall, 12 DebugMon, 13 reserved,
   14 PendSV, 15 SysTick. No device interrupt is enabled. */
__attribute__((section(".vectors"), used))
static void (*const vectors[16])(void) = {
    (void (*)(void))(uintptr_t)__stack_top, reset,
    fault, fault, fault, fault, fault, 0, 0, 0, 0, fault, fault, 0, fault, fault,
};
