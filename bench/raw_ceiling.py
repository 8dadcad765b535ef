"""Raw ceiling for bench/runner.py: Autobahn/Twisted WebSocket fan-out of one pre-serialized frame, no router.

    python bench/raw_ceiling.py PORT

It speaks just enough WAMP v2 JSON for the runner's Node load generator (bench/load/wamp.js): HELLO gets a
WELCOME, SUBSCRIBE a SUBSCRIBED (every topic is the same single subscriber list), and a PUBLISH is turned
into one EVENT message, serialized once, framed once (``prepareMessage``) and written as is to every other
subscriber, then acknowledged with PUBLISHED when asked. No realms, no authorization, no URI matching, no
per-subscriber Python objects beyond the protocol instance: what is left is what any Autobahn/Twisted server
must pay to move the bytes, the upper bound for a router built on the same stack.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet import reactor
from twisted.python import log

HELLO, WELCOME, SUBSCRIBE, SUBSCRIBED, PUBLISH, PUBLISHED, EVENT, GOODBYE = 1, 2, 32, 33, 16, 17, 36, 6


class Raw(WebSocketServerProtocol):
    factory: RawFactory

    def onConnect(self, request: Any) -> str | None:
        return "wamp.2.json" if "wamp.2.json" in request.protocols else None

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        msg = json.loads(payload)
        kind = msg[0]
        factory = self.factory
        if kind == PUBLISH:
            factory.publications += 1
            event = [EVENT, 1, factory.publications, {}, *msg[4:]]
            frame = factory.prepareMessage(json.dumps(event, separators=(",", ":")).encode())
            for client in factory.subscribers:
                if client is not self:
                    client.sendPreparedMessage(frame)
            if msg[2].get("acknowledge"):
                self.sendMessage(b"[%d,%d,%d]" % (PUBLISHED, msg[1], factory.publications))
        elif kind == HELLO:
            factory.sessions += 1
            self.sendMessage(b'[%d,%d,{"roles":{"broker":{}}}]' % (WELCOME, factory.sessions))
        elif kind == SUBSCRIBE:
            factory.subscribers.append(self)
            self.sendMessage(b"[%d,%d,1]" % (SUBSCRIBED, msg[1]))
        elif kind == GOODBYE:
            self.sendMessage(b'[6,{},"wamp.close.goodbye_and_out"]')
            self.sendClose()

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if self in self.factory.subscribers:
            self.factory.subscribers.remove(self)


class RawFactory(WebSocketServerFactory):
    protocol = Raw

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.setProtocolOptions(perMessageCompressionAccept=lambda offers: None, autoPingInterval=0)
        self.subscribers: list[Raw] = []
        self.sessions = 0
        self.publications = 0


def main() -> None:
    port = int(sys.argv[1])
    if "-v" in sys.argv:
        log.startLogging(sys.stdout)
    reactor.listenTCP(port, RawFactory(f"ws://127.0.0.1:{port}"), backlog=1024, interface="127.0.0.1")
    print(f"raw ceiling listening on 127.0.0.1:{port}", flush=True)
    reactor.run()


if __name__ == "__main__":
    main()
