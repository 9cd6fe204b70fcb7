"""A node: a kernel, its process table, and the ways in from plain Python.

``termite.run(main, *args)`` runs a node on the calling thread until ``main``
returns, like ``asyncio.run``.  ``termite.Node()`` runs one on a background
thread and offers blocking methods (``spawn``, ``send``, ``call``,
``receive``, ``run``), so a script, a REPL, a Jupyter cell or a test can talk
to processes without being one.  The node acts through a *shell* process of
its own, whose pid is ``node.pid``: it is the sender of ``node.send`` and
``node.call``, and ``node.receive`` reads its mailbox.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import gc
import threading
from collections import deque

from termite._core.call import call
from termite._core.errors import Crash, Exited, TermiteError
from termite._core.ids import NodeRef, Pid, Tag
from termite._core.info import ProcessInfo, info_in
from termite._core.kernel import Kernel, _local
from termite._core.links import Kill, link, monitor, process_exited, signal_exit, unlink
from termite._core.mailbox import NO_DEFAULT, receive, send
from termite._core.process import DEAD, ProcessTable, current
from termite._core.registry import register_in
from termite._core.spawn import spawn, spawn_in
from termite._core.traps import Sentinel, park
from termite._net.codec import MAX_DECODED
from termite._net.distribution import connect, monitor_node
from termite._net.flow import DEFAULT_BUFFER_LIMIT, DEFAULT_MAILBOX_LIMIT
from termite._net.endpoint import Endpoint
from termite._net.global_names import register_global, start_name_server, whereis_global
from termite._net.process_groups import start_group_server
from termite._net.keys import require_keys
from termite._net.transport import IDLE_CLOSE, Transport
from termite._move.migration import Migration
from termite._balance.meter import start_meter
from termite._balance.runner import start_runner
from termite._balance.safepoint import start_mover

__all__ = ["Node", "Network", "run", "current_node"]

_SHELL_IDLE = Sentinel("shell waiting for a request")


#: What every networked node runs beside its distribution endpoint, in start
#: order: each is called as fn(table, endpoint) when the node starts.
EXTENSIONS = (
    Migration,  # speaks the migration protocol (its frame kinds, its kernel trap)
    start_runner,  # runs thunks sent by dispatch
    start_meter,  # reports this node's load
    start_mover,  # moves opted-in processes at their safe points when the balancer asks
    start_name_server,  # keeps this node's replica of the global names
    start_group_server,  # keeps this node's replica of the process groups (termite.pg)
)

#: The collector's first threshold while a node runs.  Python's default (700)
#: makes a node creating 250,000 processes spend half its time collecting.
GC_THRESHOLD = 50_000


@contextlib.contextmanager
def _gc_tuned():
    old = gc.get_threshold()
    gc.set_threshold(max(old[0], GC_THRESHOLD), *old[1:])
    try:
        yield
    finally:
        gc.set_threshold(*old)


@dataclasses.dataclass(frozen=True)
class Network:
    """How a node talks to others: where it listens, and with which keys.

    ``port=0`` picks a free port.  ``keys`` is the cluster's key file (or
    loaded keys; ``termite.session_keys()`` for the nodes of one program);
    without it, only ``insecure=True`` on a loopback host runs, with a warning
    on stderr: any local user could then run code in the node.
    A frame from a peer of more than ``max_frame`` bytes is dropped unread;
    one that would decode to more than ``max_decoded`` bytes of objects (or
    32 per byte of it, plus 1 MiB) is dropped when decoding reaches that: see
    termite/_net/codec.py.  Both are counted and logged.
    ``client=True``: this node reaches a cluster and is not one of its nodes
    (the Executor's, termite-launch's, a script's), as Erlang's hidden nodes:
    when it leaves, the nodes it spoke to log "client ... left" (INFO), not
    "node ... is down" (WARNING).  Links, monitors and ``NodeDown`` are the same.
    """

    port: int = 0
    host: str = "127.0.0.1"
    keys: object = None
    insecure: bool = False
    heartbeat_interval: float = 0.5
    heartbeat_timeout: float = 3.0
    max_frame: int = 64 * 1024 * 1024
    #: Flow control (termite._net.flow): messages a process may have waiting, and bytes a node may
    #: have sent another and not yet seen read, before processes that send there are held back
    #: until half is read.  Local sends never wait.
    mailbox_limit: int = DEFAULT_MAILBOX_LIMIT
    buffer_limit: int = DEFAULT_BUFFER_LIMIT
    max_decoded: int = MAX_DECODED
    client: bool = False
    #: Seconds a session with a peer may be idle (no frames either way, no links, monitors or
    #: monitor_node with it, nothing in flight) before both sides close its connections by agreement;
    #: the next frame either way reopens them, with no NodeDown or NodeUp (termite._net.sessions).
    #: 0 or None: never.  Akka's Artery stops idle outbound streams after 5 minutes; so does this.
    idle_close: float | None = IDLE_CLOSE


class _Runtime:
    """The parts of a node, built on the thread that will run them."""

    def __init__(self, loop: asyncio.AbstractEventLoop, ref: NodeRef | None = None, network: Network | None = None):
        self.loop = loop
        self.kernel = Kernel(loop)
        self.kernel.on_exit = process_exited
        self.transport = None
        if network is not None:
            keys = require_keys(network.keys, network.host, network.insecure)
            self.transport = Transport(
                network.host,
                network.port,
                keys,
                on_frames=None,
                heartbeat_interval=network.heartbeat_interval,
                heartbeat_timeout=network.heartbeat_timeout,
                max_frame=network.max_frame,
                client=network.client,
                idle_close=network.idle_close,
            )
            ref = self.transport.ref
        self.table = ProcessTable(self.kernel, ref or NodeRef.new("local", 0))
        if self.transport is not None:
            endpoint = Endpoint(self.table, self.transport, network.mailbox_limit, network.buffer_limit,
                                max_decoded=network.max_decoded)
            for extension in EXTENSIONS:
                extension(self.table, endpoint)
            self.transport.start(loop)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.stop()

    def start(self, fn, args, *, name=None, link_to=None) -> Pid:
        pid = spawn_in(self.table, fn, args, name=name, link_to=link_to)
        self.kernel.kick()
        return pid

    def when_done(self, pid: Pid, callback) -> None:
        """Run ``callback(value, reason, exc)`` when ``pid`` ends; it then counts as reported."""
        self.table.exit_waiters.setdefault(pid, []).append(callback)

    def kill_all(self) -> None:
        """End every process (reason ``"killed"``), running their ``finally`` blocks."""
        for proc in [*self.table.procs.values(), *self.table.guests.values()]:
            if proc.waiting is not DEAD:
                signal_exit(proc, proc.pid, "kill")
        self.kernel.kick()

    def end_all(self, step) -> None:
        """kill_all, then ``step()`` until they have ended: a turn may not reach them all (it is
        bounded), and killed processes may run finally blocks.  Bounded too."""
        self.kill_all()
        for _ in range(100):
            if not self.table.procs and not self.table.guests:
                break
            step()


def _result(value, reason, exc):
    """What waiting for a process gives: its value, or its exception raised."""
    if exc is None:
        return value
    if isinstance(reason, Crash) and reason.exception is not None:
        raise reason.exception
    raise Exited(None, reason)


def run(main, *args, node: NodeRef | None = None, network: Network | None = None):
    """Run a node on this thread, run ``main(*args)`` as a process in it, return its value.

    If ``main`` raises, ``run`` raises the same exception.  When ``main`` ends,
    every other process of the node is ended too, as ``asyncio.run`` does with
    its tasks.  With ``network``, the node listens and can reach other nodes.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError(
            "termite.run() cannot start a node inside a running asyncio event loop "
            "(Jupyter runs one); use node = termite.Node() and node.run(main) instead"
        )
    if _local.kernel is not None:
        raise RuntimeError("termite.run() called inside a running node; spawn a process instead")
    loop = asyncio.new_event_loop()
    try:
        with _gc_tuned():
            return _run_on(loop, main, args, node, network)
    finally:
        _local.kernel = None
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def _run_on(loop, main, args, node, network):
    asyncio.set_event_loop(loop)
    runtime = _Runtime(loop, node, network)
    try:
        return _run_main(loop, runtime, main, args)
    finally:
        runtime.close()


def _run_main(loop, runtime, main, args):
    runtime.kernel.attach()
    outcome = loop.create_future()
    pid = runtime.start(main, args)
    runtime.when_done(pid, lambda *done: outcome.done() or outcome.set_result(done))
    try:
        value, reason, exc = loop.run_until_complete(outcome)
    except BaseException:
        # Interrupted (Ctrl-C; SIGTERM in python -m termite.node raises KeyboardInterrupt): the
        # processes end now, killed in turns taken here while the kernel is attached (a killed one
        # ends in the turn that kills it), not resumed by a turn left on the loop after it is
        # detached, where each finds itself outside a process (NotInProcess, logged as a crash).
        runtime.end_all(runtime.kernel.run_now)
        raise
    runtime.end_all(lambda: loop.run_until_complete(asyncio.sleep(0)))
    return _result(value, reason, exc)


def current_node() -> NodeRef:
    """The node the calling process runs on (the paper's ``current-node``)."""
    return current().table.ref


class Node:
    """A node running on a background thread, with blocking methods to use it.

        with termite.Node() as node:
            pid = node.spawn(pong_server)
            assert node.call(pid, "ping", timeout=5) == "pong"

    Every method may be called from any thread but the node's own.
    """

    def __init__(self, network: Network | None = None, *, ref: NodeRef | None = None, **network_options):
        """A local node; with ``network`` (or its fields as keywords: ``port``,
        ``host``, ``keys``, ``insecure``, ...) one that talks to other nodes."""
        if network_options:
            network = dataclasses.replace(network or Network(), **network_options)
        self._network = network
        self._ref = ref
        self._runtime: _Runtime | None = None
        self._thread: threading.Thread | None = None
        self._shell: Pid | None = None
        self._requests: deque = deque()
        self._pending: set[concurrent.futures.Future] = set()

    # -- life cycle -----------------------------------------------------------

    def start(self) -> "Node":
        if self._thread is not None:
            raise RuntimeError("this node is already started")
        started = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._main, args=(started,), name="termite-node", daemon=True)
        self._thread.start()
        started.result()
        return self

    def _main(self, started):
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            self._runtime = _Runtime(loop, self._ref, self._network)
            self._runtime.kernel.attach()
            self._shell = self._runtime.start(self._serve, ())
            started.set_result(None)
            with _gc_tuned():
                loop.run_forever()
                # stop() killed every process; one turn may not reach them all (a turn is bounded):
                # let the killed ones end, so none is dropped unclosed. Bounded, as _run_main does.
                table = self._runtime.table
                for _ in range(100):
                    if not table.procs and not table.guests:
                        break
                    loop.run_until_complete(asyncio.sleep(0))
            loop.run_until_complete(loop.shutdown_asyncgens())
        except BaseException as exc:  # noqa: BLE001 - reported to the starting thread
            if not started.done():
                started.set_exception(exc)
            raise
        finally:
            _local.kernel = None
            if self._runtime is not None:
                self._runtime.close()
            loop.close()

    def stop(self, timeout: float = 10.0) -> None:
        """End every process of the node and its thread."""
        if self._thread is None or not self._thread.is_alive():
            return
        runtime = self._runtime

        def shut_down():
            runtime.kill_all()
            runtime.loop.call_soon(runtime.loop.stop)

        runtime.kernel.call_threadsafe(shut_down)
        self._thread.join(timeout)
        for fut in list(self._pending):
            fut.cancel()

    def __enter__(self) -> "Node":
        return self.start() if self._thread is None else self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def ref(self) -> NodeRef:
        """This node's reference (what ``current_node()`` returns inside it)."""
        return self._started().table.ref

    @property
    def pid(self) -> Pid:
        """The pid of this node's shell process: the sender of ``send`` and ``call``."""
        self._started()
        return self._shell

    # -- the shell process ----------------------------------------------------

    async def _serve(self):
        """Run requests from other threads, one at a time, as this process."""
        me = current()
        me.trap_exit = True  # a linked process that fails reaches node.receive() as Exit(...)
        requests = self._requests
        while True:
            while not requests:
                me.waiting = _SHELL_IDLE
                await park()
            fn, args, fut = requests.popleft()
            if fut.set_running_or_notify_cancel():
                try:
                    fut.set_result(await fn(*args))
                except (Exited, Kill):
                    raise
                except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
                    fut.set_exception(exc)
            self._pending.discard(fut)

    def _started(self) -> _Runtime:
        if self._runtime is None or not self._thread.is_alive():
            raise TermiteError("this node is not running; start it with node.start() or `with termite.Node() as node:`")
        return self._runtime

    def _from_outside(self) -> _Runtime:
        """The runtime, for a blocking method: refused on the node's own thread, where it would deadlock."""
        runtime = self._started()
        if threading.get_ident() == runtime.kernel.thread:
            raise RuntimeError("a Node's blocking methods cannot be called from its own processes; use the async API")
        return runtime

    def _on_node(self, fn, *args, timeout=None):
        """Run ``fn(*args)`` on the node's thread and wait for its result."""
        runtime = self._from_outside()
        fut = concurrent.futures.Future()

        def job():
            try:
                fut.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
                fut.set_exception(exc)

        runtime.kernel.call_threadsafe(job)
        return fut.result(timeout)

    def _as_shell(self, afn, *args):
        """Await ``afn(*args)`` inside the shell process; block until it is done."""
        runtime = self._from_outside()
        fut = concurrent.futures.Future()
        self._pending.add(fut)

        def submit():
            self._requests.append((afn, args, fut))
            shell = self._shell._proc
            if shell is None:
                fut.set_exception(TermiteError("this node's shell process has ended; start a new Node"))
            elif shell.waiting is _SHELL_IDLE:
                shell.waiting = None
                runtime.kernel.wake(shell)

        runtime.kernel.call_threadsafe(submit)
        return fut.result()

    # -- what a program does with a node -----------------------------------------

    def spawn(self, fn, *args, name: str | None = None, link: bool = False) -> Pid:
        """Start ``fn(*args)`` as a process of this node; ``link=True`` links it to ``node.pid``."""
        runtime = self._started()
        link_to = self._shell if link else None
        return self._on_node(lambda: runtime.start(fn, args, name=name, link_to=link_to))

    def send(self, dest, msg) -> None:
        """Send ``msg`` to ``dest`` (a pid or a registered name) from ``node.pid``."""
        self._as_shell(_send_now, dest, msg)

    def call(self, dest, msg, timeout=None, default=NO_DEFAULT):
        """The paper's ``!?`` from outside: send ``(node.pid, tag, msg)``, return the reply."""
        return self._as_shell(call, dest, msg, timeout, default)

    def receive(self, *patterns, timeout=None, default=NO_DEFAULT, where=None):
        """Take a message from ``node.pid``'s mailbox (blocks; see ``termite.receive``)."""
        return self._as_shell(_receive_kw, patterns, timeout, default, where)

    def run(self, fn, *args, timeout=None):
        """Run ``fn(*args)`` as a new process; return its value or raise its exception."""
        runtime = self._started()
        done = concurrent.futures.Future()
        self._pending.add(done)

        def start():
            pid = runtime.start(fn, args)
            runtime.when_done(pid, lambda *outcome: done.done() or done.set_result(outcome))

        self._on_node(start)
        try:
            value, reason, exc = done.result(timeout)
        finally:
            self._pending.discard(done)
        return _result(value, reason, exc)

    def register(self, name: str, pid: Pid) -> None:
        runtime = self._started()
        self._on_node(register_in, runtime.table, name, pid)

    def connect(self, host: str, port: int, timeout: float = 5.0) -> NodeRef:
        """Reach the node at host:port; return its reference (for ``spawn(node=...)``)."""
        return self._as_shell(connect, host, port, timeout)

    def spawn_on(self, node: NodeRef, fn, *args, link: bool = False) -> Pid:
        """Start ``fn(*args)`` as a process of another node."""
        return self._as_shell(_spawn_remote, node, fn, args, link)

    def link(self, pid: Pid) -> None:
        """Link ``node.pid`` with ``pid``; its exit arrives as ``Exit`` (the shell traps exits)."""
        self._as_shell(_call_sync, link, pid)

    def unlink(self, pid: Pid) -> None:
        """Remove the link between ``node.pid`` and ``pid``, on both nodes if ``pid`` is remote."""
        self._as_shell(_call_sync, unlink, pid)

    def monitor(self, pid: Pid) -> Tag:
        """Monitor ``pid`` from ``node.pid``; ``node.receive(Down)`` gets its end."""
        return self._as_shell(_call_sync, monitor, pid)

    def monitor_node(self, node: NodeRef | None = None) -> Tag:
        """``NodeUp``/``NodeDown`` messages for ``node`` (any node if None) to ``node.pid``."""
        return self._as_shell(_call_sync, monitor_node, node)

    def register_global(self, name: str, pid: Pid, timeout: float = 5.0) -> None:
        """Give ``pid`` the name ``name`` on every connected node (see ``termite.register_global``)."""
        self._as_shell(register_global, name, pid, timeout)

    def whereis_global(self, name: str) -> Pid | None:
        return self._as_shell(_call_sync, whereis_global, name)

    def whereis(self, name: str) -> Pid | None:
        runtime = self._started()
        return self._on_node(runtime.table.names.get, name)

    def processes(self) -> int:
        """How many processes this node runs now (its shell included)."""
        runtime = self._started()
        return self._on_node(len, runtime.table.procs)

    def process_info(self, pid: Pid) -> ProcessInfo | None:
        """``termite.process_info(pid)`` from outside: a live process of this node (its mailbox size...), or None."""
        runtime = self._started()
        return self._on_node(info_in, runtime.table, pid)


async def _spawn_remote(node, fn, args, link):
    return spawn(fn, *args, node=node, link=link)


async def _call_sync(fn, *args):
    return fn(*args)


async def _send_now(dest, msg):
    send(dest, msg)


async def _receive_kw(patterns, timeout, default, where):
    return await receive(*patterns, timeout=timeout, default=default, where=where)

