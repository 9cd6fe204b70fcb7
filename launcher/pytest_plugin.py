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
"""

from __future__ import annotations

import collections
import importlib
import json
import os
import queue
import sys
import threading
import time
import types
import uuid
import warnings
from pathlib import Path

import pytest

__all__ = ["IN_WORKER"]

#: True in a worker subprocess: the ``--termite`` among its arguments is the controller's.
IN_WORKER = False

#: ``sys.path`` as this interpreter started (before conftests add to it): is the
#: current folder on it, as under ``python -m pytest`` and not under ``pytest``?
_CWD_ON_PATH = any(entry in ("", os.getcwd()) for entry in sys.path)

#: Seconds between the per-node status lines (``--termite-status``).
STATUS_EVERY = 10.0
#: The most items sent to a worker at once; fewer as the queue empties.
MAX_CHUNK = 64
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

    try:
        cluster_config = load(config.getoption("termite"))
    except ConfigError as exc:
        raise pytest.UsageError(f"--termite: {exc}") from None
    if config.getoption("termite_copy"):
        for i, host in enumerate(cluster_config.hosts):
            if not host.local and not host.workdir:
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


class _Tag:
    """What pytest's reporters read from ``report.node`` (as under xdist: ``[gw0]`` in -v lines)."""

    def __init__(self, name: str, label: str):
        self.gateway = types.SimpleNamespace(id=label)
        self.workerinput = {"workerid": name}
        # The line above a failure's traceback (BaseReport.toterminal): where it ran.
        self._workerinfocache = f"[{name}] on node {label}"

    def __repr__(self) -> str:
        return f"<termite worker {self.workerinput['workerid']} on {self.gateway.id}>"


class _Worker:
    """What the controller knows of one worker."""

    def __init__(self, key: int, node, label: str, local: bool, cwd: str):
        self.key, self.node, self.label, self.local, self.cwd = key, node, label, local, cwd
        self.name = f"tw{key}"
        self.tag = _Tag(self.name, label)
        self.state = "spawning"  # started, ready, finished, gone (ended well), dead
        self.relay = None  # its relay's pid
        self.outbox: list[str] = []  # commands before the relay's pid is known
        self.assigned: dict[int, set] = {}  # item index -> phases reported, in the order sent
        self.running = None  # the index whose logstart came, not its logfinish
        self.idle = False  # asked with nothing pending, and got nothing yet
        self.done = 0
        self.since = time.monotonic()
        self.busy_since = None
        self.busy = 0.0
        self.os_pid = None
        self.why = ""  # how it ended, if it died
        self.stealing = False  # a "steal" is unanswered

    @property
    def alive(self) -> bool:
        return self.state in ("spawning", "started", "ready")


class _NoWorkerLeft(Exception):
    pass


class Controller:
    """The plugin that runs a session's items on a termite cluster."""

    def __init__(self, config, cluster_config, notes: list[str]):
        self.config = config
        self.cluster_config = cluster_config
        self.notes = notes
        self.events: queue.SimpleQueue = queue.SimpleQueue()
        self.thread = None
        self.stop_event = threading.Event()
        self.setup = None  # filled by the setup thread: node, hub, nodes, how
        self.workers: dict[int, _Worker] = {}
        self.by_relay: dict = {}
        self.keys = iter(range(10**9))
        self.down: set = set()
        self.terminal = None
        self.testrunuid = uuid.uuid4().hex
        self.basetemp = None

    # -- the cluster, the controller's node, the workers: set up on a thread ----

    @pytest.hookimpl(trylast=True)
    def pytest_sessionstart(self, session):
        self.terminal = self.config.pluginmanager.get_plugin("terminalreporter")
        option = self.config.option
        if option.collectonly or getattr(option, "showfixtures", False) or getattr(option, "show_fixtures_per_test", False):
            return
        try:
            self.basetemp = self.config._tmp_path_factory.getbasetemp()  # as xdist: a worker's is a folder in it
        except Exception:  # noqa: BLE001 - workers then make their own
            self.basetemp = None
        # Started now, the cluster and the workers come up while this process collects.
        # The thread lives until the end: the nodes it forks die with it (PR_SET_PDEATHSIG).
        self.thread = threading.Thread(target=self._cluster_thread, name="termite-pytest-cluster", daemon=True)
        self.thread.start()

    def _worker_args(self) -> tuple[list[str], dict]:
        config = self.config
        env = {}
        if os.environ.get("PYTHONPATH"):
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        return list(config.invocation_params.args), env

    def _cluster_thread(self) -> None:
        cluster = here = None
        try:
            cluster, here, nodes, how = self._join_or_start()
            hub = here.spawn(_hub, self.events)
            self.setup = types.SimpleNamespace(node=here, hub=hub, nodes=nodes, how=how, cluster=cluster)
            limit = self.config.getoption("termite_workers") or len(nodes)
            self._planned = min(limit, len(nodes))
            for ref, label, local, cwd in nodes[: self._planned]:
                self._spawn_worker(ref, label, local, cwd)
            self.events.put(("setup",))  # after the spawns: from now on only the main thread touches workers
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            self.events.put(("setup-failed", exc))
        self.stop_event.wait()
        if here is not None:
            here.stop()
        if cluster is not None:
            cluster.stop()

    def _join_or_start(self):
        from termite_launcher.cluster import Cluster, LaunchError, _alive, launcher_host, read_state

        import termite

        config = self.cluster_config
        hosts = {host.address: host for host in config.hosts}
        if self.config.getoption("termite_copy"):
            self._copy_code([host for host in config.hosts if not host.local])
        network = dict(
            host=launcher_host(config), port=0, keys=str(config.keys),
            heartbeat_interval=config.heartbeat_interval, heartbeat_timeout=config.heartbeat_timeout,
        )  # fmt: skip
        state_file = config.state_dir / f"{config.name}.json"
        if state_file.exists() and config.keys.exists():
            state = read_state(state_file)
            here = termite.Node(**network).start()
            nodes = []
            for node in state.get("nodes", ()):
                if not node.get("remote") and not _alive(node["os_pid"]):
                    continue  # a node of a cluster that has ended
                host, port = node["address"].rsplit(":", 1)
                try:
                    ref = here.connect(host, int(port), timeout=min(3.0, config.join_timeout))
                except termite.Timeout:
                    continue
                host_config = hosts.get(node.get("host"))
                nodes.append((ref, node["address"], not node.get("remote"), host_config))
            if nodes:
                nodes = self._by_load(here, nodes)
                return None, here, [self._place(*n) for n in nodes], f"joined running cluster {config.name!r}"
            here.stop()
        cluster = Cluster(config)
        try:
            cluster.start()  # it makes the key file if there is none yet
        except LaunchError as exc:
            raise pytest.UsageError(f"--termite: {exc}") from None
        try:
            here = termite.Node(**network).start()
            cluster.joined(here, config.join_timeout)
        except BaseException:
            cluster.stop()
            raise
        nodes = [(node.ref, node.address, node.host.local, node.host) for node in cluster.nodes]
        return cluster, here, [self._place(*n) for n in nodes], f"started cluster {config.name!r}"

    def _copy_code(self, hosts) -> None:
        """``--termite-copy``: the rootdir into each remote host's workdir, all at once, before any node starts."""
        from termite_launcher.remote import RemoteError, copy_folder

        root = self.config.rootpath
        errors: list[RemoteError] = []

        def copy(host):
            try:
                copy_folder(host, root)
            except RemoteError as exc:
                errors.append(exc)

        copiers = [threading.Thread(target=copy, args=(host,), daemon=True) for host in hosts]
        for copier in copiers:
            copier.start()
        for copier in copiers:
            copier.join()
        if errors:
            raise pytest.UsageError(f"--termite-copy: {errors[0]}")
        self.notes.extend(f"copied {root} to {host.label or host.address}:{host.workdir}" for host in hosts)

    def _by_load(self, here, nodes):
        """The nodes of a running cluster, least loaded first (idle nodes take the first workers)."""
        import termite

        def load(node):
            try:
                return here.run(termite.node_load, node[0], 2.0).value
            except Exception:  # noqa: BLE001 - a node that does not answer goes last
                return float("inf")

        loads = {node[1]: load(node) for node in nodes}
        return sorted(nodes, key=lambda node: loads[node[1]])

    def _place(self, ref, label, local, host):
        """Where a worker runs on a node: this folder, or its counterpart under a remote host's workdir."""
        here = self.config.invocation_params.dir
        if local or host is None or not host.workdir:
            return ref, label, local, str(here)
        try:
            relative = Path(here).relative_to(self.config.rootpath)
        except ValueError:
            relative = Path()
        return ref, label, local, str(Path(host.workdir) / relative)

    def _spawn_worker(self, ref, label, local, cwd) -> _Worker:
        key = next(self.keys)
        worker = _Worker(key, ref, label, local, cwd)
        self.workers[key] = worker
        args, env = self._worker_args()
        info = {
            "id": worker.name,
            "count": self._planned,
            "testrunuid": self.testrunuid,
            # On another host that folder does not exist: workers there make their own.
            "basetemp": str(self.basetemp / worker.name) if local and self.basetemp is not None else None,
            "cwd_on_path": _CWD_ON_PATH,
        }
        show_output = self.config.getoption("capture", "fd") == "no"  # -s: what tests print is shown here
        self.setup.node.send(self.setup.hub, ("spawn", key, ref, ([json.dumps(info), *args], cwd, env, show_output)))
        return worker

    # -- the run loop -------------------------------------------------------------------

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session):
        option = session.config.option
        if (session.testsfailed and not option.continue_on_collection_errors) or option.collectonly or not session.items:
            return None  # pytest's own loop says what to say
        self.session = session
        self.items = session.items
        self.queue = collections.deque(range(len(self.items)))
        self.todo = len(self.items)  # items not reported done yet
        self.stopping = self.finishing = False
        self._wait_for_setup()
        restarts = self.config.getoption("termite_max_restarts")
        self.restarts_left = MAX_RESTARTS * self._planned if restarts is None else restarts
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
        nodes, workers = len(self.setup.nodes), self._planned
        self._say(f"{self.setup.how}: {nodes} node{'s' * (nodes != 1)}, {workers} worker{'s' * (workers != 1)}",
                  verbose_only=True)
        for note in self.notes:
            self._say(note)

    def _loop(self) -> None:
        deadline = None
        while True:
            if not self.finishing and (self.todo == 0 or self.stopping):
                self.finishing = True
                deadline = time.monotonic() + SHUTDOWN_GRACE
                for worker in self.workers.values():
                    if worker.state == "ready":
                        self._command(worker, {"cmd": "shutdown"})
                    elif worker.alive:  # still starting: not worth waiting for
                        self._kill(worker, "not needed")
            if self.finishing:
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
                self._status_line()
                self.next_status = now + self._status_every()

    def _no_worker_left(self) -> None:
        nodes = {w.label for w in self.workers.values()}
        lost = {w.label for w in self.workers.values() if w.node in self.down}
        why = "; ".join(sorted({f"{w.name} on {w.label}: {w.why}" for w in self.workers.values() if w.why}))
        if nodes and lost == nodes:
            head = "termite: no node left: every node of the cluster was lost"
        else:
            head = "termite: no worker left"
        raise _NoWorkerLeft(f"{head}; {self.todo} tests not run ({why})")

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
            worker.relay = event[2]
            self.by_relay[event[2]] = worker
            for line in worker.outbox:
                self.setup.node.send(worker.relay, line)
            worker.outbox.clear()
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
            self._show_output(self.workers[event[1]], event[2])
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

    def _worker_event(self, worker: _Worker, ev: dict) -> None:
        kind = ev["ev"]
        hook = self.config.hook
        if kind == "report":
            index = ev["i"]
            report = _report(self.config, ev["data"])
            report.node = worker.tag
            report.worker_id = worker.name
            report.item_index = index
            phases = worker.assigned.get(index)
            if phases is not None:
                phases.add(report.when)
            hook.pytest_runtest_logreport(report=report)
            if self.session.shouldfail or self.session.shouldstop:
                self._stop()
        elif kind == "logstart":
            worker.running = ev["i"]
            worker.busy_since = time.monotonic()
            hook.pytest_runtest_logstart(nodeid=ev["nodeid"], location=tuple(ev["location"]))
        elif kind == "logfinish":
            hook.pytest_runtest_logfinish(nodeid=ev["nodeid"], location=tuple(ev["location"]))
            self._finished_item(worker, ev["i"])
        elif kind == "need":
            self._serve(worker, ev["pending"])
        elif kind == "ready":
            worker.state = "ready"
            worker.os_pid = ev["pid"]
            worker.tag._workerinfocache = (
                f"[{worker.name}] on node {worker.label}: host {ev['host']}, pid {ev['pid']} -- {ev['python']}"
            )
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
                hook.pytest_warning_recorded.call_historic(kwargs=_warning(ev))
        elif kind == "unscheduled":
            self._unscheduled(worker, ev["items"])
        elif kind == "finished":
            worker.state = "finished"
            if self.stopping:  # it stopped at -x or --maxfail, as this process did: its other items are dropped
                self.todo -= len(worker.assigned)
                worker.assigned.clear()
        elif kind == "internal_error":
            self._say(f"internal error in worker {worker.name} on {worker.label}:\n{ev['text']}")

    def _finished_item(self, worker: _Worker, index: int) -> None:
        if worker.assigned.pop(index, None) is not None:
            self.todo -= 1
            worker.done += 1
        if worker.running == index:
            worker.running = None
            if worker.busy_since is not None:
                worker.busy += time.monotonic() - worker.busy_since
                worker.busy_since = None

    # -- scheduling -------------------------------------------------------------------------

    def _serve(self, worker: _Worker, pending: int) -> None:
        """Answer a worker's "need": a chunk of the queue, "none" for now, or stop."""
        worker.idle = False
        if self.stopping or self.finishing:
            self._command(worker, {"cmd": "shutdown"})
        elif self.queue:
            alive = sum(1 for w in self.workers.values() if w.alive) or 1
            # Guided self-scheduling: a share of what is left, so chunks shrink towards the end
            # and the workers finish together; at least 2, as a worker needs a next item.
            size = max(2, min(MAX_CHUNK, len(self.queue) // (4 * alive)))
            chunk = [self.queue.popleft() for _ in range(min(size, len(self.queue)))]
            for index in chunk:
                worker.assigned[index] = set()
            items = [[index, self.items[index].nodeid] for index in chunk]
            # Ask again when a third of it is left: the answer then comes before the worker runs dry.
            self._command(worker, {"cmd": "run", "items": items, "last": not self.queue, "ask_below": len(chunk) // 3})
        elif pending:
            self._command(worker, {"cmd": "none"})
        else:
            worker.idle = True
            self._steal()

    def _steal(self) -> None:
        """The queue is empty and a worker idles: take back half of the items another has not started.

        The victim keeps its first waiting item (the running test's ``nextitem``, which its
        teardown counts on); it answers with the items it gave up ("unscheduled"), which
        go back to the queue and to the idle workers.
        """
        best, best_items = None, []
        for worker in self.workers.values():
            if worker.state != "ready" or worker.stealing:
                continue
            waiting = [index for index in worker.assigned if index != worker.running][1:]
            if len(waiting) > len(best_items):
                best, best_items = worker, waiting
        if best is not None:
            best.stealing = True
            self._command(best, {"cmd": "steal", "items": best_items[len(best_items) // 2:]})

    def _unscheduled(self, worker: _Worker, indices: list) -> None:
        worker.stealing = False
        for index in indices:
            worker.assigned.pop(index, None)
        if self.stopping:
            self.todo -= len(indices)
            return
        self.queue.extendleft(reversed(indices))
        self._feed_idle()

    def _feed_idle(self) -> None:
        for worker in self.workers.values():
            if worker.idle and worker.state == "ready" and self.queue:
                self._serve(worker, 0)

    def _command(self, worker: _Worker, command: dict) -> None:
        line = json.dumps(command)
        if worker.relay is None:
            worker.outbox.append(line)
        else:
            self.setup.node.send(worker.relay, line)

    def _kill(self, worker: _Worker, why: str) -> None:
        if worker.relay is not None:
            self.setup.node.send(worker.relay, ("kill",))
        worker.state, worker.why = "gone", why

    def _stop(self) -> None:
        """-x, --maxfail or another plugin said stop: no new items; running ones end and report."""
        if not self.stopping:
            self.stopping = True
            self.queue.clear()

    # -- failures -------------------------------------------------------------------------------

    def _lost(self, worker: _Worker, why: str, tail: str = "") -> None:
        """A worker ended before its time: report its running test as crashed, requeue the rest."""
        if worker.state in ("dead", "gone"):
            return
        was_ready = worker.state in ("ready", "finished")
        worker.state, worker.why = "dead", why
        if worker.relay is not None:  # a node thought lost may be only slow: its items go elsewhere, so stop it
            self.setup.node.send(worker.relay, ("kill",))
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
        requeue = list(worker.assigned)
        worker.assigned.clear()
        if self.stopping:
            self.todo -= len(requeue)
        else:
            self.queue.extendleft(reversed(requeue))
        if was_ready:
            self._say(f"worker {worker.name} on {worker.label} crashed: {why}")
        else:
            self._say(f"worker {worker.name} on {worker.label} could not start: {why}" + (f"\n{tail.rstrip()}" if tail.strip() else ""))
        if was_ready and worker.node not in self.down and self.restarts_left > 0 and not (self.stopping or self.finishing):
            self.restarts_left -= 1
            replacement = self._spawn_worker(worker.node, worker.label, worker.local, worker.cwd)
            self._say(f"worker {replacement.name} replaces it on {worker.label}")
        self._feed_idle()

    def _fail_item(self, worker: _Worker, index: int, text: str, started: bool = False) -> None:
        """Report item ``index`` failed with ``text`` (a crash, or an item the worker did not have); it is done."""
        item = self.items[index]
        hook = self.config.hook
        phases = worker.assigned.pop(index, None) or ()
        if not started:
            hook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
        report = pytest.TestReport(
            nodeid=item.nodeid, location=item.location, keywords={name: 1 for name in item.keywords},
            outcome="failed", longrepr=text, when="teardown" if "call" in phases else "call",
        )  # fmt: skip
        report.node = worker.tag
        report.worker_id = worker.name
        report.item_index = index
        hook.pytest_runtest_logreport(report=report)
        hook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
        self.todo -= 1
        if self.session.shouldfail or self.session.shouldstop:
            self._stop()

    # -- what the user sees -------------------------------------------------------------------------

    def _say(self, text: str, verbose_only: bool = False) -> None:
        verbosity = self.config.option.verbose
        if self.terminal is None or verbosity < (0 if verbose_only else -1):
            return
        self.terminal.ensure_newline()
        self.terminal.write_line(f"[termite] {text}", yellow=True)

    def _show_output(self, worker: _Worker, line: str) -> None:
        """Under -s: a line the tests on a worker printed (pytest-xdist drops these), named by worker."""
        if self.terminal is None:
            sys.stdout.write(f"[{worker.name}] {line}")
            return
        self.terminal.ensure_newline()
        self.terminal.write(f"[{worker.name}] {line}")
        if not line.endswith("\n"):
            self.terminal.line("")

    def _status_line(self) -> None:
        by_node = collections.defaultdict(lambda: [0, 0])
        for worker in self.workers.values():
            by_node[worker.label][0] += worker.done
            by_node[worker.label][1] += worker.running is not None and worker.alive
        parts = [f"{label} {done} done, {running} running" for label, (done, running) in by_node.items()]
        if parts:
            self._say(" | ".join(parts) + f" | {self.todo} to go")

    def pytest_terminal_summary(self, terminalreporter):
        if not getattr(self, "items", None) or self.config.option.verbose < 0:
            return  # the suite did not run here (nothing collected, collection errors)
        tr = terminalreporter
        tr.write_sep("-", "termite")
        if self.setup is not None:
            tr.write_line(f"{self.setup.how} ({self.cluster_config.path}): {len(self.setup.nodes)} nodes")
        for worker in self.workers.values():
            ended = "" if worker.state in ("gone", "finished", "ready") and not worker.why else f"; {worker.why}"
            if worker.state == "dead":
                ended = f"; crashed: {worker.why}"
            tr.write_line(
                f"{worker.name} on {worker.label}" + (f" (pid {worker.os_pid})" if worker.os_pid else "")
                + f": {worker.done} tests, {worker.busy:.1f} s running them{ended}"
            )

    # -- the end -------------------------------------------------------------------------------

    def pytest_unconfigure(self, config):
        if self.thread is None:
            return
        while True:  # relays spawned while nobody read the events (a run that ended at collection)
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                break
            if event[0] == "tw-spawned":
                self.workers[event[1]].relay = event[2]
        if self.setup is not None:
            for worker in self.workers.values():
                if worker.alive and worker.relay is not None:
                    try:
                        self.setup.node.send(worker.relay, ("kill",))
                    except Exception:  # noqa: BLE001 - the node may be down already
                        pass
        self.stop_event.set()
        self.thread.join(self.cluster_config.join_timeout + 60)


async def _hub(events: queue.SimpleQueue):
    """On the controller's node: spawn relays (linked), and pass everything they and the cluster say to ``events``."""
    from termite_launcher.pytest_relay import relay

    import termite

    termite.trap_exit(True)  # a relay's end, or its node's loss, comes as Exit(pid, reason)
    termite.monitor_node(None)
    me = termite.self()
    while True:
        msg = await termite.receive()
        if msg.__class__ is tuple and msg and msg[0] == "spawn":
            _, key, ref, relay_args = msg
            try:
                pid = termite.spawn(relay, me, key, *relay_args, node=ref, link=True)
            except Exception as exc:  # noqa: BLE001 - said as the worker's failure
                events.put(("tw-error", key, f"could not spawn its relay: {type(exc).__name__}: {exc}"))
            else:
                events.put(("tw-spawned", key, pid))
        else:
            events.put(msg)


def _report(config, data: dict):
    """A worker's serialized report, as the TestReport it was (JSON made its tuples lists)."""
    report = config.hook.pytest_report_from_serializable(config=config, data=data)
    report.location = tuple(report.location) if report.location is not None else None
    if isinstance(report.longrepr, list):
        report.longrepr = tuple(report.longrepr)  # a skip: (path, lineno, reason)
    report.sections = [tuple(section) for section in report.sections]
    report.user_properties = [tuple(prop) if isinstance(prop, list) else prop for prop in report.user_properties]
    return report


def _warning(ev: dict) -> dict:
    """The keyword arguments of ``pytest_warning_recorded`` for a worker's warning."""
    module, qualname = ev["category"]
    try:
        category = importlib.import_module(module)
        for part in qualname.split("."):
            category = getattr(category, part)
        if not (isinstance(category, type) and issubclass(category, Warning)):
            raise TypeError
    except Exception:  # noqa: BLE001 - a category this process cannot import
        category = UserWarning
    try:
        message = category(ev["message"])
    except Exception:  # noqa: BLE001
        message = UserWarning(ev["message"])
    location = tuple(ev["location"]) if ev.get("location") else None
    record = warnings.WarningMessage(message, category, ev["filename"], ev["lineno"], None, ev["line"])
    return {"warning_message": record, "when": ev["when"], "nodeid": ev["nodeid"], "location": location}
