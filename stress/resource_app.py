"""The app the disconnect storm, the socket fuzzer and the soak serve with ``flask serve``.

Views of every kind (async and sync; waiting, reading a body, streaming, failing), hooks
that count what ran, and ``/debug/resources``: the server process's RSS, threads, open
fds and live greenlets (``gc.get_objects()``), and those counts, measured in the process
itself. Loopback use only: the debug endpoint is for these scripts, not for an app.
"""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import greenlet
from flask import Flask, Response, request

import flask_asgi
from flask_asgi.ground import bridge
from flask_asgi.ground.counters import counters

app = Flask(__name__)
asgi = flask_asgi.ASGI(app)

_lock = threading.Lock()
seen: Counter[str] = Counter()


def count(what: str) -> None:
    with _lock:
        seen[what] += 1


@app.before_request
def started() -> None:
    if not request.path.startswith("/debug/"):
        count("requests started")


@app.teardown_request
def teardown(error: BaseException | None) -> None:
    # Once per request: Flask 3.1 runs teardown twice for a stream_with_context response.
    if not request.path.startswith("/debug/") and not request.environ.get("stress.torn_down"):
        request.environ["stress.torn_down"] = True
        count("teardowns" if error is None else f"teardowns with {type(error).__name__}")


@app.get("/async")
async def async_view() -> str:
    return "async ok"


@app.get("/sync")
def sync_view() -> str:
    return "sync ok"


@app.get("/wait")
async def wait() -> str:
    await asyncio.sleep(0.5)
    return "waited"


@app.get("/wait-sync")
def wait_sync() -> str:
    time.sleep(0.2)
    return "waited"


@app.post("/upload")
def upload() -> str:
    return str(len(request.get_data()))


@app.post("/upload-async")
async def upload_async() -> str:
    return str(len(request.get_data()))


@app.get("/stream")
async def stream() -> Response:
    chunks = min(request.args.get("n", 100, type=int), 100)

    async def ticks() -> AsyncIterator[str]:
        count("async streams started")
        try:
            for n in range(chunks):
                yield f"{n}\n"
                await asyncio.sleep(0.02)
        finally:
            count("async streams closed")

    return Response(flask_asgi.stream(ticks()), mimetype="text/plain")


@app.get("/stream-sync")
def stream_sync() -> Response:
    chunks = min(request.args.get("n", 100, type=int), 100)

    def ticks() -> Iterator[str]:
        count("sync streams started")
        try:
            for n in range(chunks):
                yield f"{n}\n"
                time.sleep(0.01)
        finally:
            count("sync streams closed")

    return Response(ticks(), mimetype="text/plain")


@app.get("/error")
async def error() -> str:
    raise RuntimeError("a view that fails (500)")


@app.errorhandler(RuntimeError)
def failed(error: RuntimeError) -> tuple[str, int]:
    # Answered here (still a 500 through Flask's error handling) so that Flask logs no
    # traceback: the scripts read the server's log for errors nobody expected.
    return str(error), 500


@app.get("/debug/resources")
async def resources() -> dict[str, Any]:
    # Async: it runs on the loop's thread, where flask-asgi keeps its idle request
    # greenlets for reuse (up to 256: they are counted apart, as they are not leaks).
    gc.collect()
    greenlets = sum(1 for obj in gc.get_objects() if isinstance(obj, greenlet.greenlet))
    idle = len(getattr(bridge._idle, "pool", ()))
    rss_kib = threads = 0
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss_kib = int(line.split()[1])
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    with _lock:
        counts = dict(seen)
    # The worker pool starts its threads as the load needs them, up to FLASK_ASGI_THREADS: a
    # baseline may have fewer than a later sample without any thread having leaked.
    workers = sum(t.name.startswith("flask-asgi-worker") for t in threading.enumerate())
    return {
        "rss_mib": round(rss_kib / 1024, 1),
        "threads": threads,
        "workers": workers,
        "fds": len(os.listdir("/proc/self/fd")),
        "greenlets": greenlets - idle,  # live: running requests, threads' main greenlets
        "idle_greenlets": idle,
        "in_flight": counters.in_flight,
        "seen": counts,
    }
