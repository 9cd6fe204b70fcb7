"""The part of ``pytest --termite`` that runs on a cluster node: a relay to a pytest worker.

The controller (termite_launcher.pytest_plugin) spawns ``relay`` on a node,
by reference, so every node must import ``termite_launcher`` (it does: it is
installed with termite).  The relay starts
``python -m termite_launcher.pytest_worker INFO ARGS...`` as a subprocess of
the node, in the controller's folder, and passes lines both ways: JSON
commands to the worker's stdin, JSON events from its stdout to the
controller (the protocol is in termite_launcher/pytest_worker.py).  A test
that kills its interpreter thus ends the worker, never the node.

This module imports no pytest: the node does not need it, only the worker.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import socket
import sys

import termite

__all__ = ["relay"]

#: Lines of a worker's stderr kept, to show when it crashes.
STDERR_TAIL = 40

#: The longest stderr line kept whole; and how much of stdout is read at once.
LINE_LIMIT = 64 * 1024 * 1024
READ_SIZE = 256 * 1024

_EOF = ("eof",)  # a pump reached the end of its pipe
_KILL = ("kill",)  # from the controller: end the worker now


async def relay(hub, key: int, args: list, cwd: str, env: dict, show_output: bool = False):
    """Run a pytest worker as a subprocess of this node; relay lines between it and ``hub``.

    To ``hub``: ``("tw-started", key, node_os_pid)`` first, ``("tw", key,
    [line, ...])`` with the lines the worker printed on its protocol stream
    (as many as were there to read), with ``show_output`` (``-s``)
    ``("tw-output", key, line)`` for each line of its stderr (where what
    tests print goes), and at
    the end ``("tw-exit", key, status, stderr_tail)``, or ``("tw-error", key,
    text)`` if it could not start.  To the relay: a str is a line for the
    worker's stdin; ``("kill",)`` ends the worker at once.
    """
    me = termite.self()
    termite.send(hub, ("tw-started", key, os.getpid()))
    full_env = dict(os.environ, TERMITE_WORKER_PARENT=str(os.getpid()))  # the worker dies with this node
    for name, value in env.items():
        if name == "PYTHONPATH":
            value = os.pathsep.join(filter(None, [value, full_env.get("PYTHONPATH")]))
        full_env[name] = value
    cwd = os.path.expanduser(cwd)
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "termite_launcher.pytest_worker", *args,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            cwd=cwd, env=full_env, limit=LINE_LIMIT,
        )  # fmt: skip
    except OSError as exc:
        termite.send(hub, ("tw-error", key, f"cannot start {sys.executable} in {cwd} on {socket.gethostname()}: {exc}"))
        return
    tail: collections.deque = collections.deque(maxlen=STDERR_TAIL)
    try:
        # Two readers, so that neither pipe fills while the relay waits on the other.
        termite.spawn(_pump_out, proc.stdout, hub, key, me, link=True)
        termite.spawn(_pump_err, proc.stderr, tail, me, (hub, key) if show_output else None, link=True)
        open_streams = 2
        while open_streams:
            msg = await termite.receive()
            if msg.__class__ is str:
                if not proc.stdin.is_closing():
                    proc.stdin.write(msg.encode() + b"\n")
                # Not once the pipe is closing (a worker that died): drain() would then await
                # asyncio.sleep(0), a bare yield no termite process may make.  Its end comes by stdout.
                if not proc.stdin.is_closing():
                    try:
                        await proc.stdin.drain()
                    except ConnectionError:
                        pass
            elif msg == _EOF:
                open_streams -= 1
            elif msg == _KILL:
                with contextlib.suppress(ProcessLookupError):  # it may have ended already
                    proc.kill()
        status = await proc.wait()
    finally:
        if proc.returncode is None:  # killed (the controller's node was lost): take the worker along
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
    termite.send(hub, ("tw-exit", key, status, "".join(tail)))


async def _pump_out(stream, hub, key, relay_pid):
    """The worker's events to the hub: every line read so far in one message (a test makes several)."""
    rest = b""
    while chunk := await stream.read(READ_SIZE):
        *lines, rest = (rest + chunk).split(b"\n")
        if lines:
            termite.send(hub, ("tw", key, [line.decode(errors="replace") for line in lines]))
    if rest:
        termite.send(hub, ("tw", key, [rest.decode(errors="replace")]))
    termite.send(relay_pid, _EOF)


async def _pump_err(stream, tail, relay_pid, show_to):
    while line := await stream.readline():
        text = line.decode(errors="replace")
        tail.append(text)
        if show_to is not None:
            hub, key = show_to
            termite.send(hub, ("tw-output", key, text))
    termite.send(relay_pid, _EOF)
