#!/usr/bin/env bash
# tests/install_test.sh — the installed opstate, as a user gets it.
#
# Installs twice into fresh temp prefixes: `make install PREFIX=...` and a
# CMake build (OPSTATE_BUILD_TOOL=ON) with `cmake --install --prefix ...`.
# Both trees must hold the same files with the same contents (the tool's
# binary aside; .pc files up to their prefix; the man page up to its date).
# Then, against each prefix, a small consumer (opstate.h + opstate_lmdb.h,
# both implementations, appending one event to an LMDB log in a temp dir)
# is built two ways, with -Wall -Wextra -Wpedantic -Werror: `cc ...
# $(pkg-config --cflags --libs opstate-lmdb)` and a CMake project with
# find_package(opstate VERSION REQUIRED COMPONENTS lmdb nats) +
# opstate::lmdb; each must run and print the expected line, and the
# installed tool must read that log. The man page must render (man -l,
# groff without warnings) with every command of `opstate --help`, the
# installed `opstate --help` must run, and `make uninstall` must leave no
# file behind. Everything lives in one temp dir, removed at the end.
# Prints one summary line; exits non-zero at the first failure.
set -Eeuo pipefail # -E: the ERR trap below names a failure inside a function too
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
T=$(mktemp -d "${TMPDIR:-/tmp}/opstate-install.XXXXXX")
trap 'rm -rf "$T"' EXIT
trap 'echo "install_test: FAILED at line $LINENO: $BASH_COMMAND" >&2' ERR
start=$SECONDS
WARN=(-Wall -Wextra -Wpedantic -Werror)
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(date +%s)} # both man pages get one date
unset DESTDIR

# The version, as opstate.h says it.
part() { sed -n "s/^#define OPSTATE_VERSION_$1 \\([0-9][0-9]*\\).*/\\1/p" opstate.h; }
version=$(part MAJOR).$(part MINOR).$(part PATCH)

echo "== make install PREFIX=$T/make"
make -s --no-print-directory install PREFIX="$T/make" DESTDIR= BUILD="$BUILD"

echo "== cmake (OPSTATE_BUILD_TOOL=ON), cmake --install --prefix $T/cmake"
cmake -S . -B "$T/cmake-build" -DOPSTATE_BUILD_TOOL=ON >"$T/cmake-configure.log"
cmake --build "$T/cmake-build" -j "$(nproc)" >"$T/cmake-build.log"
cmake --install "$T/cmake-build" --prefix "$T/cmake"

echo "== both trees hold the same files"
files=$(cd "$T/make" && find . -type f | sort)
diff <(echo "$files") <(cd "$T/cmake" && find . -type f | sort)
for f in ./bin/opstate ./include/opstate.h ./include/opstate_lmdb.h ./include/opstate_nats.h \
  ./share/man/man1/opstate.1 ./share/pkgconfig/opstate.pc ./share/pkgconfig/opstate-lmdb.pc \
  ./share/pkgconfig/opstate-nats.pc ./share/cmake/opstate/opstateConfig.cmake \
  ./share/cmake/opstate/opstateConfigVersion.cmake; do
  grep -qxF "$f" <<<"$files" || { echo "missing: $f"; false; }
done
while read -r f; do
  case $f in
    ./bin/opstate) ;;
    *.1) diff <(sed '/^\.TH /d' "$T/make/$f") <(sed '/^\.TH /d' "$T/cmake/$f") ;;
    *) diff <(sed "s|$T/make|PREFIX|g" "$T/make/$f") <(sed "s|$T/cmake|PREFIX|g" "$T/cmake/$f") ;;
  esac
done <<<"$files"
for h in opstate.h opstate_lmdb.h opstate_nats.h; do cmp "$h" "$T/make/include/$h"; done

echo "== the consumer"
mkdir -p "$T/consumer"
cat >"$T/consumer/consumer.c" <<'EOF'
/* A program that uses the installed headers: opens an LMDB environment in
   the directory it is given and appends one event to its log. */
#define OPSTATE_IMPLEMENTATION
#define OPSTATE_LMDB_IMPLEMENTATION
#include <opstate_lmdb.h>

#include <stdio.h>

int main(int argc, char **argv)
{
    opstate_lmdb_config ec = {0};
    opstate_lmdb_log_config lc = {0};
    opstate_lmdb *env = NULL;
    opstate_lmdb_log *lg = NULL;
    opstate_log log;
    opstate_event ev = {0};
    opstate_bytes prefix = {(const uint8_t *)"ops", 3};
    opstate_append_result ar;
    opstate_error err;
    opstate_result r;
    uint8_t entropy[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    if (argc != 2) return 2;
    ec.path = argv[1];
    r = opstate_lmdb_open(&ec, &env, &err);
    if (r == OPSTATE_OK) r = opstate_lmdb_log_open(env, &lc, &lg, &err);
    if (r == OPSTATE_OK) {
        log = opstate_lmdb_log_iface(lg);
        ev.scope.ptr = (const uint8_t *)"site1"; ev.scope.len = 5;
        ev.kind.ptr = (const uint8_t *)"host"; ev.kind.len = 4;
        ev.key.ptr = (const uint8_t *)"10.0.0.1"; ev.key.len = 8;
        ev.op = OPSTATE_OP_PUT; ev.data.ptr = (const uint8_t *)"\"up\""; ev.data.len = 4;
        opstate_id_time_ordered(1700000000000000000, entropy, &ev.id);
        r = opstate_publish(&log, prefix, &ev, NULL, NULL, &ar, &err);
    }
    if (r != OPSTATE_OK) {
        fprintf(stderr, "consumer: %s\n", opstate_result_str(r));
        return 1;
    }
    printf("opstate %s, opstate_lmdb %s: appended sequence %lu\n", OPSTATE_VERSION_STRING,
           OPSTATE_LMDB_VERSION_STRING, (unsigned long)ar.seq);
    opstate_lmdb_log_close(lg);
    opstate_lmdb_close(env);
    return 0;
}
EOF
cat >"$T/consumer/CMakeLists.txt" <<'EOF'
cmake_minimum_required(VERSION 3.13)
project(consumer C)
# A newer major version is refused by opstateConfigVersion.cmake.
find_package(opstate 1 QUIET)
if(opstate_FOUND)
  message(FATAL_ERROR "find_package(opstate 1) accepted opstate ${opstate_VERSION}")
endif()
find_package(opstate ${EXPECTED_VERSION} REQUIRED COMPONENTS lmdb nats)
if(NOT opstate_VERSION STREQUAL EXPECTED_VERSION OR NOT opstate_DIR STREQUAL EXPECTED_DIR)
  message(FATAL_ERROR "found opstate ${opstate_VERSION} in ${opstate_DIR}")
endif()
add_executable(consumer consumer.c)
set_target_properties(consumer PROPERTIES C_STANDARD 99 C_STANDARD_REQUIRED ON C_EXTENSIONS OFF)
target_compile_options(consumer PRIVATE -Wall -Wextra -Wpedantic -Werror)
target_link_libraries(consumer PRIVATE opstate::lmdb)
EOF
expected="opstate $version, opstate_lmdb $version: appended sequence 1"

# run_consumer BINARY PREFIX: runs it on a fresh directory; the installed
# tool must then see the one message it appended.
run_consumer() {
  local data out
  data=$(mktemp -d "$T/data.XXXXXX")
  out=$("$1" "$data/log")
  [[ $out == "$expected" ]] || { echo "$1 printed: $out"; return 1; }
  "$2/bin/opstate" info --log "lmdb:$data/log" --json >"$data/info.json"
  python3 -c 'import json, sys; i = json.load(open(sys.argv[1])); sys.exit(i["messages"] != 1)' "$data/info.json" ||
    { cat "$data/info.json"; return 1; }
}

for how in make cmake; do
  prefix=$T/$how
  echo "== consumer against the $how install: pkg-config"
  export PKG_CONFIG_PATH=$prefix/share/pkgconfig
  [[ $(pkg-config --modversion opstate) == "$version" ]]
  [[ $(pkg-config --modversion opstate-lmdb) == "$version" ]]
  pkg-config --libs opstate-nats | grep -q -- '-lnats'
  flags=$(pkg-config --cflags --libs opstate-lmdb)
  echo "cc -std=c99 ${WARN[*]} consumer.c $flags"
  # shellcheck disable=SC2086 # the flags are words
  cc -std=c99 "${WARN[@]}" "$T/consumer/consumer.c" $flags -o "$T/consumer/pc-$how"
  run_consumer "$T/consumer/pc-$how" "$prefix"
  unset PKG_CONFIG_PATH

  echo "== consumer against the $how install: find_package(opstate)"
  cmake -S "$T/consumer" -B "$T/consumer/build-$how" -DCMAKE_PREFIX_PATH="$prefix" \
    -DEXPECTED_VERSION="$version" -DEXPECTED_DIR="$prefix/share/cmake/opstate" >"$T/consumer-$how.log"
  cmake --build "$T/consumer/build-$how" >>"$T/consumer-$how.log"
  run_consumer "$T/consumer/build-$how/consumer" "$prefix"
done

echo "== the man page and the installed tool"
page=$T/make/share/man/man1/opstate.1
warnings=$(groff -man -Tutf8 -ww -z "$page" 2>&1)
[[ -z $warnings ]] || { echo "$warnings"; false; }
text=$(MANWIDTH=80 man --warnings -l "$page" 2>"$T/man.err")
if grep -Ei 'warning|error' "$T/man.err"; then false; fi # (a locale notice is no failure)
for s in 'OPSTATE(1)' NAME SYNOPSIS DESCRIPTION COMMANDS 'EXIT STATUS'; do
  grep -qF "$s" <<<"$text" || { echo "the rendered page has no $s"; false; }
done
help=$("$T/make/bin/opstate" --help)
[[ ${help%%$'\n'*} == "opstate $version: "* ]]
commands=$(sed -n '/^Commands:/,/^$/s/^  \([a-z][a-z]*\) .*/\1/p' <<<"$help")
[[ -n $commands ]]
for c in $commands; do
  grep -qx "   $c" <<<"$text" || { echo "the man page has no section for $c"; false; }
done
[[ $("$T/cmake/bin/opstate" --version) == "opstate $version "* ]]

echo "== make uninstall"
make -s --no-print-directory uninstall PREFIX="$T/make" DESTDIR=
left=$(find "$T/make" -type f)
[[ -z $left ]] || { echo "left behind: $left"; false; }

echo "install: make and cmake installs agree ($(wc -l <<<"$files") files); pkg-config and find_package consumers" \
  "built and ran against both; man page renders; uninstall clean ($((SECONDS - start)) s)"
