"""The Redis backend of ``asgi.broadcast``: pub/sub that fails loudly, never silently.

Redis pub/sub delivers at most once: a message published while a subscriber's connection
is down is lost. This backend makes every such moment visible instead of hiding it:

* a publish or a subscribe that Redis does not answer within ``FLASK_ASGI_BROADCAST_TIMEOUT``
  raises :class:`BroadcastError` (a frozen Redis used to hold the caller, a worker thread
  for a sync view, for as long as the TCP connection lived);
* the pub/sub connection is pinged when it has been quiet for a while; a ping left
  unanswered for the timeout, or a connection error, counts as lost: every subscription
  then gets a gap signal (its iteration raises :class:`BroadcastGap` once), and the
  connection is made again at once, with short back-offs, re-subscribing to the channels
  in use (redis-py's ``on_connect``), so that publishes after a Redis restart reach the
  subscribers again within about a second;
* ``publish`` returns the number of connections Redis delivered to (0: nobody got it).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("flask_asgi")

Message = str | bytes
OnMessage = Callable[[str, Message], int]
OnGap = Callable[[str], None]

#: Back-offs between reconnection attempts: short, so subscribers come back soon.
_FIRST_DELAY, _MAX_DELAY = 0.05, 1.0


class BroadcastError(ConnectionError):
    """The broadcast backend (Redis) did not answer in time or could not be reached."""


class BroadcastGap(BroadcastError):
    """Raised once by a subscription's iteration when the connection to the backend was
    lost: messages published from then until it is back are missing (pub/sub delivers at
    most once). Iterating again goes on with the messages published after the reconnect."""


def encode(message: Message) -> bytes:
    # Text travels as UTF-8 (so that redis-cli and other publishers interoperate); bytes
    # get a NUL prefix, which no text message starts with, to come back as bytes.
    return message.encode("utf-8") if isinstance(message, str) else b"\x00" + message


def decode(data: bytes) -> Message:
    if data.startswith(b"\x00"):
        return data[1:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data


class RedisBackend:
    """Redis pub/sub (``redis.asyncio``): one connection pool for publishing, one pub/sub
    connection that this process's subscriptions share, watched by :meth:`_read`."""

    def __init__(self, url: str, on_message: OnMessage, on_gap: OnGap, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        self._on_message = on_message
        self._on_gap = on_gap
        self._redis: Any = None
        self._pubsub: Any = None
        self._reader: asyncio.Task[None] | None = None
        # A private channel, subscribed at once: it opens the pub/sub connection.
        self._control = f"flask-asgi:{uuid.uuid4().hex}"
        self._pending: dict[str, list[asyncio.Future[None]]] = {}
        self.lost = False  # the pub/sub connection is down (a gap was signalled)
        # Seconds of quiet on the pub/sub connection before it is pinged.
        self._quiet = min(1.0, timeout / 2)

    async def connect(self) -> None:
        try:
            import redis.asyncio as aioredis
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise RuntimeError(
                "FLASK_ASGI_BROADCAST_URL names Redis: install flask-asgi's [redis] extra,"
                " or pip install redis"
            ) from exc
        self._redis = aioredis.Redis.from_url(self.url, socket_connect_timeout=self.timeout)
        self._pubsub = self._redis.pubsub()
        try:
            async with self._bounded("connect to"):
                await self._redis.ping()  # fail here, with Redis's error, if it is not there
                confirmed = self._expect(self._control)
                await self._pubsub.subscribe(self._control)
                self._reader = asyncio.get_running_loop().create_task(
                    self._read(), name="flask-asgi-broadcast-redis"
                )
                await confirmed
        except BaseException:
            await self.disconnect()
            raise

    async def disconnect(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.wait({self._reader})
            self._reader = None
        for futures in self._pending.values():
            for future in futures:
                future.cancel()
        self._pending.clear()
        if self._pubsub is not None:
            await self._pubsub.aclose()
            self._pubsub = None
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    def _bounded(self, what: str) -> Any:
        """``async with``: the block within the timeout, else :class:`BroadcastError`."""
        backend = self

        class Bounded:
            async def __aenter__(self) -> None:
                self.timeout = asyncio.timeout(backend.timeout)
                await self.timeout.__aenter__()

            async def __aexit__(self, kind: Any, error: Any, tb: Any) -> bool:
                try:
                    await self.timeout.__aexit__(kind, error, tb)
                except TimeoutError:
                    raise BroadcastError(
                        f"Redis at {backend.url} did not {what} within {backend.timeout:g} s"
                        " (FLASK_ASGI_BROADCAST_TIMEOUT)"
                    ) from None
                if isinstance(error, OSError) or type(error).__module__.startswith("redis."):
                    # Refused, reset, redis-py's own ConnectionError...: one kind for callers.
                    message = f"Redis at {backend.url}: could not {what}: {error}"
                    raise BroadcastError(message) from error
                return False

        return Bounded()

    def _expect(self, channel: str) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(channel, []).append(future)
        return future

    async def subscribe(self, channel: str) -> None:
        confirmed = self._expect(channel)
        try:
            async with self._bounded("confirm a subscription"):
                await self._pubsub.subscribe(channel)
                await confirmed  # Redis has registered it: later publishes reach us
        finally:
            futures = self._pending.get(channel)
            if futures is not None and confirmed in futures:
                futures.remove(confirmed)
                if not futures:
                    del self._pending[channel]

    async def unsubscribe(self, channel: str) -> None:
        await self._pubsub.unsubscribe(channel)

    async def publish(self, channel: str, message: Message) -> int:
        async with self._bounded("answer a publish"):
            return int(await self._redis.publish(channel, encode(message)))

    def _lose(self, reason: str) -> None:
        if not self.lost:
            self.lost = True
            logger.warning("flask-asgi broadcast: Redis connection lost (%s), reconnecting", reason)
            self._on_gap(reason)

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        delay = _FIRST_DELAY
        heard = loop.time()
        pinged: float | None = None
        while True:
            try:
                message = await self._pubsub.get_message(timeout=self._quiet)
                now = loop.time()
                if message is None:  # quiet: is Redis still there?
                    if pinged is None and now - heard >= self._quiet:
                        async with asyncio.timeout(self.timeout):
                            await self._pubsub.ping()
                        pinged = now
                    elif pinged is not None and now - pinged > self.timeout:
                        raise TimeoutError(f"no answer to a PING within {self.timeout:g} s")
                    continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._lose(str(exc) or type(exc).__name__)
                pinged = None
                connection = self._pubsub.connection
                if connection is not None:
                    await connection.disconnect()  # the next read connects and re-subscribes
                await asyncio.sleep(delay)
                delay = min(delay * 2, _MAX_DELAY)
                continue
            heard, pinged, delay = now, None, _FIRST_DELAY
            if self.lost:
                self.lost = False
                logger.warning("flask-asgi broadcast: Redis connection back")
            self._handle(message)

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        channel = message["channel"]
        if isinstance(channel, bytes):
            channel = channel.decode("utf-8", "replace")
        if kind == "subscribe":
            for future in self._pending.pop(channel, ()):
                if not future.done():
                    future.set_result(None)
        elif kind == "message" and channel != self._control:
            self._on_message(channel, decode(message["data"]))
