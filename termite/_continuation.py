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
    Whether live migration works on this interpreter (CPython 3.11).

Encoding: ``b"TMC"``, Python major and minor, ``b"p"`` or ``b"d"``, then a
pickle (protocol 5) of the top coroutine.  A generator pickles as "call this
function's code without arguments, then fill in the frame" (termite._frames
does the frame, in C).  A function goes by name when importable; a lambda or
closure of an importable module goes as its code (marshal) over that module's
globals, so it needs no dill and sees the module's globals on the other node.
Plain C pickle is tried first; dill (termite._codec's pickler, which refuses
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
"""

from __future__ import annotations

import hashlib
import importlib
import io
import marshal
import pickle
import sys
import threading
import types
import weakref
from typing import NamedTuple

from termite import _codec
from termite._errors import MigrationError

try:
    from termite import _frames
except ImportError:  # not built: supported() says so
    _frames = None

__all__ = ["capture", "restore", "abandon", "capture_frames", "supported", "Frame", "NULL"]

_CoroutineType = types.CoroutineType
_GeneratorType = types.GeneratorType
_MAGIC = b"TMC"
_VERSION = bytes(sys.version_info[:2])
_PICKLE, _DILL = b"p", b"d"


def supported() -> bool:
    """Whether this interpreter can capture and restore suspended processes."""
    return _frames is not None and _frames.SUPPORTED and sys.implementation.name == "cpython"


def _require() -> None:
    if not supported():
        why = "termite._frames is not built" if _frames is None else f"this is Python {sys.version.split()[0]}"
        raise MigrationError(f"live migration needs CPython 3.11 ({why}); use migrate(node, fn, *args)")


class _Null:
    """A NULL slot of a frame: an unbound local, or a NULL the compiler pushed."""

    __slots__ = ()

    def __reduce__(self):
        return "NULL"

    def __repr__(self):
        return "NULL"


NULL = _Null()


# -- code fingerprints ----------------------------------------------------------

_fingerprints: dict[int, tuple] = {}  # id(code) -> (code, fingerprint); the code is kept so the id stays its own


def _fingerprint(code: types.CodeType) -> bytes:
    """A digest of what the code does: bytecode, constants, names; not addresses, files or lines."""
    entry = _fingerprints.get(id(code))
    if entry is None:
        key = (code.co_code, code.co_exceptiontable, code.co_names, code.co_varnames, code.co_cellvars,
               code.co_freevars, code.co_flags, code.co_argcount, code.co_posonlyargcount,
               code.co_kwonlyargcount, code.co_stacksize, tuple(map(_const_key, code.co_consts)))
        if len(_fingerprints) >= 4096:
            _fingerprints.clear()
        entry = _fingerprints[id(code)] = (code, hashlib.blake2b(repr(key).encode(), digest_size=16).digest())
    return entry[1]


def _const_key(const):
    if isinstance(const, types.CodeType):
        return _fingerprint(const)
    if isinstance(const, tuple):
        return tuple(map(_const_key, const))
    if isinstance(const, frozenset):  # its order depends on string hashing, which differs per process
        return sorted(repr(_const_key(c)) for c in const)
    return type(const).__name__, const  # 1, 1.0 and True are equal but not the same constant


# -- the chain and its frames -----------------------------------------------------


class Frame(NamedTuple):
    """One suspended frame: what ``capture`` sends for it."""

    gen: object  # the generator or coroutine
    function: types.FunctionType
    lasti: int  # instruction offset, in code units
    locals: dict  # name -> value; cell and free variables by their contents; unbound names left out
    stack: tuple  # the value stack, bottom first; NULL for a NULL slot
    exc: object  # the exception being handled, or None


def _chain(coro) -> list:
    """``coro`` and what it awaits, transitively: the await chain, outermost first."""
    if coro.__class__ is not _CoroutineType and coro.__class__ is not _GeneratorType:
        raise MigrationError(f"can only migrate a coroutine or a generator, not a {_type_name(coro)}")
    chain = [coro]
    while True:
        cls = chain[-1].__class__
        inner = chain[-1].cr_await if cls is _CoroutineType else chain[-1].gi_yieldfrom if cls is _GeneratorType else None
        if inner is None:
            return chain
        chain.append(inner)


def _trap_of(coro, trap) -> tuple[list, object]:
    chain = _chain(coro)
    if chain[0].cr_running if chain[0].__class__ is _CoroutineType else chain[0].gi_running:
        raise MigrationError(f"cannot capture {_name(coro)} while it runs: capture a process suspended at a trap")
    if trap is None:
        trap = chain[-1]
    if trap is coro or not any(link is trap for link in chain):
        raise MigrationError(f"{_name(coro)} does not await the given trap ({trap!r}); it awaits {chain[-1]!r}")
    return chain, trap


def _local_names(code) -> tuple:
    # The order of a frame's slots: locals (arguments first), cells that are
    # not arguments, free variables.
    cells = tuple(name for name in code.co_cellvars if name not in code.co_varnames)
    return code.co_varnames + cells + code.co_freevars


def _frame(gen) -> Frame | None:
    state, func, lasti, localsplus, stack, exc = _frames.get_frame(gen, NULL)
    if state == _frames.EXECUTING:
        raise MigrationError(f"cannot capture {_name(gen)} while it runs: capture a process suspended at a trap")
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


def capture_frames(coro, trap=None) -> list[Frame]:
    """The frames of the chain from ``coro`` down to (not including) ``trap``, outermost first."""
    _require()
    chain, trap = _trap_of(coro, trap)
    return [_frame(gen) for gen in chain[: [id(g) for g in chain].index(id(trap))]]


# -- capture --------------------------------------------------------------------


class _Capture:
    """What both picklers add: generators as frames, the trap as a resume point."""

    trap = None
    gens: list
    cells = True  # pickle cannot pickle cells; dill can, and must for its recursive closures

    def reducer_override(self, obj):
        if obj is self.trap:
            return _resume_point, ()
        cls = obj.__class__
        if cls is _CoroutineType or cls is _GeneratorType:
            return self._reduce_gen(obj)
        if cls is types.FunctionType:
            return _reduce_function(obj)
        if cls is types.CellType and self.cells:
            try:
                return _new_cell, (), (obj.cell_contents,), None, None, _fill_cell
            except ValueError:
                return _new_cell, ()
        return NotImplemented

    def _reduce_gen(self, gen):
        state, func, lasti, localsplus, stack, exc = _frames.get_frame(gen, NULL)
        if state == _frames.EXECUTING:
            raise MigrationError(f"cannot capture {_name(gen)} while it runs: capture a process suspended at a trap")
        if func is None:
            return _finished, (gen.__class__ is _CoroutineType,)
        code = gen.cr_code if gen.__class__ is _CoroutineType else gen.gi_code
        if func.__code__ is not code:
            raise MigrationError(f"cannot migrate {_name(gen)}: its function's __code__ was replaced after it started")
        self.gens.append(gen)
        return _new_gen, (func, _fingerprint(code)), (func, state, lasti, localsplus, stack, exc), None, None, _set_frame


def _reduce_function(func):
    """A function of an importable module goes by name, or else as its code over that module's globals.

    So a closure or lambda of an importable module needs no dill, and uses
    the module's globals on the other node, as the frames around it do
    (dill would copy the globals it names).  Other functions (of __main__,
    of an exec'd namespace) are left to pickle, and then to dill.
    """
    name = func.__module__
    module = sys.modules.get(name) if name != "__main__" else None
    if module is None or getattr(module, "__dict__", None) is not func.__globals__:
        return NotImplemented
    found = module
    for part in func.__qualname__.split("."):
        found = getattr(found, part, None)
    if found is func:
        return NotImplemented  # by name: pickle's own save_global
    code = marshal.dumps(func.__code__)  # both nodes run the same Python version
    state = func.__dict__ or None
    return _module_function, (name, code, func.__name__, func.__qualname__, func.__defaults__,
                              func.__kwdefaults__, func.__closure__), state


class _Pickler(_Capture, pickle.Pickler):
    pass


_DillCapture = None


def _dill_capture_class():
    global _DillCapture
    if _DillCapture is None:
        _DillCapture = type("_DillCapture", (_Capture, _codec._dill_pickler()), {"cells": False})
    return _DillCapture


def _dump(obj, trap, gens: list, use_dill: bool) -> bytes:
    buffer = io.BytesIO()
    if use_dill:
        pickler = _dill_capture_class()(buffer, protocol=5, recurse=True)
        _codec._dilling.active = True  # dill gathers a function's own globals only (termite/_codec.py)
    else:
        pickler = _Pickler(buffer, 5)
    pickler.trap, pickler.gens = trap, gens
    try:
        pickler.dump(obj)
    finally:
        _codec._dilling.active = False
    return buffer.getvalue()


# The generators the captures of a top coroutine met (say, the generator of a
# for loop, that of a @contextmanager): abandon() finishes them too.
_captured: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def capture(coro, trap=None) -> bytes:
    """Serialize the suspended chain from ``coro`` down to ``trap``; see the module doc.

    Raises :class:`MigrationError` if something in it cannot travel, naming
    the function and local variable that holds it.
    """
    _require()
    chain, trap = _trap_of(coro, trap)
    gens = []
    kind = _PICKLE
    try:
        data = _dump(coro, trap, gens, use_dill=False)
        if b"__main__" in data:  # another node's __main__ is another script
            raise pickle.PicklingError("names __main__")
    except MigrationError:
        raise
    except Exception:  # noqa: BLE001 - lambdas, closures, resources: dill decides
        gens.clear()
        kind = _DILL
        try:
            data = _dump(coro, trap, gens, use_dill=True)
        except MigrationError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise _blame(chain[0], trap, exc) from exc
    met = _captured.get(coro)
    if met is None:
        met = _captured[coro] = weakref.WeakSet()
    met.update(gens)
    return _MAGIC + _VERSION + kind + data


# -- why a chain cannot travel ----------------------------------------------------

_HOW_TO_FIX = "close it before migrating or keep it in a process that stays"
_HINTS = {
    types.AsyncGeneratorType: "async generators cannot migrate; iterate over a generator or a list instead",
}


def _type_name(obj) -> str:
    kind = type(obj)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def _name(gen) -> str:
    return f"{getattr(gen, '__qualname__', type(gen).__name__)}()"


def _dump_error(value, trap) -> Exception | None:
    """Why ``value`` cannot be captured (dill's word, as dill is the last resort), or None."""
    try:
        _dump(value, trap, [], use_dill=False)
        return None
    except Exception:  # noqa: BLE001
        pass
    try:
        _dump(value, trap, [], use_dill=True)
        return None
    except Exception as exc:  # noqa: BLE001
        return exc


def _blame(coro, trap, error) -> MigrationError:
    """Find the local (or stack slot) that cannot travel, checking each on its own."""
    found = _find_bad(coro, trap, set())
    if found is None:
        return MigrationError(f"cannot migrate {_name(coro)}: {type(error).__name__}: {error}")
    gen, where, variable, value, error = found
    path, value, error = _codec._innermost(value, variable or "value", error)
    type_name = _type_name(value)
    what = f"is a {type_name}" if path == (variable or "value") else f"holds a {type_name} (at {path})"
    hint = _HINTS.get(type(value), _HOW_TO_FIX)
    where = where.format(_name(gen))
    text = f"cannot migrate: {where} {what}, which cannot travel to another node ({error}); {hint}"
    return MigrationError(text, function=_name(gen)[:-2], variable=variable, type_name=type_name)


def _find_bad(gen, trap, seen):
    seen.add(id(gen))
    frame = _frame(gen)
    if frame is None:
        return None
    # Locals first: a name says most.  {} is where the frame's name goes.
    slots = [(f"local variable {name!r} of {{}}", name, value) for name, value in frame.locals.items()]
    slots += [("a value on the stack of {} (a for loop's iterator or a with block's __exit__, say)", None, v)
              for v in frame.stack]
    slots += [("the exception {} handles", None, frame.exc), ("the function of {}", None, frame.function)]
    for where, variable, value in slots:
        if value is trap or id(value) in seen:
            continue
        if value.__class__ is _CoroutineType or value.__class__ is _GeneratorType:
            found = _find_bad(value, trap, seen)
        else:
            error = _dump_error(value, trap)
            found = None if error is None else (gen, where, variable, value, error)
        if found is not None:
            return found
    return None


# -- restore --------------------------------------------------------------------


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
    unpickler = _Restore if data[5:6] == _PICKLE else _dill_restore_class()
    outer, _rebuilding.gens = getattr(_rebuilding, "gens", None), []  # what _new_gen makes: see _forget
    try:
        coro = unpickler(io.BytesIO(data[6:])).load()
        if coro.__class__ is not _CoroutineType and coro.__class__ is not _GeneratorType:
            raise MigrationError(f"the continuation holds a {_type_name(coro)}, not a coroutine")
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
        _frames.finish(gen)
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


_starters: dict[int, tuple] = {}  # id(code) -> (code, the same code taking no arguments)
_NO_ARGS_FLAGS = ~(0x04 | 0x08)  # CO_VARARGS, CO_VARKEYWORDS


def _new_gen(func, fingerprint):
    """A fresh generator (or coroutine) of ``func`` whose frame _set_frame fills in."""
    if not isinstance(func, types.FunctionType):
        raise MigrationError(f"cannot restore here: {func!r} is not a function on this node")
    code = func.__code__
    if _fingerprint(code) != fingerprint:
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
    _frames.finish(gen)  # inert until _set_frame: if restoring fails, it goes quietly
    made = getattr(_rebuilding, "gens", None)
    if made is not None:
        made.append(gen)  # and once _set_frame ran, _forget makes it inert again
    return gen


def _set_frame(gen, state):
    func, frame_state, lasti, localsplus, stack, exc = state
    try:
        _frames.set_frame(gen, func, frame_state, lasti, localsplus, stack, exc, NULL)
    except (TypeError, ValueError) as exc:
        raise MigrationError(f"cannot restore {_name(gen)}: {exc}") from exc
    return gen


@types.coroutine
def _resume():
    return (yield)


def _resume_point():
    """What the rebuilt chain awaits instead of the trap: returns the value sent into it."""
    gen = _resume()
    gen.send(None)
    return gen


async def _done_coroutine():
    pass


def _done_generator():
    yield


def _finished(is_coroutine):
    gen = _done_coroutine() if is_coroutine else _done_generator()
    gen.close()
    return gen


def _module_function(module_name, code, name, qualname, defaults, kwdefaults, closure):
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


def _new_cell():
    return types.CellType()


def _fill_cell(cell, state):
    cell.cell_contents = state[0]
    return cell


# -- abandon ------------------------------------------------------------------


def abandon(coro) -> None:
    """Make the chain from ``coro`` (and every generator its captures met) finished, without running it.

    Nothing runs at the source any more: no ``finally`` block, no
    ``__exit__``, no "never awaited" warning, when the chain is dropped.  Its
    references are released as usual when it is deallocated.  Call it only
    after the continuation was restored elsewhere.
    """
    _require()
    gens = _chain(coro)
    gens += _captured.pop(coro, ())
    for gen in gens:
        if gen.__class__ is _CoroutineType or gen.__class__ is _GeneratorType:
            _frames.finish(gen)
