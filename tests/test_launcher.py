"""termite-launch, run as a user runs it: a real command, real node processes, checked by pid."""

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import termite
from terminals import TMUX, alive, cluster_file, state_until, until

ROOT = Path(__file__).resolve().parent.parent
LAUNCH = [sys.executable, "-m", "termite_launcher"]

JOB = textwrap.dedent(
    """
    import json, os, sys
    import termite

    state = json.load(open(os.environ["TERMITE_CLUSTER"]))
    with termite.Executor() as pool:
        pids = set(pool.map(lambda _: os.getpid(), range(40)))
    print("node pids", sorted(node["os_pid"] for node in state["nodes"]))
    print("ran on", sorted(pids))
    sys.exit(3)
    """
)






@pytest.fixture
def two_local(tmp_path):
    return cluster_file(tmp_path)


@contextlib.contextmanager
def _launched(cluster, cwd, *flags):
    """termite-launch CLUSTER FLAGS, once it says every node has joined; killed at the end if still running."""
    launcher = subprocess.Popen([*LAUNCH, str(cluster), *flags], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd)
    try:
        said = []
        for line in launcher.stderr:
            said.append(line)
            if "nodes up" in line:
                break
        assert said and "nodes up" in said[-1], "".join(said)
        yield launcher
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
        launcher.stdout.close()
        launcher.stderr.close()


def _numbers(line):
    return [int(x) for x in line.split("[", 1)[1].rstrip("]").split(",") if x.strip()]


def test_run_a_job_on_a_local_cluster_then_everything_stops(two_local, tmp_path):
    job = tmp_path / "job.py"
    job.write_text(JOB)
    done = subprocess.run([*LAUNCH, str(two_local), "--plain", "--run", str(job)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 3, done.stderr  # the job's own exit status
    lines = done.stdout.splitlines()
    nodes = _numbers(next(line for line in lines if line.startswith("node pids")))
    ran_on = _numbers(next(line for line in lines if line.startswith("ran on")))
    assert len(nodes) == 2 and set(ran_on) == set(nodes)
    assert any("up" in line for line in lines if not line.startswith(("node pids", "ran on")))  # plain status lines
    assert not any(alive(pid) for pid in nodes), "a node outlived the launcher"
    assert not (tmp_path / ".termite" / "cluster.json").exists()
    assert sorted((tmp_path / ".termite" / "logs" / "cluster").glob("*.log"))  # each node's log, in one place


@pytest.mark.parametrize("placed", ["", "name: jobs\nstate_dir: run/state\n"])
def test_detach_status_a_script_by_the_cluster_file_and_stop(two_local, tmp_path, placed):
    """A script finds the cluster by its yaml file, wherever the file's name: and state_dir: put its state."""
    two_local.write_text(two_local.read_text() + placed)
    started = subprocess.run([*LAUNCH, str(two_local), "--detach"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert started.returncode == 0, started.stderr
    state_file = tmp_path / ("run/state/jobs.json" if placed else ".termite/cluster.json")
    assert termite.cluster_state(two_local).state_file == state_file
    state = json.loads(state_file.read_text())
    pids = [node["os_pid"] for node in state["nodes"]]
    try:
        assert len(pids) == 2 and all(alive(pid) for pid in pids)
        status = subprocess.run([*LAUNCH, str(two_local), "--status"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert status.returncode == 0, status.stdout + status.stderr
        assert sum(" up " in f" {line} " for line in status.stdout.splitlines()) >= 2, status.stdout
        script = tmp_path / "uses.py"
        script.write_text(
            "import os, sys, termite\n"
            "with termite.Executor(cluster=sys.argv[1]) as pool:\n"
            "    print(sorted(set(pool.map(lambda _: os.getpid(), range(20)))))\n"
        )
        used = subprocess.run([sys.executable, str(script), str(two_local)], capture_output=True, text=True, timeout=60)
        assert used.returncode == 0, used.stderr
        assert set(_numbers(used.stdout.strip().replace("[", "x[", 1))) <= set(pids)
    finally:
        stopped = subprocess.run([*LAUNCH, str(two_local), "--stop"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert stopped.returncode == 0 and "stopped 2 nodes" in stopped.stderr, stopped.stderr
    assert not any(alive(pid) for pid in pids)
    gone = subprocess.run([*LAUNCH, str(two_local), "--status"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert gone.returncode == 1 and "not running" in gone.stderr


def test_sigterm_stops_every_node_and_frees_their_ports(two_local, tmp_path):
    with _launched(two_local, tmp_path, "--plain") as launcher:
        state = json.loads((tmp_path / ".termite" / "cluster.json").read_text())
        launcher.send_signal(signal.SIGTERM)
        assert launcher.wait(30) == 143  # 128 + SIGTERM, as the shell has it
    assert not any(alive(node["os_pid"]) for node in state["nodes"])
    import socket

    for node in state["nodes"]:  # the ports are free again
        host, port = node["address"].rsplit(":", 1)
        with socket.socket() as probe:
            probe.bind((host, int(port)))


def test_a_host_that_cannot_start_nodes_is_named_with_its_error_and_nothing_is_left(tmp_path):
    bad = cluster_file(tmp_path, [{"address": "localhost", "cores": 1},
                                  {"address": "127.0.0.1", "label": "broken", "cores": 1, "python": "/bin/false"}])
    (tmp_path / "nothing.py").write_text("")
    done = subprocess.run([*LAUNCH, str(bad), "--plain", "--run", "nothing.py"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 1
    assert "host broken: a node did not start: the node exited with status 1" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / ".termite" / "cluster.json").exists()


def test_bad_config_gets_a_clear_error(tmp_path):
    bad = tmp_path / "cluster.yaml"
    bad.write_text("hosts:\n  - address: localhost\n    cores: many\n")
    done = subprocess.run([*LAUNCH, str(bad)], capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert done.returncode == 2
    assert "cluster.yaml:3" in done.stderr and "cores" in done.stderr and "many" in done.stderr






@pytest.mark.skipif(not shutil.which("tmux"), reason="tmux is not installed")
def test_in_a_terminal_the_live_dashboard_shows_the_nodes_and_ctrl_c_stops_them(two_local, tmp_path):
    session = f"termite-test-{os.getpid()}"
    # The PYTHONPATH given: a tmux server started before (by another test) has an environment of its own.
    python = f"env PYTHONPATH={os.environ.get('PYTHONPATH', '')} {sys.executable}"
    command = f"{python} -m termite_launcher {two_local}; echo EXITED $?; sleep 60"
    subprocess.run([*TMUX, "new-session", "-d", "-s", session, "-x", "120", "-y", "40", "-c", str(tmp_path), command], check=True)
    try:
        screen = until(session, lambda text: text.count(" up ") >= 2 and "cpu" in text)
        assert "cluster" in screen and "events" in screen
        state = json.loads((tmp_path / ".termite" / "cluster.json").read_text())
        for node in state["nodes"]:
            assert node["address"] in screen
        subprocess.run([*TMUX, "send-keys", "-t", session, "C-c"], check=True)
        screen = until(session, lambda text: "EXITED" in text)
        assert "EXITED 130" in screen  # 128 + SIGINT, as the shell has it
    finally:
        subprocess.run([*TMUX, "kill-session", "-t", session], capture_output=True)
    assert not any(alive(node["os_pid"]) for node in state["nodes"])


ACROSS = textwrap.dedent(
    """
    import os, sys
    import termite
    from termite.testing import echo, relay

    h1, h2 = sys.argv[2], sys.argv[3]
    with termite.Executor(cluster=sys.argv[1]) as pool:
        pids = set(pool.map(lambda _: os.getpid(), range(60)))
        node = pool.node
        a = next(r for r in node.run(termite.nodes) if r.host == h1)
        b = next(r for r in node.run(termite.nodes) if r.host == h2)
        server = node.spawn_on(b, echo)
        node.spawn_on(a, relay, node.pid, termite.call, server, "across the link", 5)
        print("relayed", node.receive(("relayed", str), timeout=10)[1])
    print("ran on", sorted(pids))
    """
)


@pytest.mark.timeout(120)
def test_one_cluster_over_two_ssh_hosts_and_a_host_whose_nodes_die_shows_down(netns_hosts, tmp_path):
    import psutil

    hosts = netns_hosts.hosts
    cluster = cluster_file(tmp_path, [_over_ssh(netns_hosts, host) for host in hosts])
    with _launched(cluster, tmp_path, "--plain", "--every", "0.3") as launcher:
        state = json.loads((tmp_path / ".termite" / "cluster.json").read_text())
        by_host = {host.address: [n for n in state["nodes"] if n["host"] == host.address] for host in hosts}
        assert [len(nodes) for nodes in by_host.values()] == [2, 2]
        job = tmp_path / "across.py"
        job.write_text(ACROSS)
        done = subprocess.run([sys.executable, str(job), str(cluster), hosts[0].address, hosts[1].address],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "relayed across the link" in done.stdout  # a process on h1 called one on h2, over the veth link
        ran_on = set(_numbers(next(line for line in done.stdout.splitlines() if line.startswith("ran on"))))
        assert ran_on == {n["os_pid"] for n in state["nodes"]}
        for node in by_host[hosts[1].address]:  # kill h2's nodes
            os.kill(node["os_pid"], signal.SIGKILL)
        down = {node["address"] for node in by_host[hosts[1].address]}
        seen = set()
        deadline = time.monotonic() + 20
        for line in launcher.stdout:
            seen |= {address for address in down if address in line and " down" in line}
            if seen == down or time.monotonic() > deadline:
                break
        assert seen == down, "the dashboard did not show h2's nodes down"
        launcher.send_signal(signal.SIGTERM)
        assert launcher.wait(30) == 143  # 128 + SIGTERM, as the shell has it
    for host in hosts:  # nothing left but sshd on either host
        assert host.pids() <= {host.sshd_pid} | {p.pid for p in psutil.process_iter() if p.pid in host.pids() and "sshd" in p.name()}
    assert not [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] and p.info["cmdline"][0] == "ssh"
                and any(host.address in part for part in p.info["cmdline"] for host in hosts)]


# -- the launcher supervises its nodes (issue 16) ------------------------------------

def _over_ssh(netns_hosts, host) -> dict:
    """cluster.yaml's entry for a host of the netns_hosts fixture: 2 nodes, reached over ssh as root."""
    return {"address": host.address, "label": host.name, "cores": 2, "python": sys.executable,
            "ssh": {"user": "root", "key": str(netns_hosts.client_key),
                    "options": [f"UserKnownHostsFile={netns_hosts.known_hosts}", "ConnectTimeout=5"]}}


def _supervised(folder: Path, python=sys.executable, cores: int = 2, intensity: int = 1) -> Path:
    """Local nodes restarted at once after an exit, given up on past ``intensity`` exits a minute."""
    return cluster_file(folder, [{"address": "localhost", "cores": cores, "python": str(python)}],
                        restart={"intensity": intensity, "period": 60, "backoff": 0.2})

USES = (
    "import os, sys, termite\n"
    "with termite.Executor(cluster=sys.argv[1]) as pool:\n"
    "    print(sorted(set(pool.map(lambda _: os.getpid(), range(40)))))\n"
)


def _plain_until(launcher, test, timeout: float = 20.0) -> str:
    """The first plain status line of the launcher for which ``test(line)`` holds."""
    deadline = time.monotonic() + timeout
    for line in launcher.stdout:  # a line every --every seconds, so the deadline is checked often
        if test(line):
            return line
        assert time.monotonic() < deadline, "the dashboard never showed what was expected"
    raise AssertionError("the launcher ended")


def test_a_node_killed_with_sigkill_is_restarted_and_used_then_past_the_intensity_it_stays_down(tmp_path):
    cluster = _supervised(tmp_path)
    state_file = tmp_path / ".termite" / "cluster.json"
    with _launched(cluster, tmp_path, "--plain", "--every", "0.1") as launcher:
        first = json.loads(state_file.read_text())
        victim, other = first["nodes"]
        os.kill(victim["os_pid"], signal.SIGKILL)

        line = _plain_until(launcher, lambda line: victim["address"] in line and " down " in line)
        assert "why=killed by signal 9 (SIGKILL); restarting in 0.2 s" in line, line  # at once, not noconnection
        state = state_until(state_file, lambda s: any(n["restarts"] == 1 for n in s["nodes"]))
        again = next(n for n in state["nodes"] if n["restarts"] == 1)
        assert again["os_pid"] != victim["os_pid"] and alive(again["os_pid"]) and not alive(victim["os_pid"])
        assert again["label"] == "localhost" and again["address"] != victim["address"]  # a new port
        assert {n["os_pid"] for n in state["nodes"]} == {again["os_pid"], other["os_pid"]} and state["down"] == []
        line = _plain_until(launcher, lambda line: again["address"] in line and " up " in line)
        assert f"pid={again['os_pid']}" in line and "restarts=1" in line, line

        script = tmp_path / "uses.py"
        script.write_text(USES)
        used = subprocess.run([sys.executable, str(script), str(cluster)], capture_output=True, text=True, timeout=30)
        assert used.returncode == 0, used.stderr
        assert set(_numbers(used.stdout.strip().replace("[", "x[", 1))) == {again["os_pid"], other["os_pid"]}

        os.kill(again["os_pid"], signal.SIGKILL)  # a second exit within the period: past intensity 1
        line = _plain_until(launcher, lambda line: again["address"] in line and " failed " in line)
        assert "restarts=1 why=killed by signal 9 (SIGKILL); gave up: 2 exits within 60 s" in line, line
        state = state_until(state_file, lambda s: s["down"])
        assert [n["os_pid"] for n in state["nodes"]] == [other["os_pid"]]  # scripts use only the one that runs
        (down,) = state["down"]
        assert down["address"] == again["address"] and "gave up" in down["reason"]
        total = _plain_until(launcher, lambda line: " total " in line)
        assert "up=1/2" in total and total.rstrip().endswith("failed=1"), total
        assert len([p for p in _children(launcher.pid) if "termite.node" in " ".join(p.cmdline())]) == 1
        status = subprocess.run([*LAUNCH, str(cluster), "--status"], capture_output=True, text=True, timeout=30,
                                cwd=tmp_path)
        assert status.returncode == 1, status.stdout + status.stderr  # not every node runs
        assert re.search(rf"{other['address']} up .* restarts=0$", status.stdout, re.M), status.stdout
        assert re.search(rf"{again['address']} failed pid={again['os_pid']} .* restarts=1 why=killed by signal 9 "
                         r"\(SIGKILL\); gave up: 2 exits within 60 s", status.stdout, re.M), status.stdout
        launcher.send_signal(signal.SIGTERM)
        assert launcher.wait(30) == 143  # 128 + SIGTERM, as the shell has it
        stderr = launcher.stderr.read()
    assert f"node {victim['address']} killed by signal 9 (SIGKILL); restarting in 0.2 s" in stderr, stderr
    assert f"node {victim['address']} restarted as {again['address']} (pid {again['os_pid']})" in stderr, stderr
    assert not alive(other["os_pid"]) and not state_file.exists()


def _children(pid):
    import psutil

    return psutil.Process(pid).children()


FLAKY = """#!/bin/sh
# A node's python that starts it twice, then cannot (as a host whose disk filled up).
n=$(cat "$0.count" 2>/dev/null || echo 0)
echo $((n + 1)) > "$0.count"
echo "flaky: start $((n + 1))" >&2
if [ "$n" -ge 2 ]; then echo "flaky: cannot start: no space left on device" >&2; exit 1; fi
exec {python} "$@"
"""


def test_the_dashboard_shows_why_a_node_ended_counts_its_restarts_and_says_why_it_gave_up(tmp_path):
    """The launcher's own parts, in this process: real nodes, the supervisor, the view rendered as in test_dashboard."""
    import io
    import queue

    from rich.console import Console

    from termite_launcher.cluster import Cluster, launcher_host
    from termite_launcher.config import load
    from termite_launcher.dashboard import ClusterView

    flaky = tmp_path / "flaky.sh"
    flaky.write_text(FLAKY.format(python=sys.executable))
    flaky.chmod(0o755)
    config = load(_supervised(tmp_path, flaky, cores=1, intensity=2))
    cluster = Cluster(config)
    view = ClusterView(config.name, suspect_after=1.0, unresponsive_after=2.0)
    news: queue.SimpleQueue = queue.SimpleQueue()

    def next_news(kind):
        item = news.get(timeout=20)  # the supervisor tells at once: no polling
        assert item.kind == kind, item
        item.show(view, time.monotonic())
        console = Console(width=160, record=True, color_system=None, force_terminal=False, file=io.StringIO())
        console.print(view.renderable(time.monotonic()))
        return item, console.export_text()

    cluster.start()
    try:
        with termite.Node(host=launcher_host(config), port=0, keys=str(config.keys)) as here:
            cluster.joined(here, 10)
            (node,) = cluster.nodes
            first, first_pid = node.ref, node.os_pid
            view.expect(first, node.label, first_pid, time.monotonic())
            cluster.supervise(here, news.put)

            os.kill(first_pid, signal.SIGKILL)
            _, screen = next_news("exited")
            said = f"↳ {first.host}:{first.port} (localhost) down: killed by signal 9 (SIGKILL); restarting in 0.2 s"
            assert said in screen, screen

            item, screen = next_news("restarted")
            assert (item.node, item.new, item.os_pid) == (first, node.ref, node.os_pid) and node.os_pid != first_pid
            row = next(line for line in screen.splitlines() if f"{node.ref.host}:{node.ref.port}" in line and "↻" in line)
            assert row.split()[2:5] == [str(node.os_pid), "starting", "↻1"], screen
            assert "down:" not in screen

            second = node.ref
            here.spawn_on(second, os._exit, 1)  # the node's interpreter exits with status 1
            item, screen = next_news("exited")
            assert f"↳ {second.host}:{second.port} (localhost) down: exited with status 1; restarting in 0.4 s" in screen
            assert item.log_tail[-1] == "flaky: start 2"  # the node's last log lines come with the news

            item, screen = next_news("gave_up")  # the third start fails: two restarts in 60 s were the most
            assert item.log_tail[-2:] == ("flaky: start 3", "flaky: cannot start: no space left on device")
            assert "no space left on device" in item.text
            row = next(line for line in screen.splitlines() if f"{second.host}:{second.port}" in line and "↻" in line)
            assert row.split()[2:5] == [str(node.os_pid), "failed", "↻1"], screen
            assert (f"↳ {second.host}:{second.port} (localhost) failed: did not start again: "
                    "the node exited with status 1; gave up: 3 exits within 60 s") in screen, screen
            assert screen.splitlines()[0].startswith("termite cluster  0/1 up, 1 failed")
            assert (tmp_path / "flaky.sh.count").read_text().strip() == "3"  # and it was not tried again
    finally:
        cluster.stop()


@contextlib.contextmanager
def _supervised_over_ssh(netns_hosts, tmp_path):
    """The first test host's nodes over ssh, each restarted once a minute at most, 0.2 s after its
    end, launched with a plain dashboard line every 0.1 s: (cluster file, state file, launcher, nodes)."""
    h1 = netns_hosts.hosts[0]
    cluster = cluster_file(tmp_path, [_over_ssh(netns_hosts, h1)], restart={"intensity": 1, "period": 60, "backoff": 0.2})
    state_file = tmp_path / ".termite" / "cluster.json"
    with _launched(cluster, tmp_path, "--plain", "--every", "0.1") as launcher:
        yield cluster, state_file, launcher, json.loads(state_file.read_text())["nodes"]


@pytest.mark.timeout(120)
def test_a_remote_node_killed_or_cut_off_is_restarted_over_ssh_and_used(netns_hosts, tmp_path):
    h1 = netns_hosts.hosts[0]
    with _supervised_over_ssh(netns_hosts, tmp_path) as (cluster, state_file, launcher, (victim, other)):
        assert victim["remote"] and victim["os_pid"] in h1.pids()  # the hosts share this machine's pids
        os.kill(victim["os_pid"], signal.SIGKILL)
        line = _plain_until(launcher, lambda line: victim["address"] in line and " down " in line)
        assert "why=killed by signal 9 (SIGKILL); restarting in 0.2 s" in line, line  # told by the ssh session's end
        state = state_until(state_file, lambda s: any(n["restarts"] == 1 for n in s["nodes"]), timeout=30)
        again = next(n for n in state["nodes"] if n["restarts"] == 1)
        assert again["remote"] and again["host"] == h1.address and again["os_pid"] in h1.pids()
        assert again["os_pid"] != victim["os_pid"] and not alive(victim["os_pid"])
        _plain_until(launcher, lambda line: again["address"] in line and " up " in line and "restarts=1" in line)
        script = tmp_path / "uses.py"
        script.write_text(USES)
        used = subprocess.run([sys.executable, str(script), str(cluster)], capture_output=True, text=True, timeout=60)
        assert used.returncode == 0, used.stderr
        assert set(_numbers(used.stdout.strip().replace("[", "x[", 1))) == {again["os_pid"], other["os_pid"]}

        # A node that stops answering while its ssh session lasts is lost by its connection: the launcher
        # ends the session (a stopped process ignores SIGTERM: SIGKILL by pid, 2 s later) and restarts it.
        os.kill(other["os_pid"], signal.SIGSTOP)
        line = _plain_until(launcher, lambda line: other["address"] in line and "why=lost its connection" in line)
        assert "while its ssh session lasted, so the launcher ended it; restarting in 0.2 s" in line, line
        state = state_until(state_file, lambda s: all(n["restarts"] == 1 for n in s["nodes"]) and len(s["nodes"]) == 2,
                             timeout=40)
        renewed = next(n for n in state["nodes"] if n["os_pid"] != again["os_pid"])
        assert renewed["os_pid"] != other["os_pid"] and not alive(other["os_pid"])
        launcher.send_signal(signal.SIGTERM)
        assert launcher.wait(30) == 143  # 128 + SIGTERM, as the shell has it
    assert not any(alive(pid) for pid in (again["os_pid"], renewed["os_pid"], other["os_pid"]))
    assert not [pid for pid in h1.pids() if "termite.node" in _cmdline(pid)]


@pytest.mark.timeout(120)
def test_a_remote_node_killed_while_its_ssh_session_lags_is_told_by_that_session_not_as_lost(netns_hosts, tmp_path):
    # The node's connection closes as it dies; its status comes later, with its ssh session's end.
    # A NodeDown that came first showed the node down with "noconnection", and the launcher took it
    # for one cut off while its session lasted: it said so, and ended a session that was ending.
    import psutil

    with _supervised_over_ssh(netns_hosts, tmp_path) as (_, state_file, launcher, (victim, _)):
        sshd = next(p for p in psutil.Process(victim["os_pid"]).parents() if p.name() == "sshd")
        sshd.suspend()  # the session's end waits for it
        try:
            os.kill(victim["os_pid"], signal.SIGKILL)
            time.sleep(0.5)  # the lag under test: the node's connection has closed meanwhile
        finally:
            sshd.resume()
        line = _plain_until(launcher, lambda line: victim["address"] in line and " down " in line)
        assert "why=killed by signal 9 (SIGKILL); restarting in 0.2 s" in line, line
        state_until(state_file, lambda s: any(n["restarts"] == 1 for n in s["nodes"]), timeout=30)
        launcher.send_signal(signal.SIGTERM)
        assert launcher.wait(30) == 143


@pytest.mark.timeout(120)
def test_two_clusters_of_one_name_launched_to_one_host_keep_their_own_key_files_there(netns_hosts, tmp_path):
    # Two checkouts' cluster.yaml, both named "cluster", launched to the same host and account: the
    # second wrote its key over the first's there, so the first's restarted node could not join it.
    h1 = netns_hosts.hosts[0]
    folders = [tmp_path / "a", tmp_path / "b"]
    files = []
    for folder in folders:
        folder.mkdir()
        files.append(cluster_file(folder, [_over_ssh(netns_hosts, h1)], restart={"intensity": 1, "period": 60, "backoff": 0.2}))
    with _launched(files[0], folders[0], "--plain", "--every", "0.1") as first, \
            _launched(files[1], folders[1], "--plain", "--every", "0.1"):
        state_file = folders[0] / ".termite" / "cluster.json"
        victim = json.loads(state_file.read_text())["nodes"][0]
        os.kill(victim["os_pid"], signal.SIGKILL)
        state = state_until(state_file, lambda s: any(n["restarts"] == 1 for n in s["nodes"]), timeout=30)
        again = next(n for n in state["nodes"] if n["restarts"] == 1)
        _plain_until(first, lambda line: again["address"] in line and " up " in line and "restarts=1" in line)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
    except OSError:  # it ended meanwhile
        return ""


def test_a_detached_cluster_is_supervised_in_the_background_and_stop_ends_that_launcher_first(two_local, tmp_path):
    two_local.write_text(two_local.read_text() + "restart: {intensity: 2, period: 60, backoff: 0.1}\n")
    started = subprocess.run([*LAUNCH, str(two_local), "--detach"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert started.returncode == 0, started.stderr
    state_file = tmp_path / ".termite" / "cluster.json"
    state = json.loads(state_file.read_text())
    launcher, (victim, other) = state["launcher_pid"], state["nodes"]
    try:
        assert alive(launcher) and f"launcher pid {launcher} supervises it" in started.stderr, started.stderr
        os.kill(victim["os_pid"], signal.SIGKILL)
        state = state_until(state_file, lambda s: any(n["restarts"] == 1 for n in s["nodes"]))
        again = next(n for n in state["nodes"] if n["restarts"] == 1)
        assert again["os_pid"] != victim["os_pid"] and alive(again["os_pid"])
        script = tmp_path / "uses.py"
        script.write_text(USES)
        used = subprocess.run([sys.executable, str(script), str(two_local)], capture_output=True, text=True, timeout=30)
        assert used.returncode == 0, used.stderr
        assert set(_numbers(used.stdout.strip().replace("[", "x[", 1))) == {again["os_pid"], other["os_pid"]}
    finally:
        stopped = subprocess.run([*LAUNCH, str(two_local), "--stop"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert stopped.returncode == 0 and "stopped 2 nodes" in stopped.stderr, stopped.stderr
    assert not any(alive(pid) for pid in (launcher, again["os_pid"], other["os_pid"])) and not state_file.exists()
    log = (tmp_path / ".termite" / "logs" / "cluster" / "launcher.log").read_text()
    assert f"node {victim['address']} killed by signal 9 (SIGKILL); restarting in 0.1 s" in log, log
    assert f"restarted as {again['address']} (pid {again['os_pid']})" in log and "stopping every node" in log, log
