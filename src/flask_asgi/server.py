"""Running an ``ASGI`` app on uvicorn, from code (the CLI uses the same settings)."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

import uvicorn

from .graceful import GracefulServer, bind

if TYPE_CHECKING:
    from .extension import ASGI


def uvicorn_config(app: Any, host: str, port: int, **options: Any) -> uvicorn.Config:
    # "on", not uvicorn's "auto": a failing startup hook must stop the server.
    options.setdefault("lifespan", "on")
    return uvicorn.Config(app, host=host, port=port, **options)


def _shutdown_default(asgi: ASGI, options: dict[str, Any]) -> None:
    # In-flight requests get FLASK_ASGI_SHUTDOWN_TIMEOUT seconds on shutdown, as in flask serve.
    timeout = float(asgi.app.config["FLASK_ASGI_SHUTDOWN_TIMEOUT"])
    options.setdefault("timeout_graceful_shutdown", timeout)


def graceful_server(
    asgi: ASGI, config: uvicorn.Config
) -> tuple[GracefulServer, list[socket.socket] | None]:
    """uvicorn for ``asgi``, with its port bound now (a port in use fails before any
    startup hook runs) and a shutdown that serves every request that reached it."""
    app_config = asgi.app.config
    server = GracefulServer(
        config,
        [asgi.lifecycle],
        drain_delay=float(app_config.get("FLASK_ASGI_DRAIN_DELAY", 0)),
        header_timeout=float(app_config.get("FLASK_ASGI_HEADER_TIMEOUT", 0)),
    )
    sock = bind(config)
    return server, None if sock is None else [sock]


async def serve(asgi: ASGI, host: str, port: int, **options: Any) -> None:
    """Serve until the server is told to stop; to be awaited on a running loop."""
    _shutdown_default(asgi, options)
    server, sockets = graceful_server(asgi, uvicorn_config(asgi, host, port, **options))
    await server.serve(sockets=sockets)
    if not server.started:
        raise SystemExit(3)  # uvicorn's code for a failed startup


def run(asgi: ASGI, host: str, port: int, **options: Any) -> None:
    """Serve, blocking (uvicorn owns the loop and the signal handlers)."""
    _shutdown_default(asgi, options)
    server, sockets = graceful_server(asgi, uvicorn_config(asgi, host, port, **options))
    server.run(sockets=sockets)
    if not server.started:
        raise SystemExit(3)
