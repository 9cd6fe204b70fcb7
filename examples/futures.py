"""Futures: a value computed by a process of its own (the Termite slides).

    (define-macro (future . body)
      `(future* (lambda () ,@body)))
    (define (future* thunk)
      (spawn
        (let ((value (thunk)))
          (let loop ()
            (recv ((from tag 'ref) (! from (list tag value))))
            (loop)))))
    (define (touch promise) (!? promise 'ref))

termite.future and termite.touch are these, in the library; a future whose
thunk raises makes touch raise the thunk's exception. A node runs its
processes concurrently, not in parallel: the futures below overlap while they
wait (termite.sleep stands for I/O); CPU-bound thunks would run one after the
other.
"""

import time

import termite
from termite import future, touch                 # (future thunk), (touch promise)


async def slow_square(name, x, seconds=0.2):
    print(f"{name}: started")
    await termite.sleep(seconds)
    print(f"{name}: done")
    return x * x


async def main():
    start = time.perf_counter()
    a = future(lambda: slow_square("a", 3))
    b = future(lambda: slow_square("b", 4))
    total = await touch(a) + await touch(b)
    elapsed = time.perf_counter() - start
    print("touch(a) + touch(b) =>", total)
    print(f"two 0.2 s computations took {elapsed:.1f} s in all")
    return total


if __name__ == "__main__":
    termite.run(main)
