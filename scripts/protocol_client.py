"""A client protocol v1 connection for the test scripts (real WebSocket, Python `websockets`): numbered
commands with their replies matched by id, pushes queued in order, the close code kept.
"""
import asyncio
import json
import time

import websockets

TIMEOUT = 20  # seconds any awaited reply or push may take on a busy machine


class ProtocolClient:
    """One protocol v1 connection: replies matched by id, pushes queued in order."""

    def __init__(self, ws, name: str):
        self.ws = ws
        self.name = name
        self.next_id = 0
        self.replies = {}
        self.pushes = asyncio.Queue()
        self.closed = asyncio.get_running_loop().create_future()
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, url: str, name: str, cookie: str = None) -> "ProtocolClient":
        headers = {"Cookie": cookie} if cookie else None
        ws = await websockets.connect(url, additional_headers=headers, max_size=None, open_timeout=TIMEOUT)
        return cls(ws, name)

    async def _read(self):
        try:
            async for raw in self.ws:
                message = json.loads(raw)
                if "id" in message and message["id"] in self.replies:
                    self.replies.pop(message["id"]).set_result(message)
                else:
                    await self.pushes.put(message)
        except websockets.ConnectionClosed:
            pass
        finally:
            if not self.closed.done():
                self.closed.set_result(self.ws.close_code)

    async def call(self, cmd: str, raw_data: str = None, **fields) -> dict:
        """Sends the command; `raw_data` goes as the `data` field exactly as written (spacing included)."""
        self.next_id += 1
        reply = asyncio.get_running_loop().create_future()
        self.replies[self.next_id] = reply
        text = json.dumps({"id": self.next_id, "cmd": cmd, **fields})
        if raw_data is not None:
            text = text[:-1] + ', "data": ' + raw_data + "}"
        await self.ws.send(text)
        return await asyncio.wait_for(reply, TIMEOUT)

    async def ok(self, cmd: str, **fields) -> dict:
        reply = await self.call(cmd, **fields)
        assert "ok" in reply, f"{self.name}: {cmd} failed: {reply}"
        return reply["ok"]

    async def error(self, cmd: str, **fields) -> dict:
        reply = await self.call(cmd, **fields)
        assert "error" in reply, f"{self.name}: {cmd} was expected to fail: {reply}"
        return reply["error"]

    async def push(self, kind: str, channel: str = None, where=lambda message: True) -> dict:
        """The next push of `kind` that `where` accepts (others before it are skipped)."""
        deadline = time.time() + TIMEOUT
        while True:
            message = await asyncio.wait_for(self.pushes.get(), max(deadline - time.time(), 0.01))
            if message.get("push") == kind and (channel is None or message.get("channel") == channel) \
                    and where(message):
                return message

    async def close(self, code: int = 1000, reason: str = ""):
        await self.ws.close(code, reason)
        self.reader.cancel()
