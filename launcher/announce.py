"""A node's announcement: the line it prints once it listens, and waiting for it.

``python -m termite.node`` prints ``termite node HOST:PORT incarnation HEX``
(termite/node.py).  The launcher's handles (local, ssh, Slurm, a pod's) read
it from the node's stdout to learn its NodeRef.

Waiting for input uses ``selectors``, not ``select.select``, which refuses a
descriptor numbered past 1,023: a launcher of hundreds of local nodes holds
more pipes than that, as does any process that opened many files first.
"""

from __future__ import annotations

import os
import selectors
import time
from collections.abc import Callable

from termite import NodeRef

__all__ = ["ANNOUNCE", "parse_announcement", "readable", "read_announcement"]

ANNOUNCE = "termite node "


def parse_announcement(line: str) -> NodeRef:
    """``termite node HOST:PORT incarnation HEX`` -> NodeRef."""
    _, _, address, _, incarnation = line.split()
    host, port = address.rsplit(":", 1)
    return NodeRef(host, int(port), int(incarnation, 16))


def readable(fd: int, timeout: float) -> bool:
    """Whether ``fd`` has input (or its end) within ``timeout`` seconds; any descriptor number."""
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        return bool(selector.select(max(0.0, timeout)))


def read_announcement(stream, timeout: float, other: Callable[[bytes], None]) -> NodeRef:
    """Read a starting node's stdout (a pipe) until its announcement; its NodeRef.

    What the node wrote before the announcement, and after it in the same
    read, goes to ``other`` (bytes), so that a reader of ``stream`` after this
    one gets exactly the rest.  ``stream`` must not have been read from
    before: this reads its descriptor, past its buffer.  Raises TimeoutError
    after ``timeout`` seconds, EOFError if the stream ends first.
    """
    fd = stream.fileno()
    deadline = time.monotonic() + timeout
    pending = b""
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no announcement within {timeout:g} s")
            if not selector.select(left):
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                if pending:
                    other(pending)
                raise EOFError("its stdout closed before it announced itself")
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                text = line.decode(errors="replace")
                if text.startswith(ANNOUNCE):
                    if pending:
                        other(pending)
                    return parse_announcement(text)
                other(line + b"\n")
