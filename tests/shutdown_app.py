"""A sandstone app for the shutdown test: ``GET /slow`` answers after one second."""

from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater

from sandstone import Sandstone

app = Sandstone(anonymous=True, open_uris=True)


@app.route("/slow")
def slow(request: Any) -> Any:
    return deferLater(reactor, 1.0, lambda: b"done")
