"""A tiny run of the benchmark harness, so it never rots (the figures are not checked)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .conftest import ROOT, require_binary


def test_bench_harness_smoke(tmp_path: Path) -> None:
    require_binary("node")
    out = tmp_path / "latest.md"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--clients", "20", "--events", "5",
         "--repeat", "1", "--rate", "50", "--rate-clients", "10", "--memory-clients", "20",
         "--idle-clients", "20", "--hold", "1", "--updates", "100", "--concurrency", "8",
         "--jobs", "4", "--out", str(out)],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    table = out.read_text()
    for section in ("Fan-out", "Steady rate", "Flood", "Memory", "Idle", "Durable publish"):
        assert f"### {section}" in table
    assert "| switchboard | 20 | 20 | 20 | 0 |" in table  # every idle client connected, stayed
    assert "| SQLite |" in table
