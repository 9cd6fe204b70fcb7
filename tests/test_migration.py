"""Live migration between real node processes (this node and node processes B, C)."""

import concurrent.futures

import pytest

import termite
import termite.testing
from termite import Down, Exit
from termite.testing import relay, watch

# Process bodies live in a module pytest does not rewrite: a node refuses a
# continuation whose code differs from its own, and pytest rewrites asserts.
from migrants import (
    answers_after_moving,
    crash_after_migrating,
    holds_a_lock,
    hopper,
    keeps_mailbox,
    migration_table,
    move_along,
    spawn_on,
    stays,
    talk,
    move_and_wait,
    moves_by_call,
    stream,
    wanderer,
    returns_from_afar,
    waits_there,
    sends_across_a_move,
    counts_in_order,
    monitors_on,
    watches_then_moves,
    holds_a_monitor_across_moves,
    moves_when_told,
    undoes_when_told,
    watches_for_a_down,
)


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
    if watcher_on == "here":
        here.send(pid, "crash now")
    else:  # behind the watcher's link, or the crash could come first and the link find noproc
        here.spawn_on(c, relay, here.pid, termite.send, pid, "crash now")
    msg = here.receive(Exit, timeout=10)
    assert msg.pid == pid and msg.reason.message == "crashed after moving"
    if watcher_on == "here":
        assert here.receive(Down, timeout=10) == Down(ref, pid, msg.reason)


@pytest.mark.parametrize("ask", ["answer there", "end there"])
def test_a_call_in_flight_follows_its_target_to_another_node(abc, ask):
    """A call's monitor of a process here, noted on it and written only when read, goes with it when it moves."""
    here, b, _ = abc
    pid = here.spawn(answers_after_moving, b)
    if ask == "answer there":
        assert here.call(pid, ask, timeout=10) == (ask, b)
    else:
        with pytest.raises(termite.DeadProcess, match="ended after moving"):
            here.call(pid, ask, timeout=10)
    # Nothing of the call is left: its end (or the noproc of a monitor made after it) sends no Down for
    # the call's monitor, which would come first.
    ref = here.monitor(pid)
    assert here.receive(Down, timeout=10).ref == ref


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


SENDERS, COUNT, PROCESSES, EVERY = 4, 1000, 200, 400


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_per_sender_order_holds_for_200_processes_migrating_under_4_streams(abc):
    """The issue's stress test: every message arrives exactly once, in its sender's order."""
    here, b, c = abc
    nodes = [here.ref, b, c]
    pids = []
    for k in range(PROCESSES):  # homes on every node, each moving round all three
        home = nodes[k % 3]
        route = nodes[k % 3 + 1 :] + nodes[: k % 3 + 1]
        args = (hopper, here.pid, route, SENDERS, EVERY)
        pids.append(here.spawn(*args) if home == here.ref else here.spawn_on(home, *args))
    for sender in range(SENDERS):
        where = nodes[sender % 3]
        args = (stream, pids, sender, COUNT, here.pid)
        here.spawn(*args) if where == here.ref else here.spawn_on(where, *args)
    done, moves = set(), 0
    for _ in range(PROCESSES):
        result = here.receive(("done", ...), ("wrong", ...), timeout=120)
        assert result[0] == "done", f"{result[1]} got message {result[4]} of sender {result[2]} after {result[3]}"
        _, pid, received, moved = result
        assert received == SENDERS * COUNT
        done.add(pid)
        moves += moved
    assert done == set(pids)
    assert moves == PROCESSES * (SENDERS * COUNT // EVERY)


@pytest.mark.timeout(120)
def test_a_migrants_later_messages_do_not_overtake_its_earlier_ones(abc):
    """It sends 1,000 messages from B to C, moves here and sends 1,000 more: those from here took
    another connection and overtook the last of B's in about one round in three, until the
    commit waited for C to have read what it sent from B (a fence)."""
    here, b, c = abc
    count = 1000
    for _ in range(10):
        q = here.spawn_on(c, counts_in_order, here.pid, 2 * count)
        here.spawn_on(b, sends_across_a_move, q, here.ref, count, 2000)
        assert here.receive(("order", ...), timeout=30) == ("order", None, None)


@pytest.mark.timeout(120)
def test_a_migrant_that_sent_one_message_a_turn_is_fenced_too(abc):
    """A turn's first frame takes a shorter path through the endpoint: it must be recorded as well."""
    here, b, c = abc
    count = 200
    for _ in range(5):
        q = here.spawn_on(c, counts_in_order, here.pid, 2 * count)
        here.spawn_on(b, sends_across_a_move, q, here.ref, count, 20_000, True)
        assert here.receive(("order", ...), timeout=30) == ("order", None, None)


def test_senders_nodes_learn_where_a_process_went_and_forget_it_when_it_ends(abc):
    here, b, c = abc
    pid = here.spawn(move_along, here.pid, [b, c])
    ref = here.monitor(pid)
    assert [here.receive(("at", ...), timeout=10) for _ in range(2)] == [("at", b), ("at", c)]
    # A process on B sends to it: the first messages go by the pid's home (here),
    # which passes them on; C tells B where it is; B's later ones go straight to C.
    for batch in ([0, 1, 2], [3, 4, 5]):
        here.spawn_on(b, talk, pid, [(here.pid, i) for i in batch])
        assert [here.receive(("pong", ...), timeout=10) for _ in batch] == [("pong", i, c) for i in batch]
    # Asked from C: the spawn then follows C's word to B on the one C -> B connection.
    here.spawn_on(c, spawn_on, b, migration_table, here.pid, [pid])
    assert here.receive(("table", ...), timeout=10) == ("table", b, [c])
    here.spawn(migration_table, here.pid, [pid])
    assert here.receive(("table", ...), timeout=10) == ("table", here.ref, [c])
    here.send(pid, (here.pid, "stop"))
    assert here.receive(Down, timeout=10) == Down(ref, pid, "normal")
    # The Down and C's GONE came in order on one connection; a spawn from C to B follows C's GONE to B.
    here.spawn(migration_table, here.pid, [pid])
    assert here.receive(("table", ...), timeout=10) == ("table", here.ref, [None])
    here.spawn_on(c, spawn_on, b, migration_table, here.pid, [pid])
    assert here.receive(("table", ...), timeout=10) == ("table", b, [None])


def test_on_a_node_of_its_own_a_process_can_migrate_only_to_where_it_is(node):
    pid = node.spawn(stays, node.pid)
    assert node.receive(("stayed", ...), timeout=10) == ("stayed", node.ref)
    node.send(pid, "hello")
    assert node.receive(("after", ...), timeout=10) == ("after", pid, node.ref, "hello")


def test_node_run_of_a_process_that_migrates_returns_what_it_returns_where_it_ends(abc):
    """node.run waited for ever when its process moved: its wait now follows it, and its value comes back."""
    here, b, c = abc
    assert here.run(returns_from_afar, [b, c], timeout=20) == (2, c)
    assert here.run(returns_from_afar, [b, here.ref], timeout=20) == (2, here.ref)  # back home to end


def test_node_run_of_a_process_whose_new_node_is_lost_raises_noconnection(cluster):
    here, start = cluster
    d = start()
    d_ref = here.connect(*d.ref.address)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(here.run, waits_there, d_ref, here.pid, timeout=30)
        here.receive(("there", termite.Pid), timeout=10)
        d.kill()
        with pytest.raises(termite.Exited) as lost:
            running.result(timeout=20)
    assert lost.value.reason == "noconnection"


async def _monitors_of(pid):
    return termite.process_info(pid).monitors


async def _monitor_entries():
    """How many monitors of this node's processes are on record here (the table's ``monitored``)."""
    return len(termite._core.process.current().table.monitored)


def test_the_monitors_a_migrant_holds_are_undone_where_they_were_made(abc):
    """A process that monitored two processes here and one of B moves to B: its demonitor there and its end
    undo them here and on B, as if it had never moved (none is left on the watched processes)."""
    here, b, _ = abc
    first, second = here.spawn(termite.testing.echo), here.spawn(termite.testing.echo)
    on_b = here.spawn_on(b, termite.testing.echo)
    entries = here.run(_monitor_entries, timeout=10)
    pid = here.spawn(watches_then_moves, [first, second, on_b], b, here.pid)
    assert here.receive(("moved", termite.Pid), timeout=10) == ("moved", pid)  # after its DEMONITOR of first
    assert here.run(_monitors_of, first, timeout=10) == 0
    assert here.run(_monitors_of, second, timeout=10) == 1
    ref = here.monitor(pid)
    here.send(pid, "end")
    assert here.receive(Down, timeout=10).ref == ref
    here.spawn_on(b, monitors_on, on_b, here.pid)  # its answer comes after the DEMONITOR the end sent here
    assert here.receive(("monitors", on_b, int), timeout=10) == ("monitors", on_b, 0)
    assert here.run(_monitors_of, second, timeout=10) == 0
    assert here.run(_monitor_entries, timeout=10) == entries


async def _kill(pid):
    termite.kill(pid)


async def _watch_held(ref):
    """Whether this node holds the watch of monitor ``ref`` (of another node's process)."""
    return termite._core.process.current().table.remote.watches.holds_monitor(ref)


def test_a_migrant_s_monitor_of_a_third_node_s_process_fires_once_when_that_node_is_lost(cluster):
    """Processes here monitor a process of node C and move to B (one on to D, one back here): when C is
    lost, each that still holds its monitor gets one Down "noconnection" where it is; the one that undid
    it, and the one whose Down came before, none.  The node where a monitor was made holds its watch."""
    here, start = cluster
    b, c, d = start(), start(), start()
    b_ref, c_ref, d_ref = (here.connect(*node.ref.address) for node in (b, c, d))
    target, short_lived = here.spawn_on(c_ref, termite.testing.echo), here.spawn_on(c_ref, termite.testing.echo)
    movers = {}
    for name, route, undo in (("keeps", [b_ref], False), ("undoes", [b_ref], True), ("hops", [b_ref, d_ref], False),
                              ("outlives", [b_ref], False), ("returns", [b_ref, here.ref], False)):
        pid = here.spawn(holds_a_monitor_across_moves, short_lived if name == "outlives" else target, route, undo,
                         here.pid)
        _, moved, ref = here.receive(("moved", pid, termite.Tag), timeout=10)
        movers[name] = (pid, ref)
    # This node holds the watches; the one undone on B is forgotten here too (B said so before "moved").
    assert [here.run(_watch_held, movers[name][1], timeout=10) for name in movers] == [True, False, True, True, True]
    here.run(_kill, short_lived, timeout=10)  # its Down reaches "outlives" before C is lost, and no other after
    pid, ref = movers["outlives"]
    assert here.receive((pid, Down), timeout=10)[1] == Down(ref, short_lived, "killed")
    mine = here.monitor(target)
    c.kill()
    assert here.receive(Down, timeout=10) == Down(mine, target, "noconnection")
    seen = {name: [] for name in movers}
    for rounds in range(2):  # a duplicate would come between the two pings
        for name, (pid, _) in movers.items():
            here.send(pid, ("ping", rounds))
        for name, (pid, _) in movers.items():
            while (msg := here.receive((pid, ...), timeout=10)[1]) != ("ping", rounds):
                seen[name].append(msg)
    assert seen == {
        "keeps": [Down(movers["keeps"][1], target, "noconnection")],
        "undoes": [],
        "hops": [Down(movers["hops"][1], target, "noconnection")],
        "outlives": [],
        "returns": [Down(movers["returns"][1], target, "noconnection")],  # once, though it came back
    }


def test_a_migrant_s_monitor_of_a_process_of_the_node_it_left_fires_when_that_node_is_lost(cluster):
    """A process of B monitors another process of B and moves to D: B, which held the watch, is lost,
    and D gives it its Down "noconnection"."""
    here, start = cluster
    b, d = start(), start()
    b_ref, d_ref = (here.connect(*node.ref.address) for node in (b, d))
    target = here.spawn_on(b_ref, termite.testing.echo)
    pid = here.spawn_on(b_ref, holds_a_monitor_across_moves, target, [d_ref], False, here.pid)
    _, _, ref = here.receive(("moved", pid, termite.Tag), timeout=10)
    b.kill()
    assert here.receive((pid, ...), timeout=10) == (pid, Down(ref, target, "noconnection"))


def test_a_migrant_s_monitor_outlives_the_node_it_was_made_on(cluster):
    """A process of B monitors a process of C and moves to D; B, which held the watch, is lost: D takes
    it over, and the process's end on C still reaches the migrant as a Down ("noproc" if it ended
    before D could ask)."""
    here, start = cluster
    b, c, d = start(), start(), start()
    b_ref, c_ref, d_ref = (here.connect(*node.ref.address) for node in (b, c, d))
    target = here.spawn_on(c_ref, termite.testing.echo)
    pid = here.spawn_on(b_ref, holds_a_monitor_across_moves, target, [d_ref], False, here.pid)
    _, _, ref = here.receive(("moved", pid, termite.Tag), timeout=10)
    b.kill()
    here.run(_kill, target, timeout=10)
    got = here.receive((pid, ...), timeout=10)
    assert got[1] in (Down(ref, target, "killed"), Down(ref, target, "noproc")), got


def test_a_monitor_undone_after_its_target_came_to_the_watcher_s_node_stays_undone(cluster):
    """A process here monitors T on C and moves to B; T moves to B too, and the watcher's demonitor
    there goes by B's own records; T moves on to D, and D is lost: the watcher hears nothing."""
    here, start = cluster
    b, c, d = start(), start(), start()
    b_ref, c_ref, d_ref = (here.connect(*node.ref.address) for node in (b, c, d))
    target = here.spawn_on(c_ref, moves_when_told, here.pid)
    pid = here.spawn(undoes_when_told, target, b_ref, here.pid)
    here.receive(("moved", pid, termite.Tag), timeout=10)
    here.send(target, ("go", b_ref))
    here.receive(("at", target, b_ref), timeout=10)
    here.send(pid, "demonitor")
    assert here.receive((pid, ...), timeout=10) == (pid, "undone")
    here.send(target, ("go", d_ref))
    here.receive(("at", target, d_ref), timeout=10)
    on_d = here.spawn_on(d_ref, termite.testing.echo)
    witness = here.spawn_on(b_ref, watches_for_a_down, on_d, here.pid)  # B's down of D reaches it
    here.receive(("watching", witness), timeout=10)
    d.kill()
    here.receive(("down seen", Down), timeout=10)
    here.send(pid, "ping")
    assert here.receive((pid, ...), timeout=10) == (pid, "ping")
