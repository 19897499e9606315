"""The loop watchdog names the code that blocks the event loop, and stays quiet otherwise."""

from __future__ import annotations

import asyncio
import inspect
import logging
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from flask import Flask
from helpers import wait_for

import flask_asgi
from flask_asgi.ground.app_state import app_state


def blocking_helper() -> None:
    time.sleep(0.6)  # the line the watchdog must name


HELPER_LINE = inspect.getsourcelines(blocking_helper)[1] + 1


def watchdog_records(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "flask_asgi" and "loop" in r.getMessage()
    ]


@pytest.fixture
def blocking_app(app: Flask) -> Flask:
    @app.get("/slow")
    async def slow() -> str:
        blocking_helper()
        return "slow"

    @app.get("/sync-slow")
    def sync_slow() -> str:
        time.sleep(0.6)  # in a worker thread: the loop keeps running
        return "sync"

    @app.get("/quick")
    async def quick() -> str:
        await asyncio.sleep(0)
        sum(range(2000))  # a little CPU on the loop, as a real view has
        return "quick"

    return app


def test_blocking_call_is_named_with_its_line_and_request(
    blocking_app: Flask, asgi: flask_asgi.ASGI, live_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="flask_asgi")
    base = live_server(asgi)
    assert httpx.get(base + "/slow", timeout=10).text == "slow"
    assert wait_for(lambda: len(watchdog_records(caplog)) >= 2, timeout=5), watchdog_records(caplog)
    warning, ended = watchdog_records(caplog)[:2]
    assert "serving GET /slow (endpoint 'slow')" in warning
    # The view's frame, then the helper's line: the blocking call last.
    lines = warning.splitlines()
    assert lines[-1].strip() == f"blocking_helper at {__file__}:{HELPER_LINE}", warning
    assert lines[-2].strip().startswith(f"slow at {__file__}:"), warning
    assert "flask_asgi" not in warning.split(";", 1)[1]  # no flask-asgi / Flask frames
    assert "/flask/" not in warning and "werkzeug" not in warning
    assert "stall 1 ended: the event loop did not come round for" in ended
    assert "serving GET /slow" in ended
    blocked = float(ended.split("for ")[1].split(" s")[0])
    assert 0.55 <= blocked < 3, ended
    assert app_state(blocking_app).stalls == 1


def test_repeats_from_one_site_are_counted_but_logged_once(
    blocking_app: Flask, asgi: flask_asgi.ASGI, live_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="flask_asgi")
    base = live_server(asgi)
    for _ in range(3):
        assert httpx.get(base + "/slow", timeout=10).status_code == 200
    state = app_state(blocking_app)
    assert wait_for(lambda: state.stalls == 3, timeout=5), state.stalls
    warnings = [m for m in watchdog_records(caplog) if "has been blocked" in m]
    assert len(warnings) == 1, warnings


def test_sync_view_sleeping_in_a_worker_is_not_reported(
    blocking_app: Flask, asgi: flask_asgi.ASGI, live_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="flask_asgi")
    base = live_server(asgi)
    with httpx.Client(base_url=base, timeout=10) as client:
        for _ in range(3):
            assert client.get("/sync-slow").text == "sync"
    state = app_state(blocking_app)
    assert state.heartbeat > 0  # the watchdog was running all along
    assert sum(state.lag_counts) > 10
    assert state.stalls == 0
    assert watchdog_records(caplog) == []


def test_many_short_requests_keeping_the_loop_busy_are_not_reported(
    blocking_app: Flask, asgi: flask_asgi.ASGI, live_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="flask_asgi")
    base = live_server(asgi)

    async def hammer() -> int:
        limits = httpx.Limits(max_connections=50)
        async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
            ok = 0
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                replies = await asyncio.gather(*(client.get("/quick") for _ in range(50)))
                ok += sum(r.text == "quick" for r in replies)
            return ok

    served = asyncio.run(hammer())
    assert served >= 200
    state = app_state(blocking_app)
    assert sum(state.lag_counts) > 10  # heartbeats ran in between the requests
    assert state.stalls == 0
    assert watchdog_records(caplog) == []


def test_threshold_zero_turns_the_watchdog_off(
    blocking_app: Flask, asgi: flask_asgi.ASGI, live_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    blocking_app.config["FLASK_ASGI_BLOCKING_THRESHOLD"] = 0
    caplog.set_level(logging.WARNING, logger="flask_asgi")
    base = live_server(asgi)
    assert "flask-asgi-watchdog" not in {t.name for t in threading.enumerate()}
    assert httpx.get(base + "/slow", timeout=10).text == "slow"
    time.sleep(0.2)
    assert watchdog_records(caplog) == []
    assert app_state(blocking_app).heartbeat == 0


def test_watchdog_thread_stops_with_the_server(
    blocking_app: Flask, asgi: flask_asgi.ASGI, live_server: Any
) -> None:
    from helpers import run_live

    with run_live(asgi):
        assert "flask-asgi-watchdog" in {t.name for t in threading.enumerate()}
    assert wait_for(lambda: "flask-asgi-watchdog" not in {t.name for t in threading.enumerate()})


CLI_APP = """
import time

from flask import Flask

app = Flask(__name__)


def helper():
    time.sleep(0.6)


@app.get("/slow")
async def slow():
    helper()
    return "slow"
"""


def test_flask_serve_names_the_blocking_line(tmp_path: Path, cli_server: Any) -> None:
    """Default settings, a real `flask serve` process: the warning comes within a second."""
    source = textwrap.dedent(CLI_APP).lstrip()
    (tmp_path / "blocking_app.py").write_text(source)
    line = source.splitlines().index("    time.sleep(0.6)") + 1
    server = cli_server("blocking_app.py", cwd=tmp_path)
    started = time.monotonic()
    assert httpx.get(server.base_url + "/slow", timeout=10).text == "slow"
    assert time.monotonic() - started < 5
    output = server.output()
    warning = output.split("flask-asgi: the event loop has been blocked for ")[1]
    assert "serving GET /slow (endpoint 'slow')" in warning.splitlines()[0]
    assert f"helper at {tmp_path / 'blocking_app.py'}:{line}" in warning
    assert "stall 1 ended: the event loop did not come round for" in output


def test_a_failed_startup_stops_the_watchdog(app: Flask, asgi: flask_asgi.ASGI) -> None:
    @asgi.before_serving
    def broken() -> None:
        raise LookupError("no database")

    with pytest.raises(RuntimeError, match="no database"):
        with asgi.serving():
            pass
    assert wait_for(lambda: "flask-asgi-watchdog" not in {t.name for t in threading.enumerate()})
    assert app_state(app).heartbeat == 0
    assert not app_state(app).ready


def test_a_blocking_websocket_handler_and_a_blocking_task_are_named(
    app: Flask, asgi: flask_asgi.ASGI, live_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    import websockets

    caplog.set_level(logging.WARNING, logger="flask_asgi")

    @asgi.websocket("/ws/<room>")
    async def room(room: str) -> None:
        await flask_asgi.websocket.accept()
        blocking_helper()
        await flask_asgi.websocket.send("done")

    @app.get("/spawn")
    async def spawn() -> str:
        async def job() -> None:
            await asyncio.sleep(0)
            time.sleep(0.6)  # a task of the app's own, outside any request

        app.extensions["job"] = asyncio.get_running_loop().create_task(job(), name="price-sync")
        return "spawned"

    base = live_server(asgi)

    async def talk() -> str:
        async with websockets.connect(base.replace("http", "ws") + "/ws/blue") as ws:
            return str(await ws.recv())

    assert asyncio.run(talk()) == "done"
    assert wait_for(lambda: len(watchdog_records(caplog)) >= 2, timeout=5)
    warning = watchdog_records(caplog)[0]
    assert "serving WebSocket /ws/blue (endpoint 'room')" in warning
    assert warning.splitlines()[-1].strip() == f"blocking_helper at {__file__}:{HELPER_LINE}"
    assert httpx.get(base + "/spawn", timeout=10).text == "spawned"
    assert wait_for(lambda: len(watchdog_records(caplog)) >= 4, timeout=5)
    task_warning = watchdog_records(caplog)[2]
    assert "(stall 2) in task 'price-sync'; application frames" in task_warning
    assert task_warning.splitlines()[-1].strip().startswith(f"job at {__file__}:")
