"""``flask serve --server granian --interface wsgi``: an all-sync app through granian's WSGI
interface (FLASK_ASGI_INTERFACE), in process and for real."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from flask import Flask
from helpers import VENV_BIN, free_port, wait_for
from werkzeug.test import Client

from flask_asgi import ASGI
from flask_asgi.ground.counters import counters
from flask_asgi.ground.settings import SettingError
from flask_asgi.protocol.wsgi_entry import WsgiEntry, wsgi_blockers
from flask_asgi.serving import SERVERS, ServeOptions
from flask_asgi.serving.granian_server import BACKPRESSURE_HEADROOM, granian_server

pytest.importorskip("granian")

FACTORY = "flask_asgi.serving.granian_wsgi:worker_app"


def _sync_app() -> Flask:
    app = Flask(__name__)
    app.config.update(FLASK_ASGI_READY_PATH="/readyz", FLASK_ASGI_HEALTH_PATH="/livez")

    @app.get("/hello")
    def hello() -> str:
        return "hello"

    @app.get("/where")
    def where() -> dict[str, str]:
        from flask import request

        return {"script_root": request.script_root, "path": request.path}

    @app.get("/big")
    def big() -> Any:
        return app.response_class((b"x" * 1024 for _ in range(400)), mimetype="text/plain")

    ASGI(app)
    return app


def test_blockers_name_what_needs_asgi() -> None:
    app = _sync_app()
    assert wsgi_blockers(app) == []

    @app.get("/a")
    async def a() -> str:
        return "a"

    asgi = ASGI.of(app)

    @asgi.websocket("/ws")
    def ws() -> None:
        pass

    async def other(scope: Any, receive: Any, send: Any) -> None:
        pass

    asgi.mount("/other", other)
    found = " | ".join(wsgi_blockers(app))
    assert "the async view 'a'" in found and "WebSocket route '/ws'" in found, found
    assert "mounted ASGI apps (/other)" in found, found


def test_entry_answers_probes_root_path_and_limits() -> None:
    app = _sync_app()
    state = app.extensions["flask_asgi"]
    client = Client(WsgiEntry(app, "/prefix/"))
    ready = client.get("/readyz")
    assert (ready.status_code, ready.json) == (200, {"status": "ready"})
    assert client.get("/livez").json["status"] == "ok"
    assert client.get("/where").json == {"script_root": "/prefix", "path": "/where"}
    # A small response of known length is handed over whole; a streamed one is counted in
    # flight until the server closes it.
    entry = WsgiEntry(app)
    started: list[str] = []
    small = entry({**_environ("/hello")}, lambda status, headers, exc=None: started.append(status))
    assert small == [b"hello"] and started == ["200 OK"]
    assert state.sync_requests == 0
    big = entry(_environ("/big"), lambda status, headers, exc=None: None)
    assert not isinstance(big, list) and state.sync_requests == 1
    assert sum(len(chunk) for chunk in big) == 400 * 1024
    big.close()  # type: ignore[attr-defined]
    assert state.sync_requests == 0
    # FLASK_ASGI_MAX_REQUESTS: 503 with Retry-After past it.
    app.config["FLASK_ASGI_MAX_REQUESTS"] = 1
    refused = counters.refused_max_requests_total
    state.sync_requests += 1  # one in flight
    try:
        response = client.get("/hello")
    finally:
        state.sync_requests -= 1
    assert (response.status_code, response.headers["Retry-After"]) == (503, "1")
    assert counters.refused_max_requests_total == refused + 1
    assert client.get("/hello").status_code == 200


def _environ(path: str, **options: Any) -> dict[str, Any]:
    from werkzeug.test import EnvironBuilder

    return EnvironBuilder(path=path, **options).get_environ()


@pytest.mark.parametrize(("size", "status"), [(999, "200"), (1000, "200"), (1001, "413")])
def test_a_chunked_body_past_max_content_length_is_413(size: int, status: str) -> None:
    """As on the ASGI path; Werkzeug alone hands the view the first 1,000 bytes."""
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = 1000

    @app.post("/up")
    def up() -> str:
        from flask import request

        return str(len(request.get_data()))

    ASGI(app)
    environ = _environ("/up", method="POST", input_stream=io.BytesIO(b"x" * size))
    environ.pop("CONTENT_LENGTH", None)
    environ.update({"HTTP_TRANSFER_ENCODING": "chunked", "wsgi.input_terminated": True})
    seen: list[str] = []
    body = b"".join(WsgiEntry(app)(environ, lambda s, h, e=None: seen.append(s)))
    assert seen[0][:3] == status
    if status == "200":
        assert body == str(size).encode()


def test_granian_gets_the_wsgi_interface_and_the_apps_threads() -> None:
    options = ServeOptions("127.0.0.1", 1, threads=24, max_waiting=100, interface="wsgi")
    server = granian_server(FACTORY, options, wsgi=True)
    assert (server.interface.value, server.blocking_threads) == ("wsgi", 24)
    assert server.backpressure == 124  # the threads and those that may wait for one
    unbounded = ServeOptions("127.0.0.1", 1, threads=8, max_waiting=0, interface="wsgi")
    assert granian_server(FACTORY, unbounded, wsgi=True).backpressure == 8 + BACKPRESSURE_HEADROOM
    assert SERVERS["granian"].wsgi_module is not None
    assert SERVERS["uvicorn"].wsgi_module is None


def test_interface_setting_is_checked() -> None:
    app = Flask(__name__)
    app.config["FLASK_ASGI_INTERFACE"] = "rsgi"
    with pytest.raises(SettingError, match="FLASK_ASGI_INTERFACE"):
        ASGI(app)


APP = """
import os, time
from flask import Flask
import flask_asgi

app = Flask(__name__)
asgi = flask_asgi.ASGI(app)

def mark(line):
    with open(os.environ["MARKER"], "a") as f:
        f.write(line + "\\n")

@asgi.before_serving
def started():
    mark("started")

@asgi.after_serving
async def stopped():
    mark("stopped")

@app.get("/slow")
def slow():
    mark("slow-started")
    time.sleep(1.5)
    mark("slow-finished")
    return "finished"

@app.get("/pid")
def pid():
    return str(os.getpid())
"""


def _serve(tmp_path: Path, port: int, *extra: str, app: str = "wsgi_app") -> Any:
    env = dict(os.environ, MARKER=str(tmp_path / "marker"))
    return subprocess.Popen(
        [str(VENV_BIN / "flask"), "--app", app, "serve", "--server", "granian",
         "--port", str(port), "--log-level", "warning", *extra],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def test_served_for_real_with_hooks_and_a_graceful_stop(tmp_path: Path) -> None:
    (tmp_path / "wsgi_app.py").write_text(APP)
    marker = tmp_path / "marker"
    marker.write_text("")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = _serve(tmp_path, port, "--interface", "wsgi", "--timeout-graceful-shutdown", "20")
    try:

        def up() -> bool:
            try:
                return httpx.get(base + "/pid", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        assert wait_for(up, 60), proc.stdout.read() if proc.poll() is not None else ""
        assert marker.read_text().split() == ["started"]  # before the first request
        result: dict[str, Any] = {}

        def slow() -> None:
            response = httpx.get(base + "/slow", timeout=30)
            result["answer"] = (response.status_code, response.text)

        thread = threading.Thread(target=slow)
        thread.start()
        assert wait_for(lambda: "slow-started" in marker.read_text(), 30)
        proc.send_signal(signal.SIGTERM)
        thread.join(30)
        assert result.get("answer") == (200, "finished")
        assert proc.wait(30) == 0
        assert marker.read_text().split() == ["started", "slow-started", "slow-finished", "stopped"]
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_an_app_that_needs_asgi_is_refused_at_startup(tmp_path: Path) -> None:
    (tmp_path / "mixed_app.py").write_text(
        APP + "\n@app.get('/a')\nasync def a():\n    return 'a'\n"
    )
    proc = _serve(tmp_path, free_port(), "--interface", "wsgi", app="mixed_app")
    output = proc.communicate(timeout=60)[0]
    assert proc.returncode == 2, output
    assert "the async view 'a'" in output, output
    # Another server has no WSGI interface flask-asgi serves through.
    (tmp_path / "wsgi_app.py").write_text(APP)
    proc = subprocess.run(
        [str(VENV_BIN / "flask"), "--app", "wsgi_app", "serve", "--server", "uvicorn",
         "--port", str(free_port())],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env=dict(os.environ, FLASK_ASGI_INTERFACE="wsgi"),
    )  # fmt: skip
    assert proc.returncode == 2 and "use --server granian" in proc.stderr, proc.stderr
