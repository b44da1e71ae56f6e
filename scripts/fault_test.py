"""The fault-injection suite: three `switchboard serve` nodes over a real `redis-server` with a fault proxy
of our own between each node and Redis, publishers on every node, subscribers on every node that record
everything they receive and reconnect with recovery, dirty faults injected meanwhile, and a checker over
the recorded history.

Faults (in an order drawn from the seed): a node's Redis link blackholed (silent, no reset), slowed by
latency, and cut one way; Redis paused (SIGSTOP) past the command timeout; Redis killed and restarted from
an older snapshot (an RDB taken earlier: a rollback); a node killed (SIGKILL) and restarted; every client
link reset.

The checker, per subscriber and channel: no duplicate; each publisher's messages in order; every gap in
the offsets preceded by a `recovered: false` the subscriber was told (never `recovered: true` over a loss);
every publish the API acknowledged was delivered or is in history; presence ends equal to the connected
clients; connections and descriptors return to their baseline.

usage: fault_test.py SWITCHBOARD_BINARY    (FAULT_SEED=n to replay a schedule)
"""
import asyncio
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

import websockets
from redis_server import RedisServer

# The checks below are assert statements: refuse to run where -O (or PYTHONOPTIMIZE) would strip them.
if not __debug__:
    raise SystemExit("run without -O / PYTHONOPTIMIZE: the checks are assert statements")

BINARY = sys.argv[1]
SEED = int(os.environ.get("FAULT_SEED", random.randrange(1 << 30)))
TIMEOUT = 30
CHANNELS = ["chat:f0", "chat:f1", "chat:f2"]


class FaultProxy:
    """TCP proxy that passes, delays, drops without closing (blackhole), drops one direction, or resets.
    It runs on an event loop of its own, in its own thread: nothing the test blocks on can stall it."""

    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.mode = "pass"
        self.links = set()
        self.server = None
        self.port = None
        self.due = {}  # per direction of a link: when its last delayed chunk is written
        self.silenced = set()  # source addresses whose links carry nothing (each way), however `mode` is
        asyncio.run_coroutine_threadsafe(self._listen(), FaultProxy.loop).result(TIMEOUT)

    async def _listen(self):
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _accept(self, reader, writer):
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        link = (writer, upstream_writer)
        self.links.add(link)
        source = (writer.get_extra_info("peername") or ("?",))[0]
        await asyncio.gather(
            self._pump(reader, upstream_writer, "up", source), self._pump(upstream_reader, writer, "down", source),
            return_exceptions=True)
        self.links.discard(link)
        for w in link:
            w.close()

    async def _pump(self, reader, writer, direction, source):
        while True:
            data = await reader.read(65536)
            if not data:
                if self.mode != "blackhole" and source not in self.silenced:
                    writer.close()
                return
            mode = self.mode
            if mode == "blackhole" or mode == f"drop-{direction}" or source in self.silenced:
                continue
            # Each chunk arrives this much later than it was sent, and never before one sent earlier (also
            # once the latency is lifted, while delayed chunks are still on their way).
            loop = asyncio.get_running_loop()
            delay = float(mode.split(":")[1]) if mode.startswith("latency") else 0.0
            due = max(loop.time() + delay, self.due.get(writer, 0.0))
            if due > loop.time():
                self.due[writer] = due
                loop.call_at(due, writer.write, data)
                continue
            writer.write(data)
            await writer.drain()

    def reset(self, then: str = None):
        """Resets every open link, then (on the proxy's loop, so no old link carries a byte after) sets `then`."""
        asyncio.run_coroutine_threadsafe(self._reset_then(then), FaultProxy.loop).result(TIMEOUT)

    async def _reset_then(self, mode):
        self._reset()
        if mode is not None:
            self.mode = mode

    def _reset(self):
        for link in list(self.links):
            for w in link:
                sock = w.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                w.transport.abort()
        self.links.clear()


class Redis(RedisServer):
    def __init__(self, directory: str, replica_of: int = None, source: str = None):
        self.directory = directory
        self.extra = ["--replicaof", "127.0.0.1", str(replica_of)] if replica_of else []
        if source:  # its own connections (the replication link) leave from this address
            self.extra += ["--bind-source-addr", source]
        super().__init__(TIMEOUT)

    def replication(self) -> dict:
        """INFO replication, as a dictionary."""
        lines = self.command("INFO", "replication").decode().splitlines()
        return dict(line.split(":", 1) for line in lines if ":" in line)

    def replication_offset(self) -> int:
        """How far into the replication stream it is (a primary: what it wrote; a replica: what it applied)."""
        info = self.replication()
        return int(info.get("slave_repl_offset", info.get("master_repl_offset", "0")))

    def arguments(self) -> list:
        return super().arguments() + ["--dir", self.directory, "--dbfilename", "dump.rdb"] + self.extra


class Sentinel(Redis):
    """`redis-server --sentinel` watching the primary at `primary_port`, quick to fail over."""

    def __init__(self, directory: str, primary_port: int):
        self.primary_port = primary_port
        super().__init__(directory)

    def arguments(self) -> list:
        config = os.path.join(self.directory, "sentinel.conf")
        with open(config, "w") as f:
            f.write(f"port {self.port}\nbind 127.0.0.1\ndir {self.directory}\n"
                    f"sentinel monitor primary 127.0.0.1 {self.primary_port} 1\n"
                    "sentinel down-after-milliseconds primary 1000\nsentinel failover-timeout primary 5000\n")
        return [config, "--sentinel"]


class Node:
    def __init__(self, name: str, redis_url: str, log_dir: str):
        self.name = name
        self.redis_url = redis_url
        self.client_proxy = None
        self.log_dir = log_dir
        self.process = None
        self.start()

    def start(self):
        log = open(os.path.join(self.log_dir, f"node-{self.name}.log"), "a")
        self.process = subprocess.Popen(
            [BINARY, "serve", "--port", "0", "--api-port", "0", "--redis", self.redis_url,
             "--node-id", self.name, "--presence-ttl", "3", "--node-info-interval", "1", "--redis-timeout", "1",
             "--redis-ping-interval", "0.5", "--chat-history-size", "1000", "--publish-rate", "10000",
             "--publish-burst", "10000", "--ping-interval", "2", "--pong-timeout", "5", "--stats-interval", "0"],
            stdout=subprocess.PIPE, stderr=log, text=True)
        self.ws = self.api = None
        deadline = time.time() + TIMEOUT
        while (self.ws is None or self.api is None) and time.time() < deadline:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"node {self.name} exited: see {log.name}")
            if line.startswith("switchboard listening on "):
                self.ws = line.split()[-1]
            elif line.startswith("switchboard API on "):
                self.api = line.split()[-1]
        # Clients reach the node through a fault proxy of their own; a restarted node (new port) keeps it.
        port = int(self.ws.split(":")[2].split("/")[0])
        if self.client_proxy is None:
            self.client_proxy = FaultProxy(port)
        self.client_proxy.target_port = port
        self.client_ws = f"ws://127.0.0.1:{self.client_proxy.port}/{self.ws.split('/', 3)[3]}"

    def call(self, endpoint: str, body: dict) -> dict:
        request = urllib.request.Request(
            f"{self.api}/api/{endpoint}", data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(f"{self.api}/metrics", timeout=10) as response:
            for line in response.read().decode().splitlines():
                if line.split(" ")[0] == name:
                    return float(line.split()[-1])
        return 0.0

    def ready(self) -> int:
        """The status of GET /ready: 503 while a Redis pub/sub link is down."""
        try:
            with urllib.request.urlopen(f"{self.api}/ready", timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code

    def descriptors(self) -> int:
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))

    def kill(self):
        self.process.kill()
        self.process.wait()


class Subscriber:
    """One client on one node and channel: reconnects with recovery, and records what it was told."""

    def __init__(self, name: str, nodes: list, index: int, channel: str):
        self.name, self.nodes, self.index, self.channel = name, nodes, index, channel
        self.events = []  # ("told",) or ("pub", epoch, offset, data)
        self.epoch = None
        self.offset = None
        self.ws = None
        self.subscribed = False
        self.stopping = False
        self.reconnects = 0

    async def run(self):
        while not self.stopping:
            try:
                async with websockets.connect(
                        f"{self.nodes[self.index].client_ws}?user={self.name}", max_size=None,
                        open_timeout=5) as ws:
                    self.ws = ws
                    request = {"id": 1, "cmd": "subscribe", "channel": self.channel}
                    if self.epoch is not None:
                        request["recover"] = {"epoch": self.epoch, "offset": self.offset}
                    await ws.send(json.dumps(request))
                    async for raw in ws:
                        message = json.loads(raw)
                        if message.get("id") == 1:
                            if "ok" not in message:
                                break  # 110 while Redis is away: reconnect and ask again
                            self.position(message["ok"], recovering="recover" in request)
                            self.subscribed = True
                        elif message.get("push") == "subscribed":
                            self.position(message, recovering=True)
                        elif message.get("push") == "pub":
                            self.events.append(("pub", self.epoch, message["offset"], message["data"]))
                            self.offset = message["offset"]
                        elif message.get("push") in ("gap", "unsubscribed"):
                            self.events.append(("told",))
                            if message.get("push") == "unsubscribed":
                                break
            except (OSError, asyncio.TimeoutError, websockets.WebSocketException):
                pass
            self.subscribed = False
            self.ws = None
            if not self.stopping:
                self.reconnects += 1
                await asyncio.sleep(0.2)

    def position(self, result: dict, recovering: bool):
        recovered = recovering and result.get("recovered", False)
        if not recovered:
            self.events.append(("told",))
        for publication in result.get("publications", []):
            self.events.append(("pub", result["epoch"], publication["offset"], publication["data"]))
        if recovered:
            # What was recovered must reach the stream's newest offset: a shortfall is a hidden loss.
            self.events.append(("head", result["epoch"], result["offset"]))
        self.epoch, self.offset = result["epoch"], result["offset"]


def check(subscriber: Subscriber) -> list:
    """Violations in one subscriber's history."""
    problems = []
    last = None  # (epoch, offset) of the last publication, None right after being told
    seen = set()
    order = {}
    for event in subscriber.events:
        if event[0] == "told":
            last = None
            continue
        if event[0] == "head":
            if last is not None and (event[1], event[2]) != last:
                problems.append(f"{subscriber.name}: recovered: true stopped at {last}, short of {event[1:]}")
            last = (event[1], event[2])
            continue
        _, epoch, offset, data = event
        key = (data["p"], data["n"])
        if key in seen:
            problems.append(f"{subscriber.name}: duplicate {key}")
        seen.add(key)
        if order.get(data["p"], -1) >= data["n"]:
            problems.append(f"{subscriber.name}: publisher {data['p']} out of order at {data['n']}")
        order[data["p"]] = data["n"]
        if last is not None and (epoch != last[0] or offset != last[1] + 1):
            problems.append(f"{subscriber.name}: hidden gap {last} -> {(epoch, offset)} without recovered: false")
        last = (epoch, offset)
    return problems


def checker_self_test():
    """The checker must be able to fail: a fabricated history with each kind of violation."""
    subscriber = Subscriber("self-test", [], 0, "c")
    subscriber.events = [("told",), ("pub", "e", 1, {"p": "a", "n": 1}), ("pub", "e", 3, {"p": "a", "n": 2}),
                         ("pub", "e", 4, {"p": "a", "n": 2}), ("told",), ("pub", "f", 9, {"p": "a", "n": 5}),
                         ("head", "f", 12), ("pub", "f", 13, {"p": "a", "n": 6})]
    found = check(subscriber)
    assert any("hidden gap" in p for p in found) and any("duplicate" in p for p in found) \
        and any("out of order" in p for p in found) and any("short of" in p for p in found) \
        and len(found) == 4, found


async def eventually(description: str, check_, timeout: float = TIMEOUT):
    deadline = time.time() + timeout
    while True:
        try:
            if check_():
                return
        except (urllib.error.URLError, OSError):
            pass  # a node still reconnecting answers 503: ask again
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {description}")
        await asyncio.sleep(0.2)


async def main(sentinel_phase: bool):
    """With `sentinel_phase`, the nodes find Redis through a sentinel and the fault is a failover to a
    replica; otherwise each node reaches Redis through a fault proxy and every other fault runs."""
    rng = random.Random(SEED)
    work = tempfile.mkdtemp(prefix="switchboard-faults-")
    redis = Redis(work)
    proxies = [] if sentinel_phase else [FaultProxy(redis.port) for _ in range(3)]
    helpers = []
    if sentinel_phase:
        # Everyone reaches the primary through one proxy; the replica's link leaves from 127.0.0.2, so it
        # alone can be silenced (the sentinel sees the replica following the primary's one address).
        primary_proxy = FaultProxy(redis.port)
        replica = Redis(tempfile.mkdtemp(prefix="switchboard-replica-"), replica_of=primary_proxy.port,
                        source="127.0.0.2")
        sentinel = Sentinel(tempfile.mkdtemp(prefix="switchboard-sentinel-"), primary_proxy.port)
        helpers = [replica, sentinel]
        deadline = time.time() + TIMEOUT
        while sentinel.command("SENTINEL", "replicas", "primary").startswith(b"*0"):
            if time.time() > deadline:
                raise RuntimeError("the sentinel never saw the replica")
            time.sleep(0.2)
        urls = [f"redis+sentinel://127.0.0.1:{sentinel.port}/primary"] * 3
    else:
        urls = [f"redis://127.0.0.1:{proxy.port}" for proxy in proxies]
    nodes = [Node(name, url, work) for name, url in zip("abc", urls)]
    baseline = [node.descriptors() for node in nodes]
    acked, failed = [], 0
    stop_publishing = asyncio.Event()

    async def publisher(index: int):
        nonlocal failed
        n = 0
        while not stop_publishing.is_set():
            channel = CHANNELS[n % len(CHANNELS)]
            body = {"channel": channel, "data": {"p": f"p{index}", "n": n}}
            try:
                await asyncio.to_thread(nodes[index].call, "publish", body)
                acked.append((channel, f"p{index}", n))
            except (urllib.error.URLError, OSError, ValueError):
                failed += 1  # refused or unanswered: never counted as made
            n += 1
            await asyncio.sleep(0.03)

    subscribers = [Subscriber(f"s{i}{j}", nodes, i, channel)
                   for i in range(3) for j, channel in enumerate(CHANNELS + CHANNELS)]
    tasks = [asyncio.create_task(s.run()) for s in subscribers]
    await eventually("every subscriber subscribed", lambda: all(s.subscribed for s in subscribers))
    publishers = [asyncio.create_task(publisher(i)) for i in range(3)]

    async def blackhole():
        # Silence, not a reset: the node must notice by its own PINGs (redisPingInterval 0.5 s plus
        # redisTimeout 1 s) and say so on /ready. Then the old links are reset (the proxy dropped their
        # bytes, which TCP never does: passing the rest would hand Redis half a reply) and the node
        # reconnects on its own.
        proxies[1].mode = "blackhole"
        await eventually("node b notices its silent Redis link", lambda: nodes[1].ready() == 503, timeout=10)
        proxies[1].reset(then="pass")
        await eventually("node b back on its own", lambda: nodes[1].ready() == 200)

    async def latency():
        proxies[0].mode = "latency:0.2"
        await asyncio.sleep(3)
        proxies[0].mode = "pass"

    async def one_way():
        # Redis's answers lost on the way back, the node's commands still arriving: noticed the same way.
        proxies[2].mode = "drop-down"
        await eventually("node c notices its half-silent Redis link", lambda: nodes[2].ready() == 503, timeout=10)
        proxies[2].reset(then="pass")
        await eventually("node c back on its own", lambda: nodes[2].ready() == 200)

    async def redis_pause():
        redis.process.send_signal(signal.SIGSTOP)
        await asyncio.sleep(3)
        redis.process.send_signal(signal.SIGCONT)

    def told() -> int:
        return sum(1 for s in subscribers for e in s.events if e[0] == "told")

    async def redis_rollback():
        redis.command("SAVE")
        await asyncio.sleep(1.5)  # publications after the snapshot: lost by the restart
        before = told()
        redis.kill()
        redis.restart()
        # The rollback must be seen: subscribers are told recovered: false (a new epoch), never silently
        # continued on reused offsets.
        await eventually("subscribers told of the rollback", lambda: told() > before)

    async def node_kill():
        nodes[2].kill()
        await asyncio.sleep(1)
        await asyncio.to_thread(nodes[2].start)
        baseline[2] = nodes[2].descriptors()  # a new process: its own baseline

    async def client_reset():
        for node in nodes:
            node.client_proxy.reset()

    async def client_blackhole():
        # The clients' links go silent (a NAT that dropped them): every node must reap its silent clients
        # by its own pings (pingInterval 2 s, pongTimeout 5 s) before the links are reset and come back.
        for node in nodes:
            node.client_proxy.mode = "blackhole"
        await eventually("every node reaps its silent clients", lambda: all(
            node.metric("switchboard_connections_open") == 0 for node in nodes), timeout=25)
        for node in nodes:
            node.client_proxy.reset(then="pass")

    async def failover():
        # The replica falls behind (its replication link silent, not reset, while publishing goes on), then
        # the primary dies; the sentinel promotes the replica that is behind and the nodes follow. Whoever
        # held a position the new primary never saw must be told recovered: false.
        await eventually("the replica following the primary", lambda: helpers[0].replication().get(
            "master_link_status") == "up" and helpers[0].replication_offset() > 0)
        primary_proxy.silenced.add("127.0.0.2")
        await asyncio.sleep(1.5)
        behind = (redis.replication_offset(), helpers[0].replication_offset())
        assert behind[0] > behind[1], f"the replica is not behind: primary at {behind[0]}, replica at {behind[1]}"
        print(f"  the replica is behind: primary at {behind[0]}, replica at {behind[1]}")
        before = told()
        redis.kill()
        deadline = time.time() + TIMEOUT
        while str(helpers[0].port).encode() not in helpers[1].command(
                "SENTINEL", "get-master-addr-by-name", "primary"):
            if time.time() > deadline:
                raise RuntimeError("no failover")
            await asyncio.sleep(0.2)
        await eventually("subscribers told of the failover", lambda: told() > before)

    faults = [failover] if sentinel_phase else [
        blackhole, latency, one_way, redis_pause, redis_rollback, node_kill, client_reset, client_blackhole]
    rng.shuffle(faults)
    if os.environ.get("FAULTS"):  # a subset, to replay one fault alone
        faults = [f for f in faults if f.__name__ in os.environ["FAULTS"].split(",")]
    print(f"seed {SEED}; faults in order: {', '.join(f.__name__ for f in faults)}")
    try:
        await asyncio.sleep(1)
        for fault in faults:
            started = time.time()
            await fault()
            print(f"  {fault.__name__}: injected and lifted in {time.time() - started:.1f} s")
            await asyncio.sleep(2)
        stop_publishing.set()
        await asyncio.gather(*publishers)
        await eventually("every subscriber subscribed again", lambda: all(s.subscribed for s in subscribers))
        # Everything published has arrived: each subscriber reaches its channel's newest offset.
        newest = {}
        await eventually("the API answering", lambda: newest.update(
            {c: nodes[0].call("history", {"channel": c, "limit": 1})["offset"] for c in CHANNELS}) is None)
        await eventually("every subscriber at its channel's newest offset",
                         lambda: all(s.offset == newest[s.channel] for s in subscribers), timeout=60)

        problems = [p for s in subscribers for p in check(s)]
        delivered = {(s.channel, e[3]["p"], e[3]["n"]) for s in subscribers for e in s.events if e[0] == "pub"}
        history = set()
        for channel in CHANNELS:
            for publication in nodes[0].call("history", {"channel": channel, "limit": 1000})["publications"]:
                history.add((channel, publication["data"]["p"], publication["data"]["n"]))
        lost = [a for a in acked if a not in delivered and a not in history]
        problems += [f"acknowledged publish lost: {a}" for a in lost[:10]]

        # Presence: exactly the connected clients (a killed node's entries expired with it).
        def presence_settled():
            counts = {c: nodes[0].call("presence_stats", {"channel": c})["connections"] for c in CHANNELS}
            return all(counts[c] == sum(1 for s in subscribers if s.channel == c) for c in CHANNELS)
        try:
            await eventually("presence equal to the connected clients", presence_settled)
        except AssertionError as error:
            problems.append(str(error))

        told = sum(1 for s in subscribers for e in s.events if e[0] == "told")
        pubs = sum(1 for s in subscribers for e in s.events if e[0] == "pub")
        print(f"checker: {len(acked)} publishes acknowledged, {failed} refused or unanswered; {pubs} deliveries "
              f"to {len(subscribers)} subscribers; {told} recovered:false or subscribe notices; "
              f"{sum(s.reconnects for s in subscribers)} reconnects; {len(lost)} acknowledged and lost")

        for subscriber in subscribers:
            subscriber.stopping = True
            if subscriber.ws is not None:
                await subscriber.ws.close()
        await asyncio.gather(*tasks)
        try:
            await eventually("connections back to zero", lambda: all(
                node.metric("switchboard_connections_open") == 0 for node in nodes))
            await eventually("descriptors back to their baseline", lambda: all(
                node.descriptors() <= base + 4 for node, base in zip(nodes, baseline)))
        except AssertionError as error:
            problems.append(f"{error}: {[n.descriptors() for n in nodes]} against {baseline}")
        if problems:
            print("\n".join(problems[:40]))
            sys.exit(f"fault suite failed (replay with FAULT_SEED={SEED}; logs in {work})")
        print(f"fault suite: no hidden loss, no duplicate, order kept, presence and descriptors back (seed {SEED})")
    finally:
        for node in nodes:
            if node.process.poll() is None:
                node.kill()
        if redis.process.poll() is None:
            redis.process.send_signal(signal.SIGCONT)
            redis.kill()
        for helper in helpers:
            helper.kill()


checker_self_test()
asyncio.run(main(sentinel_phase=False))
print("== the same over Redis Sentinel, with a failover to a replica")
asyncio.run(main(sentinel_phase=True))
