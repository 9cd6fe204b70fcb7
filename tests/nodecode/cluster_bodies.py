"""Process bodies the three-node tests (tests/test_cluster.py) run on node processes."""

import termite
from termite.testing import echo


def stream(to, count):
    for i in range(count):
        termite.send(to, i)


async def spawn_on_and_call(node):
    server = termite.spawn(echo, node=node)
    return await termite.call(server, ("echo", server.node), timeout=10)


async def whereis_after_sync(name):
    await termite.sync_global()
    return termite.whereis_global(name)


async def register_cut_off(name, reply_to):
    """Hold ``name`` in this node's replica only, as a node cut off from the others would."""
    me = termite.self()
    termite.send(termite.Pid(termite.current_node(), 0), ("claim", name, me, me, "t"))
    await termite.receive(("t", termite.Pid, me))
    termite.send(reply_to, ("registered", name, me))
    await termite.receive("stop")


async def contact_early(target, server, reply_to):
    """Monitor and message ``target`` (perhaps not spawned yet), make sure its node has read both, then wait."""
    termite.monitor(target)
    termite.send(target, "early")
    await termite.call(server, "behind them on this connection", timeout=10)
    termite.send(reply_to, ("contacted", target))
    termite.send(reply_to, await termite.receive(termite.Down))


async def first_message(reply_to):
    termite.send(reply_to, ("first", await termite.receive()))
