# nats_server.sh — a real nats-server for a shell script (sourced; the shell
# twin of tests/nats_server.h): JetStream on, 127.0.0.1 only, a free port, a
# store directory of the caller's; stopped by its PID, never by name.
#
#   nats_server_start DIR [ARG...]
#                           starts it with its store in DIR/js and its log in
#                           DIR/nats-server.log (ARGs go to nats-server, e.g.
#                           --user U --pass P, --tls ...); sets NATS_PID,
#                           NATS_PORT and NATS_URL (nats://127.0.0.1:PORT).
#                           Returns 1 when it does not accept connections
#                           within 5 s.
#   nats_server_stop        SIGTERM to NATS_PID, and waits for it (the
#                           caller's EXIT trap calls it).
#   nats_free_port          prints a port the kernel says is free right now.

NATS_PID= NATS_PORT= NATS_URL=

nats_free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

nats_server_start() {
  local dir=$1 i
  shift
  NATS_PORT=$(nats_free_port) || return 1
  NATS_URL=nats://127.0.0.1:$NATS_PORT
  nats-server -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$dir/js" "$@" >"$dir/nats-server.log" 2>&1 &
  NATS_PID=$!
  for ((i = 0; i < 100; i++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$NATS_PORT") 2>/dev/null && return 0
    kill -0 "$NATS_PID" 2>/dev/null || break
    sleep 0.05
  done
  echo "nats-server did not start on 127.0.0.1:$NATS_PORT: $(tail -n 3 "$dir/nats-server.log")" >&2
  return 1
}

nats_server_stop() {
  if [[ -n $NATS_PID ]]; then
    kill -TERM "$NATS_PID" 2>/dev/null || true
    wait "$NATS_PID" 2>/dev/null || true
  fi
  NATS_PID=
}
