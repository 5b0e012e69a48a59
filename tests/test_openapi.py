"""/api/openapi.json describes every HTTP route the app serves, and only those."""

from __future__ import annotations

import httpx
from aiohttp import web

from .conftest import Server

NOT_HTTP_API = ("/socket.io/", "/static", "/vendor", "/v/", "/admin-ui", "/ws", "/switchboard.")


def served_routes(app: web.Application) -> set[tuple[str, str]]:
    found = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter") or info.get("prefix", "")
        if route.method in ("HEAD", "OPTIONS") or path == "/" or path.startswith(NOT_HTTP_API):
            continue
        found.add((route.method.lower(), path))
    return found


async def test_every_route_is_described(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.get("/api/openapi.json")  # public: no token needed
    assert response.status_code == 200
    spec = response.json()
    assert spec["openapi"].startswith("3.")
    described = {(method, path) for path, item in spec["paths"].items() for method in item}
    assert described == served_routes(server.app)
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            assert operation["responses"], (method, path)
    for name in ("Job", "JobCreate", "JobUpdate", "AnnouncementIn", "TokenIn", "Error"):
        assert name in spec["components"]["schemas"]
