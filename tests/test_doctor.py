"""`switchboard doctor`: real nodes on a real redis-server behind real nginx, the shipped
configuration and broken copies of it (edited after rendering), checked from outside."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from email.utils import formatdate
from typing import Any

import httpx
import pytest
from switchboard_server import doctor

from .conftest import (
    RedisProcess,
    ServerProcess,
    free_port,
    switchboard_cmd,
)

Spawn = Callable[..., ServerProcess]
Edit = Callable[[str], str]
StartEdited = Callable[..., str]  # (nodes, *edits) -> URL

ALLOWED = "https://app.example"
REFUSED = "https://evil.example"
STICKY_LINE = "hash $remote_addr consistent;"


def run_doctor(*args: str) -> tuple[int, str]:
    """`switchboard doctor ARGS` as a real process: (exit code, stdout)."""
    done = subprocess.run(
        [*switchboard_cmd(), "doctor", *args], capture_output=True, text=True, timeout=100
    )
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, done.stdout


def checks(stdout: str) -> dict[str, dict[str, Any]]:
    """The --json report's checks by title ("cors https://app.example", "node http://…")."""
    report = json.loads(stdout)
    found = {}
    for check in report["checks"]:
        title = f"{check['name']} {check['subject']}" if check["subject"] else check["name"]
        found[title] = check
    return found


def without(*lines: str) -> Edit:
    """An edit that deletes the config lines equal to `lines` (each must be there)."""

    def edit(text: str) -> str:
        kept = [line for line in text.splitlines() if line.strip() not in lines]
        assert len(kept) == len(text.splitlines()) - len(lines), f"not all found: {lines}"
        return "\n".join(kept) + "\n"

    return edit


def replacing(old: str, new: str) -> Edit:
    def edit(text: str) -> str:
        assert old in text, old
        return text.replace(old, new)

    return edit


def redis_cluster(spawn: Spawn, redis: RedisProcess) -> list[ServerProcess]:
    """Two nodes on one Redis, short pings (so the timeouts check does its full wait)."""
    return [
        spawn("--store", redis.url, "--ping-interval", "2", "--ping-timeout", "2",
              "--cors-origins", ALLOWED)
        for _ in range(2)
    ]  # fmt: skip


def hostports(nodes: list[ServerProcess]) -> list[str]:
    return [node.url.removeprefix("http://") for node in nodes]


def node_args(nodes: list[ServerProcess]) -> list[str]:
    return [arg for node in nodes for arg in ("--node", node.url)]


def test_shipped_nginx_in_front_of_a_redis_cluster_passes(
    spawn_server: Spawn, start_redis: Callable[[], RedisProcess], start_nginx: Any
) -> None:
    nodes = redis_cluster(spawn_server, start_redis())
    edge = start_nginx(hostports(nodes))

    code, stdout = run_doctor(edge, *node_args(nodes), "--origin", ALLOWED, "--json")
    assert code == 0, stdout
    found = checks(stdout)
    assert json.loads(stdout)["ok"] is True
    assert set(found) == {
        "health", "stickiness", "websocket", f"cors {ALLOWED}",
        f"node {nodes[0].url}", f"node {nodes[1].url}", "clock", "timeouts",
    }  # fmt: skip
    assert {title: c["status"] for title, c in found.items() if c["status"] != "ok"} == {}
    sticky = found["stickiness"]["details"]
    assert sticky["sessions"] == 20 and sticky["misrouted"] == 0
    assert sticky["requests"] >= 20 * 4  # each session: several requests with its sid
    assert found["websocket"]["details"]["attempts"] == 1
    clocks = found["clock"]["details"]["clocks"]
    assert [c["url"] for c in clocks] == [edge, nodes[0].url, nodes[1].url]
    assert all(abs(c["skew_s"]) <= 2 for c in clocks)
    # pingInterval 2 s + pingTimeout 2 s is short enough for the full wait by default
    timeouts = found["timeouts"]["details"]
    assert timeouts["full"] is True and 1.5 <= timeouts["held_s"] < 4

    # As lines: an allowed and a refused origin; the refused one fails the run.
    code, stdout = run_doctor(edge, "--origin", ALLOWED, "--origin", REFUSED, "--sessions", "5")
    assert code == 1, stdout
    lines = stdout.splitlines()
    assert lines[0] == f"switchboard doctor {edge}"
    assert any(line.startswith(f"✓ cors {ALLOWED} ") for line in lines), stdout
    assert any(line.startswith(f"✗ cors {REFUSED} ") and "refused" in line for line in lines)
    fix = lines[next(i for i, line in enumerate(lines) if line.startswith("✗ cors")) + 1]
    assert f"fix: start the nodes with --cors-origins {REFUSED}" in fix
    assert [line.split()[1] for line in lines if line.startswith("✓")] == [
        "health", "stickiness", "websocket", "cors", "clock", "timeouts",
    ]  # fmt: skip
    assert lines[-1] == "1 of 7 checks failed"


def test_round_robin_nginx_is_named_not_sticky(
    spawn_server: Spawn, start_redis: Callable[[], RedisProcess], start_nginx: StartEdited
) -> None:
    nodes = redis_cluster(spawn_server, start_redis())
    edge = start_nginx(hostports(nodes), without(STICKY_LINE))

    code, stdout = run_doctor(edge, *node_args(nodes), "--json")
    assert code == 1, stdout
    found = checks(stdout)
    assert json.loads(stdout)["ok"] is False
    sticky = found["stickiness"]
    assert sticky["status"] == "fail"
    assert 0 < sticky["details"]["misrouted"] < sticky["details"]["requests"]
    assert sticky["summary"].startswith(
        f"not sticky: {sticky['details']['misrouted']} of {sticky['details']['requests']} "
        "polling requests reached a node that does not hold the session"
    )
    assert STICKY_LINE in sticky["fix"] and "ip_hash;" in sticky["fix"]
    # The upgrade headers are fine here: a failed upgrade is blamed on stickiness too.
    assert found["websocket"]["status"] == "ok" or found["websocket"]["fix"] == sticky["fix"]
    for title in ("health", f"node {nodes[0].url}", f"node {nodes[1].url}", "clock"):
        assert found[title]["status"] == "ok", found[title]

    code, stdout = run_doctor(edge, "--sessions", "5")
    assert code == 1
    lines = stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("✗ stickiness "))
    assert "not sticky: " in lines[at]
    assert lines[at + 1].strip() == (
        "fix: enable sticky sessions (nginx: `hash $remote_addr consistent;` or `ip_hash;` "
        "in the upstream)"
    )


def test_direct_node_then_its_redis_goes_away(
    spawn_server: Spawn, start_redis: Callable[[], RedisProcess]
) -> None:
    redis = start_redis()
    node = spawn_server("--store", redis.url)  # default pings: 25 s + 20 s

    started = time.monotonic()
    code, stdout = run_doctor(node.url, "--node", node.url, "--json")
    assert code == 0, stdout
    assert time.monotonic() - started < 30  # no 45 s wait without --slow
    found = checks(stdout)
    assert found["stickiness"]["status"] == "ok"
    assert found["clock"]["status"] == "ok"
    assert len(found["clock"]["details"]["clocks"]) == 2
    assert found[f"node {node.url}"]["status"] == "ok"
    timeouts = found["timeouts"]
    assert timeouts["status"] == "skip" and "--slow" in timeouts["summary"]
    assert timeouts["details"]["full"] is False

    redis.stop()
    dead = f"http://127.0.0.1:{free_port()}"
    code, stdout = run_doctor(node.url, "--node", dead, "--sessions", "2", "--json")
    assert code == 1, stdout
    found = checks(stdout)
    health = found["health"]
    assert health["status"] == "fail"
    assert "the store or message queue is unreachable" in health["summary"]
    assert "store unreachable" in health["details"]["message"]  # the server's own message
    assert "--store" in health["fix"]
    assert found[f"node {dead}"]["status"] == "fail"
    assert "nothing answers" in found[f"node {dead}"]["summary"]


def test_nginx_that_cuts_long_polls_and_drops_upgrade_headers(
    spawn_server: Spawn, start_nginx: StartEdited
) -> None:
    node = spawn_server("--store", "memory://", "--ping-interval", "4", "--ping-timeout", "2")
    edge = start_nginx(
        hostports([node]),
        replacing("proxy_read_timeout 75s;", "proxy_read_timeout 1s;"),
        without("proxy_set_header Upgrade $http_upgrade;",
                "proxy_set_header Connection $switchboard_connection;"),
    )  # fmt: skip

    code, stdout = run_doctor(edge, "--sessions", "5", "--json")
    assert code == 1, stdout
    found = checks(stdout)
    assert found["health"]["status"] == "ok"
    assert found["stickiness"]["status"] == "ok"  # one node: nothing to misroute
    websocket = found["websocket"]
    assert websocket["status"] == "fail"
    assert "HTTP 400" in websocket["summary"]
    assert "proxy_set_header Upgrade $http_upgrade;" in websocket["fix"]
    assert "proxy_http_version 1.1;" in websocket["fix"]
    timeouts = found["timeouts"]
    assert timeouts["status"] == "fail", timeouts
    assert "HTTP 504" in timeouts["summary"] and timeouts["details"]["held_s"] < 3
    assert "proxy_read_timeout" in timeouts["fix"]

    code, stdout = run_doctor(edge, "--sessions", "2")
    assert code == 1
    failed = [line.split()[1] for line in stdout.splitlines() if line.startswith("✗")]
    assert failed == ["websocket", "timeouts"], stdout


@pytest.mark.parametrize(("offset", "status"), [(0, "ok"), (-30, "warn"), (40, "warn")])
async def test_clock_skew_above_two_seconds_is_a_warning(offset: float, status: str) -> None:
    """A node's clock cannot be moved from here: its Date header is, in a stub transport."""

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Date": formatdate(time.time() + offset, usegmt=True)})

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        check = await doctor.check_clock(http, ["http://node-a:8001", "http://node-b:8001"])
    assert check.status == status, check
    if status == "warn":
        side = "ahead" if offset > 0 else "behind"
        assert check.summary.startswith("clock skew above 2 s: http://node-a:8001 at least ")
        assert f" s {side}, http://node-b:8001 at least " in check.summary
        assert "NTP" in (check.fix or "")
        for clock in check.details["clocks"]:  # Date has whole seconds: within a second
            assert abs(offset) - 1.1 < abs(clock["skew_s"]) <= abs(offset)
    for clock in check.details["clocks"]:
        assert clock["low_s"] <= offset <= clock["high_s"]
