#!/usr/bin/env bash
# make demo-nats: the story of `make demo` over NATS JetStream. Starts its
# own nats-server (JetStream on, 127.0.0.1, a free port, a temp store dir;
# stopped by its PID at the end), builds build/opstate and
# build/config_cache, publishes 200,000 events over 10,000 keys into the
# stream nats://127.0.0.1:PORT/DEMO, consumes them into an LMDB state store,
# kills the consumer with SIGKILL part-way, restarts it (it restores the
# stored position), checks its state equals a full replay, replays to a
# point in time, then runs examples/config_cache --demo against the same
# server (a KV bucket mirrored into LMDB, restarted, resumed). Needs cc,
# liblmdb-dev, libnats-dev, nats-server and python3 (scripts/deps.sh
# installs them). Exits non-zero on any mismatch. EVENTS=N to change the
# workload. The shared steps are in scripts/demo_lib.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/demo_lib.sh
source scripts/nats_server.sh
BUILD=${BUILD:-build}
EVENTS=${EVENTS:-200000}
KEYS=10000
RATE=40000 # events/s for the first consumer run, so there is time to kill it
started=$(date +%s%N)

work=$(mktemp -d "${TMPDIR:-/tmp}/opstate-demo-nats.XXXXXX")
consumer=
cleanup() {
  if [[ -n $consumer ]]; then kill -9 "$consumer" 2>/dev/null || true; fi
  nats_server_stop
  rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$BUILD"
say "building $BUILD/config_cache (alongside)"
cc -std=c99 -O2 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Wpedantic -Werror examples/config_cache.c -llmdb -lnats \
  -o "$BUILD/config_cache" &
builder=$!
demo_build "$BUILD"
wait "$builder" || die "building $BUILD/config_cache failed"

nats_server_start "$work" || die "cannot start nats-server"
say "started nats-server (JetStream) on 127.0.0.1:$NATS_PORT (PID $NATS_PID), store in $work/js"
URL=$NATS_URL
LOG=$URL/DEMO
STATE=(--state "$work/state")
demo_story

say "config_cache --demo: a KV bucket mirrored into LMDB, restarted, resumed"
"$BUILD/config_cache" --demo "$URL" config | show || die "config_cache --demo failed"

say "demo passed in $(demo_elapsed)"
