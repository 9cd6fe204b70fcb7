"""termite._net._zmqcalls.wait_idle: zmq_native's wait loop in C, step for step what the Python
reference (_wait_idle_py) does, on a real asyncio loop and real ZeroMQ sockets."""

import asyncio

import pytest
import zmq

from termite._net import zmq_native as _zmq_native

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(_zmq_native._native_wait_idle is None, reason="termite._net._zmqcalls did not load here"),
]

native = _zmq_native.native


def c_wait(loop, handle, pipe, clock, read_one, run):
    return native.wait_idle(loop, handle, pipe, clock, read_one, run)


def py_wait(loop, handle, pipe, clock, read_one, run):
    return _zmq_native._wait_idle_py(loop, handle, pipe, clock, native.poll, read_one, run)


@pytest.fixture
def setup():
    """A loop (not running) watching a ROUTER, as a node's transport sets it up, and a DEALER to it."""
    ctx = zmq.Context()
    router, dealer = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    dealer.connect(f"tcp://127.0.0.1:{port}")
    loop = asyncio.new_event_loop()
    fd = router.getsockopt(zmq.FD)
    loop.add_reader(fd, lambda: None)
    pipe = _zmq_native.idle_self_pipe(loop, fd)
    assert pipe is not None
    try:
        yield loop, router, dealer, pipe
    finally:
        loop.remove_reader(fd)
        loop.close()
        ctx.destroy(linger=0)


def scenario(setup, wait, messages, stop_after, then):
    """Send ``messages``; wait_idle reads them, and the turn after message ``stop_after`` does ``then``
    to the loop.  Returns what wait_idle returned and the calls it made."""
    loop, router, dealer, pipe = setup
    for m in messages:
        dealer.send(m)
    calls = []

    def read_one():
        message = native.recv(router.underlying)
        calls.append(("read", None if message is None else message[1]))
        return message is not None

    def run():
        calls.append(("run",))
        if sum(c[0] == "read" and c[1] is not None for c in calls) == stop_after:
            then(loop)

    result = wait(loop, router.underlying, pipe, loop.time, read_one, run)
    for handle in list(loop._ready):
        handle.cancel()
    loop._ready.clear()
    loop._read_from_self()  # a call_soon_threadsafe's wake-up byte: the next scenario starts afresh
    return result, calls


@pytest.mark.parametrize("wait", [c_wait, py_wait], ids=["C", "Python"])
def test_it_returns_at_once_when_the_loop_has_work(setup, wait):
    loop = setup[0]
    loop.call_soon(lambda: None)
    assert scenario(setup, wait, [], 0, None) == (False, [])


@pytest.mark.parametrize("wait", [c_wait, py_wait], ids=["C", "Python"])
def test_a_timer_due_ends_the_wait(setup, wait):
    loop = setup[0]
    timer = loop.call_later(0.05, lambda: None)
    assert scenario(setup, wait, [], 0, None) == (False, [])
    timer.cancel()


THENS = {
    "call_soon": lambda loop: loop.call_soon(lambda: None),
    "stop": lambda loop: loop.stop(),
    "self-pipe": lambda loop: loop.call_soon_threadsafe(lambda: None),
}


@pytest.mark.parametrize("then", THENS, ids=list(THENS))
def test_messages_are_read_and_run_until_the_loop_wants_its_thread(setup, then):
    outcomes = []
    for wait in (c_wait, py_wait):
        outcomes.append(scenario(setup, wait, [b"a", b"b", b"c"], 3, THENS[then]))
        setup[0]._stopping = False
    assert outcomes[0] == outcomes[1]
    result, calls = outcomes[0]
    assert result is True  # messages may wait whose wake-up the poll took
    assert [c for c in calls if c != ("read", None)] == [("read", b"a"), ("run",), ("read", b"b"), ("run",),
                                                         ("read", b"c"), ("run",)]


def test_an_exception_in_a_turn_propagates(setup):
    loop, router, dealer, pipe = setup
    dealer.send(b"x")

    def run():
        raise RuntimeError("the turn failed")

    with pytest.raises(RuntimeError, match="the turn failed"):
        native.wait_idle(loop, router.underlying, pipe, loop.time, lambda: native.recv(router.underlying) is not None,
                         run)


def test_the_transport_waits_in_c_with_the_native_poll():
    assert _zmq_native.wait_idle.__doc__ and _zmq_native._native_wait_idle is native.wait_idle
