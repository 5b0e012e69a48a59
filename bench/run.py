#!/usr/bin/env python3
"""Fan-out: Switchboard beside the reference Node socket.io server, in the same run.

    python bench/run.py [--clients 1000 5000] [--events 100] [--repeat 3] [--out PATH]

Each repetition starts one server, connects N websocket subscribers to one job with
the official socket.io-client (one Node process), publishes K events and measures
deliveries/s and publish-to-delivery latency; the two servers alternate. Prints a
Markdown table with the Switchboard/Node ratios and writes it to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
NODE_REF = HERE / "node_ref"
ADMIN = "bench-admin-token"


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


def start(kind: str, port: int) -> subprocess.Popen[bytes]:
    if kind == "node":
        command = ["node", str(NODE_REF / "server.mjs"), str(port)]
    else:
        command = [sys.executable, "-m", "switchboard_server", "serve", "--store", "memory://",
                   "--port", str(port), "--log-level", "warning"]  # fmt: skip
    env = {**os.environ, "SWITCHBOARD_ADMIN_TOKEN": ADMIN}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(port, proc)
    return proc


def measure(kind: str, clients: int, events: int) -> dict[str, float]:
    port = free_port()
    server = start(kind, port)
    try:
        done = subprocess.run(
            ["node", str(NODE_REF / "load.mjs"), f"http://127.0.0.1:{port}", kind,
             str(clients), str(events), ADMIN],
            capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise SystemExit(f"{kind} N={clients}: {done.stdout}{done.stderr}")
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))
    finally:
        server.terminate()
        server.wait(timeout=15)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "latest.md")
    args = parser.parse_args()

    rows = ["| subscribers | server | deliveries/s | p50 ms | p99 ms | ratio (deliveries/s) |",
            "|---|---|---|---|---|---|"]  # fmt: skip
    for clients in args.clients:
        runs: dict[str, list[dict[str, float]]] = {"switchboard": [], "node": []}
        for _ in range(args.repeat):
            for kind in ("switchboard", "node"):  # alternate, so noise hits both
                runs[kind].append(measure(kind, clients, args.events))
        median = {
            kind: {key: statistics.median(r[key] for r in found)
                   for key in ("deliveries_per_s", "p50_ms", "p99_ms")}
            for kind, found in runs.items()
        }  # fmt: skip
        ratio = median["switchboard"]["deliveries_per_s"] / median["node"]["deliveries_per_s"]
        for kind in ("switchboard", "node"):
            m = median[kind]
            shown = f"{ratio:.2f}x" if kind == "switchboard" else "1.00x"
            rows.append(
                f"| {clients} | {kind} | {m['deliveries_per_s']:.0f} | {m['p50_ms']:.1f} "
                f"| {m['p99_ms']:.1f} | {shown} |"
            )
    table = "\n".join(rows)
    header = (f"Fan-out, {args.events} events to N websocket subscribers of one job, "
              f"median of {args.repeat}, same machine, same run.\n\n")  # fmt: skip
    print(header + table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(header + table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
