"""``termite.Executor``: a ``concurrent.futures.Executor`` over a termite cluster.

    with termite.Executor(["127.0.0.1:7001", "127.0.0.1:7002"], keys="cluster.key") as pool:
        print(sum(pool.map(square, range(1000), chunksize=50)))

Each call runs on the least-loaded node (termite._balance.dispatch), on that node's
worker thread (termite._balance.runner).  The executor runs a node of its own on a
background thread (or uses the ``node`` it is given), so it works from plain
scripts and from Jupyter alike.  Functions travel as termite sends them: by
reference when the nodes can import them, by value (dill) when they are
lambdas, closures or defined in ``__main__`` or a notebook.

A call whose node is lost is run again on another (at least once: see
termite/_balance/dispatch.py).  ``map`` sends ``chunksize`` calls per message.
``map(..., progress=True)`` and ``as_completed(..., progress=True)`` show a
progress bar of the calls (termite/progress_bars.py); ``repr(pool)`` says where it
is connected, to how many nodes, and how many calls run and wait.

Calls never run in the calling script's own process unless it asks for that
(``include_self=True``, or a ``node`` with no network, which has nowhere
else to send them).  While no node is connected they wait for one to join
or come back; ``shutdown`` then fails those still waiting with
``concurrent.futures.BrokenExecutor`` instead of waiting for ever.
"""

from __future__ import annotations

import concurrent.futures
import functools
import itertools
import os
import socket
import threading
import time
import weakref

from termite._runtime.clusterfile import ENVIRONMENT, cluster_nodes
from termite._balance.dispatch import start_dispatcher
from termite._core.errors import remote_exception
from termite._core.ids import NodeRef
from termite._net.keys import is_loopback, session_keys
from termite._net.shipping import collect
from termite._core.links import Down, monitor
from termite._core.mailbox import receive, send
from termite._runtime.node import Node

# termite.progress_bars is imported where a bar is drawn, not here: it pulls in rich (~30 ms), which
# the launcher and pytest --termite, importing this module for local_address_towards, never use.

__all__ = ["CLUSTER_ENVIRONMENT", "Executor", "local_address_towards"]

#: The environment variable naming a running cluster's state file (or its
#: cluster.yaml): ``termite-launch --run`` sets it for the script it runs, and
#: ``Executor()`` given no nodes uses that cluster.
CLUSTER_ENVIRONMENT = ENVIRONMENT


#: Why ``Executor()`` with nothing to work on raises.
NO_CLUSTER = (
    "termite.Executor() found no cluster to run calls on. Start one and run this script on it: "
    "termite-launch cluster.yaml --run script.py (Executor() then finds it); or give the nodes: "
    "Executor(['host:port', ...], keys='cluster.key') or Executor(cluster='cluster.yaml'); "
    "or pass include_self=True to run the calls in this process"
)

#: What a call waiting for a node gets once its Executor is shut down.
NO_NODE_AT_SHUTDOWN = (
    "the Executor was shut down while this call waited for a node, and no node was connected: it did not run "
    "(or its node was lost); keep a node connected until the calls finish, or pass include_self=True "
    "to run calls on the executor's own node too"
)


class _ToFuture:
    """Where a job's results go: a concurrent.futures.Future, set from the node's thread.

    The dispatcher's reply protocol (termite/_balance/dispatch.py).
    """

    __slots__ = ("future", "single", "pool")

    def __init__(self, future: concurrent.futures.Future, single: bool, pool: "Executor"):
        self.future, self.single, self.pool = future, single, pool

    def start(self) -> bool:
        return self.future.set_running_or_notify_cancel()

    def abandon(self) -> bool:
        """No node is connected: wait for one, unless the executor is shut down."""
        if not self.pool._closed:
            return False
        _fail(self.future, NO_NODE_AT_SHUTDOWN)
        return True

    def finish(self, results: list) -> None:
        if not self.single:
            self.future.set_result(results)  # map unpacks them, raising the first failure in order
            return
        [(ok, value)] = results
        if ok:
            self.future.set_result(value)
        else:
            self.future.set_exception(remote_exception(value))


_DONE = object()  # the executor is closed: its watcher ends
_NO_NETWORK = object()  # the executor's node has none: it runs the calls itself


async def _watch(dispatcher, pool_ref) -> None:
    """A process of the executor's node: when the dispatcher or the node ends, no
    pending call can be answered any more, so the executor fails them."""
    ref = monitor(dispatcher)
    why = "its node stopped"
    try:
        down = await receive(lambda msg: msg is _DONE or (msg.__class__ is Down and msg.ref == ref))
        if down is _DONE:
            return
        why = f"its dispatcher ended ({down.reason})"
    finally:
        pool = pool_ref()
        if pool is not None:
            pool._broken(why)


def _fail(future: concurrent.futures.Future, text: str) -> None:
    try:
        future.set_exception(concurrent.futures.BrokenExecutor(text))
    except concurrent.futures.InvalidStateError:
        pass  # cancelled or done meanwhile


def _address(node) -> tuple[str, int]:
    if node.__class__ is NodeRef:
        return node.host, node.port
    if isinstance(node, str):
        host, sep, port = node.rpartition(":")
        if sep and port.isdigit():
            return host, int(port)
    elif isinstance(node, tuple) and len(node) == 2:
        return node[0], int(node[1])
    raise ValueError(f"a node address is 'host:port', (host, port) or a NodeRef, not {node!r}")


def _tasks(running: int, waiting: int) -> str:
    if not running + waiting:
        return "no tasks"
    parts = [f"{running} task{'' if running == 1 else 's'} running"] if running else []
    if waiting:
        parts.append(f"{waiting} waiting" if running else f"{waiting} task{'' if waiting == 1 else 's'} waiting")
    return ", ".join(parts)


def _label(fn) -> str:
    name = getattr(fn, "__name__", None) or getattr(getattr(fn, "func", None), "__name__", None)
    return name if name and name != "<lambda>" else "map"


def _failed_calls(size: int, future: concurrent.futures.Future) -> int:
    """How many calls of a map's chunk failed: all of them if the chunk itself did (cancelled, or no node left)."""
    if future.cancelled() or future.exception() is not None:
        return size
    return sum(1 for ok, _ in future.result() if not ok)


def local_address_towards(host: str) -> str:
    """This machine's address on the route to ``host``: where nodes there can reach a node here.

    Nothing is sent; the OS only picks the route (and the address) it would use.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect((host, 9))  # a UDP "connect" only picks the route: nothing is sent
        return probe.getsockname()[0]


class Executor(concurrent.futures.Executor):
    """Run calls on the nodes of a termite cluster, each on the least-loaded one.

    ``nodes``: the addresses of the cluster's nodes (``"host:port"``,
    ``(host, port)`` or NodeRefs); nodes that join later are used too.
    ``cluster``: instead, a cluster started by ``termite-launch``: its
    cluster.yaml or state file (it names the nodes and the key file).  With
    neither, a script run by ``termite-launch --run`` uses its cluster.
    ``keys``: the cluster's key file; without one, the executor's node uses
    this process's :func:`termite.session_keys` (see :attr:`keys`), so it
    admits only nodes started with that file (``--keys``), never a stranger.
    ``node``: a running ``termite.Node``
    to work from, instead of one of the executor's own.  ``window``: calls
    that may wait or run on one node at a time; ``include_self``: run calls
    on the executor's own node as well (otherwise they never run in this
    process, but for a ``node`` without a network); ``interval``: seconds
    between load reports.  ``ship``: names of this script's own modules
    (a package goes with its submodules) whose source is sent to every node
    before any call, for code the nodes do not have installed, as a helper
    module next to the script.

    With no nodes, no cluster and no ``include_self``, it raises
    ``ValueError`` saying how to start a cluster.  With no node connected, calls wait for one to join or come back;
    ``shutdown`` fails those still waiting then (``BrokenExecutor``).
    """

    def __init__(
        self,
        nodes=(),
        *,
        cluster=None,
        keys=None,
        node: Node | None = None,
        window: int = 16,
        include_self: bool = False,
        interval: float = 1.0,
        connect_timeout: float = 10.0,
        ship=(),
    ):
        nodes = list(nodes)
        where = None  # where it was told to connect, for its repr: a cluster file, or the first address
        if cluster is not None or (not nodes and node is None and os.environ.get(CLUSTER_ENVIRONMENT)):
            where = os.fspath(cluster) if cluster is not None else os.environ[CLUSTER_ENVIRONMENT]
            nodes, cluster_keys = cluster_nodes(cluster)
            keys = keys or cluster_keys
        elif nodes:
            where = "%s:%d" % _address(nodes[0]) + (f" (+{len(nodes) - 1} more)" if len(nodes) > 1 else "")
        if not nodes and node is None and not include_self:
            raise ValueError(NO_CLUSTER)  # never run the calls somewhere the user did not ask for
        shipped = collect(ship) if ship else None  # before any node starts: a bad name fails here
        self._own = node is None
        self._keys = None
        self._lock = threading.Lock()  # before anything can fail: _close() takes it
        self._futures: dict[concurrent.futures.Future, int] = {}  # pending -> how many calls it holds
        self._include_self = include_self
        self._where = where
        self._closed = False
        self._finished = False
        session = node is None and keys is None
        if node is None:
            # No key named: one made for this process, never an open node (any local user could run code in it).
            self._keys = keys = session_keys() if session else keys
            addresses = [_address(address) for address in nodes]
            host = next((local_address_towards(h) for h, _ in addresses if not is_loopback(h)), "127.0.0.1")
            node = Node(host=host, port=0, keys=keys, client=True).start()  # leaving, it is no node going down
        self._node = node
        self._home = f"{node.ref.host}:{node.ref.port}"  # its own address, for its repr
        try:
            for address in nodes:
                try:
                    node.connect(*_address(address), timeout=connect_timeout)
                except TimeoutError as exc:
                    if not session:
                        raise
                    raise type(exc)(
                        f"{exc}; no keys= was given, so this executor's node holds this process's session key "
                        f"({self._keys}), which a node admits only if it was started with it (--keys): pass the "
                        "cluster's key file as keys=PATH, or start the nodes with --keys termite.session_keys()"
                    ) from None
            self._dispatcher = node.run(start_dispatcher, interval, window, include_self)
        except BaseException:
            self._close()
            raise
        self._kernel = node._started().kernel
        if shipped is not None:  # reaches each node's runner before the calls submitted after it
            self._kernel.call_threadsafe(send, self._dispatcher, ("ship", shipped))
        self._watcher = node.spawn(_watch, self._dispatcher, weakref.ref(self))

    @property
    def node(self) -> Node:
        """The node the executor works from."""
        return self._node

    @property
    def keys(self):
        """The key file (or keys) the executor's own node holds: the one given, or the
        session's; None for a ``node`` given.  Nodes started for it need this (``--keys``)."""
        return self._keys

    def _job(self, fn, calls: list, single: bool) -> concurrent.futures.Future:
        future = concurrent.futures.Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot submit to an Executor after shutdown()")
            self._futures[future] = len(calls)
        future.add_done_callback(self._forget)
        self._kernel.call_threadsafe(send, self._dispatcher, ("submit", fn, calls, _ToFuture(future, single, self)))
        return future

    def _broken(self, why: str) -> None:
        """No call can be answered any more: fail those pending (on the node's thread)."""
        with self._lock:
            if self._finished:
                return
            self._closed = True
            futures = list(self._futures)
        for future in futures:
            _fail(future, f"the Executor can no longer run calls: {why}; this call was not answered")

    def _forget(self, future) -> None:
        with self._lock:
            self._futures.pop(future, None)

    def submit(self, fn, /, *args, **kwargs) -> concurrent.futures.Future:
        """Run ``fn(*args, **kwargs)`` on the least-loaded node; a Future of its value."""
        if kwargs:
            fn = functools.partial(fn, **kwargs)
        return self._job(fn, [args], single=True)

    def map(self, fn, *iterables, timeout: float | None = None, chunksize: int = 1, progress: bool | str = False):
        """``fn`` over the iterables' items, ``chunksize`` calls per message; results in order.

        ``progress``: True (or the bar's label; the default is ``fn``'s
        name) shows a bar of the calls done out of all, and how many failed,
        until the last is done or the results are abandoned
        (termite/progress_bars.py).  The calls are all submitted now; the results
        come lazily, in order, the first failure raised where it falls.
        """
        if chunksize < 1:
            raise ValueError(f"chunksize must be at least 1, not {chunksize!r}")
        deadline = None if timeout is None else time.monotonic() + timeout
        calls = zip(*iterables)
        futures, sizes = [], []
        while chunk := list(itertools.islice(calls, chunksize)):
            futures.append(self._job(fn, chunk, single=False))
            sizes.append(len(chunk))
        bar = None
        if progress and futures:
            from termite.progress_bars import Bar

            bar = Bar(sum(sizes), progress if isinstance(progress, str) else _label(fn))
            for future, size in zip(futures, sizes):
                bar.watch(future, size, functools.partial(_failed_calls, size))
            bar.start()

        def results():
            try:
                for future in futures:
                    left = None if deadline is None else max(0.0, deadline - time.monotonic())
                    for ok, value in future.result(left):
                        if not ok:
                            raise remote_exception(value)
                        yield value
            finally:
                if bar is not None:  # first: its last state is the job's, not the cancellations'
                    bar.close()
                for future in futures:
                    future.cancel()

        return results()

    def as_completed(self, futures, timeout: float | None = None, *, progress: bool | str = False):
        """``concurrent.futures.as_completed(futures, timeout)``, with a progress bar on request.

        ``progress``: True, or the bar's label.  Any concurrent futures will
        do, this executor's or others'.
        """
        from termite.progress_bars import as_completed

        return as_completed(futures, timeout, progress=progress)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Take no more calls; with ``wait``, return when the calls submitted are done.

        Calls waiting for a node while none is connected, now or once the
        last one is lost, fail with ``BrokenExecutor``: shutdown never waits
        for a node to join.
        """
        with self._lock:
            self._closed = True
            futures = list(self._futures)
        if cancel_futures:
            for future in futures:
                future.cancel()
        if any(not future.done() for future in futures):
            try:  # the dispatcher asks the waiting calls again: closed now, they give up if no node is there
                self._kernel.call_threadsafe(send, self._dispatcher, ("reconsider",))
            except RuntimeError:  # the node has stopped: nothing will answer them
                for future in futures:
                    _fail(future, "the Executor's node stopped before this call was answered")
        if wait:
            concurrent.futures.wait(futures)  # bounded: a call that can no longer be answered is failed (_watch)
            self._close()
        elif self._own:  # the node stays up until what was submitted is done
            threading.Thread(target=lambda: (concurrent.futures.wait(futures), self._close()), daemon=True).start()

    def __repr__(self) -> str:
        with self._lock:
            closed, finished = self._closed, self._finished
            pending = list(self._futures.items())
        running = sum(calls for future, calls in pending if future.running())
        waiting = sum(calls for future, calls in pending if not future.running() and not future.done())
        where = getattr(self, "_where", None)
        head = f"<termite.Executor for {where}" if where else f"<termite.Executor on node {getattr(self, '_home', '?')}"
        if finished or (closed and not running + waiting):
            return f"{head}, shut down>"
        tasks = _tasks(running, waiting)
        if closed:
            return f"{head}, shutting down, {tasks}>"
        peers = self._peers()
        if peers is None:
            return f"{head}, its node stopped, {tasks}>"
        here = self._include_self or peers is _NO_NETWORK  # a node without a network runs every call itself
        peers = 0 if peers is _NO_NETWORK else peers
        if peers == 0 and not here:
            return f"{head}, not connected: waiting for a node, {tasks}>"
        nodes = f"{peers} node{'' if peers == 1 else 's'}"
        if here:
            nodes = f"{nodes} and this process" if peers else "this process only"
        if where:
            head = f"<termite.Executor connected to {where}"
        return f"{head}, {nodes}, {tasks}>"

    def _peers(self):
        """How many nodes the executor's node is connected to now (None once it has stopped; _NO_NETWORK),
        read without a round trip: a repr must answer at once, from any thread, the node's own included."""
        try:
            endpoint = self._node._started().table.remote
        except Exception:  # noqa: BLE001 - not running
            return None
        if endpoint is None:
            return _NO_NETWORK
        return sum(1 for peer in endpoint.transport.peers() if peer.incarnation is not None)

    def _close(self) -> None:
        with self._lock:
            self._finished = True
        if self._own and self._node is not None:
            self._node.stop()
        elif getattr(self, "_watcher", None) is not None:
            try:  # a node that outlives this executor keeps no watcher of it
                self._kernel.call_threadsafe(send, self._watcher, _DONE)
            except RuntimeError:
                pass  # the node has stopped: so has the watcher
