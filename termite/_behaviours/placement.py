"""Placement: which node a supervisor starts a placed child on, asked at every start and restart.

A child is *pinned* (``node=ref``: always that node), *local* (``node=None``
under a supervisor without ``placement``: the supervisor's node) or *placed*
(``node=`` one of the placements below, or ``node=None`` under a supervisor
started with ``placement=`` one of them).  A placed child's node is chosen
anew each time it starts, so a restart after its node was lost
(``noconnection``) goes to a node that is still there.

==================  ===========================================================
placement           the node
==================  ===========================================================
``LEAST_LOADED``    the least-loaded node: the dispatcher's choice
                    (``termite._balance.dispatch``, the same one ``dispatch``
                    makes, by ``Load.value``); equal loads go round
``SPREAD``          the next candidate, in address order: round-robin, kept
                    by each supervisor over its own children
``fn(loads)``       what ``fn`` returns, given ``{node: Load or None}`` for
                    the candidates: one of them, or None for the
                    supervisor's own node
==================  ===========================================================

The candidates are the nodes of the supervisor's node's dispatcher: every
connected node, not the supervisor's own unless that dispatcher was started
with ``include_self=True`` (or the node has no network: then it is the only
one).  With no candidate, a placed child starts on the supervisor's node: it
is better run near its supervisor than not at all.  Loads are only as fresh
as the dispatcher's reports (``start_dispatcher(interval=...)``).
"""

from __future__ import annotations

from collections.abc import Callable

from termite._balance.dispatch import loads, place
from termite._core.ids import NodeRef
from termite._core.process import current

__all__ = ["LEAST_LOADED", "SPREAD", "PLACEMENTS", "is_placement", "Placer"]

LEAST_LOADED = "least_loaded"
SPREAD = "spread"
PLACEMENTS = (LEAST_LOADED, SPREAD)

#: Seconds to wait for this node's dispatcher (a local process) to answer.
ASK_TIMEOUT = 5.0


def is_placement(value) -> bool:
    """A value that ``ChildSpec(node=...)`` and ``placement=`` take as a placement."""
    return value in PLACEMENTS if value.__class__ is str else callable(value)


class Placer:
    """One supervisor's placements: the round-robin of ``SPREAD`` is its own."""

    def __init__(self):
        self.turn = 0

    async def node_for(self, how: str | Callable) -> NodeRef:
        """The node to start a child placed by ``how`` on."""
        here = current().table.ref
        if how == LEAST_LOADED:
            node = await place(timeout=ASK_TIMEOUT)
            return here if node is None else node
        known = await loads(timeout=ASK_TIMEOUT)
        if not known:
            return here
        if how == SPREAD:
            candidates = sorted(known, key=lambda n: (n.host, n.port, n.incarnation))
            node = candidates[self.turn % len(candidates)]
            self.turn += 1
            return node
        node = how(known)
        if node is None:
            return here
        if node not in known:
            raise ValueError(
                f"placement {getattr(how, '__qualname__', how)!r} returned {node!r}, which is not one of the "
                f"nodes it was given ({', '.join(map(str, known))}) nor None (the supervisor's node)"
            )
        return node
