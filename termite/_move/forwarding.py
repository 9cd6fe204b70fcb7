"""Messages to processes that migrate: numbered, passed on, and put back in order.

Messages to a process that has migrated are numbered (SEQ frames), so each
sender's messages reach it in the order they were sent, whatever path each
took (termite._move.ordering).  A node that passed a message on is not the
one that tells its sender: the process's host, receiving a message that came
the long way, tells its origin where it is (LOCATED, with the number of
moves, so older news never overrides newer), and later ones go straight
there.  A node that learns a process moves numbers its own messages to it
from then on and says so through the process's home (SWITCHED).

:class:`Forwarding` is the distribution endpoint's
:class:`~termite._net.endpoint.MigrantRouter` and the process table's
``send_to_migrant``; termite._move.migration tells it when a process leaves,
arrives and ends.
"""

from __future__ import annotations

from termite._core.ids import NodeRef, Pid
from termite._core.mailbox import deliver
from termite._core.process import DEAD, Down, Process, ProcessTable
from termite._net.codec import encode
from termite._net.endpoint import Endpoint
from termite._net.frames import SEND, anything, is_count, is_node, is_pid
from termite._move.ordering import DIRECT, RELAYED, SWITCH, Order

__all__ = ["Forwarding", "SEQ", "SWITCHED", "LOCATED"]

SEQ, SWITCHED, LOCATED = 21, 22, 23

#: How many ended migrants a node remembers, so late news of one does not bring it back.
_REMEMBER_GONE = 4096


def _seq_passes(frame) -> bool:
    return (
        len(frame) == 6
        and frame[1].__class__ is Pid
        and (frame[3] is None or is_node(frame[3]))
        and frame[4] in (DIRECT, RELAYED, SWITCH)
        and frame[5].__class__ is int
        and frame[5] > 0
    )


class Forwarding:
    def __init__(self, table: ProcessTable, endpoint: Endpoint):
        self.table = table
        self.endpoint = endpoint
        self.numbered: dict[Pid, int] = {}  # pid -> how many messages this node has sent it
        self.relayed: dict[Pid, dict[NodeRef, int]] = {}  # at a migrant's home: the same, for other nodes' plain ones
        self.gens: dict[Pid, int] = {}  # pid -> the moves behind its entry in table.moved
        self.holding: set[Process] = set()  # migrants here with messages held back
        self.gone: dict[Pid, None] = {}  # the last migrants that ended, oldest first
        self.in_transit: dict[Pid, list] = {}  # a process leaving here: the numbered frames that came meanwhile
        kinds = endpoint.kinds
        # to pid, message, origin node (None: the peer it came from), via (DIRECT,
        # RELAYED or SWITCH), its number in its stream
        kinds.register(SEQ, "SEQ", (is_pid, anything, lambda o: o is None or is_node(o),
                                    lambda v: v in (DIRECT, RELAYED, SWITCH), lambda n: is_count(n) and n > 0),
                       self._on_seq, passes=_seq_passes)
        kinds.register(SWITCHED, "SWITCHED", (is_pid,), self._on_switched)  # the sender numbers its own messages to pid from now on
        kinds.register(LOCATED, "LOCATED", (is_pid, is_node, is_count), self._on_located)  # pid is on node, after that many moves
        endpoint.route_migrants(self)
        table.send_to_migrant = self.send_here

    # -- sending: numbered from here --------------------------------------------------

    def send_here(self, proc: Process, msg) -> None:
        """A local process sends to a migrant that lives here."""
        pid, here = proc.pid, self.table.ref
        n = self.numbered.get(pid, 0) + 1
        self.numbered[pid] = n
        self._arrive(here, (SEQ, pid, msg, here, DIRECT, n), proc)

    def send_numbered(self, pid: Pid, msg) -> None:
        """A local process sends to a migrant that lives elsewhere."""
        proc = self.table.resolve(pid)
        if proc is not None:
            return self.send_here(proc, msg)
        n = self.numbered[pid] + 1
        data = encode((SEQ, pid, msg, None, DIRECT, n))  # may raise: then the number is not used
        self.numbered[pid] = n
        self.endpoint.post_encoded(self.table.moved.get(pid, pid.node), data)

    def relay(self, peer: NodeRef, pid: Pid, msg, switch: bool = False) -> None:
        """A plain message (or a SWITCHED) for a migrant, from a node that does not number its own."""
        table = self.table
        if pid.node != table.ref:  # not its home: no stream to number it in (a node that knows sends numbered)
            proc = table.resolve(pid)
            if proc is not None and not switch:
                deliver(proc, msg)
            elif proc is None and pid in table.moved and not switch:
                self.endpoint.post(table.moved[pid], (SEND, pid, msg))
            return
        counts = self.relayed.get(pid)
        if counts is None:
            counts = self.relayed[pid] = {}
        n = counts.get(peer, 0) + 1
        counts[peer] = n
        self._arrive(peer, (SEQ, pid, msg, peer, SWITCH if switch else RELAYED, n))

    def start_numbering(self, pid: Pid) -> None:
        """This node learns that ``pid`` moves: from now on it numbers its messages to it."""
        if pid not in self.numbered:
            self.numbered[pid] = 0
            if pid.node != self.table.ref:
                self.endpoint.post(pid.node, (SWITCHED, pid))

    # -- receiving: put back in order where it is, or passed on -------------------------

    def _on_seq(self, peer: NodeRef, frame) -> None:
        if frame[3] is None:  # it comes from where it was sent: name the origin, for the next hops
            frame = (SEQ, frame[1], frame[2], peer, frame[4], frame[5])
        self._arrive(peer, frame)

    def _arrive(self, peer: NodeRef, frame: tuple, proc: Process | None = None) -> None:
        """A numbered message: take it in, keep it for the move in progress, or pass it on."""
        pid = frame[1]
        if proc is None:
            proc = self.table.resolve(pid)
        if proc is not None:
            waiting = self.in_transit.get(pid)
            if waiting is not None:
                waiting.append((peer, frame))
            else:
                self.accept(proc, peer, frame)
            return
        to = self.table.moved.get(pid)
        if to is not None:
            self.endpoint.post(to, frame)
        # else it has ended: the message is lost, as any to an ended process

    def accept(self, proc: Process, peer: NodeRef, frame: tuple) -> None:
        """Take numbered message ``frame`` into ``proc``: delivered once every earlier one of its stream is."""
        _, pid, msg, origin, via, n = frame
        order = proc.order
        if order is None:  # numbered by a node that expects it to move: it soon will
            order = proc.order = Order()
        for ready in order.take(pid.node, origin, via, n, msg):
            if ready.__class__ is Down and self.endpoint.down_fired(ready.ref):
                continue  # it fired here already (MONITOR_LOST)
            deliver(proc, ready)
        if order.held:
            self.holding.add(proc)
        else:
            self.holding.discard(proc)
        here = self.table.ref
        if origin != peer and origin != here and origin not in order.told:
            # It came the long way: its origin should send straight here.
            order.told.add(origin)
            order.informed.add(origin)
            self.endpoint.post(origin, (LOCATED, pid, here, order.gen))
        home = pid.node
        if via != DIRECT and home != peer and home != here and home not in order.told:
            order.told.add(home)  # the home relays for others: it too should send straight here
            self.endpoint.post(home, (LOCATED, pid, here, order.gen))

    def _on_switched(self, peer: NodeRef, frame) -> None:
        pid = frame[1]
        proc = self.table.resolve(pid)
        if pid in self.table.moved or (proc is not None and proc.order is not None):
            self.relay(peer, pid, None, switch=True)

    def _on_located(self, peer: NodeRef, frame) -> None:
        _, pid, node, gen = frame
        table = self.table
        if pid in self.gone or table.resolve(pid) is not None or gen <= self.gens.get(pid, -1):
            return  # old news
        table.moved[pid] = node
        self.gens[pid] = gen
        self.start_numbering(pid)

    # -- a migrant ended; a node lost ------------------------------------------------------

    def forget(self, pid: Pid) -> None:
        """``pid`` has ended: this node keeps no entry for it."""
        self.table.moved.pop(pid, None)
        self.gens.pop(pid, None)
        self.numbered.pop(pid, None)
        self.relayed.pop(pid, None)
        self.gone[pid] = None
        if len(self.gone) > _REMEMBER_GONE:
            del self.gone[next(iter(self.gone))]

    def release_held(self, peer: NodeRef) -> None:
        """Messages passing through lost node ``peer`` are lost: stop waiting for them."""
        lost = (peer.host, peer.port)
        for proc in self.table.guests.values():
            if proc.order is not None and (proc.pid.node.host, proc.pid.node.port) == lost:
                proc.order.home_lost = True  # its relayed streams cannot end now
                self.holding.add(proc)
        for proc in self.holding:
            if proc.waiting is not DEAD and proc.order is not None:
                for msg in proc.order.release():
                    deliver(proc, msg)
        self.holding.clear()
