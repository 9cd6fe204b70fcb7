"""The order a migrant's host puts numbered messages back in (termite/_move/ordering.py)."""

import pytest

from termite._core.ids import NodeRef
from termite._move.ordering import DIRECT, RELAYED, SWITCH, Order

HOME, X, Y = (NodeRef("127.0.0.1", port, 7) for port in (1, 2, 3))


def test_a_stream_in_order_passes_straight_through():
    order = Order()
    assert [order.take(HOME, HOME, DIRECT, n, f"m{n}") for n in (1, 2, 3)] == [["m1"], ["m2"], ["m3"]]
    assert not order.held


def test_an_early_message_waits_for_the_ones_before_it():
    order = Order()
    assert order.take(HOME, X, RELAYED, 3, "m3") == []
    assert order.take(HOME, X, RELAYED, 2, "m2") == []
    assert order.take(HOME, X, RELAYED, 1, "m1") == ["m1", "m2", "m3"]
    assert not order.held and order.next[(X, True)] == 4


def test_streams_of_different_origins_do_not_wait_for_each_other():
    order = Order()
    assert order.take(HOME, X, RELAYED, 2, "x2") == []
    assert order.take(HOME, Y, RELAYED, 1, "y1") == ["y1"]


def test_a_direct_stream_waits_until_the_relayed_one_of_its_origin_has_ended():
    order = Order()
    assert order.take(HOME, X, DIRECT, 1, "direct 1") == []  # X's switch has not come through the home yet
    assert order.take(HOME, X, RELAYED, 1, "relayed 1") == ["relayed 1"]
    assert order.take(HOME, X, SWITCH, 2, None) == ["direct 1"]
    assert order.take(HOME, X, DIRECT, 2, "direct 2") == ["direct 2"]


def test_the_homes_own_direct_stream_never_waits():
    order = Order()
    assert order.take(HOME, HOME, DIRECT, 1, "m") == ["m"]


def test_a_lost_node_releases_what_waits_relayed_streams_first():
    order = Order()
    order.take(HOME, X, DIRECT, 1, "direct 1")
    order.take(HOME, X, RELAYED, 2, "relayed 2")  # relayed 1 was lost with a node
    assert order.release() == ["relayed 2", "direct 1"]
    assert order.take(HOME, X, RELAYED, 1, "relayed 1, late") == ["relayed 1, late"]
    assert order.take(HOME, X, DIRECT, 2, "direct 2") == ["direct 2"]


def test_the_state_travels():
    order = Order()
    order.take(HOME, X, RELAYED, 1, "r1")
    order.take(HOME, X, DIRECT, 1, ("d", 1))
    order.take(HOME, Y, DIRECT, 2, "y2")
    order.gen, order.visited, order.informed = 3, [HOME, X], {Y}
    moved = Order.from_state(order.state())
    assert (moved.next, moved.held, moved.switched) == (order.next, order.held, order.switched)
    assert (moved.gen, moved.visited, moved.informed) == (3, [HOME, X], {Y})
    assert moved.take(HOME, X, SWITCH, 2, None) == [("d", 1)]


@pytest.mark.parametrize("state", [None, (), [[1, 2, 3]], ([["x", True, 1]], [], [], 0, [], [], False)])
def test_a_state_that_is_not_one_is_refused(state):
    with pytest.raises(ValueError, match="not the order state"):
        Order.from_state(state)
