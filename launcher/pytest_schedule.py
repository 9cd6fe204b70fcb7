"""Which worker of a ``pytest --termite`` run runs which test: pull, guided chunks, stealing.

The items are numbered in collection order and wait in one queue.  A
worker pulls: it asks ("need") before it runs dry, and :meth:`Schedule.serve`
answers with a chunk of the queue, a share of what is left, so chunks shrink
as the queue empties and the workers finish together (guided
self-scheduling); when fewer are left than two for each worker holding
none, those workers get one each (marked last: nothing follows for now).
Once the queue is empty an idle worker's ask makes
:meth:`Schedule.steal` take back half of the items another worker has not
started; they come back ("unscheduled") to the queue and to the idle
workers.  A lost worker's items go back to the queue's front, in order
(:meth:`Schedule.take_back`).

The schedule sends its commands through the ``command(worker, dict)`` it is
given; the controller (termite_launcher.pytest_plugin) turns the workers'
events into these calls.
"""

from __future__ import annotations

import collections
import time

from termite_launcher.pytest_report import WorkerTag

__all__ = ["MAX_CHUNK", "Schedule", "Worker"]

#: The most items sent to a worker at once; fewer as the queue empties.
MAX_CHUNK = 64


class Worker:
    """What the controller knows of one worker."""

    def __init__(self, key: int, node, label: str, local: bool, cwd: str):
        self.key, self.node, self.label, self.local, self.cwd = key, node, label, local, cwd
        self.name = f"tw{key}"
        self.tag = WorkerTag(self.name, label)
        self.state = "spawning"  # started, ready, finished, gone (ended well), dead
        self.relay = None  # its relay's pid, on a remote node
        self.process = None  # its LocalWorker, on a local node (termite_launcher.pytest_local)
        self.held: list = []  # its events while its node is not known yet (an early worker), but "need"
        self.outbox: list[str] = []  # commands before the relay's pid is known
        self.assigned: dict[int, set] = {}  # item index -> phases reported, in the order sent
        self.running = None  # the index whose logstart came, not its logfinish
        self.idle = False  # asked with nothing pending, and got nothing yet
        self.done = 0
        self.since = time.monotonic()
        self.busy_since = None
        self.busy = 0.0
        self.os_pid = None
        self.where = None  # (host, pid, python), once it said it is ready
        self.why = ""  # how it ended, if it died
        self.lost_why = ""  # a local worker killed as its node was lost: why, said when it has ended
        self.stealing = False  # a "steal" is unanswered

    def bind(self, node, label: str) -> None:
        """An early worker's node is up: it runs there (its reports name it)."""
        self.node, self.label = node, label
        self.tag = WorkerTag(self.name, label)
        if self.where is not None:
            self.tag.ready(self.name, label, *self.where)

    @property
    def alive(self) -> bool:
        return self.state in ("spawning", "started", "ready")


class Schedule:
    """The queue of a session's items and the workers' shares of it."""

    def __init__(self, items, workers: dict[int, Worker], command):
        self.items = items
        self.workers = workers
        self.command = command  # command(worker, dict): to the worker's pytest
        self.queue = collections.deque(range(len(items)))
        self.todo = len(items)  # items not reported done yet
        self.stopping = False  # no new items: -x, --maxfail or another plugin said stop
        self.finishing = False  # the workers were told to end their sessions

    def serve(self, worker: Worker, pending: int) -> None:
        """Answer a worker's "need": a chunk of the queue, "none" for now, or stop."""
        worker.idle = False
        if self.stopping or self.finishing:
            self.command(worker, {"cmd": "shutdown"})
        elif self.queue:
            hungry = sum(1 for w in self.workers.values() if w.alive and not w.assigned)
            if len(self.queue) < 2 * hungry:
                # Too few left for two to each worker that has none (a short suite, or its
                # end): one each, with "last" so it runs at once (nextitem=None) rather than
                # wait for a next item another worker needs more, as pytest-xdist deals a short
                # suite.  A worker still on its own items gets none now, and asks again.
                if worker.assigned:
                    self.command(worker, {"cmd": "none"})
                    return
                size = 1
            else:
                alive = sum(1 for w in self.workers.values() if w.alive) or 1
                # Guided self-scheduling: a share of what is left, so chunks shrink towards the end
                # and the workers finish together; at least 2, as a worker needs a next item.
                size = max(2, min(MAX_CHUNK, len(self.queue) // (4 * alive)))
            chunk = [self.queue.popleft() for _ in range(min(size, len(self.queue)))]
            for index in chunk:
                worker.assigned[index] = set()
            items = [[index, self.items[index].nodeid] for index in chunk]
            # Ask again when a third of it is left: the answer then comes before the worker runs dry.
            last = size == 1 or not self.queue
            self.command(worker, {"cmd": "run", "items": items, "last": last, "ask_below": len(chunk) // 3})
        elif pending:
            self.command(worker, {"cmd": "none"})
        else:
            worker.idle = True
            self.steal()

    def steal(self) -> None:
        """The queue is empty and a worker idles: take back half of the items another has not started.

        The victim keeps its first waiting item (the running test's ``nextitem``, which its
        teardown counts on); it answers with the items it gave up ("unscheduled"), which
        go back to the queue and to the idle workers.
        """
        best, best_items = None, []
        for worker in self.workers.values():
            if worker.state != "ready" or worker.stealing:
                continue
            waiting = [index for index in worker.assigned if index != worker.running][1:]
            if len(waiting) > len(best_items):
                best, best_items = worker, waiting
        if best is not None:
            best.stealing = True
            self.command(best, {"cmd": "steal", "items": best_items[len(best_items) // 2:]})

    def unscheduled(self, worker: Worker, indices: list) -> None:
        """``worker`` gave up ``indices`` (after a steal): back to the queue, and to idle workers."""
        worker.stealing = False
        for index in indices:
            worker.assigned.pop(index, None)
        if self.stopping:
            self.todo -= len(indices)
            return
        self.queue.extendleft(reversed(indices))
        self.feed_idle()

    def feed_idle(self) -> None:
        for worker in self.workers.values():
            if worker.idle and worker.state == "ready" and self.queue:
                self.serve(worker, 0)

    def started(self, worker: Worker, index: int) -> None:
        """``worker`` began item ``index`` (its logstart)."""
        worker.running = index
        worker.busy_since = time.monotonic()

    def finished(self, worker: Worker, index: int) -> None:
        """``worker`` is done with item ``index`` (its logfinish)."""
        if worker.assigned.pop(index, None) is not None:
            self.todo -= 1
            worker.done += 1
        if worker.running == index:
            worker.running = None
            if worker.busy_since is not None:
                worker.busy += time.monotonic() - worker.busy_since
                worker.busy_since = None

    def failed(self, worker: Worker, index: int) -> tuple:
        """Item ``index`` is done without the worker (reported failed here); the phases it reported."""
        phases = worker.assigned.pop(index, None) or ()
        self.todo -= 1
        return phases

    def drop_assigned(self, worker: Worker) -> None:
        """A worker stopped at -x or --maxfail, as this process did: its other items are dropped."""
        self.todo -= len(worker.assigned)
        worker.assigned.clear()

    def take_back(self, worker: Worker) -> None:
        """A lost worker's items: first in the queue again, in their order (dropped when stopping)."""
        requeue = list(worker.assigned)
        worker.assigned.clear()
        if self.stopping:
            self.todo -= len(requeue)
        else:
            self.queue.extendleft(reversed(requeue))

    def stop(self) -> None:
        """-x, --maxfail or another plugin said stop: no new items; running ones end and report."""
        if not self.stopping:
            self.stopping = True
            self.queue.clear()
