"""The idle close (termite._net.sessions, transport): a session nothing uses or holds is suspended by
agreement, without a node-down, and the next frame either way resumes it, in order.

Real node processes and real ZeroMQ; ``IDLE`` is short so that sessions suspend within a second.
What a test waits for is the node's own report (its TransportStats, its session's status), polled.
"""

import os
import signal
import threading
import time

import psutil
import pytest

import termite
from termite import NodeDown, NodeUp
from termite._net.transport import Transport
from termite.testing import NodeProcess

from idle import chatter, monitors, monitors_and_ends_on_stop, partner, watches_node, watches_node_and_tells, recorder, stall_on_go, stream_later, transport_stats

NODECODE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nodecode")  # what the nodes import
IDLE = 0.5  # seconds of quiet before a session is suspended
HB = ("--heartbeat-timeout", "1.0", "--heartbeat-interval", "0.1")


def until(condition, timeout=15.0, what="the condition"):
    """Poll ``condition`` (the node's own report) every 20 ms, for at most ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s"
        time.sleep(0.02)


@pytest.fixture
def pair(keyfile):
    """This node and a node process B, both closing idle sessions after IDLE s: (here, b, b_ref)."""
    started = []
    with termite.Node(port=0, keys=keyfile, heartbeat_timeout=1.0, heartbeat_interval=0.1, idle_close=IDLE) as here:
        b = NodeProcess("--keys", keyfile, *HB, "--idle-close", str(IDLE), path=[NODECODE])
        started.append(b)
        try:
            yield here, b, here.connect(*b.ref.address)
        finally:
            for node in started:
                node.stop()
                if node.log_tail:
                    print(f"--- node {node.ref} logged:", *node.log_tail, sep="\n", end="")


def transport(here):
    return here._runtime.transport


def status(here, peer):
    t = transport(here)
    with t._lock:
        return t._sessions.status(peer)


def connections_with(port_here, port_there):
    """This process's established TCP connections with the node at ``port_there`` (either way)."""
    return [c for c in psutil.Process().net_connections("tcp") if c.status == psutil.CONN_ESTABLISHED and c.raddr
            and (c.raddr.port == port_there or (c.laddr.port == port_here and c.raddr.port != port_there))]


def no_node_news(here):
    return here.receive(lambda m: m.__class__ in (NodeUp, NodeDown), timeout=0, default=None) is None


def test_an_idle_pair_suspends_and_messages_either_way_resume_it_in_order(pair):
    here, b, b_ref = pair
    here.monitor_node(None)  # any node: watches without holding a session open
    echo = here.spawn_on(b_ref, recorder)
    t = transport(here)
    until(lambda: status(here, b_ref) == "suspended", what="the suspension")
    assert t.stats.suspended == 1
    assert b_ref in t.peers()  # what termite.nodes() lists: the session lives on
    until(lambda: not connections_with(here.ref.port, b.ref.port), what="the TCP connections' close")
    assert not t._conns.dealers and not t._conns.parked

    for i in range(1, 201):  # the first reopens the session; all arrive, in order, and are answered in order
        here.send(echo, ("echo", here.pid, i))
    assert [here.receive(("n", int), timeout=10)[1] for _ in range(200)] == list(range(1, 201))
    assert t.stats.resumed == 1

    # Idle again; then B speaks first.
    until(lambda: t.stats.suspended == 2, what="the second suspension")
    here.spawn_on(b_ref, stream_later, here.pid, 2.0, 100)  # reopens, then B's side goes quiet for 2 s
    until(lambda: t.stats.suspended == 3, what="the third suspension")
    assert [here.receive(("late", int), timeout=10)[1] for _ in range(100)] == list(range(1, 101))

    here.send(echo, ("report", here.pid))
    log = here.receive(("log", list), timeout=10)[1]
    assert log == list(range(1, 201)), "B saw a node go down or up, or lost or reordered a message"
    here.spawn_on(b_ref, transport_stats, here.pid)
    _, suspended, resumed, _ = here.receive(("stats", int, int, int), timeout=10)
    assert suspended >= 3 and resumed >= 1  # B reopened for its stream
    assert no_node_news(here)


@pytest.mark.parametrize("hold", ["link", "monitor from here", "monitor from there", "monitor_node",
                                  "monitor of a watcher that ended"])
def test_links_monitors_and_monitor_node_hold_a_session_open(pair, hold):
    here, b, b_ref = pair
    t = transport(here)
    here.spawn_on(b_ref, partner, here.pid)
    other = here.receive(("partner", termite.Pid), timeout=10)[1]
    if hold == "link":
        here.link(other)
        release = lambda: here.unlink(other)
    elif hold == "monitor from here":
        watcher = here.spawn(monitors, other)
        release = lambda: here.send(watcher, "stop")  # a watcher that ends drops its monitor
    elif hold == "monitor of a watcher that ended":  # ended without demonitor: its monitor is dropped
        watcher = here.spawn(monitors_and_ends_on_stop, other)
        time.sleep(6 * IDLE)  # nothing is to happen while it runs
        assert t.stats.suspended == 0 and status(here, b_ref) == "up"
        here.send(watcher, "stop")
        until(lambda: status(here, b_ref) == "suspended", what="the suspension once the watcher ended")
        assert no_node_news(here)
        return
    elif hold == "monitor from there":
        watched = here.spawn(partner, here.pid)
        here.receive(("partner", termite.Pid), timeout=10)
        watcher = here.spawn_on(b_ref, monitors, watched)
        release = lambda: here.send(watcher, "stop")
    else:
        watcher = here.spawn(watches_node, b_ref)
        release = lambda: here.send(watcher, "stop")
    time.sleep(6 * IDLE)  # nothing is to happen: long enough for several idle closes
    assert t.stats.suspended == 0 and status(here, b_ref) == "up"
    release()
    until(lambda: status(here, b_ref) == "suspended", what="the suspension once released")
    assert no_node_news(here)


def test_a_peer_killed_while_suspended_is_down_for_a_sender(pair):
    here, b, b_ref = pair
    here.monitor_node(None)
    echo = here.spawn_on(b_ref, recorder)
    until(lambda: status(here, b_ref) == "suspended", what="the suspension")
    b.kill()
    assert b_ref in transport(here).peers()  # the session is suspended: its loss is not seen yet
    here.send(echo, ("echo", here.pid, 1))
    down = here.receive(NodeDown, timeout=10)
    assert down.node == b_ref
    assert status(here, b_ref) is None


def test_a_peer_stopped_while_asked_to_suspend_is_down_on_both_sides(pair):
    """B holds the GIL (so cannot answer) when asked; then it is stopped: a down here (heartbeats
    unanswered), and, once it runs again, there too, by the ordinary epoch rules."""
    here, b, b_ref = pair
    here.monitor_node(None)
    echo = here.spawn_on(b_ref, recorder)
    here.send(echo, ("echo", here.pid, 1))
    here.receive(("n", 1), timeout=10)
    staller = here.spawn_on(b_ref, stall_on_go, here.pid)
    here.receive("ready", timeout=10)
    here.send(staller, "go")  # B holds the GIL for 3 s from now
    until(lambda: status(here, b_ref) == "asking", what="the question")
    os.kill(b.pid, signal.SIGSTOP)
    try:
        down = here.receive(NodeDown, timeout=10)
        assert down.node == b_ref
    finally:
        os.kill(b.pid, signal.SIGCONT)
    # B, running again, learns of the down before the report's request.  While B still holds the GIL
    # (on a loaded host, for longer than asked) a new connection to it may time out: another down,
    # and the request is lost with it; so ask again, a bounded number of times.
    for _ in range(6):
        here.send(echo, ("report", here.pid))
        got = here.receive(("log", list), timeout=5, default=None)
        if got is not None:
            break
    assert got is not None, "B never answered once running again"
    log = got[1]
    assert log[0] == 1 and log[1][0] == "down", log
    assert all(entry != 1 for entry in log[1:])


# -- races, on two transports in this process ----------------------------------------------------


class Peer:
    """A Transport whose reader can be paused: a frame b"pause" blocks it until ``go``."""

    def __init__(self, keys, idle_close):
        self.frames, self.downs = [], []
        self.cond = threading.Condition()
        self.paused, self.go = threading.Event(), threading.Event()
        self.t = Transport(keys=keys, on_frames=self.on_frames, on_peer_down=self.downs.append,
                           idle_close=idle_close, heartbeat_interval=0.1, heartbeat_timeout=1.0)
        stats = self.t.stats
        self.t.traffic = lambda: {peer: (stats.frames_out, stats.frames_in) for peer in self.t._sessions.peers()}
        self.t.start()

    def on_frames(self, peer, frames):
        for frame in frames:
            if frame == b"pause":
                self.paused.set()
                assert self.go.wait(20)
                continue
            with self.cond:
                self.frames.append(frame)
                self.cond.notify_all()

    def wait_for(self, frame, timeout=10.0):
        with self.cond:
            assert self.cond.wait_for(lambda: frame in self.frames, timeout), (frame, self.frames)

    def status(self, peer):
        with self.t._lock:
            return self.t._sessions.status(peer)


@pytest.fixture
def racing(keyfile):
    from termite._net import keys as _keys

    keys = _keys.load(keyfile)
    a, b = Peer(keys, 60.0), Peer(keys, 60.0)  # neither asks by itself: the test asks, at the worst time
    try:
        a.t.send(b.t.ref, [b"hello"])
        b.wait_for(b"hello")
        b.t.send(a.t.ref, [b"hello back"])
        a.wait_for(b"hello back")
        yield a, b
    finally:
        a.go.set()
        b.go.set()
        a.t.stop()
        b.t.stop()


def _agreeable(peer, other):
    """Make ``peer`` answer yes to the next question from ``other``: quiet since long ago."""
    with peer.t._lock:
        entry = peer.t._sessions.entry(other.t.ref)
        entry.activity, entry.quiet_since = peer.t.traffic().get(other.t.ref, ()), 0.0


def _afterwards_in_order(a, b):
    """Both ways work, in order, and neither side saw a down."""
    for i in range(50):
        a.t.send(b.t.ref, [b"a%d" % i])
        b.t.send(a.t.ref, [b"b%d" % i])
    b.wait_for(b"a49")
    a.wait_for(b"b49")
    assert [f for f in b.frames if f.startswith(b"a")] == [b"a%d" % i for i in range(50)]
    assert [f for f in a.frames if f.startswith(b"b")] == [b"b%d" % i for i in range(50)]
    assert a.downs == [] and b.downs == []


@pytest.mark.parametrize("answer", ["stay", "suspended"])
def test_a_frame_sent_just_before_the_question_is_delivered_and_the_session_stays_or_reopens(racing, answer):
    a, b = racing
    b.t.send(a.t.ref, [b"pause"])
    assert a.paused.wait(10)  # A's reader stops: what B sends now waits in A's socket, unread
    b.t.send(a.t.ref, [b"racing"])
    if answer == "suspended":
        _agreeable(b, a)  # B answers yes although its frame is in flight: A must reopen
    assert a.t._ask(b.t.ref)
    a.t.send(b.t.ref, [b"held"])  # waits for the answer
    until(lambda: (b.t.stats.suspended == 1) if answer == "suspended" else b.status(a.t.ref) == "up", what="B's answer")
    a.go.set()
    a.wait_for(b"racing")
    b.wait_for(b"held")
    assert a.frames[-1] == b"racing" and b.frames[-1] == b"held"
    if answer == "suspended":  # A saw the frame that came before the answer: it reopened at once
        until(lambda: a.t.stats.resumed == 1, what="A's reopening")
    until(lambda: a.status(b.t.ref) == "up" and b.status(a.t.ref) == "up", what="both up")
    _afterwards_in_order(a, b)


def test_a_frame_on_a_new_connection_may_overtake_the_answer(racing):
    """B answers yes and at once speaks again, on a new connection: A may read that before the
    answer, which is then implied; the answer read later is ignored."""
    a, b = racing
    b.t.send(a.t.ref, [b"pause"])
    assert a.paused.wait(10)
    _agreeable(b, a)
    assert a.t._ask(b.t.ref)
    until(lambda: b.t.stats.suspended == 1, what="B's yes")
    b.t.send(a.t.ref, [b"after the answer"])  # on a new connection, in the same session
    assert b.t.stats.resumed == 1
    a.go.set()
    a.wait_for(b"after the answer")
    until(lambda: a.status(b.t.ref) == "up" and b.status(a.t.ref) == "up", what="both up")
    _afterwards_in_order(a, b)


def test_both_asking_at_once_the_lower_node_answers(racing):
    a, b = racing
    b.t.send(a.t.ref, [b"pause"])
    assert a.paused.wait(10)  # so that both questions cross: A reads B's only once it has asked
    _agreeable(a, b)
    _agreeable(b, a)
    assert b.t._ask(a.t.ref)
    assert a.t._ask(b.t.ref)
    a.go.set()
    until(lambda: a.status(b.t.ref) == "suspended" and b.status(a.t.ref) == "suspended", what="both suspended")
    _afterwards_in_order(a, b)


# -- a soak: many suspensions and resumptions, with and without a node stopped -----------------------

SOAK_SECONDS = float(os.environ.get("TERMITE_IDLE_SOAK_SECONDS", "20"))


def check_streams(reports: dict, faulted: set) -> list[str]:
    """Every receiver got every sender's numbers in order, with no gap unless a NodeDown of that
    sender's node came between, and none at all between nodes never faulted."""
    problems = []
    for receiver, report in reports.items():
        for sender, entries in report["log"].items():
            if sender not in reports and sender not in faulted:
                continue  # this test's node: not a chatter
            last, down_since = 0, False
            for entry in entries:
                if entry == "down":
                    down_since = True
                    if sender not in faulted and receiver not in faulted:
                        problems.append(f"{receiver} saw {sender} down, with no fault on either")
                    continue
                if entry == "up":  # the first is the session's beginning
                    if last and sender not in faulted and receiver not in faulted:
                        problems.append(f"{receiver} saw {sender} up again, with no fault on either")
                    continue
                if entry <= last:
                    problems.append(f"{receiver} got {sender}'s {entry} after {last}: out of order or twice")
                elif entry != last + 1 and not down_since:
                    problems.append(f"{receiver} lost {sender}'s {last + 1}..{entry - 1} with no NodeDown before")
                last, down_since = max(last, entry), False
            if sender not in reports:
                continue  # killed: what it sent is not known, only that what came is a prefix
            sent = reports[sender]["sent"].get(receiver, 0)
            if "down" not in entries and last != sent:
                problems.append(f"{receiver} got {last} of {sender}'s {sent} and no NodeDown")
    return problems


@pytest.mark.timeout(SOAK_SECONDS * 2 + 120)
@pytest.mark.parametrize("fault", ["none", "stop a node", "kill a node"])
def test_soak_of_suspensions_and_resumptions(keyfile, fault):
    idle = "0.2"
    nodes = []
    with termite.Node(port=0, keys=keyfile, heartbeat_timeout=1.0, heartbeat_interval=0.1, idle_close=0.2) as here:
        try:
            for _ in range(3):
                nodes.append(NodeProcess("--keys", keyfile, *HB, "--idle-close", idle, path=[NODECODE]))
            refs = [here.connect(*n.ref.address) for n in nodes]
            chatters = [here.spawn_on(ref, chatter, k, SOAK_SECONDS, 0.6, 20) for k, ref in enumerate(refs)]
            for k, pid in enumerate(chatters):
                here.send(pid, ("peers", [p for j, p in enumerate(chatters) if j != k]))
            faulted = set()
            victim = nodes[2]
            if fault != "none":
                time.sleep(SOAK_SECONDS / 2)  # the workload's pace, not a synchronisation
                faulted.add(f"{victim.ref.host}:{victim.ref.port}")
            if fault == "stop a node":
                os.kill(victim.pid, signal.SIGSTOP)
                time.sleep(2.0)  # past the heartbeat timeout: a down for whoever holds a session with it
                os.kill(victim.pid, signal.SIGCONT)
            elif fault == "kill a node":
                victim.kill()  # its peers find out when they next send to it
                chatters = chatters[:2]
            reports = {}
            for pid in chatters:
                here.send(pid, ("report", here.pid))
            deadline = time.monotonic() + SOAK_SECONDS + 30
            while len(reports) < len(chatters):
                _, report = here.receive(("report", dict), timeout=max(1.0, deadline - time.monotonic()))
                reports[report["me"]] = report
            problems = check_streams(reports, faulted)
            assert not problems, "\n".join(problems[:20])
            suspended = sum(r["stats"][0] for r in reports.values())
            resumed = sum(r["stats"][1] for r in reports.values())
            downs = sum(entries.count("down") for r in reports.values() for entries in r["log"].values())
            print(f"soak ({fault}, {SOAK_SECONDS:g} s): {suspended} suspensions, {resumed} resumptions; "
                  f"{sum(sum(r['sent'].values()) for r in reports.values())} messages; {downs} NodeDowns seen")
            assert suspended > 10 and resumed > 10
        finally:
            for n in nodes:
                n.stop()
                if n.log_tail:
                    print(f"--- node {n.ref} logged:", *list(n.log_tail)[-30:], sep="\n", end="")



def test_monitor_node_of_a_suspended_node_reopens_the_session_and_sees_its_loss(pair):
    here, b, b_ref = pair
    t = transport(here)
    until(lambda: status(here, b_ref) == "suspended", what="the suspension")
    here.spawn(watches_node_and_tells, b_ref, here.pid)
    until(lambda: status(here, b_ref) == "up", what="the session's reopening")
    assert t.stats.resumed == 1
    b.kill()
    assert here.receive(("told", NodeDown), timeout=10)[1].node == b_ref


# -- the setting ---------------------------------------------------------------------------------


def test_idle_close_is_read_from_cluster_yaml_and_passed_to_the_nodes(tmp_path):
    from termite_launcher.cluster import Cluster
    from termite_launcher.config import ConfigError, load

    path = tmp_path / "cluster.yaml"
    path.write_text("hosts:\n  - address: 127.0.0.1\n    cores: 1\nidle_close: 42\n")
    config = load(path)
    assert config.idle_close == 42.0
    args = Cluster(config)._common_args("keys")
    assert args[args.index("--idle-close") + 1] == "42.0"
    path.write_text("hosts:\n  - address: 127.0.0.1\n    cores: 1\n")
    assert load(path).idle_close == 300.0
    path.write_text("hosts:\n  - address: 127.0.0.1\n    cores: 1\nidle_close: -1\n")
    with pytest.raises(ConfigError, match="idle_close"):
        load(path)


def test_python_m_termite_node_refuses_an_idle_close_that_is_not_seconds():
    import subprocess
    import sys

    bad_flag = subprocess.run([sys.executable, "-m", "termite.node", "--insecure", "--idle-close", "soon"],
                              capture_output=True, text=True, timeout=30)
    assert bad_flag.returncode == 2 and "'soon' is not a number of seconds" in bad_flag.stderr
    bad_env = subprocess.run([sys.executable, "-m", "termite.node", "--insecure"], capture_output=True, text=True,
                             timeout=30, env=dict(os.environ, TERMITE_IDLE_CLOSE="-3"))
    assert bad_env.returncode == 2 and "$TERMITE_IDLE_CLOSE" in bad_env.stderr, bad_env.stderr
    with pytest.raises(ValueError, match="idle_close is seconds"):
        Transport(idle_close=-1, on_frames=None)
