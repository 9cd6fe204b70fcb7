"""Two test hosts as Linux network namespaces, each running sshd (issue 6's multi-host tests).

    def test_something(netns_hosts):            # the fixture, registered in tests/conftest.py
        h1, h2 = netns_hosts.hosts
        remote_cores(h1.host_config())          # a HostConfig that logs in over ssh as root

What it builds, for the test session (per pytest-xdist worker)::

    root namespace:  bridge tmbrN, 10.77.N.1/24  (a Node in the test binds here)
        |-- veth tmvNh1 <-> eth0 in namespace termite-h1: 10.77.N.2, sshd on port 22
        '-- veth tmvNh2 <-> eth0 in namespace termite-h2: 10.77.N.3, sshd on port 22

``N`` is a slot, 0 unless another run on this machine holds it (an xdist
worker, another engineer's pytest): a slot is taken by an flock on
``/tmp/termite-netns/slot-N.lock``, held while the fixture lives and let go by
the kernel if the run dies, so the next run that takes the slot clears what
the dead one left.  Slot 0 uses the names ``termite-h1``/``termite-h2``;
slot N > 0 ``termite-h1-N``/``termite-h2-N``.

Namespaces isolate only the network: the hosts share this machine's files and
pids, so a node there runs this checkout's Python and termite, and a test can
check remote pids with /proc.  sshd runs with a host key, a client key and an
authorized_keys file made in a temporary folder, root login by key only, no
PAM and no DNS look-ups.  Everything is torn down at the end (sshd by pid, any
process left in a namespace, the namespaces, the bridge and the veths), even
when the set-up fails half way.

If this machine cannot make namespaces (not root, no ``ip``, not permitted) or
has no sshd, the fixture skips and says why; .ci/run installs openssh-server.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

SSHD = "/usr/sbin/sshd"
LOCK_DIR = "/tmp/termite-netns"
SLOTS = 64


# -- the host configuration the launcher reads ----------------------------------
# termite_launcher.config defines HostConfig/SshOptions; until it exists (or if
# it cannot be imported) these stand-ins with the same fields are used.

try:
    from termite_launcher.config import HostConfig, SshOptions
except ImportError:  # pragma: no cover - depends on the launcher's progress

    @dataclasses.dataclass(frozen=True)
    class SshOptions:
        user: str | None = None
        port: int = 22
        key: str | None = None
        options: tuple = ()

    @dataclasses.dataclass(frozen=True)
    class HostConfig:
        address: str
        cores: int | None = None
        bind: str | None = None
        python: str = "python3"
        ssh: SshOptions = SshOptions()
        workdir: str | None = None
        env: tuple = ()
        label: str | None = None


@dataclasses.dataclass
class NetnsHost:
    name: str  # "h1"
    netns: str  # "termite-h1"
    address: str  # "10.77.0.2"
    sshd_pid: int
    hosts: "NetnsHosts" = dataclasses.field(repr=False)

    def ssh_options(self, **changes) -> SshOptions:
        return self.hosts.ssh_options(**changes)

    def host_config(self, **changes) -> HostConfig:
        """This host as a HostConfig: root over ssh with the test key, this checkout's Python."""
        fields = dict(
            address=self.address,
            cores=None,
            bind=self.address,
            python=sys.executable,
            ssh=self.ssh_options(),
            workdir=None,
            env=(),
            label=self.name,
        )
        fields.update(changes)
        return _make_host_config(**fields)

    def pids(self) -> set[int]:
        """The pids of every process in this namespace (sshd's among them)."""
        return _netns_pids(self.netns)

    def exec(self, *argv: str, timeout: float = 10) -> subprocess.CompletedProcess:
        """Run ``argv`` inside this host's namespace."""
        return subprocess.run(["ip", "netns", "exec", self.netns, *argv], capture_output=True, text=True, timeout=timeout)


@dataclasses.dataclass
class NetnsHosts:
    slot: int
    bridge: str  # "tmbr0"
    bridge_address: str  # "10.77.0.1": where a node in the test process binds
    hosts: tuple[NetnsHost, ...]
    client_key: str  # the private key authorized on both hosts
    known_hosts: str  # the known_hosts file ssh records the hosts' keys in
    directory: str

    @property
    def h1(self) -> NetnsHost:
        return self.hosts[0]

    @property
    def h2(self) -> NetnsHost:
        return self.hosts[1]

    def unused_address(self) -> str:
        """An address on the bridge's subnet where no host answers."""
        return f"10.77.{self.slot}.99"

    def ssh_options(self, **changes) -> SshOptions:
        fields = dict(
            user="root",
            port=22,
            key=self.client_key,
            options=("-F", "none", f"UserKnownHostsFile={self.known_hosts}", "ConnectTimeout=5"),
        )
        fields.update(changes)
        return SshOptions(**fields)


def _make_host_config(**fields) -> HostConfig:
    """A HostConfig from the fields this module knows, whatever else the real one has (left at defaults)."""
    known = {f.name for f in dataclasses.fields(HostConfig)} if dataclasses.is_dataclass(HostConfig) else set(fields)
    return HostConfig(**{k: v for k, v in fields.items() if k in known})


# -- building and tearing down ----------------------------------------------------


class _Skip(Exception):
    pass


def _sh(*argv: str, check: bool = True, timeout: float = 10) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


def _netns_pids(netns: str) -> set[int]:
    done = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True, timeout=10)
    return {int(p) for p in done.stdout.split()} if done.returncode == 0 else set()


def _netns_exists(netns: str) -> bool:
    return os.path.exists(f"/run/netns/{netns}")


def _kill_all_in(netns: str) -> None:
    """SIGKILL every process still in ``netns`` (a dead run's sshd, a test's stray node)."""
    for _ in range(50):
        pids = _netns_pids(netns)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)


def _names(slot: int) -> tuple[str, list[tuple[str, str, str, str]]]:
    """The bridge, and for each host (name, netns, veth in the root namespace, address)."""
    suffix = "" if slot == 0 else f"-{slot}"
    hosts = [(f"h{i}", f"termite-h{i}{suffix}", f"tmv{slot}h{i}", f"10.77.{slot}.{i + 1}") for i in (1, 2)]
    return f"tmbr{slot}", hosts


def _clear_slot(slot: int) -> None:
    """Remove whatever a run that held this slot left behind."""
    bridge, hosts = _names(slot)
    for _, netns, veth, _ in hosts:
        if _netns_exists(netns):
            _kill_all_in(netns)
            _sh("ip", "netns", "del", netns, check=False)
        _sh("ip", "link", "del", veth, check=False)
    _sh("ip", "link", "del", bridge, check=False)


def _take_slot():
    """(slot, lock file) of the first free slot."""
    os.makedirs(LOCK_DIR, exist_ok=True)
    for slot in range(SLOTS):
        f = open(os.path.join(LOCK_DIR, f"slot-{slot}.lock"), "w")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            continue
        return slot, f
    raise _Skip(f"all {SLOTS} network-namespace slots are in use (locks in {LOCK_DIR})")


def _check_prerequisites() -> None:
    if sys.platform != "linux":
        raise _Skip(f"network namespaces are Linux only (this is {sys.platform})")
    if os.geteuid() != 0:
        raise _Skip(f"making network namespaces needs root (running as uid {os.geteuid()})")
    for tool, package in (("ip", "iproute2"), ("ssh", "openssh-client"), ("ssh-keygen", "openssh-client")):
        if shutil.which(tool) is None:
            raise _Skip(f"`{tool}` is not installed: apt-get install {package}")
    if not os.access(SSHD, os.X_OK):
        raise _Skip(f"{SSHD} is not installed: apt-get install openssh-server (.ci/run installs it)")


def _keygen(path: str) -> None:
    _sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "termite-test", "-f", path)


def _sshd_config(directory: str, host: str, address: str, host_key: str, authorized: str) -> str:
    path = os.path.join(directory, f"sshd_config-{host}")
    with open(path, "w") as f:
        f.write(
            f"ListenAddress {address}\n"
            "Port 22\n"
            f"HostKey {host_key}\n"
            f"PidFile {os.path.join(directory, f'sshd-{host}.pid')}\n"
            f"AuthorizedKeysFile {authorized}\n"
            "PermitRootLogin prohibit-password\n"
            "PubkeyAuthentication yes\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "UsePAM no\n"
            "UseDNS no\n"
            "StrictModes no\n"  # the key files live under /tmp
            "PrintMotd no\n"
            "PrintLastLog no\n"
            "LogLevel ERROR\n"
        )
    return path


def _wait_for_sshd(proc: subprocess.Popen, address: str, log: str, timeout: float = 10.0) -> None:
    """Until sshd at address:22 answers with its banner; each try is a real connection."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd for {address} exited ({proc.returncode}): {_read(log)}")
        try:
            with socket.create_connection((address, 22), timeout=1) as s:
                s.settimeout(2)
                if s.recv(64).startswith(b"SSH-"):
                    return
        except OSError as exc:
            last = exc
        time.sleep(0.05)
    raise RuntimeError(f"sshd on {address}:22 did not answer within {timeout} s ({last}): {_read(log)}")


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()[-2000:]
    except OSError:
        return ""


class _Build:
    """The hosts under construction; ``teardown`` undoes whatever was done."""

    def __init__(self):
        self.slot = None
        self.lock = None
        self.sshds: list[subprocess.Popen] = []
        self.directory = None

    def build(self) -> NetnsHosts:
        _check_prerequisites()
        self.slot, self.lock = _take_slot()
        slot = self.slot
        _clear_slot(slot)
        bridge, hosts = _names(slot)

        probe = _sh("ip", "netns", "add", hosts[0][1], check=False)
        if probe.returncode != 0:
            raise _Skip(f"cannot create a network namespace here: `ip netns add` said: {probe.stderr.strip()}")
        _sh("ip", "link", "add", bridge, "type", "bridge")
        _sh("ip", "addr", "add", f"10.77.{slot}.1/24", "dev", bridge)
        _sh("ip", "link", "set", bridge, "up")
        for i, (_, netns, veth, address) in enumerate(hosts):
            if i > 0:
                _sh("ip", "netns", "add", netns)
            peer = f"tmp{slot}h{i + 1}"
            _sh("ip", "link", "add", veth, "type", "veth", "peer", "name", peer, "netns", netns)
            _sh("ip", "link", "set", veth, "master", bridge, "up")
            _sh("ip", "-n", netns, "link", "set", "lo", "up")
            _sh("ip", "-n", netns, "link", "set", peer, "name", "eth0")
            _sh("ip", "-n", netns, "addr", "add", f"{address}/24", "dev", "eth0")
            _sh("ip", "-n", netns, "link", "set", "eth0", "up")

        self.directory = d = tempfile.mkdtemp(prefix=f"termite-netns-{slot}-")
        client_key = os.path.join(d, "client_key")
        _keygen(client_key)
        authorized = os.path.join(d, "authorized_keys")
        shutil.copy(client_key + ".pub", authorized)
        known_hosts = os.path.join(d, "known_hosts")
        open(known_hosts, "w").close()
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation directory

        result = NetnsHosts(slot, bridge, f"10.77.{slot}.1", (), client_key, known_hosts, d)
        built = []
        for name, netns, _, address in hosts:
            host_key = os.path.join(d, f"host_key-{name}")
            _keygen(host_key)
            config = _sshd_config(d, name, address, host_key, authorized)
            log = os.path.join(d, f"sshd-{name}.log")
            with open(log, "w") as log_file:
                proc = subprocess.Popen(
                    ["ip", "netns", "exec", netns, SSHD, "-D", "-e", "-f", config],  # ip execs sshd: same pid
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=log_file,
                    start_new_session=True,
                )
            self.sshds.append(proc)
            built.append((name, netns, address, proc, log))
        for name, netns, address, proc, log in built:
            _wait_for_sshd(proc, address, log)
        result.hosts = tuple(NetnsHost(name, netns, address, proc.pid, result) for name, netns, address, proc, _ in built)
        return result

    def teardown(self) -> None:
        for proc in self.sshds:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if self.slot is not None:
            _clear_slot(self.slot)
        if self.directory:
            shutil.rmtree(self.directory, ignore_errors=True)
        if self.lock is not None:
            self.lock.close()  # lets the slot go


@pytest.fixture(scope="session")
def netns_hosts():
    """Two hosts, h1 and h2, as network namespaces running sshd (see tests/netns_hosts.py)."""
    build = _Build()
    try:
        hosts = build.build()
    except _Skip as why:
        build.teardown()
        pytest.skip(f"no network-namespace hosts: {why}")
    except BaseException:
        build.teardown()
        raise
    try:
        yield hosts
    finally:
        build.teardown()
