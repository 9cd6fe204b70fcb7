"""The transport's fast path on the loop's thread: libzmq called directly, and
the wait for the next message in zmq_poll while the event loop is idle.

- :data:`native` is termite._net._zmqcalls bound to the libzmq that pyzmq
  itself loaded (found in /proc/self/maps), or None where that cannot be
  (no /proc, a static libzmq, the module not built, another version).  Its
  ``recv(handle)`` reads a whole message as one tuple of bytes (pyzmq makes
  a Frame per part, and an option call to learn if more follow), ``send``
  sends one small frame, ``poll(handle, self_pipe, timeout_ms)`` waits.
- :func:`pyzmq_calls` makes ``recv`` and ``poll`` of the same shape from
  pyzmq, for the I/O thread and for where :data:`native` is None.
- :func:`wait_idle` waits for messages in zmq_poll and runs each at once for
  as long as the event loop has nothing else to do; :func:`idle_self_pipe`
  says whether a loop is one whose insides it may read.

Imports nothing of the transport: the transport imports this.
"""

from __future__ import annotations

import asyncio
import logging
import time

import zmq

__all__ = ["native", "pyzmq_calls", "loop_clock", "idle_self_pipe", "wait_idle"]

log = logging.getLogger("termite.transport")

# Plain ints: pyzmq's enum flags cost microseconds per operation on the hot path.
_POLLIN, _RCVMORE, _NOBLOCK = int(zmq.POLLIN), int(zmq.RCVMORE), int(zmq.NOBLOCK)


# -- libzmq, called without pyzmq's wrapping ------------------------------------


def _zmq_error(errno: int) -> zmq.ZMQError:
    """The exception pyzmq raises for ``errno``."""
    if errno == zmq.EAGAIN:
        return zmq.Again(errno)
    if errno == zmq.ETERM:
        return zmq.ContextTerminated(errno)
    return zmq.ZMQError(errno)


def _loaded_libzmq() -> str | None:
    """The path of the libzmq that pyzmq loaded into this process (Linux), if any."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split(None, 5)
                if len(fields) == 6:
                    path = fields[5].rstrip("\n")
                    name = path.rsplit("/", 1)[-1]
                    if name.startswith("libzmq") and ".so" in name:
                        return path
    except OSError:
        pass
    return None


def _native_calls():
    """termite._net._zmqcalls on pyzmq's own libzmq, or None: then pyzmq does all the calls."""
    try:
        from termite._net import _zmqcalls as _zmqcalls
    except ImportError:
        return None
    path = _loaded_libzmq()
    if path is None:
        return None
    try:
        version = _zmqcalls.init(path, _zmq_error)
    except OSError as exc:
        log.debug("libzmq calls through pyzmq only: %s", exc)
        return None
    return _zmqcalls if version == zmq.zmq_version_info() else None


native = _native_calls()
# wait_idle's loop in C, where it waits with native's poll (None from a build older than it)
_native_poll = native.poll if native is not None else None
_native_wait_idle = getattr(native, "wait_idle", None)


def pyzmq_calls(router: zmq.Socket):
    """``(recv, poll)`` for ``router`` by pyzmq, called as :data:`native`'s are
    (their handle argument unused)."""
    recv_part, more = router.recv, router.getsockopt

    def recv(_handle) -> tuple | None:
        """A message as (identity, part, ...), or None if there is none."""
        try:
            identity = recv_part(_NOBLOCK)
        except zmq.Again:
            return None
        message = [identity, recv_part(_NOBLOCK)]  # a ROUTER message has at least one part after the id
        while more(_RCVMORE):
            message.append(recv_part(_NOBLOCK))
        return tuple(message)

    def poll(_handle, self_pipe: int, timeout_ms: int) -> int:
        """1 if the ROUTER has a message, 2 if the self-pipe is readable (3: both, 0: timed out)."""
        bits = 0
        for item, _ in zmq.zmq_poll([(router, _POLLIN), (self_pipe, _POLLIN)], timeout_ms):
            bits |= 1 if item is router else 2
        return bits

    return recv, poll


# -- waiting on the loop's thread while it is idle ------------------------------


def loop_clock(loop):
    """``loop.time``, or the function it calls when that is asyncio's own."""
    return time.monotonic if type(loop).time is asyncio.BaseEventLoop.time else loop.time


def idle_self_pipe(loop, router_fd):
    """The loop's self-pipe, which :func:`wait_idle` polls with the ROUTER, for
    CPython's own selector loop (whose insides wait_idle reads); None for any
    other loop, which then does all the waiting."""
    if not isinstance(loop, asyncio.BaseEventLoop) or not all(
        hasattr(loop, name) for name in ("_ready", "_scheduled", "_stopping", "_clock_resolution", "_debug")
    ):
        return None
    fds = getattr(getattr(loop, "_selector", None), "_fd_to_key", None)
    if not isinstance(fds, dict) or len(fds) != 2 or router_fd not in fds:
        return None
    (self_pipe,) = (fd for fd in fds if fd != router_fd)
    return self_pipe


def wait_idle(loop, handle, self_pipe, clock, poll, read_one, run) -> bool:
    """Wait for the next message in zmq_poll, and run it at once, for as
    long as the event loop has nothing else to do.

    With :data:`native`'s ``poll``, the loop below runs in C (``native.wait_idle``,
    the same steps): per message it costs no Python but ``read_one`` and ``run``.

    ``poll(handle, self_pipe, timeout_ms)`` waits (:data:`native`'s or
    :func:`pyzmq_calls`'), ``read_one()`` reads a message and hands it on
    (False if there was none), ``run()`` runs a turn after it, ``clock`` is
    the loop's time (:func:`loop_clock`).  Returns True if the ROUTER may
    hold messages whose wake-up zmq_poll took from its FD: the loop's select
    would not see them, so the caller has them read at once.

    An asyncio loop iteration per message, and the ``EVENTS`` checks that
    reading the ROUTER's edge-triggered FD needs, cost as much Python as
    the rest of a round trip between nodes.  zmq_poll, given the ROUTER
    itself, checks for a message in C before it sleeps, so each message
    is read, handed on and run (and its replies sent) as soon as it is
    there.  This returns to the loop as soon as anything else wants it: a
    callback ready (``call_soon``, a kernel kick, a
    ``call_soon_threadsafe``, whose wake-up byte shows on the loop's
    self-pipe, polled here too), a timer due (the kernel's, the tick's,
    an asyncio sleep's), a stop, or another file descriptor registered
    with the loop (by a process using asyncio streams, say: then the
    loop's own select waits for everything, as without this).
    """
    if poll is _native_poll and _native_wait_idle is not None:
        return _native_wait_idle(loop, handle, self_pipe, clock, read_one, run)
    return _wait_idle_py(loop, handle, self_pipe, clock, poll, read_one, run)


def _wait_idle_py(loop, handle, self_pipe, clock, poll, read_one, run) -> bool:
    """:func:`wait_idle` in Python: the reference for ``native.wait_idle``, and the
    loop for pyzmq's calls."""
    if loop._debug:
        return False  # asyncio would report the calling callback as slow
    ready, scheduled, resolution = loop._ready, loop._scheduled, loop._clock_resolution
    fds = loop._selector._fd_to_key  # the ROUTER's FD and the self-pipe's, unless others came
    # Only the turns run here can call_soon, stop the loop, or add or
    # remove a file descriptor (the transport's stop() removes the
    # ROUTER's); other threads wake the loop through its self-pipe.
    if ready or loop._stopping or len(fds) != 2:
        return False
    pending = False
    while True:
        if scheduled:
            timeout = scheduled[0]._when - clock()
            if timeout <= resolution:
                break
            ready_bits = poll(handle, self_pipe, min(int(timeout * 1000) + 1, 3_600_000))  # ms, in a C int
        else:
            ready_bits = poll(handle, self_pipe, -1)
        if ready_bits != 1:  # 1: the ROUTER only
            if ready_bits:  # the self-pipe, with the ROUTER or without
                pending = ready_bits == 3
                break
            pending = False
            continue  # timed out (or a signal came): the timer is due
        if read_one():
            run()
            pending = True
            if ready or loop._stopping or len(fds) != 2:
                break
        else:
            pending = False
    return pending
