"""The fast part of the fault-injection suite: a fixed schedule per kind of fault.

Each schedule starts three node processes (A, B, C, with the ``cluster``
fixture's short heartbeats: a peer silent for 1 s is down) and runs, between
every ordered pair, a numbered stream and a link, a monitor and a
spawn_link made from the first towards the second; a migrant bounces
between A and B; an Executor over the three gets a call every 0.1 s.  The
nemesis then does one fault to B, 1 s after the start, aligned so that the
migrant's next move goes to B while it lasts.  tests/faults/invariants.py
lists the promises checked afterwards; a failure names each one broken,
with the data (numbers missing, notices received, times from the start).

The checkers themselves are tested first, on recorded data made by hand.
"""

import pytest
from harness import DEFAULT_HEARTBEAT, Fault, Schedule
from invariants import DETECT_LIMIT, check_executor, check_liveness, check_migrants, check_stream, check_watch

pytestmark = pytest.mark.timeout(150)

S, SN = "a:1/5", "a:1"  # the sender's pid and node in the checkers' tests


# -- the checkers, on data made by hand ---------------------------------------------------------


def _kinds(violations):
    return [v.invariant for v in violations]


def test_a_whole_stream_or_a_gap_after_a_notice_passes():
    assert check_stream("s", [("n", 1, 100, 0.0), ("fin", 100, 0.1)], S, SN, 100, True, False) == []
    events = [("n", 1, 40, 0.0), ("nodedown", SN, "noconnection", 1.0), ("down", S, "noconnection", 1.0),
              ("nodeup", SN, 2.0), ("n", 61, 100, 2.1)]
    assert check_stream("s", events, S, SN, 100, True, False) == []


def test_a_gap_without_notice_is_caught_with_its_numbers():
    [v] = check_stream("s", [("n", 1, 40, 0.0), ("n", 61, 100, 2.1)], S, SN, 100, True, False)
    assert v.invariant == "stream.gap" and "41..60 (20 messages)" in v.detail


def test_duplicates_late_messages_and_a_session_without_nodeup_are_caught():
    events = [("n", 1, 50, 0.0), ("n", 45, 55, 0.1), ("n", 58, 60, 0.2), ("n", 56, 57, 0.3)]
    assert _kinds(check_stream("s", events, S, SN, 60, True, False)) == ["stream.duplicate", "stream.gap", "stream.order"]
    events = [("n", 1, 50, 0.0), ("nodedown", SN, "noconnection", 1.0), ("n", 51, 60, 2.0)]
    assert _kinds(check_stream("s", events, S, SN, 60, True, False)) == ["stream.session"]


def test_a_lost_tail_needs_a_notice_and_a_killed_senders_node_needs_one():
    assert _kinds(check_stream("s", [("n", 1, 50, 0.0)], S, SN, 60, True, False)) == ["stream.tail"]
    assert _kinds(check_stream("s", [("n", 1, 50, 0.0)], S, SN, None, False, True)) == ["stream.notice"] * 2
    ok = [("n", 1, 50, 0.0), ("nodedown", SN, "noconnection", 1.0), ("down", S, "noconnection", 1.0)]
    assert check_stream("s", ok, S, SN, None, False, True) == []


def test_links_fire_once_on_each_side_and_both_sides_see_a_down():
    w, t = "a:1/7", "b:2/8"
    once = [("exit", t, "normal", 5.0)]
    assert check_watch("l", "link", w, t, once, [], None, False, False) == []
    both = [("exit", t, "noconnection", 2.0)], [("exit", w, "noconnection", 2.1)]
    assert check_watch("l", "link", w, t, *both, None, False, False) == []
    twice = [("exit", t, "noconnection", 2.0), ("exit", t, "normal", 5.0)]
    assert _kinds(check_watch("l", "link", w, t, twice, [], None, False, False)) == ["watch.once", "watch.both-sides"]
    orphan = [("down", t, "normal", 5.0)]
    assert _kinds(check_watch("l", "spawn_link", w, t, None, None, orphan, True, False)) == ["watch.both-sides"]
    assert _kinds(check_watch("m", "monitor", w, t, [], None, None, False, False)) == ["watch.once"]


def test_a_step_reported_twice_means_two_copies():
    steps = [("p", 1, "a", 10, 0.0), ("p", 2, "b", 11, 0.3), ("p", 2, "a", 10, 1.3)]
    [copies, end] = check_migrants(steps, [("down", "p", "normal", 2.0)] * 2, ["p"])
    assert copies.invariant == "migrant.one-copy" and "step 2" in copies.detail
    assert end.invariant == "migrant.end" and "two copies ran" in end.detail
    assert check_migrants(steps[:2], [("down", "p", "normal", 2.0)], ["p"]) == []


def test_executor_and_liveness_checks():
    runs = [(0, 10), (1, 11), (1, 12), (2, 99)]
    kinds = _kinds(check_executor(3, [2], [], runs, 99, set(), 15.0))
    assert kinds == ["executor.resolved", "executor.caller", "executor.rerun"]
    assert check_executor(3, [], [], runs[:3], 99, {11}, 15.0) == []
    assert check_executor(3, [], [], runs[:3], 99, {12}, 15.0) == []  # sent to 12, re-run on 11, then run by 12
    nodes = {"B": "b:2"}
    stall = [{"kind": "stall", "victim": "B", "start": 10.0, "end": 13.0}]
    assert _kinds(check_liveness(stall, nodes, [("nodedown", "b:2", "noconnection", 11.0)])) == ["liveness.false-down"]
    stall_then_kill = [*stall, {"kind": "kill", "victim": "B", "start": 13.5, "end": 13.5}]
    assert check_liveness(stall_then_kill, nodes, [("nodedown", "b:2", "noconnection", 13.6)]) == []
    kill = [{"kind": "kill", "victim": "B", "start": 10.0, "end": 10.0}]
    assert _kinds(check_liveness(kill, nodes, [("nodedown", "b:2", "noconnection", 14.5)])) == ["liveness.detect"]
    assert check_liveness(kill, nodes, [("nodedown", "b:2", "noconnection", 11.2)]) == []


# -- real nodes, real faults ----------------------------------------------------------------------


def test_no_fault(run_faults):
    """The control: with no fault every invariant holds (else the suite itself, or termite, is wrong)."""
    run_faults(Schedule("no fault", ()))


def test_sigkill_of_a_node(run_faults):
    """B is killed: what it had sent arrives as a prefix, then NodeDown; everything linked to or
    monitoring a process of B fires noconnection once, on A and C, whichever side made the link."""
    run_faults(Schedule("kill B", (Fault("kill", "B", at=1.0, align=True),)))


def test_sigstop_of_a_node_for_3_s(run_faults):
    """B is stopped for three heartbeat timeouts: a down, if declared, is seen on both sides,
    streams have no silent gap, and the migrant never runs twice."""
    run_faults(Schedule("pause B", (Fault("pause", "B", at=1.0, seconds=3.0, align=True),)))


def test_a_gil_holding_c_call_of_3_s(run_faults):
    """B holds its GIL for about 3 s in sum(range(n)): it is busy, not down, and nothing is lost."""
    run_faults(Schedule("stall B", (Fault("stall", "B", at=1.0, seconds=3.0, align=True),)))


def test_connections_to_a_node_cut_for_3_s(run_faults):
    """Every packet to or from B is dropped for 3 s: both sides see the down, then a new session."""
    run_faults(Schedule("cut B", (Fault("cut", "B", at=1.0, seconds=3.0, align=True),)))


def test_sigkill_is_detected_within_3_s_with_the_default_heartbeats(run_faults):
    """With termite's default heartbeat settings (3 s timeout), as a user runs it, a killed node is
    declared down within DETECT_LIMIT (3 s) every time."""
    assert DETECT_LIMIT == 3.0
    run_faults(Schedule("kill B", (Fault("kill", "B", at=1.0),), heartbeat=DEFAULT_HEARTBEAT, migrants=(),
                        job_every=0, settle=4.0))
