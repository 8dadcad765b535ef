"""Tests for L{sandstone._twisted_internals}: the private details of Twisted it relies on are still there
(TCP's checked on a real connection over loopback), and what ``send_now`` and ``skip_form_parsing`` do with
them."""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import reactor, tcp
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web import http

from sandstone._twisted_internals import TCPServer, buffered_bytes, send_now, skip_form_parsing


class _Accepted(Protocol):
    def __init__(self, made: Deferred[Any], lost: Deferred[None]) -> None:
        self.made = made
        self.lost = lost

    def connectionMade(self) -> None:
        self.made.callback(self.transport)

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback(None)


class _AcceptOnce(Factory):
    def __init__(self) -> None:
        self.made: Deferred[Any] = Deferred()
        self.lost: Deferred[None] = Deferred()

    def buildProtocol(self, addr: Any) -> Protocol:
        return _Accepted(self.made, self.lost)


def _turn() -> Deferred[None]:
    return deferLater(reactor, 0, lambda: None)


def _peek(client: socket.socket) -> bytes:
    """What the kernel already holds for the client, without waiting."""
    try:
        return client.recv(1 << 20, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return b""


class TwistedTCPTestCase(TestCase):
    async def connected(self) -> tuple[Any, socket.socket]:
        """A real accepted ``tcp.Server`` and the plain socket connected to it."""
        factory = _AcceptOnce()
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        client = socket.create_connection(("127.0.0.1", port.getHost().port))
        self.addCleanup(client.close)
        transport = await factory.made

        def close() -> Deferred[None]:
            transport.abortConnection()
            return factory.lost

        self.addCleanup(close)
        return transport, client

    async def receive(self, client: socket.socket, size: int, timeout: float = 5.0) -> bytes:
        """Read ``size`` bytes from the client while the reactor runs."""
        received = b""
        deadline = reactor.seconds() + timeout
        while len(received) < size and reactor.seconds() < deadline:
            try:
                received += client.recv(1 << 20, socket.MSG_DONTWAIT)
            except BlockingIOError:
                await deferLater(reactor, 0.001, lambda: None)
        return received


class TCPServerDetailsTests(TwistedTCPTestCase):
    """If one of these fails, a Twisted release changed what ``_twisted_internals`` relies on: adapt it (and
    only it), then raise Twisted's upper bound in setup.py."""

    async def test_an_accepted_connection_is_a_tcp_server(self) -> None:
        transport, _ = await self.connected()
        self.assertIs(TCPServer, tcp.Server)
        self.assertIs(type(transport), TCPServer)

    async def test_a_tcp_server_has_the_fields_send_now_reads(self) -> None:
        transport, _ = await self.connected()
        self.assertIsInstance(transport.dataBuffer, bytes)
        self.assertIsInstance(transport._tempDataLen, int)
        self.assertIsInstance(transport.offset, int)
        self.assertTrue(transport.connected)
        self.assertFalse(transport.disconnecting)
        transport.loseConnection()
        self.assertTrue(transport.disconnecting)

    async def test_write_some_data_sends_now_and_says_how_much(self) -> None:
        transport, client = await self.connected()
        self.assertEqual(transport.writeSomeData(b"frame"), 5)
        self.assertEqual(_peek(client), b"frame")

    async def test_written_bytes_wait_in_the_fields_until_the_next_poll(self) -> None:
        transport, client = await self.connected()
        transport.write(b"earlier")
        self.assertEqual(len(transport.dataBuffer) - transport.offset + transport._tempDataLen, 7)
        self.assertEqual(buffered_bytes(transport), 7)
        self.assertEqual(_peek(client), b"")
        await _turn()
        self.assertEqual(await self.receive(client, 7), b"earlier")
        self.assertEqual(buffered_bytes(transport), 0)


class SendNowTests(TwistedTCPTestCase):
    async def test_the_kernel_gets_it_at_once(self) -> None:
        transport, client = await self.connected()
        send_now(transport, b"frame")
        self.assertEqual(_peek(client), b"frame")
        self.assertEqual(buffered_bytes(transport), 0)

    async def test_what_the_kernel_does_not_take_goes_to_the_transport(self) -> None:
        transport, client = await self.connected()
        transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        data = bytes(range(256)) * 16384  # 4 MiB, more than the socket takes at once
        send_now(transport, data)
        self.assertGreater(buffered_bytes(transport), 0)
        self.assertEqual(await self.receive(client, len(data)), data)

    async def test_bytes_already_buffered_keep_their_place(self) -> None:
        transport, client = await self.connected()
        transport.write(b"earlier")
        send_now(transport, b"frame")
        self.assertEqual(_peek(client), b"")
        self.assertEqual(await self.receive(client, 12), b"earlierframe")

    async def test_a_closing_connection_is_left_to_the_transport(self) -> None:
        transport, client = await self.connected()
        transport.loseConnection()
        send_now(transport, b"frame")
        self.assertEqual(_peek(client), b"")
        self.assertEqual(await self.receive(client, 5), b"frame")

    async def test_a_connection_reset_by_the_peer_raises_nothing(self) -> None:
        transport, client = await self.connected()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        client.close()  # a reset
        send_now(transport, b"frame")
        send_now(transport, b"frame")

    def test_another_transport_is_written_to(self) -> None:
        transport = StringTransport()
        send_now(transport, b"frame")
        self.assertEqual(transport.value(), b"frame")


_FORM_POST = (
    b"POST /submit?q=1 HTTP/1.1\r\nHost: example.com\r\n"
    b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 7\r\n\r\nname=ab"
)


def _args_seen(skip: bool) -> dict[bytes, list[bytes]]:
    """``request.args`` of a form POST served by twisted.web's HTTP channel, with ``skip_form_parsing``
    called (as sandstone's request does) or not."""
    seen: list[dict[bytes, list[bytes]]] = []

    class Recording(http.Request):
        def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
            if skip:
                skip_form_parsing(self)
            super().requestReceived(command, path, version)

        def process(self) -> None:
            seen.append(self.args)
            self.finish()

    channel = http.HTTPChannel()
    channel.requestFactory = Recording  # type: ignore[assignment]
    channel.makeConnection(StringTransport())
    channel.dataReceived(_FORM_POST)
    [args] = seen
    return args


class RequestFormParsingTests(SynchronousTestCase):
    """If one of these fails, a Twisted release changed what ``skip_form_parsing`` relies on: adapt it (and
    only it), then raise Twisted's upper bound in setup.py."""

    def test_the_field_is_what_the_constructor_argument_sets(self) -> None:
        channel = http.HTTPChannel()
        channel.makeConnection(StringTransport())
        self.assertIs(http.Request(channel)._parsePOSTFormSubmission, True)
        self.assertIs(http.Request(channel, parsePOSTFormSubmission=False)._parsePOSTFormSubmission, False)

    def test_a_form_post_fills_the_args(self) -> None:
        self.assertEqual(_args_seen(skip=False), {b"q": [b"1"], b"name": [b"ab"]})

    def test_skipped_form_parsing_leaves_the_body_alone(self) -> None:
        self.assertEqual(_args_seen(skip=True), {b"q": [b"1"]})
