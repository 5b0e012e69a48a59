"""Task-queue bridges: real Celery, RQ, arq and Dramatiq workers on a redis-server this
test starts, reporting to a real Switchboard process, watched by a python-socketio client.

Each queue runs the same four jobs (tests/bridges/) and the subscriber must see exactly
the expected (status, progress) events of each, in order: 0 -> 100 then succeeded, a
failure, a cancellation and a retry. Then Switchboard goes down (killed, its port held by
a listener that never answers) while a job runs: the job's reports must not hold it up,
and every update must arrive once Switchboard is back on the same port and SQLite file.

Cancel: a client whose token grants `cancel` emits `cancel` on /job while a task runs.
The bridge learns it from the answer to the task's next report, or (a task that does not
report) by asking Switchboard, stops the task the queue's way, and the subscriber sees
exactly the progress, the cancel request, then `cancelled`; the worker goes on.

Logs: with `capture_logs` on, what a task logs reaches the subscriber as `job:log` lines,
exactly those records and in order, between `running` and the job's end; with it off, none.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import socketio
from switchboard_client import AsyncAdmin, Cancelled, bridge

from .conftest import ADMIN, ROOT, SECRET, RedisProcess, ServerProcess, StartServer, free_port

QUEUES = ["celery", "rq", "arq", "dramatiq"]
TERMINAL = {"succeeded", "failed", "cancelled"}
WAIT = 45.0  # seconds for anything a worker does, start-up included

Pair = tuple[str, float | None]
Triple = tuple[str, float | None, bool]  # (status, progress, cancel requested)

# The events each job must produce, as (status, progress), in this order.
EXPECTED: dict[str, list[Pair]] = {
    "progress": [
        ("running", None),
        ("running", 0),
        ("running", 25),
        ("running", 50),
        ("running", 75),
        ("running", 100),
        ("succeeded", 100),
    ],
    "fail": [("running", None), ("running", 10), ("failed", 10)],
    "slow": [("running", None), ("running", 5), ("cancelled", 5)],
    "flaky": [
        ("running", None),  # first try
        ("running", 10),
        ("running", 10),  # "retrying: ..."
        ("running", 10),  # second try
        ("running", 50),
        ("succeeded", 100),
    ],
    "offline": [
        ("running", None),
        ("running", 10),
        ("running", 20),
        ("running", 40),
        ("running", 60),
        ("running", 80),
        ("running", 100),
        ("succeeded", 100),
    ],
}
# The `logs` task's records: one a line of 10,005 bytes, clipped to 8 KiB in the middle of an é.
TEXTS = ("first line", "non-ASCII: 漢字 ü ✓ 🚀", "long " + "é" * 5000)
CAPTURED = [
    ("log", "INFO bridges.tasks: first line"),
    ("log", "WARNING bridges.tasks: non-ASCII: 漢字 ü ✓ 🚀"),
    ("log", "ERROR bridges.tasks: long " + "é" * 4081 + "…"),  # 8,191 bytes of UTF-8
]
CANCELLED_MESSAGE = {
    "celery": "terminated (SIGTERM)",
    "rq": "stopped",
    "arq": "aborted",
    "dramatiq": "skipped",
}


# -- the subscriber --------------------------------------------------------------------


@dataclass
class Subscriber:
    """A python-socketio client on /job that records every event of the jobs it watches,
    in arrival order, and resubscribes from the last seq after a reconnect. For a job
    watched with `logs`, also its lines: `timeline` has ("status", status) for each event
    and (stream, text) for each line as they arrived, `batches` the texts of each `job:log`
    (these are not resumed after a reconnect)."""

    url: str
    auth: dict[str, str] | None = None
    arrived: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    timeline: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    batches: dict[str, list[list[str]]] = field(default_factory=dict)
    sio: socketio.AsyncClient = field(init=False)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    connects: int = 0

    def __post_init__(self) -> None:
        self.sio = socketio.AsyncClient(
            reconnection=True,
            reconnection_delay=0.2,
            reconnection_delay_max=1.0,
            handle_sigint=False,
        )
        self.sio.on("job:update", self._live, namespace="/job")
        self.sio.on("job:log", self._lines, namespace="/job")
        self.sio.on("connect", self._connected, namespace="/job")

    async def start(self) -> None:
        await self.sio.connect(
            self.url, namespaces=["/job"], transports=["websocket"], auth=self.auth, wait_timeout=10
        )

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await self.sio.disconnect()

    def last(self, job_id: str) -> int:
        return max((event["seq"] for event in self.arrived.get(job_id, [])), default=0)

    async def watch(self, job_id: str, logs: bool = False) -> None:
        self.arrived.setdefault(job_id, [])
        request: dict[str, Any] = {"job_id": job_id, "since": self.last(job_id)}
        if logs:
            self.timeline[job_id], self.batches[job_id] = [], []
            request["log_since"] = 0
        ack = await self.sio.call("subscribe", request, namespace="/job", timeout=10)
        assert ack["ok"], ack
        if ack.get("logs"):
            await self._lines({"job_id": job_id, "lines": ack["logs"]})
        for event in ack["missed"]:
            self.arrived[job_id].append(event)
        job = ack["job"]
        if job is not None and job["seq"] > self.last(job_id):
            self.arrived[job_id].append(job)

    async def cancel(self, job_id: str) -> dict[str, Any]:
        """Ask to cancel a job, as a browser does: `cancel` on /job."""
        ack = await self.sio.call("cancel", {"job_id": job_id}, namespace="/job", timeout=10)
        assert ack["ok"], ack
        return ack["job"]  # type: ignore[no-any-return]

    async def _live(self, event: dict[str, Any]) -> None:
        if event["id"] in self.arrived:
            self.arrived[event["id"]].append(event)
        if event["id"] in self.timeline:
            self.timeline[event["id"]].append(("status", event["status"]))

    async def _lines(self, batch: dict[str, Any]) -> None:
        if batch["job_id"] in self.timeline:
            lines = batch["lines"]
            self.timeline[batch["job_id"]] += [(line["stream"], line["text"]) for line in lines]
            self.batches[batch["job_id"]].append([line["text"] for line in lines])

    async def _connected(self) -> None:
        self.connects += 1
        if self.connects > 1:  # a reconnect: the server forgot our rooms
            for job_id in list(self.arrived):
                task = asyncio.create_task(self.watch(job_id))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)

    def events(self, job_id: str) -> list[dict[str, Any]]:
        """Once each, by seq (a resubscribe may repeat what arrived live meanwhile)."""
        unique = {event["seq"]: event for event in self.arrived.get(job_id, [])}
        return [unique[seq] for seq in sorted(unique)]

    async def wait_for(
        self,
        job_id: str,
        done: Callable[[list[dict[str, Any]]], bool],
        what: str,
        logs: Callable[[], str] = lambda: "",
        timeout: float = WAIT,
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while not done(self.events(job_id)):
            if time.monotonic() > deadline:
                got = pairs(self.events(job_id))
                raise AssertionError(f"{job_id}: no {what} within {timeout}s; got {got}\n{logs()}")
            await asyncio.sleep(0.05)
        return self.events(job_id)

    async def wait_finished(self, job_id: str, logs: Callable[[], str]) -> list[dict[str, Any]]:
        return await self.wait_for(
            job_id, lambda events: any(e["status"] in TERMINAL for e in events), "end", logs
        )


def pairs(events: list[dict[str, Any]]) -> list[Pair]:
    return [(event["status"], event["progress"]) for event in events]


def has(pair: Pair) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda events: pair in pairs(events)


def triples(events: list[dict[str, Any]]) -> list[Triple]:
    return [(e["status"], e["progress"], bool(e.get("cancel_requested"))) for e in events]


# -- worker processes ----------------------------------------------------------------------


def started_at(pid: int) -> str | None:
    """The process's start time from /proc: with the pid, it names one process for good."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def descendants(pid: int) -> list[tuple[int, str | None]]:
    """Every process below `pid` (a forked child may leave our process group), from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        frontier = [child for child, parent in parents.items() if parent in frontier]
        found += frontier
    return [(child, started_at(child)) for child in found]


@dataclass
class Worker:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def logs(self) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"--- {self.name} worker log (last 6000 chars) ---\n{text[-6000:]}"

    def stop(self) -> None:
        """SIGTERM (a warm shutdown), then SIGKILL by PID for every process of ours left."""
        children = descendants(self.proc.pid)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=15)
        if self.proc.poll() is None:
            children += descendants(self.proc.pid)
            self.proc.kill()
            self.proc.wait(timeout=10)
        for pid, start in children:
            if start is not None and started_at(pid) == start:  # still that same process
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    workers: list[Worker] = []

    def start(name: str, argv: list[str], switchboard: str, broker: str, **extra: str) -> Worker:
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "SWITCHBOARD_URL": switchboard,
            "SWITCHBOARD_ADMIN_TOKEN": ADMIN,
            "SWITCHBOARD_EXIT_TIMEOUT": "2",
            "BRIDGE_REDIS_URL": broker,
            **extra,
        }
        log = tmp_path / f"{name}-worker-{len(workers)}.log"
        with log.open("wb") as sink:
            proc = subprocess.Popen(
                [sys.executable, *argv],
                cwd=ROOT,
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        workers.append(Worker(name, proc, log))
        return workers[-1]

    yield start
    for worker in workers:
        worker.stop()


# -- one driver per queue: the worker's command line, enqueue, cancel -----------------------


class Driver:
    name: str
    argv: list[str]

    def __init__(self, broker: str) -> None:
        self.broker = broker

    async def enqueue(self, kind: str, job_id: str, *args: Any) -> None:
        raise NotImplementedError

    async def cancel(self, job_id: str) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        pass


class CeleryDriver(Driver):
    name = "celery"
    # prefork: solo and threads cannot terminate a running task
    argv = ["-m", "celery", "-A", "tests.bridges.celery_app", "worker", "-P", "prefork", "-c", "1",
            "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "INFO",
            "-n", f"bridges-{uuid.uuid4().hex[:6]}@%h"]  # fmt: skip

    def __init__(self, broker: str) -> None:
        super().__init__(broker)
        from celery import Celery

        self.app = Celery("bridges-client", broker=broker, backend=broker)

    async def enqueue(self, kind: str, job_id: str, *args: Any) -> None:
        name = f"tests.bridges.celery_app.{kind}"
        await asyncio.to_thread(self.app.send_task, name, args=args, task_id=job_id)

    async def cancel(self, job_id: str) -> None:
        revoke = self.app.control.revoke
        await asyncio.to_thread(revoke, job_id, terminate=True, signal="SIGTERM")

    async def close(self) -> None:
        self.app.close()


class CelerySoloDriver(CeleryDriver):
    """The solo pool cannot terminate a task: a cancel stops it at its next report()."""

    argv = [*CeleryDriver.argv[:5], "-P", "solo", *CeleryDriver.argv[9:]]


class RqDriver(Driver):
    name = "rq"
    argv = ["-m", "rq.cli", "worker", "-c", "tests.bridges.rq_settings",
            "-w", "switchboard_client.rq.SwitchboardWorker"]  # fmt: skip

    def __init__(self, broker: str) -> None:
        super().__init__(broker)
        from rq import Queue

        self.redis = redis.Redis.from_url(broker)
        self.queue = Queue("default", connection=self.redis)

    async def enqueue(self, kind: str, job_id: str, *args: Any) -> None:
        from rq import Retry

        retry = Retry(max=1) if kind == "flaky" else None
        function = f"tests.bridges.rq_jobs.{kind}"
        await asyncio.to_thread(self.queue.enqueue, function, *args, job_id=job_id, retry=retry)

    async def cancel(self, job_id: str) -> None:
        from rq.command import send_stop_job_command

        await asyncio.to_thread(send_stop_job_command, self.redis, job_id)

    async def close(self) -> None:
        self.redis.close()


class ArqDriver(Driver):
    name = "arq"
    argv = ["-m", "arq", "tests.bridges.arq_app.WorkerSettings"]
    pool: Any = None

    async def _pool(self) -> Any:
        from arq import create_pool
        from arq.connections import RedisSettings

        if self.pool is None:
            self.pool = await create_pool(RedisSettings.from_dsn(self.broker))
        return self.pool

    async def enqueue(self, kind: str, job_id: str, *args: Any) -> None:
        job = await (await self._pool()).enqueue_job(kind, *args, _job_id=job_id)
        assert job is not None, f"arq refused job {job_id}"

    async def cancel(self, job_id: str) -> None:
        from arq.jobs import Job

        assert await Job(job_id, await self._pool()).abort(timeout=20, poll_delay=0.1)

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.aclose()


class DramatiqDriver(Driver):
    name = "dramatiq"
    argv = ["-m", "dramatiq", "tests.bridges.dramatiq_app", "-p", "1", "-t", "2"]

    def __init__(self, broker: str) -> None:
        super().__init__(broker)
        from dramatiq.brokers.redis import RedisBroker

        self.client = RedisBroker(url=broker)
        self.client.declare_queue("default")

    async def enqueue(self, kind: str, job_id: str, *args: Any) -> None:
        from dramatiq import Message

        options: dict[str, Any] = {}
        if kind == "slow":
            # Dramatiq cannot cancel a running message; what it has is skipping one, here
            # through AgeLimit: a message older than its max_age is skipped, not run.
            kind, options = "skipped", {"max_age": 1}
        message = Message(
            queue_name="default",
            actor_name=kind,
            args=args,
            kwargs={},
            options=options,
            message_id=job_id,
        )
        await asyncio.to_thread(self.client.enqueue, message)

    async def close(self) -> None:
        self.client.close()


DRIVERS: dict[str, type[Driver]] = {
    "celery": CeleryDriver,
    "celery-solo": CelerySoloDriver,
    "rq": RqDriver,
    "arq": ArqDriver,
    "dramatiq": DramatiqDriver,
}


@pytest.fixture
async def drivers() -> Any:
    made: list[Driver] = []

    def make(queue: str, broker: str) -> Driver:
        made.append(DRIVERS[queue](broker))
        return made[-1]

    yield make
    for driver in made:
        await driver.close()


@pytest.fixture
async def subscribers() -> Any:
    made: list[Subscriber] = []

    async def make(url: str, auth: dict[str, str] | None = None) -> Subscriber:
        made.append(Subscriber(url, auth))
        await made[-1].start()
        return made[-1]

    yield make
    for subscriber in made:
        await subscriber.close()


def job_ids(queue: str, *kinds: str) -> dict[str, str]:
    return {kind: f"{queue}-{kind}-{uuid.uuid4().hex[:10]}" for kind in kinds}


# -- the tests -------------------------------------------------------------------------------


@pytest.mark.parametrize("queue", QUEUES)
async def test_every_outcome_reaches_a_subscriber_in_order(
    queue: str,
    start_redis: Callable[[], RedisProcess],
    spawn_server: Callable[..., ServerProcess],
    start_worker: Callable[..., Worker],
    drivers: Callable[[str, str], Driver],
    subscribers: Callable[[str], Any],
) -> None:
    broker = start_redis()
    server = spawn_server("--store", "memory://")
    driver = drivers(queue, broker.url)
    worker = start_worker(queue, driver.argv, server.url, broker.url)
    subscriber: Subscriber = await subscribers(server.url)

    ids = job_ids(queue, "progress", "fail", "flaky", "slow")
    for job_id in ids.values():
        await subscriber.watch(job_id)
    for kind in ("progress", "fail", "flaky"):
        await driver.enqueue(kind, ids[kind])
    for kind in ("progress", "fail", "flaky"):
        await subscriber.wait_finished(ids[kind], worker.logs)

    # Cancel a running job (Dramatiq: skip a queued one, see DramatiqDriver).
    await driver.enqueue("slow", ids["slow"])
    if queue != "dramatiq":
        await subscriber.wait_for(ids["slow"], has(("running", 5)), "progress 5", worker.logs)
        await driver.cancel(ids["slow"])
    await subscriber.wait_finished(ids["slow"], worker.logs)
    await asyncio.sleep(0.5)  # nothing more may arrive after the end

    for kind, job_id in ids.items():
        arrived = subscriber.arrived[job_id]
        expected = EXPECTED[kind]
        if queue == "dramatiq" and kind == "slow":
            expected = [("cancelled", None)]
        assert pairs(arrived) == expected, f"{kind}: {pairs(arrived)}\n{worker.logs()}"
        # exactly once each, in order: seq 1, 2, 3, ... as they arrived
        assert [e["seq"] for e in arrived] == list(range(1, len(expected) + 1)), kind

    progress, fail = subscriber.arrived[ids["progress"]], subscriber.arrived[ids["fail"]]
    flaky, slow = subscriber.arrived[ids["flaky"]], subscriber.arrived[ids["slow"]]
    assert [e["message"] for e in progress[1:6]] == ["0%", "25%", "50%", "75%", "100%"]
    assert progress[-1]["data"] == {"result": {"steps": 5}}
    assert fail[-1]["message"] == "ValueError: boom"
    assert fail[-1]["data"] == {"error": {"type": "ValueError", "message": "boom"}}
    assert flaky[2]["message"].startswith("retrying"), flaky[2]
    assert flaky[3]["message"].startswith("started"), flaky[3]
    assert flaky[-1]["data"] == {"result": "ok"}
    assert slow[-1]["message"] == CANCELLED_MESSAGE[queue]


@pytest.mark.parametrize("queue", QUEUES)
async def test_a_task_s_log_records_arrive_as_lines_before_its_end(
    queue: str,
    start_redis: Callable[[], RedisProcess],
    spawn_server: Callable[..., ServerProcess],
    start_worker: Callable[..., Worker],
    drivers: Callable[[str, str], Driver],
    subscribers: Callable[[str], Any],
) -> None:
    """The same task on two workers, each on a redis-server of its own: one captures."""
    server = spawn_server("--store", "memory://")
    subscriber: Subscriber = await subscribers(server.url)
    ids = job_ids(queue, "on", "off")
    workers: dict[str, Worker] = {}
    for capture, job in ids.items():
        broker = start_redis()
        driver = drivers(queue, broker.url)
        flag = "1" if capture == "on" else "0"
        workers[capture] = start_worker(
            queue, driver.argv, server.url, broker.url, BRIDGE_CAPTURE_LOGS=flag
        )
        await subscriber.watch(job, logs=True)
        await driver.enqueue("logs", job, *TEXTS)
    for capture, job in ids.items():
        await subscriber.wait_finished(job, workers[capture].logs)

    on, off = (subscriber.timeline[ids[capture]] for capture in ("on", "off"))
    assert on == [("status", "running"), *CAPTURED, ("status", "succeeded")], workers["on"].logs()
    assert off == [("status", "running"), ("status", "succeeded")], workers["off"].logs()


async def test_concurrent_arq_jobs_keep_their_own_lines(
    start_redis: Callable[[], RedisProcess],
    spawn_server: Callable[..., ServerProcess],
    start_worker: Callable[..., Worker],
    drivers: Callable[[str, str], Driver],
    subscribers: Callable[[str], Any],
) -> None:
    """Two jobs log in turns in one arq worker: each asyncio task's records are its own."""
    broker = start_redis()
    server = spawn_server("--store", "memory://")
    driver = drivers("arq", broker.url)
    worker = start_worker("arq", driver.argv, server.url, broker.url, BRIDGE_CAPTURE_LOGS="1")
    subscriber: Subscriber = await subscribers(server.url)
    ids = job_ids("arq", "a", "b")
    key, count = uuid.uuid4().hex, 20
    for job in ids.values():
        await subscriber.watch(job, logs=True)
        await driver.enqueue("chatty", job, key, count)
    for job in ids.values():
        await subscriber.wait_finished(job, worker.logs)
    for job in ids.values():
        lines = [("log", f"INFO bridges.tasks: {job}: line {n}") for n in range(count)]
        expected = [("status", "running"), *lines, ("status", "succeeded")]
        assert subscriber.timeline[job] == expected, worker.logs()


class Blackhole:
    """Holds a port: accepts connections and never answers, like a hung Switchboard."""

    def __init__(self, port: int) -> None:
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen(64)
        self.accepted: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                self.accepted.append(self.listener.accept()[0])

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.thread.join(timeout=5)
        for connection in self.accepted:
            connection.close()


async def wait_key(connection: redis.Redis, key: str, logs: Callable[[], str]) -> bytes:
    deadline = time.monotonic() + WAIT
    while (value := connection.get(key)) is None:
        assert time.monotonic() < deadline, f"{key} was never set\n{logs()}"
        await asyncio.sleep(0.02)
    return value  # type: ignore[no-any-return]


@pytest.mark.parametrize("queue", QUEUES)
async def test_switchboard_down_neither_blocks_a_task_nor_loses_an_update(
    queue: str,
    tmp_path: Path,
    start_redis: Callable[[], RedisProcess],
    spawn_server: Callable[..., ServerProcess],
    start_worker: Callable[..., Worker],
    drivers: Callable[[str, str], Driver],
    subscribers: Callable[[str], Any],
) -> None:
    broker = start_redis()
    port, store = free_port(), f"sqlite:///{tmp_path / 'switchboard.db'}"
    server = spawn_server("--store", store, port=port)
    driver = drivers(queue, broker.url)
    worker = start_worker(queue, driver.argv, server.url, broker.url)
    subscriber: Subscriber = await subscribers(server.url)
    keys = redis.Redis.from_url(broker.url)

    job = job_ids(queue, "offline")["offline"]
    await subscriber.watch(job)
    await driver.enqueue("offline", job, job)
    await subscriber.wait_for(job, has(("running", 10)), "progress 10", worker.logs)

    server.kill()  # SIGKILL: what it committed is in the SQLite file
    hole = Blackhole(port)  # and now it accepts connections but never answers
    try:
        go = time.monotonic()
        keys.set(f"go:{job}", 1)
        took = float(await wait_key(keys, f"took:{job}", worker.logs))
        assert took < 1.0, f"five reports took {took:.2f}s with Switchboard down"
        # The worker is free as soon as the job is: the next one runs at once.
        await driver.enqueue("marker", f"marker-{job}", job)
        await wait_key(keys, f"marker:{job}", worker.logs)
        assert time.monotonic() - go < 10.0, worker.logs()
        await asyncio.sleep(1.0)  # the sender is stuck on the silent port meanwhile
    finally:
        hole.close()

    spawn_server("--store", store, port=port)  # back, on the same port and file
    events = await subscriber.wait_finished(job, worker.logs)
    await asyncio.sleep(0.5)
    events = subscriber.events(job)
    assert pairs(events) == EXPECTED["offline"], f"{pairs(events)}\n{worker.logs()}"
    assert [e["seq"] for e in events] == list(range(1, len(EXPECTED["offline"]) + 1))
    assert events[-1]["data"]["result"]["took"] == pytest.approx(took)
    keys.close()


# -- cancel ------------------------------------------------------------------------------------

CANCEL_QUEUES = ["celery", "rq", "arq"]  # the ones that can stop a running task
STOPPED_MESSAGE = {
    "celery": {"terminated (SIGTERM)"},  # revoke(terminate=True); the worker reports it
    "celery-solo": {"cancelled"},  # report() raised Cancelled in the task
    "rq": {"stopped"},  # send_stop_job_command
    "arq": {"aborted", "cancelled"},  # Job.abort(), or the task's report() raised first
    "dramatiq": {"cancelled"},  # report() raised Cancelled in the actor
}


async def mint(url: str, sub: str, **grants: list[str]) -> dict[str, str]:
    """A client token, as `POST /api/tokens` makes it: socket.io `auth` for it."""
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        answer = await http.post(
            "/api/tokens", json={"sub": sub, **grants}, headers={"Authorization": f"Bearer {ADMIN}"}
        )
    assert answer.status_code == 201, answer.text
    return {"token": answer.json()["token"]}


@dataclass
class Cancelling:
    """A worker, a subscriber that may only watch, and a client that may also cancel."""

    queue: str
    driver: Driver
    worker: Worker
    watcher: Subscriber
    canceller: Subscriber

    async def next_task_runs(self) -> None:
        """The worker process is still there and takes the next task at once."""
        job = job_ids(self.queue, "progress")["progress"]
        await self.watcher.watch(job)
        await self.driver.enqueue("progress", job)
        events = await self.watcher.wait_finished(job, self.worker.logs)
        assert pairs(events) == EXPECTED["progress"], self.worker.logs()
        assert self.worker.proc.poll() is None


@pytest.fixture
async def cancelling(
    request: pytest.FixtureRequest,
    start_redis: Callable[[], RedisProcess],
    spawn_server: Callable[..., ServerProcess],
    start_worker: Callable[..., Worker],
    drivers: Callable[[str, str], Driver],
    subscribers: Callable[..., Any],
) -> Cancelling:
    queue: str = request.param
    broker = start_redis()
    server = spawn_server("--store", "memory://", "--client-secret", SECRET)
    driver = drivers(queue, broker.url)
    worker = start_worker(queue, driver.argv, server.url, broker.url)
    watcher = await subscribers(server.url, await mint(server.url, "watcher", jobs=["*"]))
    canceller = await subscribers(
        server.url, await mint(server.url, "ann", jobs=["*"], cancel=["*"])
    )
    return Cancelling(queue, driver, worker, watcher, canceller)


async def settled(subscriber: Subscriber, job_id: str, logs: Callable[[], str]) -> list[Any]:
    """The job's events once it ended, and a second after: nothing may follow the end."""
    await subscriber.wait_finished(job_id, logs)
    await asyncio.sleep(1.0)
    events = subscriber.events(job_id)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), pairs(events)
    return events


@pytest.mark.parametrize("cancelling", [*CANCEL_QUEUES, "celery-solo", "dramatiq"], indirect=True)
async def test_a_cancel_stops_a_reporting_task_at_its_next_report(
    cancelling: Cancelling,
) -> None:
    """The bridge learns the cancel from the answer to the task's next report."""
    queue, worker, watcher = cancelling.queue, cancelling.worker, cancelling.watcher
    job = job_ids(queue, "steps")["steps"]
    await watcher.watch(job)
    await cancelling.driver.enqueue("steps", job)
    await watcher.wait_for(job, has(("running", 3)), "progress 3", worker.logs)

    asked_at = time.monotonic()
    asked = await cancelling.canceller.cancel(job)
    assert asked["cancel_requested"]["by"] == "ann" and asked["status"] == "running"
    await watcher.wait_finished(job, worker.logs)
    took = time.monotonic() - asked_at
    assert took < 5.0, f"stopped {took:.1f}s after the cancel\n{worker.logs()}"
    events = await settled(watcher, job, worker.logs)

    got = triples(events)
    first = next(i for i, (_, _, cancel) in enumerate(got) if cancel)
    last = got[first - 1][1]  # the progress when the cancel came in
    assert last is not None and last >= 3, got
    steps = [("running", float(value), False) for value in range(1, int(last) + 1)]
    assert got == [
        ("running", None, False),  # started
        *steps,  # 1%, 2%, ... every 0.25 s
        ("running", last, True),  # the cancel request
        ("running", last + 1, True),  # the report whose answer told the bridge
        ("cancelled", last + 1, True),  # the task stopped before its next report
    ], f"{got}\n{worker.logs()}"
    assert events[-1]["message"] in STOPPED_MESSAGE[queue], events[-1]
    await cancelling.next_task_runs()


@pytest.mark.parametrize("cancelling", CANCEL_QUEUES, indirect=True)
async def test_a_cancel_stops_a_task_that_never_reports(cancelling: Cancelling) -> None:
    """No report to answer: the bridge asks Switchboard about the quiet job (1 s)."""
    queue, worker, watcher = cancelling.queue, cancelling.worker, cancelling.watcher
    job = job_ids(queue, "quiet")["quiet"]
    await watcher.watch(job)
    await cancelling.driver.enqueue("quiet", job)
    await watcher.wait_for(job, has(("running", None)), "start", worker.logs)

    asked = time.monotonic()
    await cancelling.canceller.cancel(job)
    await watcher.wait_finished(job, worker.logs)
    took = time.monotonic() - asked
    assert took < 5.0, f"stopped {took:.1f}s after the cancel\n{worker.logs()}"
    events = await settled(watcher, job, worker.logs)
    assert triples(events) == [
        ("running", None, False),
        ("running", None, True),  # the cancel request; nothing was posted since
        ("cancelled", None, True),
    ], worker.logs()
    assert events[-1]["message"] in STOPPED_MESSAGE[queue] - {"cancelled"}, events[-1]
    await cancelling.next_task_runs()


async def test_the_bridge_learns_a_cancel_from_an_answer_or_by_asking(
    start_server: StartServer,
) -> None:
    """The shared part, alone: watch, learn, stop once, raise, and discard what follows."""
    server = await start_server()
    run = uuid.uuid4().hex[:8]
    loud, quiet = f"loud-{run}", f"quiet-{run}"
    stops: list[str] = []
    answers = bridge.Bridge()  # learns from answers only: never asks
    answers.configure(server.url, ADMIN, poll_interval=0)
    asking = bridge.Bridge()
    asking.configure(server.url, ADMIN, poll_interval=0.2)

    def stop(job: dict[str, Any]) -> None:
        stops.append(job["id"])

    async def until(condition: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 10
        while not condition():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)

    def put(sender: bridge.Bridge, job_id: str, **fields: Any) -> None:
        sender.submit(bridge.Update(job_id, fields))

    try:
        async with AsyncAdmin(server.url, ADMIN) as admin:
            for sender, job_id in ((answers, loud), (asking, quiet)):
                sender.watch(job_id, stop)
                put(sender, job_id, status="running")
                assert await asyncio.to_thread(sender.flush, 10)
                await admin.cancel_job(job_id)

            # From an answer: the next report is sent, and its answer shows the cancel.
            await asyncio.sleep(0.5)
            answers.check(loud)  # nothing heard yet: no raise
            put(answers, loud, progress=10)
            await until(lambda: answers.cancel_requested(loud) is not None)
            with pytest.raises(Cancelled) as raised:
                answers.check(loud)
            assert raised.value.job["cancel_requested"]["by"] == "admin"
            # a queue's result store pickles it (arq), and must get it back
            assert pickle.loads(pickle.dumps(raised.value)).job == raised.value.job
            put(answers, loud, progress=20)  # discarded: the job is being cancelled
            put(answers, loud, status="cancelled", message="stopped")
            put(answers, loud, progress=30)  # discarded: the job ended
            put(answers, loud, status="succeeded")  # so is a second end
            assert await asyncio.to_thread(answers.flush, 10)
            assert answers.stats()["discarded"] == 3 and answers.stats()["polls"] == 0

            # By asking: nothing was sent since, yet it learns within a poll or two.
            await until(lambda: asking.cancel_requested(quiet) is not None)
            with pytest.raises(Cancelled):
                asking.check(quiet)
            assert asking.stats()["polls"] >= 1 and asking.stats()["cancels"] == 1
            put(asking, quiet, status="cancelled")
            assert await asyncio.to_thread(asking.flush, 10)

            await until(lambda: len(stops) == 2)
            assert sorted(stops) == sorted([loud, quiet])  # once each
            history = {
                job: [
                    (e["status"], e["progress"], bool(e.get("cancel_requested")))
                    for e in (await admin.events(job))["events"]
                ]
                for job in (loud, quiet)
            }
        assert history == {
            loud: [
                ("running", None, False),
                ("running", None, True),
                ("running", 10, True),
                ("cancelled", 10, True),
            ],
            quiet: [("running", None, False), ("running", None, True), ("cancelled", None, True)],
        }
        await asyncio.sleep(0.5)
        assert len(stops) == 2  # still: each stop is called once
    finally:
        for sender in (answers, asking):
            await asyncio.to_thread(sender.close, 1)


async def test_a_full_queue_drops_progress_first_and_terminal_last(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The shared queue, alone: bounded, oldest progress-only update dropped first."""
    port = free_port()
    sender = bridge.Bridge()
    sender.configure(f"http://127.0.0.1:{port}", ADMIN, max_queue=3, max_delay=0.2)
    try:
        run = uuid.uuid4().hex[:8]
        a, b, c, d = (f"full-{run}-{name}" for name in "abcd")

        def put(job_id: str, **fields: Any) -> None:
            sender.submit(bridge.Update(job_id, fields))

        put(a, status="running")  # taken by the sender, which cannot reach Switchboard
        deadline = time.monotonic() + 10
        while sender.stats()["failed_attempts"] == 0:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        put(a, progress=10)
        put(a, progress=20)
        put(a, status="succeeded", progress=100)
        put(b, status="running")  # full: a 10 goes
        put(b, progress=50)  # a 20 goes
        put(b, status="failed", message="boom")  # b 50 goes
        put(c, status="succeeded")  # no progress-only left: b running goes
        put(d, status="succeeded")  # only terminal ones left: the oldest, a succeeded, goes
        stats = sender.stats()
        assert stats["dropped"] == 4 and stats["dropped_terminal"] == 1, stats
        assert stats["queued"] == 4  # the one in flight and three queued
        assert "queue full" in caplog.text

        server = await start_server(port=port)
        assert await asyncio.to_thread(sender.flush, 20), sender.stats()
        assert sender.stats()["sent"] == 4
        from switchboard_client import AsyncAdmin

        async with AsyncAdmin(server.url, ADMIN) as admin:
            history = {
                job: [(e["status"], e["progress"]) for e in (await admin.events(job))["events"]]
                for job in (a, b, c, d)
            }
        assert history == {
            a: [("running", None)],
            b: [("failed", None)],
            c: [("succeeded", None)],
            d: [("succeeded", None)],
        }
    finally:
        await asyncio.to_thread(sender.close, 1)


async def test_captured_lines_go_in_order_in_batches_and_only_the_task_s(
    start_server: StartServer, subscribers: Callable[[str], Any]
) -> None:
    """The shared part, alone: the records one thread makes while it captures, and no
    others, clipped, posted a job's consecutive lines at a time between its updates; the
    capture ends with the job's terminal update, and its handler leaves the logger."""
    server = await start_server()
    subscriber: Subscriber = await subscribers(server.url)
    run = uuid.uuid4().hex[:8]
    job, other = f"capture-{run}", f"other-{run}"
    await subscriber.watch(job, logs=True)
    sender = bridge.Bridge()  # all is queued while it cannot reach Switchboard
    sender.configure(f"http://127.0.0.1:{free_port()}", ADMIN, max_delay=0.2)
    tasks = logging.getLogger(f"tasks-{run}")
    tasks.setLevel(logging.DEBUG)
    root = logging.getLogger()
    handlers = list(root.handlers)

    def task() -> None:
        sender.submit(bridge.Update(job, {"status": "running"}))
        sender.capture(job, bridge.CaptureLogs(formatter=logging.Formatter("%(message)s")))
        assert len(root.handlers) == len(handlers) + 1
        tasks.info("one")
        sender.submit(bridge.Update(other, {"status": "running"}))  # not the job's: passed
        tasks.warning("two")
        tasks.debug("below the level")
        logging.getLogger("httpx").warning("the HTTP client's")
        logging.getLogger("switchboard.bridge").warning("the bridge's")
        elsewhere = threading.Thread(target=tasks.warning, args=("another thread's",))
        elsewhere.start()
        elsewhere.join()
        sender.submit(bridge.Update(job, {"progress": 50}))  # the next batch comes after it
        tasks.error("三" * 3000)  # 9,000 bytes
        sender.submit(bridge.Update(job, {"status": "succeeded"}))  # ends the capture
        tasks.warning("after the end")

    try:
        await asyncio.to_thread(task)
        assert root.handlers == handlers
        sender.configure(server.url)  # Switchboard is there now
        assert await asyncio.to_thread(sender.flush, 10), sender.stats()
        await subscriber.wait_finished(job, lambda: str(sender.stats()))
        clipped = "三" * 2729 + "…"  # 8,190 bytes: cut at a character, within 8 KiB
        assert subscriber.batches[job] == [["one", "two"], [clipped]]
        assert subscriber.timeline[job] == [
            ("status", "running"),
            ("log", "one"),
            ("log", "two"),
            ("status", "running"),  # progress 50
            ("log", clipped),
            ("status", "succeeded"),
        ]
        stats = sender.stats()
        assert (stats["sent"], stats["sent_lines"], stats["discarded"]) == (4, 3, 0), stats
    finally:
        await asyncio.to_thread(sender.close, 1)


async def test_a_full_queue_drops_log_lines_before_updates(
    start_server: StartServer,
    subscribers: Callable[[str], Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The oldest line goes first, with the usual warning, which is logged in the task's
    context (inside the capture's own handler) and must not be captured itself."""
    server = await start_server()
    subscriber: Subscriber = await subscribers(server.url)
    job = f"full-lines-{uuid.uuid4().hex[:8]}"
    await subscriber.watch(job, logs=True)
    sender = bridge.Bridge()
    sender.configure(f"http://127.0.0.1:{free_port()}", ADMIN, max_queue=3, max_delay=0.2)

    def task() -> None:
        sender.submit(bridge.Update(job, {"status": "running"}))  # in flight, stuck
        deadline = time.monotonic() + 10
        while sender.stats()["failed_attempts"] == 0:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        sender.capture(job, bridge.CaptureLogs(formatter=logging.Formatter("%(message)s")))
        for n in range(5):  # from the fourth on, each drops the oldest line
            logging.getLogger("tasks").warning("line %d", n)
        sender.submit(bridge.Update(job, {"status": "succeeded"}))  # so does this one

    try:
        await asyncio.to_thread(task)
        stats = sender.stats()
        assert (stats["dropped_lines"], stats["dropped"], stats["queued"]) == (3, 0, 4), stats
        assert "queue full" in caplog.text
        sender.configure(server.url)
        assert await asyncio.to_thread(sender.flush, 10), sender.stats()
        await subscriber.wait_finished(job, lambda: str(sender.stats()))
        assert subscriber.timeline[job] == [
            ("status", "running"),
            ("log", "line 3"),
            ("log", "line 4"),
            ("status", "succeeded"),
        ]
    finally:
        await asyncio.to_thread(sender.close, 1)


def test_the_readme_setups_run_as_written(tmp_path: Path) -> None:
    """Each block of the README's "With your task queue" runs: imports, app, install()."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### With your task queue") :]
    section = section[: section.index("\n### ", 1)]
    blocks = re.findall(r"^```python\n(.*?)^```$", section, re.M | re.S)
    assert len(blocks) == 4
    nowhere = f"redis://127.0.0.1:{free_port()}/0"  # nothing may connect to a broker here
    for n, block in enumerate(blocks):
        script = tmp_path / f"snippet_{n}.py"
        script.write_text(block.replace("redis://127.0.0.1:6379/0", nowhere))
        done = subprocess.run(
            [sys.executable, script.name], cwd=tmp_path, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, f"{block}\n{done.stderr}"
