"""``flask serve --server granian|hypercorn``: the same options, mapped to each server.

uvicorn, the default, is served by :mod:`flask_asgi.cli` and :mod:`flask_asgi.server`
directly; this package holds one module per other server. Each runs the app by import
path (both servers start their own worker processes, which cannot be handed an app
object): ``factory`` names a zero-argument function that loads the app in the process
that calls it, as ``flask_asgi.cli:app_factory`` does.
"""

from __future__ import annotations

import dataclasses

#: The servers ``flask serve --server`` knows, the default first.
NAMES = ("uvicorn", "granian", "hypercorn")

#: Seconds a client may take to send a request's head before the server drops it (the
#: slow-header, "slowloris", defence), where the server has such a timeout.
HEADER_READ_TIMEOUT = 10.0


@dataclasses.dataclass(frozen=True)
class ServeOptions:
    """What ``flask serve`` was asked for, in its own terms."""

    host: str
    port: int
    workers: int = 1
    reload: bool = False
    log_level: str = "info"
    root_path: str = ""
    #: Seconds in-flight requests get to finish on SIGTERM.
    timeout_graceful_shutdown: float = 10.0
    #: The event loop: "auto" (the server's default), "asyncio" or "uvloop".
    loop: str = "auto"


class ServerMissing(RuntimeError):
    """The chosen server is not installed (its extra names the package to install)."""

    def __init__(self, server: str) -> None:
        super().__init__(
            f"--server {server} needs the {server} package:"
            f" pip install 'flask-asgi[{server}]' (or pip install {server})"
        )


def run_server(server: str, factory: str, options: ServeOptions) -> int:
    """Serve until the server is stopped; return its exit status (3: startup failed)."""
    if server == "granian":
        from .granian_server import run_granian

        return run_granian(factory, options)
    if server == "hypercorn":
        from .hypercorn_server import run_hypercorn

        return run_hypercorn(factory, options)
    raise ValueError(f"unknown server {server!r}: one of {', '.join(NAMES[1:])}")
