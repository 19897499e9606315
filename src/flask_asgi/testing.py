"""Test clients whose requests all go through the ASGI path.

``app.test_client()`` keeps Flask's API (cookies, ``session_transaction``, ``with client:``,
``follow_redirects``...): only the last step changes, where Werkzeug would call the WSGI app,
the request is turned into an ASGI scope and sent to the ``ASGI`` object. The sync client
runs it on the shared background loop; the async client on the test's own loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import flask.testing
from werkzeug.test import TestResponse, run_wsgi_app
from werkzeug.wsgi import get_current_url

from .bridge import await_, run_in_greenlet
from .environ import ENVIRON_EXTENSION

if TYPE_CHECKING:
    from .extension import ASGI
    from .websocket_testing import AsyncWebSocketSession, WebSocketSession

T = TypeVar("T")

#: Environ keys that the ASGI scope carries, or that the ASGI side builds itself.
_SCOPE_KEYS = {
    "REQUEST_METHOD",
    "SCRIPT_NAME",
    "PATH_INFO",
    "QUERY_STRING",
    "CONTENT_TYPE",
    "CONTENT_LENGTH",
    "SERVER_NAME",
    "SERVER_PORT",
    "SERVER_PROTOCOL",
    "REMOTE_ADDR",
    "REMOTE_PORT",
}


def scope_from_environ(environ: dict[str, Any]) -> dict[str, Any]:
    """The ASGI scope an ASGI server would build for the request ``environ`` describes."""
    headers = []
    extra = {}
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            name = key[5:].replace("_", "-").lower()
            headers.append((name.encode("latin-1"), value.encode("latin-1")))
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            if value:
                name = key.replace("_", "-").lower()
                headers.append((name.encode("latin-1"), value.encode("latin-1")))
        elif key not in _SCOPE_KEYS and (key == "wsgi.errors" or not key.startswith("wsgi.")):
            extra[key] = value  # WSGI-only keys (errors stream, Werkzeug's hooks) ride along
    root_path = environ.get("SCRIPT_NAME", "").encode("latin-1").decode("utf-8", "surrogateescape")
    path = environ.get("PATH_INFO", "").encode("latin-1").decode("utf-8", "surrogateescape")
    protocol = environ.get("SERVER_PROTOCOL", "HTTP/1.1")
    remote_port = environ.get("REMOTE_PORT")
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": protocol.partition("/")[2] or "1.1",
        "method": environ["REQUEST_METHOD"],
        "scheme": environ.get("wsgi.url_scheme", "http"),
        "path": root_path + path,
        "raw_path": (root_path + path).encode("utf-8", "surrogateescape"),
        "query_string": environ.get("QUERY_STRING", "").encode("latin-1"),
        "root_path": root_path,
        "headers": headers,
        "server": (environ.get("SERVER_NAME", "localhost"), int(environ.get("SERVER_PORT") or 80)),
        "client": (environ.get("REMOTE_ADDR", "127.0.0.1"), int(remote_port or 0)),
        "extensions": {ENVIRON_EXTENSION: extra},
    }


class _Interrupted(Exception):
    """Carries KeyboardInterrupt/SystemExit out of a loop task, which they would stop."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


def _call(coro: Coroutine[Any, Any, T]) -> T:
    """``await_(coro)``, re-raising a KeyboardInterrupt/SystemExit the app raised."""
    try:
        return await_(coro)
    except _Interrupted as interrupted:
        raise interrupted.error from None


class _ResponseBody(Iterator[bytes]):
    """The response body as the ASGI app sends it, pulled lazily by the test."""

    def __init__(self, exchange: _Exchange) -> None:
        self._exchange = exchange

    def __next__(self) -> bytes:
        chunk = _call(self._exchange.next_chunk())
        if chunk is None:
            raise StopIteration
        return chunk

    def close(self) -> None:
        _call(self._exchange.close())


class _Exchange:
    """One request sent to the ASGI app, seen from the client side."""

    def __init__(self, asgi: ASGI, environ: dict[str, Any]) -> None:
        self.scope = scope_from_environ(environ)
        self.environ = environ
        self.messages: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.gone = asyncio.Event()
        self.body_sent = False
        self.more_body = True
        self.error: BaseException | None = None
        self.task = asyncio.get_running_loop().create_task(self._run(asgi))
        self.task.add_done_callback(lambda _: self.messages.put_nowait(None))

    async def _run(self, asgi: ASGI) -> None:
        try:
            await asgi(self.scope, self.receive, self.send)
        except (KeyboardInterrupt, SystemExit) as exc:
            # Raised into the loop, these would stop it: hand them to the test instead.
            self.error = exc

    def _raise_error(self) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            raise _Interrupted(error)
        if self.task.done() and not self.task.cancelled() and self.task.exception():
            self.task.result()

    async def receive(self) -> dict[str, Any]:
        if not self.body_sent:
            self.body_sent = True
            return {"type": "http.request", "body": self._read_input(), "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    def _read_input(self) -> bytes:
        stream = self.environ.get("wsgi.input")
        if stream is None:
            return b""
        length = self.environ.get("CONTENT_LENGTH")
        if length:
            return bytes(stream.read(int(length)))
        if self.environ.get("wsgi.input_terminated"):
            return bytes(stream.read())
        return b""

    async def send(self, message: dict[str, Any]) -> None:
        await self.messages.put(message)

    async def _next_message(self) -> dict[str, Any]:
        message = await self.messages.get()
        if message is None:  # the app returned (or raised) before it finished its response
            self.gone.set()
            self._raise_error()  # the app's exception, raised here as Werkzeug's client would
            raise RuntimeError("the ASGI app returned without completing its response")
        return message

    async def start(self) -> tuple[str, list[tuple[str, str]]]:
        message = await self._next_message()
        status = message["status"]
        try:
            phrase = HTTPStatus(status).phrase.upper()
        except ValueError:
            phrase = "UNKNOWN"
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in message["headers"]]
        return f"{status} {phrase}", headers

    async def next_chunk(self) -> bytes | None:
        while self.more_body:
            message = await self._next_message()
            self.more_body = message.get("more_body", False)
            if message.get("body"):
                return bytes(message["body"])
        await self.close()
        return None

    async def close(self) -> None:
        """The client is done: a still-running app sees a disconnect; its errors surface."""
        self.gone.set()
        if not self.task.done():
            await asyncio.wait({self.task}, timeout=5)
            if not self.task.done():
                self.task.cancel()
        self._raise_error()


def asgi_as_wsgi(asgi: ASGI) -> Any:
    """A WSGI callable that sends each request through ``asgi`` (for Werkzeug's client)."""

    def app(environ: dict[str, Any], start_response: Any) -> _ResponseBody:
        async def begin() -> tuple[_Exchange, tuple[str, list[tuple[str, str]]]]:
            exchange = _Exchange(asgi, environ)
            return exchange, await exchange.start()

        exchange, (status, headers) = _call(begin())
        start_response(status, headers)
        return _ResponseBody(exchange)

    return app


class FlaskClient(flask.testing.FlaskClient):
    """Flask's test client, with every request sent through the app's ASGI path."""

    def run_wsgi_app(self, environ: dict[str, Any], buffered: bool = False) -> tuple[Any, str, Any]:
        from .extension import ASGI

        # Werkzeug's Client.run_wsgi_app, with the ASGI path in place of the WSGI app.
        self._add_cookies_to_wsgi(environ)
        rv = run_wsgi_app(asgi_as_wsgi(ASGI.of(self.application)), environ, buffered=buffered)
        url = urlsplit(get_current_url(environ))
        self._update_cookies_from_response(
            url.hostname or "localhost", url.path, rv[2].getlist("Set-Cookie")
        )
        return rv

    def websocket(self, path: str = "/", **kwargs: Any) -> WebSocketSession:
        """A WebSocket connection to ``path``: ``with client.websocket("/ws") as ws:``
        (see docs/websockets.md)."""
        from .extension import ASGI
        from .websocket_testing import WebSocketSession

        return WebSocketSession(ASGI.of(self.application), self, path, **kwargs)


class AsyncClient:
    """``async with asgi.test_client() as client: response = await client.get("/")``.

    Wraps the app's sync test client: its cookie jar and request building run in a
    greenlet, and the request itself runs on the test's event loop. Responses are Flask's
    ``TestResponse``, fully read. ``lifespan=True`` runs the serving hooks around the block.
    """

    def __init__(self, asgi: ASGI, lifespan: bool = False, **kwargs: Any) -> None:
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
        response: TestResponse = await run_in_greenlet(lambda: self.client.open(*args, **kwargs))
        return response

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
        from .websocket_testing import AsyncWebSocketSession

        return AsyncWebSocketSession(self.asgi, self.client, path, **kwargs)


class Lifespan:
    """Drive the app's ASGI lifespan as a server would (see ``ASGI.serving``)."""

    def __init__(self, asgi: ASGI) -> None:
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
        self._inbox, self._outbox = asyncio.Queue(), asyncio.Queue()
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}}
        self._task = asyncio.get_running_loop().create_task(
            self.asgi(scope, self._inbox.get, self._outbox.put)
        )
        await self._inbox.put({"type": "lifespan.startup"})
        await self._expect("lifespan.startup.complete")
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        assert self._inbox is not None and self._task is not None
        await self._inbox.put({"type": "lifespan.shutdown"})
        await self._expect("lifespan.shutdown.complete")
        await self._task

    def __enter__(self) -> Lifespan:
        await_(self.__aenter__())
        return self

    def __exit__(self, *exc_info: Any) -> None:
        await_(self.__aexit__(*exc_info))
