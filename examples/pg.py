"""Process groups (Erlang's pg): workers on two nodes join one group, and anyone can reach them all.

A second node runs in another OS process.  Each worker joins "workers" on
the node it runs on; every node soon lists them all (``pg.members`` reads
the node's own copy: no messages), a worker that migrates stays a member,
and one that ends leaves the group everywhere.  ``pg.monitor`` tells of
every join and leave.
"""

import termite
from termite import migrate, pg, receive, send, spawn
from termite.testing import NodeProcess


async def worker(boss):
    await pg.join("workers")
    send(boss, "ready")
    while True:
        match await receive():
            case ("hello", sender):
                send(sender, ("hi", termite.current_node()))
            case ("move", node):
                await migrate(node)
                send(boss, ("moved", termite.self()))
            case "stop":
                return


async def main(node2_address):
    node1 = termite.current_node()
    node2 = await termite.connect(*node2_address)
    name = {node1: "node1", node2: "node2"}
    me = termite.self()
    ref, _ = await pg.monitor("workers")
    for node in (node1, node1, node2, node2):
        spawn(worker, me, node=node)
    for _ in range(4):
        await receive(pg.GroupEvent(ref, "join", "workers", termite.ANY))  # seen here, wherever it joined
    workers = pg.members("workers")
    for pid in workers:  # a message to every member: Erlang's way, no special send
        send(pid, ("hello", me))
    where = sorted([name[(await receive(("hi", termite.NodeRef)))[1]] for _ in workers])
    print(f"node1 sees {len(workers)} workers; they answer from {', '.join(where)}")

    mover = pg.local_members("workers")[0]
    send(mover, ("move", node2))
    await receive(("moved", mover))
    print(f"a worker moved to node2: still a member: {mover in pg.members('workers')}; "
          f"on node1 now: {len(pg.local_members('workers'))}")

    send(mover, "stop")
    event = await receive(pg.GroupEvent(ref, "leave", "workers", termite.ANY))
    print(f"it stopped: {event.kind} event, {len(pg.members('workers'))} members left")
    return len(pg.members("workers"))


if __name__ == "__main__":
    node2 = NodeProcess("--keys", termite.session_keys())
    try:
        termite.run(main, node2.ref.address, network=termite.Network(keys=termite.session_keys()))
    finally:
        node2.stop()
