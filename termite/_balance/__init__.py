"""Layer 4, load: meters, the thunk runner and dispatch.

Imports only the layers below it (_core, _net, _move).
"""
