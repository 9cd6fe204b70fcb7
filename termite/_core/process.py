"""Processes and the table of a node's live processes.

A process is a kernel task with an identity (its pid), a mailbox, and the
bookkeeping of links, monitors and its registered name.  The mailbox, links
and registry each have a module of their own; this one holds the data they
share and the table that resolves pids to live processes.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
from typing import Any, NamedTuple

from termite._core.errors import NotInProcess
from termite._core.ids import NodeRef, Pid, Tag
from termite._core.kernel import DELIVERED, Kernel, Signal, Task, _core, current_task
from termite._core.traps import Sentinel

__all__ = ["SERVICE_SERIALS", "NAME_SERVER_SERIAL", "METER_SERIAL", "RUNNER_SERIAL", "MOVER_SERIAL", "PG_SERIAL", "Process", "ProcessTable", "Exit", "Down", "Refused", "Trace", "current", "ANY_MESSAGE", "SCAN", "REPLY", "DELIVERED", "SLEEPING", "DEAD"]

log = logging.getLogger("termite")

# What a parked process waits for (Task.waiting).  None: running or ready; DELIVERED (the
# kernel's): ready with a message handed over.
ANY_MESSAGE = Sentinel("waiting for any message")  # the next message wakes it, as its value
SCAN = Sentinel("waiting for a matching message")  # any new message wakes it to rescan
REPLY = Sentinel("waiting for a reply")  # only (tag, reply), Down(tag, ...) or Refused(tag, ...) wakes it
SLEEPING = Sentinel("sleeping")
DEAD = Sentinel("dead")


class Exit(NamedTuple):
    """The message a process trapping exits gets when a linked process ends."""

    pid: Pid
    reason: Any


class Down(NamedTuple):
    """The message a watcher gets when a monitored process ends."""

    ref: Tag
    pid: Pid
    reason: Any


class Refused(NamedTuple):
    """The answer to a call whose request the called node could not read (it could not unpickle it).

    ``ref`` is the call's tag, ``pid`` the process called, ``reason`` why (a
    text naming what could not be unpickled): ``call`` raises
    ``UnreadableMessage(reason)``.
    """

    ref: Tag
    pid: Pid
    reason: str


class Trace(NamedTuple):
    """What a tracer gets of a process it traces (``termite.trace``), one message per event.

    ``event`` is ``"received"`` (``message`` came into its mailbox), ``"sent"``
    (it sent ``message`` to ``to``: a pid, a registered name or ``(name,
    node)``), ``"migrated"`` (it moved to node ``message``; the trace
    follows it) or ``"exit"`` (it ended with reason ``message``: the last
    event of a trace).
    """

    pid: Pid
    event: str
    message: Any
    to: Any = None


#: Serials below this name a node's own services, the same on every node, so
#: other nodes address them without asking (Pid(node, METER_SERIAL)).
SERVICE_SERIALS = 16
NAME_SERVER_SERIAL = 0  # global names (termite._net.global_names)
METER_SERIAL = 1  # the load meter (termite._balance.meter)
RUNNER_SERIAL = 2  # the thunk runner (termite._balance.runner)
MOVER_SERIAL = 3  # moves opted-in processes at their safe points (termite._balance.safepoint)
PG_SERIAL = 4  # process groups: this node's replica of every group (termite._net.process_groups)


_PROCESS_FIELDS = (
    "pid",
    "table",
    "mailbox",  # deque of messages, made on the first one that must wait
    "wait_for",  # the tag of a call in progress (waiting is REPLY)
    "links",  # pids that get an exit signal when this process ends
    "monitors",  # {ref: watcher pid}: who gets Down when this process ends
    # None, or the calls in flight to it from processes of this node: their monitors, not yet in `monitors`
    # (termite._core.links.settle_calls writes them there for whoever reads monitors)
    "callers",
    "watching",  # None, or {ref: pid} of the monitors it holds: undone when it ends (termite._core.links)
    "trap_exit",
    "name",
    "order",  # a process that migrated: how its messages are put back in order (termite._move.migration)
    # Counts since it started here (termite._core.info reads them): messages handed over as it
    # waited for them, and put in its mailbox (each message is one or the other), messages it sent
    "handed",
    "queued",
    "sent",
    "tracers",  # None, or the pids that get a Trace of each message it receives and sends (termite.trace)
    "sent_to",  # None, or the nodes it sent frames to here: a migration fences them (termite._move.migration)
    "cancels",  # asyncio's cancel requests not yet taken back (uncancel): see Process.cancel
)


class Process(Task):
    # The C kernel's Task already holds the fields its deliver and send read (mailbox, wait_for, counts, tracers).
    __slots__ = tuple(field for field in _PROCESS_FIELDS if not hasattr(Task, field))

    def __init__(self, table: "ProcessTable", pid: Pid, coro):
        Task.__init__(self, table.kernel, coro)
        self.pid = pid
        self.table = table
        self.mailbox = None
        self.wait_for = None
        self.links = None
        self.monitors = None
        self.callers = None
        self.watching = None
        self.trap_exit = False
        self.name = None
        self.order = None
        self.handed = self.queued = self.sent = 0
        self.tracers = None
        self.sent_to = None
        self.cancels = 0

    def __repr__(self):
        return f"<Process {self.pid}>"

    # -- what asyncio asks of its current task (the kernel makes a running process that) ----------

    def cancel(self, msg=None) -> bool:
        """asyncio's ``Task.cancel``: ``CancelledError`` where the process waits now (as an exit
        signal), or, if it cancels itself, at its next wait.  False once it has ended."""
        if self.waiting is DEAD:
            return False
        self.cancels += 1
        if self.kernel.task is self:
            self.kernel.loop.call_soon(self._cancel_now, msg)
        else:
            self._cancel_now(msg)
        return True

    def _cancel_now(self, msg) -> None:
        if self.waiting is not DEAD:
            interrupt(self, Signal(asyncio.CancelledError() if msg is None else asyncio.CancelledError(msg)))
            self.kernel.kick()

    def cancelling(self) -> int:
        """The cancel requests not taken back by ``uncancel`` (asyncio.timeout compares them)."""
        return self.cancels

    def uncancel(self) -> int:
        if self.cancels > 0:
            self.cancels -= 1
        return self.cancels

    def get_loop(self):
        return self.kernel.loop

    def get_name(self) -> str:
        return str(self.pid)

    def done(self) -> bool:
        return self.waiting is DEAD


#: What Process.__init__ puts in the fields it takes no argument for (the C kernel's spawn too).
_PROCESS_DEFAULTS = {
    "links": None, "monitors": None, "callers": None, "watching": None, "trap_exit": False, "name": None, "order": None, "sent_to": None,
    "cancels": 0,
}


def interrupt(proc: Process, signal) -> None:
    """Deliver a kernel ``Signal`` to ``proc``, keeping a message it was about to take."""
    if proc.waiting is DELIVERED:
        proc.waiting = None
        box = proc.mailbox
        if box is None:
            box = proc.mailbox = collections.deque()
        box.append(proc.value)  # it arrived last, so it goes last
    proc.kernel.interrupt(proc, signal)


if _core is not None:
    _core.init_process(Process, Pid, _PROCESS_DEFAULTS)


class ProcessTable:
    """A node's live processes by serial, its registered names, and its kernel."""

    # Slots: the C kernel reads ref, remote and guests on every send to another node, and ref,
    # serials, procs and kernel on every spawn, at their offsets (init_table).
    __slots__ = ("kernel", "ref", "procs", "guests", "moved", "names", "monitored", "serials", "exit_waiters",
                 "remote", "dropped", "counters", "global_names", "send_to_migrant", "tracing", "__weakref__")

    def __init__(self, kernel: Kernel, ref: NodeRef):
        self.kernel = kernel
        kernel.table = self
        self.ref = ref
        self.procs: dict[int, Process] = {}  # this node's own processes, by serial
        self.guests: dict[Pid, Process] = {}  # processes born elsewhere that migrated here
        self.moved: dict[Pid, NodeRef] = {}  # the migration table: where processes that left went
        self.names: dict[str, Pid] = {}
        self.monitored: dict = {}  # monitor ref -> the local process it watches
        self.serials = itertools.count(SERVICE_SERIALS)
        # pid -> callbacks(value, reason, exc) run when that process ends
        self.exit_waiters: dict[Pid, list] = {}
        # The distribution endpoint (termite._net.endpoint.Endpoint), which
        # carries operations on pids of other nodes; None on a node without a
        # network, where a message to another node is lost, as any send may be.
        self.remote = None
        self.dropped = 0
        self.counters: collections.Counter = collections.Counter()  # events other layers count (migrations), for the meter
        # The cluster's global names, a replica kept by termite._net.global_names's name server.
        self.global_names: dict[str, Pid] = {}
        # fn(proc, msg): a local send to a process that has migrated, numbered
        # so that its order survives the next move (termite._move.forwarding installs it).
        self.send_to_migrant = None
        # The node's traces (termite._core.tracing.Traces), made by the first termite.trace of one of its
        # processes: told when a process leaves the table, so that a trace follows a migrating process.
        self.tracing = None

    def resolve(self, pid: Pid) -> Process | None:
        """The live local process behind ``pid``, or None."""
        proc = pid._proc
        if proc is not None:
            return proc
        if pid.node == self.ref:
            return self.procs.get(pid.serial)
        return self.guests.get(pid) if self.guests else None

    def is_local(self, pid: Pid) -> bool:
        """Whether ``pid`` is (or was) a process of this node: not one for the network."""
        if pid._proc is not None:
            return True
        if pid.node == self.ref:
            return not self.moved or pid not in self.moved
        return bool(self.guests) and pid in self.guests

    def add(self, proc: Process) -> None:
        """Count ``proc`` among this node's live processes (born here or a guest)."""
        pid = proc.pid
        if pid.node == self.ref:
            self.procs[pid.serial] = proc
        else:
            self.guests[pid] = proc

    def remove(self, pid: Pid) -> None:
        """``pid`` no longer runs here (it ended, or migrated away)."""
        if pid.node == self.ref:
            self.procs.pop(pid.serial, None)
        else:
            self.guests.pop(pid, None)
        if self.tracing is not None:
            self.tracing.left(pid)

    def when_exits(self, pid: Pid, callback) -> None:
        """Run ``callback(value, reason, exc)`` when ``pid`` ends here."""
        self.exit_waiters.setdefault(pid, []).append(callback)

    def new_pid(self) -> Pid:
        return Pid(self.ref, next(self.serials))


if _core is not None:
    _core.init_table(ProcessTable, NodeRef)


def current() -> Process:
    """The running process; a clear error outside one."""
    proc = current_task()
    if proc is None:
        raise NotInProcess(
            "this operation needs a running termite process; run your code as one "
            "with termite.run(main) or node.spawn(fn), or use the blocking methods "
            "of a termite.Node (node.send, node.call, node.receive)"
        )
    return proc
