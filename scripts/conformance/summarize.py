#!/usr/bin/env python3
"""Summarise an Autobahn|Testsuite fuzzingclient report: python3 summarize.py REPORT_DIR [EXPECTED_CASES]

Prints, for cases 1.*-10.* and for 12.*/13.* (permessage-deflate) separately, how many came back with each
behaviour, then every bad case with its description. Exit status: 0 all OK or INFORMATIONAL; 1 some case
FAILED, NON-STRICT or UNIMPLEMENTED (in 12.*/13.*: permessage-deflate was not negotiated); 2 no report,
no case in it, or fewer cases than EXPECTED_CASES (the run stopped early).
"""
import html
import json
import os
import re
import sys
from collections import Counter

BEHAVIOURS = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]
GOOD = {"OK", "INFORMATIONAL"}


def case_key(case_id):
    return [int(part) for part in case_id.split(".")]


def text(markup):
    """A report's HTML fragment as one line of plain text."""
    return " ".join(html.unescape(re.sub(r"<[^>]*>", " ", markup or "")).split())


def main(report_dir, expected=None):
    try:
        with open(os.path.join(report_dir, "index.json"), encoding="utf-8") as f:
            cases = {cid: result for agent in json.load(f).values() for cid, result in agent.items()}
    except (OSError, ValueError) as error:
        print(f"conformance: no report in {report_dir} ({error})")
        return 2
    ids = sorted(cases, key=case_key)
    deflate = [cid for cid in ids if cid.split(".")[0] in ("12", "13")]
    groups = [("1.*-10.*", [cid for cid in ids if cid not in deflate]), ("12.*, 13.* (deflate)", deflate)]

    print(f"{'':22}{'cases':>6}" + "".join(f"{b:>14}" for b in BEHAVIOURS))
    for label, members in groups:
        counts = Counter(cases[cid]["behavior"] for cid in members)
        print(f"{label:22}{len(members):>6}" + "".join(f"{counts[b]:>14}" for b in BEHAVIOURS))

    bad = [cid for cid in ids if cases[cid]["behavior"] not in GOOD]
    for cid in bad:
        result = cases[cid]
        try:
            with open(os.path.join(report_dir, result["reportfile"]), encoding="utf-8") as f:
                detail = json.load(f)
        except (OSError, ValueError, KeyError):
            detail = {}
        print(f"{result['behavior']} {cid}: {text(detail.get('description'))}")
        if detail.get("result"):
            print(f"    {text(detail['result'])} (close: {result.get('behaviorClose')}, "
                  f"code {result.get('remoteCloseCode')})")
    if deflate and all(cases[cid]["behavior"] == "UNIMPLEMENTED" for cid in deflate):
        print("every 12.*/13.* case is UNIMPLEMENTED: the server did not negotiate permessage-deflate")

    print(f"report: {os.path.abspath(os.path.join(report_dir, 'index.html'))}")
    if not ids or (expected is not None and len(ids) < expected):
        print(f"conformance: the report has {len(ids)} of {expected} cases: the run stopped early")
        return 2
    if bad:
        print(f"conformance: {len(bad)} of {len(ids)} cases bad")
        return 1
    print(f"conformance: all {len(ids)} cases OK or INFORMATIONAL")
    return 0


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) == 3 else None))
