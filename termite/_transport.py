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
  whose public key is the cluster's, i.e. who hold its secret key.  Without
  keys (allowed on loopback only, see termite/_keys.py) frames go in clear.

Frames received are handed to ``on_frames(peer, frames)``, and new peers to
``on_peer_up(peer)``, on the thread that reads the ROUTER: the node's event
loop thread when started with one (no thread hop on the way in), else the
I/O thread.  ``on_peer_down(peer)`` comes from the I/O thread, which does
not declare a peer down while the loop's thread is too busy to read: a
process running CPU-bound code makes every peer *look* silent.  An empty
frame is a heartbeat and is not handed on.
"""

from __future__ import annotations

import logging
import re
import threading
import time

import zmq

from termite._ids import NodeRef
from termite._keys import ClusterKeys

__all__ = ["Transport", "TransportStats"]

log = logging.getLogger("termite.transport")

_ZAP_ENDPOINT = "inproc://zeromq.zap.01"  # fixed by RFC 27
_HEARTBEAT = b""
# Plain ints: pyzmq's enum flags cost microseconds per operation on the hot path.
_EVENTS, _POLLIN, _RCVMORE, _NOBLOCK = int(zmq.EVENTS), int(zmq.POLLIN), int(zmq.RCVMORE), int(zmq.NOBLOCK)
_HOST = re.compile(r"[A-Za-z0-9._-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\]")  # a name, an IPv4, or [an IPv6]


def identity_of(ref: NodeRef) -> bytes:
    return f"{ref.host}:{ref.port}:{ref.incarnation:x}".encode()


def ref_of_identity(identity: bytes) -> NodeRef | None:
    """The NodeRef a peer's routing id names, or None if it is not one."""
    try:
        host, port, incarnation = identity.decode("ascii").rsplit(":", 2)
        port, incarnation = int(port), int(incarnation, 16)
    except (UnicodeDecodeError, ValueError):
        return None
    if not (0 < port < 65536 and 0 <= incarnation < 1 << 64 and _HOST.fullmatch(host)):
        return None
    return NodeRef(host, port, incarnation)


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
        self._zap = None
        if keys is not None:
            # The ZAP handler must be bound before any CURVE socket binds.
            self._zap = self.ctx.socket(zmq.REP)
            self._zap.linger = 0
            self._zap.bind(_ZAP_ENDPOINT)
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.linger = 0
        self.router.router_handover = 1  # a restarted peer with the same id takes over
        self.router.rcvhwm = 0
        if keys is not None:
            # Server keys before bind.
            self.router.curve_server = True
            self.router.curve_publickey = keys.public
            self.router.curve_secretkey = keys.secret
            self.router.zap_domain = b"termite"
        if port:
            self.router.bind(f"tcp://{host}:{port}")
            self.port = port
        else:
            self.port = self.router.bind_to_random_port(f"tcp://{host}")
        self.ref = NodeRef.new(host, self.port)
        self._identity = identity_of(self.ref)
        self._lock = threading.Lock()  # guards the DEALERs and the peer table
        self._dealers: dict[tuple[str, int], zmq.Socket] = {}
        self._last_seen: dict[NodeRef, float] = {}  # peers we expect heartbeats from
        self._wake_in = self.ctx.socket(zmq.PAIR)
        self._wake_in.bind(f"inproc://termite-wake-{id(self)}")
        self._wake_out = self.ctx.socket(zmq.PAIR)
        self._wake_out.connect(f"inproc://termite-wake-{id(self)}")
        self._stopping = False
        self._thread = threading.Thread(target=self._io, name=f"termite-io-{self.port}", daemon=True)
        self._peer_ids: dict[bytes, NodeRef] = {}  # routing id -> peer, parsed once
        self.on_read_done = lambda: None  # after frames were handed on
        self._loop = None  # the event loop whose thread reads the ROUTER, if any
        self._read_at = time.monotonic()  # when that thread last read the ROUTER to the end
        self._tick_handle = None

    # -- life cycle -----------------------------------------------------------

    def start(self, loop=None) -> "Transport":
        """Start the I/O thread.  With ``loop`` (call from its thread), frames
        are read and handed on by that loop's thread, saving a thread hop."""
        if loop is not None:
            self._loop = loop
            loop.add_reader(self.router.getsockopt(zmq.FD), self._on_readable)
            self._tick_handle = loop.call_soon(self._tick)
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
                self._loop.remove_reader(self.router.getsockopt(zmq.FD))
        with self._lock:
            self._wake_out.send(b"stop")
        self._thread.join(5)
        self.router.close(linger=0)
        with self._lock:
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
                sock.curve_serverkey = self.keys.public
                sock.curve_publickey = self.keys.public
                sock.curve_secretkey = self.keys.secret
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
                    sock.send(frames[0], _NOBLOCK, copy=len(frames[0]) < 4096)
                else:
                    sock.send_multipart(frames, flags=_NOBLOCK, copy=len(frames[0]) < 4096)
            except zmq.ZMQError as exc:
                self.stats.dropped_out += len(frames)
                log.warning("dropped %d frame(s) to %s: %s", len(frames), peer, exc)
                return
        self.stats.frames_out += len(frames)

    def forget(self, peer: NodeRef) -> None:
        """Close the connection to ``peer``; the next send reconnects."""
        with self._lock:
            sock = self._dealers.pop((peer.host, peer.port), None)
            self._last_seen.pop(peer, None)
            if sock is not None:
                sock.close(linger=0)

    def peers(self) -> list[NodeRef]:
        with self._lock:
            return list(self._last_seen)

    # -- the I/O thread -------------------------------------------------------

    # -- reading on the loop's thread ----------------------------------------------

    def _on_readable(self):
        # zmq's FD is edge-triggered: read until there is nothing left, or
        # come back at once if the bound stopped us.
        if self._read_router():
            self._loop.call_soon(self._on_readable)
        else:
            self._read_at = time.monotonic()

    def _tick(self):
        """Also read now and then: an idle loop proves it can read (see _beat)."""
        self._on_readable()
        self._tick_handle = self._loop.call_later(self.heartbeat_interval / 2, self._tick)

    def _reading_is_late(self, now: float) -> bool:
        """True while the loop's thread is too busy to read (a process running
        CPU-bound code): silence from peers then proves nothing."""
        return self._loop is not None and now - self._read_at > max(2 * self.heartbeat_interval, 0.2)

    # -- the I/O thread -------------------------------------------------------

    def _io(self):
        poller = zmq.Poller()
        if self._loop is None:
            poller.register(self.router, zmq.POLLIN)
        poller.register(self._wake_in, zmq.POLLIN)
        if self._zap is not None:
            poller.register(self._zap, zmq.POLLIN)
        next_beat = time.monotonic()
        try:
            while True:
                timeout_ms = max(0.0, next_beat - time.monotonic()) * 1000
                events = dict(poller.poll(timeout_ms))
                if self._wake_in in events:
                    break  # stop
                if self._zap is not None and self._zap in events:
                    self._answer_zap()
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
                self._zap.close(linger=0)

    def _answer_zap(self):
        request = self._zap.recv_multipart()
        # [version, request id, domain, address, identity, mechanism, credentials...]
        version, request_id = request[0], request[1]
        mechanism = request[5] if len(request) > 5 else b""
        allowed = (
            self.keys is not None
            and mechanism == b"CURVE"
            and len(request) > 6
            and zmq.utils.z85.encode(request[6]) == self.keys.public
        )
        if allowed:
            self._zap.send_multipart([version, request_id, b"200", b"OK", b"", b""])
        else:
            address = request[3].decode(errors="replace") if len(request) > 3 else "?"
            self.stats.refused += 1
            log.warning("refused a connection from %s: not a member of this cluster", address)
            self._zap.send_multipart([version, request_id, b"400", b"not a member of this cluster", b"", b""])
            self.on_refused(address)

    def _read_router(self) -> bool:
        """Hand on what the ROUTER holds; True if stopped by the bound with more to read."""
        router = self.router
        recv, getsockopt = router.recv, router.getsockopt
        max_frame = self.max_frame
        seen = self._last_seen
        handed = False
        try:
            for _ in range(1000):  # bounded: heartbeats and other callbacks keep their rhythm
                if not getsockopt(_EVENTS) & _POLLIN:  # cheaper than a recv raising Again
                    return False
                identity = recv(_NOBLOCK)
                parts = []
                while getsockopt(_RCVMORE):
                    parts.append(recv(_NOBLOCK))
                peer = self._peer_ids.get(identity) or self._new_peer_id(identity)
                if peer is None or not parts:
                    self.stats.dropped_in += 1
                    log.warning("dropped a message with a malformed sender id %r", identity[:64])
                    continue
                if peer not in seen and not self._greet(peer):
                    continue
                seen[peer] = time.monotonic()
                frames = []
                for frame in parts:
                    if not frame:
                        continue  # heartbeat
                    if len(frame) > max_frame:
                        self.stats.dropped_in += 1
                        log.warning("dropped a %d-byte frame from %s: over the %d-byte limit", len(frame), peer, max_frame)
                        continue
                    self.stats.bytes_in += len(frame)
                    frames.append(frame)
                if frames:
                    self.stats.frames_in += len(frames)
                    handed = True
                    self.on_frames(peer, frames)
            return True
        finally:
            if handed:
                self.on_read_done()

    def _new_peer_id(self, identity: bytes) -> NodeRef | None:
        peer = ref_of_identity(identity)
        if peer is not None:
            if len(self._peer_ids) >= 4096:  # bounded: restarted peers bring new ids
                self._peer_ids.clear()
            self._peer_ids[identity] = peer
        return peer

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
            late = self._reading_is_late(now)
            for peer, seen in list(self._last_seen.items()):
                if now - seen > self.heartbeat_timeout and not late:
                    down.append(peer)
                    del self._last_seen[peer]
                    sock = self._dealers.pop((peer.host, peer.port), None)
                    if sock is not None:
                        sock.close(linger=0)
        for peer in down:
            log.warning("node %s is down: nothing heard for %.1f s", peer, self.heartbeat_timeout)
            self.on_peer_down(peer)
