"""Pick a store by URL: memory://, sqlite:///path (the default), redis:// or redis+sentinel://."""

from __future__ import annotations

from urllib.parse import urlsplit

from .base import (
    LogLimits,
    NotReplicated,
    RoomLimitReached,
    RoomLimits,
    Store,
    StoredResponse,
    StoreUnavailable,
    job_response,
    log_response,
)

__all__ = [
    "LogLimits",
    "NotReplicated",
    "RoomLimitReached",
    "RoomLimits",
    "Store",
    "StoreUnavailable",
    "StoredResponse",
    "describe_store",
    "job_response",
    "log_response",
    "open_store",
]


def open_store(
    url: str,
    *,
    history: int,
    prefix: str = "switchboard:",
    rooms: RoomLimits | None = None,
    redis_pool: tuple[int, float] = (50, 10.0),
    redis_replicas: int = 0,
    logs: LogLimits | None = None,
) -> Store:
    """A closed store for `url`; the caller awaits `open()`."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        from .memory import MemoryStore

        return MemoryStore(history=history, rooms=rooms, logs=logs)
    if scheme == "sqlite":
        from .sqlite import SqliteStore

        return SqliteStore(sqlite_path(url), history=history, rooms=rooms, logs=logs)
    if scheme in ("redis", "rediss", "redis+sentinel"):
        from .redis import RedisStore

        return RedisStore(
            url, history=history, prefix=prefix, rooms=rooms, pool=redis_pool,
            replicas=redis_replicas, logs=logs,
        )  # fmt: skip
    raise ValueError(
        f"unknown store {url!r}: use memory://, sqlite:///path, redis://host:port/db"
        " or redis+sentinel://host:port,host:port/db/service"
    )


def sqlite_path(url: str) -> str:
    """sqlite:///rel.db is relative to the working directory, sqlite:////abs.db absolute."""
    path = url.removeprefix("sqlite://")
    path = path[1:] if path.startswith("/") else path
    return path or "switchboard.db"


def describe_store(url: str) -> str:
    """The URL without a password, for logs."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return url
