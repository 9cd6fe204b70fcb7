"""Child specs: what a supervisor needs to start, restart and stop one child; validated data.

One small check per field, and an error (:class:`ChildSpecError`) that names
the child, the field and the bad value.  Also the supervisor's flags
(strategy, intensity, period), its errors and the records its operations
answer with (:class:`ChildInfo`, :class:`ChildCounts`).  Users see all of
these as ``termite.supervisor``.

A start function may carry ``check_child_args(spec_id, args)``: a spec
calls it when made, and it raises :class:`ChildSpecError` for args the
function cannot take.  ``supervise`` has one, so a whole tree of specs is
checked when its top spec is made.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable
from typing import Any, NamedTuple

from termite._behaviours.placement import PLACEMENTS, is_placement
from termite._core.errors import TermiteError
from termite._core.ids import NodeRef, Pid

STRATEGIES = ("one_for_one", "one_for_all", "rest_for_one")
RESTARTS = ("permanent", "transient", "temporary")
TYPES = ("worker", "supervisor")
WORKER_SHUTDOWN = 5.0  # seconds: Erlang's default for a worker


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


def _check_name(spec_id, name) -> None:
    if name is None or (isinstance(name, str) and name):
        return
    if name.__class__ is tuple and len(name) == 2 and name[0] in ("local", "global") \
            and isinstance(name[1], str) and name[1]:
        return
    raise _bad(spec_id, "name", name, 'is not a non-empty str (registered on the child\'s node) '
                                     'nor ("global", str) (registered on every node)')


def _check_balance(spec_id, balance, type, name) -> None:
    if balance is False:
        return
    if balance is not True:
        raise _bad(spec_id, "balance", balance, "is not True or False")
    if type != "worker":
        raise _bad(spec_id, "balance", balance, "is for workers: a supervisor stays where it is started")
    if name is not None and not (name.__class__ is tuple and name[0] == "global"):
        raise _bad(spec_id, "balance", balance, f"cannot go with the local name {name!r}: a local name stays on "
                                                "its node, so the child could never move; use name=(\"global\", ...)")


_PLACEMENTS_TEXT = f"{' or '.join(map(repr, PLACEMENTS))} or a function of the loads"


def _check_node(spec_id, node) -> None:
    if node is None or is_placement(node):
        return
    if not isinstance(node, NodeRef):
        raise _bad(spec_id, "node", node, f"is not a NodeRef (from termite.connect() or nodes()) "
                                          f"nor a placement ({_PLACEMENTS_TEXT})")
    if node.incarnation is None:
        raise _bad(spec_id, "node", node, "is an address, not a node: get its NodeRef from termite.connect()")


@dataclasses.dataclass(frozen=True)
class ChildSpec:
    """What a supervisor needs to start, restart and stop one child (Erlang's child spec).

    ``ChildSpec("db", db_server, args=(path,), restart="permanent",
    shutdown=5.0, type="worker", name="db", node=None)``.  Every field is
    checked when the spec is made; a bad one raises :class:`ChildSpecError`
    naming the child, the field and the value.  ``shutdown=None`` means 5 s
    for a worker and ``"infinity"`` for a supervisor.  ``name``: ``"db"``
    (or ``("local", "db")``) registers the child on the node it runs on,
    ``("global", "db")`` on every node.  ``node``: None (the supervisor's
    node, or its ``placement``), a NodeRef (pinned there), or a placement
    (``LEAST_LOADED``, ``SPREAD``, a function of the loads:
    ``termite._behaviours.placement``).  ``balance=True``: the child opts in
    to the balancer (``termite.balanceable()``) as it starts, so it may be
    asked to move at its ``termite.checkpoint()``s (termite._balance.safepoint).
    """

    id: Any
    start: Callable
    args: tuple = ()
    restart: str = "permanent"
    shutdown: float | str | None = None
    type: str = "worker"
    name: str | tuple | None = None
    node: NodeRef | str | Callable | None = None
    balance: bool = False

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
        _check_name(spec_id, self.name)
        _check_node(spec_id, self.node)
        _check_balance(spec_id, self.balance, self.type, self.name)
        check_child_args = getattr(self.start, "check_child_args", None)
        if check_child_args is not None:
            check_child_args(spec_id, self.args)


    @property
    def local_name(self) -> str | None:
        """The name to register the child under on its own node, if any."""
        name = self.name
        return name if name.__class__ is str else name[1] if name is not None and name[0] == "local" else None

    @property
    def global_name(self) -> str | None:
        """The name to register the child under on every node, if any."""
        name = self.name
        return name[1] if name.__class__ is tuple and name[0] == "global" else None


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


def supervisor_flags(children, strategy="one_for_one", intensity=3, period=5.0, placement=None):
    """The checked arguments of a supervisor: (specs, strategy, intensity, period, placement)."""
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
    if placement is not None and not is_placement(placement):
        raise ValueError(f"placement={placement!r} is not None (the supervisor's node) nor {_PLACEMENTS_TEXT}")
    return specs, strategy, intensity, float(period), placement


def check_supervisor_args(spec_id, args) -> None:
    """``supervise``'s ``check_child_args``: its args are a supervisor's flags, its children's specs checked too."""
    try:
        supervisor_flags(*args)
    except TypeError as exc:
        fit = "supervise(children, strategy, intensity, period, placement)"
        raise _bad(spec_id, "args", args, f"do not fit {fit}: {exc}") from None
    except ChildSpecError as exc:
        raise ChildSpecError(f"child {spec_id!r}: {exc}", child=exc.child, field=exc.field, value=exc.value) from None
    except ValueError as exc:
        raise _bad(spec_id, "args", args, f"are not a supervisor's: {exc}") from None


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

