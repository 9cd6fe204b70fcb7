"""Continuations (termite/_move/continuation.py): capture a suspended process, restore it, go on.

Processes here are driven by hand, as the kernel drives them: ``send`` until
the process yields the migration request, capture, restore (in this
interpreter, or in a fresh one), then ``send`` the migration's result into the
restored chain and drive it to its end.  Progress shows as ``note(x)``
requests the driver records, and as entries in ``EVENTS`` for what runs where
(finally blocks, ``__exit__``), which a subprocess sends back.

The process functions are at the top of this module so that a fresh
interpreter with tests/ on its path finds them by name.
"""

from __future__ import annotations

import contextlib
import gc
import os
import pickle
import socket
import subprocess
import sys
import textwrap
import threading
import time
import types
import weakref

import pytest

from termite._move import continuation
from termite._move.chain import PYTHONS, framestate
from termite._move.continuation import NULL, abandon, capture, capture_frames, restore, supported
from termite._move.fingerprint import fingerprint
from termite._move.rebuild import new_gen
from termite._core.errors import MigrationError
from termite._core.ids import NodeRef, Pid, Tag
from termite._core.traps import PARK, park

pytestmark = [
    pytest.mark.timeout(30),
    pytest.mark.skipif(sys.version_info[:2] not in PYTHONS, reason="live migration needs CPython 3.11 to 3.13"),
]

TESTS = os.path.dirname(os.path.abspath(__file__))
MIGRATE = "migrate, please"
EVENTS: list = []  # what ran, in this interpreter


@pytest.fixture(autouse=True)
def _events():
    EVENTS.clear()
    yield
    EVENTS.clear()


# -- traps and the driver ---------------------------------------------------------


@types.coroutine
def migrate():
    """The trap: ask to migrate; returns what the restored chain is sent."""
    return (yield MIGRATE)


@types.coroutine
def note(x):
    yield ("note", x)


def drive(coro, value=None):
    """Run ``coro`` until it asks to migrate or ends: (notes, outcome)."""
    notes = []
    while True:
        try:
            request = coro.send(value)
        except StopIteration as stop:
            return notes, ("returned", stop.value)
        except Exception as exc:  # noqa: BLE001 - the process's own exception is its outcome
            return notes, ("raised", type(exc).__name__, str(exc))
        value = None
        if request == MIGRATE:
            return notes, ("migrating",)
        notes.append(request[1])


def start(fn, *args):
    """Start a process and drive it to its migration request."""
    coro = fn(*args)
    notes, outcome = drive(coro)
    assert outcome == ("migrating",), outcome
    return coro, notes


def finish_here(data, value="moved"):
    """Restore here and drive to the end: (notes, outcome, events)."""
    coro = restore(data)
    notes, outcome = drive(coro, value)
    return notes, outcome, list(EVENTS)


REMOTE = """
import pickle, sys
sys.path.insert(0, {tests!r})
import test_continuation as t
from termite._move.continuation import restore
data = sys.stdin.buffer.read()
notes, outcome = t.drive(restore(data), {value!r})
sys.stdout.buffer.write(pickle.dumps((notes, outcome, t.EVENTS)))
"""


def finish_remote(data, value="moved"):
    """Restore in a fresh interpreter (another node) and drive to the end there."""
    done = subprocess.run([sys.executable, "-c", REMOTE.format(tests=TESTS, value=value)], input=data,
                          capture_output=True, timeout=20, check=False)
    assert done.returncode == 0, done.stderr.decode()
    return pickle.loads(done.stdout)


def move_out(fn, *args):
    """Start a process, capture it at its migration, abandon and collect the source: (data, notes)."""
    coro, notes = start(fn, *args)
    data = capture(coro)
    abandon(coro)
    del coro
    gc.collect()  # nothing of the source may run now
    return data, notes


@pytest.fixture(params=["here", "remote"])
def finish(request):
    return finish_here if request.param == "here" else finish_remote


# -- process bodies -------------------------------------------------------------------


async def counting(n, stop_at):
    total = 0
    for i in range(n):
        total += i
        await note(i)
        if i == stop_at:
            total += len(await migrate())
    return total


async def guarded():
    try:
        await note("try")
        await migrate()
        await note("after")
    except ValueError:
        EVENTS.append("except")
    finally:
        EVENTS.append("finally")
    return "done"


async def level3(x):
    y = x * 2
    got = await migrate()
    return f"{got}:{y}"


async def level2(x):
    z = x + 1
    return await level3(z) + f":{z}"


async def level1():
    r = await level2(10)
    return r + ":top"


async def shared_cell():
    count = 0

    def bump():
        nonlocal count
        count += 1
        return count

    peek = lambda: count  # noqa: E731 - a lambda on purpose
    bump()
    await migrate()
    bump()
    return count, peek(), bump()


def squares(n):
    try:
        for i in range(n):
            yield i * i
    finally:
        EVENTS.append("squares closed")


async def generator_loop():
    seen = []
    for x in squares(6):
        seen.append(x)
        if x == 4:
            await migrate()
    return seen


class Resource:
    """A picklable context manager, both kinds."""

    def __init__(self, name):
        self.name = name

    def __enter__(self):
        EVENTS.append(f"enter {self.name}")
        return self

    def __exit__(self, *exc):
        EVENTS.append(f"exit {self.name}")
        return False

    async def __aenter__(self):
        EVENTS.append(f"aenter {self.name}")
        return self

    async def __aexit__(self, *exc):
        EVENTS.append(f"aexit {self.name}")
        return False


@contextlib.contextmanager
def managed(name):
    try:
        yield name
    finally:
        EVENTS.append(f"close {name}")


async def with_blocks():
    with Resource("sync") as r:
        async with Resource("async"):
            with managed("cm") as m:
                await migrate()
                EVENTS.append(f"body {r.name} {m}")
    return "ok"


async def reraise():
    try:
        raise KeyError("boom")
    except KeyError as e:
        got = await migrate()
        EVENTS.append(("handling", repr(e), repr(sys.exc_info()[1]), got))
        raise


def combine(a, b, c):
    return (a, b, c)


async def on_the_stack():
    # Under the await: NULL and combine (a call of a global; 3.13 pushes
    # combine then NULL), "x", parts, then list.append and parts (a method call).
    parts = ["a"]
    return combine("x", parts, parts.append(await migrate()))


async def child(x):
    await note(f"child {x}")
    return x * 3


async def holds_coroutines():
    pending = child(7)  # created, not yet awaited
    done = squares(2)
    list(done)  # exhausted
    await migrate()
    return await pending, list(done)


async def parked():
    got = await park()  # the kernel's own trap
    return f"woke with {got}"


async def holds_lock():
    lock = threading.Lock()
    await migrate()
    return lock.locked()


async def holds_file():
    fh = open(__file__)
    try:
        await migrate()
    finally:
        fh.close()
    return "closed"


async def holds_socket():
    sock = socket.socket()
    try:
        await migrate()
    finally:
        sock.close()
    return "closed"


async def holds_socket_in_list():
    conns = ["ok", socket.socket()]
    try:
        await migrate()
    finally:
        conns[1].close()


async def reads_lines():
    for line in open(__file__):  # the file is on the stack only
        await migrate()
        return line


async def tiny(x):
    acc = {"n": x}
    for i in range(3):
        acc[i] = await migrate()
    return acc


async def typical(peer):
    """A typical small process: a server loop with some state, a pid and a tag."""
    state = {"served": 0, "peers": [peer], "tag": Tag((7, 1))}
    while True:
        request = await serve_one(state)
        if request == "stop":
            return state


async def serve_one(state):
    message = await migrate()
    state["served"] += 1
    return message


async def signature(a, b=2, *rest, key, more=4, **options):
    def uses_a():  # makes `a` an argument that is also a cell
        return a

    got = await migrate()
    return a, b, rest, key, more, options, uses_a(), got


class Base:
    async def run(self):
        return await migrate()


class Derived(Base):
    def __init__(self, factor):
        self.factor = factor

    async def run(self):  # zero-argument super(): a __class__ cell
        return self.factor * await super().run()


async def counter_from(n):
    for i in range(n):
        yield i


async def async_loop():
    async for i in counter_from(3):
        await migrate()
    return i


class Tracked:
    pass


async def holds_tracked(thing):
    await migrate()
    return thing


# -- continuing -----------------------------------------------------------------------


def test_supported():
    assert supported()


def test_loop_counter_and_locals_continue(finish):
    data, notes = move_out(counting, 10, 4)
    assert notes == [0, 1, 2, 3, 4]
    notes, outcome, _ = finish(data, "moved")
    assert notes == [5, 6, 7, 8, 9]
    assert outcome == ("returned", sum(range(10)) + len("moved"))


def test_finally_runs_once_on_the_restored_side(finish):
    data, notes = move_out(guarded)
    assert notes == ["try"]
    assert EVENTS == []  # not at the source
    notes, outcome, events = finish(data)
    assert notes == ["after"] and outcome == ("returned", "done")
    assert events == ["finally"]


def test_without_abandon_the_source_runs_its_finally():
    coro, _ = start(guarded)
    capture(coro)
    del coro
    gc.collect()
    assert EVENTS == ["finally"]  # which is why abandon exists


def test_nested_awaits_three_levels_deep(finish):
    coro, _ = start(level1)
    frames = capture_frames(coro)
    assert [f.function.__name__ for f in frames] == ["level1", "level2", "level3"]
    assert frames[1].locals == {"x": 10, "z": 11} and frames[2].locals == {"x": 11, "y": 22}
    abandon(coro)
    data, _ = move_out(level1)
    assert finish(data, "v")[1] == ("returned", "v:22:11:top")


def test_a_cell_shared_with_closures_stays_shared(finish):
    data, _ = move_out(shared_cell)
    # If the frame's cell and the closures' cells came apart, peek() would say 1.
    assert finish(data)[1] == ("returned", (2, 2, 3))


def test_restored_cells_are_the_closures_cells():
    coro, _ = start(shared_cell)
    restored = restore(capture(coro))
    frame = capture_frames(restored)[0]
    _, _, _, localsplus, _, _ = framestate.get_frame(restored, NULL)
    cells = [v for v in localsplus if isinstance(v, types.CellType)]
    assert frame.locals["bump"].__closure__[0] is cells[0]
    assert frame.locals["peek"].__closure__[0] is cells[0]
    abandon(coro)
    abandon(restored)


def test_a_for_loop_over_a_generator_continues(finish):
    data, _ = move_out(generator_loop)
    assert EVENTS == []  # the source's generator was not closed
    _, outcome, events = finish(data)
    assert outcome == ("returned", [0, 1, 4, 9, 16, 25])
    assert events == ["squares closed"]


def test_with_blocks_exit_after_restore(finish):
    data, _ = move_out(with_blocks)
    assert EVENTS == ["enter sync", "aenter async"]  # and no __exit__ at the source
    EVENTS.clear()
    _, outcome, events = finish(data)
    assert outcome == ("returned", "ok")
    assert events == ["body sync cm", "close cm", "aexit async", "exit sync"]


def test_capture_inside_except_keeps_raise_working(finish):
    data, _ = move_out(reraise)
    _, outcome, events = finish(data, "v")
    assert outcome == ("raised", "KeyError", "'boom'")
    assert events == [("handling", "KeyError('boom')", "KeyError('boom')", "v")]


def test_nulls_and_methods_on_the_stack(finish):
    coro, _ = start(on_the_stack)
    stack = capture_frames(coro)[0].stack
    call = (combine, NULL) if sys.version_info >= (3, 13) else (NULL, combine)
    assert stack[:2] == call and stack[4] is list.append
    abandon(coro)
    data, _ = move_out(on_the_stack)
    assert finish(data, "b")[1] == ("returned", ("x", ["a", "b"], None))


def test_unstarted_and_finished_generators_in_locals(finish):
    data, _ = move_out(holds_coroutines)
    notes, outcome, _ = finish(data)
    assert notes == ["child 7"] and outcome == ("returned", (21, []))


def test_the_kernels_own_trap():
    coro = parked()
    assert coro.send(None) is PARK
    restored = restore(capture(coro))
    abandon(coro)
    with pytest.raises(StopIteration) as stop:
        restored.send("a message")
    assert stop.value.value == "woke with a message"


def test_a_restored_chain_migrates_again():
    coro, _ = start(counting, 6, 1)
    once = restore(capture(coro))
    abandon(coro)
    twice = restore(capture(once))  # not resumed in between: the trap is the resume point
    abandon(once)
    assert drive(twice, "xy") == ([2, 3, 4, 5], ("returned", 15 + 2))


def test_clone_gives_independent_continuations():
    coro, _ = start(tiny, 1)
    first, second = capture(coro), capture(coro)
    a, b = restore(first), restore(second)
    assert drive(a, "a1")[1] == ("migrating",)
    assert drive(b, "b1")[1] == ("migrating",)
    assert drive(a, "a2")[1] == ("migrating",)
    assert drive(a, "a3")[1] == ("returned", {"n": 1, 0: "a1", 1: "a2", 2: "a3"})
    assert drive(b, "b2")[1] == ("migrating",)
    assert drive(b, "b3")[1] == ("returned", {"n": 1, 0: "b1", 1: "b2", 2: "b3"})
    # Capturing did not change the original either.
    assert drive(coro, "o1")[1] == ("migrating",)
    assert drive(coro, "o2")[1] == ("migrating",)
    assert drive(coro, "o3")[1] == ("returned", {"n": 1, 0: "o1", 1: "o2", 2: "o3"})


def test_arguments_defaults_and_cells(finish):
    data, _ = move_out(lambda: signature(1, 2, 3, key="k", extra=5))
    assert finish(data, "v")[1] == ("returned", (1, 2, (3,), "k", 4, {"extra": 5}, 1, "v"))


def test_methods_and_zero_argument_super(finish):
    data, _ = move_out(Derived(3).run)
    assert finish(data, 5)[1] == ("returned", 15)


def test_a_typical_process_with_pids_and_tags(finish):
    peer = Pid(NodeRef("h", 1, 99), 5)
    data, _ = move_out(typical, peer)
    _, outcome, _ = finish(data, "one")
    assert outcome == ("migrating",)  # serving on: the next request
    coro = restore(data)
    drive(coro, "one")
    assert drive(coro, "stop")[1] == ("returned", {"served": 2, "peers": [peer], "tag": Tag((7, 1))})


def test_an_abandoned_chain_is_inert_and_freed():
    thing = Tracked()
    ref = weakref.ref(thing)
    coro, _ = start(holds_tracked, thing)
    del thing
    capture(coro)
    abandon(coro)
    with pytest.raises(RuntimeError, match="cannot reuse already awaited coroutine"):
        coro.send(None)
    with pytest.raises(RuntimeError, match="cannot reuse already awaited coroutine"):
        coro.throw(ValueError("late"))
    coro.close()
    del coro
    gc.collect()
    assert ref() is None


# -- functions that travel by value ------------------------------------------------------

MAIN_SCRIPT = """
import sys, types
MIGRATE = "migrate, please"

@types.coroutine
def migrate():
    return (yield MIGRATE)

class Point:
    def __init__(self, x):
        self.x = x

async def body(scale):
    total = Point(0)
    double = lambda v: v * scale
    for i in range(4):
        total.x += double(i)
        if i == 1:
            total.x += await migrate()
    return total.x

coro = body(10)
assert coro.send(None) == MIGRATE
from termite._move.continuation import capture
sys.stdout.buffer.write(capture(coro))
"""


def test_a_process_of_a_scripts_main_travels_by_value():
    made = subprocess.run([sys.executable, "-c", MAIN_SCRIPT], capture_output=True,
                          timeout=20, check=False)
    assert made.returncode == 0, made.stderr.decode()
    data = made.stdout
    assert data[5:6] == b"d"  # dill: __main__ is another script here
    assert finish_here(data, 100)[1] == ("returned", 0 + 10 + 100 + 20 + 30)


def test_a_function_of_no_importable_module_travels_by_value(finish):
    namespace = {"__name__": "made_up_module", "migrate": migrate}
    exec(textwrap.dedent("""
        async def body(n):
            got = await migrate()
            return [got * i for i in range(n)]
    """), namespace)
    data, _ = move_out(namespace["body"], 3)
    assert finish(data, 2)[1] == ("returned", [0, 2, 4])


async def imports_locally():
    import json as codec  # a module in a local, as a function that imports inside itself has

    await migrate()
    return codec.dumps([1])


def test_a_module_in_a_local_travels_by_name_without_dill():
    coro, _ = start(imports_locally)
    data = capture(coro)
    assert data[5:6] == b"p"
    abandon(coro)
    assert finish_here(data)[1] == ("returned", "[1]")


def test_closures_of_importable_modules_need_no_dill():
    coro, _ = start(shared_cell)
    assert capture(coro)[5:6] == b"p"
    abandon(coro)


# -- what cannot travel ---------------------------------------------------------------


@pytest.mark.parametrize("body, variable, type_name", [
    (holds_lock, "lock", "_thread.lock"),
    (holds_file, "fh", "_io.TextIOWrapper"),
    (holds_socket, "sock", "socket.socket"),
])
def test_a_resource_in_a_local_is_named(body, variable, type_name):
    coro, _ = start(body)
    with pytest.raises(MigrationError) as info:
        capture(coro)
    text = str(info.value)
    assert f"local variable {variable!r} of {body.__name__}() is a {type_name}, which cannot travel" in text
    assert "close it before migrating or keep it in a process that stays" in text
    assert (info.value.function, info.value.variable, info.value.type_name) == (body.__name__, variable, type_name)
    # The process is untouched and goes on here.
    assert drive(coro, "x")[1][0] == "returned"


def test_a_resource_inside_a_local_is_named_with_its_path():
    coro, _ = start(holds_socket_in_list)
    with pytest.raises(MigrationError, match=r"local variable 'conns' of holds_socket_in_list\(\) holds a "
                                             r"socket.socket \(at conns\[1\]\)"):
        capture(coro)
    coro.close()


def test_a_resource_deeper_in_the_chain_names_its_frame():
    async def outer():
        return await holds_socket()

    coro, _ = start(outer)
    with pytest.raises(MigrationError, match=r"local variable 'sock' of holds_socket\(\) is a socket.socket"):
        capture(coro)
    coro.close()


def test_an_open_file_on_the_stack():
    coro, _ = start(reads_lines)
    with pytest.raises(MigrationError, match=r"on the stack of reads_lines\(\) \(.*\) is a _io.TextIOWrapper"):
        capture(coro)
    capture_frames(coro)[0].stack[0].close()
    coro.close()


def test_an_async_generator_cannot_travel():
    coro, _ = start(async_loop)
    with pytest.raises(MigrationError, match=r"on the stack of async_loop\(\) \(.*\) is a async_generator.*"
                                             r"async generators cannot migrate"):
        capture(coro)
    coro.close()


def test_a_running_coroutine_cannot_be_captured():
    me = []

    async def selfish():
        return capture(me[0])

    me.append(selfish())
    with pytest.raises(MigrationError, match="while it runs"):
        me[0].send(None)


def test_a_trap_that_is_not_awaited():
    coro, _ = start(level1)
    with pytest.raises(MigrationError, match="does not await the given trap"):
        capture(coro, migrate())
    abandon(coro)


def test_unsupported_python_says_what_to_do(monkeypatch):
    monkeypatch.setattr(continuation, "framestate", None)
    coro = level1()
    with pytest.raises(MigrationError, match=r"needs CPython 3.11, 3.12, 3.13 .*not built: reinstall .*"
                                              r"migrate\(node, fn, \*args\)"):
        capture(coro)
    coro.close()


# -- what cannot be restored ----------------------------------------------------------


def test_another_python_version_is_refused():
    coro, _ = start(level1)
    data = bytearray(capture(coro))
    abandon(coro)
    data[4] += 1  # a continuation of the next minor version
    mine = f"{sys.version_info[0]}.{sys.version_info[1]}"
    theirs = f"{sys.version_info[0]}.{sys.version_info[1] + 1}"
    with pytest.raises(MigrationError, match=rf"captured on Python {theirs} and this node runs {mine}: .* same Python"):
        restore(bytes(data))


def test_a_tampered_fingerprint_is_refused():
    coro, _ = start(level1)
    data = capture(coro)
    abandon(coro)
    code_fingerprint = fingerprint(level2.__code__)
    assert data.count(code_fingerprint) == 1
    with pytest.raises(MigrationError, match=r"different code for function test_continuation.level2 on this node"):
        restore(data.replace(code_fingerprint, bytes(16)))


def test_different_code_is_refused(monkeypatch):
    coro, _ = start(level1)
    data = capture(coro)
    abandon(coro)

    async def level3(x):  # same name, other instructions
        return await migrate() * x

    monkeypatch.setattr(sys.modules[__name__].level3, "__code__", level3.__code__)
    with pytest.raises(MigrationError, match=r"different code for function test_continuation.level3"):
        restore(data)


def test_a_missing_function_is_refused(monkeypatch):
    coro, _ = start(level1)
    data = capture(coro)
    abandon(coro)
    monkeypatch.delattr(sys.modules[__name__], "level2")
    with pytest.raises(MigrationError, match=r"test_continuation.level2 cannot be found on this node"):
        restore(data)


@pytest.mark.parametrize("data", [b"", b"TMC", b"garbage", b"TMC\x03\x0bpgarbage", b"TMC\x03\x0bd\x80\x05"])
def test_garbage_is_refused(data):
    with pytest.raises(MigrationError):
        restore(data)


def test_truncated_continuations_are_refused():
    coro, _ = start(with_blocks)
    data = capture(coro)
    abandon(coro)
    for end in range(6, len(data), 7):
        with pytest.raises(MigrationError):
            restore(data[:end])
    gc.collect()  # the generators made before each failure go quietly (warnings are errors here)


# -- the C layer refuses bad input ------------------------------------------------------


def test_frames_refuses_bad_input():
    frames = framestate
    coro, _ = start(level1)
    state, func, lasti, localsplus, stack, exc = frames.get_frame(coro, NULL)
    assert state == frames.SUSPENDED_YIELD_FROM  # in an await (the same as SUSPENDED before 3.13)
    assert lasti == coro.cr_frame.f_lasti // 2
    with pytest.raises(TypeError):
        frames.get_frame(object(), NULL)
    with pytest.raises(ValueError, match="never ran"):  # a suspended generator is not fresh
        frames.set_frame(coro, func, state, lasti, localsplus, stack, exc, NULL)
    fresh = new_gen(func, fingerprint(func.__code__))
    with pytest.raises(ValueError, match="not a yield"):
        frames.set_frame(fresh, func, state, lasti - 1, localsplus, stack, exc, NULL)
    with pytest.raises(ValueError, match="wrong number of locals"):
        frames.set_frame(fresh, func, state, lasti, localsplus + (1,), stack, exc, NULL)
    with pytest.raises(ValueError, match="does not fit"):
        frames.set_frame(fresh, level2, state, lasti, localsplus, stack, exc, NULL)
    with pytest.raises(ValueError, match="state"):
        frames.set_frame(fresh, func, 3, lasti, localsplus, stack, exc, NULL)
    if frames.SUSPENDED != frames.SUSPENDED_YIELD_FROM:  # 3.13: an await's yield is a yield from
        with pytest.raises(ValueError, match="does not fit the yield"):
            frames.set_frame(fresh, func, frames.SUSPENDED, lasti, localsplus, stack, exc, NULL)
    frames.set_frame(fresh, func, state, lasti, localsplus, stack, exc, NULL)
    assert frames.get_frame(fresh, NULL)[2:5] == (lasti, localsplus, stack)
    assert frames.finish(fresh) and not frames.finish(fresh)
    abandon(coro)


def running_total(start):
    total = start
    while True:
        total += yield total


def delegating_total():
    got = yield from running_total(10)
    return got


def test_a_generator_rebuilt_from_its_frame_resumes_with_the_value_sent():
    # Each version resumes a frame at another place (3.11 and 3.12: after
    # prev_instr, the YIELD_VALUE; 3.13: at instr_ptr, the RESUME): a rebuilt
    # generator must go on right after its yield, with the value sent in.
    frames = framestate
    gen = running_total(1)
    assert next(gen) == 1 and gen.send(5) == 6
    state, func, lasti, localsplus, stack, exc = frames.get_frame(gen, NULL)
    assert state == frames.SUSPENDED and lasti == gen.gi_frame.f_lasti // 2
    fresh = new_gen(func, fingerprint(func.__code__))
    frames.set_frame(fresh, func, state, lasti, localsplus, stack, exc, NULL)
    assert fresh.send(10) == 16 and fresh.send(100) == 116
    assert gen.send(1) == 7  # the source goes on by itself
    # In a yield from: the outer frame is rebuilt over the inner one's copy.
    outer = delegating_total()
    assert next(outer) == 10 and outer.send(2) == 12
    inner = outer.gi_yieldfrom
    state, func, lasti, localsplus, stack, exc = frames.get_frame(outer, NULL)
    assert state == frames.SUSPENDED_YIELD_FROM and stack[-1] is inner
    inner_state, _, inner_lasti, inner_locals, inner_stack, inner_exc = frames.get_frame(inner, NULL)
    inner_copy = new_gen(running_total, fingerprint(running_total.__code__))
    frames.set_frame(inner_copy, running_total, inner_state, inner_lasti, inner_locals, inner_stack, inner_exc, NULL)
    outer_copy = new_gen(func, fingerprint(func.__code__))
    frames.set_frame(outer_copy, func, state, lasti, localsplus, stack[:-1] + (inner_copy,), exc, NULL)
    assert outer_copy.gi_yieldfrom is inner_copy
    assert outer_copy.send(3) == 15 and outer.send(4) == 16
    frames.finish(outer), frames.finish(inner)


@contextlib.contextmanager
def _tracing():
    def trace(frame, event, arg):
        return trace  # local tracing too: from 3.12 it rewrites the code (INSTRUMENTED_LINE)

    sys.settrace(trace)
    try:
        yield
    finally:
        sys.settrace(None)


@contextlib.contextmanager
def _every_instruction_monitored():
    # sys.monitoring's INSTRUCTION events put INSTRUMENTED_INSTRUCTION over
    # every instruction, the YIELD_VALUE and RESUME of a suspended frame too.
    monitoring = sys.monitoring
    tool = monitoring.DEBUGGER_ID
    monitoring.use_tool_id(tool, "termite test")
    monitoring.register_callback(tool, monitoring.events.INSTRUCTION, lambda code, offset: None)
    monitoring.set_events(tool, monitoring.events.INSTRUCTION)
    try:
        yield
    finally:
        monitoring.set_events(tool, 0)
        monitoring.free_tool_id(tool)


@pytest.mark.parametrize("watch", [
    _tracing,
    pytest.param(_every_instruction_monitored, marks=pytest.mark.skipif(
        sys.version_info < (3, 12), reason="sys.monitoring is new in 3.12")),
])
def test_migration_under_a_tracer_or_a_monitor(watch):
    # A debugger or a coverage tool rewrites the code the frames run: a
    # capture and a restore made under one still find the yield they are at.
    with watch():
        data, _ = move_out(level1)
        notes, outcome, _ = finish_here(data, "v")
    assert outcome == ("returned", "v:22:11:top")


# -- cost ----------------------------------------------------------------------------


def test_capture_and_restore_are_cheap():
    coro, _ = start(typical, Pid(NodeRef("h", 1, 99), 5))
    rounds = 200
    began = time.perf_counter()
    for _ in range(rounds):
        data = capture(coro)
    captured = time.perf_counter()
    for _ in range(rounds):
        abandon(restore(data))
    restored = time.perf_counter()
    abandon(coro)
    capture_us = (captured - began) / rounds * 1e6
    restore_us = (restored - captured) / rounds * 1e6
    print(f"capture {capture_us:.0f} us, restore {restore_us:.0f} us, {len(data)} bytes")
    assert capture_us + restore_us < 2000  # the target is well under 1 ms; slack for loaded machines
