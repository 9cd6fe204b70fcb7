"""The only way into the kernel.

A process gives control back to its kernel by yielding one of these values up
its chain of awaits.  Everything else (mailboxes, timers for receive, links,
sleep) is library code that records what it waits for and then parks.

``PARK``        suspend; whoever records the wait will wake the process.
``RESCHEDULE``  stay runnable, but let every other ready process run first.

Any other yielded value must be an asyncio future (what awaiting an asyncio
awaitable yields); the kernel resumes the process when the future is done.

This module holds the one ``@types.coroutine`` of the general traps.  The hot
path of ``receive`` (termite/_core/mailbox.py) yields ``PARK`` itself, inline,
because a second generator frame per receive costs a tenth of a message hop.
"""

import types

__all__ = ["PARK", "RESCHEDULE", "park", "reschedule", "Sentinel"]


class Sentinel:
    """A named unique value: the traps here, and the wait states of tasks."""

    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"<{self.name}>"


PARK = Sentinel("trap: park")
RESCHEDULE = Sentinel("trap: reschedule")


@types.coroutine
def park():
    """Suspend the current process until the kernel wakes it; return the wake value."""
    return (yield PARK)


@types.coroutine
def reschedule():
    """Let every other ready process run, then continue."""
    return (yield RESCHEDULE)
