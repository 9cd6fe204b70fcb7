"""The codec: messages to bytes and back (termite/_net/codec.py)."""

import collections
import dataclasses
import datetime
import enum
import math
import pickle
import socket
import subprocess
import sys
import textwrap
import threading

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import termite
from termite import Crash, Down, Exit, NodeRef, Pid, Tag, make_tag
from termite.testing import echo
from termite._net.codec import (
    DILLED,
    NODE,
    PICKLED,
    PID,
    TAG,
    TUPLE,
    MalformedMessage,
    UnserializableMessage,
    decode,
    decode_frame,
    encode,
    encode_batch,
)

NODE_A = NodeRef("10.0.0.1", 5555, incarnation=0x1234_5678_9ABC_DEF0)
PID_A = Pid(NODE_A, 42)


def roundtrip(msg, **kw):
    return decode(encode(msg), **kw)


def assert_same(a, b):
    """Equal, and of exactly the same types all the way down."""
    assert type(a) is type(b), (a, b)
    if type(a) in (list, tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    elif type(a) is dict:
        assert list(a) == list(b)
        for (ka, va), (kb, vb) in zip(a.items(), b.items()):
            assert_same(ka, kb)
            assert_same(va, vb)
    else:
        assert a == b


def raw(data):
    """The msgpack structure of an encoding, extension types left as ExtType."""
    return msgpack.unpackb(data, ext_hook=msgpack.ExtType, strict_map_key=False)


def ext_codes(data):
    codes = []

    def walk(x):
        if isinstance(x, msgpack.ExtType):
            codes.append(x.code)
        elif isinstance(x, (list, tuple)):
            for item in x:
                walk(item)
        elif isinstance(x, dict):
            for k, v in x.items():
                walk(k)
                walk(v)

    walk(raw(data))
    return codes


# -- plain data ---------------------------------------------------------------

PLAIN = [
    None,
    True,
    False,
    0,
    -1,
    2**63 - 1,
    -(2**63),
    2**64 - 1,
    1.5,
    -0.0,
    math.inf,
    "",
    "text",
    "ünïcødé ✓",
    b"",
    b"\x00\xff",
    [],
    (),
    {},
    [1, "a", None],
    ("add", 1, 2),
    {"a": 1, "b": [2, 3]},
    ((), [()], ([],), [[]]),
    {(1, 2): "tuple key", 3: "int key", "s": "str key", None: 0, b"b": 1, 1.5: 2, (): 3},
    {"nested": ({"deeper": [(1, (2, [3, {"x": ()}]))]},)},
]


@pytest.mark.parametrize("msg", PLAIN, ids=repr)
def test_plain_data_round_trips_with_exact_types(msg):
    assert_same(roundtrip(msg), msg)


def test_tuples_and_lists_stay_apart():
    msg = ([1, (2, [3])], (4,), [5])
    out = roundtrip(msg)
    assert type(out) is tuple and type(out[0]) is list and type(out[0][1]) is tuple
    assert type(out[0][1][1]) is list and type(out[1]) is tuple and type(out[2]) is list


def test_plain_data_is_plain_msgpack():
    assert encode(1) == msgpack.packb(1)
    assert encode("hi") == msgpack.packb("hi")
    assert encode([1, {"a": b"x"}]) == msgpack.packb([1, {"a": b"x"}], use_bin_type=True)
    # a tuple is an array headed by the empty ext 1
    assert raw(encode(("add", 1))) == [msgpack.ExtType(TUPLE, b""), "add", 1]


def test_bytearray_and_memoryview_come_back_as_bytes():
    assert_same(roundtrip(bytearray(b"abc")), b"abc")
    assert_same(roundtrip(memoryview(b"abc")), b"abc")


@pytest.mark.parametrize("n", [2**64, -(2**63) - 1, 2**200, -(3**100)])
def test_ints_beyond_64_bits_go_by_pickle(n):
    assert_same(roundtrip(n), n)
    assert ext_codes(encode(n)) == [PICKLED]


def test_subclasses_of_plain_types_keep_their_type():
    msg = (
        collections.OrderedDict(a=1),
        collections.Counter("aab"),
        Weekday.MONDAY,
        Level.HIGH,
        {1, 2},
        frozenset({3}),
        datetime.date(2024, 1, 2),
        b"x",
    )
    out = roundtrip(msg)
    assert [type(x) for x in out] == [type(x) for x in msg]
    assert out == msg


def test_large_messages_round_trip():
    big = (b"x" * (3 << 20), ["y" * 1000] * 1000)
    assert roundtrip(big) == big
    assert roundtrip(("small", 1)) == ("small", 1)


def test_strings_msgpack_cannot_encode_and_deep_nesting_fall_back_to_pickle():
    assert roundtrip("lone surrogate \ud800") == "lone surrogate \ud800"
    deep = []
    for _ in range(600):  # msgpack's packer stops at 511 levels
        deep = [deep]
    assert roundtrip(deep) == deep


# -- pids, tags, node refs ----------------------------------------------------


def test_pids_tags_and_node_refs_round_trip():
    tag = make_tag()
    pid = Pid(NODE_A, 7, _proc=object())
    out_pid, out_tag, out_node = roundtrip((pid, tag, NODE_A))
    assert type(out_pid) is Pid and out_pid == pid and hash(out_pid) == hash(pid)
    assert out_pid._proc is None
    assert type(out_tag) is Tag and out_tag == tag and hash(out_tag) == hash(tag)
    assert type(out_node) is NodeRef and out_node == NODE_A and out_node.incarnation == NODE_A.incarnation
    assert ext_codes(encode((pid, tag, NODE_A))) == [TUPLE, PID, TAG, NODE]


def test_a_node_address_without_incarnation_round_trips():
    address = NodeRef("10.0.0.2", 7000)
    assert address.incarnation is None
    out = roundtrip((address, Pid(address, 3)))
    assert out == (address, Pid(address, 3)) and out[0].incarnation is None
    assert ext_codes(encode(address)) == [NODE]


def test_decoded_pids_of_one_node_share_its_node_ref():
    a, b = roundtrip([Pid(NODE_A, 1), Pid(NODE_A, 2)])
    assert a.node is b.node
    assert a != b and a != Pid(NodeRef("10.0.0.1", 5555, incarnation=1), 1)


def test_pids_as_dict_keys_and_in_tags_and_tuples():
    msg = {PID_A: (PID_A, make_tag()), (PID_A, 1): [PID_A]}
    assert_same(roundtrip(msg), msg)


def test_odd_pids_and_tags_still_travel_by_pickle():
    huge = Pid(NodeRef("h", 1, incarnation=2**70), 2**65)
    odd_tag = Tag(("not", "ints"))
    out = roundtrip((huge, odd_tag))
    assert out == (huge, odd_tag) and type(out[1]) is Tag
    assert ext_codes(encode((huge, odd_tag))) == [TUPLE, PICKLED, PICKLED]


# -- objects that go by pickle ----------------------------------------------------

Point = collections.namedtuple("Point", "x y")


class UserError(Exception):
    def __init__(self, message, code):
        super().__init__(message, code)
        self.code = code


class Weekday(enum.Enum):
    MONDAY = 1


class Level(enum.IntEnum):
    HIGH = 3


@dataclasses.dataclass
class Job:
    name: str
    args: tuple
    owner: Pid


def test_exit_and_down_with_a_crash_inside():
    try:
        raise ValueError("boom")
    except ValueError as exc:
        crash = Crash.from_exception(exc, where="process x")
    exit_msg = Exit(PID_A, crash)
    down = Down(make_tag(), PID_A, "noproc")
    out_exit, out_down = roundtrip((exit_msg, down))
    assert type(out_exit) is Exit and out_exit == exit_msg
    assert type(out_down) is Down and out_down == down
    assert out_exit.reason.traceback == crash.traceback
    assert type(out_exit.reason.exception) is ValueError and out_exit.reason.exception.args == ("boom",)


def test_only_the_object_that_needs_pickle_is_pickled():
    crash = Crash("ValueError", "bad", "tb")
    data = encode((PID_A, ["result", crash], {"k": Point(1, 2)}))
    assert ext_codes(data) == [TUPLE, PID, PICKLED, PICKLED]
    out = decode(data)
    assert out == (PID_A, ["result", crash], {"k": Point(1, 2)})
    assert type(out[2]["k"]) is Point


def test_user_exceptions_dataclasses_and_enums_round_trip():
    err = UserError("no such account", 404)
    out = roundtrip((err, Job("sum", (1, 2), PID_A), Weekday.MONDAY))
    assert type(out[0]) is UserError and out[0].args == err.args and out[0].code == 404
    assert out[1] == Job("sum", (1, 2), PID_A) and out[1].owner._proc is None
    assert out[2] is Weekday.MONDAY


def module_level_function(x):
    return x * 2


def test_importable_functions_go_by_pickle_not_dill():
    data = encode(module_level_function)
    assert ext_codes(data) == [PICKLED]
    assert decode(data)(4) == 8


# -- objects that only dill can do ---------------------------------------------------


def test_lambdas_closures_and_nested_functions_travel_and_still_work():
    offset = 10

    def nested(x):
        return x + offset

    def make_counter(start):
        count = [start]

        def step():
            count[0] += 1
            return count[0]

        return step

    msg = ("jobs", lambda x: x * x, nested, make_counter(5))
    data = encode(msg)
    assert ext_codes(data) == [TUPLE, DILLED, DILLED, DILLED]
    _, square, add, counter = decode(data)
    assert square(7) == 49
    assert add(1) == 11
    assert counter() == 6 and counter() == 7


def test_modules_a_closure_uses_travel_by_name():
    # termite is installed in development mode, outside sys.prefix: dill
    # alone would send the module by value.
    def new_tag():
        return termite.make_tag(), collections.Counter("ab")

    fn = roundtrip(new_tag)
    assert fn.__globals__["termite"] is termite
    tag, counter = fn()
    assert type(tag) is Tag and counter == {"a": 1, "b": 1}


def test_a_closure_naming_functions_of_a_mutually_recursive_module_travels():
    # dill's own recursive walk of globals overflows the stack on termite's
    # functions (they call each other); each travels by reference instead.
    def serve():
        return echo, termite.call

    fn = roundtrip(serve)
    assert fn() == (echo, termite.call)  # by reference: the very same functions
    assert "roundtrip" not in fn.__globals__  # only what it names travels


def test_code_in_main_goes_by_dill_and_dill_is_never_imported_for_plain_messages():
    script = textwrap.dedent(
        """
        import dataclasses, math, sys
        from termite._net.codec import encode
        from termite import Crash, NodeRef, Pid, make_tag

        encode((1, "x", [2.0], {"k": (None, b"")}))
        encode((Pid(NodeRef("h", 1), 2), make_tag(), NodeRef("h", 1)))
        encode((Crash("E", "m", "tb"), 2**80, {1, 2}))
        assert "dill" not in sys.modules, "dill imported for messages pickle can do"

        SCALE = 10

        def helper(x):
            return x * SCALE

        def fact(n):
            return 1 if n <= 1 else n * fact(n - 1)

        def job(x):
            return helper(x) + math.floor(2.5) + fact(3)

        @dataclasses.dataclass
        class Point:
            x: int
            y: int

            def norm2(self):
                return self.x * self.x + self.y * self.y

        sys.stdout.write(encode((job, Point(3, 4), fact)).hex())
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    data = bytes.fromhex(proc.stdout)
    assert ext_codes(data) == [TUPLE, DILLED, DILLED, DILLED]
    job, point, fact = decode(data)
    assert job(1) == 10 + 2 + 6  # its globals (helper, SCALE, math, fact) came along
    assert (point.x, point.y, point.norm2()) == (3, 4, 25)
    assert fact(5) == 120


# -- what cannot be sent ---------------------------------------------------------------


def test_a_lock_is_refused_with_its_position_and_the_fix():
    with pytest.raises(UnserializableMessage) as info:
        encode((PID_A, {"key": [1, threading.Lock()]}))
    err = info.value
    assert isinstance(err, TypeError) and isinstance(err, termite.TermiteError)
    text = str(err)
    assert "message[1]['key'][1]" in text
    assert "_thread.lock" in text
    assert "pid" in text and "process" in text
    assert err.path == "message[1]['key'][1]" and err.type_name == "_thread.lock"


def test_a_closure_over_a_lock_names_the_variable():
    guard = threading.Lock()

    def critical():
        with guard:
            return 1

    with pytest.raises(UnserializableMessage) as info:
        encode(("run", critical))
    assert info.value.path == "message[1] (its variable 'guard')"
    assert "cannot pickle '_thread.lock' object" in str(info.value)


class Connection:
    def __init__(self, sock):
        self.peer = "db"
        self.sock = sock


def test_an_open_socket_inside_an_object_is_named_down_to_the_attribute():
    with socket.socket() as sock, pytest.raises(UnserializableMessage) as info:
        encode(["query", Connection(sock)])
    assert info.value.path == "message[1].sock"
    assert "socket.socket" in str(info.value)


@dataclasses.dataclass
class _Holder:
    lock: object = dataclasses.field(default_factory=threading.Lock)


def test_resources_dill_would_copy_are_refused(tmp_path):
    with open(tmp_path / "f.txt", "w") as handle, pytest.raises(UnserializableMessage) as info:
        encode({"log": handle})
    assert info.value.path == "message['log']"
    with pytest.raises(UnserializableMessage) as info:
        encode(("job", _Holder()))
    assert info.value.path == "message[1].lock"
    with pytest.raises(UnserializableMessage) as info:
        encode([Point(1, threading.RLock())])
    assert info.value.path == "message[0].y" and info.value.type_name == "_thread.RLock"
    with pytest.raises(UnserializableMessage, match="generator"):
        encode((x for x in range(3)))


def test_an_unserializable_dict_key_is_named():
    class Key:
        def __init__(self):
            self.lock = threading.Lock()

        def __hash__(self):
            return 1

    with pytest.raises(UnserializableMessage) as info:
        encode({"a": {Key(): 1}})
    assert info.value.path.startswith("message['a'] (the key")
    assert info.value.path.endswith(".lock")


# -- malformed input ---------------------------------------------------------------------

SAMPLE = (PID_A, make_tag(), ("add", 1, 2), [Exit(PID_A, "normal")], {"k": b"v"}, NODE_A)


def test_every_truncation_is_malformed():
    data = encode(SAMPLE)
    assert decode(data) == SAMPLE
    for end in range(len(data)):
        with pytest.raises(MalformedMessage):
            decode(data[:end])


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",  # never used in msgpack
        b"\x93\x01",  # an array of 3 with 1 item
        encode(("a", 1)) + b"\x00",  # trailing garbage
        msgpack.packb(msgpack.ExtType(99, b"")),  # unknown extension code
        msgpack.packb(msgpack.ExtType(PID, b"\x00\x01")),  # a pid too short
        msgpack.packb(msgpack.ExtType(PID, b"\x00" * 8 + msgpack.packb(["h", "port", 1]))),
        msgpack.packb(msgpack.ExtType(NODE, msgpack.packb(["h", 1]))),
        msgpack.packb(msgpack.ExtType(TAG, b"\x00" * 15)),
        msgpack.packb(msgpack.ExtType(PICKLED, b"not a pickle")),
        msgpack.packb(msgpack.ExtType(DILLED, b"\x80\x05garbage")),
        msgpack.packb(msgpack.ExtType(PICKLED, pickle.dumps(ImportError)[:-3])),
        b"\x81\x91\x01\x02",  # a map whose key is a list
        b"\xa3\xff\xfe\xfd",  # a str that is not UTF-8
        b"\x91" * 3000,  # nesting deeper than the unpacker allows
    ],
    ids=lambda data: repr(data)[:40],
)
def test_malformed_data_raises_malformed_message_only(data):
    with pytest.raises(MalformedMessage):
        decode(data)


def test_malformed_message_is_a_value_error_and_a_termite_error():
    with pytest.raises(ValueError) as info:
        decode(b"\xc1")
    assert isinstance(info.value, termite.TermiteError)


def test_untrusted_peers_cannot_send_pickles():
    assert_same(roundtrip(SAMPLE[:3] + (NODE_A,), trusted=False), SAMPLE[:3] + (NODE_A,))
    for msg in (Exit(PID_A, "normal"), lambda: 1, 2**70):
        data = encode(msg)
        assert decode(data) is not None
        with pytest.raises(MalformedMessage, match="untrusted"):
            decode(data, trusted=False)


def test_max_size_is_checked_before_parsing():
    data = encode(list(range(100)))
    assert decode(data, max_size=len(data)) == list(range(100))
    with pytest.raises(MalformedMessage, match="limit"):
        decode(data, max_size=len(data) - 1)
    with pytest.raises(MalformedMessage):
        decode(b"\xc1" * 10, max_size=5)


# -- threads -------------------------------------------------------------------------------


def test_encode_and_decode_from_many_threads_at_once():
    errors = []

    def worker(n):
        try:
            for i in range(2000):
                msg = (Pid(NODE_A, n), make_tag(), ("add", i, (n, [i])), {(n, i): [()]})
                assert decode(encode(msg)) == msg
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


# -- properties ----------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary()
)
keys = st.text() | st.integers() | st.tuples(st.integers(), st.text())
plain_data = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=6)
    | st.lists(children, max_size=6).map(tuple)
    | st.dictionaries(keys, children, max_size=6),
    max_leaves=40,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plain_data)
def test_plain_data_always_round_trips(msg):
    assert_same(decode(encode(msg)), msg)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_raise_malformed_message(data):
    # trusted=False: unpickling arbitrary bytes is not safe (it may run code or
    # allocate without bound); that is what trusted=False is for.
    try:
        decode(data, trusted=False)
    except MalformedMessage:
        pass


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_damaged_encodings_decode_or_raise_malformed_message(data):
    frame = bytearray(encode(SAMPLE[:3] + ({"k": [b"v", 1.5]}, NODE_A)))
    for _ in range(data.draw(st.integers(1, 4))):
        frame[data.draw(st.integers(0, len(frame) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(frame)))
    try:
        decode(bytes(frame[:cut]))
    except MalformedMessage:
        pass



def test_a_function_sent_again_is_dilled_once_unless_what_it_refers_to_is_rebound(monkeypatch):
    from termite._net import pickling

    dilled = []
    real = pickling.dill_dumps
    monkeypatch.setattr(pickling, "dill_dumps", lambda obj: dilled.append(obj) or real(obj))
    offset = 1
    add = lambda x: x + offset  # noqa: E731
    first = decode(encode(add))
    assert decode(encode(add)) is first  # the receiving side reuses what it made from the same bytes
    assert len(dilled) == 1 and first(1) == 2
    offset = 10  # rebinding a variable it uses: sent afresh
    assert decode(encode(add))(1) == 11
    assert len(dilled) == 2


def test_decode_frame_gives_a_frame_s_messages_and_those_before_a_bad_one():
    one, two = encode(("a", 1)), encode((Pid(NodeRef("h", 1, 2), 3), [4.5]))
    assert decode_frame(one) == [("a", 1)]
    assert decode_frame(encode_batch([one, two, one])) == [("a", 1), (Pid(NodeRef("h", 1, 2), 3), [4.5]), ("a", 1)]
    with pytest.raises(MalformedMessage) as bad:
        decode_frame(encode_batch([one, two, b"\xc1", one]))
    assert bad.value.decoded == [("a", 1), (Pid(NodeRef("h", 1, 2), 3), [4.5])]
    with pytest.raises(MalformedMessage) as bad:
        decode_frame(one[:-1])
    assert bad.value.decoded == []
