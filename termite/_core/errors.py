"""Exceptions and exit reasons that user code sees."""

from __future__ import annotations

import os
import copy as _copy
import pickle as _pickle
import traceback as _traceback

_KERNEL_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_kernel.py")

__all__ = [
    "TermiteError",
    "Timeout",
    "Exited",
    "DeadProcess",
    "NotInProcess",
    "PatternError",
    "NameTaken",
    "NoSuchName",
    "Crash",
    "MigrationError",
    "UnreadableMessage",
]


class TermiteError(Exception):
    """Base class of termite's own errors."""


class Timeout(TermiteError, TimeoutError):
    """``receive`` or ``call`` waited ``timeout`` seconds and was given no ``default``."""


class NotInProcess(TermiteError, RuntimeError):
    """A process-only operation (``receive``, ``self``, ...) ran outside a process."""


class PatternError(TermiteError, TypeError):
    """A receive pattern that can never match, or is not a pattern at all."""


class NameTaken(TermiteError, ValueError):
    """``register`` was given a name or a process that already has a registration."""


class NoSuchName(TermiteError, LookupError):
    """``send`` was given a name that no process has registered."""


class MigrationError(TermiteError):
    """A process cannot be captured here or restored there (termite/_move/continuation.py).

    When a value in the process cannot travel, ``function`` and ``variable``
    name where it sits (``variable`` is None for a value on the stack) and
    ``type_name`` says what it is.
    """

    def __init__(self, text: str, *, function=None, variable=None, type_name=None):
        super().__init__(text)
        self.function = function
        self.variable = variable
        self.type_name = type_name


class UnreadableMessage(TermiteError):
    """A node could not unpickle what was sent to it: code or a class it cannot import.

    Raised where the sender waits (a ``call``, a thunk's future) and given as
    the exit reason of a remote ``spawn`` that could not start.  The text
    names the module and the object, and says how to make the node find them.
    """


class Exited(TermiteError):
    """A linked process ended abnormally; raised in a process that does not trap exits.

    ``pid`` is the process that ended, ``reason`` why (``"killed"``, a
    :class:`Crash`, or any value given to ``exit``).  Left uncaught, it ends this
    process with the same reason, so the failure travels further along links.
    """

    def __init__(self, pid, reason):
        super().__init__(pid, reason)
        self.pid = pid
        self.reason = reason

    def __str__(self):
        return f"linked process {self.pid} exited: {self.reason}"


class DeadProcess(TermiteError):
    """``call`` got no reply because the called process ended (and no ``default`` was given)."""

    def __init__(self, pid, reason):
        super().__init__(pid, reason)
        self.pid = pid
        self.reason = reason

    def __str__(self):
        return f"process {self.pid} ended before replying: {self.reason}"


class Crash:
    """The exit reason of a process that raised: the exception, printable anywhere.

    ``exc_type`` and ``message`` name the error, ``traceback`` is the formatted
    traceback as the failing process saw it (headed by its pid), and
    ``exception`` is the exception object itself where it could travel.
    """

    __slots__ = ("exc_type", "message", "traceback", "exception")

    def __init__(self, exc_type: str, message: str, traceback: str, exception=None):
        self.exc_type = exc_type
        self.message = message
        self.traceback = traceback
        self.exception = exception

    @classmethod
    def from_exception(cls, exc: BaseException, where: str = "") -> "Crash":
        kind = type(exc)
        name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename == _KERNEL_FILE:
            tb = tb.tb_next  # the kernel's resume call is noise to the reader
        text = "".join(_traceback.format_exception(type(exc), exc, tb))
        if where:
            text = f"Traceback of {where}:\n{text}"
        return cls(name, str(exc), text, exc)

    def __eq__(self, other):
        if not isinstance(other, Crash):
            return NotImplemented
        return (self.exc_type, self.message) == (other.exc_type, other.message)

    def __hash__(self):
        return hash((self.exc_type, self.message))

    def __reduce__(self):
        # The exception object travels only if it pickles; the text always does.
        exception = self.exception
        if exception is not None:
            try:
                _pickle.dumps(exception)
            except Exception:  # noqa: BLE001 - any failure means: leave it behind
                exception = None
        return (Crash, (self.exc_type, self.message, self.traceback, exception))

    def __repr__(self):
        return f"Crash({self.exc_type}: {self.message})"

    def __str__(self):
        return f"{self.exc_type}: {self.message}" if self.message else self.exc_type


class RemoteError(TermiteError):
    """A call that ran on another node raised an exception that could not travel back: its text."""

    def __init__(self, crash: Crash):
        super().__init__(crash)
        self.crash = crash

    def __str__(self):
        return f"{self.crash.exc_type}: {self.crash.message}"


class RemoteTraceback(Exception):
    """The traceback of a call that failed on another node: the ``__cause__`` of what it raised."""

    def __init__(self, text: str):
        super().__init__(text)
        self.text = text

    def __str__(self):
        return f'\n"""\n{self.text.rstrip()}\n"""'


def remote_exception(crash: Crash) -> BaseException:
    """What to raise for ``crash``, which happened elsewhere: a copy of its exception
    (``RemoteError`` if it could not travel), its traceback chained as a ``RemoteTraceback``.

    A copy, so an exception object shared by the processes of one node does
    not gather each raiser's traceback.
    """
    exc = crash.exception
    if exc is None:
        exc = RemoteError(crash)
    else:
        try:
            exc = _copy.copy(exc)
        except Exception:  # noqa: BLE001 - an exception that cannot be copied is raised as it is
            pass
        exc = exc.with_traceback(None)
    exc.__cause__ = RemoteTraceback(crash.traceback)
    exc.__suppress_context__ = True
    return exc
