"""I/O as processes (the paper's section 3.1): open files and a node's standard streams, as pids.

An open file cannot travel: it is a handle of one OS process.  So a process
whose locals hold one cannot migrate, and a message holding one cannot be
sent.  As the paper does for ports, termite.io puts the file in a process of
its own, a *proxy* on the node where the file is open, and hands out the
proxy's pid.  A pid travels anywhere: a process that holds it may migrate,
and goes on using the file, which stays on its home node::

    f = termite.io.open_file("log.txt", "a")     # a pid; the file is open on this node
    await termite.io.write(f, "started\\n")
    await termite.migrate(other_node)            # f travels as a pid; the file stays
    await termite.io.write(f, "moved\\n")         # written on the home node
    await termite.io.close(f)

    out = await termite.io.stdout(node)          # node's standard output, as a process
    await termite.io.write(out, "hello\\n")       # printed by node
    termite.send(out, ("write", "hello\\n"))      # the same, without waiting for it

Lifetime.  The process that opens a file owns it: the proxy monitors its
owner and closes the file when the owner ends, wherever it has migrated to
by then, as Erlang's file server does.  ``close(f)`` closes it before (from
any process), and ends the proxy.  ``owner=`` gives the file another owner
(from plain Python: ``node.run(lambda: termite.io.open_file(path, "w",
owner=node.pid))``).  A node's standard streams are registered on it, as
``"termite.stdout"`` and ``"termite.stderr"``, started on first use, and are
never closed through termite.io.

Any process may use a file's pid.  The requests are calls, answered in the
order they come; the functions below wrap them, and raise in the caller
what the operation raised in the proxy (``FileNotFoundError``,
``io.UnsupportedOperation``, ``ValueError`` for a closed file).  Plain
``termite.call`` (or ``node.call`` from plain Python) works too:

===============================  =====================================================
request                          reply
===============================  =====================================================
``("read", size)``               ``("ok", data)``; ``""`` or ``b""`` at the end
``("readline", size)``           ``("ok", line)``
``("write", data)``              ``("ok", count)``: characters or bytes written
``("seek", offset, whence)``     ``("ok", position)``
``("tell",)``                    ``("ok", position)``
``("flush",)``                   ``("ok", None)``
``("close",)``                   ``("ok", None)``; then the proxy ends (files only)
a request that fails             ``("error", exception)``
===============================  =====================================================

A ``("write", data)`` *sent*, not called, writes without an answer; a
failure is logged (logger ``"termite"``).

Blocking.  A regular file is read and written in its proxy.  A pipe, a
terminal, a FIFO or a device may keep a read or a write waiting, so there
the operation runs on a worker thread: only the proxy waits, never its node.
Standard streams are written to ``sys.stdout`` / ``sys.stderr`` as they are
at the time (a redirection counts) and flushed after each write.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import sys

from termite._behaviours.gen_server_client import start
from termite._behaviours.gen_server_loop import GenServer
from termite._core.call import call as _call
from termite._core.errors import DeadProcess, Timeout
from termite._core.ids import NodeRef, Pid, make_tag
from termite._core.links import demonitor, monitor
from termite._core.mailbox import receive
from termite._core.mailbox import send as _send
from termite._core.patterns import ANY
from termite._core.process import Down, ProcessTable, current
from termite._core.spawn import spawn

__all__ = ["open_file", "stdout", "stderr", "read", "readline", "write", "seek", "tell", "flush", "close"]

_log = logging.getLogger("termite")

#: The names a node's standard streams are registered under, on that node.
_STREAM_NAMES = {"stdout": "termite.stdout", "stderr": "termite.stderr"}

_REQUESTS = "read, readline, write, seek, tell, flush, close"


# -- opening ------------------------------------------------------------------------


def open_file(path, mode: str = "r", *, encoding=None, errors=None, newline=None, buffering: int = -1,
              owner: Pid | None = None) -> Pid:
    """Open ``path`` on this node and return the pid of a proxy process that holds the file.

    The arguments are those of the built-in ``open``, which runs here, in the
    caller, so its errors (``FileNotFoundError``, a bad ``mode``) are raised
    here too.  The file closes on ``close(f)``, or when ``owner`` (the caller
    by default) ends, wherever it is by then.
    """
    me = current()
    owner = me.pid if owner is None else owner
    if owner.__class__ is not Pid:
        raise TypeError(f"open_file()'s owner is the pid whose end closes the file, not {owner!r:.200}")
    fileobj = open(path, mode, buffering, encoding, errors, newline)  # noqa: SIM115 - the proxy closes it
    try:
        return start(_FileProxy(), fileobj, owner)
    except BaseException:
        fileobj.close()
        raise


async def stdout(node: NodeRef | None = None, timeout: float | None = 5) -> Pid:
    """The pid of ``node``'s standard output as a process (this node's if None); started on first use."""
    return await _stream("stdout", node, timeout)


async def stderr(node: NodeRef | None = None, timeout: float | None = 5) -> Pid:
    """The pid of ``node``'s standard error as a process (this node's if None); started on first use."""
    return await _stream("stderr", node, timeout)


async def _stream(which: str, node, timeout) -> Pid:
    me = current()
    if node is None or node == me.table.ref:
        return _local_stream(me.table, which)
    if node.__class__ is not NodeRef:
        raise TypeError(f"{which}()'s node is a NodeRef (termite.current_node(), termite.nodes()), not {node!r:.200}")
    tag = make_tag()
    asker = spawn(_tell_stream, me.pid, tag, which, node=node)
    ref = monitor(asker)  # a lost node answers with its Down
    ended = Down(ref, asker, ANY)
    try:
        answer = await receive((tag, Pid), ended, timeout=timeout)
    except Timeout:
        demonitor(ref)
        raise Timeout(f"node {node} did not give its {which} within {timeout} s") from None
    if answer.__class__ is Down:
        raise DeadProcess(asker, answer.reason)
    await receive(ended)  # it ends right after answering: leave no stray Down
    return answer[1]


def _tell_stream(reply_to: Pid, tag, which: str) -> None:
    """Run on the stream's node: send ``(tag, pid)`` of its ``which`` stream to ``reply_to``."""
    _send(reply_to, (tag, _local_stream(current().table, which)))


def _local_stream(table: ProcessTable, which: str) -> Pid:
    name = _STREAM_NAMES[which]
    pid = table.names.get(name)
    if pid is None:  # no await between the look-up and the start: one per node
        pid = start(_StreamProxy(), which, name=name)
    return pid


# -- using ----------------------------------------------------------------------------


async def read(f: Pid, size: int = -1, *, timeout: float | None = None):
    """Read up to ``size`` characters (text) or bytes (binary), all that is left if -1; ``""``/``b""`` at the end."""
    return await _request(f, ("read", size), timeout)


async def readline(f: Pid, size: int = -1, *, timeout: float | None = None):
    """Read one line (with its newline; ``""``/``b""`` at the end)."""
    return await _request(f, ("readline", size), timeout)


async def write(f: Pid, data, *, timeout: float | None = None) -> int:
    """Write ``data`` (str to a text file, bytes to a binary one); return how much was written."""
    return await _request(f, ("write", data), timeout)


async def seek(f: Pid, offset: int, whence: int = os.SEEK_SET, *, timeout: float | None = None) -> int:
    """Move to ``offset`` (from the start, ``os.SEEK_CUR`` or ``os.SEEK_END``); return the new position."""
    return await _request(f, ("seek", offset, whence), timeout)


async def tell(f: Pid, *, timeout: float | None = None) -> int:
    """The current position in the file."""
    return await _request(f, ("tell",), timeout)


async def flush(f: Pid, *, timeout: float | None = None) -> None:
    """Write out what the file buffers."""
    await _request(f, ("flush",), timeout)


async def close(f: Pid, *, timeout: float | None = None) -> None:
    """Close the file and end its proxy; closing a closed file does nothing, as in Python."""
    try:
        await _request(f, ("close",), timeout)
    except _Closed:
        pass


class _Closed(ValueError):
    """The proxy has ended: Python's ``ValueError`` for a closed file."""


async def _request(f: Pid, request: tuple, timeout):
    if f.__class__ is not Pid:
        raise TypeError(f"termite.io needs the pid that open_file(), stdout() or stderr() returned, not {f!r:.200}")
    try:
        answer = await _call(f, request, timeout=timeout)
    except DeadProcess as exc:
        if exc.reason in ("normal", "noproc"):
            raise _Closed(f"I/O operation on closed file: its proxy {f} has ended") from None
        raise  # its node was lost, or it crashed: not a plain close
    if answer.__class__ is not tuple or len(answer) != 2 or answer[0] not in ("ok", "error"):
        raise TypeError(f"{f} is not a termite.io file or stream: it answered {request!r:.100} with {answer!r:.200}")
    if answer[0] == "error":
        raise answer[1]
    return answer[1]


# -- the proxies ------------------------------------------------------------------------


def _may_wait(fileobj) -> bool:
    """Whether a read or write of ``fileobj`` may wait (a pipe, a terminal, a device): not a regular file."""
    try:
        mode = os.fstat(fileobj.fileno()).st_mode
    except (AttributeError, OSError, ValueError):  # in memory (a StringIO, a capture): never waits
        return False
    return not stat.S_ISREG(mode)


async def _perform(fileobj, may_wait: bool, request):
    """Carry out ``request`` on ``fileobj``: ``("ok", value)``, or ``("error", exception)``."""
    match request:  # the file checks the arguments: its TypeError reaches the caller
        case ("read" | "readline" as what, size):
            operation, args = getattr(fileobj, what), (size,)
        case ("write", data):
            operation, args = fileobj.write, (data,)
        case ("seek", offset, whence):
            operation, args = fileobj.seek, (offset, whence)
        case ("tell",) | ("flush",) | ("close",):
            operation, args = getattr(fileobj, request[0]), ()
        case _:
            return ("error", ValueError(f"not a termite.io request: {request!r:.200}; it answers {_REQUESTS}"))
    try:
        if may_wait:
            return ("ok", await asyncio.to_thread(operation, *args))
        return ("ok", operation(*args))
    except Exception as exc:  # noqa: BLE001 - the caller gets it, raised in its own process
        return ("error", exc)


class _FileProxy(GenServer):
    """An open file as a process: it answers the requests of the module's table, and watches its owner."""

    async def init(self, fileobj, owner: Pid):
        return {"file": fileobj, "may_wait": _may_wait(fileobj), "owner": monitor(owner)}

    async def handle_call(self, request, sender, state):
        outcome = await _perform(state["file"], state["may_wait"], request)
        if request == ("close",):
            return ("stop", "normal", outcome, state)
        return ("reply", outcome, state)

    async def handle_info(self, msg, state):
        if msg.__class__ is Down and msg.ref == state["owner"]:
            return ("stop", "normal", state)  # the owner ended: terminate closes the file
        if msg.__class__ is tuple and len(msg) == 2 and msg[0] == "write":
            _log_failure(await _perform(state["file"], state["may_wait"], msg), msg)
            return ("noreply", state)
        return await super().handle_info(msg, state)

    async def terminate(self, reason, state):
        fileobj = state["file"]
        if not fileobj.closed:
            if state["may_wait"]:
                await asyncio.to_thread(fileobj.close)
            else:
                fileobj.close()


class _StreamProxy(GenServer):
    """A node's ``sys.stdout`` or ``sys.stderr`` as a process: write and flush, each write flushed."""

    async def handle_call(self, request, sender, which):
        return ("reply", await self._write(which, request), which)

    async def handle_info(self, msg, which):
        if msg.__class__ is tuple and len(msg) == 2 and msg[0] == "write":
            _log_failure(await self._write(which, msg), msg)
            return ("noreply", which)
        return await super().handle_info(msg, which)

    @staticmethod
    async def _write(which: str, request):
        stream = getattr(sys, which)
        if request.__class__ is tuple and request and request[0] in ("write", "flush"):
            if stream is None:
                return ("error", ValueError(f"this node has no sys.{which}"))
            may_wait = _may_wait(stream)
            outcome = await _perform(stream, may_wait, request)
            if outcome[0] == "ok" and request[0] == "write":
                flushed = await _perform(stream, may_wait, ("flush",))
                if flushed[0] == "error":
                    outcome = flushed
            return outcome
        return ("error", ValueError(
            f"a node's sys.{which} takes write and flush only, not {request!r:.200}; it is never closed"
        ))


def _log_failure(outcome: tuple, msg) -> None:
    if outcome[0] == "error":
        _log.warning("termite.io %s: %.100r failed: %r", current().pid, msg, outcome[1])
