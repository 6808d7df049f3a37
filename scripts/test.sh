#!/usr/bin/env bash
# Runs every suite: unit tests (plain, ASan+UBSan, valgrind), the compile
# matrix, and the fuzz seed replays. Each unit-test case counts once per run;
# each compile-matrix entry, sanitizer run and seed replay counts as one test.
# Ends with one line: "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
mkdir -p "$BUILD"
passed=0 failed=0
LIBWARN="-O2 -Wall -Wextra -Wpedantic -Werror -Wconversion -Wsign-conversion -Wcast-qual -Wundef"

ok()   { passed=$((passed + 1)); }
bad()  { failed=$((failed + 1)); echo "FAILED: $*"; }
# check NAME CMD...: one test; output shown only on failure
check() {
  local name=$1; shift
  local log="$BUILD/log.$(echo "$name" | tr -c 'a-zA-Z0-9._-' '_')"
  if "$@" >"$log" 2>&1; then ok; else bad "$name"; tail -n 30 "$log"; fi
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
  passed=$((passed + p)); failed=$((failed + f))
  if [[ $rc -ne 0 || $f -ne 0 ]]; then
    [[ $f -eq 0 ]] && failed=$((failed + 1))
    echo "FAILED: $name"; printf '%s\n' "$out" | grep -v '^ok ' | tail -n 40
  else
    echo "$name: $line"
  fi
}

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
    check "$cc $std lmdb implementation" $cc -std=$std -D_POSIX_C_SOURCE=200809L $LIBWARN -Wstrict-prototypes -c tests/impl_lmdb.c -o "$BUILD/m.o"
  done
done
for std in c++11 c++17; do
  check "g++ $std lmdb declarations" g++ -x c++ -std=$std $LIBWARN -c tests/compile/decl_lmdb.c -o "$BUILD/m.o"
  check "g++ $std lmdb implementation" g++ -x c++ -std=$std $LIBWARN -c tests/impl_lmdb.c -o "$BUILD/m.o"
done
for std in c99 c11; do
  check "gcc $std nats declarations" gcc -std=$std $LIBWARN -Wstrict-prototypes -c tests/compile/decl_nats.c -o "$BUILD/m.o"
  check "gcc $std nats implementation" gcc -std=$std -D_POSIX_C_SOURCE=200809L $LIBWARN -Wstrict-prototypes -c tests/impl_nats.c -o "$BUILD/m.o"
done
for impl in impl impl_lmdb impl_nats; do
  check "gcc -O0 $impl (maybe-uninitialized shows here too)" gcc -std=c99 -O0 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Wpedantic -Werror -c tests/$impl.c -o "$BUILD/m.o"
done
for std in c++11 c++17; do
  check "g++ $std nats implementation" g++ -x c++ -std=$std $LIBWARN -c tests/impl_nats.c -o "$BUILD/m.o"
done
check "clang++ c++17 implementation" clang++ -x c++ -std=c++17 $LIBWARN -c tests/impl.c -o "$BUILD/m.o"
check "freestanding OPSTATE_NO_STDLIB" gcc -std=c99 -ffreestanding -DOPSTATE_NO_STDLIB $LIBWARN -Wstrict-prototypes -c tests/impl.c -o "$BUILD/m.o"
check "portable CRC (OPSTATE_NO_HW_CRC)" gcc -std=c99 -DOPSTATE_NO_HW_CRC $LIBWARN -Wstrict-prototypes -c tests/impl.c -o "$BUILD/m.o"
check "OPSTATE_STATIC unit" sh -c "gcc -std=c99 $LIBWARN -Wstrict-prototypes tests/compile/static_unit.c -o $BUILD/static_unit && ./$BUILD/static_unit"

echo "== unit tests, portable CRC"
if check "build unit-nohw" make -s "$BUILD/unit-nohw"; then unit "unit (OPSTATE_NO_HW_CRC)" "./$BUILD/unit-nohw"; fi
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
echo "== chaos: leader kills on a three-node JetStream cluster, R3 stream (short; make chaos runs the long one)"
check_show "cluster chaos (leader killed mid-publish and mid-consume)" sh -c "make -s $BUILD/cluster_chaos && ./$BUILD/cluster_chaos"

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
for src in examples/*.c; do
  name=$(basename "$src" .c)
  [[ $name == opstate ]] && continue # the tool: tests/cli_test.sh
  line=$(grep -m1 -o 'cc -std=[^*]*' "$src" | sed "s| -o [^ ]*| -o $BUILD/examples/$name|")
  if [[ $name == config_cache ]]; then # needs a server: one of its own, stopped by PID
    check "example $name --demo (own nats-server): $line" bash -c "$line -I. && source scripts/nats_server.sh && \
      d=\$(mktemp -d) && trap 'nats_server_stop; rm -rf \$d' EXIT && nats_server_start \$d && \
      cd $BUILD/examples && ./$name --demo \$NATS_URL config"
    continue
  fi
  check "example $name: $line" sh -c "$line -I. && cd $BUILD/examples && ./$name"
done

echo "== the opstate tool"
unit "cli" bash tests/cli_test.sh

echo "== the opstate tool over NATS (a real nats-server)"
unit "cli-nats" bash tests/cli_nats_test.sh

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

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
