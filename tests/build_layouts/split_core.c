/* Layout "split" (with split_lmdb.c, split_nats.c, split_main.c): each
   implementation in a file of its own. This one holds the core's only. */
#define OPSTATE_IMPLEMENTATION
#include "../../opstate.h"
