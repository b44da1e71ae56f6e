"""Port the installed Autobahn|Testsuite to Python 3, in place. setup.sh runs it with the venv's python,
on a fresh install of the two packages it edits.

The testsuite (PyPI autobahntestsuite, even its last release) is Python 2 code. The port is mechanical:
2to3 over the package, the shims of py3compat.py (copied in as autobahntestsuite/_py3.py) where Python 2
byte strings meet Python 3 bytes, and a short list of exact edits below. No case, expectation or verdict
rule changes. Every edit must apply exactly as listed, or the port stops: another release needs review.
"""
import os
import re
import shutil
import sys
import sysconfig
import warnings
from importlib.metadata import version

HERE = os.path.dirname(os.path.abspath(__file__))
VERSIONS = {"autobahntestsuite": "25.10.1", "autobahn": "0.10.9"}
MARKER = "PORTED_TO_PY3"

# (file in site-packages, old text, new text, how many times the old text occurs)
EDITS = [
    # Payloads leave the cases as bytes (py3compat.BytesPayloads, ahead of Autobahn's protocol class).
    ("autobahntestsuite/fuzzing.py", "class FuzzingProtocol:", "class FuzzingProtocol(_py3.BytesPayloads):", 1),
    # A case passes when what it received equals what it expected: compare octets, as Python 2 did.
    ("autobahntestsuite/case/case.py", "return pickle.dumps(obj1) == pickle.dumps(obj2)",
     "return pickle.dumps(_py3.as_py2(obj1)) == pickle.dumps(_py3.as_py2(obj2))", 1),
    ("autobahntestsuite/case/case.py", "import pickle\n", "import pickle\nfrom autobahntestsuite import _py3\n", 1),
    # The wire log and the reports: payloads as text, no bytes in the JSON, files in UTF-8.
    ("autobahntestsuite/fuzzing.py", "p = ''.join(payload)", "p = b''.join(payload)", 1),
    ("autobahntestsuite/fuzzing.py", '   ellipses = " ..."\n   try:',
     '   data, ellipses = _py3.octets(data), b" ..."\n   try:', 1),
    ("autobahntestsuite/fuzzing.py", "self.factory.logCase(caseResult)", "self.factory.logCase(_py3.for_json(caseResult))", 1),
    ("autobahntestsuite/fuzzing.py", "report_filename), 'w')", "report_filename), 'w', encoding='utf-8')", 4),
    ("autobahntestsuite/fuzzing.py", '(c[0], case[c[0]], c[1])).encode("utf-8"))', "(c[0], case[c[0]], c[1])))", 1),
    ("autobahntestsuite/fuzzing.py", "ll.encode('utf8'))", "ll)", 1),
    # Python 2 integer division.
    ("autobahntestsuite/case/case10_1_1.py", "len(self.payload) / self.p.autoFragmentSize",
     "len(self.payload) // self.p.autoFragmentSize", 1),
    ("autobahn/websocket/protocol.py", "range(payload_len / len(payload))", "range(payload_len // len(payload))", 1),
    # zope.interface dropped the class advice implements().
    ("autobahntestsuite/case/case9_9_1.py", "from zope.interface import implements\n",
     "from zope.interface import implementer\n", 1),
    ("autobahntestsuite/case/case9_9_1.py", "class FrameProducer:\n\n   implements(interfaces.IPushProducer)\n",
     "@implementer(interfaces.IPushProducer)\nclass FrameProducer:\n", 1),
    # The serializer mode needs Autobahn's Python 2 WAMP tests: import it only when that mode runs.
    ("autobahntestsuite/wstest.py", "\nfrom . import serializer\n", "\n", 1),
    ("autobahntestsuite/wstest.py", "return serializer.start(", "from . import serializer\n         return serializer.start(", 1),
    # The UTF-8 cases build their test sequences with the validator, from byte strings.
    ("autobahntestsuite/case/case6_x_x.py", "from autobahn.websocket.utf8validator import Utf8Validator",
     "from autobahntestsuite._py3 import Utf8Validator", 1),
]


def edit(path, old, new, count):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if text.count(old) != count:
        sys.exit(f"py3port: {path}: expected {count} of {old!r}, found {text.count(old)}")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text.replace(old, new))


def rewrite(path, fix):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    new = fix(text)
    if new != text:
        with open(path, "w", encoding="utf-8") as f:
            f.write(new)


def case_file_fixes(text):
    # A non-ASCII literal in a Python 2 source is its UTF-8 octets: write them as \xNN escapes.
    text = re.sub(r"[^\x00-\x7f]", lambda m: "".join(f"\\x{b:02x}" for b in m.group().encode()), text)
    # Case is a new-style class now: (object, Case) has no consistent method order.
    text = text.replace("(object, Case, )", "(Case, )")
    # Descriptions show the payload as text (6.2.*).
    return re.sub(r"\b(PAYLOAD\d?), binascii", r"_py3.show(\1), binascii", text)


def binascii_fix(text):
    # binascii as in Python 2: hex of byte strings, as str. This also brings _py3 into fuzzing.py for EDITS.
    return re.sub(r"(?m)^([ \t]*import .*\bbinascii\b.*)$",
                  r"\1; from autobahntestsuite import _py3; binascii = _py3.binascii", text)


def main():
    site = sysconfig.get_paths()["purelib"]
    suite = os.path.join(site, "autobahntestsuite")
    for name, wanted in VERSIONS.items():
        if version(name) != wanted:
            sys.exit(f"py3port: written for {name}=={wanted}, found {version(name)}")
    if os.path.exists(os.path.join(suite, MARKER)):
        sys.exit("py3port: already ported; reinstall autobahntestsuite and autobahn first")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lib2to3 is deprecated (and gone in Python 3.13)
        from lib2to3.main import main as run_2to3
    rc = run_2to3("lib2to3.fixes", ["--write", "--nobackups", "--no-diffs", "--processes", "2", suite])
    if rc:
        sys.exit(f"py3port: 2to3 failed ({rc})")

    shutil.copy(os.path.join(HERE, "py3compat.py"), os.path.join(suite, "_py3.py"))
    for root, _, files in os.walk(suite):
        for name in files:
            if name.endswith(".py") and name != "_py3.py":
                path = os.path.join(root, name)
                rewrite(path, binascii_fix)
                if os.path.basename(root) == "case":
                    rewrite(path, case_file_fixes)
    for rel, old, new, count in EDITS:
        edit(os.path.join(site, rel), old, new, count)
    with open(os.path.join(suite, MARKER), "w") as f:
        f.write("ported by scripts/conformance/py3port.py\n")


if __name__ == "__main__":
    main()
