"""A cluster's files: the state file ``termite-launch`` writes, and the key file.

While a cluster runs, the launcher keeps ``<state dir>/<name>.json``: the
cluster's name, its key file and its nodes (``{"address": "host:port", ...}``).
The state dir is the yaml's ``state_dir:`` (default ``.termite`` next to the
file) and the name its ``name:`` (default the file's stem): ``cluster_state``
says where, for the launcher and for scripts alike, so a script finds the
cluster from the yaml file it was launched with; ``termite-launch --run`` also
tells it by the environment variable ``TERMITE_CLUSTER``.  The library reads the file; it never imports
the launcher.

The key file is what every node of the cluster holds (termite/_net/keys.py);
``generate_keys`` and ``load_keys`` (public as termite.generate_keys and
termite.load_keys) make one and check one; ``session_keys`` is one made for
this process (what an Executor given no keys uses).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import NamedTuple

from termite._net import keys as _keys

__all__ = [
    "ENVIRONMENT", "ClusterState", "cluster_state", "cluster_nodes", "generate_keys", "load_keys", "session_keys",
    "state_path",
]

ENVIRONMENT = "TERMITE_CLUSTER"


class ClusterState(NamedTuple):
    """Where a cluster described by a yaml file keeps its state while it runs."""

    name: str
    state_dir: Path
    state_file: Path


def cluster_state(path: str | os.PathLike, data: dict | None = None) -> ClusterState:
    """Where the cluster of the yaml file ``path`` keeps its state: its ``name:`` (default the
    file's stem) and ``state_dir:`` (default ``.termite`` next to it; relative to the file's
    folder).  ``data``: the file's contents, if already read (the launcher checks them first)."""
    path = Path(path)
    if data is None:
        import yaml  # only for a yaml file: reading a state file needs none

        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise FileNotFoundError(f"no cluster file {path}") from None
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"cannot read the cluster file {path}: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path} is not a cluster file: it holds a {type(data).__name__}, not a mapping")
    name = data.get("name") or path.stem
    state_dir = Path(str(data["state_dir"])).expanduser() if data.get("state_dir") else Path(".termite")
    if not state_dir.is_absolute():
        state_dir = path.parent / state_dir
    return ClusterState(str(name), state_dir, state_dir / f"{name}.json")


def state_path(path: str | os.PathLike) -> Path:
    """The state file for ``path``: a cluster.yaml (its state file) or the state file itself."""
    path = Path(path)
    if path.suffix in (".yaml", ".yml"):
        return cluster_state(path).state_file
    return path


def cluster_nodes(path: str | os.PathLike | None = None) -> tuple[list[str], str | None]:
    """The addresses of a running cluster's nodes and its key file.

    ``path``: the cluster.yaml or its state file; default ``$TERMITE_CLUSTER``.
    """
    if path is None:
        path = os.environ.get(ENVIRONMENT)
        if not path:
            raise ValueError(f"no cluster given: pass cluster='cluster.yaml', or run under termite-launch (it sets {ENVIRONMENT})")
    state = state_path(path)
    try:
        data = json.loads(state.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no running cluster for {path}: {state} does not exist (start it with: termite-launch {path} --detach)"
        ) from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read the cluster state file {state}: {exc}") from None
    try:
        return [node["address"] for node in data["nodes"]], data.get("keys")
    except (KeyError, TypeError):
        raise ValueError(f"{state} is not a cluster state file written by termite-launch") from None


def generate_keys(path: str | os.PathLike) -> _keys.ClusterKeys:
    """Write a new cluster key file at ``path`` (mode 600; KeyFileError if it exists); its keys.

    Keep the file secret: it admits its holder to the cluster.  The same as
    ``python -m termite keygen PATH``.
    """
    return _keys.generate(path)


def load_keys(path: str | os.PathLike) -> _keys.ClusterKeys:
    """Read the cluster key file at ``path``; KeyFileError saying how to make one if it is not one."""
    return _keys.load(path)


def session_keys() -> str:
    """The path of a key file made for this process (the same on every call).

    It sits in a private temporary folder (700; the file 600) removed when the
    process exits.  An Executor given no keys uses it; give it to the nodes
    the program starts (``python -m termite.node --keys PATH``) and they admit
    each other and no one else.  For nodes on other hosts, use a cluster key
    file (``generate_keys``).
    """
    return _keys.session_keys()
