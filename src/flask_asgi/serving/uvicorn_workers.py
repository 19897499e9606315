"""``flask serve --workers N`` on uvicorn: N processes, each a ``GracefulServer``, on one socket.

Why not uvicorn's own supervisor (``uvicorn.supervisors.Multiprocess``): each of its
workers is a plain ``uvicorn.Server``, built inside uvicorn (``Process.server``), whose
shutdown resets the requests still queued or unread (issue 21: 19 lost in 1 of 3 rounds
under ``--workers 2``); making it ours means replacing the classes that build it in four
places. And its parent keeps its copy of the listening socket open until every worker
has exited, so a connection queued after the last worker stopped accepting is reset when
the parent exits. This supervisor is small, and ours:

* the parent binds and listens (a port in use fails before any process starts, as with
  one process) and starts N spawned processes that inherit the socket;
* each process loads the app by import path and serves it on ``GracefulServer``, which on
  SIGTERM accepts every connection still queued on the shared socket before it closes its
  own copy (the last copy closed stops the listening);
* on SIGTERM or SIGINT the parent closes its copy first, sends each process SIGTERM once
  (SIGTERM even for Ctrl-C: the terminal has already sent the processes SIGINT, and a
  second SIGINT makes uvicorn force its exit) and waits for each to finish its drain, then
  kills what is still running after the drain's bounds;
* a process that dies after its startup is replaced; one that exits before it started
  serving (a failing startup hook, an import error) stops them all with its status, as in
  one process (3: startup failed).

Left out, unlike uvicorn's: no health pings of hung processes, no SIGHUP/SIGTTIN/SIGTTOU.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from multiprocessing.synchronize import Event
from typing import Any

logger = logging.getLogger("uvicorn.error")

_spawn = multiprocessing.get_context("spawn")  # as uvicorn: no state forked from the parent

#: Seconds between two looks at the processes.
POLL = 0.2

#: What a worker process runs: the shared socket, an event to set once it serves, and
#: the caller's arguments (picklable: a module-level function, as ``spawn`` needs).
Target = Callable[..., None]


class Worker:
    """One serving process and whether it has told us that its startup is done."""

    def __init__(self, target: Target, sock: socket.socket, args: tuple[Any, ...]) -> None:
        self.started: Event = _spawn.Event()
        self.process = _spawn.Process(target=target, args=(sock, self.started, *args))
        self.process.start()

    def terminate(self) -> None:
        if self.process.exitcode is None and self.process.pid is not None:
            os.kill(self.process.pid, signal.SIGTERM)


def supervise(
    sock: socket.socket,
    target: Target,
    args: tuple[Any, ...],
    workers: int,
    stop_timeout: float,
) -> int:
    """Serve with ``workers`` processes running ``target(sock, started, *args)`` until
    SIGTERM/SIGINT; the exit status (0, or a process's status if one failed to start).
    ``stop_timeout``: seconds the processes get to drain after the signal."""
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    logger.info("Started parent process [%d]", os.getpid())
    processes: list[Worker] = []
    status = 0
    try:
        processes = [Worker(target, sock, args) for _ in range(workers)]
        while not stop.wait(POLL):
            status = _replace_dead(processes, target, sock, args)
            if status:
                break
    finally:
        sock.close()  # the processes' copies go on listening until each has drained
        for worker in processes:
            worker.terminate()
        _join(processes, stop_timeout)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    logger.info("Stopping parent process [%d]", os.getpid())
    return status


def _replace_dead(
    processes: list[Worker], target: Target, sock: socket.socket, args: tuple[Any, ...]
) -> int:
    """Start a new process for each one that has died while serving; a non-zero status if
    one exited before serving (restarting it would fail the same way, again and again)."""
    for index, worker in enumerate(processes):
        code = worker.process.exitcode
        if code is None:
            continue
        if not worker.started.is_set():
            logger.error(
                "Child process [%s] exited with status %s before serving: stopping",
                worker.process.pid,
                code,
            )
            return code if code > 0 else 1
        logger.warning(
            "Child process [%s] died (status %s): starting another", worker.process.pid, code
        )
        processes[index] = Worker(target, sock, args)
    return 0


def _join(processes: list[Worker], timeout: float) -> None:
    """Wait up to ``timeout`` seconds in all for the processes to end; kill the rest."""
    deadline = time.monotonic() + timeout
    for worker in processes:
        worker.process.join(max(0.0, deadline - time.monotonic()))
    for worker in processes:
        if worker.process.exitcode is None:
            logger.error(
                "Child process [%s] still running %gs after SIGTERM: killed",
                worker.process.pid,
                timeout,
            )
            worker.process.kill()
            worker.process.join()
