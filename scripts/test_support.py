"""What the test scripts share: `switchboard serve` as they run it (on free ports, its addresses read from
what it prints, its log in a file, its server API one call away), and waiting for a condition.
"""
import asyncio
import json
import os
import subprocess
import time
import urllib.request

TIMEOUT = 20  # seconds the server may take to report its addresses, and an API call to answer


class ServeProcess:
    """One `switchboard serve` on free ports: `ws` and `api` are its URLs once it reported them."""

    def __init__(self, binary: str, name: str, log_path: str, *settings: str, env: dict = None):
        self.name = name
        self.log = open(log_path, "w")
        self.process = subprocess.Popen(
            [binary, "serve", "--port", "0", "--api-port", "0", *settings],
            stdout=subprocess.PIPE, stderr=self.log, text=True, env={**os.environ, **(env or {})})
        self.ws = self.api = None
        deadline = time.time() + TIMEOUT
        while (self.ws is None or self.api is None) and time.time() < deadline:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"{name} exited: see {self.log.name}")
            if line.startswith("switchboard listening on "):
                self.ws = line.split()[-1]
            elif line.startswith("switchboard API on "):
                self.api = line.split()[-1]
        if self.ws is None or self.api is None:
            raise RuntimeError(f"{name} did not report its addresses within {TIMEOUT} s: see {self.log.name}")

    def call(self, endpoint: str, body: dict) -> dict:
        """A server API call; its JSON answer (an HTTP error raises)."""
        request = urllib.request.Request(
            f"{self.api}/api/{endpoint}", data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return json.loads(response.read())


async def eventually(description: str, check, timeout: float = TIMEOUT):
    """Waits until `check()` (a plain or async function) is truthy; returns it. Fails after `timeout`."""
    deadline = time.time() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {description}")
        await asyncio.sleep(0.1)
