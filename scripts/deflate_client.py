"""A real third-party client (Python `websockets`, which offers permessage-deflate by default as browsers do)
negotiates compression with `switchboard echo --deflate` and round-trips small and large messages.

usage: deflate_client.py WS_URL
"""
import asyncio
import sys

import websockets

# The checks below are assert statements: refuse to run where -O (or PYTHONOPTIMIZE) would strip them.
if not __debug__:
    raise SystemExit("run without -O / PYTHONOPTIMIZE: the checks are assert statements")


async def main(url: str) -> None:
    async with websockets.connect(url, max_size=4 << 20) as ws:
        extensions = ws.response.headers.get("Sec-WebSocket-Extensions", "")
        assert extensions.startswith("permessage-deflate"), f"not negotiated: {extensions!r}"
        messages = [
            "hi",
            "x" * 300,
            "chat line, " * 20000,
            bytes(range(256)) * 1000,
            "é€𝄞" * 30000,
            b"",
        ]
        for message in messages:
            await ws.send(message)
            echoed = await ws.recv()
            assert echoed == message, f"{len(message)}-byte message came back different"
    print(f"deflate round trip ok ({len(messages)} messages): {extensions}")


asyncio.run(main(sys.argv[1]))
