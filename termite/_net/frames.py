"""Control frames: the kinds of frame nodes exchange, and what a well-formed one holds.

A frame is a tuple ``(kind, field, ...)``, encoded by termite._net.codec.
Every kind, the distribution endpoint's own and those of higher layers
(migration), is declared in one table, :class:`FrameKinds`: its name, a check
per field and the handler that applies it.  A frame that fails its checks is
dropped before it touches any state: a pid where a link is kept must be a pid.

============  ==========================================  ====================
kind          fields                                      at the receiving node
============  ==========================================  ====================
SEND          to pid, message                             deliver
LINK          from pid, to pid                            to's exit reaches from
UNLINK        from pid, to pid                            forget that
EXIT          from pid, to pid, reason                    an exit signal
MONITOR       watcher pid, target pid, ref                Down(ref, ...) at end
DEMONITOR     target pid, ref                             forget that
SPAWN         pid, function, args, link-to pid, name      start the process
HELLO         reply-to pid, tag                           reply (tag, NodeRef)
NSEND         name, message                               deliver to the process registered so
WHEREIS       reply-to pid, tag, name                     reply (tag, its pid or None)
SEVERED       pid, monitor refs, linked pids              fire those still held
MONITOR_LOST  watcher pid, ref, target pid                Down(ref, target,
                                                          "noconnection") if
                                                          still held
============  ==========================================  ====================

Kinds 1-15 are the endpoint's; 16-31 migration's (termite._move.migration).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

from termite._core.ids import NodeRef, Pid, Tag
from termite._net.codec import MalformedMessage

__all__ = [
    "SEND", "LINK", "UNLINK", "EXIT", "MONITOR", "DEMONITOR", "SPAWN", "HELLO", "NSEND", "WHEREIS", "SEVERED",
    "MONITOR_LOST",
    "FrameKind", "FrameKinds", "is_pid", "is_tag", "is_node", "is_count", "anything",
]

SEND, LINK, UNLINK, EXIT, MONITOR, DEMONITOR, SPAWN, HELLO, NSEND, WHEREIS, SEVERED, MONITOR_LOST = range(1, 13)


# -- field checks: one small predicate per kind of field ------------------------


def is_pid(x) -> bool:
    return x.__class__ is Pid


def is_tag(x) -> bool:
    return x.__class__ is Tag


def is_node(x) -> bool:
    """A node's reference (not a bare address: it has an incarnation)."""
    return x.__class__ is NodeRef and x.incarnation is not None


def is_count(x) -> bool:
    return x.__class__ is int and x >= 0


def anything(x) -> bool:
    return True


def pid_or_none(x) -> bool:
    return x is None or x.__class__ is Pid


def is_name(x) -> bool:
    return x.__class__ is str and x != ""


def name_or_none(x) -> bool:
    return x is None or x.__class__ is str


def is_tuple(x) -> bool:
    return x.__class__ is tuple


def is_tags(x) -> bool:
    return x.__class__ is tuple and all(t.__class__ is Tag for t in x)


def is_pids(x) -> bool:
    return x.__class__ is tuple and all(p.__class__ is Pid for p in x)


BUILT_IN_FIELDS = {
    SEND: ("SEND", (is_pid, anything)),
    LINK: ("LINK", (is_pid, is_pid)),
    UNLINK: ("UNLINK", (is_pid, is_pid)),
    EXIT: ("EXIT", (is_pid, is_pid, anything)),
    MONITOR: ("MONITOR", (is_pid, is_pid, is_tag)),
    DEMONITOR: ("DEMONITOR", (is_pid, is_tag)),
    SPAWN: ("SPAWN", (is_pid, callable, is_tuple, pid_or_none, name_or_none)),
    HELLO: ("HELLO", (is_pid, is_tag)),
    NSEND: ("NSEND", (is_name, anything)),
    WHEREIS: ("WHEREIS", (is_pid, is_tag, is_name)),
    SEVERED: ("SEVERED", (is_pid, is_tags, is_pids)),
    MONITOR_LOST: ("MONITOR_LOST", (is_pid, is_tag, is_pid)),
}

#: kind -> one call that passes its common well-formed frames (the field checks then explain any other)
BUILT_IN_PASSES = {SEND: lambda frame: len(frame) == 3 and frame[1].__class__ is Pid}

#: kind -> the field naming the process a frame is for (one that migrated away has them passed on)
BUILT_IN_ADDRESSEES = {SEND: 1, LINK: 2, UNLINK: 2, EXIT: 2, MONITOR: 2, DEMONITOR: 1, MONITOR_LOST: 1}


class FrameKind(NamedTuple):
    name: str
    checks: tuple  # one predicate per field
    handler: Callable  # handler(peer, frame), on the kernel's thread
    passes: Callable | None  # passes(frame) -> bool: one call that passes the common well-formed frames
    addressee: int | None  # the field holding the pid the frame is for, if any


class FrameKinds:
    """The table of frame kinds a node understands: kind -> its checks and handler."""

    def __init__(self):
        self._kinds: dict[int, FrameKind] = {}

    def register(self, kind: int, name: str, checks: tuple, handler, *, passes=None, addressee: int | None = None) -> None:
        """Declare frame kind ``kind``: its fields' checks and ``handler(peer, frame)``."""
        if kind in self._kinds:
            raise ValueError(f"frame kind {kind} is taken by {self._kinds[kind].name}")
        self._kinds[kind] = FrameKind(name, checks, handler, passes, addressee)

    def addressee(self, kind: int) -> int | None:
        return self._kinds[kind].addressee

    def check(self, frame) -> FrameKind:
        """The frame's kind, if it has that kind's fields; else MalformedMessage."""
        if frame.__class__ is not tuple or not frame:
            raise MalformedMessage(f"a frame that is not a control tuple: {type(frame).__name__}")
        try:
            kind = self._kinds[frame[0]]
        except (KeyError, TypeError):
            raise MalformedMessage(f"unknown frame kind {frame[0]!r:.40}") from None
        if kind.passes is not None and kind.passes(frame):
            return kind
        if len(frame) != len(kind.checks) + 1:
            raise MalformedMessage(f"a {kind.name} frame with {len(frame) - 1} fields instead of {len(kind.checks)}")
        for i, (check, value) in enumerate(zip(kind.checks, frame[1:]), 1):
            if not check(value):
                raise MalformedMessage(f"a {kind.name} frame with a {type(value).__name__} as field {i}")
        return kind
