"""Links, monitors, exit signals, trap_exit, kill."""

import termite
from termite import Crash, Down, Exit, Exited, exit, kill, link, monitor, receive, send, spawn, trap_exit


def run(main, *args):
    return termite.run(main, *args)


async def fail(message="boom"):
    await termite.sleep(0)
    raise ValueError(message)


async def wait_forever():
    await receive(lambda m: False)


def test_an_exception_ends_only_its_own_process_and_is_logged_once(crash_log):
    async def main():
        spawn(fail, "only me")
        return await receive(timeout=0.05, default="still alive")

    assert run(main) == "still alive"
    crashes = [r for r in crash_log.records if "crashed" in r.getMessage()]
    assert len(crashes) == 1
    assert "ValueError: only me" in crashes[0].getMessage()
    assert "in fail" in crashes[0].getMessage()  # the traceback names the failing function


def test_spawn_link_raises_exited_in_the_parent_which_can_catch_it():
    async def main():
        try:
            spawn(fail, link=True)
            await receive(timeout=1, default="ok")
            return False
        except Exited as exc:
            return exc.reason

    reason = run(main)
    assert isinstance(reason, Crash)
    assert reason.exc_type == "ValueError" and reason.message == "boom"
    assert "raise ValueError(message)" in reason.traceback


def test_an_uncaught_exit_signal_travels_on_with_the_same_reason(crash_log):
    async def middle():
        spawn(fail, "deep", link=True)
        await wait_forever()

    async def main():
        trap_exit(True)
        pid = spawn(middle, link=True)
        return pid, await receive(Exit, timeout=1)

    pid, msg = run(main)
    assert msg.pid == pid
    assert msg.reason.message == "deep"
    assert sum("crashed" in r.getMessage() for r in crash_log.records) == 1


def test_trap_exit_turns_signals_into_messages_including_normal():
    async def main():
        assert trap_exit(True) is False
        quiet = spawn(lambda: None, link=True)
        loud = spawn(fail, link=True)
        got = {}
        for _ in range(2):
            msg = await receive(Exit, timeout=1)
            got[msg.pid] = msg.reason
        return got[quiet], got[loud].exc_type

    assert run(main) == ("normal", "ValueError")


def test_normal_exits_do_not_kill_linked_processes():
    async def main():
        spawn(lambda: None, link=True)
        return await receive(timeout=0.02, default="alive")

    assert run(main) == "alive"


def test_links_are_bidirectional_and_directed_links_are_one_way():
    async def child_dies_with_parent(report, directed):
        async def parent():
            pid = spawn(wait_forever)
            send(report, ("child", pid))
            link(pid, directed=directed)
            raise RuntimeError("parent fails")

        spawn(parent)
        _, child = await receive(("child", termite.Pid))
        ref = monitor(child)
        down = await receive(Down, timeout=0.1, default=None)
        return down is not None and down.ref == ref

    async def main():
        me = termite.self()
        return await child_dies_with_parent(me, False), await child_dies_with_parent(me, True)

    assert run(main) == (True, False)


def test_directed_link_brings_the_other_side_exit_here():
    async def main():
        trap_exit(True)
        pid = spawn(fail)
        link(pid, directed=True)
        return (await receive(Exit, timeout=1)).pid == pid

    assert run(main) is True


def test_monitor_delivers_down_and_never_kills():
    async def main():
        pid = spawn(fail)
        ref = monitor(pid)
        down = await receive(Down, timeout=1)
        return down.ref == ref, down.pid == pid, down.reason.exc_type

    assert run(main) == (True, True, "ValueError")


def test_monitor_and_link_to_a_dead_process_report_noproc():
    async def main():
        pid = spawn(lambda: None)
        await termite.sleep(0.001)
        ref = monitor(pid)
        down = await receive(Down, timeout=1)
        trap_exit(True)
        link(pid)
        ex = await receive(Exit, timeout=1)
        return down.ref == ref, down.reason, ex.reason

    assert run(main) == (True, "noproc", "noproc")


def test_demonitor_stops_the_down():
    async def main():
        pid = spawn(wait_forever)
        ref = monitor(pid)
        termite.demonitor(ref)
        kill(pid)
        return await receive(Down, timeout=0.02, default="no down")

    assert run(main) == "no down"


def test_a_process_end_undoes_the_monitors_it_holds_and_fired_ones_are_not_kept():
    """As in Erlang: a server that outlives 1,000 short-lived watchers keeps none of their monitors, and a
    process that watched 1,000 processes end keeps nothing of those monitors either."""

    async def main():
        from termite._core.links import _FIRST_LOOK
        from termite._core.process import current

        server = spawn(wait_forever)

        async def watch_and_end():
            monitor(server)

        for _ in range(1000):
            ref = monitor(spawn(watch_and_end))
            assert (await receive(Down, timeout=5)).ref == ref
        me = current()
        return len(me.watching), 2 * _FIRST_LOOK, termite.process_info(server).monitors, len(me.table.monitored)

    held, bound, server_monitors, monitored = run(main)
    assert server_monitors == 0 and monitored == 0
    assert held <= bound


def test_kill_cannot_be_trapped_and_runs_finally_blocks():
    async def main():
        me = termite.self()

        async def stubborn():
            trap_exit(True)
            try:
                while True:
                    await receive()
            finally:
                send(me, "cleaned up")

        pid = spawn(stubborn)
        ref = monitor(pid)
        await termite.sleep(0)
        send(pid, "warm-up")
        exit(pid, "shutdown")  # trapped: arrives as a message, does not end it
        await termite.sleep(0.001)
        kill(pid)
        cleanup = await receive("cleaned up", timeout=1)
        down = await receive(Down, timeout=1)
        return cleanup, down.ref == ref, down.reason

    assert run(main) == ("cleaned up", True, "killed")


def test_exit_with_a_reason_raises_exited_in_a_non_trapping_process():
    async def main():
        me = termite.self()

        async def worker():
            try:
                await receive()
            except Exited as exc:
                send(me, ("caught", exc.reason))
                raise

        pid = spawn(worker)
        monitor(pid)
        await termite.sleep(0)
        exit(pid, "shutdown")
        caught = await receive(("caught", termite.ANY), timeout=1)
        down = await receive(Down, timeout=1)
        return caught, down.reason

    assert run(main) == (("caught", "shutdown"), "shutdown")


def test_a_signal_does_not_lose_a_message_handed_over_in_the_same_turn():
    async def main():
        me = termite.self()

        async def worker():
            try:
                await receive()  # gets "first" handed over, then the signal lands
            except Exited:
                send(me, await receive(timeout=1))  # the message is still in the mailbox

        pid = spawn(worker)
        await termite.sleep(0)
        send(pid, "first")
        exit(pid, "interrupt")
        return await receive(timeout=1)

    assert run(main) == "first"


def test_unlink_removes_both_directions():
    async def main():
        pid = spawn(fail)
        link(pid)
        termite.unlink(pid)
        return await receive(timeout=0.02, default="unlinked")

    assert run(main) == "unlinked"
