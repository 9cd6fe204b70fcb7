"""Who may speak to a node, and who is speaking: the transport's admission.

- With keys, every connection is CURVE: the server (ROUTER) and client
  (DEALER) carry the cluster's key pair (:func:`curve_server`,
  :func:`curve_client`), and the :class:`ZapHandler` (RFC 27) admits only
  clients whose public key is the cluster's, i.e. who hold its secret key.
  Set-up order matters: the ZAP handler is bound before any CURVE socket
  binds, and a server's keys are set before it binds.
- A refusal is logged once per address, then counted: a stranger retrying in
  a loop gets one line, and every ``period`` seconds a count
  (:class:`Refusals`), not a line per attempt.
- A DEALER's routing id is its node's identity and its epoch with the peer,
  ``host:port:incarnation:epoch`` (:func:`identity_of`), so the peer's ROUTER
  knows who is speaking, and in which session (termite._net.sessions);
  :class:`RoutingIds` parses each id that reaches the ROUTER once.  A
  *client* (a node a script, the Executor or termite-launch starts to reach
  a cluster: ``Network(client=True)``, as Erlang's hidden nodes) ends its ids
  with ``/client`` (:func:`is_client`): its leaving is not a node lost.

None of this runs per message: only for a connection, or for the first
message of a sender.  Imports nothing of the transport: the transport
imports this.
"""

from __future__ import annotations

import logging
import re
import time

import zmq

from termite._core.ids import NodeRef
from termite._net.keys import ClusterKeys

__all__ = ["identity_of", "ref_of_identity", "is_client", "reopened_of", "RoutingIds", "curve_server", "curve_client", "Refusals",
           "ZapHandler", "REFUSAL_PERIOD"]

log = logging.getLogger("termite.transport")

_ZAP_ENDPOINT = "inproc://zeromq.zap.01"  # fixed by RFC 27
#: Seconds between the counts of refusals from an address after its first (logged at once).
REFUSAL_PERIOD = 10.0
_HOST = re.compile(r"[A-Za-z0-9._-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\]")  # a name, an IPv4, or [an IPv6]


# -- routing ids ------------------------------------------------------------------


# A routing id may end with flags after a "/" (which is in no host name and no hex number): "client"
# for a client.  Flags a node does not know are ignored, so that later ones need no new format.
_CLIENT = b"/client"


def identity_of(ref: NodeRef, epoch: int | None = 0, client: bool = False, reopened: int = 0) -> bytes:
    """The routing id of a DEALER of node ``ref``: its node, and its epoch with the peer
    (termite._net.sessions), or ``p`` for a probe of an address, outside any session;
    then ``/client`` if the node is a client, and ``/r<n>`` for the n-th connection that
    resumed a suspended session: a new id, so that the peer's ROUTER reads it as a new
    connection and never hands the old one's last frames over to it (router_handover
    would give those an id of its own, and they would be lost)."""
    identity = f"{ref.host}:{ref.port}:{ref.incarnation:x}:{'p' if epoch is None else f'{epoch:x}'}".encode()
    if client:
        identity += _CLIENT
    return identity + b"/r%x" % reopened if reopened else identity


def reopened_of(identity: bytes) -> int:
    """Which connection of its session a routing id names: 0 for the first, n for ``/r<n>``
    (the n-th this node opened to resume a suspended session; they only grow)."""
    for flag in identity.partition(b"/")[2].split(b"/"):
        if flag[:1] == b"r":
            try:
                return int(flag[1:], 16)
            except ValueError:
                return 0
    return 0


def is_client(identity: bytes) -> bool:
    """Whether the routing id is a client's: a node that reaches the cluster, not one of it."""
    return b"client" in identity.partition(b"/")[2].split(b"/")


def ref_of_identity(identity: bytes) -> tuple[NodeRef, int | None] | None:
    """The NodeRef and epoch (None: a probe) a peer's routing id names, or None if it is not one."""
    identity = identity.partition(b"/")[0]  # without its flags
    try:
        host, port, incarnation, epoch = identity.decode("ascii").rsplit(":", 3)
        port, incarnation = int(port), int(incarnation, 16)
        epoch = None if epoch == "p" else int(epoch, 16)
    except (UnicodeDecodeError, ValueError):
        return None
    if epoch is not None and not 0 <= epoch < 1 << 32:
        return None
    if not (0 < port < 65536 and 0 <= incarnation < 1 << 64 and _HOST.fullmatch(host)):
        return None
    return NodeRef(host, port, incarnation), epoch


class RoutingIds:
    """The routing ids a ROUTER has met: each parsed once, and each that names
    no node logged once."""

    __slots__ = ("_peers", "_unnamed")

    def __init__(self):
        self._peers: dict[bytes, tuple[NodeRef, int]] = {}  # routing id -> (peer, epoch), parsed once
        self._unnamed: set[bytes] = set()  # routing ids that name no peer, already logged

    def peer(self, identity: bytes) -> tuple[NodeRef, int] | None:
        """The node and epoch ``identity`` names, or None if it names none."""
        peer = self._peers.get(identity)
        if peer is None:
            peer = ref_of_identity(identity)
            if peer is not None:
                if len(self._peers) >= 4096:  # bounded: restarted peers bring new ids
                    self._peers.clear()
                self._peers[identity] = peer
        return peer

    def log_unnamed(self, identity: bytes) -> None:
        """Say that messages from ``identity``, which names no node, are dropped:
        one line per sender."""
        if identity not in self._unnamed:
            if len(self._unnamed) < 1024:
                self._unnamed.add(identity)
            if len(identity) == 5 and identity[0] == 0:  # zmq's own id for an old connection
                log.warning(
                    "dropping what is left of a connection a peer has replaced (it reconnected "
                    "after it or this node declared the other down): its sender is not known any more"
                )
            else:
                log.warning("dropping messages with a malformed sender id %r", identity[:64])


# -- CURVE ------------------------------------------------------------------------


def curve_server(sock: zmq.Socket, keys: ClusterKeys) -> None:
    """Make ``sock`` a CURVE server with the cluster's keys; call before it binds."""
    sock.curve_server = True
    sock.curve_publickey = keys.public
    sock.curve_secretkey = keys.secret
    sock.zap_domain = b"termite"


def curve_client(sock: zmq.Socket, keys: ClusterKeys) -> None:
    """Make ``sock`` a CURVE client of a server with the cluster's keys; call before it connects."""
    sock.curve_serverkey = keys.public
    sock.curve_publickey = keys.public
    sock.curve_secretkey = keys.secret


class Refusals:
    """The log of connections refused: an address's first refusal at once, then
    every ``period`` seconds how many more came from it, while it keeps trying.

    A stranger retrying in a loop would otherwise write thousands of lines a
    second.  :meth:`refused` for each refusal; :meth:`tick` now and then (the
    I/O thread's heartbeat), which reports the counts due.  ``clock``: seconds.
    """

    __slots__ = ("period", "_clock", "_since")

    _OTHERS = "other addresses"  # where refusals are counted once too many addresses are
    _MAX_ADDRESSES = 1024

    def __init__(self, period: float = REFUSAL_PERIOD, clock=time.monotonic):
        self.period = period
        self._clock = clock
        self._since: dict[str, list] = {}  # address -> [start of its period, refusals since]

    def refused(self, address: str) -> None:
        entry = self._since.get(address)
        if entry is None and len(self._since) >= self._MAX_ADDRESSES:  # bounded: count the rest together
            address, entry = self._OTHERS, self._since.get(self._OTHERS)
        if entry is not None:
            entry[1] += 1
            return
        self._since[address] = [self._clock(), 0]
        log.warning(
            "refused a connection from %s: not a member of this cluster (it does not hold the cluster's key); "
            "further refusals from it are counted every %g s",
            address, self.period,
        )

    def tick(self) -> None:
        """Report the counts of the periods that ended; forget addresses gone quiet."""
        if not self._since:
            return
        now = self._clock()
        for address, entry in list(self._since.items()):
            start, count = entry
            if now - start < self.period:
                continue
            if count:
                log.warning("%d more refusals from %s in the last %.0f s", count, address, now - start)
                entry[0], entry[1] = now, 0
            else:  # a whole period quiet: its next refusal is news again
                del self._since[address]


class ZapHandler:
    """Answers ZAP requests for the CURVE sockets of ``ctx``: admits a client
    whose public key is the cluster's.  Make it before any CURVE socket binds;
    :meth:`answer` on the I/O thread when :attr:`socket` is readable."""

    def __init__(self, ctx: zmq.Context, keys: ClusterKeys, stats, refusal_period: float = REFUSAL_PERIOD):
        self.keys = keys
        self.stats = stats  # counts the refused in stats.refused
        self.refusals = Refusals(refusal_period)  # what the log says of them; tick() it now and then
        self.socket = ctx.socket(zmq.REP)
        self.socket.linger = 0
        self.socket.bind(_ZAP_ENDPOINT)

    def answer(self) -> str | None:
        """Answer one request; the address of a client refused, else None."""
        request = self.socket.recv_multipart()
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
            self.socket.send_multipart([version, request_id, b"200", b"OK", b"", b""])
            return None
        address = request[3].decode(errors="replace") if len(request) > 3 else "?"
        self.stats.refused += 1
        self.refusals.refused(address)
        self.socket.send_multipart([version, request_id, b"400", b"not a member of this cluster", b"", b""])
        return address

    def close(self) -> None:
        self.socket.close(linger=0)
