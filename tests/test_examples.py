"""The seed examples, unmodified, served by the real ``flask --app ... serve`` command."""

from __future__ import annotations

import asyncio
import subprocess
import time
from typing import Any

import httpx
from helpers import ROOT, VENV_BIN


def test_async_views_example(cli_server: Any) -> None:
    server = cli_server("examples/async_views.py")
    task = httpx.get(server.base_url + "/async-task", timeout=10)
    assert task.status_code == 500  # NotImplementedError, not handled by the view
    assert "Internal Server Error" in task.text

    error = httpx.get(server.base_url + "/async-error", timeout=10)
    assert error.status_code == 500
    assert error.headers["Content-Type"] == "application/json"
    assert error.json() == {"error": ""}  # str(NotImplementedError()) is empty

    assert httpx.get(server.base_url + "/nope", timeout=10).status_code == 404

    output = server.output()  # stops the server
    assert "NotImplementedError" in output  # Flask logged the unhandled one
    assert server.proc.returncode is not None


def test_flask_hello_example(cli_server: Any) -> None:
    server = cli_server("examples/flask_hello.py", extra=["--log-level", "warning"])

    async def many() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=None)
        async with httpx.AsyncClient(base_url=server.base_url, limits=limits, timeout=30) as c:
            return await asyncio.gather(*(c.get("/hello") for _ in range(50)))

    started = time.monotonic()
    responses = asyncio.run(many())
    elapsed = time.monotonic() - started
    assert [r.text for r in responses] == ["Hello, World!"] * 50
    assert elapsed < 15  # 50 x 2 s overlapped (serial: 100 s)


def test_cli_serve_help_lists_options() -> None:
    result = subprocess.run(
        [str(VENV_BIN / "flask"), "--app", "examples/flask_hello.py", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert result.returncode == 0
    for option in ("--host", "--port", "--workers", "--reload", "--root-path"):
        assert option in result.stdout
