"""Hello, world: a process sends a message to its parent (paper, section 2.2).

    (let ((me (self)))
      (spawn
        (! me "Hello, world!")))
    (?)  => "Hello, world!"

Process A (main) spawns process B; B sends a message to A; A waits for it.
"""

import termite
from termite import receive, send, spawn


async def main():
    me = termite.self()                            # (self)
    spawn(lambda: send(me, "Hello, world!"))       # (spawn (! me "Hello, world!"))
    return await receive()                         # (?)


if __name__ == "__main__":
    print(termite.run(main))                       # Hello, world!
