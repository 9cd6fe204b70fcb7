"""Three nodes (this one and two OS processes): traffic between the remote two,
and the global registry."""

import functools

import pytest

import termite
from termite import ChildSpec, Crash, Down, Exit, NameTaken, supervisor
from termite.testing import collect, crash_after, echo, hold_global, relay, watch
from supervised import worker
from cluster_bodies import contact_early, first_message, register_cut_off, spawn_on_and_call, stream, whereis_after_sync


@pytest.fixture
def three(cluster):
    """This node connected to two node processes, B and C, which are connected to each other."""
    here, start = cluster
    b, c = start(), start()
    b_ref, c_ref = here.connect(*b.ref.address), here.connect(*c.ref.address)
    # B reaches C: a process on B connects, so both directions are up.
    here.spawn_on(b_ref, relay, here.pid, termite.connect, *c.ref.address)
    assert here.receive(("relayed", termite.NodeRef), timeout=10) == ("relayed", c_ref)
    # Each has met the other (NodeUp) and exchanged global names, as the README says to wait
    # for: a claim must not race the names a new connection brings.
    for ref in (b_ref, c_ref):
        here.spawn_on(ref, relay, here.pid, termite.sync_global)
        assert here.receive(("relayed", None), timeout=10)
    return here, b, c, b_ref, c_ref


def test_processes_on_two_remote_nodes_talk_send_call_and_spawn(three):
    here, _, _, b_ref, c_ref = three
    sink = here.spawn_on(b_ref, collect, here.pid, 500)
    # A process on C streams to B: pids travel inside messages.
    here.spawn_on(c_ref, relay, here.pid, stream, sink, 500)
    assert here.receive(("collected", list), timeout=10) == ("collected", list(range(500)))
    here.receive(("relayed", None), timeout=10)

    # A process on B calls a server on C, and spawns on C from B.
    server = here.spawn_on(c_ref, echo)
    here.spawn_on(b_ref, relay, here.pid, termite.call, server, ("from B", 1), 10)
    assert here.receive(("relayed", ...), timeout=10) == ("relayed", ("from B", 1))
    here.spawn_on(b_ref, relay, here.pid, spawn_on_and_call, c_ref)
    assert here.receive(("relayed", ...), timeout=10) == ("relayed", ("echo", c_ref))


@pytest.mark.parametrize("how", ["link", "monitor"])
def test_a_crash_on_one_remote_node_reaches_a_watcher_on_the_other(three, how):
    here, _, _, b_ref, c_ref = three
    doomed = here.spawn_on(c_ref, crash_after, "crash on C")
    here.spawn_on(b_ref, watch, doomed, here.pid, how)
    here.receive(("watching", doomed), timeout=10)
    # "go" leaves from B, behind the watcher's link or monitor on the one B -> C connection:
    # sent from here, it could reach C first, and the watcher would rightly see noproc.
    here.spawn_on(b_ref, relay, here.pid, termite.send, doomed, "go")
    msg = here.receive(Exit if how == "link" else Down, timeout=10)
    assert msg.pid == doomed and isinstance(msg.reason, Crash) and msg.reason.message == "crash on C"


def test_name_and_node_reach_a_process_registered_on_another_node(three):
    here, _, _, b_ref, c_ref = three
    server = here.run(lambda: termite.spawn(echo, name="svc", node=b_ref))
    assert here.run(termite.whereis_on, b_ref, "svc", 10) == server
    assert here.run(termite.whereis_on, b_ref, "nobody", 10) is None
    # From C, by name: a send (one frame, no lookup) and a call.
    here.spawn_on(c_ref, relay, here.pid, termite.send, ("svc", b_ref), (here.pid, termite.Tag((1, 2)), "by name"))
    assert here.receive((termite.Tag((1, 2)), ...), timeout=10) == (termite.Tag((1, 2)), "by name")
    assert here.receive(("relayed", ...), timeout=10) == ("relayed", None)  # the send's own relay
    here.spawn_on(c_ref, relay, here.pid, termite.call, ("svc", b_ref), "called by name", 10)
    assert here.receive(("relayed", ...), timeout=10) == ("relayed", "called by name")
    # A name nobody holds there: a send is lost, as to an ended process; a call says noproc.
    here.send(("nobody", b_ref), "lost")
    with pytest.raises(termite.DeadProcess) as info:
        here.call(("nobody", b_ref), "hello?", timeout=10)
    assert info.value.reason == "noproc"
    with pytest.raises(TypeError, match=r"\(name, node\)"):
        here.send(("svc", "not a node"), "x")


def test_a_pid_that_outruns_its_spawn_request_gets_its_messages_links_and_monitors(three):
    """B reaches a pid this node chose for a spawn on C before C has the request: C waits for it."""
    here, _, _, b_ref, c_ref = three
    server = here.spawn_on(c_ref, echo)
    remote = here._runtime.table.remote
    upcoming = termite.Pid(c_ref, next(remote._spawn_serials) + 1000)  # a pid this node has yet to give
    here.spawn_on(b_ref, contact_early, upcoming, server, here.pid)
    assert here.receive(("contacted", ...), timeout=10) == ("contacted", upcoming)
    remote._spawn_serials = iter([upcoming.serial])  # the spawn request comes only now
    assert here.spawn_on(c_ref, first_message, here.pid) == upcoming
    assert here.receive(("first", ...), timeout=10) == ("first", "early")
    down = here.receive(Down, timeout=10)
    assert (down.pid, down.reason) == (upcoming, "normal")


def test_a_pid_whose_spawn_request_never_comes_is_noproc_after_a_wait(cluster, keyfile):
    here, _ = cluster
    with termite.Node(port=0, keys=keyfile) as other:
        other._runtime.table.remote.spawn_wait = 0.2
        ref = here.connect(*other.ref.address)
        never = termite.Pid(ref, next(here._runtime.table.remote._spawn_serials))  # chosen, never requested
        here.send(never, "lost")
        monitor = here.monitor(never)
        assert here.receive(Down, timeout=10) == Down(monitor, never, "noproc")


def test_a_killed_node_is_noconnection_for_a_watcher_on_another_remote_node(three):
    here, _, c, b_ref, c_ref = three
    server = here.spawn_on(c_ref, echo)
    here.spawn_on(b_ref, watch, server, here.pid, "monitor")
    here.receive(("watching", server), timeout=10)
    c.kill()
    down = here.receive(Down, timeout=10)
    assert (down.pid, down.reason) == (server, "noconnection")


def test_a_global_name_resolves_on_every_node_and_goes_with_its_process(three):
    here, _, _, b_ref, c_ref = three
    holder = here.spawn_on(b_ref, hold_global, "db", here.pid)
    assert here.receive(("registered", "db", termite.Pid), timeout=10) == ("registered", "db", holder)
    assert here.whereis_global("db") == holder
    here.spawn_on(c_ref, relay, here.pid, termite.whereis_global, "db")
    assert here.receive(("relayed", ...), timeout=10) == ("relayed", holder)
    # Taken everywhere: a claim from C fails, and so does one from here.
    here.spawn_on(c_ref, hold_global, "db", here.pid)
    assert here.receive(("taken", "db", termite.Pid), timeout=10)[0] == "taken"
    with pytest.raises(NameTaken, match="db"):
        here.register_global("db", here.pid)

    here.monitor(holder)
    here.send(holder, "stop")
    here.receive(Down, timeout=10)
    here.run(termite.sync_global, timeout=10)  # this node's name server has seen the Down too
    assert here.whereis_global("db") is None
    here.spawn_on(c_ref, relay, here.pid, whereis_after_sync, "db")
    assert here.receive(("relayed", ...), timeout=10) == ("relayed", None)


def test_a_global_name_goes_when_its_node_is_lost(three):
    here, _, c, _, c_ref = three
    holder = here.spawn_on(c_ref, hold_global, "cache", here.pid)
    here.receive(("registered", "cache", holder), timeout=10)
    here.monitor(holder)
    c.kill()
    assert here.receive(Down, timeout=10).reason == "noconnection"
    here.run(termite.sync_global, timeout=10)
    assert here.whereis_global("cache") is None


def test_concurrent_claims_of_one_name_never_both_succeed(three):
    here, _, _, b_ref, c_ref = three
    for round_ in range(10):
        name = f"leader-{round_}"
        claimants = {here.spawn_on(b_ref, hold_global, name, here.pid), here.spawn_on(c_ref, hold_global, name, here.pid)}
        outcomes = [here.receive((str, name, termite.Pid), timeout=10) for _ in claimants]
        assert {pid for _, _, pid in outcomes} == claimants
        winners = [pid for outcome, _, pid in outcomes if outcome == "registered"]
        assert len(winners) <= 1, outcomes
        here.run(termite.sync_global, timeout=10)
        assert here.whereis_global(name) == (winners[0] if winners else None)
        for pid in winners:
            here.send(pid, "stop")


def test_names_registered_apart_merge_when_nodes_meet_and_the_lower_pid_keeps_it(cluster):
    here, start = cluster
    b, c = start(), start()
    b_ref, c_ref = here.connect(*b.ref.address), here.connect(*c.ref.address)
    # B and C are not connected to each other; each gets a process holding "primary".
    on_b = here.spawn_on(b_ref, hold_global, "primary", here.pid)
    here.receive(("registered", "primary", on_b), timeout=10)
    on_c = here.spawn_on(c_ref, register_cut_off, "primary", here.pid)
    here.receive(("registered", "primary", on_c), timeout=10)
    for pid in (on_b, on_c):
        here.monitor(pid)

    here.spawn_on(c_ref, relay, here.pid, termite.connect, *b.ref.address)  # the partition heals
    assert here.receive(("relayed", termite.NodeRef), timeout=10) == ("relayed", b_ref)
    winner, loser = sorted([on_b, on_c], key=lambda p: (p.node.host, p.node.port, p.node.incarnation, p.serial))
    down = here.receive(Down, timeout=10)
    assert (down.pid, down.reason) == (loser, ("global_name_conflict", "primary"))
    for ref in (b_ref, c_ref):
        here.spawn_on(ref, relay, here.pid, whereis_after_sync, "primary")
        assert here.receive(("relayed", ...), timeout=10) == ("relayed", winner)
    here.run(termite.sync_global, timeout=10)
    assert here.whereis_global("primary") == winner


def test_a_supervisor_restarts_a_crashed_child_under_its_global_name_at_once(cluster):
    # Was: the restart's claim was refused (NameTaken) while this node's name server had yet
    # to take the release of the dead holder, and three quick restarts gave the supervisor up.
    here, _ = cluster
    spec = ChildSpec("g", worker, args=(here.pid, "g"), name=("global", "solo"))
    sup = here.run(functools.partial(supervisor.start, [spec], intensity=10, period=10.0))
    for _ in range(5):
        _, _, pid, _ = here.receive(("started", "g", termite.Pid, termite.NodeRef), timeout=10)
        # The supervisor answers once it has registered the name.
        assert [info.pid for info in here.run(supervisor.which_children, sup)] == [pid]
        assert here.whereis_global("solo") == pid
        here.send(pid, "crash")
    here.receive(("started", "g", termite.Pid, termite.NodeRef), timeout=10)
