"""Version 1 of a module that tests/nodecode/other_code/versioned.py redefines (tests/test_migration_safety.py).

The test node imports this version.  A node process started with
tests/nodecode/other_code first on its path imports version 2 instead, where
``changed`` and ``_inner`` have other bodies and ``removed`` does not exist.
The other functions are the same in both versions (same code, docstrings
included: a docstring is one of a function's constants).
"""

from safety_migrants import attempt, serve

import termite
from termite import send


async def changed(reply_to, node):
    await attempt(reply_to, node)
    await serve()


async def removed(reply_to, node):
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
    await attempt(reply_to, node)
