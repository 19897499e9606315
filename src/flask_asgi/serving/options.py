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
    "timeout_graceful_shutdown": "FLASK_ASGI_SHUTDOWN_TIMEOUT",
    "header_timeout": "FLASK_ASGI_HEADER_TIMEOUT",
    "drain_delay": "FLASK_ASGI_DRAIN_DELAY",
}


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

    @property
    def one_process(self) -> bool:
        """Served in the calling process: no worker processes, no reloader."""
        return self.workers <= 1 and not self.reload


def serve_options(config: Mapping[str, Any], host: str, port: int, **chosen: Any) -> ServeOptions:
    """``ServeOptions`` with the CLI's ``chosen`` options; a serving setting the CLI left
    out (or gave as None) comes from the app's ``config``."""
    for field, key in _APP_SETTINGS.items():
        if chosen.get(field) is None:
            chosen[field] = float(config[key])
    return ServeOptions(host, port, **chosen)


class PortInUse(SystemExit):
    """The address cannot be bound: raised before any startup hook runs (exit status 1)."""


class ServerMissing(RuntimeError):
    """The chosen server is not installed (its extra names the package to install)."""

    def __init__(self, server: str) -> None:
        super().__init__(
            f"--server {server} needs the {server} package:"
            f" pip install 'flask-asgi[{server}]' (or pip install {server})"
        )
