"""The real binary as a user runs it: check-config against what serve refuses, the docs' examples, two servers
on one host, SIGHUP reload under a connected client, the exit code on SIGTERM, and switchboard-bench's defaults
against a default serve. Every check is an explicit comparison (no assert statements, which -O removes), and
every wait has a time limit.

usage: cli_test.py SWITCHBOARD_BINARY BENCH_BINARY
"""
import asyncio
import atexit
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

import websockets

binary, bench = sys.argv[1], sys.argv[2]
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
temporary = tempfile.mkdtemp(prefix="switchboard-cli-")
failures = []
started = []  # every serve this script started: killed at exit, whatever happened


@atexit.register
def kill_leftovers():
    for process in started:
        if process.poll() is None:
            process.kill()


def check(condition, what):
    if not condition:
        failures.append(what)
        print(f"FAIL: {what}", flush=True)
    return condition


def write(name, text):
    path = os.path.join(temporary, name)
    with open(path, "w") as file:
        file.write(text)
    return path


def run(*arguments, timeout=60, env=None):
    return subprocess.run([binary, *arguments], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


class Server:
    """`switchboard serve` on free ports; its output is read line by line, so waits are for events."""

    def __init__(self, *arguments):
        self.lines = []
        self.partial = ""
        self.process = subprocess.Popen([binary, "serve", *arguments], stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)
        started.append(self.process)
        self.ws = self.wait_for(r"listening on (ws://\S+)")
        self.api = self.wait_for(r"API on (http://\S+)") if "--no-api" not in arguments else None

    def wait_for(self, pattern, timeout=30):
        """The first group of the first line (seen before or arriving within `timeout`) matching `pattern`."""
        for line in self.lines:
            if (match := re.search(pattern, line)):
                return match.group(1) if match.groups() else line
        deadline = time.time() + timeout
        os.set_blocking(self.process.stdout.fileno(), False)
        while time.time() < deadline:
            chunk = self.process.stdout.readline()
            if not chunk:
                if self.process.poll() is not None:
                    raise SystemExit(f"serve exited ({self.process.returncode}) before /{pattern}/:\n"
                                     + "".join(self.lines))
                time.sleep(0.05)
                continue
            # A non-blocking read may end mid-line: match whole lines only.
            self.partial += chunk
            if not self.partial.endswith("\n"):
                continue
            line, self.partial = self.partial, ""
            self.lines.append(line)
            if (match := re.search(pattern, line)):
                return match.group(1) if match.groups() else line
        raise SystemExit(f"no /{pattern}/ from serve within {timeout} s:\n" + "".join(self.lines))

    def port(self):
        return self.ws.rsplit(":", 1)[1].split("/")[0]

    def stop(self):
        """SIGTERM; the exit code (a drained serve exits 0)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return "killed after 60 s"


print("== check-config refuses exactly what serve refuses, with the same reason", flush=True)
secret = "a-token-secret-that-is-32-bytes!"
refused = [
    (["--token-secret", "too-short"], "an HMAC secret must be at least 32 bytes"),
    (["--api-key", "change-me"], "apiKey: must be at least 16 bytes"),
    (["--api-host", "0.0.0.0"], "reachable from other hosts: set apiKey"),
    (["--port", "70000"], "port: must be within 0…65535"),
    (["--deflate-level", "10"], "deflateLevel: must be within 1…9"),
    (["--prot", "1"], "unknown option --prot"),
    (["--tls-certificate", "/nonexistent.pem", "--tls-key", "/nonexistent.key"], "TLS:"),
]
for flags, reason in refused:
    checked = run("check-config", *flags)
    check(checked.returncode == 1 and "invalid configuration: " in checked.stdout and reason in checked.stdout,
          f"check-config {flags}: exit {checked.returncode}, {checked.stdout.strip()!r} (wanted 1 and {reason!r})")
    ports = [a for name in ("--port", "--api-port") if name not in flags for a in (name, "0")]
    served = run("serve", *ports, *flags, timeout=30)
    check(served.returncode not in (0, None) and served.returncode > 0 and reason in served.stderr + served.stdout,
          f"serve {flags}: exit {served.returncode}, {(served.stderr + served.stdout).strip()[-300:]!r}")
file = write("ok.json", json.dumps({"port": 9123, "tokenSecret": secret}))
for arguments in (["--config", file], [file], [file, "--port", "9124"], ["--port", "9125"]):
    checked = run("check-config", *arguments)
    check(checked.returncode == 0 and checked.stdout.startswith("configuration OK"),
          f"check-config {arguments}: exit {checked.returncode}, {checked.stdout[:200]!r}")
check("flag --port" in run("check-config", file, "--port", "9124").stdout, "check-config did not name the flag's layer")
both = run("check-config", file, "--config", file)
check(both.returncode == 1 and "not both" in both.stdout, f"check-config FILE --config FILE: {both.stdout[:200]!r}")
checked = run("check-config", os.path.join(root, "docs/switchboard.example.yaml"))
check(checked.returncode == 0, f"the example configuration: {checked.stdout[:300]!r}")
# docs/cluster.md's node file, as written there.
cluster_doc = open(os.path.join(root, "docs/cluster.md")).read()
node_yaml = re.search(r"```yaml\n(# node-a\.yaml.*?)```", cluster_doc, re.S)
if check(node_yaml is not None, "docs/cluster.md has no node-a.yaml example"):
    checked = run("check-config", write("node-a.yaml", node_yaml.group(1)))
    check(checked.returncode == 0, f"docs/cluster.md's node-a.yaml: {checked.stdout[:300]!r}")

print("== two servers on one host: the second names the listener that collided and the setting to change",
      flush=True)
first = Server("--port", "0", "--api-port", "0")
api_port = first.api.rsplit(":", 1)[1]
second = run("serve", "--port", "0", "--api-port", api_port, timeout=30)
check(second.returncode != 0 and "the server API cannot listen on 127.0.0.1:" + api_port in second.stderr
      and "--api-port" in second.stderr, f"second serve, API port taken: {second.returncode} {second.stderr[-300:]!r}")
third = run("serve", "--port", first.port(), "--no-api", timeout=30)
check(third.returncode != 0 and "the WebSocket listener cannot listen on" in third.stderr and "--port" in third.stderr,
      f"third serve, WebSocket port taken: {third.returncode} {third.stderr[-300:]!r}")

print("== every curl example in docs/API.md against a default serve with the documented key", flush=True)
api_doc = open(os.path.join(root, "docs/API.md")).read()
key_line = re.search(r"^KEY=(.*)$", api_doc, re.M)
check(key_line is not None and "openssl rand -hex 16" in key_line.group(1), "docs/API.md does not set KEY as shown")
key = subprocess.run(["bash", "-c", f"echo {key_line.group(1)}"], capture_output=True, text=True).stdout.strip()
check(len(key) >= 16, f"the documented key command gave {key!r}")
check(first.stop() == 0, "the first serve did not exit 0 after SIGTERM")
server = Server("--port", "0", "--api-port", "0", "--api-key", key)
api = server.api + "/api"
examples = re.findall(r"^(curl -s -H \"X-API-Key: \$KEY\" \$API/(\w+) .*)\n# (\{.*)$", api_doc, re.M)
check(len(examples) >= 13, f"only {len(examples)} curl examples found in docs/API.md")


async def user_connected(user):
    socket = await websockets.connect(f"{server.ws}?user={user}", open_timeout=10)
    await socket.send(json.dumps({"id": 1, "cmd": "connect"}))
    reply = json.loads(await asyncio.wait_for(socket.recv(), 10))
    check("ok" in reply, f"{user} could not connect: {reply}")
    return socket


async def run_examples():
    ada = await user_connected("ada")
    for line, endpoint, shown in examples:
        command = line.replace("curl -s", "curl -s --max-time 10 -w '\\n%{http_code}'", 1)
        result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=30,
                                env={**os.environ, "KEY": key, "API": api})
        body, _, status = result.stdout.rpartition("\n")
        try:
            answer = json.loads(body)
        except ValueError:
            answer = None
        # The answer the example shows: its fields, or (continued on the next lines) its first field.
        try:
            shown_keys = set(json.loads(shown))
        except ValueError:
            shown_keys = set(re.findall(r'^\{"(\w+)"', shown))
        check(status == "200" and isinstance(answer, dict) and "error" not in answer,
              f"docs/API.md {endpoint}: HTTP {status} {body[:200]!r}")
        if isinstance(answer, dict) and shown_keys:
            check(shown_keys <= set(answer), f"docs/API.md {endpoint}: shows {shown_keys}, got {sorted(answer)}")
    await ada.close()
    print(f"docs/API.md: {len(examples)} examples answered as shown", flush=True)

asyncio.run(run_examples())
for path, wanted in (("/health", 200), ("/ready", 200), ("/metrics", 200)):
    with urllib.request.urlopen(server.api + path, timeout=10) as response:
        check(response.status == wanted, f"{path}: {response.status}")
check(server.stop() == 0, "serve did not exit 0 after SIGTERM")

print("== SIGHUP reload: a bad file keeps the configuration, a good one applies; a session survives it", flush=True)
config = write("reload.json", json.dumps({"allowedOrigins": ["https://one.example"], "namespaces": {"": {}}}))
server = Server("--port", "0", "--no-api", "--config", config)


async def across_reload():
    headers = {"Origin": "https://one.example"}
    socket = await websockets.connect(f"{server.ws}?user=ada", open_timeout=10, additional_headers=headers)
    await socket.send(json.dumps({"id": 1, "cmd": "connect"}))
    check("ok" in json.loads(await asyncio.wait_for(socket.recv(), 10)), "connect before the reload")
    await socket.send(json.dumps({"id": 2, "cmd": "subscribe", "channel": "room"}))
    check("ok" in json.loads(await asyncio.wait_for(socket.recv(), 10)), "subscribe before the reload")
    with open(config, "w") as file:
        json.dump({"allowedOrigins": ["https://one.example"], "namespaces": {"": {"historySize": -1}}}, file)
    server.process.send_signal(signal.SIGHUP)
    server.wait_for("configuration reload failed; keeping the running configuration")
    with open(config, "w") as file:
        json.dump({"allowedOrigins": ["https://two.example"], "threads": 1, "namespaces": {"": {}, "chat": {}}}, file)
    server.process.send_signal(signal.SIGHUP)
    server.wait_for("configuration reloaded")
    line = server.wait_for("need a restart were not applied")
    check("changed=allowedOrigins" in "".join(server.lines), f"reload did not report allowedOrigins: {line}")
    # The open session carries on under the new configuration: its subscription still delivers.
    await socket.send(json.dumps({"id": 3, "cmd": "publish", "channel": "room", "data": {"after": "reload"}}))
    seen = []
    while not any(m.get("id") == 3 for m in seen) or not any(m.get("push") == "pub" for m in seen):
        seen.append(json.loads(await asyncio.wait_for(socket.recv(), 10)))
    check(any(m.get("push") == "pub" and m.get("data") == {"after": "reload"} for m in seen),
          f"the session opened before the reload did not get its publication: {seen}")
    # New connections meet the new origin list.
    try:
        await websockets.connect(f"{server.ws}?user=bob", open_timeout=10, additional_headers=headers)
        check(False, "the old origin was still accepted after the reload")
    except websockets.exceptions.InvalidStatus as refusal:
        check(refusal.response.status_code == 403, f"old origin: {refusal.response.status_code}")
    again = await websockets.connect(f"{server.ws}?user=bob", open_timeout=10,
                                     additional_headers={"Origin": "https://two.example"})
    await again.close()
    await socket.close()

asyncio.run(across_reload())
check(server.stop() == 0, "serve did not exit 0 after SIGTERM (after reloads)")

print("== switchboard-bench's defaults fit a default serve", flush=True)
server = Server("--port", "0", "--no-api")
recovery = subprocess.run([bench, "recovery", "--port", server.port(), "--rounds", "2"], capture_output=True,
                          text=True, timeout=180)
check(recovery.returncode == 0 and "all recovered: yes" in recovery.stdout,
      f"bench recovery with its defaults: {recovery.returncode} {recovery.stdout[-300:]!r} {recovery.stderr[-300:]!r}")
fanout = subprocess.run([bench, "fanout", "--port", server.port(), "--channel", "chat:bench", "--connections", "20",
                         "--workers", "1", "--source-addresses", "1", "--duration", "3"],
                        capture_output=True, text=True, timeout=180)
lines = fanout.stdout.strip().splitlines()
report = json.loads(lines[-1]) if fanout.returncode == 0 and lines else {}
check(report.get("delivered", 0) > 0 and report.get("lost") == 0 and report.get("connect_failures") == 0,
      f"bench fanout --channel with its defaults: {fanout.returncode} {fanout.stdout[-300:]!r}")
check(server.stop() == 0, "serve did not exit 0 after SIGTERM")

if failures:
    raise SystemExit(f"{len(failures)} check(s) failed:\n" + "\n".join(failures))
print("cli: every check passed")
