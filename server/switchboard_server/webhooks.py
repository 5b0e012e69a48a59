"""Webhooks out: every committed job event POSTed to the configured URLs, at least once, in
seq order per job, signed as Standard Webhooks (https://www.standardwebhooks.com) sign.

Durability. The store writes a delivery (an outbox entry) for each webhook that wants the
event in the same write as the job itself: SQLite in the update's transaction, Redis inside
the APPLY script, memory in the same step on the event loop. So an event that was answered
to its publisher has its deliveries stored, whatever happens to the process after.

Lanes. A webhook's entries for one job form a lane, oldest first. A process claims a lane
(a lease that expires: on Redis shared by every node, so one node sends a lane at a time),
sends its head, and removes it only after a 2xx; the next entry of that lane goes only
then. A failure (non-2xx, timeout, no connection) puts the lane back with a later due time
(exponential backoff with jitter) and releases it. An entry older than --webhook-max-age
whose attempt fails is given up (dead), with the entries behind it that are as old. A node
that dies holding a lease stops renewing it, and another node claims the lane once it
expires. Different lanes go in parallel, --webhook-concurrency at a time per webhook.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import fnmatch
import hashlib
import hmac
import logging
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import aiohttp
from aiohttp import web

from . import __version__
from .metrics import Metrics
from .models import STATUSES, TERMINAL, Job
from .storage import Store, StoreUnavailable
from .storage.base import OutboxEntry

if TYPE_CHECKING:
    from .settings import Settings

log = logging.getLogger("switchboard.webhooks")

FILTERS = ("status", "job")
POLL = 1.0  # seconds between looks for due lanes (other nodes' events, retries coming due)
BACKOFF_BASE = 1.0  # the first retry waits about this long, then twice as long each time
LEASE_MARGIN = 10.0  # a lease outlives an attempt's timeout by this much
STATS_EVERY = 5.0  # seconds between refreshes of the pending gauge
MAX_ANSWER = 64 * 1024  # bytes of a receiver's answer read (the rest closes the connection)
QUIET = 10.0  # seconds between two warnings that the store is unreachable


def _seconds(value: float) -> str:
    return f"{value:g} s"


@dataclass(frozen=True)
class Webhook:
    """One configured receiver: the URL POSTed to, and which events it wants."""

    url: str  # as given, without the #filters (the query is the receiver's own)
    statuses: frozenset[str] | None = None  # None: every status
    jobs: tuple[str, ...] | None = None  # job id globs; None: every job

    @property
    def key(self) -> str:
        """The webhook's name in the store: the same URL keeps its pending deliveries."""
        return hashlib.sha256(self.url.encode()).hexdigest()[:16]

    @property
    def shown(self) -> str:
        return redact(self.url)

    def wants(self, job: Job) -> bool:
        if self.statuses is not None and job["status"] not in self.statuses:
            return False
        return self.jobs is None or any(fnmatch.fnmatchcase(job["id"], g) for g in self.jobs)

    def filters(self) -> dict[str, list[str] | None]:
        return {
            "status": sorted(self.statuses) if self.statuses is not None else None,
            "job": list(self.jobs) if self.jobs is not None else None,
        }


def redact(url: str) -> str:
    """The URL without what may be secret: credentials and the query (a token, often)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, netloc, parts.path, "***" if parts.query else "", ""))


def split_webhooks(value: str) -> list[str]:
    """SWITCHBOARD_WEBHOOK / --webhook: URLs separated by spaces or newlines (a URL's own
    query and filters may hold commas)."""
    return value.split()


def parse_webhook(text: str) -> Webhook:
    """`https://host/path?query#status=succeeded,failed&job=build-*`; ValueError naming the
    problem (and the URL, redacted) otherwise."""
    url, _, fragment = text.partition("#")
    shown = redact(url)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise ValueError(f"webhook {shown!r} is not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"webhook {shown!r}: give an http:// or https:// URL with a host")
    for scheme in (",http://", ",https://"):
        if scheme in url:
            raise ValueError(f"webhook {shown!r}: separate webhooks with spaces, not commas")
    statuses: set[str] | None = None
    jobs: list[str] | None = None
    try:
        pairs = parse_qsl(fragment, keep_blank_values=True, strict_parsing=bool(fragment))
    except ValueError:
        raise ValueError(
            f"webhook {shown!r}: filters are #status=…&job=…, not {fragment!r}"
        ) from None
    for name, given in pairs:
        values = [v.strip() for v in given.split(",") if v.strip()]
        if name not in FILTERS:
            raise ValueError(f"webhook {shown!r}: unknown filter {name!r}; use #status=…&job=…")
        if not values:
            raise ValueError(f"webhook {shown!r}: filter {name!r} is empty")
        if name == "status":
            statuses = statuses or set()
            for value in values:
                if value == "terminal":
                    statuses |= TERMINAL
                elif value in STATUSES:
                    statuses.add(value)
                else:
                    raise ValueError(
                        f"webhook {shown!r}: status {value!r} is not one of"
                        f" {', '.join(STATUSES)} or terminal"
                    )
        else:
            jobs = (jobs or []) + values
    return Webhook(
        url=url,
        statuses=frozenset(statuses) if statuses is not None else None,
        jobs=tuple(jobs) if jobs is not None else None,
    )


def check_webhooks(texts: Iterable[str]) -> list[Webhook]:
    hooks = [parse_webhook(text) for text in texts]
    seen: set[str] = set()
    for hook in hooks:
        if hook.url in seen:
            raise ValueError(f"webhook {hook.shown!r} is given twice; give its filters once")
        seen.add(hook.url)
    return hooks


def signing_key(secret: str) -> bytes:
    """A Standard Webhooks secret (`whsec_` and base64) is its decoded bytes; any other text
    is its UTF-8 bytes."""
    if secret.startswith("whsec_"):
        try:
            key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("webhook_secret: whsec_ must be followed by base64") from None
        if not key:
            raise ValueError("webhook_secret: whsec_ must be followed by base64")
        return key
    if not secret:
        raise ValueError("webhook_secret: must not be empty")
    return secret.encode()


def sign(key: bytes, event_id: str, timestamp: str, body: bytes) -> str:
    """The `webhook-signature` header: v1, HMAC-SHA256 of `id.timestamp.body`, base64."""
    signed = f"{event_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def backoff(failures: int, cap: float) -> float:
    """Seconds before the next attempt after `failures` in a row: 1 s doubling, at most
    `cap`, each drawn between half and all of it (jitter)."""
    ceiling = min(cap, BACKOFF_BASE * 2.0 ** min(failures - 1, 40))
    return random.uniform(ceiling / 2, ceiling)


def iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Dispatcher:
    """Sends what the store's outbox holds; one per process, idle without webhooks."""

    def __init__(self, settings: Settings, store: Store, metrics: Metrics) -> None:
        self.hooks = check_webhooks(settings.webhook)
        secret = settings.webhook_secret
        self.key = signing_key(secret.get_secret_value()) if secret is not None else None
        self.timeout = settings.webhook_timeout
        self.max_age = settings.webhook_max_age
        self.backoff_max = settings.webhook_backoff_max
        self.concurrency = settings.webhook_concurrency
        self.lease = self.timeout + LEASE_MARGIN
        self.store = store
        self.metrics = metrics
        self._lanes: dict[str, dict[str, asyncio.Task[None]]] = {h.key: {} for h in self.hooks}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._quiet_until = 0.0
        if self.hooks:
            store.webhooks = self.targets

    def targets(self, job: Job) -> list[str]:
        """The webhooks (their keys) that want this committed state: the store asks."""
        return [hook.key for hook in self.hooks if hook.wants(job)]

    def notify(self, job: Job) -> None:
        """The hub's hook after a commit: look for work now rather than at the next poll."""
        if self.hooks and any(hook.wants(job) for hook in self.hooks):
            self._wake.set()

    async def start(self) -> None:
        if not self.hooks:
            return
        self._session = aiohttp.ClientSession(
            headers={"User-Agent": f"Switchboard/{__version__} webhooks"},
            timeout=aiohttp.ClientTimeout(total=None),
        )
        self._task = asyncio.create_task(self._loop(), name="switchboard-webhooks")
        for hook in self.hooks:
            log.info("webhook: %s, filters %s", hook.shown, _describe(hook))
        if self.key is None:
            log.warning("webhooks are not signed: set --webhook-secret")

    async def stop(self) -> None:
        """Stop sending; lanes in flight are released so another node may take them now."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        running = [(k, j, t) for k, lanes in self._lanes.items() for j, t in lanes.items()]
        for _, _, task in running:
            task.cancel()
        await asyncio.gather(*(task for _, _, task in running), return_exceptions=True)
        with contextlib.suppress(StoreUnavailable, TimeoutError):
            async with asyncio.timeout(2.0):
                for hook_key, job_id, _ in running:
                    await self.store.outbox_release(hook_key, job_id)
        if self._session is not None:
            await self._session.close()

    # -- the loop -------------------------------------------------------------------

    async def _loop(self) -> None:
        stats_at = 0.0
        while True:
            self._wake.clear()
            try:
                for hook in self.hooks:
                    await self._claim(hook)
                if time.monotonic() >= stats_at:
                    stats_at = time.monotonic() + STATS_EVERY
                    with contextlib.suppress(StoreUnavailable):
                        await self.status()
            except Exception:  # a bug: say so, and keep sending
                log.exception("webhooks: looking for deliveries failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL)

    async def _claim(self, hook: Webhook) -> None:
        lanes = self._lanes[hook.key]
        free = self.concurrency - len(lanes)
        if free <= 0:
            return
        try:
            claimed = await self.store.outbox_claim(hook.key, free, self.lease)
        except StoreUnavailable as exc:
            self._store_down(exc)
            return
        for job_id in claimed:
            if job_id not in lanes:  # else: ours already, its lease had run out meanwhile
                lanes[job_id] = asyncio.create_task(
                    self._lane(hook, job_id), name=f"switchboard-webhook-{job_id}"
                )

    def _store_down(self, exc: Exception) -> None:
        if time.monotonic() >= self._quiet_until:
            self._quiet_until = time.monotonic() + QUIET
            log.warning("webhooks wait for the store: %s", exc)

    async def _lane(self, hook: Webhook, job_id: str) -> None:
        """Send the lane's entries in order while they succeed; stop at a failure."""
        try:
            while True:
                entry = await self.store.outbox_head(hook.key, job_id)
                if entry is None:
                    await self.store.outbox_release(hook.key, job_id)
                    return
                error = await self._attempt(hook, entry)
                if error is None:
                    self.metrics.webhook_deliveries.labels("delivered").inc()
                    log.debug("webhook %s: delivered %s", hook.shown, entry.event_id)
                    if not await self.store.outbox_delivered(hook.key, job_id, entry, self.lease):
                        return  # the lease ran out and another node took the lane
                    continue
                await self._failed(hook, job_id, entry, error)
                return
        except StoreUnavailable as exc:  # the lease runs out; the lane is tried again
            self._store_down(exc)
        except Exception:
            log.exception("webhook %s: lane of job %s failed", hook.shown, job_id)
        finally:
            self._lanes[hook.key].pop(job_id, None)
            self._wake.set()

    async def _failed(self, hook: Webhook, job_id: str, entry: OutboxEntry, error: str) -> None:
        self.metrics.webhook_deliveries.labels("failed").inc()
        failures = entry.attempts + 1
        delay = backoff(failures, self.backoff_max)
        dead = await self.store.outbox_failed(
            hook.key, job_id, entry, delay, error, time.time() - self.max_age
        )
        if dead > 0:
            self.metrics.webhook_deliveries.labels("dead").inc(dead)
            log.error(
                "webhook %s: gave up on %d event(s) of job %s from %s on, older than"
                " --webhook-max-age (%s): %s",
                hook.shown, dead, job_id, entry.event_id, _seconds(self.max_age), error,
                extra={"job_id": job_id},
            )  # fmt: skip
        else:
            log.warning(
                "webhook %s: %s failed (%s), attempt %d; next in %.1f s",
                hook.shown, entry.event_id, error, failures, delay,
                extra={"job_id": job_id},
            )  # fmt: skip

    async def _attempt(self, hook: Webhook, entry: OutboxEntry) -> str | None:
        """POST the entry once: None after a 2xx, else what went wrong (nothing secret)."""
        assert self._session is not None
        body = entry.body.encode()
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "webhook-id": entry.event_id,
            "webhook-timestamp": timestamp,
        }
        if self.key is not None:
            headers["webhook-signature"] = sign(self.key, entry.event_id, timestamp, body)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout):
                async with self._session.post(
                    hook.url, data=body, headers=headers, allow_redirects=False
                ) as answer:
                    status = answer.status
                    read = 0
                    while read <= MAX_ANSWER and (chunk := await answer.content.read(16384)):
                        read += len(chunk)
        except TimeoutError:
            return f"no answer within {_seconds(self.timeout)}"
        except aiohttp.ClientError as exc:
            return _client_error(exc, hook)
        except OSError as exc:
            return f"{type(exc).__name__}: {exc.strerror or exc}"
        finally:
            self.metrics.webhook_attempt_seconds.observe(time.perf_counter() - started)
        return None if 200 <= status < 300 else f"HTTP {status}"

    # -- status ---------------------------------------------------------------------

    async def status(self) -> list[dict[str, Any]]:
        """Per webhook: its pending deliveries (every node's), outcomes, last times."""
        shown = []
        pending = 0
        for hook in self.hooks:
            stats = await self.store.outbox_stats(hook.key)
            pending += stats["pending"]
            shown.append(
                {
                    "url": hook.shown,
                    "filters": hook.filters(),
                    "pending": stats["pending"],
                    "delivered": stats["delivered"],
                    "dead": stats["dead"],
                    "in_flight": len(self._lanes[hook.key]),
                    "last_success": iso(stats["last_success"]),
                    "last_failure": iso(stats["last_failure"]),
                    "last_error": stats["last_error"],
                }
            )
        self.metrics.webhook_pending.set(pending)
        return shown


def _describe(hook: Webhook) -> str:
    given = [f"{name}={','.join(v)}" for name, v in hook.filters().items() if v is not None]
    return "&".join(given) or "none"


def _client_error(exc: aiohttp.ClientError, hook: Webhook) -> str:
    """An aiohttp error as text, with the webhook's URL (its query, its credentials) out."""
    text = f"{type(exc).__name__}: {exc}"
    parts = urlsplit(hook.url)
    for secret in (hook.url, parts.query, parts.password, parts.username):
        if secret:
            text = text.replace(secret, "***")
    return text[:500]


WEBHOOKS: web.AppKey[Dispatcher] = web.AppKey("webhooks", Dispatcher)


async def webhook_status(request: web.Request) -> web.Response:
    """GET /api/webhooks/status (admin): each webhook, redacted, with its deliveries."""
    from .http_api import respond

    dispatcher = request.app[WEBHOOKS]
    return respond({"signed": dispatcher.key is not None, "webhooks": await dispatcher.status()})
