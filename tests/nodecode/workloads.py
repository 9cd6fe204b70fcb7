"""Thunks for tests/test_dispatch.py, importable on node processes (tests/nodecode is on their path)."""

import os
import time

import termite


def spin(seconds):
    """Burn ``seconds`` of this thread's CPU time; return (node, wall seconds it took)."""
    start, wall = time.thread_time(), time.perf_counter()
    while time.thread_time() - start < seconds:
        pass
    return os.getpid(), time.perf_counter() - wall


def fail(text):
    raise ValueError(text)


def lock():
    import threading

    return threading.Lock()


def where():
    return os.getpid()


async def async_where(x):
    await termite.sleep(0)
    return os.getpid(), x


def where_unless_on(os_pid, seconds=60.0):
    """This node's OS pid; on the node whose OS pid is ``os_pid``, only after ``seconds``.

    A call a test kills that node under: it is still unanswered when the node goes.
    """
    if os.getpid() == os_pid:
        time.sleep(seconds)
    return os.getpid()


async def hog(seconds):
    """A CPU-bound process: burns ``seconds`` in 2 ms slices, yielding between them.

    Its node stays responsive (its meter reports it: run queue and busy
    core), unlike a process that never yields.
    """
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        start = time.thread_time()
        while time.thread_time() - start < 0.002:
            pass
        await termite.sleep(0)


async def yielding_spin(seconds):
    """Loop on CPU work for ``seconds``, yielding only with ``sleep(0)``."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        sum(range(2000))
        await termite.sleep(0)
