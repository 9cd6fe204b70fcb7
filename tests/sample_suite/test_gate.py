"""A test that, when SAMPLE_SUITE_GATE names a folder, tells the test driving the
run which node runs it, then blocks until its node is killed (the crash test of
tests/test_pytest_plugin.py).  Without the variable it passes at once."""

import os


def test_gate():
    gate = os.environ.get("SAMPLE_SUITE_GATE")
    if not gate:
        return
    from termite_launcher.pytest_worker import node_pid

    # The controller's word: which node this worker runs for (a worker of a local node
    # may start before its node is up).  By then it has this test's start too, or will
    # read it before the worker's end, which the node's takes along.
    pid = node_pid(timeout=60)
    assert pid is not None, "the controller never said which node this worker runs for"
    with open(os.path.join(gate, "started"), "w") as fifo:  # blocks until the driver reads
        fifo.write(f"{pid}\n")
    with open(os.path.join(gate, "never")) as fifo:  # no writer ever comes: wait to be killed
        fifo.read()
