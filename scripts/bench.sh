#!/usr/bin/env bash
# `make bench`: runs every benchmark (each prints ratios against baselines
# measured in the same run, and PASS / MISS against DESIGN.md's targets),
# keeps each one's output in $BUILD/bench-NAME.log, then writes
# bench/REPORT.md and its plots (scripts/bench_report.py).
#
# Environment: BUILD (default build), BENCH_ARGS (extra arguments of
# bench_lmdb), QUICK=1 (every part in a short version: under a minute).
# Exit status: non-zero only when a benchmark could not run; a MISS is a
# result, written in the report.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
BUILD=${BUILD:-build}
export BENCH_QUICK=${QUICK:-0}
logs=() failed=0
# run NAME CMD...: one benchmark, its output shown and kept
run() {
  local name=$1 log=$BUILD/bench-$1.log
  shift
  echo "== $name"
  "$@" 2>&1 | tee "$log"
  [[ ${PIPESTATUS[0]} -eq 0 ]] || { echo "bench: $name failed"; failed=1; }
  logs+=("$log")
}
run core "./$BUILD/bench_core"
# shellcheck disable=SC2086 # BENCH_ARGS is a list of words
run lmdb "./$BUILD/bench_lmdb" ${BENCH_ARGS:-}
run nats "./$BUILD/bench_nats"
# state larger than RAM under a cgroup memory cap (minutes: not quick)
[[ $BENCH_QUICK != 0 ]] || run memcap env BIN="$PWD/$BUILD/bench_memcap" bash scripts/bench_memcap.sh
# the flash footprint (DESIGN.md's last row; sizes.sh installs the Cortex-M
# toolchain; not quick: make test checks it too)
if [[ $BENCH_QUICK == 0 ]]; then
  run sizes bash scripts/sizes.sh
  verdict=$(sed -n 's/^firmware subset with OPSTATE_CRC_SMALL: \([0-9]*\) bytes.*: \(PASS\|FAIL\)$/\1 \2/p' "${logs[-1]}")
  read -r bytes word <<<"$verdict"
  [[ ${word:-} == FAIL ]] && word=MISS
  [[ -n ${bytes:-} ]] && echo "@target footprint|decision + resume + gap + hwm + codec + ids: $bytes bytes of flash with OPSTATE_CRC_SMALL (scripts/sizes.sh)|$word|" >>"${logs[-1]}"
fi
quick=()
[[ $BENCH_QUICK == 0 ]] || quick=(--quick)
python3 scripts/bench_report.py --out bench "${quick[@]}" "${logs[@]}"
exit $failed
