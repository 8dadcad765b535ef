"""End to end over real TCP, with autobahn-python clients: a value one serializer carries and another does
not (a CBOR datetime, a JSON integer beyond 64 bits or 1e400) is refused where it enters the router, and
every subscriber on every serializer still gets every valid event; a callee's unserializable result is an
ERROR for its caller, never a hang. Nothing is logged at critical meanwhile."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import cbor2
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import PublishOptions
from twisted.internet import reactor
from twisted.logger import LogLevel, globalLogPublisher

from sandstone import Sandstone
from tests.support import Client, ServerTestCase, sleep, wait_until

INVALID_ARGUMENT = "wamp.error.invalid_argument"
ACKNOWLEDGE = PublishOptions(acknowledge=True)
SUBSCRIBERS = ("cbor", "json", "msgpack", "cbor")  # the order of the finding: the first one got it


class PayloadAttackTests(ServerTestCase):
    def setUp(self) -> None:
        self.logged: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.logged.append)
        self.serve(Sandstone(anonymous=True, open_uris=True))

    def tearDown(self) -> None:
        critical = [e for e in self.logged if e.get("log_level") == LogLevel.critical or "log_failure" in e]
        self.assertEqual(critical, [])

    async def subscribers(self) -> list[Client]:
        clients = [await self.connect(serializer) for serializer in SUBSCRIBERS]
        for client in clients:
            await client.record("x.y")
        return clients

    async def all_get(self, clients: list[Client], payloads: list[Any]) -> None:
        """Wait until every subscriber got exactly ``payloads`` on ``x.y`` (and nothing more comes)."""
        await wait_until(lambda: all(len(c.received["x.y"]) >= len(payloads) for c in clients))
        await sleep(0.1)
        self.assertEqual([[r.payload for r in c.received["x.y"]] for c in clients], [payloads] * len(clients))

    async def test_cbor_datetime_publish_is_refused_and_every_subscriber_gets_the_valid_events(self) -> None:
        clients = await self.subscribers()
        publisher = await self.connect("cbor")
        await publisher.publish("x.y", "before", options=ACKNOWLEDGE)
        # The finding's message: [16, request, {"acknowledge": true}, "x.y", [<CBOR datetime tag>]].
        attack = publisher.publish("x.y", datetime.now(UTC), options=ACKNOWLEDGE)
        with self.assertRaises(ApplicationError) as caught:
            await attack.addTimeout(5, reactor)
        self.assertEqual(caught.exception.error, INVALID_ARGUMENT)
        self.assertIn("datetime", caught.exception.args[0])
        # The same without acknowledge, as raw bytes: no answer, dropped.
        raw = cbor2.dumps([16, 4242, {}, "x.y", [datetime.now(UTC)]])
        publisher._transport.sendMessage(raw, isBinary=True)
        await publisher.publish("x.y", "after", options=ACKNOWLEDGE)
        await self.all_get(clients, ["before", "after"])
        self.assertEqual(self.app.router.stats["invalid_payloads"], 2)

    async def test_json_integer_beyond_64_bits_and_infinity_are_refused(self) -> None:
        clients = await self.subscribers()
        publisher = await self.connect("json")
        with self.assertRaises(ApplicationError) as caught:
            await publisher.publish("x.y", 2**70, options=ACKNOWLEDGE).addTimeout(5, reactor)
        self.assertEqual(caught.exception.error, INVALID_ARGUMENT)
        publisher._transport.sendMessage(b'[16, 4242, {}, "x.y", [1e400]]', isBinary=False)
        await publisher.publish("x.y", "valid", options=ACKNOWLEDGE)
        await self.all_get(clients, ["valid"])

    async def test_cbor_callee_yielding_a_datetime_answers_the_json_caller_with_an_error(self) -> None:
        callee = await self.connect("cbor")
        await callee.register(lambda: datetime.now(UTC), "com.example.now")
        await callee.register(lambda: "fine", "com.example.fine")
        caller = await self.connect("json")
        with self.assertRaises(ApplicationError) as caught:
            await caller.call("com.example.now").addTimeout(5, reactor)
        self.assertEqual(caught.exception.error, INVALID_ARGUMENT)
        self.assertIn("the callee's result could not be delivered", caught.exception.args[0])
        self.assertEqual(await caller.call("com.example.fine").addTimeout(5, reactor), "fine")
        self.assertEqual(self.app.router.dealer.calls_in_flight, 0)


class CborSharingTests(ServerTestCase):
    """CBOR value sharing (tags 28/29) lets a frame of a few hundred bytes decode into an exponential
    structure, which the router would then re-serialize for every subscriber: such a frame is refused."""

    def setUp(self) -> None:
        self.logged: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.logged.append)
        self.serve(Sandstone(anonymous=True, open_uris=True))

    async def test_a_frame_using_value_sharing_aborts_the_session_and_others_carry_on(self) -> None:
        subscriber = await self.connect("json")
        await subscriber.record("x.y")
        attacker = await self.connect("cbor")
        # 40 levels, each an array referring twice to the level below: 2**40 leaves once expanded.
        level = cbor2.dumps("leaf")
        for depth in range(40):
            level = bytes.fromhex("d81c82") + level + bytes.fromhex("d81d") + cbor2.dumps(depth)
        publish = cbor2.dumps([16, 7, {}, "x.y"])
        frame = bytes([0x85]) + publish[1:] + bytes([0x81]) + level  # [16, 7, {}, "x.y", [<shared>]]
        self.assertLess(len(frame), 600)
        attacker._transport.sendMessage(frame, isBinary=True)
        await attacker.disconnected  # autobahn-python reports an ABORT after WELCOME as a lost transport
        aborts = [e for e in self.logged if e.get("reason") == "wamp.error.protocol_violation"]
        self.assertEqual(len(aborts), 1)
        self.assertIn("value sharing", aborts[0]["text"])
        server = [e for e in self.logged if "WebSocketClient" not in e.get("log_namespace", "")]
        critical = [e for e in server if e.get("log_level") == LogLevel.critical or "log_failure" in e]
        self.assertEqual(critical, [])  # (the autobahn client logs the ABORT it does not expect)
        publisher = await self.connect("cbor")
        await publisher.publish("x.y", "still here", options=ACKNOWLEDGE)
        await wait_until(lambda: [r.payload for r in subscriber.received["x.y"]] == ["still here"])
