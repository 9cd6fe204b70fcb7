"""pytest --termite: a sample suite run on a 2-node cluster reports as it does run locally.

Each test copies tests/sample_suite (about 200 tests: passing, failing with
diffs, fixture errors, skips, xfail/xpass, a warning, captured output, 50 ms
sleeps, 20 ms CPU burns) into tmp_path with a cluster.yaml of two local nodes,
and runs pytest on it as a user does, in a subprocess.
"""

import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

SUITE = Path(__file__).resolve().parent / "sample_suite"
CLUSTER = """\
hosts:
  - address: localhost
    cores: 2
heartbeat_interval: 0.2
heartbeat_timeout: 2.0
meter_interval: 0.5
"""
TERMITE = ["--termite", "cluster.yaml"]
NO_CACHE = ["-p", "no:cacheprovider"]

_RESULT = re.compile(r"\b(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS) (\S+::\S+)")


class Run:
    def __init__(self, proc_or_code, output: str):
        self.code = proc_or_code
        self.output = output
        self.counts = _counts(output)
        self.failing = {tuple(line.split()[:2]) for line in output.splitlines() if line.startswith(("FAILED ", "ERROR "))}

    def __repr__(self):
        return f"<exit {self.code}: {self.counts}>\n{self.output[-4000:]}"


def _counts(output: str) -> dict:
    """The summary line's counts: {'failed': 6, 'passed': 194, ...} ('warning' and 'error' made plural)."""
    lines = [line for line in output.splitlines() if re.search(r" in [\d.]+s\b", line) and re.search(r"\d+ \w+", line)]
    assert lines, output[-3000:]
    counts = {}
    for number, word in re.findall(r"(\d+) (\w+)", lines[-1].strip("= ")):
        word = {"warning": "warnings", "error": "errors"}.get(word, word)
        counts[word] = int(number)
    return counts


@pytest.fixture
def project(tmp_path):
    root = tmp_path / "project"
    shutil.copytree(SUITE, root, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    (root / "cluster.yaml").write_text(CLUSTER)
    return root


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_ADDOPTS", "SAMPLE_SUITE_"))}
    env.update(extra)
    return env


def pytest_run(root: Path, *args: str, timeout: float = 150, **env) -> Run:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", *args], cwd=root, capture_output=True, text=True, timeout=timeout, env=_env(**env)
    )
    return Run(proc.returncode, proc.stdout + proc.stderr)


def _no_cluster_left(root: Path) -> None:
    assert not (root / ".termite" / "cluster.json").exists(), "the cluster's state file outlived the run"
    assert len(list((root / ".termite" / "logs" / "cluster").glob("*.log"))) == 2  # it did start 2 nodes


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """The sample suite run locally, once per module."""
    root = tmp_path_factory.mktemp("local") / "project"
    shutil.copytree(SUITE, root, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    run = pytest_run(root, *NO_CACHE, f"--junitxml={root / 'junit.xml'}")
    assert run.code == 1, run
    run.junit = _junit(root / "junit.xml")
    return run


def _junit(path: Path) -> tuple:
    """What a junit XML file says: its totals, and each test case's outcome."""
    suite = ET.parse(path).getroot()[0]
    cases = sorted((case.get("classname"), case.get("name"), tuple(sorted(c.tag for c in case))) for case in suite.iter("testcase"))
    return {k: suite.get(k) for k in ("tests", "failures", "errors", "skipped")}, cases


@pytest.mark.timeout(180)
def test_same_report_as_a_local_run(project, local_run):
    run = pytest_run(project, *NO_CACHE, *TERMITE, f"--junitxml={project / 'junit.xml'}")
    assert run.code == local_run.code == 1, run
    assert run.counts.pop("passed") == local_run.counts["passed"], run
    assert run.counts == {k: v for k, v in local_run.counts.items() if k != "passed"}, run
    assert local_run.counts["failed"] == 6 and local_run.counts["errors"] == 3 and local_run.counts["xfailed"] == 3
    assert run.failing == local_run.failing and len(run.failing) == 9, run
    out = run.output
    # failure tracebacks with their assertion diffs, and the captured output of failing tests
    assert "{'a': 1, 'b': 2, 'c': 3} == {'a': 1, 'b': 20, 'c': 3}" in out and "Differing items" in out
    assert "test_fast.py:31: AssertionError" in out
    assert re.search(r"Captured stdout call -+\nto stdout before failing", out), out
    assert re.search(r"Captured stderr call -+\nto stderr before failing", out), out
    assert "logged before failing" in out and "comparing two dicts" in out
    assert "RuntimeError: the broken fixture cannot be set up" in out
    assert "UserWarning: a sample warning" in out  # a warning from a worker, in the warnings summary
    assert "output of a passing test" not in out  # passing tests' output stays captured
    assert _junit(project / "junit.xml") == local_run.junit  # junitxml, written by this process alone
    # every node did work, and said so; then the cluster was stopped
    assert "[termite] started cluster 'cluster': 2 nodes, 2 workers" in out
    done = [int(n) for n in re.findall(r"^tw\d on 127\.0\.0\.1:\d+ \(pid \d+\): (\d+) tests", out, re.MULTILINE)]
    assert len(done) == 2 and all(done) and sum(done) == sum(local_run.counts.get(k, 0) for k in ("passed", "failed", "skipped", "xfailed", "xpassed")) + 2
    _no_cluster_left(project)


@pytest.mark.timeout(180)
def test_x_stops_at_the_first_failure(project, local_run):
    run = pytest_run(project, *NO_CACHE, *TERMITE, "-x")
    assert run.code == 1, run
    # A worker stops at its first failure; the other may be running a test that fails too.
    assert re.search(r"!!!+ stopping after [12] failures !!!+", run.output), run
    assert 1 <= run.counts.get("failed", 0) + run.counts.get("errors", 0) <= 2, run
    ran = sum(run.counts.get(k, 0) for k in ("passed", "failed", "skipped", "xfailed", "xpassed"))
    assert ran < local_run.counts["passed"] - 50, run  # test_slow.py's 110 tests come after the first failure
    _no_cluster_left(project)


@pytest.mark.timeout(180)
def test_k_selects_the_same_tests(project, tmp_path):
    local = tmp_path / "local"
    shutil.copytree(project, local)
    selection = ["-k", "square or diff or xpass or broken or burn"]
    here = pytest_run(local, *NO_CACHE, *selection)
    there = pytest_run(project, *NO_CACHE, *TERMITE, *selection)
    assert here.counts == there.counts and here.failing == there.failing, (here, there)
    assert here.counts == {"failed": 4, "passed": 70, "xpassed": 1, "deselected": 132, "errors": 2}, here


@pytest.mark.timeout(180)
def test_lf_reruns_only_the_failures(project):
    first = pytest_run(project, *TERMITE)  # with the cache: the controller records the failures
    assert first.code == 1 and len(first.failing) == 9, first
    again = pytest_run(project, *TERMITE, "--lf", "-v")
    assert again.code == 1, again
    ran = {nodeid for _, nodeid in _RESULT.findall(again.output) if "::" in nodeid}
    assert ran == {nodeid for _, nodeid in first.failing}, again
    assert again.failing == first.failing, again
    assert "[127.0.0.1:" in again.output  # -v: each result names its node


@pytest.mark.timeout(180)
def test_progress_per_node(project):
    verbose = pytest_run(project, *NO_CACHE, *TERMITE, "-v", "-k", "square or burn")
    nodes = set(re.findall(r"^\[(127\.0\.0\.1:\d+)\] \[ *\d+%\] PASSED test_\w+\.py::", verbose.output, re.MULTILINE))
    assert len(nodes) == 2, verbose
    quiet = pytest_run(project, *NO_CACHE, *TERMITE, "--termite-status", "0.2", "-k", "sleep")
    status = re.findall(r"^\[termite\] 127\.0\.0\.1:\d+ \d+ done, [01] running \| 127\.0\.0\.1:\d+ \d+ done, [01] running \| \d+ to go$",
                        quiet.output, re.MULTILINE)
    assert status, quiet
    assert quiet.counts == {"failed": 1, "passed": 110, "deselected": 98}, quiet


@pytest.mark.timeout(120)
def test_an_idle_worker_takes_the_tests_waiting_behind_a_long_one(project):
    (project / "test_long.py").write_text(textwrap.dedent(
        """
        import time

        import pytest

        def test_long():
            time.sleep(2)

        @pytest.mark.parametrize("n", range(40))
        def test_short(n):
            time.sleep(0.02)
        """
    ))  # fmt: skip
    run = pytest_run(project, *NO_CACHE, *TERMITE, "-v", "test_long.py")
    assert run.counts == {"passed": 41}, run
    by_node = {}
    for node, nodeid in re.findall(r"^\[(127\.0\.0\.1:\d+)\] \[ *\d+%\] PASSED (\S+)", run.output, re.MULTILINE):
        by_node.setdefault(node, []).append(nodeid)
    [slow] = [tests for tests in by_node.values() if "test_long.py::test_long" in tests]
    # Its first chunk had test_long and 4 more; the other worker took back all but the next one.
    assert len(slow) <= 2, run


def test_two_tests_on_two_workers_run_at_once(project):
    # Each waits for the other to start: on one worker (both in one chunk, the second
    # kept back as the first's next item) the first would wait in vain.
    (project / "test_pair.py").write_text(textwrap.dedent(
        """
        import time
        from pathlib import Path

        import pytest

        @pytest.mark.parametrize("me", ["a", "b"])
        def test_meet(me):
            here = Path(__file__).parent
            (here / f"started-{me}").touch()
            other = here / ("started-b" if me == "a" else "started-a")
            deadline = time.monotonic() + 20
            while not other.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            assert other.exists(), "the other test did not start while this one ran"
        """
    ))  # fmt: skip
    run = pytest_run(project, *NO_CACHE, *TERMITE, "test_pair.py")
    assert run.counts == {"passed": 2}, run


@pytest.mark.timeout(120)
def test_under_s_what_tests_print_is_shown_named_by_worker(project):
    run = pytest_run(project, *NO_CACHE, *TERMITE, "-s", "-k", "test_prints or test_print_then_fail")
    assert run.counts == {"passed": 1, "failed": 1, "deselected": 207}, run
    assert re.search(r"^\[tw[01]\] output of a passing test$", run.output, re.MULTILINE), run
    # Nothing was captured, so the failure's report has no "Captured stdout" of its own.
    assert "Captured stdout" not in run.output, run


def _read_fifo_line(path: Path, proc: subprocess.Popen, timeout: float) -> str:
    """One line from a FIFO, waiting on it (not polling the file), as long as ``proc`` runs."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        data = b""
        deadline = time.monotonic() + timeout
        while b"\n" not in data:
            assert proc.poll() is None, proc.communicate()[0][-4000:]
            assert time.monotonic() < deadline, "the gate test never started"
            if select.select([fd], [], [], 0.5)[0]:
                data += os.read(fd, 100)
        return data.decode().strip()
    finally:
        os.close(fd)


@pytest.mark.timeout(180)
def test_a_node_killed_mid_run(project, tmp_path, local_run):
    gate = tmp_path / "gate"
    gate.mkdir()
    os.mkfifo(gate / "started")
    os.mkfifo(gate / "never")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", *NO_CACHE, *TERMITE], cwd=project, env=_env(SAMPLE_SUITE_GATE=str(gate)),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        node_pid = int(_read_fifo_line(gate / "started", proc, timeout=90))  # test_gate runs, on this node
        os.kill(node_pid, signal.SIGKILL)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    run = Run(proc.returncode, output)
    assert run.code == 1, run
    # Reported as crashed; why depends on which news of the loss came first (the node's link, its
    # heartbeats), so any reason will do here.
    assert re.search(r"worker tw\d on 127\.0\.0\.1:\d+ crashed while running 'test_gate\.py::test_gate': ", output), output
    expected = dict(local_run.counts, failed=local_run.counts["failed"] + 1, passed=local_run.counts["passed"] - 1)
    assert run.counts == expected, run
    assert run.failing == local_run.failing | {("FAILED", "test_gate.py::test_gate")}, run
    _no_cluster_left(project)


@pytest.mark.timeout(120)
def test_a_local_worker_is_told_its_node_and_ends_with_it(project):
    """Local workers start before the cluster (forked by this pytest); once it is up each learns its node."""
    (project / "test_where.py").write_text(textwrap.dedent(
        """
        import os

        from termite_launcher.pytest_worker import node_pid

        def test_where():
            pid = node_pid(timeout=30)
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                assert b"termite.node" in f.read()
            assert os.getppid() != pid  # not the node's child: the controller's, tied to the node
            print(f"node {pid} parent {os.getppid()}")
        """
    ))  # fmt: skip
    run = pytest_run(project, *NO_CACHE, *TERMITE, "-s", "test_where.py")
    assert run.counts == {"passed": 1}, run
    found = re.findall(r"^\[tw[01]\] node (\d+) parent (\d+)$", run.output, re.MULTILINE)
    assert len(found) == 1, run.output
    [(node, parent)] = found
    assert node != parent, run


@pytest.mark.timeout(120)
def test_a_test_that_kills_its_worker_is_a_crash_and_the_worker_is_replaced(project):
    (project / "test_exit.py").write_text(textwrap.dedent(
        """
        import os

        def test_exit():
            print("about to go")
            os._exit(3)

        def test_after():
            pass
        """
    ))  # fmt: skip
    run = pytest_run(project, *NO_CACHE, *TERMITE, "test_exit.py", "test_fast.py")
    assert re.search(r"worker tw\d on 127\.0\.0\.1:\d+ crashed while running 'test_exit\.py::test_exit': its pytest ended with status 3",
                     run.output), run
    assert re.search(r"\[termite\] worker tw2 replaces it on 127\.0\.0\.1:\d+", run.output), run
    assert run.counts == {"failed": 4, "passed": 26}, run  # test_exit and the 3 of test_fast.py


@pytest.mark.timeout(120)
def test_when_every_worker_crashes_the_run_ends_and_says_why(project):
    (project / "test_exit.py").write_text("import os\n" + "".join(f"\n\ndef test_exit_{i}():\n    os._exit(4)\n" for i in range(7)))
    run = pytest_run(project, *NO_CACHE, *TERMITE, "--termite-max-restarts", "1", "test_exit.py")
    assert run.code == 2, run  # interrupted
    assert re.search(r"Interrupted: termite: no worker left; \d+ tests not run", run.output), run
    assert run.counts["failed"] == 3, run  # one crash per worker: the two first and the one restarted
    _no_cluster_left(project)


@pytest.mark.timeout(180)
def test_joins_a_running_cluster_and_leaves_it_running(project):
    launch = [sys.executable, "-m", "termite_launcher", "cluster.yaml"]
    started = subprocess.run([*launch, "--detach"], cwd=project, capture_output=True, text=True, timeout=60, env=_env())
    assert started.returncode == 0, started.stderr
    try:
        run = pytest_run(project, *NO_CACHE, *TERMITE, "-k", "square or diff")
        assert "[termite] joined running cluster 'cluster': 2 nodes, 2 workers" in run.output, run
        assert run.counts == {"failed": 3, "passed": 20, "deselected": 186}, run
        status = subprocess.run([*launch, "--status", "--plain"], cwd=project, capture_output=True, text=True, timeout=60, env=_env())
        assert status.returncode == 0, status.stdout + status.stderr  # every node still up
    finally:
        subprocess.run([*launch, "--stop"], cwd=project, capture_output=True, timeout=60, env=_env())


def _ssh_cluster(netns_hosts, workdirs=None) -> str:
    lines = ["hosts:"]
    for i, host in enumerate(netns_hosts.hosts):
        lines += [
            f"  - address: {host.address}",
            "    cores: 1",
            f"    python: {sys.executable}",
            "    ssh:",
            "      user: root",
            f"      key: {netns_hosts.client_key}",
            f"      options: [UserKnownHostsFile={netns_hosts.known_hosts}, ConnectTimeout=5]",
        ]
        if workdirs:
            lines.append(f"    workdir: {workdirs[i]}")
    return "\n".join(lines) + "\nheartbeat_interval: 0.2\nheartbeat_timeout: 2.0\n"


@pytest.mark.timeout(180)
def test_on_two_ssh_hosts(netns_hosts, project, local_run):
    """Nodes started over SSH on two hosts (network namespaces: the same files, at the same path)."""
    (project / "cluster.yaml").write_text(_ssh_cluster(netns_hosts))
    run = pytest_run(project, *NO_CACHE, *TERMITE, "-v")
    assert run.counts == local_run.counts and run.failing == local_run.failing, run
    ran_on = set(re.findall(r"^\[([\d.]+):\d+\] \[ *\d+%\] PASSED", run.output, re.MULTILINE))
    assert ran_on == {host.address for host in netns_hosts.hosts}, run
    assert not (project / ".termite" / "cluster.json").exists()


@pytest.mark.timeout(180)
def test_termites_own_tests_run_on_it(tmp_path):
    """Tests that start node processes of their own, run by workers on the nodes of a cluster."""
    (tmp_path / "cluster.yaml").write_text(CLUSTER)
    repo = SUITE.parent.parent
    run = pytest_run(repo, *NO_CACHE, "--termite", str(tmp_path / "cluster.yaml"), "-v", "tests/test_cluster.py")
    assert run.code == 0 and run.counts["passed"] >= 5 and set(run.counts) == {"passed"}, run
    assert len(set(re.findall(r"^\[(127\.0\.0\.1:\d+)\] \[ *\d+%\] PASSED", run.output, re.MULTILINE))) == 2, run


@pytest.mark.timeout(180)
def test_termite_copy_puts_the_code_in_each_remote_workdir_first(netns_hosts, project, local_run, tmp_path):
    """No shared code: each host's workdir starts missing, and the run is the one made there from the copy."""
    workdirs = [tmp_path / f"host{i}" / "checkout" for i in range(2)]
    (project / "cluster.yaml").write_text(_ssh_cluster(netns_hosts, workdirs))
    (project / "__pycache__").mkdir()
    (project / "__pycache__" / "stale.pyc").write_bytes(b"left out")
    run = pytest_run(project, *NO_CACHE, *TERMITE, "--termite-copy", "-v")
    assert run.counts == local_run.counts and run.failing == local_run.failing, run
    for host, workdir in zip(netns_hosts.hosts, workdirs):
        assert f"[termite] copied {project} to {host.address}:{workdir}" in run.output, run
        assert (workdir / "test_fast.py").read_bytes() == (project / "test_fast.py").read_bytes()
        assert not (workdir / "__pycache__" / "stale.pyc").exists()
    ran_on = set(re.findall(r"^\[([\d.]+):\d+\] \[ *\d+%\] PASSED", run.output, re.MULTILINE))
    assert ran_on == {host.address for host in netns_hosts.hosts}, run


def test_termite_copy_without_a_workdir_says_what_to_add(netns_hosts, project):
    (project / "cluster.yaml").write_text(_ssh_cluster(netns_hosts))
    run = subprocess.run([sys.executable, "-m", "pytest", *TERMITE, "--termite-copy"], cwd=project, capture_output=True,
                         text=True, timeout=60, env=_env())
    assert run.returncode == 4, run.stdout + run.stderr  # pytest's usage error, before anything starts
    assert f"cluster.yaml: hosts[0] ({netns_hosts.hosts[0].address}) has no workdir:; add one" in run.stderr, run.stderr


def test_a_bad_cluster_file_is_a_usage_error(project):
    (project / "bad.yaml").write_text("hosts:\n  - address: localhost\n    cores: many\n")
    run = subprocess.run([sys.executable, "-m", "pytest", "--termite", "bad.yaml"], cwd=project, capture_output=True, text=True,
                         timeout=60, env=_env())
    assert run.returncode == 4, run.stdout + run.stderr  # pytest's usage error
    assert "--termite: bad.yaml:3: hosts[0].cores" in run.stderr and "many" in run.stderr, run.stderr


def test_the_plugin_is_installed_with_termite():
    run = subprocess.run([sys.executable, "-m", "pytest", "--help"], capture_output=True, text=True, timeout=60, env=_env())
    assert "--termite=CLUSTER_YAML" in run.stdout and "--termite-workers=N" in run.stdout


@pytest.mark.timeout(180)
def test_the_benchmark_runs(tmp_path):
    out = tmp_path / "results.json"
    done = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "pytest-plugin", "--json", str(out)],
                          cwd=SUITE.parent.parent, capture_output=True, text=True, timeout=150, env=_env())
    assert done.returncode == 0, done.stdout + done.stderr
    records = json.loads(out.read_text())["benchmarks"]["pytest-plugin"]
    assert len(records) == 8 and all(record["value"] > 0 for record in records)
    assert [record["target"] for record in records if record["target"] is not None] == [0.6, 1.0]
