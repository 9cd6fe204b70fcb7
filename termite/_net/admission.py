"""Who may speak to a node, and who is speaking: the transport's admission.

- With keys, every connection is CURVE: the server (ROUTER) and client
  (DEALER) carry the cluster's key pair (:func:`curve_server`,
  :func:`curve_client`), and the :class:`ZapHandler` (RFC 27) admits only
  clients whose public key is the cluster's, i.e. who hold its secret key.
  Set-up order matters: the ZAP handler is bound before any CURVE socket
  binds, and a server's keys are set before it binds.
- A DEALER's routing id is its node's identity and its epoch with the peer,
  ``host:port:incarnation:epoch`` (:func:`identity_of`), so the peer's ROUTER
  knows who is speaking, and in which session (termite._net.sessions);
  :class:`RoutingIds` parses each id that reaches the ROUTER once.

None of this runs per message: only for a connection, or for the first
message of a sender.  Imports nothing of the transport: the transport
imports this.
"""

from __future__ import annotations

import logging
import re

import zmq

from termite._core.ids import NodeRef
from termite._net.keys import ClusterKeys

__all__ = ["identity_of", "ref_of_identity", "RoutingIds", "curve_server", "curve_client", "ZapHandler"]

log = logging.getLogger("termite.transport")

_ZAP_ENDPOINT = "inproc://zeromq.zap.01"  # fixed by RFC 27
_HOST = re.compile(r"[A-Za-z0-9._-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\]")  # a name, an IPv4, or [an IPv6]


# -- routing ids ------------------------------------------------------------------


def identity_of(ref: NodeRef, epoch: int | None = 0) -> bytes:
    """The routing id of a DEALER of node ``ref``: its node, and its epoch with the peer
    (termite._net.sessions), or ``p`` for a probe of an address, outside any session."""
    return f"{ref.host}:{ref.port}:{ref.incarnation:x}:{'p' if epoch is None else f'{epoch:x}'}".encode()


def ref_of_identity(identity: bytes) -> tuple[NodeRef, int | None] | None:
    """The NodeRef and epoch (None: a probe) a peer's routing id names, or None if it is not one."""
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


class ZapHandler:
    """Answers ZAP requests for the CURVE sockets of ``ctx``: admits a client
    whose public key is the cluster's.  Make it before any CURVE socket binds;
    :meth:`answer` on the I/O thread when :attr:`socket` is readable."""

    def __init__(self, ctx: zmq.Context, keys: ClusterKeys, stats):
        self.keys = keys
        self.stats = stats  # counts the refused in stats.refused
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
        log.warning("refused a connection from %s: not a member of this cluster", address)
        self.socket.send_multipart([version, request_id, b"400", b"not a member of this cluster", b"", b""])
        return address

    def close(self) -> None:
        self.socket.close(linger=0)
