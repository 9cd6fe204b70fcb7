"""Every other outcome: skips, xfail/xpass, fixture errors, a warning, captured output."""

import logging
import sys
import warnings

import pytest


def test_skip_inside():
    pytest.skip("skipped from inside the test")


@pytest.mark.skip(reason="skipped by a mark")
def test_skip_mark():
    raise AssertionError("never runs")


@pytest.mark.skipif(sys.version_info > (3,), reason="skipped by skipif")
def test_skipif():
    raise AssertionError("never runs")


@pytest.mark.xfail(reason="known bug")
def test_xfail():
    assert 0


@pytest.mark.xfail(reason="known bug", strict=True)
def test_xfail_strict():
    raise ValueError("still broken")


def test_xfail_inside():
    pytest.xfail("xfailed from inside the test")


@pytest.mark.xfail(reason="was broken")
def test_xpass():
    assert True


@pytest.mark.xfail(reason="was broken", strict=True)
def test_xpass_strict():
    assert True


def test_uses_broken(broken):
    raise AssertionError("never runs")


def test_also_uses_broken(broken):
    raise AssertionError("never runs")


@pytest.fixture
def bad_teardown():
    yield
    raise RuntimeError("the fixture's teardown failed")


def test_teardown_error(bad_teardown):
    assert True


@pytest.fixture(scope="module")
def module_resource():
    return []


@pytest.mark.parametrize("n", range(5))
def test_module_fixture(module_resource, n):
    module_resource.append(n)
    assert len(module_resource) >= 1


def test_warns():
    warnings.warn("a sample warning", UserWarning)


def test_prints():
    print("output of a passing test")


def test_print_then_fail():
    print("to stdout before failing")
    print("to stderr before failing", file=sys.stderr)
    logging.getLogger("sample").warning("logged before failing")
    assert "expected" == "actual"
