"""Redis Sentinel: a master, a replica and a Sentinel as real processes on free ports.

The master is SIGKILLed mid-stream; nodes follow the promoted replica, updates are
refused with 503 meanwhile and until a replica acknowledges them again (the old
master, back as a replica), never accepted and lost (--redis-replicas 1, every
replica), and subscribers that stay connected receive every acknowledged update, in
order.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from switchboard_client import AsyncAdmin

from .conftest import ADMIN, ServerProcess, free_port, require_binary, wait_for_port
from .test_cluster import Raw

SERVICE = "switchboard"


@dataclass
class Sentinel:
    master: subprocess.Popen[bytes]
    master_port: int
    replica_port: int
    sentinel_port: int
    start: Callable[..., subprocess.Popen[bytes]]

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel_port}/0/{SERVICE}"

    def revive_old_master(self) -> None:
        """The killed master comes back, empty, as a replica of the promoted one; never to
        be promoted itself (replica-priority 0), or a second failover on a loaded machine
        could pick it before it has synced, and an empty master would be followed."""
        replica_of = ("--replicaof", "127.0.0.1", str(self.current_master()))
        self.start(
            "master-again", self.master_port, "--save", "", "--replica-priority", "0", *replica_of
        )

    def current_master(self) -> int:
        client = redis.Redis(port=self.sentinel_port, socket_timeout=2)
        try:
            _, port = client.sentinel_get_master_addr_by_name(SERVICE)
            return int(port)
        finally:
            client.close()


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[Sentinel]:
    binary = require_binary("redis-server")
    procs: list[subprocess.Popen[bytes]] = []

    def start(name: str, port: int, *args: str) -> subprocess.Popen[bytes]:
        directory = tmp_path / name
        directory.mkdir()
        log = directory / "log"
        log.touch()
        proc = subprocess.Popen(
            [binary, *args, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
             "--logfile", str(log)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )  # fmt: skip
        procs.append(proc)
        wait_for_port(port, proc, log)
        return proc

    master_port, replica_port, sentinel_port = free_port(), free_port(), free_port()
    master = start("master", master_port, "--save", "", "--appendonly", "no")
    start("replica", replica_port, "--save", "", "--replicaof", "127.0.0.1", str(master_port))
    config = tmp_path / "sentinel.conf"
    config.write_text(
        f"sentinel monitor {SERVICE} 127.0.0.1 {master_port} 1\n"
        f"sentinel down-after-milliseconds {SERVICE} 2000\n"
        f"sentinel failover-timeout {SERVICE} 5000\n"
    )
    start("sentinel", sentinel_port, str(config), "--sentinel")
    found = Sentinel(master, master_port, replica_port, sentinel_port, start)
    deadline = time.monotonic() + 15
    while True:  # the replica is in sync and the Sentinel knows it
        info = redis.Redis(port=replica_port).info("replication")
        if info.get("master_link_status") == "up":
            break
        assert time.monotonic() < deadline, info
        time.sleep(0.1)
    yield found
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


async def revive_after_failover(sentinel: Sentinel) -> None:
    deadline = time.monotonic() + 30
    while sentinel.current_master() == sentinel.master_port:
        assert time.monotonic() < deadline, "no failover"
        await asyncio.sleep(0.1)
    await asyncio.to_thread(sentinel.revive_old_master)


async def rejected(node: ServerProcess, code: str) -> float:
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{node.url}/metrics")).text
    found = re.search(rf'switchboard_rejected_total{{code="{code}"}} (\S+)', text)
    return float(found.group(1)) if found else 0.0


async def test_nodes_follow_a_failover_and_lose_nothing(
    spawn_server: Any, sentinel: Sentinel, transport: str
) -> None:
    nodes: list[ServerProcess] = [
        spawn_server("--store", sentinel.url, "--redis-replicas", "1") for _ in range(2)
    ]
    async with AsyncAdmin(nodes[0].url, ADMIN) as admin:
        await admin.create_job("failover", status="running")
    clients = [Raw(node.url, transport) for node in nodes]
    for client in clients:
        await client.subscribe("failover")
    # Each update is retried with its Idempotency-Key until a node acknowledges it.
    admins = [AsyncAdmin(node.url, ADMIN, retries=300, backoff=0.1) for node in nodes]
    acknowledged = [1]
    revived: asyncio.Task[None] | None = None
    try:
        for n in range(60):
            if n == 20:
                sentinel.master.send_signal(signal.SIGKILL)
                revived = asyncio.create_task(revive_after_failover(sentinel))
            answer = await admins[n % 2].update_job("failover", progress=n)
            acknowledged.append(answer["seq"])
        history = await admins[1].events("failover", since=0)
    finally:
        for admin in admins:
            await admin.close()
    assert revived is not None
    await revived  # it saw the failover happen
    refused = sum([await rejected(node, "unavailable") for node in nodes])
    assert refused > 0  # the outage was seen, and answered 503
    assert acknowledged == list(range(1, 62))
    assert [event["seq"] for event in history["events"]] == acknowledged
    results = await asyncio.gather(*(client.until(61) for client in clients))
    for client, seqs in zip(clients, results, strict=True):
        assert seqs == list(range(client.start + 1, 62)), (client.url, seqs)
