"""The ``sandstone`` command (and ``python -m sandstone``): ``sandstone run`` is ``twistd -n --pidfile=
sandstone``, without twistd's plugin discovery, and with errors in one line.

``sandstone run`` builds twistd's own options (``ServerOptions``) with one subcommand, sandstone, given as a
``ServiceMaker`` rather than found among the installed plugins, and runs them with ``twistd.runApp``: the
service tree, signals and logging are exactly those of ``twistd -n --pidfile= sandstone``, and a plain
``pip install -e .`` (which does not expose ``twisted/plugins/``) is enough.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence
from typing import TextIO

from twisted.application.service import ServiceMaker
from twisted.internet.error import CannotListenError
from twisted.python import usage

# ServerOptions: the platform's twistd options, as twistd's own run() uses them (not listed in __all__)
from twisted.scripts.twistd import ServerOptions, runApp  # type: ignore[attr-defined]

from sandstone import __version__
from sandstone._listening import listen_error
from sandstone._tap import Options

__all__ = ["main"]

_DESCRIPTION = "Klein REST routes and a WAMP router in one reactor"

_MAKER = ServiceMaker("sandstone", "sandstone._tap", _DESCRIPTION, "sandstone")


class RunOptions(Options):
    """The options of ``sandstone run``: those of ``twistd sandstone``, and ``--debug``."""

    optFlags = [
        *Options.optFlags,
        ["debug", None, "On an error, print its traceback, not only its one-line reason; implies --verbose."],
    ]
    _exits_on_usage_error = False  # run() writes the one line

    def getSynopsis(self) -> str:
        return f"Usage: sandstone run {self.synopsis}"

    def postOptions(self) -> None:
        if self["debug"]:
            self["verbose"] = True  # before the workers' arguments are made of the options
        super().postOptions()


class _TwistdOptions(ServerOptions):
    """twistd's options whose only subcommand is sandstone (``ServerOptions`` finds its subcommands among the
    installed twistd plugins; ``loadedPlugins`` is where its application runner looks them up)."""

    subCommands = [("sandstone", None, RunOptions, _DESCRIPTION)]
    loadedPlugins = {"sandstone": _MAKER}


class _CommandOptions(usage.Options):
    synopsis = "Usage: sandstone [--version] [--help] run [options]"
    longdesc = (
        "Serve a sandstone app: 'sandstone run --app MODULE:ATTRIBUTE --listen ENDPOINT' runs in the "
        "foreground, logs to stdout and writes no pid file (as 'twistd -n --pidfile= sandstone'). "
        "'sandstone run --help' lists its options."
    )
    subCommands = [("run", None, RunOptions, "Serve an app in the foreground (Ctrl-C stops it).")]

    def opt_version(self) -> None:
        """Print sandstone's version and exit."""
        print(f"sandstone {__version__}")
        sys.exit(0)


def _fail(reason: str, debug: bool, stderr: TextIO) -> int:
    if debug:
        traceback.print_exc(file=stderr)
    stderr.write(f"sandstone: {' '.join(reason.split())}\n")
    stderr.flush()
    return 1


def run(arguments: Sequence[str]) -> int:
    """``sandstone run ARGUMENTS``; returns the exit status."""
    # twistd makes sys.stderr a log file once it has started logging: errors go to the real one
    stderr = sys.__stderr__ or sys.stderr
    debug = "--debug" in arguments
    config = _TwistdOptions()
    try:
        config.parseOptions(["--nodaemon", "--pidfile=", "sandstone", *arguments])
    except usage.UsageError as err:
        return _fail(str(err), debug, stderr)
    try:
        runApp(config)
    except usage.UsageError as err:  # from makeService
        return _fail(str(err), debug, stderr)
    except CannotListenError as err:
        return _fail(listen_error(err), debug, stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The ``sandstone`` console script; returns the exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        return _command(arguments)
    except BrokenPipeError:  # `sandstone run --help | head`: the reader is gone, which is no error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python flushes stdout at exit
        return 0


def _command(arguments: list[str]) -> int:
    if arguments[:1] == ["run"]:
        return run(arguments[1:])
    command = _CommandOptions()
    try:
        command.parseOptions(arguments)
    except usage.UsageError as err:
        sys.stderr.write(f"sandstone: {err} ('sandstone --help' lists the commands)\n")
        return 1
    print(command)  # no command given: what there is
    return 1
