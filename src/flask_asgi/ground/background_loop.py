"""One shared event loop in a daemon thread, for code that runs outside an ASGI server.

Under a WSGI server (``flask run``, gunicorn) and in Flask's synchronous test client there
is no server loop. Rather than a new loop per call (what ``flask[async]`` does, which breaks
every loop-bound client between requests), all such coroutines run on this one loop.
"""

from __future__ import annotations

import asyncio
import threading

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def background_loop() -> asyncio.AbstractEventLoop:
    """Return the process-wide background loop, starting its thread on first use."""
    global _loop
    loop = _loop
    if loop is not None and loop.is_running():
        return loop
    with _lock:
        if _loop is None or _loop.is_closed():
            _loop = asyncio.new_event_loop()
            ready = threading.Event()
            thread = threading.Thread(
                target=_run, args=(_loop, ready), name="flask-asgi-loop", daemon=True
            )
            thread.start()
            ready.wait()
        return _loop


def _run(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
    asyncio.set_event_loop(loop)
    loop.call_soon(ready.set)
    loop.run_forever()
