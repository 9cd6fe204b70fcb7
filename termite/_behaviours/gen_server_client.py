"""The generic server's client API: start, call, cast, reply, stop, multi_call, abcast (``termite.gen_server``).

These run in the calling process and talk to the server by messages; the
server side is ``termite._behaviours.gen_server_loop``.
"""

from __future__ import annotations

import time
from typing import Any

from termite._behaviours.gen_server_loop import CAST, STARTED, STOP, From, GenServer, check_server, serve_loop
from termite._core.call import _whereis_named
from termite._core.call import call as _call
from termite._core.errors import DeadProcess, NoSuchName, TermiteError, Timeout
from termite._core.future import reraise
from termite._core.ids import NodeRef, Pid, make_tag
from termite._core.links import demonitor, kill, monitor, trap_exit
from termite._core.mailbox import _resolve_name, receive, send
from termite._core.process import Down, Exit, current
from termite._core.spawn import spawn
from termite._net.distribution import NodeDown, demonitor_node, monitor_node


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


# -- many nodes at once -------------------------------------------------------------


async def multi_call(nodes, name: str, request, timeout: float | None = 5) -> tuple[list, list]:
    """Call the server registered as ``name`` on each of ``nodes``, all at once (Erlang's ``multi_call``).

    Returns ``(replies, bad_nodes)``: ``replies`` a list of ``(node, reply)``,
    ``bad_nodes`` the nodes that gave none: no server registered as ``name``
    there, the server ended before replying, the node is (or went) down, or
    no reply came within ``timeout`` seconds (None: as long as it takes).
    Both follow the order of ``nodes``; ``nodes=None`` means this node and
    every node it is connected to.  A node lost mid-call is a bad node as
    soon as its loss is known; it does not hold up the others' replies.

    The calls are made by a process of their own, which ends when the answer
    is in: a reply that comes too late goes nowhere, not to the caller's
    mailbox.
    """
    targets = _nodes_for(nodes, "multi_call")
    _check_name(name, "multi_call")
    if timeout is not None and not (isinstance(timeout, (int, float)) and timeout >= 0):
        raise ValueError(f"multi_call()'s timeout is seconds (a number >= 0) or None, not {timeout!r}")
    me = current()
    tag = make_tag()
    gatherer = spawn(_gather, me.pid, tag, targets, name, request, timeout)
    ref = monitor(gatherer)
    answer = await receive(
        lambda m: (m.__class__ is tuple and len(m) == 2 and m[0] == tag) or (m.__class__ is Down and m.ref == ref)
    )
    if answer.__class__ is Down:  # it never ends before answering unless killed
        raise DeadProcess(gatherer, answer.reason)
    await receive(lambda m: m.__class__ is Down and m.ref == ref)  # it is ending: leave no stray Down
    return answer[1]


def abcast(nodes, name: str, msg) -> None:
    """Cast ``msg`` to the server registered as ``name`` on each of ``nodes`` (Erlang's ``abcast``).

    No answer and no error, as ``cast``: a node without such a server, or
    down, simply does not get it.  ``nodes=None`` means this node and every
    node it is connected to.
    """
    _check_name(name, "abcast")
    for node in _nodes_for(nodes, "abcast"):
        cast((name, node), msg)


def _nodes_for(nodes, what: str) -> list[NodeRef]:
    """``nodes`` as a list of NodeRefs, each once, in order; None: this node and those it is connected to."""
    table = current().table
    if nodes is None:
        found = [table.ref]
        if table.remote is not None:
            found += [peer for peer in table.remote.transport.peers() if peer.incarnation is not None]
        return found
    if isinstance(nodes, (str, bytes, NodeRef)) or not hasattr(nodes, "__iter__"):
        raise TypeError(f"{what}() takes a list of nodes (NodeRefs), not {type(nodes).__name__}: {nodes!r:.200}")
    nodes = list(nodes)
    bad = [node for node in nodes if node.__class__ is not NodeRef]
    if bad:
        raise TypeError(
            f"{what}() takes nodes as NodeRefs (termite.current_node(), termite.nodes()), got {bad[0]!r:.200}"
        )
    return list(dict.fromkeys(nodes))  # each once, in order


def _check_name(name, what: str) -> None:
    if name.__class__ is not str or not name:
        raise TypeError(
            f"{what}() names the server by the name it is registered under (a non-empty str), not {name!r:.200}"
        )


async def _gather(caller: Pid, tag, targets: list, name: str, request, timeout):
    """multi_call's own process: one asker per node, node monitors, one answer to ``caller``."""
    me = current()
    trap_exit(True)  # an asker that crashes is a bad node, not the end of us
    caller_ref = monitor(caller)  # a caller that ends takes its multi_call along
    deadline = None if timeout is None else time.monotonic() + timeout
    here, remote = me.table.ref, me.table.remote is not None
    asking, watches = {}, {}  # asker -> its node; node watch -> its node
    for node in targets:
        if node != here and remote:
            watches[monitor_node(node)] = node  # before the request leaves: a loss after it is seen
        asking[spawn(_ask, me.pid, node, name, request, link=True)] = node
    replies, bad = {}, set()
    try:
        while asking:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            msg = await receive(timeout=left, default=None)
            cls = msg.__class__
            if msg is None:  # the time is up
                break
            if cls is tuple and len(msg) == 3 and msg[0] in asking:
                asker, ok, value = msg
                node = asking.pop(asker)
                if ok:
                    replies[node] = value
                else:
                    bad.add(node)
            elif cls is Exit and msg.pid in asking and msg.reason != "normal":
                bad.add(asking.pop(msg.pid))  # it crashed (an unpicklable request, say)
            elif cls is NodeDown and msg.ref in watches:
                lost = watches[msg.ref]
                for asker, node in list(asking.items()):
                    if node == lost:
                        del asking[asker]
                        kill(asker)
                        bad.add(node)
            elif cls is Down and msg.ref == caller_ref:
                return  # nobody waits for the answer
    finally:
        for asker in asking:
            kill(asker)
        for ref in watches:
            demonitor_node(ref)
    bad.update(asking.values())
    send(caller, (tag, ([(node, replies[node]) for node in targets if node in replies],
                        [node for node in targets if node in bad])))


async def _ask(gatherer: Pid, node: NodeRef, name: str, request):
    """Call ``(name, node)``; tell ``gatherer`` ``(self, True, reply)``, or ``(self, False, None)`` if none came."""
    me = current().pid
    try:
        reply = await _call((name, node), request)  # the gatherer keeps the time, and watches the node
    except (DeadProcess, NoSuchName):
        send(gatherer, (me, False, None))
    else:
        send(gatherer, (me, True, reply))
