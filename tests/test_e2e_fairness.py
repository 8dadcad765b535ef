"""End to end, over TCP with autobahn-python clients: a session publishing as fast as its socket allows does
not hold up another one (``Limits.message_time_slice``). Timing figures are the bench's
(``bench/fairness.py``); here only that the second publisher's events keep arriving during the flood."""

from __future__ import annotations

from autobahn.wamp.types import PublishOptions
from twisted.internet import defer

from sandstone import Sandstone
from tests.support import ServerTestCase, sleep, wait_until

FLOOD = 10_000


class FloodTests(ServerTestCase):
    timeout = 60

    async def test_a_second_publisher_gets_through_while_one_floods(self) -> None:
        self.serve(Sandstone(anonymous=True, open_uris=True))
        readers = [await self.connect() for _ in range(2)]
        for reader in readers:
            await reader.record("flood")
        news_reader = await self.connect()
        await news_reader.record("news")
        flooder, publisher = await self.connect(), await self.connect()

        acked: list[object] = []
        flood = [
            flooder.publish("flood", n, options=PublishOptions(acknowledge=True)).addCallback(acked.append)
            for n in range(FLOOD)
        ]  # all sent at once: the server holds a backlog of them
        await wait_until(lambda: len(acked) > 0)
        during: list[int] = []
        for n in range(5):
            await publisher.publish("news", n, options=PublishOptions(acknowledge=True))
            await wait_until(lambda n=n: len(news_reader.received.get("news", [])) > n)
            during.append(len(acked))
            await sleep(0.01)

        self.assertEqual([e.payload for e in news_reader.received["news"]], list(range(5)))
        self.assertLess(during[0], FLOOD, "the flood was over before the second publisher got through")
        await defer.gatherResults(flood)
        await wait_until(lambda: all(len(r.received["flood"]) == FLOOD for r in readers), timeout=30)
        for reader in readers:
            self.assertEqual([e.payload for e in reader.received["flood"]], list(range(FLOOD)))
