"""The live dashboard: what the launcher knows about every node, and how it looks.

Three layers, as in rich's ``top`` example:

* :class:`ClusterView` is the model.  The launcher tells it what happens
  (``expect`` a node it started, ``report`` a meter's :class:`termite.Load`,
  ``lost`` a node termite declared down (``NodeDown``), ``exited`` a node
  whose process the launcher saw end (with the reason: ``killed by signal
  9``), ``gave_up`` on a node it will not restart again, ``unresponsive`` a
  node found connected but not answering, ``restarted``, ``said`` a line a
  process said (``termite.say``), ``logged`` a record of the launcher's own
  logging (:func:`logging_to_events` routes them while the live dashboard
  shows), free-text ``event``) and calls ``tick`` now and then, so that a node that stops
  reporting turns suspect and then unresponsive.  It holds no clock: every call says
  when (``at``), on one clock the caller picks (``time.time()`` or
  ``time.monotonic()``), which keeps it deterministic under test.  Times
  shown are the time of day when ``at`` is ``time.time()``, else the time
  since the view's first call (``+0:01:05``).
* :meth:`ClusterView.snapshot` freezes it into a :class:`Snapshot` of
  :class:`Row` values: every figure the dashboard shows, computed once.
* :func:`render` and :func:`plain_lines` turn a snapshot into a rich
  renderable (the node table and the events pane, fitted to the console's
  width) or into colourless text lines for a stdout that is not a terminal.

The process view shows, under the node table, each node's busiest
processes (its meter reports the few with the largest mailboxes and the
most steps: ``Load.top``), sorted by mailbox or by cpu (steps a second).
Keys switch it in the live dashboard (:class:`Keys`): ``p`` shows or hides
it, ``m`` and ``c`` sort; ``termite-launch cluster.yaml --processes`` prints
it once.

The layers are modules: this one is the model (and the dashboard's public
face: it exports the others' names too), termite_launcher.dashboard_snapshot
the data, termite_launcher.dashboard_render the look.

Silence is never a down (the README's "When nodes fail": busy is not down).
A node stalled in a long C call, even one holding the GIL, stops reporting
but keeps its connection: ``tick`` makes it *unresponsive* (a state of its
own), and it is *up* again at its next report.  Only :meth:`ClusterView.lost`,
which the launcher calls when termite says the node is down, and
:meth:`ClusterView.exited`, when the launcher saw the node's process end,
make a row *down*; :meth:`ClusterView.gave_up` makes it *failed* (down for
good, as an Erlang supervisor past its restart intensity).  A row down or
failed keeps the reason, which the dashboard shows under the table.

What a row shows of a node's load is its two parts side by side, each on a
scale that does not move: cpu, in percent of the one core a node runs on
(:data:`CPU_SCALE`: the bar and the history are full for a core kept busy),
and the run queue, the processes and thunks waiting there.  Their sum is
what the dispatcher compares (``termite.Load.value``), but as one figure it
reads as a CPU load it is not (16.4 for a node at 40 % with 16 thunks
queued).  Rates count what moves: frames in and out per second, and thunks
finished per second; thunk counts are per node, since it started.

Rows are kept per address (``host:port``), not per incarnation: a node that
comes back on the same address is the same row, counted as restarted, and a
row the launcher expected before the node's incarnation was known
(``NodeRef(host, port)``) is filled in by the node's first report.

    view = ClusterView("demo", suspect_after=2.0, unresponsive_after=5.0)
    view.expect(ref, "this-host", os_pid, at=time.monotonic())
    with rich.live.Live(view.renderable(time.monotonic()), auto_refresh=False) as live:
        ...  # on every meter report: view.report(load, at=time.monotonic())
        view.tick(time.monotonic())
        live.update(view.renderable(time.monotonic()), refresh=True)
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections import deque

from termite import Load, NodeRef

from termite_launcher.announce import readable
from termite_launcher.dashboard_render import load_bar, plain_lines, process_lines, render
from termite_launcher.dashboard_snapshot import (
    CPU_SCALE,
    PROCESS_SORTS,
    Event,
    ProcessRow,
    Row,
    Snapshot,
    Totals,
    format_duration,
    format_rate,
    format_time,
    sparkline,
)

__all__ = [
    "CPU_SCALE",
    "ClusterView",
    "Event",
    "Keys",
    "ProcessRow",
    "Row",
    "Snapshot",
    "Totals",
    "format_duration",
    "format_rate",
    "load_bar",
    "logging_to_events",
    "plain_lines",
    "process_lines",
    "render",
    "sparkline",
]

EVENTS_KEPT = 50


# -- the model ----------------------------------------------------------------


class _Node:
    """What the view knows of one address; mutable, private."""

    __slots__ = (
        "ref", "label", "os_pid", "state", "last", "last_at", "rates", "history", "restarts", "labelled", "retired",
        "reason", "top",
    )

    def __init__(self, ref: NodeRef, label: str, os_pid: int | None, state: str, history: int, labelled: bool):
        self.ref = ref
        self.label = label
        self.labelled = labelled  # the launcher named it: a report's hostname does not override
        self.os_pid = os_pid
        self.state = state
        self.last: Load | None = None
        self.last_at: float | None = None
        self.rates: tuple[float, float, float] | None = None  # frames in, out, thunks finished: per second
        self.history: deque[float] = deque(maxlen=history)
        self.restarts = 0
        self.retired: set[int] = set()  # incarnations this row had: their late news is ignored
        self.reason: str | None = None  # why it is down or failed (None while it lives)
        self.top: tuple[ProcessRow, ...] = ()  # its busiest processes, as last reported

    def renew(self, ref: NodeRef) -> None:
        """A new incarnation at this address: what the old one measured no longer applies."""
        if self.ref.incarnation is not None:
            self.retired.add(self.ref.incarnation)
        self.ref = ref
        self.last = self.last_at = self.rates = self.reason = None
        self.top = ()
        self.history.clear()
        self.restarts += 1


class ClusterView:
    """The dashboard's model of a cluster; see the module docstring."""

    def __init__(self, name: str, *, suspect_after: float, unresponsive_after: float, history: int = 30):
        if not 0 < suspect_after <= unresponsive_after:
            raise ValueError(
                f"need 0 < suspect_after <= unresponsive_after, got suspect_after={suspect_after!r}, "
                f"unresponsive_after={unresponsive_after!r}"
            )
        if history < 1:
            raise ValueError(f"history must be at least 1, got {history!r}")
        self.name = name
        self.suspect_after = suspect_after
        self.unresponsive_after = unresponsive_after
        self.history = history
        self._nodes: dict[tuple[str, int], _Node] = {}  # by address, in the order they appeared
        self._events: deque[Event] = deque(maxlen=EVENTS_KEPT)
        self._origin: float | None = None
        self._count = 0  # events so far
        # Nodes replaced by a restart (at any address): their late news (a NodeDown
        # seconds after the launcher saw the exit) must not make a row of its own.
        self._replaced: set[NodeRef] = set()
        self.processes = False  # the process view shows (key p)
        self.sort = "mailbox"  # how it orders each node's processes: one of PROCESS_SORTS (keys m, c)
        self.keys = False  # keys work (a Keys reads them): the dashboard says which

    # -- what the launcher tells it ------------------------------------------

    def expect(self, node: NodeRef, label: str, os_pid: int | None, at: float, restarts: int = 0) -> None:
        """The launcher started ``node`` (its incarnation may still be None): a "starting" row.

        ``restarts``: how often it was restarted before (``--status`` reads it from the state file).
        """
        self._seen(at)
        row = self._nodes.get(node.address)
        if row is None:
            row = self._nodes[node.address] = _Node(node, label, os_pid, "starting", self.history, labelled=True)
            row.restarts = restarts
            return
        row.label, row.labelled = label, True
        if os_pid is not None:
            row.os_pid = os_pid
        if _other_incarnation(row.ref, node) or (row.state == "down" and node.incarnation is None):
            self._restart(row, node, at)
        elif row.ref.incarnation is None:
            row.ref = node

    def report(self, load: Load, at: float) -> None:
        """A meter report: the node is up (a node not seen before joins).

        An unresponsive node that reports again is up, with an event that
        says how long it was silent (since its previous report).
        """
        self._seen(at)
        node = load.node
        if node in self._replaced:
            return  # a late report of a node since restarted elsewhere
        row = self._nodes.get(node.address)
        if row is None:
            row = self._nodes[node.address] = _Node(node, load.host, load.os_pid, "starting", self.history, False)
        elif node.incarnation in row.retired:
            return  # a late report of an incarnation since replaced
        elif _other_incarnation(row.ref, node):
            self._restart(row, node, at)
        elif row.ref.incarnation is None:
            row.ref = node
        silent = None if row.last_at is None else at - row.last_at
        row.top = _processes(row.last, load)
        if row.last is not None:
            row.rates = _rates(row.last, load)
            moved = load.balanced_in - row.last.balanced_in
            if moved > 0:  # every move the balancer asked for is an event
                self._add(at, "balanced", f"{_name(row)}: {moved} process{'es' if moved > 1 else ''} moved here "
                                          "by the balancer")
        row.last, row.last_at = load, at
        row.os_pid = load.os_pid
        if not row.labelled:
            row.label = load.host
        row.history.append(load.busy)
        row.reason = None
        if row.state != "up":
            was, row.state = row.state, "up"
            if was == "starting":
                self._add(at, "joined", f"{_name(row)}: pid {load.os_pid}, 1 core of the host's {load.cores}")
            elif was == "unresponsive" and silent is not None:
                self._add(at, "up", f"{_name(row)}: reporting again after {silent:.1f} s unresponsive")
            else:
                self._add(at, "up", f"{_name(row)}: reporting again after being {was}")

    def lost(self, node: NodeRef, at: float, reason: str = "noconnection") -> None:
        """termite declared the node down (``NodeDown``: its connection was lost): the only way to "down"."""
        row = self._row_of(node, at)
        if row is not None and row.state not in ("down", "failed"):
            row.state, row.reason = "down", reason
            self._add(at, "down", f"{_name(row)}: {reason}")

    def exited(self, node: NodeRef, at: float, reason: str) -> None:
        """The launcher saw the node's process end (``killed by signal 9``): down, with that reason.

        It knows better than the network: the reason replaces a ``lost``'s
        ``noconnection`` (which may come first for a node over SSH).
        """
        row = self._row_of(node, at)
        if row is not None and row.state != "failed" and row.reason != reason:
            row.state, row.reason = "down", reason
            self._add(at, "down", f"{_name(row)}: {reason}")

    def gave_up(self, node: NodeRef, at: float, reason: str) -> None:
        """The launcher will not restart the node again (past its restart intensity): failed, and why."""
        row = self._row_of(node, at)
        if row is not None and row.state != "failed":
            row.state, row.reason = "failed", reason
            self._add(at, "failed", f"{_name(row)}: {reason}")

    def unresponsive(self, node: NodeRef, at: float, reason: str) -> None:
        """The node is connected but does not answer (busy, perhaps in a C call): unresponsive, not down.

        A row already down stays down (only a report or a restart brings it
        back); the next report makes the row up again.
        """
        row = self._row_of(node, at)
        if row is not None:
            self._unresponsive(row, at, reason)

    def _row_of(self, node: NodeRef, at: float) -> "_Node | None":
        """The row of ``node`` for news that is not a report (made if new); None for an older incarnation's."""
        self._seen(at)
        if node in self._replaced:
            return None
        row = self._nodes.get(node.address)
        if row is None:
            row = self._nodes[node.address] = _Node(node, node.host, None, "starting", self.history, False)
        elif node.incarnation in row.retired or _other_incarnation(row.ref, node):
            return None  # an older incarnation: the one at this address now is another
        return row

    def restarted(self, old: NodeRef, new: NodeRef, at: float, os_pid: int | None = None) -> None:
        """``new`` replaces ``old`` (at the same address or another): one row, counted as restarted.

        ``os_pid``: the new node's, if known before its first report.
        """
        self._seen(at)
        if old.incarnation is not None and old != new:
            self._replaced.add(old)
        try:
            self._restarted(old, new, at)
        finally:
            row = self._nodes.get(new.address)
            if os_pid is not None and row is not None and row.ref == new:
                row.os_pid = os_pid

    def _restarted(self, old: NodeRef, new: NodeRef, at: float) -> None:
        row = self._nodes.get(old.address)
        other = self._nodes.get(new.address) if new.address != old.address else None
        if (row is not None and row.ref == new) or (row is None and other is not None and other.ref == new):
            return  # told already (by this call before, or by the new node's first report)
        if other is not None:  # the new node has a row of its own (it reported first): keep that one
            if row is not None:
                del self._nodes[old.address]
                if row.labelled and not other.labelled:
                    other.label, other.labelled = row.label, True
            other.restarts += 1
            other.reason = None
            self._add(at, "restarted", f"{old} -> {_name(other)}")
        elif row is None:
            row = self._nodes[new.address] = _Node(new, new.host, None, "starting", self.history, False)
            row.restarts = 1
            self._add(at, "restarted", f"{old} -> {_name(row)}")
        else:
            if old.address != new.address:  # the row moves, keeping its place in the table
                self._nodes = {(new.address if key == old.address else key): n for key, n in self._nodes.items()}
            self._restart(row, new, at, was=old)

    def event(self, text: str, at: float) -> None:
        """Any line for the events pane."""
        self._seen(at)
        self._add(at, "info", text)

    def said(self, said, at: float) -> None:
        """A line a process said (``termite.say``: a ``termite.console.Said``): an event, prefixed with its pid."""
        self._seen(at)
        self._add(at, "said", str(said))

    def logged(self, record: logging.LogRecord, at: float) -> None:
        """A log record of the launcher's own process: an event of its level ("warning: node ... is down")."""
        self._seen(at)
        text = record.getMessage().splitlines() or [""]
        self._add(at, record.levelname.lower(), f"{record.name}: {text[0]}")

    def tick(self, at: float) -> None:
        """Judge silence: no report for ``suspect_after`` s is suspect, for ``unresponsive_after`` s unresponsive.

        Never down: a silent node may be busy (holding the GIL in a C call)
        and still connected; it is down only when termite says so
        (``lost``).  Only nodes that have reported are judged; one still
        starting is the launcher's to time out (it says so with ``lost`` or
        ``event``).
        """
        self._seen(at)
        for row in self._nodes.values():
            if row.state not in ("up", "suspect") or row.last_at is None:
                continue
            silent = at - row.last_at
            if silent > self.unresponsive_after:
                self._unresponsive(row, at, f"no report for {silent:.1f} s (busy, not down)")
            elif silent > self.suspect_after and row.state == "up":
                row.state = "suspect"
                self._add(at, "suspect", f"{_name(row)}: no report for {silent:.1f} s")

    def show(self, processes: bool | None = None, sort: str | None = None) -> None:
        """Show the process view or not, and sort it by ``"mailbox"`` or ``"cpu"``."""
        if sort is not None:
            if sort not in PROCESS_SORTS:
                raise ValueError(f"sort must be one of {', '.join(PROCESS_SORTS)}, not {sort!r}")
            self.sort = sort
        if processes is not None:
            self.processes = bool(processes)

    def press(self, key: str) -> bool:
        """A key pressed in the live dashboard: ``p`` shows or hides the process view, ``m`` sorts it by
        mailbox, ``c`` by cpu (either shows it).  Whether the key meant something."""
        key = key.lower()
        if key == "p":
            self.show(processes=not self.processes)
        elif key in ("m", "c"):
            self.show(processes=True, sort="mailbox" if key == "m" else "cpu")
        else:
            return False
        return True

    # -- what it shows --------------------------------------------------------

    def rows(self) -> list[Row]:
        """One :class:`Row` per node, in the order they were first seen."""
        return [_row(node) for node in self._nodes.values()]

    def totals(self) -> Totals:
        return _totals(self.rows())

    def events(self, after: int = 0) -> list[Event]:
        """The events kept (the last 50), oldest first; only those numbered above ``after`` if given.

        Plain output prints the new ones each time: ``for e in view.events(after=last): print(e)``.
        """
        return [event for event in self._events if event.n > after]

    def snapshot(self, at: float) -> Snapshot:
        rows = self.rows()
        return Snapshot(self.name, at, self._origin, tuple(rows), _totals(rows), tuple(self._events), self.history,
                        self.processes, self.sort, self.keys)

    def renderable(self, at: float):
        """The whole dashboard as of ``at``, for a ``rich.live.Live``."""
        return render(self.snapshot(at))

    def plain_lines(self, at: float) -> list[str]:
        """One colourless line per node and a totals line, for a stdout that is not a terminal;
        then, with the process view, a line per process."""
        snapshot = self.snapshot(at)
        return plain_lines(snapshot) + (process_lines(snapshot) if self.processes else [])

    # -- inside ---------------------------------------------------------------

    def _seen(self, at: float) -> None:
        if self._origin is None:
            self._origin = at

    def _add(self, at: float, kind: str, text: str) -> None:
        self._count += 1
        self._events.append(Event(self._count, at, format_time(at, self._origin), kind, text))

    def _unresponsive(self, row: _Node, at: float, reason: str) -> None:
        if row.state not in ("down", "unresponsive"):
            row.state = "unresponsive"
            self._add(at, "unresponsive", f"{_name(row)}: {reason}")

    def _restart(self, row: _Node, new: NodeRef, at: float, was: NodeRef | None = None) -> None:
        old = was or row.ref
        row.renew(new)
        row.state = "starting"
        if old.address != new.address:
            self._add(at, "restarted", f"{old} -> {_name(row)}")
        else:
            self._add(at, "restarted", f"{_name(row)}: incarnation {_incarnation(old)} -> {_incarnation(new)}")


def _other_incarnation(have: NodeRef, got: NodeRef) -> bool:
    """Whether ``got`` is another node than ``have`` (both known, same address or not)."""
    if have.address != got.address:
        return True
    return have.incarnation is not None and got.incarnation is not None and have.incarnation != got.incarnation


def _incarnation(ref: NodeRef) -> str:
    return "?" if ref.incarnation is None else f"{ref.incarnation:x}"[:6]


def _name(node: _Node) -> str:
    return f"{node.ref} ({node.label})"


def _rates(before: Load, after: Load) -> tuple[float, float, float] | None:
    """Frames in and out, and thunks finished, per second between two reports of one incarnation.

    The time between them is the node's own monotonic uptime, so neither the
    network's delays nor a wall clock that jumps distort it.
    """
    elapsed = after.uptime - before.uptime
    if elapsed <= 0:
        elapsed = after.time - before.time
    counts = ((before.frames_in, after.frames_in), (before.frames_out, after.frames_out),
              (before.thunks_done, after.thunks_done))
    if elapsed <= 0 or any(then > now for then, now in counts):
        return None
    return tuple((now - then) / elapsed for then, now in counts)


def _processes(before: Load | None, after: Load) -> tuple[ProcessRow, ...]:
    """A report's busiest processes, with steps a second for those the report before had too."""
    elapsed = after.uptime - before.uptime if before is not None else 0.0
    then = {p.pid: p.steps for p in before.top} if before is not None and elapsed > 0 else {}
    rows = []
    for p in after.top:
        old = then.get(p.pid)
        rate = (p.steps - old) / elapsed if old is not None and p.steps >= old else None
        rows.append(ProcessRow(f"{p.pid.node}/{p.pid.serial}", p.name, p.state, p.mailbox, p.steps, rate))
    return tuple(rows)


def _row(node: _Node) -> Row:
    load = node.last
    rates = node.rates or (None, None, None)
    known = load is not None
    return Row(
        label=node.label,
        node=str(node.ref),
        ref=node.ref,
        os_pid=node.os_pid,
        state=node.state,
        history=tuple(node.history),
        sparkline=sparkline(node.history, CPU_SCALE),
        cpu=load.busy * 100 if known else None,
        processes=load.processes if known else None,
        run_queue=load.run_queue if known else None,
        queued=load.queued if known else None,
        largest_mailbox=load.largest_mailbox if known else None,
        msgs_in=rates[0],
        msgs_out=rates[1],
        migrations_in=load.migrations_in if known else None,
        migrations_out=load.migrations_out if known else None,
        uptime=load.uptime if known else None,
        last_report=node.last_at,
        restarts=node.restarts,
        reason=node.reason,
        balanced_in=load.balanced_in if known else None,
        busy_nodes=load.busy_nodes if known else (),
        full_mailboxes=load.full_mailboxes if known else 0,
        cores=load.cores if known else None,
        thunks_received=load.thunks_received if known else None,
        thunks_done=load.thunks_done if known else None,
        thunks_failed=load.thunks_failed if known else None,
        thunks_rate=rates[2],
        top=node.top if known else (),
    )


def _totals(rows: list[Row]) -> Totals:
    live = [row for row in rows if row.live]
    cpus = [row.cpu for row in live if row.cpu is not None]
    return Totals(
        up=sum(row.state == "up" for row in rows),
        unresponsive=sum(row.state == "unresponsive" for row in rows),
        failed=sum(row.state == "failed" for row in rows),
        nodes=len(rows),
        processes=sum(row.processes or 0 for row in live),
        queued=sum(row.queued or 0 for row in live),
        largest_mailbox=max((row.largest_mailbox or 0 for row in live), default=0),
        msgs_in=sum(row.msgs_in or 0.0 for row in live),
        msgs_out=sum(row.msgs_out or 0.0 for row in live),
        migrations_in=sum(row.migrations_in or 0 for row in rows),
        migrations_out=sum(row.migrations_out or 0 for row in rows),
        balanced=sum(row.balanced_in or 0 for row in rows),
        cpu_average=sum(cpus) / len(cpus) if cpus else None,
        run_queue=sum(row.run_queue or 0 for row in live),
        thunks_received=sum(row.thunks_received or 0 for row in rows),
        thunks_done=sum(row.thunks_done or 0 for row in rows),
        thunks_failed=sum(row.thunks_failed or 0 for row in rows),
        thunks_rate=sum(row.thunks_rate or 0.0 for row in live),
    )


# -- keys ---------------------------------------------------------------------------


class Keys:
    """The keys pressed in the terminal while the live dashboard shows, handed to the view (``press``).

        with Keys(view) as keys:   # the terminal reads keys one by one, unechoed, meanwhile
            while ...:
                keys.poll()        # never waits

    Only when standard input is a terminal (else it does nothing); the
    terminal's settings come back on leaving, even on Ctrl-C (which still
    interrupts: signals stay on).
    """

    def __init__(self, view: ClusterView, stream=None):
        self.view = view
        self.stream = sys.stdin if stream is None else stream
        self._fd = None
        self._saved = None

    def __enter__(self) -> "Keys":
        try:
            fd = self.stream.fileno()
        except (AttributeError, ValueError, OSError):
            return self
        if not os.isatty(fd):
            return self
        import termios
        import tty

        self._saved = termios.tcgetattr(fd)
        tty.setcbreak(fd)  # a key at a time, not echoed; Ctrl-C still sends SIGINT
        self._fd = fd
        self.view.keys = True
        return self

    def __exit__(self, *exc_info) -> None:
        if self._fd is not None:
            import termios

            termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)
            self._fd = None
            self.view.keys = False

    def poll(self) -> int:
        """Hand every key pressed since the last poll to the view; how many there were."""
        count = 0
        while self._fd is not None and count < 64 and readable(self._fd, 0):
            data = os.read(self._fd, 64)
            if not data:
                break
            for key in data.decode(errors="replace"):
                self.view.press(key)
                count += 1
        return count


# -- the launcher's own log records, into the events pane -------------------------


class _ToEvents(logging.Handler):
    """Hands every record to ``put`` (any thread may log: ``put`` must be thread-safe, a queue's)."""

    def __init__(self, put):
        super().__init__()
        self.put = put

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.put(record)
        except Exception:  # noqa: BLE001 - logging must not raise where the record was made
            self.handleError(record)


def _to_terminal(handler: logging.Handler) -> bool:
    stream = getattr(handler, "stream", None)
    return type(handler) is logging.StreamHandler and stream in (sys.stderr, sys.stdout, sys.__stderr__, sys.__stdout__)


@contextlib.contextmanager
def logging_to_events(put):
    """While the live dashboard shows: this process's log records go to ``put(record)``, not to the terminal.

    A record printed while rich redraws the screen lands over the dashboard;
    the launcher puts them on its events queue instead, and the view shows
    each as an event of its level (:meth:`ClusterView.logged`).  The root
    logger's handlers that write to the terminal are set aside meanwhile
    (Python's last-resort handler too, as the root then has a handler);
    handlers to files keep writing.
    """
    root = logging.getLogger()
    aside = [handler for handler in root.handlers if _to_terminal(handler)]
    handler = _ToEvents(put)
    for old in aside:
        root.removeHandler(old)
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        for old in aside:
            root.addHandler(old)
