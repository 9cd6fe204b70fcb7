"""Messages between two nodes on this host, against raw pyzmq in the same run.

``nodes-pingpong``: a process on node A sends ``(self(), i)`` to a process on
node B, which answers ``i``; round trips per second.  ``nodes-stream``: a
process on A sends ``("data", i)`` to a sink on B as fast as it can, then
``("end", self())``; the sink counts, and times from the first message to the
end, and answers with both, so the rate is the one measured at the receiver.

Every side is its own OS process: node B is ``python -m termite.node`` and
node A a child running ``termite.run``; the baseline (benchmarks/_raw_zmq.py)
is a ROUTER process and a DEALER process doing the same exchanges with one
msgpack tuple per zmq message.  Only loopback.

How the figures are taken (benchmarks/_windows.py).  On this 2-core machine
a round trip's speed hangs most on where the scheduler puts the threads:
each side is two processes of two threads each (Python's and libzmq's I/O
thread), and as they move between the CPUs from moment to moment the same
exchange runs at 15,000 round trips a second or at 4,000.  One long run per
setup, or fresh processes per run, catches each setup in another placement
(the ratio termite / raw then scattered from 0.84 to 1.08 between
consecutive runs).  So:

- Placement is fixed and the same for both sides: every process (all its
  threads) is kept on one core.  The targets are for *one node per core*,
  as a cluster runs (node A and the DEALER on the first core, node B and the
  ROUTER on the second); ping-pong is also run with *both on one core*,
  where the rate is CPU time alone, with no wake-up across cores, and
  *unpinned*, as before, whose pair ratios show how widely it scatters.
- The four setups (raw or termite, clear or CURVE) of a placement are
  started once, each pair of processes set up and warmed up, and kept
  alive; then they are timed in short *windows* that take turns: in each of
  ``SIZES``' rounds, raw and termite in clear, then raw and termite with
  CURVE, raw first in one round and termite first in the next.
- The windows are short and many (ping-pong: 96 rounds of 250 round
  trips).  This machine's speed jumps between phases a few seconds long
  (about 2,300 and 4,500 round trips a second, for raw and termite alike),
  and a pair of windows that straddles a jump gives a ratio of 0.6 or 1.6.
  With 12 rounds of 2,000 round trips, termite / raw (the median of the
  pair ratios) moved from 0.81 to 1.03 over five runs of the same code,
  clear and CURVE; with 96 of 250, the same number of round trips, from
  0.94 to 0.97 over three.
- Adjacent windows share the machine's moment, so every ratio reported
  (termite / raw, CURVE / clear) is the median of the ratios of windows
  taken together, pair by pair; its details hold every pair's ratio, the
  extremes and the quartiles.  The rates are the medians of each setup's
  windows.
- The CPU lines are the CPU time (user + system, every thread) both
  processes of a setup spent in its windows, per round trip (per message
  for the stream), as psutil reads it from the parent: what a round trip
  costs, apart from how long the processes waited to be woken.  Across
  cores a wake-up costs CPU too (this machine is a VM), so these are larger
  there than on one core.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
import tempfile
import time

from benchmarks import _windows
from benchmarks._result import ROOT, Result, median
from benchmarks._windows import Driver

SIZES = {  # kind -> (window, warm-up, windows of each setup), full and quick
    "pingpong": {False: (250, 2_000, 96), True: (200, 200, 3)},
    "stream": {False: (20_000, 20_000, 12), True: (2_000, 2_000, 3)},
}
TARGET_VS_RAW = 0.9  # termite ping-pong / raw ping-pong, clear and with CURVE (issue 20)
TARGET_STREAM = 100_000  # messages/s
TARGET_CURVE = 0.7  # termite with CURVE / termite in clear
CHILD_TIMEOUT = 120  # seconds node A (or the DEALER) may take to set up and warm up
SERVER_LIFETIME = 300  # seconds: a server whose parent died still exits
WAIT = 10  # seconds any one reply may take
# The kernel counts a process's CPU time in clock ticks: windows that took less say nothing.
_CPU_TICK = 1 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.01
TOO_SHORT = "not measured, the windows took less CPU than one clock tick (run without --quick)"


# -- what runs on the nodes (importable, so it travels by reference) ----------


async def _pong():
    from termite import receive, send

    while True:  # lives as long as node B
        sender, n = await receive()
        send(sender, n)


async def _sink():
    from termite import receive, send

    while True:  # lives as long as node B
        msg = await receive()
        start, count = time.perf_counter(), 1  # msg is the first ("data", i)
        while msg[0] == "data":
            msg = await receive()
            count += 1
        send(msg[1], (count - 1, time.perf_counter() - start))  # msg is ("end", sender)


async def _window(kind, peer, me, n) -> float:
    """``n`` exchanges with ``peer``: round trips/s (pingpong) or messages/s at the sink (stream)."""
    from termite import receive, send

    if kind == "pingpong":
        start = time.perf_counter()
        for i in range(n):
            send(peer, (me, i))
            await receive(timeout=WAIT)
        return n / (time.perf_counter() - start)
    for i in range(n):
        send(peer, ("data", i))
    send(peer, ("end", me))
    got, seconds = await receive(timeout=WAIT + n / 10_000)  # the sink may be far behind
    if got != n:
        raise RuntimeError(f"the sink counted {got} of {n} messages")
    return n / seconds


async def _drive(kind, host, port, warmup):
    """Node A's side: reach B, start the peer process there, warm up, then time the windows asked for."""
    import asyncio

    import termite
    from termite import spawn

    me = termite.self()
    node = await termite.connect(host, port, timeout=WAIT)
    peer = spawn(_pong if kind == "pingpong" else _sink, node=node)
    await _window(kind, peer, me, warmup)
    _windows.ready()
    loop = asyncio.get_running_loop()
    # The parent's word is awaited on a thread: the node's loop stays free meanwhile.
    while (n := await loop.run_in_executor(None, _windows.next_window)) is not None:
        _windows.report(await _window(kind, peer, me, n))


def termite_side(kind, host, port, warmup, keyfile=None) -> None:
    """Run node A in this (child) process until the parent says stop."""
    import termite

    network = termite.Network(keys=keyfile) if keyfile else termite.Network(insecure=True)
    termite.run(_drive, kind, host, port, warmup, network=network)


# -- the parent: start B, run A, stop both ------------------------------------


# ``python -m MODULE ARGS...`` that exits by itself after argv[1] seconds, even
# if the parent that should stop it died first.
_BOUNDED = """\
import os, runpy, sys, threading
timer = threading.Timer(float(sys.argv[1]), os._exit, (3,))
timer.daemon = True
timer.start()
sys.argv = sys.argv[2:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


@contextlib.contextmanager
def _server(module, args, announce):
    """``python -m module *args`` in the background until it printed ``announce ...``; yields that line's words."""
    with _server_process(module, args, announce) as (words, _):
        yield words


@contextlib.contextmanager
def _server_process(module, args, announce, cpus=None):
    """As :func:`_server`, yielding the line's words and the server's ``Popen``; on ``cpus`` only if given."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    with tempfile.TemporaryFile("w+") as errors:  # a file, not a pipe: a chatty child never blocks
        proc = subprocess.Popen([sys.executable, "-c", _BOUNDED, str(SERVER_LIFETIME), module, *args], cwd=ROOT,
                                env=env, stdout=subprocess.PIPE, stderr=errors, text=True,
                                preexec_fn=_windows.pinned(cpus))
        try:
            ready, _, _ = select.select([proc.stdout], [], [], 30)
            line = proc.stdout.readline() if ready else ""
            if not line.startswith(announce):
                errors.seek(0)
                raise RuntimeError(f"{module} {' '.join(args)} did not start: {line!r}\n{errors.read()[-2000:]}")
            yield line.split(), proc
        finally:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            proc.stdout.close()


@contextlib.contextmanager
def _side(side, kind, warmup, keyfile, placement):
    """``side``'s two processes (raw or termite; CURVE if ``keyfile``), set up and warmed up, the driver on
    ``placement[0]``'s CPUs and the server on ``placement[1]``'s: yields the Driver."""
    if side == "raw":
        module, args, announce = "benchmarks._raw_zmq", ["router", *([keyfile] if keyfile else [])], "raw router"
    else:
        module, args, announce = "termite.node", ["--port", "0", *(["--keys", keyfile] if keyfile else ["--insecure"])], \
            "termite node"
    with _server_process(module, args, announce, placement[1]) as (words, server):
        if side == "raw":
            driver = ("benchmarks._raw_zmq", "dealer", [kind, int(words[2]), warmup, keyfile])
        else:
            host, port = words[2].rsplit(":", 1)
            driver = (__name__, "termite_side", [kind, host, int(port), warmup, keyfile])
        with Driver(*driver, server.pid, lifetime=SERVER_LIFETIME, wait=CHILD_TIMEOUT, cpus=placement[0]) as running:
            yield running


def _placements(kind):
    """label -> (node A's CPUs, node B's CPUs); the first is the one targets are for."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cpus) < 2:  # nothing to choose: where the scheduler puts them
        return {"": (None, None)}
    across = {"one node per core": ({cpus[0]}, {cpus[1]})}
    if kind != "pingpong":
        return across
    return across | {"both on one core": ({cpus[0]}, {cpus[0]}), "unpinned": (None, None)}


def _windows_of(kind, window, warmup, pairs, keyfile, placement):
    """Every setup's windows, the four setups alive together in ``placement`` and taking turns."""
    setups = [(side, curve) for curve in (False, True) for side in ("raw", "termite")]
    windows = {setup: [] for setup in setups}
    with contextlib.ExitStack() as stack:
        drivers = {(side, curve): stack.enter_context(_side(side, kind, warmup, keyfile if curve else None, placement))
                   for side, curve in setups}
        # Raw first in one round and termite first in the next, so that neither is always the
        # one just after the other (or after the other placement's set-up).
        for i in range(pairs):
            for curve in (False, True):
                for side in ("raw", "termite") if (i + curve) % 2 == 0 else ("termite", "raw"):
                    windows[side, curve].append(drivers[side, curve].window(window, WAIT + window / 1_000))
    return windows


def _run(name, kind, quick):
    window, warmup, pairs = SIZES[kind][quick]
    with tempfile.TemporaryDirectory() as tmp:
        import termite._net.keys

        keyfile = os.path.join(tmp, "cluster.key")
        termite._net.keys.generate(keyfile)
        measured = {label: _windows_of(kind, window, warmup, pairs, keyfile, placement)
                    for label, placement in _placements(kind).items()}
    what = "round trips" if kind == "pingpong" else "messages at the receiver"
    one = "round trip" if kind == "pingpong" else "message"
    unit = "/s" if kind == "pingpong" else "msgs/s"
    results = []
    for n, (place, windows) in enumerate(measured.items()):
        rates = {setup: [w.rate for w in ws] for setup, ws in windows.items()}
        where = f", {place}" if place else ""

        def figure(side, curve, **target):
            label = "raw pyzmq DEALER/ROUTER" if side == "raw" else "termite, two nodes"
            return Result(name, f"{label}, {_mode(curve)}{where}: {what} (median of {pairs} windows × {window:,})",
                          median(rates[side, curve]), unit, details={"rates": rates[side, curve]}, **target)

        def ratio(measure, a, b, **target):
            summary = _windows.spread([x / y for x, y in zip(rates[a], rates[b])])
            summary["rates"] = {"numerator": rates[a], "denominator": rates[b]}
            return Result(name, f"{measure}{where} (median of {pairs} pairs)", summary["median"], "",
                          details=summary, **target)

        def cpu(side, curve):
            label = "raw (DEALER + ROUTER)" if side == "raw" else "termite (node A + node B)"
            measure = f"CPU per {one}, {label}, {_mode(curve)}{where}"
            done = window * len(windows[side, curve])
            driver = sum(w.cpu_driver for w in windows[side, curve])
            server = sum(w.cpu_server for w in windows[side, curve])
            if driver + server < _CPU_TICK:  # the windows were too short for the counters (--quick)
                return Result(name, f"{measure}: {TOO_SHORT}", None, "µs")
            return Result(name, measure, (driver + server) / done * 1e6, "µs",
                          details={"driver_us": driver / done * 1e6, "server_us": server / done * 1e6})

        termite_vs_raw = [ratio(f"termite / raw, {_mode(curve)}", ("termite", curve), ("raw", curve),
                                **({"target": TARGET_VS_RAW, "op": ">="} if kind == "pingpong" and n == 0 else {}))
                          for curve in (False, True)]
        cpus = [cpu(side, curve) for curve in (False, True) for side in ("raw", "termite")]
        if n:  # another placement: how the ratios and the costs (with CURVE) move with it
            results += termite_vs_raw + cpus[2:]
            continue
        stream = {"target": TARGET_STREAM, "op": ">="} if kind == "stream" else {}
        results += [
            figure("raw", False),
            figure("termite", False, **stream),
            termite_vs_raw[0],
            figure("raw", True),
            ratio("raw: CURVE / clear", ("raw", True), ("raw", False)),
            figure("termite", True),
            termite_vs_raw[1],
            ratio("termite: CURVE / clear", ("termite", True), ("termite", False), target=TARGET_CURVE, op=">="),
            *cpus,
        ]
    return results


def _mode(curve: bool) -> str:
    return "CURVE" if curve else "clear"


def run_pingpong(quick: bool = False) -> list[Result]:
    return _run("nodes-pingpong", "pingpong", quick)


def run_stream(quick: bool = False) -> list[Result]:
    from benchmarks.slow_receiver import run as slow_receiver

    return _run("nodes-stream", "stream", quick) + slow_receiver(quick)
