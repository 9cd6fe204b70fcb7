"""Progress bars for a job's futures: ``termite.progress(futures)`` and ``Executor.map(..., progress=True)``.

    with termite.Executor(cluster="cluster.yaml") as pool:
        squares = list(pool.map(square, range(400), progress=True))
        futures = [pool.submit(simulate, seed) for seed in range(100)]
        termite.progress(futures)                       # returns when all are done
        for future in pool.as_completed(futures, progress="simulate"):
            ...                                         # in the order they finish

A bar counts the job's tasks done out of its total, and how many of them
failed (raised, could not travel, were cancelled); it follows the futures,
not the caller: it moves while the caller waits on something else and ends
when the last task does.  Where it is drawn:

| stderr is | what is shown |
| --- | --- |
| a terminal (or Jupyter) | a live rich bar per job (jobs at once share one display), with elapsed time and time left |
| anything else: a pipe, a file, CI, ``TERM=dumb`` | no control codes: a plain line every ``PLAIN_EVERY`` seconds and one when the job ends |

A plain line reads ``square: 120/400 done, 2 failed, 12.0 s``.  The bar goes
to stderr, as tqdm's does, so that ``python job.py > results.txt`` keeps
results and bar apart; while it is live, prints to stdout (when that is the
same terminal) appear above it.

Futures are ``concurrent.futures.Future`` objects (what ``Executor.submit``
returns) or, with ``node=``, termite futures: the pids ``termite.future`` and
``termite.dispatch_async`` return, each followed by a process of that node
that touches it.  A bar blocks no node: counting happens in the futures'
done callbacks, drawing on a thread of its own.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import sys
import threading
import time

from rich.console import Console
from rich.errors import LiveError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
from rich.progress import TimeRemainingColumn
from rich.text import Text

from termite._core.future import touch
from termite._core.ids import Pid
from termite._core.kernel import current_task
from termite._core.spawn import spawn
from termite._runtime.node import Node

__all__ = ["PLAIN_EVERY", "Bar", "as_completed", "progress"]

#: Seconds between the plain lines of a bar that is not drawn on a terminal.
PLAIN_EVERY = 10.0

#: What ``termite.progress`` takes, said in its errors.
TAKES = (
    "termite.progress takes concurrent.futures.Future objects (what Executor.submit returns), or the pids "
    "that termite.future and termite.dispatch_async return together with node=the termite.Node to follow them from"
)


AS_COMPLETED_TAKES = (
    "as_completed takes concurrent.futures.Future objects (what Executor.submit returns); for termite futures "
    "(pids) use termite.progress(pids, node=...) and touch them"
)


def _console() -> Console:
    return Console(stderr=True)


def _live(console: Console) -> bool:
    """Whether a live bar may be drawn: stderr is a terminal that moves its cursor, or Jupyter.

    stderr itself must be a terminal: FORCE_COLOR (set in CI for coloured logs)
    makes rich treat a pipe as one, and cursor moves in a log are garbage.
    """
    try:
        tty = sys.stderr.isatty()
    except (AttributeError, ValueError):  # None (pythonw), or closed
        tty = False
    return console.is_jupyter or (tty and console.is_terminal and not console.is_dumb_terminal)


def _failure(future: concurrent.futures.Future) -> int:
    """1 if ``future`` failed (raised or was cancelled), else 0: how a bar counts a future that is done."""
    return 1 if future.cancelled() or future.exception() is not None else 0


class Bar:
    """One job's progress: ``total`` tasks, counted as their futures finish.

    ``watch(future, tasks, failures)`` counts ``tasks`` done when ``future`` is,
    ``failures(future)`` of them failed; ``start()`` shows it; ``close()``
    ends it early (the caller stopped) and returns once its last state is
    shown.  It ends by itself when every task is done.
    """

    def __init__(self, total: int, description: str = "tasks"):
        self.total, self.description = total, description
        self.done = self.failed = 0
        self._lock = threading.Lock()
        self._watched: list[tuple] = []  # (future, tasks, failures)
        self._counted: set[concurrent.futures.Future] = set()
        self._over = threading.Event()
        self._started = time.monotonic()
        self._follower: threading.Thread | None = None
        self._task = None  # its row in the shared display, once shown there

    def watch(self, future: concurrent.futures.Future, tasks: int = 1, failures=_failure) -> None:
        self._watched.append((future, tasks, failures))
        future.add_done_callback(lambda future: self._count(future, tasks, failures))

    def _count(self, future, tasks: int, failures) -> None:
        # On whatever thread finished the future (a node's): count, draw nothing.  Once per
        # future: close() counts those done whose callbacks have not run yet.
        bad = failures(future)
        with self._lock:
            if future in self._counted:
                return
            self._counted.add(future)
            self.done += tasks
            self.failed += bad
            if self.done >= self.total:
                self._over.set()

    def start(self) -> "Bar":
        if self.done >= self.total:
            self._over.set()
        _DISPLAY.show(self)  # or not: then plain lines
        self._follower = threading.Thread(target=self._follow, name="termite-progress", daemon=True)
        self._follower.start()
        return self

    def close(self) -> None:
        # A future's waiters wake before its callbacks run: whoever saw it done
        # and closes the bar must not see it drawn as not done.
        for future, tasks, failures in self._watched:
            if future.done():
                self._count(future, tasks, failures)
        self._over.set()
        follower = self._follower
        if follower is not None and follower is not threading.current_thread():
            follower.join(5.0)  # bounded: its last drawing is a write to the terminal

    def counts(self) -> tuple[int, int]:
        with self._lock:
            return self.done, self.failed

    def line(self) -> str:
        done, bad = self.counts()
        return f"{self.description}: {done}/{self.total} done, {bad} failed, {time.monotonic() - self._started:.1f} s"

    def _follow(self) -> None:
        if self._task is not None:
            self._over.wait()
            _DISPLAY.end(self)
            return
        while not self._over.wait(PLAIN_EVERY):
            _plain(self.line())
        _plain(self.line())


def _plain(text: str) -> None:
    try:
        print(text, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass  # stderr closed or gone: a bar is not worth an error


class _FailedColumn(ProgressColumn):
    def render(self, task) -> Text:
        failures = task.fields.get("failed", 0)
        return Text(f"{failures} failed", style="bold red" if failures else "dim")


class _Progress(Progress):
    """rich's Progress, its rows brought up to date from the bars' counts as it draws."""

    def __init__(self, display: "_Display", console: Console):
        self._display = display  # before rich's __init__, which draws once
        super().__init__(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            _FailedColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            refresh_per_second=4,
            # Prints to stdout go above the bar only when stdout is this terminal too:
            # redirected to a file, they stay there.
            redirect_stdout=sys.stdout is not None and sys.stdout.isatty(),
        )

    def get_renderables(self):
        self._display.sync()
        yield from super().get_renderables()


class _Display:
    """The live display that the bars of jobs running at once share: rich draws one at a time per terminal.

    ``_lock`` orders its starts and stops; drawing (rich's refresh thread,
    which holds rich's own locks) never takes it, so the two cannot wait on
    each other.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._progress: _Progress | None = None
        self._rows: tuple[Bar, ...] = ()  # the bars drawn live, replaced whole: read without the lock

    def show(self, bar: Bar) -> bool:
        """Give ``bar`` a row, starting the display if it is not running; False if it cannot be drawn live."""
        with self._lock:
            if self._progress is None:
                # Only now: while the display runs, sys.stderr is rich's proxy, no terminal.
                console = _console()
                if not _live(console):
                    return False
                progress = _Progress(self, console)
                try:
                    progress.start()
                except LiveError:
                    return False  # another live display holds the terminal (rich 13): plain lines then
                self._progress = progress
            done, bad = bar.counts()
            bar._task = self._progress.add_task(bar.description, total=bar.total, completed=done, failed=bad)
            self._rows += (bar,)
            return True

    def sync(self) -> None:
        progress = self._progress
        if progress is None:
            return
        for bar in self._rows:
            done, bad = bar.counts()
            progress.update(bar._task, completed=done, failed=bad)

    def end(self, bar: Bar) -> None:
        """``bar`` is over: its row keeps its last counts; with the last bar the display stops, drawn once more."""
        with self._lock:
            if bar not in self._rows:
                return
            self.sync()
            self._rows = tuple(row for row in self._rows if row is not bar)
            if self._rows:
                self._progress.refresh()  # its last counts now, not at the next tick
            else:
                progress, self._progress = self._progress, None
                progress.stop()

    def stop(self) -> None:
        """At exit: give the terminal back its cursor even if a bar was left running."""
        with self._lock:
            progress, self._progress, self._rows = self._progress, None, ()
            if progress is not None:
                progress.stop()


_DISPLAY = _Display()
atexit.register(_DISPLAY.stop)


def _outside_processes(what: str) -> None:
    if current_task() is not None:
        raise RuntimeError(
            f"{what} blocks its thread until the futures are done, and a process of a node must not block its "
            "node: call it from plain code (a script, a notebook cell, a test), not from a termite process"
        )


async def _touch_into(pid: Pid, future: concurrent.futures.Future) -> None:
    try:
        value = await touch(pid)
    except Exception as exc:  # noqa: BLE001 - the future's failure, handed to its concurrent twin
        future.set_exception(exc)
    else:
        future.set_result(value)


async def _touch_all(pids: list, futures: list) -> None:
    for pid, future in zip(pids, futures):
        spawn(_touch_into, pid, future)


def _as_futures(items, node, takes_pids: bool = True) -> list[concurrent.futures.Future]:
    """``items`` (one or many) as concurrent futures, each once: termite futures (pids) followed from ``node``."""
    takes = TAKES if takes_pids else AS_COMPLETED_TAKES
    if isinstance(items, (concurrent.futures.Future, Pid)):
        items = [items]
    try:
        items = list(dict.fromkeys(items))  # each once, as concurrent.futures.wait counts them
    except TypeError:
        raise TypeError(f"{takes}; not {items!r}") from None
    futures, pids = [], []
    for item in items:
        if isinstance(item, concurrent.futures.Future):
            futures.append(item)
        elif item.__class__ is Pid and takes_pids:
            pids.append(item)
        else:
            raise TypeError(f"{takes}; not {item!r}")
    if pids:
        node = getattr(node, "node", node)  # an Executor: its node
        if not isinstance(node, Node):
            raise TypeError(f"{takes}: pass node= to follow the {len(pids)} pid(s) given (got node={node!r})")
        touched = [concurrent.futures.Future() for _ in pids]
        node.spawn(_touch_all, pids, touched)
        futures += touched
    return futures


def progress(futures, *, description: str = "tasks", timeout: float | None = None, node=None) -> None:
    """Show a progress bar of ``futures`` until every one is done (Dask's ``distributed.progress``).

    ``futures``: ``concurrent.futures.Future`` objects (from ``Executor.submit``,
    or any executor), one or many; with ``node`` (a ``termite.Node``, or an
    Executor for its node), also pids of termite futures (``termite.future``,
    ``termite.dispatch_async``).  It counts a future that raised or was
    cancelled as failed and raises nothing for it: ask the futures for
    their results.  ``timeout``: raise ``TimeoutError`` if some are still not
    done after that many seconds.  On a terminal the bar is live; elsewhere
    plain lines (see the module).
    """
    _outside_processes("termite.progress")
    futures = _as_futures(futures, node)
    if not futures:
        return
    bar = Bar(len(futures), description)
    for future in futures:
        bar.watch(future)
    bar.start()
    try:
        _, pending = concurrent.futures.wait(futures, timeout)
    finally:
        bar.close()
    if pending:
        raise TimeoutError(f"{len(pending)} of {len(futures)} futures were not done after {timeout} s")


def as_completed(futures, timeout: float | None = None, *, progress: bool | str = False):
    """``concurrent.futures.as_completed``: the futures as they finish; with ``progress``, a bar of them.

    ``progress``: True, or the bar's label.  The bar starts now and ends when
    all are done, or when the loop stops early (``break``, an exception).
    """
    futures = _as_futures(futures, None, takes_pids=False)
    if not progress or not futures:
        return concurrent.futures.as_completed(futures, timeout)
    _outside_processes("as_completed(..., progress=True)")
    bar = Bar(len(futures), progress if isinstance(progress, str) else "tasks")
    for future in futures:
        bar.watch(future)
    return _closing(concurrent.futures.as_completed(futures, timeout), bar.start())


def _closing(iterator, bar: Bar):
    try:
        yield from iterator
    finally:
        bar.close()
