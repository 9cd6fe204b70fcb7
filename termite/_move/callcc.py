"""First-class process continuations: cloning and code update (paper, section 4.10).

The paper builds process cloning and dynamic code update on ``call/cc``.
Here the same two operations, on the continuation capture of live migration
(termite/_move/continuation.py):

``k = await continuation()``
    Capture the calling process's continuation: ``k`` is a
    :class:`Continuation`, and the process runs on unchanged.  When some
    process later resumes from ``k``, this same ``await`` returns again, in
    that process, with the value it was resumed with (``True`` unless told
    otherwise).  So the code after it tells the two apart::

        k = await continuation()
        if isinstance(k, Continuation):  # the first return: hand k out
            send(sender, (tag, k))
        # a process resumed from k gets here with k = True (the paper's (clone #t))

``await become(k, value=True)``
    Replace the calling process's whole continuation by ``k``: the pending
    ``await continuation()`` of ``k`` returns ``value``.  Same pid, mailbox,
    links, monitors and registered name; this ``await`` never returns.  The
    replaced chain is closed (its ``finally`` blocks and ``__exit__``
    methods run), as when a process is killed.  This is the paper's
    ``(k #t)`` in the code-update example: the process answers ``'update``
    by becoming a continuation captured in a process running new code.

``spawn(become, k)``, ``spawn(become, k, node=n)``
    A clone: a *new* process (a new pid, an empty mailbox, no links) that
    continues from ``k``, here or on node ``n``.  Its locals are copies of
    those of the process at the time ``k`` was captured; from then on the
    two are independent.  A pid kept in a local (``me = self()``) still
    names the original; ``self()`` names the clone.

What travels is what ``migrate`` sends: the chain of suspended coroutine
frames, with their locals and value stacks, as bytes (``Continuation.data``).
A ``Continuation`` is an ordinary value: send it in a message to any node
that runs the same code on the same Python.  Not the mailbox, not the pid,
not links: those belong to the process that resumes it.  A local holding an
older ``Continuation`` travels inside the new one (``del`` it when done).

Errors: if something in the process cannot travel (a lock, a file, a socket
in a local), ``continuation()`` raises ``MigrationError`` naming the
variable; if ``k`` cannot be restored here (other code for one of its
functions, another Python version), ``become`` raises ``MigrationError``.
In both cases the process goes on where it was.

The slides' ``migrate-task`` (send your continuation to a process on another
node, which spawns it, and halt) is ``spawn(become, k)`` over there; the
process then has a new pid.  ``migrate(node)`` keeps the pid, the mailbox and
the links, and is what to use to move a process.
"""

from __future__ import annotations

import logging
import types

from termite._move.continuation import capture, restore
from termite._core.errors import MigrationError
from termite._core.kernel import Kernel, Signal
from termite._core.process import Process, current

__all__ = ["Continuation", "become", "continuation"]

log = logging.getLogger("termite")


class Continuation:
    """A captured process continuation: a value to send, keep, and resume with :func:`become`.

    ``data`` is the captured chain (bytes); ``origin`` the pid of the process
    it was captured from.  Equal when their bytes are.
    """

    __slots__ = ("data", "origin")

    def __init__(self, data: bytes, origin=None):
        self.data = bytes(data)
        self.origin = origin

    def __reduce__(self):
        return Continuation, (self.data, self.origin)

    def __eq__(self, other):
        return other.__class__ is Continuation and other.data == self.data

    def __hash__(self):
        return hash(self.data)

    def __repr__(self):
        return f"<Continuation of {self.origin} ({len(self.data)} bytes)>"


# -- the traps ----------------------------------------------------------------


class _Capture:
    """What ``continuation()`` yields to the kernel."""

    __slots__ = ()


_CAPTURE = _Capture()


class _Become:
    """What ``become`` yields to the kernel."""

    __slots__ = ("k", "value")

    def __init__(self, k: Continuation, value):
        self.k, self.value = k, value


@types.coroutine
def _trap(request):
    # The innermost awaitable of the captured chain: capture() leaves it out
    # and puts a resume point in its place, so a chain restored from the
    # capture returns, from this trap, the value it is sent.
    return (yield request)


def _install(kernel: Kernel) -> None:
    """Give ``kernel`` the handlers of both traps (once; every kernel, networked or not)."""
    handlers = kernel.trap_handlers
    if _Capture not in handlers:
        handlers[_Capture] = _on_capture
        handlers[_Become] = _on_become


def continuation():
    """Capture this process's continuation: ``await continuation()`` returns a :class:`Continuation`.

    When a process later resumes from it (``become(k, value)``, or a clone
    made with ``spawn(become, k)``), the same ``await`` returns ``value``
    there.  Raises ``MigrationError``, naming the local, when something in
    the process cannot be captured.  A plain function returning the
    awaitable: it adds no frame of its own to the continuation.
    """
    me = current()
    _install(me.kernel)
    return _trap(_CAPTURE)


async def become(k: Continuation, value=True):
    """Continue this process from ``k``: its ``await continuation()`` returns ``value``; never returns.

    The pid, mailbox, links and monitors stay; the current chain is closed.
    As a process body, ``spawn(become, k)`` starts a clone.  Raises
    ``MigrationError`` (and the process goes on) if ``k`` cannot be restored
    here.
    """
    if k.__class__ is not Continuation:
        raise TypeError(f"become() needs a Continuation from `await continuation()`, not {type(k).__name__}: {k!r}")
    _install(current().kernel)
    await _trap(_Become(k, value))
    raise AssertionError("unreachable: become() resumes the process elsewhere")  # pragma: no cover


# -- kernel side: handlers run on the kernel's thread, and must not raise ----------


def _on_capture(proc: Process, request: _Capture) -> None:
    try:
        value = Continuation(capture(proc.coro), proc.pid)
    except Exception as exc:  # noqa: BLE001 - raised in the process, never in the kernel
        value = Signal(_error(f"cannot capture the continuation of {proc.pid}", exc))
    proc.kernel.wake(proc, value)


def _on_become(proc: Process, request: _Become) -> None:
    try:
        coro = restore(request.k.data)
    except Exception as exc:  # noqa: BLE001 - the process learns why, and keeps its continuation
        proc.kernel.wake(proc, Signal(_error(f"cannot resume {request.k!r} here", exc)))
        return
    old, proc.coro = proc.coro, coro
    try:
        old.close()  # the replaced chain's finally blocks run, with the process still current
    except Exception:
        log.warning("process %s: its replaced continuation raised as it was closed", proc.pid, exc_info=True)
    proc.kernel.wake(proc, request.value)


def _error(what: str, exc: Exception) -> MigrationError:
    """``exc`` as a MigrationError that says what failed, keeping what it names."""
    if not isinstance(exc, MigrationError):
        return MigrationError(f"{what}: {type(exc).__name__}: {exc}")
    error = MigrationError(
        f"{what}: {str(exc).removeprefix('cannot migrate: ')}",
        function=exc.function,
        variable=exc.variable,
        type_name=exc.type_name,
    )
    error.__cause__ = exc
    return error
