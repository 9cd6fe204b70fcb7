"""Code a node cannot load: the error reaches whoever waits, at once, and says what to do.

Each test writes a helper module into a temporary folder that only this test
process has on its path (as a job script's neighbour module would be), so the
node processes cannot import it.
"""

import concurrent.futures
import importlib
import sys
import time
import uuid

import pytest

import termite
from termite.executor import CLUSTER_ENVIRONMENT
from termite.testing import echo

#: Seconds within which "at once" must happen: far below any timeout the test gives.
AT_ONCE = 4.0

HELPER = '''
class Thing:
    value = 7

def square(x):
    return x * x

async def body():
    pass
'''


@pytest.fixture
def helper(tmp_path, monkeypatch):
    """A module this process can import and the nodes cannot: a fresh name per test."""
    name = f"helper_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(HELPER)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module(name)
    yield module
    sys.modules.pop(name, None)


@pytest.fixture
def b(cluster):
    here, start = cluster
    node = start()
    here.connect(*node.ref.address)
    return here, node


def says_what_to_do(text: str, module: str, obj: str) -> None:
    assert f"{module}.{obj}" in text, text
    assert f"No module named '{module}'" in text, text
    assert f"ship=['{module}']" in text and "install it on every node" in text, text


def test_a_thunk_of_a_module_the_node_cannot_import_fails_at_once_naming_it(b, helper):
    here, _ = b
    name = helper.__name__
    start = time.monotonic()
    with termite.Executor(node=here) as pool:
        future = pool.submit(helper.square, 3)
        with pytest.raises(termite.UnreadableMessage) as raised:
            future.result(timeout=10)
        says_what_to_do(str(raised.value), name, "square")
        with pytest.raises(termite.UnreadableMessage, match=f"{name}.square"):
            list(pool.map(helper.square, range(4), chunksize=2))
        thing = helper.Thing()  # a global the lambda uses, whose class cannot travel
        with pytest.raises(termite.UnreadableMessage) as raised:
            pool.submit(lambda: thing.value).result(timeout=10)
        says_what_to_do(str(raised.value), name, "Thing")
        with pytest.raises(termite.UnreadableMessage, match=f"{name}.Thing"):
            pool.submit(repr, thing).result(timeout=10)  # an argument that cannot be unpickled there
        assert pool.submit(abs, -2).result(timeout=10) == 2  # the node and the pool go on
    assert time.monotonic() - start < 2 * AT_ONCE  # leaving the with block too


def test_a_remote_spawn_of_a_module_the_node_cannot_import_fires_its_link_and_monitor_with_why(b, helper):
    here, node = b
    name = helper.__name__
    start = time.monotonic()
    linked = here.spawn_on(node.ref, helper.body, link=True)
    exit = here.receive(termite.Exit, timeout=10)
    assert exit.pid == linked
    says_what_to_do(str(exit.reason), name, "body")
    monitored = here.spawn_on(node.ref, helper.body)
    here.monitor(monitored)
    down = here.receive(termite.Down, timeout=10)
    assert down.pid == monitored
    says_what_to_do(str(down.reason), name, "body")
    assert time.monotonic() - start < AT_ONCE
    assert "dropped a frame" not in node.logged()


def test_a_call_with_a_request_the_node_cannot_unpickle_raises_at_once(b, helper):
    here, node = b
    server = here.spawn_on(node.ref, echo)
    assert here.call(server, "hello", timeout=10) == "hello"
    start = time.monotonic()
    with pytest.raises(termite.UnreadableMessage) as raised:
        here.call(server, ("store", helper.Thing()), timeout=10, default=None)
    assert time.monotonic() - start < AT_ONCE
    says_what_to_do(str(raised.value), helper.__name__, "Thing")
    assert here.call(server, "still here", timeout=10) == "still here"


async def _migrate_to(node, fn, reply_to):
    try:
        await termite.migrate(node, fn)
    except termite.MigrationError as exc:
        termite.send(reply_to, ("refused", str(exc)))


def test_a_migration_to_code_the_target_cannot_load_is_refused_with_why(b, helper):
    here, node = b
    here.spawn(_migrate_to, node.ref, helper.square, here.pid)
    _, text = here.receive(("refused", str), timeout=10)
    assert f"{helper.__name__}.square" in text and "No module named" in text, text


@pytest.fixture
def package(tmp_path, monkeypatch):
    """A package (two modules, one importing the other) only this process can import."""
    name = f"pkg_{uuid.uuid4().hex[:8]}"
    (tmp_path / name).mkdir()
    (tmp_path / name / "__init__.py").write_text("OFFSET = 100\n")
    (tmp_path / name / "work.py").write_text(
        f"from {name} import OFFSET\n\ndef shifted(x):\n    return x + OFFSET\n\n"
        "def fails():\n    raise ValueError('from shipped code')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module(f"{name}.work")
    yield module
    for loaded in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[loaded]


def test_shipped_modules_run_on_nodes_that_do_not_have_them(b, helper, package):
    here, node = b
    top = package.__name__.partition(".")[0]
    with termite.Executor(node=here, ship=[helper.__name__, top]) as pool:
        assert pool.submit(helper.square, 7).result(timeout=10) == 49
        assert list(pool.map(package.shifted, [1, 2], chunksize=1)) == [101, 102]
        with pytest.raises(ValueError, match="from shipped code") as raised:
            pool.submit(package.fails).result(timeout=10)
        assert "raise ValueError('from shipped code')" in raised.value.__cause__.text  # its lines, though the file is not there
    with pytest.raises(ValueError, match="cannot ship module 'sys'"):
        termite.Executor(node=here, ship=["sys"])


async def _ship_and_dispatch(module, x):
    termite.ship(module.__name__)
    return await termite.dispatch(module.square, x)


def test_dispatch_runs_shipped_code_too(b, helper):
    here, _ = b
    assert here.run(_ship_and_dispatch, helper, 5, timeout=20) == 25


def test_an_executor_with_no_cluster_says_how_to_start_one(monkeypatch):
    monkeypatch.delenv(CLUSTER_ENVIRONMENT, raising=False)
    with pytest.raises(ValueError, match="termite-launch cluster.yaml --run"):
        termite.Executor()


def _end_dispatcher():
    termite.kill(termite.start_dispatcher())


def test_calls_that_can_no_longer_be_answered_fail_and_shutdown_returns(b):
    here, _ = b
    pool = termite.Executor(node=here)
    assert pool.submit(abs, -1).result(timeout=10) == 1
    running = pool.submit(time.sleep, 30)  # runs on B; its answer would come through the dispatcher
    start = time.monotonic()
    here.run(_end_dispatcher)
    with pytest.raises(concurrent.futures.BrokenExecutor, match="its dispatcher ended"):
        running.result(timeout=10)
    pool.shutdown()
    assert time.monotonic() - start < AT_ONCE


def test_calls_pending_when_the_executors_node_stops_fail_at_once(cluster, keyfile):
    _, start = cluster
    node = start()
    pool = termite.Executor([node.ref.address], keys=keyfile)
    assert pool.submit(abs, -1).result(timeout=10) == 1
    running = pool.submit(time.sleep, 30)
    begin = time.monotonic()
    pool.node.stop()
    with pytest.raises(concurrent.futures.BrokenExecutor, match="its node stopped"):
        running.result(timeout=10)
    pool.shutdown()
    assert time.monotonic() - begin < AT_ONCE
