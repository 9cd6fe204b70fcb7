"""Benchmarks of termite against the Termite Scheme paper's figures.

Run them with ``python -m benchmarks [NAME ...] [--quick] [--json PATH]``.

Each benchmark is a module with a function ``run(quick: bool) -> list[Result]``.
To add one, write the module and register its function in ``BENCHMARKS``
below: the command line, the table and the JSON file pick it up from there.
"""

from __future__ import annotations

from benchmarks import balance, call_backlog, dispatch, faults, memory, migration, nodes, pingpong, pytest_plugin, ring, scale, timers
from benchmarks._result import Result

#: name -> function(quick) -> list[Result]; the order is the default run order.
BENCHMARKS = {
    "ring": ring.run,
    "pingpong": pingpong.run,
    "memory": memory.run,
    "call-backlog": call_backlog.run,
    "timers": timers.run,
    "nodes-pingpong": nodes.run_pingpong,
    "nodes-stream": nodes.run_stream,
    "migration": migration.run,
    "dispatch": dispatch.run,
    "balance": balance.run,
    "pytest-plugin": pytest_plugin.run,
    "faults": faults.run,
    "scale": scale.run,
}

__all__ = ["BENCHMARKS", "Result"]
