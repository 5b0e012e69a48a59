"""Security issue 12.4: many clients joining new rooms and posting cannot grow the server.

The store keeps at most max_rooms_total rooms and max_members_per_room presence records
per room, the last 50 messages of each room, and forgets an empty room (history too)
room_ttl after its last member left. A token's `sub` holds at most max_rooms_per_identity
rooms across its connections.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
import socketio
from switchboard_server.http_api import HUB
from switchboard_server.models import ChatMessage, Member, new_id, now_iso
from switchboard_server.storage import RoomLimitReached, RoomLimits, Store, open_store
from switchboard_server.storage.base import CHAT_HISTORY, ChatUsage
from switchboard_server.storage.redis import RedisStore

from .conftest import ADMIN, SECRET, Connect, RedisProcess, Server, ServerProcess, StartServer

TEXT = "x" * 2000  # the longest message allowed
# The attacks below post as fast as the server answers. The rate limit is raised so
# that they take seconds, not minutes; no event of theirs is ever rate_limited.
FAST = {"rate_per_second": 100_000, "rate_burst": 100_000}


# -- clients -----------------------------------------------------------------------


class Ws:
    """A /ws client that sends one op at a time; pushes from the server are skipped."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.refs = 0

    async def ask(self, op: str, **fields: Any) -> dict[str, Any]:
        self.refs += 1
        await self.ws.send_json({"op": op, "ref": self.refs, **fields})
        while True:
            body = json.loads((await asyncio.wait_for(self.ws.receive(), 10)).data)
            if body.get("ref") == self.refs:
                body.pop("ref")
                return body  # type: ignore[no-any-return]


class Sio:
    """A Socket.IO client on /info with the same `ask` as Ws."""

    def __init__(self, sio: socketio.AsyncClient) -> None:
        self.sio = sio

    async def ask(self, op: str, **fields: Any) -> dict[str, Any]:
        return await self.sio.call(op, fields, namespace="/info", timeout=10)  # type: ignore[no-any-return]


Open = Callable[..., Awaitable[Ws | Sio]]


@pytest.fixture
async def open_client() -> AsyncIterator[Open]:
    """open_client(url, kind="ws"|"sio", token=None) -> a connected chat client."""
    sessions: list[aiohttp.ClientSession] = []
    sios: list[socketio.AsyncClient] = []

    async def open_one(url: str, kind: str = "ws", token: str | None = None) -> Ws | Sio:
        if kind == "sio":
            sio = socketio.AsyncClient(reconnection=False, handle_sigint=False)
            sios.append(sio)
            auth = {"token": token} if token else None
            await sio.connect(url, namespaces=["/info"], auth=auth, transports=["websocket"])
            return Sio(sio)
        session = aiohttp.ClientSession()
        sessions.append(session)
        params = {"token": token} if token else {}
        return Ws(await session.ws_connect(url.replace("http", "ws", 1) + "/ws", params=params))

    yield open_one
    for sio in sios:
        if sio.connected:
            await sio.disconnect()
    for session in sessions:
        await session.close()


# -- stores --------------------------------------------------------------------------


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store_options(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """Settings for each store; Redis is the suite's own redis-server, a fresh prefix."""
    if request.param == "redis":
        redis: RedisProcess = request.getfixturevalue("shared_redis")
        return {"store": redis.url, "redis_prefix": f"limits-{new_id()}:"}
    url = {"memory": "memory://", "sqlite": f"sqlite:///{tmp_path}/chat.db"}[request.param]
    return {"store": url}


def store_of(server: Server) -> Store:
    return server.app[HUB].store


async def usage(server: Server) -> ChatUsage:
    return await store_of(server).chat_usage()


def refusal(answer: dict[str, Any], code: str, mentions: str) -> None:
    """The SPEC's error shape, with the limit named in the message."""
    assert answer.keys() == {"ok", "error"}, answer
    assert answer["ok"] is False and answer["error"].keys() == {"code", "message"}
    assert answer["error"]["code"] == code, answer
    assert mentions in answer["error"]["message"], answer


# -- the attack, against each store ----------------------------------------------------


async def test_many_clients_creating_rooms_keep_the_store_bounded(
    start_server: StartServer, store_options: dict[str, Any], open_client: Open
) -> None:
    cap, ttl, per_client = 30, 0.3, 5
    server = await start_server(
        **store_options, **FAST, max_rooms_total=cap, room_ttl=ttl, max_rooms=per_client
    )
    clients = [await open_client(server.url, "ws") for _ in range(20)]
    clients += [await open_client(server.url, "sio") for _ in range(4)]
    codes: Counter[str] = Counter()
    admitted_total = 0

    async def join_and_post(n: int, client: Ws | Sio, wave: int) -> list[str]:
        joined = []
        for k in range(per_client):
            room = f"w{wave}-c{n}-{k}"
            answer = await client.ask("join", room=room)
            if not answer["ok"]:
                codes[answer["error"]["code"]] += 1
                refusal(answer, "unavailable", f"at most {cap} chat rooms")
                continue
            joined.append(room)
            for _ in range(CHAT_HISTORY + 5):
                answer = await client.ask("message", room=room, text=TEXT)
                assert answer["ok"], answer
        return joined

    for wave in range(3):
        held = await asyncio.gather(*(join_and_post(n, c, wave) for n, c in enumerate(clients)))
        admitted = sum(len(rooms) for rooms in held)
        admitted_total += admitted
        # Each wave tries 120 new rooms; the store takes `cap`, each with its last 50.
        assert admitted == cap
        assert await usage(server) == {
            "rooms": cap,
            "messages": cap * CHAT_HISTORY,
            "members": cap,
        }
        for client, rooms in zip(clients, held, strict=True):
            for room in rooms:
                assert await client.ask("leave", room=room) == {"ok": True}
        assert await usage(server) == {"rooms": cap, "messages": cap * CHAT_HISTORY, "members": 0}
        await asyncio.sleep(ttl + 0.1)  # expired: the next wave's new rooms take their place

    assert admitted_total == 3 * cap and codes == {"unavailable": 3 * (120 - cap)}
    assert "rate_limited" not in codes
    await server.app[HUB].purge()
    assert await usage(server) == {"rooms": 0, "messages": 0, "members": 0}
    for client in clients:  # every connection survived its refusals
        assert (await client.ask("join", room="lobby"))["ok"]
    assert await usage(server) == {"rooms": 1, "messages": 0, "members": len(clients)}


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def attack_wave(url: str, wave: int, clients: int = 20, rooms: int = 5) -> int:
    """`clients` /ws connections each join `rooms` new rooms, fill them and leave them.

    Returns the bytes of message text the server accepted.
    """

    async def one(n: int) -> int:
        sent = 0
        async with aiohttp.ClientSession() as session:
            ws = Ws(await session.ws_connect(url.replace("http", "ws", 1) + "/ws"))
            for k in range(rooms):
                room = f"w{wave}-c{n}-{k}"
                if not (await ws.ask("join", room=room))["ok"]:
                    continue
                for _ in range(CHAT_HISTORY + 5):
                    assert (await ws.ask("message", room=room, text=TEXT))["ok"]
                    sent += len(TEXT)
                await ws.ask("leave", room=room)
        return sent

    return sum(await asyncio.gather(*(one(n) for n in range(clients))))


async def test_the_attack_does_not_grow_server_memory(
    spawn_server: Callable[..., ServerProcess],
) -> None:
    # The memory store keeps history in the server process itself: the worst case for RSS.
    env = {
        "SWITCHBOARD_MAX_ROOMS_TOTAL": "40",
        "SWITCHBOARD_ROOM_TTL": "0.3",
        "SWITCHBOARD_RATE_PER_SECOND": "100000",
        "SWITCHBOARD_RATE_BURST": "100000",
    }
    server = spawn_server("--store", "memory://", env=env)
    pid = server.proc.pid
    for wave in range(3):  # warm up: the cap is reached, allocator pools exist
        await attack_wave(server.url, wave)
        await asyncio.sleep(0.4)
    before = rss_mib(pid)
    posted = 0
    for wave in range(3, 13):
        posted += await attack_wave(server.url, wave)
        await asyncio.sleep(0.4)
    grown = rss_mib(pid) - before
    print(f"server RSS grew {grown:.1f} MiB while {posted >> 20} MiB of chat was posted")
    # Kept forever, 40 MB of text would have grown the process by more than that.
    assert posted >= 40 * 1024 * 1024
    assert grown < 16, f"RSS grew {grown:.1f} MiB while {posted >> 20} MiB of chat was posted"


async def test_the_attack_does_not_grow_redis_memory(
    start_server: StartServer, start_redis: Callable[[], RedisProcess]
) -> None:
    redis = start_redis()
    server = await start_server(
        store=redis.url, max_rooms_total=40, room_ttl=0.3, redis_prefix="attack:", **FAST
    )
    store = store_of(server)
    assert isinstance(store, RedisStore)
    client = store.redis
    for wave in range(2):
        await attack_wave(server.url, wave, clients=10)
        await asyncio.sleep(0.4)
    before = (await client.info("memory"))["used_memory"]
    posted = 0
    for wave in range(2, 8):
        posted += await attack_wave(server.url, wave, clients=10)
        await asyncio.sleep(0.4)
    grown = (await client.info("memory"))["used_memory"] - before
    print(f"Redis grew {grown / 2**20:.1f} MiB while {posted >> 20} MiB of chat was posted")
    assert posted >= 20 * 1024 * 1024
    assert grown < 6 * 1024 * 1024, f"Redis grew {grown >> 20} MiB for {posted >> 20} MiB posted"
    await server.app[HUB].purge()
    assert await usage(server) == {"rooms": 0, "messages": 0, "members": 0}


# -- expiry ----------------------------------------------------------------------------


async def test_an_empty_room_expires_with_its_history(
    start_server: StartServer, store_options: dict[str, Any], open_client: Open
) -> None:
    ttl = 1.0  # the purge loop runs every second too
    server = await start_server(**store_options, room_ttl=ttl)
    ann, bob = await open_client(server.url), await open_client(server.url, "sio")
    await ann.ask("join", room="r")
    for n in range(3):
        await ann.ask("message", room="r", text=f"m{n}")
    await asyncio.sleep(ttl + 0.2)
    await server.app[HUB].purge()
    # Someone is in it: it never expires.
    assert [m["text"] for m in (await bob.ask("join", room="r"))["history"]] == ["m0", "m1", "m2"]
    await ann.ask("leave", room="r")
    await bob.ask("leave", room="r")
    store = store_of(server)
    if isinstance(store, RedisStore):  # empty: the history key expires with the room
        assert 0 < await store.redis.pttl(store.key("messages", "r")) <= ttl * 1000
    # Back before the TTL: the history is still there, and no longer expiring.
    assert len((await ann.ask("join", room="r"))["history"]) == 3
    if isinstance(store, RedisStore):
        assert await store.redis.pttl(store.key("messages", "r")) == -1
    await ann.ask("leave", room="r")
    await asyncio.sleep(ttl + 0.2)
    await server.app[HUB].purge()
    assert await usage(server) == {"rooms": 0, "messages": 0, "members": 0}
    assert (await bob.ask("join", room="r"))["history"] == []


async def test_the_purge_loop_expires_rooms_by_itself(
    start_server: StartServer, store_options: dict[str, Any], open_client: Open
) -> None:
    server = await start_server(**store_options, room_ttl=0.2)
    client = await open_client(server.url)
    for n in range(5):
        await client.ask("join", room=f"r{n}")
        await client.ask("message", room=f"r{n}", text="hello")
        await client.ask("leave", room=f"r{n}")
    assert (await usage(server))["rooms"] == 5
    deadline = time.monotonic() + 10  # the loop runs about every second
    while (await usage(server))["rooms"] and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert await usage(server) == {"rooms": 0, "messages": 0, "members": 0}


# -- each limit: the error shape, and the connection stays ---------------------------------


async def test_over_limit_joins_are_refused_and_the_connection_survives(
    start_server: StartServer, connect: Connect
) -> None:
    server = await start_server(max_rooms=3, max_rooms_total=4, max_members_per_room=2)
    first = await connect(server.url, namespaces=("/info",))
    second = await connect(server.url, namespaces=("/info",))
    third = await connect(server.url, namespaces=("/info",))
    for room in ("a", "b", "c"):
        assert (await first.call("/info", "join", {"room": room}))["ok"]
    # Per connection: forbidden, as for subscriptions.
    refusal(await first.call("/info", "join", {"room": "d"}), "forbidden", "3 rooms per connection")
    assert (await second.call("/info", "join", {"room": "d"}))["ok"]  # the 4th room
    # Rooms in the store: shared capacity, so unavailable (try again later).
    refusal(
        await second.call("/info", "join", {"room": "e"}), "unavailable", "at most 4 chat rooms"
    )
    assert (await second.call("/info", "join", {"room": "a"}))["ok"]  # existing rooms are open
    # Members of a room.
    refusal(await third.call("/info", "join", {"room": "a"}), "unavailable", "'a' is full")
    # Without an ack: the `error` event with the same body.
    await third.sio.emit("join", {"room": "a"}, namespace="/info")
    (notice,) = await third.wait_for("error")
    assert notice == {
        "ok": False,
        "event": "join",
        "error": {"code": "unavailable", "message": "room 'a' is full (at most 2 members)"},
    }
    # A refused join left nothing behind, and every connection still works.
    assert (await third.call("/info", "message", {"room": "a", "text": "hi"}))["error"][
        "code"
    ] == "forbidden"
    assert await usage(server) == {"rooms": 4, "messages": 0, "members": 5}
    assert (await third.call("/info", "join", {"room": "b"}))["ok"]
    for client, room in ((first, "c"), (second, "d"), (third, "b")):
        assert (await client.call("/info", "message", {"room": room, "text": "still here"}))["ok"]
    await first.call("/info", "leave", {"room": "a"})
    assert (await third.call("/info", "join", {"room": "a"}))["ok"]  # a place came free


async def test_over_limit_ops_on_ws_get_the_error_shape(
    start_server: StartServer, open_client: Open
) -> None:
    server = await start_server(max_rooms=2, max_rooms_total=3, max_members_per_room=1)
    one, two = await open_client(server.url), await open_client(server.url)
    assert (await one.ask("join", room="a"))["ok"] and (await one.ask("join", room="b"))["ok"]
    refusal(await one.ask("join", room="c"), "forbidden", "2 rooms per connection")
    refusal(await two.ask("join", room="a"), "unavailable", "'a' is full (at most 1 members)")
    assert (await two.ask("join", room="c"))["ok"]
    refusal(await two.ask("join", room="d"), "unavailable", "at most 3 chat rooms")
    assert (await one.ask("message", room="a", text="fine"))["ok"]
    assert (await two.ask("message", room="c", text="fine"))["ok"]


async def test_rooms_per_identity_count_across_connections(
    start_server: StartServer, open_client: Open
) -> None:
    server = await start_server(client_secret=SECRET, max_rooms=3, max_rooms_per_identity=3)
    async with httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {ADMIN}"}
    ) as http:
        ann = (await http.post("/api/tokens", json={"sub": "ann", "rooms": ["*"]})).json()["token"]
        bob = (await http.post("/api/tokens", json={"sub": "bob", "rooms": ["*"]})).json()["token"]
    tab1 = await open_client(server.url, "sio", token=ann)
    tab2 = await open_client(server.url, "ws", token=ann)
    for room in ("a", "b"):
        assert (await tab1.ask("join", room=room))["ok"]
    assert (await tab2.ask("join", room="a"))["ok"]  # already Ann's: counts once
    assert (await tab2.ask("join", room="c"))["ok"]
    refusal(await tab2.ask("join", room="d"), "forbidden", "at most 3 rooms per identity")
    other = await open_client(server.url, "sio", token=bob)
    assert (await other.ask("join", room="d"))["ok"]  # Bob has his own count
    assert (await tab1.ask("leave", room="b")) == {"ok": True}
    assert (await tab2.ask("join", room="d"))["ok"]
    assert isinstance(tab1, Sio)
    await tab1.sio.disconnect()  # its rooms are released with it (a stays: tab2 is in it)
    info = server.sio.namespace_handlers["/info"]
    deadline = time.monotonic() + 10
    while info.held["ann"]["a"] != 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    tab3 = await open_client(server.url, "ws", token=ann)
    refusal(await tab3.ask("join", room="e"), "forbidden", "per identity")
    await tab2.ask("leave", room="a")
    assert (await tab3.ask("join", room="e"))["ok"]
    assert info.held == {"ann": {"c": 1, "d": 1, "e": 1}, "bob": {"d": 1}}
    assert isinstance(tab2, Ws) and isinstance(tab3, Ws)
    await tab2.ws.close()
    await tab3.ws.close()
    deadline = time.monotonic() + 10
    while "ann" in info.held and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert info.held == {"bob": {"d": 1}}


async def test_anonymous_clients_have_only_the_per_connection_limit(
    start_server: StartServer, open_client: Open
) -> None:
    server = await start_server(max_rooms=2, max_rooms_per_identity=1)
    clients = [await open_client(server.url) for _ in range(3)]
    for n, client in enumerate(clients):
        for k in range(2):
            assert (await client.ask("join", room=f"r{n}-{k}"))["ok"]
    assert server.sio.namespace_handlers["/info"].held == {}


async def test_concurrent_joins_of_one_connection_respect_its_limit(
    start_server: StartServer, open_client: Open
) -> None:
    server = await start_server(max_rooms=3, max_rooms_total=100)
    client = await open_client(server.url, "sio")
    answers = await asyncio.gather(*(client.ask("join", room=f"r{n}") for n in range(10)))
    assert sum(a["ok"] for a in answers) == 3
    assert await usage(server) == {"rooms": 3, "messages": 0, "members": 3}


# -- the stores themselves ------------------------------------------------------------------


@pytest.fixture
async def store(store_options: dict[str, Any]) -> AsyncIterator[Store]:
    backend = open_store(
        store_options["store"],
        history=10,
        prefix=store_options.get("redis_prefix", "unused:"),
        rooms=RoomLimits(max_rooms=3, max_members=2, ttl=0.2),
    )
    await backend.open()
    yield backend
    await backend.close()


def member(name: str) -> Member:
    return {"id": name, "name": name}


def message(room: str, text: str) -> ChatMessage:
    return {"id": new_id(), "room": room, "text": text, "sender": member("u"), "ts": now_iso()}


async def test_store_caps_rooms_and_members(store: Store) -> None:
    for room in ("a", "b", "c"):
        await store.add_member(room, "s1", member("ann"))
    with pytest.raises(RoomLimitReached, match="at most 3 chat rooms"):
        await store.add_member("d", "s1", member("ann"))
    await store.add_member("a", "s2", member("bob"))
    await store.add_member("a", "s2", member("bob"))  # again: the same record
    with pytest.raises(RoomLimitReached, match="'a' is full"):
        await store.add_member("a", "s3", member("cy"))
    await store.remove_member("c", "s1")
    with pytest.raises(RoomLimitReached):  # c is empty but kept until its TTL
        await store.add_member("d", "s1", member("ann"))
    await asyncio.sleep(0.3)
    await store.add_member("d", "s1", member("ann"))  # expired c made way
    assert await store.chat_usage() == {"rooms": 3, "messages": 0, "members": 4}


async def test_store_history_stays_bounded_and_expires(store: Store) -> None:
    await store.add_member("busy", "s1", member("ann"))
    for n in range(CHAT_HISTORY + 20):
        await store.add_message(message("busy", f"m{n}"))
    await store.add_message(message("nobody-joined", "orphan"))  # gets a record, expires
    assert await store.chat_usage() == {"rooms": 2, "messages": CHAT_HISTORY + 1, "members": 1}
    assert len(await store.recent_messages("busy")) == CHAT_HISTORY
    await asyncio.sleep(0.3)
    await store.purge_rooms(time.time() - 0.2)
    assert await store.chat_usage() == {"rooms": 1, "messages": CHAT_HISTORY, "members": 1}
    await store.remove_member("busy", "s1")
    await store.purge_rooms(time.time() - 0.2)
    assert (await store.chat_usage())["messages"] == CHAT_HISTORY  # not yet
    await asyncio.sleep(0.3)
    assert await store.purge_rooms(time.time() - 0.2) == 1
    assert await store.chat_usage() == {"rooms": 0, "messages": 0, "members": 0}
    assert await store.recent_messages("busy") == []


async def test_sqlite_rooms_of_a_previous_run_expire(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/old.db"
    limits = RoomLimits(ttl=0.2)
    first = open_store(url, history=10, rooms=limits)
    await first.open()
    await first.add_member("occupied", "s1", member("ann"))  # then the process dies
    await first.add_message(message("occupied", "hi"))
    await first.close()
    with sqlite3.connect(tmp_path / "old.db") as db:  # history from before rooms had records
        db.execute("INSERT INTO messages (room, body) VALUES ('legacy', '{}')")
        db.execute("DELETE FROM rooms WHERE name = 'legacy'")
    second = open_store(url, history=10, rooms=limits)
    await second.open()
    assert await second.chat_usage() == {"rooms": 2, "messages": 2, "members": 0}
    await asyncio.sleep(0.3)
    assert await second.purge_rooms(time.time() - 0.2) == 2
    assert await second.chat_usage() == {"rooms": 0, "messages": 0, "members": 0}
    await second.close()


async def test_redis_frees_rooms_held_by_a_dead_node(shared_redis: RedisProcess) -> None:
    prefix, limits = f"dead-{new_id()}:", RoomLimits(ttl=0.2)
    dying = RedisStore(shared_redis.url, history=10, prefix=prefix, rooms=limits)
    living = RedisStore(shared_redis.url, history=10, prefix=prefix, rooms=limits)
    await dying.open()
    await living.open()
    try:
        await dying.add_member("r", "s1", member("ann"))
        await dying.add_message(message("r", "hi"))
        await living.add_member("r2", "s2", member("bob"))
        await asyncio.sleep(0.1)  # the first heartbeats
        await living.purge_rooms(0)
        assert (await living.chat_usage())["rooms"] == 2  # both nodes alive: nothing goes
        await dying.close()  # stops beating and deletes its node key, as after NODE_TTL
        await living.purge_rooms(0)  # sweeps its records: the room is empty now
        assert 0 < await living.redis.pttl(living.key("messages", "r")) <= 200
        await asyncio.sleep(0.3)
        assert await living.purge_rooms(0) == 1
        assert await living.chat_usage() == {"rooms": 1, "messages": 0, "members": 1}
    finally:
        await living.close()
