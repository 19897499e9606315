"""What the loop watchdog costs on hello: ``python bench/watchdog_cost.py``.

Serves bench/apps/flask_asgi_app.py with ``flask serve`` twice, with the watchdog on (the
default threshold, 0.5 s) and off (``FLASK_ASGI_BLOCKING_THRESHOLD=0``), in interleaved
passes, and drives ``GET /hello`` over keep-alive connections with a small raw-socket
client (httpx would be slower than the server). Prints requests per second and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLASK = Path(sys.executable).parent / "flask"
REQUEST = b"GET /hello HTTP/1.1\r\nHost: bench\r\n\r\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def connection(port: int, deadline: float) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    done = 0
    while time.monotonic() < deadline:
        writer.write(REQUEST)
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        done += 1
    writer.close()
    return done


async def drive(port: int, seconds: float, connections: int) -> float:
    deadline = time.monotonic() + seconds
    counts = await asyncio.gather(*(connection(port, deadline) for _ in range(connections)))
    return sum(counts) / seconds


def measure(threshold: str, seconds: float, connections: int) -> float:
    port = free_port()
    env = dict(os.environ, FLASK_ASGI_BLOCKING_THRESHOLD=threshold)
    server = subprocess.Popen(
        [str(FLASK), "--app", "bench/apps/flask_asgi_app.py", "serve", "--port", str(port)]
        + ["--log-level", "warning"],
        cwd=ROOT,
        env=env,
    )
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        asyncio.run(drive(port, 1.0, connections))  # warm-up
        return asyncio.run(drive(port, seconds, connections))
    finally:
        server.terminate()
        server.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--connections", type=int, default=20)
    args = parser.parse_args()
    on: list[float] = []
    off: list[float] = []
    for _ in range(args.passes):
        on.append(measure("0.5", args.seconds, args.connections))
        off.append(measure("0", args.seconds, args.connections))
        print(f"watchdog on {on[-1]:8.0f} req/s   off {off[-1]:8.0f} req/s", flush=True)
    median_on, median_off = statistics.median(on), statistics.median(off)
    print(f"median: on {median_on:.0f}, off {median_off:.0f}, on/off {median_on / median_off:.3f}")


if __name__ == "__main__":
    main()
