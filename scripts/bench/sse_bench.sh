#!/usr/bin/env bash
# Server-Sent Events beside WebSocket (docs/benchmarks.md): 10,000 subscribers of one channel over /sse, then
# the same over /ws, each against a fresh `switchboard serve` (release build, one event loop, pinned to core 0;
# the load, sse_bench.mjs in 4 worker processes bound to 127.0.0.2-5, pinned to core 1): the server's RSS
# growth per idle subscriber, then one publication every 100 ms from the server API for 10 s: deliveries/s,
# latency p50/p99, lost, server CPU per delivery. Then, for reference, the same WebSocket load from
# switchboard-bench (the tool of the other figures in docs/benchmarks.md).
# usage: scripts/bench/sse_bench.sh [RELEASE_BUILD_DIR] [CONNECTIONS] [DURATION_SECONDS] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${1:-.build/release}
CONNECTIONS=${2:-10000}
DURATION=${3:-10}
RUNS=${4:-1}
work=$(mktemp -d)
server=
trap '[ -z "$server" ] || kill "$server" 2>/dev/null || true; rm -rf "$work"' EXIT

# Never beside a Swift build or test run: both cores are needed, and the figures would be theirs.
while pgrep -x swift-build >/dev/null || pgrep -x swift-test >/dev/null || pgrep -f '\.xctest' >/dev/null; do
  echo "waiting for a Swift build or test run to finish…"
  sleep 30
done

cat > "$work/bench.json" <<JSON
{"namespaces": {"": {}, "bench": {"historySize": 100}}}
JSON

serve() {
  taskset -c 0 "$BIN/switchboard" serve --port 0 --api-port 0 --threads 1 --web false --stats-interval 0 \
    --ping-interval 0 --inbound-frames-per-second 0 --max-connections 100000 --config "$work/bench.json" \
    > "$work/serve.out" 2> "$work/serve.err" &
  server=$!
  for _ in $(seq 1 300); do
    grep -q "listening on" "$work/serve.out" && grep -q "API on" "$work/serve.out" && break
    kill -0 $server 2>/dev/null || { cat "$work/serve.err"; echo "serve died"; exit 1; }
    sleep 0.1
  done
  url=$(awk '/listening on/ {print $4}' "$work/serve.out")
  port=${url##*:}; port=${port%%/*}
  api=$(awk '/API on/ {print $4}' "$work/serve.out")
}

stop() {
  kill "$server"; wait "$server" 2>/dev/null || true; server=
}

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r), open files $(ulimit -n)"
# Each load run binds its own four source addresses: the previous run's TIME_WAIT sockets hold ports on
# theirs, which would make binding (and connecting) slower and slower.
source=2
for run in $(seq 1 "$RUNS"); do
  for transport in sse ws; do
    echo "== run $run: $transport, $CONNECTIONS subscribers of bench:room, 10 publications/s for $DURATION s"
    serve
    taskset -c 1 node scripts/bench/sse_bench.mjs --transport "$transport" --port "$port" --api "$api" \
      --server-pid "$server" --connections "$CONNECTIONS" --workers 4 --rate 10 --duration "$DURATION" \
      --channel bench:room --source-base "$source" | tee -a "$work/results"
    source=$((source + 4))
    stop
  done
done

echo "== reference: switchboard-bench fanout over WebSocket, the same load"
serve
taskset -c 1 "$BIN/switchboard-bench" fanout --port "$port" --path /ws --channel bench:room \
  --connections "$CONNECTIONS" --senders 1 --rate 10 --workers 2 --source-addresses 8 --server-pid "$server" \
  --duration "$DURATION" | tail -12 || true
stop
