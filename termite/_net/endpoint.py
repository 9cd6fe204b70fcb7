"""The distribution endpoint: a node's processes and the processes of other nodes.

The endpoint is the process table's ``remote``: local operations on a pid of
another node (send, link, monitor, exit, spawn) become control frames to
that node (termite._net.frames), and frames from other nodes are checked and
applied on the kernel's thread, in the order each peer sent them.

Its interface to higher layers is small:

- ``post(node, frame)`` / ``post_encoded(node, data)``: a frame to a node, sent
  with the others of this kernel turn (many to one node go as one batch);
- ``kinds.register(kind, name, checks, handler, ...)``: a frame kind of a
  higher layer, in the same table as the endpoint's own;
- ``on_peer_down(fn)``: ``fn(peer)`` after a lost node's links, monitors and
  node watchers have fired;
- ``holds_sessions(fn)``: ``fn(peer)`` says whether a higher layer's state
  (a handoff) needs the session with ``peer``: while anything does, the
  transport's idle close does not suspend it (termite._net.sessions);
- ``watches``: links and monitors to processes of other nodes, by node
  (termite._net.watches), which a migration moves;
- ``route_migrants(router)``: messages to processes that migrate go through a
  :class:`MigrantRouter`, which numbers them (termite._move.migration).

When a peer is lost (heartbeats stop), every link and monitor from a local
process to a process of that node fires with reason ``"noconnection"``, and
``monitor_node`` watchers get ``NodeDown``.  Those of a process that migrated
may be held on the peer under the node it left: the peer is told in the next
session which ones the down cut (SEVERED), and fires those it still holds.
The monitors a migrant holds on processes of a third node stay with the node
where it made them (``carried`` where it is now): that node's loss of the
third node tells it (MONITOR_LOST), and its ``Down`` comes once, unless it
came already or the migrant undid the monitor.

A frame holding an object this node cannot unpickle (a function or class of
a module it cannot import) is not dropped: whoever waits is told why.  A
SPAWN fails, and the spawner's link or monitor fires with an
``UnreadableMessage`` crash as reason; a call (a SEND of ``(pid, tag, ...)``)
is answered ``Refused(tag, pid, reason)``, which ``call`` raises; any other
message is delivered with an ``Unreadable`` in place of what could not be
read (calling it raises the error).
"""

from __future__ import annotations

import logging
from typing import NamedTuple, Protocol

from termite._core.ids import NodeRef, Pid, Tag, make_tag
from termite._core.errors import Crash, DeadProcess, Timeout, UnreadableMessage
from termite._core.links import add_link, signal_exit
from termite._core.mailbox import deliver, receive
from termite._core.process import Down, ProcessTable, Refused, current
from termite._core.spawn import spawn_in
from termite._net.codec import (
    MAX_DECODED, MalformedMessage, UnserializableMessage, decode_frame, decode_frame_lenient, encode, encode_batch,
    first_unreadable, over_budget, take_sends, OverBudget,
)
from termite._net.frames import (
    BUILT_IN_ADDRESSEES, BUILT_IN_FIELDS, BUILT_IN_PASSES, DEMONITOR, EXIT, HELLO, LINK, MONITOR, MONITOR_LOST, NSEND, SEND,
    SEVERED, SPAWN, UNLINK, WHEREIS, FrameKinds, is_name,
)
from termite._net.flow import DEFAULT_BUFFER_LIMIT, DEFAULT_MAILBOX_LIMIT, FlowControl
from termite._net.unborn import REMOTE_SERIAL_BASE, Unborn, spawn_serials
from termite._net.watches import Lost, Watches

try:  # send, post_encoded and flush, and the frames read, with no Python on the way (None: not built)
    from termite._net._fastcodec import Inbox as _NativeInbox, Outbox as _NativeOutbox
except ImportError:
    _NativeInbox = _NativeOutbox = None

#: SEVERED frames kept for one node until its next session, at most.
_SEVERED_HELD = 4096

__all__ = ["Endpoint", "MigrantRouter", "NodeUp", "NodeDown", "still_holds"]

log = logging.getLogger("termite.distribution")

#: Remote spawns that failed, remembered (this many, the latest) so that a
#: link or monitor that comes after the spawn fires with the reason.
_FAILED_SPAWNS = 1024

#: A batch is sent when it holds this many frames or bytes, else at the end of
#: the kernel's turn.  A single larger frame goes alone.
_BATCH_FRAMES = 256
_BATCH_BYTES = 256 * 1024


def still_holds(proc, ref: Tag) -> bool:
    """Whether ``proc`` has not undone monitor ``ref``: a carried entry can outlive a demonitor that went
    by ``table.monitored`` (its target had migrated here meanwhile)."""
    return bool(proc.watching) and ref in proc.watching


class NodeUp(NamedTuple):
    """A node monitored with ``monitor_node`` (or any, with ``None``) connected."""

    ref: Tag
    node: NodeRef


class NodeDown(NamedTuple):
    """A monitored node was lost: its heartbeats stopped."""

    ref: Tag
    node: NodeRef
    reason: str


class MigrantRouter(Protocol):
    """How messages to processes that migrate travel (termite._move.migration implements it)."""

    #: pid -> how many messages this node has sent it: the pids whose messages from here are numbered
    numbered: dict

    def send_numbered(self, pid: Pid, msg) -> None:
        """A local process sends ``msg`` to ``pid``, one of ``numbered``."""

    def relay(self, peer: NodeRef, pid: Pid, msg) -> None:
        """A plain SEND from ``peer`` for ``pid``, which migrated (here or from here)."""


class _Outbox:
    """The frames of a kernel turn, held until it ends: the first alone (a turn of a ping-pong
    sends one), the others by the endpoint's batches (``batch(node, data)``, sent by
    ``flush_batches()``).  termite._net._fastcodec.Outbox is its C twin, step for step.

    - ``send(pid, msg)``: a message to a process of another node, encoded as ``(kind, pid,
      msg)``, unless flow control holds anything back (``pids`` or ``peers`` not empty) or
      ``pid`` is ``numbered`` (it migrated): then ``slow_send(pid, msg)`` does it all.
    - ``post(node, data)``: an encoded frame to ``node``.  The running process (``kernel.task``)
      notes ``node`` in its ``sent_to`` set (a migration fences those nodes); then the frame is
      held alone if it is the turn's first and no batch waits (and it is shorter than
      ``batch_bytes``), else the one held and this one go to ``batch``.
    - ``flush()``: the end of the turn: the frame held alone goes by ``send_frame(node, data)``,
      then ``wrote(node, len(data))``; then ``flush_batches()`` if ``out`` (the batches) holds any.
    """

    __slots__ = ("kernel", "pids", "peers", "numbered", "kind", "send_frame", "wrote", "slow_send", "batch",
                 "flush_batches", "out", "batch_bytes", "one")

    def __init__(self, kernel, pids: dict, peers: dict, numbered: dict, kind: int, send_frame, wrote, slow_send,
                 batch, flush_batches, out: dict, batch_bytes: int):
        self.kernel, self.pids, self.peers, self.numbered, self.kind = kernel, pids, peers, numbered, kind
        self.send_frame, self.wrote, self.slow_send = send_frame, wrote, slow_send
        self.batch, self.flush_batches, self.out, self.batch_bytes = batch, flush_batches, out, batch_bytes
        self.one: tuple[NodeRef, bytes] | None = None  # the turn's only frame so far

    def send(self, pid: Pid, msg) -> None:
        if self.pids or self.peers or (self.numbered and pid in self.numbered):
            return self.slow_send(pid, msg)
        self.post(pid.node, encode((self.kind, pid, msg)))

    def post(self, node: NodeRef, data: bytes) -> None:
        proc = self.kernel.task
        if proc is not None:  # a process's frame: if it migrates, its later ones must not overtake it
            sent_to = proc.sent_to
            if sent_to is None:
                proc.sent_to = {node}
            elif node not in sent_to:
                sent_to.add(node)
        one = self.one
        if one is None:
            if not self.out and len(data) < self.batch_bytes:
                self.one = (node, data)  # the first of the turn: no batch until a second comes
                return
        else:
            self.one = None
            self.batch(*one)
        self.batch(node, data)

    def flush(self) -> None:
        one = self.one
        if one is not None:
            self.one = None
            node, data = one
            self.send_frame(node, data)
            self.wrote(node, len(data))  # after the send: its reply may be on the way meanwhile
        if self.out:
            self.flush_batches()


class _Inbox:
    """The frames a peer sent, as the transport hands them on: ``inbox(peer, frames)``.
    termite._net._fastcodec.Inbox is its C twin, step for step.

    Each frame is counted (flow control's ``got``); then, unless processes migrated from here
    (``moved`` holds any, and their messages are passed on in order), its plain SENDs to
    processes of this node are delivered by ``take_sends`` (in C), and whatever that leaves,
    or the whole frame (taken is False), or its OverBudget, goes to ``apply(peer, data, taken)``.
    ``here`` is the NodeRef object this node's pids come with (the endpoint keeps it current).
    """

    __slots__ = ("here", "procs", "moved", "deliver", "down", "limit", "full", "max_decoded", "got", "apply")

    def __init__(self, here, procs, moved, deliver, down, limit, full, max_decoded, got, apply):
        self.here = here
        self.procs, self.moved = procs, moved
        self.deliver, self.down, self.limit, self.full = deliver, down, limit, full
        self.max_decoded = max_decoded
        self.got, self.apply = got, apply

    def __call__(self, peer: NodeRef, frames: list) -> None:
        got = self.got
        for data in frames:
            got(peer, len(data))
            if take_sends is None or self.moved:
                taken = False
            else:
                try:
                    taken = take_sends(data, self.here, self.procs, self.deliver, self.down, self.limit, self.full,
                                       peer, self.max_decoded)
                except OverBudget as exc:
                    taken = exc
                if taken is None:
                    continue
            self.apply(peer, data, taken)


class Endpoint:
    def __init__(self, table: ProcessTable, transport, mailbox_limit: int = DEFAULT_MAILBOX_LIMIT,
                 buffer_limit: int = DEFAULT_BUFFER_LIMIT, *, max_decoded: int | None = MAX_DECODED):
        self.table = table
        self.max_decoded = max_decoded  # what a frame may decode to, at most (codec's docstring)
        self.kernel = table.kernel
        self.transport = transport
        self.kinds = FrameKinds()
        self.watches = Watches()
        self.node_watchers: dict[Tag, tuple[Pid, NodeRef | None]] = {}  # ref -> (watcher, node or any)
        self.malformed = 0
        self._peer_down_hooks: list = []
        self._holders: list = []  # fn(peer) -> True while a higher layer needs the session with peer
        self.numbered: dict[Pid, int] = {}  # the migrant router's, read on every remote send
        self._router: MigrantRouter | None = None
        self._spawn_serials = spawn_serials(table.ref)
        self._unborn = Unborn(table.ref, self.kernel.loop, self._apply, self.kernel.kick)
        self._out: dict[tuple[str, int], tuple[NodeRef, list[bytes], list[int]]] = {}  # batches
        self._failed_spawns: dict[Pid, object] = {}  # pid -> why its spawn failed
        self._severed: dict[NodeRef, list[tuple]] = {}  # SEVERED frames for a node's next session
        # Monitors that processes which migrated here hold, made before they came: ref -> (target, watcher,
        # the node holding its watch).  Undone by a DEMONITOR to the target's node (demonitor, or the
        # process's end); the holder's loss hands the watch to this node (termite._move.migration).
        self.carried: dict[Tag, tuple[Pid, Pid, NodeRef]] = {}
        for kind, (name, checks) in BUILT_IN_FIELDS.items():
            self.kinds.register(kind, name, checks, getattr(self, "_on_" + name.lower()),
                                passes=BUILT_IN_PASSES.get(kind), addressee=BUILT_IN_ADDRESSEES.get(kind))
        self.flow = FlowControl(table, self.kinds, self.post, mailbox_limit, buffer_limit)
        # send(pid, msg), post_encoded(node, data) and flush(): the outbox's (see _Outbox), in C if
        # built, with this class's _send, _batch and _flush_batches for all but the common case.
        self._outbox = (_Outbox if _NativeOutbox is None else _NativeOutbox)(
            self.kernel, self.flow.pids, self.flow.peers, self.numbered, SEND, transport.send_frame, self.flow.wrote,
            self._send, self._batch, self._flush_batches, self._out, _BATCH_BYTES)
        self.send, self.post_encoded, self.flush = self._outbox.send, self._outbox.post, self._outbox.flush
        self._limit = mailbox_limit  # read per message delivered from another node
        # The transport reads on the kernel's thread: frames, sessions begun and
        # ended come here directly, in the order of the streams they end and begin.
        # The frames read: counted, plain SENDs delivered in C if built, the rest by _apply_frame.
        self._inbox = (_Inbox if _NativeInbox is None else _NativeInbox)(
            table.ref, table.procs, table.moved, deliver, Down, mailbox_limit, self.flow.full, max_decoded,
            self.flow.got, self._apply_frame)
        transport.on_frames = self._inbox
        transport.on_read_done = self.kernel.run_now
        transport.on_peer_down = self._peer_down
        transport.on_peer_up = self._peer_up
        transport.on_skipped = self.flow.got  # a frame too large to read was read all the same
        transport.traffic = self.flow.traffic  # the idle close: frames either way change it
        transport.holds = self.holds
        self.kernel.after_turn = self.flush
        table.remote = self

    # -- the interface of higher layers ---------------------------------------------

    def post(self, node: NodeRef, frame: tuple) -> None:
        """Send control frame ``frame`` to ``node`` (raises UnserializableMessage at once)."""
        self.post_encoded(node, encode(frame))

    def on_peer_down(self, fn) -> None:
        """Run ``fn(peer)`` when a peer is lost, after its links, monitors and node watchers fired."""
        self._peer_down_hooks.append(fn)

    def holds_sessions(self, fn) -> None:
        """While ``fn(peer)`` is true, the session with ``peer`` is not suspended when idle."""
        self._holders.append(fn)

    def holds(self, peer: NodeRef) -> bool:
        """Whether anything here depends on the session with ``peer``, so that it must stay open and
        heartbeated: links and monitors with its processes, ``monitor_node`` of that node (a call
        waiting on it holds one), flow control waiting on it, processes forwarded to it, or a
        higher layer's state.  ``monitor_node(None)`` (any node) holds none: it hears of a
        suspended node's loss when a frame next goes there."""
        if self.watches.involves(peer):
            return True
        for ref, (watcher, node) in list(self.node_watchers.items()):
            if node is not None and node.port == peer.port and node.host == peer.host:
                if self.table.resolve(watcher) is None:  # it ended without demonitor_node: it holds nothing
                    del self.node_watchers[ref]
                    continue
                return True
        if self.flow.holds(peer):
            return True
        moved = self.table.moved
        if moved and any(node == peer for node in moved.values()):
            return True
        return any(fn(peer) for fn in self._holders)

    def route_migrants(self, router: MigrantRouter) -> None:
        self._router = router
        self.numbered = self._outbox.numbered = router.numbered

    def route(self, pid: Pid) -> NodeRef:
        """Where to send for ``pid``: its node, or where it migrated to from here."""
        moved = self.table.moved
        return moved.get(pid, pid.node) if moved else pid.node

    @property
    def spawn_wait(self) -> float:
        """Seconds a frame for a process whose spawn request has not come waits for it."""
        return self._unborn.wait

    @spawn_wait.setter
    def spawn_wait(self, seconds: float) -> None:
        self._unborn.wait = seconds

    # -- out: what local processes do to remote pids --------------------------------

    # send(pid, msg): the outbox's (see __init__), which leaves to _send what it does not do itself.

    def _send(self, pid: Pid, msg) -> None:
        """``send``'s general path: senders held back by flow control, or a pid that migrated."""
        flow = self.flow
        if flow.pids or flow.peers:
            flow.sending(pid)  # a full mailbox or socket there: this sender waits before its next step
        if self.numbered and pid in self.numbered:
            return self._router.send_numbered(pid, msg)
        self.post_encoded(pid.node, encode((SEND, pid, msg)))

    def send_named(self, name: str, node: NodeRef, msg) -> None:
        """``msg`` to the process registered as ``name`` on ``node`` (Erlang's ``{Name, Node} ! Msg``)."""
        self.post_encoded(node, encode((NSEND, name, msg)))

    async def whereis(self, node: NodeRef, name: str, timeout: float | None) -> Pid | None:
        """Ask ``node`` who is registered there as ``name`` (from a process of this node)."""
        if not is_name(name):
            raise TypeError(f"a registered name is a non-empty str, not {name!r}")
        tag, watch = make_tag(), make_tag()
        me = current().pid
        self.node_watchers[watch] = (me, node)  # so that its loss answers too: never a wait for ever
        self.post(node, (WHEREIS, me, tag, name))

        def is_answer(m):
            return (m.__class__ is tuple and len(m) == 2 and m[0] == tag) or (m.__class__ is NodeDown and m.ref == watch)

        try:
            if timeout is None:  # receive refuses a default it could never use
                answer = await receive(is_answer)
            else:
                answer = await receive(is_answer, timeout=timeout, default=None)
        finally:
            self.node_watchers.pop(watch, None)
        while await receive(lambda m: m.__class__ in (NodeUp, NodeDown) and m.ref == watch, timeout=0, default=None):
            pass  # the node's news while it was asked is not the caller's
        if answer is None:
            raise Timeout(f"node {node} did not say within {timeout} s who is registered as {name!r} there")
        if answer.__class__ is NodeDown:
            raise DeadProcess((name, node), answer.reason)
        return answer[1]

    async def hello(self, address: NodeRef, timeout: float) -> NodeRef | None:
        """Ask whichever node listens at ``address`` for its reference."""
        tag = make_tag()
        self.post(address, (HELLO, current().pid, tag))
        _, ref = await receive((tag, NodeRef), timeout=timeout, default=(None, None))
        self.transport.forget_probe(address)  # its answer came by the session: 3 sockets a peer, not 4
        return ref

    def link(self, me: Pid, pid: Pid, directed: bool) -> None:
        node = self.route(pid)
        self.watches.add_link(node, me, pid)
        if not directed:
            proc = self.table.resolve(me)
            if proc is not None:
                add_link(proc, pid)
        self.post(node, (LINK, me, pid))

    def unlink(self, me: Pid, pid: Pid) -> None:
        self.watches.drop_link(me, pid)
        self.post(self.route(pid), (UNLINK, me, pid))

    def monitor(self, watcher: Pid, pid: Pid, ref: Tag) -> None:
        node = self.route(pid)
        self.watches.add_monitor(node, ref, watcher, pid)
        self.post(node, (MONITOR, watcher, pid, ref))

    def holds_monitor(self, ref: Tag) -> bool:
        """Whether monitor ``ref`` of another node's process is held here (not undone, not fired), or was
        brought here by a process that migrated holding it."""
        return self.watches.holds_monitor(ref) or ref in self.carried

    def demonitor(self, ref: Tag) -> bool:
        """Undo monitor ``ref`` of a process of another node; False if it is not held (its Down came)."""
        entry = self.watches.cancel_monitor(ref)
        if entry is not None:
            node, target = entry
            self.post(node, (DEMONITOR, target, ref))
            return True
        entry = self.carried.pop(ref, None)
        if entry is None:
            return False
        target, _, holder = entry
        self.watches.fired(ref)  # as cancel_monitor does: a Down still on its way is dropped when it comes
        # Brought by a migrant: the target's node undoes it, and the node holding its watch forgets that.
        node = self.route(target)
        if not self.table.is_local(target):
            self.post(node, (DEMONITOR, target, ref))
        elif (proc := self._local(target)) is not None:  # it watched a process of this node from afar
            self._unwatch(proc, ref)
        if holder != node and holder != self.table.ref:
            self.post(holder, (DEMONITOR, target, ref))
        return True

    def down_fired(self, ref: Tag) -> bool:
        """A ``Down`` for monitor ``ref`` came for a local process: its monitor is forgotten here, held
        or carried; True if it fired already, and this copy is to be dropped."""
        if self.carried:
            self.carried.pop(ref, None)
        return self.watches.drop_monitor(ref) is None and self.watches.settled(ref)

    def down(self, watcher: Pid, down: Down) -> None:
        """Monitored local process ``down.pid`` ended: ``down`` to its remote ``watcher``."""
        self.watches.drop_watcher(down.ref)
        self.send(watcher, down)

    def exit(self, sender: Pid, pid: Pid, reason) -> None:
        node = self.route(pid)
        self.watches.drop_link(sender, pid)
        try:
            frame = encode((EXIT, sender, pid, reason))
        except UnserializableMessage:
            frame = encode((EXIT, sender, pid, repr(reason)))
        self.post_encoded(node, frame)

    def spawn(self, fn, args, node: NodeRef, link_to: Pid | None = None, name: str | None = None) -> Pid:
        if node.incarnation is None:
            raise ValueError(f"spawn(node=...) needs a node reference from termite.connect() or nodes(), not {node!r}")
        pid = Pid(node, next(self._spawn_serials))
        frame = encode((SPAWN, pid, fn, tuple(args), link_to, name))  # may raise UnserializableMessage
        if link_to is not None:
            self.watches.add_link(node, link_to, pid)
            proc = self.table.resolve(link_to)
            if proc is not None:
                add_link(proc, pid)
        self.post_encoded(node, frame)
        return pid

    # -- batching: frames wait for the end of the kernel's turn -----------------------

    # post_encoded(node, data): the outbox's (see __init__); it holds a turn's first frame alone
    # and leaves every later one to _batch.

    def _batch(self, node: NodeRef, data: bytes) -> None:
        key = (node.host, node.port)
        entry = self._out.get(key)
        if entry is None:
            self._out[key] = entry = (node, [], [0])
        elif node.incarnation is not None and entry[0].incarnation is None:
            self._out[key] = entry = (node, entry[1], entry[2])  # an address becomes a node
        batch, size = entry[1], entry[2]
        batch.append(data)
        size[0] += len(data)
        if len(batch) >= _BATCH_FRAMES or size[0] >= _BATCH_BYTES:
            del self._out[key]
            self._send_batch(entry[0], batch)

    # flush(): the outbox's (see __init__), the kernel's after_turn; it sends the frame held alone
    # and leaves the batches to _flush_batches.

    def _flush_batches(self) -> None:
        """Send the batches of this turn: many frames to one node as one batch frame."""
        out = list(self._out.values())
        self._out.clear()  # the outbox holds this very dict
        for node, batch, _ in out:
            self._send_batch(node, batch)

    def _send_batch(self, node: NodeRef, batch: list[bytes]) -> None:
        data = batch[0] if len(batch) == 1 else encode_batch(batch)
        self.transport.send(node, [data])
        self.flow.wrote(node, len(data))

    # -- in: frames read on the kernel's thread; lost peers from the I/O thread ----------

    def _apply_frame(self, peer: NodeRef, data: bytes, taken) -> None:
        """Apply a frame read on the kernel's thread (the transport then runs a turn): what the inbox
        (_Inbox) did not deliver itself.  ``taken`` is False (all of it: read here, and whatever is
        wrong with it is said), the messages from the first it did not deliver on, or the OverBudget
        that stopped its reading.

        A frame may be a batch: its good messages are applied, and a frame
        with any bad one counts once in ``malformed``, with one log line.
        """
        table = self.table
        procs = table.procs
        max_decoded = self.max_decoded
        lenient, unreadable = False, None
        if taken is False:
            try:
                messages = decode_frame(data, max_decoded)
            except MalformedMessage as refused:
                messages, unreadable = refused.decoded, refused  # those before the bad one still count
                if not getattr(refused, "over_budget", False):
                    # Read again, with what fails to unpickle in place: who waits gets an answer.
                    lenient = True
                    try:
                        messages, unreadable = decode_frame_lenient(data, f"node {table.ref}", max_decoded), None
                    except MalformedMessage as exc:
                        messages, unreadable = exc.decoded, exc
        elif taken.__class__ is OverBudget:  # not read again: the limit is the point
            unreadable = over_budget(len(data), max_decoded, taken.decoded)
            messages = unreadable.decoded
        else:
            messages = taken
        problem = None
        for frame in messages:
            if lenient and first_unreadable(frame) is not None:
                try:
                    self._unreadable(peer, frame)
                except Exception as exc:  # noqa: BLE001 - one bad frame must not stop the others
                    problem = problem or f"it could not be applied: {type(exc).__name__}: {exc}"
                continue
            # In line, the common frame: a message for a process of this node
            # that never migrated.  _on_send is the same, for every other case.
            if frame.__class__ is tuple and len(frame) == 3 and frame[0] == SEND and not table.moved:
                pid = frame[1]
                if pid.__class__ is Pid and pid.node is self._inbox.here:
                    proc = procs.get(pid.serial)
                    msg = frame[2]
                    if proc is not None and proc.order is None and msg.__class__ is not Down:
                        deliver(proc, msg)
                        box = proc.mailbox
                        if box is not None and len(box) > self._limit:
                            self.flow.full(proc, peer)
                        continue
            try:
                self._apply(peer, frame)
            except MalformedMessage as exc:
                problem = problem or exc
            except Exception as exc:  # noqa: BLE001 - one bad frame must not stop the others
                problem = problem or f"it could not be applied: {type(exc).__name__}: {exc}"
                log.debug("the frame's failure", exc_info=True)
        problem = problem or unreadable
        if problem is not None:
            self.malformed += 1
            log.warning("dropped a frame from %s: %s", peer, problem)

    def _apply(self, peer: NodeRef, frame) -> None:
        kind = self.kinds.check(frame)
        moved = self.table.moved
        if moved and kind.addressee is not None:
            to = moved.get(frame[kind.addressee])
            if to is not None:  # it migrated from here: pass it on, in order
                if frame[0] == SEND:
                    if frame[2].__class__ is Down:  # a monitor it holds from here fired: no watch here now
                        self.watches.drop_monitor(frame[2].ref)
                    self._router.relay(peer, frame[1], frame[2])
                else:
                    self.post(to, frame)
                return
        kind.handler(peer, frame)

    def _local(self, pid: Pid) -> object | None:
        node = pid.node
        if node is not self._inbox.here:  # the NodeRef object decoded pids of this node last came with
            if node != self.table.ref:  # a guest, or of an earlier incarnation of this node (gone)
                return self.table.guests.get(pid) if self.table.guests else None
            self._inbox.here = node  # the codec gives the pids it decodes one NodeRef object per node
        return self.table.procs.get(pid.serial)

    # -- the built-in kinds ---------------------------------------------------------------

    def _on_send(self, peer: NodeRef, frame) -> None:
        _, pid, msg = frame
        proc = self._local(pid)
        if proc is not None:
            if msg.__class__ is Down and self.down_fired(msg.ref):
                return  # it fired already: its process was lost in a handoff, or its node (MONITOR_LOST)
            if proc.order is None:
                deliver(proc, msg)
                if proc.mailbox is not None and len(proc.mailbox) > self._limit:
                    self.flow.full(proc, peer)
            else:
                self._router.relay(peer, pid, msg)
        elif pid.serial >= REMOTE_SERIAL_BASE:
            self._unborn.hold(peer, frame, pid)

    def _on_link(self, peer: NodeRef, frame) -> None:
        _, sender, pid = frame
        proc = self._local(pid)
        if proc is None:
            if not self._unborn.hold(peer, frame, pid):
                self.post(sender.node, (EXIT, pid, sender, self._failed_spawns.get(pid, "noproc")))
        else:
            add_link(proc, sender)
            self.watches.add_link(self.route(sender), pid, sender)  # so sender's node's loss fires it here too

    def _on_unlink(self, peer: NodeRef, frame) -> None:
        _, sender, pid = frame
        proc = self._local(pid)
        if proc is None:
            self._unborn.hold(peer, frame, pid)
        else:
            if proc.links:
                proc.links.discard(sender)
            self.watches.drop_link(pid, sender)

    def _on_exit(self, peer: NodeRef, frame) -> None:
        _, sender, pid, reason = frame
        if self.watches.settled((pid, sender)):
            return  # the link fired already, when sender was lost in a handoff
        self.watches.drop_link(pid, sender)
        proc = self._local(pid)
        if proc is None:
            self._unborn.hold(peer, frame, pid)
        else:
            if proc.links:
                proc.links.discard(sender)
            signal_exit(proc, sender, reason)

    def _on_monitor(self, peer: NodeRef, frame) -> None:
        _, watcher, pid, ref = frame
        proc = self._local(pid)
        if proc is None:
            if not self._unborn.hold(peer, frame, pid):
                self.send(watcher, Down(ref, pid, self._failed_spawns.get(pid, "noproc")))
        else:
            if proc.monitors is None:
                proc.monitors = {}
            proc.monitors[ref] = watcher
            self.watches.add_watcher(self.route(watcher), ref, pid)  # forgotten if the watcher's node is lost

    def _on_demonitor(self, peer: NodeRef, frame) -> None:
        _, pid, ref = frame
        proc = self._local(pid)
        if proc is None:
            if pid.node != self.table.ref and self.watches.cancel_monitor(ref) is not None:
                return  # a migrant undid a monitor it made here of a third node's process: its watch was here
            self._unborn.hold(peer, frame, pid)
        else:
            self._unwatch(proc, ref)

    def _unwatch(self, proc, ref: Tag) -> None:
        """Monitor ``ref`` of local process ``proc``, whose watcher is elsewhere, is undone."""
        if proc.monitors:
            proc.monitors.pop(ref, None)
        if self.table.monitored.get(ref) is proc:  # its watcher lived here, and migrated since
            del self.table.monitored[ref]
        self.watches.drop_watcher(ref)

    def _on_spawn(self, peer: NodeRef, frame) -> None:
        _, pid, fn, args, link_to, name = frame
        self._check_spawn(pid)
        try:
            spawn_in(self.table, fn, args, link_to=link_to, name=name, pid=pid)  # links the new process to link_to
        except Exception as exc:  # noqa: BLE001 - the spawner learns by its link or monitor
            log.error("could not spawn %r for a remote node: %s", fn, exc)
            self._spawn_failed(pid, link_to, Crash.from_exception(exc, where=f"spawning {pid} on node {self.table.ref}"))
        else:
            if link_to is not None:
                self.watches.add_link(self.route(link_to), pid, link_to)
        self._unborn.born(pid)

    def _check_spawn(self, pid) -> None:
        table = self.table
        if pid.__class__ is not Pid or pid.node != table.ref or pid.serial in table.procs or pid.serial < REMOTE_SERIAL_BASE:
            raise MalformedMessage(f"a spawn request for pid {pid} that this node cannot give")

    def _spawn_failed(self, pid: Pid, link_to, reason) -> None:
        """The process ``pid`` could not start: its link fires now, a later link or monitor with ``reason``."""
        if len(self._failed_spawns) >= _FAILED_SPAWNS:
            del self._failed_spawns[next(iter(self._failed_spawns))]
        self._failed_spawns[pid] = reason
        if link_to.__class__ is Pid:
            self.exit(pid, link_to, reason)

    # -- what this node cannot unpickle ------------------------------------------------

    def _unreadable(self, peer: NodeRef, frame) -> None:
        """A frame holding an :class:`Unreadable`: answer whoever waits for it (see the module's doc)."""
        reason = first_unreadable(frame).reason
        log.warning("a frame from %s holds what this node cannot unpickle: %s", peer, reason)
        kind = frame[0] if frame.__class__ is tuple and frame else None
        if kind == SPAWN and len(frame) == 6:
            _, pid, _, _, link_to, _ = frame
            self._check_spawn(pid)
            self._spawn_failed(pid, link_to, Crash("termite.UnreadableMessage", reason, "", UnreadableMessage(reason)))
            self._unborn.born(pid)
            return
        if (kind == SEND or kind == NSEND) and len(frame) == 3:
            msg = frame[2]
            to = frame[1] if kind == SEND else self.table.names.get(frame[1]) if is_name(frame[1]) else None
            if msg.__class__ is tuple and len(msg) == 3 and msg[0].__class__ is Pid and msg[1].__class__ is Tag and to.__class__ is Pid:
                self._tell(msg[0], Refused(msg[1], to, reason))  # a call: its caller is answered, not the callee
                return
        self._apply(peer, frame)  # delivered with the Unreadable in place

    def _tell(self, pid: Pid, msg) -> None:
        """``msg`` to ``pid``, a process of this node or of another."""
        if pid.node == self.table.ref:
            proc = self._local(pid)
            if proc is not None:
                deliver(proc, msg)
        else:
            self.send(pid, msg)

    def _on_hello(self, peer: NodeRef, frame) -> None:
        _, reply_to, tag = frame
        self.send(reply_to, (tag, self.table.ref))

    def _on_nsend(self, peer: NodeRef, frame) -> None:
        _, name, msg = frame
        pid = self.table.names.get(name)
        if pid is None:
            self.table.dropped += 1  # as for an ended process: send and pray
        else:
            self._apply(peer, (SEND, pid, msg))

    def _on_whereis(self, peer: NodeRef, frame) -> None:
        _, reply_to, tag, name = frame
        self.send(reply_to, (tag, self.table.names.get(name)))

    # -- nodes lost and found ---------------------------------------------------------------

    def _peer_down(self, peer: NodeRef) -> None:
        """The session with ``peer`` ended: every link and monitor with its processes fires, once."""
        lost = self.watches.take_node(peer)
        self.fire(lost)
        self._fire_carried(peer)
        self._sever_migrants(peer, lost)
        self.flow.new_session(peer)
        self._notify_nodes(peer, "noconnection")
        for hook in self._peer_down_hooks:
            hook(peer)

    def fire(self, lost: Lost) -> None:
        """Links and monitors with processes out of reach: each fires ``noconnection``, once."""
        table = self.table
        for ref, target in lost.watchers.items():
            proc = table.resolve(target)
            if proc is not None and proc.monitors:
                proc.monitors.pop(ref, None)
        for local, remote in lost.links:
            proc = table.resolve(local)
            if proc is not None:
                if proc.links:
                    proc.links.discard(remote)
                signal_exit(proc, remote, "noconnection")
        for ref, (watcher, target) in lost.monitors.items():
            proc = table.resolve(watcher)
            if proc is not None:
                deliver(proc, Down(ref, target, "noconnection"))
            elif (to := table.moved.get(watcher)) is not None:  # it migrated holding the monitor: tell it there
                self.post(to, (MONITOR_LOST, watcher, ref, target))

    def _fire_carried(self, peer: NodeRef) -> None:
        """Monitors that migrants brought here, of processes of lost node ``peer``: their node of origin
        holds the watch, but that may be ``peer`` itself (or have lost it unknown to this node): each
        fires here, once (a copy of a Down from elsewhere is dropped when it comes)."""
        carried, route = self.carried, self.route
        for ref in [ref for ref, (target, _, _) in carried.items() if route(target) == peer]:
            target, watcher, _ = carried.pop(ref)
            self._carried_lost(watcher, ref, target)

    def _on_monitor_lost(self, peer: NodeRef, frame) -> None:
        _, watcher, ref, target = frame
        # Not if its Down came already (the carried entry went with it).
        if self.carried.pop(ref, None) is not None:
            self._carried_lost(watcher, ref, target)

    def _carried_lost(self, watcher: Pid, ref: Tag, target: Pid) -> None:
        """Carried monitor ``ref`` of ``target`` fires with "noconnection", unless ``watcher`` undid it;
        a copy of its real Down still on its way is dropped when it comes."""
        proc = self._local(watcher)
        if proc is not None and still_holds(proc, ref):
            self.watches.fired(ref)
            deliver(proc, Down(ref, target, "noconnection"))

    def _sever_migrants(self, peer: NodeRef, lost: Lost) -> None:
        """``peer`` may hold the watches of a local migrant under the node it came from, which its
        own down did not fire: it is told which ones this down cut."""
        cut: dict[Pid, tuple[list, list]] = {}
        resolve = self.table.resolve
        for ref, target in lost.watchers.items():
            proc = resolve(target)
            if proc is not None and proc.order is not None:
                cut.setdefault(target, ([], []))[0].append(ref)
        for local, remote in lost.links:
            proc = resolve(local)
            if proc is not None and proc.order is not None:
                cut.setdefault(local, ([], []))[1].append(remote)
        for pid, (refs, partners) in cut.items():
            self.sever(peer, pid, refs, partners)

    def sever(self, node: NodeRef, pid: Pid, refs, partners) -> None:
        """Tell ``node``, in its next session with this one, that a down cut its monitors ``refs``
        on local ``pid`` and the links of its processes ``partners`` to it."""
        frame = (SEVERED, pid, tuple(refs), tuple(partners))
        if not self.transport.lost(node):
            return self.post(node, frame)
        pending = self._severed.setdefault(node, [])
        if len(pending) < _SEVERED_HELD:
            pending.append(frame)
        self.transport.reach(node)  # so that next session begins, without a down to report if it cannot

    def _on_severed(self, peer: NodeRef, frame) -> None:
        _, pid, refs, partners = frame
        self.fire(self.watches.take_severed(pid, refs, partners))

    def _peer_up(self, peer: NodeRef) -> None:
        for frame in self._severed.pop(peer, ()):
            self.post(peer, frame)
        self.flow.new_session(peer)
        self._notify_nodes(peer, None)

    def _notify_nodes(self, peer: NodeRef, down_reason) -> None:
        for ref, (watcher, node) in list(self.node_watchers.items()):
            if node is not None and (node.host, node.port) != (peer.host, peer.port):
                continue
            proc = self.table.resolve(watcher)
            if proc is None:
                del self.node_watchers[ref]
                continue
            deliver(proc, NodeUp(ref, peer) if down_reason is None else NodeDown(ref, peer, down_reason))
        self.kernel.kick()
