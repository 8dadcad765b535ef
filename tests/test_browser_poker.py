"""End-to-end: the planning poker page in a real browser. Headless Chromium (Debian's package, driven by
Playwright) opens ``examples.poker`` served by ``twistd -n sandstone`` subprocesses on free loopback ports;
the pages get autobahn-js offline (see ``tests/browser.py``).

Skipped, with the command that installs what is missing, when Playwright, Chromium or npm is not there,
except under ``CI=true`` (``.ci/run`` installs them), where they must run.
"""

from __future__ import annotations

import re
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.browser import (
    BLOG_SCRIPT,
    PAGES,
    AutobahnScript,
    Server,
    WebSocketCutter,
    autobahn_js,
    new_context,
    skip_without_browser,
)
from tests.test_browser import TIMEOUT, BrowserTestCase

INJECTION = "<img src=x onerror=alert(document.domain)>"


class AutobahnPinTests(SynchronousTestCase):
    def setUp(self) -> None:
        skip_without_browser(self, autobahn_js)

    def test_the_poker_page_loads_the_pinned_autobahn_js(self) -> None:
        self.assertEqual(AutobahnScript(PAGES / "poker" / "index.html"), BLOG_SCRIPT)


class PokerPageTestCase(BrowserTestCase):
    """Windows of the poker page, each a browser context of its own (its own name in localStorage)."""

    def serve_poker(self) -> Server:
        return self.serve("examples.poker:app")

    def window(self, url: str, *, width: int = 1280, height: int = 800) -> tuple[Any, WebSocketCutter]:
        """A page at ``url`` whose WebSockets the test may cut."""
        context = new_context(self.browser, self.blocked, viewport={"width": width, "height": height})
        self.addCleanup(context.close)
        cutter = WebSocketCutter(context)
        page = context.new_page()
        page.on("dialog", self.on_dialog)
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.goto(url)
        return page, cutter

    def create_room(self, server: Server, name: str = "Sprint 42") -> Any:
        """A page that created a room through the lobby's form; it asks for a name next."""
        return self.creator(server, name)[0]

    def creator(self, server: Server, name: str = "Sprint 42") -> tuple[Any, WebSocketCutter]:
        page, cutter = self.window(server.url)
        page.get_by_label("Room name").fill(name)
        page.get_by_role("button", name="Create").click()
        self.expect(page).to_have_url(re.compile(r"\?room=[0-9a-f]{12}$"), timeout=TIMEOUT)
        return page, cutter

    def take_seat(self, page: Any, name: str) -> Any:
        page.get_by_label("Your name").fill(name)
        page.get_by_role("button", name="Join").click()
        self.expect(page.locator("#connection")).to_have_text("Connected", timeout=TIMEOUT)
        self.expect(self.person(page, name)).to_have_count(1, timeout=TIMEOUT)
        return page

    def player(self, url: str, name: str) -> tuple[Any, WebSocketCutter]:
        page, cutter = self.window(url)
        return self.take_seat(page, name), cutter

    def table(self, server: Server, *names: str) -> list[Any]:
        """A new room, with one page per name at its table."""
        first = self.take_seat(self.create_room(server), names[0])
        pages = [first, *(self.player(first.url, name)[0] for name in names[1:])]
        for page in pages:
            self.expect(page.locator("#people li")).to_have_count(len(names), timeout=TIMEOUT)
        return pages

    def person(self, page: Any, name: str) -> Any:
        return page.locator(f'#people li[data-name="{name}"]')

    def vote(self, page: Any, card: str) -> None:
        page.get_by_role("button", name=f"Vote {card}", exact=True).click()
        self.expect(page.get_by_role("button", name=f"Vote {card}", exact=True)).to_have_attribute(
            "aria-pressed", "true", timeout=TIMEOUT
        )

    def activity(self, page: Any, text: str) -> Any:
        return page.locator("#activity li .text").filter(has_text=re.compile(f"^{re.escape(text)}$"))


class PokerPageTests(PokerPageTestCase):
    def test_two_players_vote_reveal_and_start_a_new_round(self) -> None:
        server = self.serve_poker()
        alice = self.take_seat(self.create_room(server, "Sprint 42"), "Alice")
        self.expect(alice.locator("#room-name")).to_have_text("Sprint 42")
        bob, _ = self.player(alice.url, "Bob")
        for page, me in ((alice, "Alice"), (bob, "Bob")):
            self.expect(page.locator("#people li .name")).to_have_text(
                [f"Alice{' (you)' if me == 'Alice' else ''}", f"Bob{' (you)' if me == 'Bob' else ''}"],
                timeout=TIMEOUT,
            )

        self.vote(alice, "5")
        self.expect(self.person(bob, "Alice").locator(".status")).to_have_text("voted", timeout=TIMEOUT)
        self.expect(self.person(bob, "Alice")).not_to_contain_text("5")  # that, not what
        self.vote(bob, "8")
        for page in (alice, bob):
            self.expect(page.locator("#status")).to_have_text("2 of 2 at the table voted.", timeout=TIMEOUT)

        bob.get_by_role("button", name="Reveal").click()
        for page in (alice, bob):
            self.expect(self.person(page, "Alice").locator(".card-face")).to_have_text("5", timeout=TIMEOUT)
            self.expect(self.person(page, "Bob").locator(".card-face")).to_have_text("8")
            self.expect(page.locator("#average")).to_have_text("6.5")
            self.expect(page.get_by_role("button", name="Vote 3", exact=True)).to_be_disabled()
            self.expect(page.get_by_role("button", name="Reveal")).to_be_disabled()

        alice.get_by_role("button", name="New round").click()
        for page in (alice, bob):
            self.expect(page.locator("#round")).to_have_text("2", timeout=TIMEOUT)
            self.expect(page.locator("#people li .status")).to_have_text(["thinking…", "thinking…"])
            self.expect(page.locator("#result")).to_be_hidden()
            self.expect(page.get_by_role("button", name="Vote 5", exact=True)).to_have_attribute(
                "aria-pressed", "false"
            )
            self.expect(page.get_by_role("button", name="Vote 3", exact=True)).to_be_enabled()
        for line in ("Alice voted", "Bob voted", "Bob revealed the cards", "Alice started round 2"):
            self.expect(self.activity(bob, line)).to_have_count(1)

    def test_a_closed_tab_leaves_the_table(self) -> None:
        server = self.serve_poker()
        alice, bob = self.table(server, "Alice", "Bob")
        bob.close()
        self.expect(alice.locator("#people li")).to_have_count(1, timeout=TIMEOUT)
        self.expect(self.person(alice, "Bob")).to_have_count(0)
        self.expect(self.activity(alice, "Bob left")).to_have_count(1)

    def test_a_late_joiner_sees_the_round_at_once(self) -> None:
        server = self.serve_poker()
        [alice] = self.table(server, "Alice")
        self.vote(alice, "13")
        carol, _ = self.player(alice.url, "Carol")
        self.expect(self.person(carol, "Alice").locator(".status")).to_have_text("voted")
        self.expect(carol.locator("#status")).to_have_text("1 of 2 at the table voted.")
        self.expect(self.activity(carol, "Alice voted")).to_have_count(1)  # from the room's history
        self.expect(carol.locator("#people")).not_to_contain_text("13")

    def test_a_page_whose_connection_dropped_catches_up(self) -> None:
        server = self.serve_poker()
        alice, cutter = self.creator(server)
        self.take_seat(alice, "Alice")
        bob, _ = self.player(alice.url, "Bob")
        self.expect(alice.locator("#people li")).to_have_count(2, timeout=TIMEOUT)

        cutter.cut()
        self.expect(alice.locator("#connection")).to_have_attribute("data-state", "closed", timeout=TIMEOUT)
        self.expect(self.person(bob, "Alice")).to_have_count(0, timeout=TIMEOUT)
        self.vote(bob, "8")
        self.player(bob.url, "Carol")
        cutter.restore()
        self.expect(alice.locator("#connection")).to_have_text("Connected", timeout=TIMEOUT)
        # what happened meanwhile, from the room's history, once each
        self.expect(self.activity(alice, "Bob voted")).to_have_count(1, timeout=TIMEOUT)
        self.expect(self.activity(alice, "Carol joined")).to_have_count(1)
        self.expect(self.person(alice, "Bob").locator(".status")).to_have_text("voted")
        self.expect(alice.locator("#people li .name")).to_have_text(["Alice (you)", "Bob", "Carol"])
        self.vote(alice, "5")
        self.expect(self.person(bob, "Alice").locator(".status")).to_have_text("voted", timeout=TIMEOUT)
        self.expect(self.activity(alice, "Alice voted")).to_have_count(1, timeout=TIMEOUT)

    def test_names_are_shown_as_text(self) -> None:
        server = self.serve_poker()
        alice = self.take_seat(self.create_room(server, INJECTION), "Alice")
        self.expect(alice.locator("#room-name")).to_have_text(INJECTION)
        self.assertEqual(alice.locator("img").count(), 0)
        self.assertEqual(self.dialogs, [])

    def test_mistakes_are_told_in_the_page(self) -> None:
        server = self.serve_poker()
        lobby, _ = self.window(server.url, width=390, height=844)  # a phone
        lobby.get_by_role("button", name="Create").click()
        self.expect(lobby.locator("#create-error")).to_contain_text('"name"', timeout=TIMEOUT)

        entrance = self.create_room(server)
        entrance.get_by_label("Your name").fill("  ")
        entrance.get_by_role("button", name="Join").click()
        self.expect(entrance.locator("#name-error")).to_contain_text("A name is 1 to 40")
        self.take_seat(entrance, "Alice")

        missing, _ = self.window(f"{server.url}?room=000000000000")
        self.expect(missing.get_by_role("heading", name="No such room")).to_be_visible(timeout=TIMEOUT)
        self.expect(missing.locator("#missing-text")).to_contain_text("000000000000")

    def test_the_table_fits_a_phone(self) -> None:
        server = self.serve_poker()
        first = self.take_seat(self.create_room(server), "Alice")
        phone, _ = self.window(first.url, width=390, height=844)
        self.take_seat(phone, "Bob")
        self.vote(phone, "100")
        self.assertLessEqual(phone.evaluate("document.documentElement.scrollWidth"), 390)
