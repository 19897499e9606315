"""``asgi.stats()`` counts what a real server is doing; the Prometheus endpoint serves it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from flask import Flask
from helpers import wait_async, wait_for

import flask_asgi


@pytest.fixture
def held(app: Flask) -> dict[str, Any]:
    """Views that wait until the test releases them."""
    app.config["FLASK_ASGI_THREADS"] = 2
    release = threading.Event()

    @app.get("/sync-wait")
    def sync_wait() -> str:
        release.wait(20)
        return "sync"

    @app.get("/async-wait")
    async def async_wait() -> str:
        await wait_async(release, 20)
        return "async"

    @app.get("/events")
    async def events() -> Any:
        async def source() -> Any:
            yield "hello"
            await wait_async(release, 20)

        return flask_asgi.event_stream(source(), keepalive=None)

    @app.get("/job")
    async def job() -> str:
        async def work() -> None:
            await wait_async(release, 20)

        flask_asgi.add_background_task(work)
        return "queued"

    return {"release": release}


def test_stats_count_requests_workers_connections_and_tasks(
    app: Flask, held: dict[str, Any], live_server: Any
) -> None:
    asgi = flask_asgi.ASGI(app)
    base = live_server(asgi)
    release: threading.Event = held["release"]
    assert asgi.stats()["workers"] == 2
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        replies = [pool.submit(httpx.get, base + "/sync-wait", timeout=30) for _ in range(4)]
        replies += [pool.submit(httpx.get, base + "/async-wait", timeout=30) for _ in range(3)]
        assert httpx.get(base + "/job", timeout=10).text == "queued"

        async def while_streaming() -> dict[str, Any]:
            async with httpx.AsyncClient(timeout=30) as client:
                async with client.stream("GET", base + "/events") as stream:
                    lines = stream.aiter_lines()  # kept: closing it would close the stream
                    assert await anext(lines) == "data: hello"
                    deadline = time.monotonic() + 10
                    while time.monotonic() < deadline:
                        now = asgi.stats()
                        # loop_lag counts the watchdog's heartbeats, one per threshold / 10
                        # (50 ms): a fast run (warm, 3.14) gets here before the first one.
                        beats = now["loop_lag"]["count"]
                        if now["sync_requests"] == 4 and now["async_requests"] == 4 and beats:
                            break
                        await asyncio.sleep(0.02)
                    return asgi.stats()

        busy = asyncio.run(while_streaming())
        assert busy["sync_requests"] == 4
        assert busy["async_requests"] == 3 + 1  # three waiting, and the open event stream
        assert (busy["workers_busy"], busy["workers_waiting"]) == (2, 2)
        assert busy["sse_streams"] == 1
        assert busy["background_tasks"] == 1
        assert busy["watchdog"] is True and busy["loop_lag"]["count"] > 0
        release.set()
        assert [r.result().status_code for r in replies] == [200] * 7
    assert wait_for(lambda: asgi.stats()["background_tasks"] == 0)
    idle = asgi.stats()
    for key in ("sync_requests", "async_requests", "workers_busy", "workers_waiting"):
        assert idle[key] == 0, key
    assert idle["sse_streams"] == 0 and idle["websockets"] == 0


def test_open_websockets_are_counted(app: Flask, live_server: Any) -> None:
    asgi = flask_asgi.ASGI(app)

    @asgi.websocket("/ws")
    async def echo() -> None:
        await flask_asgi.websocket.accept()
        async for message in flask_asgi.websocket:
            await flask_asgi.websocket.send(message)

    ws_url = live_server(asgi).replace("http", "ws")

    async def talk() -> int:
        async with websockets.connect(ws_url + "/ws") as one, websockets.connect(ws_url + "/ws"):
            await one.send("ping")
            assert await one.recv() == "ping"
            return int(asgi.stats()["websockets"])

    assert asyncio.run(talk()) == 2
    assert wait_for(lambda: asgi.stats()["websockets"] == 0)


def test_prometheus_endpoint_is_answered_before_the_app(app: Flask, live_server: Any) -> None:
    app.config["FLASK_ASGI_METRICS_PATH"] = "/metrics"
    seen: list[str] = []
    app.before_request(lambda: seen.append("flask"))  # type: ignore[func-returns-value]
    asgi = flask_asgi.ASGI(app)
    base = live_server(asgi)
    reply = httpx.get(base + "/metrics", timeout=10)
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain; version=")
    text = reply.text
    assert 'flask_asgi_requests_in_flight{kind="async"} 0.0' in text
    assert 'flask_asgi_workers{state="busy"} 0.0' in text
    assert "flask_asgi_loop_stalls_total 0.0" in text
    assert 'flask_asgi_loop_lag_seconds_bucket{le="+Inf"}' in text
    assert "process_cpu_seconds_total" in text  # prometheus_client's default registry too
    assert seen == []


def test_metrics_path_without_prometheus_client_fails_startup_clearly(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    app.config["FLASK_ASGI_METRICS_PATH"] = "/metrics"
    asgi = flask_asgi.ASGI(app)
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # as if not installed
    with pytest.raises(RuntimeError, match="or pip install prometheus-client"):
        with asgi.serving():
            pass


MULTI_APP = """
import time
from pathlib import Path

from flask import Flask

app = Flask(__name__)
app.config["FLASK_ASGI_METRICS_PATH"] = "/metrics"
RELEASE = Path(__file__).parent / "release"


@app.get("/hold")
def hold():
    while not RELEASE.exists():
        time.sleep(0.02)
    return "held"
"""


def test_prometheus_multiprocess_mode_sums_the_workers(
    tmp_path: Path, cli_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "multi_app.py").write_text(textwrap.dedent(MULTI_APP).lstrip())
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(metrics_dir))
    server = cli_server("multi_app.py", cwd=tmp_path, extra=["--workers", "2"])
    clients = [httpx.Client(timeout=30) for _ in range(6)]  # six connections, spread over both
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        held = [pool.submit(c.get, server.base_url + "/hold") for c in clients]

        def in_flight() -> float:
            text = httpx.get(server.base_url + "/metrics", timeout=10).text
            line = next(
                x
                for x in text.splitlines()
                if x.startswith('flask_asgi_requests_in_flight{kind="sync"')
            )
            return float(line.rsplit(" ", 1)[1])

        # Every scrape, whichever process answers it, sees the six requests of both.
        assert wait_for(lambda: in_flight() == 6, timeout=15)
        assert all(in_flight() == 6 for _ in range(8))
        pids = {p.name.split("_")[-1] for p in metrics_dir.glob("gauge_livesum_*.db")}
        assert len(pids) == 2  # both worker processes wrote their counts
        (tmp_path / "release").write_text("go")
        assert [r.result().text for r in held] == ["held"] * 6
    for client in clients:
        client.close()
