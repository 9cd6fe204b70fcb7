"""The kernel is fair: a process that yields with sleep(0) leaves the node's
timers, I/O and other processes their turn."""

import asyncio
import time

import pytest

import termite

pytestmark = pytest.mark.timeout(10)


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
