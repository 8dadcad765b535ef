"""A smaller example: a typed topic argument and app procedures.

Rooms are numbered; ``sensors.{room}.temperature`` only matches numeric rooms, and the topic sees
``self.args["room"]`` as an ``int``. Clients report readings by calling ``sensors.report`` and read
the average with ``sensors.average``::

    twistd -n sandstone --app examples.sensors:app --listen tcp:8080
"""

from __future__ import annotations

from autobahn.wamp.exception import ApplicationError

from sandstone import Sandstone, Session, Topic, on_event

app = Sandstone(anonymous=True)

_readings: dict[int, list[float]] = {}


@app.topic("sensors.{room:int}.temperature")
class RoomTemperature(Topic):
    """Subscribers of a room get its last reading on arrival, then every new one."""

    def on_subscribe(self, session: Session) -> None:
        readings = _readings.get(self.args["room"])
        if readings:
            self.send(session, {"room": self.args["room"], "celsius": readings[-1]})

    @on_event("reading.reported")
    def reading_reported(self, event: tuple[int, float]) -> None:
        room, celsius = event
        if room == self.args["room"]:
            self.broadcast({"room": room, "celsius": celsius})


@app.procedure("sensors.report")
async def report(room: int, celsius: float) -> int:
    """Record a reading, push it to the room's subscribers; returns the room's reading count."""
    if not isinstance(room, int) or not isinstance(celsius, int | float):
        raise ApplicationError("sensors.error.invalid_reading", "room must be an int and celsius a number")
    _readings.setdefault(room, []).append(float(celsius))
    await app.dispatch("reading.reported", (room, float(celsius)))
    return len(_readings[room])


@app.procedure("sensors.average")
def average(room: int) -> float:
    """The mean of a room's readings."""
    readings = _readings.get(room)
    if not readings:
        raise ApplicationError("sensors.error.no_readings", f"no readings for room {room}")
    return sum(readings) / len(readings)
