#!/usr/bin/env python3
"""Switchboard beside the reference Node socket.io server, measured in the same run.

    python bench/run.py [--clients 1000 5000] [--events 100] [--repeat 3] [--out PATH]

Every figure is taken for both servers, alternately (so noise hits both), and shown with
the Switchboard/Node ratio; the official socket.io-client in one Node process plays the
clients. Sections:

- fan-out: N websocket subscribers of one job, K updates POSTed at once; deliveries/s
  and publish-to-delivery latency (timestamp in the event, one clock);
- steady rate: the same at --rate updates/s, below saturation: latency p50/p99;
- flood: that steady-rate latency on Switchboard alone, and again while a hostile
  client floods it (the reference here is the calm run);
- memory: server RSS growth per idle connection, with each of --memory-clients connected;
- idle: --idle-clients websocket clients connect and stay --hold seconds;
- durable: --updates HTTP updates, --concurrency at a time, each answered only once
  committed: SQLite and Redis stores beside the memory store and the Node reference
  (which stores nothing);
- hotjob: the same, but every update to ONE job (the hot row), --hot-updates at each of
  --hot-concurrency in flight, SQLite / Redis (appendfsync always) / memory, one node:
  updates/s, refused answers (must be 0), answer p50/p99;
- scaleout: 1, 2, 3 `serve --store redis://` nodes on one redis-server (appendfsync
  everysec), --scaleout-clients websocket subscribers spread evenly over the nodes and
  over --scaleout-jobs jobs, updates POSTed through every node: deliveries/s, updates/s,
  publish-to-delivery p50/p99, CPU-seconds per 1,000 deliveries of each node (from
  /proc/PID/stat), order fills (switchboard_order_fills_total, summed over the nodes),
  beside one memory-store node; and the price of ordering, below saturation: a steady
  load (two updates per job at once, --order-rate times a second) POSTed through one node
  (no fills) and through all of them (they race: fills), publish-to-delivery p50/p99;
- logs: live log lines end to end, one node: --log-lines lines POSTed to ONE job,
  --log-batch lines per POST, --log-in-flight POSTs at a time, to --log-subscribers
  websocket subscribers of the job (subscribed with log_since 0); the clock stops when
  every subscriber has every line (offsets checked: no gap, none repeated or out of
  order). Lines/s beside the job's update rate on the same server (--log-updates updates
  to one job, as many in flight), SQLite / Redis (appendfsync always) / memory.
- width: does every node paying for every job's events matter past a few nodes? 1, 4, 8,
  12 (--width-nodes) `serve --store redis://` nodes on one redis-server, --width-clients
  websocket subscribers per node, each node's watching --width-jobs jobs that only its
  clients watch; --width-rate updates/s for --width-seconds s spread over all the jobs,
  POSTed through every node in turn: CPU-seconds per 1,000 updates of each node (from
  /proc), publish-to-delivery p50/p99, every delivery checked (none missing, none out of
  order, none for a job the client does not watch). Then the same rate to jobs nobody
  watches, POSTed through node 1 only: the other nodes only receive, so their CPU (less
  their idle CPU) is the price of unwatched pub/sub traffic, in µs per event per node;
  Redis CPU and output bytes (INFO stats total_net_output_bytes) per update. On the
  --width-replay-nodes cluster, a real message of the channel is also PUBLISHed straight
  into Redis at --width-replay-rates events/s (faster than one node takes POSTs here), as
  a job nobody watches: the cost per unwatched event falls as more arrive per wakeup.
  Ends with the share of a core each node spends on unwatched events at 1,000 and 10,000
  events/s cluster-wide, and the rate from which that passes 10%.

Prints Markdown and writes it to --out. Needs node (and redis-server for the Redis rows and
the scale-out section).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
NODE_REF = HERE / "node_ref"
TOKEN = "bench-admin-token"
SERVERS = ("switchboard", "node")
FAULTS = "deliveries missing / clients dropped / out of seq order (all runs)"
LOG_FAULTS = ("lines missing / offset gaps / repeated or out of order / refused POSTs / "
              "other (all runs)")  # fmt: skip
SECTIONS = ("fanout", "rate", "flood", "memory", "idle", "durable", "hotjob", "scaleout", "logs",
            "width")  # fmt: skip
WIDTH_FAULTS = ("deliveries missing / clients dropped / out of seq order / foreign events / "
                "refused / subscriptions lost (all runs)")  # fmt: skip
WIDTH_SETTLE = 0.25  # seconds after a phase for the last pub/sub events to be handled
WIDTH_CHANNEL = "switchboard:socketio"  # the nodes' shared pub/sub channel (default prefix)
WIDTH_EVENTS = "switchboard:events:*"  # every job's channel of events
WIDTH_LISTENER = "bench-listener"  # the client name of the bench's own subscriber
LOG_TARGET = 20_000  # lines/s on one node with SQLite, the goal of live log lines


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports (all held open together while they are picked)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def wait_for(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60  # a dozen nodes starting at once on 2 CPUs
    while time.monotonic() < deadline and proc.poll() is None:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"server on {port} did not start")


def stop(proc: subprocess.Popen[Any]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass
class Server:
    url: str
    pid: int

    def rss_kib(self) -> int:
        """Resident memory, from /proc (Linux)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def cpu_seconds(self) -> float:
        """User + system CPU time so far, from /proc/PID/stat (Linux)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime

    def counters(self) -> dict[str, float]:
        """This node's job:update deliveries and order fills so far, from /metrics."""
        found = {"deliveries": 0.0, "fills": 0.0}
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=10) as page:
            for line in page.read().decode().splitlines():
                name, _, value = line.rpartition(" ")
                if name.startswith("switchboard_deliveries_total{") and "job:update" in name:
                    found["deliveries"] += float(value)
                elif name == "switchboard_order_fills_total":
                    found["fills"] += float(value)
        return found


@contextlib.contextmanager
def serving(kind: str, store: str = "memory://") -> Iterator[Server]:
    with cluster(kind, store, 1) as servers:
        yield servers[0]


@contextlib.contextmanager
def cluster(kind: str, store: str, count: int) -> Iterator[list[Server]]:
    """`count` servers sharing `store`, started together (their stderr kept, for errors)."""
    env = {**os.environ, "SWITCHBOARD_ADMIN_TOKEN": TOKEN}
    started: list[tuple[int, subprocess.Popen[bytes], Any]] = []
    with contextlib.ExitStack() as stack:
        for port in free_ports(count):
            if kind == "node":
                command = ["node", str(NODE_REF / "server.mjs"), str(port)]
            else:
                command = [sys.executable, "-m", "switchboard_server", "serve", "--store", store,
                           "--port", str(port), "--log-level", "warning"]  # fmt: skip
            log = stack.enter_context(tempfile.TemporaryFile())
            proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log)
            stack.callback(stop, proc)
            started.append((port, proc, log))
        for port, proc, log in started:
            try:
                wait_for(port, proc)
            except SystemExit as exc:
                log.seek(0)
                raise SystemExit(f"{exc}: {log.read().decode(errors='replace')}") from None
        yield [Server(f"http://127.0.0.1:{port}", proc.pid) for port, proc, _ in started]


@contextlib.contextmanager
def redis_server(fsync: str = "always") -> Iterator[Server | None]:
    """A private redis-server with an append-only file fsynced `fsync` (always: every
    write; everysec: once a second), or None when redis-server is not installed."""
    if shutil.which("redis-server") is None:
        yield None
        return
    port = free_port()
    with tempfile.TemporaryDirectory() as data:
        proc = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", fsync, "--dir", data],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_for(port, proc)
            yield Server(f"redis://127.0.0.1:{port}/0", proc.pid)
        finally:
            stop(proc)


def node(script: str, *args: object, timeout: float = 600, check: bool = True) -> dict[str, Any]:
    """Run a Node tool; its last line of output, as JSON. With check=False a failing exit
    still returns that line (the caller reports what failed, e.g. refused updates)."""
    done = subprocess.run(
        ["node", str(NODE_REF / script), *map(str, args)],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    lines = done.stdout.strip().splitlines()
    if (done.returncode != 0 and check) or not lines:
        raise SystemExit(f"{script} {args}: {done.stdout}{done.stderr}")
    return dict(json.loads(lines[-1]))


def median(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in runs))


def ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}x" if theirs else "-"


def table(title: str, head: list[str], rows: list[list[object]]) -> str:
    lines = [f"### {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def fanout(clients: list[int], events: int, repeat: int, rate: float = 0) -> str:
    rows = []
    for n in clients:
        runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in SERVERS}
        for _ in range(repeat):
            for kind in SERVERS:
                with serving(kind) as server:
                    runs[kind].append(node("load.mjs", server.url, n, events, TOKEN, rate))
        figures = {kind: {key: median(found, key) for key in ("deliveries_per_s", "p50_ms",
                                                              "p99_ms")}
                   for kind, found in runs.items()}  # fmt: skip
        ours, theirs = figures["switchboard"], figures["node"]
        latency = [f"{ours['p50_ms']:.1f} / {ours['p99_ms']:.1f}",
                   f"{theirs['p50_ms']:.1f} / {theirs['p99_ms']:.1f}",
                   ratio(ours["p99_ms"], theirs["p99_ms"])]  # fmt: skip
        ours_rate, theirs_rate = ours["deliveries_per_s"], theirs["deliveries_per_s"]
        throughput = [f"{ours_rate:,.0f}", f"{theirs_rate:,.0f}", ratio(ours_rate, theirs_rate)]
        rows.append([n, *latency] if rate else [n, *throughput, *latency])
    latency_head = ["Switchboard p50 / p99 ms", "Node p50 / p99 ms", "p99 ratio"]
    if rate:
        title = f"Steady rate: {events} updates at {rate:g}/s, median of {repeat}"
        head = ["subscribers", *latency_head]
    else:
        title = f"Fan-out: {events} updates POSTed at once, median of {repeat}"
        head = ["subscribers", "Switchboard deliveries/s", "Node deliveries/s", "ratio",
                *latency_head]  # fmt: skip
    return table(title, head, rows)


def flood(clients: int, events: int, rate: float, repeat: int) -> str:
    """Steady-rate latency for well-behaved clients, alone and beside a flooding client."""
    runs: dict[str, list[dict[str, Any]]] = {"calm": [], "flooded": []}
    for _ in range(repeat):
        for case in runs:
            with serving("switchboard") as server:
                flooder = None
                if case == "flooded":
                    flooder = subprocess.Popen(["node", str(NODE_REF / "flood.mjs"), server.url])
                    time.sleep(1.0)
                try:
                    runs[case].append(node("load.mjs", server.url, clients, events, TOKEN, rate))
                finally:
                    if flooder is not None:
                        stop(flooder)
    calm, flooded = ({key: median(runs[case], key) for key in ("p50_ms", "p99_ms")}
                     for case in ("calm", "flooded"))  # fmt: skip
    rows = [[clients, f"{calm['p50_ms']:.1f} / {calm['p99_ms']:.1f}",
             f"{flooded['p50_ms']:.1f} / {flooded['p99_ms']:.1f}",
             ratio(flooded["p99_ms"], calm["p99_ms"])]]  # fmt: skip
    head = ["subscribers", "calm p50 / p99 ms", "with a flooder p50 / p99 ms",
            "p99 flooded / calm"]  # fmt: skip
    title = (
        f"Flood: Switchboard latency at {rate:g} updates/s while one client floods "
        f"/info (about 10,000 events/s, reconnecting when cut off), median of {repeat}"
    )
    return table(title, head, rows)


def idle(clients: int, hold: float) -> dict[str, dict[str, Any]]:
    """Connect `clients` idle websockets to each server; RSS growth and who stayed up."""
    found = {}
    for kind in SERVERS:
        with serving(kind) as server:
            time.sleep(0.5)
            before = server.rss_kib()
            proc = subprocess.Popen(
                ["node", str(NODE_REF / "idle.mjs"), server.url, str(clients), str(hold)],
                stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            assert proc.stdout is not None
            first = json.loads(proc.stdout.readline() or "{}")
            time.sleep(1.0)  # let the last handshakes settle
            after = server.rss_kib()
            last = proc.stdout.read().strip().splitlines()
            proc.wait(timeout=hold + 300)
            result = json.loads(last[-1]) if last else {}
            found[kind] = {**first, **result, "rss_mib": after / 1024,
                           "kib_per_connection": (after - before) / clients}  # fmt: skip
    return found


def memory_table(counts: list[int]) -> str:
    rows = []
    for clients in counts:
        found = {kind: r["kib_per_connection"] for kind, r in idle(clients, hold=1).items()}
        ours, theirs = found["switchboard"], found["node"]
        rows.append([clients, f"{ours:.1f}", f"{theirs:.1f}", ratio(ours, theirs)])
    head = ["idle websocket clients", "Switchboard KiB/conn", "Node KiB/conn", "ratio"]
    return table("Memory: server RSS growth per idle connection", head, rows)


def idle_table(clients: int, hold: float) -> str:
    found = idle(clients, hold)
    rows = [[kind, clients, r.get("connected"), r.get("still_connected"), r.get("errors"),
             f"{r['rss_mib']:.0f}"] for kind, r in found.items()]  # fmt: skip
    head = ["server", "clients", "connected", f"still up after {hold:g} s", "errors",
            "server RSS MiB"]  # fmt: skip
    return table(f"Idle: {clients} websocket clients on one process", head, rows)


def durable(updates: int, concurrency: int, jobs: int, repeat: int) -> str:
    rows = []
    with redis_server() as redis, tempfile.TemporaryDirectory() as tmp:
        variants = [("switchboard", "SQLite", f"sqlite:///{tmp}/bench.db"),
                    ("switchboard", "Redis (appendfsync always)", redis and redis.url),
                    ("switchboard", "memory (not durable)", "memory://"),
                    ("node", "Node reference (stores nothing)", "")]  # fmt: skip
        runs: dict[str, list[dict[str, Any]]] = {}
        for _ in range(repeat):
            for kind, name, store in variants:  # alternately, so noise hits every store
                if store is None:
                    continue
                with serving(kind, store) as server:
                    run = node("publish.mjs", server.url, TOKEN, updates, concurrency, jobs)
                runs.setdefault(name, []).append(run)
    on_node = runs.get("Node reference (stores nothing)")
    reference = median(on_node, "updates_per_s") if on_node else 0
    for _, name, _ in variants:
        found = runs.get(name)
        if not found:
            rows.append([name, "redis-server not installed", "", ""])
            continue
        rate = median(found, "updates_per_s")
        rows.append([name, f"{rate:,.0f}", ratio(rate, reference),
                     f"{median(found, 'p50_ms'):.1f} / {median(found, 'p99_ms'):.1f}"])  # fmt: skip
    head = ["store", "committed updates/s", "ratio to Node", "answer p50 / p99 ms"]
    title = (f"Durable publish: {updates} updates over HTTP, {concurrency} at a time, "
             f"{jobs} jobs, median of {repeat}")  # fmt: skip
    return table(title, head, rows)


def hotjob(updates: int, concurrencies: list[int], repeat: int) -> str:
    """Every update to ONE job: the store serialises them (SQLite's group commit, Redis's
    batches of one job's updates in one script), so this is the hot-row case."""
    stores = ["SQLite", "Redis (appendfsync always)", "memory (not durable)"]
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    with redis_server("always") as redis, tempfile.TemporaryDirectory() as tmp:
        urls = {"SQLite": f"sqlite:///{tmp}/hot.db", "Redis (appendfsync always)":
                redis and redis.url, "memory (not durable)": "memory://"}  # fmt: skip
        for _ in range(repeat):
            for concurrency in concurrencies:
                for name in stores:  # alternately, so noise hits every store
                    store = urls[name]
                    if store is None:
                        continue
                    with serving("switchboard", store) as server:
                        found = node("publish.mjs", server.url, TOKEN, updates, concurrency, 1,
                                     check=False)  # fmt: skip
                    runs.setdefault((name, concurrency), []).append(found)
    rows: list[list[object]] = []
    for concurrency in concurrencies:
        memory = runs.get(("memory (not durable)", concurrency))
        reference = median(memory, "updates_per_s") if memory else 0
        for name in stores:
            found = runs.get((name, concurrency))
            if not found:
                rows.append([name, concurrency, "redis-server not installed", "", "", ""])
                continue
            rate = median(found, "updates_per_s")
            latency = f"{median(found, 'p50_ms'):.1f} / {median(found, 'p99_ms'):.1f}"
            rows.append([name, concurrency, f"{rate:,.0f}", ratio(rate, reference),
                         sum(r["refused"] for r in found), latency])  # fmt: skip
    head = ["store", "in flight", "updates/s", "ratio to memory", "refused (all runs)",
            "answer p50 / p99 ms"]  # fmt: skip
    title = (f"Hot job: {updates} updates over HTTP to ONE job, one node, median of "
             f"{repeat}")  # fmt: skip
    return table(title, head, rows)


def logs(lines: int, batches: list[int], subscribers: list[int], in_flight: int,
         line_bytes: int, updates: int, repeat: int) -> str:  # fmt: skip
    """Log lines to ONE job, end to end (POST to the last subscriber's receipt), beside the
    job-update rate of the same store on the same server: what a line costs next to an
    update. A fresh server per store and repeat, the stores in turn (noise hits each)."""
    on_redis = "Redis (appendfsync always)"
    stores = ["SQLite", on_redis, "memory (not durable)"]
    runs: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
    update_runs: dict[str, list[dict[str, Any]]] = {}
    with redis_server("always") as redis, tempfile.TemporaryDirectory() as tmp:
        urls = {"SQLite": f"sqlite:///{tmp}/logs.db", on_redis: redis and redis.url,
                "memory (not durable)": "memory://"}  # fmt: skip
        for _ in range(repeat):
            for name in stores:
                store = urls[name]
                if store is None:
                    continue
                with serving("switchboard", store) as server:
                    found = node("publish.mjs", server.url, TOKEN, updates, in_flight, 1,
                                 check=False)  # fmt: skip
                    update_runs.setdefault(name, []).append(found)
                    for count in subscribers:
                        for batch in batches:
                            found = stepped_load(
                                [server], redis if name == on_redis else None, server.url,
                                TOKEN, count, lines, batch, in_flight, line_bytes,
                                script="logs.mjs",
                            )  # fmt: skip
                            runs.setdefault((name, count, batch), []).append(found)

    def faults(found: list[dict[str, Any]]) -> str:
        other = ("bad_answers", "bad_acks", "connect_errors", "dropped")
        counts = [sum(r[key] for r in found) for key in ("missing", "gaps", "backwards",
                                                          "refused")]  # fmt: skip
        counts.append(sum(r[key] for r in found for key in other))
        return " / ".join(map(str, counts))

    rows: list[list[object]] = []
    for count in subscribers:
        for batch in batches:
            memory = runs.get(("memory (not durable)", count, batch))
            reference = median(memory, "lines_per_s") if memory else 0
            for name in stores:
                found = runs.get((name, count, batch))
                if not found:
                    rows.append([name, count, batch, "redis-server not installed"] + [""] * 11)
                    continue
                rate = median(found, "lines_per_s")
                update_rate = median(update_runs[name], "updates_per_s")
                seconds = median(found, "seconds")
                cpu = statistics.median(r["cpu_s"][0] for r in found)
                rows.append([
                    name, count, batch, f"{rate:,.0f}", ratio(rate, reference),
                    f"{median(found, 'posts_per_s'):,.0f}", f"{update_rate:,.0f}",
                    ratio(rate, update_rate),
                    f"{median(found, 'p50_ms'):.1f} / {median(found, 'p99_ms'):.1f}",
                    f"{cpu / seconds:.2f}", f"{1e6 * cpu / lines:.0f}",
                    f"{median(found, 'redis_cpu_s') / seconds:.2f}" if name == on_redis else "-",
                    f"{median(found, 'client_cpu_s') / seconds:.2f}",
                    sum(r["refused"] for r in update_runs[name]), faults(found),
                ])  # fmt: skip
    head = ["store", "subscribers", "lines per POST", "lines/s end to end", "ratio to memory",
            "log POSTs/s", "updates/s (one job)", "lines/s ÷ updates/s",
            "POST→delivery p50 / p99 ms", "server CPU s / wall s", "server CPU µs per line",
            "Redis CPU s / wall s",
            "load client CPU s / wall s", "updates refused", LOG_FAULTS]  # fmt: skip
    title = (f"Live log lines: {lines:,} lines of {line_bytes} bytes to ONE job, "
             f"{in_flight} POSTs in flight, one node, until every subscriber has every line; "
             f"beside {updates:,} updates to one job, {in_flight} in flight, on the same "
             f"server; median of {repeat}")  # fmt: skip
    report = table(title, head, rows)
    against = [f"{count} subscriber(s), {batch} per POST: "
               f"{ratio(median(found, 'lines_per_s'), LOG_TARGET)}"
               for (name, count, batch), found in runs.items() if name == "SQLite"]  # fmt: skip
    if against:
        report += f"\nSQLite against the target of {LOG_TARGET:,} lines/s: {'; '.join(against)}.\n"
    return report


def stepped_load(
    servers: list[Server], redis: Server | None, *args: object, script: str = "load.mjs"
) -> dict[str, Any]:
    """load.mjs (or logs.mjs) with STEP=1: the servers' CPU time and counters are read once
    every subscriber is in and again once every delivery arrived, so connecting is not
    counted."""

    def sample() -> tuple[list[tuple[float, dict[str, float]]], float, float]:
        nodes = [(server.cpu_seconds(), server.counters()) for server in servers]
        return nodes, redis.cpu_seconds() if redis else 0.0, client.cpu_seconds()

    command = ["node", str(NODE_REF / script), *map(str, args)]
    with tempfile.TemporaryFile("w+") as errors:
        proc = subprocess.Popen(command, env={**os.environ, "STEP": "1"}, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=errors, text=True)  # fmt: skip
        assert proc.stdin is not None and proc.stdout is not None
        client = Server("", proc.pid)
        result = ""
        try:
            if proc.stdout.readline():  # {"ready": true}: every subscriber is in
                before = sample()
                proc.stdin.write("go\n")
                proc.stdin.flush()
                result = proc.stdout.readline()
                after = sample()
                proc.stdin.close()
                proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                stop(proc)
        errors.seek(0)
        if not result:
            raise SystemExit(f"{script} {args}: {errors.read()}")
        found = dict(json.loads(result))  # lost deliveries are reported, not fatal
    found["cpu_per_1000"], found["cpu_s"], found["fills"] = [], [], 0.0
    for (cpu_start, start), (cpu_end, end) in zip(before[0], after[0], strict=True):
        found["cpu_s"].append(cpu_end - cpu_start)
        delivered = end["deliveries"] - start["deliveries"]
        found["cpu_per_1000"].append(1000 * (cpu_end - cpu_start) / max(delivered, 1))
        found["fills"] += end["fills"] - start["fills"]
    found["redis_cpu_s"] = after[1] - before[1]
    found["client_cpu_s"] = after[2] - before[2]
    return found


def scaleout(nodes: list[int], clients: int, jobs: int, updates: int, concurrency: int,
             order_updates: int, order_rate: float, repeat: int) -> str:  # fmt: skip
    """Redis-backed nodes side by side: subscribers spread evenly over them, publishers
    POSTing through all of them, beside one memory-store node. Then the price of ordering,
    below saturation (so queueing does not hide it): the same steady load POSTed through
    one node (every node gets each job's events in order) and through all (they race)."""
    if shutil.which("redis-server") is None:
        return table("Scale-out", ["nodes"], [["redis-server not installed"]])
    burst = (clients, updates, TOKEN, 0, jobs, concurrency)
    # Two updates per job at once, through two different nodes when publishing through all.
    steady = (clients, order_updates, TOKEN, order_rate, jobs, 2 * jobs)
    runs: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for r in range(repeat):
        with cluster("switchboard", "memory://", 1) as one:
            found = stepped_load(one, None, one[0].url, *burst)
            runs.setdefault(("memory", 1, "burst"), []).append(found)
        for count in nodes:  # a fresh Redis and fresh nodes for each size
            with contextlib.ExitStack() as stack:
                redis = stack.enter_context(redis_server("everysec"))
                assert redis is not None
                servers = stack.enter_context(cluster("switchboard", redis.url, count))
                urls = ",".join(s.url for s in servers)
                found = stepped_load(servers, redis, urls, *burst)
                runs.setdefault(("redis", count, "burst"), []).append(found)
                if count < 2:
                    continue
                cases = [("all", urls), ("one", servers[0].url)]
                for case, via in cases if r % 2 == 0 else cases[::-1]:  # first in turn
                    found = stepped_load(servers, redis, urls, *steady, via)
                    runs.setdefault(("redis", count, case), []).append(found)

    def latency(found: list[dict[str, Any]]) -> str:
        return f"{median(found, 'p50_ms'):.1f} / {median(found, 'p99_ms'):.1f}"

    def faults(found: list[dict[str, Any]]) -> str:
        return " / ".join(str(sum(r[key] for r in found))
                          for key in ("missing", "dropped", "out_of_order"))  # fmt: skip

    reference = median(runs[("memory", 1, "burst")], "deliveries_per_s")
    rows: list[list[object]] = []
    for (store, count, case), found in runs.items():
        if case != "burst":
            continue
        rate = median(found, "deliveries_per_s")
        cpu = " / ".join(f"{statistics.median(r['cpu_per_1000'][i] for r in found):.3f}"
                         for i in range(count))  # fmt: skip
        redis_cpu = "-" if store == "memory" else f"{median(found, 'redis_cpu_s'):.2f}"
        client_cpu = f"{median(found, 'client_cpu_s'):.2f} / {median(found, 'seconds'):.2f}"
        fills, refused = f"{median(found, 'fills'):,.0f}", sum(r["refused"] for r in found)
        name = "memory (not shared)" if store == "memory" else "Redis"
        rows.append([name, count, f"{rate:,.0f}", ratio(rate, reference),
                     f"{median(found, 'updates_per_s'):,.0f}", latency(found), cpu, redis_cpu,
                     client_cpu, fills, refused, faults(found)])  # fmt: skip
    head = ["store", "nodes", "deliveries/s", "ratio to memory", "updates/s",
            "publish→deliver p50 / p99 ms", "CPU s per 1,000 deliveries, each node",
            "Redis CPU s", "load client CPU s / wall s", "order fills",
            "refused (all runs)", FAULTS]  # fmt: skip
    title = (f"Scale-out: {clients} websocket subscribers spread evenly over the nodes and "
             f"over {jobs} jobs, {updates} updates POSTed {concurrency} at a time through "
             f"every node, Redis appendfsync everysec, median of {repeat}")  # fmt: skip
    report = table(title, head, rows)

    rows = []
    for count in nodes:
        if count < 2:
            continue
        one = runs[("redis", count, "one")]
        for case, label in (("one", "node 1 only"), ("all", f"all {count} nodes")):
            found = runs[("redis", count, case)]
            rows.append([count, label, f"{median(found, 'fills'):,.0f}", latency(found),
                         ratio(median(found, "p99_ms"), median(one, "p99_ms")),
                         sum(r["refused"] for r in found), faults(found)])  # fmt: skip
    head = ["nodes", "updates POSTed through", "order fills", "publish→deliver p50 / p99 ms",
            "p99 / node-1-only p99", "refused (all runs)", FAULTS]  # fmt: skip
    title = (f"Ordering cost: {order_updates} updates, {2 * jobs} at once (two per job) "
             f"{order_rate:g} times a second, same subscribers, POSTed through one node "
             f"(each node gets each job's events in order) or through all (they race and "
             f"gaps are read from the store), median of {repeat}")  # fmt: skip
    return report + "\n" + table(title, head, rows)


def resp_command(*args: str) -> bytes:
    """One Redis command in RESP."""
    return (f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)).encode()


def resp_read(reply: Any) -> Any:
    """One RESP answer from a binary file over the Redis socket, decoded."""
    line = reply.readline().rstrip(b"\r\n")
    kind, rest = line[:1], line[1:]
    if kind == b"-":
        raise RuntimeError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        return None if int(rest) < 0 else reply.read(int(rest) + 2)[:-2].decode()
    if kind == b"*":
        return [resp_read(reply) for _ in range(int(rest))]
    if not line:
        raise ConnectionError("redis closed the connection")
    return rest.decode()


def redis_socket(url: str) -> socket.socket:
    where = urllib.parse.urlsplit(url)
    return socket.create_connection((where.hostname, where.port), timeout=10)


def redis_command(url: str, *args: str) -> Any:
    """One command to the Redis at `url`, its answer decoded (stdlib only)."""
    with redis_socket(url) as sock, sock.makefile("rb") as reply:
        sock.sendall(resp_command(*args))
        return resp_read(reply)


def redis_stat(url: str, name: str) -> int:
    """One integer field of Redis's INFO stats (total_net_output_bytes, …)."""
    for line in str(redis_command(url, "INFO", "stats")).splitlines():
        if line.startswith(f"{name}:"):
            return int(line.partition(":")[2])
    raise RuntimeError(f"no {name} in INFO stats")


@contextlib.contextmanager
def listening(url: str, pattern: str) -> Iterator[Any]:
    """A plain subscriber of the channels matching `pattern`; yields next_message() ->
    (channel, payload) of the next message."""

    def next_message() -> tuple[str, str]:
        while True:
            try:
                kind, _, channel, payload = resp_read(reply)
            except TimeoutError:
                raise SystemExit(f"no message on {pattern} in 10 s: do the nodes publish "
                                 f"there (WIDTH_EVENTS)?") from None  # fmt: skip
            if kind == "pmessage":
                return str(channel), str(payload)

    with redis_socket(url) as sock, sock.makefile("rb") as reply:
        sock.sendall(resp_command("CLIENT", "SETNAME", WIDTH_LISTENER))
        resp_read(reply)  # OK
        sock.sendall(resp_command("PSUBSCRIBE", pattern))
        resp_read(reply)  # subscribed
        yield next_message


def replay(url: str, channel: str, payload: str, rate: float, seconds: float) -> dict[str, Any]:
    """PUBLISH `payload` to `channel` `rate` times a second for `seconds`, each as soon as
    it is due (one at a time at low rates, as real updates come)."""
    total, sent = round(rate * seconds), 0
    command = resp_command("PUBLISH", channel, payload)
    with redis_socket(url) as sock, sock.makefile("rb") as reply:
        started = time.monotonic()
        while sent < total:
            due = min(total, int((time.monotonic() - started) * rate)) - sent
            if due <= 0:
                time.sleep(0.0002)
                continue
            sock.sendall(command * due)
            for _ in range(due):
                resp_read(reply)
            sent += due
        elapsed = time.monotonic() - started
    return {"ok": sent, "updates_per_s": sent / elapsed, "expected": 0, "delivered": 0,
            "missing": 0, "dropped": 0, "out_of_order": 0, "foreign": 0,
            "refused": 0}  # fmt: skip


def pubsub_backlog(url: str) -> int:
    """Bytes Redis still holds for its pub/sub subscribers (the nodes falling behind; not
    the bench's own listener, which reads only one message)."""
    behind = 0
    for line in str(redis_command(url, "CLIENT", "LIST")).splitlines():
        fields = dict(field.partition("=")[::2] for field in line.split())
        if int(fields.get("sub", "0")) > 0 and fields.get("name") != WIDTH_LISTENER:
            behind += int(fields.get("obl", "0")) + int(fields.get("omem", "0"))
    return behind


@contextlib.contextmanager
def width_load(servers: list[Server], redis: Server, per_node: int, jobs: int) -> Iterator[Any]:
    """width.mjs connected to every node; yields measure(phase or None, idle seconds),
    which samples every node's CPU time (and order fills), Redis's CPU time and output
    bytes, around one phase of publishing (None: around `idle` seconds of nothing)."""

    def sample(fills_first: bool) -> dict[str, Any]:
        """CPU times and counters; the nodes' /metrics read outside the window measured."""
        found: dict[str, Any] = {}
        if fills_first:
            found["fills"] = sum(server.counters()["fills"] for server in servers)
        found.update(at=time.monotonic(), cpu=[server.cpu_seconds() for server in servers],
                     redis_cpu=redis.cpu_seconds(), client_cpu=client.cpu_seconds(),
                     redis_out=redis_stat(redis.url, "total_net_output_bytes"))  # fmt: skip
        if not fills_first:
            found["fills"] = sum(server.counters()["fills"] for server in servers)
        return found

    def measure(phase: dict[str, Any] | None, idle: float = 0.0) -> dict[str, Any]:
        before = sample(fills_first=True)
        if phase is None:
            time.sleep(idle)
            found: dict[str, Any] = {}
        elif "replay" in phase:
            found = replay(
                redis.url, phase["channel"], phase["replay"], phase["rate"], phase["seconds"]
            )
        else:
            stdin.write(json.dumps(phase) + "\n")
            stdin.flush()
            line = stdout.readline()
            if not line:
                errors.seek(0)
                raise SystemExit(f"width.mjs {phase}: {errors.read()}")
            found = dict(json.loads(line))
        caught_up = time.monotonic()
        while pubsub_backlog(redis.url) and time.monotonic() < caught_up + 30:
            time.sleep(0.05)
        found["behind_s"] = time.monotonic() - caught_up  # until Redis held nothing back
        time.sleep(WIDTH_SETTLE)  # the last events through pub/sub, on every node
        after = sample(fills_first=False)
        found["wall_s"] = after["at"] - before["at"]
        found["cpu_s"] = [b - a for a, b in zip(before["cpu"], after["cpu"], strict=True)]
        for key in ("redis_cpu", "client_cpu", "redis_out", "fills"):
            found[key] = after[key] - before[key]
        return found

    urls = ",".join(server.url for server in servers)
    command = ["node", str(NODE_REF / "width.mjs"), urls, str(per_node), str(jobs), TOKEN]
    with tempfile.TemporaryFile("w+") as errors:
        proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=errors, text=True)  # fmt: skip
        assert proc.stdin is not None and proc.stdout is not None
        stdin, stdout = proc.stdin, proc.stdout
        client = Server("", proc.pid)
        try:
            if not stdout.readline():  # {"ready": true}: every subscriber is in
                errors.seek(0)
                raise SystemExit(f"width.mjs: {errors.read()}")
            yield measure
            stdin.close()
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                stop(proc)


def width(nodes: list[int], per_node: int, jobs: int, rate: float, seconds: float, idle: float,
          replay_nodes: int, replay_rates: list[float], replay_seconds: float,
          repeat: int) -> str:  # fmt: skip
    """N nodes on one Redis, each with its own watchers of its own jobs: what each node
    pays for the pub/sub traffic of jobs it has no watcher for (a node subscribes only to
    the channels of jobs its clients follow, so it should be nothing). Per cluster:
    updates to the watched jobs POSTed through every node in turn; the same rate to jobs
    nobody watches, POSTed through node 1 only, so the other nodes do nothing but receive
    unwatched events; and, on one cluster size, a real
    message of a job's channel replayed straight into Redis at higher rates (more than one
    node can take POSTs for on this machine), for a job no node watches."""
    if shutil.which("redis-server") is None:
        return table("Width", ["nodes"], [["redis-server not installed"]])
    runs: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for r in range(repeat):
        for count in nodes:  # a fresh Redis and fresh nodes for each size
            with contextlib.ExitStack() as stack:
                redis = stack.enter_context(redis_server("everysec"))
                assert redis is not None
                servers = stack.enter_context(cluster("switchboard", redis.url, count))
                measure = stack.enter_context(width_load(servers, redis, per_node, jobs))
                every = list(range(count))
                # Warm every path (scripts loaded, pub/sub and POST code run), unmeasured,
                # and keep one message of the channel as the nodes publish it, to replay.
                with listening(redis.url, WIDTH_EVENTS) as next_message:
                    measure({"watched": False, "rate": rate, "seconds": 1, "via": every})
                    channel, published = next_message()
                    message = json.loads(published)
                message["host_id"] = "bench-replay"  # no node's own: every node handles it
                base = measure(None, idle)
                cases = [("watched", {"watched": True, "rate": rate, "seconds": seconds,
                                      "via": every}),
                         ("unwatched", {"watched": False, "rate": rate, "seconds": seconds,
                                        "via": [0]})]  # fmt: skip
                if count == replay_nodes:
                    cases += [(f"replay {x:g}", {"replay": json.dumps(message), "rate": x,
                                                 "channel": channel,
                                                 "seconds": replay_seconds})
                              for x in replay_rates]  # fmt: skip
                for case, phase in cases if r % 2 == 0 else cases[::-1]:  # first in turn
                    found = measure(phase)
                    found["idle_cpu_per_s"] = [c / base["wall_s"] for c in base["cpu_s"]]
                    found["subscribed"] = int(
                        redis_command(redis.url, "PUBSUB", "NUMSUB", WIDTH_CHANNEL)[1]
                    )
                    runs.setdefault((count, case), []).append(found)

    def per_event(found: dict[str, Any], cpu: float) -> float:
        """CPU seconds per 1,000 updates published."""
        return 1000 * cpu / max(int(found["ok"]), 1)

    def unwatched_us(found: dict[str, Any], first: int = 1) -> list[float]:
        """µs per event on each node from `first` on, which only received (idle CPU out)."""
        return [1e6 * (cpu - idle_rate * found["wall_s"]) / max(int(found["ok"]), 1)
                for cpu, idle_rate in zip(found["cpu_s"][first:], found["idle_cpu_per_s"][first:],
                                          strict=True)]  # fmt: skip

    def med(values: list[float]) -> float:
        return float(statistics.median(values))

    def faults(found: list[dict[str, Any]], count: int) -> str:
        lost = sum(count - r["subscribed"] for r in found)
        return " / ".join(str(sum(r[key] for r in found))
                          for key in ("missing", "dropped", "out_of_order", "foreign",
                                      "refused")) + f" / {lost}"  # fmt: skip

    def busy(found: list[dict[str, Any]], first: int) -> str:
        """Share of one core, mean of the nodes from `first` on."""
        return (
            f"{100 * med([statistics.mean(r['cpu_s'][first:]) / r['wall_s'] for r in found]):.1f}%"
        )

    def spread(values: list[float]) -> str:
        return f"{statistics.mean(values):.0f} ({min(values):.0f} to {max(values):.0f})"

    cost: dict[int, float] = {}  # nodes -> µs per unwatched event per node, POSTed load
    for count in nodes:
        if count > 1:
            found = runs[(count, "unwatched")]
            cost[count] = med([statistics.mean(unwatched_us(r)) for r in found])

    rows: list[list[object]] = []
    for count in nodes:
        found = runs[(count, "watched")]
        each = " / ".join(f"{med([per_event(r, r['cpu_s'][i]) for r in found]):.3f}"
                          for i in range(count))  # fmt: skip
        load = med([statistics.mean(r["cpu_s"]) / r["wall_s"] for r in found])
        part = "-"
        if count in cost:  # the other nodes' events, at the measured cost of one
            spent = med([r["ok"] * (count - 1) / count * cost[count] / 1e6
                         / statistics.mean(r["cpu_s"]) for r in found])  # fmt: skip
            part = f"{100 * spent:.0f}%"
        rows.append([count, count * per_node, count * jobs,
                     f"{med([r['updates_per_s'] for r in found]):.0f}", each,
                     f"{100 * load:.1f}%", part,
                     f"{med([r['p50_ms'] or 0 for r in found]):.1f} / "
                     f"{med([r['p99_ms'] or 0 for r in found]):.1f}",
                     f"{sum(r['delivered'] for r in found):,} / "
                     f"{sum(r['expected'] for r in found):,}",
                     f"{med([r['fills'] for r in found]):,.0f}",
                     f"{med([per_event(r, r['redis_cpu']) for r in found]):.3f}",
                     f"{med([r['redis_out'] / max(r['ok'], 1) for r in found]):,.0f}",
                     faults(found, count)])  # fmt: skip
    head = ["nodes", "clients", "watched jobs", "updates/s",
            "CPU s per 1,000 updates, each node", "CPU of one core, mean node",
            "of which unwatched events (est.)", "publish→deliver p50 / p99 ms",
            "delivered / expected (all runs)", "order fills", "Redis CPU s per 1,000 updates",
            "Redis output bytes per update", WIDTH_FAULTS]  # fmt: skip
    title = (f"Width: {per_node} websocket clients per node watching {jobs} job(s) that only "
             f"that node's clients watch, {rate:g} updates/s for {seconds:g} s spread over "
             f"all the jobs, POSTed through every node in turn, Redis appendfsync everysec, "
             f"median of {repeat}")  # fmt: skip
    report = table(title, head, rows)

    rows = []
    single = runs.get((1, "unwatched"))
    for count in nodes:
        found = runs[(count, "unwatched")]
        idle_ms = med([1000 * statistics.mean(r["idle_cpu_per_s"]) for r in found])
        out = med([r["redis_out"] / max(r["ok"], 1) for r in found])
        receivers = receiving = copy = "-"
        if count in cost:
            receivers = spread([u for r in found for u in unwatched_us(r)])
            receiving = busy(found, 1)
            if single:
                alone = med([r["redis_out"] / max(r["ok"], 1) for r in single])
                copy = f"{(out - alone) / (count - 1):,.0f}"
        rows.append([count, found[0]["subscribed"], f"{idle_ms:.1f}",
                     f"{med([per_event(r, r['cpu_s'][0]) for r in found]):.3f}", receivers,
                     receiving, f"{med([per_event(r, r['redis_cpu']) for r in found]):.3f}",
                     f"{out:,.0f}", copy, f"{out * 10_000 / 1e6:.1f}",
                     faults(found, count)])  # fmt: skip
    head = ["nodes", "pub/sub subscribers", "idle CPU ms/s per node",
            "node 1 (takes every POST) CPU s per 1,000 updates",
            "µs per unwatched event per node, mean (min to max)",
            "CPU of one core, each receiving node", "Redis CPU s per 1,000 updates",
            "Redis output bytes per update", "bytes per pub/sub copy",
            "Redis output MB/s at 10,000 updates/s", WIDTH_FAULTS]  # fmt: skip
    title = (f"Width, unwatched: the same {rate:g} updates/s for {seconds:g} s to jobs nobody "
             f"watches, POSTed through node 1 only, so the other nodes only receive (their "
             f"idle CPU taken out), median of {repeat}")  # fmt: skip
    report += "\n" + table(title, head, rows)

    curve: list[tuple[float, float]] = []  # (events/s, µs per unwatched event per node)
    rows = []
    for x in sorted(replay_rates):
        found = runs.get((replay_nodes, f"replay {x:g}"), [])
        if not found:
            continue
        us = med([statistics.mean(unwatched_us(r, first=0)) for r in found])
        curve.append((x, us))
        rows.append([f"{x:g}", f"{med([r['updates_per_s'] for r in found]):,.0f}",
                     spread([u for r in found for u in unwatched_us(r, first=0)]),
                     busy(found, 0),
                     f"{med([r['behind_s'] for r in found]):.2f}",
                     f"{med([per_event(r, r['redis_cpu']) for r in found]):.3f}",
                     f"{med([r['redis_out'] / max(r['ok'], 1) for r in found]):,.0f}",
                     faults(found, replay_nodes)])  # fmt: skip
    if rows:
        head = ["events/s", "published/s", "µs per unwatched event per node, mean (min to max)",
                "CPU of one core, mean node", "s Redis held events back after the last",
                "Redis CPU s per 1,000 events", "Redis output bytes per event",
                WIDTH_FAULTS]  # fmt: skip
        title = (f"Width, unwatched at higher rates: one message of a job's channel as a "
                 f"node published it (a job nobody watches; its host id changed so that a "
                 f"node receiving it would handle it) PUBLISHed straight into Redis, each "
                 f"as soon as due, for "
                 f"{replay_seconds:g} s, {replay_nodes} nodes (idle CPU taken out), median "
                 f"of {repeat}")  # fmt: skip
        report += "\n" + table(title, head, rows)
    if not curve and cost:
        curve = [(rate, med(list(cost.values())))]
    if curve and max(nodes) > 1:
        widest = max(nodes)
        unwatched = (widest - 1) / widest  # each node watches 1/N of the cluster's jobs

        def share(total: float) -> float:
            """Share of one core per node for `total` events/s cluster-wide: the cost per
            event interpolated between the rates measured (held at the ends)."""
            lower = max([p for p in curve if p[0] <= total], default=curve[0])
            upper = min([p for p in curve if p[0] >= total], default=curve[-1])
            us = lower[1]
            if upper[0] > lower[0]:
                us += (upper[1] - lower[1]) * (total - lower[0]) / (upper[0] - lower[0])
            return total * unwatched * us / 1e6

        limit = next((10 * 1.01**k for k in range(1200) if share(10 * 1.01**k) >= 0.1), 0.0)
        measured = ", ".join(f"{us:.0f} µs at {x:g}/s" for x, us in curve)
        report += (f"\nAn event of a job no client of a node follows costs that node "
                   f"{measured} (idle CPU taken out; a few µs is noise). With {widest} "
                   f"nodes, each watching 1/{widest} of the jobs, that is "
                   f"{100 * share(1_000):.1f}% of one core per node at 1,000 events/s "
                   f"cluster-wide and {100 * share(10_000):.1f}% at 10,000"
                   + (f"; 10% of a core from about {limit:,.0f} events/s.\n" if limit
                      else ".\n"))  # fmt: skip
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rate", type=float, default=20.0, help="updates/s, steady section")
    parser.add_argument("--rate-clients", type=int, default=1000)
    parser.add_argument("--memory-clients", type=int, nargs="+", default=[5000, 10000])
    parser.add_argument("--idle-clients", type=int, default=10000)
    parser.add_argument("--hold", type=float, default=30.0, help="seconds the idle clients stay")
    parser.add_argument("--updates", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--hot-updates", type=int, default=1000)
    parser.add_argument("--hot-concurrency", type=int, nargs="+", default=[4, 16, 64])
    parser.add_argument("--scaleout-nodes", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--scaleout-clients", type=int, default=600)
    parser.add_argument("--scaleout-jobs", type=int, default=6)
    parser.add_argument("--scaleout-updates", type=int, default=1200)
    parser.add_argument("--scaleout-concurrency", type=int, default=64)
    parser.add_argument("--order-updates", type=int, default=480)
    parser.add_argument("--order-rate", type=float, default=20.0,
                        help="bursts/s of two updates per job, ordering-cost table")  # fmt: skip
    parser.add_argument("--log-lines", type=int, default=30000, help="lines per run, logs")
    parser.add_argument("--log-batch", type=int, nargs="+", default=[100, 500],
                        help="lines per POST, logs section")  # fmt: skip
    parser.add_argument("--log-subscribers", type=int, nargs="+", default=[1, 100])
    parser.add_argument("--log-in-flight", type=int, default=4)
    parser.add_argument("--log-line-bytes", type=int, default=100)
    parser.add_argument("--log-updates", type=int, default=1000,
                        help="updates to one job beside the log lines")  # fmt: skip
    # The default run takes about 11 minutes on 2 CPUs: hotjob under a minute (27 loads of
    # 1,000 updates, each on a fresh server), scaleout about 2 minutes (three repeats of
    # eight loads of 600 subscribers on fresh Redis and nodes for each cluster size), logs
    # about 2 minutes (three repeats of a server per store, each taking 1,000 updates and
    # four loads of 30,000 lines; with 100 subscribers the one Node process parsing every
    # copy of every line is the limit on 2 CPUs, see its CPU column), width about 2.5
    # minutes (a fresh Redis and 1, 4, 8, 12 nodes, each taking two 10-second loads; the
    # 4-node cluster also four 5-second replays).
    parser.add_argument("--width-nodes", type=int, nargs="+", default=[1, 4, 8, 12])
    parser.add_argument("--width-clients", type=int, default=4, help="per node, width section")
    parser.add_argument("--width-jobs", type=int, default=2,
                        help="jobs per node, watched by that node's clients only")  # fmt: skip
    parser.add_argument("--width-rate", type=float, default=200.0, help="updates/s, width")
    parser.add_argument("--width-seconds", type=float, default=10.0)
    parser.add_argument("--width-idle", type=float, default=5.0,
                        help="seconds of idle CPU measured per cluster, width section")  # fmt: skip
    parser.add_argument("--width-replay-nodes", type=int, default=4,
                        help="the cluster size that also takes the replayed rates")  # fmt: skip
    parser.add_argument(
        "--width-replay-rates", type=float, nargs="+", default=[200, 1000, 2000, 4000]
    )
    parser.add_argument("--width-replay-seconds", type=float, default=5.0)
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--out", type=Path, default=HERE / "results" / "latest.md")
    args = parser.parse_args()
    # Killed (a test's timeout, Ctrl-C): stop every server and Redis this run started.
    signal.signal(signal.SIGTERM, lambda signum, _: sys.exit(128 + signum))

    sections = {
        "fanout": lambda: fanout(args.clients, args.events, args.repeat),
        "rate": lambda: fanout([args.rate_clients], args.events, args.repeat, args.rate),
        "flood": lambda: flood(args.rate_clients, args.events, args.rate, args.repeat),
        "memory": lambda: memory_table(args.memory_clients),
        "idle": lambda: idle_table(args.idle_clients, args.hold),
        "durable": lambda: durable(args.updates, args.concurrency, args.jobs, args.repeat),
        "hotjob": lambda: hotjob(args.hot_updates, args.hot_concurrency, args.repeat),
        "scaleout": lambda: scaleout(
            args.scaleout_nodes,
            args.scaleout_clients,
            args.scaleout_jobs,
            args.scaleout_updates,
            args.scaleout_concurrency,
            args.order_updates,
            args.order_rate,
            args.repeat,
        ),
        "logs": lambda: logs(
            args.log_lines,
            args.log_batch,
            args.log_subscribers,
            args.log_in_flight,
            args.log_line_bytes,
            args.log_updates,
            args.repeat,
        ),
        "width": lambda: width(
            args.width_nodes,
            args.width_clients,
            args.width_jobs,
            args.width_rate,
            args.width_seconds,
            args.width_idle,
            args.width_replay_nodes,
            args.width_replay_rates,
            args.width_replay_seconds,
            args.repeat,
        ),
    }
    header = (f"Switchboard (Python) beside Node socket.io 4.8, same machine, same run "
              f"({os.cpu_count()} CPUs); clients: the official socket.io-client over "
              f"websocket, in one Node process.\n")  # fmt: skip
    print(header, flush=True)
    report = [header]
    for name in args.only:
        section = sections[name]()
        print(section, flush=True)
        report.append(section)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
