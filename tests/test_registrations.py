"""Tests for L{sandstone._registrations}: the registration table's precedence and the invocation policies."""

from __future__ import annotations

from collections import Counter
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from sandstone import _registrations
from sandstone._registrations import (
    FIRST,
    LAST,
    RANDOM,
    ROUNDROBIN,
    SINGLE,
    Registration,
    RegistrationTable,
    registration_id_for,
)
from sandstone._subscriptions import EXACT, PREFIX, subscription_id_for


class _Callee:
    """A callee as the table sees it: nothing but identity."""

    interruptible = False

    def __init__(self, name: str) -> None:
        self.name = name
        self.id = hash(name) % 1000 + 1

    def send_invocation(self, invocation: int, registration: Registration, call: Any) -> None:
        raise AssertionError("the table invokes nobody")

    def send_interrupt(self, invocation: int, mode: str) -> None:
        raise AssertionError("the table interrupts nobody")

    def __repr__(self) -> str:
        return self.name


def shared(invoke: str, *names: str) -> tuple[Registration, list[_Callee]]:
    registration = Registration("com.x", invoke=invoke)
    callees = [_Callee(name) for name in names]
    for callee in callees:
        registration.add(callee)
    return registration, callees


def picks(registration: Registration, count: int) -> list[str]:
    return [registration.pick().name for _ in range(count)]  # type: ignore[attr-defined]


class PrecedenceTests(SynchronousTestCase):
    """A called URI reaches one registration: exact, else the longest prefix, else the best wildcard."""

    def setUp(self) -> None:
        self.table = RegistrationTable()

    def add(self, uri: str, match: str) -> Registration:
        registration = Registration(uri, match)
        self.table.add(registration)
        return registration

    def test_the_specs_examples(self) -> None:
        """The examples of the spec's "Calls matching multiple registrations".

        One of them contradicts the spec's own prefix rule: ``a1.b2.c3`` is a prefix of the URI
        ``a1.b2.c33.d4.e5``, so that call goes to the prefix registration (2), not to the wildcard one (5)
        the example names; the wildcard ranking it means to show is checked without that prefix below.
        """
        registered = {
            1: self.add("a1.b2.c3.d4.e55", "exact"),
            2: self.add("a1.b2.c3", "prefix"),
            3: self.add("a1.b2.c3.d4", "prefix"),
            4: self.add("a1.b2..d4.e5", "wildcard"),
            5: self.add("a1.b2.c33..e5", "wildcard"),
            6: self.add("a1.b2..d4.e5..g7", "wildcard"),
            7: self.add("a1.b2..d4..f6.g7", "wildcard"),
        }
        for uri, expected in [
            ("a1.b2.c3.d4.e55", 1),
            ("a1.b2.c3.d98.e74", 2),
            ("a1.b2.c3.d4.e325", 3),
            ("a1.b2.c55.d4.e5", 4),
            ("a1.b2.c33.d4.e5", 2),  # a prefix match: see above
            ("a1.b2.c88.d4.e5.f6.g7", 6),
        ]:
            self.assertIs(self.table.best(uri), registered[expected], uri)
        self.assertIsNone(self.table.best("a2.b2.c2.d2.e2"))
        self.table.remove(registered[2])
        self.assertIs(self.table.best("a1.b2.c33.d4.e5"), registered[5])

    def test_prefix_matches_as_a_string_prefix(self) -> None:
        """As in the spec: ``com.myapp.myobject1`` matches ``com.myapp.myobject1-mysubobject1`` too."""
        prefix = self.add("com.myapp.myobject1", "prefix")
        for uri in (
            "com.myapp.myobject1.myprocedure1",
            "com.myapp.myobject1-mysubobject1",
            "com.myapp.myobject1.mysubobject1.myprocedure1",
            "com.myapp.myobject1",
        ):
            self.assertIs(self.table.best(uri), prefix, uri)
        for uri in ("com.myapp.myobject2", "com.myapp.myobject"):
            self.assertIsNone(self.table.best(uri), uri)

    def test_wildcards_match_whole_parts_and_lengths(self) -> None:
        wildcard = self.add("com.myapp..myprocedure1", "wildcard")
        for uri in ("com.myapp.myobject1.myprocedure1", "com.myapp.myobject2.myprocedure1"):
            self.assertIs(self.table.best(uri), wildcard, uri)
        for uri in (
            "com.myapp.myobject1.myprocedure1.mysubprocedure1",
            "com.myapp.myobject1.myprocedure2",
            "com.myapp2.myobject1.myprocedure1",
        ):
            self.assertIsNone(self.table.best(uri), uri)

    def test_a_leading_wildcard_ranks_below_a_literal_first_part(self) -> None:
        leading = self.add(".b.c", "wildcard")
        literal = self.add("a..c", "wildcard")
        self.assertIs(self.table.best("a.b.c"), literal)
        self.assertIs(self.table.best("x.b.c"), leading)

    def test_same_uri_under_each_policy_is_three_registrations(self) -> None:
        exact, prefix, wildcard = (self.add("com.x", match) for match in ("exact", "prefix", "wildcard"))
        self.assertEqual(len({exact.id, prefix.id, wildcard.id}), 3)
        self.assertIs(self.table.get("com.x", "prefix"), prefix)
        self.assertIs(self.table.best("com.x"), exact)
        self.table.remove(exact)
        self.assertIs(self.table.best("com.x"), prefix)
        self.table.remove(prefix)
        self.assertIs(self.table.best("com.x"), wildcard)
        self.assertTrue(self.table.remove(wildcard))
        self.assertFalse(self.table.remove(wildcard))
        self.assertEqual(len(self.table), 0)
        self.assertIsNone(self.table.best("com.x"))


class PolicyTests(SynchronousTestCase):
    """Which callee of a shared registration each call goes to."""

    def test_single_and_first_take_the_first_last_the_last(self) -> None:
        for invoke, expected in ((SINGLE, "a"), (FIRST, "a"), (LAST, "c")):
            registration, _ = shared(invoke, "a", "b", "c")
            self.assertEqual(picks(registration, 4), [expected] * 4, invoke)

    def test_roundrobin_in_registration_order(self) -> None:
        registration, _ = shared(ROUNDROBIN, "a", "b", "c")
        self.assertEqual(picks(registration, 7), ["a", "b", "c", "a", "b", "c", "a"])

    def test_roundrobin_goes_on_with_the_next_callee_when_one_leaves(self) -> None:
        registration, (a, b, c) = shared(ROUNDROBIN, "a", "b", "c")
        self.assertEqual(picks(registration, 2), ["a", "b"])
        registration.remove(b)  # mid-rotation: c was next, and still is
        self.assertEqual(picks(registration, 3), ["c", "a", "c"])
        registration.remove(c)  # the next one leaves: a follows
        self.assertEqual(picks(registration, 2), ["a", "a"])
        self.assertFalse(registration.remove(c))

    def test_roundrobin_keeps_its_place_when_the_cluster_reorders(self) -> None:
        registration, (a, b, c) = shared(ROUNDROBIN, "a", "b", "c")
        self.assertEqual(picks(registration, 1), ["a"])
        d = _Callee("d")
        registration.arrange([d, c, b, a])
        self.assertEqual(picks(registration, 4), ["b", "a", "d", "c"])

    def test_random_spreads_calls(self) -> None:
        registration, _ = shared(RANDOM, "a", "b", "c")
        counts = Counter(picks(registration, 600))
        self.assertEqual(set(counts), {"a", "b", "c"})
        self.assertTrue(all(count > 100 for count in counts.values()), counts)


class IdTests(SynchronousTestCase):
    """A registration's id derives from its (URI, match policy): every node names it alike."""

    def test_ids_derive_from_uri_and_match_policy(self) -> None:
        first, again = Registration("a.b"), Registration("a.b", invoke=ROUNDROBIN)  # another node's
        prefix = Registration("a.b", PREFIX)
        self.assertEqual(first.id, again.id)
        self.assertEqual(first.id, registration_id_for("a.b", EXACT))
        self.assertNotEqual(first.id, prefix.id)
        self.assertNotEqual(first.id, subscription_id_for("a.b", EXACT))  # another hash domain
        self.assertTrue(1 <= first.id <= 2**53)

    def test_colliding_id_is_drawn_again(self) -> None:
        drawn = iter([8])
        self.patch(_registrations, "registration_id_for", lambda uri, match: 7)
        self.patch(_registrations, "rid", lambda: next(drawn))
        table = RegistrationTable()
        first, second = Registration("a"), Registration("b")
        table.add(first)
        table.add(second)
        self.assertEqual((first.id, second.id), (7, 8))
        self.assertIs(table.by_id(7), first)
        self.assertIs(table.by_id(8), second)
