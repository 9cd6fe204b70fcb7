"""Process migration, and remote spawn by migration (paper, sections 4.8 and 4.9).

    (define migrating
      (spawn
        (let loop ()
          (recv
            ((from tag 'where) (! from (list tag (current-node))))
            (('migrate to) (migrate to)))
          (loop))))
    (!? migrating 'where)              => node1
    (! migrating (list 'migrate node2))
    (!? migrating 'where)              => node2

    (let ((me (self))) (spawn (migrate node) (! me 'boo)))   (?) => boo

A second node runs in another OS process; the migrating process keeps its
pid, its loop and its mailbox as it moves.
"""

import termite
from termite import Exited, NodeRef, Pid, Tag, call, migrate, receive, send, spawn
from termite.testing import NodeProcess


async def migrating():
    while True:
        match await receive((Pid, Tag, "where"), ("migrate", NodeRef)):
            case (sender, tag, "where"):
                send(sender, (tag, termite.current_node()))
            case ("migrate", to):
                await migrate(to)  # the loop goes on over there


async def main(node2_address):
    node1 = termite.current_node()
    node2 = await termite.connect(*node2_address)  # (make-node "example.com" 3000)
    name = {node1: "node1", node2: "node2"}

    server = spawn(migrating)
    trail = [name[await call(server, "where")]]
    for to in (node2, node1):
        send(server, ("migrate", to))
        trail.append(name[await call(server, "where")])  # the same pid, wherever it is
    print("(!? migrating 'where) as it moves =>", " -> ".join(trail))

    me = termite.self()

    async def boo():
        await migrate(node2)  # spawn here, then move: a remote spawn
        send(me, ("boo", name[termite.current_node()]))

    spawn(boo)
    print("spawn, migrate, (! me 'boo)        =>", await receive(("boo", str)))

    async def fail():
        await migrate(node2)
        raise RuntimeError("error")

    try:
        spawn(fail, link=True)  # the link holds across the move
        await receive(timeout=5)
    except Exited as exc:
        print("spawn-link, migrate, raise         =>", exc.reason.message)
    return trail


if __name__ == "__main__":
    # A second node (python -m termite.node --keys KEY) holding this script's session key:
    # the two admit each other and no one else.
    node2 = NodeProcess("--keys", termite.session_keys())
    try:
        termite.run(main, node2.ref.address, network=termite.Network(keys=termite.session_keys()))
    finally:
        node2.stop()
