/* Layout: the core's and the NATS implementation in one file, no -D flag,
   opstate_nats.h the first include (it includes opstate.h itself). */
#define OPSTATE_IMPLEMENTATION
#define OPSTATE_NATS_IMPLEMENTATION
#include "../../opstate_nats.h"
#include "probe.h"
