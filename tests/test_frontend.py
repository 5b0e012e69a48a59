"""The front-end developer's path, as users build it.

The README's React hooks and Vue composables are taken from README.md as they are, bundled
with esbuild (the module imported by URL, or installed with `switchboard client-js` and
npm), served from a second origin and driven in headless Chromium (Debian's). The types
are checked by tsc, and the README's plain-WebSocket class runs in Node against /ws.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from aiohttp import web
from playwright.async_api import Browser, Page
from switchboard_server import __version__
from switchboard_server.cli import write_client_package

from .conftest import (
    ADMIN,
    ARTIFACTS,
    ROOT,
    SECRET,
    Api,
    Server,
    ServerProcess,
    StartServer,
    free_port,
    require_binary,
    switchboard_cmd,
)

FRONTEND = ROOT / "tests" / "frontend"
STATIC = ROOT / "server" / "switchboard_server" / "static"
README_URL = "http://127.0.0.1:8001"  # the server URL in the README's snippets
SNIPPETS = {  # the README block each app is built on, by its first line
    "react": ("// useSwitchboard.jsx (React hooks)", "readme.jsx", "react-app.jsx"),
    "vue": ("// useSwitchboard.js (Vue composables)", "readme.js", "vue-app.js"),
}
WS_CLASS = "// switchboard-ws.js"
ONE, OTHER = "build-42", "deploy-7"
TIMEOUT = 15000  # ms, for each wait in the page


def readme_block(first_line: str) -> str:
    """The fenced code block of README.md that starts with `first_line`, exactly as written."""
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```$", (ROOT / "README.md").read_text(), re.M | re.S)
    found = [block for block in blocks if block.startswith(first_line)]
    assert len(found) == 1, f"README.md has {len(found)} blocks starting with {first_line!r}"
    return str(found[0])


async def run(*command: str | Path, cwd: Path | None = None, timeout: float = 120) -> str:
    """Run a command to its end without blocking the servers on this loop; its stdout."""
    proc = await asyncio.create_subprocess_exec(
        *map(str, command), cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, f"{command}:\n{err.decode()}{out.decode()}"
    return out.decode()


@pytest.fixture(scope="module")
def node() -> str:
    binary = require_binary("node")
    assert (FRONTEND / "node_modules" / "esbuild").is_dir(), "run `make test` (npm ci)"
    return binary


@pytest.fixture(scope="module")
def app_dir(node: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An app folder where `switchboard client-js DIR` and `npm install ./DIR` have run."""
    npm = require_binary("npm")
    root = tmp_path_factory.mktemp("frontend")
    subprocess.run(
        [*switchboard_cmd(), "client-js", str(root / "switchboard-client")],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    app = root / "app"
    app.mkdir()
    (app / "package.json").write_text('{"name": "app", "private": true, "type": "module"}\n')
    subprocess.run(
        [npm, "install", "--offline", "--no-audit", "--no-fund", "--loglevel=error",
         "../switchboard-client"],
        cwd=app, check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    return app


async def build_app(
    node: str, app_dir: Path, name: str, framework: str, mode: str, server_url: str
) -> Path:
    """Bundle the README snippet of `framework` in a test app; return the folder to serve.

    The README's server URL becomes the test server's; nothing else changes."""
    first_line, snippet_name, entry = SNIPPETS[framework]
    out = app_dir / name
    out.mkdir()
    sources = {path.name: path.read_text() for path in (FRONTEND / "src").iterdir()}
    sources[snippet_name] = readme_block(first_line)
    for file_name, text in sources.items():
        (out / file_name).write_text(text.replace(README_URL, server_url))
    await run(node, FRONTEND / "build.mjs", out / entry, out / "app.js", mode, timeout=60)
    imported = f'from "{server_url}/switchboard.js"' in (out / "app.js").read_text()
    assert imported == (mode == "url")  # else the module is inside the bundle
    return out


ServeStatic = Callable[[Path, int], Awaitable[str]]


@pytest.fixture
async def serve_static() -> AsyncIterator[ServeStatic]:
    """A plain static file server: the app's own origin, not the Switchboard server's."""
    runners: list[web.AppRunner] = []

    async def serve(directory: Path, port: int) -> str:
        app = web.Application()
        app.router.add_static("/", directory)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)
        return f"http://127.0.0.1:{port}"

    yield serve
    for runner in runners:
        await runner.cleanup()


async def open_app(
    browser: Browser, origin: str, transport: str, token: str | None = None, tag: str | None = None
) -> Page:
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.errors = errors  # type: ignore[attr-defined]
    query = [("job", ONE), ("job", OTHER), ("transport", transport)]
    query += [("token", token)] if token else []
    query += [("tag", tag)] if tag else []
    await page.goto(f"{origin}/index.html?{urlencode(query)}")
    return page


async def wait_status(page: Page, text: str) -> None:
    await page.wait_for_function(
        "text => document.querySelector('[role=status]')?.textContent === text",
        arg=text, timeout=TIMEOUT,
    )  # fmt: skip


async def wait_shown(page: Page, where: str, progress: float, message: str) -> None:
    """Wait until the <progress> in #where shows this job state."""
    await page.wait_for_function(
        """([where, progress, message]) => {
            const bar = document.querySelector(`#${where} progress`);
            return bar?.value === progress && bar.title === message;
        }""",
        arg=[where, progress, message], timeout=TIMEOUT,
    )  # fmt: skip


async def seen(page: Page) -> dict[str, list[list[int]]]:
    """The seqs each watchJob() caller received, in order (see tests/frontend/src/record.js)."""
    logs: list[dict[str, Any]] = await page.evaluate("() => window.seen")
    by_job: dict[str, list[list[int]]] = {}
    for log in logs:
        by_job.setdefault(log["job"], []).append(log["seqs"])
    return by_job


async def wait_seen(page: Page, job: str, last: int) -> None:
    await page.wait_for_function(
        "([job, last]) => window.seen.filter((l) => l.job === job)"
        ".every((l) => l.seqs.at(-1) === last)",
        arg=[job, last], timeout=TIMEOUT,
    )  # fmt: skip


def job_sockets(server: Server) -> int:
    """How many /job sockets the server has."""
    return len(server.sio.manager.rooms.get("/job", {}).get(None, {}))


def connections(server: Server) -> int:
    """How many Engine.IO connections (what a browser opens) the server has."""
    return len(server.sio.eio.sockets)


def admin(url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10)


@pytest.mark.parametrize("transport", ["websocket", "polling"])
@pytest.mark.parametrize("mode", ["url", "package"])
@pytest.mark.parametrize("framework", ["react", "vue"])
async def test_components_share_one_socket(
    start_server: StartServer,
    serve_static: ServeStatic,
    browser: Browser,
    node: str,
    app_dir: Path,
    tmp_path: Path,
    framework: str,
    mode: str,
    transport: str,
) -> None:
    app_port = free_port()
    origin = f"http://127.0.0.1:{app_port}"
    server = await start_server(cors_origins=[origin])
    async with admin(server.url) as http:
        api = Api(http)
        await api.update(ONE, status="running", progress=10, message="fetching")
        await api.update(ONE, progress=20, message="compiling")
        await api.update(OTHER, status="running", progress=7, message="waiting")
        out = await build_app(node, app_dir, tmp_path.name, framework, mode, server.url)
        page = await open_app(browser, await serve_static(out, app_port), transport)

        await wait_status(page, "live")
        for where in ("first", "second"):
            await wait_shown(page, where, 20, "compiling")  # the current state
        await wait_shown(page, "third", 7, "waiting")

        for progress in (30, 40, 50):
            await api.update(ONE, progress=progress, message=f"at {progress}")
        for where in ("first", "second"):
            await wait_shown(page, where, 50, "at 50")
        await wait_seen(page, ONE, 5)
        await wait_shown(page, "third", 7, "waiting")  # another job: it did not move
        assert await seen(page) == {ONE: [[2, 3, 4, 5], [2, 3, 4, 5]], OTHER: [[1]]}
        assert await page.evaluate("() => window.transportName()") == transport
        assert (job_sockets(server), connections(server)) == (1, 1)  # one for the whole page
        assert page.errors == []  # type: ignore[attr-defined]
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / f"frontend-{framework}-{mode}-{transport}.png"))


@pytest.mark.parametrize("transport", ["websocket", "polling"])
@pytest.mark.parametrize("framework", ["react", "vue"])
async def test_server_restart_leaves_no_gap(
    start_server: StartServer,
    serve_static: ServeStatic,
    browser: Browser,
    node: str,
    app_dir: Path,
    tmp_path: Path,
    framework: str,
    transport: str,
) -> None:
    app_port, port = free_port(), free_port()
    origin = f"http://127.0.0.1:{app_port}"
    options = {"store": f"sqlite:///{tmp_path}/frontend.db", "port": port, "cors_origins": [origin]}
    server = await start_server(**options)
    async with admin(server.url) as http:
        api = Api(http)
        await api.update(ONE, status="running", progress=0, message="step 0")
        await api.update(OTHER, status="running", progress=7, message="waiting")
        out = await build_app(node, app_dir, tmp_path.name, framework, "package", server.url)
        page = await open_app(browser, await serve_static(out, app_port), transport)
        await wait_status(page, "live")
        for where in ("first", "second"):  # every component has its state before the stop
            await wait_shown(page, where, 0, "step 0")
        await wait_seen(page, OTHER, 1)

        await server.stop()
        await page.wait_for_function(
            "() => document.querySelector('[role=status]').textContent !== 'live'",
            timeout=TIMEOUT,
        )
        server = await start_server(**options)  # same port, same store
        for step in range(1, 5):  # while the page is still away: they come as `missed`
            await api.update(ONE, progress=step * 10, message=f"step {step}")
        await wait_status(page, "live")
        for step in range(5, 9):  # live again
            await api.update(ONE, progress=step * 10, message=f"step {step}")
        await api.update(ONE, status="succeeded", progress=100, message="done")
        for where in ("first", "second"):
            await wait_shown(page, where, 100, "done")
        await wait_seen(page, ONE, 10)
        every = list(range(1, 11))  # each event once, in order, none missing
        assert await seen(page) == {ONE: [every, every], OTHER: [[1]]}
        assert (job_sockets(server), connections(server)) == (1, 1)
        assert page.errors == []  # type: ignore[attr-defined]


async def wait_listed(page: Page, jobs: list[str]) -> None:
    """Wait until MyJobs (#mine) lists exactly these jobs."""
    await page.wait_for_function(
        """ids => JSON.stringify([...document.querySelectorAll("#mine li")]
            .map((li) => li.dataset.job).sort()) === JSON.stringify(ids)""",
        arg=sorted(jobs), timeout=TIMEOUT,
    )  # fmt: skip


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_react_lists_a_users_jobs_and_refreshes_its_token(
    start_server: StartServer,
    serve_static: ServeStatic,
    browser: Browser,
    node: str,
    app_dir: Path,
    tmp_path: Path,
    transport: str,
) -> None:
    """The README's useTaggedJobs: a user's jobs come and go live, and a token that expires
    in seconds is renewed through refreshToken (from the app's own origin)."""
    app_port = free_port()
    origin = f"http://127.0.0.1:{app_port}"
    server = await start_server(cors_origins=[origin], client_secret=SECRET)
    async with admin(server.url) as http:
        api = Api(http)
        await api.update("a", status="running", progress=10, tags=["user:42"])
        await api.update("b", status="running", progress=20, tags=["user:42", "batch:1"])
        await api.update("c", status="running", progress=30, tags=["user:7"])
        grant = {"sub": "web", "jobs": [ONE, OTHER], "tags": ["user:42"]}
        _, short = await api.post("/api/tokens", json={**grant, "ttl": 3})
        _, fresh = await api.post("/api/tokens", json={**grant, "ttl": 600})
        out = await build_app(node, app_dir, tmp_path.name, "react", "url", server.url)
        (out / "my-app").mkdir()
        (out / "my-app" / "switchboard-token").write_text(fresh["token"])
        site = await serve_static(out, app_port)
        page = await open_app(browser, site, transport, token=short["token"], tag="user:42")

        await wait_status(page, "live")
        await wait_listed(page, ["a", "b"])
        await api.update("d", status="queued", tags=["user:42"])  # a new job of the user's
        await wait_listed(page, ["a", "b", "d"])
        await api.update("b", tags=["batch:1"])  # no longer the user's
        await wait_listed(page, ["a", "d"])
        await asyncio.sleep(4)  # past the first token's exp: without a refresh, cut off
        await api.update("a", status="succeeded", progress=100)
        await page.wait_for_function(
            "() => document.querySelector('#mine li[data-job=a]')?.textContent"
            ".includes('succeeded')",
            timeout=TIMEOUT,
        )
        await wait_status(page, "live")
        assert page.errors == []  # type: ignore[attr-defined]


@pytest.mark.parametrize("transport", ["websocket", "polling"])
@pytest.mark.parametrize("framework", ["react", "vue"])
async def test_refused_token_is_shown(
    start_server: StartServer,
    serve_static: ServeStatic,
    browser: Browser,
    node: str,
    app_dir: Path,
    tmp_path: Path,
    framework: str,
    transport: str,
) -> None:
    app_port = free_port()
    origin = f"http://127.0.0.1:{app_port}"
    server = await start_server(cors_origins=[origin], client_secret=SECRET)
    async with admin(server.url) as http:
        api = Api(http)
        await api.update(ONE, status="running", progress=20, message="compiling")
        grant = {"sub": "web", "jobs": [ONE, OTHER], "ttl": 600}
        _, minted = await api.post("/api/tokens", json=grant)
        out = await build_app(node, app_dir, tmp_path.name, framework, "url", server.url)
        site = await serve_static(out, app_port)

        refused = await open_app(browser, site, transport, token="not-a-valid-jwt")
        await wait_status(refused, "offline: unauthorized")  # connect_error, from onConnection
        assert await seen(refused) == {ONE: [[], []], OTHER: [[]]}
        assert job_sockets(server) == 0

        allowed = await open_app(browser, site, transport, token=minted["token"])
        await wait_status(allowed, "live")
        await wait_shown(allowed, "first", 20, "compiling")
        for page in (refused, allowed):
            assert page.errors == []  # type: ignore[attr-defined]


async def test_types_check_with_tsc(node: str, app_dir: Path) -> None:
    """A typed app on the installed package, and on the URL import mapped by tsconfig paths."""
    for name in ("example.ts", "url-import.ts", "tsconfig.json"):
        shutil.copy(FRONTEND / "typed" / name, app_dir / name)
    tsc = FRONTEND / "node_modules" / "typescript" / "bin" / "tsc"
    await run(node, tsc, "--noEmit", "-p", app_dir / "tsconfig.json", timeout=120)


def test_types_declare_every_export() -> None:
    module = (STATIC / "switchboard.js").read_text()
    exported = set(re.findall(r"^export (?:async )?(?:function|const|class) (\w+)", module, re.M))
    types = (STATIC / "switchboard.d.ts").read_text()
    declared = set(re.findall(r"^export declare (?:function|const) (\w+)", types, re.M))
    assert exported == declared
    assert {"Job", "JobEvent", "JobStatus", "Room", "ConnectionState", "SwitchboardError"} <= set(
        re.findall(r"^export (?:interface|type) (\w+)", types, re.M)
    )


def test_client_js_writes_an_installable_package(app_dir: Path) -> None:
    package = app_dir / "node_modules" / "switchboard-client"  # npm's link to DIR
    manifest = json.loads((package / "package.json").read_text())
    assert manifest["name"] == "switchboard-client"
    assert manifest["version"] == __version__
    assert manifest["type"] == "module"
    assert manifest["main"] == "./switchboard.js"
    assert manifest["types"] == "./switchboard.d.ts"
    assert manifest["exports"]["."] == {
        "types": "./switchboard.d.ts",
        "default": "./switchboard.js",
    }
    assert "dependencies" not in manifest  # socket.io-client is the relative vendor copy
    for name in ("switchboard.js", "switchboard.d.ts", "vendor/socket.io.esm.min.js"):
        assert (package / name).read_bytes() == (STATIC / name).read_bytes(), name
    helped = subprocess.run(
        [*switchboard_cmd(), "client-js", "--help"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    assert "configure({ url })" in helped.stdout
    assert "npm install ./DIR" in helped.stdout


def test_client_js_without_the_vendor_copy_says_what_to_run(tmp_path: Path) -> None:
    bare = tmp_path / "static"
    bare.mkdir()
    for name in ("switchboard.js", "switchboard.d.ts"):
        shutil.copy(STATIC / name, bare / name)
    with pytest.raises(FileNotFoundError, match="make static"):
        write_client_package(tmp_path / "out", static=bare)
    assert not (tmp_path / "out").exists()  # nothing half-written

    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("")
    failed = subprocess.run(
        [*switchboard_cmd(), "client-js", str(in_the_way)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert failed.returncode == 1
    assert "error:" in failed.stderr


# -- the README's plain-WebSocket class, in Node ---------------------------------------


@pytest.fixture
def ws_class(tmp_path: Path) -> Path:
    """The class from README.md, which examples/miniprogram_client.js also carries."""
    block = readme_block(WS_CLASS)
    assert block in (ROOT / "examples" / "miniprogram_client.js").read_text()
    path = tmp_path / "switchboard-ws.js"
    path.write_text(block)
    return path


async def start_driver(
    node: str, ws_class: Path, url: str, token: str | None = None
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        node, "--experimental-websocket", str(FRONTEND / "ws-driver.mjs"),
        str(ws_class), url, ONE, "lobby", *([token] if token else []),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def read_until(proc: asyncio.subprocess.Process, key: str) -> list[dict[str, Any]]:
    """The driver's lines up to and including the first one with `key`."""
    assert proc.stdout is not None
    lines: list[dict[str, Any]] = []
    while not lines or key not in lines[-1]:
        raw = await asyncio.wait_for(proc.stdout.readline(), 15)
        assert raw, f"the driver ended before {key!r}: {lines}"
        lines.append(json.loads(raw))
    return lines


async def test_readme_ws_class_rides_through_a_restart(
    spawn_server: Callable[..., ServerProcess], node: str, ws_class: Path, tmp_path: Path
) -> None:
    store, port = f"sqlite:///{tmp_path}/ws.db", free_port()
    server = spawn_server("--store", store, port=port)
    async with admin(server.url) as http:
        api = Api(http)
        await api.update(ONE, status="running", progress=0)
        proc = await start_driver(node, ws_class, server.url)
        try:
            lines = await read_until(proc, "sent")
            assert {"joined": "lobby", "members": 1} in lines
            assert {"sent": "hello from /ws"} in lines
            assert {"job": 1, "status": "running", "progress": 0} in lines

            server.kill()  # a crash: the class reconnects every second until the server is back
            lines += await read_until(proc, "closed")
            lines += await read_until(proc, "closed")  # a reconnect failed, and it goes on
            spawn_server("--store", store, port=port)
            for step in range(1, 6):
                await api.update(ONE, progress=step * 10)
            await api.update(ONE, status="succeeded")
            out, err = await asyncio.wait_for(proc.communicate(), 30)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert proc.returncode == 0, err.decode()
    lines += [json.loads(line) for line in out.decode().splitlines()]
    assert [line["job"] for line in lines if "job" in line] == list(range(1, 8)), (lines, err)
    assert lines[-2:-1] == [{"sent": "at the end"}]  # in the room again after the restart
    assert "closed" in lines[-1]  # closed by the client after the terminal event
    assert not [line for line in lines if "error" in line]


async def test_readme_ws_class_stops_when_refused(
    start_server: StartServer, node: str, ws_class: Path
) -> None:
    server = await start_server(client_secret=SECRET)
    proc = await start_driver(node, ws_class, server.url, token="not-a-valid-jwt")
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 4, err.decode()  # it gave up instead of retrying
    assert [json.loads(line) for line in out.decode().splitlines()] == [{"closed": 4401}]
