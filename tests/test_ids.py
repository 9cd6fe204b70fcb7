import os
import pickle

import termite
from termite import NodeRef, Pid, Tag, make_tag


def test_tags_are_unique_and_equal_by_value():
    a, b = make_tag(), make_tag()
    assert a != b
    assert pickle.loads(pickle.dumps(a)) == a
    assert hash(pickle.loads(pickle.dumps(a))) == hash(a)
    assert isinstance(a, Tag)


def test_pids_equal_by_node_and_serial_and_drop_the_local_cache_when_pickled():
    ref = NodeRef("h", 1, incarnation=7)
    pid = Pid(ref, 3, _proc=object())
    copy = pickle.loads(pickle.dumps(pid))
    assert copy == pid and hash(copy) == hash(pid)
    assert copy._proc is None
    assert Pid(NodeRef("h", 1, incarnation=8), 3) != pid  # a restarted node never reuses pids


def test_node_refs_differ_by_incarnation():
    assert NodeRef.new("h", 1) != NodeRef.new("h", 1)
    assert NodeRef("h", 1) == NodeRef("h", 1)  # no incarnation: an address, not a node
    assert str(NodeRef("h", 1)) == "h:1"


def test_a_forked_child_draws_new_tags():
    read, write = os.pipe()
    parent_tag = make_tag()
    child = os.fork()
    if child == 0:
        os.write(write, pickle.dumps(make_tag()))
        os._exit(0)
    os.waitpid(child, 0)
    child_tag = pickle.loads(os.read(read, 4096))
    assert child_tag[0] != parent_tag[0]


def test_pid_send_is_send():
    async def main():
        termite.self().send("hi")
        return await termite.receive(timeout=1)

    assert termite.run(main) == "hi"


def test_a_crash_travels_with_its_exception_when_it_can():
    import threading

    from termite import Crash

    plain = Crash.from_exception(ValueError("v"))
    copy = pickle.loads(pickle.dumps(plain))
    assert copy == plain and isinstance(copy.exception, ValueError)

    class Unpicklable(Exception):
        def __init__(self):
            super().__init__("holds a lock")
            self.lock = threading.Lock()

    try:
        raise Unpicklable()
    except Unpicklable as exc:
        crash = Crash.from_exception(exc)
    copy = pickle.loads(pickle.dumps(crash))
    assert copy.exception is None
    assert "Unpicklable" in copy.traceback and str(copy).endswith("holds a lock")
