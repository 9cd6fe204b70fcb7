"""termite-launch's command line as a user meets it: --version, --init, log flags, --run's checks, exit
statuses under real signals, a detached cluster watched (--status --every, --attach in a real terminal),
and the job's output kept beside the node logs.  Real launcher processes, real nodes."""

import contextlib
import importlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import yaml

import termite
from terminals import alive, cluster_file

ROOT = Path(__file__).resolve().parent.parent
LAUNCH = [sys.executable, "-m", "termite_launcher"]





def _launch(cwd, *args, timeout=60):
    return subprocess.run([*LAUNCH, *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=cwd)


@pytest.fixture
def small(tmp_path):
    return cluster_file(tmp_path)


@pytest.fixture
def detached(small, tmp_path):
    """A cluster started with --detach (its state), stopped with --stop at the end."""
    started = _launch(tmp_path, small, "--detach")
    assert started.returncode == 0, started.stderr
    try:
        yield json.loads((tmp_path / ".termite" / "cluster.json").read_text())
    finally:
        stopped = _launch(tmp_path, small, "--stop")
        assert stopped.returncode == 0, stopped.stderr


@contextlib.contextmanager
def _launcher(cwd, *args):
    """A launcher process (stdout and stderr piped), killed at the end if it still runs."""
    proc = subprocess.Popen([*LAUNCH, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=cwd)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def _line_until(stream, test, timeout: float = 30.0) -> str:
    """The first line of ``stream`` for which ``test(line)`` holds (the lines come every fraction of a second)."""
    deadline = time.monotonic() + timeout
    seen = []
    for line in stream:
        seen.append(line)
        if test(line):
            return line
        assert time.monotonic() < deadline, "never seen; last lines:\n" + "".join(seen[-10:])
    raise AssertionError("the stream ended; its last lines:\n" + "".join(seen[-10:]))


# -- finding things --------------------------------------------------------------------------------


def test_version_is_the_projects_from_one_source():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert termite.__version__ == project["version"]
    done = _launch(ROOT, "--version")
    assert done.returncode == 0
    assert done.stdout.startswith(f"termite-launch {project['version']} from {Path(termite.__file__).parent}")


def test_an_uninstalled_source_tree_reads_its_version_from_pyproject(monkeypatch):
    from importlib import metadata

    import termite._version as version

    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", not_installed)
    try:
        project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
        assert importlib.reload(version).__version__ == project["version"]
    finally:
        monkeypatch.undo()
        importlib.reload(version)


def test_init_writes_a_starter_that_runs_and_never_overwrites(tmp_path):
    done = _launch(tmp_path, "--init")
    assert done.returncode == 0, done.stderr
    written = (tmp_path / "cluster.yaml").read_text()
    assert "wrote cluster.yaml" in done.stderr and "start it: termite-launch" in done.stderr

    from termite_launcher.config import load

    config = load(tmp_path / "cluster.yaml")  # the launcher's own checks
    assert [(h.address, h.cores, h.local) for h in config.hosts] == [("localhost", None, True)]  # one per core

    (tmp_path / "cluster.yaml").write_text("hosts: [{address: localhost, cores: 1}]  # mine\n")
    again = _launch(tmp_path, "--init")
    assert again.returncode == 1
    assert "cluster.yaml exists already, and was left as it is" in again.stderr, again.stderr
    assert (tmp_path / "cluster.yaml").read_text().endswith("# mine\n")
    assert written != (tmp_path / "cluster.yaml").read_text()

    named = _launch(tmp_path, "--init", "lab.yaml")
    assert named.returncode == 0 and load(tmp_path / "lab.yaml").name == "lab"
    assert "# name: lab " in (tmp_path / "lab.yaml").read_text()


def test_a_missing_cluster_file_points_to_init(tmp_path):
    done = _launch(tmp_path)
    assert done.returncode == 2
    assert "cluster.yaml: no such file" in done.stderr and done.stderr.rstrip().endswith("termite-launch --init")
    assert "repository" not in done.stderr
    other = _launch(tmp_path, "lab.yaml", "--status")
    assert other.returncode == 2 and other.stderr.rstrip().endswith("termite-launch --init lab.yaml"), other.stderr


def _schema_keys(schema: dict) -> set[str]:
    keys = set()
    for name, sub in schema.get("properties", {}).items():
        keys.add(name)
        keys |= _schema_keys(sub)
    for sub in schema.get("$defs", {}).values():
        keys |= _schema_keys(sub)
    return keys


def _uncommented(text: str, first: str, last: str) -> str:
    """The commented lines from the one starting ``first`` to the one starting ``last``, uncommented."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(first))
    end = next(i for i, line in enumerate(lines) if i > start and line.startswith(last))
    return "\n".join(line[2:] for line in lines[start : end + 1] if line.startswith("# ")) + "\n"


def test_the_starter_is_the_commented_reference_of_every_key(tmp_path, monkeypatch):
    from termite_launcher.config import load, schema
    from termite_launcher.starter import starter_text

    text = starter_text()
    missing = [key for key in sorted(_schema_keys(schema())) if not re.search(rf"^[# ]*-? *{key}:", text, re.M)]
    assert not missing, f"keys of the schema the starter does not show: {missing}"

    # The settings, uncommented, are the defaults they say they are.
    defaults = load(_write(tmp_path / "cluster.yaml", text))
    settings = _uncommented(text, "# name:", "#   max_backoff:")
    assert load(_write(tmp_path / "cluster.yaml", text + settings)) == defaults

    # The hosts of several machines, uncommented in place of the first list, pass the checks too.
    monkeypatch.setenv("HOME", str(tmp_path))  # for ssh: key: ~/.ssh/id_ed25519, which must exist
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "id_ed25519").write_text("a key\n")
    hosts = _uncommented(text, "# hosts:", "#       options:")
    several = load(_write(tmp_path / "several.yaml", hosts))
    here, remote = several.hosts
    assert here.local and not remote.local and remote.ssh.user == "me" and remote.label == "gpu-box"
    assert yaml.safe_load(hosts)["hosts"][1]["env"] == {"OMP_NUM_THREADS": "1"}


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_log_flags_are_a_nodes_and_reach_the_nodes(small, tmp_path):
    from termite.node import _parser as node_parser
    from termite.node import log_level

    from termite_launcher.__main__ import _parser

    for parser in (_parser(), node_parser()):
        assert log_level(parser.parse_args([])) == "WARNING"
        assert log_level(parser.parse_args(["-v"])) == "INFO"
        assert log_level(parser.parse_args(["-vv"])) == "DEBUG"
        assert log_level(parser.parse_args(["-q"])) == "ERROR"
        assert log_level(parser.parse_args(["--log-level", "debug"])) == "DEBUG"
    bad = _launch(tmp_path, small, "--log-level", "loud")
    assert bad.returncode == 2 and "'loud' is not a log level; give one of DEBUG, INFO" in bad.stderr
    both = _launch(tmp_path, small, "-v", "-q")
    assert both.returncode == 2 and "not allowed with" in both.stderr

    job = tmp_path / "cmdlines.py"
    job.write_text(
        "import json, os\n"
        "state = json.load(open(os.environ['TERMITE_CLUSTER']))\n"
        "for node in state['nodes']:\n"
        "    print(open(f\"/proc/{node['os_pid']}/cmdline\").read().replace('\\0', ' '))\n"
    )
    done = _launch(tmp_path, small, "-v", "--plain", "--run", job)
    assert done.returncode == 0, done.stderr
    cmdlines = [line for line in done.stdout.splitlines() if "termite.node" in line]
    assert len(cmdlines) == 2 and all("--log-level INFO" in line for line in cmdlines), done.stdout


def test_run_checks_the_script_before_starting_anything(small, tmp_path):
    began = time.monotonic()
    done = _launch(tmp_path, small, "--run", "nope.py")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"termite-launch: --run nope.py: no such file (looked for {tmp_path / 'nope.py'}); "
        "give the path of a Python script, e.g. termite-launch cluster.yaml --run job.py"
    )
    assert not (tmp_path / ".termite").exists() and time.monotonic() - began < 10  # no node, no key, no log
    (tmp_path / "folder").mkdir()
    folder = _launch(tmp_path, small, "--run", "folder")
    assert folder.returncode == 2 and "--run folder: is a folder without a __main__.py" in folder.stderr


def test_run_refuses_a_script_it_cannot_read(small, tmp_path):
    secret = tmp_path / "secret.py"
    secret.write_text("print('hi')\n")
    secret.chmod(0)
    if os.access(secret, os.R_OK):
        pytest.skip("running as a user who reads every file (root)")
    unreadable = _launch(tmp_path, small, "--run", "secret.py")
    assert unreadable.returncode == 2 and "cannot be read (permission denied)" in unreadable.stderr


def test_help_documents_the_exit_statuses():
    done = _launch(ROOT, "--help")
    epilog = done.stdout[done.stdout.index("exit status:") :]
    for status, meaning in [("0", "done"), ("1", "not done"), ("2", "usage"), ("N", "--run: the job's own"),
                            ("130", "stopped by Ctrl-C (SIGINT)"), ("143", "stopped by SIGTERM")]:
        assert re.search(rf"^  {status} +{re.escape(meaning)}", epilog, re.M), epilog


# -- exit statuses, under real signals -------------------------------------------------------------


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_the_dashboard_with_128_plus_its_number(small, tmp_path, signum, status):
    with _launcher(tmp_path, small, "--plain", "--every", "0.2") as launcher:
        _line_until(launcher.stderr, lambda line: "nodes up" in line)
        state = json.loads((tmp_path / ".termite" / "cluster.json").read_text())
        launcher.send_signal(signum)
        assert launcher.wait(30) == status
    assert not any(alive(node["os_pid"]) for node in state["nodes"])


JOB = """
import os, signal, sys, time
print("job", os.getpid(), flush=True)
print("to stderr", file=sys.stderr)
if sys.argv[1] == "sleep":
    time.sleep(60)
elif sys.argv[1] == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
sys.exit(int(sys.argv[1]))
"""


@pytest.mark.parametrize("how, status", [("7", 7), ("0", 0), ("kill", 128 + 9)])
def test_a_job_that_ends_on_its_own_gives_its_status(small, tmp_path, how, status):
    (tmp_path / "job.py").write_text(JOB)
    done = _launch(tmp_path, small, "--plain", "--run", "job.py", how)
    assert done.returncode == status, done.stderr


def test_a_signal_during_a_job_ends_the_job_and_gives_128_plus_its_number(small, tmp_path):
    (tmp_path / "job.py").write_text(JOB)
    with _launcher(tmp_path, small, "--plain", "--every", "0.2", "--run", "job.py", "sleep") as launcher:
        job = int(_line_until(launcher.stdout, lambda line: line.startswith("job ")).split()[1])
        launcher.send_signal(signal.SIGTERM)
        assert launcher.wait(30) == 143
        assert "the job's output" in launcher.stderr.read()
    assert not alive(job)


def test_the_jobs_output_is_shown_and_kept_beside_the_node_logs(small, tmp_path):
    (tmp_path / "job.py").write_text(
        "import sys\n"
        "for i in range(3):\n"
        "    print('line', i)\n"
        "print('trouble', file=sys.stderr)\n"
        "sys.stdout.write('no newline at the end')\n"
    )
    done = _launch(tmp_path, small, "--plain", "--run", "job.py")
    assert done.returncode == 0, done.stderr
    logs = tmp_path / ".termite" / "logs" / "cluster"
    assert (logs / "job.out").read_text() == "line 0\nline 1\nline 2\nno newline at the end"
    assert (logs / "job.err").read_text() == "trouble\n"
    assert "line 0\nline 1\nline 2\nno newline at the end" in done.stdout  # still shown, as it came
    assert "trouble\n" in done.stderr
    last = done.stderr.rstrip().splitlines()[-1]
    saved = f"{logs / 'job.out'} and {logs / 'job.err'}"
    assert last == f"termite-launch: the job's output (stdout, stderr) is saved in {saved}"
    assert sorted(p.name for p in logs.glob("localhost-*.log")) == ["localhost-0.log", "localhost-1.log"]


# -- a detached cluster, watched -------------------------------------------------------------------


def test_starting_a_cluster_that_runs_says_so_at_once_and_how_to_watch_it(small, tmp_path, detached):
    done = _launch(tmp_path, small)
    assert done.returncode == 1
    assert "starting cluster" not in done.stderr
    said = done.stderr.strip()
    launcher = detached["launcher_pid"]
    assert said.startswith(f"termite-launch: cluster 'cluster' is already running (launcher pid {launcher}, 2 nodes)")
    for flag in ("--attach", "--status", "--stop"):
        assert f"termite-launch {small} {flag}" in said
    assert all(alive(node["os_pid"]) for node in detached["nodes"])


def test_status_every_repeats_until_count_or_a_signal(small, tmp_path, detached):
    done = _launch(tmp_path, small, "--status", "--every", "0.2", "--count", "3")
    assert done.returncode == 0, done.stderr
    totals = [line for line in done.stdout.splitlines() if " total " in line]
    assert len(totals) == 3 and all("up=2/2" in line for line in totals), done.stdout
    with _launcher(tmp_path, small, "--status", "--every", "0.2") as watcher:
        for _ in range(2):
            _line_until(watcher.stdout, lambda line: " total " in line)
        watcher.send_signal(signal.SIGINT)
        assert watcher.wait(30) == 130
    assert all(alive(node["os_pid"]) for node in detached["nodes"])
    lone = _launch(tmp_path, small, "--count", "2")
    assert lone.returncode == 2 and "--count goes with --status --every" in lone.stderr


def test_attach_follows_a_restart_and_leaves_the_cluster_running(small, tmp_path):
    small.write_text(small.read_text() + "restart: {intensity: 2, period: 60, backoff: 0.1}\n")
    started = _launch(tmp_path, small, "--detach")
    assert started.returncode == 0, started.stderr
    try:
        state = json.loads((tmp_path / ".termite" / "cluster.json").read_text())
        victim, other = state["nodes"]
        with _launcher(tmp_path, small, "--attach", "--plain", "--every", "0.2") as watcher:
            _line_until(watcher.stdout, lambda line: " total " in line and "up=2/2" in line)
            os.kill(victim["os_pid"], signal.SIGKILL)
            line = _line_until(watcher.stdout, lambda line: "restarts=1" in line and " up " in line)
            assert victim["address"] not in line  # the row moved to the new node's address
            watcher.send_signal(signal.SIGINT)
            assert watcher.wait(30) == 130
            assert "left the dashboard; the cluster runs on" in watcher.stderr.read()
        status = _launch(tmp_path, small, "--status")
        assert status.returncode == 0 and status.stdout.count(" up ") == 2, status.stdout
    finally:
        _launch(tmp_path, small, "--stop")


SESSION = "termite"  # each test's tmux server (-L) has one session


def _tmux(socket: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run(["tmux", "-L", socket, *args], capture_output=True, text=True)


def _screen_until(socket: str, test, timeout: float = 30.0) -> str:
    """Watch the terminal as a person would, until ``test(screen)`` holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        screen = _tmux(socket, "capture-pane", "-p", "-t", SESSION).stdout
        if test(screen):
            return screen
        time.sleep(0.2)  # a terminal gives no event to wait on: look again
    screen = _tmux(socket, "capture-pane", "-p", "-t", SESSION).stdout
    raise AssertionError(f"the screen never showed what was expected:\n{screen}")


@pytest.mark.skipif(not shutil.which("tmux"), reason="tmux is not installed")
@pytest.mark.parametrize("leave, status", [("q", 0), ("C-c", 130)])
def test_attach_in_a_terminal_shows_the_live_dashboard_and_leaves_the_cluster_running(small, tmp_path, detached, leave,
                                                                                      status):
    socket = f"termite-attach-{os.getpid()}-{leave}"  # a server of its own, with this environment
    python = f"env PYTHONPATH={os.environ.get('PYTHONPATH', '')} {sys.executable}"
    command = f"{python} -m termite_launcher {small} --attach; echo EXITED $?; sleep 60"
    started = _tmux(socket, "new-session", "-d", "-s", SESSION, "-x", "140", "-y", "40", "-c", str(tmp_path), command)
    assert started.returncode == 0, started.stderr
    try:
        # Whole frames only: a capture may catch the terminal halfway through drawing one.
        # "2/2 up": an attach may first draw the header's "1/2 up" beside one node's " up " row.
        screen = _screen_until(socket, lambda text: "2/2 up" in text and "attached to 'cluster'" in text)
        for node in detached["nodes"]:
            assert node["address"] in screen
        assert "events" in screen and "2/2 up" in screen
        _tmux(socket, "send-keys", "-t", SESSION, leave)
        screen = _screen_until(socket, lambda text: "EXITED" in text)
        assert f"EXITED {status}" in screen, screen
        assert "the cluster runs on" in screen
    finally:
        _tmux(socket, "kill-server")
    assert all(alive(node["os_pid"]) for node in detached["nodes"])
    status_now = _launch(tmp_path, small, "--status")
    assert status_now.returncode == 0 and status_now.stdout.count(" up ") == 2, status_now.stdout


def test_attach_to_a_cluster_that_does_not_run(small, tmp_path):
    done = _launch(tmp_path, small, "--attach")
    assert done.returncode == 1 and "cluster 'cluster' is not running" in done.stderr


@pytest.mark.skipif(not shutil.which("tmux"), reason="tmux is not installed")
def test_in_a_terminal_the_jobs_output_is_shown_above_the_dashboard_and_kept(small, tmp_path):
    (tmp_path / "job.py").write_text(
        "import sys, time\n"
        "print('hello from the job')\n"
        "print('a complaint', file=sys.stderr)\n"
        "time.sleep(2)\n"  # the dashboard is drawn meanwhile
        "sys.exit(5)\n"
    )
    socket = f"termite-run-{os.getpid()}"
    python = f"env PYTHONPATH={os.environ.get('PYTHONPATH', '')} {sys.executable}"
    command = f"{python} -m termite_launcher {small} --run job.py; echo EXITED $?; sleep 60"
    started = _tmux(socket, "new-session", "-d", "-s", SESSION, "-x", "140", "-y", "40", "-c", str(tmp_path), command)
    assert started.returncode == 0, started.stderr
    try:
        screen = _screen_until(socket, lambda text: "EXITED" in text)
    finally:
        _tmux(socket, "kill-server")
    assert "EXITED 5" in screen, screen
    assert "hello from the job" in screen and "a complaint" in screen, screen
    logs = tmp_path / ".termite" / "logs" / "cluster"
    assert (logs / "job.out").read_text() == "hello from the job\n"
    assert (logs / "job.err").read_text() == "a complaint\n"
    assert "the job's output (stdout, stderr) is saved in" in screen
