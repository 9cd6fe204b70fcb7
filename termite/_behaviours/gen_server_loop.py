"""The generic server's callback class and its loop: the server side of ``termite.gen_server``.

The loop (``serve_loop``) does the messaging: it receives, dispatches to the
callbacks, replies and stops.  User callbacks run only in there, in one
``try`` that turns their exceptions into exit reasons.  The protocol, the
callbacks and what each may return are described in ``termite.gen_server``.
"""

from __future__ import annotations

import logging
import types
from typing import Any, NamedTuple

from termite._core.errors import Crash, Exited, TermiteError, Timeout
from termite._core.ids import Pid, Tag
from termite._core.mailbox import receive, send
from termite._core.process import Exit, current

log = logging.getLogger("termite")

#: Markers of the generic messages that are not calls (a call is ``(pid, tag, request)``).
CAST = "$gen_cast"
STOP = "$gen_stop"
STARTED = "$gen_started"  # the answer to start_wait: init has returned

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


_KEEP = object()
_NOT_STARTED = object()


# -- the callback class ---------------------------------------------------------


class GenServer:
    """Subclass this and override the callbacks; ``termite.gen_server``'s docstring gives the protocol."""

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
        raise NotImplementedError(
            f"{type(self).__qualname__} returned Continue({arg!r:.200}) but defines no handle_continue"
        )

    async def terminate(self, reason, state):
        return None


# -- the generic loop -----------------------------------------------------------


async def serve_loop(server: GenServer, args: tuple, parent: Pid | None, ack: From | None):
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
            send(ack.pid, (ack.tag, STARTED))
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


def check_server(server) -> None:
    """A TypeError that shows the fix, unless ``server`` is a GenServer instance."""
    if not isinstance(server, GenServer):
        hint = f"start({server.__name__}(), ...)" if isinstance(server, type) else "start(MyServer(), ...)"
        raise TypeError(
            f"gen_server.start() needs an instance of a GenServer subclass, got {type(server).__name__}: "
            f"{server!r:.100}; write {hint}"
        )


async def serve(server: GenServer, *args):
    """``server``'s loop as a process body: for a supervisor's child spec.

        supervisor.ChildSpec("kv", gen_server.serve, args=(KV(),), name="kv")

    The process that spawns it is not its parent: the supervisor's shutdown
    exit signal ends it (``terminate`` runs if ``init`` made it trap exits).
    """
    check_server(server)
    await serve_loop(server, args, None, None)

