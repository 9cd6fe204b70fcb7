"""Supervisors that place children by load, and fail over when a child's node is lost, over real node processes.

This node (A, the test's, dispatching only) supervises; B and C are node
processes.  Children report their starts (tests/nodecode/supervised.py), so
the tests wait on messages; the meters report every 0.2 s.
"""

import functools
import time

import pytest

import termite
from termite import ANY, ChildSpec, Down, NodeRef, Pid, supervisor
from termite.testing import relay

from supervised import worker
from workloads import hog

WAIT = 10  # seconds: only a failing test waits this long


@pytest.fixture
def three(metered_pair):
    """This node and two node processes B and C, connected, with a dispatcher that heard from both."""
    here, b, c, _ = metered_pair
    return here, b, c


def _wait_for_loads(here, ok):
    """Return the dispatcher's loads once ``ok(loads)`` holds (reports come every 0.2 s)."""
    deadline = time.monotonic() + WAIT
    while not ok(loads := here.run(termite.loads)):
        assert time.monotonic() < deadline, f"the loads never showed it: {loads}"
        here.receive(timeout=0.1, default=None)  # the next report
    return loads


def child(here, tag, **kw):
    return ChildSpec(tag, worker, args=(here.pid, tag), **kw)


def started(here, tag):
    """(pid, node) of the child ``tag`` that has just (re)started."""
    _, _, pid, node = here.receive(("started", tag, Pid, NodeRef), timeout=WAIT)
    return pid, node


def lose(here, node):
    """SIGKILL ``node``'s OS process; return once this node has declared it down."""
    here.monitor_node(node.ref)
    node.kill()
    assert here.receive(termite.NodeDown, timeout=WAIT).node == node.ref


def busiest(loads):
    """A placement function: the node with the highest load."""
    return max(loads, key=lambda node: loads[node].value)


def lowest_port(loads):
    """A placement function that always picks one node while it is there."""
    return min(loads, key=lambda node: node.port)


def test_least_loaded_places_on_the_idle_node_at_start_and_at_restart(three):
    here, b, c = three
    for _ in range(2):
        here.spawn_on(c.ref, hog, 10.0)  # C: two CPU-bound processes
    _wait_for_loads(here, lambda loads: loads[c.ref].value >= loads[b.ref].value + 1)

    sup = here.run(supervisor.start, [child(here, "x", node=termite.LEAST_LOADED),
                                      child(here, "y", node=termite.LEAST_LOADED)])
    x, x_node = started(here, "x")
    y, y_node = started(here, "y")
    assert (x_node, y_node) == (b.ref, b.ref), "a child was placed on the busy node"

    here.send(x, "crash")  # a restart asks the meters again
    x2, x2_node = started(here, "x")
    assert x2 != x and x2_node == b.ref

    # A function of the loads places too: here, perversely, on the busiest node.
    other = here.run(supervisor.start, [child(here, "z")], "one_for_one", 3, 5.0, busiest)
    assert started(here, "z")[1] == c.ref
    for s in (sup, other):
        here.run(supervisor.stop, s)


def test_spread_places_round_robin_over_the_connected_nodes(three):
    here, b, c = three
    sup = here.run(functools.partial(supervisor.start, [child(here, tag) for tag in "pqrs"], placement="spread"))
    placed = [started(here, tag)[1] for tag in "pqrs"]
    first, second = sorted([b.ref, c.ref], key=lambda n: (n.host, n.port))
    assert placed == [first, second, first, second]
    here.run(supervisor.start_child, sup, child(here, "t"))  # the round goes on
    assert started(here, "t")[1] == first
    children = here.run(supervisor.which_children, sup)
    assert [info.pid.node for info in children] == [first, second, first, second, first]


def test_a_placed_child_fails_over_to_a_survivor_and_its_names_follow(three):
    here, b, c = three
    children = [child(here, "g", name=("global", "placed")), child(here, "l", name="placed_here")]
    sup = here.run(functools.partial(supervisor.start, children, placement=lowest_port))
    g, victim_ref = started(here, "g")
    l, l_node = started(here, "l")
    victim, survivor = (b, c) if victim_ref == b.ref else (c, b)
    assert l_node == victim.ref
    assert here.whereis_global("placed") == g

    lose(here, victim)  # noconnection: both are restarted on the node still there
    new = dict(g=started(here, "g"), l=started(here, "l"))
    assert new["g"][1] == new["l"][1] == survivor.ref
    assert here.whereis_global("placed") == new["g"][0]
    assert here.call(new["g"][0], "ping", timeout=WAIT) == ("pong", "g", survivor.ref)
    # The survivor knows both names: the global one, and the local one on itself.
    here.spawn_on(survivor.ref, relay, here.pid, termite.whereis_global, "placed")
    assert here.receive(("relayed", ANY), timeout=WAIT)[1] == new["g"][0]
    here.spawn_on(survivor.ref, relay, here.pid, termite.whereis, "placed_here")
    assert here.receive(("relayed", ANY), timeout=WAIT)[1] == new["l"][0]
    assert [info.pid for info in here.run(supervisor.which_children, sup)] == [new["g"][0], new["l"][0]]


def test_a_pinned_child_is_not_moved_when_its_node_is_lost_its_tries_count_and_the_supervisor_gives_up(three):
    here, b, c = three
    children = [child(here, "pinned", node=b.ref), child(here, "placed", node=termite.LEAST_LOADED)]
    sup = here.run(functools.partial(supervisor.start, children, intensity=2, period=30))
    assert started(here, "pinned")[1] == b.ref
    placed, _ = started(here, "placed")
    watch = here.monitor(sup)

    lose(here, b)  # each restart tries to reach B's address (1 s), fails, and counts
    assert here.receive(Down(watch, sup, ANY), timeout=WAIT).reason == "shutdown"
    assert here.receive(("started", "pinned", ANY, ANY), timeout=0, default=None) is None, "moved elsewhere"


def test_placements_and_global_names_are_checked_in_the_spec():
    with pytest.raises(termite.ChildSpecError, match=r"node='fastest' is not a NodeRef .* nor a placement "
                                                      r"\('least_loaded' or 'spread' or a function of the loads\)"):
        ChildSpec("db", worker, node="fastest")
    with pytest.raises(termite.ChildSpecError, match=r"name=\('global', ''\) is not a non-empty str"):
        ChildSpec("db", worker, name=("global", ""))
    spec = ChildSpec("db", worker, name=("global", "db"), node=termite.SPREAD)
    assert (spec.global_name, spec.local_name, spec.node) == ("db", None, "spread")
    assert ChildSpec("db", worker, name="db", node=busiest).local_name == "db"
    with pytest.raises(termite.ChildSpecError, match="placement='random' is not None"):
        supervisor.nested("sub", [], placement="random")
    with pytest.raises(ValueError, match="placement='random' is not None"):
        termite.run(supervisor.start, [], "one_for_one", 3, 5.0, "random")
