"""Tests for L{sandstone._autobahn_internals}: the private details of autobahn it relies on are still there
and still mean what it assumes, and importing sandstone changes nothing in autobahn."""

from __future__ import annotations

import pprint
from typing import Any

import autobahn.util
import txaio
from autobahn.twisted import websocket as twisted_websocket
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.wamp import message
from autobahn.wamp.interfaces import IObjectSerializer
from autobahn.wamp.serializer import (
    CBORSerializer,
    JsonObjectSerializer,
    JsonSerializer,
    MsgPackSerializer,
    Serializer,
)
from autobahn.websocket import protocol as websocket_protocol
from autobahn.websocket.protocol import Timings
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

import sandstone  # noqa: F401  # what importing it does to autobahn is under test
from sandstone._autobahn_internals import (
    PROTOCOL_OPTIONS,
    object_serializer,
    options_class,
    router_data,
    router_data_if_any,
    send_close,
    websocket_data_received,
)

_HANDSHAKE = (
    b"GET /ws HTTP/1.1\r\n"
    b"Host: 127.0.0.1:8080\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"\r\n"
)


class ImportTests(SynchronousTestCase):
    def test_importing_sandstone_patches_nothing_in_autobahn(self) -> None:
        self.assertIs(websocket_protocol.pformat, pprint.pformat)
        self.assertIs(websocket_protocol.hltype, autobahn.util.hltype)
        self.assertIs(twisted_websocket.hltype, autobahn.util.hltype)

    def test_autobahn_timings_still_print(self) -> None:
        timings = Timings()
        timings.track("onOpen")
        self.assertIn("onOpen", str(timings))


class ObjectSerializerTests(SynchronousTestCase):
    """If one of these fails, an autobahn release changed what ``_autobahn_internals`` relies on: adapt it
    (and only it), then raise autobahn's upper bound in setup.py."""

    def test_it_is_the_one_a_serializer_was_built_with(self) -> None:
        objects = JsonObjectSerializer()
        self.assertIs(object_serializer(Serializer(objects)), objects)

    def test_it_serializes_as_its_wamp_serializer(self) -> None:
        msg = message.Publish(7, "com.example", args=[1, "two", b"\x03"])
        for cls in (JsonSerializer, MsgPackSerializer, CBORSerializer):
            for batched in (False, True):
                serializer = cls(batched=batched)
                with self.subTest(serializer=serializer.SERIALIZER_ID):
                    objects = object_serializer(serializer)
                    self.assertIsInstance(objects, IObjectSerializer)
                    payload, binary = serializer.serialize(msg)
                    self.assertEqual((objects.serialize(msg.marshal()), objects.BINARY), (payload, binary))
                    self.assertEqual(objects.unserialize(payload), [msg.marshal()])


class RouterDataTests(SynchronousTestCase):
    def test_a_message_has_none_until_made(self) -> None:
        msg = message.Publish(7, "com.example")
        self.assertIsNone(router_data_if_any(msg))
        data = router_data(msg)
        self.assertEqual(data, {})
        self.assertIs(router_data(msg), data)
        self.assertIs(router_data_if_any(msg), data)

    def test_a_parsed_message_has_none(self) -> None:
        (msg,) = JsonSerializer().unserialize(b'[16,7,{},"com.example"]', False)
        self.assertIsNone(router_data_if_any(msg))

    def test_it_is_each_message_own_slot_outside_the_wire_format(self) -> None:
        self.assertIn("_router_internal", message.Message.__slots__)
        msg, other = message.Event(1, 2, args=["x"]), message.Event(1, 2, args=["x"])
        router_data(msg)["frames"] = {"any": "thing"}
        self.assertIsNone(router_data_if_any(other))
        self.assertEqual(msg.marshal(), other.marshal())
        self.assertEqual(JsonSerializer().serialize(msg), JsonSerializer().serialize(other))


def _connect(protocol_class: type[WebSocketServerProtocol], **options: Any) -> tuple[Any, list[Any]]:
    """A connection of ``protocol_class`` made by a factory with ``options``, logging debug lines."""
    factory = WebSocketServerFactory()
    factory.setProtocolOptions(openHandshakeTimeout=0, **options)
    factory.protocol = protocol_class
    protocol = factory.buildProtocol(None)
    events: list[Any] = []
    protocol.log = txaio.make_logger("debug", observer=events.append)
    protocol.makeConnection(StringTransport())
    return protocol, events


def _formatted_options(events: list[Any]) -> list[str]:
    return [event["attrs"] for event in events if "attrs" in event]


class OptionsClassTests(SynchronousTestCase):
    def test_the_option_names_are_the_factory_attributes(self) -> None:
        factory = WebSocketServerFactory()
        self.assertGreater(len(PROTOCOL_OPTIONS), 20)
        for name in ("maxFramePayloadSize", "autoPingInterval", "perMessageCompressionAccept"):
            self.assertIn(name, PROTOCOL_OPTIONS)
        for name in PROTOCOL_OPTIONS:
            self.assertTrue(hasattr(factory, name), name)

    def test_autobahn_copies_and_formats_the_options_of_a_plain_connection(self) -> None:
        """What ``options_class`` avoids: without it, connecting copies every option and formats them all."""
        protocol, events = _connect(WebSocketServerProtocol, maxFramePayloadSize=4096)
        self.assertEqual(set(PROTOCOL_OPTIONS) - set(vars(protocol)), set())
        [formatted] = _formatted_options(events)
        self.assertIn("maxFramePayloadSize", formatted)

    def test_a_connection_of_an_options_class_copies_and_formats_none(self) -> None:
        factory = WebSocketServerFactory()
        factory.setProtocolOptions(maxFramePayloadSize=4096, autoPingInterval=7.5, openHandshakeTimeout=0)
        options = {name: getattr(factory, name) for name in PROTOCOL_OPTIONS}
        cls = options_class(WebSocketServerProtocol, options)
        self.assertTrue(issubclass(cls, WebSocketServerProtocol))
        protocol, events = _connect(cls, maxFramePayloadSize=1)  # the class's options win
        self.assertEqual(set(PROTOCOL_OPTIONS) & set(vars(protocol)), set())
        self.assertEqual((protocol.maxFramePayloadSize, protocol.autoPingInterval), (4096, 7.5))
        self.assertEqual(_formatted_options(events), [pprint.pformat([])])


class DataReceivedTests(SynchronousTestCase):
    def test_twisted_data_received_only_logs_then_hands_over(self) -> None:
        """autobahn's Twisted ``dataReceived`` does nothing but its debug line before ``_dataReceived``."""
        code = twisted_websocket.WebSocketAdapterProtocol.dataReceived.__code__
        self.assertEqual(
            set(code.co_names),
            {"log", "debug", "hltype", "dataReceived", "hlval", "peer", "len", "_dataReceived"},
        )
        self.assertIs(websocket_data_received, websocket_protocol.WebSocketProtocol._dataReceived)

    def test_it_takes_a_connection_through_the_handshake(self) -> None:
        class Quiet(WebSocketServerProtocol):
            dataReceived = websocket_data_received

        protocol, events = _connect(Quiet)
        protocol.dataReceived(_HANDSHAKE)
        self.assertTrue(protocol.transport.value().startswith(b"HTTP/1.1 101 Switching Protocols\r\n"))
        self.assertEqual(protocol.state, protocol.STATE_OPEN)
        received = [e for e in events if "dataReceived" in str(e.get("func"))]  # the line dataReceived logs
        self.assertEqual(received, [])


class SendCloseTests(SynchronousTestCase):
    def open(self) -> Any:
        class Quiet(WebSocketServerProtocol):
            dataReceived = websocket_data_received

        protocol, _events = _connect(Quiet, closeHandshakeTimeout=0)  # no timer on the global reactor
        protocol.dataReceived(_HANDSHAKE)
        protocol.transport.clear()
        return protocol

    def test_send_close_is_needed_for_going_away(self) -> None:
        """autobahn's public ``sendClose`` refuses 1001 (what ``send_close`` exists for)."""
        protocol = self.open()
        try:
            protocol.sendClose(1001, "going away")
        except Exception as refused:  # autobahn raises a plain Exception
            self.assertIn("invalid close code 1001", str(refused))
        else:
            self.fail("sendClose sent 1001: send_close may use it")
        self.assertEqual(protocol.transport.value(), b"")

    def test_send_close_sends_a_close_frame_with_the_code_and_reason(self) -> None:
        protocol = self.open()
        send_close(protocol, 1001, "server shutting down")
        self.assertEqual(protocol.transport.value(), b"\x88\x16\x03\xe9server shutting down")
        self.assertEqual(protocol.state, protocol.STATE_CLOSING)
        send_close(protocol, 1001, "again")  # closing already: nothing more
        self.assertEqual(len(protocol.transport.value()), 24)
