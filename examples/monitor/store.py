"""Storage: SQLAlchemy 2.x asyncio models and the queries the app needs.

One :class:`Store` (one ``AsyncEngine``) is created at startup, on the server loop, and
shared by every request and by the scheduler. SQLite (aiosqlite) is the default; a
``postgresql://`` ``DATABASE_URL`` uses asyncpg.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from flask_login import UserMixin
from sqlalchemy import (
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    delete,
    event,
    func,
    select,
)
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class User(UserMixin, Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[float] = mapped_column(Float, default=time.time)


class Monitor(Base):
    __tablename__ = "monitors"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    url: Mapped[str] = mapped_column(String(2000))
    interval: Mapped[int] = mapped_column(Integer)  # seconds between checks
    timeout: Mapped[float] = mapped_column(Float)  # seconds
    created_at: Mapped[float] = mapped_column(Float, default=time.time)
    # The latest check, denormalised so that listing monitors is one query.
    last_ok: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    last_status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_latency_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(500), nullable=True)
    last_checked_at: Mapped[float | None] = mapped_column(Float, nullable=True)

    @property
    def status(self) -> str:
        if self.last_ok is None:
            return "pending"
        return "up" if self.last_ok else "down"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "url": self.url,
            "interval": self.interval,
            "timeout": self.timeout,
            "created_at": self.created_at,
            "status": self.status,
            "last_status_code": self.last_status_code,
            "last_latency_ms": self.last_latency_ms,
            "last_error": self.last_error,
            "last_checked_at": self.last_checked_at,
        }


class Check(Base):
    __tablename__ = "checks"
    __table_args__ = (Index("ix_checks_monitor_id_id", "monitor_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    monitor_id: Mapped[int] = mapped_column(ForeignKey("monitors.id", ondelete="CASCADE"))
    checked_at: Mapped[float] = mapped_column(Float)
    ok: Mapped[bool] = mapped_column(Boolean)
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    latency_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    error: Mapped[str | None] = mapped_column(String(500), nullable=True)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "monitor_id": self.monitor_id,
            "checked_at": self.checked_at,
            "ok": self.ok,
            "status_code": self.status_code,
            "latency_ms": self.latency_ms,
            "error": self.error,
        }


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one HTTP check (see checker.probe)."""

    ok: bool
    status_code: int | None
    latency_ms: float | None
    error: str | None
    checked_at: float


@dataclass(frozen=True)
class Page:
    items: list[Check]
    page: int
    per_page: int
    total: int

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.per_page))


def async_database_url(url: str) -> str:
    """``postgresql://`` -> asyncpg, ``sqlite://`` -> aiosqlite; async URLs stay as they are."""
    parsed = make_url(url)
    driver = {"postgresql": "postgresql+asyncpg", "postgres": "postgresql+asyncpg"}
    driver["sqlite"] = "sqlite+aiosqlite"
    if parsed.drivername in driver:
        parsed = parsed.set(drivername=driver[parsed.drivername])
    return parsed.render_as_string(hide_password=False)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")  # readers don't wait for the scheduler's writes
    cursor.close()


class Store:
    """The app's one engine and its queries. Create on the server loop; ``dispose()`` at exit."""

    def __init__(self, url: str) -> None:
        url = async_database_url(url)
        options: dict[str, Any] = {"pool_pre_ping": True}
        if url.startswith("sqlite"):
            options["connect_args"] = {"timeout": 30}  # wait for a writer instead of failing
        else:
            options.update(pool_size=10, max_overflow=10)
        self.url = url
        self.engine: AsyncEngine = create_async_engine(url, **options)
        if url.startswith("sqlite"):
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    async def create_schema(self) -> None:
        async with self.engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)

    async def dispose(self) -> None:
        await self.engine.dispose()

    # -- users --------------------------------------------------------------------------

    async def get_user(self, user_id: int) -> User | None:
        async with self.sessions() as session:
            return await session.get(User, user_id)

    async def get_user_by_email(self, email: str) -> User | None:
        async with self.sessions() as session:
            result = await session.execute(select(User).where(User.email == email.lower()))
            return result.scalar_one_or_none()

    async def create_user(self, email: str, password_hash: str) -> User:
        async with self.sessions.begin() as session:
            user = User(email=email.lower(), password_hash=password_hash)
            session.add(user)
        return user

    async def count_users(self) -> int:
        async with self.sessions() as session:
            return int(await session.scalar(select(func.count(User.id))) or 0)

    # -- monitors -----------------------------------------------------------------------

    async def list_monitors(self, user_id: int | None = None) -> list[Monitor]:
        """A user's monitors, or every monitor (the scheduler) when ``user_id`` is None."""
        query = select(Monitor).order_by(Monitor.id)
        if user_id is not None:
            query = query.where(Monitor.user_id == user_id)
        async with self.sessions() as session:
            return list((await session.execute(query)).scalars())

    async def get_monitor(self, user_id: int, monitor_id: int) -> Monitor | None:
        async with self.sessions() as session:
            monitor = await session.get(Monitor, monitor_id)
        return monitor if monitor is not None and monitor.user_id == user_id else None

    async def create_monitor(
        self, user_id: int, name: str, url: str, interval: int, timeout: float
    ) -> Monitor:
        async with self.sessions.begin() as session:
            monitor = Monitor(
                user_id=user_id, name=name, url=url, interval=interval, timeout=timeout
            )
            session.add(monitor)
        return monitor

    async def set_monitor_url(self, monitor_id: int, url: str) -> None:
        async with self.sessions.begin() as session:
            monitor = await session.get(Monitor, monitor_id)
            if monitor is not None:
                monitor.url = url

    async def delete_monitor(self, user_id: int, monitor_id: int) -> bool:
        async with self.sessions.begin() as session:
            monitor = await session.get(Monitor, monitor_id)
            if monitor is None or monitor.user_id != user_id:
                return False
            # Explicit: SQLite and PostgreSQL both cascade, but don't rely on the pragma.
            await session.execute(delete(Check).where(Check.monitor_id == monitor_id))
            await session.delete(monitor)
        return True

    # -- checks -------------------------------------------------------------------------

    async def record_check(
        self, monitor_id: int, result: CheckResult
    ) -> tuple[Monitor, Check] | None:
        """Store a check and update its monitor; None if the monitor was deleted meanwhile."""
        async with self.sessions.begin() as session:
            monitor = await session.get(Monitor, monitor_id, with_for_update=False)
            if monitor is None:
                return None
            check = Check(
                monitor_id=monitor_id,
                checked_at=result.checked_at,
                ok=result.ok,
                status_code=result.status_code,
                latency_ms=result.latency_ms,
                error=result.error[:500] if result.error else None,
            )
            session.add(check)
            monitor.last_ok = result.ok
            monitor.last_status_code = result.status_code
            monitor.last_latency_ms = result.latency_ms
            monitor.last_error = check.error
            monitor.last_checked_at = result.checked_at
        return monitor, check

    async def list_checks(self, monitor_id: int, page: int, per_page: int) -> Page:
        """Newest first."""
        async with self.sessions() as session:
            total = await session.scalar(
                select(func.count(Check.id)).where(Check.monitor_id == monitor_id)
            )
            query = (
                select(Check)
                .where(Check.monitor_id == monitor_id)
                .order_by(Check.id.desc())
                .offset((page - 1) * per_page)
                .limit(per_page)
            )
            items = list((await session.execute(query)).scalars())
        return Page(items=items, page=page, per_page=per_page, total=int(total or 0))

    async def recent_checks(self, monitor_ids: list[int], limit: int) -> dict[int, list[Check]]:
        """The latest ``limit`` checks of each monitor, oldest first (for the charts)."""
        recent: dict[int, list[Check]] = {}
        async with self.sessions() as session:
            for monitor_id in monitor_ids:
                query = (
                    select(Check)
                    .where(Check.monitor_id == monitor_id)
                    .order_by(Check.id.desc())
                    .limit(limit)
                )
                recent[monitor_id] = list((await session.execute(query)).scalars())[::-1]
        return recent

    async def prune_checks(self, keep: int) -> None:
        """Keep the newest ``keep`` checks of each monitor."""
        async with self.sessions.begin() as session:
            for monitor_id in (await session.execute(select(Monitor.id))).scalars():
                cutoff = await session.scalar(
                    select(Check.id)
                    .where(Check.monitor_id == monitor_id)
                    .order_by(Check.id.desc())
                    .offset(keep)
                    .limit(1)
                )
                if cutoff is not None:
                    await session.execute(
                        delete(Check).where(Check.monitor_id == monitor_id, Check.id <= cutoff)
                    )
