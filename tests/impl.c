/* The one translation unit that holds the implementation for the tests.
   Compiled with the library's extra warnings (-Wconversion etc.). */
#define OPSTATE_IMPLEMENTATION
#include "../opstate.h"
