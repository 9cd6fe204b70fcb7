"""Starting and stopping termite nodes on another host over SSH.

Each node runs over an ssh session of its own, made by
termite_launcher.ssh (how ssh is called, which fields of a host it reads,
and the one-shot actions ``install_keys``, ``remote_cores`` and
``copy_folder``, which this module exports too).

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

from termite_launcher import ssh
from termite_launcher.announce import ANNOUNCE, parse_announcement
from termite_launcher.ssh import (
    COPY_EXCLUDES,
    RemoteError,
    copy_folder,
    describe,
    install_keys,
    remote_cores,
    ssh_command,
)

__all__ = ["COPY_EXCLUDES", "RemoteError", "RemoteNode", "copy_folder", "install_keys", "remote_cores", "ssh_command"]

_PID_LINE = "termite-remote-pid "
_TAIL_LINES = 200  # lines of a node's output kept for error messages


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
        self._turn = ssh.login_turn(host, "starting a termite node")  # given back once logged in
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
        python = ssh.python_of(self.host)
        return shlex.join([*(["env", *env] if env else []), python, "-m", "termite.node", *self.node_args])

    def _script(self) -> str:
        """The remote sh script: start the node, print its pid, TERM it when stdin ends, wait for it."""
        return (
            ssh.cd_workdir(self.host)
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
            ssh.cd_workdir(self.host)
            + f"log={ssh.shell_path(self.remote_log)}\n"
            + 'mkdir -p "$(dirname "$log")" && : > "$log" || exit 1\n'
            + "s=; command -v setsid >/dev/null 2>&1 && s=setsid\n"  # leave the ssh session's process group
            + f'$s {self._command()} </dev/null >>"$log" 2>&1 &\n'
            + "pid=$!\n"
            + f'echo "{_PID_LINE}$pid"\n'
            + "i=0\n"
            + "while :; do\n"
            + f"  line=$(grep -m 1 '^{ANNOUNCE}' \"$log\" 2>/dev/null) && {{ echo \"$line\"; exit 0; }}\n"
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
                    if is_stdout and self.ref is None and line.startswith(ANNOUNCE):
                        self.ref = parse_announcement(line)
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

    def wait(self) -> int:
        """Block until the ssh session ends (attached: when the node does); its exit status.

        The node's own status, 128 + N if signal N killed it; 255 if ssh lost
        the connection; negative if the ssh process here was killed.
        """
        return self._proc.wait()

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
            hint = ssh.advice(self.host, stderr, returncode)
            action = "starting a termite node"
        else:
            returncode = None
            stderr = self.stderr
            hint = (
                f"the node did not say it was listening within {timeout} s; its stderr is above"
                + (f" and its log in {self._log.name}" if self._log else "")
                + f" (a slow host? {ssh.advice(self.host, stderr, None)})"
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
            ssh.run(self.host, ["sh", "-c", "\n".join(lines)], f"stopping the termite node (pid {pid})", timeout=timeout + grace)
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


def _close(stream) -> None:
    if stream is not None:
        try:
            stream.close()
        except OSError:
            pass
