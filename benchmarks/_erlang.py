"""Erlang/OTP beside termite: compile and run the programs in benchmarks/erlang/.

The ring and ping-pong benchmarks run the same programs in Erlang in the
same run, so that their ratio to termite holds on whatever machine runs
them.  This needs ``erl`` and ``erlc`` on the PATH; on Debian or Ubuntu::

    apt-get install erlang-base

Without them, ``missing()`` says so and the benchmarks print that reason in
place of Erlang's figures; termite's own figures still run.

Each program is compiled with ``erlc`` into a temporary folder (not run with
``escript``, which interprets a script unless it says ``-mode(compile)``),
and each run is a fresh ``erl -noshell`` VM with default flags (one scheduler
per core), so that runs share no heap, as termite's runs do.  The program
times itself with ``erlang:monotonic_time`` (the VM's start is not counted)
and prints one line::

    @@ERLANG@@ key=value key=value ...

where a value is a number or a comma-separated list of numbers.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["INSTALL", "SOURCES", "Erlang", "missing", "compiled", "parse", "as_list"]

#: Where the .erl programs live.
SOURCES = Path(__file__).resolve().parent / "erlang"
#: What to say when Erlang is not there.
INSTALL = "erl not installed (apt-get install erlang-base)"
#: Erlang's default limit on processes; a run that needs more raises it.
DEFAULT_PROCESS_LIMIT = 262_144
_MARK = "@@ERLANG@@"


def missing() -> str | None:
    """Why Erlang cannot run here, or None if ``erl`` and ``erlc`` are on the PATH."""
    if shutil.which("erl") is None or shutil.which("erlc") is None:
        return INSTALL
    return None


def parse(line: str) -> dict:
    """The figures on one ``@@ERLANG@@ key=value ...`` line."""
    if not line.startswith(_MARK):
        raise ValueError(f"not an Erlang result line: {line!r}")
    figures = {}
    for word in line[len(_MARK):].split():
        key, sep, text = word.partition("=")
        if not sep or not text:
            raise ValueError(f"{word!r} in Erlang's result line {line!r} is not key=value")
        values = [_number(part) for part in text.split(",")]
        figures[key] = values if "," in text else values[0]
    return figures


def as_list(value) -> list:
    """A figure that may be one number or a list (a one-element list prints as a number), as a list."""
    return value if isinstance(value, list) else [value]


def _number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return float(text)


class Erlang:
    """The compiled programs, in ``folder``; ``run`` starts one VM per run."""

    def __init__(self, folder: Path):
        self.folder = folder

    def run(self, module: str, *args, processes: int = 0, timeout: float = 300) -> dict:
        """Run ``module:main(args)`` in a fresh VM; return its figures.

        ``processes`` is how many processes the program will hold at once: above
        Erlang's default limit, the VM is started with a higher one (``+P``).
        """
        flags = ["+P", str(2 * processes)] if processes + 1000 > DEFAULT_PROCESS_LIMIT else []
        command = ["erl", "-noshell", *flags, "-pa", str(self.folder), "-run", module, "main", *map(str, args)]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        lines = [line for line in proc.stdout.splitlines() if line.startswith(_MARK)]
        if proc.returncode != 0 or len(lines) != 1:
            raise RuntimeError(
                f"Erlang's {module} failed (exit {proc.returncode}): {' '.join(command)}\n{proc.stdout}{proc.stderr}"
            )
        return parse(lines[0])


@contextlib.contextmanager
def compiled(*modules: str):
    """Compile ``benchmarks/erlang/<module>.erl`` into a temporary folder; yield an ``Erlang``."""
    with tempfile.TemporaryDirectory(prefix="termite-erl-") as folder:
        sources = [str(SOURCES / f"{module}.erl") for module in modules]
        proc = subprocess.run(["erlc", "-o", folder, *sources], capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"erlc failed on {', '.join(sources)}:\n{proc.stdout}{proc.stderr}")
        yield Erlang(Path(folder))
