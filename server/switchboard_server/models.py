"""The shapes that cross the wire, their validation, and the one rule that advances a job."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, NotRequired, Self, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from typing_extensions import TypedDict  # pydantic needs this one on Python < 3.12

from .errors import ApiError, from_validation, invalid_payload

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"
MAX_DATA_BYTES = 64 * 1024
MAX_DATA_DEPTH = 32  # nested objects and arrays in `data`
MAX_LOG_TEXT = 8 * 1024  # bytes of UTF-8 in one log line
MAX_LOG_LINES = 1000  # log lines in one request (whose body is at most 1 MiB)

JobId = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=NAME_PATTERN)]
RoomName = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=NAME_PATTERN)]
Status = Literal["queued", "running", "succeeded", "failed", "cancelled"]
Level = Literal["info", "warning", "critical"]
Progress = Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)]
Text = Annotated[str, StringConstraints(min_length=1, max_length=2000)]
Glob = Annotated[str, StringConstraints(min_length=1, max_length=256)]
LogStream = Annotated[str, StringConstraints(min_length=1, max_length=32, pattern=NAME_PATTERN)]
Tag = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=NAME_PATTERN)]
MAX_TAGS = 16  # per job

STATUSES: tuple[str, ...] = get_args(Status)  # in the order a job goes through them
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})


class CancelRequest(TypedDict):
    by: str  # the token's sub, or "admin"
    at: str


TAGS_REMOVED = (
    "only on an event whose update took tags away, never in the job's current state: those"
    " tags, whose followers get this event too (and then no more of the job's)"
)


class Job(TypedDict):
    """A job's full state; every event is one of these, with its `seq` (and `tags_removed`)."""

    id: str
    status: str
    progress: float | None
    message: str | None
    data: dict[str, Any]
    seq: int
    created_at: str
    updated_at: str
    # Someone asked the worker to stop; the worker's final `cancelled` update ends the job.
    cancel_requested: NotRequired[CancelRequest | None]
    tags: NotRequired[list[str]]  # e.g. user:42, batch:7; subscribe {tag} follows them
    parent: NotRequired[str | None]  # the job this one is a child of
    tags_removed: NotRequired[Annotated[list[str], Field(description=TAGS_REMOVED)]]


class LogEntry(TypedDict):
    """A log line as written, before the store numbers it."""

    stream: str
    text: str
    ts: str


class LogLine(LogEntry):
    """A kept log line: `offset` numbers a job's lines from 1 with no gap."""

    offset: int


class LogBatch(TypedDict):
    """The body of a `job:log` event: lines of one job, in offset order."""

    job_id: str
    lines: list[LogLine]


def text_size(text: str) -> int:
    """What a line's text counts against the limits: its UTF-8 bytes."""
    return len(text.encode())


class Member(TypedDict):
    id: str
    name: str | None


class Announcement(TypedDict):
    id: str
    level: str
    text: str
    room: str | None
    ts: str


class ChatMessage(TypedDict):
    id: str
    room: str
    text: str
    sender: Member
    ts: str


def now_iso() -> str:
    """RFC 3339 UTC with milliseconds; sorts as text."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_id() -> str:
    return uuid.uuid4().hex


class Payload(BaseModel):
    """Strict: no coercion of "5" into 5, no unknown fields."""

    model_config = ConfigDict(strict=True, extra="forbid")

    @classmethod
    def parse(cls, raw: object) -> Self:
        if not isinstance(raw, dict):
            raise invalid_payload(f"payload must be a JSON object, not {json_type(raw)}")
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise from_validation(exc) from None


class JobChange(Payload):
    status: Status | None = None
    progress: Progress | None = None
    message: Annotated[str, StringConstraints(max_length=2000)] | None = None
    data: dict[str, Any] | None = None
    tags: Annotated[list[Tag], Field(max_length=MAX_TAGS)] | None = None  # replaces the tags
    parent: JobId | None = None

    @field_validator("tags")
    @classmethod
    def _unique(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else list(dict.fromkeys(value))

    @field_validator("status", "data", "tags")
    @classmethod
    def _not_null(cls, value: object) -> object:
        if value is None:
            raise ValueError("must not be null")
        return value

    @field_validator("data")
    @classmethod
    def _data_size(cls, value: dict[str, Any]) -> dict[str, Any]:
        if _too_deep(value, MAX_DATA_DEPTH):
            raise ValueError(f"must nest at most {MAX_DATA_DEPTH} levels deep")
        try:
            encoded = json.dumps(value, allow_nan=False, separators=(",", ":"))
        except (TypeError, ValueError):
            raise ValueError("must be plain JSON") from None
        if len(encoded.encode()) > MAX_DATA_BYTES:
            raise ValueError(f"must encode to at most {MAX_DATA_BYTES} bytes")
        return value


def _too_deep(value: object, limit: int) -> bool:
    """Whether objects and arrays nest deeper than `limit` (iterative: no recursion)."""
    level: list[object] = [value]
    for _ in range(limit):
        level = [
            child
            for item in level
            if isinstance(item, dict | list)
            for child in (item.values() if isinstance(item, dict) else item)
        ]
        if not level:
            return False
    return any(isinstance(item, dict | list) for item in level)


class JobCreate(JobChange):
    id: JobId | None = None


class JobUpdate(JobChange):
    @model_validator(mode="after")
    def _at_least_one(self) -> Self:
        if not self.model_fields_set:
            raise ValueError("give at least one of status, progress, message, data, tags, parent")
        return self


def apply_change(job_id: str, current: Job | None, change: JobChange, *, create: bool) -> Job:
    """The job's state after `change`; raises the 409s. `create` refuses an existing job."""
    if current is not None and create:
        raise ApiError(409, "job_exists", f"job {job_id!r} already exists")
    if current is not None and current["status"] in TERMINAL:
        raise ApiError(409, "job_finished", f"job {job_id!r} is {current['status']}")
    given = change.model_fields_set
    if change.parent is not None and change.parent == job_id:
        raise invalid_payload("parent: a job cannot be its own parent")
    now = now_iso()
    base: Job = current or {
        "id": job_id,
        "status": "queued",
        "progress": None,
        "message": None,
        "data": {},
        "seq": 0,
        "created_at": now,
        "updated_at": now,
    }
    tags = change.tags if change.tags is not None else tags_of(base)
    job: Job = {
        "id": job_id,
        "status": change.status if change.status is not None else base["status"],
        "progress": change.progress if "progress" in given else base["progress"],
        "message": change.message if "message" in given else base["message"],
        "data": change.data if change.data is not None else base["data"],
        "seq": base["seq"] + 1,
        "created_at": base["created_at"],
        "updated_at": now,
        "cancel_requested": base.get("cancel_requested"),
        "tags": tags,
        "parent": change.parent if "parent" in given else base.get("parent"),
    }
    if removed := [tag for tag in tags_of(base) if tag not in tags]:
        job["tags_removed"] = removed
    return job


def tags_of(job: Job) -> list[str]:
    return job.get("tags") or []


def state_of(event: Job) -> Job:
    """The job's current state after an event: the event without what only events carry."""
    if "tags_removed" not in event:
        return event
    state = event.copy()
    del state["tags_removed"]
    return state


def request_cancel(job_id: str, current: Job | None, *, by: str) -> Job:
    """The job's state once a cancel is asked for: one event, status unchanged."""
    if current is None:
        raise ApiError(404, "not_found", f"no job {job_id!r}")
    if current["status"] in TERMINAL:
        raise ApiError(409, "job_finished", f"job {job_id!r} is {current['status']}")
    return {
        **state_of(current),
        "seq": current["seq"] + 1,
        "updated_at": now_iso(),
        "cancel_requested": {"by": by, "at": now_iso()},
    }


class LogLineIn(Payload):
    text: str
    stream: LogStream = "stdout"

    @field_validator("text")
    @classmethod
    def _text_size(cls, value: str) -> str:
        try:
            size = text_size(value)
        except UnicodeEncodeError:  # a lone surrogate, from a "\ud800" escape
            raise ValueError("must be valid Unicode") from None
        if size > MAX_LOG_TEXT:
            raise ValueError(f"must be at most {MAX_LOG_TEXT} bytes of UTF-8")
        return value


class LogsIn(Payload):
    """`{"lines": [{"text", "stream"}, …]}`, or one line as `{"text", "stream"}`."""

    lines: Annotated[list[LogLineIn], Field(min_length=1, max_length=MAX_LOG_LINES)]

    @model_validator(mode="before")
    @classmethod
    def _one_line(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and "text" in raw and "lines" not in raw:
            return {"lines": [raw]}
        return raw


class AnnouncementIn(Payload):
    text: Text
    level: Level = "info"
    room: RoomName | None = None


class TokenIn(Payload):
    sub: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    name: Annotated[str, StringConstraints(max_length=64)] | None = None
    jobs: Annotated[list[Glob], Field(max_length=100)] | None = None
    rooms: Annotated[list[Glob], Field(max_length=100)] | None = None
    cancel: Annotated[list[Glob], Field(max_length=100)] | None = None
    tags: Annotated[list[Glob], Field(max_length=100)] | None = None
    ttl: int = Field(3600, ge=1, le=366 * 24 * 3600)


class Revocation(TypedDict):
    """Tokens refused until `until`: the one with this `jti`, or every token of this `sub`
    issued at or before `at` (one issued later works). Times in seconds since the epoch."""

    jti: str | None
    sub: str | None
    at: float
    until: float


class RevokeIn(Payload):
    """Refuse one token (`jti`) or every token of a `sub` issued so far, for `ttl` seconds
    (default: the longest a minted token lives)."""

    jti: Annotated[str, StringConstraints(min_length=1, max_length=256)] | None = None
    sub: Annotated[str, StringConstraints(min_length=1, max_length=256)] | None = None
    ttl: int = Field(366 * 24 * 3600, ge=1, le=10 * 366 * 24 * 3600)

    @model_validator(mode="after")
    def _one(self) -> Self:
        if (self.jti is None) == (self.sub is None):
            raise ValueError("give either jti or sub")
        return self


class RefreshIn(Payload):
    token: Annotated[str, StringConstraints(min_length=1, max_length=8192)]


class _OneTarget(Payload):
    """A job (`job_id`, '*' for all) or every job with a tag (`tag`): exactly one."""

    job_id: str | None = None
    tag: Tag | None = None

    @model_validator(mode="after")
    def _one(self) -> Self:
        if (self.job_id is None) == (self.tag is None):
            raise ValueError("give either job_id or tag")
        return self


class SubscribeIn(_OneTarget):
    since: Annotated[int, Field(ge=0)] | None = None
    # Given (a number, or null for "from now on"): the job's log lines too.
    log_since: Annotated[int, Field(ge=0)] | None = None


class UnsubscribeIn(_OneTarget):
    pass


class CancelIn(Payload):
    job_id: str


class WhoAmIIn(Payload):
    pass


class RoomIn(Payload):
    room: RoomName


class MessageIn(Payload):
    room: RoomName
    text: Text


class RecentIn(Payload):
    limit: int = Field(20, ge=1, le=100)


JOB_ID_ADAPTER_ERROR = (
    "job_id: must be '*' or 1-128 characters of letters, digits and ._:- starting with a letter "
    "or digit"
)


def check_job_id(job_id: str, *, allow_all: bool) -> str:
    """A job id, or '*' where all jobs are meant; anything else (globs included) is refused."""
    if allow_all and job_id == "*":
        return job_id
    try:
        _JobIdModel(id=job_id)
    except ValidationError:
        raise invalid_payload(JOB_ID_ADAPTER_ERROR) from None
    return job_id


def check_tag(tag: str) -> str:
    try:
        _TagModel(tag=tag)
    except ValidationError:
        raise invalid_payload("tag: 1 to 64 of A-Z a-z 0-9 . _ : - (not first: . _ : -)") from None
    return tag


class _TagModel(BaseModel):
    tag: Tag


class _JobIdModel(BaseModel):
    id: JobId


def json_type(value: object) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    for kind, name in names.items():
        if isinstance(value, kind):
            return name
    return "number" if isinstance(value, int | float) else type(value).__name__
