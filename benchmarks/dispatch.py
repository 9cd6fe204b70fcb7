"""Dispatch to the least-loaded node, through termite.Executor and termite.dispatch.

Two node processes (``python -m termite.node``, loopback, no CURVE) run the
calls; the measuring side is a fresh child process whose Executor runs a node
of its own that only dispatches.

- trivial calls (``lambda x: x + 1``) through ``Executor.map`` over 2 nodes,
  one call per message (``chunksize=1``) and 100 per message; Dask's
  ``Client.map`` on a 2-worker LocalCluster in the same run, if
  ``dask[distributed]`` is installed (``pip install -e '.[bench]'``);
- sequential ``await dispatch(...)`` round trips from one process;
- CPU-bound calls (each burns 50 ms of CPU) on 2 nodes against 1 node;
- the dispatcher's own work per job among 10, 100 and 1,000 simulated nodes
  (``choice``: its methods called in this process, its sends going nowhere):
  what its choice of a node costs as a cluster grows.

Ray's figures quoted in the targets (about 1,250 tasks/s and 370 sequential
round trips/s) were measured on this machine by the issue's author.
"""

from __future__ import annotations

import collections
import contextlib
import time

from benchmarks._result import Result, median, run_child
from benchmarks.nodes import _server

SIZES = {False: (20_000, 1_000, 40, 3), True: (2_000, 200, 10, 1)}  # quick -> (map calls, dispatches, cpu calls, repeats)
TARGET_MAP = 5_000  # calls/s
TARGET_SEQUENTIAL = 2_000  # round trips/s
TARGET_CPU = 1.8  # 2 nodes / 1 node
CPU_SECONDS = 0.05
CHILD_TIMEOUT = 300


def _spin(seconds):
    start = time.thread_time()
    while time.thread_time() - start < seconds:
        pass
    return seconds


def _measure(addresses, count, dispatches, cpu_calls, repeats, keyfile):
    import termite

    out = {}
    with termite.Executor(addresses[:1], keys=keyfile) as one:
        assert list(one.map(_spin, [0.001] * 4)) == [0.001] * 4  # warm
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            list(one.map(_spin, [CPU_SECONDS] * cpu_calls))
            runs.append(cpu_calls / (time.perf_counter() - start))
        out["cpu1"] = median(runs)
    with termite.Executor(addresses, keys=keyfile) as pool:
        assert list(pool.map(lambda x: x + 1, range(100))) == list(range(1, 101))  # warm, both nodes
        for chunksize in (1, 100):
            runs = []
            for _ in range(repeats):
                start = time.perf_counter()
                results = list(pool.map(lambda x: x + 1, range(count), chunksize=chunksize))
                runs.append(count / (time.perf_counter() - start))
                assert results[-1] == count
            out[f"map{chunksize}"] = median(runs)

        async def sequential(n):
            inc = lambda x: x + 1  # noqa: E731 - the thunk a user would write
            start = time.perf_counter()
            for i in range(n):
                assert await termite.dispatch(inc, i) == i + 1
            return n / (time.perf_counter() - start)

        out["sequential"] = median([pool.node.run(sequential, dispatches) for _ in range(repeats)])
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            list(pool.map(_spin, [CPU_SECONDS] * cpu_calls))
            runs.append(cpu_calls / (time.perf_counter() - start))
        out["cpu2"] = median(runs)
    return out


def _dask(count, repeats):
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        return None
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, Client(cluster) as client:
        client.gather(client.map(lambda x: x + 1, range(100), pure=False))  # warm
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            results = client.gather(client.map(lambda x: x + 1, range(count), pure=False))
            runs.append(count / (time.perf_counter() - start))
            assert results[-1] == count
        return median(runs)


CHOICE_SIZES = {False: (10, 100, 1_000), True: (10, 1_000)}
CHOICE_JOBS = {False: 20_000, True: 4_000}


class _Reply:
    """A job's reply that takes every job and drops its results."""

    def start(self):
        return True

    def finish(self, results):
        pass

    def abandon(self):
        return False


def choice(nodes: int, jobs: int, seed: int = 1) -> dict:
    """The dispatcher's own work among ``nodes`` simulated nodes: seconds per job and per ``place``.

    Its methods are called as its loop calls them, with a clock of its own and
    ``send`` replaced by one that only notes where each job went.  Each node
    holds 4 jobs (of one call); per job measured: the oldest job's answer, a
    new job (the choice of its node) and one meter report (each node reports
    once per interval, as many reports as jobs).  Timed in this process's CPU
    time, which a loaded host's other work does not inflate.
    """
    import random

    from termite import Load, NodeRef
    from termite._balance import dispatch as module
    from termite._balance.runner import runner_of

    rng = random.Random(seed)
    clock = [0.0]

    class Loop:
        def time(self):
            return clock[0]

    went = []
    saved = module.send
    module.send = lambda to, msg: went.append((msg[1], to.node)) if msg.__class__ is tuple and msg[0] == "run" else None
    try:
        d = module._Dispatcher(1.0, 16, False)
        d.me, d.here, d.loop = None, NodeRef("127.0.0.1", 1, 1), Loop()
        refs = [NodeRef(f"10.0.{i // 250}.{i % 250}", 7000 + i, 1) for i in range(nodes)]
        for ref in refs:
            d._add(ref)
        assert runner_of(refs[0]).node == refs[0]

        def report(ref):
            queue = rng.randrange(0, 8)
            return Load(ref, rng.random() * 2, queue, rng.random(), queue, 0, 0, 0, 0, 1.0, ref.host, 1, 64, 0.0)

        for ref in refs:
            d._heard(report(ref))
        fn, calls, reply = (lambda: None), [()], _Reply()
        for _ in range(nodes * 4):
            d._submit(fn, calls, reply)
        flying = collections.deque(went)
        went.clear()
        step = d.interval / nodes  # every node reports once per interval
        start = time.process_time()
        for i in range(jobs):
            job_id, node = flying.popleft()
            d._done(job_id, node, [(True, None)])
            d._submit(fn, calls, reply)
            flying.append(went.pop())
            clock[0] += step
            d._heard(report(refs[i % nodes]))
        per_job = (time.process_time() - start) / jobs
        places = max(1, jobs // 10)
        start = time.process_time()
        for _ in range(places):
            d._request(None, None, "place")
        per_place = (time.process_time() - start) / places
    finally:
        module.send = saved
    return {"job": per_job, "place": per_place}


def run(quick: bool = False) -> list[Result]:
    count, dispatches, cpu_calls, repeats = SIZES[quick]
    import termite

    keyfile = termite.session_keys()  # CURVE, as a user's Executor runs; the measuring child gets the file
    with contextlib.ExitStack() as stack:
        words = [stack.enter_context(_server("termite.node", ["--port", "0", "--keys", keyfile], "termite node"))
                 for _ in range(2)]
        addresses = [w[2] for w in words]
        got = run_child(__name__, "_measure", addresses, count, dispatches, cpu_calls, repeats, keyfile,
                        timeout=CHILD_TIMEOUT)
    dask_count = count // 10  # Dask runs a few hundred tasks a second: fewer will do
    dask = run_child(__name__, "_dask", dask_count, repeats, timeout=CHILD_TIMEOUT)
    how = f"median of {repeats}"
    results = [
        Result("dispatch", f"Executor.map, x + 1, 2 nodes, chunksize 1: calls ({how} × {count:,})", got["map1"], "/s",
               TARGET_MAP, ">=", details={"dask": "measured" if dask else "not installed: pip install -e '.[bench]'"}),
        Result("dispatch", f"Executor.map, x + 1, 2 nodes, chunksize 100: calls ({how} × {count:,})", got["map100"], "/s"),
        Result("dispatch", f"sequential dispatch round trips ({how} × {dispatches:,})", got["sequential"], "/s",
               TARGET_SEQUENTIAL, ">="),
        Result("dispatch", f"CPU-bound calls ({CPU_SECONDS * 1000:.0f} ms each), 1 node ({how} × {cpu_calls})", got["cpu1"], "/s"),
        Result("dispatch", f"CPU-bound calls, 2 nodes ({how} × {cpu_calls})", got["cpu2"], "/s"),
        Result("dispatch", "CPU-bound: 2 nodes / 1 node", got["cpu2"] / got["cpu1"], "", TARGET_CPU, ">="),
    ]
    if dask is not None:
        results += [
            Result("dispatch", f"Dask Client.map, x + 1, 2-worker LocalCluster ({how} × {dask_count:,})", dask, "/s"),
            Result("dispatch", "termite Executor.map (chunksize 1) / Dask Client.map", got["map1"] / dask, ""),
        ]
    for nodes in CHOICE_SIZES[quick]:
        got = choice(nodes, CHOICE_JOBS[quick])
        results += [
            Result("dispatch", f"the dispatcher's work per job (answer, choice, a report), {nodes:,} simulated nodes",
                   got["job"] * 1e6, "µs"),
            Result("dispatch", f"the dispatcher's place (least-loaded node), {nodes:,} simulated nodes",
                   got["place"] * 1e6, "µs"),
        ]
    return results

