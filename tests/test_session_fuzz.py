"""Property-based tests for L{sandstone._session}: random and mutated WAMP messages thrown at a session.

Whatever a client sends, nothing escapes the transport boundary, nothing is logged as a failure, every
answer is an ERROR, an ABORT (closing the transport) or a valid reply, and an ABORT leaves nothing behind.
"""

from __future__ import annotations

from typing import Any

from autobahn.wamp import message
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from sandstone import Sandstone, Topic
from sandstone.testing import TestClient, TestSession

REPLIES = (
    message.Error,
    message.Abort,
    message.Welcome,
    message.Subscribed,
    message.Unsubscribed,
    message.Published,
    message.Registered,
    message.Unregistered,
    message.Result,
    message.Event,
    message.Goodbye,
    message.Invocation,
    message.Interrupt,
)

ROLES = {"roles": {"subscriber": {}, "publisher": {}, "caller": {}, "callee": {}}}

FUZZ = settings(max_examples=300, deadline=None)


def make_app() -> Sandstone:
    """An app on open URIs with one declared topic (``news``) and one app procedure (``app.echo``)."""
    app = Sandstone(anonymous=True, open_uris=True)

    @app.topic("news")
    class News(Topic):
        pass

    @app.procedure("app.echo")
    def echo(*args: Any, **kwargs: Any) -> list[Any]:
        return list(args)

    return app


# strategies

request_ids = st.one_of(
    st.integers(min_value=1, max_value=2**53),
    st.sampled_from([0, -1, 2**53 + 1, 2**64, -(2**63)]),
)

junk_strings = st.one_of(
    st.sampled_from(
        ["", " ", "a b", "a..b", ".a", "a.", "#", "a.#.b", "news", "news.", "wamp.x", "a" * 1000, "..", "é"]
    ),
    st.text(max_size=20),
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 2**53, 2**53 + 1, 2**63, 2**64]),
    st.floats(allow_nan=False, allow_infinity=False),
    junk_strings,
)

junk = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(junk_strings, children, max_size=3)
    ),
    max_leaves=8,
)

options_junk = st.one_of(
    st.dictionaries(
        st.sampled_from(
            [
                "match",
                "acknowledge",
                "exclude_me",
                "exclude",
                "eligible",
                "disclose_me",
                "receive_progress",
                "timeout",
                "mode",
                "invoke",
                "authmethods",
                "roles",
            ]
        ),
        st.one_of(junk, st.sampled_from(["exact", "prefix", "wildcard", "regex", "", "kill", "skip"])),
        max_size=3,
    ),
    junk,
)


def templates(realm: str, subscription: int, registration: int) -> st.SearchStrategy[list[Any]]:
    """A valid message of each client type (given fresh request ids)."""
    return st.one_of(
        st.builds(lambda: [message.Hello.MESSAGE_TYPE, realm, dict(ROLES)]),
        st.builds(
            lambda r, m, t: [message.Subscribe.MESSAGE_TYPE, r, {"match": m}, t],
            request_ids,
            st.sampled_from(["exact", "prefix", "wildcard"]),
            st.sampled_from(["news", "other.topic", "other"]),
        ),
        st.builds(lambda r: [message.Unsubscribe.MESSAGE_TYPE, r, subscription], request_ids),
        st.builds(
            lambda r, ack, t: [message.Publish.MESSAGE_TYPE, r, {"acknowledge": ack}, t, ["hi"], {"k": 1}],
            request_ids,
            st.booleans(),
            st.sampled_from(["news", "other.topic"]),
        ),
        st.builds(lambda r: [message.Register.MESSAGE_TYPE, r, {}, "client.other"], request_ids),
        st.builds(lambda r: [message.Unregister.MESSAGE_TYPE, r, registration], request_ids),
        st.builds(
            lambda r, p: [message.Call.MESSAGE_TYPE, r, {}, p, [1], {}],
            request_ids,
            st.sampled_from(["app.echo", "client.proc", "no.such"]),
        ),
        st.builds(lambda r: [message.Yield.MESSAGE_TYPE, r, {}, [1]], request_ids),
        st.builds(
            lambda r: [
                message.Error.MESSAGE_TYPE,
                message.Invocation.MESSAGE_TYPE,
                r,
                {},
                "wamp.error.x",
                ["x"],
            ],
            request_ids,
        ),
        st.builds(lambda r: [message.Cancel.MESSAGE_TYPE, r, {}], request_ids),
        st.just([message.Goodbye.MESSAGE_TYPE, {}, "wamp.close.normal"]),
        st.just([message.Abort.MESSAGE_TYPE, {}, "wamp.close.normal"]),
    )


@st.composite
def mutated(draw: st.DrawFn, template: st.SearchStrategy[list[Any]]) -> list[Any]:
    """A valid message with (at most) one thing changed."""
    raw = list(draw(template))
    how = draw(st.sampled_from(["none", "replace", "uri", "options", "drop", "append", "kind"]))
    if how == "replace":
        raw[draw(st.integers(0, len(raw) - 1))] = draw(junk)
    elif how == "uri":
        strings = [i for i, value in enumerate(raw) if isinstance(value, str)]
        if strings:
            raw[draw(st.sampled_from(strings))] = draw(junk_strings)
    elif how == "options":
        dicts = [i for i, value in enumerate(raw) if isinstance(value, dict)]
        if dicts:
            raw[draw(st.sampled_from(dicts))] = draw(options_junk)
    elif how == "drop":
        del raw[draw(st.integers(0, len(raw) - 1)) :]
    elif how == "append":
        raw.extend(draw(st.lists(junk, min_size=1, max_size=3)))
    elif how == "kind":
        raw[0] = draw(st.one_of(st.integers(-5, 300), st.sampled_from([2**53 + 1, 2**64])))
    return raw


frames = st.one_of(
    st.tuples(st.binary(max_size=64), st.booleans()),
    st.tuples(st.text(max_size=64).map(lambda s: s.encode("utf-8")), st.just(False)),
    st.tuples(
        st.sampled_from(
            [
                b"[]",
                b"{}",
                b"[[]]",
                b"[1]",
                b"[null]",
                b"[1e400]",
                b'["a"]',
                b"[32, 1, {}]",
                b'[6, {}, "x"]',
                b"[" * 200,
                b"1",
                b"null",
                b'""',
            ]
        ),
        st.just(False),
    ),
)


class FuzzTests(SynchronousTestCase):
    """Random frames and mutated messages never break the router or leak state."""

    def setUp(self) -> None:
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def joined(self) -> tuple[Sandstone, TestSession, int, int]:
        """A fresh app and a joined session, subscribed to ``news`` and registered as ``client.proc``."""
        app = make_app()
        session = TestClient(app).connect()
        subscription = session.subscribe("news").id
        registration = session.register("client.proc", lambda *args: list(args))
        return app, session, subscription, registration

    def throw(self, app: Sandstone, session: TestSession, inputs: list[Any]) -> None:
        """Send each input (a raw message list, or a ``(payload, is_binary)`` frame) and check the answers."""
        del self.events[:]
        for item in inputs:
            if session.transport_closed:
                break
            before = len(session.messages)
            if isinstance(item, tuple):
                session.send_frame(*item)
            else:
                session.send_raw(item)
            answers = session.messages[before:]
            for answer in answers:
                self.assertIsInstance(answer, REPLIES)
            if any(isinstance(answer, message.Abort) for answer in answers):
                self.assertTrue(session.transport_closed)
                self.assertEqual(app.router.sessions, {})
                self.assertEqual(len(app.router.broker.subscriptions), 0)
                self.assertEqual(len(app.router.dealer), 1)  # the app procedure only
                self.assertEqual(app.router.dealer.client_registrations(), [])
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual([event for event in self.events if "log_failure" in event], [])

    @FUZZ
    @given(st.data())
    def test_joined_mutated_messages(self, data: st.DataObject) -> None:
        """Mutated messages of every client type, at a joined session."""
        app, session, subscription, registration = self.joined()
        inputs = data.draw(
            st.lists(mutated(templates(app.realm, subscription, registration)), min_size=1, max_size=4)
        )
        self.throw(app, session, inputs)

    @FUZZ
    @given(st.data())
    def test_opening_mutated_messages(self, data: st.DataObject) -> None:
        """Mutated messages of every client type, at a session that has not joined yet."""
        app = make_app()
        session = TestSession(app)
        inputs = data.draw(st.lists(mutated(templates(app.realm, 1, 1)), min_size=1, max_size=4))
        self.throw(app, session, inputs)

    @FUZZ
    @given(st.lists(frames, min_size=1, max_size=3), st.booleans())
    def test_random_frames(self, inputs: list[tuple[bytes, bool]], join: bool) -> None:
        """Random text and binary frames, at a joined session or one that has not joined yet."""
        if join:
            app, session, _, _ = self.joined()
        else:
            app = make_app()
            session = TestSession(app)
        self.throw(app, session, list(inputs))
