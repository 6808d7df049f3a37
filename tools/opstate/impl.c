/* impl.c — the library the opstate tool runs on: the implementations of
   opstate.h, opstate_lmdb.h and opstate_nats.h, compiled once here (every
   other file of the tool includes them for the declarations only). */
#define OPSTATE_IMPLEMENTATION
#define OPSTATE_LMDB_IMPLEMENTATION
#define OPSTATE_NATS_IMPLEMENTATION
#include "opstate_lmdb.h"
#include "opstate_nats.h"
