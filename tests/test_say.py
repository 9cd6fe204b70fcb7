"""termite.say: a line printed on the cluster's console from any process of any node (termite/console.py).

Real nodes throughout: the launcher's console as ``termite-launch`` runs it,
the console started on a node the way the launcher starts it, and nodes with
no console at all, which print on their own stderr.
"""

import contextlib
import io
import os
import queue
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from rich.console import Console

import termite
from termite.console import CONSOLE, Said, start_console
from termite_launcher.dashboard import ClusterView

NODECODE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nodecode")  # what the nodes import

import sayers

LAUNCH = [sys.executable, "-m", "termite_launcher"]


def _lines(stream, into: queue.SimpleQueue) -> None:
    for line in stream:
        into.put(line.rstrip("\n"))
    into.put(None)


def _next(lines: queue.SimpleQueue, test, deadline: float, seen: list) -> str:
    """The next line for which ``test(line)`` holds (every line read is kept in ``seen``)."""
    while True:
        line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
        assert line is not None, "the launcher ended:\n" + "\n".join(seen)
        seen.append(line)
        if test(line):
            return line


@contextlib.contextmanager
def _launcher(cluster, cwd):
    """``termite-launch CLUSTER --plain``, its stdout and stderr lines on queues; stopped by SIGTERM at the end."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [NODECODE, os.environ.get("PYTHONPATH")])))
    launcher = subprocess.Popen([*LAUNCH, str(cluster), "--plain", "--every", "0.5"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd=cwd, env=env)
    out, err = queue.SimpleQueue(), queue.SimpleQueue()
    readers = [threading.Thread(target=_lines, args=(launcher.stdout, out), daemon=True),
               threading.Thread(target=_lines, args=(launcher.stderr, err), daemon=True)]
    for reader in readers:
        reader.start()
    try:
        yield launcher, out, err
    finally:
        if launcher.poll() is None:
            launcher.send_signal(signal.SIGTERM)  # it stops every node it started
            try:
                launcher.wait(30)
            except subprocess.TimeoutExpired:
                launcher.kill()
                launcher.wait()
        for reader in readers:
            reader.join(10)


def _check_in_order(lines: list[str], senders: dict) -> None:
    """``lines`` are "[node/serial] label i": each sender's (by label) 0..count-1 in order, under its pid."""
    got = {}
    for line in lines:
        prefix, label, number = re.fullmatch(r"(\[\S+\]) (\S+) (\d+)", line).groups()
        got.setdefault(label, []).append(int(number))
        pid = senders[label][0]
        assert prefix == f"[{pid.node}/{pid.serial}]", line
    assert got == {label: list(range(count)) for label, (_, count) in senders.items()}


@pytest.mark.timeout(120)
def test_processes_on_two_nodes_say_through_the_launchers_console_in_order(tmp_path):
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(textwrap.dedent("""
        hosts:
          - address: localhost
            cores: 2
        heartbeat_timeout: 2.0
        heartbeat_interval: 0.2
        meter_interval: 0.2
        """))
    with _launcher(cluster, tmp_path) as (launcher, out, err):
        seen = []
        deadline = time.monotonic() + 60
        _next(out, lambda line: " total " in line, deadline, seen)  # it watches the cluster
        with termite.Executor(cluster=str(cluster)) as pool:
            here = pool.node
            a, b = here.run(termite.nodes)
            for node in (a, b):  # the launcher claims the console's name as it starts watching
                here.spawn_on(node, sayers.console_known, 20, here.pid)
            assert {here.receive(("console", termite.NodeRef, bool), timeout=30) for _ in (a, b)} == {
                ("console", a, True), ("console", b, True)}
            pids = {label: here.spawn_on(node, sayers.say_lines, label, 50, here.pid) for label, node in
                    (("alpha", a), ("beta", b))}
            for _ in pids:
                here.receive(("said", str, termite.Pid), timeout=30)
            said = [_next(out, lambda line: line.startswith("["), deadline, seen) for _ in range(100)]
            _check_in_order(said, {label: (pid, 50) for label, pid in pids.items()})
            # a job's thunks say from their nodes' worker threads: under each node's runner, in order there
            list(pool.map(termite.say, ["job"] * 20, range(20), chunksize=5))
            thunks = [_next(out, lambda line: line.startswith("["), deadline, seen) for _ in range(20)]
        by_node = {}
        for line in thunks:
            prefix, label, number = line.split()
            assert prefix in (f"[{a}/2]", f"[{b}/2]") and label == "job", line
            by_node.setdefault(prefix, []).append(int(number))
        assert sorted(n for numbers in by_node.values() for n in numbers) == list(range(20))
        assert all(numbers == sorted(numbers) for numbers in by_node.values()), by_node
    # none of it went to the nodes' own stderr (their logs)
    logs = "".join(path.read_text() for path in (tmp_path / ".termite" / "logs").rglob("*.log"))
    assert "alpha 0" not in logs and "beta 49" not in logs and "job" not in logs


def test_the_console_as_the_launcher_starts_it_gets_every_line_and_the_events_pane_shows_them(cluster):
    here, start = cluster
    b, c = start(), start()
    for node in (b, c):
        here.connect(*node.ref.address)
    lines: queue.SimpleQueue = queue.SimpleQueue()
    console = here.run(start_console, lines.put)  # as termite-launch does, on its own node
    assert here.whereis_global(CONSOLE) == console
    pids = {label: here.spawn_on(node.ref, sayers.say_lines, label, 50, here.pid)
            for label, node in (("bee", b), ("sea", c))}
    for _ in pids:
        here.receive(("said", str, termite.Pid), timeout=30)
    said = [lines.get(timeout=30) for _ in range(100)]
    assert all(isinstance(line, Said) for line in said)
    _check_in_order([str(line) for line in said], {label: (pid, 50) for label, pid in pids.items()})

    view = ClusterView("real", suspect_after=5, unresponsive_after=10)
    for line in said:
        view.said(line, at=1.0)
    out = Console(width=120, record=True, color_system=None, force_terminal=False, file=io.StringIO())
    out.print(view.renderable(2.0))
    pane = [line for line in out.export_text().splitlines() if line.startswith("│")]
    last = said[-8:]  # the pane shows the newest eight
    assert [line.split(None, 3)[3].rstrip(" │") for line in pane] == [str(line) for line in last]
    assert all(line.split()[2] == "said" for line in pane)
    assert [str(e).split(" ", 2)[2] for e in view.events()] == [str(line) for line in said[-50:]]

    # A thunk is in no process: its lines come through its node, under the node's runner.
    with termite.Executor(node=here) as pool:
        list(pool.map(termite.say, ["one", "two", "three"], ["thunk"] * 3, chunksize=3))
    thunk = [str(lines.get(timeout=30)) for _ in range(3)]
    runner = re.fullmatch(r"\[(\S+)/2\] one thunk", thunk[0])
    assert runner and runner.group(1) in (str(b.ref), str(c.ref)), thunk
    assert thunk[1:] == [f"[{runner.group(1)}/2] two thunk", f"[{runner.group(1)}/2] three thunk"]
    assert lines.empty()


def test_a_node_with_no_console_says_on_its_own_stderr_with_the_same_prefix(cluster):
    here, start = cluster
    b = start()
    here.connect(*b.ref.address)
    pid = here.spawn_on(b.ref, sayers.say_lines, "alone", 3, here.pid)
    here.receive(("said", "alone", termite.Pid), timeout=30)
    b.stop()
    logged = [line for line in b.logged().splitlines() if "alone" in line]
    assert logged == [f"[{pid.node}/{pid.serial}] alone {i}" for i in range(3)]


def test_a_plain_script_says_on_its_stderr(tmp_path):
    script = tmp_path / "plain.py"
    script.write_text(textwrap.dedent("""
        import os, termite

        async def main():
            termite.say("in", "a", "process", sep="_")
            termite.say("two\\nlines")
            return termite.self()

        pid = termite.run(main)
        print(pid.node, pid.serial)
        termite.say("outside", 1)
        print(os.getpid())
        """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    (node, serial), (os_pid,) = [line.split() for line in done.stdout.splitlines()]
    assert done.stderr.splitlines() == [
        f"[{node}/{serial}] in_a_process",
        f"[{node}/{serial}] two",
        f"[{node}/{serial}] lines",
        f"[{os.uname().nodename} pid {os_pid}] outside 1",
    ]


def test_say_refuses_a_separator_that_is_not_a_str():
    with pytest.raises(TypeError, match="sep must be a str"):
        termite.say("a", sep=1)


def test_the_console_drops_what_is_not_a_line_said(cluster, caplog):
    node, _ = cluster
    lines: queue.SimpleQueue = queue.SimpleQueue()
    console = node.run(start_console, lines.put)
    node.send(console, ("say", "not a pid", "text"))
    node.send(console, "hello")
    node.run(_say_here, "after", "them")
    assert str(lines.get(timeout=10)).endswith("] after them")
    assert lines.empty()
    assert node.process_info(console).mailbox == 0
    assert [r.getMessage()[:52] for r in caplog.records if r.name == "termite.console"] == [
        "the console dropped a message it does not understand"] * 2


async def _say_here(*args):
    termite.say(*args)
