"""twistd plugin: ``twistd sandstone --app MODULE:ATTRIBUTE``.

No ``__init__.py`` may exist in ``twisted/`` or ``twisted/plugins/`` of this
project: Twisted finds this file by scanning every ``twisted/plugins``
directory on ``sys.path``. ServiceMaker imports ``sandstone._tap`` only when
the subcommand is used, so ``twistd --help`` stays cheap.
"""

from twisted.application.service import ServiceMaker

sandstone = ServiceMaker(
    "sandstone",
    "sandstone._tap",
    "Klein REST routes and a WAMP router in one reactor",
    "sandstone",
)
