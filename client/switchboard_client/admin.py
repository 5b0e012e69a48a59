"""Admin HTTP helpers: AsyncAdmin for asyncio programs, Admin for synchronous workers.

Both retry connection errors and 429/502/503/504 with backoff. Every POST carries one
Idempotency-Key for all its attempts, so a retry never applies an update twice.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import httpx

from .errors import Cancelled, SwitchboardError

DEFAULT_URL = "http://127.0.0.1:8001"
RETRY_STATUSES = frozenset({429, 502, 503, 504})
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
R = TypeVar("R")


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()  # "leave as is", unlike None, which means null


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    json: Any = None
    params: dict[str, Any] | None = None
    pick: str | None = None  # answer with this field of the body
    key: str | None = None  # Idempotency-Key to send; None: a fresh one for this call


def _unless_cancelled(job: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    if job.get("cancel_requested") and update.get("status") not in TERMINAL_STATUSES:
        raise Cancelled(job)
    return job


def _fields(**given: Any) -> dict[str, Any]:
    return {name: value for name, value in given.items() if value is not UNSET}


def _answer(call: Call, response: httpx.Response) -> Any:
    if response.status_code == 204:
        return None
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.is_success:
        return body[call.pick] if call.pick and isinstance(body, dict) else body
    error = body.get("error", {}) if isinstance(body, dict) else {}
    raise SwitchboardError(
        response.status_code,
        str(error.get("code", "http_error")),
        str(error.get("message", response.reason_phrase or "request failed")),
    )


def _attempts(
    call: Call, retries: int, backoff: float
) -> Iterator[tuple[dict[str, str], float | None]]:
    """(headers, delay before the next attempt or None for the last) for each attempt."""
    headers = {"Idempotency-Key": call.key or str(uuid.uuid4())} if call.method == "POST" else {}
    for attempt in range(retries):
        yield headers, min(backoff * 2**attempt, 5.0)
    yield headers, None


def _retry(response: httpx.Response | None, error: httpx.TransportError | None, last: bool) -> bool:
    if error is not None and last:
        raise SwitchboardError(0, "unreachable", str(error) or repr(error)) from error
    return not last and (response is None or response.status_code in RETRY_STATUSES)


class _Api(Generic[R]):
    """Every admin call, defined once; `_send` makes it blocking or awaitable."""

    client_class: type[httpx.Client] | type[httpx.AsyncClient]

    def __init__(
        self,
        url: str = DEFAULT_URL,
        token: str | None = None,
        *,
        retries: int = 5,
        backoff: float = 0.2,
        timeout: float = 10.0,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = self.client_class(base_url=url, headers=headers, timeout=timeout)
        self.retries, self.backoff = retries, backoff

    def _send(self, call: Call) -> R:
        raise NotImplementedError

    def create_job(
        self,
        job_id: str | None = None,
        *,
        status: str = UNSET,
        progress: float | None = UNSET,
        message: str | None = UNSET,
        data: dict[str, Any] = UNSET,
        tags: list[str] = UNSET,
        parent: str | None = UNSET,
        idempotency_key: str | None = None,
    ) -> R:
        """`tags` (e.g. ["user:42"]) and `parent` (a batch's job id) group jobs."""
        body = _fields(id=job_id or UNSET, status=status, progress=progress, message=message,
                       data=data, tags=tags, parent=parent)  # fmt: skip
        return self._send(Call("POST", "/api/jobs", body, key=idempotency_key))

    def update_job(
        self,
        job_id: str,
        *,
        status: str = UNSET,
        progress: float | None = UNSET,
        message: str | None = UNSET,
        data: dict[str, Any] = UNSET,
        tags: list[str] = UNSET,
        parent: str | None = UNSET,
        idempotency_key: str | None = None,
    ) -> R:
        """`idempotency_key`: reuse one key across your own re-sends of the same update.
        `tags` replaces the job's tags."""
        body = _fields(status=status, progress=progress, message=message, data=data,
                       tags=tags, parent=parent)  # fmt: skip
        call = Call("POST", f"/api/jobs/{job_id}/updates", body, key=idempotency_key)
        return self._send(call)

    def log(
        self,
        job_id: str,
        lines: str | Iterable[str | dict[str, str]],
        stream: str = "stdout",
        *,
        idempotency_key: str | None = None,
    ) -> R:
        """Append log lines to a job (it must exist; a finished one takes late lines): one
        text, or many (texts, or {"text", "stream"} dicts), at most 1,000 per call.
        Answers {"job_id", "offsets"}."""
        given = [lines] if isinstance(lines, str) else lines
        entries = [{"text": t, "stream": stream} if isinstance(t, str) else t for t in given]
        body = {"lines": entries}
        return self._send(Call("POST", f"/api/jobs/{job_id}/logs", body, key=idempotency_key))

    def cancel_job(self, job_id: str) -> R:
        """Ask the job's worker to stop: the job gets `cancel_requested` and one event."""
        return self._send(Call("POST", f"/api/jobs/{job_id}/cancel"))

    def get_job(self, job_id: str) -> R:
        return self._send(Call("GET", f"/api/jobs/{job_id}"))

    def list_jobs(
        self,
        status: str | None = None,
        limit: int = 100,
        *,
        tag: str | None = None,
        parent: str | None = None,
    ) -> R:
        """Newest first; with `tag`, the jobs that have it; with `parent`, its children."""
        params = _fields(status=status or UNSET, limit=limit, tag=tag or UNSET,
                         parent=parent or UNSET)  # fmt: skip
        return self._send(Call("GET", "/api/jobs", params=params, pick="jobs"))

    def events(self, job_id: str, since: int = 0, limit: int = 1000) -> R:
        params = {"since": since, "limit": limit}
        return self._send(Call("GET", f"/api/jobs/{job_id}/events", params=params))

    def delete_job(self, job_id: str) -> R:
        return self._send(Call("DELETE", f"/api/jobs/{job_id}"))

    def announce(self, text: str, *, level: str = "info", room: str | None = None) -> R:
        body = _fields(text=text, level=level, room=room or UNSET)
        return self._send(Call("POST", "/api/announcements", body))

    def mint_token(
        self,
        sub: str,
        *,
        name: str = UNSET,
        jobs: list[str] = UNSET,
        rooms: list[str] = UNSET,
        cancel: list[str] = UNSET,
        tags: list[str] = UNSET,
        ttl: int = UNSET,
    ) -> R:
        body = _fields(sub=sub, name=name, jobs=jobs, rooms=rooms, cancel=cancel, tags=tags,
                       ttl=ttl)  # fmt: skip
        return self._send(Call("POST", "/api/tokens", body))


class AsyncAdmin(_Api[Awaitable[Any]]):
    """`async with AsyncAdmin(url, token) as admin: await admin.update_job("b1", progress=5)`"""

    _http: httpx.AsyncClient
    client_class = httpx.AsyncClient

    async def report(self, job_id: str, **update: Any) -> dict[str, Any]:
        """update_job() for workers: raises Cancelled once a cancel was asked for."""
        return _unless_cancelled(await self.update_job(job_id, **update), update)

    async def cancel_requested(self, job_id: str) -> bool:
        return bool((await self.get_job(job_id)).get("cancel_requested"))

    async def __aenter__(self) -> AsyncAdmin:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def _send(self, call: Call) -> Any:  # type: ignore[override]
        for headers, delay in _attempts(call, self.retries, self.backoff):
            response, error = None, None
            try:
                response = await self._http.request(
                    call.method, call.path, json=call.json, params=call.params, headers=headers
                )
            except httpx.TransportError as exc:
                error = exc
            if not _retry(response, error, delay is None):
                return _answer(call, response)  # type: ignore[arg-type]
            await asyncio.sleep(delay or 0)


class Admin(_Api[Any]):
    """The blocking twin of AsyncAdmin, for synchronous workers."""

    _http: httpx.Client
    client_class = httpx.Client

    def report(self, job_id: str, **update: Any) -> dict[str, Any]:
        """update_job() for workers: raises Cancelled once a cancel was asked for."""
        return _unless_cancelled(self.update_job(job_id, **update), update)

    def cancel_requested(self, job_id: str) -> bool:
        return bool(self.get_job(job_id).get("cancel_requested"))

    def __enter__(self) -> Admin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: Call) -> Any:
        for headers, delay in _attempts(call, self.retries, self.backoff):
            response, error = None, None
            try:
                response = self._http.request(
                    call.method, call.path, json=call.json, params=call.params, headers=headers
                )
            except httpx.TransportError as exc:
                error = exc
            if not _retry(response, error, delay is None):
                return _answer(call, response)  # type: ignore[arg-type]
            time.sleep(delay or 0)
