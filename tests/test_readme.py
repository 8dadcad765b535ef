"""The docs must stay true: the testing guide's tests pass as written, the tutorial's excerpts of
examples/blog.py are still in it word for word, and the API reference lists every public name
(tests/test_docs.py runs the docs' other blocks)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

import examples.blog

REPO = Path(__file__).resolve().parent.parent
TESTING_GUIDE = REPO / "docs" / "guides" / "testing.md"
API_REFERENCE = REPO / "docs" / "reference" / "sandstone.md"
TUTORIAL = REPO / "docs" / "tutorial.md"
BLOG = REPO / "examples" / "blog.py"

# A Python block the tutorial quotes from examples/blog.py: marked not to run, because it is an excerpt.
_EXCERPT = re.compile(
    r"<!-- doc-runner: skip \(an excerpt of examples/blog\.py[^)]*\) -->\n```python\n(.*?)```", re.S
)


def _example_namespace() -> dict[str, Any]:
    blocks = re.findall(r"```python\n(.*?)```", TESTING_GUIDE.read_text(encoding="utf-8"), re.S)
    source = next(block for block in blocks if "class BlogTests" in block)
    namespace: dict[str, Any] = {"__name__": "readme_example"}
    exec(compile(source, str(TESTING_GUIDE), "exec"), namespace)
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


class TutorialExcerptTests(SynchronousTestCase):
    def test_excerpts_are_in_the_blog_example(self) -> None:
        excerpts = _EXCERPT.findall(TUTORIAL.read_text(encoding="utf-8"))
        self.assertGreaterEqual(len(excerpts), 5)
        blog = BLOG.read_text(encoding="utf-8")
        for excerpt in excerpts:
            self.assertIn(excerpt, blog, "the tutorial quotes this from examples/blog.py, which changed")


class ApiReferenceTests(SynchronousTestCase):
    def test_every_public_name_is_in_the_api_reference(self) -> None:
        import sandstone

        reference = API_REFERENCE.read_text(encoding="utf-8")
        documented = set(re.findall(r"^::: sandstone\.(\w+)$", reference, re.M))
        self.assertEqual(
            sorted(set(sandstone.__all__) - documented), [], "add them to docs/reference/sandstone.md"
        )
