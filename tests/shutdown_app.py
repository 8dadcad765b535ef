"""A sandstone app for the shutdown test: ``GET /slow`` answers after one second."""

from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.logger import Logger

from sandstone import Sandstone

app = Sandstone(anonymous=True, open_uris=True)
log = Logger()


@app.route("/slow")
def slow(request: Any) -> Any:
    log.info("slow request started")  # the test waits for it before stopping the server
    return deferLater(reactor, 1.0, lambda: b"done")
