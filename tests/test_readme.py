"""The README's "Testing your app" example must stay true: run it as written."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

import examples.blog

README = Path(__file__).resolve().parent.parent / "README.md"


def _example_namespace() -> dict[str, Any]:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    source = next(block for block in blocks if "from sandstone.testing import TestClient" in block)
    namespace: dict[str, Any] = {"__name__": "readme_example"}
    exec(compile(source, str(README), "exec"), namespace)
    return namespace


class ReadmeTestingExampleTests(SynchronousTestCase):
    def setUp(self) -> None:
        examples.blog._articles.clear()

    def test_readme_example_tests_pass(self) -> None:
        from twisted.trial.reporter import TestResult

        cls = _example_namespace()["BlogTests"]
        names = [name for name in dir(cls) if name.startswith("test_")]
        self.assertEqual(len(names), 2)
        for name in names:
            result = TestResult()
            cls(name).run(result)
            self.assertEqual((result.errors, result.failures), ([], []), name)
            self.assertEqual(result.successes, 1, name)
