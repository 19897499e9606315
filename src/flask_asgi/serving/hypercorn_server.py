"""``flask serve --server hypercorn``: the options mapped to hypercorn's ``Config``.

hypercorn's app is loaded by import path (``flask_asgi.cli:app_factory``), in this process
with one worker, or in each of its worker processes.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from .options import MAX_HEAD_BYTES, ROOT_PATH_ENV, ServeOptions, ServerMissing

logger = logging.getLogger("flask_asgi")

#: ``flask serve`` log levels in logging's terms (hypercorn has no "trace").
_LOG_LEVELS = {"trace": "DEBUG"}


def hypercorn_config(factory: str, options: ServeOptions) -> Any:
    """A ``hypercorn.config.Config`` for ``options`` whose app is ``factory()``."""
    try:
        from hypercorn.config import Config
    except ImportError:
        raise ServerMissing("hypercorn") from None
    config = Config()
    host = f"[{options.host}]" if ":" in options.host else options.host
    config.bind = [f"{host}:{options.port}"]
    config.application_path = f"{factory}()"  # hypercorn evaluates what follows the colon
    # One worker, no reload: serve in this process (0), as uvicorn does; else its supervisor.
    config.workers = 0 if options.one_process else options.workers
    config.use_reloader = options.reload
    # --root-path is applied by the app (cli.app_factory), as under uvicorn: hypercorn's own
    # root_path leaves the prefix out of the path, so /p/x and /x would both be served.
    config.graceful_timeout = options.timeout_graceful_shutdown
    config.loglevel = _LOG_LEVELS.get(options.log_level, options.log_level.upper())
    config.accesslog = "-"  # like uvicorn's and granian's default access log on stdout
    if options.loop != "auto":  # hypercorn's own default is asyncio
        config.worker_class = options.loop
    # Slow-header defence: hypercorn's keep-alive timer (5 s) runs until a request's head
    # is complete, so a client dripping header lines is dropped then (measured). Its
    # read_timeout would also drop quiet SSE and WebSocket clients, so it stays off, and
    # FLASK_ASGI_HEADER_TIMEOUT has no hypercorn setting to map to.
    config.h11_max_incomplete_size = MAX_HEAD_BYTES  # larger: h11's 431 (hypercorn: 16 KiB)
    config.h2_max_header_list_size = MAX_HEAD_BYTES
    if options.websocket_max_message > 0:  # FLASK_ASGI_WEBSOCKET_MAX_MESSAGE: close 1009
        config.websocket_max_message_size = options.websocket_max_message
    return config


def refuse_whole_messages() -> None:
    """hypercorn 0.18 sends 1009 for a WebSocket message past websocket_max_message_size
    but goes on appending the rest of that message to its buffer as the client sends it
    (measured: 20 connections, 15 MiB each, 41 -> 177 MiB with a 1 MiB limit). Its buffer
    class is swapped for one that drops the refused message and keeps none of the rest.
    In this process only: with --workers, hypercorn's spawned workers keep their own."""
    from hypercorn.protocol import ws_stream

    if getattr(ws_stream.WebsocketBuffer, "refuses_whole_messages", False):
        return

    class RefusingBuffer(ws_stream.WebsocketBuffer):
        refuses_whole_messages = True

        def extend(self, event: Any) -> None:
            if self.length > self.max_length:  # refused already (1009 sent): drop the rest
                raise ws_stream.FrameTooLargeError()
            try:
                super().extend(event)
            except ws_stream.FrameTooLargeError:
                self.value = None  # free what the refused message held
                raise

    ws_stream.WebsocketBuffer = RefusingBuffer  # type: ignore[misc]


def run(target_factory: str, options: ServeOptions) -> int:
    """Serve until hypercorn is stopped; the exit status (3: startup failed)."""
    try:
        from hypercorn.run import run as hypercorn_run
        from hypercorn.utils import LifespanFailureError
    except ImportError:
        raise ServerMissing("hypercorn") from None
    if options.workers > 1:
        # Measured with hypercorn 0.18: its supervisor terminates the other workers as soon
        # as the first has exited, cutting off their requests (docs/deployment.md).
        logger.warning(
            "hypercorn with --workers %d does not let in-flight requests finish on SIGTERM;"
            " use --server granian, or gunicorn, for several workers",
            options.workers,
        )
    if options.drain_delay > 0:
        # hypercorn stops accepting at once on SIGTERM: it has no hook to serve on first.
        logger.warning("FLASK_ASGI_DRAIN_DELAY is not applied under hypercorn (uvicorn only)")
    os.environ[ROOT_PATH_ENV] = options.root_path  # for cli.app_factory
    if options.websocket_max_message > 0:
        refuse_whole_messages()
    try:
        return int(hypercorn_run(hypercorn_config(target_factory, options)) or 0)
    except LifespanFailureError:
        return 3  # a startup hook failed (logged): uvicorn's code for a failed startup
