"""Timers at scale: what 100,000 pending timers cost (termite/_core/timers.py).

In a fresh interpreter, one node:

- memory: RSS with 100,000 pending ``send_after`` timers (deadlines spread
  over a minute, one idle destination) minus the RSS before, per timer;
- the time to set them and to cancel them all, per timer;
- the time to fire 100,000 timers that fall due together, until their
  receiver has taken every message, per timer (for information);
- same-node ping-pong (the pingpong benchmark's send/receive) with 100,000
  timers pending and with none, in pairs of adjacent windows of one run, in
  round trips per second of CPU time: the median of the pairs' ratios.
  Pending timers must cost no work until one is due.
"""

from __future__ import annotations

import gc
import random
import time

from benchmarks._result import Result, median, run_child

SIZE = 100_000
QUICK_SIZE = 10_000
TARGET_BYTES = 250  # per pending timer
TARGET_SET_US = 10  # per send_after
TARGET_CANCEL_US = 5  # per cancel_timer
TARGET_RATIO = 0.95  # ping-pong with timers pending / without
WINDOW = 0.5  # seconds per ping-pong measurement
WINDOWS = 9  # pairs of windows (none pending, then all pending): the median of their ratios
QUICK = {"window": 0.2, "windows": 3}


async def _idle():
    from termite import receive

    await receive("never sent")


async def _count(reply_to, n):
    from termite import receive, send

    for _ in range(n):
        await receive()
    send(reply_to, "all fired")


async def _rate(server, window):
    from benchmarks.pingpong import CHUNK, _plain_trips

    # Round trips per second of this thread's CPU time: the other jobs of a
    # busy machine take wall time from a window, and would decide the ratio.
    done, start, cpu = 0, time.perf_counter(), time.thread_time()
    while time.perf_counter() - start < window:
        await _plain_trips(server, CHUNK)
        done += CHUNK
    return done / (time.thread_time() - cpu)


async def _main(size, window, windows):
    import psutil

    import termite
    from benchmarks.pingpong import _plain_trips, _pong
    from termite._core.timers import NodeTimers

    out = {"size": size}
    me = psutil.Process()
    rng = random.Random(19)
    delays = [60 + 60 * rng.random() for _ in range(size)]
    dest, msg = termite.spawn(_idle), ("timeout", 1)
    refs = [None] * size
    send_after, cancel_timer = termite.send_after, termite.cancel_timer
    await termite.sleep(0)

    # Memory and the time to set.
    gc.collect()
    rss_empty = me.memory_info().rss
    start = time.perf_counter()
    for i in range(size):
        refs[i] = send_after(delays[i], dest, msg)
    out["set_s"] = time.perf_counter() - start
    gc.collect()
    out["rss_empty"], out["rss_full"] = rss_empty, me.memory_info().rss
    out["pending"] = NodeTimers.of(termite._current().kernel).pending()

    # The time to cancel.
    start = time.perf_counter()
    for ref in refs:
        cancel_timer(ref)
    out["cancel_s"] = time.perf_counter() - start
    out["pending_after_cancel"] = NodeTimers.of(termite._current().kernel).pending()

    # The time to fire: all due at once, until the receiver has every message.
    counter = termite.spawn(_count, termite.self(), size)
    start = time.perf_counter()
    for i in range(size):
        send_after(0, counter, i)
    await termite.receive("all fired", timeout=120)
    out["fire_s"] = time.perf_counter() - start

    # Ping-pong without and with pending timers, in adjacent windows: the
    # machine's load drifts less within a pair than across the run.
    server = termite.spawn(_pong)
    await _plain_trips(server, 20_000)  # warm-up
    without, with_timers = [], []
    for _ in range(windows):
        without.append(await _rate(server, window))
        for i in range(size):
            refs[i] = send_after(delays[i], dest, msg)
        gc.collect()  # the collections the new timers bring come now, not in the window
        with_timers.append(await _rate(server, window))
        for ref in refs:
            cancel_timer(ref)
        gc.collect()
    out["rates_without"], out["rates_with"] = without, with_timers
    termite.kill(server)
    return out


def child(size: int, window: float, windows: int) -> dict:
    import termite

    return termite.run(_main, size, window, windows)


def run(quick: bool = False) -> list[Result]:
    size = QUICK_SIZE if quick else SIZE
    params = QUICK if quick else {"window": WINDOW, "windows": WINDOWS}
    out = run_child(__name__, "child", size, params["window"], params["windows"], timeout=600)
    if out["pending"] != size or out["pending_after_cancel"] != 0:
        raise RuntimeError(f"{out['pending']} timers pending of {size} set, {out['pending_after_cancel']} after cancelling")
    per_timer = (out["rss_full"] - out["rss_empty"]) / size
    ratios = [w / wo for w, wo in zip(out["rates_with"], out["rates_without"])]
    ratio = median(ratios)
    n = f"{size:,}"
    return [
        Result("timers", f"RSS per pending timer ({n} pending)", per_timer, "B",
               target=TARGET_BYTES, op="<=", details=out),
        Result("timers", f"set {n} (send_after), per timer", out["set_s"] / size * 1e6, "µs",
               target=TARGET_SET_US, op="<=", details={"total_s": out["set_s"]}),
        Result("timers", f"cancel {n} (cancel_timer), per timer", out["cancel_s"] / size * 1e6, "µs",
               target=TARGET_CANCEL_US, op="<=", details={"total_s": out["cancel_s"]}),
        Result("timers", f"fire {n} due at once, until received, per timer", out["fire_s"] / size * 1e6, "µs",
               details={"total_s": out["fire_s"]}),
        Result("timers", f"ping-pong with {n} timers pending / with none", ratio, "",
               target=TARGET_RATIO, op=">=",
               details={"ratios": ratios, "rates_without_per_s": out["rates_without"],
                        "rates_with_per_s": out["rates_with"]}),
    ]
