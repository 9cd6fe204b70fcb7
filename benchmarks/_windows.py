"""Measuring windows: two setups timed in turn, in processes kept alive, compared pair by pair.

A *driver* is a child process that sets up its side once (connects, warms up)
and then times one *window* of ``n`` exchanges each time the parent asks:

- in the driver: :func:`ready` once set up, then :func:`next_window` -> ``n``
  (None: stop) and :func:`report` (the rate it timed), in a loop;
- in the parent: :class:`Driver` starts it and asks for windows; each window
  also gives the CPU seconds that the driver and its server (the process it
  talks to) spent meanwhile (psutil, every thread counted).

:func:`spread` summarises ratios taken pair by pair: two setups measured in
adjacent windows share the machine's slow and fast moments, so the median of
their ratios is steadier than the ratio of their medians.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import statistics
import sys
import tempfile
import time

from benchmarks._result import ROOT, median

__all__ = ["Driver", "Window", "ready", "next_window", "report", "spread"]

_READY = "@@READY@@"
_WINDOW = "@@WINDOW@@"

# ``module.func(*args)`` that exits by itself after argv[1] seconds, even if
# the parent that should stop it died first.
_CHILD = """\
import importlib, json, os, sys, threading
timer = threading.Timer(float(sys.argv[1]), os._exit, (3,))
timer.daemon = True
timer.start()
module, func, args = sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
getattr(importlib.import_module(module), func)(*args)
"""


# -- in the driver --------------------------------------------------------------


def ready() -> None:
    """Say that the set-up and warm-up are done."""
    print(_READY, flush=True)


def next_window() -> int | None:
    """Wait for the parent's next window: its size, or None when it is time to stop."""
    line = sys.stdin.readline()
    return int(line) if line.strip() else None


def report(rate: float) -> None:
    """The window's rate (exchanges per second, as the driver timed them)."""
    print(f"{_WINDOW} {json.dumps(rate)}", flush=True)


# -- in the parent --------------------------------------------------------------


class Window:
    """One window: the rate the driver timed, and the CPU seconds of both processes meanwhile."""

    __slots__ = ("rate", "cpu_driver", "cpu_server")

    def __init__(self, rate: float, cpu_driver: float, cpu_server: float):
        self.rate, self.cpu_driver, self.cpu_server = rate, cpu_driver, cpu_server


class Driver:
    """``module.func(*args)`` in a child that serves windows; ``server_pid`` is the process it talks to."""

    def __init__(self, module: str, func: str, args: list, server_pid: int, *, lifetime: float, wait: float,
                 cpus=None):
        import psutil

        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        self._errors = tempfile.TemporaryFile("w+")  # a file, not a pipe: a chatty child never blocks
        self.what = f"{module}.{func}{tuple(args)}"
        self.proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(lifetime), module, func, json.dumps(args)],
                                     cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._errors, preexec_fn=pinned(cpus))
        self._buffer = b""
        try:
            self._cpu = (psutil.Process(self.proc.pid), psutil.Process(server_pid))
            self._line(_READY, wait)
        except BaseException:
            self.close()
            raise

    def window(self, n: int, wait: float) -> Window:
        """Time ``n`` exchanges (``wait``: seconds they may take, at most)."""
        before = [p.cpu_times() for p in self._cpu]
        self.proc.stdin.write(f"{n}\n".encode())
        self.proc.stdin.flush()
        rate = json.loads(self._line(_WINDOW, wait))
        after = [p.cpu_times() for p in self._cpu]
        driver, server = (a.user + a.system - b.user - b.system for a, b in zip(after, before))
        return Window(rate, driver, server)

    def _line(self, mark: str, wait: float) -> str:
        """The rest of the child's next line that starts with ``mark``; other lines are skipped."""
        deadline = time.monotonic() + wait
        fd = self.proc.stdout.fileno()
        while True:
            while b"\n" in self._buffer:
                line, self._buffer = self._buffer.split(b"\n", 1)
                text = line.decode(errors="replace")
                if text.startswith(mark):
                    return text[len(mark):].strip()
            left = deadline - time.monotonic()
            readable = left > 0 and select.select([fd], [], [], left)[0]
            chunk = os.read(fd, 65536) if readable else b""
            if not chunk:
                self._errors.seek(0)
                why = "exited" if readable else f"said nothing for {wait:.0f} s"
                raise RuntimeError(f"{self.what} {why} (waiting for {mark}):\n{self._errors.read()[-2000:]}")
            self._buffer += chunk

    def close(self) -> None:
        """Ask the child to stop; kill it if it does not."""
        try:
            self.proc.stdin.close()  # next_window() -> None
        except OSError:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc.stdout.close()
        self._errors.close()

    def __enter__(self) -> "Driver":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def pinned(cpus):
    """A ``preexec_fn`` that keeps a child (and every thread it starts) on ``cpus``; None if not pinned."""
    if cpus is None:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def spread(ratios: list[float]) -> dict:
    """The median of ratios taken pair by pair, and how they spread."""
    quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    return {"median": median(ratios), "min": min(ratios), "quartiles": [quartiles[0], quartiles[2]],
            "max": max(ratios), "ratios": ratios}
