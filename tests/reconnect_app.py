"""A sandstone app for the reconnect tests (``tests/test_e2e_reconnect.py``): ``POST /news`` broadcasts its
JSON body on the topic ``news`` to every subscriber of the cluster, and the procedure ``test.pid`` answers
with the process id of the node serving the caller (which ``--workers`` process a client is on)."""

from __future__ import annotations

import json
import os
from typing import Any

from sandstone import Sandstone

app = Sandstone(anonymous=True, open_uris=True)


@app.route("/news", methods=["POST"])
def post_news(request: Any) -> bytes:
    app.broadcast("news", json.loads(request.content.read()))
    return b"sent"


@app.procedure("test.pid")
def pid() -> int:
    return os.getpid()
