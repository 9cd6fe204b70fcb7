"""Messages between two nodes on this host, against raw pyzmq in the same run.

``nodes-pingpong``: a process on node A sends ``(self(), i)`` to a process on
node B, which answers ``i``; round trips per second.  ``nodes-stream``: a
process on A sends ``("data", i)`` to a sink on B as fast as it can, then
``("end", self())``; the sink counts, and times from the first message to the
end, and answers with both, so the rate is the one measured at the receiver.

Every side is its own OS process: node B is ``python -m termite.node`` and
node A a child running ``termite.run``; the baseline (benchmarks/_raw_zmq.py)
is a ROUTER process and a DEALER process doing the same exchanges with one
msgpack tuple per zmq message.  Each run of each of the four setups (raw or
termite, clear or CURVE) gets a fresh pair of processes and a warm-up before
its ``count`` messages; the median of ``RUNS`` runs is reported.  Only
loopback.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
import tempfile
import time

from benchmarks._result import ROOT, Result, median, run_child

RUNS = 3
SIZES = {  # kind -> (count, warm-up), full and quick
    "pingpong": {False: (10_000, 2_000), True: (1_000, 200)},
    "stream": {False: (200_000, 20_000), True: (10_000, 2_000)},
}
TARGET_VS_RAW = 0.9  # termite ping-pong / raw ping-pong, clear and with CURVE (issue 20)
TARGET_STREAM = 100_000  # messages/s
TARGET_CURVE = 0.7  # termite with CURVE / termite in clear
CHILD_TIMEOUT = 120  # seconds for node A's (or the DEALER's) whole run; then it is killed
SERVER_LIFETIME = 300  # seconds: a server whose parent died still exits
WAIT = 10  # seconds any one reply may take


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


async def _drive(kind, host, port, count, warmup):
    """Node A's side: reach B, start the peer process there, measure after a warm-up."""
    import termite
    from termite import receive, send, spawn

    me = termite.self()
    node = await termite.connect(host, port, timeout=WAIT)
    if kind == "pingpong":
        pong = spawn(_pong, node=node)
        for n in (warmup, count):
            start = time.perf_counter()
            for i in range(n):
                send(pong, (me, i))
                await receive(timeout=WAIT)
            rate = n / (time.perf_counter() - start)
    else:
        sink = spawn(_sink, node=node)
        for n in (warmup, count):
            for i in range(n):
                send(sink, ("data", i))
            send(sink, ("end", me))
            got, seconds = await receive(timeout=WAIT + n / 10_000)  # the sink may be far behind
            if got != n:
                raise RuntimeError(f"the sink counted {got} of {n} messages")
            rate = n / seconds
    return rate


def termite_side(kind, host, port, count, warmup, keyfile=None) -> float:
    """Run node A in this (child) process until the measurement is done."""
    import termite

    network = termite.Network(keys=keyfile) if keyfile else termite.Network(insecure=True)
    return termite.run(_drive, kind, host, port, count, warmup, network=network)


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
def _server_process(module, args, announce):
    """As :func:`_server`, yielding the line's words and the server's ``Popen``."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    with tempfile.TemporaryFile("w+") as errors:  # a file, not a pipe: a chatty child never blocks
        proc = subprocess.Popen([sys.executable, "-c", _BOUNDED, str(SERVER_LIFETIME), module, *args], cwd=ROOT,
                                env=env, stdout=subprocess.PIPE, stderr=errors, text=True)
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


def _measure(side, kind, count, warmup, keyfile):
    """One run in fresh processes: B serves, A measures."""
    if side == "raw":
        with _server("benchmarks._raw_zmq", ["router", *([keyfile] if keyfile else [])], "raw router") as words:
            return run_child("benchmarks._raw_zmq", "dealer", kind, int(words[2]), count, warmup, keyfile,
                             timeout=CHILD_TIMEOUT)
    flags = ["--keys", keyfile] if keyfile else ["--insecure"]
    with _server("termite.node", ["--port", "0", *flags], "termite node") as words:
        host, port = words[2].rsplit(":", 1)
        return run_child(__name__, "termite_side", kind, host, int(port), count, warmup, keyfile,
                         timeout=CHILD_TIMEOUT)


def _run(name, kind, quick):
    count, warmup = SIZES[kind][quick]
    runs = 1 if quick else RUNS
    setups = [(side, curve) for curve in (False, True) for side in ("raw", "termite")]
    rates = {setup: [] for setup in setups}
    with tempfile.TemporaryDirectory() as tmp:
        import termite._net.keys

        keyfile = os.path.join(tmp, "cluster.key")
        termite._net.keys.generate(keyfile)
        # Runs take turns, so that a slow spell of the machine (wake-ups across
        # CPUs cost much more than on one CPU here) does not favour one setup.
        for _ in range(runs):
            for side, curve in setups:
                rates[side, curve].append(_measure(side, kind, count, warmup, keyfile if curve else None))
    value = {setup: median(rates[setup]) for setup in setups}

    def figure(side, curve, **target):
        label = "raw pyzmq DEALER/ROUTER" if side == "raw" else "termite, two nodes"
        what = "round trips" if kind == "pingpong" else "messages at the receiver"
        how = f"median of {runs} × {count:,}" if runs > 1 else f"{count:,}"
        return Result(name, f"{label}, {'CURVE' if curve else 'clear'}: {what} ({how})", value[side, curve],
                      "/s" if kind == "pingpong" else "msgs/s", details={"rates": rates[side, curve]}, **target)

    def ratio(measure, a, b, **target):
        return Result(name, measure, value[a] / value[b], "", **target)

    vs_raw = {"target": TARGET_VS_RAW, "op": ">="} if kind == "pingpong" else {}
    rate = {"target": TARGET_STREAM, "op": ">="} if kind == "stream" else {}
    return [
        figure("raw", False),
        figure("termite", False, **rate),
        ratio("termite / raw, clear", ("termite", False), ("raw", False), **vs_raw),
        figure("raw", True),
        ratio("raw: CURVE / clear", ("raw", True), ("raw", False)),
        figure("termite", True),
        ratio("termite / raw, CURVE", ("termite", True), ("raw", True), **vs_raw),
        ratio("termite: CURVE / clear", ("termite", True), ("termite", False), target=TARGET_CURVE, op=">="),
    ]


def run_pingpong(quick: bool = False) -> list[Result]:
    return _run("nodes-pingpong", "pingpong", quick)


def run_stream(quick: bool = False) -> list[Result]:
    from benchmarks.slow_receiver import run as slow_receiver

    return _run("nodes-stream", "stream", quick) + slow_receiver(quick)
