"""First-class continuations (termite/_move/callcc.py): cloning and code update, paper section 4.10."""

import pickle
import re
import sys

# Process bodies live in a module pytest does not rewrite: a node refuses a
# continuation whose code differs from its own, and pytest rewrites asserts.
import clonables
import pytest
from clonables import (
    become_not_a_continuation,
    counter,
    holds_a_lock,
    landing,
    new_server,
    replaced,
    resumed,
    server,
    traveller,
)

import termite
from termite import Continuation, Down, MigrationError, become
from termite._move.chain import PYTHONS
from termite._move.fingerprint import fingerprint as code_fingerprint

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(sys.version_info[:2] not in PYTHONS, reason="continuations need CPython 3.11 to 3.13"),
]


def test_continuation_returns_a_continuation_then_the_value_it_is_resumed_with(node):
    pid = node.spawn(resumed, node.pid)
    _, who, k = node.receive(("resumed", ...), timeout=10)
    assert who == pid and isinstance(k, Continuation) and k.origin == pid
    assert pickle.loads(pickle.dumps(k)) == k and "bytes" in repr(k)

    clone = node.spawn(become, k)  # the paper's (clone #t)
    assert node.receive(("resumed", ...), timeout=10) == ("resumed", clone, True)
    other = node.spawn(become, k, 42)
    assert node.receive(("resumed", ...), timeout=10) == ("resumed", other, 42)
    assert len({pid, clone, other}) == 3


def test_a_clone_has_the_state_then_its_own_and_a_new_pid(node):
    original = node.spawn(counter, 0)
    assert [node.call(original, "incr", timeout=10) for _ in range(2)] == [1, 2]
    k = node.call(original, "clone", timeout=10)
    clone = node.spawn(become, k)
    assert clone != original
    assert node.call(clone, "who", timeout=10) == (clone, node.ref, 2)  # the same n ...
    assert node.call(clone, "incr", timeout=10) == 3  # ... then its own
    assert node.call(clone, "incr", timeout=10) == 4
    assert node.call(original, "incr", timeout=10) == 3
    assert node.call(original, "who", timeout=10) == (original, node.ref, 3)
    # The original still answers clone, and a clone of the clone starts from 4.
    grandchild = node.spawn(become, node.call(clone, "clone", timeout=10))
    assert node.call(grandchild, "incr", timeout=10) == 5


def test_code_update_keeps_the_pid_mailbox_and_monitors_and_changes_behaviour(node):
    old = node.spawn(server, node.pid)
    assert node.call(old, "ping", timeout=10) == "gnop"  # the bug
    fixed = node.spawn(new_server, node.pid)
    k = node.call(fixed, "clone", timeout=10)
    ref = node.monitor(old)

    node.send(old, ("update", k))  # the paper's (! server (list 'update replacement))
    assert node.call(old, "ping", timeout=10) == "pong"  # waited in the mailbox, answered by the new code
    assert node.call(old, "who", timeout=10) == old
    assert node.call(fixed, "ping", timeout=10) == "pong"  # the process k came from goes on as it was
    assert node.call(old, "stop", timeout=10) == 1  # the new code's own state, from k
    assert node.receive(Down, timeout=10) == Down(ref, old, "normal")


def test_become_closes_the_replaced_chain_first(node):
    pid = node.spawn(resumed, node.pid)
    k = node.receive(("resumed", pid, ...), timeout=10)[2]
    other = node.spawn(replaced, node.pid, k, "from replaced")
    assert node.receive(timeout=10) == ("replacing", other)
    assert node.receive(timeout=10) == ("finally ran", other)
    assert node.receive(timeout=10) == ("resumed", other, "from replaced")


def _tampered(k: Continuation, function) -> Continuation:
    fingerprint = code_fingerprint(function.__code__)
    assert k.data.count(fingerprint) == 1
    return Continuation(k.data.replace(fingerprint, bytes(16)), k.origin)


def _other_python(k: Continuation) -> Continuation:
    data = bytearray(k.data)
    data[4] += 1
    return Continuation(bytes(data), k.origin)


@pytest.mark.parametrize(
    "spoil, error",
    [
        (lambda k: _tampered(k, clonables.new_server), "different code for function clonables.new_server"),
        (_other_python, rf"captured on Python 3\.{sys.version_info[1] + 1} and this node runs 3\.{sys.version_info[1]}"),
    ],
    ids=["other code", "other python"],
)
def test_become_with_a_continuation_it_cannot_restore_raises_and_the_process_goes_on(node, spoil, error):
    old = node.spawn(server, node.pid)
    fixed = node.spawn(new_server, node.pid)
    bad = spoil(node.call(fixed, "clone", timeout=10))
    node.send(old, ("update", bad))
    _, who, text = node.receive(("update refused", ...), timeout=10)
    assert who == old
    assert re.search(error, text), text
    assert node.call(old, "ping", timeout=10) == "gnop"  # still the old code, still running


def test_a_clone_of_a_continuation_it_cannot_restore_crashes(node):
    fixed = node.spawn(new_server, node.pid)
    bad = _tampered(node.call(fixed, "clone", timeout=10), clonables.new_server)
    with pytest.raises(MigrationError, match="different code for function clonables.new_server"):
        node.run(become, bad, timeout=10)


def test_a_lock_in_a_local_is_named_and_the_process_goes_on(node):
    pid = node.spawn(holds_a_lock, node.pid)
    _, text, variable = node.receive(("refused", ...), timeout=10)
    assert variable == "lock"
    assert text.startswith("cannot capture the continuation of ") and "local variable 'lock'" in text, text
    assert node.call(pid, "ping", timeout=10) == ("still here", "ping")


def test_become_needs_a_continuation(node):
    node.spawn(become_not_a_continuation, node.pid)
    _, text = node.receive(("TypeError", str), timeout=10)
    assert "become() needs a Continuation" in text


def test_continuation_outside_a_process_says_so():
    with pytest.raises(termite.NotInProcess):
        termite.continuation()


# -- across node processes ----------------------------------------------------------


def test_a_clone_starts_on_another_node_process(cluster):
    here, start = cluster
    b = here.connect(*start().ref.address)
    original = here.spawn(counter, 10)
    assert node_call(here, original, "incr") == 11
    k = node_call(here, original, "clone")

    clone = here.spawn_on(b, become, k)  # spawn(become, k, node=b)
    assert clone.node == b
    assert node_call(here, clone, "who") == (clone, b, 11)
    assert node_call(here, clone, "incr") == 12
    assert node_call(here, original, "who") == (original, here.ref, 11)

    # A clone of the remote clone, back here: state and code travel both ways.
    back = here.spawn(become, node_call(here, clone, "clone"))
    assert node_call(here, back, "who") == (back, here.ref, 12)


def test_migrate_task_continues_on_another_node_with_a_new_pid(cluster):
    here, start = cluster
    b = here.connect(*start().ref.address)
    to = here.spawn_on(b, landing)
    pid = here.spawn(traveller, here.pid, to)
    assert here.receive(("before", ...), timeout=10) == ("before", pid, here.ref)
    ref = here.monitor(pid)
    here.send(pid, "go")
    _, new_pid, where, steps = here.receive(("after", ...), timeout=10)
    assert where == b and new_pid.node == b and new_pid != pid
    assert steps == ["started", "landed"]
    assert here.receive(Down, timeout=10) == Down(ref, pid, "normal")  # it halted here


def node_call(node, pid, msg):
    return node.call(pid, msg, timeout=10)
