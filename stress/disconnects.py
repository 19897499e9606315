"""A disconnect storm against ``flask serve``: clients that leave at every stage.

    python stress/disconnects.py [--per-stage 2000] [--concurrency 100] [--chunks 5]

Each client opens a connection to ``resource_app.py`` and leaves: in the middle of its
request headers; in the middle of a body (to a sync and an async view); while the view
waits (async ``asyncio.sleep``, sync ``time.sleep``); in the middle of a streamed response
(async ``stream()``, sync generator). Every other client leaves with a reset (SO_LINGER 0)
instead of a FIN. After a warm-up round (which grows the worker pool and the greenlet
pool to what this load needs) the resources are sampled in the server process
(``/debug/resources``: RSS, threads, fds, live greenlets), then after each of ``--chunks``
parts of the storm. The storm is flat if, at the end, fds and threads are back to the
baseline and greenlets and RSS have not grown (within ``--rss-slack`` MiB); and every
request that started ran its teardown, and the server logged no error. Exit status 1
otherwise. Loopback only; about 30 s with the defaults on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import struct
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from common import STRESS_DIR, free_port, resources, settle, start_server, stop_server

HEAD = "Host: x\r\nUser-Agent: storm\r\n"


def _leave(writer: asyncio.StreamWriter, reset: bool) -> None:
    if reset:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()


async def _connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def during_headers(port: int, reset: bool) -> str:
    _, writer = await _connect(port)
    writer.write(f"GET /async HTTP/1.1\r\n{HEAD}X-Half: ".encode())
    await writer.drain()
    await asyncio.sleep(random.uniform(0, 0.05))
    _leave(writer, reset)
    return "sent"


def _during_body(path: str) -> Callable[[int, bool], Awaitable[str]]:
    async def run(port: int, reset: bool) -> str:
        _, writer = await _connect(port)
        writer.write(
            f"POST {path} HTTP/1.1\r\n{HEAD}Content-Length: 100000\r\n\r\n".encode()
            + b"x" * random.randrange(1, 60000)
        )
        await writer.drain()
        await asyncio.sleep(random.uniform(0, 0.05))
        _leave(writer, reset)
        return "sent"

    return run


def _while_waiting(path: str, longest: float) -> Callable[[int, bool], Awaitable[str]]:
    async def run(port: int, reset: bool) -> str:
        _, writer = await _connect(port)
        writer.write(f"GET {path} HTTP/1.1\r\n{HEAD}\r\n".encode())
        await writer.drain()
        await asyncio.sleep(random.uniform(0, longest))  # before and after the watcher starts
        _leave(writer, reset)
        return "sent"

    return run


def _mid_stream(path: str) -> Callable[[int, bool], Awaitable[str]]:
    async def run(port: int, reset: bool) -> str:
        reader, writer = await _connect(port)
        writer.write(f"GET {path} HTTP/1.1\r\n{HEAD}\r\n".encode())
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
            first = await asyncio.wait_for(reader.read(random.randrange(1, 100)), 30)
            status = head[9:12].decode()
            outcome = "streaming" if status == "200" and first else f"answered {status}"
        except (asyncio.IncompleteReadError, TimeoutError, OSError) as exc:
            outcome = type(exc).__name__
        _leave(writer, reset)
        return outcome

    return run


STAGES: dict[str, Callable[[int, bool], Awaitable[str]]] = {
    "during headers": during_headers,
    "during a sync view's body": _during_body("/upload"),
    "during an async view's body": _during_body("/upload-async"),
    "while an async view waits": _while_waiting("/wait", 0.45),
    "while a sync view waits": _while_waiting("/wait-sync", 0.15),
    "mid-stream, async": _mid_stream("/stream"),
    "mid-stream, sync": _mid_stream("/stream-sync"),
}


async def _storm(port: int, per_stage: int, concurrency: int) -> Counter[str]:
    """``per_stage`` clients of each stage, shuffled, ``concurrency`` at a time."""
    jobs = [(name, n % 2 == 1) for name in STAGES for n in range(per_stage)]
    random.shuffle(jobs)
    outcomes: Counter[str] = Counter()
    limit = asyncio.Semaphore(concurrency)

    async def one(name: str, reset: bool) -> None:
        async with limit:
            try:
                outcome = await STAGES[name](port, reset)
            except OSError as exc:
                outcome = type(exc).__name__
            outcomes[f"{name}: {outcome}"] += 1

    await asyncio.gather(*(one(name, reset) for name, reset in jobs))
    return outcomes


SAMPLED = ("rss_mib", "threads", "workers", "fds", "greenlets", "idle_greenlets", "in_flight")


def _sample(port: int) -> dict[str, Any]:
    now = settle(port)
    return {key: now[key] for key in SAMPLED}


def run(args: argparse.Namespace) -> dict[str, Any]:
    random.seed(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "server.log"
        port = free_port()
        env = {"FLASK_ASGI_THREADS": str(args.threads)}
        proc = start_server(STRESS_DIR, "resource_app", port, env, log=log)
        try:
            started = time.monotonic()
            asyncio.run(_storm(port, args.warmup, args.concurrency))
            baseline = _sample(port)
            samples = []
            outcomes: Counter[str] = Counter()
            for _ in range(args.chunks):
                part = max(1, args.per_stage // args.chunks)
                outcomes += asyncio.run(_storm(port, part, args.concurrency))
                samples.append(_sample(port))
            seen = resources(port)["seen"]
            elapsed = time.monotonic() - started
        finally:
            stop_server(proc)
        errors = [
            line
            for line in log.read_text(errors="replace").splitlines()
            if "Traceback" in line or "ERROR" in line or "Exception" in line
        ]
    final = samples[-1]
    teardowns = sum(n for what, n in seen.items() if what.startswith("teardowns"))
    checks = {
        "fds back to the baseline": final["fds"] <= baseline["fds"],
        # Threads other than the pool's workers, which may have started since the baseline.
        "threads back to the baseline": final["threads"] - final["workers"]
        <= baseline["threads"] - baseline["workers"],
        "workers within FLASK_ASGI_THREADS": final["workers"] <= args.threads,
        "greenlets not grown": final["greenlets"] <= baseline["greenlets"] + args.greenlet_slack,
        "rss not grown": final["rss_mib"] <= baseline["rss_mib"] + args.rss_slack,
        "every request that started ran its teardown": teardowns == seen["requests started"],
        "every stream that started was closed": all(
            seen.get(f"{kind} streams started") == seen.get(f"{kind} streams closed")
            for kind in ("async", "sync")
        ),
        "nothing in flight at the end": final["in_flight"] <= 1,  # the sample's own request
        "no error in the server log": not errors,
    }
    return {
        "clients": sum(outcomes.values()),
        "seconds": round(elapsed, 1),
        "outcomes": dict(sorted(outcomes.items())),
        "baseline": baseline,
        "samples": samples,
        "seen_by_the_app": seen,
        "server_errors": errors[:10],
        "checks": checks,
        "ok": all(checks.values()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-stage", type=int, default=2000, help="clients per stage")
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--chunks", type=int, default=5, help="samples during the storm")
    parser.add_argument("--warmup", type=int, default=200, help="clients per stage first")
    parser.add_argument("--threads", type=int, default=16, help="FLASK_ASGI_THREADS")
    parser.add_argument("--rss-slack", type=float, default=16.0, help="MiB")
    parser.add_argument("--greenlet-slack", type=int, default=16)
    parser.add_argument("--seed", type=int, default=9)
    result = run(parser.parse_args())
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
