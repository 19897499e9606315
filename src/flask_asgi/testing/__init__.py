"""Test clients: ``app.test_client()`` (Flask's, through the ASGI path) and
``asgi.test_client()`` (async), both with ``client.websocket(path)``; ``asgi.serving()``
runs the lifespan around a block. All of them run the app on one serving loop
(:func:`serving_loop`); :func:`on_serving_loop` awaits a coroutine there from a test."""

from .client import AsyncClient, FlaskClient, Lifespan
from .exchange import asgi_as_wsgi, scope_from_environ
from .serving_loop import on_serving_loop, serving_loop
from .websocket import AsyncWebSocketSession, WebSocketRejected, WebSocketSession

__all__ = [
    "AsyncClient",
    "AsyncWebSocketSession",
    "FlaskClient",
    "Lifespan",
    "WebSocketRejected",
    "WebSocketSession",
    "asgi_as_wsgi",
    "on_serving_loop",
    "scope_from_environ",
    "serving_loop",
]
