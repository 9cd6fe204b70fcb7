"""Capturing a suspended chain: its pickle, and why one cannot travel.

``pickle_chain(chain, trap, gens) -> (by_dill, data)``
    Pickle the chain's top coroutine.  A generator or coroutine met anywhere
    in it pickles as "a new generator of this function, then fill in its
    state" (termite/_move/rebuild.py calls both); the trap pickles as a
    resume point; a function of an importable module goes by name, or, if it
    is a lambda or closure, as its code over that module's globals.  Plain C
    pickle is tried first; dill (termite._net.codec's pickler, which refuses
    locks, files and sockets) only when pickle cannot do it.  The generators
    it met are appended to ``gens``.
``blame(coro, trap, error) -> MigrationError``
    When even dill fails: the local variable (or value-stack slot, or
    handled exception) that cannot travel, found by pickling each on its
    own, and named with its function, its type and where in it the culprit
    sits (``local variable 'conns' of serve() holds a socket.socket (at
    conns[1])``).
"""

from __future__ import annotations

import io
import marshal
import pickle
import socket
import sys
import types

from termite._core.errors import MigrationError
from termite._move.chain import NULL, frame_of, framestate, name_of, type_name
from termite._move.fingerprint import fingerprint
from termite._move.rebuild import (
    fill_cell, fill_gen, finished, module_function, module_named, new_cell, new_gen, resume_point,
)
from termite._net.diagnosis import innermost
from termite._net.pickling import dill_pickler, dilling

__all__ = ["pickle_chain", "blame"]

_CoroutineType = types.CoroutineType
_GeneratorType = types.GeneratorType


def pickle_chain(chain: list, trap, gens: list) -> tuple[bool, bytes]:
    """Pickle ``chain[0]``, whose chain ends at ``trap``: (whether dill did it, the pickle).

    Raises :class:`MigrationError` if something in it cannot travel, naming
    the function and local variable that holds it.
    """
    try:
        data = _dump(chain[0], trap, gens, use_dill=False)
        if b"__main__" in data:  # another node's __main__ is another script
            raise pickle.PicklingError("names __main__")
        return False, data
    except MigrationError:
        raise
    except Exception:  # noqa: BLE001 - lambdas, closures, resources: dill decides
        gens.clear()
    try:
        return True, _dump(chain[0], trap, gens, use_dill=True)
    except MigrationError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise blame(chain[0], trap, exc) from exc


class _Capture:
    """What both picklers add: generators as frames, the trap as a resume point."""

    trap = None
    gens: list
    cells = True  # pickle cannot pickle cells; dill can, and must for its recursive closures

    def reducer_override(self, obj):
        if obj is self.trap:
            return resume_point, ()
        cls = obj.__class__
        if cls is _CoroutineType or cls is _GeneratorType:
            return self._reduce_gen(obj)
        if cls is types.FunctionType:
            return _reduce_function(obj)
        if cls is types.ModuleType:  # a local import: by name, so C pickle does it (else dill would, 10x slower)
            name = obj.__name__
            if name != "__main__" and sys.modules.get(name) is obj:
                return module_named, (name,)
            return NotImplemented
        if cls is types.CellType and self.cells:
            try:
                return new_cell, (), (obj.cell_contents,), None, None, fill_cell
            except ValueError:
                return new_cell, ()
        return NotImplemented

    def _reduce_gen(self, gen):
        state, func, lasti, localsplus, stack, exc = framestate.get_frame(gen, NULL)
        if state == framestate.EXECUTING:
            raise MigrationError(f"cannot capture {name_of(gen)} while it runs: capture a process suspended at a trap")
        if func is None:
            return finished, (gen.__class__ is _CoroutineType,)
        code = gen.cr_code if gen.__class__ is _CoroutineType else gen.gi_code
        if func.__code__ is not code:
            raise MigrationError(
                f"cannot migrate {name_of(gen)}: its function's __code__ was replaced after it started"
            )
        self.gens.append(gen)
        return new_gen, (func, fingerprint(code)), (func, state, lasti, localsplus, stack, exc), None, None, fill_gen


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
    return module_function, (name, code, func.__name__, func.__qualname__, func.__defaults__,
                             func.__kwdefaults__, func.__closure__), state


class _Pickler(_Capture, pickle.Pickler):
    pass


_DillCapture = None


def _dill_capture_class():
    global _DillCapture
    if _DillCapture is None:
        _DillCapture = type("_DillCapture", (_Capture, dill_pickler()), {"cells": False})
    return _DillCapture


def _dump(obj, trap, gens: list, use_dill: bool) -> bytes:
    buffer = io.BytesIO()
    if use_dill:
        pickler = _dill_capture_class()(buffer, protocol=5, recurse=True)
        dilling.active = True  # dill gathers a function's own globals only (termite/_net/pickling.py)
    else:
        pickler = _Pickler(buffer, 5)
    pickler.trap, pickler.gens = trap, gens
    try:
        pickler.dump(obj)
    finally:
        dilling.active = False
    return buffer.getvalue()


# -- why a chain cannot travel ----------------------------------------------------

_HOW_TO_FIX = "close it before migrating or keep it in a process that stays"
_HINTS = {
    types.AsyncGeneratorType: "async generators cannot migrate; iterate over a generator or a list instead",
}
_OPEN_FILE = (
    _HOW_TO_FIX + ": termite.io.open_file(path, mode) is that process for a file; its pid travels, "
    "and the file stays open on this node"
)
_SOCKET = _HOW_TO_FIX + " and talk to that process by messages, as termite.io.open_file does for files"


def _hint(value) -> str:
    """How to do without ``value`` in a process that migrates."""
    hint = _HINTS.get(type(value))
    if hint is not None:
        return hint
    if isinstance(value, io.IOBase):  # open files, text or binary (in-memory ones pickle, so are never here)
        return _OPEN_FILE
    if isinstance(value, socket.socket):
        return _SOCKET
    return _HOW_TO_FIX


def blame(coro, trap, error) -> MigrationError:
    """Find the local (or stack slot) that cannot travel, checking each on its own."""
    found = _find_bad(coro, trap, set())
    if found is None:
        return MigrationError(f"cannot migrate {name_of(coro)}: {type(error).__name__}: {error}")
    gen, where, variable, value, error = found
    path, value, error = innermost(value, variable or "value", error)
    value_type = type_name(value)
    what = f"is a {value_type}" if path == (variable or "value") else f"holds a {value_type} (at {path})"
    hint = _hint(value)
    where = where.format(name_of(gen))
    text = f"cannot migrate: {where} {what}, which cannot travel to another node ({error}); {hint}"
    return MigrationError(text, function=name_of(gen)[:-2], variable=variable, type_name=value_type)


def _find_bad(gen, trap, seen):
    seen.add(id(gen))
    frame = frame_of(gen)
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
