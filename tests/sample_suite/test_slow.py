"""Tests that wait 50 ms each (I/O-bound: they parallelise on any number of cores)."""

import time

import pytest


@pytest.mark.parametrize("n", range(110))
def test_sleep(n):
    time.sleep(0.05)
    assert n >= 0


def test_sleep_then_fail():
    time.sleep(0.05)
    print("slept, now failing")
    assert 1 + 1 == 3
