"""A worker of ``pytest --termite``: ``python -m termite_launcher.pytest_worker INFO [PYTEST ARGS...]``.

A relay (termite_launcher/pytest_relay.py) starts this as a subprocess of a
cluster node, in the controller's folder and with the controller's
arguments, so it collects the same items (same rootdir, ini file, conftests
and options).  Its run loop is replaced by one that runs the items it is
sent, by node id, with ``pytest_runtest_protocol(item, nextitem)`` as
pytest-xdist's worker does, and it streams back every report serialized by
pytest's own ``pytest_report_to_serializable``.  ``INFO`` is JSON: the
worker's id, the number of workers, the run's id, its basetemp.

The protocol is one JSON object per line: commands on stdin, events on
stdout (whatever tests print on fd 1 goes to stderr).  Controller to worker::

    {"cmd": "run", "items": [[index, nodeid], ...], "last": bool, "ask_below": n}
                                    more work; "last": nothing after it for now; ask again when fewer than n wait
    {"cmd": "none"}                                                 nothing more for now
    {"cmd": "steal", "items": [index, ...]}                         give these back if not started
    {"cmd": "shutdown"}                                             finish the running item, drop the rest, end
    {"cmd": "node", "pid": os_pid}      the local node this worker runs for: it ends when that process does

Worker to controller (``"i"`` is the controller's index of the item)::

    {"ev": "ready", "collected": n, "errors": [...], "pid": ..., "host": ..., "python": ...}
    {"ev": "need", "pending": k}          when fewer than 2 (or "ask_below") items wait and nothing is asked yet
    {"ev": "logstart" | "logfinish", "i", "nodeid", "location"}
    {"ev": "report", "i", "data"}         a TestReport, serialized
    {"ev": "missing", "items": [[index, nodeid], ...], "collected": n, "errors": [...]}
    {"ev": "unscheduled", "items": [index, ...]}   what it gave back of a "steal" (never its next item)
    {"ev": "warning", ...}                pytest_warning_recorded, serialized
    {"ev": "finished", "exitstatus": n}

A worker a relay started knows its node (its parent).  A worker of a local
node is the controller's child, started (forked, when it can be) while the
node starts: it runs tests at once, and the controller names its node with
``"node"`` once it is up.  :func:`node_pid` says which it is, from within a
test.

Why a worker needs two items to run one: pytest tears fixtures down by
looking at the *next* item: a module fixture stays up when the next item is
in the same module.  So the worker keeps the next item pending, and runs its
last one with ``nextitem=None`` only when told nothing follows (``"none"``,
``"last"``).
"""

from __future__ import annotations

import collections
import ctypes
import gc
import json
import os
import select
import signal
import socket
import sys
import threading
import time

import pytest

__all__ = ["WorkerPlugin", "forked", "main", "node_pid"]

#: The worker plugin of this process's session (None outside a worker).
_current = None


def node_pid(timeout: float = 60.0) -> int | None:
    """The OS pid of the termite node this worker runs for, once known (None outside a worker, or after ``timeout``)."""
    worker = _current
    if worker is None or not worker.bound.wait(timeout):
        return None
    return worker.node_pid


def _die_with_parent(parent: int) -> None:
    """End when the node that started us ends, even by SIGKILL (Linux); at once if it already has."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:
        os._exit(70)


def _die_with_node(pid: int) -> None:
    """End (as by SIGKILL, as a node's child would) when process ``pid`` ends: a thread waits on its pidfd."""

    def wait():
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            fd = None  # already gone
        except (OSError, AttributeError):  # no pidfd (old kernel): look every 0.2 s
            while _alive(pid):
                time.sleep(0.2)
            fd = None
        if fd is not None:
            select.select([fd], [], [])
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=wait, name="termite-worker-node", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


class WorkerPlugin:
    """What makes a pytest session a termite worker."""

    def __init__(self, info: dict, out, commands):
        self.info = info
        self.out = out
        self.out_lock = threading.Lock()  # the run loop and the command reader both write events
        self.commands = commands
        self.items: dict = {}  # nodeid -> item, everything collected (deselection is the controller's)
        self.collect_errors: list[str] = []
        self.index = None  # the controller's index of the item running
        # What the command reader and the run loop share, under `state`: the reader
        # applies each command as it comes (a steal, too, while a test runs).
        self.state = threading.Condition()
        self.pending: collections.deque = collections.deque()  # (index, item), in the order sent
        self.asked = False  # a "need" is unanswered
        self.last = False  # nothing follows the pending items for now: the last may run with nextitem=None
        self.low_water = 2  # ask for more when fewer items than this wait (the controller may raise it)
        self.stopping = False
        self.config = None
        self.node_pid = None  # the OS pid of the node this worker runs for
        self.bound = threading.Event()  # set once node_pid is known

    def bind(self, pid: int, watch: bool) -> None:
        """This worker runs for the node of OS pid ``pid``; ``watch``: end when it does (it is not our parent)."""
        if self.node_pid is None:
            self.node_pid = pid
            if watch:
                _die_with_node(pid)
            self.bound.set()

    def send(self, event: str, flush: bool = True, **fields) -> None:
        fields["ev"] = event
        line = json.dumps(fields, default=repr) + "\n"
        with self.out_lock:
            self.out.write(line)
            if flush:
                self.out.flush()

    # -- configuration: a worker, as pytest's own plugins understand one ----------

    @pytest.hookimpl(tryfirst=True)
    def pytest_cmdline_main(self, config):
        self.config = config
        option = config.option
        # cacheprovider, junitxml and stepwise leave their files to the controller
        # when they see workerinput; xdist-aware fixtures (worker_id) read it too.
        config.workerinput = {
            "workerid": self.info["id"],
            "workercount": self.info["count"],
            "testrunuid": self.info["testrunuid"],
            "mainargv": [sys.argv[0]],
        }
        config.workeroutput = {}
        if self.info.get("basetemp"):
            option.basetemp = self.info["basetemp"]
        option.usepdb = option.trace = False
        for name in ("lf", "failedfirst", "newfirst", "stepwise", "stepwise_skip"):
            if hasattr(option, name):
                setattr(option, name, False)
        if hasattr(option, "numprocesses"):  # no pytest-xdist inside a worker (addopts may say -n)
            option.numprocesses, option.dist, option.tx = None, "no", []

    @pytest.hookimpl(trylast=True)
    def pytest_configure(self, config):
        # Nobody reads this session's terminal: the controller reports.  (What tests print,
        # and faulthandler's dumps, still reach stderr, shown if the worker crashes.)
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            writer = type(reporter._tw)  # pytest's TerminalWriter
            reporter._tw = writer(open(os.devnull, "w", encoding="utf-8"))  # noqa: SIM115 - as long as the session

    # -- collection: every item, by node id --------------------------------------

    def pytest_itemcollected(self, item) -> None:
        self.items[item.nodeid] = item

    def pytest_collectreport(self, report) -> None:
        if report.failed:
            last = report.longreprtext.strip().splitlines()[-1:] or ["?"]
            self.collect_errors.append(f"{report.nodeid or '.'}: {last[0]}")

    def pytest_collection_finish(self, session) -> None:
        for item in session.items:  # what collection kept wins over what it first made
            self.items[item.nodeid] = item
        python = f"Python {sys.version.split()[0]} {sys.executable}"
        self.send("ready", collected=len(self.items), errors=self.collect_errors[:5], pid=os.getpid(),
                  host=socket.gethostname(), python=python)
        threading.Thread(target=self._read_commands, name="termite-worker-commands", daemon=True).start()

    # -- the run loop ---------------------------------------------------------------

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session):
        hook = session.config.hook
        while True:
            with self.state:
                while not self.stopping:
                    self._ask()
                    if self.pending and (len(self.pending) >= 2 or self.last):
                        break
                    self.state.wait()
                if self.stopping:
                    break
                index, item = self.pending.popleft()
                self._ask()  # more comes while this one runs
                nextitem = self.pending[0][1] if self.pending else None  # never stolen: see _command
            self.index = index
            hook.pytest_runtest_protocol(item=item, nextitem=nextitem)
            self.index = None
            if session.shouldfail or session.shouldstop:
                break  # -x or --maxfail: at once, not after the controller hears of it (it does too)
        return True

    def _ask(self) -> None:
        if not self.asked and len(self.pending) < self.low_water and not (self.last and self.pending):
            self.asked = True
            self.send("need", pending=len(self.pending))

    def _read_commands(self) -> None:
        """The command reader's thread (as xdist's channel callback): apply each command at once."""
        for line in self.commands:
            if line.strip():
                cmd = json.loads(line)
                with self.state:
                    self._command(cmd)
                    self.state.notify()
        with self.state:  # the relay is gone
            self._command({"cmd": "shutdown"})
            self.state.notify()

    def _command(self, cmd: dict) -> None:
        kind = cmd["cmd"]
        if kind == "run":
            missing = []
            for index, nodeid in cmd["items"]:
                item = self.items.get(nodeid)
                if item is None:
                    missing.append([index, nodeid])
                else:
                    self.pending.append((index, item))
            if missing:
                self.send("missing", items=missing, collected=len(self.items), errors=self.collect_errors[:5])
            self.asked, self.last = False, bool(cmd.get("last"))
            self.low_water = max(2, cmd.get("ask_below", 2))
        elif kind == "none":
            self.asked, self.last = False, True
        elif kind == "steal":
            # Give back what is asked and still waits, but the first waiting item: the test
            # running (or just run) was given it as its nextitem, and its teardown counts on it.
            wanted = set(cmd["items"])
            given = [index for index, _ in list(self.pending)[1:] if index in wanted]
            if given:
                gone = set(given)
                self.pending = collections.deque(e for n, e in enumerate(self.pending) if n == 0 or e[0] not in gone)
            self.send("unscheduled", items=given)
        elif kind == "shutdown":
            self.stopping = True
            self.pending.clear()
        elif kind == "node":
            self.bind(cmd["pid"], watch=True)

    # -- what happens, to the controller ------------------------------------------------

    def pytest_runtest_logstart(self, nodeid, location) -> None:
        self.send("logstart", i=self.index, nodeid=nodeid, location=location)

    def pytest_runtest_logfinish(self, nodeid, location) -> None:
        self.send("logfinish", i=self.index, nodeid=nodeid, location=location)

    def pytest_runtest_logreport(self, report) -> None:
        data = self.config.hook.pytest_report_to_serializable(config=self.config, report=report)
        self.send("report", flush=False, i=self.index, data=data)  # with the logfinish: fewer writes

    def pytest_warning_recorded(self, warning_message, when, nodeid, location) -> None:
        category = warning_message.category or UserWarning
        self.send(
            "warning", when=when, nodeid=nodeid, location=location,
            message=str(warning_message.message), category=[category.__module__, category.__qualname__],
            filename=warning_message.filename, lineno=warning_message.lineno, line=warning_message.line,
        )  # fmt: skip

    def pytest_internalerror(self, excrepr) -> None:
        self.send("internal_error", text=str(excrepr))

    @pytest.hookimpl(hookwrapper=True)
    def pytest_sessionfinish(self, exitstatus):
        yield
        self.send("finished", exitstatus=int(exitstatus))


def main(argv: list[str] | None = None) -> int:
    """A worker started as ``python -m termite_launcher.pytest_worker INFO ARGS...`` (by a relay or the controller)."""
    argv = sys.argv[1:] if argv is None else argv
    info = json.loads(argv[0])
    parent = os.environ.pop("TERMITE_WORKER_PARENT", None)  # set by whoever started us; not for the tests' own children
    if parent:
        _die_with_parent(int(parent))
    # The protocol keeps the pipes on fds of its own: pytest's capture points fds 0 and 1
    # elsewhere while tests run, and what tests print to fd 1 (under -s) goes to stderr.
    commands = os.fdopen(os.dup(0), "r", encoding="utf-8")
    out = os.fdopen(os.dup(1), "w", encoding="utf-8", errors="replace")
    _point_stdio(2)
    if not info.get("cwd_on_path") and sys.path and sys.path[0] in ("", os.getcwd()):
        del sys.path[0]  # `python -m` put the folder first; the controller (the `pytest` script) had not
    node = info.get("node_pid")  # started by the controller: its node, which is not its parent
    return _run(info, argv[1:], out, commands, node or (parent and int(parent)), watch=bool(node))


def forked(info: dict, args: list[str], commands_fd: int, out_fd: int, err_fd: int) -> int:
    """In a child the controller forked (pytest and its plugins already imported): be a worker.

    The child has the controller's modules, ``sys.path`` and folder, and no
    thread but this one; its node is named later (``"node"``).
    """
    _die_with_parent(os.getppid())
    # What the controller had made lives as long as this process: spare the collector walking it
    # (the last collections at the session's end walk every object, many of them termite's).
    gc.freeze()
    commands = os.fdopen(commands_fd, "r", encoding="utf-8")
    out = os.fdopen(out_fd, "w", encoding="utf-8", errors="replace")
    _point_stdio(err_fd)
    os.close(err_fd)
    return _run(info, args, out, commands, None, watch=False)


def _point_stdio(err_fd: int) -> None:
    """Stdin from /dev/null; stdout and stderr to ``err_fd`` (what tests print is not the protocol)."""
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    if err_fd != 2:
        os.dup2(err_fd, 2)
    os.dup2(2, 1)


def _run(info: dict, args: list[str], out, commands, node: int | None, watch: bool) -> int:
    global _current
    os.environ.update(
        PYTEST_XDIST_WORKER=info["id"],
        PYTEST_XDIST_WORKER_COUNT=str(info["count"]),
        PYTEST_XDIST_TESTRUNUID=info["testrunuid"],
    )
    plugin = _current = WorkerPlugin(info, out, commands)
    if node:
        plugin.bind(node, watch)
    try:
        return int(pytest.main(args, plugins=[plugin]))
    finally:
        out.flush()


if __name__ == "__main__":
    sys.exit(main())
