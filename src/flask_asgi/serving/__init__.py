"""The servers flask-asgi runs on, each loaded only once it is chosen.

``flask serve --server NAME`` and ``ASGI.serve``/``ASGI.run`` find their server here.
Each server is a module of this package with the same shape (``run(target_factory,
options) -> int``, the app loaded by import path in the server's processes); one that
can serve an app object in this process says so (``in_process``) and also has
``run_app``, ``run_asgi`` and ``serve``. This package imports no server module, so
``import flask_asgi`` imports no server library, and no server module imports it back.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import TYPE_CHECKING, Any, Protocol, cast

from .options import ServeOptions, ServerMissing, serve_options

if TYPE_CHECKING:
    from ..extension import ASGI

__all__ = ["DEFAULT", "SERVERS", "Server", "ServeOptions", "ServerMissing", "serve_options"]


class ServerModule(Protocol):
    """What every server module has."""

    def run(self, target_factory: str, options: ServeOptions) -> int: ...


class InProcessServerModule(ServerModule, Protocol):
    """A server module that also serves an app object in this process."""

    def run_app(self, asgi: ASGI, options: ServeOptions) -> int: ...

    def run_asgi(self, asgi: ASGI, host: str, port: int, **settings: Any) -> None: ...

    async def serve(self, asgi: ASGI, host: str, port: int, **settings: Any) -> None: ...


@dataclasses.dataclass(frozen=True)
class Server:
    """One server: the module that maps flask-asgi's options to it, imported on use."""

    name: str
    module: str
    #: Serves an app object in this process (one process, no reloader): the app's own
    #: lifecycle then drives the shutdown (ASGI.run/serve, flask serve without --workers).
    in_process: bool = False
    #: The module serving through the server's WSGI interface (FLASK_ASGI_INTERFACE=wsgi:
    #: an all-sync app), if it has one flask-asgi uses.
    wsgi_module: str | None = None

    def load(self, interface: str = "asgi") -> ServerModule:
        if interface == "wsgi":
            if self.wsgi_module is None:
                raise ValueError(
                    f"FLASK_ASGI_INTERFACE=wsgi: --server {self.name} is served through ASGI"
                    " only (granian offers a WSGI interface)"
                )
            return cast(ServerModule, importlib.import_module(self.wsgi_module))
        return cast(ServerModule, importlib.import_module(self.module))

    def load_in_process(self) -> InProcessServerModule:
        if not self.in_process:
            raise ValueError(f"{self.name} cannot serve an app object in this process")
        return cast(InProcessServerModule, self.load())


#: The servers ``flask serve --server`` knows, the default first.
SERVERS = {
    server.name: server
    for server in (
        Server("uvicorn", f"{__name__}.uvicorn_server", in_process=True),
        Server("granian", f"{__name__}.granian_server", wsgi_module=f"{__name__}.granian_wsgi"),
        Server("hypercorn", f"{__name__}.hypercorn_server"),
    )
}
#: ``flask serve``'s server, and the one ``ASGI.serve``/``ASGI.run`` use.
DEFAULT = SERVERS["uvicorn"]
