"""What the launcher's tests share: a tmux pane read as a person reads it, and whether a process lives."""

import os
import subprocess
import time
from pathlib import Path


def pane(session: str) -> str:
    return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout


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
