"""``pytest --termite cluster.yaml``: run a test suite on the nodes of a termite cluster.

Installed with termite (the ``pytest11`` entry point ``termite``).  The
pytest the user runs is the *controller*:

1. it collects as usual, so ``-k``, ``-m``, ``--lf``, ``--ff`` and
   deselection choose the items exactly as in a local run;
2. meanwhile (from ``pytest_sessionstart``, on a thread of its own) it joins
   the running cluster of that file if its state file says one runs, or
   starts it with termite_launcher.cluster.Cluster (and stops it at the
   end), runs a termite node of its own, and starts one *worker* per cluster
   node (a node is a core), least-loaded nodes first: a relay process spawned
   on the node (termite_launcher/pytest_relay.py) that runs a pytest
   subprocess there (termite_launcher/pytest_worker.py) in the same folder
   with the same arguments;
3. its run loop (``pytest_runtestloop``) hands the items out in collection
   order, in chunks that shrink as the queue empties, to whichever worker
   asks (pull: a worker asks before it runs dry); once the queue is empty an
   idle worker takes back half of what another has not started (work
   stealing).  It turns each report a worker streams back into a
   TestReport and calls the same hooks a local
   run does (``pytest_runtest_logstart``/``logreport``/``logfinish``,
   ``pytest_warning_recorded``), so the terminal, junitxml, the --lf cache,
   ``-x``/``--maxfail`` (``session.shouldfail``), ``-q``/``-v`` behave as in a
   local run.

A worker whose node is lost (``NodeDown``), or whose subprocess dies, gets
the test it was running reported as failed ("worker tw1 on HOST:PORT crashed
while running NODEID", as pytest-xdist does); its other items go to the
other workers, and a worker whose subprocess died is restarted on its node
(at most ``MAX_RESTARTS`` per worker started).  With no worker left the run
ends as interrupted, saying why.

Progress: under ``-v`` each result line names its node (``[HOST:PORT]``, as
xdist's ``[gw0]``); otherwise a compact line per node every
``--termite-status`` seconds; and a per-node summary at the end.

This module holds the options and the hooks; :class:`Controller` ties the
parts, each in a module of its own: the cluster and the workers' relays
(termite_launcher.pytest_cluster), which worker runs which test
(termite_launcher.pytest_schedule), and what the user sees
(termite_launcher.pytest_report).
"""

from __future__ import annotations

import json
import os
import queue
import sys
import time
import uuid

import pytest

from termite_launcher.pytest_cluster import ClusterLink
from termite_launcher.pytest_report import Reporter, report_from_data, warning_kwargs
from termite_launcher.pytest_schedule import Schedule, Worker

__all__ = ["IN_WORKER"]

#: True in a worker subprocess: the ``--termite`` among its arguments is the controller's.
IN_WORKER = False

#: ``sys.path`` as this interpreter started (before conftests add to it): is the
#: current folder on it, as under ``python -m pytest`` and not under ``pytest``?
_CWD_ON_PATH = any(entry in ("", os.getcwd()) for entry in sys.path)

#: Seconds between the per-node status lines (``--termite-status``).
STATUS_EVERY = 10.0
#: Restarts of crashed workers allowed, per worker started (as pytest-xdist); --termite-max-restarts.
MAX_RESTARTS = 4
#: Seconds a worker gets to end its session once told to.
SHUTDOWN_GRACE = 30.0


def pytest_addoption(parser):
    group = parser.getgroup("termite", "distributed runs on a termite cluster")
    group.addoption(
        "--termite", metavar="CLUSTER_YAML", dest="termite", default=None,
        help="run the tests on the nodes of this termite cluster (its cluster.yaml): "
             "joins it if it runs, else starts it and stops it at the end",
    )  # fmt: skip
    group.addoption(
        "--termite-workers", metavar="N", dest="termite_workers", type=int, default=None,
        help="at most N workers (default: one per node of the cluster)",
    )  # fmt: skip
    group.addoption(
        "--termite-max-restarts", metavar="N", dest="termite_max_restarts", type=int, default=None,
        help=f"restart crashed workers at most N times in all (default {MAX_RESTARTS} per worker)",
    )  # fmt: skip
    group.addoption(
        "--termite-copy", dest="termite_copy", action="store_true", default=False,
        help="first copy the rootdir to the workdir: of every remote host (tar over ssh; "
             "without it remote hosts must see the code already, as on a shared filesystem)",
    )  # fmt: skip
    group.addoption(
        "--termite-status", metavar="SECONDS", dest="termite_status", type=float, default=STATUS_EVERY,
        help=f"seconds between per-node progress lines (default {STATUS_EVERY:g}; 0: none; -v names each result's node)",
    )  # fmt: skip


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    if IN_WORKER or not config.getoption("termite", None):
        return
    if config.getoption("usepdb", False) or config.getoption("trace", False):
        raise pytest.UsageError("--termite runs tests on other processes: --pdb and --trace cannot reach them; run locally to debug")
    notes = []
    if getattr(config.option, "dist", "no") != "no" or getattr(config.option, "numprocesses", None):
        config.option.numprocesses, config.option.dist, config.option.tx = None, "no", []  # before xdist's configure
        notes.append("pytest-xdist's -n/--dist are ignored under --termite")
    from termite_launcher.config import ConfigError, load
    from termite_launcher.slurm import in_allocation

    try:
        cluster_config = in_allocation(load(config.getoption("termite")))  # hosts: slurm: the allocation's
    except ConfigError as exc:
        raise pytest.UsageError(f"--termite: {exc}") from None
    if config.getoption("termite_copy"):
        for i, host in enumerate(cluster_config.hosts):
            if not host.local and not host.slurm and not host.workdir:  # Slurm hosts share the files
                raise pytest.UsageError(
                    f"--termite-copy: {cluster_config.path}: hosts[{i}] ({host.address}) has no workdir:; "
                    "add one: the folder on that host the code is copied to"
                )
    workers = config.getoption("termite_workers")
    if workers is not None and workers < 1:
        raise pytest.UsageError(f"--termite-workers must be at least 1, not {workers}")
    config.pluginmanager.register(Controller(config, cluster_config, notes), "termite-controller")


# ---------------------------------------------------------------------------
# The controller
# ---------------------------------------------------------------------------


class _NoWorkerLeft(Exception):
    pass


class Controller:
    """The plugin that runs a session's items on a termite cluster.

    It owns the workers and the run loop, and turns each event (a worker's,
    its relay's, the cluster's: the table in ``_handle`` and
    ``_worker_event``) into calls on the cluster link, the schedule and the
    reporter.
    """

    def __init__(self, config, cluster_config, notes: list[str]):
        self.config = config
        self.cluster_config = cluster_config
        self.notes = notes
        self.events: queue.SimpleQueue = queue.SimpleQueue()
        self.cluster = ClusterLink(config, cluster_config, self.events, notes,
                                   testrunuid=uuid.uuid4().hex, cwd_on_path=_CWD_ON_PATH)
        self.reporter = Reporter(config)
        self.say = self.reporter.say
        self.started = False
        self.workers: dict[int, Worker] = {}
        self.by_relay: dict = {}
        self.keys = iter(range(10**9))
        self.down: set = set()
        self.schedule: Schedule | None = None

    # -- the cluster, the controller's node, the workers: set up on a thread ----

    @pytest.hookimpl(trylast=True)
    def pytest_sessionstart(self, session):
        self.reporter.terminal = self.config.pluginmanager.get_plugin("terminalreporter")
        option = self.config.option
        if option.collectonly or getattr(option, "showfixtures", False) or getattr(option, "show_fixtures_per_test", False):
            return
        # Started now, the cluster and the workers come up while this process collects.
        self.started = True
        self.cluster.start(self._first_workers)

    def _first_workers(self) -> None:
        """On the cluster's thread, once it is up: a worker on each of the first nodes."""
        for ref, label, local, cwd in self.cluster.nodes[: self.cluster.planned]:
            self._spawn_worker(ref, label, local, cwd)

    def _spawn_worker(self, ref, label, local, cwd) -> Worker:
        worker = Worker(next(self.keys), ref, label, local, cwd)
        self.workers[worker.key] = worker
        self.cluster.spawn_relay(worker)
        return worker

    # -- the run loop -------------------------------------------------------------------

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session):
        option = session.config.option
        if (session.testsfailed and not option.continue_on_collection_errors) or option.collectonly or not session.items:
            return None  # pytest's own loop says what to say
        self.session = session
        self.items = session.items
        self.schedule = Schedule(self.items, self.workers, self.cluster.command)
        self._wait_for_setup()
        restarts = self.config.getoption("termite_max_restarts")
        self.restarts_left = MAX_RESTARTS * self.cluster.planned if restarts is None else restarts
        self.next_status = time.monotonic() + self._status_every()
        try:
            self._loop()
        except _NoWorkerLeft as exc:
            raise session.Interrupted(str(exc)) from None
        if session.shouldfail:
            raise session.Failed(session.shouldfail)
        if session.shouldstop:
            raise session.Interrupted(session.shouldstop)
        return True

    def _status_every(self) -> float:
        every = self.config.getoption("termite_status")
        if not every or every <= 0 or self.config.option.verbose > 0:
            return float("inf")
        return every

    def _wait_for_setup(self) -> None:
        while True:
            event = self.events.get()
            if event[0] == "setup":
                break
            if event[0] == "setup-failed":
                raise event[1]
            self._handle(event)  # a worker's first words may come before
        nodes, workers = len(self.cluster.nodes), self.cluster.planned
        self.say(f"{self.cluster.how}: {nodes} node{'s' * (nodes != 1)}, {workers} worker{'s' * (workers != 1)}",
                 verbose_only=True)
        for note in self.notes:
            self.say(note)

    def _loop(self) -> None:
        schedule = self.schedule
        deadline = None
        while True:
            if not schedule.finishing and (schedule.todo == 0 or schedule.stopping):
                schedule.finishing = True
                deadline = time.monotonic() + SHUTDOWN_GRACE
                for worker in self.workers.values():
                    if worker.state == "ready":
                        self.cluster.command(worker, {"cmd": "shutdown"})
                    elif worker.alive:  # still starting: not worth waiting for
                        self._kill(worker, "not needed")
            if schedule.finishing:
                running = [w for w in self.workers.values() if w.alive and w.running is not None]
                if not any(w.alive for w in self.workers.values()):
                    return
                if deadline is not None and time.monotonic() > deadline and not running:
                    for worker in self.workers.values():
                        if worker.alive:
                            self._kill(worker, f"did not end within {SHUTDOWN_GRACE:g} s of being told")
                    return
            elif not any(w.alive for w in self.workers.values()):
                self._no_worker_left()
            try:
                event = self.events.get(timeout=0.5)
            except queue.Empty:
                event = None
            if event is not None:
                self._handle(event)
            now = time.monotonic()
            self._check_starting(now)
            if now >= self.next_status:
                self.reporter.status_line(self.workers.values(), schedule.todo)
                self.next_status = now + self._status_every()

    def _no_worker_left(self) -> None:
        nodes = {w.label for w in self.workers.values()}
        lost = {w.label for w in self.workers.values() if w.node in self.down}
        why = "; ".join(sorted({f"{w.name} on {w.label}: {w.why}" for w in self.workers.values() if w.why}))
        if nodes and lost == nodes:
            head = "termite: no node left: every node of the cluster was lost"
        else:
            head = "termite: no worker left"
        raise _NoWorkerLeft(f"{head}; {self.schedule.todo} tests not run ({why})")

    def _check_starting(self, now: float) -> None:
        limit = self.cluster_config.join_timeout
        for worker in list(self.workers.values()):
            if worker.state == "spawning" and now - worker.since > limit:
                self._lost(worker, f"its relay did not start within {limit:g} s (can that node import termite_launcher?)")

    # -- events ---------------------------------------------------------------------------

    def _handle(self, event) -> None:
        import termite

        kind = event[0] if event.__class__ is tuple else None
        if kind == "tw":
            worker = self.workers.get(event[1])
            for line in event[2]:
                if worker is not None and worker.state not in ("dead", "gone"):
                    self._worker_event(worker, json.loads(line))
        elif kind == "tw-spawned":
            worker = self.workers[event[1]]
            self.by_relay[event[2]] = worker
            self.cluster.relay_spawned(worker, event[2])
        elif kind == "tw-started":
            worker = self.workers[event[1]]
            if worker.state == "spawning":
                worker.state = "started"
        elif kind == "tw-exit":
            _, key, status, tail = event
            worker = self.workers[key]
            if worker.state == "finished" and not worker.assigned:
                worker.state = "gone"
            else:
                self._lost(worker, f"its pytest ended with status {status}", tail)
        elif kind == "tw-error":
            self._lost(self.workers[event[1]], event[2])
        elif kind == "tw-output":
            self.reporter.show_output(self.workers[event[1]], event[2])
        elif isinstance(event, termite.Exit):
            worker = self.by_relay.get(event.pid)
            if worker is not None and worker.alive and event.reason != "normal":
                if event.reason == "noconnection":
                    self.down.add(worker.node)
                    self._lost(worker, f"node {worker.label} was lost")
                else:
                    self._lost(worker, f"its relay ended: {event.reason}")
        elif isinstance(event, termite.NodeDown):
            self.down.add(event.node)
            for worker in list(self.workers.values()):
                if worker.node == event.node and worker.alive:
                    self._lost(worker, f"node {worker.label} was lost ({event.reason})")

    def _worker_event(self, worker: Worker, ev: dict) -> None:
        kind = ev["ev"]
        hook = self.config.hook
        if kind == "report":
            index = ev["i"]
            report = report_from_data(self.config, ev["data"])
            phases = worker.assigned.get(index)
            if phases is not None:
                phases.add(report.when)
            self.reporter.report(worker, index, report)
            self._stop_if_told()
        elif kind == "logstart":
            self.schedule.started(worker, ev["i"])
            hook.pytest_runtest_logstart(nodeid=ev["nodeid"], location=tuple(ev["location"]))
        elif kind == "logfinish":
            hook.pytest_runtest_logfinish(nodeid=ev["nodeid"], location=tuple(ev["location"]))
            self.schedule.finished(worker, ev["i"])
        elif kind == "need":
            self.schedule.serve(worker, ev["pending"])
        elif kind == "ready":
            worker.state = "ready"
            worker.os_pid = ev["pid"]
            worker.tag.ready(worker.name, worker.label, ev["host"], ev["pid"], ev["python"])
            worker.collect_errors = ev["errors"]
        elif kind == "missing":
            for index, nodeid in ev["items"]:
                errors = "; ".join(ev["errors"]) or "none"
                self._fail_item(
                    worker, index,
                    f"worker {worker.name} on {worker.label} did not collect {nodeid!r} (it collected "
                    f"{ev['collected']} items; collection errors: {errors}); does that node see this code at "
                    f"{worker.cwd}?",
                )  # fmt: skip
        elif kind == "warning":
            if ev["when"] == "runtest":  # config and collect warnings: this process had them too
                hook.pytest_warning_recorded.call_historic(kwargs=warning_kwargs(ev))
        elif kind == "unscheduled":
            self.schedule.unscheduled(worker, ev["items"])
        elif kind == "finished":
            worker.state = "finished"
            if self.schedule.stopping:  # it stopped at -x or --maxfail, as this process did
                self.schedule.drop_assigned(worker)
        elif kind == "internal_error":
            self.say(f"internal error in worker {worker.name} on {worker.label}:\n{ev['text']}")

    def _stop_if_told(self) -> None:
        if self.session.shouldfail or self.session.shouldstop:
            self.schedule.stop()

    # -- workers ------------------------------------------------------------------------------

    def _kill(self, worker: Worker, why: str) -> None:
        self.cluster.kill(worker)
        worker.state, worker.why = "gone", why

    def _lost(self, worker: Worker, why: str, tail: str = "") -> None:
        """A worker ended before its time: report its running test as crashed, requeue the rest."""
        if worker.state in ("dead", "gone"):
            return
        schedule = self.schedule
        was_ready = worker.state in ("ready", "finished")
        worker.state, worker.why = "dead", why
        self.cluster.kill(worker)  # a node thought lost may be only slow: its items go elsewhere, so stop it
        crashed, worker.running = worker.running, None
        if crashed is None and was_ready and worker.assigned:
            # A node killed outright takes along what its relay had read and not yet passed
            # on, the running test's logstart too.  The worker runs its items in the order
            # sent: the first not finished is the one it was on (pytest-xdist says the same).
            # Run again instead, a test that kills its node would kill the next one as well.
            crashed = next(iter(worker.assigned))
        if crashed is not None:
            nodeid = self.items[crashed].nodeid
            text = f"worker {worker.name} on {worker.label} crashed while running {nodeid!r}: {why}"
            if tail.strip():
                text += "\nthe end of its stderr:\n" + tail.rstrip()
            self._fail_item(worker, crashed, text, started=True)
        schedule.take_back(worker)
        if was_ready:
            self.say(f"worker {worker.name} on {worker.label} crashed: {why}")
        else:
            shown = f"\n{tail.rstrip()}" if tail.strip() else ""
            self.say(f"worker {worker.name} on {worker.label} could not start: {why}{shown}")
        ending = schedule.stopping or schedule.finishing
        if was_ready and worker.node not in self.down and self.restarts_left > 0 and not ending:
            self.restarts_left -= 1
            replacement = self._spawn_worker(worker.node, worker.label, worker.local, worker.cwd)
            self.say(f"worker {replacement.name} replaces it on {worker.label}")
        schedule.feed_idle()

    def _fail_item(self, worker: Worker, index: int, text: str, started: bool = False) -> None:
        """Report item ``index`` failed with ``text`` (a crash, or an item the worker did not have); it is done."""
        phases = self.schedule.failed(worker, index)
        when = "teardown" if "call" in phases else "call"
        self.reporter.failed(worker, index, self.items[index], text, when, started)
        self._stop_if_told()

    # -- the end -------------------------------------------------------------------------------

    def pytest_terminal_summary(self, terminalreporter):
        if self.schedule is None or not self.items or self.config.option.verbose < 0:
            return  # the suite did not run here (nothing collected, collection errors)
        self.reporter.summary(terminalreporter, self.cluster, self.cluster_config.path, self.workers.values())

    def pytest_unconfigure(self, config):
        if not self.started:
            return
        while True:  # relays spawned while nobody read the events (a run that ended at collection)
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                break
            if event[0] == "tw-spawned":
                self.workers[event[1]].relay = event[2]
        if self.cluster.up:
            for worker in self.workers.values():
                if worker.alive:
                    try:
                        self.cluster.kill(worker)
                    except Exception:  # noqa: BLE001 - the node may be down already
                        pass
        self.cluster.stop()
