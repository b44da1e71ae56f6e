#!/usr/bin/env bash
# Runs Autobahn|Testsuite's fuzzing client against a WebSocket echo server and summarises the verdicts.
#
#   scripts/conformance/run.sh WS_URL [CASES [REPORT_DIR]]
#
# CASES: comma-separated case patterns (default "*", all 517; the 9.* cases send messages of up to 16 MiB).
# REPORT_DIR: where the report (index.html, index.json, a file per case), spec.json and wstest.log go;
# default a new temporary folder. Sets up the venv first (setup.sh; AUTOBAHN_VENV moves it).
# AUTOBAHN_TIMEOUT: seconds the whole wstest run may take (default 1800).
#
# Exit status: 0 every case OK or INFORMATIONAL; 1 some case FAILED or NON-STRICT, or UNIMPLEMENTED (a
# 12.*/13.* case: permessage-deflate not negotiated); 2 a harness problem: setup failed, the server is
# unreachable or went away mid-run, wstest crashed or timed out, no case selected or no report.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
[[ $# -ge 1 && $# -le 3 && "$1" =~ ^ws://[^/]+ ]] || { sed -n '2,13s/^# \{0,1\}//p' "$0" >&2; exit 2; }
url="$1"
cases="${2:-*}"
reports="${3:-$(mktemp -d "${TMPDIR:-/tmp}/autobahn-report.XXXXXX")}"
timeout="${AUTOBAHN_TIMEOUT:-1800}"
export AUTOBAHN_VENV="${AUTOBAHN_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/switchboard-autobahn-venv}"
py="$AUTOBAHN_VENV/bin/python"
problem() { echo "conformance: $*" >&2; exit 2; }

"$here/setup.sh" || problem "setting up the venv failed"

mkdir -p "$reports"
reports="$(cd "$reports" && pwd)"
# An earlier run's cases in the folder would count too.
rm -f "$reports"/index.{json,html} "$reports"/switchboard_case_*.{json,html} "$reports"/{spec.json,wstest.log}

# The spec, and how many cases it selects (wstest with none would wait for ever).
selected="$("$py" - "$url" "$cases" "$reports" <<'EOF'
import json, sys
from autobahntestsuite.case import Cases, CaseCategories, CaseSubCategories, CaseSetname, CaseBasename
from autobahntestsuite.caseset import CaseSet
url, cases, outdir = sys.argv[1:]
spec = {"outdir": outdir, "servers": [{"agent": "switchboard", "url": url}],
        "cases": [c.strip() for c in cases.split(",") if c.strip()], "exclude-cases": [], "exclude-agent-cases": {}}
with open(outdir + "/spec.json", "w") as f:
    json.dump(spec, f, indent=2)
print(len(CaseSet(CaseSetname, CaseBasename, Cases, CaseCategories, CaseSubCategories).parseSpecCases(spec)))
EOF
)" || problem "could not write the spec"
[[ "$selected" -gt 0 ]] || problem "no case matches \"$cases\""

"$py" - "$url" <<'EOF' || exit 2
import socket, sys
from urllib.parse import urlsplit
u = urlsplit(sys.argv[1])
try:
    socket.create_connection((u.hostname, u.port or 80), timeout=5).close()
except OSError as error:
    sys.exit(f"conformance: nothing answers at {sys.argv[1]} ({error})")
EOF

echo "conformance: $selected cases against $url, report in $reports"
start=$SECONDS
rc=0
(cd "$reports" && timeout --kill-after=10 "$timeout" "$AUTOBAHN_VENV/bin/wstest" -m fuzzingclient -s spec.json) \
  >"$reports/wstest.log" 2>&1 || rc=$?
echo "conformance: wstest took $((SECONDS - start)) s"

harness=""
if [[ $rc -eq 124 || $rc -eq 137 ]]; then
  harness="wstest timed out after ${timeout} s (AUTOBAHN_TIMEOUT)"
elif [[ $rc -ne 0 ]]; then
  harness="wstest exited with $rc"
elif grep -q '^Connection to .* failed' "$reports/wstest.log"; then
  harness="the server went away mid-run: $(grep -m1 '^Connection to .* failed' "$reports/wstest.log")"
elif grep -q 'Traceback\|Unhandled Error' "$reports/wstest.log"; then
  harness="wstest logged a Python error"
fi
[[ -z "$harness" ]] || tail -n 25 "$reports/wstest.log" >&2

verdict=0
python3 "$here/summarize.py" "$reports" "$selected" || verdict=$?
[[ -z "$harness" ]] || problem "$harness (log: $reports/wstest.log)"
exit "$verdict"
