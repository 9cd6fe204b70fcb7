"""Node-pair sessions: one at a time between two nodes, and a down seen on both sides.

Two nodes talk over two ZeroMQ connections, one each way (this node's DEALER
to the peer's ROUTER, and back).  A *session* spans both: it begins when the
two have heard each other and ends with a node-down, which both sides must
see, in the same place of the stream of signals, as Erlang's distribution
promises.

Each node counts, per peer, the downs it has seen: its *epoch* with that
peer.  The epoch is part of the routing id of the DEALER a node opens to the
peer (termite._net.admission), so every frame says in which epoch it was
sent, at no cost per message.  When a node hears a peer:

- in the same epoch: the session goes on (or begins: the peer is *up*);
- in a lower epoch: the frame belongs to a session this node has ended; it is
  dropped, and the peer is told by a connection in the current epoch;
- in a higher epoch: the peer has seen a down this node has not; this node
  now runs its own node-down handling for that peer (links and monitors
  fire, ``NodeDown``), before anything of the new session is handed on, and
  then the new session begins (``NodeUp``).

A node declares a peer down itself when the connection to it is lost (its
DEALER is disconnected: the TCP connection closed, or ZMTP heartbeats, which
libzmq answers without the GIL, went unanswered), or when a connection it
opened is not established in time.  A node merely busy (a long C call holding
the GIL) still answers ZMTP heartbeats: it is *unresponsive*, not down.

A session with nothing in flight and nothing that depends on it may be
*suspended* (the transport's idle close): both sides close their connections
by agreement, and the session, its epoch and its place in ``nodes()`` stay.
The next frame either way *resumes* it: a new connection in the same epoch,
heard by the peer as the same session (no down, no ``NodeUp``).  A suspended
peer is not heartbeated; its loss is found when a frame next goes to it.

This module is the bookkeeping, without sockets: the transport asks it what a
frame's epoch means and tells it what happened to connections.
"""

from __future__ import annotations

from termite._core.ids import NodeRef

__all__ = ["Sessions", "CONNECTING", "UP", "ASKING", "SUSPENDED", "RESUMING"]

CONNECTING = "connecting"  # this node opened a connection; the peer has not been heard in this epoch
UP = "up"  # heard in this epoch: the session is on
ASKING = "asking"  # this node asked the peer to suspend the session, and holds what it sends meanwhile
SUSPENDED = "suspended"  # both sides closed their connections by agreement: the session goes on without
RESUMING = "resuming"  # this node reopened a suspended session: down if the connection is not made in time


class _Peer:
    __slots__ = ("status", "deadline", "report", "connected", "quiet_since", "activity")

    def __init__(self, status: str, deadline: float, report: bool):
        self.status = status
        self.deadline = deadline  # CONNECTING, RESUMING: down if not connected by then
        self.report = report  # a down must be reported: the peer was up, or frames were sent to it
        self.connected = False  # the connection's handshake succeeded
        self.quiet_since = 0.0  # the idle close: since when the traffic with the peer is ``activity``
        self.activity = None  # what the endpoint said of the traffic last (and, ASKING, when asking)


class Sessions:
    def __init__(self, connect_timeout: float):
        self.connect_timeout = connect_timeout
        self._epochs: dict[NodeRef, int] = {}  # peer -> the downs seen with it (absent: 0)
        self._peers: dict[NodeRef, _Peer] = {}  # peers not down

    # -- what the transport asks --------------------------------------------------------

    def epoch(self, peer: NodeRef) -> int:
        return self._epochs.get(peer, 0)

    def epoch_for_address(self, host: str, port: int) -> int:
        """The epoch to probe an address with: that of the node last known there."""
        return max((e for p, e in self._epochs.items() if p.host == host and p.port == port), default=0)

    def status(self, peer: NodeRef) -> str | None:
        entry = self._peers.get(peer)
        return None if entry is None else entry.status

    def peers(self) -> list[NodeRef]:
        """Peers not down (up, or being connected to)."""
        return list(self._peers)

    def listed(self) -> list[NodeRef]:
        """Peers a node lists (``nodes()``): those not down, but for a connection opened only to be
        heard (to tell a peer its session ended, or to reach one after a down): that peer stays down
        until it answers, and is not reported if it never does."""
        return [peer for peer, entry in self._peers.items() if entry.report or entry.status != CONNECTING]

    def ended(self, peer: NodeRef) -> bool:
        """A session with ``peer`` ended and no other has begun since."""
        return peer not in self._peers and self._epochs.get(peer, 0) > 0

    def up(self) -> list[NodeRef]:
        return [peer for peer, entry in self._peers.items() if entry.status == UP]

    def entry(self, peer: NodeRef) -> _Peer | None:
        """The state of the session with ``peer`` (the idle close reads and writes its fields)."""
        return self._peers.get(peer)

    def entries(self) -> list[tuple[NodeRef, _Peer]]:
        return list(self._peers.items())

    def overdue(self, now: float) -> list[NodeRef]:
        """Peers whose connection was not established in time."""
        return [p for p, e in self._peers.items()
                if (e.status == CONNECTING or e.status == RESUMING) and not e.connected and now > e.deadline]

    # -- what happened -----------------------------------------------------------------

    def opening(self, peer: NodeRef, now: float, by_sender: bool) -> None:
        """This node opens a connection to ``peer`` (to send, if ``by_sender``; else only to be heard)."""
        entry = self._peers.get(peer)
        if entry is None:
            self._peers[peer] = _Peer(CONNECTING, now + self.connect_timeout, by_sender)
        elif by_sender:
            entry.report = True

    def sending(self, peer: NodeRef) -> None:
        """Frames go to ``peer`` on a connection already open: if it was opened only to be heard (a
        peer told its session ended, a node reached), its down must now be reported all the same."""
        entry = self._peers.get(peer)
        if entry is not None and not entry.report:
            entry.report = True

    def connected(self, peer: NodeRef) -> None:
        entry = self._peers.get(peer)
        if entry is not None:
            entry.connected = True
            if entry.status == RESUMING:  # the peer's node admitted the connection: the session is on again
                entry.status = UP

    def set_status(self, peer: NodeRef, status: str, now: float) -> None:
        """The idle close moves a session between UP, ASKING and SUSPENDED (the same epoch throughout)."""
        entry = self._peers[peer]
        entry.status = status
        entry.quiet_since = now

    def resuming(self, peer: NodeRef, now: float) -> None:
        """This node reopens the suspended session with ``peer``: down if not connected in time."""
        entry = self._peers[peer]
        entry.status, entry.connected, entry.deadline, entry.quiet_since = RESUMING, False, now + self.connect_timeout, now

    def heard(self, peer: NodeRef, epoch: int) -> tuple[bool, bool, bool]:
        """The first frame from ``peer`` on a connection of ``epoch``: (accept, down, newly up).

        accept is False for a frame of an ended session: drop it.  down is
        True when the peer has ended a session this node still had: run its
        node-down before handing anything on.  newly up: the session begins
        (``NodeUp``), with this node's next connection in the peer's epoch.
        """
        mine = self._epochs.get(peer, 0)
        if epoch < mine:
            return False, False, False
        entry = self._peers.get(peer)
        down = epoch > mine and entry is not None and (entry.status != CONNECTING or entry.report)
        # A session suspended, being suspended or resumed is on: hearing it in its epoch begins nothing.
        newly_up = entry is None or entry.status == CONNECTING or epoch > mine
        if epoch > mine:
            self._epochs[peer] = epoch
        if newly_up:
            self._peers[peer] = entry = _Peer(UP, 0.0, True)
        entry.connected = True
        return True, down, newly_up

    def lost(self, peer: NodeRef, *, count: bool = True) -> bool:
        """``peer`` is down (its connection lost, or a higher epoch heard); True if that must be reported.

        ``count``: a down this node saw first, so its epoch with the peer goes up
        (else the caller sets the peer's higher epoch through :meth:`heard`).
        """
        entry = self._peers.pop(peer, None)
        if entry is None:
            return False
        if count:
            self._epochs[peer] = self._epochs.get(peer, 0) + 1
        return entry.report
