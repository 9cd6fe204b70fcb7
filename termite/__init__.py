"""termite: the Erlang process model, with Termite Scheme's migration, for Python.

    import termite
    from termite import receive, send, spawn

    async def pong():
        while True:
            sender, msg = await receive((termite.Pid, "ping"))
            send(sender, "pong")

    async def main():
        server = spawn(pong)
        send(server, (termite.self(), "ping"))
        return await receive()

    assert termite.run(main) == "pong"
"""

import importlib as _importlib
import typing as _typing

from termite._core.errors import (
    Crash,
    DeadProcess,
    MigrationError,
    Exited,
    NameTaken,
    NoSuchName,
    NotInProcess,
    PatternError,
    RemoteError,
    RemoteTraceback,
    TermiteError,
    UnreadableMessage,
    Timeout,
)
from termite._core.ids import NodeRef, Pid, Tag, make_tag
from termite._core.links import Down, Exit, demonitor, exit, kill, link, monitor, trap_exit, unlink
from termite._core.call import call
from termite._core.mailbox import receive, send, sleep
from termite._core.timers import TimerRef, cancel_timer, exit_after, kill_after, read_timer, send_after, send_interval
from termite._net.distribution import (
    NodeDown, NodeUp, busy_nodes, busy_processes, connect, demonitor_node, monitor_node, nodes, unresponsive_nodes,
    whereis_on,
)
from termite._net.global_names import register_global, registered_global, sync_global, unregister_global, whereis_global
from termite._net.keys import KeyFileError
from termite._net.codec import MalformedMessage, UnserializableMessage
from termite._runtime.node import Network, Node, current_node, run
from termite._runtime.clusterfile import ClusterState, cluster_state, generate_keys, load_keys, session_keys
from termite._move.migration import migrate
from termite._move.callcc import Continuation, become, continuation
from termite._core.patterns import ANY, where
from termite._balance.meter import LOAD_REPORT, Load, node_load, subscribe_load, unsubscribe_load
from termite._balance.safepoint import balanceable, checkpoint
from termite._balance.balancer import BalancerStatistics, balancer_statistics
from termite._balance.dispatch import average_load, dispatch, dispatch_async, loads, minimum_load, ship, start_dispatcher
from termite.console import say
from termite._core.process import current as _current
from termite._core.registry import register, registered, unregister, whereis
from termite._core.info import ProcessInfo, ProcessLoad, process_info, processes
from termite._core.tracing import Trace, trace, untrace
from termite._core.spawn import spawn
from termite._core.future import future, touch
from termite._core.cell import cell_ref, cell_set, make_cell
from termite import gen_server
from termite.gen_server import GenServer
from termite import supervisor
from termite import pg
from termite import io  # termite.io; kept out of __all__: `from termite import *` must not hide the stdlib's io
from termite._behaviours.balancing import balancer_spec, start_balancer
from termite.supervisor import LEAST_LOADED, SPREAD, ChildSpec, ChildSpecError, SupervisorError, spawn_thunk_supervised

# Imported on first use (PEP 562, see __getattr__ below), not with termite: a node never needs them and they
# are dear to import on every node and client (the executor and its progress bars pull in rich, the
# version importlib.metadata).  Here for type checkers and the API reference, which read this file.
if _typing.TYPE_CHECKING:
    from termite._version import __version__
    from termite.executor import Executor
    from termite.progress_bars import progress

#: Public name -> the module that defines it, imported when the name is first read.
_ON_FIRST_USE = {"__version__": "termite._version", "Executor": "termite.executor", "progress": "termite.progress_bars"}


def self() -> Pid:
    """The pid of the calling process (the paper's ``self``)."""
    return _current().pid


__all__ = [
    # processes and messages
    "spawn",
    "self",
    "send",
    "receive",
    "call",
    "make_tag",
    "sleep",
    "process_info",
    "ProcessInfo",
    # looking inside: a node's processes, tracing one
    "processes",
    "ProcessLoad",
    "trace",
    "untrace",
    "Trace",
    "say",
    "ANY",
    "where",
    # timers
    "send_after",
    "send_interval",
    "exit_after",
    "kill_after",
    "cancel_timer",
    "read_timer",
    "TimerRef",
    # behaviours: generic servers, futures, cells
    "gen_server",
    "GenServer",
    "future",
    "touch",
    "make_cell",
    "cell_ref",
    "cell_set",
    # behaviours: supervisors
    "supervisor",
    "ChildSpec",
    "spawn_thunk_supervised",
    "LEAST_LOADED",
    "SPREAD",
    # failure
    "link",
    "unlink",
    "monitor",
    "demonitor",
    "exit",
    "kill",
    "trap_exit",
    "Exit",
    "Down",
    "Crash",
    # names and groups
    "register",
    "unregister",
    "whereis",
    "registered",
    "register_global",
    "unregister_global",
    "whereis_global",
    "whereis_on",
    "registered_global",
    "sync_global",
    "pg",
    # nodes
    "Node",
    "NodeRef",
    "Network",
    "run",
    "current_node",
    "migrate",
    "continuation",
    "become",
    "Continuation",
    "connect",
    "nodes",
    "unresponsive_nodes",
    "busy_nodes",
    "busy_processes",
    "monitor_node",
    "demonitor_node",
    "NodeUp",
    "NodeDown",
    "generate_keys",
    "cluster_state",
    "ClusterState",
    "load_keys",
    "session_keys",
    # load and dispatch
    "dispatch",
    "dispatch_async",
    "ship",
    "start_dispatcher",
    "minimum_load",
    "average_load",
    "loads",
    "node_load",
    "subscribe_load",
    "unsubscribe_load",
    "LOAD_REPORT",
    "Load",
    "Executor",
    "progress",
    # rebalancing by migration
    "balanceable",
    "checkpoint",
    "start_balancer",
    "balancer_spec",
    "balancer_statistics",
    "BalancerStatistics",
    # identities
    "Pid",
    "Tag",
    # errors
    "TermiteError",
    "Timeout",
    "Exited",
    "DeadProcess",
    "NotInProcess",
    "PatternError",
    "NameTaken",
    "NoSuchName",
    "KeyFileError",
    "MigrationError",
    "UnserializableMessage",
    "UnreadableMessage",
    "MalformedMessage",
    "SupervisorError",
    "ChildSpecError",
    "RemoteError",
    "RemoteTraceback",
]


def _at_termite(obj: object) -> None:
    """Public names live at termite.X, whatever private module defines them."""
    if getattr(obj, "__module__", "termite").startswith("termite."):
        try:
            obj.__module__ = "termite"
        except (AttributeError, TypeError):
            pass


for _name in __all__:
    if _name not in _ON_FIRST_USE:
        _at_termite(globals()[_name])
del _name


def __getattr__(name: str) -> object:
    """A name of _ON_FIRST_USE, read for the first time: import its module (PEP 562)."""
    module = _ON_FIRST_USE.get(name)
    if module is None:
        raise AttributeError(f"module 'termite' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    _at_termite(value)
    globals()[name] = value  # read once: the next read finds it without calling this
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_ON_FIRST_USE))
