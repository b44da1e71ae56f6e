#!/usr/bin/env bash
# The cluster benchmark of docs/benchmarks.md: the same load on one node and on three nodes over one
# redis-server. Servers (and Redis) pinned to core 0, the load generator to core 1; release build.
# usage: scripts/cluster_bench.sh [one|three] [fanout|channels]
set -euo pipefail
shape="${1:-three}"; load="${2:-fanout}"
S=.build/release/switchboard
B="taskset -c 1 .build/release/switchboard-bench"
pids=(); cleanup() { kill -9 "${pids[@]}" 2>/dev/null || true; }; trap cleanup EXIT
common=(--host 127.0.0.1 --api-port 0 --threads 1 --stats-interval 0 --web false --publish-rate 1000
  --publish-burst 1000 --max-subscriptions-per-connection 4 --chat-history-size 100)
ports=(); serverpids=(); redisflag=()
if [ "$shape" = three ]; then
  taskset -c 0 redis-server --port 9399 --bind 127.0.0.1 --save "" --appendonly no --loglevel warning >/dev/null &
  redis=$!; pids+=("$redis")
  until redis-cli -p 9399 ping >/dev/null 2>&1; do sleep 0.1; done
  redisflag=(--redis-pid "$redis")
  for n in 1 2 3; do
    taskset -c 0 "$S" serve --port "930$n" --redis redis://127.0.0.1:9399 --node-id "n$n" "${common[@]}" \
      >/dev/null 2>"/tmp/cluster-bench-n$n.log" &
    pids+=("$!"); serverpids+=(--server-pid "$!"); ports+=(--port "930$n")
  done
else
  taskset -c 0 "$S" serve --port 9301 "${common[@]}" >/dev/null 2>/tmp/cluster-bench-n1.log &
  pids+=("$!"); serverpids+=(--server-pid "$!"); ports+=(--port 9301)
fi
for p in 9301 9302 9303; do
  [ "$shape" = one ] && [ "$p" != 9301 ] && continue
  until (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do sleep 0.1; done
done
if [ "$load" = fanout ]; then
  $B fanout "${ports[@]}" --path /ws --channel chat:room --connections 15000 --senders 1 --rate 5 --workers 3 \
    --source-addresses 12 --duration 10 "${serverpids[@]}" "${redisflag[@]}"
else
  $B fanout "${ports[@]}" --path /ws --channel chat:ch --channels 1000 --connections 10000 --senders 1000 \
    --rate 5000 --workers 3 --source-addresses 12 --duration 10 "${serverpids[@]}" "${redisflag[@]}"
fi
