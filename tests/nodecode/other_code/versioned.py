"""Version 2 of tests/nodecode/versioned.py, for node processes started with this folder first on their path.

``changed`` and ``_inner`` have other bodies than in version 1, and
``removed`` is gone; the other functions are the same as in version 1.
"""

from safety_migrants import attempt, serve

import termite
from termite import send


async def changed(reply_to, node):
    send(reply_to, "version 2 of changed() runs")
    await attempt(reply_to, node)
    await serve()


async def holds_a_generator(reply_to, node):
    for _ in _once(reply_to):
        await _inner(reply_to, node)
    await serve()


def _once(reply_to):
    try:
        yield
    finally:
        send(reply_to, ("finally", termite.current_node()))


async def _inner(reply_to, node):
    send(reply_to, "version 2 of _inner() runs")
    await attempt(reply_to, node)
