"""Health and readiness probes (and the metrics path), answered before the Flask app.

Off by default; ``FLASK_ASGI_HEALTH_PATH`` and ``FLASK_ASGI_READY_PATH`` turn them on. A
probe costs a dict lookup and two messages: no environ, no Flask context, no hooks, so it
can be polled every second and never shows up in the app's logs, sessions or metrics.

* Liveness (health): 200 while the loop runs. While the loop is blocked nothing on it
  answers, so the probe's own timeout is the failure a supervisor sees; once the loop is
  back, the body says how many stalls the watchdog has counted. 503 if the watchdog's
  heartbeat has not run for ``max(1, 4 * threshold)`` seconds though the loop answers (the
  loop's timers are starved).
* Readiness: the app's ``Lifecycle.ready`` (as ``asgi.stats()`` and Prometheus): 200 once
  the lifespan startup completed (or when the server sends no lifespan), 503 while it
  starts, from the moment shutdown is asked for (``draining``) and after a failed start.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Flask

from ..ground.app_state import app_state

HEALTH_KEY = "FLASK_ASGI_HEALTH_PATH"
READY_KEY = "FLASK_ASGI_READY_PATH"
METRICS_KEY = "FLASK_ASGI_METRICS_PATH"


def probe_response(app: Flask, scope: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The ASGI messages answering ``scope`` if it is a probe, else None (the app's turn)."""
    config = app.config
    path = scope["path"]  # never "", the value of a probe that is off
    if path == config.get(HEALTH_KEY):
        status, body = _liveness(app)
    elif path == config.get(READY_KEY):
        status, body = _readiness(app)
    elif path == config.get(METRICS_KEY):
        endpoint = app_state(app).metrics_endpoint  # features.metrics (Prometheus)
        return None if endpoint is None else endpoint(app, scope)
    else:
        return None
    data = json.dumps(body).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(data)).encode()),
        (b"cache-control", b"no-store"),
    ]
    return [
        {"type": "http.response.start", "status": status, "headers": headers},
        {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else data},
    ]


def _liveness(app: Flask) -> tuple[int, dict[str, Any]]:
    state = app_state(app)
    silence = state.loop_silence()
    bound = max(1.0, 40 * state.heartbeat_interval)  # the interval is threshold / 10
    alive = not state.heartbeat or silence <= bound
    body = {
        "status": "ok" if alive else "stalled",
        "watchdog": bool(state.heartbeat),
        "stalls": state.stalls,
        "loop_silence": round(silence, 4),
    }
    return (200 if alive else 503), body


def _readiness(app: Flask) -> tuple[int, dict[str, Any]]:
    # The lifecycle's answer, as asgi.stats()["ready"] and Prometheus give it.
    lifecycle = app_state(app).lifecycle
    if lifecycle.ready:
        return 200, {"status": "ready"}
    return 503, {"status": lifecycle.phase}
