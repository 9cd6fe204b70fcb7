"""How the launcher learns that a node listens: the announcement on its stdout, read from a real pipe,
with any descriptor number (a launcher of hundreds of local nodes holds more than select.select takes)."""

import subprocess
import sys
import textwrap
import time

import pytest

from termite import NodeRef
from termite_launcher.announce import read_announcement
from terminals import cluster_file

LAUNCH = [sys.executable, "-m", "termite_launcher"]

# termite-launch, run after its process has opened 1,100 descriptors: every
# pipe it then opens to a node is numbered past 1,023.
CROWDED = textwrap.dedent(
    """
    import os, resource, runpy, sys

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    probe = os.open(os.devnull, os.O_RDONLY)
    print("next descriptor", probe, file=sys.stderr, flush=True)
    os.close(probe)
    sys.argv[0] = "termite-launch"
    runpy.run_module("termite_launcher", run_name="__main__", alter_sys=True)
    """
)

JOB = textwrap.dedent(
    """
    import json, os
    import termite

    state = json.load(open(os.environ["TERMITE_CLUSTER"]))
    with termite.Executor() as pool:
        ran = set(pool.map(lambda _: os.getpid(), range(20)))
    print("nodes", len(state["nodes"]), "ran on", len(ran))
    """
)


@pytest.mark.timeout(90)
def test_a_launcher_holding_more_than_1023_descriptors_still_sees_its_nodes_start(tmp_path):
    cluster_file(tmp_path)
    (tmp_path / "crowded.py").write_text(CROWDED)
    (tmp_path / "job.py").write_text(JOB)
    done = subprocess.run([sys.executable, "crowded.py", "cluster.yaml", "--plain", "--run", "job.py"],
                          capture_output=True, text=True, timeout=80, cwd=tmp_path)
    first = int(done.stderr.split("next descriptor ", 1)[1].split()[0])
    assert first > 1023, done.stderr  # so the nodes' pipes are past select.select's limit
    assert done.returncode == 0, done.stderr
    assert "nodes 2 ran on 2" in done.stdout, done.stdout + done.stderr


def _writer(text: str) -> subprocess.Popen:
    """A process that writes ``text`` to its stdout in one write, then stays until killed."""
    code = f"import os, time; os.write(1, {text.encode()!r}); time.sleep(30)"
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)


def test_lines_that_arrive_with_the_announcement_are_neither_lost_nor_waited_on():
    """A line before the announcement and one after it, in the same read: the announcement is seen at once."""
    proc = _writer("hello\ntermite node 127.0.0.1:7001 incarnation 1f\nafter\npart")
    others = []
    try:
        began = time.monotonic()
        ref = read_announcement(proc.stdout, 20, others.append)
        assert time.monotonic() - began < 10  # not the timeout: the announcement was already read
        assert ref == NodeRef("127.0.0.1", 7001, 0x1F)
        assert b"".join(others) == b"hello\nafter\npart"
    finally:
        proc.kill()
        proc.wait()
    assert proc.stdout.read() == b""  # nothing left behind in the stream's buffer
    proc.stdout.close()


def test_a_node_that_ends_before_announcing_or_never_announces():
    ended = subprocess.Popen([sys.executable, "-c", "print('cannot start')"], stdout=subprocess.PIPE)
    others = []
    with pytest.raises(EOFError):
        read_announcement(ended.stdout, 20, others.append)
    assert b"".join(others) == b"cannot start\n"
    ended.wait()
    ended.stdout.close()

    quiet = _writer("starting\n")
    try:
        began = time.monotonic()
        with pytest.raises(TimeoutError, match="no announcement within 0.5 s"):
            read_announcement(quiet.stdout, 0.5, others.append)
        assert 0.4 < time.monotonic() - began < 10
    finally:
        quiet.kill()
        quiet.wait()
        quiet.stdout.close()
