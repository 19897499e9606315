"""granian's backpressure comes from flask-asgi's own limits (issue 20): past granian's
default (1,024 requests in flight) probes and sync views would wait for a request to end."""

from __future__ import annotations

import json
import subprocess

from helpers import ROOT, VENV_BIN

from flask_asgi.ground.settings import DEFAULTS
from flask_asgi.serving import ServeOptions, serve_options
from flask_asgi.serving.granian_server import BACKPRESSURE_HEADROOM, backpressure, granian_server

FACTORY = "flask_asgi.cli:app_factory"


def test_backpressure_is_above_the_apps_limits() -> None:
    options = serve_options(DEFAULTS, "127.0.0.1", 1)
    assert (options.max_requests, options.max_waiting, options.threads) == (
        DEFAULTS["FLASK_ASGI_MAX_REQUESTS"],
        DEFAULTS["FLASK_ASGI_MAX_WAITING"],
        DEFAULTS["FLASK_ASGI_THREADS"],
    )
    # No cap on requests: every thread and waiting sync request, and room for the rest.
    assert backpressure(options) == options.threads + options.max_waiting + BACKPRESSURE_HEADROOM
    assert granian_server(FACTORY, options).backpressure == backpressure(options) > 1024
    capped = serve_options(dict(DEFAULTS, FLASK_ASGI_MAX_REQUESTS=500), "127.0.0.1", 1)
    assert backpressure(capped) == 500 + BACKPRESSURE_HEADROOM  # flask-asgi answers the 503s
    small = ServeOptions("127.0.0.1", 1, threads=4, max_waiting=0)
    assert backpressure(small) == 4 + BACKPRESSURE_HEADROOM


def test_probe_and_sync_view_answer_past_1024_streams() -> None:
    """The short version of stress/granian_backpressure.py: 1,100 SSE streams open on
    ``flask serve --server granian``; /readyz and a sync view answer within 1 s."""
    result = subprocess.run(
        [str(VENV_BIN / "python"), str(ROOT / "stress" / "granian_backpressure.py"),
         "--streams", "1100", "--seconds", "3"],
        capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["open_when_checked"] == 1100
    assert all(check["max_s"] <= 1.0 for check in report["checks"].values())


def test_access_log_follows_the_log_level() -> None:
    """granian's access logger is at INFO whatever its log_level: flask-asgi asks for access
    lines only at info and below, as uvicorn writes them (issue 20: at --log-level warning,
    granian wrote one line per request, 15 % of the interpreter's time on sync hello)."""
    for level, logged in [("trace", True), ("debug", True), ("info", True), ("warning", False),
                          ("error", False), ("critical", False)]:  # fmt: skip
        server = granian_server(FACTORY, ServeOptions("127.0.0.1", 1, log_level=level))
        assert server.log_access is logged, level
