"""Links, monitors and exit signals: how the end of a process reaches others.

A process ends with a *reason*: ``"normal"`` when its body returns, a
:class:`Crash` when it raises, ``"killed"`` when killed, or the reason of an
exit signal it did not handle.

- A **link** carries exit signals.  ``link(pid)`` is bidirectional (either
  end's exit reaches the other); ``link(pid, directed=True)`` only brings
  ``pid``'s exit here (the paper's outbound link from worker to monitor).
- An **exit signal** with an abnormal reason, at a process that does not trap
  exits, raises :class:`Exited` in it at its current ``await`` (for a process
  waiting in ``receive``: at its next message retrieval, as in the paper).
  Uncaught, it ends that process with the same reason, so a failure travels
  on along links.  A ``"normal"`` signal is ignored.  With
  ``trap_exit(True)`` every signal arrives as an ``Exit(pid, reason)``
  message instead.  ``exit(pid, "kill")`` cannot be trapped: the target ends
  with reason ``"killed"``.
- A **monitor** is one-way and never kills: ``monitor(pid)`` returns a
  reference, and when ``pid`` ends the watcher gets ``Down(ref, pid, reason)``.
"""

from __future__ import annotations

import functools
import logging

from termite._core.errors import Crash, Exited
from termite._core.ids import Pid, Tag, make_tag
from termite._core.kernel import Signal, _core
from termite._core.mailbox import deliver, send
from termite._core.process import DEAD, Down, Exit, Process, current, interrupt

__all__ = [
    "Exit",
    "Down",
    "link",
    "unlink",
    "monitor",
    "demonitor",
    "exit",
    "kill",
    "trap_exit",
    "process_exited",
]

log = logging.getLogger("termite")


class Kill(BaseException):
    """Raised by the kernel as a killed process's outcome: never seen by user code."""

    def __init__(self, reason="killed"):
        super().__init__(reason)
        self.reason = reason


def _pid_of(target) -> Pid:
    if target.__class__ is Pid:
        return target
    if isinstance(target, str):
        from termite._core.mailbox import _resolve_name

        return _resolve_name(target)
    raise TypeError(f"expected a Pid or a registered name, got {type(target).__name__}: {target!r}")


# -- links --------------------------------------------------------------------


def link(pid: Pid, *, directed: bool = False) -> None:
    """Link this process with ``pid`` (both ways), or only from ``pid`` to here.

    If ``pid`` has already ended, this process gets an exit signal with reason
    ``"noproc"`` at once.
    """
    me = current()
    pid = _pid_of(pid)
    if pid == me.pid:
        return
    target = me.table.resolve(pid)
    if target is None:
        if me.table.is_local(pid):
            signal_exit(me, pid, "noproc")
        elif me.table.remote is not None:
            me.table.remote.link(me.pid, pid, directed)
        return
    add_link(target, me.pid)
    if not directed:
        add_link(me, pid)


def add_link(proc: Process, to: Pid) -> None:
    if proc.links is None:
        proc.links = set()
    proc.links.add(to)


def unlink(pid: Pid) -> None:
    """Remove any link between this process and ``pid``, in both directions."""
    me = current()
    pid = _pid_of(pid)
    if me.links:
        me.links.discard(pid)
    target = me.table.resolve(pid)
    if target is not None:
        if target.links:
            target.links.discard(me.pid)
    elif me.table.remote is not None and not me.table.is_local(pid):
        me.table.remote.unlink(me.pid, pid)  # the other node forgets its side too


def trap_exit(flag: bool = True) -> bool:
    """Turn exit signals into ``Exit`` messages for this process; return the old setting."""
    me = current()
    old, me.trap_exit = me.trap_exit, bool(flag)
    return old


# -- monitors -----------------------------------------------------------------


def monitor(pid: Pid) -> Tag:
    """Watch ``pid``: when it ends, this process gets ``Down(ref, pid, reason)``.

    Returns ``ref``.  A pid that has already ended gives ``Down`` with reason
    ``"noproc"`` at once.
    """
    me = current()
    pid = _pid_of(pid)
    ref = make_tag()
    _watch(me, pid, ref)
    return ref


def _watch(me: Process, pid: Pid, ref: Tag) -> None:
    table = me.table
    target = table.resolve(pid)
    if target is not None:
        if target.monitors is None:
            target.monitors = {}
        target.monitors[ref] = me.pid
        table.monitored[ref] = target
        _hold(me, ref, pid)
    elif table.is_local(pid):
        deliver(me, Down(ref, pid, "noproc"))
    elif table.remote is not None:
        table.remote.monitor(me.pid, pid, ref)
        _hold(me, ref, pid)
    # else: a node this one cannot reach; a transport will report it.


class _Watching(dict):
    """The monitors a process holds, {ref: pid}: those it did not undo are undone when it ends, as Erlang
    does (else a long-lived process would keep one for each short-lived watcher it outlived).  Those that
    fired stay until a look at all of them, when the dict has doubled since the last."""

    __slots__ = ("look_at",)


_FIRST_LOOK = 64


def _hold(me: Process, ref: Tag, pid: Pid) -> None:
    watching = me.watching
    if watching is None:
        watching = me.watching = _Watching()
        watching.look_at = _FIRST_LOOK
    watching[ref] = pid
    if len(watching) > watching.look_at:
        table = me.table
        monitored, remote = table.monitored, table.remote
        for old in [old for old in watching if old not in monitored
                    and (remote is None or not remote.holds_monitor(old))]:
            del watching[old]
        watching.look_at = max(_FIRST_LOOK, 2 * len(watching))


def hold_monitors(me: Process, held) -> None:
    """``me`` holds the monitors ``held``, (ref, pid) pairs made on the node it migrated from: undone when
    it ends, as those it makes here (the endpoint's ``carried`` knows where)."""
    for ref, pid in held:
        _hold(me, ref, pid)


def _monitor_for_call(me: Process, pid: Pid, tag: Tag) -> None:
    """``call``'s monitor, written at once: the reply tag doubles as the monitor reference."""
    _watch(me, pid, tag)


# A call's monitor of a process of this node is only noted on its target (`callers`), and written into
# `monitors` and the table's `monitored` only when something reads them (settle_calls): most calls are
# answered first, and those four dict operations were a third of a call's cost.  An entry has the
# call's `tag`, its `watcher` (the caller's pid) and its `target`: a PendingCall here, the C kernel's
# call object there.


class PendingCall:
    """A call in flight to a process of this node: its monitor, not written yet."""

    __slots__ = ("tag", "watcher", "target")

    def __init__(self, tag: Tag, watcher: Pid, target: Process):
        self.tag, self.watcher, self.target = tag, watcher, target


def _watch_call(me: Process, pid: Pid, tag: Tag) -> PendingCall | None:
    """``call``'s monitor: a PendingCall on a local target, else a monitor as ``monitor`` makes it."""
    target = me.table.resolve(pid)
    if target is None:
        _watch(me, pid, tag)
        return None
    entry = PendingCall(tag, me.pid, target)
    if target.callers is None:
        target.callers = [entry]
    else:
        target.callers.append(entry)
    return entry


def _drop_call(entry: PendingCall | None) -> bool:
    """Take ``entry`` off its target's calls in flight; False if it is not there (settled, or none)."""
    if entry is None:
        return False
    callers = entry.target.callers
    if not callers:
        return False
    if callers[-1] is entry:
        callers.pop()
        return True
    for i, other in enumerate(callers):
        if other is entry:
            del callers[i]
            return True
    return False


def _unwatch_call(entry: PendingCall | None, tag: Tag) -> None:
    """``call``'s demonitor."""
    if not _drop_call(entry):
        _undo_call_monitor(tag)


def settle_calls(proc: Process) -> None:
    """Write the monitors of the calls in flight to ``proc`` where monitors are read."""
    callers, proc.callers = proc.callers, None
    if not callers:
        return
    if proc.monitors is None:
        proc.monitors = {}
    table = proc.table
    for entry in callers:
        proc.monitors[entry.tag] = entry.watcher
        table.monitored[entry.tag] = proc
        caller = table.resolve(entry.watcher)
        if caller is not None:
            _hold(caller, entry.tag, proc.pid)


def demonitor(ref: Tag) -> None:
    """Stop a monitor: no ``Down`` for it arrives after; one it already delivered stays in the mailbox."""
    _demonitor(current(), ref)


def _demonitor(me: Process, ref: Tag) -> bool:
    """Stop monitor ``ref`` of ``me``; False if it was not held (it fired, or never was)."""
    if me.watching:
        me.watching.pop(ref, None)
    target = me.table.monitored.pop(ref, None)
    if target is not None:
        if target.monitors:
            target.monitors.pop(ref, None)
        return True
    return me.table.remote is not None and me.table.remote.demonitor(ref)


def _undo_call_monitor(tag: Tag) -> None:
    """``call``'s demonitor of a monitor in the dicts or the network: as Erlang's call does, with a flush
    of the Down it may have delivered already (the called process answered and ended at once)."""
    me = current()
    if not _demonitor(me, tag):
        box = me.mailbox
        if box:
            for i, msg in enumerate(box):
                if msg.__class__ is Down and msg.ref == tag:
                    del box[i]
                    break


# -- exit signals -------------------------------------------------------------


def exit(pid: Pid, reason) -> None:
    """Send an exit signal with ``reason`` to ``pid``, as if a linked process had ended.

    ``reason="kill"`` ends the target whatever it does (reason ``"killed"``);
    ``"normal"`` is ignored unless the target traps exits.
    """
    me = current()
    pid = _pid_of(pid)
    if pid == me.pid:
        if reason == "kill":
            raise Kill("killed")
        if me.trap_exit:
            deliver(me, Exit(pid, reason))
        elif reason != "normal":
            raise Exited(pid, reason)
        return
    target = me.table.resolve(pid)
    if target is not None:
        signal_exit(target, me.pid, reason)
    elif not me.table.is_local(pid) and me.table.remote is not None:
        me.table.remote.exit(me.pid, pid, reason)


def kill(pid: Pid) -> None:
    """End ``pid`` unconditionally: ``exit(pid, "kill")``."""
    exit(pid, "kill")


def signal_exit(target: Process, sender: Pid, reason) -> None:
    """An exit signal from ``sender`` arrives at the local process ``target``."""
    if target.waiting is DEAD:
        return
    if reason == "kill":
        interrupt(target, Signal(Kill("killed"), force=True))
    elif target.trap_exit:
        deliver(target, Exit(sender, reason))
    elif reason != "normal":
        interrupt(target, Signal(Exited(sender, reason)))


# -- the end of a process -----------------------------------------------------


def process_exited(proc: Process, value, exc) -> None:
    """The kernel's on_exit hook: work out the reason and tell everyone who asked."""
    table = proc.table
    pid = proc.pid
    waiters = table.exit_waiters.pop(pid, None) if table.exit_waiters else None
    if exc is None:
        reason = "normal"
    elif isinstance(exc, Kill):
        reason = exc.reason
    elif isinstance(exc, Exited):
        reason = exc.reason  # a signal passing through: already reported where it began
    else:
        reason = Crash.from_exception(exc, where=f"process {pid}")
        if not waiters:  # a waiter (termite.run, node.run) raises it instead
            log.error("process %s crashed:\n%s", pid, reason.traceback.rstrip())

    if proc.callers:
        settle_calls(proc)
    watching = proc.watching
    proc.watching = None
    proc.waiting = DEAD
    proc.coro = None
    proc.mailbox = None
    pid._proc = None
    table.remove(pid)
    if proc.name is not None:
        table.names.pop(proc.name, None)
    if proc.links:
        for other in proc.links:
            target = table.resolve(other)
            if target is not None:
                if target.links:
                    target.links.discard(pid)
                signal_exit(target, pid, reason)
            elif table.remote is not None and not table.is_local(other):
                table.remote.exit(pid, other, reason)
    if proc.monitors:
        for ref, watcher in proc.monitors.items():
            table.monitored.pop(ref, None)
            if table.remote is not None and not table.is_local(watcher):
                table.remote.down(watcher, Down(ref, pid, reason))  # the endpoint forgets the watcher too
            else:
                send(watcher, Down(ref, pid, reason))
    if watching:
        for ref in watching:
            _demonitor(proc, ref)
    if waiters:
        for callback in waiters:
            callback(value, reason, exc)


if _core is not None:
    # The end of a process that nobody hears about (no link, monitor, name or waiter) in C;
    # it calls the one above for every other.
    _core.init_exit(process_exited)
    process_exited = functools.update_wrapper(_core.process_exited, process_exited)
