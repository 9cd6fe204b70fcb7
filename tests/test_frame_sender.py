"""Transport.send_frame's common case: termite._net._zmqcalls.FrameSender (C) does step for step
what its Python twin, transport._FrameSender, does, on real ZeroMQ sockets."""

import contextlib
import threading

import pytest
import zmq

from termite._core.ids import NodeRef
from termite._net import transport as _transport, zmq_native as _zmq_native
from termite._net.transport import TransportStats

pytestmark = pytest.mark.timeout(60)

NATIVE = getattr(_zmq_native.native, "FrameSender", None)
TWINS = [pytest.param(NATIVE, id="C", marks=pytest.mark.skipif(NATIVE is None, reason="_zmqcalls did not load")),
         pytest.param(_transport._FrameSender, id="Python")]
# The transport's lock: _zmqcalls.Lock where it is built (the C sender takes it without a call), else threading's.
NATIVE_LOCK = getattr(_zmq_native.native, "Lock", None)
LOCKS = [pytest.param(threading.Lock, id="threading.Lock"),
         pytest.param(NATIVE_LOCK, id="C Lock", marks=pytest.mark.skipif(NATIVE_LOCK is None, reason="_zmqcalls did not load"))]


@contextlib.contextmanager
def real_sockets():
    """A ROUTER and a DEALER connected to it (the peer's and this node's), and a DEALER connected to nothing."""
    ctx = zmq.Context()
    router, dealer, stray = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER), ctx.socket(zmq.DEALER)
    router.rcvtimeo = 5000
    dealer.routing_id = b"me"
    port = router.bind_to_random_port("tcp://127.0.0.1")
    dealer.connect(f"tcp://127.0.0.1:{port}")
    try:
        yield router, dealer, stray
    finally:
        ctx.destroy(linger=0)


@pytest.fixture
def sockets():
    with real_sockets() as made:
        yield made


def scenario(cls, router, dealer, stray, make_lock=threading.Lock):
    """Everything a sender can be asked, and what came of it: returns, fallbacks, counters, frames."""
    peer, twin, other = NodeRef("127.0.0.1", 1, 7), NodeRef("127.0.0.1", 1, 7), NodeRef("127.0.0.1", 2, 7)
    stats, lock, fallbacks = TransportStats(), make_lock(), []

    def fallback(to, data):
        fallbacks.append((to is peer, to is other, bytes(data)))
        return "fallback"

    sender = cls(lock, stats, fallback)
    seen = [(sender.peer, sender.sock)]
    results = [sender(peer, b"not aimed yet")]
    sender.aim(peer, dealer)
    seen.append((sender.peer is peer, sender.sock is dealer))
    results += [
        sender(peer, b"one"),
        sender(peer, b""),
        sender(twin, b"an equal peer, not the same object"),
        sender(other, b"another peer"),
        sender(peer, b"x" * 4095),
        sender(peer, b"y" * 4096),  # too large for the copy: the fallback sends it
        sender(peer, bytearray(b"not bytes")),
        sender(peer, memoryview(b"nor this")),
    ]
    counted = (stats.frames_out, stats.bytes_out, stats.dropped_out)
    sender.aim(peer, stray)  # connected to no one: the send fails, and the fallback says why
    results.append(sender(peer, b"lost"))
    failed = (stats.frames_out, stats.bytes_out)
    sender.aim(peer, dealer)
    sender.forget()
    seen.append((sender.peer, sender.sock))
    results.append(sender(peer, b"forgotten"))
    received = []
    for _ in range(3):
        identity, data = router.recv_multipart()
        received.append((identity, data[:8], len(data)))
    return seen, results, fallbacks, counted, failed, received


@pytest.mark.parametrize("make_lock", LOCKS)
def test_the_c_and_python_senders_do_the_same(make_lock):
    if NATIVE is None:
        pytest.skip("termite._net._zmqcalls did not load here")
    outcomes = []
    for cls in (NATIVE, _transport._FrameSender):
        with real_sockets() as made:
            outcomes.append(scenario(cls, *made, make_lock=make_lock))
    assert outcomes[0] == outcomes[1]


@pytest.mark.parametrize("cls", TWINS)
def test_a_small_frame_to_the_peer_aimed_at_is_sent_and_counted_and_nothing_else(cls, sockets):
    seen, results, fallbacks, counted, failed, received = scenario(cls, *sockets)
    assert seen == [(None, None), (True, True), (None, None)]
    assert results == ["fallback", None, None, "fallback", "fallback", None, "fallback", "fallback", "fallback",
                       "fallback", "fallback"]
    assert [f[:2] for f in fallbacks] == [(True, False), (False, False), (False, True), (True, False),
                                          (True, False), (True, False), (True, False), (True, False)]
    assert [f[2][:9] for f in fallbacks] == [b"not aimed", b"an equal ", b"another p", b"y" * 9, b"not bytes",
                                             b"nor this", b"lost", b"forgotten"]
    assert counted == (3, 3 + 0 + 4095, 0)  # the fallback's frames are the fallback's to count
    assert failed == counted[:2]
    assert received == [(b"me", b"one", 3), (b"me", b"", 0), (b"me", b"x" * 8, 4095)]


@pytest.mark.parametrize("make_lock", LOCKS)
@pytest.mark.parametrize("cls", TWINS)
def test_the_send_waits_for_the_lock(cls, make_lock, sockets):
    # The waiting sender lets the GIL go: this thread runs meanwhile, and releases the lock.
    router, dealer, _ = sockets
    peer, lock = NodeRef("127.0.0.1", 1, 7), make_lock()
    sender = cls(lock, TransportStats(), lambda to, data: pytest.fail("not the fallback's"))
    sender.aim(peer, dealer)
    done = threading.Event()

    def send():
        sender(peer, b"after the lock")
        done.set()

    with lock:
        thread = threading.Thread(target=send)
        thread.start()
        assert not done.wait(0.2)  # held here: the sender waits (the I/O thread holds it so)
    assert done.wait(5)
    thread.join(5)
    assert router.recv_multipart() == [b"me", b"after the lock"]


def test_the_c_sender_wants_counters_it_can_set():
    if NATIVE is None:
        pytest.skip("termite._net._zmqcalls did not load here")

    class NoSlots:
        frames_out = bytes_out = 0

    with pytest.raises(TypeError, match=r"frames_out must be a __slots__ slot"):
        NATIVE(threading.Lock(), NoSlots(), print)
    with pytest.raises(TypeError, match="callable"):
        NATIVE(threading.Lock(), TransportStats(), None)


@pytest.mark.parametrize("make_lock", LOCKS)
def test_the_lock_refuses_to_let_go_of_what_nobody_holds(make_lock):
    """The C lock is threading.Lock's twin: a release that no acquire matched raises, as it would
    otherwise leave the lock open to the next two takers at once."""
    lock = make_lock()
    seen = [lock.locked()]
    with pytest.raises(RuntimeError, match="release unlocked lock"):
        lock.release()
    with lock:
        seen.append(lock.locked())
    seen.append(lock.locked())
    assert lock.acquire() is True
    lock.release()
    with pytest.raises(RuntimeError, match="release unlocked lock"):
        lock.release()
    seen.append(lock.locked())
    assert seen == [False, True, False, False]
