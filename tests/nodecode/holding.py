"""Thunks for tests/test_progress.py, importable on node processes (tests/nodecode is on their path)."""

import os
import socket


def hold(port: int) -> int:
    """Connect to the test at 127.0.0.1:``port`` and run until it closes the connection.

    A call that is running for as long as the test wants, and says when it started.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=60) as conn:
        conn.settimeout(60)
        conn.recv(1)
    return os.getpid()
