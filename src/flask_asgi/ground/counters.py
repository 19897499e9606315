"""What the process is doing and what it refused: counts for limits, health and metrics.

One object per process (:data:`counters`): the limits it serves are per process (a worker
pool is shared by every app of the process), and a metrics endpoint reads it as it is.
Gauges go up and down; ``*_total`` counters only go up.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, field, fields
from typing import Protocol


class InFlightSource(Protocol):
    """Counts of one app's HTTP requests in flight (a ``AppState``)."""

    async_requests: int
    sync_requests: int


@dataclass
class RequestCounters:
    #: Sync HTTP requests queued for a worker thread (their body already received).
    waiting: int = 0
    #: 503s because FLASK_ASGI_MAX_REQUESTS requests were in flight.
    refused_max_requests_total: int = 0
    #: 503s because FLASK_ASGI_MAX_WAITING sync requests were waiting for a thread.
    refused_max_waiting_total: int = 0
    #: 503s because a sync request waited FLASK_ASGI_QUEUE_TIMEOUT for a thread.
    refused_queue_timeout_total: int = 0
    #: Requests whose body did not arrive within FLASK_ASGI_BODY_TIMEOUT.
    body_timeouts_total: int = 0
    #: Requests that ran past FLASK_ASGI_REQUEST_TIMEOUT / @flask_asgi.timeout (async ones
    #: were cancelled and answered 504 or cut off; sync ones were logged and ran on).
    request_timeouts_total: int = 0
    #: Connections closed because no complete request headers came in time (flask serve).
    header_timeouts_total: int = 0
    _lock: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )
    _sources: weakref.WeakSet[InFlightSource] = field(
        default_factory=weakref.WeakSet, init=False, repr=False, compare=False
    )

    @property
    def in_flight(self) -> int:
        """HTTP requests being handled now, by every app of the process.

        Summed from each app's own counts (:meth:`track`), which its loop keeps as plain
        ints: a process-wide counter under a lock, twice per request, was a measurable
        part of a request that answers at once.
        """
        return sum(s.async_requests + s.sync_requests for s in list(self._sources))

    def track(self, source: InFlightSource) -> None:
        """Count ``source``'s requests in :attr:`in_flight` (for as long as it lives)."""
        self._sources.add(source)

    def add(self, name: str, amount: int = 1) -> int:
        """Add ``amount`` to the count ``name`` (from any thread); return the new value."""
        with self._lock:
            value: int = getattr(self, name) + amount
            setattr(self, name, value)
            return value

    def snapshot(self) -> dict[str, int]:
        """All the counts at one instant."""
        with self._lock:
            counts = {f.name: getattr(self, f.name) for f in fields(self) if f.init}
        return {"in_flight": self.in_flight, **counts}


class WaitingTicket:
    """One sync request counted in ``waiting`` until a thread takes it, or it is abandoned
    (whichever comes first: both call :meth:`end`). The loop and the thread race for it once
    the queue timeout is near: :meth:`end` returns True only for the one that ended it."""

    __slots__ = ("_counters", "_waiting")

    def __init__(self, counts: RequestCounters) -> None:
        self._counters = counts
        self._waiting = True
        with counts._lock:
            counts.waiting += 1

    def end(self) -> bool:
        if not self._waiting:  # ended already (it never starts again): no lock to take
            return False
        counts = self._counters
        with counts._lock:
            if self._waiting:
                self._waiting = False
                counts.waiting -= 1
                return True
            return False


#: The process's counts (read them with ``counters.snapshot()``).
counters = RequestCounters()
