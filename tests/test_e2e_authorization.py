"""End-to-end authorization over real TCP with autobahn-python clients: refusals as ERRORs, refused pattern
subscriptions, delivery checks for pattern subscribers, the reserved ``wamp.`` namespace and the meta API.

Roles are set on the router-side session right after joining (``as_role``), standing in for authentication.
"""

from __future__ import annotations

import itertools
from typing import Any

from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import PublishOptions
from twisted.internet import defer

from sandstone import Sandstone, Topic
from tests.support import ServerTestCase, sleep, wait_until

ALLOWED = {"user": ("com.app.",), "admin": ("com.",)}


def authorize(session: Any, action: str, uri: str, match: str) -> bool:
    if uri == "com.app.broken":
        raise RuntimeError("authorizer bug")
    if match == "wildcard":
        uri = ".".join(itertools.takewhile(bool, uri.split("."))) + "."
    return any(uri.startswith(prefix) for prefix in ALLOWED.get(session.authrole, ()))


def careless(session: Any, action: str, uri: str, match: str) -> bool:
    """Allows every pattern subscription: delivery checks must still keep forbidden events away."""
    return match != "exact" or authorize(session, action, uri, match)


def make_app(authorizer: Any) -> Sandstone:
    app = Sandstone(anonymous=True, open_uris=True)
    app.authorizer(authorizer)

    @app.topic("com.app.rooms.{room}")
    class Room(Topic):
        def may_subscribe(self, session: Any) -> bool:
            return self.args["room"] != "private"

    @app.procedure("com.app.add")
    def add(a: int, b: int) -> int:
        return a + b

    return app


class AuthorizationTestCase(ServerTestCase):
    authorizer: Any = staticmethod(authorize)

    def setUp(self) -> None:
        self.serve(make_app(self.authorizer))

    async def as_role(self, authrole: str) -> Any:
        client = await self.connect()
        self.app.router.sessions[client._session_id].authrole = authrole  # stands in for authentication
        return client

    async def refused(self, d: Any, error: str) -> ApplicationError:
        try:
            await d
        except ApplicationError as exc:
            self.assertEqual(exc.error, error)
            return exc
        self.fail(f"expected {error}")


def deferred_test(method: Any) -> Any:
    def test(self: Any) -> Any:
        return defer.Deferred.fromCoroutine(method(self))

    test.__name__ = method.__name__
    return test


class RefusalTests(AuthorizationTestCase):
    @deferred_test
    async def test_not_authorized_and_the_session_lives(self) -> None:
        user = await self.as_role("user")
        await self.refused(user.subscribe(lambda *a: None, "com.secret.news"), "wamp.error.not_authorized")
        await self.refused(
            user.publish("com.secret.news", 1, options=PublishOptions(acknowledge=True)),
            "wamp.error.not_authorized",
        )
        await self.refused(user.register(lambda: None, "com.secret.proc"), "wamp.error.not_authorized")
        await self.refused(
            user.subscribe(lambda *a: None, "com.app.rooms.private"), "wamp.error.not_authorized"
        )
        self.assertEqual(await user.call("com.app.add", 2, 3), 5)
        self.assertTrue(user.is_attached())

    @deferred_test
    async def test_authorization_failed_when_the_authorizer_raises(self) -> None:
        user = await self.as_role("user")
        await self.refused(
            user.subscribe(lambda *a: None, "com.app.broken"), "wamp.error.authorization_failed"
        )
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        await user.subscribe(lambda *a: None, "com.app.news")

    @deferred_test
    async def test_pattern_subscriptions_wider_than_the_role_are_refused(self) -> None:
        user = await self.as_role("user")
        for prefix in ("com.", ""):
            await self.refused(user.record(prefix, match="prefix"), "wamp.error.not_authorized")
        await self.refused(user.record("com..x", match="wildcard"), "wamp.error.not_authorized")
        await user.record("com.app.", match="prefix")
        await user.record("com.app..x", match="wildcard")

    @deferred_test
    async def test_reserved_namespace_and_meta_api(self) -> None:
        self.app.authorizer(None)
        alice, bob = await self.connect(), await self.connect()
        error = await self.refused(
            alice.subscribe(lambda *a: None, "wamp.session.on_kill"), "wamp.error.invalid_uri"
        )
        self.assertIn("reserved", error.args[0])
        await alice.subscribe(lambda *a: None, "wamp.session.on_join")  # a meta topic
        await self.refused(alice.register(lambda: None, "wamp.session.kill"), "wamp.error.invalid_uri")
        await self.refused(alice.call("wamp.registration.kill"), "wamp.error.invalid_uri")
        self.assertEqual(await alice.call("wamp.session.count"), 2)
        self.assertEqual(
            sorted(await alice.call("wamp.session.list")), sorted([alice._session_id, bob._session_id])
        )
        details = await alice.call("wamp.session.get", bob._session_id)
        self.assertEqual(details["session"], bob._session_id)
        self.assertEqual(details["authrole"], "anonymous")
        await self.refused(alice.call("wamp.session.get", 1), "wamp.error.no_such_session")


class DeliveryTests(AuthorizationTestCase):
    authorizer = staticmethod(careless)

    @deferred_test
    async def test_pattern_subscribers_never_receive_forbidden_events(self) -> None:
        user, admin, watcher = (
            await self.as_role("user"),
            await self.as_role("admin"),
            await self.as_role("admin"),
        )
        await user.record("com.", match="prefix")
        await user.record("com..news", match="wildcard")
        await watcher.record("com.", match="prefix")
        await admin.record("com.secret.news")
        options = PublishOptions(acknowledge=True, exclude_me=False)
        await admin.publish("com.secret.news", "classified", options=options)
        await admin.publish("com.app.news", "public", options=options)
        self.app.broadcast("com.secret.news", "classified again")
        await wait_until(lambda: len(watcher.received["com."]) == 3)
        await wait_until(lambda: len(admin.received["com.secret.news"]) == 2)
        await sleep(0.1)
        self.assertEqual([e.payload for e in user.received["com."]], ["public"])
        self.assertEqual([e.payload for e in user.received["com..news"]], ["public"])
        self.assertEqual([e.details.topic for e in user.received["com."]], ["com.app.news"])
        self.assertEqual(
            [e.payload for e in watcher.received["com."]], ["classified", "public", "classified again"]
        )
