/* Test program entry: the runner's main() and registry live here. */
#define RUNNER_MAIN
#include "runner.h"
