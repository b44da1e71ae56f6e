#!/usr/bin/env bash
# Coverage-guided fuzzing of the parsers that face the internet and Redis (Sources/switchboard-fuzz):
# frames, handshake, command, inflate, resp. Builds them with libFuzzer and AddressSanitizer in
# .build-fuzz, starts each from its seed corpus in Fuzz/corpus/, and runs it for SECONDS (default 20).
# A crash, a timeout (5 s on one input) or an allocation past 2 GiB fails the run; the input is kept in
# test-artifacts/fuzz/ (add it to Fuzz/corpus/TARGET/ as a regression once fixed: the test command
# replays the corpus on every run). A longer run: scripts/fuzz.sh 600 [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-20}"
shift || true
targets=("${@:-frames handshake command inflate resp}")
read -r -a targets <<<"${targets[*]}"
swift build --scratch-path .build-fuzz --product switchboard-fuzz \
  -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZING 2>&1 | tail -1
mkdir -p test-artifacts/fuzz
for target in "${targets[@]}"; do
  found="$(mktemp -d)"  # new inputs go here, never into the committed corpus
  if ! SWITCHBOARD_FUZZ_TARGET="$target" .build-fuzz/debug/switchboard-fuzz \
    -max_total_time="$seconds" -timeout=5 -rss_limit_mb=2048 -malloc_limit_mb=512 -print_final_stats=1 \
    -artifact_prefix="test-artifacts/fuzz/$target-" "$found" "Fuzz/corpus/$target" >"$found.log" 2>&1; then
    tail -40 "$found.log"
    echo "fuzz target $target failed: the input is in test-artifacts/fuzz/"
    exit 1
  fi
  runs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$found.log" | grep -o '[0-9]*$' || echo '?')"
  echo "fuzz $target: $runs inputs in ${seconds} s, no crash, hang or runaway allocation"
done
