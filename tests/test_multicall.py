"""gen_server.multi_call and abcast: one request to the server of a name on many nodes (Erlang's)."""

import time

import pytest
from multicall_servers import Answers

import termite
from termite import gen_server, receive
from termite.testing import relay


def at(node):
    return ("at", node)


@pytest.mark.timeout(90)
def test_replies_and_bad_nodes_a_missing_server_and_a_node_killed_mid_call(cluster):
    here, start = cluster
    b_node, c_node, d_node = start(), start(), start()
    b, c, d = (here.connect(*n.ref.address) for n in (b_node, c_node, d_node))
    for node, hold in ((here.ref, False), (b, False), (d, True)):  # none on c
        here.run(lambda: gen_server.start_wait(Answers(), here.pid, hold, name="answers", node=node, timeout=10))

    here.run(gen_server.abcast, [here.ref, b, c, d], "answers", "hello")
    casts = {here.receive(("cast", termite.NodeRef, "hello"), timeout=10)[1] for _ in range(3)}
    assert casts == {here.ref, b, d}  # c has no such server: its cast is dropped, no error

    here.spawn(relay, here.pid, gen_server.multi_call, [here.ref, b, c, d], "answers", "where", 30)
    assert here.receive(("holding", d), timeout=10)  # d's server has the request and holds it
    killed = time.monotonic()
    d_node.kill()
    _, (replies, bad) = here.receive(("relayed", ...), timeout=25)
    assert replies == [(here.ref, at(here.ref)), (b, at(b))]
    assert bad == [c, d]
    assert time.monotonic() - killed < 10, "the lost node held up the answer until the timeout"

    started = time.monotonic()  # a node already down is answered as soon as it is known lost
    replies, bad = here.run(gen_server.multi_call, [b, d], "answers", "where", 30)
    assert (replies, bad) == ([(b, at(b))], [d])
    assert time.monotonic() - started < 15


def test_nodes_none_means_this_node_and_those_it_is_connected_to(cluster):
    here, start = cluster
    b = here.connect(*start().ref.address)
    here.run(lambda: gen_server.start_wait(Answers(), here.pid, name="answers", node=b, timeout=10))
    here.run(lambda: gen_server.start_wait(Answers(), here.pid, name="answers"))
    replies, bad = here.run(gen_server.multi_call, None, "answers", "where", 10)
    assert sorted(replies, key=str) == sorted([(here.ref, at(here.ref)), (b, at(b))], key=str) and bad == []


async def late_replies_stay_out_of_the_mailbox():
    me = termite.self()
    held = gen_server.start(Answers(), me, True, name="held")
    result = await gen_server.multi_call([termite.current_node()], "held", "where", 0.2)
    gen_server.cast(held, "release")  # its late reply goes to the asker that gave up, not to us
    released = await receive(("released", int), timeout=5)
    return result, released, termite.process_info(me).mailbox


def test_a_server_that_does_not_reply_in_time_is_a_bad_node_and_its_late_reply_goes_nowhere():
    with termite.Node() as node:  # no network: multi_call to this node alone still works
        started = time.monotonic()
        (replies, bad), released, mailbox = node.run(late_replies_stay_out_of_the_mailbox)
        here = node.run(termite.current_node)
    assert (replies, bad) == ([], [here]) and 0.2 <= time.monotonic() - started < 5
    assert released == ("released", 1)
    assert mailbox == 1  # the "holding" notice only: no late reply, no Down of the helper


def test_a_server_that_crashes_or_ends_before_replying_is_a_bad_node(crash_log):
    async def main():
        me = termite.self()
        gen_server.start(Answers(), me, name="answers")
        return await gen_server.multi_call(None, "answers", "crash")

    replies, bad = termite.run(main)
    assert replies == [] and len(bad) == 1


@pytest.mark.parametrize(
    "args, error, words",
    [
        (("node", "answers", "where"), TypeError, "list of nodes"),
        ((["node"], "answers", "where"), TypeError, "NodeRef"),
        ((None, 7, "where"), TypeError, "registered"),
        ((None, "answers", "where", -1), ValueError, "timeout"),
    ],
)
def test_bad_arguments_say_what_is_expected(args, error, words):
    async def main():
        with pytest.raises(error, match=words):
            await gen_server.multi_call(*args)
        return True

    assert termite.run(main)


def test_abcast_checks_its_arguments_and_never_fails_for_a_missing_server():
    async def main():
        gen_server.abcast(None, "nobody", "lost")  # no such server: no error, as cast
        with pytest.raises(TypeError, match="list of nodes"):
            gen_server.abcast(termite.current_node(), "nobody", "lost")
        return True

    assert termite.run(main)
