"""Oversized WebSocket messages, left unfinished, on N connections at once, per server.

Each connection sends one frame that announces a message of ``--mib`` MiB and all of it
but the last byte, then waits. A server that enforces FLASK_ASGI_WEBSOCKET_MAX_MESSAGE
(1 MiB by default) as frames arrive closes each connection with 1009 before buffering
it; one that does not holds the unfinished messages until they complete (measured before
the limits were set: uvicorn 42 -> 361 MiB with 20 connections, ws_max_size left at 16
MiB). Prints one JSON line per server: the server's RSS (all its processes) before, while
the connections are held, and the close codes the clients got.

    python stress/ws_limits.py [--connections 20] [--mib 15] [--servers uvicorn,granian,hypercorn]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import struct
import sys
import time
from collections import Counter
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import for_each_server, tree_rss_mib  # noqa: E402

HOLD = 2.0  # seconds the unfinished messages are held (all sent) before RSS is read


async def handshake(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET /ws/echo HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        raise RuntimeError(f"handshake refused: {head[:60]!r}")
    return reader, writer


def frame_head(length: int) -> bytes:
    """A final binary frame of ``length`` bytes, masked with a zero key (so the payload is
    sent as it is: masking it would cost the client, not the server)."""
    return bytes([0x82, 0x80 | 127]) + struct.pack("!Q", length) + b"\0\0\0\0"


async def close_code(reader: asyncio.StreamReader, timeout: float) -> int | None:
    """The code of the server's close frame; None if it sent none within ``timeout``
    (the connection still open, or closed without one)."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                first, second = await reader.readexactly(2)
                length = second & 0x7F
                if length == 126:
                    (length,) = struct.unpack("!H", await reader.readexactly(2))
                elif length == 127:
                    (length,) = struct.unpack("!Q", await reader.readexactly(8))
                payload = await reader.readexactly(length)
                if first & 0x0F == 0x8:
                    return int(struct.unpack("!H", payload[:2])[0]) if len(payload) >= 2 else 1005
    except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
        return None


async def oversized(port: int, size: int, held: asyncio.Event, ready: list[int]) -> tuple[str, Any]:
    """Send all of a ``size``-byte message but its last byte, as fast as the server
    reads, while listening for its close frame; then hold the connection until ``held``.
    ("closed", code) or ("held", None)."""
    reader, writer = await handshake(port)
    closing = asyncio.create_task(close_code(reader, 30.0))
    try:
        writer.write(frame_head(size))
        # A server that checks the announced length closes now: read its close frame
        # before the payload makes the kernel answer a reset (which loses it).
        await asyncio.wait([closing], timeout=0.3)
        chunk = bytes(256 * 1024)
        sent = 0
        try:
            while sent < size - 1 and not closing.done():
                part = chunk[: min(len(chunk), size - 1 - sent)]
                writer.write(part)
                sent += len(part)
                await asyncio.wait_for(writer.drain(), 10)
        except (ConnectionError, TimeoutError):
            pass  # the server closed, or stopped reading
        done, _ = await asyncio.wait([closing], timeout=2.0)
        ready.append(sent)
        await held.wait()
        code = closing.result() if done else None
        return ("closed", code) if code is not None else ("held", None)
    finally:
        closing.cancel()
        writer.close()


async def attack(port: int, pid: int, connections: int, mib: float) -> dict[str, Any]:
    held = asyncio.Event()
    size = int(mib * 1024 * 1024)
    ready: list[int] = []
    tasks = [asyncio.create_task(oversized(port, size, held, ready)) for _ in range(connections)]
    deadline = time.monotonic() + 120
    while len(ready) < connections and time.monotonic() < deadline:
        if any(task.done() for task in tasks):
            break  # one failed: gather reports it
        await asyncio.sleep(0.2)
    await asyncio.sleep(HOLD)
    peak = tree_rss_mib(pid)
    held.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    codes: Counter[str] = Counter()
    for result in results:
        codes[repr(result) if isinstance(result, BaseException) else str(result[1])] += 1
    return {"rss_held_mib": peak, "close_codes": dict(codes), "mib_sent": round(sum(ready) / 2**20)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--mib", type=float, default=15.0)
    parser.add_argument("--servers", default="uvicorn,granian,hypercorn")
    args = parser.parse_args()
    connections = max(1, min(args.connections, 200))  # bounded
    mib = max(0.01, min(args.mib, 64.0))
    failed = False

    def measure(port: int, pid: int) -> dict[str, Any]:
        result = asyncio.run(attack(port, pid, connections, mib))
        time.sleep(1.0)
        return {**result, "rss_after_close_mib": tree_rss_mib(pid)}

    for server, before, result in for_each_server(args.servers, measure):
        line = {
            "server": server,
            "connections": connections,
            "message_mib": mib,
            "rss_before_mib": before,
            **result,
        }
        print(json.dumps(line), flush=True)
        failed |= set(result["close_codes"]) != {"1009"}
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
