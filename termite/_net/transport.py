"""Transport: frames between nodes over ZeroMQ, authenticated and encrypted.

It knows node addresses and frames (bytes), not processes.

- Each node binds one ROUTER socket.  To reach a peer it connects a DEALER
  to the peer's ROUTER, on first need; the DEALER's routing id is this node's
  identity (host:port:incarnation), so the peer's ROUTER knows who is
  speaking.  One DEALER -> ROUTER connection per pair of nodes, one way each,
  keeps frames from one node to another in order.
- Sends happen on the caller's thread (the kernel's) under a lock: no thread
  hop on the way out.  Frames that are waiting together go as one multipart
  message.
- An I/O thread reads the ROUTER, answers ZAP (RFC 27) requests, sends
  heartbeats to every peer and declares a peer down when it has heard nothing
  from it for ``heartbeat_timeout`` seconds.  It holds the GIL only briefly,
  so it keeps its rhythm while a process of the node runs CPU-bound code.
- With keys, every connection is CURVE: the server (ROUTER) and client
  (DEALER) use the cluster's key pair, and the ZAP handler admits only clients
  whose public key is the cluster's, i.e. who hold its secret key (see
  termite/_net/admission.py).  Without keys (allowed on loopback only, see
  termite/_net/keys.py) frames go in clear.

Frames received are handed to ``on_frames(peer, frames)``, and new peers to
``on_peer_up(peer)``, on the thread that reads the ROUTER: the node's event
loop thread when started with one (no thread hop on the way in), else the
I/O thread.  ``on_peer_down(peer)`` comes from the I/O thread, which does
not declare a peer down while the loop's thread is too busy to read: a
process running CPU-bound code makes every peer *look* silent; nor just
after such a stall, while the reader catches up with what waited.  An empty
frame is a heartbeat and is not handed on.

On the loop's thread, frames handed on are followed by ``on_read_done()``
(the kernel's turn, which sends the replies).  While the loop has nothing
else to do, its thread waits for the next message in zmq_poll rather than in
the loop's own select, and runs a turn after each one: a round trip between
nodes then costs no asyncio iteration and no ``EVENTS`` check from Python.
On that thread, and for small frames sent, the calls go straight to pyzmq's
own libzmq through termite._net._zmqcalls; where that module cannot load,
pyzmq makes every call.  Both, and that wait, are in termite/_net/zmq_native.py.
"""

from __future__ import annotations

import logging
import threading
import time

import zmq

from termite._core.ids import NodeRef
from termite._net import zmq_native as _zmq_native
from termite._net.admission import RoutingIds, ZapHandler, curve_client, curve_server, identity_of
from termite._net.keys import ClusterKeys
from termite._net.zmq_native import (
    idle_self_pipe as _idle_self_pipe,
    loop_clock,
    pyzmq_calls as _pyzmq_calls,
    wait_idle as _wait_idle,
)

__all__ = ["Transport", "TransportStats"]

log = logging.getLogger("termite.transport")

_HEARTBEAT = b""
# A plain int: pyzmq's enum flags cost microseconds per operation on the hot path.
_NOBLOCK = int(zmq.NOBLOCK)
# zmq.Socket.send is a Python wrapper (for DRAFT options termite never uses)
# around this one.
_send = zmq.backend.Socket.send
_monotonic = time.monotonic
# termite._net._zmqcalls, or None.  Assigned, not imported by name: CPython 3.11
# compiles ``name.send(...)`` on an imported name otherwise than send_frame did.
_native = _zmq_native.native


class TransportStats:
    """Counters the node reports (load meters, dashboard)."""

    __slots__ = ("frames_in", "frames_out", "dropped_in", "dropped_out", "bytes_in", "bytes_out", "refused")

    def __init__(self):
        self.frames_in = self.frames_out = self.dropped_in = self.dropped_out = self.refused = 0
        self.bytes_in = self.bytes_out = 0


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
    ):
        self.host = host
        self.keys = keys
        self.on_frames = on_frames
        self.on_peer_down = on_peer_down or (lambda peer: None)
        self.on_peer_up = on_peer_up or (lambda peer: None)
        self.on_refused = on_refused or (lambda address: None)
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.max_frame = max_frame
        self.stats = TransportStats()
        self.ctx = zmq.Context()
        # The ZAP handler must be bound before any CURVE socket binds.
        self._zap = ZapHandler(self.ctx, keys, self.stats) if keys is not None else None
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
        self._identity = identity_of(self.ref)
        self._lock = threading.Lock()  # guards the DEALERs and the peer table
        self._dealers: dict[tuple[str, int], zmq.Socket] = {}
        self._to, self._to_sock, self._to_handle = None, None, None  # send_frame's last peer, its DEALER and its handle
        self._last_seen: dict[NodeRef, float] = {}  # peers we expect heartbeats from
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
        self._read_at = time.monotonic()  # when that thread last read a message, or the ROUTER to its end
        # Since when that thread has read without a stall: just after one,
        # what waited meanwhile is still to be read (see _beat).
        self._attentive_since = self._read_at
        self._gap = float("inf")  # the longest pause in reading that is not a stall (with a loop: see start)
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
            self._tick_handle = loop.call_soon(self._tick)
            self._gap = max(2 * self.heartbeat_interval, 0.2)
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
            self._to = None
            for sock in self._dealers.values():
                sock.close(linger=0)
            self._dealers.clear()
            self._wake_out.close(linger=0)
        self.ctx.term()

    # -- sending (any thread) -------------------------------------------------

    def _dealer(self, peer: NodeRef) -> zmq.Socket:
        key = (peer.host, peer.port)
        sock = self._dealers.get(key)
        if sock is None:
            sock = self.ctx.socket(zmq.DEALER)
            sock.linger = 0
            sock.routing_id = self._identity
            sock.sndhwm = 0  # never block or drop on our side; heartbeats bound the damage
            if self.keys is not None:
                curve_client(sock, self.keys)
            try:
                sock.connect(f"tcp://{peer.host}:{peer.port}")
            except zmq.ZMQError:
                sock.close(linger=0)  # an open socket would keep ctx.term() waiting forever
                raise
            self._dealers[key] = sock
        if peer.incarnation is not None:  # an address being probed sends no heartbeats of its own
            self._last_seen.setdefault(peer, time.monotonic())
        return sock

    def send(self, peer: NodeRef, frames: list[bytes]) -> None:
        """Send frames to ``peer`` in order, without blocking; lost if the peer is gone."""
        with self._lock:
            if self._stopping:
                return
            try:
                sock = self._dealers.get((peer.host, peer.port)) or self._dealer(peer)
                if len(frames) == 1:
                    data = frames[0]
                    _send(sock, data, _NOBLOCK, len(data) < 4096)
                else:
                    sock.send_multipart(frames, flags=_NOBLOCK, copy=len(frames[0]) < 4096)
            except zmq.ZMQError as exc:
                self.stats.dropped_out += len(frames)
                log.warning("dropped %d frame(s) to %s: %s", len(frames), peer, exc)
                return
        self.stats.frames_out += len(frames)

    def send_frame(self, peer: NodeRef, data: bytes) -> None:
        """``send(peer, [data])``, with less to do on the way."""
        with self._lock:
            if peer is self._to or self._aim(peer):
                try:
                    if _native is not None and len(data) < 4096:
                        _native.send(self._to_handle, data)
                    else:
                        _send(self._to_sock, data, _NOBLOCK, len(data) < 4096)
                except zmq.ZMQError as exc:
                    self.stats.dropped_out += 1
                    log.warning("dropped a frame to %s: %s", peer, exc)
                    return
                self.stats.frames_out += 1
                return
        self.send(peer, [data])

    def _aim(self, peer: NodeRef) -> bool:
        """Make ``peer`` send_frame's peer, if its DEALER is open (hold the lock)."""
        sock = self._dealers.get((peer.host, peer.port))
        if sock is None:
            return False
        self._to, self._to_sock, self._to_handle = peer, sock, sock.underlying
        return True

    def forget(self, peer: NodeRef) -> None:
        """Close the connection to ``peer``; the next send reconnects."""
        with self._lock:
            sock = self._dealers.pop((peer.host, peer.port), None)
            self._to = None
            self._last_seen.pop(peer, None)
            self._forget_heard([peer])
            if sock is not None:
                sock.close(linger=0)

    def _forget_heard(self, peers: list[NodeRef]) -> None:
        """Drop the reader's entries of ``peers`` (hold the lock)."""
        heard = self._heard
        for identity, (peer, _) in list(heard.items()):
            if peer in peers:
                del heard[identity]

    def peers(self) -> list[NodeRef]:
        with self._lock:
            return list(self._last_seen)

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

    def _attend(self, now: float) -> None:
        """The loop's thread reads (or found nothing to read) at ``now``."""
        if now - self._read_at > self._gap:
            self._attentive_since = now
        self._read_at = now

    def _deaf(self, now: float) -> bool:
        """True while the loop's thread is too busy to read (a process running
        CPU-bound code), and just after, while it reads what came meanwhile:
        silence from peers then proves nothing."""
        return self._loop is not None and (now - self._read_at > self._gap or now - self._attentive_since <= self._gap)

    # -- the I/O thread -------------------------------------------------------

    def _io(self):
        poller = zmq.Poller()
        if self._loop is None:
            poller.register(self.router, zmq.POLLIN)
        poller.register(self._wake_in, zmq.POLLIN)
        if self._zap is not None:
            poller.register(self._zap.socket, zmq.POLLIN)
        next_beat = time.monotonic()
        try:
            while True:
                timeout_ms = max(0.0, next_beat - time.monotonic()) * 1000
                events = dict(poller.poll(timeout_ms))
                if self._wake_in in events:
                    break  # stop
                if self._zap is not None and self._zap.socket in events:
                    refused = self._zap.answer()
                    if refused is not None:
                        self.on_refused(refused)
                if self.router in events:
                    self._read_router()
                now = time.monotonic()
                if now >= next_beat:
                    self._beat(now)
                    next_beat = now + self.heartbeat_interval
        except zmq.ContextTerminated:
            pass
        except Exception:  # noqa: BLE001 - the node must hear that its transport died
            log.exception("transport I/O thread failed")
        finally:
            self._wake_in.close(linger=0)
            if self._zap is not None:
                self._zap.close()

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
            peer, frames = self._unusual(message)
            if not frames:
                return True
            self.stats.frames_in += len(frames)
        else:  # what termite nodes send: one part, from a peer already known
            now = _monotonic()
            if now - self._read_at > self._gap:  # _attend, inline: this runs per message
                self._attentive_since = now
            entry[1] = self._read_at = now
            frame = message[1]
            size = len(frame)
            if not size:
                return True  # heartbeat
            peer = entry[0]
            if size > self.max_frame:
                self._too_large(peer, frame)
                return True
            frames = [frame]
            stats = self.stats
            stats.bytes_in += size
            stats.frames_in += 1
        self.on_frames(peer, frames)
        return True

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
        """The ``[peer, heard at]`` entry of a sender heard for the first time
        (or again after it was declared down), or None if it is refused."""
        peer = self._ids.peer(identity)
        if peer is None:
            self.stats.dropped_in += 1
            self._ids.log_unnamed(identity)  # one line per sender, a count for all
            return None
        if peer not in self._last_seen and not self._greet(peer):
            return None
        with self._lock:
            return self._heard.setdefault(identity, [peer, 0.0])

    def _too_large(self, peer: NodeRef, frame: bytes) -> None:
        self.stats.dropped_in += 1
        log.warning("dropped a %d-byte frame from %s: over the %d-byte limit", len(frame), peer, self.max_frame)

    def _greet(self, peer: NodeRef) -> bool:
        """A peer heard for the first time: connect back (heartbeats and replies go that way)."""
        with self._lock:
            if peer in self._last_seen:
                return True
            try:
                self._dealer(peer)
            except zmq.ZMQError as exc:
                self.stats.dropped_in += 1
                log.warning("dropped a message from %s: cannot connect back: %s", peer, exc)
                return False
            self._last_seen[peer] = time.monotonic()
        self.on_peer_up(peer)
        return True

    def _beat(self, now: float):
        down = []
        with self._lock:
            for (host, port), sock in list(self._dealers.items()):
                try:
                    sock.send(_HEARTBEAT, flags=zmq.NOBLOCK)
                except zmq.ZMQError:
                    pass
            last_seen, heard = self._last_seen, self._heard
            for identity, (peer, heard_at) in list(heard.items()):  # what the reader heard, by routing id
                seen = last_seen.get(peer)
                if seen is None:
                    del heard[identity]  # declared down or forgotten: greeted again when heard again
                elif heard_at > seen:
                    last_seen[peer] = heard_at
            deaf = self._deaf(now)
            for peer, seen in list(last_seen.items()):
                if now - seen > self.heartbeat_timeout and not deaf:
                    down.append(peer)
                    del last_seen[peer]
                    self._to = None
                    sock = self._dealers.pop((peer.host, peer.port), None)
                    if sock is not None:
                        sock.close(linger=0)
            if down:
                self._forget_heard(down)
        for peer in down:
            log.warning("node %s is down: nothing heard for %.1f s", peer, self.heartbeat_timeout)
            self.on_peer_down(peer)
