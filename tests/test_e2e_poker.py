"""End-to-end: the planning poker example from outside, over real TCP (treq for REST, autobahn-python players
for WAMP): on one node served in this process, and on two ``twistd`` nodes sharing a real redis-server."""

from __future__ import annotations

import json
from typing import Any

import treq
from autobahn.wamp.types import PublishOptions
from treq.client import HTTPClient
from twisted.internet import defer

from examples import poker
from tests.support import Client, ServerTestCase, wait_until
from tests.test_e2e_cluster_twistd import TwistdClusterTestCase


class Player(Client):
    """An autobahn-python player: joins under its name (``authid``, ticket authentication)."""

    player_name = "Alice"

    def onConnect(self) -> None:
        self.join(self.config.realm, authmethods=["ticket"], authid=self.player_name)

    def onChallenge(self, challenge: Any) -> str:
        return "any ticket"


def named(name: str) -> type[Player]:
    return type(f"Player {name}", (Player,), {"player_name": name})


def payloads(client: Client, room_id: str, kind: str | None = None) -> list[Any]:
    """What a player received on a room's topic (of one ``type``, or all)."""
    events = client.received.get(poker.room_uri(room_id), [])
    return [e.payload for e in events if kind is None or e.payload["type"] == kind]


def last_state(client: Client, room_id: str) -> dict[str, Any] | None:
    states = payloads(client, room_id, "state")
    return states[-1] if states else None


def known(client: Client, room_id: str, key: str) -> Any:
    """A field of the last state a player received (``None`` before the first)."""
    state = last_state(client, room_id)
    return None if state is None else state[key]


def voters(client: Client, room_id: str) -> set[str]:
    state = last_state(client, room_id)
    return set(state["votes"]) if state else set()


class PokerGame(ServerTestCase):
    """REST and WAMP helpers shared by the one-node and the two-node tests."""

    async def create(self, base_url: str, body: Any = None, raw: bytes | None = None) -> tuple[int, Any, Any]:
        data = raw if raw is not None else json.dumps(body or {"name": "Sprint 42"}).encode()
        response = await self.client().post(
            f"{base_url}/api/rooms", data=data, headers={b"Content-Type": [b"application/json"]}
        )
        return response.code, response.headers, await treq.json_content(response)

    async def get(self, base_url: str, room_id: str) -> tuple[int, Any]:
        response = await self.client().get(f"{base_url}/api/rooms/{room_id}")
        if response.headers.getRawHeaders(b"Content-Type") != [b"application/json"]:
            self.fail(f"{response.code}: {await response.text()}")
        return response.code, await treq.json_content(response)

    def client(self) -> HTTPClient:
        if not hasattr(self, "_http"):
            self._http = self.http()
        return self._http

    async def new_room(self, base_url: str) -> str:
        code, _, body = await self.create(base_url)
        self.assertEqual(code, 201)
        return str(body["id"])

    async def sit(self, name: str, room_id: str, url: str, serializer: str = "json") -> tuple[Player, Any]:
        player: Player = await self.connect(serializer, client_class=named(name), url=url)
        subscription = await player.record(poker.room_uri(room_id), get_retained=True)
        return player, subscription

    async def act(self, player: Client, room_id: str, action: str, round: int = 1, **more: Any) -> Any:
        payload = {"action": action, "round": round, **more}
        return await player.publish(
            poker.room_uri(room_id), payload, options=PublishOptions(acknowledge=True)
        )


class OneNodeTests(PokerGame):
    """``examples.poker:app`` served in this process."""

    def setUp(self) -> None:
        self.serve(poker.app)

    async def test_rest_creates_reads_and_refuses(self) -> None:
        code, headers, room = await self.create(self.base_url, {"name": "Sprint 42"})
        self.assertEqual(code, 201)
        self.assertEqual(headers.getRawHeaders(b"Location"), [f"/api/rooms/{room['id']}".encode()])
        self.assertEqual(await self.get(self.base_url, room["id"]), (200, room))
        code, body = await self.get(self.base_url, "000000000000")
        self.assertEqual(code, 404)
        self.assertIn("000000000000", body["error"])
        for raw in (b"nope", b"{}", b'{"name": ""}', b'{"name": 7}'):
            code, _, body = await self.create(self.base_url, raw=raw)
            self.assertEqual(code, 400, raw)
            self.assertIn('"name"', body["error"])

    async def test_a_round_played_by_three_players(self) -> None:
        room_id = await self.new_room(self.base_url)
        alice, _ = await self.sit("Alice", room_id, self.ws_url)
        bob, _ = await self.sit("Bob", room_id, self.ws_url, "msgpack")
        carol, _ = await self.sit("Carol", room_id, self.ws_url, "cbor")
        await self.act(alice, room_id, "vote", card="5")
        await self.act(bob, room_id, "vote", card="8")
        await self.act(carol, room_id, "vote", card="?")
        await wait_until(lambda: voters(carol, room_id) == {"Alice", "Bob", "Carol"})
        self.assertNotIn("card", repr(known(carol, room_id, "votes")))
        await self.act(carol, room_id, "reveal")
        for player in (alice, bob, carol):
            await wait_until(lambda player=player: known(player, room_id, "revealed"))
            state = last_state(player, room_id)
            assert state is not None
            self.assertEqual(
                {n: v["card"] for n, v in state["votes"].items()}, {"Alice": "5", "Bob": "8", "Carol": "?"}
            )
            self.assertEqual(state["average"], 6.5)
        await self.act(bob, room_id, "new_round")
        await wait_until(lambda: known(alice, room_id, "round") == 2)
        self.assertEqual(known(alice, room_id, "votes"), {})

    async def test_a_late_joiner_gets_the_round_at_once(self) -> None:
        room_id = await self.new_room(self.base_url)
        alice, _ = await self.sit("Alice", room_id, self.ws_url)
        await self.act(alice, room_id, "vote", card="13")
        late, _ = await self.sit("Bob", room_id, self.ws_url, "cbor")
        await wait_until(lambda: payloads(late, room_id, "state"))
        first = late.received[poker.room_uri(room_id)][0]
        self.assertTrue(first.details.retained)
        self.assertEqual(first.payload["votes"], {"Alice": {"version": 1}})
        await wait_until(lambda: payloads(late, room_id, "people"))
        [people] = payloads(late, room_id, "people")
        self.assertEqual([p["name"] for p in people["people"]], ["Alice", "Bob"])

    async def test_a_dropped_player_comes_back_and_recovers_what_it_missed(self) -> None:
        room_id = await self.new_room(self.base_url)
        alice, subscription = await self.sit("Alice", room_id, self.ws_url)
        bob, _ = await self.sit("Bob", room_id, self.ws_url)
        await wait_until(lambda: len(payloads(alice, room_id, "joined")) == 2)
        last = alice.received[poker.room_uri(room_id)][-1].details.publication
        await self.drop(alice)  # the connection dies: no goodbye
        await self.act(bob, room_id, "vote", card="8")
        await self.sit("Carol", room_id, self.ws_url)

        back, again = await self.sit("Alice", room_id, self.ws_url, "msgpack")
        self.assertEqual(again.id, subscription.id)
        missed = await back.call("wamp.subscription.get_events", again.id, after_publication=last)
        self.assertEqual(missed.kwresults, {"more": False, "gap": False})
        told = [(e["args"][0]["type"], e["args"][0].get("person", {}).get("name")) for e in missed.results]
        self.assertEqual(told, [("left", "Alice"), ("state", None), ("joined", "Carol"), ("joined", "Alice")])
        self.assertEqual(missed.results[1]["args"][0]["votes"], {"Bob": {"version": 1}})
        await wait_until(lambda: payloads(back, room_id, "state"))
        self.assertEqual(payloads(back, room_id, "state")[0]["votes"], {"Bob": {"version": 1}})  # retained

    async def test_a_closed_connection_leaves_the_room(self) -> None:
        room_id = await self.new_room(self.base_url)
        alice, _ = await self.sit("Alice", room_id, self.ws_url)
        bob, _ = await self.sit("Bob", room_id, self.ws_url)
        bob_id = bob._session_id
        await self.drop(bob)
        await wait_until(lambda: payloads(alice, room_id, "left"))
        self.assertEqual(
            payloads(alice, room_id, "left"), [{"type": "left", "person": {"session": bob_id, "name": "Bob"}}]
        )


class TwoNodeTests(PokerGame, TwistdClusterTestCase):
    """Two ``twistd -n sandstone --app examples.poker:app --redis URL`` processes and a real redis-server."""

    async def test_two_nodes_play_one_room_and_lose_no_vote(self) -> None:
        (first, url1, base1), (second, url2, base2) = await self.start_nodes("--app", "examples.poker:app")
        await wait_until(lambda: all("connected to Redis" in node.output for node in (first, second)))
        room_id = await self.new_room(base1)
        code, room = await self.get(base2, room_id)
        self.assertEqual((code, room["name"]), (200, "Sprint 42"))

        alice, _ = await self.sit("Alice", room_id, url1)
        bob, _ = await self.sit("Bob", room_id, url2, "msgpack")
        await wait_until(
            lambda: [p["person"]["name"] for p in payloads(alice, room_id, "joined")] == ["Alice", "Bob"]
        )

        # two votes at the same moment, on two nodes
        await defer.gatherResults(
            [
                defer.ensureDeferred(self.act(alice, room_id, "vote", card="5")),
                defer.ensureDeferred(self.act(bob, room_id, "vote", card="8")),
            ]
        )
        for player in (alice, bob):
            await wait_until(lambda player=player: voters(player, room_id) == {"Alice", "Bob"})
        for base in (base1, base2):
            self.assertEqual(set((await self.get(base, room_id))[1]["votes"]), {"Alice", "Bob"})
        carol, carol_subscription = await self.sit("Carol", room_id, url2, "cbor")
        await wait_until(lambda: payloads(carol, room_id, "state"))
        self.assertEqual(set(payloads(carol, room_id, "state")[0]["votes"]), {"Alice", "Bob"})

        await self.act(bob, room_id, "reveal")
        for player in (alice, bob, carol):
            await wait_until(lambda player=player: known(player, room_id, "revealed"))
            state = last_state(player, room_id)
            assert state is not None
            self.assertEqual({n: v["card"] for n, v in state["votes"].items()}, {"Alice": "5", "Bob": "8"})

        # a new round, and ten votes at once, five on each node
        await self.act(alice, room_id, "new_round")
        await wait_until(lambda: known(carol, room_id, "round") == 2)
        team = [await self.sit(f"Player {n}", room_id, (url1, url2)[n % 2]) for n in range(10)]
        await defer.gatherResults(
            [defer.ensureDeferred(self.act(p, room_id, "vote", round=2, card="3")) for p, _ in team]
        )
        everyone = {f"Player {n}" for n in range(10)}
        for player in (alice, carol):
            await wait_until(lambda player=player: voters(player, room_id) == everyone)
        for base in (base1, base2):
            self.assertEqual(set((await self.get(base, room_id))[1]["votes"]), everyone)
        late, _ = await self.sit("Dave", room_id, url1)
        await wait_until(lambda: payloads(late, room_id, "state"))
        self.assertEqual(set(payloads(late, room_id, "state")[0]["votes"]), everyone)

        # one history, whichever node made each event, each event once
        history = await carol.call("wamp.subscription.get_events", carol_subscription.id, limit=1000)
        publications = [event["publication"] for event in history.results]
        self.assertEqual(len(publications), len(set(publications)))
        changes = [e["args"][0]["change"] for e in history.results if e["args"][0]["type"] == "state"]
        self.assertEqual(changes[0], {"what": "created", "by": "", "round": 1})
        self.assertEqual(
            sorted(c["by"] for c in changes if c["what"] == "vote"), sorted(["Alice", "Bob", *everyone])
        )

        # a node that starts after all this reads the room from Redis
        await self.kill(second)
        await wait_until(lambda: self.subscribed_nodes() == 1)
        third = await self.start("--app", "examples.poker:app", "--redis", self.redis_server.url)
        await wait_until(lambda: "connected to Redis" in third.output, timeout=10)
        url3, base3 = self.ws_url, self.base_url
        self.assertEqual(set((await self.get(base3, room_id))[1]["votes"]), everyone)
        erin, _ = await self.sit("Erin", room_id, url3)
        await self.act(erin, room_id, "vote", round=2, card="8")
        await self.act(erin, room_id, "reveal", round=2)
        code, room = await self.get(base3, room_id)
        self.assertEqual(set(room["votes"]), everyone | {"Erin"})
        self.assertEqual(room["average"], 3.5)
        await wait_until(lambda: known(alice, room_id, "revealed"))
        self.assertEqual(known(alice, room_id, "average"), 3.5)
