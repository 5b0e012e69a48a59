"""Fixtures: real servers on free ports, real Socket.IO clients over each transport."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import socketio
from aiohttp import web
from playwright.async_api import Browser, async_playwright
from switchboard_server import Settings, create_app

ADMIN = "test-admin-token"
SECRET = "test-client-secret-of-at-least-32-bytes"
TRANSPORTS = {"websocket": ["websocket"], "polling": ["polling"], "upgrade": None}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    url: str
    app: web.Application
    settings: Settings
    runner: web.AppRunner
    stopped: bool = False

    async def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            await self.runner.cleanup()

    @property
    def sio(self) -> Any:
        from switchboard_server.app import SIO

        return self.app[SIO]


@dataclass
class Api:
    """Admin HTTP calls against one server: `status, body = await api.post(path, json=...)`."""

    http: httpx.AsyncClient

    async def request(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        response = await self.http.request(method, path, **kwargs)
        body = response.json() if response.content else None
        return response.status_code, body

    async def get(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        return await self.request("POST", path, **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        return await self.request("DELETE", path, **kwargs)

    async def update(self, job_id: str, **fields: Any) -> dict[str, Any]:
        status, body = await self.post(f"/api/jobs/{job_id}/updates", json=fields)
        assert status in (200, 201), body
        return body  # type: ignore[no-any-return]


StartServer = Callable[..., Awaitable[Server]]


@pytest.fixture
async def start_server() -> AsyncIterator[StartServer]:
    """Start a real app on a free port; keyword arguments override Settings."""
    servers: list[Server] = []

    async def start(**overrides: Any) -> Server:
        options: dict[str, Any] = {"store": "memory://", "admin_token": ADMIN, "port": free_port()}
        options.update(overrides)
        settings = Settings(**options)
        app = create_app(settings)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", settings.port).start()
        servers.append(Server(f"http://127.0.0.1:{settings.port}", app, settings, runner))
        return servers[-1]

    yield start
    for server in reversed(servers):
        await server.stop()


@pytest.fixture
async def server(start_server: StartServer) -> Server:
    return await start_server()


@pytest.fixture
async def api(server: Server) -> AsyncIterator[Api]:
    async with httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10
    ) as http:
        yield Api(http)


@pytest.fixture
async def secured(start_server: StartServer) -> Server:
    """A server whose clients need a client token (JWT signed with SECRET)."""
    return await start_server(client_secret=SECRET)


@pytest.fixture
async def secured_admin(secured: Server) -> AsyncIterator[Api]:
    async with httpx.AsyncClient(
        base_url=secured.url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10
    ) as http:
        yield Api(http)


@pytest.fixture(params=list(TRANSPORTS))
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@dataclass
class Recorder:
    """A connected python-socketio client that records what the server pushes."""

    sio: socketio.AsyncClient
    received: dict[str, list[Any]] = field(default_factory=dict)

    def on(self, event: str, namespace: str) -> None:
        async def record(body: Any) -> None:
            self.received.setdefault(event, []).append(body)

        self.sio.on(event, record, namespace=namespace)

    async def call(self, namespace: str, event: str, *args: Any) -> Any:
        # A tuple is sent as that many arguments: () sends none, (None,) sends null.
        return await self.sio.call(event, tuple(args), namespace=namespace, timeout=10)

    async def wait_for(self, event: str, count: int = 1, timeout: float = 10.0) -> list[Any]:
        deadline = time.monotonic() + timeout
        while len(self.received.get(event, [])) < count:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"expected {count} {event!r}, got {self.received.get(event, [])}"
                )
            await asyncio.sleep(0.01)
        return self.received[event]


Connect = Callable[..., Awaitable[Recorder]]


@pytest.fixture
async def connect(transport: str) -> AsyncIterator[Connect]:
    """Connect a recording client over the parametrized transport."""
    clients: list[socketio.AsyncClient] = []

    async def open_client(
        url: str,
        namespaces: tuple[str, ...] = ("/job", "/info"),
        auth: Any = None,
        reconnection: bool = False,
        events: tuple[tuple[str, str], ...] = (),  # more (event, namespace) to record
    ) -> Recorder:
        sio = socketio.AsyncClient(reconnection=reconnection, handle_sigint=False)
        recorder = Recorder(sio)
        for event, namespace in (
            ("job:update", "/job"),
            ("error", "/job"),
            ("message", "/info"),
            ("announcement", "/info"),
            ("presence", "/info"),
            ("error", "/info"),
            *events,
        ):
            recorder.on(event, namespace)
        clients.append(sio)
        await sio.connect(
            url,
            namespaces=list(namespaces),
            auth=auth,
            transports=TRANSPORTS[transport],
            wait_timeout=10,
        )
        if transport == "upgrade":
            await _wait_upgraded(sio)
        return recorder

    yield open_client
    for sio in clients:
        if sio.connected:
            await sio.disconnect()


async def _wait_upgraded(sio: socketio.AsyncClient) -> None:
    deadline = time.monotonic() + 10
    while sio.transport() != "websocket":
        assert time.monotonic() < deadline, "polling never upgraded to websocket"
        await asyncio.sleep(0.01)


# -- server processes (durability, CLI) ------------------------------------------


@dataclass
class ServerProcess:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def kill(self, sig: int = signal.SIGKILL) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=15)


def switchboard_cmd() -> list[str]:
    return [sys.executable, "-m", "switchboard_server"]


def wait_until_healthy(url: str, proc: subprocess.Popen[Any], log: Path | None = None) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"server did not start:\n{log.read_text() if log else ''}")
        time.sleep(0.05)


def launch(
    log: Path, *args: str, port: int | None = None, env: dict[str, str] | None = None
) -> ServerProcess:
    """`switchboard serve` as a real process, answering /healthz."""
    port = port or free_port()
    environ = {**os.environ, "SWITCHBOARD_ADMIN_TOKEN": ADMIN, **(env or {})}
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [*switchboard_cmd(), "serve", "--port", str(port), *args],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=environ,
        )
    url = f"http://127.0.0.1:{port}"
    wait_until_healthy(url, proc, log)
    return ServerProcess(url, proc, log)


@pytest.fixture
def spawn_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start `switchboard serve` as a real process; every one is killed at the end."""
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(
        *args: str, port: int | None = None, env: dict[str, str] | None = None
    ) -> ServerProcess:
        log = tmp_path / f"server-{len(procs)}.log"
        server = launch(log, *args, port=port, env=env)
        procs.append(server.proc)
        return server

    yield spawn
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


# -- external binaries: nginx, node, chromium ----------------------------------------

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"


def require_binary(name: str) -> str:
    """The binary's path; in CI a missing one fails the test instead of skipping it."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed; .ci/run installs it in CI")
        pytest.skip(f"{name} is not installed (CI installs it)")
    return path


def wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 15
    while True:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"nothing listens on {port}:\n{log.read_text()}")
        time.sleep(0.05)


CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    chromium = require_binary("chromium")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield launched
        await launched.close()


ConfigEdit = Callable[[str], str]


@pytest.fixture
def start_nginx(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """Start a real nginx with the shipped config in front of the given nodes; returns its URL.

    `start(nodes, *edits)`: each edit rewrites the rendered nginx.conf (a misconfigured
    proxy, for the tests that diagnose one)."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(nodes: list[str], *edits: ConfigEdit) -> str:
        binary = require_binary("nginx")
        port = free_port()
        directory = tmp_path / f"nginx-{port}"
        subprocess.run(
            [sys.executable, str(ROOT / "nginx" / "render.py"), "--listen", f"127.0.0.1:{port}",
             *[arg for node in nodes for arg in ("--node", node)], "--standalone", str(directory)],
            check=True, capture_output=True,
        )  # fmt: skip
        conf = directory / "nginx.conf"
        text = conf.read_text()
        for edit in edits:
            text = edit(text)
        conf.write_text(text)
        log = directory / "nginx.out"
        with log.open("wb") as sink:
            proc = subprocess.Popen(
                [binary, "-p", str(directory), "-c", str(conf)],
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        procs.append(proc)
        wait_for_port(port, proc, log)
        return f"http://127.0.0.1:{port}"

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


Edge = Callable[[Server], str]


@pytest.fixture(params=["direct", "nginx"])
def edge(request: pytest.FixtureRequest, start_nginx: Callable[[list[str]], str]) -> Edge:
    """How clients reach a server: directly, or through nginx with the shipped config."""

    def url_for(server: Server) -> str:
        if request.param == "direct":
            return server.url
        return start_nginx([server.url.removeprefix("http://")])

    return url_for


# -- redis-server ----------------------------------------------------------------------


@dataclass
class RedisProcess:
    """A real redis-server on a free port, with AOF on (fsync always), restartable."""

    binary: str
    port: int
    directory: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisProcess:
        self.directory.mkdir(parents=True, exist_ok=True)
        log = self.directory / "redis.log"
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.directory),
             "--logfile", str(log)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.touch()
        wait_for_port(self.port, self.proc, log)
        return self

    def stop(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=10)


@pytest.fixture
def start_redis(tmp_path: Path) -> Iterator[Callable[[], RedisProcess]]:
    started: list[RedisProcess] = []

    def start() -> RedisProcess:
        binary = require_binary("redis-server")
        port = free_port()
        started.append(RedisProcess(binary, port, tmp_path / f"redis-{port}").start())
        return started[-1]

    yield start
    for redis in started:
        redis.stop()


@pytest.fixture(scope="module")
def live_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One server process for a module of attacks, with rate limits out of the way."""
    log = tmp_path_factory.mktemp("live") / "server.log"
    server = launch(
        log, "--store", "memory://", "--rate-per-second", "100000", "--rate-burst", "100000"
    )
    yield server.url
    server.proc.terminate()
    assert server.proc.wait(timeout=15) == 0  # it survived everything and shut down cleanly


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each store's URL in turn (Redis: the shared server; keep apart by key prefix)."""
    if request.param == "redis":
        return str(request.getfixturevalue("shared_redis").url)
    return {"memory": "memory://", "sqlite": f"sqlite:///{tmp_path}/store.db"}[request.param]


@pytest.fixture(scope="session")
def shared_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """One redis-server for tests that keep apart by key prefix."""
    binary = require_binary("redis-server")
    redis = RedisProcess(binary, free_port(), tmp_path_factory.mktemp("redis")).start()
    yield redis
    redis.stop()
