/* test_driver_flash.c — the consumer-driver suite (driver_suite.h) over
   the memory log and the flash store's adapter (opstate_flash_store_iface)
   on a simulated NOR flash (sim_flash.h): the driver, the restore decision
   and the dedup window work unchanged on top of the flash store. Tests
   "driver_flash.*".

   The flash: 256 sectors of 4 KiB, program unit 8, erased 0xFF, work
   buffer 4 KiB; every flush commits the dedup window too (16 bytes an
   id), so the ring turns and new bases are written (the compaction) many
   times over a run. A crash is the suite's (a store wrapper that fails
   every flush from the crash point on); power cuts at every flash step are
   tests/test_flash.c's. Each test ends with the simulated flash checked
   for broken flash rules. */
#include "driver_suite.h"
#include "memlog_env.h"
#include "sim_flash.h"

#define FLASH_SECTOR 4096u
#define FLASH_SECTORS 256u

typedef struct flash_env {
    memlog_env base; /* first: the log calls take the environment */
    sim_flash sim;
    opstate_flash fs;
    uint8_t *mem;
    uint32_t erases[FLASH_SECTORS];
    uint8_t work[4096];
} flash_env;

static void flash_destroy(void *env)
{
    flash_env *e = (flash_env *)env;
    if (!e) return;
    CHECK_EQ_U64(e->sim.misuse, 0);
    opstate_memlog_destroy(e->base.log);
    free(e->mem);
    free(e);
}

static void *flash_create(void *user, const driver_env_options *opts)
{
    flash_env *e = (flash_env *)calloc(1, sizeof *e);
    opstate_flash_device dev;
    (void)user;
    if (!e) return NULL;
    e->mem = (uint8_t *)malloc((size_t)FLASH_SECTOR * FLASH_SECTORS);
    if (!e->mem || !memlog_env_init(&e->base, opts)) {
        flash_destroy(e);
        return NULL;
    }
    sim_flash_init(&e->sim, e->mem, e->erases, FLASH_SECTOR, FLASH_SECTORS, 8, 0xFF, 99);
    dev = sim_flash_device(&e->sim);
    if (opstate_flash_open(&e->fs, &dev, e->work, sizeof e->work, NULL) != OPSTATE_OK) {
        flash_destroy(e);
        return NULL;
    }
    return e;
}

static opstate_store flash_store(void *env) { return opstate_flash_store_iface(&((flash_env *)env)->fs); }

static const driver_backend *flash_backend(void)
{
    static driver_backend b;
    if (!b.create) memlog_env_backend(&b, "flash", flash_create, flash_store, flash_destroy);
    return &b;
}

DRIVER_SUITE(flash, flash_backend)
