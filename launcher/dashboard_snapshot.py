"""What one frame of the dashboard shows: snapshot dataclasses, and how their figures are written.

The data layer of the dashboard (termite_launcher.dashboard): a
:class:`Snapshot` holds :class:`Row` values (each with its node's busiest
processes, :class:`ProcessRow`), the :class:`Totals` and the :class:`Event`
lines, and which view shows (the nodes, or their processes too, sorted by
mailbox or by cpu), every figure computed once by the model; the render
functions (termite_launcher.dashboard_render) only lay them out.  The
``format_*`` functions and :func:`sparkline` write figures as text, for both.
"""

from __future__ import annotations

import dataclasses
import time

from termite import NodeRef

__all__ = [
    "CPU_SCALE",
    "EVENT_KINDS",
    "Event",
    "PROCESS_SORTS",
    "ProcessRow",
    "Row",
    "Snapshot",
    "Totals",
    "format_count",
    "format_duration",
    "format_rate",
    "format_time",
    "sparkline",
]

# A row's, in the order a node goes through them.  Silence leads to "unresponsive" (connected, busy),
# never to "down": a row is down only when termite declared the node down (ClusterView.lost) or the
# launcher saw its process end (ClusterView.exited); "failed" is down for good: the launcher gave up
# restarting it (ClusterView.gave_up).
STATES = ("starting", "up", "suspect", "unresponsive", "down", "failed")
SPARKS = "▁▂▃▄▅▆▇█"
CPU_SCALE = 1.0  # cores: a cpu bar or sparkline is full for a core kept busy, whatever the run
# What the events pane tells of: a node's states, a restart, a move the balancer asked for, a line a
# process said (termite.say), the launcher's own log records (by level) and any other line (info).
EVENT_KINDS = ("joined", "up", "suspect", "unresponsive", "down", "failed", "restarted", "balanced", "said",
               "debug", "info", "warning", "error", "critical")
EPOCH_LIKE = 1e9  # an ``at`` this large is time.time(): events show the wall clock
PROCESS_SORTS = ("mailbox", "cpu")  # how the process view orders a node's processes


@dataclasses.dataclass(frozen=True)
class ProcessRow:
    """One process of the process view: among its node's largest mailboxes or most steps (termite.ProcessLoad)."""

    pid: str  # "host:port/serial"
    name: str | None  # its registered name
    state: str  # running, runnable, receiving, sleeping, awaiting, migrating...
    mailbox: int  # messages waiting
    steps: int  # times it ran, since it started on that node
    steps_rate: float | None  # steps per second between the node's last two reports (None: not in both)


@dataclasses.dataclass(frozen=True)
class Row:
    """One node's line: every figure shown (``None`` where nothing is known yet)."""

    label: str  # the host's name in cluster.yaml (or the hostname the node reported)
    node: str  # host:port
    ref: NodeRef  # the current incarnation (incarnation None until the node reports)
    os_pid: int | None
    state: str  # one of STATES: starting, up, suspect, unresponsive or down
    history: tuple[float, ...]  # the last ``history`` cpu figures (in cores: 1.0 is a core kept busy), oldest first
    sparkline: str  # history drawn with ▁..█, █ for a core kept busy (CPU_SCALE)
    cpu: float | None  # percent of one core (a node is one interpreter, on one core; its threads may add more)
    processes: int | None
    run_queue: int | None  # processes ready to run + thunks waiting or running in its runner
    queued: int | None  # messages waiting in all the node's mailboxes
    largest_mailbox: int | None  # the messages waiting in its largest one
    msgs_in: float | None  # frames per second between the last two reports
    msgs_out: float | None
    migrations_in: int | None  # totals since the node started
    migrations_out: int | None
    uptime: float | None  # seconds, as last reported
    last_report: float | None  # the ``at`` of the last report
    restarts: int  # how many times a new incarnation took this address
    reason: str | None = None  # why it is down or failed: "killed by signal 9 (SIGKILL)"; None while it lives
    balanced_in: int | None = None  # migrations to it at the balancer's request (termite.balanceable)
    busy_nodes: tuple = ()  # nodes its senders wait for: sent more than the buffer limit, unread (flow control)
    full_mailboxes: int = 0  # its processes whose remote senders wait for them to read (flow control)
    cores: int | None = None  # its host's logical CPUs
    thunks_received: int | None = None  # thunks its runner was sent, since the node started
    thunks_done: int | None = None  # of those, finished (returned or raised)
    thunks_failed: int | None = None  # of those, raised
    thunks_rate: float | None = None  # thunks finished per second between the last two reports
    top: tuple[ProcessRow, ...] = ()  # its busiest processes, as last reported

    def processes_by(self, sort: str) -> tuple[ProcessRow, ...]:
        """Its busiest processes, the largest mailbox first (``"mailbox"``) or the most steps a second (``"cpu"``)."""
        if sort == "cpu":
            key = lambda p: (p.steps_rate if p.steps_rate is not None else -1.0, p.steps)  # noqa: E731
        else:
            key = lambda p: (p.mailbox, p.steps)  # noqa: E731
        return tuple(sorted(self.top, key=key, reverse=True))

    @property
    def live(self) -> bool:
        """Connected and known: up, suspect or unresponsive.

        Its last figures still stand: an unresponsive node is busy, not gone,
        and its processes are still there (a down node's figures do not).
        """
        return self.state in ("up", "suspect", "unresponsive")

    @property
    def uptime_text(self) -> str:
        return "-" if self.uptime is None else format_duration(self.uptime)


@dataclasses.dataclass(frozen=True)
class Totals:
    """Cluster figures: rates and processes of live nodes (up, suspect or unresponsive), migrations of all.

    ``up`` counts the rows that are up; ``unresponsive`` those that are
    connected but silent (busy, not down).  An unresponsive node is not
    counted as up, nor as down: the header says "3/4 up, 1 unresponsive".
    Thunk counts are of every row (a node down keeps what it did); a row
    restarted counts from its new start.
    """

    up: int
    unresponsive: int
    nodes: int
    processes: int
    queued: int  # messages waiting in the mailboxes of live nodes
    largest_mailbox: int  # the largest mailbox of a live node
    msgs_in: float
    msgs_out: float
    migrations_in: int
    migrations_out: int
    failed: int = 0  # rows the launcher gave up restarting
    balanced: int = 0  # of those migrations, the ones the balancer asked for
    cpu_average: float | None = None  # percent of a core, the mean of the live nodes that reported (None: none did)
    run_queue: int = 0  # of live nodes
    thunks_received: int = 0
    thunks_done: int = 0
    thunks_failed: int = 0
    thunks_rate: float = 0.0  # of live nodes


@dataclasses.dataclass(frozen=True)
class Event:
    """A line of the events pane; ``str(event)`` is how plain output prints it."""

    n: int  # 1, 2, 3, ...: ``ClusterView.events(after=n)`` gives the ones since
    at: float
    when: str  # ``at`` as shown: the wall clock, or the time since the view's first call
    kind: str  # one of EVENT_KINDS
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
    history: int = 30  # the cpu figures a row keeps: the history column is this wide from the start
    processes: bool = False  # the process view shows too (key p)
    sort: str = "mailbox"  # one of PROCESS_SORTS: how it orders each node's processes (keys m, c)
    keys: bool = False  # keys switch the view (the live dashboard on a terminal): a line says which


# -- figures as text ---------------------------------------------------------


def sparkline(values, scale: float) -> str:
    """``values`` as blocks ▁..█, where ▁ is 0 and █ is ``scale`` or more."""
    top = len(SPARKS) - 1
    return "".join(SPARKS[min(top, max(0, int(value / scale * top + 0.5)))] for value in values)



def format_duration(seconds: float) -> str:
    """h:mm:ss (hours grow as needed)."""
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def format_count(value: int | None) -> str:
    """A count in at most five characters: 0, 9999, 12.3k, 4.0M."""
    if value is None:
        return "-"
    if value < 10_000:
        return str(value)
    return format_rate(value)


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

