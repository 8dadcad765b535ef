"""End-to-end: the example pages in a real browser. Headless Chromium (Debian's package, driven by
Playwright) opens ``examples.blog`` and ``examples.sensors`` served by ``twistd -n sandstone`` subprocesses on
free loopback ports; the pages get autobahn-js offline (see ``tests/browser.py``).

Skipped, with the command that installs what is missing, when Playwright, Chromium or npm is not there,
except under ``CI=true`` (``.ci/run`` installs them), where they must run.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import signal
import urllib.error
import urllib.request
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.browser import (
    BLOG_SCRIPT,
    PAGES,
    AutobahnScript,
    Server,
    WebSocketCutter,
    autobahn_js,
    launch,
    new_context,
    skip_without_browser,
)

TIMEOUT = 10_000  # ms: how long a page may take to show what a test waits for
INJECTION = "<img src=x onerror=alert(document.domain)>"


def post_article(server: Server, title: Any) -> tuple[int, Any]:
    """POST /api/articles over plain HTTP (not through a page): the status and the JSON answer."""
    request = urllib.request.Request(
        f"{server.url}api/articles",
        data=json.dumps({"title": title}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


class AutobahnPinTests(SynchronousTestCase):
    """The pages pin one autobahn-js, and its hash is the npm package's file's."""

    def setUp(self) -> None:
        skip_without_browser(self, autobahn_js)

    def test_both_pages_load_the_same_pinned_autobahn_js(self) -> None:
        self.assertEqual(AutobahnScript(PAGES / "sensors" / "index.html"), BLOG_SCRIPT)

    def test_integrity_is_the_sha384_of_the_npm_file(self) -> None:
        digest = base64.b64encode(hashlib.sha384(autobahn_js().read_bytes()).digest()).decode()
        self.assertEqual(BLOG_SCRIPT.integrity, f"sha384-{digest}")


class BrowserTestCase(SynchronousTestCase):
    """A headless Chromium per test; pages that record dialogs, script errors and requests to the outside."""

    def setUp(self) -> None:
        skip_without_browser(self)
        from playwright.sync_api import expect, sync_playwright

        self.expect = expect
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.blocked: list[str] = []
        # runs last: whatever a test did, no page may have raised, alerted or reached outside
        self.addCleanup(self.assertNothingUnexpected)
        self.playwright = sync_playwright().start()
        self.addCleanup(self.playwright.stop)
        self.browser = launch(self.playwright)
        self.addCleanup(self.browser.close)

    def assertNothingUnexpected(self) -> None:
        self.assertEqual((self.dialogs, self.errors, self.blocked), ([], [], []))

    def serve(self, app: str = "examples.blog:app") -> Server:
        server = Server(app).start()
        self.addCleanup(server.close)
        return server

    def open_page(self, server: Server, width: int = 1280, height: int = 800) -> Any:
        """A page of ``server`` in a browser context of its own (a window of its own), once connected."""
        context = new_context(self.browser, self.blocked, viewport={"width": width, "height": height})
        self.addCleanup(context.close)
        page = context.new_page()
        page.on("dialog", self.on_dialog)
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.goto(server.url)
        self.expect(page.locator("#connection")).to_have_text("Connected", timeout=TIMEOUT)
        return page

    def on_dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def notifications(self, page: Any) -> Any:
        return page.locator("#notifications li .text")

    def chat(self, page: Any) -> Any:
        return page.locator("#chat-log li")


class BlogPageTests(BrowserTestCase):
    def test_posted_article_shows_on_every_open_page(self) -> None:
        server = self.serve()
        first, second = self.open_page(server), self.open_page(server)
        self.assertEqual(post_article(server, "Unicorns spotted in Alaska")[0], 201)
        self.assertEqual(post_article(server, "Dragons seen in Wales")[0], 201)
        for page in (first, second):
            self.assertIn(page.locator("#notifications").get_attribute("role"), ("log", "status"))
            self.expect(self.notifications(page)).to_have_text(
                [
                    "An article has just been published: Dragons seen in Wales",
                    "An article has just been published: Unicorns spotted in Alaska",
                ],
                timeout=TIMEOUT,
            )
            self.expect(page.locator("#articles li .title")).to_have_text(
                ["Dragons seen in Wales", "Unicorns spotted in Alaska"]
            )

    def test_page_lists_the_articles_published_before_it_opened(self) -> None:
        server = self.serve()
        post_article(server, "Older")
        post_article(server, "Newer")
        page = self.open_page(server)
        self.expect(page.locator("#articles li .title")).to_have_text(["Newer", "Older"])
        self.expect(self.notifications(page)).to_have_count(0)

    def test_publishing_through_the_form_notifies_the_other_page(self) -> None:
        server = self.serve()
        writer, reader = self.open_page(server), self.open_page(server)
        writer.get_by_label("Title").fill("Published from the page")
        writer.get_by_role("button", name="Publish").click()
        expected = "An article has just been published: Published from the page"
        self.expect(self.notifications(reader)).to_have_text([expected], timeout=TIMEOUT)
        self.expect(self.notifications(writer)).to_have_text([expected], timeout=TIMEOUT)
        self.expect(writer.get_by_label("Title")).to_have_value("")
        self.expect(reader.locator("#articles li .title")).to_have_text(["Published from the page"])

    def test_empty_title_shows_the_servers_error(self) -> None:
        server = self.serve()
        code, answer = post_article(server, "")
        self.assertEqual(code, 400)
        page = self.open_page(server, width=390, height=844)  # a phone
        page.get_by_role("button", name="Publish").click()
        self.expect(page.get_by_role("alert")).to_have_text(answer["error"], timeout=TIMEOUT)
        self.expect(page.locator("#articles li")).to_have_count(0)
        # nothing wider than the phone's screen
        self.assertLessEqual(page.evaluate("document.documentElement.scrollWidth"), 390)

    def test_chat_between_two_pages_and_not_a_third_on_another_channel(self) -> None:
        server = self.serve()
        alice, bob, carol = self.open_page(server), self.open_page(server), self.open_page(server)
        carol.get_by_label("Channel").fill("random")
        carol.get_by_role("button", name="Join").click()
        for page, channel in ((alice, "general"), (bob, "general"), (carol, "random")):
            self.expect(self.chat(page).filter(has_text=f"Welcome on {channel}")).to_have_count(
                1, timeout=TIMEOUT
            )

        alice.get_by_label("Message").fill("hello from A")
        alice.get_by_label("Message").press("Enter")
        self.expect(self.chat(bob).filter(has_text="hello from A")).to_have_count(1, timeout=TIMEOUT)
        self.expect(self.chat(alice).filter(has_text="hello from A")).to_have_count(1)
        self.expect(alice.get_by_label("Message")).to_have_value("")

        # Alice's next message, on random, reaches Carol after anything Alice published before it would have
        alice.get_by_label("Channel").fill("random")
        alice.get_by_role("button", name="Join").click()
        self.expect(self.chat(alice).filter(has_text="Welcome on random")).to_have_count(1, timeout=TIMEOUT)
        alice.get_by_label("Message").fill("second from A")
        alice.get_by_role("button", name="Send").click()
        self.expect(self.chat(carol).filter(has_text="second from A")).to_have_count(1, timeout=TIMEOUT)
        self.expect(self.chat(carol).filter(has_text="hello from A")).to_have_count(0)
        self.expect(self.chat(bob).filter(has_text="second from A")).to_have_count(0)

    def test_html_in_titles_and_messages_is_shown_as_text(self) -> None:
        server = self.serve()
        writer, reader = self.open_page(server), self.open_page(server)
        writer.get_by_label("Title").fill(INJECTION)
        writer.get_by_role("button", name="Publish").click()
        self.expect(self.chat(reader).filter(has_text="Welcome on general")).to_have_count(1, timeout=TIMEOUT)
        writer.get_by_label("Message").fill(INJECTION)
        writer.get_by_role("button", name="Send").click()
        for page in (writer, reader):
            self.expect(self.notifications(page)).to_have_text(
                [f"An article has just been published: {INJECTION}"], timeout=TIMEOUT
            )
            self.expect(page.locator("#articles li .title")).to_have_text([INJECTION])
            self.expect(self.chat(page).locator(".text").filter(has_text=INJECTION)).to_have_count(1)
            self.assertEqual(page.locator("img").count(), 0)
        self.assertEqual(self.dialogs, [])

    def test_page_reconnects_after_the_server_restarts(self) -> None:
        server = self.serve()
        page = self.open_page(server)
        connection = page.locator("#connection")
        for how in (signal.SIGTERM, signal.SIGKILL):  # a graceful stop (1001, no GOODBYE), then a crash
            server.stop(how)
            self.expect(connection).to_have_attribute("data-state", "closed", timeout=TIMEOUT)
            self.expect(connection).to_contain_text("Disconnected")
            server.start()
            self.expect(connection).to_have_text("Connected", timeout=TIMEOUT)
            title = f"Back after {how.name}"
            self.assertEqual(post_article(server, title)[0], 201)
            self.expect(self.notifications(page).first).to_have_text(
                f"An article has just been published: {title}", timeout=TIMEOUT
            )
            # the chat channel was joined again too
            self.expect(self.chat(page).filter(has_text="Welcome on general")).to_have_count(1)

    def test_chat_catches_up_after_its_connection_was_down(self) -> None:
        server = self.serve()
        reader, writer = self.open_page(server), self.open_page(server)
        cutter = WebSocketCutter(reader.context)
        reader.reload()  # its WebSocket goes through the cutter from now on
        self.expect(reader.locator("#connection")).to_have_text("Connected", timeout=TIMEOUT)
        self.expect(self.chat(writer).filter(has_text="Welcome on general")).to_have_count(1, timeout=TIMEOUT)
        self.expect(self.chat(reader).filter(has_text="Welcome on general")).to_have_count(1, timeout=TIMEOUT)

        def send(text: str) -> None:
            writer.get_by_label("Message").fill(text)
            writer.get_by_role("button", name="Send").click()
            self.expect(self.chat(writer).filter(has_text=text)).to_have_count(1, timeout=TIMEOUT)

        send("before the drop")
        self.expect(self.chat(reader).filter(has_text="before the drop")).to_have_count(1, timeout=TIMEOUT)
        cutter.cut()
        self.expect(reader.locator("#connection")).to_have_attribute("data-state", "closed", timeout=TIMEOUT)
        send("while you were away")
        send("and this too")
        cutter.restore()
        self.expect(reader.locator("#connection")).to_have_text("Connected", timeout=TIMEOUT)
        send("after the drop")
        self.expect(self.chat(reader).locator(".text")).to_have_text(
            [
                "Welcome on general",
                "before the drop",
                "while you were away",
                "and this too",
                "after the drop",
            ],
            timeout=TIMEOUT,
        )


class SensorsPageTests(BrowserTestCase):
    def test_chart_draws_every_simulated_room_and_procedures_answer(self) -> None:
        page = self.open_page(self.serve("examples.sensors:app"))
        for room in (1, 2, 3):
            self.expect(page.locator(f'#chart .series[data-room="{room}"] polyline')).to_have_count(
                1, timeout=TIMEOUT
            )
            self.assertGreaterEqual(
                int(page.locator(f'#chart .series[data-room="{room}"]').get_attribute("data-points")), 1
            )
        self.expect(page.locator('#legend li[data-room="1"]')).to_contain_text("°C")

        page.locator("#average-room").fill("2")
        page.get_by_role("button", name="Average").click()
        self.expect(page.locator("#result")).to_have_text(
            re.compile(r"^sensors\.average\(2\) → \d+\.\d\d °C$"), timeout=TIMEOUT
        )

        page.get_by_role("button", name="Report").click()  # room 4, 18.5 °C: a room of its own
        self.expect(page.locator("#result")).to_have_text("sensors.report(4, 18.5) → 1 reading of room 4")
        self.expect(page.locator('#chart .series[data-room="4"] circle')).to_have_count(1, timeout=TIMEOUT)

        page.locator("#average-room").fill("99")
        page.get_by_role("button", name="Average").click()
        self.expect(page.locator("#result")).to_have_text(
            "sensors.average(99) failed: sensors.error.no_readings: no readings for room 99"
        )
