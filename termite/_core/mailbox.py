"""Mailboxes: send, receive (the paper's ``?`` and ``??``), sleep.

Delivery decides, in the sender's context and without running user code,
whether the message wakes its receiver:

- a receiver parked in ``receive()`` (any message) takes it directly, as the
  value it resumes with, and the mailbox is never touched;
- a receiver parked in ``call`` takes only its reply, ``(tag, reply)``, or
  the ``Down`` of the called process; anything else waits in the mailbox, so
  a ``call`` never scans a backlog;
- a receiver parked in a selective receive is woken to test the new messages
  (patterns are user code and run in the receiver).

Messages between processes of one node are passed by reference, not copied:
a sender must not mutate a message after sending it.

With the C kernel (termite/_core/kernel.py), ``deliver``, ``send`` and
``receive`` are its C functions: they do what the Python ones here do for
the common cases (a local pid; receive with no pattern, with only a
timeout, and with patterns made of classes, ANY, plain values and tuples
of them, as a tag or a tuple's head) and call these for the rest.

What introspection needs costs the path of a message one increment and one
attribute test at each end: a process counts what it sends (``sent``) and
what it receives, as ``handed`` or ``queued`` (its steps are derived from
them: termite/_core/kernel.py); a process that nobody traces has ``tracers``
None, and a traced one's messages are copied to its tracers here
(:func:`_trace_sent`, :func:`_trace_received`; termite/_core/tracing.py).
The C kernel counts the same and calls these two where the Python code does.
"""

from __future__ import annotations

import functools
import types
from collections import deque

from termite._core.errors import NoSuchName, NotInProcess, Timeout
from termite._core.ids import NodeRef, Pid, Tag
from termite._core.kernel import TIMED_OUT, _core, _local
from termite._core.patterns import ANY, compile_patterns
from termite._core.process import (
    ANY_MESSAGE, DEAD, DELIVERED, REPLY, SCAN, SLEEPING, Down, Process, Refused, Trace, current,
)
from termite._core.traps import NEXT_TURN, PARK, RESCHEDULE

__all__ = ["send", "deliver", "receive", "sleep", "NO_DEFAULT"]


class _NoDefault:
    __slots__ = ()

    def __repr__(self):
        return "NO_DEFAULT"


NO_DEFAULT = _NoDefault()

#: A process that finds a message waiting takes it without a switch; after this
#: many such receives in a row it lets the others run, so none starves.
FAIRNESS = 64


# -- sending ------------------------------------------------------------------


def deliver(proc: Process, msg) -> None:
    """Put ``msg`` in ``proc``'s mailbox, or hand it over if ``proc`` waits for it."""
    if proc.tracers is not None:
        _trace_received(proc, msg)
    waiting = proc.waiting
    if waiting is ANY_MESSAGE or (waiting is REPLY and _is_reply(proc.wait_for, msg)):
        proc.waiting = DELIVERED
        proc.value = msg
        proc.handed += 1  # a wake-up too: the kernel's count leaves these out
        proc.kernel.ready.append(proc)
        return
    if waiting is DEAD:
        return
    proc.queued += 1
    box = proc.mailbox
    if box is None:
        box = proc.mailbox = deque()
    box.append(msg)
    if waiting is SCAN:
        proc.waiting = None
        proc.woken += 1
        proc.kernel.ready.append(proc)


def _is_reply(tag, msg) -> bool:
    cls = msg.__class__
    if cls is tuple:
        return len(msg) == 2 and msg[0].__class__ is Tag and msg[0] == tag
    return (cls is Down or cls is Refused) and msg.ref == tag


def send(dest, msg) -> None:
    """Send ``msg`` to ``dest``: the paper's ``!``.

    ``dest`` is a pid, a name registered on this node, or ``(name, node)``:
    the process registered as ``name`` on ``node`` (Erlang's ``{Name, Node} !
    Msg``).  Never blocks, and never fails for a process that has ended, a
    name another node does not know, or a node that cannot be reached: such a
    message is lost, as any message may be.
    """
    try:
        proc = dest._proc
    except AttributeError:
        proc = None
    if proc is not None:
        kernel = proc.kernel
        if kernel is _local.kernel:  # the hot path: to a process of this node
            sender = kernel.task
            if sender is not None:
                sender.sent += 1
                if sender.tracers is not None:
                    _trace_sent(sender, dest, msg)
            return deliver(proc, msg)
    kernel = _local.kernel
    sender = kernel.task if kernel is not None else None
    if sender is not None:
        sender.sent += 1
        if sender.tracers is not None:
            _trace_sent(sender, dest, msg)
    return _send_slow(dest, msg)


def _pid_send(self: Pid, message) -> None:
    """Send ``message`` to this process (same as ``termite.send(pid, message)``)."""
    send(self, message)


Pid.send = _pid_send  # ids sit below processes and cannot import send: the method is given here

def _send_slow(dest, msg) -> None:
    if dest.__class__ is not Pid:
        if dest.__class__ is tuple:
            return _send_named(dest, msg)
        dest = _resolve_name(dest)
    proc = dest._proc
    here = _local.kernel
    if proc is not None:
        if proc.kernel is here:
            deliver(proc, msg)
        else:  # a process of a node running in another thread of this OS process
            proc.kernel.call_threadsafe(_deliver_if_alive, dest, msg)
        return
    table = here.table if here is not None else None
    if table is None:
        raise NotInProcess(
            "send() outside a process: use node.send(pid, msg) on a termite.Node, "
            "or run your code as a process"
        )
    remote = table.remote
    if remote is not None and not table.guests:
        node, here = dest.node, table.ref
        if node.incarnation != here.incarnation or (node is not here and node != here):
            return remote.send(dest, msg)  # another node's: the common case first
    target = table.resolve(dest)
    if target is not None:
        if target.order is None:
            deliver(target, msg)
        else:
            table.send_to_migrant(target, msg)
    elif table.remote is not None and not table.is_local(dest):
        table.remote.send(dest, msg)  # another node's, or one that migrated from here
    else:
        table.dropped += 1


# -- tracing ------------------------------------------------------------------


def _trace_sent(sender: Process, dest, msg) -> None:
    """``sender`` is traced: its tracers get ``Trace(pid, "sent", msg, dest)``."""
    if sender.waiting is DEAD:  # the Downs and exit signals of its end are not its messages
        return
    event = Trace(sender.pid, "sent", msg, dest)
    for tracer in sender.tracers:
        _send_slow(tracer, event)  # not send(): the copy is neither counted nor traced as the process's own


def _trace_received(proc: Process, msg) -> None:
    """``proc`` is traced: its tracers get ``Trace(pid, "received", msg)``.

    A Trace itself is never reported: a process that traces itself, or two
    that trace each other, would otherwise report their reports forever.
    """
    if msg.__class__ is Trace or proc.waiting is DEAD:
        return
    event = Trace(proc.pid, "received", msg)
    for tracer in proc.tracers:
        _send_slow(tracer, event)


def _named(dest: tuple, what: str) -> tuple:
    """``dest`` as ``(name, node)``: a registered name and a NodeRef; else a TypeError for ``what()``."""
    if len(dest) != 2 or dest[0].__class__ is not str or dest[1].__class__ is not NodeRef:
        raise TypeError(f"{what}() to a tuple needs (name, node): a registered name (str) and a NodeRef, got {dest!r:.200}")
    return dest


def _send_named(dest: tuple, msg) -> None:
    """``send((name, node), msg)``."""
    name, node = _named(dest, "send")
    here = _local.kernel
    if here is None:
        raise NotInProcess(f"send({dest!r}, ...) outside a process: use node.send(...) on a termite.Node")
    table = here.table
    if node == table.ref:
        return _send_slow(name, msg)
    if table.remote is not None:
        table.remote.send_named(name, node, msg)
    else:
        table.dropped += 1  # a node without a network reaches no other


def _deliver_if_alive(pid: Pid, msg):
    proc = pid._proc
    if proc is not None:
        deliver(proc, msg)


def _resolve_name(dest) -> Pid:
    if isinstance(dest, str):
        kernel = _local.kernel
        if kernel is None:
            raise NotInProcess(f"send({dest!r}, ...) outside a process: use node.send(...) on a termite.Node")
        pid = kernel.table.names.get(dest)
        if pid is None:
            raise NoSuchName(
                f"no process is registered as {dest!r}; register one with "
                f"termite.register({dest!r}, pid) or spawn(fn, name={dest!r})"
            )
        return pid
    raise TypeError(
        f"send() needs a Pid, a registered name (str) or (name, node) as destination, got "
        f"{type(dest).__name__}: {dest!r}"
    )


# -- receiving ----------------------------------------------------------------


def _timeout_result(timeout, default):
    if default is NO_DEFAULT:
        raise Timeout(f"no matching message within {timeout} s")
    return default


def _check_timeout(timeout, default):
    if timeout is None:
        if default is not NO_DEFAULT:
            raise TypeError(
                "receive(default=...) without a timeout would wait forever and never "
                "use the default; give a timeout too: receive(timeout=5, default=...)"
            )
    elif not isinstance(timeout, (int, float)) or timeout != timeout or timeout < 0:
        raise ValueError(f"timeout must be a number of seconds >= 0 or None, got {timeout!r}")


@types.coroutine
def receive(*patterns, timeout=None, default=NO_DEFAULT, where=None):
    """Take a message from this process's mailbox, waiting for one if need be.

    With no pattern, the oldest message (the paper's ``?``).  With patterns or a
    predicate, the oldest message matching any of them (the paper's ``??``);
    the others stay, in order.  See termite._core.patterns for what a pattern is.

    ``timeout`` (seconds) bounds the wait: then ``default`` is returned, or
    ``Timeout`` raised if there is none.  ``timeout=0`` only looks.
    """
    try:
        proc = _local.kernel.task
        box = proc.mailbox
    except AttributeError:
        raise NotInProcess(
            "receive() can only be awaited inside a termite process; outside one, "
            "use node.receive(...) on a termite.Node"
        ) from None
    if not patterns and where is None and default is NO_DEFAULT:
        if timeout is None:
            # The hot path: the paper's (?).
            if box:
                kernel = proc.kernel
                kernel.fairness -= 1
                if not kernel.fairness:
                    kernel.fairness = FAIRNESS
                    yield RESCHEDULE
                return box.popleft()
            proc.waiting = ANY_MESSAGE
            msg = yield PARK
            proc.waiting = None
            return msg
        if (timeout.__class__ is float or timeout.__class__ is int) and timeout > 0 and not box:
            # The next hottest: (?) with a timeout, as a request awaits its
            # answer.  Any message is handed over directly (see deliver), so
            # a wake-up is the message, the timeout, or a signal.
            kernel = proc.kernel
            timer = kernel.add_timer(timeout, proc)
            proc.waiting = ANY_MESSAGE
            try:
                msg = yield PARK
            except BaseException:
                if proc.waiting is not DEAD:
                    proc.waiting = None
                kernel.cancel_timer(timer)
                raise
            proc.waiting = None
            if msg is TIMED_OUT:
                return _timeout_result(timeout, default)
            kernel.cancel_timer(timer)
            return msg
    _check_timeout(timeout, default)
    match = compile_patterns(patterns, where)

    # Look through what is already here.
    start = 0
    if box:
        if match is None:
            return box.popleft()
        for i, msg in enumerate(box):
            if match(msg):
                del box[i]
                return msg
        start = len(box)
    if timeout == 0:
        return _timeout_result(timeout, default)

    # Wait for new messages.
    kernel = proc.kernel
    timer = kernel.add_timer(timeout, proc) if timeout is not None else None
    try:
        while True:
            proc.waiting = ANY_MESSAGE if match is None else SCAN
            value = yield PARK
            if value is TIMED_OUT:
                timer = None
                return _timeout_result(timeout, default)
            if proc.waiting is DELIVERED:  # handed over directly: matches by construction
                proc.waiting = None
                return value
            box = proc.mailbox
            for i in range(start, len(box)):
                msg = box[i]
                if match(msg):
                    del box[i]
                    return msg
            start = len(box)
    finally:
        if proc.waiting is not DEAD:
            proc.waiting = None
        if timer is not None:
            kernel.cancel_timer(timer)


@types.coroutine
def sleep(seconds: float):
    """Suspend this process for ``seconds`` (its mailbox keeps filling).

    ``sleep(0)`` yields the turn: the process runs again after the node's
    timers, its I/O and every other runnable process have had their turn.
    """
    proc = current()
    if seconds <= 0:
        yield NEXT_TURN
        return
    kernel = proc.kernel
    timer = kernel.add_timer(seconds, proc, None)
    proc.waiting = SLEEPING
    try:
        yield PARK
        timer = None
    finally:
        if timer is not None:
            kernel.cancel_timer(timer)


def _install_c_kernel(core) -> None:
    """Put the C kernel's deliver, send and receive in place of the Python ones above.

    Each falls back on its Python twin for what it does not do itself, and
    wears its name, docstring and signature (``__wrapped__``).
    """
    global deliver, send, receive
    core.init_mailbox(
        ANY_MESSAGE, SCAN, REPLY, DELIVERED, DEAD, Down, Refused, Tag, Pid, deque,
        send, receive, _timeout_result, NotInProcess, NO_DEFAULT, FAIRNESS, _trace_sent, _trace_received,
    )
    core.init_patterns(ANY)
    deliver = functools.update_wrapper(core.deliver, deliver)
    send = functools.update_wrapper(core.send, send)
    receive = functools.update_wrapper(core.receive, receive)


if _core is not None:
    _install_c_kernel(_core)
