"""Run the README's and docs/'s code blocks as a reader following each page would, against real servers.

``tests/test_docs.py`` runs every page found at test time (``README.md``, ``docs/**/*.md``): a convention
test and a run test per page. ``python -m tests.doc_runner [PAGE...]`` prints how each block is treated,
without running anything.

The convention for doc writers (``CONVENTION`` below is printed with every failure):

- ```` ```sh ```` blocks are shell commands meant to be run, ```` ```python ```` blocks Python meant to run.
  ```` ```js ```` (or ``javascript``) blocks run under Node when they are whole Node programs, i.e. they
  ``require("...")`` or ``import ... from "..."`` a module (``redis`` or ``autobahn``: ``NODE_PACKAGES``);
  without either they are browser snippets and are not run.
- Every other tag (``text``, ``console``, ``ini``, ``nginx``, ``json``, ``php``...) is not run. A fence with
  no tag, a tag that does not say whether it runs (``bash``, ``shell``, ``zsh``, ``py``, ``python3``,
  ``node``...) and an indented (unfenced) code block fail the page's convention test.
- ``<!-- doc-runner: skip (reason) -->`` on the line(s) before a fence: not run (a reason is required).
  ``<!-- doc-runner: no-event-check (reason) -->``: run, but no EVENT is expected from it (see Effects).
- ```` ```python title="clicks.py" ```` (MkDocs Material's title): the block is also saved as ``clicks.py``
  in the page's directory, where a later ``sandstone run --app clicks:app`` finds it.

How a page runs (``PageRun``), in page order, like a reader:

- Directory: one per page, a stand-in for the checkout (a symlink to each top-level entry of the repository),
  so relative paths work and nothing a block writes (``twistd.pid``, saved files) lands in the checkout.
  ``PATH`` starts with this interpreter's bin directory (``sandstone``, ``twistd``, ``trial``, ``wamp``,
  ``python`` are the test environment's); ``PYTHONPATH`` is the page's directory; output is unbuffered.
- Ports: ``localhost:N``, ``127.0.0.1:N``, ``0.0.0.0:N``, ``[::1]:N``, ``tcp:N``, ``ssl:N`` in runnable blocks
  become free ports picked for the page (the same N, the same port, on the whole page; hosts become
  ``127.0.0.1``). Redis: a page whose runnable blocks mention Redis gets its own redis-server on a free port;
  ``redis://``/``rediss://`` URLs on localhost (with or without a port) and port 6379 point to it, and a
  ``redis-cli`` command gets ``-p PORT`` (unless it has ``-p`` or ``-u``). Python and Node producers must
  name their Redis URL: their libraries' implicit default (localhost:6379) is not rewritten.
- Shell: a block's commands run with ``bash -e -o pipefail`` (consecutive ones together, so that variables
  carry over), 20 s at most, then their process group is ended; a ``curl`` command gets
  ``-sS --fail-with-body`` (an HTTP error fails the block).
- Install steps are checked, not run: the install prefix (``python3 -m venv DIR``, ``. DIR/bin/activate``,
  ``pip install ...``, before ``&&`` or on a line of their own), ``apt-get``, ``npm install PKG`` (PKG must be
  in ``NODE_PACKAGES``), ``git clone`` and a ``cd`` into the clone. ``pip install`` must name distributions
  of the test environment and extras they have (``-e '.[test]'``, ``'sandstone[push]'``). The rest of the
  line runs.
- Checked, not run: the test suite (``trial tests...``, ``python -m twisted.trial tests...``: its modules must
  exist, and ``trial tests`` must be what ``.ci/run`` runs; running it here would run this test again),
  ``tox [-e ENVS]`` (envs of tox.ini), ``.ci/run``, ``python bench/...`` (benchmarks), ``python
  docs/screenshots.py`` and ``python -m tests.X`` (the file or module must exist). ``redis-server`` and
  ``docker run ... redis`` are not run: the page's Redis stands in for them.
- Servers: ``sandstone run``, ``python -m sandstone run``, ``twistd [...] sandstone``, ``twist sandstone``,
  ``python -m twisted sandstone`` (a trailing ``&`` is dropped) start in the background on 127.0.0.1
  (``--listen tcp:N`` gets ``:interface=127.0.0.1``; no ``--listen`` means the default 8080, mapped like any
  port). The runner waits until they accept connections and, with ``--redis``, until their bus listens
  (``--workers N`` counts N nodes), and stops them by pid (SIGTERM, then SIGKILL) when the page ends. A server
  on a port the page already serves replaces the earlier one (and its watchers), as a reader stopping it
  first would. twistd keeps its own ways: ``twistd -n`` without ``--pidfile=`` writes ``twistd.pid``, so a
  second one from the same directory exits, as it would for the reader.
- Watchers: ``wamp ... subscribe`` and ``redis-cli ... (p)subscribe|monitor`` (without ``&``) are left running
  in the background, as in a terminal of their own, once connected; each must print an event before it is
  stopped (page end, or its server replaced), unless its block says ``no-event-check``. With ``&`` they are
  part of the script (and end with it).
- Python blocks run as scripts (``python FILE``) in the page's directory, 20 s at most. A block that is a
  trial test module (it imports ``twisted.trial`` and defines a ``TestCase`` class) is saved in a directory of
  its own and run with ``python -m twisted.trial``: it must pass at least one test.
- Node programs are saved as ``.cjs`` (they ``require``) or ``.mjs`` (``import``, top-level ``await``) and run
  with ``node``; their npm packages are installed once into ``.cache/`` (``tests/npm.py``). Without node or
  npm those blocks are skipped with the install hint, and the page is reported skipped if nothing failed;
  under ``CI=true`` that is a failure.
- A page whose runnable blocks use Redis but start no server gets the README's two-node cluster (``sandstone
  run --app examples.blog:app --listen tcp:8080|8081 --redis redis://127.0.0.1:6379/0``) before its first
  block, so that its producers have nodes to reach.
- Without redis-server a page that needs Redis is skipped with the install hint; under ``CI=true`` it fails,
  as every Redis test does (``tests/redis_server.py``).

Effects (what a block must do besides exiting with status 0):

- The runner joins an observer session (WAMP v2 JSON; ``--realm``/``--ws-path`` honoured) to every server the
  page starts: a prefix subscription to every URI, and exact subscriptions to the URI-like strings quoted in
  the page's code blocks and in the served app's module (so that topic instances such as the blog's
  ``articles`` exist, as the app's own page would make them).
- Each message a block publishes on a cluster's public channels (``...:events``, ``...:deliveries``; read with
  Redis's MONITOR, which PUBLISH replies do not count) must reach every node on the bus: each node's observer
  gets at least one new publication per message within 5 s. A sending command (``curl`` with ``-X
  POST|PUT|PATCH|DELETE``, ``-d``, ``--data...``, ``--json``, ``-F``; ``wamp ... publish``) must make at least
  one publication reach the node it targets, and every node on the bus when that node is on it.
  ``no-event-check`` turns both off for its block.
- No server may log a warning, an error or a traceback once started (the blog node's ``dropped a message ...
  data lacks the field(s) article`` fails the block that sent it), nor exit before the page ends.

A failure names file:line, the command as run (after the rewrites), its exit status and output, and the
convention, so that a block not meant to run as-is gets a marker or another tag instead.
"""

from __future__ import annotations

import configparser
import importlib.metadata
import os
import re
import shlex
import shutil
import signal
import sys
import tempfile
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

CONVENTION = (
    "doc-runner convention (tests/doc_runner.py): ```sh and ```python blocks run as written (ports and Redis "
    "rewritten), ```js blocks that require()/import a module run under Node; other tags are not run. A block "
    "that is not meant to run as-is takes another tag (text, console, ...) or the line "
    "<!-- doc-runner: skip (reason) --> just before its fence."
)

#: npm packages Node blocks may use: name -> version, installed once into .cache/ (tests/npm.py).
NODE_PACKAGES = {"redis": "5.12.4", "autobahn": "22.11.1"}

#: Tags that do not say whether the block is meant to run: the message tells which tag to use instead.
AMBIGUOUS_TAGS = {
    "bash": "```sh (run) or ```console (not run)",
    "shell": "```sh (run) or ```console (not run)",
    "zsh": "```sh (run) or ```console (not run)",
    "py": "```python (run) or ```text (not run)",
    "python3": "```python (run) or ```text (not run)",
    "py3": "```python (run) or ```text (not run)",
    "node": "```js with require()/import (run under Node)",
    "nodejs": "```js with require()/import (run under Node)",
    "mjs": "```js with require()/import (run under Node)",
    "cjs": "```js with require()/import (run under Node)",
}

BLOCK_TIMEOUT = 20.0
SERVER_START_TIMEOUT = 30.0
EFFECT_TIMEOUT = 5.0
SETTLE = 0.3
DOC_REDIS_PORTS = {6379}
DEFAULT_CLUSTER = (
    "sandstone run --app examples.blog:app --listen tcp:8080 --redis redis://127.0.0.1:6379/0",
    "sandstone run --app examples.blog:app --listen tcp:8081 --redis redis://127.0.0.1:6379/0",
)


def doc_pages() -> list[Path]:
    """The pages whose blocks run: README.md and every Markdown file under docs/, found now."""
    pages = [REPO / "README.md"] if (REPO / "README.md").exists() else []
    return pages + sorted((REPO / "docs").rglob("*.md"))


# --- reading a page --------------------------------------------------------------------------------------

_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*?)\s*$")
_MARKER = re.compile(r"^\s*<!--\s*doc-runner:\s*(?P<body>.*?)\s*-->\s*$")
_DIRECTIVE = re.compile(r"^(?P<name>[\w-]+)\s*(?:\((?P<reason>.*)\))?$")
_DIRECTIVES = ("skip", "no-event-check")
# Lines that open a container whose body is indented (lists, MkDocs admonitions and tabs, footnotes): text
# indented under them is no code block.
_CONTAINER = re.compile(r"^ {0,3}(?:[-*+][ \t]|\d{1,9}[.)][ \t]|!!!|\?\?\?|===[ \t]|\[\^[^\]]+\]:)")
_TRIAL_IMPORT = re.compile(r"^\s*(?:from\s+twisted\.trial\b|import\s+twisted\.trial\b)", re.M)
_TEST_CASE = re.compile(r"^class\s+\w+\(.*TestCase\b.*\)\s*:", re.M)
_NODE_MODULE = re.compile(
    r"""\brequire\(\s*["'](?P<required>[^"']+)["']\s*\)"""
    r"""|^\s*import\b[^\n;]*?\bfrom\s*["'](?P<imported>[^"']+)["']"""
    r"""|^\s*import\s*["'](?P<bare>[^"']+)["']""",
    re.M,
)


@dataclass(frozen=True)
class Problem:
    """A place in a page that breaks the convention."""

    page: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.page}:{self.line}: {self.message}"


@dataclass(frozen=True)
class Block:
    """One fenced code block: where it is, its tag and text, and the doc-runner marker before it."""

    page: str
    line: int  # the opening fence's line, from 1
    lang: str
    info: str
    text: str
    directive: str | None = None
    reason: str = ""

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def title(self) -> str | None:
        """The file name of ```` ```python title="NAME" ````, if any."""
        match = re.search(r"""\btitle=["']([^"']+)["']""", self.info)
        return match.group(1) if match else None

    @property
    def kind(self) -> str:
        """``sh``, ``python``, ``trial``, ``node`` (run), or ``skipped``, ``browser``, ``not run``."""
        if self.directive == "skip":
            return "skipped"
        if self.lang == "sh":
            return "sh"
        if self.lang == "python":
            trial = _TRIAL_IMPORT.search(self.text) and _TEST_CASE.search(self.text)
            return "trial" if trial else "python"
        if self.lang in ("js", "javascript"):
            return "node" if _NODE_MODULE.search(self.text) else "browser"
        return "not run"

    @property
    def runs(self) -> bool:
        return self.kind in ("sh", "python", "trial", "node")

    def node_packages(self) -> list[str]:
        """The npm packages (not Node's own modules, not relative paths) a Node block loads."""
        names = []
        for match in _NODE_MODULE.finditer(self.text):
            spec = match.group("required") or match.group("imported") or match.group("bare")
            if spec.startswith((".", "/", "node:")):
                continue
            parts = spec.split("/")
            name = "/".join(parts[:2]) if spec.startswith("@") else parts[0]
            if name not in names:
                names.append(name)
        return names


@dataclass(frozen=True)
class Page:
    """A Markdown page's code blocks, and the places where it breaks the convention."""

    name: str
    blocks: list[Block]
    problems: list[Problem]


def read_page(path: Path) -> Page:
    name = str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)
    return parse_markdown(path.read_text(encoding="utf-8"), name)


def parse_markdown(text: str, name: str) -> Page:
    """The fenced blocks of ``text`` (fences may be indented, as in lists and admonitions), with their
    markers, and the convention problems: untagged or ambiguous fences, indented code blocks, bad markers."""
    lines = [line.expandtabs(4) for line in text.splitlines()]
    blocks: list[Block] = []
    problems: list[Problem] = []
    pending: tuple[int, str, str] | None = None  # a marker waiting for its fence: (line, directive, reason)
    in_container = False
    previous_blank = True
    i = 0
    while i < len(lines):
        line, number = lines[i], i + 1
        fence = _FENCE.match(line)
        if fence:
            end = _closing_fence(lines, i, fence.group("fence"))
            if end == len(lines):
                problems.append(Problem(name, number, "this fence is never closed"))
            body = _dedent(lines[i + 1 : end], len(fence.group("indent")))
            info = fence.group("info")
            directive, reason = (pending[1], pending[2]) if pending else (None, "")
            block = Block(
                name, number, _language(info), info, "".join(f"{b}\n" for b in body), directive, reason
            )
            blocks.append(block)
            problems.extend(_tag_problems(block))
            pending = None
            i, previous_blank = end + 1, False
            continue
        marker = _MARKER.match(line)
        if marker:
            if pending:
                problems.append(Problem(name, pending[0], "a doc-runner marker must be followed by a fence"))
            pending = _directive(name, number, marker.group("body"), problems)
            i += 1
            continue
        if not line.strip():
            previous_blank = True
            i += 1
            continue
        if pending:
            problems.append(Problem(name, pending[0], "a doc-runner marker must be followed by a fence"))
            pending = None
        indent = len(line) - len(line.lstrip(" "))
        if _CONTAINER.match(line):
            in_container = True
        elif indent == 0:
            in_container = False
        if indent >= 4 and previous_blank and not in_container:
            problems.append(
                Problem(
                    name,
                    number,
                    f"an indented code block ({line.strip()[:70]!r}): fence it, ```sh to run it or "
                    "```text (or another tag) not to",
                )
            )
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith("    ")):
                i += 1
            previous_blank = True
            continue
        previous_blank = False
        i += 1
    if pending:
        problems.append(Problem(name, pending[0], "a doc-runner marker must be followed by a fence"))
    return Page(name, blocks, problems)


def _closing_fence(lines: list[str], start: int, fence: str) -> int:
    closing = re.compile(rf"^ *{re.escape(fence[0])}{{{len(fence)},}}\s*$")
    for j in range(start + 1, len(lines)):
        if closing.match(lines[j]):
            return j
    return len(lines)


def _dedent(lines: list[str], indent: int) -> list[str]:
    return [line[min(indent, len(line) - len(line.lstrip(" "))) :] for line in lines]


def _language(info: str) -> str:
    if not info:
        return ""
    return info.split()[0].lstrip("{").lstrip(".").rstrip("}").lower()


def _directive(name: str, line: int, body: str, problems: list[Problem]) -> tuple[int, str, str] | None:
    match = _DIRECTIVE.match(body)
    if match is None or match.group("name") not in _DIRECTIVES:
        problems.append(
            Problem(
                name,
                line,
                f"unknown doc-runner marker {body!r}: use skip (reason) or no-event-check (reason)",
            )
        )
        return None
    reason = (match.group("reason") or "").strip()
    if not reason:
        problems.append(
            Problem(name, line, f"doc-runner: {match.group('name')} needs a reason in parentheses")
        )
    return line, match.group("name"), reason


def _tag_problems(block: Block) -> list[Problem]:
    if block.directive == "skip":
        return []
    if not block.lang:
        return [
            Problem(
                block.page,
                block.line,
                "a fence without a language: ```sh or ```python to run it, ```text (or another tag) not to",
            )
        ]
    if block.lang in AMBIGUOUS_TAGS:
        return [Problem(block.page, block.line, f"```{block.lang}: use {AMBIGUOUS_TAGS[block.lang]}")]
    return []


# --- planning a shell block ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One thing a shell block asks for: a ``script`` to run, a ``server`` to start, or an ``install``,
    ``checked`` or ``provided`` command that is not run (``note`` says why, ``problem`` what is wrong)."""

    line: int
    kind: str
    command: str
    note: str = ""
    problem: str = ""


_HEREDOC = re.compile(r"<<-?\s*(['\"]?)(?P<tag>[A-Za-z_]\w*)\1")
_ASSIGNMENT = re.compile(r"^[A-Za-z_]\w*=")
_PYTHON = re.compile(r"^(?:\S*/)?python(?:3(?:\.\d+)?)?$")  # python, python3.11, .venv/bin/python


def logical_lines(text: str) -> list[tuple[int, str]]:
    """(line offset, text) of each command: backslash continuations and here-documents kept together."""
    lines = text.splitlines()
    result = []
    i = 0
    while i < len(lines):
        start, chunk = i, [lines[i]]
        while chunk[-1].rstrip().endswith("\\") and i + 1 < len(lines):
            i += 1
            chunk.append(lines[i])
        heredoc = _HEREDOC.search("\n".join(chunk))
        if heredoc:
            while i + 1 < len(lines):
                i += 1
                chunk.append(lines[i])
                if lines[i].strip() == heredoc.group("tag"):
                    break
        result.append((start, "\n".join(chunk)))
        i += 1
    return result


def _flat(command: str) -> str:
    return re.sub(r"\\\n[ \t]*", " ", command).strip()


def split_and(command: str) -> list[str]:
    """``command`` split at each ``&&`` outside quotes."""
    parts: list[str] = []
    current: list[str] = []
    quote = None
    i = 0
    while i < len(command):
        c = command[i]
        if quote:
            current.append(c)
            if c == quote:
                quote = None
            elif c == "\\" and quote == '"' and i + 1 < len(command):
                current.append(command[i + 1])
                i += 1
        elif c in "'\"":
            quote = c
            current.append(c)
        elif c == "\\" and i + 1 < len(command):
            current += [c, command[i + 1]]
            i += 1
        elif command.startswith("&&", i):
            parts.append("".join(current).strip())
            current = []
            i += 1
        else:
            current.append(c)
        i += 1
    parts.append("".join(current).strip())
    return parts


def _words(command: str) -> list[str] | None:
    try:
        words = shlex.split(command, comments=True)
    except ValueError:
        return None
    while words and _ASSIGNMENT.match(words[0]):
        words = words[1:]
    return words


def plan_shell(block: Block) -> list[Step]:
    """The steps of a ``sh`` block, in order (consecutive commands to run form one ``script`` step)."""
    steps: list[Step] = []
    script: list[str] = []
    script_line = block.line + 1
    clones: set[str] = set()

    def flush() -> None:
        if any(_flat(text) and not _flat(text).startswith("#") for text in script):
            steps.append(Step(script_line, "script", "\n".join(script)))
        script.clear()

    for offset, text in logical_lines(block.text):
        line = block.line + 1 + offset
        flat = _flat(text)
        if not flat or flat.startswith("#") or _HEREDOC.search(text):
            if not script:
                script_line = line
            script.append(text)
            continue
        segments = split_and(flat)
        installs = []
        while segments and (install := _install(segments[0], clones)) is not None:
            installs.append(Step(line, "install", segments[0], *install))
            segments.pop(0)
        if installs:
            flush()
            steps.extend(installs)
        if not segments:
            continue
        late = [s for s in segments if _install(s, set(clones)) is not None]
        rest = " && ".join(segments)
        server = rest.rstrip()
        if server.endswith("&") and not server.endswith("&&"):
            server = server[:-1].rstrip()
        words = _words(server) or []
        checked = _checked(words) if words else None
        if late:
            flush()
            steps.append(
                Step(line, "checked", rest, problem=f"install commands run only as a prefix: {late[0]!r}")
            )
        elif _is_watcher(words) and not rest.rstrip().endswith("&"):
            flush()
            steps.append(Step(line, "watcher", rest))
        elif _is_server(words) or any(_is_server(_words(segment) or []) for segment in segments):
            flush()
            problem = (
                ""
                if len(segments) == 1
                else "a server command must stand alone (or after the install prefix)"
            )
            steps.append(Step(line, "server", server, problem=problem))
        elif checked is not None:
            flush()
            steps.append(Step(line, "checked", rest, *checked))
        elif words and (words[0] == "redis-server" or (words[:2] == ["docker", "run"] and "redis" in rest)):
            flush()
            steps.append(
                Step(line, "provided", rest, "not run: the page's own redis-server stands in for it")
            )
        else:
            if not script:
                script_line = line
            script.append(text if not installs else rest)
    flush()
    return steps


def _install(segment: str, clones: set[str]) -> tuple[str, str] | None:
    """(note, problem) when ``segment`` is an install step, else None."""
    words = _words(segment)
    if not words:
        return None
    if words[0] == "sudo":
        words = words[1:]
    if not words:
        return None
    head = words[0]
    if _PYTHON.match(head) and words[1:3] == ["-m", "venv"]:
        return "not run: creates a virtualenv (the test environment is one)", ""
    if head in (".", "source") and len(words) == 2 and words[1].endswith("/bin/activate"):
        return "not run: activates the virtualenv (the test environment's is active)", ""
    if head in ("pip", "pip3") and words[1:2] == ["install"]:
        return "not run: checked against the test environment", _check_pip(words[2:])
    if _PYTHON.match(head) and words[1:4] == ["-m", "pip", "install"]:
        return "not run: checked against the test environment", _check_pip(words[4:])
    if head in ("apt-get", "apt") and any(w in ("install", "update") for w in words):
        return "not run: system packages", ""
    if head == "npm" and words[1:2] in (["install"], ["i"]):
        return "not run: the runner installs Node packages itself", _check_npm(words[2:])
    if words[:2] == ["git", "clone"]:
        targets = [w for w in words[2:] if not w.startswith("-")]
        if targets:
            clones.add(targets[1] if len(targets) > 1 else Path(targets[0]).name.removesuffix(".git"))
        return "not run: the page's directory stands in for the checkout", ""
    if head == "cd" and len(words) == 2 and words[1] in clones:
        return "not run: the page's directory stands in for the checkout", ""
    return None


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _check_pip(arguments: list[str]) -> str:
    """What is wrong with a ``pip install`` line (distributions or extras the test environment lacks)."""
    with_value = {"--config-settings", "-C", "-r", "--requirement", "-c", "--constraint", "-i", "--index-url"}
    with_value |= {"--extra-index-url", "-t", "--target", "--prefix", "--root"}
    problems = []
    skip = False
    for argument in arguments:
        if skip:
            skip = False
            continue
        if argument in with_value:
            skip = True
            continue
        if argument.startswith("-"):
            continue
        match = re.fullmatch(
            r"(?P<name>\.|[A-Za-z0-9][\w.-]*)(?:\[(?P<extras>[^\]]*)\])?(?P<rest>.*)", argument
        )
        if match is None:
            problems.append(f"cannot read the requirement {argument!r}")
            continue
        name = "sandstone" if match.group("name") == "." else match.group("name")
        try:
            distribution = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            problems.append(f"{name} is not installed in the test environment")
            continue
        provided = {_canonical(e) for e in distribution.metadata.get_all("Provides-Extra") or []}
        for extra in filter(None, (e.strip() for e in (match.group("extras") or "").split(","))):
            if _canonical(extra) not in provided:
                problems.append(f"{name} has no extra {extra!r} (it has {', '.join(sorted(provided))})")
    return "; ".join(problems)


def _check_npm(arguments: list[str]) -> str:
    names = [re.sub(r"(?<=.)@.*$", "", a) for a in arguments if not a.startswith("-")]
    unknown = [n for n in names if n not in NODE_PACKAGES]
    if unknown:
        return f"npm package(s) {', '.join(unknown)} unknown to the runner: add them to NODE_PACKAGES"
    return ""


def _module_exists(dotted: str) -> bool:
    path = REPO.joinpath(*dotted.split("."))
    return (path / "__init__.py").exists() or path.with_suffix(".py").exists()


def _checked(words: list[str]) -> tuple[str, str] | None:
    """(note, problem) for commands that are checked, not run: the test suite, tox, CI, benchmarks..."""
    head = words[0]
    if head == "trial" or (_PYTHON.match(head) and words[1:3] == ["-m", "twisted.trial"]):
        arguments = words[1:] if head == "trial" else words[3:]
        targets, skip = [], False
        for argument in arguments:
            if skip:
                skip = False
            elif argument in ("-j", "--jobs", "--reporter", "--logfile", "--temp-directory"):
                skip = True
            elif not argument.startswith("-"):
                targets.append(argument)
        problems = [f"no test module {t!r}" for t in targets if not _module_exists(t)]
        if not targets:
            problems.append("trial without a test package runs nothing")
        ci = REPO / ".ci" / "run"
        if (
            words == ["trial", "tests"]
            and ci.exists()
            and not re.search(r"^\s*trial tests\b", ci.read_text(), re.M)
        ):
            problems.append(
                ".ci/run does not run `trial tests`: the README's test command and CI's must agree"
            )
        return "checked, not run: the test suite (running it here would run this test again)", "; ".join(
            problems
        )
    if head == "tox":
        return "checked, not run: tox", _check_tox(words[1:])
    if head in (".ci/run", "./.ci/run") or (head in ("bash", "sh") and words[1:2] == [".ci/run"]):
        return "checked, not run: the CI script", "" if (REPO / ".ci" / "run").exists() else "no .ci/run"
    if _PYTHON.match(head) and len(words) > 1:
        if words[1].startswith("bench/") or words[1] == "docs/screenshots.py":
            problem = "" if (REPO / words[1]).exists() else f"no file {words[1]}"
            return "checked, not run: benchmarks and screenshots are not run by the tests", problem
        if words[1] == "-m" and len(words) > 2 and words[2].startswith("tests."):
            problem = "" if _module_exists(words[2]) else f"no module {words[2]}"
            return "checked, not run: test tooling", problem
    return None


def _check_tox(arguments: list[str]) -> str:
    config = configparser.ConfigParser(interpolation=None)
    config.read(REPO / "tox.ini")
    envs = {s.removeprefix("testenv:") for s in config.sections() if s.startswith("testenv:")}
    envs |= {e.strip() for e in config.get("tox", "envlist", fallback="").split(",")}
    wanted = []
    for i, argument in enumerate(arguments):
        if argument == "-e" and i + 1 < len(arguments):
            wanted += arguments[i + 1].split(",")
        elif argument.startswith("-e") and len(argument) > 2:
            wanted += argument[2:].split(",")
    missing = [e for e in wanted if e not in envs and not re.fullmatch(r"py3\d+", e)]
    return f"tox.ini has no env {', '.join(missing)}" if missing else ""


def _is_watcher(words: list[str]) -> bool:
    """Commands a reader leaves running in a terminal of their own to watch what happens."""
    if not words or any(w in ("-h", "--help") for w in words):
        return False
    if words[0] == "wamp":
        return "subscribe" in words
    return words[0] == "redis-cli" and any(w.lower() in ("subscribe", "psubscribe", "monitor") for w in words)


def _is_server(words: list[str]) -> bool:
    if not words or any(w in ("-h", "--help", "--version") for w in words):
        return False
    head = words[0]
    if words[:2] == ["sandstone", "run"]:
        return True
    if _PYTHON.match(head) and words[1:4] == ["-m", "sandstone", "run"]:
        return True
    if head in ("twistd", "twist") and "sandstone" in words:
        return True
    return bool(_PYTHON.match(head) and words[1:3] == ["-m", "twisted"] and "sandstone" in words)


# --- ports and Redis -------------------------------------------------------------------------------------

_ADDRESS = re.compile(
    r"(?P<url>(?P<scheme>rediss?(?:\+sentinel)?://)(?P<auth>[^\s@/'\"]*@)?(?:localhost|127\.0\.0\.1)"
    r"(?::(?P<rport>\d+))?)(?![\w.-])"
    r"|(?P<host>\blocalhost|\b127\.0\.0\.1|\b0\.0\.0\.0|\[::1\]|\btcp6?|\bssl):(?P<port>\d{2,5})\b"
)


def _command_word(word: str) -> re.Pattern[str]:
    """``word`` where a shell would run it: first on a line or after ``;``, ``&``, ``|``, ``(``, backquote or
    ``$(``; ``rest`` is the rest of that line."""
    return re.compile(
        rf"(?P<lead>^[ \t]*|[;&|(`][ \t]*|\$\([ \t]*){re.escape(word)}(?P<rest>(?=[ \t\n]|$)[^\n]*)", re.M
    )


_REDIS_CLI = _command_word("redis-cli")
_CURL = _command_word("curl")
_LISTEN = re.compile(r"--listen(?:=|[ \t]+)(?P<endpoint>\S+)")


class PortMap:
    """The page's ports: each port the docs name gets a free one (the same all over the page), Redis's
    port the page's redis-server."""

    def __init__(self, redis_port: int | None = None, free_port: Any = None) -> None:
        from tests.test_e2e_twistd import free_port as default_free_port

        self.redis_port = redis_port
        self.ports: dict[int, int] = {}
        self._free_port = free_port or default_free_port

    def port(self, doc_port: int) -> int:
        if doc_port in DOC_REDIS_PORTS and self.redis_port:
            return self.redis_port
        if doc_port not in self.ports:
            taken = set(self.ports.values()) | {self.redis_port}
            port = self._free_port()
            while port in taken:
                port = self._free_port()
            self.ports[doc_port] = port
        return self.ports[doc_port]

    def rewrite(self, text: str) -> str:
        """``text`` with the docs' addresses replaced by the page's."""
        return _ADDRESS.sub(self._address, text)

    def rewrite_shell(self, text: str) -> str:
        """``rewrite``, plus ``redis-cli -p PORT`` and ``curl -sS --fail-with-body`` (where they are commands,
        not words in a string)."""
        text = self.rewrite(text)
        if self.redis_port:
            text = _REDIS_CLI.sub(self._redis_cli, text)
        return _CURL.sub(r"\g<lead>curl -sS --fail-with-body\g<rest>", text)

    def _redis_cli(self, match: re.Match[str]) -> str:
        rest = match.group("rest")
        if re.search(r"[ \t]-u[ \t]", rest):
            pass  # its URL was rewritten
        elif re.search(r"[ \t]-p[ \t]+\d+", rest):
            rest = re.sub(r"([ \t]-p[ \t]+)\d+", rf"\g<1>{self.redis_port}", rest, count=1)
        else:
            rest = f" -p {self.redis_port}{rest}"
        return f"{match.group('lead')}redis-cli{rest}"

    def _address(self, match: re.Match[str]) -> str:
        if match.group("url"):
            if not self.redis_port:
                return match.group(0)
            return f"{match.group('scheme')}{match.group('auth') or ''}127.0.0.1:{self.redis_port}"
        host = match.group("host")
        host = "127.0.0.1" if host in ("localhost", "0.0.0.0", "[::1]") else host
        return f"{host}:{self.port(int(match.group('port')))}"


def listen_on_loopback(command: str, ports: PortMap) -> tuple[str, int]:
    """A rewritten server command made to listen on 127.0.0.1, and its port."""
    match = _LISTEN.search(command)
    if match is None:
        port = ports.port(8080)
        return f"{command} --listen tcp:{port}:interface=127.0.0.1", port
    endpoint = match.group("endpoint").strip("'\"")
    parts = endpoint.split(":")
    if parts[0] not in ("tcp", "tcp6") or len(parts) < 2 or not parts[1].isdigit():
        raise ValueError(f"--listen {endpoint}: the doc runner serves tcp:PORT endpoints only")
    if not any(p.startswith("interface=") for p in parts[2:]):
        endpoint += ":interface=127.0.0.1"
    return command[: match.start("endpoint")] + endpoint + command[match.end("endpoint") :], int(parts[1])


_URI_STRING = re.compile(r"""["']([A-Za-z][\w-]*(?:[./][\w-]+)*)["']""")
_NOT_TOPICS = re.compile(r"^wamp\.|\.(?:py|md|js|mjs|cjs|json|html|css|png|txt|pem|key|ini|io|com|org|net)$")


def topic_candidates(texts: Iterable[str], limit: int = 150) -> list[str]:
    """URI-like strings quoted in ``texts`` (the page's code blocks, the served app's source): the observer
    subscribes to each exactly, as the app's pages would, so that topic instances exist to broadcast."""
    found: list[str] = []
    for text in texts:
        for match in _URI_STRING.finditer(text):
            uri = match.group(1)
            if len(uri) <= 80 and not _NOT_TOPICS.search(uri) and uri not in found:
                found.append(uri)
    return found[:limit]


def app_source(command: str, directory: Path) -> str:
    """The source of the module a server command's ``--app MODULE:NAME`` names (empty if not found)."""
    match = re.search(r"--app(?:=|[ \t]+)['\"]?([\w.]+):", command)
    if match is None:
        return ""
    path = directory.joinpath(*match.group(1).split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.exists():
            return candidate.read_text(encoding="utf-8")
    return ""


_SENDS = re.compile(
    r"(?<![\w/.-])curl\b[^\n]*?(?:-X[ \t]*(?:POST|PUT|PATCH|DELETE)|--request[ \t=]+(?:POST|PUT|PATCH|DELETE)"
    r"|[ \t]-d\b|--data|--json\b|[ \t]-F\b|--form\b)"
    r"|(?<![\w/.-])wamp\b[^\n]*[ \t]publish[ \t]"
)
_TARGET_PORT = re.compile(r"(?:localhost|127\.0\.0\.1):(\d+)")


def send_targets(script: str) -> list[int] | None:
    """The ports the sending commands (``curl`` with a body or a writing method, ``wamp publish``) of a
    (rewritten) script target; None if none sends."""
    flat = re.sub(r"\\\n[ \t]*", " ", script)
    sends = [line for line in flat.splitlines() if _SENDS.search(line)]
    if not sends:
        return None
    return [int(p) for line in sends for p in _TARGET_PORT.findall(line)]


# --- outcomes --------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What became of one block (or one step of a shell block)."""

    where: str
    kind: str
    status: str  # ok, FAILED, checked, skipped, not run
    command: str = ""
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.status == "FAILED"

    def __str__(self) -> str:
        head = f"{self.where} {self.kind}: {self.status}"
        lines = [head]
        if self.command:
            lines += ["  $ " + line for line in self.command.strip().splitlines()]
        if self.detail:
            lines += ["  | " + line for line in self.detail.rstrip().splitlines()]
        return "\n".join(lines)


def report(outcomes: Iterable[Outcome]) -> str:
    outcomes = list(outcomes)
    failed = [o for o in outcomes if o.failed]
    parts = [str(o) for o in failed]
    parts.append(
        "every block of the page:\n" + "\n".join(f"  {o.where} {o.kind}: {o.status}" for o in outcomes)
    )
    parts.append(CONVENTION)
    return "\n\n".join(parts)


def _tail(text: str, limit: int = 3000) -> str:
    return text if len(text) <= limit else "...\n" + text[-limit:]


# --- running a page --------------------------------------------------------------------------------------

_BAD_LOG = re.compile(r"#(?:warn|error|critical)\]|Traceback \(most recent call last\)|Unhandled")


class NodeUnavailable(Exception):
    """Node or npm (or a package) is missing here: the Node blocks cannot run."""


def node_modules_for(package: str) -> Path:
    """The ``node_modules`` directory holding ``package`` (installed into .cache/ the first time)."""
    from tests import autobahn_node
    from tests.npm import NpmFailed, npm_install

    if shutil.which("node") is None:
        raise NodeUnavailable(f"node is missing: {autobahn_node.INSTALL_HINT}")
    if package == "autobahn":
        try:
            return autobahn_node.node_modules()
        except autobahn_node.NodeMissing as missing:
            raise NodeUnavailable(str(missing)) from None
    version = NODE_PACKAGES[package]
    try:
        return npm_install(f"node-{package}-{version}", package, version)
    except NpmFailed as failed:
        raise NodeUnavailable(f"{failed}: {autobahn_node.INSTALL_HINT}") from None


@dataclass(eq=False)  # told apart by identity: a dict key per running server
class _Server:
    where: str
    command: str
    process: Any
    port: int
    on_bus: bool
    realm: str
    ws_path: str
    observer: Any = None
    observer_error: str = ""
    baseline: set[int] = field(default_factory=set)
    log_offset: int = 0


@dataclass(eq=False)
class _Watcher:
    where: str
    command: str
    process: Any
    port: int | None
    check: bool
    offset: int = 0  # where its output stood once it was ready


class PageRun:
    """Runs one page's blocks in order for ``test`` (a ``tests.support.ServerTestCase``, whose cleanups stop
    everything started here)."""

    def __init__(self, test: Any, page: Page) -> None:
        self.test = test
        self.page = page
        self.outcomes: list[Outcome] = []
        self.servers: list[_Server] = []
        self.watchers: list[_Watcher] = []
        self.unavailable: list[str] = []  # what was skipped because this machine lacks it
        self.redis: Any = None
        self.redis_client: Any = None
        self.bus_messages: Any = None
        self.ports = PortMap()
        self.directory = Path(tempfile.mkdtemp(prefix="sandstone-docs-"))
        test.addCleanup(shutil.rmtree, self.directory, True)
        for entry in REPO.iterdir():
            if entry.name not in (".git", "twistd.pid", "node_modules") and not entry.name.startswith(
                "_trial_temp"
            ):
                (self.directory / entry.name).symlink_to(entry)
        path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        # unbuffered: the output of a process left running (a watcher) is read while it runs
        self.environment = dict(os.environ, PATH=path, PYTHONPATH=str(self.directory), PYTHONUNBUFFERED="1")

    # the page

    async def run(self) -> list[Outcome]:
        from tests.support import pending_websocket_timers, wait_until

        # runs last: autobahn's client-side WebSocket timers are flushed once everything is closed
        self.test.addCleanup(wait_until, lambda: not pending_websocket_timers(), 2.0)
        runnable = [b for b in self.page.blocks if b.runs]
        if any(re.search(r"redis", b.text, re.I) for b in runnable):
            self._start_redis()
        has_server = any(step.kind == "server" for b in runnable if b.kind == "sh" for step in plan_shell(b))
        if self.redis is not None and not has_server:
            for number, command in enumerate(DEFAULT_CLUSTER, 1):
                where = f"{self.page.name} (the runner's node {number} of the README's two-node cluster)"
                self.outcomes.append(await self._start_server(where, command))
        for block in self.page.blocks:
            await self._run_block(block)
        for watcher in list(self.watchers):
            await self._stop_watcher(watcher, "the page ended")
        problems = await self._effects({}, None, check_events=False)
        if problems:
            self.outcomes.append(
                Outcome(f"{self.page.name} (end)", "servers", "FAILED", detail="\n".join(problems))
            )
        return self.outcomes

    def _start_redis(self) -> None:
        import redis

        from tests.redis_server import RedisServer

        self.redis = RedisServer()
        self.test.addCleanup(self.redis.stop)
        self.redis.start()  # SkipTest without redis-server (RuntimeError under CI=true)
        self.ports = PortMap(self.redis.port)
        self.redis_client = redis.Redis.from_url(self.redis.url, decode_responses=True, socket_timeout=5)
        self.test.addCleanup(self.redis_client.close)
        # MONITOR, not a subscription: PUBLISH replies (how many received it, which pages may show) do not
        # count the runner.
        self.bus_messages = self.redis_client.monitor()
        self.bus_messages.__enter__()
        self.test.addCleanup(self.bus_messages.__exit__, None, None, None)
        self._drain_bus()

    def _drain_bus(self) -> list[str]:
        """The messages published on public bus channels (``...:events``, ``...:deliveries``) since the last
        call: every command Redis ran up to the ``ECHO`` the runner sends now."""
        if self.bus_messages is None:
            return []
        token = f"doc-runner-{uuid.uuid4().hex}"
        self.redis_client.echo(token)
        messages = []
        while True:
            command = self.bus_messages.next_command()["command"]  # raises after socket_timeout
            if command == f"ECHO {token}":
                return messages
            name, _, rest = command.partition(" ")
            channel, _, message = rest.partition(" ")
            if name.upper() in ("PUBLISH", "SPUBLISH") and channel.endswith((":events", ":deliveries")):
                messages.append(f"{channel}: {message[:300]}")

    # blocks

    async def _run_block(self, block: Block) -> None:
        kind = block.kind
        if kind == "skipped":
            self.outcomes.append(
                Outcome(block.where, block.lang or "untagged", "skipped", detail=block.reason)
            )
            return
        if kind == "browser":
            self.outcomes.append(Outcome(block.where, block.lang, "not run", detail="browser snippet"))
            return
        if not block.runs:
            self.outcomes.append(Outcome(block.where, block.lang or "untagged", "not run"))
            return
        before = {server: self._publications(server) for server in self.servers}
        first = len(self.outcomes)
        if kind == "sh":
            await self._run_shell(block, check_events=block.directive != "no-event-check")
        elif kind == "node":
            await self._run_node(block)
        else:
            await self._run_python(block, trial=kind == "trial")
        ran = [o for o in self.outcomes[first:] if o.status == "ok"]
        scripts = [o.command for o in ran if o.kind == "sh"]
        targets = send_targets("\n".join(scripts)) if scripts else None
        problems = await self._effects(before, targets, check_events=block.directive != "no-event-check")
        if problems:
            self.outcomes.append(Outcome(block.where, "effects", "FAILED", detail="\n".join(problems)))

    async def _run_shell(self, block: Block, check_events: bool) -> None:
        for step in plan_shell(block):
            where = f"{self.page.name}:{step.line}"
            if step.problem:
                self.outcomes.append(Outcome(where, step.kind, "FAILED", step.command, step.problem))
            elif step.kind == "server":
                self.outcomes.append(await self._start_server(where, step.command))
            elif step.kind == "watcher":
                self.outcomes.append(await self._start_watcher(where, step.command, check_events))
            elif step.kind == "script":
                script = self.ports.rewrite_shell(step.command)
                argv = ["setsid", "bash", "-e", "-o", "pipefail", "-c", script]
                self.outcomes.append(await self._execute(where, "sh", argv, script, group=True))
            else:
                self.outcomes.append(Outcome(where, step.kind, "checked", step.command, step.note))

    async def _run_python(self, block: Block, trial: bool) -> None:
        source = self.ports.rewrite(block.text)
        title = block.title
        if title is not None:
            if "/" in title or not title.endswith(".py"):
                detail = (
                    f'title="{title}": the runner saves blocks as a file name ending in .py, in no directory'
                )
                self.outcomes.append(Outcome(block.where, "python", "FAILED", "", detail))
                return
            _write(self.directory / title, source)
        if trial:
            directory = self.directory / f"_doc_trial_{block.line}"
            directory.mkdir()
            module = Path(title).stem if title else f"test_doc_example_{block.line}"
            (directory / f"{module}.py").write_text(source)
            argv = [sys.executable, "-m", "twisted.trial", module]
            outcome = await self._execute(
                block.where, "python (trial)", argv, f"trial {module}", cwd=directory
            )
            if outcome.status == "ok" and not re.search(r"^PASSED \(.*successes=[1-9]", outcome.detail, re.M):
                outcome.status = "FAILED"
                outcome.detail += "\n(trial ran no test)"
            self.outcomes.append(outcome)
            return
        script = self.directory / (title or f"_doc_block_{block.line}.py")
        if title is None:
            _write(script, source)
        argv = [sys.executable, script.name]
        self.outcomes.append(await self._execute(block.where, "python", argv, f"python {script.name}"))

    async def _run_node(self, block: Block) -> None:
        modules = self.directory / "node_modules"
        modules.mkdir(exist_ok=True)
        for package in block.node_packages():
            if package not in NODE_PACKAGES or (modules / package).exists():
                continue
            try:
                installed = node_modules_for(package)
            except NodeUnavailable as missing:
                if os.environ.get("CI") == "true":
                    detail = f"{missing} (CI=true: the Node examples must run)"
                    self.outcomes.append(Outcome(block.where, "node", "FAILED", "", detail))
                else:
                    self.unavailable.append(f"{block.where}: {missing}")
                    self.outcomes.append(Outcome(block.where, "node", "skipped", "", str(missing)))
                return
            (modules / package).symlink_to(installed / package)
        commonjs = re.search(r"\brequire\(", block.text)
        script = self.directory / f"_doc_block_{block.line}.{'cjs' if commonjs else 'mjs'}"
        script.write_text(self.ports.rewrite(block.text))
        node = shutil.which("node") or "node"
        self.outcomes.append(
            await self._execute(block.where, "node", [node, script.name], f"node {script.name}")
        )

    async def _execute(
        self, where: str, kind: str, argv: list[str], shown: str, cwd: Path | None = None, group: bool = False
    ) -> Outcome:
        """Run ``argv`` to its end (at most ``BLOCK_TIMEOUT``): ok when it exits with status 0."""
        from tests.support import wait_until

        process = _spawn(argv, cwd or self.directory, self.environment)
        try:
            await wait_until(lambda: not process.running, timeout=BLOCK_TIMEOUT, interval=0.02)
        except AssertionError:
            _kill(process, group)
            await process.ended
            detail = f"still running after {BLOCK_TIMEOUT:.0f} s: killed\n{_tail(process.output)}"
            return Outcome(where, kind, "FAILED", shown, detail)
        if group:  # what the script left running in the background (``cmd &``) ends with it
            _kill_group(process.pid)
        if process.exit_code != 0:
            detail = f"exit status {process.exit_code} (signal {process.signal})\n{_tail(process.output)}"
            return Outcome(where, kind, "FAILED", shown, detail)
        return Outcome(where, kind, "ok", shown, _tail(process.output))

    # servers

    async def _start_server(self, where: str, command: str) -> Outcome:
        from tests.support import sleep, wait_until
        from tests.test_e2e_twistd import accepts

        try:
            command, port = listen_on_loopback(self.ports.rewrite(command), self.ports)
        except ValueError as error:
            return Outcome(where, "server", "FAILED", command, str(error))
        note = ""
        for earlier in [s for s in self.servers if s.port == port]:
            for watcher in [w for w in self.watchers if w.port == port]:
                await self._stop_watcher(watcher, f"its server was replaced by the one of {where}")
            await self._stop(earlier)
            self.servers.remove(earlier)
            note = f"(stopped the server of {earlier.where} first: same port, as a reader would)\n"
        workers = re.search(r"--workers(?:=|[ \t]+)(\d+)", command)
        on_bus = "--redis" in command
        nodes_before = self._bus_nodes() if on_bus else 0
        process = _spawn(["bash", "-c", f"exec env {command}"], self.directory, self.environment)
        self.test.addCleanup(self._stop_process, process)
        try:
            await wait_until(
                lambda: not process.running or accepts(port), SERVER_START_TIMEOUT, interval=0.05
            )
            if on_bus and self.redis_client is not None:
                expected = nodes_before + (int(workers.group(1)) if workers else 1)
                await wait_until(lambda: not process.running or self._bus_nodes() >= expected, 20.0, 0.05)
        except AssertionError:
            return Outcome(where, "server", "FAILED", command, f"not ready in time\n{_tail(process.output)}")
        if not process.running:
            detail = f"{note}exited with status {process.exit_code} before serving\n{_tail(process.output)}"
            return Outcome(where, "server", "FAILED", command, detail)
        realm = re.search(r"--realm(?:=|[ \t]+)(\S+)", command)
        ws_path = re.search(r"--ws-path(?:=|[ \t]+)(\S+)", command)
        server = _Server(
            where, command, process, port, on_bus, realm.group(1) if realm else "realm1",
            ws_path.group(1) if ws_path else "/ws",
        )  # fmt: skip
        await self._observe(
            server, [b.text for b in self.page.blocks] + [app_source(command, self.directory)]
        )
        await sleep(SETTLE)  # EVENTs a topic sends its new subscriber are no block's doing
        server.baseline = self._publications(server)
        server.log_offset = len(process.output)
        self.servers.append(server)
        observed = "observed" if server.observer else f"not observed: {server.observer_error}"
        return Outcome(where, "server", "ok", command, f"{note}listening on 127.0.0.1:{port} ({observed})")

    async def _start_watcher(self, where: str, command: str, check: bool) -> Outcome:
        """Start a command a reader leaves running (``wamp ... subscribe``), once it is connected."""
        from tests.support import sleep, wait_until

        command = self.ports.rewrite_shell(command)
        process = _spawn(["bash", "-c", f"exec env {command}"], self.directory, self.environment)
        self.test.addCleanup(self._stop_process, process)
        wamp = (_words(command) or [""])[0] == "wamp"
        ready = (lambda: "connected:" in process.output) if wamp else (lambda: bool(process.output.strip()))
        try:
            await wait_until(lambda: not process.running or ready(), timeout=10.0, interval=0.05)
        except AssertionError:
            await self._stop_process(process)
            return Outcome(
                where, "watcher", "FAILED", command, f"not connected in 10 s\n{_tail(process.output)}"
            )
        if not process.running:
            detail = f"exited with status {process.exit_code}\n{_tail(process.output)}"
            return Outcome(where, "watcher", "FAILED", command, detail)
        await sleep(SETTLE)  # its SUBSCRIBE follows the join
        port = _TARGET_PORT.search(command)
        watcher = _Watcher(where, command, process, int(port.group(1)) if port else None, check)
        watcher.offset = len(process.output)
        self.watchers.append(watcher)
        return Outcome(where, "watcher", "ok", command, "left running, as in a terminal of its own")

    async def _stop_watcher(self, watcher: _Watcher, why: str) -> None:
        """Stop a watcher; it must have printed an event by then (unless its block says no-event-check)."""
        self.watchers.remove(watcher)
        await self._stop_process(watcher.process)
        printed = watcher.process.output[watcher.offset :].splitlines()
        wamp = (_words(watcher.command) or [""])[0] == "wamp"
        events = (
            [line for line in printed if line.startswith('{"args"')] if wamp else [p for p in printed if p]
        )
        if watcher.check and not events:
            detail = (
                f"stopped ({why}) without having printed any event: add the command that makes one after "
                "it, or mark its block <!-- doc-runner: no-event-check (reason) -->\n"
                f"{_tail(watcher.process.output)}"
            )
            self.outcomes.append(Outcome(watcher.where, "watcher", "FAILED", watcher.command, detail))

    def _bus_nodes(self) -> int:
        return len(self.redis_client.pubsub_channels("*:node:*"))

    async def _observe(self, server: _Server, texts: list[str]) -> None:
        """Join an observer session to ``server``: a prefix subscription to everything, and exact ones to the
        URIs quoted in ``texts``."""
        from autobahn.twisted.websocket import WampWebSocketClientFactory
        from autobahn.wamp.types import ComponentConfig
        from twisted.internet import defer, reactor

        from tests.support import SERIALIZERS, Client

        client = Client(ComponentConfig(server.realm))
        url = f"ws://127.0.0.1:{server.port}{server.ws_path}"
        factory = WampWebSocketClientFactory(lambda: client, url=url, serializers=[SERIALIZERS["json"]()])
        client.connector = reactor.connectTCP("127.0.0.1", server.port, factory, timeout=5)
        self.test.addCleanup(self._disconnect, client)
        try:
            await client.joined.addTimeout(10, reactor)
        except Exception as error:  # the app may want credentials: the effects checks then say so
            server.observer_error = f"the runner's observer could not join: {error!r}"
            return
        subscriptions = [client.record("", match="prefix")]
        subscriptions += [client.record(uri) for uri in topic_candidates(texts)]
        await defer.DeferredList(subscriptions, consumeErrors=True)
        server.observer = client

    async def _disconnect(self, client: Any) -> None:
        """Close an observer's connection; wait (5 s at most: it may never have opened) until it is gone."""
        from tests.support import wait_until

        client.connector.disconnect()
        try:
            await wait_until(lambda: client.connector.state == "disconnected", timeout=5.0)
            if client.joined.called and not client.disconnected.called:
                await wait_until(lambda: client.disconnected.called, timeout=5.0)
        except AssertionError:
            pass

    def _publications(self, server: _Server) -> set[int]:
        if server.observer is None:
            return set()
        received = server.observer.received.values()
        return {event.details.publication for events in received for event in events if event.details}

    async def _stop(self, server: _Server) -> None:
        if server.observer is not None:
            await self._disconnect(server.observer)
        await self._stop_process(server.process)

    async def _stop_process(self, process: Any) -> None:
        from tests.support import stop_process

        await stop_process(process)

    # effects

    async def _effects(
        self, before: dict[_Server, set[int]], targets: list[int] | None, check_events: bool
    ) -> list[str]:
        """What went wrong after a block: publications that did not reach the nodes, log warnings, exits."""
        from tests.support import sleep, wait_until

        expected: dict[_Server, int] = {}  # publications each server must receive
        messages = self._drain_bus()
        problems = []
        if check_events:
            for server in self.servers:
                if server.on_bus and messages:
                    expected[server] = len(messages)
            for port in targets or ():
                target = next((s for s in self.servers if s.port == port), None)
                if target is None:
                    continue
                for server in [s for s in self.servers if s.on_bus] if target.on_bus else [target]:
                    expected[server] = max(expected.get(server, 0), 1)

        def missing() -> list[tuple[_Server, int]]:
            result = []
            for server in self.servers:
                want = expected.get(server, 0)
                got = len(self._publications(server) - before.get(server, server.baseline))
                if got < want:
                    result.append((server, got))
            return result

        if expected:
            try:
                await wait_until(lambda: not missing(), timeout=EFFECT_TIMEOUT, interval=0.05)
            except AssertionError:
                pass
        await sleep(0.1)  # what the nodes log about the block's messages
        for server, got in missing():
            if server.observer is None:
                problems.append(f"the node of {server.where} cannot be observed: {server.observer_error}")
                continue
            problems.append(
                f"the node of {server.where} (port {server.port}) received {got} new publication(s), "
                f"expected at least {expected[server]}"
            )
        if problems and messages:
            problems.append("bus messages this block published:\n" + "\n".join(f"  {m}" for m in messages))
        for server in self.servers:
            output = server.process.output
            bad = [line for line in output[server.log_offset :].splitlines() if _BAD_LOG.search(line)]
            server.log_offset = len(output)
            if bad:
                problems.append(
                    f"the node of {server.where} (port {server.port}) logged:\n"
                    + "\n".join(f"  {b}" for b in bad)
                )
            if not server.process.running:
                problems.append(
                    f"the node of {server.where} exited (status {server.process.exit_code}):\n"
                    f"{_tail(output, 1500)}"
                )
        self.servers = [s for s in self.servers if s.process.running]
        for watcher in [w for w in self.watchers if not w.process.running]:
            if watcher.process.exit_code == 0:  # e.g. ``wamp subscribe --times 1``: done
                await self._stop_watcher(watcher, "it ended")
            else:
                self.watchers.remove(watcher)
                problems.append(
                    f"the watcher of {watcher.where} exited (status {watcher.process.exit_code}):\n"
                    f"{_tail(watcher.process.output, 1500)}"
                )
        return problems


def _write(path: Path, text: str) -> None:
    """Write a file of the page's directory, never through its symlinks into the checkout."""
    if path.is_symlink():
        path.unlink()
    path.write_text(text, encoding="utf-8")


def _spawn(argv: list[str], cwd: Path, environment: dict[str, str]) -> Any:
    from twisted.internet import reactor

    from tests.test_e2e_twistd import Twistd

    process = Twistd()  # a ProcessProtocol collecting output, with an ``ended`` Deferred
    executable = shutil.which(argv[0], path=environment.get("PATH")) or argv[0]
    process.pid = reactor.spawnProcess(process, executable, argv, env=environment, path=str(cwd)).pid
    return process


def _kill_group(pgid: int) -> None:
    """SIGTERM what is left of the process group ``pgid`` (a script's, made by ``setsid``)."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        pass


def _kill(process: Any, group: bool) -> None:
    """SIGKILL ``process`` (with ``group``: its process group, which ``setsid`` made its pid's)."""
    if not process.running:
        return
    if group:
        try:
            os.killpg(process.pid, signal.SIGKILL)
            return
        except (ProcessLookupError, PermissionError):
            pass
    process.transport.signalProcess("KILL")


# --- python -m tests.doc_runner --------------------------------------------------------------------------


def describe(page: Page) -> list[str]:
    """One line per block (and per shell step): how the runner treats it."""
    lines = [str(p) for p in page.problems]
    for block in page.blocks:
        if block.kind != "sh":
            extra = f" ({block.reason})" if block.reason else ""
            lines.append(f"{block.where} {block.lang or 'untagged'}: {block.kind}{extra}")
            continue
        for step in plan_shell(block):
            first = _flat(step.command).splitlines()[0] if step.command.strip() else ""
            status = f"PROBLEM {step.problem}" if step.problem else step.note or "run"
            lines.append(f"{block.page}:{step.line} sh {step.kind}: {first[:90]} -> {status}")
    return lines


def main(arguments: list[str]) -> int:
    paths = [Path(a).resolve() for a in arguments] or doc_pages()
    problems = 0
    for path in paths:
        page = read_page(path)
        problems += len(page.problems)
        print(f"== {page.name}")
        print("\n".join(describe(page)))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
