"""Open-loop latency at a fixed offered rate: ``python bench/openloop.py`` (bounded: ~15 s a
candidate).

wrk keeps N connections busy (a closed loop): once the server saturates, its latencies only
measure the queue. Here requests are *offered* at a fixed rate below saturation (default
1,500 req/s of ``GET /sleep``, a 50 ms wait, over up to 1,000 keep-alive connections), and
each latency runs from the moment the request was due, not from when a connection was
free, so a stall shows up in full (no coordinated omission). The client is Python on uvloop,
pinned to CPU 1; the server is one process on CPU 0. p50/p99/p99.9 are reported with the
ratio of p99 to the view's own wait (the target: ≤ 1.2×).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import subprocess
import time

import uvloop
from servers import (
    APPS,
    HOST,
    LOAD_CPU,
    SERVER_CPU,
    _granian,
    _hypercorn,
    _uvicorn,
    stop,
    wait_ready,
)

CANDIDATES = {
    "flask-asgi (uvicorn)": lambda port: _uvicorn("flask_asgi_app:asgi", port),
    "flask-asgi (granian)": lambda port: _granian("flask_asgi_app:asgi", port),
    "flask-asgi (hypercorn)": lambda port: _hypercorn("flask_asgi_app:asgi", port),
}
WAIT_MS = 50.0  # bench/apps/common.py SLEEP_SECONDS


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def get(self, request: bytes) -> bool:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await self.reader.readexactly(length)
        return head.startswith(b"HTTP/1.1 200")


async def offer(port: int, path: str, rate: float, seconds: float, connections: int) -> str:
    request = f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()
    idle: collections.deque[Connection] = collections.deque()
    for start in range(0, connections, 100):
        batch = [asyncio.open_connection(HOST, port) for _ in range(min(100, connections - start))]
        idle.extend(Connection(r, w) for r, w in await asyncio.gather(*batch))
    freed = asyncio.Event()
    latencies: list[float] = []
    errors = 0

    async def one(due: float) -> None:
        nonlocal errors
        while not idle:  # every connection busy: the request waits, and its latency grows
            freed.clear()
            await freed.wait()
        conn = idle.popleft()
        try:
            ok = await conn.get(request)
        except (OSError, asyncio.IncompleteReadError):
            errors += 1
            return
        latencies.append(time.perf_counter() - due)
        errors += not ok
        idle.append(conn)
        freed.set()

    total = int(rate * seconds)
    begin = time.perf_counter()
    tasks = []
    for i in range(total):
        due = begin + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(due)))
    await asyncio.gather(*tasks)
    achieved = total / (time.perf_counter() - begin)
    for conn in idle:
        conn.writer.close()
    ms = sorted(x * 1000 for x in latencies)

    def pct(p: float) -> float:
        return ms[min(len(ms) - 1, int(len(ms) * p / 100))] if ms else float("nan")

    return (
        f"{achieved:,.0f} req/s offered {rate:,.0f} | p50 {pct(50):.1f} ms | p99 {pct(99):.1f} ms"
        f" ({pct(99) / WAIT_MS:.2f}× the wait) | p99.9 {pct(99.9):.1f} ms | max {ms[-1]:.1f} ms"
        f" | {errors} errors"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=1500)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--path", default="/sleep")
    parser.add_argument("--only", default="", help="comma-separated candidate names")
    args = parser.parse_args()
    os.sched_setaffinity(0, {int(LOAD_CPU)})
    names = [n for n in CANDIDATES if not args.only or n in args.only.split(",")]
    for offset, name in enumerate(names):
        port = 9600 + offset
        proc = subprocess.Popen(
            ["taskset", "-c", SERVER_CPU, *CANDIDATES[name](port)],
            cwd=APPS, env=dict(os.environ, PYTHONPATH=str(APPS)),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_ready(port, proc)
            uvloop.run(offer(port, args.path, args.rate, 2, args.connections))  # warm-up
            line = uvloop.run(offer(port, args.path, args.rate, args.duration, args.connections))
            print(f"| {name} | {line} |", flush=True)
        finally:
            stop(proc)


if __name__ == "__main__":
    main()
