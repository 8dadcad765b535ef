"""Tests for L{examples.poker}: the room state and its merge, the REST API, the table over WAMP, in memory."""

from __future__ import annotations

import itertools
from typing import Any

from autobahn.wamp.exception import ApplicationError
from twisted.trial.unittest import SynchronousTestCase

from examples import poker
from examples.poker import Room, RoomChanged, Vote, average, merge
from sandstone.testing import SessionClosed, TestClient, TestResponse, TestSession, TestSubscription

ROOM = "0123456789ab"


def room(round: int = 1, revealed: bool = False, **votes: tuple[str, int]) -> Room:
    return Room(ROOM, "Sprint", round, revealed, {name: Vote(*vote) for name, vote in votes.items()})


class MergeTests(SynchronousTestCase):
    """Two versions of a room merge into what both know, whatever order they come in."""

    def test_merge_is_commutative_associative_and_idempotent(self) -> None:
        versions = [
            room(),
            room(alice=("5", 1)),
            room(bob=("8", 1)),
            room(alice=("3", 2)),
            room(revealed=True, alice=("5", 1)),
            room(2),
            room(2, bob=("?", 1)),
            room(3, True),
        ]
        for a, b in itertools.product(versions, repeat=2):
            self.assertEqual(merge(a, b), merge(b, a))
            self.assertEqual(merge(a, merge(a, b)), merge(a, b))
        for a, b, c in itertools.product(versions, repeat=3):
            self.assertEqual(merge(merge(a, b), c), merge(a, merge(b, c)))

    def test_two_votes_made_apart_both_count(self) -> None:
        self.assertEqual(
            merge(room(alice=("5", 1)), room(bob=("8", 1))).votes,
            {"alice": Vote("5", 1), "bob": Vote("8", 1)},
        )

    def test_the_later_round_wins_whole(self) -> None:
        self.assertEqual(merge(room(1, True, alice=("5", 1)), room(2)), room(2))

    def test_a_reveal_stays(self) -> None:
        self.assertTrue(merge(room(revealed=True), room(alice=("5", 1))).revealed)

    def test_the_higher_version_of_a_vote_wins_and_the_card_breaks_a_tie(self) -> None:
        self.assertEqual(merge(room(alice=("5", 2)), room(alice=("8", 1))).votes["alice"], Vote("5", 2))
        self.assertEqual(merge(room(alice=("13", 1)), room(alice=("3", 1))).votes["alice"], Vote("3", 1))

    def test_average_of_the_numeric_cards_rounded_half_up(self) -> None:
        self.assertEqual(average(room(a=("5", 1), b=("8", 1), c=("?", 1))), 6.5)
        self.assertEqual(average(room(a=("2", 1), b=("2", 1), c=("2", 1), d=("3", 1))), 2.3)
        self.assertEqual(average(room(a=("1", 1), b=("2", 1), c=("2", 1))), 1.7)
        self.assertIsNone(average(room(a=("?", 1))))
        self.assertIsNone(average(room()))

    def test_a_room_checks_what_it_holds(self) -> None:
        # what comes from the bus or the store goes through these checks
        for bad in (
            lambda: Vote("4"),
            lambda: Vote("5", 0),
            lambda: Room(ROOM, "Sprint", 0),
            lambda: Room(ROOM, "Sprint", True),
            lambda: Room(ROOM, "Sprint", 1, "yes"),  # type: ignore[arg-type]
            lambda: Room(ROOM, "Sprint", 1, False, {"alice": "5"}),  # type: ignore[dict-item]
        ):
            self.assertRaises((TypeError, ValueError), bad)


class PokerTestCase(SynchronousTestCase):
    """The example's module-level app; each test plays in rooms of its own."""

    def setUp(self) -> None:
        self.client = TestClient(poker.app)
        self.addCleanup(self.client.close)
        self.dispatched: list[RoomChanged] = []
        poker.app.events.add_listener("poker.room", self.dispatched.append)
        self.addCleanup(poker.app.events.remove_listener, "poker.room", self.dispatched.append)

    def create(self, name: Any = "Sprint 42") -> TestResponse:
        return self.client.post("/api/rooms", json={"name": name})

    def new_room(self) -> str:
        response = self.create()
        self.assertEqual(response.code, 201)
        room_id: str = response.json()["id"]
        return room_id

    def player(self, name: str) -> TestSession:
        return self.client.connect(authid=name, ticket="")

    def sit(self, name: str, room_id: str) -> tuple[TestSession, TestSubscription]:
        session = self.player(name)
        return session, session.subscribe(poker.room_uri(room_id), get_retained=True)

    def act(self, session: TestSession, room_id: str, action: str, round: Any = 1, **more: Any) -> Any:
        payload = {"action": action, "round": round, **more}
        return session.publish(poker.room_uri(room_id), payload, acknowledge=True)

    def refused(self, session: TestSession, room_id: str, payload: Any) -> str:
        with self.assertRaises(ApplicationError) as caught:
            session.publish(poker.room_uri(room_id), payload, acknowledge=True)
        return str(caught.exception.error)

    def states(self, subscription: TestSubscription) -> list[dict[str, Any]]:
        return [p for p in subscription.payloads if p["type"] == "state"]

    def state(self, subscription: TestSubscription) -> dict[str, Any]:
        return self.states(subscription)[-1]


class RestTests(PokerTestCase):
    def test_create_answers_201_with_the_room_and_its_location(self) -> None:
        response = self.create("  Sprint 42 ")
        self.assertEqual(response.code, 201)
        self.assertEqual(response.headers["Content-Type"], ["application/json"])
        body = response.json()
        self.assertRegex(body["id"], f"^{poker.ROOM_ID}$")
        self.assertEqual(response.headers["Location"], [f"/api/rooms/{body['id']}"])
        self.assertEqual(
            body,
            {
                "id": body["id"],
                "name": "Sprint 42",
                "round": 1,
                "revealed": False,
                "votes": {},
                "average": None,
            },
        )

    def test_rooms_get_ids_of_their_own(self) -> None:
        self.assertEqual(len({self.new_room() for _ in range(5)}), 5)

    def test_get_answers_the_room(self) -> None:
        room_id = self.new_room()
        response = self.client.get(f"/api/rooms/{room_id}")
        self.assertEqual((response.code, response.json()["name"]), (200, "Sprint 42"))

    def test_unknown_and_malformed_ids_are_404_json(self) -> None:
        for room_id in ("000000000000", "nope", "0123456789AB", "0123456789abc"):
            response = self.client.get(f"/api/rooms/{room_id}")
            self.assertEqual(response.code, 404, room_id)
            self.assertEqual(response.headers["Content-Type"], ["application/json"])
            self.assertIn(room_id, response.json()["error"])

    def test_bad_bodies_are_400_json_and_create_nothing(self) -> None:
        bad: list[tuple[Any, bytes | None]] = [
            (None, b"this is not json"),
            (None, b"\xff\xfe"),
            (None, b""),
            (None, b'{"name": "\\ud800"}'),
            ({}, None),
            ([], None),
            ({"name": ""}, None),
            ({"name": "   "}, None),
            ({"name": 42}, None),
            ({"name": "x" * 81}, None),
            ({"name": "two\nlines"}, None),
            ({"title": "Sprint"}, None),
        ]
        for body, raw in bad:
            if raw is None:
                response = self.client.post("/api/rooms", json=body)
            else:
                response = self.client.post("/api/rooms", data=raw)
            self.assertEqual(response.code, 400, (body, raw))
            self.assertEqual(response.headers["Content-Type"], ["application/json"])
            self.assertIn('"name"', response.json()["error"])
        self.assertEqual(self.dispatched, [])

    def test_get_hides_the_cards_until_they_are_revealed(self) -> None:
        room_id = self.new_room()
        alice, _ = self.sit("Alice", room_id)
        self.act(alice, room_id, "vote", card="8")
        self.assertEqual(self.client.get(f"/api/rooms/{room_id}").json()["votes"], {"Alice": {"version": 1}})
        self.act(alice, room_id, "reveal")
        body = self.client.get(f"/api/rooms/{room_id}").json()
        self.assertEqual((body["votes"], body["average"]), ({"Alice": {"version": 1, "card": "8"}}, 8.0))


class PlayerTests(PokerTestCase):
    """Players connect with their name as authid (ticket authentication, the ticket unchecked)."""

    def test_a_player_plays_under_its_name(self) -> None:
        session = self.player("Zoë d'Arc-2")
        self.assertEqual((session.authid, session.authrole), ("Zoë d'Arc-2", "player"))

    def test_names_that_are_no_names_are_refused(self) -> None:
        for name in ("", " Alice", "Alice ", "x" * 41, "<b>Alice</b>", "Al\nice", "_Alice", "-"):
            with self.assertRaises(SessionClosed) as caught:
                self.player(name)
            self.assertEqual(caught.exception.reason, "wamp.error.authentication_denied", name)

    def test_no_anonymous_players(self) -> None:
        with self.assertRaises(SessionClosed):
            self.client.connect()


class TableTests(PokerTestCase):
    def test_a_late_joiner_gets_the_rounds_state_at_once(self) -> None:
        room_id = self.new_room()
        alice, _ = self.sit("Alice", room_id)
        self.act(alice, room_id, "vote", card="5")
        _, late = self.sit("Bob", room_id)
        first = late.events[0]
        self.assertTrue(first.retained)
        self.assertEqual(first.payload["type"], "state")
        self.assertEqual((first.payload["round"], first.payload["votes"]), (1, {"Alice": {"version": 1}}))

    def test_the_others_see_that_someone_voted_not_the_card(self) -> None:
        room_id = self.new_room()
        alice, _ = self.sit("Alice", room_id)
        _, bob_sees = self.sit("Bob", room_id)
        self.act(alice, room_id, "vote", card="13")
        state = self.state(bob_sees)
        self.assertEqual(state["votes"], {"Alice": {"version": 1}})
        self.assertEqual(state["change"], {"what": "vote", "by": "Alice", "round": 1})
        # no card anywhere in what Bob received (session ids are random numbers: only the states count)
        states = [p for p in bob_sees.payloads if isinstance(p, dict) and p.get("type") == "state"]
        self.assertNotIn("card", repr(states))
        self.assertNotIn("'13'", repr(states))

    def test_a_reveal_shows_every_card_and_the_average(self) -> None:
        room_id = self.new_room()
        alice, alice_sees = self.sit("Alice", room_id)
        bob, bob_sees = self.sit("Bob", room_id)
        carol, _ = self.sit("Carol", room_id)
        self.act(alice, room_id, "vote", card="5")
        self.act(bob, room_id, "vote", card="8")
        self.act(carol, room_id, "vote", card="?")
        self.act(bob, room_id, "reveal")
        for seen in (alice_sees, bob_sees):
            state = self.state(seen)
            self.assertTrue(state["revealed"])
            self.assertEqual(
                {name: vote["card"] for name, vote in state["votes"].items()},
                {
                    "Alice": "5",
                    "Bob": "8",
                    "Carol": "?",
                },
            )
            self.assertEqual(state["average"], 6.5)
            self.assertEqual(state["change"]["what"], "reveal")

    def test_a_new_round_clears_the_votes(self) -> None:
        room_id = self.new_room()
        alice, alice_sees = self.sit("Alice", room_id)
        self.act(alice, room_id, "vote", card="5")
        self.act(alice, room_id, "reveal")
        self.act(alice, room_id, "new_round", round=1)
        state = self.state(alice_sees)
        self.assertEqual((state["round"], state["revealed"], state["votes"]), (2, False, {}))
        self.assertEqual(state["change"], {"what": "new_round", "by": "Alice", "round": 2})

    def test_a_player_may_change_its_card_before_the_reveal(self) -> None:
        room_id = self.new_room()
        alice, _ = self.sit("Alice", room_id)
        self.act(alice, room_id, "vote", card="5")
        self.act(alice, room_id, "vote", card="3")
        self.act(alice, room_id, "vote", card="3")  # the same card again changes nothing
        self.act(alice, room_id, "reveal")
        body = self.client.get(f"/api/rooms/{room_id}").json()
        self.assertEqual(body["votes"], {"Alice": {"version": 2, "card": "3"}})
        self.assertEqual([event.what for event in self.dispatched], ["created", "vote", "vote", "reveal"])

    def test_no_vote_once_the_cards_are_revealed(self) -> None:
        room_id = self.new_room()
        alice, _ = self.sit("Alice", room_id)
        self.act(alice, room_id, "reveal")
        self.assertEqual(
            self.refused(alice, room_id, {"action": "vote", "round": 1, "card": "5"}), poker.REVEALED
        )

    def test_an_action_meant_for_another_round_is_refused(self) -> None:
        room_id = self.new_room()
        alice, _ = self.sit("Alice", room_id)
        self.act(alice, room_id, "new_round", round=1)
        for action in ({"action": "vote", "round": 1, "card": "5"}, {"action": "reveal", "round": 3}):
            self.assertEqual(self.refused(alice, room_id, action), poker.ROUND_OVER)

    def test_two_new_round_clicks_make_one_new_round(self) -> None:
        room_id = self.new_room()
        alice, alice_sees = self.sit("Alice", room_id)
        bob, _ = self.sit("Bob", room_id)
        self.act(alice, room_id, "new_round", round=1)
        self.act(bob, room_id, "new_round", round=1)
        self.assertEqual([s["round"] for s in self.states(alice_sees)], [1, 2])

    def test_revealing_twice_changes_nothing(self) -> None:
        room_id = self.new_room()
        alice, alice_sees = self.sit("Alice", room_id)
        self.act(alice, room_id, "reveal")
        self.act(alice, room_id, "reveal")
        self.assertEqual(len(self.states(alice_sees)), 2)  # the retained one, then one reveal

    def test_actions_that_are_no_actions_are_refused_and_change_nothing(self) -> None:
        room_id = self.new_room()
        alice, alice_sees = self.sit("Alice", room_id)
        for payload in (
            None,
            "vote",
            [],
            {},
            {"action": "fold", "round": 1},
            {"action": "vote", "round": 1},
            {"action": "vote", "round": 1, "card": "4"},
            {"action": "vote", "round": 1, "card": 5},
            {"action": "vote", "card": "5"},
            {"action": "vote", "round": "1", "card": "5"},
            {"action": "reveal", "round": True},
            {"action": "new_round"},
        ):
            self.assertEqual(self.refused(alice, room_id, payload), poker.INVALID_ACTION, payload)
        self.assertEqual(len(self.states(alice_sees)), 1)
        self.assertEqual([event.what for event in self.dispatched], ["created"])

    def test_actions_in_a_room_that_does_not_exist_are_refused(self) -> None:
        alice, _ = self.sit("Alice", "000000000000")
        action = {"action": "vote", "round": 1, "card": "5"}
        self.assertEqual(self.refused(alice, "000000000000", action), poker.NO_SUCH_ROOM)

    def test_publications_are_actions_never_relayed_nor_retained(self) -> None:
        room_id = self.new_room()
        alice, _ = self.sit("Alice", room_id)
        _, bob_sees = self.sit("Bob", room_id)
        before = len(bob_sees.events)
        self.act(alice, room_id, "vote", card="5", retain=True)
        alice.publish(
            poker.room_uri(room_id), {"action": "reveal", "round": 1}, retain=True, acknowledge=True
        )
        self.assertEqual([p["type"] for p in bob_sees.payloads[before:]], ["state", "state"])
        _, late = self.sit("Carol", room_id)
        self.assertEqual(late.events[0].payload["change"]["what"], "reveal")


class PresenceTests(PokerTestCase):
    def test_a_newcomer_is_told_who_is_at_the_table(self) -> None:
        room_id = self.new_room()
        alice, _ = self.sit("Alice", room_id)
        bob, bob_sees = self.sit("Bob", room_id)
        [people] = [p for p in bob_sees.payloads if p["type"] == "people"]
        self.assertEqual(
            people["people"], [{"session": alice.id, "name": "Alice"}, {"session": bob.id, "name": "Bob"}]
        )

    def test_everyone_hears_who_comes_and_who_goes(self) -> None:
        room_id = self.new_room()
        alice, alice_sees = self.sit("Alice", room_id)
        bob, _ = self.sit("Bob", room_id)
        bob_id = bob.id
        bob.disconnect()  # a closed tab
        told = [p for p in alice_sees.payloads if p["type"] in ("joined", "left")]
        self.assertEqual(
            told,
            [
                {"type": "joined", "person": {"session": alice.id, "name": "Alice"}},
                {"type": "joined", "person": {"session": bob_id, "name": "Bob"}},
                {"type": "left", "person": {"session": bob_id, "name": "Bob"}},
            ],
        )


class PrivacyTests(PokerTestCase):
    """The whole state, cards before the reveal included, is the app's alone."""

    def test_nobody_subscribes_to_the_whole_state(self) -> None:
        room_id = self.new_room()
        alice = self.player("Alice")
        with self.assertRaises(ApplicationError):
            alice.subscribe(poker.state_uri(room_id), get_retained=True)

    def test_pattern_subscribers_see_no_card_before_the_reveal(self) -> None:
        room_id = self.new_room()
        alice, _ = self.sit("Alice", room_id)
        spy = self.player("Mallory")
        everything = [spy.subscribe("poker", match="prefix", get_retained=True)]
        everything.append(spy.subscribe("poker..", match="wildcard", get_retained=True))
        self.act(alice, room_id, "vote", card="13")
        events = [event for subscription in everything for event in subscription.events]
        self.assertIn(poker.room_uri(room_id), {event.topic for event in events})
        self.assertEqual({event.topic for event in events if not event.topic.startswith("poker/")}, set())
        here = [event.payload for event in events if event.topic == poker.room_uri(room_id)]
        self.assertNotIn("13", repr(here))

    def test_nobody_publishes_the_whole_state(self) -> None:
        room_id = self.new_room()
        alice = self.player("Alice")
        forged = {"id": room_id, "name": "Sprint 42", "round": 9, "revealed": True, "votes": {}}
        with self.assertRaises(ApplicationError):
            alice.publish(poker.state_uri(room_id), forged, retain=True, acknowledge=True)
        self.assertEqual(self.client.get(f"/api/rooms/{room_id}").json()["round"], 1)


class ClusterStateTests(PokerTestCase):
    """What other nodes send (forwarded ``poker.room`` events) and store, played here by hand."""

    def test_a_version_from_another_node_that_lacks_a_vote_loses_none(self) -> None:
        room_id = self.new_room()
        alice, alice_sees = self.sit("Alice", room_id)
        self.act(alice, room_id, "vote", card="5")
        # meanwhile another node, which had not heard of Alice's vote yet, applied Bob's
        elsewhere = Room(room_id, "Sprint 42", 1, False, {"Bob": Vote("8")})
        poker.app.dispatch("poker.room", RoomChanged(elsewhere, "vote", "Bob"))
        self.assertEqual(self.state(alice_sees)["votes"], {"Alice": {"version": 1}, "Bob": {"version": 1}})
        self.act(alice, room_id, "reveal")
        body = self.client.get(f"/api/rooms/{room_id}").json()
        self.assertEqual(
            {name: vote["card"] for name, vote in body["votes"].items()}, {"Alice": "5", "Bob": "8"}
        )

    def test_an_older_round_from_another_node_takes_nothing_back(self) -> None:
        room_id = self.new_room()
        alice, alice_sees = self.sit("Alice", room_id)
        self.act(alice, room_id, "new_round", round=1)
        poker.app.dispatch("poker.room", RoomChanged(Room(room_id, "Sprint 42", 1, True), "reveal", "Bob"))
        self.assertEqual((self.state(alice_sees)["round"], self.state(alice_sees)["revealed"]), (2, False))

    def test_a_node_that_forgot_a_room_reads_the_stored_state(self) -> None:
        room_id = self.new_room()
        alice, _ = self.sit("Alice", room_id)
        self.act(alice, room_id, "vote", card="5")
        poker._rooms.clear()  # as a node that started after the room was made
        self.assertEqual(self.client.get(f"/api/rooms/{room_id}").json()["votes"], {"Alice": {"version": 1}})
        poker._rooms.clear()
        bob, _ = self.sit("Bob", room_id)
        self.act(bob, room_id, "vote", card="8")
        self.act(bob, room_id, "reveal")
        body = self.client.get(f"/api/rooms/{room_id}").json()
        self.assertEqual(
            {name: vote["card"] for name, vote in body["votes"].items()}, {"Alice": "5", "Bob": "8"}
        )

    def test_a_stored_state_that_is_no_room_is_ignored(self) -> None:
        self.assertIsNone(poker.room_from_json({"id": ROOM, "name": "x", "round": "one", "votes": {}}))
        self.assertIsNone(poker.room_from_json(["no", "room"]))
        stored = {"id": ROOM, "name": "x", "round": 1, "revealed": False, "votes": {"a": {"card": "5"}}}
        self.assertEqual(poker.room_from_json(stored), Room(ROOM, "x", 1, False, {"a": Vote("5")}))
        self.assertIn("votes", stored)  # the store's copy is left as it was


class HistoryTests(PokerTestCase):
    def test_a_player_back_from_a_dropped_connection_gets_what_it_missed(self) -> None:
        room_id = self.new_room()
        alice, alice_sees = self.sit("Alice", room_id)
        bob, _ = self.sit("Bob", room_id)
        last = alice_sees.events[-1].publication  # Bob joined
        alice.disconnect()
        self.act(bob, room_id, "vote", card="8")
        self.sit("Carol", room_id)
        back, back_sees = self.sit("Alice", room_id)
        self.assertEqual(back_sees.id, alice_sees.id)  # the same subscription id after a reconnect
        missed = back.call("wamp.subscription.get_events", back_sees.id, after_publication=last).result
        self.assertEqual(missed["kwargs"], {"more": False, "gap": False})
        payloads = [event["args"][0] for event in missed["args"]]
        self.assertEqual(
            [
                (p["type"], p.get("change", p.get("person", {})).get("by") or p["person"]["name"])
                for p in payloads
            ],
            [("left", "Alice"), ("state", "Bob"), ("joined", "Carol"), ("joined", "Alice")],
        )
        self.assertEqual(payloads[1]["votes"], {"Bob": {"version": 1}})
