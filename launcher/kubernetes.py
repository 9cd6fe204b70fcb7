"""termite in Kubernetes: a pod's nodes, and peers found through the headless Service's DNS name.

    termite-launch --kubernetes                 in a pod of the StatefulSet: run this pod's nodes
    termite-launch --kubernetes --run job.py    in a Job's pod: run job.py on the StatefulSet's nodes
    python -m termite_launcher.kubernetes secret [--name termite-key]
                                                a new cluster key, as a Secret manifest on stdout

deploy/kubernetes/termite.yaml runs a cluster as a StatefulSet behind a
headless Service; docs/guide/kubernetes.md says how to deploy, scale and run
a job.  No cluster.yaml is read: a pod learns who it is from its environment,
which the manifest sets (the downward API gives its address and CPU limit):

==========================  ==============================================  ==========================
variable                    meaning                                         default
==========================  ==============================================  ==========================
``TERMITE_SERVICE``         the headless Service's DNS name (``termite``,   required
                            or ``termite.NAMESPACE.svc.cluster.local``)
``TERMITE_PORT``            the port of a pod's first node; node i          7100
                            listens on TERMITE_PORT + i
``TERMITE_NODES_PER_POD``   nodes each pod runs, one per core: the          1
                            container's CPU limit (resourceFieldRef)
``TERMITE_KEYS``            the cluster key file (the Secret, mounted)      /etc/termite/cluster.key
``POD_IP``                  this pod's address (fieldRef status.podIP):     required in a node pod
                            its nodes listen there
``POD_NAME``                this pod's name (fieldRef metadata.name)        the host name
``TERMITE_HEALTH_PORT``     where the probes ask (/live, /ready)            8080
``TERMITE_DISCOVERY_        seconds between two looks at the Service's      5
INTERVAL``                  addresses
``TERMITE_JOIN_TIMEOUT``    seconds a node has to start; seconds a job      60
                            waits for the Service to list a pod
==========================  ==============================================  ==========================

What a pod does (:class:`Pod`): it starts its nodes (``python -m
termite.node --host $POD_IP --port P``), each on its fixed port, and a
client node of its own connected to them.  Then, every discovery interval,
it resolves the Service's name: a headless Service's name resolves to the
address of each of its ready pods (one A record per pod), so the launcher
needs no Kubernetes API access, no service account, and no DNS library:
``socket.getaddrinfo`` does it, as for any name.  Each of its nodes then
connects (``termite.connect``) to every node of every pod found that it is
not connected to yet: the cluster is a full mesh, as Erlang's is, so global
names, process groups and ``termite.nodes()`` span it.  A pod that joins
(``kubectl scale``) is found at the next look; a pod that goes is a
``NodeDown`` of its nodes, as any node lost.

A node whose process ends is started again on its port, after a back-off,
at most 5 times within 60 s (cluster.yaml's ``restart:`` defaults,
termite_launcher.config.RestartPolicy); one exit more and the launcher stops
the pod's nodes and exits with status 1, and Kubernetes restarts the
container, as a supervisor that gives up hands the failure to its own.

The probes (an HTTP server on TERMITE_HEALTH_PORT, for the kubelet):

- ``/live``: 200 while every node of the pod runs and its connection to the
  launcher's node is up.  A node busy in a long C call that holds the GIL is
  live: libzmq answers its connection's heartbeats without the GIL, and
  termite never declares such a node down (docs/faults.md).
- ``/ready``: 200 when it is live and no node is *unresponsive* (its own
  heartbeats have stopped for the heartbeat timeout).  A pod that is not ready
  drops out of the Service's addresses, so new peers and new jobs leave it
  alone until it answers again; connections made already stay.

A job (``--run``): the launcher resolves the Service's name (waiting up to
TERMITE_JOIN_TIMEOUT for a pod to be listed), writes the nodes it found and
the key into a state file as ``termite-launch cluster.yaml`` does, and runs
the script with ``TERMITE_CLUSTER`` set, so the script's ``termite.Executor()``
finds the nodes; it exits with the script's status.

The key: Kubernetes mounts a Secret's file readable by the pod's group
(fsGroup), which termite refuses for a key file, as ssh does for a private
key.  In a pod, the Secret's access is Kubernetes' business (only this pod
mounts it), so the launcher copies the key into a file of its own, mode 600,
and hands that to its nodes.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import http.server
import ipaddress
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path

import yaml

import termite
from termite import NodeRef
from termite.executor import CLUSTER_ENVIRONMENT

from termite_launcher.announce import read_announcement
from termite_launcher.cluster import LaunchError, exit_reason
from termite_launcher.config import RestartPolicy
from termite_launcher.exits import FAILED, USAGE, Interrupted, held, job_status

__all__ = [
    "ENVIRONMENT", "PodSettings", "SettingsError", "settings", "resolve", "node_addresses", "private_key_copy",
    "Pod", "Health", "run_job", "secret_manifest", "connect_to", "main",
]

#: The variables a pod's launcher reads (the table above).
ENVIRONMENT = (
    "TERMITE_SERVICE", "TERMITE_PORT", "TERMITE_NODES_PER_POD", "TERMITE_KEYS", "POD_IP", "POD_NAME",
    "TERMITE_HEALTH_PORT", "TERMITE_DISCOVERY_INTERVAL", "TERMITE_JOIN_TIMEOUT",
)
DEFAULT_PORT = 7100
DEFAULT_KEYS = "/etc/termite/cluster.key"
DEFAULT_HEALTH_PORT = 8080
DEFAULT_SECRET = "termite-key"
KEY_FILE_NAME = "cluster.key"  # the key's name in the Secret, and so the file's name where it is mounted
CONNECT_TIMEOUT = 5.0  # seconds a node gives a peer to answer a connect
MANIFEST = "deploy/kubernetes/termite.yaml"


class SettingsError(ValueError):
    """A pod's environment lacks a setting or has a bad one: which variable, and the fix."""


@dataclasses.dataclass(frozen=True)
class PodSettings:
    """What a pod knows of itself and of the cluster, from its environment (the table above)."""

    service: str
    port: int = DEFAULT_PORT
    nodes_per_pod: int = 1
    keys: str = DEFAULT_KEYS
    pod_ip: str | None = None
    pod_name: str = ""
    health_port: int = DEFAULT_HEALTH_PORT
    discovery_interval: float = 5.0
    join_timeout: float = 60.0

    @property
    def family(self) -> int:
        """The address family of the pod's address (its nodes reach peers in the same one)."""
        if self.pod_ip and ipaddress.ip_address(self.pod_ip).version == 6:
            return socket.AF_INET6
        return socket.AF_INET


def _where(name: str) -> str:
    return f"set it in the container's env: (the StatefulSet in {MANIFEST} sets {name})"


def _number(environ, name: str, default, kind, low, high, example: str):
    text = environ.get(name)
    if text is None or text.strip() == "":
        return default
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise SettingsError(f"{name}={text!r} is not {example}; {_where(name)}")
    return value


def settings(environ=None, *, job: bool = False) -> PodSettings:
    """The pod's settings from ``environ`` (default ``os.environ``); SettingsError naming the variable.

    ``job``: a Job's pod, which runs no node, so needs no POD_IP.
    """
    environ = os.environ if environ is None else environ
    service = environ.get("TERMITE_SERVICE", "").strip()
    if not service:
        raise SettingsError(
            "TERMITE_SERVICE is not set: give the headless Service's name, e.g. TERMITE_SERVICE=termite; "
            + _where("TERMITE_SERVICE")
        )
    pod_ip = environ.get("POD_IP", "").strip() or None
    if pod_ip is None and not job:
        raise SettingsError(
            "POD_IP is not set: a pod's nodes listen on its address; give it from the downward API "
            "(env: - name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}); " + _where("POD_IP")
        )
    if pod_ip is not None:
        try:
            ipaddress.ip_address(pod_ip)
        except ValueError:
            raise SettingsError(f"POD_IP={pod_ip!r} is not an IP address; {_where('POD_IP')}") from None
    port_range = "a port number (1-65535), e.g. 7100"
    return PodSettings(
        service=service,
        port=_number(environ, "TERMITE_PORT", DEFAULT_PORT, int, 1, 65535, port_range),
        nodes_per_pod=_number(environ, "TERMITE_NODES_PER_POD", 1, int, 1, 1024,
                              "a number of nodes, 1 or more (the container's CPU limit), e.g. 2"),
        keys=environ.get("TERMITE_KEYS", "").strip() or DEFAULT_KEYS,
        pod_ip=pod_ip,
        pod_name=environ.get("POD_NAME", "").strip() or socket.gethostname(),
        health_port=_number(environ, "TERMITE_HEALTH_PORT", DEFAULT_HEALTH_PORT, int, 1, 65535, port_range),
        discovery_interval=_number(environ, "TERMITE_DISCOVERY_INTERVAL", 5.0, float, 0.05, 3600,
                                   "a number of seconds (0.05 to 3600), e.g. 5"),
        join_timeout=_number(environ, "TERMITE_JOIN_TIMEOUT", 60.0, float, 1, 86400,
                             "a number of seconds (1 or more), e.g. 60"),
    )  # fmt: skip


# --------------------------------------------------------------------------
# Discovery: the Service's name, resolved
# --------------------------------------------------------------------------


def resolve(name: str, family: int = socket.AF_INET) -> list[str]:
    """The addresses ``name`` resolves to now, each once, in order; [] if it resolves to none.

    ``socket.getaddrinfo``, so DNS, /etc/hosts and the resolver's search
    domains all count.  A headless Service's name resolves to the address of
    each ready pod it selects; with none ready, it does not resolve at all.
    """
    try:
        found = socket.getaddrinfo(name, None, family, socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):  # not (yet) known, or no address in this family
        return []
    return sorted({info[4][0] for info in found}, key=ipaddress.ip_address)


def node_addresses(pods, port: int, nodes_per_pod: int) -> list[tuple[str, int]]:
    """Every node of the pods at ``pods``: each pod runs nodes_per_pod of them, from ``port`` up."""
    return [(pod, port + i) for pod in pods for i in range(nodes_per_pod)]


async def connect_to(reply_to, addresses, timeout: float = CONNECT_TIMEOUT):
    """Run on a node: connect it to each of ``addresses`` it is not connected to yet, all at once.

    Replies ``("mesh", this node, connected, failed)``: how many of
    ``addresses`` (itself aside) it is connected to now, and those that did
    not answer within ``timeout``.
    """
    me = termite.current_node()
    wanted = [tuple(a) for a in addresses if tuple(a) != (me.host, me.port)]
    have = {(peer.host, peer.port) for peer in termite.nodes()}
    missing = [a for a in wanted if a not in have]
    for address in missing:  # a process each: one that does not answer costs its timeout, not the others'
        termite.spawn(_connect_one, termite.self(), address, timeout)
    failed = []
    for _ in missing:
        _, address, ok = await termite.receive(("connected", tuple, bool))
        if not ok:
            failed.append(address)
    termite.send(reply_to, ("mesh", me, len(wanted) - len(failed), failed))


async def _connect_one(reply_to, address, timeout):
    try:
        await termite.connect(address[0], address[1], timeout)
        ok = True
    except Exception:  # noqa: BLE001 - a Timeout, or an address it cannot use: either way, not connected
        ok = False
    termite.send(reply_to, ("connected", address, ok))


async def _mesh(nodes, addresses, timeout):
    """On the launcher's node: each of ``nodes`` connects to ``addresses``; {node: (connected, failed)}."""
    for node in nodes:
        termite.spawn(connect_to, termite.self(), addresses, timeout, node=node)
    results = {}
    deadline = time.monotonic() + timeout + 5.0
    while len(results) < len(nodes):
        left = deadline - time.monotonic()
        msg = await termite.receive(("mesh", NodeRef, int, list), timeout=max(left, 0), default=None)
        if msg is None:  # a node that was lost meanwhile: it is the supervisor's business
            break
        results[(msg[1].host, msg[1].port)] = (msg[2], [tuple(a) for a in msg[3]])
    return results


async def _connections():
    """On the launcher's node: the (host, port) of the nodes connected, and of those unresponsive."""
    up = {(peer.host, peer.port) for peer in termite.nodes()}
    slow = {(peer.host, peer.port) for peer in termite.unresponsive_nodes()}
    return up, slow


# --------------------------------------------------------------------------
# The key
# --------------------------------------------------------------------------


def private_key_copy(path: str, folder: str | None = None) -> str:
    """A copy of the key file at ``path`` that only this user may read (mode 600), checked; its path.

    The copy lives in ``folder`` (default: a new private temporary folder).
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise SettingsError(
            f"no cluster key at {path} (TERMITE_KEYS): mount the Secret there, made with "
            f"`python -m termite_launcher.kubernetes secret | kubectl apply -f -` (see {MANIFEST})"
        ) from None
    except OSError as exc:
        raise SettingsError(
            f"cannot read the cluster key {path} (TERMITE_KEYS): {exc.strerror or exc}; mount the Secret "
            "readable by the pod's user, e.g. securityContext: {fsGroup: 10001} and defaultMode: 0440"
        ) from None
    folder = folder or tempfile.mkdtemp(prefix="termite-k8s-")  # mode 700
    copy = os.path.join(folder, KEY_FILE_NAME)
    fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # a file that was there keeps its mode otherwise
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    try:
        termite.load_keys(copy)
    except termite.KeyFileError as exc:
        raise SettingsError(
            f"{path} (TERMITE_KEYS) is not a termite cluster key ({exc}); make the Secret from one, with "
            "`python -m termite_launcher.kubernetes secret | kubectl apply -f -`"
        ) from None
    return copy


def secret_manifest(name: str = DEFAULT_SECRET) -> str:
    """A Secret manifest (YAML) holding a new cluster key, as ``python -m termite keygen`` makes one."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, KEY_FILE_NAME)
        keys = termite.generate_keys(path)
        data = Path(path).read_bytes()
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "termite"}},
        "type": "Opaque",
        "data": {KEY_FILE_NAME: base64.b64encode(data).decode("ascii")},
    }
    return (
        f"# A termite cluster key (public key {keys.public.decode()}). It is SECRET: whoever holds it can\n"
        "# run code on every node of the cluster. Apply it and do not keep this file.\n"
        + yaml.safe_dump(secret, sort_keys=False)
    )


# --------------------------------------------------------------------------
# A pod of the StatefulSet
# --------------------------------------------------------------------------


def _die_with_parent() -> None:
    """In a node (before exec): end when the launcher ends, even by SIGKILL (Linux), as cluster.py's nodes do."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@dataclasses.dataclass
class _PodNode:
    """One node of this pod, on its fixed port."""

    port: int
    proc: subprocess.Popen | None = None
    ref: NodeRef | None = None
    running: bool = False
    restart_at: float | None = None  # monotonic time of a restart waiting for its back-off
    exits: deque = dataclasses.field(default_factory=deque)  # monotonic times of its exits in the period


@dataclasses.dataclass(frozen=True)
class Health:
    """What the probes answer: per node (host:port) one of up, unresponsive, not connected, down."""

    states: tuple[tuple[str, str], ...]

    @property
    def live(self) -> bool:
        return bool(self.states) and all(state in ("up", "unresponsive") for _, state in self.states)

    @property
    def ready(self) -> bool:
        return bool(self.states) and all(state == "up" for _, state in self.states)

    def text(self) -> str:
        return ", ".join(f"{address} {state}" for address, state in self.states) or "no node yet"


class Pod:
    """This pod's nodes, kept running, kept connected to their peers, and the probes' answers.

    ``start()`` starts them and the probes' server; ``serve()`` looks at the
    Service every discovery interval and restarts nodes that end, until a
    signal (Interrupted) or until a node is given up on (LaunchError);
    ``stop()`` ends them all.
    """

    def __init__(self, s: PodSettings, keys: str, *, log_level: str | None = None, say=print,
                 restart: RestartPolicy = RestartPolicy()):
        self.settings = s
        self.keys = keys
        self.log_level = log_level
        self.say = say
        self.restart = restart
        self.nodes = [_PodNode(s.port + i) for i in range(s.nodes_per_pod)]
        self.here: termite.Node | None = None
        self.health_server: _ProbeServer | None = None
        self._exits: queue.SimpleQueue = queue.SimpleQueue()  # (node, proc, returncode) from the waiters
        self._pods: tuple[str, ...] = ()  # the pods the last look found
        self._meshed: bool | None = None  # whether every node of this pod reached every node found
        self._unreached: set = set()  # peers said not to answer (each said once until it answers)
        self._unresolved_since = time.monotonic()
        self._said_unresolved = False

    # -- starting and stopping --------------------------------------------------

    def start(self) -> None:
        s = self.settings
        try:
            self.here = termite.Node(host=s.pod_ip, port=0, keys=self.keys, client=True).start()
        except Exception as exc:  # noqa: BLE001 - most likely an address that is not this pod's
            raise LaunchError(f"cannot start the launcher's node at POD_IP={s.pod_ip}: {exc}") from None
        for node in self.nodes:
            self._start_node(node)
        try:
            self.health_server = _ProbeServer(s.health_port, self)
        except OSError as exc:
            raise LaunchError(f"cannot serve the probes on port {s.health_port} (TERMITE_HEALTH_PORT): "
                              f"{exc.strerror or exc}") from None
        threading.Thread(target=self.health_server.serve_forever, name="termite-probes", daemon=True).start()
        nodes = ", ".join(f"{node.ref.host}:{node.ref.port} (pid {node.proc.pid})" for node in self.nodes)
        self.say(f"pod {s.pod_name}: {len(self.nodes)} node{'s' * (len(self.nodes) != 1)} up: {nodes}; "
                 f"probes on port {s.health_port} (/live, /ready); peers: every pod that {s.service} resolves to")

    def _start_node(self, node: _PodNode) -> None:
        s = self.settings
        argv = [
            sys.executable, "-u", "-m", "termite.node", "--host", s.pod_ip, "--port", str(node.port),
            "--keys", self.keys, *(["--log-level", self.log_level] if self.log_level else []),
        ]  # fmt: skip
        env = dict(os.environ)
        root = str(Path(termite.__file__).resolve().parent.parent)  # termite from where this launcher has it
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        # Its log (stderr) is the container's: kubectl logs shows it.
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env,
                                preexec_fn=_die_with_parent)
        node.proc, node.running, node.restart_at = proc, True, None
        try:
            node.ref = _announced(proc, self.settings.join_timeout)
            self.here.connect(node.ref.host, node.ref.port, timeout=self.settings.join_timeout)
        except (TimeoutError, EOFError, termite.Timeout) as exc:
            raise LaunchError(f"pod {s.pod_name}: the node on port {node.port} did not start: {exc} "
                              "(its log is above)") from None
        threading.Thread(target=self._wait_exit, args=(node, proc), daemon=True).start()

    def _wait_exit(self, node: _PodNode, proc: subprocess.Popen) -> None:
        self._exits.put((node, proc, proc.wait()))

    def stop(self) -> None:
        """Stop the probes, the launcher's node, and every node (SIGTERM, then SIGKILL after 10 s)."""
        if self.health_server is not None:
            self.health_server.shutdown()
            self.health_server.server_close()
        if self.here is not None:  # first: the nodes then see a client leave, not a node lost
            self.here.stop()
        procs = [node.proc for node in self.nodes if node.proc is not None and node.proc.poll() is None]
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:  # all at once: each gets the same 10 s
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for node in self.nodes:
            node.running = False

    # -- running ----------------------------------------------------------------

    def serve(self) -> None:
        """Look at the Service and keep the nodes running, until a signal or a node given up on."""
        next_look = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= next_look:
                self.discover()
                next_look = time.monotonic() + self.settings.discovery_interval
            due = [node.restart_at for node in self.nodes if node.restart_at is not None]
            wait = min([next_look, *due]) - time.monotonic()
            try:
                node, proc, status = self._exits.get(timeout=max(wait, 0.0))
            except queue.Empty:
                pass
            else:
                if node.proc is proc:  # not an old process of a node restarted since
                    self._exited(node, status)
            now = time.monotonic()
            for node in self.nodes:
                if node.restart_at is not None and now >= node.restart_at:
                    self._start_node(node)
                    self.say(f"node {node.ref.host}:{node.ref.port} restarted (pid {node.proc.pid})")

    def _exited(self, node: _PodNode, status: int) -> None:
        now = time.monotonic()
        node.running = False
        node.exits.append(now)
        while node.exits and node.exits[0] < now - self.restart.period:
            node.exits.popleft()
        restarts = len(node.exits) - 1  # within the period, before this exit
        where = f"node {self.settings.pod_ip}:{node.port}"
        reason = exit_reason(status)
        if restarts >= self.restart.intensity:
            raise LaunchError(
                f"{where} {reason}, after {restarts} restarts within {self.restart.period:g} s: giving up, "
                "stopping this pod's nodes so that Kubernetes restarts the container"
            )
        delay = self.restart.delay(restarts)
        node.restart_at = now + delay
        self.say(f"{where} {reason}; restarting it in {delay:g} s")

    def discover(self) -> None:
        """Resolve the Service's name; connect each node of this pod to every node found."""
        s = self.settings
        pods = resolve(s.service, s.family)
        now = time.monotonic()
        if pods:
            self._unresolved_since = now
            self._said_unresolved = False
        elif now - self._unresolved_since > s.join_timeout and not self._said_unresolved:
            self._said_unresolved = True
            self.say(f"{s.service} (TERMITE_SERVICE) has resolved to no address for {s.join_timeout:g} s: is it "
                     "the name of the headless Service whose selector matches this pod (kubectl get svc,endpoints)?")
        pods = sorted(set(pods) | {s.pod_ip}, key=ipaddress.ip_address)  # itself, before the Service lists it
        addresses = node_addresses(pods, s.port, s.nodes_per_pod)
        ours = [node.ref for node in self.nodes if node.running and node.ref is not None]
        try:  # _mesh gives up on an answer CONNECT_TIMEOUT + 5 s after asking
            results = self.here.run(_mesh, ours, addresses, CONNECT_TIMEOUT, timeout=CONNECT_TIMEOUT + 10.0)
        except Exception as exc:  # noqa: BLE001 - the next look tries again
            self.say(f"could not connect this pod's nodes to their peers: {exc}")
            return
        failed = {address for _, missed in results.values() for address in missed}
        for address in sorted(failed - self._unreached):
            self.say(f"node {address[0]}:{address[1]} does not answer (yet): its pod is listed by {s.service}")
        self._unreached = failed
        meshed = len(results) == len(ours) == len(self.nodes) and not failed
        if tuple(pods) != self._pods or meshed != self._meshed:
            self._pods, self._meshed = tuple(pods), meshed
            state = "connected to all" if meshed else "connecting to the"
            self.say(f"{len(pods)} pod{'s' * (len(pods) != 1)} found through {s.service} ({', '.join(pods)}): "
                     f"this pod's nodes are {state} {len(addresses)} nodes")

    def health(self, timeout: float = 2.0) -> Health:
        try:
            up, slow = self.here.run(_connections, timeout=timeout)
        except Exception:  # noqa: BLE001 - a launcher's node that does not answer: nothing is known
            return Health(())
        states = []
        for node in self.nodes:
            address = (self.settings.pod_ip, node.port)
            if not node.running:
                state = "down"
            elif address not in up:
                state = "not connected"
            elif address in slow:
                state = "unresponsive"
            else:
                state = "up"
            states.append((f"{address[0]}:{address[1]}", state))
        return Health(tuple(states))


class _ProbeServer(http.server.ThreadingHTTPServer):
    """The probes' HTTP server, on every address of the pod (the kubelet asks at the pod's IP)."""

    daemon_threads = True

    def __init__(self, port: int, pod: Pod):
        super().__init__(("", port), _Probes)
        self.pod = pod


class _Probes(http.server.BaseHTTPRequestHandler):
    """GET /live and /ready: 200 or 503, and a line saying each node's state."""

    def do_GET(self):  # noqa: N802 - http.server's name
        path = self.path.split("?")[0]
        if path not in ("/live", "/ready"):
            self._answer(404, "ask /live or /ready\n")
            return
        health = self.server.pod.health()
        ok = health.live if path == "/live" else health.ready
        self._answer(200 if ok else 503, f"{'ok' if ok else 'failing'}: {health.text()}\n")

    def _answer(self, status: int, text: str) -> None:
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):  # noqa: A002 - the kubelet asks every few seconds: no line each time
        pass


def _announced(proc: subprocess.Popen, timeout: float) -> NodeRef:
    """The NodeRef a starting node prints (``termite node HOST:PORT incarnation HEX``)."""
    try:
        ref = read_announcement(proc.stdout, timeout, _write_out)  # anything else it printed: the container's output
    except TimeoutError:
        proc.kill()
        raise
    except EOFError:
        raise EOFError(f"the node {exit_reason(proc.wait())}") from None
    threading.Thread(target=_pass_on, args=(proc.stdout,), daemon=True).start()
    return ref


def _write_out(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def _pass_on(stream) -> None:
    """A node's further stdout (a process's print goes there): to the container's output."""
    try:
        for line in stream:
            _write_out(line)
    except (ValueError, OSError):
        pass


# --------------------------------------------------------------------------
# A job
# --------------------------------------------------------------------------


def run_job(s: PodSettings, script: list[str], keys: str, say=print) -> int:
    """Run ``python SCRIPT ARGS`` on the nodes the Service lists; the script's exit status."""
    deadline = time.monotonic() + s.join_timeout
    pods = resolve(s.service, s.family)
    while not pods and time.monotonic() < deadline:  # the job may start before the first pod is ready
        time.sleep(min(s.discovery_interval, 1.0))
        pods = resolve(s.service, s.family)
    if not pods:
        raise LaunchError(
            f"{s.service} (TERMITE_SERVICE) resolved to no pod within {s.join_timeout:g} s: is the StatefulSet "
            "running, and are its pods ready (kubectl get pods -l app.kubernetes.io/name=termite)?"
        )
    addresses = node_addresses(pods, s.port, s.nodes_per_pod)
    state = Path(keys).parent / "cluster.json"  # beside the key copy, in the launcher's private folder
    state.write_text(json.dumps({
        "name": s.service,
        "keys": keys,
        "nodes": [{"address": f"{host}:{port}"} for host, port in addresses],
    }, indent=2), encoding="utf-8")  # fmt: skip
    say(f"running {' '.join(script)} on {len(addresses)} nodes of {len(pods)} pod{'s' * (len(pods) != 1)} "
        f"found through {s.service}: {', '.join(pods)}")
    proc = subprocess.Popen([sys.executable, *script], env=dict(os.environ, **{CLUSTER_ENVIRONMENT: str(state)}))
    try:
        return job_status(proc.wait())
    except Interrupted:
        with held():
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        raise


# --------------------------------------------------------------------------
# termite-launch --kubernetes, and python -m termite_launcher.kubernetes secret
# --------------------------------------------------------------------------


def main(script: list[str] | None, log_level: str | None, say=print) -> int:
    """``termite-launch --kubernetes [--run SCRIPT ...]`` (signals already raise Interrupted)."""
    try:
        s = settings(job=bool(script))
        keys = private_key_copy(s.keys)
    except SettingsError as exc:
        say(str(exc))
        return USAGE
    if script:
        return run_job(s, script, keys, say)
    pod = Pod(s, keys, log_level=log_level, say=say)
    try:
        pod.start()
        pod.serve()
    except LaunchError as exc:
        say(str(exc))
        return FAILED
    finally:
        with held(lambda: say("stopping this pod's nodes already (each gets 10 s, then SIGKILL)")):
            pod.stop()
    return FAILED  # serve() returns only by an exception


def _secret_command(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m termite_launcher.kubernetes",
        description="Kubernetes helpers for termite (docs/guide/kubernetes.md).",
    )
    sub = p.add_subparsers(dest="command", required=True)
    secret = sub.add_parser("secret", help="print a Secret manifest holding a new cluster key "
                                           "(pipe it to kubectl apply -f -)")
    secret.add_argument("--name", default=DEFAULT_SECRET, help="the Secret's name (default %(default)s)")
    args = p.parse_args(argv)
    sys.stdout.write(secret_manifest(args.name))
    return 0


if __name__ == "__main__":
    sys.exit(_secret_command())
