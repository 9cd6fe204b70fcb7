"""Process bodies for tests/test_migration_safety.py whose code is the same on every node.

Node processes import this module from tests/nodecode (on their path), as the test
node does; versioned.py and other_code/versioned.py build on it.
"""

import termite
from termite import MigrationError, Pid, migrate, receive, send


async def attempt(reply_to, node):
    """Migrate to ``node``; tell ``reply_to`` ``("moved", pid, node)`` or ``("refused", pid, text)``."""
    try:
        where = await migrate(node)
    except MigrationError as exc:
        send(reply_to, ("refused", termite.self(), str(exc)))
    else:
        send(reply_to, ("moved", termite.self(), where))


async def serve():
    """Answer ``(sender, "where")`` with ``("here", pid, node, how many answered so far)``, forever."""
    answered = 0
    while True:
        sender, _ = await receive((Pid, "where"))
        answered += 1
        send(sender, ("here", termite.self(), termite.current_node(), answered))


async def goes(reply_to, node):
    """A process whose code every node has: it migrates to ``node`` and answers there."""
    await attempt(reply_to, node)
    await serve()


async def falls_back(reply_to, node):
    """Try ``await migrate(node)``; if refused, answer once here, then continue there by ``migrate(node, fn)``."""
    try:
        await migrate(node)
    except MigrationError as exc:
        send(reply_to, ("refused", termite.self(), str(exc)))
        sender, _ = await receive((Pid, "where"))
        send(sender, ("here", termite.self(), termite.current_node(), 1))
        await migrate(node, called_there, reply_to)
    send(reply_to, ("moved", termite.self(), termite.current_node()))


async def called_there(reply_to):
    send(reply_to, ("called there", termite.self(), termite.current_node()))
    await serve()
