"""uvicorn, for ``flask serve`` (the default server) and for ``ASGI.serve``/``ASGI.run``.

The only server module that serves an app object in this process, which is what gives
``GracefulServer`` (:mod:`.uvicorn_graceful`) the app's lifecycle: a port bound before
startup, the drain delay, the header timeout and the zero-loss shutdown. With
``--workers`` each of flask-asgi's processes (:mod:`.uvicorn_workers`) loads the app by
import path and serves it the same way, on one socket bound by the parent. With
``--reload`` uvicorn's reloader starts a process that loads the app by import path and
gets uvicorn's own shutdown (a development server).
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import sys
from multiprocessing.synchronize import Event
from typing import TYPE_CHECKING, Any

import uvicorn
from uvicorn.importer import import_from_string

from .options import MAX_HEAD_BYTES, WEBSOCKET_QUEUE, ServeOptions, serve_options
from .uvicorn_graceful import GracefulServer, bind
from .uvicorn_limits import head_limited_protocol
from .uvicorn_workers import supervise

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
    """``flask serve --workers N`` (flask-asgi's processes, each a ``GracefulServer``) or
    ``--reload`` (uvicorn's reloader and shutdown): each process calls ``target_factory``
    (an import path) to load the app."""
    if options.reload:
        if options.drain_delay > 0:  # GracefulServer's: uvicorn's reloader has none
            logger.warning("FLASK_ASGI_DRAIN_DELAY is not applied with --reload")
        settings = _settings(options, dict(_cli_settings(options), factory=True))
        uvicorn.run(target_factory, **settings)
        return 0
    # The parent's Config only sets up uvicorn's logging and binds: each process has its own.
    config = uvicorn.Config(
        target_factory, factory=True, **_settings(options, _cli_settings(options))
    )
    sock = bind(config)
    assert sock is not None  # a host and a port: flask serve has no --uds or --fd
    sock.listen(config.backlog)  # connections queue while the processes start
    host = f"[{options.host}]" if ":" in options.host else options.host
    logging.getLogger("uvicorn.error").info(
        "Uvicorn running on http://%s:%d (Press CTRL+C to quit)", host, options.port
    )
    # Bounded as in one process: the drain delay, the in-flight requests, then the lifespan
    # shutdown (the background-task drain has the same timeout), and a margin.
    stop_timeout = options.drain_delay + 2 * options.timeout_graceful_shutdown + 5
    return supervise(sock, serve_worker, (target_factory, options), options.workers, stop_timeout)


def serve_worker(
    sock: socket.socket, started: Event, target_factory: str, options: ServeOptions
) -> None:
    """One process of ``flask serve --workers N``: the app, loaded by import path, served on
    ``GracefulServer`` on the parent's socket, so that this process's shutdown is the
    one-process zero-loss one. Exits 3 if the startup failed, as uvicorn does."""
    asgi = import_from_string(target_factory)()
    one = dataclasses.replace(options, workers=1)
    config = uvicorn.Config(asgi, **_settings(one, _cli_settings(one)))
    server = GracefulServer(
        config,
        [asgi.lifecycle],
        drain_delay=options.drain_delay,
        header_timeout=options.header_timeout,
        on_started=started.set,
        announce=False,  # the parent said where it listens
    )
    server.run(sockets=[sock])
    if not server.started:
        sys.exit(3)
