/* Layout: the core's and the LMDB implementation in one file, no -D flag,
   opstate_lmdb.h the first include (it includes opstate.h itself). */
#define OPSTATE_IMPLEMENTATION
#define OPSTATE_LMDB_IMPLEMENTATION
#include "../../opstate_lmdb.h"
#include "probe.h"
