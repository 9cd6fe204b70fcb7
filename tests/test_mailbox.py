"""send, receive (? and ??), timeouts, call (!?), sleep."""

import time

import pytest

import termite
from termite import ANY, Pid, Tag, Timeout, call, make_tag, receive, send, spawn


def run(main, *args):
    return termite.run(main, *args)


async def echo():
    while True:
        sender, tag, msg = await receive((Pid, Tag, ANY))
        send(sender, (tag, msg))


def test_messages_from_one_sender_arrive_in_order():
    async def sender(to, n):
        for i in range(n):
            send(to, i)

    async def main():
        spawn(sender, termite.self(), 1000)
        return [await receive() for _ in range(1000)]

    assert run(main) == list(range(1000))


def test_selective_receive_leaves_the_others_in_order():
    async def main():
        me = termite.self()
        for m in (1, 2, 3, 4, 5):
            send(me, m)
        odd = await receive(lambda m: m % 2)
        four = await receive(4)
        rest = [await receive(), await receive(), await receive()]
        return odd, four, rest

    assert run(main) == (1, 4, [2, 3, 5])


def test_selective_receive_waits_for_a_later_match_and_keeps_earlier_ones():
    async def late(to):
        send(to, "noise-1")
        send(to, "noise-2")
        await termite.sleep(0.01)
        send(to, ("wanted", 7))

    async def main():
        spawn(late, termite.self())
        wanted = await receive(("wanted", int))
        return wanted, await receive(), await receive()

    assert run(main) == (("wanted", 7), "noise-1", "noise-2")


def test_several_patterns_take_the_oldest_message_matching_any():
    async def main():
        me = termite.self()
        for m in ("x", ("set!", 1), (me, make_tag(), "ref")):
            send(me, m)
        match await receive((Pid, Tag, "ref"), ("set!", ANY)):
            case ("set!", value):
                return value

    assert run(main) == 1


def test_timeouts_with_and_without_a_default():
    async def main():
        got_default = await receive(timeout=0.01, default="none")
        polled = await receive(int, timeout=0, default="empty")
        try:
            await receive(timeout=0.01)
        except Timeout:
            raised = True
        return got_default, polled, raised

    assert run(main) == ("none", "empty", True)


def test_a_message_before_the_timeout_wins_and_the_timer_is_forgotten():
    async def main():
        me = termite.self()

        async def later():
            await termite.sleep(0.005)
            send(me, "in time")

        spawn(later)
        first = await receive(timeout=5)
        # The cancelled timer must not wake the next receive.
        second = await receive(timeout=0.02, default="timed out")
        return first, second

    assert run(main) == ("in time", "timed out")


async def _busy_once(seconds):
    await receive()
    time.sleep(seconds)  # a step that holds the node's thread, as CPU-bound work does


async def _wait_then_report(main, how):
    if how == "call":
        first = await call(main, "ready", timeout=0.05, default="timed out")
    else:
        send(main, (termite.self(), None, "ready"))
        pattern = () if how == "receive" else (str,)
        first = await receive(*pattern, timeout=0.05, default="timed out")
    then = await receive(timeout=0.5, default="nothing more")
    send(main, [first, then])


@pytest.mark.parametrize("how", ["receive", "receive(pattern)", "call"])
def test_a_message_queued_before_the_timeout_wins_though_the_timer_fires_first(how):
    # Was (balance failover, ~1 run in 15): the message woke the waiter, but
    # turns cut short by busy steps left it queued until its timer fell due.
    # The timer woke it again: it took the timeout (the message lost), and
    # its next wait took the second wake-up's None as a message.
    async def main():
        busy = [spawn(_busy_once, 0.003) for _ in range(40)]
        spawn(_wait_then_report, termite.self(), how)
        waiter, tag, _ = await receive((Pid, ANY, "ready"))
        for pid in busy:  # ready before the waiter: two turns' worth of 3 ms steps
            send(pid, "go")
        send(waiter, "hello" if tag is None else (tag, "hello"))
        time.sleep(0.1)  # a stall past the waiter's timeout, its message already handed over
        return await receive(list, timeout=5)

    assert run(main) == ["hello", "nothing more"]


def test_bad_timeouts_and_a_default_without_timeout_are_refused():
    async def main():
        errors = []
        for kwargs in ({"timeout": -1}, {"timeout": "5"}, {"default": None}):
            try:
                await receive(**kwargs)
            except (ValueError, TypeError) as exc:
                errors.append(str(exc))
        return errors

    errors = run(main)
    assert len(errors) == 3
    assert "give a timeout too" in errors[2]


def test_call_and_the_rpc_protocol():
    async def main():
        server = spawn(echo)
        tag = make_tag()
        send(server, (termite.self(), tag, "by hand"))
        _, by_hand = await receive((tag, ANY))
        return by_hand, await call(server, "by call")

    assert run(main) == ("by hand", "by call")


def test_call_times_out_with_default_or_timeout_error():
    async def silent():
        await receive(ANY)
        await receive(ANY)
        await receive(ANY)

    async def main():
        server = spawn(silent)
        default = await call(server, "x", timeout=0.01, default="no reply")
        try:
            await call(server, "x", timeout=0.01)
        except Timeout as exc:
            return default, str(exc)

    default, message = run(main)
    assert default == "no reply" and "no reply from" in message


def test_call_to_a_process_that_dies_does_not_hang():
    async def dies_on_request():
        await receive()
        raise RuntimeError("boom")

    async def main():
        dead = await call(spawn(dies_on_request), "x", default="gone")
        try:
            await call(spawn(dies_on_request), "x")
        except termite.DeadProcess as exc:
            return dead, exc.reason.exc_type

    assert run(main) == ("gone", "RuntimeError")


def test_call_finds_its_reply_past_a_backlog_and_leaves_the_backlog():
    async def main():
        me = termite.self()
        for i in range(10_000):
            send(me, ("unrelated", i))
        server = spawn(echo)
        replies = [await call(server, i) for i in range(100)]
        backlog = [await receive() for _ in range(10_000)]
        return replies, backlog

    replies, backlog = run(main)
    assert replies == list(range(100))
    assert backlog == [("unrelated", i) for i in range(10_000)]


def test_a_call_dropped_while_it_waits_undoes_its_wait_every_time():
    """A call awaitable thrown away unclosed while parked cleans up as it goes, however many times.

    The C kernel keeps spent call objects for the next calls: one whose
    clean-up ran on being dropped must not be handed out again, or the next
    one dropped would skip its clean-up and leave its process waiting for a
    reply.  (The target's `callers` is emptied first: it holds the C call
    object, which would otherwise outlive the drop.)
    """
    from termite._core.process import current
    from termite._core.traps import PARK

    async def silent():
        await receive("never sent")

    async def main():
        server = spawn(silent)
        target = current().table.resolve(server)
        seen = []
        for _ in range(3):
            waiting = call(server, "x")
            parked = waiting.send(None) is PARK
            target.callers.clear()
            del waiting
            seen.append((parked, current().waiting, current().wait_for))
        seen.append(await call(spawn(echo), "after"))
        return seen

    assert run(main) == [(True, None, None)] * 3 + ["after"]


def test_late_replies_do_not_confuse_the_next_call():
    async def slow_echo():
        while True:
            sender, tag, (delay, msg) = await receive((Pid, Tag, ANY))
            await termite.sleep(delay)
            send(sender, (tag, msg))

    async def main():
        server = spawn(slow_echo)
        first = await call(server, (0.05, "late"), timeout=0.001, default="timed out")
        second = await call(server, (0, "second"), timeout=5)
        return first, second

    assert run(main) == ("timed out", "second")


def test_send_to_a_registered_name_and_to_nonsense():
    async def main():
        spawn(echo, name="echo")
        reply = await call("echo", "named")
        errors = []
        for bad in (5, None, ("echo",)):
            try:
                send(bad, "x")
            except TypeError as exc:
                errors.append(str(exc))
        try:
            send("nobody", "x")
        except termite.NoSuchName as exc:
            errors.append(str(exc))
        return reply, errors

    reply, errors = run(main)
    assert reply == "named"
    assert "needs a Pid, a registered name (str) or (name, node)" in errors[0]
    assert "needs (name, node)" in errors[2]
    assert "register" in errors[3]


def test_send_to_an_ended_process_is_silently_lost():
    async def main():
        done = spawn(lambda: None)
        await termite.sleep(0)
        await termite.sleep(0)
        send(done, "into the void")
        return "ok"

    assert run(main) == "ok"


def test_receive_outside_a_process_says_what_to_do():
    coro = receive()
    with pytest.raises(termite.NotInProcess, match="node.receive"):
        coro.send(None)
    with pytest.raises(termite.NotInProcess, match="termite.run"):
        termite.self()


def test_a_process_with_a_full_mailbox_lets_others_run():
    # A process that always finds a message waiting must still yield now and then.
    async def main():
        me = termite.self()
        for i in range(10_000):
            send(me, i)
        ran = []
        spawn(lambda: ran.append("other"))
        for _ in range(10_000):
            await receive()
            if ran:
                return "fair"
        return "starved"

    assert run(main) == "fair"


def test_sleep_and_the_mailbox_keeps_filling():
    async def main():
        me = termite.self()
        spawn(lambda: send(me, "while asleep"))
        await termite.sleep(0.01)
        return await receive(timeout=0)

    assert run(main) == "while asleep"
