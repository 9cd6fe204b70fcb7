"""Layer 4, load: meters, the thunk runner, dispatch, safe points and the balancer.

Imports only the layers below it (_core, _net, _move).
"""
