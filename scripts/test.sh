#!/usr/bin/env bash
# Runs every suite: unit tests (plain, ASan+UBSan, valgrind), the compile
# matrix, and the fuzz seed replays; the CLI tests, the kill -9 chaos test
# and the examples run plain and under ASan+UBSan; the README's two demos
# (make demo, make demo-nats) run as a newcomer runs them. Each unit-test case counts
# once per run; each compile-matrix entry, sanitizer run and seed replay
# counts as one test.
# Ends with one line: "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
mkdir -p "$BUILD"
passed=0 failed=0
LIBWARN="-O2 -Wall -Wextra -Wpedantic -Werror -Wconversion -Wsign-conversion -Wcast-qual -Wundef"
# Sanitizer runs of programs (the tool under the CLI tests, kill9, the
# examples): the Makefile's SAN flags; leaks count; a report is fatal and
# exits 86, a code no program here uses, so an exit-code check sees it too;
# tests/lsan.supp holds back a leak inside nats.c (explained there). A log
# or output that holds a report fails its check or run (SAN_REPORT).
SAN=$(make -s --no-print-directory --eval='print-san: ; @echo $(SAN)' print-san)
SAN_ENV=(ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=86
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:exitcode=86
  LSAN_OPTIONS=suppressions=$PWD/tests/lsan.supp:print_suppressions=0)
SAN_REPORT='ERROR: [A-Za-z]*Sanitizer|LeakSanitizer|runtime error:'

ok()   { passed=$((passed + 1)); }
bad()  { failed=$((failed + 1)); echo "FAILED: $*"; }
# check NAME CMD...: one test; output shown only on failure
check() {
  local name=$1; shift
  local log="$BUILD/log.$(echo "$name" | tr -c 'a-zA-Z0-9._-' '_')"
  if "$@" >"$log" 2>&1 && ! grep -Eq "$SAN_REPORT" "$log"; then ok; else bad "$name"; tail -n 30 "$log"; fi
}
# check_show NAME CMD...: like check, and prints the last line it wrote
check_show() {
  local name=$1
  check "$@" && echo "$name: $(tail -n 1 "$BUILD/log.$(echo "$name" | tr -c 'a-zA-Z0-9._-' '_')")"
}
# unit NAME CMD...: a runner binary; adds its own counts
unit() {
  local name=$1; shift
  local out line p f
  out=$("$@" 2>&1); local rc=$?
  line=$(printf '%s\n' "$out" | tail -n 1)
  if [[ $line =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
    p=${BASH_REMATCH[1]} f=${BASH_REMATCH[2]}
  else
    p=0 f=1
  fi
  # a sanitizer report the run did not count itself (e.g. from a command
  # whose stderr the script does not check) fails it too
  if [[ $f -eq 0 ]] && printf '%s\n' "$out" | grep -Eq "$SAN_REPORT"; then f=1; fi
  passed=$((passed + p)); failed=$((failed + f))
  if [[ $rc -ne 0 || $f -ne 0 ]]; then
    [[ $f -eq 0 ]] && failed=$((failed + 1))
    echo "FAILED: $name"; printf '%s\n' "$out" | grep -v '^ok ' | tail -n 40
  else
    echo "$name: $line"
  fi
}

echo "== mutant list (make mutate): every guard it flips still occurs once"
check "tests/mutants.txt is current" bash scripts/mutate.sh --check
echo "== build"
check "build unit" make -s "$BUILD/unit" || true
echo "== unit tests"
if [[ -x $BUILD/unit ]]; then unit "unit" "./$BUILD/unit"; fi

echo "== compile matrix"
for cc in gcc clang; do
  for std in c99 c11; do
    check "$cc $std declarations" $cc -std=$std $LIBWARN -Wstrict-prototypes -c tests/compile/decl_only.c -o "$BUILD/m.o"
    check "$cc $std implementation" $cc -std=$std $LIBWARN -Wstrict-prototypes -c tests/impl.c -o "$BUILD/m.o"
  done
done
for std in c++11 c++17; do
  check "g++ $std declarations" g++ -x c++ -std=$std $LIBWARN -c tests/compile/decl_only.c -o "$BUILD/m.o"
  check "g++ $std implementation" g++ -x c++ -std=$std $LIBWARN -c tests/impl.c -o "$BUILD/m.o"
done
for std in c99 c11; do
  for cc in gcc clang; do
    check "$cc $std lmdb declarations" $cc -std=$std $LIBWARN -Wstrict-prototypes -c tests/compile/decl_lmdb.c -o "$BUILD/m.o"
    check "$cc $std lmdb implementation" $cc -std=$std $LIBWARN -Wstrict-prototypes -c tests/impl_lmdb.c -o "$BUILD/m.o"
  done
done
for std in c++11 c++17; do
  check "g++ $std lmdb declarations" g++ -x c++ -std=$std $LIBWARN -c tests/compile/decl_lmdb.c -o "$BUILD/m.o"
  check "g++ $std lmdb implementation" g++ -x c++ -std=$std $LIBWARN -c tests/impl_lmdb.c -o "$BUILD/m.o"
done
for std in c99 c11; do
  check "gcc $std nats declarations" gcc -std=$std $LIBWARN -Wstrict-prototypes -c tests/compile/decl_nats.c -o "$BUILD/m.o"
  check "gcc $std nats implementation" gcc -std=$std $LIBWARN -Wstrict-prototypes -c tests/impl_nats.c -o "$BUILD/m.o"
done
for impl in impl impl_lmdb impl_nats; do
  check "gcc -O0 $impl (maybe-uninitialized shows here too)" gcc -std=c99 -O0 -Wall -Wextra -Wpedantic -Werror -c tests/$impl.c -o "$BUILD/m.o"
done
for std in c++11 c++17; do
  check "g++ $std nats implementation" g++ -x c++ -std=$std $LIBWARN -c tests/impl_nats.c -o "$BUILD/m.o"
done
check "clang++ c++17 implementation" clang++ -x c++ -std=c++17 $LIBWARN -c tests/impl.c -o "$BUILD/m.o"
check "freestanding OPSTATE_NO_STDLIB" gcc -std=c99 -ffreestanding -DOPSTATE_NO_STDLIB $LIBWARN -Wstrict-prototypes -c tests/impl.c -o "$BUILD/m.o"
check "portable CRC (OPSTATE_NO_HW_CRC)" gcc -std=c99 -DOPSTATE_NO_HW_CRC $LIBWARN -Wstrict-prototypes -c tests/impl.c -o "$BUILD/m.o"
check "OPSTATE_STATIC unit" sh -c "gcc -std=c99 $LIBWARN -Wstrict-prototypes tests/compile/static_unit.c -o $BUILD/static_unit && ./$BUILD/static_unit"
# Where the implementations live (tests/build_layouts): each layout built
# with NO -D flag under every C standard and as C++, linked, and run. One
# file with core + LMDB, core + NATS, all three (opstate.h, then
# opstate_nats.h, then opstate_lmdb.h); "split": each implementation in a
# file of its own plus a program holding none; system headers before the
# implementations (NATS: as it is; LMDB: with the feature-test macro its
# BUILD note asks for). -O0: these check what the headers declare and
# define, the -O2 builds above check the code.
LAYOUTWARN=${LIBWARN/-O2/-O0}
# layout COMPILER STD NAME SOURCE...: compiles each source alone, links,
# runs the program
layout() {
  local cc=$1 std=$2 name=$3 src objs=()
  shift 3
  local dir="$BUILD/layouts/$cc-$std" flags=(-Wstrict-prototypes)
  [[ $cc == *++ ]] && flags=(-x c++) # C++: the sources are .c files
  mkdir -p "$dir" || return 1
  for src in "$@"; do
    $cc -std=$std $LAYOUTWARN "${flags[@]}" -c "tests/build_layouts/$src.c" -o "$dir/$src.o" || return 1
    objs+=("$dir/$src.o")
  done
  $cc "${objs[@]}" -llmdb -lnats -o "$dir/$name" && "./$dir/$name"
}
# layout_refused COMPILER STD: system_first_lmdb_error.c does not build and
# its first error is opstate_lmdb.h's #error naming the fix
layout_refused() {
  local out
  out=$($1 -std=$2 -fsyntax-only tests/build_layouts/system_first_lmdb_error.c 2>&1) && { echo "built; must not"; return 1; }
  # (no pipe into grep -m1: under pipefail the writer's SIGPIPE would fail the check at random)
  [[ $(grep -m1 'error:' <<<"$out") == *'POSIX.1-2008 is hidden'* ]] || { head -n 5 <<<"$out"; return 1; }
}
for cs in gcc:c99 gcc:c11 clang:c99 clang:c11 g++:c++11; do
  cc=${cs%%:*} std=${cs#*:}
  check "$cc $std layout: core + LMDB in one file" layout $cc $std one_lmdb one_lmdb
  check "$cc $std layout: core + NATS in one file" layout $cc $std one_nats one_nats
  check "$cc $std layout: all three in one file" layout $cc $std one_all one_all
  check "$cc $std layout: each implementation in its own file" layout $cc $std split split_core split_lmdb split_nats split_main
  check "$cc $std layout: system headers first, NATS" layout $cc $std system_first_nats system_first_nats
  check "$cc $std layout: system headers first, LMDB with _POSIX_C_SOURCE" layout $cc $std system_first_lmdb system_first_lmdb
  if [[ $cc != *++ ]]; then
    check "$cc $std layout: system headers first, LMDB without it stops at the #error" layout_refused $cc $std
  fi
done

echo "== unit tests, portable CRC"
if check "build unit-nohw" make -s "$BUILD/unit-nohw"; then unit "unit (OPSTATE_NO_HW_CRC)" "./$BUILD/unit-nohw"; fi
echo "== unit tests, small-table CRC"
if check "build unit-smallcrc" make -s "$BUILD/unit-smallcrc"; then unit "unit (OPSTATE_CRC_SMALL)" "./$BUILD/unit-smallcrc"; fi
echo "== unit tests under ASan+UBSan"
if check "build unit-asan" make -s "$BUILD/unit-asan"; then unit "unit (asan+ubsan)" "./$BUILD/unit-asan"; fi
echo "== unit tests under valgrind"
if [[ -x $BUILD/unit ]]; then
  unit "unit (valgrind)" valgrind -q --error-exitcode=99 --leak-check=full "./$BUILD/unit"
fi

echo "== LMDB companion tests (plain, ASan+UBSan, valgrind)"
if [[ -n $(ls tests/test_lmdb*.c 2>/dev/null) ]]; then
  if check "build unit-lmdb" make -s "$BUILD/unit-lmdb"; then
    unit "unit-lmdb" "./$BUILD/unit-lmdb"
    unit "unit-lmdb (valgrind)" valgrind -q --error-exitcode=99 --leak-check=full "./$BUILD/unit-lmdb"
  fi
  if check "build unit-lmdb-asan" make -s "$BUILD/unit-lmdb-asan"; then unit "unit-lmdb (asan+ubsan)" "./$BUILD/unit-lmdb-asan"; fi
fi

echo "== chaos: kill -9 of a consuming process, 200+ times"
check_show "kill -9 chaos (state == fold up to the stored position)" sh -c "make -s $BUILD/kill9 && ./$BUILD/kill9"
check_show "kill -9 chaos under ASan+UBSan (the killed children report nothing)" \
  sh -c "make -s $BUILD/kill9-asan && env ${SAN_ENV[*]} ./$BUILD/kill9-asan"
echo "== chaos: leader kills on a three-node JetStream cluster, R3 stream (short; make chaos runs the long one)"
check_show "cluster chaos (leader killed mid-publish and mid-consume)" sh -c "make -s $BUILD/cluster_chaos && ./$BUILD/cluster_chaos"

echo "== chaos: storage damage, every 37th byte of an LMDB log and a store flipped, every page cut (make chaos: every byte)"
# Exit 1: damage handled badly (a silent wrong result, a hang, or a crash in
# opstate's own record bytes); crashes inside LMDB's page structures are
# reported, not counted (RELIABILITY.md says why).
if check "build storage_chaos" make -s "$BUILD/storage_chaos"; then
  check_show "storage chaos (quick)" "./$BUILD/storage_chaos" --quick
fi

echo "== NATS companion tests (real nats-server on 127.0.0.1; plain, ASan+UBSan, valgrind)"
if [[ -n $(ls tests/test_nats*.c 2>/dev/null) ]]; then
  if check "build unit-nats" make -s "$BUILD/unit-nats"; then
    unit "unit-nats" "./$BUILD/unit-nats"
    unit "unit-nats (valgrind)" valgrind -q --error-exitcode=99 --leak-check=full "./$BUILD/unit-nats"
  fi
  if check "build unit-nats-asan" make -s "$BUILD/unit-nats-asan"; then unit "unit-nats (asan+ubsan)" "./$BUILD/unit-nats-asan"; fi
fi

echo "== benchmarks compile (they run under make bench, not here)"
for b in bench_core bench_lmdb bench_nats; do
  check "build $b" make -s -B "$BUILD/$b"
done

echo "== examples: each built with the cc line at its top, then run"
mkdir -p "$BUILD/examples"
# example SRC SUFFIX FLAGS [VAR=VALUE...]: builds SRC with the cc line at
# its top plus FLAGS as $BUILD/examples/NAME+SUFFIX, and runs it with the
# VARs set as its page says.
example() {
  local src=$1 suffix=$2 flags=$3 name bin line label
  shift 3
  name=$(basename "$src" .c)
  bin=$name$suffix
  line=$(grep -m1 -o 'cc -std=[^*]*' "$src" | sed "s| -o [^ ]*| -o $BUILD/examples/$bin|")
  label="$line${flags:+ + the sanitizer flags}" # short enough for a log file name
  line="$line -I. $flags"
  if [[ $name == config_cache ]]; then # needs a server: one of its own, stopped by PID
    check "example $bin --demo (own nats-server): $label" bash -c "$line && source scripts/nats_server.sh && \
      d=\$(mktemp -d) && trap 'nats_server_stop; rm -rf \$d' EXIT && nats_server_start \$d && \
      cd $BUILD/examples && env $* ./$bin --demo \$NATS_URL config"
  else
    check "example $bin: $label" sh -c "$line && cd $BUILD/examples && env $* ./$bin"
  fi
}
for src in examples/*.c; do
  example "$src" "" ""
done
echo "== examples under ASan+UBSan"
for src in examples/*.c; do
  example "$src" -asan "$SAN" "${SAN_ENV[@]}"
done

echo "== the opstate tool"
unit "cli" bash tests/cli_test.sh
if check "build opstate-asan" make -s "$BUILD/opstate-asan"; then
  unit "cli (asan+ubsan)" env "${SAN_ENV[@]}" OPSTATE="$PWD/$BUILD/opstate-asan" bash tests/cli_test.sh
fi

echo "== the opstate tool over NATS (a real nats-server)"
unit "cli-nats" bash tests/cli_nats_test.sh
if [[ -x $BUILD/opstate-asan ]]; then
  unit "cli-nats (asan+ubsan)" env "${SAN_ENV[@]}" OPSTATE="$PWD/$BUILD/opstate-asan" bash tests/cli_nats_test.sh
fi

echo "== the README's demos: make demo (embedded LMDB, no server) and make demo-nats (a local nats-server)"
check_show "demo" env BUILD="$BUILD" bash scripts/demo.sh
check_show "demo-nats" env BUILD="$BUILD" bash scripts/demo_nats.sh

echo "== installing: make install and cmake --install; pkg-config and find_package consumers; the man page"
check_show "install" bash tests/install_test.sh

echo "== README: every C snippet compiles and runs"
unit "readme" bash tests/readme_test.sh

echo "== amalgamate.py"
unit "amalgamation" bash tests/amalgamate_test.sh

echo "== portability: big-endian s390x and 32-bit i686 under qemu-user, Cortex-M3 under qemu-system-arm"
unit "portability" bash scripts/portability.sh

echo "== fuzz seed replay"
for src in tests/fuzz/fuzz_*.c; do
  [[ -e $src ]] || continue
  name=$(basename "$src" .c); name=${name#fuzz_}
  seeds=(tests/fuzz/seeds/$name/*)
  check "fuzz replay $name" sh -c "make -s $BUILD/fuzz-replay-$name && ./$BUILD/fuzz-replay-$name ${seeds[*]}"
done
# The LMDB store and log targets also replay seeds made now from real ones
# (tests/fuzz/lmdb_seeds.c): the committed corpora may predate a format.
check "fuzz replay lmdb_store and lmdb_log, fresh seeds" sh -c "make -s $BUILD/lmdb_seeds $BUILD/fuzz-replay-lmdb_store \
  $BUILD/fuzz-replay-lmdb_log && rm -rf $BUILD/lmdb-seeds && mkdir $BUILD/lmdb-seeds && ./$BUILD/lmdb_seeds $BUILD/lmdb-seeds && \
  ./$BUILD/fuzz-replay-lmdb_store $BUILD/lmdb-seeds/store-* && ./$BUILD/fuzz-replay-lmdb_log $BUILD/lmdb-seeds/log-*"

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
