"""The DEALERs a node opens to its peers: one per peer, in the epoch of its session.

A DEALER to a peer (termite._net.sessions) has this node's identity and its
epoch with the peer as routing id, runs ZMTP heartbeats (answered by the
peer's libzmq without the GIL), never reconnects (a lost connection ends the
session: it must not resume with frames missing), and has a monitor, which
the transport's I/O thread reads to learn that the connection was made or
lost.  A *probe* is a DEALER to an address whose node is not known yet (a
HELLO): outside any session, it may reconnect.  The caller holds the
transport's lock.
"""

from __future__ import annotations

import itertools

import zmq
from zmq.utils.monitor import recv_monitor_message

from termite._core.ids import NodeRef
from termite._net.admission import curve_client, identity_of
from termite._net.keys import ClusterKeys

__all__ = ["Connections", "Monitors", "MONITORED"]

#: What a DEALER's monitor reports: the connection made, or lost (CLOSED: refused, as it never reconnects).
MONITORED = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED | zmq.EVENT_CLOSED | zmq.EVENT_MONITOR_STOPPED
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)


class Connections:
    def __init__(self, ctx: zmq.Context, ref: NodeRef, keys: ClusterKeys | None, heartbeat_interval: float,
                 heartbeat_timeout: float, client: bool = False):
        self.ctx, self.ref, self.keys = ctx, ref, keys
        self.client = client  # this node is a client: its routing ids say so (termite._net.admission)
        self.heartbeat_ms = (int(heartbeat_interval * 1000), int(heartbeat_timeout * 1000))
        self.dealers: dict[tuple[str, int], zmq.Socket] = {}  # to peers, in the current epoch with each
        self.owners: dict[tuple[str, int], tuple[NodeRef, int]] = {}  # a DEALER's peer and epoch
        self.probes: dict[tuple[str, int], zmq.Socket] = {}  # to addresses whose node is not known yet
        self.new_monitors: list = []  # (monitor socket, peer, DEALER), for the I/O thread to watch
        self._serials = itertools.count()

    def current(self, peer: NodeRef, epoch: int) -> zmq.Socket | None:
        """The DEALER to ``peer`` in ``epoch``, if open; one of an ended epoch or another incarnation is closed."""
        key = (peer.host, peer.port)
        sock = self.dealers.get(key)
        if sock is not None and self.owners[key] != (peer, epoch):
            self.close(key)
            sock = None
        return sock

    def open(self, peer: NodeRef, epoch: int) -> zmq.Socket:
        """Open the DEALER to ``peer`` in ``epoch``, with its monitor (ZMQError if the address is refused)."""
        sock = self._socket(identity_of(self.ref, epoch, self.client))
        sock.reconnect_ivl = -1  # a lost connection ends the session: never resume it silently
        ivl, timeout = self.heartbeat_ms
        sock.heartbeat_ivl, sock.heartbeat_timeout, sock.heartbeat_ttl = ivl, timeout, timeout
        address = f"inproc://termite-monitor-{id(self)}-{next(self._serials)}"
        sock.monitor(address, MONITORED)
        monitor = self.ctx.socket(zmq.PAIR)
        monitor.linger = 0
        monitor.connect(address)  # before the connection is made: no event is missed
        try:
            self._connect(sock, peer)
        except zmq.ZMQError:
            monitor.close(linger=0)
            raise
        key = (peer.host, peer.port)
        self.dealers[key], self.owners[key] = sock, (peer, epoch)
        self.new_monitors.append((monitor, peer, sock))
        return sock

    def probe(self, address: NodeRef) -> zmq.Socket:
        """A DEALER to whichever node listens at ``address``, outside any session."""
        key = (address.host, address.port)
        sock = self.probes.get(key)
        if sock is None:
            sock = self._socket(identity_of(self.ref, None, self.client))
            self._connect(sock, address)
            self.probes[key] = sock
        return sock

    def close(self, key: tuple[str, int]) -> None:
        """Close the DEALER at ``key``; its monitor then stops, and the I/O thread closes that."""
        sock = self.dealers.pop(key, None)
        self.owners.pop(key, None)
        if sock is not None:
            sock.close(linger=0)

    def close_probe(self, key: tuple[str, int]) -> None:
        sock = self.probes.pop(key, None)
        if sock is not None:
            sock.close(linger=0)

    def close_all(self) -> None:
        for sock in [*self.dealers.values(), *self.probes.values()]:
            sock.close(linger=0)
        self.dealers.clear()
        self.owners.clear()
        self.probes.clear()
        for monitor, _, _ in self.new_monitors:  # made after the I/O thread ended
            monitor.close(linger=0)
        self.new_monitors.clear()

    def _socket(self, identity: bytes) -> zmq.Socket:
        sock = self.ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.routing_id = identity
        sock.sndhwm = 0  # never block or drop on our side; the connection's heartbeats bound the damage
        if self.keys is not None:
            curve_client(sock, self.keys)
        return sock

    @staticmethod
    def _connect(sock: zmq.Socket, peer: NodeRef) -> None:
        try:
            sock.connect(f"tcp://{peer.host}:{peer.port}")
        except zmq.ZMQError:
            sock.close(linger=0)  # an open socket would keep ctx.term() waiting forever
            raise


class Monitors:
    """The DEALERs' monitors, which only the transport's I/O thread touches."""

    def __init__(self, poller: zmq.Poller):
        self.poller = poller
        self.watched: dict[zmq.Socket, tuple[NodeRef, zmq.Socket]] = {}  # monitor -> (peer, DEALER)

    def add(self, new: list) -> None:
        for monitor, peer, sock in new:
            self.watched[monitor] = (peer, sock)
            self.poller.register(monitor, zmq.POLLIN)

    def read(self, ready) -> list[tuple[NodeRef, zmq.Socket, int]]:
        """The connection events of the monitors in ``ready``: (peer, DEALER, event); a stopped monitor is closed."""
        events = []
        for monitor in [m for m in self.watched if m in ready]:
            peer, sock = self.watched[monitor]
            while True:
                try:
                    event = recv_monitor_message(monitor, zmq.NOBLOCK)["event"]
                except zmq.Again:
                    break
                if event == zmq.EVENT_MONITOR_STOPPED:
                    self.poller.unregister(monitor)
                    monitor.close(linger=0)
                    del self.watched[monitor]
                    break
                events.append((peer, sock, event))
        return events

    def close(self) -> None:
        for monitor in self.watched:
            monitor.close(linger=0)
        self.watched.clear()
