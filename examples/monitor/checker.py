"""HTTP checks and the scheduler that runs them on the server's event loop.

Why aiohttp and not httpx: every check goes through ONE shared client created at startup.
With hundreds of checks in flight, httpx's ``AsyncClient`` connection pool has been
measured collapsing to about 10 requests/s (around 500 concurrent calls, see bench/),
while aiohttp's connector keeps up. A monitor must keep its schedule when many endpoints
are slow at the same time, so it uses aiohttp, with a semaphore bounding the number of
checks in flight and a per-check timeout.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import aiohttp

from .store import CheckResult, Store

logger = logging.getLogger("monitor")

USER_AGENT = "flask-asgi-monitor/0.1"
MAX_BODY = 64 * 1024  # read at most this much of a response (the check is about the status)


def make_http_client(concurrency: int) -> aiohttp.ClientSession:
    """The app's one HTTP client (create it on the server loop)."""
    connector = aiohttp.TCPConnector(limit=concurrency, ttl_dns_cache=60)
    return aiohttp.ClientSession(
        connector=connector,
        headers={"User-Agent": USER_AGENT},
        trust_env=False,
        raise_for_status=False,
    )


def _reason(exc: BaseException, timeout: float) -> str:
    """A short, human reason for a failed check."""
    if isinstance(exc, TimeoutError):  # aiohttp's timeouts are TimeoutError subclasses
        return f"timeout after {timeout:g} s"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"DNS error: {exc.os_error or exc}"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"TLS certificate error: {exc.certificate_error}"
    if isinstance(exc, aiohttp.ClientSSLError | ssl.SSLError):
        return f"TLS error: {exc}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        error = exc.os_error
        if isinstance(error, ConnectionRefusedError):
            return "connection refused"
        return f"connection error: {error.strerror or error}"
    if isinstance(exc, aiohttp.InvalidURL):
        return f"invalid URL: {exc}"
    if isinstance(exc, aiohttp.TooManyRedirects):
        return "too many redirects"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "server disconnected"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def probe(http: aiohttp.ClientSession, url: str, timeout: float) -> CheckResult:
    """GET ``url`` once. Never raises (except CancelledError): failures are results."""
    checked_at = time.time()
    started = time.perf_counter()
    try:
        async with http.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            await response.content.read(MAX_BODY)
            status = response.status
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # every failure is a failed check, never a crash
        return CheckResult(False, None, None, _reason(exc, timeout), checked_at)
    latency_ms = round((time.perf_counter() - started) * 1000, 1)
    if status >= 400:
        return CheckResult(False, status, latency_ms, f"HTTP {status}", checked_at)
    return CheckResult(True, status, latency_ms, None, checked_at)


def channel(user_id: int) -> str:
    """The broadcast channel that carries one user's live updates."""
    return f"monitor-user-{user_id}"


def message(event: str, data: Any) -> str:
    return json.dumps({"event": event, "data": data})


@dataclass
class Scheduled:
    id: int
    user_id: int
    url: str
    interval: float
    timeout: float
    next_due: float


Publish = Callable[[str, str], Coroutine[Any, Any, None]]


class Scheduler:
    """Runs every monitor at its interval, on the loop it is started on.

    ``run()`` is one long-lived task: it keeps the monitors in memory (re-read from the
    database on ``notify()`` and every ``refresh`` seconds, so monitors added by another
    process are picked up too) and starts one check task per due monitor. A semaphore
    bounds the checks in flight; a monitor whose previous check is still running is not
    started twice.
    """

    def __init__(
        self,
        store: Store,
        http: aiohttp.ClientSession,
        publish: Publish,
        concurrency: int = 50,
        refresh: float = 30.0,
        keep_checks: int = 2000,
    ) -> None:
        self.store = store
        self.http = http
        self.publish = publish
        self.semaphore = asyncio.Semaphore(concurrency)
        self.refresh = refresh
        self.keep_checks = keep_checks
        self.monitors: dict[int, Scheduled] = {}
        self.running: dict[int, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.checks_done = 0
        #: Where this server is serving (``http://host:port``), for monitors whose URL is a
        #: path on it (``/demo/up``); None until the first request tells (demo.py).
        self.base_url: str | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run(), name="monitor-scheduler")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self.running.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None

    def set_base_url(self, base_url: str) -> None:
        """This server's address is known (from any thread: sync requests run in workers)."""
        if self._task is not None:
            self._task.get_loop().call_soon_threadsafe(self._address_known, base_url)

    def _address_known(self, base_url: str) -> None:
        if self.base_url is None:
            self.base_url = base_url.rstrip("/")
            for item in self.monitors.values():
                if item.url.startswith("/"):
                    item.next_due = 0.0  # the monitors on this server are due at once
            self._wake.set()

    def url_of(self, item: Scheduled) -> str | None:
        """The URL to check: a path is on this server (None while its address is unknown)."""
        if not item.url.startswith("/"):
            return item.url
        return None if self.base_url is None else self.base_url + item.url

    def notify(self) -> None:
        """Monitors changed: reload them now (a new monitor is checked at once)."""
        self._wake.set()

    async def reload(self) -> None:
        now = asyncio.get_running_loop().time()
        fresh: dict[int, Scheduled] = {}
        for monitor in await self.store.list_monitors():
            old = self.monitors.get(monitor.id)
            next_due = now
            if old is not None and old.interval == monitor.interval:
                next_due = old.next_due
            fresh[monitor.id] = Scheduled(
                monitor.id,
                monitor.user_id,
                monitor.url,
                float(monitor.interval),
                float(monitor.timeout),
                next_due,
            )
        self.monitors = fresh

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_refresh = 0.0
        next_prune = loop.time() + 600
        while True:
            now = loop.time()
            if self._wake.is_set() or now >= next_refresh:
                self._wake.clear()
                try:
                    await self.reload()
                except Exception:
                    logger.exception("monitor: could not load the monitors; retrying")
                next_refresh = now + self.refresh
            if now >= next_prune:
                next_prune = now + 600
                try:
                    await self.store.prune_checks(self.keep_checks)
                except Exception:
                    logger.exception("monitor: pruning old checks failed")
            now = loop.time()
            for item in self.monitors.values():
                if item.url.startswith("/") and self.base_url is None:
                    item.next_due = now + item.interval  # wait for this server's address
                    continue
                if item.next_due <= now and item.id not in self.running:
                    item.next_due = now + item.interval
                    task = loop.create_task(self._check(item), name=f"check-{item.id}")
                    self.running[item.id] = task
                    task.add_done_callback(lambda t, i=item.id: self.running.pop(i, None))
            wake_at = min([next_refresh, *(m.next_due for m in self.monitors.values())])
            try:
                await asyncio.wait_for(self._wake.wait(), max(0.05, wake_at - loop.time()))
            except TimeoutError:
                pass

    async def _check(self, item: Scheduled) -> None:
        try:
            async with self.semaphore:
                url = self.url_of(item)
                assert url is not None
                result = await probe(self.http, url, item.timeout)
            recorded = await self.store.record_check(item.id, result)
            self.checks_done += 1
            if recorded is None:  # deleted while it was being checked
                return
            monitor, check = recorded
            await self.publish(
                channel(item.user_id),
                message("check", {"monitor": monitor.to_dict(), "check": check.to_dict()}),
            )
        except asyncio.CancelledError:
            raise
        except Exception:  # a database hiccup must not stop the schedule
            logger.exception("monitor: check of monitor %s could not be recorded", item.id)
