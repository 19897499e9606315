"""What flask-asgi adds to a request, in instructions: ``python bench/adapter_cost.py``.

The benchmark app (apps/flask_asgi_app.py) and the inline-Flask ceiling
(apps/inline_flask_app.py, NOT a runtime: ``app.wsgi_app`` called right on the loop) are
driven in process, on uvloop, with one task per request as a server makes them, and
counted by valgrind's callgrind: instructions, not seconds, so the figure is the same from
run to run whatever else the machine does (wrk's ratios on a shared 2-core VM move by up to
10 % from pass to pass). Each cell is the difference of two runs (500 and 2,500 requests)
over 2,000, which cancels start-up; hash randomisation is off and the collector is frozen
and off while counting (GC tuning is measured by the wrk benchmarks). What is left of the
spread between runs, from address layout, is about ±1k instructions per request.

No server and no sockets: the ratio here is the adapter's share of Flask's own work, and
a server adds the same cost to both rows (uvicorn adds ~85k instructions per request), so
on a real server the ratio is a little nearer 1. ~2 minutes; needs valgrind
(``apt-get install valgrind``). Writes bench/results/adapter_cost.md.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
APPS = BENCH / "apps"
PAYLOAD = (BENCH / "wrk" / "payload.json").read_bytes()
MODULES = {"ceiling": "inline_flask_app", "flask-asgi": "flask_asgi_app"}
WORKLOADS = {"hello": ("GET", "/hello"), "echo": ("POST", "/echo")}
SMALL, LARGE = 500, 2500


def child(candidate: str, workload: str, requests: int) -> None:
    """Serve ``requests`` requests in process (run under valgrind by the parent)."""
    import uvloop
    from inprocess import scope  # bench/inprocess.py: a scope as uvicorn builds it

    sys.path.insert(0, str(APPS))
    module = __import__(MODULES[candidate])
    method, path = WORKLOADS[workload]
    body = PAYLOAD if method == "POST" else b""
    headers = ((b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)))
    template = scope(path, method, headers if body else ())
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for _ in range(200):  # warm-up: caches, the greenlet pool
            await loop.create_task(module.asgi(dict(template), receive, send))
        gc.collect()
        gc.freeze()
        gc.disable()
        for _ in range(requests):
            await loop.create_task(module.asgi(dict(template), receive, send))
        if set(statuses) != {200}:
            raise SystemExit(f"{candidate} {workload}: statuses {sorted(set(statuses))}")

    uvloop.run(main())


def instructions(candidate: str, workload: str, requests: int) -> int:
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        __file__,
        "--child",
        candidate,
        workload,
        str(requests),
    ]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    match = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or match is None:
        raise SystemExit(f"{candidate} {workload}: valgrind failed\n{done.stderr[-2000:]}")
    return int(match.group(1))


def per_request(candidate: str, workload: str) -> float:
    with ThreadPoolExecutor(2) as pool:  # the two runs in parallel, one per core
        small, large = pool.map(lambda n: instructions(candidate, workload, n), (SMALL, LARGE))
    return (large - small) / (LARGE - SMALL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", nargs=3, metavar=("CANDIDATE", "WORKLOAD", "N"))
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "adapter_cost.md")
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is needed: apt-get install valgrind")
    lines = [
        "| workload | inline ceiling | flask-asgi | flask-asgi's own | ceiling ÷ flask-asgi |",
        "|---|--:|--:|--:|--:|",
    ]
    for workload in WORKLOADS:
        ceiling = per_request("ceiling", workload)
        ours = per_request("flask-asgi", workload)
        lines.append(
            f"| {workload} | {ceiling:,.0f} | {ours:,.0f} | {ours - ceiling:,.0f} "
            f"| {ceiling / ours:.3f} |"
        )
        print(lines[-1], flush=True)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=BENCH
    ).stdout.strip()
    text = "\n".join(
        [
            "# Instructions per request, in process (bench/adapter_cost.py)",
            "",
            f"flask-asgi {commit}, Python {sys.version.split()[0]}, callgrind; async views "
            "(the ceiling's are plain `def`: it cannot wait).",
            "",
            *lines,
            "",
        ]
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
