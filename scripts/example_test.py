"""switchboard-example-hummingbird as a user runs it: /hello, the channel protocol at /ws and the server API under
/api/ on one port; the hub's refusals as the app's HTTP statuses; tokens when a secret is given; SIGTERM draining
the hub (close 1001) and exiting 0. Every check is an explicit comparison and every wait has a time limit.

usage: example_test.py EXAMPLE_BINARY SWITCHBOARD_BINARY
"""
import asyncio
import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import websockets

example, switchboard = sys.argv[1], sys.argv[2]
failures = []


def check(condition, what):
    if not condition:
        failures.append(what)
        print(f"FAIL: {what}", flush=True)
    return condition


def start(*arguments):
    process = subprocess.Popen([example, "--port", "0", *arguments], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 60
    lines = []
    while time.time() < deadline:
        line = process.stdout.readline()
        if not line:
            raise SystemExit("the example exited before listening:\n" + "".join(lines))
        lines.append(line)
        if (match := re.search(r"listening on http://(\S+)", line)):
            return process, match.group(1)
    process.kill()
    raise SystemExit("the example did not listen within 60 s:\n" + "".join(lines))


def http(address, path, body=None, headers=None):
    request = urllib.request.Request(f"http://{address}{path}", data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


async def next_message(ws, marker):
    while True:
        text = await asyncio.wait_for(ws.recv(), 10)
        if marker in text:
            return json.loads(text)


async def refused(address, path, headers=None):
    try:
        async with websockets.connect(f"ws://{address}{path}", additional_headers=headers or {}, open_timeout=10):
            return None
    except websockets.exceptions.InvalidStatus as error:
        return error.response.status_code, error.response.body.decode()


async def demo(address, process):
    status, body = http(address, "/hello")
    check(status == 200 and body == "hello", f"/hello: {status} {body!r}")
    async with websockets.connect(f"ws://{address}/ws?user=ada", open_timeout=10) as ws:
        await ws.send(json.dumps({"id": 1, "cmd": "subscribe", "channel": "chat:lobby"}))
        reply = await next_message(ws, '"id":1')
        check("ok" in reply, f"subscribe: {reply}")
        status, body = http(address, "/api/publish", json.dumps({"channel": "chat:lobby", "data": {"n": 1}}).encode())
        check(status == 200 and '"offset":1' in body, f"/api/publish: {status} {body}")
        push = await next_message(ws, '"push":"pub"')
        check(push.get("data") == {"n": 1} and push.get("offset") == 1, f"publication: {push}")
        status, body = http(address, "/api/info", b"{}")
        check(status == 200 and '"connections":1' in body, f"/api/info: {status} {body}")
        status, body = http(address, "/metrics")
        check(status == 200 and "switchboard_connections_open" in body, f"/metrics: {status} {body[:200]!r}")
        # Demo mode trusts ?user= only from this host: a forwarded request is the app's 403.
        answer = await refused(address, "/ws?user=eve", {"X-Forwarded-For": "203.0.113.9"})
        check(answer is not None and answer[0] == 403, f"a forwarded demo upgrade: {answer}")
        answer = await refused(address, "/elsewhere")
        check(answer is not None and answer[0] == 404, f"an upgrade off the mount path: {answer}")
        # SIGTERM: the app shuts down gracefully, the hub drains its connection with 1001, the process exits 0.
        process.send_signal(signal.SIGTERM)
        notice = await next_message(ws, '"push":"disconnect"')
        check(notice.get("reconnect") is True, f"disconnect notice: {notice}")
        code = None
        try:
            while True:
                await asyncio.wait_for(ws.recv(), 10)
        except websockets.exceptions.ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd is not None else None
        check(code == 1001, f"close code on shutdown: {code}")
    code = process.wait(timeout=60)
    check(code == 0, f"exit code after SIGTERM: {code}")


async def tokens(address):
    secret = "a-token-secret-that-is-32-bytes!"
    minted = subprocess.run([switchboard, "token", "--token-secret", secret, "--user", "ada", "--ttl", "600"],
                            capture_output=True, text=True, timeout=30)
    token = minted.stdout.strip()
    check(minted.returncode == 0 and token.count(".") == 2, f"switchboard token: {minted.stdout} {minted.stderr}")
    answer = await refused(address, "/ws", {"Authorization": "Bearer not.a.token"})
    check(answer is not None and answer[0] == 401, f"a bad token: {answer}")
    async with websockets.connect(f"ws://{address}/ws", additional_headers={"Authorization": f"Bearer {token}"},
                                  open_timeout=10) as ws:
        await ws.send(json.dumps({"id": 1, "cmd": "connect"}))
        reply = await next_message(ws, '"id":1')
        check(reply.get("ok", {}).get("user") == "ada", f"connect with a token: {reply}")


print("== demo mode: /hello, /ws, /api/ and /metrics on one port; refusals; SIGTERM", flush=True)
process, address = start()
try:
    asyncio.run(demo(address, process))
finally:
    if process.poll() is None:
        process.kill()
print("== with a token secret: bearer tokens at the upgrade", flush=True)
process, address = start("--token-secret", "a-token-secret-that-is-32-bytes!")
try:
    asyncio.run(tokens(address))
finally:
    process.send_signal(signal.SIGTERM)
    check(process.wait(timeout=60) == 0, "exit code with tokens")

if failures:
    sys.exit(f"{len(failures)} failure(s)")
print("example: all checks passed")
