"""Memory per waiting request: ``python bench/memory.py`` (bounded: about 20 s a candidate).

Each candidate server (one process, CPU 0) gets N requests at once to ``GET /wait``, which
awaits ``asyncio.sleep(BENCH_WAIT)`` (10 s). Once they are all in flight, the growth of the
server's resident memory over its warmed-up idle size, divided by N, is the memory one
waiting request holds (its connection, the server's per-request state, the framework's and
flask-asgi's). Every response must then come back 200, which proves they all waited.
Candidates whose packages are not importable from this Python are skipped (Quart and
Starlette are in bench/.venv, built by bench/run.py).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

from servers import (
    APPS,
    BIN,
    HOST,
    SERVER_CPU,
    _granian,
    _uvicorn,
    peak_rss_kib,
    stop,
    wait_ready,
)

CANDIDATES = {
    "flask-asgi (uvicorn)": (lambda port: _uvicorn("flask_asgi_app:asgi", port), "flask"),
    "flask-asgi (granian)": (lambda port: _granian("flask_asgi_app:asgi", port), "granian"),
    "quart (uvicorn)": (lambda port: _uvicorn("quart_app:app", port), "quart"),
    "starlette (uvicorn)": (lambda port: _uvicorn("starlette_app:app", port), "starlette"),
}


def rss_kib(pid: int) -> int:
    """Current VmRSS of ``pid`` and its children."""
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    total = 0
    for one in pids:
        for line in Path(f"/proc/{one}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


async def hold(port: int, count: int, pid: int, settle: float) -> tuple[int, int]:
    """Open ``count`` requests to /wait; return (RSS while all wait, responses with 200)."""
    request = f"GET /wait HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode()
    streams = []
    for start in range(0, count, 100):  # in batches: stay within the listen backlog
        batch = [asyncio.open_connection(HOST, port) for _ in range(min(100, count - start))]
        for reader, writer in await asyncio.gather(*batch):
            writer.write(request)
            streams.append((reader, writer))
        await asyncio.sleep(0.05)
    await asyncio.sleep(settle)
    during = rss_kib(pid)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        status = await reader.readline()
        writer.close()
        return status.startswith(b"HTTP/1.1 200")

    ok = await asyncio.gather(*(answer(r, w) for r, w in streams))
    return during, sum(ok)


def measure(name: str, count: int, settle: float, port: int) -> str:
    command, package = CANDIDATES[name]
    if importlib.util.find_spec(package) is None:
        return f"| {name} | skipped: {package} is not installed here | | |"
    env = dict(os.environ, PYTHONPATH=str(APPS), BENCH_WAIT=str(settle + 8))
    proc = subprocess.Popen(
        ["taskset", "-c", SERVER_CPU, *command(port)],
        cwd=APPS, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_ready(port, proc)
        # Warm up (imports, pools, the first waits), then the idle size.
        asyncio.run(hold(port, 200, proc.pid, 1.0))
        time.sleep(1)
        idle = rss_kib(proc.pid)
        during, ok = asyncio.run(hold(port, count, proc.pid, settle))
        peak = peak_rss_kib(proc.pid)
    finally:
        stop(proc)
    per = (during - idle) / count
    return f"| {name} | {per:.1f} KiB | {idle / 1024:.0f} → {during / 1024:.0f} MiB (peak {peak / 1024:.0f}) | {ok}/{count} |"  # noqa: E501


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--settle", type=float, default=4.0, help="seconds before sampling")
    parser.add_argument("--only", default="", help="comma-separated candidate names")
    args = parser.parse_args()
    names = [n for n in CANDIDATES if not args.only or n in args.only.split(",")]
    python = sys.version.split()[0]
    print(f"{args.requests} requests waiting at once, RSS sampled {args.settle} s after the"
          f" last was sent (Python {python}, server binaries in {BIN})\n")  # fmt: skip
    print("| candidate | per waiting request | RSS idle → all waiting | answered 200 |")
    print("|---|--:|---|--:|")
    for offset, name in enumerate(names):
        print(measure(name, args.requests, args.settle, 9500 + offset), flush=True)


if __name__ == "__main__":
    main()
