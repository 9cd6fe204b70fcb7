"""The generic server's client API: start, call, cast, reply, stop (``termite.gen_server``).

These run in the calling process and talk to the server by messages; the
server side is ``termite._behaviours.gen_server_loop``.
"""

from __future__ import annotations

from typing import Any

from termite._behaviours.gen_server_loop import CAST, STARTED, STOP, From, GenServer, check_server, serve_loop
from termite._core.call import _whereis_named
from termite._core.call import call as _call
from termite._core.errors import DeadProcess, NoSuchName, TermiteError, Timeout
from termite._core.future import reraise
from termite._core.ids import Pid, make_tag
from termite._core.links import demonitor, kill, monitor
from termite._core.mailbox import _resolve_name, receive, send
from termite._core.process import Down, current
from termite._core.spawn import spawn


class StartError(TermiteError):
    """``start_wait``: the server's ``init`` raised or stopped; ``reason`` says why."""

    def __init__(self, pid, reason):
        super().__init__(pid, reason)
        self.pid = pid
        self.reason = reason

    def __str__(self):
        return f"gen_server {self.pid} failed to start: {self.reason}"


def start(server: GenServer, *args, name: str | None = None, link: bool = False, node=None) -> Pid:
    """Start a server process running ``server``'s callbacks; return its pid at once.

    ``init(*args)`` runs first in the new process, before any message is
    handled, so calls may be made right away.  If ``init`` fails, the process
    ends (calls get ``DeadProcess``); ``start_wait`` reports it instead.
    ``name`` registers the server (on its node), ``link=True`` links it to
    the caller (its parent), ``node`` starts it on another node.
    """
    check_server(server)
    parent = current().pid if link else None
    return spawn(serve_loop, server, args, parent, None, name=name, link=link, node=node)


async def start_wait(
    server: GenServer, *args, name: str | None = None, link: bool = False, node=None, timeout: float | None = 5
) -> Pid:
    """Like ``start``, but wait until ``init`` has returned (Erlang's ``gen_server:start``).

    Raises :class:`StartError` if ``init`` raised (``reason`` is the
    :class:`termite.Crash`, and the exception is chained with its remote
    traceback) or stopped; ``Timeout`` if ``init`` takes longer than
    ``timeout`` seconds (the server is then killed).
    """
    check_server(server)
    me = current().pid
    ack = From(me, make_tag())
    pid = spawn(serve_loop, server, args, me if link else None, ack, name=name, link=link, node=node)
    ref = monitor(pid)
    tag = ack.tag
    try:
        answer = await receive(
            lambda m: (m.__class__ is tuple and len(m) == 2 and m[0] == tag) or (m.__class__ is Down and m.ref == ref),
            timeout=timeout,
        )
    except Timeout:
        demonitor(ref)
        kill(pid)
        raise Timeout(f"gen_server {pid} did not finish init within {timeout} s; it was killed") from None
    if answer.__class__ is Down:
        raise StartError(pid, answer.reason)
    outcome = answer[1]
    if outcome == STARTED:
        demonitor(ref)
        return pid
    await receive(lambda m: m.__class__ is Down and m.ref == ref)  # it is ending: leave no stray Down
    kind, reason = outcome
    if kind == "crash":
        try:
            reraise(reason)
        except Exception as exc:
            raise StartError(pid, reason) from exc
    raise StartError(pid, reason)


async def call(server, request, timeout: float | None = 5):
    """Send ``request`` to ``server`` (a pid or a registered name) and return its reply.

    Raises ``Timeout`` after ``timeout`` seconds (None: wait as long as it
    takes), and ``DeadProcess`` (with the server's exit reason, a
    ``Crash`` carrying its traceback if it crashed) as soon as the server
    ends, or at once if it is not running.
    """
    me = current()
    if server == me.pid or (isinstance(server, str) and me.table.names.get(server) == me.pid):
        raise RuntimeError("a gen_server cannot call itself: it would wait for its own reply forever")
    try:
        return await _call(server, request, timeout=timeout)
    except NoSuchName:
        raise DeadProcess(server, "noproc") from None


def cast(server, msg) -> None:
    """Send ``msg`` to ``server``'s ``handle_cast``, without waiting; never fails (as Erlang's)."""
    try:
        send(server, (CAST, msg))
    except NoSuchName:
        pass


def reply(sender: From, value) -> None:
    """Answer the call from ``sender`` (as handed to ``handle_call``) with ``value``."""
    pid, tag = sender
    send(pid, (tag, value))


async def stop(server, reason: Any = "normal", timeout: float | None = None) -> None:
    """Stop ``server`` with ``reason`` and wait until it has ended (``terminate`` has run).

    The request is handled after the messages already in the server's
    mailbox.  Raises ``DeadProcess`` if the server is not running (reason
    ``"noproc"``) or ended with another reason (its ``terminate`` raised);
    ``Timeout`` after ``timeout`` seconds (None: no limit), having killed it.
    """
    if server.__class__ is tuple:  # (name, node)
        pid = await _whereis_named(current(), server, 5.0 if timeout is None else timeout)
        if pid is None:
            raise DeadProcess(server, "noproc")
    else:
        try:
            pid = server if server.__class__ is Pid else _resolve_name(server)
        except NoSuchName:
            raise DeadProcess(server, "noproc") from None
    ref = monitor(pid)
    send(pid, (STOP, reason))
    try:
        down = await receive(lambda m: m.__class__ is Down and m.ref == ref, timeout=timeout)
    except Timeout:
        demonitor(ref)
        kill(pid)
        raise Timeout(f"gen_server {pid} did not stop within {timeout} s; it was killed") from None
    if down.reason != reason:
        raise DeadProcess(pid, down.reason)
