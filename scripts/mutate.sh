#!/usr/bin/env bash
# Mutation harness (`make mutate`): flips each guard listed in tests/mutants.txt
# in turn, in a copy of the tree, and runs the test that must catch it. Prints
# every mutant as killed or SURVIVED, the elapsed time, and last the line
# "mutation score: K killed, S survived of N"; exits non-zero when a mutant
# survived, did not build, or the list is stale.
#
#   scripts/mutate.sh              every mutant (2 jobs; MUTATE_JOBS=1 for one)
#   scripts/mutate.sh NAME...      only the mutants whose name contains a NAME
#   scripts/mutate.sh --check      only validate the list (run by make test):
#                                  every `from` text occurs exactly once in its
#                                  file, inside a header's implementation part
#
# The working tree is never touched: headers, tests, Makefile and scripts are
# copied to a mktemp -d directory, one copy per job, each with its own BUILD.
set -uo pipefail
cd "$(dirname "$0")/.."
LIST=${MUTANTS:-tests/mutants.txt}
JOBS=${MUTATE_JOBS:-2}
[[ $JOBS == 1 ]] || JOBS=2
TEST_TIMEOUT=300 # baseline runs; a mutant gets 10 x its baseline time + 15 s
BUILD_TIMEOUT=300
# Quick builds: the mutants change code, not warnings; -O0 halves the build.
OPT="-O0 -g0"

# The list parser, checker and applier (exact text; Python reads the headers
# byte for byte, so no quoting or pattern rules get in the way).
read -r -d '' PY <<'EOF'
import re
import sys

def parse(path):
    """Blocks of `key: value` lines separated by blank lines; `#` lines are
    comments. `from:` and `to:` may repeat: their values join with newlines."""
    muts, cur, errors = [], None, []
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    for no, line in enumerate(lines, 1):
        if line.startswith("#"):
            continue
        if line.strip() == "":
            cur = None
            continue
        key, sep, val = line.partition(":")
        if not sep or key not in ("name", "file", "from", "to", "test", "why"):
            errors.append(f"{path}:{no}: not a `key: value` line: {line!r}")
            continue
        val = val[1:] if val.startswith(" ") else val
        if cur is None:
            cur = {"line": no, "from": [], "to": []}
            muts.append(cur)
        if key in ("from", "to"):
            cur[key].append(val)
        elif key in cur:
            errors.append(f"{path}:{no}: `{key}` twice in one mutant")
        else:
            cur[key] = val
    for m in muts:
        m["from"] = "\n".join(m["from"])
        m["to"] = "\n".join(m["to"])
    return muts, errors

def check(path):
    muts, errors = parse(path)
    names = set()
    for m in muts:
        where = f"{path}:{m['line']}"
        for k in ("name", "file", "test"):
            if not m.get(k):
                errors.append(f"{where}: no `{k}`")
        if not m["from"]:
            errors.append(f"{where}: no `from`")
        if errors and errors[-1].startswith(where):
            continue
        name = m["name"]
        if name in names:
            errors.append(f"{where}: name {name} used twice")
        names.add(name)
        if not m["test"].split()[0] in ("unit", "unit-nohw", "unit-smallcrc", "unit-lmdb", "unit-nats"):
            errors.append(f"{where}: {name}: test must start with unit, unit-nohw, unit-smallcrc, unit-lmdb or unit-nats")
        if m["from"] == m["to"]:
            errors.append(f"{where}: {name}: `to` equals `from`")
        try:
            with open(m["file"], encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            errors.append(f"{where}: {name}: {e}")
            continue
        n = text.count(m["from"])
        if n != 1:
            errors.append(f"{where}: {name}: stale: `from` text occurs {n} times in {m['file']} (must be once)")
            continue
        # The harness compiles the test sources once: a mutant may change
        # only a header's implementation part, which they never include.
        impl = re.search(r"^#if defined\(OPSTATE\w*_IMPLEMENTATION\)", text, re.M)
        if not impl or text.index(m["from"]) < impl.start():
            errors.append(f"{where}: {name}: `from` text must lie in the implementation part of a header")
    return muts, errors

def main():
    cmd, path = sys.argv[1], sys.argv[2]
    muts, errors = check(path)
    if errors:
        for e in errors:
            print(e)
        sys.exit(1)
    if cmd == "check":
        print(f"{path}: {len(muts)} mutants, every one current")
    elif cmd == "list":  # index TAB name TAB file TAB test
        for i, m in enumerate(muts):
            print(f"{i}\t{m['name']}\t{m['file']}\t{m['test']}")
    elif cmd == "apply":  # apply LIST INDEX ROOT
        m, root = muts[int(sys.argv[3])], sys.argv[4]
        p = f"{root}/{m['file']}"
        with open(p, encoding="utf-8") as f:
            text = f.read()
        if text.count(m["from"]) != 1:
            sys.exit(f"{m['name']}: `from` text not found once in the copy")
        with open(p, "w", encoding="utf-8") as f:
            f.write(text.replace(m["from"], m["to"], 1))

main()
EOF
mutpy() { python3 -c "$PY" "$@"; }

if [[ ${1:-} == --check ]]; then
  mutpy check "$LIST"
  exit
fi

start=$SECONDS
listing=$(mutpy list "$LIST") || { printf '%s\n' "$listing"; echo "mutate: the list is stale (see above)"; exit 2; }
declare -a IDX NAME FILE TEST
while IFS=$'\t' read -r i name file test; do
  if [[ $# -gt 0 ]]; then
    keep=0
    for want in "$@"; do [[ $name == *"$want"* ]] && keep=1; done
    [[ $keep == 1 ]] || continue
  fi
  IDX+=("$i") NAME+=("$name") FILE+=("$file") TEST+=("$test")
done <<<"$listing"
N=${#IDX[@]}
[[ $N -gt 0 ]] || { echo "mutate: no mutant matches"; exit 2; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/opstate-mutate.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
for ((w = 0; w < JOBS; w++)); do
  mkdir -p "$TMP/w$w/pristine"
  cp -R opstate.h opstate_lmdb.h opstate_nats.h Makefile tests scripts "$TMP/w$w/"
  cp -R opstate.h opstate_lmdb.h opstate_nats.h Makefile tests scripts "$TMP/w$w/pristine/"
done

# makevar DIR NAME: a variable of the Makefile in DIR
makevar() { (cd "$1" && make -s --no-print-directory --eval 'mutate-print-%: ; @echo $($*)' "mutate-print-$2"); }
# The test sources include only the headers' declarations (the list checker
# keeps every mutant inside an implementation part), so each job compiles
# them once per runner; a mutant rebuilds the implementation object and links.
# A test that compiles a private copy of an implementation to look inside it
# (tests/test_hash.c, tests/test_hash_free.c) stays a source: built per mutant.
# objects W RUNNER: prints "VAR=objects" for the runner's sources in job W
objects() {
  local dir=$TMP/w$1 runner=$2 var flags srcs src o objs=()
  local odir=$dir/build/mutate-objects/$runner
  case $runner in
    unit | unit-nohw | unit-smallcrc) var=TEST_SRCS flags="" ;; # (core builds with other CRC options)
    unit-lmdb) var=LMDB_SRCS flags=$(makevar "$dir" POSIX) ;;
    unit-nats) var=NATS_SRCS flags=$(makevar "$dir" POSIX) ;;
  esac
  if [[ ! -f $odir/list ]]; then
    mkdir -p "$odir"
    srcs=$(makevar "$dir" "$var") || return 1
    # the Makefile's flags, split into words
    flags="$(makevar "$dir" CC) $(makevar "$dir" STD) $flags $OPT $(makevar "$dir" WARN)"
    for src in $srcs; do
      if grep -q '^#define OPSTATE[A-Z_]*IMPLEMENTATION$' "$dir/$src"; then
        objs+=("$src")
        continue
      fi
      o=build/mutate-objects/$runner/$(basename "$src" .c).o
      (cd "$dir" && $flags -c "$src" -o "$o") || return 1
      objs+=("$o")
    done
    echo "$var=${objs[*]}" >"$odir/list"
  fi
  cat "$odir/list"
}
# build W RUNNER: builds one runner binary in job W's copy (never a stale one)
build() {
  local dir=$TMP/w$1 objs
  rm -f "$dir/build/$2"
  objs=$(objects "$1" "$2" 2>"$dir/build.log") || return 1
  (cd "$dir" && timeout -k 5 "$BUILD_TIMEOUT" make -s BUILD=build CFLAGS="$OPT" "$objs" "build/$2") \
    >>"$dir/build.log" 2>&1
}
# run W LIMIT TEST...: runs a test command (runner [filter]) in job W's copy
# with a time limit in seconds; its exit status
run() {
  local dir=$TMP/w$1 limit=$2 runner=$3
  shift 3
  # (the outer redirection keeps bash's "Segmentation fault" notices quiet)
  { (cd "$dir" && timeout -k 5 "$limit" "./build/$runner" "$@") >"$dir/test.log" 2>&1; } 2>/dev/null
}

echo "== baseline: the unmutated tree must pass every test command of the list"
mapfile -t commands < <(printf '%s\n' "${TEST[@]}" | sort -u)
mapfile -t runners < <(for c in "${commands[@]}"; do echo "${c%% *}"; done | sort -u)
for r in "${runners[@]}"; do
  if ! build 0 "$r"; then tail -n 30 "$TMP/w0/build.log"; echo "baseline fails: build $r"; exit 1; fi
done
# A mutant's test may run 10 times as long as the baseline, +15 s, then it
# counts as hung (an infinite loop is a way to fail).
declare -A LIMIT
for c in "${commands[@]}"; do
  read -r -a words <<<"$c"
  t0=$(date +%s%N)
  if ! run 0 "$TEST_TIMEOUT" "${words[@]}"; then
    grep -v '^ok ' "$TMP/w0/test.log" | tail -n 30
    echo "baseline fails: $c"
    exit 1
  fi
  LIMIT[$c]=$((15 + ($(date +%s%N) - t0) / 100000000))
done
echo "baseline passes: ${#commands[@]} test commands ($((SECONDS - start)) s)"

echo "== $N mutants, $JOBS jobs"
# worker W: claims mutants one at a time (mkdir is atomic) until none is left
worker() {
  local w=$1 dir=$TMP/w$1 k rc verdict t0 words detail limit
  for ((k = 0; k < N; k++)); do
    mkdir "$TMP/claim.$k" 2>/dev/null || continue
    t0=$SECONDS
    read -r -a words <<<"${TEST[k]}"
    limit=${LIMIT[${TEST[k]}]}
    if ! mutpy apply "$LIST" "${IDX[k]}" "$dir" >"$dir/apply.log" 2>&1; then
      verdict="ERROR" detail="could not apply: $(tail -n 1 "$dir/apply.log")"
    elif ! build "$w" "${words[0]}"; then
      verdict="ERROR" detail="does not build (fix the mutant): $(grep -m1 'error' "$dir/build.log")"
    else
      run "$w" "$limit" "${words[@]}"
      rc=$?
      if [[ $rc -eq 0 ]]; then
        verdict="SURVIVED" detail="${TEST[k]} passed"
      elif [[ $rc -eq 124 || $rc -eq 137 ]]; then
        verdict="killed" detail="by timeout: ${TEST[k]} still running after $limit s"
      elif [[ $rc -gt 128 ]]; then
        verdict="killed" detail="${TEST[k]} crashed (signal $((rc - 128)))"
      else
        detail=$(grep -m1 '^FAIL ' "$dir/test.log" | cut -c1-110)
        verdict="killed" detail="${TEST[k]}: ${detail:-exit $rc}"
      fi
    fi
    cp "$dir/pristine/${FILE[k]}" "$dir/${FILE[k]}"
    echo "$k $verdict" >>"$TMP/results.$w"
    printf '%-8s %-44s %3d s  %s\n' "$verdict" "${NAME[k]}" $((SECONDS - t0)) "$detail"
  done
}
WORKERS=()
trap 'kill "${WORKERS[@]}" 2>/dev/null; rm -rf "$TMP"' EXIT
for ((w = 0; w < JOBS; w++)); do
  worker "$w" &
  WORKERS+=($!)
done
wait

killed=$(cat "$TMP"/results.* 2>/dev/null | grep -c ' killed$')
survived=$(cat "$TMP"/results.* 2>/dev/null | grep -c ' SURVIVED$')
errors=$(cat "$TMP"/results.* 2>/dev/null | grep -c ' ERROR$')
done_n=$(cat "$TMP"/results.* 2>/dev/null | wc -l)
[[ $errors -eq 0 ]] || echo "$errors mutants could not be run (ERROR above): fix tests/mutants.txt"
[[ $done_n -eq $N ]] || echo "$((N - done_n)) mutants were not run"
echo "elapsed: $((SECONDS - start)) s"
echo "mutation score: $killed killed, $survived survived of $N"
[[ $survived -eq 0 && $errors -eq 0 && $done_n -eq $N ]]
