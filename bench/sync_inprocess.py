"""A sync view's cost per request through the ASGI callable, in process (no sockets).

``python bench/sync_inprocess.py [--profile hello|echo] [-n N]``

The same sync Flask app (bench/apps/flask_sync_app.py's hello and 1 KB JSON echo) is
called two ways on one uvloop loop: Flask's own ``wsgi_app`` inline (the floor, the
"Flask itself" row of bench/sync_servers.py), and flask-asgi's ASGI callable with a
minimal fake server whose ``receive`` is an ``async def`` that has the body at once
(uvicorn's kind). Printed: microseconds of wall time per request one at a time, and of
CPU time (both threads) per request with 64 in flight, which is what a loaded server
pays. ``--profile`` runs cProfile over the 64-in-flight loop (the loop thread only) and
prints the top functions by their own time.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import time
from collections.abc import Callable
from typing import Any

import uvloop
from flask import Flask, request
from werkzeug.test import EnvironBuilder

from flask_asgi import ASGI
from flask_asgi.protocol import sync_path

app = Flask(__name__)


@app.get("/hello")
def hello() -> str:
    return "Hello, World!"


@app.post("/echo")
def echo() -> Any:
    return request.get_json()


asgi = ASGI(app)
BODY = b'{"text": "' + b"x" * 1000 + b'"}'
IN_FLIGHT = 64


def scope(path: str, method: str, body: bytes) -> dict[str, Any]:
    headers = [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"wrk")]
    if body:
        headers += [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 5555),
        "headers": headers,
    }


def inline(path: str, method: str, body: bytes) -> Callable[[], Any]:
    environ = EnvironBuilder(
        path=path,
        method=method,
        data=body or None,
        headers={"User-Agent": "wrk", "Host": "127.0.0.1:8000"},
        content_type="application/json" if body else None,
    ).get_environ()

    def call() -> Any:
        env = dict(environ)
        env["wsgi.input"] = io.BytesIO(body)
        result = app.wsgi_app(env, lambda *a: None)
        out = b"".join(result)
        result.close()  # type: ignore[attr-defined]
        return out

    return call


def via_asgi(path: str, method: str, body: bytes) -> Callable[[], Any]:
    sc = scope(path, method, body)
    sent: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            sent.append(message["status"])

    async def call() -> None:
        await asgi(dict(sc), receive, send)
        if sent.pop() != 200:
            raise AssertionError("not a 200")

    return call


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


async def cpu_in_flight(fn: Callable[[], Any], n: int, profile: cProfile.Profile | None) -> float:
    """CPU time (both threads) per request with IN_FLIGHT requests at once."""

    async def client() -> None:
        for _ in range(n // IN_FLIGHT):
            await fn()

    await asyncio.gather(*(client() for _ in range(IN_FLIGHT)))  # warm up
    if profile is not None:
        profile.enable()
    start = time.process_time()
    await asyncio.gather(*(client() for _ in range(IN_FLIGHT)))
    spent = time.process_time() - start
    if profile is not None:
        profile.disable()
    return spent / n * 1e6


async def main(n: int, profile_name: str | None) -> None:
    cases = {"hello": ("/hello", "GET", b""), "echo": ("/echo", "POST", BODY)}
    for name, (path, method, body) in cases.items():
        floor_cpu = time.process_time()
        floor = per_call(inline(path, method, body), n)
        floor_cpu = (time.process_time() - floor_cpu) / (n * 1.1) * 1e6
        one = await per_await(via_asgi(path, method, body), n)
        profile = cProfile.Profile() if name == profile_name else None
        many = await cpu_in_flight(via_asgi(path, method, body), n, profile)
        print(
            f"{name:<6} Flask inline {floor:6.1f} us | ASGI sync one at a time {one:6.1f} us"
            f" | CPU/request, {IN_FLIGHT} in flight {many:6.1f} us"
            f" (inline {floor_cpu:5.1f}: {floor_cpu / many:.2f}x)"
        )
        if profile is not None:
            print("--- the loop thread")
            pstats.Stats(profile).sort_stats("tottime").print_stats(30)
            print("--- the worker threads")
            pstats.Stats(*_thread_profiles).sort_stats("tottime").print_stats(
                "flask_asgi|threading|queue|wsgi.py|request.py", 30
            )


_thread_profiles: list[cProfile.Profile] = []


def _profile_threads() -> None:
    """Profile what runs in the worker threads too (one profiler per thread)."""
    import threading

    local = threading.local()
    original = sync_path._respond_counted

    def profiled(*args: Any) -> Any:
        profile = getattr(local, "profile", None)
        if profile is None:
            profile = local.profile = cProfile.Profile()
            _thread_profiles.append(profile)
        profile.enable()
        try:
            return original(*args)
        finally:
            profile.disable()

    sync_path._respond_counted = profiled  # type: ignore[assignment]


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=20000)
    parser.add_argument("--profile", choices=["hello", "echo"])
    options = parser.parse_args()
    if options.profile:
        _profile_threads()
    uvloop.run(main(options.n, options.profile))
