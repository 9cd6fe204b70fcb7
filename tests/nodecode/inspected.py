"""Process bodies for the introspection tests (tests/test_introspection.py), importable by every node."""

import asyncio

import termite
from termite import Pid, receive, send


async def waiter():
    """Answers ("ping") with "pong" until ("stop",)."""
    while True:
        msg = await receive((Pid, "ping"), ("stop",))  # WAITS HERE
        if msg == ("stop",):
            return
        send(msg[0], "pong")


async def sleeper():
    await termite.sleep(30)


async def awaiter():
    await asyncio.sleep(30)  # AWAITS HERE


async def caller(pid):
    await termite.call(pid, "get")


async def watcher(target, reply_to):
    termite.monitor(target)
    send(reply_to, "watching")
    await receive()


async def mover(reply_to):
    """Migrates when told ("go", node), then says ("moved", node) and answers pings there."""
    _, node = await receive(("go", termite.NodeRef))
    await termite.migrate(node)
    send(reply_to, ("moved", termite.current_node()))
    while True:
        sender, _ = await receive((Pid, "ping"))
        send(sender, "pong")


def line_of(marker: str) -> int:
    """The line of this file that holds ``marker``."""
    with open(__file__) as f:
        return next(i for i, line in enumerate(f, 1) if marker in line and "marker" not in line)
