"""Where the time goes, per request, in process (no sockets): ``python bench/inprocess.py``.

Calls the same Flask app three ways on one uvloop loop and prints microseconds per request:
Flask's own ``wsgi_app`` (the floor), and flask-asgi's ASGI callable for an async and a sync
view; then the pieces flask-asgi adds (environ building, a pooled request greenlet, the
sync/async choice). The ASGI server's own cost is measured by bench/run.py (bare ASGI row).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import uvloop
from flask import Flask, jsonify, request
from werkzeug.test import EnvironBuilder

from flask_asgi import ASGI
from flask_asgi.ground.bridge import run_in_greenlet
from flask_asgi.protocol.environ import build_environ

app = Flask(__name__)


@app.get("/hello")
async def hello() -> str:
    return "Hello, World!"


@app.get("/sync-hello")
def sync_hello() -> str:
    return "Hello, World!"


@app.post("/echo")
async def echo() -> Any:
    return jsonify(request.get_json())


@app.get("/wait")
async def wait() -> str:
    await asyncio.sleep(0.002)
    return "Hello, World!"


asgi = ASGI(app)
BODY = b'{"text": "' + b"x" * 1000 + b'"}'


def scope(path: str, method: str = "GET", headers: tuple[Any, ...] = ()) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 5555),
        "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"wrk"), *headers],
    }


def per_call(fn: Callable[[], Any], n: int) -> float:
    for _ in range(n // 10):
        fn()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


async def per_await(fn: Callable[[], Any], n: int) -> float:
    for _ in range(n // 10):
        await fn()
    start = time.perf_counter()
    for _ in range(n):
        await fn()
    return (time.perf_counter() - start) / n * 1e6


async def cpu_per_request(fn: Callable[[], Any], n: int, in_flight: int) -> float:
    """CPU time (both threads) per request with ``in_flight`` requests at once."""

    async def client() -> None:
        for _ in range(n // in_flight):
            await fn()

    await asyncio.gather(*(client() for _ in range(in_flight)))  # warm up: pools, caches
    start = time.process_time()
    await asyncio.gather(*(client() for _ in range(in_flight)))
    return (time.process_time() - start) / n * 1e6


async def main(n: int = 5000) -> None:
    def wsgi(path: str) -> Callable[[], Any]:
        environ = EnvironBuilder(path=path, headers={"User-Agent": "wrk"}).get_environ()
        return lambda: list(app.wsgi_app(dict(environ), lambda *a: None))

    def via_asgi(path: str, method: str = "GET", body: bytes = b"") -> Callable[[], Any]:
        headers: tuple[Any, ...] = ()
        if body:
            headers = (
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            )
        sc = scope(path, method, headers)

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            pass

        return lambda: asgi(dict(sc), receive, send)

    rows = [
        ("Flask wsgi_app, sync hello (floor)", per_call(wsgi("/sync-hello"), n)),
        ("flask-asgi, async hello", await per_await(via_asgi("/hello"), n)),
        ("flask-asgi, sync hello (worker thread)", await per_await(via_asgi("/sync-hello"), n)),
        ("flask-asgi, async JSON echo (1 KB)", await per_await(via_asgi("/echo", "POST", BODY), n)),
        ("  build_environ", per_call(lambda: build_environ(scope("/hello"), None), n)),  # type: ignore[arg-type]
        ("  run_in_greenlet(trivial)", await per_await(lambda: run_in_greenlet(int), n)),
        (
            "  route lookup: sync/async, timeout (cached)",
            per_call(lambda: asgi.routes.lookup(build_environ(scope("/hello"), None)), n)  # type: ignore[arg-type]
            - per_call(lambda: build_environ(scope("/hello"), None), n),
        ),  # type: ignore[arg-type]
    ]
    # The suspension path: what a request that really waits costs over one that does not,
    # 500 at once (CPU time; the 2 ms sleep itself costs no CPU).
    hello_cpu = await cpu_per_request(via_asgi("/hello"), 4 * n, 500)
    wait_cpu = await cpu_per_request(via_asgi("/wait"), 4 * n, 500)
    rows.append(("  a wait (sleep 2 ms, 500 in flight), CPU over hello", wait_cpu - hello_cpu))
    for name, micros in rows:
        print(f"{name:<45} {micros:8.1f} us")


if __name__ == "__main__":
    uvloop.run(main())
