"""Dramatiq -> Switchboard: a middleware that reports every message, and `report()` inside.

    from switchboard_client.dramatiq import SwitchboardMiddleware, report
    SwitchboardMiddleware.install(broker, url="http://127.0.0.1:8001", token="change-me")

    @dramatiq.actor
    def build(n):
        for i in range(n):
            report(100 * i / n, message=f"step {i}")

before_process_message -> running, after_process_message -> succeeded (the result in
`data` when it is small JSON) or, on an exception, failed once Retries gives up and a
"retrying" message before that; after_skip_message (e.g. AgeLimit) -> cancelled. The job
id is the message id unless `job_id(message)` says otherwise.

Dramatiq has no way to cancel a message that is running. What the bridge does with a
Switchboard cancel: once it has seen it (in the answer to an update, or by asking about a
job quiet for a second) `report()` raises `Cancelled` in the actor, which ends the job
`cancelled` and is never retried (the middleware adds Cancelled to each actor's `throws`).
An actor that does not call report() runs to its end.

`capture_logs=True` also turns what an actor logs into log lines of its job (see
`bridge.CaptureLogs`): the records made in its worker thread while it runs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from dramatiq import Broker, Middleware
from dramatiq.middleware import Retries

from . import bridge
from .errors import Cancelled

log = logging.getLogger("switchboard.bridge")

JobId = Callable[[Any], "str | None"]

_local = threading.local()  # the job of the message this worker thread is processing


def default_job_id(message: Any) -> str | None:
    return str(message.message_id)


class SwitchboardMiddleware(Middleware):
    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        job_id: JobId | None = None,
        max_queue: int | None = None,
        capture_logs: bridge.CaptureOption = False,
    ) -> None:
        """`capture_logs`: True (INFO and above), a level, or a `bridge.CaptureLogs`."""
        bridge.configure(url, token, max_queue=max_queue)
        self.job_id = job_id or default_job_id
        self.capture = bridge.CaptureLogs.of(capture_logs)

    @classmethod
    def install(cls, broker: Broker, *args: Any, **kwargs: Any) -> SwitchboardMiddleware:
        """Add it before Retries, so that it hears after_process_message after Retries."""
        middleware = cls(*args, **kwargs)
        has_retries = any(isinstance(m, Retries) for m in broker.middleware)
        broker.add_middleware(middleware, before=Retries if has_retries else None)
        return middleware

    def job_for(self, message: Any) -> str | None:
        try:
            return self.job_id(message)
        except Exception:
            log.exception("switchboard: job_id(%r) failed; not reporting", message)
            return None

    def before_process_message(self, broker: Broker, message: Any) -> None:
        target = self.job_for(message)
        _local.job = target
        if target:
            _throws_cancelled(broker, message.actor_name)
            bridge.watch(target)  # no stop: report() raising Cancelled is the only way
            bridge.started(target, attempt=int(message.options.get("retries", 0)) + 1)
            bridge.capture(target, self.capture)

    def after_process_message(
        self,
        broker: Broker,
        message: Any,
        *,
        result: Any | None = None,
        exception: BaseException | None = None,
    ) -> None:
        _local.job = None
        bridge.release()
        target = self.job_for(message)
        if not target:
            return
        bridge.unwatch(target)
        if exception is None:
            bridge.succeeded(target, result)
        elif isinstance(exception, Cancelled):
            bridge.cancelled(target)
        elif message.failed or not _retried_by(broker):
            bridge.failed(target, exception)
        else:
            reason = f"{type(exception).__name__}: {exception}" if str(exception) else ""
            bridge.retrying(target, reason or type(exception).__name__)

    def after_skip_message(self, broker: Broker, message: Any) -> None:
        _local.job = None
        bridge.release()
        if target := self.job_for(message):
            bridge.cancelled(target, "skipped")

    def after_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        bridge.flush()


def report(
    progress: float | None, message: str | None = None, data: dict[str, Any] | None = None
) -> None:
    """From inside an actor: its progress (0-100), a message and/or data. Never blocks.
    Raises `Cancelled` once the bridge has seen a cancel of the message's job."""
    target = getattr(_local, "job", None)
    if target is None:
        log.debug("switchboard: report() outside a reported Dramatiq message; ignored")
        return
    bridge.check(target)
    bridge.progress(target, progress, message, data)


def _retried_by(broker: Broker) -> bool:
    return any(isinstance(m, Retries) for m in broker.middleware)


def _throws_cancelled(broker: Broker, actor_name: str) -> None:
    """Retries fails a message whose exception is in the actor's `throws`, not retrying it."""
    try:
        options = broker.get_actor(actor_name).options
    except Exception:  # ActorNotFound: the worker fails the message anyway
        return
    throws = options.get("throws") or ()
    throws = throws if isinstance(throws, tuple) else (throws,)
    if not any(isinstance(kind, type) and issubclass(Cancelled, kind) for kind in throws):
        options["throws"] = (*throws, Cancelled)
