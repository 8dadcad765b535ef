"""WebSocket conformance: the Autobahn|Testsuite cases, run by ``kosoku``, against ``twistd -n sandstone``.

kosoku (0.1.0) can point at a path (``ws://host:port/ws``) but cannot offer a WebSocket subprotocol,
and the cases need an echo server, while sandstone's endpoint speaks only WAMP. So the cases run against
``twistd -n sandstone --app tests.conformance_app:app``: sandstone's own site, resource, factory and
protocol class at ``/ws``, with only the application edge replaced by an echo (see that module).

Skipped when kosoku is not installed, unless ``CI=true`` or ``SANDSTONE_REQUIRE_KOSOKU=1`` (``tox -e
conformance``), where it must run. Reports go to the test's temporary directory (``_trial_temp``).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.trial.unittest import SkipTest

from tests.support import wait_until
from tests.test_e2e_twistd import REPO, Twistd, TwistdTestCase, environment

#: The selected cases: 1-7, 10, 12.1 and 13.1 (9.*, the big-payload performance cases, excluded).
INCLUDE = ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "10.*", "12.1.*", "13.1.*"]
EXCLUDE = ["9.*"]
#: The case groups that must each have run at least one case.
GROUPS = ["1", "2", "3", "4", "5", "6", "7", "10", "12.1", "13.1"]
KOSOKU_TIMEOUT = 90.0
PARALLELISM = 4

ACCEPTED = {"OK", "NON-STRICT", "INFORMATIONAL"}
ACCEPTED_CLOSE = {"OK", "INFORMATIONAL"}
#: kosoku marks the compression cases UNIMPLEMENTED when the server does not negotiate permessage-deflate.
UNIMPLEMENTED_ALLOWED = ("12.", "13.")


def find_kosoku() -> str | None:
    """The ``kosoku`` script of this interpreter's environment, else the one on ``PATH``."""
    beside = Path(sys.executable).parent / "kosoku"
    if beside.exists():
        return str(beside)
    return shutil.which("kosoku")


def kosoku_required() -> bool:
    return os.environ.get("CI") == "true" or os.environ.get("SANDSTONE_REQUIRE_KOSOKU") == "1"


def unacceptable(case_id: str, result: dict[str, Any]) -> bool:
    """Whether one case's verdicts fall outside what this test accepts."""
    behavior, close = result.get("behavior"), result.get("behaviorClose")
    if behavior == "UNIMPLEMENTED" and case_id.startswith(UNIMPLEMENTED_ALLOWED):
        behavior = "OK"
    return behavior not in ACCEPTED or close not in ACCEPTED_CLOSE


def case_key(case_id: str) -> list[int]:
    return [int(part) for part in case_id.split(".")]


class ConformanceTests(TwistdTestCase):
    timeout = 150

    def setUp(self) -> None:
        kosoku = find_kosoku()
        if kosoku is None:
            message = "kosoku is not installed: pip install kosoku (it is in the 'test' extra)"
            if kosoku_required():
                self.fail(message + " [required here: CI=true or SANDSTONE_REQUIRE_KOSOKU=1]")
            raise SkipTest(message)
        self.kosoku = kosoku

    async def run_kosoku(self, url: str, *arguments: str) -> tuple[Twistd, Path]:
        """Run ``kosoku URL ARGUMENTS -o OUTDIR``; kill it after ``KOSOKU_TIMEOUT`` seconds."""
        outdir = Path(self.mktemp()).resolve()
        outdir.mkdir(parents=True)
        process = Twistd()
        argv = [self.kosoku, url, *arguments, "-o", str(outdir)]
        reactor.spawnProcess(process, self.kosoku, argv, env=environment(), path=str(REPO))
        try:
            await wait_until(lambda: not process.running, timeout=KOSOKU_TIMEOUT, interval=0.1)
        except AssertionError:
            process.transport.signalProcess("KILL")
            await process.ended
            self.fail(f"kosoku did not finish within {KOSOKU_TIMEOUT:.0f} s:\n{process.output[-4000:]}")
        return process, outdir

    def read_index(self, process: Twistd, outdir: Path) -> dict[str, dict[str, Any]]:
        """The per-case verdicts of kosoku's ``index.json`` (one agent: the server under test)."""
        index = outdir / "index.json"
        if not index.exists():
            self.fail(f"kosoku exited with {process.exit_code}, no report:\n{process.output[-4000:]}")
        agents = json.loads(index.read_text(encoding="utf-8"))
        self.assertEqual(len(agents), 1, list(agents))
        return next(iter(agents.values()))

    async def test_autobahn_cases_against_sandstone_websocket_stack(self) -> None:
        await self.start("--app", "tests.conformance_app:app")
        selection = [arg for pattern in INCLUDE for arg in ("-i", pattern)]
        selection += [arg for pattern in EXCLUDE for arg in ("-x", pattern)]
        process, outdir = await self.run_kosoku(self.ws_url, *selection, "-p", str(PARALLELISM))
        # kosoku exits 1 when any case is not OK/NON-STRICT/INFORMATIONAL (UNIMPLEMENTED included)
        self.assertIn(process.exit_code, (0, 1), process.output[-4000:])
        cases = self.read_index(process, outdir)

        for group in GROUPS:
            self.assertTrue(
                any(case_id == group or case_id.startswith(group + ".") for case_id in cases),
                f"no case of {group} ran; ran: {sorted(cases, key=case_key)}",
            )
        self.assertFalse([case_id for case_id in cases if case_id.startswith("9.")])

        bad = {
            case_id: (result.get("behavior"), result.get("behaviorClose"))
            for case_id, result in cases.items()
            if unacceptable(case_id, result)
        }
        tally = Counter(f"{r.get('behavior')}/{r.get('behaviorClose')}" for r in cases.values())
        if bad:
            self.fail(
                f"{len(bad)} of {len(cases)} cases failed (tally {dict(tally)}); reports in {outdir}:\n"
                + "\n".join(f"  {case_id}: {bad[case_id]}" for case_id in sorted(bad, key=case_key))
            )

    async def test_wamp_endpoint_refuses_a_handshake_without_subprotocol(self) -> None:
        """Why the echo app exists: the real WAMP endpoint turns kosoku's handshake down."""
        await self.start()
        process, outdir = await self.run_kosoku(self.ws_url, "-i", "1.1.1")
        # kosoku exits 1 with a failed case; once in CI it died of a signal at its exit (no code) after
        # writing the report: what matters is that it did not pass, and the report's verdict below
        self.assertNotEqual(process.exit_code, 0, process.output[-4000:])
        self.assertEqual(self.read_index(process, outdir)["1.1.1"]["behavior"], "ERROR")
