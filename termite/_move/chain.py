"""A suspended await chain, read as Python data (termite/_move/continuation.py captures it).

A process suspended at a trap is a chain: its top coroutine awaits a
coroutine, which awaits another, ..., which awaits the trap.  Here:

``chain_of(coro)``
    The chain, outermost first.
``trap_of(coro, trap)``
    The chain, checked to be suspended and to await ``trap`` (by default its
    innermost awaitable).
``frame_of(gen) -> Frame | None``
    One generator's or coroutine's suspended state: function, instruction
    offset, locals, value stack, the exception it handles (None if finished).
``framestate``
    The C module that reads and writes that state (termite/_move/_framestate.c),
    or None where it is not built.
``NULL``
    What stands for an empty slot in that state, both ways.
``PYTHONS``
    The CPython versions whose frames ``framestate`` reads and writes.

The frame layout differs between those versions; the differences are all in
one section of termite/_move/_framestate.c.  What this side sees is the same
on each (the order of a frame's slots, the value stack with its NULLs, the
handled exception), except the frame states: 3.13 tells a frame suspended in
an ``await`` (``SUSPENDED_YIELD_FROM``) from one at a plain ``yield``
(``SUSPENDED``); on 3.11 and 3.12 both names are the same state.  A frame's
``lasti`` is CPython's own (``frame.f_lasti // 2``), so it means what that
version's bytecode says: the ``YIELD_VALUE`` a frame is suspended at on 3.11
and 3.12, the ``RESUME`` after it on 3.13.
"""

from __future__ import annotations

import types
from typing import NamedTuple

from termite._core.errors import MigrationError

try:
    from termite._move import _framestate as framestate
except ImportError:  # not built: continuation.supported() says so
    framestate = None

__all__ = ["NULL", "PYTHONS", "Frame", "chain_of", "trap_of", "frame_of", "framestate", "name_of", "type_name"]

PYTHONS = ((3, 11), (3, 12), (3, 13))  # as termite/_move/_framestate.c builds its functions for

_CoroutineType = types.CoroutineType
_GeneratorType = types.GeneratorType


class _Null:
    """A NULL slot of a frame: an unbound local, or a NULL the compiler pushed."""

    __slots__ = ()

    def __reduce__(self):
        return "NULL"

    def __repr__(self):
        return "NULL"


NULL = _Null()


class Frame(NamedTuple):
    """One suspended frame: what ``capture`` sends for it."""

    gen: object  # the generator or coroutine
    function: types.FunctionType
    lasti: int  # instruction offset, in code units: frame.f_lasti // 2 (see the module doc)
    locals: dict  # name -> value; cell and free variables by their contents; unbound names left out
    stack: tuple  # the value stack, bottom first; NULL for a NULL slot
    exc: object  # the exception being handled, or None


def chain_of(coro) -> list:
    """``coro`` and what it awaits, transitively: the await chain, outermost first."""
    if coro.__class__ is not _CoroutineType and coro.__class__ is not _GeneratorType:
        raise MigrationError(f"can only migrate a coroutine or a generator, not a {type_name(coro)}")
    chain = [coro]
    while True:
        last = chain[-1]
        cls = last.__class__
        inner = last.cr_await if cls is _CoroutineType else last.gi_yieldfrom if cls is _GeneratorType else None
        if inner is None:
            return chain
        chain.append(inner)


def trap_of(coro, trap) -> tuple[list, object]:
    """The chain of ``coro`` and the trap it awaits (``trap``, or its innermost awaitable if None)."""
    chain = chain_of(coro)
    if chain[0].cr_running if chain[0].__class__ is _CoroutineType else chain[0].gi_running:
        raise MigrationError(f"cannot capture {name_of(coro)} while it runs: capture a process suspended at a trap")
    if trap is None:
        trap = chain[-1]
    if trap is coro or not any(link is trap for link in chain):
        raise MigrationError(f"{name_of(coro)} does not await the given trap ({trap!r}); it awaits {chain[-1]!r}")
    return chain, trap


def _local_names(code) -> tuple:
    # The order of a frame's slots: locals (arguments first), cells that are
    # not arguments, free variables.
    cells = tuple(name for name in code.co_cellvars if name not in code.co_varnames)
    return code.co_varnames + cells + code.co_freevars


def frame_of(gen) -> Frame | None:
    """The suspended state of ``gen`` (None once it finished); raises if it runs."""
    state, func, lasti, localsplus, stack, exc = framestate.get_frame(gen, NULL)
    if state == framestate.EXECUTING:
        raise MigrationError(f"cannot capture {name_of(gen)} while it runs: capture a process suspended at a trap")
    if func is None:
        return None  # finished
    code = gen.cr_code if gen.__class__ is _CoroutineType else gen.gi_code
    cells = set(code.co_cellvars + code.co_freevars)
    names = {}
    for name, value in zip(_local_names(code), localsplus):
        if name in cells and value.__class__ is types.CellType:
            try:
                value = value.cell_contents
            except ValueError:
                continue
        if value is not NULL:
            names[name] = value
    return Frame(gen, func, lasti, names, stack, None if exc is NULL else exc)


# -- names for error messages -------------------------------------------------------


def type_name(obj) -> str:
    kind = type(obj)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def name_of(gen) -> str:
    return f"{getattr(gen, '__qualname__', type(gen).__name__)}()"
