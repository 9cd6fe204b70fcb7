"""Memory per process: RSS of a node with many idle processes, minus the empty node's.

Each process is blocked in ``await receive()``.  The figure is taken in a
fresh interpreter, after ``gc.collect()``, with psutil.
"""

from __future__ import annotations

import gc

from benchmarks._result import Result, run_child

SIZE = 250_000
QUICK_SIZE = 10_000
# Decimal units, the stricter reading: 1 MB = 10**6 bytes, 1.2 KB = 1,200 bytes.
TARGET_TOTAL_MB = 300
TARGET_PER_PROCESS = 1_200  # bytes

_parked = 0


async def _idle():
    from termite import receive

    global _parked
    _parked += 1
    await receive()


async def _main(size):
    import psutil

    import termite

    me = psutil.Process()
    gc.collect()
    empty = me.memory_info().rss
    for _ in range(size):
        termite.spawn(_idle)
    await termite.sleep(0)  # back of the ready queue: every process has run to its receive
    gc.collect()
    full = me.memory_info().rss
    return {"size": size, "parked": _parked, "rss_empty": empty, "rss_full": full}


def child(size: int) -> dict:
    import termite

    return termite.run(_main, size)


def run(quick: bool = False) -> list[Result]:
    size = QUICK_SIZE if quick else SIZE
    out = run_child(__name__, "child", size)
    if out["parked"] != size:
        raise RuntimeError(f"only {out['parked']} of {size} processes reached their receive")
    delta = out["rss_full"] - out["rss_empty"]
    details = dict(out, rss_delta=delta)
    return [
        Result("memory", f"RSS of {size:,} idle processes", delta / 1e6, "MB",
               target=TARGET_TOTAL_MB, op="<=", details=details),
        Result("memory", "RSS per idle process", delta / size, "B",
               target=TARGET_PER_PROCESS, op="<=", details=details),
    ]
