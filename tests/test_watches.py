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


def test_a_watch_left_on_the_source_fires_once_when_its_new_node_says_the_down_cut_it():
    """A migrant went A -> B while this node's session with B ended: B dropped this node's monitor
    and link (cut by that down), but here they still watch it on A (or were moved to B after
    B's down ran here). B's SEVERED takes them wherever they are, once."""
    migrant, watcher, linked = Pid(A, 1), Pid(HERE, 1), Pid(HERE, 2)
    for relocated_after_down in (False, True):
        watches, ref = Watches(), make_tag()
        watches.add_monitor(A, ref, watcher, migrant)
        watches.add_link(A, linked, migrant)
        assert watches.take_node(B).monitors == {}  # B's down here: nothing watched it there yet
        if relocated_after_down:
            watches.move_target(migrant, B, 1)  # A's late news
        lost = watches.take_severed(migrant, [ref], [linked])
        assert lost.monitors == {ref: (watcher, migrant)} and lost.links == {(linked, migrant)}
        assert watches.take_severed(migrant, [ref], [linked]).monitors == {}
        assert watches.take_node(A).monitors == {} and watches.take_node(B).links == set()


def test_a_severed_notice_for_a_watch_that_fired_at_the_down_fires_nothing():
    """The common order: the watch was on B when B's down ran here, and fired then."""
    watches, migrant, watcher, linked = Watches(), Pid(A, 1), Pid(HERE, 1), Pid(HERE, 2)
    ref = make_tag()
    watches.add_monitor(A, ref, watcher, migrant)
    watches.add_link(A, linked, migrant)
    watches.move_target(migrant, B, 1)
    assert watches.take_node(B).monitors == {ref: (watcher, migrant)}
    lost = watches.take_severed(migrant, [ref], [linked])
    assert lost.monitors == {} and lost.links == set()
    other = make_tag()  # a monitor made afresh keeps watching: SEVERED names refs, not targets
    watches.add_monitor(B, other, watcher, migrant)
    assert watches.take_severed(migrant, [ref], []).monitors == {}
    assert watches.take_node(B).monitors == {other: (watcher, migrant)}


def test_what_a_lost_node_fired_is_settled_until_linked_afresh():
    """A migrant that reached B as this node's session with B ended keeps its watchers there; its
    end, told in the next session, must find the monitor and link fired here already."""
    watches, migrant, watcher, linked = Watches(), Pid(A, 1), Pid(HERE, 1), Pid(HERE, 2)
    ref = make_tag()
    watches.add_monitor(B, ref, watcher, migrant)
    watches.add_link(B, linked, migrant)
    watches.take_node(B)
    assert watches.settled(ref) and not watches.settled(ref)  # once
    watches.add_link(B, linked, migrant)  # linked again: the next exit is this link's
    assert not watches.settled((linked, migrant))
