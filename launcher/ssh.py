"""Remote commands over SSH: the argv, the errors, and the one-shot actions a launch needs.

The system ``ssh`` client does the work (no paramiko): every remote action is
one ``ssh`` subprocess with ``BatchMode=yes`` (never a password prompt) and
``StrictHostKeyChecking=accept-new`` (a new host's key is recorded, a changed
one is refused).  A host is a ``HostConfig`` from ``termite_launcher.config``;
this module (and termite_launcher.remote) reads only these fields of it, so
anything shaped alike will do::

    host.address, host.python, host.workdir, host.env, host.label
    host.ssh.user, host.ssh.port, host.ssh.key, host.ssh.options

``ssh.options`` are extra ssh arguments: each ``"Key=Value"`` is passed as
``-o Key=Value``; an item starting with ``-`` is passed as it is (with the
next item, for a flag that takes a value, e.g. ``("-F", "none")``).  They come
before this module's own options, and ssh keeps the first value it sees, so
they override the defaults (``UserKnownHostsFile=PATH`` for a known_hosts file
of the cluster's own, ``ConnectTimeout=3``, ``StrictHostKeyChecking=yes``).

The one-shot actions: ``remote_cores``, ``install_keys``, ``copy_folder``,
and ``run`` for any command.  A node that runs for long is a
``termite_launcher.remote.RemoteNode``.

Every failure is a ``RemoteError`` naming the host, what was being done,
what ssh or the remote side said on stderr, and what to do about it
(``advice``).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import threading

__all__ = [
    "COPY_EXCLUDES",
    "RemoteError",
    "advice",
    "cd_workdir",
    "copy_folder",
    "describe",
    "install_keys",
    "login_turn",
    "python_of",
    "remote_cores",
    "run",
    "shell_path",
    "ssh_command",
]

#: Options every ssh call gets (after the host's own ``ssh.options``, which win).
SSH_DEFAULTS = (
    "BatchMode=yes",  # never prompt for a password or passphrase: fail with a message instead
    "StrictHostKeyChecking=accept-new",  # record a new host's key; refuse one whose key changed
    "ConnectTimeout=10",
    "ServerAliveInterval=5",  # a host that stops answering ends its ssh processes within ~15 s
    "ServerAliveCountMax=3",
    "LogLevel=ERROR",  # no "Permanently added ..." warnings mixed into a node's stderr
)

#: ssh connections to one host that may be logging in at once.  sshd drops new
#: connections beyond 10 not yet authenticated (MaxStartups 10:30:100, its
#: default), and a launch opens one per node: the others wait their turn.
SSH_LOGINS_PER_HOST = 8
#: Seconds a connection waits for its turn before the launch gives up on the host.
SSH_TURN_WAIT = 120.0
_logins: dict[tuple, threading.BoundedSemaphore] = {}
_logins_lock = threading.Lock()

# ssh's flags that take a value (for passing raw arguments through ssh.options).
_SSH_VALUE_FLAGS = frozenset("BbcDEeFIiJLlmOoPpQRSWw")

# The host's core count: the CPUs this process may run on where the OS says so.
_CORES_CODE = "import os; print(len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count())"


class RemoteError(Exception):
    """Something failed on a remote host: which host, what, what it said, what to do."""

    def __init__(self, host, action: str, stderr: str = "", hint: str = "", returncode: int | None = None):
        self.host = host
        self.action = action
        self.stderr = stderr.strip()
        self.hint = hint
        self.returncode = returncode
        status = f" (exit status {returncode})" if returncode is not None else ""
        lines = [f"host {describe(host)}: {action} failed{status}"]
        if self.stderr:
            lines.append("stderr:\n  " + "\n  ".join(self.stderr.splitlines()[-20:]))
        if hint:
            lines.append(f"what to do: {hint}")
        super().__init__("\n".join(lines))

    def __reduce__(self):
        return (type(self), (self.host, self.action, self.stderr, self.hint, self.returncode))


class _SshDefaults:
    user = None
    port = 22
    key = None
    options = ()


def _ssh(host):
    """The host's ssh settings (ssh's own defaults where it has none)."""
    return getattr(host, "ssh", None) or _SshDefaults


def login_turn(host, action: str) -> threading.BoundedSemaphore:
    """Wait for a turn to log in to ``host`` (see SSH_LOGINS_PER_HOST); release it once logged in."""
    ssh = _ssh(host)
    key = (str(host.address), getattr(ssh, "port", None) or 22)
    with _logins_lock:
        turns = _logins.setdefault(key, threading.BoundedSemaphore(SSH_LOGINS_PER_HOST))
    if not turns.acquire(timeout=SSH_TURN_WAIT):
        raise RemoteError(host, action, hint=f"{SSH_LOGINS_PER_HOST} ssh logins to this host have been under way "
                                             f"for {SSH_TURN_WAIT:g} s: is its sshd answering?")
    return turns


def describe(host) -> str:
    """``label (user@address port N)``: how errors name a host."""
    ssh = _ssh(host)
    where = f"{ssh.user}@{host.address}" if getattr(ssh, "user", None) else str(host.address)
    if getattr(ssh, "port", None) not in (None, 22):
        where += f" port {ssh.port}"
    label = getattr(host, "label", None)
    return f"{label} ({where})" if label and label != host.address else where


def _option_args(options) -> list[str]:
    """``ssh.options`` as ssh arguments (see the module docstring)."""
    args: list[str] = []
    takes_value = False
    for item in options or ():
        item = str(item)
        if takes_value:
            args.append(item)
            takes_value = False
        elif item.startswith("-"):
            args.append(item)
            takes_value = len(item) == 2 and item[1] in _SSH_VALUE_FLAGS
        else:
            args += ["-o", item]
    return args


def ssh_command(host, remote_argv: list[str]) -> list[str]:
    """The argv that runs ``remote_argv`` on ``host`` (quoted with shlex for the remote shell)."""
    ssh = _ssh(host)
    argv = ["ssh", *_option_args(getattr(ssh, "options", ()))]
    if getattr(ssh, "port", None):
        argv += ["-p", str(ssh.port)]
    if getattr(ssh, "user", None):
        argv += ["-l", str(ssh.user)]
    if getattr(ssh, "key", None):
        argv += ["-i", os.path.expanduser(str(ssh.key)), "-o", "IdentitiesOnly=yes"]
    for option in SSH_DEFAULTS:
        argv += ["-o", option]
    argv += ["-T", "--", str(host.address), shlex.join(remote_argv)]
    return argv


def python_of(host) -> str:
    """The Python that runs termite on ``host``."""
    return getattr(host, "python", None) or "python3"


def cd_workdir(host) -> str:
    """Shell text that enters the host's workdir (or nothing)."""
    workdir = getattr(host, "workdir", None)
    if not workdir:
        return ""
    return (
        f"cd {shell_path(workdir)} || {{ echo \"termite: no workdir {workdir} on this host\" >&2; exit 126; }}\n"
    )


def shell_path(path: str) -> str:
    """Quote ``path`` for sh, keeping a leading ``~/`` meaning the remote home."""
    path = str(path)
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


def advice(host, stderr: str, returncode: int | None) -> str:
    """What to do about a failure, from what ssh or the remote side said."""
    ssh = _ssh(host)
    text = stderr.lower()
    test = shlex.join(ssh_command(host, ["true"]))
    if "permission denied" in text:
        return (
            f"the host refused the login: check ssh.user ({getattr(ssh, 'user', None) or 'your user name'}) and "
            f"ssh.key ({getattr(ssh, 'key', None) or 'ssh defaults'}) for this host in cluster.yaml; the key's .pub "
            f"must be in that user's ~/.ssh/authorized_keys there. Try it by hand: {test}"
        )
    if "host key verification failed" in text or "remote host identification has changed" in text:
        return (
            f"the host's ssh key is not the one recorded in known_hosts (it was reinstalled, or this is not the "
            f"host you mean). If the change is expected: ssh-keygen -R {host.address}, then try again"
        )
    if "could not resolve hostname" in text or "name or service not known" in text:
        return f"{host.address} is not a known host name: check address in cluster.yaml"
    if "connection refused" in text:
        return f"nothing listens for ssh on {host.address} port {getattr(ssh, 'port', None) or 22}: is sshd running there, on that port?"
    if any(s in text for s in ("timed out", "no route to host", "network is unreachable", "connection closed")):
        return f"{host.address} cannot be reached from here: is it up, is the address right, does a firewall block port {getattr(ssh, 'port', None) or 22}?"
    if "no module named termite" in text or "no module named 'termite" in text:
        return (
            f"termite is not installed for {python_of(host)} on that host: pip install termite there, or set python: "
            "in cluster.yaml to an interpreter that has it"
        )
    if "cluster key" in text or "key file" in text:
        return "the node cannot read its cluster key file: check the --keys path (install_keys writes it there)"
    if returncode == 127 or "not found" in text or "no such file or directory" in text:
        return f"check python: ({python_of(host)}) and workdir: in cluster.yaml name a Python and a folder that exist there"
    if returncode == 255:
        return f"ssh itself failed; try it by hand: {test}"
    return f"see the stderr above; the command was: {test}"


def run(host, remote_argv: list[str], action: str, *, input: bytes | None = None, timeout: float = 15):
    """Run ``remote_argv`` on ``host``; its stdout, or a RemoteError."""
    argv = ssh_command(host, remote_argv)
    turn = login_turn(host, action)
    try:
        done = subprocess.run(argv, input=input, capture_output=True, timeout=timeout, stdin=None if input is not None else subprocess.DEVNULL)
    except FileNotFoundError:
        raise RemoteError(host, action, hint="there is no ssh client here: install one (apt-get install openssh-client)") from None
    except subprocess.TimeoutExpired as exc:
        stderr = (exc.stderr or b"").decode("utf-8", "replace")
        raise RemoteError(
            host, action, stderr, f"no answer within {timeout} s: is the host up and reachable? ({advice(host, stderr, None)})"
        ) from None
    finally:
        turn.release()
    stderr = done.stderr.decode("utf-8", "replace")
    if done.returncode != 0:
        raise RemoteError(host, action, stderr, advice(host, stderr, done.returncode), done.returncode)
    return done.stdout.decode("utf-8", "replace")


def remote_cores(host, timeout: float = 15) -> int:
    """How many cores ``host`` has (those its Python may run on), asked with ``host.python``."""
    out = run(host, [python_of(host), "-c", _CORES_CODE], f"asking {python_of(host)} for the core count", timeout=timeout)
    try:
        cores = int(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise RemoteError(
            host, "asking for the core count", out, f"{python_of(host)} printed {out!r}, not a number: is it a Python 3?"
        ) from None
    if cores < 1:
        raise RemoteError(host, "asking for the core count", out, "give cores: a number for this host in cluster.yaml")
    return cores


def install_keys(host, key_bytes: bytes, remote_path: str, timeout: float = 15) -> None:
    """Write the cluster key file at ``remote_path`` on ``host``, mode 600.

    The key travels on ssh's stdin, never on a command line.  A relative path
    is taken from the host's workdir (its home if none); ``~/`` means the home.
    The file is written beside its place and renamed, so a node never reads
    half a key.
    """
    path = shell_path(remote_path)
    script = (
        "umask 077\n"
        + (cd_workdir(host) if not str(remote_path).startswith(("/", "~")) else "")
        + f"p={path}\n"
        + 't="$p.tmp.$$"\n'
        + 'mkdir -p "$(dirname "$p")" && cat > "$t" && chmod 600 "$t" && mv -f "$t" "$p" || { rm -f "$t"; exit 1; }\n'
    )
    run(host, ["sh", "-c", script], f"writing the cluster key file {remote_path}", input=key_bytes, timeout=timeout)


#: What ``copy_folder`` leaves out: version control, caches, virtual environments, termite's own state.
COPY_EXCLUDES = (".git", ".hg", ".svn", ".tox", ".nox", ".venv", "venv", "__pycache__", "*.pyc",
                 ".pytest_cache", ".mypy_cache", ".ruff_cache", ".termite", "node_modules")


def copy_folder(host, source, excludes=COPY_EXCLUDES, timeout: float = 300) -> None:
    """Copy the folder ``source`` (its contents) into ``host``'s workdir, over ssh as a tar stream.

    Files there of the same names are replaced; others (deleted here since
    an earlier copy, say) stay.  Needs ``tar`` here and there.
    """
    workdir = getattr(host, "workdir", None)
    action = f"copying {source} to its workdir"
    if not workdir:
        raise RemoteError(host, action, hint="give this host a workdir: in cluster.yaml, the folder the copy goes to")
    target = shell_path(workdir)
    script = f"mkdir -p {target} && cd {target} && tar -xf -"
    pack = subprocess.Popen(["tar", "-C", str(source), *(f"--exclude={e}" for e in excludes), "-cf", "-", "."],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        unpack = subprocess.run(ssh_command(host, ["sh", "-c", script]), stdin=pack.stdout, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RemoteError(host, action, hint=f"it took more than {timeout:g} s: is the host reachable, is the folder huge?") from None
    finally:
        pack.stdout.close()  # tar ends, by SIGPIPE if ssh stopped reading
        pack_error = pack.stderr.read().decode("utf-8", "replace")
        pack.stderr.close()
        pack.wait()
    if pack.returncode != 0:
        raise RemoteError(host, action, pack_error, f"tar could not read {source} here")
    if unpack.returncode != 0:
        stderr = unpack.stderr.decode("utf-8", "replace")
        raise RemoteError(host, action, stderr, advice(host, stderr, unpack.returncode), unpack.returncode)
