"""Objects that travel by value: pickle first, dill where pickle cannot.

The codec (termite/_net/codec.py) sends plain data as msgpack and hands
everything else to :func:`object_ext`, which makes it extension type 5
(pickled) or 6 (dilled), as in the codec's table.

Objects that are not plain data go by pickle: namedtuples (``Exit``,
``Down``, a user's), ``Crash``, exceptions, dataclasses, ints beyond 64 bits,
subclasses of the plain types (an ``IntEnum``, an ``OrderedDict``), sets.
Only what pickle cannot do goes by dill: lambdas, closures, nested functions,
and functions and classes defined in ``__main__`` (pickle would send those by
name, and the ``__main__`` of another node is a different script).  The
choice is made per object, so in ``(pid, ("result", crash))`` only ``crash``
is pickled.  dill costs tens of microseconds where pickle costs one, so it is
imported on first need and never runs for plain data or picklable objects.

The dill used here refuses the types dill would copy but that are
resources (a lock, an open file, a capsule).  An object that neither pickle
nor this dill can serialize raises :class:`CannotSerialize`, which the codec
turns into ``UnserializableMessage`` (termite/_net/diagnosis.py).

A function sent by value again and again is dilled once (:data:`_sent_functions`)
and, on the receiving side, made once from the same bytes
(:data:`received_functions`).

Imports nothing of the codec: the codec imports this.
"""

from __future__ import annotations

import builtins
import importlib
import io
import pickle
import pickletools
import threading
import types
import weakref

from msgpack import ExtType

__all__ = [
    "PICKLED",
    "DILLED",
    "CannotSerialize",
    "object_ext",
    "received_functions",
    "object_from_dill",
    "pickle_dumps",
    "pickle_loads",
    "dill_pickler",
    "dilling",
    "dill_dumps",
    "Unreadable",
    "unreadable",
]

# Extension codes, in the codec's table.
PICKLED = 5
DILLED = 6

_new_ext = tuple.__new__  # ExtType() checks its arguments in Python: 3x slower
pickle_dumps = pickle.dumps
pickle_loads = pickle.loads


class CannotSerialize(Exception):
    """Neither pickle nor dill can serialize ``obj``; ``error`` says why.

    Raised inside the packer's default hook; ``encode`` turns it into
    ``UnserializableMessage``.
    """

    def __init__(self, obj, error):
        super().__init__(obj, error)
        self.obj = obj
        self.error = error


# -- by value -------------------------------------------------------------------


def object_ext(obj) -> ExtType:
    """Pickle ``obj``, or dill it if pickle cannot (or could only by naming ``__main__``)."""
    if obj.__class__ is types.FunctionType:
        cached = _sent_functions.get(id(obj))
        if cached is not None and cached[0]() is obj and cached[1] == _cells(obj):
            return cached[2]
        ext = _object_ext_uncached(obj)
        if ext.code == DILLED:
            if len(_sent_functions) >= _FUNCTION_CACHE:
                _sent_functions.clear()
            _sent_functions[id(obj)] = (weakref.ref(obj), _cells(obj), ext)
        return ext
    return _object_ext_uncached(obj)


# A function sent by value again and again (the thunk of a map, a dispatch
# loop) is dilled once: id -> (weakref, what it refers to by identity, ext).
# A function whose closure variables or globals are rebound is dilled again;
# one whose objects are changed in place is not (as with Dask's cache).
# Both caches are emptied, never rebound: the codec holds received_functions.
_sent_functions: dict[int, tuple] = {}
received_functions: dict[bytes, object] = {}  # dilled payload -> the function it made
_FUNCTION_CACHE = 256


def _cells(fn) -> tuple:
    """The identities of what ``fn`` refers to: defaults, closure cells, the globals it names."""
    get = fn.__globals__.get
    refs = [id(fn.__defaults__), id(fn.__kwdefaults__), *(id(get(name)) for name in fn.__code__.co_names)]
    for cell in fn.__closure__ or ():
        try:
            refs.append(id(cell.cell_contents))
        except ValueError:  # an empty cell
            refs.append(None)
    return tuple(refs)


def _object_ext_uncached(obj) -> ExtType:
    try:
        data = pickle_dumps(obj, 5)
    except Exception:  # noqa: BLE001 - lambdas, closures, resources: dill decides
        data = None
    else:
        if b"__main__" not in data:
            return _new_ext(ExtType, (PICKLED, data))
        # else picklable only by reference to this script's __main__
    try:
        return _new_ext(ExtType, (DILLED, dill_dumps(obj)))
    except Exception as exc:  # noqa: BLE001
        if data is not None:
            return _new_ext(ExtType, (PICKLED, data))  # better than nothing: a forked node shares __main__
        raise CannotSerialize(obj, exc) from None  # dill's reason: pickle's may be "a local object"


def object_from_dill(data: bytes):
    """The object of a dilled payload; a function is made once per payload.

    The codec looks ``received_functions`` up itself first, so a function
    received again costs it no call.
    """
    fn = received_functions.get(data)
    if fn is None:
        fn = _dill_loads(data)
        if fn.__class__ is types.FunctionType:
            if len(received_functions) >= _FUNCTION_CACHE:
                received_functions.clear()
            received_functions[bytes(data)] = fn
    return fn


# -- what a node cannot unpickle ------------------------------------------------


class Unreadable:
    """Stands in a received message for an object this node could not unpickle.

    The endpoint answers whoever waits for such a message with ``reason``
    (termite/_net/endpoint.py); where a message holding one is delivered
    anyway, calling it raises ``UnreadableMessage(reason)``, as calling a
    function of a module that is not loaded raises ``undef`` in Erlang.
    """

    __slots__ = ("reason", "module", "name")

    def __init__(self, reason: str, module: str | None, name: str | None):
        self.reason, self.module, self.name = reason, module, name

    def __call__(self, *args, **kwargs):
        from termite._core.errors import UnreadableMessage

        raise UnreadableMessage(self.reason)

    def __reduce__(self):  # passed on as it came, so the next node says the same
        return (Unreadable, (self.reason, self.module, self.name))

    def __repr__(self):
        return f"<unreadable {self.name or self.module or 'object'}: {self.reason}>"


def _globals_named(data: bytes) -> list[tuple[str, str]]:
    """The (module, name) pairs a pickle imports, in order."""
    found, strings, memo = [], [], {}
    try:
        for op, arg, _ in pickletools.genops(data):
            name = op.name
            if name == "GLOBAL":
                module, _, attr = arg.partition(" ")
                found.append((module, attr))
            elif isinstance(arg, str) and "UNICODE" in name:
                strings.append(arg)
            elif name == "MEMOIZE" and strings:
                memo[len(memo)] = strings[-1]
            elif name in ("BINGET", "LONG_BINGET", "GET") and arg in memo:
                strings.append(memo[arg])
            elif name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append((strings[-2], strings[-1]))
    except Exception:  # noqa: BLE001 - a pickle cut short: what was read so far
        pass
    return found


def _missing(data: bytes) -> tuple[str | None, str | None]:
    """The first (module, qualname) the pickle names that this node cannot import."""
    for module, qualname in _globals_named(data):
        try:
            obj = importlib.import_module(module)
            for part in qualname.split("."):
                obj = getattr(obj, part)
        except Exception:  # noqa: BLE001 - that is the one
            return module, qualname
    return None, None


def unreadable(data: bytes, exc: BaseException, where: str = "this node") -> Unreadable:
    """What stands for ``data`` that failed to unpickle with ``exc``: a reason that says what to do."""
    module, qualname = _missing(data)
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        module = exc.name if module is None or not module.startswith(exc.name) else module
    what = f"{module}.{qualname}" if module and qualname else (f"an object of module {module}" if module else "an object")
    reason = f"{where} cannot unpickle {what}: {type(exc).__name__}: {exc}"
    if module is not None:
        top = module.partition(".")[0]
        reason += (
            f". The nodes must be able to import module {module!r}: install it on every node "
            f"(the same version as here), or send its code with the work: "
            f"termite.Executor(..., ship=[{top!r}]) or termite.ship({top!r})"
        )
    return Unreadable(reason, module, qualname)


# -- dill, imported on first need ---------------------------------------------

_dill_lock = threading.Lock()
_DillPickler = None


def dill_pickler():
    """dill's Pickler, minus the types that dill copies but that are resources."""
    global _DillPickler
    with _dill_lock:
        if _DillPickler is None:
            import dill
            from dill._dill import MetaCatchingDict, _import_module

            dispatch = MetaCatchingDict(dill.Pickler.dispatch.copy())
            for kind in list(dispatch):
                # locks (a copy is a different lock), open files (dill would
                # reopen them by name on the other host), capsules (C pointers)
                if kind.__module__ in ("_thread", "_io", "_pyio") or kind.__name__ == "PyCapsule":
                    del dispatch[kind]

            def save_module(pickler, module):
                # By name, always.  dill sends a module installed outside
                # sys.prefix (an editable install, the user's own package)
                # by value, with its whole __dict__, which fails on the
                # first thread-local and would overwrite the receiver's copy.
                pickler.save_reduce(_import_module, (module.__name__,), obj=module)

            dispatch[types.ModuleType] = save_module
            _install_direct_globalvars()

            class _Pickler(dill.Pickler):
                pass

            _Pickler.dispatch = dispatch
            _DillPickler = _Pickler
    return _DillPickler


# ``dilling.active`` is True on a thread while termite dills (see below).
dilling = threading.local()


def _install_direct_globalvars() -> None:
    """Make dill's recurse=True gather a function's *own* globals, while termite dills.

    dill's ``globalvars`` also walks every function those globals name, and
    theirs, with no cycle check: a closure naming any function of a module
    with mutual recursion (termite's own) overflows the stack.  The walk is
    needless: each function it finds is pickled in its own turn, by
    reference if importable, else by value with its own globals.  dill looks
    ``globalvars`` up in ``dill.detect`` at each call, so the swap is seen;
    other users of dill (outside ``dill_dumps``) get the original.
    """
    import dill.detect

    original = dill.detect.globalvars

    def globalvars(func, recurse=True, builtin=False):
        if not getattr(dilling, "active", False) or not isinstance(func, types.FunctionType):
            return original(func, recurse, builtin)
        names = set()
        codes = [func.__code__]
        while codes:  # the function's code and the code of functions nested in it
            code = codes.pop()
            names.update(code.co_names)
            codes.extend(const for const in code.co_consts if isinstance(const, types.CodeType))
        scope = {**vars(builtins), **func.__globals__} if builtin else func.__globals__
        return {name: scope[name] for name in names if name in scope}

    dill.detect.globalvars = globalvars


def dill_dumps(obj) -> bytes:
    pickler_class = _DillPickler or dill_pickler()
    buffer = io.BytesIO()
    # recurse=True: a function's globals travel by what it uses, not as a
    # reference to a __main__ the other node does not have.
    dilling.active = True
    try:
        pickler_class(buffer, protocol=5, recurse=True).dump(obj)
    finally:
        dilling.active = False
    return buffer.getvalue()


def _dill_loads(data: bytes):
    import dill

    return dill.loads(data)
