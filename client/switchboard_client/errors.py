"""The client's errors: the server's code and message (or a transport failure), and a
worker's signal to stop."""

from __future__ import annotations

from typing import Any


class SwitchboardError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status  # HTTP status; 0 when the server could not be reached
        self.code = code
        self.message = message


class Cancelled(Exception):
    """Someone asked to cancel the job a worker reports on (`job["cancel_requested"]`
    says who and when): stop, then report `status="cancelled"`."""

    def __init__(self, job: dict[str, Any] | str) -> None:
        if isinstance(job, str):  # rebuilt from its message (Celery's JSON results do that)
            super().__init__(job)
            self.job: dict[str, Any] = {}
            return
        request = job.get("cancel_requested") or {}
        super().__init__(f"job {job.get('id')!r}: cancel requested by {request.get('by')}")
        self.job = job

    def __reduce__(self) -> tuple[type[Cancelled], tuple[dict[str, Any]]]:
        return Cancelled, (self.job,)  # pickles (task queues store results that way)
