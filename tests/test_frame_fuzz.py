"""Bad input from a peer: dropped with one log line and a counter, and the node keeps serving.

Issue 3: "Bad input: malformed frames, truncated msgpack, unknown message
kinds, messages over a configurable size limit are dropped with one log line
and a counter; the node keeps serving everyone else", checked by "fuzzed
frames (hypothesis) that never crash a node".

The set-up is a real node (``termite.Node(port=0, keys=...)`` on its
background thread) and a raw pyzmq DEALER that holds the cluster keys (a CURVE
client with the cluster's key pair, as ``Transport._dealer`` makes one) and
names itself like a node (``host:port:incarnation``), so the node takes its
frames as a member's.  Its address is a ROUTER bound here, so what the node
sends back (replies, exit signals, heartbeats) has somewhere to go.

Synchronisation: frames from one peer are applied in the order sent, so after
the frames under test the same peer sends a legitimate SEND of
``("alive", n)`` to ``node.pid``; when ``node.receive`` has it, every frame
before it has been handled.  No sleeps (one test polls a counter: its frames
come over a second connection, unordered with the probe's).  Each example
also gets a fresh live process (the "victim") that frames may name; at the
end it is stopped, and its monitor must fire without the kernel raising, so
a frame that was accepted but left bad state behind is caught too.

What a bad frame is follows the control-frame table in
termite/_net/distribution.py: a frame is good when it decodes to a tuple of a known
kind with that kind's fields (a pid where a pid belongs, a tag where a monitor
reference belongs, a function to spawn); anything else must be dropped,
counted once in ``Remote.malformed`` (or ``transport.stats.dropped_in`` when
over ``max_frame``) and logged once, as a warning without a traceback.

No frame made here carries a pickled or dilled object (ext 5 or 6): a member
is trusted to send those, and the point here is robustness, not that.
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import NamedTuple

import msgpack
import pytest
import zmq
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st

import termite
from termite import ANY, Down, NodeRef, Pid, Tag
from termite._net.admission import identity_of
from termite._net.codec import MalformedMessage, decode, encode
from termite._net.frames import DEMONITOR, EXIT, HELLO, LINK, MONITOR, SEND, SPAWN, UNLINK

KIND_NAMES = {SEND: "SEND", LINK: "LINK", UNLINK: "UNLINK", EXIT: "EXIT", MONITOR: "MONITOR",
              DEMONITOR: "DEMONITOR", SPAWN: "SPAWN", HELLO: "HELLO"}
REMOTE_SPAWN_BASE = 1 << 63  # the serials a remote spawn may ask for (termite/_net/distribution.py)
FRAME_LOGGERS = ("termite", "termite.distribution", "termite.transport")

FUZZ = settings(
    max_examples=150,
    deadline=None,
    # One node serves every example of a test: starting one per example
    # would cost more than the examples.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    # No "explain" phase: it costs seconds on a failure and adds nothing to a shrunk frame.
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
)


# -- the spec: which decoded frames are good --------------------------------------


def _is_pid(x):
    return x.__class__ is Pid


def _is_tag(x):
    return x.__class__ is Tag


def _anything(x):
    return True


FIELDS = {
    SEND: (_is_pid, _anything),
    LINK: (_is_pid, _is_pid),
    UNLINK: (_is_pid, _is_pid),
    EXIT: (_is_pid, _is_pid, _anything),
    MONITOR: (_is_pid, _is_pid, _is_tag),
    DEMONITOR: (_is_pid, _is_tag),
    SPAWN: (_is_pid, callable, lambda args: args.__class__ is tuple, lambda p: p is None or _is_pid(p),
            lambda name: name is None or name.__class__ is str),
    HELLO: (_is_pid, _is_tag),
}


def known_kind(kind):
    """The field checks of ``kind``, compared with ``==`` as the node does (so 1.0 and True are SEND)."""
    try:
        return FIELDS.get(kind)
    except TypeError:  # unhashable: no kind
        return None


BAD, GOOD = "bad", "good"


def verdict(data: bytes, known_nodes) -> str | None:
    """``"bad"`` or ``"good"`` by the spec; None for a frame this file must not send.

    Decoding here refuses pickled objects (``trusted=False``), so nothing is
    unpickled in the test process; a frame that holds one is never sent.  A
    good frame naming a pid of a node other than the ones set up here could
    make the node reply to an address nobody listens on; it is not sent either.
    """
    try:
        frame = decode(data, trusted=False)
    except MalformedMessage as exc:
        return None if "untrusted" in str(exc) else BAD
    if frame.__class__ is not tuple or not frame:
        return BAD
    checks = known_kind(frame[0])
    fields = frame[1:]
    if checks is None or len(fields) != len(checks) or not all(ok(f) for ok, f in zip(checks, fields)):
        return BAD
    if any(f.__class__ is Pid and f.node not in known_nodes for f in fields):
        return None
    return GOOD


# -- frames, described so that hypothesis prints them readably ----------------------


class Slot:
    """A pid or tag of the running node, put in the frame when it is sent.

    ``victim``: a live process of the node (fresh for each example); ``dead``:
    a local pid of no process; ``peer``: a pid of the raw peer's node;
    ``stale``: a pid of an earlier incarnation of this node; ``fresh``: a pid
    a remote spawn may ask for; ``tag``: a tag.
    """

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __repr__(self):
        return self.name


PIDS = [Slot(name) for name in ("victim", "dead", "peer", "stale")]
FRESH = Slot("fresh")
TAG = Slot("tag")


def _fill(value, env):
    return env[value.name] if value.__class__ is Slot else value


def _kind_repr(items) -> str:
    if items and items[0].__class__ is int and items[0] in KIND_NAMES:
        return ", ".join([KIND_NAMES[items[0]], *map(repr, items[1:])])
    return ", ".join(map(repr, items))


class Control(NamedTuple):
    """A tuple encoded by termite's own codec, slots filled in."""

    items: tuple

    def render(self, env) -> bytes:
        return encode(tuple(_fill(x, env) for x in self.items))

    def __repr__(self):
        return f"Control(({_kind_repr(self.items)}))"


class Truncated(NamedTuple):
    """A well-formed control frame with its last ``drop`` bytes cut off (at least one byte stays)."""

    items: tuple
    drop: int

    def render(self, env) -> bytes:
        data = encode(tuple(_fill(x, env) for x in self.items))
        return data[: len(data) - min(self.drop, len(data) - 1)]

    def __repr__(self):
        return f"Truncated(({_kind_repr(self.items)}), drop={self.drop})"


class Raw(NamedTuple):
    """Bytes sent as they are."""

    data: bytes

    def render(self, env) -> bytes:
        return self.data


class Good(NamedTuple):
    """A legitimate SEND of ``("good", round, i)`` to node.pid."""

    i: int

    def render(self, env) -> bytes:
        return encode((SEND, env["shell"], ("good", env["round"], self.i)))


# -- strategies -----------------------------------------------------------------

U64 = st.integers(0, 2**64 - 1)
MSGPACK_INTS = st.integers(-(2**63), 2**64 - 1)  # what msgpack holds; beyond that encode would pickle
KEYS = st.one_of(st.none(), st.booleans(), MSGPACK_INTS, st.text(max_size=8), st.binary(max_size=8))
SCALARS = st.one_of(KEYS, st.floats())
PLAIN = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(KEYS, inner, max_size=3),
    ),
    max_leaves=8,
)
TAGS = st.one_of(st.just(TAG), st.builds(lambda a, b: Tag((a, b)), U64, U64))
PID_SLOTS = st.one_of(st.just(PIDS[0]), st.sampled_from(PIDS[1:]))  # the live victim half the time
NODE_REFS = st.sampled_from([NodeRef("127.0.0.1", 1, 1), NodeRef("127.0.0.1", 1, None)])
ANY_FIELD = st.one_of(PLAIN, PID_SLOTS, TAGS, NODE_REFS, st.just(FRESH))
REASONS = st.one_of(st.sampled_from(["normal", "kill", "noproc", "killed"]), PLAIN)

#: For each kind, a strategy for each of its fields, of the right type.
#: No callable travels without pickle, so a SPAWN made here is never good.
RIGHT_FIELDS = {
    SEND: (PID_SLOTS, PLAIN),
    LINK: (PID_SLOTS, PID_SLOTS),
    UNLINK: (PID_SLOTS, PID_SLOTS),
    EXIT: (PID_SLOTS, PID_SLOTS, REASONS),
    MONITOR: (PID_SLOTS, PID_SLOTS, TAGS),
    DEMONITOR: (PID_SLOTS, TAGS),
    SPAWN: (st.one_of(st.just(FRESH), PID_SLOTS), PLAIN, st.lists(PLAIN, max_size=2).map(tuple),
            st.one_of(st.none(), PID_SLOTS), st.one_of(st.none(), st.text(max_size=8))),
    HELLO: (PID_SLOTS, TAGS),
}


@st.composite
def well_formed_items(draw):
    kind = draw(st.sampled_from(sorted(RIGHT_FIELDS)))
    return (kind, *(draw(field) for field in RIGHT_FIELDS[kind]))


@st.composite
def control_tuples(draw):
    """Known kinds; each field of the right type or of any type, and the arity right, short or long."""
    kind = draw(st.sampled_from(sorted(RIGHT_FIELDS)))
    fields = [draw(st.one_of(right, ANY_FIELD)) for right in RIGHT_FIELDS[kind]]
    how = draw(st.sampled_from(["as is", "too few", "as is", "too many"]))
    if how == "too few":
        del fields[draw(st.integers(0, len(fields) - 1)):]
    elif how == "too many":
        fields += draw(st.lists(ANY_FIELD, min_size=1, max_size=3))
    return Control((kind, *fields))


@st.composite
def aimed_at_the_victim(draw):
    """A frame that changes a live process's links or monitors, or signals it; its other fields of any type."""
    kind = draw(st.sampled_from([LINK, MONITOR, UNLINK, DEMONITOR, EXIT]))
    fields = [draw(st.one_of(right, ANY_FIELD)) for right in RIGHT_FIELDS[kind]]
    fields[0 if kind == DEMONITOR else 1] = PIDS[0]
    return Control((kind, *fields))


UNKNOWN_KINDS = st.one_of(MSGPACK_INTS, st.floats(), st.text(max_size=8), st.binary(max_size=4), st.none(),
                          st.lists(st.integers(0, 9), max_size=2), PID_SLOTS, TAGS).filter(lambda k: known_kind(k) is None)
unknown_kinds = st.builds(lambda kind, fields: Control((kind, *fields)), UNKNOWN_KINDS, st.lists(ANY_FIELD, max_size=4))

random_bytes = st.binary(min_size=1, max_size=64).map(Raw)  # an empty frame is a heartbeat, not a frame


def _is_control(data: bytes) -> bool:
    """Does ``data`` decode to a tuple of a known kind (whatever its fields)?"""
    try:
        frame = decode(data, trusted=False)
    except MalformedMessage:
        return False
    return frame.__class__ is tuple and len(frame) > 0 and known_kind(frame[0]) is not None


_TUPLE_MARK = msgpack.ExtType(1, b"")
_EXTS = st.builds(msgpack.ExtType, st.integers(0, 127).filter(lambda code: code not in (5, 6)), st.binary(max_size=24))
_MSGPACK_ODDITIES = st.sampled_from([
    b"\xc1",  # the one byte msgpack never uses
    b"\xd6\xff\x00\x00\x00\x00",  # a timestamp (ext -1)
    b"\xc7\x03\xffabc",  # a timestamp of a length no timestamp has
    b"\x91" * 100_000,  # arrays nested deeper than msgpack allows
    b"\xdd\xff\xff\xff\xff",  # an array header claiming 4 G items
    b"\xdf\xff\xff\xff\xff",  # a map header claiming 4 G pairs
    b"\xdb\xff\xff\xff\xff",  # a str header claiming 4 GB
    b"\x92\x01",  # an array missing its last item
    b"\x01\x02",  # a whole message, then a byte more
    b"\x81\x91\x01\x01",  # a map keyed by a list
    b"\x93\xd4\x01\x00\x01\xd4\x02\x00",  # a tuple (SEND, <a pid of one byte>)
    b"\x93\xd4\x01\x00\x01\xd8\x02" + bytes(16),  # a tuple (SEND, <a pid whose node is garbage>)
])


#: Control tuples of known kinds are left to control_tuples(), below.
random_msgpack = st.one_of(
    st.recursive(
        st.one_of(SCALARS, _EXTS),
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.lists(inner, max_size=3).map(lambda items: [_TUPLE_MARK, *items]),  # decodes as a tuple
            st.dictionaries(KEYS, inner, max_size=3),
        ),
        max_leaves=10,
    ).map(lambda value: Raw(msgpack.packb(value, use_bin_type=True))),
    _MSGPACK_ODDITIES.map(Raw),
).filter(lambda frame: not _is_control(frame.data))
truncated = st.builds(Truncated, well_formed_items(), st.integers(1, 200))
decode_level_bad = st.one_of(random_bytes, random_msgpack, truncated, unknown_kinds)
any_frame = st.one_of(control_tuples(), aimed_at_the_victim(), decode_level_bad)


# -- the node and the raw peer ------------------------------------------------------


async def _victim():
    """A process that fuzzed frames may name; it ends on "stop" (or by an exit signal)."""
    await termite.receive("stop")


class Rig:
    """A networked node on its thread and a raw member peer talking to it."""

    def __init__(self, keyfile: str, caplog, **node_options):
        self.caplog = caplog
        keys = termite._net.keys.load(keyfile)
        # No heartbeats come from the raw peer: keep the node from declaring it down mid-test.
        self.node = termite.Node(port=0, keys=keyfile, heartbeat_timeout=600, **node_options).start()
        runtime = self.node._runtime
        self.remote = runtime.table.remote
        self.transport = runtime.transport
        self.ctx = zmq.Context()
        self.keys = keys
        self.home = self.ctx.socket(zmq.ROUTER)  # where the node's replies to the peer go
        self.home.linger = 0
        self.home.curve_server = True
        self.home.curve_publickey, self.home.curve_secretkey = keys.public, keys.secret
        port = self.home.bind_to_random_port("tcp://127.0.0.1")
        self.peer_ref = NodeRef("127.0.0.1", port, secrets.randbits(63))
        self.raw = self.dealer(identity_of(self.peer_ref))
        ref = self.node.ref
        self.stale_ref = NodeRef(ref.host, ref.port, ref.incarnation ^ 1)
        self.known_nodes = {ref, self.peer_ref, self.stale_ref}
        self.n = 0
        self.stopped = False

    def dealer(self, routing_id: bytes) -> zmq.Socket:
        """A DEALER with the cluster keys (as Transport._dealer makes one), connected to the node."""
        sock = self.ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.routing_id = routing_id
        sock.curve_serverkey = self.keys.public
        sock.curve_publickey, sock.curve_secretkey = self.keys.public, self.keys.secret
        sock.connect(f"tcp://127.0.0.1:{self.node.ref.port}")
        return sock

    def close(self, timeout: float = 2.0) -> None:
        if not self.stopped:
            self.stop(timeout)
        self.ctx.destroy(linger=0)

    def stop(self, timeout: float = 2.0) -> bool:
        """Stop the node; True if its thread ended within ``timeout``."""
        self.stopped = True
        self.node.stop(timeout=timeout)
        return not self.node._thread.is_alive()

    # -- per example --

    def env(self) -> dict:
        """Fresh pids for one example: a live victim, monitored by node.pid."""
        self.n += 1
        victim = self.node.spawn(_victim)
        ref = self.node.monitor(victim)
        node = self.node.ref
        return {
            "victim": victim,
            "monitor": ref,
            "dead": Pid(node, 10**12 + self.n),
            "peer": Pid(self.peer_ref, self.n),
            "stale": Pid(self.stale_ref, 2),
            "fresh": Pid(node, REMOTE_SPAWN_BASE + self.n),
            "tag": termite.make_tag(),
            "shell": self.node.pid,
            "round": self.n,
        }

    def counts(self) -> tuple[int, int, int]:
        return self.remote.malformed, self.transport.stats.dropped_in, len(self.caplog.records)

    def records_since(self, mark: int, names=FRAME_LOGGERS) -> list[logging.LogRecord]:
        return [r for r in self.caplog.records[mark:] if r.name in names]

    def send(self, datas: list[bytes], one_message: bool = True) -> None:
        if one_message:
            self.raw.send_multipart(datas)
        else:
            for data in datas:
                self.raw.send(data)

    def assert_serves(self, what) -> None:
        """The raw peer's next legitimate frame arrives: every frame before it has been handled."""
        self.n += 1
        probe = ("alive", self.n)
        self.raw.send(encode((SEND, self.node.pid, probe)))
        got = self.node.receive(probe, timeout=5, default=None)
        assert got == probe, f"the node stopped serving after {what!r}"
        assert self.transport._thread.is_alive(), f"the transport's I/O thread died after {what!r}"
        assert self.node._thread.is_alive(), f"the node's thread died after {what!r}"

    def assert_victim_ends(self, env, what, mark: int) -> None:
        """The victim still ends cleanly: its monitor fires, and the kernel raised nothing."""
        self.node.send(env["victim"], "stop")
        self.assert_serves(what)  # the victim's end has been handled by now
        errors = [r for r in self.caplog.records[mark:] if r.name == "asyncio" or r.getMessage().startswith(
            ("transport I/O thread failed", "process "))]
        assert not errors, f"after {what!r}, ending a process named in it raised: {_describe(errors)}"
        down = self.node.receive(Down(env["monitor"], env["victim"], ANY), timeout=5, default=None)
        assert down is not None, f"after {what!r}, the end of a process named in it did not reach its monitor"


def _describe(records) -> list[str]:
    return [f"{r.name} {r.levelname} {r.getMessage()[:300]!r}{' +traceback' if r.exc_info else ''}" for r in records]


@pytest.fixture
def make_rig(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    keyfile = tmp_path / "cluster.key"
    termite._net.keys.generate(keyfile)
    rigs = []

    def make(**node_options) -> Rig:
        rig = Rig(str(keyfile), caplog, **node_options)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        rig.close()


@pytest.fixture
def rig(make_rig) -> Rig:
    return make_rig()


def render(rig: Rig, env, frames) -> list[tuple[bytes, str]]:
    """Each frame's bytes and verdict; rejects the example (assume) if a frame must not be sent."""
    out = []
    for frame in frames:
        data = frame.render(env)
        kind = GOOD if frame.__class__ is Good else verdict(data, rig.known_nodes)
        if kind is None:
            rig.node.send(env["victim"], "stop")
            assume(False)
        out.append((data, kind))
    return out


def check_dropped_once_each(rig: Rig, frames, one_message: bool = True) -> dict:
    """Send ``frames``; every bad one is counted once and logged once, without a traceback."""
    env = rig.env()
    rendered = render(rig, env, frames)
    bad = sum(kind == BAD for _, kind in rendered)
    malformed, dropped, mark = rig.counts()
    rig.send([data for data, _ in rendered], one_message)
    rig.assert_serves(frames)
    records = rig.records_since(mark)
    assert rig.transport.stats.dropped_in == dropped, f"{frames!r} was dropped by the transport"
    assert rig.remote.malformed - malformed == bad, (
        f"{frames!r}: {bad} bad frame(s), Remote.malformed went up by {rig.remote.malformed - malformed}; "
        f"log: {_describe(records)}"
    )
    assert len(records) == bad, f"{frames!r}: {bad} bad frame(s), {len(records)} log lines: {_describe(records)}"
    assert all(r.name == "termite.distribution" for r in records), _describe(records)
    with_traceback = [r for r in records if r.exc_info]
    assert not with_traceback, f"{frames!r} is merely malformed, yet logged a traceback: {_describe(with_traceback)}"
    rig.assert_victim_ends(env, frames, mark)
    return env


# -- fuzzed frames, one kind of damage at a time ----------------------------------------


@FUZZ
@given(frame=random_bytes)
def test_random_bytes_are_dropped_counted_and_logged_once(rig, frame):
    check_dropped_once_each(rig, [frame])


@FUZZ
@given(frame=random_msgpack)
def test_msgpack_of_random_structure_is_dropped_counted_and_logged_once(rig, frame):
    check_dropped_once_each(rig, [frame])


@FUZZ
@given(frame=truncated)
def test_truncated_frames_are_dropped_counted_and_logged_once(rig, frame):
    check_dropped_once_each(rig, [frame])


@FUZZ
@given(frame=unknown_kinds)
def test_unknown_kinds_are_dropped_counted_and_logged_once(rig, frame):
    check_dropped_once_each(rig, [frame])


@FUZZ
@given(frame=control_tuples())
def test_control_tuples_with_wrong_arity_or_field_types_are_dropped_counted_and_logged_once(rig, frame):
    """Known kinds, fields right or wrong (a str where a pid belongs, an int for a tag, ...)."""
    check_dropped_once_each(rig, [frame])


@st.composite
def good_and_bad(draw):
    frames = draw(st.lists(st.one_of(st.none(), decode_level_bad), min_size=2, max_size=8))
    return [Good(i) if frame is None else frame for i, frame in enumerate(frames)]


@FUZZ
@given(frames=good_and_bad(), one_message=st.booleans())
def test_bad_frames_among_good_ones_do_not_disturb_them(rig, frames, one_message):
    """A multipart message (or a run of messages) mixing good frames and bad ones."""
    round_ = check_dropped_once_each(rig, frames, one_message)["round"]
    goods = [f.i for f in frames if f.__class__ is Good]
    got = [rig.node.receive(("good", round_, ANY), timeout=5, default=None) for _ in goods]
    assert got == [("good", round_, i) for i in goods], f"good frames lost or reordered among {frames!r}"


@settings(FUZZ, max_examples=200)
@given(frames=st.lists(any_frame, min_size=1, max_size=5), one_message=st.booleans())
def test_no_frame_crashes_blocks_or_poisons_the_node(rig, frames, one_message):
    """Whatever arrives, the node serves the next frame, its threads live, and its processes can still end."""
    env = rig.env()
    render(rig, env, frames)  # rejects frames that must not be sent
    mark = len(rig.caplog.records)
    rig.send([frame.render(env) for frame in frames], one_message)
    rig.assert_serves(frames)
    rig.assert_victim_ends(env, frames, mark)


# -- the same, frame by frame, for a report that names each case --------------------------

MALFORMED_CONTROL_TUPLES = {
    "not a tuple": Raw(encode(5)),
    "a list": Raw(encode([SEND, 1, 2])),
    "an empty tuple": Control(()),
    "an unknown kind": Control((99, PIDS[0])),
    "a kind that is a str": Control(("send", PIDS[0], 1)),
    "SEND without its message": Control((SEND, PIDS[0])),
    "SEND with a field too many": Control((SEND, PIDS[0], 1, 2)),
    "SEND to a str": Control((SEND, "victim", 1)),
    "LINK to a str": Control((LINK, PIDS[2], "victim")),
    "LINK from a str": Control((LINK, "x", PIDS[0])),
    "UNLINK from a str": Control((UNLINK, "x", PIDS[0])),
    "EXIT from a str": Control((EXIT, "x", PIDS[0], "reason")),
    "MONITOR by a str": Control((MONITOR, "x", PIDS[0], TAG)),
    "MONITOR with a str for the ref": Control((MONITOR, PIDS[2], PIDS[0], "ref")),
    "MONITOR with a list for the ref": Control((MONITOR, PIDS[2], PIDS[0], [1])),
    "DEMONITOR with a list for the ref": Control((DEMONITOR, PIDS[0], [1])),
    "HELLO to a str": Control((HELLO, "x", TAG)),
    "HELLO with an int for the tag": Control((HELLO, PIDS[2], 5)),
    "SPAWN with an int for the pid": Control((SPAWN, 3, "fn", (), None, None)),
    "SPAWN of a str": Control((SPAWN, FRESH, "fn", (), None, None)),
    "SPAWN of a str, linked to a str": Control((SPAWN, FRESH, "fn", (), "x", None)),
}


@pytest.mark.parametrize("frame", MALFORMED_CONTROL_TUPLES.values(), ids=MALFORMED_CONTROL_TUPLES.keys())
def test_each_malformed_control_tuple_is_dropped_counted_and_logged_once(rig, frame):
    check_dropped_once_each(rig, [frame])


@pytest.mark.parametrize("items", [(LINK, "x", PIDS[0]), (MONITOR, "x", PIDS[0], TAG)], ids=["link", "monitor"])
def test_a_link_or_monitor_from_no_pid_does_not_break_the_target_s_end(rig, items):
    """Accepted, such a frame leaves a non-pid among the target's links or monitors,
    and the target's end then raises inside the kernel: its real monitors never hear of it."""
    frame = Control(items)
    env = rig.env()
    mark = len(rig.caplog.records)
    rig.send([frame.render(env)])
    rig.assert_serves(frame)
    env["monitor"] = rig.node.monitor(env["victim"])  # a monitor made after the bad frame's entry
    rig.assert_victim_ends(env, frame, mark)


# -- bad addresses: the routing id, and pids naming an address zmq refuses -----------------


def _wait_for(predicate, timeout=5.0) -> bool:
    """Poll a condition: frames from a second connection have no order relative to the probe's."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


@pytest.mark.parametrize("routing_id", [b"not-a-node", b"127.0.0.1:-5:1", b"a b:1:1"])
def test_a_member_with_an_unusable_routing_id_is_dropped_and_the_node_keeps_serving(rig, routing_id):
    stats = rig.transport.stats
    rig.assert_serves("warm-up")
    before = (stats.frames_in, stats.dropped_in)
    mark = len(rig.caplog.records)
    odd = rig.dealer(routing_id)
    odd.send(encode((SEND, rig.node.pid, "from an odd id")))
    assert _wait_for(lambda: (stats.frames_in, stats.dropped_in) != before or not rig.transport._thread.is_alive())
    records = rig.records_since(mark)
    assert rig.transport._thread.is_alive(), f"routing id {routing_id!r} killed the I/O thread: {_describe(records)}"
    rig.assert_serves(routing_id)
    assert len(records) <= 1 and not any(r.exc_info for r in records), _describe(records)
    assert rig.stop(), "the node did not stop within 2 s"


def test_a_reply_to_an_address_zmq_refuses_does_not_wedge_the_node(rig):
    """HELLO asks for a reply to a pid whose node has port -5: the node cannot connect there."""
    env = rig.env()
    mark = len(rig.caplog.records)
    frame = (HELLO, Pid(NodeRef("127.0.0.1", -5, 1), 1), env["tag"])
    rig.send([encode(frame)])
    rig.assert_serves(frame)
    records = rig.records_since(mark)
    assert len(records) <= 1 and not any(r.exc_info for r in records), _describe(records)
    assert rig.stop(), "the node did not stop within 2 s (a socket left open blocks its context's term())"


# -- the size limit -----------------------------------------------------------------------

LIMIT = 1024


def _send_frame_of(rig: Rig, length: int, i: int) -> bytes:
    """A legitimate SEND to node.pid of ``("big", round, i, padding)``, as close to ``length`` bytes as msgpack allows."""
    base = len(encode((SEND, rig.node.pid, ("big", rig.n, i, b""))))
    pad = max(0, length - base)
    if pad >= 256:  # bin 16 has a header a byte longer than bin 8
        pad -= 1
    return encode((SEND, rig.node.pid, ("big", rig.n, i, b"x" * pad)))


def test_frames_over_max_frame_are_dropped_with_one_line_and_counted(make_rig):
    rig = make_rig(max_frame=LIMIT)
    env = rig.env()
    at_limit = _send_frame_of(rig, LIMIT, 0)
    over = _send_frame_of(rig, LIMIT + 1, 1)
    assert (len(at_limit), len(over)) == (LIMIT, LIMIT + 1)
    garbage_at_limit, garbage_over = b"\xc1" * LIMIT, b"\xc1" * (LIMIT + 1)
    malformed, dropped, mark = rig.counts()
    rig.send([over, garbage_over, at_limit, garbage_at_limit])
    rig.assert_serves("frames around the limit")
    records = rig.records_since(mark)
    assert rig.transport.stats.dropped_in - dropped == 2
    assert rig.remote.malformed - malformed == 1  # the garbage within the limit reaches the decoder
    assert [r.name for r in records] == ["termite.transport"] * 2 + ["termite.distribution"], _describe(records)
    assert not any(r.exc_info for r in records), _describe(records)
    round_ = env["round"]
    assert rig.node.receive(("big", round_, ANY, bytes), timeout=5)[2] == 0
    assert rig.node.receive(("big", round_, ANY, bytes), timeout=0, default=None) is None
    rig.assert_victim_ends(env, "frames around the limit", mark)


@pytest.fixture
def sized_rig(make_rig) -> Rig:
    return make_rig(max_frame=LIMIT)


@FUZZ
@given(lengths=st.lists(st.one_of(st.integers(LIMIT - 3, LIMIT + 3), st.integers(40, 3 * LIMIT)), min_size=1, max_size=5),
       one_message=st.booleans())
def test_the_size_limit_drops_exactly_the_frames_over_it(sized_rig, lengths, one_message):
    rig = sized_rig
    rig.n += 1
    round_ = rig.n
    datas = [_send_frame_of(rig, length, i) for i, length in enumerate(lengths)]
    over = [len(d) > LIMIT for d in datas]
    malformed, dropped, mark = rig.counts()
    rig.send(datas, one_message)
    rig.assert_serves(lengths)
    records = rig.records_since(mark)
    assert rig.transport.stats.dropped_in - dropped == sum(over)
    assert rig.remote.malformed == malformed
    assert [r.name for r in records] == ["termite.transport"] * sum(over), _describe(records)
    assert not any(r.exc_info for r in records), _describe(records)
    got = [rig.node.receive(("big", round_, ANY, bytes), timeout=5)[2] for _ in range(over.count(False))]
    assert got == [i for i, o in enumerate(over) if not o]
