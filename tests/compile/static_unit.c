/* Compile matrix: every function static (OPSTATE_STATIC) in one unit that
   also includes the header twice with the implementation switch on. */
#define OPSTATE_STATIC
#define OPSTATE_IMPLEMENTATION
#include "../../opstate.h"
#include "../../opstate.h"
#include <stdio.h>

int main(void)
{
    static const char digits[] = "123456789";
    uint32_t crc = opstate_crc32c(0, digits, 9);
    printf("static unit: crc32c=%08lx version=%d\n", (unsigned long)crc, opstate_version_number());
    return crc == 0xe3069283u && opstate_version_number() == OPSTATE_VERSION_NUMBER ? 0 : 1;
}
