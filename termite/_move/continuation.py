"""Continuations: a suspended process as bytes, and back (live migration).

A process is an ``async def`` coroutine.  When it awaits a trap (a
``@types.coroutine`` generator that yields a request to the kernel), its whole
chain of awaits is suspended: the top coroutine awaits a coroutine, which
awaits another, ..., which awaits the trap.  This module captures that chain
and rebuilds it elsewhere:

``capture(coro, trap=None) -> bytes``
    Serialize the chain from ``coro`` down to ``trap`` (by default the
    innermost awaitable).  Each frame travels as its function, its
    instruction offset, its locals (cell and free variables as their shared
    cells), its value stack (for-loop iterators, a ``with`` block's
    ``__exit__``, the awaited coroutine) and the exception it is handling.
    Generators and coroutines met anywhere in that state (``for x in gen():``
    puts one on the stack) travel the same way.  The trap itself does not
    travel: in its place comes a primed generator that returns the value sent
    into it.  The running chain is not changed (the paper's cloning).
``restore(data) -> coroutine``
    Rebuild the chain; ``coro.send(value)`` continues the process right after
    the trap, which returns ``value``.
``abandon(coro)``
    Drop the source chain after a successful migration without running its
    ``finally`` blocks or ``__exit__`` methods: they run where it went.
``capture_frames(coro, trap=None) -> [Frame]``
    The chain as Python data, outermost first (tests, error messages).
``supported()``
    Whether live migration works on this interpreter (CPython 3.11, 3.12, 3.13).

Encoding: ``b"TMC"``, Python major and minor, ``b"p"`` or ``b"d"``, then a
pickle (protocol 5) of the top coroutine.  A generator pickles as "call this
function's code without arguments, then fill in the frame" (termite._move._framestate
does the frame, in C).  A function goes by name when importable; a lambda or
closure of an importable module goes as its code (marshal) over that module's
globals, so it needs no dill and sees the module's globals on the other node.
Plain C pickle is tried first; dill (termite._net.codec's pickler, which refuses
locks, files and sockets) only when pickle cannot do it (functions of
``__main__`` or of no module, classes defined in a function).
Each frame carries a fingerprint of its code (bytecode, constants, names), so
a node with different code refuses the continuation instead of running the
wrong instructions.  ``restore`` unpickles, so like ``decode`` it must only be
given data from a trusted peer.

Not captured: the trap's own frame (it is the kernel's), async generators,
tracebacks of exceptions (an exception travels as its type and args, so a
bare ``raise`` after migration re-raises it with a traceback that starts at
the ``raise``), ``frame.f_trace`` and the frame objects themselves.

This module holds the format and the entry points; the work is done by

=====================================  =========================================================
termite/_move/chain.py                 the suspended chain read as Python data (``Frame``)
termite/_move/fingerprint.py           code fingerprints
termite/_move/capture.py               the chain into a pickle; ``blame``: what cannot travel
termite/_move/rebuild.py               the pickle back into generators and coroutines
termite/_move/_framestate.c            reading and writing a generator's suspended state
=====================================  =========================================================
"""

from __future__ import annotations

import sys
import types
import weakref

from termite._core.errors import MigrationError
from termite._move.capture import pickle_chain
from termite._move.chain import NULL, PYTHONS, Frame, chain_of, frame_of, framestate, trap_of
from termite._move.rebuild import unpickle_chain

__all__ = ["capture", "restore", "abandon", "capture_frames", "supported", "Frame", "NULL"]

_CoroutineType = types.CoroutineType
_GeneratorType = types.GeneratorType
_MAGIC = b"TMC"
_VERSION = bytes(sys.version_info[:2])
_PICKLE, _DILL = b"p", b"d"


def supported() -> bool:
    """Whether this interpreter can capture and restore suspended processes."""
    return framestate is not None and framestate.SUPPORTED and sys.implementation.name == "cpython"


def _require() -> None:
    if not supported():
        if framestate is None:
            # pyproject.toml builds it optionally: an install without a C
            # compiler runs termite in pure Python, without live migration.
            why = ("its C extension termite._move._framestate was not built: reinstall termite where a C compiler "
                   "and Python's headers are found")
        else:
            why = f"this is Python {sys.version.split()[0]}"
        versions = ", ".join(f"{major}.{minor}" for major, minor in PYTHONS)
        raise MigrationError(f"live migration needs CPython {versions} ({why}); use migrate(node, fn, *args)")


def capture_frames(coro, trap=None) -> list[Frame]:
    """The frames of the chain from ``coro`` down to (not including) ``trap``, outermost first."""
    _require()
    chain, trap = trap_of(coro, trap)
    return [frame_of(gen) for gen in chain[: [id(g) for g in chain].index(id(trap))]]


# The generators the captures of a top coroutine met (say, the generator of a
# for loop, that of a @contextmanager): abandon() finishes them too.
_captured: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def capture(coro, trap=None) -> bytes:
    """Serialize the suspended chain from ``coro`` down to ``trap``; see the module doc.

    Raises :class:`MigrationError` if something in it cannot travel, naming
    the function and local variable that holds it.
    """
    _require()
    chain, trap = trap_of(coro, trap)
    gens = []
    by_dill, data = pickle_chain(chain, trap, gens)
    met = _captured.get(coro)
    if met is None:
        met = _captured[coro] = weakref.WeakSet()
    met.update(gens)
    return _MAGIC + _VERSION + (_DILL if by_dill else _PICKLE) + data


def restore(data: bytes):
    """Rebuild a chain captured by :func:`capture`; ``coro.send(value)`` resumes it with ``value``."""
    _require()
    data = bytes(data)
    if data[:3] != _MAGIC or len(data) < 6 or data[5:6] not in (_PICKLE, _DILL):
        raise MigrationError("not a continuation made by termite's capture()")
    if data[3:5] != _VERSION:
        raise MigrationError(
            f"this continuation was captured on Python {data[3]}.{data[4]} and this node runs "
            f"{sys.version_info[0]}.{sys.version_info[1]}: live migration needs the same Python version on both nodes "
            "(run the same Python on both, or move the process with migrate(node, fn, *args), which calls fn "
            "there instead of sending the suspended frames)"
        )
    return unpickle_chain(data[6:], by_dill=data[5:6] == _DILL)


def abandon(coro) -> None:
    """Make the chain from ``coro`` (and every generator its captures met) finished, without running it.

    Nothing runs at the source any more: no ``finally`` block, no
    ``__exit__``, no "never awaited" warning, when the chain is dropped.  Its
    references are released as usual when it is deallocated.  Call it only
    after the continuation was restored elsewhere.
    """
    _require()
    gens = chain_of(coro)
    gens += _captured.pop(coro, ())
    for gen in gens:
        if gen.__class__ is _CoroutineType or gen.__class__ is _GeneratorType:
            framestate.finish(gen)
