"""termite-launch: start the cluster a cluster.yaml describes, watch it, run a job on it.

    termite-launch --init                           write a commented starter cluster.yaml here
    termite-launch cluster.yaml                     start it, show the dashboard; Ctrl-C stops it all
    termite-launch cluster.yaml --run job.py ARGS   the same while job.py runs; stops when it ends
    termite-launch cluster.yaml --detach            start it and leave it running (a launcher in the
                                                    background supervises it, logging to launcher.log)
    termite-launch cluster.yaml --attach            the live dashboard of a running cluster; q leaves it
    termite-launch cluster.yaml --status            how a running cluster is doing (--every N: repeat)
    termite-launch cluster.yaml --processes         the status, with each node's busiest processes
    termite-launch cluster.yaml --stop              stop it (its launcher first, which stops its nodes)
    termite-launch --kubernetes [--run job.py]      in a Kubernetes pod: its nodes, or a job on them
                                                    (termite_launcher.kubernetes; no cluster.yaml)
    termite-launch cluster.yaml --slurm ...         in a Slurm allocation (salloc, sbatch): one node per
                                                    allocated CPU, started with srun (as hosts: slurm)

A script finds the cluster it runs on with ``termite.Executor()`` (under
``--run``) or ``termite.Executor(cluster="cluster.yaml")``.  The exit
statuses are in termite_launcher.exits (and ``--help``).
"""

from __future__ import annotations

import argparse
import logging
import os
import queue
import sys
import time

import termite
from termite.executor import CLUSTER_ENVIRONMENT
from termite.node import add_log_flags, log_level

from termite_launcher.cluster import Cluster, LaunchError, already_running, running, stop_from_state
from termite_launcher.config import ClusterConfig, ConfigError, load
from termite_launcher.dashboard import ClusterView, Keys, logging_to_events
from termite_launcher.exits import EPILOG, FAILED, OK, USAGE, Interrupted, held, job_status, on_signals
from termite_launcher.job import Job, ScriptError, check_script
from termite_launcher.slurm import in_allocation
from termite_launcher.starter import write_starter
from termite_launcher.watch import REFRESH, attach, client_network, feed, status, view_of, watch_nodes

__all__ = ["main"]

PLAIN_EVERY = 5.0  # seconds between plain status lines when stdout is not a terminal


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds greater than 0, e.g. --every 2")
    return value


def _times(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of times, 1 or more, e.g. --count 3")
    return int(text)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="termite-launch",
        description="Start one termite node per core on every host of a cluster file, and watch them.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("cluster", nargs="?", default="cluster.yaml", help="the cluster file (default: cluster.yaml)")
    p.add_argument("--version", action="version", version=_version())
    what = p.add_mutually_exclusive_group()
    what.add_argument("--run", nargs=argparse.REMAINDER, metavar="SCRIPT", help="run SCRIPT [ARGS...] on the cluster, then stop")
    what.add_argument("--detach", action="store_true", help="start the cluster and leave it running")
    what.add_argument("--attach", action="store_true",
                      help="the live dashboard of a running cluster; q or Ctrl-C leaves it, and the cluster runs on")
    what.add_argument("--status", action="store_true", help="report on a running cluster (--every N: every N seconds)")
    what.add_argument("--stop", action="store_true", help="stop a running cluster (one started with --detach)")
    what.add_argument("--init", action="store_true",
                      help="write a commented starter cluster file (this machine, one node per core), never over one")
    p.add_argument("--kubernetes", action="store_true",
                   help="in a Kubernetes pod, set up by its environment (deploy/kubernetes/): run this pod's nodes, "
                        "found by their peers through the headless Service's DNS name; with --run, run SCRIPT on "
                        "the StatefulSet's nodes (termite_launcher.kubernetes)")
    p.add_argument("--slurm", action="store_true",
                   help="start the nodes in the Slurm allocation this runs in (salloc, an sbatch script), one per "
                        "allocated CPU, with srun, in place of the file's hosts (as hosts: slurm in the file)")
    what.add_argument("--processes", action="store_true", help="report on a running cluster and its busiest processes")
    p.add_argument("--plain", action="store_true", help="plain periodic lines instead of the live dashboard")
    p.add_argument("--every", type=_seconds, metavar="SECONDS",
                   help=f"seconds between plain status lines (default {PLAIN_EVERY:g}); with --status, repeat the "
                        "report this often until interrupted")
    p.add_argument("--count", type=_times, metavar="N", help="with --status --every: stop after N reports")
    add_log_flags(p)  # as a node's (python -m termite.node), and passed on to the nodes started
    return p


def _version() -> str:
    where = os.path.dirname(termite.__file__)
    return f"termite-launch {termite.__version__} from {where} (Python {sys.version.split()[0]})"


def _say(text: str) -> None:
    print(f"termite-launch: {text}", file=sys.stderr, flush=True)


def _still_stopping() -> None:
    _say("stopping the nodes already (each gets 10 s, then SIGKILL)")


def _init(path: str) -> int:
    """``--init``: the starter cluster file, unless there is a file there."""
    try:
        written = write_starter(path)
    except FileExistsError:
        _say(f"{path} exists already, and was left as it is: edit it, or give another file name, "
             f"e.g. termite-launch --init lab.yaml")
        return FAILED
    except OSError as exc:
        _say(f"cannot write {path}: {exc.strerror or exc}")
        return FAILED
    command = "termite-launch" + ("" if path == "cluster.yaml" else f" {path}")
    _say(f"wrote {written}: this machine, one node per core, and every other key commented; start it: {command}")
    return OK


def _detach(config: ClusterConfig, level: str) -> int:
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
        status = FAILED
        try:
            os.setsid()  # the terminal's hang-up and Ctrl-C are not for it
            status = _keep(config, level, ready_write)
        except LaunchError as exc:
            _say(str(exc))
        except termite.KeyFileError as exc:
            _say(f"the cluster key file: {exc}")
            status = USAGE
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
        return os.waitstatus_to_exitcode(status) or FAILED
    _say(said)
    _say(f"detached: launcher pid {pid} supervises it (log: {config.state_dir / 'logs' / config.name / 'launcher.log'}); "
         f"watch it: termite-launch {config.path} --attach; stop it: termite-launch {config.path} --stop")
    return OK


def _keep(config: ClusterConfig, level: str, ready: int) -> int:
    """The background launcher of ``--detach``: start, tell ``ready`` (a pipe), supervise until SIGTERM."""
    cluster = Cluster(config, log_level=level)
    _say(f"starting cluster {config.name!r} ({len(config.hosts)} host{'s' * (len(config.hosts) != 1)}); logs in {cluster.log_dir}")
    try:
        cluster.start(progress=_say)
        with termite.Node(**client_network(config)) as here:
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
        return OK
    finally:
        with held(_still_stopping):
            cluster.stop()


async def _losses(events):
    """A detached launcher's watch: only which nodes termite declares down (no load reports)."""
    termite.monitor_node(None)
    while True:
        msg = await termite.receive(termite.NodeDown)
        events.put(("down", msg.node, msg.reason))


def _run_cluster(config: ClusterConfig, args, level: str) -> int:
    """Start the cluster, show it (and run ``--run``'s job) until the job ends or a signal; then stop it."""
    cluster = Cluster(config, log_level=level)
    _say(f"starting cluster {config.name!r} ({len(config.hosts)} host{'s' * (len(config.hosts) != 1)}); logs in {cluster.log_dir}")
    cluster.start(progress=_say)
    job = None
    try:
        with termite.Node(**client_network(config)) as here:
            cluster.joined(here, config.join_timeout)
            _say(f"{len(cluster.nodes)} nodes up: " + ", ".join(node.address for node in cluster.nodes))
            view = view_of(config)
            start = time.monotonic()
            for node in cluster.nodes:
                view.expect(node.ref, node.label, node.os_pid, start)
            events: queue.SimpleQueue = queue.SimpleQueue()
            here.spawn(watch_nodes, [node.ref for node in cluster.nodes], config.meter_interval, events)
            cluster.supervise(here, lambda news: events.put(("news", news)))
            output = _Output(live=sys.stdout.isatty() and not args.plain)
            if args.run:
                env = dict(os.environ, **{CLUSTER_ENVIRONMENT: str(cluster.state_file)})
                job = Job(args.run, env, cluster.log_dir, output.show)
                view.event(f"running {' '.join(args.run)}", start)
            try:
                if output.live:
                    return _live(view, events, job, cluster, output)
                return _plain(view, events, job, cluster, args.every or PLAIN_EVERY)
            finally:
                if job is not None:
                    job.stop()
    finally:
        with held(_still_stopping):
            _say("stopping every node")
            cluster.stop()
        if job is not None:
            _say(f"the job's output (stdout, stderr) is saved in {job.where()}")


class _Output:
    """Where the job's output is shown: straight through, or (live) above the dashboard, line by line."""

    def __init__(self, live: bool):
        self.live = live
        self.chunks: queue.SimpleQueue = queue.SimpleQueue()  # live: (stream, bytes), from the job's readers
        self._partial = {"out": b"", "err": b""}

    def show(self, stream: str, data: bytes) -> None:
        if self.live:
            self.chunks.put((stream, data))
            return
        out = sys.stdout if stream == "out" else sys.stderr
        out.flush()  # what this process printed before comes first
        out.buffer.write(data)
        out.buffer.flush()

    def lines(self, final: bool = False) -> list[str]:
        """Live: the complete lines the job wrote since the last call (all that is left, if ``final``)."""
        done = []
        while True:
            try:
                stream, data = self.chunks.get_nowait()
            except queue.Empty:
                break
            text = self._partial[stream] + data
            cut = text.rfind(b"\n") + 1
            done.append(text[:cut])
            self._partial[stream] = text[cut:]
        if final:
            done.extend(self._partial.values())
            self._partial = {"out": b"", "err": b""}
        return [line.decode(errors="replace") for line in done if line]


def _live(view: ClusterView, events, job: Job | None, cluster: Cluster, output: _Output) -> int:
    from rich.console import Console
    from rich.live import Live

    console = Console()
    with logging_to_events(lambda record: events.put(("log", record))), Keys(view) as keys, \
            Live(view.renderable(time.monotonic()), console=console, refresh_per_second=4, screen=False) as live:
        while True:
            keys.poll()  # p: the process view; m, c: its order
            feed(view, events, time.monotonic(), cluster, _say)
            ended = job is not None and job.finished()
            for text in output.lines(final=ended):  # the job's output, printed above the dashboard
                live.console.print(text, end="" if text.endswith("\n") else "\n", markup=False, highlight=False)
            live.update(view.renderable(time.monotonic()))
            if ended:
                return job_status(job.wait())
            time.sleep(REFRESH)  # the screen's frame rate


def _plain(view: ClusterView, events, job: Job | None, cluster: Cluster, every: float) -> int:
    next_print = time.monotonic()
    while job is None or not job.finished():
        feed(view, events, time.monotonic(), cluster, _say)
        now = time.monotonic()
        if now >= next_print:
            print("\n".join(view.plain_lines(now)), flush=True)
            next_print = now + every
        time.sleep(REFRESH)
    feed(view, events, time.monotonic(), cluster, _say)
    print("\n".join(view.plain_lines(time.monotonic())), flush=True)
    return job_status(job.wait())


def _kubernetes(parser: argparse.ArgumentParser, args, level: str) -> int:
    """``--kubernetes``: the pod's settings come from its environment, not from a cluster file."""
    if args.detach or args.attach or args.status or args.stop or args.init or args.cluster != "cluster.yaml":
        parser.error("--kubernetes takes no cluster file and goes alone, or with --run SCRIPT (in a Job's pod)")
    from termite_launcher import kubernetes  # only here: a pod's launcher, not a workstation's

    on_signals()
    try:
        return kubernetes.main(args.run, level, _say)
    except LaunchError as exc:
        _say(str(exc))
        return FAILED
    except Interrupted as exc:
        return exc.status
    except termite.KeyFileError as exc:
        _say(f"the cluster key file: {exc}")
        return USAGE


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.run == []:
        parser.error("--run needs a script: termite-launch cluster.yaml --run job.py [ARGS...]")
    if args.count is not None and not (args.status and args.every):
        parser.error("--count goes with --status --every SECONDS, e.g. --status --every 2 --count 5")
    level = log_level(args)
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.init:
        return _init(args.cluster)
    if args.run:
        try:
            check_script(args.run)
        except ScriptError as exc:
            _say(str(exc))
            return USAGE
    if args.kubernetes:
        return _kubernetes(parser, args, level)
    try:
        config = load(args.cluster, slurm=args.slurm)
    except ConfigError as exc:
        _say(str(exc))
        return USAGE
    on_signals()
    try:
        if args.stop:
            stopped = stop_from_state(config, progress=_say)
            _say(f"stopped {stopped} node{'s' * (stopped != 1)} of {config.name!r}" if stopped else f"{config.name!r} was not running")
            return OK
        if args.status or args.processes:
            return status(config, plain=args.plain, every=args.every, count=args.count, say=_say,
                          processes=args.processes)
        if args.attach:
            return attach(config, plain=args.plain, every=args.every or PLAIN_EVERY, say=_say)
        state = running(config)
        if state is not None:  # say so now, not after "starting cluster"
            _say(already_running(config, state))
            return FAILED
        if config.slurm is not None:
            try:
                config = in_allocation(config)  # its hosts, or what to do outside an allocation, before anything starts
            except ConfigError as exc:
                _say(str(exc))
                return USAGE
        return _detach(config, level) if args.detach else _run_cluster(config, args, level)
    except LaunchError as exc:
        _say(str(exc))
        return FAILED
    except Interrupted as exc:
        return exc.status
    except KeyboardInterrupt:  # before the handlers were in place: Ctrl-C
        return 130
    except termite.KeyFileError as exc:
        _say(f"the cluster key file: {exc}")
        return USAGE


if __name__ == "__main__":
    sys.exit(main())
