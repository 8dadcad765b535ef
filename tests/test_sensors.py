"""Tests for L{examples.sensors}: readings, procedures and the simulated sensors, in memory (its page:
test_e2e_pages.py, test_browser.py)."""

from __future__ import annotations

from typing import Any

from autobahn.wamp.exception import ApplicationError
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from examples import sensors
from sandstone.testing import TestClient, TestSession


class SensorsTestCase(SynchronousTestCase):
    """The example's module-level app, with its readings cleared and every test session closed after."""

    def setUp(self) -> None:
        sensors._rooms.clear()
        self.addCleanup(sensors._rooms.clear)
        self.client = TestClient(sensors.app)
        self.session = self.connect()

    def connect(self) -> TestSession:
        session = self.client.connect()
        self.addCleanup(session.disconnect)
        return session

    def call(self, procedure: str, *args: Any) -> Any:
        return self.successResultOf(self.session.call(procedure, *args))

    def call_error(self, procedure: str, *args: Any) -> ApplicationError:
        failure = self.failureResultOf(self.session.call(procedure, *args), ApplicationError)
        return failure.value  # type: ignore[no-any-return]


class ProcedureTests(SensorsTestCase):
    def test_report_counts_the_rooms_readings(self) -> None:
        self.assertEqual([self.call("sensors.report", 1, 20.5) for _ in range(3)], [1, 2, 3])
        self.assertEqual(self.call("sensors.report", 2, 18), 1)

    def test_average_is_the_mean_of_every_reading(self) -> None:
        for celsius in (19, 20, 24):
            self.call("sensors.report", 7, celsius)
        self.assertEqual(self.call("sensors.average", 7), 21.0)

    def test_average_of_a_room_without_readings_fails(self) -> None:
        error = self.call_error("sensors.average", 9)
        self.assertEqual(
            (error.error, error.args), ("sensors.error.no_readings", ("no readings for room 9",))
        )

    def test_report_refuses_what_is_not_a_reading(self) -> None:
        for args in (("1", 20.0), (1, "warm"), (True, 20.0)):
            self.assertEqual(self.call_error("sensors.report", *args).error, "sensors.error.invalid_reading")
        self.assertEqual(self.call("sensors.recent"), [])

    def test_recent_gives_each_rooms_readings_oldest_first(self) -> None:
        self.call("sensors.report", 2, 21.0)
        self.call("sensors.report", 1, 19.0)
        self.call("sensors.report", 1, 19.5)
        recent = self.call("sensors.recent")
        self.assertEqual(
            [(room["room"], [c for _, c in room["readings"]]) for room in recent],
            [(1, [19.0, 19.5]), (2, [21.0])],
        )
        at = [at for _, readings in [(r["room"], r["readings"]) for r in recent] for at, _ in readings]
        self.assertTrue(all(isinstance(value, float) for value in at))

    def test_recent_keeps_the_last_readings_only(self) -> None:
        for n in range(sensors.RECENT + 5):
            sensors.record(1, float(n))  # what sensors.report does, without its rate limit
        [room] = self.call("sensors.recent")
        self.assertEqual(len(room["readings"]), sensors.RECENT)
        self.assertEqual(room["readings"][0][1], 5.0)
        self.assertEqual(
            self.call("sensors.average", 1), sum(range(sensors.RECENT + 5)) / (sensors.RECENT + 5)
        )


class TopicTests(SensorsTestCase):
    def test_room_subscribers_get_each_reading(self) -> None:
        kitchen = self.connect().subscribe("sensors.3.temperature")
        self.call("sensors.report", 3, 22.5)
        self.call("sensors.report", 4, 10.0)
        [reading] = kitchen.payloads
        self.assertEqual((reading["room"], reading["celsius"]), (3, 22.5))

    def test_a_wildcard_subscription_gets_every_room(self) -> None:
        every_room = self.connect().subscribe("sensors..temperature", match="wildcard")
        self.call("sensors.report", 1, 19.0)
        self.call("sensors.report", 2, 21.0)
        self.assertEqual([(p["room"], p["celsius"]) for p in every_room.payloads], [(1, 19.0), (2, 21.0)])
        self.assertEqual(
            [event.topic for event in every_room.events], ["sensors.1.temperature", "sensors.2.temperature"]
        )

    def test_a_new_subscriber_gets_the_last_reading(self) -> None:
        self.call("sensors.report", 5, 18.0)
        self.call("sensors.report", 5, 18.5)
        [reading] = self.connect().subscribe("sensors.5.temperature").payloads
        self.assertEqual((reading["room"], reading["celsius"]), (5, 18.5))


class SimulatedSensorsTests(SensorsTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.clock = Clock()
        self.simulation = sensors.SimulatedSensors({1: 19.5, 2: 23.0}, interval=1.0, clock=self.clock, seed=7)
        self.addCleanup(self.simulation.stop)

    def counts(self) -> dict[int, int]:
        return {room["room"]: len(room["readings"]) for room in self.call("sensors.recent")}

    def test_reports_every_room_at_once_then_every_interval(self) -> None:
        every_room = self.connect().subscribe("sensors..temperature", match="wildcard")
        self.simulation.start()
        self.assertEqual(self.counts(), {1: 1, 2: 1})
        self.clock.advance(1.0)
        self.clock.advance(1.0)
        self.assertEqual(self.counts(), {1: 3, 2: 3})
        self.assertEqual(len(every_room.events), 6)

    def test_starting_twice_runs_one_loop(self) -> None:
        self.simulation.start()
        self.simulation.start()
        self.clock.advance(1.0)
        self.assertEqual(self.counts(), {1: 2, 2: 2})

    def test_stop_stops_the_readings(self) -> None:
        self.simulation.start()
        self.simulation.stop()
        self.clock.advance(10.0)
        self.assertEqual(self.counts(), {1: 1, 2: 1})
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_readings_stay_near_each_rooms_usual_temperature(self) -> None:
        self.simulation.start()
        self.clock.pump([1.0] * 1000)
        for room, usual in ((1, 19.5), (2, 23.0)):
            readings = [celsius for _, celsius in sensors._rooms[room].recent]
            self.assertTrue(all(abs(celsius - usual) < 3 for celsius in readings), readings)
            self.assertGreater(max(readings) - min(readings), 0.1)  # they do move


class ImportTests(SynchronousTestCase):
    def test_importing_the_example_starts_no_timer(self) -> None:
        self.assertFalse(sensors.simulation.running)
