# portability_lib.sh — what scripts/portability.sh and scripts/sizes.sh
# share; sourced by them, not run on its own: the warning sets, the flags of
# the library built as DESIGN.md promises for Cortex-M, and (from
# packages_lib.sh) the installer of the Debian packages a script needs.
# shellcheck shell=bash disable=SC2034 # the variables are for the scripts that source it
# shellcheck source=scripts/packages_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/packages_lib.sh"

WARN="-Wall -Wextra -Wpedantic -Werror"
LIBWARN="$WARN -Wconversion -Wsign-conversion -Wcast-qual -Wundef -Wstrict-prototypes"
# The library for a microcontroller: no libc (the allocating layer then
# runs on the caller's opstate_allocator), and the pure layer: no malloc.
M_NO_LIBC="-ffreestanding -DOPSTATE_NO_STDLIB"
M_FREESTANDING="$M_NO_LIBC -DOPSTATE_NO_MALLOC"
