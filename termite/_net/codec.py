"""Codec: messages to bytes and back, for messages that cross nodes.

``encode(msg) -> bytes`` and ``decode(data) -> msg``.  The envelope is
msgpack.  Plain data stays msgpack and comes back with exactly its type: None,
bool, int (64-bit), float, str, bytes, list, tuple and dict, nested in any way
(a tuple comes back a tuple and a list a list, since receive patterns tell
them apart; a tuple used as a dict key comes back a tuple).  ``bytearray`` and
``memoryview`` travel as msgpack bin and come back as ``bytes``.  Everything
else is an extension type:

====  ==============  =========================================================
code  what            payload
====  ==============  =========================================================
1     tuple           empty.  A tuple is the msgpack array
                      ``[ext 1, *items]``: the empty ext 1 marks the array as
                      a tuple, and the items are plain msgpack (no nested
                      buffers, no recursion when decoding).
2     ``Pid``         8 bytes: the serial (unsigned, big-endian), then the
                      payload of code 4 for its node.
3     ``Tag``         16 bytes: origin and serial (unsigned 64-bit, big-endian).
4     ``NodeRef``     msgpack ``[host, port, incarnation]`` (incarnation may be nil).
5     pickled object  ``pickle.dumps(obj, protocol=5)``.
6     dilled object   dill, protocol 5, ``recurse=True``.
====  ==============  =========================================================

Objects that are not plain data go by pickle, and only what pickle cannot do
(lambdas, closures, functions of ``__main__``) by dill, chosen per object:
see termite/_net/pickling.py, which also keeps a function sent again and
again from being dilled again.  Resources cannot travel: a lock, an open
file, a socket.  ``encode`` raises :class:`UnserializableMessage` naming the
object's type and where it sits in the message (termite/_net/diagnosis.py
finds it); the fix, as the Termite paper says (section 3.1), is to wrap the
resource in a process and send that process's pid.

``decode`` raises only :class:`MalformedMessage` for data it cannot decode
(truncated, garbage, unknown extension codes, trailing bytes, or an object
that fails to unpickle), so the transport drops such a frame with one log
line; the endpoint then reads it again with :func:`decode_frame_lenient`,
which puts an ``Unreadable`` where an object fails to unpickle, so that who
waits for the message can be told why.  ``decode(data, trusted=False)`` refuses pickled and dilled objects
(unpickling runs arbitrary code, and may allocate without bound on garbage),
so from an untrusted peer only plain data, tuples, pids, tags and node
references arrive; frames from cluster peers are trusted, since CURVE
authenticates them.  ``max_size`` refuses larger inputs before parsing.

What a frame decodes to is bounded (issue 15: a 60 MB frame of empty lists,
one byte each on the wire and 56 in memory, took a node to 4.4 GB and
stalled it for 23 s).  Each decoded object is charged about its CPython size
(the ``COST_*`` table below; small ints and other shared objects are free),
and a frame of n bytes may decode to at most ``EXPANSION * n +
EXPANSION_FLOOR`` bytes of objects, and never more than ``max_decoded`` (a
node's ``Network.max_decoded``, :data:`MAX_DECODED` unless set).  Past that,
decoding stops with :class:`MalformedMessage`; a container is charged before
it is allocated, so a header claiming 60 million items is refused at once.
Ordinary messages stay below it: per byte of frame, a list of ints costs 8
bytes of objects, of floats 4, of 2-letter strs 21, of pairs as lists
([1, 2]) 27, and a bytes payload almost nothing.  (A frame's own size is
bounded by the transport: ``Network.max_frame``.)

A ``msgpack.ExtType`` inside a message is written as it is (msgpack handles
it before any hook), so it is read back with the codes above: do not send
one.  A frame that ``encode`` did not make may decode to something odd (an
ext 1 where ``encode`` never puts one decodes as the ``TUPLE_MARK`` object);
checking for that would cost every message a scan, and such frames come
only from a peer that forges them.

Decoded pids are new ``Pid`` objects (``_proc`` is None) equal to the
originals; a decoded pid's ``NodeRef`` is shared among all pids of that node.

The C extension ``termite._net._fastcodec`` encodes and decodes plain data,
tuples, pids, tags and node references to and from exactly the bytes and
objects that the msgpack path below makes of them, without a Python hook per
tuple or pid; a message holding anything else is encoded by the msgpack path.
Its ``take_sends`` (:data:`take_sends` here, None without it) reads a whole
received frame and delivers its plain SENDs to local processes, as the
endpoint's loop would (termite/_net/endpoint.py).  Without the extension
(not built), the msgpack path does everything.

Costs, encode + decode, measured on the development machine (CPython 3.11,
msgpack 1.2): an int or a short str 0.15 µs; ``("add", 1, 2)`` 0.2 µs;
``(pid, tag, ("add", 1, 2))`` 0.5 µs (2.9 µs by the msgpack path; pickle
alone takes 4.7 µs for it); ``Exit(pid, crash)`` by pickle 7 µs; a lambda or
closure by dill 140-200 µs.  ``encode`` and ``decode`` may be called from any
thread.
"""

from __future__ import annotations

import gc
import struct

import msgpack
from msgpack import ExtType

from termite._core.errors import TermiteError
from termite._core.ids import NodeRef, Pid, Tag
from termite._net import pickling as _pickling
from termite._net.diagnosis import UnserializableMessage, unserializable as _unserializable
from termite._net.pickling import (
    DILLED,
    PICKLED,
    CannotSerialize as _CannotSerialize,
    object_ext as _object_ext,
    object_from_dill as _object_from_dill,
    pickle_loads as _pickle_loads,
    Unreadable,
    unreadable as _unreadable,
)

__all__ = ["encode", "decode", "decode_frame_lenient", "first_unreadable", "UnserializableMessage", "MalformedMessage", "Unreadable"]


class MalformedMessage(TermiteError, ValueError):
    """``decode`` was given bytes that are not a message ``encode`` could have made."""


# -- what a frame may decode to ------------------------------------------------

EXPANSION = 32  # bytes of decoded objects a frame may take per byte of it,
EXPANSION_FLOOR = 1 << 20  # plus this, so that small frames never meet the limit,
MAX_DECODED = 256 << 20  # and never more than this (a node's Network.max_decoded)

# What a decoded object is charged: about its CPython 3.11 size in bytes, as
# termite/_net/_fastcodec.c's COST_ table (tests/test_codec_limits.py checks
# they are the same).  A str or bytes is charged its object, not its length:
# that is never more than its bytes on the wire.
COST_ARRAY = 56  # a list or a tuple,
COST_SLOT = 8  # and per item
COST_MAP = 64  # a dict,
COST_MAP_TABLE = 112  # its first key table, once it has an entry,
COST_ENTRY = 48  # and per entry
COST_INT = 32  # outside -5..256 (CPython shares those)
COST_FLOAT = 24
COST_STR = 56  # of 2 or more bytes of UTF-8 (shorter ones are shared)
COST_BYTES = 40  # of 2 or more bytes
COST_PID = 88  # the Pid and its serial
COST_TAG = 120  # the Tag and its two ints


def decode_budget(size: int, max_decoded: int | None = MAX_DECODED) -> int | None:
    """How many bytes of objects a frame of ``size`` bytes may decode to; None: no limit."""
    if max_decoded is None:
        return None
    return min(size * EXPANSION + EXPANSION_FLOOR, max_decoded)


def over_budget(size: int, max_decoded: int | None, decoded: list) -> MalformedMessage:
    """The error for a frame of ``size`` bytes refused for its budget, ``decoded`` the messages before."""
    refused = _over_budget(size, decode_budget(size, max_decoded))
    refused.decoded = decoded
    return refused


def _over_budget(size: int, budget: int) -> MalformedMessage:
    refused = MalformedMessage(
        f"a frame of {size} bytes would decode to more than {budget} bytes of objects (the limit is "
        f"{EXPANSION} per byte of frame plus {EXPANSION_FLOOR}, at most the node's max_decoded): refused; "
        "send such data in smaller messages, or give the receiving node a larger max_decoded"
    )
    refused.over_budget = True  # not worth reading again (decode_frame_lenient): it would be refused again
    return refused


# -- extension codes ----------------------------------------------------------

TUPLE = 1
PID = 2
TAG = 3
NODE = 4
# PICKLED = 5 and DILLED = 6 come from termite/_net/pickling.py.


class _TupleMark:
    """What ext 1 decodes to: the first item of an array that is a tuple."""

    __slots__ = ()

    def __repr__(self):
        return "TUPLE_MARK"


TUPLE_MARK = _TupleMark()

_new_ext = tuple.__new__  # ExtType() checks its arguments in Python: 3x slower
_TUPLE_EXT = ExtType(TUPLE, b"")
_U64 = struct.Struct(">Q")
_U64x2 = struct.Struct(">QQ")
# Assigned, not imported by name: CPython 3.11 compiles ``name.get(x)`` on an
# imported name as an attribute load, making a bound method per call.
_received_functions = _pickling.received_functions

# NodeRef -> payload and payload -> NodeRef.  A cluster has few nodes; the
# caches are emptied if they ever grow past _CACHE_LIMIT (say, a peer sending
# made-up nodes).
_CACHE_LIMIT = 4096
_node_payloads: dict[NodeRef, bytes] = {}
_nodes: dict[bytes, NodeRef] = {}


# -- encode -------------------------------------------------------------------


def _node_fields_ok(host, port, incarnation) -> bool:
    return host.__class__ is str and port.__class__ is int and (incarnation is None or incarnation.__class__ is int)


def _node_payload(node: NodeRef) -> bytes | None:
    data = _node_payloads.get(node)
    if data is None:
        host, port, incarnation = node.host, node.port, node.incarnation
        if not _node_fields_ok(host, port, incarnation):
            return None
        try:
            data = msgpack.packb((host, port, incarnation))
        except (OverflowError, ValueError):
            return None  # an incarnation beyond 64 bits: the node goes by pickle
        if len(_node_payloads) >= _CACHE_LIMIT:
            _node_payloads.clear()
        _node_payloads[node] = data
    return data


def _default(obj):
    """The packer's hook for everything that is not exactly a plain type."""
    cls = obj.__class__
    if cls is tuple:
        return [_TUPLE_EXT, *obj]  # items are packed by the same packer, in line
    if cls is Pid:
        node = _node_payloads.get(obj.node) or _node_payload(obj.node)
        serial = obj.serial
        if node is not None and serial.__class__ is int and 0 <= serial < 1 << 64:
            return _new_ext(ExtType, (PID, _U64.pack(serial) + node))
    elif cls is Tag:
        if len(obj) == 2:  # (obj[0], obj[1]): star-unpacking a tuple subclass is twice as slow
            try:
                return _new_ext(ExtType, (TAG, _U64x2.pack(obj[0], obj[1])))
            except struct.error:
                pass  # a Tag that make_tag did not make: pickle it
    elif cls is NodeRef:
        node = _node_payload(obj)
        if node is not None:
            return _new_ext(ExtType, (NODE, node))
    return _object_ext(obj)


def _new_packer() -> msgpack.Packer:
    return msgpack.Packer(default=_default, strict_types=True, use_bin_type=True)


# A msgpack Packer is neither thread-safe nor re-entrant (its buffer is shared
# and the default hook runs Python code, so the GIL can pass to another
# thread mid-message).  Each encode takes a packer from this pool and puts
# it back: list.pop and list.append are atomic.  A packer keeps a buffer as
# large as the largest message it made, so one that made a large message is
# dropped rather than kept.
_packers = [_new_packer()]
_KEEP_PACKER_BELOW = 1 << 20


def encode(msg) -> bytes:
    """Serialize a message for another node; raises :class:`UnserializableMessage`."""
    data = _fast_encode(msg)  # None: something in msg that only the Python path does
    if data is None:
        data = _encode_py(msg)
    return data


def _encode_py(msg) -> bytes:
    """``encode`` by msgpack and the hooks above: the reference for termite._net._fastcodec."""
    try:
        packer = _packers.pop()
    except IndexError:
        packer = _new_packer()
    try:
        data = packer.pack(msg)
    except _CannotSerialize as exc:
        _packers.append(packer)  # pack() emptied its buffer before raising
        raise _unserializable(msg, exc) from None
    except (ValueError, OverflowError):
        # msgpack's own limits: nesting deeper than 511, a str with lone
        # surrogates, a bytes or str of 4 GiB.  Pickle the whole message.
        try:
            data = packer.pack(_object_ext(msg))
        except _CannotSerialize as exc:
            _packers.append(packer)
            raise _unserializable(msg, exc) from None
    if len(data) < _KEEP_PACKER_BELOW:
        _packers.append(packer)
    return data


# -- decode -------------------------------------------------------------------


def _array(seq: list):
    """The unpacker's hook for every array: ``[TUPLE_MARK, *items]`` is a tuple."""
    if seq and seq[0] is TUPLE_MARK:
        del seq[0]
        return tuple(seq)
    return seq


def _cost_of(objects) -> int:
    """What ``objects`` are charged, containers aside (they are charged by their hooks)."""
    cost = 0
    for x in objects:
        cls = x.__class__
        if cls is int:
            if x > 256 or x < -5:
                cost += COST_INT
        elif cls is str:
            if len(x) > 1 or (x and ord(x) > 127):
                cost += COST_STR
        elif cls is float:
            cost += COST_FLOAT
        elif cls is bytes:
            if len(x) > 1:
                cost += COST_BYTES
        elif cls is Pid:
            cost += COST_PID
        elif cls is Tag:
            cost += COST_TAG
    return cost


class _Budget:
    """The msgpack path's account of a frame's budget, charged by its hooks.

    msgpack calls no hook per scalar, so a container is charged when it is
    complete, for itself and for the scalars in it, and a message for itself
    when it is a scalar: the same total as _fastcodec.c charges as it goes.
    (The C path stops as soon as the total passes the budget, this one when a
    container completes, so a frame cut short may fail differently; a whole
    frame is refused by both or neither, but for a map with a repeated key,
    where C charges the values replaced too.)
    """

    __slots__ = ("left", "size", "budget")

    def __init__(self, size: int, budget: int):
        self.left = budget
        self.size = size
        self.budget = budget

    def charge(self, cost: int) -> None:
        self.left -= cost
        if self.left < 0:
            raise _over_budget(self.size, self.budget)

    def array(self, seq: list):
        """The list hook: the array and its scalars, then ``_array``."""
        self.charge(COST_ARRAY + COST_SLOT * len(seq) + _cost_of(seq))
        if seq and seq[0] is TUPLE_MARK:
            del seq[0]
            return tuple(seq)
        return seq

    def map(self, d: dict) -> dict:
        """The object hook: the dict and its scalars."""
        n = len(d)
        self.charge(COST_MAP + (COST_MAP_TABLE + COST_ENTRY * n if n else 0) + _cost_of(d) + _cost_of(d.values()))
        return d

    def message(self, msg) -> None:
        """A whole message: charged here if it is a scalar."""
        self.charge(_cost_of((msg,)))

    def max_array_len(self, default: int) -> int:
        """msgpack allocates an array's slots when it reads its header: one over the budget is refused then."""
        return min(default, max(0, (self.budget - COST_ARRAY) // COST_SLOT))

    def refused_header(self, exc: Exception, default: int) -> MalformedMessage | None:
        """The error for msgpack's refusal of an array longer than max_array_len allowed for the budget."""
        if self.max_array_len(default) < default and "exceeds max_array_len" in str(exc):
            return _over_budget(self.size, self.budget)
        return None


def _node(data: bytes) -> NodeRef:
    node = _nodes.get(data)
    if node is None:
        fields = msgpack.unpackb(data, use_list=False)
        if fields.__class__ is not tuple or len(fields) != 3:
            raise MalformedMessage("a node reference is not [host, port, incarnation]")
        host, port, incarnation = fields
        if not _node_fields_ok(host, port, incarnation):
            raise MalformedMessage("a node reference is not [host, port, incarnation]")
        node = NodeRef(host, port, incarnation)
        if len(_nodes) >= _CACHE_LIMIT:
            _nodes.clear()
        _nodes[bytes(data)] = node
    return node


def _ext(code: int, data: bytes):
    """The unpacker's hook for extension types, for trusted peers."""
    if code == TUPLE:
        return TUPLE_MARK
    if code == PID:
        node = _nodes.get(data[8:]) or _node(data[8:])
        return Pid(node, _U64.unpack_from(data)[0])
    if code == TAG:
        return Tag(_U64x2.unpack(data))
    if code == PICKLED:
        return _pickle_loads(data)
    if code == DILLED:
        fn = _received_functions.get(data)  # a function received before, found without a call
        if fn is None:
            fn = _object_from_dill(data)
        return fn
    if code == NODE:
        return _node(data)
    raise MalformedMessage(f"unknown extension code {code}")


def _ext_untrusted(code: int, data: bytes):
    """The unpacker's hook for extension types, for peers that have not authenticated."""
    if code == PICKLED or code == DILLED:
        raise MalformedMessage("a pickled object from an untrusted peer (unpickling runs code): refused")
    return _ext(code, data)


_unpackb = msgpack.unpackb


def decode(data, *, trusted: bool = True, max_size: int | None = None, max_decoded: int | None = MAX_DECODED):
    """Deserialize a message made by :func:`encode`; raises :class:`MalformedMessage`.

    ``trusted=False`` refuses pickled and dilled objects.  ``max_size``
    refuses inputs of more bytes before parsing them; ``max_decoded`` bounds
    what they decode to (see the module's docstring; None: no bound).
    """
    if max_size is not None and len(data) > max_size:
        raise MalformedMessage(f"a message of {len(data)} bytes, over the limit of {max_size}")
    try:
        if _fast_decode is not None and (data.__class__ is bytes or data.__class__ is bytearray):
            return _fast_decode(data, trusted, max_decoded)
        return _decode_py(data, trusted, max_decoded)
    except MalformedMessage:
        raise
    except _OverBudget:
        raise _over_budget(len(data), decode_budget(len(data), max_decoded)) from None
    except Exception as exc:  # noqa: BLE001 - whatever the bytes did, the frame is bad
        raise _malformed(exc) from exc


def _decode_py(data, trusted: bool = True, max_decoded: int | None = None):
    """``decode`` by msgpack and the hooks above, errors as they come: the reference for termite._net._fastcodec."""
    ext_hook = _ext if trusted else _ext_untrusted
    if max_decoded is None:
        return _unpackb(data, ext_hook=ext_hook, list_hook=_array, strict_map_key=False)
    account = _Budget(len(data), decode_budget(len(data), max_decoded))
    try:
        msg = _paused(len(data), _unpackb, data, ext_hook=ext_hook, list_hook=account.array, object_hook=account.map,
                      strict_map_key=False, max_array_len=account.max_array_len(len(data)))
    except ValueError as exc:
        raise account.refused_header(exc, len(data)) or exc
    account.message(msg)
    return msg


_PAUSE_GC_ABOVE = 1 << 16


def _paused(size: int, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` with the garbage collector paused if ``size`` is large, as _fastcodec.c
    decodes: decoding makes no garbage, and a collection in the middle would walk what is being built."""
    if size <= _PAUSE_GC_ABOVE or not gc.isenabled():
        return fn(*args, **kwargs)
    gc.disable()
    try:
        return fn(*args, **kwargs)
    finally:
        gc.enable()


def encode_batch(encoded: list[bytes]) -> bytes:
    """One frame holding several encoded messages: their count, then each of them."""
    return b"".join([msgpack.packb(len(encoded)), *encoded])


def decode_all(data, max_decoded: int | None = MAX_DECODED):
    """The messages of a frame: one message, or a batch made by :func:`encode_batch`.

    A generator: the messages before a bad one are yielded, then
    :class:`MalformedMessage` is raised and the rest of the frame is lost
    (msgpack cannot find where the next message would start).  What the
    whole frame decodes to is bounded by ``max_decoded`` (see the module's
    docstring).
    """
    if _fast_decode is None or (data.__class__ is not bytes and data.__class__ is not bytearray):
        yield from _decode_all_py(data, max_decoded)
        return
    # termite._net._fastcodec, step by step as _decode_all_py goes
    if data.__class__ is bytearray:
        data = bytes(data)  # as msgpack copies the rest: what the caller changes later is not read
    size = len(data)
    try:
        msg, end, left = _fast_decode_from(data, 0, size, max_decoded, None)
    except MalformedMessage:
        raise
    except _OverBudget:
        raise _over_budget(size, decode_budget(size, max_decoded)) from None
    except Exception as exc:  # noqa: BLE001 - whatever the bytes did, the frame is bad
        raise _malformed(exc) from exc
    if end == size:
        yield msg
        return
    count = msg
    if count.__class__ is not int or count < 2:
        raise MalformedMessage(f"a frame with trailing bytes after a {type(count).__name__}")
    limit = size - end + 1  # the Unpacker's max_buffer_size, hence its max_array_len
    got = 0
    while end < size:
        try:
            msg, end, left = _fast_decode_from(data, end, limit, max_decoded, left)
        except _Truncated:
            break  # the Unpacker waits for more data: the batch ends there
        except MalformedMessage:
            raise
        except _OverBudget:
            raise _over_budget(size, decode_budget(size, max_decoded)) from None
        except Exception as exc:  # noqa: BLE001
            raise _malformed(exc) from exc
        if got == count:
            raise MalformedMessage(f"a batch of {count} messages holding more")
        got += 1
        yield msg
    if got != count:
        raise MalformedMessage(f"a batch of {count} messages holding {got} whole ones")


def decode_frame(data, max_decoded: int | None = MAX_DECODED) -> list:
    """:func:`decode_all`'s messages as a list.  On a bad message it raises
    :class:`MalformedMessage` whose ``decoded`` holds the messages before it."""
    if _fast_decode is not None and data.__class__ is bytes:
        size = len(data)
        try:  # the common frame: one message, read in C
            msg, end = _fast_decode_from(data, 0, size, max_decoded)
        except _OverBudget:
            exc = _over_budget(size, decode_budget(size, max_decoded))  # not read twice: the limit is the point
            exc.decoded = []
            raise exc from None
        except Exception:  # noqa: BLE001 - decode_all reads it again and says what is wrong
            pass
        else:
            if end == size:
                return [msg]
    decoded = []
    try:
        for msg in decode_all(data, max_decoded):
            decoded.append(msg)
    except MalformedMessage as exc:
        exc.decoded = decoded
        raise
    return decoded


def decode_frame_lenient(data, where: str, max_decoded: int | None = None) -> list:
    """A frame's messages, with an :class:`Unreadable` for each object that fails to unpickle.

    For a frame :func:`decode_frame` refused: the node can then still read
    who waits for an answer (a spawner, a caller's pid and tag) and tell
    them why.  Raises :class:`MalformedMessage` for bytes that are not a
    frame at all.  ``where`` names this node in the reasons.
    """

    def ext(code: int, data: bytes):
        if code == PICKLED or code == DILLED:
            try:
                return _ext(code, data)
            except Exception as exc:  # noqa: BLE001 - any failure to unpickle: say which object
                return _unreadable(data, exc, where)
        return _ext(code, data)

    decoded = []
    try:
        for msg in _decode_all_py(data, max_decoded, ext):
            decoded.append(msg)
    except MalformedMessage as exc:
        exc.decoded = decoded
        raise
    return decoded


def first_unreadable(msg, depth: int = 0) -> Unreadable | None:
    """The first :class:`Unreadable` a decoded message holds (only asked of frames that had one)."""
    cls = msg.__class__
    if cls is Unreadable:
        return msg
    if depth > 32:
        return None
    if cls is dict:
        items = [*msg.keys(), *msg.values()]
    elif cls is tuple or cls is list:
        items = msg
    else:
        return None
    for item in items:
        found = first_unreadable(item, depth + 1)
        if found is not None:
            return found
    return None


def _decode_all_py(data, max_decoded: int | None = None, _ext=_ext):
    """``decode_all`` by msgpack and the hooks above: the reference for termite._net._fastcodec."""
    if max_decoded is None:
        account, list_hook, object_hook, first_len = None, _array, None, -1
    else:
        account = _Budget(len(data), decode_budget(len(data), max_decoded))
        list_hook, object_hook, first_len = account.array, account.map, account.max_array_len(len(data))
    try:
        msg = _paused(len(data), _unpackb, data, ext_hook=_ext, list_hook=list_hook, object_hook=object_hook,
                      strict_map_key=False, max_array_len=first_len)
    except msgpack.ExtraData as more:  # a batch: its count, and the messages
        count, rest = more.unpacked, more.extra
    except MalformedMessage:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever the bytes did, the frame is bad
        if account is not None and account.refused_header(exc, len(data)):
            raise account.refused_header(exc, len(data)) from None
        raise _malformed(exc) from exc
    else:
        if account is not None:
            account.message(msg)
        yield msg
        return
    if account is not None:
        account.message(count)
    if count.__class__ is not int or count < 2:
        raise MalformedMessage(f"a frame with trailing bytes after a {type(count).__name__}")
    rest_len = len(rest) + 1
    unpacker = msgpack.Unpacker(ext_hook=_ext, list_hook=list_hook, object_hook=object_hook, strict_map_key=False,
                                max_buffer_size=rest_len,
                                max_array_len=rest_len if account is None else account.max_array_len(rest_len))
    unpacker.feed(rest)
    got = 0
    try:
        while True:
            try:
                msg = _paused(rest_len, next, unpacker)
            except StopIteration:
                break
            if account is not None:
                account.message(msg)
            if got == count:
                raise MalformedMessage(f"a batch of {count} messages holding more")
            got += 1
            yield msg
    except MalformedMessage:
        raise
    except Exception as exc:  # noqa: BLE001
        if account is not None and account.refused_header(exc, rest_len):
            raise account.refused_header(exc, rest_len) from None
        raise _malformed(exc) from exc
    if got != count:
        raise MalformedMessage(f"a batch of {count} messages holding {got} whole ones")


def _malformed(exc: Exception) -> MalformedMessage:
    reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return MalformedMessage(f"cannot decode a message: {reason}")


# -- the common cases in C ------------------------------------------------------

# See the module's docstring; tests/test_fastcodec.py holds the C path to the
# msgpack paths (_encode_py, _decode_py, _decode_all_py).
try:
    from termite._net import _fastcodec as _fastcodec
except ImportError:
    _fastcodec = None

if _fastcodec is not None:
    _fastcodec.init(
        Pid,
        Tag,
        NodeRef,
        TUPLE_MARK,
        _node_payloads,
        _nodes,
        _node_payload,
        _node,
        _ext,
        _ext_untrusted,
        msgpack.Timestamp.from_bytes,  # msgpack decodes ext -1 itself, before any ext_hook
        _encode_py,
    )
    _fast_encode = _fastcodec.encode
    encode = _fastcodec.encode_message  # the encode() above, all in C but the fallback
    _fast_decode = _fastcodec.decode
    _fast_decode_from = _fastcodec.decode_from
    _Truncated = _fastcodec.Truncated
    _OverBudget = _fastcodec.OverBudget
    take_sends = getattr(_fastcodec, "take_sends", None)  # None from a build older than it
    OverBudget = _OverBudget
else:
    _fast_encode = lambda msg: None  # noqa: E731
    _fast_decode = _fast_decode_from = _Truncated = None
    take_sends = OverBudget = None

    class _OverBudget(Exception):
        """Raised only by the C extension, which is not there."""
