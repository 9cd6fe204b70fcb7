"""Monte Carlo pi, spread over the nodes of a cluster (the Cloud Haskell walkthrough's job).

    termite-launch cluster.yaml --run examples/pi.py          # on the cluster the launcher starts
    python examples/pi.py                                     # on two nodes of its own

Each task throws darts at the unit square on whichever node is least loaded
and counts those inside the quarter circle; the counts add up to pi.
"""

import os
import random
import sys
import time

import termite

TASKS = 64
DARTS = 1_000_000  # per task


def darts_inside(seed: int, darts: int = DARTS) -> int:
    """How many of ``darts`` random points fall inside the unit quarter circle."""
    rng = random.Random(seed)
    inside = 0
    for _ in range(darts):
        x, y = rng.random(), rng.random()
        inside += x * x + y * y <= 1.0
    return inside


def estimate(pool: termite.Executor, tasks: int = TASKS, darts: int = DARTS) -> float:
    inside = sum(pool.map(darts_inside, range(tasks), [darts] * tasks))
    return 4.0 * inside / (tasks * darts)


def main() -> None:
    tasks = int(sys.argv[1]) if len(sys.argv) > 1 else TASKS
    start = time.perf_counter()
    if os.environ.get("TERMITE_CLUSTER"):
        pool = termite.Executor()  # the cluster termite-launch started for this job
        nodes = None
    else:  # no cluster: start two local nodes for the example
        from termite.testing import NodeProcess

        # The nodes hold this script's session key, as the Executor's own node does.
        nodes = [NodeProcess("--keys", termite.session_keys()) for _ in range(2)]
        pool = termite.Executor([node.ref for node in nodes])
    try:
        with pool:
            pi = estimate(pool, tasks)
    finally:
        for node in nodes or ():
            node.stop()
    print(f"pi is about {pi:.4f} ({tasks} tasks of {DARTS:,} darts, {time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
