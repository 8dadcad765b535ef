"""sandstone: Klein REST routes and a WAMP v2 router with route-like topics, in one Twisted reactor."""

import txaio

txaio.use_twisted()  # before any autobahn import binds txaio's helpers to "no framework"

from ._app import Sandstone  # noqa: E402
from ._auth import CraDecoy, CraUser, Credentials, Identity  # noqa: E402
from ._cluster import Member  # noqa: E402
from ._cryptosign import (  # noqa: E402
    CryptosignDetails,
    CryptosignPrincipals,
    CryptosignPrincipalsError,
    CryptosignUser,
)
from ._dispatcher import DispatchResult, EventDispatcher, ListenerError, StopPropagation  # noqa: E402
from ._errors import WampError  # noqa: E402
from ._limits import Limits  # noqa: E402
from ._login import MemorySessionStore, SessionStore  # noqa: E402
from ._pattern import TopicPatternError  # noqa: E402
from ._publication import Publication  # noqa: E402
from ._session import Session  # noqa: E402
from ._topic import Topic, on_event  # noqa: E402

__all__ = [
    "CraDecoy",
    "CraUser",
    "Credentials",
    "CryptosignDetails",
    "CryptosignPrincipals",
    "CryptosignPrincipalsError",
    "CryptosignUser",
    "DispatchResult",
    "EventDispatcher",
    "Identity",
    "Limits",
    "ListenerError",
    "Member",
    "MemorySessionStore",
    "Publication",
    "Sandstone",
    "Session",
    "SessionStore",
    "StopPropagation",
    "Topic",
    "TopicPatternError",
    "WampError",
    "on_event",
]

__version__ = "0.1.0"
