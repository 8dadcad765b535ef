"""End-to-end protocol errors over real TCP: a raw WebSocket peer speaking ``wamp.2.json`` breaks the protocol
in each way the spec lists and gets ``ABORT wamp.error.protocol_violation`` and a closed connection, while a
well-behaved autobahn session on the same server carries on."""

from __future__ import annotations

import json
from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from autobahn.wamp.types import PublishOptions
from twisted.internet import defer, reactor

from sandstone import Sandstone, Topic
from tests.support import ServerTestCase, wait_until

HELLO = [1, "realm1", {"roles": {"subscriber": {}, "publisher": {}}}]


class RawPeer(WebSocketClientProtocol):
    """Sends frames as given and keeps every WAMP message it receives, and how the connection ended."""

    def __init__(self) -> None:
        super().__init__()
        self.opened: defer.Deferred[RawPeer] = defer.Deferred()
        self.closed: defer.Deferred[tuple[bool, int | None]] = defer.Deferred()
        self.messages: list[Any] = []

    def onOpen(self) -> None:
        self.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.messages.append(json.loads(payload))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if not self.opened.called:
            self.opened.errback(RuntimeError(f"handshake failed: {reason}"))
        if not self.closed.called:
            self.closed.callback((wasClean, code))

    def send_json(self, value: Any) -> None:
        self.sendMessage(json.dumps(value).encode())


class RawPeerTestCase(ServerTestCase):
    """Serves an open app with one declared topic; ``peer()`` opens a raw ``wamp.2.json`` WebSocket."""

    def setUp(self) -> None:
        app = Sandstone(anonymous=True, open_uris=True)

        @app.topic("news")
        class News(Topic):
            pass

        self.serve(app)

    async def peer(self) -> RawPeer:
        factory = WebSocketClientFactory(f"ws://127.0.0.1:{self.port}/ws", protocols=["wamp.2.json"])
        factory.protocol = RawPeer
        holder: list[RawPeer] = []

        def build(addr: Any) -> RawPeer:
            protocol = WebSocketClientFactory.buildProtocol(factory, addr)
            holder.append(protocol)
            return protocol

        factory.buildProtocol = build  # type: ignore[method-assign]
        connector = reactor.connectTCP("127.0.0.1", self.port, factory)
        await wait_until(lambda: holder)
        peer = holder[0]

        def close() -> defer.Deferred[Any]:
            connector.disconnect()
            return peer.closed

        self.addCleanup(close)
        await peer.opened
        return peer

    async def joined_peer(self) -> RawPeer:
        peer = await self.peer()
        peer.send_json(HELLO)
        await wait_until(lambda: peer.messages)
        self.assertEqual(peer.messages[0][0], 2)  # WELCOME
        return peer


class ProtocolErrorTests(RawPeerTestCase):
    async def assert_aborted(self, peer: RawPeer) -> None:
        await peer.closed
        aborts = [m for m in peer.messages if m[0] == 3]
        self.assertEqual(len(aborts), 1, peer.messages)
        self.assertEqual(aborts[0][2], "wamp.error.protocol_violation")

    async def check(self, frames: list[Any], *, join: bool = True, binary: bool = False) -> None:
        bystander = await self.connect()
        await bystander.record("news")
        peer = await (self.joined_peer() if join else self.peer())
        if join:
            peer.send_json([32, 1, {}, "news"])  # a subscription that must vanish with the session
            await wait_until(lambda: len(peer.messages) == 2)
        for frame in frames:
            if isinstance(frame, bytes):
                peer.sendMessage(frame, isBinary=binary)
            else:
                peer.send_json(frame)
        await self.assert_aborted(peer)
        self.assertEqual(list(self.app.router.sessions), [bystander._session_id])
        self.assertEqual(len(self.app.router.broker.subscriptions), 1)  # the bystander's only
        writer = await self.connect()  # the server carries on for everyone else
        await writer.publish("news", "still here", options=PublishOptions(acknowledge=True))
        await wait_until(lambda: bystander.received["news"])

    async def test_unknown_message_type(self) -> None:
        await self.check([[999, 1, {}]])

    async def test_empty_list(self) -> None:
        await self.check([[]])

    async def test_object_instead_of_list(self) -> None:
        await self.check([{}])

    async def test_frame_that_does_not_deserialize(self) -> None:
        await self.check([b"[32, 1, {}, "])

    async def test_string_where_an_int_is_required(self) -> None:
        await self.check([[32, "1", {}, "news"]])

    async def test_unknown_match_policy(self) -> None:
        await self.check([[32, 2, {"match": "regex"}, "news"]])

    async def test_second_hello(self) -> None:
        await self.check([HELLO])

    async def test_message_before_hello(self) -> None:
        await self.check([[32, 1, {}, "news"]], join=False)

    async def test_binary_frame_on_json(self) -> None:
        await self.check([b"\x93\x20\x01\x80"], binary=True)

    async def test_request_id_zero(self) -> None:
        await self.check([[32, 0, {}, "news"]])

    async def test_request_id_above_2_53(self) -> None:
        await self.check([[32, 2**53 + 1, {}, "news"]])

    async def test_hello_without_roles(self) -> None:
        await self.check([[1, "realm1", {}]], join=False)

    async def test_unknown_realm_is_no_such_realm(self) -> None:
        peer = await self.peer()
        peer.send_json([1, "elsewhere", HELLO[2]])
        await peer.closed
        self.assertEqual([m[2] for m in peer.messages if m[0] == 3], ["wamp.error.no_such_realm"])


class InvalidUriTests(RawPeerTestCase):
    async def test_invalid_uris_get_error_echoing_the_request_id_and_the_session_stays(self) -> None:
        peer = await self.joined_peer()
        requests = [
            [32, 11, {}, "bad uri"],  # whitespace
            [32, 12, {}, "a..b"],  # empty part in an exact URI
            [32, 13, {"match": "prefix"}, "a..b."],  # prefix allows only the last part empty
            [16, 14, {"acknowledge": True}, "x#y"],
            [64, 15, {}, "com..proc"],
            [48, 16, {}, ".leading"],
        ]
        for request in requests:
            peer.send_json(request)
        await wait_until(lambda: len(peer.messages) == 1 + len(requests))
        errors = peer.messages[1:]
        self.assertEqual(
            [(e[0], e[1], e[2], e[4]) for e in errors],
            [(8, r[0], r[1], "wamp.error.invalid_uri") for r in requests],
        )
        peer.send_json([32, 17, {"match": "wildcard"}, "a..b"])  # wildcard allows empty parts
        await wait_until(lambda: len(peer.messages) == 8)
        self.assertEqual(peer.messages[-1][:2], [33, 17])
        self.assertFalse(peer.closed.called)
