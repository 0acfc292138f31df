#!/usr/bin/env bash
# `make run`: SecantusDB with data in .run/data (kept across runs), the Pub/Sub emulator
# with the topics and push subscriptions Terraform declares (when gcloud is installed),
# trace-writer and trace-api on fixed ports; logs in .run/logs. Ctrl-C or `make stop`
# stops everything.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
run="$root/.run"
bin="$root/target/debug"
DB_PORT="${DB_PORT:-27018}"
PUBSUB_PORT="${PUBSUB_PORT:-8085}"
WRITER_PORT="${WRITER_PORT:-8081}"
API_PORT="${API_PORT:-8082}"
started_at=$(date +%s.%N)

# Each process runs in a session of its own (setsid), so that stopping its group also
# stops what it started (gcloud's emulator is a Java server under a Python wrapper).
stop() {
  [ -d "$run/pids" ] || return 0
  local pids=()
  for pidfile in "$run"/pids/*.pid; do
    [ -e "$pidfile" ] || continue
    pids+=("$(cat "$pidfile")")
    rm -f "$pidfile"
  done
  [ "${#pids[@]}" -gt 0 ] || return 0
  for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  for _ in $(seq 1 50); do
    alive=0
    for pid in "${pids[@]}"; do kill -0 -- "-$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.2
  done
  for pid in "${pids[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
  echo "job trace stopped"
}

if [ "${1:-}" = "stop" ]; then
  stop
  exit 0
fi

if compgen -G "$run/pids/*.pid" >/dev/null; then
  echo "job trace seems to be running already (pid files in .run/pids); 'make stop' first" >&2
  exit 1
fi

with_pubsub=0
if command -v gcloud >/dev/null 2>&1 && gcloud --version 2>/dev/null | grep -q pubsub-emulator; then
  with_pubsub=1
fi

port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wanted=("SecantusDB:$DB_PORT:DB_PORT" "trace-writer:$WRITER_PORT:WRITER_PORT" "trace-api:$API_PORT:API_PORT")
[ "$with_pubsub" = 1 ] && wanted+=("the Pub/Sub emulator:$PUBSUB_PORT:PUBSUB_PORT")
for entry in "${wanted[@]}"; do
  IFS=: read -r name port variable <<<"$entry"
  if port_taken "$port"; then
    echo "port $port (for $name) is already taken: stop what uses it, or choose another with $variable=..." >&2
    exit 1
  fi
done

mkdir -p "$run/data" "$run/logs" "$run/pids" "$run/pubsub"
trap 'stop; exit 0' INT TERM

start() { # name, command...
  local name="$1"; shift
  setsid "$@" >"$run/logs/$name.log" 2>&1 &
  echo $! >"$run/pids/$name.pid"
}

wait_for() { # name, port, seconds
  for _ in $(seq 1 $(($3 * 10))); do port_taken "$2" && return 0; sleep 0.1; done
  echo "$1 did not listen on $2 within $3 s; see .run/logs/$1.log" >&2
  stop
  exit 1
}

start secantusdb "$root/.venv/bin/secantusd-py" --host 127.0.0.1 --port "$DB_PORT" --storage-path "$run/data"
if [ "$with_pubsub" = 1 ]; then
  CLOUDSDK_CORE_DISABLE_PROMPTS=1 start pubsub gcloud beta emulators pubsub start \
    --host-port="127.0.0.1:$PUBSUB_PORT" --project=demo --data-dir="$run/pubsub"
fi
wait_for secantusdb "$DB_PORT" 30

export MONGO_URI="mongodb://127.0.0.1:$DB_PORT/?directConnection=true" ENSURE_INDEXES=true
# With the emulator, trace-writer publishes completion notifications to the topic that
# `jobtrace provision` creates below (its publisher connects on first use).
completions=()
[ "$with_pubsub" = 1 ] && completions=(COMPLETIONS_TOPIC=projects/demo/topics/job-trace-completions \
  PUBSUB_EMULATOR_HOST="127.0.0.1:$PUBSUB_PORT")
PORT="$WRITER_PORT" PUSH_AUTH=none start trace-writer env "${completions[@]}" "$bin/trace-writer"
PORT="$API_PORT" start trace-api "$bin/trace-api"
wait_for trace-writer "$WRITER_PORT" 10
wait_for trace-api "$API_PORT" 10

if [ "$with_pubsub" = 1 ]; then
  wait_for pubsub "$PUBSUB_PORT" 90
  # The emulator numbers messages from 1 at every start, but the traces in .run/data stay:
  # its ids are moved past the largest one stored, so that no new job takes an old id.
  highest=$("$bin/jobtrace" highest-id) || { stop; exit 1; }
  if ! "$bin/jobtrace" --emulator "127.0.0.1:$PUBSUB_PORT" --project demo \
      provision --push-to "http://127.0.0.1:$WRITER_PORT" --ids-past "$highest" \
      >"$run/logs/provision.log" 2>&1; then
    cat "$run/logs/provision.log" >&2
    stop
    exit 1
  fi
  pubsub_line="  Pub/Sub       127.0.0.1:$PUBSUB_PORT  (emulator, project demo; topics scrape-jobs, job-trace-events,
                job-trace-completions: 'jobtrace completions' prints them)"
  hint=""
  [ "$PUBSUB_PORT" != 8085 ] && hint="
(another terminal: export PUBSUB_EMULATOR_HOST=127.0.0.1:$PUBSUB_PORT before jobtrace)"
else
  pubsub_line="  Pub/Sub       not started: gcloud with the Pub/Sub emulator is not installed.
                Install the Google Cloud CLI and 'gcloud components install pubsub-emulator'
                (or Debian's google-cloud-cli-pubsub-emulator). Until then jobtrace posts
                push bodies straight to trace-writer."
  hint=""
fi
[ "$WRITER_PORT" != 8081 ] && [ "$with_pubsub" = 0 ] && hint="$hint
(another terminal: export JOBTRACE_WRITER=http://127.0.0.1:$WRITER_PORT before jobtrace)"
[ "$API_PORT" != 8082 ] && hint="$hint
(another terminal: export JOBTRACE_API=http://127.0.0.1:$API_PORT before jobtrace)"

ready=$(awk -v a="$started_at" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
cat <<MSG
job trace is ready after ${ready} s (logs in .run/logs, data in .run/data):
  SecantusDB    mongodb://127.0.0.1:$DB_PORT
$pubsub_line
  trace-writer  http://127.0.0.1:$WRITER_PORT   POST / takes Pub/Sub pushes (PUSH_AUTH=none)
  trace-api     http://127.0.0.1:$API_PORT   status page at /, API under /api/v1 and /job
In another terminal: 'make demo', or target/debug/jobtrace --help$hint
Ctrl-C or 'make stop' stops everything.
MSG
wait
