"""Noticing that a client went away: flag the exchange, cancel an async request's task.

A response that streams is watched from its start (:func:`watch_disconnect`); an async
request that waits is watched 0.25 to 0.5 s after it first waits, by one
:class:`WatchSchedule` per loop (:func:`first_await`).
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .exchange import Exchange


def watch_disconnect(exchange: Exchange) -> None:
    """Notice the client going away: flag it, and cancel an async endpoint's request task.

    Started only once the request body has been read (the watcher would otherwise take
    body messages from the app) and only when the request waits or streams, so a
    request that answers at once costs no extra task.
    """
    if exchange.watcher is not None or not exchange.body.complete:
        return
    cancel = exchange.task

    async def watch() -> None:
        while True:
            message = await exchange.receive()
            if message["type"] == "http.disconnect":
                break
        if not exchange.finished:
            exchange.disconnected = True
            if cancel is not None:
                cancel.cancel()

    exchange.watcher = asyncio.get_running_loop().create_task(watch())


#: Seconds an async request must have been waiting before a watcher listens for the client
#: going away. A watcher is a task per request plus its cancellation (measured: about 10% of
#: the CPU of a request that waits 50 ms); most requests finish sooner and never pay it.
WATCH_DELAY = 0.25


class WatchSchedule:
    """One timer per loop for every waiting request, instead of a ``call_later`` each.

    A timer per request (created at its first suspension, cancelled when it ends) was a
    measurable part of the suspension path on uvloop. Here each tick, every WATCH_DELAY
    seconds while requests wait, starts the watchers of the requests that were already
    waiting at the previous tick: a request is watched 0.25 to 0.5 s after it first waits.
    """

    __slots__ = ("loop", "young", "old", "ticking")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.young: set[Exchange] = set()  # began waiting since the last tick
        self.old: set[Exchange] = set()  # were waiting at the last tick: due at the next
        self.ticking = False

    def add(self, exchange: Exchange) -> None:
        exchange.watch_pending = self
        self.young.add(exchange)
        if not self.ticking:
            self.ticking = True
            self.loop.call_later(WATCH_DELAY, self._tick)

    def discard(self, exchange: Exchange) -> None:
        exchange.watch_pending = None
        self.young.discard(exchange)
        self.old.discard(exchange)

    def _tick(self) -> None:
        due, self.old, self.young = self.old, self.young, set()
        for exchange in due:
            exchange.watch_pending = None
            _watch_when_complete(exchange)
        if self.old:
            self.loop.call_later(WATCH_DELAY, self._tick)
        else:
            self.ticking = False


_schedules = threading.local()


def watch_schedule() -> WatchSchedule:
    """The running loop's schedule (one loop runs per thread at a time)."""
    loop = asyncio.get_running_loop()
    schedule: WatchSchedule | None = getattr(_schedules, "current", None)
    if schedule is None or schedule.loop is not loop:
        schedule = _schedules.current = WatchSchedule(loop)
    return schedule


def _watch_when_complete(exchange: Exchange) -> None:
    # One whose body is still arriving gets its watcher when the body is complete.
    if exchange.body.complete:
        watch_disconnect(exchange)
    else:
        exchange.body.on_complete = lambda: watch_disconnect(exchange)


def first_await(exchange: Exchange) -> None:
    exchange.request_task()
    watch_schedule().add(exchange)
