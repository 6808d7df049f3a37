#!/usr/bin/env bash
# Portability checks for opstate (DESIGN.md "Build and portability"): the
# core unit tests on a big-endian and a 32-bit target, and the library built
# and tested for Cortex-M. One summary line per target, then "N passed,
# M failed" where each target counts once; exit status 0 only when all pass.
#
#   s390x       big-endian, 64-bit: core tests, static, under qemu-s390x
#   i686        32-bit (4-byte size_t and long; uint64_t only 4-aligned in
#               structs): core tests, static, under qemu-i386
#   cortex-m3   opstate.h's implementation compiled freestanding (no libc,
#   cortex-m0   no malloc); .text size reported
#   mps2-an385  Cortex-M3 under qemu-system-arm with newlib semihosting: the
#               runner over the core tests that fit the board (see M_TESTS)
#
# Installs the Debian packages it needs first (only what is missing,
# --no-install-recommends; needs root or password-less sudo for that).
# The emulators are always called explicitly: binfmt_misc is not needed.
#
# Environment: BUILD (default build; objects go to $BUILD/portability),
# PORT_TIMEOUT (seconds allowed for one emulated run, default 120).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${BUILD:-build}/portability
TIMEOUT=${PORT_TIMEOUT:-120}
mkdir -p "$OUT"

# ---------------------------------------------------------------- install
# package and a file that shows it is installed (same scheme as deps.sh)
packages=(
  qemu-user               /usr/bin/qemu-s390x
  gcc-s390x-linux-gnu     /usr/bin/s390x-linux-gnu-gcc
  libc6-dev-s390x-cross   /usr/s390x-linux-gnu/include/stdio.h
  gcc-i686-linux-gnu      /usr/bin/i686-linux-gnu-gcc
  libc6-dev-i386-cross    /usr/i686-linux-gnu/include/stdio.h
  gcc-arm-none-eabi       /usr/bin/arm-none-eabi-gcc
  libnewlib-arm-none-eabi /usr/lib/arm-none-eabi/newlib/rdimon.specs
  qemu-system-arm         /usr/bin/qemu-system-arm
)
missing=()
for ((i = 0; i < ${#packages[@]}; i += 2)); do
  pkg=${packages[i]} file=${packages[i + 1]}
  [[ -e $file ]] || dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  if [[ $(id -u) -eq 0 ]]; then
    SUDO=()
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
  else
    echo "portability: missing Debian packages: ${missing[*]}" >&2
    echo "portability: run as root, or: apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
  fi
  echo "portability: installing ${missing[*]}"
  t0=$(date +%s)
  export DEBIAN_FRONTEND=noninteractive
  if ! { "${SUDO[@]}" apt-get update -qq &&
         "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }; then
    echo "portability: apt-get install failed" >&2
    exit 1
  fi
  echo "portability: installed in $(($(date +%s) - t0)) s"
fi
