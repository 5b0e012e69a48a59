"""`switchboard doctor URL`: check a deployment from outside, as its clients see it.

Every check talks only to the URL given (the proxy, usually) and to the `--node` URLs,
with a timeout on every request, and ends in a `Check`: ok, warn, fail or skip, a
one-line summary and, when something is wrong, a one-line fix. The command exits 1
when any check failed; warnings and skipped checks do not fail it.

The checks:

- health: `/healthz` and `/readyz` of the URL (503 from `/readyz`: the store or the
  message queue is unreachable).
- stickiness: many Engine.IO long-polling sessions, each making several requests with
  its `sid`; a request answered 400 `not_sticky` (Switchboard nodes on Redis), "Invalid
  session" (python-engineio) or "Session ID unknown" (Node) reached a node that does
  not hold the session.
- websocket: a polling session upgraded to websocket through the proxy (`2probe`,
  `3probe`, `5`), as socket.io-client does it.
- cors: an Engine.IO handshake carrying `Origin:` for each `--origin`.
- node: `/healthz` and `/readyz` of each `--node`.
- clock: the `Date` header of the URL and of each node against this machine's clock.
- timeouts: an idle long-poll must stay open until the server answers it (its ping,
  after pingInterval); a proxy that cuts it sooner (502/504) needs a longer
  `proxy_read_timeout`. The full wait is pingInterval+pingTimeout at most; it is only
  done by default when that is short, otherwise with `--slow`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
import httpx
from rich.console import Console
from rich.markup import escape

Status = Literal["ok", "warn", "fail", "skip"]

SEP = "\x1e"  # Engine.IO v4 joins the packets of a polling payload with this
EIO = "/socket.io/?EIO=4&transport=polling"
CLOCK_TOLERANCE = 2.0  # seconds
QUICK_HOLD = 3.0  # seconds an idle long-poll is held by default
FULL_WAIT_LIMIT = 10.0  # the full timeouts check runs by default when it is this short
MISROUTED_MARKERS = ("not_sticky", "Invalid session", "Session ID unknown")

STICKY_FIX = (
    "enable sticky sessions (nginx: `hash $remote_addr consistent;` or `ip_hash;` in the upstream)"
)
UPGRADE_FIX = (
    "forward the upgrade headers to the nodes (nginx: `proxy_http_version 1.1;`, "
    '`proxy_set_header Upgrade $http_upgrade;`, `proxy_set_header Connection "upgrade";`)'
)
SYMBOLS: dict[Status, str] = {"ok": "✓", "warn": "!", "fail": "✗", "skip": "-"}
STYLES: dict[Status, str] = {"ok": "green", "warn": "yellow", "fail": "red", "skip": "dim"}


@dataclass
class Check:
    name: str  # health, stickiness, websocket, cors, node, clock, timeouts
    status: Status
    summary: str
    fix: str | None = None
    subject: str | None = None  # the origin (cors) or the node URL (node)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def title(self) -> str:
        return f"{self.name} {self.subject}" if self.subject else self.name


@dataclass
class Report:
    url: str
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return all(check.status != "fail" for check in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {"url": self.url, "ok": self.ok, "checks": [asdict(c) for c in self.checks]}


@dataclass
class Options:
    url: str
    nodes: Sequence[str] = ()
    origins: Sequence[str] = ()
    sessions: int = 20  # polling sessions for the stickiness check
    rounds: int = 2  # connect/answer/disconnect rounds per session
    slow: bool = False  # hold an idle long-poll the full pingInterval+pingTimeout
    timeout: float = 5.0  # seconds for each request


def normalize_url(url: str) -> str:
    """`url` without a trailing slash; ValueError unless it is http(s)://host[...]."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{url!r} is not an http:// or https:// URL")
    if parts.query or parts.fragment:
        raise ValueError(f"{url!r}: give the base URL, without ?query or #fragment")
    return url.rstrip("/")


async def run(options: Options) -> Report:
    """Run every check in turn and return the report (never raises for a broken server)."""
    base = normalize_url(options.url)
    nodes = [normalize_url(node) for node in options.nodes]
    limits = httpx.Limits(max_connections=50, max_keepalive_connections=20)
    async with httpx.AsyncClient(
        timeout=options.timeout, limits=limits, trust_env=False, follow_redirects=False
    ) as http:
        health = await check_health(http, base)
        checks = [health]
        reachable = health.details.get("healthz") == 200
        later: list[tuple[str, str | None, Callable[[], Awaitable[Check]]]] = [
            ("stickiness", None, lambda: check_stickiness(http, base, options)),
            ("websocket", None, lambda: check_websocket(http, base, options.timeout)),
            *[("cors", origin, _bind_cors(http, base, origin)) for origin in options.origins],
        ]
        for name, subject, check in later:
            if reachable:
                checks.append(await _guarded(name, subject, check))
            else:
                skipped = f"skipped: {base} does not answer /healthz"
                checks.append(Check(name, "skip", skipped, subject=subject))
        for node in nodes:
            checks.append(await _guarded("node", node, _bind_node(http, node)))
        checks.append(await _guarded("clock", None, lambda: check_clock(http, [base, *nodes])))
        if reachable:
            checks.append(
                await _guarded("timeouts", None, lambda: check_timeouts(http, base, options))
            )
        else:
            checks.append(Check("timeouts", "skip", f"skipped: {base} does not answer /healthz"))
    return Report(base, checks)


def _bind_node(http: httpx.AsyncClient, node: str) -> Callable[[], Awaitable[Check]]:
    return lambda: check_node(http, node)


def _bind_cors(http: httpx.AsyncClient, base: str, origin: str) -> Callable[[], Awaitable[Check]]:
    return lambda: check_cors(http, base, origin)


async def _guarded(name: str, subject: str | None, check: Callable[[], Awaitable[Check]]) -> Check:
    """A check that crashed is reported as failed, with what went wrong."""
    try:
        return await check()
    except Exception as exc:  # the report must come out whatever the server does
        return Check(
            name,
            "fail",
            f"the check itself failed: {_describe(exc)}",
            fix="report this with the output of `switchboard doctor --json`",
            subject=subject,
        )


# -- health ----------------------------------------------------------------------------


async def _probe_health(http: httpx.AsyncClient, base: str) -> tuple[Status, str, str | None, Any]:
    """(status, summary, fix, details) for /healthz and /readyz of one URL."""
    details: dict[str, Any] = {}
    try:
        healthz = await http.get(f"{base}/healthz")
    except httpx.HTTPError as exc:
        details["healthz"] = None
        return (
            "fail",
            f"nothing answers at {base}: {_describe(exc)}",
            "check the URL and that the server (or the proxy in front of it) is running",
            details,
        )
    details["healthz"] = healthz.status_code
    if healthz.status_code in (502, 503, 504):
        return (
            "fail",
            f"/healthz answered {healthz.status_code}: the proxy reaches no node",
            "start the nodes, and check the proxy's upstream addresses (nginx: `server` lines)",
            details,
        )
    if healthz.status_code != 200:
        return (
            "fail",
            f"/healthz answered {healthz.status_code}, not 200",
            "point the URL at a Switchboard server or at the proxy in front of it",
            details,
        )
    try:
        readyz = await http.get(f"{base}/readyz")
    except httpx.HTTPError as exc:
        details["readyz"] = None
        return (
            "fail",
            f"/readyz did not answer: {_describe(exc)}",
            "check the node's log: /readyz waits for the store",
            details,
        )
    details["readyz"] = readyz.status_code
    if readyz.status_code == 503:
        message = _error_message(readyz)
        details["message"] = message
        return (
            "fail",
            f"/readyz 503: the store or message queue is unreachable ({message})",
            "check that every node reaches its --store (Redis: is it up, is the URL right?)",
            details,
        )
    if readyz.status_code != 200:
        return (
            "fail",
            f"/readyz answered {readyz.status_code}, not 200",
            "check the node's log",
            details,
        )
    return "ok", "/healthz 200, /readyz 200", None, details


async def check_health(http: httpx.AsyncClient, base: str) -> Check:
    status, summary, fix, details = await _probe_health(http, base)
    return Check("health", status, summary, fix, details=details)


async def check_node(http: httpx.AsyncClient, node: str) -> Check:
    status, summary, fix, details = await _probe_health(http, node)
    return Check("node", status, summary, fix, subject=node, details=details)


def _error_message(response: httpx.Response) -> str:
    """The server's `{"error": {"message"}}`, or the body's start."""
    try:
        body = response.json()
        return str(body["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:200] or "no message"


# -- Engine.IO over polling ----------------------------------------------------------------


@dataclass
class Handshake:
    sid: str
    ping_interval: float  # seconds
    ping_timeout: float
    headers: httpx.Headers


class HandshakeError(Exception):
    def __init__(self, message: str, status: int | None = None, body: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.body = body


async def handshake(http: httpx.AsyncClient, base: str, origin: str | None = None) -> Handshake:
    """Open an Engine.IO polling session, as socket.io-client's first request does."""
    headers = {"Origin": origin} if origin else {}
    try:
        response = await http.get(f"{base}{EIO}", headers=headers)
    except httpx.HTTPError as exc:
        raise HandshakeError(f"the handshake did not answer: {_describe(exc)}") from exc
    text = response.text
    if response.status_code != 200 or not text.startswith("0"):
        raise HandshakeError(
            f"the handshake answered {response.status_code} {_quote(text)}",
            response.status_code,
            text,
        )
    try:
        opened = json.loads(text[1:].split(SEP)[0])
        return Handshake(
            sid=str(opened["sid"]),
            ping_interval=float(opened["pingInterval"]) / 1000,
            ping_timeout=float(opened["pingTimeout"]) / 1000,
            headers=response.headers,
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise HandshakeError(f"the handshake answered {_quote(text)}", 200, text) from exc


def _session_url(base: str, sid: str) -> str:
    return f"{base}{EIO}&sid={sid}&t={secrets.token_hex(4)}"


def _misrouted(status: int | None, body: str) -> bool:
    return status == 400 and any(marker in body for marker in MISROUTED_MARKERS)


async def _close_session(http: httpx.AsyncClient, base: str, sid: str) -> None:
    """Best effort: an Engine.IO close packet (a session left open times out anyway)."""
    with contextlib.suppress(httpx.HTTPError):
        await http.post(_session_url(base, sid), content=b"1")


# -- stickiness ------------------------------------------------------------------------


@dataclass
class Tally:
    requests: int = 0
    misrouted: int = 0
    sessions: int = 0
    errors: list[str] = field(default_factory=list)

    def error(self, text: str) -> None:
        if len(self.errors) < 5:
            self.errors.append(text)


async def _session_traffic(http: httpx.AsyncClient, base: str, rounds: int, tally: Tally) -> None:
    """One polling session: per round, connect to /job (POST), read the answer (GET),
    disconnect (POST). Each request carries the sid, so each must reach the same node.

    A GET is only sent while an answer is queued for it, so it never waits for a ping.
    """
    try:
        opened = await handshake(http, base)
    except HandshakeError as exc:
        tally.error(str(exc))
        return
    tally.sessions += 1
    url = _session_url(base, opened.sid)
    waiting = False  # an answer is queued on the session's node

    async def send(method: str, body: bytes | None = None) -> str | None:
        """The answer's text when the request reached the session's node, else None."""
        tally.requests += 1
        try:
            response = await http.request(method, url, content=body)
        except httpx.HTTPError as exc:
            tally.error(f"{method}: {_describe(exc)}")
            return None
        if _misrouted(response.status_code, response.text):
            tally.misrouted += 1
            return None
        if response.status_code != 200:
            tally.error(f"{method} answered {response.status_code} {_quote(response.text)}")
            return None
        return response.text

    try:
        for _ in range(rounds):
            if await send("POST", b"40/job,") is not None:
                waiting = True
            if waiting:
                answer = await send("GET")
                if answer is not None:
                    waiting = False
                    if "2" in answer.split(SEP):  # the server's ping: answer it
                        await send("POST", b"3")
            await send("POST", b"41/job,")
    finally:
        await _close_session(http, base, opened.sid)


async def check_stickiness(http: httpx.AsyncClient, base: str, options: Options) -> Check:
    tally = Tally()
    gate = asyncio.Semaphore(10)

    async def one() -> None:
        async with gate:
            await _session_traffic(http, base, options.rounds, tally)

    await asyncio.gather(*(one() for _ in range(options.sessions)))
    details: dict[str, Any] = {
        "sessions": tally.sessions,
        "requests": tally.requests,
        "misrouted": tally.misrouted,
        "errors": tally.errors,
    }
    if tally.misrouted:
        return Check(
            "stickiness",
            "fail",
            f"not sticky: {tally.misrouted} of {tally.requests} polling requests reached a "
            "node that does not hold the session",
            STICKY_FIX,
            details=details,
        )
    if tally.sessions == 0 or tally.errors:
        return Check(
            "stickiness",
            "fail",
            f"polling sessions did not work ({'; '.join(tally.errors) or 'no session opened'})",
            "check the proxy's log and the nodes' logs for these requests",
            details=details,
        )
    return Check(
        "stickiness",
        "ok",
        f"{tally.requests} polling requests in {tally.sessions} sessions each reached the "
        "node holding their session",
        details=details,
    )


# -- websocket upgrade -----------------------------------------------------------------


def _ws_url(base: str) -> str:
    return "ws" + base.removeprefix("http")  # http -> ws, https -> wss


class UpgradeFailed(Exception):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


async def _upgrade(session: aiohttp.ClientSession, url: str, seconds: float) -> None:
    """Upgrade a polling session as socket.io-client does; UpgradeFailed says how not."""
    try:
        async with asyncio.timeout(seconds * 2):
            ws = await session.ws_connect(url, autoping=True, heartbeat=None, compress=0)
            try:
                await ws.send_str("2probe")
                while True:
                    message = await ws.receive()
                    if message.type != aiohttp.WSMsgType.TEXT:
                        raise UpgradeFailed(f"the websocket closed before 3probe ({message.type})")
                    if message.data == "3probe":
                        break
                    if message.data not in ("2", "6"):  # a ping or a noop may come first
                        raise UpgradeFailed(f"expected 3probe, got {_quote(message.data)}")
                await ws.send_str("5")
                await ws.send_str("1")  # and close the session again
            finally:
                await ws.close()
    except aiohttp.WSServerHandshakeError as exc:
        raise UpgradeFailed(f"the upgrade was answered HTTP {exc.status}", exc.status) from exc
    except TimeoutError as exc:
        raise UpgradeFailed(f"no 3probe within {seconds * 2:.0f} s") from exc
    except aiohttp.ClientError as exc:
        raise UpgradeFailed(f"the upgrade failed: {_describe(exc)}") from exc


async def _websocket_only(session: aiohttp.ClientSession, base: str, seconds: float) -> str | None:
    """None when a websocket-only Engine.IO session opens through `base`, else why not."""
    try:
        async with asyncio.timeout(seconds * 2):
            ws = await session.ws_connect(
                f"{_ws_url(base)}/socket.io/?EIO=4&transport=websocket",
                heartbeat=None,
                compress=0,
            )
            try:
                message = await ws.receive()
                if message.type != aiohttp.WSMsgType.TEXT or not str(message.data).startswith("0"):
                    return f"the websocket did not open an Engine.IO session ({message.type})"
                await ws.send_str("1")
            finally:
                await ws.close()
    except aiohttp.WSServerHandshakeError as exc:
        return f"a websocket connection was answered HTTP {exc.status}"
    except TimeoutError:
        return f"a websocket connection got no answer within {seconds * 2:.0f} s"
    except aiohttp.ClientError as exc:
        return f"a websocket connection failed: {_describe(exc)}"
    return None


async def check_websocket(
    http: httpx.AsyncClient, base: str, seconds: float, attempts: int = 3
) -> Check:
    problems: list[str] = []
    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=seconds * 2), trust_env=False
    ) as session:
        for _ in range(attempts):
            try:
                opened = await handshake(http, base)
            except HandshakeError as exc:
                problems.append(str(exc))
                continue
            url = f"{_ws_url(base)}/socket.io/?EIO=4&transport=websocket&sid={opened.sid}"
            try:
                await _upgrade(session, url, seconds)
            except UpgradeFailed as exc:
                problems.append(str(exc))
                await _close_session(http, base, opened.sid)
                continue
            return Check(
                "websocket",
                "ok",
                "a polling session upgraded to websocket (2probe, 3probe, 5)",
                details={"attempts": len(problems) + 1, "problems": problems},
            )
        why_not = await _websocket_only(session, base, seconds)
    details: dict[str, Any] = {"attempts": attempts, "problems": problems}
    if why_not is None:
        # Websockets get through; the upgrades reached a node without the polling session.
        return Check(
            "websocket",
            "fail",
            f"{attempts} upgrades of polling sessions failed ({problems[-1]}) while a "
            "websocket-only connection works: the upgrade reached a node that does not "
            "hold the session",
            STICKY_FIX,
            details=details,
        )
    details["websocket_only"] = why_not
    return Check(
        "websocket",
        "fail",
        f"the websocket upgrade fails through the proxy ({problems[-1] if problems else why_not}"
        f"; {why_not})",
        UPGRADE_FIX,
        details=details,
    )


# -- CORS ------------------------------------------------------------------------------


async def check_cors(http: httpx.AsyncClient, base: str, origin: str, tries: int = 3) -> Check:
    """Handshakes with `Origin: origin` must be let in (a few: behind a proxy that is not
    sticky, each may reach another node)."""
    fix = (
        f"start the nodes with --cors-origins {origin} (or SWITCHBOARD_CORS_ORIGINS; "
        "comma-separated with the origins already allowed)"
    )
    refused = 0
    bare = 0  # allowed, but without the CORS header a browser needs
    problems: list[str] = []
    for _ in range(tries):
        try:
            opened = await handshake(http, base, origin=origin)
        except HandshakeError as exc:
            if exc.status == 400 and "not an accepted origin" in exc.body:
                refused += 1
            else:
                problems.append(str(exc))
            continue
        await _close_session(http, base, opened.sid)
        allowed = opened.headers.get("Access-Control-Allow-Origin")
        if allowed not in (origin, "*"):
            bare += 1
    details = {"tries": tries, "refused": refused, "without_header": bare, "problems": problems}
    if refused:
        return Check(
            "cors",
            "fail",
            f"refused: {refused} of {tries} Engine.IO handshakes from {origin} were answered "
            "400 'not an accepted origin'",
            fix,
            subject=origin,
            details=details,
        )
    if bare:
        return Check(
            "cors",
            "fail",
            f"{bare} of {tries} handshakes from {origin} were answered without "
            "Access-Control-Allow-Origin, so a browser would not read them",
            fix + ", and let the proxy pass Access-Control-* headers through",
            subject=origin,
            details=details,
        )
    if problems:
        return Check(
            "cors",
            "fail",
            f"the handshakes from {origin} failed: {problems[-1]}",
            "check the proxy's log and the nodes' logs",
            subject=origin,
            details=details,
        )
    return Check(
        "cors",
        "ok",
        f"allowed: Engine.IO handshakes from {origin} answered 200 with "
        "Access-Control-Allow-Origin",
        subject=origin,
        details=details,
    )


# -- clocks ----------------------------------------------------------------------------


@dataclass
class Clock:
    url: str
    low: float  # the other clock minus ours lies within [low, high] seconds
    high: float

    @property
    def skew(self) -> float:
        """The smallest offset consistent with what was seen (0 when the range holds 0)."""
        if self.low > 0:
            return self.low
        if self.high < 0:
            return self.high
        return 0.0


async def read_clock(http: httpx.AsyncClient, url: str) -> Clock | str:
    """The offset of `url`'s clock from ours, from its Date header, or why not."""
    before = time.time()
    try:
        response = await http.get(f"{url}/healthz")
    except httpx.HTTPError as exc:
        return f"{url}: {_describe(exc)}"
    after = time.time()
    date = response.headers.get("Date")
    if date is None:
        return f"{url}: no Date header"
    try:
        stamp = parsedate_to_datetime(date).timestamp()
    except (TypeError, ValueError):
        return f"{url}: unreadable Date header {date!r}"
    # Date is in whole seconds, truncated: the other clock read within [stamp, stamp+1)
    # at some instant between `before` and `after` on ours.
    return Clock(url, low=stamp - after, high=stamp + 1 - before)


async def check_clock(
    http: httpx.AsyncClient, urls: Sequence[str], tolerance: float = CLOCK_TOLERANCE
) -> Check:
    readings = [await read_clock(http, url) for url in urls]
    clocks = [r for r in readings if isinstance(r, Clock)]
    missing = [r for r in readings if isinstance(r, str)]
    details: dict[str, Any] = {
        "clocks": [
            {
                "url": c.url,
                "skew_s": round(c.skew, 3),
                "low_s": round(c.low, 3),
                "high_s": round(c.high, 3),
            }
            for c in clocks
        ],
        "unread": missing,
    }
    off = [c for c in clocks if abs(c.skew) > tolerance]
    if off:
        worst = ", ".join(
            f"{c.url} at least {abs(c.skew):.1f} s {'ahead' if c.skew > 0 else 'behind'}"
            for c in off
        )
        return Check(
            "clock",
            "warn",
            f"clock skew above {tolerance:.0f} s: {worst}",
            "run NTP (chrony or systemd-timesyncd) on every machine: tokens' exp and "
            "timestamps depend on it",
            details=details,
        )
    if not clocks:
        return Check("clock", "skip", "no clock could be read: " + "; ".join(missing))
    suffix = f" ({len(missing)} not read: {'; '.join(missing)})" if missing else ""
    return Check(
        "clock",
        "ok",
        f"{len(clocks)} clock{'s' if len(clocks) > 1 else ''} within {tolerance:.0f} s of "
        f"this machine's{suffix}",
        details=details,
    )


# -- proxy timeouts --------------------------------------------------------------------


async def check_timeouts(
    http: httpx.AsyncClient, base: str, options: Options, attempts: int = 3
) -> Check:
    """Hold an idle long-poll: the server answers it with a ping after pingInterval; a
    proxy must not cut it first (nginx: proxy_read_timeout above pingInterval+pingTimeout).
    """
    for _ in range(attempts):
        try:
            opened = await handshake(http, base)
        except HandshakeError as exc:
            return Check("timeouts", "fail", str(exc), "check the proxy's and the nodes' logs")
        budget = opened.ping_interval + opened.ping_timeout
        full = options.slow or budget <= FULL_WAIT_LIMIT
        hold = budget + options.timeout if full else min(QUICK_HOLD, budget)
        details: dict[str, Any] = {
            "ping_interval_s": opened.ping_interval,
            "ping_timeout_s": opened.ping_timeout,
            "full": full,
        }
        fix = (
            f"raise the proxy's read timeout above pingInterval+pingTimeout ({budget:.0f} s) "
            f"(nginx: `proxy_read_timeout {math.ceil(budget * 1.5)}s;`)"
        )
        started = time.monotonic()
        try:
            response = await http.get(
                _session_url(base, opened.sid),
                timeout=httpx.Timeout(options.timeout, read=hold),
            )
        except httpx.ReadTimeout:
            waited = time.monotonic() - started
            details["held_s"] = round(waited, 1)
            await _close_session(http, base, opened.sid)
            if full:
                return Check(
                    "timeouts",
                    "fail",
                    f"an idle long-poll got no answer in {waited:.0f} s although the server "
                    f"pings every {opened.ping_interval:.0f} s: something holds answers back",
                    "turn response buffering off in the proxy (nginx: `proxy_buffering off;`)",
                    details=details,
                )
            return Check(
                "timeouts",
                "skip",
                f"partial: an idle long-poll stayed open {waited:.0f} s; the full check waits "
                f"for the server's ping (up to {budget:.0f} s): run with --slow",
                details=details,
            )
        except httpx.HTTPError as exc:
            waited = time.monotonic() - started
            details["held_s"] = round(waited, 1)
            return Check(
                "timeouts",
                "fail",
                f"an idle long-poll was cut after {waited:.0f} s ({_describe(exc)})",
                fix,
                details=details,
            )
        waited = time.monotonic() - started
        details["held_s"] = round(waited, 1)
        if _misrouted(response.status_code, response.text):
            await _close_session(http, base, opened.sid)
            continue  # another node: try a new session
        if response.status_code in (502, 504):
            return Check(
                "timeouts",
                "fail",
                f"the proxy cut an idle long-poll after {waited:.0f} s "
                f"(HTTP {response.status_code}), before the server's ping at "
                f"{opened.ping_interval:.0f} s",
                fix,
                details=details,
            )
        if response.status_code != 200:
            return Check(
                "timeouts",
                "fail",
                f"an idle long-poll answered {response.status_code} {_quote(response.text)}",
                "check the proxy's and the nodes' logs",
                details=details,
            )
        await _close_session(http, base, opened.sid)
        return Check(
            "timeouts",
            "ok",
            f"an idle long-poll stayed open until the server answered it ({waited:.0f} s; "
            f"pingInterval {opened.ping_interval:g} s, pingTimeout {opened.ping_timeout:g} s)",
            details=details,
        )
    return Check(
        "timeouts",
        "skip",
        f"no long-poll reached the node holding its session in {attempts} tries (see stickiness)",
    )


# -- output ----------------------------------------------------------------------------


def print_report(report: Report, console: Console) -> None:
    """One line per check with ✓/✗, and the fix under each failure or warning."""
    console.print(f"switchboard doctor {escape(report.url)}", highlight=False)
    width = max(len(check.title) for check in report.checks)
    for check in report.checks:
        style = STYLES[check.status]
        symbol = SYMBOLS[check.status]
        console.print(
            f"[{style}]{symbol}[/] {escape(check.title.ljust(width))}  {escape(check.summary)}",
            highlight=False,
            soft_wrap=True,
        )
        if check.fix:
            console.print(
                f"  {' ' * width}  [bold]fix:[/] {escape(check.fix)}",
                highlight=False,
                soft_wrap=True,
            )
    failed = sum(check.status == "fail" for check in report.checks)
    warned = sum(check.status == "warn" for check in report.checks)
    if failed:
        console.print(f"[red]{failed} of {len(report.checks)} checks failed[/]", highlight=False)
    else:
        extra = f" ({warned} warning{'s' if warned > 1 else ''})" if warned else ""
        console.print(f"[green]all checks passed{extra}[/]", highlight=False)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _quote(text: str, limit: int = 120) -> str:
    text = text.strip()
    return repr(text[:limit] + ("…" if len(text) > limit else ""))
