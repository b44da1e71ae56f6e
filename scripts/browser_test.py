"""The demo and the dashboard in a real headless Chromium (Debian's), driven by Playwright.

Two browser contexts chat through `switchboard serve` (demo mode), see each other in presence, one drops
its connection while offline, the other keeps talking, and the first recovers every missed message exactly
once. Then the dashboard's charts move while `switchboard-bench` puts load on the server. Screenshots go
to ARTIFACTS (default test-artifacts/).

usage: browser_test.py SWITCHBOARD_BINARY BENCH_BINARY
"""
import os
import re
import shutil
import subprocess
import sys
import time

from playwright.sync_api import expect, sync_playwright

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

        def join(name):
            context = browser.new_context(viewport={"width": 1000, "height": 700})
            page = context.new_page()
            watch(page, name)
            page.goto(f"{base}/")
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
        browser.close()
        if problems:
            sys.exit("the pages had problems:\n" + "\n".join(problems))
        print("pages: every request succeeded and no script threw")
    print(f"screenshots in {artifacts}/")
finally:
    server.terminate()
    server.wait(timeout=30)
