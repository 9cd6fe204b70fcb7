"""What a node can tell about its processes: each one's mailbox and state, and its mailboxes in all.

``process_info(pid)`` (Erlang's ``process_info/1``) describes a live process
of the calling process's node; ``Node.process_info(pid)`` does it from
outside.  ``mailbox_totals(table)`` is the node's figure for the load meter:
the messages waiting in all its mailboxes and the largest mailbox.  A
mailbox is a deque, so each figure is one ``len``; the totals walk the
process table once, in C (about 30 ns a process), and only when asked.
"""

from __future__ import annotations

import dataclasses
from itertools import compress
from operator import attrgetter

from termite._core.ids import Pid
from termite._core.process import DEAD, DELIVERED, ProcessTable, current

__all__ = ["ProcessInfo", "process_info", "info_in", "mailbox_totals"]


@dataclasses.dataclass(frozen=True)
class ProcessInfo:
    """One process of this node, as it is now."""

    pid: Pid
    mailbox: int  # messages waiting in its mailbox
    status: str  # "runnable", or what it waits for: "waiting for any message", "sleeping", ...
    name: str | None  # its registered name
    links: int
    monitors: int  # monitors on it, by other processes
    trap_exit: bool


def info_in(table: ProcessTable, pid: Pid) -> ProcessInfo | None:
    """``pid``'s info if it is a live process of ``table``'s node, else None."""
    if pid.__class__ is not Pid:
        raise TypeError(f"process_info needs a Pid, not {type(pid).__name__}: {pid!r}")
    proc = table.resolve(pid)
    if proc is None and pid.node != table.ref:
        raise ValueError(
            f"process_info reads this node's processes, and {pid} is not one of them: ask a process on its "
            f"node, or read that node's mailbox totals in its load report (termite.node_load(node))"
        )
    if proc is None or proc.pid != pid:
        return None
    waiting = proc.waiting
    if waiting is DEAD:
        return None
    status = "runnable" if waiting is None or waiting is DELIVERED else getattr(waiting, "name", None) or repr(waiting)
    return ProcessInfo(
        pid=proc.pid,
        mailbox=len(proc.mailbox) if proc.mailbox else 0,
        status=status,
        name=proc.name,
        links=len(proc.links) if proc.links else 0,
        monitors=len(proc.monitors) if proc.monitors else 0,
        trap_exit=bool(proc.trap_exit),
    )


def process_info(pid: Pid) -> ProcessInfo | None:
    """The calling node's live process ``pid`` (its mailbox size, state, name...), or None if it has none.

    Only this node's processes: for another node's, ask a process there, or
    read that node's mailbox totals in its load report (``termite.node_load``).
    """
    return info_in(current().table, pid)


_mailbox = attrgetter("mailbox")


def mailbox_totals(table: ProcessTable) -> tuple[int, int, Pid | None]:
    """The messages waiting in all mailboxes of the node, the largest mailbox, and its process."""
    queued = largest = 0
    owner = None
    for procs in (table.procs.values(), table.guests.values()):
        # compress and map run in C: processes without a mailbox or with an empty one are skipped
        for proc in compress(procs, map(_mailbox, procs)):
            n = len(proc.mailbox)
            queued += n
            if n > largest:
                largest, owner = n, proc.pid
    return queued, largest, owner
