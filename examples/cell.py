"""A mutable data structure: a cell held by a suspended process (paper, section 4.6).

    (define (make-cell content)
      (spawn
        (let loop ((content content))
          (recv
            ((from tag 'ref)
             (! from (list tag content))
             (loop content))
            (('set! content)
             (loop content))))))
    (define (cell-ref cell) (!? cell 'ref))
    (define (cell-set! cell value) (! cell (list 'set! value)))
"""

import termite
from termite import ANY, Pid, Tag, call, receive, send, spawn


async def _cell(content):
    while True:
        match await receive((Pid, Tag, "ref"), ("set!", ANY)):
            case (sender, tag, "ref"):
                send(sender, (tag, content))
            case ("set!", content):                # rebinding content is the paper's (loop content)
                pass


def make_cell(content):
    return spawn(_cell, content)


async def cell_ref(cell):
    return await call(cell, "ref")


def cell_set(cell, value):
    send(cell, ("set!", value))


async def main():
    cell = make_cell(0)
    print("cell_ref(cell)           =>", await cell_ref(cell))
    cell_set(cell, 42)
    print("after cell_set(cell, 42) =>", await cell_ref(cell))
    return await cell_ref(cell)


if __name__ == "__main__":
    termite.run(main)
