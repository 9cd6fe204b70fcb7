"""Following a job from the client: progress bars (termite/progress_bars.py), repr(Executor), .gitignore.

Bars are checked where users see them: a client script run under a real
terminal (``script`` gives it a pty) and under a pipe, against real nodes.
"""

import concurrent.futures
import contextlib
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import termite
NODECODE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nodecode")  # what the nodes import

ROOT = Path(__file__).resolve().parent.parent
JOB = Path(__file__).resolve().parent / "progress_job.py"
CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # CSI sequences: colours, cursor moves, erasing
from termite import progress_bars as PROGRESS


@pytest.fixture
def two(cluster):
    """This node and two node processes B and C, connected."""
    here, start = cluster
    b, c = start(), start()
    for node in (b, c):
        here.connect(*node.ref.address)
    return here, b, c


def _address(node) -> str:
    host, port = node.ref.address
    return f"{host}:{port}"


def _job_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), NODECODE, *filter(None, [env.get("PYTHONPATH")])])
    env.update(TERM="xterm-256color", COLUMNS="110", LINES="30", PYTHONUNBUFFERED="1")
    return env


def _run_job(mode: str, keyfile: str, nodes, terminal: bool) -> tuple[str, str]:
    """Run tests/progress_job.py; (everything it wrote raw, the same without control codes)."""
    args = [sys.executable, str(JOB), mode, keyfile, *map(_address, nodes)]
    if terminal:  # script(1) runs it on a pty: stdout and stderr are a real terminal
        args = ["script", "-qfec", shlex.join(args), "/dev/null"]
    done = subprocess.run(args, capture_output=True, env=_job_env(), stdin=subprocess.DEVNULL, timeout=90)
    raw = done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")
    assert done.returncode == 0, raw[-3000:]
    return raw, CONTROL.sub("", raw)


JOBS = {  # mode -> the bar's label, its total, its failures
    "map": ("spin", 40, 0),
    "progress": ("submitted", 30, 1),
    "as_completed": ("in order of finishing", 30, 0),
}


@pytest.mark.skipif(not shutil.which("script"), reason="script (util-linux) is not installed")
@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", sorted(JOBS))
def test_a_job_in_a_terminal_draws_a_live_bar_that_reaches_its_total(two, keyfile, mode):
    _, b, c = two
    label, total, failures = JOBS[mode]
    raw, text = _run_job(mode, keyfile, [b, c], terminal=True)
    assert "job done" in text
    assert "\x1b[2K" in raw, "no live redraw (erase line) in the terminal's output"
    final = [line for line in text.replace("\r", "\n").splitlines() if label in line and f"{total}/{total}" in line]
    assert final, f"the bar never showed {total}/{total}:\n{text[-2000:]}"
    assert f"{failures} failed" in final[-1], final[-1]
    assert f"{total}/{total} done," not in text, "a terminal got the plain lines meant for pipes"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", sorted(JOBS))
def test_a_job_under_a_pipe_writes_plain_lines_without_control_codes(two, keyfile, mode):
    _, b, c = two
    label, total, failures = JOBS[mode]
    raw, _ = _run_job(mode, keyfile, [b, c], terminal=False)
    assert "\x1b" not in raw and "\r" not in raw, repr(raw[-2000:])
    assert re.search(rf"^{re.escape(label)}: {total}/{total} done, {failures} failed, [0-9.]+ s$", raw, re.M), raw
    assert "job done" in raw


TWO_BARS = """
import concurrent.futures, sys
from termite.progress_bars import as_completed
first, second = [concurrent.futures.Future() for _ in range(3)], [concurrent.futures.Future() for _ in range(2)]
first_done, second_done = as_completed(first, progress="first"), as_completed(second, progress="second")
for future in first:
    future.set_result(1)
assert len(list(first_done)) == 3
for future in second:
    future.set_exception(ValueError("no"))
assert len(list(second_done)) == 2
print("both over")
"""


@pytest.mark.skipif(not shutil.which("script"), reason="script (util-linux) is not installed")
def test_bars_of_jobs_at_once_share_one_display_each_row_ending_with_its_own_counts(tmp_path):
    program = tmp_path / "two_bars.py"
    program.write_text(TWO_BARS)
    command = shlex.join([sys.executable, str(program)])
    done = subprocess.run(
        ["script", "-qfec", command, "/dev/null"], capture_output=True, env=_job_env(), stdin=subprocess.DEVNULL,
        timeout=50,
    )
    text = CONTROL.sub("", done.stdout.decode(errors="replace"))
    assert done.returncode == 0, text
    frames = [line for line in text.replace("\r", "\n").splitlines() if line.strip()]
    assert frames[-1] == "both over", frames
    last_first, last_second = frames[-3], frames[-2]  # the display's last frame: both rows
    assert last_first.startswith("first") and "3/3" in last_first and "0 failed" in last_first, frames
    assert last_second.startswith("second") and "2/2" in last_second and "2 failed" in last_second, frames


@contextlib.contextmanager
def _stderr_to_a_pipe(monkeypatch):
    """sys.stderr is a real pipe (not a terminal): yields its other end, to read the bar's lines as they come."""
    read_fd, write_fd = os.pipe()
    writer = os.fdopen(write_fd, "w", buffering=1)
    reader = os.fdopen(read_fd, "r")
    monkeypatch.setattr(sys, "stderr", writer)
    try:
        yield reader
    finally:
        monkeypatch.undo()
        writer.close()
        reader.close()


def _read_until(reader, text: str, limit: int = 10_000) -> list[str]:
    """Lines read up to the first holding ``text`` (blocking: each line is an event)."""
    lines = []
    for _ in range(limit):
        lines.append(reader.readline())
        assert lines[-1], f"the pipe closed before {text!r}: {lines[-5:]}"
        if text in lines[-1]:
            return lines
    raise AssertionError(f"{text!r} not in {limit} lines: {lines[-5:]}")


def test_plain_lines_come_every_few_seconds_while_the_futures_finish(monkeypatch):
    monkeypatch.setattr(PROGRESS, "PLAIN_EVERY", 0.02)
    futures = [concurrent.futures.Future() for _ in range(3)]
    with _stderr_to_a_pipe(monkeypatch) as reader, concurrent.futures.ThreadPoolExecutor(1) as waiting:
        returned = waiting.submit(termite.progress, futures, description="job")
        lines = _read_until(reader, "job: 0/3 done, 0 failed")
        futures[0].set_result(1)
        futures[1].set_exception(ValueError("one fails"))
        lines += _read_until(reader, "job: 2/3 done, 1 failed")
        assert not returned.done()
        futures[2].set_result(3)
        lines += _read_until(reader, "job: 3/3 done, 1 failed")
        assert returned.result(10) is None  # failures are counted, not raised
    assert not any("\x1b" in line or "\r" in line for line in lines)


def test_a_map_bar_follows_the_calls_not_the_caller_and_keeps_order_and_failures(two, monkeypatch):
    here, _, _ = two
    with termite.Executor(node=here) as pool, _stderr_to_a_pipe(monkeypatch) as reader:
        results = pool.map(abs, range(-20, 0), chunksize=3, progress=True)
        # Not one result taken yet: the bar still ends when the last call does.
        assert _read_until(reader, "abs: 20/20 done, 0 failed")
        assert list(results) == list(range(20, 0, -1))
        with pytest.raises(ZeroDivisionError):
            list(pool.map(lambda x: 1 / x, [1, 2, 0, 4], chunksize=2, progress="inverses"))
        assert _read_until(reader, "inverses: 4/4 done, 1 failed")
        assert list(pool.map(abs, [], progress=True)) == []  # nothing to follow: no bar
        abandoned = pool.map(abs, range(5), progress="abandoned", timeout=30)
        assert next(abandoned) == 0
        abandoned.close()  # the caller gave up: the bar ends with what was done
        assert _read_until(reader, "abandoned: ")


async def _futures_here():
    return [termite.future(pow, 2, n) for n in range(5)] + [termite.future(int, "not a number")]


def test_progress_follows_termite_futures_from_a_node(monkeypatch):
    with termite.Node() as node, _stderr_to_a_pipe(monkeypatch) as reader:
        pids = node.run(_futures_here)
        termite.progress(pids, node=node, description="futures", timeout=30)
        assert _read_until(reader, "futures: 6/6 done, 1 failed")
        with pytest.raises(TypeError, match="node="):
            termite.progress(pids)
        with pytest.raises(RuntimeError, match="not from a termite process"):
            node.run(termite.progress, [concurrent.futures.Future()])


def test_progress_says_what_it_takes_and_times_out():
    with pytest.raises(TypeError, match="concurrent.futures.Future objects"):
        termite.progress([1, 2, 3])
    with pytest.raises(TypeError, match="concurrent.futures.Future objects"):
        termite.progress(42)
    with pytest.raises(TypeError, match=r"for termite futures \(pids\) use termite.progress"):
        PROGRESS.as_completed([termite.Pid(termite.NodeRef("127.0.0.1", 1, 1), 1)], progress=True)
    waiting = concurrent.futures.Future()
    with pytest.raises(TimeoutError, match="1 of 1 futures were not done after 0.05 s"):
        termite.progress(waiting, timeout=0.05)
    termite.progress([])  # nothing to wait for


def test_as_completed_yields_in_the_order_futures_finish(capsys):
    futures = [concurrent.futures.Future() for _ in range(3)]
    order = iter(futures[::-1])
    next(order).set_result("last first")
    seen = []
    for future in PROGRESS.as_completed(futures, progress="reversed"):
        seen.append(future)
        following = next(order, None)
        if following is not None:
            following.set_result("next")
    assert seen == futures[::-1]
    assert "reversed: 3/3 done, 0 failed" in capsys.readouterr().err


# -- repr(Executor) ---------------------------------------------------------------


def test_repr_says_where_it_is_connected_how_many_nodes_and_calls(two, keyfile):
    from holding import hold  # a call that runs until the test closes its connection

    here, b, c = two
    where = f"{_address(b)} (+1 more)"
    pool = termite.Executor([_address(b), _address(c)], keys=keyfile, window=1)
    try:
        assert repr(pool) == f"<termite.Executor connected to {where}, 2 nodes, no tasks>"
        with socket.create_server(("127.0.0.1", 0)) as listener, contextlib.ExitStack() as held:
            listener.settimeout(30)
            futures = [pool.submit(hold, listener.getsockname()[1]) for _ in range(3)]
            first, second = (held.enter_context(listener.accept()[0]) for _ in range(2))
            # Two calls run, one on each node (window=1: one at a time each); the third waits.
            assert repr(pool) == f"<termite.Executor connected to {where}, 2 nodes, 2 tasks running, 1 waiting>"
            first.close(), second.close()
            held.enter_context(listener.accept()[0]).close()  # the third runs once a node has room
            assert {future.result(30) for future in futures} <= {b.pid, c.pid}
        assert repr(pool) == f"<termite.Executor connected to {where}, 2 nodes, no tasks>"
    finally:
        pool.shutdown()
    assert repr(pool) == f"<termite.Executor for {where}, shut down>"


def test_repr_of_an_executor_on_a_node_with_no_other_node(keyfile):
    with termite.Node(port=0, keys=keyfile) as lonely:
        home = "%s:%d" % lonely.ref.address
        with termite.Executor(node=lonely) as pool:
            assert repr(pool) == f"<termite.Executor on node {home}, not connected: waiting for a node, no tasks>"
            waiting = pool.submit(abs, -1)
            assert repr(pool) == f"<termite.Executor on node {home}, not connected: waiting for a node, 1 task waiting>"
            pool.shutdown(wait=False)
            with pytest.raises(concurrent.futures.BrokenExecutor):
                waiting.result(30)
        assert repr(pool) == f"<termite.Executor on node {home}, shut down>"
    with termite.Executor(include_self=True) as alone:
        assert re.fullmatch(r"<termite.Executor on node [0-9.]+:\d+, this process only, no tasks>", repr(alone))
        assert alone.submit(abs, -3).result(30) == 3
    with termite.Node() as no_network, termite.Executor(node=no_network) as here:
        assert re.fullmatch(r"<termite.Executor on node \S+, this process only, no tasks>", repr(here)), repr(here)
        assert here.submit(abs, -4).result(30) == 4


def test_gitignore_covers_virtual_environments():
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    for path in (".venv", ".venv/lib/site.py", "venv/bin/python"):
        ignored = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT, timeout=30)
        assert ignored.returncode == 0, f"{path} is not ignored by .gitignore"
