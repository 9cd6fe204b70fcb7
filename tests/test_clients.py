"""A client node (``termite.Network(client=True)``: the Executor's, termite-launch's, a script's) that leaves
is logged by the nodes it spoke to as "client ... left" (INFO), not as a node down (WARNING); for links,
monitors and NodeDown it is a node like any other.  Real node processes, logging at INFO (``-v``)."""

import time

import termite
from termite import Pid
from termite._net.admission import identity_of, is_client, ref_of_identity

from stalls import forever, linked_waiter, nodes_and_dispatch_targets, numbered_sink


def test_a_clients_routing_id_says_so_and_names_the_same_node():
    ref = termite.NodeRef("10.0.0.7", 9000, 0xABC)
    for epoch in (0, 7, None):
        member, client = identity_of(ref, epoch), identity_of(ref, epoch, client=True)
        assert not is_client(member) and is_client(client)
        assert ref_of_identity(member) == ref_of_identity(client) == (ref, epoch)
    later = identity_of(ref, 3) + b"/a-flag-of-a-later-version"  # ignored, not a malformed id
    assert ref_of_identity(later) == (ref, 3) and not is_client(later)
    assert is_client(later + b"/client")


def _logged_until(node, text: str, timeout: float = 10.0) -> str:
    """The node's log once it holds ``text`` (its stderr is read as it comes)."""
    deadline = time.monotonic() + timeout
    while text not in node.logged():
        assert time.monotonic() < deadline, f"the node never logged {text!r}; it logged:\n{node.logged()}"
        time.sleep(0.05)  # a log gives no event to wait on: read it again
    return node.logged()


def test_a_client_that_leaves_is_logged_at_info_and_is_still_down_to_its_watchers(cluster, keyfile):
    here, start = cluster
    server = start("-v")  # INFO and above
    server_ref = here.connect(*server.ref.address)
    network = dict(port=0, keys=keyfile, heartbeat_timeout=1.0, heartbeat_interval=0.1)
    with termite.Node(client=True, **network) as client:
        client.connect(*server.ref.address)
        client_ref = client.ref
        sink = here.spawn_on(server_ref, numbered_sink, here.pid, client_ref)  # monitors the client's node
        here.send(sink, ("report", here.pid))
        assert ("down",) not in here.receive(("log", list), timeout=10)[1]  # it watches the client from now on
        partner = client.spawn(forever)
        here.spawn_on(server_ref, linked_waiter, partner, here.pid)
        waiter = here.receive(("linked", Pid), timeout=10)[1]

    # To its watchers, as any node: the link fires (the stopping client killed its processes, or the
    # connection went first), and the node monitor gets NodeDown.
    _, who, dead, reason = here.receive(("exit", Pid, Pid, object), timeout=10)
    assert (who, dead) == (waiter, partner) and reason in ("killed", "noconnection"), reason
    deadline = time.monotonic() + 10  # the exit can come first (the client killed its processes as it stopped)
    while True:
        here.send(sink, ("report", here.pid))
        log = here.receive(("log", list), timeout=10)[1]
        if ("down",) in log or time.monotonic() > deadline:
            break
        time.sleep(0.05)  # the node-down has no event the test can wait on here: ask again
    assert ("down",) in log, log

    logged = _logged_until(server, f"INFO client {client_ref} left: its connection closed")
    assert f"{client_ref} is down" not in logged, logged

    with termite.Node(**network) as member:  # a node of the cluster: its loss is a WARNING still
        member.connect(*server.ref.address)
        member_ref = member.ref
    _logged_until(server, f"WARNING node {member_ref} is down: its connection closed")



def test_a_client_is_hidden_from_the_nodes_it_reaches_and_runs_none_of_their_work(cluster, keyfile):
    """Erlang's hidden nodes: a client is not in a node's ``nodes()``, and the node's dispatcher never
    counts it as a place to run work (it did: a cluster's thunks could land in a user's script)."""
    here, start = cluster
    b = start()
    b_ref = here.connect(*b.ref.address)
    network = dict(port=0, keys=keyfile, heartbeat_timeout=1.0, heartbeat_interval=0.1)
    with termite.Node(client=True, **network) as client:
        client_b, hidden = client.connect(*b.ref.address), client.ref
        here.spawn_on(b_ref, nodes_and_dispatch_targets, here.pid)
        listed, targets = here.receive(("seen", list, list), timeout=20)[1:]
    assert here.ref in listed and hidden not in listed, listed
    assert here.ref in targets and hidden not in targets and client_b == b_ref, targets
