"""The local registry: names for processes of this node.

As in Erlang, a name names one process and a process has at most one name; a
name is freed when its process ends.  ``send(name, msg)`` sends to it.
"""

from __future__ import annotations

from termite._core.errors import NameTaken
from termite._core.ids import Pid
from termite._core.process import ProcessTable, current

__all__ = ["register", "unregister", "whereis", "registered"]


def _check_name(name) -> None:
    if not isinstance(name, str) or not name:
        raise TypeError(f"a registered name must be a non-empty str, got {name!r}")


def register_in(table: ProcessTable, name: str, pid: Pid) -> None:
    _check_name(name)
    if pid.__class__ is not Pid:
        raise TypeError(f"register() needs a Pid, got {type(pid).__name__}: {pid!r}")
    proc = table.resolve(pid)
    if proc is None:
        if table.is_local(pid):
            raise NameTaken(f"cannot register {name!r}: process {pid} has ended")
        raise ValueError(f"cannot register {name!r} for {pid}: the local registry holds this node's processes only")
    holder = table.names.get(name)
    if holder is not None:
        raise NameTaken(f"{name!r} is already registered to {holder}; unregister({name!r}) first")
    if proc.name is not None:
        raise NameTaken(f"{pid} is already registered as {proc.name!r}; a process has one name")
    table.names[name] = pid
    proc.name = name


def register(name: str, pid: Pid) -> None:
    """Give the local process ``pid`` the name ``name``."""
    register_in(current().table, name, pid)


def unregister(name: str) -> None:
    """Free ``name``; the process keeps running."""
    table = current().table
    pid = table.names.pop(name, None)
    if pid is None:
        raise LookupError(f"{name!r} is not registered")
    proc = table.resolve(pid)
    if proc is not None:
        proc.name = None


def whereis(name: str) -> Pid | None:
    """The pid registered as ``name``, or None."""
    return current().table.names.get(name)


def registered() -> list[str]:
    """The names registered on this node."""
    return list(current().table.names)
