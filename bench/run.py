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
- memory: server RSS per idle connection with --memory-clients connected;
- idle: --idle-clients websocket clients connect and stay --hold seconds;
- durable: --updates HTTP updates, --concurrency at a time, each answered only once
  committed: SQLite and Redis stores beside the memory store and the Node reference
  (which stores nothing).

Prints Markdown and writes it to --out. Needs node (and redis-server for the Redis row).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
NODE_REF = HERE / "node_ref"
TOKEN = "bench-admin-token"
SERVERS = ("switchboard", "node")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
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


@contextlib.contextmanager
def serving(kind: str, store: str = "memory://") -> Iterator[Server]:
    port = free_port()
    if kind == "node":
        command = ["node", str(NODE_REF / "server.mjs"), str(port)]
    else:
        command = [sys.executable, "-m", "switchboard_server", "serve", "--store", store,
                   "--port", str(port), "--log-level", "warning"]  # fmt: skip
    env = {**os.environ, "SWITCHBOARD_ADMIN_TOKEN": TOKEN}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(port, proc)
        yield Server(f"http://127.0.0.1:{port}", proc.pid)
    finally:
        stop(proc)


@contextlib.contextmanager
def redis_server() -> Iterator[str | None]:
    """A private redis-server that fsyncs every write, or None when it is not installed."""
    if shutil.which("redis-server") is None:
        yield None
        return
    port = free_port()
    with tempfile.TemporaryDirectory() as data:
        proc = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", data],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_for(port, proc)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            stop(proc)


def node(script: str, *args: object, timeout: float = 600) -> dict[str, Any]:
    done = subprocess.run(
        ["node", str(NODE_REF / script), *map(str, args)],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"{script} {args}: {done.stdout}{done.stderr}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


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


def memory_table(clients: int) -> str:
    found = idle(clients, hold=1)
    ours, theirs = found["switchboard"], found["node"]
    rows = [[clients, f"{ours['kib_per_connection']:.1f}", f"{theirs['kib_per_connection']:.1f}",
             ratio(ours["kib_per_connection"], theirs["kib_per_connection"])]]  # fmt: skip
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
                    ("switchboard", "Redis (appendfsync always)", redis),
                    ("switchboard", "memory (not durable)", "memory://"),
                    ("node", "Node reference (stores nothing)", "")]  # fmt: skip
        figures: dict[str, dict[str, float]] = {}
        for kind, name, store in variants:
            if store is None:
                rows.append([name, "redis-server not installed", "", ""])
                continue
            runs = []
            for _ in range(repeat):
                with serving(kind, store) as server:
                    runs.append(node("publish.mjs", server.url, TOKEN, updates, concurrency, jobs))
            figures[name] = {key: median(runs, key) for key in ("updates_per_s", "p50_ms",
                                                                "p99_ms")}  # fmt: skip
        reference = figures.get("Node reference (stores nothing)", {}).get("updates_per_s", 0)
        for name, f in figures.items():
            rows.append([name, f"{f['updates_per_s']:,.0f}", ratio(f["updates_per_s"], reference),
                         f"{f['p50_ms']:.1f} / {f['p99_ms']:.1f}"])  # fmt: skip
    head = ["store", "committed updates/s", "ratio to Node", "answer p50 / p99 ms"]
    title = (f"Durable publish: {updates} updates over HTTP, {concurrency} at a time, "
             f"{jobs} jobs, median of {repeat}")  # fmt: skip
    return table(title, head, rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rate", type=float, default=20.0, help="updates/s, steady section")
    parser.add_argument("--rate-clients", type=int, default=1000)
    parser.add_argument("--memory-clients", type=int, default=5000)
    parser.add_argument("--idle-clients", type=int, default=10000)
    parser.add_argument("--hold", type=float, default=30.0, help="seconds the idle clients stay")
    parser.add_argument("--updates", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--only", nargs="+", default=["fanout", "rate", "flood", "memory",
                                                      "idle", "durable"])  # fmt: skip
    parser.add_argument("--out", type=Path, default=HERE / "results" / "latest.md")
    args = parser.parse_args()

    sections = {
        "fanout": lambda: fanout(args.clients, args.events, args.repeat),
        "rate": lambda: fanout([args.rate_clients], args.events, args.repeat, args.rate),
        "flood": lambda: flood(args.rate_clients, args.events, args.rate, args.repeat),
        "memory": lambda: memory_table(args.memory_clients),
        "idle": lambda: idle_table(args.idle_clients, args.hold),
        "durable": lambda: durable(args.updates, args.concurrency, args.jobs, args.repeat),
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
