"""Migration: ``await migrate(node)`` continues the calling process on another node.

The process keeps its pid, its locals (its continuation, termite/_continuation.py),
its unread messages, its links and the monitors on it.  The protocol, between
the node it leaves (source) and the node it goes to (target):

1. The process yields a request to the kernel; the source captures its
   continuation and state.  If something cannot travel, ``migrate`` raises
   ``MigrationError`` there and the process goes on where it was.
2. The source sends MIGRATE(pid, continuation, mailbox, links, monitors,
   trap_exit, order) and parks the process: what arrives for it now waits.
3. The target rebuilds the process and answers MIGRATED, or REFUSED(reason)
   (another Python, other code): the source then raises ``MigrationError`` in
   the process, which keeps its messages and runs on.  A target lost before
   it answers counts as a refusal.
4. On MIGRATED the source drops its copy without running its ``finally``
   blocks (they run on the target), records the target in its migration table
   (``table.moved``), and passes on what waited and every later frame for
   that pid.  Links and monitors between the process and others follow: the
   target tells the nodes of linked and watching processes where it now is
   (RELOCATED), so a lost node fires ``noconnection`` for what really was on it.
5. When the process ends, its last node tells every node that keeps an entry
   for it (GONE), and they forget it.

Messages to a process that has migrated are numbered (SEQ frames), so each
sender's messages reach it in the order they were sent, whatever path each
took (termite/_ordering.py).  A node that passed a message on is not the one
that tells its sender: the process's host, receiving a message that came the
long way, tells its origin where it is (LOCATED, with the number of moves, so
older news never overrides newer), and later ones go straight there.

``migrate(node, fn, *args)`` is the explicit form: the process continues on
``node`` by calling ``fn(*args)`` as its new body (same pid, mailbox, links);
it needs no frame capture and works on any Python.
"""

from __future__ import annotations

import logging
import types
from collections import deque

from termite._codec import UnserializableMessage, decode, encode
from termite._continuation import abandon, capture, restore
from termite._distribution import LINK, MONITOR, SEND, Remote, register_frame
from termite._errors import MigrationError
from termite._ids import NodeRef, Pid
from termite._kernel import Signal
from termite._mailbox import deliver
from termite._node import RUNTIME_EXTENSIONS
from termite._ordering import DIRECT, RELAYED, SWITCH, Order
from termite._process import DEAD, Process, ProcessTable, current
from termite._spawn import _body
from termite._traps import Sentinel

__all__ = ["migrate", "Migration"]

log = logging.getLogger("termite.migration")

MIGRATE, MIGRATED, REFUSED, GONE, RELOCATED, SEQ, SWITCHED, LOCATED = range(16, 24)
MIGRATING = Sentinel("migrating")  # parked while the target rebuilds it


def _pid(x) -> bool:
    return x.__class__ is Pid


def _list(x) -> bool:
    return x.__class__ is list


def _node(x) -> bool:
    return x.__class__ is NodeRef and x.incarnation is not None


def _count(x) -> bool:
    return x.__class__ is int and x >= 0


register_frame(MIGRATE, "MIGRATE", (_pid, lambda c: c.__class__ is tuple and len(c) == 2, _list, _list, _list, lambda t: t.__class__ is bool, _list))
register_frame(MIGRATED, "MIGRATED", (_pid,))
register_frame(REFUSED, "REFUSED", (_pid, lambda r: r.__class__ is str))
register_frame(GONE, "GONE", (_pid,))
register_frame(RELOCATED, "RELOCATED", (_pid, _node))


def _seq_passes(frame) -> bool:
    return (
        len(frame) == 6
        and frame[1].__class__ is Pid
        and (frame[3] is None or _node(frame[3]))
        and frame[4] in (DIRECT, RELAYED, SWITCH)
        and frame[5].__class__ is int
        and frame[5] > 0
    )


# to pid, message, origin node (None: the peer it came from), via (DIRECT,
# RELAYED or SWITCH), its number in its stream
register_frame(
    SEQ,
    "SEQ",
    (_pid, lambda m: True, lambda o: o is None or _node(o), lambda v: v in (DIRECT, RELAYED, SWITCH), lambda n: _count(n) and n > 0),
    passes=_seq_passes,
)
register_frame(SWITCHED, "SWITCHED", (_pid,))  # the sender numbers its own messages to pid from now on
register_frame(LOCATED, "LOCATED", (_pid, _node, _count))  # pid is on node, after that many moves


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
        proc.coro = _body(request.fn, request.args)
        proc.kernel.wake(proc, None)


class _Leaving:
    """A process parked while its target rebuilds it."""

    __slots__ = ("proc", "target", "mailbox", "frames")

    def __init__(self, proc: Process, target: NodeRef, mailbox: list):
        self.proc, self.target, self.mailbox = proc, target, mailbox
        self.frames: list[tuple[NodeRef, tuple]] = []  # numbered messages that came meanwhile, with their peer


#: How many ended migrants a node remembers, so late news of one does not bring it back.
_REMEMBER_GONE = 4096


class Migration:
    """A node's side of the protocol: the kernel's migrate trap and the frames."""

    def __init__(self, table: ProcessTable, remote: Remote):
        self.table = table
        self.remote = remote
        self.kernel = table.kernel
        self.leaving: dict[Pid, _Leaving] = {}
        self.numbered = remote.numbered  # pid -> how many messages this node has sent it
        self.relayed: dict[Pid, dict[NodeRef, int]] = {}  # at a migrant's home: the same, for other nodes' plain ones
        self.gens: dict[Pid, int] = {}  # pid -> the moves behind its entry in table.moved
        self.holding: set[Process] = set()  # migrants here with messages held back
        self.gone: dict[Pid, None] = {}  # the last migrants that ended, oldest first
        self.kernel.trap_handlers[_Request] = self._on_request
        table.send_to_migrant = self._send_here
        remote.send_numbered = self._send_there
        remote.receive_unnumbered = self._relay
        remote.handlers.update(
            {
                MIGRATE: self._on_migrate,
                MIGRATED: self._on_migrated,
                REFUSED: self._on_refused,
                GONE: self._on_gone,
                RELOCATED: self._on_relocated,
                SEQ: self._on_seq,
                SWITCHED: self._on_switched,
                LOCATED: self._on_located,
            }
        )
        remote.on_peer_down_hooks.append(self._on_peer_down)

    # -- leaving --------------------------------------------------------------

    def _on_request(self, proc: Process, request: _Request) -> None:
        table = self.table
        if request.node == table.ref:
            return _stay_here(proc, request)
        pid = proc.pid
        order = proc.order or Order()
        if table.ref not in order.visited:
            order.visited.append(table.ref)
        try:
            if proc.name is not None:
                raise MigrationError(f"{pid} is registered here as {proc.name!r}; unregister it before migrating")
            if request.fn is None:
                continuation = ("coro", capture(proc.coro))
            else:
                continuation = ("call", encode((request.fn, request.args)))
            mailbox = list(proc.mailbox or ())
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
                )
            )
        except (MigrationError, UnserializableMessage) as exc:
            error = exc if isinstance(exc, MigrationError) else MigrationError(f"cannot migrate {pid}: {exc}")
            self.kernel.wake(proc, Signal(error))
            return
        if proc.order is None:  # its first move: from now on its messages are numbered
            proc.order = order
            self.numbered.setdefault(pid, 0)
            table.exit_waiters.setdefault(pid, []).append(lambda *_: self._gone(proc))
        pid._proc = None  # local sends take the numbered path too
        proc.waiting = MIGRATING
        proc.mailbox = deque()  # what is delivered meanwhile
        self.leaving[pid] = _Leaving(proc, request.node, mailbox)
        self.remote._queue(request.node, frame)

    def _on_migrated(self, peer: NodeRef, frame) -> None:
        entry = self.leaving.pop(frame[1], None)
        if entry is not None:
            self._depart(entry)

    def _depart(self, entry: _Leaving) -> None:
        """The target has the process: drop this copy and send on what came for it."""
        proc, target = entry.proc, entry.target
        table, remote = self.table, self.remote
        table.counters["migrations_out"] += 1
        abandon(proc.coro)
        waiting = proc.mailbox
        pid = proc.pid  # the canonical pid, which local senders hold
        if pid.node == table.ref:
            table.procs.pop(pid.serial, None)
        else:
            table.guests.pop(pid, None)
        table.exit_waiters.pop(pid, None)  # it ends elsewhere now
        table.moved[pid] = target
        self.gens[pid] = proc.order.gen + 1
        self.holding.discard(proc)
        pid._proc = None
        proc.coro = proc.mailbox = None
        proc.waiting = DEAD
        # What stays here and was bound to the process now reaches it over the
        # network.  Links and monitors made while it was in transit are not in
        # what went: repeat them all (the target adds each once).
        for other in proc.links or ():
            if table.is_local(other):
                remote.links_to.setdefault(target, set()).add((other, pid))
            remote._frame(target, (LINK, other, pid))
        for ref, watcher in (proc.monitors or {}).items():
            if table.monitored.pop(ref, None) is not None:
                remote.monitors_to.setdefault(target, {})[ref] = (watcher, pid)
                remote.monitor_node_of[ref] = target
            remote._frame(target, (MONITOR, watcher, pid, ref))
        for _, numbered in entry.frames:
            remote._frame(target, numbered)
        for msg in waiting:  # exit signals and Downs delivered meanwhile: numbered now
            remote.send(pid, msg)

    def _on_refused(self, peer: NodeRef, frame) -> None:
        _, pid, reason = frame
        self._stay(pid, MigrationError(f"{peer} refused {pid}: {reason}"))

    def _stay(self, pid: Pid, error: MigrationError) -> None:
        entry = self.leaving.pop(pid, None)
        if entry is None:
            return
        proc = entry.proc
        proc.mailbox = deque([*entry.mailbox, *proc.mailbox])
        proc.waiting = None
        for peer, frame in entry.frames:
            self._accept(proc, peer, frame)
        self.kernel.wake(proc, Signal(error))
        self.kernel.kick()

    # -- arriving -------------------------------------------------------------

    def _on_migrate(self, peer: NodeRef, frame) -> None:
        _, pid, (how, data), mailbox, links, monitors, trap_exit, state = frame
        table, remote = self.table, self.remote
        try:
            if table.resolve(pid) is not None:
                entry = self.leaving.pop(pid, None)
                if entry is None:
                    raise MigrationError(f"{pid} already runs here")
                self._depart(entry)  # it left and came back before its target's MIGRATED did
            order = Order.from_state(state)
            if how == "coro":
                coro, value = restore(data), table.ref
            elif how == "call":
                fn, args = decode(data)
                coro, value = _body(fn, args), None
            else:
                raise MigrationError(f"an unknown kind of continuation {how!r}")
        except Exception as exc:  # noqa: BLE001 - the source learns why, and keeps the process
            log.warning("refused %s from %s: %s", pid, peer, exc)
            remote._frame(peer, (REFUSED, pid, f"{type(exc).__name__}: {exc}"))
            return
        proc = Process(table, pid, coro)  # pid._proc stays None: sends to it are numbered
        table.counters["migrations_in"] += 1
        order.gen += 1
        if table.ref not in order.visited:
            order.visited.append(table.ref)
        proc.order = order
        if pid.node == table.ref:
            table.procs[pid.serial] = proc
        else:
            table.guests[pid] = proc
        table.moved.pop(pid, None)  # it lived here before: here again
        self.gens.pop(pid, None)
        if pid not in self.numbered:  # this node learns that pid moves
            self.numbered[pid] = 0
            if pid.node != table.ref:
                remote._frame(pid.node, (SWITCHED, pid))
        table.exit_waiters.setdefault(pid, []).append(lambda *_: self._gone(proc))
        proc.mailbox = deque(mailbox) if mailbox else None
        proc.trap_exit = trap_exit
        proc.links = set(links) or None
        proc.monitors = {ref: watcher for ref, watcher in monitors} or None
        if order.held:
            self.holding.add(proc)
        self._bind(proc, peer)
        self.kernel.wake(proc, value)
        remote._frame(peer, (MIGRATED, pid))

    def _bind(self, proc: Process, source: NodeRef) -> None:
        """Re-point links and monitors between ``proc`` and others at this node."""
        table, remote = self.table, self.remote
        pid = proc.pid
        for pairs in remote.links_to.values():  # local partners no longer need the network
            pairs.difference_update([pair for pair in pairs if pair[1] == pid])
        for node, watched in list(remote.monitors_to.items()):
            for ref in [ref for ref, (_, target) in watched.items() if target == pid]:
                del watched[ref]
                remote.monitor_node_of.pop(ref, None)
                table.monitored[ref] = proc
        partners = set()
        for other in proc.links or ():
            if not table.is_local(other):
                node = remote.route(other)
                remote.links_to.setdefault(node, set()).add((pid, other))
                partners.add(node)
        for ref, watcher in (proc.monitors or {}).items():
            if table.is_local(watcher):
                table.monitored[ref] = proc
            else:
                partners.add(remote.route(watcher))
        partners.discard(source)  # it learns from MIGRATED
        for node in partners:
            remote._frame(node, (RELOCATED, pid, table.ref))

    def _on_relocated(self, peer: NodeRef, frame) -> None:
        """``pid`` now lives on ``node``: links and monitors to it watch that node."""
        _, pid, node = frame
        remote = self.remote
        for old, pairs in list(remote.links_to.items()):
            if old != node:
                mine = [pair for pair in pairs if pair[1] == pid]
                if mine:
                    pairs.difference_update(mine)
                    remote.links_to.setdefault(node, set()).update(mine)
        for old, watched in list(remote.monitors_to.items()):
            if old != node:
                for ref in [ref for ref, (_, target) in watched.items() if target == pid]:
                    remote.monitors_to.setdefault(node, {})[ref] = watched.pop(ref)
                    remote.monitor_node_of[ref] = node

    # -- messages to migrants: numbered, and put back in order where it is ----

    def _send_here(self, proc: Process, msg) -> None:
        """A local process sends to a migrant that lives here."""
        pid, here = proc.pid, self.table.ref
        n = self.numbered.get(pid, 0) + 1
        self.numbered[pid] = n
        self._arrive(here, (SEQ, pid, msg, here, DIRECT, n), proc)

    def _send_there(self, pid: Pid, msg) -> None:
        """A local process sends to a migrant that lives elsewhere."""
        proc = self.table.resolve(pid)
        if proc is not None:
            return self._send_here(proc, msg)
        n = self.numbered[pid] + 1
        data = encode((SEQ, pid, msg, None, DIRECT, n))  # may raise: then the number is not used
        self.numbered[pid] = n
        self.remote._queue(self.table.moved.get(pid, pid.node), data)

    def _relay(self, peer: NodeRef, pid: Pid, msg, switch: bool = False) -> None:
        """A plain message (or a SWITCHED) for a migrant, from a node that does not number its own."""
        table = self.table
        if pid.node != table.ref:  # not its home: no stream to number it in (a node that knows sends numbered)
            proc = table.resolve(pid)
            if proc is not None and not switch:
                deliver(proc, msg)
            elif proc is None and pid in table.moved and not switch:
                self.remote._frame(table.moved[pid], (SEND, pid, msg))
            return
        counts = self.relayed.get(pid)
        if counts is None:
            counts = self.relayed[pid] = {}
        n = counts.get(peer, 0) + 1
        counts[peer] = n
        self._arrive(peer, (SEQ, pid, msg, peer, SWITCH if switch else RELAYED, n))

    def _on_seq(self, peer: NodeRef, frame) -> None:
        if frame[3] is None:  # it comes from where it was sent: name the origin, for the next hops
            frame = (SEQ, frame[1], frame[2], peer, frame[4], frame[5])
        self._arrive(peer, frame)

    def _arrive(self, peer: NodeRef, frame: tuple, proc: Process | None = None) -> None:
        """A numbered message: take it in, keep it for the move in progress, or pass it on."""
        pid = frame[1]
        if proc is None:
            proc = self.table.resolve(pid)
        if proc is not None:
            if proc.waiting is MIGRATING:
                self.leaving[pid].frames.append((peer, frame))
            else:
                self._accept(proc, peer, frame)
            return
        to = self.table.moved.get(pid)
        if to is not None:
            self.remote._frame(to, frame)
        # else it has ended: the message is lost, as any to an ended process

    def _accept(self, proc: Process, peer: NodeRef, frame: tuple) -> None:
        _, pid, msg, origin, via, n = frame
        order = proc.order
        if order is None:  # numbered by a node that expects it to move: it soon will
            order = proc.order = Order()
        for ready in order.take(pid.node, origin, via, n, msg):
            deliver(proc, ready)
        if order.held:
            self.holding.add(proc)
        else:
            self.holding.discard(proc)
        here = self.table.ref
        if origin != peer and origin != here and origin not in order.told:
            # It came the long way: its origin should send straight here.
            order.told.add(origin)
            order.informed.add(origin)
            self.remote._frame(origin, (LOCATED, pid, here, order.gen))
        home = pid.node
        if via != DIRECT and home != peer and home != here and home not in order.told:
            order.told.add(home)  # the home relays for others: it too should send straight here
            self.remote._frame(home, (LOCATED, pid, here, order.gen))

    def _on_switched(self, peer: NodeRef, frame) -> None:
        pid = frame[1]
        proc = self.table.resolve(pid)
        if pid in self.table.moved or (proc is not None and proc.order is not None):
            self._relay(peer, pid, None, switch=True)

    def _on_located(self, peer: NodeRef, frame) -> None:
        _, pid, node, gen = frame
        table = self.table
        if pid in self.gone or table.resolve(pid) is not None or gen <= self.gens.get(pid, -1):
            return  # old news
        table.moved[pid] = node
        self.gens[pid] = gen
        if pid not in self.numbered:  # from now on this node numbers its messages to pid
            self.numbered[pid] = 0
            if pid.node != table.ref:
                self.remote._frame(pid.node, (SWITCHED, pid))

    # -- the end ----------------------------------------------------------------

    def _gone(self, proc: Process) -> None:
        """A migrant ended here: every node that keeps an entry for it forgets it."""
        pid, here = proc.pid, self.table.ref
        self._forget(pid)
        for node in {*proc.order.visited, *proc.order.informed}:
            if node != here:
                self.remote._frame(node, (GONE, pid))

    def _on_gone(self, peer: NodeRef, frame) -> None:
        self._forget(frame[1])

    def _forget(self, pid: Pid) -> None:
        self.table.moved.pop(pid, None)
        self.gens.pop(pid, None)
        self.numbered.pop(pid, None)
        self.relayed.pop(pid, None)
        self.gone[pid] = None
        if len(self.gone) > _REMEMBER_GONE:
            del self.gone[next(iter(self.gone))]

    def _on_peer_down(self, peer: NodeRef) -> None:
        for pid, entry in list(self.leaving.items()):
            if entry.target == peer:
                self._stay(pid, MigrationError(f"cannot migrate {pid}: node {peer} was lost before it answered"))
        # Messages passing through that node are lost: stop waiting for them.
        lost = (peer.host, peer.port)
        for proc in self.table.guests.values():
            if proc.order is not None and (proc.pid.node.host, proc.pid.node.port) == lost:
                proc.order.home_lost = True  # its relayed streams cannot end now
                self.holding.add(proc)
        for proc in self.holding:
            if proc.waiting is not DEAD and proc.order is not None:
                for msg in proc.order.release():
                    deliver(proc, msg)
        self.holding.clear()
        self.kernel.kick()


RUNTIME_EXTENSIONS.append(Migration)  # every networked node speaks the protocol
