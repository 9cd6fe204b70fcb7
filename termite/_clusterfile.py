"""The file ``termite-launch`` writes for a running cluster, read by scripts that use it.

While a cluster runs, the launcher keeps ``<state dir>/<name>.json``: the
cluster's name, its key file and its nodes (``{"address": "host:port", ...}``).
By default the state dir is ``.termite`` next to ``cluster.yaml`` and the name
is the file's stem, so a script finds the cluster from the yaml file it was
launched with; ``termite-launch --run`` also tells it by the environment
variable ``TERMITE_CLUSTER``.  The library reads the file; it never imports
the launcher.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["ENVIRONMENT", "cluster_nodes", "state_path"]

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
