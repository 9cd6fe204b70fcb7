"""Migration safety between real node processes: other code, a missing function, another Python.

The test node (this OS process) runs the processes; node B is a node process
started with tests/nodecode/other_code first on its path, so that it imports
version 2 of ``versioned`` (tests/nodecode/other_code/versioned.py) where this
node has version 1 (tests/nodecode/versioned.py).  Every refusal must reach the process as a clear
``MigrationError``, leave it running where it was, and leave B healthy: no
crash, no traceback in either node's log.
"""

import importlib
import os
import sys

import pytest

# Process bodies live in modules pytest does not rewrite (see tests/test_migration.py).
from safety_migrants import falls_back, goes
from versioned import changed, holds_a_generator, removed

import termite._move.migration as migration
from termite._move.chain import PYTHONS
from termite.testing import NodeProcess, echo

NODECODE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nodecode")  # what every node imports
OTHER_CODE = os.path.join(NODECODE, "other_code")  # version 2 of versioned.py, for B
LOCAL_CODE = os.path.join(NODECODE, "local_code")  # local_only.py, for this node only

pytestmark = [
    pytest.mark.skipif(sys.version_info[:2] not in PYTHONS, reason="live migration needs CPython 3.11 to 3.13"),
    pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning"),  # "Exception ignored" here
]


@pytest.fixture
def here_and_b(cluster, keyfile, crash_log):
    """This node and node B (a node process with other code), connected; checks that neither logged a crash."""
    here, _ = cluster
    b = NodeProcess(
        "--keys", keyfile, "--heartbeat-timeout", "1.0", "--heartbeat-interval", "0.1", path=[OTHER_CODE, NODECODE]
    )
    try:
        yield here, b, here.connect(*b.ref.address)
        crashes = [record.getMessage() for record in crash_log.records]
        assert not crashes, f"this node logged: {crashes}"
    finally:
        b.stop()


def stop_and_read_log(b: NodeProcess) -> str:
    """Stop B (SIGTERM) and return what it wrote to stderr: its log."""
    assert b.proc.poll() is None, f"node B ended (exit code {b.proc.returncode})"
    b.proc.terminate()
    b.proc.wait(10)
    log = b.logged()
    assert b.proc.returncode == 0, f"node B exited with {b.proc.returncode}:\n{log}"
    return log


def assert_no_traceback(log: str) -> None:
    for sign in ("Traceback", "Exception ignored", "Error in", "CRITICAL", " ERROR "):
        assert sign not in log, f"node B logged {sign!r}:\n{log}"


def check_b_is_healthy(here, b_node: NodeProcess, b) -> None:
    """B still runs, takes a migration of code it shares, and answers a remote spawn."""
    assert b_node.proc.poll() is None
    pid = here.spawn(goes, here.pid, b)
    assert here.receive(("moved", pid, ...), timeout=10) == ("moved", pid, b)
    here.send(pid, (here.pid, "where"))
    assert here.receive(("here", pid, ...), timeout=10) == ("here", pid, b, 1)
    server = here.spawn_on(b, echo)
    assert here.call(server, "still serving", timeout=10) == "still serving"


def check_stays_and_answers(here, pid, times: int = 2) -> None:
    """The refused process runs on this node, keeps its locals and answers every message."""
    for answered in range(1, times + 1):
        here.send(pid, (here.pid, "where"))
        assert here.receive(("here", pid, ...), timeout=10) == ("here", pid, here.ref, answered)


def refusal(here, pid, b) -> str:
    """The text of the MigrationError the process got, checked to be B's REFUSED answer."""
    _, _, text = here.receive(("refused", pid, str), timeout=10)
    prefix = f"{b} refused {pid}: MigrationError: "
    assert text.startswith(prefix), text
    return text[len(prefix):]


def test_different_code_for_the_same_function_is_refused_and_the_process_stays(here_and_b):
    here, b_node, b = here_and_b
    pid = here.spawn(changed, here.pid, b)
    reason = refusal(here, pid, b)
    assert reason.startswith("different code for function versioned.changed on this node"), reason
    assert "same version" in reason
    check_stays_and_answers(here, pid)
    check_b_is_healthy(here, b_node, b)
    log = stop_and_read_log(b_node)
    assert "different code for function versioned.changed" in log  # B's warning says why it refused
    assert_no_traceback(log)
    assert here.receive("version 2 of changed() runs", timeout=0, default=None) is None


def test_different_code_in_an_inner_frame_is_refused_and_nothing_of_it_runs_on_the_target(here_and_b):
    # holds_a_generator and _once are the same on both nodes; _inner, which it
    # awaits, differs.  B rebuilds the _once generator (a for loop's iterator)
    # before it meets _inner: refusing must not run its finally block there.
    here, b_node, b = here_and_b
    pid = here.spawn(holds_a_generator, here.pid, b)
    reason = refusal(here, pid, b)
    assert reason.startswith("different code for function versioned._inner on this node"), reason
    assert here.receive(("finally", ...), timeout=10) == ("finally", here.ref)  # once, here, as the loop ended
    check_stays_and_answers(here, pid)
    check_b_is_healthy(here, b_node, b)
    assert_no_traceback(stop_and_read_log(b_node))
    assert here.receive(("finally", ...), "version 2 of _inner() runs", timeout=0, default=None) is None


@pytest.mark.parametrize("missing", ["function", "module"])
def test_a_function_the_target_cannot_find_is_refused_and_the_process_stays(here_and_b, monkeypatch, missing):
    here, b_node, b = here_and_b
    if missing == "function":  # B's versioned.py (version 2) has no removed()
        body, name, why = removed, "versioned.removed", "Can't get attribute 'removed'"
    else:  # local_only is on this node's path only
        monkeypatch.syspath_prepend(LOCAL_CODE)
        body, name, why = importlib.import_module("local_only").wanders, "local_only.wanders", "No module named"
    pid = here.spawn(body, here.pid, b)
    reason = refusal(here, pid, b)
    assert reason.startswith(f"cannot restore here: {name} cannot be found on this node ({why}"), reason
    check_stays_and_answers(here, pid)
    check_b_is_healthy(here, b_node, b)
    assert_no_traceback(stop_and_read_log(b_node))


def test_a_continuation_from_another_python_version_is_refused_and_the_fallback_works(here_and_b, monkeypatch):
    # There is one Python here: this node's capture() says another version
    # in the continuation it sends, as a node of that version would; B runs
    # this Python.
    here, b_node, b = here_and_b
    real_capture = migration.capture
    captured = []
    mine = "{}.{}".format(*sys.version_info[:2])
    other = (3, 12) if sys.version_info[:2] != (3, 12) else (3, 13)

    def capture_as_if_on_other(coro, trap=None):
        data = real_capture(coro, trap)
        assert data[:5] == b"TMC" + bytes(sys.version_info[:2])
        captured.append(data)
        return data[:3] + bytes(other) + data[5:]

    monkeypatch.setattr(migration, "capture", capture_as_if_on_other)
    pid = here.spawn(falls_back, here.pid, b)
    reason = refusal(here, pid, b)
    assert len(captured) == 1
    assert reason.startswith(f"this continuation was captured on Python 3.{other[1]} and this node runs {mine}"), reason
    assert "same Python version on both nodes" in reason
    assert "migrate(node, fn, *args)" in reason  # what to do instead
    check_stays_and_answers(here, pid, times=1)
    # migrate(node, fn, *args) sends no continuation: it works between these nodes.
    assert here.receive(("called there", pid, ...), timeout=10) == ("called there", pid, b)
    here.send(pid, (here.pid, "where"))
    assert here.receive(("here", pid, ...), timeout=10) == ("here", pid, b, 1)
    assert len(captured) == 1
    monkeypatch.undo()  # B takes a true continuation of this Python
    check_b_is_healthy(here, b_node, b)
    log = stop_and_read_log(b_node)
    assert f"captured on Python 3.{other[1]}" in log
    assert_no_traceback(log)
