/* sim_flash.h — a simulated NOR flash for the tests of opstate.h's flash
   store (>>flash). Test code only, one header, no allocation: the caller
   gives the memory and the per-sector erase counters.

   It keeps real flash rules and counts every breach in `misuse`, so a test
   that ends with misuse == 0 proves the store kept them:
     - program only moves bits away from the erased value (AND for 0xFF
       flash, OR for 0x00 flash); programming a byte that is not erased
       counts as misuse (the store promises never to program over bytes it
       has not seen erased), and so does a bit the program cannot move;
     - erase sets a whole sector to the erased value;
     - read and program addresses and lengths are multiples of prog_size,
       inside the device, never empty; erase gets a sector's first address.
   A misused call fails (returns SIM_FLASH_MISUSE) and changes nothing.

   Steps: every program and erase call is one step, counted from 1. A test
   can
     - cut the power at step N (cut_at): that call is left half done (a
       program: a prefix of its units applied, then a random subset of the
       bits of the next unit; an erase: a prefix of the sector erased, a
       byte in a random state, the rest untouched) and fails, and every call
       after it fails and changes nothing, until power_on();
     - watch every step before it happens (before_step), e.g. to copy the
       memory, apply sim_flash_cut() to the copy and reboot on it: every cut
       of a run, in one run;
     - make one call fail with a device error (fail_step, fail_reads). */
#ifndef SIM_FLASH_H
#define SIM_FLASH_H

#include <stdint.h>
#include <stdbool.h>
#include <string.h>

#include "../opstate.h"

#define SIM_FLASH_POWER_OFF (-1) /* the device has no power */
#define SIM_FLASH_MISUSE (-2)    /* the call broke a flash rule */
#define SIM_FLASH_FAULT (-3)     /* an injected device error */

typedef struct sim_flash sim_flash;
/* Called before step `step` is applied: an erase (data NULL) or a program. */
typedef void (*sim_flash_step_fn)(void *user, const sim_flash *f, uint64_t step, uint32_t addr,
                                  const uint8_t *data, uint32_t len);

struct sim_flash {
    uint8_t *mem;
    uint32_t *erase_counts; /* one per sector */
    uint32_t sector_size, sector_count, prog_size;
    uint8_t erased;
    uint64_t steps;       /* program and erase calls so far */
    uint64_t cut_at;      /* the power fails during this step (0: never) */
    bool off;             /* no power: every call fails */
    uint64_t fail_step;   /* this step fails with SIM_FLASH_FAULT, nothing done (0: none) */
    uint32_t fail_reads;  /* reads left before one fails with SIM_FLASH_FAULT (0: none) */
    uint32_t misuse;      /* broken rules seen */
    uint32_t rng;         /* how a cut call is left */
    sim_flash_step_fn before_step;
    void *step_user;
};

/* A small PRNG (xorshift32) for the tests. */
static inline uint32_t sim_flash_rand(uint32_t *s)
{
    uint32_t x = *s ? *s : 0x9e3779b9u;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

/* A device of sector_count sectors of sector_size bytes over mem (erased
   now) and erase_counts (zeroed). */
static inline void sim_flash_init(sim_flash *f, uint8_t *mem, uint32_t *erase_counts, uint32_t sector_size,
                                  uint32_t sector_count, uint32_t prog_size, uint8_t erased, uint32_t seed)
{
    memset(f, 0, sizeof *f);
    f->mem = mem;
    f->erase_counts = erase_counts;
    f->sector_size = sector_size;
    f->sector_count = sector_count;
    f->prog_size = prog_size;
    f->erased = erased;
    f->rng = seed;
    memset(mem, erased, (size_t)sector_size * sector_count);
    memset(erase_counts, 0, sizeof *erase_counts * sector_count);
}

static inline bool sim_flash_aligned(sim_flash *f, uint32_t addr, uint32_t len)
{
    bool ok = len > 0 && addr % f->prog_size == 0 && len % f->prog_size == 0 &&
              (uint64_t)addr + len <= (uint64_t)f->sector_size * f->sector_count;
    if (!ok) f->misuse++;
    return ok;
}

/* What programming `data` over `old` leaves: bits only move away from the
   erased value. */
static inline uint8_t sim_flash_programmed(const sim_flash *f, uint8_t old, uint8_t data)
{
    return f->erased == 0xFF ? (uint8_t)(old & data) : (uint8_t)(old | data);
}

/* Applies a program or erase (data NULL) half: what a power cut during it
   leaves, drawn from f->rng. Also for a copy of the memory (a test that
   cuts every step of a run in one run). */
static inline void sim_flash_cut(sim_flash *f, uint32_t addr, const uint8_t *data, uint32_t len)
{
    uint32_t i, done, r = sim_flash_rand(&f->rng);
    if (!data) { /* erase: a prefix erased, one byte half, the rest untouched */
        addr -= addr % f->sector_size;
        done = r % f->sector_size;
        memset(f->mem + addr, f->erased, done);
        f->mem[addr + done] = (uint8_t)((f->mem[addr + done] & (r >> 16)) | (f->erased & ~(r >> 16)));
        return;
    }
    done = (r % (len / f->prog_size)) * f->prog_size; /* whole units applied */
    for (i = 0; i < done; i++) f->mem[addr + i] = sim_flash_programmed(f, f->mem[addr + i], data[i]);
    for (i = done; i < done + f->prog_size; i++) { /* a random subset of the next unit's bits */
        uint8_t keep = (uint8_t)sim_flash_rand(&f->rng); /* bits that do not change */
        uint8_t want = sim_flash_programmed(f, f->mem[addr + i], data[i]);
        f->mem[addr + i] = (uint8_t)((f->mem[addr + i] & keep) | (want & (uint8_t)~keep));
    }
}

/* Counts a step; true when it may go ahead (power, injected faults, the cut). */
static inline int sim_flash_step(sim_flash *f, uint32_t addr, const uint8_t *data, uint32_t len)
{
    if (f->off) return SIM_FLASH_POWER_OFF;
    f->steps++;
    if (f->before_step) f->before_step(f->step_user, f, f->steps, addr, data, len);
    if (f->fail_step == f->steps) return SIM_FLASH_FAULT;
    if (f->cut_at == f->steps) {
        sim_flash_cut(f, addr, data, len);
        if (!data) f->erase_counts[addr / f->sector_size]++;
        f->off = true;
        return SIM_FLASH_POWER_OFF;
    }
    return 0;
}

static inline int sim_flash_read(void *user, uint32_t addr, void *buf, uint32_t len)
{
    sim_flash *f = (sim_flash *)user;
    if (f->off) return SIM_FLASH_POWER_OFF;
    if (!sim_flash_aligned(f, addr, len)) return SIM_FLASH_MISUSE;
    if (f->fail_reads && --f->fail_reads == 0) return SIM_FLASH_FAULT;
    memcpy(buf, f->mem + addr, len);
    return 0;
}

static inline int sim_flash_prog(void *user, uint32_t addr, const void *buf, uint32_t len)
{
    sim_flash *f = (sim_flash *)user;
    const uint8_t *data = (const uint8_t *)buf;
    uint32_t i;
    int rc;
    if (!f->off && !sim_flash_aligned(f, addr, len)) return SIM_FLASH_MISUSE;
    for (i = 0; !f->off && i < len; i++)
        if (f->mem[addr + i] != f->erased) { /* never over bytes not erased */
            f->misuse++;
            return SIM_FLASH_MISUSE;
        }
    if ((rc = sim_flash_step(f, addr, data, len)) != 0) return rc;
    for (i = 0; i < len; i++) f->mem[addr + i] = sim_flash_programmed(f, f->mem[addr + i], data[i]);
    return 0;
}

static inline int sim_flash_erase(void *user, uint32_t addr)
{
    sim_flash *f = (sim_flash *)user;
    int rc;
    if (!f->off && (addr % f->sector_size != 0 || addr / f->sector_size >= f->sector_count)) {
        f->misuse++;
        return SIM_FLASH_MISUSE;
    }
    if ((rc = sim_flash_step(f, addr, NULL, 0)) != 0) return rc;
    memset(f->mem + addr, f->erased, f->sector_size);
    f->erase_counts[addr / f->sector_size]++;
    return 0;
}

/* Power back on after a cut (the memory stays as the cut left it). */
static inline void sim_flash_power_on(sim_flash *f)
{
    f->off = false;
    f->cut_at = 0;
}

/* The opstate_flash_device over f. */
static inline opstate_flash_device sim_flash_device(sim_flash *f)
{
    opstate_flash_device d = {NULL, sim_flash_read, sim_flash_prog, sim_flash_erase, 0, 0, 0, 0};
    d.user = f;
    d.sector_size = f->sector_size;
    d.sector_count = f->sector_count;
    d.prog_size = f->prog_size;
    d.erased = f->erased;
    return d;
}

/* Lowest and highest erase count over the sectors. */
static inline void sim_flash_erase_spread(const sim_flash *f, uint32_t *min, uint32_t *max)
{
    uint32_t s;
    *min = UINT32_MAX;
    *max = 0;
    for (s = 0; s < f->sector_count; s++) {
        if (f->erase_counts[s] < *min) *min = f->erase_counts[s];
        if (f->erase_counts[s] > *max) *max = f->erase_counts[s];
    }
}

#endif /* SIM_FLASH_H */
