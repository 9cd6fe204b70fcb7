"""Quick tests: most pass, three fail with an assertion diff (after printing)."""

import pytest


@pytest.mark.parametrize("n", range(20))
def test_square(n, session_resource):
    assert session_resource["opened"]
    assert n * n == n**2


class TestStrings:
    def test_upper(self):
        assert "abc".upper() == "ABC"

    def test_lower(self):
        assert "ABC".lower() == "abc"

    def test_split(self):
        assert "a b c".split() == ["a", "b", "c"]

    def test_join(self):
        assert "-".join("abc") == "a-b-c"

    def test_strip(self):
        assert "  x ".strip() == "x"


def test_dict_diff():
    print("comparing two dicts")
    assert {"a": 1, "b": 2, "c": 3} == {"a": 1, "b": 20, "c": 3}


def test_list_diff():
    assert [1, 2, 3, 4] == [1, 2, 30, 4]


def test_string_diff():
    assert "the quick brown fox" == "the quick red fox"
