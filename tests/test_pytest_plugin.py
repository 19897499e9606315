"""``pytest --flask-asgi-strict`` and the ``flask_asgi_strict`` fixture fail blocking async code."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

INNER_TESTS = """
import asyncio
import time

from flask import Flask

import flask_asgi

app = Flask(__name__)
asgi = flask_asgi.ASGI(app)


@app.get("/blocks")
async def blocks():
    time.sleep(0.01)  # blocks the loop
    return "done"


@app.get("/awaits")
async def awaits():
    await asyncio.sleep(0.01)
    return "done"


@app.get("/sync")
def sync():
    time.sleep(0.01)  # in a worker thread: fine
    return "done"


def test_async_view_that_blocks():
    app.test_client().get("/blocks")  # a 500, which this test does not even look at


def test_async_view_that_awaits():
    assert app.test_client().get("/awaits").text == "done"


def test_sync_view_that_sleeps():
    assert app.test_client().get("/sync").text == "done"


def test_fixture_alone(flask_asgi_strict):
    app.test_client().get("/blocks")
"""


def run_pytest(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(INNER_TESTS))
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rf", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_strict_option_fails_only_the_blocking_async_test(tmp_path: Path) -> None:
    result = run_pytest(tmp_path, "--flask-asgi-strict")
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    assert "2 failed, 2 passed" in out, out
    assert "FAILED test_inner.py::test_async_view_that_blocks" in out
    assert "FAILED test_inner.py::test_fixture_alone" in out
    assert "blocking call(s) on the event loop" in out
    assert "Blocking call to time.sleep" in out


def test_without_the_option_only_the_fixture_is_strict(tmp_path: Path) -> None:
    result = run_pytest(tmp_path)
    out = result.stdout
    assert "1 failed, 3 passed" in out, out + result.stderr
    assert "FAILED test_inner.py::test_fixture_alone" in out


STRICT_CLIENTS = """
import asyncio
import time

import pytest
from flask import Flask

import flask_asgi

app = Flask(__name__)
asgi = flask_asgi.ASGI(app)


@asgi.before_serving
async def opened():
    app.extensions["ready"] = True


@app.get("/awaits")
async def awaits():
    await asyncio.sleep(0.01)
    return "done"


@app.get("/blocks")
async def blocks():
    time.sleep(0.01)  # blocks the loop
    return "done"


@app.route("/ws", websocket=True)
async def ws():
    await flask_asgi.websocket.send("hi")


def test_sync_serving_client_and_websocket():
    with asgi.serving():
        client = app.test_client()
        assert client.get("/awaits").text == "done"
        assert client.post("/awaits", data={"f": "x"}).status_code == 405
        with client.websocket("/ws") as socket:
            assert socket.receive() == "hi"


@pytest.mark.asyncio
async def test_async_client_with_lifespan():
    async with asgi.test_client(lifespan=True) as client:
        assert (await client.get("/awaits")).text == "done"


@pytest.mark.asyncio
async def test_async_serving_and_websocket():
    async with asgi.serving():
        async with asgi.test_client() as client, client.websocket("/ws") as socket:
            assert await socket.receive() == "hi"
    with asgi.serving():  # the sync forms, in an async test
        assert app.test_client().get("/awaits").text == "done"


@pytest.mark.asyncio
async def test_async_client_view_that_blocks():
    async with asgi.test_client() as client:
        await client.get("/blocks")
"""


def test_strict_mode_passes_flask_asgi_own_startup_and_the_clients(tmp_path: Path) -> None:
    # pytest-asyncio runs in its strict mode here (no configuration): marked tests only.
    (tmp_path / "test_clients.py").write_text(textwrap.dedent(STRICT_CLIENTS))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-rf",
            "--flask-asgi-strict",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = result.stdout
    assert "1 failed, 3 passed" in out, out + result.stderr
    assert "FAILED test_clients.py::test_async_client_view_that_blocks" in out
    assert "Blocking call to time.sleep" in out
