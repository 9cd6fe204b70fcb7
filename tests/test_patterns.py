import math
import typing
from collections import namedtuple

import pytest

from termite import ANY, PatternError, where
from termite._core.patterns import compile_patterns


def matches(pattern, msg):
    return compile_patterns((pattern,))(msg)


@pytest.mark.parametrize(
    "pattern, msg, expected",
    [
        (ANY, object(), True),
        (int, 3, True),
        (int, "3", False),
        ((int, "ping"), (1, "ping"), True),
        ((int, "ping"), (1, "pong"), False),
        ((int, "ping"), [1, "ping"], False),
        ((int, "ping"), (1, "ping", 2), False),
        (("add", ...), ("add", 1, 2), True),
        (("add", ...), ("sub", 1, 2), False),
        ([int, ANY], [1, None], True),
        ({"op": "get"}, {"op": "get", "key": 1}, True),
        ({"op": "get"}, {"key": 1}, False),
        ({"op": "get"}, ("op", "get"), False),
        ((ANY, lambda x: x > 2), ("a", 3), True),
        ((ANY, lambda x: x > 2), ("a", 1), False),
        (1, True, True),  # other literals compare with ==, exactly as in `match`
        (True, 1, False),  # True, False and None match by identity, as in `match`
        (None, 0, False),
        ((1, 2), (1, 2), True),
        (int | str, "x", True),
    ],
)
def test_pattern_table(pattern, msg, expected):
    assert matches(pattern, msg) is expected


def test_bound_values_are_just_variables():
    tag = ("some", "tag")
    assert matches((tag, ANY), (("some", "tag"), 42))
    assert not matches((tag, ANY), (("other", "tag"), 42))


def test_namedtuple_patterns_check_the_class():
    Point = namedtuple("Point", "x y")
    Other = namedtuple("Other", "x y")
    assert matches(Point(ANY, 2), Point(1, 2))
    assert not matches(Point(ANY, 2), Other(1, 2))
    assert not matches((ANY, 2), Point(1, 2))  # a plain tuple pattern wants a plain tuple


def test_guards_per_pattern_and_for_all():
    first = compile_patterns((where((int, int), lambda m: m[0] < m[1]), str))
    assert first((1, 2)) and not first((2, 1)) and first("s")
    both = compile_patterns(((int, int), (str, str)), guard=lambda m: m[0] == m[1])
    assert both((1, 1)) and not both((1, 2)) and both(("a", "a"))


@pytest.mark.parametrize(
    "bad, hint",
    [
        (float("nan"), "isnan"),
        ((1, ..., 2), "may only close"),
        (typing.List[int], "plain class"),
    ],
)
def test_patterns_that_cannot_match_are_refused(bad, hint):
    with pytest.raises(PatternError, match=hint):
        compile_patterns((bad,))


def test_a_coroutine_object_is_refused_with_the_fix():
    async def pred(m):
        return True

    coro = pred(1)
    try:
        with pytest.raises(PatternError, match="without calling it"):
            compile_patterns((coro,))
    finally:
        coro.close()


def test_guard_must_be_callable():
    with pytest.raises(PatternError, match="callable"):
        compile_patterns((), guard=3)
    with pytest.raises(PatternError, match="callable"):
        where(int, "not a function")
    assert math.isnan(float("nan"))  # keeps the import honest


def test_a_tag_in_a_pattern_matches_only_that_tag_not_an_equal_plain_tuple():
    from termite import make_tag

    tag = make_tag()
    assert matches((tag, ANY), (tag, "reply"))
    assert not matches((tag, ANY), (tuple(tag), "forged"))
