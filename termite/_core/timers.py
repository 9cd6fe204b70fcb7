"""Timers: a message or an exit signal, later (Erlang's ``send_after``, ``timer:send_interval``, ``exit_after``).

=================================  ==============================================================
``send_after(s, dest, msg)``       ``send(dest, msg)`` in ``s`` seconds; returns a ``TimerRef``
``send_interval(s, dest, msg)``    ``send(dest, msg)`` every ``s`` seconds until cancelled
``exit_after(s, pid, reason)``     ``exit(pid, reason)`` in ``s`` seconds, from the process that set it
``kill_after(s, pid)``             ``exit_after(s, pid, "kill")``
``cancel_timer(ref)``              stop it: the seconds it had left, or None if it had already fired
                                   or been cancelled (Erlang's ``erlang:cancel_timer/1``)
``read_timer(ref)``                the seconds it has left, or None (``erlang:read_timer/1``)
=================================  ==============================================================

``dest`` is what ``send`` takes: a pid (of this node or another), a name
registered on this node, or ``(name, node)``.  A name is looked up when the
timer fires, and a message to a name nobody holds then is lost, as Erlang's.

Where a timer lives, and when it ends (as Erlang's, and what migration adds):

- A timer lives on the node that set it and fires there, through the normal
  send path: a message for a pid that has migrated follows it (the migration
  layer forwards it), and one for another node crosses the network then.
- A timer whose destination is a pid of a process of this node ends when that
  process ends (Erlang cancels it): it fires for nobody and ``cancel_timer``
  says None.  A destination that migrated away has not ended: the timer stays
  and fires, and the message follows it.  An interval timer sent to a name is
  tied the same way to the process holding that name when it is set.
- ``owned=True`` ties the timer to the process that sets it too: it ends when
  that process ends.  When its owner *migrates*, the timer stays on its node
  and still fires (a process's timers are not part of its continuation); it
  ends when its owner ends on whatever node.  Cancelling it from the owner's
  new node works: see below.
- A ``TimerRef`` may be sent anywhere and travels with a migrating process.
  On the node that set the timer, ``cancel_timer`` and ``read_timer`` answer
  at once.  On another node (the process migrated since) the timer's node
  cannot be asked synchronously: ``cancel_timer`` sends the cancel there, to
  take effect asynchronously as Erlang's ``cancel_timer(Ref, [{async,
  true}])``, and returns None; ``read_timer`` returns None.  A message the
  timer sent just before may still arrive, as it may after any cancel that
  returns None.
- A timer is set from a process.  From plain Python, set it through one:
  ``node.run(termite.send_after, 5, pid, msg)`` on a ``termite.Node`` (the
  timer outlives that short process, unless owned).

Cost.  Each node keeps its timers in one heap ordered by deadline, with one
asyncio timer armed for the earliest: a node with 100,000 pending timers does
no work for them until one is due, and a receive timeout never pays for them
(the kernel's heap is its own).  A timer is one small object that is its own
heap entry: about 185 bytes of RSS each, with its deadline and heap slot.  Cancelled ones, and those of destinations
that ended, are dropped when the heap has doubled since it was last swept or
when they are half of it: memory stays within about twice the live timers.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import time

from termite._core.errors import NoSuchName, NotInProcess
from termite._core.ids import NodeRef, Pid
from termite._core.kernel import Kernel, _local, current_task
from termite._core.links import signal_exit
from termite._core.mailbox import _named, send
from termite._core.process import Process, ProcessTable

__all__ = [
    "TimerRef",
    "send_after",
    "send_interval",
    "exit_after",
    "kill_after",
    "cancel_timer",
    "read_timer",
    "NodeTimers",
]

log = logging.getLogger("termite")

_heappush = heapq.heappush
_heappop = heapq.heappop
_INF = float("inf")

#: What a pending timer does when it fires (TimerRef.kind); None once it has ended.
_SEND = 1  # send(dest, msg)
_EXIT = 2  # an exit signal to dest; msg is (sender, reason)

#: Timers fired in one loop callback at most: a node whose 100,000 timers fall
#: due at once still polls its I/O and runs its processes between batches.
FIRE_BUDGET = 10_000
#: Below this many entries the heap is never swept.
SWEEP_MIN = 1024
#: The shortest interval of send_interval (Erlang's is 1 ms too).
MIN_INTERVAL = 0.001


class TimerRef:
    """A timer (what ``send_after``, ``send_interval``, ``exit_after`` and ``kill_after`` return).

    Pass it to ``cancel_timer`` or ``read_timer``.  It may be sent to other
    processes and nodes; two refs are equal when they name the same timer.
    """

    # The ref is the timer itself and its own entry in its node's heap: no
    # table from refs to timers, so a pending timer costs one object.
    __slots__ = (
        "deadline",  # when it fires, on its node's loop clock
        "seq",  # the node's serial of the timer: ties fire in the order they were set
        "kind",  # _SEND or _EXIT; None once fired, cancelled or ended
        "dest",  # a Pid, a registered name or (name, node); in a ref from elsewhere: the timer's node
        "msg",  # the message (_SEND), or (sender, reason) (_EXIT)
        "interval",  # seconds between firings of send_interval's timer, else None
        "watch",  # a pid of this node whose end ends the timer (its destination), or None
        "owner",  # owned=True: the pid of the process that set it, else None
        "home",  # the NodeTimers that holds it; None in a ref unpickled on another node
    )

    def __lt__(self, other):  # heap order: by deadline, then as set
        mine, theirs = self.deadline, other.deadline
        return mine < theirs or (mine == theirs and self.seq < other.seq)

    def _key(self):
        return (self.home.ref if self.home is not None else self.dest, self.seq)

    def __eq__(self, other):
        if other.__class__ is not TimerRef:
            return NotImplemented
        return self is other or self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def __reduce__(self):
        home = self.home
        if home is None:
            return (_timer_from_wire, (self.dest, self.seq))
        if self.kind is not None and home.kernel is _local.kernel:
            home.exported[self.seq] = self  # found again by seq if it comes back here, or a cancel does
        return (_timer_from_wire, (home.ref, self.seq))

    def __repr__(self):
        if self.home is None:
            return f"<TimerRef {self.dest}/{self.seq}: a timer of another node>"
        state = "ended" if self.kind is None else f"due in {max(0.0, self.deadline - self.home.clock()):.3g} s"
        every = f" every {self.interval:g} s" if self.interval is not None and self.kind is not None else ""
        return f"<TimerRef {self.home.ref}/{self.seq}: {state}{every}>"


def _timer_from_wire(node: NodeRef, seq: int) -> TimerRef:
    """Unpickling a TimerRef: the live timer if it is one of this node's, else a ref to a timer elsewhere."""
    kernel = _local.kernel
    timers = kernel.node_timers if kernel is not None else None
    if timers is not None and timers.ref == node:
        ref = timers.exported.get(seq)
        if ref is not None:
            return ref
    ref = TimerRef.__new__(TimerRef)
    ref.deadline, ref.seq, ref.kind, ref.dest = _INF, seq, None, node
    ref.msg = ref.interval = ref.watch = ref.owner = None
    ref.home = timers if timers is not None and timers.ref == node else None  # one of ours that has ended
    return ref


def _ended(table: ProcessTable, pid: Pid) -> bool:
    """Whether ``pid``, a process that was on this node, has ended (not migrated away: that is no end)."""
    return pid._proc is None and table.resolve(pid) is None and pid not in table.moved


class NodeTimers:
    """One node's timers: a heap by deadline and one asyncio timer armed for its top."""

    def __init__(self, kernel: Kernel):
        self.kernel = kernel
        self.table: ProcessTable = kernel.table
        self.ref: NodeRef = kernel.table.ref
        self.loop = loop = kernel.loop
        # loop.time(), or time.monotonic itself when that is what it calls (as the kernel does).
        self.clock = time.monotonic if type(loop).time is asyncio.BaseEventLoop.time else loop.time
        self.heap: list[TimerRef] = []
        self.exported: dict[int, TimerRef] = {}  # pending timers whose ref was pickled, by seq
        self._serials = itertools.count(1)
        self._stale = 0  # ended timers still in the heap
        self._sweep_at = SWEEP_MIN  # sweep when the heap grows to this
        self._handle = None
        self._armed_for = _INF
        self._arming = False  # an _arm_soon is scheduled

    @classmethod
    def of(cls, kernel: Kernel) -> "NodeTimers":
        timers = kernel.node_timers
        if timers is None:
            timers = kernel.node_timers = cls(kernel)
        return timers

    def pending(self) -> int:
        """How many timers are pending (for tests and benchmarks; it walks the heap)."""
        return sum(1 for ref in self.heap if ref.kind is not None and not self._gone(ref))

    # -- setting, reading, cancelling --------------------------------------------

    def add(self, seconds: float, kind: int, dest, msg, interval, watch, owner) -> TimerRef:
        ref = TimerRef.__new__(TimerRef)
        ref.deadline = deadline = self.clock() + seconds
        ref.seq = next(self._serials)
        ref.kind = kind
        ref.dest = dest
        ref.msg = msg
        ref.interval = interval
        ref.watch = watch
        ref.owner = owner
        ref.home = self
        heap = self.heap
        _heappush(heap, ref)
        if len(heap) >= self._sweep_at:
            self._sweep()
        if deadline < self._armed_for and not self._arming:
            # Re-arm once the turn is over, not at each set: a loop that sets
            # timers in decreasing order would leave a cancelled asyncio
            # handle behind every one.
            self._arming = True
            self.loop.call_soon(self._arm_soon)
        return ref

    def left(self, ref: TimerRef) -> float | None:
        if ref.kind is None:
            return None
        if self._gone(ref):
            self._end(ref)
            return None
        return max(0.0, ref.deadline - self.clock())

    def cancel(self, ref: TimerRef) -> float | None:
        left = self.left(ref)
        if left is not None:
            self._end(ref)
        return left

    def _gone(self, ref: TimerRef) -> bool:
        """Whether the process the timer is tied to (its destination, its owner) has ended."""
        table = self.table
        watch, owner = ref.watch, ref.owner
        return (watch is not None and _ended(table, watch)) or (owner is not None and _ended(table, owner))

    def _end(self, ref: TimerRef) -> None:
        """End a timer that is still in the heap (cancelled, or tied to a process that ended)."""
        self._drop(ref)
        self._stale += 1
        if self._stale > SWEEP_MIN and self._stale * 2 > len(self.heap):
            self._sweep()

    def _drop(self, ref: TimerRef) -> None:
        ref.kind = None
        ref.msg = None  # a large message must not wait in the heap for the sweep
        if self.exported:
            self.exported.pop(ref.seq, None)

    def _sweep(self) -> None:
        """Keep only the live timers: amortized, since the heap has doubled (or half is dead) since the last."""
        live = []
        for ref in self.heap:
            if ref.kind is None:
                continue
            if self._gone(ref):
                self._drop(ref)
                continue
            live.append(ref)
        heapq.heapify(live)
        self.heap = live
        self._stale = 0
        self._sweep_at = max(SWEEP_MIN, 2 * len(live))

    # -- firing -----------------------------------------------------------------

    def _arm_soon(self) -> None:
        self._arming = False
        heap = self.heap
        if heap and heap[0].deadline <= self.clock():
            self._fire()  # send_after(0, ...): at once, not one more loop iteration later
        else:
            self._arm()

    def _arm(self) -> None:
        heap = self.heap
        while heap and heap[0].kind is None:  # cancelled ones at the top: no wake-up for them
            _heappop(heap)
            self._stale -= 1
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if heap:
            self._armed_for = when = heap[0].deadline
            self._handle = self.loop.call_at(when, self._fire)
        else:
            self._armed_for = _INF

    def _fire(self) -> None:
        """The loop's timer is due: fire the timers that are, then let the kernel run what they woke.

        A loop callback, never inside a kernel turn: sends run as from outside
        any process (no sender is held back by flow control), and the turn
        taken at the end runs the receivers and flushes what goes to other nodes.
        """
        if self._handle is not None:  # called by _arm_soon, before the armed time
            self._handle.cancel()
            self._handle = None
        self._armed_for = _INF
        heap = self.heap
        now = self.clock()
        budget = FIRE_BUDGET
        while heap and heap[0].deadline <= now and budget:
            ref = _heappop(heap)
            kind = ref.kind
            if kind is None:
                self._stale -= 1
                continue
            if self._gone(ref):
                self._drop(ref)
                continue
            budget -= 1
            try:
                if kind == _SEND:
                    _deliver(ref.dest, ref.msg)
                else:
                    self._signal(ref.dest, *ref.msg)
            except Exception as exc:  # noqa: BLE001 - a timer has no caller to raise to
                # (an unpicklable message for another node): it would fail again, so the timer ends
                log.warning("timer %r could not %s %r, and ends: %s",
                            ref, "send to" if kind == _SEND else "signal", ref.dest, exc)
                self._drop(ref)
                continue
            interval = ref.interval
            if interval is not None:
                deadline = ref.deadline + interval
                ref.deadline = deadline if deadline > now else now + interval  # late: no burst to catch up
                _heappush(heap, ref)
            else:
                self._drop(ref)
        self._arm()
        self.kernel.run_now()

    def _signal(self, target, sender: Pid, reason) -> None:
        """``exit(target, reason)`` from ``sender``, which need not run any more (links.exit, from outside a process)."""
        table = self.table
        if target.__class__ is not Pid:
            target = table.names.get(target)
            if target is None:
                return
        proc = table.resolve(target)
        if proc is not None:
            signal_exit(proc, sender, reason)
        elif table.remote is not None and not table.is_local(target):
            table.remote.exit(sender, target, reason)


def _deliver(dest, msg) -> None:
    try:
        send(dest, msg)
    except NoSuchName:
        pass  # a name nobody holds when the timer fires: lost, as Erlang's


# -- the API --------------------------------------------------------------------


def _caller(what: str) -> Process:
    proc = current_task()
    if proc is None:
        raise NotInProcess(
            f"{what}() outside a process: a timer belongs to a node, so set it from a process; from plain "
            f"Python use a termite.Node: node.run(termite.{what}, ...) (the timer outlives that short "
            f"process unless owned=True)"
        )
    return proc


def _seconds(seconds, what: str, least: float = 0.0) -> float:
    if seconds.__class__ is bool or not isinstance(seconds, (int, float)):
        raise TypeError(f"{what}() takes a number of seconds first, got {type(seconds).__name__}: {seconds!r:.100}")
    if not math.isfinite(seconds) or seconds < least:
        bound = f"at least {least:g}" if least else ">= 0"
        raise ValueError(f"{what}() needs a finite number of seconds {bound}, got {seconds!r}")
    return seconds


def _destination(table: ProcessTable, dest, what: str):
    """Check ``dest`` as send() would take it; return the local pid whose end ends the timer, or None."""
    cls = dest.__class__
    if cls is Pid:
        return dest if table.is_local(dest) else None
    if cls is str:
        if not dest:
            raise TypeError(f"{what}() got an empty name; a registered name is a non-empty str")
        return None
    if cls is tuple:
        _named(dest, what)
        return None
    raise TypeError(
        f"{what}() needs a Pid, a registered name (str) or (name, node) as destination, got "
        f"{type(dest).__name__}: {dest!r:.200}"
    )


def send_after(seconds: float, dest, msg, *, owned: bool = False) -> TimerRef:
    """Send ``msg`` to ``dest`` in ``seconds`` (Erlang's ``erlang:send_after/3``); return the timer.

    ``dest`` is a pid (of any node), a name registered on this node (looked
    up when the timer fires) or ``(name, node)``.  The timer lives on this
    node and sends through the normal path, so a message to a pid that has
    migrated follows it.  It ends unsent if its destination is a process of
    this node that ends first, and, with ``owned=True``, if the calling
    process ends first (a migration of either is no end).  ``seconds=0``
    sends at the node's next turn, not now.
    """
    proc = _caller("send_after")
    seconds = _seconds(seconds, "send_after")
    watch = _destination(proc.table, dest, "send_after")
    return NodeTimers.of(proc.kernel).add(seconds, _SEND, dest, msg, None, watch, proc.pid if owned else None)


def send_interval(seconds: float, dest, msg, *, owned: bool = False) -> TimerRef:
    """Send ``msg`` to ``dest`` every ``seconds`` until ``cancel_timer`` (Erlang's ``timer:send_interval/3``).

    ``dest`` is as for ``send_after``.  The first message goes ``seconds``
    from now; a node that falls behind sends the next one ``seconds`` after
    it catches up, never a burst.  As in Erlang, the timer is tied to its
    destination: it ends when that pid ends, if it is a process of this node,
    and a name must be registered now and ties the timer to the process that
    holds it (each message still goes to the name).  A destination on
    another node, or ``(name, node)``, ties it to nothing here: cancel it, or
    pass ``owned=True``, which ties it to the calling process (too).
    ``seconds`` is at least 0.001.
    """
    proc = _caller("send_interval")
    seconds = _seconds(seconds, "send_interval", MIN_INTERVAL)
    table = proc.table
    watch = _destination(table, dest, "send_interval")
    if dest.__class__ is str:
        watch = table.names.get(dest)
        if watch is None:
            raise NoSuchName(
                f"send_interval() to {dest!r}: no process is registered as {dest!r} (an interval timer is tied "
                f"to the process holding the name); register it first, or pass its pid"
            )
    return NodeTimers.of(proc.kernel).add(seconds, _SEND, dest, msg, seconds, watch, proc.pid if owned else None)


def exit_after(seconds: float, pid, reason, *, owned: bool = False) -> TimerRef:
    """Send ``pid`` an exit signal with ``reason`` in ``seconds`` (Erlang's ``timer:exit_after/3``).

    The signal comes from the calling process, as ``termite.exit(pid,
    reason)`` would then, even if that process has ended meanwhile: a target
    trapping exits gets ``Exit(caller, reason)``; ``"kill"`` cannot be
    trapped; ``"normal"`` is ignored unless trapped.  ``pid`` is a pid or a
    name registered on this node (looked up when it fires).  Ends and owned
    timers as for ``send_after``.
    """
    return _set_exit("exit_after", seconds, pid, reason, owned)


def kill_after(seconds: float, pid, *, owned: bool = False) -> TimerRef:
    """End ``pid`` in ``seconds``, whatever it does: ``exit_after(seconds, pid, "kill")`` (``timer:kill_after/2``)."""
    return _set_exit("kill_after", seconds, pid, "kill", owned)


def _set_exit(what: str, seconds, pid, reason, owned: bool) -> TimerRef:
    proc = _caller(what)
    seconds = _seconds(seconds, what)
    if pid.__class__ is not Pid and pid.__class__ is not str:
        raise TypeError(f"{what}() needs a Pid or a registered name (str), got {type(pid).__name__}: {pid!r:.200}")
    watch = _destination(proc.table, pid, what)
    return NodeTimers.of(proc.kernel).add(seconds, _EXIT, pid, (proc.pid, reason), None, watch, proc.pid if owned else None)


def _check_ref(ref, what: str) -> None:
    if ref.__class__ is not TimerRef:
        raise TypeError(
            f"{what}() takes the TimerRef that send_after, send_interval, exit_after or kill_after returned, "
            f"got {type(ref).__name__}: {ref!r:.200}"
        )


def cancel_timer(ref: TimerRef) -> float | None:
    """Stop the timer ``ref``; return the seconds it had left, or None (Erlang's ``erlang:cancel_timer/1``).

    None means that it had fired already (the message may be in the mailbox
    or on its way), was cancelled, or ended with the process it was tied to.
    On a node other than the timer's (the process migrated since it set the
    timer), the cancel is sent to the timer's node, to take effect there
    soon, and None is returned: a message sent meanwhile may still arrive.
    """
    _check_ref(ref, "cancel_timer")
    proc = _caller("cancel_timer")
    home = ref.home
    if home is not None:
        if home.kernel is proc.kernel:
            return home.cancel(ref)
        home.kernel.call_threadsafe(home.cancel, ref)  # a node on another thread of this OS process
        return None
    remote = proc.table.remote
    if remote is not None:
        remote.spawn(_cancel_here, (ref.seq,), ref.dest)
    return None


def _cancel_here(seq: int) -> None:
    """Runs on a timer's node, spawned by cancel_timer on another: cancel the timer whose ref travelled."""
    timers = current_task().kernel.node_timers
    if timers is not None:
        ref = timers.exported.get(seq)
        if ref is not None:
            timers.cancel(ref)


def read_timer(ref: TimerRef) -> float | None:
    """The seconds before the timer ``ref`` fires, or None if it has fired or ended (``erlang:read_timer/1``).

    For an interval timer, the seconds before its next message.  On a node
    other than the timer's, None: ask a process on that node.
    """
    _check_ref(ref, "read_timer")
    proc = _caller("read_timer")
    home = ref.home
    if home is not None and home.kernel is proc.kernel:
        return home.left(ref)
    return None
