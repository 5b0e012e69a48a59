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
progress is discarded (not its log lines), and the queue's own stop is called once, on its
own thread. Once a job's terminal update is queued, nothing more of that job is sent (until
it is watched again).

Logs, when a queue's install is given `capture_logs=`: while a task runs, the records
logged in its context (its thread, or its asyncio task) that reach the chosen logger become
log lines of its job (stream "log"). They share the queue with the job's updates, so they
are posted in order, a job's consecutive lines in one request, and before its terminal
update, whose queueing ends the capture. The bridge's own records and those of the HTTP
client it posts with are never captured.

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
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, ClassVar

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
LINE_LIMIT = 8 * 1024  # the server's limit for one log line, in bytes of UTF-8
BATCH_LINES = 1000  # the server's limit of log lines per request
BATCH_BYTES = 512 * 1024  # of JSON per request of log lines (the server takes 1 MiB)
LOG_STREAM = "log"  # the stream of captured lines
LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"
# Never captured: the bridge's own records, and those of the HTTP client it posts with.
UNCAPTURED = ("switchboard.bridge", "httpx", "httpcore", "h11")

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

    @property
    def what(self) -> str:
        return f"an update ({self.fields.get('status', 'progress')})"

    def encode(self) -> bytes:
        return json.dumps({"job_id": self.job_id, "fields": self.fields, "key": self.key}).encode()

    def send(self, admin: Admin) -> Any:
        return admin.update_job(self.job_id, idempotency_key=self.key, **self.fields)


@dataclass
class Line:
    """One log line of a job, clipped to LINE_LIMIT."""

    job_id: str
    text: str
    stream: str = LOG_STREAM
    size: int = field(init=False)  # bytes of JSON in a request's body
    terminal: ClassVar[bool] = False
    progress_only: ClassVar[bool] = False
    what: ClassVar[str] = "a log line"

    def __post_init__(self) -> None:
        self.text = clip(self.text)
        self.size = len(json.dumps(self.text, ensure_ascii=False).encode()) + len(self.stream) + 24

    def encode(self) -> bytes:
        data = {"job_id": self.job_id, "line": self.text, "stream": self.stream}
        return json.dumps(data).encode()


Item = Update | Line  # what the queue holds


def decode(raw: bytes) -> Item:
    """An item as a forked child wrote it to the pipe (`encode`)."""
    data = json.loads(raw)
    if "line" in data:
        return Line(str(data["job_id"]), str(data["line"]), str(data["stream"]))
    return Update(str(data["job_id"]), dict(data["fields"]), str(data["key"]))


@dataclass
class Batch:
    """Consecutive lines of one job, posted in one request with one Idempotency-Key."""

    job_id: str
    lines: list[Line]
    key: str = field(default_factory=lambda: uuid.uuid4().hex)
    terminal: ClassVar[bool] = False

    @property
    def what(self) -> str:
        return f"{len(self.lines)} log line(s)"

    def send(self, admin: Admin) -> Any:
        lines = [{"text": line.text, "stream": line.stream} for line in self.lines]
        return admin.log(self.job_id, lines, idempotency_key=self.key)


def clip(text: str, limit: int = LINE_LIMIT) -> str:
    """`text` in at most `limit` bytes of UTF-8: cut at a character boundary, ending in "…".
    A lone surrogate, which UTF-8 cannot encode, becomes "?"."""
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return data.decode()
    return data[: limit - len("…".encode())].decode("utf-8", "ignore") + "…"


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
        self._queue: deque[Item] = deque()
        self._inflight: Update | Batch | None = None
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
            "sent_lines": 0,
            "failed_attempts": 0,
            "dropped": 0,
            "dropped_terminal": 0,
            "dropped_lines": 0,
            "rejected": 0,
            "forwarded": 0,
            # a job's updates once its cancel was seen, and anything of it after its end
            "discarded": 0,
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

    def submit(self, item: Item) -> None:
        if item.terminal:
            release(item.job_id)  # the job's lines are queued: none may follow its end
        with self._cond:
            if self._forward is not None:
                self._write(item)
                return
            job_id = item.job_id
            watched = self._watched.get(job_id)
            cancelled = watched is not None and watched.cancel is not None
            # After a cancel, the job's lines still go: only its non-terminal updates stop.
            if job_id in self._finished or (
                cancelled and isinstance(item, Update) and not item.terminal
            ):
                self._stats["discarded"] += 1
                log.debug(
                    "switchboard bridge: job %s is cancelled or ended; %s discarded",
                    job_id,
                    item.what,
                )
                return
            if item.terminal:
                self._watched.pop(job_id, None)
                self._finished[job_id] = None
                if len(self._finished) > FINISHED_MEMORY:
                    self._finished.popitem(last=False)
            self._queue.append(item)
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
            kept = deque(
                u for u in self._queue if u.job_id != job_id or u.terminal or isinstance(u, Line)
            )
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
        _internal.active = True
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
        """The oldest progress-only update, else the oldest log line, else the oldest
        non-terminal update, else the oldest."""
        queue = self._queue
        victim = (
            next((u for u in queue if u.progress_only), None)
            or next((u for u in queue if isinstance(u, Line)), None)
            or next((u for u in queue if not u.terminal), None)
            or queue[0]
        )
        queue.remove(victim)
        self._stats[_drop_counter(victim)] += 1
        now = time.monotonic()
        if victim.terminal or now - self._last_warning > 1.0:
            self._last_warning = now
            log.warning(
                "switchboard bridge queue full (%d): dropped %s of job %s; "
                "%d updates dropped so far (%d of them terminal), %d log lines",
                self.max_queue,
                victim.what,
                victim.job_id,
                self._stats["dropped"] + self._stats["dropped_terminal"],
                self._stats["dropped_terminal"],
                self._stats["dropped_lines"],
            )

    def _write(self, item: Item) -> None:
        assert self._forward is not None
        data = item.encode() + b"\n"
        try:
            while data:
                data = data[os.write(self._forward, data) :]
            self._stats["forwarded"] += 1
        except OSError as exc:
            self._stats[_drop_counter(item)] += 1
            log.warning("switchboard bridge: could not hand %s to the parent: %s", item.what, exc)

    # -- the sender thread -------------------------------------------------

    def _run(self) -> None:
        _internal.active = True
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
                    self._inflight = self._take()
                request = self._inflight
                admin = self._admin
                if admin is None:
                    admin = self._admin = Admin(
                        self.url, self.token, retries=2, backoff=0.1, timeout=self.timeout
                    )
            if due:
                self._poll(due)
            if request is None:
                continue
            done = self._post(admin, request)
            with self._cond:
                if done:
                    self._inflight = None
                    self._cond.notify_all()
            if done:
                delay = 0.0
            else:
                delay = min(max(delay * 2, 0.2), self.max_delay)
                time.sleep(delay)

    def _take(self) -> Update | Batch:
        """The next request: the oldest update, or the oldest line with the lines of its job
        queued after it, up to that job's next update (other jobs' items keep their place)."""
        head = self._queue.popleft()
        if isinstance(head, Update):
            return head
        batch, size, passed = Batch(head.job_id, [head]), head.size, []
        while self._queue and len(batch.lines) < BATCH_LINES:
            item = self._queue.popleft()
            if item.job_id != head.job_id:
                passed.append(item)
            elif isinstance(item, Update) or size + item.size > BATCH_BYTES:
                passed.append(item)
                break
            else:
                batch.lines.append(item)
                size += item.size
        self._queue.extendleft(reversed(passed))
        return batch

    def _post(self, admin: Admin, request: Update | Batch) -> bool:
        """True when the request is settled: applied, or refused for good."""
        try:
            answer = request.send(admin)
        except SwitchboardError as exc:
            if exc.status == 0 or exc.status == 408 or exc.status in RETRY_STATUSES:
                self._stats["failed_attempts"] += 1
                if self._stats["last_error"] != str(exc):
                    log.warning("switchboard unreachable, will retry: %s", exc)
                self._stats["last_error"] = str(exc)
                return False
            self._stats["rejected"] += 1
            level = logging.INFO if exc.code == "job_finished" else logging.WARNING
            what, job_id = request.what, request.job_id
            log.log(level, "switchboard refused %s of job %s: %s", what, job_id, exc)
            return True
        except Exception:  # a bug must not kill the sender thread
            self._stats["rejected"] += 1
            log.exception("switchboard bridge: %s of job %s failed", request.what, request.job_id)
            return True
        self._stats["last_error"] = None
        if isinstance(request, Batch):
            self._stats["sent_lines"] += len(request.lines)
        else:
            self._stats["sent"] += 1
            if not request.terminal:
                self._heard(request.job_id, answer)
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

    # -- log capture -----------------------------------------------------------

    def capture(self, job_id: str, options: CaptureLogs | None) -> None:
        """From now on, in this context (thread or asyncio task), the records that reach
        `options.logger` become lines of `job_id`, until `release()` or the job's terminal
        update. Call it after the job's first update, which creates the job."""
        release()  # a capture left by a task that did not end cleanly
        if options is not None:
            _capturing.set(_Capture(job_id, self, options, _attach(options.logger or "")))


class Relay:
    """Reads updates a child writes to a pipe and queues them in this process's bridge."""

    def __init__(self, bridge: Bridge, fd: int) -> None:
        self.bridge = bridge
        self.fd = fd
        self.thread = threading.Thread(target=self._run, name="switchboard-relay", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        _internal.active = True
        buffer = b""
        try:
            while chunk := os.read(self.fd, 65536):
                *lines, buffer = (buffer + chunk).split(b"\n")
                for line in lines:
                    try:
                        self.bridge.submit(decode(line))
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


def _drop_counter(item: Item) -> str:
    if isinstance(item, Line):
        return "dropped_lines"
    return "dropped_terminal" if item.terminal else "dropped"


# -- log capture: one shared handler per logger, a capture per task's context ----------------


@dataclass(frozen=True)
class CaptureLogs:
    """What a bridge's `capture_logs=` captures: the records of `level` and above that reach
    `logger` (None: the root logger) in a task's context, each formatted by `formatter` into
    one line. A logger's own level still decides whether a record is made at all."""

    level: int = logging.INFO
    logger: str | None = None
    formatter: logging.Formatter = field(default_factory=lambda: logging.Formatter(LOG_FORMAT))

    @classmethod
    def of(cls, option: CaptureOption) -> CaptureLogs | None:
        """`capture_logs=` as given: False or None (off), True (INFO and above), a level,
        or a CaptureLogs."""
        if option is None or option is False:
            return None
        if option is True:
            return cls()
        if isinstance(option, CaptureLogs):
            return option
        if isinstance(option, int):
            return cls(level=option)
        raise TypeError(f"capture_logs: expected a bool, a level or CaptureLogs, not {option!r}")


CaptureOption = bool | int | CaptureLogs | None


class _Handler(logging.Handler):
    """On one logger, while captures use it: a record made in the context of a capture on
    this logger becomes a line of that capture's job. Never blocks: `submit` only queues."""

    def __init__(self, logger: str) -> None:
        super().__init__()
        self.key = logger  # in _handlers
        self.logger = logging.getLogger(logger)
        self.users = 0  # the captures on it; it leaves the logger with the last one

    def emit(self, record: logging.LogRecord) -> None:
        capture = _capturing.get()
        if (
            capture is None
            or capture.handler is not self
            or record.levelno < capture.options.level
            or getattr(_internal, "active", False)
            or any(record.name == n or record.name.startswith(n + ".") for n in UNCAPTURED)
        ):
            return
        _internal.active = True  # what submit logs (a full queue) is not captured
        try:
            text = capture.options.formatter.format(record)
            capture.bridge.submit(Line(capture.job_id, text))
        except Exception:
            self.handleError(record)
        finally:
            _internal.active = False


@dataclass
class _Capture:
    job_id: str
    bridge: Bridge
    options: CaptureLogs
    handler: _Handler


# The capture of the task running in this context: a thread's, or an asyncio task's own.
_capturing: ContextVar[_Capture | None] = ContextVar("switchboard_capture", default=None)
_internal = threading.local()  # .active: this thread does the bridge's own work now
_handlers: dict[str, _Handler] = {}  # by logger name, "" for the root logger
_handlers_lock = threading.Lock()


def _attach(name: str) -> _Handler:
    with _handlers_lock:
        handler = _handlers.get(name)
        if handler is None:
            handler = _handlers[name] = _Handler(name)
            handler.logger.addHandler(handler)
        handler.users += 1
        return handler


def _detach(handler: _Handler) -> None:
    with _handlers_lock:
        handler.users -= 1
        if handler.users == 0:
            handler.logger.removeHandler(handler)
            del _handlers[handler.key]


def release(job_id: str | None = None) -> None:
    """End the capture of this context (if it is of `job_id`, when given)."""
    capture = _capturing.get()
    if capture is not None and job_id in (None, capture.job_id):
        _capturing.set(None)
        _detach(capture.handler)


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


def capture(job_id: str, options: CaptureLogs | None) -> None:
    """From now on, in this thread or asyncio task, the records that reach the logger of
    `options` become log lines of `job_id` (None: capture nothing), until `release()` or
    the job's terminal update."""
    _bridge.capture(job_id, options)


def submit(job_id: str, **fields: Any) -> None:
    """Queue one update of `job_id` (status, progress, message, data) and return at once."""
    _bridge.submit(Update(job_id, fields))


def flush(timeout: float | None = None) -> bool:
    """Wait (at most `timeout` seconds, default $SWITCHBOARD_EXIT_TIMEOUT or 5) until every
    queued update is delivered."""
    return _bridge.flush(timeout)


def stats() -> dict[str, Any]:
    """{"queued", "sent", "sent_lines", "failed_attempts", "dropped", "dropped_terminal",
    "dropped_lines", "rejected", "discarded" (after a cancel or the end), "polls", "cancels",
    ...}"""
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
