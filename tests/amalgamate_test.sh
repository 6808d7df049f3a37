#!/usr/bin/env bash
# tests/amalgamate_test.sh — amalgamate.py and CMakeLists.txt.
#
# For each combination (core; core+lmdb; core+nats and all three when
# opstate_nats.h exists and nats.c is installed; skipped with a note
# otherwise) it generates the amalgamation into a temp dir and checks:
#   - generating twice (another cwd, another file name) gives the same bytes,
#     and --check accepts the file and rejects an edited copy;
#   - the structure: a begin/end marker per part, every companion's
#     `#include "opstate.h"` commented out, no quoted include left, ONE
#     license;
#   - a unit with OPSTATE_AMALGAMATION_IMPLEMENTATION builds as C99 (gcc) and
#     C++11 (g++), -Wall -Wextra -Wpedantic -Werror plus the strict library
#     warnings, and defines every part's functions; a unit without the switch
#     defines none;
#   - the amalgamation and the separate headers mix in one unit, in both
#     orders, and the program runs; an OPSTATE_STATIC unit that includes
#     it twice builds and runs and exports no opstate_ symbol;
#   - the core unit tests (the Makefile's TEST_SRCS + tests/main.c) pass
#     with a replacement for tests/impl.c that includes only the
#     amalgamation (the tests include "../opstate.h" for declarations; the
#     include guards are the same, so that is fine);
#   - --lines output compiles and every marked line is the source line it
#     names.
# Then the error paths of amalgamate.py, and a CMake consumer project
# (add_subdirectory + opstate::opstate / opstate::lmdb / opstate::nats),
# skipped with a note when cmake is absent.
#
# Every check counts once. Last line: "N passed, M failed"; exit 1 on a
# failure. Runs checks in parallel (nproc + 1 at a time); about 25 s of CPU
# in all (the four -O2 C99 units are most of it).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
T=$(mktemp -d "${TMPDIR:-/tmp}/opstate-amalgamate.XXXXXX")
trap 'rm -rf "$T"' EXIT

# Resolve the interpreter once (a pyenv shim costs ~0.3 s per call).
PY=${PYTHON:-$(python3 -c 'import sys; print(sys.executable)' 2>/dev/null || echo python3)}
WARN="-Wall -Wextra -Wpedantic -Werror"
LIBWARN="$WARN -Wconversion -Wsign-conversion -Wcast-qual -Wundef"
# For the mixed units only: they include system headers before the LMDB
# implementation (the units with just the switch need no flag).
POSIX=-D_POSIX_C_SOURCE=200809L
MAXJ=$(( $(nproc 2>/dev/null || echo 2) + 1 ))
START=$SECONDS
# The headers as they are now: the reference build for diagnosis uses this
# copy, so an edit during the run cannot make the comparison lie.
mkdir -p "$T/snapshot"
cp opstate*.h "$T/snapshot/"

passed=0 failed=0
ok()   { passed=$((passed + 1)); echo "ok   $1"; }
bad()  { failed=$((failed + 1)); echo "FAIL $1"; }
note() { echo "note $*"; }

# check NAME CMD...: one check, run now; its output shown only on failure.
check() {
  local name=$1; shift
  local log=$T/check.log
  if "$@" >"$log" 2>&1; then ok "$name"; else bad "$name"; tail -n 30 "$log"; fi
}

# spawn NAME CMD...: one check, run in the background; `collect` reports
# them in the order they were started.
mkdir -p "$T/jobs"
njobs=0 first=1
spawn() {
  local name=$1; shift
  while (( $(jobs -rp | wc -l) >= MAXJ )); do wait -n 2>/dev/null || true; done
  njobs=$((njobs + 1))
  local j=$T/jobs/$njobs
  printf '%s\n' "$name" >"$j.name"
  ( "$@" >"$j.log" 2>&1; echo $? >"$j.rc" ) &
}
collect() {
  local i name
  wait
  for ((i = first; i <= njobs; i++)); do
    name=$(<"$T/jobs/$i.name")
    if [[ $(cat "$T/jobs/$i.rc" 2>/dev/null) == 0 ]]; then ok "$name"
    else bad "$name"; tail -n 30 "$T/jobs/$i.log"; fi
  done
  first=$((njobs + 1))
}

# --- which combinations ------------------------------------------------------
have_nats_lib() {
  pkg-config --exists libnats 2>/dev/null || [[ -e /usr/include/nats/nats.h ]]
}
combos=("core:" "core+lmdb:lmdb")
if [[ ! -e opstate_nats.h ]]; then
  note "skipped core+nats and core+lmdb+nats: opstate_nats.h does not exist yet"
elif ! have_nats_lib; then
  note "skipped core+nats and core+lmdb+nats: nats.c (libnats-dev) is not installed"
else
  combos+=("core+nats:nats" "core+lmdb+nats:lmdb,nats")
fi

# Core unit tests: the Makefile's TEST_SRCS (asked from make, so the rule
# lives in one place; the fallback is the same rule: every tests/*.c except
# the impl*.c units, main.c and the LMDB / NATS programs) plus main.c.
read -ra test_srcs <<<"$(env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -s --no-print-directory --eval '__amalgamate_test_srcs: ; @echo $(TEST_SRCS)' \
                          __amalgamate_test_srcs 2>/dev/null)"
if [[ ${#test_srcs[@]} -eq 0 ]]; then
  for f in tests/*.c; do
    case ${f#tests/} in impl*.c|main.c|test_lmdb*.c|test_nats*.c) ;; *) test_srcs+=("$f") ;; esac
  done
fi

# --- helpers run as checks ----------------------------------------------------

# gen DIR WITH [extra args...]: writes DIR/opstate_amalgamation.h
gen() { local d=$1 w=$2; shift 2; mkdir -p "$d" && $PY amalgamate.py ${w:+--with "$w"} "$@" -o "$d/opstate_amalgamation.h"; }

# reproducible DIR WITH: again from another cwd, under another name
reproducible() {
  local d=$1 w=$2
  (cd "$T" && $PY "$ROOT/amalgamate.py" ${w:+--with "$w"} -o "$d/again.h") &&
    cmp "$d/opstate_amalgamation.h" "$d/again.h"
}

# check_accepts DIR WITH / check_rejects DIR WITH
check_accepts() { $PY amalgamate.py ${2:+--with "$2"} --check "$1/opstate_amalgamation.h"; }
check_rejects() {
  local d=$1 w=$2 rc
  { cat "$d/opstate_amalgamation.h"; echo "/* edited */"; } >"$d/edited.h"
  $PY amalgamate.py ${w:+--with "$w"} --check "$d/edited.h"; rc=$?
  [[ $rc -eq 1 ]] || { echo "--check on an edited file: exit $rc, want 1"; return 1; }
}

# structure FILE WITH: markers, commented includes, one license
structure() {
  $PY - "$1" "$2" <<'EOF'
import re, sys
path, with_ = sys.argv[1], sys.argv[2]
text = open(path, encoding="utf-8").read()
names = ["opstate.h"] + ["opstate_%s.h" % w for w in with_.split(",") if w]
errors = []
for n in names:
    for word in ("begin", "end"):
        if len(re.findall(r"^/\* ==== %s %s =" % (word, re.escape(n)), text, re.M)) != 1:
            errors.append("want one %s marker for %s" % (word, n))
order = [m.group(1) for m in re.finditer(r"^/\* ==== begin (\S+) ", text, re.M)]
if order != names:
    errors.append("parts in order %s, want %s" % (order, names))
code = re.sub(r'/\*.*?\*/|//[^\n]*', lambda m: re.sub(r'[^\n]', ' ', m.group(0)), text, flags=re.S)
live = re.findall(r'^\s*#\s*include\s*"', code, re.M)
if live:
    errors.append("%d quoted #include left" % len(live))
commented = text.count('/* #include "opstate.h"  (amalgamated above) */')
if commented != len(names) - 1:
    errors.append("%d commented-out includes, want %d" % (commented, len(names) - 1))
if text.count("Permission is hereby granted") != 1 or text.count("Copyright (c)") != 1:
    errors.append("want exactly one license")
if "generated by amalgamate.py" not in text.split("\n", 1)[0] or "do not edit" not in text[:200]:
    errors.append("no stamp on the first line")
if not text.rstrip().endswith("*/"):
    errors.append("does not end with the license comment")
for e in errors:
    print(e)
sys.exit(1 if errors else 0)
EOF
}

# lines_match FILE: every line after `#line N "f"` is line N.. of f
lines_match() {
  $PY - "$1" "$ROOT" <<'EOF'
import os, re, sys
path, root = sys.argv[1], sys.argv[2]
out = open(path, "rb").read().split(b"\n")
cur, src, n, checked, bad = None, None, 0, 0, []
for line in out:
    m = re.match(rb'#line (\d+) "([^"]+)"$', line)
    if m:
        n, cur = int(m.group(1)), m.group(2).decode()
        src = open(os.path.join(root, cur), "rb").read().split(b"\n")
        continue
    if cur is None:
        continue
    if line.startswith(b"/* ==== end "):
        cur = None
        continue
    want = src[n - 1] if n - 1 < len(src) else None
    if line != want and not (b"(amalgamated above)" in line and want and b'"opstate.h"' in want):
        bad.append("%s:%d" % (cur, n))
    n += 1
    checked += 1
if checked == 0:
    bad.append("no #line markers")
print("checked %d lines, %d mismatches %s" % (checked, len(bad), bad[:5]))
sys.exit(1 if bad else 0)
EOF
}

# defines OBJ WANT...: OBJ defines each WANT (global T), and with no WANT: no
# opstate_ function at all.
defines() {
  local obj=$1; shift
  local syms; syms=$(nm "$obj" | awk '$2 == "T" {print $3}')
  if [[ $# -eq 0 ]]; then
    if grep -q '^opstate' <<<"$syms"; then echo "declarations-only unit defines:"; grep '^opstate' <<<"$syms" | head; return 1; fi
    return 0
  fi
  local s; for s in "$@"; do grep -qx "$s" <<<"$syms" || { echo "missing $s"; return 1; }; done
}

# write_units DIR WITH: the C files for one combination
write_units() {
  local d=$1 w=$2
  local inc_lmdb="" inc_nats=""
  [[ ,$w, == *,lmdb,* ]] && inc_lmdb="#include \"$ROOT/opstate_lmdb.h\""
  [[ ,$w, == *,nats,* ]] && inc_nats="#include \"$ROOT/opstate_nats.h\""
  cat >"$d/impl.c" <<EOF
/* Replacement for tests/impl.c: the library from the amalgamation only. */
#define OPSTATE_AMALGAMATION_IMPLEMENTATION
#include "opstate_amalgamation.h"
EOF
  cp "$d/impl.c" "$d/lines/impl.c"
  cat >"$d/decl.c" <<'EOF'
/* Declarations only: no switch, so no function may be defined here. */
#include "opstate_amalgamation.h"
int decl_probe(void);
int decl_probe(void) { return (int)sizeof(opstate_event) + OPSTATE_VERSION_NUMBER; }
EOF
  cat >"$d/static.c" <<'EOF'
/* OPSTATE_STATIC: every part's functions static in one unit; the file is
   included twice, which must be harmless. */
#define OPSTATE_STATIC
#define OPSTATE_AMALGAMATION_IMPLEMENTATION
#include "opstate_amalgamation.h"
#include "opstate_amalgamation.h"
#include <stdio.h>
int main(void)
{
    printf("static unit: crc32c %08lx\n", (unsigned long)opstate_crc32c(0, "123456789", 9));
    return opstate_crc32c(0, "123456789", 9) == 0xe3069283u ? 0 : 1;
}
EOF
  # The LMDB part gets a short real run in the mixed program.
  local lmdb_use=""
  if [[ -n $inc_lmdb ]]; then
    lmdb_use='
    {
        opstate_lmdb *env;
        opstate_lmdb_config ec;
        memset(&ec, 0, sizeof ec);
        ec.path = argc > 1 ? argv[1] : "mix-env";
        if (opstate_lmdb_open(&ec, &env, NULL) != OPSTATE_OK) return 3;
        opstate_lmdb_close(env);
    }'
  fi
  # mix_a.c: amalgamation with the switch, then the separate headers.
  # mix_b.c: the separate headers, then the amalgamation (declarations).
  # mix_c.c: the separate headers, then the switch and the amalgamation.
  cat >"$d/mix_a.c" <<EOF
#define OPSTATE_AMALGAMATION_IMPLEMENTATION
#include "opstate_amalgamation.h"
#include "$ROOT/opstate.h"
$inc_lmdb
$inc_nats
int mix_crc_ok(void);
int mix_crc_ok(void) { return opstate_crc32c(0, "123456789", 9) == 0xe3069283u; }
EOF
  cat >"$d/mix_b.c" <<EOF
#include <string.h>
#include <stdio.h>
#include "$ROOT/opstate.h"
$inc_lmdb
$inc_nats
#include "opstate_amalgamation.h"
int mix_crc_ok(void);
int main(int argc, char **argv)
{
    opstate_restore_decision d;
    opstate_start s;
    opstate_position stored;
    (void)argc; (void)argv;
    memset(&s, 0, sizeof s);
    memset(&stored, 0, sizeof stored);
    s.kind = OPSTATE_START_FROM_SEQUENCE;
    s.seq = 101;
    stored.seq = 100;
    if (!mix_crc_ok()) return 1;
    if (opstate_decide_restore(OPSTATE_MODE_AUTO, s, &stored, NULL, &d) != OPSTATE_OK || !d.restore) return 2;$lmdb_use
    printf("mixed units ok: %s\n", opstate_reason_str(d.reason));
    return 0;
}
EOF
  cat >"$d/mix_c.c" <<EOF
#include <string.h>
#include <stdio.h>
#include "$ROOT/opstate.h"
$inc_lmdb
$inc_nats
#define OPSTATE_AMALGAMATION_IMPLEMENTATION
#include "opstate_amalgamation.h"
int main(int argc, char **argv)
{
    (void)argc; (void)argv;
    if (opstate_crc32c(0, "123456789", 9) != 0xe3069283u) return 1;$lmdb_use
    printf("headers first, then the switch: ok\n");
    return 0;
}
EOF
}

# mixed DIR LIBS: builds and runs the two mixed programs (with clang, so
# the amalgamation meets a second compiler; gcc when clang is absent)
MIXCC="clang -O0"
command -v clang >/dev/null 2>&1 || MIXCC="gcc -O1"
mixed() {
  local d=$1; shift
  $MIXCC -std=c99 $POSIX $WARN -I"$d" "$d/mix_a.c" "$d/mix_b.c" "$@" -o "$d/mix_ab" &&
    "$d/mix_ab" "$d/env-ab" &&
    $MIXCC -std=c99 $POSIX $WARN -I"$d" "$d/mix_c.c" "$@" -o "$d/mix_c" &&
    "$d/mix_c" "$d/env-c"
}

# static_unit DIR LIBS: builds and runs DIR/static.c; no global opstate_ symbol
static_unit() {
  local d=$1; shift
  $MIXCC -std=c99 $POSIX $WARN -I"$d" "$d/static.c" "$@" -o "$d/static" && "$d/static" || return 1
  if nm "$d/static" | awk '$2 == "T" {print $3}' | grep '^opstate'; then echo "global symbols under OPSTATE_STATIC"; return 1; fi
}

# unit_run DIR LIBS: links the core tests with DIR/impl.o and runs them;
# the whole output stays in DIR/unit.out
unit_run() {
  local d=$1; shift
  gcc "$T/tests"/*.o "$d/impl.o" "$@" -o "$d/unit" || return 1
  "$d/unit" >"$d/unit.out" 2>&1; local rc=$?
  grep '^FAIL' "$d/unit.out" | head -n 5
  tail -n 1 "$d/unit.out"
  [[ $rc -eq 0 ]] && grep -Eq '^[0-9]+ passed, 0 failed$' <(tail -n 1 "$d/unit.out")
}

# unit_diagnose NAME DIR: after a failed unit_run, tells whether the same
# tests fail with the separate headers (tests/impl.c), i.e. whether the
# amalgamation is to blame.
unit_diagnose() {
  local name=$1 d=$2 r=$T/reference
  if [[ ! -e $r/unit.out ]]; then
    mkdir -p "$r"
    printf '#define OPSTATE_IMPLEMENTATION\n#include "%s/snapshot/opstate.h"\n' "$T" >"$r/impl.c"
    gcc -std=c99 -O2 $WARN -c "$r/impl.c" -o "$r/impl.o" &&
      gcc "$T/tests"/*.o "$r/impl.o" -o "$r/unit" || { note "$name: could not build the reference program"; return; }
    "$r/unit" >"$r/unit.out" 2>&1
  fi
  if ! cmp -s opstate.h "$T/snapshot/opstate.h"; then
    note "$name: opstate.h changed during this run; no comparison with the separate header"
  elif cmp -s <(grep '^FAIL' "$d/unit.out") <(grep '^FAIL' "$r/unit.out"); then
    note "$name: the same tests fail with the separate headers (tests/impl.c: $(tail -n 1 "$r/unit.out")): a core problem, not the amalgamation's"
  else
    note "$name: results differ from the separate headers (tests/impl.c: $(tail -n 1 "$r/unit.out")); the amalgamation is suspect:"
    diff <(grep '^FAIL' "$r/unit.out") <(grep '^FAIL' "$d/unit.out") | head -n 10
  fi
}

# --- generation (fast, in order) ---------------------------------------------
echo "== generate ($((SECONDS - START)) s)"
for c in "${combos[@]}"; do
  name=${c%%:*} w=${c#*:} d=$T/$name
  check "$name: generate" gen "$d" "$w"
  check "$name: byte-reproducible (another cwd, another name)" reproducible "$d" "$w"
  check "$name: --check accepts it" check_accepts "$d" "$w"
  check "$name: --check rejects an edited copy" check_rejects "$d" "$w"
  check "$name: markers, commented includes, one license" structure "$d/opstate_amalgamation.h" "$w"
  check "$name: --lines generate" gen "$d/lines" "$w" --lines
  check "$name: --lines markers point at the source lines" lines_match "$d/lines/opstate_amalgamation.h"
  write_units "$d" "$w"
done

echo "== amalgamate.py errors ($((SECONDS - START)) s)"
one_line_exit2() {
  local out rc
  out=$("$@" 2>&1 >/dev/null); rc=$?
  echo "exit $rc: $out"
  [[ $rc -eq 2 && $(printf '%s\n' "$out" | wc -l) -eq 1 && $out == amalgamate.py:* ]]
}
check "unknown companion: one line, exit 2" one_line_exit2 $PY amalgamate.py --with lmdb,bogus -o "$T/x.h"
mkdir -p "$T/lonely"
cp amalgamate.py opstate.h "$T/lonely/"
check "missing companion file: one line, exit 2" one_line_exit2 $PY "$T/lonely/amalgamate.py" --with lmdb -o "$T/x.h"
check "bad option: one line, exit 2" one_line_exit2 $PY amalgamate.py --frobnicate -o "$T/x.h"
outside_git() { $PY "$T/lonely/amalgamate.py" -o - | sed -n 3p | grep -q 'commit unknown'; }
check "outside git the commit is 'unknown'" outside_git
same_any_order() {
  [[ -e opstate_nats.h ]] || { $PY amalgamate.py --with lmdb,LMDB -o - | cmp - "$T/core+lmdb/opstate_amalgamation.h"; return; }
  cmp <($PY amalgamate.py --with nats --with lmdb -o -) <($PY amalgamate.py --with lmdb,nats -o -)
}
check "--with order and spelling do not change the output" same_any_order

# --- compiles (parallel) -------------------------------------------------------
echo "== compile ($((SECONDS - START)) s)"
mkdir -p "$T/tests"
for f in "${test_srcs[@]}" tests/main.c; do
  spawn "test object ${f#tests/}" gcc -std=c99 -O1 $WARN -c "$f" -o "$T/tests/$(basename "$f" .c).o"
done
for c in "${combos[@]}"; do
  name=${c%%:*} w=${c#*:} d=$T/$name
  spawn "$name: C99 unit with the switch (gcc, strict warnings)" \
    sh -c "gcc -std=c99 -O2 $LIBWARN -Wstrict-prototypes -c '$d/impl.c' -o '$d/impl.o'"
  spawn "$name: C++11 unit with the switch (g++, strict warnings)" \
    g++ -x c++ -std=c++11 -O1 $LIBWARN -c "$d/impl.c" -o "$d/impl_cxx.o"
  spawn "$name: declarations-only unit (C99 and C++11)" \
    sh -c "gcc -std=c99 $LIBWARN -Wstrict-prototypes -c '$d/decl.c' -o '$d/decl.o' && g++ -x c++ -std=c++11 $LIBWARN -c '$d/decl.c' -o '$d/decl_cxx.o'"
  spawn "$name: --lines unit compiles (gcc C99)" \
    gcc -std=c99 -O1 $LIBWARN -Wstrict-prototypes -c "$d/lines/impl.c" -o "$d/lines/impl.o"
done
collect

echo "== link, run ($((SECONDS - START)) s)"
for c in "${combos[@]}"; do
  name=${c%%:*} w=${c#*:} d=$T/$name
  libs=()
  [[ ,$w, == *,lmdb,* ]] && libs+=(-llmdb)
  [[ ,$w, == *,nats,* ]] && libs+=(-lnats)
  want=(opstate_crc32c opstate_decide_restore opstate_consumer_open)
  [[ ,$w, == *,lmdb,* ]] && want+=(opstate_lmdb_open opstate_lmdb_log_open)
  [[ ,$w, == *,nats,* ]] && want+=(opstate_nats_connect opstate_nats_log_open)
  check "$name: the switch turns on every part (${want[*]})" defines "$d/impl.o" "${want[@]}"
  check "$name: no switch, no definitions" defines "$d/decl.o"
  spawn "$name: amalgamation + separate headers in one unit, both orders (${MIXCC%% *})" mixed "$d" "${libs[@]}"
  spawn "$name: OPSTATE_STATIC unit, included twice (${MIXCC%% *})" static_unit "$d" "${libs[@]}"
  spawn "$name: core unit tests against the amalgamation" unit_run "$d" "${libs[@]}"
done
collect
for c in "${combos[@]}"; do
  name=${c%%:*} d=$T/${c%%:*}
  [[ -e $d/unit.out ]] && ! grep -Eq '^[0-9]+ passed, 0 failed$' <(tail -n 1 "$d/unit.out") && unit_diagnose "$name" "$d"
done

# --- CMake consumer ----------------------------------------------------------------
echo "== cmake ($((SECONDS - START)) s)"
cmake_consumer() {
  local c=$T/cmake/consumer b=$T/cmake/build
  mkdir -p "$c"
  cat >"$c/CMakeLists.txt" <<EOF
cmake_minimum_required(VERSION 3.13)
project(opstate_consumer C)
add_subdirectory("$ROOT" opstate)
add_executable(use_core use_core.c)
target_link_libraries(use_core PRIVATE opstate::opstate)
if(TARGET opstate::lmdb)
  add_executable(use_lmdb use_lmdb.c)
  target_link_libraries(use_lmdb PRIVATE opstate::lmdb)
endif()
if(TARGET opstate::nats)
  add_executable(use_nats use_nats.c)
  target_link_libraries(use_nats PRIVATE opstate::nats)
endif()
foreach(t opstate lmdb nats)
  if(TARGET opstate::\${t})
    message(STATUS "consumer: has opstate::\${t}")
  endif()
endforeach()
EOF
  cat >"$c/use_core.c" <<'EOF'
#define OPSTATE_IMPLEMENTATION
#include "opstate.h"
#include <stdio.h>
int main(void)
{
    printf("use_core: opstate %s, crc32c %08lx\n", OPSTATE_VERSION_STRING,
           (unsigned long)opstate_crc32c(0, "123456789", 9));
    return opstate_version_number() == OPSTATE_VERSION_NUMBER ? 0 : 1;
}
EOF
  cat >"$c/use_lmdb.c" <<'EOF'
#define OPSTATE_IMPLEMENTATION
#define OPSTATE_LMDB_IMPLEMENTATION
#include "opstate_lmdb.h"
#include <stdio.h>
#include <string.h>
int main(int argc, char **argv)
{
    opstate_lmdb *env;
    opstate_lmdb_config ec;
    memset(&ec, 0, sizeof ec);
    ec.path = argc > 1 ? argv[1] : "use-lmdb-env";
    if (opstate_lmdb_open(&ec, &env, NULL) != OPSTATE_OK) return 1;
    printf("use_lmdb: environment open, map %lu bytes\n", (unsigned long)opstate_lmdb_map_size(env));
    opstate_lmdb_close(env);
    return 0;
}
EOF
  cat >"$c/use_nats.c" <<'EOF'
#define OPSTATE_IMPLEMENTATION
#define OPSTATE_NATS_IMPLEMENTATION
#include "opstate_nats.h"
#include <stdio.h>
int main(void)
{
    printf("use_nats: nats.c %s\n", nats_GetVersion());
    return 0;
}
EOF
  cmake -S "$c" -B "$b" >"$T/cmake/configure.log" 2>&1 || { cat "$T/cmake/configure.log"; return 1; }
  cat "$T/cmake/configure.log" | grep -E 'opstate|consumer'
  cmake --build "$b" || return 1
  "$b/use_core" || return 1
  if grep -q 'has opstate::lmdb' "$T/cmake/configure.log"; then "$b/use_lmdb" "$T/cmake/env" || return 1
  else echo "no opstate::lmdb although lmdb.h is installed"; [[ ! -e /usr/include/lmdb.h ]] || return 1; fi
  # opstate::nats exists exactly when opstate_nats.h exists and nats.c is found
  if [[ -e $ROOT/opstate_nats.h ]] && have_nats_lib; then
    grep -q 'has opstate::nats' "$T/cmake/configure.log" && "$b/use_nats" || return 1
  else
    ! grep -q 'has opstate::nats' "$T/cmake/configure.log" || return 1
  fi
}
if command -v cmake >/dev/null 2>&1; then
  check "CMake consumer: add_subdirectory, opstate::opstate / lmdb / nats build and run" cmake_consumer
else
  note "skipped the CMake consumer: cmake is not installed"
fi

echo "amalgamate tests took $((SECONDS - START)) s"
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
