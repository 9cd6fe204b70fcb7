"""The only way into the kernel.

A process gives control back to its kernel by yielding one of these values up
its chain of awaits.  Everything else (mailboxes, timers for receive, links,
sleep) is library code that records what it waits for and then parks.

``PARK``        suspend; whoever records the wait will wake the process.
``RESCHEDULE``  stay runnable, but let every other ready process run first.
``NEXT_TURN``   stay runnable, but only from the kernel's next turn, after the
                event loop has run its timers and I/O.  It is ``None``: what
                asyncio's ``sleep(0)`` yields means the same there.

Any other yielded value must be an asyncio future (what awaiting an asyncio
awaitable yields); the kernel resumes the process when the future is done.

This module holds the one ``@types.coroutine`` of the general traps.  The hot
path of ``receive`` (termite/_core/mailbox.py) yields ``PARK`` itself, inline,
because a second generator frame per receive costs a tenth of a message hop.
"""

import types

__all__ = ["PARK", "RESCHEDULE", "NEXT_TURN", "park", "reschedule", "next_turn", "Sentinel"]


class Sentinel:
    """A named unique value: the traps here, and the wait states of tasks."""

    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"<{self.name}>"


PARK = Sentinel("trap: park")
RESCHEDULE = Sentinel("trap: reschedule")
NEXT_TURN = None


@types.coroutine
def park():
    """Suspend the current process until the kernel wakes it; return the wake value."""
    return (yield PARK)


@types.coroutine
def reschedule():
    """Let every other ready process run, then continue."""
    return (yield RESCHEDULE)


@types.coroutine
def next_turn():
    """Let timers, I/O and every other process run, then continue."""
    return (yield NEXT_TURN)
