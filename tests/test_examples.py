"""The paper's examples in examples/: each runs as a script and prints what the paper shows.

Each script runs in a subprocess, from the repository root, as a newcomer would
run it; the import tests then call the examples' functions directly.
"""

import ast
import importlib.util
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import termite

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SCRIPTS = sorted(p.stem for p in EXAMPLES.glob("*.py"))
JOBS = {"pi", "balance"}  # jobs for a cluster (termite-launch --run), not the paper's examples
TOOLS = {"timers", "pg", "multicall", "file_proxy", "introspection"}  # Erlang's everyday tools (issue 19), not the paper's examples
PAPER = [n for n in SCRIPTS if n != "tour" and n not in JOBS and n not in TOOLS]


def run_script(name, cwd=ROOT, script_dir=EXAMPLES):
    """Run examples/NAME.py as `python examples/NAME.py` does; return the finished process."""
    path = script_dir / f"{name}.py"
    return subprocess.run(
        [sys.executable, str(path.relative_to(cwd) if path.is_relative_to(cwd) else path)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
    )


def output_of(name):
    """The stdout lines of a script that must succeed."""
    done = run_script(name)
    assert done.returncode == 0, f"examples/{name}.py failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout.splitlines()


def load(name):
    """Import examples/NAME.py as a module (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- every example --------------------------------------------------------------


def test_the_examples_are_there():
    expected = {
        "hello", "pong_server", "selective", "pattern_pong", "timeouts", "rpc",
        "cell", "exceptions", "square_server", "futures", "migration", "continuations", "tour",
        "kv_server",
        "supervisor",
    }
    assert expected <= set(SCRIPTS)


@pytest.mark.parametrize("name", PAPER)
def test_example_says_where_it_comes_from(name):
    tree = ast.parse((EXAMPLES / f"{name}.py").read_text(encoding="utf-8"))
    doc = ast.get_docstring(tree)
    assert doc, f"examples/{name}.py has no module docstring"
    assert "section" in doc or "slides" in doc, "the docstring names the paper's section or the slides"
    assert "(" in doc.split("\n\n", 1)[1], "the docstring quotes the Scheme original"
    mains = [n.name for n in tree.body if isinstance(n, ast.AsyncFunctionDef)]
    assert "main" in mains, f"examples/{name}.py defines no `async def main()`"


def test_the_tour_runs_every_example():
    tour = load("tour")
    assert sorted(tour.EXAMPLES) == PAPER


# -- 2.2 hello world --------------------------------------------------------------


def test_hello():
    assert output_of("hello") == ["Hello, world!"]


# -- 4.1 and 4.3 pong servers -------------------------------------------------------


def test_pong_server():
    assert output_of("pong_server") == ["pong"]


def test_pattern_pong():
    assert output_of("pattern_pong") == ["pong"]


@pytest.mark.parametrize("name, server", [("pong_server", "pong_server"), ("pattern_pong", "better_pong_server")])
def test_pong_servers_answer_pings_only(name, server):
    body = getattr(load(name), server)
    with termite.Node() as node:
        pid = node.spawn(body)
        node.send(pid, (node.pid, "ping"))
        assert node.receive(timeout=5) == "pong"
        for junk in ["ping", (node.pid, "pong"), (node.pid, "ping", 1), ("not a pid", "ping"), [node.pid, "ping"]]:
            node.send(pid, junk)
        node.send(pid, (node.pid, "ping"))
        assert node.receive(timeout=5) == "pong"
        # The server handles its messages in order: a reply to any junk would be here by now.
        assert node.receive(timeout=0, default=None) is None


# -- 4.2 selective retrieval -------------------------------------------------------------


def test_selective():
    assert output_of("selective") == [
        "receive()    => 1",
        "receive(odd) => 3",
        "receive()    => 2",
    ]


def test_selective_main_returns_1_3_2(capsys):
    assert termite.run(load("selective").main) == [1, 3, 2]


# -- 4.4 timeouts -------------------------------------------------------------------


def test_timeouts():
    assert output_of("timeouts") == [
        "receive(timeout=0.1) raised termite.Timeout",
        "receive(timeout=0.1, default='no reply') => 'no reply'",
        "after form, server answers => 42",
        "after form, server silent  => timeout",
    ]


def test_timeouts_after_form_takes_the_answer():
    timeouts = load("timeouts")

    async def main():
        return await timeouts.ask(termite.spawn(timeouts.some_server), 5)

    assert termite.run(main) == 10


# -- 4.5 RPC --------------------------------------------------------------------------


def test_rpc():
    assert output_of("rpc") == [
        "make_tag, send, receive((tag, ANY)) => 42",
        "call(server, ('add', 21, 21))       => 42",
    ]


def test_rpc_server_adds():
    rpc = load("rpc")

    async def main():
        server = termite.spawn(rpc.rpc_server)
        return await rpc.by_hand(server), await termite.call(server, ("add", 2, 3), timeout=5)

    assert termite.run(main) == (42, 5)


# -- 4.6 cell -----------------------------------------------------------------------------


def test_cell():
    assert output_of("cell") == [
        "cell_ref(cell)           => 0",
        "after cell_set(cell, 42) => 42",
    ]


def test_cells_hold_their_own_values():
    cell = load("cell")

    async def main():
        a, b = cell.make_cell("a"), cell.make_cell("b")
        seen = [await cell.cell_ref(a), await cell.cell_ref(b)]
        cell.cell_set(a, 1)
        cell.cell_set(a, 2)
        seen += [await cell.cell_ref(a), await cell.cell_ref(b)]
        return seen

    assert termite.run(main) == ["a", "b", 2, "b"]


# -- 4.7 exceptions ------------------------------------------------------------------------


def test_exceptions():
    done = run_script("exceptions")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1:4] == [
        "catch, raise 42                 => 42",
        "spawn a crash, (? 1 'ok)        => False",
        "spawn(link=True) a crash        => True",
    ]
    last = done.stdout.splitlines()[4]
    assert last.startswith("trap_exit(True), then receive() => Exit(pid=<Pid ")
    assert last.endswith("reason=Crash(RuntimeError: error))")
    assert "RuntimeError: error" in done.stderr  # the crash is logged, not lost


def test_catch_form_resumes_where_the_handler_was_installed():
    assert load("exceptions").catch_42() == 42


@pytest.mark.parametrize("link, caught", [(False, False), (True, True)])
def test_a_crash_reaches_the_parent_only_through_a_link(link, caught):
    assert termite.run(load("exceptions").catch_crash, link) is caught


def test_trap_exit_turns_the_crash_into_a_message():
    msg = termite.run(load("exceptions").trapped)
    assert isinstance(msg, termite.Exit)
    assert isinstance(msg.reason, termite.Crash)
    assert (msg.reason.exc_type, msg.reason.message) == ("RuntimeError", "error")


# -- the slides: square server and futures ---------------------------------------------------


def test_square_server():
    assert output_of("square_server") == [
        "plain (from, x)       => 25",
        "with tags, 6 then 5   => 36 25",
        "call(server, 5)       => 25",
    ]


def test_futures():
    lines = output_of("futures")
    # Both futures start before either is done: they run concurrently.
    assert lines[:4] == ["a: started", "b: started", "a: done", "b: done"]
    assert lines[4] == "touch(a) + touch(b) => 25"


def test_a_future_computes_once_and_answers_every_touch():
    futures = load("futures")
    calls = []

    def thunk():
        calls.append(1)
        return 6 * 7

    async def main():
        f = futures.future(thunk)
        return [await futures.touch(f) for _ in range(3)]

    assert termite.run(main) == [42, 42, 42]
    assert calls == [1]


# -- the tour ----------------------------------------------------------------------------------


def test_tour():
    lines = output_of("tour")
    tour = load("tour")
    headers = [line for line in lines if line.startswith("== examples/")]
    assert [h.split(".py")[0].removeprefix("== examples/") for h in headers] == tour.EXAMPLES
    for key in ["Hello, world!", "pong", "receive(odd) => 3", "call(server, ('add', 21, 21))       => 42",
                "spawn(link=True) a crash        => True", "touch(a) + touch(b) => 25"]:
        assert key in lines
    assert lines[-1].startswith(f"{len(tour.EXAMPLES)} of {len(tour.EXAMPLES)} examples ran in ")


def test_tour_reports_a_failing_example(tmp_path):
    for path in EXAMPLES.glob("*.py"):
        shutil.copy(path, tmp_path)
    (tmp_path / "rpc.py").write_text('raise RuntimeError("broken on purpose")\n', encoding="utf-8")
    done = run_script("tour", cwd=tmp_path, script_dir=tmp_path)
    assert done.returncode == 1
    assert "broken on purpose" in done.stderr
    assert done.stdout.splitlines()[-1].endswith("Failed: rpc")
    assert "touch(a) + touch(b) => 25" in done.stdout  # the tour went on after the failure


# -- 4.8 and 4.9 migration ---------------------------------------------------------


def test_migration_moves_node1_node2_node1_and_spawns_remotely():
    assert output_of("migration") == [
        "(!? migrating 'where) as it moves => node1 -> node2 -> node1",
        "spawn, migrate, (! me 'boo)        => ('boo', 'node2')",
        "spawn-link, migrate, raise         => error",
    ]


# -- 4.10 continuations: cloning, code update; the slides' migrate-task -----------------


def test_continuations_clone_update_and_migrate_task():
    assert output_of("continuations") == [
        "4.10 process cloning",
        "(!? original 'incr) twice       => 2",
        "(!? clone 'incr)                => 3 (the original's 2, copied)",
        "(!? clone 'incr)                => 4",
        "(!? original 'incr)             => 3 (independent from then on)",
        "the clone is a new process      => True",
        "4.10 dynamic code update",
        "(!? server 'ping)               => gnop",
        "after ('update, k), ping        => pong",
        "the server kept its pid         => True",
        "the slides' migrate-task",
        "migrate_task(to): from, to      => node1 -> node2 ['node1', 'node2']",
        "the task ended on node1         => normal",
        "same pid after migrate_task     => False (migrate(node) keeps it)",
    ]


# -- 5.2 the generic server: a key/value server ------------------------------------


def test_kv_server():
    assert output_of("kv_server") == [
        "Key-Value server starting",
        "kv_store(server, 'apple', 3) => ok",
        "kv_store(server, 'pear', 5)  => ok",
        "kv_lookup(server, 'apple')   => 3",
        "kv_lookup(server, 'pear')    => 5",
        "Key-Value server terminating",
        "kv_stop(server), then Down   => normal",
    ]


def test_kv_server_answers_a_plain_thread(node):
    kv = load("kv_server")
    server = node.run(lambda: termite.gen_server.start(kv.KeyValue()))
    assert node.call(server, ("store", "k", [1, 2]), timeout=5) == "ok"
    assert node.call(server, ("lookup", "k"), timeout=5) == [1, 2]
    assert node.call(server, ("lookup", "missing"), timeout=5) is None


# -- 5.3 fault tolerance: the transparent supervisor ---------------------------------


def test_supervisor_prints_the_trace_of_section_5_3():
    done = run_script("supervisor")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "(info: starting up supervised process)",
        "pong",
        "(info: process failed)",
        "(info: restarting...)",
        "(info: starting up supervised process)",
        "crashed",
        "pong",
        "(info: had to terminate the process)",
        "(info: halting supervisor)",
    ]
    assert "ZeroDivisionError" in done.stderr  # the worker's crash is logged, not lost


def test_the_supervised_pong_server_answers_through_its_supervisor():
    example = load("supervisor")

    async def main():
        server = termite.spawn_thunk_supervised(example.start_pong_server, shutdown=0.1)
        answers = [await example.ping(server), await example.crash(server), await example.ping(server)]
        watch = termite.monitor(server)
        example.kill(server)
        return answers, await termite.receive(termite.Down(watch, server, termite.ANY), timeout=5)

    answers, down = termite.run(main)
    assert answers == ["pong", "crashed", "pong"]
    assert down.reason == "normal"


# -- Erlang's everyday tools --------------------------------------------------------


def test_timers():
    assert output_of("timers") == [
        "3 ticks, deadline 5 s    => done, 3 steps; cancel_timer(deadline) => 5 s left",
        "50 ticks, deadline 0.1 s => the deadline came first",
        "kill_after(0.05, stuck)  => killed",
    ]


def test_pg_workers_on_two_nodes_one_migrates_one_stops():
    assert output_of("pg") == [
        "node1 sees 4 workers; they answer from node1, node1, node2, node2",
        "a worker moved to node2: still a member: True; on node1 now: 1",
        "it stopped: leave event, 3 members left",
    ]


# -- jobs ---------------------------------------------------------------------------


def test_pi_on_two_nodes_of_its_own():
    done = subprocess.run(
        [sys.executable, "examples/pi.py", "8"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    [line] = done.stdout.splitlines()
    assert line.startswith("pi is about 3.1") and "8 tasks of 1,000,000 darts" in line


def test_balance_spreads_twenty_workers_from_one_node_and_fails_them_over():
    started = time.monotonic()
    done = subprocess.run([sys.executable, "examples/balance.py"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    before, after, killed, failover = lines
    first, second = (after.split(": ", 1)[1]).split(", ")
    assert before.startswith("before: ") and before.endswith(" 20") and "," not in before
    assert after.startswith("after ") and " moves" in after
    counts = [int(first.split()[1]), int(second.split()[1])]
    assert sum(counts) == 20 and abs(counts[0] - counts[1]) <= 2, after
    assert killed.startswith("killed ")
    assert failover.startswith("after the failover: ") and failover.endswith(" 20") and "," not in failover
    assert killed.split()[1].rstrip(",") not in failover, "the workers came back on the killed node"
    assert time.monotonic() - started < 60


# -- Erlang's everyday tools ----------------------------------------------------------


def test_multicall_gets_replies_from_the_nodes_with_the_server_and_names_the_other():
    assert output_of("multicall") == [
        "abcast ('add', 5), multi_call 'get' => node1: 5, node2: 5",
        "bad nodes                          => node3",
    ]


def test_file_proxy_writes_from_both_nodes_to_the_file_that_stayed_home():
    assert output_of("file_proxy") == [
        "node1's stdout, from a process on node2",
        "the file, written before and after the move => node1 then node2",
        "its proxy stayed on                         => node1",
        "a plain open file refuses to move; use      => termite.io.open_file(path, mode) is that process for a file",
    ]


def test_introspection():
    lines = output_of("introspection")
    assert lines[:2] == ["processes here: 2", "counter is receiving: receive((Pid, 'add', int), (Pid, 'total'))"]
    assert lines[2].startswith("  at introspection.py:20, 0 waiting, ~"), lines[2]  # the line of its receive
    assert lines[3:] == [
        "total: 6",
        "  trace: received ('add', 1)",
        "  trace: received ('add', 2)",
        "  trace: received ('add', 3)",
        "  trace: received ('total',)",
        "  trace: sent     6",
        "  trace: exit     'normal'",
        "processes here: 1",
    ]
