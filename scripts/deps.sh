#!/usr/bin/env bash
# Installs the Debian packages opstate's build and tests need, skipping what
# is already there. Non-interactive; needs root (or sudo) only when
# something is missing.
set -euo pipefail

# package -> a file or command that shows it is installed
declare -A probe=(
  [gcc]=/usr/bin/gcc
  [g++]=/usr/bin/g++
  [make]=/usr/bin/make
  [clang]=/usr/bin/clang
  [libclang-rt-14-dev]=/usr/lib/llvm-14/lib/clang/14.0.6/lib/linux/libclang_rt.fuzzer-x86_64.a
  [valgrind]=/usr/bin/valgrind
  [python3]=python3
  [liblmdb-dev]=/usr/include/lmdb.h
  [libsqlite3-dev]=/usr/include/sqlite3.h
  [libnats-dev]=/usr/include/nats/nats.h
  [nats-server]=nats-server
  [openssl]=openssl
  [cmake]=cmake
  [pkg-config]=pkg-config
  [man-db]=man
  [groff-base]=groff
  [jq]=jq
  [gnuplot-nox]=gnuplot
)

missing=()
for pkg in "${!probe[@]}"; do
  what=${probe[$pkg]}
  if [[ $what == /* ]]; then
    [[ -e $what ]] || dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  else
    command -v "$what" >/dev/null 2>&1 || missing+=("$pkg")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi

echo "deps: installing ${missing[*]}"
if [[ $(id -u) -eq 0 ]]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO=(sudo -n)
else
  echo "deps: missing Debian packages: ${missing[*]}" >&2
  echo "deps: run as root, or: apt-get install -y ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
