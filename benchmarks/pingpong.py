"""The ping-pong benchmark (Termite paper, section 7.2).

Two processes on one node send a message back and forth: ping sends
``(self(), n)`` and pong replies with ``n``, using plain send and receive.
The figure is round trips per second over about a second of exchanges,
after a warm-up.  The same exchange through ``termite.call`` (the paper's
``!?``) is measured too, for information.
"""

from __future__ import annotations

import time

import termite
from termite import call, receive, send, spawn

from benchmarks._result import Result, median

TARGET = 300_000  # round trips per second, on a 2-core machine
MIN_TRIPS = 300_000
WINDOW = 1.0  # seconds per measurement
WINDOWS = 3  # the median of these is reported
CHUNK = 10_000
WARMUP = 20_000
QUICK = {"window": 0.2, "min_trips": 10_000, "windows": 1, "warmup": 2_000}


async def _pong():
    while True:
        sender, n = await receive()
        send(sender, n)


async def _echo():
    while True:
        sender, tag, n = await receive()
        send(sender, (tag, n))


async def _plain_trips(server, count):
    me = termite.self()
    for i in range(count):
        send(server, (me, i))
        await receive()


async def _call_trips(server, count):
    for i in range(count):
        await call(server, i)


async def _measure(trips, server_fn, window, min_trips, windows, warmup):
    server = spawn(server_fn)
    await trips(server, warmup)
    rates = []
    counts = []
    for _ in range(windows):
        done = 0
        start = time.perf_counter()
        while True:
            await trips(server, CHUNK)
            done += CHUNK
            elapsed = time.perf_counter() - start
            if elapsed >= window and done >= min_trips:
                break
        rates.append(done / elapsed)
        counts.append(done)
    termite.kill(server)
    return rates, counts


def run(quick: bool = False) -> list[Result]:
    params = QUICK if quick else {"window": WINDOW, "min_trips": MIN_TRIPS, "windows": WINDOWS, "warmup": WARMUP}
    results = []
    for label, trips, server, target in (
        ("send/receive", _plain_trips, _pong, TARGET),
        ("termite.call", _call_trips, _echo, None),
    ):
        rates, counts = termite.run(
            _measure, trips, server, params["window"], params["min_trips"], params["windows"], params["warmup"]
        )
        results.append(
            Result(
                "pingpong",
                f"{label} round trips" + (f" (median of {len(rates)} × {params['window']:g} s)" if len(rates) > 1 else ""),
                median(rates),
                "/s",
                target=target,
                op=">=" if target is not None else None,
                details={"rates_per_s": rates, "round_trips": counts, "us_per_round_trip": 1e6 / median(rates)},
            )
        )
    return results
