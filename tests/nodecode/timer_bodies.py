"""Process bodies for tests/test_timers.py, importable on every node (tests/nodecode is on their path)."""

import termite
from termite import cancel_timer, migrate, read_timer, receive, send, send_after


async def move_when_told(reply_to):
    """On ("go", node): migrate there and say so; then report the next message and where it came."""
    _, node = await receive(("go", termite.NodeRef))
    await migrate(node)
    send(reply_to, ("moved", termite.self(), termite.current_node()))
    send(reply_to, ("got", await receive(), termite.current_node()))


async def owner_moves(reply_to, node):
    """Set three owned timers, migrate to ``node``, cancel one from there; end on "stop"."""
    kept = send_after(2.0, reply_to, "kept", owned=True)
    dropped = send_after(1.5, reply_to, "dropped", owned=True)
    late = send_after(60, reply_to, "late", owned=True)
    send(reply_to, ("refs", kept, dropped, late))
    await migrate(node)
    send(reply_to, ("moved", termite.current_node(), cancel_timer(dropped), read_timer(kept)))
    await receive("stop")
