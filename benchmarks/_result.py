"""The record every benchmark returns, and the helpers they share."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["Result", "run_child", "median", "ROOT"]

#: The repository root: children run from here so that ``benchmarks`` imports.
ROOT = Path(__file__).resolve().parent.parent

_COMPARE = {
    "<=": lambda value, target: value <= target,
    "<": lambda value, target: value < target,
    ">=": lambda value, target: value >= target,
    ">": lambda value, target: value > target,
}


@dataclass
class Result:
    """One measured figure.

    ``target`` with ``op`` (``"<="``, ``"<"``, ``">="``, ``">"``) is the goal the
    value must meet; without a target the figure is informational and ``ok``
    is None.  ``value`` None means the figure could not be measured here (the
    measure says why, e.g. a tool that is not installed), and ``ok`` is None.
    ``details`` holds anything else worth keeping (raw runs, sizes).
    """

    name: str
    measure: str
    value: float | None
    unit: str
    target: float | None = None
    op: str | None = None
    details: dict = field(default_factory=dict)
    ok: bool | None = field(init=False)

    def __post_init__(self):
        if self.target is None or self.value is None:
            self.ok = None
        else:
            self.ok = bool(_COMPARE[self.op](self.value, self.target))

    @property
    def target_text(self) -> str:
        if self.target is None:
            return ""
        return f"{self.op} {_fmt(self.target)} {self.unit}".rstrip()

    @property
    def value_text(self) -> str:
        if self.value is None:
            return "not measured"
        return f"{_fmt(self.value)} {self.unit}".rstrip()

    def to_dict(self) -> dict:
        return asdict(self)


def _fmt(x: float) -> str:
    if float(x).is_integer():
        return f"{int(x):,}"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.3g}" if abs(x) < 1 else f"{x:.2f}"


def median(values):
    return statistics.median(values)


_CHILD = """\
import importlib, json, sys
module, func, args = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
result = getattr(importlib.import_module(module), func)(*args)
sys.stdout.write("\\n@@RESULT@@" + json.dumps(result) + "\\n")
"""


def run_child(module: str, func: str, *args, timeout: float = 300):
    """Run ``module.func(*args)`` in a fresh Python process; return its JSON-able result.

    A fresh interpreter per run means runs share no heap, no allocator arenas
    and no collector state.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, module, func, json.dumps(list(args))],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"{module}.{func}{tuple(args)} failed in its subprocess (exit {proc.returncode}):\n{proc.stderr}"
        )
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("@@RESULT@@"):
            return json.loads(line[len("@@RESULT@@"):])
    raise RuntimeError(f"{module}.{func}{tuple(args)} printed no result:\n{proc.stdout}\n{proc.stderr}")
