"""Supervisors (termite.supervisor): strategies, restart types, intensity, shutdown, specs, nesting, 5.3.

Children report their starts to the test process (tests/supervised.py), so the
tests wait on messages, never on the clock.
"""

import functools
import logging
import time

import pytest

import termite
from termite import (
    ANY, ChildSpec, ChildSpecError, Down, Exit, NodeRef, Pid, SupervisorError, gen_server, receive, send, supervisor,
)
from termite.supervisor import ChildCounts, ChildInfo, nested

from supervised import polite, pong_server, stubborn, tidy, worker  # importable on other nodes too

WAIT = 5  # seconds: only a failing test waits this long


def run(main, *args):
    return termite.run(main, *args)


def spec(tag, body=worker, **kw):
    """A child that reports its start to the calling process, as ``("started", tag, pid, node)``."""
    return ChildSpec(tag, body, args=(termite.self(), tag), **kw)


async def started(tag):
    """The pid of the child ``tag`` that has just (re)started."""
    return (await receive(("started", tag, Pid, NodeRef), timeout=WAIT))[2]


async def pids(sup):
    return {c.id: c.pid for c in await supervisor.which_children(sup)}


async def nothing_more():
    """No further report is waiting (call after a call to the supervisor: it has done its work)."""
    return await receive(("started", ANY, ANY, ANY), timeout=0, default=None) is None


# -- strategies ---------------------------------------------------------------------


def test_one_for_one_restarts_only_the_crashed_child():
    async def main():
        sup = supervisor.start([spec("a"), spec("b"), spec("c")], strategy="one_for_one")
        before = {tag: await started(tag) for tag in "abc"}
        assert await pids(sup) == before
        send(before["b"], "crash")
        new_b = await started("b")
        after = await pids(sup)
        return before, new_b, after, await nothing_more()

    before, new_b, after, quiet = run(main)
    assert new_b != before["b"]
    assert after == {"a": before["a"], "b": new_b, "c": before["c"]}
    assert quiet


def test_one_for_all_stops_the_others_in_reverse_order_and_restarts_all_in_order():
    async def main():
        sup = supervisor.start([spec("a"), spec("b"), spec("c")], strategy="one_for_all")
        before = [await started(tag) for tag in "abc"]
        watches = {termite.monitor(pid): tag for pid, tag in zip(before, "abc")}
        send(before[1], "crash")
        ends = [await receive(Down, timeout=WAIT) for _ in range(3)]
        restarts = [await receive(("started", ANY, Pid, NodeRef), timeout=WAIT) for _ in range(3)]
        return before, [(watches[d.ref], d.reason) for d in ends], restarts, await pids(sup)

    before, ends, restarts, after = run(main)
    assert ends[0][0] == "b" and isinstance(ends[0][1], termite.Crash)
    assert ends[1:] == [("c", "shutdown"), ("a", "shutdown")]  # reverse start order
    assert [r[1] for r in restarts] == ["a", "b", "c"]  # start order
    assert list(after.values()) == [r[2] for r in restarts]
    assert not set(after.values()) & set(before)


def test_rest_for_one_restarts_the_crashed_child_and_those_started_after_it():
    async def main():
        sup = supervisor.start([spec("a"), spec("b"), spec("c"), spec("d")], strategy="rest_for_one")
        before = [await started(tag) for tag in "abcd"]
        watches = {termite.monitor(pid): tag for pid, tag in zip(before, "abcd")}
        send(before[1], "crash")
        ends = [await receive(Down, timeout=WAIT) for _ in range(3)]
        restarts = [(await receive(("started", ANY, Pid, NodeRef), timeout=WAIT))[1] for _ in range(3)]
        return before, [(watches[d.ref], d.reason) for d in ends], restarts, await pids(sup), await nothing_more()

    before, ends, restarts, after, quiet = run(main)
    assert [tag for tag, _ in ends] == ["b", "d", "c"]
    assert [reason for _, reason in ends[1:]] == ["shutdown", "shutdown"]
    assert restarts == ["b", "c", "d"]
    assert after["a"] == before[0]
    assert all(after[tag] != before[i] for i, tag in enumerate("abcd") if tag != "a")
    assert quiet


# -- restart types ------------------------------------------------------------------


def test_permanent_transient_and_temporary_children():
    async def main():
        sup = supervisor.start([
            spec("perm"),
            spec("trans", restart="transient"),
            spec("temp", restart="temporary"),
            spec("trans2", restart="transient"),
        ])
        first = {tag: await started(tag) for tag in ("perm", "trans", "temp", "trans2")}
        send(first["perm"], ("exit", "normal"))   # permanent: restarted even after a normal end
        new_perm = await started("perm")
        send(first["trans2"], "crash")            # transient, crash: restarted
        new_trans2 = await started("trans2")
        for tag, how in [("trans", ("exit", "normal")), ("temp", "crash")]:
            watch = termite.monitor(first[tag])
            send(first[tag], how)  # transient ending normally, temporary: not restarted
            await receive(Down(watch, first[tag], ANY), timeout=WAIT)
        # The supervisor had each Exit before this call (links fire before monitors).
        return first, new_perm, new_trans2, await supervisor.which_children(sup), await nothing_more()

    first, new_perm, new_trans2, children, quiet = run(main)
    assert children == [
        ChildInfo("perm", new_perm, "worker"),
        ChildInfo("trans", None, "worker"),      # its spec stays
        ChildInfo("trans2", new_trans2, "worker"),
    ]                                            # the temporary one is forgotten
    assert new_perm != first["perm"] and new_trans2 != first["trans2"]
    assert quiet


@pytest.mark.parametrize("reason", ["shutdown", ("shutdown", "done")])
def test_a_transient_child_that_exits_with_shutdown_is_not_restarted(reason):
    async def main():
        sup = supervisor.start([spec("t", restart="transient")])
        t = await started("t")
        watch = termite.monitor(t)
        send(t, ("exit", reason))
        await receive(Down(watch, t, ANY), timeout=WAIT)
        return await supervisor.count_children(sup), await nothing_more()

    assert run(main) == (ChildCounts(specs=1, active=0, supervisors=0, workers=1), True)


# -- restart intensity --------------------------------------------------------------


def test_too_many_restarts_end_the_supervisor_and_its_children(crash_log):
    crash_log.set_level(logging.ERROR, logger="termite.supervisor")

    async def main():
        termite.trap_exit(True)
        sup = supervisor.start([spec("a"), spec("b")], intensity=2, period=30, link=True)
        a, b = await started("a"), await started("b")
        watch_b = termite.monitor(b)
        for _ in range(2):
            send(a, "crash")
            a = await started("a")
        send(a, "crash")  # the third restart in 30 s: more than 2
        exit_msg = await receive(Exit(sup, ANY), timeout=WAIT)
        down_b = await receive(Down(watch_b, b, ANY), timeout=WAIT)
        return exit_msg, down_b

    exit_msg, down_b = run(main)
    assert exit_msg.reason == "shutdown"  # a linked watcher sees the supervisor go
    assert down_b.reason == "shutdown"    # its other child was shut down first
    gave_up = [r for r in crash_log.records if r.name == "termite.supervisor"]
    assert len(gave_up) == 1 and "reached max restart intensity" in gave_up[0].getMessage()


def test_restarts_older_than_the_period_do_not_count(monkeypatch):
    from termite._behaviours import supervisor as otp_supervisor

    now = [1000.0]
    monkeypatch.setattr(otp_supervisor.time, "monotonic", lambda: now[0])
    state = otp_supervisor._State([], "one_for_one", 2, 5.0, ())
    assert state.may_restart() and state.may_restart()
    assert not state.may_restart()  # a third within 5 s
    now[0] += 5.1
    assert state.may_restart()  # the others have aged out
    state = otp_supervisor._State([], "one_for_one", 0, 5.0, ())
    assert not state.may_restart()  # intensity 0: no restart at all


# -- shutdown -----------------------------------------------------------------------


def test_a_child_that_traps_exits_and_never_ends_is_killed_after_its_shutdown_time():
    async def main():
        sup = supervisor.start([spec("s", stubborn, shutdown=0.2)])
        pid = await started("s")
        watch = termite.monitor(pid)
        t0 = time.monotonic()
        await supervisor.terminate_child(sup, "s")
        took = time.monotonic() - t0
        ignored = await receive(("ignored", "s", ANY), timeout=WAIT)
        down = await receive(Down(watch, pid, ANY), timeout=WAIT)
        return took, ignored[2], down.reason, await supervisor.which_children(sup)

    took, ignored, reason, children = run(main)
    assert 0.19 <= took < 2
    assert isinstance(ignored, Exit) and ignored.reason == "shutdown"  # it was asked first
    assert reason == "killed"
    assert children == [ChildInfo("s", None, "worker")]  # the spec stays, for restart_child


def test_a_child_that_traps_exits_may_clean_up_before_it_ends():
    async def main():
        sup = supervisor.start([spec("t", tidy, shutdown=30)])
        pid = await started("t")
        watch = termite.monitor(pid)
        t0 = time.monotonic()
        await supervisor.terminate_child(sup, "t")
        took = time.monotonic() - t0
        cleaned = await receive(("cleaned up", "t", ANY), timeout=0)
        return took, cleaned, (await receive(Down(watch, pid, ANY), timeout=WAIT)).reason

    took, cleaned, reason = run(main)
    assert took < 2  # it did not wait for the 30 s
    assert cleaned == ("cleaned up", "t", "shutdown")
    assert reason == "shutdown"


def test_brutal_kill_does_not_ask():
    async def main():
        sup = supervisor.start([spec("s", stubborn, shutdown="brutal_kill")])
        pid = await started("s")
        watch = termite.monitor(pid)
        await supervisor.terminate_child(sup, pid)  # by pid works too
        down = await receive(Down(watch, pid, ANY), timeout=WAIT)
        return down.reason, await receive(("ignored", ANY, ANY), timeout=0, default=None)

    assert run(main) == ("killed", None)


def test_stop_shuts_the_children_down_in_reverse_order():
    async def main():
        sup = supervisor.start([spec("a"), spec("b"), spec("c")])
        watches = {termite.monitor(await started(tag)): tag for tag in "abc"}
        watches[termite.monitor(sup)] = "sup"
        await supervisor.stop(sup)
        ends = [await receive(Down, timeout=WAIT) for _ in range(4)]
        return [(watches[d.ref], d.reason) for d in ends]

    assert run(main) == [("c", "shutdown"), ("b", "shutdown"), ("a", "shutdown"), ("sup", "normal")]


def test_the_end_of_the_parent_shuts_the_supervisor_down():
    async def parent(report_to):
        sup = supervisor.start([ChildSpec("a", worker, args=(report_to, "a"))], link=True)
        send(report_to, ("sup", sup))
        await receive("crash")
        raise RuntimeError("the parent fails")

    async def main():
        boss = termite.spawn(parent, termite.self())
        _, sup = await receive(("sup", Pid), timeout=WAIT)
        child = await started("a")
        watches = [termite.monitor(child), termite.monitor(sup)]
        send(boss, "crash")
        return [(await receive(Down(ref, ANY, ANY), timeout=WAIT)).reason for ref in watches]

    child_reason, sup_reason = run(main)
    assert child_reason == "shutdown"
    assert isinstance(sup_reason, termite.Crash) and sup_reason.message == "the parent fails"


# -- child specs --------------------------------------------------------------------


@pytest.mark.parametrize("field, value, says", [
    ("restart", "sometimes", "child 'db': restart='sometimes' is not one of permanent, transient, temporary"),
    ("type", "manager", "child 'db': type='manager' is not one of worker, supervisor"),
    ("shutdown", -1, "child 'db': shutdown=-1 is not a number of seconds >= 0, \"brutal_kill\" or \"infinity\""),
    ("shutdown", "soon", "child 'db': shutdown='soon' is not a number of seconds >= 0"),
    ("args", 5, "child 'db': args=5 is not a tuple of arguments for start"),
    ("name", "", "child 'db': name='' is not a non-empty str"),
    ("node", "node2", "child 'db': node='node2' is not a NodeRef"),
    ("start", 42, "child 'db': start=42 is not a function"),
])
def test_a_bad_field_is_named_with_its_value_and_what_is_allowed(field, value, says):
    fields = {"start": worker, field: value}
    with pytest.raises(ChildSpecError) as info:
        ChildSpec("db", **fields)
    assert str(info.value).startswith(says)
    assert (info.value.child, info.value.field, info.value.value) == ("db", field, value)
    with pytest.raises(ChildSpecError) as info:  # the dict form says the same
        termite.supervisor.child_spec({"id": "db", **fields})
    assert str(info.value).startswith(says)


def test_spec_errors_for_a_coroutine_an_unknown_key_a_duplicate_id_and_a_bad_strategy():
    coro = worker(None, "x")
    with pytest.raises(ChildSpecError, match=r"start is a coroutine.*start=worker, args=\(\.\.\.\)"):
        ChildSpec("db", coro)
    with pytest.raises(ChildSpecError, match="unknown field 'restrat'; a child spec has id, start, args, restart"):
        termite.supervisor.child_spec({"id": "db", "start": worker, "restrat": "permanent"})
    with pytest.raises(ChildSpecError, match="no 'start'"):
        termite.supervisor.child_spec({"id": "db"})
    with pytest.raises(ChildSpecError, match=r"child id \['x'\] is not hashable"):
        ChildSpec(["x"], worker)

    async def main():
        with pytest.raises(ChildSpecError, match=r"duplicate child id 'a' \(children 0 and 2\)") as info:
            supervisor.start([spec("a"), spec("b"), {"id": "a", "start": worker}])
        assert info.value.kind == "duplicate_id"
        with pytest.raises(ValueError, match="strategy='one_for_many' is not one of one_for_one, one_for_all"):
            supervisor.start([spec("a")], strategy="one_for_many")
        with pytest.raises(ValueError, match="intensity=-1"):
            supervisor.start([spec("a")], intensity=-1)
        with pytest.raises(ChildSpecError, match="child 'sub': restart='never'"):
            nested("sub", [spec("a")], restart="never")
        with pytest.raises(ChildSpecError, match="child 'sub': child 'x': type='boss'"):
            nested("sub", [{"id": "x", "start": worker, "type": "boss"}])
        return await receive(timeout=0, default="nothing was started")

    assert run(main) == "nothing was started"


def test_defaults_follow_erlang():
    assert ChildSpec("w", worker).shutdown == 5.0
    assert ChildSpec("s", supervisor.supervise, args=([],), type="supervisor").shutdown == "infinity"
    assert ChildSpec("w", worker, shutdown=float("inf")).shutdown == "infinity"
    assert ChildSpec("w", worker, args=[1, 2]).args == (1, 2)
    assert nested("n", []).type == "supervisor"


# -- operations ---------------------------------------------------------------------


def test_start_child_terminate_restart_delete_and_their_errors():
    async def main():
        sup = supervisor.start([spec("a")], name="sup")
        a = await started("a")
        b = await supervisor.start_child("sup", {"id": "b", "start": worker, "args": (termite.self(), "b")})
        assert b == await started("b")
        with pytest.raises(ChildSpecError, match="child id 'b' is already running") as info:
            await supervisor.start_child(sup, spec("b"))
        assert info.value.kind == "already_started"
        with pytest.raises(SupervisorError, match="'a' is running; terminate_child") as info:
            await supervisor.restart_child(sup, "a")
        assert info.value.kind == "running"
        with pytest.raises(SupervisorError, match="running") as info:
            await supervisor.delete_child(sup, "b")
        await supervisor.terminate_child(sup, "b")
        assert await supervisor.count_children(sup) == ChildCounts(2, 1, 0, 2)
        new_b = await supervisor.restart_child(sup, "b")
        assert new_b == await started("b") and new_b != b
        await supervisor.terminate_child(sup, "b")
        await supervisor.delete_child(sup, "b")
        with pytest.raises(SupervisorError, match="has no child 'b'") as info:
            await supervisor.restart_child(sup, "b")
        assert info.value.kind == "not_found"
        with pytest.raises(SupervisorError, match="has no child 'zz'"):
            await supervisor.terminate_child(sup, "zz")
        return a, await supervisor.which_children(sup)

    a, children = run(main)
    assert children == [ChildInfo("a", a, "worker")]


def test_a_registered_name_finds_the_restarted_child():
    async def main():
        supervisor.start([spec("db", name="db")])
        first = await started("db")
        assert termite.whereis("db") == first
        reply1 = await termite.call("db", "ping", timeout=WAIT)
        send("db", "crash")
        second = await started("db")
        return first, second, termite.whereis("db"), reply1, await termite.call("db", "ping", timeout=WAIT)

    first, second, now, reply1, reply2 = run(main)
    assert second != first and now == second
    assert reply1[:2] == reply2[:2] == ("pong", "db")


def test_a_child_that_cannot_be_started_fails_start_and_leaves_nothing_behind():
    async def squatter():
        await receive()

    async def main():
        termite.spawn(squatter, name="taken")
        procs = termite._core.process.current().table.procs
        before = set(procs)
        with pytest.raises(SupervisorError, match="could not start child 'b': NameTaken") as info:
            supervisor.start([spec("a"), spec("b", name="taken")], name="sup")
        left = [proc.pid for serial, proc in procs.items() if serial not in before]  # the supervisor and a
        watches = [termite.monitor(pid) for pid in left]
        reasons = sorted([(await receive(Down(ref, ANY, ANY), timeout=WAIT)).reason for ref in watches])
        return info.value.kind, len(left), reasons, termite.whereis("sup"), termite.whereis("taken") is not None

    # Child a never ran: the exit signal "shutdown" ended it before its first step.
    assert run(main) == ("failed_to_start_child", 2, ["normal", "shutdown"], None, True)


# -- nesting ------------------------------------------------------------------------


def test_nested_supervisors():
    async def main():
        top = supervisor.start([
            spec("a"),
            nested("pool", [spec("x"), spec("y")], strategy="one_for_all", intensity=1, name="pool"),
            spec("z"),
        ])
        first = {tag: await started(tag) for tag in "axyz"}
        pool = termite.whereis("pool")  # registered before start() returned
        assert await supervisor.which_children(top) == [
            ChildInfo("a", first["a"], "worker"), ChildInfo("pool", pool, "supervisor"), ChildInfo("z", first["z"], "worker"),
        ]
        send(first["x"], "crash")  # the pool restarts x and y; the top does nothing
        again = [(await receive(("started", ANY, Pid, NodeRef), timeout=WAIT))[1] for _ in range(2)]
        assert again == ["x", "y"]
        assert (await pids(top))["pool"] == pool
        x = (await pids(pool))["x"]
        send(x, "crash")  # a second restart in the pool's period: the pool gives up...
        # ...and the top, one_for_one, restarts the pool, which starts x and y again
        again = [(await receive(("started", ANY, Pid, NodeRef), timeout=WAIT))[1] for _ in range(2)]
        new_pool = (await pids(top))["pool"]
        return again, pool, new_pool, await pids(top), first

    again, pool, new_pool, top_children, first = run(main)
    assert again == ["x", "y"]
    assert new_pool != pool
    assert top_children["a"] == first["a"] and top_children["z"] == first["z"]


def test_stopping_the_top_stops_the_whole_tree():
    async def main():
        top = supervisor.start([nested("pool", [spec("x"), spec("y", stubborn, shutdown=0.1)]), spec("a")])
        watches = {termite.monitor(await started(tag)): tag for tag in "xya"}
        await supervisor.stop(top)
        ends = [await receive(Down, timeout=WAIT) for _ in range(3)]
        return [(watches[d.ref], d.reason) for d in ends]

    assert run(main) == [("a", "shutdown"), ("y", "killed"), ("x", "shutdown")]


def test_the_supervisor_is_a_gen_server():
    async def main():
        sup = supervisor.start([spec("a")])
        a = await started("a")
        watches = {termite.monitor(a): "a", termite.monitor(sup): "sup"}
        children = await gen_server.call(sup, ("which_children",))
        await gen_server.stop(sup, "shutdown")  # its terminate shuts the children down first
        ends = [await receive(Down, timeout=WAIT) for _ in range(2)]
        return children, a, [(watches[d.ref], d.reason) for d in ends]

    children, a, ends = run(main)
    assert children == ("ok", [ChildInfo("a", a, "worker")])
    assert ends == [("a", "shutdown"), ("sup", "shutdown")]


def test_supervise_is_a_process_body_too():
    async def main():
        termite.trap_exit(True)
        sup = termite.spawn(supervisor.supervise, [spec("a")], "one_for_one", 0, 1.0, link=True)
        a = await started("a")
        send(a, "crash")  # intensity 0: the first restart is one too many
        return sup, await receive(Exit, timeout=WAIT)

    sup, exit_msg = run(main)
    assert exit_msg == Exit(sup, "shutdown")


# -- the paper's transparent supervisor (section 5.3) ----------------------------------


def _info(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "termite.supervisor"]


def test_spawn_thunk_supervised_gives_the_trace_of_section_5_3(caplog):
    caplog.set_level(logging.INFO, logger="termite.supervisor")

    async def main():
        server = termite.spawn_thunk_supervised(pong_server, shutdown=0.1)
        answers = [
            await termite.call(server, "ping", timeout=WAIT, default="timeout"),
            await termite.call(server, "crash", timeout=0.2, default="crashed"),
            await termite.call(server, "ping", timeout=WAIT, default="timeout"),
        ]
        watch = termite.monitor(server)
        send(server, "shutdown")
        await receive(Down(watch, server, ANY), timeout=WAIT)
        return answers

    assert run(main) == ["pong", "crashed", "pong"]
    assert _info(caplog) == [
        "starting up supervised process",
        "process failed",
        "restarting...",
        "starting up supervised process",
        "had to terminate the process",
        "halting supervisor",
    ]


def test_a_worker_that_honours_shutdown_is_not_killed_and_too_many_failures_halt(caplog):
    caplog.set_level(logging.INFO, logger="termite.supervisor")

    async def main():
        sup = termite.spawn_thunk_supervised(polite, termite.self(), shutdown=30)
        await started("polite")
        watch = termite.monitor(sup)
        send(sup, "shutdown")
        first = (await receive(Down(watch, sup, ANY), timeout=WAIT)).reason

        termite.trap_exit(True)
        sup = termite.spawn_thunk_supervised(worker, termite.self(), "w", intensity=1, link=True)
        send(await started("w"), "crash")
        send(await started("w"), "crash")
        return first, await receive(Exit(sup, ANY), timeout=WAIT)

    first, exit_msg = run(main)
    assert first == "normal" and exit_msg.reason == "shutdown"
    assert _info(caplog) == [
        "starting up supervised process", "process ended", "halting supervisor",
        "starting up supervised process", "process failed", "restarting...", "starting up supervised process",
        "process failed", "process failed too often: giving up", "halting supervisor",
    ]


def test_spawn_thunk_supervised_checks_its_arguments_in_the_caller():
    async def main():
        coro = pong_server()
        with pytest.raises(TypeError, match=r"not a coroutine: write spawn_thunk_supervised\(pong_server, \.\.\.\)"):
            termite.spawn_thunk_supervised(coro)
        with pytest.raises(ValueError, match="shutdown='soon' is not a number of seconds"):
            termite.spawn_thunk_supervised(pong_server, shutdown="soon")
        with pytest.raises(ValueError, match="period=0 is not"):
            termite.spawn_thunk_supervised(pong_server, period=0)
        return await receive(timeout=0, default="nothing was started")

    assert run(main) == "nothing was started"


# -- children on other nodes ------------------------------------------------------------


def test_a_child_on_another_node_is_restarted_there_also_when_its_node_comes_back(cluster):
    here, start = cluster
    remote = start()
    ref = here.connect(*remote.ref.address)
    children = [ChildSpec("r", worker, args=(here.pid, "r"), node=ref), ChildSpec("l", worker, args=(here.pid, "l"))]
    # Each failed attempt to reach the lost node (1 s) counts as a restart: room for a slow start of the new one.
    sup = here.run(functools.partial(supervisor.start, children, intensity=10, period=60))
    first = here.receive(("started", "r", Pid, NodeRef), timeout=10)
    here.receive(("started", "l", Pid, NodeRef), timeout=10)
    assert first[3] == ref
    assert here.call(first[2], "ping", timeout=10) == ("pong", "r", ref)

    here.send(first[2], "crash")  # a crash there: restarted there, a new pid
    second = here.receive(("started", "r", Pid, NodeRef), timeout=10)
    assert second[3] == ref and second[2] != first[2]

    remote.kill()  # the node is lost: noconnection, a crash like any other
    back = start("--port", str(ref.port))  # a new node at the same address
    third = here.receive(("started", "r", Pid, NodeRef), timeout=15)
    assert third[3] == back.ref != ref
    assert here.call(third[2], "ping", timeout=10) == ("pong", "r", back.ref)
    assert here.run(supervisor.which_children, sup)[0] == ChildInfo("r", third[2], "worker")


def test_a_gen_server_is_supervised_with_gen_server_serve(node):
    from servers import Counter

    from termite import gen_server

    sup = node.run(supervisor.start, [supervisor.ChildSpec("counter", gen_server.serve, args=(Counter(), 5), name="counter")])
    first = node.whereis("counter")
    assert node.call("counter", ("add", 1), timeout=5) == 6
    node.monitor(first)
    node.send("counter", (node.pid, termite.make_tag(), "crash"))
    node.receive(termite.Down, timeout=5)
    # The supervisor had the exit before this call: it answers after restarting.
    [child] = node.run(supervisor.which_children, sup)
    second = node.whereis("counter")
    assert second == child.pid != first
    assert node.call(second, "get", timeout=5) == 5  # a fresh state, from init
    node.run(supervisor.stop, sup)
