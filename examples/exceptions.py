"""Exceptions, and how they travel along links (paper, section 4.7).

    (catch (lambda (exception) exception)
      (raise 42)                 ; this will not return
      123)                       => 42
    (catch (lambda (exception) #t)
      (spawn (raise 'error))
      (? 1 'ok)
      #f)                        => #f
    (catch (lambda (exception) #t)
      (spawn-link (raise 'error))
      (? 1 'ok)
      #f)                        => #t

`catch` is Python's try/except; Python has no `handle` (resuming at the raise).
A crash in a plain spawned process ends only that process (termite logs its
traceback on stderr); spawn(link=True) raises termite.Exited in the parent at
its receive, and trap_exit(True) turns that into an Exit(pid, reason) message.
"""

import termite
from termite import Exit, receive, spawn

WAIT = 0.2  # seconds; the paper's (? 1 'ok) waits 1


def catch_42():
    try:
        raise ValueError(42)                       # (raise 42): this will not return
        return 123
    except ValueError as exception:
        return exception.args[0]


async def error():
    raise RuntimeError("error")                    # (raise 'error)


async def catch_crash(link):
    try:
        spawn(error, link=link)                    # (spawn ...) or (spawn-link ...)
        await receive(timeout=WAIT, default="ok")  # (? 1 'ok)
        return False
    except termite.Exited:                         # the handler (lambda (exception) #t)
        return True


async def trapped():
    termite.trap_exit(True)
    pid = spawn(error, link=True)
    exit_msg = await receive(Exit)
    assert exit_msg.pid == pid
    return exit_msg


async def main():
    print("(termite logs each crash below on stderr, with its traceback)")
    print("catch, raise 42                 =>", catch_42())
    print("spawn a crash, (? 1 'ok)        =>", await catch_crash(link=False))
    print("spawn(link=True) a crash        =>", await catch_crash(link=True))
    print("trap_exit(True), then receive() =>", await trapped())


if __name__ == "__main__":
    termite.run(main)
