#!/usr/bin/env bash
# bench_memcap.sh — state larger than RAM under a real memory cap (DESIGN.md
# "Performance targets": a read-through consumer keeps working and restarts
# in O(tail) with a state 4x its memory limit, under a real cgroup cap).
#
#   make bench-memcap                   builds build/bench_memcap, runs this
#   CAP_MIB=64 RATIO=4 VALUE_LEN=1000 bash scripts/bench_memcap.sh
#
# Needs root and the cgroup v1 memory controller (memory.limit_in_bytes);
# otherwise one "SKIP: ..." line and exit 0. About 3 minutes on a quiet
# 2-core machine, ~1.5 GB under $TMPDIR or /tmp, removed at the end (also on
# failure or ^C, as is the cgroup). The large run is I/O-bound (a new key
# costs a random read of the table, a compaction a page write per key), so
# a busy disk slows it: a consumer run ends at TIMEOUT_S, MISS, with how far
# it got. Absolute times are noisy on a shared machine. The first lines show
# the disk's read_ahead_kb: how much one page fault of a mapped file reads.
#
# What it does, each step its own process of build/bench_memcap:
#   1. a child memory cgroup of the caller's own (so any limit above still
#      holds; MEMCAP_PARENT=DIR picks another parent), memory.limit_in_bytes
#      and memory.memsw.limit_in_bytes = CAP_MIB;
#   2. fills an embedded LMDB log OUTSIDE the cap (puts of random 24-byte
#      keys, VALUE_LEN-byte values, 10% more than the target needs), then
#      drops its pages from the page cache so the consumer pays for them;
#   3. INSIDE the cap: a read-through consumer to 1/16 of the target (the
#      small state), then one to RATIO x CAP_MIB of keys + values (the large
#      state); each keeps applying after it gets there, says READY when its
#      tail of deltas holds half the overdue bound (the same tail for both
#      sizes) and gets a SIGKILL LINGER_S later, still applying.
#      memory.stat is sampled every 0.1 s (max rss, max cache);
#      memory.max_usage_in_bytes, memory.failcnt and the oom_kill count of
#      memory.oom_control are read after the large run;
#   4. INSIDE the cap: REPS cold restarts of each (interleaved): time to the
#      first applied event in a fresh process, which then ends as a crash
#      would, so every restart finds the same tail;
#   5. the table as raw LMDB sees it (outside the cap).
# Verdicts: state >= RATIO x cap reached under the cap with no OOM kill
# (the consumer was still running when our SIGKILL came); restart of the
# large state within 2x of the small one.
#
# Knobs: CAP_MIB (64), RATIO (4), VALUE_LEN (1000), FLUSH_EVERY (512 events
# per durable flush), COMPACT_KIB (the store's compact_bytes; default: a
# quarter of 4,096 delta items, so a busy consumer compacts ~4,096 keys at a
# time), LINGER_S (0), REPS (3), TIMEOUT_S (180, per consumer run), BUILD,
# BIN. Why these defaults: with random keys a compaction dirties about one
# 4 KiB page per key, which LMDB holds in anonymous memory until commit (and
# keeps for reuse), so the compaction bound sets the floor of the anonymous
# memory; 1000-byte values keep the run near 3 minutes (200-byte values need
# 5x the events, so 5x the random reads).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

CAP_MIB=${CAP_MIB:-64}
RATIO=${RATIO:-4}
VALUE_LEN=${VALUE_LEN:-1000}
FLUSH_EVERY=${FLUSH_EVERY:-512}
COMPACT_KIB=${COMPACT_KIB:-$((VALUE_LEN + 60))} # a delta item is VALUE_LEN + 60 bytes
LINGER_S=${LINGER_S:-0}
REPS=${REPS:-3}
TIMEOUT_S=${TIMEOUT_S:-180}
BUILD=${BUILD:-build}
BIN=${BIN:-$BUILD/bench_memcap}

ENTRY=$((5 + 1 + 4 + 1 + 24 + VALUE_LEN)) # a fold key ("bench" 0 "item" 0 key) + value
TARGET=$((CAP_MIB * RATIO * 1048576))
EVENTS=$((TARGET * 11 / 10 / ENTRY + 10000))
COMPACT=$((COMPACT_KIB * 1024))

skip() {
  echo "SKIP: $*"
  exit 0
}

[[ $(id -u) == 0 ]] || skip "bench-memcap needs root (it creates a memory cgroup)"
mnt=$(awk '$3 == "cgroup" && $4 ~ /(^|,)memory(,|$)/ {print $2; exit}' /proc/mounts)
[[ -n $mnt && -e $mnt/memory.limit_in_bytes ]] || skip "no cgroup v1 memory controller mounted"
own=$(awk -F: '$2 ~ /(^|,)memory(,|$)/ {print $3; exit}' /proc/self/cgroup)
parent=${MEMCAP_PARENT:-$mnt$own}
[[ -w $parent/cgroup.procs ]] || parent=$mnt
[[ -x $BIN ]] || {
  echo "bench_memcap.sh: $BIN not built (make bench-memcap builds it)" >&2
  exit 2
}
work=$(mktemp -d "${TMPDIR:-/tmp}/opstate-memcap.XXXXXX") || exit 2
free_mib=$(df -Pm "$work" | awk 'NR == 2 {print $4}')
((free_mib > (EVENTS * (VALUE_LEN + 800) + 3 * TARGET) / 1048576 + 512)) || {
  rm -rf "$work"
  skip "not enough free disk under $work ($free_mib MiB)"
}

cg=$parent/opstate-memcap-$$
pids=()
cleanup() {
  local p t i
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
  if [[ -d $cg ]]; then
    while read -r t; do echo "$t" >"$parent/cgroup.procs"; done <"$cg/cgroup.procs"
    for ((i = 0; i < 50; i++)); do rmdir "$cg" 2>/dev/null && break; sleep 0.1; done
    [[ -d $cg ]] && echo "bench_memcap.sh: could not remove $cg" >&2
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir "$cg" || exit 2
echo $((CAP_MIB * 1048576)) >"$cg/memory.limit_in_bytes" || exit 2
if [[ -e $cg/memory.memsw.limit_in_bytes ]]; then echo $((CAP_MIB * 1048576)) >"$cg/memory.memsw.limit_in_bytes"; fi

# Runs "$@" inside the cgroup: the shell moves itself in, then becomes the program.
# shellcheck disable=SC2016 # $$ and $@ are the inner shell's
IN_CAP=(bash -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$cg")

cg_stat() { awk -v k="$1" '$1 == k {print $2}' "$cg/memory.stat"; }
oom_kills() { awk '$1 == "oom_kill" {print $2}' "$cg/memory.oom_control"; }
mib() { awk -v b="$1" 'BEGIN {printf "%.1f", b / 1048576}'; }

max_rss=0 max_cache=0
sample_memory() {
  local r c
  r=$(cg_stat rss) c=$(cg_stat cache)
  ((r > max_rss)) && max_rss=$r
  ((c > max_cache)) && max_cache=$c
}

# consume NAME TARGET_BYTES: a consumer in the cap until READY (or death or
# the timeout), LINGER_S more, then SIGKILL. Sets ready (1/0), alive (1 when
# it still ran at our kill), status (its wait status) and took (seconds).
consume() {
  local name=$1 target=$2 out=$work/$1.out pid t0=$SECONDS
  "${IN_CAP[@]}" "$BIN" consume "$work/log" "$work/$name" "$target" "$VALUE_LEN" "$COMPACT" "$FLUSH_EVERY" \
    >"$out" 2>"$work/$name.err" &
  pid=$!
  pids+=("$pid")
  ready=0 alive=0
  while kill -0 "$pid" 2>/dev/null && ((SECONDS - t0 < TIMEOUT_S)); do
    sample_memory
    grep -q '^READY' "$out" && ready=1 && break
    sleep 0.1
  done
  took=$((SECONDS - t0))
  ((ready)) && sleep "$LINGER_S"
  kill -0 "$pid" 2>/dev/null && alive=1
  kill -9 "$pid" 2>/dev/null
  { wait "$pid"; } 2>/dev/null # no "Killed" notice: the kill is ours
  status=$?
  pids=()
  sed 's/^/      /' "$out"
  grep -v 'map grown' "$work/$name.err" | sed 's/^/      stderr: /'
}

median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2)}'; }

# restart NAME: one cold restart in the cap; prints the line, sets ms.
restart() {
  local line
  line=$("${IN_CAP[@]}" "$BIN" restart "$work/log" "$work/$1" "$COMPACT" "$FLUSH_EVERY" 2>>"$work/$1.err")
  echo "      $1: $line"
  ms=$(awk '{print $2}' <<<"$line")
  [[ $line == restart* ]] || {
    ms=
    tail -n 1 "$work/$1.err" | sed 's/^/      stderr: /'
  }
}

echo "memcap: cap $CAP_MIB MiB (cgroup v1 $cg), target $((CAP_MIB * RATIO)) MiB of keys + values (${RATIO}x)," \
  "$ENTRY bytes per key + value, compact_bytes $COMPACT_KIB KiB, flush every $FLUSH_EVERY events (SYNC_FULL)"
echo "memcap: the machine may be shared with other work: times are noisy; kernel $(uname -r)," \
  "read_ahead_kb of $work's disk: $(cat "/sys/class/block/$(df -P "$work" | awk 'NR == 2 {sub(".*/", "", $1); print $1}')/queue/read_ahead_kb" 2>/dev/null || echo '?')"
echo "fill (outside the cap):"
"$BIN" fill "$work/log" "$EVENTS" "$VALUE_LEN" 1 2>"$work/fill.err" | sed 's/^/      /'
[[ ${PIPESTATUS[0]} == 0 ]] || {
  grep -v 'map grown' "$work/fill.err" >&2
  exit 2
}

echo "small state (1/16 of the target), inside the cap:"
consume small $((TARGET / 16))
small_ok=$ready
echo "large state (${RATIO}x the cap), inside the cap:"
echo 0 >"$cg/memory.max_usage_in_bytes"
echo 0 >"$cg/memory.failcnt"
max_rss=0 max_cache=0
consume large $TARGET
large_ready=$ready large_alive=$alive large_status=$status large_took=$took
max_usage=$(cat "$cg/memory.max_usage_in_bytes") failcnt=$(cat "$cg/memory.failcnt")

echo "restarts, cold (both files dropped from the page cache), inside the cap, interleaved:"
small_ms=() large_ms=()
for ((r = 0; r < REPS; r++)); do
  restart small
  [[ -n $ms ]] && small_ms+=("$ms")
  restart large
  [[ -n $ms ]] && large_ms+=("$ms")
done
ooms=$(oom_kills)
echo "tables (outside the cap):"
for s in small large; do echo "      $s: $("$BIN" stat "$work/$s" "$work/log" 2>&1)"; done

verdict() { if (($1)); then echo PASS; else echo MISS; fi; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }

# The state when READY (or at the last progress line), from the consumer's fold.
state=$(awk '/^progress/ {s = $7} /^READY/ {exit} END {print s + 0}' "$work/large.out")
ok1=0
((large_ready && large_alive && large_status == 137 && ooms == 0)) && ok1=1
if ((large_ready)); then how="reached in $large_took s under the cap"; else how="NOT reached in $large_took s"; fi
echo "1   state $state MiB of keys + values = $(ratio "$state" "$CAP_MIB")x the $CAP_MIB MiB cap, $how;" \
  "oom kills $ooms; $( ((large_alive)) && echo 'still applying when SIGKILLed' || echo 'DEAD before our SIGKILL')" \
  "(exit status $large_status)  (target >= ${RATIO}x, no OOM)  $(verdict $ok1)"
echo "1      info: $(grep '^quarters' "$work/large.out" || echo 'throughput by quarter: target not reached')"
echo "1      info: max usage $(mib "$max_usage") MiB (page cache included), sampled max rss $(mib "$max_rss") MiB," \
  "max cache $(mib "$max_cache") MiB, failcnt $failcnt"
if ((${#small_ms[@]} && ${#large_ms[@]})); then
  sm=$(median "${small_ms[@]}") lm=$(median "${large_ms[@]}")
  hi=$(awk -v a="$lm" -v b="$sm" 'BEGIN {printf "%.2f", (a > b ? a / b : b / a)}')
  ok2=$(awk -v r="$hi" -v s="$large_ready" 'BEGIN {print (r <= 2 && s ? 1 : 0)}')
  echo "2   restart to first applied event, cold, in the cap, median of $REPS: large $lm ms, small $sm ms;" \
    "large/small $(ratio "$lm" "$sm")x  (target within 2x, large state at ${RATIO}x the cap)  $(verdict "$ok2")"
  ((large_ready)) || echo "2      (the large state never reached its target: the ratio compares smaller states)"
else
  echo "2   restart to first applied event: no figure (a restart failed)  MISS"
fi
((small_ok)) || echo "memcap: the small consumer did not reach its target"
# the report's row (scripts/bench_report.py)
echo "@target larger_than_ram|state $state MiB = $(ratio "$state" "$CAP_MIB")x a $CAP_MIB MiB cgroup cap, oom kills $ooms; restart large/small $(ratio "${lm:-0}" "${sm:-1}")x|$(verdict "$((ok1 && ${ok2:-0}))")|"
