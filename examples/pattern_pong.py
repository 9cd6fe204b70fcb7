"""Pattern matching: the pong server with recv and a `where` guard (paper, section 4.3).

    (define better-pong-server
      (spawn
        (let loop ()
          (recv
            ((from 'ping)            ; pattern to match
             (where (pid? from))     ; additional constraint
             (! from 'pong)))        ; action
          (loop))))

receive(pattern, where=guard) selects the message (the other messages stay in
the mailbox); a match statement then takes it apart.
"""

import termite
from termite import ANY, receive, send, spawn


async def better_pong_server():
    while True:
        match await receive((ANY, "ping"), where=lambda msg: isinstance(msg[0], termite.Pid)):
            case (sender, "ping"):
                send(sender, "pong")


# The same guard can sit inside the pattern, on the element it tests:
#     await receive((termite.where(ANY, lambda x: isinstance(x, termite.Pid)), "ping"))
# and the simplest spelling tests the type directly: await receive((termite.Pid, "ping")).


async def main():
    server = spawn(better_pong_server)
    send(server, ("not a pid", "ping"))            # fails the guard: never taken
    send(server, (termite.self(), "ping"))
    return await receive()


if __name__ == "__main__":
    print(termite.run(main))                       # pong
