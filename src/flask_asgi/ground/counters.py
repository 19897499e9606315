"""What the process is doing and what it refused: counts for limits, health and metrics.

One object per process (:data:`counters`): the limits it serves are per process (a worker
pool is shared by every app of the process), and a metrics endpoint reads it as it is.
Gauges go up and down; ``*_total`` counters only go up.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, fields


@dataclass
class RequestCounters:
    #: HTTP requests being handled now (from the scope's arrival to the last message).
    in_flight: int = 0
    #: Sync HTTP requests queued for a worker thread (their body already received).
    waiting: int = 0
    #: 503s because FLASK_ASGI_MAX_REQUESTS requests were in flight.
    refused_max_requests_total: int = 0
    #: 503s because FLASK_ASGI_MAX_WAITING sync requests were waiting for a thread.
    refused_max_waiting_total: int = 0
    #: Requests whose body did not arrive within FLASK_ASGI_BODY_TIMEOUT.
    body_timeouts_total: int = 0
    #: Requests that ran past FLASK_ASGI_REQUEST_TIMEOUT / @flask_asgi.timeout (async ones
    #: were cancelled and answered 504 or cut off; sync ones were logged and ran on).
    request_timeouts_total: int = 0
    #: Connections closed because no complete request headers came in time (flask serve).
    header_timeouts_total: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, name: str, amount: int = 1) -> int:
        """Add ``amount`` to the count ``name`` (from any thread); return the new value."""
        with self._lock:
            value: int = getattr(self, name) + amount
            setattr(self, name, value)
            return value

    def snapshot(self) -> dict[str, int]:
        """All the counts at one instant."""
        with self._lock:
            return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "_lock"}


class WaitingTicket:
    """One sync request counted in ``waiting`` until a thread takes it, or it is abandoned
    (whichever comes first: both call :meth:`end`)."""

    __slots__ = ("_counters", "_waiting")

    def __init__(self, counts: RequestCounters) -> None:
        self._counters = counts
        self._waiting = True
        counts.add("waiting")

    def end(self) -> None:
        counts = self._counters
        with counts._lock:
            if self._waiting:
                self._waiting = False
                counts.waiting -= 1


#: The process's counts (read them with ``counters.snapshot()``).
counters = RequestCounters()
