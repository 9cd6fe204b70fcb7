"""Layer 1, the core: processes on one node.

Identities, the kernel and its traps, processes and their mailboxes, patterns,
links and monitors, the local registry, spawn, call, futures and cells.
Imports nothing above it; knows nothing of other nodes.
"""
