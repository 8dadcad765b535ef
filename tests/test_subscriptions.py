"""Tests for L{sandstone._subscriptions}: the broker's table of exact, prefix and wildcard subscriptions."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from sandstone import _subscriptions
from sandstone._subscriptions import EXACT, PREFIX, WILDCARD, SubscriptionTable


class FakeSession:
    """Stands for a session: the table only needs something hashable."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<FakeSession {self.name}>"


def uris(found: list[Any]) -> list[tuple[str, str]]:
    """(URI, policy) of matched subscriptions, in match order."""
    return [(s.uri, s.match) for s in found]


class AddTests(SynchronousTestCase):
    """Adding sessions to subscriptions."""

    def setUp(self) -> None:
        self.table = SubscriptionTable()
        self.alice, self.bob = FakeSession("alice"), FakeSession("bob")

    def test_first_add_creates_a_subscription(self) -> None:
        subscription, added = self.table.add(self.alice, "a.b", EXACT)
        self.assertTrue(added)
        self.assertEqual((subscription.uri, subscription.match), ("a.b", EXACT))
        self.assertIs(self.table.get(subscription.id), subscription)

    def test_adding_the_same_session_again_returns_the_same_subscription_not_added(self) -> None:
        first, _ = self.table.add(self.alice, "a.b", EXACT)
        second, added = self.table.add(self.alice, "a.b", EXACT)
        self.assertIs(second, first)
        self.assertFalse(added)
        self.assertEqual(list(first.sessions), [self.alice])

    def test_sessions_on_the_same_uri_and_policy_share_a_subscription(self) -> None:
        first, _ = self.table.add(self.alice, "a.b", EXACT)
        second, added = self.table.add(self.bob, "a.b", EXACT)
        self.assertIs(second, first)
        self.assertTrue(added)

    def test_same_uri_with_another_policy_is_another_subscription(self) -> None:
        ids = {self.table.add(self.alice, "a.b", match)[0].id for match in (EXACT, PREFIX, WILDCARD)}
        self.assertEqual(len(ids), 3)
        self.assertEqual(len(self.table), 3)

    def test_sessions_are_kept_in_subscription_order(self) -> None:
        sessions = [FakeSession(str(n)) for n in range(5)]
        for session in reversed(sessions):
            subscription, _ = self.table.add(session, "a", EXACT)
        self.assertEqual(list(subscription.sessions), list(reversed(sessions)))

    def test_ids_derive_from_uri_and_match_policy(self) -> None:
        first, _ = self.table.add(self.alice, "a.b", EXACT)
        other = SubscriptionTable()
        again, _ = other.add(self.bob, "a.b", EXACT)
        prefix, _ = other.add(self.bob, "a.b", PREFIX)
        self.assertEqual(first.id, again.id)  # another node names it alike
        self.assertEqual(first.id, _subscriptions.subscription_id_for("a.b", EXACT))
        self.assertNotEqual(first.id, prefix.id)
        self.assertTrue(1 <= first.id <= 2**53)

    def test_colliding_id_is_drawn_again(self) -> None:
        drawn: Iterator[int] = iter([8])
        self.patch(_subscriptions, "subscription_id_for", lambda uri, match: 7)
        self.patch(_subscriptions, "rid", lambda: next(drawn))
        first, _ = self.table.add(self.alice, "a", EXACT)
        second, _ = self.table.add(self.alice, "b", EXACT)
        self.assertEqual((first.id, second.id), (7, 8))
        self.assertIs(self.table.get(7), first)
        self.assertIs(self.table.get(8), second)


class RemoveTests(SynchronousTestCase):
    """Removing sessions; a subscription without sessions disappears."""

    def setUp(self) -> None:
        self.table = SubscriptionTable()
        self.alice, self.bob = FakeSession("alice"), FakeSession("bob")

    def test_removing_one_of_two_sessions_keeps_the_subscription(self) -> None:
        subscription, _ = self.table.add(self.alice, "a", EXACT)
        self.table.add(self.bob, "a", EXACT)
        self.assertTrue(self.table.remove(self.alice, subscription))
        self.assertEqual(list(subscription.sessions), [self.bob])
        self.assertIs(self.table.exact("a"), subscription)

    def test_removing_the_last_session_drops_an_exact_subscription(self) -> None:
        subscription, _ = self.table.add(self.alice, "a", EXACT)
        self.table.remove(self.alice, subscription)
        self.assertEqual(len(self.table), 0)
        self.assertIsNone(self.table.get(subscription.id))
        self.assertIsNone(self.table.exact("a"))
        self.assertEqual(self.table.match("a"), [])

    def test_removing_the_last_session_drops_a_prefix_subscription(self) -> None:
        subscription, _ = self.table.add(self.alice, "a", PREFIX)
        self.table.remove(self.alice, subscription)
        self.assertEqual(len(self.table), 0)
        self.assertEqual(self.table.match("a.b"), [])

    def test_removing_the_last_session_drops_a_wildcard_subscription(self) -> None:
        subscription, _ = self.table.add(self.alice, "a..c", WILDCARD)
        self.table.remove(self.alice, subscription)
        self.assertEqual(len(self.table), 0)
        self.assertEqual(self.table.match("a.b.c"), [])

    def test_removing_one_wildcard_keeps_others_of_the_same_length(self) -> None:
        gone, _ = self.table.add(self.alice, "a..c", WILDCARD)
        kept, _ = self.table.add(self.alice, "..c", WILDCARD)
        self.table.remove(self.alice, gone)
        self.assertEqual(self.table.match("a.b.c"), [kept])

    def test_removing_a_session_not_subscribed_returns_false(self) -> None:
        subscription, _ = self.table.add(self.alice, "a", EXACT)
        self.assertFalse(self.table.remove(self.bob, subscription))
        self.assertEqual(list(subscription.sessions), [self.alice])

    def test_same_uri_gets_a_new_subscription_after_being_dropped(self) -> None:
        old, _ = self.table.add(self.alice, "a", EXACT)
        self.table.remove(self.alice, old)
        new, added = self.table.add(self.alice, "a", EXACT)
        self.assertTrue(added)
        self.assertIsNot(new, old)

    def test_iterating_while_removing_is_safe(self) -> None:
        for uri in ("a", "b", "c"):
            self.table.add(self.alice, uri, EXACT)
        for subscription in self.table:
            self.table.remove(self.alice, subscription)
        self.assertEqual(len(self.table), 0)


class MatchTests(SynchronousTestCase):
    """Which subscriptions receive a publication to a given URI."""

    def setUp(self) -> None:
        self.table = SubscriptionTable()
        self.session = FakeSession("s")

    def add(self, uri: str, match: str) -> None:
        self.table.add(self.session, uri, match)

    def test_exact_matches_only_the_same_uri(self) -> None:
        self.add("a.b", EXACT)
        self.assertEqual(uris(self.table.match("a.b")), [("a.b", EXACT)])
        self.assertEqual(self.table.match("a.b.c"), [])
        self.assertEqual(self.table.match("a"), [])

    def test_prefix_matches_uris_starting_with_it(self) -> None:
        self.add("a.b", PREFIX)
        for uri in ("a.b", "a.b.c", "a.b.c.d"):
            self.assertEqual(uris(self.table.match(uri)), [("a.b", PREFIX)], uri)

    def test_prefix_does_not_match_other_uris(self) -> None:
        self.add("a.b", PREFIX)
        for uri in ("a", "a.c", "b.a.b"):
            self.assertEqual(self.table.match(uri), [], uri)

    def test_every_matching_prefix_matches(self) -> None:
        for prefix in ("a", "a.b", "a.b.c"):
            self.add(prefix, PREFIX)
        self.assertEqual(
            sorted(uris(self.table.match("a.b.c.d"))), [("a", PREFIX), ("a.b", PREFIX), ("a.b.c", PREFIX)]
        )

    def test_many_prefixes_match_like_few(self) -> None:
        # With more prefixes than the URI is long, the table looks up the URI's prefixes instead.
        for n in range(50):
            self.add(f"x{n}", PREFIX)
        self.add("a.b", PREFIX)
        self.add("a", PREFIX)
        self.assertEqual(sorted(uris(self.table.match("a.b.c"))), [("a", PREFIX), ("a.b", PREFIX)])
        self.assertEqual(self.table.match("b"), [])

    def test_empty_wildcard_part_matches_any_part(self) -> None:
        self.add("a..c", WILDCARD)
        self.assertEqual(uris(self.table.match("a.b.c")), [("a..c", WILDCARD)])
        self.assertEqual(uris(self.table.match("a.x.c")), [("a..c", WILDCARD)])

    def test_wildcard_literal_parts_must_match(self) -> None:
        self.add("a..c", WILDCARD)
        self.assertEqual(self.table.match("a.b.d"), [])
        self.assertEqual(self.table.match("z.b.c"), [])

    def test_wildcard_matches_only_uris_with_as_many_parts(self) -> None:
        self.add("a..c", WILDCARD)
        self.assertEqual(self.table.match("a.b.c.d"), [])
        self.assertEqual(self.table.match("a.c"), [])

    def test_all_empty_wildcard_matches_any_uri_of_its_length(self) -> None:
        self.add("..", WILDCARD)
        self.assertEqual(len(self.table.match("x.y.z")), 1)
        self.assertEqual(self.table.match("x.y"), [])

    def test_matches_come_exact_then_prefix_then_wildcard(self) -> None:
        self.add("a..c", WILDCARD)
        self.add("a", PREFIX)
        self.add("a.b.c", EXACT)
        self.assertEqual(
            uris(self.table.match("a.b.c")), [("a.b.c", EXACT), ("a", PREFIX), ("a..c", WILDCARD)]
        )

    def test_exact_lookup_ignores_pattern_subscriptions(self) -> None:
        self.add("a", PREFIX)
        self.assertIsNone(self.table.exact("a"))
