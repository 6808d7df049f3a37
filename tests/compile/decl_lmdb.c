/* Compile matrix: the LMDB companion's declarations alone build clean as C
   and C++ (no implementation, no <lmdb.h> needed). */
#include "../../opstate_lmdb.h"

int opstate_lmdb_decl_probe(void);
int opstate_lmdb_decl_probe(void)
{
    return (int)sizeof(opstate_lmdb_config) + OPSTATE_LMDB_LAYOUT_VERSION;
}
