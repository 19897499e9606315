"""flask-asgi: serve an unmodified Flask app on ASGI, async views native on one shared loop.

The public API is what this module exports, plus ``flask_asgi.testing`` (the test clients),
``flask_asgi.tracing`` and the ``flask serve`` command. ``ground``, ``protocol``,
``features`` and ``serving`` are internal: their layout may change in any release, and
tests/test_docs.py fails if a doc or an example reaches into them.
"""

from .extension import ASGI
from .features.background import add_background_task, background_task_failed
from .features.broadcast_redis import BroadcastError, BroadcastGap
from .features.sse import ServerSentEvent, encode_event, event_stream, last_event_id
from .features.streaming import stream
from .ground.app_state import stopping
from .ground.bridge import await_, run_sync
from .ground.counters import counters
from .ground.lifecycle import Lifecycle, StopSignal
from .ground.settings import SettingError
from .ground.view_timeout import timeout
from .ground.websocket_needs_asgi import WebSocketNeedsASGI
from .protocol.body import BodyTimeout
from .protocol.websocket import WebSocket, WebSocketDisconnect, websocket, websocket_route
from .serving.options import PortInUse

__all__ = [
    "ASGI",
    "BodyTimeout",
    "BroadcastError",
    "BroadcastGap",
    "Lifecycle",
    "PortInUse",
    "ServerSentEvent",
    "SettingError",
    "add_background_task",
    "await_",
    "background_task_failed",
    "counters",
    "encode_event",
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
