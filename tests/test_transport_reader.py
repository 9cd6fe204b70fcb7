"""Transport._read_one on the loop's thread: termite._net._zmqcalls.Reader (C) does step for step
what the Python method does, on two real transports over real ZeroMQ sockets."""

import asyncio

import pytest
import zmq

from termite._net import zmq_native as _zmq_native
from termite._net.transport import Transport

pytestmark = pytest.mark.timeout(60)

NATIVE = _zmq_native.native
READER = getattr(NATIVE, "Reader", None)
LIMIT = 100  # max_frame of the reading node


def scenario(c_reader: bool):
    """Node a sends node b every kind of message; b reads each with the C reader or the Python
    method, and what came of every read is recorded."""
    got, skipped = [], []
    quiet = {"heartbeat_interval": 60.0, "heartbeat_timeout": 180.0}  # no heartbeat among the messages
    a = Transport(on_frames=lambda peer, frames: None, **quiet).start()
    # b as on a node's loop thread, but the loop does not run: only these reads read its ROUTER.
    loop = asyncio.new_event_loop()
    b = Transport(on_frames=lambda peer, frames: got.append((peer == a.ref, list(frames))), max_frame=LIMIT,
                  **quiet).start(loop)
    b.on_skipped = lambda peer, size: skipped.append((peer == a.ref, size))
    try:
        if c_reader:
            read = READER(b, b.router.underlying, b._heard, b.stats, b._reading)
        else:
            read = Transport._read_one.__get__(b)
        b._reading.gap = 1.0
        records = []

        def read_next(note):
            for _ in range(200):  # a message sent is soon there: the poll waits for it
                before = (len(got), len(skipped), b.stats.frames_in)
                if b.router.poll(5000, zmq.POLLIN) and (result := read()):
                    if note != "heartbeat" and (len(got), len(skipped), b.stats.frames_in) == before:
                        continue  # a heartbeat of a's I/O thread: its first beat comes late on a loaded machine
                    break
            else:
                raise AssertionError(f"nothing came: {note}")
            entry = b._heard.get(next(iter(b._heard), None))
            records.append((note, result, list(got), list(skipped), b.stats.frames_in, b.stats.bytes_in,
                            b.stats.dropped_in, entry is not None and entry[1] == b._reading.read_at,
                            b._reading.attentive_since == b._reading.read_at))

        assert read() is False  # nothing yet, and no waiting
        a.send(b.ref, [b"hello"])  # from a sender not known yet: admitted, then handed on
        read_next("first")
        a.send_frame(b.ref, b"one")
        read_next("one")
        a.send(b.ref, [b"two", b"", b"three"])  # several parts, a heartbeat among them
        read_next("parts")
        a.send_frame(b.ref, b"")  # a heartbeat alone
        read_next("heartbeat")
        a.send_frame(b.ref, b"x" * (LIMIT + 1))  # too large: dropped, and said
        read_next("too large")
        a.send_frame(b.ref, b"y" * LIMIT)  # as large as allowed
        read_next("at the limit")
        b._reading.read_at = 0.0  # a long pause in reading: attentive again from now
        a.send_frame(b.ref, b"after a pause")
        read_next("after a pause")
        assert read() is False
        return records
    finally:
        a.stop()
        b.stop()
        loop.close()


@pytest.mark.skipif(READER is None, reason="termite._net._zmqcalls did not load here")
def test_the_c_reader_does_what_read_one_does():
    c, python = scenario(c_reader=True), scenario(c_reader=False)
    assert c == python
    notes = [r[0] for r in c]
    frames = [r[2][-1][1] if r[2] else None for r in c]
    assert notes == ["first", "one", "parts", "heartbeat", "too large", "at the limit", "after a pause"]
    assert frames == [[b"hello"], [b"one"], [b"two", b"three"], [b"two", b"three"], [b"two", b"three"],
                      [b"y" * LIMIT], [b"after a pause"]]
    assert c[4][3] == [(True, LIMIT + 1)] and c[4][6] == 1  # the large one: skipped, counted as dropped
    assert [r[4] for r in c] == [1, 2, 4, 4, 4, 5, 6]  # frames_in
    assert all(r[7] for r in c[1:])  # heard at the read's time, for a peer known
    assert c[-1][8]  # attentive from the read after the pause


@pytest.mark.skipif(READER is None, reason="termite._net._zmqcalls did not load here")
def test_a_reader_wants_a_dict_of_heard_peers_counters_and_a_read_clock():
    t = Transport(on_frames=lambda peer, frames: None).start()
    try:
        with pytest.raises(TypeError):
            READER(t, t.router.underlying, [], t.stats, t._reading)
        with pytest.raises(TypeError, match="frames_in"):
            READER(t, t.router.underlying, {}, object(), t._reading)
        with pytest.raises(TypeError, match="read_at"):
            READER(t, t.router.underlying, {}, t.stats, object())
    finally:
        t.stop()
