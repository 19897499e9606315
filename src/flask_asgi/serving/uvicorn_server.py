"""uvicorn, for ``flask serve`` (the default server) and for ``ASGI.serve``/``ASGI.run``.

The only server module that serves an app object in this process, which is what gives
``GracefulServer`` (:mod:`.uvicorn_graceful`) the app's lifecycle: a port bound before
startup, the drain delay, the header timeout and the zero-loss shutdown. With
``--workers`` or ``--reload`` uvicorn starts its own processes, which load the app by
import path instead, and get uvicorn's own shutdown.
"""

from __future__ import annotations

import logging
import socket
from typing import TYPE_CHECKING, Any

import uvicorn

from .options import MAX_HEAD_BYTES, WEBSOCKET_QUEUE, ServeOptions, serve_options
from .uvicorn_graceful import GracefulServer, bind
from .uvicorn_limits import head_limited_protocol

if TYPE_CHECKING:
    from ..extension import ASGI

logger = logging.getLogger("flask_asgi")


def _settings(options: ServeOptions, passed: dict[str, Any]) -> dict[str, Any]:
    """The one place flask-asgi's settings become uvicorn's (``uvicorn.Config``'s keywords).
    ``passed`` are uvicorn's own (``flask serve``'s options in uvicorn's terms, or
    ``ASGI.run``'s keywords, unchanged): they win. The header timeout and the drain delay
    are ``GracefulServer``'s (:func:`_graceful_server`)."""
    settings = dict(passed, host=options.host, port=options.port)
    # "on", not uvicorn's "auto": a failing startup hook must stop the server.
    settings.setdefault("lifespan", "on")
    # FLASK_ASGI_SHUTDOWN_TIMEOUT (or --timeout-graceful-shutdown) for in-flight requests.
    settings.setdefault("timeout_graceful_shutdown", options.timeout_graceful_shutdown)
    # The request head's size: h11's own limit, and HeadLimitedHttpTools' (httptools has none).
    settings.setdefault("h11_max_incomplete_event_size", MAX_HEAD_BYTES)
    settings["http"] = head_limited_protocol(settings.get("http", "auto"))
    # FLASK_ASGI_WEBSOCKET_MAX_MESSAGE, enforced by uvicorn as frames arrive (close 1009),
    # not after it has buffered up to its own 16 MiB per message, 32 messages deep.
    if options.websocket_max_message > 0:
        settings.setdefault("ws_max_size", options.websocket_max_message)
        settings.setdefault("ws_max_queue", WEBSOCKET_QUEUE)
    return settings


def _graceful_server(
    asgi: ASGI, config: uvicorn.Config, options: ServeOptions
) -> tuple[GracefulServer, list[socket.socket] | None]:
    """uvicorn for ``asgi``, with its port bound now (a port in use fails before any
    startup hook runs) and a shutdown that serves every request that reached it."""
    server = GracefulServer(
        config,
        [asgi.lifecycle],
        drain_delay=options.drain_delay,  # FLASK_ASGI_DRAIN_DELAY
        header_timeout=options.header_timeout,  # FLASK_ASGI_HEADER_TIMEOUT; 0: never
    )
    sock = bind(config)
    return server, None if sock is None else [sock]


def _app_options(asgi: ASGI, host: str, port: int, passed: dict[str, Any]) -> ServeOptions:
    """The app's serving settings, for ``ASGI.run``/``ASGI.serve`` and tests' servers."""
    timeout = passed.get("timeout_graceful_shutdown")  # None: the app's setting
    return serve_options(asgi.app.config, host, port, timeout_graceful_shutdown=timeout)


def graceful_server(
    asgi: ASGI, config: uvicorn.Config
) -> tuple[GracefulServer, list[socket.socket] | None]:
    """``GracefulServer`` for a ready ``config`` (tests build their own), with the app's
    drain delay and header timeout."""
    passed = {"timeout_graceful_shutdown": config.timeout_graceful_shutdown}
    return _graceful_server(asgi, config, _app_options(asgi, config.host, config.port, passed))


def _cli_settings(options: ServeOptions) -> dict[str, Any]:
    """``flask serve``'s options in uvicorn's terms."""
    settings: dict[str, Any] = {
        "log_level": options.log_level,
        "root_path": options.root_path,
        "loop": options.loop,
    }
    if not options.one_process:
        settings.update(workers=options.workers, reload=options.reload)
    return settings


def _serve_blocking(asgi: ASGI, options: ServeOptions, passed: dict[str, Any]) -> bool:
    config = uvicorn.Config(asgi, **_settings(options, passed))
    server, sockets = _graceful_server(asgi, config, options)
    server.run(sockets=sockets)
    return server.started


async def serve(asgi: ASGI, host: str, port: int, **passed: Any) -> None:
    """``ASGI.serve``: serve until the server is told to stop, on the running loop."""
    options = _app_options(asgi, host, port, passed)
    config = uvicorn.Config(asgi, **_settings(options, passed))
    server, sockets = _graceful_server(asgi, config, options)
    await server.serve(sockets=sockets)
    if not server.started:
        raise SystemExit(3)  # uvicorn's code for a failed startup


def run_asgi(asgi: ASGI, host: str, port: int, **passed: Any) -> None:
    """``ASGI.run``: serve, blocking (uvicorn owns the loop and the signal handlers)."""
    if not _serve_blocking(asgi, _app_options(asgi, host, port, passed), passed):
        raise SystemExit(3)


def run_app(asgi: ASGI, options: ServeOptions) -> int:
    """``flask serve`` in one process: the app object, on ``GracefulServer``; the exit
    status (3: startup failed, as uvicorn's)."""
    return 0 if _serve_blocking(asgi, options, _cli_settings(options)) else 3


def run(target_factory: str, options: ServeOptions) -> int:
    """``flask serve --workers N``/``--reload``: uvicorn's processes each call
    ``target_factory`` (an import path) to load the app; uvicorn's own shutdown."""
    if options.drain_delay > 0:  # GracefulServer's: uvicorn's supervisor has none
        logger.warning("FLASK_ASGI_DRAIN_DELAY is not applied with --workers or --reload")
    settings = _settings(options, dict(_cli_settings(options), factory=True))
    uvicorn.run(target_factory, **settings)
    return 0
