"""flask-asgi: serve an unmodified Flask app on ASGI, async views native on one shared loop."""

from .background import add_background_task, background_task_failed
from .bridge import await_, run_sync
from .extension import ASGI
from .sse import ServerSentEvent, event_stream, last_event_id
from .streaming import stream
from .websocket import WebSocket, WebSocketDisconnect, websocket, websocket_route

__all__ = [
    "ASGI",
    "ServerSentEvent",
    "add_background_task",
    "await_",
    "background_task_failed",
    "event_stream",
    "last_event_id",
    "run_sync",
    "stream",
    "WebSocket",
    "WebSocketDisconnect",
    "websocket",
    "websocket_route",
]
__version__ = "0.1.0"
