"""Files and standard output as processes, so a process that uses them can migrate (paper, section 3.1).

The paper exposes ports (open files, devices) as processes: what travels is
a pid.  Here a process opens a file on node1 (termite.io.open_file), moves
to node2 and goes on writing to it; the file stays open on node1.  It also
prints on node1's stdout from node2.  Holding a plain open file instead, it
cannot move, and the error says what to use.
"""

import os
import tempfile

import termite
from termite import MigrationError, Pid, migrate, receive, send, spawn
from termite.testing import NodeProcess


async def writer(path, node2, reply_to):
    log = termite.io.open_file(path, "w")  # a pid: the file is open on this node, node1
    out = await termite.io.stdout()  # node1's standard output, as a process
    await termite.io.write(log, f"{termite.current_node()}\n")
    await migrate(node2)
    await termite.io.write(log, f"{termite.current_node()}\n")  # from node2; node1 writes it
    await termite.io.write(out, "node1's stdout, from a process on node2\n")
    await termite.io.close(log)
    send(reply_to, ("done", log))


async def holds_a_plain_file(path, node2, reply_to):
    with open(path) as plain:  # noqa: F841 - held across the migration
        try:
            await migrate(node2)
        except MigrationError as exc:
            send(reply_to, ("refused", str(exc)))


async def main(node2_address):
    node1 = termite.current_node()
    node2 = await termite.connect(*node2_address)
    name = {str(node1): "node1", str(node2): "node2"}
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "moves.txt")
        spawn(writer, path, node2, termite.self())
        _, log = await receive(("done", Pid))
        with open(path) as written:
            lines = [name[line.strip()] for line in written]
        print("the file, written before and after the move =>", " then ".join(lines))
        print("its proxy stayed on                         =>", name[str(log.node)])

        spawn(holds_a_plain_file, path, node2, termite.self())
        _, why = await receive(("refused", str))
    print("a plain open file refuses to move; use      =>", why[why.index("termite.io"):].split(";")[0])
    return lines


if __name__ == "__main__":
    node2 = NodeProcess("--keys", termite.session_keys())  # a second node, in another OS process
    try:
        termite.run(main, node2.ref.address, network=termite.Network(keys=termite.session_keys()))
    finally:
        node2.stop()
