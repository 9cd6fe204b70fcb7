"""Workloads of the fault-injection suite (tests/faults), run by real node processes.

Every node imports this module by name (tests/nodecode is on their path), so
process bodies travel by reference and a migrant's frames rebuild anywhere.
Each *recorder* keeps what happened to it as plain data (strings, numbers,
tuples) and hands it over when called with ``"report"``; the checkers of
tests/faults/invariants.py read only that data.

=================  ====================  =============================================
process            runs on               records
=================  ====================  =============================================
stream_sender      a node X              how many ("n", self, i) it sent to its
                                         receiver, and every Down of the receiver
stream_receiver    a node Y              the numbers received, in arrival order, as
                                         ranges [lo, hi], interleaved with every
                                         NodeDown/NodeUp about X and Down of the sender
link_target        a node Y              every Exit and Down it gets
watcher            a node X              link / monitor / spawn_link a process on Y;
                                         every Exit and Down it gets
witness            the target's node     a local monitor of a spawn_link target: how
                                         it ended (noconnection when X was lost)
migrant            two nodes, in turns   nothing: it reports ("step", k, node) to the
                                         collector before each migration
collector          the test's node       the migrant steps and refusals, its Down
observer           the test's node       NodeUp/NodeDown of every node, stall reports
gil_stall          the victim            holds the GIL in one C call for d seconds
job                a node's runner       an Executor call: appends "i pid" to a file
=================  ====================  =============================================

An event is a tuple whose first item says what it is: ("n", lo, hi, t),
("nodedown", node, reason, t), ("nodeup", node, t), ("down", pid, reason, t),
("exit", pid, reason, t), ("fin", count, t).  Pids are written "host:port/serial",
nodes "host:port", reasons as text; t is ``time.time()`` on the recording node.
"""

from __future__ import annotations

import os
import time

import termite
from termite import ANY, Down, Exit, MigrationError, NodeDown, NodeUp, Pid, Tag, receive, send, spawn

__all__ = [
    "node_text", "pid_text", "reason_text",
    "stream_sender", "stream_receiver", "link_target", "watcher", "witness",
    "migrant", "collector", "observer", "gil_stall", "start_stall", "job",
    "deploy", "go", "finish", "gather", "whereabouts", "whereabouts_everywhere",
]

REPORT = "report"


# -- plain data ---------------------------------------------------------------


def node_text(node) -> str:
    return f"{node.host}:{node.port}"


def pid_text(pid) -> str:
    return f"{pid.node.host}:{pid.node.port}/{pid.serial}"


def reason_text(reason) -> str:
    if isinstance(reason, str):
        return reason
    if isinstance(reason, termite.Crash):
        return f"crash: {reason.message}"
    return repr(reason)


def _notice(msg):
    """The event for a NodeDown, NodeUp, Down or Exit message; None for anything else."""
    cls = msg.__class__
    if cls is NodeDown:
        return ("nodedown", node_text(msg.node), reason_text(msg.reason), time.time())
    if cls is NodeUp:
        return ("nodeup", node_text(msg.node), time.time())
    if cls is Down:
        return ("down", pid_text(msg.pid), reason_text(msg.reason), time.time())
    if cls is Exit:
        return ("exit", pid_text(msg.pid), reason_text(msg.reason), time.time())
    return None


def _request(msg):
    """``(caller, tag, request)`` if ``msg`` is a call, else None."""
    if msg.__class__ is tuple and len(msg) == 3 and msg[0].__class__ is Pid and msg[1].__class__ is Tag:
        return msg
    return None


# -- numbered streams ---------------------------------------------------------


async def stream_sender(receiver: Pid, burst: int, tick: float):
    """Send ("n", self, i) for i = 1, 2, ... to ``receiver``: ``burst`` every ``tick`` s, from
    ("go", end_at) until ``end_at`` (time.time()); then ("fin", self, count)."""
    me = termite.self()
    termite.monitor(receiver)
    events: list = []
    sent = 0
    end_at = None
    done = False

    def handle(msg):
        nonlocal end_at
        notice = _notice(msg)
        if notice is not None:
            events.append(notice)
            return
        call = _request(msg)
        if call is not None:
            caller, tag, request = call
            if request == REPORT:
                send(caller, (tag, {"sent": sent, "done": done, "events": list(events), "node": node_text(me.node)}))
            else:
                send(caller, (tag, "ok"))
        elif msg.__class__ is tuple and msg and msg[0] == "go":
            end_at = msg[1]

    while end_at is None:
        handle(await receive())
    while time.time() < end_at:
        for _ in range(burst):
            sent += 1
            send(receiver, ("n", me, sent))
        await termite.sleep(tick)
        while (msg := await receive(timeout=0, default=None)) is not None:
            handle(msg)
    send(receiver, ("fin", me, sent))
    done = True
    while True:
        handle(await receive())


async def stream_receiver():
    """Record the numbers of one sender's stream as ranges, with every notice about it, in arrival order.

    Told its sender by the call ("watch", sender): it then monitors the sender and its node.
    """
    events: list = []
    sender = None
    while True:
        msg = await receive()
        if msg.__class__ is tuple and len(msg) == 3 and msg[0] == "n":
            i = msg[2]
            last = events[-1] if events else None
            if last is not None and last[0] == "n" and i == last[2] + 1:
                last[2] = i
            else:
                events.append(["n", i, i, time.time()])
            continue
        notice = _notice(msg)
        if notice is not None:
            events.append(notice)
            continue
        if msg.__class__ is tuple and len(msg) == 3 and msg[0] == "fin":
            events.append(("fin", msg[2], time.time()))
            continue
        call = _request(msg)
        if call is None:
            continue
        caller, tag, request = call
        if request == REPORT:
            send(caller, (tag, {"sender": sender and pid_text(sender), "events": [tuple(e) for e in events]}))
        elif request.__class__ is tuple and request[0] == "watch":
            sender = request[1]
            termite.monitor(sender)
            termite.monitor_node(sender.node)
            send(caller, (tag, "watching"))
        else:
            send(caller, (tag, "ok"))


# -- links and monitors -------------------------------------------------------


async def link_target(trap: bool):
    """A process others link to or monitor.  Records every Exit and Down; the call "stop" ends it (normal)."""
    if trap:
        termite.trap_exit(True)
    events: list = []
    while True:
        msg = await receive()
        notice = _notice(msg)
        if notice is not None:
            events.append(notice)
            continue
        call = _request(msg)
        if call is not None:
            caller, tag, request = call
            if request == REPORT:
                send(caller, (tag, {"events": list(events)}))
            else:
                send(caller, (tag, "ok"))
                if request == "stop":
                    return
        elif msg == "stop":
            return


async def watcher(kind: str, target_or_node):
    """Watch a process of another node, made from this side, and record every Exit and Down.

    ``kind``: "link" (link to the pid given), "monitor" (monitor it), or
    "spawn_link" (spawn a non-trapping link_target on the node given, linked
    to this process).  Exits are trapped.  Before answering the call "ready"
    (with the target's pid) it makes one round trip to the target, so the
    link or monitor is in place there.
    """
    termite.trap_exit(True)
    if kind == "spawn_link":
        target = spawn(link_target, False, node=target_or_node, link=True)
    else:
        target = target_or_node
        if kind == "link":
            termite.link(target)
        else:
            termite.monitor(target)
    events: list = []
    pong = await termite.call(target, "ping", timeout=10, default=None)
    while True:
        msg = await receive()
        notice = _notice(msg)
        if notice is not None:
            events.append(notice)
            continue
        call = _request(msg)
        if call is not None:
            caller, tag, request = call
            if request == REPORT:
                send(caller, (tag, {"kind": kind, "target": pid_text(target), "events": list(events)}))
            elif request == "ready":
                send(caller, (tag, (target, pong == "ok")))
            else:
                send(caller, (tag, "ok"))


async def witness(target: Pid):
    """Monitor ``target``, a process of this same node, and record how it ended."""
    termite.monitor(target)
    events: list = []
    while True:
        msg = await receive()
        notice = _notice(msg)
        if notice is not None:
            events.append(notice)
            continue
        call = _request(msg)
        if call is not None:
            caller, tag, request = call
            send(caller, (tag, {"target": pid_text(target), "events": list(events)} if request == REPORT else "ok"))


# -- a migrant, and who listens to it ---------------------------------------------


async def migrant(collector: Pid, nodes: list, dwell: float, end_at: float):
    """Until ``end_at``: report ("step", self, k, node, os pid, t), wait ``dwell`` s, migrate to the next node.

    A copy that runs twice reports some step k twice: the collector sees it.
    A refused migration is reported as ("refused", self, k, why, t); the process goes on where it is.
    """
    me = termite.self()
    k = 0
    while time.time() < end_at:
        k += 1
        here = termite.current_node()
        send(collector, ("step", me, k, node_text(here), os.getpid(), time.time()))
        await termite.sleep(dwell)
        there = nodes[(nodes.index(here) + 1) % len(nodes)] if here in nodes else nodes[0]
        try:
            await termite.migrate(there)
        except MigrationError as exc:
            send(collector, ("refused", me, k, str(exc)[:300], time.time()))


async def collector():
    """Record what migrants report, and their ends (the call ("watch", pid) monitors one)."""
    steps: list = []
    refused: list = []
    events: list = []
    while True:
        msg = await receive()
        if msg.__class__ is tuple and msg and msg[0] == "step":
            _, pid, k, node, ospid, t = msg
            steps.append((pid_text(pid), k, node, ospid, t))
            continue
        if msg.__class__ is tuple and msg and msg[0] == "refused":
            _, pid, k, why, t = msg
            refused.append((pid_text(pid), k, why, t))
            continue
        notice = _notice(msg)
        if notice is not None:
            events.append(notice)
            continue
        call = _request(msg)
        if call is None:
            continue
        caller, tag, request = call
        if request == REPORT:
            send(caller, (tag, {"steps": list(steps), "refused": list(refused), "events": list(events)}))
        elif request == "latest":
            send(caller, (tag, steps[-1] if steps else None))
        elif request.__class__ is tuple and request[0] == "watch":
            termite.monitor(request[1])
            send(caller, (tag, "watching"))
        else:
            send(caller, (tag, "ok"))


async def observer(nodes=None):
    """Record NodeUp/NodeDown for ``nodes`` (default every node) as this (the test's) node sees them, and
    stall reports.  Watching each node by name holds its session open (an idle close never suspends it),
    so that a node killed is seen down within the heartbeat timeout; ``monitor_node(None)`` holds none."""
    for node in nodes or [None]:
        termite.monitor_node(node)
    events: list = []
    while True:
        msg = await receive()
        notice = _notice(msg)
        if notice is not None:
            events.append(notice)
            continue
        if msg.__class__ is tuple and msg and msg[0] == "stalled":
            events.append(tuple(msg))
            continue
        call = _request(msg)
        if call is not None:
            caller, tag, request = call
            send(caller, (tag, {"events": list(events)} if request == REPORT else "ok"))


# -- the GIL stall --------------------------------------------------------------


def _sum_rate() -> float:
    """Seconds per item of ``sum(range(n))`` here and now, from a 0.1-0.2 s sample.

    A long sample, not the best of short ones: the stall runs on a machine as
    busy as during the sample, so the two see the same share of a core.
    """
    n = 1_000_000
    t0 = time.perf_counter()
    sum(range(n))
    first = time.perf_counter() - t0
    n = max(n, int(n * 0.15 / max(first, 1e-6)))
    t0 = time.perf_counter()
    sum(range(n))
    return (time.perf_counter() - t0) / n


async def gil_stall(seconds: float, reply_to: Pid):
    """Hold the GIL for about ``seconds`` in one C call, then send ("stalled", node, t0, t1, n) to ``reply_to``.

    ``sum(range(n))`` is a loop in C (builtin sum's fast path over a range
    iterator): no bytecode runs, so the interpreter never offers the GIL to
    another thread, and no signal handler runs, until it returns.  ``n`` is
    calibrated here, just before, and capped so the sum stays a machine word.
    """
    n = min(int(seconds / _sum_rate()), 4_000_000_000)
    t0 = time.time()
    sum(range(n))
    t1 = time.time()
    send(reply_to, ("stalled", node_text(termite.current_node()), t0, t1, n))


async def start_stall(node, seconds: float, reply_to: Pid):
    """Run on the test's node: spawn ``gil_stall`` on ``node`` (without waiting for the shell's turn)."""
    spawn(gil_stall, seconds, reply_to, node=node)


# -- an Executor's call -------------------------------------------------------------


def job(i: int, logpath: str, seconds: float):
    """Append "i pid time" to ``logpath`` (one write, O_APPEND), sleep ``seconds``; return (i * i, pid)."""
    fd = os.open(logpath, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{i} {os.getpid()} {time.time():.6f}\n".encode())
    finally:
        os.close(fd)
    time.sleep(seconds)
    return i * i, os.getpid()


# -- run on the test's node: set up, start, end, and collect --------------------------


async def deploy(refs: dict, pairs: list, burst: int, tick: float, timeout: float = 10.0) -> dict:
    """Start every recorder; return their pids by role.

    ``refs``: node name -> NodeRef; ``pairs``: the ordered (X, Y) pairs of node
    names to connect: one stream X -> Y, and a link, a monitor and a
    spawn_link made on X towards Y.  Every call waits at most ``timeout`` s.
    """
    call = termite.call
    layout = {"streams": [], "watches": []}
    for x, y in pairs:
        receiver = spawn(stream_receiver, node=refs[y])
        sender = spawn(stream_sender, receiver, burst, tick, node=refs[x])
        await call(receiver, ("watch", sender), timeout=timeout)
        await call(sender, "ping", timeout=timeout)
        layout["streams"].append({"from": x, "to": y, "sender": sender, "receiver": receiver})
    for x, y in pairs:
        for kind in ("link", "monitor", "spawn_link"):
            if kind == "spawn_link":
                w = spawn(watcher, kind, refs[y], node=refs[x])
                target, ok = await call(w, "ready", timeout=timeout)
                v = spawn(witness, target, node=refs[y])
                await call(v, "ping", timeout=timeout)
            else:
                target = spawn(link_target, True, node=refs[y])
                w = spawn(watcher, kind, target, node=refs[x])
                _, ok = await call(w, "ready", timeout=timeout)
                v = None
            if not ok:
                raise RuntimeError(f"{kind} watcher on {x} could not reach its target on {y}")
            layout["watches"].append({"kind": kind, "from": x, "to": y, "watcher": w, "target": target, "witness": v})
    return layout


async def go(senders: list, end_at: float, migrants: list, collector_pid: Pid, dwell: float) -> list:
    """Start the streams and the migrants (each [start node, other node]); return the migrants' pids."""
    for sender in senders:
        send(sender, ("go", end_at))
    pids = []
    for nodes in migrants:
        pid = spawn(migrant, collector_pid, nodes, dwell, end_at, node=nodes[0])
        await termite.call(collector_pid, ("watch", pid), timeout=10)
        pids.append(pid)
    return pids


async def finish(targets: list, pause: float):
    """Send "stop" to every target (they end normally), then wait ``pause`` s for what that sets off."""
    for pid in targets:
        send(pid, "stop")
    await termite.sleep(pause)


async def gather(pids: list, timeout: float) -> dict:
    """Call every pid with "report" at once; return {index: record} for those that answered within ``timeout``."""
    me = termite.self()
    tags = {}
    for i, pid in enumerate(pids):
        tag = termite.make_tag()
        tags[tag] = i
        send(pid, (me, tag, REPORT))
    got = {}
    deadline = time.monotonic() + timeout
    while len(got) < len(tags):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        msg = await receive((Tag, ANY), timeout=left, default=None)
        if msg is None:
            break
        i = tags.get(msg[0])
        if i is not None:
            got[i] = msg[1]
    return got


# -- where a process is, as each node sees it (a report on a vanished migrant) -------------


async def whereabouts(pids: list) -> dict:
    """What this node knows of each of ``pids``: running here, moved on, leaving, arriving; and
    where its links and monitors here watch it.  Reads the node's internals: a diagnosis only."""
    from termite._core.process import current
    from termite._move.migration import _Request

    table = current().table
    endpoint = table.remote
    migration = table.kernel.trap_handlers[_Request].__self__
    watches = endpoint.watches
    out = {}
    for pid in pids:
        proc = table.resolve(pid)
        seen = {
            "here": None if proc is None else repr(proc.waiting),
            "moved_to": node_text(table.moved[pid]) if pid in table.moved else None,
            "leaving_to": node_text(migration.leaving[pid].target) if pid in migration.leaving else None,
            "arriving_from": node_text(migration.arriving[pid].source) if pid in migration.arriving else None,
            "handed": None if pid not in migration.handed else node_text(migration.handed[pid][0]),
            "watched_on": sorted({node_text(node) for node, refs in watches._monitors.items()
                                  for _, target in refs.values() if target == pid}),
        }
        out[pid_text(pid)] = {k: v for k, v in seen.items() if v}
    return out


async def _tell_whereabouts(pids: list, reply_to: Pid, name: str):
    send(reply_to, ("whereabouts", name, await whereabouts(pids)))


async def whereabouts_everywhere(refs: dict, pids: list, timeout: float) -> dict:
    """:func:`whereabouts` on this node ("X") and on each node of ``refs`` (name -> ref) that answers."""
    out = {"X": await whereabouts(pids)}
    for name, ref in refs.items():
        spawn(_tell_whereabouts, pids, termite.self(), name, node=ref)
    deadline = time.monotonic() + timeout
    while len(out) <= len(refs) and time.monotonic() < deadline:
        msg = await receive(("whereabouts", str, dict), timeout=max(0.0, deadline - time.monotonic()), default=None)
        if msg is None:
            break
        out[msg[1]] = msg[2]
    return out
