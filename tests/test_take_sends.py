"""termite._net._fastcodec.take_sends: a frame read and its plain SENDs to local processes
delivered in C, exactly as the endpoint's Python loop does (termite/_net/endpoint.py,
_Inbox and _apply_frame); the reference below is that loop, written out."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from termite import NodeRef, Pid, make_tag
from termite._core.process import Down
from termite._net import codec as _codec
from termite._net.codec import MalformedMessage, decode, decode_frame, encode, encode_batch
from termite._net.frames import LINK, SEND

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(_codec.take_sends is None, reason="the C extension is not built"),
]

HERE = NodeRef("127.0.0.1", 41000, incarnation=0x77)
OTHER = NodeRef("127.0.0.1", 41001, incarnation=0x78)
LIMIT = 3
MAX_DECODED = 1 << 20


class Proc:
    """What take_sends reads of a process: ``order`` and ``mailbox``."""

    def __init__(self, serial, order=None):
        self.serial, self.order, self.mailbox = serial, order, None


def here_node():
    """The NodeRef object the codec gives decoded pids of HERE (the endpoint's inbox's ``here``)."""
    return decode(encode(Pid(HERE, 1))).node


def reference(data, here, procs, deliver, limit, full, peer, max_decoded):
    """The endpoint's loop, as it reads a frame without the extension's take_sends."""
    try:
        messages = decode_frame(data, max_decoded)
    except MalformedMessage:
        return False
    for i, frame in enumerate(messages):
        if frame.__class__ is tuple and len(frame) == 3 and frame[0].__class__ is int and frame[0] == SEND:
            pid = frame[1]
            if pid.__class__ is Pid and pid.node is here:
                proc, msg = procs.get(pid.serial), frame[2]
                if proc is not None and proc.order is None and msg.__class__ is not Down:
                    deliver(proc, msg)
                    if proc.mailbox is not None and len(proc.mailbox) > limit:
                        full(proc, peer)
                    continue
        return messages[i:]
    return None


def run(fn, data):
    """fn's outcome on data, and what it delivered and to whom it said full, with fresh processes."""
    procs = {1: Proc(1), 2: Proc(2), 3: Proc(3, order=object())}
    log = []

    def deliver(proc, msg):
        proc.mailbox = (proc.mailbox or []) + [msg]
        log.append(("deliver", proc.serial, msg))

    def full(proc, peer):
        log.append(("full", proc.serial, peer))

    if fn is reference:
        result = reference(data, here_node(), procs, deliver, LIMIT, full, "peer", MAX_DECODED)
    else:
        result = fn(data, here_node(), procs, deliver, Down, LIMIT, full, "peer", MAX_DECODED)
    return result, log


def assert_agree(data):
    c, c_log = run(_codec.take_sends, data)
    py, py_log = run(reference, data)
    assert type(c) is type(py), (c, py)
    if isinstance(py, list):
        assert c == py
    assert c_log == py_log
    return c, c_log


DOWN = Down(make_tag(), Pid(OTHER, 9), "normal")
FRAMES = [
    (SEND, Pid(HERE, 1), "hi"),  # delivered
    (SEND, Pid(HERE, 2), (Pid(OTHER, 4), 17)),  # delivered
    (SEND, Pid(HERE, 3), "x"),  # a process that migrated: Python
    (SEND, Pid(HERE, 99), "x"),  # no such process: Python
    (SEND, Pid(OTHER, 1), "x"),  # another node's: Python
    (SEND, Pid(HERE, 1), DOWN),  # a Down: Python
    (True, Pid(HERE, 1), "x"),  # SEND as a bool: Python, which reads it as SEND
    (1.0, Pid(HERE, 1), "x"),
    (SEND, Pid(HERE, 1)),
    (SEND, Pid(HERE, 1), "x", "y"),
    (LINK, Pid(OTHER, 1), Pid(HERE, 1)),
    [SEND, Pid(HERE, 1), "x"],
    (SEND, 1, "x"),
    "not a frame",
]


@pytest.mark.parametrize("frame", FRAMES, ids=range(len(FRAMES)))
def test_one_frame_as_the_python_loop(frame):
    assert_agree(encode(frame))


def test_a_batch_of_sends_is_delivered_in_order_and_none_is_left():
    frames = [(SEND, Pid(HERE, 1 + i % 2), i) for i in range(4)]
    result, log = assert_agree(encode_batch([encode(f) for f in frames]))
    assert result is None
    assert [entry[2] for entry in log if entry[0] == "deliver"] == [0, 1, 2, 3]


def test_the_rest_from_the_first_other_frame_comes_back_in_order():
    frames = [(SEND, Pid(HERE, 1), "a"), (LINK, Pid(OTHER, 1), Pid(HERE, 1)), (SEND, Pid(HERE, 1), "b")]
    result, log = assert_agree(encode_batch([encode(f) for f in frames]))
    assert [entry[2] for entry in log] == ["a"]
    assert result == frames[1:]


def test_a_mailbox_past_the_limit_is_reported_per_message():
    frames = [(SEND, Pid(HERE, 1), i) for i in range(LIMIT + 2)]
    _, log = assert_agree(encode_batch([encode(f) for f in frames]))
    assert [entry for entry in log if entry[0] == "full"] == [("full", 1, "peer")] * 2


@pytest.mark.parametrize(
    "data",
    [b"", b"\xc1", encode((SEND, Pid(HERE, 1), "x"))[:-1], b"\x02" + encode((SEND, Pid(HERE, 1), "x")),
     b"\x01" + encode("x"), encode("x") + b"\x00", encode(list(range(1000)))],
    ids=range(7),
)
def test_what_decode_frame_refuses_is_left_to_python_untouched(data):
    result, log = assert_agree(data)
    if not isinstance(result, list):
        assert result is False and log == []


def test_over_the_budget_raises_with_the_messages_before_and_delivers_none():
    # as decode_frame's MalformedMessage: not read again, and the messages of a batch before
    # the one that passed the budget still count (the endpoint applies them)
    big = (SEND, Pid(HERE, 1), [[]] * 40_000)
    first = (SEND, Pid(HERE, 1), "first")
    for data, before in [(encode(big), []), (encode_batch([encode(first), encode(big)]), [first])]:
        with pytest.raises(MalformedMessage) as py_refused:
            decode_frame(data, 1000)
        assert py_refused.value.over_budget and py_refused.value.decoded == before
        log = []
        with pytest.raises(_codec.OverBudget) as refused:
            _codec.take_sends(data, here_node(), {1: Proc(1)}, lambda p, m: log.append(m), Down, LIMIT, None,
                              "peer", 1000)
        assert refused.value.decoded == before and log == []


def test_a_failing_deliver_raises():
    def deliver(proc, msg):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        _codec.take_sends(encode((SEND, Pid(HERE, 1), "x")), here_node(), {1: Proc(1)}, deliver, Down, LIMIT,
                          None, "peer", MAX_DECODED)


def test_not_bytes_is_left_to_python():
    assert _codec.take_sends(bytearray(encode((SEND, Pid(HERE, 1), "x"))), here_node(), {}, None, Down, LIMIT,
                             None, "peer", MAX_DECODED) is False


frame_parts = st.sampled_from(FRAMES + [(SEND, Pid(HERE, 1), "m"), (SEND, Pid(HERE, 2), ("m", 2))] * 3)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(frame_parts, min_size=1, max_size=8), st.integers(0, 3))
def test_random_batches_agree_with_the_python_loop(frames, cut):
    encoded = [encode(f) for f in frames]
    data = encoded[0] if len(encoded) == 1 else encode_batch(encoded)
    assert_agree(data[: len(data) - cut] if cut < len(data) else data)
