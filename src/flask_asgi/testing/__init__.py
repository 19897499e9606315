"""Test clients: ``app.test_client()`` (Flask's, through the ASGI path) and
``asgi.test_client()`` (async), both with ``client.websocket(path)``; ``asgi.serving()``
runs the lifespan around a block."""

from .client import AsyncClient, FlaskClient, Lifespan
from .exchange import asgi_as_wsgi, scope_from_environ
from .websocket import AsyncWebSocketSession, WebSocketRejected, WebSocketSession

__all__ = [
    "AsyncClient",
    "AsyncWebSocketSession",
    "FlaskClient",
    "Lifespan",
    "WebSocketRejected",
    "WebSocketSession",
    "asgi_as_wsgi",
    "scope_from_environ",
]
