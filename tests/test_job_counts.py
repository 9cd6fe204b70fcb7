"""Thunks counted where they run (each node's runner), carried in its load reports, shown per node by the dashboard.

Real nodes, a real Executor: what the meters report is what the dashboard and
``--status``'s plain lines show, with totals.
"""

import io
import time

from rich.console import Console

import termite
from termite import Load
from termite_launcher.dashboard import ClusterView


def text(view, at, width=160):
    console = Console(width=width, record=True, color_system=None, force_terminal=False, file=io.StringIO())
    console.print(view.renderable(at))
    return console.export_text()


def line_of(rendered, needle):
    lines = [line for line in rendered.splitlines() if needle in line and not line.startswith(("│", "╭", "╰", "↳"))]
    assert len(lines) == 1, (needle, rendered)
    return lines[0].split()


def test_each_node_counts_the_thunks_it_was_sent_finished_and_failed(cluster):
    here, start = cluster
    b, c = start(), start()
    for node in (b, c):
        here.connect(*node.ref.address)
    view = ClusterView("real", suspect_after=5, unresponsive_after=10)
    for node in (b, c):
        view.expect(node.ref, "local", node.pid, at=time.monotonic())
    with termite.Executor(node=here, interval=0.1) as pool:
        # one call in ten raises ValueError on its node: int("x")
        futures = [pool.submit(int, "x" if i % 10 == 0 else str(i)) for i in range(100)]
        failed = sum(future.exception(timeout=30) is not None for future in futures)
    assert failed == 10
    loads = {node.ref: here.run(termite.node_load, node.ref) for node in (b, c)}  # what --status asks
    assert sum(load.thunks_received for load in loads.values()) == 100
    assert sum(load.thunks_done for load in loads.values()) == 100
    assert sum(load.thunks_failed for load in loads.values()) == 10
    for load in loads.values():
        assert load.thunks_failed <= load.thunks_done == load.thunks_received
        view.report(load, at=time.monotonic())

    rendered = text(view, at=time.monotonic())
    header = rendered.splitlines()[2].split()
    done_at, failed_at = header.index("done/all"), header.index("failed")
    for node in (b, c):
        load = loads[node.ref]
        cells = line_of(rendered, str(node.ref))
        assert cells[2:4] == [str(node.pid), "up"]
        # the row has no history column's word yet when the history is one cell: count from the right
        assert cells[done_at - len(header)] == f"{load.thunks_done}/{load.thunks_received}"
        assert cells[failed_at - len(header)] == str(load.thunks_failed)
    total = line_of(rendered, "total")
    assert "100/100" in total and "10" in total
    plain = view.plain_lines(time.monotonic())
    assert plain[-1].split()[-5:-2] == ["thunks_done=100", "thunks_sent=100", "thunks_failed=10"]
    for node in (b, c):
        line = next(line for line in plain if str(node.ref) in line).split()
        assert f"thunks_failed={loads[node.ref].thunks_failed}" in line


def test_a_job_of_thunks_reads_as_thunks_per_second_not_zero(cluster):
    """Executor tasks move as few frames (a chunk, a reply); the thunks per second show the job running."""
    here, start = cluster
    b, c = start(), start()
    view = ClusterView("real", suspect_after=5, unresponsive_after=10)
    for node in (b, c):
        here.connect(*node.ref.address)
        view.expect(node.ref, "local", node.pid, at=time.monotonic())
        here.send(termite.Pid(node.ref, 1), ("subscribe", here.pid, 0.1))
    with termite.Executor(node=here, interval=0.1) as pool:
        job = pool.map(time.sleep, [0.02] * 150, chunksize=10)  # about 1.5 s over two nodes
        busiest = {}
        deadline = time.monotonic() + 30
        while len(busiest) < 2 or min(busiest.values()) <= 0:
            assert time.monotonic() < deadline, busiest
            msg = here.receive(("load", Load), timeout=1, default=None)
            if msg is None:
                continue
            view.report(msg[1], time.monotonic())
            for row in view.rows():
                if row.thunks_rate:
                    busiest[row.ref] = max(busiest.get(row.ref, 0.0), row.thunks_rate)
                    rendered = text(view, at=time.monotonic())
                    header = rendered.splitlines()[2].split()
                    assert float(line_of(rendered, row.node)[header.index("/s") - len(header)]) > 0
        list(job)
    assert set(busiest) == {b.ref, c.ref}
    assert 1 < sum(busiest.values()) < 500  # about 40 a second for each node at its fastest
