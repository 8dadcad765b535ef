"""Tests for L{sandstone._pattern}."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from sandstone._pattern import TopicPattern, TopicPatternError, TopicRoutes


class SeparatorTests(SynchronousTestCase):
    """The separator comes from the literal text of the pattern."""

    def test_slashSeparator(self) -> None:
        """A pattern with C{/} in its literal text uses C{/} as separator."""
        pattern = TopicPattern("chat/{channel}")
        self.assertEqual(pattern.separator, "/")
        self.assertEqual(pattern.match("chat/lobby"), {"channel": "lobby"})

    def test_dotSeparator(self) -> None:
        """A pattern without C{/} in its literal text uses C{.} as separator."""
        pattern = TopicPattern("sensors.{room}.temperature")
        self.assertEqual(pattern.separator, ".")
        self.assertEqual(pattern.match("sensors.kitchen.temperature"), {"room": "kitchen"})

    def test_slashWinsOverDot(self) -> None:
        """With both C{/} and C{.} in the literal text, C{/} separates and dots are literal."""
        pattern = TopicPattern("api.v1/{name}")
        self.assertEqual(pattern.separator, "/")
        self.assertEqual(pattern.match("api.v1/a.b"), {"name": "a.b"})

    def test_dotPatternPlaceholderDoesNotCrossDot(self) -> None:
        """In a C{.} pattern a placeholder never contains a dot."""
        pattern = TopicPattern("sensors.{room}.temperature")
        self.assertIsNone(pattern.match("sensors.a.b.temperature"))

    def test_placeholderOnlyPatternUsesDot(self) -> None:
        """A pattern that is a lone placeholder has no C{/} in its literal text, so uses C{.}."""
        pattern = TopicPattern("{topic}")
        self.assertEqual(pattern.separator, ".")
        self.assertEqual(pattern.match("a/b"), {"topic": "a/b"})
        self.assertIsNone(pattern.match("a.b"))


class MatchTests(SynchronousTestCase):
    """Plain matching and extraction of placeholder values."""

    def test_attributes(self) -> None:
        """C{pattern} is the original text and C{names} the placeholders in order."""
        pattern = TopicPattern("rooms/{room}/users/{user:int}")
        self.assertEqual(pattern.pattern, "rooms/{room}/users/{user:int}")
        self.assertEqual(pattern.names, ("room", "user"))

    def test_multiplePlaceholders(self) -> None:
        """Every placeholder is extracted under its own name."""
        pattern = TopicPattern("rooms/{room}/users/{user}")
        self.assertEqual(pattern.match("rooms/r1/users/u2"), {"room": "r1", "user": "u2"})

    def test_placeholdersWithinOnePart(self) -> None:
        """Literal text other than a separator may separate placeholders within a part."""
        pattern = TopicPattern("range/{low}-{high}")
        self.assertEqual(pattern.match("range/1-9"), {"low": "1", "high": "9"})

    def test_noPlaceholders(self) -> None:
        """A pattern without placeholders matches exactly its own text and returns C{{}}."""
        pattern = TopicPattern("chat/general")
        self.assertEqual(pattern.names, ())
        self.assertEqual(pattern.match("chat/general"), {})
        self.assertIsNone(pattern.match("chat/general/x"))
        self.assertIsNone(pattern.match("chat/genera"))

    def test_fullMatchOnly(self) -> None:
        """Neither a prefix nor a longer URI matches."""
        pattern = TopicPattern("chat/{channel}")
        self.assertIsNone(pattern.match("chat"))
        self.assertIsNone(pattern.match("chat/lobby/extra"))
        self.assertIsNone(pattern.match("xchat/lobby"))

    def test_placeholderNeverEmpty(self) -> None:
        """A placeholder does not match an empty part."""
        self.assertIsNone(TopicPattern("chat/{channel}").match("chat/"))
        self.assertIsNone(TopicPattern("a/{x}/b").match("a//b"))

    def test_placeholderNeverCrossesSeparator(self) -> None:
        """A placeholder does not match across the separator."""
        self.assertIsNone(TopicPattern("chat/{channel}").match("chat/a/b"))

    def test_placeholderRejectsWhitespaceAndHash(self) -> None:
        """Whitespace and C{#} are never part of a placeholder value."""
        pattern = TopicPattern("chat/{channel}")
        self.assertIsNone(pattern.match("chat/a b"))
        self.assertIsNone(pattern.match("chat/a\tb"))
        self.assertIsNone(pattern.match("chat/a#b"))

    def test_literalDotsEscaped(self) -> None:
        """A literal C{.} matches only a dot, not any character."""
        pattern = TopicPattern("a.b")
        self.assertEqual(pattern.match("a.b"), {})
        self.assertIsNone(pattern.match("aXb"))

    def test_literalRegexCharactersEscaped(self) -> None:
        """Other regex metacharacters in literal text are literal too."""
        pattern = TopicPattern("a+b/{x}")
        self.assertEqual(pattern.match("a+b/1"), {"x": "1"})
        self.assertIsNone(pattern.match("aab/1"))

    def test_repr(self) -> None:
        """The repr shows the pattern text and any requirements."""
        self.assertEqual(repr(TopicPattern("chat/{channel}")), "TopicPattern('chat/{channel}')")
        self.assertEqual(
            repr(TopicPattern("a/{x}", requirements={"x": "[a-z]+"})),
            "TopicPattern('a/{x}', requirements={'x': '[a-z]+'})",
        )


class RequirementTests(SynchronousTestCase):
    """C{requirements} replace the default regex of a placeholder."""

    def test_requirementRestrictsValue(self) -> None:
        """Only values fully matching the requirement match."""
        pattern = TopicPattern("users/{id}", requirements={"id": r"\d+"})
        self.assertEqual(pattern.match("users/42"), {"id": "42"})
        self.assertIsNone(pattern.match("users/42a"))

    def test_requirementAppliesToItsPlaceholderOnly(self) -> None:
        """An alternation in a requirement is grouped and does not swallow the rest."""
        pattern = TopicPattern("{kind}/{id}", requirements={"kind": "user|group"})
        self.assertEqual(pattern.match("group/7"), {"kind": "group", "id": "7"})
        self.assertIsNone(pattern.match("user"))

    def test_requirementCannotCrossSeparator(self) -> None:
        """A value matched by a permissive requirement is rejected if it contains the separator."""
        pattern = TopicPattern("files/{path}", requirements={"path": ".+"})
        self.assertEqual(pattern.match("files/readme"), {"path": "readme"})
        self.assertIsNone(pattern.match("files/a/b"))

    def test_requirementCannotMatchWhitespaceOrHash(self) -> None:
        """A permissive requirement still never yields whitespace or C{#}."""
        pattern = TopicPattern("files/{path}", requirements={"path": ".+"})
        self.assertIsNone(pattern.match("files/a b"))
        self.assertIsNone(pattern.match("files/a#b"))

    def test_captureGroupsInRequirement(self) -> None:
        """Capture groups in requirements do not disturb the mapping of values to names."""
        pattern = TopicPattern(
            "{first}/{second}",
            requirements={"first": r"(a)(b)", "second": r"(?P<digit>\d)(\d)"},
        )
        self.assertEqual(pattern.match("ab/12"), {"first": "ab", "second": "12"})

    def test_namedBackreferenceInRequirement(self) -> None:
        """A named group and its backreference work inside a requirement."""
        pattern = TopicPattern("pair/{twice}", requirements={"twice": r"(?P<c>\w)(?P=c)"})
        self.assertEqual(pattern.match("pair/xx"), {"twice": "xx"})
        self.assertIsNone(pattern.match("pair/xy"))


class ConverterTests(SynchronousTestCase):
    """Converters turn the raw text of a placeholder into a value."""

    def test_inlineIntConverter(self) -> None:
        """C{{id:int}} converts to L{int} and requires an integer."""
        pattern = TopicPattern("users/{id:int}")
        self.assertEqual(pattern.match("users/42"), {"id": 42})
        self.assertEqual(pattern.match("users/-3"), {"id": -3})
        self.assertIsNone(pattern.match("users/abc"))

    def test_keywordIntConverter(self) -> None:
        """C{converters={"id": "int"}} is equivalent to C{{id:int}}."""
        pattern = TopicPattern("users/{id}", converters={"id": "int"})
        self.assertEqual(pattern.match("users/42"), {"id": 42})
        self.assertIsNone(pattern.match("users/4.2"))

    def test_intConverterWithUserRequirement(self) -> None:
        """A user requirement replaces the default requirement of C{int}."""
        pattern = TopicPattern("users/{id:int}", requirements={"id": "[0-9]{3}"})
        self.assertEqual(pattern.match("users/007"), {"id": 7})
        self.assertIsNone(pattern.match("users/42"))

    def test_floatConverter(self) -> None:
        """C{float} converts the value to L{float}."""
        pattern = TopicPattern("sensors.{room}.{value:float}")
        self.assertEqual(pattern.match("sensors.hall.21"), {"room": "hall", "value": 21.0})

    def test_floatConverterFailureDoesNotMatch(self) -> None:
        """A value C{float} cannot convert makes the URI not match."""
        self.assertIsNone(TopicPattern("t/{value:float}").match("t/warm"))

    def test_strConverter(self) -> None:
        """C{str} keeps the raw text."""
        self.assertEqual(TopicPattern("t/{name:str}").match("t/x"), {"name": "x"})

    def test_callableConverter(self) -> None:
        """A callable converter is called with the raw text."""
        pattern = TopicPattern("t/{name}", converters={"name": str.upper})
        self.assertEqual(pattern.match("t/abc"), {"name": "ABC"})

    def test_callableConverterValueErrorDoesNotMatch(self) -> None:
        """A callable converter raising L{ValueError} makes the URI not match."""

        def even(raw: str) -> int:
            value = int(raw)
            if value % 2:
                raise ValueError(f"{value} is odd")
            return value

        pattern = TopicPattern("n/{number}", converters={"number": even})
        self.assertEqual(pattern.match("n/4"), {"number": 4})
        self.assertIsNone(pattern.match("n/5"))

    def test_callableConverterTypeErrorDoesNotMatch(self) -> None:
        """A callable converter raising L{TypeError} makes the URI not match."""

        def refuse(raw: str) -> object:
            raise TypeError(raw)

        self.assertIsNone(TopicPattern("n/{x}", converters={"x": refuse}).match("n/1"))

    def test_callableConverterOtherErrorsPropagate(self) -> None:
        """Errors other than L{ValueError} and L{TypeError} are bugs and propagate."""

        def broken(raw: str) -> object:
            raise KeyError(raw)

        pattern = TopicPattern("n/{x}", converters={"x": broken})
        self.assertRaises(KeyError, pattern.match, "n/1")


class DeclarationErrorTests(SynchronousTestCase):
    """Badly declared patterns raise L{TopicPatternError} with an actionable message."""

    def assertPatternError(self, expected: str, *args: object, **kwargs: object) -> None:
        """C{TopicPattern(*args, **kwargs)} raises a L{TopicPatternError} mentioning C{expected}."""
        error = self.assertRaises(TopicPatternError, TopicPattern, *args, **kwargs)
        self.assertIn(expected, str(error))

    def test_isValueError(self) -> None:
        """L{TopicPatternError} is a L{ValueError}."""
        self.assertTrue(issubclass(TopicPatternError, ValueError))

    def test_unclosedPlaceholder(self) -> None:
        """A C{{} without C{}} is reported."""
        self.assertPatternError(
            "topic pattern 'chat/{channel' has an unclosed placeholder at index 5", "chat/{channel"
        )

    def test_nestedBrace(self) -> None:
        """A C{{} opened inside a placeholder leaves the outer one unclosed."""
        self.assertPatternError("topic pattern '{a{b}' has an unclosed placeholder", "{a{b}")

    def test_strayClosingBrace(self) -> None:
        """A C{}} without C{{} is reported."""
        self.assertPatternError("topic pattern 'chat/x}' has a stray '}' at index 6", "chat/x}")

    def test_emptyPlaceholder(self) -> None:
        """C{{}} is reported."""
        self.assertPatternError("topic pattern 'chat/{}' has an empty placeholder '{}'", "chat/{}")

    def test_placeholderWithoutName(self) -> None:
        """C{{:int}} is reported as a placeholder without a name."""
        self.assertPatternError("has a placeholder without a name: '{:int}'", "chat/{:int}")

    def test_invalidIdentifier(self) -> None:
        """A placeholder name that is not an identifier is reported."""
        self.assertPatternError(
            "placeholder name 'room-id' that is not a valid Python identifier", "r/{room-id}"
        )

    def test_keywordName(self) -> None:
        """A placeholder named like a Python keyword is reported."""
        self.assertPatternError("placeholder name 'class' that is a Python keyword", "r/{class}")

    def test_duplicateName(self) -> None:
        """The same placeholder name twice is reported."""
        self.assertPatternError("uses placeholder name 'a' more than once", "{a}/{a}")

    def test_adjacentPlaceholders(self) -> None:
        """Two placeholders with nothing between them are reported."""
        self.assertPatternError("has placeholders {a} and {b} next to each other", "x/{a}{b}")

    def test_emptyPattern(self) -> None:
        """An empty pattern is reported."""
        self.assertPatternError("topic pattern '' is empty", "")

    def test_whitespace(self) -> None:
        """Whitespace in a pattern is reported."""
        self.assertPatternError("contains ' ' at index 4; WAMP URIs cannot contain", "chat {x}")

    def test_hash(self) -> None:
        """A C{#} in a pattern is reported."""
        self.assertPatternError("contains '#' at index 5; WAMP URIs cannot contain", "chat/#")

    def test_requirementForUnknownName(self) -> None:
        """A requirement for a name that is not a placeholder is reported."""
        self.assertPatternError(
            "has no placeholder 'id' but requirements were given for it (placeholders: channel)",
            "chat/{channel}",
            requirements={"id": r"\d+"},
        )

    def test_converterForUnknownName(self) -> None:
        """A converter for a name that is not a placeholder is reported."""
        self.assertPatternError(
            "has no placeholder 'id' but converters were given for it (placeholders: none)",
            "chat",
            converters={"id": "int"},
        )

    def test_invalidRequirementRegex(self) -> None:
        """An invalid requirement regex is reported with its placeholder and pattern."""
        self.assertPatternError(
            "topic pattern 'users/{id}' has an invalid requirement '(' for placeholder 'id'",
            "users/{id}",
            requirements={"id": "("},
        )

    def test_requirementMatchingEmpty(self) -> None:
        """A requirement that can match the empty string is reported."""
        self.assertPatternError(
            "requirement '\\\\d*' for placeholder 'id' that matches the empty string",
            "users/{id}",
            requirements={"id": r"\d*"},
        )

    def test_requirementWithNumberedBackreference(self) -> None:
        """A numbered backreference, which would point at the wrong group, is reported."""
        self.assertPatternError(
            "with numbered backreference '\\\\1'",
            "w/{word}",
            requirements={"word": r"(\w)\1"},
        )

    def test_octalEscapeIsNotBackreference(self) -> None:
        """An octal escape or a digit escaped in a class is accepted."""
        pattern = TopicPattern("w/{x}", requirements={"x": r"\101[\1]"})
        self.assertEqual(pattern.match("w/A\x01"), {"x": "A\x01"})

    def test_requirementsWithClashingGroupNames(self) -> None:
        """The same group name in two requirements is reported."""
        self.assertPatternError(
            "has requirements that cannot be combined",
            "{a}/{b}",
            requirements={"a": r"(?P<n>\d)", "b": r"(?P<n>\d)"},
        )

    def test_unknownConverterName(self) -> None:
        """An unknown converter name is reported with the known ones."""
        self.assertPatternError(
            "uses unknown converter 'uuid' for placeholder 'id'; use one of float, int, str",
            "users/{id:uuid}",
        )

    def test_unknownConverterNameInMapping(self) -> None:
        """An unknown converter name given in C{converters} is reported too."""
        self.assertPatternError(
            "uses unknown converter 'bool' for placeholder 'id'",
            "users/{id}",
            converters={"id": "bool"},
        )

    def test_converterNotCallable(self) -> None:
        """A converter that is neither a name nor callable is reported."""
        self.assertPatternError(
            "has converter 42 for placeholder 'id' that is neither",
            "users/{id}",
            converters={"id": 42},
        )

    def test_emptyInlineConverter(self) -> None:
        """C{{id:}} is reported."""
        self.assertPatternError("has placeholder '{id:}' with an empty converter after ':'", "users/{id:}")

    def test_converterDeclaredTwice(self) -> None:
        """A converter both inline and in C{converters} is reported."""
        self.assertPatternError(
            "declares a converter for placeholder 'id' both inline and in converters=",
            "users/{id:int}",
            converters={"id": "int"},
        )


class TopicRoutesTests(SynchronousTestCase):
    """L{TopicRoutes} resolves a URI to the first declared matching pattern."""

    def test_resolveReturnsPatternTargetAndArguments(self) -> None:
        """The matching pattern, its target and the converted arguments are returned."""
        routes: TopicRoutes[str] = TopicRoutes()
        pattern = TopicPattern("users/{id:int}")
        routes.add(pattern, "user")
        self.assertEqual(routes.resolve("users/5"), (pattern, "user", {"id": 5}))

    def test_resolveNoMatch(self) -> None:
        """A URI matching no pattern resolves to None."""
        routes: TopicRoutes[str] = TopicRoutes()
        routes.add(TopicPattern("users/{id}"), "user")
        self.assertIsNone(routes.resolve("groups/5"))

    def test_firstDeclaredWins(self) -> None:
        """When several patterns match, the first declared one wins."""
        routes: TopicRoutes[str] = TopicRoutes()
        routes.add(TopicPattern("users/{name}"), "by name")
        routes.add(TopicPattern("users/admin"), "admin")
        self.assertEqual(routes.resolve("users/admin")[1:], ("by name", {"name": "admin"}))

    def test_converterFailureFallsThrough(self) -> None:
        """A pattern whose converter rejects the value lets a later pattern match."""
        routes: TopicRoutes[str] = TopicRoutes()
        routes.add(TopicPattern("items/{id}", converters={"id": int}), "by id")
        routes.add(TopicPattern("items/{slug}"), "by slug")
        self.assertEqual(routes.resolve("items/12")[1:], ("by id", {"id": 12}))
        self.assertEqual(routes.resolve("items/chair")[1:], ("by slug", {"slug": "chair"}))

    def test_duplicatePatternText(self) -> None:
        """Adding a pattern with the same text twice is reported."""
        routes: TopicRoutes[str] = TopicRoutes()
        routes.add(TopicPattern("users/{id}"), "first")
        error = self.assertRaises(TopicPatternError, routes.add, TopicPattern("users/{id}"), "second")
        self.assertIn("topic pattern 'users/{id}' is already declared", str(error))

    def test_lenAndIterInDeclarationOrder(self) -> None:
        """C{len} counts the entries and iteration yields them in declaration order."""
        routes: TopicRoutes[int] = TopicRoutes()
        first, second = TopicPattern("a/{x}"), TopicPattern("b/{x}")
        routes.add(first, 1)
        routes.add(second, 2)
        self.assertEqual(len(routes), 2)
        self.assertEqual(list(routes), [(first, 1), (second, 2)])

    def test_addRejectsNonPattern(self) -> None:
        """Adding a plain string instead of a L{TopicPattern} raises L{TypeError}."""
        routes: TopicRoutes[str] = TopicRoutes()
        self.assertRaises(TypeError, routes.add, "users/{id}", "user")
