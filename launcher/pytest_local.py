"""The workers of ``pytest --termite`` on this host's nodes: children of the controller.

A worker on a remote node runs under a relay there (termite_launcher/pytest_relay.py).
A worker on a local node needs no relay: the controller starts it itself and
reads its pipes, which saves the relay's hops and lets it start while its node
does (the run does not wait for the cluster to run its first tests).  It is
tied to its node all the same: once the node is up, the worker is told its OS
pid and ends with it (termite_launcher/pytest_worker.py), as a relay's child
would.

The first workers are *forked* from the controller before it starts any
thread (pytest and the plugins are imported already: a fork starts in a tenth
of the time a new interpreter takes); a worker started later (a restart, or
once threads run) is ``python -m termite_launcher.pytest_worker``.

Either way it says what a relay says, on the controller's event queue:
``("tw", key, [line, ...])`` for its protocol lines, ``("tw-output", key,
line)`` for each line of its stderr under ``-s``, and ``("tw-exit", key,
status, stderr_tail)`` once its pipes are closed and it has ended (its status
as ``subprocess`` gives it: negative for a signal).
"""

from __future__ import annotations

import collections
import contextlib
import io
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import traceback

__all__ = ["LocalWorker", "can_fork"]

#: Lines of a worker's stderr kept, to show when it crashes (as a relay keeps).
STDERR_TAIL = 40
#: How much of a worker's stdout is read at once.
READ_SIZE = 256 * 1024


def can_fork(python: str) -> bool:
    """Whether a worker running ``python`` may be forked from this process now: one thread, the same Python."""
    if not hasattr(os, "fork") or threading.active_count() != 1:
        return False
    try:
        return os.path.samefile(python, sys.executable)
    except OSError:
        return False


class LocalWorker:
    """A worker's pytest process on this host, and the threads that read its pipes."""

    def __init__(self, key: int, events: queue.SimpleQueue, show_output: bool):
        self.key = key
        self.events = events
        self.show_output = show_output
        self.pid = None
        self.returncode = None
        self._popen = None
        self._stdin = None
        self._out = self._err = None  # the read ends of its stdout and stderr
        self._lock = threading.Lock()  # the reaper sets returncode; kill reads it (a reaped pid may be reused)

    # -- starting ------------------------------------------------------------------

    def fork(self, info: dict, args: list[str], env: dict) -> None:
        """Start it as a fork of this process (see :func:`can_fork`): a child that runs pytest.main, never returning."""
        commands_r, commands_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the worker: never returns
            status = 70
            try:
                keep = {commands_r, out_w, err_w}
                _close_fds_but(keep)
                os.environ.update(env)
                from termite_launcher import pytest_worker

                status = pytest_worker.forked(info, args, commands_r, out_w, err_w)
            except BaseException:  # noqa: BLE001 - said on stderr, where its tail is read
                with contextlib.suppress(Exception):
                    os.write(2, traceback.format_exc().encode())
            finally:
                with contextlib.suppress(Exception):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(status)
        for fd in (commands_r, out_w, err_w):
            os.close(fd)
        self.pid = pid
        self._stdin = os.fdopen(commands_w, "w", encoding="utf-8")
        self._out, self._err = out_r, err_r

    def exec(self, python: str, info: dict, args: list[str], cwd: str, env: dict) -> None:
        """Start it as ``python -m termite_launcher.pytest_worker`` (a new interpreter)."""
        full_env = dict(os.environ, TERMITE_WORKER_PARENT=str(os.getpid()))  # it dies with this process
        full_env.update(env)
        self._popen = subprocess.Popen(
            [python, "-m", "termite_launcher.pytest_worker", json.dumps(info), *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd, env=full_env,
        )  # fmt: skip
        self.pid = self._popen.pid
        self._stdin = io.TextIOWrapper(self._popen.stdin, encoding="utf-8")
        self._out, self._err = self._popen.stdout.fileno(), self._popen.stderr.fileno()

    def read(self) -> None:
        """Start the threads that read its pipes (after every fork: a thread must not be forked along)."""
        tail: collections.deque = collections.deque(maxlen=STDERR_TAIL)
        err = threading.Thread(target=self._read_err, args=(tail,), name=f"termite-tw{self.key}-err", daemon=True)
        err.start()
        threading.Thread(target=self._read_out, args=(err, tail), name=f"termite-tw{self.key}-out", daemon=True).start()

    # -- talking to it -------------------------------------------------------------

    def command(self, line: str) -> None:
        """A line to its stdin (lost if it has ended: its end comes as ``tw-exit``)."""
        try:
            self._stdin.write(line + "\n")
            self._stdin.flush()
        except (BrokenPipeError, ValueError, OSError):
            pass

    def kill(self) -> None:
        """End it now (SIGKILL), unless it has ended already."""
        with self._lock:
            if self.pid is not None and self.returncode is None:
                with contextlib.suppress(Exception):
                    os.kill(self.pid, signal.SIGKILL)

    # -- its pipes, on threads ---------------------------------------------------------

    def _read_out(self, err: threading.Thread, tail) -> None:
        rest = b""
        while chunk := _read(self._out):
            *lines, rest = (rest + chunk).split(b"\n")
            if lines:
                self.events.put(("tw", self.key, [line.decode(errors="replace") for line in lines]))
        if rest:
            self.events.put(("tw", self.key, [rest.decode(errors="replace")]))
        err.join()
        status = self._wait()
        with contextlib.suppress(Exception):
            self._stdin.close()
        self.events.put(("tw-exit", self.key, status, "".join(tail)))

    def _read_err(self, tail) -> None:
        with open(self._err, "rb", closefd=self._popen is None) as stream:
            for line in stream:
                text = line.decode(errors="replace")
                tail.append(text)
                if self.show_output:
                    self.events.put(("tw-output", self.key, text))

    def _wait(self) -> int:
        if self._popen is not None:
            status = self._popen.wait()
        else:
            _, raw = os.waitpid(self.pid, 0)
            status = os.waitstatus_to_exitcode(raw)
            os.close(self._out)
        with self._lock:
            self.returncode = status
        return status


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, READ_SIZE)
    except OSError:
        return b""


def _close_fds_but(keep: set) -> None:
    """In a forked worker: close every inherited descriptor but 0-2 and ``keep`` (as exec's close_fds would)."""
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        fds = list(range(3, 1024))
    for fd in fds:
        if fd > 2 and fd not in keep:
            with contextlib.suppress(Exception):
                os.close(fd)

