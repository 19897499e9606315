"""before_serving / while_serving / after_serving hooks, on uvicorn and in tests."""

from __future__ import annotations

import asyncio
import logging
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from flask import Flask, current_app
from helpers import run_live

import flask_asgi
from flask_asgi.testing import serving_loop


def build_app(sync_generator: bool = False) -> tuple[Flask, flask_asgi.ASGI, list[str]]:
    app = Flask("lifespan_app")
    asgi = flask_asgi.ASGI(app)
    calls: list[str] = []

    def record(step: str) -> None:
        calls.append(f"{step}@{current_app.name}")  # fails without an app context

    @asgi.before_serving
    def sync_before() -> None:
        # Sync hooks run in a greenlet on the loop: they may await.
        value = flask_asgi.await_(asyncio.sleep(0, result="awaited"))
        record(f"sync_before:{value}")

    @asgi.before_serving
    async def async_before() -> None:
        await asyncio.sleep(0)
        current_app.config["LOOP"] = asyncio.get_running_loop()
        record("async_before")

    def sync_while() -> Iterator[None]:
        record("sync_while:start")
        yield
        record("sync_while:stop")

    if sync_generator:
        asgi.while_serving(sync_while)

    @asgi.while_serving
    async def async_while() -> AsyncIterator[None]:
        record("async_while:start")
        yield
        await asyncio.sleep(0)
        record("async_while:stop")

    @asgi.after_serving
    async def async_after() -> None:
        record("async_after")

    @asgi.after_serving
    def sync_after() -> None:
        record("sync_after")

    @app.get("/calls")
    async def get_calls() -> dict[str, Any]:
        return {
            "calls": list(calls),
            "same_loop": current_app.config["LOOP"] is asyncio.get_running_loop(),
        }

    return app, asgi, calls


STARTUP = [
    "sync_before:awaited@lifespan_app",
    "async_before@lifespan_app",
    "async_while:start@lifespan_app",
]
SHUTDOWN = [
    "async_while:stop@lifespan_app",
    "async_after@lifespan_app",
    "sync_after@lifespan_app",
]
# With a sync while_serving generator too (registered before the async one).
STARTUP_SYNC_GEN = STARTUP[:2] + ["sync_while:start@lifespan_app"] + STARTUP[2:]
SHUTDOWN_SYNC_GEN = [
    "async_while:stop@lifespan_app",  # generators resume last first
    "sync_while:stop@lifespan_app",
    *SHUTDOWN[1:],
]


def test_hooks_on_real_uvicorn(caplog: pytest.LogCaptureFixture) -> None:
    app, asgi, calls = build_app()
    with run_live(asgi) as base:
        response = httpx.get(base + "/calls")
        assert response.json() == {"calls": STARTUP, "same_loop": True}
    assert calls == STARTUP + SHUTDOWN
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_sync_while_serving_generator_on_real_uvicorn(caplog: pytest.LogCaptureFixture) -> None:
    app, asgi, calls = build_app(sync_generator=True)
    with run_live(asgi) as base:
        response = httpx.get(base + "/calls")
        assert response.json() == {"calls": STARTUP_SYNC_GEN, "same_loop": True}
    assert calls == STARTUP_SYNC_GEN + SHUTDOWN_SYNC_GEN
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []  # today: "flask-asgi shutdown failed" + uvicorn's report


def test_sync_while_serving_generator_via_serving() -> None:
    app, asgi, calls = build_app(sync_generator=True)
    with asgi.serving():
        assert calls == STARTUP_SYNC_GEN
    assert calls == STARTUP_SYNC_GEN + SHUTDOWN_SYNC_GEN


def test_hooks_via_sync_serving_and_test_client() -> None:
    app, asgi, calls = build_app()
    with asgi.serving():
        assert calls == STARTUP
        assert app.test_client().get("/calls").json == {"calls": STARTUP, "same_loop": True}
    assert calls == STARTUP + SHUTDOWN


async def test_hooks_via_async_serving() -> None:
    app, asgi, calls = build_app()
    async with asgi.serving():
        assert calls == STARTUP
        # The lifespan runs on the test clients' one serving loop, not the test's loop.
        assert app.config["LOOP"] is serving_loop()
        assert app.config["LOOP"] is not asyncio.get_running_loop()
    assert calls == STARTUP + SHUTDOWN


async def test_async_test_client_with_lifespan() -> None:
    app, asgi, calls = build_app()
    async with asgi.test_client(lifespan=True) as client:
        response = await client.get("/calls")
        assert response.status_code == 200
        assert response.json == {"calls": STARTUP, "same_loop": True}
    assert calls == STARTUP + SHUTDOWN


async def test_async_test_client_without_lifespan() -> None:
    app, asgi, calls = build_app()
    app.config["LOOP"] = serving_loop()  # where requests run, whatever loop the test has
    async with asgi.test_client() as client:
        response = await client.get("/calls")
        assert response.json == {"calls": [], "same_loop": True}
    assert calls == []


def failing_app() -> flask_asgi.ASGI:
    app = Flask("failing")
    asgi = flask_asgi.ASGI(app)

    @asgi.before_serving
    async def broken() -> None:
        raise ConnectionError("database unreachable")

    return asgi


def test_failing_before_serving_in_serving() -> None:
    with pytest.raises(RuntimeError, match="database unreachable"):
        with failing_app().serving():
            raise AssertionError("the block must not run")


def test_failing_before_serving_stops_uvicorn() -> None:
    with pytest.raises(RuntimeError, match=r"exited before it started \(exit code \[3\]\)"):
        with run_live(failing_app()):
            raise AssertionError("the server must not start")


def test_failing_after_serving_is_reported() -> None:
    app = Flask("after")
    asgi = flask_asgi.ASGI(app)
    ran: list[str] = []

    @asgi.after_serving
    def broken() -> None:
        raise ValueError("flush failed")

    @asgi.after_serving
    def still_runs() -> None:
        ran.append("second")

    with pytest.raises(RuntimeError, match="flush failed"):
        with asgi.serving():
            pass
    assert ran == ["second"]  # one failing hook does not skip the others


def test_while_serving_yielding_twice_is_an_error() -> None:
    app = Flask("twice")
    asgi = flask_asgi.ASGI(app)

    @asgi.while_serving
    def twice() -> Iterator[None]:
        yield
        yield

    with pytest.raises(RuntimeError, match="yielded twice"):
        with asgi.serving():
            pass


def test_cli_serve_exits_nonzero_on_failing_startup(tmp_path: Path, cli_server: Any) -> None:
    module = tmp_path / "broken_app.py"
    module.write_text(
        textwrap.dedent(
            """
            from flask import Flask
            import flask_asgi

            app = Flask(__name__)
            asgi = flask_asgi.ASGI(app)

            @asgi.before_serving
            def connect():
                raise ConnectionError("database unreachable at startup")
            """
        )
    )
    server = cli_server("broken_app.py", cwd=tmp_path, wait=False)
    returncode = server.proc.wait(30)
    output = server.output()
    assert returncode != 0
    assert "database unreachable at startup" in output
    assert "ConnectionError" in output


def test_cli_serve_runs_hooks(tmp_path: Path, cli_server: Any) -> None:
    marker = tmp_path / "marker.txt"
    module = tmp_path / "hooked_app.py"
    module.write_text(
        textwrap.dedent(
            f"""
            from flask import Flask, current_app
            import flask_asgi

            app = Flask(__name__)
            asgi = flask_asgi.ASGI(app)

            @asgi.while_serving
            async def resource():
                current_app.config["STATE"] = "open"
                yield
                with open({str(marker)!r}, "w") as f:
                    f.write("closed " + current_app.name)

            @app.get("/state")
            async def state():
                return current_app.config["STATE"]
            """
        )
    )
    server = cli_server("hooked_app.py", cwd=tmp_path)
    assert httpx.get(server.base_url + "/state").text == "open"
    server.stop()
    # uvicorn re-raises the SIGTERM it handled once it has shut down gracefully.
    assert server.proc.returncode in (0, -15)
    assert marker.read_text() == "closed hooked_app"
