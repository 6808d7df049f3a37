# cli_lib.sh — what the tool's test scripts share (sourced from the
# repository root after `set -uo pipefail`): building the tool unless
# OPSTATE names a binary, and the checks. The caller sets T (a temp dir),
# out and err (files in it) and passed=0 failed=0 before using the checks.
BUILD=${BUILD:-build}
if [[ -z ${OPSTATE:-} ]]; then
  mkdir -p "$BUILD"
  cc -std=c99 -O2 -D_POSIX_C_SOURCE=200809L -I. tools/opstate/[a-z]*.c -llmdb -lnats -o "$BUILD/opstate" || {
    echo "cannot build $BUILD/opstate"
    echo "0 passed, 1 failed"
    exit 1
  }
  OPSTATE=$PWD/$BUILD/opstate
fi

# A sanitizer build (OPSTATE=$BUILD/opstate-asan, as make test runs it)
# reports on stderr; its exit code alone may look like an expected one, and
# a check may look only at stdout. So a check that passes while the stderr
# file holds a report counts as failed, and a failure shows the report.
SAN_REPORT='ERROR: [A-Za-z]*Sanitizer|LeakSanitizer|runtime error:'

# ok [NAME]: a check passed (the helpers below pass their NAME; a check in
# a test script is named by its line).
ok() {
  if grep -Eq "$SAN_REPORT" "$err" 2>/dev/null; then
    bad "${1:-the check at ${BASH_SOURCE[1]}:${BASH_LINENO[0]}}: a sanitizer report on stderr"
    return
  fi
  passed=$((passed + 1))
}
bad() {
  failed=$((failed + 1))
  echo "FAILED: $1"
  sed 's/^/    stdout: /' "$out" | head -n 5
  if grep -Eq "$SAN_REPORT" "$err" 2>/dev/null; then
    grep -E -A 12 "$SAN_REPORT" "$err" | head -n 30 | sed 's/^/    stderr: /'
    : >"$err" # reported once
  else
    sed 's/^/    stderr: /' "$err" | head -n 5
  fi
}
op() { "$OPSTATE" "$@" >"$out" 2>"$err"; }

# expect NAME RC [stdout-regex] -- ARGS...: exit code, and stdout matching.
expect() {
  local name=$1 rc=$2 pattern=$3
  shift 4
  op "$@"
  local got=$?
  if [[ $got -ne $rc ]]; then bad "$name (exit $got, expected $rc)"; return; fi
  if [[ -n $pattern ]] && ! grep -Eq -- "$pattern" "$out"; then bad "$name (stdout does not match /$pattern/)"; return; fi
  ok "$name"
}

# fails NAME RC STDERR-REGEX -- ARGS...: exit code RC, exactly one line on
# stderr, matching the regex, and nothing on stdout.
fails() {
  local name=$1 rc=$2 pattern=$3
  shift 4
  op "$@"
  local got=$? lines
  lines=$(wc -l <"$err")
  if [[ $got -ne $rc ]]; then bad "$name (exit $got, expected $rc)"; return; fi
  if [[ $lines -ne 1 ]]; then bad "$name ($lines lines on stderr, expected 1)"; return; fi
  if ! grep -Eq -- "^opstate: .*$pattern" "$err"; then bad "$name (stderr does not match /$pattern/)"; return; fi
  if [[ -s $out && -z ${STDOUT_OK:-} ]]; then bad "$name (stdout not empty)"; return; fi
  ok "$name"
}

# json NAME PYTHON-CHECK -- ARGS...: exit 0 and stdout is JSON for which the
# python expression (over d) is true.
json() { output_check python3 "$@"; }
# jq_true NAME FILTER -- ARGS...: the same read by jq: FILTER (jq -e) is true.
jq_true() { output_check jq "$@"; }

# output_check READER NAME CHECK -- ARGS...: runs the tool; READER's CHECK
# over its stdout must hold.
output_check() {
  local reader=$1 name=$2 check=$3 held
  shift 4
  op "$@"
  local got=$?
  if [[ $got -ne 0 ]]; then bad "$name (exit $got)"; return; fi
  if [[ $reader == jq ]]; then
    jq -e "$check" "$out" >/dev/null 2>>"$err"; held=$?
  else
    python3 -c "import json,sys; d=json.load(open(sys.argv[1])); sys.exit(0 if ($check) else 1)" "$out" 2>>"$err"; held=$?
  fi
  if [[ $held -ne 0 ]]; then bad "$name (not JSON, or $reader's check '$check' is false)"; return; fi
  ok "$name"
}
