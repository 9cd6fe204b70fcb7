"""The dashboard's look: pure functions from a snapshot to a rich renderable or plain lines.

The render layer of the dashboard (termite_launcher.dashboard): :func:`render`
lays a :class:`~termite_launcher.dashboard_snapshot.Snapshot` out as a title
line with the totals, the node table, a line for each node down or failed
saying why, and the events pane, fitted to the
console's width when drawn; :func:`plain_lines` writes it as colourless
lines, for a stdout that is not a terminal.  Nothing here keeps state or
reads a clock.
"""

from __future__ import annotations

from rich import box
from rich.console import Console, ConsoleOptions, RenderResult
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from termite_launcher.dashboard_snapshot import Row, Snapshot, format_count, format_rate, format_time

__all__ = ["load_bar", "plain_lines", "render"]

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
    "info": "",
}
BAR_FULL, BAR_EMPTY = "█", "░"
BAR_PARTS = " ▏▎▍▌▋▊▉"  # eighths of a cell, for a smooth bar
EVENTS_SHOWN = 8
KIND_WIDTH = max(map(len, EVENT_STYLES))  # the events pane's kind column: "unresponsive"
BAR_WIDTH = 8


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


def _load_style(value: float) -> str:
    return "green" if value < 0.75 else "yellow" if value < 1.5 else "red"


# -- rich rendering ---------------------------------------------------------------

# The columns, in display order: key, header, options, footer (a function of the snapshot's live rows).
# Always shown: node, state, load, cpu, procs, in, out, uptime.  The others join, in OPTIONAL's
# order, while the table still fits the console; then the sparkline grows to use what is left.
OPTIONAL = ("history", "host", "mbox", "runq", "mig", "pid")
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
        yield from _reasons(snap)
        yield from _flow_notes(snap)
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
        if totals.unresponsive:  # connected but silent: not up, not down either
            title.append(", ")
            title.append(f"{totals.unresponsive} unresponsive", STATE_STYLES["unresponsive"])
        if totals.failed:  # given up on: they stay down until the cluster is started again
            title.append(", ")
            title.append(f"{totals.failed} failed", "bold red")
        title.append(
            f"  {totals.processes} {'procs' if short else 'processes'}  msgs/s in {rates[0]} out {rates[1]}"
            f"  {'mig' if short else 'migrations'} in {totals.migrations_in} out {totals.migrations_out}"
        )
        if totals.balanced:  # moves the balancer asked for: its work shows only when it did some
            title.append(f" ({totals.balanced} {'bal' if short else 'by the balancer'})")
        title.append(when, "dim")
        if title.cell_len <= width:
            break
    title.no_wrap, title.overflow = True, "ellipsis"
    return title


def _table(snap: Snapshot, shown: set[str], spark: int, bar: int = BAR_WIDTH) -> Table:
    live = [row for row in snap.rows if row.live]
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
        # messages waiting in all the node's mailboxes / in its largest: a process behind its senders
        ("mbox", "mbox\nall/max", dict(justify="right", no_wrap=True,
                                        footer=f"{format_count(totals.queued)}/{format_count(totals.largest_mailbox)}")),
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
        table.add_row(*(cells[key] for key in keys), style="dim" if row.state in ("down", "failed") else None)
    if not snap.rows:
        table.caption = "no nodes yet"
    return table


def _cells(row: Row, scale: float, spark: int, bar: int) -> dict:
    live = row.live and row.load is not None
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
        "mbox": f"{format_count(row.queued)}/{format_count(row.largest_mailbox)}" if live else "-",
        "in": format_rate(row.msgs_in) if live else "-",
        "out": format_rate(row.msgs_out) if live else "-",
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

    ``-`` marks a figure not known (no report yet, or one report where a rate needs two).
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
            f"load={row.load:.2f}" if live and row.load is not None else "load=-",
            f"cpu={row.cpu:.0f}%" if live and row.cpu is not None else "cpu=-",
            f"procs={_number(row.processes) if live else '-'}",
            f"runq={_number(row.run_queue) if live else '-'}",
            f"queued={_number(row.queued) if live else '-'}",
            f"mbox_max={_number(row.largest_mailbox) if live else '-'}",
            _per_second("in", row.msgs_in if live else None),
            _per_second("out", row.msgs_out if live else None),
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
    lines.append(
        f"{when} total {snapshot.name} up={totals.up}/{totals.nodes} unresponsive={totals.unresponsive}"
        f" procs={totals.processes} queued={totals.queued} mbox_max={totals.largest_mailbox}"
        f" {_per_second('in', totals.msgs_in)} {_per_second('out', totals.msgs_out)}"
        f" mig_in={totals.migrations_in} mig_out={totals.migrations_out}"
        + (f" failed={totals.failed}" if totals.failed else "")
        + (f" balanced={totals.balanced}" if totals.balanced else "")
    )
    return lines


def _per_second(key: str, value: float | None) -> str:
    return f"{key}=-" if value is None else f"{key}={format_rate(value)}/s"
