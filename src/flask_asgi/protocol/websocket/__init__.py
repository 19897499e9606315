"""WebSocket routes for an unmodified Flask app, the Flask way.

``routing`` puts WebSocket rules on Flask's ``url_map``; ``connection`` is the connection a
handler sees (the :data:`websocket` proxy); ``handshake`` turns the handshake into a WSGI
environ and refuses it with a response; ``middleware`` sends it down the WSGI middleware on
``app.wsgi_app``; ``origin`` refuses cross-origin handshakes; ``pipeline`` runs Flask's
request pipeline for one connection.
"""

from .connection import HTTP_RESPONSE_EXTENSION, Message, WebSocket, WebSocketDisconnect, websocket
from .pipeline import handle_websocket, run_connection
from .routing import websocket_route

__all__ = [
    "HTTP_RESPONSE_EXTENSION",
    "Message",
    "WebSocket",
    "WebSocketDisconnect",
    "handle_websocket",
    "run_connection",
    "websocket",
    "websocket_route",
]
