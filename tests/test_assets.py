"""The browser files: loadable from any origin, cached by ETag or by a versioned URL,
and nothing served beyond the files named."""

from __future__ import annotations

import httpx
import pytest
from switchboard_server import __version__

from .conftest import Server, StartServer

VERSIONED = f"/v/{__version__}"
MODULE_FILES = {
    "/switchboard.js": "text/javascript",
    "/switchboard.d.ts": "application/typescript",
    "/vendor/socket.io.esm.min.js": "text/javascript",
}


@pytest.mark.parametrize("prefix", ["", VERSIONED])
@pytest.mark.parametrize("path", list(MODULE_FILES))
async def test_module_files_load_from_any_origin(server: Server, prefix: str, path: str) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        first = await http.get(prefix + path, headers={"Origin": "http://app.example:5173"})
        assert first.status_code == 200, first.text
        assert first.headers["Access-Control-Allow-Origin"] == "*"
        assert "Access-Control-Allow-Credentials" not in first.headers
        assert first.headers["Content-Type"].startswith(MODULE_FILES[path])
        assert first.headers["X-Content-Type-Options"] == "nosniff"
        cache = first.headers["Cache-Control"]
        assert cache == ("public, max-age=31536000, immutable" if prefix else "no-cache")
        etag = first.headers["ETag"]
        again = await http.get(prefix + path, headers={"If-None-Match": etag})
        assert again.status_code == 304
        assert again.headers["Access-Control-Allow-Origin"] == "*"


async def test_versioned_module_imports_its_own_vendor_copy(server: Server) -> None:
    """The relative import resolves under /v/<version>/, on the scheme the page used."""
    async with httpx.AsyncClient(base_url=server.url) as http:
        module = (await http.get(f"{VERSIONED}/switchboard.js")).text
        assert 'from "./vendor/socket.io.esm.min.js"' in module
        assert (await http.get(f"{VERSIONED}/vendor/socket.io.esm.min.js")).status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "/v/0.0.1/switchboard.js",  # another version: never served under a wrong name
        f"{VERSIONED}/app.py",
        f"{VERSIONED}/..%2f__init__.py",
        "/vendor/..%2f..%2fapp.py",
        "/vendor/%2e%2e/index.html",
        "/static/index.html",
        "/static/..%2fapp.py",
        "/static/admin-ui/index.html",  # the Admin UI is served only with --admin-ui
        "/admin-ui/",
    ],
)
async def test_nothing_else_is_served(server: Server, path: str) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.get(path)
    assert response.status_code == 404, (path, response.text[:200])
    assert response.json()["error"]["code"] == "not_found"


async def test_admin_ui_only_when_on(start_server: StartServer) -> None:
    server = await start_server(admin_ui=True)
    async with httpx.AsyncClient(base_url=server.url) as http:
        assert (await http.get("/admin-ui/")).status_code == 200
        assert (await http.get("/static/admin-ui/index.html")).status_code == 404


async def test_dashboard_files(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        page = await http.get("/")
        assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
        for name, kind in (("dashboard.js", "text/javascript"), ("dashboard.css", "text/css")):
            response = await http.get(f"/static/{name}")
            assert response.headers["Content-Type"].startswith(kind)
