#!/usr/bin/env bash
# The side-by-side benchmark of docs/benchmarks.md: Switchboard (`serve`, channels in the `chat:` namespace
# with history and presence) or nchan (scripts/nchan/nginx.conf, one worker) on core 0, the load generator
# on core 1; release build. Run each on a fresh port, alternating, once the last run's TIME_WAIT sockets
# are gone (`ss -tan state time-wait | wc -l`).
# usage: scripts/nchan_bench.sh switchboard|nchan fanout|channels PORT [extra switchboard-bench flags]
# SWITCHBOARD_BIN picks another build of the server (A/B runs).
set -euo pipefail
server="$1"; load="$2"; port="$3"; shift 3
cd "$(dirname "$0")/.."
B="taskset -c 1 .build/release/switchboard-bench"
pids=(); cleanup() { kill -9 "${pids[@]}" 2>/dev/null || true; }; trap cleanup EXIT
if [ "$server" = nchan ]; then
  prefix="$(mktemp -d)"
  sed "s/127.0.0.1:9401/127.0.0.1:$port/" scripts/nchan/nginx.conf >"$prefix/nginx.conf"
  taskset -c 0 nginx -p "$prefix" -c nginx.conf -g 'daemon off;' >"$prefix/stdout.log" 2>&1 &
  pids+=("$!")
  until [ -s "$prefix/nginx.pid" ] && pgrep -P "$(cat "$prefix/nginx.pid")" >/dev/null; do sleep 0.1; done
  pid="$(pgrep -P "$(cat "$prefix/nginx.pid")")"   # the worker process, which does all the work
  pids+=("$pid")
  target=(--channel-path /ps/)
else
  taskset -c 0 "${SWITCHBOARD_BIN:-.build/release/switchboard}" serve --host 127.0.0.1 --port "$port" --api-port 0 --threads 1 \
    --stats-interval 0 --web false --publish-rate 1000 --publish-burst 1000 --chat-history-size 100 \
    >/dev/null 2>/tmp/nchan-bench-switchboard.log &
  pid="$!"; pids+=("$pid")
  target=(--path /ws)
fi
until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do sleep 0.1; done
if [ "$load" = fanout ]; then
  $B fanout --port "$port" "${target[@]}" --channel chat:room --connections 10000 --senders 1 --rate 10 \
    --workers 2 --source-addresses 12 --duration 10 --server-pid "$pid" "$@"
else
  $B fanout --port "$port" "${target[@]}" --channel chat:ch --channels 1000 --connections 10000 --senders 1000 \
    --rate 5000 --workers 2 --source-addresses 12 --duration 10 --server-pid "$pid" "$@"
fi
