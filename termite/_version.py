"""termite's version: one source of truth, ``version`` in pyproject.toml.

An installed termite (pip, or pip install -e) reads it from the package's
metadata, which the install wrote from pyproject.toml; a source tree that was
never installed (a checkout on PYTHONPATH) reads pyproject.toml itself.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

__all__ = ["__version__"]

UNKNOWN = "0+unknown"  # neither installed nor in a source tree: a version that sorts below every release


def _from_source_tree() -> str:
    import tomllib

    try:
        with open(Path(__file__).resolve().parent.parent / "pyproject.toml", "rb") as file:
            project = tomllib.load(file).get("project", {})
    except (OSError, ValueError):
        return UNKNOWN
    return str(project.get("version", UNKNOWN)) if project.get("name") == "termite" else UNKNOWN


try:
    __version__ = metadata.version("termite")
except metadata.PackageNotFoundError:
    __version__ = _from_source_tree()
