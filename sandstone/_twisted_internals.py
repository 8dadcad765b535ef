"""The private details of Twisted that sandstone relies on for speed, in one place.

- ``twisted.internet.tcp.Server`` (through ``abstract.FileDescriptor``) keeps the bytes it was given but did
  not send yet in ``dataBuffer`` (from ``offset`` on) and in ``_tempDataLen`` bytes of pending chunks, sends
  with ``writeSomeData`` and says whether it can with ``connected`` and ``disconnecting``. Nothing public
  says whether a transport holds unsent bytes, or sends now instead of after the next poll.
- ``twisted.web.http.Request._parsePOSTFormSubmission``: what the constructor's ``parsePOSTFormSubmission``
  sets, read by ``requestReceived``. The HTTP channel constructs a request before its headers arrive, so a
  request that turns out not to carry a form sets it afterwards (``skip_form_parsing``).

- ``twisted.scripts.twistd._SomeApplicationRunner.loggerFactory(config)._getLogObserver()``: the observer
  twistd logs to for its options (stdout, log file, syslog), made without starting it, so that sandstone can
  filter it by level (``twistd_observer``; tested in tests/test_startup_logs.py's ``TwistdObserverTests``).

tests/test_twisted_internals.py fails if a Twisted release changes these; setup.py bounds Twisted to the
releases tested.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import tcp
from twisted.web.http import Request

TCPServer = tcp.Server
"""The transport class whose details ``send_now`` uses (an accepted TCP connection, not TLS)."""


def send_now(transport: Any, data: bytes) -> None:
    """Hand ``data`` to the kernel now if nothing waits before it in the transport, else queue it there.

    Only a ``tcp.Server`` is written to directly; any other transport gets ``transport.write(data)``.
    """
    if type(transport) is TCPServer:
        if not transport._tempDataLen and not transport.dataBuffer and transport.connected:
            if not transport.disconnecting:
                sent = transport.writeSomeData(data)
                if sent.__class__ is int:  # else the connection is lost: the reactor finds out on its own
                    if sent == len(data):
                        return
                    data = data[sent:]
    transport.write(data)


def buffered_bytes(transport: Any) -> int | None:
    """Bytes a transport holds that the kernel did not take yet (through TLS wrappers), if known."""
    for _ in range(4):
        if transport is None:
            return None
        data = getattr(transport, "dataBuffer", None)
        temp = getattr(transport, "_tempDataLen", None)
        if isinstance(data, bytes) and isinstance(temp, int):
            return len(data) - int(getattr(transport, "offset", 0)) + temp
        transport = getattr(transport, "transport", None)
    return None


def skip_form_parsing(request: Request) -> None:
    """Have ``request`` leave a POST body unparsed (no form fields in ``request.args``), as if it had been
    constructed with ``parsePOSTFormSubmission=False``; called before its ``requestReceived``."""
    request._parsePOSTFormSubmission = False


def twistd_observer(config: Any) -> Any:
    """The log observer twistd's application runner would make for its parsed options ``config`` (a
    ``twisted.logger`` observer, or a legacy ``twisted.python.log`` one for syslog), not started."""
    from twisted.scripts.twistd import _SomeApplicationRunner  # type: ignore[attr-defined]

    return _SomeApplicationRunner.loggerFactory(config)._getLogObserver()
