"""What ``flask serve`` asks of a server, in flask-asgi's terms, for any server module.

Each server module (``uvicorn_server``, ``granian_server``, ``hypercorn_server``) maps
these fields to its own settings in one place. This module imports none of them: the
registry (:mod:`flask_asgi.serving`) is the only one that loads a server module.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

#: The app settings a server needs, as ``ServeOptions`` fields. They are read from the
#: loaded app's ``app.config`` in the process that starts the server, because granian and
#: hypercorn take their own settings before any worker has loaded the app.
_APP_SETTINGS = {
    "timeout_graceful_shutdown": ("FLASK_ASGI_SHUTDOWN_TIMEOUT", float),
    "header_timeout": ("FLASK_ASGI_HEADER_TIMEOUT", float),
    "drain_delay": ("FLASK_ASGI_DRAIN_DELAY", float),
    "websocket_max_message": ("FLASK_ASGI_WEBSOCKET_MAX_MESSAGE", int),
    "interface": ("FLASK_ASGI_INTERFACE", str),
}
#: The app's request limits, whole numbers: a server with a concurrency cap of its own
#: (granian's backpressure) sets it above them, so flask-asgi decides what is refused.
_APP_LIMITS = {
    "max_requests": "FLASK_ASGI_MAX_REQUESTS",
    "max_waiting": "FLASK_ASGI_MAX_WAITING",
    "threads": "FLASK_ASGI_THREADS",
}

#: The largest request head (request line and headers) every server takes, in bytes;
#: larger: 431 (or the server's 400) and the connection closed, before the head is all
#: buffered. It also bounds the number of headers (a header line is 4 bytes at least).
#: Browsers send a few KiB; nginx's default allows 32 KiB.
MAX_HEAD_BYTES = 64 * 1024
#: WebSocket messages a server may hold for a connection, received before the app takes
#: them (uvicorn's ``ws_max_queue``): with the message limit, what a connection can pin.
WEBSOCKET_QUEUE = 4


@dataclasses.dataclass(frozen=True)
class ServeOptions:
    """What ``flask serve`` was asked for, with the app's serving settings resolved."""

    host: str
    port: int
    workers: int = 1
    reload: bool = False
    log_level: str = "info"
    root_path: str = ""
    #: Seconds in-flight requests get to finish on SIGTERM (FLASK_ASGI_SHUTDOWN_TIMEOUT,
    #: unless --timeout-graceful-shutdown).
    timeout_graceful_shutdown: float = 10.0
    #: The event loop: "auto" (the server's default), "asyncio" or "uvloop".
    loop: str = "auto"
    #: Seconds a client may take to send a request's head (FLASK_ASGI_HEADER_TIMEOUT; 0:
    #: never), the slow-header ("slowloris") defence.
    header_timeout: float = 10.0
    #: Seconds to go on serving after SIGTERM with readiness failing (FLASK_ASGI_DRAIN_DELAY).
    drain_delay: float = 0.0
    #: The largest WebSocket message, in bytes (FLASK_ASGI_WEBSOCKET_MAX_MESSAGE; 0: the
    #: server's own limit): the server closes with 1009 before buffering a larger one.
    websocket_max_message: int = 1024 * 1024
    #: HTTP requests in flight at once (FLASK_ASGI_MAX_REQUESTS; 0: no cap).
    max_requests: int = 0
    #: Sync requests that may wait for a worker thread (FLASK_ASGI_MAX_WAITING; 0: no cap).
    max_waiting: int = 2048
    #: Worker threads for sync views (FLASK_ASGI_THREADS).
    threads: int = 256
    #: "asgi", or "wsgi": an all-sync app through the server's WSGI interface
    #: (FLASK_ASGI_INTERFACE, unless --interface).
    interface: str = "asgi"

    @property
    def one_process(self) -> bool:
        """Served in the calling process: no worker processes, no reloader."""
        return self.workers <= 1 and not self.reload


def serve_options(config: Mapping[str, Any], host: str, port: int, **chosen: Any) -> ServeOptions:
    """``ServeOptions`` with the CLI's ``chosen`` options; a serving setting the CLI left
    out (or gave as None) comes from the app's ``config``."""
    for field, (key, kind) in _APP_SETTINGS.items():
        if chosen.get(field) is None:
            chosen[field] = kind(config[key])
    for field, key in _APP_LIMITS.items():
        chosen.setdefault(field, int(config[key]))
    return ServeOptions(host, port, **chosen)


class PortInUse(SystemExit):
    """The address cannot be bound: raised before any startup hook runs (exit status 1)."""


class ServerMissing(RuntimeError):
    """The chosen server is not installed (its extra names the package to install)."""

    def __init__(self, server: str) -> None:
        super().__init__(
            f"--server {server} needs the {server} package:"
            f" install flask-asgi's [{server}] extra (or pip install {server})"
        )


#: How ``flask serve --root-path`` reaches ``cli.app_factory`` in the processes of granian
#: and hypercorn (which then apply it with :class:`UnderRootPath`).
ROOT_PATH_ENV = "FLASK_ASGI_CLI_ROOT_PATH"


class UnderRootPath:
    """``--root-path`` as uvicorn applies it, for servers that apply it otherwise.

    uvicorn's ``root_path`` (since 0.26, per the ASGI spec) is the prefix a proxy has
    stripped: a request for ``/x`` reaches the app as ``path`` ``/prefix/x`` under
    ``root_path`` ``/prefix``, and ``/prefix/x`` as ``/prefix/prefix/x``. hypercorn puts
    ``root_path`` in the scope but leaves ``path`` alone, and granian's
    ``url_path_prefix`` serves both ``/prefix/x`` and ``/x`` (measured), so one app
    answered different URLs per server. granian and hypercorn get no root path of their
    own; this adds it to each ``http`` and ``websocket`` scope, as uvicorn does.
    """

    __slots__ = ("app", "root_path", "raw_root_path")

    def __init__(self, app: Any, root_path: str) -> None:
        self.app = app
        self.root_path = root_path.rstrip("/")
        self.raw_root_path = self.root_path.encode("utf-8")

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            scope = dict(scope, root_path=self.root_path, path=self.root_path + scope["path"])
            raw_path = scope.get("raw_path")
            if raw_path is not None:
                scope["raw_path"] = self.raw_root_path + raw_path
        await self.app(scope, receive, send)
