#!/usr/bin/env bash
# Makes (or repairs) the venv with Autobahn|Testsuite ported to Python 3: the pinned requirements.txt from
# PyPI, then py3port.py over a fresh install of the suite. When the venv is in place and its wstest imports,
# it does nothing (about a second). Exits non-zero, with the error, when wstest does not import afterwards.
#
#   AUTOBAHN_VENV  the venv (default ${XDG_CACHE_HOME:-$HOME/.cache}/switchboard-autobahn-venv)
#   PYTHON         the interpreter for a new venv (default python3; lib2to3 needs Python 3.12 or older)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${AUTOBAHN_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/switchboard-autobahn-venv}"
py="$venv/bin/python"
stamp="$venv/switchboard-conformance.stamp"
# What a finished venv was made from; any change to these files redoes the install and the port.
want="$(cat "$here/requirements.txt" "$here/py3port.py" "$here/py3compat.py" | sha256sum | cut -d' ' -f1)"

# Every pin is installed, and wstest starts and imports its fuzzing client and every case (else: the error
# on stderr).
ready() {
  "$py" - "$here/requirements.txt" <<'EOF' && "$venv/bin/wstest" --help >/dev/null
import sys
from importlib.metadata import version
for line in open(sys.argv[1]):
    pin = line.split("#")[0].strip()
    if pin and version(pin.split("==")[0]) != pin.split("==")[1]:
        sys.exit(f"setup: {pin} is not what is installed")
import autobahntestsuite.wstest, autobahntestsuite.fuzzing, autobahntestsuite.case
open(autobahntestsuite.__path__[0] + "/PORTED_TO_PY3").close()  # by this port, not another one
EOF
}

if [[ "$(cat "$stamp" 2>/dev/null)" == "$want" ]] && ready 2>/dev/null; then
  echo "setup: $venv is in place"
  exit 0
fi
rm -f "$stamp"

if ! "$py" -c '' 2>/dev/null; then
  # No venv, or one whose interpreter is gone: start over (only in an empty folder or an old venv).
  if [[ -e "$venv/pyvenv.cfg" ]]; then
    rm -rf "$venv"
  elif [[ -n "$(ls -A "$venv" 2>/dev/null)" ]]; then
    echo "setup: $venv is neither a venv nor empty; not touching it" >&2
    exit 1
  fi
  echo "setup: creating $venv"
  "${PYTHON:-python3}" -m venv "$venv"
fi

# --no-compile: no bytecode of the Python 2 sources, which the port rewrites (a rewrite to the same size
# within the same second would keep a stale .pyc). Given on the command line: pip reads PIP_NO_COMPILE=1
# as "compile".
pip=("$py" -m pip install --quiet --disable-pip-version-check --no-compile --use-pep517)
echo "setup: installing requirements.txt"
"${pip[@]}" -r "$here/requirements.txt"
# The port edits these two: always start it from the released sources (files it added would survive a
# reinstall, so the folders go first).
site="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
rm -rf "$site/autobahntestsuite" "$site/autobahn"
"${pip[@]}" --force-reinstall --no-deps $(grep -E '^(autobahntestsuite|autobahn)==' "$here/requirements.txt")

echo "setup: porting the suite to Python 3"
log="$venv/py3port.log"
if ! PYTHONDONTWRITEBYTECODE=1 "$py" "$here/py3port.py" >"$log" 2>&1; then
  tail -n 20 "$log" >&2
  echo "setup: the port failed (log: $log)" >&2
  exit 1
fi
# Belt and braces: no bytecode may predate the port.
find "$site/autobahntestsuite" "$site/autobahn" -name __pycache__ -prune -exec rm -rf {} +

if ! ready; then
  echo "setup: the ported wstest does not import (error above); $venv is left unfinished" >&2
  exit 1
fi
echo "$want" >"$stamp"
echo "setup: ok, $("$py" -c 'import autobahntestsuite as t, autobahn as a; print("autobahntestsuite", t.__version__, "/ autobahn", a.__version__)') in $venv"
