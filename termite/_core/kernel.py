"""The kernel: a run queue of coroutines, timers, and a bridge to asyncio.

Design principles (after curio's kernel):

- The kernel knows tasks and traps, nothing else.  Mailboxes, links, monitors,
  the registry and migration are library code that records what a process
  waits for and then yields ``PARK`` (termite/_core/traps.py).
- It drives coroutines itself with ``coro.send``: a switch costs well under a
  microsecond, where an asyncio Task switch costs ten.
- It runs *inside* an asyncio loop, as one callback at a time, so a process
  may await asyncio awaitables: the future they yield is handed to the loop
  and the process resumes when it is done.  Termite's own operations never
  touch asyncio.
- A turn is bounded, and the loop's timers and I/O get their chance between
  turns: a task that yields its turn (``sleep(0)``, asyncio's bare ``yield``)
  runs again in the next turn, not in this one, and a turn ends after
  ``BUDGET`` steps or ``TURN_SECONDS``.  Messages still pass within a turn.
- Don't add features here.  Anything that can live above, does.

A task's ``waiting`` field says where it is: ``None`` while it runs or sits in
the ready queue (or waits there for the next turn); anything else (set by
whoever parked it) while parked.  Every wake-up goes through the ready queue
and sets ``value``, which the task gets back from its trap; a ``Signal`` value
instead raises in the task, or closes it.

Two kernels, one behaviour.  The hot path (the run queue, a turn's loop, the
task's fields; mailbox.py's deliver, send and plain receive) has a C
implementation, termite/_core/_kernelcore.c, used when it is built; the
Python code here and in mailbox.py is the reference and the fallback.
``TERMITE_KERNEL=python`` selects the Python kernel, ``TERMITE_KERNEL=c``
insists on the C one; ``KERNEL`` says which runs.  Everything else (timers,
the asyncio bridge, signals, flow control) is this module's in both.

Every wake-up is also counted, where it is made: a task's ``woken`` counts
them, but for a message handed straight to a process waiting for it, which
its ``handed`` counts (termite/_core/mailbox.py).  So the steps a process ran
are ``woken + handed``, with no count in the run loop: an increment there
costs ping-pong 4 % (termite/_core/info.py reads them).  The C kernel
counts the same wake-ups at the same places.
"""

from __future__ import annotations

import asyncio
import gc
import heapq
import itertools
import os
import threading
import time
from collections import deque
from functools import partial

from termite._core.traps import PARK, RESCHEDULE, Sentinel

_heappush = heapq.heappush
_perf_counter = time.perf_counter
_INF = float("inf")

__all__ = ["Kernel", "Task", "Signal", "current_task", "FOREIGN", "TIMED_OUT", "KERNEL"]


from termite._core.native import KERNEL  # noqa: E402  (re-exported: which kernel runs, "c" or "python")
from termite._core.native import core as _core  # noqa: E402

# Which kernel runs on this thread.  Thread-local, because a program may run a
# node in a background thread (termite.Node).  The task running now is the
# kernel's ``task``, not a thread-local of its own: a thread-local costs about
# 30 ns to write, paid on every step, where an attribute costs 2.
class _Local(threading.local):
    kernel = None


_local = _Local()


def current_task():
    """The task running on this thread, or None outside any task."""
    kernel = _local.kernel
    return kernel.task if kernel is not None else None


if _core is not None:
    _local = _core.local  # the same field, kept in C where its receive and send read it
    current_task = _core.current_task


FOREIGN = Sentinel("waiting on an asyncio future")
# A parked task that a message woke: it is in the ready queue, the message its value.  (The
# other wait states are the process layer's; this one is here because timers must see it.)
DELIVERED = Sentinel("ready with a delivered message")
TIMED_OUT = Sentinel("timed out")


class Signal:
    """A wake-up value that raises ``exc`` in the task instead of resuming it.

    With ``force`` the task's coroutine is closed (its ``finally`` blocks run)
    and the task ends as if it had raised ``exc``: that is how kill works.
    """

    __slots__ = ("exc", "force")

    def __init__(self, exc: BaseException, force: bool = False):
        self.exc = exc
        self.force = force


class Task:
    """What the kernel runs: a coroutine and the value it resumes with.

    The C kernel's Task has the same fields, and holds the mailbox and
    wait_for of a process (process.Process) too, since deliver reads them.
    """

    __slots__ = ("coro", "value", "waiting", "foreign", "kernel", "held", "woken")

    def __init__(self, kernel: "Kernel", coro):
        self.kernel = kernel
        self.coro = coro
        self.value = None
        self.waiting = None
        self.foreign = None
        self.held = None  # what it waits for before its next step (Kernel.hold), if anything
        self.woken = 0  # wake-ups but for messages handed over (see the module's docstring)


class _KernelCore:
    """The part of the kernel that the C kernel implements: run queues and the loop of a turn."""

    def __init__(self):
        self.ready: deque[Task] = deque()
        self.yielded: deque[Task] = deque()  # tasks that yielded their turn: ready in the next one
        self.fairness = 64  # countdown of switch-free receives (termite/_core/mailbox.py)
        self.steps = 0  # tasks resumed so far (load meters read it)
        self.task = None  # the task running now (current_task())
        self.spawned = 0  # processes spawned since the turn began (Kernel.SPAWN_BURST)
        self._gc_paused = False  # the cyclic collector waits for this turn's end (Kernel._spawn_burst)
        self._asyncio_tasks = None  # asyncio's current task of each loop (Kernel.__init__ sets it)
        self._asyncio_loop = None
        self._timer_seq = itertools.count()  # equal deadlines fire in the order set

    # The timers of receives and calls.  Kernel.__init__ sets the heap (timers),
    # _clock, _stale_timers and _armed_for; Kernel._arm_timer and _on_timer use them.

    def add_timer(self, delay: float, task: Task, value=TIMED_OUT) -> list:
        """Wake ``task`` with ``value`` after ``delay`` seconds, unless cancelled."""
        entry = [self._clock() + delay, next(self._timer_seq), task, value]
        _heappush(self.timers, entry)
        if entry[0] < self._armed_for:
            self._arm_timer()
        return entry

    def cancel_timer(self, entry: list) -> None:
        if entry[2] is not None:
            entry[2] = None
            timers = self.timers
            if timers and timers[-1] is entry:
                # The last set, and still a leaf (a receive's timer cancelled before any other was set):
                # out at once, as a heap may lose its last element.
                timers.pop()
                return
            self._stale_timers += 1
            if self._stale_timers > 1024 and self._stale_timers * 2 > len(self.timers):
                self._rebuild_timers()

    def _run(self):
        """A turn: run the ready tasks (phase 1), then arrange the next turn and the timer (phase 2)."""
        try:
            self._run_ready()
        finally:
            if self._gc_paused:
                self._burst_over()
            self.spawned = 0

        # Phase 2: arrange the next turn, and the timer even when tasks are
        # ready: processes that never park (CPU-bound ones that yield) must
        # not starve those waiting on a timeout (a meter's next report).
        if self.ready or self.yielded:
            self.kick()
        if self._timer_handle is None and self.timers:
            self._arm_timer()

    def _run_ready(self):
        """Phase 1 of a turn: run ready tasks, at most BUDGET of them, for TURN_SECONDS at most.

        Tasks that yield their turn wait for the next.
        """
        ready = self.ready
        yielded = self.yielded
        if yielded:  # they yielded in an earlier turn: the loop has run since
            ready.extend(yielded)
            yielded.clear()
        popleft = ready.popleft
        budget = full = self.BUDGET
        deadline = _perf_counter() + self.TURN_SECONDS
        # While a task runs, asyncio sees it as the loop's current task (Kernel.__init__ says why);
        # the one before the turn (a turn run from inside an asyncio task) is back after it.
        current, loop = self._asyncio_tasks, self._asyncio_loop
        was = current.get(loop) if current is not None else None
        try:
            while ready and budget:
                if budget & 15 == 1 and _perf_counter() > deadline:
                    break  # every 16 steps (BUDGET & 15 is 0: not before the first, which most turns are)
                budget -= 1
                task = popleft()
                if task.held is not None:  # flow control: it runs again on release
                    self._stashed.add(task)
                    continue
                self.task = task
                if current is not None:
                    current[loop] = task
                value = task.value
                task.value = None  # don't keep the last message alive
                try:
                    if value.__class__ is Signal:
                        trap = self._signal(task, value)
                    else:
                        trap = task.coro.send(value)
                except StopIteration as stop:
                    self.on_exit(task, stop.value, None)
                    continue
                except (KeyboardInterrupt, SystemExit) as exc:  # these stop the node too
                    self.on_exit(task, None, exc)
                    raise
                except BaseException as exc:
                    self.on_exit(task, None, exc)
                    continue
                if trap is PARK:
                    continue
                if trap is RESCHEDULE:
                    task.woken += 1
                    ready.append(task)
                    continue
                if trap is None:  # NEXT_TURN: sleep(0), asyncio.sleep(0)
                    task.woken += 1
                    yielded.append(task)
                    continue
                handler = self.trap_handlers.get(trap.__class__)
                if handler is not None:
                    handler(task, trap)
                    continue
                self._await_foreign(task, trap)
        finally:
            self.task = None
            if current is not None:
                if was is None:
                    current.pop(loop, None)
                else:
                    current[loop] = was
            self.steps += full - budget
            if self.after_turn is not None:
                self.after_turn()


#: A turn that spawns this many processes is a burst (a ring, a pool, a fan-out): the
#: cyclic garbage collector pauses until the turn ends, then takes what the burst made
#: into its oldest generation unexamined (Kernel._spawn_burst).
SPAWN_BURST = 4096

if _core is not None:
    Task = _core.Task
    _KernelCore = _core.KernelCore
    _core.init_kernel(PARK, RESCHEDULE, Signal, TIMED_OUT, SPAWN_BURST)


class Kernel(_KernelCore):
    #: How many steps one turn of the asyncio loop may take before the kernel
    #: lets the loop poll I/O and run its own callbacks, and for how long:
    #: steps that each send hundreds of messages would otherwise keep the
    #: node deaf for seconds (the clock is read every 16 steps).  The C kernel
    #: reads both once, when a kernel is made.
    BUDGET = 20_000
    TURN_SECONDS = 0.02

    def __init__(self, loop):
        _KernelCore.__init__(self)  # ready, yielded, fairness, steps
        self.loop = loop
        self.timers: list = []  # heap of [deadline, seq, task or None, value]
        self.on_exit = None  # set by the process layer: on_exit(task, value, exc)
        self.table = None  # the process table of the node this kernel runs
        self.after_turn = None  # called at the end of every turn (distribution flushes its batches)
        # The node's send_after/send_interval/exit_after timers (termite._core.timers.NodeTimers),
        # made there on first use: a heap of their own, so receive timeouts never pay for them.
        self.node_timers = None
        # Traps of higher layers: request class -> handler(task, request), run
        # when a task yields such a request (migration's).  The task stays parked.
        self.trap_handlers: dict[type, object] = {}
        self._holding: dict[object, list[Task]] = {}  # key -> tasks held until release(key)
        self._stashed: set[Task] = set()  # held tasks that were due to run, out of the ready queue
        self._stale_timers = 0
        self._scheduled = False
        self._timer_handle = None
        self._armed_for = _INF  # when _timer_handle fires (inf if none)
        # loop.time(), or time.monotonic itself when that is what it calls:
        # a Python call less on every timed receive.
        self._clock = time.monotonic if type(loop).time is asyncio.BaseEventLoop.time else loop.time
        self.thread = None
        # asyncio.current_task() is the process running (a Process is a task enough for asyncio:
        # cancel, cancelling, uncancel), so that asyncio.timeout, wait_for (3.12 on) and TaskGroup
        # work in processes.  Where asyncio keeps its current tasks is private: without it, they
        # raise there as before ("should be used inside a task").
        current = getattr(asyncio.tasks, "_current_tasks", None)
        self._asyncio_tasks = current if current.__class__ is dict else None
        self._asyncio_loop = loop

    # -- entry points ---------------------------------------------------------

    def attach(self) -> None:
        """Declare the calling thread (the loop's thread) as this kernel's home."""
        self.thread = threading.get_ident()
        _local.kernel = self

    def wake(self, task: Task, value=None) -> None:
        """Make a parked task runnable with ``value``; the caller has cleared its wait."""
        task.value = value
        task.woken += 1
        self.ready.append(task)

    def runnable(self) -> int:
        """How many tasks wait to run (the ready queue and those that yielded their turn)."""
        return len(self.ready) + len(self.yielded)

    def kick(self) -> None:
        """Make sure the run loop will turn: call after waking from outside it."""
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self._scheduled_run)

    def _scheduled_run(self):
        # Only this callback clears _scheduled: turns taken directly (run_now,
        # _on_timer) must not, or every one of them would queue one more
        # callback and the loop's iterations would grow without bound.
        self._scheduled = False
        self._run()

    def call_threadsafe(self, fn, *args) -> None:
        """Run ``fn(*args)`` on the kernel's thread, from any thread."""
        self.loop.call_soon_threadsafe(self._external, fn, args)

    def _external(self, fn, args):
        fn(*args)
        self.kick()

    # -- timers ---------------------------------------------------------------

    def _rebuild_timers(self) -> None:
        # Cancelled entries stay in the heap until they reach its top; when they are
        # most of it (many receives answered before their timeout), cancel_timer calls
        # this, so memory does not grow.
        self.timers = [e for e in self.timers if e[2] is not None]
        heapq.heapify(self.timers)
        self._stale_timers = 0

    def _arm_timer(self):
        if self._timer_handle is not None:
            self._timer_handle.cancel()
        self._armed_for = when = self.timers[0][0]
        self._timer_handle = self.loop.call_at(when, self._on_timer)

    def _on_timer(self):
        """The loop's timer is due: wake the tasks whose timers are, then take a turn.

        Timers expire here only, not in every turn: a turn run for frames
        just read (run_now) first runs the processes those frames woke, which
        cancel their own timers, so a reply that arrives as its timeout
        falls due is not also woken by the timeout.
        """
        self._timer_handle = None
        self._armed_for = _INF
        timers, ready = self.timers, self.ready
        now = self._clock()
        while timers and timers[0][0] <= now:
            entry = heapq.heappop(timers)
            task = entry[2]
            if task is None:
                self._stale_timers -= 1
                continue
            entry[2] = None
            waiting = task.waiting
            if waiting is None or waiting is DELIVERED:
                # Already woken (a message, a signal), and queued behind steps that
                # ran past its deadline: the wake-up it has is the one it gets.
                continue
            task.waiting = None
            task.value = entry[3]
            task.woken += 1
            ready.append(task)
        self._run()

    # -- spawn bursts ---------------------------------------------------------
    #
    # Each process is three objects the cyclic collector tracks (process, pid,
    # coroutine), nearly all of them long-lived: a turn that spawns 250,000
    # spends more time in young-generation collections that find nothing than
    # in spawning (about half of a ring's run, issue 20).  So when a turn has
    # spawned SPAWN_BURST processes (spawn_in and the C spawn count them,
    # _spawn_burst is called once), collection pauses; when the turn ends,
    # gc.freeze() then gc.unfreeze() moves every tracked object into the
    # oldest generation in O(1), unexamined, and collection resumes.  Cyclic
    # garbage made during the burst waits for the next full collection; one
    # is forced once bursts have promoted four times as many processes as
    # the node has (so a node that keeps spawning and ending processes in
    # bursts cannot hold its cycles forever).  Nothing is done if the program
    # disabled the collector or froze objects itself.

    _promoted = 0  # processes spawned in bursts since the last full collection it forced

    def _spawn_burst(self):
        """This turn has spawned SPAWN_BURST processes: pause the cyclic collector until it ends."""
        if not self._gc_paused and gc.isenabled() and gc.get_freeze_count() == 0:
            gc.disable()
            self._gc_paused = True

    def _burst_over(self):
        self._gc_paused = False
        gc.freeze()
        gc.unfreeze()  # the permanent generation goes back whole into the oldest one
        gc.enable()
        self._promoted += self.spawned
        table = self.table
        live = len(table.procs) + len(table.guests) if table is not None else 0
        if self._promoted > 4 * live + SPAWN_BURST:
            self._promoted = 0
            gc.collect()

    #: Take a turn at once, from a loop callback (never from inside a turn):
    #: frames just read run their processes without another loop iteration.
    run_now = _KernelCore._run

    def _signal(self, task: Task, signal: Signal):
        if signal.force:
            try:
                task.coro.close()
            except BaseException:  # a finally block that awaited or raised: it ends anyway
                pass
            raise signal.exc
        return task.coro.throw(signal.exc)

    # -- asyncio bridge -------------------------------------------------------

    def _await_foreign(self, task: Task, fut):
        if getattr(fut, "_asyncio_future_blocking", None) is None:
            error = TypeError(
                f"a termite process awaited something that yielded {fut!r}; a process "
                "may await termite operations and asyncio awaitables only"
            )
            self.wake(task, Signal(error))
            return
        fut._asyncio_future_blocking = False
        task.waiting = FOREIGN
        task.foreign = fut
        fut.add_done_callback(partial(self._foreign_done, task))

    def _foreign_done(self, task: Task, fut):
        if task.foreign is fut:
            task.foreign = None
            task.waiting = None
            self.wake(task, None)
            self.kick()

    # -- flow control -----------------------------------------------------------

    def hold(self, key) -> None:
        """Hold the running task back before its next step, until ``release(key)``.

        It finishes its current step (a send that made it wait does not block);
        a signal (an exit, a kill) still reaches it at once.
        """
        task = self.task
        if task is not None and task.held is None:
            task.held = key
            self._holding.setdefault(key, []).append(task)

    def release(self, key) -> None:
        """Let the tasks held for ``key`` run again."""
        for task in self._holding.pop(key, ()):
            if task.held is key or task.held == key:
                self._unhold(task)
        self.kick()

    def _unhold(self, task: Task) -> None:
        task.held = None
        if task in self._stashed:
            self._stashed.discard(task)
            self.ready.append(task)

    def interrupt(self, task: Task, signal: Signal) -> None:
        """Deliver ``signal`` to a task that is not running now.

        A parked task is woken with it.  A task already in the ready queue keeps
        its place and gets the signal instead of its wake value; whoever queued
        a value that must not be lost (a message) takes it back first.
        """
        if task.held is not None:  # a held task meets its signal now
            held = self._holding.get(task.held)
            if held is not None and task in held:
                held.remove(task)
            self._unhold(task)
        waiting = task.waiting
        task.value = signal
        if waiting is None:
            return  # already in the ready queue, or waiting for the next turn
        if waiting is FOREIGN:
            fut, task.foreign = task.foreign, None
            fut.cancel()
        task.waiting = None
        task.woken += 1
        self.ready.append(task)
