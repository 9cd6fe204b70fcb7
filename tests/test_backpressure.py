"""Flow control (termite._net.flow): a sender to a process of another node that falls behind waits for it."""

import time

import termite
from termite import Down

from slow_receivers import sender, slow_sink
from stalls import stall

LIMIT = 1_000  # the receiving node's mailbox limit
COUNT = 100_000
PACE = 100


def _size(here, probe) -> int:
    here.send(probe, ("size", here.pid))
    return here.receive(("size", int), timeout=10)[1]


def _settled_size(here, probe) -> int:
    """The sink's mailbox once it stops growing (it grows for ever without flow control: then COUNT)."""
    last, deadline = -1, time.monotonic() + 20
    while time.monotonic() < deadline:
        size = _size(here, probe)
        if size == last or size >= COUNT:
            return size
        last = size
        here.receive("never", timeout=0.3, default=None)  # a pause between looks, not a synchronisation
    raise AssertionError(f"the mailbox kept growing: {last}")


async def _kill(pid):
    termite.kill(pid)


async def _busy_nodes():
    return termite.busy_nodes()


def _start(cluster, drain=False):
    here, start = cluster
    b = start("--mailbox-limit", str(LIMIT))
    b_ref = here.connect(*b.ref.address)
    here.spawn_on(b_ref, slow_sink, here.pid, drain)
    _, sink, probe = here.receive(("sink", termite.Pid, termite.Pid), timeout=10)
    return here, b, sink, probe


def test_a_sender_waits_for_a_remote_receiver_that_falls_behind(cluster):
    here, _, sink, probe = _start(cluster)
    source = here.spawn(sender, sink, COUNT, PACE, here.pid)
    waiting = _settled_size(here, probe)
    # Held soon after the limit: what was in flight then still arrives (a few turns' worth), not COUNT.
    assert LIMIT < waiting < COUNT // 2, waiting
    assert here.receive(("sent", int), timeout=0.1, default=None) is None
    here.send(sink, "drain")  # it reads: the sender goes on, and nothing was lost or reordered
    assert here.receive(("drained", int, bool, int), timeout=30)[1:] == (COUNT, True, COUNT)
    assert here.receive(("sent", int), timeout=10)[1] == COUNT
    assert here.receive(Down, timeout=0.1, default=None) is None, source


def test_a_held_sender_can_still_be_killed(cluster):
    here, _, sink, probe = _start(cluster)
    source = here.spawn(sender, sink, COUNT, PACE, here.pid)
    _settled_size(here, probe)
    watch = here.monitor(source)
    here.run(_kill, source)
    down = here.receive(Down, timeout=5)
    assert (down.ref, down.reason) == (watch, "killed"), down


def test_a_held_sender_goes_on_when_the_receivers_node_is_lost(cluster):
    here, b, sink, probe = _start(cluster)
    here.spawn(sender, sink, COUNT, PACE, here.pid)
    _settled_size(here, probe)
    b.kill()
    assert here.receive(("sent", int), timeout=10)[1] == COUNT


def test_a_sender_waits_while_the_receiving_node_reads_nothing(cluster):
    """Erlang's distribution buffer: past 1 MB sent to a node and not read there, its senders wait."""
    here, _, sink, _ = _start(cluster, drain=True)
    b_ref = sink.node
    here.spawn_on(b_ref, stall, 3.0, here.pid)
    here.send(here.receive(("ready to stall", termite.Pid), timeout=10)[1], "go")  # B reads nothing for 3 s
    progress, count, size = [0], 10_000, 1024
    here.spawn(sender, sink, count, 10, here.pid, size, progress)
    deadline = time.monotonic() + 2.5
    while b_ref not in here.run(_busy_nodes) and time.monotonic() < deadline:
        here.receive("never", timeout=0.02, default=None)  # a pause between looks
    assert b_ref in here.run(_busy_nodes), progress
    held_at = progress[0]
    assert held_at * size < 3 * 1024 * 1024, held_at  # 1 MB unread, and one step's worth: not all 10 MB
    here.receive(("stalled", termite.Pid), timeout=10)  # B reads again: all of it arrives, in order
    assert here.receive(("drained", int, bool, int), timeout=30)[1:] == (count, True, count)
    assert here.receive(("sent", int), timeout=10)[1] == count
    assert b_ref not in here.run(_busy_nodes)
