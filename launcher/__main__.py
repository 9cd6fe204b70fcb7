"""termite-launch: start the cluster a cluster.yaml describes, watch it, run a job on it.

    termite-launch cluster.yaml                     start it, show the dashboard; Ctrl-C stops it all
    termite-launch cluster.yaml --run job.py ARGS   the same while job.py runs; stops when it ends
    termite-launch cluster.yaml --detach            start it and leave it running (a launcher in the
                                                    background supervises it, logging to launcher.log)
    termite-launch cluster.yaml --status            how a running cluster is doing
    termite-launch cluster.yaml --processes         the same, with each node's busiest processes
    termite-launch cluster.yaml --stop              stop it (its launcher first, which stops its nodes)

A script finds the cluster it runs on with ``termite.Executor()`` (under
``--run``) or ``termite.Executor(cluster="cluster.yaml")``.
"""

from __future__ import annotations

import argparse
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import termite
from termite.console import serve_console
from termite.executor import CLUSTER_ENVIRONMENT

from termite_launcher.cluster import Cluster, LaunchError, NodeNews, launcher_host, read_state, stop_from_state
from termite_launcher.config import ClusterConfig, ConfigError, load
from termite_launcher.dashboard import ClusterView, Keys, logging_to_events

__all__ = ["main"]

PLAIN_EVERY = 5.0  # seconds between plain status lines when stdout is not a terminal
REFRESH = 0.25  # seconds between dashboard frames


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="termite-launch",
        description="Start one termite node per core on every host of a cluster file, and watch them.",
    )
    p.add_argument("cluster", nargs="?", default="cluster.yaml", help="the cluster file (default: cluster.yaml)")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--run", nargs=argparse.REMAINDER, metavar="SCRIPT", help="run SCRIPT [ARGS...] on the cluster, then stop")
    what.add_argument("--detach", action="store_true", help="start the cluster and leave it running")
    what.add_argument("--status", action="store_true", help="report on a running cluster")
    what.add_argument("--stop", action="store_true", help="stop a running cluster (one started with --detach)")
    what.add_argument("--processes", action="store_true", help="report on a running cluster and its busiest processes")
    p.add_argument("--plain", action="store_true", help="plain periodic lines instead of the live dashboard")
    p.add_argument("--every", type=float, default=PLAIN_EVERY, metavar="SECONDS",
                   help=f"seconds between plain status lines (default {PLAIN_EVERY:g})")
    return p


def _say(text: str) -> None:
    print(f"termite-launch: {text}", file=sys.stderr, flush=True)


async def _watch(nodes, interval, events):
    """Subscribe to every node's meter; pass reports and node events to the launcher's thread."""
    termite.spawn(serve_console, lambda said: events.put(("said", said)))  # termite.say prints here
    termite.monitor_node(None)
    for ref in nodes:
        termite.subscribe_load(ref, interval)
    while True:
        msg = await termite.receive(termite.LOAD_REPORT, termite.NodeDown, termite.NodeUp)
        if msg.__class__ is termite.NodeDown:
            events.put(("down", msg.node, msg.reason))
        elif msg.__class__ is termite.NodeUp:
            termite.subscribe_load(msg.node, interval)
        else:
            events.put(("load", msg[1]))


def _feed(view: ClusterView, events: queue.SimpleQueue, cluster: Cluster | None = None) -> None:
    now = time.monotonic()
    while True:
        try:
            event = events.get_nowait()
        except queue.Empty:
            break
        if event[0] == "load":
            view.report(event[1], now)
        elif event[0] == "down":
            view.lost(event[1], now, event[2])
            if cluster is not None and cluster.lost(event[1], event[2]):
                _say(f"node {event[1].host}:{event[1].port} lost its connection ({event[2]}): "
                     "ending its ssh session to restart it")
        elif event[0] == "news":  # from the supervisor: an exit, a restart, or giving up
            news: NodeNews = event[1]
            news.show(view, now)
            _say(news.text)
        elif event[0] == "said":  # termite.say, from a process of any node: printed, and an event
            view.said(event[1], now)
            print(event[1], flush=True)  # under the live dashboard, rich prints it above
        elif event[0] == "log":  # this process's own logging, while the live dashboard shows
            view.logged(event[1], now)
    view.tick(now)


async def _losses(events):
    """A detached launcher's watch: only which nodes termite declares down (no load reports)."""
    termite.monitor_node(None)
    while True:
        msg = await termite.receive(termite.NodeDown)
        events.put(("down", msg.node, msg.reason))


def _detach(config: ClusterConfig) -> int:
    """``--detach``: a launcher of its own, in the background, starts the cluster and stays to supervise it.

    This process returns once the cluster is up (or failed to start: then
    with the background one's status).  The background launcher leaves the
    terminal's session, writes to ``<logs>/launcher.log`` once the cluster is
    up, and stops every node on SIGTERM (``--stop`` sends it).  Forked before
    anything starts a thread.
    """
    ready_read, ready_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(ready_read)
        status = 1
        try:
            os.setsid()  # the terminal's hang-up and Ctrl-C are not for it
            status = _keep(config, ready_write)
        except LaunchError as exc:
            _say(str(exc))
        except termite.KeyFileError as exc:
            _say(f"the cluster key file: {exc}")
            status = 2
        except BaseException:  # noqa: BLE001 - said, then this process ends: it must never return into main()
            import traceback

            traceback.print_exc()
        finally:
            os._exit(status)
    os.close(ready_write)
    with os.fdopen(ready_read, "rb") as ready:
        said = ready.read().decode(errors="replace")  # until the background launcher is up, or has ended
    if not said:
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status) or 1
    _say(said)
    _say(f"detached: launcher pid {pid} supervises it (log: {config.state_dir / 'logs' / config.name / 'launcher.log'}); "
         f"status: termite-launch {config.path} --status; stop: termite-launch {config.path} --stop")
    return 0


def _keep(config: ClusterConfig, ready: int) -> int:
    """The background launcher of ``--detach``: start, tell ``ready`` (a pipe), supervise until SIGTERM."""
    cluster = Cluster(config)
    _say(f"starting cluster {config.name!r} ({len(config.hosts)} host{'s' * (len(config.hosts) != 1)}); logs in {cluster.log_dir}")
    try:
        cluster.start(progress=_say)
        network = dict(
            host=launcher_host(config), port=0, keys=str(config.keys),
            heartbeat_interval=config.heartbeat_interval, heartbeat_timeout=config.heartbeat_timeout,
        )  # fmt: skip
        with termite.Node(**network) as here:
            cluster.joined(here, config.join_timeout)
            events: queue.SimpleQueue = queue.SimpleQueue()
            here.spawn(_losses, events)
            cluster.supervise(here, lambda news: events.put(("news", news)))
            # From now on it speaks to its log: whoever ran --detach (a terminal, a pipe) is not waited on.
            with open(cluster.log_dir / "launcher.log", "ab") as log, open(os.devnull, "rb") as nothing:
                os.dup2(nothing.fileno(), 0)
                os.dup2(log.fileno(), 1)
                os.dup2(log.fileno(), 2)
            os.write(ready, f"{len(cluster.nodes)} nodes up: {', '.join(node.address for node in cluster.nodes)}".encode())
            os.close(ready)
            _say(f"{len(cluster.nodes)} nodes up, supervised by pid {os.getpid()}")
            while True:
                try:
                    event = events.get(timeout=1.0)  # woken by news; the timeout only lets SIGTERM in
                except queue.Empty:
                    continue
                if event[0] == "news":
                    _say(event[1].text)
                elif cluster.lost(event[1], event[2]):
                    _say(f"node {event[1].host}:{event[1].port} lost its connection ({event[2]}): "
                         "ending its ssh session to restart it")
    except KeyboardInterrupt:  # SIGTERM: --stop
        _say("stopping every node")
        return 0
    finally:
        cluster.stop()


def _run_cluster(config: ClusterConfig, args) -> int:
    cluster = Cluster(config)
    _say(f"starting cluster {config.name!r} ({len(config.hosts)} host{'s' * (len(config.hosts) != 1)}); logs in {cluster.log_dir}")
    cluster.start(progress=_say)
    network = dict(
        host=launcher_host(config), port=0, keys=str(config.keys),
        heartbeat_interval=config.heartbeat_interval, heartbeat_timeout=config.heartbeat_timeout,
    )  # fmt: skip
    try:
        with termite.Node(**network) as here:
            cluster.joined(here, config.join_timeout)
            _say(f"{len(cluster.nodes)} nodes up: " + ", ".join(node.address for node in cluster.nodes))
            return _watch_and_run(config, cluster, here, args)
    finally:
        _say("stopping every node")
        cluster.stop()


def _watch_and_run(config: ClusterConfig, cluster: Cluster, here: termite.Node, args) -> int:
    view = ClusterView(
        config.name, suspect_after=2.5 * config.meter_interval, unresponsive_after=config.heartbeat_timeout
    )
    start = time.monotonic()
    for node in cluster.nodes:
        view.expect(node.ref, node.label, node.os_pid, start)
    events: queue.SimpleQueue = queue.SimpleQueue()
    here.spawn(_watch, [node.ref for node in cluster.nodes], config.meter_interval, events)
    cluster.supervise(here, lambda news: events.put(("news", news)))
    live = sys.stdout.isatty() and not args.plain
    job = None
    if args.run:
        env = dict(os.environ, **{CLUSTER_ENVIRONMENT: str(cluster.state_file)})
        job = subprocess.Popen([sys.executable, *args.run], env=env, stdout=subprocess.PIPE if live else None, text=True)
        view.event(f"running {' '.join(args.run)}", start)
    try:
        return _live(view, events, job, cluster) if live else _plain(view, events, job, args.every, cluster)
    except KeyboardInterrupt:
        if job is None:
            return 0  # Ctrl-C is how a watched cluster is stopped
        raise
    finally:
        if job is not None and job.poll() is None:
            job.terminate()
            try:
                job.wait(10)
            except subprocess.TimeoutExpired:
                job.kill()
                job.wait()


def _live(view: ClusterView, events, job, cluster: Cluster) -> int:
    from rich.console import Console
    from rich.live import Live

    console = Console()
    lines: queue.SimpleQueue = queue.SimpleQueue()
    if job is not None:  # the job's output, printed above the dashboard
        threading.Thread(target=lambda: [lines.put(line) for line in job.stdout], daemon=True).start()
    with logging_to_events(lambda record: events.put(("log", record))), Keys(view) as keys, \
            Live(view.renderable(time.monotonic()), console=console, refresh_per_second=4, screen=False) as live:
        while True:
            keys.poll()  # p: the process view; m, c: its order
            _feed(view, events, cluster)
            while True:
                try:
                    live.console.print(lines.get_nowait(), end="", markup=False, highlight=False)
                except queue.Empty:
                    break
            live.update(view.renderable(time.monotonic()))
            if job is not None and job.poll() is not None and lines.empty():
                break
            time.sleep(REFRESH)  # the screen's frame rate
    return job.returncode if job is not None else 0


def _plain(view: ClusterView, events, job, every: float, cluster: Cluster) -> int:
    next_print = time.monotonic()
    while True:
        _feed(view, events, cluster)
        now = time.monotonic()
        if now >= next_print:
            print("\n".join(view.plain_lines(now)), flush=True)
            next_print = now + every
        if job is not None and job.poll() is not None:
            break
        time.sleep(REFRESH)
    _feed(view, events, cluster)
    print("\n".join(view.plain_lines(time.monotonic())), flush=True)
    return job.returncode


def _status(config: ClusterConfig, args) -> int:
    path = config.state_dir / f"{config.name}.json"
    if not path.exists():
        _say(f"cluster {config.name!r} is not running (no {path})")
        return 1
    state = read_state(path)
    view = ClusterView(
        config.name, suspect_after=2.5 * config.meter_interval, unresponsive_after=config.heartbeat_timeout
    )
    view.show(processes=args.processes)  # --processes
    now = time.monotonic()
    network = dict(host=launcher_host(config), port=0, keys=str(config.keys))
    up = 0
    with termite.Node(**network) as here:
        for node in state["nodes"]:
            host, port = node["address"].rsplit(":", 1)
            try:
                ref = here.connect(host, int(port), timeout=3)
            except termite.Timeout:
                ref = termite.NodeRef(host, int(port), int(node["incarnation"], 16))
                view.expect(ref, node["label"], node["os_pid"], now, restarts=node.get("restarts", 0))
                view.lost(ref, now, "does not answer")
                continue
            view.expect(ref, node["label"], node["os_pid"], now, restarts=node.get("restarts", 0))
            try:
                view.report(here.run(termite.node_load, ref), now)
                up += 1
            except termite.Timeout:  # connected, but its meter did not answer: busy, not down
                view.unresponsive(ref, now, "no load report within 5 s (busy, not down)")
        for node in state.get("down", ()):  # ended, and waiting to be restarted or given up on: why
            host, port = node["address"].rsplit(":", 1)
            ref = termite.NodeRef(host, int(port), int(node["incarnation"], 16))
            view.expect(ref, node["label"], node["os_pid"], now, restarts=node.get("restarts", 0))
            (view.gave_up if node.get("state") == "failed" else view.exited)(ref, now, node["reason"])
    if sys.stdout.isatty() and not args.plain:
        from rich.console import Console

        Console().print(view.renderable(now))
    else:
        print("\n".join(view.plain_lines(now)))
    return 0 if up == len(state["nodes"]) and not state.get("down") else 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.run == []:
        _parser().error("--run needs a script: termite-launch cluster.yaml --run job.py [ARGS...]")
    try:
        config = load(args.cluster)
    except ConfigError as exc:
        print(f"termite-launch: {exc}", file=sys.stderr)
        return 2
    if args.stop:
        stopped = stop_from_state(config, progress=_say)
        _say(f"stopped {stopped} node{'s' * (stopped != 1)} of {config.name!r}" if stopped else f"{config.name!r} was not running")
        return 0
    if args.status or args.processes:
        return _status(config, args)

    def terminate(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    try:
        return _detach(config) if args.detach else _run_cluster(config, args)
    except LaunchError as exc:
        _say(str(exc))
        return 1
    except KeyboardInterrupt:
        return 130
    except termite.KeyFileError as exc:
        _say(f"the cluster key file: {exc}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
