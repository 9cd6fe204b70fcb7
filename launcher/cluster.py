"""Starting a cluster's nodes, knowing them while they run, and stopping them all.

``Cluster(config).start()`` starts one node per core on every host of a
``cluster.yaml`` (termite_launcher.config): local hosts as child processes,
remote ones over SSH (termite_launcher.remote), and with ``hosts: slurm``
one per CPU of the Slurm allocation, as the tasks of one srun job step
(termite_launcher.slurm).  It waits until each node has
announced itself, then checks from a node of its own that every one answers
with the cluster's keys.  A node that fails to start stops the launch: every
node already started is stopped, and the error names the host and quotes the
node's stderr.

While the cluster runs, the launcher supervises its nodes (``supervise``),
as an Erlang supervisor does its children: it is the parent of every local
node (and holds the ssh session of every remote one, and the srun of every
Slurm one), so it sees a node's
process end at once, with the true reason (``killed by signal 9``,
``exited with status 1``), and starts the node again after a back-off, at
most ``restart.intensity`` times within ``restart.period`` seconds (cluster.yaml;
termite_launcher.config.RestartPolicy).  One exit more and it gives up: the
node stays down.  It tells the dashboard each step as :class:`NodeNews`.
A restarted node has a new port and incarnation; the state file is rewritten
so that scripts started since use it.  (``termite-launch --detach`` leaves a
launcher in the background to supervise; ``Cluster(detached=True)`` starts
nodes that outlive this process, and nothing supervises them.)

While the cluster runs, its state file (``<state dir>/<name>.json``, see
termite/_runtime/clusterfile.py) lists the nodes that run, their OS pids, restarts and log files (and, under
``"down"``, those waiting to be restarted or given up on, and why), so
``--status``, ``--stop`` and scripts (``termite.Executor(cluster=...)``) find
it.  ``stop()`` ends every node it started, by pid, and removes the file.

Each node's output goes to its own log file under ``<state dir>/logs/<name>/``.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import termite
from termite import NodeRef
from termite.executor import local_address_towards

from termite_launcher.announce import read_announcement
from termite_launcher.config import ClusterConfig, ConfigError, HostConfig, RestartPolicy
from termite_launcher.remote import RemoteNode
from termite_launcher.slurm import SlurmError, SlurmStep, in_allocation
from termite_launcher.ssh import RemoteError, install_keys, remote_cores, ssh_command

__all__ = [
    "Cluster", "LaunchError", "NodeInfo", "NodeNews", "exit_reason", "launcher_host", "pid_alive", "read_state",
    "already_running", "running", "stop_from_state",
]

EXIT_GRACE = 0.5  # seconds a local node whose connection closed gets to be seen ended (its exit's reason)
SSH_EXIT_GRACE = 2.0  # the same over ssh: the node's status comes back with its session's end
LOST_GRACE = 2.0  # seconds a remote node that lost its connection gets between SIGTERM and SIGKILL
LAUNCHER_GRACE = 40.0  # seconds a launcher gets to stop its nodes (each gets 10 s, all at once; ssh is slow)


class LaunchError(Exception):
    """The cluster could not start: which host, what happened, and the node's own words."""


@dataclass
class NodeInfo:
    """A node the launcher started."""

    label: str  # the host's name on the dashboard
    host: HostConfig
    ref: NodeRef | None = None
    os_pid: int | None = None
    log: Path | None = None
    handle: object = None  # _LocalNode, RemoteNode or SlurmTask
    argv: tuple[str, ...] = ()  # python -m termite.node's arguments: a restart uses them again
    running: bool = True  # False from its exit until it is restarted (or for good)
    restarts: int = 0
    reason: str | None = None  # why it is down (while not running)
    given_up: bool = False  # past the restart intensity: down for good
    ended_because: str | None = None  # why the launcher itself ended it (``lost``), the reason its exit is shown with

    @property
    def address(self) -> str:
        return f"{self.ref.host}:{self.ref.port}"


@dataclass(frozen=True)
class NodeNews:
    """What the supervisor tells whoever watches (the dashboard): a node exited, was restarted, or is given up on.

    ``show(view, at)`` passes it to a ClusterView (termite_launcher.dashboard);
    ``text`` is the line the launcher prints.
    """

    kind: str  # "exited", "restarted" or "gave_up"
    label: str  # the host's name on the dashboard
    node: NodeRef  # the node that ended (for "restarted": the one replaced)
    reason: str | None = None  # exited, gave_up: why (and what happens next)
    new: NodeRef | None = None  # restarted: the node that replaces it
    os_pid: int | None = None  # restarted: the new node's pid
    log_tail: tuple[str, ...] = ()  # exited, gave_up: the node's last log lines

    def show(self, view, at: float) -> None:
        if self.kind == "restarted":
            view.restarted(self.node, self.new, at, os_pid=self.os_pid)
        elif self.kind == "exited":
            view.exited(self.node, at, self.reason)
        else:
            view.gave_up(self.node, at, self.reason)

    @property
    def text(self) -> str:
        where = f"host {self.label}: node {self.node.host}:{self.node.port}"
        if self.kind == "restarted":
            return f"{where} restarted as {self.new.host}:{self.new.port} (pid {self.os_pid})"
        said = ("; its log ends:\n    " + "\n    ".join(self.log_tail)) if self.log_tail else "; its log is empty"
        return f"{where} {self.reason}{said}"


def exit_reason(status: int | None, over_ssh: bool = False) -> str:
    """Why a node's process ended, from its exit status (a Popen returncode; over ssh, the ssh process's)."""
    if status is None:
        return "ended"
    if not over_ssh:
        if status < 0:
            return f"killed by signal {-status} ({_signal_name(-status)})"
        return f"exited with status {status}"
    # Over ssh the remote wrapper's `wait` gives the node's status, 128 + N for signal N.
    if status == 255:
        return "its ssh session ended (ssh exit status 255: the connection or the host was lost)"
    if status < 0:
        return f"its ssh process was killed by signal {-status} ({_signal_name(-status)}), so the node was stopped"
    if status > 128:
        return f"killed by signal {status - 128} ({_signal_name(status - 128)})"
    return f"exited with status {status}"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return "unknown signal"


def _die_with_parent() -> None:
    """In a local node (before exec): end when the launcher ends, even by SIGKILL (Linux)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class _LocalNode:
    """A node process on this host."""

    def __init__(self, host: HostConfig, argv: list[str], log: Path, detached: bool):
        env = _node_env(host)
        self.log = open(log, "ab")  # noqa: SIM115 - closed by stop()
        self.proc = subprocess.Popen(
            [host.python, "-u", "-m", "termite.node", *argv],
            stdout=subprocess.PIPE,
            stderr=self.log,
            stdin=subprocess.DEVNULL,
            cwd=host.workdir or None,
            env=env,
            start_new_session=detached,
            preexec_fn=None if detached else _die_with_parent,
        )
        self.remote_pid = self.proc.pid

    def wait_announced(self, timeout: float) -> NodeRef:
        try:
            ref = read_announcement(self.proc.stdout, timeout, self.log.write)
        except EOFError:
            raise EOFError(f"the node {exit_reason(self.proc.wait())}") from None
        # The rest of its stdout (nothing, normally) goes to its log.
        threading.Thread(target=self._drain, daemon=True).start()
        return ref

    def _drain(self) -> None:
        with contextlib.suppress(ValueError, OSError):
            for line in self.proc.stdout:
                self.log.write(line)

    def wait(self) -> int:
        """Block until the node's process ends; its returncode (negative: the signal that killed it)."""
        return self.proc.wait()

    def poll(self) -> int | None:
        return self.proc.poll()

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:  # an ended one's pid may be another process's by now
            _end_process(self.proc.pid, self.proc, timeout)
        with contextlib.suppress(OSError):
            self.proc.stdout.close()
        self.log.close()

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


def _node_env(host: HostConfig) -> dict[str, str]:
    """A node's environment, started from this host: this one's, the host's env:, and termite on the path."""
    env = dict(os.environ)
    env.update(dict(host.env))
    # The node imports termite from where this launcher does (a checkout, or site-packages).
    root = str(Path(termite.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return env


def _end_process(pid: int, proc: subprocess.Popen | None, timeout: float) -> None:
    """SIGTERM, then SIGKILL after ``timeout``; waited for if it is our child."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    if proc is not None:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        return
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)  # not our child: nothing to wait on but its pid
    if pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host runs (a zombie counts as ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):  # a zombie is gone for our purposes
        if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
            return False
    return True


class Cluster:
    """The nodes of one cluster.yaml, started and stopped by this launcher."""

    def __init__(self, config: ClusterConfig, *, detached: bool = False, log_level: str | None = None):
        """``log_level``: the nodes' (``--log-level``; None: their default, WARNING)."""
        self.config = config
        self.detached = detached
        self.log_level = log_level
        self.nodes: list[NodeInfo] = []
        self.log_dir = config.state_dir / "logs" / config.name
        self.state_file = config.state_dir / f"{config.name}.json"
        # Held while a node's handle or state changes: the supervisor's threads and stop() both do.
        self._lock = threading.RLock()
        self._stopping = threading.Event()  # set by stop(): an exit from now on is not restarted
        self._supervised = False
        self.held_downs: dict = {}  # node -> (reason, until when): the downs of its own nodes, held a moment

    # -- starting ---------------------------------------------------------------

    def _keys(self) -> Path:
        path = self.config.keys
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            termite.generate_keys(path)
        termite.load_keys(path)  # a clear KeyFileError now rather than in every node
        return path

    def _node_args(self, host: HostConfig, keys: str) -> list[str]:
        return ["--host", host.bind, *self._common_args(keys)]

    def _common_args(self, keys: str) -> list[str]:
        """python -m termite.node's arguments but where it listens (which a Slurm task chooses)."""
        config = self.config
        return [
            "--port", "0", "--keys", keys,
            "--heartbeat-interval", str(config.heartbeat_interval),
            "--heartbeat-timeout", str(config.heartbeat_timeout),
            "--idle-close", str(config.idle_close),
            *(["--log-level", self.log_level] if self.log_level else []),
        ]  # fmt: skip

    def _cores(self, host: HostConfig) -> int:
        if host.cores is not None:
            return host.cores
        return os.cpu_count() or 1 if host.local else remote_cores(host)

    def start(self, progress=lambda text: None) -> list[NodeInfo]:
        """Start every node and wait until each has joined; LaunchError (and nothing left running) if one fails."""
        if self.config.slurm is not None:
            try:
                self.config = in_allocation(self.config)
            except ConfigError as exc:
                raise LaunchError(str(exc)) from None
        config = self.config
        state = running(config)
        if state is not None:
            raise LaunchError(already_running(config, state))
        keys = self._keys()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            slurm_hosts = [host for host in config.hosts if host.slurm]
            if slurm_hosts:
                self._start_slurm(slurm_hosts, str(keys), progress)
            for host in config.hosts:
                if host.slurm:
                    continue
                label = host.label or host.address
                try:
                    cores = self._cores(host)
                    if host.local:
                        argv = self._node_args(host, str(keys))
                    else:
                        key_bytes = keys.read_bytes()
                        remote_keys = remote_key_path(config.name, key_bytes)
                        install_keys(host, key_bytes, remote_keys)
                        argv = self._node_args(host, remote_keys)
                except RemoteError as exc:
                    raise LaunchError(str(exc)) from None  # it names the host
                progress(f"{label}: starting {cores} node{'s' * (cores != 1)}")
                for i in range(cores):
                    log = self.log_dir / f"{label}-{i}.log"
                    try:
                        if host.local:
                            handle = _LocalNode(host, argv, log, self.detached)
                        else:
                            handle = RemoteNode(host, argv, log_path=log, detached=self.detached)
                    except (OSError, RemoteError) as exc:
                        raise LaunchError(f"host {label}: cannot start a node with {host.python}: {exc}") from None
                    self.nodes.append(NodeInfo(label, host, None, None, log, handle, tuple(argv)))
            deadline = time.monotonic() + config.join_timeout
            for node in self.nodes:
                try:
                    node.ref = node.handle.wait_announced(max(0.1, deadline - time.monotonic()))
                except (TimeoutError, EOFError, RemoteError) as exc:
                    raise LaunchError(f"host {node.label}: a node did not start: {exc}\n{_tail(node.log)}") from None
                node.os_pid = node.handle.remote_pid
            self._write_state()
        except BaseException:
            self.stop()
            raise
        return self.nodes

    def _start_slurm(self, hosts: list[HostConfig], keys: str, progress) -> None:
        """Every node of the Slurm allocation, as the tasks of one srun job step."""
        if self.detached:
            raise LaunchError("the nodes of a Slurm allocation are tasks of a job step, which ends with its srun: "
                              "start them with a launcher that stays (termite-launch --detach keeps one)")
        placement = [(host, self.log_dir / f"{host.label}-{i}.log") for host in hosts for i in range(host.cores)]
        names = ", ".join(host.label for host in hosts)
        progress(f"Slurm job {os.environ.get('SLURM_JOB_ID')}: starting {len(placement)} node"
                 f"{'s' * (len(placement) != 1)} on {names}, as one srun job step")
        argv = self._common_args(keys)
        step = self._slurm_step(placement, argv, self.log_dir / "slurm-hostfile")
        for task in step.tasks:
            log = placement[task.index][1]
            self.nodes.append(NodeInfo(task.host.label, task.host, None, None, log, task, tuple(argv)))

    def _slurm_step(self, placement, argv: list[str], hostfile: Path | None) -> SlurmStep:
        """Start ``placement``'s nodes as one srun job step (``hostfile`` None: one node, a restart)."""
        try:
            return SlurmStep(
                placement, argv, name=self.config.name, env=_node_env(placement[0][0]), hostfile=hostfile,
                srun_options=self.config.slurm.srun if self.config.slurm else (), preexec_fn=_die_with_parent,
            )  # fmt: skip
        except SlurmError as exc:
            raise LaunchError(f"Slurm: {exc}") from None

    def joined(self, here: termite.Node, timeout: float) -> None:
        """Check from ``here`` that every node answers with the cluster's keys."""
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            try:
                here.connect(node.ref.host, node.ref.port, timeout=max(0.1, deadline - time.monotonic()))
            except termite.Timeout:
                raise LaunchError(
                    f"host {node.label}: node {node.address} started but does not answer "
                    f"(a firewall, or a bind address the others cannot reach?)\n{_tail(node.log)}"
                ) from None

    # -- supervising ------------------------------------------------------------

    def supervise(self, here: termite.Node | None, tell=lambda news: None) -> None:
        """Restart each node whose process ends, within ``config.restart``; ``tell(NodeNews)`` each step.

        One thread per node waits on its process (a local node is this
        process's child; a remote one ends its ssh session), so an exit is
        seen at once.  ``here``: the launcher's node, which connects to a
        restarted node (the dashboard's meters then reach it).  Until
        ``stop()``.
        """
        if self.detached:
            raise LaunchError("a detached cluster has no launcher left to supervise it")
        self._supervised = True
        for node in list(self.nodes):
            threading.Thread(
                target=self._supervise, args=(node, here, tell), daemon=True, name=f"termite-supervise-{node.address}"
            ).start()

    def _supervise(self, node: NodeInfo, here: termite.Node | None, tell) -> None:
        try:
            self._supervise_node(node, here, tell)
        except Exception as exc:  # noqa: BLE001 - a thread's error is seen by no one: say it where the node's state is
            why = f"the launcher stopped supervising it: {type(exc).__name__}: {exc}"
            node.given_up = True
            self._set_down(node, why)
            tell(NodeNews("gave_up", node.label, node.ref, why))

    def _supervise_node(self, node: NodeInfo, here: termite.Node | None, tell) -> None:
        policy: RestartPolicy = self.config.restart
        restarted: collections.deque[float] = collections.deque()  # when, within the period (monotonic)
        reason = self._wait_exit(node)
        while reason is not None:
            old = node.ref
            now = time.monotonic()
            while restarted and now - restarted[0] > policy.period:
                restarted.popleft()
            tail = _log_tail(node.log)
            if len(restarted) >= policy.intensity:  # as Erlang's supervisor: more would be a restart loop
                why = (
                    f"{reason}; gave up: "
                    + (f"{len(restarted) + 1} exits within {policy.period:g} s, more than restart.intensity "
                       f"{policy.intensity} allows" if policy.intensity else "restart.intensity is 0")
                    + f" (see its log {node.log}; raise restart: intensity or period in {self.config.path.name} "
                    "to allow more)"
                )
                node.given_up = True
                self._set_down(node, why)
                tell(NodeNews("gave_up", node.label, old, why, log_tail=tail))
                return
            delay = policy.delay(len(restarted))
            self._set_down(node, reason)
            tell(NodeNews(
                "exited", node.label, old,
                f"{reason}; restarting in {delay:g} s (restart {len(restarted) + 1} of at most {policy.intensity} "
                f"within {policy.period:g} s)",
                log_tail=tail,
            ))
            if self._stopping.wait(delay):
                return
            restarted.append(time.monotonic())
            try:
                if not self._start_again(node, here):
                    return  # stopping
            except LaunchError as exc:
                reason = f"did not start again: {exc}"
                continue
            tell(NodeNews("restarted", node.label, old, new=node.ref, os_pid=node.os_pid))
            reason = self._wait_exit(node)

    def lost(self, ref: NodeRef, reason: str) -> bool:
        """termite declared ``ref`` down (``NodeDown``): end a remote node whose ssh session still lasts.

        Its session's end then restarts it, as any exit does.  The session
        may outlive the node's connection (the node stopped, its port
        blocked).  A local node is left alone: its process is this
        launcher's child, so its exit, not its connection, decides (and a
        busy node is not down).  Whether the node was ended.
        """
        with self._lock:
            node = next((n for n in self.nodes if n.ref == ref and n.running and n.host.ssh is not None), None)
            if node is None or not self._supervised or self._stopping.is_set():
                return False
            node.ended_because = (
                f"lost its connection ({reason}) while its ssh session lasted, so the launcher ended it"
            )
            handle = node.handle
        # A short grace: a node that lost its connection is stopped or stuck, and a SIGTERM may wait forever.
        threading.Thread(target=_stop_quietly, args=(handle, LOST_GRACE), daemon=True, name="termite-end-lost").start()
        return True

    def exit_grace(self, ref: NodeRef) -> float | None:
        """How long ``ref``'s NodeDown is held for its process's end to be seen (see :meth:`exited`),
        or None if this launcher would not see it end."""
        node = self._ending_seen(ref)
        return None if node is None else EXIT_GRACE if node.host.ssh is None else SSH_EXIT_GRACE

    def exited(self, ref: NodeRef) -> bool | None:
        """Whether ``ref``'s process has ended, if this launcher supervises it and sees it end (None if
        not): its supervisor is about to say why.  A killed node's connection closes as its process
        ends, a moment before the process can be waited for (over ssh, before its session ends with
        the node's status), so its NodeDown can come first."""
        node = self._ending_seen(ref)
        if node is None:
            return None
        return (node.handle.poll() if node.host.ssh is None else node.handle.returncode) is not None

    def _ending_seen(self, ref: NodeRef) -> NodeInfo | None:
        """``ref``'s node, if this launcher supervises it and sees its process end: a local or Slurm
        node, or one over an ssh session that lasts as long as it (not a detached one's)."""
        with self._lock:
            node = next((n for n in self.nodes if n.ref == ref), None)
        if node is None or not self._supervised or (node.host.ssh is not None and node.handle.detached):
            return None
        return node

    def _wait_exit(self, node: NodeInfo) -> str | None:
        """Block until the node's process ends; why it did, or None if the cluster is being stopped."""
        status = node.handle.wait()
        if self._stopping.is_set():
            return None
        with self._lock:
            because, node.ended_because = node.ended_because, None
        return because or exit_reason(status, over_ssh=node.host.ssh is not None)

    def _set_down(self, node: NodeInfo, reason: str) -> None:
        with self._lock:
            node.running, node.reason = False, reason
            if not self._stopping.is_set():
                self._write_state()

    def _start_again(self, node: NodeInfo, here: termite.Node | None) -> bool:
        """Start ``node`` anew, as it was started; False if the cluster is being stopped; LaunchError if it fails."""
        host, timeout = node.host, self.config.join_timeout
        node.handle.stop()  # the old one's pipes and log (its process has ended; a remote one is made sure of)
        if self._stopping.is_set():
            return False
        try:
            if host.slurm:  # a step of its own, on the CPU the first step holds
                handle = self._slurm_step([(host, node.log)], list(node.argv), None).tasks[0]
            elif host.local:
                handle = _LocalNode(host, list(node.argv), node.log, self.detached)
            else:
                handle = RemoteNode(host, list(node.argv), log_path=node.log, detached=False)
        except (OSError, RemoteError) as exc:
            raise LaunchError(f"cannot start a node with {host.python}: {exc}") from None
        with self._lock:
            if not self._stopping.is_set():
                node.handle = handle  # from now on stop() stops it
        if node.handle is not handle:
            handle.stop()
            return False
        try:
            ref = handle.wait_announced(timeout)
            if here is not None:  # so that its meter reports to the dashboard
                here.connect(ref.host, ref.port, timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - whatever it was, it is the reason shown, and counts as an exit
            if self._stopping.is_set():
                return False
            handle.stop()
            raise LaunchError(str(exc).splitlines()[0]) from None
        with self._lock:
            if self._stopping.is_set():
                return False
            node.ref, node.os_pid = ref, handle.remote_pid
            node.running, node.reason = True, None
            node.restarts += 1
            self._write_state()
        return True

    def _write_state(self) -> None:
        state = {
            "name": self.config.name,
            "config": str(self.config.path),
            "keys": str(self.config.keys),
            "launcher_pid": None if self.detached else os.getpid(),
            "launcher_host": socket.gethostname(),
            "started": time.time(),
            "nodes": [_node_state(node) for node in self.nodes if node.running],  # what scripts connect to
            "down": [
                {**_node_state(node), "state": "failed" if node.given_up else "restarting", "reason": node.reason}
                for node in self.nodes
                if not node.running
            ],
        }
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2), encoding="utf-8")
        tmp.replace(self.state_file)

    # -- stopping ---------------------------------------------------------------

    def stop(self) -> None:
        """Stop every node this launcher started (each by its pid) and forget the cluster."""
        with self._lock:  # no restart begins after this; one under way is stopped with the rest
            self._stopping.set()
            handles = [node.handle for node in self.nodes]
        # All at once: each node takes a while to end (and a remote one, an ssh round trip).
        stoppers = [threading.Thread(target=_stop_quietly, args=(handle,), daemon=True) for handle in handles]
        for stopper in stoppers:
            stopper.start()
        for stopper in stoppers:
            stopper.join()
        self.nodes = []
        with contextlib.suppress(FileNotFoundError):
            self.state_file.unlink()


def remote_key_path(name: str, key_bytes: bytes) -> str:
    """Where a host keeps the cluster's key file (from its workdir): named by the key as well as the
    cluster, so that two clusters of one name (two checkouts' cluster.yaml) launched to the same host
    and account do not overwrite each other's, which the next node (re)started there would read."""
    return f".termite/{name}-{hashlib.sha256(key_bytes).hexdigest()[:12]}.key"


def launcher_host(config: ClusterConfig) -> str:
    """Where the launcher's own node listens: loopback, unless a host is remote (or a Slurm host is)."""
    remote = [host.bind if host.slurm else host.address for host in config.hosts if not host.local]
    if config.slurm is not None and not config.hosts:  # --attach, --status: where its running nodes are
        with contextlib.suppress(OSError, ValueError, LookupError, TypeError):
            state = read_state(config.state_dir / f"{config.name}.json")
            remote = [node["address"].rsplit(":", 1)[0] for node in state["nodes"][:1]]
    return local_address_towards(remote[0]) if remote else "127.0.0.1"


def _stop_quietly(handle, timeout: float = 10.0) -> None:
    with contextlib.suppress(Exception):  # each handle ends its node by pid at worst
        handle.stop(timeout)


def _tail(log: Path | None, lines: int = 15) -> str:
    if log is None:
        return ""
    try:
        text = log.read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return ""
    return "its log says:\n    " + "\n    ".join(text) if text else "its log is empty"


def _log_tail(log: Path | None, lines: int = 5) -> tuple[str, ...]:
    """The last non-empty lines of a node's log."""
    if log is None:
        return ()
    try:
        with open(log, "rb") as file:
            file.seek(0, os.SEEK_END)
            file.seek(max(0, file.tell() - 8192))
            text = file.read().decode(errors="replace")
    except OSError:
        return ()
    return tuple(line for line in text.splitlines() if line.strip())[-lines:]


def read_state(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def running(config: ClusterConfig) -> dict | None:
    """The state of ``config``'s cluster if it runs: its launcher, or a node of this host, is alive.

    None if there is no state file, or only a stale one (what a launcher
    killed with SIGKILL leaves; its local nodes end with it).  A cluster of
    remote nodes only, whose launcher is gone, cannot be told from here.
    """
    path = config.state_dir / f"{config.name}.json"
    try:
        state = read_state(path)
    except (OSError, ValueError):
        return None
    launcher = state.get("launcher_pid")
    if _launcher_elsewhere(state):  # an sbatch script's, on a host of its job: while the job lasts
        return state if _slurm_job_alive(_slurm_job(state)) else None
    if launcher and launcher != os.getpid() and pid_alive(launcher) and _is_launcher(launcher):
        return state
    local = [node["os_pid"] for node in state.get("nodes", ()) if not node.get("remote")]
    if any(pid_alive(pid) and _is_node(pid) for pid in local):
        return state
    return None


def already_running(config: ClusterConfig, state: dict) -> str:
    """What to say to one who starts a cluster that runs: whose it is, and what to do instead."""
    launcher = state.get("launcher_pid")
    nodes = len(state.get("nodes", ()))
    by = f"launcher pid {launcher}, " if launcher else ""
    command = f"termite-launch {config.path}"
    return (
        f"cluster {config.name!r} is already running ({by}{nodes} node{'s' * (nodes != 1)}); "
        f"watch it: {command} --attach; its status: {command} --status; stop it: {command} --stop"
    )


def stop_from_state(config: ClusterConfig, progress=print) -> int:
    """``--stop``: end the nodes of a running cluster; how many were running.

    The launcher that supervises them (``--detach``'s, in the background, or
    one in another terminal) is asked first (SIGTERM): it stops every node
    and would restart one ended under it.  Nodes it left (it was killed) are
    ended by pid, the tasks of Slurm steps by ``scancel``.  A launcher on
    another host is one run by an sbatch script (``exec termite-launch``):
    Slurm signals it (``scancel --batch``).  LaunchError if it cannot be stopped.
    """
    path = config.state_dir / f"{config.name}.json"
    if not path.exists():
        return 0
    state = read_state(path)
    launcher = state.get("launcher_pid")
    if _launcher_elsewhere(state) and _slurm_job(state):
        return _stop_batch_launcher(path, state, _slurm_job(state))
    if launcher and launcher != os.getpid() and pid_alive(launcher) and _is_launcher(launcher):
        _end_process(launcher, None, LAUNCHER_GRACE)
        if not path.exists():  # it stopped its nodes and forgot the cluster
            return len(state["nodes"])
    stopped = 0
    steps = {node["slurm_step"] for node in state["nodes"] if node.get("slurm_step")}
    if steps:
        for step in sorted(steps):  # what a launcher killed by SIGKILL left (srun ends its step as it dies)
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                subprocess.run(["scancel", "--quiet", "--signal=TERM", step], capture_output=True, timeout=30)
        stopped += sum(1 for node in state["nodes"] if node.get("slurm_step"))
    hosts = {host.address: host for host in config.hosts}
    for node in state["nodes"]:
        pid = node["os_pid"]
        if node.get("slurm_step"):
            continue
        if node.get("remote"):
            host = hosts.get(node["host"])
            if host is None:
                progress(f"{node['label']}: host {node['host']} is no longer in {config.path}; stop node pid {pid} there by hand")
                continue
            done = subprocess.run(ssh_command(host, ["kill", "-TERM", str(pid)]), capture_output=True, text=True, timeout=30)
            if done.returncode == 0:
                stopped += 1
            else:
                progress(f"{node['label']}: could not stop node pid {pid} on {node['host']}: {done.stderr.strip()}")
        elif pid_alive(pid) and _is_node(pid):
            _end_process(pid, None, 10.0)
            stopped += 1
    path.unlink(missing_ok=True)
    return stopped


def _launcher_elsewhere(state: dict) -> bool:
    """Whether the state's launcher runs on another host (its pid means nothing here)."""
    where = state.get("launcher_host")
    return bool(state.get("launcher_pid")) and where is not None and where != socket.gethostname()


def _slurm_job(state: dict) -> str | None:
    """The Slurm job whose steps the state's nodes are, if they are."""
    return next((node["slurm_step"].split(".")[0] for node in state.get("nodes", ()) if node.get("slurm_step")), None)


def _slurm_job_alive(job: str | None) -> bool:
    """Whether Slurm still has ``job`` (pending or running); False if it cannot be asked."""
    if job is None:
        return False
    try:
        done = subprocess.run(["squeue", "--noheader", "--jobs", job, "--format", "%i"], capture_output=True,
                              text=True, timeout=30)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and job in done.stdout.split()


def _stop_batch_launcher(path: Path, state: dict, job: str) -> int:
    """``--stop`` of a cluster whose launcher is the batch script of Slurm job ``job``, on another host.

    SIGTERM to the batch script (``exec termite-launch`` in it: the launcher
    itself), which stops the nodes and removes the state file.
    """
    where, launcher = state.get("launcher_host"), state.get("launcher_pid")
    if not _slurm_job_alive(job):  # the job ended (a time limit): so did its steps
        path.unlink(missing_ok=True)
        return 0
    try:
        done = subprocess.run(["scancel", "--batch", "--signal=TERM", job], capture_output=True, text=True,
                              timeout=30)  # fmt: skip
        said = done.stderr.strip() if done.returncode else ""
    except (OSError, subprocess.TimeoutExpired) as exc:
        said = str(exc)
    deadline = time.monotonic() + LAUNCHER_GRACE
    while not said and path.exists() and time.monotonic() < deadline:
        time.sleep(0.1)  # it removes the state file once it has stopped its nodes
    if not path.exists():
        return len(state["nodes"])
    raise LaunchError(
        f"its launcher (pid {launcher}) runs on {where}, in Slurm job {job}, and "
        + (f"scancel --batch could not signal it ({said})" if said else f"did not stop within {LAUNCHER_GRACE:g} s")
        + f": stop it there, or cancel the job: scancel {job}"
    )


def _is_launcher(pid: int) -> bool:
    """Whether ``pid`` still is a termite launcher (and not a process that reused its pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return sys.platform != "linux"
    return b"termite_launcher" in cmdline or b"termite-launch" in cmdline


def _is_node(pid: int) -> bool:
    """Whether ``pid`` still is a termite node (and not a process that reused its pid)."""
    try:
        return b"termite.node" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return sys.platform != "linux"


def _node_state(node) -> dict:
    """What the state file says of one node."""
    return {
        "label": node.label,
        "address": node.address,
        "incarnation": f"{node.ref.incarnation:x}",
        "os_pid": node.os_pid,
        "remote": not node.host.local,
        "host": node.host.address,
        "log": str(node.log),
        "restarts": node.restarts,
        **({"slurm_step": node.handle.step} if node.host.slurm else {}),
    }
