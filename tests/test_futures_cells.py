"""Futures (the slides: future / touch) and cells (paper, section 4.6) as library API."""

import pytest
from servers import fail_later, fail_with_a_lock, where_am_i

import termite
from termite import (
    DeadProcess,
    RemoteError,
    RemoteTraceback,
    Timeout,
    cell_ref,
    cell_set,
    future,
    make_cell,
    receive,
    send,
    spawn,
    touch,
)

# -- futures ------------------------------------------------------------------------


def test_a_future_computes_once_and_answers_every_toucher():
    calls = []

    def thunk(a, b):
        calls.append(1)
        return a * b

    async def toucher(f, reply_to):
        send(reply_to, ("touched", await touch(f)))

    async def main():
        me = termite.self()
        f = future(thunk, 6, 7)
        for _ in range(3):
            spawn(toucher, f, me)
        values = [await receive(("touched", int), timeout=5) for _ in range(3)]
        return values, await touch(f), await termite.call(f, "ref", timeout=5)  # touch is (!? f 'ref)

    assert termite.run(main) == ([("touched", 42)] * 3, 42, 42)
    assert calls == [1]


def test_async_thunks_and_thunks_returning_awaitables():
    async def double(x):
        await termite.sleep(0)
        return 2 * x

    async def main():
        return await touch(future(double, 4)), await touch(future(lambda: double(5)))

    assert termite.run(main) == (8, 10)


def test_a_future_gets_messages_while_it_computes():
    async def waiter(reply_to):
        send(reply_to, ("waiting", termite.self()))
        return await receive(("go", int))

    async def main():
        f = future(waiter, termite.self())
        _, pid = await receive(("waiting", termite.Pid), timeout=5)
        send(f, "junk")  # dropped once the value is computed
        send(f, ("go", 1))
        return pid == f, await touch(f, timeout=5)

    assert termite.run(main) == (True, ("go", 1))


def test_a_failing_thunk_makes_every_touch_raise_its_exception():
    def thunk():
        raise ValueError("no value")

    async def main():
        f = future(thunk)
        errors = []
        for _ in range(2):
            with pytest.raises(ValueError) as info:
                await touch(f, timeout=5)
            errors.append(info.value)
        with pytest.raises(KeyError):
            await touch(future(fail_later, "async too"), timeout=5)
        return errors

    first, second = termite.run(main)
    assert str(first) == str(second) == "no value"
    cause = first.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert "in thunk" in cause.text and 'raise ValueError("no value")' in cause.text
    assert cause.text.startswith("Traceback of future <Pid ")


def test_touch_times_out_and_a_dead_future_raises():
    async def forever():
        await receive("never sent")

    async def main():
        f = future(forever)
        with pytest.raises(Timeout):
            await touch(f, timeout=0.1)
        termite.kill(f)
        with pytest.raises(DeadProcess) as info:
            await touch(f, timeout=30)
        return info.value.reason

    assert termite.run(main) in ("killed", "noproc")


def test_touch_from_a_plain_thread(node):
    f = node.run(lambda: future(sum, [1, 2, 3]))
    assert node.run(touch, f) == 6
    assert node.call(f, "ref", timeout=5) == 6


def test_futures_on_another_node(cluster):
    here, start = cluster
    ref = here.connect(*start().ref.address)

    async def main():
        there = await touch(future(where_am_i, node=ref), timeout=10)
        with pytest.raises(KeyError) as info:
            await touch(future(fail_later, "far away", node=ref), timeout=10)
        with pytest.raises(RemoteError) as lost:
            await touch(future(fail_with_a_lock, node=ref), timeout=10)
        return there, info.value, lost.value

    there, error, lost = here.run(main)
    assert there == ref
    assert error.args == ("far away",) and "fail_later" in error.__cause__.text
    assert lost.crash.exc_type == "ValueError" and "fail_with_a_lock" in lost.__cause__.text


# -- cells ----------------------------------------------------------------------------


def test_cells_hold_their_own_values_for_every_process():
    async def reader(cell, reply_to):
        send(reply_to, ("read", await cell_ref(cell)))

    async def main():
        a, b = make_cell("a"), make_cell()
        seen = [await cell_ref(a), await cell_ref(b)]
        cell_set(a, 1)
        send(a, "junk")  # dropped: the cell goes on
        cell_set(a, [2])
        seen += [await cell_ref(a), await cell_ref(b)]
        spawn(reader, a, termite.self())
        seen.append(await receive(("read", list), timeout=5))
        return seen

    assert termite.run(main) == ["a", None, [2], None, ("read", [2])]


def test_a_dead_cell_raises_and_a_silent_one_times_out():
    async def main():
        cell = make_cell(0)
        termite.kill(cell)
        with pytest.raises(DeadProcess):
            await cell_ref(cell, timeout=30)
        with pytest.raises(Timeout):
            await cell_ref(spawn(receive_forever), timeout=0.1)  # a process that never answers

    termite.run(main)


async def receive_forever():
    await receive("never sent")


def test_a_cell_on_another_node(cluster):
    here, start = cluster
    ref = here.connect(*start().ref.address)

    async def main():
        cell = make_cell({"n": 1}, node=ref)
        cell_set(cell, {"n": 2})
        return cell.node, await cell_ref(cell, timeout=10)

    assert here.run(main) == (ref, {"n": 2})
