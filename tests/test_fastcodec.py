"""termite._net._fastcodec: the codec's common cases in C, byte for byte and object
for object what the msgpack path of termite/_net/codec.py does."""

import collections
import enum
import math
import pickle
import struct
import subprocess
import sys
import textwrap

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from termite import NodeRef, Pid, Tag, make_tag
from termite._net import _fastcodec, codec as _codec
from termite._net.codec import (
    NODE,
    PID,
    TAG,
    TUPLE,
    TUPLE_MARK,
    MalformedMessage,
    decode,
    decode_all,
    encode,
    encode_batch,
)

pytestmark = pytest.mark.timeout(60)

NODE_A = NodeRef("127.0.0.1", 40000, incarnation=0x1234567890)
NODE_B = NodeRef("127.0.0.1", 40001, incarnation=0x1234567891)
FRAME = (1, Pid(NODE_A, (1 << 63) + 7), (Pid(NODE_B, 5), 12345))


def c_encode(msg) -> bytes:
    data = _fastcodec.encode(msg)
    assert data is not None, f"the C encoder gave up on {msg!r}"
    return data


def c_decode(data, trusted=True):
    return _fastcodec.decode(data, trusted)


def outcome(fn, *args):
    """What fn(*args) gave: ("ok", value) or ("error", None)."""
    try:
        return "ok", fn(*args)
    except Exception:  # noqa: BLE001 - which exception differs between the paths; that one does is the point
        return "error", None


def assert_same(a, b):
    """Equal, of exactly the same types all the way down; floats bit for bit (nan, -0.0)."""
    stack = [(a, b)]  # not recursive: some messages are nested 1000 deep
    while stack:
        a, b = stack.pop()
        assert type(a) is type(b), (a, b)
        if type(a) in (list, tuple):
            assert len(a) == len(b), (a, b)
            stack.extend(zip(a, b))
        elif type(a) is dict:
            assert len(a) == len(b), (a, b)
            for (ka, va), (kb, vb) in zip(a.items(), b.items()):
                stack += [(ka, kb), (va, vb)]
        elif type(a) is float:
            assert struct.pack(">d", a) == struct.pack(">d", b), (a, b)
        elif type(a) is Pid:
            assert a == b and type(a.node) is type(b.node) and a.node.incarnation == b.node.incarnation
        else:
            assert a == b, (a, b)


def sent(msg):
    """What msg comes back as: bytearray as bytes, the rest as it was."""
    if type(msg) is bytearray:
        return bytes(msg)
    if type(msg) is list:
        return list(map(sent, msg))
    if type(msg) is tuple:
        return tuple(map(sent, msg))
    if type(msg) is dict:
        return {sent(k): sent(v) for k, v in msg.items()}
    return msg


def check_both_ways(msg):
    """C and Python encode msg to the same bytes, and decode them to the same objects."""
    data = c_encode(msg)
    assert data == _codec._encode_py(msg)
    assert encode(msg) == data
    out = c_decode(data)
    assert_same(out, sent(msg))
    assert_same(out, _codec._decode_py(data))
    assert_same(decode(data), out)
    return data


# -- encode and decode: the C path equals the Python path ---------------------------

INT_EDGES = [
    0, 1, 31, 32, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1,
    -1, -31, -32, -33, -127, -128, -129, -32767, -32768, -32769, -(2**31) + 1, -(2**31), -(2**31) - 1,
    -(2**63) + 1, -(2**63),
]  # fmt: skip


@pytest.mark.parametrize("n", INT_EDGES)
def test_ints_at_every_width_boundary(n):
    check_both_ways(n)
    check_both_ways([n, -n if -(2**63) <= -n < 2**64 else 0])


@pytest.mark.parametrize("size", [0, 1, 31, 32, 255, 256, 65535, 65536, 70000])
def test_str_bytes_list_dict_and_tuple_at_every_size_boundary(size):
    check_both_ways("x" * size)
    check_both_ways("é" * size)
    check_both_ways(b"\x00" * size)
    check_both_ways(bytearray(b"\xff" * size))
    if size <= 70000:
        check_both_ways(list(range(size)))
        check_both_ways(tuple(range(size)))
        check_both_ways({i: None for i in range(size)})


@pytest.mark.parametrize(
    "x", [0.0, -0.0, 1.5, math.inf, -math.inf, math.nan, -math.nan, 5e-324, 1.7976931348623157e308]
)
def test_floats_bit_for_bit(x):
    check_both_ways(x)
    check_both_ways(struct.unpack(">d", bytes.fromhex("7ff8000000000123"))[0])  # a nan with a payload


def test_the_typical_frame():
    data = check_both_ways(FRAME)
    assert data.hex() == (
        "94c7000101c71f02800000000000000793a93132372e302e302e31cd9c40cf0000001234567890"
        "93c70001c71f02000000000000000593a93132372e302e302e31cd9c41cf0000001234567891cd3039"
    )


def test_pids_tags_and_node_refs():
    address = NodeRef("10.0.0.2", 7000)  # no incarnation: nil in the payload
    check_both_ways((Pid(NODE_A, 0), Pid(NODE_A, 2**64 - 1), Pid(address, 3), address, NODE_B))
    check_both_ways((make_tag(), Tag((0, 0)), Tag((2**64 - 1, 2**64 - 1))))
    check_both_ways({Pid(NODE_A, 1): [Tag((1, 2))], (NODE_A, 1): NODE_B})


def test_a_decoded_pid_is_what_pid_node_serial_makes():
    pid = c_decode(c_encode(Pid(NODE_A, 9)))
    made = Pid(NODE_A, 9)
    assert type(pid) is Pid
    for name in Pid.__slots__:
        assert getattr(pid, name) == getattr(made, name), name
    assert pid._proc is None and hash(pid) == hash(made)
    assert type(pid.serial) is int and type(pid.node) is NodeRef


def test_decoded_pids_of_one_node_share_the_node_ref_of_the_cache():
    a, b, node = c_decode(c_encode([Pid(NODE_B, 1), Pid(NODE_B, 2), NODE_B]))
    assert a.node is b.node is node is _codec._nodes[_codec._node_payloads[NODE_B]]
    _codec._nodes.clear()  # as when the cache overflows: a new NodeRef, cached again
    c, d = c_decode(c_encode([Pid(NODE_B, 1), Pid(NODE_B, 2)]))
    assert c.node is d.node is _codec._nodes[_codec._node_payloads[NODE_B]] and c.node is not a.node
    assert c.node == NODE_B


def test_nesting_up_to_the_limit_in_c_and_beyond_it_in_python():
    for inner in (1, [], (), {}, Pid(NODE_A, 1)):
        deep = inner
        for _ in range(510):
            deep = [deep]
        check_both_ways(deep)
    deep = []
    for _ in range(511):
        deep = [deep]
    check_both_ways(deep)
    assert _fastcodec.encode([deep]) is None  # 512 levels: msgpack 1.0 stops here
    assert _fastcodec.encode([[[(deep,)]]]) is None
    assert encode([deep]) == _codec._encode_py([deep])


def test_decode_takes_bytearray_and_memoryview():
    data = encode(FRAME)
    assert_same(decode(bytearray(data)), FRAME)
    assert_same(decode(memoryview(data)), FRAME)  # by msgpack
    assert [*decode_all(bytearray(data))] == [FRAME]


# -- hypothesis: random plain data -------------------------------------------------

ints = (
    st.integers(-(2**63), 2**64 - 1)
    | st.sampled_from(INT_EDGES)
    | st.integers(-40, 300)
    | st.integers(-(2**31) - 2, 2**32 + 2)
)
floats = st.floats() | st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 0.0])
node_refs = st.builds(
    NodeRef,
    st.sampled_from(["127.0.0.1", "10.0.0.7", "höst", ""]) | st.text(max_size=40),
    st.integers(0, 65535),
    st.none() | st.integers(0, 2**63 - 1),
)
u64 = st.integers(0, 2**64 - 1)
ids = node_refs | st.builds(Pid, node_refs, u64) | st.builds(lambda a, b: Tag((a, b)), u64, u64)
scalars = (
    st.none()
    | st.booleans()
    | ints
    | floats
    | st.text()
    | st.text(st.characters(max_codepoint=0x7F), min_size=28, max_size=40)
    | st.binary()
    | st.binary().map(bytearray)
    | ids
)
keys = st.text() | ints | st.tuples(ints, st.text()) | ids
plain_data = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=6)
        | st.lists(children, max_size=6).map(tuple)
        | st.dictionaries(keys, children, max_size=6)
    ),
    max_leaves=40,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plain_data)
def test_c_and_python_encode_and_decode_random_data_the_same(msg):
    check_both_ways(msg)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(plain_data, min_size=2, max_size=5))
def test_batches_decode_the_same(msgs):
    frame = encode_batch([encode(m) for m in msgs])
    out = list(decode_all(frame))
    assert len(out) == len(msgs)
    for a, b, c in zip(out, list(_codec._decode_all_py(frame)), msgs):
        assert_same(a, b)
        assert_same(a, sent(c))


# -- what C leaves to the Python path ------------------------------------------------


class Level(enum.IntEnum):
    HIGH = 3


Point = collections.namedtuple("Point", "x y")


def deep_list(levels):
    deep = []
    for _ in range(levels):
        deep = [deep]
    return deep


FALLBACK = [
    {1, 2},
    frozenset({3}),
    Level.HIGH,
    2**70,
    -(2**63) - 1,
    2**64,
    "lone surrogate \ud800",
    Point(1, 2),
    collections.OrderedDict(a=1),
    memoryview(b"abc"),
    msgpack.ExtType(5, pickle.dumps(1)),  # written as it is: an object pickled by hand
    Tag((1, 2, 3)),
    Tag((-1, 2)),
    Tag((True, 2)),
    Pid(NODE_A, -1),
    Pid(NODE_A, 2**64),
    Pid(NodeRef("h", 1, 2**70), 1),
    NodeRef("h", "port", 1),
    deep_list(600),
    deep_list(1000),  # beyond 511: msgpack 1.1+ packs it, 1.0 pickles it
]


@pytest.mark.parametrize("msg", FALLBACK, ids=lambda m: type(m).__name__)
def test_what_c_does_not_handle_goes_the_python_way(msg):
    for wrapped in (msg, [1, msg], {"k": (msg,)}):
        assert _fastcodec.encode(wrapped) is None
        data = encode(wrapped)
        assert data == _codec._encode_py(wrapped)
        out = decode(data)
        assert_same(_codec._decode_py(data), out)


def test_lambdas_go_the_python_way_and_still_work():
    offset = 5
    add = lambda x: x + offset  # noqa: E731
    assert _fastcodec.encode(("fn", add)) is None
    data = encode(("fn", add))
    assert data == _codec._encode_py(("fn", add))  # the dilled function is cached: same bytes
    assert decode(data)[1](1) == 6


def test_a_pid_whose_node_is_changed_during_encoding_is_handled():
    class Weird:
        """A node whose hash changes the message being encoded (C must not read freed items)."""

        host, port, incarnation = "w", 1, 2

        def __init__(self, victim, grow=False):
            self.victim, self.grow = victim, grow

        def __hash__(self):
            if self.victim is not None and self.grow:  # once
                self.victim.append("more")
            elif self.victim is not None:
                self.victim.clear()
            self.victim = None
            return 7

        def __eq__(self, other):
            return self is other

    msg = [1, 2, 3]
    msg.insert(0, Pid(Weird(msg), 1))
    data = encode(msg)  # the list shrank under the C encoder: the Python path encodes what is left
    assert decode(data) == []
    msg = [1]
    msg.insert(0, Pid(Weird(msg, grow=True), 1))
    assert decode(encode(msg))[1:] == [1, "more"]  # the list grew: all of it is sent
    msg = {"a": 1}
    msg["p"] = Pid(Weird(msg), 1)
    assert decode(encode(msg)) == {}
    _codec._node_payloads.clear()  # drop the Weird nodes


def test_the_python_path_works_without_the_extension():
    script = textwrap.dedent(
        """
        import sys
        sys.modules["termite._net._fastcodec"] = None  # as if it was not built
        from termite import NodeRef, Pid
        from termite._net import codec as _codec
        assert _codec._fastcodec is None
        msg = (1, Pid(NodeRef("h", 1, 2), 3), {"a": [b"x", 1.5]}, {1, 2})
        assert _codec.decode(_codec.encode(msg)) == msg
        assert list(_codec.decode_all(_codec.encode_batch([_codec.encode(msg)] * 2))) == [msg, msg]
        try:
            _codec.decode(b"\\xc1")
        except _codec.MalformedMessage:
            print("ok")
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "ok", proc.stderr


# -- malformed input -----------------------------------------------------------------

SAMPLES = [
    FRAME,
    (Pid(NODE_A, 42), make_tag(), ("add", 1, 2), {"k": b"v", "l": [1.5, None, True]}, NODE_A),
    ["x" * 40, b"y" * 300, -(2**40), 2**64 - 1, {(1, 2): (3,)}],
]


@pytest.mark.parametrize("msg", SAMPLES, ids=range(len(SAMPLES)))
def test_every_truncation_is_malformed(msg):
    data = encode(msg)
    for end in range(len(data)):
        for cut in (data[:end], bytearray(data[:end])):
            with pytest.raises(MalformedMessage):
                decode(cut)
        assert outcome(_codec._decode_py, data[:end])[0] == "error"
        with pytest.raises(MalformedMessage):
            list(decode_all(data[:end]))


def ext(code, data):
    return msgpack.packb(msgpack.ExtType(code, data))


MALFORMED = [
    b"",
    b"\xc1",
    b"\x92\x01\xc1",
    b"\xa3\xff\xfe\xfd",  # not UTF-8
    b"\xa3\xed\xa0\x80",  # a surrogate in UTF-8
    b"\x81\x91\x01\x02",  # a list as a map key
    b"\x81\x80\x02",  # a dict as a map key
    ext(PID, b"\x00" * 7),
    ext(PID, b""),
    ext(PID, b"\x00" * 8),  # no node
    ext(PID, b"\x00" * 8 + msgpack.packb(["h", "port", 1])),
    ext(NODE, msgpack.packb(["h", 1])),
    ext(NODE, b"\xc1"),
    ext(TAG, b"\x00" * 15),
    ext(TAG, b"\x00" * 17),
    ext(99, b""),
    b"\xd4\xfbx",  # ext -5
    b"\xc7\x03\xffxyz",  # ext -1, a timestamp, of 3 bytes
    b"\x91" * 100000,
    b"\x81\x01" * 50000 + b"\x01",
    b"\x91" * 1024 + b"\x90",  # 1025 containers: one more than msgpack's stack
    b"\xdd\xff\xff\xff\xff",  # huge declared lengths
    b"\xdd\xff\xff\xff\xff" + b"\x01" * 100,
    b"\xdc\x00\x10" + b"\x01" * 15,
    b"\xdf\xff\xff\xff\xff\x01\x01",
    b"\xdb\xff\xff\xff\xffabc",
    b"\xc6\xff\xff\xff\xffabc",
    b"\xc9\xff\xff\xff\xff\x05abc",
    b"\xc9\x7f\xff\xff\xff\x02abc",
    b"\xcf\x00\x00",
    b"\xcb\x00",
    b"\xd8\x03" + b"\x00" * 15,
    encode(FRAME) + b"\x00",  # trailing bytes
]


@pytest.mark.parametrize("data", MALFORMED, ids=lambda data: repr(data)[:40])
def test_malformed_data_raises_malformed_message(data):
    with pytest.raises(MalformedMessage):
        decode(data)
    with pytest.raises(MalformedMessage):
        decode(data, trusted=False)
    assert outcome(_codec._decode_py, data)[0] == "error"


def test_str_keys_are_interned_as_msgpack_does():
    for data in (
        encode({"a key made at run time".upper(): 1}),
        bytearray(encode({"a key made at run time".upper(): 1})),
    ):
        key = next(iter(decode(data)))
        assert key is sys.intern("A KEY MADE AT RUN TIME")


def test_nesting_up_to_msgpack_s_stack_decodes():
    data = b"\x91" * 1023 + b"\x90"  # 1024 containers
    out = decode(data)
    assert_same(out, _codec._decode_py(data))
    data = b"\x81\x01" * 1024 + b"\x01"
    assert_same(decode(data), _codec._decode_py(data))


def test_odd_frames_decode_as_msgpack_decodes_them():
    odd = [
        ext(TUPLE, b"payload"),  # TUPLE_MARK, whatever its payload
        msgpack.packb([msgpack.ExtType(TUPLE, b"")]),  # ()
        msgpack.packb({"k": msgpack.ExtType(TUPLE, b"")}),  # a TUPLE_MARK not heading an array
        msgpack.packb([1, msgpack.ExtType(TUPLE, b"")]),
        msgpack.packb(msgpack.Timestamp(1, 2)),  # msgpack decodes ext -1 before any hook
        msgpack.packb(msgpack.Timestamp(2**40, 5)),
        msgpack.packb(msgpack.Timestamp(-1, 5)),
        b"\xd7\xff" + ((2**30 - 1) << 34 | 5).to_bytes(8, "big"),  # nanoseconds over 10**9
        b"\xc7\x0c\xff" + (10**9).to_bytes(4, "big") + (5).to_bytes(8, "big"),
        b"\xca\x3f\xc0\x00\x00",  # float32
        b"\xca\x7f\xc0\x00\x01",  # a float32 nan
        b"\xd0\x01\xd1\x00\x01",  # non-minimal ints, as a batch-like pair
        b"\x92\xd0\x01\xd1\x00\x01",
        b"\x92\xcc\x01\xd3\xff\xff\xff\xff\xff\xff\xff\xff",
        b"\x82\xa1k\x01\xa1k\x02",  # a repeated key: the last wins
        b"\xc4\x00",
        b"\xd9\x00",
        b"\xc7\x00\x05",  # an empty pickle: a hook error
    ]
    for data in odd:
        for trusted in (True, False):
            c = outcome(_fastcodec.decode, data, trusted)
            py = outcome(_codec._decode_py, data, trusted)
            assert c[0] == py[0], data
            if c[0] == "ok":
                assert_same(c[1], py[1])
    assert decode(ext(TUPLE, b"payload")) is TUPLE_MARK


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_decode_as_msgpack_decodes_them(data):
    c = outcome(_fastcodec.decode, data, False)
    assert c[0] == outcome(_codec._decode_py, data, False)[0]
    if c[0] == "ok":
        assert_same(c[1], _codec._decode_py(data, False))
        assert_same(decode(data, trusted=False), c[1])
    else:
        with pytest.raises(MalformedMessage):
            decode(data, trusted=False)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plain_data, st.data())
def test_damaged_encodings_decode_as_msgpack_decodes_them(msg, draw):
    frame = bytearray(encode(msg))
    for _ in range(draw.draw(st.integers(1, 4))):
        frame[draw.draw(st.integers(0, len(frame) - 1))] = draw.draw(st.integers(0, 255))
    data = bytes(frame[: draw.draw(st.integers(0, len(frame)))])
    c = outcome(_fastcodec.decode, data, False)
    assert c[0] == outcome(_codec._decode_py, data, False)[0]
    if c[0] == "ok":
        assert_same(c[1], _codec._decode_py(data, False))


# -- decode_all ----------------------------------------------------------------------


def batch_outcome(fn, data):
    """What a decode_all gave: the messages it yielded, and whether it raised MalformedMessage."""
    got = []
    try:
        for msg in fn(data):
            got.append(msg)
    except MalformedMessage:
        return got, True
    return got, False


ONE, TWO = encode(FRAME), encode(("two", [2.5]))
BATCHES = [
    encode_batch([ONE, TWO]),
    encode_batch([ONE, TWO, ONE]),
    encode_batch([ONE, TWO])[:-1],  # the last message cut
    encode_batch([ONE, TWO]) + b"\x92",  # a cut message after the batch: msgpack's Unpacker waits for more
    encode_batch([ONE, TWO]) + b"\xdd\xff\xff\xff\xff",  # ... unless its length is over the Unpacker's limit
    encode_batch([ONE, TWO]) + b"\xdc\x00\x10" + b"\x01" * 5,
    encode_batch([ONE, TWO]) + b"\xdc\x00\x10" + b"\x01" * 5 + b"\xc1",  # ... or it is bad before its end
    # a cut map after the batch, longer than the Unpacker's max_map_len (half its max_buffer_size)
    encode_batch([ONE, TWO]) + b"\xdf" + (len(ONE + TWO) + 5).to_bytes(4, "big"),
    encode_batch([ONE, TWO]) + ONE,  # one more than counted
    encode_batch([ONE, TWO]) + b"\xc1",
    b"\x03" + ONE + b"\xc1" + TWO,  # a bad message in the middle
    b"\x03" + ONE + TWO,  # fewer than counted
    b"\x01" + ONE,  # a count below 2
    b"\xa1x" + ONE,  # trailing bytes after a str
    b"\xc3" + ONE,  # after a bool
    b"\x02" + ONE + b"\x91" * 2000,
    b"\x02" + ONE + b"\xdc\x00\x10" + b"\x01" * 15,
    b"\x02" + ONE + b"\xdc\x00\x10" + b"\x01" * 5 + b"\xc1",
    b"\x02" + ONE + b"\x81\x91\x01\x02",
    b"\x02",
    b"\xcf" + b"\xff" * 8 + ONE + TWO,
]


@pytest.mark.parametrize("data", BATCHES, ids=lambda data: repr(data)[:40])
def test_decode_all_yields_and_raises_as_before(data):
    c_got, c_raised = batch_outcome(decode_all, data)
    py_got, py_raised = batch_outcome(_codec._decode_all_py, data)
    assert c_raised == py_raised
    assert len(c_got) == len(py_got)
    for a, b in zip(c_got, py_got):
        assert_same(a, b)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([ONE, TWO, b"\xc1", b"\x92", b"\x03", b"\x01"]), max_size=6), st.integers(0, 200))
def test_decode_all_of_random_frames_agrees_with_msgpack(parts, cut):
    data = b"".join(parts)
    data = data[: len(data) - cut % (len(data) + 1)]
    c_got, c_raised = batch_outcome(decode_all, data)
    py_got, py_raised = batch_outcome(_codec._decode_all_py, data)
    assert c_raised == py_raised and len(c_got) == len(py_got)
    for a, b in zip(c_got, py_got):
        assert_same(a, b)
