"""Rebalancing by migration: CPU-bound workers started on one node spread themselves over the cluster.

    python examples/balance.py                                 # on two nodes of its own
    termite-launch cluster.yaml --run examples/balance.py      # on the cluster the launcher starts

A supervisor starts 20 CPU-bound, long-running workers, all on one node (a
placement that picks the first node).  They opt in to balancing
(``ChildSpec(balance=True)``) and pass a safe point, ``termite.checkpoint()``,
between slices of work.  The cluster's balancer sees one node loaded and the
other idle, and asks half of them to move: each migrates itself at its next
checkpoint, keeping its pid, its locals and its supervisor's link.  Then a
node is killed, and the workers that were on it are restarted by their
supervisor on the node still there (placement, asked at every restart).
On a cluster from ``termite-launch`` the workers spread over all of its
nodes, and no node is killed.
"""

import collections
import os
import sys
import time

import termite
from termite import ChildSpec, Pid, NodeRef, supervisor

WORKERS = 20
INTERVAL = 0.5  # seconds between load reports, and between the balancer's looks
WAIT = 30.0  # seconds: only a run that goes wrong waits this long


async def crunch(report_to: Pid, n: int):
    """A CPU-bound worker: 2 ms slices of arithmetic, a safe point after each; reports where it is."""
    termite.send(report_to, ("started", n, termite.self(), termite.current_node()))
    total = 0
    while True:
        end = time.thread_time() + 0.002
        while time.thread_time() < end:
            total += 1
        moved = await termite.checkpoint()  # the only place it may move: it moves itself
        if moved is not None:
            termite.send(report_to, ("moved", n, termite.self(), moved))
        await termite.sleep(0)


def first_node(loads):
    """A placement: every worker on one node while it is there (the imbalance to undo)."""
    return min(loads, key=lambda node: (node.host, node.port))


def show(title, where):
    counts = collections.Counter(where.values())
    print(f"{title}: " + ", ".join(f"{node.host}:{node.port} {counts[node]}" for node in sorted(counts, key=str)))


async def wait_for(where, done, what):
    """Take the workers' reports into ``where`` (worker -> node) until ``done()``."""
    deadline = time.monotonic() + WAIT
    while not done():
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"{what} took more than {WAIT:.0f} s")
        msg = await termite.receive((str, int, Pid, NodeRef), timeout=left, default=None)
        if msg is not None:
            where[msg[1]] = msg[3]


async def main(crunch, victim_of):
    me = termite.self()
    children = [ChildSpec(f"worker-{n}", crunch, args=(me, n), balance=True) for n in range(WORKERS)]
    sup = supervisor.start(children, intensity=2 * WORKERS, period=10.0, placement=first_node)
    where = {}
    await wait_for(where, lambda: len(where) == WORKERS, "starting the workers")
    show("before", where)

    started = time.monotonic()
    balancer = await termite.start_balancer(interval=INTERVAL)
    nodes = await termite.loads()

    def even():
        counts = collections.Counter(where.values())
        return max(counts[node] for node in nodes) - min(counts[node] for node in nodes) <= 2 * max(1, len(nodes) - 1)

    await wait_for(where, even, "balancing")
    while (msg := await termite.receive((str, int, Pid, NodeRef), timeout=0, default=None)) is not None:
        where[msg[1]] = msg[3]  # moves already reported
    stats = await termite.balancer_statistics()
    show(f"after {time.monotonic() - started:.1f} s, {stats.moves} moves", where)

    victim = victim_of(where)
    if victim is not None:
        lost = [n for n, node in where.items() if node == victim.ref]
        victim.kill()
        print(f"killed {victim.ref.host}:{victim.ref.port}, which ran {len(lost)} workers")
        await wait_for(where, lambda: all(node != victim.ref for node in where.values()), "failing over")
        show("after the failover", where)
    await supervisor.stop(sup)
    await supervisor.stop(balancer)


def run() -> None:
    # The workers must be importable on the nodes: as this file's module, which ship sends them.
    import balance

    if os.environ.get("TERMITE_CLUSTER"):
        pool, started = termite.Executor(ship=["balance"], interval=INTERVAL), []  # the cluster termite-launch started
    else:  # no cluster: start two local nodes, holding this script's session key
        from termite.testing import NodeProcess

        started = [NodeProcess("--keys", termite.session_keys()) for _ in range(2)]
        pool = termite.Executor([node.ref for node in started], ship=["balance"], interval=INTERVAL)

    def victim_of(where):
        """The local node that runs the most workers (none on a launched cluster)."""
        counts = collections.Counter(where.values())
        return max(started, key=lambda node: counts[node.ref], default=None)

    try:
        with pool:
            pool.node.run(main, balance.crunch, victim_of, timeout=3 * WAIT)
    finally:
        for node in started:
            node.stop()


if __name__ == "__main__":
    sys.exit(run())
