"""A "server" process: the pong server, checking messages by hand (paper, section 4.1).

    (define pong-server
      (spawn
        (let loop ()
          (let ((msg (?)))
            (if (and (list? msg) (= (length msg) 2)
                     (pid? (car msg)) (eq? (cadr msg) 'ping))
                (let ((from (car msg)))
                  (! from 'pong)))
            (loop)))))
    (! pong-server (list (self) 'ping))
    (?)  => pong
"""

import termite
from termite import receive, send, spawn


async def pong_server():
    while True:
        msg = await receive()                      # (?): the next message, whatever it is
        if (
            isinstance(msg, tuple)
            and len(msg) == 2
            and isinstance(msg[0], termite.Pid)
            and msg[1] == "ping"
        ):
            sender = msg[0]
            send(sender, "pong")
        # anything else is dropped, and the loop goes on


async def main():
    server = spawn(pong_server)
    send(server, "not a ping")                     # ignored by the server
    send(server, (termite.self(), "ping"))
    return await receive()


if __name__ == "__main__":
    print(termite.run(main))                       # pong
