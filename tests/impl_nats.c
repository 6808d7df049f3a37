/* The translation unit holding the core and NATS implementations for the
   NATS test programs, compiled with the library's extra warnings. */
#define OPSTATE_IMPLEMENTATION
#define OPSTATE_NATS_IMPLEMENTATION
#include "../opstate_nats.h"
