/* crc_fix.h — for fuzz targets of formats that end in a CRC32C of all the
   bytes before it (events, dedup windows). The trailer stops almost every
   mutation at CORRUPT, so each input is checked twice: as it is, and with
   its last 4 bytes replaced by the CRC32C of the rest, which lets the fuzzer
   reach the checks behind the checksum. */
#ifndef FUZZ_CRC_FIX_H
#define FUZZ_CRC_FIX_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "../../opstate.h"

static void fuzz_as_is_and_with_crc(const uint8_t *data, size_t size, int (*check)(const uint8_t *, size_t))
{
    uint8_t *fixed;
    check(data, size);
    if (size < 4 || !(fixed = (uint8_t *)malloc(size))) return;
    memcpy(fixed, data, size);
    opstate_put_le32(fixed + size - 4, opstate_crc32c(0, fixed, size - 4));
    check(fixed, size);
    free(fixed);
}

#endif
