"""How termite-launch ends: its exit statuses, and the signals that stop it.

The statuses follow the shell's conventions (``EPILOG``, shown by
``termite-launch --help``): a signal that stops the launcher gives 128 + its
number (130 for Ctrl-C's SIGINT, 143 for SIGTERM), and under ``--run`` the
job's own status is passed on when the job ended on its own.

``on_signals()`` makes SIGINT and SIGTERM raise :class:`Interrupted` (a
KeyboardInterrupt, so code that already stops on Ctrl-C stops on both), which
remembers the signal; ``held()`` keeps them from interrupting the stopping of
the nodes, which a second Ctrl-C would otherwise cut short, leaving nodes
behind (the stop is bounded: a node gets 10 s, then SIGKILL).
"""

from __future__ import annotations

import contextlib
import signal

__all__ = ["OK", "FAILED", "USAGE", "EPILOG", "Interrupted", "on_signals", "held", "job_status"]

OK = 0
FAILED = 1  # what was asked could not be done: the cluster did not start, is running already, is not running
USAGE = 2  # the command line or a file it names is wrong

EPILOG = """\
exit status:
  0    done: --init wrote the file, --detach started the cluster, --stop stopped it,
       --status found every node up, --attach was left with q (or the cluster stopped)
  1    not done: the cluster could not start, or runs already; --status, --attach: it
       does not run (--status: or a node is down); --init: the file is there already
  2    usage: a bad option, cluster file or key file, or a --run script that cannot be read
  N    --run: the job's own exit status, when it ended on its own (128+S if signal S ended it)
  130  stopped by Ctrl-C (SIGINT)
  143  stopped by SIGTERM
Stopped by a signal, termite-launch first stops the nodes it started (--attach and
--status start none: the cluster runs on).
"""

_STOPPING = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; ``status`` is the exit status it calls for (128 + its number)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def status(self) -> int:
        return 128 + self.signum


def _raise(signum, frame):
    raise Interrupted(signum)


def on_signals() -> None:
    """From now on SIGINT and SIGTERM raise Interrupted in the main thread."""
    for signum in _STOPPING:
        signal.signal(signum, _raise)


@contextlib.contextmanager
def held(tell=lambda: None):
    """SIGINT and SIGTERM do not interrupt what runs inside (stopping the nodes): each calls
    ``tell()`` instead.  The status stays what it was: the first signal's, or the job's."""
    before = {signum: signal.signal(signum, lambda signum, frame: tell()) for signum in _STOPPING}
    try:
        yield
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


def job_status(returncode: int) -> int:
    """A job's Popen returncode as the shell gives it: -N (signal N) is 128 + N."""
    return 128 - returncode if returncode < 0 else returncode
