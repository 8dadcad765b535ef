"""A small app with presence, for end-to-end tests (``--app tests.presence_app:app``): an open router whose
``rooms.{name}`` topics broadcast who joined and who left, once per change in the whole cluster."""

from __future__ import annotations

from sandstone import Member, Sandstone, Topic

app = Sandstone(anonymous=True, open_uris=True)


@app.topic("rooms.{name}")
class Room(Topic):
    def on_join(self, member: Member) -> None:
        self.broadcast({"joined": member.session, "authid": member.authid})

    def on_leave(self, member: Member) -> None:
        self.broadcast({"left": member.session, "authid": member.authid})
