"""Process bodies for tests/test_backpressure.py: a receiver that falls behind, and a sender."""

import termite
from termite import Pid, receive, send
from termite._core.process import current


async def slow_sink(reply_to: Pid, drain: bool = False):
    """Read nothing until "drain" (unless ``drain``); then read numbered messages ("n", i, ...) up
    to ("end", n) and report how many came and whether in order.  Beside it, a probe says how
    full its mailbox is."""
    me = termite.self()
    send(reply_to, ("sink", me, termite.spawn(_probe, me)))
    if not drain:
        await receive("drain")
    expected, in_order = 1, True
    while True:
        msg = await receive(tuple)
        if msg[0] == "end":
            send(reply_to, ("drained", expected - 1, in_order, msg[1]))
            return
        in_order = in_order and msg[1] == expected
        expected += 1


async def _probe(sink: Pid):
    """Answer ("size", who) with the length of ``sink``'s mailbox (asking the sink would wait behind it)."""
    table = current().table
    while True:
        _, who = await receive(("size", Pid))
        proc = table.resolve(sink)
        send(who, ("size", len(proc.mailbox or ()) if proc is not None else -1))


async def sender(to: Pid, count: int, pace: int, reply_to: Pid, size: int = 0, progress: list | None = None):
    """Send ("n", i, ``size`` bytes) for i in 1..count to ``to``, yielding every ``pace`` (and
    counting in ``progress[0]``), then ("end", count); then say ("sent", count)."""
    payload = b"x" * size
    for i in range(1, count + 1):
        send(to, ("n", i, payload))
        if progress is not None:
            progress[0] = i
        if i % pace == 0:
            await termite.sleep(0)
    send(to, ("end", count))
    send(reply_to, ("sent", count))
