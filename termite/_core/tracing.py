"""Tracing a process, as Erlang's ``sys:trace`` and ``dbg``: a copy of each message it receives and sends.

    await termite.trace(pid)      # from now on this process gets Trace events of pid
    match await termite.receive(termite.Trace):
        case termite.Trace(_, "received", msg): ...
        case termite.Trace(_, "sent", msg, to): ...
        case termite.Trace(_, "exit", reason): ...   # the last one
    await termite.untrace(pid)

A traced process's ``tracers`` hold its tracers' pids, and the mailbox sends
each of them a :class:`~termite._core.process.Trace` of every message it
receives and sends (termite/_core/mailbox.py).  A process nobody traces pays
one attribute test where it sends and one where it receives.

Each trace (a traced process and one tracer) has an *agent*: a small process
on the traced process's node, started when the trace is, which

- monitors the traced process: its end is the trace's last event, ``"exit"``;
- monitors the tracer: a tracer that ends, or whose node is lost, stops the
  trace, as in Erlang;
- follows the process when it migrates: told by the node's table that the
  process left (:meth:`Traces.left`), it sends ``"migrated"``, starts its
  successor on the node the process went to and ends.  What the process
  receives and sends there before the successor is in place (about one
  message's trip) is not reported.

A process of another node is traced by asking that node (termite._core.info.ask):
the agent starts there and the events come over the network, in order with
the rest of what that node sends the tracer.
"""

from __future__ import annotations

from termite._core.ids import Pid, Tag, make_tag
from termite._core.info import HOPS, follow, locate
from termite._core.links import _watch, demonitor
from termite._core.mailbox import deliver, receive, send
from termite._core.process import DEAD, Down, ProcessTable, Trace, current
from termite._core.spawn import spawn, spawn_in

__all__ = ["Trace", "Traces", "trace", "untrace"]


class Traces:
    """A node's traces: the agent of each (traced pid, tracer).  ``table.tracing``, made by the first one."""

    def __init__(self, table: ProcessTable):
        self.table = table
        self.agents: dict[Pid, dict[Pid, Pid]] = {}  # traced pid -> {tracer: its agent}

    def left(self, pid: Pid) -> None:
        """The table's hook: ``pid`` no longer runs here.  Its agents look where it went (it may have ended)."""
        agents = self.agents.get(pid)
        if agents:
            for agent in agents.values():
                proc = self.table.resolve(agent)
                if proc is not None:
                    deliver(proc, ("left", pid))  # not send(): the leaving process did not send it


def _traces(table: ProcessTable) -> Traces:
    if table.tracing is None:
        table.tracing = Traces(table)
    return table.tracing


def _install(table: ProcessTable, pid: Pid, tracer: Pid) -> bool:
    """Trace ``pid``, a process of this node, for ``tracer``; False if it has ended."""
    proc = table.resolve(pid)
    if proc is None or proc.pid != pid or proc.waiting is DEAD:
        return False
    agents = _traces(table).agents.setdefault(pid, {})
    if tracer in agents:
        return True
    watch, boss = make_tag(), make_tag()
    agent = spawn_in(table, _agent, (pid, tracer, watch, boss))
    # Its monitors are made now, not when it first runs: the process may end before then, with a reason
    # the trace must tell.
    _watch(agent._proc, pid, watch)
    _watch(agent._proc, tracer, boss)
    agents[tracer] = agent
    proc.tracers = (*(proc.tracers or ()), tracer)
    return True


def _uninstall(table: ProcessTable, pid: Pid, tracer: Pid) -> Pid | None:
    """Stop tracing ``pid`` for ``tracer`` here; the trace's agent, if there was one."""
    traces = table.tracing
    agents = traces.agents.get(pid) if traces is not None else None
    agent = agents.pop(tracer, None) if agents else None
    if agents is not None and not agents:
        del traces.agents[pid]
    proc = table.resolve(pid)
    if proc is not None and proc.pid == pid and proc.tracers:
        proc.tracers = tuple(t for t in proc.tracers if t != tracer) or None
    return agent


async def _agent(pid: Pid, tracer: Pid, watch: Tag, boss: Tag):
    """The body of a trace's agent (see the module's docstring)."""
    table = current().table
    while True:
        msg = await receive()
        if msg.__class__ is Down:
            if msg.ref == watch:  # the traced process ended
                _uninstall(table, pid, tracer)
                demonitor(boss)
                send(tracer, Trace(pid, "exit", msg.reason))
                return
            if msg.ref == boss:  # the tracer ended, or its node was lost
                _uninstall(table, pid, tracer)
                demonitor(watch)
                return
        elif msg == "stop":  # untrace: _uninstall is done
            demonitor(watch)
            demonitor(boss)
            return
        elif msg == ("left", pid):
            node = table.moved.get(pid) if table.moved else None
            if node is not None:  # it migrated (else it ended: its Down follows)
                _uninstall(table, pid, tracer)
                demonitor(watch)
                demonitor(boss)
                send(tracer, Trace(pid, "migrated", node))
                spawn(_arrive, pid, tracer, 0, node=node)
                return


def _arrive(pid: Pid, tracer: Pid, hops: int) -> None:
    """On the node a traced process migrated to: take up its trace (following it on if it moved again)."""
    table = current().table
    if _install(table, pid, tracer):
        return
    node = table.moved.get(pid) if table.moved else None
    if node is not None and hops < HOPS:
        spawn(_arrive, pid, tracer, hops + 1, node=node)
    else:
        send(tracer, Trace(pid, "exit", "noproc"))  # it ended before its trace caught up with it


def _check(pid) -> None:
    if pid.__class__ is not Pid:
        raise TypeError(f"trace() and untrace() need a Pid, not {type(pid).__name__}: {pid!r}")


async def trace(pid: Pid) -> bool:
    """Have ``pid`` report to this process every message it receives and sends, and its end.

    Each event is a message ``Trace(pid, event, message, to)``: ``"received"``,
    ``"sent"`` (``to`` the destination), ``"migrated"`` (``message`` the node
    it went to: the trace follows it) and last ``"exit"`` (``message`` the
    reason).  Until :func:`untrace`, the end of either process, or the loss
    of this node.  ``pid`` may be another node's: that node is asked.
    Returns False if ``pid`` is not running (nothing will come), True once
    the trace is on.
    """
    _check(pid)
    me = current()
    node = locate(me.table, pid)
    if node is None:
        return _install(me.table, pid, me.pid)
    return await follow(pid, node, _trace_here, me.pid)


def _trace_here(pid: Pid, tracer: Pid):
    table = current().table
    node = locate(table, pid)
    return _install(table, pid, tracer) if node is None else node


async def untrace(pid: Pid) -> bool:
    """Stop the trace of ``pid`` to this process; False if there was none.

    Events already on their way still arrive.
    """
    _check(pid)
    me = current()
    node = locate(me.table, pid)
    if node is None:
        return _untrace_here(pid, me.pid)
    return await follow(pid, node, _untrace_here, me.pid)


def _untrace_here(pid: Pid, tracer: Pid):
    table = current().table
    node = locate(table, pid)
    if node is not None:
        return node
    agent = _uninstall(table, pid, tracer)
    if agent is None:
        return False
    send(agent, "stop")
    return True

