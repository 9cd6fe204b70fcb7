"""The transport over real ZeroMQ sockets on loopback."""

import asyncio
import logging
import os
import sys
import threading
import time

import pytest
import zmq
import zmq.utils.monitor

from termite._net import keys as _keys, transport as _transport, zmq_native as _zmq_native
from termite._net.transport import Transport


class Inbox:
    """Collects frames; ``wait(n)`` blocks until n have arrived."""

    def __init__(self):
        self.frames = []
        self.peers = []
        self._cond = threading.Condition()

    def __call__(self, peer, frames):
        with self._cond:
            self.peers.append(peer)
            self.frames.extend(frames)
            self._cond.notify_all()

    def wait(self, n, timeout=10):
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.frames) >= n, timeout), self.frames
        return self.frames


@pytest.fixture
def keys(tmp_path):
    return _keys.generate(tmp_path / "cluster.key")


@pytest.fixture
def transports():
    made = []

    def make(**kw):
        t = Transport(**kw).start()
        made.append(t)
        return t

    yield make
    for t in made:
        t.stop()


@pytest.mark.parametrize("secure", [False, True])
def test_frames_arrive_in_order_and_name_their_sender(transports, keys, secure):
    inbox = Inbox()
    a = transports(keys=keys if secure else None, on_frames=lambda p, f: None)
    b = transports(keys=keys if secure else None, on_frames=inbox)
    for i in range(0, 300, 3):
        a.send(b.ref, [b"%d" % i, b"%d" % (i + 1), b"%d" % (i + 2)])
    assert inbox.wait(300) == [b"%d" % i for i in range(300)]
    assert set(inbox.peers) == {a.ref}


def test_a_peer_without_the_cluster_secret_is_refused(transports, keys):
    inbox = Inbox()
    refused = threading.Event()
    b = transports(keys=keys, on_frames=inbox, on_refused=lambda address: refused.set())
    ctx = zmq.Context()
    try:
        rogue = ctx.socket(zmq.DEALER)
        rogue.linger = 0
        public, secret = zmq.curve_keypair()  # knows the server's public key, not the secret
        rogue.curve_serverkey, rogue.curve_publickey, rogue.curve_secretkey = keys.public, public, secret
        rogue.routing_id = b"127.0.0.1:1:1"
        rogue.connect(f"tcp://127.0.0.1:{b.port}")
        rogue.send(b"let me in")
        assert refused.wait(10)
        member = transports(keys=keys, on_frames=lambda p, f: None)
        member.send(b.ref, [b"member"])
        assert inbox.wait(1) == [b"member"]
        assert b.stats.refused == 1
    finally:
        ctx.destroy(linger=0)


class _Lines(logging.Handler):
    """The termite.transport log, as lines; ``wait_for(pred)`` blocks until pred(lines)."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.lines = []
        self._cond = threading.Condition()

    def emit(self, record):
        with self._cond:
            self.lines.append(record.getMessage())
            self._cond.notify_all()

    def wait_for(self, pred, timeout):
        with self._cond:
            return self._cond.wait_for(lambda: pred(self.lines), timeout)


def _more(lines) -> int:
    return sum(int(line.split()[0]) for line in lines if " more refusals from 127.0.0.1 " in line)


@pytest.mark.timeout(20)
def test_a_stranger_reconnecting_in_a_loop_is_logged_once_then_counted(keys):
    logger = logging.getLogger("termite.transport")
    lines = _Lines()
    logger.addHandler(lines)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    node = Transport(keys=keys, on_frames=lambda peer, frames: None, refusal_period=1.0).start()
    ctx = zmq.Context()
    try:
        # A stranger with a key of its own, retrying as fast as zmq lets it.
        public, secret = zmq.curve_keypair()
        failures = 0
        while failures < 60:
            rogue = ctx.socket(zmq.DEALER)
            rogue.linger = 0
            rogue.curve_serverkey, rogue.curve_publickey, rogue.curve_secretkey = keys.public, public, secret
            monitor = rogue.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH)
            rogue.connect(f"tcp://127.0.0.1:{node.port}")
            assert monitor.poll(5000), "the node neither admitted nor refused the stranger"
            zmq.utils.monitor.recv_monitor_message(monitor)
            failures += 1
            rogue.disable_monitor()
            monitor.close(linger=0)
            rogue.close(linger=0)
        # Once it stops, the count of the last period comes within a period or two.
        assert lines.wait_for(lambda ls: 1 + _more(ls) >= node.stats.refused >= failures, 5), lines.lines
        refusals = [line for line in lines.lines if "refused a connection from 127.0.0.1" in line]
        counts = [line for line in lines.lines if " more refusals from 127.0.0.1 " in line]
        assert len(refusals) == 1, lines.lines
        assert 1 <= len(counts) <= 6, lines.lines
        assert 1 + _more(lines.lines) == node.stats.refused
    finally:
        ctx.destroy(linger=0)
        node.stop()
        logger.removeHandler(lines)
        logger.setLevel(old_level)


def test_a_silent_peer_is_declared_down_within_the_timeout(transports):
    down = threading.Event()
    up = threading.Event()
    a = transports(on_frames=lambda p, f: None, on_peer_down=lambda p: down.set(), on_peer_up=lambda p: up.set(),
                   heartbeat_interval=0.05, heartbeat_timeout=0.5)
    b = transports(on_frames=lambda p, f: None, heartbeat_interval=0.05, heartbeat_timeout=0.5)
    b.send(a.ref, [b"hello"])
    assert up.wait(5)
    assert not down.wait(1.0)  # heartbeats keep it up for twice the timeout
    b.stop()
    assert down.wait(5)
    assert a.peers() == []
    # Was listed again when a heartbeat b sent before it stopped came late (a opens a connection
    # to tell b its session ended), and when a reaches for b after the down (as a sever does).
    a.reach(b.ref)
    assert a.peers() == []


def test_an_oversized_frame_is_dropped_and_counted(transports):
    inbox = Inbox()
    a = transports(on_frames=lambda p, f: None)
    b = transports(on_frames=inbox, max_frame=1000)
    a.send(b.ref, [b"x" * 2000])
    a.send(b.ref, [b"small"])
    assert inbox.wait(1) == [b"small"]
    assert b.stats.dropped_in == 1


def test_key_files_refuse_missing_and_public_only_files(tmp_path, keys):
    with pytest.raises(_keys.KeyFileError, match="keygen"):
        _keys.load(tmp_path / "missing.key")
    public_only = tmp_path / "public.key"
    public_only.write_text(f'metadata\ncurve\n    public-key = "{keys.public.decode()}"\n')
    with pytest.raises(_keys.KeyFileError, match="no secret key"):
        _keys.load(public_only)
    with pytest.raises(_keys.KeyFileError, match="already exists"):
        _keys.generate(tmp_path / "cluster.key")
    with pytest.raises(_keys.KeyFileError, match="only allowed on loopback"):
        _keys.require_keys(None, "10.1.2.3", insecure=True)
    with pytest.raises(_keys.KeyFileError, match="needs the cluster's key file"):
        _keys.require_keys(None, "127.0.0.1", insecure=False)
    assert _keys.require_keys(None, "127.0.0.1", insecure=True) is None


# -- a node's loop thread waiting in zmq_poll (termite._net.zmq_native.wait_idle) ------------


def test_messages_waiting_when_the_loop_gets_busy_are_read_at_once(transports):
    # The loop's thread waits in zmq_poll and runs a turn after each message.
    # When a turn leaves the loop something to do, it goes back to the loop
    # with messages that came meanwhile still in the ROUTER, whose FD will not
    # signal them again: they must be read at once, not by the next tick
    # (every heartbeat_interval / 2, 5 s here).
    inbox = Inbox()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    turns = []
    slow_turn = threading.Event()

    def turn():  # what the kernel does after frames were handed on
        turns.append(len(inbox.frames))
        if inbox.frames[-1:] == [b"1"]:
            slow_turn.set()
            time.sleep(0.1)  # slow: "2" and "3" come meanwhile
            loop.call_soon(lambda: None)  # and then the loop has something else to do

    def make_b():
        b = Transport(on_frames=inbox, heartbeat_interval=10.0, heartbeat_timeout=30.0)
        b.on_read_done = turn
        return b.start(loop)

    b = asyncio.run_coroutine_threadsafe(_call(make_b), loop).result(5)
    try:
        a = transports(on_frames=lambda p, f: None, heartbeat_interval=10.0, heartbeat_timeout=30.0)
        a.send(b.ref, [b"0"])
        inbox.wait(1)
        time.sleep(0.2)  # b waits in zmq_poll now
        a.send(b.ref, [b"1"])
        assert slow_turn.wait(2)
        a.send(b.ref, [b"2"])
        a.send(b.ref, [b"3"])
        assert inbox.wait(4, timeout=2) == [b"0", b"1", b"2", b"3"]
    finally:
        asyncio.run_coroutine_threadsafe(_call(b.stop), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


async def _call(fn):
    return fn()


# -- termite._net._zmqcalls: libzmq called without pyzmq's wrapping, and pyzmq when it cannot be --


def test_the_libzmq_calls_load_on_linux():
    # pyzmq's wheels bring libzmq as a shared library; termite finds it in
    # /proc/self/maps.  Elsewhere (no /proc, a static libzmq) pyzmq does all.
    if not sys.platform.startswith("linux"):
        pytest.skip("the libzmq calls are looked up in /proc/self/maps")
    assert _zmq_native.native is not None, _zmq_native._loaded_libzmq()


@pytest.fixture
def zmqcalls():
    if _zmq_native.native is None:
        pytest.skip("termite._net._zmqcalls did not load here")
    return _zmq_native.native


def test_zmqcalls_read_whole_messages_wait_and_raise_as_pyzmq_does(zmqcalls):
    ctx = zmq.Context()
    try:
        router, dealer = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
        port = router.bind_to_random_port("tcp://127.0.0.1")
        r, w = os.pipe()
        try:
            assert zmqcalls.recv(router.underlying) is None  # nothing yet, and no waiting
            assert zmqcalls.poll(router.underlying, r, 50) == 0  # timed out
            with pytest.raises(zmq.Again):  # a DEALER connected to no one cannot send
                zmqcalls.send(dealer.underlying, b"x")
            dealer.routing_id = b"me"
            dealer.connect(f"tcp://127.0.0.1:{port}")
            zmqcalls.send(dealer.underlying, b"one")
            dealer.send_multipart([b"two", b"", b"three"])
            assert zmqcalls.poll(router.underlying, r, 5000) == 1
            assert zmqcalls.recv(router.underlying) == (b"me", b"one")
            for _ in range(100):  # the second message may still be on its way
                message = zmqcalls.recv(router.underlying)
                if message is not None or not zmqcalls.poll(router.underlying, r, 50):
                    break
            assert message == (b"me", b"two", b"", b"three")
            os.write(w, b"!")
            assert zmqcalls.poll(router.underlying, r, 5000) == 2
        finally:
            os.close(r)
            os.close(w)
    finally:
        ctx.destroy(linger=0)


@pytest.mark.parametrize("native", [True, False], ids=["zmqcalls", "pyzmq"])
def test_a_loop_s_thread_reads_single_and_multipart_messages_in_order(transports, monkeypatch, native):
    if native and _transport._native is None:
        pytest.skip("termite._net._zmqcalls did not load here")
    if not native:
        monkeypatch.setattr(_transport, "_native", None)
    inbox = Inbox()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    b = asyncio.run_coroutine_threadsafe(_call(lambda: Transport(on_frames=inbox).start(loop)), loop).result(5)
    try:
        a = transports(on_frames=lambda p, f: None)
        a.send_frame(b.ref, b"0")
        inbox.wait(1)  # b now waits in zmq_native.wait_idle
        a.send(b.ref, [b"1", b"", b"2"])  # several parts, one of them a heartbeat
        for i in range(3, 100):
            a.send_frame(b.ref, b"%d" % i)
        assert inbox.wait(100) == [b"%d" % i for i in range(100)]  # all of them: the last may still be on its way
        assert set(inbox.peers) == {a.ref}
    finally:
        asyncio.run_coroutine_threadsafe(_call(b.stop), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def test_frames_sent_on_a_connection_opened_only_to_be_heard_make_its_loss_a_down(transports, monkeypatch):
    """A connection opened only so that a peer can hear this node (``reach``, or telling a peer its
    session ended) reports no down if the peer never answers; once frames are sent on it, it must:
    whoever waits on them is told."""
    monkeypatch.setattr(_transport, "CONNECT_TIMEOUT", 0.5)
    downs = []
    a = transports(on_frames=lambda p, f: None, on_peer_down=downs.append,
                   heartbeat_interval=0.05, heartbeat_timeout=0.2)
    quiet, gone = (transports(on_frames=lambda p, f: None) for _ in range(2))
    quiet_ref, gone_ref = quiet.ref, gone.ref
    quiet.stop()
    gone.stop()
    a.reach(quiet_ref)
    a.reach(gone_ref)
    a.send(gone_ref, [b"are you there"])  # on the connection reach opened
    deadline = time.monotonic() + 10
    while gone_ref not in downs and time.monotonic() < deadline:
        time.sleep(0.05)  # the connect timeout passing is all there is to wait on
    assert downs == [gone_ref]


def test_a_node_may_hold_more_sockets_than_libzmqs_default_of_1023(transports):
    """libzmq's default of 1,023 sockets a context stopped a node at 254 peers (benchmarks scale)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    t = transports(on_frames=lambda p, f: None)
    room = t.ctx.get(zmq.MAX_SOCKETS)
    if hard != resource.RLIM_INFINITY and hard <= 1023:
        assert room == 1023
    else:
        assert room == min(_transport.MAX_SOCKETS, hard if hard != resource.RLIM_INFINITY else _transport.MAX_SOCKETS)
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= room  # the files for them too


def test_a_node_out_of_files_says_so_when_it_cannot_connect(tmp_path):
    """With its open-file limit reached, termite.connect raises "too many open files ...: raise ulimit -n",
    not a timeout that asks whether the peer runs.  In a child process: it lowers its own limit."""
    import subprocess

    script = tmp_path / "short.py"
    script.write_text(
        "import resource, termite\n"
        "with termite.Node(port=0, insecure=True) as other, termite.Node(port=0, insecure=True) as here:\n"
        "    held = []\n"
        "    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "    try:\n"
        "        while True:\n"
        "            held.append(open('/dev/null'))\n"
        "    except OSError:\n"
        "        pass\n"
        "    try:\n"
        "        here.connect(*other.ref.address, timeout=3)\n"
        "    except OSError as exc:\n"
        "        print('ERROR', exc)\n"
        "    else:\n"
        "        print('CONNECTED')\n"
        "    for f in held:\n"
        "        f.close()\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert "ERROR" in out.stdout and "too many open files" in out.stdout and "raise ulimit -n" in out.stdout, (
        out.stdout, out.stderr[-2000:])


def test_bytes_out_counts_what_is_sent(transports):
    inbox = Inbox()
    a = transports(on_frames=lambda p, f: None)
    b = transports(on_frames=inbox)
    a.send(b.ref, [b"x" * 10, b"y" * 20])
    a.send_frame(b.ref, b"z" * 5000)
    a.send_frame(b.ref, b"w" * 7)
    inbox.wait(4)
    assert a.stats.bytes_out == 10 + 20 + 5000 + 7
    assert b.stats.bytes_in == a.stats.bytes_out
