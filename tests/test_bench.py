"""A tiny run of the benchmark harness, so it never rots (the figures are not checked)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .conftest import ROOT, require_binary


def run_bench(args: list[str], out: Path, timeout: float) -> str:
    """bench/run.py in its own process group; afterwards nothing of that group may be
    left running (servers, redis-server, Node tools), and on a timeout all of it is killed."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "run.py"), *args, "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        start_new_session=True,
    )  # fmt: skip
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)  # run.py stops what it started on SIGTERM
        output, _ = proc.communicate(timeout=30)
        raise AssertionError(f"bench/run.py {args} took over {timeout} s:\n{output}") from None
    finally:
        left = leftovers(proc.pid)
    assert proc.returncode == 0, output
    assert not left, f"bench/run.py left processes running: {left}"
    return out.read_text()


def leftovers(group: int) -> bool:
    """Whether anything of the process group still runs; kills it if so."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return False
        time.sleep(0.1)
    os.killpg(group, signal.SIGKILL)
    return True


def rows(markdown: str, title: str) -> list[dict[str, str]]:
    """The rows of the table under the `### {title}...` heading, as head -> cell."""
    lines = markdown.split(f"### {title}", 1)[1].split("\n\n", 2)[1].splitlines()
    head = [cell.strip() for cell in lines[0].strip("|").split("|")]
    return [dict(zip(head, (cell.strip() for cell in line.strip("|").split("|")), strict=True))
            for line in lines[2:]]  # fmt: skip


def test_bench_harness_smoke(tmp_path: Path) -> None:
    require_binary("node")
    table = run_bench(
        ["--clients", "20", "--events", "5", "--repeat", "1", "--rate", "50",
         "--rate-clients", "10", "--memory-clients", "20", "--idle-clients", "20", "--hold", "1",
         "--updates", "100", "--concurrency", "8", "--jobs", "4",
         "--only", "fanout", "rate", "flood", "memory", "idle", "durable"],
        tmp_path / "latest.md", timeout=300,
    )  # fmt: skip
    for section in ("Fan-out", "Steady rate", "Flood", "Memory", "Idle", "Durable publish"):
        assert f"### {section}" in table
    assert "| switchboard | 20 | 20 | 20 | 0 |" in table  # every idle client connected, stayed
    assert "| SQLite |" in table


def test_bench_hot_job_and_scale_out_smoke(tmp_path: Path) -> None:
    """The hot-job and scale-out sections, tiny: every row there, nothing refused."""
    require_binary("node")
    require_binary("redis-server")
    table = run_bench(
        ["--repeat", "1", "--hot-updates", "40", "--hot-concurrency", "4", "16",
         "--scaleout-nodes", "1", "2", "3", "--scaleout-clients", "12", "--scaleout-jobs", "2",
         "--scaleout-updates", "24", "--scaleout-concurrency", "8", "--order-updates", "16",
         "--only", "hotjob", "scaleout"],
        tmp_path / "latest.md", timeout=240,
    )  # fmt: skip

    hot = rows(table, "Hot job")
    stores = ["SQLite", "Redis (appendfsync always)", "memory (not durable)"]
    assert [(r["store"], r["in flight"]) for r in hot] == [
        (store, flight) for flight in ("4", "16") for store in stores
    ]
    assert all(r["refused (all runs)"] == "0" for r in hot), hot

    scale = rows(table, "Scale-out")
    assert [(r["store"], r["nodes"]) for r in scale] == [
        ("memory (not shared)", "1"), ("Redis", "1"), ("Redis", "2"), ("Redis", "3")
    ]  # fmt: skip
    assert all(r["refused (all runs)"] == "0" for r in scale), scale
    assert [len(r["CPU s per 1,000 deliveries, each node"].split(" / ")) for r in scale] == [
        1, 1, 2, 3
    ]  # fmt: skip

    order = rows(table, "Ordering cost")
    assert [(r["nodes"], r["updates POSTed through"]) for r in order] == [
        ("2", "node 1 only"), ("2", "all 2 nodes"), ("3", "node 1 only"), ("3", "all 3 nodes")
    ]  # fmt: skip
    assert all(r["refused (all runs)"] == "0" for r in order), order


def test_bench_logs_smoke(tmp_path: Path) -> None:
    """The live log lines section, tiny: every row there, every line delivered in order,
    nothing refused."""
    require_binary("node")
    require_binary("redis-server")
    table = run_bench(
        ["--repeat", "1", "--log-lines", "300", "--log-batch", "50", "--log-subscribers", "1",
         "3", "--log-updates", "20", "--log-in-flight", "2", "--only", "logs"],
        tmp_path / "latest.md", timeout=180,
    )  # fmt: skip
    found = rows(table, "Live log lines")
    stores = ["SQLite", "Redis (appendfsync always)", "memory (not durable)"]
    assert [(r["store"], r["subscribers"], r["lines per POST"]) for r in found] == [
        (store, subscribers, "50") for subscribers in ("1", "3") for store in stores
    ]
    faults = next(head for head in found[0] if head.startswith("lines missing"))
    assert all(r[faults] == "0 / 0 / 0 / 0 / 0" for r in found), found
    assert all(r["updates refused"] == "0" for r in found), found
    assert "SQLite against the target of 20,000 lines/s" in table


def test_bench_width_smoke(tmp_path: Path) -> None:
    """The width section, tiny: every row there, every watched event delivered once in
    order, nothing refused, every node still subscribed, and the summary written."""
    require_binary("node")
    require_binary("redis-server")
    table = run_bench(
        ["--repeat", "1", "--width-nodes", "1", "2", "--width-clients", "2", "--width-jobs",
         "1", "--width-rate", "40", "--width-seconds", "1", "--width-idle", "0.5",
         "--width-replay-nodes", "2", "--width-replay-rates", "100", "--width-replay-seconds",
         "1", "--only", "width"],
        tmp_path / "latest.md", timeout=180,
    )  # fmt: skip
    watched = rows(table, "Width:")
    assert [(r["nodes"], r["clients"], r["watched jobs"]) for r in watched] == [
        ("1", "2", "1"), ("2", "4", "2")
    ]  # fmt: skip
    faults = next(head for head in watched[0] if head.startswith("deliveries missing"))
    assert all(r[faults] == "0 / 0 / 0 / 0 / 0 / 0" for r in watched), watched
    for r in watched:
        delivered, expected = r["delivered / expected (all runs)"].split(" / ")
        assert delivered == expected != "0", r
    assert [len(r["CPU s per 1,000 updates, each node"].split(" / ")) for r in watched] == [1, 2]

    unwatched = rows(table, "Width, unwatched:")
    assert [(r["nodes"], r["pub/sub subscribers"]) for r in unwatched] == [("1", "1"), ("2", "2")]
    assert all(r[faults] == "0 / 0 / 0 / 0 / 0 / 0" for r in unwatched), unwatched
    assert unwatched[1]["µs per unwatched event per node, mean (min to max)"] != "-"

    replayed = rows(table, "Width, unwatched at higher rates")
    assert [r["events/s"] for r in replayed] == ["100"]
    assert all(r[faults] == "0 / 0 / 0 / 0 / 0 / 0" for r in replayed), replayed
    assert "of one core per node at 1,000 events/s cluster-wide" in table
