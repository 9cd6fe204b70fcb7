"""Processes that say numbered lines (termite.say), for tests/test_say.py."""

import termite


async def say_lines(label: str, count: int, reply_to=None):
    """Say ``count`` lines "<label> <i>"; then tell ``reply_to`` (if given) ("said", label, own pid)."""
    for i in range(count):
        termite.say(label, i)
    if reply_to is not None:
        termite.send(reply_to, ("said", label, termite.self()))
