"""Links and monitors that cross to another node, kept by node so a lost node fires them.

A link or monitor between a local process and a process of another node is
recorded here under that node, so that when the node is lost each of them
fires ``"noconnection"`` (termite._net.endpoint).  Migration moves entries
when a process changes node (:meth:`Watches.move_target`).
"""

from __future__ import annotations

from termite._core.ids import NodeRef, Pid, Tag

__all__ = ["Watches"]


class Watches:
    def __init__(self):
        self._links: dict[NodeRef, set[tuple[Pid, Pid]]] = {}  # node -> {(local, remote)}
        self._monitors: dict[NodeRef, dict[Tag, tuple[Pid, Pid]]] = {}  # node -> {ref: (watcher, target)}
        self._node_of: dict[Tag, NodeRef] = {}  # monitor ref -> the node its target is on

    # -- links ------------------------------------------------------------------

    def add_link(self, node: NodeRef, local: Pid, remote: Pid) -> None:
        self._links.setdefault(node, set()).add((local, remote))

    def drop_link(self, node: NodeRef, local: Pid, remote: Pid) -> None:
        links = self._links.get(node)
        if links:
            links.discard((local, remote))

    # -- monitors ---------------------------------------------------------------

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

    # -- a node lost, a process moved ---------------------------------------------

    def take_node(self, node: NodeRef) -> tuple[set, dict]:
        """Remove and return the links ``{(local, remote)}`` and monitors ``{ref: (watcher, target)}`` to ``node``."""
        monitors = self._monitors.pop(node, {})
        for ref in monitors:
            self._node_of.pop(ref, None)
        return self._links.pop(node, set()), monitors

    def forget_target(self, pid: Pid) -> list[Tag]:
        """``pid`` now lives here: drop every entry that watched it on another node; return the monitor refs."""
        for pairs in self._links.values():
            pairs.difference_update([pair for pair in pairs if pair[1] == pid])
        refs = []
        for watched in self._monitors.values():
            for ref in [ref for ref, (_, target) in watched.items() if target == pid]:
                del watched[ref]
                self._node_of.pop(ref, None)
                refs.append(ref)
        return refs

    def move_target(self, pid: Pid, node: NodeRef) -> None:
        """``pid`` now lives on ``node``: links and monitors to it watch that node."""
        for old, pairs in list(self._links.items()):
            if old != node:
                mine = [pair for pair in pairs if pair[1] == pid]
                if mine:
                    pairs.difference_update(mine)
                    self._links.setdefault(node, set()).update(mine)
        for old, watched in list(self._monitors.items()):
            if old != node:
                for ref in [ref for ref, (_, target) in watched.items() if target == pid]:
                    self._monitors.setdefault(node, {})[ref] = watched.pop(ref)
                    self._node_of[ref] = node
