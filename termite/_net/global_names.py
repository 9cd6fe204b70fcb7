"""The global registry: names that resolve to the same pid on every node.

Every networked node runs a *name server* process under the well-known
serial 0, so any node can address another's as ``Pid(node, 0)``.  Each
server keeps a full replica of the cluster's names (``table.global_names``),
so ``whereis_global`` is a dictionary lookup, and monitors every pid it
holds a name for: when that process ends, or its node is lost
(``noconnection``), the name is gone on every node by itself.

``register_global`` claims the name at every connected node's server and
succeeds only if all of them grant it; a server grants one claimant at a
time, so two concurrent claims of one name never both succeed (both may
fail: try again).  A node that joins later gets each server's own names
(those of its processes) when it connects.  If two partitions each
registered the name while apart, every node keeps the lower pid, and the
node of the other sends it an exit signal with reason
``("global_name_conflict", name)``, as Erlang's ``global`` does.
"""

from __future__ import annotations

import logging

from termite._net.distribution import NodeDown, NodeUp, monitor_node, nodes
from termite._core.errors import NameTaken, Timeout
from termite._core.ids import Pid, Tag, make_tag
from termite._core.links import Down, demonitor, exit, monitor
from termite._core.mailbox import receive, send
from termite._core.process import NAME_SERVER_SERIAL, ProcessTable, current
from termite._core.spawn import spawn_in
from termite._core.registry import _check_name

__all__ = ["start_name_server", "register_global", "release_global", "unregister_global", "whereis_global", "registered_global", "sync_global", "name_server"]

log = logging.getLogger("termite.global")

#: The serial of every node's name server.


def _server(node) -> Pid:
    return Pid(node, NAME_SERVER_SERIAL)


def _order(pid: Pid) -> tuple:
    """A total order on pids that every node computes alike: the lower wins a conflict."""
    node = pid.node
    return (node.host, node.port, node.incarnation or 0, pid.serial)


class _Replica:
    """The name server's state: the names, and one monitor per pid holding any."""

    def __init__(self, table: ProcessTable):
        self.table = table
        self.names = table.global_names
        self.held: dict[Pid, set[str]] = {}
        self.monitors: dict[Tag, Pid] = {}
        self.monitor_of: dict[Pid, Tag] = {}

    def own_entries(self) -> list[tuple[str, Pid]]:
        """The names this node vouches for to a node that joins: those of processes that run here, or
        were born here (one that migrated may have reached the joining node before this sync did)."""
        table = self.table
        return [(name, pid) for name, pid in self.names.items() if pid.node == table.ref or table.is_local(pid)]

    def add(self, name: str, pid: Pid) -> None:
        self.names[name] = pid
        self.held.setdefault(pid, set()).add(name)
        if pid not in self.monitor_of:
            ref = monitor(pid)
            self.monitors[ref] = pid
            self.monitor_of[pid] = ref

    def remove(self, name: str, pid: Pid) -> None:
        if self.names.get(name) == pid:
            del self.names[name]
        names = self.held.get(pid)
        if names is not None:
            names.discard(name)
            if not names:
                self._forget(pid)
                ref = self.monitor_of.pop(pid)
                self.monitors.pop(ref, None)
                demonitor(ref)

    def _forget(self, pid: Pid) -> None:
        for name in self.held.pop(pid, ()):
            if self.names.get(name) == pid:
                del self.names[name]

    def down(self, ref: Tag) -> None:
        pid = self.monitors.pop(ref, None)
        if pid is not None:
            self.monitor_of.pop(pid, None)
            self._forget(pid)

    def claim(self, name: str, pid: Pid) -> Pid:
        """Grant ``name`` to ``pid`` unless another holds it; return the holder."""
        holder = self.names.get(name)
        if holder is None:
            self.add(name, pid)
            return pid
        return holder

    def merge(self, entries) -> None:
        """Take another node's names; settle conflicts by the lower pid."""
        for name, pid in entries:
            holder = self.names.get(name)
            if holder == pid:
                continue
            if holder is None:
                self.add(name, pid)
                continue
            winner, loser = (pid, holder) if _order(pid) < _order(holder) else (holder, pid)
            log.warning("global name %r was held by %s and %s; %s keeps it", name, holder, pid, winner)
            if winner is pid:
                self.remove(name, holder)
                self.add(name, pid)
            if self.table.is_local(loser):
                exit(loser, ("global_name_conflict", name))


async def name_server():
    """The body of a node's name server (started by the node under serial 0)."""
    me = current()
    replica = _Replica(me.table)
    monitor_node(None)
    while True:
        msg = await receive()
        kind = msg[0] if msg.__class__ is tuple and msg else msg.__class__
        try:
            if kind == "claim":
                _, name, pid, reply_to, tag = msg
                send(reply_to, (tag, me.pid, replica.claim(name, pid)))
            elif kind == "release":
                _, name, pid = msg
                replica.remove(name, pid)
            elif kind == "sync":
                _, entries, reply_to, tag = msg
                replica.merge(entries)
                if reply_to is not None:
                    send(reply_to, (tag, me.pid, replica.own_entries()))
            elif kind is Down:
                replica.down(msg.ref)
            elif kind is NodeUp:
                send(_server(msg.node), ("sync", replica.own_entries(), None, None))
            elif kind is NodeDown:
                pass  # its names go with the Downs of their processes' monitors
            else:
                log.warning("the name server dropped a message it does not understand: %.200r", msg)
        except (TypeError, ValueError) as exc:
            log.warning("the name server dropped a malformed request %.200r: %s", msg, exc)


def _servers() -> list[Pid]:
    me = current()
    return [_server(me.table.ref)] + [_server(node) for node in nodes()]


async def _ask_all(servers: list[Pid], request, timeout: float) -> dict[Pid, object]:
    """Send ``request(tag)`` to each server; their answers by server (a lost node's is absent)."""
    tag = make_tag()
    watching = {monitor(server): server for server in servers}
    for server in servers:
        send(server, request(tag))
    answers: dict[Pid, object] = {}
    pending = set(servers)
    while pending:
        msg = await receive((tag, Pid, ...), Down, timeout=timeout, default=None)
        if msg is None:
            for ref in watching:
                demonitor(ref)
            raise Timeout(f"no answer within {timeout} s from the name servers of {sorted(str(s.node) for s in pending)}")
        if msg.__class__ is Down:
            server = watching.pop(msg.ref, None)
            pending.discard(server)
            continue
        _, server, answer = msg
        if server in pending:
            pending.discard(server)
            answers[server] = answer
    for ref in watching:
        demonitor(ref)
    return answers


async def register_global(name: str, pid: Pid | None = None, timeout: float = 5.0) -> None:
    """Give ``pid`` (default: the caller) the name ``name`` on every connected node.

    Raises ``NameTaken`` if another process holds the name, and ``Timeout``
    if a connected node's name server does not answer within ``timeout``.
    """
    _check_name(name)
    me = current()
    pid = me.pid if pid is None else pid
    if pid.__class__ is not Pid:
        raise TypeError(f"register_global() needs a Pid, got {type(pid).__name__}: {pid!r}")
    # No answer from this node's replica alone: the release of an ended holder (a
    # supervisor's, just sent) or its Down may be queued at the name server, ahead of
    # this claim, which the server answers in order.
    servers = _servers()
    me_pid = me.pid
    try:
        holders = await _ask_all(servers, lambda tag: ("claim", name, pid, me_pid, tag), timeout)
    except Timeout:
        _release(servers, name, pid)
        raise
    others = {holder for holder in holders.values() if holder != pid}
    if others:
        _release([server for server, holder in holders.items() if holder == pid], name, pid)
        raise NameTaken(f"{name!r} is already registered globally to {others.pop()}; unregister_global({name!r}) first")


def _release(servers, name: str, pid: Pid) -> None:
    for server in servers:
        send(server, ("release", name, pid))


def release_global(name: str, pid: Pid) -> None:
    """Free ``name`` on every connected node where ``pid`` holds it.

    For one who knows that ``pid`` has ended or was cut off (its
    supervisor): a claim for its replacement sent next is not refused by a
    node that has not yet learnt of that end.
    """
    _release(_servers(), name, pid)


def unregister_global(name: str) -> None:
    """Free the global ``name`` on every connected node; its process keeps running."""
    table = current().table
    pid = table.global_names.pop(name, None)
    if pid is None:
        raise LookupError(f"{name!r} is not registered globally")
    _release(_servers(), name, pid)


def whereis_global(name: str) -> Pid | None:
    """The pid registered globally as ``name`` (on any node), or None."""
    return current().table.global_names.get(name)


def registered_global() -> dict[str, Pid]:
    """Every global name this node knows, with its pid."""
    return dict(current().table.global_names)


async def sync_global(timeout: float = 5.0) -> None:
    """Exchange names with every connected node now (Erlang's ``global:sync``).

    Names reach a node that connects without it, shortly after; call it when
    the next line must see names registered elsewhere before it connected.
    """
    me = current()
    here = _server(me.table.ref)
    own = [(name, pid) for name, pid in me.table.global_names.items() if me.table.is_local(pid)]
    peers = [_server(node) for node in nodes()]
    me_pid = me.pid
    answers = await _ask_all(peers, lambda tag: ("sync", own, me_pid, tag), timeout)
    for entries in answers.values():
        send(here, ("sync", entries, None, None))
    await _ask_all([here], lambda tag: ("sync", [], me_pid, tag), timeout)  # the merges above are done


def start_name_server(table: ProcessTable, endpoint) -> None:
    """Start this node's name server (a runtime extension: termite._runtime.node)."""
    spawn_in(table, name_server, (), pid=_server(table.ref))
