"""spawn: start a process from a function and its arguments."""

from __future__ import annotations

import functools
import inspect

from termite._core.ids import Pid
from termite._core.kernel import SPAWN_BURST, _core
from termite._core.links import add_link
from termite._core.process import Process, ProcessTable, current
from termite._core.registry import register_in

__all__ = ["spawn", "spawn_in"]

_CO_COROUTINE = inspect.CO_COROUTINE


async def _run_plain(fn, args):
    """Body of a process made from a plain callable: run it; await what it returns if awaitable."""
    result = fn(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


def process_body(fn, args):
    """The coroutine a process runs for ``fn(*args)``; a clear TypeError for what cannot be one."""
    code = getattr(fn, "__code__", None)
    if code is not None and code.co_flags & _CO_COROUTINE:
        return fn(*args)  # only creates the coroutine: no user code runs here
    if inspect.iscoroutine(fn):
        name = getattr(fn, "__qualname__", "f")
        fn.close()  # never started: close it so Python does not warn it was never awaited
        raise TypeError(
            f"spawn() takes the function, not a coroutine: write spawn({name}, ...) instead of spawn({name}(...))"
        )
    if not callable(fn):
        raise TypeError(f"spawn() needs a function to run as the process, got {type(fn).__name__}: {fn!r}")
    if inspect.isasyncgenfunction(fn) or inspect.isgeneratorfunction(fn):
        raise TypeError(
            f"spawn() cannot run {fn.__qualname__}: it is a generator function; "
            "a process body is an async def function or a plain callable"
        )
    return _run_plain(fn, args)


def spawn_in(
    table: ProcessTable, fn, args, *, link_to: Pid | None = None, name: str | None = None, pid: Pid | None = None
) -> Pid:
    """Start ``fn(*args)`` as a process of ``table``'s node (under ``pid`` if given: a remote spawn)."""
    coro = process_body(fn, args)
    if pid is None:
        pid = Pid(table.ref, next(table.serials))
    proc = Process(table, pid, coro)
    pid._proc = proc
    table.procs[pid.serial] = proc
    if name is not None:
        try:
            register_in(table, name, pid)
        except BaseException:
            del table.procs[pid.serial]
            pid._proc = None
            coro.close()
            raise
    if link_to is not None:
        add_link(proc, link_to)
        parent = table.resolve(link_to)
        if parent is not None:
            add_link(parent, pid)
    kernel = table.kernel
    kernel.wake(proc)  # its first step, counted as a wake-up
    kernel.spawned += 1
    if kernel.spawned == SPAWN_BURST:
        kernel._spawn_burst()  # the cyclic collector pauses for the rest of the turn (kernel.py)
    return pid


def spawn(fn, *args, link: bool = False, name: str | None = None, node=None) -> Pid:
    """Start a new process running ``fn(*args)`` and return its pid.

    ``fn`` is an ``async def`` function (the process may then ``await
    receive()``) or a plain callable that runs to completion.  ``link=True``
    links the new process with this one, both ways (the paper's
    ``spawn-link``); ``name`` registers it.
    """
    me = current()
    if node is not None and node != me.table.ref:
        if me.table.remote is None:
            raise ValueError(f"cannot spawn on {node}: this node is not connected to other nodes")
        return me.table.remote.spawn(fn, args, node, link_to=me.pid if link else None, name=name)
    return spawn_in(me.table, fn, args, link_to=me.pid if link else None, name=name)


if _core is not None:
    # spawn(fn, *args) of a coroutine function, without keywords, in C; it calls the one above for the rest.
    _core.init_spawn(spawn)
    spawn = functools.update_wrapper(_core.spawn, spawn)
