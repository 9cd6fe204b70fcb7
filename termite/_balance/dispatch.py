"""Dispatch: run a thunk on the least-loaded node (the paper's section 5.1).

A node that dispatches runs a dispatcher process, started on first use (or by
``start_dispatcher`` with other settings).  It is also the paper's meter
supervisor: it subscribes to the load meter of every node it is connected to
and of every node that joins, keeps their last reports, and answers
``minimum_load``, ``average_load`` and ``loads``.

Choosing a node: the one with the least load (``Load.value``, the meter's
one definition: run queue plus busy cores), its run queue counted as at
least the calls this dispatcher sent it and has not heard back from; then
its host's load average; ties go round.  Supervisors ask the same question
to place a child (``place``), so one code path says which node is least
loaded.  A node whose report is late (older than 2.5 intervals) counts as busy:
it gets work only when every node is late, and once its reports come again
it is judged by them again.  At most ``window`` calls wait or run on a node
at a time; the rest wait here and go to whichever node has room first, so a
slow node is not handed a long queue.  The nodes are kept in the order of
that rule (``_Ranking``: heaps re-ranked by each report, send and answer), so
a choice costs O(log n), not a look at every node.

Where thunks never run: in the dispatching node's own OS process, unless

- the caller asked for it (``include_self=True``): the node is then one of
  the candidates, chosen by its load as any other; or
- the node has no network at all (``termite.run(main)``, ``termite.Node()``
  without a port): there is nowhere else, so dispatching means running here,
  on the node's worker thread (the dispatcher starts the node's runner and
  meter, which only networked nodes start by themselves).

A networked node connected to no other node keeps its calls here, waiting:
they go out when a node joins or comes back (``NodeUp``).  A caller that gave
``dispatch`` a timeout gets ``Timeout`` when it passes, and its call is then
dropped before it starts.  A job's reply may also give up while no node is
connected: ``termite.Executor`` does so once it is shut down, failing the
futures that would otherwise wait for ever.

A node that comes back is used again: every ``NodeUp`` (a node new to this
dispatcher, or one it saw go down: the same NodeRef) adds it and subscribes
to its meter again, and the calls waiting here are sent out.

At least once: when a node is lost (``NodeDown``), the calls it had not
answered are sent to another node, or wait here for one.  A call may
therefore run twice (on a node that was cut off, not dead): give thunks that
must not repeat an idempotent effect.  An answer that comes from a node after
its loss is dropped.

A thunk's exception is raised in the caller with the remote traceback as its
``__cause__`` (as concurrent.futures.ProcessPoolExecutor does); one that
cannot travel back comes as ``RemoteError``, with its text.

The reply protocol: a job's results go to an object (``_ToProcess`` for
``dispatch``, the Executor's ``_ToFuture``) with three methods, called on
the node's thread:

| method | when | returns |
| --- | --- | --- |
| ``start()`` | before the job is first sent to a node | False: drop the job (cancelled, or its caller stopped waiting) |
| ``finish(results)`` | its results came: one ``(ok, value or Crash)`` per call | |
| ``abandon()`` | it waits while no node is connected | True: drop the job (the reply told its caller); False: wait on |

``("reconsider",)`` sent to the dispatcher asks the waiting jobs' replies
``abandon()`` again (when no node is connected).
"""

from __future__ import annotations

import heapq
import itertools
import weakref
from collections import deque

from termite._core.call import call
from termite._net.codec import Unreadable, UnserializableMessage
from termite._net.distribution import NodeDown, NodeUp, is_client, monitor_node, nodes
from termite._net.shipping import ShippedModules, collect
from termite._core.errors import Crash, UnreadableMessage, remote_exception
from termite._core.future import future
from termite._core.ids import NodeRef, Pid
from termite._core.mailbox import receive, send
from termite._balance.meter import Load, meter_of, start_meter
from termite._core.process import ProcessTable, current
from termite._balance.runner import runner_of, start_runner
from termite._core.spawn import spawn_in

__all__ = [
    "average_load",
    "dispatch",
    "dispatcher",
    "loads",
    "minimum_load",
    "place",
    "dispatch_async",
    "start_dispatcher",
    "ship",
]

#: A report older than this many intervals is late: the node counts as busy.
LATE = 2.5

_dispatchers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # ProcessTable -> Pid


class _ToProcess:
    """Where the results of a ``dispatch`` go: the process awaiting the call.

    ``deadline`` (the node's loop time) is when the caller stops waiting: a
    call still here then is dropped, never started.
    """

    __slots__ = ("pid", "tag", "deadline", "loop")

    def __init__(self, pid: Pid, tag, deadline: float | None, loop):
        self.pid, self.tag, self.deadline, self.loop = pid, tag, deadline, loop

    def _expired(self) -> bool:
        return self.deadline is not None and self.loop.time() >= self.deadline

    def start(self) -> bool:
        return not self._expired()

    def finish(self, results: list) -> None:
        send(self.pid, (self.tag, results))

    def abandon(self) -> bool:
        return self._expired()  # a caller without a timeout waits for a node


class _Job:
    __slots__ = ("id", "fn", "calls", "reply", "started")

    def __init__(self, job_id: int, fn, calls: list, reply):
        self.id, self.fn, self.calls, self.reply = job_id, fn, calls, reply
        self.started = False


class _Node:
    """What the dispatcher knows of one node."""

    __slots__ = ("load", "heard", "added", "jobs", "calls", "picked", "order", "version", "late")

    def __init__(self, now: float, order: int):
        self.load: Load | None = None
        self.heard = self.added = now
        self.jobs: dict[int, _Job] = {}  # sent, not answered
        self.calls = 0  # in those jobs
        self.picked = 0
        self.order = order  # when the dispatcher added it: the last tie-break
        self.version = -1  # of its one live entry in the ranking
        self.late = False  # as far as the ranking has seen: set when found late, cleared by a report


class _Ranking:
    """The dispatcher's nodes in the order of its choice rule, so that a choice is not a scan.

    A node's key is ``(late, load, host load, picked, order)``, least first
    (the rule is the module's).  Everything in it but lateness
    changes only when the dispatcher hears or sends something, and then it
    calls ``rank``; lateness comes with time alone.  So the nodes are in four
    heaps, by lateness and by whether they are full (``window`` calls or more
    sent and unanswered: no job fits), holding each node's key when last
    ranked.  A fresh heap's top is checked against the clock and moved to
    the late heap once late: nodes deeper down lose to it anyway.  A node
    is fresh again only by a report, which ranks it again.

    ``rank`` pushes a new entry and leaves the old one stale (lazy deletion:
    an entry is live while its version is its node's); a heap is compacted
    once it holds twice as many entries as there are nodes.  A job of n
    calls skips the nodes with fewer than n places free (set aside while it
    looks, then put back): none for a job of one call.
    """

    def __init__(self, nodes: dict, window: int, late_after: float):
        self.nodes, self.window, self.late_after = nodes, window, late_after
        self.heaps: list[list] = [[], [], [], []]  # fresh and open, fresh and full, late and open, late and full
        self.versions = itertools.count()  # across nodes: a node added again never revives its old entries

    def rank(self, node: NodeRef, state: _Node) -> None:
        """``node``'s key changed (or it is new): place it by its key now."""
        state.version = version = next(self.versions)
        calls, load = state.calls, state.load
        heap = self.heaps[2 * state.late + (calls >= self.window)]
        # Its key, then which entry and whose.  Calls sent and unanswered are work there even before its
        # meter counts them; with no report yet, they are all this dispatcher knows of its load.
        if load is None:
            heapq.heappush(heap, (calls, 0.0, state.picked, state.order, version, node))
        else:
            value = load.value + max(0, calls - load.run_queue)
            heapq.heappush(heap, (value, load.host_load, state.picked, state.order, version, node))
        if len(heap) > 2 * len(self.nodes) + 32:
            heap[:] = [entry for entry in heap if self._live(entry)]
            heapq.heapify(heap)

    def _live(self, entry) -> bool:
        state = self.nodes.get(entry[-1])
        return state is not None and state.version == entry[-2]

    def _top(self, which: int, now: float) -> tuple | None:
        """The least live entry of one heap and its node's state (a fresh heap's late nodes go to the late heap)."""
        heap = self.heaps[which]
        while heap:
            entry = heap[0]
            state = self.nodes.get(entry[-1])
            if state is None or state.version != entry[-2]:
                heapq.heappop(heap)  # stale
            elif which < 2 and now - state.heard > self.late_after:
                heapq.heappop(heap)
                state.late = True
                heapq.heappush(self.heaps[which + 2], entry)
            else:
                return entry, state
        return None

    def least(self, now: float) -> NodeRef | None:
        """The least-loaded node, full or not (None with no node)."""
        for open_, full in ((0, 1), (2, 3)):  # the fresh heaps, then the late ones
            tops = [top[0] for top in (self._top(open_, now), self._top(full, now)) if top is not None]
            if tops:
                return min(tops)[-1]
        return None

    def pick(self, now: float, calls: int) -> NodeRef | None:
        """The least-loaded node with room for ``calls`` more (one with none in flight always has)."""
        for which in (0, 2):  # the open heaps: fresh, then late
            heap, aside, found = self.heaps[which], None, None
            while (top := self._top(which, now)) is not None:
                entry, state = top
                if state.calls and state.calls + calls > self.window:  # no room for this job (for the next, maybe)
                    aside = aside or []
                    aside.append(heapq.heappop(heap))
                    continue
                found = entry[-1]
                break
            if aside:
                for entry in aside:
                    heapq.heappush(heap, entry)
            if found is not None:
                return found
        return None


class _Dispatcher:
    def __init__(self, interval: float, window: int, include_self: bool):
        self.interval, self.window, self.include_self = interval, window, include_self
        self.nodes: dict[NodeRef, _Node] = {}  # where calls may go: never this node unless asked, or local
        self.ranking = _Ranking(self.nodes, window, LATE * interval)
        self.orders = itertools.count()
        self.waiting: deque[_Job] = deque()
        self.ids = itertools.count(1)
        self.shipped: dict = {}  # modules sent by value to every node, before its first job

    async def run(self):
        me = current()
        self.me, self.here, self.loop = me.pid, me.table.ref, me.kernel.loop
        if me.table.remote is None:
            # A node without a network: running here is the only meaning of
            # dispatch.  Only networked nodes start a runner and a meter.
            _start_services(me.table)
            self._add(self.here)
        else:
            monitor_node(None)
            for node in nodes():
                self._add(node)
            if self.include_self:
                self._add(self.here)
        while True:
            msg = await receive()
            cls = msg.__class__
            if cls is tuple and msg:
                kind = msg[0]
                if kind == "done":
                    self._done(*msg[1:])
                elif kind == "load":
                    self._heard(msg[1])
                elif kind == "submit":
                    _, fn, calls, reply = msg
                    self._submit(fn, calls, reply)
                elif kind == "reconsider":
                    self._abandon()
                elif kind == "ship":
                    self._ship(msg[1])
                elif kind.__class__ is Pid and len(msg) == 3:
                    self._request(*msg)
            elif cls is NodeUp:
                if msg.node != self.here and not is_client(msg.node):  # a client runs no one's work
                    self._add(msg.node)
                    self._schedule()
            elif cls is NodeDown:
                self._lost(msg.node)

    # -- nodes and their loads -------------------------------------------------

    def _add(self, node: NodeRef) -> None:
        if node not in self.nodes:
            state = self.nodes[node] = _Node(self.loop.time(), next(self.orders))
            self.ranking.rank(node, state)
        if self.shipped and node != self.here:  # before any job: from here to its runner, in order
            send(runner_of(node), ("shipped", ShippedModules(self.shipped)))
        # Also for a node already known (a NodeUp after a down this dispatcher
        # did not see): its meter may have dropped the subscription when its
        # side saw this one go.  A second subscribe only brings a report now.
        send(meter_of(node), ("subscribe", self.me, self.interval))

    def _ship(self, shipped: ShippedModules) -> None:
        self.shipped.update(shipped.modules)
        for node in self.nodes:
            if node != self.here:
                send(runner_of(node), ("shipped", shipped))

    def _heard(self, load) -> None:
        if load.__class__ is Load:
            state = self.nodes.get(load.node)
            if state is not None:  # a late node's reports count again as soon as they come
                state.load, state.heard, state.late = load, self.loop.time(), False
                self.ranking.rank(load.node, state)

    def _lost(self, node: NodeRef) -> None:
        state = self.nodes.pop(node, None)
        if state is None:
            return
        self.waiting.extendleft(reversed(state.jobs.values()))  # first again, in their order
        if not self.nodes:
            self._abandon()  # the rest wait for a node to join or come back
        self._schedule()

    def _late(self, state: _Node, now: float) -> bool:
        return now - state.heard > LATE * self.interval

    # -- jobs -------------------------------------------------------------------

    def _submit(self, fn, calls: list, reply) -> None:
        job = _Job(next(self.ids), fn, calls, reply)
        if not self.nodes and reply.abandon():
            return  # e.g. an Executor shut down before its job came here
        self.waiting.append(job)
        self._schedule()

    def _abandon(self) -> None:
        """With no node connected, drop the waiting jobs whose replies give up."""
        if not self.nodes and self.waiting:
            self.waiting = deque(job for job in self.waiting if not job.reply.abandon())

    def _schedule(self) -> None:
        waiting = self.waiting
        while waiting:
            job = waiting[0]
            node = self.ranking.pick(self.loop.time(), len(job.calls))
            if node is None:
                return  # no room, or no node: the jobs wait for a "done" or a NodeUp
            waiting.popleft()
            if not job.started:
                if not job.reply.start():
                    continue  # cancelled meanwhile
                job.started = True
            try:
                send(runner_of(node), ("run", job.id, job.fn, job.calls, self.me))
            except UnserializableMessage as exc:
                job.reply.finish([(False, Crash.from_exception(exc))] * len(job.calls))
                continue
            state = self.nodes[node]
            state.jobs[job.id] = job
            state.calls += len(job.calls)
            state.picked += 1
            self.ranking.rank(node, state)

    def _done(self, job_id, node, results) -> None:
        state = self.nodes.get(node)
        job = state.jobs.pop(job_id, None) if state is not None else None
        if job is None:
            return  # run again elsewhere after its node was thought lost, and answered there
        state.calls -= len(job.calls)
        self.ranking.rank(node, state)
        for i, result in enumerate(results):
            if result[1].__class__ is Unreadable:  # a value this node cannot unpickle: its error, not a stand-in
                results[i] = (False, _unreadable_crash(result[1].reason))
        job.reply.finish(results)
        self._schedule()

    # -- questions --------------------------------------------------------------

    def _request(self, sender: Pid, tag, request) -> None:
        if request.__class__ is tuple and request and request[0] == "run":
            fn, calls, deadline = request[1], request[2], request[3] if len(request) > 3 else None
            return self._submit(fn, calls, _ToProcess(sender, tag, deadline, self.loop))
        now = self.loop.time()
        if request == "minimum_load":
            send(sender, (tag, self.ranking.least(now)))
        elif request == "place":
            best = self.ranking.least(now)
            if best is not None:
                state = self.nodes[best]
                state.picked += 1  # the next tie goes to another node
                self.ranking.rank(best, state)
            send(sender, (tag, best))
        elif request == "average_load":
            fresh = [state.load.value for state in self.nodes.values() if state.load is not None and not self._late(state, now)]
            send(sender, (tag, sum(fresh) / len(fresh) if fresh else None))
        elif request == "loads":
            send(sender, (tag, {node: state.load for node, state in self.nodes.items()}))


def _unreadable_crash(reason: str) -> Crash:
    return Crash("termite.UnreadableMessage", reason, "", UnreadableMessage(reason))


def _start_services(table: ProcessTable) -> None:
    """Start the runner and the meter of a node without a network, unless they run."""
    if table.resolve(runner_of(table.ref)) is None:
        start_runner(table, None)
    if table.resolve(meter_of(table.ref)) is None:
        start_meter(table, None)


def start_dispatcher(interval: float = 1.0, window: int = 16, include_self: bool = False) -> Pid:
    """Start this node's dispatcher with these settings (or return the one running).

    ``include_self``: this node runs calls too (a node without a network
    always does: it has no other).
    """
    table = current().table
    return _dispatcher_of(table, interval, window, include_self)


def _dispatcher_of(table: ProcessTable, interval: float, window: int, include_self: bool) -> Pid:
    pid = _dispatchers.get(table)
    if pid is None or table.resolve(pid) is None:
        if interval <= 0 or window < 1:
            raise ValueError(f"a dispatcher needs interval > 0 and window >= 1, not interval={interval!r}, window={window!r}")
        pid = _dispatchers[table] = spawn_in(table, _Dispatcher(interval, window, include_self).run, ())
    return pid


def dispatcher() -> Pid:
    """This node's dispatcher, started with the default settings if none runs."""
    return _dispatcher_of(current().table, 1.0, 16, False)


async def dispatch(thunk, *args, timeout: float | None = None):
    """Run ``thunk(*args)`` on the least-loaded node; return its value or raise its exception.

    With no node connected the call waits for one (never running here unless
    this node has no network, or its dispatcher has ``include_self``).
    ``timeout``: raise ``Timeout`` after that many seconds; a call that has
    not started by then never will.
    """
    deadline = None if timeout is None else current().kernel.loop.time() + timeout
    [(ok, value)] = await call(dispatcher(), ("run", thunk, [args], deadline), timeout=timeout)
    if ok:
        return value
    raise remote_exception(value)


def ship(*modules) -> None:
    """Send the source of ``modules`` (names; a package goes with its submodules) to every node
    this node dispatches to, now and as they join, before the thunks dispatched after this call.

    For the caller's own modules, which the nodes do not have installed
    (termite/_net/shipping.py).  Raises ``ValueError`` for a module that is
    not Python source.
    """
    send(dispatcher(), ("ship", collect(modules)))


def dispatch_async(thunk, *args):
    """Start ``dispatch(thunk, *args)`` and return a future: ``await termite.touch(f)`` for its value."""
    return future(dispatch, thunk, *args)


async def minimum_load(timeout: float = 5.0) -> NodeRef | None:
    """The least-loaded node (the paper's ``minimum-load``)."""
    return await call(dispatcher(), "minimum_load", timeout=timeout)


async def place(timeout: float = 5.0) -> NodeRef | None:
    """Where a new long-lived process should go: ``minimum_load``'s choice, the next tie going to another node.

    None when the dispatcher has no node (see the module for which nodes it has).
    """
    return await call(dispatcher(), "place", timeout=timeout)


async def average_load(timeout: float = 5.0) -> float | None:
    """The average of the nodes' loads (run queue plus busy cores), from reports not late."""
    return await call(dispatcher(), "average_load", timeout=timeout)


async def loads(timeout: float = 5.0) -> dict:
    """Every node's last load report (None until its first arrives)."""
    return await call(dispatcher(), "loads", timeout=timeout)
