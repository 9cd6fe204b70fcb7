"""hosts: slurm (issue 21): termite-launch in a real Slurm allocation.

The session fixture ``slurm`` runs Debian's Slurm (slurm-wlm: slurmctld and
slurmd) and munge as root, from a temporary folder: its own slurm.conf
(select/cons_tres, proctrack/linuxproc, task/none, no cgroups), munge key
and socket, and free ports, so it touches no file in /etc and can run beside
another test session's.  Its hosts: this machine (partition ``here``, 2
CPUs), and h1 and h2 (partition ``hosts``, 1 CPU each), each a slurmd in a
network namespace of its own, on a bridge, with a host name of its own.
They share this machine's files and pids, as hosts share a cluster's file
system.  Everything is stopped by pid at the end, and the namespaces removed.

An allocation (``Allocation``) is a real ``salloc``: the command it runs
prints its environment and then holds the allocation until the test closes
its stdin, so that the test runs termite-launch with exactly the environment
it would have inside salloc.

Where the daemons cannot run (not root, slurm-wlm or munge not installed,
the daemons fail to start) the tests skip and say why (.ci/run installs the
packages); without network namespaces, so do the tests of two hosts.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import queue
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from terminals import state_until

ROOT = Path(__file__).resolve().parent.parent
PI = ROOT / "examples" / "pi.py"
LAUNCH = [sys.executable, "-m", "termite_launcher"]
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("salloc", "sbatch", "srun", "scontrol", "scancel", "squeue", "sinfo")
READY_TIMEOUT = 30.0  # seconds the daemons get to be ready


# -- configuration errors: no Slurm needed ----------------------------------------------------


def _launch(args, cwd, env=None, timeout=60):
    return subprocess.run([*LAUNCH, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _without_slurm() -> dict:
    return {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}


def test_outside_an_allocation_it_says_how_to_get_one(tmp_path):
    (tmp_path / "cluster.yaml").write_text("name: hpc\nhosts: slurm\n")
    done = _launch(["cluster.yaml", "--run", str(PI)], tmp_path, _without_slurm())
    assert done.returncode == 2, done.stderr
    assert "termite-launch: cluster.yaml:2: hosts: 'slurm' needs a Slurm allocation" in done.stderr, done.stderr
    assert "salloc -n 8 termite-launch cluster.yaml" in done.stderr and "sbatch" in done.stderr
    assert not (tmp_path / ".termite" / "hpc.json").exists()

    (tmp_path / "lab.yaml").write_text("hosts: [{address: localhost, cores: 1}]\n")
    done = _launch(["lab.yaml", "--slurm", "--detach"], tmp_path, _without_slurm())
    assert done.returncode == 2 and "--slurm: needs a Slurm allocation" in done.stderr, done.stderr


def test_in_a_step_of_several_tasks_it_refuses_to_start_one_cluster_per_task(tmp_path):
    (tmp_path / "cluster.yaml").write_text("hosts: slurm\n")
    env = dict(_without_slurm(), SLURM_JOB_ID="7", SLURM_JOB_NODELIST="n1", SLURM_JOB_CPUS_PER_NODE="4",
               SLURM_STEP_ID="0", SLURM_STEP_NUM_TASKS="4")  # fmt: skip
    done = _launch(["cluster.yaml", "--detach"], tmp_path, env)
    assert done.returncode == 2 and "one of 4 tasks of job step 7.0" in done.stderr, done.stderr
    assert "not under srun" in done.stderr


@pytest.mark.parametrize(("text", "error"), [
    ("hosts: slurmm\n", "cluster.yaml:1: hosts: 'slurmm' is not a list of hosts, or slurm"),
    ("hosts: [{address: localhost}]\nslurm: {python: python3}\n",
     "cluster.yaml:2: slurm: is for hosts: slurm, and hosts: is a list here; write hosts: slurm"),
    ("hosts: slurm\nslurm: {srun: [mem=2G]}\n", "slurm.srun[0]: 'mem=2G' is not an srun option, starting with -"),
    ("hosts: slurm\nslurm: {nodes: 4}\n", "slurm.nodes: unknown key"),
])  # fmt: skip
def test_a_bad_slurm_setting_is_named_with_its_line(tmp_path, text, error):
    from termite_launcher.config import ConfigError, load

    (tmp_path / "cluster.yaml").write_text(text)
    with pytest.raises(ConfigError) as info:
        load(tmp_path / "cluster.yaml")
    assert error in str(info.value)


def test_the_settings_and_the_allocations_cpu_counts_are_read(tmp_path):
    from termite_launcher.config import load
    from termite_launcher.slurm import cpus_per_node

    (tmp_path / "cluster.yaml").write_text(
        "hosts: slurm\nslurm:\n  python: /opt/py/bin/python\n  workdir: work\n  env: {OMP_NUM_THREADS: 1}\n"
        "  srun: [--mem-per-cpu=2G]\n"
    )
    config = load(tmp_path / "cluster.yaml")
    assert config.hosts == () and config.slurm.line == 1
    assert config.slurm.python == "/opt/py/bin/python" and config.slurm.workdir == str(tmp_path / "work")
    assert config.slurm.env == (("OMP_NUM_THREADS", "1"),) and config.slurm.srun == ("--mem-per-cpu=2G",)
    assert load(tmp_path / "cluster.yaml", slurm=True) == config
    assert cpus_per_node("72(x2),36") == [72, 72, 36] and cpus_per_node("2") == [2]
    with pytest.raises(ValueError, match="not a list of CPU counts"):
        cpus_per_node("2(x)")


def test_the_starters_slurm_block_uncommented_passes_the_checks(tmp_path):
    from termite_launcher.config import load
    from termite_launcher.starter import starter_text

    lines = starter_text().splitlines()
    start = lines.index("# hosts: slurm")
    block = [line[2:] for line in lines[start:] if line.startswith("# ")]
    block = block[: next(i for i, line in enumerate(block) if line.startswith("  srun:")) + 1]
    (tmp_path / "cluster.yaml").write_text("\n".join(block) + "\n")
    config = load(tmp_path / "cluster.yaml")
    assert config.slurm.srun == ("--mem-per-cpu=2G",) and config.slurm.env == (("OMP_NUM_THREADS", "1"),)


# -- a Slurm cluster: this machine, and two hosts in network namespaces ------------------------


class SlurmDaemons:
    """munged, slurmctld and slurmd, started from ``folder``; ``env`` reaches them (SLURM_CONF).

    Partition ``here`` (the default) is this machine, 2 CPUs.  Partition
    ``hosts`` is h1 and h2, 1 CPU each: a slurmd in each of two network
    namespaces on a bridge (``hosts``: their names and addresses), each with a
    host name of its own (a UTS namespace).  Without namespaces (``no_hosts``
    says why) there is no partition ``hosts``.
    """

    def __init__(self, folder: Path):
        self.folder = folder
        self.procs: dict[str, subprocess.Popen] = {}
        self.env = dict(_without_slurm(), SLURM_CONF=str(folder / "slurm.conf"))
        self.hosts: list[tuple[str, str, str]] = []  # (name, network namespace, address)
        self.no_hosts: str | None = None
        self._slot: int | None = None
        self._lock = None

    def start(self) -> None:
        folder = self.folder
        host = socket.gethostname().split(".")[0]
        try:
            bridge = self._make_hosts()
        except _NoHosts as why:
            self.no_hosts, bridge = str(why), None
        (folder / "state").mkdir()
        key = folder / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        socket_path = folder / "munge.sock"
        (folder / "plugstack.conf").write_text("")
        ctld_port, slurmd_port = _free_ports(2)
        here = bridge or "127.0.0.1"  # this machine, as the other hosts reach it
        hosts = "".join(f"NodeName={name} NodeAddr={address} CPUs=1 State=UNKNOWN\n" for name, _, address in self.hosts)
        partition = f"PartitionName=hosts Nodes={','.join(n for n, _, _ in self.hosts)} MaxTime=INFINITE State=UP\n"
        (folder / "slurm.conf").write_text(f"""\
ClusterName=termite{os.getpid()}
SlurmctldHost={host}({here})
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={socket_path}
CredType=cred/munge
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool-%n
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd-%n.pid
PlugStackConfig={folder}/plugstack.conf
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
KillWait=5
SlurmdParameters=config_overrides
NodeName={host} NodeAddr={here} CPUs=2 State=UNKNOWN
{hosts}PartitionName=here Nodes={host} Default=YES MaxTime=INFINITE State=UP
{partition if self.hosts else ""}""")
        for name in [host] + [name for name, _, _ in self.hosts]:
            (folder / f"spool-{name}").mkdir()
        self._run("munged", ["munged", "--foreground", "--force", f"--key-file={key}", f"--socket={socket_path}",
                             f"--pid-file={folder}/munged.pid", f"--seed-file={folder}/munged.seed",
                             f"--log-file={folder}/munged.log"])  # fmt: skip
        self._until(lambda: socket_path.exists(), "munged to make its socket")
        conf = self.env["SLURM_CONF"]
        self._run("slurmctld", ["slurmctld", "-D", "-f", conf])
        self._run("slurmd", ["slurmd", "-D", "-f", conf])
        for name, netns, _ in self.hosts:
            # nsenter, unshare and sh exec in turn: the pid is slurmd's.  (Not `ip netns exec`: it
            # remounts /sys, where slurmd then finds no cgroup file system and gives up.)
            self._run(f"slurmd-{name}", ["nsenter", f"--net=/run/netns/{netns}", "unshare", "--uts", "sh", "-c",
                                         f"hostname {name} && exec slurmd -D -f {conf}"])  # fmt: skip
        self._until(self._idle, "every slurmd to register with slurmctld (sinfo: idle)")

    def _make_hosts(self) -> str:
        """Two network namespaces on a bridge; the bridge's address.  _NoHosts if they cannot be made."""
        for tool in ("ip", "nsenter", "unshare"):
            if shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is None:
                raise _NoHosts(f"`{tool}` is not installed (iproute2, util-linux)")
        os.makedirs(LOCK_DIR, exist_ok=True)
        for slot in range(SLOTS):
            lock = open(os.path.join(LOCK_DIR, f"slot-{slot}.lock"), "w")  # noqa: SIM115 - held until stop()
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.close()
                continue
            self._slot, self._lock = slot, lock
            break
        else:
            raise _NoHosts(f"all {SLOTS} slots in {LOCK_DIR} are taken")
        _clear_slot(self._slot)  # what a run that died holding this slot left
        bridge, hosts = _netns_names(self._slot)
        try:
            _ip("netns", "add", hosts[0][1])
        except RuntimeError as exc:
            raise _NoHosts(f"cannot make a network namespace here: {exc}") from None
        _ip("link", "add", bridge[0], "type", "bridge")
        _ip("addr", "add", f"{bridge[1]}/24", "dev", bridge[0])
        _ip("link", "set", bridge[0], "up")
        for i, (name, netns, veth, address) in enumerate(hosts):
            if i:
                _ip("netns", "add", netns)
            _ip("link", "add", veth, "type", "veth", "peer", "name", f"{veth}p", "netns", netns)
            _ip("link", "set", veth, "master", bridge[0], "up")
            _ip("-n", netns, "link", "set", "lo", "up")
            _ip("-n", netns, "link", "set", f"{veth}p", "name", "eth0")
            _ip("-n", netns, "addr", "add", f"{address}/24", "dev", "eth0")
            _ip("-n", netns, "link", "set", "eth0", "up")
            self.hosts.append((name, netns, address))
        return bridge[1]

    def _run(self, name: str, argv: list[str]) -> None:
        with open(self.folder / f"{name}.out", "wb") as out:
            self.procs[name] = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                env=self.env, start_new_session=True)  # fmt: skip

    def _idle(self) -> bool:
        done = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], env=self.env, capture_output=True, text=True,
                              timeout=10)  # fmt: skip
        states = done.stdout.split()
        return len(states) == 1 + len(self.hosts) and set(states) == {"idle"}

    def _until(self, ready, what: str) -> None:
        """Wait for a daemon (it tells no one when it is ready: poll, bounded); skip if it never is."""
        deadline = time.monotonic() + READY_TIMEOUT
        while not ready():
            ended = [name for name, proc in self.procs.items() if proc.poll() is not None]
            if ended or time.monotonic() > deadline:
                why = f"{', '.join(ended)} exited" if ended else f"waited {READY_TIMEOUT:g} s"
                pytest.skip(f"Slurm's daemons cannot run here: waiting for {what}, {why}:\n{self.said()}")
            time.sleep(0.1)

    def said(self) -> str:
        return "\n".join(f"--- {path.name}:\n{path.read_text(errors='replace')[-1500:]}"
                         for path in sorted(self.folder.glob("*.out")) + sorted(self.folder.glob("*.log")))

    def squeue(self, *args: str) -> str:
        return subprocess.run(["squeue", "-h", *args], env=self.env, capture_output=True, text=True, timeout=10).stdout

    def stop(self) -> None:
        """Cancel what is left; stop every slurmd, slurmctld and munged, each by its pid; remove the hosts."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            jobs = self.squeue("-o", "%i").split()
            if jobs:
                subprocess.run(["scancel", *jobs], env=self.env, capture_output=True, timeout=10)
            deadline = time.monotonic() + 15
            while self.squeue("-o", "%i").split() and time.monotonic() < deadline:
                time.sleep(0.1)  # until their steps' processes are ended (slurmstepd reports to slurmctld)
        for name in sorted(self.procs, key=lambda name: ("slurmd" not in name, name != "slurmctld")):
            proc = self.procs[name]  # every slurmd, then slurmctld, then munged
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self._slot is not None:
            _clear_slot(self._slot)
            self._lock.close()  # lets the slot go


class _NoHosts(Exception):
    pass


LOCK_DIR = "/tmp/termite-slurm-netns"
SLOTS = 16


def _netns_names(slot: int):
    """(bridge, its address), and for each host (name, namespace, veth in this namespace, address)."""
    hosts = [(f"h{i}", f"termite-slurm{slot}-h{i}", f"tsv{slot}h{i}", f"10.78.{slot}.{i + 1}") for i in (1, 2)]
    return (f"tsbr{slot}", f"10.78.{slot}.1"), hosts


def _ip(*args: str, check: bool = True) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def _clear_slot(slot: int) -> None:
    """Remove a slot's namespaces (ending what still runs in them: what our slurmds started), veths, bridge."""
    bridge, hosts = _netns_names(slot)
    for _, netns, veth, _ in hosts:
        if os.path.exists(f"/run/netns/{netns}"):
            for _ in range(50):
                pids = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True, timeout=10)
                if not pids.stdout.split():
                    break
                for pid in pids.stdout.split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
                time.sleep(0.05)
            _ip("netns", "del", netns, check=False)
        _ip("link", "del", veth, check=False)
    _ip("link", "del", bridge[0], check=False)


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.fixture(scope="session")
def slurm():
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("the Slurm tests run Slurm's daemons (slurmctld, slurmd) and munged as root: run them as root")
    missing = [name for name in DAEMONS + CLIENTS if shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin")
               is None]  # fmt: skip
    if missing:
        pytest.skip(f"Slurm is not installed here ({', '.join(missing)} missing): apt-get install slurm-wlm munge "
                    "(.ci/run does)")
    folder = Path(tempfile.mkdtemp(prefix="termite-slurm-"))
    folder.chmod(0o755)  # munged and slurmd want their folders readable by all, writable by root only
    daemons = SlurmDaemons(folder)
    try:
        daemons.start()
        yield daemons
    finally:
        daemons.stop()
        shutil.rmtree(folder, ignore_errors=True)


class Allocation:
    """``salloc`` holding an allocation; ``env`` is the environment of a command run inside it."""

    def __init__(self, daemons: SlurmDaemons, args: list[str]):
        marker = "termite-test-allocated"
        self.daemons = daemons
        self.proc = subprocess.Popen(
            ["salloc", *args, "sh", "-c", f'env -0; echo; echo {marker}; exec cat >/dev/null'],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=daemons.env,
        )  # fmt: skip
        out = b""
        deadline = time.monotonic() + READY_TIMEOUT
        while marker.encode() not in out:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, left))
            chunk = os.read(self.proc.stdout.fileno(), 65536) if ready else b""
            if not chunk:
                self.close()
                raise AssertionError(f"salloc {' '.join(args)} gave no allocation: {self.proc.stderr.read().decode()}")
            out += chunk
        variables = out[: out.rindex(b"\n" + marker.encode())].rstrip(b"\n").split(b"\0")
        self.env = dict(v.decode().split("=", 1) for v in variables if b"=" in v)
        self.job = self.env["SLURM_JOB_ID"]

    def close(self) -> None:
        """End the allocation: the command's stdin closes, so it ends, so salloc gives the job up."""
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            subprocess.run(["scancel", self.job], env=self.daemons.env, capture_output=True, timeout=10)
            self.proc.kill()
            self.proc.wait(10)
        self.proc.stdout.close()
        self.proc.stderr.close()


@pytest.fixture
def allocation(slurm):
    held = Allocation(slurm, ["-N1", "-n2", "--job-name=termite-test"])
    yield held
    held.close()


# The job that reports where each node of its cluster runs, as Slurm sees it (it runs under --run).
WHERE = '''
import json, os
import termite

def report(to):
    keys = ("SLURM_JOB_ID", "SLURM_STEP_ID", "SLURM_PROCID", "SLURMD_NODENAME")
    termite.send(to, (os.getpid(), {key: os.environ.get(key) for key in keys}))

state = json.load(open(os.environ["TERMITE_CLUSTER"]))
with termite.Executor() as pool:
    here = pool.node
    for node in state["nodes"]:
        host, port = node["address"].rsplit(":", 1)
        here.spawn_on(here.connect(host, int(port)), report, here.pid)
        pid, environment = here.receive(timeout=20)
        print("where", json.dumps({"pid": pid, "state": node, "environment": environment}), flush=True)
'''


def _where(stdout: str) -> list[dict]:
    return [json.loads(line[len("where "):]) for line in stdout.splitlines() if line.startswith("where ")]


@pytest.mark.timeout(240)
def test_pi_runs_on_nodes_that_slurm_started_as_a_job_step(slurm, allocation, tmp_path):
    (tmp_path / "cluster.yaml").write_text("name: hpc\nhosts: slurm\n")
    done = _launch(["cluster.yaml", "--plain", "--run", str(PI), "8"], tmp_path, allocation.env, timeout=180)
    assert done.returncode == 0, done.stderr + slurm.said()
    assert "pi is about 3.14" in done.stdout, done.stdout
    assert f"Slurm job {allocation.job}: starting 2 nodes on" in done.stderr and "2 nodes up" in done.stderr
    assert slurm.squeue("--steps", "-j", allocation.job, "-o", "%i %j").split() == [], "a step outlived the cluster"

    # Each node runs as a task of a step of this job, one per allocated CPU, and says so itself.
    (tmp_path / "where.py").write_text(WHERE)
    done = _launch(["cluster.yaml", "--plain", "--run", "where.py"], tmp_path, allocation.env, timeout=120)
    assert done.returncode == 0, done.stderr + done.stdout
    nodes = _where(done.stdout)
    assert len(nodes) == 2, done.stdout
    for node in nodes:
        environment, state = node["environment"], node["state"]
        assert environment["SLURM_JOB_ID"] == allocation.job
        assert state["slurm_step"] == f"{allocation.job}.{environment['SLURM_STEP_ID']}"
        assert node["pid"] == state["os_pid"]  # the pid the launcher reports is the node's
    assert {node["environment"]["SLURM_PROCID"] for node in nodes} == {"0", "1"}
    assert len({node["state"]["slurm_step"] for node in nodes}) == 1  # one step, two tasks


def _restarted_once(state: dict) -> bool:
    return len(state["nodes"]) == 2 and any(node["restarts"] == 1 for node in state["nodes"])


@pytest.mark.timeout(240)
def test_a_killed_node_is_started_again_as_a_step_of_its_own(slurm, allocation, tmp_path):
    (tmp_path / "cluster.yaml").write_text("name: hpc\nhosts: slurm\nrestart: {backoff: 0.1}\n")
    state_file = tmp_path / ".termite" / "hpc.json"
    done = _launch(["cluster.yaml", "--detach"], tmp_path, allocation.env, timeout=120)
    try:
        assert done.returncode == 0, done.stderr
        state = json.loads(state_file.read_text())
        first, other = state["nodes"]
        assert first["slurm_step"] == other["slurm_step"] == f"{allocation.job}.0"
        os.kill(first["os_pid"], signal.SIGKILL)
        nodes = state_until(state_file, _restarted_once, timeout=60)["nodes"]  # the detached launcher rewrites it
        again = next(node for node in nodes if node["restarts"] == 1)
        assert again["slurm_step"] == f"{allocation.job}.1" and again["os_pid"] != first["os_pid"]
        assert {node["address"] for node in nodes} >= {other["address"]}  # the other node ran on
        steps = slurm.squeue("--steps", "-j", allocation.job, "-o", "%i").split()
        assert sorted(steps) == [f"{allocation.job}.0", f"{allocation.job}.1"]
        log = (tmp_path / ".termite" / "logs" / "hpc" / "launcher.log").read_text()
        assert "killed by signal 9 (SIGKILL); restarting" in log, log
    finally:
        stopped = _launch(["cluster.yaml", "--stop"], tmp_path, allocation.env)
    assert stopped.returncode == 0 and "stopped 2 nodes" in stopped.stderr, stopped.stderr
    assert slurm.squeue("--steps", "-j", allocation.job, "-o", "%i").split() == []
    for node in nodes:
        assert not Path(f"/proc/{node['os_pid']}").exists() or b"termite.node" not in Path(
            f"/proc/{node['os_pid']}/cmdline").read_bytes()


def _two_hosts(slurm) -> None:
    if not slurm.hosts:
        pytest.skip(f"no hosts in network namespaces: {slurm.no_hosts}")


@pytest.mark.timeout(240)
def test_on_two_hosts_each_runs_its_node_on_its_own_address(slurm, tmp_path):
    _two_hosts(slurm)
    (tmp_path / "cluster.yaml").write_text("name: two\nhosts: slurm\n")
    (tmp_path / "where.py").write_text(WHERE)
    allocation = Allocation(slurm, ["--partition=hosts", "-N2", "-n2"])
    try:
        done = _launch(["cluster.yaml", "--plain", "--run", str(PI), "8"], tmp_path, allocation.env, timeout=180)
        assert done.returncode == 0, done.stderr + slurm.said()
        assert "pi is about 3.14" in done.stdout and "starting 2 nodes on h1, h2" in done.stderr, done.stderr
        done = _launch(["cluster.yaml", "--plain", "--run", "where.py"], tmp_path, allocation.env, timeout=120)
        assert done.returncode == 0, done.stderr + done.stdout
    finally:
        allocation.close()
    addresses = {name: address for name, _, address in slurm.hosts}
    nodes = _where(done.stdout)
    assert sorted(node["environment"]["SLURMD_NODENAME"] for node in nodes) == ["h1", "h2"], done.stdout
    for node in nodes:  # each listens on the address of the host Slurm ran it on (NodeAddr)
        host = node["environment"]["SLURMD_NODENAME"]
        assert node["state"]["host"] == host and node["state"]["address"].startswith(addresses[host] + ":")
        assert node["environment"]["SLURM_JOB_ID"] == allocation.job


@pytest.mark.timeout(240)
def test_a_cluster_submitted_with_sbatch_is_watched_and_stopped_from_another_host(slurm, tmp_path):
    """sbatch runs termite-launch on h1, the job's first host; this machine attaches to it and stops it."""
    _two_hosts(slurm)
    (tmp_path / "cluster.yaml").write_text("name: batch\nhosts: slurm\n")
    state_file = tmp_path / ".termite" / "batch.json"
    out = tmp_path / "slurm.out"
    command = " ".join([*LAUNCH, "cluster.yaml", "--plain"])
    submitted = subprocess.run(
        ["sbatch", "--parsable", "--partition=hosts", "-N2", "-n2", f"--output={out}", f"--chdir={tmp_path}",
         f"--wrap=exec {command}"],
        env=slurm.env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    job = submitted.stdout.strip().split(";")[0]
    attach = None
    try:
        deadline = time.monotonic() + 90
        while not state_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)  # the batch job starts when slurmctld schedules it
        assert state_file.exists(), out.read_text() if out.exists() else "no output"
        state = json.loads(state_file.read_text())
        assert state["launcher_host"] == "h1" and {n["slurm_step"] for n in state["nodes"]} == {f"{job}.0"}

        status = _launch(["cluster.yaml", "--status", "--plain"], tmp_path, slurm.env)
        assert status.returncode == 0, status.stdout + status.stderr
        assert status.stdout.count(" up ") == 2, status.stdout
        starting = _launch(["cluster.yaml", "--detach"], tmp_path, slurm.env)
        assert starting.returncode == 1 and "is already running" in starting.stderr, starting.stderr

        attach = subprocess.Popen([*LAUNCH, "cluster.yaml", "--attach", "--plain", "--every", "1"], cwd=tmp_path,
                                  env=slurm.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        seen = _lines_until(attach.stdout, lambda line: " total " in line, 60)
        assert any(" h1 " in line and " up " in line for line in seen), seen
        assert any(" h2 " in line and " up " in line for line in seen), seen

        stopped = _launch(["cluster.yaml", "--stop"], tmp_path, slurm.env)
        assert stopped.returncode == 0 and "stopped 2 nodes" in stopped.stderr, stopped.stderr
        attach.wait(30)
        assert attach.returncode == 0 and "the cluster was stopped" in attach.stderr.read()
    finally:
        if attach is not None and attach.poll() is None:
            attach.kill()
            attach.wait(10)
        subprocess.run(["scancel", job], env=slurm.env, capture_output=True, timeout=10)
    deadline = time.monotonic() + 30
    while slurm.squeue("-j", job, "-o", "%i").split() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert slurm.squeue("-j", job, "-o", "%i").split() == []
    assert "stopping every node" in out.read_text()


def _lines_until(stream, done, timeout: float) -> list[str]:
    """Lines read from ``stream`` until one satisfies ``done`` (AssertionError after ``timeout``)."""
    lines: queue.SimpleQueue = queue.SimpleQueue()
    threading.Thread(target=lambda: [lines.put(line) for line in stream], daemon=True).start()
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            seen.append(lines.get(timeout=max(0.0, deadline - time.monotonic())))
        except queue.Empty:
            break
        if done(seen[-1]):
            return seen
    raise AssertionError(f"not seen within {timeout} s: {seen}")
