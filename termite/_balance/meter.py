"""Load meters: every node measures its load and reports it to whoever subscribes.

Each networked node runs a meter process under serial ``METER_SERIAL``.  A
process subscribes with ``("subscribe", pid, interval)`` and gets
``("load", Load)`` at once and then every ``interval`` seconds (the smallest
interval any subscriber asked for), until it unsubscribes or ends (the meter
monitors it).  ``("load?", pid, tag)`` gets ``(tag, Load)`` once.

A :class:`Load` holds the node's own figures, which decide between nodes of
one host, and the host's, which they share: ``busy`` is the node's CPU use
since the last report in cores (its OS process's CPU times, from
``psutil.Process``; a node is meant to have one core), ``run_queue`` the
processes ready to run plus the thunks its runner holds, ``host_load`` the
host's one-minute load average per core (``psutil.getloadavg()``).  The rest
feeds dashboards, among it ``queued``, the messages waiting in all the node's
mailboxes, and its largest mailbox and whose it is (a process falling behind
its senders shows there first; ``termite.process_info`` tells of one process),
and the thunks its runner was sent, finished and failed, totals since the node
started (termite._balance.runner counts them), and ``top``, its few busiest
processes (:data:`TOP` with the largest mailboxes and :data:`TOP` with the
most steps, as ``termite.ProcessLoad``: the dashboard's process view).
Finding them takes about 200 ns a process; a node of more than
:data:`TOP_SCAN` processes finds them again only every so many reports, so
that its meter spends at most about 4 ms a report on them.  ``cores`` is the host's: a
node is one interpreter, and uses one of them.

The load of a node, one definition for dispatch, placement and the
dashboard alike, is ``Load.value = run_queue + busy``: the work waiting on
it plus the cores it kept busy.  (The dashboard shows its two parts side by
side, cpu and run queue, as their sum in one figure reads as a CPU load
that it is not.)  ``host_load`` only breaks ties between
nodes of equal value: it moves slowly, counts other programs, and is the
same for every node of a host.  The meter runs as a process, so a node
whose kernel is stuck reports late; a late report counts as busy, whatever
it said (termite._balance.dispatch).
"""

from __future__ import annotations

import os
import socket
import time
from typing import NamedTuple

import psutil

from termite._core.errors import Timeout
from termite._core.info import ProcessLoad, busiest, mailbox_totals
from termite._core.ids import NodeRef, Pid, make_tag
from termite._core.links import demonitor, monitor
from termite._core.mailbox import receive, send
from termite._core.patterns import ANY
from termite._core.process import Down, METER_SERIAL, ProcessTable, current
from termite._balance.runner import pending
from termite._balance.safepoint import opted_in
from termite._core.spawn import spawn_in

__all__ = ["start_meter", "METER_SERIAL", "Load", "meter_of", "node_load", "LOAD_REPORT", "subscribe_load", "unsubscribe_load"]

TOP = 5  # processes of each kind in a report's ``top``
TOP_SCAN = 20_000  # processes a report's top is found among each time; a larger node's is found less often



class Load(NamedTuple):
    """One node's load report."""

    node: NodeRef
    busy: float  # CPU use since the last report, in cores
    run_queue: int  # processes ready to run + thunks waiting or running in its runner
    host_load: float  # the host's one-minute load average per core
    processes: int
    frames_in: int  # totals since the node started: a dashboard shows rates
    frames_out: int
    migrations_in: int
    migrations_out: int
    uptime: float  # seconds
    host: str
    os_pid: int
    cores: int  # the host's logical CPUs (the node itself uses one)
    time: float  # when it was measured (time.time() on that node)
    queued: int = 0  # messages waiting in all the node's mailboxes
    largest_mailbox: int = 0  # the messages waiting in its largest mailbox,
    largest_mailbox_pid: Pid | None = None  # and whose it is (None if every mailbox is empty)
    balanceable: int = 0  # processes here the balancer may ask to move (termite._balance.safepoint)
    balanced_in: int = 0  # moves to this node made at the balancer's request, since it started
    # Flow control (termite._net.flow): the nodes ("host:port") its senders wait for, having sent
    # them more than the buffer limit unread, and its processes whose remote senders wait
    busy_nodes: tuple = ()
    full_mailboxes: int = 0
    # Thunks (termite._balance.runner), totals since the node started: calls its runner was sent,
    # those that finished (returned or raised), and of those the ones that raised
    thunks_received: int = 0
    thunks_done: int = 0
    thunks_failed: int = 0
    # Its busiest processes: the TOP with the largest mailboxes and the TOP with the most steps (termite.ProcessLoad)
    top: tuple[ProcessLoad, ...] = ()

    @property
    def value(self) -> float:
        """The node's load (the one definition: see the module): work waiting, plus cores kept busy."""
        return self.run_queue + self.busy


def _flow_figures(table: ProcessTable) -> tuple[tuple, int]:
    """Busy nodes and full mailboxes (termite._net.flow), for the report: nothing without a network."""
    flow = getattr(table.remote, "flow", None)
    if flow is None:
        return (), 0
    return tuple(f"{node.host}:{node.port}" for node in flow.peers), len(flow.told)


def meter_of(node: NodeRef) -> Pid:
    """The pid of ``node``'s meter."""
    return Pid(node, METER_SERIAL)


async def node_load(node: NodeRef, timeout: float = 5.0) -> Load:
    """Ask ``node``'s meter for a report now."""
    me = current()
    tag = make_tag()
    ref = monitor(meter_of(node))
    send(meter_of(node), ("load?", me.pid, tag))
    try:
        msg = await receive((tag, Load), Down(ref, ANY, ANY), timeout=timeout, default=None)
    finally:
        demonitor(ref)
    if msg is None or msg.__class__ is Down:
        raise Timeout(f"node {node} did not report its load within {timeout} s")
    return msg[1]


class _Sampler:
    def __init__(self, table: ProcessTable):
        self.table = table
        self.process = psutil.Process()
        self.cores = psutil.cpu_count() or 1
        self.host = socket.gethostname()
        self.started = time.monotonic()
        self.last_cpu, self.last_at = self._cpu(), self.started
        self.busy = 0.0
        self.top: tuple = ()
        self.reports = 0

    def _cpu(self) -> float:
        times = self.process.cpu_times()
        return times.user + times.system

    def sample(self, periodic: bool) -> Load:
        """A report; a periodic one starts the next measuring window."""
        now, cpu = time.monotonic(), self._cpu()
        if now - self.last_at >= 0.05:
            self.busy = (cpu - self.last_cpu) / (now - self.last_at)
        if periodic:
            self.last_cpu, self.last_at = cpu, now
        table = self.table
        stats = table.remote.transport.stats if table.remote is not None else None
        counters = table.counters
        queued, largest, owner = mailbox_totals(table)
        processes = len(table.procs) + len(table.guests)
        if self.reports % max(1, processes // TOP_SCAN) == 0:
            self.top = busiest(table, TOP)
        self.reports += 1
        return Load(
            table.ref,
            round(self.busy, 3),
            table.kernel.runnable() + pending(table),
            psutil.getloadavg()[0] / self.cores,
            processes,
            stats.frames_in if stats else 0,
            stats.frames_out if stats else 0,
            counters["migrations_in"],
            counters["migrations_out"],
            now - self.started,
            self.host,
            os.getpid(),
            self.cores,
            time.time(),
            queued,
            largest,
            owner,
            opted_in(table),
            counters["balanced_in"],
            *_flow_figures(table),
            counters["thunks_received"],
            counters["thunks_done"],
            counters["thunks_failed"],
            self.top,
        )


async def meter():
    """The body of a node's meter process."""
    me = current()
    sampler = _Sampler(me.table)
    loop = me.kernel.loop
    subscribers: dict[Pid, tuple[float, object]] = {}  # pid -> (interval, monitor ref)
    interval = due = None
    while True:
        if due is None:
            msg = await receive()
        else:
            msg = await receive(timeout=max(0.0, due - loop.time()), default=None)
        if msg is None:  # time to report
            report = sampler.sample(periodic=True)
            for pid in subscribers:
                send(pid, ("load", report))
            due = max(due + interval, loop.time() + interval / 2)
            continue
        kind = msg[0] if msg.__class__ is tuple and msg else msg.__class__
        if kind == "subscribe" and len(msg) == 3 and msg[1].__class__ is Pid and msg[2] > 0:
            _, pid, every = msg
            if pid not in subscribers:
                subscribers[pid] = (float(every), monitor(pid))
            send(pid, ("load", sampler.sample(periodic=False)))
        elif kind == "unsubscribe" and len(msg) == 2 and msg[1] in subscribers:
            demonitor(subscribers.pop(msg[1])[1])
        elif kind is Down:
            subscribers.pop(msg.pid, None)
        elif kind == "load?" and len(msg) == 3 and msg[1].__class__ is Pid:
            send(msg[1], (msg[2], sampler.sample(periodic=False)))
        else:
            continue
        wanted = min((every for every, _ in subscribers.values()), default=None)
        if wanted != interval:
            interval = wanted
            due = None if wanted is None else loop.time() + wanted


def start_meter(table: ProcessTable, endpoint) -> None:
    """Start this node's meter (a runtime extension: termite._runtime.node)."""
    spawn_in(table, meter, (), pid=meter_of(table.ref))


# -- subscribing to a meter: the public face of its protocol ------------------

#: The pattern of the reports a load subscriber receives: ``("load", Load)``.
#:
#:     termite.subscribe_load(node, interval=1.0)
#:     _, load = await termite.receive(termite.LOAD_REPORT)
LOAD_REPORT = ("load", Load)


def subscribe_load(node: NodeRef, interval: float = 1.0) -> None:
    """Have ``node``'s meter send the calling process its load now and every ``interval`` s.

    Each report is a message ``("load", Load)`` (receive it with the pattern
    :data:`LOAD_REPORT`).  Reports come until :func:`unsubscribe_load` or the
    process ends; the meter sends at the shortest interval any subscriber
    asked for, and a second subscription keeps the first interval.  Nothing
    comes from a node that is down: ``monitor_node`` tells of that.
    """
    if not interval > 0:
        raise ValueError(f"interval must be more than 0 seconds, not {interval!r}")
    send(meter_of(node), ("subscribe", current().pid, float(interval)))


def unsubscribe_load(node: NodeRef) -> None:
    """Stop the reports of ``node``'s meter to the calling process (those sent already still arrive)."""
    send(meter_of(node), ("unsubscribe", current().pid))

