"""redis://host:port/db (or redis+sentinel://…) — several processes share jobs, history,
chat and presence.

An update is one round trip: the job's next state is computed in Python (the same rule
as every store) from the state this process last saw, and one script checks that the
stored seq is still the one it was computed from and writes the job, its event, the
indexes and the idempotent answer at once. When another process got there first, the
script answers the stored state instead and the update is computed again. Updates to
one job that wait on this process go in the same script, in order: a hot job costs one
round trip per batch, not one per update. The seq therefore goes up by exactly one per
accepted update, whichever process accepts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, cast

from redis.exceptions import NoScriptError, RedisError, ResponseError

from ..models import (
    STATUSES,
    TERMINAL,
    Announcement,
    ChatMessage,
    Job,
    LogEntry,
    LogLine,
    Member,
    Revocation,
    state_of,
    text_size,
)
from ..redis_conn import glob_escape, redis_client
from .base import (
    CHAT_HISTORY,
    IDEMPOTENCY_TTL,
    KEEP_ANNOUNCEMENTS,
    ChatUsage,
    LogLimits,
    Mutation,
    NotReplicated,
    OutboxEntry,
    RoomLimits,
    Store,
    StoredResponse,
    StoreUnavailable,
    WebhookStats,
    index_keys,
    job_response,
    listed_by,
    no_job,
    no_webhook_stats,
    numbered,
    revocation_key,
    room_full,
    too_many_rooms,
)

log = logging.getLogger("switchboard.store")

NODE_TTL = 15  # seconds a node's presence records outlive its last heartbeat
HEARTBEAT = 5.0
SWEEP_BATCH = 500
MAX_BATCH = 64  # updates of one job in one script
MAX_JOBS = 256  # scripts in one pipeline
MAX_FILTERED = 1000  # jobs of a tag or parent read to find those of one status
MAX_TRIES = 100  # scripts for one batch before the writers are told to try again
KNOWN_JOBS = 10_000
REPLICA_WAIT_MS = 1000

# An update waiting to be written: its mutation, idempotency key and answer.
Pending = tuple[Mutation, str | None, "asyncio.Future[Job]"]
# An update computed: its next state (or why it is refused), idempotency key and answer.
Answer = tuple["Job | Exception", str | None, "asyncio.Future[Job]"]

# KEYS: job, events, jobs index, the five status indexes (STATUSES order), the index sets
# the job leaves, then those it is in (index:tag:<tag>, index:parent:<id>: a tag's or a
# parent's jobs, scored by update time like the other indexes), then the idempotency key
# of each write that has one, then per webhook the batch enqueues for: its lane of this
# job, its due set and its stats (OUTBOX below). ARGV: job id, expected seq (0: no
# job), history kept, idempotency ttl, when the webhook entries were made, the last
# write's status index (1-5) and score, how many index sets it leaves and is in, how many
# idempotency keys, then per write (its seq is one more than the one before): body,
# idempotent answer ('' for none), and the webhooks that want it (their places among the
# batch's webhooks, space-separated; '' for none). Returns {1} when written, {0, stored
# job or false} when the stored seq is not the expected one.
APPLY = """
local stored = redis.call('GET', KEYS[1])
if (stored and cjson.decode(stored).seq or 0) ~= tonumber(ARGV[2]) then return {0, stored} end
local id, seq, history, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local status, score, left, listed = tonumber(ARGV[6]), ARGV[7], tonumber(ARGV[8]), tonumber(ARGV[9])
local idem = 8 + left + listed  -- the key before the next write's idempotency key
local hooks = idem + tonumber(ARGV[10])  -- the key before the webhooks' keys
local body
for at = 11, #ARGV, 3 do
  body, seq = ARGV[at], seq + 1
  redis.call('ZADD', KEYS[2], seq, body)
  if ARGV[at + 1] ~= '' then
    idem = idem + 1
    redis.call('SET', KEYS[idem], ARGV[at + 1], 'EX', ttl)
  end
  for hook in string.gmatch(ARGV[at + 2], '%d+') do
    local base = hooks + (tonumber(hook) - 1) * 3
    local event = id .. ':' .. seq
    redis.call('RPUSH', KEYS[base + 1], ARGV[5] .. ' ' .. event .. ' {"id":"' .. event
      .. '","type":"job.update","job":' .. body .. '}')
    redis.call('ZADD', KEYS[base + 2], 'NX', 0, id)
    redis.call('HINCRBY', KEYS[base + 3], 'pending', 1)
  end
end
redis.call('SET', KEYS[1], body)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', seq - history)
for s = 1, 5 do
  if s ~= status then redis.call('ZREM', KEYS[3 + s], id) end
end
redis.call('ZADD', KEYS[3 + status], score, id)
redis.call('ZADD', KEYS[3], score, id)
for i = 9, 8 + left do redis.call('ZREM', KEYS[i], id) end
for i = 9 + left, 8 + left + listed do redis.call('ZADD', KEYS[i], score, id) end
return {1}
"""
# A job's log lines: a sorted set scored by offset, and a hash with the last offset given
# (`head`, which outlives trimmed lines) and the bytes of text kept (`size`). The script
# numbers the lines itself, so appends through any process never collide.
# KEYS: job, its lines, its log head, the idempotency key ('' for none). ARGV: job id, lines
# kept, bytes kept, idempotency ttl, the answer's expiry, then per line: its JSON after the
# offset ('"stream":…}') and its bytes of text. Returns {0} for an unknown job, else
# {1, first offset}. The answer stored is log_response's.
APPEND_LOGS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {0} end
local count = (#ARGV - 5) / 2
local first = redis.call('HINCRBY', KEYS[3], 'head', count) - count + 1
local offsets, added = {}, 0
for i = 1, count do
  offsets[i] = first + i - 1
  redis.call('ZADD', KEYS[2], offsets[i], '{"offset":' .. offsets[i] .. ',' .. ARGV[4 + 2 * i])
  added = added + tonumber(ARGV[5 + 2 * i])
end
local size = redis.call('HINCRBY', KEYS[3], 'size', added)
local kept, freed = redis.call('ZCARD', KEYS[2]), 0
while kept > 1 and (kept > tonumber(ARGV[2]) or size - freed > tonumber(ARGV[3])) do
  local oldest = redis.call('ZPOPMIN', KEYS[2])  -- the oldest go; the newest stays
  freed = freed + string.len(cjson.decode(oldest[1]).text)
  kept = kept - 1
end
if freed > 0 then redis.call('HINCRBY', KEYS[3], 'size', -freed) end
if KEYS[4] ~= '' then
  local answer = {status = 201, body = {job_id = ARGV[1], offsets = offsets}}
  local stored = cjson.encode({expires = tonumber(ARGV[5]), response = answer})
  redis.call('SET', KEYS[4], stored, 'EX', ARGV[4])
end
return {1, first}
"""
NOW = """
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
"""
# Chat rooms: the sorted set `rooms` holds every room kept, scored +inf while someone is
# in it and by its expiry (Redis clock) once empty, when its history key gets the same
# expiry. The scripts keep the set, the members and the history key in step atomically.
# KEYS: rooms, the room's members, its messages. ARGV: room, field, member, max rooms,
# max members. Returns 0, or 1 when the store is full of rooms, 2 when the room is full.
JOIN = (
    NOW
    + """
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now())  -- expired rooms make way
  if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return 1 end
end
if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 0
    and redis.call('HLEN', KEYS[2]) >= tonumber(ARGV[5]) then
  return 2
end
redis.call('ZADD', KEYS[1], '+inf', ARGV[1])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('PERSIST', KEYS[3])
return 0
"""
)
# KEYS: rooms, the room's members, its messages. ARGV: room, ttl seconds, fields to remove.
LEAVE = (
    NOW
    + """
redis.call('HDEL', KEYS[2], unpack(ARGV, 3))
if redis.call('EXISTS', KEYS[2]) == 0 then
  local ttl = tonumber(ARGV[2])
  redis.call('ZADD', KEYS[1], 'XX', now() + ttl, ARGV[1])
  redis.call('PEXPIRE', KEYS[3], math.ceil(ttl * 1000))
end
return 0
"""
)
# KEYS: rooms, the room's messages. ARGV: room, message, messages kept, ttl seconds.
POST = (
    NOW
    + """
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[3]), -1)
local expires = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not expires then  -- nobody joined it: it expires like an empty room
  expires = now() + tonumber(ARGV[4])
  redis.call('ZADD', KEYS[1], expires, ARGV[1])
end
if expires ~= 'inf' then
  redis.call('PEXPIREAT', KEYS[2], math.ceil(tonumber(expires) * 1000))
end
return 0
"""
)
# KEYS: rooms. Their history keys expire by themselves.
EXPIRE = NOW + "return redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now())"

# Webhook outbox, per webhook: a due set (job id -> when its lane may next be claimed, in
# Redis milliseconds: 0 for a new lane, a retry's time after a failure, the lease's end
# while a node holds it), an owner hash (job id -> the node that claimed the lane), a
# failures hash (job id -> failed attempts in a row) and a stats hash; per webhook and
# job a lane, a list of "<created> <event id> <body>" oldest first. APPLY appends to lanes.
# A claim moves a lane's due time to the end of its lease, so other nodes skip it until the
# lease runs out; each later step checks that the node still owns the lane.
NOW_MS = NOW + "local function now_ms() return math.floor(now() * 1000) end\n"
# KEYS: due, owner. ARGV: node, most lanes, lease ms. Returns the job ids claimed.
CLAIM = (
    NOW_MS
    + """
local t = now_ms()
local found = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', t, 'LIMIT', 0, tonumber(ARGV[2]))
for _, job in ipairs(found) do
  redis.call('ZADD', KEYS[1], t + tonumber(ARGV[3]), job)
  redis.call('HSET', KEYS[2], job, ARGV[1])
end
return found
"""
)
# KEYS: due, owner, failures, stats, lane. ARGV: job id, node, the entry delivered, lease
# ms. Returns 0 when another node owns the lane now, else 1.
DELIVERED = (
    NOW_MS
    + """
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end
if redis.call('LINDEX', KEYS[5], 0) == ARGV[3] then
  redis.call('LPOP', KEYS[5])
  redis.call('HINCRBY', KEYS[4], 'pending', -1)
  redis.call('HINCRBY', KEYS[4], 'delivered', 1)
end
local t = now_ms()
redis.call('HSET', KEYS[4], 'last_success', t / 1000)
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('ZADD', KEYS[1], t + tonumber(ARGV[4]), ARGV[1])
return 1
"""
)
# KEYS: due, owner, failures, stats, lane. ARGV: job id, node, the entry attempted, delay
# ms, error, dead before (seconds). Returns the entries given up, or -1 when another node
# owns the lane now.
FAILED = (
    NOW_MS
    + """
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return -1 end
local dead = 0
if redis.call('LINDEX', KEYS[5], 0) == ARGV[3] then
  local before = tonumber(ARGV[6])
  while true do
    local head = redis.call('LINDEX', KEYS[5], 0)
    if not head or tonumber(string.match(head, '^[^ ]+')) >= before then break end
    redis.call('LPOP', KEYS[5])
    dead = dead + 1
  end
end
local t = now_ms()
if dead > 0 then
  redis.call('HINCRBY', KEYS[4], 'pending', -dead)
  redis.call('HINCRBY', KEYS[4], 'dead', dead)
end
redis.call('HSET', KEYS[4], 'last_failure', t / 1000, 'last_error', ARGV[5])
redis.call('HDEL', KEYS[2], ARGV[1])
if redis.call('LLEN', KEYS[5]) == 0 then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[3], ARGV[1])
else
  redis.call('HINCRBY', KEYS[3], ARGV[1], 1)
  redis.call('ZADD', KEYS[1], t + tonumber(ARGV[4]), ARGV[1])
end
return dead
"""
)
# KEYS: due, owner, failures, lane. ARGV: job id, node. An empty lane is forgotten; another
# is due at once, for any node.
RELEASE = """
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
if redis.call('LLEN', KEYS[4]) == 0 then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[3], ARGV[1])
else
  redis.call('ZADD', KEYS[1], 0, ARGV[1])
end
return 1
"""


def _fail(batch: Iterable[Pending], exc: Exception) -> None:
    for _, _, done in batch:
        if not done.done():
            done.set_exception(exc)


def _answer(answers: Iterable[Answer], acknowledged: int, wanted: int) -> None:
    """Each waiter's job or refusal. A committed update that fewer replicas than wanted
    acknowledged in time is NotReplicated: a failover may lose it."""
    for job, _, done in answers:
        if done.done():
            continue
        if isinstance(job, Exception):
            done.set_exception(job)
        elif acknowledged < wanted:
            note = f"the update reached {acknowledged} of {wanted} replicas in time"
            done.set_exception(NotReplicated(job, note))
        else:
            done.set_result(job)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _stored_answer(job: Job, body: str, expires: float) -> str:
    """_dumps({"expires": expires, "response": job_response(job)}), reusing the job's JSON."""
    status = job_response(job)["status"]
    return f'{{"expires":{expires!r},"response":{{"status":{status},"body":{body}}}}}'


def _command(*args: str | int | float) -> bytes:
    """A command in the Redis protocol, as redis-py packs it."""
    packed = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = (arg if isinstance(arg, str) else repr(arg)).encode()
        packed.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(packed)


def _score(iso: str) -> float:
    """updated_at as a sortable number (milliseconds)."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000


@asynccontextmanager
async def _reachable() -> AsyncIterator[None]:
    try:
        yield
    except (RedisError, OSError) as exc:
        raise StoreUnavailable(f"redis: {exc}") from exc


class RedisStore(Store):
    def __init__(
        self,
        url: str,
        *,
        history: int,
        prefix: str = "switchboard:",
        rooms: RoomLimits | None = None,
        pool: tuple[int, float] = (50, 10.0),
        replicas: int = 0,
        logs: LogLimits | None = None,
    ) -> None:
        super().__init__(history=history, rooms=rooms, logs=logs)
        self.url = url
        self.prefix = prefix
        self.node = uuid.uuid4().hex[:12]
        self.replicas = replicas  # WAIT for this many replicas before an update is answered
        size, timeout = pool
        self.redis = redis_client(
            url, pool_size=size, pool_timeout=timeout, decode_responses=True,
            socket_timeout=5, socket_connect_timeout=2,
        )  # fmt: skip
        self._heartbeat: asyncio.Task[None] | None = None
        self._waiting: dict[str, list[Pending]] = {}  # job id -> updates not yet sent
        self._writer: asyncio.Task[None] | None = None
        self._known: dict[str, Job | None] = {}  # job id -> last state seen (oldest first)
        self._indexes = [self.key("jobs"), *(self.key("status", status) for status in STATUSES)]
        self._apply = self.redis.register_script(APPLY)
        self._append_logs = self.redis.register_script(APPEND_LOGS)
        self._join = self.redis.register_script(JOIN)
        self._leave = self.redis.register_script(LEAVE)
        self._post = self.redis.register_script(POST)
        self._expire = self.redis.register_script(EXPIRE)
        self._claim = self.redis.register_script(CLAIM)
        self._delivered = self.redis.register_script(DELIVERED)
        self._failed = self.redis.register_script(FAILED)
        self._release = self.redis.register_script(RELEASE)

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    async def open(self) -> None:
        self._heartbeat = asyncio.create_task(self._beat(), name="switchboard-redis-heartbeat")

    async def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
        with contextlib.suppress(RedisError, OSError):
            await self.redis.delete(self.key("node", self.node))
        await self.redis.aclose()

    async def ping(self) -> None:
        async with _reachable():
            await self.redis.ping()

    # -- jobs --------------------------------------------------------------

    async def apply(self, job_id: str, mutate: Mutation, idempotency_key: str | None = None) -> Job:
        done: asyncio.Future[Job] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(job_id, []).append((mutate, idempotency_key, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write(), name="switchboard-redis-writer")
        return await done

    async def _write(self) -> None:
        """Commit what waits, one pipeline per round trip (a script per job, with that
        job's waiting updates in order), until nothing waits."""
        tries: dict[str, int] = {}
        while self._waiting:
            batches: dict[str, list[Pending]] = {}
            for job_id in list(self._waiting)[:MAX_JOBS]:
                waiting = self._waiting.pop(job_id)
                batches[job_id] = waiting[:MAX_BATCH]
                if len(waiting) > MAX_BATCH:
                    self._waiting[job_id] = waiting[MAX_BATCH:]
            try:
                async with _reachable():
                    again = await self._commit(batches)
            except Exception as exc:  # StoreUnavailable, or a bug: every waiter hears
                for job_id, batch in batches.items():
                    self._known.pop(job_id, None)  # what is stored is unknown now
                    _fail(batch, exc)
                continue
            for job_id in batches:
                if job_id not in again:
                    tries.pop(job_id, None)
                elif (tried := tries.get(job_id, 0) + 1) >= MAX_TRIES:
                    tries.pop(job_id)
                    _fail(batches[job_id], StoreUnavailable(f"job {job_id!r} is too contended"))
                else:  # first in line again, ahead of what arrived meanwhile
                    tries[job_id] = tried
                    self._waiting[job_id] = batches[job_id] + self._waiting.pop(job_id, [])

    async def _commit(self, batches: dict[str, list[Pending]]) -> set[str]:
        """One round trip for the batches (two when some jobs are not known here): the
        jobs to try again because another process wrote them first."""
        unknown = [job_id for job_id in batches if job_id not in self._known]
        if unknown:
            raws = await self.redis.mget([self.key("job", job_id) for job_id in unknown])
            for job_id, raw in zip(unknown, raws, strict=True):
                self._remember_job(job_id, cast(Job, json.loads(raw)) if raw else None)
        sent: list[tuple[str, Job | None, list[Answer]]] = []
        commands = []
        for job_id, batch in batches.items():
            current = self._known.get(job_id)
            state, answers = self._compute(current, batch)
            writes = [(job, key) for job, key, _ in answers if not isinstance(job, Exception)]
            if writes:
                commands.append(_command(*self._apply_call(job_id, current, writes)))
                sent.append((job_id, state, answers))
            else:
                _answer(answers, self.replicas, self.replicas)
        if sent and self.replicas:
            commands.append(_command("WAIT", self.replicas, REPLICA_WAIT_MS))
        results = await self._send(commands) if sent else []
        acknowledged = results.pop() if sent and self.replicas else self.replicas
        if isinstance(acknowledged, Exception):
            raise acknowledged
        again = set()
        for (job_id, state, answers), result in zip(sent, results, strict=True):
            if isinstance(result, NoScriptError):  # Redis restarted: load it, try again
                await self.redis.script_load(APPLY)
                again.add(job_id)
            elif isinstance(result, Exception):
                raise result
            elif result[0] != 1:  # another process wrote first: compute again from its state
                self._remember_job(job_id, cast(Job, json.loads(result[1])) if result[1] else None)
                again.add(job_id)
            else:
                self._remember_job(job_id, state)
                _answer(answers, acknowledged, self.replicas)
        return again

    @staticmethod
    def _compute(current: Job | None, batch: list[Pending]) -> tuple[Job | None, list[Answer]]:
        """Each update applied in turn to the state before it (the rule every store shares):
        the last state, and per update its job (or refusal), key and waiter."""
        state, answers = current, list[Answer]()
        for mutate, idempotency_key, done in batch:
            try:
                state = mutate(state)
            except Exception as exc:  # an ApiError (409): nothing to write for it
                answers.append((exc, idempotency_key, done))
            else:
                answers.append((state, idempotency_key, done))
        return state, answers

    def _outbox_keys(self, hook: str, job_id: str) -> list[str]:
        """A webhook's keys that APPLY writes: the job's lane, the due set, the stats."""
        return [
            self.key("wh", hook, "lane", job_id),
            self.key("wh", hook, "due"),
            self.key("wh", hook, "stats"),
        ]

    def _apply_call(
        self, job_id: str, current: Job | None, writes: list[tuple[Job, str | None]]
    ) -> list[Any]:
        """EVALSHA APPLY for the writes of one job, computed from `current`, with their
        idempotent answers and the webhooks that want them."""
        state = writes[-1][0]
        leaves, listed = index_keys(current) - index_keys(state), index_keys(state)
        idempotent = [key for _, key in writes if key is not None]
        targets = [self.outbox_targets(job) for job, _ in writes]
        hooks = list(dict.fromkeys(hook for wanted in targets for hook in wanted))
        keys = [self.key("job", job_id), self.key("events", job_id), *self._indexes]
        keys += [self.key("index", key) for key in (*leaves, *listed)]
        keys += [self.key("idem", key) for key in idempotent]
        for hook in hooks:
            keys += self._outbox_keys(hook, job_id)
        now = time.time()
        args: list[Any] = [job_id, current["seq"] if current else 0, self.history]
        args += [int(IDEMPOTENCY_TTL), repr(now), STATUSES.index(state["status"]) + 1]
        args += [_score(state["updated_at"]), len(leaves), len(listed), len(idempotent)]
        for (job, key), wanted in zip(writes, targets, strict=True):
            body = _dumps(job)
            answer = "" if key is None else _stored_answer(job, body, now + IDEMPOTENCY_TTL)
            args += [body, answer, " ".join(str(hooks.index(hook) + 1) for hook in wanted)]
        return ["EVALSHA", self._apply.sha, len(keys), *keys, *args]

    async def _send(self, commands: list[bytes]) -> list[Any]:
        """Packed commands in one write on one connection: their replies, an error reply as
        its exception. By hand: redis-py's pipeline took about 7 µs more CPU per update,
        most of it packing arguments."""
        pool = self.redis.connection_pool
        connection = await pool.get_connection()
        try:
            await connection.send_packed_command(b"".join(commands))
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(await connection.read_response())
                except ResponseError as exc:
                    replies.append(exc)
            return replies
        except BaseException:  # replies may be left unread: the connection is not reused
            await connection.disconnect(nowait=True)
            raise
        finally:
            await pool.release(connection)

    async def _replicated(
        self, script: Any, keys: list[str], args: list[Any]
    ) -> tuple[list[Any], int]:
        """A writing script, then WAIT for replicas on the same connection when asked: its
        answer, and the replicas that acknowledged (0 when none is asked)."""
        if not self.replicas:
            return list(await script(keys=keys, args=args)), 0
        call = _command("EVALSHA", script.sha, len(keys), *keys, *args)
        wait = _command("WAIT", self.replicas, REPLICA_WAIT_MS)
        answer, acknowledged = await self._send([call, wait])
        if isinstance(answer, NoScriptError):  # Redis restarted: load it, once
            await self.redis.script_load(script.script)
            answer, acknowledged = await self._send([call, wait])
        for outcome in (answer, acknowledged):
            if isinstance(outcome, Exception):
                raise outcome
        return list(answer), acknowledged

    def _remember_job(self, job_id: str, job: Job | None) -> None:
        """The state this process last committed or saw, to compute the next update from."""
        self._known.pop(job_id, None)
        self._known[job_id] = job
        if len(self._known) > KNOWN_JOBS:
            del self._known[next(iter(self._known))]

    async def get_job(self, job_id: str) -> Job | None:
        async with _reachable():
            raw = await self.redis.get(self.key("job", job_id))
        return state_of(json.loads(raw)) if raw else None

    async def list_jobs(
        self, status: str | None, limit: int, *, tag: str | None = None, parent: str | None = None
    ) -> list[Job]:
        key = listed_by(tag, parent)
        if key is None:
            index = self.key("jobs") if status is None else self.key("status", status)
        else:  # filtered below by status, and by the index key itself (no stale entry shows)
            index = self.key("index", key)
        upto = limit if key is None or status is None else MAX_FILTERED
        async with _reachable():
            ids = await self.redis.zrevrange(index, 0, upto - 1)
            if not ids:
                return []
            raws = await self.redis.mget([self.key("job", job_id) for job_id in ids])
        jobs = [state_of(json.loads(raw)) for raw in raws if raw]
        if key is not None:
            jobs = [job for job in jobs if key in index_keys(job)]
            jobs = [job for job in jobs if status is None or job["status"] == status]
        return jobs[:limit]

    async def events_after(self, job_id: str, since: int, limit: int) -> list[Job]:
        async with _reachable():
            raws = await self.redis.zrangebyscore(
                self.key("events", job_id), f"({since}", "+inf", start=0, num=limit
            )
        return [json.loads(raw) for raw in raws]

    async def delete_job(self, job_id: str) -> bool:
        async with _reachable():
            return await self._forget(job_id)

    async def _forget(self, job_id: str) -> bool:
        self._known.pop(job_id, None)
        raw = await self.redis.get(self.key("job", job_id))
        listed = index_keys(cast(Job, json.loads(raw)) if raw else None)
        async with self.redis.pipeline(transaction=True) as pipe:
            for key in listed:
                pipe.zrem(self.key("index", key), job_id)
            pipe.delete(
                self.key("job", job_id), self.key("events", job_id),
                self.key("logs", job_id), self.key("loghead", job_id),
            )  # fmt: skip
            pipe.zrem(self.key("jobs"), job_id)
            for status in STATUSES:
                pipe.zrem(self.key("status", status), job_id)
            deleted, *_ = await pipe.execute()
        return bool(deleted)

    async def purge(self, finished_before: str, now: float) -> int:
        cutoff = _score(finished_before)
        removed = 0
        async with _reachable():
            for status in TERMINAL:
                for job_id in await self.redis.zrangebyscore(
                    self.key("status", status), "-inf", f"({cutoff}"
                ):
                    removed += await self._forget(job_id)
        return removed  # idempotent answers expire by themselves

    async def append_logs(
        self, job_id: str, entries: list[LogEntry], idempotency_key: str | None = None
    ) -> list[LogLine]:
        keys = [self.key("job", job_id), self.key("logs", job_id), self.key("loghead", job_id)]
        keys.append(self.key("idem", idempotency_key) if idempotency_key else "")
        args: list[Any] = [job_id, self.logs.lines, self.logs.bytes, int(IDEMPOTENCY_TTL)]
        args.append(time.time() + IDEMPOTENCY_TTL)
        for entry in entries:
            args += [_dumps(entry)[1:], text_size(entry["text"])]
        async with _reachable():
            answer, acknowledged = await self._replicated(self._append_logs, keys, args)
        if answer[0] != 1:
            raise no_job(job_id)
        lines = numbered(entries, answer[1] - 1)
        if acknowledged < self.replicas:  # committed, but a failover may lose it
            note = f"the lines reached {acknowledged} of {self.replicas} replicas in time"
            raise NotReplicated(lines, note)
        return lines

    async def logs_after(self, job_id: str, after: int, limit: int) -> tuple[list[LogLine], int]:
        async with _reachable(), self.redis.pipeline(transaction=True) as pipe:
            if limit:
                pipe.zrangebyscore(self.key("logs", job_id), f"({after}", "+inf", 0, limit)
            pipe.hget(self.key("loghead", job_id), "head")
            *raws, head = await pipe.execute()
        lines = [cast(LogLine, json.loads(raw)) for raw in (raws[0] if raws else [])]
        return lines, int(head or 0)

    # -- webhook outbox, shared by every node ------------------------------------------

    def _lane_keys(self, hook: str, job_id: str) -> list[str]:
        """KEYS of DELIVERED and FAILED: due, owner, failures, stats, the lane."""
        return [
            self.key("wh", hook, "due"),
            self.key("wh", hook, "owner"),
            self.key("wh", hook, "failures"),
            self.key("wh", hook, "stats"),
            self.key("wh", hook, "lane", job_id),
        ]

    async def outbox_claim(self, hook: str, limit: int, lease: float) -> list[str]:
        keys = [self.key("wh", hook, "due"), self.key("wh", hook, "owner")]
        async with _reachable():
            found = await self._claim(keys=keys, args=[self.node, limit, int(lease * 1000)])
        return list(found)

    async def outbox_head(self, hook: str, job_id: str) -> OutboxEntry | None:
        async with _reachable(), self.redis.pipeline(transaction=False) as pipe:
            pipe.lindex(self.key("wh", hook, "lane", job_id), 0)
            pipe.hget(self.key("wh", hook, "failures"), job_id)
            raw, failures = await pipe.execute()
        if raw is None:
            return None
        created, event_id, body = raw.split(" ", 2)
        return OutboxEntry(raw, event_id, body, float(created), int(failures or 0))

    async def outbox_delivered(
        self, hook: str, job_id: str, entry: OutboxEntry, lease: float
    ) -> bool:
        args = [job_id, self.node, entry.ref, int(lease * 1000)]
        async with _reachable():
            return bool(await self._delivered(keys=self._lane_keys(hook, job_id), args=args))

    async def outbox_failed(
        self,
        hook: str,
        job_id: str,
        entry: OutboxEntry,
        delay: float,
        error: str,
        dead_before: float,
    ) -> int:
        args = [job_id, self.node, entry.ref, int(delay * 1000), error, repr(dead_before)]
        async with _reachable():
            dead = int(await self._failed(keys=self._lane_keys(hook, job_id), args=args))
        return max(dead, 0)

    async def outbox_release(self, hook: str, job_id: str) -> None:
        keys = self._lane_keys(hook, job_id)
        async with _reachable():
            await self._release(keys=[*keys[:3], keys[4]], args=[job_id, self.node])

    async def outbox_stats(self, hook: str) -> WebhookStats:
        async with _reachable():
            found = await self.redis.hgetall(self.key("wh", hook, "stats"))
        stats = no_webhook_stats()
        for name in ("pending", "delivered", "dead"):
            stats[name] = int(found.get(name, 0))  # type: ignore[literal-required]
        for name in ("last_success", "last_failure"):
            stats[name] = float(found[name]) if name in found else None  # type: ignore[literal-required]
        stats["last_error"] = found.get("last_error")
        return stats

    # -- announcements and chat ---------------------------------------------

    async def add_announcement(self, announcement: Announcement) -> None:
        async with _reachable(), self.redis.pipeline(transaction=True) as pipe:
            pipe.lpush(self.key("announcements"), _dumps(announcement))
            pipe.ltrim(self.key("announcements"), 0, KEEP_ANNOUNCEMENTS - 1)
            await pipe.execute()

    async def recent_announcements(
        self, limit: int, rooms: Iterable[str] | None = None
    ) -> list[Announcement]:
        wanted = None if rooms is None else set(rooms)
        async with _reachable():
            raws = await self.redis.lrange(self.key("announcements"), 0, -1)
        found = (cast(Announcement, json.loads(raw)) for raw in raws)
        kept = [a for a in found if wanted is None or a["room"] is None or a["room"] in wanted]
        return kept[:limit]

    async def add_message(self, message: ChatMessage) -> None:
        room = message["room"]
        keys = [self.key("rooms"), self.key("messages", room)]
        async with _reachable():
            await self._post(keys=keys, args=[room, _dumps(message), CHAT_HISTORY, self.rooms.ttl])

    async def recent_messages(self, room: str) -> list[ChatMessage]:
        async with _reachable():
            raws = await self.redis.lrange(self.key("messages", room), 0, -1)
        return [json.loads(raw) for raw in raws]

    # -- idempotency --------------------------------------------------------

    async def get_response(self, key: str, now: float) -> StoredResponse | None:
        async with _reachable():
            raw = await self.redis.get(self.key("idem", key))
        found = json.loads(raw) if raw else None
        return cast(StoredResponse, found["response"]) if found and found["expires"] > now else None

    async def put_response(self, key: str, response: StoredResponse, expires: float) -> None:
        async with _reachable():
            await self._remember(self.redis, key, response, expires)

    async def revoke(self, revocation: Revocation) -> None:
        async with _reachable():
            key = revocation_key(revocation)
            await self.redis.hset(self.key("revoked"), key, _dumps(revocation))

    async def revocations(self, now: float) -> list[Revocation]:
        async with _reachable():
            found = await self.redis.hgetall(self.key("revoked"))
            entries = {key: cast(Revocation, json.loads(raw)) for key, raw in found.items()}
            old = [key for key, entry in entries.items() if entry["until"] <= now]
            if old:
                await self.redis.hdel(self.key("revoked"), *old)
        return [entry for key, entry in entries.items() if key not in old]

    def _remember(self, client: Any, key: str, response: StoredResponse, expires: float) -> Any:
        """SET with the expiry kept in the value too; Redis forgets it a little later."""
        body = _dumps({"expires": expires, "response": response})
        return client.set(self.key("idem", key), body, ex=max(1, int(expires - time.time()) + 1))

    # -- presence, shared by every process ---------------------------------------
    # Each member record names its node; a node that stops beating is forgotten.

    def _room_keys(self, room: str) -> list[str]:
        return [self.key("rooms"), self.key("members", room), self.key("messages", room)]

    async def add_member(self, room: str, conn: str, member: Member) -> None:
        limits = self.rooms
        field = f"{self.node}:{conn}"
        async with _reachable():
            refused = await self._join(
                keys=self._room_keys(room),
                args=[room, field, _dumps(member), limits.max_rooms, limits.max_members],
            )
        if refused == 1:
            raise too_many_rooms(limits.max_rooms)
        if refused == 2:
            raise room_full(room, limits.max_members)

    async def remove_member(self, room: str, conn: str) -> None:
        async with _reachable():
            await self._remove(room, [f"{self.node}:{conn}"])

    async def _remove(self, room: str, fields: list[str]) -> None:
        """Drop presence records; the last one out starts the room's expiry."""
        await self._leave(keys=self._room_keys(room), args=[room, self.rooms.ttl, *fields])

    async def members(self, room: str) -> list[Member]:
        async with _reachable():
            records = await self.redis.hgetall(self.key("members", room))
            dead = set(await self._dead(records))
            if dead:
                await self._remove(room, sorted(dead))
        unique: dict[str, Member] = {}
        for field, raw in records.items():
            if field not in dead:
                member = cast(Member, json.loads(raw))
                unique[member["id"]] = member
        return list(unique.values())

    async def _dead(self, fields: Iterable[str]) -> list[str]:
        """The presence records, among `fields`, of nodes that stopped beating."""
        fields = list(fields)
        if not fields:
            return []
        nodes = sorted({field.split(":", 1)[0] for field in fields} - {self.node})
        async with self.redis.pipeline(transaction=False) as pipe:
            for node in nodes:
                pipe.exists(self.key("node", node))
            found = await pipe.execute()
        alive = {self.node, *(node for node, up in zip(nodes, found, strict=True) if up)}
        return [field for field in fields if field.split(":", 1)[0] not in alive]

    async def purge_rooms(self, emptied_before: float) -> int:
        """Empty the rooms whose members are all on dead nodes, then drop expired rooms."""
        async with _reachable():
            occupied = await self.redis.zrangebyscore(self.key("rooms"), "+inf", "+inf")
            for start in range(0, len(occupied), SWEEP_BATCH):
                batch = occupied[start : start + SWEEP_BATCH]
                async with self.redis.pipeline(transaction=False) as pipe:
                    for room in batch:
                        pipe.hkeys(self.key("members", room))
                    fields = await pipe.execute()
                dead = set(await self._dead(f for room_fields in fields for f in room_fields))
                for room, room_fields in zip(batch, fields, strict=True):
                    # A room in use without members (its hash evicted, say) expires too.
                    gone = [f for f in room_fields if f in dead]
                    if gone or not room_fields:
                        await self._remove(room, gone or [""])
            return int(await self._expire(keys=[self.key("rooms")]))

    async def chat_usage(self) -> ChatUsage:
        async with _reachable():
            seconds, micros = await self.redis.time()
            now = seconds + micros / 1_000_000
            names = set(await self.redis.zrangebyscore(self.key("rooms"), f"({now}", "+inf"))
            counts = {"messages": 0, "members": 0}
            for kind, size in (("messages", self.redis.llen), ("members", self.redis.hlen)):
                start = self.key(kind, "")
                async for key in self.redis.scan_iter(match=glob_escape(start) + "*", count=1000):
                    names.add(key.removeprefix(start))
                    counts[kind] += await size(key)
        return {"rooms": len(names), "messages": counts["messages"], "members": counts["members"]}

    async def node_alive(self, node: str) -> bool:
        if node == self.node:
            return True
        async with _reachable():
            return bool(await self.redis.exists(self.key("node", node)))

    async def _beat(self) -> None:
        while True:
            # While Redis is down readiness says so, and the next beat tries again.
            with contextlib.suppress(RedisError, OSError):
                await self.redis.set(self.key("node", self.node), "1", ex=NODE_TTL)
            await asyncio.sleep(HEARTBEAT)
