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

from termite._errors import (
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
    Timeout,
)
from termite._ids import NodeRef, Pid, Tag, make_tag
from termite._links import Down, Exit, demonitor, exit, kill, link, monitor, trap_exit, unlink
from termite._call import call
from termite._mailbox import receive, send, sleep
from termite._distribution import NodeDown, NodeUp, connect, demonitor_node, monitor_node, nodes, whereis_on
from termite._global import register_global, registered_global, sync_global, unregister_global, whereis_global
from termite._keys import KeyFileError
from termite._codec import MalformedMessage, UnserializableMessage
from termite._node import Network, Node, current_node, run
from termite._migration import migrate
from termite._callcc import Continuation, become, continuation
from termite._patterns import ANY, where
from termite._meter import Load, node_load
from termite._dispatch import average_load, dispatch, dispatch_async, loads, minimum_load, start_dispatcher
from termite.executor import Executor
from termite._process import current as _current
from termite._registry import register, registered, unregister, whereis
from termite._spawn import spawn
from termite._future import future, touch
from termite._cell import cell_ref, cell_set, make_cell
from termite import gen_server
from termite.gen_server import GenServer
from termite import supervisor
from termite.supervisor import ChildSpec, ChildSpecError, SupervisorError, spawn_thunk_supervised


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
    "ANY",
    "where",
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
    # names
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
    "monitor_node",
    "demonitor_node",
    "NodeUp",
    "NodeDown",
    # load and dispatch
    "dispatch",
    "dispatch_async",
    "start_dispatcher",
    "minimum_load",
    "average_load",
    "loads",
    "node_load",
    "Load",
    "Executor",
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
    "MalformedMessage",
    "SupervisorError",
    "ChildSpecError",
    "RemoteError",
    "RemoteTraceback",
]

# Public names live at termite.X, whatever private module defines them.
for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "termite").startswith("termite."):
        try:
            _obj.__module__ = "termite"
        except (AttributeError, TypeError):
            pass
del _name, _obj
