import logging

import pytest

import termite


@pytest.fixture
def node():
    """A node on a background thread, stopped at teardown."""
    with termite.Node() as n:
        yield n


@pytest.fixture
def crash_log(caplog):
    """Records termite's crash log lines."""
    caplog.set_level(logging.ERROR, logger="termite")
    return caplog
