"""End-to-end: SIGTERM to ``twistd sandstone`` closes every WebSocket with 1001 and no GOODBYE (clients
reconnect), or with ``--shutdown-goodbye`` says GOODBYE wamp.close.system_shutdown to every session first;
either way it lets REST requests in flight finish and exits within its bound."""

from __future__ import annotations

import time

from tests.support import wait_until
from tests.test_e2e_twistd import TwistdTestCase


class ShutdownTests(TwistdTestCase):
    async def test_sigterm_closes_without_goodbye_and_lets_requests_finish(self) -> None:
        process = await self.start("--app", "tests.shutdown_app:app", "--shutdown-timeout", "5")
        first, second = await self.connect("json"), await self.connect("cbor")
        response = self.http().get(f"{self.base_url}/slow")
        await wait_until(lambda: "slow request started" in process.output, timeout=10.0)  # in flight

        websockets = [first._transport, second._transport]  # the clients' WebSocket connections
        started = time.monotonic()
        process.transport.signalProcess("TERM")
        # no GOODBYE: the session ends with its transport, as when a connection is lost, so clients reconnect
        self.assertEqual((await first.left).reason, "wamp.close.transport_lost")
        self.assertEqual((await second.left).reason, "wamp.close.transport_lost")
        await first.disconnected
        await second.disconnected
        self.assertEqual([websocket.remoteCloseCode for websocket in websockets], [1001, 1001])
        answered = await response
        self.assertEqual((answered.code, await answered.content()), (200, b"done"))
        await wait_until(lambda: not process.running, timeout=10.0)
        self.assertLess(time.monotonic() - started, 6.0, process.output)
        self.assertIn("shutting down: closing 2 connection(s), 1001 going away", process.output)
        self.assertIn("Main loop terminated.", process.output)

    async def test_sigterm_with_shutdown_goodbye_says_goodbye_and_lets_requests_finish(self) -> None:
        process = await self.start(
            "--app", "tests.shutdown_app:app", "--shutdown-timeout", "5", "--shutdown-goodbye"
        )
        first, second = await self.connect("json"), await self.connect("cbor")
        response = self.http().get(f"{self.base_url}/slow")
        await wait_until(lambda: "slow request started" in process.output, timeout=10.0)  # in flight

        started = time.monotonic()
        process.transport.signalProcess("TERM")
        details = await first.left
        self.assertEqual(details.reason, "wamp.close.system_shutdown")
        self.assertEqual((await second.left).reason, "wamp.close.system_shutdown")
        answered = await response
        self.assertEqual((answered.code, await answered.content()), (200, b"done"))
        await wait_until(lambda: not process.running, timeout=10.0)
        self.assertLess(time.monotonic() - started, 6.0, process.output)
        self.assertIn("shutting down: GOODBYE to 2 connection(s)", process.output)
        self.assertIn("Main loop terminated.", process.output)
        await first.disconnected
        await second.disconnected
