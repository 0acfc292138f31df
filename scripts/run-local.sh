#!/usr/bin/env bash
# `make run`: SecantusDB with data in .run/data (kept across runs), trace-writer and
# trace-api on fixed ports, logs in .run/logs. Ctrl-C or `make stop` stops everything.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
run="$root/.run"
DB_PORT="${DB_PORT:-27018}"
WRITER_PORT="${WRITER_PORT:-8081}"
API_PORT="${API_PORT:-8082}"

stop() {
  [ -d "$run/pids" ] || return 0
  for pidfile in "$run"/pids/*.pid; do
    [ -e "$pidfile" ] || continue
    pid="$(cat "$pidfile")"
    kill -TERM "$pid" 2>/dev/null || true
    rm -f "$pidfile"
  done
  echo "stopped"
}

if [ "${1:-}" = "stop" ]; then
  stop
  exit 0
fi

port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for named in "SecantusDB:$DB_PORT" "trace-writer:$WRITER_PORT" "trace-api:$API_PORT"; do
  if port_taken "${named#*:}"; then
    echo "port ${named#*:} (for ${named%%:*}) is already taken; free it or set DB_PORT/WRITER_PORT/API_PORT" >&2
    exit 1
  fi
done

mkdir -p "$run/data" "$run/logs" "$run/pids"
trap 'stop; exit 0' INT TERM

start() { # name, command...
  local name="$1"; shift
  "$@" >"$run/logs/$name.log" 2>&1 &
  echo $! >"$run/pids/$name.pid"
}

start secantusdb "$root/.venv/bin/secantusd-py" --host 127.0.0.1 --port "$DB_PORT" --storage-path "$run/data"
for _ in $(seq 1 100); do port_taken "$DB_PORT" && break; sleep 0.2; done
port_taken "$DB_PORT" || { echo "SecantusDB did not start; see $run/logs/secantusdb.log" >&2; stop; exit 1; }

export MONGO_URI="mongodb://127.0.0.1:$DB_PORT/?directConnection=true" ENSURE_INDEXES=true
PORT="$WRITER_PORT" PUSH_AUTH=none start trace-writer "$root/target/debug/trace-writer"
PORT="$API_PORT" start trace-api "$root/target/debug/trace-api"
for port in "$WRITER_PORT" "$API_PORT"; do
  for _ in $(seq 1 50); do port_taken "$port" && break; sleep 0.1; done
done

cat <<MSG
job trace is running (logs in .run/logs, data in .run/data):
  SecantusDB    mongodb://127.0.0.1:$DB_PORT
  trace-writer  http://127.0.0.1:$WRITER_PORT  (POST / takes Pub/Sub push bodies; PUSH_AUTH=none)
  trace-api     http://127.0.0.1:$API_PORT   (GET /api/v1/jobs/status/{message_id})
Ctrl-C or 'make stop' stops everything.
MSG
wait
