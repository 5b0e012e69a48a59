"""`--auth-webhook URL`: the app's back end decides who a connection is and what it may see.

A connection that brings neither the admin token nor a valid client token is described to
the app (the auth payload, a few request headers such as Cookie, the client address) in a
POST. The app answers 200 with grants `{"sub", "name", "jobs", "rooms", "cancel"}` (the
same claims as a client token), or 401/403 to refuse. With `--auth-webhook-subscribe` it is
also asked for every subscribe and join (`"event": "subscribe", "job_id"` or `"event":
"join", "room"`: 2xx allows, 403 forbids). Answers that allow are cached for
`--auth-webhook-cache` seconds per distinct request; refusals are not cached, so a user who
just signed in is let in at once. An app that does not answer in time, fails or answers
something unreadable refuses nothing and grants nothing: the client is told `unavailable`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Annotated, Any, Protocol

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from .auth import Identity, Unauthorized
from .errors import forbidden, unavailable
from .models import Glob

log = logging.getLogger("switchboard.authhook")

# Request headers the app sees (lower case); nothing else of the request is forwarded.
FORWARDED = ("cookie", "authorization", "origin", "user-agent", "accept-language",
             "x-forwarded-for", "x-real-ip")  # fmt: skip
CACHED = 10_000  # answers kept at most


class HookUnavailable(Exception):
    """The app did not give a usable answer: the client hears `unavailable`."""


class Grants(BaseModel):
    """The app's answer: a client token's claims, unknown fields ignored."""

    model_config = ConfigDict(extra="ignore", strict=True)

    sub: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    name: Annotated[str, StringConstraints(max_length=64)] | None = None
    jobs: Annotated[list[Glob], Field(max_length=100)] = []
    rooms: Annotated[list[Glob], Field(max_length=100)] = []
    cancel: Annotated[list[Glob], Field(max_length=100)] = []
    tags: Annotated[list[Glob], Field(max_length=100)] = []


Described = dict[str, Any]  # what the app is told about a connection


def describe(headers: Mapping[str, str], remote: str | None, transport: str) -> Described:
    """The request part of what the app is told (the auth payload is added per call)."""
    forwarded = {name: headers[name] for name in FORWARDED if name in headers}
    return {"headers": forwarded, "remote": remote, "transport": transport}


def environ_headers(environ: Mapping[str, Any]) -> dict[str, str]:
    """The forwarded headers of a Socket.IO connection, from its WSGI-style environ."""
    found = {}
    for name in FORWARDED:
        value = environ.get("HTTP_" + name.upper().replace("-", "_"))
        if isinstance(value, str):
            found[name] = value
    return found


class AuthWebhook:
    def __init__(self, url: str, *, timeout: float, cache: float, per_subscribe: bool) -> None:
        self.url = url
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.cache_seconds = cache
        self.per_subscribe = per_subscribe
        self._cache: OrderedDict[str, tuple[float, Any]] = OrderedDict()
        self._http: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    async def identify(self, described: Described) -> Identity:
        """Who the app says this is; raises Unauthorized or HookUnavailable."""
        body = {"event": "connect", **described}
        status, answer = await self._ask(body)
        if status in (401, 403):
            raise Unauthorized("the auth webhook refused the connection")
        try:
            grants = Grants.model_validate(answer)
        except ValidationError as exc:
            self._forget(body)
            log.warning("the auth webhook's answer is not grants: %s", exc.errors()[:3])
            raise HookUnavailable("the auth webhook answered something unreadable") from None
        return Identity(sub=grants.sub, name=grants.name, jobs=tuple(grants.jobs),
                        rooms=tuple(grants.rooms), cancel=tuple(grants.cancel),
                        tags=tuple(grants.tags), source="webhook")  # fmt: skip

    async def allows(self, described: Described, event: str, field: str, value: str) -> bool:
        """With --auth-webhook-subscribe: whether the app lets this connection subscribe to
        a job (or join a room); True without it. Raises HookUnavailable."""
        if not self.per_subscribe:
            return True
        status, _ = await self._ask({"event": event, field: value, **described})
        return status < 300

    async def _ask(self, body: Described) -> tuple[int, Any]:
        key = _key(body)
        cached = self._cache.get(key)
        if cached is not None and cached[0] > time.monotonic():
            return 200, cached[1]
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=self.timeout)
        try:
            async with self._http.post(self.url, json=body) as response:
                status = response.status
                answer = await response.json(content_type=None) if status < 300 else None
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("auth webhook %s failed: %r", self.url, exc)
            raise HookUnavailable("the auth webhook did not answer") from None
        if status < 300:
            self._cache[key] = (time.monotonic() + self.cache_seconds, answer)
            self._cache.move_to_end(key)
            if len(self._cache) > CACHED:
                self._cache.popitem(last=False)
        elif status not in (401, 403):
            log.warning("auth webhook %s answered %d", self.url, status)
            raise HookUnavailable(f"the auth webhook answered {status}")
        return status, answer

    def _forget(self, body: Described) -> None:
        self._cache.pop(_key(body), None)


class Asking(Protocol):
    @property
    def identity(self) -> Identity: ...
    @property
    def described(self) -> Described: ...


async def check_hook(
    hook: AuthWebhook | None, asking: Asking, event: str, field: str, value: str
) -> None:
    """With --auth-webhook-subscribe, the app's word on a subscribe or join of a
    connection it identified: ApiError forbidden (or unavailable) when it says no."""
    if hook is None or asking.identity.source != "webhook":
        return
    try:
        allowed = await hook.allows(asking.described, event, field, value)
    except HookUnavailable as exc:
        raise unavailable(str(exc)) from None
    if not allowed:
        raise forbidden(f"the auth webhook does not allow {field} {value!r}")


def _key(body: Described) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
