"""Client tokens on live connections: a notice before `exp`, refresh, the end at `exp`, and
revocation by `jti` or `sub` on every node.

Every connection that holds a client token (a Socket.IO namespace, a /ws session, an SSE
stream) is tracked here with two callbacks: `warn` (send `token:expiring`) and `end` (tell
the client why and hang up). A revocation is stored, then emitted to a control room that
only this module taps, so every node ends its matching connections as soon as pub/sub
delivers it; each node also reloads the list from the store now and then, in case it
missed one.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .auth import Identity
from .errors import ApiError
from .hub import JOB_NS
from .manager import LocalManager, Tap
from .models import Revocation
from .storage import Store
from .storage.base import revocation_key

log = logging.getLogger("switchboard.tokens")

NOTICE = 60.0  # seconds before `exp` that token:expiring is sent (at once for shorter tokens)
RELOAD = 10.0  # seconds between reloads of the revocation list from the store
CONTROL_ROOM = "switchboard:control"  # /job room no client can join (not job:… or log:…)
REVOKED_EVENT = "token:revoked"


def iso(seconds: float) -> str:
    text = datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def expired() -> ApiError:
    return ApiError(401, "unauthorized", "your token expired: connect again with a new one")


def revoked() -> ApiError:
    return ApiError(401, "unauthorized", "your token was revoked")


class RevocationList:
    """The revocations in force, checked on every token decode (no I/O)."""

    def __init__(self) -> None:
        self._entries: dict[str, Revocation] = {}

    def add(self, revocation: Revocation) -> None:
        key = revocation_key(revocation)
        known = self._entries.get(key)
        if known is None or (known["at"], known["until"]) < (revocation["at"], revocation["until"]):
            self._entries[key] = revocation

    def replace(self, revocations: list[Revocation]) -> None:
        self._entries = {}
        for revocation in revocations:
            self.add(revocation)

    def matches(self, identity: Identity, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        for key in (f"jti:{identity.jti}" if identity.jti else None, f"sub:{identity.sub}"):
            found = self._entries.get(key) if key else None
            if found is None or found["until"] <= now:
                continue
            if found["jti"] is not None or identity.iat is None or identity.iat <= found["at"]:
                return True
        return False


Warn = Callable[[Identity], Awaitable[None]]
End = Callable[[ApiError], Awaitable[None]]


@dataclass(eq=False, slots=True)
class _Live:
    identity: Identity
    warn: Warn
    end: End
    timers: tuple[asyncio.TimerHandle, ...] = ()


class Sessions:
    """This node's connections that hold a client token."""

    def __init__(self, revocations: RevocationList) -> None:
        self.revocations = revocations
        self._live: dict[str, _Live] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def track(self, key: str, identity: Identity, warn: Warn, end: End) -> None:
        """Follow a connection's client token (again, after a refresh), or the identity
        the auth webhook gave it. The admin token and anonymous clients: nothing to follow."""
        self.forget(key)
        if identity.source not in ("token", "webhook"):
            return
        live = self._live[key] = _Live(identity, warn, end)
        if identity.exp is None:  # the auth webhook's: revocable by sub, no expiry
            return
        loop = asyncio.get_running_loop()
        now, at = time.time(), identity.exp
        live.timers = (
            loop.call_later(max(0.0, at - NOTICE - now), self._run, live, lambda: warn(identity)),
            loop.call_later(max(0.0, at - now), self._run, live, lambda: self._end(key, expired())),
        )

    def forget(self, key: str) -> None:
        live = self._live.pop(key, None)
        if live is not None:
            for timer in live.timers:
                timer.cancel()

    def revoke(self, revocation: Revocation) -> int:
        """End this node's connections whose token the revocation covers: how many."""
        self.revocations.add(revocation)
        ended = [key for key, live in self._live.items() if self.revocations.matches(live.identity)]
        for key in ended:
            self._run(self._live[key], functools.partial(self._end, key, revoked()))
        return len(ended)

    async def _end(self, key: str, why: ApiError) -> None:
        live = self._live.get(key)
        if live is not None:
            self.forget(key)
            log.info("ending a connection of %r: %s", live.identity.sub, why.message)
            await live.end(why)

    def _run(self, live: _Live, step: Callable[[], Awaitable[None]]) -> None:
        async def guarded() -> None:
            try:
                await step()
            except Exception:  # a connection gone meanwhile; never a crashed timer
                log.debug("token step for %r failed", live.identity.sub, exc_info=True)

        task = asyncio.create_task(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def close(self) -> None:
        for key in list(self._live):
            self.forget(key)


class Revoker:
    """Stores revocations and carries them to every node (through the manager's pub/sub)."""

    def __init__(self, store: Store, sessions: Sessions, sio: Any, manager: LocalManager) -> None:
        self.store = store
        self.sessions = sessions
        self.sio = sio
        self.manager = manager
        self._tap = Tap("token-control")
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self.manager.add_tap(JOB_NS, CONTROL_ROOM, self._tap)
        with contextlib.suppress(Exception):  # the store is down: the reload loop tries again
            await self.reload()
        self._tasks = [asyncio.create_task(step()) for step in (self._listen, self._reload_loop)]

    async def stop(self) -> None:
        self.manager.remove_tap(JOB_NS, CONTROL_ROOM, self._tap)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.sessions.close()

    async def revoke(self, revocation: Revocation) -> int:
        """Store it, end this node's matching connections, tell the other nodes."""
        await self.store.revoke(revocation)
        ended = self.sessions.revoke(revocation)
        await self.sio.emit(REVOKED_EVENT, revocation, namespace=JOB_NS, to=CONTROL_ROOM)
        return ended

    async def reload(self) -> None:
        self.sessions.revocations.replace(await self.store.revocations(time.time()))

    async def _listen(self) -> None:
        while True:
            event, body = await self._tap.queue.get()
            if event == REVOKED_EVENT:
                self.sessions.revoke(body)

    async def _reload_loop(self) -> None:
        while True:
            await asyncio.sleep(RELOAD)
            try:
                await self.reload()
            except Exception as exc:  # the store is down: keep what is known
                log.warning("could not reload revoked tokens: %s", exc)
