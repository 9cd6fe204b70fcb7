"""Looking inside a node: its processes, and each one as Erlang's ``process_info`` tells it.

``processes(node=None)`` lists a node's pids; ``process_info(pid)`` describes
one process (:class:`ProcessInfo`): its state and, while it waits, what for
(the patterns of its receive, the process it calls, the asyncio awaitable)
and where (file:line of its innermost await), its mailbox, the messages it
received and sent, the steps it ran, its links and monitors, the node it was
born on and its moves, and its approximate memory.  For this node the answer
is immediate; another node's (or a process that migrated from here) is a
remote call to the node where it runs, to be awaited::

    info = termite.process_info(pid)              # a process of this node
    info = await termite.process_info(other_pid)  # another node's: ask it
    pids = await termite.processes(node)

The remote call (:func:`ask`) spawns a short-lived process on that node,
which answers and ends: no service needs to run there.  ``Node.process_info``
asks from outside (this node's processes).

The counts cost the path of a message one increment at each end
(termite/_core/mailbox.py) and the run loop nothing (termite/_core/kernel.py);
the rest is read only when asked, with bounded work (at most
:data:`FRAMES` frames of a coroutine chain, :data:`SAMPLED` messages of a
mailbox measured).  ``mailbox_totals(table)`` and ``busiest(table)`` are the
node's figures for its load report (termite._balance.meter): its mailboxes in
all, and its few processes with the largest mailboxes and the most steps.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import heapq
import os
import sys
import types
from itertools import compress, islice
from operator import add, attrgetter
from typing import NamedTuple

from termite._core.errors import Crash, TermiteError, Timeout, remote_exception
from termite._core.ids import NodeRef, Pid, make_tag
from termite._core.kernel import FOREIGN, _core
from termite._core.mailbox import receive, send, sleep
from termite._core.patterns import ANY, where
from termite._core.process import ANY_MESSAGE, DEAD, DELIVERED, REPLY, SCAN, SLEEPING, ProcessTable, current
from termite._core.spawn import spawn

__all__ = [
    "ProcessInfo", "ProcessLoad", "process_info", "processes", "info_in", "processes_in", "mailbox_totals",
    "busiest", "ask", "locate", "follow",
]

FRAMES = 64  # the deepest coroutine chain walked
LOCALS = 256  # locals measured per frame
SAMPLED = 1000  # messages of a mailbox measured; the rest counted at their average
HOPS = 16  # nodes followed after a process that migrates while it is looked for
ASK_TIMEOUT = 5.0


@dataclasses.dataclass(frozen=True)
class ProcessInfo:
    """One live process, as it is now (Erlang's ``process_info/1``).

    The first seven fields are those of earlier versions, by position, and
    only they take part in ``==``: the rest are measurements that change as
    the process runs.

    ``state`` is one of ``"running"`` (it is the process asking),
    ``"runnable"``, ``"suspended"`` (held back by flow control),
    ``"receiving"``, ``"sleeping"``, ``"awaiting"`` (an asyncio awaitable),
    ``"migrating"`` or ``"waiting"`` (parked by something else).
    ``waiting_for`` says what it waits for, readably (``receive((Pid,
    'ping'), timeout=5)``, ``call(<pid>, 'get')``...); ``location`` is the
    file:line of the innermost await of its coroutine chain outside
    termite's core and asyncio (where the user's code waits), ``stack`` the
    whole chain, outermost first.  ``received``, ``sent`` and ``steps``
    count since it started on this node (a process that migrated counts
    again on each node).  ``memory`` is approximate: the sizes of its frames,
    their locals and its messages, not what they refer to.
    """

    pid: Pid
    mailbox: int  # messages waiting in its mailbox
    status: str  # "runnable", or what it waits for: "waiting for any message", "sleeping", ...
    name: str | None  # its registered name
    links: int
    monitors: int  # monitors on it, by other processes
    trap_exit: bool
    state: str = dataclasses.field(default="runnable", compare=False)
    waiting_for: str | None = dataclasses.field(default=None, compare=False)
    location: str | None = dataclasses.field(default=None, compare=False)  # "path/to/file.py:42"
    stack: tuple[str, ...] = dataclasses.field(default=(), compare=False)  # "file.py:42 in fn", outermost first
    received: int = dataclasses.field(default=0, compare=False)
    sent: int = dataclasses.field(default=0, compare=False)
    steps: int = dataclasses.field(default=0, compare=False)  # times it was resumed: its share of the CPU
    linked: tuple[Pid, ...] = dataclasses.field(default=(), compare=False)  # the pids of its links
    monitored_by: tuple[Pid, ...] = dataclasses.field(default=(), compare=False)
    monitoring: tuple[Pid, ...] = dataclasses.field(default=(), compare=False)  # this node's processes it monitors
    traced_by: tuple[Pid, ...] = dataclasses.field(default=(), compare=False)
    node: NodeRef | None = dataclasses.field(default=None, compare=False)  # where it runs
    born_on: NodeRef | None = dataclasses.field(default=None, compare=False)
    migrations: int = dataclasses.field(default=0, compare=False)
    visited: tuple[NodeRef, ...] = dataclasses.field(default=(), compare=False)  # the nodes it lived on, in order
    memory: int = dataclasses.field(default=0, compare=False)  # bytes, approximately


class ProcessLoad(NamedTuple):
    """One process in its node's load report (``Load.top``): among its largest mailboxes or most steps."""

    pid: Pid
    name: str | None
    mailbox: int
    steps: int
    state: str


# -- one process --------------------------------------------------------------


def info_in(table: ProcessTable, pid: Pid) -> ProcessInfo | None:
    """``pid``'s info if it is a live process of ``table``'s node, else None."""
    if pid.__class__ is not Pid:
        raise TypeError(f"process_info needs a Pid, not {type(pid).__name__}: {pid!r}")
    proc = table.resolve(pid)
    if proc is None and pid.node != table.ref:
        raise ValueError(
            f"process_info reads this node's processes, and {pid} is not one of them: ask a process on its "
            f"node (await termite.process_info(pid) does), or read that node's mailbox totals in its load "
            f"report (termite.node_load(node))"
        )
    if proc is None or proc.pid != pid:
        return None
    waiting = proc.waiting
    if waiting is DEAD:
        return None
    status = "runnable" if waiting is None or waiting is DELIVERED else getattr(waiting, "name", None) or repr(waiting)
    chain, awaited = _chain(proc.coro)
    order = proc.order
    monitors = dict(proc.monitors or ())
    monitors.update((entry.tag, entry.watcher) for entry in proc.callers or ())  # calls in flight to it
    return ProcessInfo(
        pid=proc.pid,
        mailbox=len(proc.mailbox) if proc.mailbox else 0,
        status=status,
        name=proc.name,
        links=len(proc.links) if proc.links else 0,
        monitors=len(monitors),
        trap_exit=bool(proc.trap_exit),
        state=_state(proc),
        waiting_for=_waiting_for(proc, chain, awaited),
        location=_location(chain),
        stack=tuple(f"{_short(frame.f_code.co_filename)}:{frame.f_lineno} in {frame.f_code.co_name}"
                    for _, frame in chain),
        received=proc.handed + proc.queued,
        sent=proc.sent,
        steps=proc.handed + proc.woken,
        linked=tuple(sorted(proc.links or (), key=_pid_key)),
        monitored_by=tuple(monitors.values()),
        monitoring=_monitoring(table, proc.pid),
        traced_by=tuple(proc.tracers or ()),
        node=table.ref,
        born_on=pid.node,
        migrations=order.gen if order is not None else 0,
        visited=tuple(order.visited) if order is not None else (table.ref,),
        memory=_memory(proc, chain),
    )


def _pid_key(pid: Pid):
    return (str(pid.node), pid.serial)


def _state(proc) -> str:
    if proc.kernel.task is proc:
        return "running"
    waiting = proc.waiting
    if waiting is None or waiting is DELIVERED:
        return "suspended" if proc.held is not None else "runnable"
    if waiting is ANY_MESSAGE or waiting is SCAN or waiting is REPLY:
        return "receiving"
    if waiting is SLEEPING:
        return "sleeping"
    if waiting is FOREIGN:
        return "awaiting"
    if getattr(waiting, "name", None) == "migrating":  # termite._move.migration's MIGRATING, a layer above
        return "migrating"
    return "waiting"


def _chain(coro) -> tuple[list, object]:
    """The coroutine chain of a process, outermost first, as (coroutine or generator, frame); and what
    its innermost one awaits that is not a coroutine (an asyncio future), if anything."""
    chain = []
    obj = coro
    for _ in range(FRAMES):
        frame = getattr(obj, "cr_frame", None) or getattr(obj, "gi_frame", None) or getattr(obj, "ag_frame", None)
        if frame is None:
            # The C kernel's receive and call have no frame; one that drives its Python twin leads to it.
            inner = getattr(obj, "_delegate", None) if obj.__class__ in _C_AWAITABLES else None
            if inner is not None:
                obj = inner
                continue
            return chain, obj if obj is not coro else None
        chain.append((obj, frame))
        inner = getattr(obj, "cr_await", None)
        if inner is None:
            inner = getattr(obj, "gi_yieldfrom", None)
        if inner is None:
            return chain, None
        obj = inner
    return chain, None


_CORE = os.path.dirname(os.path.abspath(__file__)) + os.sep
_ASYNCIO = os.path.dirname(os.path.abspath(asyncio.__file__)) + os.sep


def _location(chain) -> str | None:
    """file:line of the innermost frame outside termite's core and asyncio: where the user's code waits."""
    for _, frame in reversed(chain):
        path = frame.f_code.co_filename
        if not path.startswith((_CORE, _ASYNCIO)):
            return f"{path}:{frame.f_lineno}"
    return None


def _short(path: str) -> str:
    parts = path.split(os.sep)
    return os.sep.join(parts[-3:]) if len(parts) > 3 else path


_receive_code = getattr(receive, "__wrapped__", receive).__code__  # the C kernel's wears the Python one
_sleep_code = sleep.__code__
_C_AWAITABLES = (_core.Receive, _core.Call) if _core is not None else ()


def _waiting_for(proc, chain, awaited) -> str | None:
    """What a parked process waits for, as a line a person reads.

    Read from the locals of termite's own frames (receive, sleep, call): they
    end when the wait does, and the copy ``f_locals`` leaves with them.
    """
    waiting = proc.waiting
    if waiting is None or waiting is DELIVERED or waiting is DEAD:
        return None
    for _, frame in reversed(chain):
        code = frame.f_code
        if code is _receive_code:
            return _receive_text(frame.f_locals)
        if code is _sleep_code:
            return f"sleep({frame.f_locals.get('seconds')!r})"
        if code.co_name == "call" and code.co_filename.startswith(_CORE):
            here = frame.f_locals
            return f"call({here.get('pid', here.get('dest'))}, {_cut(repr(here.get('msg')))})"
    if awaited is not None and awaited.__class__ in _C_AWAITABLES:  # the C kernel's receive() or call(), parked
        if awaited.__class__ is _core.Receive:
            return _receive_text({"patterns": awaited.patterns or (), "timeout": awaited.timeout})
        return f"call({awaited.dest}, {_cut(repr(awaited.msg))})"
    if waiting is REPLY:
        return "a reply to a call"
    if waiting is FOREIGN:
        if awaited is not None:
            return _cut(repr(awaited))
        if chain:
            code = chain[-1][1].f_code
            return f"{code.co_qualname if hasattr(code, 'co_qualname') else code.co_name}()"
        return "an asyncio awaitable"
    return getattr(waiting, "name", None) or repr(waiting)


def _receive_text(here: dict) -> str:
    args = [pattern_text(p) for p in here.get("patterns", ())]
    if here.get("where") is not None:
        args.append(f"where={_callable_text(here['where'])}")
    if here.get("timeout") is not None:
        args.append(f"timeout={here['timeout']!r}")
    return _cut(f"receive({', '.join(args)})", 200)


def pattern_text(p) -> str:
    """A receive pattern as it would be written: ``(Pid, 'ping')``, ``Down(ref, ANY, ANY)``, ``int``."""
    if p is ANY:
        return "ANY"
    if p is Ellipsis:
        return "..."
    if isinstance(p, type):
        return p.__qualname__
    if isinstance(p, where):
        return f"where({pattern_text(p.pattern)}, {_callable_text(p.guard)})"
    if isinstance(p, tuple):
        inner = ", ".join(pattern_text(x) for x in p)
        if hasattr(p, "_fields"):  # a namedtuple instance: its class, element by element
            return f"{type(p).__qualname__}({inner})"
        return f"({inner},)" if len(p) == 1 else f"({inner})"
    if isinstance(p, list):
        return "[" + ", ".join(pattern_text(x) for x in p) + "]"
    if isinstance(p, dict):
        return "{" + ", ".join(f"{k!r}: {pattern_text(v)}" for k, v in p.items()) + "}"
    if callable(p):
        return _callable_text(p)
    return _cut(repr(p), 60)


def _callable_text(fn) -> str:
    code = getattr(fn, "__code__", None)
    name = getattr(fn, "__qualname__", None) or repr(fn)
    if code is not None and name.endswith("<lambda>"):
        return f"<lambda at {os.path.basename(code.co_filename)}:{code.co_firstlineno}>"
    return name


def _cut(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _monitoring(table: ProcessTable, pid: Pid) -> tuple[Pid, ...]:
    """The processes of this node that ``pid`` monitors (its monitors of other nodes' processes are
    kept by the network layer, under their nodes)."""
    watched = tuple(target.pid for ref, target in table.monitored.items()
                    if target.monitors and target.monitors.get(ref) == pid)
    caller = table.resolve(pid)
    if caller is None or caller.waiting is not REPLY:
        return watched
    # Its call in flight, if the monitor is not written yet (links.PendingCall): looked for on every
    # process, only for a process that waits for a reply.
    return watched + tuple(target.pid for procs in (table.procs.values(), table.guests.values())
                           for target in procs if target.callers
                           and any(entry.watcher == pid for entry in target.callers))


_sizeof = sys.getsizeof
_SHARED = (types.CodeType, types.FunctionType, types.FrameType, types.ModuleType, type)


def _memory(proc, chain) -> int:
    """Approximate bytes: the process, its frames and their locals, its mailbox and its messages (shallow).

    A frame's locals are read as the objects its coroutine refers to, not by
    ``frame.f_locals``, which would keep a copy of them in the frame for as
    long as it lives.
    """
    size = _sizeof(proc)
    for obj, frame in chain:
        size += _sizeof(obj) + _sizeof(frame)
        if not frame.f_code.co_filename.startswith(_CORE):  # termite's own waits hold nothing of the process's
            size += sum(_sizeof(x) for x in islice(gc.get_referents(obj), LOCALS) if not isinstance(x, _SHARED))
    box = proc.mailbox
    if box:
        size += _sizeof(box)
        sampled = min(len(box), SAMPLED)
        size += sum(map(_sizeof, islice(box, sampled))) * len(box) // sampled
    return size


# -- a node's processes ---------------------------------------------------------


def processes_in(table: ProcessTable) -> list[Pid]:
    """The pids of ``table``'s live processes: its own, then those that migrated here."""
    return [proc.pid for procs in (table.procs.values(), table.guests.values())
            for proc in procs if proc.waiting is not DEAD]


_mailbox = attrgetter("mailbox")
_handed = attrgetter("handed")
_woken = attrgetter("woken")


def _mailbox_size(proc) -> int:
    return len(proc.mailbox)


def mailbox_totals(table: ProcessTable) -> tuple[int, int, Pid | None]:
    """The messages waiting in all mailboxes of the node, the largest mailbox, and its process."""
    queued = largest = 0
    owner = None
    for procs in (table.procs.values(), table.guests.values()):
        # compress and map run in C: processes without a mailbox or with an empty one are skipped
        for proc in compress(procs, map(_mailbox, procs)):
            n = len(proc.mailbox)
            queued += n
            if n > largest:
                largest, owner = n, proc.pid
    return queued, largest, owner


def busiest(table: ProcessTable, n: int = 5) -> tuple[ProcessLoad, ...]:
    """The ``n`` processes with the largest mailboxes and the ``n`` with the most steps (at most ``2n``).

    About 100 ns a process (the steps are summed in C, and only the
    processes at or above the ``n``-th largest are looked at in Python).
    """
    procs = [*table.procs.values(), *table.guests.values()]
    chosen = heapq.nlargest(n, compress(procs, map(_mailbox, procs)), key=_mailbox_size)
    steps = list(map(add, map(_handed, procs), map(_woken, procs)))
    if len(steps) > n:
        cut = heapq.nlargest(n, steps)[-1]
        busy = list(compress(procs, map(cut.__lt__, steps)))  # in C, as the next line: ties at the cut are many
        busy.extend(islice(compress(procs, map(cut.__eq__, steps)), n - len(busy)))
    else:
        busy = procs
    chosen.extend(heapq.nlargest(n, busy, key=_steps))
    out, seen = [], set()
    for proc in chosen:
        if proc.pid not in seen and proc.waiting is not DEAD:
            seen.add(proc.pid)
            out.append(ProcessLoad(proc.pid, proc.name, len(proc.mailbox) if proc.mailbox else 0,
                                   proc.handed + proc.woken, _state(proc)))
    return tuple(out)


def _steps(proc) -> int:
    return proc.handed + proc.woken


# -- asking another node --------------------------------------------------------


class _Remote:
    """What ``process_info`` or ``processes`` gives when another node must answer: await it."""

    __slots__ = ("_coro", "_what")

    def __init__(self, coro, what: str):
        self._coro, self._what = coro, what

    def __await__(self):
        return self._coro.__await__()

    def _not_awaited(self, *_):
        raise TypeError(f"{self._what} asks another node: await it (answer = await termite.{self._what})")

    __getattr__ = __iter__ = __len__ = __bool__ = __getitem__ = _not_awaited

    def __repr__(self):
        return f"<termite.{self._what} of another node: await it>"


async def ask(node: NodeRef, fn, *args, timeout: float = ASK_TIMEOUT):
    """``fn(*args)`` run on ``node``, in a short-lived process there: its value, or its exception raised here.

    ``fn`` must be importable there (a module's function).  Raises
    ``Timeout`` if no answer comes within ``timeout`` seconds (the node is
    lost or stuck).
    """
    me = current()
    tag = make_tag()
    spawn(_answer, me.pid, tag, fn, args, node=node)
    reply = await receive((tag, ANY, ANY), timeout=timeout, default=None)
    if reply is None:
        raise Timeout(f"{node} did not answer within {timeout} s")
    _, ok, value = reply
    if ok:
        return value
    raise remote_exception(value)


def _answer(reply_to: Pid, tag, fn, args) -> None:
    """The body of the process that answers :func:`ask`."""
    try:
        reply = (tag, True, fn(*args))
    except Exception as exc:  # noqa: BLE001 - it travels back and is raised there
        reply = (tag, False, Crash.from_exception(exc, where=f"{fn.__qualname__} on {current().table.ref}"))
    send(reply_to, reply)


def locate(table: ProcessTable, pid: Pid) -> NodeRef | None:
    """None if ``pid`` is (or was) a process of this node; else the node to ask about it."""
    proc = table.resolve(pid)
    if proc is not None and proc.pid == pid:
        return None
    moved = table.moved.get(pid) if table.moved else None
    if moved is not None:
        return moved
    return None if pid.node == table.ref else pid.node


async def follow(pid: Pid, node: NodeRef, fn, *args):
    """``fn(pid, *args)`` asked of the node where ``pid`` runs, following it from ``node`` as it moves."""
    for _ in range(HOPS):
        answer = await ask(node, fn, pid, *args)
        if answer.__class__ is not NodeRef:
            return answer
        node = answer  # it moved on from there
    raise TermiteError(f"{pid} moved more than {HOPS} times while it was looked for")


def process_info(pid: Pid):
    """A live process, as it is now (:class:`ProcessInfo`), or None if it has ended (Erlang's ``process_info``).

    For a process of this node the answer is immediate.  For another node's,
    or one that migrated from here, ``process_info`` asks the node where it
    runs: await it (``info = await termite.process_info(pid)``).
    """
    table = current().table
    if pid.__class__ is not Pid:
        raise TypeError(f"process_info needs a Pid, not {type(pid).__name__}: {pid!r}")
    node = locate(table, pid)
    if node is None:
        return info_in(table, pid)
    return _Remote(follow(pid, node, _info_here), "process_info(pid)")


def _info_here(pid: Pid):
    """On the node asked: the info of ``pid``, the node it moved to, or None."""
    table = current().table
    node = locate(table, pid)
    return info_in(table, pid) if node is None else node


def processes(node: NodeRef | None = None):
    """The pids of the live processes of ``node`` (Erlang's ``processes()``); this node's if None.

    Another node's is a remote call: await it (``pids = await termite.processes(node)``).
    """
    table = current().table
    if node is None or node == table.ref:
        return processes_in(table)
    if node.__class__ is not NodeRef:
        raise TypeError(f"processes() needs a NodeRef (termite.nodes(), current_node()), not {node!r}")
    return _Remote(ask(node, _processes_here), "processes(node)")


def _processes_here() -> list[Pid]:
    me = current()
    return [pid for pid in processes_in(me.table) if pid != me.pid]  # not the process that answers
