"""The kernel: run queue, timers, budget, and its public surface."""

import asyncio
import time

import termite
from termite._core.kernel import Kernel, Task


async def _echo(timeout=None):
    while True:
        sender, tag, msg = await termite.receive((termite.Pid, termite.Tag, termite.ANY), timeout=timeout)
        termite.send(sender, (tag, msg))


def test_cancelled_timers_do_not_pile_up():
    # Many receives answered before their timeout leave cancelled timers
    # behind; the heap must be rebuilt rather than grow without bound.  The
    # server's receives have timeouts too, so each timer is cancelled after
    # another was set: still in the heap.
    async def main():
        server = termite.spawn(_echo, 60)
        for i in range(5000):
            await termite.call(server, i, timeout=60)
        return len(termite._core.process.current().kernel.timers)

    assert termite.run(main) < 3000


def test_a_timer_cancelled_before_another_is_set_leaves_the_heap_at_once():
    # A call's timeout, the last timer set when its reply comes: nothing stays behind for a rebuild.
    async def main():
        server = termite.spawn(_echo)
        for i in range(100):
            await termite.call(server, i, timeout=60)
        return len(termite._core.process.current().kernel.timers)

    assert termite.run(main) == 0


def test_timers_fire_in_deadline_order():
    async def sleeper(me, delay, label):
        await termite.sleep(delay)
        termite.send(me, label)

    async def main():
        me = termite.self()
        for delay, label in ((0.03, "c"), (0.01, "a"), (0.02, "b")):
            termite.spawn(sleeper, me, delay, label)
        return [await termite.receive(timeout=1) for _ in range(3)]

    assert termite.run(main) == ["a", "b", "c"]


def test_timers_fire_while_other_processes_never_park():
    # CPU-bound processes that yield between slices keep the run queue full:
    # a process waiting on a timeout (a meter's next report) must still wake.
    async def spinner(seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            start = time.thread_time()
            while time.thread_time() - start < 0.001:
                pass
            await termite.sleep(0)

    async def waiter(me, delay):
        start = time.monotonic()
        await termite.receive(timeout=delay, default=None)
        termite.send(me, time.monotonic() - start)

    async def main():
        me = termite.self()
        for _ in range(2):
            termite.spawn(spinner, 4.0)
        for delay in (0.1, 0.2, 0.3):
            termite.spawn(waiter, me, delay)
        # No timeout here: a timed receive would arm the kernel's timer itself.
        return [await termite.receive() for _ in range(3)]

    waited = termite.run(main)
    assert max(waited) < 1.5, f"timeouts of 0.1-0.3 s took {waited} s"


def _steps_before_the_loop_runs(body, seconds: float) -> tuple[list, list]:
    """Run ``body()`` as the kernel's one task for ``seconds``: the steps taken
    when the loop's next callback ran, and the task's exit exceptions."""
    loop = asyncio.new_event_loop()
    try:
        kernel = Kernel(loop)
        kernel.attach()
        exits = []
        kernel.on_exit = lambda task, value, exc: exits.append(exc)
        kernel.ready.append(Task(kernel, body()))
        seen_by_loop = []
        loop.call_soon(kernel._run)
        loop.call_soon(lambda: seen_by_loop.append(kernel.steps))
        loop.run_until_complete(asyncio.sleep(seconds))
        return seen_by_loop, exits
    finally:
        termite._core.kernel._local.kernel = None
        loop.close()


def test_the_kernel_yields_to_the_event_loop_within_its_budget():
    # A run queue that never empties must not starve asyncio callbacks.
    async def spin():
        for _ in range(3 * Kernel.BUDGET):
            await termite._core.traps.reschedule()

    seen_by_loop, exits = _steps_before_the_loop_runs(spin, 0.05)
    assert seen_by_loop and 0 < seen_by_loop[0] < 3 * Kernel.BUDGET
    assert exits == [None]


def test_a_turn_of_long_steps_ends_in_time_not_after_its_whole_budget():
    # Steps that each take a millisecond (a process sending hundreds of
    # messages per step): a turn of BUDGET of them would keep the node from
    # reading for many seconds.
    async def heavy_steps():
        for _ in range(400):
            end = time.perf_counter() + 0.001
            while time.perf_counter() < end:
                pass
            await termite._core.traps.reschedule()

    seen_by_loop, _ = _steps_before_the_loop_runs(heavy_steps, 0.01)
    assert seen_by_loop and 0 < seen_by_loop[0] <= 100  # 0.02 s of 1 ms steps, checked every 16


def test_every_public_name_is_exported_once_from_termite():
    names = termite.__all__
    assert len(names) == len(set(names))
    for name in names:
        obj = getattr(termite, name)
        module = getattr(obj, "__module__", None)
        if isinstance(obj, type) or callable(obj):
            assert module == "termite", f"{name} shows module {module}"
