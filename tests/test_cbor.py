"""Unit tests for the CBOR serializer: value sharing is refused when decoding; the rest is autobahn's."""

from __future__ import annotations

import struct

import cbor2
from autobahn.wamp import message
from autobahn.wamp.serializer import CBORSerializer
from twisted.trial.unittest import SynchronousTestCase

from sandstone._autobahn_internals import object_serializer
from sandstone._cbor import cbor_serializer
from sandstone._codec import DecodeError, decode

SHARED = bytes.fromhex("82d81c63616263d81d00")  # ["abc", <reference to "abc">]


class CborSerializerTests(SynchronousTestCase):
    def test_messages_decode_as_with_autobahn(self) -> None:
        raw = cbor2.dumps([16, 1, {"acknowledge": True}, "x.y", [b"\x00\x01", 2**63, {"a": [1.5, None]}]])
        for batched in (False, True):
            ours, theirs = cbor_serializer(batched), CBORSerializer(batched=batched)
            frame = struct.pack("!L", len(raw)) + raw if batched else raw
            self.assertEqual(
                object_serializer(ours).unserialize(frame), object_serializer(theirs).unserialize(frame)
            )
            [msg] = decode(ours, frame * (2 if batched else 1), True)[:1]
            self.assertIsInstance(msg, message.Publish)
            self.assertEqual(msg.args, [b"\x00\x01", 2**63, {"a": [1.5, None]}])

    def test_encoding_is_autobahns(self) -> None:
        msg = message.Event(1, 2, args=["x", b"\x01"])
        self.assertEqual(cbor_serializer().serialize(msg)[0], CBORSerializer().serialize(msg)[0])

    def test_value_sharing_does_not_decode(self) -> None:
        self.assertEqual(cbor2.loads(SHARED), ["abc", "abc"])  # what plain cbor2 (and autobahn) would do
        publish = bytes([0x85]) + cbor2.dumps([16, 1, {}, "x.y"])[1:] + SHARED
        for batched in (False, True):
            frame = struct.pack("!L", len(publish)) + publish if batched else publish
            error = self.assertRaises(DecodeError, decode, cbor_serializer(batched), frame, True)
            self.assertIn("value sharing", str(error))

    def test_truncated_batches_do_not_decode(self) -> None:
        for frame in (b"\x00\x00", struct.pack("!L", 10) + b"\x80"):
            self.assertRaises(DecodeError, decode, cbor_serializer(True), frame, True)
