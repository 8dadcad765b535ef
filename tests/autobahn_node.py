"""autobahn-js in Node for the end-to-end tests that drive a real autobahn-js client (the scripts in
``tests/node/``): the npm package ``autobahn`` (its Node build, with the WebSocket library ``ws``) at the
version the example pages pin for the browser (``autobahn-browser``), installed once into ``.cache/``
(git-ignored) with npm, as ``tests/browser.py`` installs the pages' file: into a staging directory renamed
when complete, so that concurrent test workers never see half a package.

``python -m tests.autobahn_node`` installs it (``.ci/run`` does, before the tests).
"""

from __future__ import annotations

import os
import shutil
import unittest
from pathlib import Path

from tests.npm import NpmFailed, npm_install
from tests.test_e2e_twistd import REPO

#: autobahn-js's version: the one the example pages pin (autobahn 26.x needs Node >= 22; Debian has Node 20).
VERSION = "22.11.1"
SCRIPTS = REPO / "tests" / "node"
INSTALL_HINT = "apt-get install -y npm (Debian's npm brings Node.js)"


class NodeMissing(Exception):
    """What this machine lacks to run autobahn-js in Node, with the command that installs it."""


def node_modules() -> Path:
    """The ``node_modules`` directory holding ``autobahn`` and its dependencies, installed with npm the first
    time; ``NodeMissing`` when node or npm is missing or npm fails."""
    if shutil.which("node") is None:
        raise NodeMissing(f"node is missing (autobahn-js runs in Node for these tests): {INSTALL_HINT}")
    try:
        return npm_install(f"autobahn-node-{VERSION}", "autobahn", VERSION, "ws")
    except NpmFailed as failed:
        raise NodeMissing(f"{failed}: {INSTALL_HINT}") from None


def script_command(script: str, *arguments: str) -> tuple[str, list[str], dict[str, str]]:
    """(executable, argv, environment) running ``tests/node/SCRIPT ARGUMENTS`` with autobahn-js importable."""
    modules = node_modules()
    node = shutil.which("node")
    assert node is not None  # node_modules() checked
    environment = dict(os.environ, NODE_PATH=str(modules))
    return node, [node, str(SCRIPTS / script), *arguments], environment


def skip_without_node(test: unittest.TestCase) -> None:
    """Skip ``test`` when autobahn-js cannot run in Node here (fail it under ``CI=true``: CI must run it)."""
    try:
        node_modules()
    except NodeMissing as missing:
        if os.environ.get("CI") == "true":
            test.fail(f"{missing} (CI=true: these tests must run)")
        raise unittest.SkipTest(str(missing)) from None


if __name__ == "__main__":
    print(node_modules())
