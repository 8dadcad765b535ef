"""Tests for L{sandstone._json}: the fast JSON serializer gives exactly what autobahn's gives."""

from __future__ import annotations

import math
from typing import Any

from autobahn.wamp.serializer import JsonObjectSerializer
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from sandstone._codec import DecodeError, decode
from sandstone._json import FastJsonObjectSerializer, json_serializer

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
    | st.binary(max_size=40)
    | st.text().map(lambda s: "\x00" + s)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=20,
)


def outcome(f: Any, *args: Any) -> tuple[str, Any]:
    """What a call gives: its value, or the type of what it raised."""
    try:
        return ("value", f(*args))
    except Exception as exc:
        return ("raised", type(exc).__name__)


class SameAsAutobahnTests(SynchronousTestCase):
    @settings(max_examples=300, deadline=None)
    @given(st.lists(values, min_size=1, max_size=6), st.booleans())
    def test_same_bytes_and_same_values(self, message: list[Any], batched: bool) -> None:
        """Same bytes out, same values (or the same error) back, for anything JSON and bytes."""
        ours = FastJsonObjectSerializer(batched=batched)
        theirs = JsonObjectSerializer(batched=batched)
        data = outcome(ours.serialize, message)
        self.assertEqual(data, outcome(theirs.serialize, message))
        if data[0] == "value":
            frame = data[1] * 3 if batched else data[1]
            self.assertEqual(outcome(ours.unserialize, frame), outcome(theirs.unserialize, frame))

    def test_bytes_travel_as_nul_prefixed_base64(self) -> None:
        ours = FastJsonObjectSerializer()
        data = ours.serialize([1, b"\x00\xff", {"k": [b"x"]}])
        self.assertEqual(data, b'[1,"\\u0000AP8=",{"k":["\\u0000eA=="]}]')
        self.assertEqual(ours.unserialize(data), [[1, b"\x00\xff", {"k": [b"x"]}]])

    def test_an_escaped_backslash_before_u0000_is_text(self) -> None:
        payload = b'["\\\\u0000AP8="]'  # the text \u0000AP8= (backslash escaped), not bytes
        self.assertEqual(FastJsonObjectSerializer().unserialize(payload), [["\\u0000AP8="]])
        self.assertEqual(
            FastJsonObjectSerializer().unserialize(payload), JsonObjectSerializer().unserialize(payload)
        )

    def test_nan_and_infinity_are_read_as_autobahn_reads_them(self) -> None:
        payload = b"[NaN,Infinity,-Infinity]"
        ours = FastJsonObjectSerializer().unserialize(payload)[0]
        theirs = JsonObjectSerializer().unserialize(payload)[0]
        self.assertTrue(math.isnan(ours[0]) and math.isnan(theirs[0]))
        self.assertEqual(ours[1:], theirs[1:])

    def test_bad_input_fails_like_autobahn(self) -> None:
        for payload in (b"[1,", b"\xff\xfe[1]", b'["\x01"]', b"[1] x"):
            with self.subTest(payload=payload):
                self.assertRaises(ValueError, JsonObjectSerializer().unserialize, payload)
                self.assertRaises(ValueError, FastJsonObjectSerializer().unserialize, payload)

    def test_batched_frame_without_a_separator_fails(self) -> None:
        self.assertRaises(ValueError, FastJsonObjectSerializer(batched=True).unserialize, b"[1]")

    def test_unserializable_values_raise_type_error(self) -> None:
        self.assertRaises(TypeError, FastJsonObjectSerializer().serialize, [object()])


class SerializerTests(SynchronousTestCase):
    def test_subprotocol_ids(self) -> None:
        self.assertEqual(json_serializer().SERIALIZER_ID, "json")
        self.assertEqual(json_serializer(batched=True).SERIALIZER_ID, "json.batched")

    def test_decode_parses_wamp_messages_through_it(self) -> None:
        serializer = json_serializer()
        (msg,) = decode(serializer, b'[16,7,{},"com.example",[1,"\\u0000AA=="]]', False)
        self.assertEqual((msg.request, msg.topic, msg.args), (7, "com.example", [1, b"\x00"]))
        self.assertRaises(DecodeError, decode, serializer, b"[16,", False)
