"""``flask serve --server granian|hypercorn``: each option reaches the server, for real."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import VENV_BIN, free_port, wait_for

from flask_asgi.ground.settings import DEFAULTS
from flask_asgi.serving import SERVERS, ServeOptions, serve_options
from flask_asgi.serving.granian_server import granian_server, header_read_timeout_ms
from flask_asgi.serving.hypercorn_server import hypercorn_config
from flask_asgi.serving.options import MAX_HEAD_BYTES, WEBSOCKET_QUEUE
from flask_asgi.serving.uvicorn_limits import HeadLimitedHttpTools
from flask_asgi.serving.uvicorn_server import _settings

TESTS = Path(__file__).resolve().parent
FACTORY = "flask_asgi.cli:app_factory"
OTHERS = ["granian", "hypercorn"]
HEADER_TIMEOUT = float(DEFAULTS["FLASK_ASGI_HEADER_TIMEOUT"])


def test_granian_gets_every_option() -> None:
    options = ServeOptions("0.0.0.0", 1234, 3, False, "trace", "/p", 2.5)
    server = granian_server(FACTORY, options)
    assert (server.target, server.factory, server.interface.value) == (FACTORY, True, "asgi")
    assert (server.bind_addr, server.bind_port, server.workers) == ("0.0.0.0", 1234, 3)
    # --root-path is applied by the app (UnderRootPath), as uvicorn applies it.
    assert (server.reload_on_changes, server.url_path_prefix) == (False, None)
    assert server.http1_settings.max_buffer_size == MAX_HEAD_BYTES
    assert server.http2_settings.max_headers_size == MAX_HEAD_BYTES
    assert server.log_level.value == "debug"  # granian has no "trace"
    assert server.workers_kill_timeout == 3  # whole seconds, rounded up
    assert server.http1_settings.header_read_timeout == HEADER_TIMEOUT * 1000
    assert granian_server(FACTORY, ServeOptions("::1", 1, reload=True)).reload_on_changes
    assert server.loop.value == "auto"
    assert granian_server(FACTORY, ServeOptions("::1", 1, loop="asyncio")).loop.value == "asyncio"


def test_granian_header_timeout_is_the_apps() -> None:
    """FLASK_ASGI_HEADER_TIMEOUT reaches granian in milliseconds; granian has no "never"
    and takes 1 to 60,000 ms, so 0 and longer timeouts become 60 s."""
    options = ServeOptions("127.0.0.1", 1, header_timeout=2.5)
    assert granian_server(FACTORY, options).http1_settings.header_read_timeout == 2500
    timeouts = [header_read_timeout_ms(s) for s in (0, 0.0001, 60, 3600)]
    assert timeouts == [60_000, 1, 60_000, 60_000]


def test_serve_options_take_the_apps_settings_unless_chosen() -> None:
    config = dict(
        DEFAULTS,
        FLASK_ASGI_SHUTDOWN_TIMEOUT=7.0,
        FLASK_ASGI_HEADER_TIMEOUT=3.0,
        FLASK_ASGI_DRAIN_DELAY=1.5,
        FLASK_ASGI_WEBSOCKET_MAX_MESSAGE=4096,
    )
    options = serve_options(config, "::1", 80, workers=2, timeout_graceful_shutdown=None)
    assert options.websocket_max_message == 4096
    assert (options.timeout_graceful_shutdown, options.header_timeout) == (7.0, 3.0)
    assert (options.drain_delay, options.workers, options.one_process) == (1.5, 2, False)
    chosen = serve_options(config, "::1", 80, timeout_graceful_shutdown=20.0)
    assert (chosen.timeout_graceful_shutdown, chosen.one_process) == (20.0, True)


def test_uvicorn_gets_the_limits() -> None:
    """The head limit (h11's own, and HeadLimitedHttpTools' where uvicorn would use
    httptools) and FLASK_ASGI_WEBSOCKET_MAX_MESSAGE as ws_max_size; uvicorn's own
    keywords, passed to ASGI.run, win; 0 leaves uvicorn's WebSocket limit alone."""
    settings = _settings(ServeOptions("127.0.0.1", 1), {})
    assert settings["http"] is HeadLimitedHttpTools
    assert settings["h11_max_incomplete_event_size"] == MAX_HEAD_BYTES
    assert (settings["ws_max_size"], settings["ws_max_queue"]) == (1024 * 1024, WEBSOCKET_QUEUE)
    passed = {"http": "h11", "h11_max_incomplete_event_size": 10, "ws_max_size": 5}
    settings = _settings(ServeOptions("127.0.0.1", 1), passed)
    assert (settings["http"], settings["h11_max_incomplete_event_size"]) == ("h11", 10)
    assert settings["ws_max_size"] == 5
    settings = _settings(ServeOptions("127.0.0.1", 1, websocket_max_message=0), {})
    assert "ws_max_size" not in settings and "ws_max_queue" not in settings


def test_registry_has_every_server_and_loads_none_on_import() -> None:
    assert list(SERVERS) == ["uvicorn", "granian", "hypercorn"]
    assert [name for name, server in SERVERS.items() if server.in_process] == ["uvicorn"]
    for server in SERVERS.values():
        assert callable(server.load().run)
    with pytest.raises(ValueError, match="granian cannot serve an app object"):
        SERVERS["granian"].load_in_process()
    # import flask_asgi loads no server library (and does not touch uvicorn's logger).
    code = (
        "import sys, logging, flask_asgi, flask_asgi.cli\n"
        "loaded = [m for m in ('uvicorn', 'granian', 'hypercorn') if m in sys.modules]\n"
        "assert loaded == [], loaded\n"
        "assert not logging.getLogger('uvicorn.error').filters\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_hypercorn_gets_every_option() -> None:
    config = hypercorn_config(FACTORY, ServeOptions("::1", 1234, 1, False, "warning", "/p/", 2.5))
    assert (config.bind, config.application_path) == (["[::1]:1234"], FACTORY + "()")
    assert (config.workers, config.use_reloader) == (0, False)  # served in the same process
    assert (config.root_path, config.graceful_timeout, config.loglevel) == ("", 2.5, "WARNING")
    assert config.h11_max_incomplete_size == config.h2_max_header_list_size == MAX_HEAD_BYTES
    assert config.websocket_max_message_size == DEFAULTS["FLASK_ASGI_WEBSOCKET_MAX_MESSAGE"]
    config = hypercorn_config(FACTORY, ServeOptions("127.0.0.1", 1, 3, True, "trace"))
    assert (config.workers, config.use_reloader, config.loglevel) == (3, True, "DEBUG")
    assert config.worker_class == "asyncio"  # "auto": hypercorn's default
    assert hypercorn_config(FACTORY, ServeOptions("::1", 1, loop="uvloop")).worker_class == "uvloop"


def _serve(server: str, port: int, *extra: str, marker: Path | None = None, **env_vars: str) -> Any:
    env = dict(os.environ, MATRIX_MARKER=str(marker or ""), **env_vars)
    return subprocess.Popen(
        [str(VENV_BIN / "flask"), "--app", "server_matrix_app", "serve", "--server", server,
         "--port", str(port), "--log-level", "warning", *extra],
        cwd=TESTS, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def _wait_ready(proc: Any, base: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        try:
            httpx.get(base + "/ready", timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"not ready:\n{proc.communicate()[0]}")


@pytest.mark.parametrize("server", ["uvicorn", *OTHERS])
def test_workers_and_root_path(server: str) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = _serve(server, port, "--workers", "2", "--root-path", "/prefix")
    try:
        _wait_ready(proc, base)
        pids: set[int] = set()

        def info(_: int) -> dict[str, Any]:  # a new connection each time
            return httpx.get(base + "/info?s=0.2", timeout=30).json()  # type: ignore[no-any-return]

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            for _ in range(10):  # the two workers share the socket: both end up accepting
                answers = list(pool.map(info, range(16)))
                pids |= {answer["pid"] for answer in answers}
                if len(pids) == 2:
                    break
        assert len(pids) == 2, pids
        assert {(a["script_root"], a["path"]) for a in answers} == {("/prefix", "/info")}
    finally:
        proc.terminate()
        output = proc.communicate(timeout=30)[0]
    warned = "does not let in-flight requests finish on SIGTERM" in output
    assert warned is (server == "hypercorn"), output


@pytest.mark.parametrize("server", ["uvicorn", *OTHERS])
@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_loop_is_the_one_asked_for(server: str, loop: str) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = _serve(server, port, "--loop", loop)
    try:
        _wait_ready(proc, base)
        running = httpx.get(base + "/info", timeout=10).json()["loop"]
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    assert running == ("uvloop" if loop == "uvloop" else "asyncio.unix_events"), running


# hypercorn 0.18 drains on SIGTERM with one worker only: with several, its supervisor
# terminates the remaining workers as soon as the first has exited (docs/deployment.md).
@pytest.mark.parametrize(
    ("server", "workers"), [("uvicorn", "2"), ("granian", "2"), ("hypercorn", "1")]
)
def test_sigterm_waits_for_the_request_in_flight(server: str, workers: str, tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    marker = tmp_path / "marker"
    proc = _serve(
        server, port, "--workers", workers, "--timeout-graceful-shutdown", "20", marker=marker
    )
    try:
        _wait_ready(proc, base)
        result: dict[str, Any] = {}

        def slow() -> None:
            response = httpx.get(base + "/slow?s=2", timeout=30)
            result["answer"] = (response.status_code, response.text)

        thread = threading.Thread(target=slow)
        thread.start()
        assert wait_for(lambda: "slow-started" in marker.read_text(), 30)  # in flight
        # Every process up (one may still be starting when the first answers).
        assert wait_for(lambda: marker.read_text().split().count("started") == int(workers), 30)
        proc.send_signal(signal.SIGTERM)
        thread.join(30)
        assert result.get("answer") == (200, "finished")
        assert proc.wait(30) == 0
        marks = marker.read_text().split()  # each worker ran its lifespan, both ways
        assert marks.count("started") == marks.count("stopped") == int(workers), marks
        assert marks[-1] == "stopped" and "slow-finished" in marks
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_uvicorn_workers_replace_a_dead_process() -> None:
    """flask serve --workers 2: a process killed while serving is replaced, and the new one
    serves on the same socket; SIGTERM then stops both (status 0)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = _serve("uvicorn", port, "--workers", "2")
    try:
        _wait_ready(proc, base)
        victim = httpx.get(base + "/info", timeout=10).json()["pid"]
        os.kill(victim, signal.SIGKILL)
        seen: set[int] = set()
        deadline = time.monotonic() + 30
        while len(seen) < 2 and time.monotonic() < deadline:  # the survivor and the new one
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                answers = pool.map(lambda _: httpx.get(base + "/info?s=0.1", timeout=10), range(8))
                seen |= {answer.json()["pid"] for answer in answers}
        assert victim not in seen and len(seen) == 2, (victim, seen)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        output = proc.communicate()[0]
    assert f"Child process [{victim}] died" in output, output


@pytest.mark.parametrize(
    ("server", "drops_after", "setting"),
    [("granian", HEADER_TIMEOUT, None), ("granian", 3.0, "3"), ("hypercorn", 5.0, None)],
)
def test_slow_header_client_is_dropped(
    server: str, drops_after: float, setting: str | None
) -> None:
    """A client dripping one header line a second never completes its request head: the
    server drops it after its header timeout (granian: the app's FLASK_ASGI_HEADER_TIMEOUT),
    instead of holding the connection forever."""
    port = free_port()
    env = {} if setting is None else {"FLASK_ASGI_HEADER_TIMEOUT": setting}
    proc = _serve(server, port, **env)
    try:
        _wait_ready(proc, f"http://127.0.0.1:{port}")
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.settimeout(1)
            sock.sendall(b"GET /ready HTTP/1.1\r\nHost: test\r\n")
            start = time.monotonic()
            closed_after = None
            for n in range(int(drops_after * 4)):
                try:
                    sock.sendall(b"X-Drip-%d: y\r\n" % n)
                    if sock.recv(100) == b"":
                        closed_after = time.monotonic() - start
                        break
                except TimeoutError:
                    continue
                except OSError:
                    closed_after = time.monotonic() - start
                    break
        assert closed_after is not None, "still open"
        assert drops_after - 1 <= closed_after <= drops_after * 3
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


@pytest.mark.parametrize(
    ("server", "workers", "status"),
    [("granian", "1", 1), ("hypercorn", "1", 3), ("uvicorn", "2", 3)],
)
def test_failing_startup_exits_nonzero(
    server: str, workers: str, status: int, tmp_path: Path
) -> None:
    """A failing startup hook ends flask serve (uvicorn --workers 2: the supervisor stops
    instead of restarting processes that would fail the same way)."""
    (tmp_path / "broken_app.py").write_text(
        "from flask import Flask\nimport flask_asgi\n"
        "app = Flask(__name__)\nasgi = flask_asgi.ASGI(app)\n"
        "@asgi.before_serving\nasync def boom():\n    raise RuntimeError('startup boom')\n"
    )
    proc = subprocess.run(
        [str(VENV_BIN / "flask"), "--app", "broken_app", "serve", "--server", server,
         "--port", str(free_port()), "--workers", workers],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == status, proc.stdout + proc.stderr
    assert "startup boom" in proc.stdout + proc.stderr


def test_gunicorn_worker_stops_gunicorn_when_startup_fails(tmp_path: Path) -> None:
    """gunicorn -k flask_asgi.gunicorn.Worker: a failing startup hook stops gunicorn
    (status 3, "Worker failed to boot") instead of a worker restarted again and again; a
    --graceful-timeout shorter than the drain is warned about."""
    (tmp_path / "broken_app.py").write_text(
        "from flask import Flask\nimport flask_asgi\n"
        "app = Flask(__name__)\nasgi = flask_asgi.ASGI(app)\n"
        "@asgi.before_serving\nasync def boom():\n    raise RuntimeError('startup boom')\n"
    )
    proc = subprocess.run(
        [str(VENV_BIN / "gunicorn"), "broken_app:asgi", "-k", "flask_asgi.gunicorn.Worker",
         "-b", f"127.0.0.1:{free_port()}", "--graceful-timeout", "5"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode == 3, output  # gunicorn's "Worker failed to boot"
    assert "startup boom" in output
    assert "--graceful-timeout (5s) is shorter than" in output


@pytest.mark.parametrize("server", OTHERS)
def test_missing_server_names_the_extra(server: str) -> None:
    script = (
        f"import sys; sys.modules[{server!r}] = None\n"  # as if it were not installed
        "from flask.cli import main\n"
        f"sys.argv = ['flask', '--app', 'server_matrix_app', 'serve', '--server', {server!r}]\n"
        "main()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=TESTS, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr  # click's usage error
    assert f"flask-asgi's [{server}] extra" in proc.stderr
