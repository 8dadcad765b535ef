"""End-to-end: the example apps serve their pages (``examples/static/``) over real TCP, next to their APIs.

(``sandstone.testing.TestClient`` cannot fetch them: ``twisted.web.static.File`` writes through a pull
producer, which treq's in-memory transport resumes only once.) ``tests/test_browser.py`` opens the pages in
a browser.
"""

from __future__ import annotations

import treq

from examples import blog, sensors
from tests.support import ServerTestCase


class PageTestCase(ServerTestCase):
    async def get(self, path: str) -> tuple[int, list[bytes], bytes]:
        response = await self.http().get(f"{self.base_url}{path}")
        body = await treq.content(response)
        return response.code, response.headers.getRawHeaders(b"Content-Type") or [], body


class BlogPageTests(PageTestCase):
    def setUp(self) -> None:
        blog._articles.clear()
        self.addCleanup(blog._articles.clear)
        self.serve(blog.app)

    async def test_page_is_served_at_the_root(self) -> None:
        code, content_type, body = await self.get("/")
        self.assertEqual((code, content_type), (200, [b"text/html"]))
        self.assertIn(b'<label for="title">Title</label>', body)
        self.assertIn(b'<script defer src="app.js"></script>', body)

    async def test_script_and_style_are_served(self) -> None:
        for path, expected in (
            ("/app.js", b"live.connect("),
            ("/style.css", b".chat-log"),
            ("/common/live.js", b"new autobahn.Connection"),
            ("/common/base.css", b".connection"),
        ):
            code, _, body = await self.get(path)
            self.assertEqual(code, 200, path)
            self.assertIn(expected, body, path)

    async def test_the_api_keeps_its_routes(self) -> None:
        response = await self.http().post(f"{self.base_url}/api/articles", json={"title": "Hello"})
        self.assertEqual(response.code, 201)
        await treq.content(response)
        code, content_type, body = await self.get("/api/articles")
        self.assertEqual(
            (code, content_type, body), (200, [b"application/json"], b'[{"id": 1, "title": "Hello"}]')
        )

    async def test_unknown_path_is_404(self) -> None:
        self.assertEqual((await self.get("/nothing-here"))[0], 404)
        self.assertEqual((await self.get("/common/nothing-here"))[0], 404)
        self.assertEqual((await self.get("/common/app.js"))[0], 404)  # the page's own files are not there


class SensorsPageTests(PageTestCase):
    def setUp(self) -> None:
        sensors._rooms.clear()
        self.addCleanup(sensors._rooms.clear)
        self.addCleanup(sensors.simulation.stop)
        self.serve(sensors.app)

    async def test_page_is_served_at_the_root_and_starts_the_simulated_sensors(self) -> None:
        self.assertFalse(sensors.simulation.running)
        code, content_type, body = await self.get("/")
        self.assertEqual((code, content_type), (200, [b"text/html"]))
        self.assertIn(b'<svg id="chart"', body)
        self.assertTrue(sensors.simulation.running)
        self.assertEqual(sorted(sensors._rooms), [1, 2, 3])  # the first readings, at once
        self.assertEqual((await self.get("/chart.js"))[0], 200)

    async def test_shared_files_are_served_without_starting_the_simulated_sensors(self) -> None:
        for path, expected in (
            ("/common/live.js", b"new autobahn.Connection"),
            ("/common/base.css", b".connection"),
        ):
            code, _, body = await self.get(path)
            self.assertEqual(code, 200, path)
            self.assertIn(expected, body, path)
        self.assertFalse(sensors.simulation.running)
