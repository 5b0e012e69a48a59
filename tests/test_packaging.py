"""The wheel carries everything `switchboard serve` needs: installed alone, it serves the UI."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx

from .conftest import ADMIN, ROOT, free_port, wait_until_healthy


def test_wheel_installs_and_serves_without_the_source_tree(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(ROOT)],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    (wheel,) = dist.glob("switchboard-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", str(wheel)],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip

    # Run from an empty directory, with no npm on the PATH: nothing may come from the tree.
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    env = {
        "PATH": str(venv / "bin") + ":/usr/bin:/bin",
        "SWITCHBOARD_ADMIN_TOKEN": ADMIN,
        "HOME": str(tmp_path),
    }
    version = subprocess.run(
        [str(venv / "bin" / "switchboard"), "--version"],
        env=env, cwd=workdir, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert version.stdout.startswith("switchboard 0.1.0")

    port = free_port()
    server = subprocess.Popen(
        [str(venv / "bin" / "switchboard"), "serve", "--port", str(port), "--admin-ui"],
        env=env, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_healthy(url, server)
        assert "Switchboard" in httpx.get(url + "/").text
        module = httpx.get(url + "/switchboard.js")
        assert module.status_code == 200 and "watchJob" in module.text
        bundle = httpx.get(url + "/vendor/socket.io.esm.min.js")
        assert bundle.status_code == 200 and len(bundle.content) > 10_000
        admin_ui = httpx.get(url + "/admin-ui/")
        assert admin_ui.status_code == 200 and "https://" not in admin_ui.text
        assert (workdir / "switchboard.db").exists()  # the default SQLite store, here
    finally:
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=15)
    assert server.returncode == 0, err
    assert "make static" not in err  # every npm-built directory came with the wheel
