"""Process groups (termite.pg, Erlang's pg) on one node and across real nodes.

Views are eventually consistent, so the tests wait for them: a watcher
process on each node monitors the group and forwards every change, and a
test waits (bounded) until each watcher's view is the one it expects.
"""

import itertools
from collections import Counter

import pytest
from group_members import keep_group_server_busy, member, node_watcher, view, watcher

import termite
from termite import ANY, NodeRef, Pid, pg, receive, send, spawn
from termite.testing import relay

WAIT = 15.0  # seconds a view may take to follow a change, at most
_tokens = itertools.count()


class Views:
    """Watchers of ``group`` on ``nodes``: what each node's replica holds, kept up to date by its events."""

    def __init__(self, here, nodes, group):
        self.here = here
        self.token = next(_tokens)  # the messages of this one's watchers
        self.seen: dict[NodeRef, Counter] = {}
        self.events: list[tuple] = []
        for node in nodes:
            if node == here.ref:
                here.spawn(watcher, here.pid, group, self.token)
            else:
                here.spawn_on(node, watcher, here.pid, group, self.token)
        for _ in nodes:
            _, _, node, now = here.receive(("watching", self.token, NodeRef, list), timeout=WAIT)
            self.seen[node] = Counter(now)

    def wait(self, expected: dict, timeout: float = WAIT) -> None:
        """Take events until every node's view holds ``expected`` ({pid: times joined})."""
        expected = Counter(expected)
        while any(seen != expected for seen in self.seen.values()):
            msg = self.here.receive(("event", self.token, NodeRef, str, tuple), timeout=timeout, default=None)
            assert msg is not None, f"no change for {timeout} s; the views are {self.seen}, not {expected}"
            _, _, node, kind, pids = msg
            self.events.append((node, kind, pids))
            seen = self.seen[node]
            if kind == "join":
                seen.update(pids)
            else:
                seen.subtract(pids)
            self.seen[node] = +seen


def spawn_member(here, node: NodeRef, groups: list) -> Pid:
    if node == here.ref:
        here.spawn(member, here.pid, groups)
    else:
        here.spawn_on(node, member, here.pid, groups)
    _, pid, _ = here.receive(("joined", Pid, node), timeout=WAIT)
    return pid


def view_on(here, node: NodeRef, group):
    """(members, local members, groups) as ``node`` sees them."""
    if node == here.ref:
        _, members, local, groups = here.run(view, group)
    else:
        here.spawn_on(node, relay, here.pid, view, group)
        _, (_, members, local, groups) = here.receive(("relayed", ANY), timeout=WAIT)
    return members, local, groups


def connected(cluster, count):
    here, start = cluster
    nodes = [start() for _ in range(count)]
    for node in nodes:
        here.connect(*node.ref.address)
    return here, nodes


# -- one node ------------------------------------------------------------------------------


def test_join_twice_leave_and_the_events_a_subscriber_gets(node):
    async def scenario():
        ref1, now1 = await pg.monitor("g")
        ref2, now2 = await pg.monitor("g")
        assert now1 == now2 == []
        p = spawn(member, termite.self(), ["g", "g"])
        await receive(("joined", p, ANY), timeout=5)
        assert pg.members("g") == [p, p] and pg.local_members("g") == [p, p]
        assert pg.which_groups() == ["g"]
        events = [await receive(pg.GroupEvent, timeout=5) for _ in range(4)]
        assert events == [pg.GroupEvent(ref1, "join", "g", (p,)), pg.GroupEvent(ref2, "join", "g", (p,))] * 2
        assert await pg.demonitor(ref1) is True
        assert await pg.demonitor(ref1) is False
        send(p, ("leave", "g"))
        await receive(("left", p, True), timeout=5)
        send(p, ("leave", "other"))
        await receive(("left", p, False), timeout=5)  # not a member: nothing changes
        assert await receive(pg.GroupEvent, timeout=5) == pg.GroupEvent(ref2, "leave", "g", (p,))
        # ref1's event would have been sent before ref2's: there is none.
        assert await receive(pg.GroupEvent, timeout=0, default=None) is None
        assert pg.members("g") == [p]
        send(p, "stop")  # a member that ends leaves its groups
        assert await receive(pg.GroupEvent, timeout=5) == pg.GroupEvent(ref2, "leave", "g", (p,))
        return pg.members("g"), pg.which_groups()

    assert node.run(scenario, timeout=30) == ([], [])


def test_a_member_joins_several_groups_named_by_plain_data(node):
    async def scenario():
        await pg.join(("jobs", 1))
        await pg.join("jobs")
        await pg.join(7)
        me = termite.self()
        assert [pg.members(g) for g in (("jobs", 1), "jobs", 7, "none")] == [[me], [me], [me], []]
        assert sorted(map(repr, pg.which_groups())) == sorted(map(repr, [("jobs", 1), "jobs", 7]))
        assert await pg.leave("jobs") is True and await pg.leave("jobs") is False
        return pg.members("jobs")

    assert node.run(scenario, timeout=30) == []


def test_bad_input_gets_clear_errors(node):
    stranger = Pid(NodeRef("127.0.0.1", 1, 5), 99)

    async def scenario():
        errors = []
        for attempt in (lambda: pg.join(["a", "list"]), lambda: pg.join("g", "not a pid"),
                        lambda: pg.join("g", stranger), lambda: pg.join("g", timeout=0),
                        lambda: pg.demonitor("not a ref")):
            try:
                await attempt()
            except (TypeError, ValueError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
        return errors

    errors = node.run(scenario, timeout=30)
    assert len(errors) == 5, errors
    assert "plain data" in errors[0] and "list" in errors[0]
    assert "needs a Pid" in errors[1]
    assert "ValueError" in errors[2] and "on its own node" in errors[2]
    assert "timeout=0" in errors[3]
    assert "the ref that monitor() returned" in errors[4]
    with pytest.raises(termite.NotInProcess):
        pg.members("g")


# -- across nodes ----------------------------------------------------------------------------


def test_members_join_and_leave_across_three_nodes(cluster):
    here, (b, c) = connected(cluster, 2)
    everyone = [here.ref, b.ref, c.ref]
    views = Views(here, everyone, "g")
    on_b = spawn_member(here, b.ref, ["g"])
    on_c = spawn_member(here, c.ref, ["g", "g", ("jobs", 7)])
    on_here = spawn_member(here, here.ref, ["g"])
    views.wait({on_b: 1, on_c: 2, on_here: 1})
    local = {here.ref: [on_here], b.ref: [on_b], c.ref: [on_c, on_c]}
    for node in everyone:
        members, local_members, groups = view_on(here, node, "g")
        assert Counter(members) == Counter({on_b: 1, on_c: 2, on_here: 1})
        assert local_members == local[node], node
        assert set(groups) == {"g", ("jobs", 7)}  # a tuple names a group on every node

    here.send(on_c, ("leave", "g"))
    assert here.receive(("left", on_c, bool), timeout=WAIT)[2] is True
    views.wait({on_b: 1, on_c: 1, on_here: 1})

    here.send(on_b, "stop")  # a member that ends leaves on every node
    views.wait({on_c: 1, on_here: 1})
    here.send(on_c, "stop")
    views.wait({on_here: 1})
    for node in everyone:
        members, _, groups = view_on(here, node, "g")
        assert (members, groups) == ([on_here], ["g"])


def test_a_node_that_connects_later_gets_the_groups(cluster):
    here, (b,) = connected(cluster, 1)
    on_b = spawn_member(here, b.ref, ["g"])
    Views(here, [here.ref], "g").wait({on_b: 1})
    c = cluster[1]()
    here.connect(*c.ref.address)  # c hears of on_b from here, and connects to b itself
    views = Views(here, [c.ref], "g")
    views.wait({on_b: 1})
    on_b2 = spawn_member(here, b.ref, ["g"])
    views.wait({on_b: 1, on_b2: 1})
    here.spawn_on(c.ref, relay, here.pid, termite.nodes)
    _, c_nodes = here.receive(("relayed", list), timeout=WAIT)
    assert {here.ref, b.ref} <= set(c_nodes)  # a group server connects to its peers' peers


def test_a_group_server_that_ended_starts_again_and_asks_its_peers_for_the_groups(cluster):
    here, (b,) = connected(cluster, 1)
    on_b = spawn_member(here, b.ref, ["g"])
    Views(here, [here.ref], "g").wait({on_b: 1})
    server = Pid(here.ref, termite._core.process.PG_SERIAL)
    watch = here.monitor(server)
    here.run(termite.kill, server)
    here.receive(termite.Down(watch, server, ANY), timeout=WAIT)
    assert here.run(pg.members, "g") == []  # what it knew went with it
    views = Views(here, [here.ref, b.ref], "g")  # monitor() started it again
    views.wait({on_b: 1})  # b answered its sync
    on_here = spawn_member(here, here.ref, ["g"])
    views.wait({on_b: 1, on_here: 1})  # and it tells b again


def test_a_killed_nodes_members_leave_on_every_other_node(cluster):
    here, (b, c) = connected(cluster, 2)
    views = Views(here, [here.ref, c.ref], "g")
    on_b1 = spawn_member(here, b.ref, ["g"])
    on_b2 = spawn_member(here, b.ref, ["g", "g"])
    on_c = spawn_member(here, c.ref, ["g"])
    views.wait({on_b1: 1, on_b2: 2, on_c: 1})
    b.kill()  # SIGKILL: b says nothing; its members leave by the loss of the node
    views.wait({on_c: 1})
    left = Counter(pid for _, kind, pids in views.events if kind == "leave" for pid in pids)
    assert left == {on_b1: 2, on_b2: 4}  # on each of the two nodes: on_b1 once, on_b2 twice


@pytest.mark.timeout(120)
def test_a_migrated_member_stays_a_member_until_its_new_node_is_lost(cluster):
    here, (b, c, d) = connected(cluster, 3)
    views = Views(here, [here.ref, c.ref, d.ref], "g")  # b is killed below
    p = spawn_member(here, b.ref, ["g", "h"])
    views.wait({p: 1})

    here.send(p, ("migrate", c.ref, []))  # a real migration, from b to c
    assert here.receive(("moved", p, NodeRef), timeout=WAIT)[2] == c.ref
    for node in (here.ref, b.ref, c.ref, d.ref):
        members, local, groups = view_on(here, node, "g")
        assert (members, sorted(groups)) == ([p], ["g", "h"]), node
        assert local == ([p] if node == c.ref else []), node

    here.send(p, ("join", "g"))  # a change made on its new node reaches every node
    here.receive(("joined", p, c.ref), timeout=WAIT)
    views.wait({p: 2})

    # Its old node is lost: it runs on c, so it stays a member everywhere.
    for node in (here.ref, c.ref, d.ref):
        if node == here.ref:
            here.spawn(node_watcher, here.pid, b.ref)
        else:
            here.spawn_on(node, node_watcher, here.pid, b.ref)
        here.receive(("watching node", node, b.ref), timeout=WAIT)
    b.kill()
    for _ in range(3):
        here.receive(("lost", NodeRef, b.ref), timeout=WAIT)
    here.send(p, ("leave", "h"))  # a fence: a leave for b's loss, were there one, came before this
    assert here.receive(("left", p, bool), timeout=WAIT)[2] is True
    here.send(p, ("leave", "g"))
    assert here.receive(("left", p, bool), timeout=WAIT)[2] is True
    views.wait({p: 1})
    assert [(kind, pids) for node, kind, pids in views.events if node == here.ref] == [
        ("join", (p,)), ("join", (p,)), ("leave", (p,))]  # joined, joined again on c, left once: no more

    # Its new node is lost: it leaves everywhere else.
    c.kill()
    del views.seen[c.ref]
    views.wait({})


def test_a_member_that_moves_to_a_node_just_met_keeps_its_groups_and_joins_more(cluster):
    here, (b,) = connected(cluster, 1)
    p = spawn_member(here, b.ref, ["g"])
    e = cluster[1]("--log-level", "DEBUG")  # neither here nor b has met it: p's move opens b's session with it
    # b's group server has a backlog, so it tells e its groups (p in "g") only after p, there, joins "h":
    # e must hold that join until then, else it would give p's membership a version b already holds.
    here.spawn_on(b.ref, relay, here.pid, keep_group_server_busy, 300_000)
    here.receive(("relayed", None), timeout=WAIT)
    here.send(p, ("migrate", e.ref, ["h"]))
    assert here.receive(("moved", p, NodeRef), timeout=WAIT)[2] == e.ref
    for group in ("g", "h"):
        views = Views(here, [here.ref, b.ref, e.ref], group)
        views.wait({p: 1})
        for node in (here.ref, b.ref, e.ref):
            members, local, groups = view_on(here, node, group)
            assert (members, local, sorted(groups)) == ([p], [p] if node == e.ref else [], ["g", "h"]), node
    assert "waits for the replicas" in e.logged()
