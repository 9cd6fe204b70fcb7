"""The ring benchmark (Termite paper, section 7.1).

A ring of N processes on one node passes a number round; each process
decrements it before passing it on.  A process that gets 0 relays 0 and
ends.  With seed 0 the 0 goes round once; with seed 1,000,000 and N = 250,000
the number goes round four times, then 0 goes round once more.

The main process builds the chain in reverse (each new process knows the
next one), sends the seed to the first, and is itself the closing link: it
forwards what it gets, decremented, until it gets 0.  The time covers
creating the processes as well as passing the messages, and each run is a
fresh interpreter so that runs share no heap.
"""

from __future__ import annotations

import time

from benchmarks._result import Result, median, run_child

SIZE = 250_000
QUICK_SIZE = 10_000
SEEDS = (0, 1_000_000)
TARGETS = {0: 2.0, 1_000_000: 3.0}  # seconds, on a 2-core machine
RUNS = 3


async def _link(next_pid):
    from termite import receive, send

    while True:
        n = await receive()
        if n == 0:
            send(next_pid, 0)
            return
        send(next_pid, n - 1)


async def _ring(size, seed):
    from termite import receive, send, spawn
    from termite import self as me

    nxt = me()
    for _ in range(size - 1):
        nxt = spawn(_link, nxt)
    built = time.perf_counter()
    send(nxt, seed)
    hops = 0  # messages the closing link got
    while True:
        n = await receive()
        hops += 1
        if n == 0:
            return hops, built
        send(nxt, n - 1)


def child(size: int, seed: int) -> dict:
    """One run, in a fresh interpreter: seconds from the first spawn to the 0 coming home."""
    import termite

    start = time.perf_counter()
    hops, built = termite.run(_ring, size, seed)
    end = time.perf_counter()
    return {"seconds": end - start, "create_s": built - start, "hops": hops}


def run(quick: bool = False) -> list[Result]:
    size = QUICK_SIZE if quick else SIZE
    runs = 1 if quick else RUNS
    results = []
    for seed in SEEDS:
        outcomes = [run_child(__name__, "child", size, seed) for _ in range(runs)]
        seconds = [o["seconds"] for o in outcomes]
        if seed % size == 0:  # then the 0 starts at the closing link and every process ends
            expected_hops = seed // size + 1
            if any(o["hops"] != expected_hops for o in outcomes):
                raise RuntimeError(f"ring of {size} with seed {seed}: the closing link got {outcomes}, "
                                   f"expected {expected_hops} messages")
        results.append(
            Result(
                "ring",
                f"{size:,} processes, seed {seed:,}" + (f" (median of {runs})" if runs > 1 else ""),
                median(seconds),
                "s",
                target=TARGETS[seed],
                op="<=",
                details={"processes": size, "seed": seed, "runs_s": seconds, "create_s": [o["create_s"] for o in outcomes], "messages": seed + size},
            )
        )
    return results
