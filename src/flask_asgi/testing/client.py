"""Test clients whose requests all go through the ASGI path.

``app.test_client()`` keeps Flask's API (cookies, ``session_transaction``, ``with client:``,
``follow_redirects``...): only the last step changes, where Werkzeug would call the WSGI app,
the request is turned into an ASGI scope and sent to the ``ASGI`` object. Both clients,
their WebSockets and ``asgi.serving()`` run the app on one serving loop (the shared
background loop, :mod:`.serving_loop`) for the whole session, as a server would.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

import flask.testing
from werkzeug.test import TestResponse, run_wsgi_app
from werkzeug.wsgi import get_current_url

from ..ground.app_state import asgi_of
from ..ground.bridge import run_in_greenlet
from ..ground.flask_compat import preserved
from ..ground.settings import apply_settings
from .exchange import ASGIApp, ServedApp, asgi_as_wsgi
from .serving_loop import call_on_serving_loop, on_serving_loop
from .websocket import AsyncWebSocketSession, WebSocketSession


class FlaskClient(flask.testing.FlaskClient):
    """Flask's test client, with every request sent through the app's ASGI path."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Settings changed since ASGI(app) are checked now, as a server's startup would:
        # a bad value fails here, naming its key, not inside the first request.
        apply_settings(self.application)

    def run_wsgi_app(self, environ: dict[str, Any], buffered: bool = False) -> tuple[Any, str, Any]:
        # Werkzeug's Client.run_wsgi_app, with the ASGI path in place of the WSGI app.
        self._add_cookies_to_wsgi(environ)
        if "werkzeug.debug.preserve_context" in environ:  # ``with client:``
            keep = self._new_contexts.append
            environ["werkzeug.debug.preserve_context"] = lambda ctx: keep(preserved(ctx))
        rv = run_wsgi_app(asgi_as_wsgi(asgi_of(self.application)), environ, buffered=buffered)
        url = urlsplit(get_current_url(environ))
        self._update_cookies_from_response(
            url.hostname or "localhost", url.path, rv[2].getlist("Set-Cookie")
        )
        return rv

    def websocket(self, path: str = "/", **kwargs: Any) -> WebSocketSession:
        """A WebSocket connection to ``path``: ``with client.websocket("/ws") as ws:``
        (see docs/websockets.md)."""
        return WebSocketSession(asgi_of(self.application), self, path, **kwargs)


class AsyncClient:
    """``async with asgi.test_client() as client: response = await client.get("/")``.

    Wraps the app's sync test client: each request (built with its cookie jar) is handed
    to the serving loop, where the app runs, and awaited without blocking the test's own
    loop. Responses are Flask's ``TestResponse``, fully read. ``lifespan=True`` runs the
    serving hooks around the block, on the serving loop too.
    """

    def __init__(self, asgi: ServedApp, lifespan: bool = False, **kwargs: Any) -> None:
        self.asgi = asgi
        self.client = asgi.app.test_client(**kwargs)
        self._lifespan = Lifespan(asgi) if lifespan else None

    async def __aenter__(self) -> AsyncClient:
        if self._lifespan is not None:
            await self._lifespan.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        if self._lifespan is not None:
            await self._lifespan.__aexit__(*exc_info)

    async def open(self, *args: Any, **kwargs: Any) -> TestResponse:
        kwargs["buffered"] = True  # the body must be read while we are on the loop
        # The response comes back in a box, not as the greenlet's result: an idle pooled
        # greenlet keeps its last result until its next job, which would keep the
        # response (and through it the app's JSON provider) alive after the test.
        box: list[TestResponse] = []
        await on_serving_loop(run_in_greenlet(self._open_in_greenlet, args, kwargs, box))
        return box[0]

    def _open_in_greenlet(self, args: Any, kwargs: dict[str, Any], box: list[Any]) -> None:
        # On the serving loop's thread: the strict mode allows the client's own blocking
        # calls made here (the app runs in a task of its own, not under this frame).
        box.append(self.client.open(*args, **kwargs))

    async def get(self, *args: Any, **kwargs: Any) -> TestResponse:
        return await self.open(*args, method="GET", **kwargs)

    async def post(self, *args: Any, **kwargs: Any) -> TestResponse:
        return await self.open(*args, method="POST", **kwargs)

    async def put(self, *args: Any, **kwargs: Any) -> TestResponse:
        return await self.open(*args, method="PUT", **kwargs)

    async def patch(self, *args: Any, **kwargs: Any) -> TestResponse:
        return await self.open(*args, method="PATCH", **kwargs)

    async def delete(self, *args: Any, **kwargs: Any) -> TestResponse:
        return await self.open(*args, method="DELETE", **kwargs)

    async def head(self, *args: Any, **kwargs: Any) -> TestResponse:
        return await self.open(*args, method="HEAD", **kwargs)

    async def options(self, *args: Any, **kwargs: Any) -> TestResponse:
        return await self.open(*args, method="OPTIONS", **kwargs)

    def websocket(self, path: str = "/", **kwargs: Any) -> AsyncWebSocketSession:
        """A WebSocket connection: ``async with client.websocket("/ws") as ws:``."""
        return AsyncWebSocketSession(self.asgi, self.client, path, **kwargs)


class Lifespan:
    """Drive the app's ASGI lifespan as a server would (see ``ASGI.serving``)."""

    def __init__(self, asgi: ASGIApp) -> None:
        self.asgi = asgi
        self._inbox: asyncio.Queue[dict[str, Any]] | None = None
        self._outbox: asyncio.Queue[dict[str, Any]] | None = None
        self._task: asyncio.Task[None] | None = None

    async def _expect(self, wanted: str) -> None:
        assert self._outbox is not None and self._task is not None
        getter = asyncio.ensure_future(self._outbox.get())
        await asyncio.wait({getter, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if not getter.done():
            getter.cancel()
            self._task.result()
            raise RuntimeError("the lifespan task ended early")
        message = getter.result()
        if message["type"] != wanted:
            raise RuntimeError(message.get("message") or message["type"])

    async def __aenter__(self) -> Lifespan:
        await on_serving_loop(self._start())
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await on_serving_loop(self._stop())

    def __enter__(self) -> Lifespan:
        call_on_serving_loop(self._start())
        return self

    def __exit__(self, *exc_info: Any) -> None:
        call_on_serving_loop(self._stop())

    async def _start(self) -> None:
        self._inbox, self._outbox = asyncio.Queue(), asyncio.Queue()
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}}
        self._task = asyncio.get_running_loop().create_task(
            self.asgi(scope, self._inbox.get, self._outbox.put)
        )
        await self._inbox.put({"type": "lifespan.startup"})
        await self._expect("lifespan.startup.complete")

    async def _stop(self) -> None:
        assert self._inbox is not None and self._task is not None
        await self._inbox.put({"type": "lifespan.shutdown"})
        await self._expect("lifespan.shutdown.complete")
        await self._task
