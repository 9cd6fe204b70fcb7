"""termite.gen_server: Erlang's generic server (paper, section 5.2)."""

import logging
import time

import pytest
from servers import Counter, Echo, Refuses, Stubborn

import termite
from termite import Crash, DeadProcess, Down, Exit, Timeout, gen_server, receive, send, spawn, where


def down_of(ref):
    return where(Down, lambda m: m.ref == ref)


# -- call, cast, info, stop -------------------------------------------------------


def test_call_cast_info_and_stop():
    async def main():
        me = termite.self()
        server = gen_server.start(Counter(), 5, me)
        seen = [await gen_server.call(server, "get"), await gen_server.call(server, ("add", 2))]
        gen_server.cast(server, ("add", 3))
        seen.append(await gen_server.call(server, "get"))  # after the cast: one mailbox, in order
        send(server, ("ping", me))  # handle_info
        seen.append(await receive(("pong", int), timeout=5))
        await gen_server.stop(server)
        seen.append(await receive(("terminated", "normal", int), timeout=5))
        with pytest.raises(DeadProcess) as info:
            await gen_server.call(server, "get")
        seen.append(info.value.reason)
        return seen

    assert termite.run(main) == [5, 7, 10, ("pong", 10), ("terminated", "normal", 10), "noproc"]


def test_a_registered_name_reaches_the_server():
    async def main():
        gen_server.start(Counter(), 1, name="counter")
        gen_server.cast("counter", ("add", 1))
        value = await gen_server.call("counter", "get")
        gen_server.cast("nobody", "lost")  # a cast never fails, as Erlang's
        with pytest.raises(DeadProcess):
            await gen_server.call("nobody", "get")
        with pytest.raises(DeadProcess):
            await gen_server.stop("nobody")
        return value

    assert termite.run(main) == 2


def test_the_default_init_takes_the_state_and_the_default_handle_info_logs(caplog):
    caplog.set_level(logging.WARNING, logger="termite")

    async def main():
        server = gen_server.start(Echo(), "state")
        send(server, "junk")  # no handle_info: logged, and the server goes on
        return await gen_server.call(server, "hi")

    assert termite.run(main) == ("state", "hi")
    assert "unexpected message: 'junk'" in caplog.text


def test_call_from_a_plain_thread(node):
    server = node.run(lambda: gen_server.start(Counter(), 40, name="counter"))
    # A call is the paper's (!? server request): node.call and termite.call reach handle_call.
    assert node.call(server, ("add", 2), timeout=5) == 42
    assert node.call("counter", "get", timeout=5) == 42
    assert node.run(gen_server.call, server, "get") == 42
    node.run(gen_server.stop, server)
    with pytest.raises(DeadProcess):
        node.call(server, "get", timeout=5)


# -- replies later, timeouts --------------------------------------------------------


async def call_and_report(server, request, reply_to):
    try:
        send(reply_to, ("answer", request, await gen_server.call(server, request, timeout=30)))
    except DeadProcess as exc:
        send(reply_to, ("dead", request, exc.reason))


def test_a_deferred_reply_from_the_server_or_any_other_process():
    async def main():
        me = termite.self()
        server = gen_server.start(Counter(), 0, me)
        spawn(call_and_report, server, "defer", me)
        _, first = await receive(("deferred", gen_server.From), timeout=5)
        spawn(call_and_report, server, "defer", me)
        _, second = await receive(("deferred", gen_server.From), timeout=5)
        gen_server.cast(server, ("release", second, "from the server"))
        gen_server.reply(first, "from main")
        answers = {await receive(("answer", "defer", str), timeout=5) for _ in range(2)}
        return answers, await gen_server.call(server, "get")  # the server went on meanwhile

    answers, count = termite.run(main)
    assert answers == {("answer", "defer", "from the server"), ("answer", "defer", "from main")}
    assert count == 0


def test_call_times_out_and_the_server_lives_on():
    async def main():
        server = gen_server.start(Counter(), 3, termite.self())
        start = time.perf_counter()
        with pytest.raises(Timeout):
            await gen_server.call(server, "defer", timeout=0.2)
        waited = time.perf_counter() - start
        return waited, await gen_server.call(server, "get")

    waited, count = termite.run(main)
    assert 0.15 <= waited < 2
    assert count == 3


def test_a_server_cannot_call_itself():
    class Selfish(gen_server.GenServer):
        async def handle_call(self, request, sender, state):
            try:
                await gen_server.call(termite.self(), "again")
            except RuntimeError as exc:
                return ("reply", str(exc), state)

    async def main():
        return await gen_server.call(gen_server.start(Selfish()), "go")

    assert "cannot call itself" in termite.run(main)


# -- crashes ---------------------------------------------------------------------------


def test_a_crashing_callback_fails_callers_at_once_runs_terminate_and_signals_links(crash_log):
    async def main():
        me = termite.self()
        termite.trap_exit(True)
        server = gen_server.start(Counter(), 7, me, link=True)
        spawn(call_and_report, server, "defer", me)  # a caller still waiting when it crashes
        await receive(("deferred", gen_server.From), timeout=5)
        start = time.perf_counter()
        with pytest.raises(DeadProcess) as info:
            await gen_server.call(server, "crash", timeout=30)
        elapsed = time.perf_counter() - start
        terminated = await receive(("terminated", Crash, int), timeout=5)
        pending = await receive(("dead", "defer", Crash), timeout=5)
        exit_msg = await receive(Exit, timeout=5)
        return elapsed, info.value, terminated, pending, exit_msg, server

    elapsed, error, terminated, pending, exit_msg, server = termite.run(main)
    assert elapsed < 2  # the monitor answered, not the 30 s timeout
    crash = error.reason
    assert error.pid == server and isinstance(crash, Crash)
    assert (crash.exc_type, crash.message) == ("RuntimeError", "counter crashed")
    assert "servers.py" in crash.traceback and "raise RuntimeError" in crash.traceback
    assert "Counter.handle_call" in crash.traceback  # the note says which callback and message
    assert terminated == ("terminated", crash, 7)
    assert pending[2] == crash
    assert exit_msg == Exit(server, crash)
    assert sum("counter crashed" in r.getMessage() for r in crash_log.records) == 1  # logged once


def test_a_crashing_cast_runs_terminate_with_the_crash():
    async def main():
        me = termite.self()
        server = gen_server.start(Counter(), 1, me)
        ref = termite.monitor(server)
        gen_server.cast(server, "crash")
        return await receive(("terminated", Crash, int), timeout=5), await receive(down_of(ref), timeout=5)

    (_, reason, _), down = termite.run(main)
    assert reason == down.reason and reason.exc_type == "ValueError"


def test_a_bad_return_stops_the_server_with_a_named_error():
    async def main():
        server = gen_server.start(Counter(), 1, termite.self())
        with pytest.raises(DeadProcess) as info:
            await gen_server.call(server, "bad return")
        return info.value.reason

    reason = termite.run(main)
    assert reason.exc_type == "termite.gen_server.BadReturn"
    assert "Counter.handle_call returned ('reply', 'missing the state')" in reason.message
    assert isinstance(reason.exception, gen_server.BadReturn)
    assert reason.exception.value == ("reply", "missing the state")


def test_an_exit_signal_from_a_link_ends_a_server_that_does_not_trap_exits():
    async def main():
        me = termite.self()
        server = gen_server.start(Counter(), 0, me)
        ref = termite.monitor(server)
        termite.exit(server, "go away")
        down = await receive(down_of(ref), timeout=5)
        terminated = await receive(("terminated", ...), timeout=0, default=None)
        return down.reason, terminated

    assert termite.run(main) == ("go away", None)  # no terminate, as in Erlang


# -- stopping ---------------------------------------------------------------------------


@pytest.mark.parametrize("request_", [("stop", "shutdown"), ("stop without reply", "shutdown")])
def test_a_stop_return_replies_after_terminate_and_ends_with_the_reason(request_):
    async def main():
        me = termite.self()
        termite.trap_exit(True)
        server = gen_server.start(Counter(), 2, me, link=True)
        try:
            answer = await gen_server.call(server, request_)
        except DeadProcess as exc:
            answer = ("dead", exc.reason)
        return answer, await receive(("terminated", ANYTHING, int), timeout=5), await receive(Exit, timeout=5), server

    answer, terminated, exit_msg, server = termite.run(main)
    assert answer == ("bye" if request_[0] == "stop" else ("dead", "shutdown"))
    assert terminated == ("terminated", "shutdown", 2)
    assert exit_msg == Exit(server, "shutdown")


ANYTHING = termite.ANY


def test_stop_waits_for_terminate_and_reports_the_reason():
    async def main():
        me = termite.self()
        termite.trap_exit(True)
        server = gen_server.start(Counter(), 0, me, link=True)
        await gen_server.stop(server, ("shutdown", "tidy"))
        # stop returned: terminate has run and the process has ended.
        terminated = await receive(("terminated", ANYTHING, int), timeout=0)
        exit_msg = await receive(Exit, timeout=5)
        with pytest.raises(DeadProcess) as info:
            await gen_server.stop(server)
        return terminated, exit_msg, info.value.reason

    terminated, exit_msg, again = termite.run(main)
    assert terminated == ("terminated", ("shutdown", "tidy"), 0)
    assert exit_msg.reason == ("shutdown", "tidy")
    assert again == "noproc"


def test_stop_times_out_and_kills_a_server_stuck_in_terminate():
    async def main():
        me = termite.self()
        server = gen_server.start(Stubborn(), me)
        ref = termite.monitor(server)
        with pytest.raises(Timeout):
            await gen_server.stop(server, "normal", timeout=0.2)
        return await receive(("terminating", ANYTHING), timeout=0), await receive(down_of(ref), timeout=5)

    terminating, down = termite.run(main)
    assert terminating == ("terminating", "normal")
    assert down.reason == "killed"


def test_a_server_trapping_exits_stops_when_its_parent_exits():
    async def parent(reply_to):
        server = gen_server.start(Counter(), 4, reply_to, True, link=True)  # init traps exits
        send(reply_to, ("server", server))
        await receive("fail")
        raise RuntimeError("the parent failed")

    async def main():
        me = termite.self()
        boss = spawn(parent, me)
        _, server = await receive(("server", termite.Pid), timeout=5)
        ref = termite.monitor(server)
        send(server, ("ping", me))
        await receive(("pong", 4), timeout=5)  # init has run: it traps exits now
        send(boss, "fail")
        return await receive(("terminated", Crash, int), timeout=5), await receive(down_of(ref), timeout=5)

    (_, reason, count), down = termite.run(main)
    assert reason.message == "the parent failed" and count == 4
    assert down.reason == reason


def test_exit_messages_from_others_go_to_handle_info():
    async def main():
        me = termite.self()
        server = gen_server.start(Counter(), 0, me, True)  # traps exits, no parent
        await gen_server.call(server, ("add", 0))  # init has run: it traps exits now
        termite.exit(server, "shutdown")  # not from its parent: just a message
        return await receive(("info", Exit), timeout=5), await gen_server.call(server, "get"), me

    (_, msg), count, me = termite.run(main)
    assert msg == Exit(me, "shutdown") and count == 0


# -- starting ----------------------------------------------------------------------------


def test_start_wait_returns_once_init_has_run():
    async def main():
        server = await gen_server.start_wait(Counter(), 9, name="waited")
        return termite.whereis("waited") == server, await gen_server.call(server, "get")

    assert termite.run(main) == (True, 9)


def test_start_wait_reports_an_init_that_raises(crash_log):
    async def main():
        with pytest.raises(gen_server.StartError) as info:
            await gen_server.start_wait(Refuses(), "raise")
        return info.value

    error = termite.run(main)
    assert isinstance(error.reason, Crash) and error.reason.message == "init refused"
    assert isinstance(error.__cause__, ValueError)
    assert isinstance(error.__cause__.__cause__, termite.RemoteTraceback)
    assert "servers.py" in error.__cause__.__cause__.text


@pytest.mark.parametrize("how", ["raise stop", "return stop"])
def test_an_init_that_stops_ends_the_server_without_terminate(how):
    async def main():
        with pytest.raises(gen_server.StartError) as info:
            await gen_server.start_wait(Refuses(), how)
        server = gen_server.start(Refuses(), how)
        with pytest.raises(DeadProcess) as dead:
            await gen_server.call(server, "anything")
        return info.value.reason, dead.value.reason

    assert termite.run(main) == ("not today", "not today")


def test_start_needs_an_instance():
    async def main():
        with pytest.raises(TypeError, match=r"start\(Counter\(\), \.\.\.\)"):
            gen_server.start(Counter)

    termite.run(main)


# -- another node ------------------------------------------------------------------------


def test_a_server_on_another_node(cluster):
    here, start = cluster
    ref = here.connect(*start().ref.address)

    server = here.run(lambda: gen_server.start(Counter(), 10, here.pid, node=ref))
    assert server.node == ref
    assert here.call(server, "where", timeout=10) == ref
    assert here.run(gen_server.call, server, ("add", 5)) == 15
    here.run(gen_server.cast, server, ("add", 1))
    assert here.call(server, "get", timeout=10) == 16

    with pytest.raises(DeadProcess) as info:
        here.run(gen_server.call, server, "crash")
    crash = info.value.reason
    assert crash.message == "counter crashed" and "servers.py" in crash.traceback
    assert here.receive(("terminated", Crash, int), timeout=10) == ("terminated", crash, 16)

    waited = here.run(lambda: gen_server.start_wait(Counter(), 1, node=ref, timeout=10))
    assert here.call(waited, "get", timeout=10) == 1
    here.run(gen_server.stop, waited)
    with pytest.raises(DeadProcess):
        here.call(waited, "get", timeout=10)


def test_a_server_named_on_another_node_by_name_and_node(cluster):
    here, start = cluster
    ref = here.connect(*start().ref.address)
    server = here.run(lambda: gen_server.start_wait(Counter(), 3, name="kv", node=ref, timeout=10))
    kv = ("kv", ref)  # Erlang's {kv, Node}
    assert here.run(gen_server.call, kv, ("add", 2)) == 5
    here.run(gen_server.cast, kv, ("add", 1))
    assert here.run(gen_server.call, kv, "get") == 6
    here.run(gen_server.stop, kv)
    with pytest.raises(DeadProcess) as info:
        here.run(gen_server.call, kv, "get")
    assert info.value.reason == "noproc" and here.run(termite.whereis_on, ref, "kv") is None
    assert server.node == ref


# -- then: idle timeouts and continues ------------------------------------------------


class Idle(gen_server.GenServer):
    """Reports idle timeouts to ``watcher``; a cast sets the next one (or none)."""

    async def init(self, watcher):
        return gen_server.Init({"watcher": watcher, "timeouts": 0}, 0.05)

    async def handle_cast(self, then, state):
        return ("noreply", state) if then is None else ("noreply", state, then)

    async def handle_call(self, request, sender, state):
        return ("reply", state["timeouts"], state)  # no `then`: no timeout after it

    async def handle_info(self, msg, state):
        assert msg == "timeout"
        state["timeouts"] += 1
        send(state["watcher"], ("timeout", state["timeouts"]))
        return ("noreply", state)


def test_an_idle_timeout_runs_handle_info_unless_a_message_comes_first():
    async def main():
        me = termite.self()
        server = gen_server.start(Idle(), me)
        first = await receive(("timeout", int), timeout=5)  # from init's Init(state, 0.05)
        gen_server.cast(server, 0.05)
        second = await receive(("timeout", int), timeout=5)
        gen_server.cast(server, 30)  # a long one, cancelled by the call that follows at once
        count = await gen_server.call(server, "count")
        gen_server.cast(server, 0)
        third = await receive(("timeout", int), timeout=5)
        await gen_server.stop(server)
        return first, second, count, third

    assert termite.run(main) == (("timeout", 1), ("timeout", 2), 2, ("timeout", 3))


class Loader(gen_server.GenServer):
    """Starts fast; loads in handle_continue, before any call is answered."""

    async def init(self, log_to):
        send(log_to, "init")
        return gen_server.Init([log_to], gen_server.Continue("table"))

    async def handle_continue(self, what, state):
        send(state[0], ("loading", what))
        if what == "table":
            return ("noreply", state + ["table"], gen_server.Continue("index"))
        return ("noreply", state + [what])

    async def handle_call(self, request, sender, state):
        return ("reply", state[1:], state)


def test_continue_runs_after_init_and_before_any_message():
    async def main():
        me = termite.self()
        server = await gen_server.start_wait(Loader(), me)
        loaded = await gen_server.call(server, "what is loaded")
        events = [await receive(timeout=5) for _ in range(3)]
        await gen_server.stop(server)
        return loaded, events

    assert termite.run(main) == (["table", "index"], ["init", ("loading", "table"), ("loading", "index")])


@pytest.mark.parametrize("bad", [-1, "soon", gen_server.Continue])
def test_a_bad_then_is_a_bad_return_that_names_the_forms(bad, crash_log):
    async def main():
        server = gen_server.start(Idle(), termite.self())
        ref = termite.monitor(server)
        gen_server.cast(server, bad)
        return (await receive(down_of(ref), timeout=5)).reason

    reason = termite.run(main)
    assert reason.exc_type == "termite.gen_server.BadReturn" and "Continue(arg)" in reason.message and "seconds" in reason.message
