"""hosts: slurm (issue 21): termite-launch in a real Slurm allocation, on this one machine.

The session fixture ``slurm`` runs Debian's Slurm (slurm-wlm: slurmctld and
slurmd) and munge as root, from a temporary folder: its own slurm.conf (this
host, CPUs=2, one partition, select/cons_tres, proctrack/linuxproc, no
cgroups, task/none), munge key and socket, free ports, so it touches no
file in /etc and can run beside another test session's.  The daemons are
stopped by pid at the end.  An allocation (``allocation``) is a real
``salloc -N1 -n2``: the command it runs prints its environment and then
holds the allocation until the test closes its stdin, so that the test runs
termite-launch with exactly the environment it has inside salloc.

One host only: slurmd would have to be built with --enable-multiple-slurmd
to run as several hosts on one machine.

Where the daemons cannot run (not root, slurm-wlm or munge not installed,
the daemons fail to start) the tests skip and say why; .ci/run installs the
packages.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

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
    assert "cluster.yaml:2: hosts: 'slurm' needs a Slurm allocation" in done.stderr, done.stderr
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


# -- a Slurm cluster of this one machine --------------------------------------------------------


class SlurmDaemons:
    """munged, slurmctld and slurmd, started from ``folder``; ``env`` reaches them (SLURM_CONF)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.procs: dict[str, subprocess.Popen] = {}
        self.env = dict(_without_slurm(), SLURM_CONF=str(folder / "slurm.conf"))

    def start(self) -> None:
        folder = self.folder
        host = socket.gethostname().split(".")[0]
        for sub in ("spool", "state"):
            (folder / sub).mkdir()
        key = folder / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        socket_path = folder / "munge.sock"
        (folder / "plugstack.conf").write_text("")
        ctld_port, slurmd_port = _free_ports(2)
        (folder / "slurm.conf").write_text(f"""\
ClusterName=termite{os.getpid()}
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={socket_path}
CredType=cred/munge
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
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
NodeName={host} NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
""")
        self._run("munged", ["munged", "--foreground", "--force", f"--key-file={key}", f"--socket={socket_path}",
                             f"--pid-file={folder}/munged.pid", f"--seed-file={folder}/munged.seed",
                             f"--log-file={folder}/munged.log"])  # fmt: skip
        self._until(lambda: socket_path.exists(), "munged to make its socket")
        self._run("slurmctld", ["slurmctld", "-D", "-f", self.env["SLURM_CONF"]])
        self._run("slurmd", ["slurmd", "-D", "-f", self.env["SLURM_CONF"]])
        self._until(self._idle, "slurmd to register with slurmctld (sinfo: idle)")

    def _run(self, name: str, argv: list[str]) -> None:
        with open(self.folder / f"{name}.out", "wb") as out:
            self.procs[name] = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                env=self.env, start_new_session=True)  # fmt: skip

    def _idle(self) -> bool:
        done = subprocess.run(["sinfo", "-h", "-o", "%T"], env=self.env, capture_output=True, text=True, timeout=10)
        return done.stdout.strip() == "idle"

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
        """Cancel what is left, then stop slurmd, slurmctld and munged, each by its pid."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            jobs = self.squeue("-o", "%i").split()
            if jobs:
                subprocess.run(["scancel", *jobs], env=self.env, capture_output=True, timeout=10)
            deadline = time.monotonic() + 15
            while self.squeue("-o", "%i").split() and time.monotonic() < deadline:
                time.sleep(0.1)  # until their steps' processes are ended (slurmstepd reports to slurmctld)
        for name in reversed(DAEMONS):
            proc = self.procs.get(name)
            if proc is None:
                continue
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


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
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the detached launcher rewrites the state file as it restarts it
            nodes = json.loads(state_file.read_text())["nodes"]
            if len(nodes) == 2 and any(node["restarts"] == 1 for node in nodes):
                break
            time.sleep(0.1)
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


@pytest.mark.timeout(240)
def test_a_cluster_submitted_with_sbatch_is_watched_and_stopped_from_outside(slurm, tmp_path):
    (tmp_path / "cluster.yaml").write_text("name: batch\nhosts: slurm\n")
    state_file = tmp_path / ".termite" / "batch.json"
    out = tmp_path / "slurm.out"
    command = " ".join([*LAUNCH, "cluster.yaml", "--plain"])
    submitted = subprocess.run(
        ["sbatch", "--parsable", "-N1", "-n2", f"--output={out}", f"--chdir={tmp_path}", f"--wrap=exec {command}"],
        env=slurm.env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    job = submitted.stdout.strip().split(";")[0]
    try:
        deadline = time.monotonic() + 90
        while not state_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)  # the batch job starts when slurmctld schedules it
        assert state_file.exists(), out.read_text() if out.exists() else "no output"
        status = _launch(["cluster.yaml", "--status", "--plain"], tmp_path, slurm.env)
        assert status.returncode == 0, status.stdout + status.stderr
        assert status.stdout.count(" up ") >= 2, status.stdout
        assert [s.split(".")[0] for s in {n["slurm_step"] for n in json.loads(state_file.read_text())["nodes"]}] == [job]
        stopped = _launch(["cluster.yaml", "--stop"], tmp_path, slurm.env)
        assert stopped.returncode == 0 and "stopped 2 nodes" in stopped.stderr, stopped.stderr
    finally:
        subprocess.run(["scancel", job], env=slurm.env, capture_output=True, timeout=10)
    deadline = time.monotonic() + 30
    while slurm.squeue("-j", job, "-o", "%i").split() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert slurm.squeue("-j", job, "-o", "%i").split() == []
    assert "stopping every node" in out.read_text()
