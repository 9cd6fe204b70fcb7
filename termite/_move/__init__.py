"""Layer 3, movement: a running process's continuation, and migration.

Capture and restore of suspended coroutines, first-class continuations
(callcc), per-sender ordering and the migration protocol.  Imports only
termite._core and termite._net.
"""
