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


def _tag_behaviour(cls) -> list:
    """What a program can see of a Tag class: values, errors, pickling, matching, subclassing, churn."""
    import copy
    import gc

    seen = []
    tag = cls((0xABC, 5))
    seen += [repr(tag), tag == (0xABC, 5), hash(tag) == hash((0xABC, 5)), isinstance(tag, tuple), len(tag)]
    seen += [tag.__reduce__()[1], type(tag.__reduce__()[0]) is type, cls.__name__, cls.__doc__.split("\n")[0]]
    seen += [gc.is_tracked(tag), tag.count(5), tag + (1,), tag[::-1], hash(tag) == hash(cls((0xABC, 5)))]
    for odd in [(), (1,), (1, 2, 3), ("a", "b"), (1.5, 2), (-10, 3)]:
        try:
            seen.append((len(cls(odd)), repr(cls(odd))))
        except Exception as exc:
            seen.append((type(exc).__name__, str(exc)))
    seen += [cls(x for x in (7, 8)) == (7, 8), cls([7, 8]) == (7, 8)]
    try:
        cls(5)
    except TypeError as exc:
        seen.append(str(exc))
    for copied in (pickle.loads(pickle.dumps(tag)), copy.copy(tag), copy.deepcopy(tag)):
        seen.append((type(copied).__name__, copied == tag))  # ids.Tag by name: the C one, while it runs
    match tag:
        case cls(whole):  # a tuple's subclass matches itself as its one positional sub-pattern
            seen.append(("matched", whole is tag))

    class Sub(cls):
        pass

    sub = Sub((1, 2))
    seen += [repr(sub), type(sub).__name__, sub == (1, 2), type(sub.__reduce__()[0]) is type]
    del sub
    kept = [cls((i, i + 1)) for i in range(200)]  # more than the C type keeps spare
    del kept[::2]
    again = [cls((i, -i)) for i in range(200)]
    seen += [sorted(kept)[:2], again[:2] == [(0, 0), (1, -1)], all(type(t) is cls for t in again)]
    seen.append(cls.__dict__.get("__slots__", ()) == () and not hasattr(tag, "__dict__"))
    return seen


def test_the_c_tag_behaves_as_the_python_tag():
    """ids.Tag is the C kernel's when it runs: everything a program can see of it is the Python class's."""
    from termite._core import ids

    if ids.Tag is ids.PythonTag:
        import pytest

        pytest.skip("the Python kernel runs: its Tag is the Python class")
    assert _tag_behaviour(ids.Tag) == _tag_behaviour(ids.PythonTag)
    assert type(make_tag()) is ids.Tag and pickle.loads(pickle.dumps(make_tag())).__class__ is ids.Tag
