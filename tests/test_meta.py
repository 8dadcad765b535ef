"""The session meta API (L{sandstone._meta}): ``wamp.session.count``, ``wamp.session.list`` and
``wamp.session.get``, called by a client of the router.

Sessions get their authrole from authentication; these tests set ``session._session.authrole`` (the
router-side session of a ``TestSession``) right after connecting, to get a distinct role without it.
"""

from __future__ import annotations

from autobahn.wamp import message
from autobahn.wamp.exception import ApplicationError
from twisted.trial.unittest import SynchronousTestCase

from sandstone import Sandstone
from sandstone.testing import TestClient


class SessionMetaTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.app = Sandstone(anonymous=True, open_uris=True)
        self.client = TestClient(self.app)
        self.alice = self.client.connect()

    def test_session_meta_api(self) -> None:
        bob = self.client.connect()
        self.assertEqual(self.successResultOf(self.alice.call("wamp.session.count")), 2)
        self.assertEqual(
            sorted(self.successResultOf(self.alice.call("wamp.session.list"))),
            sorted([self.alice.id, bob.id]),
        )
        bob._session.authrole = "user"
        self.assertEqual(self.successResultOf(self.alice.call("wamp.session.count", ["user"])), 1)
        self.assertEqual(self.successResultOf(self.alice.call("wamp.session.list", ["user"])), [bob.id])
        self.assertEqual(
            self.successResultOf(self.alice.call("wamp.session.get", bob.id)),
            {"session": bob.id, "authid": bob.authid, "authrole": "user", "authmethod": "anonymous"},
        )
        failure = self.failureResultOf(self.alice.call("wamp.session.get", 12345), ApplicationError)
        self.assertEqual(failure.value.error, "wamp.error.no_such_session")
        bob.leave()
        self.assertEqual(self.successResultOf(self.alice.call("wamp.session.count")), 1)
        self.assertEqual(len(self.app.router.dealer), 0)  # not registrations

    def test_welcome_announces_the_session_meta_api(self) -> None:
        [welcome] = [m for m in self.alice.messages if isinstance(m, message.Welcome)]
        self.assertTrue(welcome.roles["dealer"].session_meta_api)
