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
Without the extension (not built), the msgpack path does everything.

Costs, encode + decode, measured on the development machine (CPython 3.11,
msgpack 1.2): an int or a short str 0.15 µs; ``("add", 1, 2)`` 0.2 µs;
``(pid, tag, ("add", 1, 2))`` 0.5 µs (2.9 µs by the msgpack path; pickle
alone takes 4.7 µs for it); ``Exit(pid, crash)`` by pickle 7 µs; a lambda or
closure by dill 140-200 µs.  ``encode`` and ``decode`` may be called from any
thread.
"""

from __future__ import annotations

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


def decode(data, *, trusted: bool = True, max_size: int | None = None):
    """Deserialize a message made by :func:`encode`; raises :class:`MalformedMessage`.

    ``trusted=False`` refuses pickled and dilled objects.  ``max_size``
    refuses inputs of more bytes before parsing them.
    """
    if max_size is not None and len(data) > max_size:
        raise MalformedMessage(f"a message of {len(data)} bytes, over the limit of {max_size}")
    try:
        if _fast_decode is not None and (data.__class__ is bytes or data.__class__ is bytearray):
            return _fast_decode(data, trusted)
        return _decode_py(data, trusted)
    except MalformedMessage:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever the bytes did, the frame is bad
        raise _malformed(exc) from exc


def _decode_py(data, trusted: bool = True):
    """``decode`` by msgpack and the hooks above, errors as they come: the reference for termite._net._fastcodec."""
    return _unpackb(data, ext_hook=_ext if trusted else _ext_untrusted, list_hook=_array, strict_map_key=False)


def encode_batch(encoded: list[bytes]) -> bytes:
    """One frame holding several encoded messages: their count, then each of them."""
    return b"".join([msgpack.packb(len(encoded)), *encoded])


def decode_all(data):
    """The messages of a frame: one message, or a batch made by :func:`encode_batch`.

    A generator: the messages before a bad one are yielded, then
    :class:`MalformedMessage` is raised and the rest of the frame is lost
    (msgpack cannot find where the next message would start).
    """
    if _fast_decode is None or (data.__class__ is not bytes and data.__class__ is not bytearray):
        yield from _decode_all_py(data)
        return
    # termite._net._fastcodec, step by step as _decode_all_py goes
    if data.__class__ is bytearray:
        data = bytes(data)  # as msgpack copies the rest: what the caller changes later is not read
    size = len(data)
    try:
        msg, end = _fast_decode_from(data, 0, size)
    except MalformedMessage:
        raise
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
            msg, end = _fast_decode_from(data, end, limit)
        except _Truncated:
            break  # the Unpacker waits for more data: the batch ends there
        except MalformedMessage:
            raise
        except Exception as exc:  # noqa: BLE001
            raise _malformed(exc) from exc
        if got == count:
            raise MalformedMessage(f"a batch of {count} messages holding more")
        got += 1
        yield msg
    if got != count:
        raise MalformedMessage(f"a batch of {count} messages holding {got} whole ones")


def decode_frame(data) -> list:
    """:func:`decode_all`'s messages as a list.  On a bad message it raises
    :class:`MalformedMessage` whose ``decoded`` holds the messages before it."""
    if _fast_decode is not None and data.__class__ is bytes:
        try:  # the common frame: one message, read in C
            msg, end = _fast_decode_from(data, 0, len(data))
        except Exception:  # noqa: BLE001 - decode_all reads it again and says what is wrong
            pass
        else:
            if end == len(data):
                return [msg]
    decoded = []
    try:
        for msg in decode_all(data):
            decoded.append(msg)
    except MalformedMessage as exc:
        exc.decoded = decoded
        raise
    return decoded


def decode_frame_lenient(data, where: str) -> list:
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
        for msg in _decode_all_py(data, ext):
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


def _decode_all_py(data, _ext=_ext):
    """``decode_all`` by msgpack and the hooks above: the reference for termite._net._fastcodec."""
    try:
        yield _unpackb(data, ext_hook=_ext, list_hook=_array, strict_map_key=False)
        return
    except msgpack.ExtraData as more:  # a batch: its count, and the messages
        count, rest = more.unpacked, more.extra
    except MalformedMessage:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever the bytes did, the frame is bad
        raise _malformed(exc) from exc
    if count.__class__ is not int or count < 2:
        raise MalformedMessage(f"a frame with trailing bytes after a {type(count).__name__}")
    unpacker = msgpack.Unpacker(ext_hook=_ext, list_hook=_array, strict_map_key=False, max_buffer_size=len(rest) + 1)
    unpacker.feed(rest)
    got = 0
    try:
        for msg in unpacker:
            if got == count:
                raise MalformedMessage(f"a batch of {count} messages holding more")
            got += 1
            yield msg
    except MalformedMessage:
        raise
    except Exception as exc:  # noqa: BLE001
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
else:
    _fast_encode = lambda msg: None  # noqa: E731
    _fast_decode = _fast_decode_from = _Truncated = None
