"""The balancer: it evens the cluster's load by asking opted-in processes to migrate.

One balancer per cluster, under the global name ``"termite.balancer"``
(:data:`BALANCER`), started by the program as a supervised child
(``termite.balancer_spec()`` in its top supervisor, or
``termite.start_balancer()``, which starts a small supervisor of its own:
termite._behaviours.balancing).  Why the program and not the launcher:
balancing moves the program's processes, which must opt in and have safe
points (termite._balance.safepoint), so it is an application's decision,
made where its supervision tree is; the global name keeps it to one.

What it watches: its node's dispatcher (termite._balance.dispatch), which
hears every node's meter; the same reports, the same ``Load.value``, the
same choice of least-loaded node (``minimum_load``), so one code path says
where work goes, whether it is dispatched, placed or moved.

Twice every ``interval`` seconds it looks at the loads (only new reports
count, so a report is acted on within half an interval):

1. A node is *over* when its load is above the mean of the fresh reports by
   more than ``margin``.  Only new reports count: a node must be over in
   ``window`` consecutive reports (hysteresis: a burst does not move
   anything).
2. The most loaded node that has been over long enough, and has processes
   that opted in, sheds to the least-loaded node: half the difference of
   their loads, each opted-in process taken as worth one unit of load (one
   ready process, as a CPU-bound one is), so the two end about even and a
   difference of one process is left alone (nothing ping-pongs).
3. It asks that node's mover to mark so many processes; they move at their
   next ``checkpoint()``.  Then it keeps quiet for ``cooldown`` seconds and
   starts counting reports afresh, so the meters catch up with the moves
   before it judges again.

A node lost is forgotten (the dispatcher drops it too).  The request to a
node's mover is a message, not a call: a node busy with CPU-bound work may
be slow to answer, and the balancer goes on meanwhile (its answer, how many
it marked, is counted when it comes).  Each
request and each move made is logged (logger ``termite.balance``); the
moves come back as ``("moved", pid, source, target, at)`` from the movers,
and ``termite.balancer_statistics()`` answers the totals and the recent ones.
Knobs: ``interval`` (also the meters' report interval when it starts its
node's dispatcher), ``margin``, ``window``, ``cooldown``.

It balances the nodes its node's dispatcher dispatches to: not its own
node, unless that dispatcher was started with ``include_self=True``.  So it
runs best where the program's driver does, on a node that runs no work.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import deque

from termite._core.call import call
from termite._core.ids import NodeRef, Pid, Tag, make_tag
from termite._core.mailbox import receive, send
from termite._core.process import current
from termite._net.distribution import NodeDown, monitor_node
from termite._net.global_names import whereis_global
from termite._balance.dispatch import average_load, loads, minimum_load, start_dispatcher
from termite._balance.safepoint import mover_of

__all__ = ["BALANCER", "BalancerStatistics", "Move", "balancer", "balancer_statistics", "check_balancer_args"]

log = logging.getLogger("termite.balance")

#: The balancer's global name: one per cluster.
BALANCER = "termite.balancer"
#: How many recent moves the statistics keep.
RECENT = 64
#: Seconds to wait for a mover's or the dispatcher's answer.
ASK_TIMEOUT = 2.0


@dataclasses.dataclass(frozen=True)
class Move:
    """One migration made at the balancer's request (``at``: the wall clock on the target)."""

    pid: Pid
    source: NodeRef
    target: NodeRef
    at: float


@dataclasses.dataclass(frozen=True)
class BalancerStatistics:
    """What ``balancer_statistics()`` answers."""

    moves: int  # migrations made at its request, since it started
    asked: int  # processes the movers marked to move at its request
    requests: int  # times it asked a node to shed
    recent: tuple[Move, ...]  # the last moves, oldest first
    nodes: int  # nodes it watches now


def check_balancer_args(interval: float = 1.0, margin: float = 1.0, window: int = 2, cooldown: float | None = None):
    """The checked knobs: (interval, margin, window, cooldown); ``cooldown`` defaults to 2 intervals."""
    if not isinstance(interval, (int, float)) or isinstance(interval, bool) or not interval > 0:
        raise ValueError(f"interval={interval!r} is not a number of seconds > 0")
    if not isinstance(margin, (int, float)) or isinstance(margin, bool) or margin < 0:
        raise ValueError(f"margin={margin!r} is not a load >= 0 (a load unit is one ready process or one busy core)")
    if not isinstance(window, int) or isinstance(window, bool) or window < 1:
        raise ValueError(f"window={window!r} is not a whole number of reports >= 1")
    if cooldown is None:
        cooldown = 2 * interval
    if not isinstance(cooldown, (int, float)) or isinstance(cooldown, bool) or cooldown < 0:
        raise ValueError(f"cooldown={cooldown!r} is not a number of seconds >= 0")
    return float(interval), float(margin), window, float(cooldown)


class _Balancer:
    def __init__(self, interval: float, margin: float, window: int, cooldown: float):
        self.interval, self.margin, self.window, self.cooldown = interval, margin, window, cooldown
        self.seen: dict[NodeRef, float] = {}  # node -> the time of its last report counted
        self.over: dict[NodeRef, int] = {}  # node -> consecutive reports over the mean by the margin
        self.quiet_until = 0.0
        self.moves = self.asked = self.requests = 0
        self.recent: deque[Move] = deque(maxlen=RECENT)
        self.pending: dict[Tag, NodeRef] = {}  # requests to shed not yet answered: tag -> the node asked

    async def run(self):
        me = current()
        self.me, self.loop = me.pid, me.kernel.loop
        start_dispatcher(self.interval)  # the one running already, if any, with its own interval
        monitor_node(None)
        log.info("balancer %s: interval %s s, margin %s, window %d reports, cooldown %s s",
                 self.me, self.interval, self.margin, self.window, self.cooldown)
        # It looks twice an interval: only new reports count, so looking often costs nothing
        # but a call to a local process, and a report is acted on within half an interval.
        due = self.loop.time()
        while True:
            msg = await receive(timeout=max(0.0, due - self.loop.time()), default=None)
            if msg is None:
                due = self.loop.time() + self.interval / 2
                await self._look()
                continue
            match msg:
                case ("moved", Pid() as pid, NodeRef() as source, NodeRef() as target, float() as at):
                    self.moves += 1
                    self.recent.append(Move(pid, source, target, at))
                case (Pid() as sender, Tag() as tag, "statistics"):
                    send(sender, (tag, BalancerStatistics(self.moves, self.asked, self.requests,
                                                          tuple(self.recent), len(self.seen))))
                case (Tag() as tag, int() as marked) if tag in self.pending:
                    source = self.pending.pop(tag)
                    self.asked += marked
                    log.debug("balance: %s marked %d processes to move", source, marked)
                case NodeDown(node=node):
                    self.seen.pop(node, None)
                    self.over.pop(node, None)
                    for tag in [t for t, n in self.pending.items() if n == node]:  # no answer will come
                        del self.pending[tag]

    async def _look(self) -> None:
        known = await loads(timeout=ASK_TIMEOUT)
        mean = await average_load(timeout=ASK_TIMEOUT)
        if mean is None:
            return
        for node in [n for n in self.seen if n not in known]:  # lost, or dropped by the dispatcher
            del self.seen[node]
            self.over.pop(node, None)
        quiet = self.loop.time() < self.quiet_until
        for node, load in known.items():
            if load is None or load.time <= self.seen.get(node, 0.0):
                continue  # no new report: the count neither grows nor restarts
            self.seen[node] = load.time
            over = not quiet and load.value > mean + self.margin
            self.over[node] = self.over.get(node, 0) + 1 if over else 0
        ready = [(load.value, node) for node, load in known.items()
                 if load is not None and load.balanceable and self.over.get(node, 0) >= self.window]
        if not ready:
            return
        _, source = max(ready, key=lambda item: (item[0], item[1].port))
        target = await minimum_load(timeout=ASK_TIMEOUT)
        if target is None or target == source or known.get(target) is None:
            return
        src, dst = known[source], known[target]
        count = min(src.balanceable, int((src.value - dst.value) / 2))
        if count < 1:
            return
        # Not a call: a busy node may take a while to answer, and the balancer must not wait on it.
        tag = make_tag()
        send(mover_of(source), (self.me, tag, ("shed", count, target, self.cooldown, self.me)))
        self.pending[tag] = source
        self.requests += 1
        log.info("balance: %s has load %.2f (mean %.2f, %s has %.2f): asking %d of its %d opted-in processes "
                 "to move there", source, src.value, mean, target, dst.value, count, src.balanceable)
        self.quiet_until = self.loop.time() + self.cooldown
        self.over.clear()  # count afresh once the meters have seen the moves


async def balancer(interval: float = 1.0, margin: float = 1.0, window: int = 2, cooldown: float | None = None):
    """The balancer's process body (see the module); register it as :data:`BALANCER`, as ``balancer_spec`` does."""
    await _Balancer(*check_balancer_args(interval, margin, window, cooldown)).run()


async def balancer_statistics(timeout: float = 5.0) -> BalancerStatistics:
    """The cluster balancer's figures: moves made at its request, the recent ones, requests."""
    pid = whereis_global(BALANCER)
    if pid is None:
        raise LookupError(f"no balancer runs in this cluster (no global name {BALANCER!r}); "
                          "start one with termite.start_balancer() or termite.balancer_spec()")
    return await call(pid, "statistics", timeout=timeout)
