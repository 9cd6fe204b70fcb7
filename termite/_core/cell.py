"""Cells (the paper's section 4.6): mutable state held by a suspended process.

    (define (make-cell content)
      (spawn
        (let loop ((content content))
          (recv
            ((from tag 'ref) (! from (list tag content)) (loop content))
            (('set! content) (loop content))))))
    (define (cell-ref cell) (!? cell 'ref))
    (define (cell-set! cell value) (! cell (list 'set! value)))

A cell is a process, so its pid can be sent anywhere and read from any node;
``cell_set`` is a plain send, so a ``cell_ref`` by the same process afterwards
sees the new value (messages from one sender arrive in order).
"""

from __future__ import annotations

from termite._core.call import call
from termite._core.ids import Pid, Tag
from termite._core.mailbox import receive, send
from termite._core.spawn import spawn

__all__ = ["make_cell", "cell_ref", "cell_set"]


async def _cell(content):
    while True:
        msg = await receive()
        if msg.__class__ is tuple:
            if len(msg) == 3 and msg[0].__class__ is Pid and msg[1].__class__ is Tag and msg[2] == "ref":
                send(msg[0], (msg[1], content))
            elif len(msg) == 2 and msg[0] == "set!":
                content = msg[1]  # the paper's (loop content)
        # anything else is dropped, so junk cannot pile up


def make_cell(content=None, *, node=None) -> Pid:
    """A new cell holding ``content``; returns its pid (``node``: on another node)."""
    return spawn(_cell, content, node=node)


async def cell_ref(cell: Pid, timeout: float | None = None):
    """The cell's content (``Timeout`` after ``timeout`` s; ``DeadProcess`` if it has ended)."""
    return await call(cell, "ref", timeout=timeout)


def cell_set(cell: Pid, value) -> None:
    """Put ``value`` in the cell; returns at once (a send, as the paper's ``cell-set!``)."""
    send(cell, ("set!", value))
