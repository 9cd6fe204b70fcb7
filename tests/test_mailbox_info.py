"""Mailbox sizes are visible (issue 15): per process (``process_info``) and per node (the load report)."""

from __future__ import annotations

import time

import pytest
from mailboxes import hoard

import termite
from termite import Load, NodeRef, Pid, ProcessInfo, node_load
from termite._core.info import mailbox_totals
from termite._net.codec import encode

pytestmark = pytest.mark.timeout(30)


def test_process_info_tells_a_mailbox_s_size_and_what_its_process_waits_for(node):
    pid = node.spawn(hoard, name="hoarder")
    assert node.process_info(pid) == ProcessInfo(pid, 0, "waiting for a matching message", "hoarder", 0, 0, False)
    for i in range(5):
        node.send(pid, ("job", i))  # delivered on the node's thread before send returns
    assert node.process_info(pid).mailbox == 5
    ref = node.monitor(pid)
    node.send(pid, "stop")
    node.receive(termite.Down(ref, pid, termite.ANY), timeout=5)
    assert node.process_info(pid) is None  # ended


async def _inside():
    me = termite.self()
    for i in range(3):
        termite.send(me, i)
    info = termite.process_info(me)
    await termite.receive(0)
    return info.mailbox, info.status, termite.process_info(me).mailbox, termite.process_info(Pid(me.node, 10**9))


def test_process_info_from_inside_a_process(node):
    assert node.run(_inside, timeout=5) == (3, "runnable", 2, None)


def test_process_info_refuses_what_is_not_a_pid_of_this_node(node):
    with pytest.raises(ValueError, match="not one of them: ask a process on its node.*node_load"):
        node.process_info(Pid(NodeRef("10.0.0.9", 9, 1), 20))
    with pytest.raises(TypeError, match="needs a Pid, not str"):
        node.process_info("hoarder")


def test_a_node_s_load_report_holds_its_queued_messages_and_largest_mailbox(cluster):
    here, start = cluster
    b = start()
    before = here.run(node_load, b.ref, timeout=10)
    assert (before.queued, before.largest_mailbox, before.largest_mailbox_pid) == (0, 0, None)
    small, big = here.spawn_on(b.ref, hoard), here.spawn_on(b.ref, hoard)
    for i in range(3):
        here.send(small, i)
    for i in range(40):
        here.send(big, i)
    # The shell's messages go before its call (one sender, one session): once the echo answers,
    # b holds them all; the report asked for next comes after.
    assert here.call(here.spawn_on(b.ref, termite.testing.echo), "sync", timeout=10) == "sync"
    load = here.run(node_load, b.ref, timeout=10)
    assert (load.queued, load.largest_mailbox, load.largest_mailbox_pid) == (43, 40, big)
    here.send(big, "stop")
    after = here.run(node_load, b.ref, timeout=10)
    assert after.queued <= 3 and after.largest_mailbox_pid in (small, None)


async def _totals_of_many(n: int):
    pids = [termite.spawn(hoard) for _ in range(n)]
    for pid in pids[::100]:
        termite.send(pid, "x")
    termite.send(pids[7], "y")
    termite.send(pids[7], "z")
    table = termite._core.process.current().table
    started = time.perf_counter()
    totals = mailbox_totals(table)
    return totals, time.perf_counter() - started, pids[7]


def test_the_report_stays_small_and_the_totals_cheap(node):
    (queued, largest, owner), took, seventh = node.run(_totals_of_many, 20_000, timeout=20)
    assert (queued, largest, owner) == (202, 2, seventh)
    assert took < 0.05, f"the totals of 20,000 processes took {took * 1000:.1f} ms"  # about 1 ms here
    report = Load(node.ref, 0.5, 3, 0.4, 20_000, 10**9, 10**9, 5, 5, 10**6, "a-host-name", 123456, 64, time.time())
    with_mailboxes = report._replace(queued=10**9, largest_mailbox=10**8, largest_mailbox_pid=Pid(node.ref, 2**40))
    assert len(encode(with_mailboxes)) - len(encode(report)) < 64  # two ints and a pid more
