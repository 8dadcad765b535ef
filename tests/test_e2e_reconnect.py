"""End-to-end: rolling restarts keep clients. A real autobahn-js client in Node (``tests/node/reconnect.js``:
a ``Connection`` with auto-reconnect, subscribing in ``onopen`` and doing nothing else to come back) stays
with the server across a SIGTERM and a restart of ``twistd`` on the same port, and across the restart of one
worker of ``--workers 2``, and gets the next broadcast; with ``--shutdown-goodbye`` it is told GOODBYE and
stays away."""

from __future__ import annotations

import json
import os
import signal
from typing import Any

from autobahn.twisted.component import Component
from twisted.internet import defer, reactor
from twisted.internet.protocol import ProcessProtocol

from tests.autobahn_node import script_command, skip_without_node
from tests.support import sleep, wait_until
from tests.test_e2e_twistd import TwistdTestCase
from tests.test_e2e_workers import WorkersTestCase

APP = "tests.reconnect_app:app"
TIMEOUT = 15.0


class NodeClient(ProcessProtocol):
    """``node tests/node/reconnect.js``: the JSON lines it printed so far; a Deferred firing at its end."""

    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []
        self.errors: list[bytes] = []
        self.ended: defer.Deferred[None] = defer.Deferred()
        self._rest = b""

    def outReceived(self, data: bytes) -> None:
        *lines, self._rest = (self._rest + data).split(b"\n")
        self.lines.extend(json.loads(line) for line in lines if line.strip())

    def errReceived(self, data: bytes) -> None:
        self.errors.append(data)

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(None)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line["kind"] == kind]

    def events(self) -> list[Any]:
        return [line["args"][0] for line in self.of("event")]

    def __repr__(self) -> str:
        stderr = b"".join(self.errors).decode("utf-8", "replace")
        return f"<autobahn-js client: {self.lines!r}\nstderr: {stderr[-2000:]}>"


class ReconnectTestCase(TwistdTestCase):
    def client(self, *arguments: str) -> NodeClient:
        """An autobahn-js client subscribing to ``news`` at this server, stopped (by pid) at cleanup."""
        executable, argv, environment = script_command("reconnect.js", self.ws_url, "news", *arguments)
        client = NodeClient()
        reactor.spawnProcess(client, executable, argv, env=environment)

        async def stop() -> None:
            if not client.ended.called:
                client.transport.signalProcess("KILL")
            await client.ended

        self.addCleanup(stop)
        return client

    async def subscribed(self, client: NodeClient, times: int = 1) -> None:
        """Wait until ``client`` has subscribed ``times`` times (once per session)."""
        try:
            await wait_until(lambda: len(client.of("subscribed")) >= times, timeout=TIMEOUT)
        except AssertionError:
            self.fail(f"not subscribed {times} time(s): {client!r}")

    async def post(self, text: str) -> None:
        """Broadcast ``{"text": text}`` on ``news`` (through a REST request, as an app would)."""
        response = await self.http().post(f"{self.base_url}/news", json={"text": text})
        self.assertEqual((response.code, await response.content()), (200, b"sent"))

    async def received(self, clients: list[NodeClient], *texts: str) -> None:
        """Wait until every client got the broadcasts of ``texts``, in order (and nothing else)."""
        expected = [{"text": text} for text in texts]
        try:
            await wait_until(lambda: all(client.events() == expected for client in clients), timeout=TIMEOUT)
        except AssertionError:
            self.fail(f"expected {expected} on every client: {clients!r}")


class RestartTests(ReconnectTestCase):
    def setUp(self) -> None:
        skip_without_node(self)

    async def test_sigterm_and_restart_keep_an_autobahn_js_client(self) -> None:
        process = await self.start("--app", APP)
        client = self.client()
        await self.subscribed(client)
        await self.post("before")
        await self.received([client], "before")

        await self.terminate(process)  # SIGTERM by pid: it closes the WebSocket (1001), says no GOODBYE
        self.assertIn("closing 1 connection(s), 1001 going away", process.output)
        await wait_until(lambda: client.of("close"), timeout=TIMEOUT)
        # (autobahn-js on Node calls any close code but 1000 "lost"; a browser's, "closed")
        self.assertEqual(
            client.of("close")[0], {"kind": "close", "reason": "lost", "goodbye": None, "will_retry": True}
        )

        await self.start("--app", APP, port=self.port)
        await self.subscribed(client, 2)  # back by itself, subscribed again by its own onopen
        await self.post("after")
        await self.received([client], "before", "after")
        self.assertEqual(len(client.of("open")), 2)
        self.assertTrue(all(close["will_retry"] and close["goodbye"] is None for close in client.of("close")))

    async def test_with_shutdown_goodbye_the_client_says_goodbye_and_stays_away(self) -> None:
        process = await self.start("--app", APP, "--shutdown-goodbye")
        client = self.client()
        await self.subscribed(client)

        await self.terminate(process)
        self.assertIn("GOODBYE to 1 connection(s)", process.output)
        await wait_until(lambda: client.of("close"), timeout=TIMEOUT)
        [close] = client.of("close")
        self.assertEqual(close["goodbye"], "wamp.close.system_shutdown")
        self.assertFalse(close["will_retry"])

        await self.start("--app", APP, "--shutdown-goodbye", port=self.port)  # the server is back...
        await sleep(1.0)  # ...and the client, which was retrying every 0.1 to 0.3 s, is not
        self.assertEqual((len(client.of("open")), len(client.of("close"))), (1, 1), client)


class ComponentRestartTests(ReconnectTestCase):
    async def test_sigterm_and_restart_keep_an_autobahn_python_component(self) -> None:
        process = await self.start("--app", APP)
        transport = {
            "url": self.ws_url,
            "max_retries": -1,
            "initial_retry_delay": 0.1,
            "max_retry_delay": 0.3,
        }
        component = Component(transports=[transport], realm="realm1")
        joined: list[int] = []
        events: list[Any] = []

        @component.on_join
        async def subscribe(session: Any, details: Any) -> None:
            await session.subscribe(events.append, "news")
            joined.append(details.session)

        done = component.start(reactor)

        async def stop() -> None:
            if not done.called:
                await component.stop()
                await done

        self.addCleanup(stop)
        await wait_until(lambda: len(joined) == 1, timeout=TIMEOUT)
        await self.terminate(process)
        await self.start("--app", APP, port=self.port)
        await wait_until(lambda: len(joined) == 2, timeout=TIMEOUT)  # back by itself
        await self.post("after")
        await wait_until(lambda: events == [{"text": "after"}], timeout=TIMEOUT)
        await stop()  # before the server (started after the component) stops


class WorkerRestartTests(ReconnectTestCase, WorkersTestCase):
    def setUp(self) -> None:
        skip_without_node(self)
        super().setUp()  # a redis-server of the test's own

    async def test_a_restarted_workers_clients_move_to_the_other_worker(self) -> None:
        process = await self.start("--app", APP, "--redis", self.redis_server.url, "--workers", "2")
        await wait_until(lambda: "worker 2: accepting connections" in process.output, timeout=30)
        await wait_until(lambda: self.subscribed_nodes() == 2, timeout=10)
        supervisor, worker = process.transport.pid, self.worker_pids(process)[2]

        # clients until some are on each process (Linux spreads connections over the workers' sockets)
        clients: list[NodeClient] = []
        while len(clients) < 20 and not {supervisor, worker} <= {c.of("open")[0]["answer"] for c in clients}:
            client = self.client("test.pid")
            clients.append(client)
            await self.subscribed(client)
        moving = [client for client in clients if client.of("open")[0]["answer"] == worker]
        staying = [client for client in clients if client not in moving]
        self.assertTrue(moving and staying, clients)

        os.kill(worker, signal.SIGTERM)
        # the worker stops accepting and says so: twistd accepts on its socket from then on
        await wait_until(lambda: "worker 2: no longer accepting connections" in process.output, timeout=10)
        for client in moving:
            await self.subscribed(client, 2)
            self.assertEqual(client.of("open")[1]["answer"], supervisor)  # on the other worker
            self.assertEqual(client.of("close")[0]["goodbye"], None)
        await wait_until(
            lambda: f"worker 2 (pid {worker}) exited with status 0" in process.output, timeout=10
        )
        await self.post("after the restart")
        await self.received(clients, "after the restart")
        self.assertTrue(all(len(client.of("open")) == 1 for client in staying))
        # the restarted worker serves again
        await wait_until(lambda: process.output.count("worker 2: accepting connections") == 2, timeout=30)
