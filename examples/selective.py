"""Selective message retrieval with a predicate (paper, section 4.2).

    (! (self) 1)
    (! (self) 2)
    (! (self) 3)
    (?)         => 1
    (?? odd?)   => 3
    (?)         => 2

receive() takes the oldest message; receive(pred) the oldest one for which
pred is true, leaving the others in the mailbox, in order.
"""

import termite
from termite import receive, send


def odd(n):
    return n % 2 == 1


async def main():
    me = termite.self()
    send(me, 1)
    send(me, 2)
    send(me, 3)
    first = await receive()                        # (?)
    print("receive()    =>", first)
    second = await receive(odd)                    # (?? odd?)
    print("receive(odd) =>", second)
    third = await receive()                        # (?)
    print("receive()    =>", third)
    return [first, second, third]


if __name__ == "__main__":
    termite.run(main)
