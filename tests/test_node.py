"""termite.run, termite.Node (the blocking facade), current_node, asyncio interop."""

import asyncio
import threading

import pytest

import termite
from termite import Pid, Tag, receive, send, spawn


async def echo():
    while True:
        sender, tag, msg = await receive((Pid, Tag, termite.ANY))
        send(sender, (tag, msg))


async def lingering(cleaned: threading.Event):
    """Waits forever; sets ``cleaned`` when it is ended."""
    try:
        await receive()
    finally:
        cleaned.set()


def test_run_returns_the_value_and_raises_the_exception(crash_log):
    async def boom():
        raise KeyError("missing")

    assert termite.run(lambda: 5) == 5
    with pytest.raises(KeyError, match="missing"):
        termite.run(boom)
    assert not [r for r in crash_log.records if "crashed" in r.getMessage()]  # raised, not also logged


def test_run_ends_the_other_processes_running_their_finally_blocks():
    cleaned = threading.Event()

    async def main():
        spawn(lingering, cleaned)
        await termite.sleep(0)

    termite.run(main)
    assert cleaned.is_set()


@pytest.mark.timeout(20)
def test_an_interrupted_run_still_ends_its_processes_as_processes(crash_log):
    # Ctrl-C, or SIGTERM in python -m termite.node (which raises KeyboardInterrupt): the
    # processes are killed by the kernel, their finally blocks running inside them.
    ended = []

    async def server():
        try:
            await receive()
        finally:
            ended.append(termite.self())  # NotInProcess outside a process

    async def main():
        pid = spawn(server)
        await termite.sleep(0)
        send(pid, "wake")  # it is due to run in the turn the interrupt ends
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        termite.run(main)
    assert len(ended) == 1 and isinstance(ended[0], Pid)


def test_run_inside_a_running_event_loop_explains_the_alternative():
    async def inside():
        termite.run(lambda: 1)

    with pytest.raises(RuntimeError, match="termite.Node"):
        asyncio.run(inside())


def test_processes_may_await_asyncio_awaitables():
    async def main():
        await asyncio.sleep(0.001)
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        loop.call_later(0.001, fut.set_result, "from asyncio")
        value = await fut
        task_value = await asyncio.create_task(asyncio.sleep(0, "task"))
        return value, task_value

    assert termite.run(main) == ("from asyncio", "task")


def test_a_process_awaiting_asyncio_can_still_be_killed():
    async def main():
        async def slow():
            await asyncio.sleep(30)

        pid = spawn(slow)
        termite.monitor(pid)
        await termite.sleep(0.001)
        termite.kill(pid)
        down = await receive(termite.Down, timeout=1)
        return down.reason

    assert termite.run(main) == "killed"


def test_awaiting_something_foreign_fails_the_process_clearly():
    class Odd:
        def __await__(self):
            yield "not a future"

    async def main():
        try:
            await Odd()
        except TypeError as exc:
            return str(exc)

    assert "asyncio awaitables only" in termite.run(main)


def test_current_node_names_the_node():
    ref = termite.NodeRef("local", 0)
    assert termite.run(termite.current_node, node=ref) == ref


def test_node_facade_spawn_send_call_receive(node):
    server = node.spawn(echo)
    assert node.call(server, "hello", timeout=5) == "hello"
    node.send(server, (node.pid, "tag-by-hand", "x"))  # not a Tag: ignored by echo's pattern
    tag = termite.make_tag()
    node.send(server, (node.pid, tag, "by hand"))
    assert node.receive((tag, termite.ANY), timeout=5) == (tag, "by hand")
    assert node.receive(timeout=0.01, default="empty") == "empty"
    with pytest.raises(termite.Timeout):
        node.receive(timeout=0.01)


def test_node_facade_run_and_registry(node):
    assert node.run(lambda: 6 * 7) == 42
    pid = node.spawn(echo, name="echo")
    assert node.whereis("echo") == pid
    assert node.call("echo", 1, timeout=5) == 1
    with pytest.raises(ZeroDivisionError):
        node.run(lambda: 1 / 0)


def test_node_facade_sees_linked_failures_as_exit_messages(node):
    async def fail():
        raise ValueError("linked")

    pid = node.spawn(fail, link=True)
    msg = node.receive(termite.Exit, timeout=5)
    assert msg.pid == pid and msg.reason.message == "linked"


def test_node_stop_ends_processes_and_methods_then_say_so():
    cleaned = threading.Event()

    node = termite.Node().start()
    node.spawn(lingering, cleaned)
    assert node.processes() == 2  # lingering and the shell
    node.stop()
    assert cleaned.wait(5)
    with pytest.raises(termite.TermiteError, match="not running"):
        node.spawn(echo)


def test_sends_between_two_nodes_in_one_os_process(node):
    with termite.Node() as other:
        server = other.spawn(echo)
        assert node.call(server, "across threads", timeout=5) == "across threads"


def test_module_level_send_works_from_any_thread_for_live_local_pids(node):
    pid = node.spawn(echo)
    tag = termite.make_tag()
    errors = []

    def from_thread():
        send(pid, (node.pid, tag, "from a plain thread"))
        try:
            send(Pid(pid.node, 10**9), "x")  # a pid this thread cannot place
        except termite.NotInProcess as exc:
            errors.append(str(exc))

    worker = threading.Thread(target=from_thread)
    worker.start()
    worker.join(5)
    assert node.receive((tag, termite.ANY), timeout=5) == (tag, "from a plain thread")
    assert errors and "node.send" in errors[0]
