"""Nodes in separate OS processes over real ZeroMQ sockets on loopback."""

import logging
import os
import socket

import msgpack
import pytest
import zmq

import termite
from termite import ANY, Crash, Down, Exit, NodeDown, NodeUp
from termite._net.frames import SPAWN
from termite.testing import burn_cpu, collect, crash_after, echo, watch


def test_remote_spawn_call_and_ordered_sends(cluster):
    here, start = cluster
    remote = start()
    ref = here.connect(remote.ref.host, remote.ref.port)
    assert ref == remote.ref
    server = here.spawn_on(ref, echo)
    assert server.node == ref
    assert here.call(server, ("tuple", [1, 2], {"k": b"v"}), timeout=10) == ("tuple", [1, 2], {"k": b"v"})
    sink = here.spawn_on(ref, collect, here.pid, 1000)
    for i in range(1000):
        here.send(sink, i)
    assert here.receive(("collected", list), timeout=10) == ("collected", list(range(1000)))


async def _monitors_of(pid):
    return termite.process_info(pid).monitors


def test_the_monitors_of_processes_that_ended_on_another_node_are_undone(cluster):
    """A server here that outlives 200 watchers of another node keeps none of their monitors."""
    here, start = cluster
    ref = here.connect(*start().ref.address)
    server = here.spawn(echo)

    async def watchers(target, count, reply_to):
        async def watch_and_end():
            termite.monitor(target)

        for _ in range(count):
            termite.monitor(termite.spawn(watch_and_end))
        for _ in range(count):
            await termite.receive(Down, timeout=10)
        termite.send(reply_to, "all ended")  # after their DEMONITORs, on the same connection

    here.spawn_on(ref, watchers, server, 200, here.pid)
    assert here.receive("all ended", timeout=10) == "all ended"
    assert here.run(_monitors_of, server, timeout=10) == 0


def test_closures_travel_by_value(cluster):
    here, start = cluster
    ref = here.connect(*start().ref.address)
    base = 40

    async def add_base(reply_to):
        termite.send(reply_to, ("sum", base + 2, termite.current_node()))

    here.spawn_on(ref, add_base, here.pid)
    assert here.receive(("sum", int, termite.NodeRef), timeout=10) == ("sum", 42, ref)


def test_links_and_monitors_across_nodes(cluster):
    here, start = cluster
    ref = here.connect(*start().ref.address)
    doomed = here.spawn_on(ref, crash_after, "remote failure", link=True)

    monitor_ref = here.monitor(doomed)
    here.send(doomed, "go")
    exit_msg = here.receive(Exit, timeout=10)
    down = here.receive(Down, timeout=10)
    assert exit_msg.pid == doomed and isinstance(exit_msg.reason, Crash)
    assert exit_msg.reason.message == "remote failure"
    assert "crash_after" in exit_msg.reason.traceback
    assert down.ref == monitor_ref and down.reason == exit_msg.reason



def test_unlink_reaches_the_other_node(cluster):
    here, start = cluster
    ref = here.connect(*start().ref.address)
    doomed = here.spawn_on(ref, crash_after, "remote failure", link=True)
    here.unlink(doomed)
    monitor_ref = here.monitor(doomed)
    here.send(doomed, "go")
    down = here.receive(Down, timeout=10)
    assert down.ref == monitor_ref and isinstance(down.reason, Crash)
    # Its exit signal would have left that node before the Down, on the same connection.
    assert here.receive(Exit, timeout=0, default=None) is None

def test_a_killed_node_fires_links_and_monitors_with_noconnection(cluster):
    here, start = cluster
    remote = start()
    ref = here.connect(*remote.ref.address)
    server = here.spawn_on(ref, echo, link=True)
    assert here.call(server, "alive?", timeout=10) == "alive?"

    monitor_ref, node_ref = here.monitor(server), here.monitor_node(ref)
    remote.kill()
    exit_msg = here.receive(Exit, timeout=10)
    down = here.receive(Down, timeout=10)
    node_down = here.receive(NodeDown, timeout=10)
    assert (exit_msg.pid, exit_msg.reason) == (server, "noconnection")
    assert (down.ref, down.reason) == (monitor_ref, "noconnection")
    assert (node_down.ref, node_down.node) == (node_ref, ref)


def test_a_pid_of_an_earlier_incarnation_of_this_node_is_of_a_down_node_reached_without_a_connection(
        cluster, caplog):
    # A pid kept from before this node's restart: this node listens at its node's address now, so
    # that node has ended.  Reaching for it once connected this node to itself: it listed itself
    # in nodes() and logged its own address as "another node" there.
    here, _ = cluster
    ref = here.ref
    old = termite.Pid(termite.NodeRef(ref.host, ref.port, ref.incarnation ^ 1), 2)
    node_ref = here.monitor_node(old.node)
    here.spawn(watch, old, here.pid, "link")
    monitor_ref = here.monitor(old)
    here.send(old, "lost, as any message to an ended process is")
    exits = here.receive(Exit, timeout=10)
    down = here.receive(Down, timeout=10)
    node_down = here.receive(NodeDown, timeout=10)
    assert (exits.pid, exits.reason) == (old, "noconnection")
    assert (down.ref, down.pid, down.reason) == (monitor_ref, old, "noconnection")
    assert (node_down.ref, node_down.node) == (node_ref, old.node)
    assert here.run(termite.nodes) == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("termite")] == []
    # Once nothing here watches it, sends to its pids are dropped, as to any ended process: not a
    # down each, which every monitor_node() of all nodes would hear.
    here.run(termite.demonitor_node, node_ref)
    everyone = here.monitor_node()
    for n in range(100):
        here.send(old, n)
    here.run(termite.nodes)  # a down would have been handed on before this ran: its turn came first
    assert here.receive(NodeDown(everyone, old.node, ANY), timeout=0, default=None) is None


def test_monitor_node_of_a_node_not_reached_connects_and_says_nodedown_if_it_cannot(cluster):
    # As Erlang's monitor_node: a node already lost, or one where nothing listens, gets a NodeDown at
    # once, not a watch that waits for ever; a live node not yet reached is reached (NodeUp).
    here, start = cluster
    gone = start()
    gone_ref = here.connect(*gone.ref.address)
    first = here.monitor_node(gone_ref)
    gone.kill()
    assert here.receive(NodeDown, timeout=10).ref == first
    here.run(termite.demonitor_node, first)
    again = here.monitor_node(gone_ref)
    assert here.receive(NodeDown, timeout=10) == NodeDown(again, gone_ref, "noconnection")

    with socket.socket() as unused:  # a port nothing listens at
        unused.bind(("127.0.0.1", 0))
        nobody = termite.NodeRef("127.0.0.1", unused.getsockname()[1], 12345)
        never = here.monitor_node(nobody)
        assert here.receive(NodeDown, timeout=10) == NodeDown(never, nobody, "noconnection")

    here.monitor_node(here.ref)  # this node is never down to itself, nor one of its nodes()
    live = start()
    live_ref = termite.NodeRef(*live.ref.address, live.ref.incarnation)
    watch = here.monitor_node(live_ref)
    assert here.receive(NodeUp, timeout=10) == NodeUp(watch, live_ref)
    assert here.run(termite.nodes) == [live_ref]
    live.kill()
    assert here.receive(NodeDown, timeout=10) == NodeDown(watch, live_ref, "noconnection")


@pytest.mark.slow
def test_a_node_busy_with_cpu_bound_work_is_not_declared_down(cluster, keyfile):
    _, start = cluster
    # The default heartbeat timeout (3 s) on both sides, as a user runs it; the
    # work lasts three of them, on a machine other tests keep busy as well.
    remote = start("--heartbeat-timeout", "3.0")
    with termite.Node(port=0, keys=keyfile) as here:
        ref = here.connect(*remote.ref.address)
        worker = here.spawn_on(ref, burn_cpu, 10.0, link=True)
        here.monitor_node(ref)
        msg = here.receive(timeout=20)
        assert msg == Exit(worker, "normal"), msg  # it finished; no NodeDown came first
        assert here.call(here.spawn_on(ref, echo), "still here", timeout=10) == "still here"


def test_a_peer_without_keys_gets_nothing_deserialized(cluster, tmp_path):
    here, start = cluster
    remote = start()
    marker = tmp_path / "pwned"
    import dill

    payload = dill.dumps(lambda: open(marker, "w").close(), recurse=True)  # would create the file
    frame = msgpack.packb([SPAWN, None, msgpack.ExtType(6, payload), [], None, None])
    ctx = zmq.Context()
    try:
        for keys in (None, zmq.curve_keypair()):
            rogue = ctx.socket(zmq.DEALER)
            rogue.linger = 0
            if keys:
                rogue.curve_serverkey = termite._net.keys.load(here._network.keys).public
                rogue.curve_publickey, rogue.curve_secretkey = keys
            rogue.routing_id = b"127.0.0.1:1:1"
            rogue.connect(f"tcp://{remote.ref.host}:{remote.ref.port}")
            rogue.send(frame)
        # The node still serves members, in order, after the attempts.
        ref = here.connect(*remote.ref.address)
        server = here.spawn_on(ref, echo)
        assert here.call(server, "member", timeout=10) == "member"
        assert not os.path.exists(marker)
    finally:
        ctx.destroy(linger=0)


def test_once_connected_a_node_keeps_one_tcp_connection_to_its_peer_not_the_hellos_too(cluster):
    """The hello's probe stayed open for ever: a socket and a TCP connection a peer, for nothing."""
    import psutil

    here, start = cluster
    b = start()
    b_ref = here.connect(*b.ref.address)
    assert here.call(here.spawn_on(b_ref, echo), "up", timeout=10) == "up"
    to_b = [c for c in psutil.Process().net_connections(kind="tcp")
            if c.raddr and c.raddr.port == b_ref.port and c.status == psutil.CONN_ESTABLISHED]
    assert len(to_b) == 1, to_b
