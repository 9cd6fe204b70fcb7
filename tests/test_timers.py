"""Timers (termite/_core/timers.py): send_after, send_interval, exit_after, kill_after, cancel_timer, read_timer.

Every wait here is a receive with a timeout; the only clocks are the timers
under test.  Bounds are generous: a timer is never early, and may be late.
"""

import asyncio
import pickle
import threading
import time

import pytest

import termite
from termite import Down, Exit, NoSuchName, NotInProcess, receive, send, spawn
from termite._core.timers import SWEEP_MIN, NodeTimers
from termite.testing import collect, relay

from timer_bodies import move_when_told, owner_moves


async def idle():
    await receive("never sent")


def node_timers():
    return NodeTimers.of(termite._current().kernel)


# -- one node -------------------------------------------------------------------


def test_send_after_sends_once_not_before_its_time():
    async def main():
        me = termite.self()
        started = time.monotonic()
        ref = termite.send_after(0.3, me, "wake up")
        early = await receive(timeout=0.05, default=None)
        msg = await receive(timeout=10)
        waited = time.monotonic() - started
        again = await receive(timeout=0.3, default=None)
        return ref, early, msg, waited, again, termite.read_timer(ref), termite.cancel_timer(ref)

    ref, early, msg, waited, again, left, cancelled = termite.run(main)
    assert isinstance(ref, termite.TimerRef)
    assert (early, msg, again) == (None, "wake up", None)
    assert waited >= 0.29
    assert left is None and cancelled is None  # fired: nothing left to read or cancel


def test_cancel_timer_returns_the_time_left_and_the_message_never_comes():
    async def main():
        me = termite.self()
        ref = termite.send_after(0.3, me, "cancelled")
        termite.send_after(0.6, me, "marker")
        left = termite.read_timer(ref)
        cancelled = termite.cancel_timer(ref)
        return left, cancelled, termite.cancel_timer(ref), termite.read_timer(ref), await receive(timeout=10)

    left, cancelled, again, read, first = termite.run(main)
    assert 0 < cancelled <= left <= 0.3
    assert again is None and read is None
    assert first == "marker"  # the cancelled one, due earlier, never came


def test_timers_fire_in_deadline_order_and_ties_in_the_order_set():
    async def main():
        me = termite.self()
        for i in range(50):
            termite.send_after(0.1, me, ("same", i))
        for delay in (0.5, 0.4, 0.3, 0.2):
            termite.send_after(delay, me, ("by deadline", delay))
        return [await receive(timeout=10) for _ in range(54)]

    got = termite.run(main)
    assert got[:50] == [("same", i) for i in range(50)]
    assert got[50:] == [("by deadline", d) for d in (0.2, 0.3, 0.4, 0.5)]


def test_send_interval_repeats_until_cancelled():
    async def main():
        me = termite.self()
        ticker = termite.send_interval(0.02, me, "tick")
        ticks = [await receive(timeout=10) for _ in range(5)]
        left = termite.cancel_timer(ticker)
        termite.send_after(0.2, me, "marker")  # ten intervals later
        rest = []
        while (msg := await receive(timeout=10)) != "marker":
            rest.append(msg)
        return ticks, left, rest, termite.read_timer(ticker)

    ticks, left, rest, read = termite.run(main)
    assert ticks == ["tick"] * 5
    assert 0 <= left <= 0.02
    assert rest == []  # none after the cancel
    assert read is None


def test_a_late_interval_sends_one_message_not_a_burst():
    async def main():
        me = termite.self()
        ticker = termite.send_interval(0.01, me, "tick")
        end = time.monotonic() + 0.2  # the node is busy for 20 intervals
        while time.monotonic() < end:
            pass
        termite.send_after(0.05, me, "marker")
        got = []
        while (msg := await receive(timeout=10)) != "marker":
            got.append(msg)
        termite.cancel_timer(ticker)
        return got

    got = termite.run(main)
    assert 1 <= len(got) <= 7, got  # one for the stall, then one each 10 ms until the marker (5), plus slack


def test_a_timer_for_a_local_process_that_ends_is_cancelled():
    async def main():
        me = termite.self()
        pid = spawn(idle)
        ref = termite.send_after(60, pid, "too late")
        short = termite.send_after(0.05, pid, "also too late")
        watch = termite.monitor(pid)
        termite.kill(pid)
        await receive(Down(watch, pid, termite.ANY), timeout=10)
        termite.send_after(0.2, me, "marker")
        await receive("marker", timeout=10)
        return termite.read_timer(ref), termite.cancel_timer(ref), termite.read_timer(short), node_timers().pending()

    assert termite.run(main) == (None, None, None, 0)


def test_a_timer_for_a_local_pid_already_dead_is_born_cancelled():
    async def main():
        pid = spawn(lambda: None)
        watch = termite.monitor(pid)
        await receive(Down(watch, pid, termite.ANY), timeout=10)
        ref = termite.send_after(30, pid, "nobody")
        return termite.read_timer(ref), termite.cancel_timer(ref)

    assert termite.run(main) == (None, None)


async def _sets_timers(reply_to, owned):
    termite.send_after(0.1, reply_to, ("fired", owned), owned=owned)


def test_an_owned_timer_ends_with_its_owner_and_an_unowned_one_outlives_it():
    async def main():
        me = termite.self()
        for owned in (True, False):
            pid = spawn(_sets_timers, me, owned)
            watch = termite.monitor(pid)
            await receive(Down(watch, pid, termite.ANY), timeout=10)
        termite.send_after(0.4, me, "marker")
        got = []
        while (msg := await receive(timeout=10)) != "marker":
            got.append(msg)
        return got

    assert termite.run(main) == [("fired", False)]


async def _trapping(reply_to):
    termite.trap_exit(True)
    send(reply_to, ("trapping", termite.self()))
    send(reply_to, ("trapped", await receive(Exit, timeout=10)))


def test_exit_after_and_kill_after():
    async def main():
        me = termite.self()
        trapper = spawn(_trapping, me)
        await receive(("trapping", trapper), timeout=10)
        termite.exit_after(0.05, trapper, "time is up")
        _, trapped = await receive(("trapped", termite.ANY), timeout=10)

        victim = spawn(idle)
        watch = termite.monitor(victim)
        termite.exit_after(0.05, victim, "normal")  # ignored: it does not trap exits
        termite.kill_after(0.1, victim)
        down = await receive(Down(watch, victim, termite.ANY), timeout=10)
        return me, trapped, down.reason

    me, trapped, reason = termite.run(main)
    assert trapped == Exit(me, "time is up")  # from the process that set the timer
    assert reason == "killed"


async def _named_echo(reply_to):
    termite.register("echo", termite.self())
    send(reply_to, "registered")
    while True:
        send(reply_to, ("echo", await receive()))


def test_a_name_is_looked_up_when_the_timer_fires():
    async def main():
        me = termite.self()
        termite.send_after(0.3, "echo", "hello")  # nobody holds the name yet
        termite.send_after(0.05, "nobody", "lost")  # nobody ever will: lost, no error
        pid = spawn(_named_echo, me)
        await receive("registered", timeout=10)
        got = await receive(("echo", termite.ANY), timeout=10)
        termite.kill(pid)
        return got

    assert termite.run(main) == ("echo", "hello")


def test_an_interval_to_a_name_ends_with_the_process_holding_it():
    async def main():
        me = termite.self()
        with pytest.raises(NoSuchName, match="register it first"):
            termite.send_interval(0.05, "echo", "ping")
        pid = spawn(_named_echo, me)
        await receive("registered", timeout=10)
        ticker = termite.send_interval(0.02, "echo", "ping")
        await receive(("echo", "ping"), timeout=10)
        watch = termite.monitor(pid)
        termite.kill(pid)
        await receive(Down(watch, pid, termite.ANY), timeout=10)
        return termite.read_timer(ticker)

    assert termite.run(main) is None


def test_a_ref_cancels_from_another_process_and_survives_pickling():
    async def canceller(ref, reply_to):
        send(reply_to, ("cancelled", termite.cancel_timer(ref)))

    async def main():
        me = termite.self()
        ref = termite.send_after(30, me, "never")
        copy = pickle.loads(pickle.dumps(ref))
        same = copy is ref and copy == ref and hash(copy) == hash(ref)
        spawn(canceller, ref, me)
        _, left = await receive(("cancelled", termite.ANY), timeout=10)
        return same, left, termite.read_timer(ref), repr(ref)

    same, left, read, text = termite.run(main)
    assert same
    assert 0 < left <= 30 and read is None
    assert "ended" in text


def test_many_pending_timers_keep_one_loop_timer():
    async def main():
        me = termite.self()
        loop = asyncio.get_running_loop()
        before = len(loop._scheduled)
        refs = [termite.send_after(80 - i * 1e-3, me, i) for i in range(20_000)]  # each the earliest yet
        during = len(loop._scheduled)
        lefts = [termite.cancel_timer(ref) for ref in refs]
        return before, during, all(0 < left <= 81 for left in lefts), len(node_timers().heap)

    before, during, all_left, heap = termite.run(main)
    assert during <= before + 1
    assert all_left
    assert heap <= SWEEP_MIN + 1  # cancelled ones are swept, not kept until their deadline


def test_timers_of_processes_that_ended_do_not_keep_memory():
    async def main():
        timers = node_timers()
        live = spawn(idle)
        kept = [termite.send_after(60, live, i) for i in range(500)]
        for _ in range(10):  # processes that set long timers to themselves, then end
            pid = spawn(idle)
            for i in range(1000):
                termite.send_after(60, pid, i)
            termite.kill(pid)
            watch = termite.monitor(pid)
            await receive(Down(watch, pid, termite.ANY), timeout=10)
        return len(timers.heap), timers.pending(), sum(termite.read_timer(r) is not None for r in kept)

    heap, pending, kept = termite.run(main)
    assert pending == kept == 500
    assert heap <= 2 * (500 + 1000) + SWEEP_MIN  # dead ones swept as the heap doubles: bounded by the live


def test_bad_arguments_say_what_to_do():
    async def main():
        me = termite.self()
        errors = []
        for call in (
            lambda: termite.send_after(-1, me, "x"),
            lambda: termite.send_after(float("nan"), me, "x"),
            lambda: termite.send_after(float("inf"), me, "x"),
            lambda: termite.send_after("1", me, "x"),
            lambda: termite.send_after(True, me, "x"),
            lambda: termite.send_after(1, 42, "x"),
            lambda: termite.send_after(1, ("name",), "x"),
            lambda: termite.send_interval(0, me, "x"),
            lambda: termite.exit_after(1, ("a", "b"), "x"),
            lambda: termite.cancel_timer("not a ref"),
            lambda: termite.read_timer(None),
        ):
            try:
                call()
            except (TypeError, ValueError) as exc:
                errors.append(str(exc))
            else:
                errors.append(None)
        return errors

    errors = termite.run(main)
    assert None not in errors
    assert ">= 0" in errors[0] and "finite" in errors[1] and "finite" in errors[2]
    assert "number of seconds" in errors[3] and "number of seconds" in errors[4]
    assert "Pid, a registered name" in errors[5] and "(name, node)" in errors[6]
    assert "at least 0.001" in errors[7] and "Pid or a registered name" in errors[8]
    assert "TimerRef" in errors[9] and "TimerRef" in errors[10]


def test_outside_a_process_set_timers_through_node_run(node):
    with pytest.raises(NotInProcess, match=r"node\.run\(termite\.send_after"):
        termite.send_after(1, node.pid, "x")
    ref = node.run(termite.send_after, 0.05, node.pid, "from a script")
    assert node.receive(timeout=10) == "from a script"
    assert node.run(termite.read_timer, ref) is None
    ref = node.run(termite.send_after, 30, node.pid, "never")
    assert 0 < node.run(termite.cancel_timer, ref) <= 30


# -- across nodes ------------------------------------------------------------------


@pytest.fixture
def abc(cluster):
    here, start = cluster
    b, c = start(), start()
    return here, here.connect(*b.ref.address), here.connect(*c.ref.address)


@pytest.mark.timeout(90)
def test_a_timer_sends_to_a_process_of_another_node_and_by_name_there(abc):
    here, b, _ = abc
    pid = here.spawn_on(b, collect, here.pid, 2)
    here.spawn_on(b, relay, here.pid, termite.register, "collector", pid)
    here.receive(("relayed", None), timeout=10)
    here.run(termite.send_after, 0.05, pid, "by pid")
    here.run(termite.send_after, 0.1, ("collector", b), "by name")
    assert here.receive(("collected", termite.ANY), timeout=10) == ("collected", ["by pid", "by name"])


@pytest.mark.timeout(90)
def test_a_message_that_cannot_travel_ends_its_timer_with_a_warning(abc, caplog):
    here, b, _ = abc
    pid = here.spawn_on(b, collect, here.pid, 1)
    ticker = here.run(termite.send_interval, 0.05, pid, threading.Lock())
    here.run(termite.send_after, 0.3, here.pid, "marker")
    assert here.receive(timeout=10) == "marker"
    assert here.run(termite.read_timer, ticker) is None
    assert [r for r in caplog.records if "could not send" in r.getMessage() and "and ends" in r.getMessage()]


@pytest.mark.timeout(90)
@pytest.mark.parametrize("born", ["here", "on b"])
def test_a_message_follows_a_destination_that_migrates_before_the_timer_fires(abc, born):
    here, b, c = abc
    if born == "here":  # the timer's node is the one it leaves
        pid, target = here.spawn(move_when_told, here.pid), b
    else:  # it leaves b, its home, for c; the timer's node is neither
        pid, target = here.spawn_on(b, move_when_told, here.pid), c
    ref = here.run(termite.send_after, 1.5, pid, "ding")
    here.send(pid, ("go", target))
    assert here.receive(("moved", pid, termite.ANY), timeout=10) == ("moved", pid, target)
    assert here.run(termite.read_timer, ref) > 0, "the machine was too slow: the timer fired before the move"
    assert here.receive(("got", termite.ANY, termite.ANY), timeout=10) == ("got", "ding", target)


@pytest.mark.timeout(90)
def test_owned_timers_stay_when_their_owner_migrates_and_end_when_it_ends(abc):
    here, b, _ = abc
    pid = here.spawn(owner_moves, here.pid, b)
    watch = here.monitor(pid)
    _, kept, dropped, late = here.receive(("refs", termite.ANY, termite.ANY, termite.ANY), timeout=10)
    # From b, the owner cancelled `dropped` (sent here, asynchronously) and could not read `kept`.
    assert here.receive(("moved", termite.ANY, termite.ANY, termite.ANY), timeout=10) == ("moved", b, None, None)
    assert here.run(termite.read_timer, kept) > 0, "the machine was too slow: the timer fired before the move"
    assert here.run(termite.read_timer, dropped) is None  # the cancel came before the owner's word
    assert here.receive(timeout=10) == "kept"  # `dropped`, due earlier, never came
    assert here.run(termite.read_timer, late) > 0  # its owner lives on, elsewhere
    here.send(pid, "stop")
    assert here.receive(Down, timeout=10) == Down(watch, pid, "normal")
    here.spawn_on(b, relay, here.pid, int, 1)  # after the owner's end, b told this node it ended
    here.receive(("relayed", 1), timeout=10)
    assert here.run(termite.read_timer, late) is None
    assert here.receive(timeout=0.2, default=None) is None
