"""Helpers for tests: process bodies importable on every node, and node processes.

Functions here travel by reference (every node can import termite), so tests
of remote spawn need no code shipped by value.
"""

from __future__ import annotations

import inspect
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque

import termite
from termite import ANY, Pid, Tag, receive, send

__all__ = ["echo", "crash_after", "burn_cpu", "collect", "relay", "watch", "hold_global", "NodeProcess"]


async def echo():
    """Answer every ``(sender, tag, msg)`` with ``(tag, msg)``."""
    while True:
        sender, tag, msg = await receive((Pid, Tag, ANY))
        send(sender, (tag, msg))


async def crash_after(message: str):
    """Wait for any message, then raise ``RuntimeError(message)``."""
    await receive()
    raise RuntimeError(message)


def burn_cpu(seconds: float) -> int:
    """Spin in pure Python for ``seconds`` (holding the GIL but for its switch interval)."""
    end = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < end:
        n += 1
    return n


async def collect(reply_to: Pid, count: int):
    """Receive ``count`` messages, then send the list of them to ``reply_to``."""
    got = [await receive() for _ in range(count)]
    send(reply_to, ("collected", got))


async def relay(reply_to: Pid, fn, *args):
    """Run ``fn(*args)`` here (awaiting it if it is async); send ``("relayed", value)`` to ``reply_to``."""
    value = fn(*args)
    if inspect.isawaitable(value):
        value = await value
    send(reply_to, ("relayed", value))


async def watch(pid: Pid, reply_to: Pid, how: str = "monitor"):
    """Link to (trapping exits) or monitor ``pid``; forward the ``Exit`` or ``Down`` to ``reply_to``."""
    if how == "link":
        termite.trap_exit(True)
        termite.link(pid)
        send(reply_to, ("watching", pid))
        send(reply_to, await receive(termite.Exit))
    else:
        termite.monitor(pid)
        send(reply_to, ("watching", pid))
        send(reply_to, await receive(termite.Down))


async def hold_global(name: str, reply_to: Pid):
    """Register this process globally as ``name``, report how it went, then wait for ``"stop"``."""
    try:
        await termite.register_global(name)
    except termite.NameTaken:
        send(reply_to, ("taken", name, termite.self()))
        return
    send(reply_to, ("registered", name, termite.self()))
    await receive("stop")


def _read_into(stream, lines: deque) -> None:
    with stream:
        lines.extend(stream)


class NodeProcess:
    """A node in a separate OS process (``python -m termite.node``), stopped by its pid."""

    def __init__(self, *args: str, timeout: float = 20.0, path: list[str] = ()):
        """``path``: folders put first on the node's ``sys.path`` (code it must import).
        Without ``--keys`` or ``--insecure`` the node holds this process's session key
        (termite.session_keys(): what an Executor given no keys uses)."""
        if "--keys" not in args and "--insecure" not in args:
            args = ("--keys", termite.session_keys(), *args)
        env = dict(os.environ)
        if path:
            env["PYTHONPATH"] = os.pathsep.join([*path, *filter(None, [env.get("PYTHONPATH")])])
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "termite.node", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        line = self.proc.stdout.readline()  # the node announces itself once listening
        if not line.startswith("termite node "):
            self.stop()
            raise RuntimeError(f"node did not start: {line!r} {self.proc.stderr.read()[-2000:]}")
        # Read its log as it comes: a full pipe would stop the node at its next
        # log line.  The last lines are kept for the one who asks (a failed test).
        self.log_tail: deque[str] = deque(maxlen=200)
        self._log_reader = threading.Thread(target=_read_into, args=(self.proc.stderr, self.log_tail), daemon=True)
        self._log_reader.start()
        _, _, address, _, incarnation = line.split()
        host, port = address.rsplit(":", 1)
        self.ref = termite.NodeRef(host, int(port), int(incarnation, 16))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def logged(self) -> str:
        """The last 200 lines the node wrote to stderr (its log); all of them once it has ended."""
        if self.proc.poll() is not None:
            self._log_reader.join(10)
        return "".join(self.log_tail)

    def kill(self) -> None:
        """SIGKILL: the node gets no chance to say goodbye."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.proc.stdout:
            self.proc.stdout.close()
