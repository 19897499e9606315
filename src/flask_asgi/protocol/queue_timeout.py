"""``FLASK_ASGI_QUEUE_TIMEOUT``: a sync request waits for a worker thread for so long, then 503.

Admission as the WSGI servers people know it: a burst of sync requests is queued (as
gunicorn's backlog queues connections), not refused by a small count, and the wait is
bounded in time, so a client or load balancer gets a clear answer (503 with
``Retry-After``) it can retry elsewhere instead of a request that hangs. The app never runs
for a refused request.

The loop and the worker thread race for the request's :class:`WaitingTicket`: whichever
ends it first decides (the loop: 503 and the job is skipped; the thread: it runs the
request and the loop waits for its answer as usual). Nothing of this runs while a thread
is free, which is every request of a server that is not saturated.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from concurrent.futures import Executor
from typing import Any, TypeVar

from werkzeug.exceptions import ServiceUnavailable

from ..ground.asgi_types import Send
from ..ground.counters import WaitingTicket, counters
from ..ground.pools import WorkerPool
from .refusal import refuse

T = TypeVar("T")

#: With a 503 for overload: the client may try again in a second.
RETRY_AFTER = (b"retry-after", b"1")


def all_busy(executor: Executor) -> bool:
    """Every thread of flask-asgi's pool has a job: a new one would wait in its queue."""
    return type(executor) is WorkerPool and executor.pending >= executor._max_workers


async def within_queue_timeout(
    job: Coroutine[Any, Any, T | None], ticket: WaitingTicket, seconds: float, send: Send
) -> T | None:
    """Await ``job`` (a ``run_in_worker`` whose function first ends ``ticket``), but if no
    thread has taken it after ``seconds``, answer 503 and skip it. None: answered here."""
    task = asyncio.ensure_future(job)
    try:
        done, _ = await asyncio.wait({task}, timeout=seconds)
    except asyncio.CancelledError:
        task.cancel()  # skips the job if it has not started, as awaiting it directly would
        raise
    if done or not ticket.end():  # done, or a thread has just taken it: its answer counts
        return await task
    task.cancel()  # not started: skipped (if a thread takes it now, it sees the ended ticket)
    counters.add("refused_queue_timeout_total")
    await refuse(send, ServiceUnavailable(), [RETRY_AFTER])
    return None
