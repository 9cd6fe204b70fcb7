"""Starting and stopping termite nodes on another host over SSH.

The system ``ssh`` client does the work (no paramiko): every remote action is
one ``ssh`` subprocess with ``BatchMode=yes`` (never a password prompt) and
``StrictHostKeyChecking=accept-new`` (a new host's key is recorded, a changed
one is refused).  A host is a ``HostConfig`` from ``termite_launcher.config``;
this module reads only these fields of it, so anything shaped alike will do::

    host.address, host.python, host.workdir, host.env, host.label
    host.ssh.user, host.ssh.port, host.ssh.key, host.ssh.options

``ssh.options`` are extra ssh arguments: each ``"Key=Value"`` is passed as
``-o Key=Value``; an item starting with ``-`` is passed as it is (with the
next item, for a flag that takes a value, e.g. ``("-F", "none")``).  They come
before this module's own options, and ssh keeps the first value it sees, so
they override the defaults (``UserKnownHostsFile=PATH`` for a known_hosts file
of the cluster's own, ``ConnectTimeout=3``, ``StrictHostKeyChecking=yes``).

A node runs as ``cd WORKDIR && env K=V ... PYTHON -m termite.node ARGS``
under a small ``sh`` wrapper on the remote host that

* prints the node's pid first (``termite-remote-pid N``), so ``stop`` and
  ``kill`` can reach it by pid;
* keeps the ssh session's stdin open as a lifeline: when it reaches end of
  file -- ``stop()`` closes it, or the launcher or its ssh process died --
  the wrapper sends the node SIGTERM.  So a launcher killed with SIGKILL
  still leaves no node behind on its hosts.  (A host cut off from the
  network notices only when its sshd's own keepalives say so.)
* waits for the node, so the local ssh process ends when the node does.

Recipe::

    install_keys(host, key_bytes, ".termite/cluster.key")
    node = RemoteNode(host, ["--host", host.bind, "--port", "0", "--keys", ".termite/cluster.key"])
    ref = node.wait_announced(timeout=30)      # RemoteError with the node's stderr if it fails
    ...
    node.stop()                                # SIGTERM, then SIGKILL; no process left here or there

Every failure is a ``RemoteError`` naming the host, what was being done,
what ssh or the node said on stderr, and what to do about it.
"""

from __future__ import annotations

import collections
import os
import shlex
import subprocess
import threading
import uuid

import termite

__all__ = ["COPY_EXCLUDES", "RemoteError", "RemoteNode", "copy_folder", "install_keys", "remote_cores", "ssh_command"]

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

_PID_LINE = "termite-remote-pid "
_ANNOUNCE = "termite node "
_TAIL_LINES = 200  # lines of a node's output kept for error messages

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


def _login_turn(host, action: str) -> threading.BoundedSemaphore:
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


def _python(host) -> str:
    return getattr(host, "python", None) or "python3"


def _cd_workdir(host) -> str:
    """Shell text that enters the host's workdir (or nothing)."""
    workdir = getattr(host, "workdir", None)
    if not workdir:
        return ""
    return (
        f"cd {_shell_path(workdir)} || {{ echo \"termite: no workdir {workdir} on this host\" >&2; exit 126; }}\n"
    )


def _shell_path(path: str) -> str:
    """Quote ``path`` for sh, keeping a leading ``~/`` meaning the remote home."""
    path = str(path)
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


def _hint(host, stderr: str, returncode: int | None) -> str:
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
            f"termite is not installed for {_python(host)} on that host: pip install termite there, or set python: "
            "in cluster.yaml to an interpreter that has it"
        )
    if "cluster key" in text or "key file" in text:
        return "the node cannot read its cluster key file: check the --keys path (install_keys writes it there)"
    if returncode == 127 or "not found" in text or "no such file or directory" in text:
        return f"check python: ({_python(host)}) and workdir: in cluster.yaml name a Python and a folder that exist there"
    if returncode == 255:
        return f"ssh itself failed; try it by hand: {test}"
    return f"see the stderr above; the command was: {test}"


def _run(host, remote_argv: list[str], action: str, *, input: bytes | None = None, timeout: float = 15):
    """Run ``remote_argv`` on ``host``; its stdout, or a RemoteError."""
    argv = ssh_command(host, remote_argv)
    turn = _login_turn(host, action)
    try:
        done = subprocess.run(argv, input=input, capture_output=True, timeout=timeout, stdin=None if input is not None else subprocess.DEVNULL)
    except FileNotFoundError:
        raise RemoteError(host, action, hint="there is no ssh client here: install one (apt-get install openssh-client)") from None
    except subprocess.TimeoutExpired as exc:
        stderr = (exc.stderr or b"").decode("utf-8", "replace")
        raise RemoteError(
            host, action, stderr, f"no answer within {timeout} s: is the host up and reachable? ({_hint(host, stderr, None)})"
        ) from None
    finally:
        turn.release()
    stderr = done.stderr.decode("utf-8", "replace")
    if done.returncode != 0:
        raise RemoteError(host, action, stderr, _hint(host, stderr, done.returncode), done.returncode)
    return done.stdout.decode("utf-8", "replace")


def remote_cores(host, timeout: float = 15) -> int:
    """How many cores ``host`` has (those its Python may run on), asked with ``host.python``."""
    out = _run(host, [_python(host), "-c", _CORES_CODE], f"asking {_python(host)} for the core count", timeout=timeout)
    try:
        cores = int(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise RemoteError(
            host, "asking for the core count", out, f"{_python(host)} printed {out!r}, not a number: is it a Python 3?"
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
    path = _shell_path(remote_path)
    script = (
        "umask 077\n"
        + (_cd_workdir(host) if not str(remote_path).startswith(("/", "~")) else "")
        + f"p={path}\n"
        + 't="$p.tmp.$$"\n'
        + 'mkdir -p "$(dirname "$p")" && cat > "$t" && chmod 600 "$t" && mv -f "$t" "$p" || { rm -f "$t"; exit 1; }\n'
    )
    _run(host, ["sh", "-c", script], f"writing the cluster key file {remote_path}", input=key_bytes, timeout=timeout)


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
    target = _shell_path(workdir)
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
        raise RemoteError(host, action, stderr, _hint(host, stderr, unpack.returncode), unpack.returncode)


class RemoteNode:
    """One ``python -m termite.node`` on a remote host, run over its own ssh process.

    Starts at once; ``wait_announced`` waits until the node listens and gives
    its ``NodeRef``.  ``log_path``: a local file that gets every line the node
    writes (stdout and stderr); the last lines are kept in memory either way,
    for error messages.

    ``detached=True``: the node outlives this process and its ssh session
    (``termite-launch --detach``).  It writes its output to ``remote_log`` on
    the host (default ``.termite/logs/node-XXXXXXXX.log`` under the workdir or
    home), the ssh session ends once the node has announced itself, and
    ``stop``/``kill`` reach it by pid over a new ssh connection.
    """

    def __init__(
        self,
        host,
        node_args: list[str],
        *,
        log_path: str | os.PathLike | None = None,
        detached: bool = False,
        remote_log: str | None = None,
    ):
        self.host = host
        self.node_args = [str(a) for a in node_args]
        self.detached = detached
        self.remote_log = (remote_log or f".termite/logs/node-{uuid.uuid4().hex[:8]}.log") if detached else None
        self.ref: termite.NodeRef | None = None
        self.remote_pid: int | None = None
        self._log = open(log_path, "a", encoding="utf-8", buffering=1) if log_path else None
        self._log_lock = threading.Lock()
        self._stdout_tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
        self._announced = threading.Event()  # set once ref and remote_pid are known, or stdout ended
        self._lock = threading.Lock()
        self._stopped = False
        script = self._detached_script() if detached else self._script()
        self._turn = _login_turn(host, "starting a termite node")  # given back once logged in
        try:
            self._proc = subprocess.Popen(
                ssh_command(host, ["sh", "-c", script]),
                stdin=subprocess.PIPE,  # the lifeline: closing it stops the node (see the module docstring)
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # Ctrl-C reaches the launcher, which stops nodes in order
            )
        except FileNotFoundError:
            self._close_log()
            self._logged_in()
            raise RemoteError(
                host, "starting a termite node", hint="there is no ssh client here: install one (apt-get install openssh-client)"
            ) from None
        self._readers = [
            threading.Thread(target=self._read, args=(self._proc.stdout, True), daemon=True, name="termite-ssh-stdout"),
            threading.Thread(target=self._read, args=(self._proc.stderr, False), daemon=True, name="termite-ssh-stderr"),
        ]
        for reader in self._readers:
            reader.start()

    def _command(self) -> str:
        env = [f"{k}={v}" for k, v in (getattr(self.host, "env", None) or ())]
        return shlex.join([*(["env", *env] if env else []), _python(self.host), "-m", "termite.node", *self.node_args])

    def _script(self) -> str:
        """The remote sh script: start the node, print its pid, TERM it when stdin ends, wait for it."""
        return (
            _cd_workdir(self.host)
            + "exec 3<&0 </dev/null\n"  # fd 3: the ssh session's stdin, the lifeline
            + f"{self._command()} 3<&- &\n"
            + "pid=$!\n"
            + f'echo "{_PID_LINE}$pid"\n'
            + '(cat <&3 >/dev/null 2>&1; kill -TERM "$pid" 2>/dev/null) >/dev/null 2>&1 &\n'
            + "exec 3<&-\n"
            + 'wait "$pid"\n'
        )

    def _detached_script(self) -> str:
        """Start the node in a session of its own, output to its log; print its pid and announce line."""
        return (
            _cd_workdir(self.host)
            + f"log={_shell_path(self.remote_log)}\n"
            + 'mkdir -p "$(dirname "$log")" && : > "$log" || exit 1\n'
            + "s=; command -v setsid >/dev/null 2>&1 && s=setsid\n"  # leave the ssh session's process group
            + f'$s {self._command()} </dev/null >>"$log" 2>&1 &\n'
            + "pid=$!\n"
            + f'echo "{_PID_LINE}$pid"\n'
            + "i=0\n"
            + "while :; do\n"
            + f"  line=$(grep -m 1 '^{_ANNOUNCE}' \"$log\" 2>/dev/null) && {{ echo \"$line\"; exit 0; }}\n"
            + '  kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; wait "$pid"; exit $?; }\n'
            + '  i=$((i + 1)); [ "$i" -lt 3000 ] || { tail -n 50 "$log" >&2; exit 1; }\n'
            + "  sleep 0.1\n"
            + "done\n"
        )

    # -- output ---------------------------------------------------------------

    def _read(self, stream, is_stdout: bool) -> None:
        tail = self._stdout_tail if is_stdout else self._stderr_tail
        try:
            for raw in iter(stream.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if is_stdout and self.remote_pid is None and line.startswith(_PID_LINE):
                    self.remote_pid = int(line[len(_PID_LINE) :])
                    self._logged_in()
                else:
                    if is_stdout and self.ref is None and line.startswith(_ANNOUNCE):
                        self.ref = _parse_announce(line)
                    tail.append(line)
                    with self._log_lock:
                        if self._log is not None and not self._log.closed:
                            self._log.write(line + "\n")
                if is_stdout and self.ref is not None and self.remote_pid is not None:
                    self._announced.set()
        except (OSError, ValueError):  # the stream was closed under us by stop()
            pass
        finally:
            if is_stdout:
                self._logged_in()  # or failed to
                self._announced.set()
                try:
                    self._proc.wait(10)  # reap ssh (it ends with its session) so its pid goes
                except subprocess.TimeoutExpired:
                    pass

    def _logged_in(self) -> None:
        turn, self._turn = self._turn, None
        if turn is not None:
            turn.release()

    @property
    def stderr(self) -> str:
        """The last lines the node (or ssh) wrote to stderr."""
        return "\n".join(self._stderr_tail)

    @property
    def local_pid(self) -> int:
        """The pid of the local ssh process."""
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        """The ssh process's exit status (the node's, or 255 if ssh failed); None while it runs."""
        return self._proc.poll()

    def running(self) -> bool:
        """Whether the node runs, as far as this side knows without asking the host.

        Attached: while its ssh session lasts (it ends when the node does).
        Detached: from its announcement until ``stop`` or ``kill``.
        """
        if self._proc.poll() is None:
            return True
        return self.detached and not self._stopped and self.ref is not None and self._proc.returncode == 0

    # -- life cycle -----------------------------------------------------------

    def wait_announced(self, timeout: float) -> termite.NodeRef:
        """Wait until the node listens; its ``NodeRef``.

        If the node (or ssh) ends first, or ``timeout`` passes, stops what was
        started and raises ``RemoteError`` with the node's stderr.
        """
        self._announced.wait(timeout)
        if self.ref is not None and self.remote_pid is not None:
            return self.ref
        if self._announced.is_set():  # stdout ended: ssh or the node exited
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
            self._readers[1].join(2)
            returncode = self._proc.poll()
            stderr = self.stderr
            hint = _hint(self.host, stderr, returncode)
            action = "starting a termite node"
        else:
            returncode = None
            stderr = self.stderr
            hint = (
                f"the node did not say it was listening within {timeout} s; its stderr is above"
                + (f" and its log in {self._log.name}" if self._log else "")
                + f" (a slow host? {_hint(self.host, stderr, None)})"
            )
            action = f"starting a termite node (waited {timeout} s)"
        self.stop()
        raise RemoteError(self.host, action, stderr, hint, returncode)

    def stop(self, timeout: float = 10) -> None:
        """Stop the node: SIGTERM, SIGKILL after ``timeout``; then end the local ssh. Idempotent.

        SIGTERM goes by closing the session's stdin (the wrapper sends it), so
        no second connection is needed; ``ssh HOST kill`` by pid is the
        fallback when the session does not end, or was lost, and the way to a
        detached node.
        """
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        proc = self._proc
        try:
            if self.detached:
                if proc.poll() is None:
                    proc.kill()  # still starting: the node is stopped by pid below
                    proc.wait()
                self._readers[0].join(2)
                if self.remote_pid is not None:
                    self._signal_remote(timeout=min(timeout, 10), grace=timeout, check=True)
            elif proc.poll() is None:
                _close(proc.stdin)  # the wrapper's `cat` sees end of file and sends SIGTERM
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    if self.remote_pid is not None:
                        self._signal_remote(timeout=min(timeout, 10), grace=0)  # SIGKILL by pid
                    try:
                        proc.wait(5)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
            elif (proc.returncode == 255 or proc.returncode < 0) and self.remote_pid is not None:
                # ssh failed or was killed: the wrapper saw end of file and sent SIGTERM; make sure.
                self._signal_remote(timeout=min(timeout, 10), grace=timeout, check=True)
        finally:
            self._close_pipes()

    def kill(self) -> None:
        """SIGKILL the remote node (it gets no chance to say goodbye), then clean up as ``stop``."""
        try:
            if self.remote_pid is not None and (self.detached or self._proc.poll() is None):
                self._signal_remote(timeout=15, grace=0, check=self.detached, raise_error=True)
                if not self.detached:
                    try:
                        self._proc.wait(10)  # the wrapper's wait returns, so the session ends
                    except subprocess.TimeoutExpired:
                        pass
            elif self._proc.poll() is None:
                self._proc.kill()  # not started yet: dropping the session makes the wrapper stop it
        finally:
            self.stop()

    def _signal_remote(self, timeout: float, grace: float, check: bool = False, raise_error: bool = False) -> None:
        """SIGTERM the node by pid and SIGKILL it after ``grace`` s (``grace=0``: SIGKILL at once).

        ``check``: only if that pid is still a termite node (it may be long
        gone, its pid reused).
        """
        pid = int(self.remote_pid)
        lines = []
        if check:
            lines.append(
                f'command -v ps >/dev/null 2>&1 && case "$(ps -o args= -p {pid} 2>/dev/null)" in '
                "*termite.node*) ;; *) exit 0;; esac"
            )
        if grace > 0:
            steps = max(1, int(grace * 10))
            lines += [
                f"kill -TERM {pid} 2>/dev/null || exit 0",
                f'i=0; while kill -0 {pid} 2>/dev/null && [ "$i" -lt {steps} ]; do sleep 0.1; i=$((i+1)); done',
            ]
        lines += [f"kill -KILL {pid} 2>/dev/null", "exit 0"]
        try:
            _run(self.host, ["sh", "-c", "\n".join(lines)], f"stopping the termite node (pid {pid})", timeout=timeout + grace)
        except RemoteError:
            if raise_error:
                raise

    def _close_pipes(self) -> None:
        _close(self._proc.stdin)
        for reader in self._readers:
            reader.join(2)
        _close(self._proc.stdout)
        _close(self._proc.stderr)
        self._close_log()

    def _close_log(self) -> None:
        with self._log_lock:
            if self._log is not None:
                self._log.close()

    def __enter__(self) -> "RemoteNode":
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running() else f"ended ({self._proc.returncode})"
        return f"<RemoteNode {describe(self.host)} pid={self.remote_pid} ref={self.ref} {state}>"


def _parse_announce(line: str) -> termite.NodeRef:
    """``termite node HOST:PORT incarnation HEX`` -> NodeRef."""
    _, _, address, _, incarnation = line.split()
    host, port = address.rsplit(":", 1)
    return termite.NodeRef(host, int(port), int(incarnation, 16))


def _close(stream) -> None:
    if stream is not None:
        try:
            stream.close()
        except OSError:
            pass

