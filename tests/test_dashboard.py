"""The launcher's dashboard: the model fed with termite.Load reports, rendered to a colourless console."""

import io
import logging
import os
import queue
import shlex
import shutil
import subprocess
import sys
import time

import pytest
from rich.console import Console

import termite
from termite import Load, NodeRef
from termite.console import Said
from termite_launcher.dashboard import ClusterView, format_duration, format_rate, load_bar, logging_to_events, sparkline
from terminals import TMUX

A = NodeRef("10.0.0.1", 7001, 0xA1)
B = NodeRef("10.0.0.2", 7002, 0xB2)
C = NodeRef("10.0.0.2", 7003, 0xC3)


def load(node, *, busy=0.0, run_queue=0, processes=5, frames_in=0, frames_out=0, migrations=(0, 0),
         uptime=10.0, host="box", os_pid=100, at=1.7e9, queued=0, largest_mailbox=0, thunks=(0, 0, 0)):
    """A report; ``thunks``: (received, done, failed)."""
    owner = termite.Pid(node, 99) if largest_mailbox else None
    return Load(node, busy, run_queue, 0.5, processes, frames_in, frames_out, *migrations, uptime, host, os_pid, 4, at,
                queued, largest_mailbox, owner, thunks_received=thunks[0], thunks_done=thunks[1],
                thunks_failed=thunks[2])


def text(view, at, width=120):
    console = Console(width=width, record=True, color_system=None, force_terminal=False, file=io.StringIO())
    console.print(view.renderable(at))
    return console.export_text()


def line_of(rendered, needle):
    """The words of the one table line that contains ``needle`` (the events pane and the ↳ reasons aside)."""
    notes = ("│", "╭", "╰", "↳")
    lines = [line for line in rendered.splitlines() if needle in line and not line.startswith(notes)]
    assert len(lines) == 1, (needle, rendered)
    return lines[0].split()


@pytest.fixture
def demo():
    """Three nodes started; two of them have reported twice."""
    view = ClusterView("demo", suspect_after=2.0, unresponsive_after=5.0)
    view.expect(A, "alpha", 1001, at=100.0)
    view.expect(B, "beta", 1002, at=100.0)
    view.expect(C, "beta", 1003, at=100.0)
    view.report(load(A, busy=0.25, processes=7, frames_in=100, frames_out=40, uptime=60, os_pid=1001), at=101.0)
    view.report(load(B, busy=0.5, run_queue=1, processes=12, frames_in=1000, frames_out=500, migrations=(2, 1),
                     uptime=3661, os_pid=1002, thunks=(20, 10, 0)), at=101.0)
    view.report(load(A, busy=0.5, run_queue=2, processes=9, frames_in=300, frames_out=90, migrations=(1, 3),
                     uptime=62, os_pid=1001, queued=1234, largest_mailbox=1200), at=103.0)
    view.report(load(B, busy=1.0, processes=10, frames_in=1600, frames_out=2500, migrations=(4, 1),
                     uptime=3665, os_pid=1002, queued=25_000, largest_mailbox=24_000, thunks=(60, 50, 3)), at=103.0)
    return view


def test_rows_hold_every_figure_with_rates_from_two_reports(demo):
    a, b, c = demo.rows()
    assert (a.label, a.node, a.os_pid, a.state) == ("alpha", "10.0.0.1:7001", 1001, "up")
    assert (a.cpu, a.processes, a.run_queue) == (50.0, 9, 2)
    assert (a.queued, a.largest_mailbox, b.queued, b.largest_mailbox) == (1234, 1200, 25_000, 24_000)
    assert (a.msgs_in, a.msgs_out, a.thunks_rate) == (100.0, 25.0, 0.0)  # (300-100)/2 s and (90-40)/2 s
    assert (a.migrations_in, a.migrations_out, a.uptime_text) == (1, 3, "0:01:02")
    assert a.history == (0.25, 0.5) and a.sparkline == "▃▅"  # cpu, on a fixed scale: a core
    assert (b.msgs_in, b.msgs_out, b.cpu, b.uptime_text, b.sparkline) == (150.0, 500.0, 100.0, "1:01:05", "▅█")
    assert (b.thunks_received, b.thunks_done, b.thunks_failed, b.thunks_rate) == (60, 50, 3, 10.0)  # 40 in 4 s
    assert (c.state, c.os_pid, c.cpu, c.msgs_in, c.uptime_text, c.sparkline) == ("starting", 1003, None, None, "-", "")
    assert (c.thunks_done, c.thunks_rate) == (None, None)
    totals = demo.totals()
    assert (totals.up, totals.nodes, totals.processes, totals.run_queue) == (2, 3, 19, 2)
    assert (totals.queued, totals.largest_mailbox) == (26_234, 24_000)
    assert (totals.msgs_in, totals.msgs_out, totals.migrations_in, totals.migrations_out) == (250.0, 525.0, 5, 4)
    assert totals.cpu_average == 75.0  # percent of a core, the mean of the nodes that reported: not their sum
    assert (totals.thunks_received, totals.thunks_done, totals.thunks_failed, totals.thunks_rate) == (60, 50, 3, 10.0)
    assert [(e.kind, e.when, e.text) for e in demo.events()] == [
        ("joined", "+0:00:01", "10.0.0.1:7001 (alpha): pid 1001, 1 core of the host's 4"),
        ("joined", "+0:00:01", "10.0.0.2:7002 (beta): pid 1002, 1 core of the host's 4"),
    ]


def test_moves_by_the_balancer_are_counted_in_the_title_and_the_plain_total(demo):
    demo.report(load(A, busy=0.5, migrations=(4, 3), uptime=64, os_pid=1001)._replace(balanced_in=3), at=105.0)
    assert demo.rows()[0].balanced_in == 3 and demo.totals().balanced == 3
    assert "migrations in 8 out 4 (3 by the balancer)" in text(demo, at=105.0, width=160).splitlines()[0]
    assert "mig in 8 out 4 (3 bal)" in text(demo, at=105.0).splitlines()[0]  # the short form, at 120
    assert demo.plain_lines(105.0)[-1].endswith("mig_in=8 mig_out=4 balanced=3")
    demo.report(load(A, busy=0.5, migrations=(6, 3), uptime=65, os_pid=1001)._replace(balanced_in=5), at=106.0)
    assert "balanced     10.0.0.1:7001 (alpha): 2 processes moved here by the balancer" in text(demo, at=106.0)


def test_flow_control_holding_senders_back_is_shown_under_the_table_and_in_plain_lines(demo):
    demo.report(load(A, busy=0.5, uptime=64, os_pid=1001)._replace(busy_nodes=("10.0.0.2:7002",), full_mailboxes=2),
                at=105.0)
    row = demo.rows()[0]
    assert (row.busy_nodes, row.full_mailboxes) == (("10.0.0.2:7002",), 2)
    note = next(line for line in text(demo, at=105.0).splitlines() if line.startswith("↳"))
    assert note == ("↳ 10.0.0.1:7001 (alpha) busy: waits for 10.0.0.2:7002 to read; "
                    "2 processes behind, their remote senders wait")
    plain = demo.plain_lines(105.0)[0]
    assert "waits_for=10.0.0.2:7002" in plain.split() and "full_mailboxes=2" in plain.split()
    assert "waits_for" not in demo.plain_lines(105.0)[1]


def test_one_report_gives_no_rate_yet():
    view = ClusterView("x", suspect_after=1, unresponsive_after=2)
    view.report(load(A, frames_in=500), at=0.0)
    (row,) = view.rows()
    assert row.state == "up" and row.msgs_in is None and row.msgs_out is None


def test_render_at_120_columns(demo):
    rendered = text(demo, at=103.0)
    lines = rendered.splitlines()
    assert lines[0] == ("demo  2/3 up  19 procs  msgs/s in 250 out 525  thunks 50/60 done, 3 failed, 10/s"
                        "  mig in 5 out 4  +0:00:03")
    # cpu and the run queue side by side, each on a scale of its own; thunks: rate, done of all sent, failed
    assert lines[1].split() == ["os", "cpu", "run", "msg/s", "msg/s", "thunks", "thunks", "thunks"]
    assert lines[2].split() == ["host", "node", "pid", "state", "%", "of", "a", "core", "history", "queue", "procs",
                                "in", "out", "/s", "done/all", "failed", "uptime"]
    assert line_of(rendered, "10.0.0.1:7001") == [
        "alpha", "10.0.0.1:7001", "1001", "up", "████░░░░", "50", "▃▅", "2", "9", "100", "25", "0", "0/0", "0",
        "0:01:02"
    ]
    assert line_of(rendered, "10.0.0.2:7002") == [
        "beta", "10.0.0.2:7002", "1002", "up", "████████", "100", "▅█", "0", "10", "150", "500", "10", "50/60", "3",
        "1:01:05"
    ]
    assert line_of(rendered, "10.0.0.2:7003") == [
        "beta", "10.0.0.2:7003", "1003", "starting", "-", "-", "-", "-", "-", "-", "-", "-", "-"
    ]
    # the cpu total is the nodes' mean, said so: not 150 (a sum of percentages of different cores)
    assert line_of(rendered, "total") == ["total", "avg", "75", "2", "19", "250", "525", "10", "50/60", "3"]
    assert "│ +0:00:01  joined       10.0.0.1:7001 (alpha): pid 1001, 1 core of the host's 4" in rendered
    assert max(len(line) for line in lines) <= 120
    wide = text(demo, at=103.0, width=160)  # every column: the mailboxes and migrations too, and the long title
    assert wide.splitlines()[0] == ("termite demo  2/3 up  19 processes  msgs/s in 250 out 525  thunks 50/60 done, "
                                    "3 failed, 10/s  migrations in 5 out 4  +0:00:03")
    assert line_of(wide, "10.0.0.2:7002") == [
        "beta", "10.0.0.2:7002", "1002", "up", "████████", "100", "▅█", "0", "10", "25.0k/24.0k", "150", "500", "10",
        "50/60", "3", "4/1", "1:01:05"
    ]
    assert line_of(wide, "total") == ["total", "avg", "75", "2", "19", "26.2k/24.0k", "250", "525", "10", "50/60", "3",
                                      "5/4"]


def test_render_at_80_columns_keeps_the_essentials(demo):
    rendered = text(demo, at=103.0, width=80)
    lines = rendered.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert lines[0] == "demo  2/3 up  19 procs  msgs/s in 250 out 525  thunks 50/60 done, 3 failed, 10/…"
    # the bar is halved; the run queue, the thunks and the messages in stay
    assert lines[2].split() == ["host", "node", "state", "%", "core", "queue", "in", "/s", "done/all", "failed"]
    assert line_of(rendered, "10.0.0.1:7001") == ["alpha", "10.0.0.1:7001", "up", "██░░", "50", "2", "100", "0",
                                                   "0/0", "0"]
    assert line_of(rendered, "total") == ["total", "avg", "75", "2", "250", "10", "50/60", "3"]
    at_100 = text(demo, at=103.0, width=100)
    assert max(len(line) for line in at_100.splitlines()) <= 100
    assert at_100.splitlines()[2].split()[-3:] == ["done/all", "failed", "uptime"]


def test_the_layout_does_not_move_as_history_grows_and_figures_change():
    """Column widths depend on the console and the nodes' names, not on the figures: no jitter from frame to frame."""
    view = ClusterView("x", suspect_after=10, unresponsive_after=20, history=30)
    view.expect(A, "alpha", 1, at=0.0)
    view.expect(B, "beta", 2, at=0.0)
    layouts = {80: set(), 120: set(), 160: set()}  # width -> the (header, table line widths) seen
    for i in range(40):  # past the 30 a history keeps
        big = i % 2  # figures that swing from one digit to five and back, and a cpu past its core
        view.report(load(A, busy=[0.0, 1.3][big], run_queue=[0, 12345][big], frames_in=i * [1, 99999][big],
                         uptime=1.0 + i, thunks=(i * 1000, i * 990, i * big), queued=[0, 99999][big]), at=float(i))
        view.report(load(B, busy=0.5, uptime=1.0 + i), at=float(i))
        for width, seen in layouts.items():
            lines = text(view, at=float(i), width=width).splitlines()
            table = [line for line in lines[1:] if not line.startswith(("╭", "│", "╰"))]
            seen.add((lines[2], tuple(len(line) for line in table)))
    for width, seen in layouts.items():
        assert len(seen) == 1, (width, seen)  # the same header and line widths in every frame


def test_cpu_and_run_queue_show_apart_on_fixed_scales():
    """A one-core node at 40 % with 16 thunks queued reads 40 and 16, not "load 16.4"; the scale never jumps."""
    view = ClusterView("x", suspect_after=10, unresponsive_after=20)
    view.report(load(A, busy=0.4, run_queue=16, uptime=1.0), at=0.0)
    first = text(view, at=0.0)
    view.report(load(A, busy=0.4, run_queue=200, uptime=2.0), at=1.0)  # a long queue changes no scale
    second = text(view, at=1.0)
    for rendered, history, queue in ((first, "▄", "16"), (second, "▄▄", "200")):
        assert line_of(rendered, "10.0.0.1:7001")[3:8] == ["up", "███▎░░░░", "40", history, queue]
        assert rendered.splitlines()[1].split()[1:3] == ["cpu", "run"]  # over "% of a core" and "queue"
        assert "% of a core" in rendered and "queue" in rendered
        assert "load" not in rendered and "16.4" not in rendered
    assert view.plain_lines(1.0)[0].split()[5:7] == ["cpu=40%", "runq=200"]
    view.report(load(A, busy=1.9, run_queue=0, uptime=3.0), at=2.0)  # two threads busy: more than its core
    assert line_of(text(view, at=2.0), "10.0.0.1:7001")[4:7] == ["████████", "190", "▄▄█"]
    assert view.plain_lines(2.0)[0].split()[5:7] == ["cpu=190%", "runq=0"]


def test_bar_sparkline_and_number_formats():
    assert load_bar(0.5, 1.0, 8) == "████░░░░"
    assert load_bar(0.3, 1.0, 8) == "██▍░░░░░"  # 2.4 cells: two full and three eighths
    assert load_bar(9.0, 4.0, 4) == "████" and load_bar(0.0, 1.0, 4) == "░░░░"
    assert sparkline([0, 0.5, 1, 2], 1.0) == "▁▅██"
    assert [format_rate(x) for x in (None, 0.0, 7.46, 312.4, 999.6, 12_345, 4_000_000)] == [
        "-", "0", "7.5", "312", "1.0k", "12.3k", "4.0M"
    ]
    assert [format_duration(s) for s in (0, 59.9, 3725.9, 90_000)] == ["0:00:00", "0:00:59", "1:02:05", "25:00:00"]


def test_a_silent_node_turns_suspect_then_unresponsive_and_back_up():
    view = ClusterView("x", suspect_after=2.0, unresponsive_after=5.0)
    view.report(load(A), at=10.0)
    view.tick(12.0)
    assert view.rows()[0].state == "up"  # exactly suspect_after: not yet
    view.tick(12.5)
    assert view.rows()[0].state == "suspect"
    view.tick(14.0)
    view.tick(15.0)
    assert view.rows()[0].state == "suspect"
    rendered = text(view, at=15.0)
    assert line_of(rendered, "10.0.0.1:7001")[3] == "suspect"
    view.tick(15.5)
    assert view.rows()[0].state == "unresponsive"  # silent: busy, not down
    assert [(e.kind, e.when, e.text) for e in view.events()] == [
        ("joined", "+0:00:00", "10.0.0.1:7001 (box): pid 100, 1 core of the host's 4"),
        ("suspect", "+0:00:02", "10.0.0.1:7001 (box): no report for 2.5 s"),
        ("unresponsive", "+0:00:05", "10.0.0.1:7001 (box): no report for 5.5 s (busy, not down)"),
    ]
    rendered = text(view, at=16.0)
    # still connected: its last figures stand
    assert line_of(rendered, "10.0.0.1:7001") == ["box", "10.0.0.1:7001", "100", "unresponsive", "░░░░░░░░", "0",
                                                   "▁", "0", "5", "-", "-", "-", "0/0", "0", "0:00:10"]
    assert rendered.splitlines()[0].startswith("termite x  0/1 up, 1 unresponsive  5 processes")
    assert "│ +0:00:05  unresponsive 10.0.0.1:7001 (box): no report for 5.5 s (busy, not down)" in rendered
    assert view.plain_lines(16.0)[-1].startswith("+0:00:06 total x up=0/1 unresponsive=1 cpu_avg=0% runq=0 procs=5 ")
    view.tick(30.0)
    assert len(view.events()) == 3  # no event without a change
    view.report(load(A), at=31.0)
    assert view.rows()[0].state == "up"
    assert str(view.events()[-1]) == "+0:00:21 up 10.0.0.1:7001 (box): reporting again after 21.0 s unresponsive"
    assert text(view, at=31.0).splitlines()[0].startswith("termite x  1/1 up  5 processes")


def test_a_silent_node_is_unresponsive_not_down_and_only_lost_makes_it_down():
    view = ClusterView("x", suspect_after=2.0, unresponsive_after=5.0)
    view.report(load(A), at=0.0)
    view.report(load(B), at=0.0)
    for at in (1.0, 3.0, 6.0, 60.0, 600.0):  # a node stalled in a C call, for ten minutes
        view.report(load(B), at=at)
        view.tick(at)
        assert [row.state for row in view.rows()][1] == "up"
    assert view.rows()[0].state == "unresponsive"
    assert "down" not in [e.kind for e in view.events()]
    rendered = text(view, at=600.0)
    assert line_of(rendered, "10.0.0.1:7001")[3] == "unresponsive"
    assert "1/2 up, 1 unresponsive" in rendered.splitlines()[0]
    view.lost(A, at=601.0)  # termite's NodeDown: its connection was lost
    view.tick(602.0)
    assert [row.state for row in view.rows()] == ["down", "up"]
    assert [(e.kind, e.text) for e in view.events()] == [
        ("joined", "10.0.0.1:7001 (box): pid 100, 1 core of the host's 4"),
        ("joined", "10.0.0.2:7002 (box): pid 100, 1 core of the host's 4"),
        ("suspect", "10.0.0.1:7001 (box): no report for 3.0 s"),
        ("unresponsive", "10.0.0.1:7001 (box): no report for 6.0 s (busy, not down)"),
        ("down", "10.0.0.1:7001 (box): noconnection"),
    ]
    rendered = text(view, at=602.0)
    # down: its figures no longer stand, but the thunks it ran were run
    assert line_of(rendered, "10.0.0.1:7001") == ["box", "10.0.0.1:7001", "100", "down", "-", "▁", "-", "-", "-",
                                                   "-", "-", "0/0", "0", "-"]
    assert rendered.splitlines()[0].startswith("termite x  1/2 up  5 processes")  # down: not counted as unresponsive
    view.unresponsive(A, at=603.0, reason="no load report")  # a down row stays down until it reports
    assert view.rows()[0].state == "down" and len(view.events()) == 5
    view.report(load(A), at=604.0)
    assert view.rows()[0].state == "up"
    assert str(view.events()[-1]) == "+0:10:04 up 10.0.0.1:7001 (box): reporting again after being down"


def test_unresponsive_is_what_the_launcher_says_of_a_connected_node_that_does_not_answer():
    view = ClusterView("x", suspect_after=2.0, unresponsive_after=5.0)
    view.expect(A, "alpha", 7, at=0.0)
    view.unresponsive(A, at=0.0, reason="no load report within 5 s (busy, not down)")
    view.unresponsive(A, at=0.5, reason="again")  # once is enough
    view.unresponsive(NodeRef(A.host, A.port, 0xFF), at=0.5, reason="another incarnation")  # not this row's
    assert [(row.state, row.label) for row in view.rows()] == [("unresponsive", "alpha")]
    assert [(e.kind, e.text) for e in view.events()] == [
        ("unresponsive", "10.0.0.1:7001 (alpha): no load report within 5 s (busy, not down)"),
    ]
    assert line_of(text(view, at=1.0), "10.0.0.1:7001")[:4] == ["alpha", "10.0.0.1:7001", "7", "unresponsive"]
    assert view.plain_lines(1.0)[0].startswith("+0:00:01 alpha 10.0.0.1:7001 unresponsive pid=7 cpu=- runq=- ")


def test_a_node_silent_past_unresponsive_after_goes_straight_to_unresponsive():
    view = ClusterView("x", suspect_after=2.0, unresponsive_after=5.0)
    view.report(load(A), at=0.0)
    view.report(load(B), at=6.0)
    view.tick(6.5)
    assert [row.state for row in view.rows()] == ["unresponsive", "up"]
    assert [e.kind for e in view.events()] == ["joined", "joined", "unresponsive"]


def test_a_lost_node_and_a_new_one_at_its_address_show_as_restarted():
    view = ClusterView("x", suspect_after=2.0, unresponsive_after=5.0)
    view.report(load(A, frames_in=900, uptime=100.0, os_pid=41), at=0.0)
    view.report(load(A, frames_in=1000, uptime=101.0, os_pid=41), at=1.0)
    view.lost(A, at=2.0)
    view.lost(A, at=2.5)  # once is enough
    assert view.rows()[0].state == "down"
    again = NodeRef(A.host, A.port, 0xA2)
    view.report(load(again, frames_in=10, uptime=1.0, os_pid=42), at=3.0)
    (row,) = view.rows()
    assert (row.state, row.restarts, row.os_pid, row.ref, row.msgs_in, row.history) == ("up", 1, 42, again, None, (0,))
    assert [(e.kind, e.text) for e in view.events()] == [
        ("joined", "10.0.0.1:7001 (box): pid 41, 1 core of the host's 4"),
        ("down", "10.0.0.1:7001 (box): noconnection"),
        ("restarted", "10.0.0.1:7001 (box): incarnation a1 -> a2"),
        ("joined", "10.0.0.1:7001 (box): pid 42, 1 core of the host's 4"),
    ]
    view.report(load(A, frames_in=2000, uptime=102.0, os_pid=41), at=3.5)  # a late report of the old one
    view.lost(A, at=4.0, reason="heartbeat timeout")  # and late news of its end
    assert (view.rows()[0].ref, view.rows()[0].state, len(view.events())) == (again, "up", 4)
    assert line_of(text(view, at=4.0), "10.0.0.1:7001")[3:5] == ["up", "↻1"]
    assert view.plain_lines(4.0)[0].endswith(" restarts=1")


def test_an_exit_the_launcher_saw_shows_its_reason_and_the_restart_counts():
    view = ClusterView("x", suspect_after=2.0, unresponsive_after=5.0)
    view.expect(A, "alpha", 41, at=0.0)
    view.report(load(A, os_pid=41), at=0.5)
    view.exited(A, at=1.0, reason="killed by signal 9 (SIGKILL); restart 1 of 5 in 0.5 s")
    row = view.rows()[0]
    assert (row.state, row.reason) == ("down", "killed by signal 9 (SIGKILL); restart 1 of 5 in 0.5 s")
    rendered = text(view, at=1.0)
    assert "↳ 10.0.0.1:7001 (alpha) down: killed by signal 9 (SIGKILL); restart 1 of 5 in 0.5 s" in rendered
    assert view.plain_lines(1.0)[0].endswith(" restarts=0 why=killed by signal 9 (SIGKILL); restart 1 of 5 in 0.5 s")
    view.lost(A, at=2.0)  # termite's noconnection, later: the launcher's reason stands
    new = NodeRef(A.host, 7009, 0xA2)
    view.restarted(A, new, at=2.0, os_pid=42)
    view.lost(A, at=2.5)  # late news of the old node, at its old address: no row of its own
    (row,) = view.rows()
    assert (row.node, row.state, row.os_pid, row.restarts, row.reason) == ("10.0.0.1:7009", "starting", 42, 1, None)
    view.report(load(new, os_pid=42), at=3.0)
    rendered = text(view, at=3.0)
    assert line_of(rendered, "10.0.0.1:7009")[:5] == ["alpha", "10.0.0.1:7009", "42", "up", "↻1"]
    assert "down:" not in rendered
    assert [(e.kind, e.text) for e in view.events()] == [
        ("joined", "10.0.0.1:7001 (alpha): pid 41, 1 core of the host's 4"),
        ("down", "10.0.0.1:7001 (alpha): killed by signal 9 (SIGKILL); restart 1 of 5 in 0.5 s"),
        ("restarted", "10.0.0.1:7001 -> 10.0.0.1:7009 (alpha)"),
        ("joined", "10.0.0.1:7009 (alpha): pid 42, 1 core of the host's 4"),
    ]


def test_a_node_given_up_on_is_failed_with_the_reason_and_stays_so():
    view = ClusterView("x", suspect_after=2.0, unresponsive_after=5.0)
    view.report(load(A, os_pid=41), at=0.0)
    view.report(load(B, os_pid=51), at=0.0)
    view.exited(A, at=1.0, reason="exited with status 1")
    why = "exited with status 1; gave up: 2 exits within 60 s (restart: intensity 1, period 60)"
    view.gave_up(A, at=1.0, reason=why)
    view.lost(A, at=2.0)  # stays failed
    view.exited(A, at=2.0, reason="noconnection")
    a, b = view.rows()
    assert (a.state, a.reason, b.state) == ("failed", why, "up")
    assert view.totals().failed == 1
    rendered = text(view, at=2.0)
    assert rendered.splitlines()[0].startswith("termite x  1/2 up, 1 failed  ")
    assert f"↳ 10.0.0.1:7001 (box) failed: {why}" in rendered
    assert line_of(rendered, "10.0.0.1:7001")[3] == "failed"
    assert "│ +0:00:01  failed       10.0.0.1:7001 (box): exited with status 1; gave up" in rendered  # events
    lines = view.plain_lines(2.0)
    assert lines[0].split()[3] == "failed" and lines[0].endswith(f"why={why}")
    assert lines[-1].endswith(" failed=1")


def test_restarted_moves_the_row_and_a_first_report_adds_no_second_event():
    view = ClusterView("x", suspect_after=2.0, unresponsive_after=5.0)
    view.expect(B, "beta", 7, at=0.0)
    view.expect(A, "alpha", 8, at=0.0)
    view.expect(C, "gamma", 9, at=0.0)
    new = NodeRef(A.host, 7009, 0xAA)
    view.restarted(A, new, at=1.0)
    assert [row.node for row in view.rows()] == ["10.0.0.2:7002", "10.0.0.1:7009", "10.0.0.2:7003"]
    assert view.rows()[1].label == "alpha" and view.rows()[1].restarts == 1
    view.report(load(new), at=2.0)
    view.restarted(A, new, at=2.5)  # told twice: once counted
    assert [(e.kind, e.text) for e in view.events()] == [
        ("restarted", "10.0.0.1:7001 -> 10.0.0.1:7009 (alpha)"),
        ("joined", "10.0.0.1:7009 (alpha): pid 100, 1 core of the host's 4"),
    ]
    assert view.rows()[1].state == "up" and view.rows()[1].restarts == 1


def test_expected_without_incarnation_then_filled_by_the_first_report():
    view = ClusterView("x", suspect_after=2.0, unresponsive_after=5.0)
    view.expect(NodeRef(A.host, A.port), "alpha", 555, at=0.0)
    assert line_of(text(view, at=0.0), "10.0.0.1:7001")[:4] == ["alpha", "10.0.0.1:7001", "555", "starting"]
    view.report(load(A, host="alpha.example.org", os_pid=556), at=1.0)
    view.report(load(B, host="stranger"), at=1.0)  # not expected: joins under the hostname it reports
    a, b = view.rows()
    assert (a.label, a.os_pid, a.ref, a.state, a.restarts) == ("alpha", 556, A, "up", 0)
    assert (b.label, b.state) == ("stranger", "up")
    assert [e.kind for e in view.events()] == ["joined", "joined"]


def test_plain_lines(demo):
    assert demo.plain_lines(103.0) == [
        "+0:00:03 alpha 10.0.0.1:7001 up pid=1001 cpu=50% runq=2 procs=9 queued=1234 mbox_max=1200 in=100/s out=25/s"
        " thunks=0/s thunks_done=0 thunks_sent=0 thunks_failed=0 mig_in=1 mig_out=3 uptime=0:01:02 restarts=0",
        "+0:00:03 beta 10.0.0.2:7002 up pid=1002 cpu=100% runq=0 procs=10 queued=25000 mbox_max=24000 in=150/s"
        " out=500/s thunks=10/s thunks_done=50 thunks_sent=60 thunks_failed=3 mig_in=4 mig_out=1 uptime=1:01:05"
        " restarts=0",
        "+0:00:03 beta 10.0.0.2:7003 starting pid=1003 cpu=- runq=- procs=- queued=- mbox_max=- in=- out=- thunks=-"
        " thunks_done=- thunks_sent=- thunks_failed=- mig_in=- mig_out=- uptime=- restarts=0",
        "+0:00:03 total demo up=2/3 unresponsive=0 cpu_avg=75% runq=2 procs=19 queued=26234 mbox_max=24000 in=250/s"
        " out=525/s thunks=10/s thunks_done=50 thunks_sent=60 thunks_failed=3 mig_in=5 mig_out=4",
    ]


def test_events_keep_the_last_50_and_the_pane_the_newest():
    view = ClusterView("x", suspect_after=2.0, unresponsive_after=5.0)
    for i in range(1, 61):
        view.event(f"event {i}", at=float(i))
    kept = view.events()
    assert len(kept) == 50 and kept[0].n == 11 and kept[-1].text == "event 60"
    assert [e.text for e in view.events(after=57)] == ["event 58", "event 59", "event 60"]
    rendered = text(view, at=61.0)
    assert "+0:00:59  info         event 60" in rendered and "event 53" in rendered and "event 52" not in rendered
    assert "no nodes yet" in rendered


def test_wall_clock_times_show_as_the_time_of_day():
    at = 1_700_000_000.0
    view = ClusterView("x", suspect_after=2.0, unresponsive_after=5.0)
    view.event("hello", at=at)
    assert view.events()[0].when == time.strftime("%H:%M:%S", time.localtime(at))
    assert view.plain_lines(at + 1) == [f"{time.strftime('%H:%M:%S', time.localtime(at + 1))} total x up=0/0"
                                        " unresponsive=0 cpu_avg=- runq=0 procs=0 queued=0 mbox_max=0 in=0/s out=0/s"
                                        " thunks=0/s thunks_done=0 thunks_sent=0 thunks_failed=0 mig_in=0 mig_out=0"]


def test_thresholds_are_checked():
    with pytest.raises(ValueError, match="suspect_after <= unresponsive_after, got suspect_after=5"):
        ClusterView("x", suspect_after=5, unresponsive_after=2)
    with pytest.raises(ValueError, match="history"):
        ClusterView("x", suspect_after=1, unresponsive_after=2, history=0)


def test_reports_from_real_nodes(cluster):
    here, start = cluster
    b, c = start(), start()
    view = ClusterView("real", suspect_after=0.25, unresponsive_after=0.5)
    for node in (b, c):
        here.connect(*node.ref.address)
        view.expect(node.ref, "local", node.pid, at=time.monotonic())
        here.send(termite.Pid(node.ref, 1), ("subscribe", here.pid, 0.1))

    def feed(until):
        """Feed reports to the view until ``until(counts, last)``; return ``last``: the ``at`` of the last one per node."""
        counts, last = {}, {}
        deadline = time.monotonic() + 20
        while not until(counts, last):
            assert time.monotonic() < deadline, counts
            msg = here.receive(("load", Load), timeout=1, default=None)
            if msg is not None:
                at = time.monotonic()
                view.report(msg[1], at)
                counts[msg[1].node] = counts.get(msg[1].node, 0) + 1
                last[msg[1].node] = at
        return last

    feed(lambda counts, last: all(counts.get(node.ref, 0) >= 3 for node in (b, c)))
    rows = {row.ref: row for row in view.rows()}
    for node in (b, c):
        row = rows[node.ref]
        assert (row.state, row.os_pid, row.label, row.node) == ("up", node.pid, "local", str(node.ref))
        assert row.processes >= 1 and row.uptime > 0 and len(row.history) >= 3 and len(row.sparkline) >= 3
        assert row.msgs_out > 0  # each report it sent us is a frame out
    rendered = text(view, at=time.monotonic())
    assert line_of(rendered, str(b.ref))[2:4] == [str(b.pid), "up"]
    assert "2/2 up" in rendered.splitlines()[0]

    here.monitor_node(c.ref)
    c.kill()
    # Until B's reports run 0.7 s past C's last (C's sent before the kill may still be read after it).
    last = feed(lambda counts, last: counts.get(b.ref, 0) >= 8 and last[b.ref] - last.get(c.ref, 0) >= 0.7)
    view.tick(last[b.ref])
    assert {row.ref: row.state for row in view.rows()} == {b.ref: "up", c.ref: "unresponsive"}  # silence alone
    assert [e.text.split()[0] for e in view.events() if e.kind == "unresponsive"] == [str(c.ref)]
    # down is termite's word: NodeDown (the killed node's connection closed), passed on as the launcher does
    down = here.receive(termite.NodeDown, timeout=10)
    assert down.node == c.ref
    view.lost(down.node, time.monotonic(), down.reason)
    assert {row.ref: row.state for row in view.rows()} == {b.ref: "up", c.ref: "down"}
    assert [e.text.split()[0] for e in view.events() if e.kind == "down"] == [str(c.ref)]
    assert line_of(text(view, at=time.monotonic()), str(c.ref))[3] == "down"


def test_log_records_go_to_the_events_pane_while_routed_and_to_the_terminal_again_after():
    root = logging.getLogger()
    terminal = logging.StreamHandler(sys.stderr)  # what logging.basicConfig() installs
    root.addHandler(terminal)
    records: queue.SimpleQueue = queue.SimpleQueue()
    try:
        with logging_to_events(records.put):
            assert terminal not in root.handlers  # set aside: it would write over the dashboard
            logging.getLogger("termite.transport").warning("node %s is down: %s", "10.0.0.1:7001",
                                                           "its connection closed")
            logging.getLogger("termite.transport").info("not at the root's level: dropped before any handler")
        assert root.handlers.count(terminal) == 1
        assert not any(h.__class__.__name__ == "_ToEvents" for h in root.handlers)
    finally:
        root.removeHandler(terminal)
    record = records.get_nowait()
    assert records.empty()
    view = ClusterView("x", suspect_after=2.0, unresponsive_after=5.0)
    view.logged(record, at=1.0)
    view.said(Said(termite.Pid(A, 17), "hello from alpha"), at=2.0)
    assert [(e.kind, e.text) for e in view.events()] == [
        ("warning", "termite.transport: node 10.0.0.1:7001 is down: its connection closed"),
        ("said", "[10.0.0.1:7001/17] hello from alpha"),
    ]
    rendered = text(view, at=3.0)
    assert "│ +0:00:00  warning      termite.transport: node 10.0.0.1:7001 is down: its connection closed" in rendered
    assert "│ +0:00:01  said         [10.0.0.1:7001/17] hello from alpha" in rendered


def test_every_event_kind_has_a_style():
    from termite_launcher.dashboard_render import EVENT_STYLES
    from termite_launcher.dashboard_snapshot import EVENT_KINDS

    assert set(EVENT_STYLES) == set(EVENT_KINDS)


# -- the process view (issue 19) ----------------------------------------------------


def _with_top(node, *top, uptime):
    """A report whose busiest processes are ``top``: (serial, name, mailbox, steps, state) each."""
    return load(node, busy=0.5, uptime=uptime, os_pid=1001)._replace(
        top=tuple(termite.ProcessLoad(termite.Pid(node, serial), name, mbox, steps, state)
                  for serial, name, mbox, steps, state in top))


@pytest.fixture
def busy(demo):
    """Node A has reported its busiest processes twice, 2 s apart."""
    demo.report(_with_top(A, (17, "worker", 3, 100, "receiving"), (18, None, 5000, 10, "runnable"), (19, None, 0, 7,
                                                                                                     "sleeping"),
                          uptime=64), at=105.0)
    demo.report(_with_top(A, (17, "worker", 3, 300, "receiving"), (18, None, 6000, 20, "runnable"),
                          (20, "new", 1, 50, "receiving"), uptime=66), at=107.0)
    return demo


def test_the_process_view_lists_each_node_s_busiest_processes_by_mailbox_or_cpu(busy):
    a = busy.rows()[0]
    assert [(p.pid, p.steps_rate) for p in a.top] == [("10.0.0.1:7001/17", 100.0), ("10.0.0.1:7001/18", 5.0),
                                                       ("10.0.0.1:7001/20", None)]  # 20: not in the report before
    assert "processes by" not in text(busy, at=107.0)  # hidden until asked for
    busy.show(processes=True)
    screen = text(busy, at=107.0)
    assert "processes by mailbox" in screen and "keys:" not in screen  # no keys: not the live dashboard
    assert [line.split()[:5] for line in screen.splitlines() if "/1" in line or "/20" in line][-3:] == [
        ["10.0.0.1:7001", "/18", "runnable", "6000", "5.0"],
        ["/17", "worker", "receiving", "3", "100"],
        ["/20", "new", "receiving", "1", "-"],
    ]
    busy.press("c")
    screen = text(busy, at=107.0)
    assert "processes by cpu (steps/s)" in screen
    assert [word for line in screen.splitlines() for word in line.split() if word in ("/17", "/18", "/20")] == [
        "/17", "/18", "/20"]  # 100/s, 5/s, then the one without a rate
    assert busy.press("p") and busy.processes is False and not busy.press("x")


def test_the_process_view_in_plain_lines(busy):
    busy.show(processes=True, sort="mailbox")
    lines = [line for line in busy.plain_lines(107.0) if " process " in line]
    assert lines[0] == ("+0:00:07 process 10.0.0.1:7001 pid=10.0.0.1:7001/18 state=runnable mailbox=6000 "
                        "steps_per_s=5.0/s steps=20")
    assert lines[1].endswith("steps_per_s=100/s steps=300 name=worker") and len(lines) == 3
    busy.show(processes=False)
    assert not [line for line in busy.plain_lines(107.0) if " process " in line]
    with pytest.raises(ValueError, match="sort must be one of mailbox, cpu"):
        busy.show(sort="memory")


def test_the_keys_line_shows_where_keys_work(busy):
    busy.keys = True
    assert text(busy, at=107.0).splitlines()[-1].strip() == "keys: p processes  m by mailbox  c by cpu  ctrl-c stop"
    busy.press("m")
    assert text(busy, at=107.0).splitlines()[-1].strip().startswith("keys: p hide processes")


def test_keys_do_nothing_without_a_terminal(busy):
    from termite_launcher.dashboard import Keys

    with Keys(busy, io.StringIO("pc")) as keys:  # not a terminal: nothing is read
        assert keys.poll() == 0 and busy.keys is False


@pytest.mark.timeout(120)
@pytest.mark.skipif(not shutil.which("tmux"), reason="tmux is not installed")
def test_keys_switch_the_process_view_of_the_live_dashboard_in_a_real_terminal(tmp_path):
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text("hosts:\n  - address: localhost\n    cores: 2\nmeter_interval: 0.2\n")
    session = f"termite-keys-{os.getpid()}"
    # the terminal's size is tmux's: not the COLUMNS and LINES a test runner may have set, which rich would take
    command = (f"env -u COLUMNS -u LINES PYTHONPATH={shlex.quote(os.environ.get('PYTHONPATH', ''))} "
               f"{sys.executable} -m termite_launcher "
               f"{cluster}; echo EXITED $?; stty -a | tr ' ;' '\\n\\n' | grep -x -- '-\\?icanon'; sleep 60")
    subprocess.run([*TMUX, "new-session", "-d", "-s", session, "-x", "120", "-y", "50", "-c", str(tmp_path), command],
                   check=True)

    def screen_until(test):
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline:
            screen = subprocess.run([*TMUX, "capture-pane", "-p", "-t", session], capture_output=True,
                                    text=True).stdout
            if test(screen):
                return screen
            time.sleep(0.2)  # a terminal gives no event to wait on: look again
        raise AssertionError(f"the screen never showed what was expected:\n{screen}")

    try:
        screen_until(lambda s: s.count(" up ") >= 2 and "keys: p processes" in s)
        subprocess.run([*TMUX, "send-keys", "-t", session, "p"], check=True)
        screen = screen_until(lambda s: "processes by mailbox" in s and s.count("/1 ") >= 2)  # each node's meter
        assert "keys: p hide processes" in screen, screen
        assert not any(line.strip() in ("p", "^[p") for line in screen.splitlines())  # the key is not echoed
        subprocess.run([*TMUX, "send-keys", "-t", session, "c"], check=True)
        screen_until(lambda s: "processes by cpu (steps/s)" in s)
        subprocess.run([*TMUX, "send-keys", "-t", session, "p"], check=True)
        screen_until(lambda s: "processes by" not in s and "keys: p processes" in s)
        subprocess.run([*TMUX, "send-keys", "-t", session, "C-c"], check=True)
        screen = screen_until(lambda s: "EXITED" in s and "icanon" in s)
        assert "icanon" in screen.split() and "-icanon" not in screen.split()  # the terminal as it was: line by line
    finally:
        subprocess.run([*TMUX, "kill-session", "-t", session], capture_output=True)


def test_the_live_process_view_fits_the_terminal(busy):
    busy.show(processes=True)
    busy.keys = True  # the live dashboard: its last line, the keys, must stay on the screen
    for height, shown in ((20, ["/18"]), (40, ["/18", "/17", "/20"])):
        console = Console(width=120, height=height, record=True, color_system=None, force_terminal=False,
                          file=io.StringIO())
        console.print(busy.renderable(107.0))
        screen = console.export_text().splitlines()
        assert len(screen) <= height and screen[-1].startswith("keys:"), "\n".join(screen)
        pids = [w for line in screen for w in line.split() if w in ("/17", "/18", "/20")]
        assert pids == shown  # the most mail first
