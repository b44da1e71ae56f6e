#!/usr/bin/env bash
# The event proxy's cost (docs/benchmarks.md): connects/s (switchboard-bench churn), publishes/s
# (switchboard-bench fanout, senders at full rate), subscribes/s and RPCs/s (proxy_bench.mjs, closed loop),
# each without and with the proxy, against a minimal Node backend on this host. The server runs on one
# thread on core 0; the backend and the load on core 1.
# usage: scripts/bench/proxy_bench.sh [RELEASE_BUILD_DIR]   (default .build/release)
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${1:-.build/release}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

taskset -c 1 node scripts/bench/proxy_backend.mjs 0 > "$work/backend.out" &
until grep -q "backend on" "$work/backend.out"; do sleep 0.1; done
backend="http://127.0.0.1:$(awk '{print $3}' "$work/backend.out")"

cat > "$work/plain.json" <<JSON
{"namespaces": {"moderated": {"historySize": 10}, "secret": {}}}
JSON
cat > "$work/proxied.json" <<JSON
{"namespaces": {"moderated": {"historySize": 10, "proxyPublish": true}, "secret": {"proxySubscribe": true}}}
JSON

serve() { # $1: config file; more flags follow
  local config=$1; shift
  taskset -c 0 "$BIN/switchboard" serve --port 0 --no-api true --threads 1 --web false --stats-interval 0 \
    --publish-rate 1000000 --publish-burst 1000000 --inbound-frames-per-second 0 \
    --inbound-messages-per-second 0 --config "$config" "$@" > "$work/serve.out" 2> "$work/serve.err" &
  server=$!
  until grep -q "listening on" "$work/serve.out"; do sleep 0.1; done
  url=$(awk '/listening on/ {print $4}' "$work/serve.out")
  port=${url##*:}; port=${port%%/*}
}

for variant in plain proxied; do
  flags=()
  if [ $variant = proxied ]; then
    flags=(--proxy-connect-url "$backend/connect" --proxy-subscribe-url "$backend/subscribe"
      --proxy-publish-url "$backend/publish" --proxy-rpc-url "$backend/rpc")
  fi
  echo "== $variant"
  serve "$work/$variant.json" "${flags[@]}"
  taskset -c 1 "$BIN/switchboard-bench" run churn --port "$port" --connections 100 --workers 1 \
    --source-addresses 8 --server-pid $server --duration 5 | grep -E "connections/s|churn|CPU" || true
  taskset -c 1 "$BIN/switchboard-bench" run fanout --port "$port" --channel moderated:bench --connections 20 \
    --senders 10 --rate 0 --window 8 --workers 1 --source-addresses 2 --server-pid $server --duration 5 \
    | grep -E "deliveries|sent|latency|p99|CPU" || true
  for connections in 1 50; do
    for mode in ping subscribe rpc; do
      [ $mode = rpc ] && [ $variant = plain ] && continue
      taskset -c 1 node --experimental-websocket scripts/bench/proxy_bench.mjs "$url" $mode $connections 5
    done
  done
  kill $server; wait $server 2>/dev/null || true
done
