"""``flask serve --server granian``: the options mapped to granian's (``--interface asgi``)."""

from __future__ import annotations

import math
from typing import Any

from . import HEADER_READ_TIMEOUT, ServeOptions, ServerMissing

#: ``flask serve`` log levels in granian's terms (granian has no "trace").
_LOG_LEVELS = {"trace": "debug"}


def granian_server(factory: str, options: ServeOptions) -> Any:
    """A ``granian.Granian`` server for ``options`` that loads the app with ``factory``."""
    try:
        from granian import Granian
        from granian.constants import Interfaces, Loops
        from granian.http import HTTP1Settings
        from granian.log import LogLevels
    except ImportError:
        raise ServerMissing("granian") from None
    return Granian(
        factory,
        factory=True,
        address=options.host,
        port=options.port,
        interface=Interfaces.ASGI,  # with the lifespan protocol (ASGINL has none)
        loop=Loops(options.loop),
        workers=options.workers,
        reload=options.reload,
        log_level=LogLevels(_LOG_LEVELS.get(options.log_level, options.log_level)),
        log_access=True,  # as uvicorn does by default
        url_path_prefix=options.root_path or None,
        # granian's graceful stop has no deadline of its own: this bounds it (whole seconds).
        workers_kill_timeout=max(1, math.ceil(options.timeout_graceful_shutdown)),
        # Slow-header defence: granian's default is 30 s; flask-asgi asks for less.
        http1_settings=HTTP1Settings(header_read_timeout=int(HEADER_READ_TIMEOUT * 1000)),
    )


def run_granian(factory: str, options: ServeOptions) -> int:
    granian_server(factory, options).serve()
    return 0
