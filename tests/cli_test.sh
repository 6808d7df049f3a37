#!/usr/bin/env bash
# Tests for the opstate command-line tool (tools/opstate/): every
# subcommand's happy path, every flag conflict (exit 2), bad inputs (each one
# line on stderr with its documented exit code), corrupt data (4), a poison
# event (5), and every --json output checked with python3's json module.
# Builds $BUILD/opstate unless OPSTATE names a binary. Last line:
# "N passed, M failed"; exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."
source tests/cli_lib.sh
T=$(mktemp -d "${TMPDIR:-/tmp}/opstate-cli.XXXXXX")
trap 'rm -rf "$T"' EXIT
LOG="lmdb:$T/log"
passed=0 failed=0
out=$T/stdout err=$T/stderr


# Flips one byte at `offset` after every occurrence of `needle` in a file.
flip() {
  python3 - "$@" <<'EOF'
import sys
path, needle, offset = sys.argv[1], sys.argv[2].encode(), int(sys.argv[3])
b = bytearray(open(path, "rb").read())
i, n = b.find(needle), 0
while i >= 0:
    b[i + offset] ^= 0xFF
    n += 1
    i = b.find(needle, i + 1)
open(path, "wb").write(b)
sys.exit(0 if n else 1)
EOF
}

echo "== help"
expect "opstate --help" 0 "Exit codes:" -- --help
expect "opstate --help lists 5 = poison" 0 "^  5  consume stopped at a poison event" -- --help
expect "opstate --version" 0 "^opstate 0\." -- --version
for c in publish consume replay info inspect decide export import; do
  expect "$c --help" 0 "^Usage: opstate $c" -- "$c" --help
done
fails "no command" 2 "unknown command 'frobnicate'" -- frobnicate

echo "== publish"
expect "publish put" 0 "^published ops\.eu\.order\.o-1 at sequence 1 " -- publish --log "$LOG" --scope eu --kind order --key o-1 --op put --data '{"qty":1}'
expect "publish a key with dots (escaped)" 0 "^published ops\.eu\.device\.10%2E0%2E0%2E1 at sequence 2 " -- publish --log "$LOG" --scope eu --kind device --key 10.0.0.1 --op put --data '{"temp":40}'
printf '{"from":"stdin"}' >"$T/payload.json"
expect "publish --data-file" 0 "at sequence 3 " -- publish --log "$LOG" --scope us --kind order --key o-2 --op put --data-file "$T/payload.json"
op publish --log "$LOG" --scope us --kind order --key o-3 --op put --data - <"$T/payload.json"
if [[ $? -eq 0 ]] && grep -q "at sequence 4 " "$out"; then ok; else bad "publish --data - (stdin)"; fi
expect "publish delete" 0 "at sequence 5 " -- publish --log "$LOG" --scope eu --kind order --key o-1 --op delete
# Application ops are poison for the KV apply that consume uses: own log.
APPLOG="lmdb:$T/applog"
fails "publish an application op without --allow-app-op (exit 2)" 2 "--op '16': opstate consume applies put and delete only" -- publish --log "$APPLOG" --scope eu --kind audit --op 16 --data note --no-time
expect "publish an application op, no key, no time" 0 "^published ops\.eu\.audit at sequence 1 " -- publish --log "$APPLOG" --scope eu --kind audit --op 16 --data note --no-time --allow-app-op
ID=0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b
expect "publish --id, --time" 0 "at sequence 6 \(id $ID\)" -- publish --log "$LOG" --scope us --kind order --key o-4 --op put --data '{"v":1}' --id "$ID" --time 2026-11-23T10:00:00.5+01:00
expect "publish the same --id again: duplicate" 0 "^duplicate: id $ID is already at sequence 6" -- publish --log "$LOG" --scope us --kind order --key o-4 --op put --data '{"v":1}' --id "$ID"
expect "publish --expect-seq 0 on a new subject" 0 "at sequence 7 " -- publish --log "$LOG" --scope us --kind order --key o-5 --op put --data 1 --expect-seq 0
fails "publish --expect-seq conflict (exit 1)" 1 "--expect-seq 0: conflict on 'ops\.us\.order\.o-5'" -- publish --log "$LOG" --scope us --kind order --key o-5 --op put --data 2 --expect-seq 0
expect "publish --expect-seq with the right sequence" 0 "at sequence 8 " -- publish --log "$LOG" --scope us --kind order --key o-5 --op put --data 2 --expect-seq 7
printf '# scope kind key op data\n\neu session s-1 put {"user":"ann"}\nus session s-2 put {"user":"bob"} \n eu  session  s-1  delete\n' >"$T/batch.txt"
op publish --log "$LOG" --batch <"$T/batch.txt"
if [[ $? -eq 0 ]] && grep -q "^published 3 events (0 duplicates, 0 not acknowledged, 0 refused) .* last sequence 11$" "$out"; then ok; else bad "publish --batch"; fi
op publish --log "$LOG" --batch --unacked "$T/unacked.txt" <"$T/batch.txt"
if [[ $? -eq 0 && -f $T/unacked.txt && ! -s $T/unacked.txt ]] && grep -q "^published 0 events (3 duplicates, 0 not acknowledged, 0 refused) .* last sequence 11$" "$out"; then ok; else bad "publish --batch of the same input again: nothing added (derived ids), --unacked empty"; fi
printf 'ap audit - 17 free text with spaces\n' | "$OPSTATE" publish --log "$APPLOG" --batch >"$out" 2>"$err"
if [[ $? -eq 2 ]] && grep -q "line 1: op '17': opstate consume applies put and delete only" "$err"; then ok; else bad "publish --batch refuses an application op without --allow-app-op"; fi
printf 'ap audit - 17 free text with spaces\n' | "$OPSTATE" publish --log "$APPLOG" --batch --allow-app-op >"$out" 2>"$err"
if [[ $? -eq 0 ]] && grep -q "^published 1 events .* last sequence 2$" "$out"; then ok; else bad "publish --batch, an application op"; fi
json "replay --json of application ops: both poison, data kept in the log" 'd["applied"] == 0 and d["poison"] == 2' -- replay --log "$APPLOG" --json
BLOG="lmdb:$T/batchlog"
printf 'eu order o-9 put {}\n' | "$OPSTATE" publish --log "$BLOG" --batch >/dev/null
printf 'eu order o-9 put {}\neu order o-10 put {}\nbad.scope order k put x\neu order o-11 put {}\n' >"$T/badbatch.txt"
"$OPSTATE" publish --log "$BLOG" --batch --unacked "$T/none.txt" <"$T/badbatch.txt" >"$out" 2>"$err"
if [[ $? -eq 2 && $(wc -l <"$err") -eq 1 && ! -s $out && ! -e $T/none.txt ]] && grep -q "^opstate: stdin line 3: scope 'bad.scope': a scope is one subject token" "$err"; then ok; else bad "publish --batch, a bad line 3: exit 2, one line"; fi
expect "publish --batch, a bad line 3: nothing appended" 0 "^messages: +1$" -- info --log "$BLOG"
printf 'eu order\n' >"$T/shortbatch.txt"
"$OPSTATE" publish --log "$BLOG" --batch <"$T/shortbatch.txt" >"$out" 2>"$err"
if [[ $? -eq 2 ]] && grep -q "^opstate: stdin line 1: expected \"\[id=UUID\] \[time=T\] <scope> <kind> <key> <op> \[data\]\"" "$err"; then ok; else bad "publish --batch, a short line"; fi
# One transaction for the whole input: 10,000 lines (more than the 4,096 of
# a chunk), the last with a subject longer than the LMDB log takes.
{ seq 1 9999 | awk '{ printf "big k key%d put %d\n", $1, $1 }'; printf 'big k %0600d put x\n' 0; } >"$T/big.txt"
"$OPSTATE" publish --log "$BLOG" --batch <"$T/big.txt" >"$out" 2>"$err"
if [[ $? -eq 2 && $(wc -l <"$err") -eq 1 ]] && grep -q "^opstate: publish --batch of 10000 events to .lmdb:.*.: nothing appended (failed at line 10000): invalid argument " "$err"; then ok; else bad "publish --batch refused at its last line: exit 2, one line"; fi
expect "publish --batch refused at its last line: nothing appended (one transaction)" 0 "^messages: +1$" -- info --log "$BLOG"
head -n 9999 "$T/big.txt" >"$T/big-ok.txt"
op publish --log "$BLOG" --batch <"$T/big-ok.txt"
if [[ $? -eq 0 ]] && grep -q "^published 9999 events (0 duplicates" "$out"; then ok; else bad "publish --batch, 9999 events in one transaction"; fi
op publish --log "$BLOG" --batch <"$T/big-ok.txt"
if [[ $? -eq 0 ]] && grep -q "^published 0 events (9999 duplicates" "$out"; then ok; else bad "publish --batch, 9999 events again: nothing added"; fi
expect "publish --batch twice: the log holds every line once" 0 "^messages: +10000$" -- info --log "$BLOG"
printf 'dup k same put 1\ndup k same put 1\n' >"$T/twice.txt"
op publish --log "$BLOG" --batch <"$T/twice.txt"
if [[ $? -eq 0 ]] && grep -q "^published 2 events (0 duplicates" "$out"; then ok; else bad "publish --batch, two equal lines: two events"; fi
printf '# another file\ndup k same put 1\ndup k same put 1\n' >"$T/twice2.txt"
op publish --log "$BLOG" --batch <"$T/twice2.txt"
if [[ $? -eq 0 ]] && grep -q "^published 2 events (0 duplicates" "$out"; then ok; else bad "publish --batch, another input with the same lines: other ids"; fi
BID=0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c
printf 'id=%s time=2026-11-23T10:00:00Z eu order o-12 put {"v":1}\ntime=1ns id=%s eu order o-12 put {"v":2}\n' "$BID" "$BID" >"$T/ids.txt"
op publish --log "$BLOG" --batch <"$T/ids.txt"
if [[ $? -eq 0 ]] && grep -q "^published 1 events (1 duplicates" "$out"; then ok; else bad "publish --batch with id= and time=: one id twice, once appended"; fi
expect "publish --batch id=: the event has that id" 0 "^duplicate: id $BID is already at sequence 10005" -- publish --log "$BLOG" --scope eu --kind order --key o-12 --op put --id "$BID"
printf 'id=nope eu order o-1 put x\n' | "$OPSTATE" publish --log "$BLOG" --batch >"$out" 2>"$err"
if [[ $? -eq 2 ]] && grep -q "^opstate: stdin line 1: id 'nope': expected a lowercase UUID" "$err"; then ok; else bad "publish --batch, a bad id="; fi
printf '\ntime=yesterday eu order o-1 put x\n' | "$OPSTATE" publish --log "$BLOG" --batch >"$out" 2>"$err"
if [[ $? -eq 2 ]] && grep -q "^opstate: stdin line 2: time 'yesterday': not a time" "$err"; then ok; else bad "publish --batch, a bad time="; fi
printf 'id=%s id=%s eu order o-1 put x\n' "$BID" "$BID" | "$OPSTATE" publish --log "$BLOG" --batch >"$out" 2>"$err"
if [[ $? -eq 2 ]] && grep -q "^opstate: stdin line 1: id= given twice" "$err"; then ok; else bad "publish --batch, id= twice"; fi
fails "--unacked in a missing directory (exit 3)" 3 "--unacked '$T/no/such': No such file" -- publish --log "$BLOG" --batch --unacked "$T/no/such"
fails "--ack-wait-ms on an lmdb: log (exit 2)" 2 "--ack-wait-ms: only for nats:// logs" -- publish --log "$BLOG" --batch --ack-wait-ms 5

echo "== info"
expect "info" 0 "^last: +seq 11 at 20[0-9-]+T[0-9:.]{18}Z$" -- info --log "$LOG"
json "info --json" 'd["last_seq"] == 11 and d["first_seq"] == 1 and d["messages"] == 11 and d["epoch"] > 0 and d["last_time_text"].endswith("Z")' -- info --log "$LOG" --json

echo "== replay"
expect "replay" 0 "^replayed 11 events up to sequence 11 .*: 6 keys; position seq 11 " -- replay --log "$LOG"
json "replay --json" 'd["applied"] == 11 and d["count"] == 6 and len(d["items"]) == 6 and d["position"]["seq"] == 11' -- replay --log "$LOG" --json
json "replay --json --until-seq 4" 'd["end_seq"] == 4 and d["count"] == 4 and d["position"]["seq"] == 4' -- replay --log "$LOG" --json --until-seq 4
json "replay --json --max-events 2" 'd["applied"] == 2 and d["count"] == 2' -- replay --log "$LOG" --json --max-events 2
json "replay --json --scope us" 'd["applied"] == 6 and all(i["key"][0] == "us" and i["key_encoding"] == "utf8" for i in d["items"])' -- replay --log "$LOG" --json --scope us
jq_true "replay --json read by jq: keys as parts, values as text or base64 under fixed names" '.items | length == 6 and all(.[]; (.key | type) == "array" and (.key | length) == 3 and (.value | type) == "string" and (.value_encoding == "utf8" or .value_encoding == "base64"))' -- replay --log "$LOG" --json
jq_true "replay --json read by jq: a JSON payload is its text" '[.items[] | select(.key[2] == "o-2") | .value | fromjson | .from] == ["stdin"]' -- replay --log "$LOG" --json
# Keys as users write them: dots and spaces are escaped by opstate, in
# --filter after the kind and in --key.
KEYLOG="lmdb:$T/keylog"
op publish --log "$KEYLOG" --scope site1 --kind host --key 10.0.0.1 --op put --data up &&
  op publish --log "$KEYLOG" --scope site1 --kind host --key 10.0.0.2 --op put --data down &&
  op publish --log "$KEYLOG" --scope site1 --kind host --key "a b" --op put --data spaced
json "replay --filter with a dotted key as written" 'd["count"] == 1 and d["items"][0]["key"] == ["site1", "host", "10.0.0.1"]' -- replay --log "$KEYLOG" --json --filter ops.site1.host.10.0.0.1
json "replay --scope --kind --key with a space" 'd["count"] == 1 and d["items"][0]["value"] == "spaced"' -- replay --log "$KEYLOG" --json --scope site1 --kind host --key "a b"
json "replay --filter with '*' for the key" 'd["count"] == 3' -- replay --log "$KEYLOG" --json --filter 'ops.site1.*.*'
fails "replay --key without --kind" 2 "--kind and --key go together" -- replay --log "$KEYLOG" --scope site1 --key x
op replay --log "$KEYLOG" --keys
if [[ $? -eq 0 ]] && grep -q "^site1 host 10.0.0.1	up$" "$out" && grep -q "^site1 host a b	spaced$" "$out"; then ok; else bad "replay --keys lists key and value as written"; fi
expect "get --replay: one key's value from the log" 0 "^down$" -- get --log "$KEYLOG" --replay --scope site1 --kind host --key 10.0.0.2
fails "get --replay: no such key (exit 3)" 3 "get: no key 'site1' 'host' '10.0.0.9'" -- get --log "$KEYLOG" --replay --scope site1 --kind host --key 10.0.0.9
fails "get without --key" 2 "get: --scope, --kind and --key are required" -- get --log "$KEYLOG" --scope site1 --kind host
op tail --log "$KEYLOG"
if [[ $? -eq 0 ]] && [[ $(wc -l <"$out") -eq 3 ]] && jq -se 'map(.key[2]) == ["10.0.0.1", "10.0.0.2", "a b"] and all(.[]; .data_encoding == "utf8" and .op == "put")' "$out" >/dev/null; then ok; else bad "tail: every event as a JSON line (jq)"; fi
op tail --log "$KEYLOG" --last 1
if [[ $? -eq 0 ]] && [[ $(wc -l <"$out") -eq 1 ]] && jq -e '.position.seq == 3 and .data == "spaced"' "$out" >/dev/null; then ok; else bad "tail --last 1"; fi
"$OPSTATE" tail --log "$KEYLOG" --follow --from-seq 3 >"$out" 2>"$err" &
tail_pid=$!
sleep 0.5
"$OPSTATE" publish --log "$KEYLOG" --scope site1 --kind host --key late --op put --data now >/dev/null
sleep 1
kill -INT "$tail_pid"
wait "$tail_pid"
if [[ $? -eq 0 ]] && jq -se 'map(.key[2]) == ["a b", "late"]' "$out" >/dev/null; then ok; else bad "tail --follow prints an event appended later, stops at SIGINT"; fi
json "replay --json --filter ops.*.order.>" 'd["count"] == 4' -- replay --log "$LOG" --json --filter 'ops.*.order.>'
json "replay --json --until-time before the log" 'd["applied"] == 0 and d["filtered"] == 11 and d["items"] == []' -- replay --log "$LOG" --json --until-time 2000-01-01T00:00:00Z
json "replay --json --until-time in ns" 'd["applied"] == 11' -- replay --log "$LOG" --json --until-time 9000000000000000000ns

echo "== consume"
expect "consume: nothing stored" 0 "^decision: restore \[NOTHING_STORED\] .*; stored position none; " -- consume --log "$LOG" --exit-when-caught-up
expect "consume: caught-up summary" 0 "^stopped \(caught up\): applied 11, .*position seq 11 " -- consume --log "$LOG" --exit-when-caught-up --clear-state
expect "get: one key's value from the state" 0 "^2$" -- get --log "$LOG" --scope us --kind order --key o-5
json "get --json: the item in replay --json's shape" 'd["count"] == 1 and d["items"][0]["key"] == ["us", "order", "o-5"] and d["items"][0]["value"] == "2"' -- get --log "$LOG" --scope us --kind order --key o-5 --json
"$OPSTATE" publish --log "$LOG" --scope eu --kind order --key o-6 --op put --data '{"late":true}' >/dev/null
expect "consume: resume restores the stored position" 0 "^decision: restore \[RESUME\] resume after the stored position; stored position seq 11 at [^;]* restored; resume: ok; position seq 11 " -- consume --log "$LOG" --exit-when-caught-up
json "inspect --json equals replay --json" "d['items'] == json.load(open('$T/replay.json'))['items'] if __import__('subprocess').run(['$OPSTATE', 'replay', '--log', '$LOG', '--json'], stdout=open('$T/replay.json', 'w')).returncode == 0 else False" -- inspect --log "$LOG" --json
expect "consume --replay-from-first" 0 "^decision: clear \[FULL_REBUILD\] .*stored position seq 12 at [^;]* discarded" -- consume --log "$LOG" --exit-when-caught-up --replay-from-first
expect "consume --replay-from-sequence at the stored one" 0 "^decision: clear \[BACKWARD_SEQUENCE\]" -- consume --log "$LOG" --exit-when-caught-up --replay-from-sequence 12
expect "consume --replay-from-latest" 0 "^decision: clear \[LATEST\] .*position seq 12 " -- consume --log "$LOG" --exit-when-caught-up --replay-from-latest
expect "consume --replay-from-time, earlier" 0 "^decision: clear \[BACKWARD_TIME\]" -- consume --log "$LOG" --exit-when-caught-up --replay-from-time 2000-01-01T00:00:00Z
expect "consume --keep-state" 0 "^decision: restore \[FORCED_KEEP\]" -- consume --log "$LOG" --exit-when-caught-up --keep-state
expect "consume --clear-state" 0 "^decision: clear \[FORCED_CLEAR\]" -- consume --log "$LOG" --exit-when-caught-up --clear-state --flush-every 2 --flush-interval-ms 0 --timestamp-fallback skip --poison skip --no-resync
expect "consume --scope, own store, read-through" 0 "applied 6, " -- consume --log "$LOG" --exit-when-caught-up --scope eu --name eu-only --read-through
expect "inspect --name eu-only" 0 "^keys: +2$" -- inspect --log "$LOG" --name eu-only
(cd "$T" && "$OPSTATE" publish --scope a --kind b --op put --data 1 >/dev/null && "$OPSTATE" consume --exit-when-caught-up) >"$out" 2>"$err"
if [[ $? -eq 0 && -d $T/opstate-data/log.state ]] && grep -q "applied 1, " "$out"; then ok; else bad "publish and consume with the default log (./opstate-data/log)"; fi
"$OPSTATE" consume --log "$LOG" --state "$T/sig.state" --flush-interval-ms 50 >"$out" 2>"$err" &
pid=$!
sleep 0.5
kill -TERM "$pid"
wait "$pid"
if [[ $? -eq 0 ]] && grep -q "^stopped (SIGTERM): applied 12, " "$out"; then ok; else bad "consume stops on SIGTERM with a final flush"; fi
expect "the state SIGTERM flushed" 0 "^position: +seq 12 " -- inspect --log "$LOG" --state "$T/sig.state"
"$OPSTATE" consume --log "$LOG" --state "$T/sigint.state" >"$out" 2>"$err" &
pid=$!
sleep 0.5
kill -INT "$pid"
wait "$pid"
if [[ $? -eq 0 ]] && grep -q "^stopped (SIGINT): " "$out"; then ok; else bad "consume stops on SIGINT"; fi

echo "== inspect"
expect "inspect" 0 "^position: +seq 12 at " -- inspect --log "$LOG"
expect "inspect shows schema, keys, deltas" 0 "^deltas: +[0-9]+ pending" -- inspect --log "$LOG"
expect "inspect --keys" 0 "^eu device 10\.0\.0\.1	\{\"temp\":40\}$" -- inspect --log "$LOG" --keys
json "inspect --json" 'd["position"]["seq"] == 12 and d["schema_version"] == 1 and d["count"] == len(d["items"]) == 7 and d["store"] == "default"' -- inspect --log "$LOG" --json

echo "== decide"
expect "decide: 101 vs 100 restores" 0 "^reason: +FORWARD_SEQUENCE: " -- decide --replay-from-sequence 101 --stored-seq 100
expect "decide: 50 vs 100 clears" 0 "^decision: +clear" -- decide --replay-from-sequence 50 --stored-seq 100
expect "decide: equal sequence clears" 0 "^reason: +BACKWARD_SEQUENCE: " -- decide --replay-from-sequence 100 --stored-seq 100
expect "decide: a gap is reported" 0 "^gap: +49$" -- decide --replay-from-sequence 150 --stored-seq 100 --last-seq 200
expect "decide: equal time (offsets) clears" 0 "^reason: +BACKWARD_TIME: " -- decide --replay-from-time 2026-11-23T11:00:00+01:00 --stored-seq 5 --stored-time 2026-11-23T10:00:00Z
expect "decide: 1 ns later restores" 0 "^reason: +FORWARD_TIME: " -- decide --replay-from-time 2026-11-23T10:00:00.000000001Z --stored-seq 5 --stored-time 1795428000000000000ns
expect "decide: nothing stored, resume" 0 "^reason: +NOTHING_STORED: " -- decide
expect "decide: keep, nothing stored, restores" 0 "^decision: +restore" -- decide --mode keep
expect "decide: epoch differs" 0 "^reason: +STREAM_RECREATED: " -- decide --stored-seq 10 --stored-epoch 1 --last-seq 20 --epoch 2
expect "decide: expired cursor resyncs" 0 "^resync: +yes" -- decide --stored-seq 10 --first-seq 50 --last-seq 90
json "decide --json" 'd["decision"] == "restore" and d["reason"] == "CURSOR_EXPIRED" and d["resync"] is True and d["gap"] == 39' -- decide --stored-seq 10 --first-seq 50 --last-seq 90 --json
json "decide --json, from first" 'd["decision"] == "clear" and d["reason"] == "FULL_REBUILD" and d["resync"] is False' -- decide --replay-from-first --stored-seq 10 --json

echo "== export / import"
expect "export" 0 "^exported " -- export "$T/export" --log "$LOG"
expect "import" 0 "^imported " -- import "$T/export" "$T/imported"
expect "inspect the imported state" 0 "^position: +seq 12 " -- inspect --state "$T/imported"
fails "import into a non-empty directory" 2 "directory is not empty" -- import "$T/export" "$T/imported"
fails "import a missing export" 3 "import of '$T/nope'" -- import "$T/nope" "$T/imported2"
cp -r "$T/export" "$T/export-bad" && printf 'x' >>"$T/export-bad/data.mdb"
fails "import a damaged export" 4 "data.mdb does not match the manifest" -- import "$T/export-bad" "$T/imported3"
fails "export into a non-empty directory" 2 "directory is not empty" -- export "$T/export" --log "$LOG"

echo "== flag conflicts"
starts=(--replay-from-sequence=5 --replay-from-time=2026-01-01T00:00:00Z --replay-from-latest --replay-from-first)
for ((i = 0; i < 4; i++)); do
  for ((j = i + 1; j < 4; j++)); do
    a=${starts[i]%%=*} b=${starts[j]%%=*}
    fails "consume $a + $b" 2 "consume: $a and $b exclude each other" -- consume --log "$LOG" "${starts[i]}" "${starts[j]}"
  done
done
fails "decide with two starts" 2 "decide: --replay-from-latest and --replay-from-first exclude each other" -- decide --replay-from-latest --replay-from-first
fails "consume --keep-state + --clear-state" 2 "consume: --keep-state and --clear-state exclude each other" -- consume --log "$LOG" --keep-state --clear-state
fails "consume --scope + --filter" 2 "consume: --scope and --filter exclude each other" -- consume --log "$LOG" --scope eu --filter 'ops.>'
fails "replay --scope + --filter" 2 "replay: --scope and --filter exclude each other" -- replay --log "$LOG" --scope eu --filter 'ops.>'
fails "publish --data + --data-file" 2 "publish: --data and --data-file exclude each other" -- publish --log "$LOG" --scope a --kind b --op put --data x --data-file "$T/payload.json"
fails "publish --time + --no-time" 2 "publish: --time and --no-time exclude each other" -- publish --log "$LOG" --scope a --kind b --op put --time 1ns --no-time
fails "publish --batch + --scope" 2 "publish: --batch and --scope exclude each other" -- publish --log "$LOG" --batch --scope a
fails "publish --unacked without --batch" 2 "publish: --unacked goes with --batch" -- publish --log "$LOG" --scope a --kind b --op put --unacked "$T/u.txt"
fails "inspect --json + --keys" 2 "inspect: --json and --keys exclude each other" -- inspect --log "$LOG" --json --keys

echo "== bad input"
fails "unknown log URI" 2 "--log 'foo:bar': unknown log URI" -- info --log foo:bar
fails "nats:// with a bad port" 2 "--log 'nats://127.0.0.1:x/OPS': the port is not a number" -- info --log nats://127.0.0.1:x/OPS
fails "lmdb: with no path" 2 "--log 'lmdb:': the path is empty" -- replay --log lmdb:
fails "info on a missing log" 3 "no log there" -- info --log "lmdb:$T/missing"
fails "replay on a missing log" 3 "no log there" -- replay --log "lmdb:$T/missing"
fails "consume on a missing log" 3 "no log there" -- consume --log "lmdb:$T/missing" --exit-when-caught-up
fails "inspect a missing state" 3 "--state '$T/none': no state there" -- inspect --state "$T/none"
fails "inspect a store with nothing stored" 3 "nothing stored under --name 'other'" -- inspect --log "$LOG" --name other
fails "scope with a dot" 2 "--scope 'a\.b': a scope is one subject token \(no '\.', '\*', '>', spaces\)$" -- publish --log "$LOG" --scope a.b --kind k --op put
fails "scope filter with a dot" 2 "--scope 'a\.b': a scope is one subject token" -- replay --log "$LOG" --scope a.b
fails "kind with a space" 2 "--kind 'a b': a kind is one subject token" -- publish --log "$LOG" --scope a --kind 'a b' --op put
fails "scope wildcard" 2 "--scope '\*': a scope is one subject token" -- consume --log "$LOG" --scope '*'
fails "bad op" 2 "--op 'upsert': expected put, delete or an application op" -- publish --log "$LOG" --scope a --kind b --op upsert
fails "reserved op" 2 "--op '3': expected put, delete or an application op" -- publish --log "$LOG" --scope a --kind b --op 3
fails "bad id" 2 "--id 'not-a-uuid': expected a lowercase UUID" -- publish --log "$LOG" --scope a --kind b --op put --id not-a-uuid
fails "missing required flags" 2 "--scope, --kind and --op are required" -- publish --log "$LOG" --scope a
fails "missing data file" 3 "--data-file '$T/nofile': No such file" -- publish --log "$LOG" --scope a --kind b --op put --data-file "$T/nofile"
fails "bad time word" 2 "--replay-from-time 'yesterday': not a time" -- consume --log "$LOG" --replay-from-time yesterday
fails "bad time month" 2 "--until-time '2026-13-01T00:00:00Z': not a time" -- replay --log "$LOG" --until-time 2026-13-01T00:00:00Z
fails "bad time day" 2 "--until-time '2026-02-29T00:00:00Z': not a time" -- replay --log "$LOG" --until-time 2026-02-29T00:00:00Z
fails "time without offset" 2 "--stored-time '2026-11-23T10:00:00': not a time" -- decide --stored-seq 1 --stored-time 2026-11-23T10:00:00
fails "time without a unit" 2 "--time '1763890000': not a time" -- publish --log "$LOG" --scope a --kind b --op put --time 1763890000
fails "time finer than ns" 2 "not a time" -- decide --replay-from-time 2026-11-23T10:00:00.1234567891Z
fails "not a number" 2 "--until-seq 'abc': not a whole number" -- replay --log "$LOG" --until-seq abc
fails "sequence 0" 2 "--replay-from-sequence '0': out of range" -- consume --log "$LOG" --replay-from-sequence 0
fails "bad --timestamp-fallback" 2 "--timestamp-fallback 'maybe': expected one of wallclock\|skip" -- consume --log "$LOG" --timestamp-fallback maybe
fails "bad --poison" 2 "--poison 'ignore': expected one of stop\|skip" -- consume --log "$LOG" --poison ignore
fails "bad --mode" 2 "--mode 'fresh': expected one of auto\|clear\|keep" -- decide --mode fresh
fails "bad --name" 2 "--name 'a b': a store name is" -- inspect --log "$LOG" --name 'a b'
fails "bad --prefix" 2 "--prefix 'a\.\.b': a prefix is" -- replay --log "$LOG" --prefix a..b
fails "bad --filter" 2 "--filter 'ops\.>\.x': a filter is" -- replay --log "$LOG" --filter 'ops.>.x'
fails "stored-time without stored-seq" 2 "decide: --stored-time needs --stored-seq" -- decide --stored-time 1ns
fails "unknown option" 2 "replay: unknown option '--until'" -- replay --until 5
fails "option given twice" 2 "info: --log given twice" -- info --log "$LOG" --log "$LOG"
fails "option without its value" 2 "replay: --until-seq needs a value" -- replay --until-seq
fails "flag with a value" 2 "info: --json takes no value" -- info --json=yes
fails "extra argument" 2 "info: unexpected argument 'extra'" -- info extra
fails "missing argument" 2 "import: missing argument" -- import "$T/export"
fails "state dir is the log's" 2 "already open" -- consume --log "$LOG" --state "$T/log"

echo "== corrupt data"
cp -r "$T/log.state" "$T/corrupt.state"
if flip "$T/corrupt.state/data.mdb" OPSL 12; then ok; else bad "corrupting the store meta"; fi
fails "inspect a corrupt store" 4 "checksum mismatch" -- inspect --state "$T/corrupt.state"
fails "consume from a corrupt store" 4 "checksum mismatch" -- consume --log "$LOG" --state "$T/corrupt.state" --exit-when-caught-up
CLOG="lmdb:$T/clog"
for n in 1 2 3; do "$OPSTATE" publish --log "$CLOG" --scope p --kind k --key "k$n" --op put --data "MARKER-$n" >/dev/null; done
if flip "$T/clog/data.mdb" MARKER-2 0; then ok; else bad "corrupting an event in the log"; fi
STDOUT_OK=1 fails "consume stops at a corrupt log record (exit 4)" 4 "checksum mismatch" -- consume --log "$CLOG" --exit-when-caught-up
fails "replay stops at a corrupt log record (exit 4)" 4 "checksum mismatch" -- replay --log "$CLOG"
PLOG="lmdb:$T/plog"
"$OPSTATE" publish --log "$PLOG" --scope p --kind k --key k1 --op put --data "MARKER-1" >/dev/null
"$OPSTATE" publish --log "$PLOG" --scope p --kind k --key k2 --op 16 --data "not a KV op" --allow-app-op >/dev/null
"$OPSTATE" publish --log "$PLOG" --scope p --kind k --key k3 --op put --data "MARKER-3" >/dev/null
STDOUT_OK=1 fails "consume stops at a poison event (exit 5)" 5 "stopped at a poison event: sequence 2 \(id [0-9a-f-]{36}\): the KV apply rejected it" -- consume --log "$PLOG" --exit-when-caught-up
expect "the state before the poison event was kept" 0 "^position: +seq 1 " -- inspect --log "$PLOG"
op consume --log "$PLOG" --exit-when-caught-up --poison skip
if [[ $? -eq 0 ]] && grep -q "applied 1, skipped 1, poison 1" "$out" && grep -q "warning: skipped 1 poison event" "$err"; then ok; else bad "consume --poison skip"; fi
STDOUT_OK=1 fails "consume stops at an application op (exit 5)" 5 "stopped at a poison event: sequence 1 \(id [0-9a-f-]{36}\): the KV apply rejected it" -- consume --log "$APPLOG" --exit-when-caught-up
op replay --log "$PLOG"
if [[ $? -eq 0 ]] && grep -q "poison 1" "$out" && grep -q "1 poison events skipped" "$err"; then ok; else bad "replay counts a poison event"; fi

echo "== times at the ends of int64 nanoseconds read back"
expect "--until-time at the last nanosecond (RFC 3339)" 0 "^replayed" -- replay --log "$LOG" --until-time 2262-04-11T23:47:16.854775807Z
fails "one nanosecond later is not a time" 2 "not a time" -- replay --log "$LOG" --until-time 2262-04-11T23:47:16.854775808Z
expect "--until-time at the first nanosecond (RFC 3339)" 0 "^replayed 0 events" -- replay --log "$LOG" --until-time 1677-09-21T00:12:43.145224192Z
expect "--until-time -9223372036854775808ns" 0 "^replayed 0 events" -- replay --log "$LOG" --until-time -9223372036854775808ns
fails "one nanosecond earlier is not a time" 2 "not a time" -- replay --log "$LOG" --until-time -9223372036854775809ns

echo "== storage integrity and ownership"
expect "verify a log" 0 "^verified .*: 1 logs, 0 stores, [0-9]+ records" -- verify --log "$LOG"
expect "verify a state" 0 "^verified .*: 0 logs, [0-9]+ stores" -- verify --state "$T/log.state"
fails "verify a corrupt log record (exit 4)" 4 "checksum mismatch: data is corrupt at l:events:msgs, record 2" -- verify --log "$CLOG"
fails "verify a corrupt store meta (exit 4)" 4 "at s:default:meta" -- verify --state "$T/corrupt.state"
fails "info on a state directory is refused by name" 1 "holds a state store, not a log" -- info --log "lmdb:$T/log.state"
fails "publish into a state directory is refused by name" 1 "holds a state store, not a log" -- publish --log "lmdb:$T/log.state" --scope a --kind b --key c --op put --data 1
fails "a log directory as --state is refused by name" 1 "holds a log, not a state store" -- consume --log "$LOG" --state "$T/applog" --exit-when-caught-up
mkdir -p "$T/emptylog" && : >"$T/emptylog/data.mdb"
fails "an empty data.mdb is not a log (exit 3)" 3 "data.mdb is empty" -- consume --log "lmdb:$T/emptylog" --exit-when-caught-up
if [[ ! -e $T/emptylog/lock.mdb && ! -s $T/emptylog/data.mdb ]]; then ok; else bad "a refused empty log is left untouched"; fi
cp -r "$T/log" "$T/trunc" && truncate -s 12288 "$T/trunc/data.mdb"
fails "a truncated log is CORRUPT, not SIGBUS (exit 4)" 4 "truncated file" -- replay --log "lmdb:$T/trunc"
sum_before=$(cksum <"$T/log.state/data.mdb")
op inspect --state "$T/log.state" --keys && op info --log "$LOG" && op verify --state "$T/log.state"
if [[ $(cksum <"$T/log.state/data.mdb") == "$sum_before" ]]; then ok; else bad "inspect, info and verify change no byte"; fi
"$OPSTATE" consume --log "$LOG" --state "$T/held.state" >/dev/null 2>&1 &
holder=$!
for _ in $(seq 50); do [[ -s $T/held.state/data.mdb ]] && break; sleep 0.1; done
sleep 0.3
fails "a second consumer on one state is LOCKED, with the holder's pid" 1 "held by another writer process \(pid $holder\)" -- consume --log "$LOG" --state "$T/held.state" --exit-when-caught-up
kill -9 "$holder"; wait "$holder" 2>/dev/null
expect "a killed holder never blocks the next consumer" 0 "^stopped \(caught up\)" -- consume --log "$LOG" --state "$T/held.state" --exit-when-caught-up
if [[ $(id -u) -eq 0 ]] && mkdir -p "$T/full" && mount -t tmpfs -o size=256k tmpfs "$T/full" 2>/dev/null; then
  dd if=/dev/zero of="$T/full/fill" bs=4k count=64 2>/dev/null
  fails "creating a log on a full disk is NO_SPACE" 1 "no space left on the device" -- publish --log "lmdb:$T/full/log" --scope a --kind b --key c --op put --data 1
  if [[ ! -e $T/full/log/data.mdb ]]; then ok; else bad "a failed creation leaves no data.mdb"; fi
  rm -f "$T/full/fill"
  expect "after space is freed the log is created" 0 "at sequence 1 " -- publish --log "lmdb:$T/full/log" --scope a --kind b --key c --op put --data 1
  dd if=/dev/zero of="$T/full/fill" bs=4k count=1000 2>/dev/null
  seq 1 3000 | sed 's/.*/eu a k& put {"v":&}/' >"$T/big.txt"
  fails "a batch on a full disk is NO_SPACE, nothing appended" 1 "nothing appended .*no space left on the device" -- publish --batch --log "lmdb:$T/full/log" <"$T/big.txt"
  expect "the log holds what was committed before" 0 "messages: +1$" -- info --log "lmdb:$T/full/log"
  # a consumer whose state disk fills: its flushes fail with NO_SPACE, what
  # it committed stays, and once space is freed it goes on to the same state
  umount "$T/full" && mount -t tmpfs -o size=1m tmpfs "$T/full"
  head -n 5 "$T/big.txt" | "$OPSTATE" publish --batch --log "lmdb:$T/nslog" >/dev/null
  "$OPSTATE" consume --log "lmdb:$T/nslog" --state "$T/full/state" --exit-when-caught-up >/dev/null 2>&1
  tail -n +6 "$T/big.txt" | "$OPSTATE" publish --batch --log "lmdb:$T/nslog" >/dev/null
  expect "the state before the disk fills" 0 "^position: +seq 5 " -- inspect --state "$T/full/state"
  dd if=/dev/zero of="$T/full/fill" bs=4k count=1000 2>/dev/null
  op consume --log "lmdb:$T/nslog" --state "$T/full/state" --exit-when-caught-up --flush-every 500
  if [[ $? -eq 1 ]] && tail -n 1 "$err" | grep -q "no space left on the device" && grep -q "flush failed" "$err"; then ok
  else bad "a consumer on a full disk: flushes fail and go on, the final one stops with NO_SPACE"; fi
  expect "what it committed before is kept" 0 "^position: +seq 5 " -- inspect --state "$T/full/state"
  rm -f "$T/full/fill"
  expect "after space is freed the consumer goes on" 0 "position seq 3000 " -- consume --log "lmdb:$T/nslog" --state "$T/full/state" --exit-when-caught-up
  op replay --log "lmdb:$T/nslog" --json && python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["count"])' "$out" >"$T/want.keys" 2>/dev/null
  expect "and its state is the fold of the log" 0 "^keys: +$(cat "$T/want.keys") *$" -- inspect --state "$T/full/state"
  umount "$T/full"
else
  echo "skipped: full-disk checks need root and a tmpfs mount"
fi

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
