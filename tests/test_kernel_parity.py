"""The C kernel and the Python kernel behave the same: each program below runs on both, in
a fresh interpreter with TERMITE_KERNEL=c and =python, and what it observed must be equal.

A program returns a list of observations: the order processes ran in, the values and
errors they got, the wake-ups and steps the kernel counted, what was left in mailboxes
and timers.  Times never appear in them, only outcomes.  Run this file as a script
(``python tests/test_kernel_parity.py NAME``) to print one program's observations.
"""

from __future__ import annotations

import asyncio
import importlib.util
from decimal import Decimal
import inspect
import json
import os
import subprocess
import sys

import pytest

import termite
from termite import ANY, Pid, Tag, receive, send, spawn
from termite._core.kernel import Kernel
from termite._core.process import current
from termite._core.traps import reschedule

HERE = os.path.dirname(os.path.abspath(__file__))
C_BUILT = importlib.util.find_spec("termite._core._kernelcore") is not None


def _kernel() -> Kernel:
    return current().kernel


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


# -- the programs ---------------------------------------------------------------------------


def scheduling() -> list:
    """Who runs when: sends, receives, reschedules, sleep(0), a fairness trip, the steps counted."""
    log = []

    async def worker(name, n):
        for i in range(n):
            msg = await receive()
            log.append((name, "got", msg))
            if i % 3 == 0:
                await reschedule()
            if i % 4 == 1:
                await termite.sleep(0)
            send(msg[1], (name, i))

    async def flood(target, n):
        for i in range(n):
            send(target, ("flood", i))
        log.append(("flood", "sent", n))

    async def main():
        me = termite.self()
        a, b = spawn(worker, "a", 6), spawn(worker, "b", 6)
        for i in range(6):
            send(a, (i, me))
            send(b, (i, me))
        got = [await receive() for _ in range(12)]
        log.append(("main", "replies", got))
        box = spawn(flood, me, 150)  # a full mailbox: 64 switch-free receives, then a reschedule
        ticker_log = []

        async def ticker():
            for i in range(5):
                ticker_log.append(len(log))
                await reschedule()

        spawn(ticker)
        taken = [await receive() for _ in range(150)]
        log.append(("main", "took", len(taken), taken[0], taken[-1], ticker_log, box.serial))
        log.append(("steps", _kernel().steps, _kernel().runnable()))
        return log

    return termite.run(main)


async def _send_later(to, msg):
    await termite.sleep(0.01)
    send(to, msg)


def receives() -> list:
    """Receive's forms: plain, timed, patterns, defaults, timeouts, bad arguments."""
    out = []

    async def main():
        me = termite.self()
        for m in [1, "two", (3, "three"), ("set!", 4), 5.0, None, ("x", 1, 2)]:
            send(me, m)
        out.append(await receive(str))
        out.append(await receive(("set!", ANY)))
        out.append(await receive((int, str)))
        out.append(await receive(where=lambda m: m is None))
        out.append(await receive(float, timeout=0))
        out.append(await receive(("x", ...)))
        out.append(await receive(timeout=0))
        send(me, "waiting")
        out.append(await receive(timeout=0.5))  # a message already there
        spawn(_send_later, me, "woken")
        out.append(await receive(timeout=5))  # a timed wait that a message ends
        out.append(await receive(timeout=0.01, default="d"))
        for bad in ({"timeout": -1}, {"timeout": float("nan")}, {"default": 1}, {"timeout": "soon"}):
            try:
                await receive(**bad)
            except (TypeError, ValueError) as exc:
                out.append(_error(exc))
        for kwargs in ({"timeout": 0}, {"timeout": 0.01}, {"timeout": 0.01, "default": None}):
            try:
                out.append(("value", await receive(**kwargs)))
            except termite.Timeout as exc:
                out.append(_error(exc))
        send(me, "late")
        r = receive()
        out.append(("awaitable", inspect.isawaitable(r)))  # a generator in Python, an awaitable object in C
        out.append(await r)
        out.append(await r)  # an exhausted receive gives None, as an exhausted generator does
        out.append(("timers", sum(1 for e in _kernel().timers if e[2] is not None)))
        return out

    return termite.run(main)


def patterns() -> list:
    """Receive with patterns: each kind the C receive matches itself, those it leaves to Python, the waits."""
    import collections.abc

    out = []

    class Loud:
        def __eq__(self, other):
            raise RuntimeError("no comparing me")

        __hash__ = object.__hash__

    async def main():
        me = termite.self()
        tag = Tag((7, 7))  # not make_tag(): its origin differs from run to run
        other = spawn(_send_later, me, "from other")
        await receive("from other")
        box = [1, True, 1.0, "s", b"b", None, False, ("k", 1), ("k", 1, 2), (tag, "reply"), (tuple(tag), "fake"),
               ("deep", ("er", 3)), other, {"a": 1}, [1, 2], ()]
        for m in box:
            send(me, m)
        kinds = [True, 1, None, False, b"b", "s", ("k", ANY), ("k", ...), (tag, ANY), ((str, int), str),
                 ("deep", ("er", int)), other, object, ANY, collections.abc.Mapping, list, (), int]
        for p in kinds[:-1]:
            try:
                out.append((repr(p), repr(await receive(p, timeout=0))))
            except termite.Timeout as exc:
                out.append((repr(p), _error(exc)))
        out.append(("left", repr(list(current().mailbox or ()))))
        # several patterns: the first message that matches any, in arrival order
        for m in ("a", 2, ("t", 1), 3.5):
            send(me, m)
        out.append(await receive(("t", int), float, timeout=0))
        out.append(await receive(float, int))
        # waits: a non-matching arrival, then a matching one; with and without a timeout
        spawn(_send_later, me, "no")
        spawn(_send_later, me, ("yes", 1))
        out.append(await receive(("yes", int)))
        spawn(_send_later, me, ("yes", 2))
        out.append(await receive(("yes", int), timeout=5))
        try:
            await receive(("never", ANY), timeout=0.01)
        except termite.Timeout as exc:
            out.append(_error(exc))
        out.append(("timers", sum(1 for e in _kernel().timers if e[2] is not None)))
        # what Python checks and refuses: the same errors
        for bad in [("a", ..., "b"), float("nan"), (1, float("nan"))]:
            try:
                await receive(bad, timeout=0)
            except Exception as exc:
                out.append(_error(exc))
        for bad_timeout in (-1, float("nan"), "soon", -0.5):
            try:
                await receive(int, timeout=bad_timeout)
            except Exception as exc:
                out.append(_error(exc))
        # patterns the C receive leaves to Python, mixed with ones it takes
        send(me, termite.Down(tag, me, "normal"))
        send(me, [1, 2])
        send(me, {"k": 1})
        out.append(repr(await receive(termite.Down(tag, ANY, ANY), timeout=0)))
        out.append(await receive([int, int], str, timeout=0))
        out.append(await receive({"k": int}, where=lambda m: True))
        out.append(await receive(lambda m: m == "x", "y", timeout=0, default="dflt"))
        # a message whose == raises: the error reaches the receiver, the message stays
        send(me, Loud())
        try:
            await receive("x", timeout=0)
        except RuntimeError as exc:
            out.append(_error(exc))
        out.append(("kept", len(current().mailbox)))
        await receive(Loud)
        # a signal while waiting with patterns: the wait's state is undone
        async def waiter():
            try:
                await receive(("go", int), timeout=30)
            except Exception as exc:
                send(me, ("waiter", _error(exc)))
        w = spawn(waiter)
        await termite.sleep(0)
        termite.exit(w, "stop")
        out.append(await receive(("waiter", ANY), timeout=5))
        out.append(("timers", sum(1 for e in _kernel().timers if e[2] is not None)))
        # introspection of a wait with patterns
        async def parked():
            await receive(("go", int), str, timeout=30)
        q = spawn(parked)
        await termite.sleep(0)
        info = termite.process_info(q)
        out.append((info.state, info.status, info.waiting_for))
        send(q, ("go", 1))
        return out

    return termite.run(main)


def signals() -> list:
    """Exit signals and kills reaching processes parked in each kind of receive."""
    out = []

    async def parked(kind):
        try:
            if kind == "plain":
                await receive()
            elif kind == "timed":
                await receive(timeout=30)
            elif kind == "pattern":
                await receive("never")
            else:
                await termite.sleep(30)
        finally:
            out.append(("finally", kind))

    async def main():
        termite.trap_exit(True)
        kinds = ["plain", "timed", "pattern", "sleep"]
        pids = {kind: spawn(parked, kind, link=True) for kind in kinds}
        await termite.sleep(0)
        for kind in kinds[:2]:
            termite.exit(pids[kind], "stop")
        for kind in kinds[2:]:
            termite.kill(pids[kind])
        exits = [await receive(termite.Exit) for _ in kinds]
        out.append(sorted((p.serial, str(reason)) for p, reason in exits))
        out.append(("timers", sum(1 for e in _kernel().timers if e[2] is not None)))
        # a message delivered to a process already queued with a signal is kept, not lost
        keeper = spawn(parked, "plain")
        await termite.sleep(0)
        send(keeper, "first")
        termite.exit(keeper, "normal")
        termite.exit(keeper, "reason")
        out.append(termite.process_info(keeper) is not None)
        await termite.sleep(0)
        out.append(termite.process_info(keeper))
        return out

    return termite.run(main)


def calls() -> list:
    """call: replies past a backlog, deaths, timeouts, a call to oneself, a dead pid."""
    out = []

    async def echo():
        while True:
            sender, tag, msg = await receive((Pid, Tag, ANY))
            if msg == "die":
                raise RuntimeError("asked to")
            send(sender, (tag, msg * 2))

    async def silent():
        await receive("never")

    async def main():
        me = termite.self()
        server = spawn(echo)
        for i in range(3):
            send(me, ("backlog", i))
        out.append([await termite.call(server, i) for i in range(5)])
        out.append(await termite.call(spawn(silent), "x", timeout=0.01, default="no answer"))
        try:
            await termite.call(spawn(silent), "x", timeout=0.01)
        except termite.Timeout as exc:
            out.append(_error(exc).split(" from ")[0])
        try:
            await termite.call(server, "die")
        except termite.DeadProcess as exc:
            out.append(("dead", str(exc.reason).splitlines()[0]))
        try:
            await termite.call(server, 1)
        except termite.DeadProcess as exc:
            out.append(("dead", exc.reason))
        out.append([await receive() for _ in range(3)])
        out.append(("mailbox", current().mailbox and list(current().mailbox)))
        out.append(("monitors", len(current().table.monitored)))
        return out

    return termite.run(main)


def call_monitors() -> list:
    """A call's monitor, kept on its target until read: seen by process_info, gone after a reply (with
    the Down of a target that ended right after it), a timeout or the caller's end, fired by the
    target's end, for calls answered in any order."""
    out = []

    def seen(pid):
        info = termite.process_info(pid)
        return info and (info.monitors, sorted(map(str, info.monitored_by)), sorted(map(str, info.monitoring)))

    async def gather(n, order):
        requests = [await receive((Pid, Tag, ANY)) for _ in range(n)]
        out.append(("server sees", seen(termite.self())))
        out.append(("first caller sees", seen(requests[0][0])))
        for i in order:
            sender, tag, msg = requests[i]
            send(sender, (tag, msg))
        await receive("stop")

    async def caller(server, name, boss):
        send(boss, (name, await termite.call(server, name)))

    async def doomed(server, boss):
        try:
            await termite.call(server, "doomed")
        except termite.DeadProcess as exc:
            send(boss, ("dead", exc.reason))

    async def answers_and_ends():
        sender, tag, msg = await receive((Pid, Tag, ANY))
        send(sender, (tag, msg))  # and ends in the same turn: its Down comes right behind the reply

    async def main():
        me = termite.self()
        out.append(await termite.call(spawn(answers_and_ends), "last words"))
        await termite.sleep(0.01)
        out.append(("no Down after the reply", current().mailbox and list(current().mailbox)))
        server = spawn(gather, 3, [1, 0, 2])  # the middle one answered first
        for name in ("a", "b", "c"):
            spawn(caller, server, name, me)
        out.append(sorted([await receive() for _ in range(3)]))
        out.append(("after replies", seen(server)))
        send(server, "stop")

        slow = spawn(gather, 1, [])
        out.append(await termite.call(slow, "late", timeout=0.01, default="timed out"))
        out.append(("after a timeout", seen(slow)))
        victim = spawn(caller, slow, "killed", me)
        await termite.sleep(0.01)
        out.append(("while called", seen(slow)))
        termite.kill(victim)
        await termite.sleep(0)
        out.append(("after the caller's end", seen(slow), bool(current().table.resolve(slow).callers)))
        for _ in range(2):
            spawn(doomed, slow, me)
        await termite.sleep(0.01)
        termite.exit(slow, "shut")
        out.append(sorted([await receive() for _ in range(2)]))
        out.append(("mailbox", current().mailbox and list(current().mailbox)))
        out.append(("monitors", len(current().table.monitored)))
        return out

    return termite.run(main)


def crashes() -> list:
    """How processes end: returns, raises, errors in receive, sends to nonsense."""
    out = []

    async def returns():
        return "value"

    async def raises():
        await receive(timeout=0.001, default=None)
        raise KeyError("k")

    async def main():
        me = termite.self()
        for body in (returns, raises):
            pid = spawn(body)
            ref = termite.monitor(pid)
            down = await receive(termite.Down)
            out.append((down.ref == ref, str(down.reason).splitlines()[-1] if down.reason != "normal" else "normal"))
        for dest in (42, "nobody", ("name", "node")):
            try:
                send(dest, "x")
            except Exception as exc:  # noqa: BLE001 - which error, and what it says, is the observation
                out.append(_error(exc))
        send(Pid(current().table.ref, 10**9), "to nobody")
        out.append(("dropped", current().table.dropped))
        termite.register("me", me)
        send("me", "by name")
        out.append(await receive())
        try:
            await receive(1, 2, timeout=-1)
        except ValueError as exc:
            out.append(_error(exc))
        return out

    out2 = termite.run(main)
    try:
        asyncio.run(_outside())
    except Exception as exc:  # noqa: BLE001 - which error is the observation
        out2.append(_error(exc))
    try:
        termite.send(Pid(termite.NodeRef("local", 0, 1), 1), "x")
    except Exception as exc:  # noqa: BLE001
        out2.append(_error(exc))
    return out2


async def _outside():
    return await receive()


def asyncio_bridge() -> list:
    """Processes awaiting asyncio: futures, sleeps, a bad awaitable."""
    out = []

    class Bad:
        def __await__(self):
            yield "not a future"

    async def main():
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        loop.call_later(0.01, fut.set_result, "from asyncio")
        out.append(await fut)
        await asyncio.sleep(0.001)
        # asyncio.wait_for needs an asyncio task from 3.12 on (its timeout asks for the current one):
        # a process gives it one with ensure_future, as the guide says.
        out.append(await asyncio.ensure_future(asyncio.wait_for(asyncio.sleep(0, "slept"), 1)))
        try:
            await Bad()
        except TypeError as exc:
            out.append(str(exc).split(";")[0])
        return out

    return termite.run(main)


def flow() -> list:
    """Kernel.hold and release: a held process runs its step, then waits for the release."""
    out = []

    async def sender(target):
        for i in range(3):
            send(target, i)
            _kernel().hold("key")
            out.append(("sent", i))
            await reschedule()

    async def main():
        me = termite.self()
        spawn(sender, me)
        for i in range(3):
            out.append(("got", await receive()))
            await termite.sleep(0)
            await termite.sleep(0)
            out.append(("stashed", len(_kernel()._stashed)))
            _kernel().release("key")
        return out

    return termite.run(main)


def spawned() -> list:
    """What spawn makes: every field of a new process, by spawn() and by the Python spawn_in."""
    from termite._core.process import Process
    from termite._core.spawn import spawn_in

    def fields(proc):
        names = [n for cls in type(proc).__mro__ for n in getattr(cls, "__slots__", ())]
        names += ["coro", "value", "waiting", "foreign", "kernel", "held", "mailbox", "wait_for"]
        names += ["woken", "handed", "queued", "sent", "tracers"]
        return {n: type(getattr(proc, n)).__name__ if n in ("coro", "kernel", "table") else repr(getattr(proc, n))
                for n in sorted(set(names))}

    async def idle(*args):
        await receive()

    async def main():
        by_spawn = spawn(idle, 1, 2)
        by_spawn_in = spawn_in(current().table, idle, (1, 2))
        one, two = by_spawn._proc, by_spawn_in._proc
        out = [type(one) is Process, fields(one) == {**fields(two), "pid": repr(by_spawn)}, fields(one)]
        out.append((by_spawn.serial + 1 == by_spawn_in.serial, by_spawn.node is current().table.ref))
        out.append([p.pid.serial for p in current().table.procs.values()][-2:] == [by_spawn.serial, by_spawn_in.serial])
        plain = spawn(len, "abc")  # not a coroutine function: spawn.py's path
        ref = termite.monitor(plain)
        out.append(await receive(termite.Down) == termite.Down(ref, plain, "normal"))
        try:
            spawn(idle(), 1)
        except TypeError as exc:
            out.append(_error(exc))
        return out

    return termite.run(main)


def introspected() -> list:
    """What process_info counts and says (received, sent, steps, state, waiting_for) at each kind of wait."""
    out = []

    def info(pid):
        i = termite.process_info(pid)
        return None if i is None else (i.received, i.sent, i.steps, i.state, i.status, i.waiting_for, i.mailbox)

    async def echo():
        while True:
            msg = await receive()
            if msg == "stop":
                return
            if isinstance(msg, tuple) and len(msg) == 3 and isinstance(msg[1], Tag):
                send(msg[0], (msg[1], msg[2]))  # a call's reply
            else:
                send(msg[0], msg[1])

    async def waits(kind, me):
        send(me, ("ready", kind))
        if kind == "plain":
            await receive()
        elif kind == "timed":
            await receive(timeout=30)
        elif kind == "pattern":
            await receive(("go", ANY), timeout=30)
        elif kind == "call":
            await termite.call(me, "never answered", timeout=30)
        elif kind == "sleep":
            await termite.sleep(30)
        await receive()

    async def main():
        me = termite.self()
        e = spawn(echo)
        for i in range(20):
            send(e, (me, i))
            assert await receive() == i
        out.append(("echo", info(e), info(me)))
        for i in range(5):
            out.append(await termite.call(e, ("tag", i)))
        out.append(("after calls", info(e), info(me)))
        for i in range(3):
            send(me, ("self", i))  # queued: not waited for
        out.append(("queued", info(me)))
        out.append([await receive(("self", ANY)) for _ in range(3)])
        waiters = {}
        for kind in ("plain", "timed", "pattern", "call", "sleep"):
            pid = spawn(waits, kind, me)
            assert await receive(("ready", kind)) == ("ready", kind)
            await termite.sleep(0)
            waiters[kind] = pid
        await termite.sleep(0)
        for kind, pid in waiters.items():
            out.append((kind, info(pid)))
        for pid in waiters.values():
            termite.exit(pid, "kill")
        send(e, "stop")
        return out

    return termite.run(main)


def traced() -> list:
    """termite.trace: the events a traced process reports, sent and received, and its end."""

    async def echo():
        while True:
            msg = await receive()
            if msg == "stop":
                return "done"
            send(msg[0], ("echo", msg[1]))

    async def main():
        me = termite.self()
        e = spawn(echo)
        assert await termite.trace(e)
        for i in range(4):
            send(e, (me, i))
            assert await receive(("echo", ANY)) == ("echo", i)
        send(e, "stop")
        events = []
        for _ in range(50):
            ev = await receive(termite.Trace, timeout=10)
            events.append((ev.event, repr(ev.message), None if ev.to is None else repr(ev.to)))
            if ev.event == "exit":
                break
        return [events, termite.process_info(me).sent]

    return termite.run(main)


def timeouts() -> list:
    """Receive and call timeouts: which fire, in what order (equal deadlines too), the heap they
    leave after many are answered first, a timer earlier than the one armed, a bad entry refused."""

    async def waiter(me, label, timeout):
        try:
            await receive(("never", ANY), timeout=timeout)
        except termite.Timeout:
            send(me, ("timed out", label))

    async def echo():
        while True:
            sender, tag, msg = await receive((Pid, Tag, ANY))
            send(sender, (tag, msg))

    async def pong():
        while True:
            sender, n = await receive()
            send(sender, n)

    async def main():
        me, out, kernel = termite.self(), [], _kernel()
        # Three with the same timeout, set in one turn: the same deadline to within the clock's
        # step, so the seq decides; then one shorter, set last, which must fire first.
        for label in ("a", "b", "c"):
            spawn(waiter, me, label, 0.05)
        spawn(waiter, me, "first", 0.01)
        out.append([await receive(("timed out", ANY), timeout=10) for _ in range(4)])
        # Thousands answered before their timeout: cancelled entries do not pile up.
        server, ponger = spawn(echo), spawn(pong)
        for i in range(3000):
            assert await termite.call(server, i, timeout=60) == i
            send(ponger, (me, i))
            assert await receive(timeout=60) == i
        out.append(("live timers", sum(1 for e in kernel.timers if e[2] is not None)))
        out.append(("heap bounded", len(kernel.timers) < 3000, kernel._stale_timers <= len(kernel.timers)))
        # A long timeout armed first, then a short one: the short one still fires on time.
        spawn(waiter, me, "long", 30)
        await termite.sleep(0)
        spawn(waiter, me, "short", 0.02)
        out.append(await receive(("timed out", ANY), timeout=10))
        # The heap's entries, as both kernels make them.
        task = current()
        entry = kernel.add_timer(100, task, "value")
        out.append((type(entry).__name__, len(entry), entry[2] is task, entry[3], entry[0] > kernel._clock()))
        kernel.cancel_timer(entry)
        kernel.cancel_timer(entry)  # twice: nothing more
        out.append((entry[2], kernel._stale_timers > 0))
        for delay in ("soon", Decimal(1)):
            try:
                kernel.add_timer(delay, task)
            except TypeError as exc:
                out.append(("refused", str(exc)))
        return out

    return termite.run(main)


PROGRAMS = {
    f.__name__: f
    for f in (scheduling, receives, patterns, signals, calls, call_monitors, crashes, asyncio_bridge, flow, spawned, introspected,
              traced, timeouts)
}


def _observe(name: str, kernel: str) -> str:
    # The debug allocator fills new memory with a pattern: a field the C kernel forgot to set crashes here.
    env = dict(os.environ, TERMITE_KERNEL=kernel, PYTHONMALLOC="debug")
    ran = subprocess.run([sys.executable, __file__, name], env=env, capture_output=True, text=True, timeout=60,
                         cwd=HERE)
    assert ran.returncode == 0, ran.stderr[-3000:]
    observed = json.loads(ran.stdout)
    assert observed["kernel"] == kernel
    return observed["observations"]


@pytest.mark.skipif(not C_BUILT, reason="the C kernel (termite/_core/_kernelcore.c) is not built")
@pytest.mark.parametrize("name", list(PROGRAMS))
def test_both_kernels_observe_the_same(name):
    assert _observe(name, "c") == _observe(name, "python")


def test_the_kernel_switch_refuses_a_name_it_does_not_know():
    env = dict(os.environ, TERMITE_KERNEL="rust")
    ran = subprocess.run([sys.executable, "-c", "import termite"], env=env, capture_output=True, text=True,
                         timeout=60)
    assert ran.returncode != 0
    assert "TERMITE_KERNEL='rust' names no kernel" in ran.stderr and "TERMITE_KERNEL=python" in ran.stderr


def test_the_c_functions_wear_the_python_signatures():
    import pickle

    from termite._core import mailbox

    for fn in (mailbox.send, mailbox.receive, mailbox.deliver):
        assert fn.__name__ in ("send", "receive", "deliver") and fn.__doc__
        assert pickle.loads(pickle.dumps(fn)) is fn
    assert str(inspect.signature(mailbox.receive)) == "(*patterns, timeout=None, default=NO_DEFAULT, where=None)"


if __name__ == "__main__":
    from termite._core.kernel import KERNEL

    observations = PROGRAMS[sys.argv[1]]()
    print(json.dumps({"kernel": KERNEL, "observations": repr(observations)}))
