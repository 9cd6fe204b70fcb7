"""termite._net.watches: where links and monitors to a process of another node watch it."""

import pytest

from termite._core.ids import NodeRef, Pid, make_tag
from termite._net.watches import Watches

pytestmark = pytest.mark.timeout(10)

A, B, C = (NodeRef("127.0.0.1", port, incarnation=1) for port in (7001, 7002, 7003))
HERE = NodeRef("127.0.0.1", 7000, incarnation=1)


def test_an_older_relocation_that_arrives_last_does_not_move_a_watch_back():
    """A migrant went A -> B (its 2nd move) -> C (its 3rd): the notices come from B and from C, on
    two connections, so B's can come last. The watch must stay on C, so that C's loss fires it."""
    watches, migrant, watcher, linked = Watches(), Pid(A, 1), Pid(HERE, 1), Pid(HERE, 2)
    ref = make_tag()
    watches.add_monitor(A, ref, watcher, migrant)
    watches.add_link(A, linked, migrant)
    watches.move_target(migrant, C, 3)
    watches.move_target(migrant, B, 2)  # late news
    assert watches.take_node(B).monitors == {}
    lost = watches.take_node(C)
    assert lost.monitors == {ref: (watcher, migrant)} and lost.links == {(linked, migrant)}


def test_a_relocation_without_a_move_count_always_moves():
    watches, migrant, watcher = Watches(), Pid(A, 1), Pid(HERE, 1)
    ref = make_tag()
    watches.add_monitor(A, ref, watcher, migrant)
    watches.move_target(migrant, B)
    assert watches.take_node(B).monitors == {ref: (watcher, migrant)}
