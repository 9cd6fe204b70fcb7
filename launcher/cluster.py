"""Starting a cluster's nodes, knowing them while they run, and stopping them all.

``Cluster(config).start()`` starts one node per core on every host of a
``cluster.yaml`` (termite_launcher.config): local hosts as child processes,
remote ones over SSH (termite_launcher.remote).  It waits until each node has
announced itself, then checks from a node of its own that every one answers
with the cluster's keys.  A node that fails to start stops the launch: every
node already started is stopped, and the error names the host and quotes the
node's stderr.

While the cluster runs, its state file (``<state dir>/<name>.json``, see
termite/_runtime/clusterfile.py) lists the nodes, their OS pids and log files, so
``--status``, ``--stop`` and scripts (``termite.Executor(cluster=...)``) find
it.  ``stop()`` ends every node it started, by pid, and removes the file.

Each node's output goes to its own log file under ``<state dir>/logs/<name>/``.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import termite
from termite import NodeRef
from termite.executor import local_address_towards

from termite_launcher.config import ClusterConfig, HostConfig
from termite_launcher.remote import RemoteNode
from termite_launcher.ssh import RemoteError, install_keys, remote_cores, ssh_command

__all__ = ["Cluster", "LaunchError", "NodeInfo", "launcher_host", "pid_alive", "read_state", "stop_from_state"]

_ANNOUNCE = "termite node "


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
    handle: object = None  # subprocess.Popen or RemoteNode

    @property
    def address(self) -> str:
        return f"{self.ref.host}:{self.ref.port}"


def _die_with_parent() -> None:
    """In a local node (before exec): end when the launcher ends, even by SIGKILL (Linux)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class _LocalNode:
    """A node process on this host."""

    def __init__(self, host: HostConfig, argv: list[str], log: Path, detached: bool):
        env = dict(os.environ)
        env.update(dict(host.env))
        # The node imports termite from where this launcher does (a checkout, or site-packages).
        root = str(Path(termite.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
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
        deadline = time.monotonic() + timeout
        stdout = self.proc.stdout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no announcement within {timeout:.0f} s")
            ready, _, _ = select.select([stdout], [], [], left)
            if ready:
                line = stdout.readline().decode(errors="replace")
                if not line:
                    raise EOFError(f"the node exited with status {self.proc.wait()}")
                if line.startswith(_ANNOUNCE):
                    break
                self.log.write(line.encode())
        _, _, address, _, incarnation = line.split()
        host, port = address.rsplit(":", 1)
        # The rest of its stdout (nothing, normally) goes to its log.
        threading.Thread(target=self._drain, daemon=True).start()
        return NodeRef(host, int(port), int(incarnation, 16))

    def _drain(self) -> None:
        with contextlib.suppress(ValueError, OSError):
            for line in self.proc.stdout:
                self.log.write(line)

    def stop(self, timeout: float = 10.0) -> None:
        _end_process(self.proc.pid, self.proc, timeout)
        with contextlib.suppress(OSError):
            self.proc.stdout.close()
        self.log.close()

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


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

    def __init__(self, config: ClusterConfig, *, detached: bool = False):
        self.config = config
        self.detached = detached
        self.nodes: list[NodeInfo] = []
        self.log_dir = config.state_dir / "logs" / config.name
        self.state_file = config.state_dir / f"{config.name}.json"

    # -- starting ---------------------------------------------------------------

    def _keys(self) -> Path:
        path = self.config.keys
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            termite.generate_keys(path)
        termite.load_keys(path)  # a clear KeyFileError now rather than in every node
        return path

    def _node_args(self, host: HostConfig, keys: str) -> list[str]:
        config = self.config
        return [
            "--host", host.bind, "--port", "0", "--keys", keys,
            "--heartbeat-interval", str(config.heartbeat_interval),
            "--heartbeat-timeout", str(config.heartbeat_timeout),
        ]  # fmt: skip

    def _cores(self, host: HostConfig) -> int:
        if host.cores is not None:
            return host.cores
        return os.cpu_count() or 1 if host.local else remote_cores(host)

    def start(self, progress=lambda text: None) -> list[NodeInfo]:
        """Start every node and wait until each has joined; LaunchError (and nothing left running) if one fails."""
        config = self.config
        if self.state_file.exists():
            existing = read_state(self.state_file)
            if any(pid_alive(node["os_pid"]) for node in existing["nodes"] if not node.get("remote")):
                raise LaunchError(
                    f"cluster {config.name!r} is already running (see {self.state_file}); "
                    f"stop it first: termite-launch {config.path} --stop"
                )
        keys = self._keys()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            for host in config.hosts:
                label = host.label or host.address
                try:
                    cores = self._cores(host)
                    if host.local:
                        argv = self._node_args(host, str(keys))
                    else:
                        remote_keys = f".termite/{config.name}.key"
                        install_keys(host, keys.read_bytes(), remote_keys)
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
                    self.nodes.append(NodeInfo(label, host, None, None, log, handle))
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

    def _write_state(self) -> None:
        state = {
            "name": self.config.name,
            "config": str(self.config.path),
            "keys": str(self.config.keys),
            "launcher_pid": None if self.detached else os.getpid(),
            "started": time.time(),
            "nodes": [
                {
                    "label": node.label,
                    "address": node.address,
                    "incarnation": f"{node.ref.incarnation:x}",
                    "os_pid": node.os_pid,
                    "remote": not node.host.local,
                    "host": node.host.address,
                    "log": str(node.log),
                }
                for node in self.nodes
            ],
        }
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2), encoding="utf-8")
        tmp.replace(self.state_file)

    # -- stopping ---------------------------------------------------------------

    def stop(self) -> None:
        """Stop every node this launcher started (each by its pid) and forget the cluster."""
        # All at once: each node takes a while to end (and a remote one, an ssh round trip).
        stoppers = [threading.Thread(target=_stop_quietly, args=(node.handle,), daemon=True) for node in self.nodes]
        for stopper in stoppers:
            stopper.start()
        for stopper in stoppers:
            stopper.join()
        self.nodes = []
        with contextlib.suppress(FileNotFoundError):
            self.state_file.unlink()


def launcher_host(config: ClusterConfig) -> str:
    """Where the launcher's own node listens: loopback, unless a host is remote."""
    remote = [host for host in config.hosts if not host.local]
    return local_address_towards(remote[0].address) if remote else "127.0.0.1"


def _stop_quietly(handle) -> None:
    with contextlib.suppress(Exception):  # each handle ends its node by pid at worst
        handle.stop()


def _tail(log: Path | None, lines: int = 15) -> str:
    if log is None:
        return ""
    try:
        text = log.read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return ""
    return "its log says:\n    " + "\n    ".join(text) if text else "its log is empty"


def read_state(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def stop_from_state(config: ClusterConfig, progress=print) -> int:
    """``--stop``: end the nodes of a cluster started with ``--detach``; how many were running."""
    path = config.state_dir / f"{config.name}.json"
    if not path.exists():
        return 0
    state = read_state(path)
    stopped = 0
    hosts = {host.address: host for host in config.hosts}
    for node in state["nodes"]:
        pid = node["os_pid"]
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


def _is_node(pid: int) -> bool:
    """Whether ``pid`` still is a termite node (and not a process that reused its pid)."""
    try:
        return b"termite.node" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return sys.platform != "linux"
