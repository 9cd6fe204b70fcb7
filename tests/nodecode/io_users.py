"""Process bodies for tests/test_io_processes.py, importable on every node (tests/nodecode is on their path)."""

import socket

import termite
from termite import MigrationError, migrate, receive, send


async def writes_then_migrates(reply_to, path, there):
    """Open ``path`` here, write, move to ``there``, write and read it back through the pid, report."""
    f = termite.io.open_file(path, "w+")
    await termite.io.write(f, f"1 at {termite.current_node()}\n")
    await migrate(there)
    await termite.io.write(f, f"2 from {termite.current_node()}\n")
    await termite.io.seek(f, 0)
    send(reply_to, ("moved", termite.current_node(), f, await termite.io.read(f)))
    await receive("end")  # then the file closes, as its owner ends


async def prints_home_from_there(reply_to, there, text):
    """Take this node's stdout, move to ``there``, write ``text`` to it by call and by send, report."""
    out = await termite.io.stdout()
    await migrate(there)
    await termite.io.write(out, text + " (call)\n")
    send(out, ("write", text + " (send)\n"))
    send(reply_to, ("printed", termite.current_node(), out))


async def holds_a_raw_resource(reply_to, there, kind, path):
    """Try to migrate holding an open file (text or binary) or a socket; report the refusal."""
    if kind == "socket":
        resource = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    else:
        resource = open(path, "w" if kind == "text" else "wb")  # noqa: SIM115
    try:
        await migrate(there)
    except MigrationError as exc:
        send(reply_to, ("refused", str(exc), exc.variable, termite.current_node()))
    finally:
        resource.close()
