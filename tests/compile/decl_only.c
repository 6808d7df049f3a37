/* Compile matrix: the header alone gives the declarations and builds clean
   as C and C++ (no implementation, nothing defined here is called). */
#include "../../opstate.h"

int opstate_decl_probe(void);
int opstate_decl_probe(void)
{
    opstate_position p = {0, 0, 0};
    return (int)sizeof(opstate_event) + (int)p.seq + (int)OPSTATE_ID_TEXT_LEN;
}
