"""Looking inside nodes (issue 19): processes(), process_info to Erlang's depth, trace/untrace, the meter's top.

Cross-node parts run real node processes (the cluster fixture); a migrated
process is looked for where it runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import inspected
import pytest
from mailboxes import hoard

import termite
from termite import ANY, Down, Pid, Trace, node_load, receive, send

pytestmark = pytest.mark.timeout(60)


def _pong(node, pid):
    """One ping answered: the process has run to its receive again."""
    node.send(pid, (node.pid, "ping"))
    assert node.receive("pong", timeout=10) == "pong"


# -- one process, on this node ---------------------------------------------------


def test_process_info_tells_state_patterns_place_and_counts(node):
    pid = node.spawn(inspected.waiter, name="waiter")
    _pong(node, pid)
    info = node.process_info(pid)
    assert (info.name, info.state, info.status) == ("waiter", "receiving", "waiting for a matching message")
    assert info.waiting_for == "receive((Pid, 'ping'), ('stop',))"
    assert info.location == f"{inspected.__file__}:{inspected.line_of('WAITS HERE')}"
    assert info.stack[0].endswith(f"inspected.py:{inspected.line_of('WAITS HERE')} in waiter")
    # started (a step), the ping (queued: it scans its mailbox, a step): one message in, one out
    assert (info.received, info.sent, info.steps) == (1, 1, 2)
    assert (info.node, info.born_on, info.migrations, info.visited) == (node.ref, node.ref, 0, (node.ref,))
    assert info.memory > 0 and info.mailbox == 0
    _pong(node, pid)
    again = node.process_info(pid)
    assert (again.received, again.sent, again.steps) == (2, 2, 3)
    assert again == info  # == compares the fields of old (pid, mailbox, status, name, links, monitors, trap_exit)


def test_the_states_a_process_waits_in(node):
    sleeping, awaiting, server = node.spawn(inspected.sleeper), node.spawn(inspected.awaiter), node.spawn(hoard)
    calling = node.spawn(inspected.caller, server)
    node.spawn(inspected.waiter)  # runs after the four: by the time it answers, they all wait
    _pong(node, node.spawn(inspected.waiter))
    info = node.process_info(sleeping)
    assert (info.state, info.waiting_for) == ("sleeping", "sleep(30)")
    info = node.process_info(awaiting)
    assert info.state == "awaiting" and "Future" in info.waiting_for, info
    # the user's await, not asyncio's
    assert info.location == f"{inspected.__file__}:{inspected.line_of('AWAITS HERE')}"
    info = node.process_info(calling)
    assert (info.state, info.waiting_for) == ("receiving", f"call({server}, 'get')")
    assert node.process_info(server).mailbox == 1


async def _about_myself():
    return termite.process_info(termite.self())


def test_a_process_asking_about_itself_is_running(node):
    info = node.run(_about_myself, timeout=5)
    line = _about_myself.__code__.co_firstlineno + 1
    assert info.state == "running" and info.location.endswith(f"test_introspection.py:{line}")


def test_links_monitors_and_the_pids_behind_them(node):
    target = node.spawn(hoard)
    watching = node.spawn(inspected.watcher, target, node.pid)
    assert node.receive("watching", timeout=5) == "watching"
    linked = node.spawn(hoard, link=True)  # linked to node.pid
    ref = node.monitor(linked)
    info = node.process_info(linked)
    assert (info.links, info.linked, info.monitors, info.monitored_by) == (1, (node.pid,), 1, (node.pid,))
    assert node.process_info(watching).monitoring == (target,)
    assert node.process_info(target).monitored_by == (watching,)
    node.send(linked, "stop")
    assert node.receive(Down(ref, linked, ANY), timeout=5).reason == "normal"


def test_memory_grows_with_the_mailbox_and_is_bounded_work(node):
    pid = node.spawn(hoard)
    before = node.process_info(pid).memory
    node.send(pid, [b"x" * 10_000 for _ in range(10)])  # a list of 10 bytes objects: its shallow size counts
    for _ in range(3000):
        node.send(pid, "x" * 1000)
    info = node.process_info(pid)
    assert info.mailbox == 3001
    assert info.memory - before > 3000 * 1000, (before, info.memory)  # more than it measured: counted at their average


async def _processes_around(n):
    pids = [termite.spawn(hoard) for _ in range(n)]
    here = termite.processes()
    for pid in pids[:3]:
        send(pid, "stop")
    await termite.sleep(0)
    return pids, here, termite.processes()


def test_processes_lists_this_node_s_live_processes(node):
    pids, before, after = node.run(_processes_around, 5, timeout=5)
    assert set(pids) <= set(before)
    assert set(pids[3:]) <= set(after) and not set(pids[:3]) & set(after)


# -- other nodes ------------------------------------------------------------------


async def _remote_info(pid, node):
    return await termite.process_info(pid), await termite.processes(node)


async def _not_awaited(pid):
    pending = termite.process_info(pid)
    try:
        pending.mailbox
    except TypeError as exc:
        return str(exc)
    finally:
        await pending  # not left unawaited


def test_process_info_and_processes_of_another_node(cluster):
    here, start = cluster
    b = start()
    pid = here.spawn_on(b.ref, inspected.waiter)
    _pong(here, pid)
    info, pids = here.run(_remote_info, pid, b.ref, timeout=20)
    assert (info.pid, info.node, info.born_on, info.state) == (pid, b.ref, b.ref, "receiving")
    assert info.waiting_for == "receive((Pid, 'ping'), ('stop',))" and info.received == 1
    assert pid in pids and Pid(b.ref, 1) in pids  # and its meter
    assert "asks another node: await it" in here.run(_not_awaited, pid, timeout=20)


def test_a_migrated_process_is_asked_where_it_runs(cluster):
    here, start = cluster
    b = start()
    b_ref = here.connect(*b.ref.address)
    pid = here.spawn(inspected.mover, here.pid)
    here.send(pid, ("go", b_ref))
    assert here.receive(("moved", ANY), timeout=20) == ("moved", b_ref)
    info, _ = here.run(_remote_info, pid, b_ref, timeout=20)
    assert (info.node, info.born_on, info.migrations, info.visited) == (b_ref, here.ref, 1, (here.ref, b_ref))
    assert info.waiting_for == "receive((Pid, 'ping'))"


def test_a_node_s_load_report_names_its_busiest_processes(cluster):
    here, start = cluster
    b = start()
    big = here.spawn_on(b.ref, hoard)
    for i in range(40):
        here.send(big, i)
    _pong(here, here.spawn_on(b.ref, inspected.waiter))  # b has them all by now (one session, in order)
    top = here.run(node_load, b.ref, timeout=10).top
    assert 1 <= len(top) <= 10
    largest = max(top, key=lambda p: p.mailbox)
    assert (largest.pid, largest.name, largest.mailbox, largest.state) == (big, None, 40, "receiving")
    assert largest.steps >= 1  # started; the messages may come in the spawn's own frame, scanned in that step
    assert all(p.pid.node == b.ref for p in top)


# -- tracing -------------------------------------------------------------------------


async def _traced_exchange(pid, pings):
    """Trace ``pid``, ping it ``pings`` times, stop it: every Trace this process got, the last an exit."""
    me = termite.self()
    assert await termite.trace(pid)
    for _ in range(pings):
        send(pid, (me, "ping"))
        assert await receive("pong", timeout=10) == "pong"
    send(pid, ("stop",))
    events = []
    while not events or events[-1].event != "exit":
        events.append(await receive(Trace, timeout=10))
    return events


def test_trace_reports_what_a_process_receives_and_sends_and_its_end(node):
    pid = node.spawn(inspected.waiter)
    events = node.run(_traced_exchange, pid, 2, timeout=10)
    tracer = events[0].message[0]
    assert events == [
        Trace(pid, "received", (tracer, "ping")),
        Trace(pid, "sent", "pong", tracer),
        Trace(pid, "received", (tracer, "ping")),
        Trace(pid, "sent", "pong", tracer),
        Trace(pid, "received", ("stop",)),
        Trace(pid, "exit", "normal"),
    ]


async def _trace_then_untrace(pid):
    me = termite.self()
    await termite.trace(pid)
    send(pid, (me, "ping"))
    await receive("pong")
    seen = [await receive(Trace, timeout=5) for _ in range(2)]
    traced_by = termite.process_info(pid).traced_by
    assert await termite.untrace(pid) and not await termite.untrace(pid)
    send(pid, (me, "ping"))
    await receive("pong")
    # A local process's events are delivered as its messages are: none came for this ping
    return seen, traced_by, await receive(Trace, timeout=0, default=None), termite.process_info(pid).traced_by


def test_untrace_stops_the_events(node):
    pid = node.spawn(inspected.waiter)
    seen, traced_by, after, left = node.run(_trace_then_untrace, pid, timeout=10)
    assert [e.event for e in seen] == ["received", "sent"] and len(traced_by) == 1
    assert after is None and left == ()


async def _trace_and_end(pid):
    await termite.trace(pid)


def test_a_trace_ends_with_its_tracer(node):
    pid = node.spawn(inspected.waiter)
    node.run(_trace_and_end, pid, timeout=5)
    _pong(node, pid)  # the trace's agent has seen its tracer's end and run by now
    assert node.process_info(pid).traced_by == ()


def test_trace_of_another_node_s_process_comes_over_the_network(cluster):
    here, start = cluster
    b = start()
    pid = here.spawn_on(b.ref, inspected.waiter)
    events = here.run(_traced_exchange, pid, 1, timeout=20)
    assert [(e.pid, e.event) for e in events] == [(pid, "received"), (pid, "sent"), (pid, "received"), (pid, "exit")]
    assert events[1].message == "pong" and events[-1].message == "normal"


async def _trace_a_mover(pid, node):
    me = termite.self()
    await termite.trace(pid)
    send(pid, ("go", node))
    events = [await receive(Trace, timeout=10) for _ in range(2)]  # ("go", node) received, then the move
    for _ in range(100):  # its agent follows it there: until then, what it does there is not reported
        if me in (await termite.process_info(pid)).traced_by:
            break
    send(pid, (me, "ping"))
    await receive("pong", timeout=10)
    events += [await receive(Trace, timeout=10) for _ in range(2)]
    return events


def test_a_trace_follows_its_process_when_it_migrates(cluster):
    here, start = cluster
    b = start()
    b_ref = here.connect(*b.ref.address)
    pid = here.spawn(inspected.mover, here.pid)
    events = here.run(_trace_a_mover, pid, b_ref, timeout=30)
    assert [e.event for e in events] == ["received", "migrated", "received", "sent"], events
    assert events[1].message == b_ref and events[3].message == "pong"


def test_trace_and_process_info_refuse_what_is_not_a_pid(node):
    async def bad():
        with pytest.raises(TypeError, match="need a Pid"):
            await termite.trace("waiter")
        with pytest.raises(TypeError, match="needs a Pid"):
            termite.process_info("waiter")
        with pytest.raises(TypeError, match="needs a NodeRef"):
            termite.processes("somewhere:1")
        return await termite.trace(Pid(termite.current_node(), 10**9))  # no such process: nothing to trace

    assert node.run(bad, timeout=5) is False


# -- termite-launch --processes --------------------------------------------------------


@pytest.mark.timeout(120)
def test_processes_flag_prints_a_running_cluster_s_busiest_processes(tmp_path):
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(textwrap.dedent("""
        hosts:
          - address: localhost
            cores: 2
        heartbeat_timeout: 1.0
        heartbeat_interval: 0.1
        meter_interval: 0.2
    """))
    launch = [sys.executable, "-m", "termite_launcher", str(cluster)]
    started = subprocess.run([*launch, "--detach"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert started.returncode == 0, started.stderr
    try:
        shown = subprocess.run([*launch, "--processes"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert shown.returncode == 0, shown.stdout + shown.stderr
        state = json.loads((tmp_path / ".termite" / "cluster.json").read_text())
        for node in state["nodes"]:  # each node's meter, at least, among its processes
            address = node["address"]
            assert any(line.split()[1:4] == ["process", address, f"pid={address}/1"] for line in
                       shown.stdout.splitlines()), shown.stdout
    finally:
        subprocess.run([*launch, "--stop"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
