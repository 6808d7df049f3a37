/* Layout: all three implementations in one file, no -D flag, in the order
   that is hardest on the LMDB part: opstate.h first, then opstate_nats.h
   (whose <nats/nats.h> pulls in system headers before the LMDB part). */
#define OPSTATE_IMPLEMENTATION
#define OPSTATE_LMDB_IMPLEMENTATION
#define OPSTATE_NATS_IMPLEMENTATION
#include "../../opstate.h"
#include "../../opstate_nats.h"
#include "../../opstate_lmdb.h"
#include "probe.h"
