"""Every command in the README and docs/ is run, against real servers, so that the docs cannot drift.

The pages are found when this module is imported (``README.md``, ``docs/**/*.md``): each gets a convention
test (every code block says whether it runs) and a run test (its blocks run in order, as a reader following
the page would). ``tests/doc_runner.py`` has the rules; ``python -m tests.doc_runner`` shows how each block
is treated without running anything.
"""

from __future__ import annotations

import re
import unittest
from pathlib import Path
from typing import Any

from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from tests.doc_runner import (
    CONVENTION,
    REPO,
    PageRun,
    PortMap,
    doc_pages,
    listen_on_loopback,
    parse_markdown,
    plan_shell,
    read_page,
    report,
    send_targets,
    topic_candidates,
)
from tests.support import ServerTestCase

log = Logger()


class DocsFollowTheConvention(SynchronousTestCase):
    """Each page: no untagged fence, no ambiguous tag, no indented code block, no malformed marker."""


class DocsRun(ServerTestCase):
    """Each page: its runnable blocks run in order and do what the page says (see tests/doc_runner.py)."""

    timeout = 180


def _convention_test(path: Path) -> Any:
    def test(self: SynchronousTestCase) -> None:
        problems = read_page(path).problems
        if problems:
            self.fail(
                f"{len(problems)} place(s) break the doc-runner convention:\n"
                + "\n".join(str(p) for p in problems)
                + f"\n\n{CONVENTION}"
            )

    return test


def _run_test(path: Path) -> Any:
    async def test(self: DocsRun) -> None:
        run = PageRun(self, read_page(path))
        outcomes = await run.run()
        log.info("{page}:\n{outcomes}", page=path.name, outcomes="\n".join(str(o) for o in outcomes))
        if any(o.failed for o in outcomes):
            self.fail(report(outcomes))
        if run.unavailable:
            raise unittest.SkipTest("every other block passed; not run here: " + "; ".join(run.unavailable))

    return test


def _test_name(path: Path) -> str:
    return "test_" + re.sub(r"\W", "_", str(path.relative_to(REPO)))


def _declare_page_tests() -> None:
    for path in doc_pages():
        setattr(DocsFollowTheConvention, _test_name(path), _convention_test(path))
        setattr(DocsRun, _test_name(path), _run_test(path))


_declare_page_tests()


class DocsCoverTheExamples(SynchronousTestCase):
    """What issue 17 asks the docs to show, somewhere in them, in blocks that run (not skipped)."""

    def runnable_blocks(self) -> list[Any]:
        return [block for path in doc_pages() for block in read_page(path).blocks if block.runs]

    def test_a_producer_in_each_language_runs(self) -> None:
        blocks = self.runnable_blocks()
        producers = {
            "redis-cli (```sh: redis-cli PUBLISH ...)": any(
                b.kind == "sh" and re.search(r"\bredis-cli\b[^\n]*\bpublish\b", b.text, re.I) for b in blocks
            ),
            "Python (```python: sandstone.push.Pusher)": any(
                b.kind == "python" and "Pusher(" in b.text for b in blocks
            ),
            "Node (```js requiring the redis package)": any(
                b.kind == "node" and "redis" in b.node_packages() for b in blocks
            ),
        }
        missing = [language for language, found in producers.items() if not found]
        self.assertEqual(missing, [], "no runnable bus producer example in these languages")

    def test_a_two_node_cluster_runs(self) -> None:
        for path in doc_pages():
            page = read_page(path)
            servers = [
                step.command
                for block in page.blocks
                if block.kind == "sh"
                for step in plan_shell(block)
                if step.kind == "server" and "--redis" in step.command
            ]
            if len(servers) >= 2:
                return
        self.fail("no page starts two nodes with --redis in runnable ```sh blocks")


# --- the runner's own rules, on made-up pages ---


def _page(text: str) -> Any:
    return parse_markdown(text, "page.md")


class ConventionRulesTests(SynchronousTestCase):
    def test_runnable_and_not_runnable_tags(self) -> None:
        page = _page(
            "```sh\nsandstone --version\n```\n\n```python\nprint(1)\n```\n\n```text\nx\n```\n\n"
            "```js\nconst redis = require('redis');\n```\n\n```js\nsession.subscribe('a');\n```\n"
        )
        self.assertEqual([b.kind for b in page.blocks], ["sh", "python", "not run", "node", "browser"])
        self.assertEqual(page.problems, [])

    def test_untagged_fence_is_a_problem(self) -> None:
        [problem] = _page("text\n\n```\nls\n```\n").problems
        self.assertEqual((problem.line, "without a language" in problem.message), (3, True))

    def test_ambiguous_tag_is_a_problem(self) -> None:
        [problem] = _page("```bash\nls\n```\n").problems
        self.assertIn("```sh (run) or ```console (not run)", problem.message)

    def test_indented_code_block_is_a_problem(self) -> None:
        [problem] = _page("Run it:\n\n    sandstone run --app a:app\n\nthen.\n").problems
        self.assertEqual(problem.line, 3)
        self.assertIn("indented code block", problem.message)

    def test_indented_text_in_lists_and_admonitions_is_no_code_block(self) -> None:
        page = _page(
            "- item\n\n    more of the item\n\n!!! note\n\n    an admonition\n\n"
            '=== "Python"\n\n    ```python\n    print(1)\n    ```\n'
        )
        self.assertEqual(page.problems, [])
        self.assertEqual(page.blocks[0].text, "print(1)\n")

    def test_skip_marker_needs_a_reason_and_a_fence(self) -> None:
        page = _page(
            "<!-- doc-runner: skip (an excerpt) -->\n```python\nx\n```\n\n"
            "<!-- doc-runner: skip -->\n```python\ny\n```\n\n<!-- doc-runner: skip (lost) -->\ntext\n"
            "<!-- doc-runner: run -->\n```sh\nls\n```\n"
        )
        self.assertEqual([b.kind for b in page.blocks], ["skipped", "skipped", "sh"])
        self.assertEqual(page.blocks[0].reason, "an excerpt")
        self.assertEqual([p.line for p in page.problems], [6, 11, 13])

    def test_trial_module_and_title(self) -> None:
        page = _page(
            '```python title="test_blog.py"\nfrom twisted.trial.unittest import TestCase\n\n'
            "class T(TestCase):\n    pass\n```\n"
        )
        self.assertEqual((page.blocks[0].kind, page.blocks[0].title), ("trial", "test_blog.py"))


class ShellPlanTests(SynchronousTestCase):
    def plan(self, text: str) -> list[tuple[str, str, str]]:
        [block] = _page(f"```sh\n{text}```\n").blocks
        return [(s.kind, s.command, s.problem) for s in plan_shell(block)]

    def test_install_prefix_is_checked_and_the_rest_runs(self) -> None:
        steps = self.plan(
            "python3 -m venv .venv && . .venv/bin/activate && pip install -e '.[test]' "
            "--config-settings editable_mode=compat && "
            "sandstone run --app examples.blog:app --listen tcp:8080\n"
        )
        self.assertEqual([s[0] for s in steps], ["install", "install", "install", "server"])
        self.assertEqual(steps[-1][1], "sandstone run --app examples.blog:app --listen tcp:8080")
        self.assertEqual([s[2] for s in steps], ["", "", "", ""])

    def test_pip_install_of_a_missing_extra_is_a_problem(self) -> None:
        [(kind, _, problem)] = self.plan("pip install 'sandstone[nope]'\n")
        self.assertEqual(kind, "install")
        self.assertIn("no extra 'nope'", problem)

    def test_the_test_suite_is_checked_not_run(self) -> None:
        [(kind, _, problem)] = self.plan("trial tests\n")
        self.assertEqual((kind, problem), ("checked", ""))
        [(kind, _, problem)] = self.plan("trial tests.no_such_module\n")
        self.assertIn("no test module", problem)

    def test_commands_between_servers_run_together(self) -> None:
        steps = self.plan(
            "twistd -n --pidfile= sandstone --listen tcp:8081 &\n"
            "X=1\ncurl -s localhost:8081/$X \\\n  -d '{}'\n"
            "wamp --url ws://localhost:8081/ws subscribe articles\nredis-server --port 6379\n"
        )
        self.assertEqual([s[0] for s in steps], ["server", "script", "watcher", "provided"])
        self.assertEqual(steps[0][1], "twistd -n --pidfile= sandstone --listen tcp:8081")
        self.assertEqual(steps[1][1], "X=1\ncurl -s localhost:8081/$X \\\n  -d '{}'")

    def test_a_server_inside_a_chain_is_a_problem(self) -> None:
        [(kind, _, problem)] = self.plan("cd examples && sandstone run --app blog:app\n")
        self.assertEqual(kind, "server")
        self.assertIn("must stand alone", problem)


class PortMapTests(SynchronousTestCase):
    def setUp(self) -> None:
        ports = iter(range(40001, 40100))
        self.ports = PortMap(redis_port=39999, free_port=lambda: next(ports))

    def test_ports_are_mapped_consistently_and_hosts_become_loopback(self) -> None:
        text = (
            "curl http://localhost:8080/a http://127.0.0.1:8081/ ws://localhost:8080/ws tcp:9100:interface=x"
        )
        self.assertEqual(
            self.ports.rewrite(text),
            "curl http://127.0.0.1:40001/a http://127.0.0.1:40002/ ws://127.0.0.1:40001/ws "
            "tcp:40003:interface=x",
        )

    def test_redis_urls_and_redis_cli_point_to_the_page_redis(self) -> None:
        text = (
            "--redis redis://127.0.0.1:6379/0 redis://localhost rediss://u:p@localhost:6380/2?x=1\n"
            "redis-cli ping\n"
        )
        self.assertEqual(
            self.ports.rewrite_shell(text),
            "--redis redis://127.0.0.1:39999/0 redis://127.0.0.1:39999 rediss://u:p@127.0.0.1:39999/2?x=1\n"
            "redis-cli -p 39999 ping\n",
        )
        self.assertEqual(self.ports.rewrite_shell("redis-cli -p 6379 ping"), "redis-cli -p 39999 ping")
        self.assertEqual(
            self.ports.rewrite_shell('X=$(redis-cli PUBLISH c \'{"t": "from redis-cli"}\') && curl -s x'),
            'X=$(redis-cli -p 39999 PUBLISH c \'{"t": "from redis-cli"}\') && curl -sS --fail-with-body -s x',
        )
        self.assertEqual(self.ports.rewrite("redis://redis.internal:6379/0"), "redis://redis.internal:6379/0")

    def test_servers_listen_on_loopback(self) -> None:
        self.assertEqual(
            listen_on_loopback(self.ports.rewrite("sandstone run --listen tcp:8080"), self.ports),
            ("sandstone run --listen tcp:40001:interface=127.0.0.1", 40001),
        )
        self.assertEqual(
            listen_on_loopback("sandstone run --app a:app", self.ports),
            ("sandstone run --app a:app --listen tcp:40001:interface=127.0.0.1", 40001),
        )

    def test_sending_commands_and_their_targets(self) -> None:
        self.assertEqual(send_targets("curl -s http://127.0.0.1:5/a\n"), None)
        self.assertEqual(send_targets("curl -s -X POST http://127.0.0.1:5/a\n"), [5])
        self.assertEqual(send_targets("curl -s http://127.0.0.1:5/a \\\n  -d '{}'\n"), [5])
        self.assertEqual(send_targets("wamp --url ws://127.0.0.1:6/ws publish chat/general hi\n"), [6])

    def test_topic_candidates_are_quoted_uris_in_code(self) -> None:
        page = _page(
            "```python\nsubscribe('articles'); x = \"chat/{channel}\"; f('a.py', 'chat/general')\n```\n"
        )
        self.assertEqual(topic_candidates(b.text for b in page.blocks), ["articles", "chat/general"])
