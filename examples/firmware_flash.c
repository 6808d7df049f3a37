/* cc -std=c99 -O2 -Wall -Wextra -Wpedantic -Werror examples/firmware_flash.c -o firmware_flash

   Freestanding (no libc; the library part and this file build as they
   would for a microcontroller, output goes to a UART stand-in):

   cc -std=c99 -O2 -ffreestanding -DOPSTATE_NO_STDLIB -Wall -Wextra -Wpedantic -Werror -c examples/firmware_flash.c -o firmware_flash.o

   firmware_flash.c — state that survives power loss on raw flash
   (opstate.h >>flash), OPSTATE_NO_MALLOC, static buffers only.

   A valve controller keeps the opening of its 8 valves, the position of
   the last event it applied and its dedup window in 8 sectors of NOR flash
   (here a RAM array behind a driver with flash rules: program only clears
   bits, erase sets a sector to 0xFF, 8-byte program units). It:
     1. applies events from the plant's log and flushes every 5 of them
        (opstate_flash_plan picks a delta of the changed valves, or a fresh
        base when the space asks for one: the ring turns several times);
     2. loses power in the middle of a flush (the driver stops at its 150th
        program or erase call, that call half done);
     3. reboots: opens the store, loads the newest complete state (the torn
        flush is ignored), resumes the log after the stored position,
        skips a redelivered event by its id, and ends with the same valves
        as a controller that never lost power. */
#define OPSTATE_NO_MALLOC
#define OPSTATE_IMPLEMENTATION
#include "../opstate.h"

/* --- output: a UART ------------------------------------------------------ */

#ifdef OPSTATE_NO_STDLIB
static char uart_ram[4096];
static size_t uart_used;
static void put_str(const char *s)
{
    while (*s && uart_used < sizeof uart_ram) uart_ram[uart_used++] = *s++;
}
#else
#include <stdio.h>
static void put_str(const char *s)
{
    fputs(s, stdout);
}
#endif

static void put_u64(const char *before, uint64_t v, const char *after)
{
    char text[21];
    uint64_t unit = 1;
    size_t n = 0;
    while (v / unit >= 10) unit *= 10; /* the highest digit's */
    for (; unit > 0; unit /= 10) text[n++] = (char)('0' + (int)(v / unit % 10));
    text[n] = '\0';
    put_str(before);
    put_str(text);
    put_str(after);
}

/* --- the flash: 8 sectors of 1 KiB, 8-byte program units, erased 0xFF ---- */

#define SECTOR_SIZE 1024u
#define SECTORS 8u
#define UNIT 8u

static uint8_t flash[SECTORS * SECTOR_SIZE];
static uint32_t flash_calls, flash_cut_at; /* program + erase calls; power fails at this one (0: never) */

/* On the board these three call the MCU's flash driver (HAL_FLASH_Program,
   nrfx_nvmc_*, ...): addresses relative to the region given to the store. */
static int flash_read(void *user, uint32_t addr, void *buf, uint32_t len)
{
    (void)user;
    OPSTATE_MEMCPY(buf, flash + addr, len);
    return 0;
}

static int flash_prog(void *user, uint32_t addr, const void *buf, uint32_t len)
{
    const uint8_t *p = (const uint8_t *)buf;
    uint32_t i;
    (void)user;
    if (flash_cut_at && ++flash_calls >= flash_cut_at) {
        if (flash_calls == flash_cut_at) flash[addr] &= p[0]; /* half done: one byte */
        return -1;                                            /* no power */
    }
    for (i = 0; i < len; i++) flash[addr + i] &= p[i]; /* program only clears bits */
    return 0;
}

static int flash_erase(void *user, uint32_t addr)
{
    (void)user;
    if (flash_cut_at && ++flash_calls >= flash_cut_at) {
        if (flash_calls == flash_cut_at) OPSTATE_MEMSET(flash + addr, 0xFF, SECTOR_SIZE / 2); /* half erased */
        return -1;
    }
    OPSTATE_MEMSET(flash + addr, 0xFF, SECTOR_SIZE);
    return 0;
}

/* --- the controller ------------------------------------------------------ */

#define VALVES 8u
#define EVENTS 120u
#define FLUSH_EVERY 5u

typedef struct controller {
    opstate_flash store;
    uint8_t work[256];          /* the store's work buffer: the largest entry fits */
    uint8_t opening[VALVES];    /* percent */
    bool dirty[VALVES];
    uint64_t position;          /* last event applied */
    opstate_dedup dedup;        /* recent event ids */
    uint32_t dedup_storage[96]; /* opstate_dedup_storage_size(16) = 384 bytes */
} controller;

/* Event n of the plant's log: valve n % 8 to a new opening, with an id. */
static void event_of(uint64_t n, uint32_t *valve, uint8_t *opening, opstate_id *id)
{
    OPSTATE_MEMSET(id, 0, sizeof *id);
    opstate_put_le64(id->bytes, n);
    *valve = (uint32_t)(n * 5 % VALVES);
    *opening = (uint8_t)(n * 37 % 101);
}

static void apply(controller *c, uint64_t n)
{
    uint32_t valve;
    uint8_t opening;
    opstate_id id;
    event_of(n, &valve, &opening, &id);
    if (!opstate_dedup_insert(&c->dedup, &id)) return; /* a redelivery: already applied */
    c->opening[valve] = opening;
    c->dirty[valve] = true;
    c->position = n;
}

static opstate_bytes valve_key(uint32_t valve, uint8_t key[7])
{
    opstate_bytes b;
    OPSTATE_MEMCPY(key, "valve/", 6);
    key[6] = (uint8_t)('0' + valve);
    b.ptr = key;
    b.len = 7;
    return b;
}

/* Writes the changed valves (or all, as a new base) + position + dedup. */
static opstate_result flush(controller *c)
{
    uint8_t key[7], dedup[6 + 16 * 16 + 4];
    size_t dedup_len;
    uint64_t delta = 0, base = 0, commit;
    opstate_flash_kind kind;
    opstate_flash_meta meta;
    opstate_flash_entry e;
    opstate_bytes d;
    opstate_result r;
    uint32_t v;
    opstate_dedup_encode(&c->dedup, dedup, sizeof dedup, &dedup_len);
    for (v = 0; v < VALVES; v++) {
        base += opstate_flash_entry_size(&c->store, 7, 1);
        if (c->dirty[v]) delta += opstate_flash_entry_size(&c->store, 7, 1);
    }
    commit = opstate_flash_commit_size(&c->store, dedup_len);
    if ((r = opstate_flash_plan(&c->store, delta + commit, base + commit, &kind)) != OPSTATE_OK ||
        (r = opstate_flash_begin(&c->store, kind, NULL)) != OPSTATE_OK)
        return r;
    OPSTATE_MEMSET(&e, 0, sizeof e);
    for (v = 0; v < VALVES && r == OPSTATE_OK; v++) {
        if (kind == OPSTATE_FLASH_DELTA && !c->dirty[v]) continue;
        e.key = valve_key(v, key);
        e.value.ptr = &c->opening[v];
        e.value.len = 1;
        r = opstate_flash_put(&c->store, &e, NULL);
    }
    meta.schema_version = 1;
    meta.position.seq = c->position;
    meta.position.time = 0;
    meta.position.epoch = 1;
    d.ptr = dedup;
    d.len = dedup_len;
    if (r != OPSTATE_OK || (r = opstate_flash_commit(&c->store, &meta, d, NULL)) != OPSTATE_OK) return r;
    OPSTATE_MEMSET(c->dirty, 0, sizeof c->dirty);
    return OPSTATE_OK;
}

static opstate_result load_valve(void *user, const opstate_flash_entry *e)
{
    controller *c = (controller *)user;
    uint32_t valve = (uint32_t)(e->key.ptr[6] - '0');
    if (e->key.len != 7 || valve >= VALVES || e->value.len != 1) return OPSTATE_MALFORMED;
    c->opening[valve] = e->value.ptr[0];
    return OPSTATE_OK;
}

/* Boot: open the store over the flash, load what it holds. */
static opstate_result boot(controller *c, const opstate_flash_device *dev)
{
    uint8_t dedup[6 + 16 * 16 + 4];
    size_t dedup_len;
    opstate_flash_meta meta;
    opstate_result r;
    OPSTATE_MEMSET(c, 0, sizeof *c);
    if ((r = opstate_dedup_init(&c->dedup, c->dedup_storage, sizeof c->dedup_storage, 16)) != OPSTATE_OK ||
        (r = opstate_flash_open(&c->store, dev, c->work, sizeof c->work, NULL)) != OPSTATE_OK)
        return r;
    r = opstate_flash_load(&c->store, load_valve, c, &meta, dedup, sizeof dedup, &dedup_len, NULL);
    if (r == OPSTATE_NOT_FOUND) return OPSTATE_OK; /* a blank device */
    if (r == OPSTATE_OK) r = opstate_dedup_decode(&c->dedup, dedup, dedup_len, NULL);
    c->position = meta.position.seq;
    return r;
}

/* Applies events from..EVENTS, flushing every FLUSH_EVERY; stops at the
   first failed flush (the power is gone). Returns the last flushed. */
static uint64_t run(controller *c, uint64_t from)
{
    uint64_t n, flushed = c->position;
    for (n = from; n <= EVENTS; n++) {
        apply(c, n);
        if (n % FLUSH_EVERY != 0) continue;
        if (flush(c) != OPSTATE_OK) break;
        flushed = n;
    }
    return flushed;
}

static controller device, reference;

int main(void)
{
    /* user, read, prog, erase, sector size and count, program unit, erased value */
    const opstate_flash_device dev = {NULL, flash_read, flash_prog, flash_erase, SECTOR_SIZE, SECTORS, UNIT, 0xFF};
    opstate_flash_stats st;
    uint64_t flushed;
    uint32_t v;
    OPSTATE_MEMSET(flash, 0xFF, sizeof flash); /* a blank chip */

    put_str("1. the controller runs; power fails at the 150th flash call\n");
    flash_cut_at = 150;
    if (boot(&device, &dev) != OPSTATE_OK) return 1;
    flushed = run(&device, 1);
    put_u64("   last flush that completed: event ", flushed, "\n");

    put_str("2. reset: open the store, load the newest complete state\n");
    flash_cut_at = 0;
    if (boot(&device, &dev) != OPSTATE_OK) return 1;
    st = opstate_flash_get_stats(&device.store);
    put_u64("   stored position: event ", device.position, "");
    put_u64(" (torn records ignored: ", st.torn_tails, ")\n");
    if (device.position < flushed) return 1; /* never lost beyond the last completed flush */

    put_str("3. resume after the stored position; a redelivered event is skipped\n");
    apply(&device, device.position); /* the log hands the last event out again */
    run(&device, device.position + 1);
    if (boot(&device, &dev) != OPSTATE_OK) return 1; /* and once more across a reset */
    st = opstate_flash_get_stats(&device.store);
    put_u64("   after the run: position ", device.position, "");
    put_u64(", sectors erased (highest count) ", st.erase_count_max, "\n");

    if (boot(&reference, &dev) != OPSTATE_OK) return 1; /* (the same flash: just for its buffers) */
    OPSTATE_MEMSET(reference.opening, 0, sizeof reference.opening);
    for (flushed = 1; flushed <= EVENTS; flushed++) {
        uint32_t valve;
        uint8_t opening;
        opstate_id id;
        event_of(flushed, &valve, &opening, &id);
        reference.opening[valve] = opening;
    }
    for (v = 0; v < VALVES; v++)
        if (device.opening[v] != reference.opening[v]) {
            put_str("   valves differ from a controller that never lost power\n");
            return 1;
        }
    put_str("   valves equal those of a controller that never lost power\n");
    return 0;
}
