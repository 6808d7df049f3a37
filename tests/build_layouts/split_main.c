/* Layout "split": the program, declarations only; links with split_core.o,
   split_lmdb.o and split_nats.o. */
#include "../../opstate_lmdb.h"
#include "../../opstate_nats.h"
#include "probe.h"
