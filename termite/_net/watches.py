"""Links and monitors that cross to another node, kept by node so a lost node fires them.

Every link and monitor between a local process and a process of another node
is recorded here under that node, whichever side made it, so that when the
node is lost each fires exactly once (termite._net.endpoint):

- a link (local, remote): the local process gets an exit signal
  ``"noconnection"`` from the remote one;
- a monitor a local process holds on a remote one: ``Down(ref, target,
  "noconnection")``;
- a monitor a remote process holds on a local one: it is forgotten (its
  watcher is gone with its node).

Migration moves entries when a process changes node (:meth:`Watches.move_target`).
A migrant lost in its handoff fires its entries here early (:meth:`Watches.take_target`);
its own end may still be told later, by a copy that did arrive: that notice is
dropped, so each link and monitor fires once (:meth:`Watches.settled`).
A node's loss settles its links and monitors the same way: a migrant that
arrived on that node as the session ended keeps its watchers, and its end,
told later, finds them fired already.  A migrant's watches on a third node
can point at the node it left when that third node's session with the node
it is on ends: the node it is on tells the third node, in their next
session, which ones the down cut, and those still held there fire then
(:meth:`Watches.take_severed`).
"""

from __future__ import annotations

from collections import OrderedDict

from termite._core.ids import NodeRef, Pid, Tag

#: How many links and monitors fired ahead of their process's own end a node remembers.
_REMEMBER_SETTLED = 16384

__all__ = ["Watches", "Lost"]


class Lost:
    """What a lost node leaves to fire: its links, monitors, and watchers of local processes."""

    __slots__ = ("links", "monitors", "watchers")

    def __init__(self, links: set, monitors: dict, watchers: dict):
        self.links = links  # {(local, remote)}
        self.monitors = monitors  # {ref: (local watcher, remote target)}
        self.watchers = watchers  # {ref: local target}: monitors the node's processes held here


class Watches:
    def __init__(self):
        self._links: dict[NodeRef, set[tuple[Pid, Pid]]] = {}  # node -> {(local, remote)}
        self._link_node: dict[tuple[Pid, Pid], NodeRef] = {}
        self._monitors: dict[NodeRef, dict[Tag, tuple[Pid, Pid]]] = {}  # node -> {ref: (watcher, target)}
        self._node_of: dict[Tag, NodeRef] = {}  # monitor ref -> the node its target is on
        self._watchers: dict[NodeRef, dict[Tag, Pid]] = {}  # node -> {ref: local target} for its watchers
        self._watcher_node: dict[Tag, NodeRef] = {}
        self._settled: dict[object, None] = {}  # monitor refs and (local, remote) links, oldest first
        self._moves: OrderedDict[Pid, int] = OrderedDict()  # pid -> the moves of its latest notice, oldest first

    # -- links ------------------------------------------------------------------

    def add_link(self, node: NodeRef, local: Pid, remote: Pid) -> None:
        pair = (local, remote)
        if self._settled:
            self._settled.pop(pair, None)  # linked afresh: its exit is this link's
        old = self._link_node.get(pair)
        if old is not None and old != node:
            self._links[old].discard(pair)
        self._links.setdefault(node, set()).add(pair)
        self._link_node[pair] = node

    def drop_link(self, local: Pid, remote: Pid) -> None:
        pair = (local, remote)
        node = self._link_node.pop(pair, None)
        if node is not None:
            self._links[node].discard(pair)

    # -- monitors held here on remote processes ------------------------------------

    def add_monitor(self, node: NodeRef, ref: Tag, watcher: Pid, target: Pid) -> None:
        self._monitors.setdefault(node, {})[ref] = (watcher, target)
        self._node_of[ref] = node

    def drop_monitor(self, ref: Tag) -> tuple[NodeRef, Pid] | None:
        """Forget monitor ``ref``; return its node and target, or None if unknown."""
        node = self._node_of.pop(ref, None)
        if node is None:
            return None
        entry = self._monitors.get(node, {}).pop(ref, None)
        return None if entry is None else (node, entry[1])

    # -- monitors remote processes hold on local ones --------------------------------

    def add_watcher(self, node: NodeRef, ref: Tag, target: Pid) -> None:
        old = self._watcher_node.get(ref)
        if old is not None and old != node:  # its watcher moved: the node it left is not its any more
            self._watchers[old].pop(ref, None)
        self._watchers.setdefault(node, {})[ref] = target
        self._watcher_node[ref] = node

    def drop_watcher(self, ref: Tag) -> None:
        node = self._watcher_node.pop(ref, None)
        if node is not None:
            self._watchers[node].pop(ref, None)

    def involves(self, node: NodeRef) -> bool:
        """Whether any link or monitor is recorded under ``node``: its session must not be suspended
        (its loss would not be seen, and they would never fire)."""
        return bool(self._links.get(node) or self._monitors.get(node) or self._watchers.get(node))

    # -- a node lost, a process moved or ended ----------------------------------------

    def take_node(self, node: NodeRef) -> Lost:
        """Remove and return everything that involves ``node``; its links and monitors fire now, and
        are remembered as settled (a migrant's end may still be told later, by the node it went to)."""
        links = self._links.pop(node, set())
        for pair in links:
            self._link_node.pop(pair, None)
        monitors = self._monitors.pop(node, {})
        for ref in monitors:
            self._node_of.pop(ref, None)
        watchers = self._watchers.pop(node, {})
        for ref in watchers:
            self._watcher_node.pop(ref, None)
        self._settle(links, monitors)
        return Lost(links, monitors, watchers)

    def forget_local(self, pid: Pid) -> None:
        """Local process ``pid`` left this node: its own entries go with it."""
        for pair in [pair for pair in self._link_node if pair[0] == pid]:
            self.drop_link(*pair)
        for watched in self._watchers.values():
            for ref in [ref for ref, target in watched.items() if target == pid]:
                del watched[ref]
                self._watcher_node.pop(ref, None)

    def forget_target(self, pid: Pid) -> list[Tag]:
        """``pid`` now lives here: drop every entry that watched it on another node; return the monitor refs."""
        for pair in [pair for pair in self._link_node if pair[1] == pid]:
            self.drop_link(*pair)
        refs = []
        for watched in self._monitors.values():
            for ref in [ref for ref, (_, target) in watched.items() if target == pid]:
                del watched[ref]
                self._node_of.pop(ref, None)
                refs.append(ref)
        return refs

    def take_target(self, pid: Pid, node: NodeRef) -> Lost:
        """Remove and return the links and monitors to ``pid`` that watch it on ``node``, and
        remember them as settled: they fire now, and a later end notice of ``pid`` is not theirs."""
        links = {pair for pair in self._links.get(node, ()) if pair[1] == pid}
        for pair in links:
            self.drop_link(*pair)
        watched = self._monitors.get(node, {})
        monitors = {ref: entry for ref, entry in watched.items() if entry[1] == pid}
        for ref in monitors:
            del watched[ref]
            self._node_of.pop(ref, None)
        self._settle(links, monitors)
        return Lost(links, monitors, {})

    def _settle(self, links, monitors) -> None:
        settled = self._settled
        settled.update(dict.fromkeys(links))
        settled.update(dict.fromkeys(monitors))
        while len(settled) > _REMEMBER_SETTLED:
            del settled[next(iter(settled))]

    def take_severed(self, pid: Pid, refs, partners) -> Lost:
        """Remove and return the monitors ``refs`` on ``pid`` and the links between local
        ``partners`` and ``pid`` that are still held, wherever they watch it: another node
        cut them in a down this node's entries may not have fired for (SEVERED)."""
        links = {(local, pid) for local in partners if (local, pid) in self._link_node}
        for pair in links:
            self.drop_link(*pair)
        monitors = {}
        for ref in refs:
            node = self._node_of.pop(ref, None)
            entry = None if node is None else self._monitors[node].pop(ref, None)
            if entry is not None and entry[1] == pid:
                monitors[ref] = entry
        self._settle(links, monitors)
        return Lost(links, monitors, {})

    def holds_monitor(self, ref: Tag) -> bool:
        return ref in self._node_of

    def cancel_monitor(self, ref: Tag) -> tuple[NodeRef, Pid] | None:
        """Forget monitor ``ref`` as its watcher undoes it: a Down for it still on its way is dropped when it
        comes (as Erlang's demonitor promises).  Return its node and target, or None if unknown."""
        entry = self.drop_monitor(ref)
        if entry is not None:
            self._settle((), (ref,))
        return entry

    def fired(self, ref: Tag) -> None:
        """Monitor ``ref``, whose watch another node holds (a migrant's, made before it came), fired or
        was undone here: a copy of its ``Down`` still on its way is dropped when it comes."""
        self._settle((), (ref,))

    def settled(self, key) -> bool:
        """Whether a Down (by its ref) or a link's exit (local, remote) already fired here; forgets it."""
        return bool(self._settled) and self._settled.pop(key, 0) is None

    def move_target(self, pid: Pid, node: NodeRef, moves: int | None = None) -> None:
        """``pid`` now lives on ``node``: links and monitors to it, and its monitors here, watch that node.

        ``moves``: how many moves it had made when it got there.  Notices of
        two moves come from two nodes, so the older can arrive last: it is
        ignored (a watch left on a node the process has left would not fire
        when the node it is on is lost).
        """
        if moves is not None:
            if moves <= self._moves.get(pid, -1):
                return
            self._moves[pid] = moves
            self._moves.move_to_end(pid)
            while len(self._moves) > _REMEMBER_SETTLED:
                self._moves.popitem(last=False)
        for pair in [pair for pair, old in self._link_node.items() if pair[1] == pid and old != node]:
            self.add_link(node, *pair)
        for old, watched in list(self._monitors.items()):
            if old != node:
                for ref in [ref for ref, (_, target) in watched.items() if target == pid]:
                    self._monitors.setdefault(node, {})[ref] = watched.pop(ref)
                    self._node_of[ref] = node
