"""What the task-queue bridges share: one bounded queue and one sender thread per process.

A task never waits for Switchboard: `submit` only appends to an in-memory queue (or, in
a forked RQ work horse, writes a line to a pipe its parent relays). One daemon thread per
process posts the queue in order through the blocking `Admin` client. Each update gets
one Idempotency-Key that every attempt reuses, so a retry across a Switchboard restart
never applies it twice. While Switchboard is unreachable the sender retries the oldest
update with backoff and keeps the rest queued; when the queue is full the oldest
progress-only update is dropped first (a terminal one only if nothing else is left),
with a warning and a count in `stats()`.

Cancel: the bridge `watch`es the jobs this process runs. It learns that one was asked to
stop from the answer to any update it posts, and by asking Switchboard (one GET per job)
about a watched job it has heard nothing of for `poll_interval` seconds (1 s). Then
`check(job)` raises `Cancelled` (each queue's `report()` calls it), the job's queued
progress is discarded, and the queue's own stop is called once, on its own thread. Once a
job's terminal update is queued, nothing more of that job is sent (until it is watched
again).

    from switchboard_client import bridge
    bridge.configure("http://127.0.0.1:8001", token="change-me")
    bridge.submit("build-42", status="running", progress=10)
    bridge.stats()   # {"queued": 1, "sent": 0, "dropped": 0, ...}

The celery, rq, arq and dramatiq modules beside this one call it for you.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# httpx imports httpcore when the first client is made, which here is on the sender
# thread. A worker that forks (Celery's pool replacing a terminated process, RQ's horse)
# while that import runs leaves the child a half-initialized module: import it now.
import httpcore  # noqa: F401

from .admin import DEFAULT_URL, RETRY_STATUSES, Admin
from .errors import Cancelled, SwitchboardError

log = logging.getLogger("switchboard.bridge")

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
MAX_QUEUE = 1000  # updates kept per process while Switchboard is slow or down
SUMMARY_LIMIT = 4096  # bytes of JSON: a larger task result is left out of `data`
DATA_LIMIT = 64 * 1024  # the server's limit for `data`
MESSAGE_LIMIT = 2000  # the server's limit for `message`
EXIT_TIMEOUT = 5.0  # seconds spent delivering what is left at exit ($SWITCHBOARD_EXIT_TIMEOUT)
POLL_INTERVAL = 1.0  # seconds: a quiet running job is asked about ($SWITCHBOARD_CANCEL_POLL)
POLL_TIMEOUT = 2.0  # seconds for one such GET (never retried: the next round asks again)
FINISHED_MEMORY = 1000  # jobs whose terminal update was queued, remembered to refuse stragglers

Stop = Callable[[dict[str, Any]], None]  # called once with the job when a cancel is seen


@dataclass
class Update:
    job_id: str
    fields: dict[str, Any]
    key: str = field(default_factory=lambda: uuid.uuid4().hex)  # the Idempotency-Key

    @property
    def terminal(self) -> bool:
        return self.fields.get("status") in TERMINAL

    @property
    def progress_only(self) -> bool:
        return "status" not in self.fields

    def line(self) -> bytes:
        return json.dumps({"job_id": self.job_id, "fields": self.fields, "key": self.key}).encode()

    @classmethod
    def parse(cls, line: bytes) -> Update:
        raw = json.loads(line)
        return cls(str(raw["job_id"]), dict(raw["fields"]), str(raw["key"]))


def _env_seconds(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        log.warning("switchboard bridge: $%s is not a number of seconds; using %s", name, default)
        return default


@dataclass
class Watched:
    """A job this process runs: when Switchboard last told us about it, and its cancel."""

    stop: Stop | None
    heard: float  # time.monotonic() of the last answer about the job
    cancel: dict[str, Any] | None = None  # the job, once it shows cancel_requested


class Bridge:
    """A bounded FIFO of updates and the thread that posts them; one per process."""

    def __init__(self) -> None:
        self.url = os.environ.get("SWITCHBOARD_URL", DEFAULT_URL)
        self.token: str | None = os.environ.get("SWITCHBOARD_ADMIN_TOKEN")
        self.max_queue = MAX_QUEUE
        self.timeout = 5.0  # per HTTP attempt
        self.max_delay = 2.0  # between attempts while Switchboard is unreachable
        self.poll_interval = _env_seconds("SWITCHBOARD_CANCEL_POLL", POLL_INTERVAL)
        self._reset()

    def _reset(self) -> None:
        """A fresh, empty state: at start, and in a forked child (the parent keeps its queue)."""
        self._cond = threading.Condition()
        self._queue: deque[Update] = deque()
        self._inflight: Update | None = None
        self._thread: threading.Thread | None = None
        self._admin: Admin | None = None
        self._poller: Admin | None = None  # for the GETs: no retries, a short timeout
        self._forward: int | None = None  # a pipe to the parent process, instead of HTTP
        self._closing = False
        self._last_warning = 0.0
        self._watched: dict[str, Watched] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._quiet_until = 0.0  # no polls before this (Switchboard did not answer one)
        self._stats: dict[str, Any] = {
            "sent": 0,
            "failed_attempts": 0,
            "dropped": 0,
            "dropped_terminal": 0,
            "rejected": 0,
            "forwarded": 0,
            "discarded": 0,  # updates of a job after its cancel was seen or it ended
            "polls": 0,
            "cancels": 0,
            "last_error": None,
        }

    def configure(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        max_queue: int | None = None,
        timeout: float | None = None,
        max_delay: float | None = None,
        poll_interval: float | None = None,
    ) -> None:
        with self._cond:
            if url is not None:
                self.url = url
            if token is not None:
                self.token = token
            if max_queue is not None:
                self.max_queue = max(1, max_queue)
            if timeout is not None:
                self.timeout = timeout
            if max_delay is not None:
                self.max_delay = max_delay
            if poll_interval is not None:
                self.poll_interval = poll_interval
            old = [a for a in (self._admin, self._poller) if a is not None]
            self._admin = self._poller = None  # the sender makes new ones
            self._cond.notify_all()
        if self._thread is None:
            for admin in old:
                admin.close()

    # -- the task's side: never blocks on Switchboard ----------------------

    def submit(self, update: Update) -> None:
        with self._cond:
            if self._forward is not None:
                self._write(update)
                return
            job_id = update.job_id
            watched = self._watched.get(job_id)
            if job_id in self._finished or (
                watched is not None and watched.cancel is not None and not update.terminal
            ):
                self._stats["discarded"] += 1
                log.debug(
                    "switchboard bridge: job %s is cancelled or ended; update discarded", job_id
                )
                return
            if update.terminal:
                self._watched.pop(job_id, None)
                self._finished[job_id] = None
                if len(self._finished) > FINISHED_MEMORY:
                    self._finished.popitem(last=False)
            self._queue.append(update)
            if len(self._queue) > self.max_queue:
                self._drop_one()
            self._start()
            self._cond.notify_all()

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="switchboard-bridge", daemon=True
            )
            self._thread.start()

    # -- cancel: the jobs this process runs --------------------------------

    def watch(self, job_id: str, stop: Stop | None = None) -> None:
        """`job_id` runs in this process: learn of a cancel of it, then call `stop(job)` once."""
        with self._cond:
            if self._forward is not None:
                return  # a forked child: the parent process watches
            self._finished.pop(job_id, None)  # it runs (again): its updates count
            self._watched[job_id] = Watched(stop, time.monotonic())
            self._start()
            self._cond.notify_all()

    def unwatch(self, job_id: str) -> None:
        with self._cond:
            self._watched.pop(job_id, None)

    def cancel_requested(self, job_id: str) -> dict[str, Any] | None:
        """The job as Switchboard showed it with `cancel_requested`, if this process saw that."""
        with self._cond:
            watched = self._watched.get(job_id)
            return None if watched is None else watched.cancel

    def check(self, job_id: str) -> None:
        """Raise Cancelled if a cancel of `job_id` was seen."""
        job = self.cancel_requested(job_id)
        if job is not None:
            raise Cancelled(job)

    def _heard(self, job_id: str, job: Any) -> None:
        """Switchboard's answer about a job: a cancel request, if it shows one."""
        stop: Stop | None = None
        with self._cond:
            watched = self._watched.get(job_id)
            if watched is None or not isinstance(job, dict):
                return
            watched.heard = time.monotonic()
            if watched.cancel is not None or not job.get("cancel_requested"):
                return
            watched.cancel = job
            self._stats["cancels"] += 1
            kept = deque(u for u in self._queue if u.job_id != job_id or u.terminal)
            self._stats["discarded"] += len(self._queue) - len(kept)
            self._queue = kept
            stop = watched.stop
        request = job["cancel_requested"]
        by = request.get("by") if isinstance(request, dict) else None
        log.info("switchboard: job %s: cancel requested by %s", job_id, by)
        if stop is not None:
            threading.Thread(
                target=self._stop, args=(stop, job_id, job), name="switchboard-stop", daemon=True
            ).start()

    @staticmethod
    def _stop(stop: Stop, job_id: str, job: dict[str, Any]) -> None:
        try:
            stop(job)
        except Exception:
            log.exception("switchboard: could not stop the task of job %s", job_id)

    def _due(self) -> list[str]:
        """Watched jobs not heard of for poll_interval seconds; each is then asked once."""
        now = time.monotonic()
        if self.poll_interval <= 0 or now < self._quiet_until:
            return []
        due = [
            job_id
            for job_id, w in self._watched.items()
            if w.cancel is None and now - w.heard >= self.poll_interval
        ]
        for job_id in due:
            self._watched[job_id].heard = now
        return due

    def _next_poll(self) -> float | None:
        """Seconds until a watched job is due, or None when none will be."""
        waiting = [w.heard for w in self._watched.values() if w.cancel is None]
        if self.poll_interval <= 0 or not waiting:
            return None
        at = max(min(waiting) + self.poll_interval, self._quiet_until)
        return max(0.01, at - time.monotonic())

    def _poll(self, job_ids: list[str]) -> None:
        with self._cond:
            poller = self._poller
            if poller is None:
                timeout = min(self.timeout, POLL_TIMEOUT)
                poller = self._poller = Admin(self.url, self.token, retries=0, timeout=timeout)
        for job_id in job_ids:
            try:
                job = poller.get_job(job_id)
            except SwitchboardError as exc:
                if exc.status != 404:  # 404: its first update is not in yet
                    with self._cond:
                        self._quiet_until = time.monotonic() + self.max_delay
                    log.debug("switchboard bridge: could not ask about job %s: %s", job_id, exc)
                    return
                continue
            except Exception:
                log.exception("switchboard bridge: asking about job %s failed", job_id)
                continue
            self._stats["polls"] += 1
            self._heard(job_id, job)

    def _drop_one(self) -> None:
        """The oldest progress-only update, else the oldest non-terminal, else the oldest."""
        queue = self._queue
        victim = next((u for u in queue if u.progress_only), None)
        victim = victim or next((u for u in queue if not u.terminal), None) or queue[0]
        queue.remove(victim)
        counter = "dropped_terminal" if victim.terminal else "dropped"
        self._stats[counter] += 1
        now = time.monotonic()
        if victim.terminal or now - self._last_warning > 1.0:
            self._last_warning = now
            log.warning(
                "switchboard bridge queue full (%d): dropped an update of job %s (%s); "
                "%d dropped so far, %d of them terminal",
                self.max_queue,
                victim.job_id,
                victim.fields.get("status", "progress"),
                self._stats["dropped"] + self._stats["dropped_terminal"],
                self._stats["dropped_terminal"],
            )

    def _write(self, update: Update) -> None:
        assert self._forward is not None
        data = update.line() + b"\n"
        try:
            while data:
                data = data[os.write(self._forward, data) :]
            self._stats["forwarded"] += 1
        except OSError as exc:
            self._stats["dropped_terminal" if update.terminal else "dropped"] += 1
            log.warning("switchboard bridge: could not hand an update to the parent: %s", exc)

    # -- the sender thread -------------------------------------------------

    def _run(self) -> None:
        delay = 0.0
        while True:
            with self._cond:
                due: list[str] = []
                while self._inflight is None and not self._queue:
                    if self._closing:
                        self._thread = None
                        return
                    due = self._due()
                    if due:
                        break
                    self._cond.wait(self._next_poll())
                if not due and delay == 0.0:  # polls wait while Switchboard is unreachable
                    due = self._due()
                if self._inflight is None and self._queue:
                    self._inflight = self._queue.popleft()
                update = self._inflight
                admin = self._admin
                if admin is None:
                    admin = self._admin = Admin(
                        self.url, self.token, retries=2, backoff=0.1, timeout=self.timeout
                    )
            if due:
                self._poll(due)
            if update is None:
                continue
            done = self._post(admin, update)
            with self._cond:
                if done:
                    self._inflight = None
                    self._cond.notify_all()
            if done:
                delay = 0.0
            else:
                delay = min(max(delay * 2, 0.2), self.max_delay)
                time.sleep(delay)

    def _post(self, admin: Admin, update: Update) -> bool:
        """True when the update is settled: applied, or refused for good."""
        try:
            job = admin.update_job(update.job_id, idempotency_key=update.key, **update.fields)
        except SwitchboardError as exc:
            if exc.status == 0 or exc.status == 408 or exc.status in RETRY_STATUSES:
                self._stats["failed_attempts"] += 1
                if self._stats["last_error"] != str(exc):
                    log.warning("switchboard unreachable, will retry: %s", exc)
                self._stats["last_error"] = str(exc)
                return False
            self._stats["rejected"] += 1
            level = logging.INFO if exc.code == "job_finished" else logging.WARNING
            log.log(level, "switchboard refused an update of job %s: %s", update.job_id, exc)
            return True
        except Exception:  # a bug must not kill the sender thread
            self._stats["rejected"] += 1
            log.exception("switchboard bridge: update of job %s failed", update.job_id)
            return True
        self._stats["sent"] += 1
        self._stats["last_error"] = None
        if not update.terminal:
            self._heard(update.job_id, job)
        return True

    # -- shutdown and inspection -------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued has been settled; False if `timeout` ran out first."""
        deadline = time.monotonic() + (exit_timeout() if timeout is None else timeout)
        with self._cond:
            while self._queue or self._inflight is not None:
                left = deadline - time.monotonic()
                if left <= 0 or self._thread is None:
                    return False
                self._cond.wait(min(left, 0.1))
        return True

    def close(self, timeout: float | None = None) -> bool:
        """Deliver what is queued (at most `timeout` seconds), then stop the sender thread."""
        delivered = self.flush(timeout)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        return delivered

    def stats(self) -> dict[str, Any]:
        with self._cond:
            queued = len(self._queue) + (self._inflight is not None)
            return {"queued": queued, **self._stats}

    # -- a forked child that hands its updates to the parent ----------------

    def forward_to(self, fd: int | None) -> None:
        """From now on write updates to `fd` (a pipe the parent `relay`s) instead of posting."""
        with self._cond:
            self._forward = fd


class Relay:
    """Reads updates a child writes to a pipe and queues them in this process's bridge."""

    def __init__(self, bridge: Bridge, fd: int) -> None:
        self.bridge = bridge
        self.fd = fd
        self.thread = threading.Thread(target=self._run, name="switchboard-relay", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        buffer = b""
        try:
            while chunk := os.read(self.fd, 65536):
                *lines, buffer = (buffer + chunk).split(b"\n")
                for line in lines:
                    try:
                        self.bridge.submit(Update.parse(line))
                    except (ValueError, KeyError, TypeError):
                        log.warning("switchboard bridge: unreadable line from a child: %r", line)
        except OSError as exc:
            log.warning("switchboard bridge: relay stopped: %s", exc)
        finally:
            os.close(self.fd)

    def join(self, timeout: float = 5.0) -> bool:
        """Wait for the child's end of the pipe to close (every line is queued by then)."""
        self.thread.join(timeout)
        return not self.thread.is_alive()


# -- the process-wide bridge ---------------------------------------------------

_bridge = Bridge()
os.register_at_fork(after_in_child=_bridge._reset)


def exit_timeout() -> float:
    return float(os.environ.get("SWITCHBOARD_EXIT_TIMEOUT", EXIT_TIMEOUT))


atexit.register(_bridge.flush)


def get() -> Bridge:
    return _bridge


def configure(
    url: str | None = None,
    token: str | None = None,
    *,
    max_queue: int | None = None,
    timeout: float | None = None,
    max_delay: float | None = None,
    poll_interval: float | None = None,
) -> None:
    """Where to post; by default $SWITCHBOARD_URL (or http://127.0.0.1:8001) with the token
    in $SWITCHBOARD_ADMIN_TOKEN. `poll_interval`: seconds of silence after which a running
    job is asked about ($SWITCHBOARD_CANCEL_POLL, 1; 0: learn of cancels from answers only)."""
    _bridge.configure(
        url,
        token,
        max_queue=max_queue,
        timeout=timeout,
        max_delay=max_delay,
        poll_interval=poll_interval,
    )


def submit(job_id: str, **fields: Any) -> None:
    """Queue one update of `job_id` (status, progress, message, data) and return at once."""
    _bridge.submit(Update(job_id, fields))


def flush(timeout: float | None = None) -> bool:
    """Wait (at most `timeout` seconds, default $SWITCHBOARD_EXIT_TIMEOUT or 5) until every
    queued update is delivered."""
    return _bridge.flush(timeout)


def stats() -> dict[str, Any]:
    """{"queued", "sent", "failed_attempts", "dropped", "dropped_terminal", "rejected",
    "discarded" (after a cancel or the end), "polls", "cancels", ...}"""
    return _bridge.stats()


def watch(job_id: str, stop: Stop | None = None) -> None:
    """A task of this process runs `job_id`: watch it for a cancel, then call `stop(job)`
    (once, on its own thread) to stop it the queue's way."""
    _bridge.watch(job_id, stop)


def unwatch(job_id: str) -> None:
    _bridge.unwatch(job_id)


def cancel_requested(job_id: str) -> dict[str, Any] | None:
    return _bridge.cancel_requested(job_id)


def check(job_id: str) -> None:
    """Raise `Cancelled` once this process has seen that `job_id` was asked to stop."""
    _bridge.check(job_id)


def forward_to(fd: int | None) -> None:
    _bridge.forward_to(fd)


def relay(fd: int) -> Relay:
    return Relay(_bridge, fd)


# -- the mapping every bridge uses ---------------------------------------------------


def started(job_id: str, attempt: int | None = None) -> None:
    message = f"started (attempt {attempt})" if attempt and attempt > 1 else "started"
    submit(job_id, status="running", message=message)


def progress(
    job_id: str,
    value: float | None,
    message: str | None = None,
    data: dict[str, Any] | None = None,
) -> None:
    fields: dict[str, Any] = {}
    if value is not None:
        fields["progress"] = min(100.0, max(0.0, float(value)))
    if message is not None:
        fields["message"] = _text(message)
    if data is not None:
        if isinstance(data, dict) and _json_size(data) <= DATA_LIMIT:
            fields["data"] = data
        else:
            log.warning("switchboard: data for job %s is not small plain JSON; left out", job_id)
    if fields:
        submit(job_id, **fields)


def succeeded(job_id: str, result: Any = None) -> None:
    fields: dict[str, Any] = {"status": "succeeded", "progress": 100}
    summary = summarize(result)
    if summary is not None:
        fields["data"] = {"result": summary}
    submit(job_id, **fields)


def failed(job_id: str, error: BaseException | str) -> None:
    if isinstance(error, BaseException):
        kind, text = qualified_name(type(error)), str(error)
        message = f"{type(error).__name__}: {text}" if text else type(error).__name__
    else:
        kind, text = "error", error
        message = error
    data = {"error": {"type": kind, "message": _text(text)}}
    submit(job_id, status="failed", message=_text(message), data=data)


def cancelled(job_id: str, reason: str = "cancelled") -> None:
    submit(job_id, status="cancelled", message=_text(reason))


def retrying(job_id: str, reason: str) -> None:
    submit(job_id, message=_text(f"retrying: {reason}" if reason else "retrying"))


def summarize(result: Any, limit: int = SUMMARY_LIMIT) -> Any:
    """`result` as plain JSON when it encodes to at most `limit` bytes, else None."""
    if result is None:
        return None
    try:
        encoded = json.dumps(result, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError):
        return None
    return json.loads(encoded) if len(encoded.encode()) <= limit else None


def qualified_name(cls: type) -> str:
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def _text(text: str) -> str:
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 1] + "…"


def _json_size(value: Any) -> int:
    try:
        return len(json.dumps(value, allow_nan=False, separators=(",", ":")).encode())
    except (TypeError, ValueError, RecursionError):
        return DATA_LIMIT + 1
