"""The app `twistd sandstone` serves without ``--app``: a plain open WAMP router."""

from ._app import Sandstone


def make_default_app() -> Sandstone:
    """An app with no topics letting anonymous sessions use every valid URI (like a development Crossbar)."""
    return Sandstone(open_uris=True, anonymous=True)
