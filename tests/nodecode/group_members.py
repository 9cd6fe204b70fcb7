"""Process bodies for tests/test_pg.py, importable on every node (tests/nodecode is on their path)."""

import termite
from termite import migrate, monitor_node, pg, receive, send


async def member(reply_to, groups):
    """Join each of ``groups`` (a group listed twice is joined twice), say so, then do as told."""
    for group in groups:
        await pg.join(group)
    send(reply_to, ("joined", termite.self(), termite.current_node()))
    while True:
        match await receive():
            case ("join", group):
                await pg.join(group)
                send(reply_to, ("joined", termite.self(), termite.current_node()))
            case ("leave", group):
                send(reply_to, ("left", termite.self(), await pg.leave(group)))
            case ("migrate", node, then):
                await migrate(node)
                for group in then:  # at once, before its new node may have heard of it from its old one
                    await pg.join(group)
                send(reply_to, ("moved", termite.self(), termite.current_node()))
            case "stop":
                return


async def watcher(reply_to, group, token):
    """Monitor ``group`` on this node; send what it holds now, then every change, to ``reply_to``."""
    ref, now = await pg.monitor(group)
    here = termite.current_node()
    send(reply_to, ("watching", token, here, now))
    while True:
        event = await receive(pg.GroupEvent)
        assert event.ref == ref and event.group == group, event
        send(reply_to, ("event", token, here, event.kind, event.pids))


async def node_watcher(reply_to, node):
    """Tell ``reply_to`` when this node loses ``node``."""
    monitor_node(node)
    send(reply_to, ("watching node", termite.current_node(), node))
    down = await receive(termite.NodeDown)
    send(reply_to, ("lost", termite.current_node(), down.node))


def view(group):
    """This node's view of ``group``: (node, members, local members, groups)."""
    return termite.current_node(), pg.members(group), pg.local_members(group), pg.which_groups()


def keep_group_server_busy(count):
    """Put ``count`` cheap messages before whatever comes next to this node's group server."""
    server = termite.Pid(termite.current_node(), termite._core.process.PG_SERIAL)
    ghost = termite.Pid(termite.current_node(), 2**40)  # never lived: dropped at once, then ignored
    for _ in range(count):
        send(server, ("state", ghost, 1, {}))
