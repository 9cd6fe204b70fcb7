"""The dashboard's look: pure functions from a snapshot to a rich renderable or plain lines.

The render layer of the dashboard (termite_launcher.dashboard): :func:`render`
lays a :class:`~termite_launcher.dashboard_snapshot.Snapshot` out as a title
line with the totals, the node table, a line for each node down or failed
saying why, the process view if it shows (each node's busiest processes),
the events pane and, where keys work, a line naming them, fitted to the console's width when drawn
(columns of fixed widths: the layout stays put as figures change);
:func:`plain_lines` writes it as colourless lines, for a stdout that is not
a terminal.  Nothing here keeps state or reads a clock.
"""

from __future__ import annotations

from typing import NamedTuple

from rich import box
from rich.console import Console, ConsoleOptions, RenderResult
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from termite_launcher.dashboard_snapshot import (
    CPU_SCALE, EVENT_KINDS, Row, Snapshot, format_count, format_rate, format_time,
)

__all__ = ["load_bar", "plain_lines", "process_lines", "render"]

STATE_STYLES = {
    "starting": "dim",
    "up": "bold green",
    "suspect": "bold yellow",
    "unresponsive": "bold magenta",  # busy, not down: connected, but silent past unresponsive_after
    "down": "bold red",
    "failed": "bold white on red",  # down for good: the launcher gave up restarting it
}
EVENT_STYLES = {
    "joined": "green",
    "up": "green",
    "restarted": "cyan",
    "suspect": "yellow",
    "unresponsive": "magenta",
    "down": "red",
    "failed": "bold red",
    "balanced": "blue",
    "said": "bold",
    "debug": "dim",
    "info": "",
    "warning": "yellow",
    "error": "red",
    "critical": "bold red",
}
BAR_FULL, BAR_EMPTY = "█", "░"
BAR_PARTS = " ▏▎▍▌▋▊▉"  # eighths of a cell, for a smooth bar
EVENTS_SHOWN = 8
KIND_WIDTH = max(map(len, EVENT_KINDS))  # the events pane's kind column: "unresponsive"
BAR_WIDTH = 8
PROCESSES_SHOWN = 5  # a node's, in the process view
PROCESS_STATE_STYLES = {"running": "bold green", "runnable": "green", "suspended": "yellow", "migrating": "blue"}


def load_bar(value: float, scale: float, width: int = BAR_WIDTH) -> str:
    """A bar of ``width`` cells filled to ``value / scale``, in eighths of a cell."""
    eighths = min(width * 8, max(0, int(value / scale * width * 8 + 0.5)))
    full, part = divmod(eighths, 8)
    bar = BAR_FULL * full + (BAR_PARTS[part] if part else "")
    return bar + BAR_EMPTY * (width - len(bar))


def _number(value) -> str:
    return "-" if value is None else str(value)


def _state_text(row: Row) -> str:
    return row.state if not row.restarts else f"{row.state} ↻{row.restarts}"


def _cpu_style(percent: float) -> str:
    return "green" if percent < 75 else "yellow" if percent < 100 else "red"


# -- rich rendering ---------------------------------------------------------------

# Every column has a fixed width, fixed by the console's width and the rows' names alone, never by
# figures that change as the cluster runs: the table does not jitter from frame to frame.  The
# history column is as wide as the history a row keeps from the first frame on (or what is left).
# Always shown: node, state, cpu.  The others join in PRIORITY's order while the table still fits
# the console; the history column takes what is left (at least MIN_SPARK cells).  Shown, columns
# keep the order of _columns.
PRIORITY = ("runq", "done", "failed", "thunk_rate", "in", "uptime", "host", "pid", "procs", "history", "out", "mbox",
            "mig")
ALWAYS = ("node", "state", "cpu")
MIN_SPARK = 7  # as wide as its header
HOST_WIDTH = 16  # at most: a longer name is cut with an ellipsis
STATE_WIDTH = len("unresponsive")


def render(snapshot: Snapshot):
    """The dashboard for ``snapshot``: a title line with the totals, the node table, the events pane.

    The returned object fits itself to the console's width when rendered: at
    120 columns most columns show, with as much of each node's history as
    fits; narrower, the least needed columns go (:data:`PRIORITY`, last
    first).  Column widths do not depend on the figures shown.
    """
    return _Dashboard(snapshot)


class _Dashboard:
    def __init__(self, snapshot: Snapshot):
        self.snapshot = snapshot

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        snap = self.snapshot
        width = options.max_width
        bar = BAR_WIDTH if width >= 100 else BAR_WIDTH // 2
        columns = _columns(snap, bar, spark=MIN_SPARK)
        used = sum(columns[key].width for key in ALWAYS) + len(ALWAYS) - 1
        shown = set(ALWAYS)
        for key in PRIORITY:
            if used + 1 + columns[key].width <= width:  # one cell between columns
                shown.add(key)
                used += 1 + columns[key].width
        spark = MIN_SPARK + min(snap.history - MIN_SPARK, width - used) if "history" in shown else 0
        yield _title(snap, width)
        yield _table(snap, _columns(snap, bar, spark), shown, bar)
        yield from _reasons(snap)
        yield from _flow_notes(snap)
        if snap.processes:
            per_node = PROCESSES_SHOWN
            if snap.keys:  # the live dashboard: as many as fit the terminal, or its last lines would be cut
                live = sum(row.live for row in snap.rows) or 1
                notes = sum(1 for _ in _reasons(snap)) + sum(1 for _ in _flow_notes(snap))
                used = 1 + (len(snap.rows) + 5) + notes + 3 + (min(EVENTS_SHOWN, len(snap.events)) or 1) + 2 + 1
                per_node = max(1, min(PROCESSES_SHOWN, (options.max_height - used) // live))
            yield _process_table(snap, width, per_node)
        yield _events_pane(snap, width)
        if snap.keys:
            yield _keys_line(snap)


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
        if totals.unresponsive:  # connected but silent: not up, not down either
            title.append(", ")
            title.append(f"{totals.unresponsive} unresponsive", STATE_STYLES["unresponsive"])
        if totals.failed:  # given up on: they stay down until the cluster is started again
            title.append(", ")
            title.append(f"{totals.failed} failed", "bold red")
        title.append(f"  {totals.processes} {'procs' if short else 'processes'}  msgs/s in {rates[0]} out {rates[1]}")
        if totals.thunks_received:  # a job ran: its count shows
            title.append(f"  thunks {totals.thunks_done}/{totals.thunks_received} done")
            if totals.thunks_failed:
                title.append(f", {totals.thunks_failed} failed", "bold red")
            title.append(f", {format_rate(totals.thunks_rate)}/s")
        title.append(f"  {'mig' if short else 'migrations'} in {totals.migrations_in} out {totals.migrations_out}")
        if totals.balanced:  # moves the balancer asked for: its work shows only when it did some
            title.append(f" ({totals.balanced} {'bal' if short else 'by the balancer'})")
        title.append(when, "dim")
        if title.cell_len <= width:
            break
    title.no_wrap, title.overflow = True, "ellipsis"
    return title


class _Column(NamedTuple):
    header: str
    width: int
    footer: str = ""
    justify: str = "right"


def _columns(snap: Snapshot, bar: int, spark: int) -> dict[str, _Column]:
    """Every column, in display order: its header, its fixed width and its footer (the totals)."""
    totals = snap.totals
    host = min(HOST_WIDTH, max([len("total"), *(len(row.label) for row in snap.rows)]))  # "total": its footer
    node = max([len("total"), *(len(row.node) for row in snap.rows)])
    state = max([STATE_WIDTH, *(len(_state_text(row)) for row in snap.rows)])
    cpu = bar + 4  # the bar, then a percentage of up to three digits
    average = "-" if totals.cpu_average is None else f"{totals.cpu_average:.0f}"
    return {
        "host": _Column("host", host, "", "left"),
        "node": _Column("node", node, "", "left"),
        "pid": _Column("os\npid", 7),
        "state": _Column("state", state, "", "left"),
        # A fixed scale, a core: a node is one interpreter (its worker thread may add some)
        "cpu": _Column("cpu\n% of a core" if cpu >= 11 else "cpu\n% core", cpu, f"avg {average}"),
        "history": _Column("history", spark, "", "left"),
        "runq": _Column("run\nqueue", 5, str(totals.run_queue)),
        "procs": _Column("procs", 5, str(totals.processes)),
        # messages waiting in all the node's mailboxes / in its largest: a process behind its senders
        "mbox": _Column("mbox\nall/max", 11, f"{format_count(totals.queued)}/{format_count(totals.largest_mailbox)}"),
        "in": _Column("msg/s\nin", 5, format_rate(totals.msgs_in)),
        "out": _Column("msg/s\nout", 5, format_rate(totals.msgs_out)),
        "thunk_rate": _Column("thunks\n/s", 6, format_rate(totals.thunks_rate)),
        # thunks finished / sent to the node, since it started
        "done": _Column("thunks\ndone/all", 11,
                        f"{format_count(totals.thunks_done)}/{format_count(totals.thunks_received)}"),
        "failed": _Column("thunks\nfailed", 6, format_count(totals.thunks_failed)),
        "mig": _Column("migr\nin/out", 7, f"{totals.migrations_in}/{totals.migrations_out}"),
        "uptime": _Column("uptime", 8),
    }


def _table(snap: Snapshot, columns: dict[str, _Column], shown: set[str], bar: int) -> Table:
    table = Table(
        box=box.SIMPLE_HEAD,
        show_edge=False,
        padding=(0, 0),  # the box's blank separator is the gap: one cell, as in top(1)
        show_footer=bool(snap.rows),
        header_style="bold",
        footer_style="bold",
    )
    keys = [key for key in columns if key in shown]
    for i, key in enumerate(keys):
        column = columns[key]
        footer = "total" if i == 0 else column.footer
        table.add_column(column.header, footer=footer, justify=column.justify, width=column.width,
                         min_width=column.width, max_width=column.width, no_wrap=True, overflow="ellipsis")
    for row in snap.rows:
        cells = _cells(row, columns["history"].width, bar)
        table.add_row(*(cells[key] for key in keys), style="dim" if row.state in ("down", "failed") else None)
    if not snap.rows:
        table.caption = "no nodes yet"
    return table


def _cells(row: Row, spark: int, bar: int) -> dict:
    live = row.live and row.cpu is not None
    if live:
        cpu = Text(load_bar(row.cpu / 100, CPU_SCALE, bar), style=_cpu_style(row.cpu))
        cpu.append(f" {row.cpu:3.0f}", style="")
    else:
        cpu = Text("-")
    thunks = row.thunks_received is not None
    return {
        "host": row.label,
        "node": row.node,
        "pid": _number(row.os_pid),
        "state": Text(_state_text(row), style=STATE_STYLES[row.state]),
        "cpu": cpu,
        "history": Text(row.sparkline[-spark:] if spark else "", style="cyan"),
        "procs": _number(row.processes) if live else "-",
        "runq": _number(row.run_queue) if live else "-",
        "mbox": f"{format_count(row.queued)}/{format_count(row.largest_mailbox)}" if live else "-",
        "in": format_rate(row.msgs_in) if live else "-",
        "out": format_rate(row.msgs_out) if live else "-",
        "thunk_rate": format_rate(row.thunks_rate) if live else "-",
        # counts since the node started: a node down keeps what it did
        "done": f"{format_count(row.thunks_done)}/{format_count(row.thunks_received)}" if thunks else "-",
        "failed": Text(format_count(row.thunks_failed), style="red" if row.thunks_failed else "") if thunks else "-",
        "mig": f"{_number(row.migrations_in)}/{_number(row.migrations_out)}",
        "uptime": row.uptime_text if live else "-",
    }


def _reasons(snap: Snapshot):
    """Under the table: why each node that is down or failed is, in full (a cell would cut it)."""
    for row in snap.rows:
        if row.reason and row.state in ("down", "failed"):
            line = Text("↳ ", style="dim")  # marks it as a note on the row above, not a row
            line.append(f"{row.node} ({row.label}) ")
            line.append(row.state, style=STATE_STYLES[row.state])
            line.append(f": {row.reason}")
            line.no_wrap, line.overflow = True, "ellipsis"
            yield line


def _flow_notes(snap: Snapshot):
    """Under the table: flow control holding senders back (termite._net.flow), one line a node."""
    for row in snap.rows:
        if not row.live or not (row.busy_nodes or row.full_mailboxes):
            continue
        line = Text("↳ ", style="dim")
        line.append(f"{row.node} ({row.label}) ")
        line.append("busy", style="yellow")
        said = []
        if row.busy_nodes:
            said.append(f"waits for {', '.join(row.busy_nodes)} to read")
        if row.full_mailboxes:
            said.append(f"{row.full_mailboxes} process{'es' if row.full_mailboxes > 1 else ''} behind, "
                        "their remote senders wait")
        line.append(": " + "; ".join(said))
        line.no_wrap, line.overflow = True, "ellipsis"
        yield line


def _process_table(snap: Snapshot, width: int, per_node: int = PROCESSES_SHOWN) -> Table:
    """The process view: each live node's busiest processes, by mailbox or by cpu (steps a second)."""
    by = "mailbox" if snap.sort == "mailbox" else "cpu (steps/s)"
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0), header_style="bold",
                  title=f"processes by {by}", title_justify="left", title_style="bold")
    node = max([len("node"), *(len(row.node) for row in snap.rows)])
    name = 16 if width >= 100 else 10
    for header, size, justify in (("node", node, "left"), ("pid", 7, "right"), ("name", name, "left"),
                                  ("state", len("suspended"), "left"), ("mbox", 6, "right"),
                                  ("steps/s", 7, "right"), ("steps", 6, "right")):
        table.add_column(header, width=size, min_width=size, max_width=size, justify=justify, no_wrap=True,
                         overflow="ellipsis")
    shown = 0
    for row in snap.rows:
        if not row.live:
            continue
        for i, proc in enumerate(row.processes_by(snap.sort)[:per_node]):
            table.add_row(
                row.node if i == 0 else "",
                "/" + proc.pid.rpartition("/")[2],
                proc.name or "",
                Text(proc.state, style=PROCESS_STATE_STYLES.get(proc.state, "")),
                Text(format_count(proc.mailbox), style="yellow" if proc.mailbox >= 1000 else ""),
                format_rate(proc.steps_rate),
                format_count(proc.steps),
            )
            shown += 1
    if not shown:
        table.caption = "no process reported yet"
    return table


def _keys_line(snap: Snapshot) -> Text:
    line = Text("keys: ", style="dim")
    line.append("p", style="bold")
    line.append(" hide processes" if snap.processes else " processes", style="dim")
    line.append("  m", style="bold" if snap.sort == "mailbox" and snap.processes else "dim")
    line.append(" by mailbox  ", style="dim")
    line.append("c", style="bold" if snap.sort == "cpu" and snap.processes else "dim")
    line.append(" by cpu  ctrl-c stop", style="dim")
    return line


def _events_pane(snap: Snapshot, width: int) -> Panel:
    lines = Text()
    shown = snap.events[-EVENTS_SHOWN:]
    for i, event in enumerate(shown):
        if i:
            lines.append("\n")
        lines.append(event.when, style="dim")
        lines.append("  ")
        lines.append(f"{event.kind:<{KIND_WIDTH}}", style=EVENT_STYLES.get(event.kind, ""))
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

    ``-`` marks a figure not known (no report yet, or one report where a rate
    needs two).  ``cpu`` is in percent of a core, ``cpu_avg`` the mean of the
    live nodes; ``thunks`` counts thunks finished per second, ``thunks_done``,
    ``thunks_sent`` and ``thunks_failed`` the thunks of each node since it
    started; the totals line's ``failed`` counts the nodes given up on.
    """
    when = format_time(snapshot.at, snapshot.origin)
    lines = []
    for row in snapshot.rows:
        live = row.live
        fields = [
            when,
            row.label,
            row.node,
            row.state,
            f"pid={_number(row.os_pid)}",
            f"cpu={row.cpu:.0f}%" if live and row.cpu is not None else "cpu=-",
            f"runq={_number(row.run_queue) if live else '-'}",
            f"procs={_number(row.processes) if live else '-'}",
            f"queued={_number(row.queued) if live else '-'}",
            f"mbox_max={_number(row.largest_mailbox) if live else '-'}",
            _per_second("in", row.msgs_in if live else None),
            _per_second("out", row.msgs_out if live else None),
            _per_second("thunks", row.thunks_rate if live else None),
            f"thunks_done={_number(row.thunks_done)}",
            f"thunks_sent={_number(row.thunks_received)}",
            f"thunks_failed={_number(row.thunks_failed)}",
            f"mig_in={_number(row.migrations_in)}",
            f"mig_out={_number(row.migrations_out)}",
            f"uptime={row.uptime_text if live else '-'}",
            f"restarts={row.restarts}",
        ]
        if live and row.busy_nodes:
            fields.append(f"waits_for={','.join(row.busy_nodes)}")
        if live and row.full_mailboxes:
            fields.append(f"full_mailboxes={row.full_mailboxes}")
        if row.reason and row.state in ("down", "failed"):
            fields.append(f"why={row.reason}")  # last: it has spaces
        lines.append(" ".join(fields))
    totals = snapshot.totals
    average = "-" if totals.cpu_average is None else f"{totals.cpu_average:.0f}%"
    lines.append(
        f"{when} total {snapshot.name} up={totals.up}/{totals.nodes} unresponsive={totals.unresponsive}"
        f" cpu_avg={average} runq={totals.run_queue} procs={totals.processes} queued={totals.queued}"
        f" mbox_max={totals.largest_mailbox} {_per_second('in', totals.msgs_in)} {_per_second('out', totals.msgs_out)}"
        f" {_per_second('thunks', totals.thunks_rate)} thunks_done={totals.thunks_done}"
        f" thunks_sent={totals.thunks_received} thunks_failed={totals.thunks_failed}"
        f" mig_in={totals.migrations_in} mig_out={totals.migrations_out}"
        + (f" failed={totals.failed}" if totals.failed else "")
        + (f" balanced={totals.balanced}" if totals.balanced else "")
    )
    return lines


def _per_second(key: str, value: float | None) -> str:
    return f"{key}=-" if value is None else f"{key}={format_rate(value)}/s"


def process_lines(snapshot: Snapshot) -> list[str]:
    """The process view as plain lines: per live node, its busiest processes in the view's order.

    ``steps_per_s`` is ``-`` for a process not in the node's report before
    (and for every process when only one report was had: ``--processes``).
    """
    when = format_time(snapshot.at, snapshot.origin)
    lines = []
    for row in snapshot.rows:
        if not row.live:
            continue
        for proc in row.processes_by(snapshot.sort)[:PROCESSES_SHOWN]:
            fields = [when, "process", row.node, f"pid={proc.pid}", f"state={proc.state}", f"mailbox={proc.mailbox}",
                      _per_second("steps_per_s", proc.steps_rate), f"steps={proc.steps}"]
            if proc.name:
                fields.append(f"name={proc.name}")
            lines.append(" ".join(fields))
    return lines
