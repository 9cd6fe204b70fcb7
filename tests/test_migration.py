"""Live migration between real node processes (this node and node processes B, C)."""

import pytest

from termite import Down, Exit
from termite.testing import watch

# Process bodies live in a module pytest does not rewrite: a node refuses a
# continuation whose code differs from its own, and pytest rewrites asserts.
from migrants import crash_after_migrating, holds_a_lock, keeps_mailbox, move_and_wait, moves_by_call, wanderer


@pytest.fixture
def abc(cluster):
    here, start = cluster
    b, c = start(), start()
    return here, here.connect(*b.ref.address), here.connect(*c.ref.address)


def test_a_process_moves_a_b_a_c_with_its_pid_locals_and_nested_awaits(abc):
    here, b, c = abc
    route = [b, here.ref, c]
    pid = here.spawn(wanderer, here.pid, route, link=True)
    for i, node in enumerate(route):
        _, step, where, who, total, log = here.receive(("at", int, ...), timeout=10)
        assert (step, where, who) == (i, node, pid)
        assert total == sum(10 * k for k in range(i + 1)) + sum(range(100, 100 + i))
        assert log == [("finally", str(n)) for n in route[: i + 1]]  # each finally ran once, where it was
        here.send(pid, 100 + i)
    assert here.receive(Exit, timeout=10) == Exit(pid, "normal")


def test_unread_messages_travel_and_later_ones_follow_in_order(abc):
    here, b, _ = abc
    pid = here.spawn(keeps_mailbox, here.pid, b)
    for msg in (1, 2, "first", 3):  # 1 and 2 wait in the mailbox while it receives "first"
        here.send(pid, msg)
    assert here.receive(("got", ...), timeout=10) == ("got", "first", [1, 2, 3], b)


def test_a_process_that_cannot_travel_stays_and_keeps_answering(abc):
    here, b, _ = abc
    pid = here.spawn(holds_a_lock, here.pid, b)
    _, text, variable = here.receive(("refused", str, ...), timeout=10)
    assert variable == "lock" and "lock" in text
    here.send(pid, "ping")
    assert here.receive(("still here", ...), timeout=10) == ("still here", here.ref, "ping")


@pytest.mark.parametrize("watcher_on", ["here", "c"])
def test_links_and_monitors_follow_a_migrated_process(abc, watcher_on):
    here, b, c = abc

    pid = here.spawn(crash_after_migrating, b)
    if watcher_on == "here":
        ref = here.monitor(pid)
        here.link(pid)
    else:
        here.spawn_on(c, watch, pid, here.pid, "link")
        here.receive(("watching", pid), timeout=10)
    here.send(pid, "crash now")
    msg = here.receive(Exit, timeout=10)
    assert msg.pid == pid and msg.reason.message == "crashed after moving"
    if watcher_on == "here":
        assert here.receive(Down, timeout=10) == Down(ref, pid, msg.reason)


def test_migrate_with_a_function_continues_by_calling_it_there(abc):
    here, b, _ = abc
    pid = here.spawn(moves_by_call, here.pid, b)
    assert here.receive(("before", ...), timeout=10) == ("before", pid)
    here.send(pid, "hello")
    assert here.receive(("after", ...), timeout=10) == ("after", pid, b, "hello")


def test_a_lost_node_fires_noconnection_for_a_process_that_moved_there(cluster):
    here, start = cluster
    b_node = start()
    b = here.connect(*b_node.ref.address)
    mover = here.spawn(move_and_wait, here.pid, b)
    ref = here.monitor(mover)
    here.receive(("moved", mover), timeout=10)
    b_node.kill()
    down = here.receive(Down, timeout=10)
    assert (down.ref, down.pid, down.reason) == (ref, mover, "noconnection")
