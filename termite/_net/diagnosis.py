"""Why a message cannot be sent: the unserializable part, and the error text.

When neither pickle nor dill can serialize an object of a message
(termite/_net/pickling.py raises ``CannotSerialize``), the codec calls
:func:`unserializable`, which finds where the object sits in the message
(``message[2]['key']``), then goes down into it to the innermost part to
blame (a lock in a closure variable of a function in a dataclass field), and
makes an :class:`UnserializableMessage` naming that part's path and type
with the fix.  This runs only on the error path, so it may be slow.

``innermost`` is also how migration names the part of a process's state
that cannot travel.

Imports nothing of the codec: the codec imports this.
"""

from __future__ import annotations

import types

from termite._core.errors import TermiteError
from termite._net.pickling import CannotSerialize, dill_dumps, pickle_dumps

__all__ = ["UnserializableMessage", "unserializable", "innermost"]


class UnserializableMessage(TermiteError, TypeError):
    """``encode`` met an object that can be neither pickled nor dilled (a lock, a socket, ...).

    ``path`` says where it sits in the message (``"message[2]['key']"``) and
    ``type_name`` what it is.
    """

    def __init__(self, text: str, path: str = "message", type_name: str = ""):
        super().__init__(text)
        self.path = path
        self.type_name = type_name


_HOW_TO_FIX = (
    "Send plain data instead (None, bool, int, float, str, bytes, list, tuple, dict, pids, "
    "picklable objects); a resource such as a lock, an open file or a socket cannot travel: "
    "wrap it in a process and send that process's pid."
)


def unserializable(msg, exc: CannotSerialize) -> UnserializableMessage:
    """The error for ``msg``, of which ``exc.obj`` could not be serialized."""
    obj, error = exc.obj, exc.error
    path = _path_to(msg, obj) or "message"
    path, obj, error = innermost(obj, path, error)
    kind = type(obj)
    type_name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    text = f"cannot send {path}: a {type_name} object cannot be serialized ({error}). {_HOW_TO_FIX}"
    return UnserializableMessage(text, path, type_name)


def _short(key) -> str:
    try:
        text = repr(key)
    except Exception:  # noqa: BLE001 - a broken __repr__ must not hide the real error
        text = f"<{type(key).__name__}>"
    return text if len(text) <= 40 else text[:37] + "..."


def _path_to(root, target) -> str | None:
    """Where ``target`` sits in ``root``, walking the plain containers msgpack walked."""
    stack = [(root, "message")]
    seen = set()
    while stack:
        obj, path = stack.pop()
        if obj is target:
            return path
        cls = obj.__class__
        if cls is tuple or cls is list:
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            stack.extend((item, f"{path}[{i}]") for i, item in reversed(list(enumerate(obj))))
        elif cls is dict:
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            for key, value in reversed(list(obj.items())):
                stack.append((value, f"{path}[{_short(key)}]"))
                stack.append((key, f"{path} (the key {_short(key)})"))
    return None


def _parts(obj, path: str):
    """The parts of an object that pickle would serialize, with their paths."""
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # a namedtuple
        yield from ((item, f"{path}.{name}") for name, item in zip(obj._fields, obj))
    elif isinstance(obj, (tuple, list)):
        yield from ((item, f"{path}[{i}]") for i, item in enumerate(obj))
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield key, f"{path} (the key {_short(key)})"
            yield value, f"{path}[{_short(key)}]"
    elif isinstance(obj, (set, frozenset)):
        yield from ((item, f"{path} (an element)") for item in obj)
    if isinstance(obj, BaseException):
        yield from ((item, f"{path}.args[{i}]") for i, item in enumerate(obj.args))
    if isinstance(obj, types.FunctionType):
        for name, cell in zip(obj.__code__.co_freevars, obj.__closure__ or ()):
            try:
                yield cell.cell_contents, f"{path} (its variable {name!r})"
            except ValueError:  # a cell not yet filled
                pass
        return
    if isinstance(obj, (type, types.ModuleType)):
        return  # their __dict__ is code, not data
    attributes = getattr(obj, "__dict__", None)
    if isinstance(attributes, dict):
        yield from ((value, f"{path}.{name}") for name, value in attributes.items())
    for klass in type(obj).__mro__:
        for name in getattr(klass, "__slots__", ()):
            if isinstance(name, str) and name not in ("__dict__", "__weakref__") and hasattr(obj, name):
                yield getattr(obj, name), f"{path}.{name}"


def _serialization_error(obj) -> Exception | None:
    try:
        pickle_dumps(obj, 5)
        return None
    except Exception:  # noqa: BLE001
        pass
    try:
        dill_dumps(obj)
        return None
    except Exception as exc:  # noqa: BLE001
        return exc


def innermost(obj, path: str, error):
    """Go down from an unserializable object to the part of it that is to blame.

    Returns ``(path, part, error)``: the part's path (``path`` extended), the
    part, and why it cannot be serialized.
    """
    seen = {id(obj)}
    try:
        for _ in range(32):
            for part, part_path in _parts(obj, path):
                if id(part) in seen:
                    continue
                seen.add(id(part))
                part_error = _serialization_error(part)
                if part_error is not None:
                    obj, path, error = part, part_path, part_error
                    break
            else:
                break
    except Exception:  # noqa: BLE001 - an object that resists inspection: blame it as a whole
        pass
    return path, obj, error
