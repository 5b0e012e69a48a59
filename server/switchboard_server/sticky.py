"""Say so when a load balancer is not sticky, instead of Engine.IO's bare 400.

With several nodes, a long-polling session lives on the node that opened it, so every
request of that session must reach that node. Session ids start with their node's
name; a request naming a session of another node that is alive is answered
`not_sticky`, counted, and logged at most once a minute.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from .errors import ApiError

log = logging.getLogger("switchboard.cluster")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
NodeAlive = Callable[[str], Awaitable[bool]]
LOG_EVERY = 60.0
FIX = "enable sticky sessions (nginx: `hash $remote_addr consistent;` or `ip_hash;`)"


class Stickiness:
    def __init__(self, node: str, known: Callable[[str], bool], alive: NodeAlive) -> None:
        self.node = node  # "" when this process is the only node
        self.known = known  # whether this process holds a session id
        self.alive = alive
        self._logged = -LOG_EVERY

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        sid = request.query.get("sid", "")
        owner = sid[: len(self.node)]
        if (
            self.node
            and request.path.startswith("/socket.io/")
            and sid
            and owner != self.node
            and not self.known(sid)
            and await self.alive(owner)
        ):
            now = time.monotonic()
            if now - self._logged >= LOG_EVERY:
                self._logged = now
                log.warning(
                    "a request for a session of node %s reached node %s: %s",
                    owner, self.node, FIX, extra={"code": "not_sticky"},
                )  # fmt: skip
            message = f"this session lives on node {owner}, not {self.node}: {FIX}"
            raise ApiError(400, "not_sticky", message)
        return await handler(request)
