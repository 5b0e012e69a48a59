"""arq -> Switchboard: every job of a worker reports its status, and progress in one call.

    from switchboard_client.arq import install, report

    async def build(ctx, n):
        for i in range(n):
            report(100 * i / n, message=f"step {i}")

    class WorkerSettings:
        functions = [build]
        allow_abort_jobs = True            # for Job.abort()

    install(WorkerSettings, url="http://127.0.0.1:8001", token="change-me")

Each function is wrapped (its name is kept): start -> running, return -> succeeded (the
result in `data` when it is small JSON), an exception -> failed, `raise Retry` -> a
"retrying" message (failed once max_tries is spent), Job.abort() -> cancelled, a timeout
-> failed. The worker's after_job_end and on_shutdown hooks are chained, not replaced.
A job aborted before it starts never runs, so it is not reported. `install(…,
capture_logs=True)` also turns what a job logs into log lines of it (see
`bridge.CaptureLogs`): the records made in its own asyncio task, so concurrent jobs of a
worker keep their own lines.

A Switchboard cancel of a running job: from then on `report()` raises `Cancelled`, and
with `allow_abort_jobs = True` the bridge also calls `Job.abort()`, so a job that does not
report is stopped too (`cancelled`, "aborted"; "cancelled" when the job ends on the
Cancelled first). Without allow_abort_jobs a job stops at its next `report()` only.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import functools
import logging
import pickle
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

from arq.constants import default_queue_name, job_key_prefix
from arq.jobs import Job
from arq.worker import Function, Retry, func

from . import bridge
from .errors import Cancelled

log = logging.getLogger("switchboard.bridge")

JobId = Callable[[dict[str, Any]], "str | None"]
JobFor = Callable[[dict[str, Any]], "str | None"]
Hook = Callable[[dict[str, Any]], Awaitable[Any]]
INTERRUPTED = "_switchboard_interrupted"  # ctx key: the job's task was cancelled
DEFAULT_MAX_TRIES = 5  # arq's

_current: ContextVar[str | None] = ContextVar("switchboard_arq_job", default=None)
_aborting: set[concurrent.futures.Future[None]] = set()  # Job.abort() calls under way


def default_job_id(ctx: dict[str, Any]) -> str | None:
    job_id = ctx.get("job_id")
    return None if job_id is None else str(job_id)


def install(
    settings: Any,
    url: str | None = None,
    token: str | None = None,
    *,
    job_id: JobId | None = None,
    max_queue: int | None = None,
    capture_logs: bridge.CaptureOption = False,
) -> None:
    """Report every function of an arq WorkerSettings (class or dict), in place.
    `capture_logs`: True (INFO and above), a level, or a `bridge.CaptureLogs`."""
    bridge.configure(url, token, max_queue=max_queue)
    get, put = _accessors(settings)
    job_for = _job_for(job_id or default_job_id)
    capture = bridge.CaptureLogs.of(capture_logs)
    default_tries = get("max_tries") or DEFAULT_MAX_TRIES
    retries = get("retry_jobs") is not False  # when off, arq fails a job that raises Retry
    queue = (get("queue_name") or default_queue_name) if get("allow_abort_jobs") else None
    functions = [func(f) for f in get("functions") or ()]
    put(
        "functions",
        [
            dataclasses.replace(
                f,
                coroutine=_wrap(
                    f, job_for, (f.max_tries or default_tries) if retries else 1, queue, capture
                ),
            )
            for f in functions
        ],
    )
    after = _after_job_end(get("job_deserializer"))
    put("after_job_end", _chain(after, get("after_job_end")))
    put("on_shutdown", _chain(_flush, get("on_shutdown")))


def report(
    progress: float | None, message: str | None = None, data: dict[str, Any] | None = None
) -> None:
    """From inside a job: its progress (0-100), a message and/or data. Never blocks.
    Raises `Cancelled` once the bridge has seen a cancel of the job."""
    target = _current.get()
    if target is None:
        log.debug("switchboard: report() outside an installed arq job; ignored")
        return
    bridge.check(target)
    bridge.progress(target, progress, message, data)


def _accessors(settings: Any) -> tuple[Callable[[str], Any], Callable[[str, Any], None]]:
    if isinstance(settings, dict):
        return settings.get, settings.__setitem__
    return (lambda name: settings.__dict__.get(name)), (
        lambda name, value: setattr(settings, name, value)
    )


def _job_for(job_id: JobId) -> JobFor:
    def job_for(ctx: dict[str, Any]) -> str | None:
        try:
            return job_id(ctx)
        except Exception:
            log.exception("switchboard: job_id(ctx) failed; not reporting")
            return None

    return job_for


def _wrap(
    function: Function,
    job_for: JobFor,
    max_tries: int,
    queue: str | None,
    capture: bridge.CaptureLogs | None,
) -> Any:
    """`queue`: the worker's queue when it allows aborting jobs, else None."""
    coroutine = function.coroutine
    if getattr(coroutine, "_switchboard", False):
        return coroutine

    @functools.wraps(coroutine)
    async def run(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        target = job_for(ctx)
        if not target:
            return await coroutine(ctx, *args, **kwargs)
        token = _current.set(target)
        stop = None if queue is None else _aborter(ctx, queue)
        try:
            bridge.watch(target, stop)
            bridge.started(target, attempt=ctx.get("job_try"))
            bridge.capture(target, capture)  # in this job's own asyncio task only
            try:
                result = await coroutine(ctx, *args, **kwargs)
            except Cancelled:
                bridge.cancelled(target)
                raise
            except Retry as exc:
                if (ctx.get("job_try") or 1) >= max_tries:
                    bridge.failed(target, f"max {max_tries} tries exceeded")
                else:
                    bridge.retrying(target, repr(exc))
                raise
            except asyncio.CancelledError:
                ctx[INTERRUPTED] = target  # aborted, timed out or shut down: after_job_end tells
                raise
            except Exception as exc:
                bridge.failed(target, exc)
                raise
            bridge.succeeded(target, result)
            return result
        finally:
            bridge.release()
            bridge.unwatch(target)
            _current.reset(token)

    run._switchboard = True  # type: ignore[attr-defined]
    return run


def _aborter(ctx: dict[str, Any], queue: str) -> bridge.Stop:
    """Job.abort() of this job, on the worker's loop, from the bridge's thread."""
    loop = asyncio.get_running_loop()
    job = Job(str(ctx["job_id"]), ctx["redis"], _queue_name=queue)

    async def abort() -> None:
        # Puts the job in arq's abort set, which the worker polls; not waiting for the
        # outcome (timeout=0): after_job_end reports it.
        with contextlib.suppress(asyncio.TimeoutError):
            await job.abort(timeout=0, poll_delay=0)

    def stop(_: dict[str, Any]) -> None:
        future = asyncio.run_coroutine_threadsafe(abort(), loop)
        _aborting.add(future)
        future.add_done_callback(_aborted)

    return stop


def _aborted(future: concurrent.futures.Future[None]) -> None:
    _aborting.discard(future)
    if not future.cancelled() and future.exception() is not None:
        log.error("switchboard: Job.abort() failed: %r", future.exception())


def _after_job_end(deserializer: Any) -> Hook:
    async def after_job_end(ctx: dict[str, Any]) -> None:
        target = ctx.pop(INTERRUPTED, None)
        if not target:
            return
        redis, job_id = ctx["redis"], str(ctx["job_id"])
        if await redis.exists(job_key_prefix + job_id):  # arq runs it again
            bridge.retrying(target, "interrupted, will run again")
            return
        info = await Job(job_id, redis, _deserializer=deserializer or pickle.loads).result_info()
        outcome = None if info is None else info.result
        if isinstance(outcome, asyncio.CancelledError):
            bridge.cancelled(target, "aborted")
        elif isinstance(outcome, TimeoutError):
            bridge.failed(target, TimeoutError("timed out"))
        else:
            bridge.failed(target, "cancelled or timed out")

    return after_job_end


async def _flush(ctx: dict[str, Any]) -> None:
    await asyncio.to_thread(bridge.flush)


def _chain(ours: Hook, theirs: Hook | None) -> Hook:
    if theirs is None:
        return ours

    async def both(ctx: dict[str, Any]) -> None:
        try:
            await ours(ctx)
        except Exception:
            log.exception("switchboard: arq hook failed")
        await theirs(ctx)

    return both
