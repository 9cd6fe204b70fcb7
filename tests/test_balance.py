"""Rebalancing by migration, over real node processes: the balancer spreads opted-in CPU-bound processes.

This node (A, the test's) runs the balancer and dispatches only; B, C (and
D) are node processes.  Crunchers (tests/nodecode/balanced.py) burn CPU and
pass a safe point every 2 ms; the meters report every 0.2 s.  "Eventually
balanced" is polled with a deadline; everything else waits on messages.
"""

import functools
import time

import pytest

import termite
from termite import ANY, ChildSpec, Down, NodeRef, Pid, supervisor
from termite.testing import relay

from balanced import cruncher

INTERVAL = 0.2  # the meters' reports and the balancer's looks
WAIT = 15  # seconds: only a failing test waits this long


@pytest.fixture
def pair(metered_pair):
    return metered_pair  # conftest's: this node, B and C, and a dispatcher that heard from both


def _wait_for(ok, here, what="it"):
    deadline = time.monotonic() + WAIT
    while not (value := ok()):
        assert time.monotonic() < deadline, f"{what} never happened"
        here.receive(timeout=INTERVAL, default=None)  # the next report, or the time it takes
    return value


class Placement:
    """Where each cruncher runs, kept from what they report: their start, and each move.

    A node busy with crunchers is slow to answer calls (its loop reads its
    socket between turns), so the test listens instead of asking.
    """

    def __init__(self, here):
        self.here = here
        self.node: dict[Pid, NodeRef] = {}
        self.tags: dict[Pid, str] = {}
        self.moves: list[tuple[str, NodeRef]] = []

    def start(self, node, count, opt_in=True, tag="w"):
        pids = [self.here.spawn_on(node.ref, cruncher, self.here.pid, f"{tag}{i}", opt_in) for i in range(count)]
        for i in range(count):
            _, _, pid, where = self.here.receive(("started", f"{tag}{i}", Pid, NodeRef), timeout=WAIT)
            self.node[pid], self.tags[pid] = where, f"{tag}{i}"
        return pids

    def listen(self, seconds):
        """Take the moves reported within ``seconds``."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            msg = self.here.receive(("moved", str, Pid, NodeRef), timeout=left, default=None)
            if msg is None:
                break
            _, tag, pid, node = msg
            self.node[pid] = node
            self.moves.append((tag, node))

    def counts(self, pids, nodes):
        return [sum(1 for pid in pids if self.node[pid] == n.ref) for n in nodes]

    def even(self, pids, nodes, slack=1):
        """The counts per node, once they differ by at most ``2 * slack``."""
        deadline = time.monotonic() + WAIT
        while True:
            got = self.counts(pids, nodes)
            if max(got) - min(got) <= 2 * slack:
                return got
            assert time.monotonic() < deadline, f"never spread evenly: {got}"
            self.listen(INTERVAL)

    def stop(self, pids):
        for pid in pids:
            self.here.send(pid, "stop")


def start_balancer(here, **knobs):
    return here.run(functools.partial(termite.start_balancer, interval=INTERVAL, **knobs))


def statistics(here):
    return here.run(termite.balancer_statistics)


def test_crunchers_started_on_one_node_are_spread_evenly_and_then_left_alone(pair):
    here, b, c, _ = pair
    placement = Placement(here)
    pids = placement.start(b, 8)
    assert placement.counts(pids, (b, c)) == [8, 0]
    started = time.monotonic()
    start_balancer(here)

    spread = placement.even(pids, (b, c))
    took = time.monotonic() - started
    assert sum(spread) == 8 and min(spread) >= 3, spread
    stats = _wait_for(lambda: (got := statistics(here)).moves == len(placement.moves) and got, here, "the count")
    assert 3 <= stats.moves <= 8, stats
    assert {move.pid for move in stats.recent} <= set(pids)
    assert all((move.source, move.target) in ((b.ref, c.ref), (c.ref, b.ref)) for move in stats.recent)
    # Every move is counted in the load report of the node it went to (what the dashboard shows).
    _wait_for(lambda: sum(load.balanced_in for load in here.run(termite.loads).values()) == stats.moves, here)

    # Steady state: a few seconds of even load bring at most 2 more moves.
    settled = len(placement.moves)
    placement.listen(max(3.0, took))
    assert len(placement.moves) - settled <= 2, placement.moves[settled:]
    assert min(placement.counts(pids, (b, c))) >= 3
    placement.stop(pids)


def test_a_process_that_did_not_opt_in_never_moves_and_a_monitor_and_global_name_follow_one_that_did(pair):
    here, b, c, _ = pair
    placement = Placement(here)
    # The named one opts in first: a node's mover asks those there longest first, so it is in any move.
    named = here.spawn_on(b.ref, cruncher, here.pid, "named", True, "balance-named")
    here.receive(("started", "named", Pid, NodeRef), timeout=WAIT)
    stay = placement.start(b, 4, opt_in=False, tag="stay")
    go = placement.start(b, 3, tag="go")
    assert here.whereis_global("balance-named") == named
    watch = here.monitor(named)
    start_balancer(here)

    # Only the 4 opted-in ones can go; half the difference (8 ready + a busy core vs 0) is 4.
    _, _, _, node = here.receive(("moved", "named", named, NodeRef), timeout=WAIT)
    assert node == c.ref
    placement.listen(2.0)  # the others' moves, and any other
    assert not [tag for tag, _ in placement.moves if tag.startswith("stay")], "a process that did not opt in moved"
    assert placement.counts(stay, (b, c)) == [4, 0]

    # Its global name still names it, here and on the node it went to; a call finds it there.
    assert here.whereis_global("balance-named") == named
    here.spawn_on(c.ref, relay, here.pid, termite.whereis_global, "balance-named")
    assert here.receive(("relayed", ANY), timeout=WAIT)[1] == named
    assert here.call(named, "where", timeout=WAIT)[0] == c.ref
    # The monitor set while it was on B fires when it ends on C, and the name goes with it.
    here.send(named, "stop")
    down = here.receive(Down(watch, named, ANY), timeout=WAIT)
    assert down.reason == "normal"
    _wait_for(lambda: here.whereis_global("balance-named") is None, here, "the name's release")
    placement.stop(stay + go)


def test_the_balancer_survives_the_loss_of_a_node_and_balances_one_that_joins(pair):
    here, b, c, start = pair
    placement = Placement(here)
    pids = placement.start(b, 6)
    sup = start_balancer(here)
    balancer = here.whereis_global("termite.balancer")
    placement.even(pids, (b, c))

    here.monitor_node(c.ref)
    c.kill()
    assert here.receive(termite.NodeDown, timeout=WAIT).node == c.ref
    placement.listen(0.5)
    survivors = [pid for pid in pids if placement.node[pid] == b.ref]
    assert survivors, "every cruncher was on C"
    _wait_for(lambda: statistics(here).nodes == 1, here, "the balancer forgetting C")
    assert here.whereis_global("termite.balancer") == balancer  # the same process: it did not crash
    assert [info.pid for info in here.run(supervisor.which_children, sup)] == [balancer]

    more = placement.start(b, 6 - len(survivors), tag="more")  # B busy again, and a new node D idle
    d = start()
    here.connect(*d.ref.address)
    spread = placement.even(survivors + more, (b, d))
    assert min(spread) >= 2
    assert here.whereis_global("termite.balancer") == balancer
    placement.stop(survivors + more)


def lowest_port(loads):
    """A placement: all on one node while it is there (the imbalance the balancer undoes)."""
    return min(loads, key=lambda node: node.port)


def test_a_child_spec_with_balance_opts_its_child_in(pair):
    here, b, c, _ = pair
    placement = Placement(here)
    children = [ChildSpec(f"s{i}", cruncher, args=(here.pid, f"s{i}", False), balance=True) for i in range(6)]
    sup = here.run(functools.partial(supervisor.start, children, placement=lowest_port))
    first = min((b, c), key=lambda n: n.ref.port)
    for i in range(6):
        _, _, pid, node = here.receive(("started", f"s{i}", Pid, NodeRef), timeout=WAIT)
        assert node == first.ref
        placement.node[pid] = node
    start_balancer(here)
    pids = [info.pid for info in here.run(supervisor.which_children, sup)]
    placement.even(pids, (b, c))
    # Moved children are still the supervisor's: same pids, links intact.
    assert [info.pid for info in here.run(supervisor.which_children, sup)] == pids
    here.run(supervisor.stop, sup)


def test_balance_and_the_balancer_knobs_are_checked():
    with pytest.raises(termite.ChildSpecError, match=r"balance='yes' is not True or False"):
        ChildSpec("w", cruncher, balance="yes")
    with pytest.raises(termite.ChildSpecError, match="cannot go with the local name 'w'"):
        ChildSpec("w", cruncher, balance=True, name="w")
    with pytest.raises(termite.ChildSpecError, match="balance=True is for workers"):
        supervisor.nested("sub", []).__class__("sub", supervisor.supervise, args=([],), type="supervisor",
                                               balance=True)
    assert ChildSpec("w", cruncher, balance=True, name=("global", "w")).balance is True
    with pytest.raises(ValueError, match="window=0 is not a whole number"):
        termite.balancer_spec(window=0)
    with pytest.raises(ValueError, match="margin=-1 is not a load"):
        termite.balancer_spec(margin=-1)
    spec = termite.balancer_spec(interval=0.5)
    assert spec.name == ("global", "termite.balancer") and spec.args == (0.5, 1.0, 2, 1.0)
