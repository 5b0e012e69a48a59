"""The dashboard and /switchboard.js in headless Chromium (Debian's, never a downloaded one)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
from playwright.async_api import Browser, Page

from .conftest import (
    ADMIN,
    ARTIFACTS,
    Api,
    Connect,
    Edge,
    Server,
    StartServer,
    free_port,
)

BROWSER_TRANSPORTS = {"websocket": "websocket", "polling": "polling", "upgrade": None}


async def open_dashboard(browser: Browser, url: str, transport: str, **viewport: int) -> Page:
    page = await browser.new_page(viewport={"width": 1280, "height": 800, **viewport})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("dialog", lambda dialog: errors.append(f"dialog: {dialog.message}"))
    page.errors = errors  # type: ignore[attr-defined]
    forced = BROWSER_TRANSPORTS[transport]
    await page.goto(url + (f"/?transport={forced}" if forced else "/"))
    want = forced or "websocket"
    await page.wait_for_selector(f"#connection[data-transport={want}]", timeout=15000)
    return page


async def job_text(page: Page, job_id: str, part: str) -> str:
    return await page.locator(f".job:has(.job-id:text-is('{job_id}')) .{part}").inner_text()


async def log_seqs(page: Page) -> list[int]:
    values = await page.locator("#log li").evaluate_all("items => items.map(i => +i.dataset.seq)")
    return sorted(values)


async def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


async def test_dashboard_shows_progress_moving_live(
    server: Server, api: Api, browser: Browser, transport: str, edge: Edge
) -> None:
    page = await open_dashboard(browser, edge(server), transport)
    await api.update("build-7", status="running", progress=10, message="fetching")
    await page.wait_for_selector(".job-id:text-is('build-7')")
    for progress in (40, 70):
        await api.update("build-7", progress=progress, message=f"at {progress}")
        await page.wait_for_function(
            "p => document.querySelector('.job .percent')?.textContent === p", arg=f"{progress}%"
        )
    assert await job_text(page, "build-7", "message") == "at 70"
    await api.update("build-7", status="succeeded", progress=100)
    await page.wait_for_selector(".job[data-status=succeeded]")
    await shot(page, f"dashboard-{transport}")
    assert page.errors == []  # type: ignore[attr-defined]


async def test_event_log_and_announcements(
    server: Server, api: Api, browser: Browser, transport: str
) -> None:
    for step in range(1, 4):
        await api.update("logged", status="running", progress=step * 10, message=f"step {step}")
    page = await open_dashboard(browser, server.url, transport)
    await page.click(".job-id:text-is('logged')")
    await page.wait_for_function("() => document.querySelectorAll('#log li').length === 3")
    await api.update("logged", progress=90)
    await page.wait_for_function("() => document.querySelectorAll('#log li').length === 4")
    assert await log_seqs(page) == [1, 2, 3, 4]
    await api.post("/api/announcements", json={"text": "deploy at five", "level": "warning"})
    await page.wait_for_selector("#announcements li:has-text('deploy at five')")


async def test_reconnects_after_a_restart_and_misses_nothing(
    start_server: StartServer, browser: Browser, tmp_path: Path, transport: str, edge: Edge
) -> None:
    store, port = f"sqlite:///{tmp_path}/browser.db", free_port()
    server = await start_server(store=store, port=port)
    url = edge(server)  # nginx, when used, keeps pointing at the same port
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}
    ) as http:
        api = Api(http)
        await api.update("survivor", status="running", progress=5)
        page = await open_dashboard(browser, url, transport)
        await page.click(".job-id:text-is('survivor')")
        await page.wait_for_function("() => document.querySelectorAll('#log li').length === 1")

        await server.stop()
        await page.wait_for_selector("#connection[data-state=disconnected]", timeout=15000)
        await start_server(store=store, port=port)
        for progress in (20, 40, 60, 80):
            await api.update("survivor", progress=progress)
        await api.update("survivor", status="succeeded", progress=100)
        await page.wait_for_selector(".job[data-status=succeeded]", timeout=20000)
        await page.wait_for_function("() => document.querySelectorAll('#log li').length >= 6")
        await page.wait_for_timeout(300)
        assert await log_seqs(page) == [1, 2, 3, 4, 5, 6]  # every update once
        await shot(page, f"after-restart-{transport}")


async def test_hostile_text_is_shown_not_run(server: Server, api: Api, browser: Browser) -> None:
    hostile = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>'
    await api.update("xss", status="failed", message=hostile)
    await api.post("/api/announcements", json={"text": hostile})
    page = await open_dashboard(browser, server.url, "websocket")
    await page.wait_for_selector(".job-id:text-is('xss')")
    await page.click(".job-id:text-is('xss')")
    await page.wait_for_selector("#log li")
    await page.wait_for_selector("#announcements li")
    assert await job_text(page, "xss", "message") == hostile
    assert await page.evaluate("() => window.pwned") is None
    assert await page.locator("main img, main script").count() == 0
    assert page.errors == []  # type: ignore[attr-defined]


async def test_phone_width_layout(server: Server, api: Api, browser: Browser) -> None:
    await api.update("narrow", status="running", progress=33, message="a " * 60)
    page = await open_dashboard(browser, server.url, "websocket", width=390, height=844)
    await page.wait_for_selector(".job-id:text-is('narrow')")
    width = await page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 390  # no sideways scrolling
    await shot(page, "dashboard-phone")


async def test_switchboard_js_shares_one_socket_per_namespace(
    server: Server, api: Api, browser: Browser
) -> None:
    page = await browser.new_page()
    await page.goto(server.url + "/static/dashboard.css")  # same origin, no dashboard script
    await page.evaluate(
        """async () => {
            const sb = await import("/switchboard.js");
            window.seen = { a: [], b: [] };
            sb.watchJob("shared", (e) => window.seen.a.push(e.seq));
            sb.watchJob("shared", (e) => window.seen.b.push(e.seq));   // mounted twice
            window.same = sb.socket("/job") === sb.socket("/job");
            await new Promise((resolve) => sb.socket("/job").on("connect", resolve));
        }"""
    )
    await page.wait_for_timeout(200)
    for n in range(3):
        await api.update("shared", progress=n)
    await page.wait_for_function("() => window.seen.a.length === 3 && window.seen.b.length === 3")
    seen: dict[str, Any] = await page.evaluate("() => window.seen")
    assert seen == {"a": [1, 2, 3], "b": [1, 2, 3]}
    assert await page.evaluate("() => window.same") is True
    sockets = server.sio.manager.rooms["/job"].get(None, {})
    assert len(sockets) == 1  # one connection for the whole page


CONNECTED = re.compile(r"^\s*connected\s*$", re.IGNORECASE)


async def login_admin_ui(page: Page, url: str, password: str) -> None:
    await page.goto(url + "/admin-ui/")
    await page.get_by_label("Server URL").fill(url)
    await page.get_by_label("Username").fill("admin")
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Connect").click()


async def test_admin_ui_shows_sockets_and_rooms(
    start_server: StartServer, browser: Browser, connect: Connect
) -> None:
    server = await start_server(admin_ui=True)
    client = await connect(server.url)
    await client.call("/job", "subscribe", {"job_id": "build-1"})
    await client.call("/info", "join", {"room": "lobby"})

    page = await browser.new_page(viewport={"width": 1280, "height": 800})
    await login_admin_ui(page, server.url, "wrong password")
    await page.wait_for_timeout(1500)
    assert await page.get_by_text(CONNECTED).count() == 0

    await login_admin_ui(page, server.url, ADMIN)
    await page.get_by_text(CONNECTED).first.wait_for(timeout=15000)
    await page.get_by_role("link", name="Sockets").click()
    await choose_namespace(page, "/job")
    await page.get_by_role("cell", name="127.0.0.1").first.wait_for(timeout=15000)
    await shot(page, "admin-ui-sockets")
    await choose_namespace(page, "/info")
    await page.get_by_role("cell", name="127.0.0.1").first.wait_for(timeout=15000)
    await page.get_by_role("link", name="Rooms").click()
    await choose_namespace(page, "/job")
    await page.get_by_text("job:build-1").first.wait_for(timeout=15000)
    await choose_namespace(page, "/info")
    await page.get_by_text("room:lobby").first.wait_for(timeout=15000)
    await shot(page, "admin-ui-rooms")


async def choose_namespace(page: Page, namespace: str) -> None:
    await page.get_by_role("textbox", name="Select namespace").click(force=True)
    await page.get_by_role("option", name=namespace).click()


async def test_admin_ui_is_off_by_default(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        assert (await http.get("/admin-ui/")).status_code == 404
