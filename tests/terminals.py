"""What the launcher's tests share: a small cluster.yaml, the cluster's state file watched until it shows a
change, a tmux pane read as a person reads it, and whether a process lives."""

import json
import os
import subprocess
import time
from pathlib import Path

import yaml

#: Heartbeats and meters quick enough for a test to see a node go within a second or two.
QUICK = {"heartbeat_timeout": 1.0, "heartbeat_interval": 0.1, "meter_interval": 0.2}
# tmux with a server of this test process's own: on the shared default server, a session started by
# one pytest worker could meet the server exiting as another worker's last session ended.
TMUX = ["tmux", "-L", f"termite-tests-{os.getpid()}"]


def cluster_file(folder: Path, hosts: list | None = None, name: str = "cluster.yaml", **settings) -> Path:
    """A cluster.yaml in ``folder``: ``hosts`` (by default 2 nodes on this host), QUICK, then ``settings``."""
    config = {"hosts": [{"address": "localhost", "cores": 2}] if hosts is None else hosts, **QUICK, **settings}
    path = folder / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def state_until(path: Path, test, timeout: float = 20.0) -> dict:
    """The cluster's state file once ``test(state)`` holds; the launcher rewrites it on each change."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            state = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):  # between writes (it is replaced, never half written)
            state = None
        if state is not None and test(state):
            return state
        assert time.monotonic() < deadline, f"the state file never showed what was expected:\n{state}"
        time.sleep(0.05)  # a file gives no event to wait on: look again


def pane(session: str) -> str:
    return subprocess.run([*TMUX, "capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout


def until(session: str, test, timeout: float = 30.0) -> str:
    """Watch the terminal as a person would, until ``test(screen)`` holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        screen = pane(session)
        if test(screen):
            return screen
        time.sleep(0.2)  # a terminal gives no event to wait on: look again
    raise AssertionError(f"the screen never showed what was expected:\n{pane(session)}")


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"
