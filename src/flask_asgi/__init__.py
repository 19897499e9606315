"""flask-asgi: serve an unmodified Flask app on ASGI, async views native on one shared loop."""

from .extension import ASGI
from .features.background import add_background_task, background_task_failed
from .features.sse import ServerSentEvent, event_stream, last_event_id
from .features.streaming import stream
from .ground.bridge import await_, run_sync
from .ground.lifecycle import StopSignal
from .ground.state import stopping
from .ground.view_timeout import timeout
from .ground.websocket_needs_asgi import WebSocketNeedsASGI
from .protocol.websocket import WebSocket, WebSocketDisconnect, websocket, websocket_route

__all__ = [
    "ASGI",
    "ServerSentEvent",
    "add_background_task",
    "await_",
    "background_task_failed",
    "event_stream",
    "last_event_id",
    "run_sync",
    "stopping",
    "StopSignal",
    "stream",
    "timeout",
    "WebSocket",
    "WebSocketDisconnect",
    "WebSocketNeedsASGI",
    "websocket",
    "websocket_route",
]
__version__ = "0.1.0"
