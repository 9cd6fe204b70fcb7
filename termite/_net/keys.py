"""Cluster keys: the CURVE key pair every node of a cluster holds.

A cluster has one key pair.  Every node serves with it and connects with it,
and a node accepts a connection only from a peer that proved it holds the
cluster's secret key (the ZAP handler in termite/_net/admission.py allows that
one public key, no other).  So a key file is what makes a node a member:
keep it secret, like an SSH private key.

The file is ZeroMQ's own certificate format (zmq.auth), made by
``python -m termite keygen PATH``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import socket

import zmq
import zmq.auth

from termite._core.errors import TermiteError

__all__ = ["ClusterKeys", "KeyFileError", "generate", "load", "require_keys"]


class KeyFileError(TermiteError, ValueError):
    """A key file is missing, unreadable, or not a termite cluster key."""


@dataclasses.dataclass(frozen=True)
class ClusterKeys:
    public: bytes  # Z85, 40 bytes
    secret: bytes = dataclasses.field(repr=False)


_HEADER = """\
#   ****  termite cluster key  ****
#   The secret key below admits its holder to the cluster: keep this file
#   private (mode 600) and copy it only to the cluster's own hosts.
"""


def generate(path: str | os.PathLike) -> ClusterKeys:
    """Write a new cluster key file at ``path`` (mode 600) and return its keys."""
    path = os.fspath(path)
    if os.path.exists(path):
        raise KeyFileError(f"{path} already exists; remove it first or choose another path (its nodes would be locked out)")
    public, secret = zmq.curve_keypair()
    text = (
        f"{_HEADER}\nmetadata\ncurve\n"
        f'    public-key = "{public.decode("ascii")}"\n'
        f'    secret-key = "{secret.decode("ascii")}"\n'
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return ClusterKeys(public, secret)


def load(path: str | os.PathLike) -> ClusterKeys:
    """Read a cluster key file; a clear error if it is not one."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise KeyFileError(f"no cluster key file at {path}; make one with: python -m termite keygen {path}")
    try:
        public, secret = zmq.auth.load_certificate(path)
    except Exception as exc:  # noqa: BLE001 - any parse failure gets the same advice
        raise KeyFileError(f"{path} is not a termite cluster key file ({exc}); make one with: python -m termite keygen PATH") from None
    if not public or not secret:
        raise KeyFileError(f"{path} has no secret key; a node needs the file made by `python -m termite keygen`, not a public key")
    if len(public) != 40 or len(secret) != 40 or zmq.utils.z85.decode(secret) is None:
        raise KeyFileError(f"{path} holds malformed keys; make a new file with: python -m termite keygen PATH")
    return ClusterKeys(public, secret)


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        return False


def require_keys(keys: ClusterKeys | str | os.PathLike | None, host: str, insecure: bool) -> ClusterKeys | None:
    """The keys a node on ``host`` must use; refuse to run open unless told so on loopback."""
    if keys is not None:
        return keys if isinstance(keys, ClusterKeys) else load(keys)
    if insecure and is_loopback(host):
        return None
    if insecure:
        raise KeyFileError(
            f"insecure=True is only allowed on loopback, and {host} is not: give the node the cluster's "
            "key file (keys=PATH; make one with `python -m termite keygen PATH`)"
        )
    raise KeyFileError(
        "a node needs the cluster's key file to talk to other nodes (keys=PATH; make one with "
        "`python -m termite keygen PATH`); on 127.0.0.1 only, insecure=True runs without encryption"
    )
