#!/usr/bin/env bash
# make demo: the whole story on an embedded LMDB log, no server needed.
# Builds build/opstate, publishes 200,000 events over 10,000 keys, consumes
# them, kills the consumer with SIGKILL part-way, restarts it (it restores the
# stored position), checks its state equals a full replay, then replays to a
# point in time. Needs cc, liblmdb-dev, libnats-dev and python3
# (scripts/deps.sh installs them). Exits non-zero on any mismatch.
# EVENTS=N to change the workload. The steps are in scripts/demo_lib.sh,
# shared with scripts/demo_nats.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/demo_lib.sh
BUILD=${BUILD:-build}
EVENTS=${EVENTS:-200000}
KEYS=10000
RATE=40000 # events/s for the first consumer run, so there is time to kill it
started=$(date +%s%N)

demo_build "$BUILD"
work=$(mktemp -d "${TMPDIR:-/tmp}/opstate-demo.XXXXXX")
consumer=
cleanup() {
  [[ -n $consumer ]] && kill -9 "$consumer" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
LOG="lmdb:$work/log" # the state store goes next to it: $work/log.state
STATE=()

demo_story
say "demo passed in $(demo_elapsed)"
