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

================================================  ===================================================
generic call                                      callback it triggers, in the server
================================================  ===================================================
``start(server, *args)``, ``await start_wait``    ``init(*args)``
``await call(server, request, timeout=5)``        ``handle_call(request, sender, state)``
``await multi_call(nodes, name, request)``        ``handle_call`` of the server ``name`` on each node
``cast(server, msg)``                             ``handle_cast(msg, state)``
``abcast(nodes, name, msg)``                      ``handle_cast`` of the server ``name`` on each node
any other message (``send``, ``Down``, ``Exit``)  ``handle_info(msg, state)``
``await stop(server, reason)``, a stop return     ``terminate(reason, state)``
an exception in a callback                        ``terminate(crash, state)``
================================================  ===================================================

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

Many nodes at once, as Erlang's: ``multi_call(nodes, name, request,
timeout=5)`` calls the server registered as ``name`` on each node, in
parallel, and returns ``(replies, bad_nodes)``: ``replies`` a list of
``(node, reply)``, ``bad_nodes`` those with no such server, whose server
ended before replying, that are or went down, or that did not reply within
``timeout``.  A node lost mid-call counts as bad as soon as it is lost; it
never holds up the others.  ``abcast(nodes, name, msg)`` casts ``msg`` to
the server ``name`` on each node, without an answer.  ``nodes=None`` means
this node and every node it is connected to::

    replies, bad = await gen_server.multi_call(termite.nodes(), "kv", ("lookup", "a"))
    gen_server.abcast(termite.nodes(), "kv", ("store", "a", 2))

``start(..., node=ref)`` starts the server on another node: the callback
object travels there by reference to its class (which must be importable
there) or by value (a class defined in ``__main__``).

A reply that arrives after ``call`` gave up (``Timeout``) is left in the
caller's mailbox as ``(tag, reply)``, as in Erlang before aliases.

State machines (Erlang's ``gen_statem``): termite has no behaviour of its
own for them; two plain forms do the work.  For a server with a state
machine inside, keep the state's name in the server's state and match on
both, ``match (state["name"], request)`` in ``handle_call``.  For a process
that is a state machine, write each state as a function that receives and
returns the next state; selective receive leaves the messages a state does
not handle in the mailbox for a later one (``gen_statem``'s postpone), and
``timeout=`` is its state timeout::

    async def locked(code):
        match await receive(("unlock", str)):
            case ("unlock", guess) if guess == code: return opened
        return locked                       # a wrong code: stay locked

    async def opened(code):                 # back to locked on "lock", or after 10 s
        await receive("lock", timeout=10, default=None)
        return locked

    async def door(code, state=locked):     # the machine: each state returns the next one
        while state is not None:
            state = await state(code)
"""

from termite._behaviours.gen_server_client import (
    StartError, abcast, call, cast, multi_call, reply, start, start_wait, stop,
)
from termite._behaviours.gen_server_loop import BadReturn, Continue, From, GenServer, Init, Stop, serve

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
    "multi_call",
    "abcast",
    "reply",
    "stop",
    "Stop",
    "BadReturn",
    "StartError",
]

# Shown (in reprs, crash reports, pickles by reference) under this public path.
for _name in __all__:
    globals()[_name].__module__ = __name__
del _name
