"""What ``twistd sandstone`` and ``sandstone run`` log, and where: info and above by default, debug too with
``--verbose``, to wherever twistd would log (stdout with ``-n``, ``twistd.log``, ``--logfile``, ``--syslog``).

twistd builds its log observer after the plugin's ``makeService``, and uses the application's
``ILogObserver`` component instead when there is one (the hook twistd documents for ``.tac`` files). The root
service sets that component when it joins the application: twistd's own observer behind a level filter. A
``twistd --logger`` given on the command line still wins.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.logger import (
    FilteringLogObserver,
    ILogFilterPredicate,
    ILogObserver,
    LegacyLogObserverWrapper,
    LogEvent,
    LogLevel,
    PredicateResult,
)
from twisted.python.components import Componentized
from zope.interface import implementer

from ._twisted_internals import twistd_observer

__all__ = ["daemon_notice", "level_filter", "twistd_log_observer", "use_log_observer"]


def level_filter(observer: ILogObserver, verbose: bool = False) -> ILogObserver:
    """``observer``, given only the events at info level and above (debug too if ``verbose``)."""
    return FilteringLogObserver(observer, [_AtLeast(LogLevel.debug if verbose else LogLevel.info)])


@implementer(ILogFilterPredicate)
class _AtLeast:
    """Drops the events below a level. Not ``LogLevelFilterPredicate``: it also drops the events without a
    level or namespace, which may be warnings from code that writes to the log publisher directly."""

    def __init__(self, level: LogLevel) -> None:
        self.level = level
        # The levels dropped, as a set: comparing LogLevel constants is a Python call each, for every event
        # (the access log writes one per REST request).
        self.below = frozenset(other for other in LogLevel.iterconstants() if other < level)

    def __call__(self, event: LogEvent) -> PredicateResult:
        result: PredicateResult = (
            PredicateResult.no if event.get("log_level") in self.below else PredicateResult.maybe
        )
        return result


def twistd_log_observer(config: Any) -> ILogObserver | None:
    """The observer twistd would log to for its parsed options ``config``, made as twistd makes it; ``None``
    when ``config`` names its own (``--logger``)."""
    if config.get("logger"):
        return None
    # twistd's runner picks the logger class (syslog, log file, stdout): its observer without starting it.
    observer = twistd_observer(config)
    if ILogObserver.providedBy(observer):
        return observer
    return LegacyLogObserverWrapper(observer)  # the syslog observer is a twisted.python.log one


def use_log_observer(application: Componentized, observer: ILogObserver) -> None:
    """Have twistd log to ``observer`` for ``application``, unless the application has an observer already."""
    if application.getComponent(ILogObserver) is None:
        application.setComponent(ILogObserver, observer)


def daemon_notice(config: Any) -> str | None:
    """The line to print before twistd goes to the background (no ``-n``): where its log and pid file are,
    and how to run in the foreground; ``None`` with ``-n``."""
    if config.get("nodaemon"):
        return None
    if config.get("syslog"):
        log = "logging to syslog"
    else:
        log = f"log in {os.path.abspath(config.get('logfile') or 'twistd.log')}"
    pidfile = config.get("pidfile")
    pid = f"pid in {os.path.abspath(pidfile)}" if pidfile else "no pid file"
    return (
        f"twistd sandstone: running in the background ({log}, {pid}); 'sandstone run' or "
        "'twistd -n sandstone' runs in the foreground"
    )
