"""Flow control: a fast sender runs at its remote receiver's pace instead of filling memory.

Two bounds, each of which holds back a process that sends across them
(``Kernel.hold``: it finishes its current step, since a send never blocks or
fails, and does not run again until the bound clears or the peer is lost):

- **A busy peer** (Erlang's distribution buffer busy limit): the bytes sent
  to a node and not yet read by it.  The reader acknowledges what it has
  read (ACK, each ``_ACK_EVERY`` bytes); above ``buffer_limit`` unread bytes
  (1 MB by default) the peer is busy for every process sending to it, until
  it has read down to half that.  This bounds what waits in the sockets when
  a node reads slowly (a stalled node, a slow network).
- **A busy process**: a node reads its peers as fast as they send, so a
  process that falls behind would see its mailbox grow without end (about
  300 bytes a message).  When a message from a peer leaves a local process
  with more than ``mailbox_limit`` messages, that peer is told BUSY(pid),
  once, and its processes that send to ``pid`` wait until the mailbox is
  read down to half the limit (UNBUSY).

Local sends never wait, as in Erlang; what a held sender sent before it was
held still arrives, in order.  A process that sends without ever awaiting
anything cannot be held (nothing can run meanwhile anyway).  Both sides
count bytes per session: a down or a new session starts them again.
"""

from __future__ import annotations

from termite._core.ids import NodeRef, Pid
from termite._core.kernel import current_task
from termite._core.process import ProcessTable
from termite._net.frames import FrameKinds, is_count, is_pid

try:  # wrote() and got() without a Python frame per frame sent or read (None: not built)
    from termite._net._fastcodec import Counter as _Counter
except ImportError:
    _Counter = None

__all__ = ["FlowControl", "BUSY", "UNBUSY", "ACK", "DEFAULT_MAILBOX_LIMIT", "DEFAULT_BUFFER_LIMIT"]

BUSY, UNBUSY, ACK = 30, 31, 32

#: Messages a process may have waiting before remote senders to it are held back.
DEFAULT_MAILBOX_LIMIT = 20_000
#: Bytes sent to a node and not yet read by it before its senders are held back (Erlang's default).
DEFAULT_BUFFER_LIMIT = 1024 * 1024
_ACK_EVERY = 64 * 1024  # bytes read from a peer between two ACKs
_DRAIN_CHECK = 0.01  # seconds between looks at busy mailboxes: they have limit/2 to read meanwhile


class _PeerFlow:
    """Bytes sent to a peer and acknowledged by it; bytes read from it and acknowledged to it."""

    __slots__ = ("node", "names", "sent", "acked", "read", "read_acked")

    def __init__(self, node: NodeRef):
        self.node, self.names = node, []
        self.sent = self.acked = self.read = self.read_acked = 0


class FlowControl:
    def __init__(self, table: ProcessTable, kinds: FrameKinds, post,
                 mailbox_limit: int = DEFAULT_MAILBOX_LIMIT, buffer_limit: int = DEFAULT_BUFFER_LIMIT):
        if mailbox_limit.__class__ is not int or mailbox_limit < 2:
            raise ValueError(f"mailbox_limit is a number of messages, at least 2, not {mailbox_limit!r}")
        if buffer_limit.__class__ is not int or buffer_limit < 2 * _ACK_EVERY:
            raise ValueError(f"buffer_limit is a number of bytes, at least {2 * _ACK_EVERY}, not {buffer_limit!r}")
        self.table, self.kernel, self.post = table, table.kernel, post
        self.mailbox_limit, self.buffer_limit = mailbox_limit, buffer_limit
        # Busy processes, here: pid -> (process, peers told); there: pids that said so
        self.told: dict[Pid, tuple[object, set[NodeRef]]] = {}
        self._told_ids: dict[int, set[int]] = {}  # id(process) -> ids of the peers told: checked per message
        self.pids: dict[Pid, None] = {}
        # Busy peers: the byte counts of each peer's session, found by the NodeRef object's id on
        # every frame (a NodeRef hashes in Python: too slow for that)
        self._flows: dict[int, _PeerFlow] = {}
        self.peers: dict[NodeRef, None] = {}  # those with more than buffer_limit unread
        self._checking = None
        # wrote(node, size) and got(peer, size), called per frame: in C (_fastcodec.Counter) the common
        # case, which leaves the rest to _wrote and _got; in Python those two.
        self.wrote, self.got = self._wrote, self._got
        if _Counter is not None:
            self.wrote = _Counter(self._flows, _PeerFlow, "sent", "acked", buffer_limit + 1, self._wrote)
            self.got = _Counter(self._flows, _PeerFlow, "read", "read_acked", _ACK_EVERY, self._got)
        kinds.register(BUSY, "BUSY", (is_pid,), self._on_busy)
        kinds.register(UNBUSY, "UNBUSY", (is_pid,), self._on_unbusy)
        kinds.register(ACK, "ACK", (is_count,), self._on_ack)

    # -- the sender's side ------------------------------------------------------------

    def sending(self, pid: Pid) -> None:
        """The running process sends to ``pid``: hold it back if ``pid`` or its node is busy."""
        task = current_task()
        if task is None or task.held is not None:
            return  # held already: its next step waits anyway (a loop of sends costs no more)
        if pid in self.pids:
            self.kernel.hold(pid)
        elif pid.node in self.peers:
            self.kernel.hold(pid.node)

    def _flow(self, node: NodeRef) -> _PeerFlow:
        """The counts of ``node``'s session (the slow path: this NodeRef object not seen before)."""
        flow = next((f for f in self._flows.values() if f.node == node), None)
        if flow is None:
            flow = _PeerFlow(node)
        self._flows[id(node)] = flow  # the same counts for every object naming that node
        flow.names.append(node)  # held, so that its id stays its own
        return flow

    def _wrote(self, node: NodeRef, size: int) -> None:
        """``size`` bytes went to ``node``'s socket (``wrote``)."""
        flow = self._flows.get(id(node))
        if flow is None:
            if node.incarnation is None:
                return  # an address not yet met: no session to count in
            flow = self._flow(node)
        flow.sent += size
        if flow.sent - flow.acked > self.buffer_limit:
            self.peers[flow.node] = None

    def _on_ack(self, peer: NodeRef, frame) -> None:
        flow = self._flows.get(id(peer)) or self._flow(peer)
        flow.acked = frame[1]
        if flow.node in self.peers and flow.sent - flow.acked <= self.buffer_limit // 2:
            del self.peers[flow.node]
            self.kernel.release(flow.node)

    def _on_busy(self, peer: NodeRef, frame) -> None:
        self.pids[frame[1]] = None

    def _on_unbusy(self, peer: NodeRef, frame) -> None:
        if self.pids.pop(frame[1], 0) is None:
            self.kernel.release(frame[1])

    # -- the reader's side --------------------------------------------------------------

    def _got(self, peer: NodeRef, size: int) -> None:
        """``size`` bytes were read from ``peer``: acknowledge them now and then (``got``)."""
        flow = self._flows.get(id(peer)) or self._flow(peer)
        flow.read += size
        if flow.read - flow.read_acked >= _ACK_EVERY:
            flow.read_acked = flow.read
            self.post(peer, (ACK, flow.read))

    def full(self, proc, peer: NodeRef) -> None:
        """``proc``'s mailbox passed the limit with a message from ``peer``: tell it, once."""
        told = self._told_ids.get(id(proc))  # each message past the limit asks: no Python hashing
        if told is not None and id(peer) in told:
            return
        self._told_ids.setdefault(id(proc), set()).add(id(peer))  # `told` holds both: their ids stay theirs
        entry = self.told.get(proc.pid)
        if entry is None:
            entry = self.told[proc.pid] = (proc, set())
            if self._checking is None:
                self._checking = self.kernel.loop.call_later(_DRAIN_CHECK, self._check)
        if peer not in entry[1]:
            entry[1].add(peer)
            self.post(peer, (BUSY, proc.pid))

    def _check(self) -> None:
        """Tell the peers of each busy process that has read down to half the limit (or ended)."""
        self._checking = None
        low = self.mailbox_limit // 2
        for pid, (proc, peers) in list(self.told.items()):
            box = proc.mailbox
            if box is None or len(box) <= low or self.table.resolve(pid) is not proc:
                del self.told[pid]
                self._told_ids.pop(id(proc), None)
                for peer in peers:
                    self.post(peer, (UNBUSY, pid))
        if self.told:
            self._checking = self.kernel.loop.call_later(_DRAIN_CHECK, self._check)
        self.kernel.kick()  # the UNBUSYs go out with the turn's flush

    # -- what it looks like, and sessions -------------------------------------------------

    def busy_here(self) -> dict[Pid, int]:
        """Local processes whose remote senders are held back: pid -> messages in its mailbox."""
        return {pid: len(proc.mailbox or ()) for pid, (proc, _) in self.told.items()}

    def busy_peers(self) -> dict[NodeRef, int]:
        """Peers whose senders here are held back: node -> bytes sent and not yet read."""
        flows = {flow.node: flow for flow in self._flows.values()}
        return {node: flows[node].sent - flows[node].acked for node in self.peers if node in flows}

    def traffic(self) -> dict[NodeRef, tuple[int, int]]:
        """Bytes sent to and read from each peer in its session: changed by any frame either way."""
        return {flow.node: (flow.sent, flow.read) for flow in self._flows.values()}

    def holds(self, peer: NodeRef) -> bool:
        """Whether flow control waits on ``peer``: senders held back, or its senders told to wait."""
        if peer in self.peers or any(pid.node == peer for pid in self.pids):
            return True
        return any(peer in told for _, told in self.told.values())

    def new_session(self, peer: NodeRef) -> None:
        """A session with ``peer`` ended or began: count afresh, and let its senders go on."""
        for key, flow in list(self._flows.items()):
            if flow.node == peer:
                del self._flows[key]
        if self.peers.pop(peer, 0) is None:
            self.kernel.release(peer)
        for pid in [pid for pid in self.pids if pid.node == peer]:
            del self.pids[pid]
            self.kernel.release(pid)
        for proc, peers in self.told.values():
            peers.discard(peer)
            self._told_ids.get(id(proc), set()).discard(id(peer))
