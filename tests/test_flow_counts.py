"""Flow control's byte counts, per frame sent (wrote) and read (got): termite._net._fastcodec's
Counter does the common case in C and leaves the rest to the Python methods; a FlowControl with
it must end in the very state of one without it, ACKs and busy peers included."""

import asyncio

import pytest

from termite._core.ids import NodeRef
from termite._core.kernel import Kernel
from termite._core.process import ProcessTable
from termite._net import flow as _flow
from termite._net.flow import ACK, FlowControl
from termite._net.frames import FrameKinds

pytestmark = pytest.mark.timeout(60)

HERE = NodeRef("127.0.0.1", 1, 1)
LIMIT = 256 * 1024  # the buffer limit: busy past it
EVERY = _flow._ACK_EVERY


@pytest.fixture
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def flow_control(loop, native):
    posted = []
    fc = FlowControl(ProcessTable(Kernel(loop), HERE), FrameKinds(), lambda node, frame: posted.append((node, frame)),
                     buffer_limit=LIMIT)
    if not native:
        fc.wrote, fc.got = fc._wrote, fc._got  # what FlowControl does without the C extension
    return fc, posted


def run(fc, posted):
    """Frames both ways with two peers (one named by two equal NodeRef objects), a peer met by
    address only, an ACK, a session begun again, sizes of every kind: the state after each step."""
    a, a_too, b = NodeRef("10.0.0.1", 9, 5), NodeRef("10.0.0.1", 9, 5), NodeRef("10.0.0.2", 9, 6)
    address = NodeRef("10.0.0.3", 9, None)
    states = []

    def state():
        flows = {id(f): f for f in fc._flows.values()}.values()  # one per node, however many names it has
        counts = sorted((f.node.host, f.sent, f.acked, f.read, f.read_acked) for f in flows)
        states.append((counts, sorted(n.host for n in fc.peers), [(n.host, frame) for n, frame in posted]))

    steps = [
        ("wrote", a, 100), ("wrote", a, 100), ("wrote", a_too, 50), ("wrote", address, 70), ("wrote", b, 0),
        ("got", a, 1000), ("got", a_too, EVERY - 1000), ("got", a, EVERY - 1), ("got", a, 1), ("got", b, 3 * EVERY),
        ("wrote", a, LIMIT - 250), ("wrote", a, 1), ("wrote", a, 1), ("wrote", b, LIMIT + 1), ("wrote", a, 2**70),
        ("got", b, 2**70), ("got", a, True),
    ]
    for i, (what, node, size) in enumerate(steps):
        assert getattr(fc, what)(node, size) is None
        state()
        if i == 12:
            fc._on_ack(a, (ACK, LIMIT - 100))  # read down to under half the limit: not busy any more
            state()
        if i == 13:
            fc.new_session(b)
            state()
    return states


def test_the_counts_are_the_same_with_the_c_counter_and_without(loop):
    if _flow._Counter is None:
        pytest.skip("termite._net._fastcodec did not load here")
    fc, posted = flow_control(loop, native=True)
    assert fc.wrote.__class__ is _flow._Counter
    c_states = run(fc, posted)
    py_states = run(*flow_control(loop, native=False))
    assert c_states == py_states
    # and what they are: busy past the limit until an ACK, an ACK each EVERY bytes read
    a_busy, b_busy = [["10.0.0.1"]], [["10.0.0.2"]]
    assert [busy for _, busy, _ in c_states] == [[]] * 11 + a_busy * 2 + [[]] + b_busy + [[]] + a_busy * 3
    assert [(node.host, frame) for node, frame in posted] == [
        ("10.0.0.1", (ACK, EVERY)), ("10.0.0.1", (ACK, 2 * EVERY)), ("10.0.0.2", (ACK, 3 * EVERY)),
        ("10.0.0.2", (ACK, 2**70))]  # counted afresh in the new session


def test_the_c_counter_leaves_what_it_cannot_do_to_the_slow_path():
    if _flow._Counter is None:
        pytest.skip("termite._net._fastcodec did not load here")

    class Counts:
        __slots__ = ("count", "mark")

    flows, slow = {}, []
    node, counts = object(), Counts()
    counts.count, counts.mark = 10, 0
    flows[id(node)] = counts
    counter = _flow._Counter(flows, Counts, "count", "mark", 100, lambda n, size: slow.append((n, size)) or "slow")
    assert counter(node, 89) is None and counts.count == 99  # 99 - 0 < 100
    assert counter(node, 1) == "slow" and counts.count == 99  # 100 is not: nothing done, all to the slow path
    assert counter(object(), 1) == "slow"  # not in flows
    assert counter(node, 1.0) == "slow" and counter(node, -1) == "slow" and counter(node, 2**64) == "slow"
    counts.mark = 2.5
    assert counter(node, 1) == "slow"
    counts.mark = 50
    assert counter(node, 1) is None and counts.count == 100
    assert [size for _, size in slow] == [1, 1, 1.0, -1, 2**64, 1]
    with pytest.raises(TypeError, match="count and mark as __slots__"):
        _flow._Counter(flows, object, "count", "mark", 1, print)
    with pytest.raises(TypeError, match="callable"):
        _flow._Counter(flows, Counts, "count", "mark", 1, None)
