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

termite.make_cell, termite.cell_ref and termite.cell_set are these, in the
library.
"""

import termite
from termite import cell_ref, cell_set, make_cell


async def main():
    cell = make_cell(0)
    print("cell_ref(cell)           =>", await cell_ref(cell))
    cell_set(cell, 42)
    print("after cell_set(cell, 42) =>", await cell_ref(cell))
    return await cell_ref(cell)


if __name__ == "__main__":
    termite.run(main)
