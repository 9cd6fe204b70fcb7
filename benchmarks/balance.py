"""Rebalancing by migration: CPU-bound workers started on one node, balanced against pinned.

Two node processes (``python -m termite.node``, loopback, CURVE) run 20
CPU-bound workers; the measuring side is a fresh child process whose
Executor runs a node of its own that runs no work (the balancer's node).
Each worker does fixed units of arithmetic, passes a safe point
(``termite.checkpoint()``) after each, and reports its count every 0.1 s.

- pinned: the 20 workers on one node, not opted in: units per second over a
  fixed window;
- balanced: the balancer running (1 s meter interval), the 20 workers
  started on one node, opted in: the time from their start until they are
  spread evenly (at most one worker off), the moves that took, the units per second over the same
  window once balanced, and the moves in a steady run after (30 s; 6 s
  under --quick).
"""

from __future__ import annotations

import contextlib
import time

from benchmarks._result import Result, run_child
from benchmarks.nodes import _server

WORKERS = 20
WORK = 20_000  # additions per unit of work: about a millisecond
REPORT = 0.1  # seconds between a worker's reports of its count
INTERVAL = 1.0  # the meters' and the balancer's
SIZES = {False: (5.0, 30.0), True: (2.0, 6.0)}  # quick -> (throughput window, steady run), seconds
TARGET_SPEEDUP = 1.8
TARGET_BALANCED = 5.0  # seconds from imbalance to balanced
TARGET_STEADY_MOVES = 2
WAIT = 60.0
CHILD_TIMEOUT = 300


async def worker(report_to, n: int, opt_in: bool):
    """A unit is ``WORK`` additions; reports ("at", n, node) on start and move, ("units", n, total) every REPORT s."""
    import termite

    if opt_in:
        termite.balanceable()
    termite.send(report_to, ("at", n, termite.current_node()))
    units, due = 0, time.monotonic() + REPORT
    while True:
        x = 0
        for i in range(WORK):
            x += i
        units += 1
        moved = await termite.checkpoint()
        if moved is not None:
            termite.send(report_to, ("at", n, moved))
        if time.monotonic() >= due:
            termite.send(report_to, ("units", n, units))
            due = time.monotonic() + REPORT
        await termite.sleep(0)


class _Watch:
    """What the workers report: where each is, and its count of units."""

    def __init__(self):
        self.at: dict[int, object] = {}
        self.units: dict[int, int] = {}

    async def until(self, done, seconds: float = WAIT) -> None:
        import termite

        deadline = time.monotonic() + seconds
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                if done is _never:
                    return
                raise TimeoutError(f"the workers did not get there within {seconds} s: {self.counts()}")
            msg = await termite.receive((str, int, termite.ANY), timeout=left, default=None)
            if msg is None:
                continue
            kind, n, value = msg
            if kind == "at":
                self.at[n] = value
            elif kind == "units":
                self.units[n] = value

    async def rate(self, seconds: float) -> float:
        """Units per second, all workers, over the next ``seconds``."""
        start, before = time.monotonic(), sum(self.units.values())
        await self.until(_never, seconds)
        return (sum(self.units.values()) - before) / (time.monotonic() - start)

    def counts(self) -> dict:
        counts: dict = {}
        for node in self.at.values():
            counts[node] = counts.get(node, 0) + 1
        return counts


async def _cores() -> float:
    """The cores the nodes kept busy over their last report's interval: what the host gave them."""
    import termite

    return sum(load.busy for load in (await termite.loads()).values() if load is not None)


def _never():
    return False


async def _scenario(window: float, steady: float) -> dict:
    import termite

    me = termite.self()
    nodes = sorted(await termite.loads(), key=lambda node: node.port)
    busy, idle = nodes

    async def start(opt_in: bool) -> tuple[_Watch, list]:
        watch = _Watch()
        pids = [termite.spawn(worker, me, n, opt_in, node=busy) for n in range(WORKERS)]
        await watch.until(lambda: len(watch.at) == WORKERS and len(watch.units) == WORKERS)
        return watch, pids

    async def stop(pids) -> None:
        refs = [termite.monitor(pid) for pid in pids]
        for pid in pids:
            termite.exit(pid, "kill")
        for ref in refs:
            await termite.receive(termite.Down(ref, termite.ANY, termite.ANY), timeout=WAIT)

    out = {}
    watch, pids = await start(opt_in=False)
    out["pinned"] = await watch.rate(window)
    out["pinned_cores"] = await _cores()
    await stop(pids)

    # The balancer runs before the imbalance begins, as it would in a cluster: the clock starts at the spawns.
    balancer = await termite.start_balancer(interval=INTERVAL)
    await termite.sleep(INTERVAL)  # a report of the idle nodes
    started = time.monotonic()
    watch, pids = await start(opt_in=True)

    def even():
        counts = watch.counts()
        return abs(counts.get(busy, 0) - counts.get(idle, 0)) <= 2

    await watch.until(even)
    out["to_balance"] = time.monotonic() - started
    out["moves_to_balance"] = (await termite.balancer_statistics()).moves
    out["counts"] = [watch.counts().get(busy, 0), watch.counts().get(idle, 0)]
    out["balanced"] = await watch.rate(window)
    out["balanced_cores"] = await _cores()
    settled = (await termite.balancer_statistics()).moves
    await watch.until(_never, steady)
    out["steady_moves"] = (await termite.balancer_statistics()).moves - settled
    await termite.supervisor.stop(balancer)
    await stop(pids)
    return out


def _measure(addresses, keyfile, window, steady):
    import termite

    with termite.Executor(addresses, keys=keyfile, interval=INTERVAL) as pool:
        return pool.node.run(_scenario, window, steady, timeout=CHILD_TIMEOUT)


def run(quick: bool = False) -> list[Result]:
    import termite

    window, steady = SIZES[quick]
    keyfile = termite.session_keys()
    with contextlib.ExitStack() as stack:
        words = [stack.enter_context(_server("termite.node", ["--port", "0", "--keys", keyfile], "termite node"))
                 for _ in range(2)]
        got = run_child(__name__, "_measure", [w[2] for w in words], keyfile, window, steady, timeout=CHILD_TIMEOUT)
    details = {"workers": WORKERS, "window_s": window, "counts_when_balanced": got["counts"]}
    return [
        Result("balance", f"{WORKERS} CPU-bound workers pinned to 1 of 2 nodes: units ({window:.0f} s)",
               got["pinned"], "/s", details=details),
        Result("balance", f"the same, balanced over 2 nodes: units ({window:.0f} s)", got["balanced"], "/s"),
        Result("balance", "balanced / pinned", got["balanced"] / got["pinned"], "", TARGET_SPEEDUP, ">=",
               details={"why": "the speedup is bounded by the cores the host gives the nodes (next rows)"}),
        Result("balance", "cores the 2 nodes got, pinned", got["pinned_cores"], ""),
        Result("balance", "cores the 2 nodes got, balanced (at most 2)", got["balanced_cores"], ""),
        Result("balance", f"time from imbalance to balanced ({INTERVAL:.0f} s meter interval)", got["to_balance"],
               "s", TARGET_BALANCED, "<"),
        Result("balance", f"moves to balance ({WORKERS // 2} needed)", got["moves_to_balance"], "",
               WORKERS // 2, "<="),
        Result("balance", f"moves in a {steady:.0f} s steady run after", got["steady_moves"], "",
               TARGET_STEADY_MOVES, "<="),
    ]
