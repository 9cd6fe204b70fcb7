"""The live dashboard: what the launcher knows about every node, and how it looks.

Three layers, as in rich's ``top`` example:

* :class:`ClusterView` is the model.  The launcher tells it what happens
  (``expect`` a node it started, ``report`` a meter's :class:`termite.Load`,
  ``lost`` a node whose heartbeats stopped, ``restarted``, free-text
  ``event``) and calls ``tick`` now and then, so that a node that stops
  reporting turns suspect and then down.  It holds no clock: every call says
  when (``at``), on one clock the caller picks (``time.time()`` or
  ``time.monotonic()``), which keeps it deterministic under test.  Times
  shown are the time of day when ``at`` is ``time.time()``, else the time
  since the view's first call (``+0:01:05``).
* :meth:`ClusterView.snapshot` freezes it into a :class:`Snapshot` of
  :class:`Row` values: every figure the dashboard shows, computed once.
* :func:`render` and :func:`plain_lines` turn a snapshot into a rich
  renderable (the node table and the events pane, fitted to the console's
  width) or into colourless text lines for a stdout that is not a terminal.

Rows are kept per address (``host:port``), not per incarnation: a node that
comes back on the same address is the same row, counted as restarted, and a
row the launcher expected before the node's incarnation was known
(``NodeRef(host, port)``) is filled in by the node's first report.

    view = ClusterView("demo", suspect_after=2.0, down_after=5.0)
    view.expect(ref, "this-host", os_pid, at=time.monotonic())
    with rich.live.Live(view.renderable(time.monotonic()), auto_refresh=False) as live:
        ...  # on every meter report: view.report(load, at=time.monotonic())
        view.tick(time.monotonic())
        live.update(view.renderable(time.monotonic()), refresh=True)
"""

from __future__ import annotations

import dataclasses
import time
from collections import deque

from rich import box
from rich.console import Console, ConsoleOptions, RenderResult
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from termite import Load, NodeRef

__all__ = [
    "ClusterView",
    "Event",
    "Row",
    "Snapshot",
    "Totals",
    "format_duration",
    "format_rate",
    "load_bar",
    "plain_lines",
    "render",
    "sparkline",
]

STATES = ("starting", "up", "suspect", "down")
STATE_STYLES = {"starting": "dim", "up": "bold green", "suspect": "bold yellow", "down": "bold red"}
EVENT_STYLES = {
    "joined": "green",
    "up": "green",
    "restarted": "cyan",
    "suspect": "yellow",
    "down": "red",
    "info": "",
}
SPARKS = "▁▂▃▄▅▆▇█"
BAR_FULL, BAR_EMPTY = "█", "░"
BAR_PARTS = " ▏▎▍▌▋▊▉"  # eighths of a cell, for a smooth bar
EVENTS_KEPT = 50
EVENTS_SHOWN = 8
BAR_WIDTH = 8
EPOCH_LIKE = 1e9  # an ``at`` this large is time.time(): events show the wall clock


# -- data: what the dashboard shows ------------------------------------------


@dataclasses.dataclass(frozen=True)
class Row:
    """One node's line: every figure shown (``None`` where nothing is known yet)."""

    label: str  # the host's name in cluster.yaml (or the hostname the node reported)
    node: str  # host:port
    ref: NodeRef  # the current incarnation (incarnation None until the node reports)
    os_pid: int | None
    state: str  # starting, up, suspect or down
    load: float | None  # busy + run queue, as in Load.value
    history: tuple[float, ...]  # the last ``history`` loads, oldest first
    sparkline: str  # history drawn with ▁..█ on the cluster's load scale
    cpu: float | None  # percent of one core
    processes: int | None
    run_queue: int | None
    msgs_in: float | None  # frames per second between the last two reports
    msgs_out: float | None
    migrations_in: int | None  # totals since the node started
    migrations_out: int | None
    uptime: float | None  # seconds, as last reported
    last_report: float | None  # the ``at`` of the last report
    restarts: int  # how many times a new incarnation took this address

    @property
    def uptime_text(self) -> str:
        return "-" if self.uptime is None else format_duration(self.uptime)


@dataclasses.dataclass(frozen=True)
class Totals:
    """Cluster figures: rates and processes of live nodes (up or suspect), migrations of all."""

    up: int
    nodes: int
    processes: int
    msgs_in: float
    msgs_out: float
    migrations_in: int
    migrations_out: int


@dataclasses.dataclass(frozen=True)
class Event:
    """A line of the events pane; ``str(event)`` is how plain output prints it."""

    n: int  # 1, 2, 3, ...: ``ClusterView.events(after=n)`` gives the ones since
    at: float
    when: str  # ``at`` as shown: the wall clock, or the time since the view's first call
    kind: str  # joined, up, suspect, down, restarted or info
    text: str

    def __str__(self):
        return f"{self.when} {self.kind} {self.text}"


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """Everything one frame of the dashboard shows."""

    name: str
    at: float
    origin: float | None  # the first time the view was told about: event times count from it
    rows: tuple[Row, ...]
    totals: Totals
    events: tuple[Event, ...]
    scale: float  # the load that fills a bar and tops a sparkline


# -- the model ----------------------------------------------------------------


class _Node:
    """What the view knows of one address; mutable, private."""

    __slots__ = (
        "ref", "label", "os_pid", "state", "last", "last_at", "rates", "history", "restarts", "labelled", "retired",
    )

    def __init__(self, ref: NodeRef, label: str, os_pid: int | None, state: str, history: int, labelled: bool):
        self.ref = ref
        self.label = label
        self.labelled = labelled  # the launcher named it: a report's hostname does not override
        self.os_pid = os_pid
        self.state = state
        self.last: Load | None = None
        self.last_at: float | None = None
        self.rates: tuple[float, float] | None = None
        self.history: deque[float] = deque(maxlen=history)
        self.restarts = 0
        self.retired: set[int] = set()  # incarnations this row had: their late news is ignored

    def renew(self, ref: NodeRef) -> None:
        """A new incarnation at this address: what the old one measured no longer applies."""
        if self.ref.incarnation is not None:
            self.retired.add(self.ref.incarnation)
        self.ref = ref
        self.last = self.last_at = self.rates = None
        self.history.clear()
        self.restarts += 1


class ClusterView:
    """The dashboard's model of a cluster; see the module docstring."""

    def __init__(self, name: str, *, suspect_after: float, down_after: float, history: int = 30):
        if not 0 < suspect_after <= down_after:
            raise ValueError(
                f"need 0 < suspect_after <= down_after, got suspect_after={suspect_after!r}, "
                f"down_after={down_after!r}"
            )
        if history < 1:
            raise ValueError(f"history must be at least 1, got {history!r}")
        self.name = name
        self.suspect_after = suspect_after
        self.down_after = down_after
        self.history = history
        self._nodes: dict[tuple[str, int], _Node] = {}  # by address, in the order they appeared
        self._events: deque[Event] = deque(maxlen=EVENTS_KEPT)
        self._origin: float | None = None
        self._count = 0  # events so far

    # -- what the launcher tells it ------------------------------------------

    def expect(self, node: NodeRef, label: str, os_pid: int | None, at: float) -> None:
        """The launcher started ``node`` (its incarnation may still be None): a "starting" row."""
        self._seen(at)
        row = self._nodes.get(node.address)
        if row is None:
            self._nodes[node.address] = _Node(node, label, os_pid, "starting", self.history, labelled=True)
            return
        row.label, row.labelled = label, True
        if os_pid is not None:
            row.os_pid = os_pid
        if _other_incarnation(row.ref, node) or (row.state == "down" and node.incarnation is None):
            self._restart(row, node, at)
        elif row.ref.incarnation is None:
            row.ref = node

    def report(self, load: Load, at: float) -> None:
        """A meter report: the node is up (a node not seen before joins)."""
        self._seen(at)
        node = load.node
        row = self._nodes.get(node.address)
        if row is None:
            row = self._nodes[node.address] = _Node(node, load.host, load.os_pid, "starting", self.history, False)
        elif node.incarnation in row.retired:
            return  # a late report of an incarnation since replaced
        elif _other_incarnation(row.ref, node):
            self._restart(row, node, at)
        elif row.ref.incarnation is None:
            row.ref = node
        if row.last is not None:
            row.rates = _rates(row.last, load)
        row.last, row.last_at = load, at
        row.os_pid = load.os_pid
        if not row.labelled:
            row.label = load.host
        row.history.append(load.value)
        if row.state != "up":
            was, row.state = row.state, "up"
            if was == "starting":
                self._add(at, "joined", f"{_name(row)}: pid {load.os_pid}, {load.cores} cores")
            else:
                self._add(at, "up", f"{_name(row)}: reporting again after being {was}")

    def lost(self, node: NodeRef, at: float, reason: str = "noconnection") -> None:
        """The node's heartbeats stopped: it is down."""
        self._seen(at)
        row = self._nodes.get(node.address)
        if row is None:
            row = self._nodes[node.address] = _Node(node, node.host, None, "starting", self.history, False)
        elif node.incarnation in row.retired or _other_incarnation(row.ref, node):
            return  # an older incarnation: the one at this address now is another
        if row.state != "down":
            row.state = "down"
            self._add(at, "down", f"{_name(row)}: {reason}")

    def restarted(self, old: NodeRef, new: NodeRef, at: float) -> None:
        """``new`` replaces ``old`` (usually at the same address): one row, counted as restarted."""
        self._seen(at)
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

    def tick(self, at: float) -> None:
        """Judge silence: no report for ``suspect_after`` s is suspect, for ``down_after`` s down.

        Only nodes that have reported are judged; one still starting is the
        launcher's to time out (it says so with ``lost`` or ``event``).
        """
        self._seen(at)
        for row in self._nodes.values():
            if row.state not in ("up", "suspect") or row.last_at is None:
                continue
            silent = at - row.last_at
            if silent > self.down_after:
                row.state = "down"
                self._add(at, "down", f"{_name(row)}: no report for {silent:.1f} s")
            elif silent > self.suspect_after and row.state == "up":
                row.state = "suspect"
                self._add(at, "suspect", f"{_name(row)}: no report for {silent:.1f} s")

    # -- what it shows --------------------------------------------------------

    def rows(self) -> list[Row]:
        """One :class:`Row` per node, in the order they were first seen."""
        scale = self._scale()
        return [_row(node, scale) for node in self._nodes.values()]

    def totals(self) -> Totals:
        return _totals(self.rows())

    def events(self, after: int = 0) -> list[Event]:
        """The events kept (the last 50), oldest first; only those numbered above ``after`` if given.

        Plain output prints the new ones each time: ``for e in view.events(after=last): print(e)``.
        """
        return [event for event in self._events if event.n > after]

    def snapshot(self, at: float) -> Snapshot:
        rows = self.rows()
        return Snapshot(self.name, at, self._origin, tuple(rows), _totals(rows), tuple(self._events), self._scale())

    def renderable(self, at: float):
        """The whole dashboard as of ``at``, for a ``rich.live.Live``."""
        return render(self.snapshot(at))

    def plain_lines(self, at: float) -> list[str]:
        """One colourless line per node and a totals line, for a stdout that is not a terminal."""
        return plain_lines(self.snapshot(at))

    # -- inside ---------------------------------------------------------------

    def _seen(self, at: float) -> None:
        if self._origin is None:
            self._origin = at

    def _add(self, at: float, kind: str, text: str) -> None:
        self._count += 1
        self._events.append(Event(self._count, at, format_time(at, self._origin), kind, text))

    def _restart(self, row: _Node, new: NodeRef, at: float, was: NodeRef | None = None) -> None:
        old = was or row.ref
        row.renew(new)
        row.state = "starting"
        if old.address != new.address:
            self._add(at, "restarted", f"{old} -> {_name(row)}")
        else:
            self._add(at, "restarted", f"{_name(row)}: incarnation {_incarnation(old)} -> {_incarnation(new)}")

    def _scale(self) -> float:
        """The load a full bar stands for: a power of two, at least 1, steady as loads jitter."""
        top = max((value for node in self._nodes.values() for value in node.history), default=0.0)
        scale = 1.0
        while scale < top:
            scale *= 2
        return scale


def _other_incarnation(have: NodeRef, got: NodeRef) -> bool:
    """Whether ``got`` is another node than ``have`` (both known, same address or not)."""
    if have.address != got.address:
        return True
    return have.incarnation is not None and got.incarnation is not None and have.incarnation != got.incarnation


def _incarnation(ref: NodeRef) -> str:
    return "?" if ref.incarnation is None else f"{ref.incarnation:x}"[:6]


def _name(node: _Node) -> str:
    return f"{node.ref} ({node.label})"


def _rates(before: Load, after: Load) -> tuple[float, float] | None:
    """Frames per second in and out between two reports of one incarnation.

    The time between them is the node's own monotonic uptime, so neither the
    network's delays nor a wall clock that jumps distort it.
    """
    elapsed = after.uptime - before.uptime
    if elapsed <= 0:
        elapsed = after.time - before.time
    if elapsed <= 0 or after.frames_in < before.frames_in or after.frames_out < before.frames_out:
        return None
    return ((after.frames_in - before.frames_in) / elapsed, (after.frames_out - before.frames_out) / elapsed)


def _row(node: _Node, scale: float) -> Row:
    load = node.last
    rates = node.rates or (None, None)
    return Row(
        label=node.label,
        node=str(node.ref),
        ref=node.ref,
        os_pid=node.os_pid,
        state=node.state,
        load=None if load is None else load.value,
        history=tuple(node.history),
        sparkline=sparkline(node.history, scale),
        cpu=None if load is None else load.busy * 100,
        processes=None if load is None else load.processes,
        run_queue=None if load is None else load.run_queue,
        msgs_in=rates[0],
        msgs_out=rates[1],
        migrations_in=None if load is None else load.migrations_in,
        migrations_out=None if load is None else load.migrations_out,
        uptime=None if load is None else load.uptime,
        last_report=node.last_at,
        restarts=node.restarts,
    )


def _live(row: Row) -> bool:
    return row.state in ("up", "suspect")


def _totals(rows: list[Row]) -> Totals:
    live = [row for row in rows if _live(row)]
    return Totals(
        up=sum(row.state == "up" for row in rows),
        nodes=len(rows),
        processes=sum(row.processes or 0 for row in live),
        msgs_in=sum(row.msgs_in or 0.0 for row in live),
        msgs_out=sum(row.msgs_out or 0.0 for row in live),
        migrations_in=sum(row.migrations_in or 0 for row in rows),
        migrations_out=sum(row.migrations_out or 0 for row in rows),
    )


# -- formatting -----------------------------------------------------------------


def sparkline(values, scale: float) -> str:
    """``values`` as blocks ▁..█, where ▁ is 0 and █ is ``scale`` or more."""
    top = len(SPARKS) - 1
    return "".join(SPARKS[min(top, max(0, int(value / scale * top + 0.5)))] for value in values)


def load_bar(value: float, scale: float, width: int = BAR_WIDTH) -> str:
    """A bar of ``width`` cells filled to ``value / scale``, in eighths of a cell."""
    eighths = min(width * 8, max(0, int(value / scale * width * 8 + 0.5)))
    full, part = divmod(eighths, 8)
    bar = BAR_FULL * full + (BAR_PARTS[part] if part else "")
    return bar + BAR_EMPTY * (width - len(bar))


def format_duration(seconds: float) -> str:
    """h:mm:ss (hours grow as needed)."""
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def format_rate(value: float | None) -> str:
    """A per-second figure in at most five characters: 0, 7.5, 312, 12.3k, 4.0M."""
    if value is None:
        return "-"
    if value < 0.05:
        return "0"
    if value < 10:
        return f"{value:.1f}"
    if value < 999.5:
        return f"{value:.0f}"
    for unit, size in (("k", 1e3), ("M", 1e6), ("G", 1e9)):
        if value < size * 999.5 or unit == "G":
            shown = value / size
            return f"{shown:.1f}{unit}" if shown < 99.95 else f"{shown:.0f}{unit}"
    raise AssertionError("unreachable")


def format_time(at: float, origin: float | None) -> str:
    """When something happened: the wall clock for time.time() values, else time since the start."""
    if at >= EPOCH_LIKE:
        return time.strftime("%H:%M:%S", time.localtime(at))
    return "+" + format_duration(at - (origin if origin is not None else at))


def _number(value) -> str:
    return "-" if value is None else str(value)


def _state_text(row: Row) -> str:
    return row.state if not row.restarts else f"{row.state} ↻{row.restarts}"


def _load_style(value: float) -> str:
    return "green" if value < 0.75 else "yellow" if value < 1.5 else "red"


# -- rich rendering ---------------------------------------------------------------

# The columns, in display order: key, header, options, footer (a function of the snapshot's live rows).
# Always shown: node, state, load, cpu, procs, in, out, uptime.  The others join, in OPTIONAL's
# order, while the table still fits the console; then the sparkline grows to use what is left.
OPTIONAL = ("history", "host", "runq", "mig", "pid")
MIN_SPARK = 7  # as wide as its header


def render(snapshot: Snapshot):
    """The dashboard for ``snapshot``: a title line with the totals, the node table, the events pane.

    The returned object fits itself to the console's width when rendered: at
    120 columns every column shows, with as much of each node's sparkline as
    fits; narrower, the least needed columns go first (:data:`OPTIONAL`, last
    first).
    """
    return _Dashboard(snapshot)


class _Dashboard:
    def __init__(self, snapshot: Snapshot):
        self.snapshot = snapshot

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        snap = self.snapshot
        width = options.max_width
        unbounded = options.update_width(10_000)  # a table wider than the console is squeezed, not measured

        bar = BAR_WIDTH if width >= 100 else BAR_WIDTH // 2

        def needs(shown, spark):
            return console.measure(_table(snap, shown, spark, bar), options=unbounded).maximum

        history = max((len(row.history) for row in snap.rows), default=0)
        least = min(MIN_SPARK, history)
        shown = {"node", "state", "load", "cpu", "procs", "in", "out", "uptime"}
        for key in OPTIONAL:
            if key == "history" and not history:
                continue
            trial = shown | {key}
            if needs(trial, least if "history" in trial else 0) <= width:
                shown = trial
        spark = 0
        if "history" in shown:
            spark = min(history, least + width - needs(shown, least))
        yield _title(snap, width)
        yield _table(snap, shown, spark, bar)
        yield _events_pane(snap, width)


def _title(snap: Snapshot, width: int) -> Text:
    totals = snap.totals
    rates = format_rate(totals.msgs_in), format_rate(totals.msgs_out)
    when = f"  {format_time(snap.at, snap.origin)}" if snap.origin is not None else ""
    for short in (False, True):
        title = Text()
        if not short:
            title.append("termite ", "bold")
        title.append(snap.name, "bold cyan")
        title.append("  ")
        title.append(f"{totals.up}/{totals.nodes} up", "bold green" if totals.up == totals.nodes else "bold yellow")
        title.append(
            f"  {totals.processes} {'procs' if short else 'processes'}  msgs/s in {rates[0]} out {rates[1]}"
            f"  {'mig' if short else 'migrations'} in {totals.migrations_in} out {totals.migrations_out}"
        )
        title.append(when, "dim")
        if title.cell_len <= width:
            break
    title.no_wrap, title.overflow = True, "ellipsis"
    return title


def _table(snap: Snapshot, shown: set[str], spark: int, bar: int = BAR_WIDTH) -> Table:
    live = [row for row in snap.rows if _live(row)]
    totals = snap.totals
    footer = "total"
    table = Table(
        box=box.SIMPLE_HEAD,
        show_edge=False,
        padding=(0, 0),  # the box's blank separator is the gap: one cell, as in top(1)
        show_footer=bool(snap.rows),
        header_style="bold",
        footer_style="bold",
    )
    columns = []  # (key, header, options)
    if "host" in shown:
        columns.append(("host", "host", dict(footer=footer, no_wrap=True, overflow="ellipsis", max_width=16)))
        footer = ""
    columns += [
        ("node", "node", dict(footer=footer, no_wrap=True)),
        ("pid", "os\npid", dict(justify="right")),
        ("state", "state", dict(no_wrap=True)),
        ("load", f"load (0-{snap.scale:g})", dict(no_wrap=True, footer=f"{sum(r.load or 0 for r in live):.2f}")),
        ("history", "history", dict(no_wrap=True)),
        ("cpu", "cpu\n%", dict(justify="right", footer=f"{sum(r.cpu or 0 for r in live):.0f}")),
        ("procs", "procs", dict(justify="right", footer=str(totals.processes))),
        ("runq", "runq", dict(justify="right", footer=str(sum(r.run_queue or 0 for r in live)))),
        ("in", "msg/s\nin", dict(justify="right", footer=format_rate(totals.msgs_in))),
        ("out", "msg/s\nout", dict(justify="right", footer=format_rate(totals.msgs_out))),
        ("mig", "migr\nin/out", dict(justify="right", footer=f"{totals.migrations_in}/{totals.migrations_out}")),
        ("uptime", "uptime", dict(justify="right")),
    ]
    keys = [key for key, _, _ in columns if key in shown and (key != "history" or spark > 0)]
    for key, header, options in columns:
        if key in keys:
            table.add_column(header, **options)
    for row in snap.rows:
        cells = _cells(row, snap.scale, spark, bar)
        table.add_row(*(cells[key] for key in keys), style="dim" if row.state == "down" else None)
    if not snap.rows:
        table.caption = "no nodes yet"
    return table


def _cells(row: Row, scale: float, spark: int, bar: int) -> dict:
    live = _live(row) and row.load is not None
    if live:
        load = Text(load_bar(row.load, scale, bar), style=_load_style(row.load))
        load.append(f" {row.load:5.2f}", style="")
    else:
        load = Text("-")
    return {
        "host": row.label,
        "node": row.node,
        "pid": _number(row.os_pid),
        "state": Text(_state_text(row), style=STATE_STYLES[row.state]),
        "load": load,
        "history": Text(row.sparkline[-spark:] if spark else "", style="cyan"),
        "cpu": f"{row.cpu:.0f}" if live else "-",
        "procs": _number(row.processes) if live else "-",
        "runq": _number(row.run_queue) if live else "-",
        "in": format_rate(row.msgs_in) if live else "-",
        "out": format_rate(row.msgs_out) if live else "-",
        "mig": f"{_number(row.migrations_in)}/{_number(row.migrations_out)}",
        "uptime": row.uptime_text if live else "-",
    }


def _events_pane(snap: Snapshot, width: int) -> Panel:
    lines = Text()
    shown = snap.events[-EVENTS_SHOWN:]
    for i, event in enumerate(shown):
        if i:
            lines.append("\n")
        lines.append(event.when, style="dim")
        lines.append("  ")
        lines.append(f"{event.kind:<9}", style=EVENT_STYLES.get(event.kind, ""))
        lines.append(" ")
        lines.append(event.text)
    if not shown:
        lines.append("no events yet", style="dim")
    lines.no_wrap = True
    lines.overflow = "ellipsis"
    return Panel(lines, title="events", title_align="left", box=box.ROUNDED, width=min(width, 120))


# -- plain text -----------------------------------------------------------------------


def plain_lines(snapshot: Snapshot) -> list[str]:
    """One line per node, then a totals line; fields in a fixed order, ``key=value`` after the first four.

    ``-`` marks a figure not known (no report yet, or one report where a rate needs two).
    """
    when = format_time(snapshot.at, snapshot.origin)
    lines = []
    for row in snapshot.rows:
        live = _live(row)
        fields = [
            when,
            row.label,
            row.node,
            row.state,
            f"pid={_number(row.os_pid)}",
            f"load={row.load:.2f}" if live and row.load is not None else "load=-",
            f"cpu={row.cpu:.0f}%" if live and row.cpu is not None else "cpu=-",
            f"procs={_number(row.processes) if live else '-'}",
            f"runq={_number(row.run_queue) if live else '-'}",
            _per_second("in", row.msgs_in if live else None),
            _per_second("out", row.msgs_out if live else None),
            f"mig_in={_number(row.migrations_in)}",
            f"mig_out={_number(row.migrations_out)}",
            f"uptime={row.uptime_text if live else '-'}",
            f"restarts={row.restarts}",
        ]
        lines.append(" ".join(fields))
    totals = snapshot.totals
    lines.append(
        f"{when} total {snapshot.name} up={totals.up}/{totals.nodes} procs={totals.processes}"
        f" {_per_second('in', totals.msgs_in)} {_per_second('out', totals.msgs_out)}"
        f" mig_in={totals.migrations_in} mig_out={totals.migrations_out}"
    )
    return lines


def _per_second(key: str, value: float | None) -> str:
    return f"{key}=-" if value is None else f"{key}={format_rate(value)}/s"
