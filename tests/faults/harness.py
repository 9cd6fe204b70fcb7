"""One fault schedule, from start to verdict: nodes, workloads, faults, records, invariants.

    outcome = run_schedule(Schedule("pause B", (Fault("pause", "B", at=1.0, seconds=3.0),)), workdir)
    assert not outcome.violations, outcome.report()

The phases of a run (times from ``go``):

1. start: the node processes (A, B, C by default: ``python -m termite.node``
   with the cluster's key and short heartbeats, each with a group id of its
   own for the firewall) and, in this process, the *controller*: a
   termite.Node with an ``observer`` (NodeUp/NodeDown of every node), a
   ``collector`` (migrant steps) and an Executor over the nodes;
2. deploy (tests/nodecode/fault_workloads.deploy): for every ordered pair
   (X, Y) a numbered stream X -> Y, and a link, a monitor and a spawn_link
   made on X towards Y, each end recording what it gets;
3. go: the streams run until ``end_at`` (the last fault's end + ``tail``);
   migrants bounce between their two nodes; an Executor call is submitted
   every ``job_every`` s; the nemesis (on its own thread) does each fault at
   its time, each bounded and undone in a finally;
4. settle, then finish: every link target still alive is told to stop
   (ends ``normal``), which fires what is still linked or monitored;
5. gather every recorder's report (at once, with a deadline), stop every
   node (SIGCONT, SIGTERM, SIGKILL) and the controller, look for leftover
   OS processes and threads;
6. check (tests/faults/invariants.py): the violations, each naming its
   invariant and the data that broke it.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import itertools
import os
import random
import signal
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
NODECODE = os.path.join(os.path.dirname(HERE), "nodecode")
for _path in (NODECODE, HERE):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import psutil  # noqa: E402

import termite  # noqa: E402
import fault_workloads as fw  # noqa: E402
from invariants import Violation, check_run  # noqa: E402
from nemesis import KINDS, FaultNode, Firewall, Nemesis, cut_unavailable, new_gid, sweep_stale_tables  # noqa: E402

__all__ = ["Fault", "Schedule", "Outcome", "run_schedule", "random_schedule", "HEARTBEAT", "DEFAULT_HEARTBEAT"]

#: The nodes' heartbeat settings (timeout, interval): those of the tests' ``cluster`` fixture (tests/conftest.py).
HEARTBEAT = (1.0, 0.1)
#: termite's defaults (termite.Network), for schedules that check what a user gets.
DEFAULT_HEARTBEAT = (3.0, 0.5)


@dataclasses.dataclass(frozen=True)
class Fault:
    """``kind`` (kill, pause, stall, cut) done to node ``victim`` at ``at`` s after go, for ``seconds``.

    ``align``: first wait (at most 2 s) until a migrant that visits the victim
    has just arrived on its other node, so that its next migration goes to
    the victim during the fault.
    """

    kind: str
    victim: str
    at: float
    seconds: float = 0.0
    align: bool = False

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Fault.kind: {self.kind!r} is not one of {KINDS}")


@dataclasses.dataclass(frozen=True)
class Schedule:
    name: str
    faults: tuple[Fault, ...]
    nodes: tuple[str, ...] = ("A", "B", "C")
    migrants: tuple[tuple[str, str], ...] = (("A", "B"),)
    burst: int = 5  # messages per tick per stream
    tick: float = 0.01
    dwell: float = 0.3  # seconds a migrant stays on a node
    job_every: float = 0.1  # seconds between Executor submissions (0: no Executor)
    job_seconds: float = 0.2  # how long one call runs
    tail: float = 1.5  # seconds the streams go on after the last fault
    settle: float = 2.5  # seconds after the streams end before targets are stopped
    job_bound: float = 15.0  # seconds after the last submission by which every future must be resolved
    heartbeat: tuple[float, float] = HEARTBEAT  # (timeout, interval) of every node, the test's included

    def needs_cut(self) -> bool:
        return any(f.kind == "cut" for f in self.faults)

    def text(self) -> str:
        hb = "" if self.heartbeat == HEARTBEAT else f" (heartbeat timeout {self.heartbeat[0]:g} s)"
        faults = ", ".join(
            f"{f.kind} {f.victim} at +{f.at:g}s" + (f" for {f.seconds:g}s" if f.kind != "kill" else "") for f in self.faults)
        return f"{self.name}{hb}" + (f": {faults}" if faults else "")


@dataclasses.dataclass
class Outcome:
    schedule: Schedule
    violations: list[Violation]
    data: dict
    faults: list
    seconds: float
    logs: dict[str, str]

    def report(self, logs: bool = True) -> str:
        lines = [f"schedule {self.schedule.text()} ({self.seconds:.1f} s)",
                 "nodes: " + ", ".join(f"{k}={v} (os pid {self.data['os_pids'][k]})" for k, v in self.data["nodes"].items()),
                 "faults done: " + "; ".join(
                     f"{f.text()} at {f.start - self.data['origin']:+.2f}s" for f in self.faults)]
        stalls = [e for e in self.data["observer"] if e[0] == "stalled"]
        if stalls:
            lines.append("stalls reported: " + "; ".join(f"{e[1]} held the GIL {e[3] - e[2]:.2f} s" for e in stalls))
        downs = [(e[0], e[1], round(e[3] - self.data["origin"], 2)) for e in self.data["observer"] if e[0] == "nodedown"]
        lines.append(f"NodeDowns seen by the test's node: {downs or 'none'}")
        lines.append(f"{len(self.violations)} violation(s):")
        lines += [f"  {v}" for v in self.violations]
        if logs and self.violations:
            for name, text in self.logs.items():
                tail = text.strip().splitlines()[-8:]
                if tail:
                    lines.append(f"--- node {name} logged (last lines):")
                    lines += [f"    {line}" for line in tail]
        return "\n".join(lines)


def _keyfile(workdir: str) -> str:
    path = os.path.join(workdir, "cluster.key")
    if not os.path.exists(path):
        termite.generate_keys(path)
    return path


def run_schedule(schedule: Schedule, workdir: str, log=lambda text: None) -> Outcome:
    """Run ``schedule`` on fresh nodes; return its violations and data.  Stops everything it started."""
    started = time.monotonic()
    keyfile = _keyfile(workdir)
    threads_before = set(threading.enumerate())
    firewall = None
    if schedule.needs_cut():
        why = cut_unavailable()
        if why:
            raise RuntimeError(why)
        sweep_stale_tables()
        firewall = Firewall()
    nodes: dict[str, FaultNode] = {}
    controller = None
    executor = None
    nemesis = None
    data: dict = {}
    logs: dict[str, str] = {}
    try:
        hb_timeout, hb_interval = schedule.heartbeat
        hb = ["--heartbeat-timeout", str(hb_timeout), "--heartbeat-interval", str(hb_interval)]
        for name in schedule.nodes:
            gid = new_gid() if os.geteuid() == 0 else None  # a group of its own needs root (and only cuts need it)
            if firewall is not None:
                firewall.mark(gid)
            nodes[name] = FaultNode(name, ["--keys", keyfile, *hb], [NODECODE], gid=gid)
        for node in nodes.values():
            node.ready()
        refs = {name: node.ref for name, node in nodes.items()}
        # $TERMITE_IDLE_CLOSE: the nodes' idle close (python -m termite.node reads it), and this one's
        idle = os.environ.get("TERMITE_IDLE_CLOSE")
        controller = termite.Node(port=0, keys=keyfile, heartbeat_timeout=hb_timeout, heartbeat_interval=hb_interval,
                                  **({"idle_close": float(idle)} if idle else {})).start()
        for ref in refs.values():
            controller.connect(ref.host, ref.port, timeout=10)
        observer = controller.spawn(fw.observer, list(refs.values()))
        collector = controller.spawn(fw.collector)
        pairs = [(x, y) for x, y in itertools.permutations(schedule.nodes, 2)]
        log(f"nodes up ({time.monotonic() - started:.1f} s)")
        layout = controller.run(fw.deploy, refs, pairs, schedule.burst, schedule.tick, timeout=60)
        if schedule.job_every:
            executor = termite.Executor(list(refs.values()), node=controller, interval=0.25, window=4)
        nemesis = Nemesis(nodes, controller, observer, firewall)
        last = max((f.at + (0 if f.kind == "kill" else f.seconds) for f in schedule.faults), default=0.0)
        origin = time.time()
        end_at = origin + last + schedule.tail
        migrant_nodes = [[refs[a], refs[b]] for a, b in schedule.migrants]
        migrants = controller.run(fw.go, [s["sender"] for s in layout["streams"]], end_at, migrant_nodes,
                                  collector, schedule.dwell, timeout=30)
        log(f"go ({time.monotonic() - started:.1f} s): {schedule.text()}")

        errors: list[BaseException] = []

        def run_faults():
            try:
                for fault in schedule.faults:
                    delay = origin + fault.at - time.time()
                    if delay > 0:
                        time.sleep(delay)
                    if fault.align:
                        _align(controller, collector, schedule, refs, fault.victim)
                    nemesis.apply(fault.kind, fault.victim, fault.seconds)
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                errors.append(exc)
            finally:
                nemesis.undo_all()

        chaos = threading.Thread(target=run_faults, name="nemesis", daemon=True)
        chaos.start()
        futures: dict[int, concurrent.futures.Future] = {}
        jobs_log = os.path.join(workdir, f"jobs-{os.getpid()}-{time.monotonic_ns()}.log")
        i = 0
        while time.time() < end_at:
            if executor is not None:
                futures[i] = executor.submit(fw.job, i, jobs_log, schedule.job_seconds)
                i += 1
            time.sleep(schedule.job_every or 0.1)
        last_submit = time.monotonic()
        chaos.join(last + 60)
        if chaos.is_alive() or errors:
            raise RuntimeError(f"the nemesis failed: {errors or 'it did not finish'}")
        log(f"streams ended ({time.monotonic() - started:.1f} s)")
        time.sleep(schedule.settle)
        killed = sorted({f.victim for f in nemesis.done if f.kind == "kill"})
        live = {name for name in nodes if name not in killed}

        # Gather every recorder's report at once: the link targets first (stopping them ends them),
        # then, once they are stopped and what that fires has arrived, all the others.
        roles: list[tuple[str, str, object]] = []  # (role, node name, pid)
        for k, s in enumerate(layout["streams"]):
            roles += [(f"stream{k}.sender", s["from"], s["sender"]), (f"stream{k}.receiver", s["to"], s["receiver"])]
        for k, w in enumerate(layout["watches"]):
            roles += [(f"watch{k}.watcher", w["from"], w["watcher"])]
            if w["witness"] is not None:
                roles.append((f"watch{k}.witness", w["to"], w["witness"]))
        first = [(f"watch{k}.target", w["to"], w["target"]) for k, w in enumerate(layout["watches"])
                 if w["kind"] == "link" and w["to"] in live]
        got = controller.run(fw.gather, [pid for _, _, pid in first], 5.0, timeout=30)
        records = {first[k][0]: got.get(k) for k in range(len(first))}
        missing = [(role, name) for k, (role, name, _) in enumerate(first) if k not in got]
        log("targets reported")
        targets = [w["target"] for w in layout["watches"] if w["to"] in live]
        controller.run(fw.finish, targets, 1.0, timeout=30)
        asked = [(role, name, pid) for role, name, pid in roles if name in live]
        got = controller.run(fw.gather, [pid for _, _, pid in asked] + [observer, collector], 5.0, timeout=30)
        records.update({asked[k][0]: got.get(k) for k in range(len(asked))})
        missing += [(role, name) for k, (role, name, _) in enumerate(asked) if k not in got]
        observed = got.get(len(asked), {"events": []})["events"]
        collected = got.get(len(asked) + 1)
        if collected is None:
            missing.append(("collector", "the test's node"))
        log(f"all reported ({time.monotonic() - started:.1f} s)")
        whereabouts = None
        if collected is not None:  # a migrant whose end nobody reported: where does each node think it is?
            ended = {e[1] for e in collected["events"] if e[0] == "down"}
            unended = [p for p in migrants if fw.pid_text(p) not in ended]
            if unended:
                whereabouts = controller.run(fw.whereabouts_everywhere, {n: refs[n] for n in live}, unended, 5.0,
                                             timeout=30)

        # The Executor: every future resolved (value or error) within the bound?
        executor_data = None
        if executor is not None:
            deadline = last_submit + schedule.job_bound
            concurrent.futures.wait(list(futures.values()), timeout=max(0.0, deadline - time.monotonic()))
            unresolved = sorted(k for k, f in futures.items() if not f.done())
            wrong = []
            for k, f in futures.items():
                if f.done() and not f.cancelled() and f.exception() is None and f.result()[0] != k * k:
                    wrong.append((k, f.result()))
            errors_seen = [(k, repr(f.exception())[:120]) for k, f in futures.items()
                           if f.done() and not f.cancelled() and f.exception() is not None]
            runs = []
            if os.path.exists(jobs_log):
                with open(jobs_log) as fh:
                    for line in fh:
                        parts = line.split()
                        if len(parts) == 3:
                            runs.append((int(parts[0]), int(parts[1])))
                os.unlink(jobs_log)
            by_address = {fw.node_text(ref): nodes[name].pid for name, ref in refs.items()}
            down_pids = {by_address[e[1]] for e in observed if e[0] == "nodedown" and e[1] in by_address}
            down_pids |= {nodes[name].pid for name in killed}
            executor_data = {"submitted": len(futures), "unresolved": unresolved, "wrong": wrong,
                             "errors": errors_seen, "runs": runs, "caller_pid": os.getpid(),
                             "down_pids": sorted(down_pids), "bound": schedule.job_bound}
            for f in futures.values():
                f.cancel()

        data = {
            "origin": origin,
            "nodes": {name: fw.node_text(ref) for name, ref in refs.items()},
            "os_pids": {name: node.pid for name, node in nodes.items()},
            "killed": killed,
            "faults": [dataclasses.asdict(f) for f in nemesis.done],
            "observer": observed,
            "streams": [{"from": s["from"], "to": s["to"], "sender": fw.pid_text(s["sender"]),
                         "receiver": fw.pid_text(s["receiver"]),
                         "sender_record": records.get(f"stream{k}.sender"),
                         "receiver_record": records.get(f"stream{k}.receiver")}
                        for k, s in enumerate(layout["streams"])],
            "watches": [{"kind": w["kind"], "from": w["from"], "to": w["to"], "watcher": fw.pid_text(w["watcher"]),
                         "target": fw.pid_text(w["target"]),
                         "watcher_record": records.get(f"watch{k}.watcher"),
                         "target_record": records.get(f"watch{k}.target"),
                         "witness_record": records.get(f"watch{k}.witness")}
                        for k, w in enumerate(layout["watches"])],
            "migrants": None if collected is None else {
                "steps": collected["steps"], "refused": collected["refused"], "events": collected["events"],
                "pids": [fw.pid_text(p) for p in migrants], "whereabouts": whereabouts},
            "executor": executor_data,
            "missing": missing,
        }
    finally:
        if nemesis is not None:
            nemesis.undo_all()
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
        for node in nodes.values():  # all at once: each takes a moment to end
            node.signal(signal.SIGCONT)
            node.signal(signal.SIGTERM)
        for name, node in nodes.items():
            node.stop()
            logs[name] = node.logged()
        if controller is not None:
            controller.stop()
        if firewall is not None:
            firewall.close()
    log(f"stopped ({time.monotonic() - started:.1f} s)")
    data["leaks"] = _leaks(nodes, threads_before)
    violations = check_run(data) if "streams" in data else []
    return Outcome(schedule, violations, data, nemesis.done if nemesis else [], time.monotonic() - started, logs)


def _align(controller, collector, schedule: Schedule, refs: dict, victim: str, bound: float = 2.0) -> None:
    """Wait until a migrant that visits ``victim`` has just reached its other node (at most ``bound`` s)."""
    pairs = [(a, b) for a, b in schedule.migrants if victim in (a, b)]
    if not pairs:
        return
    other = {fw.node_text(refs[b if a == victim else a]) for a, b in pairs}
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        latest = controller.call(collector, "latest", timeout=1.0, default=None)
        if latest is not None and latest[2] in other and time.time() - latest[4] < schedule.dwell / 3:
            return  # it arrived there just now: its next migration goes to the victim
        time.sleep(0.01)


def _leaks(nodes: dict[str, FaultNode], threads_before: set) -> list[str]:
    leaks = []
    for name, node in nodes.items():
        if node.proc.poll() is None:
            leaks.append(f"node {name} (os pid {node.pid}) is still running")
        elif psutil.pid_exists(node.pid):
            try:
                status = psutil.Process(node.pid).status()
            except psutil.NoSuchProcess:
                continue
            leaks.append(f"node {name} (os pid {node.pid}) still exists ({status})")
    deadline = time.monotonic() + 5.0
    while True:
        left = [t for t in threading.enumerate() if t not in threads_before and t.is_alive()]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    leaks += [f"thread {t.name!r} is still running" for t in left]
    return leaks


def random_schedule(rng: random.Random, index: int, cut_ok: bool) -> Schedule:
    """A randomized schedule: one or two faults on random nodes at random times."""
    kinds = [k for k in KINDS if k != "cut" or cut_ok]
    faults = []
    at = rng.uniform(0.3, 1.5)
    killed = set()
    for _ in range(rng.choice((1, 1, 2))):
        kind = rng.choice(kinds)
        victim = rng.choice([n for n in ("A", "B", "C") if n not in killed])
        if kind == "kill":
            if len(killed) == 1:  # keep two nodes alive: the streams between them must stay whole
                kind = rng.choice([k for k in kinds if k != "kill"])
            else:
                killed.add(victim)
        seconds = 0.0 if kind == "kill" else round(rng.uniform(0.5, 4.0), 2)
        faults.append(Fault(kind, victim, round(at, 2), seconds, align=rng.random() < 0.5))
        at += seconds + rng.uniform(0.2, 1.5)
    migrants = (tuple(rng.sample(("A", "B", "C"), 2)),)
    return Schedule(f"random #{index}", tuple(faults), migrants=migrants)
