#!/bin/sh
# Builds the C benchmark reference programs into .build/cbench/: wsbroadcast (the C reference
# WebSocket broadcaster) and wschurn (the C connection-churn load generator). Only gcc and libc.
# Idempotent; warnings are errors so that "no warnings" stays true.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out="$root/.build/cbench"
mkdir -p "$out"
CC=${CC:-gcc}
for program in wsbroadcast wschurn; do
    "$CC" -std=c11 -O2 -Wall -Wextra -Werror -o "$out/$program.tmp" "$here/$program.c"
    mv -f "$out/$program.tmp" "$out/$program"  # never leave a half-written binary in place
done
"$out/wsbroadcast" --self-test >/dev/null || { echo "wsbroadcast self-test failed" >&2; exit 1; }
echo "built $out/wsbroadcast $out/wschurn"
