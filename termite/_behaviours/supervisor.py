"""OTP's supervisor, built as OTP builds it: a gen_server (users see it as ``termite.supervisor``).

What each callback of :class:`Supervisor` does:

==============================  ===============================================
callback                        the supervisor
==============================  ===============================================
``init(state)``                 traps exits; starts the children (unless
                                ``start`` has spawned them already)
``handle_call(request, ...)``   the operations: which_children, count_children,
                                start_child, terminate_child, restart_child,
                                delete_child, stop
``handle_info(Exit)``           a child ended: restarts by the strategy, or
                                gives up; a parent ended: shuts down
``handle_info(_StartFailed)``   a child could not be restarted: as its crash
``handle_cast(msg)``            logs and drops it: a supervisor takes no casts
``terminate(reason, state)``    shuts the children down, in reverse start order
                                (after a ``stop`` call, too many restarts, or
                                ``gen_server.stop(sup)``)
==============================  ===============================================

Shutting a child down waits for its ``Down`` with a selective receive inside
the callback, as OTP's supervisor does; requests that come meanwhile wait in
the mailbox.  The callbacks' ``state`` is one mutable :class:`_State`.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any, NamedTuple

from termite._behaviours.childspec import (
    ChildCounts,
    ChildInfo,
    ChildSpec,
    ChildSpecError,
    SupervisorError,
    check_supervisor_args,
    child_spec,
    supervisor_flags,
)
from termite._behaviours.gen_server_loop import CAST, GenServer, Stop, serve
from termite._behaviours.placement import Placer, is_placement
from termite._balance.safepoint import balanced
from termite._core.call import call
from termite._core.errors import Crash, Exited
from termite._core.ids import NodeRef, Pid
from termite._core.links import Down, Exit, monitor, trap_exit, unlink
from termite._core.links import exit as exit_signal
from termite._core.mailbox import receive, send
from termite._core.patterns import ANY
from termite._core.process import ProcessTable, current
from termite._core.registry import unregister
from termite._core.spawn import spawn_in
from termite._net.distribution import connect, nodes
from termite._net.global_names import register_global, release_global

log = logging.getLogger("termite.supervisor")

#: How long a supervisor tries to reach the host and port of a lost node before a restart there fails.
RECONNECT_TIMEOUT = 1.0


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
    __slots__ = ("spec", "pid", "node", "placement", "last_pid")

    def __init__(self, spec: ChildSpec, placement=None):
        self.spec = spec
        self.pid: Pid | None = None
        self.last_pid: Pid | None = None  # its process before this one: the holder of its global name
        # How its node is chosen at every start (None: pinned or local), and
        # where it runs: a node restarted at a pinned address is a new NodeRef.
        self.placement = spec.node if is_placement(spec.node) else placement if spec.node is None else None
        self.node = None if self.placement is not None else spec.node

    def waits(self) -> bool:
        """Starting it waits for answers (its dispatcher's, the name servers'): only a process can."""
        return self.placement is not None or self.spec.global_name is not None


# -- starting a tree: the one place a supervisor's children are spawned ---------------


def _spawn_child(table: ProcessTable, sup: Pid, child: _Child) -> Pid:
    """Spawn ``child`` linked to the supervisor ``sup``, from whichever process runs this."""
    spec, node = child.spec, child.node
    if node is not None and node == table.ref:
        node = None
    if spec.start is supervise and node is None:
        # A supervisor below: started here and now, children included, so a
        # whole tree is up (and its names registered) when start() returns.
        return _start_tree(table, *supervisor_flags(*spec.args), parents=(sup,), name=spec.local_name)
    start, args = (balanced, (spec.start, *spec.args)) if spec.balance else (spec.start, spec.args)
    if node is None:
        return spawn_in(table, start, args, link_to=sup, name=spec.local_name)
    if table.remote is None:
        raise SupervisorError(f"child {spec.id!r} is for node {node}, but this node is not connected to other nodes")
    return table.remote.spawn(start, args, node, link_to=sup, name=spec.local_name)


def _start_tree(table, specs, strategy, intensity, period, placement=None, *, parents=(), name=None) -> Pid:
    """Spawn a supervisor and its children (linked to it) from the calling process; its pid.

    Children are spawned here in order up to the first that must wait for
    answers (a placed child, a global name): the supervisor starts that one
    and the rest, in order, as its first act.
    """
    state = _State(specs, strategy, intensity, period, parents, placement)
    parent = parents[0] if parents else None
    # The gen_server gets no parent: the supervisor handles its parents' Exit itself (see handle_info).
    state.pid = pid = spawn_in(table, serve, (Supervisor(), state), link_to=parent, name=name)
    for child in state.children:
        if child.waits():
            break
        state.started += 1
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


def start(children, strategy: str = "one_for_one", intensity: int = 3, period: float = 5.0, placement=None, *,
          name: str | None = None, link: bool = False) -> Pid:
    """Start a supervisor of ``children`` (child specs, started in order) and return its pid.

    Every child has been spawned when it returns, up to the first placed
    child or child with a global name: the supervisor starts that one and
    the rest, in order, before it answers any call.  ``placement`` places
    the children whose spec has no ``node`` (``"least_loaded"``,
    ``"spread"``, or a function of the loads).  More than ``intensity``
    restarts within ``period`` seconds make the supervisor give up (see the
    module's docstring).  ``name`` registers the supervisor; ``link=True``
    links it to the caller, whose end (for any reason) then shuts it down.
    Bad specs raise :class:`ChildSpecError`; a child that cannot be spawned,
    :class:`SupervisorError`.
    """
    flags = supervisor_flags(children, strategy, intensity, period, placement)
    me = current()
    return _start_tree(me.table, *flags, parents=(me.pid,) if link else (), name=name)


async def supervise(children, strategy: str = "one_for_one", intensity: int = 3, period: float = 5.0,
                    placement=None):
    """Be a supervisor of ``children``: a process body, for ``spawn`` or a child spec.

    ``spawn(supervise, children, "one_for_all", link=True)``, or on another
    node with ``spawn(..., node=ref)``.  The processes linked to it when it
    starts are its parents.  A child spec of a supervisor below another is
    ``ChildSpec(id, supervise, args=(children, strategy, ...), type="supervisor")``
    (see :func:`nested`).
    """
    specs, strategy, intensity, period, placement = supervisor_flags(children, strategy, intensity, period, placement)
    me = current()
    state = _State(specs, strategy, intensity, period, tuple(me.links or ()), placement)
    state.pid = me.pid
    await serve(Supervisor(), state)


supervise.check_child_args = check_supervisor_args  # a ChildSpec of supervise checks the tree below at once


def nested(id, children, strategy: str = "one_for_one", intensity: int = 3, period: float = 5.0,
           placement=None, *, restart: str = "permanent", shutdown="infinity", name: str | tuple | None = None,
           node=None) -> ChildSpec:
    """The child spec of a supervisor below this one: ``ChildSpec(id, supervise, ..., type="supervisor")``."""
    return ChildSpec(id, supervise, args=(list(children), strategy, intensity, period, placement), restart=restart,
                     shutdown=shutdown, type="supervisor", name=name, node=node)


# -- the supervisor's state, and what it does to its children -------------------------


class _State:
    """A supervisor's children (in start order), its flags and its recent restarts."""

    def __init__(self, specs, strategy, intensity, period, parents, placement=None):
        self.placement = placement
        self.placer = Placer()
        self.children = [_Child(spec, placement) for spec in specs]  # in start order
        self.strategy = strategy
        self.intensity = intensity
        self.period = period
        self.parents = tuple(parents)
        self.restarts: deque[float] = deque()
        self.pid: Pid | None = None
        self.started = 0  # how many children _start_tree spawned: init starts the others
        self.failed = False  # _start_tree could not start them all

    def __repr__(self):
        return f"supervisor {self.pid}"

    def child(self, key) -> _Child | None:
        for child in self.children:
            if child.spec.id == key or (key.__class__ is Pid and child.pid == key):
                return child
        return None

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
        if child.placement is not None:
            child.node = await self.placer.node_for(child.placement)  # asked anew: its last node may be lost
        elif node is not None and node != table.ref and node not in nodes():
            # Pinned and lost: reach its address again; a node restarted there is a new incarnation.
            child.node = await connect(node.host, node.port, timeout=RECONNECT_TIMEOUT)
        pid = _spawn_child(table, self.pid, child)
        name = child.spec.global_name
        if name is not None:
            try:
                if child.last_pid is not None:
                    # Its last process has ended (or was cut off with its node): free the
                    # name now on every node that still holds it, instead of waiting for
                    # each to learn of that end, so the claim below is not refused.
                    release_global(name, child.last_pid)
                await register_global(name, pid)
            except Exception:
                exit_signal(pid, "kill")  # not our child yet: its Exit is ignored
                raise
        child.last_pid = pid
        return pid

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
                log.info("%s: child %r (%s) did not end within %s s of shutdown: killing it",
                         self, child.spec.id, pid, how)
                exit_signal(pid, "kill")
                down = await receive(gone)
        await receive(Exit(pid, ANY), timeout=0, default=None)  # its link's Exit, if it came first
        return down.reason

    async def terminate_all(self) -> None:
        for child in reversed(self.children):
            if child.pid is not None:
                await self.terminate(child)

    def may_restart(self) -> bool:
        """Count a restart now; False when that makes more than ``intensity`` within ``period``."""
        now = time.monotonic()
        restarts = self.restarts
        restarts.append(now)
        while restarts and restarts[0] < now - self.period:
            restarts.popleft()
        return len(restarts) <= self.intensity

    async def child_ended(self, child: _Child, reason) -> bool:
        """Restart what ``child``'s end calls for; False when that is one restart too many."""
        child.pid = None
        spec = child.spec
        if spec.restart == "temporary":
            self.children.remove(child)
            log.info("%s: temporary child %r ended: %s", self, spec.id, reason)
            return True
        if spec.restart == "transient" and _is_normal(reason):
            log.info("%s: transient child %r ended: %s", self, spec.id, reason)
            return True
        if not self.may_restart():
            log.error(
                "%s: reached max restart intensity (more than %d restarts in %s s; child %r ended: %s): shutting down",
                self, self.intensity, self.period, spec.id, reason,
            )
            return False
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
        return True


# -- the gen_server callbacks ----------------------------------------------------------


def _ok(value, state):
    return ("reply", ("ok", value), state)


def _refused(kind: str, text: str, state):
    return ("reply", ("error", kind, text), state)


async def _restart_or_give_up(state: _State, child: _Child, reason):
    if await state.child_ended(child, reason):
        return ("noreply", state)
    return ("stop", "shutdown", state)  # too many restarts: terminate shuts the others down


class Supervisor(GenServer):
    """The supervisor's callbacks; ``state`` is its :class:`_State`.

    It ends with a reason already reported (a parent's, or a start that
    failed) by raising ``Exited`` itself, after shutting its children down: a
    gen_server stop would log that reason again as this server's error.
    """

    async def init(self, state: _State):
        trap_exit(True)
        if state.failed:  # start() raised in its caller: undo quietly
            for parent in state.parents:
                unlink(parent)
            await state.terminate_all()
            raise Stop("normal")
        if state.started < len(state.children):
            for child in state.children[state.started:]:
                if not await state.start(child):
                    failed = await receive(_StartFailed)
                    log.error("%s: giving up: child %r could not start", state, failed.id)
                    await state.terminate_all()
                    raise Exited(state.pid, ("failed_to_start_child", failed.id, failed.reason))
            state.started = len(state.children)
        return state

    async def handle_call(self, request, sender, state: _State):
        """An operation; answered ``("ok", value)`` or ``("error", kind, text)``, for ``_request``."""
        match request:
            case ("which_children",):
                return _ok([ChildInfo(c.spec.id, c.pid, c.spec.type) for c in state.children], state)
            case ("count_children",):
                kinds = [c.spec.type for c in state.children]
                active = sum(c.pid is not None for c in state.children)
                return _ok(ChildCounts(len(kinds), active, kinds.count("supervisor"), kinds.count("worker")), state)
            case ("start_child", ChildSpec() as spec):
                existing = state.child(spec.id)
                if existing is not None:
                    kind = "already_started" if existing.pid is not None else "already_present"
                    where = "running" if existing.pid is not None else "present (not running)"
                    text = f"child id {spec.id!r} is already {where} in {state}; each child needs its own id"
                    return _refused(kind, text, state)
                child = _Child(spec, state.placement)
                try:
                    child.pid = await state.spawn(child)
                except Exception as exc:  # noqa: BLE001 - refused to the caller
                    return _refused("failed_to_start_child",
                                    f"could not start child {spec.id!r}: {type(exc).__name__}: {exc}", state)
                state.children.append(child)
                return _ok(child.pid, state)
            case ("terminate_child", key):
                child = state.child(key)
                if child is None:
                    return _refused("not_found", f"{state} has no child {key!r}", state)
                await state.terminate(child)
                if child.spec.restart == "temporary":
                    state.children.remove(child)
                return _ok(None, state)
            case ("restart_child", key):
                child = state.child(key)
                if child is None:
                    return _refused("not_found", f"{state} has no child {key!r}", state)
                if child.pid is not None:
                    return _refused("running", f"child {key!r} is running; terminate_child(sup, {key!r}) first", state)
                try:
                    child.pid = await state.spawn(child)
                except Exception as exc:  # noqa: BLE001 - refused to the caller
                    return _refused("failed_to_start_child",
                                    f"could not start child {key!r}: {type(exc).__name__}: {exc}", state)
                return _ok(child.pid, state)
            case ("delete_child", key):
                child = state.child(key)
                if child is None:
                    return _refused("not_found", f"{state} has no child {key!r}", state)
                if child.pid is not None:
                    return _refused("running", f"child {key!r} is running; terminate_child(sup, {key!r}) first", state)
                state.children.remove(child)
                return _ok(None, state)
            case ("stop",):
                return ("stop", "normal", ("ok", None), state)  # answered after terminate
        return _refused("bad_request", f"{state} does not know the request {request!r}", state)

    async def handle_info(self, msg, state: _State):
        cls = msg.__class__
        if cls is Exit:
            child = state.child(msg.pid)
            if child is not None:
                return await _restart_or_give_up(state, child, msg.reason)
            if msg.pid in state.parents:
                log.info("%s: parent %s ended (%s): shutting down", state, msg.pid, msg.reason)
                await state.terminate_all()
                raise Exited(state.pid, msg.reason)
            # else: a child that was shut down, or another linked process: not ours to act on
        elif cls is _StartFailed:
            child = state.child(msg.id)
            if child is not None and child.pid is None:
                return await _restart_or_give_up(state, child, msg.reason)
        else:
            log.warning("%s: dropped a message it does not understand: %.200r", state, msg)
        return ("noreply", state)

    async def handle_cast(self, msg, state: _State):
        log.warning("%s: dropped a message it does not understand: %.200r", state, (CAST, msg))
        return ("noreply", state)

    async def terminate(self, reason, state: _State):
        await state.terminate_all()


# -- what other processes call ------------------------------------------------------


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
