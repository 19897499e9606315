"""Quiet, true logs from a real ``flask serve``: refused handshakes, broken streams."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

LOG_APP = """
import asyncio

from flask import Flask, Response, abort

import flask_asgi

app = Flask(__name__)
asgi = flask_asgi.ASGI(app)


@asgi.websocket("/ws-async")
async def ws_async():
    abort(401)


@asgi.websocket("/ws-sync")
def ws_sync():
    return "members only", 403


@app.get("/sync-stream")
def sync_stream():
    def gen():
        yield "one\\n"
        raise RuntimeError("sync stream broke")

    return Response(gen())


@app.get("/async-stream")
async def async_stream():
    async def gen():
        yield "one\\n"
        await asyncio.sleep(0)
        raise RuntimeError("async stream broke")

    return Response(flask_asgi.stream(gen()))
"""


def refused_status(url: str) -> int:
    async def connect() -> int:
        try:
            async with websockets.connect(url):
                return 101
        except websockets.InvalidStatus as exc:
            return exc.response.status_code

    return asyncio.run(connect())


@pytest.fixture
def log_app(tmp_path: Path) -> Path:
    (tmp_path / "log_app.py").write_text(textwrap.dedent(LOG_APP).lstrip())
    return tmp_path


def test_refused_handshake_logs_only_the_access_line(log_app: Path, cli_server: Any) -> None:
    server = cli_server("log_app.py", cwd=log_app)
    ws_url = server.base_url.replace("http", "ws")
    assert refused_status(ws_url + "/ws-async") == 401
    assert refused_status(ws_url + "/ws-sync") == 403  # a sync handler: refused from a worker
    output = server.output()
    assert '"WebSocket /ws-async" 401' in output
    assert '"WebSocket /ws-sync" 403' in output
    assert "without completing handshake" not in output
    assert "connection rejected" not in output
    assert "ERROR" not in output


def stream_errors(output: str, message: str) -> int:
    return output.count(f"RuntimeError: {message}")


def test_an_exception_mid_stream_logs_one_traceback(log_app: Path, cli_server: Any) -> None:
    server = cli_server("log_app.py", cwd=log_app)
    for path in ("/sync-stream", "/async-stream"):
        with pytest.raises(httpx.RemoteProtocolError):  # the response is cut, not completed
            httpx.get(server.base_url + path, timeout=10)
    output = server.output()
    assert output.count("Traceback (most recent call last)") == 2, output
    assert stream_errors(output, "sync stream broke") == 1
    assert stream_errors(output, "async stream broke") == 1


def test_under_the_debugger_a_broken_stream_is_not_given_an_html_page(
    log_app: Path, cli_server: Any
) -> None:
    server = cli_server("log_app.py", cwd=log_app, extra=["--no-reload"], flask_options=["--debug"])
    for path in ("/sync-stream", "/async-stream"):
        body = httpx.get(server.base_url + path, timeout=10).text
        assert body == "one\n"  # as under flask --debug run: the page cannot follow the stream
    output = server.output()
    assert output.count("Traceback (most recent call last)") == 2, output
    assert stream_errors(output, "sync stream broke") == 1
    assert stream_errors(output, "async stream broke") == 1
    assert output.count("response headers were already sent") == 2
