#!/usr/bin/env bash
# NATS cases of the opstate command-line tool (tools/opstate/) against a
# real nats-server this script starts (JetStream on, 127.0.0.1, a free port,
# a temp store dir; stopped by its PID at exit): every subcommand's happy
# path over nats://HOST:PORT/STREAM and nats://HOST:PORT/kv/BUCKET, a
# durable consumer, bad nats URIs (one line on stderr, exit 2), stream
# configuration conflicts (exit 1), a missing stream (3), no server (1), and
# every --json output checked with python3's json module. Builds
# $BUILD/opstate unless OPSTATE names a binary. Last line:
# "N passed, M failed"; exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."
source tests/cli_lib.sh
source scripts/nats_server.sh
T=$(mktemp -d "${TMPDIR:-/tmp}/opstate-cli-nats.XXXXXX")
cleanup() {
  nats_server_stop
  rm -rf "$T"
}
trap cleanup EXIT
exec </dev/null # a command that would read stdin by mistake gets nothing
passed=0 failed=0
out=$T/stdout err=$T/stderr
if ! nats_server_start "$T"; then
  echo "0 passed, 1 failed"
  exit 1
fi
PORT=$NATS_PORT
URL=$NATS_URL
LOG=$URL/OPS


# js OP...: talks to the server over the raw NATS protocol (independent of
# nats.c and the tool). OPs, run in order:
#   kv-create B          a KV bucket B (stream KV_B, history 5)
#   kv-put B K V         put K=V in it      kv-del B K   a delete marker
#   consumer-info S C    prints the JSON info of consumer C of stream S
#   stream-wait S        waits (up to 5 s) until stream S exists
#   stream-delete S      deletes stream S
#   stream-create S SUBJECT RETENTION MAX_MSGS DISCARD
#                        a stream as another NATS client would make it
#                        (RETENTION limits|workqueue|interest, DISCARD old|new)
#   stream-count S       prints its message count
#   stream-reach S N     waits (up to 10 s) until stream S holds N messages
#                        or more, and prints the count
#   stream-ids S         prints "MESSAGES DISTINCT-IDS": every message read
#                        through a push consumer, ids from Nats-Msg-Id
js() {
  python3 - "$PORT" "$@" <<'EOF'
import json, socket, sys, time
port, ops = int(sys.argv[1]), sys.argv[2:]
s = socket.create_connection(("127.0.0.1", port))
s.settimeout(30)  # never hang the suite: a stalled read fails the check instead
f = s.makefile("rb")
f.readline()  # INFO
s.sendall(b'CONNECT {"verbose":false,"headers":true,"no_responders":true}\r\nSUB _R.> 1\r\n')
def next_msg():
    """(sid, headers, body) of the next message; answers PINGs."""
    while True:
        line = f.readline()
        if not line:
            sys.exit("js: connection closed")
        if line.startswith(b"PING"):
            s.sendall(b"PONG\r\n")
        if line.startswith((b"MSG", b"HMSG")):
            parts = line.split()
            hlen = int(parts[-2]) if parts[0] == b"HMSG" else 0
            payload = f.read(int(parts[-1]) + 2)[:-2]
            return int(parts[2]), payload[:hlen], payload[hlen:]
def request(subject, body=b"", header=b""):
    if header:
        h = b"NATS/1.0\r\n" + header + b"\r\n\r\n"
        s.sendall(b"HPUB %s _R.a %d %d\r\n%s%s\r\n" % (subject.encode(), len(h), len(h) + len(body), h, body))
    else:
        s.sendall(b"PUB %s _R.a %d\r\n%s\r\n" % (subject.encode(), len(body), body))
    while True:
        sid, _, payload = next_msg()
        if sid == 1:
            break
    r = json.loads(payload or b"{}")
    if "error" in r and not subject.startswith("$JS.API.STREAM.INFO."):
        sys.exit("js: %s: %s" % (subject, r["error"]))
    return r
def read_ids(stream, total, sid):
    """(messages, distinct ids) from one push consumer over the whole stream."""
    subject = "_D.ids%d" % sid
    s.sendall(b"SUB %s %d\r\n" % (subject.encode(), sid))
    # the create request is sent without waiting for its reply: messages
    # may come before it, and each one counts (the reply is skipped below)
    body = json.dumps({"stream_name": stream, "config": {
        "deliver_subject": subject, "ack_policy": "none", "deliver_policy": "all"}}).encode()
    s.sendall(b"PUB $JS.API.CONSUMER.CREATE.%s _R.a %d\r\n%s\r\n" % (stream.encode(), len(body), body))
    seen, count, end = set(), 0, time.time() + 60
    while count < total and time.time() < end:
        try:
            got, headers, _ = next_msg()
        except (socket.timeout, OSError):
            break  # the counts then fail the check
        if got != sid:
            continue
        count += 1
        for h in headers.split(b"\r\n"):
            if h.lower().startswith(b"nats-msg-id:"):
                seen.add(h.split(b":", 1)[1].strip())
    s.sendall(b"UNSUB %d\r\n" % sid)  # a retry's consumer does not compete with this one's flow
    return count, len(seen)
def ids(stream):
    total = request("$JS.API.STREAM.INFO." + stream)["state"]["messages"]
    count, distinct = read_ids(stream, total, 2)
    if count < total:  # a push delivery that stalled (seen once under load): one more consumer
        count, distinct = read_ids(stream, total, 3)
    print(count, distinct)
arity = {"kv-create": 1, "kv-put": 3, "kv-del": 2, "consumer-info": 2, "stream-wait": 1, "stream-delete": 1,
         "stream-create": 5, "stream-count": 1, "stream-reach": 2, "stream-ids": 1, "pub": 3, "get-msg": 2}
while ops:
    op, n = ops[0], arity[ops[0]]
    a, ops = ops[1:n + 1], ops[n + 1:]
    if op == "kv-create":
        request("$JS.API.STREAM.CREATE.KV_" + a[0], json.dumps({
            "name": "KV_" + a[0], "subjects": ["$KV.%s.>" % a[0]], "max_msgs_per_subject": 5,
            "discard": "new", "allow_rollup_hdrs": True, "deny_delete": True, "allow_direct": True,
            "storage": "file", "num_replicas": 1}).encode())
    elif op == "kv-put":
        request("$KV.%s.%s" % (a[0], a[1]), a[2].encode())
    elif op == "kv-del":
        request("$KV.%s.%s" % (a[0], a[1]), header=b"KV-Operation: DEL")
    elif op == "pub":  # SUBJECT PAYLOAD HEADER ("-": none), acknowledged by the stream
        request(a[0], a[1].encode(), header=b"" if a[2] == "-" else a[2].encode())
    elif op == "get-msg":  # STREAM SEQ: the payload, then each header line
        import base64
        msg = request("$JS.API.STREAM.MSG.GET." + a[0], json.dumps({"seq": int(a[1])}).encode())["message"]
        print(base64.b64decode(msg.get("data", "")).decode())
        print(base64.b64decode(msg.get("hdrs", "")).decode().replace("\r\n", "\n").strip())
    elif op == "consumer-info":
        print(json.dumps(request("$JS.API.CONSUMER.INFO.%s.%s" % (a[0], a[1]))))
    elif op == "stream-wait":
        end = time.time() + 5
        while "error" in request("$JS.API.STREAM.INFO." + a[0]) and time.time() < end:
            time.sleep(0.02)
    elif op == "stream-delete":
        request("$JS.API.STREAM.DELETE." + a[0])
    elif op == "stream-create":
        request("$JS.API.STREAM.CREATE." + a[0], json.dumps({
            "name": a[0], "subjects": [a[1]], "retention": a[2], "max_msgs": int(a[3]), "discard": a[4],
            "storage": "file", "num_replicas": 1}).encode())
    elif op == "stream-count":
        print(request("$JS.API.STREAM.INFO." + a[0])["state"]["messages"])
    elif op == "stream-reach":
        end, n = time.time() + 10, 0
        while n < int(a[1]) and time.time() < end:
            n = request("$JS.API.STREAM.INFO." + a[0]).get("state", {}).get("messages", 0)
            time.sleep(0.002)
        print(n)
    else:
        ids(a[0])
EOF
}

echo "== help"
expect "--version names the NATS companion" 0 "opstate_nats 0\.[0-9]+\.[0-9]+, nats\.c " -- --version
expect "--help lists nats:// logs" 0 "nats://HOST\[:PORT\]/kv/BUCKET" -- --help
expect "publish --help: stream limits" 0 "^  --max-per-subject N" -- publish --help
expect "consume --help: --durable" 0 "^  --durable NAME" -- consume --help

echo "== publish"
expect "publish put (creates the stream)" 0 "^published ops\.eu\.order\.o-1 at sequence 1 " -- publish --log "$LOG" --scope eu --kind order --key o-1 --op put --data '{"qty":1}'
expect "publish a key with dots (escaped)" 0 "^published ops\.eu\.device\.10%2E0%2E0%2E1 at sequence 2 " -- publish --log "$LOG" --scope eu --kind device --key 10.0.0.1 --op put --data '{"temp":40}'
printf '{"from":"file"}' >"$T/payload.json"
expect "publish --data-file" 0 "at sequence 3 " -- publish --log "$LOG" --scope us --kind order --key o-2 --op put --data-file "$T/payload.json"
expect "publish delete" 0 "at sequence 4 " -- publish --log "$LOG" --scope eu --kind order --key o-1 --op delete
ID=0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b
expect "publish --id, --time" 0 "at sequence 5 \(id $ID\)" -- publish --log "$LOG" --scope us --kind order --key o-4 --op put --data '{"v":1}' --id "$ID" --time 2026-11-23T10:00:00Z
expect "publish the same --id again: duplicate (Nats-Msg-Id)" 0 "^duplicate: id $ID is already at sequence 5" -- publish --log "$LOG" --scope us --kind order --key o-4 --op put --data '{"v":1}' --id "$ID"
expect "publish --expect-seq 0 on a new subject" 0 "at sequence 6 " -- publish --log "$LOG" --scope us --kind order --key o-5 --op put --data 1 --expect-seq 0
fails "publish --expect-seq conflict (exit 1)" 1 "--expect-seq 0: conflict on 'ops\.us\.order\.o-5'" -- publish --log "$LOG" --scope us --kind order --key o-5 --op put --data 2 --expect-seq 0
expect "publish --expect-seq with the right sequence" 0 "at sequence 7 " -- publish --log "$LOG" --scope us --kind order --key o-5 --op put --data 2 --expect-seq 6
printf '# scope kind key op data\n\neu session s-1 put {"user":"ann"}\nus session s-2 put {"user":"bob"}\neu session s-1 delete\n' >"$T/batch.txt"
op publish --log "$LOG" --batch <"$T/batch.txt"
if [[ $? -eq 0 ]] && grep -q "^published 3 events (0 duplicates, 0 not acknowledged, 0 refused) .* last sequence 10$" "$out"; then ok; else bad "publish --batch (async, acks counted)"; fi
op publish --log "$LOG" --batch <"$T/batch.txt"
if [[ $? -eq 0 ]] && grep -q "^published 0 events (3 duplicates, 0 not acknowledged, 0 refused) .* last sequence 10$" "$out"; then ok; else bad "publish --batch of the same input again: all duplicates (derived ids)"; fi
if [[ $(js stream-count OPS) -eq 10 ]]; then ok; else bad "the same batch twice: the stream holds it once"; fi
printf 'ap session s-3 put {}\nap session s-4 put {}\nbad.scope order k put x\nap session s-5 put {}\n' >"$T/badbatch.txt"
"$OPSTATE" publish --log "$URL/BATCHBAD" --prefix bb --batch <"$T/badbatch.txt" >"$out" 2>"$err"
if [[ $? -eq 2 && $(wc -l <"$err") -eq 1 && ! -s $out ]] && grep -q "^opstate: stdin line 3: scope 'bad.scope'" "$err"; then ok; else bad "publish --batch, a bad line 3: exit 2, one line"; fi
fails "publish --batch, a bad line: nothing was sent (not even the stream made)" 3 "no stream 'BATCHBAD'" -- info --log "$URL/BATCHBAD"
"$OPSTATE" publish --log "$LOG" --prefix ops --batch <"$T/badbatch.txt" >"$out" 2>"$err"
if [[ $? -eq 2 && $(js stream-count OPS) -eq 10 ]]; then ok; else bad "publish --batch, a bad line 3, to an existing stream: nothing appended"; fi
seq 1 3000 | awk '{ printf "s k key%d put {\"n\":%d}\n", $1 % 97, $1 }' >"$T/many.txt"
op publish --log "$URL/MANY" --prefix many --batch <"$T/many.txt"
if [[ $? -eq 0 ]] && grep -q "^published 3000 events (0 duplicates, 0 not acknowledged, 0 refused) .* last sequence 3000$" "$out"; then ok; else bad "publish --batch, 3000 events"; fi
printf '# again\n' | cat - "$T/many.txt" >"$T/many2.txt"
op publish --log "$URL/MANY" --prefix many --batch <"$T/many2.txt"
if [[ $? -eq 0 ]] && grep -q "^published 3000 events (0 duplicates," "$out"; then ok; else bad "publish --batch, another input (one line more): other ids"; fi
printf 'id=%s s k key1 put {"explicit":1}\nid=%s s k key1 put {"explicit":2}\n' "$ID" "$ID" >"$T/ids.txt"
op publish --log "$URL/MANY" --prefix many --batch <"$T/ids.txt"
if [[ $? -eq 0 ]] && grep -q "^published 1 events (1 duplicates, 0 not acknowledged, 0 refused) .* last sequence 6001$" "$out"; then ok; else bad "publish --batch, id= given: the second line with the same id is a duplicate"; fi

# Events the server refuses are counted, reported and written to --unacked:
# a stream another client made with at most 2 messages, discard new.
js stream-create LIMITED 'lt.>' limits 2 new 2>>"$err"
printf 'a k k1 put 1\na k k2 put 2\na k k3 put 3\n' >"$T/three.txt"
"$OPSTATE" publish --log "$URL/LIMITED" --prefix lt --batch --unacked "$T/refused.txt" <"$T/three.txt" >"$out" 2>"$err"
rc=$?
if [[ $rc -eq 1 && $(wc -l <"$err") -eq 1 ]] && grep -q "^published 2 events (0 duplicates, 0 not acknowledged, 1 refused) " "$out" &&
  grep -Eq "^opstate: publish --batch to '$URL/LIMITED': 1 events refused; the first, line 3 \(id [0-9a-f-]{36}\): .*JetStream error [0-9]+$" "$err" &&
  grep -Eq "^id=[0-9a-f-]{36} time=[0-9]+ns a k k3 put 3$" "$T/refused.txt" && [[ $(wc -l <"$T/refused.txt") -eq 1 ]]; then
  ok
else
  bad "publish --batch: refused events are counted, reported and written to --unacked (exit $rc)"
fi

echo "== stream configuration"
fails "another prefix on an existing stream: conflict (exit 1)" 1 "stream 'OPS' differs from what publish asks \(subjects 'other\.>'.*\): existing stream's subjects do not cover <prefix>\.>; publish never changes a stream$" -- publish --log "$LOG" --prefix other --scope a --kind b --op put
fails "other limits on an existing stream: conflict (exit 1)" 1 "existing stream has another max_per_subject; publish never changes a stream$" -- publish --log "$LOG" --max-per-subject 5 --scope a --kind b --op put
fails "--batch on a conflicting stream (exit 1)" 1 "existing stream has another max_messages" -- publish --log "$LOG" --max-messages 100 --batch
fails "a new stream whose subjects overlap another's (exit 1)" 1 "cannot create stream 'OTHER': subjects 'ops\.>' overlap another stream's" -- publish --log "$URL/OTHER" --scope a --kind b --op put
expect "a new stream with limits" 0 "at sequence 1 " -- publish --log "$URL/LIM" --prefix lim --max-per-subject 2 --max-messages 1000 --scope a --kind b --key k --op put --data 1
expect "the same limits again" 0 "at sequence 2 " -- publish --log "$URL/LIM" --prefix lim --max-per-subject 2 --max-messages 1000 --scope a --kind b --key k --op put --data 2
expect "no limits asked: the stream's own are used" 0 "at sequence 3 " -- publish --log "$URL/LIM" --prefix lim --scope a --kind b --op put
expect "--replicas 3 on an existing R1 stream: used as it is" 0 "at sequence 4 " -- publish --log "$URL/LIM" --prefix lim --replicas 3 --scope a --kind b --op put
fails "--replicas 3 for a new stream on one server: the server refuses (exit 1)" 1 "--log '$URL/R3': ensuring stream 'R3': " -- publish --log "$URL/R3" --prefix r3 --replicas 3 --scope a --kind b --op put
expect "--replicas 1 for a new stream" 0 "at sequence 1 " -- publish --log "$URL/R1" --prefix r1 --replicas 1 --scope a --kind b --op put
fails "--replicas 6 (exit 2)" 2 "--replicas '6': out of range" -- publish --log "$URL/R1" --prefix r1 --replicas 6 --scope a --kind b --op put
js stream-create WQ 'wq.>' workqueue -1 old stream-create WIDE 'wide.>' limits -1 old 2>>"$err"
fails "a work-queue stream: refused, naming the retention (exit 1)" 1 "stream 'WQ' differs .*: existing stream has another retention policy" -- publish --log "$URL/WQ" --prefix wq --scope a --kind b --op put
expect "a stream wider than <prefix>.>: used as it is" 0 "^published wide\.sub\.a\.b at sequence 1 " -- publish --log "$URL/WIDE" --prefix wide.sub --scope a --kind b --op put
fails "stream limits on an lmdb: log (exit 2)" 2 "--max-per-subject: only for nats:// logs, not --log 'lmdb:" -- publish --log "lmdb:$T/lmdblog" --max-per-subject 2 --scope a --kind b --op put
fails "--replicas on an lmdb: log (exit 2)" 2 "--replicas: only for nats:// logs, not --log 'lmdb:" -- publish --log "lmdb:$T/lmdblog" --replicas 3 --scope a --kind b --op put

echo "== info"
expect "info" 0 "^last: +seq 10 at 20[0-9-]+T[0-9:.]{18}Z$" -- info --log "$LOG"
json "info --json" 'd["last_seq"] == 10 and d["first_seq"] == 1 and d["messages"] == 10 and d["epoch"] > 0 and d["log"].endswith("/OPS")' -- info --log "$LOG" --json
fails "info on a missing stream (exit 3)" 3 "--log '$URL/NOPE': no stream 'NOPE' on $URL$" -- info --log "$URL/NOPE"

echo "== replay"
expect "replay" 0 "^replayed 10 events up to sequence 10 .*: 5 keys; position seq 10 " -- replay --log "$LOG"
json "replay --json" 'd["applied"] == 10 and d["count"] == 5 and len(d["items"]) == 5 and d["position"]["seq"] == 10' -- replay --log "$LOG" --json
json "replay --json --until-seq 4" 'd["end_seq"] == 4 and d["count"] == 2 and d["position"]["seq"] == 4' -- replay --log "$LOG" --json --until-seq 4
json "replay --json --max-events 2" 'd["applied"] == 2 and d["count"] == 2' -- replay --log "$LOG" --json --max-events 2
json "replay --json --scope us (a server-side filter)" 'd["applied"] == 5 and all(i["key"][0] == "us" and i["key_encoding"] == "utf8" for i in d["items"])' -- replay --log "$LOG" --json --scope us
json "replay --json --filter ops.*.order.>" 'd["count"] == 3' -- replay --log "$LOG" --json --filter 'ops.*.order.>'
json "replay --json --until-time before the log" 'd["applied"] == 0 and d["items"] == []' -- replay --log "$LOG" --json --until-time 2000-01-01T00:00:00Z
fails "replay of a missing stream (exit 3)" 3 "no stream 'NOPE'" -- replay --log "$URL/NOPE"

echo "== consume"
S=(--state "$T/ops.state")
expect "consume: nothing stored" 0 "^decision: restore \[NOTHING_STORED\] .*; log seq 1\.\.10$" -- consume --log "$LOG" "${S[@]}" --exit-when-caught-up
"$OPSTATE" publish --log "$LOG" --scope eu --kind order --key o-6 --op put --data '{"late":true}' >/dev/null
expect "consume: resume restores the stored position" 0 "^decision: restore \[RESUME\] resume after the stored position; stored position seq 10 at [^;]* restored; resume: ok; position seq 10 " -- consume --log "$LOG" "${S[@]}" --exit-when-caught-up
if grep -q "^stopped (caught up): applied 1, .*position seq 11 " "$out"; then ok; else bad "consume: the restart applies the new event only"; fi
"$OPSTATE" replay --log "$LOG" --json >"$T/replay.json"
json "inspect --json equals replay --json" "d['items'] == json.load(open('$T/replay.json'))['items'] and d['position']['seq'] == 11" -- inspect --state "$T/ops.state" --json
expect "consume --replay-from-first" 0 "^decision: clear \[FULL_REBUILD\] .*stored position seq 11 at [^;]* discarded" -- consume --log "$LOG" "${S[@]}" --exit-when-caught-up --replay-from-first
expect "consume --replay-from-latest" 0 "^decision: clear \[LATEST\] .*position seq 11 " -- consume --log "$LOG" "${S[@]}" --exit-when-caught-up --replay-from-latest
expect "consume --scope eu, own store" 0 "applied 6, " -- consume --log "$LOG" "${S[@]}" --name eu-only --scope eu --exit-when-caught-up
(cd "$T" && "$OPSTATE" consume --log "$LOG" --exit-when-caught-up) >"$out" 2>"$err"
if [[ $? -eq 0 && -d $T/opstate-data/nats-127.0.0.1-$PORT-OPS.state ]] && grep -q "applied 11, " "$out"; then ok; else bad "consume with the default state dir (./opstate-data/nats-HOST-PORT-STREAM.state)"; fi
(cd "$T" && "$OPSTATE" inspect --log "$LOG") >"$out" 2>"$err"
if [[ $? -eq 0 ]] && grep -q "^position: *seq 11 " "$out"; then ok; else bad "inspect --log nats:// finds the default state dir"; fi
"$OPSTATE" consume --log "$LOG" --state "$T/sig.state" --flush-interval-ms 50 >"$out" 2>"$err" &
pid=$!
sleep 1
kill -TERM "$pid"
wait "$pid"
if [[ $? -eq 0 ]] && grep -q "^stopped (SIGTERM): applied 11, " "$out"; then ok; else bad "consume over nats:// stops on SIGTERM with a final flush"; fi
expect "the state SIGTERM flushed" 0 "^position: +seq 11 " -- inspect --state "$T/sig.state"
fails "consume of a missing stream (exit 3)" 3 "no stream 'NOPE'" -- consume --log "$URL/NOPE" --state "$T/nope.state" --exit-when-caught-up

echo "== consume --durable"
D=(--state "$T/durable.state" --durable proj)
expect "durable: from the start" 0 "^stopped \(caught up\): applied 11, .*position seq 11 " -- consume --log "$LOG" "${D[@]}" --exit-when-caught-up
"$OPSTATE" publish --log "$LOG" --scope us --kind order --key o-7 --op put --data '{"d":1}' >/dev/null
expect "durable: restart resumes" 0 "^decision: restore \[RESUME\] .*stored position seq 11 " -- consume --log "$LOG" "${D[@]}" --exit-when-caught-up
if grep -q "^stopped (caught up): applied 1, .*position seq 12 " "$out"; then ok; else bad "durable: the restart applies the new event only"; fi
js consumer-info OPS proj >"$out" 2>"$err"
# (the next run re-creates the consumer at its start: the stored position
# is the truth, not the server's ack floor)
if python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); sys.exit(0 if d["ack_floor"]["stream_seq"] == 12 else 1)' "$out" 2>>"$err"; then
  ok
else
  bad "durable: the server's ack floor is the applied position"
fi
expect "durable: a third run has nothing to do" 0 "applied 0, .*position seq 12 " -- consume --log "$LOG" "${D[@]}" --exit-when-caught-up
fails "--durable with a bad name (exit 2)" 2 "--durable 'a\.b': a durable consumer name is 1\.\.64 of" -- consume --log "$LOG" --durable a.b
fails "--durable on an lmdb: log (exit 2)" 2 "--durable: only for nats:// logs" -- consume --log "lmdb:$T/lmdblog" --durable proj

echo "== KV bucket"
if js kv-create cfg kv-put cfg app.name shop kv-put cfg db.url pg://db kv-put cfg db.pool 10 kv-put cfg db.pool 20 \
  kv-del cfg app.name kv-put cfg a.b.c dotted 2>"$err"; then ok; else bad "creating a KV bucket (raw protocol)"; fi
KV=$URL/kv/cfg
expect "info of a bucket" 0 "^last: +seq 6 at " -- info --log "$KV"
json "replay --json of a bucket: puts, overwrites, deletes" 'd["count"] == 3 and {tuple(i["key"]) for i in d["items"]} == {("cfg", "kv", "db.url"), ("cfg", "kv", "db.pool"), ("cfg", "kv", "a.b.c")} and d["position"]["seq"] == 6' -- replay --log "$KV" --json
expect "consume a bucket" 0 "^stopped \(caught up\): applied 6, .*position seq 6 " -- consume --log "$KV" --state "$T/kv.state" --exit-when-caught-up
js kv-put cfg db.pool 30 kv-del cfg db.url 2>>"$err"
expect "consume a bucket: resume after the stored revision" 0 "applied 2, .*position seq 8 " -- consume --log "$KV" --state "$T/kv.state" --exit-when-caught-up
expect "inspect the bucket's mirror" 0 "^cfg kv db\.pool	30$" -- inspect --state "$T/kv.state" --keys
fails "publish to a bucket: read-only (exit 2)" 2 "--log '$KV': a KV bucket is read-only here" -- publish --log "$KV" --scope a --kind b --op put
fails "--scope on a bucket (exit 2)" 2 "a KV bucket takes no --scope or --filter" -- replay --log "$KV" --scope eu
fails "a missing bucket (exit 3)" 3 "no KV bucket 'nokv' on $URL$" -- info --log "$URL/kv/nokv"

echo "== bad nats URIs (exit 2, one line)"
fails "no stream" 2 "--log 'nats://127\.0\.0\.1:$PORT': no stream named \(use nats://HOST\[:PORT\]\[,HOST\[:PORT\]\.\.\.\]/STREAM, nats:///STREAM with --server or NATS_URL" -- info --log "nats://127.0.0.1:$PORT"
fails "empty stream" 2 "stream '': a name is 1\.\.64 of" -- info --log "$URL/"
fails "stream with a dot" 2 "stream 'a\.b': a name is 1\.\.64 of A-Z a-z 0-9 _ -" -- replay --log "$URL/a.b"
fails "stream with a wildcard" 2 "stream '\*': a name is" -- consume --log "$URL/*"
fails "empty bucket" 2 "bucket '': a name is" -- info --log "$URL/kv/"
fails "port not a number" 2 "the port is not a number 1\.\.65535" -- info --log nats://127.0.0.1:x/OPS
fails "port out of range" 2 "the port is not a number 1\.\.65535" -- publish --log nats://127.0.0.1:65536/OPS --scope a --kind b --op put
fails "no host" 2 "expected a host name or IPv4 address after nats://" -- info --log nats://:4222/OPS
fails "credentials are refused, not echoed" 2 "--log: credentials in a server URL are not supported \(nor echoed\): use NATS_USER and NATS_PASSWORD, or NATS_CREDS$" -- info --log nats://user:s3cret@127.0.0.1:4222/OPS
fails "the scheme needs //" 2 "unknown log URI" -- info --log nats:127.0.0.1/OPS
fails "a bad URI with the default state dir (inspect)" 2 "stream 'a\.b': a name is" -- inspect --log "$URL/a.b"

echo "== a stream other clients wrote, and what opstate writes read by them (the wire format)"
js stream-create PLAIN 'plain.>' limits 1000 old
# written with plain nats.c (tests/clients/plain_nats_pub.c, nothing of opstate)
if cc -std=c99 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Werror tests/clients/plain_nats_pub.c -lnats -o "$T/plain_nats_pub" &&
  "$T/plain_nats_pub" "$URL" plain.site1.host.raw '{"rate":5}' 'Nats-Msg-Id: order-1' plain.site1.host.t2 hello - \
    plain.site1.host.raw '' 'KV-Operation: DEL' plain.site1.host.cfg '{"on":true}' - >"$T/plain.seqs" &&
  [[ $(tr '\n' ' ' <"$T/plain.seqs") == "1 2 3 4 " ]]; then ok; else bad "plain nats.c publishes 4 messages (JSON, text, a DEL, two without ids)"; fi
expect "consume a stream a plain client wrote (no ids, a DEL, JSON and text)" 0 "applied 4, .*poison 0" -- consume --log "$URL/PLAIN" --prefix plain --state "$T/plain.state" --exit-when-caught-up
expect "get a text value from that state" 0 "^hello$" -- get --log "$URL/PLAIN" --state "$T/plain.state" --scope site1 --kind host --key t2
fails "get the deleted key (exit 3)" 3 "get: no key 'site1' 'host' 'raw'" -- get --log "$URL/PLAIN" --state "$T/plain.state" --scope site1 --kind host --key raw
op tail --log "$URL/PLAIN"
if [[ $? -eq 0 ]] && jq -se 'map(.key[2]) == ["raw", "t2", "raw", "cfg"] and (map(.op) == ["put", "put", "delete", "put"]) and .[0].data == "{\"rate\":5}"' "$out" >/dev/null; then ok; else bad "tail of a plain client's stream (jq)"; cat "$out"; fi
js stream-create SENS 'sensors.>' limits 1000 old
js pub sensors.temp.room1 21 - pub sensors.temp.room2 19 - pub sensors.temp.room1 22 -
json "--subject-template maps another shape (scope: the stream's name)" 'd["count"] == 2 and {tuple(i["key"]): i["value"] for i in d["items"]} == {("SENS", "temp", "room1"): "22", ("SENS", "temp", "room2"): "19"}' -- replay --log "$URL/SENS" --subject-template 'sensors.{kind}.{key}' --json
fails "a template with {key} not last (exit 2)" 2 "invalid argument" -- replay --log "$URL/SENS" --subject-template '{key}.{kind}'
json "--filter with a template: a NATS filter on the stream's own subjects" 'd["count"] == 1 and d["items"][0]["value"] == "19"' -- replay --log "$URL/SENS" --subject-template 'sensors.{kind}.{key}' --filter 'sensors.*.room2' --json
fails "--scope with a template (exit 2)" 2 "--scope, --kind and --key take opstate's subjects, not --subject-template's" -- replay --log "$URL/SENS" --subject-template 'sensors.{kind}.{key}' --scope SENS
expect "get --replay with a template (the whole stream, then the key)" 0 "^22$" -- get --log "$URL/SENS" --subject-template 'sensors.{kind}.{key}' --replay --scope SENS --kind temp --key room1
expect "the README's mirror: consume with a template" 0 "applied 3, .*poison 0" -- consume --log "nats://127.0.0.1:$PORT/SENS" --subject-template 'sensors.{kind}.{key}' --state "$T/sensors" --exit-when-caught-up
expect "the README's mirror: get from its state" 0 "^22$" -- get --state "$T/sensors" --scope SENS --kind temp --key room1
fails "--subject-template on an lmdb: log (exit 2)" 2 "--subject-template" -- replay --log "lmdb:$T/lmdblog" --subject-template 'x.{key}'
op publish --log "$URL/PLAIN" --prefix plain --scope site1 --kind host --key 10.0.0.1 --op put --data '{"rate":7}'
js get-msg PLAIN 5 >"$T/plain.msg" 2>>"$err"
if [[ $(head -n 1 "$T/plain.msg") == '{"rate":7}' ]] && grep -q "^Opstate-Op: put" "$T/plain.msg" && grep -q "^Nats-Msg-Id: " "$T/plain.msg"; then ok; else bad "what opstate publishes is the plain payload to a plain client, op and id in headers"; cat "$T/plain.msg"; fi

echo "== several servers, --server, NATS_URL"
NOPORT=$(nats_free_port)
DEAD=127.0.0.1:$NOPORT
expect "two servers in the URI, the first dead: connects through the second" 0 "^messages: +[0-9]+$" -- info --log "nats://$DEAD,127.0.0.1:$PORT/OPS"
expect "nats:///STREAM with --server" 0 "^messages: +[0-9]+$" -- info --log nats:///OPS --server "$URL"
expect "--server with several, nats:// optional, the first dead" 0 "^messages: +[0-9]+$" -- info --log nats:///OPS --server "$DEAD,nats://127.0.0.1:$PORT"
if NATS_URL="nats://$DEAD,$URL" op info --log nats:///OPS && grep -q "^messages: " "$out"; then ok; else bad "nats:///STREAM with NATS_URL (two, the first dead)"; fi
expect "-s and --stream, as the nats CLI spells them" 0 "^messages: +[0-9]+$" -- info -s "$DEAD,$URL" --stream OPS
expect "--stream after a --log that names servers only" 0 "^messages: +[0-9]+$" -- info --log "nats://127.0.0.1:$PORT" --stream OPS
if NATS_URL="$URL" op info --stream OPS && grep -q "^messages: " "$out"; then ok; else bad "--stream alone: servers from NATS_URL"; fi
fails "--stream with a log that names another stream (exit 2)" 2 "--stream 'OPS': only with a nats://SERVERS log that names no stream" -- info --log "nats://127.0.0.1:$PORT/OTHER" --stream OPS
if NATS_URL="nats://$DEAD" op info --log nats:///OPS --server "$URL" && grep -q "^messages: " "$out"; then ok; else bad "--server wins over NATS_URL"; fi
if NATS_URL="nats://$DEAD" op info --log "$LOG" && grep -q "^messages: " "$out"; then ok; else bad "servers in the URI win over NATS_URL"; fi
if NATS_URL="nats://$DEAD" op info --log nats:///OPS; [[ $? -eq 1 ]] && grep -q "cannot connect to nats://$DEAD: " "$err"; then ok; else bad "NATS_URL is used (a dead one: exit 1, named)"; fi
printf 'ns session s-9 put {}\n' | NATS_URL="$URL" "$OPSTATE" publish --log nats:///SRV --prefix srv --batch >"$out" 2>"$err"
if [[ $? -eq 0 ]] && grep -q "^published 1 events " "$out"; then ok; else bad "publish --batch to nats:///STREAM with NATS_URL"; fi
(cd "$T" && "$OPSTATE" consume --log "nats://127.0.0.1:$PORT,$DEAD/OPS" --exit-when-caught-up) >"$out" 2>"$err"
if [[ $? -eq 0 ]] && grep -q "^decision: restore \[RESUME\]" "$out"; then ok; else bad "several servers: the default state dir is named after the first (the one-server dir is found)"; fi
(cd "$T" && "$OPSTATE" inspect --log nats:///OPS --server "127.0.0.1:$PORT") >"$out" 2>"$err"
if [[ $? -eq 0 ]] && grep -q "^position: " "$out"; then ok; else bad "nats:///STREAM --server: the same default state dir"; fi
fails "--server with servers in the URI (exit 2)" 2 "--server: --log '$LOG' names its servers already \(use nats:///OPS with --server\)$" -- info --log "$LOG" --server "$URL"
fails "--server on an lmdb: log (exit 2)" 2 "--server: only for nats:// logs, not --log 'lmdb:" -- info --log "lmdb:$T/lmdblog" --server "$URL"
fails "--server on an lmdb: log, default state dir (exit 2)" 2 "--server: only for nats:// logs, not --log 'lmdb:" -- inspect --log "lmdb:$T/lmdblog" --server "$URL"
fails "--server with credentials: refused, not echoed" 2 "--server: credentials in a server URL are not supported \(nor echoed\): use NATS_USER and NATS_PASSWORD, or NATS_CREDS$" -- info --log nats:///OPS --server "nats://me:s3cret@127.0.0.1:$PORT"
if grep -q s3cret "$err"; then bad "a --server password is echoed"; else ok; fi
if NATS_URL="ws://127.0.0.1:$PORT" op info --log nats:///OPS; [[ $? -eq 2 && $(wc -l <"$err") -eq 1 ]] && grep -q "^opstate: NATS_URL 'ws://127.0.0.1:$PORT': only nats:// or tls:// servers" "$err"; then ok; else bad "NATS_URL ws://: exit 2, one line"; fi
fails "--server with an empty item (exit 2)" 2 "--server 'a,,b': expected a host name or IPv4 address \(use \[nats://\|tls://\]HOST\[:PORT\], comma-separated\)$" -- info --log nats:///OPS --server a,,b
fails "--server with a bad port (exit 2)" 2 "--server '127\.0\.0\.1:0': the port is not a number 1\.\.65535" -- info --log nats:///OPS --server 127.0.0.1:0
fails "an empty server in the URI (exit 2)" 2 "expected a host name or IPv4 address after nats://" -- info --log "nats://127.0.0.1:$PORT,/OPS"
many=$(printf 'h%d,' $(seq 1 33))
fails "33 servers (exit 2)" 2 "more than 32 servers$" -- info --log "nats://${many%,}/OPS"

echo "== no server (exit 1)"
NOPORT=$(nats_free_port)
fails "info with no server" 1 "--log 'nats://127\.0\.0\.1:$NOPORT/OPS': cannot connect to nats://127\.0\.0\.1:$NOPORT: I/O error \(connect: " -- info --log "nats://127.0.0.1:$NOPORT/OPS"
fails "publish with no server" 1 "cannot connect to" -- publish --log "nats://127.0.0.1:$NOPORT/OPS" --scope a --kind b --op put

echo "== publish --batch through a server kill -9 (retry: every line once)"
# restart_server: nats-server again on the same port and store (after a kill).
restart_server() {
  local i
  nats-server -js -a 127.0.0.1 -p "$PORT" -sd "$T/js" >>"$T/nats-server.log" 2>&1 &
  NATS_PID=$!
  for ((i = 0; i < 100; i++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && return 0
    sleep 0.05
  done
  return 1
}
N=50000
seq 1 $N | awk '{ printf "s k key%d put {\"n\":%d}\n", $1 % 997, $1 }' >"$T/kill.txt"
js stream-reach KILL 2000 >"$T/reached" 2>>"$err" & # watching before the publish starts
watcher=$!
sleep 0.3
"$OPSTATE" publish --log "$URL/KILL" --prefix kill --batch --ack-wait-ms 2000 --unacked "$T/kill-retry.txt" <"$T/kill.txt" >"$out" 2>"$err" &
pid=$!
wait "$watcher" # the server has stored some: kill -9 it
{ kill -9 "$NATS_PID" && wait "$NATS_PID"; } 2>/dev/null
n=$(cat "$T/reached")
restart_server || bad "nats-server did not restart on port $PORT"
wait "$pid"
rc=$?
echo "    (killed at $n stored; publish exit $rc: $(head -c 160 "$out"))"
if [[ ($rc -eq 1 && -s $T/kill-retry.txt) || ($rc -eq 0 && ! -s $T/kill-retry.txt) ]] && grep -q "^published " "$out" &&
  [[ $(wc -l <"$T/kill-retry.txt") -eq $(sed -n 's/.* \([0-9]*\) not acknowledged.*/\1/p' "$out") ]]; then
  ok
else
  bad "publish --batch killed mid-way: a count, and the unacknowledged lines in --unacked (exit $rc)"
fi
cp "$T/kill-retry.txt" "$T/kill-retry-input.txt"
op publish --log "$URL/KILL" --prefix kill --batch --unacked "$T/kill-retry.txt" <"$T/kill-retry-input.txt"
if [[ $? -eq 0 && ! -s $T/kill-retry.txt ]]; then ok; else bad "publish --batch of the --unacked file after the restart"; fi
op publish --log "$URL/KILL" --prefix kill --batch <"$T/kill.txt"
if [[ $? -eq 0 ]] && grep -q "^published 0 events ($N duplicates, 0 not acknowledged, 0 refused)" "$out"; then ok; else bad "publish --batch of the whole input again: all duplicates"; fi
read -r msgs distinct < <(js stream-ids KILL 2>>"$err")
if [[ $msgs -eq $N && $distinct -eq $N ]]; then ok; else bad "after a kill -9 and the retries the stream holds every line once ($msgs messages, $distinct ids, $N lines)"; fi

echo "== authentication and TLS from the environment (servers of their own)"
nats_server_stop
mkdir -p "$T/auth"
if nats_server_start "$T/auth" --user opstate --pass 's3cret-pw'; then
  AUTH=$NATS_URL/OPS
  fails "no NATS_USER: refused (exit 1), the URL named" 1 "cannot connect to $NATS_URL: " -- info --log "$AUTH"
  if NATS_USER=opstate NATS_PASSWORD=wrong-pw op info --log "$AUTH"; then bad "a wrong password connects"
  elif grep -q "wrong-pw" "$err"; then bad "the password is echoed"; else ok; fi
  if NATS_USER=opstate NATS_PASSWORD=s3cret-pw op publish --log "$AUTH" --scope a --kind b --key k --op put --data v &&
    grep -q "sequence 1" "$out"; then ok; else bad "NATS_USER + NATS_PASSWORD: publish"; cat "$err"; fi
  if NATS_USER=opstate NATS_PASSWORD=s3cret-pw op info -s "${NATS_URL/nats:/tls:}" --stream OPS; then
    bad "a tls:// server without TLS is used in plain text"
  elif [[ $? -eq 1 ]]; then ok; else bad "tls:// to a server without TLS: exit 1"; fi
  nats_server_stop
else bad "a nats-server with --user/--pass did not start"; fi
mkdir -p "$T/tls"
pki=$T/pki
mkdir -p "$pki"
if bash scripts/test_pki.sh "$pki" &&
  nats_server_start "$T/tls" --tls --tlscert "$pki/server.pem" --tlskey "$pki/server.key" --tlsverify --tlscacert "$pki/ca.pem"; then
  TLS=$NATS_URL/OPS
  fails "TLS required, none asked (exit 1)" 1 "cannot connect to $NATS_URL: " -- info --log "$TLS"
  if NATS_CA=$pki/other.pem NATS_CERT=$pki/client.pem NATS_KEY=$pki/client.key op info --log "$TLS"; then
    bad "a server certificate from another CA is trusted"; else ok; fi
  if NATS_CA=$pki/ca.pem op info --log "$TLS"; then bad "no client certificate, yet admitted"; else ok; fi
  if NATS_CA=$pki/ca.pem NATS_CERT=$pki/client.pem op info --log "$TLS"; then bad "NATS_CERT without NATS_KEY accepted"
  elif [[ $? -eq 2 ]] && grep -q "tls_cert and tls_key go together" "$err"; then ok; else bad "NATS_CERT without NATS_KEY: exit 2, one line"; cat "$err"; fi
  if NATS_CA=$pki/ca.pem NATS_CERT=$pki/client.pem NATS_KEY=$pki/client.key \
    op publish --log "$TLS" --scope a --kind b --key k --op put --data v && grep -q "sequence 1" "$out" &&
    NATS_CA=$pki/ca.pem NATS_CERT=$pki/client.pem NATS_KEY=$pki/client.key \
    op replay --log "$TLS" --json && python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); sys.exit(d["count"] != 1)' "$out"
  then ok; else bad "NATS_CA + NATS_CERT + NATS_KEY: publish and replay over TLS"; cat "$err"; fi
  if NATS_CA=$pki/ca.pem NATS_CERT=$pki/client.pem NATS_KEY=$pki/client.key \
    op info -s "${NATS_URL/nats:/tls:}" --stream OPS && grep -q "^messages: *1$" "$out"; then ok
  else bad "-s tls://HOST:PORT --stream OPS over TLS"; cat "$err"; fi
  nats_server_stop
else bad "a TLS nats-server did not start (or openssl failed)"; fi

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
