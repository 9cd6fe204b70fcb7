"""spawn and its errors; the local registry."""

import functools

import pytest

import termite
from termite import NameTaken, receive, register, send, spawn, unregister, whereis


def run(main, *args):
    return termite.run(main, *args)


async def reply_to(pid, value):
    send(pid, value)


def test_spawn_runs_async_functions_plain_callables_lambdas_and_partials():
    async def main():
        me = termite.self()
        spawn(reply_to, me, "async")
        spawn(lambda: send(me, "lambda"))
        spawn(functools.partial(reply_to, me, "partial"))
        spawn(lambda: reply_to(me, "lambda returning a coroutine"))
        return sorted([await receive(timeout=1) for _ in range(4)])

    assert run(main) == ["async", "lambda", "lambda returning a coroutine", "partial"]


def test_spawn_of_a_coroutine_object_shows_the_fix():
    async def main():
        try:
            spawn(reply_to(termite.self(), 1))
        except TypeError as exc:
            return str(exc)

    assert "spawn(reply_to, ...) instead of spawn(reply_to(...))" in run(main)


def test_spawn_refuses_non_callables_and_generators():
    def gen():
        yield 1

    async def main():
        errors = []
        for bad in (42, gen):
            try:
                spawn(bad)
            except TypeError as exc:
                errors.append(str(exc))
        return errors

    errors = run(main)
    assert "needs a function" in errors[0]
    assert "generator function" in errors[1]


def test_spawn_outside_a_process_points_to_run_and_node():
    with pytest.raises(termite.NotInProcess, match="termite.run"):
        spawn(reply_to, None, None)


def test_a_million_is_not_needed_but_many_processes_are_cheap():
    async def child(parent, i):
        send(parent, await receive() + i)

    async def main():
        me = termite.self()
        pids = [spawn(child, me, i) for i in range(20_000)]
        for pid in pids:
            send(pid, 1)
        return sum([await receive() for _ in pids])

    assert run(main) == sum(range(20_000)) + 20_000


def test_register_whereis_send_and_the_name_is_freed_at_exit():
    async def main():
        async def named():
            await receive("stop")

        pid = spawn(named, name="svc")
        assert whereis("svc") == pid
        assert "svc" in termite.registered()
        errors = []
        try:
            register("svc", termite.self())
        except NameTaken as exc:
            errors.append(str(exc))
        try:
            register("other", pid)
        except NameTaken as exc:
            errors.append(str(exc))
        ref = termite.monitor(pid)
        send("svc", "stop")
        await receive(termite.Down, timeout=1)
        return errors, whereis("svc"), ref is not None

    errors, after, _ = run(main)
    assert "already registered to" in errors[0]
    assert "has one name" in errors[1]
    assert after is None


def test_unregister_keeps_the_process_and_frees_the_name():
    async def main():
        register("me", termite.self())
        unregister("me")
        register("me-again", termite.self())
        try:
            unregister("never")
        except LookupError as exc:
            return whereis("me"), whereis("me-again") == termite.self(), str(exc)

    assert run(main) == (None, True, "'never' is not registered")


def test_spawn_with_a_taken_name_starts_nothing():
    async def main():
        register("taken", termite.self())
        before = len(termite.registered())
        try:
            spawn(reply_to, None, None, name="taken")
        except NameTaken:
            return before == len(termite.registered())

    assert run(main) is True
