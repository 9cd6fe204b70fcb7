"""Process bodies for tests/test_migration.py, importable on every node (tests/ is on their path)."""

import threading

import termite
from termite import MigrationError, migrate, receive, send


async def hop(node, log):
    """A coroutine the wanderer awaits: migrate two levels down, inside try/finally."""
    try:
        where = await migrate(node)
    finally:
        log.append(("finally", str(termite.current_node())))
    return where


async def wanderer(reply_to, route):
    total, log = 0, []
    for i, node in enumerate(route):
        total += 10 * i
        where = await hop(node, log)
        if not where == termite.current_node() == node:
            raise AssertionError(f"at {termite.current_node()}, migrate said {where}, meant {node}")
        send(reply_to, ("at", i, termite.current_node(), termite.self(), total, list(log)))
        total += await receive(int)  # sent to the pid wherever it is; forwarded as needed
    return total


async def keeps_mailbox(reply_to, node):
    first = await receive("first")
    await migrate(node)
    rest = [await receive() for _ in range(3)]
    send(reply_to, ("got", first, rest, termite.current_node()))


async def holds_a_lock(reply_to, node):
    lock = threading.Lock()
    try:
        await migrate(node)
    except MigrationError as exc:
        send(reply_to, ("refused", str(exc), exc.variable))
    with lock:
        send(reply_to, ("still here", termite.current_node(), await receive("ping")))


async def crash_after_migrating(node):
    await migrate(node)
    await receive("crash now")
    raise RuntimeError("crashed after moving")


async def moves_by_call(reply_to, node):
    send(reply_to, ("before", termite.self()))
    await migrate(node, _report_there, reply_to)


async def _report_there(reply_to):
    send(reply_to, ("after", termite.self(), termite.current_node(), await receive("hello")))


async def move_and_wait(reply_to, node):
    await migrate(node)
    send(reply_to, ("moved", termite.self()))
    await receive("never sent")
