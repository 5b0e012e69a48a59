"""Wheel build hook: make sure the browser files from npm are in the wheel.

`python -m build --wheel` on a fresh clone runs `npm ci` and web/build_static.py when
the files are missing, so the wheel serves the dashboard, /switchboard.js and the Admin
UI with no npm on the machine that installs it. Editable installs skip this.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

WEB = Path(__file__).resolve().parent
BUILT = WEB.parent / "server" / "switchboard_server" / "static" / "vendor" / "socket.io.esm.min.js"


class StaticFilesHook(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if version == "editable" or BUILT.exists():
            return
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=WEB, check=True)
        subprocess.run([sys.executable, str(WEB / "build_static.py")], check=True)
