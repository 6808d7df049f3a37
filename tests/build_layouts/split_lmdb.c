/* Layout "split": the LMDB implementation without the core's (that one is
   in split_core.c), no -D flag. */
#define OPSTATE_LMDB_IMPLEMENTATION
#include "../../opstate_lmdb.h"
