"""Celery -> Switchboard: every task reports its status, and progress in one call.

    from switchboard_client.celery import install, report
    install(app, url="http://127.0.0.1:8001", token="change-me")

    @app.task
    def build(n):
        for i in range(n):
            report(100 * i / n, message=f"step {i}")   # or self.update_state(meta={"progress": …})

task_prerun -> running, task_success -> succeeded (the result in `data` when it is small
JSON), task_failure -> failed, task_revoked -> cancelled, task_retry -> a message. The job
id is the task id unless `job_id(task)` says otherwise (None: do not report that task).
`revoke(terminate=True)` needs the prefork pool: solo and threads cannot terminate a task.
`install(app, capture_logs=True)` also turns what a task logs into log lines of its job
(see `bridge.CaptureLogs`), from task_prerun until its end is reported (or task_postrun).

A Switchboard cancel of a running task: from then on `report()` raises `Cancelled`, and in
the prefork pool the bridge also sends `app.control.revoke(task_id, terminate=True)`, so
a task that does not report is stopped too; the worker then reports `cancelled`
("terminated (SIGTERM)"). A task that ends meanwhile (on the Cancelled, say) waits up to
TERMINATE_WAIT seconds for that, so that the job ends once. In the solo and threads pools
a task stops at its next `report()` only (`cancelled`, "cancelled").
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from celery import current_task, signals
from celery.app.task import Task

from . import bridge
from .errors import Cancelled

log = logging.getLogger("switchboard.bridge")

ATTRIBUTE = "_switchboard_bridge"
JobId = Callable[[Any], "str | None"]
TERMINATE_WAIT = 10.0  # seconds a revoked task's process waits to be terminated
STOP_FLUSH = 2.0  # seconds to deliver what the process holds before revoking its task

_prefork = threading.Event()  # set in a prefork pool process: revoke can terminate its task
_worker_pid = os.getpid()  # install()'s process: the worker's main process


def default_job_id(task: Any) -> str | None:
    return task.request.id  # type: ignore[no-any-return]


class _Installed:
    def __init__(self, app: Any, job_id: JobId, capture: bridge.CaptureLogs | None) -> None:
        self.app = app
        self.job_id = job_id
        self.capture = capture

    def job_for(self, task: Any) -> str | None:
        if task is None or getattr(task, "app", None) is not self.app:
            return None
        if str(getattr(task, "name", "")).startswith("celery."):
            return None  # Celery's own housekeeping tasks
        try:
            return self.job_id(task)
        except Exception:
            log.exception("switchboard: job_id(%r) failed; not reporting", task)
            return None

    # -- signal receivers --------------------------------------------------

    def prerun(self, sender: Any = None, task: Any = None, **_: Any) -> None:
        task = task or sender
        if job := self.job_for(task):
            stop = self._revoker(str(task.request.id)) if _prefork.is_set() else None
            bridge.watch(job, stop)
            bridge.started(job, attempt=(task.request.retries or 0) + 1)
            bridge.capture(job, self.capture)

    def _revoker(self, task_id: str) -> bridge.Stop:
        def stop(job: dict[str, Any]) -> None:
            bridge.flush(STOP_FLUSH)  # what this process still holds dies with it
            self.app.control.revoke(task_id, terminate=True, signal="SIGTERM")

        return stop

    def success(self, sender: Any = None, result: Any = None, **_: Any) -> None:
        if job := self.job_for(sender):
            _await_termination(job)
            bridge.succeeded(job, result)

    def failure(self, sender: Any = None, exception: Any = None, **_: Any) -> None:
        if job := self.job_for(sender):
            _await_termination(job)
            if isinstance(exception, Cancelled):
                bridge.cancelled(job)
            else:
                bridge.failed(job, exception if exception is not None else "failed")

    def retry(self, sender: Any = None, reason: Any = None, **_: Any) -> None:
        if job := self.job_for(sender):
            bridge.retrying(job, str(reason) if reason is not None else "")

    def revoked(
        self,
        sender: Any = None,
        request: Any = None,
        terminated: bool = False,
        signum: Any = None,
        expired: bool = False,
        **_: Any,
    ) -> None:
        # Sent by the worker's main process: make the revoked request `task.request`
        # while job_id(task) runs, as it is inside the task.
        if sender is None or request is None:
            return
        sender.request_stack.push(request)
        try:
            job = self.job_for(sender)
        finally:
            sender.request_stack.pop()
        if not job:
            return
        if expired:
            reason = "expired"
        elif terminated:
            reason = f"terminated ({_signal_name(signum)})" if signum else "terminated"
        else:
            reason = "revoked"
        bridge.cancelled(job, reason)


def install(
    app: Any,
    url: str | None = None,
    token: str | None = None,
    *,
    job_id: JobId | None = None,
    max_queue: int | None = None,
    capture_logs: bridge.CaptureOption = False,
) -> None:
    """Report every task of `app` to Switchboard (call it where the app is defined).
    `capture_logs`: True (INFO and above), a level, or a `bridge.CaptureLogs`."""
    global _worker_pid
    _worker_pid = os.getpid()
    bridge.configure(url, token, max_queue=max_queue)
    installed = _Installed(app, job_id or default_job_id, bridge.CaptureLogs.of(capture_logs))
    setattr(app, ATTRIBUTE, installed)
    uid = f"switchboard-{id(app)}"
    signals.task_prerun.connect(installed.prerun, weak=False, dispatch_uid=f"{uid}-prerun")
    signals.task_success.connect(installed.success, weak=False, dispatch_uid=f"{uid}-success")
    signals.task_failure.connect(installed.failure, weak=False, dispatch_uid=f"{uid}-failure")
    signals.task_retry.connect(installed.retry, weak=False, dispatch_uid=f"{uid}-retry")
    signals.task_revoked.connect(installed.revoked, weak=False, dispatch_uid=f"{uid}-revoked")
    signals.task_postrun.connect(_task_ended, weak=False, dispatch_uid="switchboard-postrun")
    for shutdown in (signals.worker_process_shutdown, signals.worker_shutdown):
        shutdown.connect(_flush, weak=False, dispatch_uid=f"switchboard-flush-{shutdown.name}")
    signals.worker_process_init.connect(
        _in_pool_process, weak=False, dispatch_uid="switchboard-pool"
    )
    _hook_update_state()


def report(
    progress: float | None, message: str | None = None, data: dict[str, Any] | None = None
) -> None:
    """From inside a task: its progress (0-100), a message and/or data. Never blocks.
    Raises `Cancelled` once the bridge has seen a cancel of the task's job."""
    task = current_task._get_current_object() if current_task else None
    installed = getattr(getattr(task, "app", None), ATTRIBUTE, None)
    if task is None or installed is None:
        log.debug("switchboard: report() outside an installed Celery task; ignored")
        return
    if job := installed.job_for(task):
        bridge.check(job)
        bridge.progress(job, progress, message, data)


def _flush(**_: Any) -> None:
    bridge.flush()


def _task_ended(**_: Any) -> None:
    bridge.release()  # a retry, say: no terminal update ended the capture


def _in_pool_process(**_: Any) -> None:
    # The solo pool sends worker_process_init too, from the worker's own process.
    if os.getpid() != _worker_pid:
        _prefork.set()


def _await_termination(job: str) -> None:
    """A task ends after the bridge saw a cancel of its job, so (prefork) revoked it: the
    worker terminates this process any moment and reports the job cancelled. Wait for that
    (bounded) instead of ending the job a second time from here."""
    if not _prefork.is_set() or bridge.cancel_requested(job) is None:
        return
    time.sleep(TERMINATE_WAIT)  # SIGTERM ends the sleep, and the process
    log.warning("switchboard: job %s was revoked but not terminated; reporting it here", job)


def _hook_update_state() -> None:
    """`self.update_state(meta={"progress", "message", "data"})` reports too.

    Celery has no signal for state updates, so Task.update_state is wrapped, once.
    """
    original = Task.update_state
    if getattr(original, "_switchboard", False):
        return

    def update_state(
        self: Any, task_id: Any = None, state: Any = None, meta: Any = None, **kwargs: Any
    ) -> Any:
        installed = getattr(self.app, ATTRIBUTE, None)
        if installed is not None and isinstance(meta, dict):
            try:
                _report_meta(installed, self, task_id, meta)
            except Cancelled:
                raise
            except Exception:
                log.exception("switchboard: could not report update_state")
        return original(self, task_id, state, meta, **kwargs)

    update_state._switchboard = True  # type: ignore[attr-defined]
    Task.update_state = update_state


def _report_meta(installed: _Installed, task: Any, task_id: Any, meta: dict[str, Any]) -> None:
    mine = task_id is None or task_id == task.request.id
    job = installed.job_for(task) if mine else str(task_id)
    if job and mine:
        bridge.check(job)
    value = meta.get("progress")
    current, total = meta.get("current"), meta.get("total")
    if not isinstance(value, int | float) or isinstance(value, bool):
        value = None
        if isinstance(current, int | float) and isinstance(total, int | float) and total > 0:
            value = 100 * current / total
    message = meta.get("message")
    data = meta.get("data")
    if job and (value is not None or message is not None or isinstance(data, dict)):
        bridge.progress(
            job,
            value,
            None if message is None else str(message),
            data if isinstance(data, dict) else None,
        )


def _signal_name(signum: Any) -> str:
    try:
        return signal.Signals(int(signum)).name
    except (TypeError, ValueError):
        return str(signum)
