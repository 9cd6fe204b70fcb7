"""Safe points: a process that opted in moves to a less loaded node when it chooses to.

The paper leaves a process in control of its own migration, and so does the
balancer (termite._balance.balancer): it never moves a process, it *asks*.

- ``balanceable()`` opts the calling process in (``balanceable(False)``
  out): the balancer may ask it to move.  ``ChildSpec(balance=True)`` does
  the same for a supervised child (its body runs under :func:`balanced`).
- ``await checkpoint()`` is the process's safe point: if it was asked to
  move, it calls ``migrate`` itself there and returns the node it is now on;
  otherwise it returns None at once, without yielding (a dictionary look-up
  when nothing was asked of this node).  A process moves only at a
  checkpoint: a ``receive`` is not a safe point, because the receive frame
  belongs to ``_core``, which knows nothing of balancing, and a hook on its
  hot path would cost every message.

Each networked node runs a *mover* under serial ``MOVER_SERIAL``.  It keeps
no state of its own: the opted-in processes of its node and the moves asked
of them are in :class:`_Opted`, shared with ``checkpoint`` on the node's
thread.  Its one request:

``(sender, tag, ("shed", count, target, ttl, balancer))`` marks up to
``count`` opted-in processes of this node (those here longest first) to move
to ``target`` at their next checkpoint, within ``ttl`` seconds (a mark that
waited longer is dropped: the loads it was based on are old); answers
``(tag, marked)``.  Each move made is logged (logger ``termite.balance``),
counted in the target's load report (``Load.balanced_in``) and told to
``balancer`` as ``("moved", pid, source, target, wall time)``.

What follows a process: its pid, locals, mailbox, links, monitors and global
names, as for any migration.  Its opting in follows moves made here, at a
checkpoint; a move of its own (``await migrate(node)``) leaves it opted out
on the new node until it calls ``balanceable()`` again.  A process with a
local name (``register``) is never asked: migration refuses it, since a local
name belongs to its node.
"""

from __future__ import annotations

import logging
import time
import weakref

from termite._core.errors import MigrationError
from termite._core.ids import NodeRef, Pid
from termite._core.mailbox import receive, send
from termite._core.patterns import ANY
from termite._core.process import MOVER_SERIAL, ProcessTable, current
from termite._core.spawn import process_body, spawn_in
from termite._move.migration import migrate

__all__ = ["balanceable", "checkpoint", "balanced", "start_mover", "mover_of", "opted_in", "MOVER_SERIAL"]

log = logging.getLogger("termite.balance")

_opted: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # ProcessTable -> _Opted


class _Ask:
    __slots__ = ("target", "deadline", "balancer")

    def __init__(self, target: NodeRef, deadline: float, balancer: Pid | None):
        self.target, self.deadline, self.balancer = target, deadline, balancer


class _Opted:
    """One node's opted-in processes, and the moves asked of them."""

    def __init__(self, table: ProcessTable):
        self.table = table
        self.procs: dict[Pid, None] = {}  # in the order they opted in or arrived: the longest here first
        self.asked: dict[Pid, _Ask] = {}

    def add(self, pid: Pid) -> None:
        if pid not in self.procs:
            self.procs[pid] = None
            # Its end here forgets it (a second watch, after an opt-out and in again, forgets it twice:
            # harmless).  A process that migrates away takes no watch along: the table drops it.
            self.table.when_exits(pid, lambda *_: self.forget(pid))

    def forget(self, pid: Pid) -> None:
        self.procs.pop(pid, None)
        self.asked.pop(pid, None)

    def movable(self) -> list[Pid]:
        """The opted-in processes that run here now and may migrate (no local name); stale entries go."""
        table, found = self.table, []
        for pid in list(self.procs):
            proc = table.resolve(pid)
            if proc is None:  # left by a migrate of its own: no longer here
                del self.procs[pid]
            elif proc.name is None:
                found.append(pid)
        return found

    def shed(self, count: int, target: NodeRef, ttl: float, balancer: Pid | None) -> int:
        now = self.table.kernel.loop.time()
        for pid in [pid for pid, ask in self.asked.items() if ask.deadline <= now]:
            del self.asked[pid]  # never reached a checkpoint in time
        marked = 0
        for pid in self.movable():
            if marked >= count:
                break
            if pid in self.asked:
                continue  # asked already, not yet at a checkpoint
            self.asked[pid] = _Ask(target, now + ttl, balancer)
            marked += 1
        return marked


def _of(table: ProcessTable) -> _Opted:
    opted = _opted.get(table)
    if opted is None:
        opted = _opted[table] = _Opted(table)
    return opted


def opted_in(table: ProcessTable) -> int:
    """How many processes of this node the balancer may ask to move (for the load report)."""
    opted = _opted.get(table)
    return 0 if opted is None else len(opted.movable())


def balanceable(on: bool = True) -> None:
    """Let the balancer ask the calling process to move (at its ``checkpoint()``s); ``False`` opts out."""
    me = current()
    if on:
        _of(me.table).add(me.pid)
    else:
        opted = _opted.get(me.table)
        if opted is not None:
            opted.forget(me.pid)


async def checkpoint() -> NodeRef | None:
    """A safe point: move now if the balancer asked; return the node moved to, or None.

    Cheap when nothing was asked (it does not yield).  A move that fails
    (the target refused, or was lost) is logged and returns None: the
    process goes on where it was, still opted in.
    """
    ask = _take_ask()
    if ask is None:
        return None
    # Only plain data is alive in this frame across the move: it travels with the process.
    target, balancer = ask
    source = _here()
    try:
        await migrate(target)
    except MigrationError as exc:
        _stayed(exc, source, target)
        return None
    return _arrived(source, balancer)


def _here() -> NodeRef:
    """The node the calling process runs on."""
    return current().table.ref


def _take_ask() -> tuple[NodeRef, Pid | None] | None:
    """The move asked of the calling process, taken, if any and not too old: (target, balancer)."""
    me = current()
    opted = _opted.get(me.table)
    if opted is None or not opted.asked:
        return None
    ask = opted.asked.pop(me.pid, None)
    if ask is None or ask.deadline < me.kernel.loop.time():
        return None
    opted.procs.pop(me.pid, None)  # it leaves; should it not, _stayed puts it back (its end is still watched)
    return ask.target, ask.balancer


def _stayed(exc: MigrationError, source: NodeRef, target: NodeRef) -> None:
    me = current()
    log.warning("balance: %s did not move from %s to %s: %s", me.pid, source, target, exc)
    _of(me.table).procs[me.pid] = None


def _arrived(source: NodeRef, balancer: Pid | None) -> NodeRef:
    me = current()
    table = me.table
    _of(table).add(me.pid)
    table.counters["balanced_in"] += 1
    log.info("balance: moved %s from %s to %s", me.pid, source, table.ref)
    if balancer is not None:
        send(balancer, ("moved", me.pid, source, table.ref, time.time()))
    return table.ref


async def balanced(start, *args):
    """A process body: opt in, then run ``start(*args)`` (what ``ChildSpec(balance=True)`` starts)."""
    balanceable()
    return await process_body(start, args)


def mover_of(node: NodeRef) -> Pid:
    """The pid of ``node``'s mover."""
    return Pid(node, MOVER_SERIAL)


async def _mover():
    me = current()
    opted = _of(me.table)
    while True:
        match await receive((Pid, ANY, ANY)):
            case (sender, tag, ("shed", int() as count, NodeRef() as target, float() | int() as ttl, balancer)):
                send(sender, (tag, opted.shed(count, target, float(ttl), balancer)))
            case (sender, tag, request):
                send(sender, (tag, ("error", f"the mover does not know the request {request!r}")))


def start_mover(table: ProcessTable, endpoint) -> None:
    """Start this node's mover (a runtime extension: termite._runtime.node)."""
    spawn_in(table, _mover, (), pid=mover_of(table.ref))
