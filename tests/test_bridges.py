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
