#!/usr/bin/env bash
# shellcheck disable=SC2086 # flag lists are split into words on purpose
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
#   cortex-m4   scripts/sizes.sh: each part's flash, linked with
#               --gc-sections; fails when the firmware subset with
#               OPSTATE_CRC_SMALL reaches 8 KiB
#   mps2-an385  Cortex-M3 under qemu-system-arm with newlib semihosting: the
#               runner over the core tests that fit the board (see M_FREE,
#               M_ALLOC)
#
# Installs the Debian packages it needs first (only what is missing,
# --no-install-recommends; needs root or password-less sudo for that).
# The emulators are always called explicitly: binfmt_misc is not needed.
#
# Environment: BUILD (default build; objects go to $BUILD/portability),
# PORT_TIMEOUT (seconds allowed for one emulated run, default 120).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
OUT=${BUILD:-build}/portability
TIMEOUT=${PORT_TIMEOUT:-120}
mkdir -p "$OUT"

# shellcheck source=scripts/portability_lib.sh
source scripts/portability_lib.sh

# ---------------------------------------------------------------- install
# package and a file that shows it is installed (same scheme as deps.sh)
need_packages portability "$OUT/apt.log" \
  qemu-user               /usr/bin/qemu-s390x \
  gcc-s390x-linux-gnu     /usr/bin/s390x-linux-gnu-gcc \
  libc6-dev-s390x-cross   /usr/s390x-linux-gnu/include/stdio.h \
  gcc-i686-linux-gnu      /usr/bin/i686-linux-gnu-gcc \
  libc6-dev-i386-cross    /usr/i686-linux-gnu/include/stdio.h \
  gcc-arm-none-eabi       /usr/bin/arm-none-eabi-gcc \
  libnewlib-arm-none-eabi /usr/lib/arm-none-eabi/newlib/rdimon.specs \
  qemu-system-arm         /usr/bin/qemu-system-arm || exit 1

# ---------------------------------------------------------------- sources
# The core unit tests: the Makefile's TEST_SRCS (every tests/*.c except the
# impl*.c, main.c and the LMDB / NATS suites), read from the Makefile itself.
# shellcheck disable=SC2016 # $(TEST_SRCS) is make's, not the shell's
CORE=$(make -s --no-print-directory --eval 'portability-srcs: ; @echo $(TEST_SRCS)' portability-srcs 2>/dev/null)
if [[ -z $CORE ]]; then # no make: the same rule by hand
  for f in tests/*.c; do
    case ${f#tests/} in impl.c | impl_lmdb.c | impl_nats.c | main.c | test_lmdb*.c | test_nats*.c) ;; *) CORE+="$f " ;; esac
  done
fi

# The Cortex-M run covers the core tests that fit mps2-an385 (4 MiB code,
# 4 MiB data, 16 MiB PSRAM for heap and stack), as two programs:
#   M_FREE   against the library built as DESIGN.md promises for Cortex-M:
#            -ffreestanding -DOPSTATE_NO_STDLIB -DOPSTATE_NO_MALLOC (the
#            pure layer; the test code itself still uses newlib);
#   M_ALLOC  the allocating layer (KV fold), library on newlib's malloc.
# Both build with OPSTATE_MAX_DATA_LEN = 1 MiB: the tests that probe the
# payload limit allocate the limit and more (test_codec.c twice 16 MiB,
# test_kv.c 16 MiB + 1), which the board's 16 MiB PSRAM cannot hold. The
# tests are written against the macro, so they check the 1 MiB limit.
# Left out:
#   test_driver_mem.c  driver_suite.h (lines 1197, 2381) prints a uint32_t
#                      with "%u"; on newlib uint32_t is unsigned long, so
#                      -Wformat (-Werror) rejects it. Not portable as written.
#   test_hash.c        wants fresh entropy (/dev/urandom) for table keys, which
#                      the board has not; test_hash_free.c (in M_FREE) checks
#                      the board's keys, from the seed and the address.
M_FREE="tests/test_smoke.c tests/test_decide.c tests/test_ids.c tests/test_codec.c tests/test_hash_free.c tests/test_flash.c"
M_ALLOC="tests/test_kv.c"
for f in $M_FREE $M_ALLOC; do
  [[ " $CORE " == *" $f "* ]] || { echo "portability: $f is not a core test any more" >&2; exit 1; }
done

# arm-none-eabi uses short enums (AAPCS): an enum whose values are all >= 0
# is an unsigned char, so test_decide.c:430's "(int)kind >= 0" check is
# always true and -Wtype-limits fires. Harmless; waived for the test files.
M_TESTWARN="$WARN -Wno-type-limits"
M_DATA='-DOPSTATE_MAX_DATA_LEN=(1024u*1024u)'

passed=0 failed=0
ok()  { passed=$((passed + 1)); echo "$1"; }
bad() { failed=$((failed + 1)); echo "FAILED $1"; }
# show LOG: the interesting part of a failed step's output
show() {
  if grep -qE '^FAIL|error' "$1"; then grep -E '^FAIL|error' "$1" | head -n 40
  else tail -n 10 "$1"; fi
}
# summary LOG: the runner's "N passed, N failed" line (the last one in LOG)
summary() { grep -E '^[0-9]+ passed, [0-9]+ failed$' "$1" | tail -n 1; }
# run_ok RC LOG: a runner program exited 0, reported tests, and none failed
run_ok() {
  local line; line=$(summary "$2")
  [[ $1 -eq 0 && $line =~ ^([0-9]+)\ passed,\ 0\ failed$ && ${BASH_REMATCH[1]} -gt 0 ]]
}
rc_text() {
  case $1 in
    124) echo "timed out after $TIMEOUT s" ;;
    99) echo "exit status 99: CPU fault" ;;
    134) echo "exit status 134: qemu aborted (CPU lockup or a bad semihosting call)" ;;
    *) echo "exit status $1" ;;
  esac
}

# ---------------------------------------------------------------- Linux targets
# linux NAME TRIPLET EMULATOR DESCRIPTION: all core tests, static, emulated
linux() {
  local name=$1 cc=$2-gcc emu=$3 what=$4 log=$OUT/$1.log rc line
  if ! { $cc -std=c99 -O2 $LIBWARN -c tests/impl.c -o "$OUT/impl-$name.o" &&
         $cc -std=c99 -O2 -static $WARN $CORE tests/main.c "$OUT/impl-$name.o" -o "$OUT/unit-$name"; } >"$log" 2>&1; then
    bad "$name ($what): build failed"; show "$log"; return
  fi
  { timeout "$TIMEOUT" "$emu" "$OUT/unit-$name" >"$log" 2>&1; } 2>/dev/null
  rc=$?
  line=$(summary "$log")
  if run_ok $rc "$log"; then ok "$name ($what): $line"
  else bad "$name ($what): ${line:-no summary}, $(rc_text $rc)"; show "$log"; fi
}

linux s390x s390x-linux-gnu qemu-s390x "big-endian, 64-bit, qemu-s390x"
linux i686 i686-linux-gnu qemu-i386 "32-bit, qemu-i386"

# ---------------------------------------------------------------- Cortex-M compile
# The library alone, freestanding, for an M3 (ARMv7-M) and an M0 (ARMv6-M,
# no divide, no unaligned access). Reports .text and what the object still
# needs from outside: libgcc helpers (__aeabi_*, __gnu_*) and anything else.
# GCC may call memcpy for a struct copy even under -ffreestanding (its manual
# requires memcpy/memmove/memset/memcmp from a freestanding environment), so
# such symbols are listed, not failed.
for cpu in cortex-m3 cortex-m0; do
  obj=$OUT/opstate-$cpu.o log=$OUT/$cpu.log
  if arm-none-eabi-gcc -std=c99 $M_FREESTANDING $WARN -Os -c -mcpu=$cpu -mthumb tests/impl.c -o "$obj" >"$log" 2>&1; then
    text=$(arm-none-eabi-size "$obj" | awk 'NR == 2 { print $1 }')
    undef=$(arm-none-eabi-nm -u "$obj" | awk '{ print $2 }')
    libgcc=$(grep -E '^__(aeabi|gnu)_' <<<"$undef" | tr '\n' ' ')
    other=$(grep -Ev '^__(aeabi|gnu)_' <<<"$undef" | tr '\n' ' ' | sed 's/ $//')
    ok "$cpu (opstate.h freestanding, NO_STDLIB + NO_MALLOC, -Os): .text $text bytes; needs: ${other:-nothing else}${libgcc:+ + libgcc ${libgcc% }}"
  else
    bad "$cpu (opstate.h freestanding): compile failed"; show "$log"
  fi
done

# ---------------------------------------------------------------- Cortex-M4 sizes
# scripts/sizes.sh: every part's flash on a Cortex-M4 (-Os, --gc-sections),
# with the default and the small CRC32C table; it fails when the firmware
# subset with OPSTATE_CRC_SMALL reaches 8 KiB. Its table is in the log.
log=$OUT/sizes.log
if bash scripts/sizes.sh >"$log" 2>&1; then
  sum=$(sed -n 's/^firmware subset: sum of its 5 lines *\([0-9]*\).*/\1/p' "$log")
  ok "cortex-m4 (parts linked with --gc-sections, table in $log): firmware subset $sum bytes; $(tail -n 1 "$log")"
else
  bad "cortex-m4 sizes: $(tail -n 1 "$log")"; show "$log"
fi

# ---------------------------------------------------------------- Cortex-M run
# mps2-an385: Cortex-M3 in qemu-system-arm, newlib rdimon semihosting; the
# program's exit status becomes qemu's (a fault handler exits with 99).
M_FLAGS="-std=c99 -Os -g -mcpu=cortex-m3 -mthumb -ffunction-sections -fdata-sections"
M_LINK="--specs=rdimon.specs -T tests/portability/mps2-an385.ld -Wl,--gc-sections -Wl,--wrap=_sbrk"
M_SUPPORT="tests/portability/vectors.c tests/portability/mem_report.c"
# an385 NAME DESCRIPTION LIBFLAGS TESTS...
an385() {
  local name=$1 what=$2 libflags=$3 log=$OUT/$1.log rc line mem files
  shift 3
  files=$(for f in "$@"; do basename "$f" .c; done | sed 's/^test_//' | tr '\n' ' ')
  what="$what [${files% }]"
  if ! { arm-none-eabi-gcc $M_FLAGS $LIBWARN "$M_DATA" $libflags -c tests/impl.c -o "$OUT/impl-$name.o" &&
         arm-none-eabi-gcc $M_FLAGS $M_TESTWARN "$M_DATA" $M_LINK "$@" tests/main.c "$OUT/impl-$name.o" \
           $M_SUPPORT -lrdimon -o "$OUT/$name.elf"; } >"$log" 2>&1; then
    bad "$name ($what): build failed"; show "$log"; return
  fi
  # (the braces keep bash's own "Aborted" note out of the output)
  { timeout "$TIMEOUT" qemu-system-arm -M mps2-an385 -cpu cortex-m3 -nographic -monitor none \
      -semihosting-config enable=on,target=native -kernel "$OUT/$name.elf" </dev/null >"$log" 2>&1; } 2>/dev/null
  rc=$?
  line=$(summary "$log")
  mem=$(grep -m1 '^mem: ' "$log" | sed 's/^mem: //')
  if run_ok $rc "$log"; then ok "$name ($what): $line${mem:+ ($mem)}"
  else
    bad "$name ($what): ${line:-no summary}, $(rc_text $rc)"; show "$log"
    # vectors.c's fault handler prints the faulting pc and lr: name them
    sed -n 's/^fault: pc 0x\([0-9a-f]*\) lr 0x\([0-9a-f]*\).*/\1 \2/p' "$log" | head -n 1 |
      while read -r pc lr; do
        # pc 0 (a call through a null pointer) would name whatever is at 0
        [[ $pc == 000000[0-3]? ]] || echo "  pc: $(arm-none-eabi-addr2line -f -p -e "$OUT/$name.elf" "0x$pc")"
        echo "  lr: $(arm-none-eabi-addr2line -f -p -e "$OUT/$name.elf" "0x$lr")"
      done
  fi
}

an385 an385-freestanding "Cortex-M3 mps2-an385, library freestanding" "$M_FREESTANDING" $M_FREE
an385 an385-alloc "Cortex-M3 mps2-an385, library on newlib malloc" "" $M_ALLOC

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
