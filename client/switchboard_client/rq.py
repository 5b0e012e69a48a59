"""RQ -> Switchboard: a worker class that reports every job, and `report()` inside a job.

    # with $SWITCHBOARD_URL and $SWITCHBOARD_ADMIN_TOKEN set:
    rq worker -w switchboard_client.rq.SwitchboardWorker

or call `install(url=…, token=…, job_id=…)` in a module the worker imports first (the
`rq worker -c settings` module). Inside a job:

    from switchboard_client.rq import report
    report(40, message="resizing")

start -> running, success -> succeeded (the result in `data` when it is small JSON), an
exception -> failed (or a "retrying" message while `Retry(max=…)` has tries left),
`send_stop_job_command` -> cancelled. The forking `SwitchboardWorker` hands the work
horse's updates to the worker process through a pipe, so nothing is lost when the horse
exits; `SwitchboardSimpleWorker` runs jobs in the worker process itself.
`install(capture_logs=True)` also turns what a job logs into log lines of it (see
`bridge.CaptureLogs`), while its function runs.

A Switchboard cancel of a running job: the worker process sees it (in the answer to an
update, or by asking about a job quiet for a second) and calls `send_stop_job_command`;
RQ kills the work horse and the job ends `cancelled` ("stopped", RQ's STOPPED, never
retried). With `SwitchboardSimpleWorker` there is no horse to kill: the job stops at its
next `report()`, which raises `Cancelled` (also "stopped"). In the forking worker the horse
is killed at once, so a job gets no chance to clean up.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from rq import get_current_job
from rq.command import send_stop_job_command
from rq.job import Job
from rq.worker import BaseWorker, SimpleWorker, Worker

from . import bridge
from .errors import Cancelled

log = logging.getLogger("switchboard.bridge")

JobId = Callable[[Job], "str | None"]


def default_job_id(job: Job) -> str | None:
    return job.id


_job_id: JobId = default_job_id
_capture: bridge.CaptureLogs | None = None


def install(
    url: str | None = None,
    token: str | None = None,
    *,
    job_id: JobId | None = None,
    max_queue: int | None = None,
    capture_logs: bridge.CaptureOption = False,
) -> None:
    """Where the RQ worker classes below report, and which Switchboard job a job is.
    `capture_logs`: True (INFO and above), a level, or a `bridge.CaptureLogs`."""
    global _job_id, _capture
    bridge.configure(url, token, max_queue=max_queue)
    _job_id = job_id or default_job_id
    _capture = bridge.CaptureLogs.of(capture_logs)


def report(
    progress: float | None, message: str | None = None, data: dict[str, Any] | None = None
) -> None:
    """From inside a job: its progress (0-100), a message and/or data. Never blocks.
    Raises `Cancelled` once the bridge has seen a cancel of the job (SimpleWorker)."""
    job = get_current_job()
    if job is None:
        log.debug("switchboard: report() outside an RQ job; ignored")
        return
    if target := _job_for(job):
        bridge.check(target)
        bridge.progress(target, progress, message, data)


def _job_for(job: Job) -> str | None:
    try:
        return _job_id(job)
    except Exception:
        log.exception("switchboard: job_id(%r) failed; not reporting", job)
        return None


class _Reporting(BaseWorker):
    """The hooks, for a worker class that runs the job itself or in a forked horse."""

    _switchboard_error: BaseException | None = None

    def _switchboard_drain(self) -> None:
        """In the worker process: take in what the horse wrote before reporting on it."""

    def execute_job(self, job: Job, queue: Any) -> None:
        # In the worker process, for a forked horse too: watch the job for a cancel.
        target = _job_for(job)
        if target:
            bridge.watch(target, self._switchboard_stopper(job.id))
        try:
            super().execute_job(job, queue)
        finally:
            if target:
                bridge.unwatch(target)

    def _switchboard_stopper(self, job_id: str) -> bridge.Stop:
        def stop(_: dict[str, Any]) -> None:
            send_stop_job_command(self.connection, job_id, serializer=self.serializer)

        return stop

    def prepare_job_execution(self, job: Job, remove_from_intermediate_queue: bool = False) -> None:
        super().prepare_job_execution(job, remove_from_intermediate_queue)
        self._switchboard_error = None
        if target := _job_for(job):
            bridge.started(target)
            bridge.capture(target, _capture)

    def handle_execution_ended(self, job: Job, queue: Any, heartbeat_ttl: int) -> None:
        bridge.release()  # the job's function is done: what RQ logs next is not the job's
        super().handle_execution_ended(job, queue, heartbeat_ttl)

    def handle_exception(self, job: Job, *exc_info: Any) -> None:
        self._switchboard_error = exc_info[1] if len(exc_info) > 1 else None
        if isinstance(self._switchboard_error, Cancelled):
            self._stopped_job_id = job.id  # as send_stop_job_command does: STOPPED, no retry
        super().handle_exception(job, *exc_info)

    def handle_job_success(
        self, job: Job, queue: Any, started_job_registry: Any, execution: Any
    ) -> None:
        super().handle_job_success(job, queue, started_job_registry, execution)
        if target := _job_for(job):
            bridge.succeeded(target, getattr(job, "_result", None))

    def handle_job_failure(
        self,
        job: Job,
        queue: Any,
        started_job_registry: Any = None,
        exc_string: str = "",
        execution: Any = None,
    ) -> None:
        stopped = self._stopped_job_id == job.id
        retry = job.should_retry and not stopped
        if not self.is_horse:
            self._switchboard_drain()
        super().handle_job_failure(job, queue, started_job_registry, exc_string, execution)
        target = _job_for(job)
        if not target:
            return
        error, self._switchboard_error = self._switchboard_error, None
        if stopped:
            bridge.cancelled(target, "stopped")
        elif retry:
            bridge.retrying(target, _describe(error, exc_string))
        else:
            bridge.failed(target, error if error is not None else _last_line(exc_string))

    def handle_job_retry(
        self, job: Job, queue: Any, retry: Any, started_job_registry: Any, execution: Any
    ) -> None:
        exhausted = bool(job.number_of_retries and job.number_of_retries >= retry.max)
        super().handle_job_retry(job, queue, retry, started_job_registry, execution)
        if target := _job_for(job):
            if exhausted:
                bridge.failed(target, f"max {retry.max} retries exceeded")
            else:
                bridge.retrying(target, "the job returned Retry")


class SwitchboardWorker(_Reporting, Worker):
    """RQ's default forking worker, reporting to Switchboard."""

    _switchboard_pipe: tuple[int, int] | None = None
    _switchboard_relay: bridge.Relay | None = None

    def fork_work_horse(self, job: Job, queue: Any) -> None:
        read_fd, write_fd = os.pipe()
        self._switchboard_pipe = (read_fd, write_fd)
        try:
            super().fork_work_horse(job, queue)  # the horse never returns from this
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
            self._switchboard_pipe = None
        self._switchboard_relay = bridge.relay(read_fd)

    def main_work_horse(self, job: Job, queue: Any) -> None:
        if self._switchboard_pipe is not None:  # in the horse: write to the worker process
            read_fd, write_fd = self._switchboard_pipe
            os.close(read_fd)
            bridge.forward_to(write_fd)
        super().main_work_horse(job, queue)

    def monitor_work_horse(self, job: Job, queue: Any, execution: Any) -> None:
        try:
            super().monitor_work_horse(job, queue, execution)
        finally:
            self._switchboard_drain()

    def _switchboard_drain(self) -> None:
        relay, self._switchboard_relay = self._switchboard_relay, None
        if relay is not None and not relay.join(timeout=5.0):
            log.warning("switchboard: the work horse's pipe is still open; not waiting longer")


class SwitchboardSimpleWorker(_Reporting, SimpleWorker):
    """RQ's SimpleWorker (jobs in the worker process, no fork), reporting to Switchboard."""


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "failed"


def _describe(error: BaseException | None, exc_string: str) -> str:
    if error is None:
        return _last_line(exc_string)
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
