"""run_sync (async -> worker thread) and await_ (sync -> loop), on ASGI and under plain WSGI."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
from collections.abc import Generator
from typing import Any

import httpx
import pytest
from flask import Flask, current_app, g, request
from werkzeug.test import Client

import flask_asgi
from flask_asgi.ground.bridge import run_in_greenlet


class Ticket:
    """An awaitable that is not a coroutine."""

    def __await__(self) -> Generator[Any, None, str]:
        yield from asyncio.sleep(0).__await__()
        return "ticket"


def build_app() -> tuple[Flask, flask_asgi.ASGI]:
    app = Flask(__name__)
    asgi = flask_asgi.ASGI(app)

    @asgi.before_serving
    async def remember_loop() -> None:
        current_app.config["SERVER_LOOP"] = asyncio.get_running_loop()

    async def where() -> dict[str, Any]:
        await asyncio.sleep(0)
        return {
            "thread": threading.current_thread().name,
            "server_loop": asyncio.get_running_loop() is current_app.config.get("SERVER_LOOP"),
            "path": request.path,  # Flask's contexts reach the awaited coroutine
        }

    @app.get("/run-sync")
    async def run_sync_view() -> dict[str, Any]:
        g.marker = "from-async-view"

        def blocking(suffix: str, *, upper: bool) -> dict[str, Any]:
            text = f"{request.args['q']}-{g.marker}-{suffix}"
            return {
                "thread": threading.current_thread().name,
                "text": text.upper() if upper else text,
                "awaited": flask_asgi.await_(where()),  # nested: back onto the loop
            }

        return await flask_asgi.run_sync(blocking, "x", upper=True)

    @app.get("/await")
    def await_view() -> dict[str, Any]:
        result = flask_asgi.await_(where())
        result["view_thread"] = threading.current_thread().name
        result["ticket"] = flask_asgi.await_(Ticket())
        return result

    @app.get("/await-in-task")
    async def await_in_task() -> dict[str, Any]:
        async def plain() -> str:
            # A task of its own: plain asyncio code on the loop, outside any greenlet.
            return flask_asgi.await_(asyncio.sleep(0, result="never"))

        try:
            await asyncio.create_task(plain())
        except RuntimeError as error:
            return {"error": str(error)}
        return {"error": None}

    @app.get("/await-in-async-view")
    async def await_in_async_view() -> dict[str, Any]:
        # Sync code called from an async view (here: directly) may use await_.
        return {"value": flask_asgi.await_(asyncio.sleep(0, result="awaited"))}

    return app, asgi


def test_run_sync_from_async_view_on_real_server(live_server: Any) -> None:
    app, asgi = build_app()
    base = live_server(asgi)
    data = httpx.get(base + "/run-sync?q=hi").json()
    assert data["thread"].startswith("flask-asgi-worker")
    assert data["text"] == "HI-FROM-ASYNC-VIEW-X"
    assert data["awaited"] == {
        "thread": "uvicorn-test-server",
        "server_loop": True,
        "path": "/run-sync",
    }


def test_await_from_sync_view_on_real_server(live_server: Any) -> None:
    app, asgi = build_app()
    base = live_server(asgi)
    data = httpx.get(base + "/await").json()
    assert data["view_thread"].startswith("flask-asgi-worker")
    assert data["thread"] == "uvicorn-test-server"  # the coroutine ran on the server loop
    assert data["server_loop"] is True
    assert data["path"] == "/await"
    assert data["ticket"] == "ticket"


def test_bridges_via_test_client() -> None:
    app, asgi = build_app()
    client = app.test_client()
    data = client.get("/run-sync?q=a").json
    assert data["thread"].startswith("flask-asgi-worker")
    assert data["text"] == "A-FROM-ASYNC-VIEW-X"
    assert data["awaited"]["thread"] == "flask-asgi-loop"
    data = client.get("/await").json
    assert (data["thread"], data["path"], data["ticket"]) == ("flask-asgi-loop", "/await", "ticket")


def test_await_on_the_loop_raises_clear_error(live_server: Any) -> None:
    app, asgi = build_app()
    for response in (
        app.test_client().get("/await-in-task").json,
        httpx.get(live_server(asgi) + "/await-in-task").json(),
    ):
        assert "event loop's thread" in response["error"]
        assert "use 'await'" in response["error"]


def test_await_in_async_view_runs_in_request_greenlet(live_server: Any) -> None:
    app, asgi = build_app()
    assert app.test_client().get("/await-in-async-view").json == {"value": "awaited"}
    assert httpx.get(live_server(asgi) + "/await-in-async-view").json() == {"value": "awaited"}


async def test_await_in_plain_coroutine_raises() -> None:
    coro = asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="event loop's thread"):
        flask_asgi.await_(coro)
    assert coro.cr_frame is None  # closed: no "never awaited" warning


DEADLOCK_SCRIPT = textwrap.dedent(
    """
    import os, threading
    from flask import Flask, request
    import flask_asgi

    app = Flask(__name__)
    flask_asgi.ASGI(app)

    @app.before_request
    async def check_payload():
        request.get_json()  # sync body read inside an async hook

    @app.post("/sync")
    def sync_view():
        return {"got": request.get_json()}

    result = {}
    def call():
        try:
            result["status"] = app.test_client().post("/sync", json={"a": 1}).status_code
        except Exception as error:
            result["status"] = repr(error)
    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(5)
    print("RESULT", result.get("status", "HUNG"), flush=True)
    os._exit(0)  # a hung worker thread would block interpreter exit
    """
)


def test_sync_body_read_in_async_hook_of_sync_view_does_not_hang() -> None:
    # In a subprocess: the bug blocks the loop thread forever.
    proc = subprocess.run(
        [sys.executable, "-c", DEADLOCK_SCRIPT], capture_output=True, text=True, timeout=30
    )
    assert "RESULT HUNG" not in proc.stdout, proc.stdout + proc.stderr
    # Either it works (200) or it fails with the clear RuntimeError (500): never a hang.
    assert "RESULT 200" in proc.stdout or "RuntimeError" in proc.stdout + proc.stderr


def test_plain_wsgi_async_views_share_one_loop() -> None:
    app = Flask(__name__)
    flask_asgi.ASGI(app)
    state: dict[str, Any] = {}

    @app.get("/loop")
    async def loop_id() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        if "lock" not in state:
            state["lock"] = asyncio.Lock()
            state["event"] = asyncio.Event()
        # Loop-bound objects created by an earlier request still work.
        async with state["lock"]:
            await asyncio.sleep(0)
        return {"loop": id(loop), "thread": threading.current_thread().name}

    @app.get("/sync-await")
    def sync_await() -> dict[str, Any]:
        async def inner() -> int:
            await asyncio.sleep(0)
            return id(asyncio.get_running_loop())

        return {"loop": flask_asgi.await_(inner())}

    client = Client(app.wsgi_app)  # bypasses ASGI entirely: what a WSGI server does
    first = client.get("/loop")
    second = client.get("/loop")
    third = client.get("/sync-await")
    assert "asgi.scope" not in first.request.environ
    assert first.status_code == second.status_code == third.status_code == 200
    assert first.json["loop"] == second.json["loop"] == third.json["loop"]
    assert first.json["thread"] == "flask-asgi-loop"

    results: list[int] = []

    def from_thread() -> None:
        results.append(Client(app.wsgi_app).get("/loop").json["loop"])

    threads = [threading.Thread(target=from_thread) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results == [first.json["loop"]] * 4


class PlainAwaitable:
    """An awaitable whose ``__await__`` returns a plain iterator: ``__next__`` only, no
    ``send``/``throw``/``close`` (what granian's receive() and send() return)."""

    def __init__(self, awaitable: Any) -> None:
        self._inner = awaitable.__await__()
        self.steps = 0

    def __await__(self) -> PlainAwaitable:
        return self

    def __iter__(self) -> PlainAwaitable:
        return self

    def __next__(self) -> Any:
        self.steps += 1
        return self._inner.send(None)  # StopIteration(result) ends the await


def plain_server(asgi: Any, counts: dict[str, int]) -> Any:
    """An ASGI wrapper whose receive() and send() return ``PlainAwaitable``s, as granian's do."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        def plain_receive() -> PlainAwaitable:
            counts["receive"] = counts.get("receive", 0) + 1
            return PlainAwaitable(receive())

        def plain_send(message: Any) -> PlainAwaitable:
            counts["send"] = counts.get("send", 0) + 1
            return PlainAwaitable(send(message))

        await asgi(scope, plain_receive, plain_send)

    return app


def plain_iterator_app() -> tuple[Flask, flask_asgi.ASGI]:
    app = Flask(__name__)
    asgi = flask_asgi.ASGI(app)

    @app.post("/echo-async")
    async def echo_async() -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"body": request.get_data(as_text=True), "thread": threading.current_thread().name}

    @app.post("/echo-sync")
    def echo_sync() -> dict[str, Any]:
        return {"body": request.get_data(as_text=True), "thread": threading.current_thread().name}

    @app.get("/stream-async")
    async def stream_async() -> Any:
        await asyncio.sleep(0)

        def chunks() -> Generator[str, None, None]:
            for i in range(50):
                yield f"{i},"

        return app.response_class(chunks())

    @app.get("/stream-sync")
    def stream_sync() -> Any:
        async def chunks() -> Any:
            for i in range(50):
                await asyncio.sleep(0)
                yield f"{i},"

        return app.response_class(flask_asgi.stream(chunks()))

    @app.get("/await-plain")
    async def await_plain() -> dict[str, Any]:
        ticket = PlainAwaitable(asyncio.sleep(0.01, result="slept"))
        value = flask_asgi.await_(ticket)  # sync code in the request greenlet
        return {"value": value, "steps": ticket.steps}

    return app, asgi


def test_plain_iterator_awaitables_on_real_server(live_server: Any) -> None:
    """Bodies and streamed responses work when the server's receive()/send() awaitables are
    plain iterators (no send/throw), from async views (request greenlet) and sync views
    (worker thread)."""
    app, asgi = plain_iterator_app()
    counts: dict[str, int] = {}
    base = live_server(plain_server(asgi, counts))
    body = "x" * 200_000  # several http.request messages
    with httpx.Client(base_url=base, timeout=30) as client:
        for path in ("/echo-async", "/echo-sync"):
            response = client.post(path, content=body)
            assert response.status_code == 200, response.text
            assert response.json()["body"] == body
        assert (
            client.post("/echo-sync", content=body).json()["thread"].startswith("flask-asgi-worker")
        )
        expected = "".join(f"{i}," for i in range(50))
        for path in ("/stream-async", "/stream-sync"):
            response = client.get(path)
            assert (response.status_code, response.text) == (200, expected), path
            assert response.headers.get("transfer-encoding") == "chunked"
        data = client.get("/await-plain").json()
        assert data["value"] == "slept"
        assert data["steps"] >= 2  # it really suspended on the loop at least once
    assert counts["receive"] >= 4 and counts["send"] >= 100  # the wrapper was in the path


async def test_throw_into_plain_iterator_raises_at_the_await_point() -> None:
    """Cancelling a greenlet that waits on a plain iterator raises CancelledError at its
    await_, as ``await`` does for an iterator without throw()."""
    seen: list[str] = []

    def waits() -> None:
        try:
            flask_asgi.await_(PlainAwaitable(asyncio.sleep(30)))
        except asyncio.CancelledError:
            seen.append("cancelled at await_")
            raise

    async def native() -> None:
        try:
            await PlainAwaitable(asyncio.sleep(30))
        except asyncio.CancelledError:
            seen.append("cancelled at await")
            raise

    for task in (
        asyncio.create_task(run_in_greenlet(waits)),
        asyncio.create_task(native()),
    ):
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert seen == ["cancelled at await_", "cancelled at await"]


async def test_run_in_worker_cancelled_before_start_skips_the_job() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from flask_asgi.ground.worker_calls import run_in_worker

    release = threading.Event()
    ran: list[str] = []
    with ThreadPoolExecutor(1) as executor:
        busy = asyncio.ensure_future(run_in_worker(executor, release.wait, 10))
        queued = asyncio.ensure_future(run_in_worker(executor, ran.append, "queued"))
        await asyncio.sleep(0.05)
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        release.set()
        assert await busy is True
        with pytest.raises(ZeroDivisionError):  # errors come back to the awaiting task
            await run_in_worker(executor, divmod, 1, 0)
        assert await run_in_worker(executor, ran.append, "later") is None
    assert ran == ["later"]
