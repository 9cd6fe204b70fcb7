"""Migration: ``await migrate(node)`` continues the calling process on another node.

The process keeps its pid, its locals (its continuation, termite/_continuation.py),
its unread messages, its links and the monitors on it.  The protocol, between
the node it leaves (source) and the node it goes to (target):

1. The process yields a request to the kernel; the source captures its
   continuation and state.  If something cannot travel, ``migrate`` raises
   ``MigrationError`` there and the process goes on where it was.
2. The source sends MIGRATE(pid, continuation, mailbox, links, monitors,
   trap_exit, itinerary) and parks the process: messages that arrive now wait
   in its mailbox.
3. The target rebuilds the process and answers MIGRATED, or REFUSED(reason)
   (another Python, other code): the source then raises ``MigrationError`` in
   the process, which keeps its messages and runs on.  A target lost before
   it answers counts as a refusal.
4. On MIGRATED the source drops its copy without running its ``finally``
   blocks (they run on the target), records the target in its migration table
   (``table.moved``), and passes on, in order, the messages that waited and
   every later frame for that pid.  Links and monitors between the process
   and others follow: the target tells the nodes of linked and watching
   processes where it now is (RELOCATED), so a lost node fires
   ``noconnection`` for what really was on it.
5. When the process ends, its last node tells every node it lived on (GONE),
   and they forget it.

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
from termite._distribution import LINK, MONITOR, Remote, register_frame
from termite._errors import MigrationError
from termite._ids import NodeRef, Pid
from termite._kernel import Signal
from termite._node import RUNTIME_EXTENSIONS
from termite._process import DEAD, Process, ProcessTable, current
from termite._spawn import _body
from termite._traps import Sentinel

__all__ = ["migrate", "Migration"]

log = logging.getLogger("termite.migration")

MIGRATE, MIGRATED, REFUSED, GONE, RELOCATED = range(16, 21)
MIGRATING = Sentinel("migrating")  # parked while the target rebuilds it


def _pid(x) -> bool:
    return x.__class__ is Pid


def _list(x) -> bool:
    return x.__class__ is list


register_frame(MIGRATE, "MIGRATE", (_pid, lambda c: c.__class__ is tuple and len(c) == 2, _list, _list, _list, lambda t: t.__class__ is bool, _list))
register_frame(MIGRATED, "MIGRATED", (_pid,))
register_frame(REFUSED, "REFUSED", (_pid, lambda r: r.__class__ is str))
register_frame(GONE, "GONE", (_pid,))
register_frame(RELOCATED, "RELOCATED", (_pid, lambda n: n.__class__ is NodeRef and n.incarnation is not None))


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
    if me.table.remote is None and node != me.table.ref:
        raise MigrationError(f"cannot migrate to {node}: this node is not connected to other nodes")
    return _trap(_Request(node, fn, args))


class Migration:
    """A node's side of the protocol: the kernel's migrate trap and the frames."""

    def __init__(self, table: ProcessTable, remote: Remote):
        self.table = table
        self.remote = remote
        self.kernel = table.kernel
        # pid -> (process, target node, the mailbox it took along)
        self.leaving: dict[Pid, tuple[Process, NodeRef, list]] = {}
        self.itineraries: dict[Pid, list[NodeRef]] = {}  # nodes each guest lived on before
        self.kernel.trap_handlers[_Request] = self._on_request
        remote.handlers.update(
            {
                MIGRATE: self._on_migrate,
                MIGRATED: self._on_migrated,
                REFUSED: self._on_refused,
                GONE: self._on_gone,
                RELOCATED: self._on_relocated,
            }
        )
        remote.on_peer_down_hooks.append(self._on_peer_down)

    # -- leaving --------------------------------------------------------------

    def _on_request(self, proc: Process, request: _Request) -> None:
        table = self.table
        if request.node == table.ref:
            if request.fn is None:
                self.kernel.wake(proc, table.ref)
            else:  # continue here with the new body, as on any node
                proc.coro.close()
                proc.coro = _body(request.fn, request.args)
                self.kernel.wake(proc, None)
            return
        try:
            if proc.name is not None:
                raise MigrationError(f"{proc.pid} is registered here as {proc.name!r}; unregister it before migrating")
            if request.fn is None:
                continuation = ("coro", capture(proc.coro))
            else:
                continuation = ("call", encode((request.fn, request.args)))
            mailbox = list(proc.mailbox or ())
            frame = encode(
                (
                    MIGRATE,
                    proc.pid,
                    continuation,
                    mailbox,
                    list(proc.links or ()),
                    list((proc.monitors or {}).items()),
                    proc.trap_exit,
                    [*self.itineraries.get(proc.pid, ()), table.ref],
                )
            )
        except (MigrationError, UnserializableMessage) as exc:
            error = exc if isinstance(exc, MigrationError) else MigrationError(f"cannot migrate {proc.pid}: {exc}")
            self.kernel.wake(proc, Signal(error))
            return
        proc.waiting = MIGRATING
        proc.mailbox = deque()  # what arrives meanwhile
        self.leaving[proc.pid] = (proc, request.node, mailbox)
        self.remote._queue(request.node, frame)

    def _on_migrated(self, peer: NodeRef, frame) -> None:
        pid = frame[1]
        entry = self.leaving.pop(pid, None)
        if entry is None:
            return
        proc, target, _ = entry
        table, remote = self.table, self.remote
        abandon(proc.coro)
        waiting = proc.mailbox
        pid = proc.pid  # the canonical pid, which local senders hold
        if pid.node == table.ref:
            table.procs.pop(pid.serial, None)
        else:
            table.guests.pop(pid, None)
        self.itineraries.pop(pid, None)
        table.exit_waiters.pop(pid, None)  # it ends elsewhere now
        table.moved[pid] = target
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
        for msg in waiting:
            remote.send(pid, msg)

    def _on_refused(self, peer: NodeRef, frame) -> None:
        _, pid, reason = frame
        self._stay(pid, MigrationError(f"{peer} refused {pid}: {reason}"))

    def _on_peer_down(self, peer: NodeRef) -> None:
        for pid, (_, target, _) in list(self.leaving.items()):
            if target == peer:
                self._stay(pid, MigrationError(f"cannot migrate {pid}: node {peer} was lost before it answered"))

    def _stay(self, pid: Pid, error: MigrationError) -> None:
        entry = self.leaving.pop(pid, None)
        if entry is None:
            return
        proc, _, mailbox = entry
        proc.mailbox = deque([*mailbox, *proc.mailbox])
        proc.waiting = None
        self.kernel.wake(proc, Signal(error))
        self.kernel.kick()

    # -- arriving -------------------------------------------------------------

    def _on_migrate(self, peer: NodeRef, frame) -> None:
        _, pid, (how, data), mailbox, links, monitors, trap_exit, itinerary = frame
        table, remote = self.table, self.remote
        try:
            if self.table.resolve(pid) is not None:
                raise MigrationError(f"{pid} already runs here")
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
        proc = Process(table, pid, coro)
        pid._proc = proc
        if pid.node == table.ref:
            table.procs[pid.serial] = proc
            table.moved.pop(pid, None)  # home again
        else:
            table.guests[pid] = proc
        self.itineraries[pid] = [node for node in itinerary if node != table.ref]
        table.exit_waiters.setdefault(pid, []).append(lambda *_: self._gone(pid))
        proc.mailbox = deque(mailbox) if mailbox else None
        proc.trap_exit = trap_exit
        proc.links = set(links) or None
        proc.monitors = {ref: watcher for ref, watcher in monitors} or None
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

    def _gone(self, pid: Pid) -> None:
        """A guest ended here: the nodes it lived on forget it."""
        for node in self.itineraries.pop(pid, ()):
            self.remote._frame(node, (GONE, pid))

    def _on_gone(self, peer: NodeRef, frame) -> None:
        self.table.moved.pop(frame[1], None)

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


RUNTIME_EXTENSIONS.append(Migration)  # every networked node speaks the protocol
