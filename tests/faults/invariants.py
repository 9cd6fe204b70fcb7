"""Invariant checkers: pure functions over what a schedule recorded (tests/faults/harness.py).

Each checker takes plain data (the events of tests/nodecode/fault_workloads.py)
and returns a list of :class:`Violation`; an empty list means the promise held.

=======================  ==================================================================
invariant                the promise (issue 14)
=======================  ==================================================================
stream.gap               what a receiver got from a sender is a prefix of 1..N within a
                         session: a gap is allowed only after a NodeDown / Down(noconnection)
                         about the sender's node, received before the first message after it
stream.tail              the same for the end: messages missing at the end of a finished
                         stream were announced by a notice after the last one received
stream.duplicate         no number is received twice
stream.order             numbers arrive in the order they were sent (nothing older after newer)
stream.session           after a NodeDown about the sender's node, nothing from it arrives
                         before a NodeUp (a new session begins with NodeUp)
stream.notice            a receiver whose sender's node was killed is told (NodeDown, and
                         exactly one Down(noconnection) of the sender); a sender whose
                         receiver's node was killed gets exactly one Down(noconnection)
watch.once               every link and monitor fires exactly once on each side that lives
watch.both-sides         a link broken by a down (noconnection on one side) is broken on the
                         other side too: both get Exit(noconnection); a linked process of a
                         lost node's partner dies with noconnection (no orphans)
migrant.one-copy         no step of a migrant is reported twice (two reports: two copies ran)
migrant.end              a migrant's end is reported exactly once (its monitor fires once);
                         nothing of it runs after an end other than noconnection
executor.resolved        every Executor future resolves (value or error) within the bound
executor.caller          no call runs in the calling process
executor.rerun           a call runs more than once only if a node it ran on was declared down
liveness.false-down      a node holding its GIL in a C call is not declared down
liveness.detect          a killed node is declared down within DETECT_LIMIT seconds
report.missing           every recorder on a node that was not killed answers at the end
cleanup                  no node OS process and no thread of the run is left
=======================  ==================================================================
"""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict

__all__ = ["Violation", "DETECT_LIMIT", "check_stream", "check_sender", "check_watch", "check_migrants",
           "check_executor", "check_liveness", "check_run", "NOCONNECTION"]

NOCONNECTION = "noconnection"
#: Seconds within which a killed node must be declared down (issue 14: "within 3 s every time").
DETECT_LIMIT = 3.0
_SHOWN = 5  # examples shown per violation


@dataclasses.dataclass(frozen=True)
class Violation:
    invariant: str
    subject: str
    detail: str

    def __str__(self) -> str:
        return f"[{self.invariant}] {self.subject}: {self.detail}"


def _t(t: float, origin: float | None) -> str:
    return f"t={t - origin:+.2f}s" if origin is not None else f"t={t:.3f}"


# -- streams ----------------------------------------------------------------------------


def check_stream(subject: str, events: list, sender_pid: str, sender_node: str, sent: int | None,
                 sender_done: bool, sender_lost: bool, origin: float | None = None) -> list[Violation]:
    """One stream, from the receiver's events (in arrival order).

    ``sent``: how many the sender says it sent (None if its node was killed);
    ``sender_done``: it sent its last one; ``sender_lost``: its node was killed.
    """
    out: list[Violation] = []
    got: list[tuple[int, int]] = []  # ranges received so far, merged and sorted
    last = 0  # the highest number received
    notice = False  # a notice about the sender's node since the last message
    notice_any = False
    down_at = None  # time of a NodeDown about the sender's node not yet followed by NodeUp
    downs = []  # Downs of the sender
    nodedowns = 0
    session_reported = False
    for e in events:
        kind = e[0]
        if kind == "n":
            lo, hi, t = e[1], e[2], e[3]
            overlap = _overlap(got, lo, hi)
            if overlap:
                out.append(Violation("stream.duplicate", subject,
                                     f"received {lo}..{hi} at {_t(t, origin)}, of which {overlap} number(s) "
                                     f"had already arrived (highest so far {last})"))
            elif lo <= last:
                out.append(Violation("stream.order", subject,
                                     f"received {lo}..{hi} at {_t(t, origin)} after {last}: older messages "
                                     f"after newer ones (a late delivery from an ended session?)"))
            elif lo > last + 1 and not notice:
                out.append(Violation("stream.gap", subject,
                                     f"{last + 1}..{lo - 1} ({lo - 1 - last} messages) never arrived; {lo}..{hi} "
                                     f"came next at {_t(t, origin)} with no NodeDown/Down(noconnection) about "
                                     f"{sender_node} before it (notices so far: {_notices(events, sender_pid, sender_node)})"))
            if down_at is not None and not session_reported:
                session_reported = True
                out.append(Violation("stream.session", subject,
                                     f"received {lo}..{hi} at {_t(t, origin)} after NodeDown of {sender_node} "
                                     f"({_t(down_at, origin)}) with no NodeUp between: a message of an ended "
                                     f"session, or of a new one that began unannounced"))
            _add(got, lo, hi)
            last = max(last, hi)
            notice = False
        elif kind == "nodedown" and e[1] == sender_node:
            notice = notice_any = True
            down_at = e[3]
            nodedowns += 1
        elif kind == "nodeup" and e[1] == sender_node:
            down_at = None
        elif kind in ("down", "exit") and e[1] == sender_pid:
            downs.append(e)
            if e[2] == NOCONNECTION:
                notice = notice_any = True
    total = sent if sent is not None else None
    if total is not None and sender_done and last < total and not notice:
        out.append(Violation("stream.tail", subject,
                             f"the sender sent {total}; the receiver got up to {last} and {last + 1}..{total} "
                             f"never arrived, with no notice about {sender_node} after {last}"))
    if len(downs) > 1:
        out.append(Violation("stream.notice", subject,
                             f"the receiver's monitor of the sender fired {len(downs)} times: "
                             f"{[(d[2], _t(d[3], origin)) for d in downs[:_SHOWN]]}"))
    if sender_lost:
        if not nodedowns:
            out.append(Violation("stream.notice", subject,
                                 f"the sender's node {sender_node} was killed; the receiver (got up to {last}) "
                                 f"never got NodeDown about it"))
        if not any(d[2] == NOCONNECTION for d in downs):
            out.append(Violation("stream.notice", subject,
                                 f"the sender's node {sender_node} was killed; the receiver's monitor of the "
                                 f"sender never fired noconnection (Downs: {[d[2] for d in downs]})"))
    return out


def check_sender(subject: str, events: list, receiver_pid: str, receiver_lost: bool,
                 origin: float | None = None) -> list[Violation]:
    """The sender's monitor of its receiver: at most one Down; exactly one noconnection if the receiver's node was killed."""
    downs = [e for e in events if e[0] == "down" and e[1] == receiver_pid]
    out = []
    if len(downs) > 1:
        out.append(Violation("stream.notice", subject,
                             f"the sender's monitor of the receiver fired {len(downs)} times: "
                             f"{[(d[2], _t(d[3], origin)) for d in downs[:_SHOWN]]}"))
    if receiver_lost and not any(d[2] == NOCONNECTION for d in downs):
        out.append(Violation("stream.notice", subject,
                             f"the receiver's node was killed; the sender's monitor never fired noconnection "
                             f"(Downs: {[d[2] for d in downs]})"))
    return out


def _notices(events: list, pid: str, node: str) -> str:
    kept = [e[:3] for e in events if e[0] in ("nodedown", "nodeup") and e[1] == node
            or e[0] in ("down", "exit") and e[1] == pid]
    return repr(kept[:_SHOWN]) if kept else "none"


def _overlap(got: list[tuple[int, int]], lo: int, hi: int) -> int:
    return sum(max(0, min(hi, b) - max(lo, a) + 1) for a, b in got)


def _add(got: list[tuple[int, int]], lo: int, hi: int) -> None:
    got.append((lo, hi))
    got.sort()
    merged = [got[0]]
    for a, b in got[1:]:
        if a <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    got[:] = merged


# -- links and monitors -------------------------------------------------------------------


def check_watch(subject: str, kind: str, watcher_pid: str, target_pid: str, watcher_events: list | None,
                target_events: list | None, witness_events: list | None, watcher_lost: bool, target_lost: bool,
                origin: float | None = None) -> list[Violation]:
    """One link, monitor or spawn_link made on the watcher's node towards the target's node.

    ``*_events`` are None when that recorder could not report (its node was
    killed); ``*_lost``: that side's node was killed.  At the end of the run
    every target still alive was told to stop (it ends ``normal``).
    """
    out = []
    fired = [] if watcher_events is None else [
        e for e in watcher_events if e[0] in ("exit", "down") and e[1] == target_pid]
    reasons = [(e[0], e[2], _t(e[3], origin)) for e in fired]
    w_noconn = any(e[2] == NOCONNECTION for e in fired)
    if not watcher_lost and watcher_events is not None:
        if len(fired) != 1:
            how = "never fired" if not fired else f"fired {len(fired)} times"
            out.append(Violation("watch.once", subject, f"the watcher's side {how}: {reasons}"))
        if target_lost and fired and not w_noconn:
            out.append(Violation("watch.once", subject,
                                 f"the target's node was killed, yet the watcher got {reasons}, not noconnection"))
    if kind == "link" and not target_lost and target_events is not None:
        back = [e for e in target_events if e[0] == "exit" and e[1] == watcher_pid]
        back_reasons = [(e[2], _t(e[3], origin)) for e in back]
        t_noconn = any(e[2] == NOCONNECTION for e in back)
        if len(back) > 1:
            out.append(Violation("watch.once", subject, f"the target's side fired {len(back)} times: {back_reasons}"))
        if watcher_lost and not t_noconn:
            out.append(Violation("watch.both-sides", subject,
                                 f"the watcher's node was killed; the target (trapping exits) never got "
                                 f"Exit(noconnection) for the link made from there (got {back_reasons})"))
        elif not watcher_lost and w_noconn and not t_noconn:
            out.append(Violation("watch.both-sides", subject,
                                 f"the watcher got Exit(target, noconnection) ({reasons}) but the target got "
                                 f"{back_reasons or 'nothing'}: its node never ran the down"))
        elif not watcher_lost and t_noconn and fired and not w_noconn:
            out.append(Violation("watch.both-sides", subject,
                                 f"the target got Exit(watcher, noconnection) but the watcher got {reasons}"))
    if kind == "spawn_link" and not target_lost and witness_events is not None:
        ends = [e for e in witness_events if e[0] == "down" and e[1] == target_pid]
        end_reasons = [(e[2], _t(e[3], origin)) for e in ends]
        t_noconn = any(e[2] == NOCONNECTION for e in ends)
        if len(ends) != 1:
            out.append(Violation("watch.once", subject,
                                 f"the spawned target's end was seen {len(ends)} times by its local monitor: {end_reasons}"))
        if watcher_lost and not t_noconn:
            out.append(Violation("watch.both-sides", subject,
                                 f"the watcher's node was killed; the process it spawned linked (not trapping) "
                                 f"did not die with noconnection: its end was {end_reasons or 'never (an orphan)'}"))
        elif not watcher_lost and w_noconn and not t_noconn:
            out.append(Violation("watch.both-sides", subject,
                                 f"the watcher got Exit(target, noconnection) ({reasons}) but the linked target "
                                 f"lived on: its end was {end_reasons or 'never'}"))
        elif not watcher_lost and t_noconn and fired and not w_noconn:
            out.append(Violation("watch.both-sides", subject,
                                 f"the target died with noconnection but the watcher got {reasons}"))
    return out


# -- migrants ---------------------------------------------------------------------------------


def check_migrants(steps: list, events: list, pids: list[str], origin: float | None = None) -> list[Violation]:
    """``steps``: (pid, k, node, os pid, t) as the collector got them; ``events``: its Downs of the migrants."""
    out = []
    by_step = defaultdict(list)
    for pid, k, node, ospid, t in steps:
        by_step[(pid, k)].append((node, ospid, t))
    twice = sorted((key, seen) for key, seen in by_step.items() if len(seen) > 1)
    if twice:
        shown = "; ".join(
            f"step {k} of {pid} from " + " and ".join(f"{node} (os pid {ospid}, {_t(t, origin)})" for node, ospid, t in seen)
            for (pid, k), seen in twice[:_SHOWN])
        out.append(Violation("migrant.one-copy", f"{len(twice)} step(s) reported twice", shown))
    for pid in pids:
        ends = [e for e in events if e[0] == "down" and e[1] == pid]
        mine = [(k, node, t) for (p, k), seen in by_step.items() if p == pid for node, _, t in seen]
        if len(ends) != 1:
            last = max(mine, key=lambda s: s[2]) if mine else None
            how = [(e[2], _t(e[3], origin)) for e in ends]
            normal = sum(e[2] == "normal" for e in ends)
            why = (" - it ended twice: two copies ran" if normal > 1 else
                   " - one monitor fired twice" if ends else " - it vanished: no copy ended")
            out.append(Violation("migrant.end", pid,
                                 f"its end was reported {len(ends)} times {how}{why}; last step seen (k, node, t): {last}"))
        if ends:
            first_end = min(e[3] for e in ends)
            after = sorted((t, k, node) for k, node, t in mine if t > first_end)
            # A Down(noconnection) says the node was lost, not that the process ended: a copy on
            # the far side of a partition may run on.  Any other end is final.
            if after and ends[0][2] not in ("normal", NOCONNECTION):
                t, k, node = after[0]
                out.append(Violation("migrant.end", pid,
                                     f"reported dead ({ends[0][2]}) at {_t(first_end, origin)}, yet step {k} ran "
                                     f"on {node} at {_t(t, origin)} ({len(after)} step(s) after its end)"))
    return out


# -- the Executor ---------------------------------------------------------------------------


def check_executor(submitted: int, unresolved: list[int], wrong: list, runs: list, caller_pid: int,
                   down_pids: set[int], bound: float) -> list[Violation]:
    """``runs``: (i, os pid) for every start of a call; ``down_pids``: os pids of nodes declared down or killed."""
    out = []
    if unresolved:
        out.append(Violation("executor.resolved", f"{len(unresolved)} of {submitted} futures",
                             f"not resolved {bound:g} s after the last submission: calls {unresolved[:20]}"))
    if wrong:
        out.append(Violation("executor.resolved", f"{len(wrong)} futures", f"wrong values: {wrong[:_SHOWN]}"))
    here = sorted(i for i, pid in runs if pid == caller_pid)
    if here:
        out.append(Violation("executor.caller", f"{len(here)} calls",
                             f"ran in the calling process (os pid {caller_pid}): calls {here[:20]}"))
    by_call = defaultdict(list)
    for i, pid in runs:
        by_call[i].append(pid)
    # A call sent to a node that is then declared down runs again elsewhere; the first node may
    # still run it later (it was sent before the down), so its runs come in any order.
    rerun = {i: pids for i, pids in by_call.items() if len(pids) > 1 and not set(pids) & down_pids}
    if rerun:
        shown = dict(list(sorted(rerun.items()))[:_SHOWN])
        out.append(Violation("executor.rerun", f"{len(rerun)} calls",
                             f"ran more than once though none of the nodes they ran on was declared down "
                             f"(call: os pids of its runs): {shown}"))
    return out


# -- liveness -------------------------------------------------------------------------------


def check_liveness(faults: list[dict], nodes: dict[str, str], observer_events: list,
                   origin: float | None = None) -> list[Violation]:
    """``faults``: dicts with kind, victim, start, end; ``nodes``: name -> "host:port"."""
    out = []
    for n, f in enumerate(faults):
        victim = nodes[f["victim"]]
        downs = [e for e in observer_events if e[0] == "nodedown" and e[1] == victim]
        if f["kind"] == "stall":
            stalled = [e for e in observer_events if e[0] == "stalled" and e[1] == victim and e[2] >= f["start"] - 1]
            end = max([f["end"]] + [e[3] for e in stalled]) + 1.0
            # A later fault of the same node (a kill, a pause, a cut) may down it for real.
            end = min([end] + [g["start"] for g in faults[n + 1:] if g["victim"] == f["victim"] and g["kind"] != "stall"])
            during = [e for e in downs if f["start"] <= e[3] <= end]
            if during:
                took = f"{stalled[0][3] - stalled[0][2]:.2f} s" if stalled else "unreported"
                out.append(Violation("liveness.false-down", f"stall of {f['victim']}",
                                     f"{victim} was declared down at {_t(during[0][3], origin)}, "
                                     f"{during[0][3] - f['start']:.2f} s into a {f['end'] - f['start']:.1f} s GIL stall "
                                     f"(the C call took {took}) though its process was alive"))
        elif f["kind"] == "kill":
            after = [e[3] for e in downs if e[3] >= f["start"]]
            if not after:
                out.append(Violation("liveness.detect", f"kill of {f['victim']}", f"{victim} was never declared down"))
            elif after[0] - f["start"] > DETECT_LIMIT:
                out.append(Violation("liveness.detect", f"kill of {f['victim']}",
                                     f"{victim} was declared down {after[0] - f['start']:.2f} s after SIGKILL "
                                     f"(limit {DETECT_LIMIT:g} s)"))
    return out


# -- a whole run ----------------------------------------------------------------------------


def check_run(data: dict) -> list[Violation]:
    """Every invariant over one schedule's data (the dict tests/faults/harness.py builds)."""
    out: list[Violation] = []
    killed = set(data["killed"])
    origin = data.get("origin")
    nodes = data["nodes"]
    for s in data["streams"]:
        subject = f"stream {s['from']}->{s['to']}"
        sender, receiver = s["sender_record"], s["receiver_record"]
        if s["to"] not in killed and receiver is not None:
            out += check_stream(subject, receiver["events"], s["sender"], nodes[s["from"]],
                                None if sender is None else sender["sent"],
                                sender is not None and sender["done"], s["from"] in killed, origin)
        if s["from"] not in killed and sender is not None:
            out += check_sender(subject, sender["events"], s["receiver"], s["to"] in killed, origin)
    for w in data["watches"]:
        subject = f"{w['kind']} made on {w['from']} to a process on {w['to']}"
        out += check_watch(subject, w["kind"], w["watcher"], w["target"],
                           None if w["watcher_record"] is None else w["watcher_record"]["events"],
                           None if w["target_record"] is None else w["target_record"]["events"],
                           None if w["witness_record"] is None else w["witness_record"]["events"],
                           w["from"] in killed, w["to"] in killed, origin)
    if data.get("migrants") is not None:
        m = data["migrants"]
        found = check_migrants(m["steps"], m["events"], m["pids"], origin)
        if found and m.get("whereabouts"):  # where each node thinks an unended migrant is
            found = [Violation(v.invariant, v.subject, f"{v.detail}; whereabouts: {m['whereabouts']}")
                     if v.invariant == "migrant.end" else v for v in found]
        out += found
    if data.get("executor") is not None:
        e = data["executor"]
        out += check_executor(e["submitted"], e["unresolved"], e["wrong"], [tuple(r) for r in e["runs"]],
                              e["caller_pid"], set(e["down_pids"]), e["bound"])
    out += check_liveness(data["faults"], nodes, data["observer"], origin)
    for role, node in data.get("missing", []):
        out.append(Violation("report.missing", role, f"on {node}, which was not killed, did not answer the report call"))
    for what in data.get("leaks", []):
        out.append(Violation("cleanup", "after the run", what))
    return out


def summary(violations: list[Violation]) -> dict[str, int]:
    """Violations counted by invariant."""
    return dict(Counter(v.invariant for v in violations))
