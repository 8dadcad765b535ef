"""Tests for L{sandstone._envelope}."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Optional

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from sandstone._envelope import (
    MAX_ID,
    NODE,
    PEERS,
    PUBLIC_DELIVERIES,
    PUBLIC_EVENTS,
    VERSION,
    DeliveryMessage,
    EnvelopeError,
    EventCodec,
    EventMessage,
    MessageRejected,
    NodeMessage,
    ProcedureEntry,
    Signer,
    channel_names,
    decode,
    decode_entry,
    encode_delivery,
    encode_entry,
    encode_event,
    encode_node,
    event_data,
    parse_procedure_field,
    procedure_field,
)
from sandstone._publication import Publication

# Event types live at module level: decoding resolves their type hints through the module's globals.


@dataclass
class Author:
    name: str


@dataclass
class Article:
    title: str
    author: Author
    coauthors: list[Author] = field(default_factory=list)
    reviewers: tuple[Author, ...] = ()
    editor: Author | None = None
    translator: Optional[Author] = None  # noqa: UP045 - the typing.Optional spelling is decoded too
    by_language: dict[str, Author] = field(default_factory=dict)
    extra: Any = None


@dataclass
class Comment:
    text: str
    replies: list[Comment] = field(default_factory=list)


@dataclass
class Counted:
    words: list[str]
    count: int = field(init=False)

    def __post_init__(self) -> None:
        self.count = len(self.words)


@dataclass
class Positive:
    value: int

    def __post_init__(self) -> None:
        if self.value <= 0:
            raise ValueError("value must be positive")


@dataclass
class Either:
    what: Author | Comment


@dataclass
class Scalars:
    numbers: list[int]
    pair: tuple[int, ...]
    maybe: int | None = None


@dataclass
class Dangling:
    other: NotDefinedAnywhere  # type: ignore[name-defined]  # noqa: F821


def _article() -> Article:
    return Article(
        "Unicorns",
        Author("ann"),
        coauthors=[Author("bob"), Author("cy")],
        reviewers=(Author("dee"),),
        editor=Author("eve"),
        translator=None,
        by_language={"fr": Author("fay")},
        extra={"any": [1, "thing"]},
    )


def _codec(**types: type) -> EventCodec:
    codec = EventCodec()
    for name, event_type in types.items():
        codec.allow(name, event_type)
    return codec


def _raw(**message: Any) -> bytes:
    return json.dumps(message).encode("utf-8")


def _delivery(**fields: Any) -> dict[str, Any]:
    message: dict[str, Any] = {"v": 1, "type": "delivery", "origin": "node-a", "topic": "chat/general"}
    message["publication"] = 42
    message.update(fields)
    return {key: value for key, value in message.items() if value is not _DROP}


_DROP = object()
_PUBLICATION_HAS_KEY = "key" in {f.name for f in dataclasses.fields(Publication)}


def _assertSamePublication(
    case: SynchronousTestCase, got: Publication, expected: Publication, ignore: tuple[str, ...] = ()
) -> None:
    for f in dataclasses.fields(Publication):
        if f.name not in ignore:
            case.assertEqual(getattr(got, f.name), getattr(expected, f.name), f"field {f.name}")


class ChannelTests(SynchronousTestCase):
    """L{channel_names} names the channels and keys of a realm."""

    def test_names(self) -> None:
        """Every channel and key is C{prefix:realm:...}."""
        channels = channel_names("sandstone", "realm1")
        self.assertEqual(channels.base, "sandstone:realm1")
        self.assertEqual(channels.events, "sandstone:realm1:events")
        self.assertEqual(channels.deliveries, "sandstone:realm1:deliveries")
        self.assertEqual(channels.peers, "sandstone:realm1:peers")
        self.assertEqual(channels.procedures, "sandstone:realm1:procedures")
        self.assertEqual(channels.node("n1"), "sandstone:realm1:node:n1")
        self.assertEqual(channels.heartbeat("n1"), "sandstone:realm1:nodes:n1")
        self.assertEqual(channels.heartbeat_prefix, "sandstone:realm1:nodes:")
        self.assertEqual(channels.state, "sandstone:realm1:state")
        self.assertEqual(channels.sessions("n1"), "sandstone:realm1:sessions:n1")
        self.assertEqual(channels.subscriptions("n1"), "sandstone:realm1:subscriptions:n1")
        self.assertEqual(channels.subscribers("n1", 42), "sandstone:realm1:subscribers:n1:42")

    def test_clusterNameAndDatabase(self) -> None:
        """The cluster name, then C{db<N>} for a database other than 0, come between prefix and realm."""
        cases = {
            (None, 0): "sandstone:realm1",
            (None, 3): "sandstone:db3:realm1",
            ("blog", 0): "sandstone:blog:realm1",
            ("blog", 3): "sandstone:blog:db3:realm1",
        }
        for (name, db), base in cases.items():
            channels = channel_names("sandstone", "realm1", cluster_name=name, db=db)
            self.assertEqual(channels.events, f"{base}:events")
            self.assertEqual(channels.peers, f"{base}:peers")
            self.assertEqual(channels.node("n1"), f"{base}:node:n1")
            self.assertEqual(channels.heartbeat("n1"), f"{base}:nodes:n1")

    def test_badClusterNameOrDatabase(self) -> None:
        """A cluster name follows the realm's rules; the database is a number from 0."""
        for name in ("", "a:b", "a b", "a?"):
            self.assertRaises(ValueError, channel_names, "sandstone", "realm1", cluster_name=name)
        self.assertRaises(TypeError, channel_names, "sandstone", "realm1", cluster_name=1)
        for db in (-1, True, "1"):
            self.assertRaises(ValueError, channel_names, "sandstone", "realm1", db=db)

    def test_frozen(self) -> None:
        """The names cannot be changed."""
        channels = channel_names("sandstone", "realm1")
        self.assertRaises(dataclasses.FrozenInstanceError, setattr, channels, "events", "x")

    def test_prefixMayHoldColons(self) -> None:
        """A prefix may be namespaced with colons."""
        self.assertEqual(channel_names("app:prod", "realm1").events, "app:prod:realm1:events")

    def test_realmWithColonRejected(self) -> None:
        """A colon in the realm would make the names ambiguous."""
        self.assertRaises(ValueError, channel_names, "sandstone", "a:b")

    def test_emptyRejected(self) -> None:
        """An empty prefix or realm is refused."""
        self.assertRaises(ValueError, channel_names, "", "realm1")
        self.assertRaises(ValueError, channel_names, "sandstone", "")

    def test_globAndWhitespaceRejected(self) -> None:
        """Redis glob characters and whitespace are refused, with the culprit in the message."""
        error = self.assertRaises(ValueError, channel_names, "sand*", "realm1")
        self.assertIn("'*'", str(error))
        self.assertRaises(ValueError, channel_names, "sandstone", "realm 1")

    def test_nonStringRejected(self) -> None:
        """A prefix or realm that is not a str is a TypeError."""
        self.assertRaises(TypeError, channel_names, "sandstone", 1)

    def test_badNodeIdRejected(self) -> None:
        """Node ids follow the realm's rules."""
        channels = channel_names("sandstone", "realm1")
        self.assertRaises(ValueError, channels.node, "a:b")
        self.assertRaises(ValueError, channels.heartbeat, "")


class EventCodecAllowTests(SynchronousTestCase):
    """L{EventCodec.allow} keeps the allow-list of forwarded events."""

    def test_dictByDefault(self) -> None:
        """Allowing a name without a type forwards it as a dict."""
        codec = _codec()
        codec.allow("article.created")
        self.assertTrue(codec.is_forwarded("article.created"))
        self.assertEqual(codec.encode("article.created", {"a": 1}), {"a": 1})

    def test_notForwarded(self) -> None:
        """A name that was not allowed is not forwarded."""
        self.assertFalse(_codec(a=dict).is_forwarded("b"))

    def test_names(self) -> None:
        """C{names} is the frozen set of allowed names."""
        self.assertEqual(_codec(a=dict, b=Article).names(), frozenset({"a", "b"}))

    def test_nonDataclassTypeRejected(self) -> None:
        """Only dict and dataclass types can be forwarded."""
        self.assertRaises(TypeError, EventCodec().allow, "a", list)

    def test_dataclassInstanceRejected(self) -> None:
        """A dataclass instance is not a type."""
        self.assertRaises(TypeError, EventCodec().allow, "a", Author("ann"))

    def test_emptyNameRejected(self) -> None:
        """An event name is a non-empty str."""
        self.assertRaises(ValueError, EventCodec().allow, "", dict)
        self.assertRaises(TypeError, EventCodec().allow, 1, dict)

    def test_sameTypeAgain(self) -> None:
        """Allowing a name again with the same type changes nothing."""
        codec = _codec(a=Article)
        codec.allow("a", Article)
        self.assertEqual(codec.names(), frozenset({"a"}))

    def test_otherTypeRejected(self) -> None:
        """A name cannot be allowed with two different types."""
        codec = _codec(a=Article)
        error = self.assertRaises(ValueError, codec.allow, "a", dict)
        self.assertIn("Article", str(error))

    def test_unresolvableHintsRejected(self) -> None:
        """Type hints that cannot be resolved are reported when the event is allowed."""
        codec = EventCodec()
        error = self.assertRaises(TypeError, codec.allow, "a", Dangling)
        self.assertIn("module level", str(error))
        self.assertFalse(codec.is_forwarded("a"))

    def test_unionOfDataclassesRejected(self) -> None:
        """A field typed as a union of several dataclasses cannot be decoded, so it is refused."""
        error = self.assertRaises(TypeError, EventCodec().allow, "a", Either)
        self.assertIn("Either.what", str(error))


class EventCodecEncodeTests(SynchronousTestCase):
    """L{EventCodec.encode} turns a forwarded event into JSON-able data."""

    def test_dict(self) -> None:
        """A dict event is its own data."""
        self.assertEqual(_codec(a=dict).encode("a", {"title": "t", "n": [1, 2]}), {"title": "t", "n": [1, 2]})

    def test_dataclass(self) -> None:
        """A dataclass event becomes its fields, nested dataclasses and tuples included."""
        data = _codec(a=Article).encode("a", _article())
        self.assertEqual(data["author"], {"name": "ann"})
        self.assertEqual(data["coauthors"], [{"name": "bob"}, {"name": "cy"}])
        self.assertEqual(data["reviewers"], [{"name": "dee"}])
        self.assertEqual(data["by_language"], {"fr": {"name": "fay"}})
        self.assertIsNone(data["translator"])

    def test_wrongType(self) -> None:
        """An event that is not an instance of the allowed type is a TypeError."""
        error = self.assertRaises(TypeError, _codec(a=Article).encode, "a", {"title": "t"})
        self.assertIn("Article", str(error))

    def test_dataclassForDictName(self) -> None:
        """A dict-typed event must be a dict."""
        self.assertRaises(TypeError, _codec(a=dict).encode, "a", Author("ann"))

    def test_notJsonEncodable(self) -> None:
        """A value JSON cannot represent is a TypeError."""
        self.assertRaises(TypeError, _codec(a=dict).encode, "a", {"tags": {"x", "y"}})

    def test_nanRejected(self) -> None:
        """NaN is not JSON."""
        self.assertRaises(TypeError, _codec(a=dict).encode, "a", {"x": float("nan")})

    def test_nonStringKeyRejected(self) -> None:
        """Non-str keys would silently become strings in JSON, so they are refused."""
        error = self.assertRaises(TypeError, _codec(a=dict).encode, "a", {"n": {1: "one"}})
        self.assertIn("1", str(error))

    def test_selfContaining(self) -> None:
        """An event that contains itself is a TypeError, not a RecursionError."""
        event: dict[str, Any] = {}
        event["self"] = event
        self.assertRaises(TypeError, _codec(a=dict).encode, "a", event)

    def test_unknownName(self) -> None:
        """Encoding an event that is not forwarded is an EnvelopeError."""
        self.assertRaises(EnvelopeError, _codec().encode, "a", {})


class EventCodecDecodeTests(SynchronousTestCase):
    """L{EventCodec.decode} rebuilds a forwarded event from its data."""

    def test_dict(self) -> None:
        """A dict event is its data."""
        self.assertEqual(_codec(a=dict).decode("a", {"title": "t"}), {"title": "t"})

    def test_dictNeedsObject(self) -> None:
        """The data of a dict event must be a JSON object."""
        self.assertRaises(EnvelopeError, _codec(a=dict).decode, "a", [1])

    def test_unknownName(self) -> None:
        """Data for an event that is not forwarded is an EnvelopeError naming it."""
        error = self.assertRaises(EnvelopeError, _codec(a=dict).decode, "b", {})
        self.assertIn("'b'", str(error))

    def test_roundTrip(self) -> None:
        """Encoding, sending and decoding gives back an equal event, nested dataclasses rebuilt."""
        codec = _codec(a=Article)
        message = decode(encode_event("n1", "e1", "a", codec.encode("a", _article())))
        self.assertEqual(codec.decode("a", message.data), _article())

    def test_nestedTypes(self) -> None:
        """Fields typed as a dataclass, list[DC], tuple[DC, ...], DC | None, dict[str, DC] are rebuilt."""
        event = _codec(a=Article).decode(
            "a",
            {
                "title": "t",
                "author": {"name": "ann"},
                "coauthors": [{"name": "bob"}],
                "reviewers": [{"name": "dee"}],
                "editor": {"name": "eve"},
                "translator": {"name": "tom"},
                "by_language": {"fr": {"name": "fay"}},
            },
        )
        self.assertEqual(event.author, Author("ann"))
        self.assertEqual(event.coauthors, [Author("bob")])
        self.assertEqual(event.reviewers, (Author("dee"),))
        self.assertEqual(event.editor, Author("eve"))
        self.assertEqual(event.translator, Author("tom"))
        self.assertEqual(event.by_language, {"fr": Author("fay")})

    def test_optionalNone(self) -> None:
        """A null for a C{DC | None} field stays None."""
        event = _codec(a=Article).decode("a", {"title": "t", "author": {"name": "a"}, "editor": None})
        self.assertIsNone(event.editor)

    def test_defaults(self) -> None:
        """Absent fields with defaults take their defaults."""
        event = _codec(a=Article).decode("a", {"title": "t", "author": {"name": "a"}})
        self.assertEqual((event.coauthors, event.reviewers, event.by_language), ([], (), {}))

    def test_otherFieldsAsTheyAre(self) -> None:
        """Fields not typed with a dataclass are taken as they are, without conversion."""
        event = _codec(a=Scalars).decode("a", {"numbers": [1, 2], "pair": [3, 4], "maybe": None})
        self.assertEqual(event, Scalars([1, 2], [3, 4], None))  # type: ignore[arg-type]

    def test_recursive(self) -> None:
        """A dataclass holding a list of itself is rebuilt at every level."""
        codec = _codec(c=Comment)
        comment = Comment("a", [Comment("b", [Comment("c")])])
        self.assertEqual(codec.decode("c", codec.encode("c", comment)), comment)

    def test_computedFieldIgnored(self) -> None:
        """A C{init=False} field in the data is recomputed, not passed to the constructor."""
        codec = _codec(c=Counted)
        data = codec.encode("c", Counted(["a", "b"]))
        self.assertEqual(data, {"words": ["a", "b"], "count": 2})
        self.assertEqual(codec.decode("c", data).count, 2)

    def test_missingField(self) -> None:
        """A missing required field is an EnvelopeError naming it."""
        error = self.assertRaises(EnvelopeError, _codec(a=Article).decode, "a", {"title": "t"})
        self.assertIn("author", str(error))

    def test_unknownField(self) -> None:
        """A field the dataclass does not have is an EnvelopeError naming it."""
        data = {"title": "t", "author": {"name": "a"}, "subtitle": "s"}
        error = self.assertRaises(EnvelopeError, _codec(a=Article).decode, "a", data)
        self.assertIn("subtitle", str(error))

    def test_nestedMissingField(self) -> None:
        """A shape mismatch deep down names its path."""
        data = {"title": "t", "author": {"name": "a"}, "coauthors": [{"name": "b"}, {}]}
        error = self.assertRaises(EnvelopeError, _codec(a=Article).decode, "a", data)
        self.assertIn("coauthors[1]", str(error))

    def test_nestedNotAnObject(self) -> None:
        """A nested dataclass needs a JSON object."""
        data = {"title": "t", "author": "ann"}
        self.assertRaises(EnvelopeError, _codec(a=Article).decode, "a", data)

    def test_listNotAnArray(self) -> None:
        """A list[DC] field needs a JSON array."""
        data = {"title": "t", "author": {"name": "a"}, "coauthors": {"name": "b"}}
        self.assertRaises(EnvelopeError, _codec(a=Article).decode, "a", data)

    def test_topLevelNotAnObject(self) -> None:
        """The data of a dataclass event must be a JSON object."""
        self.assertRaises(EnvelopeError, _codec(a=Article).decode, "a", ["t"])

    def test_constructorRefusal(self) -> None:
        """A ValueError from the dataclass's own checks is an EnvelopeError."""
        error = self.assertRaises(EnvelopeError, _codec(p=Positive).decode, "p", {"value": 0})
        self.assertIn("value must be positive", str(error))


class EventDataTests(SynchronousTestCase):
    """L{event_data} encodes events without an allow-list (for producers)."""

    def test_dataclass(self) -> None:
        """A dataclass instance becomes its fields, recursively."""
        self.assertEqual(
            event_data(Comment("a", [Comment("b")])), {"text": "a", "replies": [{"text": "b", "replies": []}]}
        )

    def test_dict(self) -> None:
        """A dict is itself."""
        self.assertEqual(event_data({"a": [1]}), {"a": [1]})

    def test_otherRejected(self) -> None:
        """Anything else is a TypeError."""
        self.assertRaises(TypeError, event_data, ["a"])
        self.assertRaises(TypeError, event_data, Author)


class EventMessageTests(SynchronousTestCase):
    """Event messages: L{encode_event} and L{decode}."""

    def test_roundTrip(self) -> None:
        """An event message decodes to an L{EventMessage} with the same fields."""
        raw = encode_event("node-a", "e1", "article.created", {"title": "Été"})
        self.assertEqual(decode(raw), EventMessage("node-a", "e1", "article.created", {"title": "Été"}))

    def test_utf8(self) -> None:
        """Messages are UTF-8 JSON, non-ASCII text unescaped."""
        raw = encode_event("node-a", "e1", "a", {"title": "Été"})
        self.assertIn("Été".encode(), raw)
        self.assertEqual(json.loads(raw)["v"], VERSION)

    def test_str(self) -> None:
        """A message may be given as a str."""
        raw = encode_event("node-a", "e1", "a", None).decode("utf-8")
        self.assertEqual(decode(raw), EventMessage("node-a", "e1", "a", None))

    def test_encodeEmptyOrigin(self) -> None:
        """Encoding an event without an origin is refused."""
        self.assertRaises(EnvelopeError, encode_event, "", "e1", "a", {})

    def test_encodeNotJson(self) -> None:
        """Data that is not JSON-encodable is a TypeError."""
        self.assertRaises(TypeError, encode_event, "n", "e1", "a", {"x": object()})

    def test_missingData(self) -> None:
        """An event message needs a data member (null is fine)."""
        raw = _raw(v=1, type="event", origin="n", id="e1", name="a")
        self.assertIn("data", str(self.assertRaises(EnvelopeError, decode, raw)))

    def test_missingName(self) -> None:
        """An event message needs a name."""
        raw = _raw(v=1, type="event", origin="n", id="e1", data={})
        self.assertIn("name is missing", str(self.assertRaises(EnvelopeError, decode, raw)))

    def test_emptyId(self) -> None:
        """The event id is a non-empty string."""
        raw = _raw(v=1, type="event", origin="n", id="", name="a", data={})
        self.assertIn("id must be", str(self.assertRaises(EnvelopeError, decode, raw)))

    def test_originNotString(self) -> None:
        """The origin is a string."""
        raw = _raw(v=1, type="event", origin=1, id="e1", name="a", data={})
        self.assertIn("origin must be", str(self.assertRaises(EnvelopeError, decode, raw)))

    def test_unknownMembersIgnored(self) -> None:
        """Members this version does not know are ignored."""
        raw = _raw(v=1, type="event", origin="n", id="e1", name="a", data=1, trace="t")
        self.assertEqual(decode(raw), EventMessage("n", "e1", "a", 1))


def _full_publication() -> Publication:
    return Publication(
        "chat/general",
        [{"text": "hi"}, 2],
        {"mood": "happy"},
        id=MAX_ID,
        publisher=7,
        publisher_authid="alice",
        publisher_authrole="user",
        exclude_me=False,
        disclose_me=True,
        exclude=frozenset({1, 2}),
        exclude_authid=frozenset({"bob"}),
        exclude_authrole=frozenset({"bot"}),
        eligible=frozenset({3}),
        eligible_authid=frozenset({"carol", "dave"}),
        eligible_authrole=frozenset({"user"}),
    )


class DeliveryMessageTests(SynchronousTestCase):
    """Delivery messages: L{encode_delivery} and L{decode}."""

    def test_roundTripFull(self) -> None:
        """Every publication field survives the round trip."""
        message = decode(encode_delivery("node-a", _full_publication(), key="k1"))
        assert isinstance(message, DeliveryMessage)
        self.assertEqual((message.origin, message.key), ("node-a", "k1"))
        _assertSamePublication(self, message.publication, _full_publication(), ignore=("key",))

    def test_publicationKey(self) -> None:
        """When publications carry their dedupe key, it is encoded by default and decoded into them."""
        if not _PUBLICATION_HAS_KEY:
            raise SkipTest("Publication has no key field")
        publication = _full_publication()
        publication.key = "k2"  # type: ignore[attr-defined]
        message = decode(encode_delivery("node-a", publication))
        assert isinstance(message, DeliveryMessage)
        self.assertEqual(message.key, "k2")
        _assertSamePublication(self, message.publication, publication)

    def test_roundTripDefaults(self) -> None:
        """A publication with default options round-trips too, and the defaults are left out."""
        publication = Publication("articles", [1], id=5)
        raw = encode_delivery("node-a", publication)
        self.assertEqual(
            set(json.loads(raw)), {"v", "type", "origin", "topic", "publication", "args", "kwargs"}
        )
        message = decode(raw)
        assert isinstance(message, DeliveryMessage)
        self.assertIsNone(message.key)
        _assertSamePublication(self, message.publication, publication)

    def test_producerMinimal(self) -> None:
        """Absent optional members take their defaults (exclude_me true, disclose_me false, others null)."""
        message = decode(_raw(v=1, type="delivery", origin="php", topic="articles", publication=9))
        assert isinstance(message, DeliveryMessage)
        expected = Publication("articles", id=9)
        _assertSamePublication(self, message.publication, expected)
        self.assertTrue(message.publication.exclude_me)

    def test_emptySetsKept(self) -> None:
        """An empty eligible list (nobody) is not confused with no list (everybody)."""
        message = decode(encode_delivery("n", Publication("a", id=1, eligible=frozenset())))
        assert isinstance(message, DeliveryMessage)
        self.assertEqual(message.publication.eligible, frozenset())

    def test_argsTupleAsList(self) -> None:
        """Positional arguments given as a tuple travel as a JSON array."""
        message = decode(encode_delivery("n", Publication("a", (1, 2), id=1)))  # type: ignore[arg-type]
        assert isinstance(message, DeliveryMessage)
        self.assertEqual(message.publication.args, [1, 2])

    def test_encodeNotJson(self) -> None:
        """Arguments that are not JSON-encodable are a TypeError."""
        self.assertRaises(TypeError, encode_delivery, "n", Publication("a", [b"bytes"], id=1))

    def test_encodeArgsNotList(self) -> None:
        """Positional arguments that are neither a list nor a tuple are refused, not split up."""
        publication = Publication("a", "text", id=1)  # type: ignore[arg-type]
        self.assertRaises(EnvelopeError, encode_delivery, "n", publication)

    def test_encodeBadTopic(self) -> None:
        """Encoding refuses what decoding would reject."""
        self.assertRaises(EnvelopeError, encode_delivery, "n", Publication("a b", [1], id=1))

    def test_idBounds(self) -> None:
        """Ids 1 and 2^53 are valid."""
        for value in (1, MAX_ID):
            message = decode(_raw(**_delivery(publication=value, publisher=value, exclude=[value])))
            assert isinstance(message, DeliveryMessage)
            self.assertEqual(message.publication.id, value)


# (field, bad value, label): each becomes a test that decoding the delivery fails and names the field
_BAD_DELIVERY_FIELDS: list[tuple[str, Any, str]] = [
    ("origin", _DROP, "Missing"),
    ("origin", 5, "Int"),
    ("origin", "", "Empty"),
    ("topic", _DROP, "Missing"),
    ("topic", "", "Empty"),
    ("topic", "chat general", "Whitespace"),
    ("topic", 1, "Int"),
    ("publication", _DROP, "Missing"),
    ("publication", 0, "Zero"),
    ("publication", MAX_ID + 1, "AboveMax"),
    ("publication", True, "Bool"),
    ("publication", "42", "String"),
    ("publication", 42.0, "Float"),
    ("args", {"a": 1}, "Object"),
    ("args", "x", "String"),
    ("kwargs", [1], "Array"),
    ("publisher", True, "Bool"),
    ("publisher", 0, "Zero"),
    ("publisher", "7", "String"),
    ("publisher_authid", 1, "Int"),
    ("publisher_authrole", [], "Array"),
    ("exclude_me", 1, "Int"),
    ("exclude_me", None, "Null"),
    ("disclose_me", "true", "String"),
    ("exclude", [True], "BoolItem"),
    ("exclude", [0], "ZeroItem"),
    ("exclude", [1.5], "FloatItem"),
    ("exclude", 1, "Int"),
    ("exclude_authid", [1], "IntItem"),
    ("exclude_authid", "bob", "String"),
    ("exclude_authrole", [None], "NullItem"),
    ("eligible", [MAX_ID + 1], "AboveMaxItem"),
    ("eligible_authid", {}, "Object"),
    ("eligible_authrole", [1], "IntItem"),
    ("key", 1, "Int"),
]


def _rejection_test(name: str, value: Any) -> Any:
    def test(self: SynchronousTestCase) -> None:
        error = self.assertRaises(EnvelopeError, decode, _raw(**_delivery(**{name: value})))
        self.assertIn(name, str(error))

    test.__doc__ = f"A delivery whose {name} is {'missing' if value is _DROP else repr(value)} is rejected."
    return test


class DeliveryRejectionTests(SynchronousTestCase):
    """Every wrongly-typed delivery member is rejected with its name in the reason."""

    locals().update(
        {f"test_{name}{label}": _rejection_test(name, value) for name, value, label in _BAD_DELIVERY_FIELDS}
    )


class DecodeRejectionTests(SynchronousTestCase):
    """L{decode} rejects what is not a v1 message, with the reason."""

    def assertRejected(self, raw: Any, reason: str, **kwargs: Any) -> None:
        error = self.assertRaises(EnvelopeError, decode, raw, **kwargs)
        self.assertIn(reason, str(error))

    def test_tooLarge(self) -> None:
        """A message over C{max_bytes} is rejected before it is parsed."""
        self.assertRejected(b"x" * 101, "too large", max_bytes=100)

    def test_tooLargeStr(self) -> None:
        """The limit applies to str messages, counted in UTF-8 bytes."""
        raw = encode_event("n", "e", "a", {"t": "é" * 40}).decode("utf-8")
        self.assertRejected(raw, "too large", max_bytes=len(raw) + 10)

    def test_atTheLimit(self) -> None:
        """A message of exactly C{max_bytes} is accepted."""
        raw = encode_event("n", "e", "a", None)
        self.assertIsInstance(decode(raw, max_bytes=len(raw)), EventMessage)

    def test_notUtf8(self) -> None:
        """Bytes that are not UTF-8 are rejected."""
        self.assertRejected(b'{"v":1,"type":"event","origin":"\xff"}', "UTF-8")

    def test_badJson(self) -> None:
        """Text that is not JSON is rejected."""
        self.assertRejected(b'{"v":1,', "not valid JSON")

    def test_nanRejected(self) -> None:
        """NaN and Infinity are not JSON."""
        self.assertRejected(b'{"v":1,"type":"event","origin":"n","id":"e","name":"a","data":NaN}', "JSON")

    def test_notAnObject(self) -> None:
        """A JSON array is not a message."""
        self.assertRejected(b"[1]", "must be a JSON object")

    def test_notBytes(self) -> None:
        """Anything but bytes or str is rejected (as an EnvelopeError too)."""
        self.assertRejected(42, "bytes or str")

    def test_noVersion(self) -> None:
        """A message without C{v} is rejected."""
        self.assertRejected(_raw(type="event"), "no version")

    def test_otherVersion(self) -> None:
        """Version 2 is not understood."""
        self.assertRejected(_raw(v=2, type="event"), "unsupported message version 2")

    def test_versionString(self) -> None:
        """The version is the integer 1, not a string."""
        self.assertRejected(_raw(v="1", type="event"), "unsupported message version")

    def test_versionBool(self) -> None:
        """C{true} is not the version 1."""
        self.assertRejected(_raw(v=True, type="event"), "unsupported message version")

    def test_noType(self) -> None:
        """A message without a type is rejected."""
        self.assertRejected(_raw(v=1, origin="n"), '"type"')

    def test_unknownType(self) -> None:
        """An unknown type is rejected, named."""
        self.assertRejected(_raw(v=1, type="gossip", origin="n"), "unknown message type 'gossip'")

    def test_typeNotString(self) -> None:
        """A type that is not a string is unknown."""
        self.assertRejected(_raw(v=1, type=["event"], origin="n"), "unknown message type")


_CALL = {
    "v": 1,
    "type": "call",
    "origin": "node-b",
    "call": "9f1c",
    "procedure": "com.example.add",
    "args": [1, 2],
    "kwargs": None,
    "receive_progress": False,
    "caller": None,
    "caller_authid": None,
    "caller_authrole": None,
}
_GOOD_NODE_MESSAGES: list[dict[str, Any]] = [
    _CALL,
    {"v": 1, "type": "call", "origin": "node-b", "call": "c", "procedure": "p"},
    {**_CALL, "caller": 7, "caller_authid": "alice", "caller_authrole": "user", "kwargs": {"a": 1}},
    {"v": 1, "type": "result", "origin": "node-b", "call": "c", "args": ["r"], "progress": True},
    {"v": 1, "type": "result", "origin": "node-b", "call": "c"},
    {"v": 1, "type": "error", "origin": "node-b", "call": "c", "error": "wamp.error.canceled", "args": None},
    {"v": 1, "type": "cancel", "origin": "node-b", "call": "c", "mode": "killnowait"},
    {"v": 1, "type": "cancel", "origin": "node-b", "call": "c"},
]
_BAD_NODE_MESSAGES: list[tuple[dict[str, Any], str]] = [
    ({"v": 1, "type": "call", "request": 3}, "origin is missing"),
    ({"v": 1, "type": "result", "origin": 3, "call": "c"}, "origin must be a node id"),
    ({**_CALL, "origin": "a:b"}, "origin must be a node id"),
    ({**_CALL, "origin": "a*"}, "origin must be a node id"),
    ({**_CALL, "call": None}, "call must be a non-empty string"),
    ({**_CALL, "procedure": _DROP}, "procedure is missing"),
    ({**_CALL, "procedure": ""}, "procedure must be a URI"),
    ({**_CALL, "procedure": "com x"}, "procedure must be a URI"),
    ({**_CALL, "args": "x"}, "args must be an array or null"),
    ({**_CALL, "kwargs": []}, "kwargs must be an object or null"),
    ({**_CALL, "receive_progress": 1}, "receive_progress must be true or false"),
    ({**_CALL, "caller": "7"}, "caller must be an integer"),
    ({**_CALL, "caller": MAX_ID + 1}, "caller must be an integer"),
    ({**_CALL, "caller_authid": 1}, "caller_authid must be a string or null"),
    ({**_CALL, "caller_authrole": ["admin"]}, "caller_authrole must be a string or null"),
    ({"v": 1, "type": "result", "origin": "b"}, "call is missing"),
    ({"v": 1, "type": "result", "origin": "b", "call": "c", "progress": "yes"}, "progress must be true"),
    ({"v": 1, "type": "result", "origin": "b", "call": "c", "args": {}}, "args must be an array"),
    ({"v": 1, "type": "error", "origin": "b", "call": "c"}, "error is missing"),
    ({"v": 1, "type": "error", "origin": "b", "call": "c", "error": None}, "error must be a URI"),
    ({"v": 1, "type": "error", "origin": "b", "call": "c", "error": "e", "kwargs": 1}, "kwargs must be"),
    ({"v": 1, "type": "cancel", "origin": "b", "call": "c", "mode": "stop"}, "mode must be"),
    ({"v": 1, "type": "cancel", "origin": "b", "call": 5}, "call must be a non-empty string"),
]


def _node_raw(message: dict[str, Any]) -> bytes:
    return _raw(**{key: value for key, value in message.items() if value is not _DROP})


class NodeMessageTests(SynchronousTestCase):
    """Node-channel messages are checked member by member before the bus sees them."""

    def test_wellFormed(self) -> None:
        """call, result, error and cancel decode to a L{NodeMessage} holding the whole object."""
        for body in _GOOD_NODE_MESSAGES:
            self.assertEqual(decode(_raw(**body), rule=NODE), NodeMessage(body["type"], "node-b", body))

    def test_malformed(self) -> None:
        """Every wrongly-typed or missing member is rejected with its name in the reason."""
        for body, reason in _BAD_NODE_MESSAGES:
            error = self.assertRaises(EnvelopeError, decode, _node_raw(body), rule=NODE)
            self.assertNotIsInstance(error, MessageRejected)
            self.assertIn(reason, str(error), body)

    def test_encodeNode(self) -> None:
        """L{encode_node} writes a message that decodes to the same members."""
        raw = encode_node("cancel", "node-b", {"call": "c", "mode": "kill"})
        self.assertEqual(raw, b'{"v":1,"type":"cancel","origin":"node-b","call":"c","mode":"kill"}')
        self.assertEqual(decode(raw, rule=NODE).body["mode"], "kill")

    def test_encodeNodeNotJson(self) -> None:
        """Binary arguments, NaN and unknown types cannot be encoded."""
        self.assertRaises(TypeError, encode_node, "result", "n", {"call": "c", "args": [b"x"]})
        self.assertRaises(TypeError, encode_node, "result", "n", {"call": "c", "args": [float("nan")]})
        self.assertRaises(ValueError, encode_node, "delivery", "n", {})


class ChannelRuleTests(SynchronousTestCase):
    """Each channel accepts its own message types; a node's dedupe key travels on internal channels only."""

    def test_publicChannels(self) -> None:
        """The events channel takes events, the deliveries channel deliveries, nothing else."""
        event = encode_event("producer", "e1", "a", None)
        delivery = encode_delivery("producer", Publication("t", None, id=1))
        self.assertIsInstance(decode(event, rule=PUBLIC_EVENTS), EventMessage)
        self.assertIsInstance(decode(delivery, rule=PUBLIC_DELIVERIES), DeliveryMessage)
        for raw, rule, reason in [
            (delivery, PUBLIC_EVENTS, "delivery messages are not accepted on this channel: producers "),
            (event, PUBLIC_DELIVERIES, "event messages are not accepted on this channel: producers "),
            (_raw(**_CALL), PUBLIC_EVENTS, "call messages are not accepted on this channel: it is a node-"),
            (_raw(**_CALL), PUBLIC_DELIVERIES, "call messages are not accepted"),
        ]:
            error = self.assertRaises(MessageRejected, decode, raw, rule=rule)
            self.assertIn(reason, str(error))

    def test_internalChannels(self) -> None:
        """Node channels take node messages only; the peers channel events and deliveries only."""
        self.assertIsInstance(decode(_raw(**_CALL), rule=NODE), NodeMessage)
        self.assertIsInstance(decode(encode_event("n", "e", "a", 1), rule=PEERS), EventMessage)
        self.assertRaises(MessageRejected, decode, encode_event("n", "e", "a", 1), rule=NODE)
        self.assertRaises(MessageRejected, decode, _raw(**_CALL), rule=PEERS)

    def test_peerMessages(self) -> None:
        """Meta events and meta interest travel on the peers channel only, members checked."""
        meta = encode_node(
            "meta", "n", {"topic": "wamp.session.on_leave", "publication": 3, "args": [1, "a", "r"]}
        )
        interest = encode_node("interest", "n", {"meta": True})
        self.assertEqual(decode(meta, rule=PEERS).body["args"], [1, "a", "r"])
        self.assertTrue(decode(interest, rule=PEERS).body["meta"])
        for raw in (meta, interest):
            for rule in (NODE, PUBLIC_EVENTS, PUBLIC_DELIVERIES):
                error = self.assertRaises(MessageRejected, decode, raw, rule=rule)
                self.assertIn("sent by nodes on the peers channel only", str(error))
        for body, reason in (
            ({"topic": "wamp.x", "publication": 0}, "publication must"),
            ({"topic": "wamp.x", "publication": 1, "about": ["u"]}, "about must be an array of two strings"),
            ({"topic": "a b", "publication": 1}, "topic must"),
        ):
            error = self.assertRaises(EnvelopeError, decode, encode_node("meta", "n", body), rule=PEERS)
            self.assertIn(reason, str(error))
        error = self.assertRaises(
            EnvelopeError, decode, encode_node("interest", "n", {"meta": 1}), rule=PEERS
        )
        self.assertIn("meta must be true or false", str(error))

    def test_noDeliveryToMetaTopics(self) -> None:
        """Only the router publishes in the wamp. namespace: a delivery there is refused on every channel."""
        for topic in ("wamp", "wamp.session.on_join"):
            raw = encode_delivery("producer", Publication(topic, None, id=1))
            for rule in (PUBLIC_DELIVERIES, PEERS):
                error = self.assertRaises(MessageRejected, decode, raw, rule=rule)
                self.assertIn("only the router publishes", str(error))
        self.assertIsInstance(
            decode(encode_delivery("p", Publication("wampum", None, id=1))), DeliveryMessage
        )

    def test_proceduresChanged(self) -> None:
        """Which entries of the procedures hash a node changed: on the peers channel only."""
        raw = encode_node("procedures", "n", {"fields": ["com.x", "prefix com."], "version": 7})
        message = decode(raw, rule=PEERS)
        assert isinstance(message, NodeMessage)
        self.assertEqual(
            (message.type, message.body["fields"], message.body["version"]),
            ("procedures", ["com.x", "prefix com."], 7),
        )
        reload_all = decode(encode_node("procedures", "n", {"fields": None, "version": 0}), rule=PEERS)
        assert isinstance(reload_all, NodeMessage)
        self.assertIsNone(reload_all.body["fields"])
        for rule in (NODE, PUBLIC_EVENTS, PUBLIC_DELIVERIES):
            self.assertRaises(MessageRejected, decode, raw, rule=rule)
        for body, reason in [
            ({"fields": "com.x", "version": 1}, "fields must be"),
            ({"fields": [1], "version": 1}, "fields must be"),
            ({"fields": [], "version": -1}, "version must be"),
            ({"fields": []}, "version is missing"),
        ]:
            error = self.assertRaises(EnvelopeError, decode, encode_node("procedures", "n", body), rule=PEERS)
            self.assertIn(reason, str(error))

    def test_unknownTypeIsMalformed(self) -> None:
        """An unknown type is malformed wherever it comes, not merely on the wrong channel."""
        error = self.assertRaises(EnvelopeError, decode, _raw(v=1, type="shout"), rule=NODE)
        self.assertNotIsInstance(error, MessageRejected)

    def test_dedupeKey(self) -> None:
        """A delivery with a C{key} is refused on the public channel, taken on the peers channel."""
        raw = _raw(**_delivery(key="e1:topic:t:1"))
        error = self.assertRaises(MessageRejected, decode, raw, rule=PUBLIC_DELIVERIES)
        self.assertIn("key is the nodes' internal dedupe key", str(error))
        self.assertEqual(decode(raw, rule=PEERS).key, "e1:topic:t:1")
        self.assertIsNone(decode(_raw(**_delivery(key=None)), rule=PUBLIC_DELIVERIES).key)


class SignerTests(SynchronousTestCase):
    """L{Signer} signs the exact bytes of a message for one channel."""

    def test_roundTrip(self) -> None:
        """A signed message is still one JSON object, decoded as before, with a C{sig} member."""
        signer = Signer("s3cret")
        raw = encode_node("cancel", "b", {"call": "c"})
        signed = signer.sign("ch", raw)
        self.assertTrue(signed.startswith(raw[:-1] + b',"sig":"'))
        self.assertEqual(len(json.loads(signed)["sig"]), 64)
        signer.check("ch", signed)
        message = decode(signed, rule=NODE, channel="ch", signer=signer)
        self.assertEqual(message.body["call"], "c")

    def test_knownVector(self) -> None:
        """The signature is HMAC-SHA256 over the channel, a newline and the unsigned message."""
        import hashlib
        import hmac

        raw = b'{"v":1,"type":"cancel","origin":"b","call":"c"}'
        expected = hmac.new(b"k", b"ch\n" + raw, hashlib.sha256).hexdigest()
        self.assertEqual(json.loads(Signer(b"k").sign("ch", raw))["sig"], expected)

    def test_refused(self) -> None:
        """Unsigned, wrongly signed, altered or re-addressed messages are refused."""
        signer = Signer("s3cret")
        raw = encode_node("cancel", "b", {"call": "c"})
        signed = signer.sign("ch", raw)
        for bad, reason in [
            (raw, "unsigned"),
            (b"{}", "unsigned"),
            (b"", "unsigned"),
            (Signer("other").sign("ch", raw), "bad signature"),
            (signed.replace(b'"c"', b'"d"'), "bad signature"),
            (signed[:-4] + b'00"}', "bad signature"),
        ]:
            error = self.assertRaises(MessageRejected, signer.check, "ch", bad)
            self.assertIn(reason, str(error))
        self.assertRaises(MessageRejected, signer.check, "other-channel", signed)
        self.assertRaises(MessageRejected, decode, raw, rule=NODE, channel="ch", signer=signer)

    def test_publicChannelsUnchecked(self) -> None:
        """Producers do not sign: the signer is not consulted on public channels."""
        raw = encode_event("producer", "e", "a", None)
        self.assertIsInstance(decode(raw, rule=PUBLIC_EVENTS, signer=Signer("s")), EventMessage)

    def test_emptySecret(self) -> None:
        """An empty secret is no secret."""
        self.assertRaises(ValueError, Signer, "")

    def test_secretNotShown(self) -> None:
        """The secret does not appear in the signer's repr."""
        self.assertNotIn("s3cret", repr(Signer("s3cret")))


class ProcedureEntryTests(SynchronousTestCase):
    """Entries of the procedures hash: a registration's invocation policy and its callees on every node."""

    def test_roundTrip(self) -> None:
        """L{decode_entry} reads what L{encode_entry} wrote (str or bytes)."""
        entry = encode_entry("roundrobin", [("node-b", 12), ("node-a", 2**53)])
        self.assertEqual(entry, '{"invoke":"roundrobin","members":["node-b:12","node-a:9007199254740992"]}')
        expected = ProcedureEntry("roundrobin", (("node-b", 12), ("node-a", 2**53)))
        self.assertEqual(decode_entry(entry), expected)
        self.assertEqual(decode_entry(entry.encode()), expected)

    def test_fields(self) -> None:
        """Exact registrations are named by their URI, patterns by their match policy and URI."""
        for uri, match, name in [
            ("com.x", "exact", "com.x"),
            ("com.x.", "prefix", "prefix com.x."),
            ("com..x", "wildcard", "wildcard com..x"),
        ]:
            self.assertEqual(procedure_field(uri, match), name)
            self.assertEqual(parse_procedure_field(name), (uri, match))
        for name in ("exact com.x", "suffix com.x", "prefix a b"):
            self.assertRaises(EnvelopeError, parse_procedure_field, name)

    def test_bad(self) -> None:
        """Anything else is an L{EnvelopeError} saying what is wrong."""
        for entry, reason in [
            ("not json", "not JSON"),
            (123, "must be a JSON object, not int"),
            (None, "must be a JSON object"),
            (b"\xff", "UTF-8"),
            ("[1]", "must be a JSON object, not an array"),
            ('{"node": "b", "registration": 1}', "invoke must be one of"),
            ('{"invoke": "all", "members": ["b:1"]}', "invoke must be one of"),
            ('{"invoke": "single"}', "members must be a non-empty array"),
            ('{"invoke": "single", "members": []}', "members must be a non-empty array"),
            ('{"invoke": "single", "members": ["b"]}', "member 'b' is not 'node:session'"),
            ('{"invoke": "single", "members": ["b:0"]}', "is not 'node:session'"),
            ('{"invoke": "single", "members": ["b:x"]}', "is not 'node:session'"),
            ('{"invoke": "single", "members": [":1"]}', "is not 'node:session'"),
            ('{"invoke": "single", "members": [7]}', "member 7 is not"),
            ('{"invoke": "single", "members": ["b:1"], "x": NaN}', "not JSON"),
        ]:
            error = self.assertRaises(EnvelopeError, decode_entry, entry)
            self.assertIn(reason, str(error), entry)
