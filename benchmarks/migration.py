"""Live migration between two nodes on this host: A -> B -> A, over and over.

A process on node A carries a few locals (a dict of 10 entries, a counter,
a pid) and migrates to node B and back ``count`` times after a warm-up.  It
takes ``time.monotonic()`` just before ``await migrate(B)`` on A, right after
it returns on B, and after ``await migrate(A)`` returns on A; processes on one
host share CLOCK_MONOTONIC, so the stamps compare across the two nodes.  One
migration is A -> B (first stamp to second); the round trip is A -> B -> A,
both stamps taken on A.  Medians are reported.  The continuation's size is
that of an equivalent chain captured on A, suspended at its first migrate.

Node B is ``python -m termite.node`` with the repository root on its path (the
process body travels by reference to this module); node A is a child running
``termite.run``.  Loopback only, no CURVE.
"""

from __future__ import annotations

import time

from benchmarks._result import Result, median, run_child
from benchmarks.nodes import _server

SIZES = {False: (200, 20), True: (20, 5)}  # quick -> (round trips, warm-up)
TARGET_ONE = 5.0  # ms, median A -> B
TARGET_ROUND = 10.0  # ms, median A -> B -> A
CHILD_TIMEOUT = 120  # seconds for node A's whole run
WAIT = 10  # seconds any one round may take


async def _traveller(reply_to, home, away, rounds):
    """Migrates A -> B -> A ``rounds`` times; after each round sends where it was and its stamps to ``reply_to``."""
    import termite
    from termite import migrate, send

    state = {f"key{i}": i * i for i in range(10)}
    me = termite.self()
    for count in range(1, rounds + 1):  # the counter
        t0 = time.monotonic()
        await migrate(away)
        t1 = time.monotonic()
        there = termite.current_node()
        await migrate(home)
        t2 = time.monotonic()
        state["key0"] = count
        send(reply_to, (me, count, there, t0, t1, t2))


def _continuation_size(me, home, away) -> int:
    """Bytes of an equivalent ``_traveller`` captured at its first migrate (driven by hand, never resumed)."""
    from termite._move.continuation import abandon, capture

    coro = _traveller(me, home, away, 1)
    coro.send(None)  # runs up to the migrate trap and yields the request
    try:
        return len(capture(coro))
    finally:
        abandon(coro)


async def _drive(host, port, count, warmup):
    import termite
    from termite import receive, spawn

    me = termite.self()
    home = termite.current_node()
    away = await termite.connect(host, port, timeout=WAIT)
    size = _continuation_size(me, home, away)
    pid = spawn(_traveller, me, home, away, warmup + count)
    stamps = []
    for i in range(warmup + count):
        who, n, there, t0, t1, t2 = await receive(timeout=WAIT)
        if who != pid or n != i + 1 or there != away:
            raise RuntimeError(f"round {i + 1}: got {(who, n, there)} from {pid}, expected it on {away}")
        if i >= warmup:
            stamps.append((t0, t1, t2))
    return {"stamps": stamps, "size": size}


def node_a(host, port, count, warmup):
    """Run node A in this (child) process until the measurement is done."""
    import termite

    return termite.run(_drive, host, port, count, warmup, network=termite.Network(insecure=True))


def run(quick: bool = False) -> list[Result]:
    count, warmup = SIZES[quick]
    with _server("termite.node", ["--port", "0", "--insecure"], "termite node") as words:
        host, port = words[2].rsplit(":", 1)
        got = run_child(__name__, "node_a", host, int(port), count, warmup, timeout=CHILD_TIMEOUT)
    ms = [[1000 * (b - a) for a, b in ((t0, t1), (t1, t2), (t0, t2))] for t0, t1, t2 in got["stamps"]]
    there, back, rounds = (sorted(col) for col in zip(*ms))
    how = f"median of {count}"
    return [
        Result("migration", f"one migration A -> B ({how})", median(there), "ms", TARGET_ONE, "<=",
               details={"p90": there[int(0.9 * len(there))], "max": there[-1]}),
        Result("migration", f"one migration B -> A ({how})", median(back), "ms",
               details={"p90": back[int(0.9 * len(back))], "max": back[-1]}),
        Result("migration", f"round trip A -> B -> A ({how})", median(rounds), "ms", TARGET_ROUND, "<=",
               details={"p90": rounds[int(0.9 * len(rounds))], "max": rounds[-1]}),
        Result("migration", "continuation size (dict of 10, counter, pid)", got["size"], "bytes"),
    ]
