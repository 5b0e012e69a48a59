"""sqlite:///path — one durable file, one process.

One thread owns the connection. Writes queue up while a transaction is running and
the next transaction commits all of them together (group commit): many concurrent
updates share one fsync, and each caller is answered only after its commit.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar, cast

from ..errors import ApiError
from ..models import (
    Announcement,
    ChatMessage,
    Job,
    LogEntry,
    LogLine,
    Revocation,
    state_of,
    text_size,
)
from .base import (
    CHAT_HISTORY,
    IDEMPOTENCY_TTL,
    KEEP_ANNOUNCEMENTS,
    ChatUsage,
    LogLimits,
    Mutation,
    OutboxEntry,
    RoomLimits,
    Store,
    StoredResponse,
    StoreUnavailable,
    WebhookStats,
    index_keys,
    job_response,
    listed_by,
    log_response,
    no_job,
    no_webhook_stats,
    numbered,
    revocation_key,
    too_many_rooms,
    webhook_event,
)

T = TypeVar("T")
Op = Callable[[sqlite3.Connection], Any]

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_update ON jobs (updated_at);
CREATE TABLE IF NOT EXISTS events (
    job_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS logs (
    job_id TEXT NOT NULL,
    n INTEGER NOT NULL,  -- the line's offset
    stream TEXT NOT NULL,
    text TEXT NOT NULL,
    ts TEXT NOT NULL,
    size INTEGER NOT NULL,  -- bytes of text
    PRIMARY KEY (job_id, n)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS log_heads (
    job_id TEXT PRIMARY KEY,
    head INTEGER NOT NULL,  -- the last offset given
    kept INTEGER NOT NULL,
    size INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS announcements (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    room TEXT,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    room TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_room ON messages (room, n);
CREATE TABLE IF NOT EXISTS rooms (
    name TEXT PRIMARY KEY,
    empty_since REAL  -- NULL while someone is in the room
);
CREATE INDEX IF NOT EXISTS rooms_by_empty_since ON rooms (empty_since);
CREATE TABLE IF NOT EXISTS job_index (  -- what lists a job beside its status
    key TEXT NOT NULL,  -- tag:<tag> or parent:<job id>
    job_id TEXT NOT NULL,
    PRIMARY KEY (key, job_id)
);
CREATE INDEX IF NOT EXISTS job_index_by_job ON job_index (job_id);
CREATE TABLE IF NOT EXISTS revocations (
    key TEXT PRIMARY KEY,  -- jti:… or sub:…
    until REAL NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    expires REAL NOT NULL,
    body TEXT NOT NULL
);
-- Webhook deliveries, written in the transaction of the job update they carry. A lane is
-- one webhook's deliveries of one job, sent in n order.
CREATE TABLE IF NOT EXISTS webhook_outbox (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    hook TEXT NOT NULL,
    job_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    body TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_outbox_by_lane ON webhook_outbox (hook, job_id, n);
CREATE TABLE IF NOT EXISTS webhook_lanes (
    hook TEXT NOT NULL,
    job_id TEXT NOT NULL,
    due REAL NOT NULL,  -- not before (seconds since the epoch)
    failures INTEGER NOT NULL,  -- attempts that failed in a row
    PRIMARY KEY (hook, job_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS webhook_lanes_by_due ON webhook_lanes (hook, due);
CREATE TABLE IF NOT EXISTS webhook_stats (
    hook TEXT PRIMARY KEY,
    delivered INTEGER NOT NULL DEFAULT 0,
    dead INTEGER NOT NULL DEFAULT 0,
    last_success REAL,
    last_failure REAL,
    last_error TEXT
);
"""


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class SqliteStore(Store):
    def __init__(
        self,
        path: str,
        *,
        history: int,
        rooms: RoomLimits | None = None,
        logs: LogLimits | None = None,
    ) -> None:
        super().__init__(history=history, rooms=rooms, logs=logs)
        self.path = path
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="switchboard-sqlite")
        self._db: sqlite3.Connection | None = None
        self._pending: list[tuple[Op, asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None

    # -- plumbing --------------------------------------------------------

    async def open(self) -> None:
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._connect)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open {self.path}: {exc}") from exc

    def _connect(self) -> None:
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")  # committed means on disk
        db.execute("PRAGMA busy_timeout=5000")
        db.executescript(SCHEMA)
        # Presence lives in this process: after a restart every room is empty, and
        # history from before rooms had records gets one, so that all of it expires.
        now = time.time()
        db.execute("UPDATE rooms SET empty_since = ? WHERE empty_since IS NULL", (now,))
        db.execute(
            "INSERT OR IGNORE INTO rooms (name, empty_since) SELECT DISTINCT room, ? FROM messages",
            (now,),
        )
        self._db = db

    async def close(self) -> None:
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        if self._db is not None:
            await self._run(lambda db: db.close())
            self._db = None
        self._executor.shutdown(wait=True)

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(connection)` on the store's thread."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, self._call, fn)
        except sqlite3.Error as exc:
            raise StoreUnavailable(str(exc)) from exc

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._db is None:
            raise sqlite3.OperationalError("store is closed")
        return fn(self._db)

    async def _write(self, op: Callable[[sqlite3.Connection], T]) -> T:
        """Queue `op` for the next transaction; return its result once committed."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((op, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            ops = [op for op, _ in batch]
            try:
                outcomes = await self._run(partial(_commit, ops))
            except (StoreUnavailable, RuntimeError) as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(StoreUnavailable(str(exc)))
                continue
            for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
                if future.done():
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)

    # -- jobs --------------------------------------------------------------

    async def ping(self) -> None:
        await self._run(lambda db: db.execute("SELECT 1").fetchone())

    async def apply(self, job_id: str, mutate: Mutation, idempotency_key: str | None = None) -> Job:
        history = self.history

        def op(db: sqlite3.Connection) -> Job:
            row = db.execute("SELECT body FROM jobs WHERE id = ?", (job_id,)).fetchone()
            current = json.loads(row[0]) if row else None
            job = mutate(current)
            _index(db, job_id, index_keys(current), index_keys(job))
            body = _dumps(job)  # the event's
            state = state_of(job)
            db.execute(
                "INSERT INTO jobs (id, status, updated_at, body) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET status = excluded.status,"
                " updated_at = excluded.updated_at, body = excluded.body",
                (job_id, job["status"], job["updated_at"], body if state is job else _dumps(state)),
            )
            db.execute(
                "INSERT INTO events (job_id, seq, body) VALUES (?, ?, ?)",
                (job_id, job["seq"], body),
            )
            if job["seq"] > history:
                db.execute(
                    "DELETE FROM events WHERE job_id = ? AND seq <= ?",
                    (job_id, job["seq"] - history),
                )
            if idempotency_key is not None:
                _put_response(db, idempotency_key, job_response(job), time.time() + IDEMPOTENCY_TTL)
            hooks = self.outbox_targets(job)
            if hooks:
                _enqueue(db, hooks, job_id, *webhook_event(job_id, job["seq"], body))
            return job

        return await self._write(op)

    async def get_job(self, job_id: str) -> Job | None:
        row = await self._run(
            lambda db: db.execute("SELECT body FROM jobs WHERE id = ?", (job_id,)).fetchone()
        )
        return cast(Job, json.loads(row[0])) if row else None

    async def list_jobs(
        self, status: str | None, limit: int, *, tag: str | None = None, parent: str | None = None
    ) -> list[Job]:
        key = listed_by(tag, parent)

        def query(db: sqlite3.Connection) -> list[Any]:
            where, args = [], []
            if key is not None:
                where.append("id IN (SELECT job_id FROM job_index WHERE key = ?)")
                args.append(key)
            if status is not None:
                where.append("status = ?")
                args.append(status)
            sql = "SELECT body FROM jobs" + (" WHERE " + " AND ".join(where) if where else "")
            return db.execute(sql + " ORDER BY updated_at DESC LIMIT ?", (*args, limit)).fetchall()

        return [json.loads(body) for (body,) in await self._run(query)]

    async def events_after(self, job_id: str, since: int, limit: int) -> list[Job]:
        rows = await self._run(
            lambda db: db.execute(
                "SELECT body FROM events WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                (job_id, since, limit),
            ).fetchall()
        )
        return [json.loads(body) for (body,) in rows]

    async def delete_job(self, job_id: str) -> bool:
        return await self._write(partial(_forget_job, job_id))

    async def purge(self, finished_before: str, now: float) -> int:
        def op(db: sqlite3.Connection) -> int:
            old = [
                job_id
                for (job_id,) in db.execute(
                    "SELECT id FROM jobs WHERE updated_at < ?"
                    " AND status IN ('succeeded', 'failed', 'cancelled')",
                    (finished_before,),
                )
            ]
            for job_id in old:
                _forget_job(job_id, db)
            db.execute("DELETE FROM responses WHERE expires <= ?", (now,))
            db.execute("DELETE FROM revocations WHERE until <= ?", (now,))
            return len(old)

        return await self._write(op)

    async def append_logs(
        self, job_id: str, entries: list[LogEntry], idempotency_key: str | None = None
    ) -> list[LogLine]:
        limits = self.logs

        def op(db: sqlite3.Connection) -> list[LogLine]:
            if db.execute("SELECT 1 FROM jobs WHERE id = ?", (job_id,)).fetchone() is None:
                raise no_job(job_id)
            found = db.execute(
                "SELECT head, kept, size FROM log_heads WHERE job_id = ?", (job_id,)
            ).fetchone()
            head, kept, size = found or (0, 0, 0)
            lines = numbered(entries, head)
            rows = [
                (job_id, n["offset"], n["stream"], n["text"], n["ts"], text_size(n["text"]))
                for n in lines
            ]
            db.executemany(
                "INSERT INTO logs (job_id, n, stream, text, ts, size) VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
            head, kept, size = head + len(rows), kept + len(rows), size + sum(r[5] for r in rows)
            oldest = db.execute("SELECT size FROM logs WHERE job_id = ? ORDER BY n", (job_id,))
            dropped, freed = limits.excess(kept, size, (line_size for (line_size,) in oldest))
            oldest.close()
            if dropped:  # kept offsets are contiguous: head - kept + 1 … head
                first_kept = head - kept + 1 + dropped
                db.execute("DELETE FROM logs WHERE job_id = ? AND n < ?", (job_id, first_kept))
            db.execute(
                "INSERT OR REPLACE INTO log_heads (job_id, head, kept, size) VALUES (?, ?, ?, ?)",
                (job_id, head, kept - dropped, size - freed),
            )
            if idempotency_key is not None:
                answer = log_response(job_id, lines)
                _put_response(db, idempotency_key, answer, time.time() + IDEMPOTENCY_TTL)
            return lines

        return await self._write(op)

    async def logs_after(self, job_id: str, after: int, limit: int) -> tuple[list[LogLine], int]:
        def query(db: sqlite3.Connection) -> tuple[list[Any], int]:
            rows = db.execute(
                "SELECT n, stream, text, ts FROM logs WHERE job_id = ? AND n > ?"
                " ORDER BY n LIMIT ?",
                (job_id, after, limit),
            ).fetchall()
            head = db.execute("SELECT head FROM log_heads WHERE job_id = ?", (job_id,)).fetchone()
            return rows, head[0] if head else 0

        rows, head = await self._run(query)
        lines: list[LogLine] = [
            {"offset": n, "stream": stream, "text": text, "ts": ts} for n, stream, text, ts in rows
        ]
        return lines, head

    # -- announcements and chat ---------------------------------------------

    async def add_announcement(self, announcement: Announcement) -> None:
        def op(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO announcements (room, body) VALUES (?, ?)",
                (announcement["room"], _dumps(announcement)),
            )
            db.execute(
                "DELETE FROM announcements WHERE n <= (SELECT max(n) FROM announcements) - ?",
                (KEEP_ANNOUNCEMENTS,),
            )

        await self._write(op)

    async def recent_announcements(
        self, limit: int, rooms: Iterable[str] | None = None
    ) -> list[Announcement]:
        def query(db: sqlite3.Connection) -> list[Any]:
            if rooms is None:
                sql = "SELECT body FROM announcements ORDER BY n DESC LIMIT ?"
                return db.execute(sql, (limit,)).fetchall()
            names = list(rooms)
            marks = ",".join("?" * len(names))
            sql = (
                "SELECT body FROM announcements WHERE room IS NULL"
                f" OR room IN ({marks}) ORDER BY n DESC LIMIT ?"
            )
            return db.execute(sql, [*names, limit]).fetchall()

        return [json.loads(body) for (body,) in await self._run(query)]

    async def add_message(self, message: ChatMessage) -> None:
        room, now = message["room"], time.time()

        def op(db: sqlite3.Connection) -> None:
            # A room nobody joined has no record yet: give it one so its history expires too.
            db.execute("INSERT OR IGNORE INTO rooms (name, empty_since) VALUES (?, ?)", (room, now))
            db.execute("INSERT INTO messages (room, body) VALUES (?, ?)", (room, _dumps(message)))
            db.execute(
                "DELETE FROM messages WHERE room = ? AND n < (SELECT n FROM messages"
                " WHERE room = ? ORDER BY n DESC LIMIT 1 OFFSET ?)",
                (room, room, CHAT_HISTORY - 1),
            )

        await self._write(op)

    async def recent_messages(self, room: str) -> list[ChatMessage]:
        rows = await self._run(
            lambda db: db.execute(
                "SELECT body FROM messages WHERE room = ? ORDER BY n DESC LIMIT ?",
                (room, CHAT_HISTORY),
            ).fetchall()
        )
        return [json.loads(body) for (body,) in reversed(rows)]

    async def _occupy(self, room: str, now: float) -> None:
        limits = self.rooms

        def op(db: sqlite3.Connection) -> bool:
            if db.execute("UPDATE rooms SET empty_since = NULL WHERE name = ?", (room,)).rowcount:
                return True
            if _count_rooms(db) >= limits.max_rooms:
                _forget_rooms(db, now - limits.ttl)  # expired rooms make way
                if _count_rooms(db) >= limits.max_rooms:
                    return False
            db.execute("INSERT INTO rooms (name, empty_since) VALUES (?, NULL)", (room,))
            return True

        if not await self._write(op):
            raise too_many_rooms(limits.max_rooms)

    async def _vacate(self, room: str, now: float) -> None:
        await self._write(
            lambda db: db.execute("UPDATE rooms SET empty_since = ? WHERE name = ?", (now, room))
        )

    async def purge_rooms(self, emptied_before: float) -> int:
        return await self._write(lambda db: _forget_rooms(db, emptied_before))

    async def chat_usage(self) -> ChatUsage:
        def query(db: sqlite3.Connection) -> tuple[int, int]:
            (rooms,) = db.execute(
                "SELECT count(*) FROM (SELECT name FROM rooms UNION SELECT room FROM messages)"
            ).fetchone()
            (messages,) = db.execute("SELECT count(*) FROM messages").fetchone()
            return rooms, messages

        rooms, messages = await self._run(query)
        members = sum(len(members) for members in self._members.values())
        return {"rooms": rooms, "messages": messages, "members": members}

    # -- idempotency --------------------------------------------------------

    async def get_response(self, key: str, now: float) -> StoredResponse | None:
        row = await self._run(
            lambda db: db.execute(
                "SELECT body FROM responses WHERE key = ? AND expires > ?", (key, now)
            ).fetchone()
        )
        return cast(StoredResponse, json.loads(row[0])) if row else None

    async def put_response(self, key: str, response: StoredResponse, expires: float) -> None:
        await self._write(lambda db: _put_response(db, key, response, expires))

    # -- webhook outbox ----------------------------------------------------------------
    # One process owns the file: leases live in memory, so a restart frees them at once.

    async def outbox_claim(self, hook: str, limit: int, lease: float) -> list[str]:
        now = time.time()
        rows = await self._run(
            lambda db: db.execute(
                "SELECT job_id FROM webhook_lanes WHERE hook = ? AND due <= ? ORDER BY due LIMIT ?",
                (hook, now, limit + self._leased(hook, now)),
            ).fetchall()
        )
        claimed: list[str] = []
        for (job_id,) in rows:
            if len(claimed) >= limit:
                break
            if self._lease(hook, job_id, now, lease):
                claimed.append(job_id)
        return claimed

    async def outbox_head(self, hook: str, job_id: str) -> OutboxEntry | None:
        def query(db: sqlite3.Connection) -> OutboxEntry | None:
            row = db.execute(
                "SELECT o.n, o.event_id, o.body, o.created, l.failures FROM webhook_outbox o"
                " JOIN webhook_lanes l ON l.hook = o.hook AND l.job_id = o.job_id"
                " WHERE o.hook = ? AND o.job_id = ? ORDER BY o.n LIMIT 1",
                (hook, job_id),
            ).fetchone()
            if row is None:
                return None
            n, event_id, body, created, failures = row
            return OutboxEntry(str(n), event_id, body, created, failures)

        return await self._run(query)

    async def outbox_delivered(
        self, hook: str, job_id: str, entry: OutboxEntry, lease: float
    ) -> bool:
        def op(db: sqlite3.Connection) -> None:
            if db.execute("DELETE FROM webhook_outbox WHERE n = ?", (int(entry.ref),)).rowcount:
                db.execute(
                    "UPDATE webhook_lanes SET failures = 0 WHERE hook = ? AND job_id = ?",
                    (hook, job_id),
                )
                _count(db, hook, "delivered = delivered + 1, last_success = ?", time.time())

        await self._write(op)
        self._leases[(hook, job_id)] = time.time() + lease
        return True

    async def outbox_failed(
        self,
        hook: str,
        job_id: str,
        entry: OutboxEntry,
        delay: float,
        error: str,
        dead_before: float,
    ) -> int:
        def op(db: sqlite3.Connection) -> int:
            now = time.time()
            dead = 0
            head = db.execute(
                "SELECT n FROM webhook_outbox WHERE hook = ? AND job_id = ? ORDER BY n LIMIT 1",
                (hook, job_id),
            ).fetchone()
            if head is not None and str(head[0]) == entry.ref:
                old = db.execute(
                    "SELECT n, created FROM webhook_outbox WHERE hook = ? AND job_id = ?"
                    " ORDER BY n",
                    (hook, job_id),
                )
                gone = []
                for n, created in old:
                    if created >= dead_before:
                        break
                    gone.append((n,))
                old.close()
                db.executemany("DELETE FROM webhook_outbox WHERE n = ?", gone)
                dead = len(gone)
            _count(db, hook, "dead = dead + ?, last_failure = ?, last_error = ?", dead, now, error)
            if _lane_empty(db, hook, job_id):
                _forget_lane(db, hook, job_id)
            else:
                db.execute(
                    "UPDATE webhook_lanes SET failures = failures + 1, due = ?"
                    " WHERE hook = ? AND job_id = ?",
                    (now + delay, hook, job_id),
                )
            return dead

        try:
            return await self._write(op)
        finally:
            self._leases.pop((hook, job_id), None)

    async def outbox_release(self, hook: str, job_id: str) -> None:
        def op(db: sqlite3.Connection) -> None:
            if _lane_empty(db, hook, job_id):
                _forget_lane(db, hook, job_id)

        try:
            await self._write(op)
        finally:
            self._leases.pop((hook, job_id), None)

    async def outbox_stats(self, hook: str) -> WebhookStats:
        def query(db: sqlite3.Connection) -> WebhookStats:
            stats = no_webhook_stats()
            (stats["pending"],) = db.execute(
                "SELECT count(*) FROM webhook_outbox WHERE hook = ?", (hook,)
            ).fetchone()
            row = db.execute(
                "SELECT delivered, dead, last_success, last_failure, last_error"
                " FROM webhook_stats WHERE hook = ?",
                (hook,),
            ).fetchone()
            if row is not None:
                (stats["delivered"], stats["dead"], stats["last_success"],
                 stats["last_failure"], stats["last_error"]) = row  # fmt: skip
            return stats

        return await self._run(query)

    async def revoke(self, revocation: Revocation) -> None:
        await self._write(lambda db: _put_revocation(db, revocation))

    async def revocations(self, now: float) -> list[Revocation]:
        rows = await self._run(
            lambda db: db.execute("SELECT body FROM revocations WHERE until > ?", (now,)).fetchall()
        )
        return [json.loads(body) for (body,) in rows]


def _put_revocation(db: sqlite3.Connection, revocation: Revocation) -> None:
    db.execute(
        "INSERT OR REPLACE INTO revocations (key, until, body) VALUES (?, ?, ?)",
        (revocation_key(revocation), revocation["until"], _dumps(revocation)),
    )


def _put_response(
    db: sqlite3.Connection, key: str, response: StoredResponse, expires: float
) -> None:
    db.execute(
        "INSERT OR REPLACE INTO responses (key, expires, body) VALUES (?, ?, ?)",
        (key, expires, _dumps(response)),
    )


def _index(db: sqlite3.Connection, job_id: str, old: set[str], new: set[str]) -> None:
    """Keep job_index (tags, parent) in step with the job's new state."""
    for key in old - new:
        db.execute("DELETE FROM job_index WHERE key = ? AND job_id = ?", (key, job_id))
    for key in new - old:
        db.execute("INSERT OR IGNORE INTO job_index (key, job_id) VALUES (?, ?)", (key, job_id))


def _forget_job(job_id: str, db: sqlite3.Connection) -> bool:
    db.execute("DELETE FROM job_index WHERE job_id = ?", (job_id,))
    db.execute("DELETE FROM events WHERE job_id = ?", (job_id,))
    db.execute("DELETE FROM logs WHERE job_id = ?", (job_id,))
    db.execute("DELETE FROM log_heads WHERE job_id = ?", (job_id,))
    return db.execute("DELETE FROM jobs WHERE id = ?", (job_id,)).rowcount > 0


def _enqueue(
    db: sqlite3.Connection, hooks: list[str], job_id: str, event_id: str, body: str
) -> None:
    """A delivery of the event per webhook, at the end of its lane (created when new)."""
    now = time.time()
    for hook in hooks:
        db.execute(
            "INSERT INTO webhook_outbox (hook, job_id, event_id, body, created)"
            " VALUES (?, ?, ?, ?, ?)",
            (hook, job_id, event_id, body, now),
        )
        db.execute(
            "INSERT OR IGNORE INTO webhook_lanes (hook, job_id, due, failures) VALUES (?, ?, 0, 0)",
            (hook, job_id),
        )


def _count(db: sqlite3.Connection, hook: str, assignments: str, *values: Any) -> None:
    """Update a webhook's counters (`assignments`: SQL SET clauses)."""
    db.execute("INSERT OR IGNORE INTO webhook_stats (hook) VALUES (?)", (hook,))
    db.execute(f"UPDATE webhook_stats SET {assignments} WHERE hook = ?", (*values, hook))


def _lane_empty(db: sqlite3.Connection, hook: str, job_id: str) -> bool:
    found = db.execute(
        "SELECT 1 FROM webhook_outbox WHERE hook = ? AND job_id = ? LIMIT 1", (hook, job_id)
    ).fetchone()
    return found is None


def _forget_lane(db: sqlite3.Connection, hook: str, job_id: str) -> None:
    db.execute("DELETE FROM webhook_lanes WHERE hook = ? AND job_id = ?", (hook, job_id))


def _count_rooms(db: sqlite3.Connection) -> int:
    return int(db.execute("SELECT count(*) FROM rooms").fetchone()[0])


def _forget_rooms(db: sqlite3.Connection, emptied_before: float) -> int:
    db.execute(
        "DELETE FROM messages WHERE room IN (SELECT name FROM rooms WHERE empty_since <= ?)",
        (emptied_before,),
    )
    return db.execute("DELETE FROM rooms WHERE empty_since <= ?", (emptied_before,)).rowcount


def _commit(ops: list[Op], db: sqlite3.Connection) -> list[tuple[bool, Any]]:
    """One transaction for the batch; each op in a savepoint so a refused op writes nothing."""
    outcomes: list[tuple[bool, Any]] = []
    db.execute("BEGIN IMMEDIATE")
    try:
        for op in ops:
            db.execute("SAVEPOINT op")
            try:
                outcomes.append((True, op(db)))
            except (ApiError, ValueError, TypeError, KeyError) as exc:
                db.execute("ROLLBACK TO op")
                outcomes.append((False, exc))
            db.execute("RELEASE op")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return outcomes
