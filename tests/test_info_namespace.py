"""/info over every transport: rooms, chat, presence, history, announcements."""

from __future__ import annotations

from .conftest import Api, Connect, Edge, Server, StartServer


async def test_chat_between_two_clients(server: Server, connect: Connect, edge: Edge) -> None:
    url = edge(server)
    ann = await connect(url, namespaces=("/info",), auth={"name": "Ann"})
    bob = await connect(url, namespaces=("/info",), auth={"name": "Bob"})
    joined = await ann.call("/info", "join", {"room": "math-101"})
    assert joined["ok"] and joined["room"] == "math-101" and joined["history"] == []
    assert [m["name"] for m in joined["members"]] == ["Ann"]

    joined = await bob.call("/info", "join", {"room": "math-101"})
    assert sorted(m["name"] for m in joined["members"]) == ["Ann", "Bob"]
    presence = await ann.wait_for("presence")
    assert presence[0]["room"] == "math-101" and presence[0]["joined"]["name"] == "Bob"

    ack = await bob.call("/info", "message", {"room": "math-101", "text": "hi Ann"})
    assert ack["ok"]
    message = ack["message"]
    assert message["text"] == "hi Ann" and message["room"] == "math-101"
    assert message["sender"]["name"] == "Bob" and message["id"] and message["ts"]
    assert (await ann.wait_for("message")) == [message]
    # A marker after it: once Bob has Ann's reply, an echo of his own would be there.
    reply = (await ann.call("/info", "message", {"room": "math-101", "text": "hi"}))["message"]
    assert (await bob.wait_for("message")) == [reply]  # the sender has its ack, not an echo


async def test_history_is_the_last_50_oldest_first(
    start_server: StartServer, connect: Connect
) -> None:
    server = await start_server(rate_burst=100)
    talker = await connect(server.url, namespaces=("/info",))
    await talker.call("/info", "join", {"room": "busy"})
    for n in range(55):
        ack = await talker.call("/info", "message", {"room": "busy", "text": f"m{n}"})
        assert ack["ok"], ack
    late = await connect(server.url, namespaces=("/info",))
    joined = await late.call("/info", "join", {"room": "busy"})
    assert [m["text"] for m in joined["history"]] == [f"m{n}" for n in range(5, 55)]


async def test_leave_and_disconnect_announce_presence(server: Server, connect: Connect) -> None:
    stay = await connect(server.url, namespaces=("/info",), auth={"name": "Stay"})
    go = await connect(server.url, namespaces=("/info",), auth={"name": "Go"})
    drop = await connect(server.url, namespaces=("/info",), auth={"name": "Drop"})
    for client in (stay, go, drop):
        await client.call("/info", "join", {"room": "r"})
    assert await go.call("/info", "leave", {"room": "r"}) == {"ok": True}
    await drop.sio.disconnect()
    events = await stay.wait_for("presence", 4)
    assert [("joined" in e, (e.get("joined") or e.get("left"))["name"]) for e in events] == [
        (True, "Go"), (True, "Drop"), (False, "Go"), (False, "Drop"),
    ]  # fmt: skip
    joined = await stay.call("/info", "join", {"room": "r"})
    assert [m["name"] for m in joined["members"]] == ["Stay"]


async def test_sending_needs_joining(server: Server, connect: Connect) -> None:
    client = await connect(server.url, namespaces=("/info",))
    ack = await client.call("/info", "message", {"room": "elsewhere", "text": "hello?"})
    assert ack["ok"] is False and ack["error"]["code"] == "forbidden"


async def test_announcements_to_everyone_and_to_one_room(
    server: Server, api: Api, connect: Connect
) -> None:
    inside = await connect(server.url, namespaces=("/info",))
    outside = await connect(server.url, namespaces=("/info",))
    await inside.call("/info", "join", {"room": "class-7"})
    status, everyone = await api.post("/api/announcements", json={"text": "server update"})
    assert status == 201
    status, room_only = await api.post(
        "/api/announcements", json={"text": "quiz now", "level": "critical", "room": "class-7"}
    )
    assert (await inside.wait_for("announcement", 2)) == [everyone, room_only]
    # A marker to everyone after the room-only one: outside gets it, and nothing between.
    status, marker = await api.post("/api/announcements", json={"text": "marker"})
    assert (await outside.wait_for("announcement", 2)) == [everyone, marker]

    recent = await inside.call("/info", "recent", {"limit": 10})
    assert [a["text"] for a in recent["announcements"]] == ["marker", "quiz now", "server update"]
    recent = await outside.call("/info", "recent", {})
    assert [a["text"] for a in recent["announcements"]] == ["marker", "server update"]


async def test_rejoining_is_harmless(server: Server, connect: Connect) -> None:
    client = await connect(server.url, namespaces=("/info",))
    for _ in range(3):
        ack = await client.call("/info", "join", {"room": "again"})
        assert ack["ok"] and len(ack["members"]) == 1
    assert await client.call("/info", "leave", {"room": "never-joined"}) == {"ok": True}
