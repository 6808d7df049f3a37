/* Compile matrix: the NATS companion's declarations build clean as C and
   C++ (no implementation). */
#include "../../opstate_nats.h"

int opstate_nats_decl_probe(void);
int opstate_nats_decl_probe(void)
{
    return (int)sizeof(opstate_nats_config) + OPSTATE_NATS_VERSION_MAJOR;
}
