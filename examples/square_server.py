"""The square server three ways: plain, with tags, with !? (the Termite slides).

    (define square-server                (define square-server
      (spawn                               (spawn
        (let loop ()                         (let loop ()
          (recv                                (recv
            ((from x)                            ((from tag x)
             (! from (* x x))))                   (! from (list tag (* x x)))))
          (loop))))                            (loop))))
    (! square-server (list (self) 5))    (let ((tag (make-tag)))
    (?)                                    (! square-server (list (self) tag 5))
                                           (recv ((,tag reply) reply)))
                                         (!? square-server 5)
"""

import termite
from termite import ANY, Pid, Tag, call, make_tag, receive, send, spawn


async def square_server():
    while True:
        sender, x = await receive((Pid, int))
        send(sender, x * x)


async def tagged_square_server():
    while True:
        sender, tag, x = await receive((Pid, Tag, int))
        send(sender, (tag, x * x))


async def main():
    me = termite.self()

    plain = spawn(square_server)
    send(plain, (me, 5))
    print("plain (from, x)       =>", await receive())

    server = spawn(tagged_square_server)
    tag5, tag6 = make_tag(), make_tag()
    send(server, (me, tag5, 5))                    # two requests in flight at once:
    send(server, (me, tag6, 6))                    # each reply says which one it answers
    _, six = await receive((tag6, ANY))
    _, five = await receive((tag5, ANY))
    print("with tags, 6 then 5   =>", six, five)

    print("call(server, 5)       =>", await call(server, 5))    # (!? square-server 5)


if __name__ == "__main__":
    termite.run(main)
