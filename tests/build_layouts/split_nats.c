/* Layout "split": the NATS implementation without the core's (that one is
   in split_core.c), no -D flag. */
#define OPSTATE_NATS_IMPLEMENTATION
#include "../../opstate_nats.h"
