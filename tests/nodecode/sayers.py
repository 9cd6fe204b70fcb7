"""Processes that say numbered lines (termite.say), for tests/test_say.py."""

import time

import termite
from termite.console import CONSOLE


async def say_lines(label: str, count: int, reply_to=None):
    """Say ``count`` lines "<label> <i>"; then tell ``reply_to`` (if given) ("said", label, own pid)."""
    for i in range(count):
        termite.say(label, i)
    if reply_to is not None:
        termite.send(reply_to, ("said", label, termite.self()))


async def console_known(timeout: float, reply_to) -> None:
    """Tell ``reply_to`` ("console", this node, known) once this node knows the cluster's console (then its
    lines go there), or with known False after ``timeout`` s.

    No event tells a node that a global name arrived: it looks again every 20 ms.
    """
    deadline = time.monotonic() + timeout
    while termite.whereis_global(CONSOLE) is None and time.monotonic() < deadline:
        await termite.sleep(0.02)
    termite.send(reply_to, ("console", termite.current_node(), termite.whereis_global(CONSOLE) is not None))
