"""The balancer as a supervised child: its child spec, and a supervisor of its own for scripts.

The balancer (termite._balance.balancer) is one per cluster, held to that by
its global name.  It belongs in the program's supervision tree, on the node
where the program's driver runs (a node that runs no work: the balancer
evens out the nodes its node's dispatcher dispatches to)::

    sup = supervisor.start([
        termite.balancer_spec(interval=1.0),
        ChildSpec("worker-1", crunch, node=termite.LEAST_LOADED, balance=True),
        ...
    ])

``start_balancer`` is the same for a script that has no tree: a supervisor
of one child.  A balancer that crashes is restarted; a second one in the
cluster cannot claim the name, and its start fails.
"""

from __future__ import annotations

from termite._balance.balancer import BALANCER, balancer, check_balancer_args
from termite._behaviours.childspec import ChildSpec, SupervisorError
from termite._core.errors import DeadProcess
from termite._net.global_names import whereis_global
from termite._behaviours.supervisor import start, which_children

__all__ = ["balancer_spec", "start_balancer"]


def balancer_spec(id="balancer", *, interval: float = 1.0, margin: float = 1.0, window: int = 2,
                  cooldown: float | None = None) -> ChildSpec:
    """The child spec of the cluster's balancer (global name ``"termite.balancer"``); knobs as ``start_balancer``."""
    knobs = check_balancer_args(interval, margin, window, cooldown)
    return ChildSpec(id, balancer, args=knobs, name=("global", BALANCER), shutdown=1.0)


async def start_balancer(*, interval: float = 1.0, margin: float = 1.0, window: int = 2,
                         cooldown: float | None = None, link: bool = False):
    """Start the cluster's balancer under a supervisor of its own; return the supervisor's pid once it runs.

    Every ``interval`` seconds it looks at the loads; a node over the mean
    by more than ``margin`` in ``window`` consecutive reports sheds half the
    difference to the least-loaded node, then it waits ``cooldown`` seconds
    (2 intervals by default).  Stop it with ``supervisor.stop(pid)``;
    ``link=True`` ties it to the caller.  Raises ``SupervisorError`` if a
    balancer already runs in the cluster.
    """
    sup = start([balancer_spec(interval=interval, margin=margin, window=window, cooldown=cooldown)],
                intensity=3, period=5.0, link=link)
    try:
        await which_children(sup)  # answered once the balancer has started and holds its name
    except DeadProcess:
        holder = whereis_global(BALANCER)
        why = f"one runs already ({holder})" if holder is not None else "see the log of termite.supervisor"
        raise SupervisorError(f"the balancer could not start: {why}", kind="failed_to_start_child") from None
    return sup
