"""The ping-pong benchmark (Termite paper, section 7.2).

Two processes on one node send a message back and forth: ping sends
``(self(), n)`` and pong replies with ``n``, using plain send and receive.
The figure is round trips per second over about a second of exchanges,
after a warm-up.  The same exchange through ``termite.call`` (the paper's
``!?``) is measured too, against the plain round trip.

Erlang/OTP runs the same two exchanges (benchmarks/erlang/pingpong.erl) in
the same run, with the same windows, each in a fresh VM: plain send and
receive, and a call as ``gen_server:call`` makes it (monitor, tagged request,
selective receive of the reply, demonitor), which is what ``termite.call``
does.  The table shows Erlang's medians and termite / Erlang of the rates.
That needs ``erl`` (``apt-get install erlang-base``, see
benchmarks/_erlang.py); without it the Erlang lines say so and termite's
figures still run.
"""

from __future__ import annotations

import contextlib
import time

import termite
from termite import call, receive, send, spawn

from benchmarks import _erlang
from benchmarks._result import Result, median

TARGET = 300_000  # round trips per second, on a 2-core machine
TARGET_VS_ERLANG = 0.5  # termite's send/receive rate / Erlang's (issue 20)
TARGET_CALL = 1.5  # a call's round trip time / a send/receive round trip's (issue 20)
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
    how = f" (median of {params['windows']} × {params['window']:g} s)" if params["windows"] > 1 else ""
    erlang_missing = _erlang.missing()
    results = []
    rate = {}  # (side, mode) -> median round trips per second
    with contextlib.ExitStack() as stack:
        erlang = None if erlang_missing else stack.enter_context(_erlang.compiled("pingpong"))
        for mode, label, trips, server, target in (
            ("plain", "send/receive", _plain_trips, _pong, TARGET),
            ("call", "termite.call", _call_trips, _echo, None),
        ):
            rates, counts = termite.run(
                _measure, trips, server, params["window"], params["min_trips"], params["windows"], params["warmup"]
            )
            rate["termite", mode] = median(rates)
            results.append(
                Result(
                    "pingpong",
                    f"{label} round trips{how}",
                    median(rates),
                    "/s",
                    target=target,
                    op=">=" if target is not None else None,
                    details={"rates_per_s": rates, "round_trips": counts, "us_per_round_trip": 1e6 / median(rates)},
                )
            )
            erlang_label = "send/receive" if mode == "plain" else "call"
            vs = f"termite / Erlang, rate: {erlang_label}"
            vs_target = {"target": TARGET_VS_ERLANG, "op": ">="} if mode == "plain" else {}
            if erlang is None:
                results.append(Result("pingpong", f"Erlang, {erlang_label}: {erlang_missing}", None, "/s"))
                results.append(Result("pingpong", f"{vs}: {erlang_missing}", None, "", **vs_target))
                continue
            figures = erlang.run("pingpong", mode, round(params["window"] * 1e6), params["min_trips"],
                                 params["windows"], params["warmup"], CHUNK)
            rates, counts = _erlang.as_list(figures["rates"]), _erlang.as_list(figures["round_trips"])
            rate["erlang", mode] = median(rates)
            results.append(
                Result("pingpong", f"Erlang, {erlang_label}{how}", median(rates), "/s",
                       details={"rates_per_s": rates, "round_trips": counts, "us_per_round_trip": 1e6 / median(rates),
                                "schedulers": figures["schedulers"]})
            )
            results.append(Result("pingpong", vs, rate["termite", mode] / rate["erlang", mode], "", **vs_target))
    results.append(
        Result("pingpong", "termite: call / send-receive, time per trip",
               rate["termite", "plain"] / rate["termite", "call"], "", target=TARGET_CALL, op="<=")
    )
    if erlang is not None:
        results.append(
            Result("pingpong", "Erlang: call / send-receive, time per trip",
                   rate["erlang", "plain"] / rate["erlang", "call"], "")
        )
    return results
