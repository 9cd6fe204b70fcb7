"""A cluster's files: the state file ``termite-launch`` writes, and the key file.

While a cluster runs, the launcher keeps ``<state dir>/<name>.json``: the
cluster's name, its key file and its nodes (``{"address": "host:port", ...}``).
By default the state dir is ``.termite`` next to ``cluster.yaml`` and the name
is the file's stem, so a script finds the cluster from the yaml file it was
launched with; ``termite-launch --run`` also tells it by the environment
variable ``TERMITE_CLUSTER``.  The library reads the file; it never imports
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

from termite._net import keys as _keys

__all__ = ["ENVIRONMENT", "cluster_nodes", "generate_keys", "load_keys", "session_keys", "state_path"]

ENVIRONMENT = "TERMITE_CLUSTER"


def state_path(path: str | os.PathLike) -> Path:
    """The state file for ``path``: a cluster.yaml (its default state file) or the state file itself."""
    path = Path(path)
    if path.suffix in (".yaml", ".yml"):
        return path.parent / ".termite" / f"{path.stem}.json"
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
