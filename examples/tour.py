"""A tour of the Termite paper's examples, run one after the other.

    python examples/tour.py

Each example is a short file in examples/ that runs on its own too
(python examples/hello.py); read it next to the output below.
"""

import ast
import runpy
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent

EXAMPLES = [
    "hello",
    "pong_server",
    "selective",
    "pattern_pong",
    "timeouts",
    "rpc",
    "cell",
    "exceptions",
    "square_server",
    "futures",
    "migration",
    "continuations",
    "kv_server",
    "supervisor",
]


def title(path: Path) -> str:
    """The first line of the example's docstring, read without running it."""
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or path.stem
    return doc.splitlines()[0]


def main() -> int:
    failed = []
    start = time.perf_counter()
    for name in EXAMPLES:
        path = HERE / f"{name}.py"
        print(f"\n== examples/{name}.py: {title(path)}")
        sys.stdout.flush()
        try:
            runpy.run_path(str(path), run_name="__main__")
        except Exception:  # report it, and go on with the tour
            traceback.print_exc()
            failed.append(name)
        sys.stdout.flush()
    elapsed = time.perf_counter() - start
    print(f"\n{len(EXAMPLES) - len(failed)} of {len(EXAMPLES)} examples ran in {elapsed:.1f} s.", end=" ")
    if failed:
        print("Failed:", ", ".join(failed))
        return 1
    print("Run one alone with: python examples/NAME.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
