#!/usr/bin/env python3
"""Copy what the browser needs from web/node_modules into the server's static files.

Run by `make static` after `npm ci` in web/, and by the wheel build. Nothing copied
here is committed; nothing is fetched from a CDN at run time.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

WEB = Path(__file__).resolve().parent
MODULES = WEB / "node_modules"
STATIC = WEB.parent / "server" / "switchboard_server" / "static"


def build() -> None:
    vendor = STATIC / "vendor"
    vendor.mkdir(parents=True, exist_ok=True)
    for name in ("socket.io.esm.min.js", "socket.io.esm.min.js.map"):
        shutil.copy2(MODULES / "socket.io-client" / "dist" / name, vendor / name)

    admin_ui = STATIC / "admin-ui"
    shutil.rmtree(admin_ui, ignore_errors=True)
    shutil.copytree(MODULES / "@socket.io" / "admin-ui" / "ui" / "dist", admin_ui)
    for part in ("css", "fonts"):
        shutil.copytree(MODULES / "@mdi" / "font" / part, admin_ui / "mdi" / part)
    index = admin_ui / "index.html"
    page = index.read_text()
    page = re.sub(r'<link rel="stylesheet" href="https://fonts\.googleapis\.com[^"]*">', "", page)
    page = re.sub(
        r'href="https://cdn\.jsdelivr\.net/npm/@mdi/font@[^"]*/css/materialdesignicons\.min\.css"',
        'href="mdi/css/materialdesignicons.min.css"',
        page,
    )
    if "https://" in page:
        raise SystemExit("admin-ui/index.html still loads something from the internet")
    index.write_text(page)


if __name__ == "__main__":
    build()
