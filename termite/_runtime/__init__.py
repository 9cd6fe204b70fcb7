"""Layer 5, the runtime: a node assembled from the layers below.

A node's kernel, process table, transport, distribution endpoint and the
extensions every networked node runs, named in one list in start order;
``termite.run`` and ``termite.Node``.
"""
