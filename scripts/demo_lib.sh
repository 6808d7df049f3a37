# demo_lib.sh — the story scripts/demo.sh (LMDB) and scripts/demo_nats.sh
# (a local nats-server) both tell; sourced by them, not run on its own.
#
# The sourcing script sets, before calling demo_story:
#   OP        the opstate binary (demo_build makes it)
#   work      a temp directory (removed by the caller's trap)
#   LOG       the log URI, e.g. lmdb:$work/log or nats://127.0.0.1:PORT/DEMO
#   STATE     (array) extra arguments naming the state store: () for the
#             default next to an lmdb: log, (--state DIR) otherwise
#   EVENTS, KEYS, RATE, started (date +%s%N)
# and a cleanup trap that kills $consumer when it is set.

say() { printf '==> %s\n' "$*"; }
show() { sed 's/^/    /' "$@"; }
die() {
  printf 'demo FAILED: %s\n' "$*" >&2
  exit 1
}

# demo_build DIR: builds DIR/opstate with the cc line of tools/opstate/main.c.
demo_build() {
  say "building $1/opstate"
  mkdir -p "$1"
  cc -std=c99 -O2 -D_POSIX_C_SOURCE=200809L -I. tools/opstate/[a-z]*.c -llmdb -lnats -o "$1/opstate"
  OP=$PWD/$1/opstate
}

# The workload: every key is created once, then random overwrites (92%) and
# deletes (8%); small JSON values; 4 scopes x 3 kinds; device keys are IP
# addresses (dots are escaped in subjects). Seeded, so every run is the same.
demo_workload() {
  python3 - "$EVENTS" "$KEYS" >"$work/events.txt" <<'EOF'
import random, sys
events, nkeys = int(sys.argv[1]), int(sys.argv[2])
random.seed(2026)
scopes, kinds = ["eu-west", "us-east", "ap-south", "sa-east"], ["order", "device", "session"]
keys = []
for i in range(nkeys):
    kind = kinds[i // 4 % 3]
    key = {"order": "o-%05d" % i, "session": "s-%05d" % i,
           "device": "10.%d.%d.%d" % (i >> 16, i >> 8 & 255, i & 255)}[kind]
    keys.append((scopes[i % 4], kind, key))
def value(kind, rev):
    if kind == "order":
        return '{"status":"%s","qty":%d,"rev":%d}' % (
            random.choice(["new", "paid", "packed", "shipped", "delivered"]), random.randint(1, 9), rev)
    if kind == "device":
        return '{"fw":"2.%d.%d","temp":%.1f,"online":%s,"rev":%d}' % (
            random.randint(0, 9), random.randint(0, 20), random.uniform(30, 80),
            random.choice(["true", "false"]), rev)
    return '{"user":"u%d","ttl":%d,"rev":%d}' % (random.randint(1, 5000), random.choice([300, 900, 3600]), rev)
out = []
for n in range(events):
    scope, kind, key = keys[n] if n < nkeys else random.choice(keys)
    if n >= nkeys and random.random() < 0.08:
        out.append("%s %s %s delete\n" % (scope, kind, key))
    else:
        out.append("%s %s %s put %s\n" % (scope, kind, key, value(kind, n)))
sys.stdout.write("".join(out))
EOF
}

demo_publish() {
  say "publishing $EVENTS events over $KEYS keys (puts, overwrites, deletes; 4 scopes, 3 kinds) with publish --batch"
  "$OP" publish --batch --log "$LOG" <"$work/events.txt" | show || die "publish --batch failed"
  "$OP" info --log "$LOG" | show || die "info failed"
}

# The position the consumer's state store has flushed (0 before the first flush).
stored_seq() {
  { "$OP" inspect --log "$LOG" "${STATE[@]}" 2>/dev/null || true; } |
    awk '$1 == "position:" && $2 == "seq" { print $3; found = 1 } END { if (!found) print 0 }'
}

demo_kill_and_restart() {
  local stored
  say "consuming, throttled to $RATE events/s (--max-rate) so it can be killed part-way"
  "$OP" consume --log "$LOG" "${STATE[@]}" --max-rate "$RATE" --flush-interval-ms 200 >"$work/consume1.out" 2>&1 &
  consumer=$!
  while (($(stored_seq) < EVENTS / 4)); do
    kill -0 "$consumer" 2>/dev/null || die "the consumer exited early: $(cat "$work/consume1.out")"
    sleep 0.1
  done
  kill -9 "$consumer"
  wait "$consumer" 2>/dev/null || true
  consumer=
  show "$work/consume1.out"
  stored=$(stored_seq)
  ((stored > 0 && stored < EVENTS)) || die "expected a stored position part-way through the log, found $stored"
  say "killed it with SIGKILL; its state store holds position $stored of $EVENTS"

  say "restarting the consumer (until caught up); its first line is the restore decision"
  "$OP" consume --log "$LOG" "${STATE[@]}" --exit-when-caught-up >"$work/consume2.out" || die "the restarted consumer failed"
  show "$work/consume2.out"
  grep -q "^decision: restore \[RESUME\] .*; stored position seq $stored at [^;]* restored;" "$work/consume2.out" ||
    die "the restarted consumer did not restore the stored position $stored"
}

demo_compare() {
  say "checking the consumer's state equals a full replay (inspect --json vs replay --json, compared with python3's json module)"
  "$OP" inspect --log "$LOG" "${STATE[@]}" --json >"$work/state.json" || die "inspect failed"
  "$OP" replay --log "$LOG" --json >"$work/replay.json" || die "replay failed"
  python3 - "$work/state.json" "$work/replay.json" "$EVENTS" <<'EOF' | show || die "the consumer's state differs from a full replay"
import json, sys
state, replay, events = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), int(sys.argv[3])
if state["position"]["seq"] != events or replay["applied"] != events:
    print("MISMATCH: consumer position %d, replay applied %d, expected %d" % (
        state["position"]["seq"], replay["applied"], events))
    sys.exit(1)
a = {tuple(i["key"]): i for i in state["items"]}
b = {tuple(i["key"]): i for i in replay["items"]}
diff = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
if diff or state["count"] != replay["count"] or state["items"] != replay["items"]:
    print("MISMATCH: %d keys differ, e.g. %r: consumer %r, replay %r" % (
        len(diff), diff[:1], a.get(diff[0]) if diff else None, b.get(diff[0]) if diff else None))
    sys.exit(1)
print("identical: %d keys, every value, sequence and time the same (position seq %d)" % (
    state["count"], state["position"]["seq"]))
EOF
}

demo_point_in_time() {
  local half=$((EVENTS / 2))
  say "point-in-time: the state as of sequence $half, and one scope of it"
  "$OP" replay --log "$LOG" --until-seq "$half" | show || die "replay --until-seq failed"
  "$OP" replay --log "$LOG" --until-seq "$half" --scope eu-west | show || die "replay --scope failed"
}

# The whole story, after demo_build: workload, publish, kill, restart,
# compare, point in time.
demo_story() {
  demo_workload
  demo_publish
  demo_kill_and_restart
  demo_compare
  demo_point_in_time
}

demo_elapsed() {
  local elapsed=$((($(date +%s%N) - started) / 1000000))
  printf '%d.%d s' $((elapsed / 1000)) $((elapsed % 1000 / 100))
}
