"""The demo and the dashboard in a real headless Chromium (Debian's), driven by Playwright.

Two browser contexts chat through `switchboard serve` (demo mode), see each other in presence, one drops
its connection while offline, the other keeps talking, and the first recovers every missed message exactly
once. Then the dashboard's charts move while `switchboard-bench` puts load on the server. Last, a page
loaded through a proxy that refuses WebSocket upgrades chats over the client's HTTP fallback with a page on
a WebSocket, shows which transport it uses, and recovers what it missed after the proxy resets its
connections; the dashboard works through that proxy too. Screenshots go to ARTIFACTS (default
test-artifacts/).

usage: browser_test.py SWITCHBOARD_BINARY BENCH_BINARY
"""
import asyncio
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time

from playwright.sync_api import expect, sync_playwright



class RefusingProxy:
    """A TCP proxy on a free loopback port in front of the server, on an asyncio loop of its own (a thread):
    it answers requests to upgrade to a WebSocket 403, as some networks do, and passes every other request
    through byte for byte, streamed both ways. `cut()` resets every connection passing through and turns new
    ones away (reset at once) until `restore()`."""

    def __init__(self, target_port):
        self.target_port = target_port
        self.links = set()
        self.refusing = False
        self.upgrades_refused = 0
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), daemon=True).start()
        if not ready.wait(10):
            sys.exit("the proxy did not start")
        self.base = f"http://127.0.0.1:{self.port}"

    def _run(self, ready):
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()

    @staticmethod
    def _reset(writer):
        """Closes with a TCP reset, as a failing network would, not a clean FIN."""
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    async def _serve(self, reader, writer):
        if self.refusing:
            return self._reset(writer)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            return writer.close()
        if re.search(rb"^upgrade:\s*websocket", head, re.IGNORECASE | re.MULTILINE):
            self.upgrades_refused += 1
            writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            return writer.close()
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            return self._reset(writer)
        upstream_writer.write(head)
        link = (writer, upstream_writer)
        self.links.add(link)

        async def pump(source, sink):
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, OSError):
                pass

        # Every answer of the server closes its connection: when either side is done, so is the link.
        pumps = [asyncio.ensure_future(pump(reader, upstream_writer)), asyncio.ensure_future(pump(upstream_reader, writer))]
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for task in pumps:
            task.cancel()
        self.links.discard(link)
        for side in link:
            side.close()

    def cut(self):
        def reset_all():
            self.refusing = True
            for link in list(self.links):
                for side in link:
                    self._reset(side)
            self.links.clear()
        self.loop.call_soon_threadsafe(reset_all)

    def restore(self):
        self.loop.call_soon_threadsafe(lambda: setattr(self, "refusing", False))


binary, bench = sys.argv[1], sys.argv[2]
artifacts = os.environ.get("ARTIFACTS", "test-artifacts")
os.makedirs(artifacts, exist_ok=True)
# A WebSocket path other than the default: the pages must find it from /config.json.
server = subprocess.Popen([binary, "serve", "--port", "0", "--no-api", "--log-level", "warning", "--path", "/realtime"],
                          stdout=subprocess.PIPE, text=True)
try:
    base = None
    deadline = time.time() + 60
    while base is None and time.time() < deadline:
        line = server.stdout.readline()
        match = re.search(r"chat demo on (http://\S+)/ ", line)
        if match:
            base = match.group(1)
    if not base:
        sys.exit("serve did not print the demo's address")
    port = base.rsplit(":", 1)[1]
    print(f"demo at {base}/")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        expect.set_options(timeout=20000)
        # Every request a page makes must succeed (a missing favicon is a 404 in the console) and no script may throw.
        problems = []

        def watch(page, name):
            page.on("pageerror", lambda error: problems.append(f"{name}: page error: {error}"))
            page.on("response", lambda r: problems.append(f"{name}: {r.status} for {r.url}") if r.status >= 400 else None)

        def join(name, at=base):
            context = browser.new_context(viewport={"width": 1000, "height": 700})
            page = context.new_page()
            watch(page, name)
            page.goto(f"{at}/")
            page.fill("#name", name)
            page.click("#login button")
            expect(page.locator("#status")).to_have_attribute("data-state", "connected")
            return context, page

        alice_context, alice = join("alice")
        bob_context, bob = join("bob")
        expect(alice.locator("#members li", has_text="bob")).to_have_count(1)
        expect(bob.locator("#members li", has_text="alice")).to_have_count(1)
        print("presence: each sees the other")

        alice.fill("#text", "hello from alice")
        alice.press("#text", "Enter")
        expect(bob.locator("#messages li", has_text="hello from alice")).to_have_count(1)
        print("chat: bob received alice's message")

        # Bob goes offline and drops his socket; alice keeps talking; bob comes back and recovers.
        bob_context.set_offline(True)
        bob.click("#drop")
        expect(bob.locator("#status")).not_to_have_attribute("data-state", "connected")
        missed = [f"missed {n}" for n in range(1, 4)]
        for text in missed:
            alice.fill("#text", text)
            alice.press("#text", "Enter")
            expect(alice.locator("#messages li", has_text=text)).to_have_count(1)
        expect(bob.locator("#messages li", has_text="missed")).to_have_count(0)
        bob_context.set_offline(False)
        expect(bob.locator("#status")).to_have_attribute("data-state", "connected")
        expect(bob.locator("#recovery")).to_contain_text("every missed message was recovered")
        for text in missed:
            expect(bob.locator("#messages li", has_text=text)).to_have_count(1)
        expect(bob.locator("#messages li", has_text="hello from alice")).to_have_count(1)
        expect(bob.locator("#members li", has_text="alice")).to_have_count(1)
        print("recovery: bob got the 3 missed messages once each")
        bob.screenshot(path=f"{artifacts}/chat.png")

        phone = browser.new_context(viewport={"width": 390, "height": 800}, is_mobile=True)
        small = phone.new_page()
        watch(small, "carol")
        small.goto(f"{base}/")
        small.fill("#name", "carol")
        small.click("#login button")
        expect(small.locator("#messages li", has_text="missed 3")).to_have_count(1)
        small.screenshot(path=f"{artifacts}/chat-phone.png", full_page=True)

        dashboard_context = browser.new_context(viewport={"width": 1200, "height": 900})
        dashboard = dashboard_context.new_page()
        watch(dashboard, "dashboard")
        dashboard.goto(f"{base}/dashboard")
        expect(dashboard.locator("#status")).to_have_attribute("data-state", "connected")
        connections = dashboard.locator('[data-key="connections"]')
        expect(connections).to_have_attribute("data-samples", re.compile(r"^([3-9]|\d\d+)$"))
        expect(connections.locator(".value")).to_have_text(re.compile(r"^[0-9]$"))
        churn = subprocess.Popen(
            [bench, "run", "churn", "--port", port, "--path", "/realtime", "--connections", "50", "--workers", "1",
             "--duration", "6", "--settle", "0", "--source-addresses", "2"], stdout=subprocess.DEVNULL)
        expect(dashboard.locator('[data-key="connectsPerSecond"] .value')).to_have_text(re.compile(r"^[1-9]"))
        if churn.wait(timeout=120) != 0:
            sys.exit("switchboard-bench churn failed")
        print("dashboard: connects per second moved while connections churned")
        hold = subprocess.Popen(
            [bench, "run", "idle", "--port", port, "--path", "/realtime", "--connections", "300", "--workers", "1",
             "--duration", "6", "--source-addresses", "2"], stdout=subprocess.DEVNULL)
        expect(connections.locator(".value")).to_have_text(re.compile(r"^(3\d\d|[4-9]\d\d|\d{4,})$"), timeout=30000)
        print("dashboard: open connections passed 300 while the load ran")
        dashboard.screenshot(path=f"{artifacts}/dashboard.png", full_page=True)
        if hold.wait(timeout=120) != 0:
            sys.exit("switchboard-bench idle failed")
        expect(dashboard.locator("#transport")).to_have_attribute("data-transport", "websocket")

        # A network that refuses WebSocket upgrades: dave's page comes through the proxy and falls back to
        # the HTTP transport by itself; alice stays on her WebSocket.
        proxy = RefusingProxy(int(port))
        dave_context, dave = join("dave", at=proxy.base)
        expect(dave.locator("#transport")).to_have_attribute("data-transport", "http-stream")
        expect(dave.locator("#transport")).to_have_text("via http-stream")
        expect(alice.locator("#transport")).to_have_attribute("data-transport", "websocket")
        if proxy.upgrades_refused < 1:
            sys.exit("dave's page never tried a WebSocket through the proxy")
        expect(alice.locator("#members li", has_text="dave")).to_have_count(1)
        expect(dave.locator("#members li", has_text="alice")).to_have_count(1)
        expect(dave.locator("#messages li", has_text="missed 3")).to_have_count(1)  # history, read over HTTP
        dave.fill("#text", "hello over http")
        dave.press("#text", "Enter")
        expect(alice.locator("#messages li", has_text="hello over http")).to_have_count(1)
        alice.fill("#text", "hello back over a websocket")
        alice.press("#text", "Enter")
        expect(dave.locator("#messages li", has_text="hello back over a websocket")).to_have_count(1)
        print("fallback: dave (HTTP transport, through the proxy) and alice (WebSocket) chat both ways")

        # The proxy resets dave's stream and turns him away for a while; alice keeps talking; once the proxy
        # lets him in again, he recovers what he missed, still over HTTP.
        proxy.cut()
        expect(dave.locator("#status")).not_to_have_attribute("data-state", "connected")
        cut_off = [f"while dave was cut off {n}" for n in range(1, 4)]
        for text in cut_off:
            alice.fill("#text", text)
            alice.press("#text", "Enter")
            expect(alice.locator("#messages li", has_text=text)).to_have_count(1)
        expect(dave.locator("#messages li", has_text="while dave was cut off")).to_have_count(0)
        proxy.restore()
        expect(dave.locator("#status")).to_have_attribute("data-state", "connected")
        expect(dave.locator("#recovery")).to_contain_text("every missed message was recovered")
        for text in cut_off:
            expect(dave.locator("#messages li", has_text=text)).to_have_count(1)
        expect(dave.locator("#messages li", has_text="hello over http")).to_have_count(1)
        expect(dave.locator("#transport")).to_have_attribute("data-transport", "http-stream")
        dave.fill("#text", "dave is back")
        dave.press("#text", "Enter")
        expect(alice.locator("#messages li", has_text="dave is back")).to_have_count(1)
        print("fallback: after the proxy reset his connections, dave got the 3 missed messages once each")
        dave.screenshot(path=f"{artifacts}/chat-http-fallback.png")

        fallback_dashboard = dashboard_context.new_page()
        watch(fallback_dashboard, "dashboard through the proxy")
        fallback_dashboard.goto(f"{proxy.base}/dashboard")
        expect(fallback_dashboard.locator("#status")).to_have_attribute("data-state", "connected")
        expect(fallback_dashboard.locator("#transport")).to_have_attribute("data-transport", "http-stream")
        expect(fallback_dashboard.locator('[data-key="connections"]')).to_have_attribute(
            "data-samples", re.compile(r"^([3-9]|\d\d+)$"))
        print("fallback: the dashboard's statistics arrive over the HTTP transport")
        browser.close()
        if problems:
            sys.exit("the pages had problems:\n" + "\n".join(problems))
        print("pages: every request succeeded and no script threw")
    print(f"screenshots in {artifacts}/")
finally:
    server.terminate()
    server.wait(timeout=30)
