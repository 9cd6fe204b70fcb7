"""Supervisors: processes that start, watch and restart other processes.

Two kinds, both from the paper's section 5.3:

- Erlang/OTP's supervisor, which the paper points to ("a more general
  abstraction would be able to supervise multiple processes at the same time,
  with a policy determining the relation between those supervised processes"):
  a list of *child specs*, a restart *strategy*, a restart *intensity*.
  Like OTP's, it is a gen_server (``termite._behaviours.supervisor`` lists
  its callbacks).
- The paper's own transparent supervisor, :func:`spawn_thunk_supervised`:
  messages sent to it reach its one worker.

A recipe::

    from termite import supervisor
    from termite.supervisor import ChildSpec

    async def main():
        sup = supervisor.start([
            ChildSpec("db", db_server, args=("/var/db",), name="db"),
            ChildSpec("web", web_server, restart="transient", shutdown=2.0),
        ], strategy="rest_for_one", intensity=3, period=5.0)
        await termite.call("db", ("get", "k"))       # the name finds the current child
        print(await supervisor.which_children(sup))

``start`` returns the supervisor's pid once every child has been spawned (so a
child's registered name can be used at once); a child that cannot be spawned
(its name is taken, say) raises :class:`SupervisorError` there.  From plain Python:
``node.run(supervisor.start, children)``, and ``node.run(supervisor.which_children, sup)``.

Child specs (:class:`ChildSpec`, or a dict with the same keys, as Erlang's
maps): ``id``; ``start`` and ``args``, a process body as ``spawn`` takes it;
``restart``: ``"permanent"`` (always restarted), ``"transient"`` (restarted
unless it ended normally: reason ``"normal"``, ``"shutdown"`` or
``("shutdown", ...)``), ``"temporary"`` (never restarted; forgotten when it
ends); ``shutdown``: seconds to wait for the child to end after the exit
signal ``"shutdown"`` before killing it, ``"brutal_kill"`` to kill at once, or
``"infinity"`` (the default for a supervisor; 5 s for a worker); ``type``:
``"worker"`` or ``"supervisor"``; ``name``: registered for the child, so
clients find the new process after a restart (``"db"`` on the node it runs
on, ``("global", "db")`` on every node); ``node``: a ``NodeRef`` to pin the
child to another node, or a placement (below); ``balance=True``: the child
opts in to the cluster's balancer, which may ask it to migrate at its
``termite.checkpoint()``s (README, "Rebalancing by migration").

Strategies, when a child ends and must be restarted:

- ``one_for_one``: only that child is restarted;
- ``one_for_all``: the others are shut down (in reverse start order) and all
  are started again, in start order;
- ``rest_for_one``: the children started after it are shut down (in reverse
  order), then it and they are started again, in order.

A restarted child is a *new* process with a new pid.  Temporary children
that a sibling's failure shuts down are not restarted.

Restart intensity: more than ``intensity`` restarts within ``period`` seconds
and the supervisor gives up: it logs one line, shuts down every child (in
reverse start order) and exits with reason ``"shutdown"``, which its own
supervisor (or a linked process) sees.

Shutdown: a child gets the exit signal ``"shutdown"``; a child that traps exits
receives ``Exit(sup, "shutdown")`` and may clean up and end.  The supervisor
watches it with a monitor and kills it when its ``shutdown`` time is up.

The supervisor traps exits.  An exit signal from its *parent* (the process
that called ``start(..., link=True)``, or the supervisor above it) shuts it
down with the parent's reason, whatever that reason is, as in OTP; exits of
other linked processes are ignored.

Children on other nodes, pinned: ``ChildSpec(..., node=ref)`` starts the
child by a remote spawn, linked to the supervisor.  A lost node ends the
child with reason ``"noconnection"``, a crash like any other.  It is
restarted on that node: if the node is no longer connected, the supervisor
first reaches the same host and port again (``connect``, 1 s), so a node
restarted there (a new incarnation) gets the child back; if nothing answers,
the start fails, which counts as a further restart, so a node that stays
away soon makes the supervisor give up (as Erlang's does).

Children placed by load: ``ChildSpec(..., node=LEAST_LOADED)`` (or
``SPREAD``, or a function from ``{node: Load}`` to a node), or
``start(children, placement="least_loaded")`` for every child without a
``node``.  The node is chosen at every start and restart, by the same
choice ``dispatch`` makes (``termite._behaviours.placement`` says which
nodes are candidates).  So a placed child whose node is lost fails over:
its ``"noconnection"`` restart (counted against the intensity as any
restart) goes to a node still connected, and its name follows it (a global
name is freed from the lost process and given to the new one before the
restart is done).  Placed children, and children with a global name, wait
for answers to start: ``start`` spawns the children before the first of them
itself, and the supervisor starts that one and the rest, in order, before
it answers any call.

A supervisor below another: ``nested(id, children, strategy=...)``, which is
``ChildSpec(id, supervise, args=(children, strategy, intensity, period),
type="supervisor")``; ``start`` starts the whole tree.

What each operation (``await supervisor.X(sup, ...)``, a ``call`` to the
supervisor) does:

=============================  ================================================
operation                      the supervisor
=============================  ================================================
``which_children(sup)``        lists ``ChildInfo(id, pid, type)`` in start
                               order; ``pid`` is None for a child not running
``count_children(sup)``        ``ChildCounts(specs, active, supervisors,
                               workers)``
``start_child(sup, spec)``     adds the spec after the others and starts it;
                               returns its pid (``ChildSpecError`` for an id
                               in use)
``terminate_child(sup, id)``   shuts the child (an id or a pid) down; keeps
                               its spec (a temporary child's spec goes)
``restart_child(sup, id)``     starts a terminated child again; its new pid
``delete_child(sup, id)``      forgets the spec of a terminated child
``stop(sup)``                  shuts every child down, answers, ends normally
=============================  ================================================

A request the supervisor refuses raises :class:`SupervisorError` in the caller,
its ``kind`` saying why (``"not_found"``, ``"running"``,
``"already_started"``, ``"failed_to_start_child"``).
"""

from termite._behaviours.childspec import (
    RESTARTS,
    STRATEGIES,
    TYPES,
    WORKER_SHUTDOWN,
    ChildCounts,
    ChildInfo,
    ChildSpec,
    ChildSpecError,
    SupervisorError,
    child_spec,
)
from termite._behaviours.placement import LEAST_LOADED, SPREAD
from termite._behaviours.supervisor import (
    RECONNECT_TIMEOUT,
    count_children,
    delete_child,
    nested,
    restart_child,
    start,
    start_child,
    stop,
    supervise,
    terminate_child,
    which_children,
)
from termite._behaviours.transparent import spawn_thunk_supervised

__all__ = [
    "ChildSpec",
    "ChildSpecError",
    "SupervisorError",
    "ChildInfo",
    "ChildCounts",
    "start",
    "supervise",
    "nested",
    "which_children",
    "count_children",
    "start_child",
    "terminate_child",
    "restart_child",
    "delete_child",
    "stop",
    "spawn_thunk_supervised",
    "LEAST_LOADED",
    "SPREAD",
]

# Shown (in reprs, crash reports, pickles by reference) under this public path.
for _name in [*__all__, "child_spec"]:
    if callable(globals()[_name]):  # not the placements: they are strs
        globals()[_name].__module__ = __name__
del _name
