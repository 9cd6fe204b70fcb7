"""The frames read from a peer: termite._net._fastcodec.Inbox (C) does step for step what its
Python twin, endpoint._Inbox, does (count each frame, deliver its plain SENDs to processes of this
node, hand the rest to the endpoint's _apply_frame)."""

import pytest

from termite import Pid
from termite._core.process import Down
from termite._net import endpoint as _endpoint
from termite._net.codec import OverBudget, decode, encode, encode_batch
from termite._net.frames import LINK, SEND

from test_take_sends import HERE, OTHER as ELSEWHERE, Proc  # the nodes and processes of take_sends' own test

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(_endpoint._NativeInbox is None, reason="termite._net._fastcodec did not load here"),
]

LIMIT = 2
MAX_DECODED = 1 << 16


def node_object(node=HERE):
    """The NodeRef object the codec gives decoded pids of ``node`` (the endpoint's inbox's ``here`` for HERE)."""
    return decode(encode(Pid(node, 1))).node


def send(serial, msg, node=HERE):
    return encode((SEND, Pid(node, serial), msg))


def taken_of(taken):
    """What apply was given, comparable between the two inboxes."""
    if taken is False:
        return False
    if isinstance(taken, BaseException):
        return (type(taken).__name__, [repr(m) for m in taken.decoded])
    return [repr(m) for m in taken]


def scenario(cls):
    """Frames of every kind through one inbox: every call it made, in order, and what it raised."""
    procs, moved, log = {1: Proc(1), 2: Proc(2), 3: Proc(3, order=object())}, {}, []

    def deliver(proc, msg):
        proc.mailbox = (proc.mailbox or []) + [msg]
        log.append(("deliver", proc.serial, msg))

    def full(proc, peer):
        log.append(("full", proc.serial, peer))

    def got(peer, size):
        log.append(("got", peer, size))
        if size == 13:
            raise RuntimeError("flow control refused it")

    def apply(peer, data, taken):
        log.append(("apply", peer, data, taken_of(taken)))
        if data == b"\xc1apply fails":
            raise ValueError("apply failed")

    inbox = cls(node_object(), procs, moved, deliver, Down, LIMIT, full, MAX_DECODED, got, apply)
    steps = []

    def step(note, frames):
        del log[:]
        try:
            inbox("peer", frames)
            outcome = None
        except Exception as exc:  # noqa: BLE001 - what it raised is part of what it did
            outcome = (type(exc).__name__, str(exc))
        steps.append((note, outcome, list(log)))

    step("plain sends, delivered", [send(1, "a"), encode_batch([send(2, "b"), send(1, ("c", 1))])])
    step("past the mailbox limit: full", [send(1, "d")])
    step("a migrant's, a Down, a dead pid, a link: the rest to apply",
         [encode_batch([send(2, "e"), send(3, "f"), send(2, "g")]), send(2, Down(None, None, None)),
          send(99, "h"), encode((LINK, Pid(ELSEWHERE, 1), Pid(HERE, 2)))])
    step("another node's pid", [send(1, "i", node=ELSEWHERE)])
    step("not a frame: all of it to apply", [b"\xc1not msgpack", b""])
    step("past its budget", [encode_batch([send(1, "j"), send(2, [[] for _ in range(5000)])])])
    moved[Pid(HERE, 7)] = ELSEWHERE
    step("processes moved from here: apply reads it all", [send(1, "l")])
    moved.clear()
    inbox.here = node_object(ELSEWHERE)  # as the endpoint does when its node object changes
    step("another here", [send(1, "m"), send(1, "n", node=ELSEWHERE)])
    inbox.here = node_object()
    step("got raises: the frames after are not read", [send(2, "o"), b"x" * 13, send(2, "p")])
    step("apply raises", [b"\xc1apply fails", send(2, "q")])
    step("a tuple of frames", (send(2, "r"),))
    return steps


def test_the_c_and_python_inboxes_do_the_same():
    c, python = scenario(_endpoint._NativeInbox), scenario(_endpoint._Inbox)
    for (note, c_outcome, c_log), (_, py_outcome, py_log) in zip(c, python):
        assert (c_outcome, c_log) == (py_outcome, py_log), note
    assert len(c) == len(python) == 11


def test_what_the_inbox_does():
    steps = {note: (outcome, log) for note, outcome, log in scenario(_endpoint._NativeInbox)}
    outcome, log = steps["plain sends, delivered"]
    assert outcome is None and [e for e in log if e[0] == "deliver"] == [
        ("deliver", 1, "a"), ("deliver", 2, "b"), ("deliver", 1, ("c", 1))]
    assert not [e for e in log if e[0] == "apply"]
    assert steps["past the mailbox limit: full"][1][-1] == ("full", 1, "peer")  # three waiting, LIMIT 2
    _, log = steps["a migrant's, a Down, a dead pid, a link: the rest to apply"]
    applied = [e[3] for e in log if e[0] == "apply"]
    assert ("deliver", 2, "e") in log and len(applied) == 4
    assert applied[0] == [repr((SEND, Pid(HERE, 3), "f")), repr((SEND, Pid(HERE, 2), "g"))]  # in order, from 3 on
    assert [e[3] for e in steps["not a frame: all of it to apply"][1] if e[0] == "apply"] == [False, False]
    over = [e[3] for e in steps["past its budget"][1] if e[0] == "apply"]
    assert over == [(OverBudget.__name__, [repr((SEND, Pid(HERE, 1), "j"))])]
    _, log = steps["processes moved from here: apply reads it all"]
    assert [e[0] for e in log] == ["got", "apply"] and log[1][3] is False
    _, log = steps["another here"]
    assert [e for e in log if e[0] == "deliver"] == [("deliver", 1, "n")]
    outcome, log = steps["got raises: the frames after are not read"]
    assert outcome == ("RuntimeError", "flow control refused it")
    assert [e[0] for e in log if e[0] != "full"] == ["got", "deliver", "got"]
    assert steps["apply raises"][0] == ("ValueError", "apply failed")
    assert len(steps["apply raises"][1]) == 2  # got, apply: not the second frame
