"""End-to-end: a subscriber that stops reading is dropped once its outgoing buffer is over the limit,
while the server's memory stays bounded and a normal subscriber still gets every event."""

from __future__ import annotations

import gc
from typing import Any

from autobahn.wamp.types import PublishOptions
from twisted.internet import defer

from sandstone import Sandstone
from sandstone._limits import Limits
from tests.support import ServerTestCase, wait_until

MESSAGE = 64 * 1024
COUNT = 800  # 50 MiB in all
WINDOW = 8  # acknowledged publishes in flight: the publisher does not buffer the flood itself


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


class SlowConsumerTests(ServerTestCase):
    timeout = 60

    async def test_slow_consumer_is_dropped_and_memory_stays_bounded(self) -> None:
        app = Sandstone(
            anonymous=True,
            open_uris=True,
            limits=Limits(max_outgoing_buffer=4 * 1024 * 1024, publish_rate=0),
        )
        self.serve(app)

        slow = await self.connect("msgpack")
        await slow.subscribe(lambda *args: None, "flood")
        slow_id = slow._session_id
        slow._transport.transport.pauseProducing()  # stop reading: the kernel buffers fill up
        self.addCleanup(slow._transport.transport.resumeProducing)

        normal = await self.connect("msgpack")
        seen: list[int] = []

        def on_event(number: int, payload: bytes) -> None:
            if not seen or seen[-1] == number - 1:
                seen.append(number)  # numbers only: the test must not hold the flood itself
            else:
                seen.append(-number)

        await normal.subscribe(on_event, "flood")
        publisher = await self.connect("msgpack")

        gc.collect()
        before = rss_bytes()
        peak = before
        payload = b"x" * MESSAGE
        acknowledge = PublishOptions(acknowledge=True)
        in_flight: list[defer.Deferred[Any]] = []
        for number in range(COUNT):
            in_flight.append(publisher.publish("flood", number, payload, options=acknowledge))
            if len(in_flight) >= WINDOW:
                await defer.gatherResults(in_flight)
                in_flight = []
                peak = max(peak, rss_bytes())
        await defer.gatherResults(in_flight)
        await wait_until(lambda: len(seen) == COUNT, timeout=20)
        peak = max(peak, rss_bytes())

        self.assertEqual(app.router.stats["slow_consumers_dropped"], 1)
        self.assertNotIn(slow_id, app.router.sessions)
        self.assertEqual(seen, list(range(COUNT)))
        self.assertLess(peak - before, 30 * 1024 * 1024, f"RSS grew by {(peak - before) / 2**20:.1f} MiB")
