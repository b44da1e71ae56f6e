"""Three `switchboard serve` nodes and a real `redis-server` on loopback, driven by real WebSocket clients
(Python `websockets`) and the HTTP API: cross-node fan-out, presence, user-targeted commands, node info,
recovery on another node, a node killed with SIGKILL, and Redis dropped, restarted and paused.

usage: cluster_test.py SWITCHBOARD_BINARY
"""
import asyncio
import json
import socket
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

from protocol_client import ProtocolClient
from redis_server import RedisServer
from test_support import ServeProcess, eventually

# The checks below are assert statements: refuse to run where -O (or PYTHONOPTIMIZE) would strip them.
if not __debug__:
    raise SystemExit("run without -O / PYTHONOPTIMIZE: the checks are assert statements")

BINARY = sys.argv[1]
TIMEOUT = 20  # seconds any awaited event may take on a busy machine


class Redis(RedisServer):
    def __init__(self):
        super().__init__(TIMEOUT)


class Node(ServeProcess):
    def __init__(self, name: str, redis: Redis, log_dir: str):
        super().__init__(
            BINARY, f"node {name}", os.path.join(log_dir, f"node-{name}.log"),
            "--redis", f"redis://127.0.0.1:{redis.port}", "--node-id", name, "--node-name", f"node-{name}",
            "--presence-ttl", "3", "--node-info-interval", "1", "--redis-timeout", "1", "--chat-history-size", "1000",
            "--publish-rate", "10000", "--publish-burst", "10000", "--ping-interval", "2", "--pong-timeout", "5")

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(f"{self.api}/metrics", timeout=TIMEOUT) as response:
            for line in response.read().decode().splitlines():
                if line.split(" ")[0] == name:
                    return float(line.split()[-1])
        return 0.0

    def kill(self):
        self.process.kill()
        self.process.wait()

    def stop(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class Client(ProtocolClient):
    """A user's connection to a node (demo mode names the user with `?user=`)."""

    @classmethod
    async def open(cls, node: Node, user: str) -> "Client":
        return await super().open(f"{node.ws}?user={user}", user)


class HTTPStream:
    """The HTTP transport's downstream, read from a raw socket: one protocol message per `data:` line."""

    def __init__(self, node: "Node", user: str):
        host, port = node.ws.split("//")[1].split("/")[0].split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=TIMEOUT)
        self.sock.sendall(f"GET /http-stream?user={user} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        self.buffer = b""
        self.head_done = False
        self.messages = []

    async def next_message(self, where=lambda m: True) -> dict:
        """The first message `where` accepts; the others stay for later calls (a reply and a push may come
        in either order)."""
        deadline = time.time() + TIMEOUT
        while True:
            for index, message in enumerate(self.messages):
                if where(message):
                    return self.messages.pop(index)
            if time.time() > deadline:
                raise TimeoutError("no such message on the stream")
            if not self.head_done and b"\r\n\r\n" in self.buffer:
                self.buffer = self.buffer.split(b"\r\n\r\n", 1)[1]
                self.head_done = True
            while self.head_done and b"\n\n" in self.buffer:
                event, self.buffer = self.buffer.split(b"\n\n", 1)
                data = [line[6:] for line in event.split(b"\n") if line.startswith(b"data: ")]
                if data:
                    self.messages.append(json.loads(b"\n".join(data)))
            if any(where(message) for message in self.messages):
                continue
            chunk = await asyncio.get_running_loop().run_in_executor(None, self.sock.recv, 65536)
            if not chunk:
                raise RuntimeError("the stream ended")
            self.buffer += chunk

    def close(self):
        self.sock.close()


def http_post(node: "Node", session: str, body: str):
    base = node.ws.rsplit("/", 1)[0].replace("ws://", "http://")
    request = urllib.request.Request(
        f"{base}/http-stream?session={session}", data=body.encode(), method="POST",
        headers={"Content-Type": "text/plain"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


async def main():
    log_dir = tempfile.mkdtemp(prefix="switchboard-cluster-")
    redis = Redis()
    nodes = {name: Node(name, redis, log_dir) for name in ["a", "b", "c"]}
    a, b, c = nodes["a"], nodes["b"], nodes["c"]
    room = "chat:room"
    try:
        # Node info lists the three nodes on every node.
        for node in nodes.values():
            await eventually(
                f"node info on {node.name}",
                lambda node=node: sorted(n["id"] for n in node.call("info", {})["nodes"]) == ["a", "b", "c"])
        print("node info: three nodes, on every node")

        # Fan-out across nodes: a subscriber on A receives a client's publication on B and the API's on C,
        # in offset order.
        ada = await Client.open(a, "ada")
        subscribed = await ada.ok("subscribe", channel=room)
        epoch = subscribed["epoch"]
        bob = await Client.open(b, "bob")
        await bob.ok("subscribe", channel=room)
        joined = await ada.push("join", room, where=lambda m: m["info"]["user"] == "bob")
        assert joined["info"]["user"] == "bob" and joined["info"]["client"].startswith("b-"), joined
        first = await bob.ok("publish", channel=room, data={"text": "from b"})
        second = c.call("publish", {"channel": room, "data": {"text": "from c"}})
        assert second["offset"] == first["offset"] + 1
        got = [await ada.push("pub", room), await ada.push("pub", room)]
        assert [p["data"]["text"] for p in got] == ["from b", "from c"], got
        assert [p["offset"] for p in got] == [first["offset"], second["offset"]]
        print("fan-out: A received B's client publication and C's API publication, in order")

        # Presence across nodes, from a client and from the API of a third node.
        presence = await ada.ok("presence", channel=room)
        assert presence["connections"] == 2 and presence["users"] == 2, presence
        assert {m["user"] for m in presence["members"]} == {"ada", "bob"}
        stats = c.call("presence_stats", {"channel": room})
        assert stats == {"connections": 2, "users": 2}, stats
        print("presence: both members seen from A and counted from C")

        # User-targeted commands reach the node the user is on.
        c.call("send", {"user": "ada", "data": {"note": "for ada"}})
        message = await ada.push("message")
        assert message["data"] == {"note": "for ada"}, message
        a.call("disconnect", {"user": "bob", "code": 4100, "reason": "bye"})
        code = await asyncio.wait_for(bob.closed, TIMEOUT)
        assert code == 4100, code
        await ada.push("leave", room, where=lambda m: m["info"]["user"] == "bob")
        print("user commands: send from C reached A; disconnect from A closed bob on B")

        # Recovery on another node: ada leaves A, misses three publications, comes back on B.
        last = second["offset"]
        await ada.close()
        for i in range(3):
            c.call("publish", {"channel": room, "data": {"missed": i}})
        ada = await Client.open(b, "ada")
        recovered = await ada.ok("subscribe", channel=room, recover={"offset": last, "epoch": epoch})
        assert recovered["recovered"] is True, recovered
        assert [p["data"]["missed"] for p in recovered["publications"]] == [0, 1, 2], recovered
        live = c.call("publish", {"channel": room, "data": {"after": True}})
        pub = await ada.push("pub", room)
        assert pub["offset"] == live["offset"] and pub["data"] == {"after": True}, pub
        last = live["offset"]
        print("recovery: three missed publications recovered exactly once on another node")

        # The HTTP transport: a session's stream is held by A; its commands are POSTed to B, which passes them
        # to A through the nodes' control channel. Replies come down A's stream. A forged secret does nothing.
        stream = HTTPStream(a, "hal")
        session = (await stream.next_message())["session"]
        assert session.startswith("a."), session
        status, _ = http_post(b, session, '{"id":1,"cmd":"subscribe","channel":"%s"}' % room)
        assert status == 202, status
        reply = await stream.next_message(lambda m: m.get("id") == 1)
        assert "ok" in reply, reply
        forged = session.rsplit(".", 1)[0] + ".forged"
        status, _ = http_post(b, forged, '{"id":2,"cmd":"publish","channel":"%s","data":{"forged":true}}' % room)
        assert status == 202, status  # B cannot check A's secret; A refuses it
        status, _ = http_post(b, session, '{"id":3,"cmd":"publish","channel":"%s","data":{"via":"b"}}' % room)
        assert status == 202, status
        reply = await stream.next_message(lambda m: m.get("id") == 3)
        assert "ok" in reply, reply
        pub = await stream.next_message(lambda m: m.get("push") == "pub")
        assert pub["data"] == {"via": "b"}, pub  # the forged publish (sent first) never happened
        stream.close()
        await ada.push("pub", room, where=lambda m: m["data"] == {"via": "b"})
        last = pub["offset"]
        print("HTTP transport: commands POSTed to B reached the session on A; a forged secret was refused")

        # A node killed with SIGKILL leaves presence within the TTL; its client recovers on another node.
        cora = await Client.open(c, "cora")
        await cora.ok("subscribe", channel=room)
        await eventually("cora in presence", lambda: c.call("presence_stats", {"channel": room})["connections"] == 2)
        c.kill()
        killed_at = time.time()
        await asyncio.wait_for(cora.closed, TIMEOUT)
        # Within the TTL (3 s) plus one refresh interval (a third of it), with 2 s for a busy machine: the
        # default TTL (30 s) would fail this, as would an entry that never expires.
        await eventually(
            "cora's entry to expire", lambda: a.call("presence_stats", {"channel": room}) == {"connections": 1, "users": 1},
            timeout=max(0.0, killed_at + 3 + 1 + 2 - time.time()))
        print(f"SIGKILL: node C's member left presence after {time.time() - killed_at:.1f} s (TTL 3 s)")
        await eventually("node C to leave node info",
                         lambda: sorted(n["id"] for n in a.call("info", {})["nodes"]) == ["a", "b"])
        missed = a.call("publish", {"channel": room, "data": {"while": "cora away"}})
        cora = await Client.open(a, "cora")
        back = await cora.ok("subscribe", channel=room, recover={"offset": last, "epoch": epoch})
        assert back["recovered"] is True and [p["offset"] for p in back["publications"]] == [missed["offset"]], back
        await ada.push("pub", room)
        last = missed["offset"]
        print("SIGKILL: node C left node info; its client reconnected to A and recovered")

        # Redis drops the nodes' pub/sub connections (as at its output-buffer limit) while cora publishes
        # without pause: each node reconnects and resubscribes, its subscribers recover what was published
        # meanwhile from history (`subscribed` with `recovered: true`), and ada sees every offset exactly once.
        async def publish_many(count: int) -> list:
            offsets = []
            for i in range(count):
                offsets.append((await cora.ok("publish", channel=room, data={"burst": i}))["offset"])
                if i == 20:
                    redis.command("CLIENT", "KILL", "TYPE", "pubsub")
            return offsets
        published = await publish_many(300)
        seen, resynchronized = [], None
        while not seen or seen[-1] < published[-1]:
            message = await asyncio.wait_for(ada.pushes.get(), TIMEOUT)
            if message.get("channel") != room:
                continue
            if message["push"] == "pub":
                seen.append(message["offset"])
            elif message["push"] == "subscribed":
                resynchronized = message
                assert message["recovered"] is True and message["epoch"] == epoch, message
                seen.extend(p["offset"] for p in message["publications"])
        assert resynchronized is not None, "no resynchronization after the pub/sub connection was dropped"
        assert seen == published, f"gaps or duplicates: {sorted(set(published) - set(seen))} missing"
        assert b.metric('switchboard_resynchronized_total{outcome="recovered"}') >= 1
        last = published[-1]
        print(f"pub/sub dropped mid-stream: recovered: true with {len(resynchronized['publications'])} missed "
              f"publications from history; {len(published)} offsets seen exactly once, in order")

        # Redis loses the channel (FLUSHALL) right after the nodes resubscribed, so the next publication
        # starts a new epoch at offset 1, far below ada's position: she is told `recovered: false` with the
        # new epoch and its offset, and later publications arrive live (none skipped as already seen).
        redis.command("CLIENT", "KILL", "TYPE", "pubsub")
        await ada.push("subscribed", room)
        redis.command("FLUSHALL")
        flushed = await cora.ok("publish", channel=room, data={"after": "flush"})
        assert flushed["offset"] == 1, flushed
        resync = await ada.push("subscribed", room)
        assert resync["recovered"] is False and resync["epoch"] != epoch and resync["offset"] == 1, resync
        second = await cora.ok("publish", channel=room, data={"after": "flush", "n": 2})
        pub = await ada.push("pub", room)
        assert pub["offset"] == second["offset"] == 2, pub
        epoch = resync["epoch"]
        print("Redis flushed: recovered: false with the new epoch at offset 1; offset 2 arrived live")

        # Redis paused (SIGSTOP) past the command timeout: publishes fail with an error, connections stay up,
        # everything works again after SIGCONT.
        redis.process.send_signal(signal.SIGSTOP)
        try:
            started = time.time()
            failed = await cora.call("publish", channel=room, data={"paused": True})
            assert failed.get("error", {}).get("code") == 110, failed
            assert time.time() - started < 10, "the publish hung"
            await ada.ok("ping")
        finally:
            redis.process.send_signal(signal.SIGCONT)
        print(f"Redis paused: publish failed with 110 after {time.time() - started:.1f} s; connections stayed up")

        async def publishes_again():
            reply = await cora.call("publish", channel=room, data={"resumed": True})
            return "ok" in reply
        await eventually("publishes after SIGCONT", publishes_again)
        await ada.push("pub", room)
        print("Redis resumed: publishing works again")

        # Redis restarted (state lost): publishes fail while it is down; afterwards the nodes reconnect and
        # subscribers are told `recovered: false` with the new epoch.
        redis.kill()
        failed = await cora.call("publish", channel=room, data={"down": True})
        assert failed.get("error", {}).get("code") == 110, failed
        await ada.ok("ping")
        redis.restart()
        resync = await ada.push("subscribed", room)
        assert resync["recovered"] is False and resync["epoch"] != epoch, resync
        new_epoch = resync["epoch"]
        assert b.metric('switchboard_resynchronized_total{outcome="not_recovered"}') >= 1

        async def publishes_after_restart():
            reply = await cora.call("publish", channel=room, data={"restarted": True})
            return "ok" in reply
        await eventually("publishes after the restart", publishes_after_restart)
        pub = await ada.push("pub", room)
        assert pub["data"] == {"restarted": True}, pub
        assert (await cora.ok("history", channel=room, limit=10))["epoch"] == new_epoch
        print("Redis restarted: publish failed with 110 while down; subscribers got recovered: false and a new epoch")

        await ada.close()
        await cora.close()
        print("cluster tests passed")
    finally:
        for node in nodes.values():
            node.stop()
        redis.kill()


asyncio.run(main())
