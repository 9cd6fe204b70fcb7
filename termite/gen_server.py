"""Erlang's generic server (the paper's section 5.2): a generic loop plus a callback class.

The loop does the messaging (receive, dispatch, reply, stop); the callback
class holds only sequential code, given the server's state and returning the
new one.  Subclass :class:`GenServer`, start it, and talk to it::

    from termite import gen_server

    class KV(gen_server.GenServer):
        async def init(self):
            return {}                                   # the initial state

        async def handle_call(self, request, sender, state):
            match request:
                case ("store", key, value):
                    state[key] = value
                    return ("reply", "ok", state)
                case ("lookup", key):
                    return ("reply", state.get(key), state)

        async def handle_cast(self, msg, state):
            if msg == "stop":
                return ("stop", "normal", state)
            return ("noreply", state)

    async def main():
        kv = gen_server.start(KV(), name="kv")         # a pid; "kv" names it on this node
        await gen_server.call(kv, ("store", "a", 1))   # "ok"
        await gen_server.call("kv", ("lookup", "a"))   # 1
        await gen_server.stop(kv)                      # terminate() runs, then it ends

=================================================  ======================================
generic call                                       callback it triggers, in the server
=================================================  ======================================
``start(server, *args)``, ``await start_wait``     ``init(*args)``
``await call(server, request, timeout=5)``         ``handle_call(request, sender, state)``
``cast(server, msg)``                              ``handle_cast(msg, state)``
any other message (``send``, ``Down``, ``Exit``)   ``handle_info(msg, state)``
``await stop(server, reason)``, a stop return      ``terminate(reason, state)``
an exception in a callback                         ``terminate(crash, state)``
=================================================  ======================================

What each callback may return (any other value stops the server with
:class:`BadReturn`, which carries the value):

- ``init(*args)``: the initial state, or ``Init(state, then)`` (below).  To
  refuse to start, raise (or return) ``Stop(reason)``: the server ends with
  ``reason``, without ``terminate``.  Default: the single argument given to
  ``start`` (None without one).
- ``handle_call``: ``("reply", reply, state)``; ``("noreply", state)``, the
  reply comes later from ``reply(sender, value)``, from this process or any
  other; ``("stop", reason, reply, state)``, replies after ``terminate``;
  ``("stop", reason, state)``, the caller gets ``DeadProcess``.
  Default: raise ``NotImplementedError`` (the server crashes).
- ``handle_cast``, ``handle_info``, ``handle_continue``: ``("noreply",
  state)`` or ``("stop", reason, state)``.  Default ``handle_cast`` and
  ``handle_continue``: raise ``NotImplementedError``; default
  ``handle_info``: log the unexpected message (warning, logger
  ``"termite"``) and go on.
- ``terminate(reason, state)``: the return value is ignored.  Default: nothing.

A ``"reply"`` or ``"noreply"`` return may end with one more element, ``then``
(Erlang's timeout and ``{continue, Arg}``); so may ``init``, as
``Init(state, then)``:

- a number of seconds: if no message comes within it,
  ``handle_info("timeout", state)`` runs (an idle timeout: any message
  cancels it);
- ``Continue(arg)``: ``handle_continue(arg, state)`` runs at once, before
  any message.  So ``init`` can return fast (``start_wait`` returns) and
  leave slow work to ``handle_continue``.

Callbacks may be ``async def`` (so they may ``await call(...)`` others) or
plain functions.  Any callback may also raise ``Stop(reason)``.

How a server ends:

- A callback raises: the exception, with its traceback, is the exit reason
  (a :class:`termite.Crash`, logged once); ``terminate(crash, state)`` runs
  first.  Pending and later callers get ``DeadProcess(pid, crash)`` at once
  (``call`` monitors the server), linked processes get the exit signal.
- A ``"stop"`` return, ``Stop(reason)`` or ``stop(server, reason)``:
  ``terminate(reason, state)`` runs, then the process ends with ``reason``
  (``"normal"`` ends it quietly; other reasons travel along links).
- An exit signal from a linked process: as for any process, unless the server
  traps exits (``termite.trap_exit(True)`` in ``init``).  Then an ``Exit``
  from the process that started it with ``link=True`` (its parent, say a
  supervisor) stops it with that reason, ``terminate`` first; other ``Exit``
  messages go to ``handle_info``.

On the wire a call is the paper's ``!?``: ``(caller, tag, request)``,
answered by ``(tag, reply)``.  So ``termite.call(server, request)`` reaches
``handle_call`` too, and so does ``node.call(server, request, timeout=5)``
from plain Python (a script, a REPL, a test) on a :class:`termite.Node`.
The other functions here run from plain Python as a process:
``node.run(gen_server.stop, server)``,
``node.run(lambda: gen_server.start(KV(), name="kv"))``.

A server is named by its pid, by a name registered on this node (``start(...,
name="kv")``), or by ``("kv", node)``: the server registered as ``"kv"`` on
``node``, as Erlang's ``{Name, Node}``.

``start(..., node=ref)`` starts the server on another node: the callback
object travels there by reference to its class (which must be importable
there) or by value (a class defined in ``__main__``).

A reply that arrives after ``call`` gave up (``Timeout``) is left in the
caller's mailbox as ``(tag, reply)``, as in Erlang before aliases.
"""

from __future__ import annotations

import logging
import types
from typing import Any, NamedTuple

from termite._call import _whereis_named
from termite._call import call as _call
from termite._errors import Crash, DeadProcess, Exited, NoSuchName, TermiteError, Timeout
from termite._future import reraise
from termite._ids import Pid, Tag, make_tag
from termite._links import demonitor, kill, monitor
from termite._mailbox import _resolve_name, receive, send
from termite._process import Down, Exit, current
from termite._spawn import spawn

__all__ = [
    "GenServer",
    "From",
    "Continue",
    "Init",
    "start",
    "serve",
    "start_wait",
    "call",
    "cast",
    "reply",
    "stop",
    "Stop",
    "BadReturn",
    "StartError",
]

log = logging.getLogger("termite")

#: Markers of the generic messages that are not calls (a call is ``(pid, tag, request)``).
CAST = "$gen_cast"
STOP = "$gen_stop"
_STARTED = "$gen_started"

_Coroutine = types.CoroutineType
_NUMBERS = (int, float)


class From(NamedTuple):
    """Who is waiting for a reply: the ``sender`` handed to ``handle_call``.

    Keep it to answer later with ``reply(sender, value)``.
    """

    pid: Pid
    tag: Tag


class Continue(NamedTuple):
    """``then`` in a callback's return: run ``handle_continue(arg, state)`` before any message."""

    arg: Any


class Init(NamedTuple):
    """What ``init`` returns for a timeout or a continue: ``Init(state, 5.0)``, ``Init(state, Continue(arg))``."""

    state: Any
    then: Any


class Stop(Exception):
    """Raise (or, from ``init``, return) ``Stop(reason)`` in a callback to stop the server.

    ``terminate(reason, state)`` runs (except when ``init`` stops), then the
    server ends with ``reason``.
    """

    def __init__(self, reason="normal"):
        super().__init__(reason)
        self.reason = reason
        self.state = _KEEP  # a "stop" return carries the state terminate gets
        self.reply_to = None  # and, from handle_call, a reply to send after terminate
        self.reply = None

    @classmethod
    def _returned(cls, reason, state, reply_to=None, reply=None) -> Stop:
        stop = cls(reason)
        stop.state, stop.reply_to, stop.reply = state, reply_to, reply
        return stop


class BadReturn(TermiteError):
    """A callback returned a value the generic loop does not understand; the server stops."""

    def __init__(self, callback: str, value):
        super().__init__(callback, value)
        self.callback = callback
        self.value = value

    def __str__(self):
        return (
            f"{self.callback} returned {self.value!r:.200}; expected "
            + _EXPECTED.get(self.callback.rsplit(".", 1)[-1], "a documented return")
        )


_THEN = "a last `then`: seconds (a number >= 0) or Continue(arg)"
_EXPECTED = {
    "handle_call": "('reply', reply, state), ('noreply', state), "
    f"('stop', reason, reply, state) or ('stop', reason, state); the first two perhaps with {_THEN}",
    "handle_cast": f"('noreply', state) or ('stop', reason, state); the first perhaps with {_THEN}",
    "init": "the state, Init(state, then) with `then` seconds (a number >= 0) or Continue(arg), or Stop(reason)",
}
_EXPECTED["handle_info"] = _EXPECTED["handle_continue"] = _EXPECTED["handle_cast"]


class StartError(TermiteError):
    """``start_wait``: the server's ``init`` raised or stopped; ``reason`` says why."""

    def __init__(self, pid, reason):
        super().__init__(pid, reason)
        self.pid = pid
        self.reason = reason

    def __str__(self):
        return f"gen_server {self.pid} failed to start: {self.reason}"


_KEEP = object()
_NOT_STARTED = object()


# -- the callback class ---------------------------------------------------------


class GenServer:
    """Subclass this and override the callbacks; see the module docstring for the protocol."""

    async def init(self, *args):
        """Return the initial state (default: the one argument given to ``start``, else None)."""
        if len(args) > 1:
            raise TypeError(
                f"{type(self).__qualname__} was started with {len(args)} arguments but defines no "
                "init(self, ...) to take them; the default init takes at most one (the initial state)"
            )
        return args[0] if args else None

    async def handle_call(self, request, sender: From, state):
        raise NotImplementedError(f"{type(self).__qualname__} got the call {request!r:.200} but defines no handle_call")

    async def handle_cast(self, msg, state):
        raise NotImplementedError(f"{type(self).__qualname__} got the cast {msg!r:.200} but defines no handle_cast")

    async def handle_info(self, msg, state):
        log.warning("gen_server %s (%s) got an unexpected message: %.200r", current().pid, type(self).__qualname__, msg)
        return ("noreply", state)

    async def handle_continue(self, arg, state):
        raise NotImplementedError(f"{type(self).__qualname__} returned Continue({arg!r:.200}) but defines no handle_continue")

    async def terminate(self, reason, state):
        return None


# -- the generic loop -----------------------------------------------------------


async def _serve(server: GenServer, args: tuple, parent: Pid | None, ack: From | None):
    """The server's process body.  User callbacks run only in here, in one ``try``."""
    me = current().pid
    state = _NOT_STARTED
    callback, msg = "init", args
    try:
        result = server.init(*args)
        if result.__class__ is _Coroutine:
            result = await result
        if isinstance(result, Stop):
            raise result
        then = None  # an idle timeout (seconds) or a Continue, from the last callback's return
        if result.__class__ is Init:
            state, then = result
            if not _is_then(then):
                raise BadReturn(f"{type(server).__qualname__}.init", result)
        else:
            state = result
        if ack is not None:
            send(ack.pid, (ack.tag, _STARTED))
        while True:
            if then is None:
                msg = await receive()
            elif then.__class__ is Continue:
                callback, msg, then = "handle_continue", then.arg, None
                result = server.handle_continue(msg, state)
                if result.__class__ is _Coroutine:
                    result = await result
                state, then = _noreply(server, callback, result)
                continue
            else:
                try:
                    msg = await receive(timeout=then)
                except Timeout:
                    msg = "timeout"  # as Erlang's: nothing came within the idle timeout
                then = None
            cls = msg.__class__
            if cls is tuple and len(msg) == 3 and msg[0].__class__ is Pid and msg[1].__class__ is Tag:
                callback, sender = "handle_call", From(msg[0], msg[1])
                result = server.handle_call(msg[2], sender, state)
                if result.__class__ is _Coroutine:
                    result = await result
                if result.__class__ is tuple and result:
                    kind, n = result[0], len(result)
                    if kind == "reply" and (n == 3 or (n == 4 and _is_then(result[3]))):
                        send(sender.pid, (sender.tag, result[1]))
                        state = result[2]
                        if n == 4:
                            then = result[3]
                        continue
                    if kind == "noreply" and (n == 2 or (n == 3 and _is_then(result[2]))):
                        state = result[1]
                        if n == 3:
                            then = result[2]
                        continue
                    if kind == "stop" and n == 4:
                        raise Stop._returned(result[1], result[3], sender, result[2])
                    if kind == "stop" and n == 3:
                        raise Stop._returned(result[1], result[2])
                raise BadReturn(f"{type(server).__qualname__}.handle_call", result)
            if cls is tuple and len(msg) == 2 and msg[0].__class__ is str:
                if msg[0] == CAST:
                    callback, msg = "handle_cast", msg[1]
                    result = server.handle_cast(msg, state)
                elif msg[0] == STOP:
                    raise Stop(msg[1])
                else:
                    callback = "handle_info"
                    result = server.handle_info(msg, state)
            elif cls is Exit and msg.pid == parent and parent is not None:
                raise Stop(msg.reason)  # the parent (a supervisor) ends: so do we, terminate first
            else:
                callback = "handle_info"
                result = server.handle_info(msg, state)
            if result.__class__ is _Coroutine:
                result = await result
            state, then = _noreply(server, callback, result)
    except Exited:
        raise  # an exit signal from a link, not trapped: the server ends at once, as in Erlang
    except Stop as stop:
        reason = stop.reason
        if state is _NOT_STARTED:
            if ack is not None:
                send(ack.pid, (ack.tag, ("stop", reason)))
        else:
            if stop.state is not _KEEP:
                state = stop.state
            try:
                result = server.terminate(reason, state)
                if result.__class__ is _Coroutine:
                    await result
            finally:
                if stop.reply_to is not None:
                    send(stop.reply_to.pid, (stop.reply_to.tag, stop.reply))
        if reason == "normal":
            return
        if not _is_shutdown(reason):
            log.error("gen_server %s (%s) stopped: %r", me, type(server).__qualname__, reason)
        raise Exited(me, reason) from None  # ends this process with `reason`, along its links
    except Exception as exc:
        exc.add_note(f"(in {type(server).__qualname__}.{callback} of gen_server {me}, handling {msg!r:.200})")
        crash = Crash.from_exception(exc, where=f"gen_server {me}")
        if state is _NOT_STARTED:
            if ack is not None:
                send(ack.pid, (ack.tag, ("crash", crash)))
        else:
            result = server.terminate(crash, state)  # if it raises, that exception ends the server
            if result.__class__ is _Coroutine:
                await result
        raise


def _is_then(then) -> bool:
    """A return's optional last element: seconds of idle timeout, or a Continue."""
    return then.__class__ is Continue or (then.__class__ in _NUMBERS and then >= 0)


def _noreply(server: GenServer, callback: str, result) -> tuple:
    """``(state, then)`` from a ``handle_cast``/``handle_info``/``handle_continue`` return; raises to stop."""
    if result.__class__ is tuple and result:
        kind, n = result[0], len(result)
        if kind == "noreply":
            if n == 2:
                return result[1], None
            if n == 3 and _is_then(result[2]):
                return result[1], result[2]
        elif kind == "stop" and n == 3:
            raise Stop._returned(result[1], result[2])
    raise BadReturn(f"{type(server).__qualname__}.{callback}", result)


def _is_shutdown(reason) -> bool:
    """Reasons a supervisor uses: not worth an error log, as in Erlang."""
    return reason == "shutdown" or (reason.__class__ is tuple and len(reason) == 2 and reason[0] == "shutdown")


# -- the client API --------------------------------------------------------------


def _check_server(server) -> None:
    if not isinstance(server, GenServer):
        hint = f"start({server.__name__}(), ...)" if isinstance(server, type) else "start(MyServer(), ...)"
        raise TypeError(
            f"gen_server.start() needs an instance of a GenServer subclass, got {type(server).__name__}: "
            f"{server!r:.100}; write {hint}"
        )


def start(server: GenServer, *args, name: str | None = None, link: bool = False, node=None) -> Pid:
    """Start a server process running ``server``'s callbacks; return its pid at once.

    ``init(*args)`` runs first in the new process, before any message is
    handled, so calls may be made right away.  If ``init`` fails, the process
    ends (calls get ``DeadProcess``); ``start_wait`` reports it instead.
    ``name`` registers the server (on its node), ``link=True`` links it to
    the caller (its parent), ``node`` starts it on another node.
    """
    _check_server(server)
    parent = current().pid if link else None
    return spawn(_serve, server, args, parent, None, name=name, link=link, node=node)


async def serve(server: GenServer, *args):
    """``server``'s loop as a process body: for a supervisor's child spec.

        supervisor.ChildSpec("kv", gen_server.serve, args=(KV(),), name="kv")

    The process that spawns it is not its parent: the supervisor's shutdown
    exit signal ends it (``terminate`` runs if ``init`` made it trap exits).
    """
    _check_server(server)
    await _serve(server, args, None, None)


async def start_wait(
    server: GenServer, *args, name: str | None = None, link: bool = False, node=None, timeout: float | None = 5
) -> Pid:
    """Like ``start``, but wait until ``init`` has returned (Erlang's ``gen_server:start``).

    Raises :class:`StartError` if ``init`` raised (``reason`` is the
    :class:`termite.Crash`, and the exception is chained with its remote
    traceback) or stopped; ``Timeout`` if ``init`` takes longer than
    ``timeout`` seconds (the server is then killed).
    """
    _check_server(server)
    me = current().pid
    ack = From(me, make_tag())
    pid = spawn(_serve, server, args, me if link else None, ack, name=name, link=link, node=node)
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
    if outcome == _STARTED:
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
