"""Whoever waits for a process's outcome gets it, on whichever node the process ends.

``node.run(fn)`` and ``termite.run(main)`` wait for a process through its
node's exit waiters (``table.when_exits``): callbacks of that node.  When the
process leaves the node for good (migration's commit), those waiters are
handed to a small process of this node, the *awaiter*, and its pid travels
with the process (``Order.awaiting``, carried in each COMMIT).  Wherever the
process ends, its node sends each awaiter ``(OUTCOME, pid, value, reason)``
(:func:`report`); the awaiter calls the waiters as the process's own node
would have.

The awaiter also monitors the process, so the loss of the node it runs on
ends the wait (``"noconnection"``).  A node sends a process's ``Down`` before
its outcome, on the same session: after a ``Down`` for any other reason the
outcome is waited for a little (:data:`OUTCOME_GRACE`).  A value that cannot
travel back is reported as such, with the type that could not.
"""

from __future__ import annotations

from termite._core.errors import Crash, Exited
from termite._core.ids import Pid
from termite._core.links import Down, demonitor, monitor
from termite._core.mailbox import deliver, receive
from termite._core.process import ProcessTable
from termite._core.spawn import spawn_in
from termite._net.codec import UnserializableMessage

__all__ = ["OUTCOME", "OUTCOME_GRACE", "own", "hand_over", "report"]

OUTCOME = "termite.outcome"
#: Seconds an awaiter waits for the outcome that follows a process's ``Down``.
OUTCOME_GRACE = 5.0


def own(callback):
    """Mark an exit waiter as migration's own: it stays behind when the process leaves."""
    callback.termite_own = True
    return callback


def hand_over(table: ProcessTable, pid: Pid) -> list[Pid]:
    """``pid`` leaves this node: its waiters (not migration's own) go to an awaiter; its pid, or none."""
    waiters = table.exit_waiters.pop(pid, None)
    theirs = [callback for callback in waiters or () if not getattr(callback, "termite_own", False)]
    return [spawn_in(table, _await, (pid, theirs))] if theirs else []


def report(table: ProcessTable, pid: Pid, awaiting, value, reason) -> None:
    """``pid`` ended here: tell its awaiters (on this node or others) its value and reason."""
    for awaiter in awaiting:
        try:
            _tell(table, awaiter, (OUTCOME, pid, value, reason))
        except UnserializableMessage as exc:
            _tell(table, awaiter, (OUTCOME, pid, None, f"its value could not travel back: {exc}"))


def _tell(table: ProcessTable, pid: Pid, msg) -> None:
    proc = table.resolve(pid)
    if proc is not None:
        deliver(proc, msg)
    elif not table.is_local(pid) and table.remote is not None:
        table.remote.send(pid, msg)


async def _await(pid: Pid, waiters: list) -> None:
    ref = monitor(pid)

    def is_outcome(m):
        return m.__class__ is tuple and len(m) == 4 and m[0] == OUTCOME and m[1] == pid

    msg = await receive(lambda m: is_outcome(m) or (m.__class__ is Down and m.ref == ref))
    if msg.__class__ is Down and msg.reason != "noconnection":
        msg = await receive(is_outcome, timeout=OUTCOME_GRACE, default=msg)
    if msg.__class__ is Down:
        value, reason = None, msg.reason if msg.reason != "normal" else "its outcome was lost on the way back"
    else:
        _, _, value, reason = msg
        demonitor(ref)
    failed = None if reason == "normal" else (reason.exception if isinstance(reason, Crash) else None) or Exited(pid, reason)
    for callback in waiters:
        callback(value, reason, failed)
