"""flask-asgi: serve an unmodified Flask app on ASGI, async views native on one shared loop."""

from .bridge import await_, run_sync
from .extension import ASGI
from .streaming import stream

__all__ = ["ASGI", "await_", "run_sync", "stream"]
__version__ = "0.1.0"
