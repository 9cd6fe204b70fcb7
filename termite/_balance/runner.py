"""The runner: every networked node runs the thunks sent to it, off the kernel's thread.

Each node has a runner process under serial ``RUNNER_SERIAL``.  It takes
``("run", job, fn, calls, reply_to)``, where ``calls`` is a list of argument
tuples (one call, or a chunk of a ``map``), and answers
``("done", job, node, results)``: one ``(True, value)`` or ``(False, Crash)``
per call, in order.  A function or argument this node could not unpickle (a
module it cannot import) arrives as an ``Unreadable`` (termite/_net/endpoint.py):
the call fails with its ``UnreadableMessage``, which names what and why.

Plain functions run on the node's worker thread, one call after another: the
kernel's thread stays free to read the network, answer heartbeats and load
reports and run the node's processes (the GIL changes hands every few
milliseconds), so a node busy with a long CPU-bound thunk is neither declared
down nor silent.  A node is meant to have a core, and one thread is what a
core runs.  ``async def`` functions run as processes of the node instead.

The runner counts, in ``table.counters`` (the meter reports them, the
dashboard shows them per node): ``thunks_received``, the calls sent to it;
``thunks_done``, those finished, returned or raised; ``thunks_failed``, of
those, the ones whose caller gets an exception (a result that cannot travel
back included).  A call run again elsewhere after this node was thought lost
counts on both.

A thunk on the worker thread is in no process; ``running_thunk()`` tells it
which node it runs on (``termite.say`` sends its lines through that node).
"""

from __future__ import annotations

import inspect
import logging
import queue
import threading
import weakref

from termite._net.codec import Unreadable, UnserializableMessage, encode
from termite._core.errors import Crash
from termite._core.ids import Pid
from termite._core.kernel import Kernel
from termite._core.mailbox import receive, send
from termite._core.process import ProcessTable, RUNNER_SERIAL, current
from termite._core.spawn import spawn, spawn_in

__all__ = ["start_runner", "RUNNER_SERIAL", "pending", "runner_of", "running_thunk"]

log = logging.getLogger("termite.runner")


_workers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # ProcessTable -> _Worker
_on_worker = threading.local()  # on a worker thread: .table, the node whose thunks it runs


def runner_of(node) -> Pid:
    """The pid of ``node``'s runner."""
    return Pid(node, RUNNER_SERIAL)


def pending(table: ProcessTable) -> int:
    """Calls waiting for or running on ``table``'s node's worker thread."""
    worker = _workers.get(table)
    return worker.pending if worker is not None else 0


def running_thunk() -> ProcessTable | None:
    """The node whose worker thread calls this (from a thunk); None on any other thread."""
    return getattr(_on_worker, "table", None)


class _Worker:
    """A node's worker thread: calls plain functions in order, and hands the results back."""

    def __init__(self, table: ProcessTable):
        self.table = table
        self.kernel: Kernel = table.kernel
        self.where = str(table.ref)
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.pending = 0  # counted on the kernel's thread only
        self.thread: threading.Thread | None = None

    def submit(self, fn, calls: list, done) -> None:
        """Run ``fn(*args)`` for each of ``calls``; then ``done(results)`` on the kernel's thread."""
        self.pending += len(calls)
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name=f"termite-runner {self.where}", daemon=True)
            self.thread.start()
        self.queue.put((fn, calls, done))

    def _finished(self, calls: int, done, results: list) -> None:
        self.pending -= calls
        done(results)

    def _run(self) -> None:
        _on_worker.table = self.table
        while True:
            item = self.queue.get()
            if item is None:
                return
            fn, calls, done = item
            results = [_call(fn, args, self.where) for args in calls]
            self.kernel.call_threadsafe(self._finished, len(calls), done, results)

    def stop(self) -> None:
        if self.thread is not None:
            self.queue.put(None)


def _call(fn, args, where: str) -> tuple:
    try:
        for arg in args:
            if arg.__class__ is Unreadable:
                arg()  # raises the UnreadableMessage that says what could not be unpickled here
        return (True, fn(*args))
    except BaseException as exc:  # noqa: BLE001 - the caller gets it, with its traceback
        exc = exc.with_traceback(exc.__traceback__.tb_next)  # from the thunk's own frame on
        return (False, Crash.from_exception(exc, where=f"a thunk on node {where}"))


async def _run_async(fn, calls, done):
    results = []
    for args in calls:
        try:
            for arg in args:
                if arg.__class__ is Unreadable:
                    arg()
            results.append((True, await fn(*args)))
        except Exception as exc:  # noqa: BLE001 - the caller gets it, with its traceback
            results.append((False, Crash.from_exception(exc, where=f"a thunk on node {current().table.ref}")))
    done(results)


def _reply(table: ProcessTable, reply_to: Pid, job, results: list) -> None:
    try:
        send(reply_to, ("done", job, table.ref, results))
    except UnserializableMessage:  # say which results cannot travel, and send the others
        results = [_travelling(result) for result in results]
        send(reply_to, ("done", job, table.ref, results))
    counters = table.counters
    counters["thunks_done"] += len(results)
    counters["thunks_failed"] += sum(1 for ok, _ in results if not ok)


def _travelling(result: tuple) -> tuple:
    try:
        encode(result)
        return result
    except UnserializableMessage as exc:
        return (False, Crash("termite.UnserializableMessage", f"the thunk's result cannot be sent back: {exc}", ""))


async def runner():
    """The body of a node's runner process."""
    me = current()
    table = me.table
    worker = _workers[table] = _Worker(table)
    try:
        while True:
            msg = await receive()
            if msg.__class__ is tuple and len(msg) == 2 and msg[0] == "shipped":
                continue  # modules sent by value: installed as the message was read (termite/_net/shipping.py)
            try:
                kind, job, fn, calls, reply_to = msg
                if kind != "run" or reply_to.__class__ is not Pid or calls.__class__ not in (list, tuple):
                    raise ValueError(msg)
                calls = [tuple(args) for args in calls]
            except (TypeError, ValueError):
                log.warning("the runner dropped a request it does not understand: %.200r", msg)
                continue
            table.counters["thunks_received"] += len(calls)
            done = lambda results, reply_to=reply_to, job=job: _reply(table, reply_to, job, results)  # noqa: E731
            if inspect.iscoroutinefunction(fn):
                spawn(_run_async, fn, calls, done)
            else:
                worker.submit(fn, calls, done)
    finally:
        worker.stop()


def start_runner(table: ProcessTable, endpoint) -> None:
    """Start this node's runner (a runtime extension: termite._runtime.node)."""
    spawn_in(table, runner, (), pid=runner_of(table.ref))

