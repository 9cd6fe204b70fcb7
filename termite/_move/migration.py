"""Migration: ``await migrate(node)`` continues the calling process on another node.

The process keeps its pid, its locals (its continuation, termite/_move/continuation.py),
its unread messages, its links and the monitors on it.  The protocol, between
the node it leaves (source) and the node it goes to (target):

1. The process yields a request to the kernel; the source captures its
   continuation and state.  If something cannot travel, ``migrate`` raises
   ``MigrationError`` there and the process goes on where it was.
2. The source sends MIGRATE(pid, continuation, mailbox, links, monitors,
   trap_exit, order, held) and parks the process: what arrives for it now
   waits.  ``held``: the monitors it holds, which stay where they were made;
   the target undoes them (DEMONITOR to the watched process's node) when the
   process demonitors or ends there, as its own.
3. The target rebuilds the process and holds it, not running, and answers
   READY; or REFUSED(reason) (another Python, other code): the source then
   raises ``MigrationError`` in the process, which keeps its messages and runs
   on.  A target lost before READY counts as a refusal.
4. On READY the source *commits*: it drops its copy without running its
   ``finally`` blocks (they run on the target), sends COMMIT, records the
   target in its migration table (``table.moved``), and passes on what
   waited and every later frame for that pid.  Links and monitors between
   the process and others follow: the target tells the nodes of linked and
   watching processes where it now is (RELOCATED), so a lost node fires
   ``noconnection`` for what really was on it.
5. On COMMIT the target runs the process, and answers ARRIVED if the source
   asked (it does when other nodes link to or watch the process).  A target
   that loses the source before COMMIT drops the copy it holds.
6. When the process ends, its last node tells every node that keeps an entry
   for it (GONE), and they forget it.

One copy: the source resumes the process only if it never committed, and the
target runs it only once committed.  Both decisions are fenced by the
node-pair session (termite._net.sessions): a READY or COMMIT sent in a
session that has ended (the other side declared a down) is never delivered,
and both sides run their node-down, so a source that resumed the process
after losing the target never meets a target that runs it, and a target that
dropped its copy never meets a source that committed.  A process can only
end with no copy when the session ended between COMMIT and its arrival:
then, as for any process of a lost node, its links and monitors on the
source fire ``noconnection``, and the source tells the other nodes that
still watch it there (LOST_IN_HANDOFF), which fire theirs.  If the commit
did arrive, the target's RELOCATED has moved those to the target, or the
process's own end notice finds them fired and is dropped: once either way.

Messages to a process that has migrated are numbered, so each sender's
messages reach it in order whatever path each took (termite._move.forwarding).

``migrate(node, fn, *args)`` is the explicit form: the process continues on
``node`` by calling ``fn(*args)`` as its new body (same pid, mailbox, links);
it needs no frame capture and works on any Python.
"""

from __future__ import annotations

import logging
import types
from collections import deque

from termite._core.errors import MigrationError
from termite._core.ids import NodeRef, Pid, Tag
from termite._core.kernel import Signal
from termite._core.links import hold_monitors, settle_calls, signal_exit
from termite._core.process import DEAD, Process, ProcessTable, current
from termite._core.spawn import process_body
from termite._core.traps import Sentinel
from termite._net.codec import MalformedMessage, UnserializableMessage, decode, decode_frame_lenient, encode, first_unreadable
from termite._net.endpoint import Endpoint, still_holds
from termite._net.frames import LINK, MONITOR, is_count, is_node, is_pid, is_tag
from termite._move.continuation import abandon, capture, restore, supported
from termite._move.forwarding import LOCATED, Forwarding
from termite._move.ordering import Order
from termite._move.outcome import hand_over, own, report

__all__ = ["migrate", "Migration"]

log = logging.getLogger("termite.migration")

MIGRATE, READY, REFUSED, GONE, RELOCATED = range(16, 21)  # 21-23: termite._move.forwarding's
COMMIT, ARRIVED, LOST_IN_HANDOFF = 24, 25, 26
FENCE, FENCED = 27, 28
MIGRATING = Sentinel("migrating")  # parked while the target rebuilds it


class _Request:
    """What a migrating process yields to the kernel."""

    __slots__ = ("node", "fn", "args")

    def __init__(self, node: NodeRef, fn, args: tuple):
        self.node, self.fn, self.args = node, fn, args


@types.coroutine
def _trap(request: _Request):
    return (yield request)


def migrate(node: NodeRef, fn=None, *args):
    """Continue this process on ``node``: ``await migrate(node)`` returns there, with the new node.

    The process keeps its pid, locals and unread messages.  With ``fn``,
    the process continues by calling ``fn(*args)`` on ``node`` instead, and
    ``migrate`` does not return.  Raises ``MigrationError`` (and the process
    stays where it was) when its state cannot travel or ``node`` refuses it.
    A plain function returning the awaitable: it adds no frame of its own to
    the continuation.
    """
    me = current()
    if node.__class__ is not NodeRef or node.incarnation is None:
        raise TypeError(f"migrate() needs a node reference from termite.connect() or nodes(), not {node!r}")
    if me.table.remote is None:  # a node on its own: the only place to go is here
        if node != me.table.ref:
            raise MigrationError(f"cannot migrate to {node}: this node is not connected to other nodes")
        me.kernel.trap_handlers.setdefault(_Request, _stay_here)
    return _trap(_Request(node, fn, args))


def _stay_here(proc: Process, request: _Request) -> None:
    """A move to the node the process is on: it continues here (with ``fn``, as its new body)."""
    if request.fn is None:
        proc.kernel.wake(proc, proc.table.ref)
    else:
        proc.coro.close()
        proc.coro = process_body(request.fn, request.args)
        proc.kernel.wake(proc, None)



class _Leaving:
    """A process parked while its target rebuilds it."""

    __slots__ = ("proc", "target", "mailbox", "frames", "links", "monitors", "fences", "ready")

    def __init__(self, proc: Process, target: NodeRef, mailbox: list, fences: set[NodeRef]):
        self.proc, self.target, self.mailbox = proc, target, mailbox
        # The other nodes it sent frames to from here: the commit waits until each has read them (FENCED),
        # so that what it sends from the target cannot overtake them.  ready: the target said READY.
        self.fences, self.ready = fences, False
        self.frames: list[tuple[NodeRef, tuple]] = []  # numbered messages that came meanwhile, with their peer
        # The links and monitors that went with it: those gone by the commit (a node lost, an unlink) go there too.
        self.links, self.monitors = set(proc.links or ()), set(proc.monitors or ())


class _Arriving:
    """A process rebuilt here, not running until its source commits."""

    __slots__ = ("proc", "source", "value", "held")

    def __init__(self, proc: Process, source: NodeRef, value, held: list):
        self.proc, self.source, self.value = proc, source, value
        self.held = held  # [(ref, target, holder)]: the monitors it holds, made before it came, and where watched


def _is_held(x) -> bool:
    """A MIGRATE frame's monitors held: a list of [ref, target pid, the node holding its watch]."""
    return x.__class__ is list and all(
        m.__class__ in (list, tuple) and len(m) == 3 and is_tag(m[0]) and is_pid(m[1]) and is_node(m[2]) for m in x)


def _drop(coro) -> None:
    """Drop a copy of a process that runs elsewhere: without running its ``finally`` blocks where
    live migration can; else (``migrate(node, fn)`` on a Python without termite._move._framestate)
    its body just ends, as a closed coroutine does."""
    if supported():
        abandon(coro)
    else:
        try:
            coro.close()
        except BaseException:  # noqa: BLE001 - a finally block that awaited or raised: it ends anyway
            pass


def _is_continuation(c) -> bool:
    return c.__class__ is tuple and len(c) == 2


def _is_list(x) -> bool:
    return x.__class__ is list


def _is_pids(x) -> bool:
    return x.__class__ is list and all(p.__class__ is Pid for p in x)


def _decode_call(data: bytes, here: NodeRef):
    """``migrate(node, fn, *args)``'s function and arguments; a MigrationError naming what cannot be unpickled."""
    try:
        return decode(data)
    except MalformedMessage:
        try:
            bad = first_unreadable(decode_frame_lenient(data, f"node {here}"))
        except MalformedMessage:
            bad = None
        if bad is None:
            raise
        raise MigrationError(bad.reason) from None


class Migration:
    """A node's side of the handoff: the kernel's migrate trap and the frames."""

    def __init__(self, table: ProcessTable, endpoint: Endpoint):
        self.table = table
        self.endpoint = endpoint
        self.kernel = table.kernel
        self.forwarding = Forwarding(table, endpoint)
        self.leaving: dict[Pid, _Leaving] = {}
        self.arriving: dict[Pid, _Arriving] = {}  # rebuilt here, held until the source commits
        # Committed, not yet known to run there: pid -> (target, the other nodes that watch it here)
        self.handed: dict[Pid, tuple[NodeRef, set[NodeRef]]] = {}
        self.kernel.trap_handlers[_Request] = self._on_request
        kinds = endpoint.kinds
        kinds.register(MIGRATE, "MIGRATE", (is_pid, _is_continuation, _is_list, _is_list, _is_list,
                                            lambda t: t.__class__ is bool, _is_list, _is_held), self._on_migrate)
        kinds.register(READY, "READY", (is_pid,), self._on_ready)
        kinds.register(COMMIT, "COMMIT", (is_pid, _is_list, _is_list, lambda a: a.__class__ is bool, _is_pids),
                       self._on_commit)
        kinds.register(ARRIVED, "ARRIVED", (is_pid,), self._on_arrived)
        kinds.register(LOST_IN_HANDOFF, "LOST_IN_HANDOFF", (is_pid, is_node), self._on_lost_in_handoff)
        kinds.register(REFUSED, "REFUSED", (is_pid, lambda r: r.__class__ is str), self._on_refused)
        kinds.register(GONE, "GONE", (is_pid,), self._on_gone)
        kinds.register(RELOCATED, "RELOCATED", (is_pid, is_node, is_count), self._on_relocated)
        kinds.register(FENCE, "FENCE", (is_pid,), self._on_fence)
        kinds.register(FENCED, "FENCED", (is_pid,), self._on_fenced)
        endpoint.on_peer_down(self._on_peer_down)
        endpoint.holds_sessions(self._in_handoff_with)

    def _in_handoff_with(self, peer: NodeRef) -> bool:
        """A handoff to or from ``peer`` is under way: its session must not be suspended (idle close)."""
        return (any(e.target == peer for e in self.leaving.values())
                or any(a.source == peer for a in self.arriving.values())
                or any(target == peer or peer in others for target, others in self.handed.values()))

    # -- leaving --------------------------------------------------------------

    def _on_request(self, proc: Process, request: _Request) -> None:
        table = self.table
        if request.node == table.ref:
            return _stay_here(proc, request)
        pid = proc.pid
        order = proc.order or Order()
        if table.ref not in order.visited:
            order.visited.append(table.ref)
        settle_calls(proc)  # its monitors go with it, those of calls in flight to it too
        try:
            if proc.name is not None:
                raise MigrationError(f"{pid} is registered here as {proc.name!r}; unregister it before migrating")
            if request.fn is None:
                continuation = ("coro", capture(proc.coro))
            else:
                continuation = ("call", encode((request.fn, request.args)))
            mailbox = list(proc.mailbox or ())
            # The monitors it holds and that have not fired: undone from where it ends (termite._core.links),
            # each with the node that holds its watch (this one, or the one it was made on).
            held = self._held(proc)
            frame = encode(
                (
                    MIGRATE,
                    pid,
                    continuation,
                    mailbox,
                    list(proc.links or ()),
                    list((proc.monitors or {}).items()),
                    proc.trap_exit,
                    list(order.state()),
                    held,
                )
            )
        except (MigrationError, UnserializableMessage) as exc:
            error = exc if isinstance(exc, MigrationError) else MigrationError(f"cannot migrate {pid}: {exc}")
            self.kernel.wake(proc, Signal(error))
            return
        if proc.order is None:  # its first move: from now on its messages are numbered
            proc.order = order
            self.forwarding.numbered.setdefault(pid, 0)
            table.when_exits(pid, self._ends(proc))
        pid._proc = None  # local sends take the numbered path too
        proc.waiting = MIGRATING
        proc.mailbox = deque()  # what is delivered meanwhile
        # Frames to the target go before MIGRATE on one connection; those to other nodes may still be
        # on their way, and its next ones from the target would take other connections.
        live = set(self.endpoint.transport.peers()) if proc.sent_to else ()  # a node lost since: its down said so
        fences = {node for node in proc.sent_to or () if node != request.node and node in live}
        entry = self.leaving[pid] = _Leaving(proc, request.node, mailbox, fences)
        self.forwarding.in_transit[pid] = entry.frames
        self.endpoint.post_encoded(request.node, frame)
        for node in fences:
            self.endpoint.post(node, (FENCE, pid))
        proc.sent_to = None

    def _on_fence(self, peer: NodeRef, frame) -> None:
        """Every frame ``peer`` sent before this one has been read here: say so."""
        self.endpoint.post(peer, (FENCED, frame[1]))

    def _on_fenced(self, peer: NodeRef, frame) -> None:
        entry = self.leaving.get(frame[1])
        if entry is not None and peer in entry.fences:
            entry.fences.discard(peer)
            self._depart_when_fenced(entry)

    def _depart_when_fenced(self, entry: _Leaving) -> None:
        if entry.ready and not entry.fences:
            self._unpark(entry.proc.pid)
            self._depart(entry)

    def _on_ready(self, peer: NodeRef, frame) -> None:
        entry = self.leaving.get(frame[1])
        if entry is not None and entry.target == peer:
            entry.ready = True
            self._depart_when_fenced(entry)

    def _unpark(self, pid: Pid) -> _Leaving | None:
        self.forwarding.in_transit.pop(pid, None)
        return self.leaving.pop(pid, None)

    def _depart(self, entry: _Leaving) -> None:
        """The target holds the process: commit, drop this copy and send on what came for it."""
        proc, target = entry.proc, entry.target
        table, endpoint = self.table, self.endpoint
        table.counters["migrations_out"] += 1
        settle_calls(proc)  # calls to it made while it was in transit
        # First: the frames below are for the running process.  With it, what went and is gone since:
        # a link or monitor of a node lost meanwhile (it fired here), or undone.
        gone_links = [other for other in entry.links if other not in (proc.links or ())]
        gone_monitors = [ref for ref in entry.monitors if ref not in (proc.monitors or {})]
        watchers = self._other_nodes(proc, target)
        if watchers:  # they must hear of it if the commit never arrives
            self.handed[proc.pid] = (target, watchers)
        proc.order.awaiting.extend(hand_over(table, proc.pid))  # node.run's and termite.run's wait goes on
        endpoint.post(target, (COMMIT, proc.pid, gone_links, gone_monitors, bool(watchers), proc.order.awaiting))
        for node in watchers:
            # The target says so too once it runs the process, but its word may be lost with it (a
            # cut that lets ARRIVED through and not RELOCATED): said from here, a watch follows the
            # process even then, and the target's loss fires it.
            endpoint.post(node, (RELOCATED, proc.pid, target, proc.order.gen + 1))
        _drop(proc.coro)
        waiting = proc.mailbox
        pid = proc.pid  # the canonical pid, which local senders hold
        table.remove(pid)
        table.moved[pid] = target
        self.forwarding.gens[pid] = proc.order.gen + 1
        self.forwarding.holding.discard(proc)
        pid._proc = None
        proc.coro = proc.mailbox = None
        proc.waiting = DEAD
        # What stays here and was bound to the process now reaches it over the
        # network.  Links and monitors made while it was in transit are not in
        # what went: repeat them all (the target adds each once).
        endpoint.watches.forget_local(pid)  # its links and watchers are the target's to keep now
        for ref in proc.watching or ():  # those it brought here go on with it
            endpoint.carried.pop(ref, None)
        for other in proc.links or ():
            if table.is_local(other):
                endpoint.watches.add_link(target, other, pid)
            endpoint.post(target, (LINK, other, pid))
        for ref, watcher in (proc.monitors or {}).items():
            if table.monitored.pop(ref, None) is not None:
                endpoint.watches.add_monitor(target, ref, watcher, pid)
            endpoint.post(target, (MONITOR, watcher, pid, ref))
        for _, numbered in entry.frames:
            endpoint.post(target, numbered)
        for msg in waiting:  # exit signals and Downs delivered meanwhile: numbered now
            endpoint.send(pid, msg)

    def _held(self, proc: Process) -> list[tuple[Tag, Pid, NodeRef]]:
        """The monitors ``proc`` holds and that have not fired: (ref, target, the node holding its watch)."""
        table, endpoint = self.table, self.endpoint
        held = []
        for ref, target in (proc.watching or {}).items():
            if ref in table.monitored or endpoint.watches.holds_monitor(ref):
                held.append((ref, target, table.ref))
            elif (carried := endpoint.carried.get(ref)) is not None:
                held.append((ref, target, carried[2]))
        return held

    def _other_nodes(self, proc: Process, target: NodeRef) -> set[NodeRef]:
        """The nodes, besides this one and ``target``, of processes linked to or watching ``proc``."""
        table, route = self.table, self.endpoint.route
        nodes = {route(other) for other in proc.links or () if not table.is_local(other)}
        nodes.update(route(watcher) for watcher in (proc.monitors or {}).values() if not table.is_local(watcher))
        nodes.discard(target)
        return nodes

    def _on_arrived(self, peer: NodeRef, frame) -> None:
        handed = self.handed.get(frame[1])
        if handed is not None and handed[0] == peer:
            del self.handed[frame[1]]

    def _on_lost_in_handoff(self, peer: NodeRef, frame) -> None:
        """``pid`` left ``peer`` for ``target``, which ``peer`` then lost: what watches it on either fires now."""
        _, pid, target = frame
        watches = self.endpoint.watches
        self.endpoint.fire(watches.take_target(pid, peer))
        self.endpoint.fire(watches.take_target(pid, target))
        self.kernel.kick()

    def _on_refused(self, peer: NodeRef, frame) -> None:
        _, pid, reason = frame
        self._stay(pid, MigrationError(f"{peer} refused {pid}: {reason}"))

    def _stay(self, pid: Pid, error: MigrationError) -> None:
        entry = self._unpark(pid)
        if entry is None:
            return
        proc = entry.proc
        proc.mailbox = deque([*entry.mailbox, *proc.mailbox])
        proc.waiting = None
        for peer, frame in entry.frames:
            self.forwarding.accept(proc, peer, frame)
        self.kernel.wake(proc, Signal(error))
        self.kernel.kick()

    # -- arriving -------------------------------------------------------------

    def _on_migrate(self, peer: NodeRef, frame) -> None:
        _, pid, (how, data), mailbox, links, monitors, trap_exit, state, held = frame
        table = self.table
        try:
            if table.resolve(pid) is not None or pid in self.arriving:
                raise MigrationError(f"{pid} already runs here")
            order = Order.from_state(state)
            if how == "coro":
                coro, value = restore(data), table.ref
            elif how == "call":
                fn, args = _decode_call(data, table.ref)
                coro, value = process_body(fn, args), None
            else:
                raise MigrationError(f"an unknown kind of continuation {how!r}")
        except Exception as exc:  # noqa: BLE001 - the source learns why, and keeps the process
            log.warning("refused %s from %s: %s", pid, peer, exc)
            self.endpoint.post(peer, (REFUSED, pid, f"{type(exc).__name__}: {exc}"))
            return
        proc = Process(table, pid, coro)  # pid._proc stays None: sends to it are numbered
        proc.order = order
        proc.mailbox = deque(mailbox) if mailbox else None
        proc.trap_exit = trap_exit
        proc.links = set(links) or None
        proc.monitors = {ref: watcher for ref, watcher in monitors} or None
        self.arriving[pid] = _Arriving(proc, peer, value, [tuple(m) for m in held])
        self.endpoint.post(peer, (READY, pid))

    def _on_commit(self, peer: NodeRef, frame) -> None:
        """The source has dropped its copy: the process runs here from now on."""
        entry = self.arriving.get(frame[1])
        if entry is None or entry.source != peer:
            log.warning("a commit of %s from %s, which is not held for it here", frame[1], peer)
            return
        del self.arriving[frame[1]]
        table, proc = self.table, entry.proc
        _, _, gone_links, gone_monitors, answer, awaiting = frame
        proc.order.awaiting = list(awaiting)
        for other in gone_links:
            if proc.links:
                proc.links.discard(other)
        for ref in gone_monitors:
            if proc.monitors:
                proc.monitors.pop(ref, None)
        pid, order = proc.pid, proc.order
        table.counters["migrations_in"] += 1
        order.gen += 1
        if table.ref not in order.visited:
            order.visited.append(table.ref)
        table.add(proc)
        table.moved.pop(pid, None)  # it lived here before: here again
        self.forwarding.gens.pop(pid, None)
        self.forwarding.start_numbering(pid)
        table.when_exits(pid, self._ends(proc))
        if order.held:
            self.forwarding.holding.add(proc)
        if entry.held:
            here = table.ref  # back where it made some: those watches are this node's own again
            self.endpoint.carried.update(
                (ref, (target, pid, holder)) for ref, target, holder in entry.held if holder != here)
            hold_monitors(proc, [(ref, target) for ref, target, _ in entry.held])
        lost = self._bind(proc, peer)
        if answer:  # after the RELOCATEDs: the source need not tell the other nodes any more
            self.endpoint.post(peer, (ARRIVED, pid))
        self.kernel.wake(proc, entry.value)
        for other in lost:  # linked to a process of a node lost while this one travelled
            signal_exit(proc, other, "noconnection")

    def _bind(self, proc: Process, source: NodeRef) -> list[Pid]:
        """Re-point links and monitors between ``proc`` and others at this node; return the
        linked processes whose node this one has lost meanwhile (their links fire)."""
        table, endpoint = self.table, self.endpoint
        pid = proc.pid
        for ref in endpoint.watches.forget_target(pid):  # local partners no longer need the network
            table.monitored[ref] = proc
        partners, lost = set(), []
        for other in list(proc.links or ()):
            if not table.is_local(other):
                node = endpoint.route(other)
                if endpoint.transport.lost(node):  # its down here came before the process did
                    proc.links.discard(other)
                    lost.append(other)
                    continue
                endpoint.watches.add_link(node, pid, other)
                partners.add(node)
        for ref, watcher in list((proc.monitors or {}).items()):
            if table.is_local(watcher):
                table.monitored[ref] = proc
            else:
                # Kept even if this node has lost the watcher's since: the monitor was not between
                # the two at that down, and the watcher's node may not have fired it.  If it did,
                # it drops the Down this one sends at the end (Watches.settled).
                node = endpoint.route(watcher)
                endpoint.watches.add_watcher(node, ref, pid)
                partners.add(node)
        partners.discard(source)  # it knows: it committed
        for node in partners:
            endpoint.post(node, (RELOCATED, pid, table.ref, proc.order.gen))
        return lost

    def _on_relocated(self, peer: NodeRef, frame) -> None:
        """``pid`` now lives on ``node``: links and monitors to it watch that node."""
        _, pid, node, moves = frame
        self.endpoint.watches.move_target(pid, node, moves)

    # -- the end ----------------------------------------------------------------

    def _ends(self, proc: Process):
        """The exit waiter a migrant has on the node it runs on."""
        return own(lambda value, reason, exc: self._gone(proc, value, reason))

    def _gone(self, proc: Process, value, reason) -> None:
        """A migrant ended here: every node that keeps an entry for it forgets it; those who wait for
        its outcome get it."""
        pid, here = proc.pid, self.table.ref
        report(self.table, pid, proc.order.awaiting, value, reason)
        self.forwarding.forget(pid)
        for node in {*proc.order.visited, *proc.order.informed}:
            if node != here:
                self.endpoint.post(node, (GONE, pid))

    def _on_gone(self, peer: NodeRef, frame) -> None:
        self.forwarding.forget(frame[1])

    def _watch_carried(self, lost: NodeRef) -> None:
        """Node ``lost`` held the watch of monitors that migrants here hold of a third node's processes: this
        node takes them over.  That node learns where the migrant is (LOCATED), so the Down of the
        process's end comes here, and the monitor is made again from here (a process that ended
        meanwhile answers "noproc"); this node's loss of that node fires it.  (Those of ``lost``'s own
        processes fired already, in the endpoint's down; those of processes here need no watch.)"""
        endpoint, table, here = self.endpoint, self.table, self.table.ref
        for ref, (target, watcher, holder) in list(endpoint.carried.items()):
            node = endpoint.route(target)
            if holder != lost or node == here:
                continue
            del endpoint.carried[ref]
            proc = table.resolve(watcher)
            if proc is not None and proc.order is not None and still_holds(proc, ref):
                endpoint.post(node, (LOCATED, watcher, here, proc.order.gen))
                endpoint.monitor(watcher, target, ref)

    def _on_peer_down(self, peer: NodeRef) -> None:
        for pid, entry in list(self.arriving.items()):
            if entry.source == peer:  # it never committed: the process runs on there, if anywhere
                del self.arriving[pid]
                _drop(entry.proc.coro)
        for pid, (target, watchers) in list(self.handed.items()):
            if target == peer:  # committed, and the commit may never have arrived
                del self.handed[pid]
                for node in watchers:
                    self.endpoint.post(node, (LOST_IN_HANDOFF, pid, target))
        for pid, entry in list(self.leaving.items()):
            if entry.target == peer:
                self._stay(pid, MigrationError(f"cannot migrate {pid}: node {peer} was lost before it answered"))
            elif peer in entry.fences:  # what it sent there is lost with the session, and a down says so
                entry.fences.discard(peer)
                self._depart_when_fenced(entry)
        self._watch_carried(peer)
        self.forwarding.release_held(peer)
        self.kernel.kick()
