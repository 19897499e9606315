"""``flask --app x --debug serve`` behaves like ``flask --debug run``: debugger, PIN, reloader."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import wait_for

DEBUG_APP = """
import time

from flask import Flask

app = Flask(__name__)


@app.get("/async-boom")
async def async_boom():
    raise ValueError("async boom")


@app.get("/sync-boom")
def sync_boom():
    raise KeyError("sync boom")


@app.get("/slow")
async def slow():
    time.sleep(0.25)  # reported under --debug (0.1 s), not with the default 0.5 s
    return "slow"


@app.get("/version")
async def version():
    return "v1"
"""

PIN = "135-246-357"


def test_debug_serve_shows_the_debugger_and_reloads(
    tmp_path: Path, cli_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "debug_app.py"
    source.write_text(textwrap.dedent(DEBUG_APP).lstrip())
    monkeypatch.setenv("WERKZEUG_DEBUG_PIN", PIN)  # Werkzeug's own way to fix the PIN
    server = cli_server("debug_app.py", cwd=tmp_path, flask_options=["--debug"])
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        # Werkzeug's interactive debugger page, for an async and a sync view.
        page = client.get("/async-boom")
        assert page.status_code == 500
        assert page.headers["content-type"].startswith("text/html")
        assert "Werkzeug Debugger" in page.text
        assert "ValueError: async boom" in page.text
        sync_page = client.get("/sync-boom")
        assert sync_page.status_code == 500
        assert (
            "Werkzeug Debugger" in sync_page.text
            and "KeyError: &#39;sync boom&#39;" in sync_page.text
        )

        # Its console works through flask-asgi: unlock it with the PIN, evaluate in a frame.
        secret = re.search(r'SECRET = "([^"]+)"', page.text)
        frame = re.search(r'id="frame-(\d+)"', page.text)
        assert secret and frame
        unlock = client.get(
            "/", params={"__debugger__": "yes", "cmd": "pinauth", "pin": PIN, "s": secret[1]}
        )
        assert unlock.json()["auth"] is True
        params = {"__debugger__": "yes", "cmd": "6 * 7", "frm": frame[1], "s": secret[1]}
        assert "42" in client.get("/async-boom", params=params).text

        # The watchdog's threshold is 0.1 s: a 0.25 s block is reported.
        assert client.get("/slow").text == "slow"

        # The reloader is on: an edit is served without a restart by hand.
        assert client.get("/version").text == "v1"
        source.write_text(source.read_text().replace('"v1"', '"v2"'))

        def reloaded() -> bool:
            try:
                return client.get("/version").text == "v2"
            except httpx.TransportError:
                return False

        assert wait_for(reloaded, timeout=30)
    output = server.output()
    assert f" * Debugger PIN: {PIN}" in output
    assert "Started reloader process" in output
    assert "flask-asgi: the event loop has been blocked for" in output
    assert "slow at " in output


def test_without_debug_no_debugger_and_no_reloader(tmp_path: Path, cli_server: Any) -> None:
    (tmp_path / "debug_app.py").write_text(textwrap.dedent(DEBUG_APP).lstrip())
    server = cli_server("debug_app.py", cwd=tmp_path)
    page = httpx.get(server.base_url + "/async-boom", timeout=10)
    assert page.status_code == 500
    assert "Werkzeug Debugger" not in page.text
    assert httpx.get(server.base_url + "/slow", timeout=10).text == "slow"
    output = server.output()
    assert "Debugger PIN" not in output
    assert "reloader" not in output
    assert "flask-asgi: the event loop has been blocked" not in output  # 0.25 s < 0.5 s


@pytest.mark.parametrize(
    ("flask_options", "env_debug", "source"),
    [(["--debug"], None, "--debug"), ([], "1", "FLASK_DEBUG in the environment")],
)
def test_debug_on_a_public_host_is_refused_naming_why(
    tmp_path: Path,
    cli_server: Any,
    monkeypatch: pytest.MonkeyPatch,
    flask_options: list[str],
    env_debug: str | None,
    source: str,
) -> None:
    (tmp_path / "debug_app.py").write_text(textwrap.dedent(DEBUG_APP).lstrip())
    if env_debug is not None:
        monkeypatch.setenv("FLASK_DEBUG", env_debug)
    server = cli_server(
        "debug_app.py", cwd=tmp_path, flask_options=flask_options,
        extra=["--host", "0.0.0.0", "--no-reload"], wait=False,
    )  # fmt: skip
    assert server.proc.wait(timeout=60) == 2  # click's usage error: nothing was served
    output = server.output()
    assert f" * Debug mode: on (from {source})" in output
    assert "interactive debugger, which runs any Python code" in output
    assert "--host 0.0.0.0" in output and "--allow-remote-debugger" in output


def test_debug_on_a_public_host_when_insisted_warns_and_serves(
    tmp_path: Path, cli_server: Any
) -> None:
    (tmp_path / "debug_app.py").write_text(textwrap.dedent(DEBUG_APP).lstrip())
    server = cli_server(
        "debug_app.py", cwd=tmp_path, flask_options=["--debug"],
        extra=["--host", "0.0.0.0", "--no-reload", "--allow-remote-debugger"],
    )  # fmt: skip
    assert httpx.get(server.base_url + "/version", timeout=10).text == "v1"
    output = server.output()
    assert "WARNING: debug mode on --host 0.0.0.0" in output
    assert "Debugger is active!" in output


def test_debug_on_loopback_says_debug_mode_and_serves(tmp_path: Path, cli_server: Any) -> None:
    (tmp_path / "debug_app.py").write_text(textwrap.dedent(DEBUG_APP).lstrip())
    server = cli_server(
        "debug_app.py", cwd=tmp_path, flask_options=["--debug"], extra=["--no-reload"]
    )
    assert httpx.get(server.base_url + "/version", timeout=10).text == "v1"
    output = server.output()
    assert " * Debug mode: on (from --debug)" in output
    assert "WARNING" not in output


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.8.0.1", True), ("::1", True), ("[::1]", True),
     ("localhost", True), ("0.0.0.0", False), ("::", False), ("192.168.1.5", False),
     ("example.com", False)],
)  # fmt: skip
def test_loopback_hosts(host: str, loopback: bool) -> None:
    from flask_asgi.cli import is_loopback

    assert is_loopback(host) is loopback
