"""How a cluster's cost per node grows with its size, and what 1,000 nodes would cost.

``scale`` starts 8, 16, 32 and 64 nodes on this host (``--quick``: 4 and 8),
each ``python -m termite.node`` with a cluster key (CURVE, as the launcher
runs them) and cluster.yaml's default heartbeats (every 0.5 s, down after
3 s), all launched at once.  The benchmark's own node is a client
(``Network(client=True)``) connected to every node, as the launcher's is.
Then every node connects to every other (``termite.connect``; each node to
its peers one after another, all nodes at once): the full mesh that nodes
talking to each other end up in.

Three phases follow, each measured over ``WINDOW`` seconds on every node:

- ``idle``: the mesh, nothing running: heartbeats only.
- ``client meters``: the client subscribes to every node's load meter every
  second (the launcher's dashboard) and starts a dispatcher (an Executor's),
  which subscribes too: two reports a second from each node to the client.
- ``all dispatch``: besides, every node starts a dispatcher (as a node does
  on its first ``termite.dispatch``, or a supervisor placing children by
  load), which subscribes to the meter of every node it is connected to.

Per node, the median over the nodes of: CPU (the time its threads ran over
the window, in % of one core), the traffic of its TCP connections
(bytes and data segments sent, from ``ss -ti``: termite's heartbeats and
ZMTP's PING/PONG included, both of which termite's own counters skip), the
frames and bytes termite's transport counted (``TransportStats``: no
heartbeats; messages to one node in one turn go as one frame), RSS and USS,
open file descriptors and TCP connections.  Each node reads its own
counters and CPU time with the moment it read them, as asking 64 busy
nodes takes seconds.  Last, what each node's dispatcher may send work
to (the client among them: ``client=True`` does not keep it out).
Joining: from launch until every node announced itself (``start``), and
from the moment every node is told to connect until every node has every
other up (``join``), with the CPU every node spent on it.

Every per-node figure is then fitted against the number of peers a node has,
``figure = a + b * peers`` by least squares, and projected to 1,000 nodes
(999 peers).  The client's side (the reports it receives) is fitted against
the number of nodes.

Last, the wall: one node (a hub) connects to one peer after another until a
connection fails, with this host's open-file limit and with 1,024 (a common
default).  Its peers are nodes run 30 to a process (``host_peers``), as
many interpreters would not fit here.

``python -m benchmarks.scale_table RESULTS.json`` prints a run's figures as
docs/scale.md shows them (``summary``).
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

import termite
from benchmarks._result import ROOT, Result, median

SIZES = {False: (8, 16, 32, 64), True: (4, 8)}
WINDOW = {False: 10.0, True: 2.0}  # seconds each phase is measured over
SETTLE = {False: 3.0, True: 1.0}  # seconds after a change before its window starts (first reports, syncs)
PROJECT_TO = 1000  # nodes
HOST = "127.0.0.1"
HEARTBEAT_INTERVAL, HEARTBEAT_TIMEOUT = 0.5, 3.0  # cluster.yaml's defaults
METER_INTERVAL = 1.0  # cluster.yaml's meter_interval, and the dispatcher's default
CONNECT_TIMEOUT = 30.0  # seconds one termite.connect of the mesh may take
ASK_TIMEOUT = 30.0  # seconds the nodes get to answer a census
PHASES = ("idle", "client meters", "all dispatch")


def start_timeout(count: int) -> float:
    """Seconds ``count`` nodes get to announce themselves (about a CPU-second each, on 2 busy cores)."""
    return 60 + 3 * count


def join_timeout(count: int) -> float:
    """Seconds the mesh of ``count`` nodes gets to form (its work grows as count squared on one host)."""
    return 60 + count * count / 8


def lifetime(count: int) -> float:
    """Seconds a node lives at most: it exits by itself if this benchmark died without stopping it."""
    return 300 + start_timeout(count) + join_timeout(count)


# -- what runs on the nodes (importable, so it travels by reference) ----------


async def _mesh(peers, reply_to, timeout):
    """Connect to every peer, one after another; tell ``reply_to`` how long it took and which failed.

    One at a time, as a program connecting to its peers would: all nodes do so
    at once, so 64 nodes on 2 cores already make 32 handshakes per core at a
    time (every connect of every node at once, 2,000 per core, timed out).
    """
    start = time.perf_counter()
    failed = []
    for host, port in peers:
        try:
            await termite.connect(host, port, timeout=timeout)
        except termite.Timeout as exc:
            failed.append(str(exc))
    termite.send(reply_to, ("meshed", termite.current_node(), time.perf_counter() - start, failed))


async def _census(reply_to, tag):
    """This node's counters, read at one moment: its CPU time, what its transport counted, its peers."""
    from termite._core.process import current

    stats = current().table.remote.transport.stats
    termite.send(reply_to, (tag, {
        "os_pid": os.getpid(),
        "at": time.monotonic(),  # one clock for every process of this host
        "cpu": _cpu_seconds(os.getpid()),
        "peers": len(termite.nodes()),
        "frames_in": stats.frames_in,
        "frames_out": stats.frames_out,
        "bytes_in": stats.bytes_in,  # the transport counts bytes received only
    }))  # fmt: skip


async def _dispatch_view(reply_to, tag, client):
    """What this node's dispatcher knows: the nodes it may send work to, and whether the client is one."""
    loads = await termite.loads(timeout=ASK_TIMEOUT)
    termite.send(reply_to, (tag, {
        "os_pid": os.getpid(),
        "dispatch_targets": len(loads),
        "reported": sum(load is not None for load in loads.values()),
        "client_is_a_target": client in loads,
    }))  # fmt: skip


async def _dispatch_here(reply_to, tag, interval):
    """Start this node's dispatcher: it subscribes to every connected node's meter."""
    termite.start_dispatcher(interval=interval)
    termite.send(reply_to, (tag, len(termite.nodes())))


# -- what runs on the client node (the benchmark's) ---------------------------


async def _connect_all(addresses, timeout):
    return [await termite.connect(host, port, timeout=timeout) for host, port in addresses]


async def _join(refs, timeout):
    """Tell every node to connect to every other; wait until each says all are up: (seconds, failures)."""
    me, start = termite.self(), time.perf_counter()
    addresses = [(ref.host, ref.port) for ref in refs]
    for ref in refs:
        termite.spawn(_mesh, [a for a in addresses if a != (ref.host, ref.port)], me, CONNECT_TIMEOUT, node=ref)
    failures = []
    for done in range(len(refs)):
        left = timeout - (time.perf_counter() - start)
        msg = await termite.receive(("meshed", termite.NodeRef, float, list), timeout=max(0.0, left), default=None)
        if msg is None:
            raise RuntimeError(f"{done} of {len(refs)} nodes joined the mesh within {timeout:.0f} s")
        failures += [f"{msg[1]}: {why}" for why in msg[3]]
    return time.perf_counter() - start, failures


async def _ask_all(refs, fn, *args):
    """Run ``fn(reply_to, tag, *args)`` on every node; the answers, in no order."""
    me, tag = termite.self(), termite.make_tag()
    for ref in refs:
        termite.spawn(fn, me, tag, *args, node=ref)
    answers = []
    for _ in refs:
        msg = await termite.receive((tag, termite.ANY), timeout=ASK_TIMEOUT, default=None)
        if msg is None:
            raise RuntimeError(f"{len(answers)} of {len(refs)} nodes answered {fn.__name__} "
                               f"within {ASK_TIMEOUT:.0f} s")
        answers.append(msg[1])
    return answers


async def _watch_loads(refs, interval):
    """The launcher's dashboard, as far as the nodes see it: subscribed to every meter, reading the reports."""
    for ref in refs:
        termite.subscribe_load(ref, interval)
    while True:  # until the client node stops
        await termite.receive(termite.LOAD_REPORT)


def _client_meters(interval):
    """On the client: an Executor's dispatcher (it subscribes to every connected node's meter)."""
    termite.start_dispatcher(interval=interval)


def _client_stats():
    from termite._core.process import current

    stats = current().table.remote.transport.stats
    return {"frames_in": stats.frames_in, "frames_out": stats.frames_out, "bytes_in": stats.bytes_in}


# -- the node processes -------------------------------------------------------


# ``python -m MODULE ARGS...`` that exits by itself after argv[1] seconds, even
# if the benchmark that should stop it died first.
_BOUNDED = """\
import os, runpy, sys, threading
timer = threading.Timer(float(sys.argv[1]), os._exit, (3,))
timer.daemon = True
timer.start()
sys.argv = sys.argv[2:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


def _env() -> dict:
    """The children's environment: they import ``benchmarks`` (functions travel by reference)."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))


def _stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM to all at once, then wait for each (SIGKILL after 10 s)."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        proc.stdout.close()


@contextlib.contextmanager
def _node_processes(count: int, keyfile: str, logs: Path, open_files: int | None = None):
    """Launch ``count`` nodes at once; yield ``[(Popen, NodeRef)]`` once all announced; stop them all by pid.

    ``open_files``: their soft limit of open files (None: this host's).
    """
    argv = ["--host", HOST, "--port", "0", "--keys", keyfile, "--heartbeat-interval", str(HEARTBEAT_INTERVAL),
            "--heartbeat-timeout", str(HEARTBEAT_TIMEOUT)]  # fmt: skip
    procs: list[subprocess.Popen] = []
    try:
        for i in range(count):
            with open(logs / f"node-{i}.log", "wb") as log:  # the child keeps its own descriptor
                procs.append(subprocess.Popen(
                    [sys.executable, "-u", "-c", _BOUNDED, str(lifetime(count)), "termite.node", *argv],
                    stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, cwd=ROOT, env=_env(),
                    preexec_fn=None if open_files is None else _limit_open_files(open_files),
                ))  # fmt: skip
        refs: dict[int, termite.NodeRef] = {}
        waiting = {proc.stdout: i for i, proc in enumerate(procs)}
        deadline = time.monotonic() + start_timeout(count)
        while waiting:
            left = deadline - time.monotonic()
            ready = select.select(list(waiting), [], [], max(0.0, left))[0] if left > 0 else []
            if not ready:
                started = count - len(waiting)
                raise RuntimeError(f"{started} of {count} nodes started within {start_timeout(count):.0f} s"
                                   + _log_tail(logs, next(iter(waiting.values()))))
            for stream in ready:
                i = waiting.pop(stream)
                line = stream.readline().decode(errors="replace")
                if not line.startswith("termite node "):
                    raise RuntimeError(f"node {i} did not start: {line!r}" + _log_tail(logs, i))
                _, _, address, _, incarnation = line.split()
                host, port = address.rsplit(":", 1)
                refs[i] = termite.NodeRef(host, int(port), int(incarnation, 16))
        yield [(proc, refs[i]) for i, proc in enumerate(procs)]
    finally:
        _stop(procs)


def _limit_open_files(limit: int):
    """A preexec_fn: the child may open ``limit`` files, soft and hard, as ``ulimit -n`` sets them (a node
    raises its soft limit to the hard one)."""

    def apply():
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return apply


def _log_tail(logs: Path, i: int, kind: str = "node") -> str:
    with contextlib.suppress(OSError):
        text = (logs / f"{kind}-{i}.log").read_text(errors="replace")[-2000:]
        return f"\n{kind} {i}'s log ends:\n{text}" if text else f"\n{kind} {i}'s log is empty"
    return ""


# -- measuring ----------------------------------------------------------------

_SS_FIGURES = {
    name: re.compile(rf"\b{name}:(\d+)") for name in ("bytes_sent", "bytes_received", "data_segs_out", "data_segs_in")
}
_SS_PID = re.compile(r"pid=(\d+),")


def tcp_counters(pids) -> dict[int, dict[str, int]] | None:
    """Per process of ``pids``: its established TCP connections and the totals of their counters (``ss -ti``).

    None where ``ss`` (iproute2) is not installed.
    """
    if shutil.which("ss") is None:
        return None
    out = subprocess.run(["ss", "-tinpH", "state", "established"], capture_output=True, text=True, timeout=60,
                         check=True).stdout
    wanted = set(pids)
    totals = {pid: dict.fromkeys(["connections", *_SS_FIGURES], 0) for pid in wanted}
    owner = None
    for line in out.splitlines():
        if not line[:1].isspace():  # a connection's first line: its addresses and its process
            found = _SS_PID.search(line)
            owner = int(found[1]) if found and int(found[1]) in wanted else None
            if owner is not None:
                totals[owner]["connections"] += 1
        elif owner is not None:  # its counters
            for name, pattern in _SS_FIGURES.items():
                found = pattern.search(line)
                if found:
                    totals[owner][name] += int(found[1])
    return totals


def _cpu_seconds(pid: int) -> float:
    """The CPU time process ``pid`` has used, all its threads (zmq's I/O threads too).

    From the scheduler's nanosecond counters where Linux has them: the
    clock-tick ones (``psutil.cpu_times``, 10 ms) are too coarse for an idle
    node over a short window.
    """
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
        total = 0
        for task in tasks:
            with contextlib.suppress(FileNotFoundError):  # a thread that ended meanwhile
                with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                    total += int(f.read().split()[0])
        return total / 1e9
    except (FileNotFoundError, NotADirectoryError, ValueError, IndexError):
        times = psutil.Process(pid).cpu_times()
        return times.user + times.system


def _tcp_snapshot(pids) -> tuple[float, dict | None]:
    """``tcp_counters(pids)`` and when they were read (the middle of the ``ss`` run)."""
    start = time.monotonic()
    counters = tcp_counters(pids)
    return (start + time.monotonic()) / 2, counters


def _snapshot(here, pids, refs) -> dict:
    """Every counter of every node.  Each node reads its own with the time it read them, as
    asking 64 busy nodes takes seconds; the TCP counters are read for all at once."""
    census = here.run(_ask_all, refs, _census, timeout=ASK_TIMEOUT + 10)
    tcp_at, tcp = _tcp_snapshot(pids)
    return {
        "census": {c["os_pid"]: c for c in census},
        "tcp_at": tcp_at,
        "tcp": tcp,
        "client": here.run(_client_stats),
        "client_at": time.monotonic(),
        "client_cpu": _cpu_seconds(os.getpid()),
    }


def _memory(pids) -> dict[int, dict]:
    figures = {}
    for pid in pids:
        process = psutil.Process(pid)
        full = process.memory_full_info()
        figures[pid] = {"rss": full.rss, "uss": full.uss, "fds": process.num_fds()}
    return figures


def _window(here, pids, refs, seconds) -> dict:
    """Rates per node over ``seconds`` of what runs now, and its memory at the end."""
    before = _snapshot(here, pids, refs)
    time.sleep(seconds)  # the window measured: nothing to wait for, only time to let pass
    after = _snapshot(here, pids, refs)
    memory = _memory(pids)
    tcp_span = after["tcp_at"] - before["tcp_at"]
    nodes = []
    for pid in pids:
        c0, c1 = before["census"][pid], after["census"][pid]
        span = c1["at"] - c0["at"]
        node = {
            "os_pid": pid,
            "seconds": span,
            "peers": c1["peers"],
            "cpu_pct": 100 * (c1["cpu"] - c0["cpu"]) / span,
            "frames_out_ps": (c1["frames_out"] - c0["frames_out"]) / span,
            "frames_in_ps": (c1["frames_in"] - c0["frames_in"]) / span,
            "bytes_in_ps": (c1["bytes_in"] - c0["bytes_in"]) / span,
            **memory[pid],
        }
        if after["tcp"] is not None:
            t0, t1 = before["tcp"][pid], after["tcp"][pid]
            node.update(
                tcp_connections=t1["connections"],
                wire_out_bps=max(0, t1["bytes_sent"] - t0["bytes_sent"]) / tcp_span,
                wire_in_bps=max(0, t1["bytes_received"] - t0["bytes_received"]) / tcp_span,
                segs_out_ps=max(0, t1["data_segs_out"] - t0["data_segs_out"]) / tcp_span,
                segs_in_ps=max(0, t1["data_segs_in"] - t0["data_segs_in"]) / tcp_span,
            )
        nodes.append(node)
    k0, k1 = before["client"], after["client"]
    client_span = after["client_at"] - before["client_at"]
    return {
        "seconds": median([node["seconds"] for node in nodes]),
        "tcp_seconds": tcp_span,
        "nodes": nodes,
        "client": {
            "frames_in_ps": (k1["frames_in"] - k0["frames_in"]) / client_span,
            "bytes_in_ps": (k1["bytes_in"] - k0["bytes_in"]) / client_span,
            "cpu_pct": 100 * (after["client_cpu"] - before["client_cpu"]) / client_span,
        },
    }


def measure_size(count: int, quick: bool) -> dict:
    """Start ``count`` nodes, mesh them, measure the three phases; everything stopped at the end."""
    window, settle = WINDOW[quick], SETTLE[quick]
    figures = {"nodes": count, "load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="termite-scale-") as tmp:
        keyfile = os.path.join(tmp, "cluster.key")
        termite.generate_keys(keyfile)
        launched = time.perf_counter()
        with _node_processes(count, keyfile, Path(tmp)) as started:
            figures["start_s"] = time.perf_counter() - launched
            pids = [proc.pid for proc, _ in started]
            refs = [ref for _, ref in started]
            with termite.Node(host=HOST, port=0, keys=keyfile, client=True, heartbeat_interval=HEARTBEAT_INTERVAL,
                              heartbeat_timeout=HEARTBEAT_TIMEOUT) as here:
                client = here.ref
                here.run(_connect_all, [(r.host, r.port) for r in refs], CONNECT_TIMEOUT,
                         timeout=CONNECT_TIMEOUT * count)
                cpu_before = sum(_cpu_seconds(pid) for pid in pids)
                figures["join_s"], failures = here.run(_join, refs, join_timeout(count),
                                                       timeout=join_timeout(count) + 10)
                figures["join_cpu_s"] = (sum(_cpu_seconds(pid) for pid in pids) - cpu_before) / count
                if failures:
                    raise RuntimeError(f"{len(failures)} connections of the mesh failed, e.g. {failures[:3]}")
                time.sleep(settle)  # the joins' aftermath (name and group syncs) out of the window
                phases = {}
                phases["idle"] = _window(here, pids, refs, window)
                here.spawn(_watch_loads, refs, METER_INTERVAL)
                here.run(_client_meters, METER_INTERVAL)
                time.sleep(settle)
                phases["client meters"] = _window(here, pids, refs, window)
                here.run(_ask_all, refs, _dispatch_here, METER_INTERVAL, timeout=ASK_TIMEOUT + 10)
                time.sleep(settle)
                phases["all dispatch"] = _window(here, pids, refs, window)
                figures["phases"] = phases
                figures["dispatchers"] = here.run(_ask_all, refs, _dispatch_view, client, timeout=ASK_TIMEOUT + 10)
                # Every node should have its count - 1 peers up (the client is hidden: not one of them).  One
                # that lost some (a host too busy to answer heartbeats for 3 s) is counted, and said.
                figures["lost"] = {phase: sum(node["peers"] < count - 1 for node in measured["nodes"])
                                   for phase, measured in phases.items()}
    figures["load_after"] = os.getloadavg()
    return figures


# -- how many peers one node can hold ------------------------------------------

#: (processes, nodes in each) hosting the peers a hub node connects to, and the open-file limits it runs with
#: (None: this host's own; 1024 is a common default soft limit).
WALL = {False: ((10, 30), (None, 1024)), True: ((2, 10), (96,))}
WALL_CONNECT_TIMEOUT = 5.0  # seconds: a connection refused at the wall is seen as this timeout


def host_peers(keyfile: str, count: int, seconds: float) -> None:
    """Run ``count`` nodes in this process (one thread each), print their addresses, live ``seconds`` at most.

    Nodes are cheap this way (no interpreter each): enough of them to find the
    number of peers one node can hold.  Stopped by SIGTERM.
    """
    import signal
    import threading
    threading.Timer(seconds, os._exit, (3,)).start()
    nodes = [termite.Node(host=HOST, port=0, keys=keyfile, heartbeat_interval=HEARTBEAT_INTERVAL,
                          heartbeat_timeout=HEARTBEAT_TIMEOUT).start() for _ in range(count)]
    for node in nodes:
        print(f"peer {node.ref.host}:{node.ref.port}", flush=True)
    print("ready", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    os._exit(0)  # the nodes' sessions end with the process: no goodbye needed


async def _reach_until_refused(addresses, reply_to, timeout):
    """On the hub: connect to one peer after another until one fails; tell how many it reached, and why it stopped."""
    reached, failure = 0, None
    for host, port in addresses:
        try:
            await termite.connect(host, port, timeout=timeout)
        except termite.Timeout as exc:
            failure = str(exc)
            break
        reached += 1
    try:
        fds = len(os.listdir("/proc/self/fd"))
    except OSError as exc:  # out of descriptors: even this fails
        fds = str(exc)
    termite.send(reply_to, ("reached", reached, failure, fds, len(termite.nodes())))


@contextlib.contextmanager
def _peer_processes(processes: int, each: int, keyfile: str, logs: Path):
    """``processes`` processes of ``each`` nodes (``host_peers``); yield the nodes' addresses; stop them by pid."""
    seconds = 120 + processes * each
    code = f"from benchmarks.scale import host_peers; host_peers({keyfile!r}, {each}, {seconds})"
    procs: list[subprocess.Popen] = []
    try:
        for i in range(processes):
            with open(logs / f"peers-{i}.log", "wb") as log:
                # bufsize=0: readline reads no further than its line, so select sees the lines after it
                procs.append(subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=log,
                                              stdin=subprocess.DEVNULL, cwd=ROOT, env=_env(), bufsize=0))
        addresses = []
        deadline = time.monotonic() + start_timeout(processes)
        for i, proc in enumerate(procs):
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([proc.stdout], [], [], left)[0]:
                    raise RuntimeError(f"the peers of process {i} did not start within {start_timeout(processes):.0f} s"
                                       + _log_tail(logs, i, "peers"))
                line = proc.stdout.readline().decode(errors="replace")
                if line.startswith("ready"):
                    break
                if not line.startswith("peer "):
                    raise RuntimeError(f"process {i} of peers said {line!r}" + _log_tail(logs, i, "peers"))
                host, port = line.split()[1].rsplit(":", 1)
                addresses.append((host, int(port)))
        yield addresses
    finally:
        _stop(procs)


def _hub_reach(addresses, keyfile: str, logs: Path, open_files: int | None) -> dict:
    """Start a hub node (with ``open_files``), have it connect to ``addresses`` until one fails: what it reached."""
    logs.mkdir()
    with _node_processes(1, keyfile, logs, open_files) as [(_, hub)]:
        with termite.Node(host=HOST, port=0, keys=keyfile, client=True) as here:
            here.connect(hub.host, hub.port, timeout=CONNECT_TIMEOUT)
            here.spawn_on(hub, _reach_until_refused, addresses, here.pid, WALL_CONNECT_TIMEOUT)
            _, reached, failure, fds, peers = here.receive(("reached", int, termite.ANY, termite.ANY, int),
                                                           timeout=len(addresses) * WALL_CONNECT_TIMEOUT + 30)
    said = [line for line in (logs / "node-0.log").read_text(errors="replace").splitlines() if "open files" in line]
    return {
        "limit": open_files if open_files is not None else resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "hosts_own_limit": open_files is None, "tried": len(addresses), "reached": reached, "failure": failure,
        "fds": fds, "peers_up": peers, "hub_log": said[:3],
    }  # fmt: skip


def measure_wall(quick: bool) -> list[dict]:
    """For each open-file limit of ``WALL``: how many peers one node reaches before a connection fails."""
    (processes, each), limits = WALL[quick]
    with tempfile.TemporaryDirectory(prefix="termite-wall-") as tmp:
        keyfile = os.path.join(tmp, "cluster.key")
        termite.generate_keys(keyfile)
        with _peer_processes(processes, each, keyfile, Path(tmp)) as addresses:
            return [_hub_reach(addresses, keyfile, Path(tmp) / f"hub-{limit}", limit) for limit in limits]


def wall_results(outcomes: list[dict]) -> list[Result]:
    results = []
    for o in outcomes:
        whose = "this host's" if o["hosts_own_limit"] else "set for the test"
        stopped = "the first failure" if o["reached"] < o["tried"] else f"all {o['tried']} tried"
        measure = f"peers one node reaches, open files limited to {o['limit']:,} ({whose}): until {stopped}"
        results.append(Result("scale", measure, o["reached"], "", details=o))
    return results


# -- fitting and projecting ---------------------------------------------------


def fit(xs, ys) -> tuple[float, float, float]:
    """Least squares ``y = a + b * x``: (a, b, r²); r² is 1.0 where y does not vary."""
    n = len(xs)
    if n < 2 or len(set(xs)) < 2:
        raise ValueError(f"a line needs two different x values, not {xs!r}")
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    b = sxy / sxx
    a = my - b * mx
    ss_total = sum((y - my) ** 2 for y in ys)
    ss_left = sum((y - a - b * x) ** 2 for x, y in zip(xs, ys))
    return a, b, 1.0 - ss_left / ss_total if ss_total else 1.0


#: Per-node figures: (key in a window's node, label, unit, scale to the unit, phases it is reported for).
NODE_FIGURES = (
    ("cpu_pct", "CPU per node", "% of a core", 1, PHASES),
    ("wire_out_bps", "TCP bytes sent per node", "kB/s", 1e-3, PHASES),
    ("segs_out_ps", "TCP data segments sent per node", "/s", 1, PHASES),
    ("frames_out_ps", "termite frames sent per node", "/s", 1, PHASES[1:]),  # idle: heartbeats only, which it skips
    ("frames_in_ps", "termite frames received per node", "/s", 1, PHASES[1:]),
    ("bytes_in_ps", "termite bytes received per node", "kB/s", 1e-3, PHASES[1:]),
    ("rss", "RSS per node", "MB", 1e-6, PHASES[:1]),
    ("uss", "USS per node", "MB", 1e-6, PHASES[:1]),
    ("fds", "open file descriptors per node", "", 1, PHASES[:1]),
    ("tcp_connections", "TCP connections per node", "", 1, PHASES[:1]),
)
#: Per-node figures that do not grow with the peers while only the client subscribes (its share is in CLIENT_FIGURES).
CONSTANT_WITH_CLIENT_METERS = ("frames_out_ps", "frames_in_ps", "bytes_in_ps")
NO_SS = "not measured (ss not installed: apt-get install iproute2)"
#: The client's figures (the launcher's or an Executor's node), against the number of nodes.
CLIENT_FIGURES = (
    ("frames_in_ps", "frames the client receives", "/s", 1, PHASES[1:2]),
    ("bytes_in_ps", "bytes the client receives", "kB/s", 1e-3, PHASES[1:2]),
    ("cpu_pct", "the client's CPU (this benchmark's process)", "% of a core", 1, PHASES[:2]),
)


def _node_value(phase: dict, key: str) -> float | None:
    values = [node[key] for node in phase["nodes"] if key in node]
    return median(values) if values else None


def results_of(sizes: dict[int, dict]) -> list[Result]:
    """The table: every size's figures, then each one's fit and its projection to ``PROJECT_TO`` nodes."""
    results = []
    counts = sorted(sizes)
    for n in counts:
        s = sizes[n]
        results += [
            Result("scale", f"{n} nodes: start (launch until every node announced)", s["start_s"], "s"),
            Result("scale", f"{n} nodes: join (until every node has every other up)", s["join_s"], "s"),
            Result("scale", f"{n} nodes: CPU per node to join", s["join_cpu_s"], "s"),
        ]
        for key, label, unit, scale, phases in NODE_FIGURES:
            for phase in phases:
                value = _node_value(s["phases"][phase], key)
                measure = f"{n} nodes, {phase}: {label} (median)"
                if value is None:
                    results.append(Result("scale", f"{measure}: {NO_SS}", None, unit))
                else:
                    results.append(Result("scale", measure, value * scale, unit))
        for key, label, unit, scale, phases in CLIENT_FIGURES:
            for phase in phases:
                value = s["phases"][phase]["client"][key] * scale
                results.append(Result("scale", f"{n} nodes, {phase}: {label}", value, unit))
        for phase, lost in s["lost"].items():
            if lost:
                results.append(Result("scale", f"{n} nodes, {phase}: nodes that lost a peer by the end of the phase "
                                               "(heartbeats unanswered for 3 s: the host overloaded)", lost, ""))
        views = s["dispatchers"]
        targets = median([view["dispatch_targets"] for view in views])
        with_client = sum(view["client_is_a_target"] for view in views)
        results.append(Result("scale", f"{n} nodes, all dispatch: nodes a dispatcher may send work to (median; "
                                       f"{with_client} of {n} dispatchers count the client among them)", targets, ""))
    results += projections(sizes)
    return results


def projections(sizes: dict[int, dict]) -> list[Result]:
    """Each figure fitted against peers per node (nodes, for the client) and projected to ``PROJECT_TO`` nodes."""
    counts = sorted(sizes)
    results = []

    def project(label, unit, xs, ys, at, what):
        a, b, r2 = fit(xs, ys)
        measure = f"{PROJECT_TO:,} nodes (projected), {label}: fit {a:.4g} + {b:.4g} × {what}, r² {r2:.2f}"
        details = {"a": a, "b": b, "r2": r2, "x": what, "xs": xs, "ys": ys}
        results.append(Result("scale", measure, a + b * at, unit, details=details))

    peers = [n - 1 for n in counts]
    project("CPU per node to join", "s", peers, [sizes[n]["join_cpu_s"] for n in counts], PROJECT_TO - 1, "peers")
    for key, label, unit, scale, phases in NODE_FIGURES:
        for phase in phases:
            if phase == "client meters" and key in CONSTANT_WITH_CLIENT_METERS:
                continue  # a node's reports to the client: the same at any size, only noise to project
            ys = [_node_value(sizes[n]["phases"][phase], key) for n in counts]
            if None not in ys:
                project(f"{phase}: {label}", unit, peers, [y * scale for y in ys], PROJECT_TO - 1, "peers")
    for key, label, unit, scale, phases in CLIENT_FIGURES:
        for phase in phases:
            ys = [sizes[n]["phases"][phase]["client"][key] * scale for n in counts]
            project(f"{phase}: {label}", unit, counts, ys, PROJECT_TO, "nodes")
    return results


def run(quick: bool = False) -> list[Result]:
    sizes = {}
    for count in SIZES[quick]:
        sizes[count] = measure_size(count, quick)
    results = results_of(sizes) + wall_results(measure_wall(quick))
    loads = [s[when][0] for s in sizes.values() for when in ("load_before", "load_after")]
    results.append(Result("scale", f"this host's load average (1 min) before and after each size: {min(loads):.1f} to",
                          max(loads), f"on {os.cpu_count()} cores", details={"sizes": sizes}))
    return results


# -- the tables of docs/scale.md, from a results file --------------------------

#: Rows of the measured table: (phase or None, label, function of a size's figures and a phase's window).
_ROWS = (
    (None, "start: launch until every node announced, s", lambda s, w: f"{s['start_s']:.1f}"),
    (None, "join: until every node has every other up, s", lambda s, w: f"{s['join_s']:.1f}"),
    (None, "CPU per node to join, s", lambda s, w: f"{s['join_cpu_s']:.2f}"),
    (None, "host load (1 min) before / after", lambda s, w: f"{s['load_before'][0]:.0f} / {s['load_after'][0]:.0f}"),
    (PHASES, "CPU per node, % of a core", lambda s, w: f"{_node_value(w, 'cpu_pct'):.2f}"),
    (PHASES, "TCP bytes sent per node, kB/s", lambda s, w: f"{_node_value(w, 'wire_out_bps') / 1e3:.1f}"),
    (PHASES, "TCP data segments sent per node, /s", lambda s, w: f"{_node_value(w, 'segs_out_ps'):.0f}"),
    (PHASES[1:], "termite frames sent per node, /s", lambda s, w: f"{_node_value(w, 'frames_out_ps'):.1f}"),
    (PHASES[2:], "termite frames received per node, /s", lambda s, w: f"{_node_value(w, 'frames_in_ps'):.1f}"),
    (PHASES[2:], "termite bytes received per node, kB/s", lambda s, w: f"{_node_value(w, 'bytes_in_ps') / 1e3:.2f}"),
    (PHASES[:1], "RSS per node, MB", lambda s, w: f"{_node_value(w, 'rss') / 1e6:.1f}"),
    (PHASES[:1], "USS per node, MB", lambda s, w: f"{_node_value(w, 'uss') / 1e6:.1f}"),
    (PHASES[:1], "open file descriptors per node", lambda s, w: f"{_node_value(w, 'fds'):.0f}"),
    (PHASES[:1], "TCP connections per node", lambda s, w: f"{_node_value(w, 'tcp_connections'):.0f}"),
    (PHASES[1:2], "the client receives, frames/s", lambda s, w: f"{w['client']['frames_in_ps']:.1f}"),
    (PHASES[1:2], "the client receives, kB/s", lambda s, w: f"{w['client']['bytes_in_ps'] / 1e3:.1f}"),
    (PHASES[:2], "the client's CPU, % of a core", lambda s, w: f"{w['client']['cpu_pct']:.2f}"),
    (PHASES[2:], "nodes a dispatcher may send work to",
     lambda s, w: f"{median([v['dispatch_targets'] for v in s['dispatchers']]):.0f}"),
    (PHASES[2:], "... of which the client, in how many",
     lambda s, w: f"{sum(v['client_is_a_target'] for v in s['dispatchers'])}"),
)


def summary(records: list[dict]) -> str:
    """The measured table, the fits with their projections, and the wall, as docs/scale.md shows them.

    ``records``: the ``scale`` entries of a results file (``python -m benchmarks scale --json PATH``).
    """
    [load] = [r for r in records if r["measure"].startswith("this host's load average")]
    sizes = {int(n): figures for n, figures in load["details"]["sizes"].items()}
    counts = sorted(sizes)
    lines = [f"{'nodes':<46}" + "".join(f"{n:>10}" for n in counts)]
    for phases, label, cell in _ROWS:
        if phases is None:
            lines.append(f"{label:<46}" + "".join(f"{cell(sizes[n], None):>10}" for n in counts))
    for phase in PHASES:
        lines.append(phase)
        for phases, label, cell in _ROWS:
            if phases is not None and phase in phases:
                cells = [cell(sizes[n], sizes[n]["phases"][phase]) for n in counts]
                lines.append(f"  {label:<44}" + "".join(f"{c:>10}" for c in cells))
    lost = {n: {p: k for p, k in s["lost"].items() if k} for n, s in sizes.items()}
    lines += [f"{n} nodes: nodes that lost a peer: {by_phase}" for n, by_phase in lost.items() if by_phase]
    lines += ["", f"{'figure':<58}{'a':>9}{'b':>10}{'r²':>6}  {PROJECT_TO:,} nodes"]
    smaller = {n: sizes[n] for n in counts[:-1]} if len(counts) > 2 else None
    for result in projections(sizes):
        label = result.measure.split(": fit ")[0].split(", ", 1)[1]
        d = result.details
        lines.append(f"{label:<58}{d['a']:>9.3g}{d['b']:>10.3g}{d['r2']:>6.2f}  {result.value_text}")
        if smaller and "CPU per node" in label:  # the largest size ran on a saturated host: without it
            [again] = [r for r in projections(smaller) if r.measure.split(": fit ")[0].endswith(label)]
            d = again.details
            lines.append(f"{'  ... without ' + str(counts[-1]) + ' nodes':<58}{d['a']:>9.3g}{d['b']:>10.3g}"
                         f"{d['r2']:>6.2f}  {again.value_text}")
    lines.append("")
    for r in records:
        if r["measure"].startswith("peers one node reaches"):
            lines.append(f"{r['measure']}: {r['value']:g}")
    return "\n".join(lines)

