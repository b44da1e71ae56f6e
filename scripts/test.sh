#!/usr/bin/env bash
# The whole test suite: unit and integration tests (real sockets on loopback), then the Autobahn
# conformance quick set against `switchboard echo`, a SIGTERM drain check of the real binary, and the
# real binary at its open-file limit, schemathesis against `switchboard serve`'s server API, the command
# line as a user runs it (scripts/cli_test.py), the JavaScript client's tests under Node, and the demo and
# dashboard in headless Chromium. Every wait here has a time limit: a hang fails the run, it never stalls it.
# Installs what it needs itself: the Autobahn venv, schemathesis, websockets and Playwright from
# PyPI; redis-server and chromium (and nodejs or node-ws when missing) from Debian.
set -euo pipefail
cd "$(dirname "$0")/.."

# Waits until the log $1 of process $2 has a line matching $3; fails if the process dies first.
wait_for_line() {
  for _ in $(seq 1 200); do
    grep -q "$3" "$1" && return 0
    kill -0 "$2" 2>/dev/null || { cat "$1"; echo "the server died"; exit 1; }
    sleep 0.1
  done
  cat "$1"; echo "no \"$3\" in the log"; exit 1
}

# SIGTERM to process $1, then waits at most 60 s for it (SIGKILL after); fails, printing the log $2 if given,
# unless it drained and exited 0.
stop_server() {
  kill -TERM "$1" 2>/dev/null || true
  for _ in $(seq 1 600); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  local rc=0
  if kill -0 "$1" 2>/dev/null; then kill -9 "$1" 2>/dev/null || true; rc="still running 60 s after SIGTERM"; fi
  local code=0
  wait "$1" || code=$?
  [ "$rc" != 0 ] || rc=$code
  [ "$rc" = 0 ] || { [ -z "${2:-}" ] || cat "$2"; echo "process $1: exit $rc after SIGTERM (expected 0)"; exit 1; }
}

# Waits at most $2 seconds for background job $1 to end (then kills it and fails); returns its exit code.
wait_bounded() {
  for _ in $(seq 1 $(($2 * 10))); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$1" 2>/dev/null; then kill -9 "$1" 2>/dev/null || true; echo "job $1 did not end within $2 s"; exit 1; fi
  wait "$1"
}

echo "== swift format lint"
swift format lint --strict -r Sources Tests Package.swift

echo "== tools the tests use: redis-server (the Redis client's and the cluster's tests), curl and openssl (the docs' examples), from Debian when missing"
command -v redis-server >/dev/null && command -v curl >/dev/null && command -v openssl >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server curl openssl
}

echo "== build"
swift build --build-tests

echo "== swift test"
# One test at a time: several tests flood sockets or open 1,000 connections, and on a 2-core machine
# running them beside the timing-sensitive ones (heartbeats, shutdown deadlines) makes those flaky.
# Each suite has a 5-minute limit per test (.timeLimit); this bounds the whole run as well.
timeout -k 60 2400 swift test --skip-build --no-parallel

echo "== allocation budgets of the hot paths (an optimised build, malloc-interposer counting)"
# Its own scratch path: an optimised build with testability, apart from the debug build above.
timeout 1200 swift build -c release --scratch-path .build/allocation-budgets \
  --product switchboard-allocation-budgets -Xswiftc -enable-testing
.build/allocation-budgets/release/switchboard-allocation-budgets

echo "== the fuzz corpus (seeds and kept crashes) through every parser, then each parser under libFuzzer"
for target in frames handshake command inflate resp; do .build/debug/switchboard-fuzz "$target" "Fuzz/corpus/$target"; done
scripts/fuzz.sh "${SWITCHBOARD_FUZZ_SECONDS:-20}"

echo "== Autobahn|Testsuite quick set (1.*-10.* without 9.*, and a sample of 12.*/13.*) against switchboard echo --deflate"
# The project's own harness (docs/conformance.md) installs the suite from PyPI into a venv on first use and
# ports it to Python 3; the run fails on a FAILED, NON-STRICT or UNIMPLEMENTED case and on a harness problem.
log="$(mktemp)"
.build/debug/switchboard echo --port 0 --deflate --log-level info >"$log" 2>&1 &
server=$!
trap 'kill -9 $server 2>/dev/null || true' EXIT
wait_for_line "$log" "$server" "listening on"
url="$(grep -o 'ws://[^ ]*' "$log" | head -1)"
[ -n "$url" ] || { cat "$log"; echo "echo server did not report its address"; exit 1; }
# The full 12.*/13.* run takes minutes (docs/conformance.md); this sample covers each parameter group.
deflate_cases="12.1.1,12.2.2,12.4.1,12.5.2,13.1.1,13.2.1,13.3.1,13.4.2,13.5.1,13.6.1,13.7.1"
AUTOBAHN_TIMEOUT=600 scripts/conformance/run.sh "${url%/}" "1.*,2.*,3.*,4.*,5.*,6.*,7.*,10.*,$deflate_cases" "$(mktemp -d)"

echo "== a real third-party client (Python websockets) negotiates permessage-deflate and round-trips"
wsvenv="${XDG_CACHE_HOME:-$HOME/.cache}/switchboard-websockets-venv"
[ -x "$wsvenv/bin/python" ] &&
  "$wsvenv/bin/python" -c 'import sys, websockets; sys.exit(int(websockets.__version__.split(".")[0]) < 14)' 2>/dev/null || {
  python3 -m venv "$wsvenv" && "$wsvenv/bin/pip" install --quiet --upgrade 'websockets>=14,<16'
}
timeout 120 "$wsvenv/bin/python" scripts/deflate_client.py "${url%/}"

echo "== graceful shutdown of the real process on SIGTERM"
stop_server "$server" "$log"
trap - EXIT
grep -q "stopped" "$log" || { cat "$log"; echo "no drain logged"; exit 1; }

echo "== at the open-file limit: the server keeps serving, pauses accepting without spinning, recovers"
# The real binary under a 64-descriptor limit, asked for 100 connections by the load generator.
flog="$(mktemp)"
(ulimit -n 64; exec .build/debug/switchboard echo --broadcast --port 0 --threads 1) >"$flog" 2>&1 &
fserver=$!
trap 'kill -9 $fserver 2>/dev/null || true' EXIT
wait_for_line "$flog" "$fserver" "listening on"
fport="$(grep -o 'ws://[^ ]*' "$flog" | head -1 | sed -E 's#.*:([0-9]+)/.*#\1#')"
cpu() { awk '{print $14 + $15}' "/proc/$fserver/stat"; }
cpu0="$(cpu)"; t0="$(date +%s)"
fill="$(timeout 300 .build/debug/switchboard-bench idle --port "$fport" --connections 100 --workers 1 \
  --connect-concurrency 60 --duration 2 --settle 0.5 --source-addresses 2 | tail -1)"
cpu1="$(cpu)"; t1="$(date +%s)"
after="$(timeout 300 .build/debug/switchboard-bench fanout --port "$fport" --connections 2 --senders 1 --rate 10 \
  --workers 1 --duration 1 --settle 0.2 | tail -1)"
kill -0 "$fserver" || { cat "$flog"; echo "server died at the file limit"; exit 1; }
stop_server "$fserver" "$flog"; trap - EXIT
python3 - "$fill" "$after" "$((cpu1 - cpu0))" "$((t1 - t0))" "$flog" <<'PY'
import json, sys
fill, after = json.loads(sys.argv[1]), json.loads(sys.argv[2])
cpu_s, wall_s, log = int(sys.argv[3]) / 100, max(int(sys.argv[4]), 1), open(sys.argv[5]).read()
problems = []
if not (fill["connections"] >= 30 and fill["connect_failures"] >= 1):
    problems.append(f"expected the limit to be reached with connections held: {fill}")
if fill["disconnected"] > fill["connect_failures"]:
    problems.append(f"held connections were dropped: {fill}")
if cpu_s > 0.25 * wall_s:
    problems.append(f"server used {cpu_s:.1f} s of CPU in {wall_s} s at the limit (spinning?)")
if not (after["connect_failures"] == 0 and after["lost"] == 0 and after["delivered"] > 0):
    problems.append(f"server did not recover once descriptors were free: {after}")
if "cannot accept connections" not in log or "accepting connections again" not in log:
    problems.append("the pause and the recovery were not logged")
print(f"held {fill['connections']}, refused {fill['connect_failures']}, server CPU {cpu_s:.2f} s in {wall_s} s, "
      f"then {after['delivered']} deliveries on fresh connections")
if problems:
    print(log)
    sys.exit("\n".join(problems))
PY
echo "== the API listener at the open-file limit: it pauses accepting too, rather than spin"
# serve under a 64-descriptor limit: WebSocket clients take every descriptor while API requests keep coming.
plog="$(mktemp)"
(ulimit -n 64; exec .build/debug/switchboard serve --port 0 --api-port 0 --threads 1 --stats-interval 0) >"$plog" 2>&1 &
pserver=$!
trap 'kill -9 $pserver 2>/dev/null || true' EXIT
wait_for_line "$plog" "$pserver" "API on"
wait_for_line "$plog" "$pserver" "listening on"
papi="$(grep -o 'API on http://[^ ]*' "$plog" | head -1 | sed 's/^API on //')"
pport="$(grep -o 'ws://[^ ]*' "$plog" | head -1 | sed -E 's#.*:([0-9]+)/.*#\1#')"
pcpu() { awk '{print $14 + $15}' "/proc/$pserver/stat"; }
( for _ in $(seq 1 30); do curl -s -m 0.5 -o /dev/null "$papi/health" || true; sleep 0.1; done ) &
spam=$!
pcpu0="$(pcpu)"; pt0="$(date +%s)"
timeout 300 .build/debug/switchboard-bench idle --port "$pport" --path /ws --connections 100 --workers 1 --connect-concurrency 60 \
  --duration 3 --settle 0.5 --source-addresses 2 >/dev/null
pcpu1="$(pcpu)"; pt1="$(date +%s)"
wait_bounded "$spam" 60 || true
curl -sf -m 5 "$papi/health" >/dev/null || { cat "$plog"; echo "the API did not recover once descriptors were free"; exit 1; }
stop_server "$pserver" "$plog"; trap - EXIT
python3 - "$((pcpu1 - pcpu0))" "$((pt1 - pt0))" "$plog" <<'PY'
import sys
cpu_s, wall_s, log = int(sys.argv[1]) / 100, max(int(sys.argv[2]), 1), open(sys.argv[3]).read()
print(f"serve at the limit: {cpu_s:.2f} s of CPU in {wall_s} s; API answering again")
if cpu_s > 0.25 * wall_s:
    print(log)
    sys.exit(f"serve used {cpu_s:.1f} s of CPU in {wall_s} s at the limit (an accept loop spinning?)")
if not any("switchboard.api" in line and "cannot accept connections" in line for line in log.splitlines()):
    print(log)
    sys.exit("the API listener did not reach the descriptor limit, or did not log its pause")
PY

echo "== schemathesis: the server API against docs/openapi.yaml"
# No 5xx, every response as documented, bad bodies refused with 4xx, the API key enforced.
venv="${XDG_CACHE_HOME:-$HOME/.cache}/switchboard-schemathesis-venv"
[ -x "$venv/bin/schemathesis" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install --quiet 'schemathesis>=4.0,<5'; }
alog="$(mktemp)"
export SWITCHBOARD_TOKEN_SECRET=test-script-secret-of-at-least-32-bytes
# Schemathesis sends wrong keys on purpose (ignored_auth): a large burst keeps the later valid requests from
# being throttled, so they are still checked (429 itself is documented).
SWITCHBOARD_API_KEY=schemathesis-api-key-0123 .build/debug/switchboard serve --port 0 --api-port 0 --log-level error \
  --api-key-failure-burst 100000 \
  >"$alog" 2>&1 &
aserver=$!
trap 'kill -9 $aserver 2>/dev/null || true' EXIT
wait_for_line "$alog" "$aserver" "API on"
api="$(grep -o 'API on http://[^ ]*' "$alog" | head -1 | sed 's/^API on //')"
[ -n "$api" ] || { cat "$alog"; echo "serve did not report its API address"; exit 1; }
timeout 900 "$venv/bin/schemathesis" run docs/openapi.yaml --url "$api" -H "X-API-Key: schemathesis-api-key-0123" \
  -c not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,negative_data_rejection,ignored_auth,missing_required_header \
  --phases examples,coverage,fuzzing -n 50 --seed 7
echo "== switchboard token: its tokens open connections to serve with the same secret, forged ones do not"
wait_for_line "$alog" "$aserver" "listening on"
wsport="$(grep -o 'ws://[^ ]*' "$alog" | head -1 | sed -E 's#.*:([0-9]+)/.*#\1#')"
churn() {
  timeout 300 .build/debug/switchboard-bench churn --port "$wsport" --path /ws --connections 4 --workers 1 --duration 1 \
    --settle 0 --source-addresses 1 --header "Authorization: Bearer $1" | tail -1
}
own="$(.build/debug/switchboard token --user ada --info '{"name":"Ada"}' --channel news)"
other="$(SWITCHBOARD_TOKEN_SECRET=another-secret-of-at-least-32-bytes-xx .build/debug/switchboard token --user ada)"
[ -n "$own" ] && [ -n "$other" ] || { echo "switchboard token printed nothing"; exit 1; }
good="$(churn "$own")"
forged="$(churn "$other")"
python3 - "$good" "$forged" <<'PY'
import json, sys
good, forged = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"own tokens: {good['connections_per_second']:.0f} connections/s, {good['connect_failures']} refused; "
      f"forged: {forged['connect_failures']} refused")
if good["connect_failures"] != 0 or good["connections_per_second"] <= 0:
    sys.exit(f"tokens from switchboard token were refused: {good}")
if forged["connect_failures"] == 0 or forged["connections_per_second"] > 0:
    sys.exit(f"forged tokens were accepted: {forged}")
PY
unset SWITCHBOARD_TOKEN_SECRET
stop_server "$aserver" "$alog"; trap - EXIT

echo "== the command line as a user runs it: check-config against serve, docs/API.md's examples, two servers on one host, SIGHUP reload under a connected client, exit codes, switchboard-bench's defaults"
timeout 900 "$wsvenv/bin/python" scripts/cli_test.py .build/debug/switchboard .build/debug/switchboard-bench

echo "== switchboard-example-hummingbird as a user runs it: /hello, /ws and /api/ on one port, refusals, tokens, SIGTERM"
timeout 300 "$wsvenv/bin/python" scripts/example_test.py .build/debug/switchboard-example-hummingbird .build/debug/switchboard

echo "== a cluster: three switchboard serve nodes over a real redis-server, and Redis failures"
timeout 1200 "$wsvenv/bin/python" scripts/cluster_test.py .build/debug/switchboard

echo "== an application backend of our own: the event proxy and the signed event webhook, on one node and on two over Redis"
# Cookie connect, subscribe/publish/rpc decided by the backend, a backend down; batches retried, occupied/vacated once per cluster, idempotent publish.
timeout 600 "$wsvenv/bin/python" scripts/backend_test.py .build/debug/switchboard

echo "== Server-Sent Events (/sse) and the HTTP transport (/http-stream): curl -N and Python clients, resume, tokens, refusals, slow readers, metrics"
# Resume with Last-Event-ID and ?since=, gzip, several channels per stream, every documented refusal as JSON,
# slow readers under both slow-consumer policies beside untouched SSE and WebSocket readers, POSTed commands.
timeout 600 "$wsvenv/bin/python" scripts/sse_test.py .build/debug/switchboard

echo "== the fault-injection suite: blackholed, slowed and one-way Redis links, Redis paused and rolled back, a node killed, client links reset; the checker over the recorded history"
timeout 1500 "$wsvenv/bin/python" scripts/fault_test.py .build/debug/switchboard

echo "== the JavaScript client's tests (Node's test runner) against a real switchboard serve"
command -v node >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs; }
nodeflags=()
if node --experimental-websocket -e 'process.exit(typeof WebSocket === "function" ? 0 : 1)' 2>/dev/null; then
  nodeflags=(--experimental-websocket)
else
  # Node without a built-in WebSocket (Debian's 18): the client takes Debian's `ws` package instead.
  [ -d /usr/share/nodejs/ws ] || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq node-ws; }
  export NODE_PATH=/usr/share/nodejs
fi
SWITCHBOARD_BIN=.build/debug/switchboard timeout 600 node "${nodeflags[@]}" --test clients/js/test/*.test.mjs

echo "== the demo and the dashboard in headless Chromium (Playwright), screenshots in test-artifacts/"
command -v chromium >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
}
bvenv="${XDG_CACHE_HOME:-$HOME/.cache}/switchboard-browser-venv"
[ -x "$bvenv/bin/python" ] && "$bvenv/bin/python" -c 'import playwright' 2>/dev/null || {
  python3 -m venv "$bvenv" && "$bvenv/bin/pip" install --quiet 'playwright>=1.40,<2'
}
ARTIFACTS=test-artifacts timeout 600 "$bvenv/bin/python" scripts/browser_test.py .build/debug/switchboard .build/debug/switchboard-bench

echo "== all tests passed"
