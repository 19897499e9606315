"""A request sent to an ASGI app from the client side: the ASGI scope an ASGI server would
build from a WSGI environ, and a WSGI callable (:func:`asgi_as_wsgi`) that sends each
request Werkzeug's test client makes through the ASGI path instead of ``wsgi_app``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from http import HTTPStatus
from typing import Any, Protocol, TypeVar

from flask import Flask

from ..ground.asgi_types import Receive, Send
from ..protocol.environ import ENVIRON_EXTENSION
from .serving_loop import _Interrupted, call_on_serving_loop

T = TypeVar("T")

#: An ASGI application (the ``ASGI`` object, or anything with its signature).
ASGIApp = Callable[[dict[str, Any], Receive, Send], Coroutine[Any, Any, None]]


class ServedApp(Protocol):
    """What the test clients need of the ``ASGI`` object: its app, and the ASGI callable."""

    @property
    def app(self) -> Flask: ...

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None: ...


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


def _call(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on the serving loop; a KeyboardInterrupt/SystemExit the app raised
    comes out here."""
    return call_on_serving_loop(coro)


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

    def __init__(self, asgi: ASGIApp, environ: dict[str, Any]) -> None:
        self.scope = scope_from_environ(environ)
        self.environ = environ
        self.messages: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.gone = asyncio.Event()
        self.body_sent = False
        self.more_body = True
        self.error: BaseException | None = None
        self.task = asyncio.get_running_loop().create_task(self._run(asgi))
        self.task.add_done_callback(lambda _: self.messages.put_nowait(None))

    async def _run(self, asgi: ASGIApp) -> None:
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
        # A sync endpoint's body is received before the app runs (even a body it never
        # reads, as for a routing redirect): leave the client's stream where it was, so
        # that Werkzeug's follow_redirects can send a 307/308's body again, as a browser
        # would.
        start = stream.tell() if getattr(stream, "seekable", lambda: False)() else None
        length = self.environ.get("CONTENT_LENGTH")
        if length:
            data = bytes(stream.read(int(length)))
        elif self.environ.get("wsgi.input_terminated"):
            data = bytes(stream.read())
        else:
            data = b""
        if start is not None:
            stream.seek(start)
        return data

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            self.gone.set()  # the response is complete: receive() answers http.disconnect
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


def asgi_as_wsgi(asgi: ASGIApp) -> Any:
    """A WSGI callable that sends each request through ``asgi`` (for Werkzeug's client)."""

    def app(environ: dict[str, Any], start_response: Any) -> _ResponseBody:
        async def begin() -> tuple[_Exchange, tuple[str, list[tuple[str, str]]]]:
            exchange = _Exchange(asgi, environ)
            return exchange, await exchange.start()

        exchange, (status, headers) = _call(begin())
        start_response(status, headers)
        return _ResponseBody(exchange)

    return app
