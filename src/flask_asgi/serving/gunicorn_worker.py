"""gunicorn with flask-asgi's shutdown, a worker class built on uvicorn-worker's.

    gunicorn hello:asgi -k flask_asgi.gunicorn.Worker  (the public name, flask_asgi.gunicorn)

uvicorn-worker's ``UvicornWorker`` serves each gunicorn process on a plain
``uvicorn.Server``, whose shutdown resets the requests still queued in the kernel or
unread in a keep-alive connection (issue 21: 13 to 76 requests lost per SIGTERM round
under load, with one worker and with two). gunicorn's arbiter closes its own copy of the
listening socket on SIGTERM, but its workers still hold theirs, so the socket goes on
listening until the last worker closes it: what each worker does at that moment decides.

:class:`Worker` is ``UvicornWorker`` with its server swapped for ``GracefulServer``
(:mod:`.uvicorn_graceful`), configured from the app's settings as ``flask serve`` is:
the drain delay, the header timeout, ``FLASK_ASGI_SHUTDOWN_TIMEOUT`` for in-flight
requests (uvicorn-worker sets none), and ``lifespan="on"`` as ``flask serve`` sets it (a
lifespan that raises, not only one that reports a failure, stops the worker; gunicorn
then stops, as for any worker that cannot boot). Everything
else (gunicorn's heartbeat, ``--max-requests``, ``--keep-alive``, TLS, logging) is
uvicorn-worker's. gunicorn's ``--graceful-timeout`` must leave room for the drain.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from gunicorn.arbiter import Arbiter
from uvicorn_worker import UvicornWorker

from ..extension import ASGI
from .options import serve_options
from .uvicorn_graceful import GracefulServer

logger = logging.getLogger("uvicorn.error")


class Worker(UvicornWorker):  # type: ignore[misc]  # uvicorn-worker is not typed
    """A gunicorn worker that serves a flask-asgi ``ASGI`` object with the zero-loss
    shutdown of ``flask serve`` (any other ASGI app is served as uvicorn-worker would)."""

    async def _serve(self) -> None:
        app: Any = self.wsgi  # gunicorn's name for the loaded app: here the ASGI object
        self.config.app = app
        lifecycles = []
        drain_delay = header_timeout = 0.0
        if isinstance(app, ASGI):
            options = serve_options(app.app.config, "", 0)
            lifecycles.append(app.lifecycle)
            drain_delay, header_timeout = options.drain_delay, options.header_timeout
            self.config.lifespan = "on"
            if self.config.timeout_graceful_shutdown is None:
                self.config.timeout_graceful_shutdown = options.timeout_graceful_shutdown
            needed = drain_delay + options.timeout_graceful_shutdown
            if self.cfg.graceful_timeout < needed:
                logger.warning(
                    "gunicorn's --graceful-timeout (%gs) is shorter than FLASK_ASGI_DRAIN_DELAY"
                    " + FLASK_ASGI_SHUTDOWN_TIMEOUT (%gs): a worker still draining is killed",
                    self.cfg.graceful_timeout,
                    needed,
                )
        server = GracefulServer(
            self.config, lifecycles, drain_delay=drain_delay, header_timeout=header_timeout
        )
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
