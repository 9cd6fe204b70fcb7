"""Transport: frames between nodes over ZeroMQ, authenticated and encrypted.

It knows node addresses and frames (bytes), not processes.

- Each node binds one ROUTER.  To reach a peer it connects a DEALER to the
  peer's ROUTER, on first need (termite._net.connections); one connection
  each way per pair of nodes keeps frames in order.  Sends happen on the
  caller's thread (the kernel's) under a lock: no thread hop on the way out.
- Liveness is the connection's: DEALERs run ZMTP heartbeats, which the peer's
  libzmq answers without the GIL, and never reconnect; a peer is down when
  its connection is lost (closed, or heartbeats unanswered for
  ``heartbeat_timeout``), or not made in that time.  Frames carry the session
  they belong to, and a down ends it on both sides (termite._net.sessions).
  A peer whose own heartbeats stopped (its interpreter busy, even holding the
  GIL) is *unresponsive*, not down.  A *client* (``client=True``: a script's
  or the launcher's node) says so in its routing ids; its down is logged as
  "client ... left" at INFO, as a client that leaves is not a node lost.
  Nothing else differs: its links, monitors and NodeDown are any node's.
- *Idle close*: a session with no frames either way for ``idle_close``
  seconds, that the layer above says nothing holds (``holds(peer)``), is
  suspended by agreement with the peer (SUSPEND, answered SUSPENDED or STAY):
  both DEALERs close, the session and its epoch stay, and the next frame
  either way reopens it on a new connection, in order, with no down
  (termite._net.sessions; the proof is in docs/faults.md).
- An I/O thread answers ZAP (RFC 27) requests, sends the application's
  heartbeats, watches the DEALERs' connections, and reads the ROUTER when no
  loop does.  With keys, every connection is CURVE with the cluster's key
  pair (termite._net.admission); without (loopback only) frames go in clear.

Frames received are handed to ``on_frames(peer, frames)``, new sessions to
``on_peer_up(peer)`` and ended ones to ``on_peer_down(peer)``, all on the
thread that reads the ROUTER: the node's event loop thread when started with
one, else the I/O thread.  A peer's down is handed on after every frame of
the ended session that is handed on at all, and before any of the next.  An
empty frame is a heartbeat and is not handed on.

On the loop's thread, frames handed on are followed by ``on_read_done()``
(the kernel's turn).  While the loop is idle, its thread waits for the next
message in zmq_poll and runs a turn after each one; there, and for small
frames sent, the calls go straight to libzmq (termite._net.zmq_native; a
small frame to the peer last sent to goes by termite._net._zmqcalls'
FrameSender, with no Python on the way).
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time

import zmq

from termite._core.ids import NodeRef
from termite._net import zmq_native as _zmq_native
from termite._net.admission import REFUSAL_PERIOD, RoutingIds, ZapHandler, curve_server, is_client, reopened_of
from termite._net.connections import Connections, Monitors
from termite._net.keys import ClusterKeys
from termite._net.sessions import ASKING, CONNECTING, RESUMING, SUSPENDED, UP, Sessions
from termite._net.zmq_native import (
    idle_self_pipe as _idle_self_pipe,
    loop_clock,
    pyzmq_calls as _pyzmq_calls,
    wait_idle as _wait_idle,
)

__all__ = ["Transport", "TransportStats"]

log = logging.getLogger("termite.transport")

_HEARTBEAT = b""
# The idle close's frames, sent as [b"", frame] (a termite node sends data as one part, a heartbeat
# as one empty part): outside the session's frames, never handed on.
_SUSPEND = b"suspend"  # the session is idle here and nothing holds it: may both sides close?
_SUSPENDED = b"suspended"  # yes: the answerer has closed its connection, the asker closes its own
_STAY = b"stay"  # no: something holds it here, or frames went this way since
#: Seconds a session is idle before a node asks to suspend it (Network(idle_close=...)).
IDLE_CLOSE = 300.0
#: The least time a connection being made is given before its peer is declared down (seconds).
CONNECT_TIMEOUT = 5.0
# A plain int: pyzmq's enum flags cost microseconds per operation on the hot path.
_NOBLOCK = int(zmq.NOBLOCK)
# zmq.Socket.send is a Python wrapper (for DRAFT options termite never uses)
# around this one.
_send = zmq.backend.Socket.send
_monotonic = time.monotonic
# termite._net._zmqcalls, or None.
_native = _zmq_native.native


class TransportStats:
    """Counters the node reports (load meters, dashboard)."""

    __slots__ = ("frames_in", "frames_out", "dropped_in", "dropped_out", "bytes_in", "bytes_out", "refused",
                 "suspended", "resumed")

    def __init__(self):
        self.frames_in = self.frames_out = self.dropped_in = self.dropped_out = self.refused = 0
        self.bytes_in = self.bytes_out = 0
        self.suspended = 0  # sessions this node suspended (idle close), as asker or answerer
        self.resumed = 0  # connections this node reopened to resume a suspended session


class _FrameSender:
    """send_frame's common case (termite._net._zmqcalls.FrameSender, its C twin, does the same):
    a frame under 4096 bytes to the very peer aimed at (``aim(peer, sock)``: the last one sent
    to), sent with ``lock`` held and counted in ``stats``; anything else, and a send that failed,
    goes to ``fallback(peer, data)``."""

    __slots__ = ("lock", "stats", "fallback", "peer", "sock")

    def __init__(self, lock: threading.Lock, stats: TransportStats, fallback):
        self.lock, self.stats, self.fallback = lock, stats, fallback
        self.peer = self.sock = None

    def aim(self, peer: NodeRef, sock: zmq.Socket) -> None:
        self.peer, self.sock = peer, sock

    def forget(self) -> None:
        self.peer = self.sock = None

    def __call__(self, peer: NodeRef, data: bytes) -> None:
        if peer is self.peer and data.__class__ is bytes and len(data) < 4096:
            with self.lock:
                sent = False
                if peer is self.peer:
                    try:
                        _send(self.sock, data, _NOBLOCK, True)
                        sent = True
                    except zmq.ZMQError:
                        pass
            if sent:
                stats = self.stats
                stats.frames_out += 1
                stats.bytes_out += len(data)
                return None
        return self.fallback(peer, data)


#: The most ZeroMQ sockets (and open files) a node asks for: a peer takes about 4 sockets and 8 files.
MAX_SOCKETS = 1 << 16


def _room_for_sockets() -> int:
    """Raise this process's soft limit on open files to its hard limit (at most MAX_SOCKETS), as Erlang's
    and Ray's nodes do, and return how many ZeroMQ sockets that leaves room for (libzmq's 1,023 at least)."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = MAX_SOCKETS if hard == resource.RLIM_INFINITY else min(hard, MAX_SOCKETS)
        if soft != resource.RLIM_INFINITY and soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
    except (ImportError, ValueError, OSError):  # not on this platform, or not allowed: keep what there is
        return 1023
    return max(1023, MAX_SOCKETS if soft == resource.RLIM_INFINITY else min(soft, MAX_SOCKETS))


class ReadClock:
    """When the loop's thread last read a message (or the ROUTER to its end), since when it has
    read without a stall, and the longest pause in reading that is not a stall.

    Stamped on every message read, by Transport._read_one or its C twin
    (termite._net._zmqcalls.Reader, which writes these slots at their offsets).
    """

    __slots__ = ("read_at", "attentive_since", "gap")

    def __init__(self, now: float):
        self.read_at = now
        # Since when that thread has read without a stall: just after one,
        # what waited meanwhile is still to be read (see _beat).
        self.attentive_since = now
        self.gap = float("inf")  # with a loop: see start


class Transport:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        keys: ClusterKeys | None = None,
        *,
        on_frames,
        on_peer_down=None,
        on_peer_up=None,
        on_refused=None,
        heartbeat_interval: float = 0.5,
        heartbeat_timeout: float = 3.0,
        max_frame: int = 64 * 1024 * 1024,
        refusal_period: float = REFUSAL_PERIOD,
        client: bool = False,
        idle_close: float | None = IDLE_CLOSE,
    ):
        self.host = host
        self.keys = keys
        self.on_frames = on_frames
        self.on_peer_down = on_peer_down or (lambda peer: None)
        self.on_peer_up = on_peer_up or (lambda peer: None)
        self.on_skipped = None  # on_skipped(peer, size): a frame over max_frame, dropped unread
        self.on_refused = on_refused or (lambda address: None)
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.max_frame = max_frame
        if idle_close is not None and not (idle_close >= 0):
            raise ValueError(f"idle_close is seconds (0 or None: never), not {idle_close!r}")
        self.idle_close = idle_close or 0.0
        # The idle close asks the layer above, on the thread that reads: traffic() -> {peer: a value that
        # changes whenever frames go either way}, and holds(peer) -> whether anything depends on the
        # session (links, monitors, watchers, a handoff).  Alone, the transport counts nothing as holding.
        self.traffic = dict
        self.holds = lambda peer: False
        self._held: dict[NodeRef, list[list[bytes]]] = {}  # frames sent while asking to suspend, in order
        # The routing id a peer's session speaks with now, after ((epoch, connection), ...): a later one
        # replaces it, an earlier one (what is left of a connection replaced) never does.
        self._incoming: dict[NodeRef, tuple[tuple[int, int], bytes]] = {}
        self._next_scan = 0.0
        # The last time a connection could not be opened for want of files or sockets, and why
        # (termite.connect says so rather than "is it running?").
        self.out_of_files: tuple[float, str] | None = None
        self.stats = TransportStats()
        self.ctx = zmq.Context()
        self.ctx.set(zmq.MAX_SOCKETS, _room_for_sockets())  # libzmq's default, 1,023, is 254 peers
        # The ZAP handler must be bound before any CURVE socket binds.
        self._zap = ZapHandler(self.ctx, keys, self.stats, refusal_period) if keys is not None else None
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.linger = 0
        self.router.router_handover = 1  # a restarted peer with the same id takes over
        self.router.rcvhwm = 0
        if keys is not None:
            curve_server(self.router, keys)  # server keys before bind
        if port:
            self.router.bind(f"tcp://{host}:{port}")
            self.port = port
        else:
            self.port = self.router.bind_to_random_port(f"tcp://{host}")
        self.ref = NodeRef.new(host, self.port)
        # Guards the DEALERs and the peer table; the C one is taken by the C FrameSender without a call.
        self._lock = (getattr(_native, "Lock", None) or threading.Lock)()
        self._conns = Connections(self.ctx, self.ref, keys, heartbeat_interval, heartbeat_timeout, client)
        self._dealers = self._conns.dealers  # read on every send
        # A connection refused is a down at once (its monitor says so); one that hangs (a host that
        # drops packets, a node that cannot admit it: stopped, or its ZAP handler waiting for the GIL)
        # is given up after this long.
        self._sessions = Sessions(connect_timeout=max(2 * heartbeat_timeout, CONNECT_TIMEOUT))
        self._downs: list[NodeRef] = []  # peers declared down, to be handed on by the reading thread
        self._stale: set[bytes] = set()  # routing ids of ended sessions, each logged once
        self._clients: set[NodeRef] = set()  # peers admitted whose routing ids say they are clients
        # send_frame: a small frame to the peer last sent to by its C twin or its Python one, the
        # rest by _send_frame.  An attribute, not a method: no Python frame on the way in C.
        self._aimed = (getattr(_native, "FrameSender", None) or _FrameSender)(self._lock, self.stats, self._send_frame)
        self.send_frame = self._aimed
        self._last_seen: dict[NodeRef, float] = {}  # peers up or being connected to: when last heard
        self._wake_in = self.ctx.socket(zmq.PAIR)
        self._wake_in.bind(f"inproc://termite-wake-{id(self)}")
        self._wake_out = self.ctx.socket(zmq.PAIR)
        self._wake_out.connect(f"inproc://termite-wake-{id(self)}")
        self._stopping = False
        self._thread = threading.Thread(target=self._io, name=f"termite-io-{self.port}", daemon=True)
        self._ids = RoutingIds()
        # Routing id -> [peer, when last heard], for the peers in _last_seen:
        # the reader stamps these (no NodeRef hashing, which runs Python, per
        # message), and _beat folds them into _last_seen.
        self._heard: dict[bytes, list] = {}
        self.on_read_done = lambda: None  # after frames were handed on
        self._loop = None  # the event loop whose thread reads the ROUTER, if any
        self._reading = ReadClock(time.monotonic())  # how that thread reads: when, and whether it stalled
        self._tick_handle = None
        self._fd = None  # the ROUTER's FD, which the loop watches
        self._self_pipe = None  # the loop's, which wait_idle polls with the ROUTER, if it may (see there)
        self._clock = None  # the loop's time()
        # How the ROUTER is read: pyzmq, or (on the loop's thread) termite._net._zmqcalls
        # with the ROUTER's handle.  Both give a message as (identity, part, ...).
        self._handle = None
        self._recv_message, self._poll = _pyzmq_calls(self.router)

    # -- life cycle -----------------------------------------------------------

    def start(self, loop=None) -> "Transport":
        """Start the I/O thread.  With ``loop`` (call from its thread), frames
        are read and handed on by that loop's thread, saving a thread hop."""
        if loop is not None:
            self._loop = loop
            self._fd = self.router.getsockopt(zmq.FD)
            loop.add_reader(self._fd, self._on_readable)
            self._clock = loop_clock(loop)
            self._self_pipe = _idle_self_pipe(loop, self._fd)
            if _native is not None:
                # Only on the loop's thread, which stop() runs on: no read
                # can then reach the socket once it is closed.
                self._handle = self.router.underlying
                self._recv_message = _native.recv
                self._poll = _native.poll
                reader = getattr(_native, "Reader", None)  # _read_one in C, with no Python on the way
                if reader is not None:
                    self._read_one = reader(self, self._handle, self._heard, self.stats, self._reading)
            self._tick_handle = loop.call_soon(self._tick)
            self._reading.gap = max(2 * self.heartbeat_interval, 0.2)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close everything; with a loop, call from its thread."""
        if self._stopping:
            return
        self._stopping = True
        if self._loop is not None:
            self._tick_handle.cancel()
            if not self._loop.is_closed():
                self._loop.remove_reader(self._fd)
        with self._lock:
            self._wake_out.send(b"stop")
        self._thread.join(5)
        self.router.close(linger=0)
        with self._lock:
            self._aimed.forget()
            self._conns.close_all()
            self._wake_out.close(linger=0)
        self.ctx.term()

    # -- sending (any thread) -------------------------------------------------

    def _dealer(self, peer: NodeRef, by_sender: bool = True) -> zmq.Socket | None:
        """The DEALER to ``peer`` in this node's epoch with it, opened if need be (hold the lock);
        None while this node asks to suspend the session: what is sent then waits."""
        if peer.incarnation is None:
            return self._conns.probe(peer)
        status = self._sessions.status(peer)
        if status == ASKING:
            return None
        epoch = self._sessions.epoch(peer)
        sock = self._conns.current(peer, epoch)
        if sock is None:
            self._aimed.forget()
            resume = status == SUSPENDED
            sock = self._conns.open(peer, epoch, resume)
            self._wake_out.send(b"monitor")  # the I/O thread watches its connection from now on
            now = time.monotonic()
            if resume:  # the same session, on a new connection: a down if it is not made in time
                self._sessions.resuming(peer, now)
                self.stats.resumed += 1
                self._last_seen[peer] = now
                log.debug("resuming the session with %s", peer)
            else:
                self._last_seen.setdefault(peer, now)
        self._sessions.opening(peer, time.monotonic(), by_sender)
        return sock

    def _close_dealer(self, key: tuple[str, int], linger: int = 0) -> None:
        self._conns.close(key, linger)
        self._aimed.forget()

    def send(self, peer: NodeRef, frames: list[bytes]) -> None:
        """Send frames to ``peer`` in order, without blocking; lost if the peer is gone."""
        if self._earlier_self(peer):
            self._lose_earlier_self(peer, len(frames))
            return
        with self._lock:
            if self._stopping:
                return
            try:
                sock = peer.incarnation is not None and self._dealers.get((peer.host, peer.port))
                if sock:
                    self._sessions.sending(peer)
                else:
                    sock = self._dealer(peer)
                    if sock is None:  # this node asks to suspend the session: sent on its answer
                        self._held.setdefault(peer, []).append(list(frames))
                        return
                if len(frames) == 1:
                    data = frames[0]
                    _send(sock, data, _NOBLOCK, len(data) < 4096)
                else:
                    sock.send_multipart(frames, flags=_NOBLOCK, copy=len(frames[0]) < 4096)
            except zmq.ZMQError as exc:
                self.stats.dropped_out += len(frames)
                if exc.errno in (errno.EMFILE, errno.ENFILE):
                    log.error("dropped %d frame(s) to %s: %s", len(frames), peer, self._no_files())
                else:
                    log.warning("dropped %d frame(s) to %s: %s", len(frames), peer, exc)
                return
        stats = self.stats
        stats.frames_out += len(frames)
        stats.bytes_out += sum(map(len, frames))

    # send_frame(peer, data): ``send(peer, [data])``, with less to do on the way (see __init__).

    def _send_frame(self, peer: NodeRef, data: bytes) -> None:
        """send_frame's general path: a peer other than the last, a large frame, a send that failed."""
        with self._lock:
            if peer is self._aimed.peer or self._aim(peer):
                try:
                    _send(self._aimed.sock, data, _NOBLOCK, len(data) < 4096)
                except zmq.ZMQError as exc:
                    self.stats.dropped_out += 1
                    log.warning("dropped a frame to %s: %s", peer, exc)
                    return
                stats = self.stats
                stats.frames_out += 1
                stats.bytes_out += len(data)
                return
        self.send(peer, [data])

    def _aim(self, peer: NodeRef) -> bool:
        """Make ``peer`` send_frame's peer, if its DEALER is open (hold the lock)."""
        sock = self._dealers.get((peer.host, peer.port)) if peer.incarnation is not None else None
        if sock is None:
            return False
        self._sessions.sending(peer)
        self._aimed.aim(peer, sock)
        return True

    def _forget_heard(self, peers: list[NodeRef]) -> None:
        """Drop the reader's entries of ``peers``, and whether they were clients (hold the lock)."""
        self._clients.difference_update(peers)
        heard = self._heard
        for identity, (peer, _) in list(heard.items()):
            if peer in peers:
                del heard[identity]

    def _forget_heard_ids(self, peer: NodeRef) -> None:
        """Drop the reader's entries of ``peer``'s connections (hold the lock): it speaks on a new one.
        What is left of an old one is then read as from a sender not known, and found stale."""
        heard = self._heard
        for identity in [i for i, (p, _) in heard.items() if p == peer]:
            del heard[identity]

    def peers(self) -> list[NodeRef]:
        """The peers up (or suspended), or being connected to for frames sent; not one only told
        that its session ended (what it sent late in that session, after its down, makes that so)."""
        with self._lock:
            return self._sessions.listed()

    def is_client(self, peer: NodeRef) -> bool:
        """Whether ``peer`` said it is a client (``Network(client=True)``): hidden, as Erlang's hidden nodes."""
        with self._lock:
            return peer in self._clients

    def lost(self, peer: NodeRef) -> bool:
        """This node ended its session with ``peer`` (a down) and has not met it again."""
        with self._lock:
            return self._sessions.ended(peer)

    def unresponsive(self) -> list[NodeRef]:
        """Peers up whose own heartbeats stopped for ``heartbeat_timeout``: busy, perhaps holding the GIL, not down."""
        now = time.monotonic()
        if self._deaf(now):
            return []  # this node's own reader stalled: silence proves nothing
        with self._lock:
            return [p for p in self._sessions.up() if now - self._last_seen.get(p, now) > self.heartbeat_timeout]

    # -- reading on the loop's thread ----------------------------------------------

    def _on_readable(self):
        # The ROUTER's FD signalled.  zmq's FD is edge-triggered: read until
        # there is nothing left (or come back at once if the bound stopped
        # us), then wait for more right here while the loop is idle.
        if self._stopping:
            return  # a call_soon from before stop(): the ROUTER is closed
        if self._read_router():
            self._loop.call_soon(self._on_readable)
            return
        self._attend(_monotonic())
        # While the loop is idle, wait for the next message in zmq_poll.
        if self._self_pipe is not None and _wait_idle(
            self._loop, self._handle, self._self_pipe, self._clock, self._poll, self._read_one, self.on_read_done
        ):
            if not self._stopping:  # messages may wait whose wake-up zmq_poll took: read them now
                self._loop.call_soon(self._on_readable)

    def _tick(self):
        """Also read now and then: an idle loop proves it can read (see _beat)."""
        if self._stopping:
            return
        self._tick_handle = self._loop.call_later(self.heartbeat_interval / 2, self._tick)
        if self._read_router():
            self._loop.call_soon(self._on_readable)
        else:
            self._attend(_monotonic())
        if self.idle_close:
            self._scan_idle(_monotonic())

    def _attend(self, now: float) -> None:
        """The loop's thread reads (or found nothing to read) at ``now``."""
        reading = self._reading
        if now - reading.read_at > reading.gap:
            reading.attentive_since = now
        reading.read_at = now

    def _deaf(self, now: float) -> bool:
        """True while the loop's thread is too busy to read (a process running
        CPU-bound code), and just after, while it reads what came meanwhile:
        silence from peers then proves nothing."""
        reading = self._reading
        stalled = now - reading.read_at > reading.gap
        return self._loop is not None and (stalled or now - reading.attentive_since <= reading.gap)

    # -- the I/O thread -------------------------------------------------------

    def _io(self):
        poller = zmq.Poller()
        if self._loop is None:
            poller.register(self.router, zmq.POLLIN)
        poller.register(self._wake_in, zmq.POLLIN)
        if self._zap is not None:
            poller.register(self._zap.socket, zmq.POLLIN)
        monitors = Monitors(poller)
        next_beat = time.monotonic()
        try:
            while True:
                events = dict(poller.poll(max(0.0, next_beat - time.monotonic()) * 1000))
                if self._wake_in in events:
                    if self._wake_in.recv() == b"stop":
                        break
                    with self._lock:
                        new, self._conns.new_monitors = self._conns.new_monitors, []
                    monitors.add(new)
                if self._zap is not None and self._zap.socket in events:
                    refused = self._zap.answer()
                    if refused is not None:
                        self.on_refused(refused)
                for peer, sock, event in monitors.read(events):
                    self._on_connection(peer, sock, event)
                if self.router in events:
                    self._read_router()
                now = time.monotonic()
                if now >= next_beat:
                    self._beat(now)
                    if self._loop is None and self.idle_close:
                        self._scan_idle(now)  # this thread reads: the idle close runs here
                    if self._zap is not None:
                        self._zap.refusals.tick()  # the counts of refusals due
                    next_beat = now + self.heartbeat_interval
        except zmq.ContextTerminated:
            pass
        except Exception:  # noqa: BLE001 - the node must hear that its transport died
            log.exception("transport I/O thread failed")
        finally:
            self._wake_in.close(linger=0)
            monitors.close()
            if self._zap is not None:
                self._zap.close()

    def _on_connection(self, peer: NodeRef, sock: zmq.Socket, event: int) -> None:
        """A DEALER's connection was made, or lost (a down, if it is the peer's current one)."""
        with self._lock:
            if not self._conns.watched((peer.host, peer.port), sock):
                return  # closed already: its session has ended, or was suspended
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._sessions.connected(peer)
                return
        self._lose(peer, "its connection closed" if event == zmq.EVENT_DISCONNECTED else "the connection was refused")

    def _read_router(self) -> bool:
        """Hand on what the ROUTER holds, then run a kernel turn (``on_read_done``);
        True if stopped by the bound with more to read."""
        read_one = self._read_one
        handed = False
        try:
            for _ in range(1000):  # bounded: heartbeats and other callbacks keep their rhythm
                if not read_one():
                    return False
                handed = True
            return True
        finally:
            if handed:
                self.on_read_done()

    def _read_one(self) -> bool:
        """Read one message and hand its frames on; False if there was none."""
        message = self._recv_message(self._handle)
        if message is None:
            return False
        entry = self._heard.get(message[0])
        if entry is None or len(message) != 2:
            self._read_unusual(message)
            return True
        # What termite nodes send: one part, from a peer already known.
        now = _monotonic()
        reading = self._reading
        if now - reading.read_at > reading.gap:  # _attend, inline: this runs per message
            reading.attentive_since = now
        entry[1] = reading.read_at = now
        frame = message[1]
        size = len(frame)
        if not size:
            return True  # heartbeat
        peer = entry[0]
        if size > self.max_frame:
            self._too_large(peer, frame)
            return True
        stats = self.stats
        stats.bytes_in += size
        stats.frames_in += 1
        self.on_frames(peer, [frame])
        return True

    def _read_unusual(self, message: tuple) -> None:
        """Hand on the frames of a message from a sender not known yet, or of several parts."""
        peer, frames = self._unusual(message)
        if frames:
            self.stats.frames_in += len(frames)
            self.on_frames(peer, frames)

    def _unusual(self, message: tuple) -> tuple[NodeRef | None, list[bytes]]:
        """A message from a sender not known yet (parse its id, greet it), or
        of several parts: its sender and the frames to hand on (maybe none)."""
        identity = message[0]
        entry = self._heard.get(identity) or self._admit(identity)
        if entry is None:
            return None, []
        now = _monotonic()
        self._attend(now)
        entry[1] = now
        peer = entry[0]
        if len(message) == 3 and not message[1]:  # the idle close's, not the session's
            self._control(identity, peer, message[2])
            return peer, []
        frames = []
        for frame in message[1:]:
            if not frame:
                continue  # heartbeat
            if len(frame) > self.max_frame:
                self._too_large(peer, frame)
                continue
            self.stats.bytes_in += len(frame)
            frames.append(frame)
        return peer, frames

    def _admit(self, identity: bytes) -> list | None:
        """The ``[peer, heard at]`` entry of a sender heard for the first time on
        this connection, or None if what it sends is dropped (refused, or of an
        ended session)."""
        named = self._ids.peer(identity)
        if named is None:
            self.stats.dropped_in += 1
            self._ids.log_unnamed(identity)  # one line per sender, a count for all
            return None
        peer, epoch = named
        if epoch is None:  # a probe: outside any session
            with self._lock:
                if is_client(identity):  # a client's hello: what this node sends back opens no node's session
                    self._clients.add(peer)
                return self._heard.setdefault(identity, [peer, 0.0])
        restarted = []
        with self._lock:
            before = self._sessions.status(peer)
            accept, down, newly_up = self._sessions.heard(peer, epoch)
            if not accept:
                # Of a session this node ended: the peer learns it from a connection in this epoch.
                self.stats.dropped_in += 1
                if (peer.host, peer.port) not in self._dealers:
                    self._tell(peer)
                if identity not in self._stale:
                    self._stale.add(identity)
                    log.info("dropping what %s sends in session %d, which this node has ended (now %d)",
                             peer, epoch, self._sessions.epoch(peer))
                return None
            if down:
                self._end(peer)  # the peer ended the session: this side ends it too, first
            order, current = (epoch, reopened_of(identity)), self._incoming.get(peer)
            stale = current is not None and order < current[0]  # a connection replaced since: nothing to resume
            if not stale:
                self._incoming[peer] = (order, identity)
            if newly_up:
                # Another node at this address: one that was there before has ended (suspended, its
                # loss could not be seen).
                restarted = [p for p in self._sessions.peers()
                             if p.host == peer.host and p.port == peer.port and p.incarnation != peer.incarnation]
                try:
                    self._dealer(peer, by_sender=False)  # connect back: heartbeats and replies go that way
                except zmq.ZMQError as exc:
                    self.stats.dropped_in += 1
                    self._cannot_connect_back(peer, exc)
                    return None
            elif before in (SUSPENDED, ASKING, RESUMING) and not stale:
                self._forget_heard_ids(peer)  # the ids of its earlier connections: a few per peer at most
                try:
                    self._resumed_by(peer, before)
                except zmq.ZMQError as exc:
                    self.stats.dropped_in += 1
                    self._cannot_connect_back(peer, exc)
                    return None
            entry = self._heard.setdefault(identity, [peer, 0.0])
            self._last_seen[peer] = time.monotonic()
            if is_client(identity):
                self._clients.add(peer)
        for old in restarted:
            self._lose(old, f"another node ({peer}) listens at its address")
        if self._downs:  # decided here, or by the I/O thread and not yet handed on: before any of this sender
            self._report_downs()
        if newly_up:
            self.on_peer_up(peer)
        return entry

    def forget_probe(self, address: NodeRef) -> None:
        """The hello to ``address`` is answered (or given up): close its probe, which no session uses."""
        with self._lock:
            self._conns.close_probe((address.host, address.port))

    def reach(self, peer: NodeRef) -> None:
        """Open a connection to ``peer`` if none is, so that a new session can begin; a peer that
        does not answer is not reported down for it."""
        with self._lock:
            if not self._stopping and peer.incarnation is not None and self._sessions.status(peer) is None:
                self._tell(peer)

    def watch(self, peer: NodeRef) -> None:
        """Something here now needs ``peer``'s heartbeats (``monitor_node(peer)``), with nothing to
        send: reopen its session if it is suspended, and if there is none, open one whose failure is
        reported: as Erlang's monitor_node connects, and says nodedown at once if it cannot (a
        node already lost, nothing listening): never a watch that waits for ever.  This node itself
        is never down to itself: nothing to do."""
        if peer == self.ref:
            return
        if self._earlier_self(peer):
            self._lose_earlier_self(peer, 0)
            return
        with self._lock:
            if self._stopping:
                return
            status = self._sessions.status(peer)
            if status == SUSPENDED:
                self._tell(peer)
            elif status is None or status == CONNECTING:  # then a connection opened only to be heard
                try:
                    sock = self._dealer(peer)  # its down is reported from now on
                    if sock is not None and status is None:
                        sock.send(_HEARTBEAT, flags=zmq.NOBLOCK)
                except zmq.ZMQError:
                    pass

    def _tell(self, peer: NodeRef) -> None:
        """Open a connection to ``peer`` in this epoch, so it learns that its session ended (hold the lock)."""
        if self._earlier_self(peer):  # it has ended: nothing to tell
            return
        try:
            sock = self._dealer(peer, by_sender=False)
            if sock is not None:  # else this node asks to suspend the session: its answer will tell
                sock.send(_HEARTBEAT, flags=zmq.NOBLOCK)
        except zmq.ZMQError:
            pass

    def _end(self, peer: NodeRef) -> None:
        """The session with ``peer`` has ended: close its connection (hold the lock); its senders are
        forgotten, and the down handed on, by _report_downs."""
        self._close_dealer((peer.host, peer.port))
        self._last_seen.pop(peer, None)
        self._incoming.pop(peer, None)
        held = self._held.pop(peer, None)
        if held:  # waited for the answer to a suspend: lost with the session, as frames in flight are
            self.stats.dropped_out += sum(map(len, held))
        self._downs.append(peer)

    def _earlier_self(self, peer: NodeRef) -> bool:
        """``peer`` is an earlier incarnation of this node (a pid kept from before a restart): it has
        ended, as this node listens at its address.  A connection to it would reach this node."""
        ref = self.ref
        return (peer.port == ref.port and peer.host == ref.host and peer.incarnation != ref.incarnation
                and peer.incarnation is not None)

    def _lose_earlier_self(self, peer: NodeRef, frames: int) -> None:
        """What is sent to an earlier incarnation of this node is lost with it, and its down follows at
        once, as for any peer that cannot be reached (links, monitors: noconnection), if anything here
        holds it: plain sends to its pids are dropped as to any ended process, without a down each."""
        holds = self.holds(peer)
        with self._lock:
            if self._stopping:
                return
            self.stats.dropped_out += frames
            if not holds:
                return
            self._sessions.opening(peer, time.monotonic(), True)
        # Not news: this node's own restart ended it.
        self._lose(peer, "an earlier incarnation of this node, which listens at its address now", logging.DEBUG)

    def _lose(self, peer: NodeRef, why: str, level: int = logging.WARNING) -> None:
        """``peer`` is down, seen from here first (any thread): end the session and say so (at ``level``)."""
        with self._lock:
            if self._sessions.status(peer) is None:
                return
            report = self._sessions.lost(peer)
            self._end(peer)
            if not report:
                self._downs.remove(peer)
                self._forget_heard([peer])
            client = peer in self._clients
        if report:
            if client:  # a script or a launcher that ended: it was never one of the cluster's nodes
                log.info("client %s left: %s", peer, why)
            else:
                log.log(level, "node %s is down: %s", peer, why)
            if self._loop is None:
                self._report_downs()
            elif not self._stopping:
                self._loop.call_soon_threadsafe(self._report_downs_after_reading)

    def _report_downs_after_reading(self) -> None:
        """On the loop: what the lost peers sent and this node has received is handed on first (as
        Erlang delivers what came before a nodedown), then their downs."""
        for _ in range(10):  # bounded: a peer that was only stopped may go on sending its ended session
            if self._stopping or not self._read_router():
                break
        self._report_downs()

    def _report_downs(self) -> None:
        """Hand on the downs declared, on the thread that reads, before anything of the next sessions;
        what the lost peers send from now on is dropped."""
        with self._lock:
            downs, self._downs = self._downs, []
            self._forget_heard(downs)
        for peer in downs:
            self.on_peer_down(peer)

    def _too_large(self, peer: NodeRef, frame: bytes) -> None:
        self.stats.dropped_in += 1
        if self.on_skipped is not None:
            self.on_skipped(peer, len(frame))
        log.warning("dropped a %d-byte frame from %s: over the %d-byte limit", len(frame), peer, self.max_frame)

    def _beat(self, now: float):
        """Heartbeats to every peer; fold what the reader heard; a connection not made in time is a down."""
        with self._lock:
            for sock in list(self._dealers.values()):
                try:
                    sock.send(_HEARTBEAT, flags=zmq.NOBLOCK)
                except zmq.ZMQError:
                    pass
            last_seen, heard = self._last_seen, self._heard
            for identity, (peer, heard_at) in list(heard.items()):  # what the reader heard, by routing id
                seen = last_seen.get(peer)
                if seen is not None and heard_at > seen:
                    last_seen[peer] = heard_at
            overdue = self._sessions.overdue(now)
        for peer in overdue:
            # libzmq opens the TCP socket on its own thread, and gives up silently when it cannot.
            why = self._no_files() if _out_of_files() else None
            self._lose(peer, f"no connection made in {self._sessions.connect_timeout:.1f} s"
                             + (f": {why}" if why else ""))

    def _cannot_connect_back(self, peer: NodeRef, exc: zmq.ZMQError) -> None:
        if exc.errno in (errno.EMFILE, errno.ENFILE):
            log.error("dropped a message from %s: cannot connect back: %s", peer, self._no_files())
        else:
            log.warning("dropped a message from %s: cannot connect back: %s", peer, exc)

    def short_of_files(self, since: float) -> str | None:
        """Why connections cannot be opened, if for want of files or sockets since ``since`` (or now)."""
        if self.out_of_files is not None and self.out_of_files[0] >= since:
            return self.out_of_files[1]
        if _out_of_files():
            with self._lock:
                return self._no_files()
        return None

    def _no_files(self) -> str:
        """What to say when a connection cannot be opened for want of files or sockets (and remember it)."""
        try:
            import resource

            limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        except (ImportError, ValueError, OSError):
            limit = None
        why = (f"too many open files ({len(self._sessions.peers())} peers, open-file limit {limit}, "
               f"ZeroMQ sockets {self.ctx.get(zmq.MAX_SOCKETS)}): raise ulimit -n")
        self.out_of_files = (time.monotonic(), why)
        return why

    # -- the idle close: sessions suspended by agreement, and resumed (termite._net.sessions) -------

    def _scan_idle(self, now: float) -> None:
        """On the reading thread: ask to suspend each session idle for ``idle_close`` that nothing holds."""
        if now < self._next_scan:
            return
        self._next_scan = now + min(self.heartbeat_interval, self.idle_close / 4)
        traffic = self.traffic()
        idle = []
        with self._lock:
            for peer, entry in self._sessions.entries():
                if entry.status != UP:
                    continue
                seen = traffic.get(peer, ())
                if seen != entry.activity:
                    entry.activity, entry.quiet_since = seen, now
                elif now - entry.quiet_since >= self.idle_close:
                    idle.append((peer, entry))
        for peer, entry in idle:
            if self.holds(peer):
                entry.quiet_since = now  # asked again after another idle_close
                continue
            self._ask(peer)

    def _ask(self, peer: NodeRef) -> bool:
        """Ask ``peer`` to suspend the session (it is idle here and nothing holds it); from now on
        what is sent to it waits for the answer.  True if asked."""
        with self._lock:
            entry = self._sessions.entry(peer)
            if entry is None or entry.status != UP:
                return False
            key = (peer.host, peer.port)
            sock = self._conns.park(key)
            if sock is None:
                return False
            self._aimed.forget()
            try:
                sock.send_multipart([b"", _SUSPEND], flags=_NOBLOCK)
            except zmq.ZMQError:
                self._conns.unpark(key)
                return False
            entry.status = ASKING  # its activity stays what it was when asking
        log.debug("asking %s to suspend the session", peer)
        return True

    def _control(self, identity: bytes, peer: NodeRef, frame: bytes) -> None:
        """A frame of the idle close from ``peer``, on the reading thread."""
        if frame == _SUSPEND:
            self._on_suspend(peer)
        elif frame == _SUSPENDED or frame == _STAY:
            current = self._incoming.get(peer)
            if current is not None and identity == current[1]:  # else an answer its connection outlived
                self._on_answer(peer, frame == _SUSPENDED)
        else:
            log.warning("dropped an unknown transport frame %r from %s", frame[:32], peer)

    def _on_suspend(self, peer: NodeRef) -> None:
        """``peer`` asks to suspend the session: yes if it is idle here too and nothing holds it."""
        entry = self._sessions.entry(peer)
        if entry is None or entry.status not in (UP, ASKING):
            return  # the session ended, or was resumed since: the asker hears from the next connection
        if entry.status == ASKING and _order(self.ref) > _order(peer):
            return  # both asked at once: the lower node answers, this one waits for its answer
        now = time.monotonic()
        agree = False
        if self.idle_close and not self._held.get(peer) and not self.holds(peer):
            seen = self.traffic().get(peer, ())
            # Quiet here too, for half this node's own idle_close: a node that keeps its connections
            # longer (a client with the default) is not made to close them by one that closes sooner.
            agree = seen == entry.activity and now - entry.quiet_since >= self.idle_close / 2
        key = (peer.host, peer.port)
        with self._lock:
            if self._sessions.entry(peer) is not entry:
                return
            sock = self._conns.dealers.get(key) or self._conns.parked.get(key)
            if sock is None:
                return
            try:
                sock.send_multipart([b"", _SUSPENDED if agree else _STAY], flags=_NOBLOCK)
            except zmq.ZMQError:
                agree = False
            if agree:
                self._suspend(peer, key, linger=int(self.heartbeat_timeout * 1000))  # the answer must leave
            elif entry.status == ASKING:
                self._stay(peer, key)
        if agree:
            log.debug("suspended the session with %s, as it asked", peer)

    def _on_answer(self, peer: NodeRef, suspended: bool) -> None:
        """``peer`` answered this node's request to suspend."""
        entry = self._sessions.entry(peer)
        if entry is None or entry.status != ASKING:
            return
        key = (peer.host, peer.port)
        if not suspended:
            with self._lock:
                self._stay(peer, key)
            return
        # What the peer sent before its answer is read by now: anything since the question, or anything
        # that holds the session now, reopens it at once.
        wake = self.traffic().get(peer, ()) != entry.activity or self.holds(peer)
        with self._lock:
            if self._sessions.entry(peer) is not entry:
                return
            self._suspend(peer, key, linger=0)  # the question was the last it carried
            if wake or self._held.get(peer):
                self._reopen(peer)
        log.debug("suspended the session with %s%s", peer, "; reopened it at once" if wake else "")

    def _suspend(self, peer: NodeRef, key: tuple[str, int], linger: int) -> None:
        """Close this node's connection to ``peer``; the session stays, suspended (hold the lock)."""
        self._close_dealer(key, linger)
        self._sessions.set_status(peer, SUSPENDED, time.monotonic())
        self._last_seen.pop(peer, None)  # not heartbeated: neither unresponsive nor up
        self.stats.suspended += 1

    def _stay(self, peer: NodeRef, key: tuple[str, int]) -> None:
        """The session stays: its connection back in use, and what waited sent on it (hold the lock)."""
        self._conns.unpark(key)
        self._sessions.set_status(peer, UP, time.monotonic())
        self._release(peer)

    def _reopen(self, peer: NodeRef) -> None:
        """Resume the suspended session with ``peer``: what waited goes first, else a heartbeat, so
        that the peer connects back (hold the lock)."""
        if self._held.get(peer):
            self._release(peer)
        else:
            self._tell(peer)

    def _release(self, peer: NodeRef) -> None:
        """Send what waited for the answer, in order, before anything sent after (hold the lock)."""
        held = self._held.pop(peer, None)
        if not held:
            return
        try:
            sock = self._dealer(peer)
            for frames in held:
                sock.send_multipart(frames, flags=_NOBLOCK, copy=False)
                self.stats.frames_out += len(frames)
                self.stats.bytes_out += sum(map(len, frames))
        except zmq.ZMQError as exc:
            self.stats.dropped_out += sum(map(len, held))
            log.warning("dropped frames to %s: %s", peer, exc)

    def _resumed_by(self, peer: NodeRef, before: str) -> None:
        """``peer`` speaks on a new connection of a session suspended (or being suspended, or resumed
        by this node): the session goes on, with this node's connection back (hold the lock)."""
        key = (peer.host, peer.port)
        if before == ASKING:  # it answered yes and has spoken since: its answer is implied
            self._conns.close(key)
            self._sessions.set_status(peer, SUSPENDED, time.monotonic())
            self.stats.suspended += 1
        if before != RESUMING:
            self._dealer(peer, by_sender=False)
        self._sessions.set_status(peer, UP, time.monotonic())
        self._last_seen[peer] = time.monotonic()
        self._release(peer)


def _out_of_files() -> bool:
    """Whether this process can open no more files (ulimit -n reached)."""
    try:
        os.close(os.dup(2))
    except OSError as exc:
        return exc.errno in (errno.EMFILE, errno.ENFILE)
    return False


def _order(ref: NodeRef) -> tuple:
    """Which of two nodes answers when both ask to suspend their session: the lower."""
    return (ref.host, ref.port, ref.incarnation or 0)
