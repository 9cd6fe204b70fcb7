"""Process groups, as Erlang's ``pg``: named groups of processes, known on every node.

    from termite import pg

    async def worker():
        await pg.join("workers")           # the caller joins; a process may join a group several times
        ...

    async def boss():
        for pid in pg.members("workers"):  # every node's members, from this node's replica: no round trip
            send(pid, "work")
        ref, now = await pg.monitor("workers")
        event = await receive(pg.GroupEvent)   # GroupEvent(ref, "join" | "leave", "workers", pids)

A member that ends leaves its groups everywhere; the members of a node that
is lost leave at once on every other node; a member that migrates stays a
member.  Views are eventually consistent: a join is seen on other nodes a
moment later.  A process joins and leaves on the node it runs on.  How the
nodes agree: termite/_net/process_groups.py.
"""

from termite._net.process_groups import (
    GroupEvent, demonitor, join, leave, local_members, members, monitor, which_groups,
)

__all__ = ["join", "leave", "members", "local_members", "which_groups", "monitor", "demonitor", "GroupEvent"]

for _name in __all__:
    globals()[_name].__module__ = "termite.pg"
del _name
