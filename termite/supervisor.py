"""Supervisors: processes that start, watch and restart other processes.

Two kinds, both from the paper's section 5.3:

- Erlang/OTP's supervisor, which the paper points to ("a more general
  abstraction would be able to supervise multiple processes at the same time,
  with a policy determining the relation between those supervised processes"):
  a list of *child specs*, a restart *strategy*, a restart *intensity*.
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
clients find the new process after a restart; ``node``: a ``NodeRef`` to run
the child on another node.

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

Children on other nodes: ``ChildSpec(..., node=ref)`` starts the child by a
remote spawn, linked to the supervisor.  A lost node ends the child with
reason ``"noconnection"``, a crash like any other.  It is restarted on that
node: if the node is no longer connected, the supervisor first reaches the
same host and port again (``connect``, 1 s), so a node restarted there (a new
incarnation) gets the child back; if nothing answers, the start fails, which
counts as a further restart, so a node that stays away soon makes the
supervisor give up.

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

from __future__ import annotations

import dataclasses
import inspect
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple

from termite._call import call
from termite._distribution import connect, nodes
from termite._errors import Crash, Exited, TermiteError
from termite._ids import NodeRef, Pid, Tag
from termite._links import Down, Exit, monitor, trap_exit, unlink
from termite._links import exit as exit_signal
from termite._mailbox import receive, send
from termite._patterns import ANY
from termite._process import ProcessTable, current
from termite._registry import unregister
from termite._spawn import spawn, spawn_in

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
]

log = logging.getLogger("termite.supervisor")

STRATEGIES = ("one_for_one", "one_for_all", "rest_for_one")
RESTARTS = ("permanent", "transient", "temporary")
TYPES = ("worker", "supervisor")
WORKER_SHUTDOWN = 5.0  # seconds: Erlang's default for a worker
#: How long a supervisor tries to reach the host and port of a lost node before a restart there fails.
RECONNECT_TIMEOUT = 1.0


# -- errors -------------------------------------------------------------------


class SupervisorError(TermiteError):
    """A supervisor could not start, or refused an operation; ``kind`` says why."""

    def __init__(self, text: str, *, kind: str | None = None):
        super().__init__(text)
        self.kind = kind


class ChildSpecError(SupervisorError, ValueError):
    """A child spec with a bad field: ``child`` (its id), ``field`` and ``value`` name it."""

    def __init__(self, text: str, *, child=None, field: str | None = None, value=None, kind: str = "bad_spec"):
        super().__init__(text, kind=kind)
        self.child = child
        self.field = field
        self.value = value


# -- child specs: validated data, one small check per field ----------------------


def _bad(spec_id, field: str, value, allowed: str) -> ChildSpecError:
    return ChildSpecError(f"child {spec_id!r}: {field}={value!r} {allowed}", child=spec_id, field=field, value=value)


def _check_start(spec_id, start) -> None:
    if inspect.iscoroutine(start):
        name = getattr(start, "__qualname__", "f")
        start.close()  # never started: close it so Python does not warn it was never awaited
        raise ChildSpecError(
            f"child {spec_id!r}: start is a coroutine, not a function; write start={name}, args=(...) "
            f"instead of start={name}(...)",
            child=spec_id, field="start", value=start,
        )
    if not callable(start):
        raise _bad(spec_id, "start", start, "is not a function; start is the child's process body, as spawn takes it")
    if inspect.isasyncgenfunction(start) or inspect.isgeneratorfunction(start):
        raise _bad(spec_id, "start", start, "is a generator function; a process body is an async def function")


def _check_shutdown(spec_id, shutdown):
    if shutdown in ("brutal_kill", "infinity"):
        return shutdown
    if isinstance(shutdown, (int, float)) and not isinstance(shutdown, bool) and shutdown >= 0:
        return "infinity" if shutdown == math.inf else float(shutdown)
    raise _bad(spec_id, "shutdown", shutdown, 'is not a number of seconds >= 0, "brutal_kill" or "infinity"')


@dataclasses.dataclass(frozen=True)
class ChildSpec:
    """What a supervisor needs to start, restart and stop one child (Erlang's child spec).

    ``ChildSpec("db", db_server, args=(path,), restart="permanent",
    shutdown=5.0, type="worker", name="db", node=None)``.  Every field is
    checked when the spec is made; a bad one raises :class:`ChildSpecError`
    naming the child, the field and the value.  ``shutdown=None`` means 5 s
    for a worker and ``"infinity"`` for a supervisor.
    """

    id: Any
    start: Callable
    args: tuple = ()
    restart: str = "permanent"
    shutdown: float | str | None = None
    type: str = "worker"
    name: str | None = None
    node: NodeRef | None = None

    def __post_init__(self):
        spec_id = self.id
        try:
            hash(spec_id)
        except TypeError:
            raise ChildSpecError(
                f"child id {spec_id!r} is not hashable; use a str, an int or a tuple of them",
                child=spec_id, field="id", value=spec_id,
            ) from None
        if spec_id is None:
            raise _bad(spec_id, "id", spec_id, "is not allowed; every child needs an id (a str, say)")
        _check_start(spec_id, self.start)
        if not isinstance(self.args, (tuple, list)):
            raise _bad(spec_id, "args", self.args, "is not a tuple of arguments for start")
        object.__setattr__(self, "args", tuple(self.args))
        if self.restart not in RESTARTS:
            raise _bad(spec_id, "restart", self.restart, f"is not one of {', '.join(RESTARTS)}")
        if self.type not in TYPES:
            raise _bad(spec_id, "type", self.type, f"is not one of {', '.join(TYPES)}")
        shutdown = self.shutdown
        if shutdown is None:
            shutdown = "infinity" if self.type == "supervisor" else WORKER_SHUTDOWN
        object.__setattr__(self, "shutdown", _check_shutdown(spec_id, shutdown))
        if self.name is not None and (not isinstance(self.name, str) or not self.name):
            raise _bad(spec_id, "name", self.name, "is not a non-empty str (the name to register the child under)")
        if self.node is not None:
            if not isinstance(self.node, NodeRef):
                raise _bad(spec_id, "node", self.node, "is not a NodeRef (from termite.connect() or nodes())")
            if self.node.incarnation is None:
                raise _bad(spec_id, "node", self.node, "is an address, not a node: get its NodeRef from termite.connect()")
        if self.start is supervise:
            try:
                _flags(*self.args)
            except TypeError as exc:
                raise _bad(spec_id, "args", self.args, f"do not fit supervise(children, strategy, intensity, period): {exc}") from None
            except ChildSpecError as exc:
                raise ChildSpecError(f"child {spec_id!r}: {exc}", child=exc.child, field=exc.field, value=exc.value) from None
            except ValueError as exc:
                raise _bad(spec_id, "args", self.args, f"are not a supervisor's: {exc}") from None


_FIELDS = tuple(f.name for f in dataclasses.fields(ChildSpec))


def child_spec(spec) -> ChildSpec:
    """A :class:`ChildSpec` from a ChildSpec or a dict with its keys (``id`` and ``start`` required)."""
    if isinstance(spec, ChildSpec):
        return spec
    if isinstance(spec, dict):
        spec_id = spec.get("id")
        unknown = [key for key in spec if key not in _FIELDS]
        if unknown:
            raise ChildSpecError(
                f"child {spec_id!r}: unknown field {unknown[0]!r}; a child spec has {', '.join(_FIELDS)}",
                child=spec_id, field=unknown[0], value=spec[unknown[0]],
            )
        for key in ("id", "start"):
            if key not in spec:
                raise ChildSpecError(f"child {spec_id!r}: no {key!r}; a child spec needs id and start",
                                     child=spec_id, field=key)
        return ChildSpec(**spec)
    raise ChildSpecError(
        f"a child spec is a ChildSpec or a dict with keys {', '.join(_FIELDS)}; got {type(spec).__name__}: {spec!r}",
        value=spec,
    )


def _flags(children, strategy="one_for_one", intensity=3, period=5.0):
    """The checked arguments of a supervisor: (specs, strategy, intensity, period)."""
    if isinstance(children, (str, bytes, dict)) or not hasattr(children, "__iter__"):
        raise TypeError(f"children must be a list of child specs, got {type(children).__name__}: {children!r}")
    specs = [child_spec(spec) for spec in children]
    seen = {}
    for i, spec in enumerate(specs):
        if spec.id in seen:
            raise ChildSpecError(
                f"duplicate child id {spec.id!r} (children {seen[spec.id]} and {i}); each child needs its own id",
                child=spec.id, field="id", value=spec.id, kind="duplicate_id",
            )
        seen[spec.id] = i
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy={strategy!r} is not one of {', '.join(STRATEGIES)}")
    if not isinstance(intensity, int) or isinstance(intensity, bool) or intensity < 0:
        raise ValueError(f"intensity={intensity!r} is not a whole number of restarts >= 0")
    if not isinstance(period, (int, float)) or isinstance(period, bool) or not period > 0:
        raise ValueError(f"period={period!r} is not a number of seconds > 0")
    return specs, strategy, intensity, float(period)


class ChildInfo(NamedTuple):
    """One child, as ``which_children`` lists it; ``pid`` is None when it is not running."""

    id: Any
    pid: Pid | None
    type: str


@dataclasses.dataclass(frozen=True)
class ChildCounts:
    """What ``count_children`` answers."""

    specs: int
    active: int
    supervisors: int
    workers: int


def _is_normal(reason) -> bool:
    """An end that a transient child is not restarted after."""
    if reason.__class__ is str:
        return reason in ("normal", "shutdown")
    return reason.__class__ is tuple and len(reason) == 2 and reason[0] == "shutdown"


class _StartFailed(NamedTuple):
    """A supervisor's note to itself: a child could not be started; treated as its crash."""

    id: Any
    reason: Any


class _Child:
    __slots__ = ("spec", "pid", "node")

    def __init__(self, spec: ChildSpec):
        self.spec = spec
        self.pid: Pid | None = None
        self.node = spec.node  # where it runs: a node restarted at that address is a new NodeRef


# -- starting a child: the one place a supervisor spawns ----------------------------


def _spawn_child(table: ProcessTable, sup: Pid, child: _Child) -> Pid:
    """Spawn ``child`` linked to the supervisor ``sup``, from whichever process runs this."""
    spec, node = child.spec, child.node
    if node is not None and node == table.ref:
        node = None
    if spec.start is supervise and node is None:
        # A supervisor below: started here and now, children included, so a
        # whole tree is up (and its names registered) when start() returns.
        return _start_tree(table, *_flags(*spec.args), parents=(sup,), name=spec.name)
    if node is None:
        return spawn_in(table, spec.start, spec.args, link_to=sup, name=spec.name)
    if table.remote is None:
        raise SupervisorError(f"child {spec.id!r} is for node {node}, but this node is not connected to other nodes")
    return table.remote.spawn(spec.start, spec.args, node, link_to=sup, name=spec.name)


def _start_tree(table, specs, strategy, intensity, period, *, parents=(), name=None) -> Pid:
    """Spawn a supervisor and its children (linked to it) from the calling process; its pid."""
    state = _Supervisor(specs, strategy, intensity, period, parents)
    parent = parents[0] if parents else None
    state.pid = pid = spawn_in(table, _run, (state,), link_to=parent, name=name)
    for child in state.children:
        try:
            child.pid = _spawn_child(table, pid, child)
        except Exception as exc:
            # The supervisor, when it first runs, unlinks from its parent and
            # shuts down the children already started.
            state.failed = True
            if name is not None:
                unregister(name)
            raise SupervisorError(
                f"could not start child {child.spec.id!r}: {type(exc).__name__}: {exc}", kind="failed_to_start_child"
            ) from exc
    return pid


def start(children, strategy: str = "one_for_one", intensity: int = 3, period: float = 5.0, *,
          name: str | None = None, link: bool = False) -> Pid:
    """Start a supervisor of ``children`` (child specs, started in order) and return its pid.

    Every child has been spawned when it returns.  More than ``intensity``
    restarts within ``period`` seconds make the supervisor give up (see the
    module's docstring).  ``name`` registers the supervisor; ``link=True``
    links it to the caller, whose end (for any reason) then shuts it down.
    Bad specs raise :class:`ChildSpecError`; a child that cannot be spawned,
    :class:`SupervisorError`.
    """
    specs, strategy, intensity, period = _flags(children, strategy, intensity, period)
    me = current()
    return _start_tree(me.table, specs, strategy, intensity, period, parents=(me.pid,) if link else (), name=name)


async def supervise(children, strategy: str = "one_for_one", intensity: int = 3, period: float = 5.0):
    """Be a supervisor of ``children``: a process body, for ``spawn`` or a child spec.

    ``spawn(supervise, children, "one_for_all", link=True)``, or on another
    node with ``spawn(..., node=ref)``.  The processes linked to it when it
    starts are its parents.  A child spec of a supervisor below another is
    ``ChildSpec(id, supervise, args=(children, strategy, ...), type="supervisor")``
    (see :func:`nested`).
    """
    specs, strategy, intensity, period = _flags(children, strategy, intensity, period)
    me = current()
    state = _Supervisor(specs, strategy, intensity, period, tuple(me.links or ()))
    state.pid = me.pid
    state.started = False
    await _run(state)


def nested(id, children, strategy: str = "one_for_one", intensity: int = 3, period: float = 5.0, *,
           restart: str = "permanent", shutdown="infinity", name: str | None = None,
           node: NodeRef | None = None) -> ChildSpec:
    """The child spec of a supervisor below this one: ``ChildSpec(id, supervise, ..., type="supervisor")``."""
    return ChildSpec(id, supervise, args=(list(children), strategy, intensity, period), restart=restart,
                     shutdown=shutdown, type="supervisor", name=name, node=node)


# -- the supervisor process -----------------------------------------------------------


class _Supervisor:
    """A supervisor's state, and what it does with each message."""

    def __init__(self, specs, strategy, intensity, period, parents):
        self.children = [_Child(spec) for spec in specs]  # in start order
        self.strategy = strategy
        self.intensity = intensity
        self.period = period
        self.parents = tuple(parents)
        self.restarts: deque[float] = deque()
        self.pid: Pid | None = None
        self.started = True  # children spawned by _start_tree; supervise() starts its own
        self.failed = False  # _start_tree could not start them all

    def __repr__(self):
        return f"supervisor {self.pid}"

    def child(self, key) -> _Child | None:
        for child in self.children:
            if child.spec.id == key or (key.__class__ is Pid and child.pid == key):
                return child
        return None

    # -- starting and stopping children --

    async def start(self, child: _Child) -> bool:
        """Start ``child``; if that fails, send ourselves a note to treat it as a crash."""
        try:
            child.pid = await self.spawn(child)
            return True
        except Exception as exc:  # noqa: BLE001 - a child that cannot start counts as a crash
            log.error("%s: could not start child %r: %s: %s", self, child.spec.id, type(exc).__name__, exc)
            send(self.pid, _StartFailed(child.spec.id, Crash.from_exception(exc)))
            return False

    async def spawn(self, child: _Child) -> Pid:
        table = current().table
        node = child.node
        if node is not None and node != table.ref and node not in nodes():
            # Lost: reach its address again; a node restarted there is a new incarnation.
            child.node = await connect(node.host, node.port, timeout=RECONNECT_TIMEOUT)
        return _spawn_child(table, self.pid, child)

    async def terminate(self, child: _Child):
        """Shut ``child`` down (exit signal "shutdown", then kill); return its exit reason."""
        pid, child.pid = child.pid, None
        if pid is None:
            return None
        ref = monitor(pid)
        gone = Down(ref, pid, ANY)
        how = child.spec.shutdown
        if how == "brutal_kill":
            exit_signal(pid, "kill")
            down = await receive(gone)
        elif how == "infinity":
            exit_signal(pid, "shutdown")
            down = await receive(gone)
        else:
            exit_signal(pid, "shutdown")
            down = await receive(gone, timeout=how, default=None)
            if down is None:
                log.info("%s: child %r (%s) did not end within %s s of shutdown: killing it", self, child.spec.id, pid, how)
                exit_signal(pid, "kill")
                down = await receive(gone)
        await receive(Exit(pid, ANY), timeout=0, default=None)  # its link's Exit, if it came first
        return down.reason

    async def terminate_all(self) -> None:
        for child in reversed(self.children):
            if child.pid is not None:
                await self.terminate(child)

    # -- restarts --

    def may_restart(self) -> bool:
        """Count a restart now; False when that makes more than ``intensity`` within ``period``."""
        now = time.monotonic()
        restarts = self.restarts
        restarts.append(now)
        while restarts and restarts[0] < now - self.period:
            restarts.popleft()
        return len(restarts) <= self.intensity

    async def child_ended(self, child: _Child, reason) -> None:
        child.pid = None
        spec = child.spec
        if spec.restart == "temporary":
            self.children.remove(child)
            log.info("%s: temporary child %r ended: %s", self, spec.id, reason)
            return
        if spec.restart == "transient" and _is_normal(reason):
            log.info("%s: transient child %r ended: %s", self, spec.id, reason)
            return
        if not self.may_restart():
            log.error(
                "%s: reached max restart intensity (more than %d restarts in %s s; child %r ended: %s): shutting down",
                self, self.intensity, self.period, spec.id, reason,
            )
            await self.terminate_all()
            raise Exited(self.pid, "shutdown")
        log.info("%s: child %r ended: %s; restarting (%s)", self, spec.id, reason, self.strategy)
        if self.strategy == "one_for_one":
            group = [child]
        elif self.strategy == "one_for_all":
            group = list(self.children)
        else:
            group = self.children[self.children.index(child):]
        for other in reversed(group):
            if other.pid is not None:
                await self.terminate(other)
                if other.spec.restart == "temporary":
                    self.children.remove(other)
        for other in group:
            if other in self.children and other.pid is None:
                await self.start(other)

    # -- requests (call) --

    async def handle_call(self, request):
        """One request: ("ok", value) or ("error", kind, text)."""
        match request:
            case ("which_children",):
                return ("ok", [ChildInfo(c.spec.id, c.pid, c.spec.type) for c in self.children])
            case ("count_children",):
                kinds = [c.spec.type for c in self.children]
                active = sum(c.pid is not None for c in self.children)
                return ("ok", ChildCounts(len(kinds), active, kinds.count("supervisor"), kinds.count("worker")))
            case ("start_child", ChildSpec() as spec):
                existing = self.child(spec.id)
                if existing is not None:
                    kind = "already_started" if existing.pid is not None else "already_present"
                    state = "running" if existing.pid is not None else "present (not running)"
                    return ("error", kind, f"child id {spec.id!r} is already {state} in {self}; each child needs its own id")
                child = _Child(spec)
                try:
                    child.pid = await self.spawn(child)
                except Exception as exc:  # noqa: BLE001 - refused to the caller
                    return ("error", "failed_to_start_child",
                            f"could not start child {spec.id!r}: {type(exc).__name__}: {exc}")
                self.children.append(child)
                return ("ok", child.pid)
            case ("terminate_child", key):
                child = self.child(key)
                if child is None:
                    return ("error", "not_found", f"{self} has no child {key!r}")
                await self.terminate(child)
                if child.spec.restart == "temporary":
                    self.children.remove(child)
                return ("ok", None)
            case ("restart_child", key):
                child = self.child(key)
                if child is None:
                    return ("error", "not_found", f"{self} has no child {key!r}")
                if child.pid is not None:
                    return ("error", "running", f"child {key!r} is running; terminate_child(sup, {key!r}) first")
                try:
                    child.pid = await self.spawn(child)
                except Exception as exc:  # noqa: BLE001 - refused to the caller
                    return ("error", "failed_to_start_child",
                            f"could not start child {key!r}: {type(exc).__name__}: {exc}")
                return ("ok", child.pid)
            case ("delete_child", key):
                child = self.child(key)
                if child is None:
                    return ("error", "not_found", f"{self} has no child {key!r}")
                if child.pid is not None:
                    return ("error", "running", f"child {key!r} is running; terminate_child(sup, {key!r}) first")
                self.children.remove(child)
                return ("ok", None)
        return ("error", "bad_request", f"{self} does not know the request {request!r}")


async def _run(state: _Supervisor):
    """The supervisor process: start (if need be), then serve exits, notes and calls."""
    me = current()
    trap_exit(True)
    if state.failed:  # start() raised in its caller: undo quietly
        for parent in state.parents:
            unlink(parent)
        await state.terminate_all()
        return
    if not state.started:
        for child in state.children:
            if not await state.start(child):
                failed = await receive(_StartFailed)
                log.error("%s: giving up: child %r could not start", state, failed.id)
                await state.terminate_all()
                raise Exited(me.pid, ("failed_to_start_child", failed.id, failed.reason))
        state.started = True
    while True:
        msg = await receive()
        cls = msg.__class__
        if cls is Exit:
            child = state.child(msg.pid)
            if child is not None:
                await state.child_ended(child, msg.reason)
            elif msg.pid in state.parents:
                log.info("%s: parent %s ended (%s): shutting down", state, msg.pid, msg.reason)
                await state.terminate_all()
                raise Exited(me.pid, msg.reason)
            # else: a child that was shut down, or another linked process: not ours to act on
        elif cls is tuple and len(msg) == 3 and msg[0].__class__ is Pid and msg[1].__class__ is Tag:
            sender, tag, request = msg
            if request == ("stop",):
                await state.terminate_all()
                send(sender, (tag, ("ok", None)))
                return
            send(sender, (tag, await state.handle_call(request)))
        elif cls is _StartFailed:
            child = state.child(msg.id)
            if child is not None and child.pid is None:
                await state.child_ended(child, msg.reason)
        else:
            log.warning("%s: dropped a message it does not understand: %.200r", state, msg)


# -- what other processes call ----------------------------------------------------


async def _request(sup, request, timeout):
    reply = await call(sup, request, timeout=timeout)
    if reply[0] == "ok":
        return reply[1]
    _, kind, text = reply
    if kind in ("already_started", "already_present"):
        raise ChildSpecError(text, kind=kind)
    raise SupervisorError(text, kind=kind)


async def which_children(sup, timeout: float | None = None) -> list[ChildInfo]:
    """The children of ``sup``, in start order: ``ChildInfo(id, pid, type)``, pid None if not running."""
    return await _request(sup, ("which_children",), timeout)


async def count_children(sup, timeout: float | None = None) -> ChildCounts:
    """How many child specs ``sup`` has, how many run, how many are supervisors and workers."""
    return await _request(sup, ("count_children",), timeout)


async def start_child(sup, spec, timeout: float | None = None) -> Pid:
    """Add ``spec`` (a ChildSpec or dict) to ``sup``'s children, after the others, and start it; its pid."""
    return await _request(sup, ("start_child", child_spec(spec)), timeout)


async def terminate_child(sup, id, timeout: float | None = None) -> None:
    """Shut the child ``id`` (or pid) down; its spec stays, for restart_child (a temporary child's goes)."""
    await _request(sup, ("terminate_child", id), timeout)


async def restart_child(sup, id, timeout: float | None = None) -> Pid:
    """Start the terminated child ``id`` again; its new pid."""
    return await _request(sup, ("restart_child", id), timeout)


async def delete_child(sup, id, timeout: float | None = None) -> None:
    """Forget the spec of the terminated child ``id``."""
    await _request(sup, ("delete_child", id), timeout)


async def stop(sup, timeout: float | None = None) -> None:
    """Shut every child of ``sup`` down (in reverse start order), then end ``sup`` (reason "normal")."""
    await _request(sup, ("stop",), timeout)


# -- the paper's transparent supervisor ----------------------------------------------


def spawn_thunk_supervised(thunk, *args, intensity: int = 3, period: float = 5.0, shutdown: float = 5.0,
                           link: bool = False, name: str | None = None) -> Pid:
    """The paper's ``spawn-thunk-supervised``: run ``thunk(*args)`` under a supervisor; its pid.

    The supervisor is transparent: every message sent to it goes on to the
    worker (so ``call(sup, msg)`` is answered by the worker).  A worker that
    fails is restarted (more than ``intensity`` failures within ``period``
    seconds and the supervisor gives up, exiting with reason "shutdown"); one
    that ends normally ends the supervisor too.  The message ``"shutdown"``
    is the supervisor's own: it passes it on to the worker as a request to
    end, waits ``shutdown`` seconds, kills a worker that has not ended, and
    ends.  It reports each step on the ``termite.supervisor`` logger at INFO
    level, in the paper's words ("starting up supervised process", "process
    failed", "restarting...", "had to terminate the process", "halting
    supervisor"); each record has the supervisor's pid as ``supervisor``.
    """
    if inspect.iscoroutine(thunk):
        name = getattr(thunk, "__qualname__", "f")
        thunk.close()
        raise TypeError(f"spawn_thunk_supervised() takes the function, not a coroutine: "
                        f"write spawn_thunk_supervised({name}, ...) instead of spawn_thunk_supervised({name}(...))")
    if not callable(thunk):
        raise TypeError(f"spawn_thunk_supervised() needs a function to run as the worker, got {thunk!r}")
    if not isinstance(intensity, int) or isinstance(intensity, bool) or intensity < 0:
        raise ValueError(f"intensity={intensity!r} is not a whole number of restarts >= 0")
    for field, value in (("period", period), ("shutdown", shutdown)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < math.inf:
            raise ValueError(f"{field}={value!r} is not a number of seconds >= 0")
    if period == 0:
        raise ValueError("period=0 is not a number of seconds > 0")
    return spawn(_transparent, thunk, args, intensity, float(period), float(shutdown), link=link, name=name)


async def _transparent(thunk, args, intensity, period, shutdown):
    me = current()
    parents = tuple(me.links or ())
    trap_exit(True)
    restarts: deque[float] = deque()

    def info(text):
        log.info(text, extra={"supervisor": me.pid})

    def start_worker() -> Pid:
        info("starting up supervised process")
        return spawn(thunk, *args, link=True)

    async def stop_worker(worker: Pid) -> None:
        send(worker, "shutdown")  # the request to end; a worker may ignore it
        if await receive(Exit(worker, ANY), timeout=shutdown, default=None) is None:
            exit_signal(worker, "kill")
            await receive(Exit(worker, ANY))
            info("had to terminate the process")
        else:
            info("process ended")

    worker = start_worker()
    while True:
        msg = await receive()
        if msg.__class__ is Exit:
            if msg.pid == worker:
                if msg.reason == "normal":
                    info("process ended")
                    info("halting supervisor")
                    return
                info("process failed")
                now = time.monotonic()
                restarts.append(now)
                while restarts[0] < now - period:
                    restarts.popleft()
                if len(restarts) > intensity:
                    info("process failed too often: giving up")
                    info("halting supervisor")
                    raise Exited(me.pid, "shutdown")
                info("restarting...")
                worker = start_worker()
            elif msg.pid in parents:
                await stop_worker(worker)
                info("halting supervisor")
                raise Exited(me.pid, msg.reason)
        elif msg.__class__ is str and msg == "shutdown":
            await stop_worker(worker)
            info("halting supervisor")
            return
        else:
            send(worker, msg)
