"""A client that goes away cancels async views and stops streams; nothing leaks."""

from __future__ import annotations

import asyncio
import gc
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import greenlet
import helpers
import httpx
import pytest
from flask import Flask, g, request
from helpers import run_live, wait_for

import flask_asgi
from flask_asgi.ground.bridge import _greenlet_main


def port_of(base: str) -> int:
    return int(base.rsplit(":", 1)[1])


def send_and_leave(base: str, raw_request: bytes, wait_first_bytes: bool = False) -> bytes:
    """Send a request on a raw socket, optionally read the first bytes, then disconnect."""
    received = b""
    with socket.create_connection(("127.0.0.1", port_of(base)), timeout=10) as sock:
        sock.sendall(raw_request)
        if wait_first_bytes:
            while b"\r\n\r\n" not in received:
                received += sock.recv(4096)
        else:
            time.sleep(0.3)
    return received


class Events(helpers.Events):
    """A thread-safe record of what the app saw."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()  # lets a still-running view finish


def build_app() -> tuple[Flask, flask_asgi.ASGI, Events]:
    app = Flask(__name__)
    asgi = flask_asgi.ASGI(app)
    events = Events()

    async def idle(tag: str) -> None:
        try:
            for _ in range(400):  # at most ~20 s, ends early once the test releases it
                if events.release.is_set():
                    events.add(f"{tag}:released")
                    return
                await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            events.add(f"{tag}:cancelled")
            raise

    @app.before_request
    def read_posted_body() -> None:
        if request.method == "POST":
            g.body = request.get_data()  # a sync hook runs in the request greenlet

    @app.teardown_request
    def teardown(error: BaseException | None) -> None:
        events.add(("teardown", request.path, type(error).__name__ if error else None))

    @app.get("/wait")
    async def wait() -> str:
        await idle("wait")
        return "done"

    @app.post("/wait-after-body")
    async def wait_after_body() -> str:
        events.add(("body", len(g.body)))
        await idle("body")
        return "done"

    @app.get("/async-stream")
    async def async_stream() -> Any:
        async def generate() -> AsyncIterator[str]:
            try:
                for i in range(400):
                    events.add(("async-chunk", i))
                    yield f"chunk {i}\n"
                    await asyncio.sleep(0.05)
            finally:
                events.add("async-stream:finally")

        return flask_asgi.stream(generate())

    @app.get("/sync-stream")
    def sync_stream() -> Any:
        def generate() -> Iterator[str]:
            try:
                for i in range(400):
                    events.add(("sync-chunk", i))
                    yield f"chunk {i}\n"
                    time.sleep(0.05)
            finally:
                events.add("sync-stream:finally")

        return generate()

    @app.get("/ping")
    async def ping() -> str:
        return "pong"

    return app, asgi, events


@pytest.fixture
def served(live_server: Any) -> Iterator[tuple[str, Events]]:
    app, asgi, events = build_app()
    base = live_server(asgi)
    yield base, events
    events.release.set()


def test_disconnect_cancels_waiting_async_view(served: tuple[str, Events]) -> None:
    base, events = served
    send_and_leave(base, b"GET /wait HTTP/1.1\r\nHost: x\r\n\r\n")
    assert wait_for(lambda: "wait:cancelled" in events), events.items
    assert wait_for(lambda: ("teardown", "/wait", "CancelledError") in events), events.items
    assert "wait:released" not in events
    assert httpx.get(base + "/ping").text == "pong"


def test_disconnect_cancels_async_view_that_read_a_body(served: tuple[str, Events]) -> None:
    base, events = served
    send_and_leave(
        base, b"POST /wait-after-body HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
    )
    assert wait_for(lambda: ("body", 5) in events)
    assert wait_for(lambda: "body:cancelled" in events, timeout=3), events.items


def read_some_then_leave(base: str, path: str) -> bytes:
    with httpx.Client(timeout=10) as client:
        with client.stream("GET", base + path) as response:
            assert response.status_code == 200
            iterator = response.iter_raw()
            data = next(iterator)
            while data.count(b"\n") < 2:
                data += next(iterator)
    return data


def test_async_generator_stream_stops_on_disconnect(served: tuple[str, Events]) -> None:
    base, events = served
    data = read_some_then_leave(base, "/async-stream")
    assert data.startswith(b"chunk 0\nchunk 1\n")
    assert wait_for(lambda: "async-stream:finally" in events), events.items
    chunks = [e for e in events.items if isinstance(e, tuple) and e[0] == "async-chunk"]
    assert len(chunks) < 100  # it stopped long before its 400 chunks
    assert wait_for(lambda: any(e[0] == "teardown" for e in events.items if isinstance(e, tuple)))


def test_sync_generator_stream_stops_on_disconnect(served: tuple[str, Events]) -> None:
    base, events = served
    data = read_some_then_leave(base, "/sync-stream")
    assert data.startswith(b"chunk 0\nchunk 1\n")
    assert wait_for(lambda: "sync-stream:finally" in events), events.items
    chunks = [e for e in events.items if isinstance(e, tuple) and e[0] == "sync-chunk"]
    assert len(chunks) < 100
    assert httpx.get(base + "/ping").text == "pong"


def test_test_client_closing_a_stream_runs_generator_cleanup() -> None:
    app, asgi, events = build_app()
    client = app.test_client()
    for path, marker in (("/async-stream", "async"), ("/sync-stream", "sync")):
        response = client.get(path, buffered=False)
        first = next(iter(response.response))
        assert first == b"chunk 0\n"
        response.close()
        assert wait_for(lambda m=marker: f"{m}-stream:finally" in events), events.items
    assert client.get("/ping").text == "pong"


def count_greenlets() -> int:
    """Greenlets other than the threads' main greenlets (one per thread that used greenlet)
    and the idle ones in flask-asgi's pool (how many it keeps depends on how many requests
    overlapped): the greenlets still inside a job."""
    gc.collect()
    return sum(
        1
        for obj in gc.get_objects()
        # type(), not isinstance(): a dead weakref.proxy in gc.get_objects() (left by another
        # test's library) raises ReferenceError when isinstance() asks for its __class__.
        if issubclass(type(obj), greenlet.greenlet)
        and obj.parent is not None
        and not obj.dead
        and (obj.gr_frame is None or obj.gr_frame.f_code is not _greenlet_main.__code__)
    )


def test_no_greenlet_or_thread_leaks() -> None:
    threads_before = len(
        [t for t in threading.enumerate() if not t.name.startswith("flask-asgi-worker")]
    )
    workers_before = len(
        [t for t in threading.enumerate() if t.name.startswith("flask-asgi-worker")]
    )
    pool_size = 0

    def scenario() -> tuple[int, int]:
        nonlocal pool_size
        app, asgi, events = build_app()
        pool_size = int(app.config["FLASK_ASGI_THREADS"])
        with run_live(asgi) as base:
            assert httpx.get(base + "/ping").text == "pong"  # warm up
            greenlets_before = count_greenlets()
            for _ in range(5):
                send_and_leave(base, b"GET /wait HTTP/1.1\r\nHost: x\r\n\r\n")
                read_some_then_leave(base, "/async-stream")
                read_some_then_leave(base, "/sync-stream")
            assert wait_for(lambda: events.items.count("wait:cancelled") == 5)
            assert wait_for(lambda: events.items.count("async-stream:finally") == 5)
            assert wait_for(lambda: events.items.count("sync-stream:finally") == 5)
            cancelled_teardown = ("teardown", "/wait", "CancelledError")
            assert wait_for(lambda: events.items.count(cancelled_teardown) == 5), events.items
            assert httpx.get(base + "/ping").text == "pong"
            # Each request greenlet finished: none is parked, waiting for an await that
            # will never come back.
            assert wait_for(lambda: count_greenlets() <= greenlets_before), (
                count_greenlets(),
                greenlets_before,
            )
            return greenlets_before, count_greenlets()

    scenario()
    # Server stopped and the app dropped: its threads are gone. Worker threads may stay
    # (the pool can be shared by the process) but the scenario started at most its pool's
    # size of them (earlier tests in the process may have started others, of other pools).

    def others() -> list[str]:
        gc.collect()
        names = [t.name for t in threading.enumerate()]
        return [n for n in names if not n.startswith("flask-asgi-worker")]

    assert wait_for(lambda: len(others()) <= threads_before), others()
    workers = [t for t in threading.enumerate() if t.name.startswith("flask-asgi-worker")]
    assert 0 < pool_size and len(workers) <= workers_before + pool_size
