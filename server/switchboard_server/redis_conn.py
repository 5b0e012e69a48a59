"""Redis clients from a store URL, for the store and for the pub/sub manager.

`redis://` and `rediss://` connect directly; `redis+sentinel://[:password@]host:port,
host:port/db/service` asks the Sentinels for the current master and follows failovers.
Every client uses a pool that waits for a free connection (up to `pool_timeout`)
instead of raising, as redis-py's default pool does past its limit: a burst of
reconnecting clients queues for a moment and is never refused by our own limits.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

import redis.asyncio as aioredis
from redis.asyncio.connection import BlockingConnectionPool
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from socketio.redis_manager import parse_redis_sentinel_url

SCHEMES = ("redis://", "rediss://", "redis+sentinel://")


class BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):  # type: ignore[misc]
    """The Sentinel-aware pool, waiting for a free connection like BlockingConnectionPool."""


def glob_escape(text: str) -> str:
    """`text` matched literally in a Redis glob pattern (SCAN MATCH, PSUBSCRIBE)."""
    return "".join("\\" + char if char in "*?[]\\" else char for char in text)


def is_sentinel(url: str) -> bool:
    return urlparse(url).scheme == "redis+sentinel"


def redis_client(url: str, *, pool_size: int, pool_timeout: float, **options: Any) -> Any:
    """A redis.asyncio.Redis for `url` (redis-py's annotations are loose: Any)."""
    if not is_sentinel(url):
        pool = BlockingConnectionPool.from_url(
            url, max_connections=pool_size, timeout=pool_timeout, **options
        )
        return aioredis.Redis.from_pool(pool)
    sentinels, service, credentials = parse_redis_sentinel_url(url)
    if not service:
        raise ValueError("redis+sentinel:// needs a service name: …/db/service")
    timeouts = {k: v for k, v in options.items() if k.startswith("socket_")}
    sentinel = Sentinel(sentinels, sentinel_kwargs=timeouts, **credentials)  # type: ignore[no-untyped-call]
    return sentinel.master_for(
        service,
        connection_pool_class=BlockingSentinelPool,
        max_connections=pool_size,
        timeout=pool_timeout,
        **options,
    )
