/* Layout that breaks the LMDB rule: a system header first, no feature-test
   macro. Under strict -std=c99 / c11 with glibc it must NOT build, and the
   first error must be opstate_lmdb.h's #error that names the fix (the
   compile matrix checks both); never linked. */
#include <stdio.h>
#define OPSTATE_LMDB_IMPLEMENTATION
#include "../../opstate_lmdb.h"
