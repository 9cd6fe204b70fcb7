"""call: the paper's ``!?``, a request with a tag and a wait for its reply.

It sits above links because a call monitors the process it calls, so a call
to a process that ends does not wait forever.
"""

from __future__ import annotations

import functools
import os
import time
import types

from termite._core.errors import DeadProcess, Timeout, UnreadableMessage
from termite._core.ids import Pid, Tag, make_tag
from termite._core.kernel import TIMED_OUT, _core
from termite._core.links import _drop_call, _monitor_for_call, _undo_call_monitor, _unwatch_call, _watch_call
from termite._core.mailbox import NO_DEFAULT, _check_timeout, _is_reply, _named, _resolve_name, send
from termite._core.process import DEAD, REPLY, Down, Process, Refused, current
from termite._core.traps import PARK

__all__ = ["call"]


@types.coroutine
def _await_reply(proc: Process, tag: Tag, start: int, timeout):
    """Wait for ``(tag, reply)``, ``Down(tag, ...)`` or ``Refused(tag, ...)``; return it, or TIMED_OUT."""
    box = proc.mailbox
    if box:  # only a call to oneself can have answered already
        for i in range(start, len(box)):
            msg = box[i]
            if _is_reply(tag, msg):
                del box[i]
                return msg
    if timeout == 0:
        return TIMED_OUT
    kernel = proc.kernel
    timer = kernel.add_timer(timeout, proc) if timeout is not None else None
    proc.wait_for = tag
    proc.waiting = REPLY
    try:
        value = yield PARK
        if value is TIMED_OUT:
            timer = None
        return value
    finally:
        proc.wait_for = None
        if proc.waiting is not DEAD:
            proc.waiting = None
        if timer is not None:
            kernel.cancel_timer(timer)


async def _whereis_named(proc: Process, dest: tuple, timeout) -> Pid | None:
    """The pid behind ``(name, node)``, or None if nobody is registered so there."""
    name, node = _named(dest, "call")
    table = proc.table
    if node == table.ref:
        return table.names.get(name)
    if table.remote is None:
        raise DeadProcess(dest, "noconnection")
    return await table.remote.whereis(node, name, timeout)


async def call(dest, msg, timeout=None, default=NO_DEFAULT):
    """Send ``(self(), tag, msg)`` to ``dest`` and wait for ``(tag, reply)``: the paper's ``!?``.

    ``dest`` is a pid, a name registered on this node, or ``(name, node)``
    (first asked of ``node``: one more round trip).  Returns ``reply``.  If no
    reply comes within ``timeout`` seconds, or the called process ends first
    (or is not there), returns ``default``; without one, raises ``Timeout`` or
    ``DeadProcess``.  A request the called node could not read (it could not
    unpickle a function or class in it) raises ``UnreadableMessage`` at once,
    default or not: it is a mistake to fix, not a reply.  Only a matching reply is taken: other messages stay in
    the mailbox, and are not scanned.
    """
    if timeout is not None:
        _check_timeout(timeout, default)
    proc = current()
    if dest.__class__ is Pid:
        pid = dest
    elif dest.__class__ is tuple:
        start = time.monotonic()
        try:
            pid = await _whereis_named(proc, dest, timeout)
        except Timeout:
            if default is NO_DEFAULT:
                raise
            return default
        if pid is None:
            if default is NO_DEFAULT:
                raise DeadProcess(dest, "noproc")
            return default
        if timeout is not None:
            timeout = max(0.0, timeout - (time.monotonic() - start))
    else:
        pid = _resolve_name(dest)
    tag = make_tag()
    box = proc.mailbox
    start = len(box) if box else 0
    entry = _watch_call(proc, pid, tag)
    send(pid, (proc.pid, tag, msg))
    try:
        answer = await _await_reply(proc, tag, start, timeout)
    except BaseException:
        _drop_call(entry)  # it ends here (an exit signal, a kill): its target need not tell it
        raise
    if answer.__class__ is Down:
        _drop_call(entry)
    else:
        _unwatch_call(entry, tag)
    return _outcome(pid, tag, answer, timeout, default)


def _outcome(pid: Pid, tag: Tag, answer, timeout, default):
    """What ``call`` returns, or raises, for ``answer`` (what _await_reply returned; its monitor is undone)."""
    if answer.__class__ is tuple:
        return answer[1]
    if answer is TIMED_OUT:
        if default is NO_DEFAULT:
            raise Timeout(f"no reply from {pid} within {timeout} s")
        return default
    if answer.__class__ is Refused:
        raise UnreadableMessage(answer.reason)
    assert answer.__class__ is Down, repr(answer)
    if default is NO_DEFAULT:
        raise DeadProcess(pid, answer.reason)
    return default


if _core is not None:
    # call(pid, msg[, timeout]) in C; it calls the functions above for the rest.
    _core.init_call(call, make_tag, _monitor_for_call, _undo_call_monitor, _outcome, _await_reply)
    # The C make_tag keeps ids.py's tag origin; a forked child draws a new one (after ids.py's hook, which
    # was registered first).
    os.register_at_fork(after_in_child=_core.forget_tag_origin)
    call = functools.update_wrapper(_core.call, call)
