"""Many long async requests on ``flask serve --server granian``: probes and sync views
still answer (issue 20).

``python stress/granian_backpressure.py [--streams 1100] [--seconds 5] [--server granian]``

Opens ``--streams`` connections to ``GET /sse`` of backpressure_app.py (an async SSE view
that sends an event at once, then one a second for ``--seconds``), waits until each has its
response head and first event, then, with every stream still open, times ``GET /readyz``
(FLASK_ASGI_READY_PATH) and ``GET /sync`` (a sync view, a worker thread) on new
connections, a few times each. Checks: every stream opened, every probe and sync request
answered 200 within ``--limit`` seconds (1 s), every stream ran to its end. Prints one JSON
line; exit status 1 if a check failed. Loopback only; bounded by ``--seconds`` plus about
a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

from common import BIN, STRESS_DIR, free_port, stop_server, wait_ready

CHECKS_EACH = 5


async def open_stream(port: int, seconds: int, opened: asyncio.Event, state: dict[str, int]) -> str:
    """One SSE client: "ok" when the stream ran to its end, else what went wrong."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as error:
        return f"connect: {type(error).__name__}"
    try:
        writer.write(f"GET /sse?seconds={seconds} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        if not head.startswith(b"HTTP/1.1 200"):
            return head.split(b"\r\n", 1)[0].decode(errors="replace")
        first = await asyncio.wait_for(reader.readuntil(b"data: open\n\n"), 30)
        if not first:
            return "no first event"
        state["open"] += 1
        if state["open"] == state["wanted"]:
            opened.set()
        rest = await asyncio.wait_for(reader.readuntil(f"data: {seconds - 1}\n\n".encode()),
                                      seconds + 30)  # fmt: skip
        return "ok" if rest else "cut short"
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as error:
        return f"{type(error).__name__}"
    except TimeoutError:
        return "timeout"
    finally:
        writer.close()


async def timed_get(port: int, path: str, limit: float) -> tuple[int, float]:
    """(status, seconds) of one GET on a new connection; status 0 if not answered in time."""
    started = time.monotonic()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), limit)
    except (OSError, TimeoutError):
        return 0, time.monotonic() - started
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), limit * 5)
        return int(head.split(b" ", 2)[1]), time.monotonic() - started
    except (OSError, TimeoutError, asyncio.IncompleteReadError):
        return 0, time.monotonic() - started
    finally:
        writer.close()


async def attack(port: int, args: argparse.Namespace) -> dict[str, Any]:
    opened = asyncio.Event()
    state = {"open": 0, "wanted": args.streams}
    streams = [
        asyncio.create_task(open_stream(port, args.seconds, opened, state))
        for _ in range(args.streams)
    ]
    try:
        await asyncio.wait_for(opened.wait(), min(args.seconds - 1, 20))
    except TimeoutError:
        pass
    open_at_check = state["open"]
    checks: dict[str, list[tuple[int, float]]] = {"/readyz": [], "/sync": []}
    for _ in range(CHECKS_EACH):
        for path, results in checks.items():
            results.append(await timed_get(port, path, args.limit))
    outcomes: dict[str, int] = {}
    for outcome in await asyncio.gather(*streams):
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return {
        "open_when_checked": open_at_check,
        "checks": {
            path: {
                "statuses": sorted({status for status, _ in results}),
                "max_s": round(max(seconds for _, seconds in results), 3),
            }
            for path, results in checks.items()
        },
        "streams": outcomes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=1100)
    parser.add_argument("--seconds", type=int, default=5, help="each stream's length (3-60)")
    parser.add_argument("--limit", type=float, default=1.0, help="seconds a check may take")
    parser.add_argument("--server", default="granian", choices=["granian", "uvicorn"])
    args = parser.parse_args()
    args.seconds = max(3, min(args.seconds, 60))
    # Each stream is a socket here and one in the server (which inherits this limit).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = args.streams + 256
    if soft < wanted and (hard == resource.RLIM_INFINITY or hard >= wanted):
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    port = free_port()
    proc = subprocess.Popen(
        [str(BIN / "flask"), "--app", "backpressure_app", "serve", "--server", args.server,
         "--port", str(port), "--log-level", "warning"],
        cwd=STRESS_DIR, env=dict(os.environ), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_ready(port, proc, "/sync")
        report = asyncio.run(attack(port, args))
    finally:
        stop_server(proc)
    report.update(server=args.server, streams_wanted=args.streams, limit_s=args.limit)
    ok = (
        report["open_when_checked"] == args.streams
        and report["streams"] == {"ok": args.streams}
        and all(
            c["statuses"] == [200] and c["max_s"] <= args.limit for c in report["checks"].values()
        )
    )
    report["ok"] = ok
    print(json.dumps(report))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
