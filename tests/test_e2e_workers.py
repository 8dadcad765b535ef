"""End-to-end: ``twistd -n sandstone --workers 2 --redis URL``: two processes on one port, one server."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from autobahn.wamp.types import PublishOptions

from sandstone._envelope import channel_names
from tests.support import Client, sleep, wait_until
from tests.test_e2e_cluster_twistd import TwistdClusterTestCase
from tests.test_e2e_twistd import Twistd

CHANNELS = channel_names("sandstone", "realm1")
STARTED = re.compile(r"worker (\d+) started \(pid (\d+)\)")
NODE = re.compile(r"(?:worker (\d+): )?cluster bus node ([0-9a-f]+) connecting")


def alive(pid: int) -> bool:
    """Is process ``pid`` running (a zombie is not)?"""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:  # no /proc
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


class WorkersTestCase(TwistdClusterTestCase):
    async def start_workers(self) -> Twistd:
        """``twistd -n sandstone --app examples.blog:app --redis URL --workers 2``, once both workers accept
        and are on the bus."""
        process = await self.start(
            "--app", "examples.blog:app", "--redis", self.redis_server.url, "--workers", "2"
        )
        await wait_until(lambda: "worker 2: accepting connections" in process.output, timeout=30)
        await wait_until(lambda: self.subscribed_nodes() == 2, timeout=10)
        return process

    def subscribed_nodes(self) -> int:
        return int(self.redis.pubsub_numsub(CHANNELS.events)[0][1])

    def worker_pids(self, process: Twistd) -> dict[int, int]:
        """The pid of each worker process (2..N), the last one started."""
        return {int(number): int(pid) for number, pid in STARTED.findall(process.output)}

    async def spread_clients(
        self, connected: Sequence[Client] = (), minimum: int = 6, maximum: int = 40
    ) -> list[tuple[Client, frozenset[int]]]:
        """Connect clients until some landed on each worker: [(client, session ids of its node)] for
        those and the ``connected`` ones."""
        clients: list[Client] = list(connected)
        while len(clients) < maximum:
            clients.append(await self.connect("json" if len(clients) % 2 else "msgpack"))
            if len(clients) >= minimum and len(await self.nodes_of(clients)) == 2:
                break
        nodes = await self.nodes_of(clients)
        return [(client, next(node for node in nodes if client._session_id in node)) for client in clients]

    async def nodes_of(self, clients: list[Client]) -> set[frozenset[int]]:
        """The nodes serving ``clients``, each as the ids of those clients in its sessions hash in Redis
        (``wamp.session.list`` answers for the whole cluster)."""
        ids = {client._session_id for client in clients}

        def nodes() -> set[frozenset[int]]:
            found = set()
            for key in self.redis.keys(f"{CHANNELS.base}:sessions:*"):
                node = frozenset(int(session) for session in self.redis.hkeys(key)) & ids
                if node:
                    found.add(node)
            return found

        await wait_until(lambda: set().union(*nodes()) == ids)  # a node writes its sessions a turn later
        found = nodes()
        self.assertEqual(sum(len(node) for node in found), len(ids))  # disjoint
        return found

    async def check_post_and_chat(self, clients: list[tuple[Client, frozenset[int]]], title: str) -> None:
        """A POST reaches every ``articles`` subscriber once; a chat message every other subscriber, on
        both workers."""
        for client, _node in clients:
            client.received.clear()
            await client.record("articles")
            await client.record("chat/general")
        response = await self.http().post(f"{self.base_url}/api/articles", json={"title": title})
        self.assertEqual(response.code, 201)
        await wait_until(lambda: all(client.received["articles"] for client, _ in clients))

        publisher, publisher_node = clients[0]
        others = [client for client, _ in clients[1:]]
        self.assertTrue(any(node != publisher_node for _, node in clients))  # some on the other worker
        await publisher.publish("chat/general", {"text": title}, options=PublishOptions(acknowledge=True))
        await wait_until(lambda: all(len(client.received["chat/general"]) == 2 for client in others))
        await sleep(0.3)
        publications = set()
        for client, _ in clients:
            [event] = client.received["articles"]
            self.assertEqual(event.payload["message"], f"An article has just been published: {title}")
            publications.add(event.details.publication)
        self.assertEqual(len(publications), 1)
        self.assertEqual([e.payload for e in publisher.received["chat/general"]], ["Welcome on general"])
        for client in others:
            self.assertEqual(
                [e.payload for e in client.received["chat/general"]], ["Welcome on general", {"text": title}]
            )


class WorkersTests(WorkersTestCase):
    async def test_two_workers_serve_one_port_as_one_server(self) -> None:
        process = await self.start_workers()
        clients = await self.spread_clients()
        self.assertEqual(len({node for _, node in clients}), 2)
        await self.check_post_and_chat(clients, "Unicorns")

        # each worker is a node of its own, and its log is in the supervisor's, prefixed with its number
        nodes = dict(NODE.findall(process.output))
        self.assertEqual(set(nodes), {"", "2"})
        self.assertNotEqual(nodes[""], nodes["2"])
        self.assertIn("worker 2: sandstone serving examples.blog:app", process.output)
        await self.terminate(process)

    async def test_killed_worker_is_restarted_and_sigterm_stops_every_worker(self) -> None:
        process = await self.start_workers()
        [first_pid] = self.worker_pids(process).values()
        clients = await self.spread_clients()

        os.kill(first_pid, 9)
        await wait_until(lambda: f"worker 2 (pid {first_pid}) was killed by SIGKILL" in process.output)
        await wait_until(lambda: self.worker_pids(process)[2] != first_pid, timeout=10)
        await wait_until(lambda: process.output.count("worker 2: accepting connections") == 2, timeout=30)
        await wait_until(lambda: self.subscribed_nodes() == 2, timeout=10)
        self.assertFalse(alive(first_pid))
        lost = [client for client, _ in clients if client.disconnected.called]
        self.assertTrue(lost)  # the clients of the killed worker lost their connection...
        self.assertLess(len(lost), len(clients))  # ...the others did not

        # service continues: new clients land on both workers (the restarted one too), as one server
        survivors = [client for client, _ in clients if not client.disconnected.called]
        await self.check_post_and_chat(await self.spread_clients(survivors, len(survivors) + 4), "Dragons")

        pids = list(self.worker_pids(process).values())
        self.assertTrue(all(alive(pid) for pid in pids))
        await self.terminate(process)
        self.assertFalse([pid for pid in pids if alive(pid)])
        self.assertIn(f"worker 2 (pid {pids[0]}) exited with status 0", process.output)
        self.assertIn("worker 2: Received SIGTERM, shutting down", process.output)

    async def test_workers_stop_when_the_supervisor_is_killed(self) -> None:
        process = await self.start_workers()
        pids = list(self.worker_pids(process).values())
        process.transport.signalProcess("KILL")
        await process.ended
        await wait_until(lambda: not any(alive(pid) for pid in pids), timeout=15)
