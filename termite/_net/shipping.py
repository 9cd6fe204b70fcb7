"""Modules sent by value: the caller's own code, for nodes that do not have it.

A job script's neighbour module (``helper.py``) or the user's package is
imported by the script but not installed on the nodes, so a function of it,
which pickle sends by reference, cannot be unpickled there.
``Executor(..., ship=["helper"])`` (or ``termite.ship("helper")`` in a
process) sends those modules' source to every node before any work, as
Dask's ``upload_file`` and Ray's ``runtime_env={"py_modules": ...}`` do.

:func:`collect` reads the source of the named modules (a package with all
its submodules) here.  The result, a :class:`ShippedModules`, travels as a
pickled object whose unpickling installs the modules on the receiving node:
an import hook at the front of ``sys.meta_path`` serves them, so the shipped
code wins over another version installed there.  Installing as the message
is read, not when a process takes it, matters: the node reads every message
of a frame (and unpickles the functions in them) before any process runs, so
a thunk sent right after its code must find it.  Modules already imported
with other code are forgotten, so the next import takes the shipped code.

Only Python source travels: a compiled extension must be installed on the
nodes (:func:`collect` says so).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import linecache
import pkgutil
import sys
import threading

__all__ = ["ShippedModules", "collect"]


class ShippedModules:
    """The source of modules, by name: ``{name: (source, is_package, filename)}``."""

    __slots__ = ("modules",)

    def __init__(self, modules: dict):
        self.modules = modules

    def __reduce__(self):
        return (_install, (self.modules,))  # unpickling installs them on the receiving node

    def __repr__(self):
        return f"ShippedModules({sorted(self.modules)})"


def collect(names) -> ShippedModules:
    """The source of the modules ``names`` (a package with its submodules), read here."""
    if isinstance(names, str):
        names = [names]
    modules = {}
    for name in names:
        module = name if not isinstance(name, str) else importlib.import_module(name)
        _add(modules, module.__name__)
        for info in pkgutil.walk_packages(getattr(module, "__path__", None) or (), module.__name__ + "."):
            _add(modules, info.name)
    return ShippedModules(modules)


def _add(modules: dict, name: str) -> None:
    spec = importlib.util.find_spec(name)
    source = None
    if spec is not None and spec.loader is not None and hasattr(spec.loader, "get_source"):
        try:
            source = spec.loader.get_source(name)
        except ImportError:
            source = None
    if source is None:
        raise ValueError(
            f"cannot ship module {name!r}: its code is not Python source here (a compiled extension?); "
            f"install it on every node instead"
        )
    modules[name] = (source, spec.submodule_search_locations is not None, spec.origin or f"<shipped {name}>")


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves shipped modules to ``import`` on this node."""

    def __init__(self):
        self.modules: dict[str, tuple] = {}

    def find_spec(self, fullname, path=None, target=None):
        entry = self.modules.get(fullname)
        if entry is None:
            return None
        source, is_package, filename = entry
        spec = importlib.util.spec_from_loader(fullname, self, origin=filename, is_package=is_package)
        spec.has_location = False
        return spec

    def create_module(self, spec):
        return None

    def exec_module(self, module) -> None:
        source, is_package, filename = self.modules[module.__name__]
        module.__file__ = filename
        if is_package:
            module.__path__ = []  # its submodules come from here too, by their full names
        module.__shipped_source__ = source
        # Tracebacks show the lines: the file itself may not exist on this host.
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        exec(compile(source, filename, "exec"), module.__dict__)


_finder: _Finder | None = None
_lock = threading.Lock()


def _install(modules: dict) -> ShippedModules:
    global _finder
    with _lock:
        if _finder is None:
            _finder = _Finder()
            sys.meta_path.insert(0, _finder)
        for name, entry in modules.items():
            loaded = sys.modules.get(name)
            if loaded is not None and getattr(loaded, "__shipped_source__", None) != entry[0]:
                del sys.modules[name]  # other code: the next import takes the shipped one
            _finder.modules[name] = entry
        importlib.invalidate_caches()
    return ShippedModules(modules)
