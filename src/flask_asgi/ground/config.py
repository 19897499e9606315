"""flask-asgi's configuration keys and their defaults (documented in docs/configuration.md).

Each key is read from ``app.config``; ``init_app`` fills in the defaults, which an
environment variable of the same name overrides.
"""

from __future__ import annotations

import os
from typing import Any

_BUILTIN: dict[str, Any] = {
    # On SIGTERM under flask serve / asgi.run / asgi.serve: seconds to go on serving
    # normally (readiness says "draining") before the shutdown proper, for load balancers
    # that take a moment to stop sending (Kubernetes preStop).
    "FLASK_ASGI_DRAIN_DELAY": 0.0,
    # flask serve / asgi.run / asgi.serve on uvicorn: seconds a connection may go without a
    # request in progress (its headers still arriving, or none sent) since it opened or since
    # its last response; then it is closed (uvicorn has no header timeout). 0: never.
    "FLASK_ASGI_HEADER_TIMEOUT": 10.0,
    # Size of the worker-thread pool that runs sync endpoints and run_sync() calls.
    "FLASK_ASGI_THREADS": 40,
    # Responses with a Content-Length up to this many bytes are sent as one message.
    "FLASK_ASGI_RESPONSE_BUFFER": 256 * 1024,
    # Seconds a shutdown waits for background tasks (then cancels them); also flask serve's
    # default --timeout-graceful-shutdown for in-flight requests.
    "FLASK_ASGI_SHUTDOWN_TIMEOUT": 10.0,
    # Largest WebSocket message (bytes; text counts UTF-8 bytes) a handler accepts: a larger
    # one closes the connection with 1009. 0: no limit (the server's own still applies).
    "FLASK_ASGI_WEBSOCKET_MAX_MESSAGE": 1024 * 1024,
    # Seconds a WebSocket may go without a message either way before the server closes it
    # with 1001. 0: never.
    "FLASK_ASGI_WEBSOCKET_IDLE_TIMEOUT": 0.0,
    # A sync endpoint's body is received on the loop, up to this many bytes, before the
    # request takes a worker thread (never past MAX_CONTENT_LENGTH); the rest streams to the
    # thread through a read-ahead buffer of this size.
    "FLASK_ASGI_BODY_PREREAD": 1024 * 1024,
    # Seconds, in all, a request may keep the server waiting for its body's bytes; then 408
    # (or the read raises BodyTimeout) and the connection closes. 0: no limit.
    "FLASK_ASGI_BODY_TIMEOUT": 60.0,
    # Sync HTTP requests that may wait for a worker thread at once (per process); one more
    # is answered 503 with Retry-After before the app runs. 0: no cap. See configuration.md.
    "FLASK_ASGI_MAX_WAITING": 200,
    # Seconds a request may run (from its endpoint's start to its last byte); past it an async
    # endpoint is cancelled and answered 504, a sync one is logged (it cannot be
    # interrupted). @flask_asgi.timeout(seconds or None) overrides it per view. 0: no limit.
    "FLASK_ASGI_REQUEST_TIMEOUT": 0.0,
    # HTTP requests in flight at once (per process, streams included); one more is answered
    # 503 with Retry-After before the app runs. 0: no cap.
    "FLASK_ASGI_MAX_REQUESTS": 0,
    # asgi.broadcast's backend: "" (or "memory://") for in-process, "redis://host:port/db"
    # (also rediss://, unix://) to reach every process that uses the same Redis.
    "FLASK_ASGI_BROADCAST_URL": "",
    # Origins (besides the app's own) whose pages may open WebSockets: exact origins
    # ("https://app.example.com") or patterns ("https://*.example.com", "*.example.com");
    # ["*"] allows any. The environment variable is comma-separated.
    "FLASK_ASGI_WEBSOCKET_ALLOWED_ORIGINS": [],
    # Seconds an ASGI app mounted with asgi.mount() gets to answer each lifespan message;
    # one that does not answer lifespan.startup in time is served without its lifespan.
    "FLASK_ASGI_MOUNT_LIFESPAN_TIMEOUT": 30.0,
    # Seconds the event loop may go without coming round before the watchdog logs the
    # blocking code (docs/observability.md). flask serve --debug: 0.1. 0: off.
    "FLASK_ASGI_BLOCKING_THRESHOLD": 0.5,
    # Paths answered before the Flask app (docs/observability.md). "": off.
    "FLASK_ASGI_HEALTH_PATH": "",  # liveness: 200 while the loop runs and is not stalled
    "FLASK_ASGI_READY_PATH": "",  # readiness: 200 once started, 503 once shutdown begins
    "FLASK_ASGI_METRICS_PATH": "",  # Prometheus text format (pip install 'flask-asgi[metrics]')
    # Garbage-collector tuning when serving: "auto" (gc.freeze() at startup, gen-0
    # threshold 50,000), "off", or gc.set_threshold's numbers ("50000,10,10").
    "FLASK_ASGI_GC": "auto",
}


def split_list(value: str) -> list[str]:
    """A comma-separated setting (an environment variable) as a list."""
    return [item.strip() for item in value.split(",") if item.strip()]


def _from_env(key: str, default: Any) -> Any:
    value = os.environ.get(key)
    if value is None:
        return default
    if isinstance(default, list):
        return split_list(value)
    return type(default)(value)


DEFAULTS: dict[str, Any] = {key: _from_env(key, value) for key, value in _BUILTIN.items()}
