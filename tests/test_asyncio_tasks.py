"""A running process is asyncio's current task: asyncio.timeout, wait_for and TaskGroup work in it.

From Python 3.12 on, asyncio.wait_for is asyncio.timeout, which asks for the
current task and cancels it when time is up.  The kernel makes the process it
runs the loop's current task, and a process answers what asyncio asks of one
(cancel, cancelling, uncancel).  Both kernels; every CPython termite supports.
"""

import asyncio

import pytest

import termite

pytestmark = pytest.mark.timeout(20)


def test_asyncio_timeout_and_wait_for_time_out_in_a_process_and_let_it_go_on():
    async def main():
        outcomes = []
        try:
            async with asyncio.timeout(0.02):
                await asyncio.sleep(5)
        except TimeoutError:
            outcomes.append("timeout")
        try:
            await asyncio.wait_for(asyncio.sleep(5), 0.02)
        except TimeoutError:
            outcomes.append("wait_for")
        async with asyncio.timeout(5):
            outcomes.append(await asyncio.sleep(0.001, "in time"))
        outcomes.append(await asyncio.wait_for(asyncio.sleep(0.001, "waited"), 5))
        return outcomes, asyncio.current_task().cancelling()

    assert termite.run(main) == (["timeout", "wait_for", "in time", "waited"], 0)


def test_asyncio_timeout_around_a_receive_leaves_a_later_message_in_the_mailbox():
    async def later(to):
        await asyncio.sleep(0.05)
        termite.send(to, "late")

    async def main():
        termite.spawn(later, termite.self())
        try:
            async with asyncio.timeout(0.01):
                await termite.receive()
            timed_out = False
        except TimeoutError:
            timed_out = True
        return timed_out, await termite.receive(timeout=5)

    assert termite.run(main) == (True, "late")


def test_the_current_task_is_the_running_process_and_only_while_it_runs():
    seen = []

    async def child(to):
        termite.send(to, asyncio.current_task())

    async def main():
        me = asyncio.current_task()
        other = termite.spawn(child, termite.self())
        theirs = await termite.receive()
        # A loop callback runs between turns: no process is running then.
        ran = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(lambda: (seen.append(asyncio.current_task()), ran.set_result(None)))
        await ran
        return me.pid == termite.self(), theirs.pid == other, me.get_name() == str(termite.self())

    assert termite.run(main) == (True, True, True)
    assert seen == [None]


def test_an_asyncio_task_group_in_a_process():
    async def main():
        async with asyncio.TaskGroup() as group:
            a = group.create_task(asyncio.sleep(0.01, "a"))
            b = group.create_task(asyncio.sleep(0.02, "b"))
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(asyncio.sleep(5))
                group.create_task(_fail_soon())
        except* ValueError as failed:
            error = str(failed.exceptions[0])
        return a.result(), b.result(), error

    assert termite.run(main) == ("a", "b", "failed")


async def _fail_soon():
    await asyncio.sleep(0.01)
    raise ValueError("failed")


def test_a_process_that_cancels_itself_meets_cancelled_error_at_its_next_wait():
    async def main():
        task = asyncio.current_task()
        assert task.cancel("stop") is True and task.cancelling() == 1
        try:
            await termite.sleep(5)
            return "slept"
        except asyncio.CancelledError as exc:
            return exc.args, task.uncancel()

    assert termite.run(main) == (("stop",), 0)


def test_cancelling_a_process_that_ended_does_nothing():
    kept = {}

    async def keep():
        kept["task"] = asyncio.current_task()

    async def main():
        pid = termite.spawn(keep)
        ref = termite.monitor(pid)
        await termite.receive(termite.Down(ref, pid, termite.ANY))
        return kept["task"].done(), kept["task"].cancel()

    assert termite.run(main) == (True, False)
