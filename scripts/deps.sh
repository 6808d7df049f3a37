#!/usr/bin/env bash
# Installs the Debian packages opstate's build and tests need, skipping what
# is already there. Non-interactive; needs root (or sudo) only when
# something is missing.
set -euo pipefail
# shellcheck source=scripts/packages_lib.sh
source "$(dirname "$0")/packages_lib.sh"

# each package, then a file or a command that shows it is installed
need_packages deps "${TMPDIR:-/tmp}/opstate-deps-apt.log" \
  gcc /usr/bin/gcc \
  g++ /usr/bin/g++ \
  make /usr/bin/make \
  clang /usr/bin/clang \
  libclang-rt-14-dev /usr/lib/llvm-14/lib/clang/14.0.6/lib/linux/libclang_rt.fuzzer-x86_64.a \
  valgrind /usr/bin/valgrind \
  python3 python3 \
  liblmdb-dev /usr/include/lmdb.h \
  libsqlite3-dev /usr/include/sqlite3.h \
  libnats-dev /usr/include/nats/nats.h \
  nats-server nats-server \
  openssl openssl \
  cmake cmake \
  pkg-config pkg-config \
  man-db man \
  groff-base groff \
  jq jq \
  gnuplot-nox gnuplot
