"""Distribution, as a process sees it: other nodes, their names, their loss.

A process uses pids of other nodes as it uses local ones (send, link,
monitor, spawn on a node); the distribution endpoint (termite._net.endpoint)
carries those operations.  This module holds what is about nodes themselves:
``connect`` (the paper's ``make-node``), ``nodes``, ``monitor_node`` with its
``NodeUp``/``NodeDown`` messages, and ``whereis_on``.
"""

from __future__ import annotations

import errno
import time

from termite._core.errors import Timeout
from termite._core.ids import NodeRef, Pid, Tag, make_tag
from termite._core.process import current
from termite._net.endpoint import Endpoint, NodeDown, NodeUp

__all__ = [
    "NodeUp", "NodeDown", "monitor_node", "demonitor_node", "nodes", "unresponsive_nodes", "busy_nodes", "busy_processes",
    "connect", "whereis_on",
]


def _endpoint() -> Endpoint:
    endpoint = current().table.remote
    if endpoint is None:
        raise RuntimeError("this node is not connected to other nodes: start it with a port, e.g. termite.Node(port=0, ...)")
    return endpoint


def monitor_node(node: NodeRef | None = None) -> Tag:
    """Get ``NodeUp(ref, node)`` / ``NodeDown(ref, node, reason)`` messages for ``node`` (or any node if None)."""
    me = current()
    ref = make_tag()
    endpoint = _endpoint()
    endpoint.node_watchers[ref] = (me.pid, node)
    if node is not None and node.incarnation is not None:
        endpoint.transport.watch(node)  # a suspended session is reopened; a node not reached, reached
    return ref


def demonitor_node(ref: Tag) -> None:
    _endpoint().node_watchers.pop(ref, None)


def nodes() -> list[NodeRef]:
    """The nodes this one is connected to now; not clients (``Network(client=True)``: a script, an
    Executor, the launcher), which are hidden as Erlang's hidden nodes are: no work is sent to them."""
    transport = _endpoint().transport
    return [peer for peer in transport.peers() if peer.incarnation is not None and not transport.is_client(peer)]


def is_client(node: NodeRef) -> bool:
    """Whether ``node``, connected to this one, is a client: hidden from ``nodes()`` and from dispatch."""
    return _endpoint().transport.is_client(node)


def unresponsive_nodes() -> list[NodeRef]:
    """Connected nodes whose own heartbeats stopped for ``heartbeat_timeout``: busy (perhaps in a
    C call holding the GIL), not down; their connections still answer."""
    return [peer for peer in _endpoint().transport.unresponsive() if peer.incarnation is not None]


def busy_nodes() -> dict[NodeRef, int]:
    """Nodes this one has sent more than its buffer limit that they have not read yet: node -> bytes
    unread.  Processes that send to them wait until half is read (flow control, termite._net.flow)."""
    return _endpoint().flow.busy_peers()


def busy_processes() -> dict[Pid, int]:
    """Processes of this node with more than the mailbox limit waiting: pid -> messages waiting.
    Processes of other nodes that send to them wait until half is read (termite._net.flow)."""
    return _endpoint().flow.busy_here()


async def whereis_on(node: NodeRef, name: str, timeout: float = 5.0) -> Pid | None:
    """The pid registered as ``name`` on ``node`` (``termite.register``), or None: one round trip.

    Raises ``Timeout`` if ``node`` does not answer within ``timeout`` seconds.
    """
    me = current()
    if node == me.table.ref:
        return me.table.names.get(name)
    return await _endpoint().whereis(node, name, timeout)


async def connect(host: str, port: int, timeout: float = 5.0) -> NodeRef:
    """Reach the node at host:port and return its reference (the paper's ``make-node``)."""
    endpoint = _endpoint()
    asked = time.monotonic()
    ref = await endpoint.hello(NodeRef(host, port, None), timeout)
    if ref is None:
        short = endpoint.transport.short_of_files(since=asked)
        if short:
            raise OSError(errno.EMFILE, f"cannot connect to {host}:{port}: {short}")
        raise Timeout(f"no termite node answered at {host}:{port} within {timeout} s (is it running, with the same cluster key?)")
    return ref
