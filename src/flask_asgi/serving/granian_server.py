"""``flask serve --server granian``: the options mapped to granian's (``--interface asgi``).

granian starts its own worker processes, which cannot be handed an app object: each calls
the factory (an import path, ``flask_asgi.cli:app_factory``) to load the app.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

from .options import MAX_HEAD_BYTES, ROOT_PATH_ENV, ServeOptions, ServerMissing

logger = logging.getLogger("flask_asgi")

#: ``flask serve`` log levels in granian's terms (granian has no "trace").
_LOG_LEVELS = {"trace": "debug"}

#: The longest header read timeout granian's own command line accepts, in milliseconds
#: (``--http1-header-read-timeout``: 1 to 60,000); the setting must be above 0.
MAX_HEADER_READ_TIMEOUT_MS = 60_000


def header_read_timeout_ms(seconds: float) -> int:
    """FLASK_ASGI_HEADER_TIMEOUT in granian's terms: milliseconds, 1 to 60,000. granian
    has no "never", so 0 (never) and anything longer become the longest it takes, 60 s."""
    if seconds <= 0:
        return MAX_HEADER_READ_TIMEOUT_MS
    return max(1, min(MAX_HEADER_READ_TIMEOUT_MS, round(seconds * 1000)))


#: Requests granian lets in beyond what flask-asgi itself admits: probes, the 503s
#: flask-asgi answers past its caps, and async requests (which have no cap of their own).
BACKPRESSURE_HEADROOM = 8192


def backpressure(options: ServeOptions) -> int:
    """granian's cap on requests in flight per worker, above flask-asgi's own limits.
    granian's default (its backlog, 1,024) leaves every request past it, probes included,
    unanswered until one ends; above the app's limits, flask-asgi decides what is refused
    (503 past FLASK_ASGI_MAX_REQUESTS or FLASK_ASGI_MAX_WAITING) and probes still get in."""
    if options.max_requests > 0:
        admitted = options.max_requests
    else:
        admitted = options.threads + options.max_waiting
    return admitted + BACKPRESSURE_HEADROOM


def wsgi_backpressure(options: ServeOptions) -> int:
    """granian's cap on requests in flight per worker under its WSGI interface: the
    threads and the requests that may wait for one (FLASK_ASGI_MAX_WAITING; 0: no cap)."""
    if options.max_waiting <= 0:
        return options.threads + BACKPRESSURE_HEADROOM
    return options.threads + options.max_waiting


def granian_server(factory: str, options: ServeOptions, wsgi: bool = False) -> Any:
    """A ``granian.Granian`` server for ``options`` that loads the app with ``factory``
    (``wsgi``: a WSGI callable, called from ``FLASK_ASGI_THREADS`` blocking threads)."""
    try:
        from granian import Granian
        from granian.constants import Interfaces, Loops
        from granian.http import HTTP1Settings, HTTP2Settings
        from granian.log import LogLevels
    except ImportError:
        raise ServerMissing("granian") from None
    return Granian(
        factory,
        factory=True,
        address=options.host,
        port=options.port,
        # ASGI with the lifespan protocol (ASGINL has none); WSGI: granian_wsgi.py.
        interface=Interfaces.WSGI if wsgi else Interfaces.ASGI,
        loop=Loops(options.loop),
        workers=options.workers,
        # Under WSGI, granian's own queue is the only one: requests past the threads wait
        # in it, up to FLASK_ASGI_MAX_WAITING (more stay unaccepted, as on gunicorn).
        backpressure=wsgi_backpressure(options) if wsgi else backpressure(options),
        blocking_threads=options.threads if wsgi else None,
        websockets=not wsgi,  # granian's WSGI has none (it would say so at every start)
        reload=options.reload,
        log_level=LogLevels(_LOG_LEVELS.get(options.log_level, options.log_level)),
        # Access lines are info: on at info and below, as uvicorn's (granian's access
        # logger is at INFO whatever log_level says).
        log_access=options.log_level in ("trace", "debug", "info"),
        # No url_path_prefix: --root-path is applied by the app, as under uvicorn (cli.py).
        # granian's graceful stop has no deadline of its own: this bounds it (whole seconds).
        workers_kill_timeout=max(1, math.ceil(options.timeout_graceful_shutdown)),
        # Slow-header defence: FLASK_ASGI_HEADER_TIMEOUT (granian's own default is 30 s).
        http1_settings=HTTP1Settings(
            header_read_timeout=header_read_timeout_ms(options.header_timeout),
            # The request head: larger gets hyper's 431 (granian's own bound is ~408 KiB).
            max_buffer_size=MAX_HEAD_BYTES,
        ),
        http2_settings=HTTP2Settings(max_headers_size=MAX_HEAD_BYTES),
    )


def run(target_factory: str, options: ServeOptions) -> int:
    """Serve until granian is stopped; the exit status."""
    if options.drain_delay > 0:
        # granian stops accepting at once on SIGTERM: it has no hook to serve on first.
        logger.warning("FLASK_ASGI_DRAIN_DELAY is not applied under granian (uvicorn only)")
    os.environ[ROOT_PATH_ENV] = options.root_path  # for cli.app_factory in each worker
    granian_server(target_factory, options).serve()
    return 0
