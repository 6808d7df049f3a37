/* bench_crc_small.c — the portable CRC32C as OPSTATE_CRC_SMALL builds it
   (the 64-byte table), linked into bench_core beside its default build so
   that one run compares the two: a second copy of the implementation, every
   function static, with one entry point. */
#define OPSTATE_STATIC
#define OPSTATE_CRC_SMALL
#define OPSTATE_IMPLEMENTATION
#include "../opstate.h"

uint32_t bench_crc32c_small(uint32_t crc, const void *data, size_t n);

/* opstate_crc32c with the small table (and never the CRC instructions). */
uint32_t bench_crc32c_small(uint32_t crc, const void *data, size_t n)
{
    return ~opstate__crc32c_sw(~crc, (const uint8_t *)data, n, NULL);
}
