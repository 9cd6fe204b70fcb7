"""The frames of a kernel turn: termite._net._fastcodec.Outbox (C) does step for step what its
Python twin, endpoint._Outbox, does (the endpoint's send, post_encoded and flush)."""

import asyncio
import threading

import pytest

from termite._core.ids import NodeRef, Pid
from termite._core.kernel import Kernel
from termite._net import endpoint as _endpoint
from termite._net.codec import UnserializableMessage, encode
from termite._net.frames import SEND

pytestmark = pytest.mark.timeout(60)

NATIVE = _endpoint._NativeOutbox
BATCH_BYTES = 1000
N1, N2 = NodeRef("10.0.0.1", 9, 1), NodeRef("10.0.0.2", 9, 2)
P1, P2 = Pid(N1, 7), Pid(N2, 8)


class Proc:
    """What the outbox needs of the running process: its sent_to."""

    __slots__ = ("sent_to",)

    def __init__(self):
        self.sent_to = None


class PlainKernel:
    """A kernel whose task is a plain attribute, as the Python kernel's is."""

    def __init__(self):
        self.task = None


def scenario(cls, kernel):
    """Every case of send, post and flush; the calls the outbox made and its state after each step."""
    calls, out, pids, peers, numbered = [], {}, {}, {}, {}

    def record(name):
        return lambda *args: calls.append((name, *args))

    def batch(node, data):
        calls.append(("batch", node, data))
        out.setdefault(node, []).append(data)

    def flush_batches():
        calls.append(("flush_batches", sorted((n.host, v) for n, v in out.items())))
        out.clear()

    outbox = cls(kernel, pids, peers, numbered, SEND, record("send_frame"), record("wrote"), record("slow_send"),
                 batch, flush_batches, out, BATCH_BYTES)
    proc, states = Proc(), []

    def step(note, fn, *args):
        try:
            result = fn(*args)
        except UnserializableMessage as exc:
            result = ("raised", type(exc).__name__)
        states.append((note, result, outbox.one, None if proc.sent_to is None else sorted(n.host for n in proc.sent_to),
                       list(calls)))

    step("post outside a process", outbox.post, N1, b"a")
    step("flush it", outbox.flush)
    step("flush with nothing", outbox.flush)
    kernel.task = proc
    step("send", outbox.send, P1, ("hello", 1))
    step("send to the same node", outbox.send, P1, ("hello", 2))
    step("send to another", outbox.send, P2, "x")
    step("flush the batches", outbox.flush)
    step("a large frame", outbox.post, N1, b"L" * BATCH_BYTES)
    step("then a small one", outbox.post, N2, b"s")
    step("flush those", outbox.flush)
    proc.sent_to = None  # as a migration leaves it
    step("after a migration", outbox.send, P2, "y")
    pids[P2] = None
    step("a busy process", outbox.send, P2, "z")
    del pids[P2]
    peers[N2] = None
    step("a busy peer", outbox.send, P1, "z")
    del peers[N2]
    numbered[P2] = 0
    step("a migrant", outbox.send, P2, "z")
    step("another, numbered not empty", outbox.send, P1, "w")
    outbox.numbered = {}
    step("numbered replaced", outbox.send, P2, "v")
    step("unserializable", outbox.send, P1, threading.Lock())
    step("flush at last", outbox.flush)
    kernel.task = None
    return states


@pytest.fixture
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.mark.skipif(NATIVE is None, reason="termite._net._fastcodec did not load here")
@pytest.mark.parametrize("kernel", ["real", "plain"])
def test_the_c_and_python_outboxes_do_the_same(loop, kernel):
    make = (lambda: Kernel(loop)) if kernel == "real" else PlainKernel
    c, python = scenario(NATIVE, make()), scenario(_endpoint._Outbox, make())
    assert c == python


@pytest.mark.parametrize("cls", [pytest.param(NATIVE, id="C", marks=pytest.mark.skipif(
    NATIVE is None, reason="termite._net._fastcodec did not load here")), pytest.param(_endpoint._Outbox, id="Python")])
def test_what_the_outbox_does(loop, cls):
    states = {note: rest for note, *rest in scenario(cls, Kernel(loop))}
    assert len(states) == 18  # every step named once
    assert states["post outside a process"][1:3] == [(N1, b"a"), None]  # held alone, noted nowhere
    assert states["flush it"][3] == [("send_frame", N1, b"a"), ("wrote", N1, 1)]
    assert states["flush with nothing"][3] == states["flush it"][3]
    hello = encode((SEND, P1, ("hello", 1)))
    assert states["send"][1:3] == [(N1, hello), ["10.0.0.1"]]
    again = encode((SEND, P1, ("hello", 2)))
    assert states["send to the same node"][3][-2:] == [("batch", N1, hello), ("batch", N1, again)]
    assert states["send to another"][3][-1] == ("batch", N2, encode((SEND, P2, "x")))
    assert states["send to another"][2] == ["10.0.0.1", "10.0.0.2"]
    assert states["flush the batches"][3][-1][0] == "flush_batches"
    assert states["a large frame"][3][-1] == ("batch", N1, b"L" * BATCH_BYTES)  # too large to be held alone
    assert states["then a small one"][1] is None  # a batch waits: no frame alone any more
    assert states["after a migration"][1:3] == [(N2, encode((SEND, P2, "y"))), ["10.0.0.2"]]
    for note, pid in (("a busy process", P2), ("a busy peer", P1), ("a migrant", P2)):
        assert states[note][3][-1] == ("slow_send", pid, "z"), note
    assert states["another, numbered not empty"][3][-1] == ("batch", N1, encode((SEND, P1, "w")))
    assert states["numbered replaced"][3][-1] == ("batch", N2, encode((SEND, P2, "v")))  # the new dict is read
    assert states["unserializable"][0] == ("raised", "UnserializableMessage")
    assert states["unserializable"][3] == states["numbered replaced"][3]  # nothing held or batched
    assert states["flush at last"][3][-1][0] == "flush_batches"
