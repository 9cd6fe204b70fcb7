"""Distribution: processes of other nodes, used as if they were local.

This is the process table's ``remote`` hook.  Local operations on a pid of
another node (send, link, monitor, exit, spawn) become *control frames* to
that node; frames from other nodes are decoded and applied on the kernel's
thread, in the order each peer sent them.

============  ==========================================  ====================
kind          fields                                      at the receiving node
============  ==========================================  ====================
SEND          to pid, message                             deliver
LINK          from pid, to pid                            to's exit reaches from
UNLINK        from pid, to pid                            forget that
EXIT          from pid, to pid, reason                    an exit signal
MONITOR       watcher pid, target pid, ref                Down(ref, ...) at end
DEMONITOR     target pid, ref                             forget that
SPAWN         pid, function, args, link-to pid, name      start the process
HELLO         reply-to pid, tag                           reply (tag, NodeRef)
NSEND         name, message                               deliver to the process registered so
WHEREIS       reply-to pid, tag, name                     reply (tag, its pid or None)
============  ==========================================  ====================

When a peer is lost (heartbeats stop), every link and monitor from a local
process to a process of that node fires with reason ``"noconnection"``, and
``monitor_node`` watchers get ``NodeDown``.

A remote ``spawn`` returns at once, without a round trip, as a local one
does: the caller picks the new pid's serial from a range that node never
uses for its own processes (high bit set, then 30 bits of the caller's
incarnation and a 32-bit counter), and the node starts the process under it.
If the node cannot be reached, the pid names a process that never existed;
a link or monitor to it fires with ``"noconnection"``.

The pid may travel faster than the request: handed to a third node, which
sends to it, its message can reach the new process's node first (on another
connection).  The node tells such a pid from one whose process has ended:
spawns from one node arrive in the order of their counters.  So a message,
link or monitor for a process not yet spawned waits for its spawn, up to
``SPAWN_WAIT`` seconds (then it is handled as for an ended process), as an
Erlang ``spawn`` on another node returns only once the process exists.
"""

from __future__ import annotations

import itertools
import logging
from typing import NamedTuple

from termite._codec import MalformedMessage, UnserializableMessage, decode_frame, encode, encode_batch
from termite._errors import Timeout
from termite._ids import NodeRef, Pid, Tag, make_tag
from termite._links import Down, _add_link, signal_exit
from termite._mailbox import deliver, receive
from termite._process import ProcessTable, current
from termite._spawn import spawn_in

__all__ = ["Remote", "NodeUp", "NodeDown", "monitor_node", "demonitor_node", "nodes", "connect", "register_frame", "whereis_on"]

log = logging.getLogger("termite.distribution")

SEND, LINK, UNLINK, EXIT, MONITOR, DEMONITOR, SPAWN, HELLO, NSEND, WHEREIS = range(1, 11)
#: A batch is sent when it holds this many frames or bytes, else at the end of
#: the kernel's turn.  A single larger frame goes alone.
_BATCH_FRAMES = 256
_BATCH_BYTES = 256 * 1024
_REMOTE_SERIAL_BASE = 1 << 63
_SPAWN_COUNTER = (1 << 32) - 1  # a remote-spawned serial's low bits; the rest names its spawner
#: Seconds a frame for a process whose spawn request has not arrived waits for it.
SPAWN_WAIT = 5.0
#: The most frames held for processes not yet spawned; beyond it they are handled at once.
MAX_HELD = 100_000


class NodeUp(NamedTuple):
    """A node monitored with ``monitor_node`` (or any, with ``None``) connected."""

    ref: Tag
    node: NodeRef


class NodeDown(NamedTuple):
    """A monitored node was lost: its heartbeats stopped."""

    ref: Tag
    node: NodeRef
    reason: str


class Remote:
    def __init__(self, table: ProcessTable, transport):
        self.table = table
        self.kernel = table.kernel
        self.transport = transport
        self.links_to: dict[NodeRef, set[tuple[Pid, Pid]]] = {}  # node -> {(local, remote)}
        self.monitors_to: dict[NodeRef, dict[Tag, tuple[Pid, Pid]]] = {}  # node -> {ref: (watcher, target)}
        self.monitor_node_of: dict[Tag, NodeRef] = {}
        self.node_watchers: dict[Tag, tuple[Pid, NodeRef | None]] = {}  # ref -> (watcher, node or any)
        self.malformed = 0
        self.handlers: dict[int, object] = {}  # frame kinds of higher layers: kind -> handler(peer, frame)
        self.on_peer_down_hooks: list = []  # fn(peer), after links and monitors have fired
        # Processes that migrate get their messages numbered (termite._migration):
        # pid -> this node's count of messages sent to it, and the hooks that
        # number a message from here and one that came from a peer unnumbered.
        self.numbered: dict[Pid, int] = {}
        self.send_numbered = None  # fn(pid, msg)
        self.receive_unnumbered = None  # fn(peer, pid, msg)
        prefix = (table.ref.incarnation & ((1 << 30) - 1)) << 32
        self._spawn_serials = (_REMOTE_SERIAL_BASE | prefix | n for n in itertools.count(1))
        self._out: dict[tuple[str, int], tuple[NodeRef, list[bytes], list[int]]] = {}  # batches
        self._one: tuple[NodeRef, bytes] | None = None  # or a turn's only frame so far, held alone
        self._here = table.ref  # the NodeRef object decoded pids of this node last came with
        # Remote spawns here: spawner (a serial's high bits) -> the highest counter spawned;
        # frames for pids above it, held until their spawn (see the module's docstring).
        self._spawned: dict[int, int] = {}
        self._unborn: dict[Pid, list] = {}  # pid -> [(peer, frame), ...]
        self._held = 0
        self._released: Pid | None = None  # being handled as ended: its spawn did not come in time
        self.spawn_wait = SPAWN_WAIT
        # The transport reads on the kernel's thread: frames and new peers
        # come here directly; a lost peer comes from its I/O thread.
        transport.on_frames = self._on_frames
        transport.on_read_done = self.kernel.run_now
        transport.on_peer_down = lambda peer: self.kernel.call_threadsafe(self._peer_down, peer)
        transport.on_peer_up = lambda peer: self._notify_nodes(peer, None)
        self.kernel.after_turn = self.flush
        table.remote = self

    # -- out: what local processes do to remote pids --------------------------

    def _frame(self, node: NodeRef, frame: tuple) -> None:
        self._queue(node, encode(frame))

    def send(self, pid: Pid, msg) -> None:
        if self.numbered and pid in self.numbered:
            return self.send_numbered(pid, msg)
        self._queue(pid.node, encode((SEND, pid, msg)))

    async def whereis(self, node: NodeRef, name: str, timeout: float | None) -> Pid | None:
        """Ask ``node`` who is registered there as ``name`` (from a process of this node)."""
        if not _name(name):
            raise TypeError(f"a registered name is a non-empty str, not {name!r}")
        tag = make_tag()
        self._frame(node, (WHEREIS, current().pid, tag, name))
        answer = await receive(lambda m: m.__class__ is tuple and len(m) == 2 and m[0] == tag, timeout=timeout, default=None)
        if answer is None:
            raise Timeout(f"node {node} did not say within {timeout} s who is registered as {name!r} there")
        return answer[1]

    def send_named(self, name: str, node: NodeRef, msg) -> None:
        """``msg`` to the process registered as ``name`` on ``node`` (Erlang's ``{Name, Node} ! Msg``)."""
        self._queue(node, encode((NSEND, name, msg)))

    def route(self, pid: Pid) -> NodeRef:
        """Where to send for ``pid``: its node, or where it migrated to from here."""
        moved = self.table.moved
        return moved.get(pid, pid.node) if moved else pid.node

    def _queue(self, node: NodeRef, data: bytes) -> None:
        """Hold a frame for ``node`` until the end of the kernel's turn (or a full batch)."""
        if self._one is None:
            if not self._out and len(data) < _BATCH_BYTES:
                self._one = (node, data)  # the first of the turn: no batch until a second comes
                return
        else:
            held, self._one = self._one, None
            self._batch(*held)
        self._batch(node, data)

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

    def flush(self) -> None:
        """Send every held frame: many to one node go as one batch frame."""
        if self._one is not None:
            (node, data), self._one = self._one, None
            self.transport.send_frame(node, data)
        if self._out:
            out, self._out = self._out, {}
            for node, batch, _ in out.values():
                self._send_batch(node, batch)

    def _send_batch(self, node: NodeRef, batch: list[bytes]) -> None:
        self.transport.send(node, [batch[0] if len(batch) == 1 else encode_batch(batch)])

    def link(self, me: Pid, pid: Pid, directed: bool) -> None:
        node = self.route(pid)
        self.links_to.setdefault(node, set()).add((me, pid))
        if not directed:
            proc = self.table.resolve(me)
            if proc is not None:
                _add_link(proc, pid)
        self._frame(node, (LINK, me, pid))

    def unlink(self, me: Pid, pid: Pid) -> None:
        node = self.route(pid)
        links = self.links_to.get(node)
        if links:
            links.discard((me, pid))
        self._frame(node, (UNLINK, me, pid))

    def monitor(self, watcher: Pid, pid: Pid, ref: Tag) -> None:
        node = self.route(pid)
        self.monitors_to.setdefault(node, {})[ref] = (watcher, pid)
        self.monitor_node_of[ref] = node
        self._frame(node, (MONITOR, watcher, pid, ref))

    def demonitor(self, ref: Tag) -> None:
        node = self.monitor_node_of.pop(ref, None)
        if node is None:
            return
        entry = self.monitors_to.get(node, {}).pop(ref, None)
        if entry is not None:
            self._frame(node, (DEMONITOR, entry[1], ref))

    def exit(self, sender: Pid, pid: Pid, reason) -> None:
        node = self.route(pid)
        links = self.links_to.get(node)
        if links:
            links.discard((sender, pid))
        try:
            frame = encode((EXIT, sender, pid, reason))
        except UnserializableMessage:
            frame = encode((EXIT, sender, pid, repr(reason)))
        self._queue(node, frame)

    def spawn(self, fn, args, node: NodeRef, link_to: Pid | None = None, name: str | None = None) -> Pid:
        if node.incarnation is None:
            raise ValueError(f"spawn(node=...) needs a node reference from termite.connect() or nodes(), not {node!r}")
        pid = Pid(node, next(self._spawn_serials))
        frame = encode((SPAWN, pid, fn, tuple(args), link_to, name))  # may raise UnserializableMessage
        if link_to is not None:
            self.links_to.setdefault(node, set()).add((link_to, pid))
            proc = self.table.resolve(link_to)
            if proc is not None:
                _add_link(proc, pid)
        self._queue(node, frame)
        return pid

    # -- in: frames read on the kernel's thread; lost peers from the I/O thread --

    def _on_frames(self, peer: NodeRef, frames: list) -> None:
        """Apply frames read on the kernel's thread; the transport then runs a turn.

        A frame may be a batch: its good messages are applied, and a frame
        with any bad one counts once in ``malformed``, with one log line.
        """
        table = self.table
        procs = table.procs
        for data in frames:
            try:
                messages, unreadable = decode_frame(data), None
            except MalformedMessage as exc:
                messages, unreadable = exc.decoded, exc  # those before the bad one still count
            problem = None
            for frame in messages:
                # In line, the common frame: a message for a process of this
                # node that never migrated (see _apply for the rest).
                if frame.__class__ is tuple and len(frame) == 3 and frame[0] == SEND and not table.moved:
                    pid = frame[1]
                    if pid.__class__ is Pid and pid.node is self._here:
                        proc = procs.get(pid.serial)
                        msg = frame[2]
                        if proc is not None and proc.order is None and msg.__class__ is not Down:
                            deliver(proc, msg)
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
        kind = _check(frame)
        moved = self.table.moved
        if moved and kind in _ADDRESSEE:
            to = moved.get(frame[_ADDRESSEE[kind]])
            if to is not None:  # it migrated from here: pass it on, in order
                if kind == SEND:
                    self.receive_unnumbered(peer, frame[1], frame[2])
                else:
                    self._frame(to, frame)
                return
        if kind == SEND:
            _, pid, msg = frame
            proc = self._local(pid)
            if proc is not None:
                if msg.__class__ is Down:
                    self._forget_monitor(msg.ref)
                if proc.order is None:
                    deliver(proc, msg)
                else:
                    self.receive_unnumbered(peer, pid, msg)
            elif pid.serial >= _REMOTE_SERIAL_BASE:
                self._hold(peer, frame, pid)
        elif kind == LINK:
            _, sender, pid = frame
            proc = self._local(pid)
            if proc is None:
                if not self._hold(peer, frame, pid):
                    self._frame(sender.node, (EXIT, pid, sender, "noproc"))
            else:
                _add_link(proc, sender)
        elif kind == UNLINK:
            _, sender, pid = frame
            proc = self._local(pid)
            if proc is None:
                self._hold(peer, frame, pid)
            elif proc.links:
                proc.links.discard(sender)
        elif kind == EXIT:
            _, sender, pid, reason = frame
            links = self.links_to.get(sender.node)
            if links:
                links.discard((pid, sender))
            proc = self._local(pid)
            if proc is None:
                self._hold(peer, frame, pid)
            else:
                if proc.links:
                    proc.links.discard(sender)
                signal_exit(proc, sender, reason)
        elif kind == MONITOR:
            _, watcher, pid, ref = frame
            proc = self._local(pid)
            if proc is None:
                if not self._hold(peer, frame, pid):
                    self.send(watcher, Down(ref, pid, "noproc"))
            else:
                if proc.monitors is None:
                    proc.monitors = {}
                proc.monitors[ref] = watcher
        elif kind == DEMONITOR:
            _, pid, ref = frame
            proc = self._local(pid)
            if proc is None:
                self._hold(peer, frame, pid)
            elif proc.monitors:
                proc.monitors.pop(ref, None)
        elif kind == SPAWN:
            _, pid, fn, args, link_to, name = frame
            self._spawn_here(pid, fn, args, link_to, name)
        elif kind == HELLO:
            _, reply_to, tag = frame
            self.send(reply_to, (tag, self.table.ref))
        elif kind == NSEND:
            _, name, msg = frame
            pid = self.table.names.get(name)
            if pid is None:
                self.table.dropped += 1  # as for an ended process: send and pray
            else:
                self._apply(peer, (SEND, pid, msg))
        elif kind == WHEREIS:
            _, reply_to, tag, name = frame
            self.send(reply_to, (tag, self.table.names.get(name)))
        else:
            self.handlers[kind](peer, frame)

    def _local(self, pid: Pid) -> object | None:
        node = pid.node
        if node is not self._here:  # the codec gives the pids it decodes one NodeRef object per node
            if node != self.table.ref:  # a guest, or of an earlier incarnation of this node (gone)
                return self.table.guests.get(pid) if self.table.guests else None
            self._here = node
        return self.table.procs.get(pid.serial)

    def _spawn_here(self, pid: Pid, fn, args, link_to, name) -> None:
        table = self.table
        if pid.node != table.ref or pid.serial in table.procs or pid.serial < _REMOTE_SERIAL_BASE:
            raise MalformedMessage(f"a spawn request for pid {pid} that this node cannot give")
        spawner, counter = pid.serial >> 32, pid.serial & _SPAWN_COUNTER
        if counter > self._spawned.get(spawner, 0):
            self._spawned[spawner] = counter
        try:
            spawn_in(table, fn, args, link_to=link_to, name=name, pid=pid)  # links the new process to link_to
        except Exception as exc:  # noqa: BLE001 - the spawner learns by its link or monitor
            log.error("could not spawn %r for a remote node: %s", fn, exc)
            if link_to is not None:
                self.exit(pid, link_to, "noproc")
        if self._unborn:
            # What waited for this process, and for any of the same spawner's earlier
            # counters: those will never come (their requests could not be encoded).
            for waiting in [p for p in self._unborn if p.serial >> 32 == spawner and p.serial & _SPAWN_COUNTER <= counter]:
                self._replay(waiting)

    # -- frames for a process whose spawn request has not come yet --------------

    def _hold(self, peer: NodeRef, frame: tuple, pid: Pid) -> bool:
        """Keep ``frame`` for ``pid`` if a peer chose that pid for a spawn here that has not arrived."""
        serial = pid.serial
        if (
            serial < _REMOTE_SERIAL_BASE
            or serial & _SPAWN_COUNTER <= self._spawned.get(serial >> 32, 0)  # spawned, and ended since
            or pid == self._released
            or pid.node != self.table.ref
        ):
            return False
        held = self._unborn.get(pid)
        if held is None:
            if self._held >= MAX_HELD:
                log.warning("%d frames wait for processes not spawned yet: one for %s is handled as for an ended process",
                            self._held, pid)
                return False
            held = self._unborn[pid] = []
            self.kernel.loop.call_later(self.spawn_wait, self._spawn_late, pid)
        held.append((peer, frame))
        self._held += 1
        return True

    def _replay(self, pid: Pid) -> None:
        held = self._unborn.pop(pid, ())
        self._held -= len(held)
        for peer, frame in held:
            try:
                self._apply(peer, frame)
            except Exception:  # noqa: BLE001 - checked when held; one failure must not lose the rest
                log.exception("a frame for %s, held until its spawn, could not be applied", pid)

    def _spawn_late(self, pid: Pid) -> None:
        """On the loop: ``pid``'s spawn did not come in time; handle what waited as for an ended process."""
        if pid not in self._unborn:
            return
        log.warning("%d frames for %s waited %g s for its spawn request, which did not come; "
                    "handled as for an ended process", len(self._unborn[pid]), pid, self.spawn_wait)
        self._released = pid
        try:
            self._replay(pid)
        finally:
            self._released = None
        self.kernel.kick()

    def _forget_monitor(self, ref: Tag) -> None:
        node = self.monitor_node_of.pop(ref, None)
        if node is not None:
            self.monitors_to.get(node, {}).pop(ref, None)

    def _peer_down(self, peer: NodeRef) -> None:
        table = self.table
        for local, remote in self.links_to.pop(peer, ()):
            proc = table.resolve(local)
            if proc is not None:
                if proc.links:
                    proc.links.discard(remote)
                signal_exit(proc, remote, "noconnection")
        for ref, (watcher, target) in self.monitors_to.pop(peer, {}).items():
            self.monitor_node_of.pop(ref, None)
            proc = table.resolve(watcher)
            if proc is not None:
                deliver(proc, Down(ref, target, "noconnection"))
        self._notify_nodes(peer, "noconnection")
        for hook in self.on_peer_down_hooks:
            hook(peer)

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


# -- what a well-formed frame holds --------------------------------------------


def _pid(x) -> bool:
    return x.__class__ is Pid


def _tag(x) -> bool:
    return x.__class__ is Tag


def _any(x) -> bool:
    return True


def _pid_or_none(x) -> bool:
    return x is None or x.__class__ is Pid


def _name(x) -> bool:
    return x.__class__ is str and x != ""


def _name_or_none(x) -> bool:
    return x is None or x.__class__ is str


def _tuple(x) -> bool:
    return x.__class__ is tuple


#: kind -> (its name, a check per field).  A frame that fails them is dropped
#: before it touches any state: a pid where a link is kept must be a pid.
_FIELDS = {
    SEND: ("SEND", (_pid, _any)),
    LINK: ("LINK", (_pid, _pid)),
    UNLINK: ("UNLINK", (_pid, _pid)),
    EXIT: ("EXIT", (_pid, _pid, _any)),
    MONITOR: ("MONITOR", (_pid, _pid, _tag)),
    DEMONITOR: ("DEMONITOR", (_pid, _tag)),
    SPAWN: ("SPAWN", (_pid, callable, _tuple, _pid_or_none, _name_or_none)),
    HELLO: ("HELLO", (_pid, _tag)),
    NSEND: ("NSEND", (_name, _any)),
    WHEREIS: ("WHEREIS", (_pid, _tag, _name)),
}


#: kind -> the field naming the process a frame is for (a migrated one's are passed on)
_ADDRESSEE = {SEND: 1, LINK: 2, UNLINK: 2, EXIT: 2, MONITOR: 2, DEMONITOR: 1}


#: kind -> fn(frame) -> bool: one call that passes the common well-formed frames
#: of a frequent kind (the field checks then explain any other)
_PASSES: dict[int, object] = {}


def register_frame(kind: int, name: str, checks: tuple, passes=None) -> None:
    """Declare a frame kind of a higher layer (its handler goes in ``Remote.handlers``)."""
    if kind in _FIELDS:
        raise ValueError(f"frame kind {kind} is taken by {_FIELDS[kind][0]}")
    _FIELDS[kind] = (name, checks)
    if passes is not None:
        _PASSES[kind] = passes


def _check(frame):
    """The frame's kind, if it has that kind's fields; else MalformedMessage."""
    if frame.__class__ is not tuple or not frame:
        raise MalformedMessage(f"a frame that is not a control tuple: {type(frame).__name__}")
    kind = frame[0]
    if kind == SEND and len(frame) == 3 and frame[1].__class__ is Pid:
        return SEND  # the common case, checked in full
    passes = _PASSES.get(kind)
    if passes is not None and passes(frame):
        return kind
    try:
        name, checks = _FIELDS[kind]
    except (KeyError, TypeError):
        raise MalformedMessage(f"unknown frame kind {kind!r:.40}") from None
    if len(frame) != len(checks) + 1:
        raise MalformedMessage(f"a {name} frame with {len(frame) - 1} fields instead of {len(checks)}")
    for i, (check, value) in enumerate(zip(checks, frame[1:]), 1):
        if not check(value):
            raise MalformedMessage(f"a {name} frame with a {type(value).__name__} as field {i}")
    return kind


def _remote() -> Remote:
    remote = current().table.remote
    if remote is None:
        raise RuntimeError("this node is not connected to other nodes: start it with a port, e.g. termite.Node(port=0, ...)")
    return remote


def monitor_node(node: NodeRef | None = None) -> Tag:
    """Get ``NodeUp(ref, node)`` / ``NodeDown(ref, node, reason)`` messages for ``node`` (or any node if None)."""
    me = current()
    ref = make_tag()
    _remote().node_watchers[ref] = (me.pid, node)
    return ref


def demonitor_node(ref: Tag) -> None:
    _remote().node_watchers.pop(ref, None)


def nodes() -> list[NodeRef]:
    """The nodes this one is connected to now."""
    return [peer for peer in _remote().transport.peers() if peer.incarnation is not None]


async def whereis_on(node: NodeRef, name: str, timeout: float = 5.0) -> Pid | None:
    """The pid registered as ``name`` on ``node`` (``termite.register``), or None: one round trip.

    Raises ``Timeout`` if ``node`` does not answer within ``timeout`` seconds.
    """
    me = current()
    if node == me.table.ref:
        return me.table.names.get(name)
    return await _remote().whereis(node, name, timeout)


async def connect(host: str, port: int, timeout: float = 5.0) -> NodeRef:
    """Reach the node at host:port and return its reference (the paper's ``make-node``)."""
    remote = _remote()
    me = current()
    tag = make_tag()
    remote._frame(NodeRef(host, port, None), (HELLO, me.pid, tag))
    _, ref = await receive((tag, NodeRef), timeout=timeout, default=(None, None))
    if ref is None:
        raise Timeout(f"no termite node answered at {host}:{port} within {timeout} s (is it running, with the same cluster key?)")
    return ref
