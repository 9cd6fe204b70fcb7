"""Watching a cluster's nodes: for the launcher that runs them, and from outside (--status, --attach).

* :func:`watch_nodes` is the process, on the launcher's own node, that
  subscribes to each node's meter and passes its reports and the nodes'
  downs to the launcher's thread through a queue; :func:`feed` hands them to
  the dashboard's model (termite_launcher.dashboard.ClusterView).
* :func:`status` reports on a running cluster, once or every N seconds
  (``--status --every N``, ``--count K`` times at most).
* :func:`attach` shows the live dashboard of a running cluster (one started
  with ``--detach``, or by a launcher in another terminal) until q or Ctrl-C,
  and leaves it running.  It follows the cluster's state file, which the
  cluster's launcher rewrites when a node exits or is restarted, so those
  show as they happen.

The node these work from is a *client* (``termite.Network(client=True)``):
when it leaves, the cluster's nodes log "client ... left", not a node down.
"""

from __future__ import annotations

import contextlib
import os
import queue
import sys
import threading
import time

import termite
from termite.console import serve_console

from termite_launcher.announce import readable
from termite_launcher.cluster import Cluster, NodeNews, launcher_host, read_state
from termite_launcher.config import ClusterConfig
from termite_launcher.dashboard import ClusterView, logging_to_events
from termite_launcher.exits import FAILED, OK

__all__ = ["attach", "client_network", "feed", "status", "view_of", "watch_nodes"]

REFRESH = 0.25  # seconds between dashboard frames
FOLLOW_EVERY = 1.0  # seconds between reads of the state file while attached
CONNECT_TIMEOUT = 3.0  # seconds a node of a running cluster gets to answer
QUIT_KEYS = b"qQ"


def client_network(config: ClusterConfig, **options) -> dict:
    """The network of a launcher's own node: a client of the cluster, with its keys and heartbeats."""
    return dict(
        host=launcher_host(config), port=0, keys=str(config.keys), client=True,
        heartbeat_interval=config.heartbeat_interval, heartbeat_timeout=config.heartbeat_timeout, **options,
    )  # fmt: skip


def view_of(config: ClusterConfig) -> ClusterView:
    return ClusterView(
        config.name, suspect_after=2.5 * config.meter_interval, unresponsive_after=config.heartbeat_timeout
    )


async def watch_nodes(nodes, interval, events):
    """Subscribe to every node's meter (``nodes``, those that come up, and those sent as ("watch", ref));
    pass reports ("load", Load) and downs ("down", node, reason) to the launcher's thread, and lines
    said anywhere in the cluster (``termite.say``) as ("said", Said)."""
    termite.spawn(serve_console, lambda said: events.put(("said", said)))
    termite.monitor_node(None)
    watched = set()

    def watch(ref):
        if ref not in watched:
            watched.add(ref)
            termite.subscribe_load(ref, interval)

    for ref in nodes:
        watch(ref)
    while True:
        msg = await termite.receive(termite.LOAD_REPORT, termite.NodeDown, termite.NodeUp, ("watch", termite.NodeRef))
        if msg.__class__ is termite.NodeDown:
            watched.discard(msg.node)
            events.put(("down", msg.node, msg.reason))
        elif msg.__class__ is termite.NodeUp:
            watch(msg.node)
        elif msg[0] == "watch":
            watch(msg[1])
        else:
            events.put(("load", msg[1]))


def feed(view: ClusterView, events: queue.SimpleQueue, at: float, cluster: Cluster | None = None, say=print) -> None:
    """Hand the queued events to ``view``; a node termite lost is told to ``cluster`` (which may end it)."""
    while True:
        try:
            event = events.get_nowait()
        except queue.Empty:
            break
        if event[0] == "load":
            view.report(event[1], at)
        elif event[0] == "down":
            grace = cluster.exit_grace(event[1]) if cluster is not None else None
            if grace is not None:
                cluster.held_downs[event[1]] = (event[2], at + grace)  # its own process: did it end?
                continue
            _lost(view, cluster, event[1], event[2], at, say)
        elif event[0] == "news":  # from the supervisor: an exit, a restart, or giving up
            news: NodeNews = event[1]
            news.show(view, at)
            say(news.text)
        elif event[0] == "said":  # termite.say, from a process of any node: printed, and an event
            view.said(event[1], at)
            print(event[1], flush=True)  # under the live dashboard, rich prints it above
        elif event[0] == "log":  # this process's own logging, while the live dashboard shows
            view.logged(event[1], at)
    for ref, (reason, until) in list(cluster.held_downs.items()) if cluster is not None else ():
        ended = cluster.exited(ref)
        if ended:  # its exit's news follows (or came), with the true reason, not "noconnection"
            del cluster.held_downs[ref]
        elif ended is None or at >= until:  # it runs on: stopped, stalled or cut off
            del cluster.held_downs[ref]
            _lost(view, cluster, ref, reason, at, say)
    view.tick(at)


def _lost(view: ClusterView, cluster: Cluster | None, ref, reason, at: float, say) -> None:
    view.lost(ref, at, reason)
    if cluster is not None and cluster.lost(ref, reason):
        say(f"node {ref.host}:{ref.port} lost its connection ({reason}): ending its ssh session to restart it")


def _ref(entry: dict) -> termite.NodeRef:
    host, port = entry["address"].rsplit(":", 1)
    return termite.NodeRef(host, int(port), int(entry["incarnation"], 16))


# -- --status -----------------------------------------------------------------------------


def status(config: ClusterConfig, *, plain: bool, every: float | None = None, count: int | None = None,
           say=print, processes: bool = False) -> int:
    """``--status``: how the running cluster is doing, once, or every ``every`` seconds (``count`` times at
    most; else until interrupted); with ``processes``, each node's busiest processes too (``--processes``).
    OK if every node is up at the last report, FAILED if not, or if the cluster is not running."""
    path = config.state_dir / f"{config.name}.json"
    if not path.exists():  # before a node of its own: that needs the cluster's key file
        say(f"cluster {config.name!r} is not running (no {path})")
        return FAILED
    shown = 0
    with termite.Node(**client_network(config)) as here:
        while True:
            try:
                state = read_state(path)
            except FileNotFoundError:
                say(f"cluster {config.name!r} is not running any more (no {path})")
                return FAILED
            healthy = _report(config, here, state, plain, processes)
            shown += 1
            if every is None or (count is not None and shown >= count):
                return OK if healthy else FAILED
            time.sleep(every)  # a signal ends it (Interrupted)


def _report(config: ClusterConfig, here: termite.Node, state: dict, plain: bool, processes: bool = False) -> bool:
    """Print one status of the cluster ``state`` describes; whether every node is up."""
    view = view_of(config)
    view.show(processes=processes)
    now = time.time()
    up = 0
    for node in state["nodes"]:
        host, port = node["address"].rsplit(":", 1)
        ref = _ref(node)
        view.expect(ref, node["label"], node["os_pid"], now, restarts=node.get("restarts", 0))
        try:
            ref = here.connect(host, int(port), timeout=CONNECT_TIMEOUT)
        except termite.Timeout:
            view.lost(ref, now, "does not answer")
            continue
        try:
            view.report(here.run(termite.node_load, ref), now)
            up += 1
        except termite.Timeout:  # connected, but its meter did not answer: busy, not down
            view.unresponsive(ref, now, "no load report within 5 s (busy, not down)")
    for node in state.get("down", ()):  # ended, and waiting to be restarted or given up on: why
        ref = _ref(node)
        view.expect(ref, node["label"], node["os_pid"], now, restarts=node.get("restarts", 0))
        (view.gave_up if node.get("state") == "failed" else view.exited)(ref, now, node["reason"])
    if sys.stdout.isatty() and not plain:
        from rich.console import Console

        Console().print(view.renderable(now))
    else:
        print("\n".join(view.plain_lines(now)), flush=True)
    return up == len(state["nodes"]) and not state.get("down")


# -- --attach -----------------------------------------------------------------------------


class _Following:
    """A running cluster's nodes as its state file lists them, kept in a ClusterView.

    A node is known by its log file, which stays the same when its launcher
    restarts it (at a new address); a new address is a restart, a node under
    ``down`` has exited (and waits to be restarted) or was given up on.
    """

    def __init__(self, view: ClusterView, here: termite.Node, watcher: termite.Pid, events: queue.SimpleQueue):
        self.view, self.here, self.watcher, self.events = view, here, watcher, events
        self.known: dict[str, tuple[termite.NodeRef, str | None]] = {}  # log -> (node, why down or None)

    def sync(self, state: dict, at: float) -> None:
        view = self.view
        for entry in state["nodes"]:
            ref, was = _ref(entry), self.known.get(entry["log"])
            if was is None:
                view.expect(ref, entry["label"], entry["os_pid"], at, restarts=entry.get("restarts", 0))
                self._connect(ref)
            elif was[0] != ref:
                view.restarted(was[0], ref, at, os_pid=entry["os_pid"])
                self._connect(ref)
            self.known[entry["log"]] = (ref, None)
        for entry in state.get("down", ()):
            ref, was, why = _ref(entry), self.known.get(entry["log"]), entry["reason"]
            if was is None:
                view.expect(ref, entry["label"], entry["os_pid"], at, restarts=entry.get("restarts", 0))
            if was is None or was[1] != why:
                (view.gave_up if entry.get("state") == "failed" else view.exited)(ref, at, why)
            self.known[entry["log"]] = (ref, why)

    def _connect(self, ref: termite.NodeRef) -> None:
        """Reach ``ref`` (on a thread of its own: one that does not answer must not hold the screen)."""

        def reach():
            try:
                self.here.connect(ref.host, ref.port, timeout=CONNECT_TIMEOUT)
                self.here.send(self.watcher, ("watch", ref))
            except termite.Timeout:
                self.events.put(("down", ref, f"does not answer within {CONNECT_TIMEOUT:g} s"))
            except Exception:  # noqa: BLE001 - the attach is ending (its node stopped): nothing to tell
                pass

        threading.Thread(target=reach, daemon=True, name=f"termite-attach-{ref.port}").start()


def attach(config: ClusterConfig, *, plain: bool, every: float, say=print) -> int:
    """``--attach``: the live dashboard of the running cluster until q or Ctrl-C (or, not in a terminal,
    plain lines every ``every`` seconds); the cluster runs on.  OK when quit or when the cluster was
    stopped meanwhile; FAILED if it is not running."""
    path = config.state_dir / f"{config.name}.json"
    try:
        state = read_state(path)
    except FileNotFoundError:
        say(f"cluster {config.name!r} is not running (no {path}); start it: termite-launch {config.path} --detach")
        return FAILED
    view = view_of(config)
    events: queue.SimpleQueue = queue.SimpleQueue()
    live = sys.stdout.isatty() and not plain
    with termite.Node(**client_network(config)) as here:
        watcher = here.spawn(watch_nodes, [], config.meter_interval, events)
        following = _Following(view, here, watcher, events)
        now = time.time()
        following.sync(state, now)
        leave = "press q or Ctrl-C to leave it" if live else "Ctrl-C to leave it"
        view.event(f"attached to {config.name!r} (launcher pid {state.get('launcher_pid')}): {leave}; it runs on", now)
        try:
            with _keys(live) as keys:
                ended = _follow(view, events, following, path, keys, live, every)
        except KeyboardInterrupt:
            say("left the dashboard; the cluster runs on")
            raise
    say(ended)
    return OK


def _follow(view, events, following: _Following, path, keys, live: bool, every: float) -> str:
    """Show the view until a quit key or the cluster's end; what to say then."""
    console = live_view = None
    if live:
        from rich.console import Console
        from rich.live import Live

        console = Console()
        live_view = Live(view.renderable(time.time()), console=console, refresh_per_second=4, screen=False)
        quiet = logging_to_events(lambda record: events.put(("log", record)))  # log lines into the events pane
        quiet.__enter__()
        live_view.start()
    next_read = time.monotonic()
    next_print = next_read + every  # or sooner, the first time: once every node has reported
    first = True
    try:
        while True:
            now = time.time()
            feed(view, events, now)
            if time.monotonic() >= next_read:
                next_read = time.monotonic() + FOLLOW_EVERY
                try:
                    state = read_state(path)
                except FileNotFoundError:
                    return "the cluster was stopped (its state file is gone)"
                except (OSError, ValueError):
                    state = None  # being written by an older launcher: read it next time
                if state is not None:
                    following.sync(state, now)
            if live_view is not None:
                live_view.update(view.renderable(now))
            elif time.monotonic() >= next_print or (first and all(row.state != "starting" for row in view.rows())):
                print("\n".join(view.plain_lines(now)), flush=True)
                next_print, first = time.monotonic() + every, False
            if _pressed(keys, REFRESH):
                return "left the dashboard; the cluster runs on"
    finally:
        if live_view is not None:
            live_view.stop()
            quiet.__exit__(None, None, None)


@contextlib.contextmanager
def _keys(live: bool):
    """stdin, read key by key (no echo, no Enter needed), while the dashboard is shown in a terminal;
    None if it is not a terminal.  Ctrl-C still sends SIGINT."""
    if not live or not sys.stdin.isatty():
        yield None
        return
    import termios
    import tty

    fd = sys.stdin.fileno()
    before = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    try:
        yield fd
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, before)


def _pressed(keys: int | None, wait: float) -> bool:
    """Wait ``wait`` seconds for a key; whether a quit key was pressed."""
    if keys is None:
        time.sleep(wait)  # the screen's frame rate
        return False
    if not readable(keys, wait):
        return False
    pressed = os.read(keys, 64)
    return not pressed or any(key in QUIT_KEYS for key in pressed)  # nothing: the terminal is gone
