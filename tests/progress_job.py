"""A client script for tests/test_progress.py: a job on a running cluster, with a progress bar.

    python progress_job.py MODE KEYFILE HOST:PORT [HOST:PORT ...]

Run by the tests under a real terminal (``script``) and under a pipe; it prints
"job done" on stdout once its results are checked.
"""

import sys

import termite
from workloads import fail, spin

mode, keyfile, *addresses = sys.argv[1:]
with termite.Executor(addresses, keys=keyfile, interval=0.2) as pool:
    if mode == "map":
        results = list(pool.map(spin, [0.01] * 40, chunksize=3, progress=True))
        assert len(results) == 40, results
    elif mode == "progress":
        futures = [pool.submit(spin, 0.01) for _ in range(29)] + [pool.submit(fail, "one of thirty")]
        termite.progress(futures, description="submitted")
        assert all(future.done() for future in futures)
        assert sum(future.exception() is not None for future in futures) == 1
    elif mode == "as_completed":
        futures = [pool.submit(spin, 0.01) for _ in range(30)]
        finished = [future.result() for future in pool.as_completed(futures, progress="in order of finishing")]
        assert len(finished) == 30
    else:
        sys.exit(f"unknown mode {mode!r}")
print("job done", flush=True)
