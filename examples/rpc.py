"""Remote procedure call: tagged requests, then the !? shorthand (paper, section 4.5).

    (define rpc-server
      (spawn
        (let loop ()
          (recv
            ((from tag ('add a b))
             (! from (list tag (+ a b)))))
          (loop))))
    (let ((tag (make-tag)))
      (! rpc-server (list (self) tag (list 'add 21 21)))
      (recv ((,tag reply) reply)))      => 42
    (!? rpc-server (list 'add 21 21))  => 42
"""

import termite
from termite import ANY, Pid, Tag, call, make_tag, receive, send, spawn


async def rpc_server():
    while True:
        match await receive((Pid, Tag, ("add", int, int))):
            case (sender, tag, ("add", a, b)):
                send(sender, (tag, a + b))


async def by_hand(server):
    tag = make_tag()
    send(server, (termite.self(), tag, ("add", 21, 21)))
    _, reply = await receive((tag, ANY))           # (recv ((,tag reply) reply)): just use the variable
    return reply


async def main():
    server = spawn(rpc_server)
    first = await by_hand(server)
    print("make_tag, send, receive((tag, ANY)) =>", first)
    second = await call(server, ("add", 21, 21))    # (!? rpc-server (list 'add 21 21))
    print("call(server, ('add', 21, 21))       =>", second)
    return first, second


if __name__ == "__main__":
    termite.run(main)
