/* The translation unit holding the core and LMDB implementations for the
   LMDB test programs, compiled with the library's extra warnings. */
#define OPSTATE_IMPLEMENTATION
#define OPSTATE_LMDB_IMPLEMENTATION
#include "../opstate_lmdb.h"
