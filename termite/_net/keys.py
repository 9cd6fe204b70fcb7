"""Cluster keys: the CURVE key pair every node of a cluster holds.

A cluster has one key pair.  Every node serves with it and connects with it,
and a node accepts a connection only from a peer that proved it holds the
cluster's secret key (the ZAP handler in termite/_net/admission.py allows that
one public key, no other).  So a key file is what makes a node a member:
keep it secret, like an SSH private key.

The file is ZeroMQ's own certificate format (zmq.auth), made by
``python -m termite keygen PATH``.  Like ssh with a private key, :func:`load`
refuses a file that group or others may read or write.

A program that names no key file gets :func:`session_keys`: a key made for
this process, in a folder only its user can open, so that what it starts
itself (an Executor's node, the nodes it hands the file to) admit each other
and no one else.  Running without keys (``insecure=True``) must be asked
for, on loopback only, and says on stderr what it exposes.
"""

from __future__ import annotations

import atexit
import dataclasses
import ipaddress
import os
import shutil
import socket
import stat
import sys
import tempfile
import threading

import zmq
import zmq.auth

from termite._core.errors import TermiteError

__all__ = ["ClusterKeys", "KeyFileError", "generate", "load", "require_keys", "session_keys", "INSECURE_WARNING"]


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
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:  # as ssh refuses a private key others can read: the secret may be out already
        raise KeyFileError(
            f"{path} has mode {mode:04o}: group or others may read or change this cluster key, and whoever "
            f"reads it can run code on every node of the cluster; make it private with: chmod 600 {path} "
            "(and make a new key with `python -m termite keygen PATH` if others may have read it)"
        )
    return ClusterKeys(public, secret)


_session_lock = threading.Lock()
_session: tuple[int, str] | None = None  # (the process that made it, its path)


def session_keys() -> str:
    """The path of a key file made for this process: the same on every call.

    It lives in a private folder (mode 700; the file 600) removed when the
    process exits.  Hand it to the nodes this program starts (``--keys
    PATH``): they admit each other and nobody else.  A forked child that
    asks gets a key of its own (the parent's folder goes when the parent does).
    """
    global _session
    with _session_lock:
        if _session is None or _session[0] != os.getpid() or not os.path.exists(_session[1]):
            folder = tempfile.mkdtemp(prefix="termite-session-")  # mode 700: only this user may enter
            path = os.path.join(folder, "session.key")
            generate(path)
            atexit.register(_remove_session, os.getpid(), folder)
            _session = (os.getpid(), path)
        return _session[1]


def _remove_session(owner: int, folder: str) -> None:
    if os.getpid() == owner:  # a forked child exiting leaves its parent's key alone
        shutil.rmtree(folder, ignore_errors=True)


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        return False


#: What a node run without keys says on stderr when it starts.
INSECURE_WARNING = (
    "termite: WARNING: this node runs INSECURE (insecure=True / --insecure) on {host}: nothing is authenticated "
    "or encrypted, so any local user, and any host that can reach this port, can connect and run code in this "
    "process as its user (a pickled message runs on arrival). Run insecure only where every user of the machine "
    "is trusted; otherwise give the node a key file (keys=PATH / --keys PATH; make one with "
    "`python -m termite keygen PATH`)."
)


def require_keys(keys: ClusterKeys | str | os.PathLike | None, host: str, insecure: bool) -> ClusterKeys | None:
    """The keys a node on ``host`` must use; refuse to run open unless told so on loopback,
    and then say on stderr what that exposes."""
    if keys is not None:
        return keys if isinstance(keys, ClusterKeys) else load(keys)
    if insecure and is_loopback(host):
        print(INSECURE_WARNING.format(host=host), file=sys.stderr, flush=True)
        return None
    if insecure:
        raise KeyFileError(
            f"insecure=True is only allowed on loopback, and {host} is not: give the node the cluster's "
            "key file (keys=PATH; make one with `python -m termite keygen PATH`)"
        )
    raise KeyFileError(
        "a node needs the cluster's key file to talk to other nodes (keys=PATH / --keys PATH; make one with "
        "`python -m termite keygen PATH`, or use termite.session_keys() for the nodes one program starts); "
        "insecure=True / --insecure runs without any authentication, on loopback only, where every local "
        "user can then run code in the node"
    )
