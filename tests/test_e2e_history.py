"""End-to-end: event history (``@app.topic(..., history=N)``, ``app.history``, ``--history``) read with the
``wamp.subscription.get_events`` meta procedure by autobahn-python clients over real TCP: its answer, every
filter, paging, bad input, the delivery rules, and recovering the events missed while disconnected; on one
node, and on nodes sharing a real redis-server (one Redis Stream per topic, the same history from every node,
each publication stored once, kept when a node restarts)."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from autobahn.wamp.types import CallResult, PublishOptions
from twisted.internet import defer
from twisted.internet.threads import deferToThread

from sandstone import Credentials, Identity, Limits, Sandstone, Topic
from sandstone._tap import Options
from sandstone.push import Pusher
from tests.cluster_support import BUS_OPTIONS, ClusterTestCase, Node
from tests.support import Client, DisclosingClient, ServerTestCase, sleep, wait_until
from tests.test_e2e_auth import AuthClient, client_class
from tests.test_e2e_meta import call_error

GET_EVENTS = "wamp.subscription.get_events"
CHAT_HISTORY = 5  # events each chat/{channel} keeps
SENSOR_HISTORY = 4  # events each sensors.* topic keeps
USERS = {"alice": "user", "bob": "admin", "carol": "user"}  # ticket users: authid -> authrole
ACK = PublishOptions(acknowledge=True)
RFC_3339_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def history_app() -> Sandstone:
    """An open router (anonymous or ticket sessions) whose ``chat/{channel}`` Topic keeps a history, as do
    the ``sensors.`` topics (a prefix rule) and ``secret.plans``, which only admins may subscribe to."""
    app = Sandstone(anonymous=True, open_uris=True)

    @app.authenticator
    def check(credentials: Credentials) -> Identity | None:
        authid = credentials.authid or ""
        if authid in USERS and credentials.secret_is(f"{authid}-ticket"):
            return Identity(authid, USERS[authid])
        return None

    @app.authorizer
    def authorize(session: Any, action: str, uri: str, match: str) -> bool:
        return not uri.startswith("secret.") or session.authrole == "admin"

    @app.topic("chat/{channel}", history=CHAT_HISTORY)
    class Chat(Topic):
        pass

    app.history("sensors.", match="prefix", limit=SENSOR_HISTORY)
    app.history("secret.plans", limit=10)
    return app


def ticket(authid: str) -> type[AuthClient]:
    """A client class joining as ``authid`` with ticket authentication."""
    return client_class(authmethods=["ticket"], authid=authid, ticket=f"{authid}-ticket")


async def get_events(client: Client, subscription_id: Any, **options: Any) -> tuple[list[Any], Any]:
    """The events of a ``get_events`` answer, and its keyword results (``more``, ``gap``)."""
    result = await client.call(GET_EVENTS, subscription_id, **options)
    assert isinstance(result, CallResult), result
    return list(result.results), dict(result.kwresults)


async def ids(client: Client, subscription_id: int, **options: Any) -> list[int]:
    """The publication ids ``get_events`` answers."""
    return [event["publication"] for event in (await get_events(client, subscription_id, **options))[0]]


async def publish_all(client: Client, topic: str, payloads: list[Any]) -> list[int]:
    """Publish each payload (acknowledged, one after another); their publication ids."""
    return [(await client.publish(topic, payload, options=ACK)).id for payload in payloads]


def parse_time(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def rfc_3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def live(client: Client, topic: str) -> list[int]:
    """The publication ids of the live events a client's ``record`` subscription got."""
    return [event.details.publication for event in client.received.get(topic, [])]


class OneNodeHistoryTests(ServerTestCase):
    timeout = 30

    def setUp(self) -> None:
        self.serve(history_app())

    async def test_get_events_answers_each_stored_event_oldest_first(self) -> None:
        readers = [await self.connect(s) for s in ("json", "msgpack", "cbor")]
        subscriptions = [await reader.record("chat/general") for reader in readers]
        self.assertEqual(len({s.id for s in subscriptions}), 1)  # one subscription, whoever subscribes
        plain, disclosing = await self.connect(), await self.connect(client_class=DisclosingClient)
        before = time.time()
        first = await plain.publish("chat/general", "hello", 1, mood="happy", options=ACK)
        bare = await plain.publish("chat/general", options=ACK)
        signed = await disclosing.publish("chat/general", "signed", options=ACK)
        after = time.time()
        published = [first.id, bare.id, signed.id]
        await wait_until(lambda: all(live(r, "chat/general") == published for r in readers))

        for reader, subscription in zip(readers, subscriptions, strict=True):
            events, flags = await get_events(reader, subscription.id)
            self.assertEqual(flags, {"more": False, "gap": False})
            self.assertEqual([e["publication"] for e in events], published)
            stamps = [e.pop("timestamp") for e in events]
            self.assertEqual(
                events,
                [
                    {
                        "subscription": subscription.id,
                        "publication": first.id,
                        "details": {},
                        "args": ["hello", 1],
                        "kwargs": {"mood": "happy"},
                    },
                    {"subscription": subscription.id, "publication": bare.id, "details": {}},
                    {
                        "subscription": subscription.id,
                        "publication": signed.id,
                        "details": {
                            "publisher": disclosing._session_id,
                            "publisher_authid": disclosing._authid,
                            "publisher_authrole": "anonymous",
                        },
                        "args": ["signed"],
                    },
                ],
            )
            for stamp in stamps:
                self.assertRegex(stamp, RFC_3339_MS)
                self.assertTrue(before - 0.001 <= parse_time(stamp) <= after, (before, stamp, after))
            self.assertEqual(stamps, sorted(stamps))

    async def test_limit_reverse_and_paging(self) -> None:
        reader, publisher = await self.connect(), await self.connect("msgpack")
        subscription = await reader.record("chat/paging")
        published = await publish_all(publisher, "chat/paging", list(range(7)))
        kept = published[-CHAT_HISTORY:]  # the last 5
        sid = subscription.id
        events, flags = await get_events(reader, sid)
        self.assertEqual(([e["publication"] for e in events], flags), (kept, {"more": False, "gap": False}))
        self.assertEqual([e["args"] for e in events], [[n] for n in range(2, 7)])

        events, flags = await get_events(reader, sid, limit=2)
        self.assertEqual(([e["publication"] for e in events], flags["more"]), (kept[:2], True))
        events, flags = await get_events(reader, sid, limit=CHAT_HISTORY)
        self.assertEqual(([e["publication"] for e in events], flags["more"]), (kept, False))

        # page on with after_publication=<the last one's publication>
        pages, last, more = [], None, True
        while more:
            options = {"limit": 2} if last is None else {"limit": 2, "after_publication": last}
            events, flags = await get_events(reader, sid, **options)
            pages.append([e["publication"] for e in events])
            last, more = pages[-1][-1], flags["more"]
            self.assertFalse(flags["gap"])
        self.assertEqual(pages, [kept[0:2], kept[2:4], kept[4:5]])

        # newest first, and paging back with before_publication
        self.assertEqual(await ids(reader, sid, reverse=True), kept[::-1])
        events, flags = await get_events(reader, sid, reverse=True, limit=2)
        self.assertEqual(([e["publication"] for e in events], flags["more"]), ([kept[4], kept[3]], True))
        events, flags = await get_events(reader, sid, reverse=True, limit=2, before_publication=kept[3])
        self.assertEqual(([e["publication"] for e in events], flags["more"]), ([kept[2], kept[1]], True))
        events, flags = await get_events(reader, sid, reverse=True, limit=2, before_publication=kept[1])
        self.assertEqual(([e["publication"] for e in events], flags["more"]), ([kept[0]], False))
        self.assertEqual(await ids(reader, sid, reverse=False), kept)

    async def test_publication_filters_and_the_gap(self) -> None:
        reader, publisher = await self.connect(), await self.connect()
        sid = (await reader.record("chat/filters")).id
        p = await publish_all(publisher, "chat/filters", ["p0", "p1", "p2", "p3", "p4"])
        for options, expected in (
            ({"after_publication": p[1]}, p[2:]),
            ({"from_publication": p[1]}, p[1:]),
            ({"before_publication": p[3]}, p[:3]),
            ({"until_publication": p[3]}, p[:4]),
            ({"from_publication": p[1], "until_publication": p[3]}, p[1:4]),
            ({"after_publication": p[1], "before_publication": p[3]}, [p[2]]),
            ({"after_publication": p[4]}, []),
            ({"until_publication": p[0]}, [p[0]]),
            ({"after_publication": p[1], "reverse": True}, p[2:][::-1]),
            ({"from_publication": p[1], "limit": 2}, p[1:3]),
        ):
            events, flags = await get_events(reader, sid, **options)
            self.assertEqual([e["publication"] for e in events], expected, options)
            self.assertFalse(flags["gap"], options)

        # three more: p0..p2 are no longer held (the history keeps 5)
        p += await publish_all(publisher, "chat/filters", ["p5", "p6", "p7"])
        held = p[3:]
        self.assertEqual(await ids(reader, sid), held)
        for options, expected, gap in (
            ({"after_publication": p[1]}, held, True),  # events may have been missed
            ({"after_publication": p[2]}, held, True),
            ({"after_publication": p[3]}, held[1:], False),
            ({"from_publication": p[0]}, held, True),
            ({"before_publication": p[1]}, [], True),
            ({"until_publication": p[2]}, [], True),
            ({"after_publication": 12345}, held, True),  # never published here
            ({"after_publication": p[5], "before_publication": p[7]}, [p[6]], False),
        ):
            events, flags = await get_events(reader, sid, **options)
            self.assertEqual(([e["publication"] for e in events], flags["gap"]), (expected, gap), options)

    async def test_time_filters(self) -> None:
        reader, publisher = await self.connect("cbor"), await self.connect()
        sid = (await reader.record("chat/times")).id
        for payload in ("t0", "t1", "t2"):
            await publisher.publish("chat/times", payload, options=ACK)
            await sleep(0.05)  # distinct milliseconds, well apart
        events, _ = await get_events(reader, sid)
        e = [event["publication"] for event in events]
        t = [parse_time(event["timestamp"]) for event in events]
        self.assertTrue(t[0] < t[1] < t[2], t)
        # bounds between the events
        mid01, mid12 = rfc_3339((t[0] + t[1]) / 2), rfc_3339((t[1] + t[2]) / 2)
        for options, expected in (
            ({"from_time": mid01}, e[1:]),
            ({"after_time": mid01}, e[1:]),
            ({"before_time": mid12}, e[:2]),
            ({"until_time": mid12}, e[:2]),
            ({"from_time": mid01, "before_time": mid12}, [e[1]]),
            ({"after_time": mid01, "until_time": mid12, "reverse": True}, [e[1]]),
            ({"from_time": "2000-01-01T00:00:00Z"}, e),
            ({"from_time": "2000-01-01T00:00:00.000+00:00", "limit": 1}, e[:1]),
            ({"until_time": "2000-01-01T00:00:00Z"}, []),
            ({"after_time": rfc_3339(time.time() + 3600)}, []),
            # another offset, the same moment
            ({"from_time": _with_offset(mid01, hours=2)}, e[1:]),
            ({"before_time": _with_offset(mid12, hours=-5)}, e[:2]),
        ):
            self.assertEqual(await ids(reader, sid, **options), expected, options)

    async def test_time_filters_at_the_timestamps_get_events_reports(self) -> None:
        """A reported ``timestamp`` given back as a bound: ``after_time`` leaves that event out,
        ``until_time`` and ``from_time`` take it in, ``before_time`` leaves it out (as with Redis)."""
        reader, publisher = await self.connect(), await self.connect()
        await check_time_bounds(self, reader, publisher, "chat/stamps")

    async def test_pattern_subscriptions_read_the_history_of_every_topic_they_cover(self) -> None:
        reader, publisher = await self.connect("msgpack"), await self.connect()
        prefix = (await reader.record("sensors.", match="prefix")).id
        wildcard = (await reader.record("sensors..temp", match="wildcard")).id
        exact = (await reader.record("sensors.kitchen.temp")).id
        order = [
            ("sensors.kitchen.temp", 20),
            ("sensors.attic.temp", 15),
            ("sensors.attic.humidity", 60),
            ("sensors.kitchen.temp", 21),
            ("sensors.attic.temp", 16),
        ]
        published = [(topic, (await publish_all(publisher, topic, [value]))[0]) for topic, value in order]
        events, flags = await get_events(reader, prefix)
        self.assertEqual(flags, {"more": False, "gap": False})
        self.assertEqual(
            [(e["details"], e["publication"], e["args"]) for e in events],
            [
                ({"topic": topic}, pid, [value])
                for (topic, pid), (_, value) in zip(published, order, strict=True)
            ],
        )
        self.assertEqual({e["subscription"] for e in events}, {prefix})
        self.assertEqual(
            await ids(reader, prefix, topic="sensors.attic.temp"),
            [pid for topic, pid in published if topic == "sensors.attic.temp"],
        )
        self.assertEqual(await ids(reader, prefix, topic="chat/general"), [])  # not covered
        self.assertEqual(
            await ids(reader, wildcard), [pid for topic, pid in published if topic.endswith(".temp")]
        )
        kitchen = [pid for topic, pid in published if topic == "sensors.kitchen.temp"]
        events, _ = await get_events(reader, exact)
        self.assertEqual([(e["publication"], e["details"]) for e in events], [(pid, {}) for pid in kitchen])

        # what the app broadcasts is kept too
        published.append(("sensors.attic.temp", self.app.broadcast("sensors.attic.temp", 17)))
        self.assertEqual(await ids(reader, prefix, after_publication=published[-2][1]), [published[-1][1]])

        # each concrete topic keeps its own last 4
        kitchen += await publish_all(publisher, "sensors.kitchen.temp", [22, 23, 24])
        self.assertEqual(await ids(reader, exact), kitchen[-SENSOR_HISTORY:])
        self.assertEqual(len(await ids(reader, prefix)), SENSOR_HISTORY + 4)
        self.assertEqual(await ids(reader, prefix, topic="sensors.kitchen.temp"), kitchen[-SENSOR_HISTORY:])

        # a prefix subscription over a Topic declared with a history
        chat = (await reader.record("chat/", match="prefix")).id
        one = await publish_all(publisher, "chat/one", ["a"])
        two = await publish_all(publisher, "chat/two", ["b"])
        events, _ = await get_events(reader, chat)
        self.assertEqual(
            [(e["details"]["topic"], e["publication"]) for e in events],
            [("chat/one", one[0]), ("chat/two", two[0])],
        )

    async def test_bad_arguments(self) -> None:
        client = await self.connect()
        sid = (await client.record("chat/bad")).id
        nothing = (await client.record("news.without.history")).id
        self.assertEqual(await get_events(client, nothing), ([], {"more": False, "gap": False}))
        call = client.call
        for bad, error in (
            (call(GET_EVENTS, 1), "wamp.error.no_such_subscription"),
            (call(GET_EVENTS, sid + 1 if sid < 2**53 else sid - 1), "wamp.error.no_such_subscription"),
            (call(GET_EVENTS, "x"), "wamp.error.invalid_argument"),
            (call(GET_EVENTS), "wamp.error.invalid_argument"),
            (call(GET_EVENTS, sid, limit="10"), "wamp.error.invalid_argument"),
            (call(GET_EVENTS, sid, limit=0), "wamp.error.invalid_argument"),
            (call(GET_EVENTS, sid, limit=-1), "wamp.error.invalid_argument"),
            (call(GET_EVENTS, sid, limit=1.5), "wamp.error.invalid_argument"),
            (call(GET_EVENTS, sid, reverse="yes"), "wamp.error.invalid_argument"),
            (call(GET_EVENTS, sid, after_publication="x"), "wamp.error.invalid_argument"),
            (call(GET_EVENTS, sid, from_publication=0), "wamp.error.invalid_argument"),
            (call(GET_EVENTS, sid, before_publication=2**53 + 1), "wamp.error.invalid_argument"),
            (call(GET_EVENTS, sid, until_publication=True), "wamp.error.invalid_argument"),
            (call(GET_EVENTS, sid, from_time="yesterday"), "wamp.error.invalid_argument"),
            (call(GET_EVENTS, sid, after_time=1733400000), "wamp.error.invalid_argument"),
            (call(GET_EVENTS, sid, before_time=""), "wamp.error.invalid_argument"),
            (call(GET_EVENTS, sid, until_time=["2026-01-01T00:00:00Z"]), "wamp.error.invalid_argument"),
            (call(GET_EVENTS, sid, topic=5), "wamp.error.invalid_argument"),
            (call(GET_EVENTS, sid, topic=""), "wamp.error.invalid_argument"),
            (call(GET_EVENTS, sid, count=5), "wamp.error.invalid_argument"),
            # bad input is told before the subscription is looked up
            (call(GET_EVENTS, 1, limit="x"), "wamp.error.invalid_argument"),
        ):
            self.assertEqual(await call_error(bad), error)
        self.assertTrue(client.is_attached())

    async def test_a_subscription_the_caller_may_not_make_does_not_exist_for_it(self) -> None:
        bob = await self.connect(client_class=ticket("bob"))  # an admin
        guest = await self.connect()
        secret = (await bob.record("secret.plans")).id
        plans = await publish_all(bob, "secret.plans", ["x"])
        self.assertEqual(await ids(bob, secret), plans)
        self.assertEqual(await call_error(guest.call(GET_EVENTS, secret)), "wamp.error.no_such_subscription")

    async def test_a_huge_limit_is_capped_at_max_history_events(self) -> None:
        self.app.limits = Limits(max_history_events=3)
        reader, publisher = await self.connect(), await self.connect()
        sid = (await reader.record("chat/capped")).id
        published = await publish_all(publisher, "chat/capped", list(range(5)))
        for options in ({"limit": 1000}, {"limit": 2**53}, {}):
            events, flags = await get_events(reader, sid, **options)
            answer = ([e["publication"] for e in events], flags["more"])
            self.assertEqual(answer, (published[:3], True), options)
        events, flags = await get_events(reader, sid, limit=1000, after_publication=published[2])
        self.assertEqual(([e["publication"] for e in events], flags["more"]), (published[3:], False))

    async def test_max_history_events_0_disables_the_cap(self) -> None:
        # Limits: "0 (or None where allowed) disables a limit" (and --max-history-events 0 says the same)
        self.app.limits = Limits(max_history_events=0)
        reader, publisher = await self.connect(), await self.connect()
        sid = (await reader.record("chat/uncapped")).id
        published = await publish_all(publisher, "chat/uncapped", list(range(5)))
        self.assertEqual(await get_events(reader, sid, limit=1000), await get_events(reader, sid, limit=5))
        events, flags = await get_events(reader, sid)
        self.assertEqual(([e["publication"] for e in events], flags["more"]), (published, False))

    async def test_history_topics_are_bounded_by_the_limit(self) -> None:
        self.app.limits = Limits(max_history_topics=2)
        reader, publisher = await self.connect(), await self.connect()
        chat = (await reader.record("chat/", match="prefix")).id
        one = (await reader.record("chat/one")).id
        published = {
            topic: await publish_all(publisher, topic, [topic]) for topic in ("chat/one", "chat/two")
        }
        published["chat/one"] += await publish_all(publisher, "chat/one", ["again"])  # written to last
        published["chat/three"] = await publish_all(publisher, "chat/three", ["three"])
        self.assertEqual(await ids(reader, chat), published["chat/one"] + published["chat/three"])
        self.assertEqual(await ids(reader, chat, topic="chat/two"), [])  # forgotten, its events too
        self.assertEqual(await ids(reader, one), published["chat/one"])

    async def test_max_history_topics_0_disables_the_limit(self) -> None:
        # Limits: "0 (or None where allowed) disables a limit"
        self.app.limits = Limits(max_history_topics=0)
        reader, publisher = await self.connect(), await self.connect()
        chat = (await reader.record("chat/", match="prefix")).id
        published = [(await publish_all(publisher, f"chat/{n}", [n]))[0] for n in range(3)]
        self.assertEqual(await ids(reader, chat), published)

    async def test_session_id_rules_are_not_stored_and_identity_rules_choose_the_readers(self) -> None:
        alice = await self.connect(client_class=ticket("alice"))
        bob = await self.connect("msgpack", client_class=ticket("bob"))
        anonymous = await self.connect("cbor")
        publisher = await self.connect()
        readers = {"alice": alice, "bob": bob, "anonymous": anonymous}
        subscription = None
        for reader in readers.values():
            subscription = await reader.record("chat/rules")
        assert subscription is not None

        async def publish(payload: str, **options: Any) -> int:
            return (await publisher.publish("chat/rules", payload, options=PublishOptions(**options))).id

        everyone = await publish("everyone", acknowledge=True)
        await publish("not bob's session", acknowledge=True, exclude=[bob._session_id])
        await publish("alice's session", acknowledge=True, eligible=[alice._session_id])
        await publish("nobody", acknowledge=True, eligible=[])
        for_admins = await publish("admins", acknowledge=True, eligible_authrole=["admin"])
        not_alice = await publish("not alice", acknowledge=True, exclude_authid=["alice"])
        not_admins = await publish("no admins", acknowledge=True, exclude_authrole=["admin"])
        for_alice = await publish("alice", acknowledge=True, eligible_authid=["alice"])
        # live: the session-id rules were applied to the sessions of the moment
        await wait_until(lambda: len(alice.received["chat/rules"]) == 5)
        self.assertEqual(
            [e.payload for e in alice.received["chat/rules"]],
            ["everyone", "not bob's session", "alice's session", "no admins", "alice"],
        )
        # the history: the publications for session ids were not kept; the identity rules apply to the reader
        answers = {name: await ids(reader, subscription.id) for name, reader in readers.items()}
        self.assertEqual(
            answers,
            {
                "alice": [everyone, not_admins, for_alice],
                "bob": [everyone, for_admins, not_alice],
                "anonymous": [everyone, not_alice, not_admins],
            },
        )

    async def test_a_client_recovers_the_events_it_missed_while_away(self) -> None:
        publisher = await self.connect("msgpack")
        client = await self.connect()
        first = await client.record("chat/general")
        seen = await publish_all(publisher, "chat/general", ["a", "b"])
        await wait_until(lambda: live(client, "chat/general") == seen)
        last = client.received["chat/general"][-1].details.publication
        await self.drop(client)

        missed = await publish_all(publisher, "chat/general", ["c", "d", "e"])
        client = await self.connect()
        again = await client.record("chat/general")
        self.assertEqual(again.id, first.id)  # the same subscription id after a reconnect
        # a live event while recovering: in the history too (the client skips what it showed already)
        during = await publish_all(publisher, "chat/general", ["f"])
        await wait_until(lambda: live(client, "chat/general") == during)
        events, flags = await get_events(client, again.id, after_publication=last)
        self.assertEqual([e["publication"] for e in events], missed + during)
        self.assertEqual([e["args"][0] for e in events], ["c", "d", "e", "f"])
        self.assertEqual(flags, {"more": False, "gap": False})

        # away for longer than the history reaches back: the gap says events were missed
        last = live(client, "chat/general")[-1]
        await self.drop(client)
        missed = await publish_all(publisher, "chat/general", [f"m{n}" for n in range(CHAT_HISTORY + 2)])
        client = await self.connect("cbor")
        again = await client.record("chat/general")
        events, flags = await get_events(client, again.id, after_publication=last)
        self.assertEqual([e["publication"] for e in events], missed[-CHAT_HISTORY:])
        self.assertEqual(flags, {"more": False, "gap": True})


def _with_offset(text: str, hours: int) -> str:
    """The same moment as the RFC 3339 ``text``, written in another UTC offset."""
    moment = datetime.fromisoformat(text).astimezone(timezone(timedelta(hours=hours)))
    return moment.isoformat(timespec="milliseconds")


async def check_time_bounds(case: Any, reader: Client, publisher: Client, topic: str) -> None:
    """Three events well apart; each reported timestamp used as a bound selects as RFC 3339 says."""
    sid = (await reader.record(topic)).id
    for payload in ("s0", "s1", "s2"):
        await publisher.publish(topic, payload, options=ACK)
        await sleep(0.05)
    events, _ = await get_events(reader, sid)
    case.assertEqual(len(events), 3)
    e = [event["publication"] for event in events]
    stamp = events[1]["timestamp"]
    for options, expected in (
        ({"from_time": stamp}, e[1:]),
        ({"after_time": stamp}, e[2:]),
        ({"before_time": stamp}, e[:1]),
        ({"until_time": stamp}, e[:2]),
    ):
        case.assertEqual(await ids(reader, sid, **options), expected, options)


class HistoryOptionTests(ServerTestCase):
    async def test_the_history_option_of_the_open_router(self) -> None:
        options = Options()
        options.parseOptions(
            [
                "--history",
                "news=2",
                "--history",
                "prefix:sensors.=3",
                "--history",
                "wildcard:rooms..temp=2",
                "--max-history-events",
                "2",
            ]
        )
        self.serve(options.app)
        reader, publisher = await self.connect(), await self.connect("cbor")
        news = (await reader.record("news")).id
        sensors = (await reader.record("sensors.", match="prefix")).id
        rooms = (await reader.record("rooms.kitchen.temp")).id
        other = (await reader.record("other")).id
        published = {
            topic: await publish_all(publisher, topic, list(range(4)))
            for topic in ("news", "sensors.a", "rooms.kitchen.temp", "other")
        }
        self.assertEqual(await ids(reader, news), published["news"][-2:])
        events, flags = await get_events(reader, sensors)  # capped at 2 of the 3 kept
        kept = published["sensors.a"][1:]
        self.assertEqual(([e["publication"] for e in events], flags["more"]), (kept[:2], True))
        self.assertEqual(await ids(reader, sensors, after_publication=kept[1]), kept[2:])
        self.assertEqual(await ids(reader, rooms), published["rooms.kitchen.temp"][-2:])
        self.assertEqual(await get_events(reader, other), ([], {"more": False, "gap": False}))


class ClusterHistoryTests(ClusterTestCase):
    def stream_length(self, node: Node, topic: str) -> int:
        """XLEN of the topic's history stream in the test's Redis."""
        return self.redis_client().xlen(f"{node.bus.channels.base}:history:t:{topic}")

    async def written(self, *nodes: Node) -> None:
        """Wait until the Redis commands each node sent so far are done (one connection answers in order): a
        node sends its write of a publication before it acknowledges or delivers it."""
        await defer.gatherResults([node.bus._command("ping") for node in nodes])

    async def start_node_and_port(self, app: Sandstone, name: str) -> tuple[Node, Any]:
        """``ClusterTestCase.start_node``, also returning the listening port (to stop the node)."""
        port = self.serve(app)
        bus = app.use_redis(self.redis.url, **BUS_OPTIONS)
        self.addCleanup(self.stop_bus, bus)
        bus.startService()
        await bus.when_connected()
        return Node(name, app, bus, self.port), port

    async def test_every_node_reads_one_history_in_one_order(self) -> None:
        a, b = await self.start_cluster(history_app, 2)
        self.assertEqual(a.bus.channels.base, "sandstone:realm1")
        reader_a, reader_b = await self.connect_to(a), await self.connect_to(b, "msgpack")
        sid = (await reader_a.record("chat/general")).id
        self.assertEqual((await reader_b.record("chat/general")).id, sid)
        publisher_a, publisher_b = await self.connect_to(a), await self.connect_to(b, "cbor")
        from_a, from_b = [], []
        for n in range(CHAT_HISTORY):  # interleaved, each acknowledged before the next
            publisher, mine = (publisher_a, from_a) if n % 2 == 0 else (publisher_b, from_b)
            mine.append((await publisher.publish("chat/general", n, options=ACK)).id)
        await self.written(a, b)
        self.assertEqual(self.stream_length(a, "chat/general"), CHAT_HISTORY)  # each stored once

        answer_a, flags_a = await get_events(reader_a, sid)
        answer_b, flags_b = await get_events(reader_b, sid)
        self.assertEqual(answer_a, answer_b)
        self.assertEqual(flags_a, {"more": False, "gap": False})
        order = [e["publication"] for e in answer_a]
        self.assertEqual(sorted(order), sorted(from_a + from_b))
        self.assertEqual([p for p in order if p in from_a], from_a)
        self.assertEqual([p for p in order if p in from_b], from_b)
        self.assertEqual(sorted(e["args"][0] for e in answer_a), list(range(CHAT_HISTORY)))
        # the same filters give the same answers on both nodes
        for options in (
            {"limit": 2},
            {"after_publication": order[1]},
            {"reverse": True, "before_publication": order[3]},
            {"until_publication": order[2], "limit": 1},
        ):
            answer_a = await get_events(reader_a, sid, **options)
            self.assertEqual(answer_a, await get_events(reader_b, sid, **options), options)

        # more than the history keeps: both read the last 5 (the stream's trimming is approximate)
        more = await publish_all(publisher_b, "chat/general", ["x", "y", "z"])
        await self.written(a, b)
        expected = (order + more)[-CHAT_HISTORY:]
        self.assertEqual(await ids(reader_a, sid), expected)
        self.assertEqual(await ids(reader_b, sid), expected)
        events, flags = await get_events(reader_a, sid, after_publication=order[0])
        self.assertEqual(([e["publication"] for e in events], flags["gap"]), (expected, True))

    async def test_pattern_history_and_time_filters_on_every_node(self) -> None:
        a, b = await self.start_cluster(history_app, 2)
        reader_a, reader_b = await self.connect_to(a), await self.connect_to(b)
        prefix = (await reader_a.record("sensors.", match="prefix")).id
        await reader_b.record("sensors.", match="prefix")
        publisher_a, publisher_b = await self.connect_to(a), await self.connect_to(b)
        published = []
        for n, (publisher, topic) in enumerate(
            [
                (publisher_a, "sensors.kitchen"),
                (publisher_b, "sensors.attic"),
                (publisher_a, "sensors.attic"),
                (publisher_b, "sensors.kitchen"),
            ]
        ):
            published.append((topic, (await publisher.publish(topic, n, options=ACK)).id))
            await sleep(0.01)  # the streams are ordered among themselves by their entries' times
        await self.written(a, b)
        for reader in (reader_a, reader_b):
            events, _ = await get_events(reader, prefix)
            self.assertEqual([(e["details"]["topic"], e["publication"]) for e in events], published)
            self.assertEqual(
                await ids(reader, prefix, topic="sensors.attic"),
                [pid for topic, pid in published if topic == "sensors.attic"],
            )
        await check_time_bounds(self, reader_a, publisher_b, "chat/stamps")
        await check_time_bounds(self, reader_b, publisher_a, "chat/stamps-b")

    async def test_history_topics_are_bounded_in_redis(self) -> None:
        def app() -> Sandstone:
            made = history_app()
            made.limits = Limits(max_history_topics=2)
            return made

        a, b = await self.start_cluster(app, 2)
        redis = self.redis_client()
        base = a.bus.channels.base
        publisher_a, publisher_b = await self.connect_to(a), await self.connect_to(b)
        for publisher, topic in (
            (publisher_a, "chat/one"),
            (publisher_b, "chat/two"),
            (publisher_a, "chat/three"),
        ):
            await publish_all(publisher, topic, [topic])
            await self.written(a, b)
            await sleep(0.01)  # the topics are ordered by their last write's millisecond
        self.assertEqual(redis.exists(f"{base}:history:t:chat/one"), 0)
        self.assertEqual(sorted(redis.zrange(f"{base}:history:topics", 0, -1)), ["chat/three", "chat/two"])
        reader = await self.connect_to(b)
        chat = (await reader.record("chat/", match="prefix")).id
        events, _ = await get_events(reader, chat)
        self.assertEqual([e["details"]["topic"] for e in events], ["chat/two", "chat/three"])

    async def test_a_client_recovers_across_a_node_restart(self) -> None:
        a, port = await self.start_node_and_port(history_app(), "A")
        b = await self.start_node(history_app(), "B")
        client = await self.connect_to(a)
        first = await client.record("chat/general")
        publisher = await self.connect_to(b, "msgpack")
        seen = await publish_all(publisher, "chat/general", ["a", "b"])
        await wait_until(lambda: live(client, "chat/general") == seen)
        last = live(client, "chat/general")[-1]

        await self.drop(client)
        await defer.maybeDeferred(port.stopListening)
        await a.bus.stopService()
        missed = await publish_all(publisher, "chat/general", ["c", "d"])

        restarted = await self.start_node(history_app(), "A2")
        client = await self.connect_to(restarted, "cbor")
        again = await client.record("chat/general")
        self.assertEqual(again.id, first.id)
        await self.written(b)
        events, flags = await get_events(client, again.id, after_publication=last)
        self.assertEqual([e["publication"] for e in events], missed)
        self.assertEqual([e["args"] for e in events], [["c"], ["d"]])
        self.assertEqual(flags, {"more": False, "gap": False})

        # away longer than the history reaches back
        last = missed[-1]
        await self.drop(client)
        missed = await publish_all(publisher, "chat/general", [f"m{n}" for n in range(CHAT_HISTORY + 1)])
        await self.written(b)
        client = await self.connect_to(restarted)
        again = await client.record("chat/general")
        events, flags = await get_events(client, again.id, after_publication=last)
        self.assertEqual([e["publication"] for e in events], missed[-CHAT_HISTORY:])
        self.assertEqual(flags, {"more": False, "gap": True})
        # B's client connected before A2 was served: gone before A2's cleanup waits for every WebSocket timer
        await self.drop(publisher)

    async def test_a_publication_every_node_receives_is_stored_once(self) -> None:
        def app() -> Sandstone:
            made = history_app()
            made.forward("reading", dict)

            @made.on_event("reading")
            def relay(event: dict[str, Any]) -> None:
                made.broadcast("sensors.keyed", event)  # on every node: a keyed broadcast

            return made

        nodes = await self.start_cluster(app, 3)
        readers = [await self.connect_to(node) for node in nodes]
        for reader in readers:
            await reader.record("sensors.", match="prefix")
        subscription_id = (await readers[0].record("sensors.pushed")).id

        # an outside producer: every node gets the delivery from Redis
        pusher = await deferToThread(Pusher, self.redis.url)
        self.addCleanup(deferToThread, pusher.close)
        pushed = await deferToThread(pusher.broadcast, "sensors.pushed", {"t": 20})
        await deferToThread(pusher.broadcast, "sensors.pushed", {"t": "excluded"}, exclude=[1])
        await wait_until(lambda: all(len(r.received["sensors."]) == 2 for r in readers))
        await self.written(*nodes)
        self.assertEqual(self.stream_length(nodes[0], "sensors.pushed"), 1)
        for reader in readers:
            events, _ = await get_events(reader, subscription_id)
            self.assertEqual([(e["publication"], e["args"]) for e in events], [(pushed, [{"t": 20}])])

        # a broadcast every node makes (handling a forwarded event): one publication, stored once
        await nodes[1].app.dispatch("reading", {"t": 21})
        await wait_until(lambda: all(len(r.received["sensors."]) == 3 for r in readers))
        await sleep(0.1)  # a second copy would arrive now
        await self.written(*nodes)
        self.assertTrue(all(len(r.received["sensors."]) == 3 for r in readers))
        keyed = {r.received["sensors."][-1].details.publication for r in readers}
        self.assertEqual(len(keyed), 1)
        self.assertEqual(self.stream_length(nodes[0], "sensors.keyed"), 1)
        keyed_subscription = (await readers[2].record("sensors.keyed")).id
        events, _ = await get_events(readers[2], keyed_subscription)
        self.assertEqual([(e["publication"], e["args"]) for e in events], [(keyed.pop(), [{"t": 21}])])
