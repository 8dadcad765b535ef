"""A smaller example: a typed topic argument, app procedures, and a live chart.

Rooms are numbered; ``sensors.{room}.temperature`` only matches numeric rooms, and the topic sees
``self.args["room"]`` as an ``int``. Clients report readings by calling ``sensors.report``, read the
average with ``sensors.average`` and each room's last readings with ``sensors.recent``::

    sandstone run --app examples.sensors:app --listen tcp:8080

then open http://localhost:8080/: a live chart of every room's temperature (``examples/static/sensors/``
plus ``examples/static/common/``, subscribed to ``sensors..temperature`` with a wildcard) and forms calling
the procedures. Serving the page starts three simulated thermometers (rooms 1 to 3, one reading a second
each, through the same code as ``sensors.report``), which run until the server stops.
"""

from __future__ import annotations

import random
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autobahn.wamp.exception import ApplicationError
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.web.iweb import IRequest
from twisted.web.static import File

from sandstone import Sandstone, Session, Topic

app = Sandstone(anonymous=True)

PAGE = Path(__file__).resolve().parent / "static" / "sensors"
COMMON = PAGE.parent / "common"  # what the sensors and blog pages share
RECENT = 300  # readings kept per room for sensors.recent


@dataclass
class Room:
    """What the app keeps of a room: its number of readings, their sum, and the last ones with their time."""

    count: int = 0
    total: float = 0.0
    recent: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=RECENT))


_rooms: dict[int, Room] = {}


def _reading(room: int, at: float, celsius: float) -> dict[str, Any]:
    return {"room": room, "celsius": celsius, "at": at}


def record(room: int, celsius: float) -> int:
    """Keep a reading and push it to the room's subscribers (exact and pattern subscriptions alike);
    returns the room's number of readings."""
    at = time.time()
    state = _rooms.setdefault(room, Room())
    state.count += 1
    state.total += celsius
    state.recent.append((at, celsius))
    app.broadcast(f"sensors.{room}.temperature", _reading(room, at, celsius))
    return state.count


@app.topic("sensors.{room:int}.temperature")
class RoomTemperature(Topic):
    """Subscribers of a room get its last reading on arrival, then every new one (from ``record``)."""

    def on_subscribe(self, session: Session) -> None:
        state = _rooms.get(self.args["room"])
        if state is not None and state.recent:
            self.send(session, _reading(self.args["room"], *state.recent[-1]))


@app.procedure("sensors.report")
def report(room: int, celsius: float) -> int:
    """Record a reading, push it to the room's subscribers; returns the room's reading count."""
    if not isinstance(room, int) or isinstance(room, bool) or not isinstance(celsius, int | float):
        raise ApplicationError("sensors.error.invalid_reading", "room must be an int and celsius a number")
    return record(room, float(celsius))


@app.procedure("sensors.average")
def average(room: int) -> float:
    """The mean of a room's readings."""
    state = _rooms.get(room)
    if state is None or not state.count:
        raise ApplicationError("sensors.error.no_readings", f"no readings for room {room}")
    return state.total / state.count


@app.procedure("sensors.recent")
def recent() -> list[dict[str, Any]]:
    """Each room's last readings, oldest first: ``[{"room": 1, "readings": [[at, celsius], ...]}, ...]``
    (``at`` in seconds since the epoch), for a chart to start with."""
    return [
        {"room": room, "readings": [[at, celsius] for at, celsius in state.recent]}
        for room, state in sorted(_rooms.items())
    ]


class SimulatedSensors:
    """Thermometers that report a reading for each of their rooms every ``interval`` seconds, as real ones
    calling ``sensors.report`` would: a slow random walk around each room's own temperature."""

    def __init__(
        self,
        rooms: dict[int, float],
        interval: float = 1.0,
        clock: IReactorTime | None = None,
        seed: int | None = None,
    ) -> None:
        self._normal = dict(rooms)
        self._celsius = dict(rooms)
        self._random = random.Random(seed)
        self._interval = interval
        self._loop = LoopingCall(self._report)
        if clock is not None:
            self._loop.clock = clock

    @property
    def running(self) -> bool:
        return self._loop.running

    def start(self) -> None:
        """Report now, then every ``interval`` seconds; nothing happens when already running."""
        if not self._loop.running:
            self._loop.start(self._interval, now=True)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def _report(self) -> None:
        for room, celsius in self._celsius.items():
            pull = (self._normal[room] - celsius) * 0.1  # wander, but not far from the room's usual
            self._celsius[room] = round(celsius + pull + self._random.gauss(0, 0.15), 2)
            record(room, self._celsius[room])


simulation = SimulatedSensors({1: 19.5, 2: 21.0, 3: 23.5})


@app.route("/", branch=True, methods=["GET", "HEAD"])
def page(request: IRequest) -> File:
    """The page (``index.html``, ``chart.js``, ``style.css`` from ``static/sensors/``). Serving it starts the
    simulated sensors, so that a person who opens it sees readings arrive (and a test importing this module
    starts no timer)."""
    simulation.start()
    return File(str(PAGE))


@app.route("/common/", branch=True, methods=["GET", "HEAD"])
def common(request: IRequest) -> File:
    """What the page shares with the blog page: ``base.css`` and ``live.js`` from ``static/common/``."""
    return File(str(COMMON))
