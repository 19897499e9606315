"""Health and readiness probes: answered before the Flask app, off by default."""

from __future__ import annotations

from typing import Any

import httpx
from flask import Flask
from helpers import http_scope

import flask_asgi
from flask_asgi.ground.app_state import app_state


async def call(asgi: flask_asgi.ASGI, path: str, method: str = "GET") -> tuple[int, bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await asgi(http_scope(path, method), receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def probed_app(app: Flask) -> tuple[flask_asgi.ASGI, list[str]]:
    app.config["FLASK_ASGI_HEALTH_PATH"] = "/healthz"
    app.config["FLASK_ASGI_READY_PATH"] = "/readyz"
    seen: list[str] = []

    @app.before_request
    def count() -> None:
        seen.append("flask")

    @app.get("/")
    async def index() -> str:
        return "index"

    return flask_asgi.ASGI(app), seen


def test_probes_answer_on_a_real_server_without_reaching_flask(
    app: Flask, live_server: Any
) -> None:
    asgi, seen = probed_app(app)
    base = live_server(asgi)
    with httpx.Client(base_url=base, timeout=10) as client:
        health = client.get("/healthz")
        assert health.status_code == 200
        assert health.headers["content-type"] == "application/json"
        assert health.json()["status"] == "ok"
        assert health.json()["watchdog"] is True  # the heartbeat runs under the server
        ready = client.get("/readyz")
        assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
        assert client.head("/readyz").content == b""
        assert seen == []  # no Flask request for a probe
        assert client.get("/").text == "index"
        assert seen == ["flask"]


async def test_probes_are_off_by_default(app: Flask, asgi: flask_asgi.ASGI) -> None:
    @app.get("/")
    async def index() -> str:
        return "index"

    assert (await call(asgi, "/healthz"))[0] == 404
    assert (await call(asgi, "/"))[0] == 200


async def test_readiness_follows_the_lifespan(app: Flask) -> None:
    asgi, _ = probed_app(app)
    during: dict[str, Any] = {}

    @asgi.before_serving
    async def starting() -> None:
        during["startup"] = await call(asgi, "/readyz")

    @asgi.after_serving
    async def stopping() -> None:
        during["shutdown"] = await call(asgi, "/readyz")

    async with asgi.serving():
        assert await call(asgi, "/readyz") == (200, b'{"status": "ready"}')
        asgi.lifecycle.draining()  # a drain before the shutdown (flask serve's SIGTERM)
        assert await call(asgi, "/readyz") == (503, b'{"status": "draining"}')
        asgi.lifecycle.started()
    assert during["startup"] == (503, b'{"status": "starting"}')
    assert during["shutdown"] == (503, b'{"status": "stopping"}')
    assert (await call(asgi, "/readyz"))[0] == 503
    # Liveness does not depend on the lifespan: the loop answers.
    assert (await call(asgi, "/healthz"))[0] == 200


async def test_without_a_lifespan_the_app_is_ready(app: Flask) -> None:
    asgi, _ = probed_app(app)  # a server started with --lifespan off sends none
    assert await call(asgi, "/readyz") == (200, b'{"status": "ready"}')
    status, body = await call(asgi, "/healthz")
    assert status == 200 and b'"watchdog": false' in body


async def test_liveness_fails_when_the_heartbeat_is_starved(app: Flask) -> None:
    asgi, _ = probed_app(app)
    async with asgi.serving():
        state = app_state(app)
        assert (await call(asgi, "/healthz"))[0] == 200
        state.heartbeat -= 5.0  # as if the loop's timers had not run for 5 s
        status, body = await call(asgi, "/healthz")
        assert status == 503 and b'"status": "stalled"' in body


def _prometheus_ready(text: bytes) -> float:
    for line in text.decode().splitlines():
        if line.startswith("flask_asgi_ready "):
            return float(line.split()[1])
    raise AssertionError(f"no flask_asgi_ready in {text!r}")


async def _answers(asgi: flask_asgi.ASGI) -> tuple[bool, bool, bool, str]:
    """(probe, stats, Prometheus) readiness, and the phase, at this instant."""
    probe = (await call(asgi, "/readyz"))[0] == 200
    metrics = (await call(asgi, "/metrics"))[1]
    return probe, asgi.stats()["ready"], _prometheus_ready(metrics) == 1.0, asgi.lifecycle.phase


async def test_readiness_agrees_across_probe_stats_and_prometheus_in_every_phase(
    app: Flask,
) -> None:
    app.config["FLASK_ASGI_METRICS_PATH"] = "/metrics"
    asgi, _ = probed_app(app)
    seen: list[tuple[bool, bool, bool, str]] = [await _answers(asgi)]  # idle: no lifespan

    @asgi.before_serving
    async def starting() -> None:
        seen.append(await _answers(asgi))

    @asgi.after_serving
    async def stopping() -> None:
        seen.append(await _answers(asgi))

    async with asgi.serving():
        seen.append(await _answers(asgi))
        asgi.lifecycle.draining()
        seen.append(await _answers(asgi))
    seen.append(await _answers(asgi))

    @asgi.before_serving
    def broken() -> None:
        raise RuntimeError("no database")

    try:
        async with asgi.serving():
            pass
    except Exception:
        pass
    seen.append(await _answers(asgi))
    assert seen == [
        (True, True, True, "idle"),
        (False, False, False, "starting"),
        (True, True, True, "serving"),
        (False, False, False, "draining"),
        (False, False, False, "stopping"),
        (False, False, False, "stopped"),
        (False, False, False, "starting"),  # again, before the broken hook
        (False, False, False, "failed"),
    ]
