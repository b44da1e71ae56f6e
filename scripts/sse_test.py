"""`switchboard serve`'s streams as clients use them: Server-Sent Events at /sse with `curl -N` and with raw
sockets from Python (events and ids, resuming with Last-Event-ID and `?since=`, `recovered: false` where
history cannot cover the gap, gzip, presence events, several channels in one stream, tokens, permissions,
origins, slow readers under both slow-consumer policies beside untouched SSE and WebSocket readers, the server
API's send/unsubscribe/disconnect, the connection limit, shutdown, every documented refusal as JSON), and the
two-way HTTP transport at /http-stream (the session push, commands by POST, their replies and publications
down the stream, to and from a WebSocket client, refusals, a reconnect that recovers), then /metrics'
per-transport gauges and the sys:stats feed, back to 0 once every client has left.

usage: sse_test.py SWITCHBOARD_BINARY [PART...]
  parts: curl resume gzip many http refusals slow api metrics auth limits (default: all)
"""
import asyncio
import base64
import codecs
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import zlib

from test_support import ServeProcess, eventually
from protocol_client import ProtocolClient as Client

# The checks below are assert statements: refuse to run where -O (or PYTHONOPTIMIZE) would strip them.
if not __debug__:
    raise SystemExit("run without -O / PYTHONOPTIMIZE: the checks are assert statements")

BINARY = sys.argv[1]
PARTS = set(sys.argv[2:])
sys.stdout.reconfigure(line_buffering=True)
TIMEOUT = 20  # seconds any awaited event may take on a busy machine
SECRET = "sse-test-token-secret-of-at-least-32-bytes"
ORIGIN = "http://app.example"
QUEUE_MAX_BYTES = 262144
MAX_MESSAGE_SIZE = 65536
NAMESPACES = {
    "": {},
    "chat": {"historySize": 100},
    "room": {"historySize": 100, "presence": True, "joinLeave": True},
    "short": {"historySize": 5},
    "slow": {},  # slowConsumer: disconnect (the default)
    "feed": {"slowConsumer": "dropOldest"},
    "members": {"permissions": {"subscribe": "authenticated"}},
    "dm": {},
}
# Subscription tokens need a token key: only the server with tokens has this namespace.
TOKEN_NAMESPACES = {**NAMESPACES, "private": {"permissions": {"subscribe": "token"}}}


# ---------------------------------------------------------------------------------------------------------
# The server and its API


class Server(ServeProcess):
    def __init__(self, name: str, log_dir: str, *settings: str, env: dict = None):
        super().__init__(BINARY, f"server {name}", os.path.join(log_dir, f"{name}.log"), *settings, env=env)
        self.port = int(urllib.parse.urlsplit(self.ws).port)

    async def publish(self, channel: str, data) -> int:
        """Publishes through the server API (off the event loop, so the readers here keep reading); the offset."""
        answer = await asyncio.to_thread(self.call, "publish", {"channel": channel, "data": data})
        assert "offset" in answer, answer
        return answer["offset"]

    def metrics_text(self) -> str:
        with urllib.request.urlopen(f"{self.api}/metrics", timeout=TIMEOUT) as response:
            return response.read().decode()

    async def metric(self, name: str, **labels) -> float:
        """The sum of the samples of `name` whose labels include `labels` (0 when there is none)."""
        text = await asyncio.to_thread(self.metrics_text)
        total = 0.0
        for line in text.splitlines():
            match = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
            if not match or match.group(1) != name:
                continue
            found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
            if all(found.get(k) == v for k, v in labels.items()):
                total += float(match.group(3))
        return total

    def stop(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def token(user: str, secret: str = SECRET, *flags: str) -> str:
    made = subprocess.run([BINARY, "token", "--user", user, *flags], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "SWITCHBOARD_TOKEN_SECRET": secret})
    assert made.returncode == 0 and made.stdout.strip(), (made.returncode, made.stderr)
    return made.stdout.strip()


# ---------------------------------------------------------------------------------------------------------
# text/event-stream, read as the HTML standard says


class Event:
    def __init__(self, fields: dict, data: list):
        self.id = fields.get("id")
        self.event = fields.get("event", "message")
        self.fields = fields
        self.data = "\n".join(data)
        try:
            self.json = json.loads(self.data)
        except ValueError:
            self.json = None

    def __repr__(self):
        return f"Event(id={self.id!r}, event={self.event!r}, data={self.data[:300]!r})"


class EventParser:
    def __init__(self):
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.buffer = ""
        self.fields = {}
        self.data = []
        self.events = []
        self.comments = []

    def feed(self, raw: bytes):
        self.buffer += self.decoder.decode(raw)
        while True:
            end = self.buffer.find("\n")
            if end < 0:
                return
            line, self.buffer = self.buffer[:end].rstrip("\r"), self.buffer[end + 1:]
            if line == "":
                if self.data or self.fields:
                    self.events.append(Event(self.fields, self.data))
                self.fields, self.data = {}, []
            elif line.startswith(":"):
                self.comments.append(line)
            else:
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "data":
                    self.data.append(value)
                else:
                    assert name not in self.fields, f"field {name} twice in one event: {line!r}"
                    self.fields[name] = value


class Response:
    """One HTTP request on its own connection, and its response: the head, then either the whole body (a
    refusal, an answer) or, for `text/event-stream`, its events as they arrive (gzip decoded incrementally)."""

    @classmethod
    async def open(cls, port: int, target: str, headers: dict = None, method: str = "GET", body: bytes = b"",
                   rcvbuf: int = None) -> "Response":
        self = cls()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port)), TIMEOUT)
        # A small limit for a reader that stops reading: little is held in this process, the rest waits in
        # the kernel and then in the server.
        self.reader, self.writer = await asyncio.open_connection(sock=sock, limit=8192 if rcvbuf else 65536)
        lines = [f"{method} {target} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        if body or method == "POST":
            lines.append(f"Content-Length: {len(body)}")
        expects = any(k.lower() == "expect" and v.lower() == "100-continue" for k, v in (headers or {}).items())
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + (b"" if expects else body))
        try:
            await self.writer.drain()
        except ConnectionError:
            pass  # refused before the body was taken: the answer is still read below
        try:
            head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), TIMEOUT)
            if expects and head.startswith(b"HTTP/1.1 100"):
                self.writer.write(body)
                head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        except (ConnectionError, asyncio.IncompleteReadError) as error:
            raise AssertionError(f"{method} {target[:80]}: the connection was reset or closed before the answer's "
                                 f"head could be read ({error!r})")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split()[1])
        self.header_list = [tuple(h.split(":", 1)) for h in header_lines if h]
        self.headers = {name.strip().lower(): value.strip() for name, value in self.header_list}
        self.parser = EventParser()
        self.ended = False
        self.gzip = zlib.decompressobj(16 + zlib.MAX_WBITS) if self.headers.get("content-encoding") == "gzip" else None
        self.raw_received = 0
        self.streaming = self.status == 200 and self.headers.get("content-type", "").startswith("text/event-stream")
        self.body = self.json = None
        if not self.streaming:
            try:
                if "content-length" in self.headers:
                    self.body = await asyncio.wait_for(
                        self.reader.readexactly(int(self.headers["content-length"])), TIMEOUT)
                else:
                    self.body = await asyncio.wait_for(self.reader.read(), TIMEOUT)
            except (ConnectionError, asyncio.IncompleteReadError) as error:
                # The server closed with part of the request unread: its TCP reset can destroy the answer
                # before the client reads it (RFC 9112, 9.6: close in stages, reading what still comes).
                raise AssertionError(f"{method} {target[:80]}: {status_line!r} arrived, then the connection was "
                                     f"reset before its body could be read ({error!r})")
            try:
                self.json = json.loads(self.body)
            except ValueError:
                pass
            self.close()
        return self

    async def event(self, timeout: float = TIMEOUT):
        """The next event; None once the stream has ended."""
        deadline = None if timeout is None else time.time() + timeout
        while not self.parser.events:
            if self.ended:
                return None
            remaining = None if deadline is None else max(deadline - time.time(), 0.01)
            try:
                chunk = await asyncio.wait_for(self.reader.read(65536), remaining)
            except asyncio.TimeoutError:
                raise AssertionError(
                    f"no event within {timeout} s ({self.raw_received} bytes of body received, undecoded or "
                    f"incomplete: {self.parser.buffer[-200:]!r}; comments so far: {len(self.parser.comments)})")
            except ConnectionError:
                chunk = b""
            if not chunk:
                self.ended = True
                if self.gzip:
                    self.parser.feed(self.gzip.flush())
                continue
            self.raw_received += len(chunk)
            self.parser.feed(self.gzip.decompress(chunk) if self.gzip else chunk)
        return self.parser.events.pop(0)

    async def events(self, count: int) -> list:
        return [await self.expect_event() for _ in range(count)]

    async def expect_event(self, timeout: float = TIMEOUT) -> Event:
        event = await self.event(timeout)
        assert event is not None, "the stream ended"
        return event

    async def rest(self, timeout: float = TIMEOUT) -> list:
        """Every event until the stream ends (which must happen within `timeout`)."""
        deadline = time.time() + timeout
        seen = []
        while (event := await self.event(max(deadline - time.time(), 0.01))) is not None:
            seen.append(event)
        return seen

    def close(self):
        if not self.writer.is_closing():
            self.writer.close()


def position(event: Event) -> tuple:
    """(epoch, offset) of a one-channel event's id."""
    assert event.id, f"no id: {event}"
    epoch, _, offset = event.id.rpartition(":")
    return epoch, int(offset)


def positions(event: Event) -> list:
    """[(epoch, offset) or None] per channel of a several-channel event's id."""
    assert event.id is not None, f"no id: {event}"
    return [None if part == "" else (part.rpartition(":")[0], int(part.rpartition(":")[2]))
            for part in event.id.split(",")]


def expect_refusal(response: Response, status: int, what: str):
    assert response.status == status, f"{what}: HTTP {response.status} (expected {status}): {response.body!r}"
    assert response.headers.get("content-type", "").startswith("application/json"), \
        f"{what}: Content-Type {response.headers.get('content-type')!r}"
    error = (response.json or {}).get("error")
    assert isinstance(error, dict) and error.get("code") == status and isinstance(error.get("message"), str) \
        and error["message"], f"{what}: body {response.body!r}"
    return error["message"]


def check_stream_head(response: Response, what: str, gzip: bool = False):
    assert response.status == 200, f"{what}: HTTP {response.status} {response.body!r}"
    h = response.headers
    assert h.get("content-type") == "text/event-stream; charset=utf-8", f"{what}: {h}"
    assert h.get("cache-control") == "no-cache, no-store", f"{what}: {h}"
    assert h.get("connection", "").lower() == "close", f"{what}: {h}"
    assert "transfer-encoding" not in h and "content-length" not in h, f"{what}: {h}"
    assert (h.get("content-encoding") == "gzip") == gzip, f"{what}: {h}"


def sse(*channels: str, **query) -> str:
    pairs = [("channel", c) for c in channels] + list(query.items())
    return "/sse?" + urllib.parse.urlencode(pairs)


async def subscribed(stream: Response, channel: str) -> Event:
    event = await stream.expect_event()
    assert event.event == "subscribed" and event.json and event.json.get("push") == "subscribed" \
        and event.json.get("channel") == channel, event
    assert isinstance(event.json.get("epoch"), str) and isinstance(event.json.get("offset"), int), event
    return event


async def publications(stream: Response, count: int, channel: str = None) -> list:
    got = await stream.events(count)
    for event in got:
        assert event.event == "publication" and event.json and event.json.get("push") == "pub", (event, got)
        assert channel is None or event.json["channel"] == channel, event
    return got


# ---------------------------------------------------------------------------------------------------------
# curl -N


CURLS = []  # every curl started: killed at the end, whatever happened


class Curl:
    """`curl -N` printing a stream, read as it prints."""

    @classmethod
    async def start(cls, url: str, *flags: str) -> "Curl":
        self = cls()
        self.process = await asyncio.create_subprocess_exec(
            "curl", "-N", "-s", "--max-time", "300", *flags, url, stdout=subprocess.PIPE)
        CURLS.append(self.process)
        self.parser = EventParser()
        return self

    async def event(self, timeout: float = TIMEOUT) -> Event:
        deadline = time.time() + timeout
        while not self.parser.events:
            try:
                chunk = await asyncio.wait_for(self.process.stdout.read(65536), max(deadline - time.time(), 0.01))
            except asyncio.TimeoutError:
                raise AssertionError(f"curl printed no event within {timeout} s; after its last event it printed "
                                     f"{self.parser.buffer[-300:]!r}")
            assert chunk, f"curl ended (exit {await self.process.wait()})"
            self.parser.feed(chunk)
        return self.parser.events.pop(0)

    async def stop(self):
        if self.process.returncode is None:
            self.process.terminate()
        await self.process.wait()


async def curl_tests(server: Server, log_dir: str):
    base = f"http://127.0.0.1:{server.port}"
    channel = "chat:curl"
    first = await Curl.start(base + "/sse?channel=chat:curl")
    opening = await first.event()
    assert opening.event == "subscribed" and opening.json["channel"] == channel and "recovered" not in opening.json, \
        opening
    epoch, start = position(opening)
    assert (epoch, start) == (opening.json["epoch"], opening.json["offset"]), opening
    offsets = [await server.publish(channel, {"n": n}) for n in range(3)]
    for n, offset in enumerate(offsets):
        event = await first.event()
        assert event.event == "publication" and event.json["data"] == {"n": n} and event.json["offset"] == offset, event
        assert position(event) == (epoch, offset), event
    last_seen = event.id
    await first.stop()
    missed = [await server.publish(channel, {"n": n}) for n in range(3, 7)]
    again = await Curl.start(base + "/sse?channel=chat:curl", "-H", f"Last-Event-ID: {last_seen}")
    opening = await again.event()
    assert opening.event == "subscribed" and opening.json.get("recovered") is True, opening
    # A reconnect between this event and the recovered ones must not skip them: its id is at most the
    # position before the first recovered publication.
    assert position(opening)[1] <= missed[0] - 1, f"subscribed's id skips the recovered publications: {opening}"
    for n, offset in zip(range(3, 7), missed):
        event = await again.event()
        assert event.event == "publication" and event.json["offset"] == offset and event.json["data"] == {"n": n}, \
            event
    live = await server.publish(channel, {"n": 7})
    event = await again.event()
    assert event.json["offset"] == live and event.json["data"] == {"n": 7}, f"not the live one next: {event}"
    await again.stop()
    print(f"curl -N: subscribed, 3 live publications with ids {epoch}:{offsets[0]}…; resumed with Last-Event-ID "
          f"{last_seen}: recovered true, exactly the 4 missed, then the live one")



# ---------------------------------------------------------------------------------------------------------
# Server-Sent Events from Python


async def resume_tests(server: Server):
    port = server.port
    channel = "chat:py"
    stream = await Response.open(port, sse(channel), {"Accept": "text/event-stream"})
    check_stream_head(stream, "GET /sse")
    opening = await subscribed(stream, channel)
    epoch, start = position(opening)
    sent = [await server.publish(channel, {"n": n}) for n in range(5)]
    got = await publications(stream, 5, channel)
    assert [e.json["offset"] for e in got] == sent == list(range(start + 1, start + 6)), (sent, got)
    assert [position(e) for e in got] == [(epoch, o) for o in sent], got
    assert [e.json["data"] for e in got] == [{"n": n} for n in range(5)], got
    stream.close()
    print(f"python: subscribed at {epoch}:{start}, 5 publications in order with ids {got[0].id} … {got[-1].id}")

    # Drop the stream, publish more, come back with Last-Event-ID: every missed one, once.
    last = got[-1].id
    missed = [await server.publish(channel, {"n": n}) for n in range(5, 12)]
    stream = await Response.open(port, sse(channel), {"Last-Event-ID": last})
    check_stream_head(stream, "GET /sse with Last-Event-ID")
    opening = await subscribed(stream, channel)
    assert opening.json.get("recovered") is True and opening.json["epoch"] == epoch, opening
    assert position(opening)[1] <= missed[0] - 1, f"subscribed's id skips the recovered publications: {opening}"
    got = await publications(stream, len(missed), channel)
    assert [e.json["offset"] for e in got] == missed and [e.json["data"]["n"] for e in got] == list(range(5, 12)), got
    live = await server.publish(channel, {"n": 12})
    event = await stream.expect_event()
    assert event.json["offset"] == live, f"a duplicate or a gap after recovery: {event}"
    stream.close()
    print(f"Last-Event-ID {last}: recovered true, the {len(missed)} missed exactly once, then live")

    # The same with ?since=.
    last = event.id
    missed = [await server.publish(channel, {"n": n}) for n in range(13, 16)]
    stream = await Response.open(port, sse(channel, since=last))
    opening = await subscribed(stream, channel)
    assert opening.json.get("recovered") is True, opening
    got = await publications(stream, 3, channel)
    assert [e.json["offset"] for e in got] == missed, got
    stream.close()
    print(f"?since={last}: recovered true, the 3 missed")

    # Another epoch: recovered false, and nothing passed off as recovered.
    stream = await Response.open(port, sse(channel), {"Last-Event-ID": f"x0x0x0x0:{missed[-1]}"})
    opening = await subscribed(stream, channel)
    assert opening.json.get("recovered") is False, opening
    live = await server.publish(channel, {"n": 16})
    event = await stream.expect_event()
    assert event.event == "publication" and event.json["offset"] == live, f"not the live one next: {event}"
    stream.close()
    print("a position from another epoch: recovered false, then live publications only")

    # History shorter than the gap (historySize 5, 8 missed): recovered false, never a silent gap.
    short = "short:gap"
    stream = await Response.open(port, sse(short))
    opening = await subscribed(stream, short)
    offset = await server.publish(short, {"n": 0})
    event = await stream.expect_event()
    assert event.json["offset"] == offset and event.id, event
    stream.close()
    for n in range(1, 9):
        await server.publish(short, {"n": n})
    stream = await Response.open(port, sse(short), {"Last-Event-ID": event.id})
    opening = await subscribed(stream, short)
    assert opening.json.get("recovered") is False, f"8 missed with a history of 5: {opening}"
    live = await server.publish(short, {"n": 9})
    event = await stream.expect_event()
    assert event.event == "publication" and event.json["offset"] == live, f"not the live one next: {event}"
    stream.close()
    # ?since= there too.
    stream = await Response.open(port, sse(short, since=f"{position(opening)[0]}:{offset}"))
    opening = await subscribed(stream, short)
    assert opening.json.get("recovered") is False, opening
    stream.close()
    print("history of 5, 8 missed: recovered false (Last-Event-ID and ?since=), then live only")

    # A channel without history: events without id.
    plain = "plainroom"
    stream = await Response.open(port, sse(plain))
    opening = await subscribed(stream, plain)
    offset = await server.publish(plain, {"n": 1})
    event = await stream.expect_event()
    assert event.event == "publication" and event.json["data"] == {"n": 1} and event.id is None, event
    stream.close()
    print("a namespace without history: publications without id:")

    # Presence: join and leave as named events (no id: they have no position).
    room = "room:presence"
    stream = await Response.open(port, sse(room, user="sam"))
    await subscribed(stream, room)
    own = await stream.expect_event()
    assert own.event == "join" and own.json["push"] == "join" and own.json["channel"] == room, own
    visitor = await Client.open(f"{server.ws}?user=vera", "vera")
    await visitor.ok("subscribe", channel=room)
    joined = await stream.expect_event()
    assert joined.event == "join" and joined.json["info"]["user"] == "vera" and joined.id is None, joined
    await visitor.ok("unsubscribe", channel=room)
    left = await stream.expect_event()
    assert left.event == "leave" and left.json["push"] == "leave" and left.json["info"]["user"] == "vera", left
    await visitor.close()
    stream.close()
    print(f"presence: 'event: join' (its own, user {own.json['info'].get('user')!r}, then a WebSocket client's) "
          "and 'event: leave'")



async def gzip_tests(server: Server, log_dir: str):
    """With deflate on: `Content-Encoding: gzip` for clients that accept it, each event decodable on arrival."""
    base = f"http://127.0.0.1:{server.port}"
    channel = "chat:curl"
    headers_file = os.path.join(log_dir, "curl-compressed.headers")
    compressed = await Curl.start(base + "/sse?channel=chat:curl", "--compressed", "-D", headers_file)
    opening = await compressed.event()
    assert opening.event == "subscribed", opening
    live = await server.publish(channel, {"n": 8, "text": "compressed " * 40})
    event = await compressed.event()
    assert event.json["offset"] == live and event.json["data"]["n"] == 8, event
    with open(headers_file) as f:
        head = f.read().lower()
    assert "content-encoding: gzip" in head and "text/event-stream" in head, head
    await compressed.stop()
    plain_headers = os.path.join(log_dir, "curl-plain.headers")
    plain = await Curl.start(base + "/sse?channel=chat:curl", "-D", plain_headers)
    await plain.event()
    await plain.stop()
    with open(plain_headers) as f:
        assert "content-encoding" not in f.read().lower()
    print("curl --compressed: Content-Encoding gzip, each publication decodable as it arrives; without it, none")

    port = server.port
    channel = "chat:py"
    # gzip from Python: a publication decodes from the bytes received before anything else is sent.
    stream = await Response.open(port, sse(channel), {"Accept-Encoding": "gzip"})
    check_stream_head(stream, "GET /sse, Accept-Encoding gzip", gzip=True)
    await subscribed(stream, channel)
    live = await server.publish(channel, {"text": "gzip " * 100})
    event = await stream.expect_event()
    assert event.json["offset"] == live and event.json["data"] == {"text": "gzip " * 100}, event
    assert stream.raw_received < len(event.data), (stream.raw_received, len(event.data))
    compressible, compressible_size = stream.raw_received, len(event.data)
    # Publications that do not compress (their compressed form is longer than any small output buffer):
    # each must be whole in what arrived before the next one is published.
    for n in range(3):
        noise = base64.b64encode(os.urandom(3000)).decode()
        live = await server.publish(channel, {"n": n, "noise": noise})
        event = await stream.expect_event()
        assert event.json["offset"] == live and event.json["data"]["noise"] == noise, event
    stream.close()
    print(f"Accept-Encoding gzip: one gzip stream flushed per write ({compressible} bytes on the wire for the "
          f"subscribed event and a {compressible_size}-byte publication; 3 incompressible 4 KB publications each "
          "decodable on arrival)")


async def many_channels_tests(server: Server):
    port = server.port
    a, b = "chat:m1", "chat:m2"
    stream = await Response.open(port, sse(a, b))
    check_stream_head(stream, "two channels")
    first, second = await stream.events(2)
    assert {first.json["channel"], second.json["channel"]} == {a, b} and first.event == second.event == "subscribed", \
        (first, second)
    ids = positions(second)
    assert len(ids) == 2 and all(ids), f"the id of a two-channel stream names both positions: {second}"
    epochs = {a: ids[0][0], b: ids[1][0]}
    expected = {a: ids[0][1], b: ids[1][1]}
    plan = [a, b, b, a, b]
    for n, channel in enumerate(plan):
        await server.publish(channel, {"n": n})
    got = await publications(stream, len(plan))
    for n, (channel, event) in enumerate(zip(plan, got)):
        expected[channel] += 1
        assert event.json["channel"] == channel and event.json["data"] == {"n": n}, event
        assert positions(event) == [(epochs[a], expected[a]), (epochs[b], expected[b])], (event, expected)
    last = got[-1].id
    stream.close()
    missed = {a: [], b: []}
    for n, channel in enumerate([b, a, a, b], start=len(plan)):
        missed[channel].append((await server.publish(channel, {"n": n})))
    stream = await Response.open(port, sse(a, b), {"Last-Event-ID": last})
    events = []
    while sum(e.event == "publication" for e in events) < 4:
        events.append(await stream.expect_event())
    opened = [e for e in events if e.event == "subscribed"]
    assert len(opened) == 2 and all(e.json.get("recovered") is True for e in opened), events
    for channel in (a, b):
        mine = [e.json["offset"] for e in events if e.event == "publication" and e.json["channel"] == channel]
        assert mine == missed[channel], (channel, mine, missed)
        # Each channel's subscribed comes before its recovered publications.
        index = next(i for i, e in enumerate(events) if e.event == "subscribed" and e.json["channel"] == channel)
        assert all(i > index for i, e in enumerate(events) if e.event == "publication"
                   and e.json["channel"] == channel), events
    assert positions(events[-1]) == [(epochs[a], missed[a][-1]), (epochs[b], missed[b][-1])], events[-1]
    stream.close()
    # A position for one channel only: that one recovers, the other starts fresh.
    only_a = f"{epochs[a]}:{missed[a][0]},"
    stream = await Response.open(port, sse(a, b), {"Last-Event-ID": only_a})
    events = []
    while sum(e.event == "subscribed" for e in events) < 2 or sum(e.event == "publication" for e in events) < 1:
        events.append(await stream.expect_event())
    by_channel = {e.json["channel"]: e for e in events if e.event == "subscribed"}
    assert by_channel[a].json.get("recovered") is True and "recovered" not in by_channel[b].json, events
    assert [e.json["offset"] for e in events if e.event == "publication"] == missed[a][1:], events
    stream.close()
    print(f"two channels in one stream: composite ids ({last}), resumed both at once with exactly the 4 missed; "
          f"a position for one of them ({only_a!r}) recovers that one only")


async def auth_tests(log_dir: str):
    config = os.path.join(log_dir, "tokens.json")
    with open(config, "w") as f:
        json.dump({"namespaces": TOKEN_NAMESPACES}, f)
    server = Server("tokens", log_dir, "--config", config, "--ping-interval", "1",
                    "--pong-timeout", "1", "--stats-interval", "0", env={"SWITCHBOARD_TOKEN_SECRET": SECRET})
    try:
        port = server.port
        ada = token("ada")
        forged = token("ada", "another-secret-of-at-least-32-bytes-long")
        message = expect_refusal(await Response.open(port, sse("chat:auth")), 401, "no token")
        expect_refusal(await Response.open(port, sse("chat:auth"), {"Authorization": f"Bearer {forged}"}), 401,
                       "forged bearer token")
        expect_refusal(await Response.open(port, sse("chat:auth", token=forged)), 401, "forged ?token=")
        expect_refusal(await Response.open(port, sse("chat:auth", token="not.a.token")), 401, "garbage ?token=")
        print(f"tokens: none, forged (header and query), garbage: 401 JSON ({message!r})")

        bearer = await Response.open(port, sse("chat:auth"), {"Authorization": f"Bearer {ada}"})
        check_stream_head(bearer, "bearer token")
        await subscribed(bearer, "chat:auth")
        query = await Response.open(port, sse("chat:auth", token=ada))
        check_stream_head(query, "?token=")
        await subscribed(query, "chat:auth")
        offset = await server.publish("chat:auth", {"hello": "ada"})
        for stream in (bearer, query):
            event = await stream.expect_event()
            assert event.json["offset"] == offset, event
        query.close()
        print("tokens: Authorization Bearer and ?token= accepted, both receive")

        # Permissions: a user-limited channel, one the namespace keeps for subscription tokens.
        expect_refusal(await Response.open(port, sse("dm:#bob,carol", token=ada)), 403, "dm:#bob,carol as ada")
        expect_refusal(await Response.open(port, sse("chat:ok", "dm:#bob", token=ada)), 403, "one refused of two")
        expect_refusal(await Response.open(port, sse("private:plans", token=ada)), 403, "subscription-token namespace")
        mine = await Response.open(port, sse("dm:#ada,bob", token=ada))
        await subscribed(mine, "dm:#ada,bob")
        members = await Response.open(port, sse("members:room", token=ada))
        await subscribed(members, "members:room")
        mine.close()
        members.close()
        print("permissions: dm:#bob,carol and private:* refused 403 JSON for ada; dm:#ada,bob and members:* open")

        # `: ping` comments at the ping interval, and the stream outlives ping + pong timeout (the kernel's
        # acknowledgement stands for the pong a stream client cannot send).
        started = time.time()
        await eventually("four ping comments", lambda: _pings_read(bearer, 4), timeout=TIMEOUT)
        elapsed = time.time() - started
        assert bearer.parser.comments.count(": ping") >= 4 and not bearer.ended, bearer.parser.comments
        offset = await server.publish("chat:auth", {"still": "here"})
        event = await bearer.expect_event()
        assert event.json["offset"] == offset, event
        bearer.close()
        print(f"pings: 4 ': ping' comments in {elapsed:.1f} s at --ping-interval 1 --pong-timeout 1; still delivering")

        # The HTTP transport with tokens: in-band connect, as over WebSocket.
        stream = await Response.open(port, "/http-stream")
        check_stream_head(stream, "GET /http-stream, no token")
        session = await session_of(stream)
        await post(port, session, {"id": 1, "cmd": "subscribe", "channel": "chat:auth"})
        reply = await reply_to(stream, 1)
        assert reply.get("error", {}).get("code") == 111, reply
        await post(port, session, {"id": 2, "cmd": "connect", "token": ada})
        reply = await reply_to(stream, 2)
        assert reply.get("ok", {}).get("user") == "ada", reply
        await post(port, session, {"id": 3, "cmd": "subscribe", "channel": "chat:auth"})
        assert "ok" in await reply_to(stream, 3)
        stream.close()
        headed = await Response.open(port, "/http-stream", {"Authorization": f"Bearer {ada}"})
        session = await session_of(headed)
        await post(port, session, {"id": 1, "cmd": "connect"})
        assert (await reply_to(headed, 1)).get("ok", {}).get("user") == "ada"
        headed.close()
        expect_refusal(await Response.open(port, "/http-stream", {"Authorization": f"Bearer {forged}"}), 401,
                       "HTTP transport, forged bearer token")
        print("HTTP transport with tokens: 111 before connect, connect with a token in a POST, a bearer "
              "header authenticates the stream, a forged one 401")
    finally:
        server.stop()


async def server_api_tests(server: Server):
    """What the backend does through the server API reaches a stream: a publication whose data has line breaks
    in its whitespace (kept byte for byte: several `data:` lines, one JSON), `send`, `unsubscribe`, and
    `disconnect`, whose notice ends the stream."""
    port = server.port
    channel = "chat:api"
    stream = await Response.open(port, sse(channel, user="uma"))
    await subscribed(stream, channel)
    transport = await Response.open(port, "/http-stream")
    session = await session_of(transport)
    await post(port, session, {"id": 1, "cmd": "subscribe", "channel": channel})
    assert "ok" in await reply_to(transport, 1)
    raw = b'{"channel": "chat:api", "data": {"a":\r\n 1,\n"b": "x\\ny"}}'
    request = urllib.request.Request(f"{server.api}/api/publish", data=raw, method="POST",
                                     headers={"Content-Type": "application/json"})
    answer = await asyncio.to_thread(lambda: json.loads(urllib.request.urlopen(request, timeout=TIMEOUT).read()))
    event = await stream.expect_event()
    assert event.event == "publication" and event.json["offset"] == answer["offset"], event
    assert event.json["data"] == {"a": 1, "b": "x\ny"}, event
    pub = await next_push(transport, "pub")
    assert pub["offset"] == answer["offset"] and pub["data"] == {"a": 1, "b": "x\ny"}, pub
    transport.close()
    await asyncio.to_thread(server.call, "send", {"user": "uma", "data": {"text": "for uma"}})
    event = await stream.expect_event()
    assert event.event == "message" and event.json == {"push": "message", "data": {"text": "for uma"}}, event
    await asyncio.to_thread(server.call, "unsubscribe", {"user": "uma", "channel": channel})
    event = await stream.expect_event()
    assert event.event == "unsubscribed" and event.json == {"push": "unsubscribed", "channel": channel}, event
    await asyncio.to_thread(server.call, "disconnect", {"user": "uma", "code": 4000, "reason": "bye"})
    rest = await stream.rest()
    assert [e.event for e in rest] == ["disconnect"], rest
    assert rest[0].json["code"] == 4000 and rest[0].json["reason"] == "bye", rest[0]
    print("server API: a publication with line breaks in its data (several data: lines, the same JSON, on both "
          "transports), send → 'event: message', unsubscribe → 'event: unsubscribed', disconnect → "
          "'event: disconnect' 4000 and the end of the stream")


async def limits_and_shutdown_tests(log_dir: str):
    """A server at its connection limit refuses streams 503 JSON; on SIGTERM a stream gets `event: disconnect`
    1001 and ends, and the server exits 0."""
    server = Server("limits", log_dir, "--max-connections", "2", "--stats-interval", "0",
                    "--config", os.path.join(log_dir, "switchboard.json"))
    try:
        port = server.port
        held = [await Response.open(port, sse("chat:limit")) for _ in range(2)]
        for stream in held:
            await subscribed(stream, "chat:limit")
        # EventSource gives up for good on anything but a 200 event stream, so a refusal to come back later is
        # one: `retry:` and `event: error` with the JSON error, then the end.
        refused = await Response.open(port, sse("chat:limit"))
        assert refused.status == 200 and refused.headers.get("content-type", "").startswith("text/event-stream"), \
            (refused.status, refused.headers, refused.body)
        rest = await refused.rest()
        assert len(rest) == 1 and rest[0].event == "error" and int(rest[0].fields.get("retry", "0")) >= 1000, rest
        assert rest[0].json["error"]["code"] == 503 and rest[0].json["error"]["message"], rest[0]
        retry = int(rest[0].fields["retry"])
        expect_refusal(await Response.open(port, "/http-stream"), 503, "the HTTP transport at --max-connections 2")
        held.pop().close()

        async def admitted():
            response = await Response.open(port, sse("chat:limit"))
            first = await response.expect_event()
            if first.event == "error":
                response.close()
                return None
            response.parser.events.insert(0, first)
            return response
        again = await eventually("a stream once a place is free", admitted)
        await subscribed(again, "chat:limit")
        held.append(again)
        print(f"limits: at --max-connections 2 a third stream gets 'retry: {retry}' and 'event: error' 503, the "
              "HTTP transport 503 JSON; a place freed, a stream opens")

        server.process.terminate()
        for stream in held:
            rest = await stream.rest()
            assert rest and rest[-1].event == "disconnect", f"no disconnect event at shutdown: {rest}"
            notice = rest[-1].json
            assert notice["code"] == 1001 and notice["reconnect"] is True, notice
        code = await asyncio.to_thread(server.process.wait, 60)
        assert code == 0, f"serve exited {code} after SIGTERM with streams open"
        print(f"shutdown: each stream got 'event: disconnect' {notice['code']} ({notice['reason']!r}) and ended; "
              "serve exited 0")
    finally:
        server.stop()


def _pings_read(stream: Response, count: int):
    async def read():
        if stream.parser.comments.count(": ping") >= count:
            return True
        try:
            chunk = await asyncio.wait_for(stream.reader.read(65536), 0.5)
        except asyncio.TimeoutError:
            return False
        assert chunk, "the stream ended while idle"
        stream.parser.feed(stream.gzip.decompress(chunk) if stream.gzip else chunk)
        assert not stream.parser.events, stream.parser.events
        return stream.parser.comments.count(": ping") >= count
    return read()


async def refusal_tests(server: Server):
    port = server.port
    cases = [
        ("no channel", "/sse", {}, 400),
        ("an empty channel", "/sse?channel=", {}, 400),
        ("an invalid channel name", sse("bad name!"), {}, 400),
        ("a channel name of 256 characters", sse("c" * 256), {}, 400),
        ("an unknown namespace", sse("nowhere:x"), {}, 404),
        ("129 channels", sse(*[f"chat:c{i}" for i in range(129)]), {}, 400),
        ("a channel twice", sse("chat:dup", "chat:dup"), {}, 400),
        ("Last-Event-ID garbage", sse("chat:bad"), {"Last-Event-ID": "garbage"}, 400),
        ("Last-Event-ID with a negative offset", sse("chat:bad"), {"Last-Event-ID": "abc:-1"}, 400),
        ("Last-Event-ID without an offset", sse("chat:bad"), {"Last-Event-ID": "abc:"}, 400),
        ("Last-Event-ID naming 3 positions for 2 channels", sse("chat:b1", "chat:b2"),
         {"Last-Event-ID": "abc:1,abc:2,abc:3"}, 400),
        ("since garbage", sse("chat:bad", since="%%%"), {}, 400),
        ("since with letters for the offset", sse("chat:bad", since="abc:xyz"), {}, 400),
        ("anonymous in a namespace for authenticated users", sse("members:room"), {}, 403),
        ("a page from another origin", sse("chat:x"), {"Origin": "http://evil.example"}, 403),
        ("a page from another origin, HTTP transport", "/http-stream", {"Origin": "http://evil.example"}, 403),
    ]
    for what, target, headers, status in cases:
        response = await Response.open(port, target, headers)
        expect_refusal(response, status, f"GET {target[:60]} ({what})")
    for method in ("PUT", "DELETE", "POST"):
        response = await Response.open(port, sse("chat:x"), method=method, body=b"{}" if method != "DELETE" else b"")
        expect_refusal(response, 405, f"{method} /sse")
    print(f"refusals: {len(cases)} bad /sse and /http-stream requests and PUT/DELETE/POST /sse, each the documented "
          "status with a JSON error")

    allowed = await Response.open(port, sse("chat:cors"), {"Origin": ORIGIN})
    check_stream_head(allowed, "an allowed origin")
    assert allowed.headers.get("access-control-allow-origin") == ORIGIN, allowed.headers
    await subscribed(allowed, "chat:cors")
    allowed.close()
    own = await Response.open(port, sse("chat:cors"))
    assert "access-control-allow-origin" not in own.headers, own.headers
    own.close()
    preflight = await Response.open(port, "/http-stream?session=x", {
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"}, method="OPTIONS")
    assert 200 <= preflight.status < 300 and preflight.headers.get("access-control-allow-origin") == ORIGIN, \
        (preflight.status, preflight.headers)
    refused = await Response.open(port, "/http-stream?session=x", {
        "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}, method="OPTIONS")
    assert refused.status == 403 and "access-control-allow-origin" not in refused.headers, \
        (refused.status, refused.headers)
    print(f"origins: {ORIGIN} (allowedOrigins) gets Access-Control-Allow-Origin and its preflight answered; "
          "same-origin requests none; another origin 403")

    # The HTTP transport's POST refusals.
    stream = await Response.open(port, "/http-stream")
    session = await session_of(stream)
    parts = session.split(".")
    assert len(parts) >= 2 and parts[-1], f"a session id with a secret part: {session!r}"
    secret = parts[-1]
    forged_secret = secret[::-1] if secret[::-1] != secret else secret[1:] + secret[:1]
    assert forged_secret != secret, session
    forged = ".".join(parts[:-1] + [forged_secret])
    command = b'{"id":1,"cmd":"ping"}'
    expect_refusal(await post_raw(port, "/http-stream", command), 400, "POST without a session")
    expect_refusal(await post_raw(port, "/http-stream?session=", command), 400, "POST with an empty session")
    expect_refusal(await post_raw(port, "/http-stream?session=%20%21%21", command), 400, "POST, a malformed session")
    expect_refusal(await post_raw(port, f"/http-stream?session={urllib.parse.quote(forged)}", command), 403,
                   "POST to another client's session")
    body = b'{"id":2,"cmd":"ping","pad":"' + b"x" * MAX_MESSAGE_SIZE + b'"}'
    target = f"/http-stream?session={urllib.parse.quote(session)}"
    expect_refusal(await post_raw(port, target, body, {"Expect": "100-continue"}), 413,
                   f"POST of {len(body)} bytes with Expect: 100-continue (maxMessageSize {MAX_MESSAGE_SIZE})")
    # The same, sent whole at once, as simple clients do: the answer must still be readable.
    expect_refusal(await post_raw(port, target, body), 413, f"POST of {len(body)} bytes sent whole")
    # A body within the limit, announced with Expect: 100-continue (curl does past 1 KiB): taken.
    small = b'{"id":9,"cmd":"ping","pad":"' + b"x" * 2000 + b'"}'
    answer = await post_raw(port, target, small, {"Expect": "100-continue"})
    assert answer.status == 202 and answer.json == {"ok": True}, (answer.status, answer.body)
    assert (await reply_to(stream, 9)) == {"id": 9, "ok": {}}
    # The session is unharmed by all that: its own POST still works.
    answer = await post_raw(port, f"/http-stream?session={urllib.parse.quote(session)}", command)
    assert answer.status == 202 and answer.json == {"ok": True}, (answer.status, answer.body)
    assert (await reply_to(stream, 1)) == {"id": 1, "ok": {}}
    stream.close()
    # Once the stream has ended, its session is unknown.
    ended = f"/http-stream?session={urllib.parse.quote(session)}"

    async def gone():
        answer = await post_raw(port, ended, command)
        return answer if answer.status != 202 else None
    answer = await eventually("the ended session to be forgotten", gone)
    message = expect_refusal(answer, 404, "POST to an ended session")
    assert message == "unknown session", message
    print(f"HTTP transport POSTs: no session 400, empty 400, malformed 400, another client's (secret part "
          f"changed: {forged_secret[:6]}…) 403, {len(body)} bytes 413 (with Expect: 100-continue and sent whole), "
          f"2 KB with Expect 202, an ended session 404 {message!r}")


# ---------------------------------------------------------------------------------------------------------
# The HTTP transport


async def session_of(stream: Response) -> str:
    event = await stream.expect_event()
    assert event.event == "message" and "event" not in event.fields, f"HTTP transport events are unnamed: {event}"
    assert event.json and event.json.get("push") == "session" and isinstance(event.json.get("session"), str), event
    return event.json["session"]


async def post_raw(port: int, target: str, body: bytes, headers: dict = None) -> Response:
    return await Response.open(port, target, {"Content-Type": "text/plain", **(headers or {})}, method="POST",
                               body=body)


async def post(port: int, session: str, *commands: dict):
    body = "\n".join(json.dumps(c) for c in commands).encode()
    answer = await post_raw(port, f"/http-stream?session={urllib.parse.quote(session)}", body)
    assert answer.status == 202 and answer.json == {"ok": True}, (answer.status, answer.body)
    assert answer.headers.get("content-type", "").startswith("application/json"), answer.headers


async def reply_to(stream: Response, command_id, pushes: list = None) -> dict:
    """The reply with this id from the HTTP transport's stream; pushes before it go to `pushes`."""
    while True:
        event = await stream.expect_event()
        assert event.event == "message" and "event" not in event.fields and event.json is not None, event
        if event.json.get("id") == command_id and "push" not in event.json:
            return event.json
        if pushes is not None:
            pushes.append(event.json)


async def next_push(stream: Response, kind: str, pushes: list = None) -> dict:
    while True:
        event = await stream.expect_event()
        assert event.event == "message" and event.json is not None, event
        if event.json.get("push") == kind:
            return event.json
        if pushes is not None:
            pushes.append(event.json)


async def http_transport_tests(server: Server):
    port = server.port
    channel = "room:h"
    stream = await Response.open(port, "/http-stream")
    check_stream_head(stream, "GET /http-stream")
    session = await session_of(stream)
    await post(port, session, {"id": 1, "cmd": "subscribe", "channel": channel})
    reply = await reply_to(stream, 1)
    assert isinstance(reply.get("ok", {}).get("epoch"), str), reply
    epoch = reply["ok"]["epoch"]

    ws = await Client.open(f"{server.ws}?user=wendy", "wendy")
    await ws.ok("subscribe", channel=channel)
    # HTTP → WebSocket (and its own copy down its stream).
    await post(port, session, {"id": 2, "cmd": "publish", "channel": channel, "data": {"from": "http"}})
    pushes = []
    reply = await reply_to(stream, 2, pushes)
    assert "offset" in reply.get("ok", {}), reply
    pub = await ws.push("pub", channel)
    assert pub["data"] == {"from": "http"} and pub["offset"] == reply["ok"]["offset"], pub
    own = next((p for p in pushes if p.get("push") == "pub"), None) or await next_push(stream, "pub")
    assert own["push"] == "pub" and own["data"] == {"from": "http"}, own
    # WebSocket → HTTP.
    sent = await ws.ok("publish", channel=channel, data={"from": "ws"})
    pub = await next_push(stream, "pub")
    assert pub["data"] == {"from": "ws"} and pub["offset"] == sent["offset"] and pub["user"] == "wendy", pub
    # Several commands in one POST, and a line that is not JSON.
    await post(port, session, {"id": 3, "cmd": "ping"}, {"id": 4, "cmd": "presence", "channel": channel})
    assert await reply_to(stream, 3) == {"id": 3, "ok": {}}
    presence = await reply_to(stream, 4)
    assert presence["ok"]["connections"] == 2, presence
    answer = await post_raw(port, f"/http-stream?session={urllib.parse.quote(session)}", b"this is not JSON")
    assert answer.status == 202, (answer.status, answer.body)
    error = await reply_to(stream, None)
    assert error["error"]["code"] == 100, error
    await post(port, session, {"id": 5, "cmd": "teleport"})
    assert (await reply_to(stream, 5))["error"]["code"] == 101
    print(f"HTTP transport: session {session[:12]}…, subscribe/publish/ping/presence by POST (202) with replies "
          "down the stream; its publication reached a WebSocket client and the WebSocket's reached it; "
          "two commands in one POST; not JSON → error 100, unknown command → 101")

    # The stream ends: the session ends; a new GET recovers what was missed, as after a WebSocket reconnect.
    last = pub["offset"]
    stream.close()
    missed = [(await ws.ok("publish", channel=channel, data={"n": n}))["offset"] for n in range(3)]
    stream = await Response.open(port, "/http-stream")
    again = await session_of(stream)
    assert again != session, "a new stream is a new session"
    await post(port, again, {"id": 1, "cmd": "subscribe", "channel": channel,
                             "recover": {"offset": last, "epoch": epoch}})
    reply = await reply_to(stream, 1)
    assert reply["ok"].get("recovered") is True, reply
    assert [p["offset"] for p in reply["ok"]["publications"]] == missed, reply
    sent = await ws.ok("publish", channel=channel, data={"n": "live"})
    pub = await next_push(stream, "pub")
    assert pub["offset"] == sent["offset"], pub
    stream.close()
    await ws.close()
    print(f"HTTP transport reconnect: a new session, subscribe with recover → recovered true, the "
          f"{len(missed)} missed, then live")


# ---------------------------------------------------------------------------------------------------------
# Slow readers


async def collect(stream: Response, into: list):
    while (event := await stream.event(timeout=None)) is not None:
        into.append(event)


async def ws_collect(client: Client, channel: str, into: list):
    while True:
        message = await client.pushes.get()
        if message.get("push") == "pub" and message.get("channel") == channel:
            into.append(message)


def check_everything(who: str, pubs: list, sent: int):
    """Every one of the `sent` publications (published a batch at a time, concurrently) exactly once, in
    offset order, with nothing else in between."""
    assert all(p.get("push") == "pub" for p in pubs), f"{who}: {[p for p in pubs if p.get('push') != 'pub'][:3]}"
    offsets = [p["offset"] for p in pubs]
    assert offsets == list(range(offsets[0], offsets[0] + sent)), f"{who}: offsets not contiguous: {offsets[:5]}…"
    assert sorted(p["data"]["n"] for p in pubs) == list(range(sent)), f"{who}: missing or repeated publications"


async def flood(server: Server, channel: str, until, batch: int = 20, limit: int = 4000) -> int:
    """Publishes 16 KB publications, a batch at a time, until `until()` holds; how many it took."""
    payload = "x" * 16000
    sent = 0
    while not await until():
        assert sent < limit, f"{limit} publications of 16 KB and still no effect on the stopped reader"
        await asyncio.gather(*(server.publish(channel, {"n": sent + i, "pad": payload}) for i in range(batch)))
        sent += batch
    return sent


async def slow_reader_tests(server: Server):
    port = server.port
    # Policy disconnect (the default): the stopped reader's stream ends; the others keep everything.
    channel = "slow:room"
    stopped = await Response.open(port, sse(channel), rcvbuf=4096)
    await subscribed(stopped, channel)
    fast = await Response.open(port, sse(channel))
    await subscribed(fast, channel)
    ws = await Client.open(f"{server.ws}?user=watcher", "watcher")
    await ws.ok("subscribe", channel=channel)
    fast_events, ws_pubs = [], []
    tasks = [asyncio.create_task(collect(fast, fast_events)), asyncio.create_task(ws_collect(ws, channel, ws_pubs))]
    before = await server.metric("switchboard_slow_consumer_disconnects_total")
    sse_open = await server.metric("switchboard_transport_connections_open", transport="sse")

    async def disconnected():
        return await server.metric("switchboard_slow_consumer_disconnects_total") > before
    sent = await flood(server, channel, disconnected)
    for n in range(5):
        await server.publish(channel, {"n": sent + n, "after": True})
    sent += 5
    await eventually("the reading SSE client to get every publication", lambda: len(fast_events) >= sent)
    await eventually("the WebSocket client to get every publication", lambda: len(ws_pubs) >= sent)
    check_everything("the reading SSE client", [e.json for e in fast_events], sent)
    check_everything("the WebSocket client", ws_pubs, sent)
    assert not fast.ended, "the reading SSE client was disconnected"
    rest = await stopped.rest()
    assert stopped.ended, "the stopped reader's stream did not end"
    # The notice cannot pass what the reader left unread: like a WebSocket's close frame, it arrives only
    # when the server could still write it. When it does, it says 1008 and reconnect.
    notices = [e for e in rest if e.event == "disconnect"]
    assert all(e.json["code"] == 1008 and e.json["reconnect"] is True for e in notices), notices
    assert not notices or rest[-1] is notices[0], f"events after the disconnect notice: {rest[-3:]}"
    ending = (f"'event: disconnect' {notices[0].json['code']}" if notices
              else "the connection closing (no room left for the disconnect notice, as for a WebSocket's close frame)")
    got = [e.json["offset"] for e in rest if e.event == "publication"]
    assert got == list(range(got[0], got[0] + len(got))), "the stopped reader got publications out of order or a gap"
    await eventually("the stopped reader's stream to be counted closed", lambda: _gauge_at_most(
        server, "sse", sse_open - 1))
    for task in tasks:
        task.cancel()
    fast.close()
    await ws.close()
    print(f"slow reader, policy disconnect: after {sent} publications of 16 KB its stream ended with {ending} "
          f"({len(got)} publications reached it first, in order); the reading SSE and WebSocket clients got all")

    # Policy dropOldest: the stopped reader gets a gap and stays; the others keep everything.
    channel = "feed:room"
    stopped = await Response.open(port, sse(channel), rcvbuf=4096)
    await subscribed(stopped, channel)
    fast = await Response.open(port, sse(channel))
    await subscribed(fast, channel)
    ws = await Client.open(f"{server.ws}?user=watcher2", "watcher2")
    await ws.ok("subscribe", channel=channel)
    fast_events, ws_pubs = [], []
    tasks = [asyncio.create_task(collect(fast, fast_events)), asyncio.create_task(ws_collect(ws, channel, ws_pubs))]
    async def drops():
        return (await server.metric("switchboard_queue_dropped_total")
                + await server.metric("switchboard_gap_dropped_messages_total"))
    before = await drops()

    async def dropped():
        return await drops() > before
    sent = await flood(server, channel, dropped)
    marker = await server.publish(channel, {"n": sent, "marker": True})
    sent += 1
    events = []
    while not (events and events[-1].event == "publication" and events[-1].json["offset"] == marker):
        events.append(await stopped.expect_event())
    gaps = [e for e in events if e.event == "gap"]
    assert gaps and all(g.json["channel"] == channel and g.json["dropped"] > 0 for g in gaps), \
        [e.event for e in events][-10:]
    offsets = [e.json["offset"] for e in events if e.event == "publication"]
    assert offsets == sorted(set(offsets)), "publications out of order or twice"
    skipped = sum(g.json["dropped"] for g in gaps)
    assert len(offsets) + skipped == sent, (len(offsets), skipped, sent)
    await eventually("the reading SSE client to get every publication", lambda: len(fast_events) >= sent)
    await eventually("the WebSocket client to get every publication", lambda: len(ws_pubs) >= sent)
    check_everything("the reading SSE client", [e.json for e in fast_events], sent)
    check_everything("the WebSocket client", ws_pubs, sent)
    live = await server.publish(channel, {"n": sent})
    event = await stopped.expect_event()
    assert event.event == "publication" and event.json["offset"] == live, event
    for task in tasks:
        task.cancel()
    for stream in (stopped, fast):
        stream.close()
    await ws.close()
    print(f"slow reader, policy dropOldest: {sent} publications, {len(gaps)} gap event(s) for {skipped} dropped, "
          f"{len(offsets)} delivered in order, the stream stayed open; the others got all")


async def _gauge_at_most(server: Server, transport: str, value: float) -> bool:
    return await server.metric("switchboard_transport_connections_open", transport=transport) <= value


# ---------------------------------------------------------------------------------------------------------
# Metrics


async def metrics_tests(server: Server):
    port = server.port
    base = {t: await server.metric("switchboard_transport_connections_total", transport=t)
            for t in ("websocket", "sse", "http_stream")}
    streams = [await Response.open(port, sse("chat:metrics")) for _ in range(3)]
    for stream in streams:
        await subscribed(stream, "chat:metrics")
    transport = await Response.open(port, "/http-stream")
    await session_of(transport)
    ws = await Client.open(f"{server.ws}?user=meter", "meter")
    await ws.ok("ping")
    stats = await Response.open(port, sse("sys:stats"))
    await subscribed(stats, "sys:stats")

    async def gauges():
        values = {t: await server.metric("switchboard_transport_connections_open", transport=t)
                  for t in ("websocket", "sse", "http_stream")}
        return values if values["sse"] == 4 and values["http_stream"] == 1 and values["websocket"] == 1 else None
    values = await eventually("the per-transport gauges", gauges)
    totals = {t: await server.metric("switchboard_transport_connections_total", transport=t) - base[t]
              for t in base}
    assert totals == {"websocket": 1, "sse": 4, "http_stream": 1}, totals
    # The feed's figures are taken at its tick: within a few ticks they show every client connected above.
    seen = []
    while not seen or seen[-1] != {"websocket": 1, "sse": 4, "http_stream": 1}:
        assert len(seen) < 5, f"sys:stats transports: {seen}"
        event = await stats.expect_event()
        if event.event == "publication":
            assert isinstance(event.json["data"].get("transports"), dict), event
            seen.append(event.json["data"]["transports"])
    transports = seen[-1]
    for stream in streams + [transport, stats]:
        stream.close()
    await ws.close()
    print(f"metrics: switchboard_transport_connections_open {values}, _total grew by {totals}; sys:stats "
          f"transports {transports}")


async def leak_check(server: Server):
    async def all_closed():
        values = {t: await server.metric("switchboard_transport_connections_open", transport=t)
                  for t in ("websocket", "sse", "http_stream")}
        return values if not any(values.values()) else None
    values = await eventually("every transport's open connections back to 0", all_closed)
    stream = await Response.open(server.port, sse("chat:after"))
    await subscribed(stream, "chat:after")
    offset = await server.publish("chat:after", {"fresh": True})
    event = await stream.expect_event()
    assert event.json["offset"] == offset, event
    stream.close()
    await eventually("the fresh client's close", all_closed)
    assert server.process.poll() is None, "the server died"
    print(f"nothing leaked: {values} once every client had left; a fresh client subscribed and received")


# ---------------------------------------------------------------------------------------------------------


async def main():
    started = time.time()
    log_dir = tempfile.mkdtemp(prefix="switchboard-sse-")
    config = os.path.join(log_dir, "switchboard.json")
    with open(config, "w") as f:
        json.dump({"namespaces": NAMESPACES}, f)
    server = None
    try:
        server = Server("demo", log_dir, "--config", config, "--deflate", "--allowed-origins", ORIGIN,
                        "--queue-max-bytes", str(QUEUE_MAX_BYTES), "--max-message-size", str(MAX_MESSAGE_SIZE),
                        "--stats-interval", "1")
        parts = [("curl", lambda: curl_tests(server, log_dir)), ("resume", lambda: resume_tests(server)),
                 ("gzip", lambda: gzip_tests(server, log_dir)),
                 ("many", lambda: many_channels_tests(server)), ("http", lambda: http_transport_tests(server)),
                 ("refusals", lambda: refusal_tests(server)), ("slow", lambda: slow_reader_tests(server)),
                 ("api", lambda: server_api_tests(server)), ("metrics", lambda: metrics_tests(server))]
        for name, part in parts:
            if not PARTS or name in PARTS:
                await part()
        await leak_check(server)
        if not PARTS or "auth" in PARTS:
            await auth_tests(log_dir)
        if not PARTS or "limits" in PARTS:
            await limits_and_shutdown_tests(log_dir)
    except BaseException:
        print(f"server logs in {log_dir}", file=sys.stderr)
        raise
    finally:
        for process in CURLS:
            if process.returncode is None:
                process.kill()
                await process.wait()
        if server:
            server.stop()
    print(f"stream tests passed in {time.time() - started:.0f} s")


asyncio.run(main())
