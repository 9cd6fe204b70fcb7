"""CPU-bound tests: about 20 ms of pure Python each."""

import time

import pytest


def burn(seconds):
    end = time.thread_time() + seconds
    n = 0
    while time.thread_time() < end:
        n += 1
    return n


@pytest.mark.parametrize("n", range(50))
def test_burn(n):
    assert burn(0.02) > 0
