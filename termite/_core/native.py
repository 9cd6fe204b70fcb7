"""Which kernel runs: the C one (termite/_core/_kernelcore.c) or the pure-Python one.

Chosen once, at import, by ``TERMITE_KERNEL`` (see termite/_core/kernel.py).
It sits below ids.py, whose ``Tag`` is the C kernel's when that kernel runs,
and imports nothing from termite.
"""

from __future__ import annotations

import os

__all__ = ["core", "KERNEL"]


def _load_core():
    """The C kernel's module, or None for the Python kernel."""
    choice = os.environ.get("TERMITE_KERNEL", "").strip().lower()
    if choice not in ("", "c", "python"):
        raise ValueError(
            f"TERMITE_KERNEL={choice!r} names no kernel: set TERMITE_KERNEL=c (the C kernel, the default "
            "when it is built) or TERMITE_KERNEL=python (the pure-Python kernel), or leave it unset"
        )
    if choice == "python":
        return None
    try:
        from termite._core import _kernelcore
    except ImportError:
        if choice == "c":
            raise ImportError(
                "TERMITE_KERNEL=c, but the C kernel (termite/_core/_kernelcore.c) is not built: install "
                "termite where a C compiler and Python's headers are, or unset TERMITE_KERNEL to run the "
                "Python kernel"
            ) from None
        return None
    return _kernelcore


#: The C kernel's module, or None when the Python kernel runs.
core = _load_core()
#: Which kernel runs in this interpreter: "c" or "python".
KERNEL = "python" if core is None else "c"
