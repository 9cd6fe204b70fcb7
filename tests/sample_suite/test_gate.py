"""A test that, when SAMPLE_SUITE_GATE names a folder, tells the test driving the
run which node runs it, then blocks until its node is killed (the crash test of
tests/test_pytest_plugin.py).  Without the variable it passes at once."""

import os
import time


def test_gate():
    gate = os.environ.get("SAMPLE_SUITE_GATE")
    if not gate:
        return
    # Mid-run, as the crash test means: the start of this test has had time to reach the
    # controller.  Killed within a millisecond of it, the controller can only guess which
    # test the node was on (the first it had not heard finish), and under load it guessed
    # the one before and ran this one again elsewhere.
    time.sleep(0.5)
    with open(os.path.join(gate, "started"), "w") as fifo:  # blocks until the driver reads
        fifo.write(f"{os.getppid()}\n")  # the worker's parent: its termite node
    with open(os.path.join(gate, "never")) as fifo:  # no writer ever comes: wait to be killed
        fifo.read()
