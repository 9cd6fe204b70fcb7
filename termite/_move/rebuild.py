"""Rebuilding a captured chain: generators and coroutines out of a continuation's pickle.

``unpickle_chain(data, by_dill) -> coroutine`` loads the pickle that
termite/_move/capture.py made.  The pickle calls the functions below by
their module and name (so they are part of the continuation's format: both
nodes must run the same termite).  What each one rebuilds:

=======================  ============================================================
called by the pickle     rebuilds
=======================  ============================================================
``new_gen``              a generator or coroutine of a function, its code checked
                         against the fingerprint it was captured with; inert until
``fill_gen``             sets its instruction offset, locals, value stack and the
                         exception it handles (termite/_move/_framestate.c)
``finished``             a generator or coroutine that had finished
``resume_point``         what the chain awaits in place of the trap: a primed
                         generator that returns the value sent into it
``module_function``      a lambda or closure of an importable module, from its code,
                         over that module's globals on this node
``new_cell``,            a cell shared by a frame and its closures (plain pickle
``fill_cell``            cannot pickle cells)
=======================  ============================================================

A function that cannot be found here, or whose code differs from the
captured one, is a ``MigrationError`` that names it.  If rebuilding fails
halfway, the generators already rebuilt are finished without running: their
``finally`` blocks belong to the node where the process stays.
"""

from __future__ import annotations

import importlib
import io
import marshal
import pickle
import threading
import types

from termite._core.errors import MigrationError
from termite._move.chain import NULL, framestate, name_of, type_name
from termite._move.fingerprint import fingerprint

__all__ = ["unpickle_chain", "new_gen", "fill_gen", "finished", "resume_point", "module_function", "new_cell",
           "fill_cell"]

_CoroutineType = types.CoroutineType
_GeneratorType = types.GeneratorType


def unpickle_chain(data: bytes, by_dill: bool):
    """The top coroutine of the chain pickled in ``data``; raises :class:`MigrationError` if it cannot be rebuilt."""
    unpickler = _dill_restore_class() if by_dill else _Restore
    outer, _rebuilding.gens = getattr(_rebuilding, "gens", None), []  # what new_gen makes: see _forget
    try:
        coro = unpickler(io.BytesIO(data)).load()
        if coro.__class__ is not _CoroutineType and coro.__class__ is not _GeneratorType:
            raise MigrationError(f"the continuation holds a {type_name(coro)}, not a coroutine")
    except MigrationError:
        _forget(_rebuilding.gens)
        raise
    except Exception as exc:  # noqa: BLE001 - whatever failed, the continuation cannot run here
        _forget(_rebuilding.gens)
        raise MigrationError(f"cannot restore the continuation here: {type(exc).__name__}: {exc}") from exc
    finally:
        _rebuilding.gens = outer
    return coro


# The generators the restore running in this thread has made so far.
_rebuilding = threading.local()


def _forget(gens: list) -> None:
    """A restore failed halfway: the frames it rebuilt go without running.

    Frames rebuilt before the failure (say, the generator of a for loop, met
    before the frame with other code) are complete: dropped as they are, they
    would run their ``finally`` blocks here, on a node the process never
    reached, outside any process.  They run where the process stays.
    """
    for gen in gens:
        framestate.finish(gen)
    gens.clear()


class _Finding:
    """What both unpicklers add: a missing function is a MigrationError that names it."""

    def find_class(self, module, name):
        try:
            return super().find_class(module, name)
        except Exception as exc:  # noqa: BLE001
            raise MigrationError(f"cannot restore here: {module}.{name} cannot be found on this node ({exc})") from exc


class _Restore(_Finding, pickle.Unpickler):
    pass


_DillRestore = None


def _dill_restore_class():
    global _DillRestore
    if _DillRestore is None:
        import dill

        _DillRestore = type("_DillRestore", (_Finding, dill.Unpickler), {})
    return _DillRestore


# -- what the pickle calls --------------------------------------------------------------

_starters: dict[int, tuple] = {}  # id(code) -> (code, the same code taking no arguments)
_NO_ARGS_FLAGS = ~(0x04 | 0x08)  # CO_VARARGS, CO_VARKEYWORDS


def new_gen(func, captured_fingerprint):
    """A fresh generator (or coroutine) of ``func`` whose frame fill_gen fills in."""
    if not isinstance(func, types.FunctionType):
        raise MigrationError(f"cannot restore here: {func!r} is not a function on this node")
    code = func.__code__
    if fingerprint(code) != captured_fingerprint:
        raise MigrationError(
            f"different code for function {func.__module__}.{func.__qualname__} on this node than on the node "
            "that captured it: both nodes must run the same version of it"
        )
    entry = _starters.get(id(code))
    if entry is None:
        # Calling the function needs its arguments; the same code taking none
        # makes the same frame (arguments are just its first locals).
        starter = code.replace(co_argcount=0, co_posonlyargcount=0, co_kwonlyargcount=0,
                               co_flags=code.co_flags & _NO_ARGS_FLAGS)
        if len(_starters) >= 4096:
            _starters.clear()
        entry = _starters[id(code)] = (code, starter)
    starter = types.FunctionType(entry[1], func.__globals__, func.__name__, None, func.__closure__)
    starter.__qualname__ = func.__qualname__
    gen = starter()
    framestate.finish(gen)  # inert until fill_gen: if restoring fails, it goes quietly
    made = getattr(_rebuilding, "gens", None)
    if made is not None:
        made.append(gen)  # and once fill_gen ran, _forget makes it inert again
    return gen


def fill_gen(gen, state):
    """Give ``gen`` (made by new_gen) its captured state: function, status, offset, locals, stack, exception."""
    func, frame_state, lasti, localsplus, stack, exc = state
    try:
        framestate.set_frame(gen, func, frame_state, lasti, localsplus, stack, exc, NULL)
    except (TypeError, ValueError) as exc:
        raise MigrationError(f"cannot restore {name_of(gen)}: {exc}") from exc
    return gen


@types.coroutine
def _resume():
    return (yield)


def resume_point():
    """What the rebuilt chain awaits instead of the trap: returns the value sent into it."""
    gen = _resume()
    gen.send(None)
    return gen


async def _done_coroutine():
    pass


def _done_generator():
    yield


def finished(is_coroutine):
    """A finished coroutine (or generator), in place of one that had finished when captured."""
    gen = _done_coroutine() if is_coroutine else _done_generator()
    gen.close()
    return gen


def module_named(name):
    """A module a frame held in a local (``import x`` inside a function), imported here."""
    try:
        return importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001
        raise MigrationError(f"cannot restore here: module {name} cannot be imported on this node ({exc})") from exc


def module_function(module_name, code, name, qualname, defaults, kwdefaults, closure):
    """A function of module ``module_name`` from its marshalled ``code``, over that module's globals here."""
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001
        raise MigrationError(
            f"cannot restore here: module {module_name} (of {qualname}) cannot be imported on this node ({exc})"
        ) from exc
    func = types.FunctionType(marshal.loads(code), module.__dict__, name, defaults, closure)
    func.__qualname__ = qualname
    func.__kwdefaults__ = kwdefaults
    return func


def new_cell():
    return types.CellType()


def fill_cell(cell, state):
    cell.cell_contents = state[0]
    return cell
