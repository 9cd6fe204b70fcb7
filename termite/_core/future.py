"""Futures (the Termite slides): a value computed by a process of its own.

    (define (future* thunk)
      (spawn
        (let ((value (thunk)))
          (let loop ()
            (recv ((from tag 'ref) (! from (list tag value))))
            (loop)))))
    (define (touch promise) (!? promise 'ref))

``future(fn, *args)`` spawns a process that computes ``fn(*args)`` at once
(awaiting it if it is async) and then answers every ``(from, tag, "ref")``
with ``(tag, value)``, so ``touch(f)`` is the paper's ``(!? promise 'ref)``.
Beyond the slides, a thunk that raises does not leave its future silent: the
process keeps the failure and ``touch`` raises the thunk's exception, chained
to the traceback it had where it was raised (as ``concurrent.futures`` does
for a process pool).  A future's process lives on to answer touches: it costs
one parked process.
"""

from __future__ import annotations

import inspect

from termite._core.call import call
from termite._core.errors import Crash, remote_exception
from termite._core.ids import Pid, Tag
from termite._core.mailbox import receive, send
from termite._core.process import current
from termite._core.spawn import spawn

__all__ = ["future", "touch", "reraise"]


def reraise(crash: Crash):
    """Raise the exception ``crash`` records, its traceback chained as a ``RemoteTraceback``."""
    raise remote_exception(crash)


class _Failed:
    """A future's answer when its thunk raised: touch raises ``crash``'s exception."""

    __slots__ = ("crash",)

    def __init__(self, crash: Crash):
        self.crash = crash

    def __reduce__(self):
        return (_Failed, (self.crash,))


async def _future(fn, args):
    try:
        value = fn(*args)
        if inspect.isawaitable(value):  # an async thunk, or a lambda returning a coroutine
            value = await value
    except Exception as exc:  # noqa: BLE001 - kept for whoever touches it
        value = _Failed(Crash.from_exception(exc, where=f"future {current().pid}"))
    while True:
        msg = await receive()
        # Answer (from, tag, "ref"); anything else is dropped, so junk cannot pile up.
        if (
            msg.__class__ is tuple
            and len(msg) == 3
            and msg[0].__class__ is Pid
            and msg[1].__class__ is Tag
            and msg[2] == "ref"
        ):
            send(msg[0], (msg[1], value))


def future(fn, *args, node=None) -> Pid:
    """Start computing ``fn(*args)`` in a new process now; return its pid, to ``touch``.

    ``fn`` may be a plain function or an ``async def`` one (or return an
    awaitable).  ``node`` computes it on another node (``fn`` must travel).
    A node runs its processes concurrently, not in parallel: futures overlap
    while they wait, CPU-bound ones run one after the other.
    """
    return spawn(_future, fn, args, node=node)


async def touch(f: Pid, timeout: float | None = None):
    """The value of future ``f``, waiting for it if need be (the slides' ``touch``).

    If the thunk raised, raises its exception (``RemoteError`` if it could not
    travel here), chained to its traceback.  ``Timeout`` after ``timeout``
    seconds; ``DeadProcess`` if the future's process ended (killed, say).
    """
    value = await call(f, "ref", timeout=timeout)
    if value.__class__ is _Failed:
        reraise(value.crash)
    return value
