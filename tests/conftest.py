import logging
import os
import sys
import time

import pytest

import termite
from termite.testing import NodeProcess

TESTS = os.path.dirname(os.path.abspath(__file__))
# Code that processes of the tests run (process bodies, servers, thunks), in
# modules pytest does not rewrite: the test process and every node it starts
# import them by name (`from migrants import ...`) from here.
NODECODE = os.path.join(TESTS, "nodecode")
sys.path.insert(0, NODECODE)
NODE_PATH = [NODECODE]


# The kernel the suite runs on is chosen when termite is imported, by TERMITE_KERNEL: "c" (the
# default where termite/_core/_kernelcore.c is built) or "python" (the reference). Run the suite, or
# the kernel-sensitive files, once with each: `TERMITE_KERNEL=python pytest ...`. Nodes the tests
# start inherit it. tests/test_kernel_parity.py compares the two directly.
def pytest_report_header(config):
    from termite._core.kernel import KERNEL

    return f"termite kernel: {KERNEL} (TERMITE_KERNEL={os.environ.get('TERMITE_KERNEL', '')!r})"


@pytest.fixture
def node():
    """A node on a background thread, stopped at teardown."""
    with termite.Node() as n:
        yield n


@pytest.fixture
def crash_log(caplog):
    """Records termite's crash log lines."""
    caplog.set_level(logging.ERROR, logger="termite")
    return caplog


@pytest.fixture
def keyfile(tmp_path):
    path = tmp_path / "cluster.key"
    termite.generate_keys(path)
    return str(path)


@pytest.fixture
def cluster(keyfile):
    """Start remote nodes with the cluster key; a local networked Node talks to them."""
    started = []

    def start(*extra):
        node = NodeProcess(
            "--keys", keyfile, "--heartbeat-timeout", "1.0", "--heartbeat-interval", "0.1", *extra, path=NODE_PATH
        )
        started.append(node)
        return node

    with termite.Node(port=0, keys=keyfile, heartbeat_timeout=1.0, heartbeat_interval=0.1) as here:
        yield here, start
    for node in started:
        node.stop()
        if node.log_tail:  # shown with a failed test's report
            print(f"--- node {node.ref} logged:", *node.log_tail, sep="\n", end="", file=sys.stderr)


METER_INTERVAL = 0.2  # seconds between load reports in the metered_pair fixture


@pytest.fixture
def metered_pair(cluster):
    """This node and two node processes B and C, connected, with a dispatcher that has heard from
    both (reports every METER_INTERVAL s): (here, b, c, start)."""
    here, start = cluster
    b, c = start(), start()
    for node in (b, c):
        here.connect(*node.ref.address)
    here.run(termite.start_dispatcher, METER_INTERVAL)
    deadline = time.monotonic() + 15
    while not (len(loads := here.run(termite.loads)) == 2 and all(load is not None for load in loads.values())):
        assert time.monotonic() < deadline, f"the dispatcher never heard from both nodes: {loads}"
        here.receive(timeout=METER_INTERVAL / 2, default=None)  # the next report
    return here, b, c, start


# Two hosts as network namespaces running sshd, for the SSH multi-host tests (tests/netns_hosts.py).
from netns_hosts import netns_hosts  # noqa: E402, F401

# tests/sample_suite is a sample project's suite that tests/test_pytest_plugin.py
# and benchmarks/pytest_plugin.py run on their own; it is not part of termite's suite.
collect_ignore = ["sample_suite"]
