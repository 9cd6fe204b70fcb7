"""Process bodies for tests/test_balance.py, importable on every node (tests/nodecode is on their path).

A cruncher is a CPU-bound, long-running process: it burns its CPU in 2 ms
slices and, between them, passes a safe point (``termite.checkpoint()``) and
looks at its mailbox, so it can be asked where it is and how much it did.
"""

import time

import termite
from termite import Pid, Tag, receive, send

SLICE = 0.002  # seconds of CPU per work unit


def burn(seconds: float = SLICE) -> None:
    start = time.thread_time()
    while time.thread_time() - start < seconds:
        pass


async def cruncher(report_to, tag, opt_in: bool = True, name: str | None = None):
    """Crunch for ever; report ("started", tag, pid, node) and each move ("moved", tag, pid, node).

    Answers ``(sender, ref, "where")`` with ``(ref, (node, units))``; ends on "stop".
    """
    if opt_in:
        termite.balanceable()
    if name is not None:
        await termite.register_global(name)
    send(report_to, ("started", tag, termite.self(), termite.current_node()))
    units = 0
    while True:
        burn()
        units += 1
        moved = await termite.checkpoint()
        if moved is not None:
            send(report_to, ("moved", tag, termite.self(), moved))
        msg = await receive(timeout=0, default=None)
        if msg is None:
            await termite.sleep(0)
        elif msg == "stop":
            return units
        elif msg.__class__ is tuple and len(msg) == 3 and msg[0].__class__ is Pid and msg[1].__class__ is Tag:
            send(msg[0], (msg[1], (termite.current_node(), units)))
