"""Helpers for tests: process bodies importable on every node, and node processes.

Functions here travel by reference (every node can import termite), so tests
of remote spawn need no code shipped by value.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import termite
from termite import ANY, Pid, Tag, receive, send

__all__ = ["echo", "crash_after", "burn_cpu", "collect", "NodeProcess"]


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


class NodeProcess:
    """A node in a separate OS process (``python -m termite.node``), stopped by its pid."""

    def __init__(self, *args: str, timeout: float = 20.0):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "termite.node", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline()  # the node announces itself once listening
        if not line.startswith("termite node "):
            self.stop()
            raise RuntimeError(f"node did not start: {line!r} {self.proc.stderr.read()[-2000:]}")
        _, _, address, _, incarnation = line.split()
        host, port = address.rsplit(":", 1)
        self.ref = termite.NodeRef(host, int(port), int(incarnation, 16))

    @property
    def pid(self) -> int:
        return self.proc.pid

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
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()
