"""The kernel is fair: a process that yields with sleep(0) leaves the node's
timers, I/O and other processes their turn; asyncio awaitables work in processes."""

import asyncio
import time

import pytest

import termite
from termite._core.kernel import Kernel, Task

pytestmark = pytest.mark.timeout(10)


async def _spin_yielding(yield_turn, seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        sum(range(2000))  # tens of microseconds of CPU work per step
        await yield_turn()


_YIELDS = {"termite.sleep(0)": lambda: termite.sleep(0), "asyncio.sleep(0)": lambda: asyncio.sleep(0)}


@pytest.mark.parametrize("how", list(_YIELDS))
def test_timers_keep_their_rate_while_a_process_spins_yielding_with_sleep_0(how):
    # Was: 3 ticks in 2 s on a node, 9 on a bare one: every turn taken for a
    # timer queued one more turn callback, so each loop iteration grew longer;
    # then each tick was late by the spinner's whole 20 ms turn.
    async def main():
        termite.spawn(_spin_yielding, _YIELDS[how], 1.5)
        ticks = 0
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            await termite.sleep(0.05)
            ticks += 1
        return ticks

    assert termite.run(main) >= 12  # 20 if each tick is on time; the margin is for a loaded machine


def _steps_before_the_loop_runs(body) -> int:
    """Run ``body()`` as a bare kernel's one task: the steps it took before the
    loop's next callback ran."""
    loop = asyncio.new_event_loop()
    try:
        kernel = Kernel(loop)
        kernel.attach()
        kernel.on_exit = lambda task, value, exc: None
        kernel.ready.append(Task(kernel, body()))
        seen_by_loop = []
        loop.call_soon(kernel._run)
        loop.call_soon(lambda: seen_by_loop.append(kernel.steps))
        loop.run_until_complete(asyncio.sleep(0.01))
        return seen_by_loop[0]
    finally:
        termite._core.kernel._local.kernel = None
        loop.close()


@pytest.mark.parametrize("how", list(_YIELDS))
def test_a_task_that_yields_its_turn_runs_again_only_after_the_loop_has_run(how):
    # Was: it ran again at once, for the turn's whole budget (20,000 steps or 20 ms).
    yield_turn = _YIELDS[how]

    async def body():
        for _ in range(1000):
            await yield_turn()

    assert _steps_before_the_loop_runs(body) == 1


def test_a_message_passes_round_a_ring_within_one_turn():
    # The message path must not pay a loop iteration per hop.
    async def relay(to):
        termite.send(to, await termite.receive())

    async def main():
        first = termite.self()
        for _ in range(50):
            first = termite.spawn(relay, first)
        loop_ran = []
        asyncio.get_running_loop().call_soon(loop_ran.append, True)
        termite.send(first, "round")
        return await termite.receive(), list(loop_ran)  # a copy: the loop runs on after main

    assert termite.run(main) == ("round", [])


# -- asyncio awaitables inside processes --------------------------------------


def test_asyncio_sleep_zero_and_non_zero():
    async def main():
        await asyncio.sleep(0)
        start = time.monotonic()
        await asyncio.sleep(0.02)
        slept = time.monotonic() - start
        return await asyncio.sleep(0, "after"), slept

    value, slept = termite.run(main)
    assert value == "after" and slept >= 0.015


def test_an_asyncio_event_set_by_another_process():
    async def setter(event):
        await termite.sleep(0.01)
        event.set()

    async def main():
        event = asyncio.Event()
        termite.spawn(setter, event)
        await event.wait()
        return event.is_set()

    assert termite.run(main) is True


def test_two_processes_talk_through_an_asyncio_queue():
    async def producer(queue):
        for i in range(5):
            await queue.put(i)  # blocks while the queue is full
        await queue.put(None)

    async def main():
        queue = asyncio.Queue(maxsize=1)
        termite.spawn(producer, queue)
        got = []
        while (item := await queue.get()) is not None:
            got.append(item)
        return got

    assert termite.run(main) == [0, 1, 2, 3, 4]


def test_a_stream_to_a_local_asyncio_server():
    async def echo(reader, writer):
        writer.write((await reader.readline()).upper())
        await writer.drain()
        writer.close()

    async def main():
        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"hello termite\n")
        await writer.drain()
        line = await reader.readline()
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return line

    assert termite.run(main) == b"HELLO TERMITE\n"


def test_asyncio_wait_for_times_out_and_returns():
    async def main():
        try:
            await asyncio.wait_for(asyncio.sleep(5), 0.02)
            timed_out = False
        except asyncio.TimeoutError:
            timed_out = True
        value = await asyncio.wait_for(asyncio.sleep(0.001, "in time"), 5)
        return timed_out, value

    assert termite.run(main) == (True, "in time")


def test_asyncio_timeout_in_a_task_of_its_own():
    # asyncio.timeout in an asyncio Task the process awaits cancels that task, not the process
    # (tests/test_asyncio_tasks.py has it in the process itself).
    async def bounded(seconds):
        async with asyncio.timeout(0.02):
            await asyncio.sleep(seconds)
        return "done"

    async def main():
        try:
            await asyncio.create_task(bounded(5))
            timed_out = False
        except TimeoutError:
            timed_out = True
        return timed_out, await asyncio.create_task(bounded(0))

    assert termite.run(main) == (True, "done")


# -- a node's own services -----------------------------------------------------


async def _subscribe(meter, reply_to, interval):
    termite.send(meter, ("subscribe", reply_to, interval))


def test_a_node_whose_process_spins_yielding_with_sleep_0_keeps_reporting_its_load(cluster):
    # Was: its meter (a timer) and its socket reads fell ever further behind.
    from workloads import yielding_spin

    here, start = cluster
    b = start()
    here.connect(*b.ref.address)
    here.spawn(_subscribe, termite.Pid(b.ref, 1), here.pid, 0.1)
    assert here.receive(("load", termite.Load), timeout=5)[1].node == b.ref
    here.spawn_on(b.ref, yielding_spin, 3.0)
    reports = []
    end = time.monotonic() + 2.0
    while (left := end - time.monotonic()) > 0:
        msg = here.receive(("load", termite.Load), timeout=left, default=None)
        if msg is not None:
            reports.append(msg[1])
    assert len(reports) >= 12, "the node stopped reporting"  # 20 if every report is on time
    assert max(report.run_queue for report in reports) >= 1, "a process that yields its turn is runnable"
