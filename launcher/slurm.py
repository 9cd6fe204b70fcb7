"""Starting a cluster's nodes in a Slurm allocation (cluster.yaml's ``hosts: slurm``, or ``--slurm``).

Inside an allocation -- ``salloc``, or an ``sbatch`` script -- :func:`in_allocation`
reads the job's hosts (``SLURM_JOB_NODELIST``, expanded by ``scontrol show
hostnames``) and the CPUs it has on each (``SLURM_JOB_CPUS_PER_NODE``): the
cluster gets one host per allocated host, with one termite node per allocated
CPU.  Outside an allocation it raises ConfigError saying how to get one.

:class:`SlurmStep` starts the nodes as the tasks of one job step, as an MPI
program is started::

    srun --ntasks=N --cpus-per-task=1 --distribution=arbitrary --label --kill-on-bad-exit=0 \\
         --job-name=termite-NAME  sh -c WRAPPER  PYTHON -u -m termite.node ARGS...

so that Slurm accounts for them, binds each to its CPU (where the site's task
plugin does), and ends whatever is left when the step or the job ends.  A hosts
file (``SLURM_HOSTFILE``, one line per task) places the tasks, so each one's
host, label and log are known before it starts.  Each task runs a small ``sh``
wrapper (``_WRAPPER``) that

* starts the node listening on its host's address, chosen by
  ``$SLURMD_NODENAME`` (loopback when the whole allocation is this machine,
  else each host's ``NodeAddr``);
* prints ``termite-slurm-task PID JOB.STEP``: the node's pid on its host, and the step;
* waits for the node and prints ``termite-slurm-exit STATUS``, so that the
  launcher learns of each node's end while the others run on (srun itself
  ends only with the last task).

srun labels each line with its task's number (``--label``); the step's
readers hand a task's lines to its :class:`SlurmTask`: the node's announcement
(``termite node HOST:PORT incarnation HEX``) and the wrapper's two lines are
read, the rest goes to the node's log, with what srun says of the task.  A
SlurmTask is a node handle as termite_launcher.cluster's local and remote
ones are: ``wait_announced``, ``wait``, ``poll``, ``stop``, ``kill``, ``remote_pid``.

Slurm signals a step, not a task: ``stop`` sends the whole step SIGTERM
(``scancel --signal=TERM JOB.STEP``, which reaches every process of every
task) and SIGKILL after the grace; a task whose node has ended is left alone.
A node that ends is started again by the launcher's supervisor as a step of
its own on the same host (``--nodelist=HOST --overlap``: the first step
still holds that CPU).
"""

from __future__ import annotations

import collections
import dataclasses
import ipaddress
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import threading
from pathlib import Path

import termite
from termite.executor import local_address_towards

from termite_launcher.announce import ANNOUNCE, parse_announcement
from termite_launcher.config import ClusterConfig, ConfigError, HostConfig

__all__ = ["SlurmError", "SlurmStep", "SlurmTask", "cpus_per_node", "in_allocation", "job_of"]

_TASK = "termite-slurm-task "
_EXIT = "termite-slurm-exit "
_LABELLED = re.compile(r"^\s*(\d+): ?(.*)$")  # srun --label: "  3: text"
_ABOUT_TASKS = re.compile(r"^srun: error: \S+: tasks? ([\d,\-]+): (.+)$")  # "srun: error: vm: tasks 0-1: Killed"
_MESSAGES = 50  # lines of srun's own stderr kept for error messages
# The srun input variables of the allocation that would change how the step is laid out
# (an sbatch --ntasks-per-node=2 exports SLURM_NTASKS_PER_NODE, which srun would obey).
_LAYOUT_VARIABLES = (
    "SLURM_NTASKS_PER_NODE", "SLURM_NTASKS_PER_SOCKET", "SLURM_NTASKS_PER_CORE", "SLURM_NTASKS_PER_GPU",
    "SLURM_DISTRIBUTION", "SLURM_HOSTFILE", "SLURM_ARBITRARY_NODELIST",
)  # fmt: skip

# The task: the node in the background, so that the wrapper sees its end and says so.  Slurm
# signals every process of the step, so the node gets SIGTERM itself; the wrapper waits on.
_WRAPPER = """\
case "$SLURMD_NODENAME" in
{binds}
  *) echo "termite: no listening address for host $SLURMD_NODENAME, which the launcher did not place a node on" >&2
     exit 2 ;;
esac
"$@" --host "$bind" &
pid=$!
trap : TERM INT HUP
echo "{task}$pid $SLURM_JOB_ID.$SLURM_STEP_ID"
wait "$pid"; status=$?
while kill -0 "$pid" 2>/dev/null; do wait "$pid"; status=$?; done
echo "{exit}$status"
exit "$status"
"""


class SlurmError(Exception):
    """srun or scancel could not do what was asked; the text says what Slurm said."""


# -- the allocation -----------------------------------------------------------------------


def job_of(environ=None) -> str | None:
    """The id of the Slurm job this process runs in, or None outside one."""
    environ = os.environ if environ is None else environ
    return environ.get("SLURM_JOB_ID") or environ.get("SLURM_JOBID") or None


def cpus_per_node(text: str) -> list[int]:
    """``SLURM_JOB_CPUS_PER_NODE`` (``"72(x2),36"``) as one count per host: ``[72, 72, 36]``."""
    counts = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", part)
        if match is None:
            raise ValueError(f"{text!r} is not a list of CPU counts such as 2(x3),1")
        counts += [int(match[1])] * int(match[2] or 1)
    return counts


def in_allocation(config: ClusterConfig, environ=None) -> ClusterConfig:
    """``config`` (``hosts: slurm``) with the hosts of the Slurm allocation this process runs in.

    One HostConfig per allocated host, ``cores`` its allocated CPUs, ``bind``
    the address its nodes listen on.  ConfigError, saying what to do, outside
    an allocation or when Slurm's commands are missing or fail.
    """
    settings = config.slurm
    if settings is None or config.hosts:
        return config
    environ = os.environ if environ is None else environ
    file = config.path.name

    def error(problem: str, fix: str) -> ConfigError:
        if settings.line is None:  # termite-launch --slurm
            return ConfigError("--slurm", None, "", None, problem, fix)
        shown = os.path.relpath(config.path)  # as the user likely wrote it
        shown = str(config.path) if shown.startswith("..") else shown
        return ConfigError(shown, settings.line, "hosts", "slurm", f"'slurm' {problem}", fix)

    job = job_of(environ)
    nodelist = environ.get("SLURM_JOB_NODELIST") or environ.get("SLURM_NODELIST")
    if job is None or not nodelist:
        raise error(
            "needs a Slurm allocation, and this process is not in one (SLURM_JOB_ID is not set)",
            f"run inside one: salloc -n 8 termite-launch {file}, or termite-launch {file} in an sbatch script; "
            "or list the hosts instead of slurm",
        )
    step_tasks = environ.get("SLURM_STEP_NUM_TASKS")
    if environ.get("SLURM_STEP_ID") and step_tasks and step_tasks.isdigit() and int(step_tasks) > 1:
        raise error(
            f"found termite-launch running as one of {step_tasks} tasks of job step "
            f"{job}.{environ['SLURM_STEP_ID']}, so each task would start a cluster",
            "run termite-launch once, in the allocation itself (salloc, the sbatch script), not under srun; "
            "it starts the nodes with srun",
        )
    for command in ("srun", "scontrol", "scancel"):
        if shutil.which(command, path=environ.get("PATH")) is None:
            raise error(f"needs Slurm's {command}, which is not on PATH here",
                        "load the Slurm environment (e.g. module load slurm), or install Slurm's client commands")
    try:
        names = _scontrol(["show", "hostnames", nodelist], environ).split()
        counts = cpus_per_node(environ.get("SLURM_JOB_CPUS_PER_NODE", ""))
    except (SlurmError, ValueError) as exc:
        raise error(f"could not read the allocation of job {job}: {exc}",
                    "check that this runs in the allocation (salloc, sbatch) and that scontrol works here") from None
    if not names or len(names) != len(counts):
        raise error(f"could not read the allocation of job {job}: {len(names)} hosts in SLURM_JOB_NODELIST "
                    f"({nodelist}) but {len(counts)} CPU counts in SLURM_JOB_CPUS_PER_NODE",
                    "run termite-launch in the allocation's own environment, as salloc and sbatch set it")
    try:
        binds = _addresses(names, environ)
    except SlurmError as exc:
        raise error(str(exc), "set each node's NodeAddr in slurm.conf to an address the other hosts reach") from None
    hosts = tuple(
        HostConfig(address=name, cores=count, bind=binds[name], python=settings.python, ssh=None,
                   workdir=settings.workdir, env=settings.env, label=name, slurm=True)
        for name, count in zip(names, counts)
    )  # fmt: skip
    return dataclasses.replace(config, hosts=hosts)


def _scontrol(args: list[str], environ) -> str:
    try:
        done = subprocess.run(["scontrol", *args], capture_output=True, text=True, timeout=60, env=dict(environ))
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SlurmError(f"scontrol {' '.join(args)}: {exc}") from None
    if done.returncode != 0:
        raise SlurmError(f"scontrol {' '.join(args)} said: {done.stderr.strip() or f'exit status {done.returncode}'}")
    return done.stdout


def _this_host(name: str) -> bool:
    here = socket.gethostname()
    return name in (here, here.split(".")[0], socket.getfqdn())


def _addresses(names: list[str], environ) -> dict[str, str]:
    """The address the nodes of each host listen on (and are reached at).

    The allocation is this machine only: loopback, as for ``localhost``.  Else
    each host's ``NodeAddr`` (how Slurm reaches it), as an IP address here.
    """
    if all(_this_host(name) for name in names):
        return {name: "127.0.0.1" for name in names}
    listed = _scontrol(["show", "node", "--oneliner", ",".join(names)], environ)
    node_addr = dict(re.findall(r"NodeName=(\S+).*?\bNodeAddr=(\S+)", listed))
    addresses = {}
    for name in names:
        given = node_addr.get(name, name)
        try:
            address = socket.getaddrinfo(given, None, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
        except OSError as exc:
            raise SlurmError(f"host {name}'s address {given} cannot be resolved here: {exc}") from None
        addresses[name] = address
    away = next((a for n, a in addresses.items() if not _this_host(n)), None)
    for name, address in addresses.items():
        if ipaddress.ip_address(address).is_loopback:
            if not _this_host(name):
                raise SlurmError(f"host {name}'s address {node_addr.get(name, name)} is {address} here, "
                                 "a loopback address the nodes of the other hosts cannot reach")
            addresses[name] = local_address_towards(away)  # this machine, as the other hosts reach it
    return addresses


# -- the step -----------------------------------------------------------------------------


def _status(code: int) -> int:
    """A wrapper's or srun's exit status as a Popen returncode: 128 + N (signal N) becomes -N."""
    return -(code - 128) if 128 < code < 128 + 65 else code


def _described(status: int | None) -> str:
    if status is None:
        return "ended"
    if status < 0:
        try:
            return f"was killed by signal {-status} ({signal.Signals(-status).name})"
        except ValueError:
            return f"was killed by signal {-status}"
    return f"exited with status {status}"


def _task_numbers(text: str) -> list[int]:
    """``0-2,5`` -> [0, 1, 2, 5]."""
    numbers = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        numbers += range(int(first), int(last or first) + 1)
    return numbers


def _from_srun(text: str) -> int | None:
    """The status srun reports for a task (``Exited with exit code 3``, ``Killed``), if it says one."""
    if match := re.search(r"exit code (\d+)", text):
        return int(match[1])
    for name, number in (("Killed", signal.SIGKILL), ("Terminated", signal.SIGTERM), ("Aborted", signal.SIGABRT),
                         ("Segmentation fault", signal.SIGSEGV)):
        if text.startswith(name):
            return -number
    return None


def _scancel(how: str, step: str) -> None:
    try:
        subprocess.run(["scancel", "--quiet", how, step], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        pass  # the step ends with the job; srun is stopped by pid below


class SlurmStep:
    """One ``srun`` job step whose tasks are termite nodes; ``tasks`` are their handles, in task order.

    ``placement``: each task's host (a Slurm one: ``cores`` and ``bind`` from
    :func:`in_allocation`) and log file.  ``node_args``: ``python -m
    termite.node``'s arguments but ``--host``, which the wrapper adds.
    ``env``: the nodes' environment (srun passes its own on).  ``hostfile``:
    where to write the hosts file that places the tasks; ``None`` for a
    one-task step on ``placement[0]``'s host that shares its CPU with the
    step there (a restart).  ``srun_options``: the user's, from cluster.yaml.
    SlurmError if srun cannot be run.
    """

    def __init__(
        self,
        placement: list[tuple[HostConfig, Path]],
        node_args: list[str],
        *,
        name: str,
        env: dict[str, str],
        hostfile: Path | None,
        srun_options: tuple[str, ...] = (),
        preexec_fn=None,
    ):
        hosts = [host for host, _ in placement]
        env = {k: v for k, v in env.items() if k not in _LAYOUT_VARIABLES}
        first = hosts[0]
        command = [
            "srun", f"--ntasks={len(placement)}", "--cpus-per-task=1", "--kill-on-bad-exit=0", "--label",
            f"--job-name=termite-{name}",
        ]  # fmt: skip
        if hostfile is None:
            command += ["--nodes=1", f"--nodelist={first.address}", "--overlap"]
        else:
            hostfile.write_text("".join(f"{host.address}\n" for host in hosts), encoding="utf-8")
            command.append("--distribution=arbitrary")
            env["SLURM_HOSTFILE"] = str(hostfile)
            if env.get("SLURM_STEP_ID", "").isdigit():  # in a step (srun --pty bash) that holds the CPUs
                command.append("--overlap")
        if first.workdir:
            command.append(f"--chdir={first.workdir}")
        binds = {host.address: host.bind for host in hosts}
        script = _WRAPPER.format(
            binds="\n".join(f"  {shlex.quote(a)}) bind={shlex.quote(b)} ;;" for a, b in binds.items()),
            task=_TASK, exit=_EXIT,
        )  # fmt: skip
        command += [*srun_options, "sh", "-c", script, "termite-slurm", first.python, "-u", "-m", "termite.node",
                    *node_args]  # fmt: skip
        self.step: str | None = None  # JOB.STEP, once a task has said it
        self.messages: collections.deque[str] = collections.deque(maxlen=_MESSAGES)  # srun's own stderr
        self._stop_lock = threading.Lock()
        self.tasks = [SlurmTask(self, i, host, log) for i, (host, log) in enumerate(placement)]
        try:
            self._proc = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                start_new_session=True,  # Ctrl-C reaches the launcher, which stops the step (srun would kill it)
                preexec_fn=preexec_fn,
            )  # fmt: skip
        except OSError as exc:
            for task in self.tasks:
                task._close_log()
            raise SlurmError(f"cannot run srun: {exc}") from None
        self._stderr = threading.Thread(target=self._read_stderr, daemon=True, name="termite-srun-stderr")
        self._stdout = threading.Thread(target=self._read_stdout, daemon=True, name="termite-srun-stdout")
        self._stderr.start()
        self._stdout.start()

    def _read_stdout(self) -> None:
        self._read(self._proc.stdout, stdout=True)
        status = _status(self._proc.wait())
        self._stderr.join(10)  # srun's last words about the tasks come first
        for task in self.tasks:
            task._ended(status, srun_ended=True)

    def _read_stderr(self) -> None:
        self._read(self._proc.stderr, stdout=False)

    def _read(self, stream, stdout: bool) -> None:
        """Each line to the task it is labelled with, or (srun's own) to :meth:`_srun_said`."""
        with stream:
            for raw in iter(stream.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                match = _LABELLED.match(line)
                if match is not None and int(match[1]) < len(self.tasks):
                    self.tasks[int(match[1])]._said(match[2], stdout)
                else:
                    self._srun_said(line)

    def _srun_said(self, line: str) -> None:
        """A line of srun's own: about some tasks (to their logs), or about the step (to every log)."""
        self.messages.append(line)
        about = _ABOUT_TASKS.match(line)
        numbers = _task_numbers(about[1]) if about else range(len(self.tasks))
        for number in numbers:
            if number < len(self.tasks):
                self.tasks[number]._log_line(line, status=_from_srun(about[2]) if about else None)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to every task (``scancel --signal=TERM``), SIGKILL after ``timeout``; srun then ends."""
        with self._stop_lock:
            if self._proc.poll() is None:
                if self.step is not None:
                    _scancel("--signal=TERM", self.step)
                else:  # still waiting for its step: srun gives up on it
                    self._proc.send_signal(signal.SIGTERM)
                try:
                    self._proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self._kill()
            self._stdout.join(15)

    def kill(self) -> None:
        """SIGKILL to every task at once."""
        with self._stop_lock:
            if self._proc.poll() is None:
                self._kill()
            self._stdout.join(15)

    def _kill(self) -> None:
        if self.step is not None:
            _scancel("--signal=KILL", self.step)
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()  # Slurm ends what is left of the step with the job
            self._proc.wait(10)


class SlurmTask:
    """One node, started as a task of a :class:`SlurmStep`: the launcher's handle on it.

    ``remote_pid``: the node's pid on its host; ``step``: ``JOB.STEP``.
    ``wait()`` returns the node's exit status as a Popen returncode does
    (negative: the signal that killed it).
    """

    def __init__(self, step: SlurmStep, index: int, host: HostConfig, log: Path):
        self._step = step
        self.index = index
        self.host = host
        self.ref: termite.NodeRef | None = None
        self.remote_pid: int | None = None
        self.status: int | None = None
        self._srun_status: int | None = None  # what srun said of the task, if its wrapper could not
        self._log = open(log, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - closed by stop()
        self._log_lock = threading.Lock()
        self._announced = threading.Event()  # set once ref and remote_pid are known, or the task ended
        self._end = threading.Event()

    @property
    def step(self) -> str | None:
        return self._step.step

    # -- lines, from the step's readers

    def _said(self, text: str, stdout: bool) -> None:
        if stdout and text.startswith(_TASK) and self.remote_pid is None:
            pid, step = text[len(_TASK):].split()
            self.remote_pid = int(pid)
            self._step.step = self._step.step or step
        elif stdout and text.startswith(_EXIT):
            self._ended(_status(int(text[len(_EXIT):])))
        elif stdout and self.ref is None and text.startswith(ANNOUNCE):
            self.ref = parse_announcement(text)
        else:
            self._log_line(text)
            return
        if self.ref is not None and self.remote_pid is not None:
            self._announced.set()

    def _log_line(self, text: str, status: int | None = None) -> None:
        if status is not None:
            self._srun_status = status
        with self._log_lock:
            if not self._log.closed:
                self._log.write(text + "\n")

    def _ended(self, status: int, srun_ended: bool = False) -> None:
        """The node ended with ``status`` (its wrapper said); or srun did, with the tasks it had left."""
        if self._end.is_set():
            return
        # A wrapper killed before it could say: what srun said of its task, else srun's own status.
        self.status = self._srun_status if srun_ended and self._srun_status is not None else status
        self._end.set()
        self._announced.set()

    # -- the node handle

    def wait_announced(self, timeout: float) -> termite.NodeRef:
        """Wait until the node listens; its NodeRef.  EOFError if its task ends first, TimeoutError."""
        self._announced.wait(timeout)
        if self.ref is not None and self.remote_pid is not None:
            return self.ref
        if self._end.is_set():
            said = f"; srun said: {self._step.messages[-1]}" if self._step.messages else ""
            raise EOFError(f"its Slurm task {_described(self.status)} before the node listened{said}")
        if self.remote_pid is None:
            said = f" (srun said: {self._step.messages[-1]})" if self._step.messages else ""
            raise TimeoutError(f"Slurm had not started its task within {timeout:.0f} s{said}")
        raise TimeoutError(f"no announcement within {timeout:.0f} s")

    def wait(self) -> int:
        """Block until the node ends; its exit status (negative: killed by that signal)."""
        self._end.wait()
        return self.status

    def poll(self) -> int | None:
        return self.status if self._end.is_set() else None

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the node: the whole step, unless its node has ended already (a task cannot be stopped alone)."""
        if not self._end.is_set():
            self._step.stop(timeout)
        self._close_log()

    def kill(self) -> None:
        if not self._end.is_set():
            self._step.kill()
        self._close_log()

    def _close_log(self) -> None:
        with self._log_lock:
            self._log.close()

    def __repr__(self) -> str:
        state = "running" if self.poll() is None else _described(self.status)
        return f"<SlurmTask {self.index} of step {self.step} on {self.host.address} pid={self.remote_pid} {state}>"
