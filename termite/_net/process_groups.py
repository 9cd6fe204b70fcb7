"""Process groups (Erlang's ``pg``): named sets of processes, seen from every node.

A process joins a group (``await join(group)``), and every node soon knows it
is a member: ``members(group)`` reads this node's replica, with no round
trip.  As in Erlang: a process may join one group several times (it is then
listed, and must leave, that many times); only processes of the calling
node may be joined; a member that ends leaves every group on every node; the
members of a node that is lost leave at once on every other node; views are
eventually consistent (two nodes may for a moment disagree).

Each node runs a *group server* under the fixed serial ``PG_SERIAL``.  It
keeps the node's replica of every member of every group, and
``monitor(group)`` subscribers.  Beyond Erlang, a member may migrate and
stays a member; so membership is held by pid, not by node:

- The node a member runs on (its *host*) is the only one that changes its
  memberships: ``join``/``leave`` ask the local server, which bumps the
  member's *version* and sends its whole membership ``(pid, version,
  groups)`` to every connected node's server.  A server keeps, per pid, the
  highest version it has heard of: news that arrives late (by another path)
  is old news and changes nothing.
- Every server monitors every member it knows of.  So a member's end, and the
  loss of the node it runs on (``noconnection``), reach every node by the
  monitors, which follow a process that migrates (termite._move.migration):
  a member that moved from A to B stays a member when A is lost, and leaves
  when B is.
- Versions are total because one host at a time changes a member, and knows
  its latest version: a membership sent by the old host is sent before the
  migration on the same node-to-node session, so it arrives first.  Only a
  node that has just connected may not have heard yet: a server holds a
  change to a process that has migrated until every connected node has sent
  it its replica.
- When two nodes connect, each sends the other its whole replica (``sync``);
  the receiver keeps the newer version of each member, and monitors the new
  ones (a member already ended gets a ``Down`` at once and is dropped).

A member that left all its groups is kept, empty, with its version and
monitor, until it ends: so old news of a join cannot bring it back.  The
cost: a monitor per member per node, so a member's migration tells every
node where it went (RELOCATED), as for any monitored process.  A
``monitor(group)`` subscriber hears of changes to its node's view; one that
migrates keeps hearing from that node.

Requests to a server (``(sender, tag, request)``, answered ``(tag, answer)``,
as ``call`` sends them):

=================================  ============================================
request                            answer
=================================  ============================================
``("join", group, pid, wait)``     ``("ok",)`` or ``("error", text)``
``("leave", group, pid, wait)``    ``("ok",)``, ``("not_joined",)`` or error
``("monitor", group)``             ``("ok", ref, members)``
``("demonitor", ref)``             ``("ok",)`` or ``("not_monitored",)``
=================================  ============================================

Between servers: ``("state", pid, version, groups)`` (a member's memberships,
``{group: times}``) and ``("sync", node, [(pid, version, groups), ...], its
connected nodes, answer)`` (``answer``: send yours back; a server that
restarted asks so).  Once a group has a member, a server connects to the
nodes its peers are connected to (as Erlang's ``global`` does), so that a
group is the whole cluster's: its first member is news it sends to every
peer, with its list of peers.  A cluster that never uses groups keeps the
connections it made.
"""

from __future__ import annotations

import logging
import weakref
from typing import Any, NamedTuple

from termite._core.call import call
from termite._core.errors import TermiteError
from termite._core.ids import NodeRef, Pid, Tag, make_tag
from termite._core.links import Down, demonitor as _demonitor, monitor as _monitor
from termite._core.mailbox import receive, send
from termite._core.process import PG_SERIAL, ProcessTable, current
from termite._core.spawn import spawn_in
from termite._net.distribution import NodeDown, NodeUp, monitor_node, nodes

__all__ = [
    "GroupEvent", "join", "leave", "members", "local_members", "which_groups", "monitor", "demonitor",
    "start_group_server", "group_server", "PG_SERIAL",
]

log = logging.getLogger("termite.pg")

#: Members that ended (not cut off: they may come back) remembered, so that late news of them is dropped.
_ENDED_KEPT = 4096
#: Extra seconds a caller waits beyond the time it gave the server to answer.
_ANSWER_MARGIN = 1.0


class GroupEvent(NamedTuple):
    """What a ``monitor(group)`` subscriber gets when ``group`` changes on this node's replica.

    ``kind`` is ``"join"`` or ``"leave"``; ``pids`` the processes that joined
    or left (a pid twice if it joined twice), ``ref`` what ``monitor`` returned.
    """

    ref: Tag
    kind: str
    group: Any
    pids: tuple


class _Member:
    __slots__ = ("version", "groups", "ref")

    def __init__(self, version: int, groups: dict, ref: Tag | None):
        self.version, self.groups, self.ref = version, groups, ref


class _Replica:
    """One node's view of every group, shared by its server and the read functions (same thread)."""

    def __init__(self, table: ProcessTable):
        self.table = table
        self.entries: dict[Pid, _Member] = {}
        self.by_group: dict[Any, dict[Pid, int]] = {}  # group -> {pid: times joined}, members only
        self.subscribers: dict[Any, dict[Tag, Pid]] = {}  # group -> {ref: subscriber}
        self.ended: dict[Pid, None] = {}  # members that ended lately, oldest first

    def members(self, group) -> list[Pid]:
        return [pid for pid, times in self.by_group.get(group, {}).items() for _ in range(times)]

    def put(self, pid: Pid, version: int, groups: dict) -> None:
        """Set ``pid``'s memberships (the entry exists or is made by the caller); tell subscribers."""
        entry = self.entries[pid]
        old, entry.version, entry.groups = entry.groups, version, groups
        for group in {*old, *groups}:
            before, after = old.get(group, 0), groups.get(group, 0)
            if before == after:
                continue
            members = self.by_group.setdefault(group, {})
            if after:
                members[pid] = after
            else:
                members.pop(pid, None)
                if not members:
                    del self.by_group[group]
            kind = "join" if after > before else "leave"
            self._tell(group, kind, (pid,) * abs(after - before))

    def drop(self, pid: Pid) -> None:
        """``pid`` is no member any more: it ended, or its node was lost."""
        if pid in self.entries:
            self.put(pid, 0, {})
            del self.entries[pid]

    def _tell(self, group, kind: str, pids: tuple) -> None:
        for ref, subscriber in self.subscribers.get(group, {}).items():
            send(subscriber, GroupEvent(ref, kind, group, pids))


_replicas: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # ProcessTable -> _Replica


def _server(node: NodeRef) -> Pid:
    return Pid(node, PG_SERIAL)


# -- the server ---------------------------------------------------------------------------


class _Server:
    def __init__(self, me):
        self.me = me
        self.table = me.table
        # A new replica: one a server that ended left behind is watched by no one (its members' ends
        # would not reach it).  Its peers send theirs again; this node's own memberships ended with it.
        self.replica = _replicas[self.table] = _Replica(self.table)
        self.networked = self.table.remote is not None
        self.synced: set[NodeRef] = set()  # nodes that sent their replica in this session
        self.watching: dict[Tag, Pid] = {}  # monitor ref -> member
        self.subscriber_watch: dict[Pid, Tag] = {}  # subscriber -> the monitor on it
        self.subscriptions: dict[Pid, dict[Tag, Any]] = {}  # subscriber -> {ref: group}
        self.held: list[tuple[float, Pid, Tag, tuple]] = []  # changes waiting for syncs: (deadline, ...)
        self.heard_of: dict[tuple[str, int], NodeRef] = {}  # nodes that peers are connected to, by address

    async def run(self):
        loop = self.me.kernel.loop
        if self.networked:
            monitor_node(None)
            for node in nodes():  # started again (it ended): nothing comes without asking
                self._sync_to(node, answer=True)
        while True:
            if self.held:  # changes that wait for syncs are answered by their deadline at the latest
                msg = await receive(timeout=max(0.0, min(d for d, *_ in self.held) - loop.time()), default=None)
            else:
                msg = await receive()
            if msg is not None:
                had_members = bool(self.replica.entries)
                try:
                    self._handle(msg)
                except (TypeError, ValueError) as exc:
                    log.warning("the group server dropped a malformed message %.200r: %s", msg, exc)
                if not had_members and self.replica.entries and self.networked:
                    self._spread()
            if self.held:  # after the message: it may be the sync they wait for
                self._release_held()

    def _handle(self, msg) -> None:
        match msg:
            case Down():
                self._down(msg)
            case NodeUp(node=node):
                self._sync_to(node)
            case NodeDown(node=node):
                self.synced.discard(node)  # its members leave by their monitors' Downs
            case (Pid() as sender, Tag() as tag, ("join" | "leave" as kind, group, Pid() as pid, wait)):
                change = (kind, group, pid)
                if self._must_wait(pid):
                    log.debug("%s of %s waits for the replicas of %s", kind, pid, self._unsynced())
                    self.held.append((self.me.kernel.loop.time() + wait, sender, tag, change))
                else:
                    send(sender, (tag, self._change(*change)))
            case (Pid() as sender, Tag() as tag, ("monitor", group)):
                send(sender, (tag, self._subscribe(sender, group)))
            case (Pid() as sender, Tag() as tag, ("demonitor", Tag() as ref)):
                send(sender, (tag, self._unsubscribe(ref)))
            case ("state", Pid() as pid, int() as version, dict() as groups):
                self._learn(pid, version, groups)
            case ("sync", NodeRef() as node, list() as entries, list() as its_nodes, bool() as answer):
                for pid, version, groups in entries:
                    self._learn(pid, version, groups)
                self.synced.add(node)
                if answer:
                    self._sync_to(node)
                self._hear_of(its_nodes)
            case (Pid() as sender, Tag() as tag, request):
                send(sender, (tag, ("error", f"the group server does not know the request {request!r}")))
            case _:
                log.warning("the group server dropped a message it does not understand: %.200r", msg)

    # -- changes made here ----------------------------------------------------------------

    def _must_wait(self, pid: Pid) -> bool:
        """A process that migrated here: its old host's news may still be on the way."""
        proc = self.table.resolve(pid)
        return proc is not None and proc.order is not None and self._unsynced()

    def _unsynced(self) -> list[NodeRef]:
        return [node for node in nodes() if node not in self.synced] if self.networked else []

    def _release_held(self) -> None:
        now = self.me.kernel.loop.time()
        held, self.held = self.held, []
        for deadline, sender, tag, change in held:
            if not self._must_wait(change[2]):
                send(sender, (tag, self._change(*change)))
            elif deadline <= now:
                waiting = ", ".join(str(node) for node in self._unsynced())
                send(sender, (tag, ("error", f"{change[0]} of {change[2]}: no replica yet from newly connected "
                                             f"node(s) {waiting}, where it may have been a member; try again")))
            else:
                self.held.append((deadline, sender, tag, change))

    def _change(self, kind: str, group, pid: Pid) -> tuple:
        table = self.table
        if not table.is_local(pid) or table.resolve(pid) is None:
            return ("error", f"{pid} does not run on node {table.ref} (it ended, or migrated): a process joins and "
                             f"leaves groups on the node it runs on")
        entry = self.replica.entries.get(pid)
        groups = dict(entry.groups) if entry is not None else {}
        times = groups.get(group, 0) + (1 if kind == "join" else -1)
        if times < 0:
            return ("not_joined",)
        if times:
            groups[group] = times
        else:
            del groups[group]
        version = entry.version + 1 if entry is not None else 1
        self._keep(pid, version, groups)
        if self.networked:
            for node in nodes():
                send(_server(node), ("state", pid, version, groups))
        return ("ok",)

    def _keep(self, pid: Pid, version: int, groups: dict) -> None:
        entry = self.replica.entries.get(pid)
        if entry is None:
            ref = _monitor(pid)
            self.watching[ref] = pid
            self.replica.entries[pid] = _Member(0, {}, ref)
        self.replica.put(pid, version, groups)

    # -- news from other nodes -------------------------------------------------------------

    def _learn(self, pid: Pid, version: int, groups: dict) -> None:
        if pid.__class__ is not Pid or version.__class__ is not int or groups.__class__ is not dict:
            raise TypeError(f"a membership is (pid, version, groups), not ({pid!r}, {version!r}, {groups!r})")
        if not all(times.__class__ is int and times > 0 for times in groups.values()):
            raise ValueError(f"times joined must be counts > 0: {groups!r}")
        if pid in self.replica.ended:
            return  # late news of a member that has ended
        entry = self.replica.entries.get(pid)
        if entry is not None and entry.version >= version:
            return  # old news: a newer version came by another path
        self._keep(pid, version, groups)

    def _sync_to(self, node: NodeRef, answer: bool = False) -> None:
        entries = [(pid, entry.version, entry.groups) for pid, entry in self.replica.entries.items()]
        send(_server(node), ("sync", self.table.ref, entries, nodes(), answer))

    def _spread(self) -> None:
        """The groups have their first member: from now on they need every node.  The peers hear of
        it with this node's peers, and connect to those they do not know; this node to its peers' peers."""
        for node in nodes():
            self._sync_to(node)
        self._reach()

    def _hear_of(self, its_nodes: list) -> None:
        here = (self.table.ref.host, self.table.ref.port)
        for node in its_nodes:
            if node.__class__ is NodeRef and node.incarnation is not None and (node.host, node.port) != here:
                self.heard_of[node.host, node.port] = node
        self._reach()

    def _reach(self) -> None:
        """Connect to the nodes that peers are connected to, once groups have members: the groups are
        the cluster's, not a neighbourhood's.  Each is tried once (one that is gone is not tried again)."""
        if not self.heard_of or not self.replica.entries:
            return
        connected = {(node.host, node.port) for node in nodes()}
        heard_of, self.heard_of = self.heard_of, {}
        for address, node in heard_of.items():
            if address not in connected:
                self._sync_to(node)  # a message opens the session; both sides then sync on NodeUp

    def _down(self, down: Down) -> None:
        pid = self.watching.pop(down.ref, None)
        if pid is not None:
            entry = self.replica.entries.get(pid)
            if entry is not None and entry.ref == down.ref:
                self.replica.drop(pid)
                if down.reason != "noconnection":  # cut off, it may come back; ended, it never does
                    ended = self.replica.ended
                    ended[pid] = None
                    if len(ended) > _ENDED_KEPT:
                        del ended[next(iter(ended))]
            return
        for subscriber, ref in list(self.subscriber_watch.items()):
            if ref == down.ref:
                for sub_ref in list(self.subscriptions.get(subscriber, {})):
                    self._unsubscribe(sub_ref)
                return

    # -- subscribers ---------------------------------------------------------------------

    def _subscribe(self, subscriber: Pid, group) -> tuple:
        ref = make_tag()
        self.replica.subscribers.setdefault(group, {})[ref] = subscriber
        self.subscriptions.setdefault(subscriber, {})[ref] = group
        if subscriber not in self.subscriber_watch:
            self.subscriber_watch[subscriber] = _monitor(subscriber)
        return ("ok", ref, self.replica.members(group))

    def _unsubscribe(self, ref: Tag) -> tuple:
        for subscriber, refs in self.subscriptions.items():
            if ref in refs:
                group = refs.pop(ref)
                subscribers = self.replica.subscribers[group]
                del subscribers[ref]
                if not subscribers:
                    del self.replica.subscribers[group]
                if not refs:
                    del self.subscriptions[subscriber]
                    _demonitor(self.subscriber_watch.pop(subscriber))
                return ("ok",)
        return ("not_monitored",)


async def group_server():
    """The body of a node's group server (started under ``PG_SERIAL``)."""
    server = _Server(current())
    try:
        await server.run()
    finally:  # what it knew ends with it: nothing keeps it up to date any more
        if _replicas.get(server.table) is server.replica:
            del _replicas[server.table]


def start_group_server(table: ProcessTable, endpoint=None) -> None:
    """Start this node's group server (a runtime extension: termite._runtime.node)."""
    spawn_in(table, group_server, (), pid=_server(table.ref))


# -- what a process calls -----------------------------------------------------------------


def _local_server(table: ProcessTable) -> Pid:
    """This node's group server; started here if the node has none (a node without a network)."""
    pid = _server(table.ref)
    if table.resolve(pid) is None:
        start_group_server(table)
    return pid


_PLAIN = (str, bytes, int, float, bool, type(None))


def _check_group(group) -> None:
    if group.__class__ is tuple:
        for part in group:
            _check_group(part)
    elif not isinstance(group, _PLAIN):
        raise TypeError(f"a group is named by plain data (a str, number, bytes, or a tuple of those), "
                        f"not {type(group).__name__}: {group!r}")


def _member_pid(pid, what: str) -> Pid:
    me = current()
    if pid is None:
        return me.pid
    if pid.__class__ is not Pid:
        raise TypeError(f"{what}() needs a Pid (or none: the caller), got {type(pid).__name__}: {pid!r}")
    if not me.table.is_local(pid):
        raise ValueError(f"{what}(): {pid} runs on node {me.table.remote.route(pid) if me.table.remote else pid.node}, "
                         f"not on this one ({me.table.ref}); a process joins and leaves groups on its own node "
                         f"(call {what} there, e.g. from the process itself)")
    return pid


async def _ask(request: tuple, timeout: float):
    table = current().table
    answer = await call(_local_server(table), request, timeout=timeout + _ANSWER_MARGIN)
    if answer[0] == "error":
        raise TermiteError(answer[1])
    return answer


def _check_timeout(timeout) -> float:
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not timeout > 0:
        raise ValueError(f"timeout={timeout!r} is not a number of seconds > 0")
    return float(timeout)


async def join(group, pid: Pid | None = None, timeout: float = 5.0) -> None:
    """Make ``pid`` (default: the caller), a process of this node, a member of ``group``.

    A process may join a group several times: it is then listed that many
    times by ``members`` and must leave as often.  It returns once this node
    has sent the membership to every connected node.  A process that has
    just migrated here, from a node this one has just connected to, waits
    until that node has sent the groups it knows.  Raises ``Timeout`` if the
    node's group server does not answer within ``timeout`` seconds, and
    ``TermiteError`` if ``pid`` ended or left this node meanwhile.
    """
    _check_group(group)
    pid = _member_pid(pid, "join")
    await _ask(("join", group, pid, _check_timeout(timeout)), timeout)


async def leave(group, pid: Pid | None = None, timeout: float = 5.0) -> bool:
    """Undo one ``join(group, pid)``; False if ``pid`` (default: the caller) was not a member."""
    _check_group(group)
    pid = _member_pid(pid, "leave")
    answer = await _ask(("leave", group, pid, _check_timeout(timeout)), timeout)
    return answer[0] == "ok"


def members(group) -> list[Pid]:
    """The members of ``group`` on every node, as this node knows them now (no messages)."""
    _check_group(group)
    replica = _replicas.get(current().table)
    return [] if replica is None else replica.members(group)


def local_members(group) -> list[Pid]:
    """The members of ``group`` that run on this node."""
    table = current().table
    return [pid for pid in members(group) if table.is_local(pid)]


def which_groups() -> list:
    """Every group with at least one member, on any node, as this node knows them."""
    replica = _replicas.get(current().table)
    return [] if replica is None else list(replica.by_group)


async def monitor(group, timeout: float = 5.0) -> tuple[Tag, list[Pid]]:
    """Subscribe the caller to ``group``: returns ``(ref, members now)``; then every change to this
    node's view of it comes as a :class:`GroupEvent` ``(ref, "join" | "leave", group, pids)``."""
    _check_group(group)
    _, ref, now = await _ask(("monitor", group), _check_timeout(timeout))
    return ref, now


async def demonitor(ref: Tag, timeout: float = 5.0) -> bool:
    """End the subscription ``ref``; no event for it is sent after this returns.  False if unknown."""
    if ref.__class__ is not Tag:
        raise TypeError(f"demonitor() needs the ref that monitor() returned, got {type(ref).__name__}: {ref!r}")
    answer = await _ask(("demonitor", ref), _check_timeout(timeout))
    return answer[0] == "ok"
