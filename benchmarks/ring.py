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

Erlang/OTP runs the same ring (benchmarks/erlang/ring.erl) in the same run,
each run a fresh VM, taking turns with termite's runs so that a busy spell of
the machine does not favour one side; the table shows Erlang's medians and
termite / Erlang.  That needs ``erl`` (``apt-get install erlang-base``, see
benchmarks/_erlang.py); without it the Erlang lines say so and termite's
figures still run.
"""

from __future__ import annotations

import contextlib
import time

from benchmarks import _erlang
from benchmarks._result import Result, median, run_child

SIZE = 250_000
QUICK_SIZE = 10_000
SEEDS = (0, 1_000_000)
TARGETS = {0: 2.0, 1_000_000: 3.0}  # seconds, on a 2-core machine
TARGET_VS_ERLANG = 1.0  # termite's time / Erlang's time, for both seeds (issue 20)
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
    erlang_missing = _erlang.missing()
    with contextlib.ExitStack() as stack:
        erlang = None if erlang_missing else stack.enter_context(_erlang.compiled("ring"))
        return [result for seed in SEEDS for result in _run_seed(size, seed, runs, erlang, erlang_missing)]


def _run_seed(size, seed, runs, erlang, erlang_missing) -> list[Result]:
    outcomes, erlang_outcomes = [], []
    for _ in range(runs):  # the two sides take turns
        outcomes.append(run_child(__name__, "child", size, seed))
        if erlang is not None:
            erlang_outcomes.append(erlang.run("ring", size, seed, processes=size))
    if seed % size == 0:  # then the 0 starts at the closing link and every process ends
        expected_hops = seed // size + 1
        for side, got in (("termite", outcomes), ("Erlang", erlang_outcomes)):
            if any(o["hops"] != expected_hops for o in got):
                raise RuntimeError(f"{side}'s ring of {size} with seed {seed}: the closing link got {got}, "
                                   f"expected {expected_hops} messages")
    what = f"{size:,} processes, seed {seed:,}"
    how = f" (median of {runs})" if runs > 1 else ""
    seconds = [o["seconds"] for o in outcomes]
    termite_result = Result(
        "ring",
        what + how,
        median(seconds),
        "s",
        target=TARGETS[seed],
        op="<=",
        details={"processes": size, "seed": seed, "runs_s": seconds, "create_s": [o["create_s"] for o in outcomes],
                 "messages": seed + size},
    )
    vs = f"termite / Erlang, time: seed {seed:,}"
    if erlang is None:
        return [termite_result, Result("ring", f"Erlang, {what}: {erlang_missing}", None, "s"),
                Result("ring", f"{vs}: {erlang_missing}", None, "", target=TARGET_VS_ERLANG, op="<=")]
    erlang_seconds = [o["seconds"] for o in erlang_outcomes]
    return [
        termite_result,
        Result(
            "ring",
            f"Erlang, same ring, seed {seed:,}{how}",
            median(erlang_seconds),
            "s",
            details={"runs_s": erlang_seconds, "create_s": [o["create_s"] for o in erlang_outcomes],
                     "schedulers": erlang_outcomes[0]["schedulers"]},
        ),
        Result("ring", vs, termite_result.value / median(erlang_seconds), "", target=TARGET_VS_ERLANG, op="<="),
    ]
