"""The job of ``termite-launch --run SCRIPT ARGS``: checked, run, its output shown and kept.

``check_script`` looks at SCRIPT before anything starts, so that a typo costs
no cluster start.  :class:`Job` runs ``python SCRIPT ARGS`` with the cluster's
state file in its environment (``termite.Executor()`` finds the cluster so)
and reads its stdout and stderr as they come: each is shown to the user
(``show(stream, data)``) and saved, byte for byte, in the cluster's log folder
beside the node logs, as ``job.out`` and ``job.err`` (written anew for each
job).  The job runs unbuffered, so that what it prints is seen when printed.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from pathlib import Path

__all__ = ["Job", "ScriptError", "check_script"]

STREAMS = ("out", "err")


class ScriptError(Exception):
    """The script given to --run cannot be run: what is wrong, and the fix."""


def check_script(argv: list[str], cwd: str | os.PathLike | None = None) -> None:
    """ScriptError if ``python ARGV`` (``--run``'s words) names a script that cannot be read.

    ``-m module`` and ``-c code`` are Python's business; a folder must hold a
    ``__main__.py``, as Python needs.
    """
    script = argv[0]
    if script.startswith("-"):
        return
    path = Path(cwd or ".") / Path(script).expanduser()
    fix = "give the path of a Python script, e.g. termite-launch cluster.yaml --run job.py"
    if not path.exists():
        raise ScriptError(f"--run {script}: no such file (looked for {path.absolute()}); {fix}")
    if path.is_dir():
        if not (path / "__main__.py").is_file():
            raise ScriptError(f"--run {script}: is a folder without a __main__.py; {fix}")
        path = path / "__main__.py"
    if not os.access(path, os.R_OK):
        raise ScriptError(f"--run {script}: cannot be read (permission denied); make it readable: chmod u+r {script}")


class Job:
    """``python ARGV`` running, its output shown by ``show(stream, data)`` ("out" or "err", bytes) and saved."""

    def __init__(self, argv: list[str], env: dict[str, str], log_dir: Path, show):
        self.argv = list(argv)
        self.paths = {stream: log_dir / f"job.{stream}" for stream in STREAMS}
        log_dir.mkdir(parents=True, exist_ok=True)
        self._saved = {stream: open(self.paths[stream], "wb") for stream in STREAMS}  # noqa: SIM115 - closed by wait()
        self.proc = subprocess.Popen(
            [sys.executable, *self.argv],
            env=dict(env, PYTHONUNBUFFERED="1"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self._readers = [
            threading.Thread(target=self._copy, args=(stream, pipe, show), daemon=True, name=f"termite-job-{stream}")
            for stream, pipe in zip(STREAMS, (self.proc.stdout, self.proc.stderr))
        ]
        for reader in self._readers:
            reader.start()

    def _copy(self, stream: str, pipe, show) -> None:
        saved = self._saved[stream]
        fd = pipe.fileno()
        while True:
            data = os.read(fd, 65536)  # what came, not waiting for a full line: a progress bar shows as it moves
            if not data:
                break
            saved.write(data)
            saved.flush()
            show(stream, data)

    def poll(self) -> int | None:
        return self.proc.poll()

    def finished(self) -> bool:
        """The job has ended and all it wrote has been shown and saved."""
        return self.proc.poll() is not None and not any(reader.is_alive() for reader in self._readers)

    def wait(self, timeout: float = 10.0) -> int:
        """Wait for the job to end, and its output to be read (``timeout`` for what its children keep open)."""
        self.proc.wait()
        for reader in self._readers:
            reader.join(timeout)
        self._close()
        return self.proc.returncode

    def stop(self, timeout: float = 10.0) -> None:
        """End the job if it still runs: SIGTERM, then SIGKILL after ``timeout``."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.wait(timeout=2.0)

    def _close(self) -> None:
        for reader in self._readers:
            if reader.is_alive():  # a child of the job holds its pipes: what it writes from now on is not kept
                return
        for file in (*self._saved.values(), self.proc.stdout, self.proc.stderr):
            with contextlib.suppress(OSError):
                file.close()

    def where(self) -> str:
        """Where its output was saved, for the launcher's last lines."""
        return f"{self.paths['out']} and {self.paths['err']}"
