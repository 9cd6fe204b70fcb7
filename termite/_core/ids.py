"""Identities that can be sent anywhere: node references, pids and tags.

These sit below every other layer (the codec encodes them, the process layer
resolves them), so this module imports nothing from termite but native.py,
which says whether the C kernel runs: its ``Tag`` is then this one's, in C.
"""

from __future__ import annotations

import itertools
import os
import secrets

from termite._core.native import core as _core

__all__ = ["NodeRef", "Pid", "Tag", "make_tag"]


class NodeRef:
    """Where a node lives: host, port and incarnation.

    The incarnation is a random 63-bit number drawn when the node starts
    (:meth:`new`), so a node restarted on the same host and port never reuses
    an old pid.  ``incarnation=None`` means "whichever node answers there": an
    address to connect to, which cannot appear in a pid.  A node that has no
    transport (a purely local node) has host ``"local"`` and port 0.
    """

    __slots__ = ("host", "port", "incarnation", "_hash")

    def __init__(self, host: str, port: int, incarnation: int | None = None):
        self.host = host
        self.port = port
        self.incarnation = incarnation
        self._hash = hash((host, port, incarnation))

    @classmethod
    def new(cls, host: str, port: int) -> "NodeRef":
        """The reference of a node starting now: a fresh incarnation."""
        return cls(host, port, secrets.randbits(63))

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def __eq__(self, other):
        if other.__class__ is not NodeRef:
            return NotImplemented
        return (
            self.incarnation == other.incarnation
            and self.port == other.port
            and self.host == other.host
        )

    def __hash__(self):
        return self._hash

    def __reduce__(self):
        return (NodeRef, (self.host, self.port, self.incarnation))

    def __repr__(self):
        incarnation = "None" if self.incarnation is None else f"{self.incarnation:#x}"
        return f"NodeRef({self.host!r}, {self.port}, incarnation={incarnation})"

    def __str__(self):
        return f"{self.host}:{self.port}"


class Pid:
    """A universally unique process identifier: its node and a serial number.

    A pid may name a process that has ended or that lives on a node that cannot
    be reached; sending to it is then silently lost, as the paper's model says.
    ``_proc`` caches the live local process behind the pid that ``spawn``
    returned, so local sends need no table lookup; copies made by
    deserialization leave it empty and are resolved through the node's table.
    """

    __slots__ = ("node", "serial", "_proc")

    def __init__(self, node: NodeRef, serial: int, _proc=None):
        self.node = node
        self.serial = serial
        self._proc = _proc

    # pid.send(message), the same as termite.send(pid, message), is given by
    # termite._core.mailbox: sending needs processes, which sit above ids.

    def __eq__(self, other):
        if other.__class__ is not Pid:
            return NotImplemented
        return self.serial == other.serial and self.node == other.node

    def __hash__(self):
        return hash((self.serial, self.node._hash))

    def __reduce__(self):
        return (Pid, (self.node, self.serial))

    def __repr__(self):
        return f"<Pid {self.node}/{self.serial}>"


class Tag(tuple):
    """A universally unique reference, used to match a reply to its request.

    A tuple underneath, so equality and hashing run in C: ``call`` compares
    tags on every reply it waits for.
    """

    __slots__ = ()

    def __repr__(self):
        return f"<Tag {self[0]:x}/{self[1]}>"

    def __reduce__(self):
        return (Tag, (tuple(self),))


#: The Python Tag: the reference for the C kernel's (tests/test_ids.py compares them).
PythonTag = Tag
if _core is not None:
    # The same class in C, which keeps spare tags as CPython keeps tuples: every call makes one.
    Tag = _core.Tag  # noqa: F811


def _new_origin() -> None:
    """Draw a fresh tag origin; run again in a forked child so tags stay unique."""
    global _origin, _tag_serials
    _origin = secrets.randbits(63)
    _tag_serials = itertools.count(1)


_new_origin()
os.register_at_fork(after_in_child=_new_origin)


def make_tag() -> Tag:
    """Return a new universally unique tag (the paper's ``make-tag``)."""
    return Tag((_origin, next(_tag_serials)))
