"""Frames for a process whose remote spawn request has not arrived yet.

A remote ``spawn`` returns at once, without a round trip, as a local one
does: the caller picks the new pid's serial from a range that node never
uses for its own processes (high bit set, then 30 bits of the caller's
incarnation and a 32-bit counter), and the node starts the process under it.
If the node cannot be reached, the pid names a process that never existed;
a link or monitor to it fires with ``"noconnection"``.

The pid may travel faster than the request: handed to a third node, which
sends to it, its message can reach the new process's node first (on another
connection).  The node tells such a pid from one whose process has ended:
spawns from one node arrive in the order of their counters.  So a message,
link or monitor for a process not yet spawned waits for its spawn, up to
``SPAWN_WAIT`` seconds (then it is handled as for an ended process), as an
Erlang ``spawn`` on another node returns only once the process exists.
"""

from __future__ import annotations

import itertools
import logging
from typing import Callable

from termite._core.ids import NodeRef, Pid

__all__ = ["REMOTE_SERIAL_BASE", "SPAWN_WAIT", "MAX_HELD", "spawn_serials", "Unborn"]

log = logging.getLogger("termite.distribution")

REMOTE_SERIAL_BASE = 1 << 63
_COUNTER = (1 << 32) - 1  # a remote-spawned serial's low bits; the rest names its spawner
#: Seconds a frame for a process whose spawn request has not arrived waits for it.
SPAWN_WAIT = 5.0
#: The most frames held for processes not yet spawned; beyond it they are handled at once.
MAX_HELD = 100_000


def spawn_serials(spawner: NodeRef):
    """The serials ``spawner`` gives the processes it spawns on other nodes, in order."""
    prefix = (spawner.incarnation & ((1 << 30) - 1)) << 32
    return (REMOTE_SERIAL_BASE | prefix | n for n in itertools.count(1))


class Unborn:
    """Frames held for pids a peer chose for a spawn here that has not arrived."""

    def __init__(self, here: NodeRef, loop, apply: Callable, kick: Callable):
        self.here = here
        self.loop = loop
        self.apply = apply  # apply(peer, frame): handle a frame again, once its process exists (or never will)
        self.kick = kick
        self.wait = SPAWN_WAIT
        self._spawned: dict[int, int] = {}  # spawner (a serial's high bits) -> the highest counter spawned
        self._frames: dict[Pid, list] = {}  # pid -> [(peer, frame), ...]
        self._count = 0
        self._released: Pid | None = None  # being handled as ended: its spawn did not come in time

    def hold(self, peer: NodeRef, frame: tuple, pid: Pid) -> bool:
        """Keep ``frame`` for ``pid`` if a peer chose that pid for a spawn here that has not arrived."""
        serial = pid.serial
        if (
            serial < REMOTE_SERIAL_BASE
            or serial & _COUNTER <= self._spawned.get(serial >> 32, 0)  # spawned, and ended since
            or pid == self._released
            or pid.node != self.here
        ):
            return False
        held = self._frames.get(pid)
        if held is None:
            if self._count >= MAX_HELD:
                log.warning("%d frames wait for processes not spawned yet: one for %s is handled as for an ended process",
                            self._count, pid)
                return False
            held = self._frames[pid] = []
            self.loop.call_later(self.wait, self._late, pid)
        held.append((peer, frame))
        self._count += 1
        return True

    def born(self, pid: Pid) -> None:
        """``pid``'s spawn request came (and ran): what waited for it, and for earlier ones, is applied."""
        spawner, counter = pid.serial >> 32, pid.serial & _COUNTER
        if counter > self._spawned.get(spawner, 0):
            self._spawned[spawner] = counter
        if self._frames:
            # What waited for this process, and for any of the same spawner's earlier
            # counters: those will never come (their requests could not be encoded).
            for waiting in [p for p in self._frames if p.serial >> 32 == spawner and p.serial & _COUNTER <= counter]:
                self._replay(waiting)

    def _replay(self, pid: Pid) -> None:
        held = self._frames.pop(pid, ())
        self._count -= len(held)
        for peer, frame in held:
            try:
                self.apply(peer, frame)
            except Exception:  # noqa: BLE001 - checked when held; one failure must not lose the rest
                log.exception("a frame for %s, held until its spawn, could not be applied", pid)

    def _late(self, pid: Pid) -> None:
        """On the loop: ``pid``'s spawn did not come in time; handle what waited as for an ended process."""
        if pid not in self._frames:
            return
        log.warning("%d frames for %s waited %g s for its spawn request, which did not come; "
                    "handled as for an ended process", len(self._frames[pid]), pid, self.wait)
        self._released = pid
        try:
            self._replay(pid)
        finally:
            self._released = None
        self.kick()
