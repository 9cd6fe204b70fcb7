"""Load meters, dispatch to the least-loaded node, and termite.Executor, over real node processes."""

import collections
import concurrent.futures
import os
import threading
import time

import pytest

import termite
from termite.testing import burn_cpu
from workloads import async_where, fail, lock, spin, where, where_unless_on


@pytest.fixture
def two(cluster):
    """This node (dispatching only) and two node processes B and C."""
    here, start = cluster
    b, c = start(), start()
    for node in (b, c):
        here.connect(*node.ref.address)
    return here, b, c


@pytest.mark.slow
def test_40_cpu_bound_thunks_land_evenly_and_run_in_parallel(two):
    here, b, c = two
    start = time.perf_counter()
    with termite.Executor(node=here, interval=0.2) as pool:
        results = list(pool.map(spin, [0.2] * 40))
    elapsed = time.perf_counter() - start
    counts = collections.Counter(pid for pid, _ in results)
    assert set(counts) == {b.pid, c.pid}
    assert abs(counts[b.pid] - counts[c.pid]) <= 2, counts
    # Serial time: what the thunks took, each measured where it ran (so a
    # machine busy with other tests slows both sides alike).
    serial = sum(took for _, took in results)
    assert elapsed <= 0.6 * serial, (elapsed, serial)


def test_a_node_killed_in_the_middle_of_a_run_loses_no_thunk(two):
    here, b, c = two
    with termite.Executor(node=here, interval=0.2, window=4) as pool:
        futures = [pool.submit(spin, 0.05) for _ in range(60)]
        done = 0
        for future in concurrent.futures.as_completed(futures, timeout=30):
            done += 1
            if done == 8:  # both nodes are at work, with calls queued
                c.kill()
        pids = collections.Counter(future.result()[0] for future in futures)
    assert sum(pids.values()) == 60 and set(pids) <= {b.pid, c.pid}
    assert pids[b.pid] >= 60 - pids[c.pid]  # what C had not answered ran again on B


def test_exceptions_come_back_with_the_remote_traceback(two):
    here, _, _ = two
    with termite.Executor(node=here) as pool:
        with pytest.raises(ValueError, match="bad input") as raised:
            pool.submit(fail, "bad input").result(10)
        cause = raised.value.__cause__
        assert isinstance(cause, termite.RemoteTraceback)
        assert "in fail" in cause.text and 'raise ValueError(text)' in cause.text
        with pytest.raises(termite.RemoteError, match="UnserializableMessage"):
            pool.submit(lock).result(10)  # a result that cannot travel back
        with pytest.raises(termite.UnserializableMessage):
            pool.submit(lambda lock=lock(): lock).result(10)  # a thunk that cannot travel
        with pytest.raises(ZeroDivisionError):
            list(pool.map(lambda x: 1 / x, [1, 2, 0, 4], chunksize=2))


def test_executor_map_chunks_submit_kwargs_lambdas_and_shutdown(two):
    here, b, c = two
    pool = termite.Executor(node=here)
    assert list(pool.map(abs, range(-50, 0), chunksize=7)) == list(range(50, 0, -1))
    assert list(pool.map(pow, [2, 3], [5, 2])) == [32, 9]
    assert pool.submit(int, "ff", base=16).result(10) == 255
    offset = 1000
    assert pool.submit(lambda x: x + offset, 1).result(10) == 1001  # a closure travels by value
    assert {pool.submit(where).result(10) for _ in range(8)} <= {b.pid, c.pid}
    pool.shutdown()
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(abs, 1)


def test_async_thunks_run_as_processes_of_the_node(two):
    here, b, c = two
    with termite.Executor(node=here) as pool:
        pid, x = pool.submit(async_where, 7).result(10)
    assert pid in {b.pid, c.pid} and x == 7


async def _loads_and_dispatch():
    termite.start_dispatcher(interval=0.1)
    while any(load is None for load in (await termite.loads()).values()):
        await termite.receive(timeout=0.05, default=None)
    loads = await termite.loads()
    least = await termite.minimum_load()
    average = await termite.average_load()
    value = await termite.dispatch(pow, 2, 8)
    futures = [termite.dispatch_async(pow, 3, n) for n in range(4)]
    assert [await termite.touch(f) for f in futures] == [1, 3, 9, 27]
    try:
        await termite.dispatch(fail, "in a process")
    except ValueError as exc:
        error = (str(exc), type(exc.__cause__).__name__)
    return loads, least, average, value, error


def test_meters_report_and_dispatch_works_from_a_process(two):
    here, b, c = two
    loads, least, average, value, error = here.run(_loads_and_dispatch)
    assert set(loads) == {b.ref, c.ref} and least in loads
    for node, load in loads.items():
        assert load.node == node and load.processes >= 3 and load.cores >= 1 and load.host_load >= 0
    assert average is not None and average >= 0
    assert value == 256
    assert error == ("in a process", "RemoteTraceback")


@pytest.mark.slow
def test_a_long_cpu_bound_thunk_keeps_its_node_up_reporting_and_busy(two):
    here, b, c = two
    here.monitor_node(None)
    for node in (b, c):
        here.spawn(_subscribe, termite.Pid(node.ref, 1), here.pid)
    by_pid = {b.pid: b.ref, c.pid: c.ref}
    with termite.Executor(node=here, interval=0.2) as pool:
        pid, took = pool.submit(spin, 3.0).result(20)  # three heartbeat timeouts of this cluster
    reports = []
    while (msg := here.receive(("load", termite.Load), timeout=0, default=None)) is not None:
        reports.append(msg[1])
    busy_node = by_pid[pid]
    theirs = [report for report in reports if report.node == busy_node]
    assert len(theirs) >= 5, "the busy node stopped reporting"  # every 0.2 s for 3 s
    assert max(report.busy for report in theirs) > 0.5 and max(report.run_queue for report in theirs) >= 1
    assert here.receive(termite.NodeDown, timeout=0, default=None) is None, "a busy node was declared down"


async def _subscribe(meter, reply_to):
    termite.send(meter, ("subscribe", reply_to, 0.2))


def test_a_late_report_counts_as_busy(two):
    here, b, c = two
    # Reports every 0.3 s, late after 0.75 s: a margin for B's, on a loaded machine.
    with termite.Executor(node=here, interval=0.3) as pool:
        while any(load is None for load in here.run(termite.loads).values()):
            here.receive(timeout=0.05, default=None)
        here.spawn_on(c.ref, burn_cpu, 4.0)  # C's kernel itself is stuck: its meter cannot report
        time.sleep(1.0)  # the condition under test is time itself: more than 2.5 report intervals pass
        pids = [pool.submit(where).result(10) for _ in range(6)]
    assert pids == [b.pid] * 6, "an idle node whose report is late was handed work"


def test_the_executor_works_where_an_asyncio_loop_already_runs_as_in_jupyter(two):
    import asyncio

    here, b, c = two

    async def cell():  # a notebook cell runs inside the kernel's running event loop
        with termite.Executor(node=here) as pool:
            return sum(pool.map(abs, range(-100, 0), chunksize=10)), await asyncio.wrap_future(pool.submit(pow, 2, 5))

    assert asyncio.run(cell()) == (5050, 32)


# -- dispatch under faults: never in the caller's process, unless asked ----------


def _lose(here, node):
    """Kill ``node`` and return once this node has declared it down."""
    here.monitor_node(node.ref)
    node.kill()
    assert here.receive(termite.NodeDown, timeout=10).node == node.ref


async def _dispatch_with_timeout(thunk, timeout):
    try:
        return await termite.dispatch(thunk, timeout=timeout)
    except termite.Timeout:
        return "timed out"


def test_calls_wait_for_a_node_when_their_only_node_is_lost_never_running_in_the_callers_process(cluster):
    here, start = cluster
    b = start()
    here.connect(*b.ref.address)
    with termite.Executor(node=here, interval=0.2) as pool:
        assert pool.submit(where).result(10) == b.pid
        pending = pool.submit(where_unless_on, b.pid)  # still unanswered when B goes
        _lose(here, b)
        later = [pool.submit(where) for _ in range(3)] + [pool.submit(async_where, 1)]
        assert here.run(termite.loads) == {}, "the dispatcher took its own node to run calls on"
        assert not any(future.done() for future in [pending, *later])
        assert here.run(_dispatch_with_timeout, where, 0.3) == "timed out"  # a caller's timeout holds
        c = start()
        here.connect(*c.ref.address)  # NodeUp: the waiting calls go there
        assert pending.result(10) == c.pid
        assert [future.result(10) for future in later] == [c.pid] * 3 + [(c.pid, 1)]
    assert os.getpid() not in {b.pid, c.pid}


def test_a_node_that_comes_back_is_used_again(cluster):
    # The same NodeRef declared down and up again, as after a false down (the
    # transport's own part of that is tested with real faults elsewhere).
    here, start = cluster
    b = start()
    here.connect(*b.ref.address)
    with termite.Executor(node=here, interval=0.2) as pool:
        assert pool.submit(where).result(10) == b.pid
        dispatcher = here.run(termite.start_dispatcher)
        here.send(dispatcher, termite.NodeDown(None, b.ref, "noconnection"))
        waiting = pool.submit(where)
        assert here.run(termite.loads) == {}
        assert not waiting.done()
        here.send(dispatcher, termite.NodeUp(None, b.ref))
        assert waiting.result(10) == b.pid
        deadline = time.monotonic() + 5
        while here.run(termite.loads).get(b.ref) is None:  # subscribed to its meter again
            assert time.monotonic() < deadline, "no load report from the node that came back"
            here.receive(timeout=0.05, default=None)
        assert [pool.submit(where).result(10) for _ in range(3)] == [b.pid] * 3


def test_shutdown_fails_the_calls_that_wait_for_a_node_instead_of_hanging(cluster):
    here, start = cluster
    b = start()
    here.connect(*b.ref.address)
    pool = termite.Executor(node=here, interval=0.2)
    running = pool.submit(where_unless_on, b.pid)
    _lose(here, b)
    waiting = pool.submit(where)
    mapped = pool.map(where_unless_on, [0, 0])
    shutdown = threading.Thread(target=pool.shutdown, daemon=True)
    shutdown.start()
    shutdown.join(10)
    assert not shutdown.is_alive(), "shutdown waited for a node that is not there"
    for future in (running, waiting):
        with pytest.raises(concurrent.futures.BrokenExecutor, match="no node was connected"):
            future.result(0)
    with pytest.raises(concurrent.futures.BrokenExecutor):
        list(mapped)


def test_shutdown_returns_when_the_last_node_is_lost_while_it_waits(cluster):
    here, start = cluster
    b = start()
    here.connect(*b.ref.address)
    pool = termite.Executor(node=here, interval=0.2)
    running = pool.submit(where_unless_on, b.pid)
    shutdown = threading.Thread(target=pool.shutdown, daemon=True)
    shutdown.start()  # waits for the call B runs
    _lose(here, b)
    shutdown.join(10)
    assert not shutdown.is_alive(), "shutdown waited for a node that is not there"
    with pytest.raises(concurrent.futures.BrokenExecutor, match="no node was connected"):
        running.result(0)


def test_a_node_without_a_network_runs_what_it_dispatches_itself():
    async def main():
        return await termite.dispatch(where), await termite.dispatch(async_where, 2)

    me = os.getpid()
    assert termite.run(main) == (me, (me, 2))
    with termite.Node() as node:
        assert node.run(main) == (me, (me, 2))
        with termite.Executor(node=node) as pool:
            assert list(pool.map(where_unless_on, [0, 0])) == [me, me]
