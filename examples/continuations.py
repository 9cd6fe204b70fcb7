"""Process cloning and dynamic code update with continuations (paper, section 4.10; the slides' migrate-task).

    (define original
      (spawn
        (let loop ()
          (recv
            ((from tag 'clone)
             (call/cc
              (lambda (clone)
                (! from (list tag (lambda () (clone #t))))))))
          (loop))))
    (define clone (spawn ((!? original 'clone))))

    (define server
      (spawn
        (let loop ()
          (recv
            (('update k) (k #t))
            ((from tag 'ping) (! from (list tag 'gnop)))) ; bug
          (loop))))
    (define new-server                ; the same, but for
      ...   ((from tag 'clone) (call/cc (lambda (k) (! from (list tag k)))))
            ((from tag 'ping) (! from (list tag 'pong))) ; fixed

    (!? server 'ping)                                   => gnop
    (! server (list 'update (!? new-server 'clone)))
    (!? server 'ping)                                   => pong

    (define (migrate-task to)
      (call/cc (lambda (k) (! to k) (halt!))))

In Python, `k = await continuation()` is the call/cc: it returns a
Continuation first, and returns again, with the value given to `become`, in
whichever process resumes from k.  `spawn(become, k)` starts a clone (a new
pid); `await become(k)` makes the calling process continue from k (same pid).
For migrate-task a second node runs in another OS process: the task goes on
there, with its locals, as a new process.
"""

import termite
from termite import Continuation, Pid, Tag, become, call, continuation, receive, send, spawn
from termite.testing import NodeProcess

# -- 4.10 process cloning ------------------------------------------------------------


async def original():
    count = 0
    while True:
        match await receive((Pid, Tag, str)):
            case (sender, tag, "clone"):
                k = await continuation()  # (call/cc (lambda (clone) ...))
                if isinstance(k, Continuation):
                    send(sender, (tag, k))  # here: hand it out
                # in a clone, k is True (the paper's (clone #t)) and the loop goes on
            case (sender, tag, "incr"):
                count += 1
                send(sender, (tag, count))


async def cloning():
    orig = spawn(original)
    await call(orig, "incr")
    print("(!? original 'incr) twice       =>", await call(orig, "incr"))
    clone = spawn(become, await call(orig, "clone"))  # (spawn ((!? original 'clone)))
    print("(!? clone 'incr)                =>", await call(clone, "incr"), "(the original's 2, copied)")
    print("(!? clone 'incr)                =>", await call(clone, "incr"))
    print("(!? original 'incr)             =>", await call(orig, "incr"), "(independent from then on)")
    print("the clone is a new process      =>", clone != orig)


# -- 4.10 dynamic code update ----------------------------------------------------------


async def server():
    while True:
        match await receive():
            case ("update", Continuation() as k):
                await become(k)  # (k #t): this process runs the new code from now on
            case (Pid() as sender, Tag() as tag, "ping"):
                send(sender, (tag, "gnop"))  # bug
            case (Pid() as sender, Tag() as tag, "who"):
                send(sender, (tag, termite.self()))


async def new_server():
    while True:
        match await receive():
            case ("update", Continuation() as k):
                await become(k)
            case (Pid() as sender, Tag() as tag, "clone"):
                k = await continuation()
                if isinstance(k, Continuation):
                    send(sender, (tag, k))
            case (Pid() as sender, Tag() as tag, "ping"):
                send(sender, (tag, "pong"))  # fixed
            case (Pid() as sender, Tag() as tag, "who"):
                send(sender, (tag, termite.self()))


async def code_update():
    srv = spawn(server)
    print("(!? server 'ping)               =>", await call(srv, "ping"))
    replacement = await call(spawn(new_server), "clone")
    send(srv, ("update", replacement))  # (! server (list 'update replacement))
    print("after ('update, k), ping        =>", await call(srv, "ping"))
    print("the server kept its pid         =>", await call(srv, "who") == srv)


# -- the slides: migrate-task ------------------------------------------------------------


def halt():
    """(halt!): end the calling process here, quietly (reason "normal")."""
    raise termite.Exited(termite.self(), "normal")


async def migrate_task(to):
    """Send this process's continuation to the process `to`, and halt; go on where `to` starts it."""
    k = await continuation()
    if isinstance(k, Continuation):
        send(to, k)  # (! to k)
        halt()
    # here, in the process that `to` spawned from k


async def landing():
    """Runs on node2: starts every continuation it receives as a process of its node."""
    while True:
        spawn(become, await receive(Continuation))


async def task(reply_to, to):
    steps = ["node1"]
    send(reply_to, ("at", termite.self(), termite.current_node()))
    await migrate_task(to)
    steps.append("node2")  # the locals came along
    send(reply_to, ("at", termite.self(), termite.current_node(), steps))


async def moving(node2):
    node1 = termite.current_node()
    name = {node1: "node1", node2: "node2"}
    to = spawn(landing, node=node2)
    pid = spawn(task, termite.self(), to)
    ref = termite.monitor(pid)
    _, before, where = await receive(("at", Pid, termite.NodeRef))
    _, after, there, steps = await receive(("at", Pid, termite.NodeRef, list))
    _, _, reason = await receive(termite.Down(ref, pid, ...))
    print("migrate_task(to): from, to      =>", name[where], "->", name[there], steps)
    print("the task ended on node1         =>", reason)
    print("same pid after migrate_task     =>", after == before, "(migrate(node) keeps it)")


async def main(node2_address):
    print("4.10 process cloning")
    await cloning()
    print("4.10 dynamic code update")
    await code_update()
    print("the slides' migrate-task")
    await moving(await termite.connect(*node2_address))


if __name__ == "__main__":
    # A second node (python -m termite.node --keys KEY) holding this script's session key:
    # the two admit each other and no one else.
    node2 = NodeProcess("--keys", termite.session_keys())
    try:
        termite.run(main, node2.ref.address, network=termite.Network(keys=termite.session_keys()))
    finally:
        node2.stop()
