"""The examples in examples/ run as a user would run them, through a server restart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from .conftest import ADMIN, ROOT, ServerProcess, free_port


def test_worker_and_watcher_ride_through_a_restart(
    spawn_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    store, port = f"sqlite:///{tmp_path}/examples.db", free_port()
    server = spawn_server("--store", store, port=port)
    env = {**os.environ, "SWITCHBOARD_URL": server.url, "SWITCHBOARD_ADMIN_TOKEN": ADMIN}
    examples = ROOT / "examples"
    worker = subprocess.Popen(
        [sys.executable, str(examples / "worker.py"), "example", "--steps=20", "--pause=0.15"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert worker.stdout is not None
    worker.stdout.readline()  # the job exists and has made progress
    watcher = subprocess.Popen(
        [sys.executable, str(examples / "watch.py"), "example"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert watcher.stdout is not None
    first = watcher.stdout.readline()  # it is connected and following
    time.sleep(0.3)
    server.kill(signal.SIGKILL)
    time.sleep(0.5)  # the worker retries, the watcher reconnects
    spawn_server("--store", store, port=port)

    _, worker_err = worker.communicate(timeout=60)
    assert worker.returncode == 0, worker_err
    out, err = watcher.communicate(timeout=60)
    assert watcher.returncode == 0, err
    seqs = [json.loads(line)["seq"] for line in (first + out).splitlines()]
    assert seqs == list(range(seqs[0], 23))  # running, 20 steps, succeeded: seq 22 is last
