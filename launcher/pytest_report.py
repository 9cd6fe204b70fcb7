"""What a ``pytest --termite`` run shows: the workers' reports as a local run's, and progress.

A worker streams its reports as JSON; :func:`report_from_data` makes each
the TestReport it was, tagged with its worker (:class:`WorkerTag`, read by
pytest's reporters as xdist's ``[gw0]``), and the controller calls the same
hooks a local run does, so the terminal, junitxml, the --lf cache, ``-x``
and ``--maxfail`` behave as in a local run.  :class:`Reporter` adds what
only a distributed run has: a crashed worker's test reported as failed,
``[termite]`` notes, a line per node every ``--termite-status`` seconds,
what tests printed under ``-s`` (named by worker), and a per-node summary.
"""

from __future__ import annotations

import collections
import importlib
import sys
import types
import warnings

import pytest

__all__ = ["Reporter", "WorkerTag", "report_from_data", "warning_kwargs"]


class WorkerTag:
    """What pytest's reporters read from ``report.node`` (as under xdist: ``[gw0]`` in -v lines)."""

    def __init__(self, name: str, label: str):
        self.gateway = types.SimpleNamespace(id=label)
        self.workerinput = {"workerid": name}
        # The line above a failure's traceback (BaseReport.toterminal): where it ran.
        self._workerinfocache = f"[{name}] on node {label}"

    def ready(self, name: str, label: str, host: str, pid: int, python: str) -> None:
        """The worker said where it runs: the line above a failure's traceback names it all."""
        self._workerinfocache = f"[{name}] on node {label}: host {host}, pid {pid} -- {python}"

    def __repr__(self) -> str:
        return f"<termite worker {self.workerinput['workerid']} on {self.gateway.id}>"


def report_from_data(config, data: dict):
    """A worker's serialized report, as the TestReport it was (JSON made its tuples lists)."""
    report = config.hook.pytest_report_from_serializable(config=config, data=data)
    report.location = tuple(report.location) if report.location is not None else None
    if isinstance(report.longrepr, list):
        report.longrepr = tuple(report.longrepr)  # a skip: (path, lineno, reason)
    report.sections = [tuple(section) for section in report.sections]
    report.user_properties = [tuple(prop) if isinstance(prop, list) else prop for prop in report.user_properties]
    return report


def warning_kwargs(ev: dict) -> dict:
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


class Reporter:
    """The controller's output: reports through pytest's hooks, and its own lines."""

    def __init__(self, config):
        self.config = config
        self.terminal = None  # the terminalreporter, once the session starts

    def report(self, worker, index: int, report) -> None:
        """A worker's report of item ``index``, as a local run reports it."""
        report.node = worker.tag
        report.worker_id = worker.name
        report.item_index = index
        self.config.hook.pytest_runtest_logreport(report=report)

    def failed(self, worker, index: int, item, text: str, when: str, started: bool) -> None:
        """Report ``item`` failed with ``text`` (a crash, or an item the worker did not have)."""
        hook = self.config.hook
        if not started:
            hook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
        report = pytest.TestReport(
            nodeid=item.nodeid, location=item.location, keywords={name: 1 for name in item.keywords},
            outcome="failed", longrepr=text, when=when,
        )  # fmt: skip
        self.report(worker, index, report)
        hook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)

    def say(self, text: str, verbose_only: bool = False) -> None:
        verbosity = self.config.option.verbose
        if self.terminal is None or verbosity < (0 if verbose_only else -1):
            return
        self.terminal.ensure_newline()
        self.terminal.write_line(f"[termite] {text}", yellow=True)

    def show_output(self, worker, line: str) -> None:
        """Under -s: a line the tests on a worker printed (pytest-xdist drops these), named by worker."""
        if self.terminal is None:
            sys.stdout.write(f"[{worker.name}] {line}")
            return
        self.terminal.ensure_newline()
        if self.terminal._tw.width_of_current_line:  # after a test's progress dot: ensure_newline only knows file names
            self.terminal.line("")
        self.terminal.write(f"[{worker.name}] {line}")
        if not line.endswith("\n"):
            self.terminal.line("")

    def status_line(self, workers, todo: int) -> None:
        by_node = collections.defaultdict(lambda: [0, 0])
        for worker in workers:
            by_node[worker.label][0] += worker.done
            by_node[worker.label][1] += worker.running is not None and worker.alive
        parts = [f"{label} {done} done, {running} running" for label, (done, running) in by_node.items()]
        if parts:
            self.say(" | ".join(parts) + f" | {todo} to go")

    def summary(self, tr, cluster, cluster_path, workers) -> None:
        """The termite section of the terminal summary: the cluster, then each worker's share."""
        tr.write_sep("-", "termite")
        if cluster.up:
            tr.write_line(f"{cluster.how} ({cluster_path}): {len(cluster.nodes)} nodes")
        for worker in workers:
            ended = "" if worker.state in ("gone", "finished", "ready") and not worker.why else f"; {worker.why}"
            if worker.state == "dead":
                ended = f"; crashed: {worker.why}"
            tr.write_line(
                f"{worker.name} on {worker.label}" + (f" (pid {worker.os_pid})" if worker.os_pid else "")
                + f": {worker.done} tests, {worker.busy:.1f} s running them{ended}"
            )
