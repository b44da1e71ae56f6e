"""`switchboard serve` against an application backend of our own (Python's standard library, on loopback):
the event proxy (connect from a session cookie, subscribe, publish and rpc decided by the backend, a backend
that cannot be reached), the event webhook (signed batches, a refused batch sent again, connect, subscribe,
publication, unsubscribe, disconnect, occupied and vacated), and, on two nodes over a real `redis-server`,
occupied/vacated reported once for the cluster and idempotent publishes caught on either node.

usage: backend_test.py SWITCHBOARD_BINARY
"""
import asyncio
import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import websockets
from protocol_client import ProtocolClient as Client
from redis_server import RedisServer
from test_support import ServeProcess, eventually

# The checks below are assert statements: refuse to run where -O (or PYTHONOPTIMIZE) would strip them.
if not __debug__:
    raise SystemExit("run without -O / PYTHONOPTIMIZE: the checks are assert statements")

BINARY = sys.argv[1]
sys.stdout.reconfigure(line_buffering=True)  # each part's line as it passes, between the nodes' messages
TIMEOUT = 20  # seconds any awaited event may take on a busy machine
WEBHOOK_SECRET = "backend-test-webhook-secret-0123"
VACATED_DELAY = 5  # seconds a channel stays empty before the server reports it vacated
NAMESPACES = {
    "chat": {"historySize": 100, "presence": True, "joinLeave": True, "publicationEvents": True},
    "secret": {"proxySubscribe": True},
    "moderated": {"proxyPublish": True, "historySize": 10},
}


class Backend:
    """The application's backend: answers the event proxy's questions and receives the webhook's batches.

    Sessions by cookie: `alice-token` is alice; `banned-token` is disconnected 4501; `garbage-token` gets an
    answer that is not JSON; `down-token` gets HTTP 500; anything else (or no cookie) is refused 1401.
    The webhook endpoint checks each batch's signature as a user would, and answers 500 to the very first
    batch it receives (so the server must send it again), 200 to the rest.
    """

    def __init__(self):
        self.lock = threading.Lock()
        self.requests = []  # (path, headers, raw body, parsed body) of every proxy question, in order
        self.attempts = []  # every webhook POST: dict(id, header_id, raw, body, signed, status, at)
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.path == "/events":
                    status, answer = backend.webhook(raw, self.headers)
                else:
                    with backend.lock:
                        backend.requests.append((self.path, dict(self.headers), raw, json.loads(raw)))
                    status, answer = backend.proxy(self.path, json.loads(raw), self.headers)
                body = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def proxy(self, path: str, event: dict, headers) -> tuple:
        if path == "/connect":
            cookie = SimpleCookie(headers.get("Cookie", ""))
            session = cookie["session"].value if "session" in cookie else None
            if session == "alice-token":
                return 200, {"result": {"user": "alice", "info": {"name": "Alice"}, "data": {"plan": "pro"},
                                        "channels": ["chat:alice"], "expire_at": int(time.time()) + 3600}}
            if session == "banned-token":
                return 200, {"disconnect": {"code": 4501, "reason": "banned"}}
            if session == "garbage-token":
                return 200, b"this is not JSON"
            if session == "down-token":
                return 500, {"oops": True}
            return 200, {"error": {"code": 1401, "message": "no session"}}
        if path == "/subscribe":
            if event["channel"] == "secret:open":
                return 200, {"result": {"info": {"badge": "gold"}}}
            return 200, {"error": {"code": 1403, "message": "not for you"}}
        if path == "/publish":
            if "spam" in json.dumps(event["data"]):
                return 200, {"error": {"code": 1002, "message": "no spam here"}}
            return 200, {"result": {"data": {"text": event["data"]["text"].upper()}}}
        if path == "/rpc":
            return 200, {"result": {"data": {"method": event["method"], "data": event.get("data")}}}
        return 404, {"error": {"code": 1404, "message": "no such endpoint"}}

    def webhook(self, raw: bytes, headers) -> tuple:
        # The documented recipe: HMAC-SHA256 of the raw body with the shared secret, compared in constant time.
        expected = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), raw, hashlib.sha256).hexdigest()
        signed = hmac.compare_digest(expected, headers.get("X-Switchboard-Signature", ""))
        body = json.loads(raw)
        with self.lock:
            status = 500 if not self.attempts else (200 if signed else 401)
            self.attempts.append({"id": body["id"], "header_id": headers.get("X-Switchboard-Batch"), "raw": raw,
                                  "body": body, "signed": signed, "status": status, "at": time.time()})
        return status, {}

    def questions(self, path: str) -> list:
        with self.lock:
            return [(headers, raw, body) for p, headers, raw, body in self.requests if p == path]

    def events(self, **match) -> list:
        """Events of the batches taken (answered 200), in the order they arrived, that match every field."""
        with self.lock:
            taken = [a for a in self.attempts if a["status"] == 200]
        return [e for a in taken for e in a["body"]["events"] if all(e.get(k) == v for k, v in match.items())]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class Node(ServeProcess):
    def __init__(self, name: str, log_dir: str, *settings: str):
        super().__init__(
            BINARY, f"node {name}", os.path.join(log_dir, f"node-{name}.log"), "--stats-interval", "0", *settings)

    def stop(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


async def refused(url: str, cookie: str = None):
    """The upgrade's refusal: (status, body). Fails if the connection opens."""
    try:
        ws = await websockets.connect(url, additional_headers={"Cookie": cookie} if cookie else None,
                                      open_timeout=TIMEOUT)
    except websockets.InvalidStatus as refusal:
        return refusal.response.status_code, refusal.response.body
    await ws.close()
    raise AssertionError(f"the upgrade with cookie {cookie!r} was accepted")


def closed_port() -> int:
    """A loopback port where nothing listens (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_in_time_order(events: list):
    """Each node's events of a channel arrive in the order of their `time` (nodes send their batches each on
    their own, so two nodes' events of a channel may cross)."""
    last = {}
    for event in events:
        if "channel" not in event:
            continue
        key = (event["node"], event["channel"])
        assert event["time"] >= last.get(key, 0), f"{key}: {event} arrived after a later event"
        last[key] = event["time"]


def check_occupancy_alternates(events: list):
    """Each channel's occupied and vacated alternate, occupied first."""
    state = {}
    for event in events:
        if event["type"] in ("occupied", "vacated"):
            expected = "vacated" if state.get(event["channel"]) == "occupied" else "occupied"
            assert event["type"] == expected, f"{event['channel']}: {event['type']} after {state.get(event['channel'])}"
            state[event["channel"]] = event["type"]


async def single_node(backend: Backend, log_dir: str, config: str):
    """Part 1 and 2: the event proxy and the webhook on one node."""
    node = Node(
        "single", log_dir, "--config", config, "--proxy-headers", "Cookie",
        "--proxy-connect-url", f"{backend.url}/connect", "--proxy-subscribe-url", f"{backend.url}/subscribe",
        "--proxy-publish-url", f"{backend.url}/publish", "--proxy-rpc-url", f"{backend.url}/rpc",
        "--events-url", f"{backend.url}/events", "--events-secret", WEBHOOK_SECRET, "--events-max-delay", "0.2")
    try:
        # Upgrades the backend refuses, and ones it cannot decide.
        status, body = await refused(node.ws)
        assert status == 403 and b"no session" in body, (status, body)
        headers, _, asked = backend.questions("/connect")[-1]
        assert asked == {"transport": "websocket"} and "Cookie" not in headers, (asked, headers)
        status, body = await refused(node.ws, "session=someone-else")
        assert status == 403 and b"no session" in body, (status, body)
        status, body = await refused(node.ws, "session=banned-token")
        assert status == 403 and b"banned" in body, (status, body)
        status, _ = await refused(node.ws, "session=garbage-token")
        assert status == 502, status
        status, _ = await refused(node.ws, "session=down-token")
        assert status == 503, status
        print("connect proxy: no cookie and a wrong one 403 with the backend's message; disconnect 403; "
              "garbage 502; 5xx 503")

        # A session cookie connects without any token; the backend's channels are subscribed by the server.
        cookie = "session=alice-token"
        alice = await Client.open(node.ws, "alice", cookie)
        headers, _, asked = backend.questions("/connect")[-1]
        assert asked == {"transport": "websocket"} and headers.get("Cookie") == cookie, (asked, headers)
        pushed = await alice.push("subscribed", "chat:alice")
        assert pushed["channel"] == "chat:alice", pushed
        connected = await alice.ok("connect")
        assert connected["user"] == "alice" and connected["data"] == {"plan": "pro"}, connected
        client = connected["client"]
        assert isinstance(client, str) and client, connected
        presence = await alice.ok("presence", channel="chat:alice")
        assert [m["user"] for m in presence["members"]] == ["alice"], presence
        assert presence["members"][0]["data"] == {"name": "Alice"}, presence
        print(f"cookie connect: alice ({client}) without a token, chat:alice subscribed by the server, "
              "connect reply carries the backend's data, presence its info")

        # Subscribe proxy: refused with the backend's code and message, or allowed.
        closed = await alice.error("subscribe", channel="secret:closed")
        assert closed["code"] == 1403 and closed["message"] == "not for you", closed
        await alice.ok("subscribe", channel="secret:open")
        questions = [body for _, _, body in backend.questions("/subscribe")]
        assert [q["channel"] for q in questions] == ["secret:closed", "secret:open"], questions
        for q in questions:
            assert q["client"] == client and q["user"] == "alice" and q["transport"] == "websocket", q
        assert all(h.get("Cookie") == cookie for h, _, _ in backend.questions("/subscribe"))
        # Not asked in namespaces without proxySubscribe, nor for the server's own subscribes.
        await alice.ok("subscribe", channel="chat:room")
        assert len(backend.questions("/subscribe")) == 2, backend.questions("/subscribe")
        print("subscribe proxy: secret:closed refused 1403 with the backend's message, secret:open allowed, "
              "chat:* not asked")

        # Publish proxy: the backend rewrites the data (a second subscriber sees the rewritten data) or refuses.
        watcher = await Client.open(node.ws, "watcher", cookie)
        await watcher.ok("subscribe", channel="moderated:room")
        raw = '{"text":  "hello  world",   "n": 1}'
        published = await alice.ok("publish", channel="moderated:room", raw_data=raw)
        _, sent, asked = backend.questions("/publish")[-1]
        assert raw.encode() in sent, f"the client's bytes were not forwarded exactly: {sent!r}"
        assert asked["client"] == client and asked["user"] == "alice" and asked["channel"] == "moderated:room", asked
        pub = await watcher.push("pub", "moderated:room")
        assert pub["data"] == {"text": "HELLO  WORLD"} and pub["offset"] == published["offset"], pub
        spam = await alice.error("publish", channel="moderated:room", data={"text": "buy spam"})
        assert spam["code"] == 1002 and spam["message"] == "no spam here", spam
        after = await alice.ok("publish", channel="moderated:room", data={"text": "after"})
        pub = await watcher.push("pub", "moderated:room")
        assert pub["data"] == {"text": "AFTER"} and pub["offset"] == after["offset"] == published["offset"] + 1, pub
        history = await alice.ok("history", channel="moderated:room", limit=10)
        assert [p["data"]["text"] for p in history["publications"]] == ["HELLO  WORLD", "AFTER"], history
        print("publish proxy: data rewritten for subscribers and history; spam refused 1002, never delivered")

        # RPC: the backend's answer comes back as it wrote it.
        echoed = await alice.ok("rpc", method="echo", data={"n": [1, 2, 3], "s": "é"})
        assert echoed == {"data": {"method": "echo", "data": {"n": [1, 2, 3], "s": "é"}}}, echoed
        _, _, asked = backend.questions("/rpc")[-1]
        assert asked["client"] == client and asked["user"] == "alice" and asked["method"] == "echo", asked
        print("rpc proxy: method and data round-trip")

        # A channel's life for the webhook: chat:room (subscribed above) gets a publication, alice leaves
        # it, then closes her connection; the channel is empty from the unsubscribe on.
        message = await alice.ok("publish", channel="chat:room", data={"text": "hi room"})
        await alice.ok("unsubscribe", channel="chat:room")
        left_at = time.time()
        await alice.close(4000, "bye")
        await eventually("alice's disconnect event", lambda: backend.events(type="disconnect", client=client))
        vacated = await eventually("chat:room vacated", lambda: backend.events(type="vacated", channel="chat:room"),
                                   timeout=VACATED_DELAY + 3)
        vacated_after = time.time() - left_at
        assert vacated_after >= VACATED_DELAY - 0.5, f"vacated {vacated_after:.1f} s after the last subscriber left"
        assert vacated[0]["time"] / 1000 >= left_at + VACATED_DELAY - 0.5, (vacated, left_at)

        # The server API disconnects the watcher with a code and reason of its own.
        watcher_id = (await watcher.ok("connect"))["client"]
        node.call("disconnect", {"user": "alice", "code": 4100, "reason": "kicked"})
        assert await asyncio.wait_for(watcher.closed, TIMEOUT) == 4100
        kicked = await eventually("the watcher's disconnect event",
                                  lambda: backend.events(type="disconnect", client=watcher_id))
        assert [(e["code"], e["reason"]) for e in kicked] == [(4100, "kicked")], kicked
        await eventually("the watcher's unsubscribe", lambda: backend.events(type="unsubscribe", client=watcher_id,
                                                                             channel="moderated:room"))

        # The webhook's batches: each signed, with its id in the header; the first one refused and sent again
        # unchanged; every other one taken exactly once.
        with backend.lock:
            attempts = list(backend.attempts)
        assert all(a["signed"] for a in attempts), [a["raw"] for a in attempts if not a["signed"]]
        assert all(a["header_id"] == a["id"] for a in attempts), [(a["header_id"], a["id"]) for a in attempts]
        assert len(attempts) >= 2 and attempts[0]["status"] == 500, attempts[:2]
        retries = [a for a in attempts[1:] if a["id"] == attempts[0]["id"]]
        assert len(retries) == 1 and retries[0]["status"] == 200, retries
        assert retries[0]["raw"] == attempts[0]["raw"], "the batch sent again is not the same body"
        assert attempts[1]["id"] == attempts[0]["id"], "another batch overtook the refused one"
        retry_gap = attempts[1]["at"] - attempts[0]["at"]
        assert 0.2 <= retry_gap <= 5, f"refused batch sent again after {retry_gap:.2f} s"
        taken = [a["id"] for a in attempts if a["status"] == 200]
        assert len(taken) == len(set(taken)), f"a batch was taken twice: {taken}"
        assert all(a["body"]["node"] and all(e["node"] == a["body"]["node"] for e in a["body"]["events"])
                   for a in attempts)

        # Their events: connect (alice only: refused upgrades make none), subscribe (the server's own too),
        # publication in chat (not in moderated), unsubscribe, disconnect with code and reason, occupied
        # before vacated; each channel's in time order.
        events = backend.events()
        check_in_time_order(events)
        assert all(e["user"] == "alice" for e in events if e["type"] == "connect"), events
        mine = [e for e in events if e.get("client") == client]
        assert mine[0]["type"] == "connect" and mine[0]["user"] == "alice", mine
        # The connection's last word is its disconnect: the unsubscribes of what it still held come before.
        ends = [i for i, e in enumerate(mine) if e["type"] == "disconnect"]
        assert ends == [len(mine) - 1], mine
        subscribed = {e["channel"] for e in mine if e["type"] == "subscribe"}
        assert subscribed == {"chat:alice", "secret:open", "chat:room"}, mine
        unsubscribed = {e["channel"] for e in mine if e["type"] == "unsubscribe"}
        assert unsubscribed == {"chat:alice", "secret:open", "chat:room"}, mine
        publications = [e for e in events if e["type"] == "publication"]
        assert len(publications) == 1, publications
        assert publications[0]["channel"] == "chat:room" and publications[0]["client"] == client \
            and publications[0]["user"] == "alice" and publications[0]["offset"] == message["offset"] \
            and publications[0]["data"] == {"text": "hi room"}, publications
        disconnect = [e for e in mine if e["type"] == "disconnect"]
        assert len(disconnect) == 1 and disconnect[0]["code"] == 4000 and disconnect[0]["reason"] == "bye", \
            disconnect
        room = [e["type"] for e in events if e.get("channel") == "chat:room"]
        assert room == ["occupied", "subscribe", "publication", "unsubscribe", "vacated"], room
        check_occupancy_alternates(events)
        print(f"webhook: {len(attempts)} batches all signed; the first answered 500 was sent again unchanged "
              f"after {retry_gap:.2f} s; connect, subscribe, publication, unsubscribe, disconnect "
              f"(code {disconnect[0]['code']}, reason {disconnect[0]['reason']!r}), occupied, vacated after "
              f"{vacated_after:.1f} s; each channel in time order")
    finally:
        node.stop()


async def backend_down(log_dir: str):
    """Part 3: the rpc backend cannot be reached."""
    node = Node("down", log_dir, "--proxy-rpc-url", f"http://127.0.0.1:{closed_port()}/rpc")
    try:
        bob = await Client.open(f"{node.ws}?user=bob", "bob")
        started = time.time()
        failed = await bob.error("rpc", method="anything", data={"x": 1})
        took = time.time() - started
        assert failed["code"] == 110, failed
        assert took < 6, f"rpc failed only after {took:.1f} s"
        await bob.ok("ping")
        assert (await bob.error("rpc", method="again"))["code"] == 110
        await bob.ok("ping")
        await bob.close()
        print(f"backend down: rpc answered 110 after {took:.2f} s ({failed['message']!r}); the connection stayed")
    finally:
        node.stop()


async def cluster(backend: Backend, log_dir: str, config: str):
    """Part 4: two nodes over Redis, both reporting to the same webhook."""
    redis = RedisServer(TIMEOUT)
    nodes = []
    try:
        for name in ["a", "b"]:
            nodes.append(Node(
                name, log_dir, "--config", config, "--redis", f"redis://127.0.0.1:{redis.port}", "--node-id", name,
                "--node-info-interval", "1", "--events-url", f"{backend.url}/events",
                "--events-secret", WEBHOOK_SECRET, "--events-max-delay", "0.2"))
        a, b = nodes
        for node in nodes:
            await eventually(f"node info on {node.name}",
                             lambda node=node: sorted(n["id"] for n in node.call("info", {})["nodes"]) == ["a", "b"])
        shared = "chat:shared"

        def kinds(channel=shared):
            return [e["type"] for e in backend.events(channel=channel) if e["type"] in ("occupied", "vacated")]

        # One subscriber on each node: occupied once for the cluster; both leave: vacated once.
        ada = await Client.open(f"{a.ws}?user=ada", "ada")
        bob = await Client.open(f"{b.ws}?user=bob", "bob")
        await ada.ok("subscribe", channel=shared)
        await bob.ok("subscribe", channel=shared)
        await eventually("both subscribe events", lambda: len(backend.events(type="subscribe", channel=shared)) == 2)
        await eventually("occupied", lambda: kinds() == ["occupied"])
        await ada.ok("unsubscribe", channel=shared)
        await bob.ok("unsubscribe", channel=shared)
        left_at = time.time()
        await eventually("vacated", lambda: "vacated" in kinds(), timeout=VACATED_DELAY + 5)
        vacated_after = time.time() - left_at
        assert kinds() == ["occupied", "vacated"], kinds()
        assert vacated_after >= VACATED_DELAY - 0.5, f"vacated after {vacated_after:.1f} s"
        nodes_of = {e["node"] for e in backend.events(channel=shared)}
        assert nodes_of == {"a", "b"}, nodes_of
        print(f"cluster webhook: one occupied for subscribers on two nodes, one vacated {vacated_after:.1f} s "
              "after both left")

        # Occupied again; the subscriber moves from A to B within a second: neither vacated nor occupied.
        await ada.ok("subscribe", channel=shared)
        await eventually("occupied again", lambda: kinds() == ["occupied", "vacated", "occupied"])
        await ada.ok("unsubscribe", channel=shared)
        moved_at = time.time()
        await bob.ok("subscribe", channel=shared)
        assert time.time() - moved_at < 1, "the move took over a second"
        await eventually("bob's second subscribe", lambda: len(backend.events(type="subscribe", channel=shared)) == 4)
        # Proving nothing is reported: past the vacated delay plus two seconds for batches on their way.
        await asyncio.sleep(max(0.0, moved_at + VACATED_DELAY + 2 - time.time()))
        assert kinds() == ["occupied", "vacated", "occupied"], kinds()
        # The channel still reports vacated once it really is empty.
        await bob.ok("unsubscribe", channel=shared)
        await eventually("vacated at the end", lambda: kinds() == ["occupied", "vacated", "occupied", "vacated"],
                         timeout=VACATED_DELAY + 5)
        print("cluster webhook: a subscriber moving from A to B within 1 s made no vacated/occupied "
              f"({VACATED_DELAY + 2} s watched); vacated when B's left too")

        # Idempotent publish through the API: the same key on A then B, one publication.
        idem = "chat:idem"
        await bob.ok("subscribe", channel=idem)
        first = a.call("publish", {"channel": idem, "data": {"text": "once"}, "idempotency_key": "api-key-1"})
        again = b.call("publish", {"channel": idem, "data": {"text": "once"}, "idempotency_key": "api-key-1"})
        assert again == first and "offset" in first, (first, again)
        # A client's keyed publish on A, repeated by the same user's connection on B (keys are the user's).
        mine = await ada.ok("publish", channel=idem, data={"text": "client once"}, idempotency_key="client-key-1")
        ada_on_b = await Client.open(f"{b.ws}?user=ada", "ada")
        repeat = await ada_on_b.ok("publish", channel=idem, data={"text": "client once"},
                                   idempotency_key="client-key-1")
        await ada_on_b.close()
        assert repeat["offset"] == mine["offset"] == first["offset"] + 1, (first, mine, repeat)
        marker = b.call("publish", {"channel": idem, "data": {"text": "marker"}})
        seen = []
        while not seen or seen[-1]["offset"] < marker["offset"]:
            seen.append(await bob.push("pub", idem))
        assert [(p["offset"], p["data"]["text"]) for p in seen] == [
            (first["offset"], "once"), (mine["offset"], "client once"), (marker["offset"], "marker")], seen
        history = await bob.ok("history", channel=idem, limit=10)
        assert [p["data"]["text"] for p in history["publications"]] == ["once", "client once", "marker"], history
        # Publication events: client publishes only, the repeat none.
        await eventually("the client publication's event", lambda: backend.events(type="publication", channel=idem))
        await bob.ok("unsubscribe", channel=idem)
        await eventually("bob's unsubscribe from chat:idem",
                         lambda: backend.events(type="unsubscribe", channel=idem))
        publications = backend.events(type="publication", channel=idem)
        assert [(e["offset"], e["node"], e["data"]) for e in publications] == [
            (mine["offset"], "a", {"text": "client once"})], publications
        print(f"idempotent publish: the API's key on A then B answered offset {first['offset']} twice, a client's "
              "on A then B once; the subscriber saw each publication once")

        check_in_time_order(backend.events())
        check_occupancy_alternates(backend.events())
        with backend.lock:
            attempts = [a for a in backend.attempts if a["body"]["node"] in ("a", "b")]
        assert attempts and all(a["signed"] and a["status"] == 200 for a in attempts)
        taken = [a["id"] for a in attempts]
        assert len(taken) == len(set(taken)), f"a batch was taken twice: {taken}"
        await ada.close()
        await bob.close()
    finally:
        for node in nodes:
            node.stop()
        redis.kill()


async def main():
    started = time.time()
    log_dir = tempfile.mkdtemp(prefix="switchboard-backend-")
    config = os.path.join(log_dir, "switchboard.json")
    with open(config, "w") as f:
        json.dump({"namespaces": NAMESPACES}, f)
    # The cluster's nodes have no subscribe or publish proxy, which the other namespaces would need.
    cluster_config = os.path.join(log_dir, "cluster.json")
    with open(cluster_config, "w") as f:
        json.dump({"namespaces": {"chat": NAMESPACES["chat"]}}, f)
    backend = Backend()
    try:
        await single_node(backend, log_dir, config)
        await backend_down(log_dir)
        await cluster(backend, log_dir, cluster_config)
    except BaseException:
        print(f"node logs in {log_dir}", file=sys.stderr)
        raise
    finally:
        backend.stop()
    print(f"backend tests passed in {time.time() - started:.0f} s")


asyncio.run(main())
