/* Layout: system headers before the core and LMDB implementations. Under
   strict -std=c99 / c11 the LMDB part needs POSIX, which glibc fixes at the
   first system header, so such a file asks for it itself, above every
   include, as opstate_lmdb.h's BUILD note says (the compile matrix builds
   it with no -D flag). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <string.h>
#define OPSTATE_IMPLEMENTATION
#define OPSTATE_LMDB_IMPLEMENTATION
#include "../../opstate_lmdb.h"
#include "probe.h"
