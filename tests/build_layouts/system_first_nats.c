/* Layout: system headers before the implementations (core and NATS), no
   -D flag: the NATS part needs nothing beyond ISO C and nats.c, so the
   order of the includes does not matter. */
#include <stdio.h>
#include <string.h>
#define OPSTATE_IMPLEMENTATION
#define OPSTATE_NATS_IMPLEMENTATION
#include "../../opstate_nats.h"
#include "probe.h"
